//! Fuzzing helpers shared by tests/fuzz_codec.rs and tests/fuzz_connection.rs: proptest
//! strategies for valid client packets of MQTT 3.1, 3.1.1 and 5.0 (every packet type a
//! client sends, with properties), an encoder of those packets to bytes (the codec only
//! encodes what a server sends), mutations of encoded sequences, and a runner bounded by a
//! case count and a time budget that reports how many cases it tried.
//!
//! Knobs (scripts/fuzz.sh sets them): `MIDGE_FUZZ_CASES` (cases per target; each target
//! has a small default so `cargo test` stays fast) and `MIDGE_FUZZ_SECONDS` (time budget
//! per target; the run stops at whichever comes first).
#![allow(dead_code)]

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use midge::codec::{
    self, Ack, Connect, ConnectProps, DecodeError, Disconnect, MessageProps, Packet,
    ProtocolVersion, Publish, QoS, Subscribe, SubscriptionOptions, Unsubscribe, Will,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

/// Runs `test` on values of `strategy` until `MIDGE_FUZZ_CASES` (or `default_cases`)
/// cases passed or `MIDGE_FUZZ_SECONDS` ran out, in batches of fresh random seeds; panics
/// with the shrunk failing input. Prints and returns the number of cases tried.
pub fn run<S, F>(name: &str, default_cases: u64, strategy: S, test: F) -> u64
where
    S: Strategy,
    S::Value: std::fmt::Debug,
    F: Fn(S::Value) -> Result<(), TestCaseError>,
{
    let cases = env_u64("MIDGE_FUZZ_CASES").unwrap_or(default_cases).max(1);
    let budget = env_u64("MIDGE_FUZZ_SECONDS").map(Duration::from_secs);
    let started = Instant::now();
    let mut done = 0u64;
    while done < cases {
        if budget.is_some_and(|b| started.elapsed() >= b) {
            break;
        }
        let batch = (cases - done).min(1000);
        let mut runner = TestRunner::new(Config {
            cases: u32::try_from(batch).unwrap_or(1000),
            // Regressions are kept as explicit tests with their bytes, not in files.
            failure_persistence: None,
            max_shrink_iters: 2000,
            ..Config::default()
        });
        match runner.run(&strategy, &test) {
            Ok(()) => done += batch,
            Err(TestError::Fail(why, value)) => {
                panic!("fuzz {name}: failed after {done} cases: {why}\nminimal input: {value:?}")
            }
            Err(TestError::Abort(why)) => panic!("fuzz {name}: aborted: {why}"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fuzz {name}: {done} cases in {secs:.1} s ({:.0}/s), 0 failures",
        done as f64 / secs.max(1e-9)
    );
    done
}

fn env_u64(key: &str) -> Option<u64> {
    std::env::var(key).ok()?.trim().parse().ok()
}

// ---------------------------------------------------------------------------------------
// Valid packets.
// ---------------------------------------------------------------------------------------

/// A UTF-8 string without U+0000, short, with multi-byte characters now and then.
pub fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9/_ .\u{e9}\u{4e2d}\u{1f600}-]{0,10}"
}

/// A topic name or filter made of a few levels that often collide between cases.
pub fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!["a", "b", "", "fz", "+", "#", "$SYS", "x\u{e9}"]),
        1..4,
    )
    .prop_map(|levels| levels.join("/"))
}

fn binary() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..12).prop_map(Bytes::from)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop::sample::select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn user_properties() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((text(), text()), 0..3)
}

/// Message properties as the decoder returns them: `None` when nothing was sent.
fn message_props() -> impl Strategy<Value = Option<Box<MessageProps>>> {
    (
        prop::option::of(any::<bool>()),
        prop::option::of(any::<u32>()),
        prop::option::of(text()),
        // Non-empty and without wildcards [MQTT-4.7.3-1] [MQTT-3.3.2-14].
        prop::option::of("[a-z/]{1,8}"),
        prop::option::of(binary()),
        user_properties(),
    )
        .prop_map(
            |(payload_format, message_expiry, content_type, response_topic, corr, user)| {
                let p = MessageProps {
                    payload_format,
                    message_expiry,
                    content_type,
                    response_topic,
                    correlation_data: corr,
                    user_properties: user,
                };
                (p != MessageProps::default()).then(|| Box::new(p))
            },
        )
}

