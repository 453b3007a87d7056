//! Issue 12, finding 8: persistent state is bounded. Sessions that would never expire end
//! after `persistent_client_expiration` (also across a kill -9 and restart), 5.0 clients
//! get at most `max_session_expiry_interval`, and above `memory_limit` new messages and
//! sessions are refused with the specification's answers while nothing acknowledged is
//! lost. Each attack goes over a real socket to the real broker.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

const PUBACK: u8 = 0x40;
const PUBREC: u8 = 0x50;
const QUOTA_EXCEEDED: u8 = 0x97;
const SESSION_EXPIRY_INTERVAL: u8 = 0x11;

/// An MQTT 3.1.1 CONNECT, keep-alive 60, with the given Clean Session flag.
fn connect_311(client_id: &str, clean: bool) -> Vec<u8> {
    packets::connect311(client_id, clean, 60, None)
}

/// An MQTT 5.0 CONNECT, keep-alive 60, with Clean Start and an optional Session Expiry
/// Interval property.
fn connect_v5(client_id: &str, clean: bool, expiry: Option<u32>) -> Vec<u8> {
    let props: Vec<packets::Prop> = expiry
        .map(|e| packets::Prop::Four(SESSION_EXPIRY_INTERVAL, e))
        .into_iter()
        .collect();
    packets::connect5(client_id, clean, 60, &props, None)
}

/// An MQTT 5.0 PUBLISH without properties.
fn publish_v5(topic: &str, qos: u8, pkid: u16, payload: &[u8]) -> Vec<u8> {
    packets::publish5(topic, qos, pkid, false, &[], payload)
}

/// Sends a CONNECT and returns the socket and the CONNACK body.
fn connack(addr: SocketAddr, connect: &[u8]) -> (TcpStream, Vec<u8>) {
    let mut s = raw(addr);
    s.write_all(connect).expect("write CONNECT");
    let (h, body) = read_packet(&mut s);
    assert_eq!(h, 0x20, "CONNACK expected, got {h:#04x} {body:?}");
    (s, body)
}

/// Connects a 3.1.1 client and returns whether the broker had a session for it.
fn session_present_311(addr: SocketAddr, client_id: &str) -> (TcpStream, bool) {
    let (s, body) = connack(addr, &connect_311(client_id, false));
    assert_eq!(body.len(), 2);
    assert_eq!(body[1], 0x00, "{client_id}: CONNACK accepted");
    (s, body[0] & 1 == 1)
}

/// A persistent 3.1.1 client that subscribes to `filter` at QoS 1 and disconnects.
fn leave_persistent_session(addr: SocketAddr, client_id: &str, filter: &str) {
    let (mut s, _) = session_present_311(addr, client_id);
    s.write_all(&subscribe_packet(1, &[(filter.as_bytes(), 1)]))
        .expect("write SUBSCRIBE");
    let (h, body) = read_packet(&mut s);
    assert_eq!((h, body), (0x90, vec![0, 1, 1]), "SUBACK");
    s.write_all(&[0xE0, 0x00]).expect("write DISCONNECT");
    assert!(
        read_until_closed(&mut s, Duration::from_secs(5)).is_some(),
        "closed after DISCONNECT"
    );
}

/// The Session Expiry Interval property of a 5.0 CONNACK body, if it carries one.
fn connack_session_expiry(body: &[u8]) -> Option<u32> {
    let (mut len, mut at, mut shift) = (0usize, 2usize, 0);
    loop {
        let b = body[at];
        len |= usize::from(b & 0x7F) << shift;
        at += 1;
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    let props = &body[at..at + len];
    let mut i = 0;
    let mut found = None;
    while i < props.len() {
        let id = props[i];
        i += 1;
        let n = match id {
            0x11 | 0x27 => 4,
            0x21 | 0x22 | 0x13 => 2,
            0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            0x12 | 0x1A | 0x1C | 0x1F | 0x15 => {
                2 + usize::from(u16::from_be_bytes([props[i], props[i + 1]]))
            }
            0x16 => 2 + usize::from(u16::from_be_bytes([props[i], props[i + 1]])),
            0x26 => {
                let k = 2 + usize::from(u16::from_be_bytes([props[i], props[i + 1]]));
                k + 2 + usize::from(u16::from_be_bytes([props[i + k], props[i + k + 1]]))
            }
            other => panic!("unexpected CONNACK property {other:#04x} in {body:?}"),
        };
        if id == SESSION_EXPIRY_INTERVAL {
            found = Some(u32::from_be_bytes([
                props[i],
                props[i + 1],
                props[i + 2],
                props[i + 3],
            ]));
        }
        i += n;
    }
    found
}

/// Asserts that nothing arrives on `s` for half a second (and it stays open).
fn expect_quiet(s: &mut TcpStream, what: &str) {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut => {}
        Ok(0) => panic!("{what}: connection closed"),
        Ok(n) => panic!("{what}: unexpected bytes {:?}", &buf[..n]),
        Err(e) => panic!("{what}: {e}"),
    }
}

