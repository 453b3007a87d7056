//! MQTT 5.0 against a real `midge` process: properties, session and will timing, flow
//! control, topic aliases, subscription options, shared subscriptions, reason codes, and
//! 3.1.1 and 5.0 clients on the same topics.
//!
//! Tests are named after the MQTT 5.0 statement or section they check
//! (`mqtt5_<section>_...`); docs/CONFORMANCE.md maps the 5.0 statements to them. Wire-level
//! checks use [`V5`], a raw socket speaking MQTT 5.0 bytes with a small property parser;
//! client-library checks use rumqttc's v5 client; interoperability uses
//! `mosquitto_pub`/`mosquitto_sub -V mqttv5`.

mod common;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const WAIT: Duration = Duration::from_secs(10);
/// How long to listen before concluding that nothing (more) arrives.
const QUIET: Duration = Duration::from_millis(400);

// ---------------------------------------------------------------------------------------
// Raw MQTT 5.0
// ---------------------------------------------------------------------------------------

/// A property as it goes on the wire.
#[derive(Debug, Clone, PartialEq)]
enum Prop {
    Byte(u8, u8),
    Two(u8, u16),
    Four(u8, u32),
    Var(u8, u32),
    Str(u8, String),
    Bin(u8, Vec<u8>),
    Pair(String, String),
}

// Property identifiers.
const PAYLOAD_FORMAT: u8 = 0x01;
const MESSAGE_EXPIRY: u8 = 0x02;
const CONTENT_TYPE: u8 = 0x03;
const RESPONSE_TOPIC: u8 = 0x08;
const CORRELATION_DATA: u8 = 0x09;
const SUBSCRIPTION_ID: u8 = 0x0B;
const SESSION_EXPIRY: u8 = 0x11;
const ASSIGNED_CLIENT_ID: u8 = 0x12;
const SERVER_KEEP_ALIVE: u8 = 0x13;
const AUTH_METHOD: u8 = 0x15;
const WILL_DELAY: u8 = 0x18;
const RECEIVE_MAXIMUM: u8 = 0x21;
const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
const TOPIC_ALIAS: u8 = 0x23;
const RETAIN_AVAILABLE: u8 = 0x25;
const USER_PROPERTY: u8 = 0x26;
const MAXIMUM_PACKET_SIZE: u8 = 0x27;
const SHARED_AVAILABLE: u8 = 0x2A;

fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    loop {
        let mut b = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            b |= 0x80;
        }
        out.push(b);
        if v == 0 {
            return;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn props_bytes(props: &[Prop]) -> Vec<u8> {
    let mut body = Vec::new();
    for p in props {
        match p {
            Prop::Byte(id, v) => body.extend([*id, *v]),
            Prop::Two(id, v) => {
                body.push(*id);
                body.extend(v.to_be_bytes());
            }
            Prop::Four(id, v) => {
                body.push(*id);
                body.extend(v.to_be_bytes());
            }
            Prop::Var(id, v) => {
                body.push(*id);
                put_varint(&mut body, *v);
            }
            Prop::Str(id, s) => {
                body.push(*id);
                put_str(&mut body, s.as_bytes());
            }
            Prop::Bin(id, b) => {
                body.push(*id);
                put_str(&mut body, b);
            }
            Prop::Pair(k, v) => {
                body.push(USER_PROPERTY);
                put_str(&mut body, k.as_bytes());
                put_str(&mut body, v.as_bytes());
            }
        }
    }
    let mut out = Vec::new();
    put_varint(&mut out, body.len() as u32);
    out.extend(body);
    out
}

fn frame(byte1: u8, body: Vec<u8>) -> Vec<u8> {
    let mut p = vec![byte1];
    push_len(&mut p, body.len());
    p.extend(body);
    p
}

/// An MQTT 5.0 CONNECT. `will`: (topic, payload, will properties).
fn connect5(
    id: &str,
    clean: bool,
    keep_alive: u16,
    props: &[Prop],
    will: Option<(&str, &[u8], &[Prop])>,
) -> Vec<u8> {
    let mut flags = u8::from(clean) << 1;
    if will.is_some() {
        flags |= 0x04;
    }
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, flags];
    body.extend(keep_alive.to_be_bytes());
    body.extend(props_bytes(props));
    put_str(&mut body, id.as_bytes());
    if let Some((topic, payload, wprops)) = will {
        body.extend(props_bytes(wprops));
        put_str(&mut body, topic.as_bytes());
        put_str(&mut body, payload);
    }
    frame(0x10, body)
}

fn publish5(
    topic: &str,
    qos: u8,
    pkid: u16,
    retain: bool,
    props: &[Prop],
    payload: &[u8],
) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend(pkid.to_be_bytes());
    }
    body.extend(props_bytes(props));
    body.extend_from_slice(payload);
    frame(0x30 | (qos << 1) | u8::from(retain), body)
}

/// SUBSCRIBE with raw options bytes and an optional subscription identifier.
fn subscribe5(pkid: u16, filters: &[(&str, u8)], sub_id: Option<u32>) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    let props: Vec<Prop> = sub_id
        .map(|id| Prop::Var(SUBSCRIPTION_ID, id))
        .into_iter()
        .collect();
    body.extend(props_bytes(&props));
    for (f, o) in filters {
        put_str(&mut body, f.as_bytes());
        body.push(*o);
    }
    frame(0x82, body)
}

/// A decoded packet from the broker.
#[derive(Debug, Clone)]
struct In {
    byte1: u8,
    body: Vec<u8>,
}

/// A decoded MQTT 5.0 PUBLISH.
#[derive(Debug, Clone, Default)]
struct Pub5 {
    topic: String,
    qos: u8,
    retain: bool,
    pkid: u16,
    props: Vec<Prop>,
    payload: Vec<u8>,
}

