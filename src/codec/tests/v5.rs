//! Unit tests of the MQTT 5.0 codec: every packet and property decoded and round-tripped,
//! every Malformed Packet / Protocol Error case with its variant, byte-exact encodings and
//! randomized no-panic runs.

use bytes::{BufMut, Bytes, BytesMut};

use super::super::*;
use super::{connect_payload, frame, s, varint};
use crate::testing::XorShift;

const MAX: usize = 1 << 22;

// ---------------------------------------------------------------- helpers

fn p_u8(id: u8, v: u8) -> Vec<u8> {
    vec![id, v]
}

fn p_u16(id: u8, v: u16) -> Vec<u8> {
    let mut out = vec![id];
    out.extend_from_slice(&v.to_be_bytes());
    out
}

fn p_u32(id: u8, v: u32) -> Vec<u8> {
    let mut out = vec![id];
    out.extend_from_slice(&v.to_be_bytes());
    out
}

fn p_str(id: u8, v: &[u8]) -> Vec<u8> {
    let mut out = vec![id];
    out.extend_from_slice(&s(v));
    out
}

fn p_pair(k: &[u8], v: &[u8]) -> Vec<u8> {
    let mut out = vec![0x26];
    out.extend_from_slice(&s(k));
    out.extend_from_slice(&s(v));
    out
}

fn p_varint(id: u8, v: usize) -> Vec<u8> {
    let mut out = vec![id];
    out.extend_from_slice(&varint(v));
    out
}

/// A property block: its length, then the properties.
fn block(props: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = props.concat();
    let mut out = varint(body.len());
    out.extend_from_slice(&body);
    out
}

fn decode5_all(bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let res = decode_v5(&mut buf, MAX);
    if let Ok(Some(_)) = res {
        assert!(buf.is_empty(), "decode_v5 left {} bytes", buf.len());
    }
    res
}

fn decode5(bytes: &[u8]) -> Packet {
    match decode5_all(bytes) {
        Ok(Some(p)) => p,
        other => panic!("expected a packet from {bytes:02x?}, got {other:?}"),
    }
}

#[track_caller]
fn malformed5(bytes: &[u8]) {
    match decode5_all(bytes) {
        Err(DecodeError::Malformed(_)) => {}
        other => panic!("expected Malformed for {bytes:02x?}, got {other:?}"),
    }
}

#[track_caller]
fn protocol5(bytes: &[u8]) {
    match decode5_all(bytes) {
        Err(DecodeError::ProtocolError(_)) => {}
        other => panic!("expected ProtocolError for {bytes:02x?}, got {other:?}"),
    }
}

/// Independent reader of a property block, for checking encoders: `(identifier, value
/// bytes)` in order, by the types of Table 2-4.
fn read_props(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some((&id, rest)) = b.split_first() {
        b = rest;
        let len = match id {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            0x13 | 0x21 | 0x22 | 0x23 => 2,
            0x02 | 0x11 | 0x18 | 0x27 => 4,
            0x0B => b.iter().position(|&x| x & 0x80 == 0).unwrap() + 1,
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => {
                2 + usize::from(u16::from_be_bytes([b[0], b[1]]))
            }
            0x26 => {
                let k = 2 + usize::from(u16::from_be_bytes([b[0], b[1]]));
                k + 2 + usize::from(u16::from_be_bytes([b[k], b[k + 1]]))
            }
            _ => panic!("unknown property {id:#x}"),
        };
        out.push((id, b[..len].to_vec()));
        b = &b[len..];
    }
    out
}

/// Splits a packet into (first byte, body) after checking its remaining length.
fn split_frame(pkt: &[u8]) -> (u8, &[u8]) {
    let mut len = 0usize;
    let mut i = 1;
    loop {
        len |= usize::from(pkt[i] & 0x7F) << (7 * (i - 1));
        i += 1;
        if pkt[i - 1] & 0x80 == 0 {
            break;
        }
    }
    assert_eq!(pkt.len() - i, len, "remaining length of {pkt:02x?}");
    (pkt[0], &pkt[i..])
}

/// Reads a varint-prefixed property block at the start of `b`: (properties, rest).
fn split_props(b: &[u8]) -> (Vec<(u8, Vec<u8>)>, &[u8]) {
    let mut len = 0usize;
    let mut i = 0;
    loop {
        len |= usize::from(b[i] & 0x7F) << (7 * i);
        i += 1;
        if b[i - 1] & 0x80 == 0 {
            break;
        }
    }
    (read_props(&b[i..i + len]), &b[i + len..])
}

// ---------------------------------------------------------------- CONNECT

/// Will properties, topic and payload.
type Will5<'a> = (Vec<Vec<u8>>, &'a [u8], &'a [u8]);

#[derive(Default)]
struct Connect5<'a> {
    flags: u8,
    props: Vec<Vec<u8>>,
    client_id: &'a [u8],
    will: Option<Will5<'a>>,
    username: Option<&'a [u8]>,
    password: Option<&'a [u8]>,
}

fn connect5_body(c: &Connect5) -> Vec<u8> {
    let mut b = s(b"MQTT");
    b.push(5);
    b.push(c.flags);
    b.extend_from_slice(&30u16.to_be_bytes());
    b.extend_from_slice(&block(&c.props));
    let will_props = c.will.as_ref().map(|(props, _, _)| block(props));
    let will = c
        .will
        .as_ref()
        .map(|(_, topic, payload)| (will_props.as_deref(), *topic, *payload));
    connect_payload(&mut b, c.client_id, will, c.username, c.password);
    b
}

fn connect5(c: &Connect5) -> Vec<u8> {
    frame(0x10, &connect5_body(c))
}

fn full_connect5() -> Vec<u8> {
    connect5(&Connect5 {
        flags: 0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02,
        props: vec![
            p_u32(0x11, 3600),
            p_u16(0x21, 10),
            p_u32(0x27, 65536),
            p_u16(0x22, 5),
            p_u8(0x19, 1),
            p_u8(0x17, 0),
            p_pair(b"k1", b"v1"),
            p_pair(b"k1", b"v2"),
            p_str(0x15, b"SCRAM-SHA-1"),
            p_str(0x16, b"\x00\xFFdata"),
        ],
        client_id: b"dev-5",
        will: Some((
            vec![
                p_u32(0x18, 120),
                p_u8(0x01, 1),
                p_u32(0x02, 60),
                p_str(0x03, b"text/plain"),
                p_str(0x08, b"reply/here"),
                p_str(0x09, b"\x00\x01\x02"),
                p_pair(b"b", b"2"),
                p_pair(b"a", b"1"),
            ],
            b"will/topic",
            b"bye",
        )),
        username: Some(b"user"),
        password: Some(b"pw"),
    })
}

#[test]
fn connect_v5_all_properties() {
    let expected = Connect {
        version: ProtocolVersion::V5,
        clean_session: true,
        keep_alive: 30,
        client_id: "dev-5".into(),
        will: Some(Will {
            topic: "will/topic".into(),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: true,
            delay: 120,
            props: Some(Box::new(MessageProps {
                payload_format: Some(true),
                message_expiry: Some(60),
                content_type: Some("text/plain".into()),
                response_topic: Some("reply/here".into()),
                correlation_data: Some(Bytes::from_static(b"\x00\x01\x02")),
                user_properties: vec![("b".into(), "2".into()), ("a".into(), "1".into())].into(),
            })),
        }),
        username: Some("user".into()),
        password: Some(Bytes::from_static(b"pw")),
        props: ConnectProps {
            session_expiry: 3600,
            receive_maximum: 10,
            maximum_packet_size: Some(65536),
            topic_alias_maximum: 5,
            request_response_information: true,
            request_problem_information: false,
            user_property_count: 2,
            authentication_method: Some("SCRAM-SHA-1".into()),
        },
    };
    let pkt = full_connect5();
    assert_eq!(decode5(&pkt), Packet::Connect(expected.clone()));
    // The 3.1.1 entry point reads the same CONNECT (a connection starts with `decode`).
    let mut buf = BytesMut::from(&pkt[..]);
    assert_eq!(decode(&mut buf, MAX), Ok(Some(Packet::Connect(expected))));
}

