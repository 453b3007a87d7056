//! SUBSCRIBE: validate each filter, add it to the session and the router, answer SUBACK,
//! then queue the retained messages it matches.
//!
//! One packet must not buy unbounded work: at most `max_filters_per_subscribe` filters
//! are acted on (the rest are refused with Quota exceeded), a filter repeated in the same
//! packet is acted on once (its last copy, which is what replacing the subscription
//! copy by copy would leave [MQTT-3.8.4-3]), so its retained messages are queued once,
//! and retained messages go through the queue limits like any other delivery (see
//! [`crate::session::Session::deliver_retained`]), one filter at a time with a yield in
//! between, so that a SUBSCRIBE of hundreds of filters over a large retained store does
//! not hold a worker thread.

use std::collections::HashMap;

use crate::auth::Access;
use crate::client::{Client, Close, RetainedDue};
use crate::codec::reason;
use crate::codec::{Subscribe, SubscriptionOptions};
use crate::log_limit::{field, LogLimit};
use crate::subscriptions::Sub;
use crate::topic;

/// SUBACK return code for a refused filter in MQTT 3.1.1.
const FAILURE: u8 = 0x80;

/// Refused filters are logged at most once per this interval (a client can send
/// thousands in one packet).
static REFUSED_LOG: LogLimit = LogLimit::new(10_000);

pub fn handle(client: &mut Client, subscribe: Subscribe) -> Result<(), Close> {
    let v5 = client.is_v5();
    let n = subscribe.filters.len();
    let max = client.broker.config().max_filters_per_subscribe;
    let handled = if max == 0 { n } else { n.min(max) };
    // [MQTT-3.8.3-4]: checked on every filter, as before any of them is acted on.
    if let Some((filter, _)) = subscribe
        .filters
        .iter()
        .find(|(f, opts)| opts.no_local && topic::split_shared(f).is_some())
    {
        return Err(Close::protocol(format!(
            "No Local set on the shared subscription {}",
            field(filter)
        )));
    }
    // Position of the last copy of each filter among the handled ones; earlier copies
    // are answered with its code. Only built when there is more than one filter.
    let last: HashMap<&str, usize> = if handled > 1 {
        subscribe.filters[..handled]
            .iter()
            .enumerate()
            .map(|(i, (f, _))| (f.as_str(), i))
            .collect()
    } else {
        HashMap::new()
    };
    let mut codes = vec![0u8; n];
    // (filter, options, whether the subscription is new)
    let mut accepted: Vec<(&str, SubscriptionOptions, bool)> = Vec::new();
    for (i, (filter, opts)) in subscribe.filters.iter().enumerate() {
        if i >= handled {
            let r = Refused {
                code: reason::QUOTA_EXCEEDED,
                cause: "too_many_filters",
                why: "more filters than max_filters_per_subscribe",
            };
            codes[i] = if v5 { r.code } else { FAILURE };
            refused(client, filter, r);
            continue;
        }
        if last.get(filter.as_str()).is_some_and(|&at| at != i) {
            // Replaced by a later copy in the same packet; its code is filled in below.
            continue;
        }
        let shared = topic::split_shared(filter);
        match check(client, filter, shared) {
            Err(r) => {
                codes[i] = if v5 { r.code } else { FAILURE };
                refused(client, filter, r);
            }
            Ok(()) => {
                let sub = Sub {
                    opts: *opts,
                    id: subscribe
                        .subscription_id
                        .and_then(std::num::NonZeroU32::new),
                };
                // A repeated filter replaces the earlier subscription [MQTT-3.8.4-3].
                let is_new = client.broker.subscribe(&client.session, filter, sub);
                tracing::debug!(
                    event = "subscribed",
                    client_id = client.client_id(),
                    filter = &*field(filter),
                    qos = opts.qos as u8,
                    "subscribed"
                );
                // midge supports QoS 2, so the requested QoS is granted [MQTT-3.9.3-2].
                codes[i] = opts.qos as u8;
                if shared.is_none() {
                    accepted.push((filter, *opts, is_new));
                }
            }
        }
    }
    for (i, (filter, _)) in subscribe.filters[..handled].iter().enumerate() {
        if let Some(&at) = last.get(filter.as_str()) {
            codes[i] = codes[at];
        }
    }
    // One return code per filter, in order [MQTT-3.8.4-5/6].
    client.out.suback(subscribe.pkid, &codes);

    // Retained messages go out after the SUBACK, with RETAIN=1 [MQTT-3.3.1-8], as Retain
    // Handling asks: 0 always, 1 only for a new subscription, 2 never [MQTT-3.3.1-9/10/11].
    // Shared subscriptions get none [MQTT-4.8.2]. The connection queues them one filter
    // at a time, yielding in between, before it handles the next packet (see
    // `connection::catch_up`).
    for (filter, opts, is_new) in accepted {
        let wanted = match opts.retain_handling {
            0 => true,
            1 => is_new,
            _ => false,
        };
        if wanted {
            client.owe_retained(RetainedDue {
                filter: filter.to_owned(),
                qos: opts.qos,
                sub_id: subscribe.subscription_id,
            });
        }
    }
    Ok(())
}