/// MQTT 5.0 message properties that the decoder reads back as sent (for the
/// store's `encode_message_props` / `decode_message_props` round trip).
pub fn some_message_props() -> impl Strategy<Value = Option<Box<MessageProps>>> {
    message_props()
}

fn connect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version == ProtocolVersion::V5;
    let props = (
        any::<u32>(),
        1..=u16::MAX,
        prop::option::of(1..=u32::MAX),
        any::<u16>(),
        any::<bool>(),
        any::<bool>(),
        user_properties(),
        prop::option::of(text()),
    )
        .prop_map(|(se, rm, mps, tam, rri, rpi, user, method)| ConnectProps {
            session_expiry: se,
            receive_maximum: rm,
            maximum_packet_size: mps,
            topic_alias_maximum: tam,
            request_response_information: rri,
            request_problem_information: rpi,
            user_properties: user,
            authentication_method: method,
        });
    let will = (
        topic(),
        binary(),
        qos(),
        any::<bool>(),
        any::<u32>(),
        message_props(),
    )
        .prop_map(move |(topic, payload, qos, retain, delay, props)| Will {
            topic,
            payload,
            qos,
            retain,
            delay: if v5 { delay } else { 0 },
            props: if v5 { props } else { None },
        });
    (
        any::<bool>(),
        any::<u16>(),
        "[a-zA-Z0-9-]{0,12}",
        prop::option::of(will),
        prop::option::of(text()),
        prop::option::of(binary()),
        props,
    )
        .prop_map(
            move |(clean, keep_alive, client_id, will, username, password, props)| {
                // 3.1 and 3.1.1 refuse a password without a username [MQTT-3.1.2-22].
                let password = if v5 || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Connect {
                    version,
                    clean_session: clean,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    props: if v5 { props } else { ConnectProps::default() },
                })
            },
        )
}

fn publish(v5: bool) -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic(),
        1..=u16::MAX,
        binary(),
        prop::option::of(any::<u16>()),
        message_props(),
    )
        .prop_map(
            move |(dup, qos, retain, topic, pkid, payload, alias, props)| {
                let q0 = qos == QoS::AtMostOnce;
                Packet::Publish(Publish {
                    dup: dup && !q0,
                    qos,
                    retain,
                    topic,
                    pkid: if q0 { 0 } else { pkid },
                    payload,
                    topic_alias: if v5 { alias } else { None },
                    props: if v5 { props } else { None },
                })
            },
        )
}

const PUBACK_REASONS: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_REASONS: &[u8] = &[0x00, 0x92];
const DISCONNECT_REASONS: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8C, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94,
    0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];

fn ack(v5: bool) -> impl Strategy<Value = Packet> {
    (0..4u8, any::<u16>(), any::<Index>()).prop_map(move |(kind, pkid, reason)| {
        let table = if kind < 2 {
            PUBACK_REASONS
        } else {
            PUBREL_REASONS
        };
        let reason = if v5 { *reason.get(table) } else { 0 };
        let a = Ack { pkid, reason };
        match kind {
            0 => Packet::PubAck(a),
            1 => Packet::PubRec(a),
            2 => Packet::PubRel(a),
            _ => Packet::PubComp(a),
        }
    })
}

fn subscribe(v5: bool) -> impl Strategy<Value = Packet> {
    let options =
        (qos(), any::<bool>(), any::<bool>(), 0..3u8).prop_map(move |(qos, no_local, rap, rh)| {
            if v5 {
                SubscriptionOptions {
                    qos,
                    no_local,
                    retain_as_published: rap,
                    retain_handling: rh,
                }
            } else {
                SubscriptionOptions::qos(qos)
            }
        });
    (
        1..=u16::MAX,
        prop::collection::vec((topic(), options), 1..4),
        prop::option::of(1..=268_435_455u32),
    )
        .prop_map(move |(pkid, filters, id)| {
            Packet::Subscribe(Subscribe {
                pkid,
                filters,
                subscription_id: if v5 { id } else { None },
            })
        })
}

fn unsubscribe() -> impl Strategy<Value = Packet> {
    (1..=u16::MAX, prop::collection::vec(topic(), 1..4))
        .prop_map(|(pkid, filters)| Packet::Unsubscribe(Unsubscribe { pkid, filters }))
}