#[test]
fn connect_v5_defaults() {
    let p = decode5(&connect5(&Connect5 {
        flags: 0x04,
        client_id: b"",
        will: Some((vec![], b"w", b"")),
        ..Default::default()
    }));
    let Packet::Connect(c) = p else {
        panic!("{p:?}")
    };
    assert_eq!(c.version, ProtocolVersion::V5);
    assert_eq!(c.props, ConnectProps::default());
    let will = c.will.unwrap();
    assert_eq!((will.delay, will.props), (0, None));
    // A Payload Format Indicator of 0 is kept, to be forwarded unaltered [MQTT-3.3.2-4].
    let p = decode5(&connect5(&Connect5 {
        flags: 0x04,
        will: Some((vec![p_u8(0x01, 0)], b"w", b"")),
        ..Default::default()
    }));
    assert!(
        matches!(p, Packet::Connect(c) if c.will.as_ref().unwrap().props.as_ref().unwrap().payload_format == Some(false))
    );
}

#[test]
fn connect_v5_flags() {
    // Reserved flag, will QoS / retain without will, will QoS 3: Malformed as in 3.1.1.
    for flags in [0x01, 0x03, 0x08, 0x10, 0x20, 0x30] {
        malformed5(&connect5(&Connect5 {
            flags,
            ..Default::default()
        }));
    }
    malformed5(&connect5(&Connect5 {
        flags: 0x18 | 0x04,
        will: Some((vec![], b"w", b"")),
        ..Default::default()
    }));
    // A password without a username is allowed in 5.0.
    let p = decode5(&connect5(&Connect5 {
        flags: 0x40,
        password: Some(b"token"),
        ..Default::default()
    }));
    assert!(matches!(p, Packet::Connect(c)
        if c.username.is_none() && c.password.as_deref() == Some(&b"token"[..])));
    // Username / password flags without the fields.
    malformed5(&connect5(&Connect5 {
        flags: 0x80,
        ..Default::default()
    }));
    malformed5(&connect5(&Connect5 {
        flags: 0x40,
        ..Default::default()
    }));
}

#[test]
fn connect_v5_protocol_errors() {
    let cases: Vec<Vec<Vec<u8>>> = vec![
        vec![p_u16(0x21, 0)],
        vec![p_u32(0x27, 0)],
        vec![p_u8(0x17, 2)],
        vec![p_u8(0x19, 2)],
        vec![p_u8(0x19, 0xFF)],
        vec![p_u32(0x11, 1), p_u32(0x11, 1)],
        vec![p_u16(0x21, 1), p_u16(0x21, 2)],
        vec![p_u32(0x27, 9), p_u32(0x27, 9)],
        vec![p_u16(0x22, 1), p_u16(0x22, 1)],
        vec![p_u8(0x17, 1), p_u8(0x17, 1)],
        vec![p_u8(0x19, 1), p_u8(0x19, 1)],
        vec![p_str(0x15, b"m"), p_str(0x15, b"m")],
        vec![p_str(0x15, b"m"), p_str(0x16, b"d"), p_str(0x16, b"d")],
        // Authentication Data without Authentication Method.
        vec![p_str(0x16, b"d")],
    ];
    for props in cases {
        protocol5(&connect5(&Connect5 {
            props,
            ..Default::default()
        }));
    }
    let will_cases: Vec<Vec<Vec<u8>>> = vec![
        vec![p_u32(0x18, 1), p_u32(0x18, 1)],
        vec![p_u8(0x01, 2)],
        vec![p_u8(0x01, 1), p_u8(0x01, 1)],
        vec![p_u32(0x02, 1), p_u32(0x02, 1)],
        vec![p_str(0x03, b"a"), p_str(0x03, b"a")],
        vec![p_str(0x08, b"a"), p_str(0x08, b"b")],
        vec![p_str(0x09, b"a"), p_str(0x09, b"b")],
        vec![p_str(0x08, b"a/+")],
        vec![p_str(0x08, b"#")],
        vec![p_str(0x08, b"")],
    ];
    for props in will_cases {
        protocol5(&connect5(&Connect5 {
            flags: 0x04,
            will: Some((props, b"w", b"p")),
            ..Default::default()
        }));
    }
    // Repeated user properties are fine, same name included.
    let p = decode5(&connect5(&Connect5 {
        props: vec![p_pair(b"a", b"1"), p_pair(b"a", b"1"), p_pair(b"", b"")],
        ..Default::default()
    }));
    assert!(matches!(p, Packet::Connect(c) if c.props.user_property_count == 3));
}

#[test]
fn connect_v5_malformed_properties() {
    // Identifiers not valid in CONNECT: will-only, PUBLISH-only, server-only, undefined.
    for id in [
        0x01u8, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x12, 0x13, 0x18, 0x1A, 0x1C, 0x1F, 0x23, 0x24, 0x25,
        0x28, 0x29, 0x2A, 0x00, 0x04, 0x2B, 0x7F, 0x80, 0xFF,
    ] {
        malformed5(&connect5(&Connect5 {
            props: vec![vec![id, 0, 0, 0, 0]],
            ..Default::default()
        }));
    }
    // Identifiers not valid in the will properties.
    for id in [
        0x11u8, 0x21, 0x27, 0x22, 0x19, 0x17, 0x15, 0x16, 0x0B, 0x23, 0x1F,
    ] {
        malformed5(&connect5(&Connect5 {
            flags: 0x04,
            will: Some((vec![vec![id, 0, 1, 0, 1]], b"w", b"p")),
            ..Default::default()
        }));
    }
    // Bad strings in properties.
    for bad in [&b"a\0"[..], &[0xFF], &[0xC3, 0x28], &[0xED, 0xA0, 0x80]] {
        malformed5(&connect5(&Connect5 {
            props: vec![p_pair(bad, b"v")],
            ..Default::default()
        }));
        malformed5(&connect5(&Connect5 {
            props: vec![p_pair(b"k", bad)],
            ..Default::default()
        }));
        malformed5(&connect5(&Connect5 {
            props: vec![p_str(0x15, bad)],
            ..Default::default()
        }));
        malformed5(&connect5(&Connect5 {
            flags: 0x04,
            will: Some((vec![p_str(0x03, bad)], b"w", b"p")),
            ..Default::default()
        }));
        malformed5(&connect5(&Connect5 {
            client_id: bad,
            ..Default::default()
        }));
    }
    // A property length beyond the packet, a truncated value inside the block, a 5-byte
    // property length.
    let mut body = s(b"MQTT");
    body.extend_from_slice(&[5, 0x02, 0, 30]);
    let head = body.clone();
    body.extend_from_slice(&[0x20]);
    body.extend_from_slice(&s(b"c"));
    malformed5(&frame(0x10, &body));
    let mut body = head.clone();
    body.extend_from_slice(&[3, 0x11, 0, 0]);
    body.extend_from_slice(&s(b"c"));
    malformed5(&frame(0x10, &body));
    let mut body = head.clone();
    body.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x00]);
    body.extend_from_slice(&s(b"c"));
    malformed5(&frame(0x10, &body));
    // Missing property length altogether.
    malformed5(&frame(0x10, &head));
}

#[test]
fn connect_v5_every_truncation_is_malformed() {
    let pkt = full_connect5();
    let (_, body) = split_frame(&pkt);
    for cut in 0..body.len() {
        malformed5(&frame(0x10, &body[..cut]));
    }
    let mut long = body.to_vec();
    long.push(0);
    malformed5(&frame(0x10, &long));
}

#[test]
fn connect_will_props_do_not_pin_the_frame() {
    let pkt = full_connect5();
    let Packet::Connect(c) = decode5(&pkt) else {
        panic!()
    };
    let will = c.will.unwrap();
    let data = will.props.unwrap().correlation_data.unwrap();
    let range = pkt.as_ptr() as usize..pkt.as_ptr() as usize + pkt.len();
    assert!(!range.contains(&(data.as_ptr() as usize)));
}

// ---------------------------------------------------------------- PUBLISH

fn publish5(
    byte1: u8,
    topic: &[u8],
    pkid: Option<u16>,
    props: &[Vec<u8>],
    payload: &[u8],
) -> Vec<u8> {
    let mut b = s(topic);
    if let Some(id) = pkid {
        b.extend_from_slice(&id.to_be_bytes());
    }
    b.extend_from_slice(&block(props));
    b.extend_from_slice(payload);
    frame(byte1, &b)
}

fn all_message_props() -> MessageProps {
    MessageProps {
        payload_format: Some(true),
        message_expiry: Some(u32::MAX),
        content_type: Some("application/json; charset=☃".into()),
        response_topic: Some("resp/☃/x".into()),
        correlation_data: Some(Bytes::from_static(&[0, 0xFF, 0x80])),
        user_properties: [("z", "1"), ("a", ""), ("z", "0")].into_iter().collect(),
    }
}