impl Pub5 {
    fn prop(&self, id: u8) -> Option<&Prop> {
        find(&self.props, id)
    }
    fn user_properties(&self) -> Vec<(String, String)> {
        self.props
            .iter()
            .filter_map(|p| match p {
                Prop::Pair(k, v) => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect()
    }
    fn sub_ids(&self) -> Vec<u32> {
        self.props
            .iter()
            .filter_map(|p| match p {
                Prop::Var(SUBSCRIPTION_ID, v) => Some(*v),
                _ => None,
            })
            .collect()
    }
}

fn find(props: &[Prop], id: u8) -> Option<&Prop> {
    props.iter().find(|p| match p {
        Prop::Byte(i, _) | Prop::Two(i, _) | Prop::Four(i, _) | Prop::Var(i, _) => *i == id,
        Prop::Str(i, _) | Prop::Bin(i, _) => *i == id,
        Prop::Pair(..) => id == USER_PROPERTY,
    })
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn u8(&mut self) -> u8 {
        let b = self.0[0];
        self.0 = &self.0[1..];
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn varint(&mut self) -> u32 {
        let mut v = 0u32;
        for i in 0..4 {
            let b = self.u8();
            v |= u32::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                break;
            }
        }
        v
    }
    fn bin(&mut self) -> Vec<u8> {
        let n = usize::from(self.u16());
        let v = self.0[..n].to_vec();
        self.0 = &self.0[n..];
        v
    }
    fn string(&mut self) -> String {
        String::from_utf8(self.bin()).expect("UTF-8")
    }
    fn props(&mut self) -> Vec<Prop> {
        let len = self.varint() as usize;
        let (mine, rest) = self.0.split_at(len);
        self.0 = rest;
        let mut c = Cursor(mine);
        let mut out = Vec::new();
        while !c.0.is_empty() {
            let id = c.u8();
            out.push(match id {
                0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => Prop::Byte(id, c.u8()),
                0x13 | 0x21 | 0x22 | 0x23 => Prop::Two(id, c.u16()),
                0x02 | 0x11 | 0x18 | 0x27 => Prop::Four(id, c.u32()),
                0x0B => Prop::Var(id, c.varint()),
                0x03 | 0x08 | 0x12 | 0x15 | 0x1A | 0x1C | 0x1F => Prop::Str(id, c.string()),
                0x09 | 0x16 => Prop::Bin(id, c.bin()),
                0x26 => Prop::Pair(c.string(), c.string()),
                other => panic!("unknown property {other:#04x}"),
            });
        }
        out
    }
}

impl In {
    fn kind(&self) -> u8 {
        self.byte1 >> 4
    }
    fn publish(&self) -> Pub5 {
        assert_eq!(self.kind(), 3, "expected PUBLISH, got {self:?}");
        let qos = (self.byte1 >> 1) & 3;
        let mut c = Cursor(&self.body);
        let topic = c.string();
        let pkid = if qos > 0 { c.u16() } else { 0 };
        let props = c.props();
        Pub5 {
            topic,
            qos,
            retain: self.byte1 & 1 != 0,
            pkid,
            props,
            payload: c.0.to_vec(),
        }
    }
    /// (session present, reason, properties) of a CONNACK.
    fn connack(&self) -> (bool, u8, Vec<Prop>) {
        assert_eq!(self.kind(), 2, "expected CONNACK, got {self:?}");
        let mut c = Cursor(&self.body);
        let sp = c.u8() == 1;
        let reason = c.u8();
        let props = if c.0.is_empty() {
            Vec::new()
        } else {
            c.props()
        };
        (sp, reason, props)
    }
    /// Reason code of a DISCONNECT (0 when omitted).
    fn disconnect_reason(&self) -> u8 {
        assert_eq!(self.kind(), 14, "expected DISCONNECT, got {self:?}");
        self.body.first().copied().unwrap_or(0)
    }
    /// (packet id, reason) of PUBACK/PUBREC/PUBREL/PUBCOMP.
    fn ack(&self) -> (u16, u8) {
        let mut c = Cursor(&self.body);
        let pkid = c.u16();
        (pkid, if c.0.is_empty() { 0 } else { c.u8() })
    }
    /// Reason codes of SUBACK / UNSUBACK.
    fn reasons(&self) -> Vec<u8> {
        let mut c = Cursor(&self.body);
        c.u16();
        c.props();
        c.0.to_vec()
    }
}

/// A raw MQTT 5.0 connection. PUBLISHes that arrive while a test waits for something
/// else are kept, in order, for [`V5::next_publish`].
struct V5 {
    s: TcpStream,
    pending: VecDeque<In>,
}

impl V5 {
    /// Connects with `connect` and returns the connection and its CONNACK.
    fn open(addr: SocketAddr, connect: &[u8]) -> (V5, In) {
        let mut c = V5 {
            s: raw(addr),
            pending: VecDeque::new(),
        };
        c.send(connect);
        let ack = c.read();
        (c, ack)
    }

    /// Connects (clean start, no properties) and asserts success.
    fn connected(addr: SocketAddr, id: &str, props: &[Prop]) -> V5 {
        let (c, ack) = V5::open(addr, &connect5(id, true, 60, props, None));
        assert_eq!(ack.connack().1, 0, "CONNACK for {id}: {ack:?}");
        c
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write");
    }

    fn read(&mut self) -> In {
        let (byte1, body) = read_packet(&mut self.s);
        In { byte1, body }
    }

    /// The next packet that is not a PUBLISH.
    fn control(&mut self) -> In {
        loop {
            let p = self.read();
            if p.kind() == 3 {
                self.pending.push_back(p);
            } else {
                return p;
            }
        }
    }

    fn subscribe(&mut self, pkid: u16, filters: &[(&str, u8)], sub_id: Option<u32>) -> Vec<u8> {
        self.send(&subscribe5(pkid, filters, sub_id));
        let ack = self.control();
        assert_eq!(ack.kind(), 9, "SUBACK expected: {ack:?}");
        ack.reasons()
    }

    /// Publishes at QoS 1 and returns the PUBACK reason code.
    fn publish_qos1(&mut self, topic: &str, pkid: u16, props: &[Prop], payload: &[u8]) -> u8 {
        self.send(&publish5(topic, 1, pkid, false, props, payload));
        let ack = self.control();
        assert_eq!(ack.kind(), 4, "PUBACK expected: {ack:?}");
        let (id, reason) = ack.ack();
        assert_eq!(id, pkid);
        reason
    }

    /// The next PUBLISH (not acknowledged), within the wait.
    fn next_publish(&mut self) -> Pub5 {
        if let Some(p) = self.pending.pop_front() {
            return p.publish();
        }
        self.read().publish()
    }

    /// A packet if one arrives within `within`.
    fn try_read(&mut self, within: Duration) -> Option<In> {
        if let Some(p) = self.pending.pop_front() {
            return Some(p);
        }
        self.s.set_read_timeout(Some(within)).unwrap();
        let mut first = [0u8; 1];
        let got = match self.s.read(&mut first) {
            Ok(1) => {
                // The rest of the packet follows at once.
                self.s.set_read_timeout(Some(WAIT)).unwrap();
                let mut len = 0usize;
                let mut mult = 1usize;
                loop {
                    let b = read_exact(&mut self.s, 1)[0];
                    len += usize::from(b & 0x7F) * mult;
                    mult *= 128;
                    if b & 0x80 == 0 {
                        break;
                    }
                }
                Some(In {
                    byte1: first[0],
                    body: read_exact(&mut self.s, len),
                })
            }
            _ => None,
        };
        self.s.set_read_timeout(Some(WAIT)).unwrap();
        got
    }

    /// Asserts nothing arrives for [`QUIET`].
    fn assert_quiet(&mut self, what: &str) {
        assert!(self.pending.is_empty(), "{what}: got {:?}", self.pending);
        self.s.set_read_timeout(Some(QUIET)).unwrap();
        let mut b = [0u8; 1];
        match self.s.read(&mut b) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            other => panic!("{what}: expected nothing, read {other:?}"),
        }
        self.s.set_read_timeout(Some(WAIT)).unwrap();
    }

    fn puback(&mut self, pkid: u16) {
        self.send(&[0x40, 0x02, (pkid >> 8) as u8, pkid as u8]);
    }

    /// Reads until the broker closes; returns the DISCONNECT reason it sent first.
    fn disconnect_reason(&mut self) -> u8 {
        let bytes = read_until_closed(&mut self.s, WAIT).expect("broker closes the connection");
        let packets = split_packets(&bytes);
        let (byte1, body) = packets
            .iter()
            .rev()
            .find(|(b, _)| b >> 4 == 14)
            .cloned()
            .unwrap_or_else(|| panic!("no DISCONNECT before the close: {packets:?}"));
        In { byte1, body }.disconnect_reason()
    }
}

fn user(k: &str, v: &str) -> Prop {
    Prop::Pair(k.into(), v.into())
}

// ---------------------------------------------------------------------------------------
// CONNECT / CONNACK
// ---------------------------------------------------------------------------------------

#[test]
fn mqtt5_3_2_2_connack_announces_capabilities_and_assigns_client_id() {
    let broker = Broker::start("max_topic_alias = 5\nreceive_maximum = 50\n");
    let (_c, ack) = V5::open(broker.addr(), &connect5("", false, 30, &[], None));
    let (sp, reason, props) = ack.connack();
    assert!(!sp);
    assert_eq!(
        reason, 0,
        "an empty client id is assigned in 5.0, whatever Clean Start says"
    );
    let Some(Prop::Str(_, assigned)) = find(&props, ASSIGNED_CLIENT_ID) else {
        panic!("no Assigned Client Identifier in {props:?}")
    };
    assert!(!assigned.is_empty());
    assert_eq!(
        find(&props, TOPIC_ALIAS_MAXIMUM),
        Some(&Prop::Two(TOPIC_ALIAS_MAXIMUM, 5))
    );
    assert_eq!(
        find(&props, RECEIVE_MAXIMUM),
        Some(&Prop::Two(RECEIVE_MAXIMUM, 50))
    );
    assert_eq!(
        find(&props, RETAIN_AVAILABLE),
        Some(&Prop::Byte(RETAIN_AVAILABLE, 1))
    );
    assert_eq!(
        find(&props, SHARED_AVAILABLE),
        Some(&Prop::Byte(SHARED_AVAILABLE, 1))
    );
    assert!(
        matches!(find(&props, MAXIMUM_PACKET_SIZE), Some(Prop::Four(_, n)) if *n > 0),
        "{props:?}"
    );
    // Maximum QoS is not sent: midge supports QoS 2, and 2 may not be announced.
    assert!(find(&props, 0x24).is_none());
}

#[test]
fn mqtt5_3_2_2_21_server_keep_alive_replaces_a_longer_or_zero_keep_alive() {
    let broker = Broker::start("max_keepalive = 30\n");
    for asked in [0u16, 600] {
        let (_c, ack) = V5::open(
            broker.addr(),
            &connect5(&format!("ka{asked}"), true, asked, &[], None),
        );
        let (_, reason, props) = ack.connack();
        assert_eq!(reason, 0);
        assert_eq!(
            find(&props, SERVER_KEEP_ALIVE),
            Some(&Prop::Two(SERVER_KEEP_ALIVE, 30))
        );
    }
    let (_c, ack) = V5::open(broker.addr(), &connect5("ka10", true, 10, &[], None));
    assert!(
        find(&ack.connack().2, SERVER_KEEP_ALIVE).is_none(),
        "10 s is within the limit"
    );
}

#[test]
fn mqtt5_4_12_authentication_method_gets_connack_0x8c() {
    let broker = Broker::start("");
    let (mut c, ack) = V5::open(
        broker.addr(),
        &connect5(
            "auth",
            true,
            60,
            &[Prop::Str(AUTH_METHOD, "SCRAM-SHA-1".into())],
            None,
        ),
    );
    assert_eq!(ack.connack().1, 0x8C);
    assert!(read_until_closed(&mut c.s, WAIT).is_some());
}

#[test]
fn mqtt5_3_1_2_11_session_expiry_interval_keeps_then_ends_the_session() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let props = [Prop::Four(SESSION_EXPIRY, 2)];
    let mut c = V5::connected(addr, "expiring", &props);
    assert_eq!(c.subscribe(1, &[("exp/#", 1)], None), vec![1]);
    drop(c);
    // Within the interval: resumed, and it received what was published meanwhile.
    std::thread::sleep(Duration::from_millis(300));
    let mut p = V5::connected(addr, "pub", &[]);
    assert_eq!(p.publish_qos1("exp/a", 1, &[], b"kept"), 0);
    let (mut c, ack) = V5::open(addr, &connect5("expiring", false, 60, &props, None));
    assert!(
        ack.connack().0,
        "session present within the expiry interval"
    );
    assert_eq!(c.next_publish().payload, b"kept");
    drop(c);
    // After it: gone.
    std::thread::sleep(Duration::from_millis(3000));
    let (_c, ack) = V5::open(addr, &connect5("expiring", false, 60, &props, None));
    assert!(!ack.connack().0, "session ended after its expiry interval");
    assert!(broker.log().contains("session expired"));
}

