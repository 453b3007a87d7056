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
//! * [`Raw`]: a bare tokio socket speaking bytes, for wire-level checks (DUP flag, packet
//!   ids, RETAIN flag, session present, acknowledgements withheld or not sent).
//!
//! Negative checks ("X is NOT delivered") use a sentinel wherever possible: a message
//! published after X, from the same publisher, to a topic the subscriber also matches. A
//! session's queue is FIFO, so if X had been delivered it would arrive before the sentinel.
//! Every wait is bounded.

mod common;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use common::Broker;
use rumqttc::{
    AsyncClient, Event, MqttOptions, Outgoing, Packet, Publish, QoS, SubscribeFilter,
    SubscribeReasonCode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long anything that must happen may take.
const WAIT: Duration = Duration::from_secs(5);
/// How long we listen to conclude that nothing (more) arrives.
const QUIET: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------------------------------
// Raw packets
// ---------------------------------------------------------------------------------------

const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PUBREC: u8 = 5;
const PUBREL: u8 = 6;
const PUBCOMP: u8 = 7;
const SUBACK: u8 = 9;
const UNSUBACK: u8 = 11;
const PINGRESP: u8 = 13;

const PINGREQ_BYTES: [u8; 2] = [0xC0, 0x00];
const DISCONNECT_BYTES: [u8; 2] = [0xE0, 0x00];

/// A will for a raw CONNECT.
struct WillSpec<'a> {
    topic: &'a str,
    payload: &'a [u8],
    qos: u8,
    retain: bool,
}

fn frame(byte1: u8, body: Vec<u8>) -> Vec<u8> {
    let mut p = vec![byte1];
    common::push_len(&mut p, body.len());
    p.extend(body);
    p
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// An MQTT 3.1.1 CONNECT.
fn connect_bytes(id: &str, clean: bool, keep_alive: u16, will: Option<&WillSpec>) -> Vec<u8> {
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04];
    let mut flags = 0u8;
    if clean {
        flags |= 0x02;
    }
    if let Some(w) = will {
        flags |= 0x04 | (w.qos << 3);
        if w.retain {
            flags |= 0x20;
        }
    }
    body.push(flags);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    put_str(&mut body, id.as_bytes());
    if let Some(w) = will {
        put_str(&mut body, w.topic.as_bytes());
        put_str(&mut body, w.payload);
    }
    frame(0x10, body)
}

fn publish_bytes(
    topic: &str,
    payload: &[u8],
    qos: u8,
    pkid: u16,
    retain: bool,
    dup: bool,
) -> Vec<u8> {
    let byte1 = 0x30 | (u8::from(dup) << 3) | (qos << 1) | u8::from(retain);
    let mut body = Vec::new();
    put_str(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    frame(byte1, body)
}

fn subscribe_bytes(pkid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    for (f, q) in filters {
        put_str(&mut body, f.as_bytes());
        body.push(*q);
    }
    frame(0x82, body)
}

fn unsubscribe_bytes(pkid: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    for f in filters {
        put_str(&mut body, f.as_bytes());
    }
    frame(0xA2, body)
}

fn puback_bytes(pkid: u16) -> Vec<u8> {
    frame(0x40, pkid.to_be_bytes().to_vec())
}
fn pubrec_bytes(pkid: u16) -> Vec<u8> {
    frame(0x50, pkid.to_be_bytes().to_vec())
}
fn pubrel_bytes(pkid: u16) -> Vec<u8> {
    frame(0x62, pkid.to_be_bytes().to_vec())
}
fn pubcomp_bytes(pkid: u16) -> Vec<u8> {
    frame(0x70, pkid.to_be_bytes().to_vec())
}

/// One packet received from the broker.
#[derive(Debug, Clone, PartialEq)]
struct Pkt {
    byte1: u8,
    body: Vec<u8>,
}

/// A decoded PUBLISH received from the broker.
#[derive(Debug, Clone, PartialEq)]
struct RawPub {
    dup: bool,
    qos: u8,
    retain: bool,
    topic: String,
    pkid: u16,
    payload: Vec<u8>,
}

impl Pkt {
    fn kind(&self) -> u8 {
        self.byte1 >> 4
    }

    /// Packet id of an acknowledgement (PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK).
    fn pkid(&self) -> u16 {
        assert!(self.body.len() >= 2, "no packet id in {self:?}");
        u16::from_be_bytes([self.body[0], self.body[1]])
    }

    fn publish(&self) -> RawPub {
        assert_eq!(self.kind(), PUBLISH, "expected a PUBLISH, got {self:?}");
        let qos = (self.byte1 >> 1) & 0x03;
        let tlen = usize::from(u16::from_be_bytes([self.body[0], self.body[1]]));
        let topic = String::from_utf8(self.body[2..2 + tlen].to_vec()).expect("UTF-8 topic");
        let mut at = 2 + tlen;
        let pkid = if qos > 0 {
            at += 2;
            u16::from_be_bytes([self.body[at - 2], self.body[at - 1]])
        } else {
            0
        };
        RawPub {
            dup: self.byte1 & 0x08 != 0,
            qos,
            retain: self.byte1 & 0x01 != 0,
            topic,
            pkid,
            payload: self.body[at..].to_vec(),
        }
    }

    /// Asserts this is an acknowledgement of `kind` (with its fixed flags) for `pkid`.
    fn assert_ack(&self, kind: u8, pkid: u16) {
        let flags = if kind == PUBREL { 0x02 } else { 0x00 };
        assert_eq!(
            (self.byte1, self.body.as_slice()),
            ((kind << 4) | flags, &pkid.to_be_bytes()[..]),
            "expected packet type {kind} for packet id {pkid}, got {self:?}"
        );
    }
}

enum Next {
    Packet(Pkt),
    Closed,
    Quiet,
}

fn try_parse(buf: &mut Vec<u8>) -> Option<Pkt> {
    let mut len = 0usize;
    let mut mult = 1usize;
    let mut i = 1;
    loop {
        let &b = buf.get(i)?;
        len += usize::from(b & 0x7F) * mult;
        mult *= 128;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        assert!(
            i < 5,
            "broker sent a remaining length longer than 4 bytes: {buf:?}"
        );
    }
    if buf.len() < i + len {
        return None;
    }
    let pkt = Pkt {
        byte1: buf[0],
        body: buf[i..i + len].to_vec(),
    };
    buf.drain(..i + len);
    Some(pkt)
}

/// A raw MQTT connection over a tokio socket.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn open(addr: SocketAddr) -> Raw {
        let s = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("TCP connect in time")
            .expect("TCP connect");
        s.set_nodelay(true).unwrap();
        Raw { s, buf: Vec::new() }
    }

    /// Opens a connection, sends CONNECT and checks CONNACK 0; returns session present.
    async fn connect(
        b: &Broker,
        id: &str,
        clean: bool,
        keep_alive: u16,
        will: Option<&WillSpec<'_>>,
    ) -> (Raw, bool) {
        let mut r = Raw::open(b.addr()).await;
        r.send(&connect_bytes(id, clean, keep_alive, will)).await;
        let ack = r.recv().await;
        assert_eq!(
            ack.kind(),
            CONNACK,
            "first packet for {id:?} must be CONNACK: {ack:?}"
        );
        assert_eq!(ack.byte1, 0x20);
        assert_eq!(ack.body.len(), 2, "CONNACK remaining length: {ack:?}");
        assert_eq!(ack.body[1], 0, "CONNACK return code for {id:?}");
        assert!(ack.body[0] <= 1, "reserved CONNACK flags set: {ack:?}");
        (r, ack.body[0] == 1)
    }

    /// A clean-session connection with keep-alive 60 and no will.
    async fn clean(b: &Broker, id: &str) -> Raw {
        Raw::connect(b, id, true, 60, None).await.0
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.expect("write to broker");
    }

    async fn next_within(&mut self, d: Duration) -> Next {
        let deadline = Instant::now() + d;
        loop {
            if let Some(p) = try_parse(&mut self.buf) {
                return Next::Packet(p);
            }
            let mut tmp = [0u8; 8192];
            match tokio::time::timeout_at(deadline, self.s.read(&mut tmp)).await {
                Err(_) => return Next::Quiet,
                Ok(Ok(0)) | Ok(Err(_)) => return Next::Closed,
                Ok(Ok(n)) => self.buf.extend_from_slice(&tmp[..n]),
            }
        }
    }

    /// The next packet; panics if none comes within [`WAIT`] or the broker closes.
    async fn recv(&mut self) -> Pkt {
        match self.next_within(WAIT).await {
            Next::Packet(p) => p,
            Next::Closed => panic!("broker closed the connection while a packet was expected"),
            Next::Quiet => panic!("no packet from the broker within {WAIT:?}"),
        }
    }

    async fn recv_publish(&mut self) -> RawPub {
        self.recv().await.publish()
    }

    /// Asserts that nothing arrives (and the connection stays open) for `d`.
    async fn expect_quiet(&mut self, d: Duration) {
        match self.next_within(d).await {
            Next::Quiet => {}
            Next::Packet(p) => panic!("expected nothing from the broker, got {p:?}"),
            Next::Closed => {
                panic!("expected nothing from the broker, but it closed the connection")
            }
        }
    }

    /// Asserts the broker closes the connection within `d`; returns what it sent first.
    async fn expect_closed(&mut self, d: Duration) -> Vec<Pkt> {
        let deadline = Instant::now() + d;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_within(left).await {
                Next::Closed => return got,
                Next::Packet(p) => got.push(p),
                Next::Quiet => {
                    panic!("broker did not close the connection within {d:?} (sent {got:?})")
                }
            }
        }
    }

    /// SUBSCRIBE and wait for its SUBACK (checking the packet id); returns the codes.
    async fn subscribe(&mut self, pkid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
        self.send(&subscribe_bytes(pkid, filters)).await;
        let p = self.recv().await;
        assert_eq!(
            (p.kind(), p.byte1),
            (SUBACK, 0x90),
            "expected SUBACK, got {p:?}"
        );
        assert_eq!(p.pkid(), pkid, "SUBACK packet id [MQTT-3.8.4-2]");
        p.body[2..].to_vec()
    }

    async fn ping(&mut self) {
        self.send(&PINGREQ_BYTES).await;
        let p = self.recv().await;
        assert_eq!(
            (p.byte1, p.body.len()),
            (0xD0, 0),
            "expected PINGRESP, got {p:?}"
        );
    }
}

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

/// Log lines midge writes when a connection ends (src/connection.rs `finish`).
const CLOSE_PHRASES: &[&str] = &[
    "client disconnected",
    "client closed its connection",
    "socket error on client",
    "protocol error",
    "client has exceeded its keep-alive",
    "client id taken over",
];

fn close_count(b: &Broker, id: &str) -> usize {
    let needle = format!("client_id={id} peer=");
    b.log()
        .lines()
        .filter(|l| l.contains(&needle) && CLOSE_PHRASES.iter().any(|p| l.contains(p)))
        .count()
}