#[test]
fn publish_v5_decodes_every_property() {
    let pkt = publish5(
        0x3B,
        b"a/b",
        Some(7),
        &[
            p_u8(0x01, 1),
            p_u32(0x02, 30),
            p_u16(0x23, 4),
            p_str(0x08, b"r/t"),
            p_str(0x09, b"\x01\x02"),
            p_pair(b"x", b"1"),
            p_str(0x03, b"ct"),
            p_pair(b"w", b"2"),
        ],
        b"payload",
    );
    assert_eq!(
        decode5(&pkt),
        Packet::Publish(Publish {
            dup: true,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "a/b".into(),
            pkid: 7,
            payload: Bytes::from_static(b"payload"),
            topic_alias: Some(4),
            props: Some(Box::new(MessageProps {
                payload_format: Some(true),
                message_expiry: Some(30),
                content_type: Some("ct".into()),
                response_topic: Some("r/t".into()),
                correlation_data: Some(Bytes::from_static(b"\x01\x02")),
                user_properties: vec![("x".into(), "1".into()), ("w".into(), "2".into())].into(),
            })),
        })
    );
}

#[test]
fn publish_v5_without_properties() {
    let p = decode5(&publish5(0x30, b"t", None, &[], b""));
    assert_eq!(
        p,
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "t".into(),
            pkid: 0,
            payload: Bytes::new(),
            topic_alias: None,
            props: None,
        })
    );
    // The property length is not optional in 5.0.
    malformed5(&frame(0x30, &s(b"t")));
    let mut body = s(b"t");
    body.extend_from_slice(&[0, 1]);
    malformed5(&frame(0x32, &body));
}

#[test]
fn publish_v5_topic_alias_and_empty_topic_pass_through() {
    for alias in [0u16, 1, 10, u16::MAX] {
        let p = decode5(&publish5(0x30, b"", None, &[p_u16(0x23, alias)], b"x"));
        assert!(
            matches!(p, Packet::Publish(p) if p.topic.is_empty() && p.topic_alias == Some(alias))
        );
    }
    let p = decode5(&publish5(0x30, b"", None, &[], b"x"));
    assert!(matches!(p, Packet::Publish(p) if p.topic.is_empty() && p.topic_alias.is_none()));
    // Wildcards in the topic are the handler's business too.
    let p = decode5(&publish5(0x30, b"a/#", None, &[], b""));
    assert!(matches!(p, Packet::Publish(p) if &*p.topic == "a/#"));
}

#[test]
fn publish_v5_payload_is_copied_when_small_and_shares_the_frame_when_large() {
    for (size, shared) in [(8, false), (COPY_PAYLOAD_BELOW, true)] {
        let payload = vec![b'x'; size];
        let pkt = publish5(0x30, b"t", None, &[p_pair(b"k", b"v")], &payload);
        let mut buf = BytesMut::from(&pkt[..]);
        let start = buf.as_ptr() as usize;
        let Some(Packet::Publish(p)) = decode_v5(&mut buf, usize::MAX).unwrap() else {
            panic!()
        };
        assert_eq!(&p.payload[..], &payload[..]);
        let in_frame = p.payload.as_ptr() as usize == start + pkt.len() - size;
        assert_eq!(in_frame, shared, "payload of {size} bytes");
    }
}

#[test]
fn publish_v5_protocol_errors() {
    let cases: Vec<Vec<Vec<u8>>> = vec![
        // Subscription Identifier from a client [MQTT-3.3.4-6], whatever its value.
        vec![p_varint(0x0B, 1)],
        vec![p_varint(0x0B, 0)],
        vec![p_varint(0x0B, 268_435_455)],
        vec![p_u8(0x01, 2)],
        vec![p_u8(0x01, 0), p_u8(0x01, 0)],
        vec![p_u32(0x02, 1), p_u32(0x02, 2)],
        vec![p_u16(0x23, 1), p_u16(0x23, 1)],
        vec![p_str(0x08, b"a"), p_str(0x08, b"a")],
        vec![p_str(0x09, b""), p_str(0x09, b"")],
        vec![p_str(0x03, b""), p_str(0x03, b"")],
        vec![p_str(0x08, b"a/+/b")],
        vec![p_str(0x08, b"a/#")],
        vec![p_str(0x08, b"")],
    ];
    for props in cases {
        protocol5(&publish5(0x30, b"t", None, &props, b"x"));
        protocol5(&publish5(0x34, b"t", Some(1), &props, b"x"));
    }
}

#[test]
fn publish_v5_malformed() {
    // Identifiers not valid in PUBLISH.
    for id in [
        0x00u8, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x24,
        0x25, 0x27, 0x28, 0x29, 0x2A, 0x2B, 0x40, 0x81, 0xFF,
    ] {
        malformed5(&publish5(0x30, b"t", None, &[vec![id, 0, 0, 0, 0]], b""));
    }
    // Bad strings.
    for bad in [&b"a\0"[..], &[0xFF], &[0xED, 0xBF, 0xBF]] {
        malformed5(&publish5(0x30, bad, None, &[], b""));
        malformed5(&publish5(0x30, b"t", None, &[p_str(0x03, bad)], b""));
        malformed5(&publish5(0x30, b"t", None, &[p_str(0x08, bad)], b""));
        malformed5(&publish5(0x30, b"t", None, &[p_pair(bad, b"")], b""));
        malformed5(&publish5(0x30, b"t", None, &[p_pair(b"", bad)], b""));
    }
    // Property length beyond the packet, truncated block, 5-byte property length.
    let mut body = s(b"t");
    body.extend_from_slice(&[10, 0x01, 1]);
    malformed5(&frame(0x30, &body));
    let mut body = s(b"t");
    body.extend_from_slice(&[2, 0x02, 0, 0, 0]);
    malformed5(&frame(0x30, &body));
    let mut body = s(b"t");
    body.extend_from_slice(&[3, 0x26, 0, 5, b'a']);
    malformed5(&frame(0x30, &body));
    let mut body = s(b"t");
    body.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0x7F]);
    malformed5(&frame(0x30, &body));
    // A Subscription Identifier varint of five bytes is malformed before anything else.
    let mut body = s(b"t");
    body.extend_from_slice(&[6, 0x0B, 0x80, 0x80, 0x80, 0x80, 0x01]);
    malformed5(&frame(0x30, &body));
    // Packet identifier 0, QoS 3, DUP on QoS 0.
    malformed5(&publish5(0x32, b"t", Some(0), &[], b""));
    malformed5(&publish5(0x36, b"t", Some(1), &[], b""));
    malformed5(&publish5(0x38, b"t", None, &[], b""));
}

// ---------------------------------------------------------------- PUBLISH encoding

fn publish_out<'a>(props: Option<&'a MessageProps>, ids: &'a [u32]) -> PublishOut<'a> {
    PublishOut {
        topic: "a/b",
        qos: QoS::AtLeastOnce,
        retain: false,
        dup: false,
        pkid: 0x0102,
        topic_alias: None,
        props,
        message_expiry: None,
        subscription_ids: ids,
    }
}

#[test]
fn publish_v5_encoding_is_byte_exact() {
    let mut buf = BytesMut::new();
    encode_publish_v5(&mut buf, &publish_out(None, &[]), b"hi");
    assert_eq!(
        &buf[..],
        &[0x32, 10, 0, 3, b'a', b'/', b'b', 1, 2, 0, b'h', b'i']
    );
    // QoS 0: no packet identifier, no DUP; topic alias and subscription identifiers.
    let mut p = publish_out(None, &[1, 128, 268_435_455]);
    p.qos = QoS::AtMostOnce;
    p.dup = true;
    p.retain = true;
    p.topic = "";
    p.topic_alias = Some(0x0A0B);
    let mut buf = BytesMut::new();
    encode_publish_v5(&mut buf, &p, b"");
    assert_eq!(
        &buf[..],
        &[
            0x31, 16, 0, 0, 13, 0x23, 0x0A, 0x0B, 0x0B, 1, 0x0B, 0x80, 0x01, 0x0B, 0xFF, 0xFF,
            0xFF, 0x7F
        ]
    );
    assert_eq!(publish_v5_size(&p, 0), buf.len());
}