/// Sleeps until `t`.
fn sleep_until(t: Instant) {
    std::thread::sleep(t.saturating_duration_since(Instant::now()));
}

/// A 3.1.1 persistent session (which never expires by the protocol) ends once it has
/// been offline for `persistent_client_expiration`; one whose client came back in time
/// is kept, and its clock starts again at the next disconnection.
#[test]
fn persistent_client_expiration_ends_a_3_1_1_persistent_session() {
    let b = Broker::start("persistent_client_expiration = \"2s\"\n");
    let addr = b.addr();
    leave_persistent_session(addr, "pce-gone", "pce/gone");
    leave_persistent_session(addr, "pce-back", "pce/back");
    let left = Instant::now();

    // Back after 1 s, within the 2 s: still there.
    sleep_until(left + Duration::from_secs(1));
    let (mut back, present) = session_present_311(addr, "pce-back");
    assert!(
        present,
        "a session resumed within persistent_client_expiration is kept"
    );

    // Well past 2 s for the one that stayed away (the sweeper acts within 250 ms).
    sleep_until(left + Duration::from_millis(3500));
    let (mut gone, present) = session_present_311(addr, "pce-gone");
    assert!(
        !present,
        "the session offline for longer than 2 s has ended"
    );
    assert!(
        b.wait_event("session_expired", Duration::from_secs(1)),
        "the expiry is logged"
    );
    // Its subscription went with it: a message to its old topic does not reach it.
    let mut p = raw_connected(addr, "pce-pub");
    p.write_all(&publish_packet(b"pce/gone", 1, 1, b"after", false))
        .expect("write PUBLISH");
    let (h, _) = read_packet(&mut p);
    assert_eq!(h, PUBACK);
    expect_quiet(&mut gone, "the new session has no subscription");
    back.write_all(&[0xE0, 0x00]).expect("write DISCONNECT");
    b.assert_serves_healthy_client("pce");
}

/// The expiry survives a kill -9: it counts from the disconnection the store recorded,
/// not from the restart. With 6 s and a restart 3 s after the disconnection, the session
/// is gone at 6.8 s; counted from the restart it would live until at least 9 s.
#[test]
fn persistent_client_expiration_counts_from_the_disconnection_across_a_kill_9_restart() {
    let mut b = Broker::start("persistent_client_expiration = \"6s\"\n");
    leave_persistent_session(b.addr(), "pce-crash", "pce/crash");
    let left = Instant::now();
    leave_persistent_session(b.addr(), "pce-survivor", "pce/survivor");

    sleep_until(left + Duration::from_secs(3));
    b.kill();
    b.spawn();
    // The restart itself keeps persistent sessions.
    let (mut s, present) = session_present_311(b.addr(), "pce-survivor");
    assert!(present, "a persistent session survives the restart");
    s.write_all(&[0xE0, 0x00]).expect("write DISCONNECT");

    sleep_until(left + Duration::from_millis(6800));
    let (_s, present) = session_present_311(b.addr(), "pce-crash");
    assert!(
        !present,
        "expired 6 s after its disconnection, the restart in between notwithstanding"
    );
    b.assert_serves_healthy_client("pce-restart");
}

/// 5.0 §3.2.2.3.2 (an unnumbered rule): a server that uses a Session Expiry Interval other
/// than the client's sends it in CONNACK. A 5.0 client asking for 0xFFFFFFFF ("never")
/// or anything above `max_session_expiry_interval` gets the maximum; one asking for less
/// gets what it asked, and no property.
#[test]
fn mqtt_3_2_2_session_expiry_above_the_maximum_is_reduced_and_sent_in_connack() {
    let b = Broker::start("max_session_expiry_interval = 3600\n");
    for (id, asked, told) in [
        ("sei-never", u32::MAX, Some(3600)),
        ("sei-long", 86_400, Some(3600)),
        ("sei-short", 60, None),
        ("sei-max", 3600, None),
    ] {
        let (_s, body) = connack(b.addr(), &connect_v5(id, true, Some(asked)));
        assert_eq!(body[1], 0x00, "{id}: accepted");
        assert_eq!(connack_session_expiry(&body), told, "{id} asked {asked}");
    }
    b.assert_serves_healthy_client("sei");
}

