//! SUBSCRIBE: validate each filter, add it to the session and the router, answer SUBACK,
//! then queue the retained messages it matches.

use crate::auth::Access;
use crate::codec::{self, QoS, Subscribe};
use crate::connection::{Client, Close};
use crate::store::StoreEvent;
use crate::topic;

/// SUBACK return code for a refused filter.
const FAILURE: u8 = 0x80;

pub fn handle(client: &mut Client, subscribe: Subscribe) -> Result<(), Close> {
    let config = &client.broker.config;
    let mut codes = Vec::with_capacity(subscribe.filters.len());
    let mut accepted: Vec<(&str, QoS)> = Vec::with_capacity(subscribe.filters.len());
    for (filter, opts) in &subscribe.filters {
        let qos = &opts.qos;
        let refused = if !topic::valid_topic_filter(filter) {
            Some("invalid topic filter")
        } else if !client.may(filter, Access::Subscribe) {
            Some("denied by the ACL")
        } else if config.max_topic_levels > 0
            && topic::level_count(filter) > config.max_topic_levels
        {
            Some("more topic levels than max_topic_levels")
        } else {
            let mut st = client.session.state.lock();
            let is_new = !st.subscriptions.contains(filter);
            if is_new
                && config.max_subscriptions_per_client > 0
                && st.subscriptions.len() >= config.max_subscriptions_per_client
            {
                Some("max_subscriptions_per_client reached")
            } else {
                // A repeated filter replaces the earlier subscription [MQTT-3.8.4-3].
                st.subscriptions.insert(filter, *qos);
                None
            }
        };
        match refused {
            Some(why) => {
                tracing::info!(
                    client_id = client.client_id(),
                    filter = filter.as_str(),
                    "subscription refused: {why}"
                );
                codes.push(FAILURE);
            }
            None => {
                // midge supports QoS 2, so the requested QoS is granted [MQTT-3.9.3-2].
                client
                    .broker
                    .router
                    .subscribe(&client.session, filter, *qos);
                client.broker.record(StoreEvent::Subscribed {
                    client_id: &client.session.client_id,
                    filter,
                    qos: *qos,
                });
                tracing::debug!(
                    client_id = client.client_id(),
                    filter = filter.as_str(),
                    qos = *qos as u8,
                    "subscribed"
                );
                codes.push(*qos as u8);
                accepted.push((filter, *qos));
            }
        }
    }
    // One return code per filter, in order [MQTT-3.8.4-5/6].
    codec::encode_suback(client.out.buf(), subscribe.pkid, &codes);

    // Retained messages go out after the SUBACK, with RETAIN=1 [MQTT-3.3.1-8].
    // The ACL's read rule covers them too.
    for (filter, qos) in accepted {
        let mut retained = client.broker.retained_for(filter, qos);
        retained.retain(|(msg, _)| client.may(&msg.topic, Access::Read));
        client.session.deliver_retained(&retained);
    }
    Ok(())
}