#[test]
fn publish_v5_message_properties_in_order() {
    let m = all_message_props();
    let mut p = publish_out(Some(&m), &[5, 5, 2]);
    p.topic_alias = Some(3);
    let mut buf = BytesMut::new();
    encode_publish_v5(&mut buf, &p, b"body");
    let (byte1, body) = split_frame(&buf);
    assert_eq!(byte1, 0x32);
    assert_eq!(&body[..7], &[0, 3, b'a', b'/', b'b', 1, 2]);
    let (props, payload) = split_props(&body[7..]);
    assert_eq!(payload, b"body");
    let ids: Vec<u8> = props.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        [0x01, 0x02, 0x03, 0x08, 0x09, 0x26, 0x26, 0x26, 0x23, 0x0B, 0x0B, 0x0B]
    );
    assert_eq!(props[0].1, [1]);
    assert_eq!(props[1].1, u32::MAX.to_be_bytes());
    assert_eq!(props[5].1, [&s(b"z")[..], &s(b"1")].concat());
    assert_eq!(props[6].1, [&s(b"a")[..], &s(b"")].concat());
    assert_eq!(props[7].1, [&s(b"z")[..], &s(b"0")].concat());
    assert_eq!(props[8].1, [0, 3]);
    assert_eq!(
        [&props[9].1, &props[10].1, &props[11].1],
        [&[5], &[5], &[2]]
    );
    // The remaining lifetime replaces the received expiry.
    p.message_expiry = Some(17);
    let mut buf = BytesMut::new();
    encode_publish_v5(&mut buf, &p, b"");
    let (_, body) = split_frame(&buf);
    let (props, _) = split_props(&body[7..]);
    assert_eq!(props[1], (0x02, 17u32.to_be_bytes().to_vec()));
    // ... and is sent even when the message had none.
    let q = PublishOut {
        message_expiry: Some(9),
        ..publish_out(None, &[])
    };
    let mut buf = BytesMut::new();
    encode_publish_v5(&mut buf, &q, b"");
    assert_eq!(&buf[7..], &[1, 2, 5, 0x02, 0, 0, 0, 9]);
}

#[test]
fn publish_v5_round_trips() {
    let m = all_message_props();
    let none = MessageProps::default();
    for props in [None, Some(&m), Some(&none)] {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            for payload_len in [0usize, 1, 127, 20_000, 3_000_000] {
                for (retain, dup, alias) in [(false, false, None), (true, true, Some(9))] {
                    let payload: Vec<u8> = (0..payload_len).map(|i| i as u8).collect();
                    let out = PublishOut {
                        topic: "sensors/☃/t",
                        qos,
                        retain,
                        dup,
                        pkid: 77,
                        topic_alias: alias,
                        props,
                        message_expiry: None,
                        subscription_ids: &[],
                    };
                    let mut buf = BytesMut::new();
                    encode_publish_v5(&mut buf, &out, &payload);
                    assert_eq!(publish_v5_size(&out, payload.len()), buf.len());
                    // Header + payload written separately are the same bytes.
                    let mut split = BytesMut::new();
                    encode_publish_header_v5(&mut split, &out, payload.len());
                    split.put_slice(&payload);
                    assert_eq!(split, buf);
                    let qos0 = qos == QoS::AtMostOnce;
                    let expected_props = props
                        .filter(|m| **m != MessageProps::default())
                        .map(|m| Box::new(m.clone()));
                    assert_eq!(
                        decode_v5(&mut buf, MAX).unwrap().unwrap(),
                        Packet::Publish(Publish {
                            dup: dup && !qos0,
                            qos,
                            retain,
                            topic: "sensors/☃/t".into(),
                            pkid: if qos0 { 0 } else { 77 },
                            payload: Bytes::from(payload),
                            topic_alias: alias,
                            props: expected_props,
                        })
                    );
                    assert!(buf.is_empty());
                }
            }
        }
    }
}

#[test]
fn publish_v5_size_matches_random_encodings() {
    let mut rng = XorShift(0xDEAD_BEEF_1234_5678);
    for _ in 0..2_000 {
        let n_user = rng.below(4);
        let m = MessageProps {
            payload_format: match rng.below(3) {
                0 => None,
                1 => Some(false),
                _ => Some(true),
            },
            message_expiry: (rng.below(2) == 0).then(|| rng.next() as u32),
            content_type: (rng.below(2) == 0).then(|| "x".repeat(rng.below(300))),
            response_topic: (rng.below(2) == 0).then(|| "r".repeat(1 + rng.below(200))),
            correlation_data: (rng.below(2) == 0).then(|| Bytes::from(vec![7; rng.below(300)])),
            user_properties: (0..n_user)
                .map(|i| (i.to_string(), "v".repeat(rng.below(100))))
                .collect(),
        };
        let ids: Vec<u32> = (0..rng.below(4))
            .map(|_| 1 + (rng.next() % 268_435_455) as u32)
            .collect();
        let topic = "t".repeat(rng.below(200));
        let out = PublishOut {
            topic: &topic,
            qos: [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][rng.below(3)],
            retain: rng.below(2) == 0,
            dup: rng.below(2) == 0,
            pkid: 1 + rng.below(65535) as u16,
            topic_alias: (rng.below(2) == 0).then(|| 1 + rng.below(100) as u16),
            props: (rng.below(4) != 0).then_some(&m),
            message_expiry: (rng.below(3) == 0).then(|| rng.next() as u32),
            subscription_ids: &ids,
        };
        let payload = vec![1u8; rng.below(20_000)];
        let mut buf = BytesMut::new();
        encode_publish_v5(&mut buf, &out, &payload);
        assert_eq!(publish_v5_size(&out, payload.len()), buf.len());
        let (_, body) = split_frame(&buf);
        // Every property block the encoder writes reads back with the independent reader.
        let skip = 2 + topic.len() + if out.qos == QoS::AtMostOnce { 0 } else { 2 };
        let (props, rest) = split_props(&body[skip..]);
        assert_eq!(rest.len(), payload.len());
        let sub_ids = props.iter().filter(|(id, _)| *id == 0x0B).count();
        assert_eq!(sub_ids, ids.len());
        // And, without subscription identifiers, decode_v5 reads it back.
        if ids.is_empty() {
            let Some(Packet::Publish(p)) = decode_v5(&mut buf, MAX).unwrap() else {
                panic!()
            };
            assert_eq!(&*p.topic, topic);
            assert_eq!(p.topic_alias, out.topic_alias);
            let expiry = out
                .message_expiry
                .or(out.props.and_then(|m| m.message_expiry));
            assert_eq!(p.props.as_ref().and_then(|m| m.message_expiry), expiry);
        }
    }
}

#[test]
fn publish_v5_limits() {
    let big = "t".repeat(70_000);
    let out = PublishOut {
        topic: &big,
        ..publish_out(None, &[])
    };
    assert_eq!(publish_v5_size(&out, 0), usize::MAX);
    let out = publish_out(None, &[]);
    assert_eq!(publish_v5_size(&out, usize::MAX - 3), usize::MAX);
    assert_eq!(publish_v5_size(&out, 268_435_455), usize::MAX);
    // The largest expressible: remaining length 268,435,455.
    let overhead = 2 + 3 + 2 + 1;
    assert_eq!(
        publish_v5_size(&out, 268_435_455 - overhead),
        1 + 4 + 268_435_455
    );
}

#[cfg(not(debug_assertions))]
#[test]
fn publish_v5_inexpressible_writes_nothing_in_release() {
    let big = "t".repeat(70_000);
    let out = PublishOut {
        topic: &big,
        ..publish_out(None, &[])
    };
    let mut buf = BytesMut::new();
    encode_publish_v5(&mut buf, &out, b"x");
    encode_publish_header_v5(&mut buf, &out, 1);
    assert!(buf.is_empty());
    // A reason string over 65,535 bytes is left out.
    let long = "r".repeat(70_000);
    encode_ack_v5(&mut buf, AckKind::PubAck, 1, 0x80, Some(&long));
    assert_eq!(&buf[..], &[0x40, 3, 0, 1, 0x80]);
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "cannot express")]
fn publish_v5_inexpressible_asserts_in_debug() {
    let big = "t".repeat(70_000);
    let out = PublishOut {
        topic: &big,
        ..publish_out(None, &[])
    };
    encode_publish_v5(&mut BytesMut::new(), &out, b"x");
}

// ---------------------------------------------------------------- acknowledgements

type MakeAck = fn(Ack) -> Packet;

const ACK_TYPES: [(u8, MakeAck); 4] = [
    (0x40, Packet::PubAck),
    (0x50, Packet::PubRec),
    (0x62, Packet::PubRel),
    (0x70, Packet::PubComp),
];