fn disconnect(v5: bool) -> impl Strategy<Value = Packet> {
    (any::<Index>(), prop::option::of(any::<u32>())).prop_map(move |(reason, expiry)| {
        Packet::Disconnect(if v5 {
            Disconnect {
                reason: *reason.get(DISCONNECT_REASONS),
                session_expiry: expiry,
            }
        } else {
            Disconnect {
                reason: 0,
                session_expiry: None,
            }
        })
    })
}

/// Any packet a client may send after its CONNECT (a second CONNECT included: the codec
/// reads it, the connection refuses it).
pub fn packet_after_connect(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = version == ProtocolVersion::V5;
    let common = prop_oneof![
        4 => publish(v5),
        3 => ack(v5),
        2 => subscribe(v5),
        1 => unsubscribe(),
        1 => Just(Packet::PingReq),
        1 => disconnect(v5),
        1 => connect(version),
    ];
    if v5 {
        prop_oneof![9 => common, 1 => prop::sample::select(vec![0u8, 0x18, 0x19]).prop_map(Packet::Auth)].boxed()
    } else {
        common.boxed()
    }
}

/// The protocol versions, 3.1 rarely.
pub fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![
        1 => Just(ProtocolVersion::V31),
        4 => Just(ProtocolVersion::V311),
        5 => Just(ProtocolVersion::V5),
    ]
}

/// Properties the decoder checks and drops (Reason String, User Property, Authentication
/// Data), added by the encoder where the packet allows them, so that their parsing is
/// fuzzed too.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    pub reason_string: Option<String>,
    pub user: Vec<(String, String)>,
    pub auth_data: Option<Vec<u8>>,
}

fn extras() -> impl Strategy<Value = Extras> {
    (
        prop::option::of(text()),
        user_properties(),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..6)),
    )
        .prop_map(|(reason_string, user, auth_data)| Extras {
            reason_string,
            user,
            auth_data,
        })
}

/// A CONNECT of `version` and packets that follow it, each with its extra properties.
pub fn session(
    version: ProtocolVersion,
    max: usize,
) -> impl Strategy<Value = Vec<(Packet, Extras)>> {
    (
        (connect(version), extras()),
        prop::collection::vec((packet_after_connect(version), extras()), 0..max),
    )
        .prop_map(|(first, rest)| {
            let mut all = vec![first];
            all.extend(rest);
            all
        })
}

// ---------------------------------------------------------------------------------------
// Encoding.
// ---------------------------------------------------------------------------------------

pub fn push_varint(out: &mut Vec<u8>, mut v: usize) {
    loop {
        let mut b = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            b |= 0x80;
        }
        out.push(b);
        if v == 0 {
            break;
        }
    }
}

