//! Malformed and hostile input over raw TCP: every case must get the offending connection
//! closed by the broker (without a CONNACK or any other answer where the spec says so),
//! while the broker keeps running and keeps serving a healthy subscriber.
//!
//! Test names follow the MQTT 3.1.1 normative statement they check
//! (`mqtt_2_2_2_2_...` = [MQTT-2.2.2-2]); `mqtt31_...` are MQTT 3.1 rules and `limit_...`
//! are midge's own limits.

mod common;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// How long the broker gets to close a connection it must close.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

#[derive(Debug)]
enum Ev {
    SubAck,
    Msg(String, Vec<u8>),
    Error(String),
}

/// A broker plus a healthy rumqttc subscriber on `health/#`.
struct Harness {
    broker: Broker,
    rx: mpsc::Receiver<Ev>,
    _client: Client,
    seq: u32,
}

impl Harness {
    fn start(extra: &str) -> Harness {
        let broker = start_broker(extra);
        let mut opts = MqttOptions::new("healthy-sub", "127.0.0.1", broker.port);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut conn) = Client::new(opts, 16);
        client
            .subscribe("health/#", QoS::AtLeastOnce)
            .expect("queue SUBSCRIBE");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for ev in conn.iter() {
                let ev = match ev {
                    Ok(Event::Incoming(Packet::SubAck(_))) => Ev::SubAck,
                    Ok(Event::Incoming(Packet::Publish(p))) => Ev::Msg(p.topic, p.payload.to_vec()),
                    Ok(_) => continue,
                    Err(e) => {
                        let _ = tx.send(Ev::Error(e.to_string()));
                        return;
                    }
                };
                if tx.send(ev).is_err() {
                    return;
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ev::SubAck) => {}
            Ok(Ev::Error(e)) => panic!(
                "healthy subscriber could not connect: {e}; log:\n{}",
                broker.log()
            ),
            other => panic!(
                "healthy subscriber did not get its SUBACK: {other:?}; log:\n{}",
                broker.log()
            ),
        }
        Harness {
            broker,
            rx,
            _client: client,
            seq: 0,
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.broker.addr()
    }

    fn log_tail(&self) -> String {
        let log = self.broker.log();
        let start = log.len().saturating_sub(4000);
        let start = (start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(log.len());
        log[start..].to_owned()
    }

    /// The broker process is alive, a fresh client can publish to `health/x` (PUBACK), and
    /// the healthy subscriber receives exactly that message next (so nothing from the
    /// malformed input was delivered either).
    fn assert_still_serving(&mut self, case: &str) {
        assert!(
            self.broker.is_running(),
            "{case}: broker process exited; log:\n{}",
            self.log_tail()
        );
        self.seq += 1;
        let payload = format!("alive-{}", self.seq);
        let mut p = raw(self.addr());
        p.write_all(&connect_packet(&format!("health-pub-{}", self.seq)))
            .expect("write CONNECT");
        assert_eq!(
            read_exact(&mut p, 4),
            [0x20, 0x02, 0x00, 0x00],
            "{case}: fresh client not accepted after the malformed input"
        );
        p.write_all(&publish_packet(
            b"health/x",
            1,
            1,
            payload.as_bytes(),
            false,
        ))
        .expect("write PUBLISH");
        assert_eq!(
            read_exact(&mut p, 4),
            [0x40, 0x02, 0x00, 0x01],
            "{case}: PUBACK for the health-check PUBLISH"
        );
        let _ = p.write_all(&[0xE0, 0x00]);
        match self.rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ev::Msg(topic, got)) => {
                assert_eq!(
                    (topic.as_str(), got.as_slice()),
                    ("health/x", payload.as_bytes()),
                    "{case}: healthy subscriber got an unexpected message (was malformed input delivered?)"
                );
            }
            Ok(Ev::Error(e)) => panic!(
                "{case}: the healthy subscriber's connection failed: {e}; log:\n{}",
                self.log_tail()
            ),
            other => panic!(
                "{case}: healthy subscriber did not receive the health-check message: {other:?}; log:\n{}",
                self.log_tail()
            ),
        }
        let log = self.broker.log();
        assert!(
            !log.contains("panicked"),
            "{case}: broker log shows a panic:\n{log}"
        );
    }

    /// A raw connection that has sent CONNECT and got CONNACK 0.
    fn connected(&mut self, tag: &str) -> TcpStream {
        self.seq += 1;
        raw_connected(self.addr(), &format!("bad-{}-{tag}", self.seq))
    }
}