#[test]
fn acks_v5_decode() {
    for (b, make) in ACK_TYPES {
        let ack = |reason| {
            make(Ack {
                pkid: 0x1234,
                reason,
            })
        };
        let ok_reason = if b == 0x40 || b == 0x50 { 0x10 } else { 0x92 };
        // Short form, reason only, reason and empty properties, reason and properties.
        assert_eq!(decode5(&[b, 2, 0x12, 0x34]), ack(0));
        assert_eq!(decode5(&[b, 3, 0x12, 0x34, ok_reason]), ack(ok_reason));
        assert_eq!(decode5(&[b, 4, 0x12, 0x34, 0, 0]), ack(0));
        let mut body = vec![0x12, 0x34, ok_reason];
        body.extend_from_slice(&block(&[
            p_str(0x1F, b"why"),
            p_pair(b"k", b"v"),
            p_pair(b"k", b"v"),
        ]));
        assert_eq!(decode5(&frame(b, &body)), ack(ok_reason));
    }
}

#[test]
fn acks_v5_reason_codes() {
    let puback = [0x00u8, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
    let pubrel = [0x00u8, 0x92];
    for (b, _) in ACK_TYPES {
        let allowed: &[u8] = if b == 0x40 || b == 0x50 {
            &puback
        } else {
            &pubrel
        };
        for reason in 0..=255u8 {
            let pkt = [b, 3, 0, 1, reason];
            if allowed.contains(&reason) {
                assert!(decode5_all(&pkt).unwrap().is_some());
            } else {
                protocol5(&pkt);
                protocol5(&[b, 4, 0, 1, reason, 0]);
            }
        }
    }
}

#[test]
fn acks_v5_malformed_and_protocol_errors() {
    for (b, _) in ACK_TYPES {
        // Checked from the header, before the body arrives.
        malformed5(&[b, 0]);
        malformed5(&[b, 1]);
        // Properties not valid for an acknowledgement.
        for id in [0x01u8, 0x02, 0x0B, 0x11, 0x15, 0x1C, 0x21, 0x23, 0x80] {
            let mut body = vec![0, 1, 0];
            body.extend_from_slice(&block(&[vec![id, 0, 1, 0, 1]]));
            malformed5(&frame(b, &body));
        }
        // Property length beyond the packet, trailing bytes after the properties,
        // truncated reason string, bad UTF-8.
        malformed5(&[b, 5, 0, 1, 0, 5, 0x1F]);
        malformed5(&[b, 5, 0, 1, 0, 0, 0]);
        malformed5(&[b, 7, 0, 1, 0, 3, 0x1F, 0, 1]);
        malformed5(&frame(
            b,
            &[&[0, 1, 0][..], &block(&[p_str(0x1F, b"\xFF")])].concat(),
        ));
        malformed5(&frame(
            b,
            &[&[0, 1, 0][..], &block(&[p_pair(b"\0", b"")])].concat(),
        ));
        // Reason String twice.
        protocol5(&frame(
            b,
            &[
                &[0, 1, 0][..],
                &block(&[p_str(0x1F, b"a"), p_str(0x1F, b"b")]),
            ]
            .concat(),
        ));
    }
    // Reserved flags.
    for b in [0x41, 0x48, 0x52, 0x60, 0x63, 0x6A, 0x72] {
        malformed5(&[b]);
    }
}

#[test]
fn acks_v5_encoding_is_byte_exact() {
    let mut buf = BytesMut::new();
    encode_ack_v5(&mut buf, AckKind::PubAck, 0x0102, 0, None);
    encode_ack_v5(&mut buf, AckKind::PubRec, 3, 0x10, None);
    encode_ack_v5(&mut buf, AckKind::PubRel, 4, 0x92, None);
    encode_ack_v5(&mut buf, AckKind::PubComp, 0xFFFF, 0, None);
    encode_ack_v5(&mut buf, AckKind::PubAck, 5, 0, Some("ok"));
    encode_ack_v5(&mut buf, AckKind::PubRel, 6, 0x92, Some(""));
    assert_eq!(
        &buf[..],
        &[
            0x40, 2, 1, 2, //
            0x50, 3, 0, 3, 0x10, //
            0x62, 3, 0, 4, 0x92, //
            0x70, 2, 0xFF, 0xFF, //
            0x40, 9, 0, 5, 0, 5, 0x1F, 0, 2, b'o', b'k', //
            0x62, 7, 0, 6, 0x92, 3, 0x1F, 0, 0,
        ][..]
    );
    // A long reason string: two-byte remaining length and property length.
    let long = "é".repeat(100);
    let mut buf = BytesMut::new();
    encode_ack_v5(&mut buf, AckKind::PubComp, 9, 0x92, Some(&long));
    let (b, body) = split_frame(&buf);
    assert_eq!(b, 0x70);
    assert_eq!(&body[..3], &[0, 9, 0x92]);
    let (props, rest) = split_props(&body[3..]);
    assert!(rest.is_empty());
    assert_eq!(props, vec![(0x1F, s(long.as_bytes()))]);
    // What the encoder writes, decode_v5 reads (acknowledgements flow both ways).
    for (kind, b) in [
        (AckKind::PubAck, 0x40u8),
        (AckKind::PubRec, 0x50),
        (AckKind::PubRel, 0x62),
        (AckKind::PubComp, 0x70),
    ] {
        let reason = if b < 0x60 { 0x97 } else { 0x92 };
        for rs in [None, Some("why ☃")] {
            let mut buf = BytesMut::new();
            encode_ack_v5(&mut buf, kind, 42, reason, rs);
            assert_eq!(buf[0], b);
            let p = decode_v5(&mut buf, MAX).unwrap().unwrap();
            let ack = Ack { pkid: 42, reason };
            let expected = ACK_TYPES.iter().find(|(t, _)| *t == b).unwrap().1(ack);
            assert_eq!(p, expected);
        }
    }
}

// ---------------------------------------------------------------- SUBSCRIBE

fn subscribe5(pkid: u16, props: &[Vec<u8>], filters: &[(&[u8], u8)]) -> Vec<u8> {
    let mut b = pkid.to_be_bytes().to_vec();
    b.extend_from_slice(&block(props));
    for (f, o) in filters {
        b.extend_from_slice(&s(f));
        b.push(*o);
    }
    frame(0x82, &b)
}

#[test]
fn subscribe_v5_options() {
    for qos in 0..3u8 {
        for nl in [0u8, 1] {
            for rap in [0u8, 1] {
                for rh in 0..3u8 {
                    let o = qos | nl << 2 | rap << 3 | rh << 4;
                    let p = decode5(&subscribe5(1, &[], &[(b"a/+", o)]));
                    assert_eq!(
                        p,
                        Packet::Subscribe(Subscribe {
                            pkid: 1,
                            filters: vec![(
                                "a/+".into(),
                                SubscriptionOptions {
                                    qos: [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
                                        [usize::from(qos)],
                                    no_local: nl == 1,
                                    retain_as_published: rap == 1,
                                    retain_handling: rh,
                                }
                            )],
                            subscription_id: None,
                        })
                    );
                }
            }
        }
    }
}

#[test]
fn subscribe_v5_subscription_identifier() {
    for id in [1usize, 127, 128, 16_384, 2_097_152, 268_435_455] {
        let p = decode5(&subscribe5(
            9,
            &[p_pair(b"k", b"v"), p_varint(0x0B, id), p_pair(b"k", b"w")],
            &[(b"a", 1), (b"$share/g/b", 2)],
        ));
        let Packet::Subscribe(sub) = p else {
            panic!("{p:?}")
        };
        assert_eq!(sub.subscription_id, Some(id as u32));
        assert_eq!(sub.filters.len(), 2);
        assert_eq!(sub.filters[1].0, "$share/g/b");
    }
    protocol5(&subscribe5(1, &[p_varint(0x0B, 0)], &[(b"a", 0)]));
    protocol5(&subscribe5(
        1,
        &[p_varint(0x0B, 1), p_varint(0x0B, 2)],
        &[(b"a", 0)],
    ));
    // Five bytes.
    malformed5(&subscribe5(
        1,
        &[vec![0x0B, 0x80, 0x80, 0x80, 0x80, 0x01]],
        &[(b"a", 0)],
    ));
    malformed5(&subscribe5(
        1,
        &[vec![0x0B, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]],
        &[(b"a", 0)],
    ));
    // Cut inside the varint.
    malformed5(&subscribe5(1, &[vec![0x0B, 0x80]], &[]));
}

#[test]
fn subscribe_v5_errors() {
    // Retain Handling 3, Maximum QoS 3: Protocol Errors.
    for o in [0x30u8, 0x31, 0x3E, 0x03, 0x07, 0x3F] {
        protocol5(&subscribe5(1, &[], &[(b"a", 0), (b"b", o)]));
    }
    // Reserved bits: Malformed, whatever else is set.
    for o in [0x40u8, 0x80, 0xC0, 0x41, 0x7F, 0xFF] {
        malformed5(&subscribe5(1, &[], &[(b"a", o)]));
    }
    // No Local on a shared subscription.
    protocol5(&subscribe5(1, &[], &[(b"$share/g/a", 0x04)]));
    assert!(decode5_all(&subscribe5(1, &[], &[(b"$share/g/a", 0x08)])).is_ok());
    // No filter: Protocol Error in 5.0 [MQTT-3.8.3-2].
    protocol5(&subscribe5(1, &[], &[]));
    protocol5(&subscribe5(1, &[p_pair(b"k", b"v")], &[]));
    // Packet identifier 0, missing options, cut filter, bad strings, missing properties.
    malformed5(&subscribe5(0, &[], &[(b"a", 0)]));
    malformed5(&frame(0x82, &[&[0, 1, 0][..], &s(b"a")].concat()));
    malformed5(&frame(0x82, &[0, 1, 0, 0, 3, b'a']));
    malformed5(&subscribe5(1, &[], &[(b"a\0", 0)]));
    malformed5(&subscribe5(1, &[], &[(&[0xC0, 0x80], 0)]));
    malformed5(&frame(0x82, &[0, 1]));
    malformed5(&frame(0x82, &[0]));
    // Properties not valid in SUBSCRIBE.
    for id in [0x01u8, 0x02, 0x11, 0x1F, 0x23, 0x26 + 1] {
        malformed5(&subscribe5(1, &[vec![id, 0, 1, 0, 1]], &[(b"a", 0)]));
    }
    malformed5(&subscribe5(1, &[p_pair(b"\xFF", b"")], &[(b"a", 0)]));
    // Fixed header flags.
    for b in [0x80, 0x83, 0x8A] {
        let mut pkt = subscribe5(1, &[], &[(b"a", 0)]);
        pkt[0] = b;
        malformed5(&pkt);
    }
}

// ---------------------------------------------------------------- UNSUBSCRIBE

fn unsubscribe5(pkid: u16, props: &[Vec<u8>], filters: &[&[u8]]) -> Vec<u8> {
    let mut b = pkid.to_be_bytes().to_vec();
    b.extend_from_slice(&block(props));
    for f in filters {
        b.extend_from_slice(&s(f));
    }
    frame(0xA2, &b)
}

#[test]
fn unsubscribe_v5() {
    assert_eq!(
        decode5(&unsubscribe5(7, &[p_pair(b"k", b"v")], &[b"a/+", b"#"])),
        Packet::Unsubscribe(Unsubscribe {
            pkid: 7,
            filters: vec!["a/+".into(), "#".into()],
        })
    );
    protocol5(&unsubscribe5(7, &[], &[]));
    malformed5(&unsubscribe5(0, &[], &[b"a"]));
    malformed5(&unsubscribe5(7, &[p_varint(0x0B, 1)], &[b"a"]));
    malformed5(&unsubscribe5(7, &[p_str(0x1F, b"r")], &[b"a"]));
    malformed5(&unsubscribe5(7, &[], &[b"a", b"\0"]));
    malformed5(&unsubscribe5(7, &[], &[&[0xFF]]));
    malformed5(&frame(0xA2, &[0, 7, 0, 0, 2, b'a']));
    malformed5(&frame(0xA2, &[0, 7]));
    for b in [0xA0, 0xA3, 0xAA] {
        let mut pkt = unsubscribe5(7, &[], &[b"a"]);
        pkt[0] = b;
        malformed5(&pkt);
    }
}

// ---------------------------------------------------------------- DISCONNECT

#[test]
fn disconnect_v5() {
    let d = |reason, session_expiry| {
        Packet::Disconnect(Disconnect {
            reason,
            session_expiry,
        })
    };
    assert_eq!(decode5(&[0xE0, 0]), d(0, None));
    assert_eq!(decode5(&[0xE0, 1, 0x04]), d(4, None));
    assert_eq!(decode5(&[0xE0, 2, 0x80, 0]), d(0x80, None));
    let mut body = vec![0x00];
    body.extend_from_slice(&block(&[
        p_str(0x1F, b"bye"),
        p_u32(0x11, 300),
        p_pair(b"k", b"v"),
    ]));
    assert_eq!(decode5(&frame(0xE0, &body)), d(0, Some(300)));
    // Server Reference: only a server sends it.
    let mut body = vec![0x00];
    body.extend_from_slice(&block(&[p_str(0x1C, b"other:1883")]));
    protocol5(&frame(0xE0, &body));
    // Duplicate Session Expiry Interval.
    let mut body = vec![0x00];
    body.extend_from_slice(&block(&[p_u32(0x11, 1), p_u32(0x11, 1)]));
    protocol5(&frame(0xE0, &body));
    // Properties not valid in DISCONNECT.
    for id in [0x01u8, 0x0B, 0x15, 0x21, 0x27] {
        let mut body = vec![0x00];
        body.extend_from_slice(&block(&[vec![id, 0, 0, 0, 1]]));
        malformed5(&frame(0xE0, &body));
    }
    // Trailing bytes, property length beyond the packet.
    malformed5(&[0xE0, 3, 0, 0, 0]);
    malformed5(&[0xE0, 2, 0, 1]);
    // Reserved flags.
    for b in [0xE1, 0xE2, 0xE8, 0xEF] {
        malformed5(&[b, 0]);
    }
}

#[test]
fn disconnect_v5_reason_codes() {
    let allowed = [
        0x00u8, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8C, 0x8D, 0x8E, 0x8F, 0x90, 0x93,
        0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
    ];
    for reason in 0..=255u8 {
        if allowed.contains(&reason) {
            assert!(matches!(
                decode5(&[0xE0, 1, reason]),
                Packet::Disconnect(d) if d.reason == reason
            ));
        } else {
            protocol5(&[0xE0, 1, reason]);
        }
    }
}

#[test]
fn disconnect_v5_encoding_is_byte_exact() {
    let mut buf = BytesMut::new();
    encode_disconnect_v5(&mut buf, 0, None);
    encode_disconnect_v5(&mut buf, 0x8E, None);
    encode_disconnect_v5(&mut buf, 0x82, Some("no"));
    assert_eq!(
        &buf[..],
        &[
            0xE0, 0, //
            0xE0, 1, 0x8E, //
            0xE0, 7, 0x82, 5, 0x1F, 0, 2, b'n', b'o',
        ][..]
    );
    // And the decoder reads them back.
    let mut buf = BytesMut::new();
    encode_disconnect_v5(&mut buf, 0x98, Some("admin"));
    assert_eq!(
        decode_v5(&mut buf, MAX),
        Ok(Some(Packet::Disconnect(Disconnect {
            reason: 0x98,
            session_expiry: None
        })))
    );
}

// ---------------------------------------------------------------- AUTH, PINGREQ

#[test]
fn auth_v5() {
    assert_eq!(decode5(&[0xF0, 0]), Packet::Auth(0));
    let mut body = vec![0x18];
    body.extend_from_slice(&block(&[
        p_str(0x15, b"SCRAM-SHA-1"),
        p_str(0x16, b"\x00\x01"),
        p_str(0x1F, b"r"),
        p_pair(b"k", b"v"),
    ]));
    assert_eq!(decode5(&frame(0xF0, &body)), Packet::Auth(0x18));
    let mut body = vec![0x19];
    body.extend_from_slice(&block(&[p_str(0x15, b"m")]));
    assert_eq!(decode5(&frame(0xF0, &body)), Packet::Auth(0x19));
    // Reason codes outside Table 3-11.
    for reason in [0x01u8, 0x04, 0x80, 0x87, 0xFF] {
        let mut body = vec![reason];
        body.extend_from_slice(&block(&[p_str(0x15, b"m")]));
        protocol5(&frame(0xF0, &body));
    }
    // Without Authentication Method.
    protocol5(&[0xF0, 1, 0x18]);
    protocol5(&[0xF0, 2, 0x18, 0]);
    protocol5(&[0xF0, 2, 0x00, 0]);
    // Twice the method, twice the data.
    let mut body = vec![0x18];
    body.extend_from_slice(&block(&[p_str(0x15, b"m"), p_str(0x15, b"m")]));
    protocol5(&frame(0xF0, &body));
    let mut body = vec![0x18];
    body.extend_from_slice(&block(&[
        p_str(0x15, b"m"),
        p_str(0x16, b""),
        p_str(0x16, b""),
    ]));
    protocol5(&frame(0xF0, &body));
    // Properties not valid in AUTH, reserved flags, trailing bytes.
    let mut body = vec![0x18];
    body.extend_from_slice(&block(&[p_str(0x15, b"m"), p_u32(0x11, 0)]));
    malformed5(&frame(0xF0, &body));
    for b in [0xF1, 0xF2, 0xF8] {
        malformed5(&[b, 0]);
    }
    let mut body = vec![0x18];
    body.extend_from_slice(&block(&[p_str(0x15, b"m")]));
    body.push(0);
    malformed5(&frame(0xF0, &body));
    // Not a 3.1.1 packet.
    let mut buf = BytesMut::from(&[0xF0, 0][..]);
    assert_eq!(
        decode(&mut buf, MAX),
        Err(DecodeError::UnexpectedPacketType(15))
    );
}

#[test]
fn pingreq_and_server_packets_v5() {
    assert_eq!(decode5(&[0xC0, 0]), Packet::PingReq);
    malformed5(&[0xC0, 1, 0]);
    malformed5(&[0xC2, 0]);
    for t in [0u8, 2, 9, 11, 13] {
        assert_eq!(
            decode5_all(&[t << 4, 0]),
            Err(DecodeError::UnexpectedPacketType(t))
        );
    }
}

// ---------------------------------------------------------------- SUBACK, UNSUBACK, CONNACK

#[test]
fn suback_unsuback_v5_encoding_is_byte_exact() {
    let mut buf = BytesMut::new();
    encode_suback_v5(&mut buf, 9, &[0, 1, 2, 0x80, 0xA2], None);
    encode_unsuback_v5(&mut buf, 10, &[0, 0x11], None);
    encode_suback_v5(&mut buf, 11, &[0x87], Some("acl"));
    encode_unsuback_v5(&mut buf, 12, &[0x8F], Some(""));
    assert_eq!(
        &buf[..],
        &[
            0x90, 8, 0, 9, 0, 0, 1, 2, 0x80, 0xA2, //
            0xB0, 5, 0, 10, 0, 0, 0x11, //
            0x90, 10, 0, 11, 6, 0x1F, 0, 3, b'a', b'c', b'l', 0x87, //
            0xB0, 7, 0, 12, 3, 0x1F, 0, 0, 0x8F,
        ][..]
    );
    // A long reason code list: two-byte remaining length.
    let codes = vec![1u8; 300];
    let mut buf = BytesMut::new();
    encode_suback_v5(&mut buf, 1, &codes, None);
    let (b, body) = split_frame(&buf);
    assert_eq!(b, 0x90);
    assert_eq!(&body[..3], &[0, 1, 0]);
    assert_eq!(&body[3..], &codes[..]);
}

#[test]
fn connack_v5_encoding() {
    // No properties: the same bytes as encode_connack_v5.
    let mut a = BytesMut::new();
    encode_connack_v5_props(&mut a, true, 0, &ConnackProps::default());
    let mut b = BytesMut::new();
    encode_connack_v5(&mut b, true, 0);
    assert_eq!(a, b);
    assert_eq!(&a[..], &[0x20, 3, 1, 0, 0]);

    let props = ConnackProps {
        session_expiry: Some(0xFFFF_FFFF),
        receive_maximum: Some(20),
        maximum_qos: Some(1),
        retain_available: Some(false),
        maximum_packet_size: Some(1 << 20),
        assigned_client_id: Some("auto-1".into()),
        topic_alias_maximum: Some(10),
        reason_string: Some("welcome".into()),
        user_properties: vec![("b".into(), "2".into()), ("a".into(), "1".into())],
        wildcard_available: Some(true),
        subscription_ids_available: Some(true),
        shared_available: Some(false),
        server_keep_alive: Some(45),
        response_information: Some("resp/auto-1".into()),
    };
    let mut buf = BytesMut::new();
    encode_connack_v5_props(&mut buf, false, 0x00, &props);
    let (b, body) = split_frame(&buf);
    assert_eq!(b, 0x20);
    assert_eq!(&body[..2], &[0, 0]);
    let (got, rest) = split_props(&body[2..]);
    assert!(rest.is_empty());
    let want: Vec<(u8, Vec<u8>)> = vec![
        (0x11, vec![0xFF; 4]),
        (0x21, vec![0, 20]),
        (0x24, vec![1]),
        (0x25, vec![0]),
        (0x27, (1u32 << 20).to_be_bytes().to_vec()),
        (0x12, s(b"auto-1")),
        (0x22, vec![0, 10]),
        (0x1F, s(b"welcome")),
        (0x26, [s(b"b"), s(b"2")].concat()),
        (0x26, [s(b"a"), s(b"1")].concat()),
        (0x28, vec![1]),
        (0x29, vec![1]),
        (0x2A, vec![0]),
        (0x13, vec![0, 45]),
        (0x1A, s(b"resp/auto-1")),
    ];
    assert_eq!(got, want);

    // A refusal with only a reason string; Session Present written as given.
    let mut buf = BytesMut::new();
    encode_connack_v5_props(
        &mut buf,
        false,
        0x87,
        &ConnackProps {
            reason_string: Some("no".into()),
            ..Default::default()
        },
    );
    assert_eq!(&buf[..], &[0x20, 8, 0, 0x87, 5, 0x1F, 0, 2, b'n', b'o']);

    // Many user properties: multi-byte remaining and property lengths.
    let many = ConnackProps {
        user_properties: (0..100).map(|i| (format!("k{i}"), "v".repeat(i))).collect(),
        ..Default::default()
    };
    let mut buf = BytesMut::new();
    encode_connack_v5_props(&mut buf, true, 0, &many);
    let (_, body) = split_frame(&buf);
    let (got, rest) = split_props(&body[2..]);
    assert!(rest.is_empty());
    assert_eq!(got.len(), 100);
    assert_eq!(
        got[99].1,
        [s(b"k99"), s("v".repeat(99).as_bytes())].concat()
    );
}

#[test]
fn encoders_v5_append() {
    let mut buf = BytesMut::from(&b"xy"[..]);
    encode_ack_v5(&mut buf, AckKind::PubRel, 1, 0, None);
    encode_disconnect_v5(&mut buf, 0, None);
    assert_eq!(&buf[..], b"xy\x62\x02\x00\x01\xE0\x00");
}

// ---------------------------------------------------------------- framing

fn valid_v5_packets() -> Vec<Vec<u8>> {
    let m = all_message_props();
    let mut publish = BytesMut::new();
    encode_publish_v5(
        &mut publish,
        &PublishOut {
            topic_alias: Some(2),
            ..publish_out(Some(&m), &[])
        },
        b"hello",
    );
    let mut disconnect = vec![0x04];
    disconnect.extend_from_slice(&block(&[p_u32(0x11, 5), p_str(0x1F, b"r")]));
    let mut auth = vec![0x18];
    auth.extend_from_slice(&block(&[p_str(0x15, b"m"), p_str(0x16, b"d")]));
    vec![
        full_connect5(),
        connect5(&Connect5::default()),
        publish.to_vec(),
        publish5(0x30, b"t", None, &[], b""),
        publish5(0x34, b"t", Some(3), &[p_u16(0x23, 1)], &[0xAB; 200]),
        vec![0x40, 2, 0, 1],
        vec![0x50, 3, 0, 1, 0x10],
        frame(
            0x62,
            &[
                &[0, 1, 0x92][..],
                &block(&[p_str(0x1F, b"x"), p_pair(b"a", b"b")]),
            ]
            .concat(),
        ),
        vec![0x70, 4, 0, 1, 0, 0],
        subscribe5(5, &[p_varint(0x0B, 300)], &[(b"a/#", 0x2D), (b"+", 2)]),
        unsubscribe5(5, &[p_pair(b"u", b"p")], &[b"a/#", b"+"]),
        vec![0xC0, 0],
        vec![0xE0, 0],
        frame(0xE0, &disconnect),
        vec![0xF0, 0],
        frame(0xF0, &auth),
    ]
}

#[test]
fn v5_every_prefix_waits_and_consumes_nothing() {
    for pkt in valid_v5_packets() {
        assert!(decode5_all(&pkt).unwrap().is_some(), "{pkt:02x?}");
        for cut in 0..pkt.len() {
            let mut buf = BytesMut::from(&pkt[..cut]);
            assert_eq!(
                decode_v5(&mut buf, MAX),
                Ok(None),
                "prefix {cut} of {pkt:02x?}"
            );
            assert_eq!(&buf[..], &pkt[..cut]);
        }
    }
}

#[test]
fn v5_back_to_back_packets() {
    let packets = valid_v5_packets();
    let mut buf = BytesMut::new();
    for p in &packets {
        buf.put_slice(p);
    }
    buf.put_slice(&[0x30, 0x05, 0x00]);
    for p in &packets {
        let expected = decode5(p);
        assert_eq!(decode_v5(&mut buf, MAX).unwrap(), Some(expected));
    }
    assert_eq!(decode_v5(&mut buf, MAX), Ok(None));
    assert_eq!(&buf[..], &[0x30, 0x05, 0x00]);
}

#[test]
fn v5_packet_too_large_from_the_header_alone() {
    let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0x7F][..]);
    assert_eq!(
        decode_v5(&mut buf, 1024),
        Err(DecodeError::PacketTooLarge {
            size: 2_097_151,
            max: 1024
        })
    );
    let mut buf = BytesMut::from(&[0xF0, 0x80, 0x01][..]);
    assert_eq!(
        decode_v5(&mut buf, 127),
        Err(DecodeError::PacketTooLarge {
            size: 128,
            max: 127
        })
    );
    // A remaining length of five bytes.
    malformed5(&[0x30, 0x80, 0x80, 0x80, 0x80]);
}