/// Queues the retained messages matching one subscribed filter (those the ACL lets the
/// client read), under the queue limits (see
/// [`crate::session::Session::deliver_retained`]).
pub fn deliver_retained(client: &Client, due: RetainedDue) {
    client
        .broker
        .deliver_retained(&client.session, &due.filter, due.qos, due.sub_id, |topic| {
            client.may(topic, Access::Read)
        });
}

/// Why a filter cannot be subscribed.
struct Refused {
    /// The MQTT 5.0 reason code.
    code: u8,
    /// The log line's stable `cause` field.
    cause: &'static str,
    /// The log line's words.
    why: &'static str,
}

/// Logs a refused filter, at most once per interval for the whole broker.
fn refused(client: &Client, filter: &str, r: Refused) {
    if let Some(held_back) = REFUSED_LOG.allow() {
        tracing::info!(
            event = "subscribe_refused",
            cause = r.cause,
            client_id = &*field(client.client_id()),
            filter = &*field(filter),
            held_back,
            "subscription refused: {}",
            r.why
        );
    }
}

/// Whether `filter` may be subscribed, and if not, why.
fn check(
    client: &Client,
    filter: &str,
    shared: Option<Option<(&str, &str)>>,
) -> Result<(), Refused> {
    let config = &client.broker.config();
    let refuse = |code, cause, why| Err(Refused { code, cause, why });
    let plain = match shared {
        None => filter,
        Some(Some((_, inner))) => inner,
        Some(None) => {
            return refuse(
                reason::TOPIC_FILTER_INVALID,
                "invalid_shared",
                "invalid shared subscription",
            )
        }
    };
    if !topic::valid_topic_filter(plain) {
        return refuse(
            reason::TOPIC_FILTER_INVALID,
            "invalid_filter",
            "invalid topic filter",
        );
    }
    if !topic::within_levels(plain, config.max_topic_levels) {
        return refuse(
            reason::TOPIC_FILTER_INVALID,
            "too_deep",
            "more topic levels than max_topic_levels",
        );
    }
    if !client.may(filter, Access::Subscribe) {
        return refuse(reason::NOT_AUTHORIZED, "acl", "denied by the ACL");
    }
    let st = client.session.state.lock();
    if config.max_subscriptions_per_client > 0
        && !st.subscriptions.contains(filter)
        && st.subscriptions.len() >= config.max_subscriptions_per_client
    {
        return refuse(
            reason::QUOTA_EXCEEDED,
            "too_many_subscriptions",
            "max_subscriptions_per_client reached",
        );
    }
    Ok(())
}
