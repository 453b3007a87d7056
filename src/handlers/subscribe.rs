//! SUBSCRIBE: validate each filter, add it to the session and the router, answer SUBACK,
//! then queue the retained messages it matches.

use crate::auth::Access;
use crate::codec::{self, Subscribe, SubscriptionOptions};
use crate::connection::{reason, Client, Close};
use crate::log_limit::{field, LogLimit};
use crate::store::StoreEvent;
use crate::subscriptions::Sub;
use crate::topic;

/// SUBACK return code for a refused filter in MQTT 3.1.1.
const FAILURE: u8 = 0x80;

pub fn handle(client: &mut Client, subscribe: Subscribe) -> Result<(), Close> {
    let v5 = client.is_v5();
    let mut codes = Vec::with_capacity(subscribe.filters.len());
    // (filter, options, whether the subscription is new)
    let mut accepted: Vec<(&str, SubscriptionOptions, bool)> =
        Vec::with_capacity(subscribe.filters.len());
    for (filter, opts) in &subscribe.filters {
        let shared = topic::split_shared(filter);
        if shared.is_some() && opts.no_local {
            // [MQTT-3.8.3-4]
            return Err(Close::protocol(format!(
                "No Local set on the shared subscription {:?}",
                field(filter)
            )));
        }
        match check(client, filter, shared) {
            Err((code, why)) => {
                static LOG: LogLimit = LogLimit::new(10_000);
                if let Some(suppressed) = LOG.allow() {
                    tracing::info!(
                        client_id = ?field(client.client_id()),
                        filter = ?field(filter),
                        suppressed,
                        "subscription refused: {why}"
                    );
                }
                codes.push(if v5 { code } else { FAILURE });
            }
            Ok(()) => {
                let sub = Sub {
                    opts: *opts,
                    id: subscribe
                        .subscription_id
                        .and_then(std::num::NonZeroU32::new),
                };
                // A repeated filter replaces the earlier subscription [MQTT-3.8.4-3].
                let is_new = client
                    .session
                    .state
                    .lock()
                    .subscriptions
                    .insert(filter, sub);
                client.broker.router.subscribe(&client.session, filter, sub);
                // (A clean session's records change nothing and are not written.)
                let _ = client.broker.store.record(StoreEvent::Subscribed {
                    client_id: &client.session.client_id,
                    filter,
                    options: opts.to_byte(),
                    sub_id: sub.id.map_or(0, |id| id.get()),
                });
                tracing::debug!(
                    client_id = ?field(client.client_id()),
                    filter = ?field(filter),
                    qos = opts.qos as u8,
                    "subscribed"
                );
                // midge supports QoS 2, so the requested QoS is granted [MQTT-3.9.3-2].
                codes.push(opts.qos as u8);
                if shared.is_none() {
                    accepted.push((filter, *opts, is_new));
                }
            }
        }
    }
    // One return code per filter, in order [MQTT-3.8.4-5/6].
    if v5 {
        codec::encode_suback_v5(client.out.buf(), subscribe.pkid, &codes, None);
    } else {
        codec::encode_suback(client.out.buf(), subscribe.pkid, &codes);
    }

    // Retained messages go out after the SUBACK, with RETAIN=1 [MQTT-3.3.1-8], as Retain
    // Handling asks: 0 always, 1 only for a new subscription, 2 never [MQTT-3.3.1-9/10/11].
    // Shared subscriptions get none [MQTT-4.8.2]. The ACL's read rule covers them too.
    for (filter, opts, is_new) in accepted {
        let wanted = match opts.retain_handling {
            0 => true,
            1 => is_new,
            _ => false,
        };
        if !wanted {
            continue;
        }
        let mut retained = client.broker.retained_for(filter, opts.qos);
        retained.retain(|(msg, _)| client.may(&msg.topic, Access::Read));
        client.session.deliver_retained(
            &retained,
            subscribe.subscription_id,
            &*client.broker.store,
        );
    }
    Ok(())
}

/// Why a filter cannot be subscribed: the MQTT 5.0 reason code and a text for the log.
fn check(
    client: &Client,
    filter: &str,
    shared: Option<Option<(&str, &str)>>,
) -> Result<(), (u8, &'static str)> {
    let config = &client.broker.config;
    let plain = match shared {
        None => filter,
        Some(Some((_, inner))) => inner,
        Some(None) => return Err((reason::TOPIC_FILTER_INVALID, "invalid shared subscription")),
    };
    if !topic::valid_topic_filter(plain) {
        return Err((reason::TOPIC_FILTER_INVALID, "invalid topic filter"));
    }
    if config.max_topic_levels > 0 && topic::level_count(plain) > config.max_topic_levels {
        return Err((
            reason::TOPIC_FILTER_INVALID,
            "more topic levels than max_topic_levels",
        ));
    }
    if !client.may(filter, Access::Subscribe) {
        return Err((reason::NOT_AUTHORIZED, "denied by the ACL"));
    }
    let st = client.session.state.lock();
    if config.max_subscriptions_per_client > 0
        && !st.subscriptions.contains(filter)
        && st.subscriptions.len() >= config.max_subscriptions_per_client
    {
        return Err((
            reason::QUOTA_EXCEEDED,
            "max_subscriptions_per_client reached",
        ));
    }
    Ok(())
}