/// Waits until the broker has logged `n` connection ends for `id`, so that its session is
/// offline before the test goes on.
async fn wait_closes(b: &Broker, id: &str, n: usize) {
    let deadline = Instant::now() + WAIT;
    while close_count(b, id) < n {
        assert!(
            Instant::now() < deadline,
            "broker did not log the end of connection #{n} of {id}; log:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The session is detached right after the log line.
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Disconnects a rumqttc client cleanly and waits until the broker has let go of it.
async fn go_offline(b: &Broker, id: &str, c: Client) {
    let n = close_count(b, id);
    c.disconnect().await;
    wait_closes(b, id, n + 1).await;
}

fn listener_toml(queue_full: &str) -> String {
    format!(
        "[[listener]]\nbind = \"127.0.0.1\"\nport = {}\nqueue_full = \"{queue_full}\"\n",
        common::free_port()
    )
}

// ---------------------------------------------------------------------------------------
// QoS 0, 1, 2 flows
// ---------------------------------------------------------------------------------------

/// [MQTT-4.3.1-1], [MQTT-3.3.1-2], [MQTT-2.3.1-5], [MQTT-3.3.4-1]: a QoS 0 PUBLISH gets no
/// response, and is forwarded with QoS 0, DUP 0 and no packet identifier.
#[tokio::test]
async fn mqtt_4_3_1_1_qos0_delivered_with_qos0_dup0_and_no_packet_id() {
    let b = Broker::start("");
    let mut sub = Raw::clean(&b, "sub").await;
    assert_eq!(sub.subscribe(1, &[("q0/t", 2)]).await, vec![2]);

    let mut publ = Raw::clean(&b, "pub").await;
    publ.send(&publish_bytes("q0/t", b"hello", 0, 0, false, false))
        .await;
    // No response to QoS 0: the next packet is the answer to PINGREQ.
    publ.ping().await;

    let p = sub.recv().await;
    assert_eq!(p.byte1, 0x30, "QoS 0, DUP 0, RETAIN 0: {p:?}");
    let mut expected = Vec::new();
    put_str(&mut expected, b"q0/t");
    expected.extend_from_slice(b"hello");
    assert_eq!(p.body, expected, "topic then payload, no packet identifier");
    sub.expect_quiet(QUIET).await;
}

/// [MQTT-4.3.2-1], [MQTT-4.3.2-2], [MQTT-2.3.1-1], [MQTT-2.3.1-4], [MQTT-2.3.1-6]: PUBACK
/// carries the publisher's packet id; the broker forwards with QoS 1, DUP 0 and its own
/// non-zero packet ids, unused while unacknowledged. A PUBLISH reusing a packet id after its
/// PUBACK is a new message.
#[tokio::test]
async fn mqtt_4_3_2_2_qos1_puback_and_forwarded_with_fresh_packet_id() {
    let b = Broker::start("");
    let mut sub = Raw::clean(&b, "sub").await;
    assert_eq!(sub.subscribe(1, &[("q1/t", 1)]).await, vec![1]);

    let mut publ = Raw::clean(&b, "pub").await;
    publ.send(&publish_bytes("q1/t", b"one", 1, 0x0A0B, false, false))
        .await;
    publ.recv().await.assert_ack(PUBACK, 0x0A0B);
    // The same packet id again after its PUBACK: a new publication [MQTT-4.3.2-2].
    publ.send(&publish_bytes("q1/t", b"two", 1, 0x0A0B, false, false))
        .await;
    publ.recv().await.assert_ack(PUBACK, 0x0A0B);

    let first = sub.recv_publish().await;
    let second = sub.recv_publish().await;
    for (p, payload) in [(&first, b"one"), (&second, b"two")] {
        assert_eq!((p.qos, p.dup, p.retain), (1, false, false), "{p:?}");
        assert_eq!(p.topic, "q1/t");
        assert_eq!(p.payload, payload);
        assert_ne!(p.pkid, 0, "packet id must be non-zero [MQTT-2.3.1-1]");
    }
    assert_ne!(
        first.pkid, second.pkid,
        "packet id of an unacknowledged PUBLISH reused"
    );
    sub.send(&puback_bytes(first.pkid)).await;
    sub.send(&puback_bytes(second.pkid)).await;
    sub.expect_quiet(QUIET).await;
}

/// [MQTT-4.3.3-2], [MQTT-3.3.4-1]: until PUBREL, a re-sent QoS 2 PUBLISH with the same
/// packet id is acknowledged with PUBREC again but not delivered again; after PUBCOMP the
/// packet id starts a new message.
#[tokio::test]
async fn mqtt_4_3_3_2_qos2_duplicate_publish_before_pubrel_delivered_once() {
    let b = Broker::start("");
    let mut sub = client(&b, "sub").await;
    sub.subscribe("q2/t", QoS::ExactlyOnce).await;

    let mut publ = Raw::clean(&b, "pub").await;
    publ.send(&publish_bytes("q2/t", b"first", 2, 7, false, false))
        .await;
    publ.recv().await.assert_ack(PUBREC, 7);
    publ.send(&publish_bytes("q2/t", b"first", 2, 7, false, true))
        .await;
    publ.recv().await.assert_ack(PUBREC, 7);
    publ.send(&publish_bytes("q2/t", b"first", 2, 7, false, false))
        .await;
    publ.recv().await.assert_ack(PUBREC, 7);
    publ.send(&pubrel_bytes(7)).await;
    publ.recv().await.assert_ack(PUBCOMP, 7);
    // After PUBCOMP, packet id 7 is a new publication.
    publ.send(&publish_bytes("q2/t", b"second", 2, 7, false, false))
        .await;
    publ.recv().await.assert_ack(PUBREC, 7);
    publ.send(&pubrel_bytes(7)).await;
    publ.recv().await.assert_ack(PUBCOMP, 7);

    let p = sub.recv().await;
    assert_eq!(
        (payload_str(&p).as_str(), p.qos),
        ("first", QoS::ExactlyOnce)
    );
    let p = sub.recv().await;
    assert_eq!(
        payload_str(&p),
        "second",
        "the duplicate QoS 2 PUBLISH was delivered again"
    );
    sub.expect_quiet(QUIET).await;
}

/// [MQTT-4.3.3-1], [MQTT-2.3.1-6]: the broker as QoS 2 sender: PUBLISH QoS 2 DUP 0, PUBREL
/// with the same packet id on PUBREC, and once PUBREL is sent the PUBLISH is never sent
/// again (only the PUBREL is retried, here with retry_interval = 1).
#[tokio::test]
async fn mqtt_4_3_3_1_qos2_outgoing_flow_no_publish_resend_after_pubrel() {
    let b = Broker::start("retry_interval = 1");
    let mut sub = Raw::clean(&b, "sub").await;
    assert_eq!(sub.subscribe(1, &[("q2/t", 2)]).await, vec![2]);
    let mut publ = client(&b, "pub").await;
    publ.publish("q2/t", QoS::ExactlyOnce, false, "x").await;

    let p = sub.recv_publish().await;
    assert_eq!(
        (p.qos, p.dup, p.retain, p.payload.as_slice()),
        (2, false, false, &b"x"[..])
    );
    assert_ne!(p.pkid, 0);
    sub.send(&pubrec_bytes(p.pkid)).await;
    sub.recv().await.assert_ack(PUBREL, p.pkid);

    // No PUBCOMP yet: for 2.5 s only PUBREL may be re-sent, never the PUBLISH.
    let deadline = Instant::now() + Duration::from_millis(2500);
    let mut resent = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub.next_within(left).await {
            Next::Quiet => break,
            Next::Closed => panic!("broker closed the connection"),
            Next::Packet(pkt) => {
                pkt.assert_ack(PUBREL, p.pkid);
                resent += 1;
            }
        }
    }
    assert!(
        resent >= 1,
        "PUBREL not re-sent within 2.5 s with retry_interval = 1"
    );
    sub.send(&pubcomp_bytes(p.pkid)).await;
    // Drain a PUBREL that may have crossed our PUBCOMP, then nothing more.
    if let Next::Packet(pkt) = sub.next_within(Duration::from_millis(300)).await {
        pkt.assert_ack(PUBREL, p.pkid);
    }
    sub.expect_quiet(Duration::from_millis(1500)).await;
}

/// [MQTT-3.8.4-6]: each subscriber receives min(published QoS, granted QoS), for every
/// combination of 0, 1 and 2 in both directions.
#[tokio::test]
async fn mqtt_3_8_4_6_delivered_qos_is_min_of_published_and_granted() {
    let b = Broker::start("");
    let mut sub = client(&b, "sub").await;
    let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
    let codes = sub
        .subscribe_many(&[("m/0", qos[0]), ("m/1", qos[1]), ("m/2", qos[2])])
        .await;
    assert_eq!(
        codes,
        qos.iter()
            .map(|q| SubscribeReasonCode::Success(*q))
            .collect::<Vec<_>>()
    );

    let mut publ = client(&b, "pub").await;
    for s in 0..3 {
        for (p, pq) in qos.iter().enumerate() {
            publ.publish(&format!("m/{s}"), *pq, false, format!("{s}{p}"))
                .await;
        }
    }
    let mut got = HashMap::new();
    for _ in 0..9 {
        let p = sub.recv().await;
        got.insert(payload_str(&p), p.qos);
    }
    for s in 0..3 {
        for p in 0..3 {
            let key = format!("{s}{p}");
            assert_eq!(
                got.get(&key),
                Some(&qos[s.min(p)]),
                "subscribed {s}, published {p}"
            );
        }
    }
    sub.expect_quiet(QUIET).await;
}

/// [MQTT-3.3.1-3]: a DUP=1 PUBLISH from a client is forwarded with DUP=0 (the outgoing DUP
/// only says whether the outgoing packet is a retransmission).
#[tokio::test]
async fn mqtt_3_3_1_3_dup_flag_not_propagated_to_subscribers() {
    let b = Broker::start("");
    let mut sub = Raw::clean(&b, "sub").await;
    assert_eq!(sub.subscribe(1, &[("dup/t", 2)]).await, vec![2]);
    let mut publ = Raw::clean(&b, "pub").await;
    publ.send(&publish_bytes("dup/t", b"a", 1, 9, false, true))
        .await;
    publ.recv().await.assert_ack(PUBACK, 9);
    publ.send(&publish_bytes("dup/t", b"b", 2, 10, false, true))
        .await;
    publ.recv().await.assert_ack(PUBREC, 10);
    publ.send(&pubrel_bytes(10)).await;
    publ.recv().await.assert_ack(PUBCOMP, 10);

    let a = sub.recv_publish().await;
    assert_eq!((a.payload.as_slice(), a.qos, a.dup), (&b"a"[..], 1, false));
    sub.send(&puback_bytes(a.pkid)).await;
    let c = sub.recv_publish().await;
    assert_eq!((c.payload.as_slice(), c.qos, c.dup), (&b"b"[..], 2, false));
}

// ---------------------------------------------------------------------------------------
// SUBSCRIBE / SUBACK
// ---------------------------------------------------------------------------------------

/// [MQTT-3.8.4-1], [MQTT-3.8.4-2], [MQTT-3.8.4-4], [MQTT-3.8.4-5], [MQTT-3.9.3-1],
/// [MQTT-2.3.1-7]: one SUBACK with the SUBSCRIBE's packet id and one granted QoS per filter,
/// in order.
#[tokio::test]
async fn mqtt_3_8_4_5_suback_one_code_per_filter_in_order() {
    let b = Broker::start("");
    let mut c = Raw::clean(&b, "c").await;
    c.send(&subscribe_bytes(
        0x1234,
        &[("a/b", 0), ("c/+", 1), ("d/#", 2), ("e", 1), ("+", 0)],
    ))
    .await;
    let p = c.recv().await;
    assert_eq!(p.byte1, 0x90);
    assert_eq!(p.body, vec![0x12, 0x34, 0, 1, 2, 1, 0]);
    c.expect_quiet(QUIET).await;

    // Each filter really is subscribed, with its own QoS.
    let mut publ = client(&b, "pub").await;
    publ.publish("c/x", QoS::ExactlyOnce, false, "c").await;
    let got = c.recv_publish().await;
    assert_eq!((got.topic.as_str(), got.qos), ("c/x", 1));
}

/// [MQTT-3.8.4-5], [MQTT-3.9.3-2], [MQTT-4.7.1-2], [MQTT-4.7.1-3], [MQTT-4.7.3-1]: filters
/// with a misplaced '#' or '+', or empty, are refused with 0x80 (midge's choice; the
/// connection stays open) while the valid filters of the same SUBSCRIBE are granted.
#[tokio::test]
async fn mqtt_4_7_1_2_invalid_filters_refused_valid_ones_granted() {
    let b = Broker::start("");
    let mut c = Raw::clean(&b, "c").await;
    let codes = c
        .subscribe(
            5,
            &[
                ("a/#/b", 1),
                ("ok/1", 1),
                ("a+", 0),
                ("ok/+", 2),
                ("#/x", 0),
                ("x#", 1),
                ("a/+b", 1),
                ("", 0),
            ],
        )
        .await;
    assert_eq!(codes, vec![0x80, 1, 0x80, 2, 0x80, 0x80, 0x80, 0x80]);
    c.ping().await;

    let mut publ = client(&b, "pub").await;
    publ.publish("ok/2", QoS::AtLeastOnce, false, "v").await;
    let got = c.recv_publish().await;
    assert_eq!((got.topic.as_str(), got.qos), ("ok/2", 1));
}

/// [MQTT-3.8.4-3]: subscribing again to an identical filter replaces the subscription (new
/// QoS, still one copy per message) and re-sends the matching retained messages.
#[tokio::test]
async fn mqtt_3_8_4_3_resubscribe_replaces_and_resends_retained() {
    let b = Broker::start("");
    let mut publ = client(&b, "pub").await;
    publ.publish("rs/a", QoS::AtLeastOnce, true, "kept").await;

    let mut sub = client(&b, "sub").await;
    sub.subscribe("rs/#", QoS::AtMostOnce).await;
    let p = sub.recv().await;
    assert_eq!(
        (payload_str(&p).as_str(), p.retain, p.qos),
        ("kept", true, QoS::AtMostOnce)
    );

    sub.subscribe("rs/#", QoS::AtLeastOnce).await;
    let p = sub.recv().await;
    assert_eq!(
        (payload_str(&p).as_str(), p.retain, p.qos),
        ("kept", true, QoS::AtLeastOnce),
        "retained message must be re-sent, at the new QoS"
    );

    publ.publish("rs/b", QoS::AtLeastOnce, false, "live").await;
    let p = sub.recv().await;
    assert_eq!(
        (payload_str(&p).as_str(), p.qos),
        ("live", QoS::AtLeastOnce)
    );
    sub.expect_quiet(QUIET).await;
}

/// [MQTT-3.8.4-5]: max_subscriptions_per_client = 2: a third filter is refused with 0x80;
/// replacing an existing filter does not count; unsubscribing frees a slot.
#[tokio::test]
async fn mqtt_3_8_4_5_max_subscriptions_per_client_refused_with_0x80() {
    let b = Broker::start("max_subscriptions_per_client = 2");
    let mut c = Raw::clean(&b, "c").await;
    assert_eq!(
        c.subscribe(1, &[("s/1", 1), ("s/2", 0), ("s/3", 2)]).await,
        vec![1, 0, 0x80]
    );
    assert_eq!(
        c.subscribe(2, &[("s/1", 2)]).await,
        vec![2],
        "replacement must be granted"
    );
    assert_eq!(c.subscribe(3, &[("s/4", 0)]).await, vec![0x80]);

    c.send(&unsubscribe_bytes(4, &["s/2"])).await;
    c.recv().await.assert_ack(UNSUBACK, 4);
    assert_eq!(c.subscribe(5, &[("s/4", 0)]).await, vec![0]);

    // s/3 was never subscribed: a message there is not delivered; s/4 (sentinel) is.
    let mut publ = client(&b, "pub").await;
    publ.publish("s/3", QoS::AtLeastOnce, false, "no").await;
    publ.publish("s/4", QoS::AtLeastOnce, false, "yes").await;
    let p = c.recv_publish().await;
    assert_eq!(p.topic, "s/4");
}

/// [MQTT-3.8.4-5]: max_topic_levels = 3: a filter with more levels is refused with 0x80.
#[tokio::test]
async fn mqtt_3_8_4_5_filter_over_max_topic_levels_refused_with_0x80() {
    let b = Broker::start("max_topic_levels = 3");
    let mut c = Raw::clean(&b, "c").await;
    let codes = c
        .subscribe(
            1,
            &[("a/b/c", 1), ("a/b/c/d", 1), ("a/+/+/#", 0), ("+/+/#", 2)],
        )
        .await;
    assert_eq!(codes, vec![1, 0x80, 0x80, 2]);
    c.ping().await;
}

// ---------------------------------------------------------------------------------------
// Topic matching
// ---------------------------------------------------------------------------------------

/// [MQTT-4.7.1-2] (section 4.7.1.2), [MQTT-3.3.2-3]: '#' matches the parent level and any
/// number of child levels, and nothing else; delivered topic names are the published ones.
#[tokio::test]
async fn mqtt_4_7_1_2_multi_level_wildcard_matching() {
    let b = Broker::start("");
    let mut sub = client(&b, "sub").await;
    sub.subscribe("sport/tennis/player1/#", QoS::AtLeastOnce)
        .await;
    let mut all = client(&b, "all").await;
    all.subscribe("#", QoS::AtLeastOnce).await;

    let mut publ = client(&b, "pub").await;
    let published = [
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/tennis/player1/score/wimbledon",
        "sport/tennis/player2",
        "sport/tennis",
        "sport/tennis/player10",
        "Sport/tennis/player1",
        "/sport/tennis/player1",
        "sport/tennis/player1/",
        "sport/tennis/player1/end",
    ];
    for t in published {
        publ.publish(t, QoS::AtLeastOnce, false, "x").await;
    }
    let got = sub.collect_until("sport/tennis/player1/end").await;
    assert_eq!(
        topics(&got),
        vec![
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
            "sport/tennis/player1/",
            "sport/tennis/player1/end",
        ]
    );
    let got = all.collect_until("sport/tennis/player1/end").await;
    assert_eq!(topics(&got), published, "'#' matches every topic");
}

/// [MQTT-4.7.1-3] (section 4.7.1.3): '+' matches exactly one level, including an empty one.
#[tokio::test]
async fn mqtt_4_7_1_3_single_level_wildcard_matching() {
    let b = Broker::start("");
    let mut a = client(&b, "a").await;
    a.subscribe("sport/+/player1", QoS::AtLeastOnce).await;
    let mut s = client(&b, "s").await;
    s.subscribe("sport/+", QoS::AtLeastOnce).await;
    let mut p = client(&b, "p").await;
    p.subscribe("+", QoS::AtLeastOnce).await;
    let mut f = client(&b, "f").await;
    f.subscribe("+/+", QoS::AtLeastOnce).await;

    let mut publ = client(&b, "pub").await;
    for t in [
        "sport/tennis/player1",
        "sport/tennis/x/player1",
        "sport//player1",
        "sport/tennis/player2",
        "sport",
        "sport/",
        "sport/x/y",
        "finance",
        "/finance",
        "a/b/c",
        // Sentinels, one per subscriber.
        "sport/end/player1",
        "sport/end",
        "end",
        "end/end",
    ] {
        publ.publish(t, QoS::AtLeastOnce, false, "x").await;
    }
    assert_eq!(
        topics(&a.collect_until("sport/end/player1").await),
        [
            "sport/tennis/player1",
            "sport//player1",
            "sport/end/player1"
        ]
    );
    assert_eq!(
        topics(&s.collect_until("sport/end").await),
        ["sport/", "sport/end"]
    );
    assert_eq!(
        topics(&p.collect_until("end").await),
        ["sport", "finance", "end"]
    );
    assert_eq!(
        topics(&f.collect_until("end/end").await),
        ["sport/", "/finance", "sport/end", "end/end"]
    );
}

/// [MQTT-4.7.2-1]: filters starting with a wildcard do not match topics starting with '$';
/// a filter starting with '$' does.
#[tokio::test]
async fn mqtt_4_7_2_1_dollar_topics_not_matched_by_leading_wildcards() {
    let b = Broker::start("");
    let mut hash = client(&b, "hash").await;
    hash.subscribe("#", QoS::AtLeastOnce).await;
    let mut plus = client(&b, "plus").await;
    plus.subscribe("+/x", QoS::AtLeastOnce).await;
    let mut plus2 = client(&b, "plus2").await;
    plus2.subscribe("+/#", QoS::AtLeastOnce).await;
    let mut dollar = client(&b, "dollar").await;
    dollar.subscribe("$foo/#", QoS::AtLeastOnce).await;

    let mut publ = client(&b, "pub").await;
    publ.publish("$foo/x", QoS::AtLeastOnce, false, "dollar")
        .await;
    publ.publish("$SYS/x", QoS::AtLeastOnce, false, "sys").await;
    publ.publish("z/x", QoS::AtLeastOnce, false, "sentinel")
        .await;

    for (name, c) in [("#", &mut hash), ("+/x", &mut plus), ("+/#", &mut plus2)] {
        let p = c.recv().await;
        assert_eq!(p.topic, "z/x", "filter {name} matched a '$' topic");
    }
    let p = dollar.recv().await;
    assert_eq!(
        (p.topic.as_str(), payload_str(&p).as_str()),
        ("$foo/x", "dollar")
    );
    dollar.expect_quiet(QUIET).await;
}

/// [MQTT-4.7.3-4], [MQTT-1.5.3-3]: topics are compared byte for byte: no case folding, no
/// Unicode normalization, and a leading U+FEFF (EF BB BF) is kept, not stripped.
#[tokio::test]
async fn mqtt_4_7_3_4_topics_not_normalized_and_bom_kept() {
    let b = Broker::start("");
    let filter = "\u{FEFF}bom/\u{e9}"; // BOM, then "é" precomposed
    let mut sub = client(&b, "sub").await;
    sub.subscribe(filter, QoS::AtLeastOnce).await;

    let mut publ = client(&b, "pub").await;
    publ.publish("bom/\u{e9}", QoS::AtLeastOnce, false, "no bom")
        .await;
    publ.publish(
        "\u{FEFF}bom/e\u{301}",
        QoS::AtLeastOnce,
        false,
        "decomposed",
    )
    .await;
    publ.publish("\u{FEFF}BOM/\u{e9}", QoS::AtLeastOnce, false, "case")
        .await;
    publ.publish(filter, QoS::AtLeastOnce, false, "exact").await;

    let p = sub.recv().await;
    assert_eq!(payload_str(&p), "exact");
    assert_eq!(
        p.topic.as_bytes()[..3],
        [0xEF, 0xBB, 0xBF],
        "U+FEFF must be kept"
    );
    assert_eq!(p.topic, filter);
    sub.expect_quiet(QUIET).await;
}

/// [MQTT-3.3.5-1]: overlapping subscriptions of one client: ONE copy, at the highest QoS
/// granted among the matching filters (capped by the published QoS).
#[tokio::test]
async fn mqtt_3_3_5_1_overlapping_subscriptions_one_copy_at_highest_qos() {
    let b = Broker::start("");
    let mut sub = client(&b, "sub").await;
    let codes = sub
        .subscribe_many(&[
            ("ov/#", QoS::AtMostOnce),
            ("ov/+", QoS::ExactlyOnce),
            ("ov/a", QoS::AtLeastOnce),
        ])
        .await;
    assert_eq!(codes.len(), 3);

    let mut publ = client(&b, "pub").await;
    publ.publish("ov/a", QoS::ExactlyOnce, false, "1").await; // # 0, + 2, a 1 -> 2
    publ.publish("ov/a", QoS::AtLeastOnce, false, "2").await; // -> min(1, 2) = 1
    publ.publish("ov/c/d", QoS::ExactlyOnce, false, "3").await; // only # -> 0
    publ.publish("ov/end", QoS::ExactlyOnce, false, "4").await; // # 0, + 2 -> 2

    let got: Vec<(String, QoS)> = sub
        .collect_until("ov/end")
        .await
        .iter()
        .map(|p| (payload_str(p), p.qos))
        .collect();
    assert_eq!(
        got,
        vec![
            ("1".to_string(), QoS::ExactlyOnce),
            ("2".to_string(), QoS::AtLeastOnce),
            ("3".to_string(), QoS::AtMostOnce),
            ("4".to_string(), QoS::ExactlyOnce),
        ]
    );
    sub.expect_quiet(QUIET).await;
}

/// [MQTT-4.5.0-1]: a message is added to the session of every client with a matching
/// subscription.
#[tokio::test]
async fn mqtt_4_5_0_1_message_added_to_every_matching_session() {
    let b = Broker::start("");
    let mut subs = Vec::new();
    for (id, filter) in [
        ("s1", "fan/#"),
        ("s2", "fan/+"),
        ("s3", "fan/x"),
        ("s4", "#"),
    ] {
        let mut c = client(&b, id).await;
        c.subscribe(filter, QoS::AtLeastOnce).await;
        subs.push(c);
    }
    let mut other = client(&b, "other").await;
    other.subscribe("fan/y", QoS::AtLeastOnce).await;

    let mut publ = client(&b, "pub").await;
    publ.publish("fan/x", QoS::AtLeastOnce, false, "all").await;
    for c in &mut subs {
        let p = c.recv().await;
        assert_eq!(
            (p.topic.as_str(), payload_str(&p).as_str()),
            ("fan/x", "all")
        );
        c.expect_quiet(Duration::from_millis(200)).await;
    }
    other.expect_quiet(Duration::from_millis(200)).await;
}

// ---------------------------------------------------------------------------------------
// Retained messages
// ---------------------------------------------------------------------------------------

/// [MQTT-3.3.1-5], [MQTT-3.3.1-6], [MQTT-3.3.1-8], [MQTT-3.1.2-7]: a retained message is
/// stored with its QoS (outliving its publisher's session) and sent to a new subscriber with
/// RETAIN=1 at min(stored QoS, granted QoS).
#[tokio::test]
async fn mqtt_3_3_1_5_retained_stored_with_qos_and_sent_on_subscribe() {
    let b = Broker::start("");
    let mut publ = client(&b, "pub").await;
    publ.publish("r/q1", QoS::AtLeastOnce, true, "v1").await;
    publ.publish("r/q2", QoS::ExactlyOnce, true, "v2").await;
    go_offline(&b, "pub", publ).await;

    let mut sub = Raw::clean(&b, "sub").await;
    assert_eq!(sub.subscribe(1, &[("r/q1", 2)]).await, vec![2]);
    let p = sub.recv_publish().await;
    assert_eq!(
        (
            p.topic.as_str(),
            p.payload.as_slice(),
            p.retain,
            p.qos,
            p.dup
        ),
        ("r/q1", &b"v1"[..], true, 1, false),
        "retained QoS 1 message to a QoS 2 subscriber"
    );
    sub.send(&puback_bytes(p.pkid)).await;

    assert_eq!(sub.subscribe(2, &[("r/q2", 1)]).await, vec![1]);
    let p = sub.recv_publish().await;
    assert_eq!(
        (p.topic.as_str(), p.payload.as_slice(), p.retain, p.qos),
        ("r/q2", &b"v2"[..], true, 1),
        "retained QoS 2 message to a QoS 1 subscriber"
    );
    sub.send(&puback_bytes(p.pkid)).await;

    assert_eq!(sub.subscribe(3, &[("r/q2", 2)]).await, vec![2]);
    let p = sub.recv_publish().await;
    assert_eq!(
        (p.retain, p.qos),
        (true, 2),
        "retained QoS 2 message stored with QoS 2"
    );
}

/// [MQTT-3.3.1-7]: a new retained message (here QoS 0) replaces the previous one.
#[tokio::test]
async fn mqtt_3_3_1_7_retained_replaced_by_newer_retained() {
    let b = Broker::start("");
    let mut publ = client(&b, "pub").await;
    publ.publish("r/t", QoS::AtLeastOnce, true, "old").await;
    publ.publish("r/t", QoS::AtMostOnce, true, "new").await;
    // QoS 0 has no acknowledgement: make sure the broker has handled it.
    publ.publish("r/sync", QoS::AtLeastOnce, false, "sync")
        .await;

    let mut sub = client(&b, "sub").await;
    sub.subscribe("r/t", QoS::ExactlyOnce).await;
    let p = sub.recv().await;
    assert_eq!(
        (payload_str(&p).as_str(), p.retain, p.qos),
        ("new", true, QoS::AtMostOnce)
    );
    sub.expect_quiet(QUIET).await;
}

/// [MQTT-3.3.1-10], [MQTT-3.3.1-11]: a retained PUBLISH with an empty payload is delivered
/// to current subscribers as usual, and clears the topic's retained message.
#[tokio::test]
async fn mqtt_3_3_1_10_empty_retained_payload_clears() {
    let b = Broker::start("");
    let mut publ = client(&b, "pub").await;
    publ.publish("r/t", QoS::AtLeastOnce, true, "v1").await;

    let mut live = client(&b, "live").await;
    live.subscribe("r/#", QoS::AtLeastOnce).await;
    assert_eq!(payload_str(&live.recv().await), "v1");

    publ.publish("r/t", QoS::AtLeastOnce, true, "").await;
    let p = live.recv().await;
    assert_eq!(
        (p.topic.as_str(), p.payload.len(), p.retain),
        ("r/t", 0, false)
    );

    let mut late = client(&b, "late").await;
    late.subscribe("r/#", QoS::AtLeastOnce).await;
    publ.publish("r/sentinel", QoS::AtLeastOnce, false, "s")
        .await;
    let p = late.recv().await;
    assert_eq!(
        p.topic, "r/sentinel",
        "a cleared retained message was sent: {p:?}"
    );
}

/// [MQTT-3.3.1-12]: a PUBLISH with RETAIN=0 neither stores nor replaces the retained
/// message.
#[tokio::test]
async fn mqtt_3_3_1_12_non_retained_publish_leaves_retained() {
    let b = Broker::start("");
    let mut publ = client(&b, "pub").await;
    publ.publish("r/t", QoS::AtLeastOnce, true, "retained")
        .await;
    publ.publish("r/t", QoS::AtLeastOnce, false, "not retained")
        .await;
    publ.publish("r/u", QoS::AtLeastOnce, false, "never retained")
        .await;

    let mut sub = client(&b, "sub").await;
    sub.subscribe("r/#", QoS::AtLeastOnce).await;
    let p = sub.recv().await;
    assert_eq!(
        (p.topic.as_str(), payload_str(&p).as_str(), p.retain),
        ("r/t", "retained", true)
    );
    sub.expect_quiet(QUIET).await;
}

/// [MQTT-3.3.1-9]: a retained PUBLISH forwarded to an established subscription has RETAIN=0.
#[tokio::test]
async fn mqtt_3_3_1_9_retain_cleared_for_live_subscribers() {
    let b = Broker::start("");
    let mut sub = Raw::clean(&b, "sub").await;
    assert_eq!(sub.subscribe(1, &[("live/#", 1)]).await, vec![1]);
    let mut publ = Raw::clean(&b, "pub").await;
    publ.send(&publish_bytes("live/a", b"r0", 0, 0, true, false))
        .await;
    publ.send(&publish_bytes("live/b", b"r1", 1, 3, true, false))
        .await;
    publ.recv().await.assert_ack(PUBACK, 3);

    let p = sub.recv().await;
    assert_eq!(
        p.byte1, 0x30,
        "QoS 0 retained forwarded live: RETAIN must be 0 ({p:?})"
    );
    let p = sub.recv().await;
    assert_eq!(
        p.byte1, 0x32,
        "QoS 1 retained forwarded live: RETAIN must be 0 ({p:?})"
    );
    sub.send(&puback_bytes(p.publish().pkid)).await;

    // It was stored all the same: a new subscription gets it with RETAIN=1.
    assert_eq!(sub.subscribe(2, &[("live/b", 1)]).await, vec![1]);
    let p = sub.recv_publish().await;
    assert_eq!((p.topic.as_str(), p.retain), ("live/b", true));
}

/// [MQTT-3.3.1-6]: a wildcard subscription gets the retained message of every matching
/// topic (and only those), each with RETAIN=1.
#[tokio::test]
async fn mqtt_3_3_1_6_wildcard_subscribe_gets_all_matching_retained() {
    let b = Broker::start("");
    let mut publ = client(&b, "pub").await;
    for t in ["w/a", "w/b", "w/c/d", "x/a", "w"] {
        publ.publish(t, QoS::AtLeastOnce, true, t).await;
    }
    let mut sub = client(&b, "sub").await;
    sub.subscribe("w/#", QoS::AtLeastOnce).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        let p = sub.recv().await;
        assert!(
            p.retain,
            "retained message sent on subscribe without RETAIN=1: {p:?}"
        );
        assert_eq!(payload_str(&p), p.topic);
        got.push(p.topic);
    }
    got.sort();
    assert_eq!(got, ["w", "w/a", "w/b", "w/c/d"]);
    sub.expect_quiet(QUIET).await;

    let mut plus = client(&b, "plus").await;
    plus.subscribe("+/a", QoS::AtLeastOnce).await;
    let mut got = vec![plus.recv().await.topic, plus.recv().await.topic];
    got.sort();
    assert_eq!(got, ["w/a", "x/a"]);
    plus.expect_quiet(QUIET).await;
}

// ---------------------------------------------------------------------------------------
// Wills
// ---------------------------------------------------------------------------------------

/// [MQTT-3.1.2-8], [MQTT-3.1.2-16]: the will is published when the socket closes without
/// DISCONNECT; with Will Retain = 0 it is not retained.
#[tokio::test]
async fn mqtt_3_1_2_8_will_published_on_socket_close_without_disconnect() {
    let b = Broker::start("");
    let mut watcher = client(&b, "watcher").await;
    watcher.subscribe("will/#", QoS::AtLeastOnce).await;

    let will = WillSpec {
        topic: "will/a",
        payload: b"gone",
        qos: 1,
        retain: false,
    };
    let (raw, _) = Raw::connect(&b, "dying", true, 60, Some(&will)).await;
    drop(raw);

    let p = watcher.recv().await;
    assert_eq!(
        (p.topic.as_str(), payload_str(&p).as_str(), p.qos, p.retain),
        ("will/a", "gone", QoS::AtLeastOnce, false)
    );

    // Not retained: a later subscriber gets the sentinel first.
    let mut late = client(&b, "late").await;
    late.subscribe("will/#", QoS::AtLeastOnce).await;
    let mut publ = client(&b, "pub").await;
    publ.publish("will/sentinel", QoS::AtLeastOnce, false, "s")
        .await;
    assert_eq!(
        late.recv().await.topic,
        "will/sentinel",
        "a non-retained will was retained"
    );
    watcher.recv().await; // the sentinel
    watcher.expect_quiet(QUIET).await;
}

/// [MQTT-3.1.2-24], [MQTT-3.1.2-8]: keep-alive 1 s and a silent client: the broker closes
/// the connection after 1.5 s and publishes the will (within ~1.5-3 s).
#[tokio::test]
async fn mqtt_3_1_2_24_keep_alive_timeout_publishes_will() {
    let b = Broker::start("");
    let mut watcher = client(&b, "watcher").await;
    watcher.subscribe("ka/will", QoS::AtLeastOnce).await;

    let will = WillSpec {
        topic: "ka/will",
        payload: b"timed out",
        qos: 1,
        retain: false,
    };
    let (mut raw, _) = Raw::connect(&b, "silent", true, 1, Some(&will)).await;
    let start = Instant::now();
    let p = tokio::time::timeout(Duration::from_secs(4), watcher.recv())
        .await
        .expect("will within 4 s of a 1 s keep-alive");
    let elapsed = start.elapsed();
    assert_eq!(payload_str(&p), "timed out");
    assert!(
        elapsed >= Duration::from_millis(1000) && elapsed <= Duration::from_millis(3000),
        "will published {elapsed:?} after CONNECT with keep-alive 1 s (expected ~1.5 s)"
    );
    raw.expect_closed(Duration::from_secs(1)).await;
}

/// [MQTT-3.12.4-1], [MQTT-3.1.2-24]: PINGREQ is answered with PINGRESP, and a client that
/// pings within its keep-alive is not disconnected.
#[tokio::test]
async fn mqtt_3_12_4_1_pingreq_answered_and_keeps_connection_alive() {
    let b = Broker::start("");
    let (mut raw, _) = Raw::connect(&b, "pinger", true, 1, None).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        raw.ping().await;
    }
    // 3.6 s > 1.5 keep-alives, and still connected.
    raw.expect_quiet(Duration::from_millis(300)).await;
}