/// The broker closes `s` within [`CLOSE_WITHIN`] without sending anything.
fn assert_closed_silently(s: &mut TcpStream, case: &str) {
    match read_until_closed(s, CLOSE_WITHIN) {
        Some(bytes) => assert!(
            bytes.is_empty(),
            "{case}: broker answered {bytes:02x?} before closing; expected a close without any answer"
        ),
        None => panic!("{case}: broker did not close the connection within {CLOSE_WITHIN:?}"),
    }
}

/// A CONNECT with every field chosen by the caller; `payload_tail` follows the client id.
fn connect_with(
    name: &[u8],
    level: u8,
    flags: u8,
    client_id: &str,
    payload_tail: &[u8],
) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(name.len() as u16).to_be_bytes());
    body.extend_from_slice(name);
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&60u16.to_be_bytes());
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    body.extend_from_slice(payload_tail);
    let mut p = vec![0x10];
    push_len(&mut p, body.len());
    p.extend(body);
    p
}

fn utf8_field(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

/// Sends `bytes` as the first thing on a new connection and expects a silent close.
fn first_packet_closes(h: &mut Harness, case: &str, bytes: &[u8]) {
    let mut s = raw(h.addr());
    s.write_all(bytes).expect("write");
    assert_closed_silently(&mut s, case);
    h.assert_still_serving(case);
}

/// Sends `bytes` after a successful CONNECT and expects a silent close.
fn after_connect_closes(h: &mut Harness, case: &str, bytes: &[u8]) {
    let mut s = h.connected("c");
    s.write_all(bytes).expect("write");
    assert_closed_silently(&mut s, case);
    h.assert_still_serving(case);
}

// ---------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------

#[test]
fn mqtt_3_1_0_1_http_request_as_first_packet_closes_connection() {
    let mut h = Harness::start("");
    first_packet_closes(&mut h, "HTTP GET", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    first_packet_closes(
        &mut h,
        "TLS ClientHello-like bytes",
        &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5],
    );
}

#[test]
fn mqtt_3_1_0_1_non_connect_first_packet_closes_connection() {
    let mut h = Harness::start("");
    first_packet_closes(&mut h, "PINGREQ first", &[0xC0, 0x00]);
    first_packet_closes(
        &mut h,
        "PUBLISH first",
        &publish_packet(b"health/early", 0, 0, b"x", false),
    );
    first_packet_closes(
        &mut h,
        "SUBSCRIBE first",
        &subscribe_packet(1, &[(b"#", 0)]),
    );
    first_packet_closes(&mut h, "CONNACK first", &[0x20, 0x02, 0x00, 0x00]);
}

#[test]
fn mqtt_2_2_3_remaining_length_over_four_bytes_closes_connection() {
    let mut h = Harness::start("");
    first_packet_closes(
        &mut h,
        "CONNECT with 5 length bytes",
        &[0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
    );
    after_connect_closes(
        &mut h,
        "PUBLISH with 5 length bytes",
        &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
    );
    after_connect_closes(
        &mut h,
        "PINGREQ with 5 length bytes",
        &[0xC0, 0x80, 0x80, 0x80, 0x80, 0x00],
    );
}

#[test]
fn limit_max_packet_size_closes_before_body() {
    let mut h = Harness::start("max_packet_size = 1024\n");

    // After CONNECT: a PUBLISH announcing 1 MiB; only the header and the topic are sent.
    let mut s = h.connected("big");
    let mut header = vec![0x30];
    push_len(&mut header, 1024 * 1024);
    header.extend_from_slice(&utf8_field(b"health/big"));
    s.write_all(&header).expect("write header");
    let t0 = Instant::now();
    assert_closed_silently(&mut s, "1 MiB PUBLISH header with max_packet_size = 1024");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "oversize PUBLISH: closed only after {:?}; expected a prompt close without waiting for the body",
        t0.elapsed()
    );
    h.assert_still_serving("oversize PUBLISH");

    // Before CONNECT: a CONNECT announcing 1 MiB.
    let mut s = raw(h.addr());
    let mut header = vec![0x10];
    push_len(&mut header, 1024 * 1024);
    header.extend_from_slice(&utf8_field(b"MQTT"));
    s.write_all(&header).expect("write header");
    let t0 = Instant::now();
    assert_closed_silently(&mut s, "1 MiB CONNECT header with max_packet_size = 1024");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "oversize CONNECT: closed only after {:?}",
        t0.elapsed()
    );
    h.assert_still_serving("oversize CONNECT");

    // Just at the limit is still fine: remaining length 1024 exactly (topic length
    // prefix, topic, packet id, payload).
    let mut s = h.connected("limit");
    let topic = b"health/limit";
    let payload = vec![b'p'; 1024 - 2 - topic.len() - 2];
    s.write_all(&publish_packet(topic, 1, 7, &payload, false))
        .expect("write");
    assert_eq!(
        read_exact(&mut s, 4),
        [0x40, 0x02, 0x00, 0x07],
        "PUBACK for a PUBLISH of exactly max_packet_size"
    );
    match h.rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ev::Msg(t, p)) => assert_eq!((t.as_str(), p.len()), ("health/limit", payload.len())),
        other => panic!("PUBLISH of exactly max_packet_size not delivered: {other:?}"),
    }
    h.assert_still_serving("PUBLISH at the limit");

    // One byte over the limit is refused.
    let mut s = h.connected("over");
    let payload = vec![b'p'; 1024 - 2 - topic.len() - 2 + 1];
    s.write_all(&publish_packet(topic, 1, 8, &payload, false))
        .expect("write");
    assert_closed_silently(&mut s, "PUBLISH one byte over max_packet_size");
    h.assert_still_serving("PUBLISH one byte over the limit");
}

