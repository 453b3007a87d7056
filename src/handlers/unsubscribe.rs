//! UNSUBSCRIBE: remove filters, answer UNSUBACK.

use crate::client::{Client, Close};
use crate::codec::reason;
use crate::codec::Unsubscribe;

pub fn handle(client: &mut Client, unsubscribe: Unsubscribe) -> Result<(), Close> {
    let mut codes = Vec::with_capacity(unsubscribe.filters.len());
    for filter in &unsubscribe.filters {
        // Filters are compared character by character, no wildcard matching
        // [MQTT-3.10.4-1]; an unknown filter is not an error.
        if client.broker.unsubscribe(&client.session, filter) {
            codes.push(reason::SUCCESS);
        } else {
            codes.push(reason::NO_SUBSCRIPTION_EXISTED);
        }
    }
    // UNSUBACK even when nothing matched [MQTT-3.10.4-4/5]; 5.0 says per filter whether
    // there was a subscription [MQTT-3.11.3-1].
    client.out.unsuback(unsubscribe.pkid, &codes);
    Ok(())
}
