//! Unit tests of the codec: byte-exact encodings, round trips, every malformed case and
//! a little fuzzing.

use bytes::{BufMut, Bytes, BytesMut};

use super::*;

const MAX: usize = 1 << 20;

/// An MQTT variable byte integer.
fn varint(mut v: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut b = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            b |= 0x80;
        }
        out.push(b);
        if v == 0 {
            return out;
        }
    }
}

/// Wraps a body into a frame: first byte, varint remaining length, body.
fn frame(byte1: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![byte1];
    out.extend(varint(body.len()));
    out.extend_from_slice(body);
    out
}

fn s(v: &[u8]) -> Vec<u8> {
    let mut out = (v.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(v);
    out
}

fn decode_all(bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let res = decode(&mut buf, MAX);
    if let Ok(Some(_)) = res {
        assert!(buf.is_empty(), "decode left {} bytes", buf.len());
    }
    res
}

fn decode_one(bytes: &[u8]) -> Packet {
    decode_all(bytes)
        .expect("decode error")
        .expect("incomplete packet")
}

fn malformed(bytes: &[u8]) {
    match decode_all(bytes) {
        Err(DecodeError::Malformed(_)) => {}
        other => panic!("expected Malformed for {bytes:02x?}, got {other:?}"),
    }
}

struct ConnectSpec<'a> {
    name: &'a [u8],
    level: u8,
    flags: u8,
    keep_alive: u16,
    client_id: &'a [u8],
    will: Option<(&'a [u8], &'a [u8])>,
    username: Option<&'a [u8]>,
    password: Option<&'a [u8]>,
}

impl Default for ConnectSpec<'_> {
    fn default() -> Self {
        ConnectSpec {
            name: b"MQTT",
            level: 4,
            flags: 0x02,
            keep_alive: 60,
            client_id: b"client-1",
            will: None,
            username: None,
            password: None,
        }
    }
}

/// A CONNECT body; `flags` is written as given, fields are present when `Some`.
fn connect_body(c: &ConnectSpec) -> Vec<u8> {
    let mut b = s(c.name);
    b.push(c.level);
    b.push(c.flags);
    b.extend_from_slice(&c.keep_alive.to_be_bytes());
    let will = c.will.map(|(topic, payload)| (None, topic, payload));
    connect_payload(&mut b, c.client_id, will, c.username, c.password);
    b
}

/// A will in a CONNECT's payload: (5.0: its property block,) topic, payload.
type WillFields<'a> = (Option<&'a [u8]>, &'a [u8], &'a [u8]);

/// Appends a CONNECT's payload: client id, will (5.0: its property block first), user
/// name, password, each present or not as given.
fn connect_payload(
    b: &mut Vec<u8>,
    client_id: &[u8],
    will: Option<WillFields>,
    username: Option<&[u8]>,
    password: Option<&[u8]>,
) {
    b.extend_from_slice(&s(client_id));
    if let Some((props, topic, payload)) = will {
        b.extend_from_slice(props.unwrap_or_default());
        b.extend_from_slice(&s(topic));
        b.extend_from_slice(&s(payload));
    }
    if let Some(u) = username {
        b.extend_from_slice(&s(u));
    }
    if let Some(p) = password {
        b.extend_from_slice(&s(p));
    }
}

fn connect_packet(c: &ConnectSpec) -> Vec<u8> {
    frame(0x10, &connect_body(c))
}

fn full_connect() -> Vec<u8> {
    connect_packet(&ConnectSpec {
        flags: 0x80 | 0x40 | 0x20 | 0x10 | 0x04 | 0x02, // will QoS 2, retain
        will: Some((b"last/will", b"gone")),
        username: Some(b"user"),
        password: Some(b"secret"),
        ..Default::default()
    })
}

// ---------------------------------------------------------------- CONNECT

#[test]
fn connect_full() {
    let p = decode_one(&full_connect());
    assert_eq!(
        p,
        Packet::Connect(Connect {
            version: ProtocolVersion::V311,
            clean_session: true,
            keep_alive: 60,
            client_id: "client-1".into(),
            will: Some(Will {
                topic: "last/will".into(),
                payload: Bytes::from_static(b"gone"),
                qos: QoS::ExactlyOnce,
                retain: true,
                delay: 0,
                props: None,
            }),
            username: Some("user".into()),
            password: Some(Bytes::from_static(b"secret")),
            props: ConnectProps::default(),
        })
    );
}