/// The default maximum (30 days) applies without any configuration: "never" is not
/// granted.
#[test]
fn a_5_0_client_asking_never_gets_the_default_maximum() {
    let b = Broker::start("");
    let (_s, body) = connack(b.addr(), &connect_v5("sei-default", true, Some(u32::MAX)));
    assert_eq!(body[1], 0x00);
    assert_eq!(connack_session_expiry(&body), Some(30 * 24 * 3600));
}

/// A publisher filling an offline persistent session's queue (no per-client queue
/// limit) runs into `memory_limit`: its QoS 1 PUBLISHes get PUBACK 0x97 and a QoS 2 one
/// PUBREC 0x97 (5.0); a 3.1.1 QoS 1 publisher is disconnected without a PUBACK; new
/// sessions are refused (CONNACK 0x97 / 0x03). RSS stays bounded, every message that was
/// acknowledged is delivered when the subscriber returns, and then others are served.
#[test]
fn memory_limit_refuses_new_messages_and_sessions_and_loses_nothing_acknowledged() {
    const LIMIT: usize = 4 << 20;
    const PAYLOAD: usize = 64 << 10;
    const ATTEMPTS: u16 = 600; // 37.5 MiB offered, nine times the limit
                               // Without persistence the offline queue lives in memory (with it, it would go to
                               // the spool on disk and take none: see tests/spool.rs).
    let b = Broker::start(&format!(
        "memory_limit = {LIMIT}\nmax_queued_messages = 0\nmax_queued_bytes = 0\n\
         [persistence]\nenabled = false\n"
    ));
    let addr = b.addr();
    leave_persistent_session(addr, "mem-sub", "mem/#");
    let rss_before = b.rss_kib();

    // Connected before the limit is reached: a new session would be refused after.
    let mut p311 = raw_connected(addr, "mem-pub-311");
    let (mut p, body) = connack(addr, &connect_v5("mem-pub", true, None));
    assert_eq!(body[1], 0x00);
    let payload = vec![b'x'; PAYLOAD];
    let mut acked = Vec::new();
    let mut refused = 0u32;
    for pkid in 1..=ATTEMPTS {
        p.write_all(&publish_v5("mem/q", 1, pkid, &payload))
            .expect("write PUBLISH");
        let (h, ack) = read_packet(&mut p);
        assert_eq!(h, PUBACK, "PUBACK expected");
        assert_eq!(ack[..2], pkid.to_be_bytes());
        match ack.get(2).copied().unwrap_or(0) {
            0x00 => {
                assert_eq!(
                    refused, 0,
                    "nothing is accepted again while above the limit"
                );
                acked.push(pkid);
            }
            QUOTA_EXCEEDED => refused += 1,
            other => panic!("PUBACK reason {other:#04x}"),
        }
    }
    assert!(refused > 0, "the limit was reached");
    let acked_bytes = acked.len() * PAYLOAD;
    assert!(
        acked_bytes <= LIMIT,
        "{} messages acknowledged: {acked_bytes} bytes, above the {LIMIT} limit",
        acked.len()
    );
    assert!(
        acked_bytes >= LIMIT / 2,
        "the limit counts what is held, not much more: only {acked_bytes} bytes taken"
    );

    // Small messages still fit in what is left, until nothing does.
    let mut small_acked = 0u32;
    let mut full = false;
    for pkid in 1001..=3000u16 {
        p.write_all(&publish_v5("mem/s", 1, pkid, &[b's'; 100]))
            .expect("write PUBLISH");
        let (h, ack) = read_packet(&mut p);
        assert_eq!(
            (h, ack[..2].to_vec()),
            (PUBACK, pkid.to_be_bytes().to_vec())
        );
        if ack.get(2).copied().unwrap_or(0) == QUOTA_EXCEEDED {
            full = true;
            break;
        }
        small_acked += 1;
    }
    assert!(
        full,
        "100-byte messages fill the last {} KiB",
        (LIMIT - acked_bytes) >> 10
    );

    // QoS 2 from 5.0: PUBREC 0x97, which ends the flow.
    p.write_all(&publish_v5("mem/q", 2, 9000, &payload))
        .expect("write PUBLISH");
    let (h, ack) = read_packet(&mut p);
    assert_eq!(
        (h, ack[..2].to_vec(), ack.get(2).copied()),
        (PUBREC, vec![0x23, 0x28], Some(QUOTA_EXCEEDED))
    );

    // 3.1.1 QoS 1: no way to refuse in a PUBACK, so no PUBACK and the connection closes.
    p311.write_all(&publish_packet(b"mem/q", 1, 7, &payload, false))
        .expect("write PUBLISH");
    let rest = read_until_closed(&mut p311, Duration::from_secs(5))
        .expect("a 3.1.1 publisher above memory_limit is disconnected");
    assert!(rest.is_empty(), "no PUBACK for a refused message: {rest:?}");

    // New sessions are refused; the session that holds the messages is not. (Long
    // client ids: what the departed 3.1.1 publisher's session gave back, plus what was
    // left below the limit, must not be enough for the new session's cost.)
    let long = "x".repeat(4000);
    let (_s, body) = connack(addr, &connect_v5(&format!("mem-new-5-{long}"), true, None));
    assert_eq!(body[1], QUOTA_EXCEEDED, "5.0 CONNACK 0x97");
    let (_s, body) = connack(addr, &connect_311(&format!("mem-new-311-{long}"), true));
    assert_eq!(body, [0x00, 0x03], "3.1.1 CONNACK 0x03 Server unavailable");
    assert!(
        b.wait_event("memory_limit", Duration::from_secs(1)),
        "the limit is logged"
    );

    let rss_after = b.rss_kib();
    let growth = rss_after.saturating_sub(rss_before);
    eprintln!(
        "memory_limit {} KiB: {} x 64 KiB + {small_acked} x 100 B acknowledged, {refused} refused; \
         RSS {rss_before} -> {rss_after} KiB (peak {} KiB)",
        LIMIT >> 10,
        acked.len(),
        b.peak_rss_kib()
    );
    assert!(
        growth < 6 * (LIMIT as u64 >> 10),
        "RSS grew {growth} KiB with a {} KiB limit ({} KiB offered)",
        LIMIT >> 10,
        (usize::from(ATTEMPTS) * PAYLOAD) >> 10
    );

    // The subscriber comes back: every acknowledged message, in order, nothing else.
    let (mut sub, present) = session_present_311(addr, "mem-sub");
    assert!(present);
    let expected = acked.len() + small_acked as usize;
    for i in 0..expected {
        let (h, body) = read_packet(&mut sub);
        assert_eq!(h & 0xF0, 0x30, "PUBLISH {i} of {expected}");
        let (topic, got) = parse_publish(h, &body);
        if i < acked.len() {
            assert_eq!((topic.as_str(), got.len()), ("mem/q", PAYLOAD), "{i}");
        } else {
            assert_eq!((topic.as_str(), got.len()), ("mem/s", 100), "{i}");
        }
        let pkid = &body[2 + topic.len()..4 + topic.len()];
        sub.write_all(&[PUBACK, 0x02, pkid[0], pkid[1]])
            .expect("write PUBACK");
    }
    expect_quiet(&mut sub, "nothing more than what was acknowledged");

    // Drained: the memory is given back and the broker takes messages and clients again.
    p.write_all(&publish_v5("mem/q", 1, 9001, b"again"))
        .expect("write PUBLISH");
    let (h, ack) = read_packet(&mut p);
    assert_eq!((h, ack.get(2).copied().unwrap_or(0)), (PUBACK, 0x00));
    b.assert_serves_healthy_client("mem");
}