#[test]
fn mqtt_2_2_2_2_reserved_flags_close_connection() {
    let mut h = Harness::start("");
    let mut subscribe_0x80 = subscribe_packet(1, &[(b"health/#", 0)]);
    subscribe_0x80[0] = 0x80;
    let mut unsubscribe_0xa0 = vec![0xA0, 0x0C, 0x00, 0x01];
    unsubscribe_0xa0.extend_from_slice(&utf8_field(b"health/#"));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("PUBACK 0x41", vec![0x41, 0x02, 0x00, 0x01]),
        ("PUBREC 0x51", vec![0x51, 0x02, 0x00, 0x01]),
        ("PUBREL 0x60 (must be 0x62)", vec![0x60, 0x02, 0x00, 0x01]),
        ("PUBCOMP 0x78", vec![0x78, 0x02, 0x00, 0x01]),
        ("SUBSCRIBE 0x80 (must be 0x82)", subscribe_0x80),
        ("UNSUBSCRIBE 0xA0 (must be 0xA2)", unsubscribe_0xa0),
        ("PINGREQ 0xC1", vec![0xC1, 0x00]),
    ];
    for (case, bytes) in cases {
        after_connect_closes(&mut h, case, &bytes);
    }
}

#[test]
fn mqtt_4_8_0_1_server_to_client_packet_types_from_client_close_connection() {
    let mut h = Harness::start("");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("CONNACK from client", vec![0x20, 0x02, 0x00, 0x00]),
        ("SUBACK from client", vec![0x90, 0x03, 0x00, 0x01, 0x00]),
        ("UNSUBACK from client", vec![0xB0, 0x02, 0x00, 0x01]),
        ("PINGRESP from client", vec![0xD0, 0x00]),
    ];
    for (case, bytes) in cases {
        after_connect_closes(&mut h, case, &bytes);
    }
}

