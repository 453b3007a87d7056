//! Issue 12, topics: deep topics, retained messages on SUBSCRIBE, overlapping
//! subscriptions. Each attack goes over a real socket to the real broker; each test
//! checks the spec's answer, what the broker holds, and that a healthy client is still
//! served.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

/// How long to listen before concluding that nothing more arrives.
const QUIET: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------------------------------
// Raw MQTT 5.0 bytes (only what these tests need)
// ---------------------------------------------------------------------------------------

use packets::{frame, put_str};

/// A 5.0 CONNECT (clean start, keep-alive 60, no properties) with an optional will.
fn connect5(client_id: &str, will: Option<(&str, &[u8])>) -> Vec<u8> {
    packets::connect5(client_id, true, 60, &[], will.map(|(t, p)| (t, p, &[][..])))
}

/// A 5.0 SUBSCRIBE, with a Subscription Identifier when `sub_id` is set.
fn subscribe5(pkid: u16, filters: &[(&[u8], u8)], sub_id: Option<u32>) -> Vec<u8> {
    let props: Vec<packets::Prop> = sub_id
        .map(|id| packets::Prop::Var(packets::SUBSCRIPTION_ID, id))
        .into_iter()
        .collect();
    packets::subscribe_bytes(Some(&props), pkid, filters)
}

/// The reason codes of a 5.0 SUBACK body.
fn suback5_codes(body: &[u8]) -> Vec<u8> {
    packets::Pkt {
        byte1: 0x90,
        body: body.to_vec(),
        v5: true,
    }
    .reasons()
}

/// Connects with 5.0 and checks CONNACK success.
fn connected5(addr: SocketAddr, client_id: &str) -> TcpStream {
    let mut s = raw(addr);
    s.write_all(&connect5(client_id, None)).expect("CONNECT");
    let (h, body) = read_packet(&mut s);
    assert_eq!(h, 0x20, "CONNACK expected, got {h:#x} {body:?}");
    assert_eq!(body[1], 0x00, "CONNACK success for {client_id}");
    s
}