#[test]
fn connect_minimal() {
    let p = decode_one(&connect_packet(&ConnectSpec {
        flags: 0,
        keep_alive: 0,
        client_id: b"",
        ..Default::default()
    }));
    assert_eq!(
        p,
        Packet::Connect(Connect {
            version: ProtocolVersion::V311,
            clean_session: false,
            keep_alive: 0,
            client_id: String::new(),
            will: None,
            username: None,
            password: None,
            props: ConnectProps::default(),
        })
    );
}

#[test]
fn connect_mqisdp_level_3_is_v31() {
    let p = decode_one(&connect_packet(&ConnectSpec {
        name: b"MQIsdp",
        level: 3,
        ..Default::default()
    }));
    let Packet::Connect(c) = p else {
        panic!("not a CONNECT: {p:?}")
    };
    assert_eq!(c.version, ProtocolVersion::V31);
    assert_eq!(c.client_id, "client-1");
}

#[test]
fn connect_protocol_levels() {
    for (name, level) in [
        (&b"MQTT"[..], 6u8),
        (b"MQTT", 3),
        (b"MQTT", 0x84),
        (b"MQIsdp", 4),
        (b"MQIsdp", 5),
    ] {
        let pkt = connect_packet(&ConnectSpec {
            name,
            level,
            ..Default::default()
        });
        assert_eq!(
            decode_all(&pkt),
            Err(DecodeError::UnsupportedProtocolLevel(level))
        );
    }
}

#[test]
fn connect_invalid_protocol_name() {
    for name in [&b"MQTX"[..], b"mqtt", b"MQIsdp\0", b"", b"MQT"] {
        let pkt = connect_packet(&ConnectSpec {
            name,
            ..Default::default()
        });
        assert_eq!(decode_all(&pkt), Err(DecodeError::InvalidProtocolName));
    }
    // Decided before the level is even read.
    assert_eq!(
        decode_all(&frame(0x10, &s(b"HTTP"))),
        Err(DecodeError::InvalidProtocolName)
    );
}

#[test]
fn connect_reserved_flag() {
    malformed(&connect_packet(&ConnectSpec {
        flags: 0x03,
        ..Default::default()
    }));
    // MQTT 3.1 as Mosquitto accepts it: not checked.
    let p = decode_one(&connect_packet(&ConnectSpec {
        name: b"MQIsdp",
        level: 3,
        flags: 0x03,
        ..Default::default()
    }));
    assert!(matches!(p, Packet::Connect(c) if c.clean_session));
}

#[test]
fn connect_will_flags_without_will() {
    for flags in [0x08, 0x10, 0x20, 0x30] {
        malformed(&connect_packet(&ConnectSpec {
            flags,
            ..Default::default()
        }));
        // MQTT 3.1 as Mosquitto accepts it: ignored.
        let p = decode_one(&connect_packet(&ConnectSpec {
            name: b"MQIsdp",
            level: 3,
            flags,
            ..Default::default()
        }));
        assert!(matches!(p, Packet::Connect(c) if c.will.is_none()));
    }
}

#[test]
fn connect_will_qos_3() {
    for (name, level) in [(&b"MQTT"[..], 4), (b"MQIsdp", 3)] {
        malformed(&connect_packet(&ConnectSpec {
            name,
            level,
            flags: 0x18 | 0x04,
            will: Some((b"t", b"p")),
            ..Default::default()
        }));
    }
}

#[test]
fn connect_will_qos_1_no_retain() {
    let p = decode_one(&connect_packet(&ConnectSpec {
        flags: 0x08 | 0x04,
        will: Some((b"t", b"")),
        ..Default::default()
    }));
    let Packet::Connect(c) = p else {
        panic!("not a CONNECT: {p:?}")
    };
    assert_eq!(
        c.will,
        Some(Will {
            topic: "t".into(),
            payload: Bytes::new(),
            qos: QoS::AtLeastOnce,
            retain: false,
            delay: 0,
            props: None,
        })
    );
}

#[test]
fn connect_password_without_username() {
    for (name, level) in [(&b"MQTT"[..], 4), (b"MQIsdp", 3)] {
        malformed(&connect_packet(&ConnectSpec {
            name,
            level,
            flags: 0x40,
            password: Some(b"pw"),
            ..Default::default()
        }));
    }
}

#[test]
fn connect_username_without_password() {
    let p = decode_one(&connect_packet(&ConnectSpec {
        flags: 0x80,
        username: Some(b"u"),
        ..Default::default()
    }));
    assert!(matches!(p, Packet::Connect(c)
        if c.username.as_deref() == Some("u") && c.password.is_none()));
}

#[test]
fn connect_binary_password_is_not_utf8_checked() {
    let pw: &[u8] = &[0xFF, 0xFE, 0x00, 0xC3, 0x28];
    let p = decode_one(&connect_packet(&ConnectSpec {
        flags: 0xC0,
        username: Some(b"u"),
        password: Some(pw),
        ..Default::default()
    }));
    assert!(matches!(p, Packet::Connect(c) if c.password.as_deref() == Some(pw)));
}