/// Section 3.1.2.10: a keep-alive of 0 turns the mechanism off: a silent client stays
/// connected (checked over 2.5 s, well beyond the 1.5 s a keep-alive of 1 would allow).
#[tokio::test]
async fn mqtt_3_1_2_24_keep_alive_zero_never_times_out() {
    let b = Broker::start("");
    let (mut raw, _) = Raw::connect(&b, "idle", true, 0, None).await;
    raw.expect_quiet(Duration::from_millis(2500)).await;
    raw.ping().await;
}

/// [MQTT-3.1.0-2], [MQTT-4.8.0-1], [MQTT-3.1.2-8]: a second CONNECT is a protocol
/// violation: the connection is closed and, as it was not a DISCONNECT, the will published.
#[tokio::test]
async fn mqtt_3_1_0_2_second_connect_closes_and_publishes_will() {
    let b = Broker::start("");
    let mut watcher = client(&b, "watcher").await;
    watcher.subscribe("pv/will", QoS::AtLeastOnce).await;

    let will = WillSpec {
        topic: "pv/will",
        payload: b"violated",
        qos: 0,
        retain: false,
    };
    let (mut raw, _) = Raw::connect(&b, "twice", true, 60, Some(&will)).await;
    raw.send(&connect_bytes("twice", true, 60, Some(&will)))
        .await;
    let sent = raw.expect_closed(WAIT).await;
    assert!(
        sent.is_empty(),
        "nothing (no second CONNACK) before closing: {sent:?}"
    );
    let p = watcher.recv().await;
    assert_eq!(
        (p.topic.as_str(), payload_str(&p).as_str()),
        ("pv/will", "violated")
    );
}