// ---------------------------------------------------------------------------------------
// PUBLISH properties
// ---------------------------------------------------------------------------------------

#[test]
fn mqtt5_3_3_2_message_properties_forwarded_unchanged_and_user_properties_in_order() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let mut sub = V5::connected(addr, "sub5", &[]);
    assert_eq!(sub.subscribe(1, &[("props/#", 0)], None), vec![0]);
    let mut old = raw_connected(addr, "sub311");
    old.write_all(&subscribe_packet(1, &[(b"props/#", 0)]))
        .unwrap();
    assert_eq!(read_packet(&mut old).0, 0x90);

    let mut p = V5::connected(addr, "pub5", &[]);
    let props = [
        Prop::Byte(PAYLOAD_FORMAT, 1),
        Prop::Str(CONTENT_TYPE, "application/json".into()),
        Prop::Str(RESPONSE_TOPIC, "replies/pub5".into()),
        Prop::Bin(CORRELATION_DATA, vec![0, 1, 2, 255]),
        user("z", "last-name-first"),
        user("a", "1"),
        user("a", "2"),
    ];
    assert_eq!(p.publish_qos1("props/x", 7, &props, b"{\"v\":1}"), 0);
    let got = sub.next_publish();
    assert_eq!(got.payload, b"{\"v\":1}");
    assert_eq!(
        got.prop(PAYLOAD_FORMAT),
        Some(&Prop::Byte(PAYLOAD_FORMAT, 1))
    );
    assert_eq!(
        got.prop(CONTENT_TYPE),
        Some(&Prop::Str(CONTENT_TYPE, "application/json".into()))
    );
    assert_eq!(
        got.prop(RESPONSE_TOPIC),
        Some(&Prop::Str(RESPONSE_TOPIC, "replies/pub5".into()))
    );
    assert_eq!(
        got.prop(CORRELATION_DATA),
        Some(&Prop::Bin(CORRELATION_DATA, vec![0, 1, 2, 255]))
    );
    assert_eq!(
        got.user_properties(),
        vec![
            ("z".into(), "last-name-first".into()),
            ("a".into(), "1".into()),
            ("a".into(), "2".into())
        ],
        "user properties unchanged and in order [MQTT-3.3.2-17/18]"
    );
    // The 3.1.1 subscriber gets the same message, without properties.
    let (header, body) = read_packet(&mut old);
    assert_eq!(
        parse_publish(header, &body),
        ("props/x".into(), b"{\"v\":1}".to_vec())
    );
}

#[test]
fn mqtt5_3_3_2_5_expired_messages_are_not_delivered_and_the_rest_carry_remaining_time() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let mut c = V5::connected(addr, "late", &[Prop::Four(SESSION_EXPIRY, 60)]);
    assert_eq!(c.subscribe(1, &[("exp/#", 1)], None), vec![1]);
    drop(c);
    let mut p = V5::connected(addr, "pub", &[]);
    p.publish_qos1("exp/short", 1, &[Prop::Four(MESSAGE_EXPIRY, 1)], b"gone");
    p.publish_qos1("exp/long", 2, &[Prop::Four(MESSAGE_EXPIRY, 100)], b"kept");
    // Retained with a short life: expired before anyone subscribes.
    p.send(&publish5(
        "exp/retained",
        1,
        3,
        true,
        &[Prop::Four(MESSAGE_EXPIRY, 1)],
        b"old",
    ));
    assert_eq!(p.control().kind(), 4);
    std::thread::sleep(Duration::from_millis(2100));
    let (mut c, ack) = V5::open(
        addr,
        &connect5("late", false, 60, &[Prop::Four(SESSION_EXPIRY, 60)], None),
    );
    assert!(ack.connack().0);
    let got = c.next_publish();
    assert_eq!(got.topic, "exp/long", "the expired message is skipped");
    match got.prop(MESSAGE_EXPIRY) {
        Some(Prop::Four(_, left)) => assert!((95..=98).contains(left), "remaining {left}"),
        other => panic!("no Message Expiry Interval: {other:?}"),
    }
    c.puback(got.pkid);
    let mut fresh = V5::connected(addr, "fresh", &[]);
    fresh.subscribe(1, &[("exp/retained", 1)], None);
    fresh.assert_quiet("expired retained message");
}

#[test]
fn mqtt5_3_3_2_4_payload_not_utf8_with_format_indicator_gets_0x99() {
    let broker = Broker::start("");
    let mut sub = V5::connected(broker.addr(), "sub", &[]);
    sub.subscribe(1, &[("fmt/#", 0)], None);
    let mut p = V5::connected(broker.addr(), "pub", &[]);
    let reason = p.publish_qos1(
        "fmt/bad",
        1,
        &[Prop::Byte(PAYLOAD_FORMAT, 1)],
        &[0xC3, 0x28],
    );
    assert_eq!(reason, 0x99);
    sub.assert_quiet("invalid payload not delivered");
}

#[test]
fn mqtt5_3_4_2_1_puback_reports_no_matching_subscribers() {
    let broker = Broker::start("");
    let mut p = V5::connected(broker.addr(), "pub", &[]);
    assert_eq!(p.publish_qos1("nobody/home", 1, &[], b"x"), 0x10);
    let mut s = V5::connected(broker.addr(), "sub", &[]);
    s.subscribe(1, &[("nobody/#", 0)], None);
    assert_eq!(p.publish_qos1("nobody/home", 2, &[], b"x"), 0x00);
}

// ---------------------------------------------------------------------------------------
// Topic aliases
// ---------------------------------------------------------------------------------------

#[test]
fn mqtt5_3_3_2_3_4_inbound_topic_alias_is_set_then_used() {
    let broker = Broker::start("max_topic_alias = 3\n");
    let mut sub = V5::connected(broker.addr(), "sub", &[]);
    sub.subscribe(1, &[("alias/#", 0)], None);
    let mut p = V5::connected(broker.addr(), "pub", &[]);
    p.send(&publish5(
        "alias/long/topic/name",
        0,
        0,
        false,
        &[Prop::Two(TOPIC_ALIAS, 2)],
        b"one",
    ));
    p.send(&publish5(
        "",
        0,
        0,
        false,
        &[Prop::Two(TOPIC_ALIAS, 2)],
        b"two",
    ));
    for payload in [&b"one"[..], b"two"] {
        let got = sub.next_publish();
        assert_eq!(got.topic, "alias/long/topic/name");
        assert_eq!(got.payload, payload);
    }
}

#[test]
fn mqtt5_3_3_2_8_topic_alias_zero_or_above_maximum_disconnects_with_0x94() {
    let broker = Broker::start("max_topic_alias = 3\n");
    for alias in [0u16, 4] {
        let mut p = V5::connected(broker.addr(), &format!("bad-alias-{alias}"), &[]);
        p.send(&publish5(
            "a/b",
            0,
            0,
            false,
            &[Prop::Two(TOPIC_ALIAS, alias)],
            b"x",
        ));
        assert_eq!(p.disconnect_reason(), 0x94, "alias {alias}");
    }
}

