//! PUBLISH from a client: validate, hand the message to the broker (which delivers it to
//! subscribers and the retained store), and acknowledge per QoS.

use std::sync::Arc;

use crate::auth::Access;
use crate::broker::Published;
use crate::client::{Client, Close};
use crate::codec::reason;
use crate::codec::{Ack, AckKind, Publish, QoS};
use crate::log_limit::{self, field, LogLimit};
use crate::message::Message;
use crate::topic;

pub fn handle(client: &mut Client, mut publish: Publish) -> Result<(), Close> {
    // Every PUBLISH read, as `publish/bytes/received` counts (the packet itself is counted
    // by the connection's read loop).
    crate::metrics::add(
        crate::metrics::Counter::PublishBytesReceived,
        publish.payload.len() as u64,
    );
    if client.is_v5() {
        resolve_topic_alias(client, &mut publish)?;
        check_receive_maximum(client, &publish)?;
    }
    // Wildcards or an empty topic in a PUBLISH break the protocol [MQTT-3.3.2-2],
    // [MQTT-4.7.3-1]: close the connection.
    if !topic::valid_topic_name(&publish.topic) {
        return Err(Close::protocol(format!(
            "PUBLISH to invalid topic name {:?}",
            field(&publish.topic)
        )));
    }
    // Deeper topics would cost the retained tree memory per level: 3.1.1 can only close
    // the connection; 5.0 says why, Topic Name invalid (a well-formed topic the server
    // does not accept).
    if !topic::within_levels(&publish.topic, client.broker.config().max_topic_levels) {
        return Err(Close::violation(
            reason::TOPIC_NAME_INVALID,
            "PUBLISH topic has more levels than max_topic_levels",
        ));
    }

    // Payload Format Indicator 1 promises UTF-8: a 5.0 publisher that breaks the promise
    // gets 0x99 instead of delivery [MQTT-3.3.2-4].
    let bad_format = publish.props.as_ref().is_some_and(|p| {
        p.payload_format == Some(true) && std::str::from_utf8(&publish.payload).is_err()
    });

    // A PUBLISH the ACL denies is dropped. MQTT 3.1.1 has no way to say "not authorized"
    // in PUBACK, so it is acknowledged as usual (as Mosquitto does) and the client does
    // not retry it forever; 5.0 clients get reason 0x87.
    // `$SYS` is refused the same way, ACL file or not (see `auth::is_sys`).
    // More User Properties than max_user_properties: a limit the operator set, so 0x97
    // Quota exceeded (Table 3-4), and the message is not delivered.
    let max_user = client.broker.config().max_user_properties;
    let too_many_user_props = max_user > 0
        && publish
            .props
            .as_ref()
            .is_some_and(|p| p.user_properties.len() > max_user);
    let denied = !client.may(&publish.topic, Access::Write);
    if denied || bad_format || too_many_user_props {
        // (reason code, `cause` field of the log line, its words)
        let (code, cause, why) = if denied && crate::auth::is_sys(&publish.topic) {
            (
                reason::NOT_AUTHORIZED,
                "sys_topic",
                "to $SYS, which only the broker writes",
            )
        } else if denied {
            (reason::NOT_AUTHORIZED, "acl", "denied by the ACL")
        } else if bad_format {
            (
                reason::PAYLOAD_FORMAT_INVALID,
                "payload_format",
                "payload is not the UTF-8 it claims",
            )
        } else {
            (
                reason::QUOTA_EXCEEDED,
                "user_properties",
                "has more user properties than max_user_properties",
            )
        };
        // A client repeating it must not flood the log.
        static LOG: LogLimit = LogLimit::new(10_000);
        if let Some(held_back) = LOG.allow() {
            tracing::info!(
                event = "publish_refused",
                cause,
                client_id = &*log_limit::field(client.client_id()),
                topic = &*log_limit::field(&publish.topic),
                held_back,
                "PUBLISH {why}, dropped"
            );
        }
        match publish.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                let ack = Ack {
                    pkid: publish.pkid,
                    reason: code,
                };
                client.acknowledge(AckKind::PubAck, ack, Vec::new(), 0);
            }
            QoS::ExactlyOnce => {
                // 5.0: a PUBREC with an error code ends the flow [MQTT-4.3.3-?]; 3.1.1:
                // remembered like a delivered one, so PUBREL completes the flow.
                if !client.is_v5() {
                    client
                        .session
                        .state
                        .lock()
                        .incoming_qos2_insert(publish.pkid);
                }
                let ack = Ack {
                    pkid: publish.pkid,
                    reason: code,
                };
                client.acknowledge(AckKind::PubRec, ack, Vec::new(), 0);
            }
        }
        return Ok(());
    }

    // Clearing a retained message (empty payload) gives memory back: always let through.
    let clears_retained = publish.retain && publish.payload.is_empty();
    if client
        .broker
        .memory_full(publish.topic.len() + publish.payload.len())
        && !clears_retained
        && !is_qos2_resend(client, &publish)
    {
        return refuse_for_memory(client, &publish);
    }

    // The acknowledgement waits until the message is stored for every persistent
    // session it goes to (see `Client::acknowledge_stored`).
    match publish.qos {
        QoS::AtMostOnce => {
            hand_to_broker(client, publish);
        }
        QoS::AtLeastOnce => {
            let pkid = publish.pkid;
            let published = hand_to_broker(client, publish);
            let ack = Ack {
                pkid,
                reason: matched_reason(published.matched),
            };
            client.acknowledge_stored(
                AckKind::PubAck,
                ack,
                published.over_limit,
                published.storage,
            )?;
        }
        QoS::ExactlyOnce => {
            let pkid = publish.pkid;
            // A re-sent PUBLISH whose PUBREL has not come yet was already delivered: only
            // acknowledge it again [MQTT-4.3.3-2]. A persistent session stores the id, so
            // that holds across a restart too.
            let handle = client.session.store_handle();
            let (first_time, mut stored) = client.session.state.lock().receive_qos2(pkid, handle);
            if let Some(v5) = client.v5.as_mut() {
                v5.qos2_in.insert(pkid);
            }
            let (waiting, matched) = if first_time {
                let published = hand_to_broker(client, publish);
                stored.merge(published.storage);
                (published.over_limit, published.matched)
            } else {
                (Vec::new(), true)
            };
            if stored.failed {
                // A refused PUBREC ends the flow (5.0): no PUBREL will come for the id.
                client.session.state.lock().incoming_qos2_remove(pkid);
                if let Some(v5) = client.v5.as_mut() {
                    v5.qos2_in.remove(&pkid);
                }
            }
            let ack = Ack {
                pkid,
                reason: matched_reason(matched),
            };
            client.acknowledge_stored(AckKind::PubRec, ack, waiting, stored)?;
        }
    }
    Ok(())
}