/// [MQTT-3.14.4-3], [MQTT-3.1.2-10]: after DISCONNECT the will is discarded, not published.
#[tokio::test]
async fn mqtt_3_14_4_3_will_not_published_after_disconnect() {
    let b = Broker::start("");
    let mut watcher = client(&b, "watcher").await;
    watcher.subscribe("dc/#", QoS::AtLeastOnce).await;

    let will = WillSpec {
        topic: "dc/will",
        payload: b"must not appear",
        qos: 1,
        retain: true,
    };
    let (mut raw, _) = Raw::connect(&b, "polite", true, 60, Some(&will)).await;
    raw.send(&DISCONNECT_BYTES).await;
    raw.expect_closed(WAIT).await;
    drop(raw);
    wait_closes(&b, "polite", 1).await;

    let mut publ = client(&b, "pub").await;
    publ.publish("dc/sentinel", QoS::AtLeastOnce, false, "s")
        .await;
    let p = watcher.recv().await;
    assert_eq!(
        p.topic, "dc/sentinel",
        "will published after DISCONNECT: {p:?}"
    );

    // And it was not retained either.
    let mut late = client(&b, "late").await;
    late.subscribe("dc/will", QoS::AtLeastOnce).await;
    late.expect_quiet(QUIET).await;
}