#[test]
fn protocol_error_display() {
    assert_eq!(
        DecodeError::ProtocolError("Receive Maximum 0").to_string(),
        "protocol error: Receive Maximum 0"
    );
    // Every message cites the specification.
    for pkt in [
        connect5(&Connect5 {
            props: vec![p_u16(0x21, 0)],
            ..Default::default()
        }),
        subscribe5(1, &[], &[(b"a", 0x30)]),
        vec![0x40, 3, 0, 1, 0x01],
    ] {
        let Err(e) = decode5_all(&pkt) else { panic!() };
        let text = e.to_string();
        assert!(
            text.contains("[MQTT-") || text.contains("MQTT 5.0 §"),
            "{text}"
        );
    }
}

// ---------------------------------------------------------------- fuzzing

/// Decodes until the buffer is exhausted, an error or a wait; must never panic and must
/// always make progress.
fn drain5(bytes: &[u8], max: usize) {
    let mut buf = BytesMut::from(bytes);
    loop {
        let before = buf.len();
        match decode_v5(&mut buf, max) {
            Ok(Some(_)) => assert!(buf.len() < before),
            Ok(None) => {
                assert_eq!(buf.len(), before);
                break;
            }
            Err(_) => break,
        }
    }
}

/// A random property: any identifier (valid ones favoured), a value of a random type.
fn random_property(rng: &mut XorShift) -> Vec<u8> {
    const IDS: [u8; 27] = [
        0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A,
        0x1C, 0x1F, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A,
    ];
    let id = if rng.below(8) == 0 {
        rng.next() as u8
    } else {
        IDS[rng.below(IDS.len())]
    };
    match rng.below(6) {
        0 => p_u8(id, rng.below(3) as u8),
        1 => p_u16(id, rng.below(3) as u16),
        2 => p_u32(id, rng.next() as u32),
        3 => p_varint(id, rng.below(300)),
        4 => p_str(id, &vec![b'a'; rng.below(5)]),
        _ => p_pair(b"k", b"v"),
    }
}