/// Reads packets until `QUIET` passes without one (bounded by `limit` overall): every
/// packet that arrived, in order.
fn drain(s: &mut TcpStream, limit: Duration) -> Vec<(u8, Vec<u8>)> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    s.set_read_timeout(Some(QUIET)).expect("timeout");
    while Instant::now() < deadline {
        match std::io::Read::read(s, &mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    let packets = split_packets(&buf);
    got.extend(packets);
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    got
}

/// SUBACK return codes of a 3.1.1 SUBACK read from `s`.
fn suback(s: &mut TcpStream) -> Vec<u8> {
    let (h, body) = read_packet(s);
    assert_eq!(h, 0x90, "SUBACK expected, got {h:#x}");
    body[2..].to_vec()
}

/// A topic (or filter) of `levels` levels: `a/a/.../a`.
fn levels(n: usize) -> String {
    vec!["a"; n].join("/")
}

// ---------------------------------------------------------------------------------------
// Finding 1: deep topics
// ---------------------------------------------------------------------------------------

/// The attack: one 180 KB SUBSCRIBE with three 60,000-level filters. With the
/// default max_topic_levels (200) each filter is refused (3.1.1: 0x80, 5.0: 0x8F
/// [MQTT-3.9.3]) and the broker's memory does not move.
#[test]
fn mqtt_3_8_4_5_three_60000_level_filters_refused_by_default_memory_flat() {
    let b = Broker::start("");
    let deep: Vec<String> = (0..3)
        .map(|i| format!("{i}{}", "/".repeat(59_999)))
        .collect();
    let filters: Vec<(&[u8], u8)> = deep.iter().map(|f| (f.as_bytes(), 0)).collect();
    let before = b.rss_kib();
    let mut s = raw_connected(b.addr(), "deep-311");
    for round in 0..5u16 {
        s.write_all(&subscribe_packet(round + 1, &filters))
            .expect("SUBSCRIBE");
        assert_eq!(suback(&mut s), [0x80; 3], "3.1.1 failure codes");
    }
    let mut v5 = connected5(b.addr(), "deep-5");
    v5.write_all(&subscribe5(1, &filters, None))
        .expect("SUBSCRIBE");
    let (h, body) = read_packet(&mut v5);
    assert_eq!(h, 0x90);
    assert_eq!(suback5_codes(&body), [0x8F; 3], "5.0 Topic Filter invalid");
    // A filter at the limit is fine.
    let at_limit = levels(200);
    s.write_all(&subscribe_packet(9, &[(at_limit.as_bytes(), 0)]))
        .expect("SUBSCRIBE");
    assert_eq!(suback(&mut s), [0x00]);
    let growth = b.rss_kib().saturating_sub(before);
    eprintln!("refused deep SUBSCRIBEs: RSS +{growth} KiB");
    assert!(growth < 8 * 1024, "RSS grew by {growth} KiB");
    b.assert_serves_healthy_client("deep-subscribe");
}

/// Without the level limit (max_topic_levels = 0) the same attack is accepted, and what
/// it costs stays close to its bytes: a chain of single-child levels is one node in the
/// subscription trie. Before, each level cost ~300 bytes: ~50 MB for this packet.
#[test]
fn deep_filters_cost_close_to_their_bytes_when_levels_are_unlimited() {
    let b = Broker::start("max_topic_levels = 0");
    let deep: Vec<String> = (0..3)
        .map(|i| format!("{i}{}", "/".repeat(59_999)))
        .collect();
    let filters: Vec<(&[u8], u8)> = deep.iter().map(|f| (f.as_bytes(), 0)).collect();
    let mut s = raw_connected(b.addr(), "deep-unlimited");
    // Warm up the connection's buffers first, so the growth measured is the trie's.
    let small: Vec<String> = (0..3).map(|i| format!("{i}/x")).collect();
    let small_f: Vec<(&[u8], u8)> = small.iter().map(|f| (f.as_bytes(), 0)).collect();
    s.write_all(&subscribe_packet(1, &small_f))
        .expect("SUBSCRIBE");
    assert_eq!(suback(&mut s), [0; 3]);
    let before = b.rss_kib();
    s.write_all(&subscribe_packet(2, &filters))
        .expect("SUBSCRIBE");
    assert_eq!(suback(&mut s), [0; 3], "granted: no level limit");
    let growth = b.rss_kib().saturating_sub(before);
    eprintln!("3 x 60,000-level filters: RSS +{growth} KiB");
    // 180 KB of filters, held by the session and the trie, plus the read buffer.
    assert!(growth < 8 * 1024, "RSS grew by {growth} KiB");
    // The same for retained messages on deep topics (the retained tree).
    let mut r = raw_connected(b.addr(), "deep-retainer");
    let before = b.rss_kib();
    for i in 0..3u16 {
        let topic = format!("r{i}{}", "/".repeat(59_999));
        r.write_all(&publish_packet(topic.as_bytes(), 1, i + 1, b"kept", true))
            .expect("PUBLISH");
        assert_eq!(read_packet(&mut r).0, 0x40, "PUBACK");
    }
    let growth = b.rss_kib().saturating_sub(before);
    eprintln!("3 retained messages on 60,000-level topics: RSS +{growth} KiB");
    assert!(growth < 8 * 1024, "RSS grew by {growth} KiB");
    // A message on one of them is delivered: the compressed trie still matches.
    let topic = format!("1{}", "/".repeat(59_999));
    let mut p = raw_connected(b.addr(), "deep-pub");
    p.write_all(&publish_packet(topic.as_bytes(), 0, 0, b"deep", false))
        .expect("PUBLISH");
    let (h, body) = read_packet(&mut s);
    assert_eq!(h & 0xF0, 0x30);
    assert_eq!(parse_publish(h, &body), (topic, b"deep".to_vec()));
    b.assert_serves_healthy_client("deep-unlimited");
}

/// A PUBLISH deeper than max_topic_levels: 3.1.1 closes the connection, 5.0 sends
/// DISCONNECT 0x90 Topic Name invalid first. One at the limit is delivered.
#[test]
fn mqtt5_3_3_2_publish_deeper_than_max_topic_levels_disconnects_with_0x90() {
    let b = Broker::start("");
    let mut ok = raw_connected(b.addr(), "pub-at-limit");
    ok.write_all(&publish_packet(levels(200).as_bytes(), 1, 1, b"x", false))
        .expect("PUBLISH");
    let (h, _) = read_packet(&mut ok);
    assert_eq!(h, 0x40, "PUBACK for a topic at the limit");

    let mut s = raw_connected(b.addr(), "pub-deep-311");
    s.write_all(&publish_packet(levels(201).as_bytes(), 1, 1, b"x", false))
        .expect("PUBLISH");
    let rest = read_until_closed(&mut s, Duration::from_secs(5)).expect("closed");
    assert!(rest.is_empty(), "3.1.1: closed without an answer: {rest:?}");

    let mut v5 = connected5(b.addr(), "pub-deep-5");
    let topic = "/".repeat(60_000);
    let mut body = Vec::new();
    put_str(&mut body, topic.as_bytes());
    body.push(0); // properties
    body.extend_from_slice(b"x");
    v5.write_all(&frame(0x30, body)).expect("PUBLISH");
    let rest = read_until_closed(&mut v5, Duration::from_secs(5)).expect("closed");
    let packets = split_packets(&rest);
    assert_eq!(packets.len(), 1, "{packets:?}");
    assert_eq!(packets[0].0, 0xE0, "DISCONNECT");
    assert_eq!(packets[0].1[0], 0x90, "Topic Name invalid");
    b.assert_serves_healthy_client("deep-publish");
}

/// A will topic deeper than max_topic_levels: 5.0 gets CONNACK 0x90 (the Will Topic is
/// well formed but not accepted by this server); 3.1.1 has no such return code, so the
/// connection is closed without a CONNACK.
#[test]
fn mqtt5_3_2_2_will_topic_deeper_than_max_topic_levels_gets_connack_0x90() {
    let b = Broker::start("");
    let deep = levels(5_000);
    let mut v5 = raw(b.addr());
    v5.write_all(&connect5("will-deep-5", Some((&deep, b"bye"))))
        .expect("CONNECT");
    let (h, body) = read_packet(&mut v5);
    assert_eq!(h, 0x20, "CONNACK");
    assert_eq!(body[1], 0x90, "Topic Name invalid");
    assert!(read_until_closed(&mut v5, Duration::from_secs(5)).is_some());

    let mut s = raw(b.addr());
    s.write_all(&connect_packet_with(
        "will-deep-311",
        None,
        None,
        Some((&deep, b"bye")),
    ))
    .expect("CONNECT");
    let rest = read_until_closed(&mut s, Duration::from_secs(5)).expect("closed");
    assert!(rest.is_empty(), "no CONNACK for 3.1.1: {rest:?}");

    // At the limit: accepted.
    let (_ok, code) = raw_connack(
        b.addr(),
        &connect_packet_with("will-ok", None, None, Some((&levels(200), b"bye"))),
    );
    assert_eq!(code, 0);
    b.assert_serves_healthy_client("deep-will");
}

/// Subscriptions and retained messages stored under a larger max_topic_levels are
/// skipped (and counted in one log line) when the broker restarts with a smaller one;
/// the rest comes back.
#[test]
fn stored_entries_deeper_than_max_topic_levels_are_skipped_on_restart() {
    let mut b = Broker::start("max_topic_levels = 0");
    let deep = levels(300);
    // A persistent 3.1.1 session (clean session 0).
    let mut persistent = connect_packet("keeper");
    assert_eq!(persistent[9], 0x02, "connect flags byte");
    persistent[9] = 0x00;
    let mut c = raw(b.addr());
    c.write_all(&persistent).expect("CONNECT");
    assert_eq!(read_exact(&mut c, 4), [0x20, 2, 0, 0]);
    c.write_all(&subscribe_packet(
        1,
        &[(deep.as_bytes(), 1), (b"shallow/#", 1)],
    ))
    .expect("SUBSCRIBE");
    assert_eq!(suback(&mut c), [1, 1]);
    let mut p = raw_connected(b.addr(), "deep-pub");
    p.write_all(&publish_packet(deep.as_bytes(), 1, 1, b"deep", true))
        .expect("PUBLISH");
    assert_eq!(read_packet(&mut p).0, 0x40);
    p.write_all(&publish_packet(b"shallow/t", 1, 2, b"kept", true))
        .expect("PUBLISH");
    assert_eq!(read_packet(&mut p).0, 0x40);
    // Drain what keeper got, then let go of both.
    drain(&mut c, Duration::from_secs(5));
    drop((c, p));
    b.terminate().expect("midge exits after SIGTERM");

    // Back with the default limit (200).
    std::fs::write(
        &b.config_path,
        format!("[[listener]]\nbind = \"127.0.0.1\"\nport = {}\n", b.port),
    )
    .expect("rewrite config");
    b.spawn();
    assert!(
        b.wait_event("not_restored", Duration::from_secs(5)),
        "the skipped entries are logged"
    );
    assert!(
        b.event_count("not_restored", &[("skipped", "2")]) > 0,
        "one subscription and one retained message skipped"
    );
    let mut c = raw(b.addr());
    c.write_all(&persistent).expect("CONNECT");
    assert_eq!(read_exact(&mut c, 4), [0x20, 2, 1, 0], "session present");
    let mut look = raw_connected(b.addr(), "look");
    look.write_all(&subscribe_packet(1, &[(b"#", 0)]))
        .expect("SUBSCRIBE");
    let packets = drain(&mut look, Duration::from_secs(5));
    assert_eq!(packets[0].0, 0x90);
    let retained: Vec<(String, Vec<u8>)> = packets[1..]
        .iter()
        .map(|(h, body)| parse_publish(*h, body))
        .collect();
    assert_eq!(
        retained,
        [("shallow/t".to_string(), b"kept".to_vec())],
        "only the shallow retained message is back"
    );
    // keeper's shallow subscription is back too.
    let mut p = raw_connected(b.addr(), "pub-again");
    p.write_all(&publish_packet(b"shallow/u", 0, 0, b"live", false))
        .expect("PUBLISH");
    // (The QoS 1 messages keeper left unacknowledged come first: its queue is not a
    // topic tree and is restored whole.)
    let mut live = false;
    for _ in 0..10 {
        let (h, body) = read_packet(&mut c);
        if parse_publish(h, &body) == ("shallow/u".to_string(), b"live".to_vec()) {
            live = true;
            break;
        }
    }
    assert!(live, "the shallow subscription delivers after the restart");
    b.assert_serves_healthy_client("restore");
}

// ---------------------------------------------------------------------------------------
// Finding 2: retained messages on SUBSCRIBE
// ---------------------------------------------------------------------------------------

/// Stores `n` retained messages `r/<i>` and waits until the broker has them all.
fn store_retained(addr: SocketAddr, n: usize) {
    let mut p = raw_connected(addr, "retainer");
    let mut burst = Vec::new();
    for i in 0..n {
        burst.extend(publish_packet(
            format!("r/{i}").as_bytes(),
            0,
            0,
            format!("v{i}").as_bytes(),
            true,
        ));
    }
    // A QoS 1 PUBLISH after them: its PUBACK means they were all handled.
    burst.extend(publish_packet(b"sync", 1, 1, b"", false));
    p.write_all(&burst).expect("PUBLISH burst");
    let (h, _) = read_packet(&mut p);
    assert_eq!(h, 0x40, "PUBACK");
}

/// The K·R attack: 1,000 retained messages and one SUBSCRIBE with 500 copies of
/// `#`. The filter is acted on once [MQTT-3.8.4-3], so each retained message arrives
/// once, and every copy gets its return code [MQTT-3.8.4-5].
#[test]
fn mqtt_3_8_4_3_repeated_filter_in_one_subscribe_sends_retained_once() {
    let b = Broker::start("");
    store_retained(b.addr(), 1000);
    let before = b.rss_kib();
    let mut s = raw_connected(b.addr(), "kr");
    let copies: Vec<(&[u8], u8)> = vec![(b"#", 0); 500];
    s.write_all(&subscribe_packet(1, &copies))
        .expect("SUBSCRIBE");
    let packets = drain(&mut s, Duration::from_secs(20));
    assert_eq!(packets[0].0, 0x90, "SUBACK first");
    assert_eq!(
        &packets[0].1[2..],
        &[0u8; 500][..],
        "500 codes, all granted"
    );
    let mut topics = HashSet::new();
    for (h, body) in &packets[1..] {
        let (topic, _) = parse_publish(*h, body);
        assert!(h & 0x01 == 1, "RETAIN set");
        assert!(topics.insert(topic.clone()), "{topic} arrived twice");
    }
    assert_eq!(topics.len(), 1000, "every retained message, once");
    let growth = b.rss_kib().saturating_sub(before);
    eprintln!("500 x '#' over 1,000 retained: RSS +{growth} KiB");
    assert!(growth < 16 * 1024, "RSS grew by {growth} KiB");
    b.assert_serves_healthy_client("kr");
}

/// Distinct overlapping filters each matching every retained message: what they queue
/// stays within max_queued_messages (drop_oldest drops the excess, counted and logged),
/// where it used to be K·R entries.
#[test]
fn retained_messages_on_subscribe_respect_max_queued_messages() {
    let b = Broker::start("max_queued_messages = 100");
    store_retained(b.addr(), 1000);
    let mut s = raw_connected(b.addr(), "kr-distinct");
    let filters: Vec<String> = (0..200)
        .map(|i| match i {
            0 => "#".to_string(),
            1 => "r/#".to_string(),
            2 => "r/+".to_string(),
            3 => "+/+".to_string(),
            4 => "+/#".to_string(),
            i => format!("r/{i}/#"),
        })
        .collect();
    let f: Vec<(&[u8], u8)> = filters.iter().map(|f| (f.as_bytes(), 1)).collect();
    s.write_all(&subscribe_packet(1, &f)).expect("SUBSCRIBE");
    let packets = drain(&mut s, Duration::from_secs(20));
    assert_eq!(packets[0].0, 0x90, "SUBACK first");
    assert_eq!(&packets[0].1[2..], &[1u8; 200][..]);
    let publishes = packets[1..].iter().filter(|(h, _)| h >> 4 == 3).count();
    // The queue holds at most 100; the inflight window (20) is filled from it.
    assert!(
        (1..=120).contains(&publishes),
        "{publishes} retained PUBLISHes for a queue of 100"
    );
    assert!(
        b.wait_event("queue_full", Duration::from_secs(5)),
        "drops are logged"
    );
    b.assert_serves_healthy_client("kr-distinct");
}

/// Retained messages are queued filter by filter after the SUBACK, yielding in between;
/// a packet pipelined behind the SUBSCRIBE still takes effect after them: the retained
/// (old) value arrives before the live (new) one [MQTT-3.3.1-8].
#[test]
fn mqtt_3_3_1_8_retained_on_subscribe_come_before_packets_pipelined_after_it() {
    let b = Broker::start("");
    let mut r = raw_connected(b.addr(), "order-retainer");
    r.write_all(&publish_packet(b"o/1", 1, 1, b"old", true))
        .expect("PUBLISH");
    assert_eq!(read_packet(&mut r).0, 0x40);
    let mut s = raw_connected(b.addr(), "order");
    let mut burst = subscribe_packet(1, &[(b"o/#", 0), (b"x/#", 0), (b"o/+", 0)]);
    burst.extend(publish_packet(b"o/1", 0, 0, b"new", false));
    s.write_all(&burst).expect("SUBSCRIBE + PUBLISH");
    let packets = drain(&mut s, Duration::from_secs(10));
    let kinds: Vec<(u8, Vec<u8>)> = packets
        .iter()
        .map(|(h, body)| {
            if h >> 4 == 3 {
                (h & 0x01, parse_publish(*h, body).1)
            } else {
                (*h, Vec::new())
            }
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (0x90, Vec::new()),
            (1, b"old".to_vec()),
            (1, b"old".to_vec()),
            (0, b"new".to_vec()),
        ],
        "SUBACK, the retained message once per distinct matching filter, then the live one"
    );
    b.assert_serves_healthy_client("order");
}

/// More filters in one SUBSCRIBE than max_filters_per_subscribe: the first ones are
/// handled, each of the rest gets a failure code (3.1.1: 0x80, 5.0: 0x97 Quota
/// exceeded), and the connection stays up.
#[test]
fn mqtt_3_8_4_5_filters_beyond_max_filters_per_subscribe_refused() {
    let b = Broker::start("");
    let filters: Vec<String> = (0..600).map(|i| format!("f/{i}")).collect();
    let f: Vec<(&[u8], u8)> = filters.iter().map(|f| (f.as_bytes(), 0)).collect();
    let mut s = raw_connected(b.addr(), "many-filters");
    s.write_all(&subscribe_packet(1, &f)).expect("SUBSCRIBE");
    let codes = suback(&mut s);
    assert_eq!(codes.len(), 600, "one code per filter");
    assert!(codes[..500].iter().all(|&c| c == 0));
    assert!(codes[500..].iter().all(|&c| c == 0x80));

    let mut v5 = connected5(b.addr(), "many-filters-5");
    v5.write_all(&subscribe5(1, &f, None)).expect("SUBSCRIBE");
    let (h, body) = read_packet(&mut v5);
    assert_eq!(h, 0x90);
    let codes = suback5_codes(&body);
    assert_eq!(codes.len(), 600);
    assert!(codes[..500].iter().all(|&c| c == 0));
    assert!(codes[500..].iter().all(|&c| c == 0x97));
    // Still connected and served: a ping is answered.
    v5.write_all(&[0xC0, 0]).expect("PINGREQ");
    assert_eq!(read_packet(&mut v5).0, 0xD0);
    b.assert_serves_healthy_client("many-filters");
}

// ---------------------------------------------------------------------------------------
// Finding 4: overlapping subscriptions
// ---------------------------------------------------------------------------------------

/// Subscription identifiers of a 5.0 PUBLISH body (QoS 0).
fn publish5_sub_ids(body: &[u8]) -> Vec<usize> {
    let publish = packets::Pkt {
        byte1: 0x30,
        body: body.to_vec(),
        v5: true,
    }
    .publish();
    assert!(
        publish
            .props
            .iter()
            .all(|p| matches!(p, packets::Prop::Var(packets::SUBSCRIPTION_ID, _))),
        "only Subscription Identifiers expected"
    );
    publish
        .sub_ids()
        .into_iter()
        .map(|id| id as usize)
        .collect()
}

/// One client's 8,192 filters that all match one 13-level topic, each with its own
/// Subscription Identifier: max_subscriptions_per_client (1000) refuses the rest with
/// 0x97, and the PUBLISH it gets carries at most 32 identifiers, where it used to carry
/// one per match (~41 KB for a 40-byte message).
#[test]
fn mqtt5_3_3_4_overlapping_filters_bounded_by_subscription_limit_and_id_cap() {
    let b = Broker::start("");
    let words: Vec<String> = (0..13).map(|i| format!("l{i}")).collect();
    let topic = words.join("/");
    let mut s = connected5(b.addr(), "overlap");
    let mut burst = Vec::new();
    for mask in 0u32..8192 {
        let filter: Vec<&str> = (0..13)
            .map(|i| {
                if mask & (1 << i) != 0 {
                    "+"
                } else {
                    words[i].as_str()
                }
            })
            .collect();
        let pkid = (mask % 65_000 + 1) as u16;
        burst.extend(subscribe5(
            pkid,
            &[(filter.join("/").as_bytes(), 0)],
            Some(mask + 1),
        ));
    }
    s.write_all(&burst).expect("SUBSCRIBEs");
    let mut granted = 0;
    let mut quota = 0;
    for _ in 0..8192 {
        let (h, body) = read_packet(&mut s);
        assert_eq!(h, 0x90);
        match suback5_codes(&body)[..] {
            [0x00] => granted += 1,
            [0x97] => quota += 1,
            ref other => panic!("unexpected SUBACK {other:?}"),
        }
    }
    assert_eq!((granted, quota), (1000, 7192));

    let mut p = connected5(b.addr(), "overlap-pub");
    let mut body = Vec::new();
    put_str(&mut body, topic.as_bytes());
    body.push(0);
    body.extend_from_slice(b"x");
    p.write_all(&frame(0x30, body)).expect("PUBLISH");
    let packets = drain(&mut s, Duration::from_secs(10));
    assert_eq!(
        packets.len(),
        1,
        "one PUBLISH for all matching subscriptions"
    );
    let (h, body) = &packets[0];
    assert_eq!(h >> 4, 3);
    let ids = publish5_sub_ids(body);
    assert_eq!(ids.len(), 32, "identifiers capped");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 32, "no repeats");
    assert!(body.len() < 300, "PUBLISH of {} bytes", body.len());
    b.assert_serves_healthy_client("overlap");
}