/// [MQTT-3.1.2-12]: without a will flag nothing is published when the connection drops.
#[tokio::test]
async fn mqtt_3_1_2_12_no_will_flag_nothing_published() {
    let b = Broker::start("");
    let mut watcher = client(&b, "watcher").await;
    watcher.subscribe("#", QoS::AtLeastOnce).await;
    let (raw, _) = Raw::connect(&b, "nowill", true, 60, None).await;
    drop(raw);
    wait_closes(&b, "nowill", 1).await;
    let mut publ = client(&b, "pub").await;
    publ.publish("nw/sentinel", QoS::AtLeastOnce, false, "s")
        .await;
    assert_eq!(watcher.recv().await.topic, "nw/sentinel");
}

/// [MQTT-3.1.2-17]: a will with Will Retain = 1 is published as a retained message: live
/// subscribers get it (RETAIN=0, [MQTT-3.3.1-9]) and a later subscriber gets it with
/// RETAIN=1.
#[tokio::test]
async fn mqtt_3_1_2_17_will_retain_flag_honoured() {
    let b = Broker::start("");
    let mut watcher = client(&b, "watcher").await;
    watcher.subscribe("wr/t", QoS::AtLeastOnce).await;

    let will = WillSpec {
        topic: "wr/t",
        payload: b"last words",
        qos: 1,
        retain: true,
    };
    let (raw, _) = Raw::connect(&b, "dying", true, 60, Some(&will)).await;
    drop(raw);
    let p = watcher.recv().await;
    assert_eq!((payload_str(&p).as_str(), p.retain), ("last words", false));

    let mut late = client(&b, "late").await;
    late.subscribe("wr/t", QoS::AtLeastOnce).await;
    let p = late.recv().await;
    assert_eq!(
        (payload_str(&p).as_str(), p.retain, p.qos),
        ("last words", true, QoS::AtLeastOnce),
        "retained will not stored"
    );
}