fn put_bin(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

fn frame(byte1: u8, body: Vec<u8>) -> Vec<u8> {
    let mut out = vec![byte1];
    push_varint(&mut out, body.len());
    out.extend(body);
    out
}

/// A property block: its length, then the properties.
fn block(out: &mut Vec<u8>, props: Vec<u8>) {
    push_varint(out, props.len());
    out.extend(props);
}

fn user_props(p: &mut Vec<u8>, user: &[(String, String)]) {
    for (k, v) in user {
        p.push(0x26);
        put_bin(p, k.as_bytes());
        put_bin(p, v.as_bytes());
    }
}

fn message_props_bytes(p: &mut Vec<u8>, m: &MessageProps) {
    if let Some(f) = m.payload_format {
        p.extend([0x01, u8::from(f)]);
    }
    if let Some(e) = m.message_expiry {
        p.push(0x02);
        p.extend(e.to_be_bytes());
    }
    if let Some(c) = &m.content_type {
        p.push(0x03);
        put_bin(p, c.as_bytes());
    }
    if let Some(t) = &m.response_topic {
        p.push(0x08);
        put_bin(p, t.as_bytes());
    }
    if let Some(c) = &m.correlation_data {
        p.push(0x09);
        put_bin(p, c);
    }
    user_props(p, &m.user_properties);
}

fn reason_and_user(p: &mut Vec<u8>, x: &Extras) {
    if let Some(r) = &x.reason_string {
        p.push(0x1F);
        put_bin(p, r.as_bytes());
    }
    user_props(p, &x.user);
}

/// Encodes a client packet the way a client would send it on a connection of `version`.
pub fn encode(packet: &Packet, x: &Extras, v5: bool) -> Vec<u8> {
    match packet {
        Packet::Connect(c) => encode_connect(c, x),
        Packet::Publish(p) => {
            let byte1 = 0x30 | u8::from(p.dup) << 3 | (p.qos as u8) << 1 | u8::from(p.retain);
            let mut body = Vec::new();
            put_bin(&mut body, p.topic.as_bytes());
            if p.qos != QoS::AtMostOnce {
                body.extend(p.pkid.to_be_bytes());
            }
            if v5 {
                let mut props = Vec::new();
                if let Some(a) = p.topic_alias {
                    props.push(0x23);
                    props.extend(a.to_be_bytes());
                }
                if let Some(m) = &p.props {
                    message_props_bytes(&mut props, m);
                }
                block(&mut body, props);
            }
            body.extend_from_slice(&p.payload);
            frame(byte1, body)
        }
        Packet::PubAck(a) => encode_ack(0x40, a, x, v5),
        Packet::PubRec(a) => encode_ack(0x50, a, x, v5),
        Packet::PubRel(a) => encode_ack(0x62, a, x, v5),
        Packet::PubComp(a) => encode_ack(0x70, a, x, v5),
        Packet::Subscribe(s) => {
            let mut body = s.pkid.to_be_bytes().to_vec();
            if v5 {
                let mut props = Vec::new();
                if let Some(id) = s.subscription_id {
                    props.push(0x0B);
                    push_varint(&mut props, id as usize);
                }
                user_props(&mut props, &x.user);
                block(&mut body, props);
            }
            for (f, o) in &s.filters {
                put_bin(&mut body, f.as_bytes());
                body.push(if v5 { o.to_byte() } else { o.qos as u8 });
            }
            frame(0x82, body)
        }
        Packet::Unsubscribe(u) => {
            let mut body = u.pkid.to_be_bytes().to_vec();
            if v5 {
                let mut props = Vec::new();
                user_props(&mut props, &x.user);
                block(&mut body, props);
            }
            for f in &u.filters {
                put_bin(&mut body, f.as_bytes());
            }
            frame(0xA2, body)
        }
        Packet::PingReq => vec![0xC0, 0x00],
        Packet::Disconnect(d) => {
            let mut props = Vec::new();
            if v5 {
                if let Some(e) = d.session_expiry {
                    props.push(0x11);
                    props.extend(e.to_be_bytes());
                }
                reason_and_user(&mut props, x);
            }
            if !v5 || (d.reason == 0 && props.is_empty()) {
                return vec![0xE0, 0x00];
            }
            let mut body = vec![d.reason];
            block(&mut body, props);
            frame(0xE0, body)
        }
        Packet::Auth(reason) => {
            // Only "0x00 without properties" may leave the Authentication Method out.
            if *reason == 0 && x.auth_data.is_none() {
                return vec![0xF0, 0x00];
            }
            let mut props = vec![0x15];
            put_bin(&mut props, b"SCRAM-SHA-1");
            if let Some(d) = &x.auth_data {
                props.push(0x16);
                put_bin(&mut props, d);
            }
            reason_and_user(&mut props, x);
            let mut body = vec![*reason];
            block(&mut body, props);
            frame(0xF0, body)
        }
    }
}

fn encode_ack(byte1: u8, a: &Ack, x: &Extras, v5: bool) -> Vec<u8> {
    let mut body = a.pkid.to_be_bytes().to_vec();
    if v5 {
        let mut props = Vec::new();
        reason_and_user(&mut props, x);
        if a.reason != 0 || !props.is_empty() {
            body.push(a.reason);
        }
        if !props.is_empty() {
            block(&mut body, props);
        }
    }
    frame(byte1, body)
}

fn encode_connect(c: &Connect, x: &Extras) -> Vec<u8> {
    let v5 = c.version == ProtocolVersion::V5;
    let mut body = Vec::new();
    match c.version {
        ProtocolVersion::V31 => {
            put_bin(&mut body, b"MQIsdp");
            body.push(3);
        }
        ProtocolVersion::V311 => {
            put_bin(&mut body, b"MQTT");
            body.push(4);
        }
        ProtocolVersion::V5 => {
            put_bin(&mut body, b"MQTT");
            body.push(5);
        }
    }
    let mut flags = u8::from(c.clean_session) << 1;
    if let Some(w) = &c.will {
        flags |= 0x04 | (w.qos as u8) << 3 | u8::from(w.retain) << 5;
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    body.push(flags);
    body.extend(c.keep_alive.to_be_bytes());
    if v5 {
        let p = &c.props;
        let mut props = Vec::new();
        if p.session_expiry != 0 {
            props.push(0x11);
            props.extend(p.session_expiry.to_be_bytes());
        }
        if p.receive_maximum != u16::MAX {
            props.push(0x21);
            props.extend(p.receive_maximum.to_be_bytes());
        }
        if let Some(m) = p.maximum_packet_size {
            props.push(0x27);
            props.extend(m.to_be_bytes());
        }
        if p.topic_alias_maximum != 0 {
            props.push(0x22);
            props.extend(p.topic_alias_maximum.to_be_bytes());
        }
        if p.request_response_information {
            props.extend([0x19, 1]);
        }
        if !p.request_problem_information {
            props.extend([0x17, 0]);
        }
        user_props(&mut props, &p.user_properties);
        if let Some(m) = &p.authentication_method {
            props.push(0x15);
            put_bin(&mut props, m.as_bytes());
            if let Some(d) = &x.auth_data {
                props.push(0x16);
                put_bin(&mut props, d);
            }
        }
        block(&mut body, props);
    }
    put_bin(&mut body, c.client_id.as_bytes());
    if let Some(w) = &c.will {
        if v5 {
            let mut props = Vec::new();
            if w.delay != 0 {
                props.push(0x18);
                props.extend(w.delay.to_be_bytes());
            }
            if let Some(m) = &w.props {
                message_props_bytes(&mut props, m);
            }
            block(&mut body, props);
        }
        put_bin(&mut body, w.topic.as_bytes());
        put_bin(&mut body, &w.payload);
    }
    if let Some(u) = &c.username {
        put_bin(&mut body, u.as_bytes());
    }
    if let Some(p) = &c.password {
        put_bin(&mut body, p);
    }
    frame(0x10, body)
}

/// Encodes a session (CONNECT first): the bytes a client of that version sends.
pub fn encode_session(packets: &[(Packet, Extras)]) -> Vec<u8> {
    let v5 = matches!(
        packets.first(),
        Some((Packet::Connect(c), _)) if c.version == ProtocolVersion::V5
    );
    let mut out = Vec::new();
    for (p, x) in packets {
        out.extend(encode(p, x, v5));
    }
    out
}

// ---------------------------------------------------------------------------------------
// Mutations.
// ---------------------------------------------------------------------------------------

/// One change to a byte stream. Positions are [`Index`]es, mapped onto the stream's
/// length when applied.
#[derive(Debug, Clone)]
pub enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Truncate(Index),
    /// A byte that is often a length or a property identifier: 0, 0x7F, 0x80, 0xFF, ...
    Interesting(Index, u8),
    /// A varint with continuation bits (a remaining length or property length gone wrong).
    Varint(Index, Vec<u8>),
    /// Copies a slice of the stream to another place (splices packets into packets).
    Splice(Index, Index, Index),
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 0..8u8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        2 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..6)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => (any::<Index>(), 1..6usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        2 => (any::<Index>(), prop::sample::select(vec![0u8, 1, 2, 0x7F, 0x80, 0xFF, 0x26, 0x0B, 0x23, 0x15, 0x11])).prop_map(|(i, b)| Mutation::Interesting(i, b)),
        2 => (any::<Index>(), prop::collection::vec(prop::sample::select(vec![0x80u8, 0xFF, 0x81, 0x7F, 0x00, 0x01]), 1..6)).prop_map(|(i, v)| Mutation::Varint(i, v)),
        1 => (any::<Index>(), any::<Index>(), any::<Index>()).prop_map(|(a, b, c)| Mutation::Splice(a, b, c)),
    ]
}