#[test]
fn connect_every_truncation_is_malformed() {
    // Keep the fixed header consistent with the truncated body: each missing or cut
    // field must be Malformed, never Ok(None) or a panic.
    let body = connect_body(&ConnectSpec {
        flags: 0xC0 | 0x04 | 0x02,
        will: Some((b"w", b"wp")),
        username: Some(b"user"),
        password: Some(b"pw"),
        ..Default::default()
    });
    assert!(decode_one(&frame(0x10, &body)) != Packet::PingReq);
    for cut in 0..body.len() {
        malformed(&frame(0x10, &body[..cut]));
    }
}

#[test]
fn connect_v31_missing_username_and_password_are_absent() {
    // Mosquitto ignores a username / password flag whose field is missing in MQTT 3.1.
    let body = connect_body(&ConnectSpec {
        name: b"MQIsdp",
        level: 3,
        flags: 0xC2,
        ..Default::default()
    });
    let p = decode_one(&frame(0x10, &body));
    assert!(matches!(p, Packet::Connect(c) if c.username.is_none() && c.password.is_none()));
    let body = connect_body(&ConnectSpec {
        name: b"MQIsdp",
        level: 3,
        flags: 0xC2,
        username: Some(b"u"),
        ..Default::default()
    });
    let p = decode_one(&frame(0x10, &body));
    assert!(matches!(p, Packet::Connect(c)
        if c.username.as_deref() == Some("u") && c.password.is_none()));
    // Not in 3.1.1.
    malformed(&connect_packet(&ConnectSpec {
        flags: 0x80,
        ..Default::default()
    }));
    malformed(&connect_packet(&ConnectSpec {
        flags: 0xC0,
        username: Some(b"u"),
        ..Default::default()
    }));
    // A field that starts but is cut stays malformed in 3.1 too.
    let mut body = connect_body(&ConnectSpec {
        name: b"MQIsdp",
        level: 3,
        flags: 0x80,
        ..Default::default()
    });
    body.extend_from_slice(&[0x00, 0x05, b'a']);
    malformed(&frame(0x10, &body));
}

#[test]
fn connect_trailing_bytes() {
    let mut body = connect_body(&ConnectSpec::default());
    body.push(0);
    malformed(&frame(0x10, &body));
}

#[test]
fn connect_bad_strings() {
    let bad: [&[u8]; 4] = [b"a\0b", &[0xFF], &[0xC3, 0x28], &[0xED, 0xA0, 0x80]];
    for b in bad {
        // client id
        malformed(&connect_packet(&ConnectSpec {
            client_id: b,
            ..Default::default()
        }));
        // will topic
        malformed(&connect_packet(&ConnectSpec {
            flags: 0x04,
            will: Some((b, b"p")),
            ..Default::default()
        }));
        // username
        malformed(&connect_packet(&ConnectSpec {
            flags: 0x80,
            username: Some(b),
            ..Default::default()
        }));
    }
    // Non-ASCII UTF-8 is fine.
    let p = decode_one(&connect_packet(&ConnectSpec {
        client_id: "čau-☃".as_bytes(),
        ..Default::default()
    }));
    assert!(matches!(p, Packet::Connect(c) if c.client_id == "čau-☃"));
}

#[test]
fn connect_header_flags() {
    let mut pkt = connect_packet(&ConnectSpec::default());
    pkt[0] = 0x12;
    malformed(&pkt);
}

// ---------------------------------------------------------------- PUBLISH

#[test]
fn publish_encoding_is_byte_exact() {
    let mut buf = BytesMut::new();
    encode_publish(&mut buf, "a/b", b"hi", QoS::AtLeastOnce, 10, true, true);
    assert_eq!(
        &buf[..],
        &[0x3B, 9, 0, 3, b'a', b'/', b'b', 0, 10, b'h', b'i']
    );
    let mut buf = BytesMut::new();
    encode_publish(&mut buf, "t", b"", QoS::AtMostOnce, 99, false, false);
    assert_eq!(&buf[..], &[0x30, 3, 0, 1, b't']);
    let mut buf = BytesMut::new();
    encode_publish(&mut buf, "t", b"x", QoS::ExactlyOnce, 0x0102, false, false);
    assert_eq!(&buf[..], &[0x34, 6, 0, 1, b't', 1, 2, b'x']);
    // DUP is never written for QoS 0.
    let mut buf = BytesMut::new();
    encode_publish(&mut buf, "t", b"", QoS::AtMostOnce, 0, true, true);
    assert_eq!(&buf[..], &[0x31, 3, 0, 1, b't']);
}