#[test]
fn mqtt_2_2_1_reserved_packet_types_close_connection() {
    let mut h = Harness::start("");
    first_packet_closes(&mut h, "type 0 first", &[0x00, 0x00]);
    after_connect_closes(&mut h, "type 0", &[0x00, 0x00]);
    after_connect_closes(&mut h, "type 15", &[0xF0, 0x00]);
}

#[test]
fn mqtt_4_8_0_1_truncated_packet_then_eof_keeps_broker_serving() {
    let mut h = Harness::start("");

    // Half a PUBLISH, then our side of the connection is closed.
    let mut s = h.connected("trunc");
    let full = publish_packet(b"health/x", 1, 3, b"truncated-message", false);
    s.write_all(&full[..full.len() / 2]).expect("write half");
    s.shutdown(Shutdown::Write).expect("shutdown write");
    match read_until_closed(&mut s, CLOSE_WITHIN) {
        Some(bytes) => assert!(
            bytes.is_empty(),
            "half a PUBLISH was answered: {bytes:02x?}"
        ),
        None => panic!("broker kept a half-closed connection with a truncated PUBLISH open"),
    }
    drop(s);
    h.assert_still_serving("truncated PUBLISH");

    // Half a CONNECT, then EOF.
    let mut s = raw(h.addr());
    let full = connect_packet("truncated-connect");
    s.write_all(&full[..full.len() / 2]).expect("write half");
    s.shutdown(Shutdown::Write).expect("shutdown write");
    match read_until_closed(&mut s, CLOSE_WITHIN) {
        Some(bytes) => assert!(
            bytes.is_empty(),
            "half a CONNECT was answered: {bytes:02x?}"
        ),
        None => panic!("broker kept a half-closed connection with a truncated CONNECT open"),
    }
    h.assert_still_serving("truncated CONNECT");

    // Half a PUBLISH and an abrupt drop (no shutdown) while another client is connected.
    let mut s = h.connected("trunc2");
    s.write_all(&full[..3]).expect("write");
    drop(s);
    h.assert_still_serving("dropped mid-packet");
}

// ---------------------------------------------------------------------------------------
// CONNECT
// ---------------------------------------------------------------------------------------

#[test]
fn mqtt_3_1_0_1_no_connect_within_connect_timeout_closes() {
    let mut h = Harness::start("connect_timeout = 1\n");

    // Silent connection.
    let mut s = raw(h.addr());
    let t0 = Instant::now();
    assert_closed_silently(&mut s, "silent connection with connect_timeout = 1");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(3),
        "silent connection closed after {took:?}; expected about 1 s (connect_timeout = 1)"
    );
    h.assert_still_serving("connect timeout");

    // Slowloris: the start of a CONNECT, never finished.
    let mut s = raw(h.addr());
    s.write_all(&[0x10, 0x20, 0x00, 0x04, b'M']).expect("write");
    let t0 = Instant::now();
    assert_closed_silently(&mut s, "unfinished CONNECT with connect_timeout = 1");
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "unfinished CONNECT closed only after {took:?}; expected about 1 s"
    );
    h.assert_still_serving("connect timeout (partial CONNECT)");
}

#[test]
fn mqtt_3_1_2_3_reserved_connect_flag_closes_without_connack() {
    let mut h = Harness::start("");
    first_packet_closes(
        &mut h,
        "CONNECT flags 0x03",
        &connect_with(b"MQTT", 4, 0x03, "reserved-bit", &[]),
    );
}

#[test]
fn mqtt_3_1_0_2_second_connect_closes_connection() {
    let mut h = Harness::start("");
    after_connect_closes(
        &mut h,
        "second CONNECT, other id",
        &connect_packet("second-connect"),
    );
    // Same id as the first CONNECT: still a protocol violation, not a takeover.
    let mut s = raw_connected(h.addr(), "twice");
    s.write_all(&connect_packet("twice")).expect("write");
    assert_closed_silently(&mut s, "second CONNECT, same id");
    h.assert_still_serving("second CONNECT, same id");
}