/// Applies `mutations` in order. Never panics: every position is taken modulo the length.
pub fn apply(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        let len = bytes.len();
        if len == 0 {
            if let Mutation::Insert(_, b) = m {
                bytes.extend_from_slice(b);
            }
            continue;
        }
        match m {
            Mutation::FlipBit(i, bit) => bytes[i.index(len)] ^= 1 << bit,
            Mutation::SetByte(i, b) | Mutation::Interesting(i, b) => bytes[i.index(len)] = *b,
            Mutation::Insert(i, b) => {
                let at = i.index(len + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let at = i.index(len);
                let end = (at + n).min(len);
                bytes.drain(at..end);
            }
            Mutation::Truncate(i) => bytes.truncate(i.index(len)),
            Mutation::Varint(i, v) => {
                let at = i.index(len);
                let end = (at + v.len()).min(len);
                bytes.splice(at..end, v.iter().copied());
            }
            Mutation::Splice(from, n, to) => {
                let start = from.index(len);
                let end = start + n.index(len - start + 1).min(64);
                let piece = bytes[start..end].to_vec();
                let at = to.index(len + 1);
                bytes.splice(at..at, piece);
            }
        }
    }
}

/// A valid session, encoded, then mutated (no mutation a quarter of the time: valid
/// sequences are worth feeding as they are). Returns the version, the valid packets and
/// the bytes.
pub fn mutated_session(max_packets: usize) -> impl Strategy<Value = (ProtocolVersion, Vec<u8>)> {
    version()
        .prop_flat_map(move |v| (Just(v), session(v, max_packets)))
        .prop_flat_map(|(v, s)| {
            let bytes = encode_session(&s);
            (
                Just(v),
                Just(bytes),
                prop_oneof![1 => Just(vec![]), 3 => prop::collection::vec(mutation(), 1..5)],
            )
        })
        .prop_map(|(v, mut bytes, muts)| {
            apply(&mut bytes, &muts);
            (v, bytes)
        })
}