#[test]
fn publish_round_trips() {
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        for payload_len in [0usize, 1, 100, 200, 20_000, 3_000_000] {
            for (retain, dup) in [(false, false), (true, false), (false, true), (true, true)] {
                let payload: Vec<u8> = (0..payload_len).map(|i| i as u8).collect();
                let mut buf = BytesMut::new();
                encode_publish(&mut buf, "sensors/☃/temp", &payload, qos, 7, retain, dup);
                let mut rx = buf.clone();
                let p = decode(&mut rx, 4_000_000).unwrap().unwrap();
                assert!(rx.is_empty());
                let qos0 = qos == QoS::AtMostOnce;
                assert_eq!(
                    p,
                    Packet::Publish(Publish {
                        dup: dup && !qos0,
                        qos,
                        retain,
                        topic: "sensors/☃/temp".into(),
                        pkid: if qos0 { 0 } else { 7 },
                        payload: Bytes::from(payload),
                        topic_alias: None,
                        props: None,
                    })
                );
            }
        }
    }
}

#[test]
fn publish_empty_payload() {
    let p = decode_one(&frame(0x30, &s(b"a")));
    assert_eq!(
        p,
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "a".into(),
            pkid: 0,
            payload: Bytes::new(),
            topic_alias: None,
            props: None,
        })
    );
    let mut body = s(b"a");
    body.extend_from_slice(&[0, 1]);
    let p = decode_one(&frame(0x32, &body));
    assert!(matches!(p, Packet::Publish(p) if p.pkid == 1 && p.payload.is_empty()));
}

#[test]
fn publish_payload_is_copied_when_small_and_shares_the_frame_when_large() {
    for (size, shared) in [(8, false), (COPY_PAYLOAD_BELOW, true)] {
        let mut body = s(b"t");
        body.extend_from_slice(&vec![b'x'; size]);
        let mut buf = BytesMut::from(&frame(0x30, &body)[..]);
        let start = buf.as_ptr() as usize;
        let len_len = if body.len() < 128 { 1 } else { 2 };
        let Some(Packet::Publish(p)) = decode(&mut buf, usize::MAX).unwrap() else {
            panic!("not a PUBLISH")
        };
        assert_eq!(p.payload.len(), size);
        assert!(buf.is_empty(), "the frame is taken off the buffer");
        // Fixed header, 3 bytes of topic: where the payload was in the frame.
        let in_frame = p.payload.as_ptr() as usize == start + 1 + len_len + 3;
        assert_eq!(in_frame, shared, "payload of {size} bytes");
    }
}

#[test]
fn publish_malformed() {
    // QoS 3, with or without other flags; rejected from the first byte.
    for b in [0x36, 0x37, 0x3E] {
        malformed(&[b]);
        malformed(&frame(b, &[0, 1, b't', 0, 1]));
    }
    // DUP on QoS 0.
    malformed(&[0x38]);
    malformed(&frame(0x39, &s(b"t")));
    // Packet id 0.
    let mut body = s(b"t");
    body.extend_from_slice(&[0, 0, b'x']);
    malformed(&frame(0x32, &body));
    malformed(&frame(0x34, &body));
    // Missing or half packet id.
    malformed(&frame(0x32, &s(b"t")));
    let mut body = s(b"t");
    body.push(1);
    malformed(&frame(0x32, &body));
    // Missing, cut or bad topic.
    malformed(&frame(0x30, &[]));
    malformed(&frame(0x30, &[0]));
    malformed(&frame(0x30, &[0, 5, b'a', b'b']));
    malformed(&frame(0x30, &s(b"a\0b")));
    malformed(&frame(0x30, &s(&[0xFF, 0xFE])));
    // Empty topics and wildcards are the handler's business.
    assert!(matches!(
        decode_one(&frame(0x30, &s(b""))),
        Packet::Publish(p) if p.topic.is_empty()
    ));
    assert!(matches!(
        decode_one(&frame(0x30, &s(b"a/+"))),
        Packet::Publish(p) if &*p.topic == "a/+"
    ));
}

// ---------------------------------------------------------------- acknowledgements

const DISCONNECT_V3: Disconnect = Disconnect {
    reason: 0,
    session_expiry: None,
};