#[test]
fn mqtt_3_1_2_2_unsupported_protocol_level_connack_0x01_then_close() {
    let mut h = Harness::start("");
    for level in [6u8, 0, 255] {
        let mut s = raw(h.addr());
        s.write_all(&connect_with(
            b"MQTT",
            level,
            0x02,
            &format!("level-{level}"),
            &[],
        ))
        .expect("write");
        match read_until_closed(&mut s, CLOSE_WITHIN) {
            Some(bytes) => assert_eq!(
                bytes,
                [0x20, 0x02, 0x00, 0x01],
                "protocol level {level}: expected CONNACK 0x01 (unacceptable protocol version) and close"
            ),
            None => panic!("protocol level {level}: connection not closed within {CLOSE_WITHIN:?}"),
        }
        h.assert_still_serving(&format!("protocol level {level}"));
    }
}

#[test]
fn mqtt_3_1_2_1_unknown_protocol_name_closes_without_connack() {
    let mut h = Harness::start("");
    first_packet_closes(
        &mut h,
        "protocol name MQTX",
        &connect_with(b"MQTX", 4, 0x02, "mqtx", &[]),
    );
    first_packet_closes(
        &mut h,
        "empty protocol name",
        &connect_with(b"", 4, 0x02, "noname", &[]),
    );
}

#[test]
fn mqtt31_mqisdp_connect_accepted_and_can_publish_subscribe() {
    let mut h = Harness::start("");

    let mut sub = raw(h.addr());
    sub.write_all(&connect_with(b"MQIsdp", 3, 0x02, "v31-sub", &[]))
        .expect("write");
    assert_eq!(
        read_exact(&mut sub, 4),
        [0x20, 0x02, 0x00, 0x00],
        "MQTT 3.1 (MQIsdp, level 3) CONNECT must be accepted"
    );
    sub.write_all(&subscribe_packet(5, &[(b"v31/#", 1)]))
        .expect("write");
    assert_eq!(
        read_exact(&mut sub, 5),
        [0x90, 0x03, 0x00, 0x05, 0x01],
        "SUBACK to a 3.1 client"
    );

    let mut publ = raw(h.addr());
    publ.write_all(&connect_with(b"MQIsdp", 3, 0x02, "v31-pub", &[]))
        .expect("write");
    assert_eq!(read_exact(&mut publ, 4), [0x20, 0x02, 0x00, 0x00]);
    publ.write_all(&publish_packet(b"v31/t", 1, 9, b"from-3.1", false))
        .expect("write");
    assert_eq!(
        read_exact(&mut publ, 4),
        [0x40, 0x02, 0x00, 0x09],
        "PUBACK to a 3.1 publisher"
    );
    let (header, body) = read_packet(&mut sub);
    assert_eq!(
        header & 0xF6,
        0x32,
        "QoS 1 PUBLISH to the 3.1 subscriber, got header {header:#04x}"
    );
    assert_eq!(
        parse_publish(header, &body),
        ("v31/t".to_owned(), b"from-3.1".to_vec())
    );

    // A 3.1 publisher reaches a 3.1.1 subscriber.
    publ.write_all(&publish_packet(b"health/v31", 0, 0, b"cross", false))
        .expect("write");
    match h.rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ev::Msg(t, p)) => assert_eq!((t.as_str(), p.as_slice()), ("health/v31", &b"cross"[..])),
        other => panic!("3.1 PUBLISH not delivered to the 3.1.1 subscriber: {other:?}"),
    }
    h.assert_still_serving("MQTT 3.1 clients");
}