#[test]
fn mqtt5_3_3_2_3_4_outbound_topic_alias_within_the_clients_maximum() {
    let broker = Broker::start("");
    let mut sub = V5::connected(broker.addr(), "sub", &[Prop::Two(TOPIC_ALIAS_MAXIMUM, 1)]);
    sub.subscribe(1, &[("out/#", 0)], None);
    let mut p = V5::connected(broker.addr(), "pub", &[]);
    for (topic, payload) in [("out/a", "1"), ("out/a", "2"), ("out/b", "3")] {
        p.send(&publish5(topic, 0, 0, false, &[], payload.as_bytes()));
    }
    let first = sub.next_publish();
    assert_eq!(first.topic, "out/a");
    assert_eq!(first.prop(TOPIC_ALIAS), Some(&Prop::Two(TOPIC_ALIAS, 1)));
    let second = sub.next_publish();
    assert_eq!(second.topic, "", "alias only, the topic is not repeated");
    assert_eq!(second.prop(TOPIC_ALIAS), Some(&Prop::Two(TOPIC_ALIAS, 1)));
    let third = sub.next_publish();
    assert_eq!(third.topic, "out/b");
    assert!(
        third.prop(TOPIC_ALIAS).is_none(),
        "beyond the client's maximum: no alias"
    );
}

// ---------------------------------------------------------------------------------------
// Flow control and sizes
// ---------------------------------------------------------------------------------------

#[test]
fn mqtt5_3_3_4_7_receive_maximum_bounds_unacknowledged_deliveries() {
    let broker = Broker::start("");
    let mut sub = V5::connected(broker.addr(), "slow", &[Prop::Two(RECEIVE_MAXIMUM, 2)]);
    sub.subscribe(1, &[("rm/#", 1)], None);
    let mut p = V5::connected(broker.addr(), "pub", &[]);
    for i in 0..5u16 {
        p.publish_qos1("rm/x", i + 1, &[], &[b'0' + i as u8]);
    }
    let a = sub.next_publish();
    let b = sub.next_publish();
    sub.assert_quiet("a third PUBLISH before an acknowledgement");
    sub.puback(a.pkid);
    let c = sub.next_publish();
    assert_eq!([a.payload, b.payload, c.payload].concat(), b"012");
    sub.assert_quiet("still two unacknowledged");
}

#[test]
fn mqtt5_3_3_4_9_more_unacknowledged_qos2_than_receive_maximum_disconnects_with_0x93() {
    let broker = Broker::start("receive_maximum = 2\n");
    let mut p = V5::connected(broker.addr(), "greedy", &[]);
    for pkid in 1..=2u16 {
        p.send(&publish5("rm/q2", 2, pkid, false, &[], b"x"));
        assert_eq!(p.control().ack().0, pkid, "PUBREC {pkid}");
    }
    // A re-send (DUP) of one not yet released is not a new PUBLISH.
    let mut dup = publish5("rm/q2", 2, 2, false, &[], b"x");
    dup[0] |= 0x08;
    p.send(&dup);
    assert_eq!(p.control().ack().0, 2, "PUBREC again for the re-send");
    p.send(&publish5("rm/q2", 2, 3, false, &[], b"x"));
    assert_eq!(p.disconnect_reason(), 0x93);
}

#[test]
fn mqtt5_3_1_2_25_message_over_the_clients_maximum_packet_size_is_dropped_for_it_only() {
    let broker = Broker::start("");
    let mut small = V5::connected(
        broker.addr(),
        "small",
        &[Prop::Four(MAXIMUM_PACKET_SIZE, 64)],
    );
    small.subscribe(1, &[("size/#", 0)], None);
    let mut big = V5::connected(broker.addr(), "big", &[]);
    big.subscribe(1, &[("size/#", 0)], None);
    let mut p = V5::connected(broker.addr(), "pub", &[]);
    p.send(&publish5("size/large", 0, 0, false, &[], &[b'x'; 200]));
    p.send(&publish5("size/small", 0, 0, false, &[], b"ok"));
    assert_eq!(
        small.next_publish().topic,
        "size/small",
        "the large one was skipped"
    );
    assert_eq!(big.next_publish().topic, "size/large");
    assert_eq!(big.next_publish().topic, "size/small");
}

#[test]
fn mqtt5_3_14_packet_over_max_packet_size_disconnects_with_0x95() {
    let broker = Broker::start("max_packet_size = 100\n");
    let mut p = V5::connected(broker.addr(), "big", &[]);
    p.send(&publish5("a", 0, 0, false, &[], &[0u8; 200]));
    assert_eq!(p.disconnect_reason(), 0x95);
}

// ---------------------------------------------------------------------------------------
// Subscription options and identifiers
// ---------------------------------------------------------------------------------------

#[test]
fn mqtt5_3_8_3_1_no_local_suppresses_own_messages() {
    let broker = Broker::start("");
    let mut c = V5::connected(broker.addr(), "self", &[]);
    // Option bits: QoS 0, No Local (0x04).
    c.subscribe(1, &[("nl/#", 0x04)], None);
    c.send(&publish5("nl/mine", 0, 0, false, &[], b"x"));
    let mut other = V5::connected(broker.addr(), "other", &[]);
    other.send(&publish5("nl/theirs", 0, 0, false, &[], b"y"));
    assert_eq!(c.next_publish().topic, "nl/theirs");
}

#[test]
fn mqtt5_3_3_1_12_retain_as_published_and_retain_handling() {
    let broker = Broker::start("");
    let mut p = V5::connected(broker.addr(), "pub", &[]);
    p.send(&publish5("rh/state", 1, 1, true, &[], b"on"));
    assert_eq!(p.control().kind(), 4);

    // Retain Handling 0: retained sent on every subscribe (RETAIN=1); without RAP, live
    // retained messages arrive with RETAIN=0.
    let mut a = V5::connected(broker.addr(), "rh0", &[]);
    a.subscribe(1, &[("rh/#", 0)], None);
    let got = a.next_publish();
    assert!(got.retain && got.payload == b"on");
    // Retain Handling 1: only for a new subscription.
    let mut b = V5::connected(broker.addr(), "rh1", &[]);
    b.subscribe(1, &[("rh/#", 0x10)], None);
    assert!(b.next_publish().retain);
    b.subscribe(2, &[("rh/#", 0x10)], None);
    b.assert_quiet("Retain Handling 1 on an existing subscription");
    // Retain Handling 2: never. With Retain As Published (0x08), live retained messages
    // keep RETAIN=1.
    let mut c = V5::connected(broker.addr(), "rh2", &[]);
    c.subscribe(1, &[("rh/#", 0x20 | 0x08)], None);
    c.assert_quiet("Retain Handling 2");
    p.send(&publish5("rh/state", 1, 2, true, &[], b"off"));
    assert_eq!(p.control().kind(), 4);
    assert!(c.next_publish().retain, "Retain As Published keeps RETAIN");
    assert!(
        !a.next_publish().retain,
        "without it RETAIN is 0 on live delivery"
    );
}

#[test]
fn mqtt5_3_3_4_3_subscription_identifiers_of_every_matching_subscription_are_delivered() {
    let broker = Broker::start("");
    let mut c = V5::connected(broker.addr(), "ids", &[]);
    c.subscribe(1, &[("ids/+", 0)], Some(7));
    c.subscribe(2, &[("ids/#", 1)], Some(300));
    c.subscribe(3, &[("other/#", 0)], None);
    let mut p = V5::connected(broker.addr(), "pub", &[]);
    p.publish_qos1("ids/a", 1, &[], b"x");
    let got = c.next_publish();
    let mut ids = got.sub_ids();
    ids.sort_unstable();
    assert_eq!(ids, vec![7, 300], "one copy, every identifier");
    assert_eq!(got.qos, 1, "the highest granted QoS");
    p.publish_qos1("other/a", 2, &[], b"y");
    assert!(c.next_publish().sub_ids().is_empty());
}

#[test]
fn mqtt5_3_9_3_suback_and_unsuback_reason_codes() {
    let broker = Broker::start("max_subscriptions_per_client = 2\n");
    let mut c = V5::connected(broker.addr(), "codes", &[]);
    assert_eq!(
        c.subscribe(1, &[("a/#", 2), ("a/#/b", 0), ("b", 1), ("c", 0)], None),
        vec![2, 0x8F, 1, 0x97]
    );
    c.send(&frame(0xA2, {
        let mut b = vec![0, 9, 0];
        put_str(&mut b, b"a/#");
        put_str(&mut b, b"never");
        b
    }));
    let ack = c.control();
    assert_eq!(ack.kind(), 11);
    assert_eq!(ack.reasons(), vec![0x00, 0x11]);
}

// ---------------------------------------------------------------------------------------
// Shared subscriptions
// ---------------------------------------------------------------------------------------