#[test]
fn acks_decode() {
    let ack = |pkid| Ack { pkid, reason: 0 };
    assert_eq!(
        decode_one(&[0x40, 2, 0x12, 0x34]),
        Packet::PubAck(ack(0x1234))
    );
    assert_eq!(decode_one(&[0x50, 2, 0, 1]), Packet::PubRec(ack(1)));
    assert_eq!(decode_one(&[0x62, 2, 0, 2]), Packet::PubRel(ack(2)));
    assert_eq!(
        decode_one(&[0x70, 2, 0xFF, 0xFF]),
        Packet::PubComp(ack(0xFFFF))
    );
    assert_eq!(decode_one(&[0xC0, 0]), Packet::PingReq);
    assert_eq!(decode_one(&[0xE0, 0]), Packet::Disconnect(DISCONNECT_V3));
}

#[test]
fn acks_malformed() {
    for b in [0x40, 0x50, 0x62, 0x70] {
        malformed(&[b, 0]);
        malformed(&[b, 1, 0]);
        malformed(&[b, 3, 0, 1, 0]);
        // Checked from the header, before the body arrives.
        malformed(&[b, 100]);
    }
    // Reserved flags.
    for b in [
        0x41, 0x42, 0x48, 0x52, 0x60, 0x63, 0x6A, 0x72, 0xC2, 0xE1, 0xEF,
    ] {
        malformed(&[b]);
    }
    malformed(&[0xC0, 1, 0]);
    malformed(&[0xE0, 1, 0]);
    malformed(&[0xE0, 100]);
}

// ---------------------------------------------------------------- SUBSCRIBE

fn subscribe_body(pkid: u16, filters: &[(&[u8], u8)]) -> Vec<u8> {
    let mut b = pkid.to_be_bytes().to_vec();
    for (f, o) in filters {
        b.extend_from_slice(&s(f));
        b.push(*o);
    }
    b
}

#[test]
fn subscribe_decodes() {
    let body = subscribe_body(260, &[(b"a/+", 0), (b"#", 1), (b"a/b/c", 2)]);
    assert_eq!(
        decode_one(&frame(0x82, &body)),
        Packet::Subscribe(Subscribe {
            pkid: 260,
            filters: vec![
                ("a/+".into(), SubscriptionOptions::qos(QoS::AtMostOnce)),
                ("#".into(), SubscriptionOptions::qos(QoS::AtLeastOnce)),
                ("a/b/c".into(), SubscriptionOptions::qos(QoS::ExactlyOnce)),
            ],
            subscription_id: None,
        })
    );
}

#[test]
fn subscribe_malformed() {
    // Packet id 0, missing or cut.
    malformed(&frame(0x82, &subscribe_body(0, &[(b"a", 0)])));
    malformed(&frame(0x82, &[]));
    malformed(&frame(0x82, &[1]));
    // No filter.
    malformed(&frame(0x82, &subscribe_body(1, &[])));
    // Reserved option bits, QoS 3.
    for o in [3, 4, 0x40, 0x80, 0xFC, 0xFF] {
        malformed(&frame(0x82, &subscribe_body(1, &[(b"a", 0), (b"b", o)])));
    }
    // Missing options byte, cut filter.
    let mut body = subscribe_body(1, &[(b"a", 1)]);
    body.extend_from_slice(&s(b"b"));
    malformed(&frame(0x82, &body));
    malformed(&frame(0x82, &[0, 1, 0, 3, b'a']));
    malformed(&frame(0x82, &[0, 1, 0]));
    // Bad strings.
    malformed(&frame(0x82, &subscribe_body(1, &[(b"a\0", 0)])));
    malformed(&frame(0x82, &subscribe_body(1, &[(&[0xC0, 0x80], 0)])));
    // Fixed header flags must be 0010.
    for b in [0x80, 0x83, 0x8A, 0x86] {
        malformed(&frame(b, &subscribe_body(1, &[(b"a", 0)])));
    }
}

// ---------------------------------------------------------------- UNSUBSCRIBE

fn unsubscribe_body(pkid: u16, filters: &[&[u8]]) -> Vec<u8> {
    let mut b = pkid.to_be_bytes().to_vec();
    for f in filters {
        b.extend_from_slice(&s(f));
    }
    b
}

#[test]
fn unsubscribe_decodes() {
    let body = unsubscribe_body(9, &[b"a/+", b"#"]);
    assert_eq!(
        decode_one(&frame(0xA2, &body)),
        Packet::Unsubscribe(Unsubscribe {
            pkid: 9,
            filters: vec!["a/+".into(), "#".into()],
        })
    );
}

#[test]
fn unsubscribe_malformed() {
    malformed(&frame(0xA2, &unsubscribe_body(0, &[b"a"])));
    malformed(&frame(0xA2, &unsubscribe_body(1, &[])));
    malformed(&frame(0xA2, &[]));
    malformed(&frame(0xA2, &[0]));
    malformed(&frame(0xA2, &[0, 1, 0]));
    malformed(&frame(0xA2, &[0, 1, 0, 2, b'a']));
    malformed(&frame(0xA2, &unsubscribe_body(1, &[b"a", b"\0"])));
    malformed(&frame(0xA2, &unsubscribe_body(1, &[&[0xFF]])));
    for b in [0xA0, 0xA3, 0xAA] {
        malformed(&frame(b, &unsubscribe_body(1, &[b"a"])));
    }
}