/// A QoS 2 PUBLISH whose PUBREC was already sent (a re-send before PUBREL): the message
/// was accepted then, so it is acknowledged again whatever the memory use now.
fn is_qos2_resend(client: &Client, publish: &Publish) -> bool {
    publish.qos == QoS::ExactlyOnce && client.session.state.lock().incoming_qos2_has(publish.pkid)
}

/// Above `memory_limit` a new message is refused, never acknowledged and then dropped:
/// QoS 0 is dropped (and counted); a 5.0 publisher of QoS 1/2 gets PUBACK/PUBREC 0x97
/// Quota exceeded (a PUBREC with an error ends the flow); a 3.1.1 publisher of QoS 1/2,
/// which has no way to be told, is disconnected without an acknowledgement (as Mosquitto
/// does when its memory_limit refuses an incoming message), and sends the message again
/// when it reconnects.
fn refuse_for_memory(client: &mut Client, publish: &Publish) -> Result<(), Close> {
    static LOG: LogLimit = LogLimit::new(10_000);
    crate::metrics::dropped(crate::metrics::DropReason::MemoryLimit);
    if let Some(held_back) = LOG.allow() {
        tracing::warn!(
            event = "memory_limit",
            client_id = %field(client.client_id()),
            topic = %field(&publish.topic),
            used = crate::memory::used(),
            held_back,
            "memory_limit reached, PUBLISH refused"
        );
    }
    match (publish.qos, client.is_v5()) {
        (QoS::AtMostOnce, _) => Ok(()),
        (QoS::AtLeastOnce, true) => {
            let ack = Ack {
                pkid: publish.pkid,
                reason: reason::QUOTA_EXCEEDED,
            };
            client.acknowledge(AckKind::PubAck, ack, Vec::new(), 0);
            Ok(())
        }
        (QoS::ExactlyOnce, true) => {
            let ack = Ack {
                pkid: publish.pkid,
                reason: reason::QUOTA_EXCEEDED,
            };
            client.acknowledge(AckKind::PubRec, ack, Vec::new(), 0);
            Ok(())
        }
        (_, false) => Err(Close::OverMemoryLimit),
    }
}