#[test]
fn fuzz_v5_random_bytes() {
    let mut rng = XorShift(0x5EED_0005_C0DE_C0DE);
    let firsts = [
        0x10u8, 0x30, 0x32, 0x34, 0x3B, 0x40, 0x50, 0x62, 0x70, 0x82, 0xA2, 0xC0, 0xE0, 0xF0,
    ];
    for i in 0..30_000 {
        let len = rng.below(64);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if i % 2 == 0 && !bytes.is_empty() {
            bytes[0] = firsts[rng.below(firsts.len())];
            if bytes.len() > 1 {
                bytes[1] = (rng.below(bytes.len()) as u8) & 0x7F;
            }
        }
        drain5(&bytes, 1 + rng.below(128));
        drain5(&bytes, MAX);
    }
}

#[test]
fn fuzz_v5_random_property_blocks() {
    let mut rng = XorShift(0xB10C_B10C_0000_0001);
    for _ in 0..20_000 {
        let props: Vec<Vec<u8>> = (0..rng.below(5))
            .map(|_| random_property(&mut rng))
            .collect();
        let pkt = match rng.below(8) {
            0 => connect5(&Connect5 {
                props: props.clone(),
                ..Default::default()
            }),
            1 => connect5(&Connect5 {
                flags: 0x04,
                will: Some((props.clone(), b"w", b"p")),
                ..Default::default()
            }),
            2 => publish5(0x32, b"t", Some(1), &props, b"x"),
            3 => frame(0x40, &[&[0, 1, 0][..], &block(&props)].concat()),
            4 => subscribe5(1, &props, &[(b"a", rng.below(64) as u8)]),
            5 => unsubscribe5(1, &props, &[b"a"]),
            6 => frame(0xE0, &[&[0][..], &block(&props)].concat()),
            _ => frame(0xF0, &[&[0x18][..], &block(&props)].concat()),
        };
        drain5(&pkt, MAX);
    }
}

