//! SUBSCRIBE, SUBACK, UNSUBSCRIBE (3.8-3.11) and topic matching (4.7).

use super::common::packets::*;
use super::common::raw::{Next, Raw};
use super::*;

/// [MQTT-3.8.4-6]: each subscriber receives min(published QoS, granted QoS), for every
/// combination of 0, 1 and 2 in both directions.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
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

/// [MQTT-3.8.4-1], [MQTT-3.8.4-2], [MQTT-3.8.4-4], [MQTT-3.8.4-5], [MQTT-3.9.3-1],
/// [MQTT-2.3.1-7]: one SUBACK with the SUBSCRIBE's packet id and one granted QoS per filter,
/// in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_8_4_5_suback_one_code_per_filter_in_order() {
    let b = Broker::start("");
    let mut c = Raw::clean(&b, "c");
    c.send(&subscribe311(
        0x1234,
        &[("a/b", 0), ("c/+", 1), ("d/#", 2), ("e", 1), ("+", 0)],
    ));
    let p = c.recv();
    assert_eq!(p.byte1, 0x90);
    assert_eq!(p.body, vec![0x12, 0x34, 0, 1, 2, 1, 0]);
    c.expect_quiet(QUIET, "nothing more");

    // Each filter really is subscribed, with its own QoS.
    let mut publ = client(&b, "pub").await;
    publ.publish("c/x", QoS::ExactlyOnce, false, "c").await;
    let got = c.recv_publish();
    assert_eq!((got.topic.as_str(), got.qos), ("c/x", 1));
}

/// [MQTT-3.8.4-5], [MQTT-3.9.3-2], [MQTT-4.7.1-2], [MQTT-4.7.1-3], [MQTT-4.7.3-1]: filters
/// with a misplaced '#' or '+', or empty, are refused with 0x80 (midge's choice; the
/// connection stays open) while the valid filters of the same SUBSCRIBE are granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_4_7_1_2_invalid_filters_refused_valid_ones_granted() {
    let b = Broker::start("");
    let mut c = Raw::clean(&b, "c");
    let codes = c.subscribe(
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
    );
    assert_eq!(codes, vec![0x80, 1, 0x80, 2, 0x80, 0x80, 0x80, 0x80]);
    c.ping();

    let mut publ = client(&b, "pub").await;
    publ.publish("ok/2", QoS::AtLeastOnce, false, "v").await;
    let got = c.recv_publish();
    assert_eq!((got.topic.as_str(), got.qos), ("ok/2", 1));
}

/// [MQTT-3.8.4-5]: max_subscriptions_per_client = 2: a third filter is refused with 0x80;
/// replacing an existing filter does not count; unsubscribing frees a slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_8_4_5_max_subscriptions_per_client_refused_with_0x80() {
    let b = Broker::start("max_subscriptions_per_client = 2");
    let mut c = Raw::clean(&b, "c");
    assert_eq!(
        c.subscribe(1, &[("s/1", 1), ("s/2", 0), ("s/3", 2)]),
        vec![1, 0, 0x80]
    );
    assert_eq!(
        c.subscribe(2, &[("s/1", 2)]),
        vec![2],
        "replacement must be granted"
    );
    assert_eq!(c.subscribe(3, &[("s/4", 0)]), vec![0x80]);

    c.send(&unsubscribe_bytes(false, 4, &["s/2"]));
    c.recv().assert_ack(UNSUBACK, 4);
    assert_eq!(c.subscribe(5, &[("s/4", 0)]), vec![0]);

    // s/3 was never subscribed: a message there is not delivered; s/4 (sentinel) is.
    let mut publ = client(&b, "pub").await;
    publ.publish("s/3", QoS::AtLeastOnce, false, "no").await;
    publ.publish("s/4", QoS::AtLeastOnce, false, "yes").await;
    let p = c.recv_publish();
    assert_eq!(p.topic, "s/4");
}