#[test]
fn mqtt5_4_8_2_shared_subscription_delivers_each_message_to_one_member_in_turn() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let mut members = Vec::new();
    for id in ["m1", "m2"] {
        let mut m = V5::connected(addr, id, &[]);
        assert_eq!(m.subscribe(1, &[("$share/g/jobs/#", 1)], None), vec![1]);
        members.push(m);
    }
    // A 3.1.1 client may join the same group, as in Mosquitto (raw 3.1.1 bytes; its
    // PUBLISHes have no property block, which `In::publish` is not used for).
    let (mut m3, code) = V5::open(addr, &connect_packet("m3-311"));
    assert_eq!(code.byte1, 0x20);
    m3.send(&subscribe_packet(1, &[(b"$share/g/jobs/#", 1)]));
    assert_eq!(m3.control().kind(), 9);
    members.push(m3);
    // A non-shared subscriber gets everything.
    let mut all = V5::connected(addr, "all", &[]);
    all.subscribe(1, &[("jobs/#", 0)], None);

    let mut p = V5::connected(addr, "pub", &[]);
    let mut counts = [0usize; 3];
    for i in 0..9u16 {
        p.publish_qos1("jobs/resize", i + 1, &[], format!("{i}").as_bytes());
        // Exactly one member gets it; each acknowledges at once, so every member is
        // equally idle and the turn rotates.
        let deadline = Instant::now() + WAIT;
        let (who, packet) = 'found: loop {
            for (n, m) in members.iter_mut().enumerate() {
                if let Some(packet) = m.try_read(Duration::from_millis(20)) {
                    break 'found (n, packet);
                }
            }
            assert!(Instant::now() < deadline, "message {i} reached no member");
        };
        assert_eq!(packet.kind(), 3);
        let tlen = usize::from(u16::from_be_bytes([packet.body[0], packet.body[1]]));
        let pkid = u16::from_be_bytes([packet.body[2 + tlen], packet.body[3 + tlen]]);
        members[who].puback(pkid);
        // A PINGREQ round trip: the broker has handled the PUBACK before the next
        // PUBLISH is routed, so every member is idle again.
        members[who].send(&[0xC0, 0x00]);
        assert_eq!(members[who].control().kind(), 13);
        counts[who] += 1;
        all.next_publish();
    }
    assert_eq!(counts, [3, 3, 3], "each message to one member, in turn");
    for m in &mut members {
        m.assert_quiet("no second copy within the group");
    }
}

#[test]
fn mqtt5_4_8_2_unacknowledged_messages_of_a_disconnected_member_go_to_another() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let mut holder = V5::connected(addr, "holder", &[Prop::Two(RECEIVE_MAXIMUM, 1)]);
    holder.subscribe(1, &[("$share/w/work", 1)], None);
    let mut p = V5::connected(addr, "pub", &[]);
    p.publish_qos1("work", 1, &[], b"job-1");
    let got = holder.next_publish();
    assert_eq!(got.payload, b"job-1");
    // Another member joins; the holder dies without acknowledging.
    let mut other = V5::connected(addr, "other", &[]);
    other.subscribe(1, &[("$share/w/work", 1)], None);
    drop(holder);
    let moved = other.next_publish();
    assert_eq!(
        moved.payload, b"job-1",
        "redelivered to the remaining member"
    );
    assert!(broker.wait_log("moved to other members", WAIT));
}

#[test]
fn mqtt5_3_8_3_4_no_local_on_a_shared_subscription_is_a_protocol_error() {
    let broker = Broker::start("");
    let mut c = V5::connected(broker.addr(), "nl-shared", &[]);
    c.send(&subscribe5(1, &[("$share/g/x", 0x04)], None));
    assert_eq!(c.disconnect_reason(), 0x82);
}

// ---------------------------------------------------------------------------------------
// Wills, DISCONNECT, server-sent reasons
// ---------------------------------------------------------------------------------------

#[test]
fn mqtt5_3_1_3_9_delayed_will_not_sent_when_the_session_resumes_in_time() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let mut watcher = V5::connected(addr, "watcher", &[]);
    watcher.subscribe(1, &[("wills/#", 0)], None);
    let session = [Prop::Four(SESSION_EXPIRY, 60)];
    let will_props = [Prop::Four(WILL_DELAY, 2)];
    let connect = connect5(
        "flaky",
        true,
        60,
        &session,
        Some(("wills/flaky", b"gone", &will_props)),
    );
    let (c, ack) = V5::open(addr, &connect);
    assert_eq!(ack.connack().1, 0);
    drop(c); // ungraceful
    std::thread::sleep(Duration::from_millis(500));
    let (c, ack) = V5::open(addr, &connect5("flaky", false, 60, &session, None));
    assert!(ack.connack().0);
    std::thread::sleep(Duration::from_millis(2500));
    watcher.assert_quiet("will cancelled by the reconnect");
    drop(c);
}

#[test]
fn mqtt5_3_1_2_8_delayed_will_sent_after_the_delay() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let mut watcher = V5::connected(addr, "watcher", &[]);
    watcher.subscribe(1, &[("wills/#", 0)], None);
    let session = [Prop::Four(SESSION_EXPIRY, 60)];
    let will_props = [Prop::Four(WILL_DELAY, 1), user("why", "test")];
    let connect = connect5(
        "gone",
        true,
        60,
        &session,
        Some(("wills/gone", b"bye", &will_props)),
    );
    let (c, _) = V5::open(addr, &connect);
    let started = Instant::now();
    drop(c);
    let got = watcher.next_publish();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before its delay"
    );
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("wills/gone", &b"bye"[..])
    );
    assert_eq!(got.user_properties(), vec![("why".into(), "test".into())]);
}

#[test]
fn mqtt5_3_14_4_disconnect_with_will_message_0x04_publishes_the_will() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let mut watcher = V5::connected(addr, "watcher", &[]);
    watcher.subscribe(1, &[("wills/#", 0)], None);
    let (mut c, _) = V5::open(
        addr,
        &connect5(
            "polite",
            true,
            60,
            &[],
            Some(("wills/polite", b"asked", &[])),
        ),
    );
    c.send(&[0xE0, 0x01, 0x04]);
    assert_eq!(watcher.next_publish().payload, b"asked");
    // A normal DISCONNECT (0x00) discards it.
    let (mut c, _) = V5::open(
        addr,
        &connect5(
            "polite2",
            true,
            60,
            &[],
            Some(("wills/polite2", b"no", &[])),
        ),
    );
    c.send(&[0xE0, 0x00]);
    watcher.assert_quiet("will discarded by a normal DISCONNECT");
}

#[test]
fn mqtt5_3_14_2_2_session_expiry_cannot_be_set_from_zero_at_disconnect() {
    let broker = Broker::start("");
    let mut c = V5::connected(broker.addr(), "zero", &[]);
    // DISCONNECT, reason 0, properties: Session Expiry Interval 10.
    c.send(&[0xE0, 0x07, 0x00, 0x05, SESSION_EXPIRY, 0, 0, 0, 10]);
    assert_eq!(c.disconnect_reason(), 0x82);
}

#[test]
fn mqtt5_3_14_server_disconnect_reasons_take_over_and_keep_alive() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let mut first = V5::connected(addr, "dup", &[]);
    let _second = V5::connected(addr, "dup", &[]);
    assert_eq!(first.disconnect_reason(), 0x8E, "session taken over");

    let (mut idle, ack) = V5::open(addr, &connect5("idle", true, 1, &[], None));
    assert_eq!(ack.connack().1, 0);
    assert_eq!(idle.disconnect_reason(), 0x8D, "keep alive timeout");
}

// ---------------------------------------------------------------------------------------
// Malformed input
// ---------------------------------------------------------------------------------------

#[test]
fn mqtt5_2_2_2_duplicate_or_misplaced_properties_and_bad_values_disconnect() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let cases: Vec<(&str, Vec<u8>, u8)> = vec![
        (
            "duplicate Content Type",
            publish5(
                "a",
                0,
                0,
                false,
                &[
                    Prop::Str(CONTENT_TYPE, "x".into()),
                    Prop::Str(CONTENT_TYPE, "y".into()),
                ],
                b"",
            ),
            0x82,
        ),
        (
            "Session Expiry Interval on PUBLISH",
            publish5("a", 0, 0, false, &[Prop::Four(SESSION_EXPIRY, 1)], b""),
            0x81,
        ),
        (
            "Subscription Identifier from a client",
            publish5("a", 0, 0, false, &[Prop::Var(SUBSCRIPTION_ID, 3)], b""),
            0x82,
        ),
        (
            "Subscription Identifier 0",
            subscribe5(1, &[("a", 0)], Some(0)),
            0x82,
        ),
        (
            "Retain Handling 3",
            subscribe5(1, &[("a", 0x30)], None),
            0x82,
        ),
        (
            "reserved option bits",
            subscribe5(1, &[("a", 0x40)], None),
            0x81,
        ),
    ];
    for (what, bytes, reason) in cases {
        let mut c = V5::connected(addr, "bad", &[]);
        c.send(&bytes);
        assert_eq!(c.disconnect_reason(), reason, "{what}");
    }
    // Receive Maximum 0 in CONNECT: refused, connection closed.
    let mut s = raw(addr);
    s.write_all(&connect5(
        "rm0",
        true,
        60,
        &[Prop::Two(RECEIVE_MAXIMUM, 0)],
        None,
    ))
    .unwrap();
    let bytes = read_until_closed(&mut s, WAIT).expect("closed");
    assert!(bytes.is_empty() || bytes[0] == 0x20 && bytes.get(3).is_some_and(|r| *r >= 0x80));
    // Everyone else is unaffected.
    let mut ok = V5::connected(addr, "ok", &[]);
    assert_eq!(ok.subscribe(1, &[("fine", 0)], None), vec![0]);
}