// ---------------------------------------------------------------- fixed header

#[test]
fn unexpected_packet_types() {
    for t in [0u8, 2, 9, 11, 13, 15] {
        for flags in [0u8, 2] {
            let b = t << 4 | flags;
            assert_eq!(decode_all(&[b]), Err(DecodeError::UnexpectedPacketType(t)));
            assert_eq!(
                decode_all(&[b, 2, 0, 1]),
                Err(DecodeError::UnexpectedPacketType(t))
            );
        }
    }
}

#[test]
fn remaining_length_varint() {
    // A 4th byte with the continuation bit: malformed without waiting for a 5th.
    malformed(&[0x30, 0x80, 0x80, 0x80, 0x80]);
    malformed(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF]);
    malformed(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
    malformed(&[0x30, 0x80, 0x80, 0x80, 0x80, 0x00]);
    // Incomplete varints wait.
    for prefix in [&[0x30u8][..], &[0x30, 0x80], &[0x30, 0xFF, 0xFF, 0xFF]] {
        assert_eq!(decode_all(prefix), Ok(None));
    }
    // The largest 4-byte value is fine, it just waits for the body.
    let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F][..]);
    assert_eq!(decode(&mut buf, usize::MAX), Ok(None));
    assert_eq!(buf.len(), 5);
    // Non-minimal encodings are accepted in 3.1.1: 0x80 0x00 is zero.
    assert_eq!(decode_one(&[0xC0, 0x80, 0x00]), Packet::PingReq);
    // Two-byte remaining length.
    let mut body = s(b"t");
    body.extend_from_slice(&[7; 300]);
    let pkt = frame(0x30, &body);
    assert_eq!(&pkt[..3], &[0x30, 0xAF, 0x02]);
    assert!(matches!(decode_one(&pkt), Packet::Publish(p) if p.payload.len() == 300));
}

#[test]
fn packet_too_large_from_the_header_alone() {
    let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0x7F][..]);
    assert_eq!(
        decode(&mut buf, 1024),
        Err(DecodeError::PacketTooLarge {
            size: 2_097_151,
            max: 1024
        })
    );
    // The limit is on the remaining length and inclusive.
    let pkt = frame(0x30, &[0, 1, b't', 1, 2]);
    let mut buf = BytesMut::from(&pkt[..]);
    assert!(matches!(decode(&mut buf, 5), Ok(Some(Packet::Publish(_)))));
    let mut buf = BytesMut::from(&pkt[..2]);
    assert_eq!(
        decode(&mut buf, 4),
        Err(DecodeError::PacketTooLarge { size: 5, max: 4 })
    );
    // max 0 still lets PINGREQ through.
    let mut buf = BytesMut::from(&[0xC0, 0x00][..]);
    assert_eq!(decode(&mut buf, 0), Ok(Some(Packet::PingReq)));
}

fn valid_packets() -> Vec<Vec<u8>> {
    let mut publish = BytesMut::new();
    encode_publish(
        &mut publish,
        "a/b",
        b"hello",
        QoS::ExactlyOnce,
        3,
        true,
        false,
    );
    vec![
        full_connect(),
        connect_packet(&ConnectSpec {
            name: b"MQIsdp",
            level: 3,
            ..Default::default()
        }),
        publish.to_vec(),
        frame(0x30, &[0, 1, b't']),
        frame(0x30, &[vec![0, 1, b't'], vec![0xAB; 200]].concat()),
        vec![0x40, 2, 0, 1],
        vec![0x50, 2, 0, 1],
        vec![0x62, 2, 0, 1],
        vec![0x70, 2, 0, 1],
        frame(0x82, &subscribe_body(5, &[(b"a/#", 1), (b"+", 2)])),
        frame(0xA2, &unsubscribe_body(5, &[b"a/#", b"+"])),
        vec![0xC0, 0],
        vec![0xE0, 0],
    ]
}

#[test]
fn every_prefix_waits_and_consumes_nothing() {
    for pkt in valid_packets() {
        for cut in 0..pkt.len() {
            let mut buf = BytesMut::from(&pkt[..cut]);
            assert_eq!(
                decode(&mut buf, MAX),
                Ok(None),
                "prefix {cut} of {pkt:02x?}"
            );
            assert_eq!(&buf[..], &pkt[..cut]);
        }
        assert!(decode_one(&pkt) != Packet::Disconnect(DISCONNECT_V3) || pkt == [0xE0, 0]);
    }
}

