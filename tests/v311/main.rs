//! MQTT 3.1.1 message flows against a real `midge` process.
//!
//! Each test starts its own broker (`common::Broker::start`) and is named after the
//! normative statement of MQTT 3.1.1 it checks ([MQTT-x.y.z-n] → `mqtt_x_y_z_n_...`);
//! docs/CONFORMANCE.md maps every server-side statement to these tests.
//!
//! Two kinds of client are used:
//! * [`Client`]: rumqttc 0.25 (a real MQTT 3.1.1 client), its event loop driven by a task
//!   that forwards every event to a channel, so a test can wait for "the next PUBLISH" with
//!   a bound.
//! * [`Raw`]: the raw client of tests/common, a socket speaking bytes, for wire-level
//!   checks (DUP flag, packet ids, RETAIN flag, session present, acknowledgements withheld
//!   or not sent). It blocks, so every test runs on the multi-thread runtime: the test
//!   body runs on its own thread and rumqttc's event loops on the worker, and a raw read
//!   never stalls them.
//!
//! Negative checks ("X is NOT delivered") use a sentinel wherever possible: a message
//! published after X, from the same publisher, to a topic the subscriber also matches. A
//! session's queue is FIFO, so if X had been delivered it would arrive before the sentinel.
//! Every wait is bounded.
//!
//! One file a chapter of the specification, in one test binary: each binary links the
//! whole crate, and the suite's time is mostly linking.

#[path = "../common/mod.rs"]
mod common;

mod connect;
mod publish;
mod retained;
mod session;
mod subscribe;
mod will;