/// 0x10 "No matching subscribers" lets a 5.0 publisher know nobody got it.
fn matched_reason(matched: bool) -> u8 {
    if matched {
        reason::SUCCESS
    } else {
        reason::NO_MATCHING_SUBSCRIBERS
    }
}

/// Topic Alias (MQTT 5.0 §3.3.2.3.4): a PUBLISH with a topic and an alias sets the alias,
/// one with an empty topic and an alias uses it. 0 or above the maximum the broker
/// announced is a 0x94 DISCONNECT [MQTT-3.3.2-8/9]; an unknown alias with an empty topic
/// is a protocol error.
fn resolve_topic_alias(client: &mut Client, publish: &mut Publish) -> Result<(), Close> {
    let Some(alias) = publish.topic_alias else {
        return Ok(());
    };
    // The maximum announced in CONNACK.
    let alias_max = client.broker.config().max_topic_alias;
    let Some(v5) = client.v5.as_mut() else {
        return Ok(());
    };
    if alias == 0 || alias > alias_max {
        return Err(Close::violation(
            reason::TOPIC_ALIAS_INVALID,
            format!("topic alias {alias} outside 1..={alias_max} [MQTT-3.3.2-8/9]"),
        ));
    }
    if publish.topic.is_empty() {
        match v5.aliases.get(&alias) {
            Some(topic) => publish.topic = topic.clone(),
            None => {
                return Err(Close::protocol(format!(
                    "PUBLISH with unknown topic alias {alias} and no topic"
                )))
            }
        }
    } else if topic::valid_topic_name(&publish.topic) {
        v5.aliases.insert(alias, publish.topic.clone());
    }
    Ok(())
}

/// More unacknowledged QoS 2 (or, under backpressure, QoS 1) PUBLISHes than the Receive
/// Maximum the broker announced: DISCONNECT 0x93 [MQTT-3.3.4-9].
fn check_receive_maximum(client: &Client, publish: &Publish) -> Result<(), Close> {
    if publish.qos == QoS::AtMostOnce {
        return Ok(());
    }
    let Some(v5) = client.v5.as_ref() else {
        return Ok(());
    };
    // A QoS 2 PUBLISH re-sent before its PUBREL is not a new one.
    if publish.qos == QoS::ExactlyOnce && v5.qos2_in.contains(&publish.pkid) {
        return Ok(());
    }
    let receive_max = client.broker.config().receive_maximum;
    let pending = v5.qos2_in.len() + client.withheld_count();
    if pending >= usize::from(receive_max) {
        return Err(Close::violation(
            reason::RECEIVE_MAXIMUM_EXCEEDED,
            format!("more than Receive Maximum {receive_max} unacknowledged PUBLISHes"),
        ));
    }
    Ok(())
}

/// Turns a client's PUBLISH into a message and hands it to the broker. (A small payload
/// is already its own copy, not a slice of the read buffer: see
/// `codec::COPY_PAYLOAD_BELOW`.)
fn hand_to_broker(client: &mut Client, publish: Publish) -> Published {
    let msg = Arc::new(Message::with_props(
        publish.topic,
        publish.payload,
        publish.qos,
        publish.retain,
        publish.props,
    ));
    client.broker.publish(&msg, &client.session)
}