#[test]
fn back_to_back_packets() {
    let packets = valid_packets();
    let mut buf = BytesMut::new();
    for p in &packets {
        buf.put_slice(p);
    }
    buf.put_slice(&[0x30, 0x05, 0x00]); // start of one more
    for p in &packets {
        let mut alone = BytesMut::from(&p[..]);
        let expected = decode(&mut alone, MAX).unwrap().unwrap();
        assert_eq!(decode(&mut buf, MAX).unwrap(), Some(expected));
    }
    assert_eq!(decode(&mut buf, MAX), Ok(None));
    assert_eq!(&buf[..], &[0x30, 0x05, 0x00]);
}

// ---------------------------------------------------------------- encoders

#[test]
fn ack_encodings_are_byte_exact() {
    let mut buf = BytesMut::new();
    encode_connack(&mut buf, false, 0);
    encode_connack(&mut buf, true, 5);
    // A 3.1.1 client: the reason code is not sent.
    encode_ack(&mut buf, AckKind::PubAck, 0x0102, 0x10, false);
    encode_ack(&mut buf, AckKind::PubRec, 3, 0, false);
    encode_ack(&mut buf, AckKind::PubRel, 4, 0x92, false);
    encode_ack(&mut buf, AckKind::PubComp, 0xFFFF, 0, false);
    encode_suback(&mut buf, 9, &[0, 1, 2, 0x80]);
    encode_unsuback(&mut buf, 10);
    encode_pingresp(&mut buf);
    assert_eq!(
        &buf[..],
        &[
            0x20, 2, 0, 0, //
            0x20, 2, 1, 5, //
            0x40, 2, 1, 2, //
            0x50, 2, 0, 3, //
            0x62, 2, 0, 4, //
            0x70, 2, 0xFF, 0xFF, //
            0x90, 6, 0, 9, 0, 1, 2, 0x80, //
            0xB0, 2, 0, 10, //
            0xD0, 0,
        ][..]
    );
}

#[test]
fn suback_long_remaining_length() {
    let codes = vec![1u8; 200];
    let mut buf = BytesMut::new();
    encode_suback(&mut buf, 1, &codes);
    assert_eq!(&buf[..5], &[0x90, 0xCA, 0x01, 0, 1]);
    assert_eq!(buf.len(), 3 + 202);
}

#[test]
fn encoders_append() {
    let mut buf = BytesMut::from(&b"xy"[..]);
    encode_publish(&mut buf, "t", b"p", QoS::AtMostOnce, 0, false, false);
    encode_ack(&mut buf, AckKind::PubRel, 1, 0, false);
    assert_eq!(&buf[..], b"xy\x30\x04\x00\x01tp\x62\x02\x00\x01");
}