/// A retained PUBLISH (QoS 1, retain=1) on a 5.0 connection.
fn retained_v5(topic: &str, pkid: u16, payload: &[u8]) -> Vec<u8> {
    packets::publish5(topic, 1, pkid, true, &[], payload)
}

/// Retained messages count towards `memory_limit` too: a flood of them on distinct topics
/// is refused with PUBACK 0x97 once the limit is reached, and a refused one is not
/// retained. Clearing retained messages (empty payload) is still accepted, and gives the
/// memory back.
#[test]
fn memory_limit_refuses_retained_messages_and_lets_clearing_through() {
    const LIMIT: usize = 2 << 20;
    const PAYLOAD: usize = 32 << 10;
    let b = Broker::start(&format!("memory_limit = {LIMIT}\n"));
    let addr = b.addr();
    // Connected before the flood: new sessions are refused once memory is full.
    let mut sub = raw_connected(addr, "ret-sub");
    let (mut p, body) = connack(addr, &connect_v5("ret-pub", true, None));
    assert_eq!(body[1], 0x00);
    let payload = vec![b'r'; PAYLOAD];
    let mut retained = 0u16;
    let mut refused_topic = None;
    for i in 1..=400u16 {
        let topic = format!("ret/{i}");
        p.write_all(&retained_v5(&topic, i, &payload))
            .expect("write PUBLISH");
        let (h, ack) = read_packet(&mut p);
        assert_eq!(h, PUBACK);
        // 0x10: no subscriber matched; the message is retained all the same.
        match ack.get(2).copied().unwrap_or(0) {
            0x00 | 0x10 => retained = i,
            QUOTA_EXCEEDED => {
                refused_topic = Some(topic);
                break;
            }
            other => panic!("PUBACK reason {other:#04x}"),
        }
    }
    let refused_topic = refused_topic.expect("the retained flood reached the limit");
    assert!(usize::from(retained) * PAYLOAD <= LIMIT);

    // Every accepted one is retained, the refused one is not.
    sub.write_all(&subscribe_packet(1, &[(b"ret/#", 0)]))
        .expect("write SUBSCRIBE");
    let (h, _) = read_packet(&mut sub);
    assert_eq!(h, 0x90, "SUBACK");
    let mut topics = Vec::new();
    for _ in 0..retained {
        let (h, body) = read_packet(&mut sub);
        let (topic, got) = parse_publish(h, &body);
        assert_eq!(got.len(), PAYLOAD);
        topics.push(topic);
    }
    assert!(
        !topics.contains(&refused_topic),
        "a refused message is not retained"
    );
    expect_quiet(&mut sub, "nothing beyond the accepted retained messages");
    sub.write_all(&[0xE0, 0x00]).expect("write DISCONNECT");

    // Clearing is accepted above the limit, and frees room for a new message.
    for i in 1..=retained {
        p.write_all(&retained_v5(&format!("ret/{i}"), 5000 + i, b""))
            .expect("write PUBLISH");
        let (h, ack) = read_packet(&mut p);
        let code = ack.get(2).copied().unwrap_or(0);
        assert!(
            h == PUBACK && (code == 0x00 || code == 0x10),
            "clear ret/{i}: {code:#04x}"
        );
    }
    p.write_all(&retained_v5(&refused_topic, 9000, &payload))
        .expect("write PUBLISH");
    let (h, ack) = read_packet(&mut p);
    let code = ack.get(2).copied().unwrap_or(0);
    assert!(
        h == PUBACK && (code == 0x00 || code == 0x10),
        "accepted again: {code:#04x}"
    );
    b.assert_serves_healthy_client("ret");
}