// ---------------------------------------------------------------------------------------
// rumqttc's v5 client, and 3.1.1 and 5.0 clients together
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn mqtt5_rumqttc_v5_client_and_311_client_exchange_messages_both_ways() {
    use rumqttc::v5::mqttbytes::v5::{Packet as P5, PublishProperties};
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::{AsyncClient as C5, Event as E5, MqttOptions as O5};

    let broker = Broker::start("");
    let mut o5 = O5::new("rc5", "127.0.0.1", broker.port);
    o5.set_keep_alive(Duration::from_secs(30));
    let (c5, mut ev5) = C5::new(o5, 50);
    let mut o3 = rumqttc::MqttOptions::new("rc3", "127.0.0.1", broker.port);
    o3.set_keep_alive(Duration::from_secs(30));
    let (c3, mut ev3) = rumqttc::AsyncClient::new(o3, 50);
    // Each event loop runs on its own task (rumqttc's poll must not be cancelled midway,
    // as a select! over both would), forwarding SUBACKs and PUBLISHes.
    let (tx5, mut rx5) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(e) = ev5.poll().await {
            match e {
                E5::Incoming(P5::SubAck(_)) => drop(tx5.send(None)),
                E5::Incoming(P5::Publish(p)) => drop(tx5.send(Some(p))),
                _ => {}
            }
        }
    });
    let (tx3, mut rx3) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(e) = ev3.poll().await {
            match e {
                rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) => drop(tx3.send(None)),
                rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => drop(tx3.send(Some(p))),
                _ => {}
            }
        }
    });

    c5.subscribe("mixed/to5", Q5::AtLeastOnce).await.unwrap();
    c3.subscribe("mixed/to3", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let suback5 = tokio::time::timeout(WAIT, rx5.recv())
        .await
        .expect("SUBACK 5.0");
    let suback3 = tokio::time::timeout(WAIT, rx3.recv())
        .await
        .expect("SUBACK 3.1.1");
    assert!(matches!(suback5, Some(None)) && matches!(suback3, Some(None)));
    let props = PublishProperties {
        user_properties: vec![("k".into(), "v".into())],
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    c5.publish_with_properties("mixed/to3", Q5::AtLeastOnce, false, "from five", props)
        .await
        .unwrap();
    c3.publish("mixed/to5", rumqttc::QoS::AtLeastOnce, false, "from three")
        .await
        .unwrap();
    let got5 = tokio::time::timeout(WAIT, rx5.recv())
        .await
        .expect("5.0 receives");
    let got3 = tokio::time::timeout(WAIT, rx3.recv())
        .await
        .expect("3.1.1 receives");
    let (Some(Some(got5)), Some(Some(got3))) = (got5, got3) else {
        panic!("messages did not cross")
    };
    assert_eq!(&got5.payload[..], b"from three");
    assert!(got5.properties.is_none_or(|p| p.user_properties.is_empty()));
    assert_eq!(&got3.payload[..], b"from five");
}

#[test]
fn mqtt5_mosquitto_clients_v5_properties_round_trip() {
    let broker = Broker::start("");
    let port = broker.port.to_string();
    let sub = Command::new(tool("mosquitto_sub"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "-t",
            "mq5/#",
            "-C",
            "1",
            "-W",
            "10",
        ])
        .args(["-F", "%t|%C|%R|%F|%P|%p"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        broker.wait_log("filter=\"mq5/#\"", WAIT),
        "{}",
        broker.log()
    );
    let out = Command::new(tool("mosquitto_pub"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "-t",
            "mq5/x",
            "-m",
            "hello",
            "-q",
            "1",
        ])
        .args(["-D", "publish", "content-type", "text/plain"])
        .args(["-D", "publish", "response-topic", "mq5/reply"])
        .args(["-D", "publish", "payload-format-indicator", "1"])
        .args(["-D", "publish", "user-property", "k1", "v1"])
        .args(["-D", "publish", "user-property", "k2", "v2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", broker.log());
    let got = sub.wait_with_output().unwrap();
    assert!(got.status.success(), "{got:?}");
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim(),
        "mq5/x|text/plain|mq5/reply|1|k1:v1 k2:v2|hello"
    );
}

/// A connection with a delayed will (Session Expiry 60 s) taken over by a second one with
/// the given Clean Start; returns the watcher subscribed to `wills/#`, the old
/// connection and the new one's CONNACK.
fn take_over_with_will(addr: SocketAddr, delay: u32, clean_start: bool) -> (V5, V5, V5, In) {
    let mut watcher = V5::connected(addr, "watcher", &[]);
    watcher.subscribe(1, &[("wills/#", 0)], None);
    let session = [Prop::Four(SESSION_EXPIRY, 60)];
    let will_props = [Prop::Four(WILL_DELAY, delay)];
    let (mut old, _) = V5::open(
        addr,
        &connect5(
            "twin",
            true,
            60,
            &session,
            Some(("wills/twin", b"gone", &will_props)),
        ),
    );
    let (new, ack) = V5::open(addr, &connect5("twin", clean_start, 60, &session, None));
    assert_eq!(old.disconnect_reason(), 0x8E);
    (watcher, old, new, ack)
}

#[test]
fn mqtt5_3_1_4_3_take_over_resumes_the_session_so_a_delayed_will_is_not_sent() {
    let broker = Broker::start("");
    let (mut watcher, _old, _new, ack) = take_over_with_will(broker.addr(), 1, false);
    assert!(ack.connack().0, "the new connection resumes the session");
    std::thread::sleep(Duration::from_millis(1500));
    watcher.assert_quiet("no will: the session went on with the new connection");
}

#[test]
fn mqtt5_3_14_server_shutting_down_sends_disconnect_0x8b() {
    let mut broker = Broker::start("");
    let mut c = V5::connected(broker.addr(), "stays", &[]);
    let status = broker.terminate().expect("midge exits on SIGTERM");
    assert!(status.success());
    assert_eq!(c.disconnect_reason(), 0x8B);
}

// ---------------------------------------------------------------------------------------
// Found by the conformance pass (docs/CONFORMANCE.md, part 2)
// ---------------------------------------------------------------------------------------

/// Size of a received packet on the wire.
fn pkt_size(p: &In) -> usize {
    let mut n = p.body.len();
    let mut vb = 1;
    while n >= 128 {
        n /= 128;
        vb += 1;
    }
    1 + vb + p.body.len()
}

/// Publishes at QoS 2 with the full flow.
fn publish_qos2(c: &mut V5, topic: &str, pkid: u16, payload: &[u8]) {
    c.send(&publish5(topic, 2, pkid, false, &[], payload));
    let rec = c.control();
    assert_eq!(rec.kind(), 5, "PUBREC expected: {rec:?}");
    c.send(&[0x62, 2, (pkid >> 8) as u8, pkid as u8]);
    let comp = c.control();
    assert_eq!(comp.kind(), 7, "PUBCOMP expected: {comp:?}");
}

#[test]
fn mqtt5_4_4_0_2_pubrec_error_ends_the_delivery_and_frees_the_window() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let props = [
        Prop::Two(RECEIVE_MAXIMUM, 1),
        Prop::Four(SESSION_EXPIRY, 60),
    ];
    let mut sub = V5::connected(addr, "q2sub", &props);
    sub.subscribe(1, &[("q2/#", 2)], None);
    let mut p = V5::connected(addr, "pub", &[]);
    publish_qos2(&mut p, "q2/a", 1, b"one");
    publish_qos2(&mut p, "q2/a", 2, b"two");
    let first = sub.next_publish();
    assert_eq!(first.payload, b"one");
    // PUBREC with 0x80: the message is acknowledged, quota comes back.
    sub.send(&[0x50, 3, (first.pkid >> 8) as u8, first.pkid as u8, 0x80]);
    match sub.try_read(Duration::from_millis(1500)) {
        Some(pk) if pk.kind() == 3 => assert_eq!(pk.publish().payload, b"two"),
        other => panic!("quota not returned after PUBREC 0x80, got {other:?}"),
    }
}

#[test]
fn mqtt5_4_4_0_2_message_refused_by_pubrec_error_is_not_resent_on_reconnect() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let props = [Prop::Four(SESSION_EXPIRY, 60)];
    let mut sub = V5::connected(addr, "q2sub", &props);
    sub.subscribe(1, &[("q2/#", 2)], None);
    let mut p = V5::connected(addr, "pub", &[]);
    publish_qos2(&mut p, "q2/a", 1, b"one");
    let first = sub.next_publish();
    sub.send(&[0x50, 3, (first.pkid >> 8) as u8, first.pkid as u8, 0x80]);
    // PINGREQ round trip so the PUBREC was handled.
    sub.send(&[0xC0, 0]);
    assert_eq!(sub.control().kind(), 13);
    drop(sub);
    std::thread::sleep(Duration::from_millis(300));
    let (mut sub, ack) = V5::open(addr, &connect5("q2sub", false, 60, &props, None));
    assert!(ack.connack().0);
    if let Some(pk) = sub.try_read(Duration::from_millis(1000)) {
        panic!(
            "after PUBREC 0x80 the broker re-sent on reconnect: {pk:?} (dup flag {})",
            pk.byte1 & 0x08
        );
    }
}