#[test]
fn varint_encoding_boundaries() {
    for (len, bytes) in [
        (0usize, &[0x00u8][..]),
        (127, &[0x7F]),
        (128, &[0x80, 0x01]),
        (16_383, &[0xFF, 0x7F]),
        (16_384, &[0x80, 0x80, 0x01]),
        (2_097_151, &[0xFF, 0xFF, 0x7F]),
        (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
        (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
    ] {
        let mut buf = BytesMut::new();
        encode::put_varint(&mut buf, len);
        assert_eq!(&buf[..], bytes, "{len}");
        assert_eq!(encode::varint_len(len), bytes.len(), "{len}");
        let mut header = vec![0x30];
        header.extend_from_slice(bytes);
        assert_eq!(remaining_length(&header), Ok(Some((len, bytes.len()))));
    }
}

// ---------------------------------------------------------------- fuzzing

use crate::testing::XorShift;

/// Decodes until the buffer is exhausted, an error or a wait; must never panic and must
/// always make progress.
fn drain(bytes: &[u8], max: usize) {
    let mut buf = BytesMut::from(bytes);
    loop {
        let before = buf.len();
        match decode(&mut buf, max) {
            Ok(Some(_)) => assert!(buf.len() < before),
            Ok(None) => {
                assert_eq!(buf.len(), before);
                break;
            }
            Err(_) => break,
        }
    }
}

#[test]
fn fuzz_random_bytes() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    // Favour valid packet types so the body parsers get exercised too.
    let firsts = [
        0x10u8, 0x30, 0x32, 0x34, 0x3B, 0x40, 0x62, 0x82, 0xA2, 0xC0, 0xE0,
    ];
    for i in 0..20_000 {
        let len = (rng.next() % 64) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if i % 2 == 0 && !bytes.is_empty() {
            bytes[0] = firsts[(rng.next() % firsts.len() as u64) as usize];
            if bytes.len() > 1 {
                // A remaining length that fits what follows.
                bytes[1] = (rng.next() % bytes.len() as u64) as u8 & 0x7F;
            }
        }
        drain(&bytes, 1 + (rng.next() % 128) as usize);
        drain(&bytes, MAX);
    }
}

#[test]
fn fuzz_mutated_valid_packets() {
    let mut rng = XorShift(0x0123_4567_89AB_CDEF);
    let packets = valid_packets();
    for _ in 0..20_000 {
        let mut pkt = packets[(rng.next() % packets.len() as u64) as usize].clone();
        for _ in 0..1 + rng.next() % 3 {
            let at = (rng.next() % pkt.len() as u64) as usize;
            match rng.next() % 4 {
                0 => pkt[at] ^= 1 << (rng.next() % 8),
                1 => pkt[at] = rng.next() as u8,
                2 => pkt.truncate(at),
                _ => pkt.insert(at, rng.next() as u8),
            }
            if pkt.is_empty() {
                break;
            }
        }
        drain(&pkt, MAX);
    }
}

#[test]
fn connect_v5_properties_are_skipped_and_fields_read() {
    // MQTT 5.0 CONNECT: will + username + password, with a property block (session expiry
    // interval) and a will property block (will delay interval).
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0xC6, 0x00, 0x3C];
    body.extend_from_slice(&[0x05, 0x11, 0x00, 0x00, 0x00, 0x0A]);
    body.extend_from_slice(&[0x00, 0x02, b'c', b'5']);
    body.extend_from_slice(&[0x05, 0x18, 0x00, 0x00, 0x00, 0x05]);
    body.extend_from_slice(&[0x00, 0x01, b'w', 0x00, 0x01, b'x']);
    body.extend_from_slice(&[0x00, 0x01, b'u', 0x00, 0x02, b'p', b'w']);
    let mut pkt = vec![0x10, body.len() as u8];
    pkt.extend_from_slice(&body);
    match decode_all(&pkt) {
        Ok(Some(Packet::Connect(c))) => {
            assert_eq!(c.version, ProtocolVersion::V5);
            assert_eq!(c.client_id, "c5");
            assert_eq!(c.will.as_ref().map(|w| w.topic.as_str()), Some("w"));
            assert_eq!(c.username.as_deref(), Some("u"));
            assert_eq!(c.password.as_deref(), Some(&b"pw"[..]));
        }
        other => panic!("{other:?}"),
    }
    // A property length running past the packet is malformed, not a panic.
    let mut bad = vec![
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x7F,
    ];
    bad.extend_from_slice(&[0x00, 0x00]);
    let mut pkt = vec![0x10, bad.len() as u8];
    pkt.extend_from_slice(&bad);
    assert!(matches!(decode_all(&pkt), Err(DecodeError::Malformed(_))));
}

/// MQTT 5.0: decoding, encoding and property rules.
mod v5;

/// The 3.1.1 PUBLISH encoder against the reference framing (`frame`, `varint`) at every
/// remaining-length boundary, QoS 0 and 1, whole and header-only.
#[test]
fn encode_publish_matches_the_reference_framing_at_length_boundaries() {
    // Remaining length = 5 + payload (QoS 0) or 7 + payload (QoS 1): 127|128 and
    // 16,383|16,384 fall between these.
    for payload_len in [
        0, 1, 120, 121, 122, 123, 16_376, 16_377, 16_378, 16_379, 70_000,
    ] {
        for (qos, pkid) in [(QoS::AtMostOnce, 0u16), (QoS::AtLeastOnce, 0x1234)] {
            let topic = "a/b";
            let payload = vec![7u8; payload_len];
            let mut body = s(topic.as_bytes());
            if qos != QoS::AtMostOnce {
                body.extend_from_slice(&pkid.to_be_bytes());
            }
            let head_len = body.len();
            body.extend_from_slice(&payload);
            let byte1 = 0x30 | ((qos as u8) << 1) | 1;
            let want = frame(byte1, &body);
            let mut whole = BytesMut::new();
            encode_publish(&mut whole, topic, &payload, qos, pkid, true, false);
            assert_eq!(&whole[..], &want[..], "payload {payload_len}, {qos:?}");
            let mut head = BytesMut::new();
            assert!(encode_publish_header(
                &mut head,
                topic,
                payload_len,
                qos,
                pkid,
                true,
                false
            ));
            let fixed = 1 + varint(body.len()).len();
            assert_eq!(
                &head[..],
                &want[..fixed + head_len],
                "header, payload {payload_len}"
            );
        }
    }
}