#[test]
fn mqtt31_client_id_over_23_chars_connack_identifier_rejected() {
    let mut h = Harness::start("");
    let long = "abcdefghijklmnopqrstuvwx"; // 24
    assert_eq!(long.len(), 24);
    let mut s = raw(h.addr());
    s.write_all(&connect_with(b"MQIsdp", 3, 0x02, long, &[]))
        .expect("write");
    match read_until_closed(&mut s, CLOSE_WITHIN) {
        Some(bytes) => assert_eq!(
            bytes,
            [0x20, 0x02, 0x00, 0x02],
            "MQTT 3.1 client id of 24 chars: expected CONNACK 0x02 (identifier rejected) then close"
        ),
        None => panic!("MQTT 3.1 client id of 24 chars: not closed"),
    }
    h.assert_still_serving("3.1 client id too long");

    // 23 is the limit and is accepted.
    let mut s = raw(h.addr());
    s.write_all(&connect_with(b"MQIsdp", 3, 0x02, &long[..23], &[]))
        .expect("write");
    assert_eq!(
        read_exact(&mut s, 4),
        [0x20, 0x02, 0x00, 0x00],
        "23-char 3.1 client id"
    );
    // The same 24-char id is fine for MQTT 3.1.1.
    raw_connected(h.addr(), long);
    h.assert_still_serving("3.1 client id at the limit");
}

#[test]
fn mqtt_3_1_2_11_will_qos_or_retain_without_will_flag_closes_without_connack() {
    let mut h = Harness::start("");
    for (case, flags) in [
        ("will QoS 1 without will flag", 0x02 | 0x08),
        ("will QoS 2 without will flag", 0x02 | 0x10),
        ("will retain without will flag", 0x02 | 0x20),
    ] {
        first_packet_closes(
            &mut h,
            case,
            &connect_with(b"MQTT", 4, flags, "no-will", &[]),
        );
    }
}

#[test]
fn mqtt_3_1_2_22_password_without_username_closes_without_connack() {
    let mut h = Harness::start("");
    first_packet_closes(
        &mut h,
        "password flag without username flag",
        &connect_with(b"MQTT", 4, 0x02 | 0x40, "pw-only", &utf8_field(b"secret")),
    );
}

// ---------------------------------------------------------------------------------------
// PUBLISH
// ---------------------------------------------------------------------------------------

#[test]
fn mqtt_3_3_2_2_publish_topic_with_wildcard_closes_connection() {
    let mut h = Harness::start("");
    for (topic, qos) in [
        (&b"a/+"[..], 0u8),
        (b"a/#", 0),
        (b"health/+", 1),
        (b"health/#", 1),
        (b"health/a+b", 0),
        (b"#", 0),
    ] {
        let case = format!("PUBLISH QoS {qos} to {:?}", String::from_utf8_lossy(topic));
        after_connect_closes(
            &mut h,
            &case,
            &publish_packet(topic, qos, 1, b"wild", false),
        );
    }
}

#[test]
fn mqtt_4_7_3_1_publish_empty_topic_closes_connection() {
    let mut h = Harness::start("");
    after_connect_closes(
        &mut h,
        "PUBLISH QoS 0 empty topic",
        &publish_packet(b"", 0, 0, b"x", false),
    );
    after_connect_closes(
        &mut h,
        "PUBLISH QoS 1 empty topic",
        &publish_packet(b"", 1, 1, b"x", false),
    );
}

#[test]
fn mqtt_1_5_3_1_publish_invalid_utf8_topic_closes_connection() {
    let mut h = Harness::start("");
    after_connect_closes(
        &mut h,
        "PUBLISH topic health/\\xC3\\x28",
        &publish_packet(b"health/\xC3\x28", 0, 0, b"x", false),
    );
    after_connect_closes(
        &mut h,
        "PUBLISH topic with a UTF-16 surrogate (ED A0 80)",
        &publish_packet(b"health/\xED\xA0\x80", 1, 1, b"x", false),
    );
}

#[test]
fn mqtt_1_5_3_2_publish_topic_with_null_character_closes_connection() {
    let mut h = Harness::start("");
    after_connect_closes(
        &mut h,
        "PUBLISH topic health/a\\0b",
        &publish_packet(b"health/a\0b", 0, 0, b"x", false),
    );
}

#[test]
fn mqtt_3_3_1_4_publish_qos_3_closes_connection() {
    let mut h = Harness::start("");
    let mut p = publish_packet(b"health/q3", 1, 1, b"x", false);
    p[0] = 0x36;
    after_connect_closes(&mut h, "PUBLISH header 0x36 (QoS 3)", &p);
}