#[test]
fn fuzz_v5_mutated_valid_packets() {
    let mut rng = XorShift(0x0FED_CBA9_8765_4321);
    let packets = valid_v5_packets();
    for _ in 0..30_000 {
        let mut pkt = packets[rng.below(packets.len())].clone();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(pkt.len());
            match rng.below(4) {
                0 => pkt[at] ^= 1 << rng.below(8),
                1 => pkt[at] = rng.next() as u8,
                2 => pkt.truncate(at),
                _ => pkt.insert(at, rng.next() as u8),
            }
            if pkt.is_empty() {
                break;
            }
        }
        drain5(&pkt, MAX);
        // The 3.1.1 decoder must survive the same input.
        let mut buf = BytesMut::from(&pkt[..]);
        let _ = decode(&mut buf, MAX);
    }
}

#[test]
fn publish_v5_user_properties_are_held_at_their_wire_size_and_reencoded_verbatim() {
    // 1,000 empty user properties interleaved with other properties: 5 wire bytes each,
    // held as 5 bytes each (not a 48-byte pair), in order, and written back as received.
    let mut props = vec![p_u8(0x01, 1)];
    props.extend((0..1000).map(|i| p_pair(b"", if i % 2 == 0 { b"" } else { b"x" })));
    props.push(p_str(0x03, b"ct"));
    let pkt = publish5(0x30, b"t", None, &props, b"p");
    let Packet::Publish(p) = decode5(&pkt) else {
        panic!("a PUBLISH")
    };
    let m = p.props.expect("properties");
    assert_eq!(m.user_properties.len(), 1000);
    assert_eq!(m.user_properties.held_bytes(), 1000 * 5 + 500);
    let wire: Vec<u8> = props[1..1001].concat();
    assert_eq!(m.user_properties.wire(), &wire[..]);
    assert!(m
        .user_properties
        .iter()
        .enumerate()
        .all(|(i, (k, v))| k.is_empty() && v == if i % 2 == 0 { "" } else { "x" }));
    // Forwarded: the same bytes, between the other properties.
    let mut buf = BytesMut::new();
    encode_publish_v5(&mut buf, &publish_out(Some(&m), &[]), b"p");
    let (_, body) = split_frame(&buf);
    assert!(body.windows(wire.len()).any(|w| w == &wire[..]));
    // A CONNECT's user properties are counted, not kept.
    let c = decode5(&connect5(&Connect5 {
        flags: 0x02,
        props: (0..100).map(|_| p_pair(b"k", b"v")).collect(),
        client_id: b"c",
        will: None,
        username: None,
        password: None,
    }));
    assert!(matches!(c, Packet::Connect(c) if c.props.user_property_count == 100));
}