// What the chapters share.
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use common::{close_count, wait_closes, Broker};
use rumqttc::{
    AsyncClient, Event, MqttOptions, Outgoing, Packet, Publish, QoS, SubscribeFilter,
    SubscribeReasonCode,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long anything that must happen may take.
const WAIT: Duration = Duration::from_secs(5);
/// How long we listen to conclude that nothing (more) arrives.
const QUIET: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------------------------------
// rumqttc clients
// ---------------------------------------------------------------------------------------

/// A rumqttc client whose event loop runs in its own task.
struct Client {
    c: AsyncClient,
    rx: mpsc::UnboundedReceiver<Result<Event, String>>,
    task: tokio::task::JoinHandle<()>,
    /// PUBLISHes received while waiting for something else.
    stash: VecDeque<Publish>,
    session_present: bool,
}

async fn client(b: &Broker, id: &str) -> Client {
    client_with(b, id, |_| {}).await
}

async fn persistent(b: &Broker, id: &str) -> Client {
    client_with(b, id, |o| {
        o.set_clean_session(false);
    })
    .await
}

async fn client_with(b: &Broker, id: &str, f: impl FnOnce(&mut MqttOptions)) -> Client {
    let mut o = MqttOptions::new(id, "127.0.0.1", b.port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(1 << 20, 1 << 20);
    f(&mut o);
    let (c, mut el) = AsyncClient::new(o, 256);
    let first = match tokio::time::timeout(WAIT, el.poll()).await {
        Err(_) => panic!("no CONNACK for {id} within {WAIT:?}"),
        Ok(Err(e)) => panic!("connect {id}: {e}"),
        Ok(Ok(ev)) => ev,
    };
    let session_present = match first {
        Event::Incoming(Packet::ConnAck(ack)) => ack.session_present,
        other => panic!("expected CONNACK for {id}, got {other:?}"),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(ev) => {
                    if tx.send(Ok(ev)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            }
        }
    });
    Client {
        c,
        rx,
        task,
        stash: VecDeque::new(),
        session_present,
    }
}

impl Client {
    /// The next event (None: nothing within `d`, or the event loop ended).
    async fn next_event(&mut self, d: Duration) -> Option<Result<Event, String>> {
        tokio::time::timeout(d, self.rx.recv()).await.ok().flatten()
    }

    /// Waits for an event matching `want`, stashing PUBLISHes met on the way.
    async fn wait_for<T>(&mut self, what: &str, mut want: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await {
                Some(Ok(ev)) => {
                    if let Some(t) = want(&ev) {
                        return t;
                    }
                    if let Event::Incoming(Packet::Publish(p)) = ev {
                        self.stash.push_back(p);
                    }
                }
                Some(Err(e)) => panic!("connection error while waiting for {what}: {e}"),
                None => panic!("no {what} within {WAIT:?}"),
            }
        }
    }

    async fn recv_within(&mut self, d: Duration) -> Option<Publish> {
        if let Some(p) = self.stash.pop_front() {
            return Some(p);
        }
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await {
                Some(Ok(Event::Incoming(Packet::Publish(p)))) => return Some(p),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("connection error while waiting for a PUBLISH: {e}"),
                None => return None,
            }
        }
    }

    /// The next PUBLISH; panics if none arrives within [`WAIT`].
    async fn recv(&mut self) -> Publish {
        match self.recv_within(WAIT).await {
            Some(p) => p,
            None => panic!("no PUBLISH within {WAIT:?}"),
        }
    }

    async fn expect_quiet(&mut self, d: Duration) {
        if let Some(p) = self.recv_within(d).await {
            panic!("expected no PUBLISH, got {p:?}");
        }
    }

    /// Receives PUBLISHes until one on `topic` (included).
    async fn collect_until(&mut self, topic: &str) -> Vec<Publish> {
        let mut got = Vec::new();
        loop {
            let p = self.recv().await;
            let done = p.topic == topic;
            got.push(p);
            if done {
                return got;
            }
        }
    }

    async fn subscribe_many(&mut self, filters: &[(&str, QoS)]) -> Vec<SubscribeReasonCode> {
        self.c
            .subscribe_many(
                filters
                    .iter()
                    .map(|(f, q)| SubscribeFilter::new(f.to_string(), *q)),
            )
            .await
            .expect("queue SUBSCRIBE");
        self.wait_for("SUBACK", |ev| match ev {
            Event::Incoming(Packet::SubAck(s)) => Some(s.return_codes.clone()),
            _ => None,
        })
        .await
    }

    /// Subscribes and asserts the requested QoS is granted.
    async fn subscribe(&mut self, filter: &str, qos: QoS) {
        let codes = self.subscribe_many(&[(filter, qos)]).await;
        assert_eq!(
            codes,
            vec![SubscribeReasonCode::Success(qos)],
            "SUBACK for {filter}"
        );
    }

    async fn unsubscribe(&mut self, filter: &str) {
        self.c.unsubscribe(filter).await.expect("queue UNSUBSCRIBE");
        self.wait_for("UNSUBACK", |ev| match ev {
            Event::Incoming(Packet::UnsubAck(_)) => Some(()),
            _ => None,
        })
        .await
    }

    /// Publishes and waits until the flow is complete (written for QoS 0, PUBACK for QoS 1,
    /// PUBCOMP for QoS 2).
    async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: impl Into<Vec<u8>>) {
        self.c
            .publish(topic, qos, retain, payload.into())
            .await
            .expect("queue PUBLISH");
        self.wait_for("end of the publish flow", |ev| match (qos, ev) {
            (QoS::AtMostOnce, Event::Outgoing(Outgoing::Publish(_))) => Some(()),
            (QoS::AtLeastOnce, Event::Incoming(Packet::PubAck(_))) => Some(()),
            (QoS::ExactlyOnce, Event::Incoming(Packet::PubComp(_))) => Some(()),
            _ => None,
        })
        .await
    }

    /// Sends DISCONNECT and waits until the broker has closed the connection.
    async fn disconnect(mut self) {
        self.c.disconnect().await.expect("queue DISCONNECT");
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await {
                Some(Ok(_)) => continue,
                // The event loop reports the broker's close as an error and stops.
                Some(Err(_)) => {
                    let _ = tokio::time::timeout(WAIT, &mut self.task).await;
                    return;
                }
                None => panic!("broker did not close the connection within {WAIT:?} of DISCONNECT"),
            }
        }
    }
}

fn payload_str(p: &Publish) -> String {
    String::from_utf8_lossy(&p.payload).into_owned()
}

fn topics(ps: &[Publish]) -> Vec<String> {
    ps.iter().map(|p| p.topic.clone()).collect()
}

// ---------------------------------------------------------------------------------------
// Broker log
// ---------------------------------------------------------------------------------------

/// Disconnects a rumqttc client cleanly and waits until the broker has let go of it.
async fn go_offline(b: &Broker, id: &str, c: Client) {
    let n = close_count(b, id);
    c.disconnect().await;
    wait_closes(b, id, n + 1);
}

fn listener_toml(queue_full: &str) -> String {
    format!(
        "[[listener]]\nbind = \"127.0.0.1\"\nport = {}\nqueue_full = \"{queue_full}\"\n",
        common::free_port()
    )
}

/// A CONNECT built field by field: `fields` are written length-prefixed after the
/// variable header (client id, then will topic, will message, user name, password as the
/// flags say).
fn connect_raw(flags: u8, fields: &[&[u8]]) -> Vec<u8> {
    use common::packets::{frame, put_str};
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, flags, 0x00, 0x3C];
    for f in fields {
        put_str(&mut body, f);
    }
    frame(0x10, body)
}

const BAD_UTF8: &[u8] = &[0xC3, 0x28];