#[test]
fn mqtt_2_3_1_1_packet_id_zero_closes_connection() {
    let mut h = Harness::start("");
    after_connect_closes(
        &mut h,
        "QoS 1 PUBLISH with packet id 0",
        &publish_packet(b"health/pkid0", 1, 0, b"x", false),
    );
    after_connect_closes(
        &mut h,
        "QoS 2 PUBLISH with packet id 0",
        &publish_packet(b"health/pkid0", 2, 0, b"x", false),
    );
    after_connect_closes(
        &mut h,
        "SUBSCRIBE with packet id 0",
        &subscribe_packet(0, &[(b"x/y", 0)]),
    );
    let mut unsub = vec![0xA2, 0x05, 0x00, 0x00];
    unsub.extend_from_slice(&utf8_field(b"x"));
    after_connect_closes(&mut h, "UNSUBSCRIBE with packet id 0", &unsub);
}

// ---------------------------------------------------------------------------------------
// SUBSCRIBE / UNSUBSCRIBE
// ---------------------------------------------------------------------------------------

#[test]
fn mqtt_3_8_3_3_subscribe_without_filters_closes_connection() {
    let mut h = Harness::start("");
    after_connect_closes(
        &mut h,
        "SUBSCRIBE with no filters",
        &[0x82, 0x02, 0x00, 0x01],
    );
}

#[test]
fn mqtt_3_8_3_4_subscribe_options_reserved_bits_close_connection() {
    let mut h = Harness::start("");
    for (case, options) in [
        ("options 0x04 (reserved bit 2)", 0x04u8),
        ("options 0xC1 (upper bits)", 0xC1),
        ("options 0x80", 0x80),
        ("options 0x03 (QoS 3)", 0x03),
    ] {
        after_connect_closes(&mut h, case, &subscribe_packet(1, &[(b"opt/t", options)]));
    }
    // A bad option in the second filter closes too, without a SUBACK for the first.
    after_connect_closes(
        &mut h,
        "second filter with options 0x10",
        &subscribe_packet(1, &[(b"opt/a", 0), (b"opt/b", 0x10)]),
    );
}

#[test]
fn mqtt_3_10_3_2_unsubscribe_without_filters_closes_connection() {
    let mut h = Harness::start("");
    after_connect_closes(
        &mut h,
        "UNSUBSCRIBE with no filters",
        &[0xA2, 0x02, 0x00, 0x01],
    );
}

// ---------------------------------------------------------------------------------------
// Soak
// ---------------------------------------------------------------------------------------

#[test]
fn mqtt_4_8_0_1_soak_200_connections_of_random_bytes() {
    let mut h = Harness::start("connect_timeout = 2\n");
    let addr = h.addr();
    let started = Instant::now();
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            thread::spawn(move || {
                let mut rng = common::rng::Rng::new(0x9E37_79B9_7F4A_7C15 ^ (w + 1));
                let mut not_closed = Vec::new();
                for i in 0..50 {
                    let mut s = TcpStream::connect(addr).expect("connect");
                    // Half the connections get past CONNECT first, so the post-CONNECT
                    // decoder sees the garbage too.
                    if i % 2 == 1 {
                        s.write_all(&connect_packet(&format!("soak-{w}-{i}")))
                            .expect("write CONNECT");
                    }
                    let len = 1 + (rng.next_u64() % 512) as usize;
                    let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
                    // The broker may close while we write: that is fine.
                    let _ = s.write_all(&bytes);
                    let _ = s.shutdown(Shutdown::Write);
                    if read_until_closed(&mut s, CLOSE_WITHIN).is_none() {
                        not_closed.push((i, bytes[..bytes.len().min(16)].to_vec()));
                    }
                }
                not_closed
            })
        })
        .collect();
    let mut not_closed = Vec::new();
    for w in workers {
        not_closed.extend(w.join().expect("soak worker panicked"));
    }
    assert!(
        not_closed.is_empty(),
        "connections not closed after random bytes and EOF (index, first bytes): {not_closed:02x?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "soak took {:?}",
        started.elapsed()
    );
    h.assert_still_serving("200 random-byte connections");
}