/// Random bytes, usually behind a plausible first byte (a packet type with its flags).
pub fn random_stream() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec![
            0x10u8, 0x30, 0x32, 0x34, 0x3B, 0x40, 0x50, 0x62, 0x70, 0x82, 0xA2, 0xC0, 0xE0, 0xF0,
            0x00, 0xFF,
        ]),
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(first, mut rest)| {
            rest.insert(0, first);
            rest
        })
}

// ---------------------------------------------------------------------------------------
// Decoding as a connection does.
// ---------------------------------------------------------------------------------------

/// The maximum packet size the codec fuzz decodes with by default.
pub const MAX: usize = 1 << 20;

/// What the decoder made of a stream: the packets in order, then the error that ended it
/// (if any).
#[derive(Debug, PartialEq)]
pub struct Outcome {
    pub packets: Vec<Packet>,
    pub error: Option<DecodeError>,
    /// Bytes left over without an error: the beginning of a packet still waiting for the
    /// rest. (After an error the connection closes: what is left does not matter, and
    /// depends on how much had arrived.)
    pub left: usize,
}

/// Feeds `bytes` to the decoder in pieces of the sizes in `chunks` (cycled; empty = all at
/// once), the way connection.rs does: `decode` until a CONNECT of MQTT 5.0 switches the
/// connection to `decode_v5` (or from the start when `v5_from_start`). Checks the
/// decoder's contract on the way: a packet consumes bytes, `Ok(None)` consumes none.
pub fn decode_stream(
    bytes: &[u8],
    chunks: &[usize],
    max: usize,
    v5_from_start: bool,
) -> Result<Outcome, TestCaseError> {
    let mut buf = BytesMut::new();
    let mut v5 = v5_from_start;
    let mut out = Outcome {
        packets: Vec::new(),
        error: None,
        left: 0,
    };
    let mut pos = 0;
    let mut piece = 0;
    while pos < bytes.len() {
        let n = if chunks.is_empty() {
            bytes.len()
        } else {
            chunks[piece % chunks.len()].max(1)
        };
        piece += 1;
        let end = (pos + n).min(bytes.len());
        buf.extend_from_slice(&bytes[pos..end]);
        pos = end;
        loop {
            let before = buf.len();
            let res = if v5 {
                codec::decode_v5(&mut buf, max)
            } else {
                codec::decode(&mut buf, max)
            };
            match res {
                Ok(Some(p)) => {
                    prop_assert!(buf.len() + 2 <= before, "a packet is at least 2 bytes");
                    if out.packets.is_empty() {
                        if let Packet::Connect(c) = &p {
                            v5 |= c.version == ProtocolVersion::V5;
                        }
                    }
                    out.packets.push(p);
                }
                Ok(None) => {
                    prop_assert_eq!(buf.len(), before, "Ok(None) must not consume");
                    break;
                }
                Err(e) => {
                    out.error = Some(e);
                    return Ok(out);
                }
            }
        }
    }
    out.left = buf.len();
    Ok(out)
}