#[test]
fn mqtt5_3_1_2_24_topic_alias_counts_towards_the_clients_maximum_packet_size() {
    let broker = Broker::start("");
    let addr = broker.addr();
    // Without alias: 1 + 1 + (2 + 1) + 1 + 50 = 56 bytes.
    let mut sub = V5::connected(
        addr,
        "small",
        &[
            Prop::Four(MAXIMUM_PACKET_SIZE, 56),
            Prop::Two(TOPIC_ALIAS_MAXIMUM, 5),
        ],
    );
    sub.subscribe(1, &[("t", 0)], None);
    let mut p = V5::connected(addr, "pub", &[]);
    p.send(&publish5("t", 0, 0, false, &[], &[b'x'; 50]));
    let got = sub.read();
    let size = pkt_size(&got);
    assert!(size <= 56, "{size} > 56");
}

#[test]
fn mqtt5_3_1_4_3_take_over_with_clean_start_ends_the_session_and_sends_its_delayed_will() {
    let broker = Broker::start("");
    // Clean Start 1: the old session ends on the takeover, its will must go out.
    let (mut watcher, _old, _new, ack) = take_over_with_will(broker.addr(), 2, true);
    assert!(!ack.connack().0);
    match watcher.try_read(Duration::from_millis(3500)) {
        Some(p) => assert_eq!(p.publish().payload, b"gone"),
        None => panic!("the old session ended (Clean Start 1) but its will was never published"),
    }
}

#[test]
fn mqtt5_4_8_2_4_shared_qos2_in_flight_stays_with_its_member() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let session = [Prop::Four(SESSION_EXPIRY, 60)];
    let mut a = V5::connected(addr, "ma", &session);
    a.subscribe(1, &[("$share/g/q2", 2)], None);
    let mut p = V5::connected(addr, "pub", &[]);
    publish_qos2(&mut p, "q2", 1, b"exactly-once");
    let got = a.next_publish();
    assert_eq!(got.qos, 2);
    let mut b = V5::connected(addr, "mb", &[]);
    b.subscribe(1, &[("$share/g/q2", 2)], None);
    drop(a); // connection breaks before PUBREC; session persists (expiry 60)
    b.assert_quiet("a QoS 2 message in flight is not moved to another member");
    // It is completed with the member it was sent to, when it comes back [MQTT-4.8.2-4].
    let (mut a, ack) = V5::open(addr, &connect5("ma", false, 60, &session, None));
    assert!(ack.connack().0);
    let again = a.next_publish();
    assert_eq!(again.payload, b"exactly-once");
}

#[test]
fn mqtt5_4_8_2_6_shared_message_refused_by_pubrec_error_goes_to_no_other_member() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let mut a = V5::connected(addr, "ma", &[]);
    a.subscribe(1, &[("$share/g/q2", 2)], None);
    let mut p = V5::connected(addr, "pub", &[]);
    publish_qos2(&mut p, "q2", 1, b"refused");
    let got = a.next_publish();
    a.send(&[0x50, 3, (got.pkid >> 8) as u8, got.pkid as u8, 0x80]);
    a.send(&[0xC0, 0]);
    assert_eq!(a.control().kind(), 13);
    let mut b = V5::connected(addr, "mb", &[]);
    b.subscribe(1, &[("$share/g/q2", 2)], None);
    drop(a);
    if let Some(pk) = b.try_read(Duration::from_millis(1500)) {
        panic!(
            "message refused with PUBREC 0x80 was sent to another member: {:?}",
            pk.publish().payload
        );
    }
}

#[test]
fn mqtt5_4_3_3_qos2_resend_after_reconnect_is_acknowledged_within_receive_maximum() {
    let broker = Broker::start("receive_maximum = 1\n");
    let addr = broker.addr();
    let session = [Prop::Four(SESSION_EXPIRY, 60)];
    let mut c = V5::connected(addr, "p2", &session);
    c.send(&publish5("x/y", 2, 5, false, &[], b"m"));
    assert_eq!(c.control().kind(), 5);
    drop(c);
    std::thread::sleep(Duration::from_millis(300));
    let (mut c, ack) = V5::open(addr, &connect5("p2", false, 60, &session, None));
    assert!(ack.connack().0);
    // PUBREC was lost: the client re-sends the PUBLISH with DUP.
    let mut pkt = publish5("x/y", 2, 5, false, &[], b"m");
    pkt[0] |= 0x08;
    c.send(&pkt);
    let r = c.read();
    assert_eq!(r.kind(), 5, "expected PUBREC, got {r:?}");
}

#[test]
fn mqtt5_3_1_3_6_assigned_client_id_is_never_one_in_use() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let (_c, ack) = V5::open(addr, &connect5("", true, 60, &[], None));
    let Some(Prop::Str(_, assigned)) = find(&ack.connack().2, ASSIGNED_CLIENT_ID).cloned() else {
        panic!()
    };
    // Ids are random (`midge-` and 16 hex digits): squat on the likeliest guess, the
    // first one plus one.
    let n = u64::from_str_radix(assigned.strip_prefix("midge-").unwrap(), 16).unwrap();
    let next = format!("midge-{:016x}", n.wrapping_add(1));
    let session = [Prop::Four(SESSION_EXPIRY, 60)];
    let mut squatter = V5::connected(addr, &next, &session);
    squatter.subscribe(1, &[("secret/#", 1)], None);
    let (_victim, ack) = V5::open(addr, &connect5("", false, 60, &session, None));
    let (session_present, reason, props) = ack.connack();
    assert_eq!(reason, 0);
    assert!(
        !session_present,
        "someone else's session must not be handed out"
    );
    let Some(Prop::Str(_, id)) = find(&props, ASSIGNED_CLIENT_ID).cloned() else {
        panic!("no Assigned Client Identifier: {props:?}")
    };
    assert_ne!(
        id, next,
        "assigned id {id} is already used by another session"
    );
}

#[test]
fn mqtt5_3_3_4_10_pingreq_and_subscribe_answered_while_the_receive_window_is_full() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let mut sub = V5::connected(addr, "rm1", &[Prop::Two(RECEIVE_MAXIMUM, 1)]);
    sub.subscribe(1, &[("z/#", 1)], None);
    let mut p = V5::connected(addr, "pub", &[]);
    p.publish_qos1("z/a", 1, &[], b"1");
    p.publish_qos1("z/a", 2, &[], b"2");
    let first = sub.next_publish();
    assert_eq!(first.payload, b"1");
    sub.send(&[0xC0, 0]);
    let r = sub.read();
    assert_eq!(r.kind(), 13, "PINGRESP at zero quota: {r:?}");
    assert_eq!(sub.subscribe(2, &[("other", 0)], None), vec![0]);
    sub.assert_quiet("second QoS 1 held");
    sub.puback(first.pkid);
    assert_eq!(sub.next_publish().payload, b"2");
}

#[test]
fn mqtt5_3_3_4_3_retained_carry_subscription_id_and_shared_members_get_their_granted_qos() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let mut p = V5::connected(addr, "pub", &[]);
    p.send(&publish5(
        "ret/a",
        1,
        1,
        true,
        &[Prop::Four(MESSAGE_EXPIRY, 100)],
        b"r",
    ));
    assert_eq!(p.control().kind(), 4);
    let mut s = V5::connected(addr, "s", &[]);
    s.subscribe(1, &[("ret/#", 1)], Some(42));
    let got = s.next_publish();
    assert_eq!(got.sub_ids(), vec![42]);
    s.puback(got.pkid);
    let mut m = V5::connected(addr, "m", &[]);
    m.subscribe(1, &[("$share/g/sq", 0)], None);
    p.publish_qos1("sq", 2, &[], b"x");
    let got = m.next_publish();
    assert_eq!(got.qos, 0);
    // invalid shared filters
    let codes = m.subscribe(
        2,
        &[("$share//x", 0), ("$share/g+/x", 0), ("$share/g", 0)],
        None,
    );
    assert_eq!(codes, vec![0x8F, 0x8F, 0x8F]);
}

