//! UNSUBSCRIBE: remove filters, answer UNSUBACK.

use crate::codec::{self, Unsubscribe};
use crate::connection::{Client, Close};
use crate::store::StoreEvent;

pub fn handle(client: &mut Client, unsubscribe: Unsubscribe) -> Result<(), Close> {
    for filter in &unsubscribe.filters {
        // Filters are compared character by character, no wildcard matching
        // [MQTT-3.10.4-1]; an unknown filter is not an error.
        let existed = client
            .session
            .state
            .lock()
            .subscriptions
            .remove(filter)
            .is_some();
        if existed {
            client.broker.router.unsubscribe(&client.session, filter);
            client.broker.record(StoreEvent::Unsubscribed {
                client_id: &client.session.client_id,
                filter,
            });
        }
    }
    // UNSUBACK even when nothing matched [MQTT-3.10.4-4/5].
    codec::encode_unsuback(client.out.buf(), unsubscribe.pkid);
    Ok(())
}