/// Ten thousand idle persistent sessions: each expires on time, and the broker keeps
/// serving meanwhile (the sweeper looks only at the sessions that are due).
#[test]
fn ten_thousand_idle_persistent_sessions_all_expire() {
    const SESSIONS: usize = 10_000;
    const THREADS: usize = 4;
    let b = Broker::start("persistent_client_expiration = \"3s\"\n");
    let addr = b.addr();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            scope.spawn(move || {
                for i in (t..SESSIONS).step_by(THREADS) {
                    let (mut s, body) = connack(addr, &connect_311(&format!("idle-{i}"), false));
                    assert_eq!(body, [0x00, 0x00], "idle-{i}");
                    s.write_all(&[0xE0, 0x00]).expect("write DISCONNECT");
                    assert!(read_until_closed(&mut s, Duration::from_secs(5)).is_some());
                }
            });
        }
    });
    let created = started.elapsed();
    b.assert_serves_healthy_client("idle-created");

    // Every one has been offline for more than 3 s once 3.5 s have passed since the last.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut expired = 0;
    while Instant::now() < deadline {
        expired = b.event_count("session_expired", &[]);
        if expired >= SESSIONS {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        expired, SESSIONS,
        "all idle sessions expired (created in {created:?})"
    );
    for i in [0, SESSIONS / 2, SESSIONS - 1] {
        let (_s, present) = session_present_311(addr, &format!("idle-{i}"));
        assert!(!present, "idle-{i} expired");
    }
    b.assert_serves_healthy_client("idle-expired");
}