/// [MQTT-3.8.4-5]: max_topic_levels = 3: a filter with more levels is refused with 0x80.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_8_4_5_filter_over_max_topic_levels_refused_with_0x80() {
    let b = Broker::start("max_topic_levels = 3");
    let mut c = Raw::clean(&b, "c");
    let codes = c.subscribe(
        1,
        &[("a/b/c", 1), ("a/b/c/d", 1), ("a/+/+/#", 0), ("+/+/#", 2)],
    );
    assert_eq!(codes, vec![1, 0x80, 0x80, 2]);
    c.ping();
}

/// [MQTT-4.7.1-2] (section 4.7.1.2), [MQTT-3.3.2-3]: '#' matches the parent level and any
/// number of child levels, and nothing else; delivered topic names are the published ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
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
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
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
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
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
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
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
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
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
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
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

/// [MQTT-3.10.4-1], [MQTT-3.10.4-2]: UNSUBSCRIBE removes exactly the named filter (compared
/// character by character, no wildcard matching) and stops its delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
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
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_10_4_5_unsuback_same_packet_id_even_for_unknown_filter() {
    let b = Broker::start("");
    let mut c = Raw::clean(&b, "c");
    c.send(&unsubscribe_bytes(false, 0x4321, &["never/subscribed"]));
    let p = c.recv();
    assert_eq!((p.byte1, p.body.as_slice()), (0xB0, &[0x43u8, 0x21][..]));

    assert_eq!(
        c.subscribe(2, &[("m/a", 1), ("m/b", 1), ("m/c", 1)]),
        vec![1, 1, 1]
    );
    c.send(&unsubscribe_bytes(false, 7, &["m/a", "nope", "m/b"]));
    c.recv().assert_ack(UNSUBACK, 7);
    c.expect_quiet(Duration::from_millis(200), "nothing more");

    let mut publ = client(&b, "pub").await;
    publ.publish("m/a", QoS::AtLeastOnce, false, "x").await;
    publ.publish("m/b", QoS::AtLeastOnce, false, "x").await;
    publ.publish("m/c", QoS::AtLeastOnce, false, "sentinel")
        .await;
    assert_eq!(c.recv_publish().topic, "m/c");
}

/// [MQTT-3.10.4-3]: a QoS 1 delivery started before UNSUBSCRIBE is completed (re-sent with
/// retry_interval = 1 until PUBACK), while new messages stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_10_4_3_unsubscribe_completes_inflight_delivery() {
    let b = Broker::start("retry_interval = 1");
    let mut sub = Raw::clean(&b, "sub");
    assert_eq!(
        sub.subscribe(1, &[("ui/t", 1), ("ui/sentinel", 1)]),
        vec![1, 1]
    );
    let mut publ = client(&b, "pub").await;
    publ.publish("ui/t", QoS::AtLeastOnce, false, "started")
        .await;
    let p = sub.recv_publish();

    sub.send(&unsubscribe_bytes(false, 2, &["ui/t"]));
    let mut unsuback = false;
    let mut resent = false;
    let deadline = Instant::now() + Duration::from_secs(3);
    while !(unsuback && resent) {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub.next_within(left) {
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
    sub.send(&ack_bytes(PUBACK, p.pkid));

    publ.publish("ui/t", QoS::AtLeastOnce, false, "after").await;
    publ.publish("ui/sentinel", QoS::AtLeastOnce, false, "s")
        .await;
    loop {
        let q = sub.recv_publish();
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

/// [MQTT-3.8.3-1], [MQTT-3.10.3-1], [MQTT-1.5.3-1]: a SUBSCRIBE or UNSUBSCRIBE whose topic
/// filter is not valid UTF-8 closes the connection (no SUBACK / UNSUBACK).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_8_3_1_invalid_utf8_filters_close_connection() {
    let b = Broker::start("");
    for (case, byte1) in [("SUBSCRIBE", 0x82u8), ("UNSUBSCRIBE", 0xA2)] {
        let mut raw = Raw::clean(&b, "c");
        let mut body = vec![0x00, 0x01];
        put_str(&mut body, BAD_UTF8);
        if byte1 == 0x82 {
            body.push(1);
        }
        raw.send(&frame(byte1, body));
        let sent = raw.expect_closed(WAIT);
        assert!(
            sent.is_empty(),
            "{case}: expected a close without acknowledgement, got {sent:?}"
        );
    }
}
