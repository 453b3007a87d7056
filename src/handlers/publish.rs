//! PUBLISH from a client: validate, route to subscribers (and the retained store), and
//! acknowledge per QoS. Also publishes wills, which take the same route.

use std::cell::RefCell;
use std::sync::Arc;

use bytes::Bytes;

use crate::auth::Access;
use crate::broker::Broker;
use crate::codec::{Publish, QoS, Will};
use crate::connection::{Ack, Client, Close};
use crate::message::{Message, SharedMessage};
use crate::router::Subscriber;
use crate::session::Session;
use crate::topic;

/// Payloads at least this large keep sharing the read buffer they arrived in.
const SHARE_PAYLOAD_FROM: usize = 4096;

pub fn handle(client: &mut Client, publish: Publish) -> Result<(), Close> {
    // Wildcards or an empty topic in a PUBLISH break the protocol [MQTT-3.3.2-2],
    // [MQTT-4.7.3-1]: close the connection.
    if !topic::valid_topic_name(&publish.topic) {
        return Err(Close::protocol(format!(
            "PUBLISH to invalid topic name {:?}",
            publish.topic
        )));
    }
    let max_levels = client.broker.config.max_topic_levels;
    if max_levels > 0 && topic::level_count(&publish.topic) > max_levels {
        return Err(Close::protocol(
            "PUBLISH topic has more levels than max_topic_levels",
        ));
    }

    // A PUBLISH the ACL denies is dropped, but acknowledged as usual (as Mosquitto does for
    // MQTT 3.1.1, which has no way to say "not authorized" in PUBACK): the client must not
    // retry it forever.
    if !client.may(&publish.topic, Access::Write) {
        tracing::info!(
            client_id = client.client_id(),
            topic = publish.topic.as_str(),
            "PUBLISH denied by the ACL, dropped"
        );
        match publish.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => client.acknowledge(Ack::PubAck(publish.pkid), Vec::new()),
            QoS::ExactlyOnce => {
                // Remembered like a delivered one, so PUBREL completes the flow.
                client
                    .session
                    .state
                    .lock()
                    .incoming_qos2_insert(publish.pkid);
                client.acknowledge(Ack::PubRec(publish.pkid), Vec::new());
            }
        }
        return Ok(());
    }

    match publish.qos {
        QoS::AtMostOnce => {
            route(client, publish);
        }
        QoS::AtLeastOnce => {
            let pkid = publish.pkid;
            let waiting = route(client, publish);
            client.acknowledge(Ack::PubAck(pkid), waiting);
        }
        QoS::ExactlyOnce => {
            let pkid = publish.pkid;
            // A re-sent PUBLISH whose PUBREL has not come yet was already delivered: only
            // acknowledge it again [MQTT-4.3.3-2].
            let first_time = client.session.state.lock().incoming_qos2_insert(pkid);
            let waiting = if first_time {
                route(client, publish)
            } else {
                Vec::new()
            };
            client.acknowledge(Ack::PubRec(pkid), waiting);
        }
    }
    Ok(())
}

/// Routes a client's PUBLISH; returns the sessions whose full queues must drain before the
/// publisher is acknowledged (backpressure).
fn route(client: &mut Client, publish: Publish) -> Vec<Arc<Session>> {
    // A decoded payload is a slice of the connection's read buffer. A small one is copied
    // out, so that a message kept in a queue or the retained store does not pin a whole
    // read buffer; a large one mostly fills its buffer anyway and is shared as it is.
    let payload = if publish.payload.len() < SHARE_PAYLOAD_FROM {
        Bytes::copy_from_slice(&publish.payload)
    } else {
        publish.payload
    };
    let msg = Arc::new(Message {
        topic: publish.topic,
        payload,
        qos: publish.qos,
        retain: publish.retain,
    });
    route_message(&client.broker, &msg, Some(&client.session))
}

thread_local! {
    /// The subscribers a topic reaches, reused by every PUBLISH routed on this worker
    /// thread: no allocation per message, and no scratch buffer per connection.
    static ROUTE: RefCell<Vec<Subscriber>> = const { RefCell::new(Vec::new()) };
}

/// Routes `msg`; returns the sessions over their limit under backpressure.
fn route_message(
    broker: &Broker,
    msg: &SharedMessage,
    publisher: Option<&Arc<Session>>,
) -> Vec<Arc<Session>> {
    let mut over_limit = Vec::new();
    ROUTE.with_borrow_mut(|scratch| broker.publish(msg, publisher, scratch, &mut over_limit));
    over_limit
}

/// Publishes a client's will after an ungraceful close [MQTT-3.1.2-8], with its QoS and
/// RETAIN flag [MQTT-3.1.2-14/17].
pub fn publish_will(client: &mut Client, will: Will) {
    // Checked at CONNECT too; again here, since the ACL may have been reloaded since.
    if !client.may(&will.topic, Access::Write) {
        tracing::info!(
            client_id = client.client_id(),
            topic = will.topic.as_str(),
            "will denied by the ACL, not published"
        );
        return;
    }
    tracing::debug!(
        client_id = client.client_id(),
        topic = will.topic.as_str(),
        "publishing will"
    );
    let msg = Arc::new(Message {
        topic: will.topic,
        payload: will.payload,
        qos: will.qos,
        retain: will.retain,
    });
    route_message(&client.broker, &msg, None);
}