#[test]
fn mqtt5_3_6_2_qos2_inbound_flow_and_packet_identifier_not_found_0x92() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let mut c = V5::connected(addr, "c", &[]);
    c.send(&publish5("w/x", 2, 9, false, &[], b"m"));
    let rec = c.control();
    assert_eq!((rec.kind(), rec.ack()), (5, (9, 0x10)));
    c.send(&[0x62, 2, 0, 9]);
    let comp = c.control();
    assert_eq!((comp.kind(), comp.ack()), (7, (9, 0)));
    c.send(&[0x62, 2, 0, 77]);
    let comp = c.control();
    assert_eq!((comp.kind(), comp.ack()), (7, (77, 0x92)));
    c.send(&[0x50, 2, 0, 78]);
    let rel = c.control();
    assert_eq!((rel.kind(), rel.ack()), (6, (78, 0x92)));
    // empty topic without alias
    c.send(&publish5("", 0, 0, false, &[], b"m"));
    assert_eq!(c.disconnect_reason(), 0x82);
}

#[test]
fn mqtt5_3_3_2_7_topic_aliases_do_not_survive_a_reconnect() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let session = [Prop::Four(SESSION_EXPIRY, 60)];
    let mut c = V5::connected(addr, "al", &session);
    c.send(&publish5(
        "al/t",
        0,
        0,
        false,
        &[Prop::Two(TOPIC_ALIAS, 1)],
        b"m",
    ));
    c.send(&[0xC0, 0]);
    assert_eq!(c.control().kind(), 13);
    drop(c);
    std::thread::sleep(Duration::from_millis(200));
    let (mut c, ack) = V5::open(addr, &connect5("al", false, 60, &session, None));
    assert!(ack.connack().0);
    c.send(&publish5(
        "",
        0,
        0,
        false,
        &[Prop::Two(TOPIC_ALIAS, 1)],
        b"m",
    ));
    assert_eq!(c.disconnect_reason(), 0x82);
}

#[test]
fn mqtt5_3_1_3_9_will_sent_when_the_session_ends_before_the_will_delay() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let mut watcher = V5::connected(addr, "watcher", &[]);
    watcher.subscribe(1, &[("wills/#", 0)], None);
    let (c, _) = V5::open(
        addr,
        &connect5(
            "x",
            true,
            60,
            &[Prop::Four(SESSION_EXPIRY, 1)],
            Some((
                "wills/x",
                b"bye",
                &[Prop::Four(WILL_DELAY, 30), Prop::Four(MESSAGE_EXPIRY, 50)],
            )),
        ),
    );
    let t = Instant::now();
    drop(c);
    let got = watcher.next_publish();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "sent when the session ended (1 s), not after the 30 s delay"
    );
    assert_eq!(got.payload, b"bye");
    // The will keeps its properties; its expiry counts from when it was published.
    assert!(matches!(
        got.prop(MESSAGE_EXPIRY),
        Some(Prop::Four(_, 49..=50))
    ));
}

#[test]
fn mqtt5_4_9_0_receive_maximum_starts_afresh_with_each_connection() {
    let broker = Broker::start("receive_maximum = 1\n");
    let addr = broker.addr();
    let session = [Prop::Four(SESSION_EXPIRY, 60)];
    let mut c = V5::connected(addr, "p2", &session);
    c.send(&publish5("x/y", 2, 5, false, &[], b"m"));
    assert_eq!(c.control().kind(), 5);
    drop(c);
    std::thread::sleep(Duration::from_millis(300));
    let (mut c, ack) = V5::open(addr, &connect5("p2", false, 60, &session, None));
    assert!(ack.connack().0);
    // New connection, new send quota of 1: a new QoS 2 PUBLISH, then the PUBREL re-sent.
    c.send(&publish5("x/y", 2, 6, false, &[], b"n"));
    let r = c.read();
    assert_eq!(
        r.kind(),
        5,
        "expected PUBREC for the new PUBLISH, got {r:?}"
    );
}

#[test]
fn mqtt5_3_1_2_24_connack_fits_a_small_client_maximum_packet_size() {
    let broker = Broker::start("");
    let (_c, ack) = V5::open(
        broker.addr(),
        &connect5(
            "tiny",
            true,
            60,
            &[Prop::Four(MAXIMUM_PACKET_SIZE, 16)],
            None,
        ),
    );
    assert!(pkt_size(&ack) <= 16, "CONNACK of {} bytes", pkt_size(&ack));
    assert_eq!(ack.connack().1, 0);
}

/// The same properties and options through a client library: rumqttc's v5 client.
#[tokio::test]
async fn mqtt5_rumqttc_v5_properties_subscription_options_and_identifiers() {
    use rumqttc::v5::mqttbytes::v5::{
        Filter, Packet as P5, PublishProperties, RetainForwardRule, SubscribeProperties,
    };
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::{AsyncClient as C5, Event as E5, EventLoop, MqttOptions as O5};

    let broker = Broker::start("");
    let client = |id: &str| {
        let mut o = O5::new(id, "127.0.0.1", broker.port);
        o.set_keep_alive(Duration::from_secs(30));
        C5::new(o, 50)
    };
    let (sub, mut sub_ev) = client("rc-sub");
    let (publ, mut pub_ev) = client("rc-pub");
    // Drive the publisher's event loop in the background.
    tokio::spawn(async move { while pub_ev.poll().await.is_ok() {} });

    let filter = Filter {
        path: "rc/#".into(),
        qos: Q5::AtLeastOnce,
        nolocal: true,
        preserve_retain: true,
        retain_forward_rule: RetainForwardRule::OnEverySubscribe,
    };
    let sub_props = SubscribeProperties {
        id: Some(7),
        user_properties: vec![],
    };
    sub.subscribe_many_with_properties(vec![filter], sub_props)
        .await
        .unwrap();
    async fn next_publish(ev: &mut EventLoop) -> rumqttc::v5::mqttbytes::v5::Publish {
        loop {
            match tokio::time::timeout(WAIT, ev.poll()).await {
                Ok(Ok(E5::Incoming(P5::Publish(p)))) => return p,
                Ok(Ok(_)) => {}
                other => panic!("no PUBLISH: {other:?}"),
            }
        }
    }
    loop {
        match tokio::time::timeout(WAIT, sub_ev.poll()).await {
            Ok(Ok(E5::Incoming(P5::SubAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("no SUBACK: {other:?}"),
        }
    }

    // Its own message is not delivered back (No Local); the other client's is, with every
    // property, the subscription identifier and the remaining expiry.
    sub.publish("rc/self", Q5::AtLeastOnce, false, "mine")
        .await
        .unwrap();
    let props = PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(60),
        content_type: Some("text/plain".into()),
        response_topic: Some("rc/replies".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"req-1")),
        user_properties: vec![("b".into(), "2".into()), ("a".into(), "1".into())],
        ..Default::default()
    };
    publ.publish_with_properties("rc/theirs", Q5::AtLeastOnce, false, "hello", props)
        .await
        .unwrap();
    let got = next_publish(&mut sub_ev).await;
    assert_eq!(&got.topic[..], b"rc/theirs", "No Local skipped rc/self");
    assert!(!got.retain);
    let p = got.properties.expect("properties");
    assert_eq!(p.payload_format_indicator, Some(1));
    assert_eq!(p.content_type.as_deref(), Some("text/plain"));
    assert_eq!(p.response_topic.as_deref(), Some("rc/replies"));
    assert_eq!(p.correlation_data.as_deref(), Some(&b"req-1"[..]));
    assert_eq!(
        p.user_properties,
        vec![("b".into(), "2".into()), ("a".into(), "1".into())]
    );
    assert_eq!(p.subscription_identifiers, vec![7]);
    assert!(matches!(p.message_expiry_interval, Some(58..=60)));

    // Retain As Published: a live retained message keeps RETAIN=1.
    publ.publish("rc/state", Q5::AtLeastOnce, true, "on")
        .await
        .unwrap();
    let got = next_publish(&mut sub_ev).await;
    assert_eq!(&got.topic[..], b"rc/state");
    assert!(got.retain);
}

#[test]
fn mqtt5_3_3_2_4_payload_format_indicator_0_is_forwarded_unaltered() {
    let broker = Broker::start("");
    let mut sub = V5::connected(broker.addr(), "sub", &[]);
    sub.subscribe(1, &[("pfi/#", 0)], None);
    let mut p = V5::connected(broker.addr(), "pub", &[]);
    p.send(&publish5(
        "pfi/zero",
        0,
        0,
        false,
        &[Prop::Byte(PAYLOAD_FORMAT, 0)],
        &[0xFF, 0xFE],
    ));
    p.send(&publish5("pfi/none", 0, 0, false, &[], b"x"));
    let zero = sub.next_publish();
    assert_eq!(
        zero.prop(PAYLOAD_FORMAT),
        Some(&Prop::Byte(PAYLOAD_FORMAT, 0))
    );
    assert_eq!(zero.payload, [0xFF, 0xFE], "not checked as UTF-8");
    assert!(sub.next_publish().prop(PAYLOAD_FORMAT).is_none());
}