/// [MQTT-3.1.2-9], [MQTT-3.1.2-14]: the will is published with its Will QoS (0, 1 or 2),
/// subject to the subscriber's granted QoS.
#[tokio::test]
async fn mqtt_3_1_2_9_will_published_with_its_qos() {
    let b = Broker::start("");
    let mut watcher = client(&b, "watcher").await;
    watcher.subscribe("wq/#", QoS::ExactlyOnce).await;
    for qos in 0..3u8 {
        let topic = format!("wq/{qos}");
        let will = WillSpec {
            topic: &topic,
            payload: b"w",
            qos,
            retain: false,
        };
        let (raw, _) = Raw::connect(&b, &format!("dying{qos}"), true, 60, Some(&will)).await;
        drop(raw);
        let p = watcher.recv().await;
        assert_eq!(
            (p.topic.as_str(), p.qos as u8),
            (topic.as_str(), qos),
            "will QoS {qos}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// CONNECT: client identifiers, take-over, first packet
// ---------------------------------------------------------------------------------------

/// [MQTT-3.1.3-6], [MQTT-3.2.2-1]: an empty client id with clean session is accepted
/// (CONNACK 0, session present 0) and given a unique id: two such clients coexist.
#[tokio::test]
async fn mqtt_3_1_3_6_empty_client_id_with_clean_session_gets_unique_id() {
    let b = Broker::start("");
    let (mut one, sp1) = Raw::connect(&b, "", true, 60, None).await;
    let (mut two, sp2) = Raw::connect(&b, "", true, 60, None).await;
    assert!(
        !sp1 && !sp2,
        "session present must be 0 for a clean session"
    );
    assert_eq!(one.subscribe(1, &[("anon/t", 1)]).await, vec![1]);
    two.send(&publish_bytes("anon/t", b"hi", 1, 1, false, false))
        .await;
    two.recv().await.assert_ack(PUBACK, 1);
    let p = one.recv_publish().await;
    assert_eq!(p.payload, b"hi");
    // Neither took the other over.
    one.send(&puback_bytes(p.pkid)).await;
    one.ping().await;
    two.ping().await;
}

/// [MQTT-3.1.3-8], [MQTT-3.2.2-4], [MQTT-3.2.2-5]: an empty client id without clean session
/// gets CONNACK 0x02 with session present 0, then the connection is closed.
#[tokio::test]
async fn mqtt_3_1_3_8_empty_client_id_without_clean_session_rejected() {
    let b = Broker::start("");
    let mut raw = Raw::open(b.addr()).await;
    raw.send(&connect_bytes("", false, 60, None)).await;
    let sent = raw.expect_closed(WAIT).await;
    assert_eq!(
        sent,
        vec![Pkt {
            byte1: 0x20,
            body: vec![0x00, 0x02]
        }]
    );
}

/// [MQTT-3.1.3-9]: a client id longer than max_client_id_len (10) is rejected with CONNACK
/// 0x02 and the connection closed; 10 bytes are accepted.
#[tokio::test]
async fn mqtt_3_1_3_9_client_id_over_max_client_id_len_rejected() {
    let b = Broker::start("max_client_id_len = 10");
    let (mut ok, _) = Raw::connect(&b, "abcdefghij", true, 60, None).await;
    ok.ping().await;

    let mut raw = Raw::open(b.addr()).await;
    raw.send(&connect_bytes("abcdefghijk", true, 60, None))
        .await;
    let sent = raw.expect_closed(WAIT).await;
    assert_eq!(
        sent,
        vec![Pkt {
            byte1: 0x20,
            body: vec![0x00, 0x02]
        }]
    );
}

/// [MQTT-3.1.3-5], [MQTT-3.1.4-4]: a 23-character alphanumeric client id is accepted.
#[tokio::test]
async fn mqtt_3_1_3_5_23_char_alphanumeric_client_id_accepted() {
    let b = Broker::start("");
    let (mut raw, sp) = Raw::connect(&b, "a1B2c3D4e5F6g7H8i9J0kLm", true, 60, None).await;
    assert!(!sp);
    raw.ping().await;
}

/// [MQTT-3.1.4-2], [MQTT-3.1.4-3], [MQTT-3.1.2-8], [MQTT-3.2.2-2]: a second connection with
/// the same client id disconnects the first (whose will is published) and, with clean
/// session 0, takes over its session.
#[tokio::test]
async fn mqtt_3_1_4_2_client_id_takeover_disconnects_first_and_publishes_its_will() {
    let b = Broker::start("");
    let mut watcher = client(&b, "watcher").await;
    watcher.subscribe("tk/will", QoS::AtLeastOnce).await;

    let will = WillSpec {
        topic: "tk/will",
        payload: b"first gone",
        qos: 1,
        retain: false,
    };
    let (mut first, sp) = Raw::connect(&b, "same", false, 60, Some(&will)).await;
    assert!(!sp);
    assert_eq!(first.subscribe(1, &[("tk/data", 1)]).await, vec![1]);

    let (mut second, sp) = Raw::connect(&b, "same", false, 60, None).await;
    assert!(
        sp,
        "the first connection's session must be resumed (session present 1)"
    );
    first.expect_closed(WAIT).await;
    let p = watcher.recv().await;
    assert_eq!(payload_str(&p), "first gone");

    let mut publ = client(&b, "pub").await;
    publ.publish("tk/data", QoS::AtLeastOnce, false, "for the session")
        .await;
    let p = second.recv_publish().await;
    assert_eq!(
        (p.topic.as_str(), p.payload.as_slice()),
        ("tk/data", &b"for the session"[..])
    );
    second.send(&puback_bytes(p.pkid)).await;
    second.ping().await;
}

/// [MQTT-3.2.0-1], [MQTT-3.1.4-4]: packets sent right behind CONNECT (before CONNACK) are
/// processed, and CONNACK is still the first packet from the broker.
#[tokio::test]
async fn mqtt_3_2_0_1_connack_first_even_when_packets_pipelined() {
    let b = Broker::start("");
    let mut raw = Raw::open(b.addr()).await;
    let mut bytes = connect_bytes("eager", true, 60, None);
    bytes.extend(subscribe_bytes(1, &[("pl/t", 1)]));
    bytes.extend(publish_bytes("pl/t", b"hello", 1, 2, false, false));
    bytes.extend(PINGREQ_BYTES);
    raw.send(&bytes).await;

    let p = raw.recv().await;
    assert_eq!(
        (p.byte1, p.body.as_slice()),
        (0x20, &[0u8, 0][..]),
        "first packet must be CONNACK"
    );
    let p = raw.recv().await;
    assert_eq!(
        (p.byte1, p.body.as_slice()),
        (0x90, &[0u8, 1, 1][..]),
        "then the SUBACK"
    );
    let mut rest = Vec::new();
    for _ in 0..3 {
        rest.push(raw.recv().await);
    }
    assert!(
        rest.iter().any(|p| p.byte1 == 0x40 && p.pkid() == 2),
        "PUBACK 2 missing: {rest:?}"
    );
    assert!(
        rest.iter().any(|p| p.kind() == PINGRESP),
        "PINGRESP missing: {rest:?}"
    );
    let publ = rest
        .iter()
        .find(|p| p.kind() == PUBLISH)
        .expect("own message delivered");
    assert_eq!(publ.publish().payload, b"hello");
}

/// [MQTT-3.1.4-5]: data sent behind a refused CONNECT is not processed (a retained PUBLISH
/// piggy-backed on it is not stored).
#[tokio::test]
async fn mqtt_3_1_4_5_data_after_rejected_connect_not_processed() {
    let b = Broker::start("");
    let mut raw = Raw::open(b.addr()).await;
    let mut bytes = connect_bytes("", false, 60, None); // refused: 0x02
    bytes.extend(publish_bytes("rej/t", b"sneaky", 0, 0, true, false));
    raw.send(&bytes).await;
    let sent = raw.expect_closed(WAIT).await;
    assert_eq!(
        sent,
        vec![Pkt {
            byte1: 0x20,
            body: vec![0x00, 0x02]
        }]
    );

    let mut sub = client(&b, "sub").await;
    sub.subscribe("rej/#", QoS::AtLeastOnce).await;
    let mut publ = client(&b, "pub").await;
    publ.publish("rej/sentinel", QoS::AtLeastOnce, false, "s")
        .await;
    assert_eq!(
        sub.recv().await.topic,
        "rej/sentinel",
        "data after a refused CONNECT was processed"
    );
}

// ---------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------

/// [MQTT-3.1.2-6], [MQTT-3.2.2-1], [MQTT-3.2.2-3]: clean session 1 discards the stored
/// session (subscriptions and queued messages), session present is 0, and the clean
/// session's state is not reused afterwards.
#[tokio::test]
async fn mqtt_3_1_2_6_clean_session_discards_state() {
    let b = Broker::start("");
    let mut c = persistent(&b, "cs").await;
    assert!(
        !c.session_present,
        "new session: session present must be 0 [MQTT-3.2.2-3]"
    );
    c.subscribe("cs/t", QoS::AtLeastOnce).await;
    go_offline(&b, "cs", c).await;

    let mut publ = client(&b, "pub").await;
    publ.publish("cs/t", QoS::AtLeastOnce, false, "queued")
        .await;

    let mut c = client(&b, "cs").await;
    assert!(
        !c.session_present,
        "clean session: session present must be 0 [MQTT-3.2.2-1]"
    );
    c.subscribe("cs/sentinel", QoS::AtLeastOnce).await;
    publ.publish("cs/t", QoS::AtLeastOnce, false, "live").await;
    publ.publish("cs/sentinel", QoS::AtLeastOnce, false, "s")
        .await;
    let p = c.recv().await;
    assert_eq!(
        (p.topic.as_str(), payload_str(&p).as_str()),
        ("cs/sentinel", "s"),
        "old queue or subscription survived a clean session"
    );
    go_offline(&b, "cs", c).await;

    // The clean session ended with its connection: nothing to resume.
    let mut c = persistent(&b, "cs").await;
    assert!(!c.session_present, "state of a clean session was reused");
    c.subscribe("cs/sentinel2", QoS::AtLeastOnce).await;
    publ.publish("cs/t", QoS::AtLeastOnce, false, "x").await;
    publ.publish("cs/sentinel", QoS::AtLeastOnce, false, "x")
        .await;
    publ.publish("cs/sentinel2", QoS::AtLeastOnce, false, "s2")
        .await;
    assert_eq!(c.recv().await.topic, "cs/sentinel2");
}

/// [MQTT-3.1.2-4], [MQTT-3.1.2-5], [MQTT-3.2.2-2], [MQTT-4.1.0-1]: clean session 0 keeps the
/// subscriptions and queues QoS 1 and 2 messages while offline (QoS 0 not, by default);
/// session present is 1 on resume.
#[tokio::test]
async fn mqtt_3_1_2_4_persistent_session_keeps_subscriptions_and_queues_qos1_qos2() {
    let b = Broker::start("");
    let mut c = persistent(&b, "ps").await;
    assert!(!c.session_present);
    c.subscribe_many(&[("ps/1", QoS::AtLeastOnce), ("ps/2", QoS::ExactlyOnce)])
        .await;
    go_offline(&b, "ps", c).await;

    let mut publ = client(&b, "pub").await;
    publ.publish("ps/1", QoS::AtLeastOnce, false, "m1").await;
    publ.publish("ps/2", QoS::ExactlyOnce, false, "m2").await;
    publ.publish("ps/1", QoS::AtMostOnce, false, "m0").await;
    publ.publish("ps/2", QoS::AtLeastOnce, false, "m3").await;

    let mut c = persistent(&b, "ps").await;
    assert!(
        c.session_present,
        "stored session: session present must be 1"
    );
    publ.publish("ps/1", QoS::AtLeastOnce, false, "live").await;
    let mut got = Vec::new();
    loop {
        let p = c.recv().await;
        assert!(
            !p.dup,
            "first transmission of a queued message must have DUP=0: {p:?}"
        );
        got.push((payload_str(&p), p.qos));
        if payload_str(&p) == "live" {
            break;
        }
    }
    assert_eq!(
        got,
        vec![
            ("m1".to_string(), QoS::AtLeastOnce),
            ("m2".to_string(), QoS::ExactlyOnce),
            ("m3".to_string(), QoS::AtLeastOnce),
            ("live".to_string(), QoS::AtLeastOnce),
        ],
        "queued QoS 1/2 messages in order, QoS 0 not queued, subscriptions kept"
    );
}

/// [MQTT-3.1.2-5]: QoS 0 messages are queued for an offline persistent session only with
/// queue_qos0_messages = true.
#[tokio::test]
async fn mqtt_3_1_2_5_qos0_queued_offline_only_with_queue_qos0_messages() {
    let b = Broker::start("queue_qos0_messages = true");
    let mut c = persistent(&b, "q0").await;
    c.subscribe("q0/t", QoS::AtMostOnce).await;
    go_offline(&b, "q0", c).await;

    let mut publ = client(&b, "pub").await;
    publ.publish("q0/t", QoS::AtMostOnce, false, "zero").await;
    publ.publish("q0/t", QoS::AtLeastOnce, false, "one").await;

    let mut c = persistent(&b, "q0").await;
    assert!(c.session_present);
    let p = c.recv().await;
    assert_eq!((payload_str(&p).as_str(), p.qos), ("zero", QoS::AtMostOnce));
    let p = c.recv().await;
    assert_eq!((payload_str(&p).as_str(), p.qos), ("one", QoS::AtMostOnce));
    c.expect_quiet(QUIET).await;
}

async fn offline_queue_bound(queue_full: &str) -> Vec<String> {
    let b = Broker::start(&format!(
        "max_queued_messages = 5\n{}",
        listener_toml(queue_full)
    ));
    let mut c = persistent(&b, "mq").await;
    c.subscribe("mq/t", QoS::AtLeastOnce).await;
    go_offline(&b, "mq", c).await;

    let mut publ = client(&b, "pub").await;
    for i in 0..10 {
        publ.publish("mq/t", QoS::AtLeastOnce, false, i.to_string())
            .await;
    }
    let mut c = persistent(&b, "mq").await;
    assert!(c.session_present);
    let mut got = Vec::new();
    while let Some(p) = c.recv_within(Duration::from_millis(800)).await {
        got.push(payload_str(&p));
    }
    got
}

/// [MQTT-3.1.2-5] with max_queued_messages = 5 and queue_full = "drop_oldest": of 10
/// messages queued offline the newest 5 are kept, in order.
#[tokio::test]
async fn mqtt_3_1_2_5_offline_queue_bounded_drop_oldest_keeps_newest() {
    assert_eq!(
        offline_queue_bound("drop_oldest").await,
        ["5", "6", "7", "8", "9"]
    );
}

/// [MQTT-3.1.2-5] with max_queued_messages = 5 and queue_full = "drop_new": of 10 messages
/// queued offline the oldest 5 are kept, in order.
#[tokio::test]
async fn mqtt_3_1_2_5_offline_queue_bounded_drop_new_keeps_oldest() {
    assert_eq!(
        offline_queue_bound("drop_new").await,
        ["0", "1", "2", "3", "4"]
    );
}

// ---------------------------------------------------------------------------------------
// Inflight window, retransmission, ordering
// ---------------------------------------------------------------------------------------

/// [MQTT-4.3.2-1], [MQTT-4.6.0-6]: with max_inflight_messages = 2 a subscriber that never
/// PUBACKs gets exactly 2 QoS 1 PUBLISHes; each PUBACK lets exactly one more through, in
/// order.
#[tokio::test]
async fn mqtt_4_3_2_1_inflight_window_limits_unacknowledged_publishes() {
    let b = Broker::start("max_inflight_messages = 2\nretry_interval = 0");
    let mut sub = Raw::clean(&b, "sub").await;
    assert_eq!(sub.subscribe(1, &[("win/t", 1)]).await, vec![1]);
    let mut publ = client(&b, "pub").await;
    for i in 0..5 {
        publ.publish("win/t", QoS::AtLeastOnce, false, i.to_string())
            .await;
    }

    let m0 = sub.recv_publish().await;
    let m1 = sub.recv_publish().await;
    assert_eq!(
        (m0.payload.as_slice(), m1.payload.as_slice()),
        (&b"0"[..], &b"1"[..])
    );
    assert_ne!(m0.pkid, m1.pkid);
    sub.expect_quiet(Duration::from_millis(700)).await;

    sub.send(&puback_bytes(m0.pkid)).await;
    let m2 = sub.recv_publish().await;
    assert_eq!(m2.payload, b"2");
    assert_ne!(
        m2.pkid, m1.pkid,
        "packet id of an unacknowledged PUBLISH reused"
    );
    sub.expect_quiet(QUIET).await;

    sub.send(&puback_bytes(m1.pkid)).await;
    let m3 = sub.recv_publish().await;
    assert_eq!(m3.payload, b"3");
    sub.expect_quiet(QUIET).await;

    sub.send(&puback_bytes(m2.pkid)).await;
    sub.send(&puback_bytes(m3.pkid)).await;
    let m4 = sub.recv_publish().await;
    assert_eq!(m4.payload, b"4");
    sub.send(&puback_bytes(m4.pkid)).await;
    sub.expect_quiet(QUIET).await;
}

/// [MQTT-3.3.1-1], [MQTT-2.3.1-4]: with retry_interval = 1 an unacknowledged QoS 1 PUBLISH
/// is re-sent with DUP=1 and the same packet id; after PUBACK it is not re-sent again.
#[tokio::test]
async fn mqtt_3_3_1_1_unacknowledged_publish_resent_with_dup_and_same_packet_id() {
    let b = Broker::start("retry_interval = 1");
    let mut sub = Raw::clean(&b, "sub").await;
    assert_eq!(sub.subscribe(1, &[("rt/t", 1)]).await, vec![1]);
    let mut publ = client(&b, "pub").await;
    publ.publish("rt/t", QoS::AtLeastOnce, false, "again").await;

    let first = sub.recv_publish().await;
    let t0 = Instant::now();
    assert!(!first.dup);
    let again = sub.recv_publish().await;
    let waited = t0.elapsed();
    assert_eq!(
        (
            again.dup,
            again.pkid,
            again.qos,
            again.topic.as_str(),
            again.payload.as_slice()
        ),
        (true, first.pkid, 1, "rt/t", &b"again"[..]),
        "re-sent PUBLISH must have DUP=1 and the same packet id"
    );
    assert!(
        waited >= Duration::from_millis(800),
        "re-sent after only {waited:?}"
    );
    sub.send(&puback_bytes(first.pkid)).await;
    if let Next::Packet(p) = sub.next_within(Duration::from_millis(300)).await {
        // A retransmission that crossed our PUBACK.
        assert_eq!(p.publish().pkid, first.pkid);
    }
    sub.expect_quiet(Duration::from_millis(1800)).await;
}

/// [MQTT-4.4.0-1], [MQTT-4.6.0-1], [MQTT-3.3.1-1]: when a persistent session reconnects,
/// unacknowledged PUBLISHes are re-sent with DUP=1 and their original packet ids, in their
/// original order, and an unacknowledged PUBREL is re-sent.
#[tokio::test]
async fn mqtt_4_4_0_1_reconnect_resends_unacked_publish_and_pubrel() {
    let b = Broker::start("retry_interval = 0");
    let (mut sub, sp) = Raw::connect(&b, "rs", false, 60, None).await;
    assert!(!sp);
    assert_eq!(
        sub.subscribe(1, &[("rs/1", 1), ("rs/2", 2)]).await,
        vec![1, 2]
    );

    let mut publ = client(&b, "pub").await;
    publ.publish("rs/1", QoS::AtLeastOnce, false, "a").await;
    publ.publish("rs/2", QoS::ExactlyOnce, false, "b").await;
    publ.publish("rs/2", QoS::ExactlyOnce, false, "c").await;

    let a = sub.recv_publish().await;
    let bb = sub.recv_publish().await;
    let c = sub.recv_publish().await;
    assert_eq!(
        [
            a.payload.as_slice(),
            bb.payload.as_slice(),
            c.payload.as_slice()
        ],
        [&b"a"[..], b"b", b"c"]
    );
    sub.send(&pubrec_bytes(bb.pkid)).await;
    sub.recv().await.assert_ack(PUBREL, bb.pkid);
    // Drop the connection with a, c unacknowledged and b's PUBREL unanswered.
    drop(sub);
    wait_closes(&b, "rs", 1).await;

    let (mut sub, sp) = Raw::connect(&b, "rs", false, 60, None).await;
    assert!(sp, "session present must be 1 on resume");
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(sub.recv().await);
    }
    let publishes: Vec<RawPub> = got
        .iter()
        .filter(|p| p.kind() == PUBLISH)
        .map(Pkt::publish)
        .collect();
    assert_eq!(
        publishes.len(),
        2,
        "expected the 2 unacknowledged PUBLISHes: {got:?}"
    );
    assert_eq!(
        (
            publishes[0].dup,
            publishes[0].pkid,
            publishes[0].qos,
            publishes[0].payload.as_slice()
        ),
        (true, a.pkid, 1, &b"a"[..]),
        "first re-sent PUBLISH"
    );
    assert_eq!(
        (
            publishes[1].dup,
            publishes[1].pkid,
            publishes[1].qos,
            publishes[1].payload.as_slice()
        ),
        (true, c.pkid, 2, &b"c"[..]),
        "second re-sent PUBLISH"
    );
    let rel = got
        .iter()
        .find(|p| p.kind() == PUBREL)
        .expect("PUBREL re-sent on reconnect");
    rel.assert_ack(PUBREL, bb.pkid);

    sub.send(&puback_bytes(a.pkid)).await;
    sub.send(&pubcomp_bytes(bb.pkid)).await;
    sub.send(&pubrec_bytes(c.pkid)).await;
    sub.recv().await.assert_ack(PUBREL, c.pkid);
    sub.send(&pubcomp_bytes(c.pkid)).await;
    sub.expect_quiet(QUIET).await;
}

/// [MQTT-4.6.0-5], [MQTT-4.6.0-6]: 100 QoS 1 messages from one publisher to one topic arrive
/// in the order they were published (the publisher does not wait for each PUBACK).
#[tokio::test]
async fn mqtt_4_6_0_6_ordered_topic_100_qos1_messages_in_order() {
    let b = Broker::start("");
    let mut sub = client(&b, "sub").await;
    sub.subscribe("ord/t", QoS::AtLeastOnce).await;
    let publ = client(&b, "pub").await;
    for i in 0..100 {
        publ.c
            .publish("ord/t", QoS::AtLeastOnce, false, i.to_string())
            .await
            .expect("queue PUBLISH");
    }
    let mut got = Vec::new();
    for _ in 0..100 {
        got.push(
            payload_str(&sub.recv().await)
                .parse::<u32>()
                .expect("numbered payload"),
        );
    }
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    sub.expect_quiet(QUIET).await;
}

// ---------------------------------------------------------------------------------------
// UNSUBSCRIBE
// ---------------------------------------------------------------------------------------

/// [MQTT-3.10.4-1], [MQTT-3.10.4-2]: UNSUBSCRIBE removes exactly the named filter (compared
/// character by character, no wildcard matching) and stops its delivery.
#[tokio::test]
async fn mqtt_3_10_4_1_unsubscribe_exact_filter_stops_delivery() {
    let b = Broker::start("");
    let mut sub = client(&b, "sub").await;
    sub.subscribe_many(&[
        ("u/a", QoS::AtLeastOnce),
        ("u/+", QoS::AtLeastOnce),
        ("u/z", QoS::AtLeastOnce),
    ])
    .await;
    let mut publ = client(&b, "pub").await;

    sub.unsubscribe("u/a").await;
    publ.publish("u/a", QoS::AtLeastOnce, false, "via +").await;
    let p = sub.recv().await;
    assert_eq!(
        (p.topic.as_str(), payload_str(&p).as_str()),
        ("u/a", "via +"),
        "'u/+' must survive"
    );
    sub.expect_quiet(Duration::from_millis(200)).await;

    // A filter that only matches by wildcard does not remove "u/+".
    sub.unsubscribe("u/#").await;
    publ.publish("u/b", QoS::AtLeastOnce, false, "still").await;
    assert_eq!(payload_str(&sub.recv().await), "still");

    sub.unsubscribe("u/+").await;
    publ.publish("u/a", QoS::AtLeastOnce, false, "gone").await;
    publ.publish("u/b", QoS::AtLeastOnce, false, "gone").await;
    publ.publish("u/z", QoS::AtLeastOnce, false, "sentinel")
        .await;
    let p = sub.recv().await;
    assert_eq!(
        p.topic, "u/z",
        "delivery continued after UNSUBSCRIBE: {p:?}"
    );
}

/// [MQTT-3.10.4-4], [MQTT-3.10.4-5], [MQTT-3.10.4-6], [MQTT-2.3.1-7]: UNSUBACK with the
/// UNSUBSCRIBE's packet id even when no filter matched; several filters in one UNSUBSCRIBE
/// get one UNSUBACK.
#[tokio::test]
async fn mqtt_3_10_4_5_unsuback_same_packet_id_even_for_unknown_filter() {
    let b = Broker::start("");
    let mut c = Raw::clean(&b, "c").await;
    c.send(&unsubscribe_bytes(0x4321, &["never/subscribed"]))
        .await;
    let p = c.recv().await;
    assert_eq!((p.byte1, p.body.as_slice()), (0xB0, &[0x43u8, 0x21][..]));

    assert_eq!(
        c.subscribe(2, &[("m/a", 1), ("m/b", 1), ("m/c", 1)]).await,
        vec![1, 1, 1]
    );
    c.send(&unsubscribe_bytes(7, &["m/a", "nope", "m/b"])).await;
    c.recv().await.assert_ack(UNSUBACK, 7);
    c.expect_quiet(Duration::from_millis(200)).await;

    let mut publ = client(&b, "pub").await;
    publ.publish("m/a", QoS::AtLeastOnce, false, "x").await;
    publ.publish("m/b", QoS::AtLeastOnce, false, "x").await;
    publ.publish("m/c", QoS::AtLeastOnce, false, "sentinel")
        .await;
    assert_eq!(c.recv_publish().await.topic, "m/c");
}

/// [MQTT-3.10.4-3]: a QoS 1 delivery started before UNSUBSCRIBE is completed (re-sent with
/// retry_interval = 1 until PUBACK), while new messages stop.
#[tokio::test]
async fn mqtt_3_10_4_3_unsubscribe_completes_inflight_delivery() {
    let b = Broker::start("retry_interval = 1");
    let mut sub = Raw::clean(&b, "sub").await;
    assert_eq!(
        sub.subscribe(1, &[("ui/t", 1), ("ui/sentinel", 1)]).await,
        vec![1, 1]
    );
    let mut publ = client(&b, "pub").await;
    publ.publish("ui/t", QoS::AtLeastOnce, false, "started")
        .await;
    let p = sub.recv_publish().await;

    sub.send(&unsubscribe_bytes(2, &["ui/t"])).await;
    let mut unsuback = false;
    let mut resent = false;
    let deadline = Instant::now() + Duration::from_secs(3);
    while !(unsuback && resent) {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub.next_within(left).await {
            Next::Packet(pkt) if pkt.kind() == UNSUBACK => {
                pkt.assert_ack(UNSUBACK, 2);
                unsuback = true;
            }
            Next::Packet(pkt) => {
                let again = pkt.publish();
                assert_eq!(
                    (again.pkid, again.dup, again.payload.as_slice()),
                    (p.pkid, true, &b"started"[..])
                );
                resent = true;
            }
            Next::Closed => panic!("broker closed the connection"),
            Next::Quiet => {
                panic!("unsuback = {unsuback}, in-flight PUBLISH re-sent = {resent} after 3 s")
            }
        }
    }
    sub.send(&puback_bytes(p.pkid)).await;

    publ.publish("ui/t", QoS::AtLeastOnce, false, "after").await;
    publ.publish("ui/sentinel", QoS::AtLeastOnce, false, "s")
        .await;
    loop {
        let q = sub.recv_publish().await;
        if q.pkid == p.pkid && q.dup {
            continue; // a retransmission that crossed our PUBACK
        }
        assert_eq!(
            q.topic, "ui/sentinel",
            "delivery continued after UNSUBSCRIBE: {q:?}"
        );
        break;
    }
}

// ---------------------------------------------------------------------------------------
// Backpressure
// ---------------------------------------------------------------------------------------

/// [MQTT-4.6.0-2], [MQTT-4.3.2-2] with queue_full = "backpressure", max_queued_messages = 2
/// and a persistent subscriber offline: the publisher's first 2 PUBACKs come at once, the
/// 3rd is withheld (and the 4th, for a topic nobody subscribes to, waits behind it so that
/// PUBACKs keep their order) until the subscriber reconnects and drains its queue.
#[tokio::test]
async fn mqtt_4_6_0_2_backpressure_withholds_puback_until_subscriber_drains() {
    let b = Broker::start(&format!(
        "max_queued_messages = 2\n{}",
        listener_toml("backpressure")
    ));
    let mut c = persistent(&b, "bp").await;
    c.subscribe("bp/t", QoS::AtLeastOnce).await;
    go_offline(&b, "bp", c).await;

    let mut publ = Raw::clean(&b, "bpp").await;
    publ.send(&publish_bytes("bp/t", b"m1", 1, 1, false, false))
        .await;
    publ.recv().await.assert_ack(PUBACK, 1);
    publ.send(&publish_bytes("bp/t", b"m2", 1, 2, false, false))
        .await;
    publ.recv().await.assert_ack(PUBACK, 2);
    publ.send(&publish_bytes("bp/t", b"m3", 1, 3, false, false))
        .await;
    publ.expect_quiet(Duration::from_secs(1)).await;
    publ.send(&publish_bytes("nobody/t", b"m4", 1, 4, false, false))
        .await;
    publ.expect_quiet(QUIET).await;

    let mut c = persistent(&b, "bp").await;
    assert!(c.session_present);
    publ.recv().await.assert_ack(PUBACK, 3);
    publ.recv().await.assert_ack(PUBACK, 4);
    for m in ["m1", "m2", "m3"] {
        assert_eq!(payload_str(&c.recv().await), m);
    }
    c.expect_quiet(QUIET).await;
}

// ---------------------------------------------------------------------------------------
// More session state
// ---------------------------------------------------------------------------------------

/// [MQTT-4.3.3-2], [MQTT-4.4.0-1], [MQTT-4.1.0-1]: the QoS 2 receive state (packet ids
/// PUBREC'd but not yet released) is part of a persistent session: a publisher that
/// reconnects and re-sends the PUBLISH with the same packet id gets PUBREC again, and the
/// message is not delivered twice.
#[tokio::test]
async fn mqtt_4_3_3_2_qos2_exactly_once_across_publisher_reconnect() {
    let b = Broker::start("");
    let mut sub = client(&b, "sub").await;
    sub.subscribe("x2/t", QoS::ExactlyOnce).await;

    let (mut publ, _) = Raw::connect(&b, "p2", false, 60, None).await;
    publ.send(&publish_bytes("x2/t", b"once", 2, 5, false, false))
        .await;
    publ.recv().await.assert_ack(PUBREC, 5);
    drop(publ);
    wait_closes(&b, "p2", 1).await;

    let (mut publ, sp) = Raw::connect(&b, "p2", false, 60, None).await;
    assert!(sp, "session present must be 1 on resume");
    publ.send(&publish_bytes("x2/t", b"once", 2, 5, false, true))
        .await;
    publ.recv().await.assert_ack(PUBREC, 5);
    publ.send(&pubrel_bytes(5)).await;
    publ.recv().await.assert_ack(PUBCOMP, 5);
    publ.send(&publish_bytes("x2/t", b"sentinel", 1, 6, false, false))
        .await;
    publ.recv().await.assert_ack(PUBACK, 6);

    assert_eq!(payload_str(&sub.recv().await), "once");
    assert_eq!(
        payload_str(&sub.recv().await),
        "sentinel",
        "QoS 2 message delivered twice across the publisher's reconnect"
    );
}

/// [MQTT-3.1.2-6], [MQTT-3.1.4-2], [MQTT-3.2.2-3]: taking over a connection that has a clean
/// session, with clean session 0, does not resume that session: session present is 0 and
/// its subscriptions are gone.
#[tokio::test]
async fn mqtt_3_1_2_6_takeover_of_clean_session_does_not_resume_it() {
    let b = Broker::start("");
    let (mut first, _) = Raw::connect(&b, "tc", true, 60, None).await;
    assert_eq!(first.subscribe(1, &[("tc/t", 1)]).await, vec![1]);

    let (mut second, sp) = Raw::connect(&b, "tc", false, 60, None).await;
    assert!(!sp, "a clean session must not be resumed");
    first.expect_closed(WAIT).await;
    assert_eq!(second.subscribe(1, &[("tc/s", 1)]).await, vec![1]);

    let mut publ = client(&b, "pub").await;
    publ.publish("tc/t", QoS::AtLeastOnce, false, "old subscription")
        .await;
    publ.publish("tc/s", QoS::AtLeastOnce, false, "sentinel")
        .await;
    assert_eq!(second.recv_publish().await.topic, "tc/s");
}

/// [MQTT-4.3.2-1], [MQTT-4.6.0-6]: for a live subscriber, messages beyond the inflight window
/// wait in its queue, bounded by max_queued_messages (drop_oldest: the newest are kept);
/// what was already sent stays in flight until acknowledged, and order is kept.
#[tokio::test]
async fn mqtt_4_3_2_1_live_queue_behind_inflight_window_bounded_drop_oldest() {
    let b = Broker::start(&format!(
        "max_inflight_messages = 2\nmax_queued_messages = 3\nretry_interval = 0\n{}",
        listener_toml("drop_oldest")
    ));
    let mut sub = Raw::clean(&b, "sub").await;
    assert_eq!(sub.subscribe(1, &[("lq/t", 1)]).await, vec![1]);
    let mut publ = client(&b, "pub").await;
    publ.publish("lq/t", QoS::AtLeastOnce, false, "0").await;
    publ.publish("lq/t", QoS::AtLeastOnce, false, "1").await;
    let m0 = sub.recv_publish().await;
    let m1 = sub.recv_publish().await;
    assert_eq!(
        (m0.payload.as_slice(), m1.payload.as_slice()),
        (&b"0"[..], &b"1"[..])
    );
    for i in 2..10 {
        publ.publish("lq/t", QoS::AtLeastOnce, false, i.to_string())
            .await;
    }
    sub.expect_quiet(QUIET).await;

    let mut got = Vec::new();
    let mut unacked = vec![m0.pkid, m1.pkid];
    while let Some(pkid) = unacked.pop() {
        sub.send(&puback_bytes(pkid)).await;
        if let Next::Packet(p) = sub.next_within(Duration::from_millis(800)).await {
            let p = p.publish();
            got.push(String::from_utf8(p.payload.clone()).unwrap());
            unacked.insert(0, p.pkid);
        }
    }
    assert_eq!(
        got,
        ["7", "8", "9"],
        "queue of 3 behind a full window, drop_oldest"
    );
    sub.expect_quiet(QUIET).await;
}

// ---------------------------------------------------------------------------------------
// Strings in CONNECT, SUBSCRIBE and UNSUBSCRIBE; long topics; PUBREL order
// ---------------------------------------------------------------------------------------

/// A CONNECT built field by field: `fields` are written length-prefixed after the
/// variable header (client id, then will topic, will message, user name, password as the
/// flags say).
fn connect_raw(flags: u8, fields: &[&[u8]]) -> Vec<u8> {
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, flags, 0x00, 0x3C];
    for f in fields {
        put_str(&mut body, f);
    }
    frame(0x10, body)
}

const BAD_UTF8: &[u8] = &[0xC3, 0x28];

/// [MQTT-3.1.4-1], [MQTT-3.1.3-4], [MQTT-3.1.3-10], [MQTT-3.1.3-11], [MQTT-4.7.1-1],
/// [MQTT-3.2.2-6]: a CONNECT whose client id, will topic or user name is not valid UTF-8,
/// or whose will topic has a wildcard, is closed without CONNACK (and no will is published).
#[tokio::test]
async fn mqtt_3_1_4_1_invalid_client_id_will_topic_or_username_closes_without_connack() {
    let b = Broker::start("");
    let mut watcher = client(&b, "watcher").await;
    watcher.subscribe("#", QoS::AtLeastOnce).await;
    let cases: [(&str, Vec<u8>); 4] = [
        ("client id not UTF-8", connect_raw(0x02, &[BAD_UTF8])),
        (
            "will topic not UTF-8",
            connect_raw(0x06, &[b"w1", BAD_UTF8, b"m"]),
        ),
        (
            "will topic with wildcard",
            connect_raw(0x06, &[b"w2", b"will/#", b"m"]),
        ),
        ("user name not UTF-8", connect_raw(0x82, &[b"w3", BAD_UTF8])),
    ];
    for (case, bytes) in cases {
        let mut raw = Raw::open(b.addr()).await;
        raw.send(&bytes).await;
        let sent = raw.expect_closed(WAIT).await;
        assert!(
            sent.is_empty(),
            "{case}: expected a close without CONNACK, got {sent:?}"
        );
    }
    let mut publ = client(&b, "pub").await;
    publ.publish("sentinel", QoS::AtLeastOnce, false, "s").await;
    assert_eq!(watcher.recv().await.topic, "sentinel");
}

/// [MQTT-3.1.2-14]: Will QoS 3 is malformed: closed without CONNACK.
#[tokio::test]
async fn mqtt_3_1_2_14_will_qos_3_closes_without_connack() {
    let b = Broker::start("");
    let mut raw = Raw::open(b.addr()).await;
    raw.send(&connect_raw(0x02 | 0x04 | 0x18, &[b"q3", b"will/t", b"m"]))
        .await;
    let sent = raw.expect_closed(WAIT).await;
    assert!(
        sent.is_empty(),
        "expected a close without CONNACK, got {sent:?}"
    );
}

/// [MQTT-3.8.3-1], [MQTT-3.10.3-1], [MQTT-1.5.3-1]: a SUBSCRIBE or UNSUBSCRIBE whose topic
/// filter is not valid UTF-8 closes the connection (no SUBACK / UNSUBACK).
#[tokio::test]
async fn mqtt_3_8_3_1_invalid_utf8_filters_close_connection() {
    let b = Broker::start("");
    for (case, byte1) in [("SUBSCRIBE", 0x82u8), ("UNSUBSCRIBE", 0xA2)] {
        let mut raw = Raw::clean(&b, "c").await;
        let mut body = vec![0x00, 0x01];
        put_str(&mut body, BAD_UTF8);
        if byte1 == 0x82 {
            body.push(1);
        }
        raw.send(&frame(byte1, body)).await;
        let sent = raw.expect_closed(WAIT).await;
        assert!(
            sent.is_empty(),
            "{case}: expected a close without acknowledgement, got {sent:?}"
        );
    }
}

/// [MQTT-4.7.3-3]: topic names and filters of the maximum length, 65535 bytes, are
/// accepted, matched and forwarded intact.
#[tokio::test]
async fn mqtt_4_7_3_3_topic_of_65535_bytes_round_trips() {
    let b = Broker::start("");
    let topic = format!("t/{}", "x".repeat(65533));
    assert_eq!(topic.len(), 65535);
    let mut sub = Raw::clean(&b, "sub").await;
    assert_eq!(sub.subscribe(1, &[(&topic, 1)]).await, vec![1]);
    let mut publ = Raw::clean(&b, "pub").await;
    publ.send(&publish_bytes(&topic, b"long", 1, 1, false, false))
        .await;
    publ.recv().await.assert_ack(PUBACK, 1);
    let p = sub.recv_publish().await;
    assert_eq!((p.topic.len(), p.payload.as_slice()), (65535, &b"long"[..]));
    assert_eq!(p.topic, topic);
}

/// [MQTT-4.6.0-4], [MQTT-4.6.0-6]: as a QoS 2 sender the broker answers each PUBREC with its
/// PUBREL, in the order the PUBRECs arrive.
#[tokio::test]
async fn mqtt_4_6_0_4_pubrel_sent_in_pubrec_order() {
    let b = Broker::start("");
    let mut sub = Raw::clean(&b, "sub").await;
    assert_eq!(sub.subscribe(1, &[("po/t", 2)]).await, vec![2]);
    let mut publ = client(&b, "pub").await;
    for m in ["a", "b", "c"] {
        publ.publish("po/t", QoS::ExactlyOnce, false, m).await;
    }
    let a = sub.recv_publish().await;
    let bb = sub.recv_publish().await;
    let c = sub.recv_publish().await;
    assert_eq!(
        [
            a.payload.as_slice(),
            bb.payload.as_slice(),
            c.payload.as_slice()
        ],
        [&b"a"[..], b"b", b"c"]
    );
    let order = [c.pkid, a.pkid, bb.pkid];
    let mut bytes = Vec::new();
    for pkid in order {
        bytes.extend(pubrec_bytes(pkid));
    }
    sub.send(&bytes).await;
    for pkid in order {
        sub.recv().await.assert_ack(PUBREL, pkid);
    }
    let mut bytes = Vec::new();
    for pkid in order {
        bytes.extend(pubcomp_bytes(pkid));
    }
    sub.send(&bytes).await;
    sub.expect_quiet(QUIET).await;
}
