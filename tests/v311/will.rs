//! Wills (3.1.2.5-3.1.2.7, 3.14.4): published on an ungraceful close, a keep-alive timeout
//! or a take-over, with their QoS and RETAIN; not after DISCONNECT.

use super::common::packets::*;
use super::common::raw::Raw;
use super::*;

/// [MQTT-3.1.2-8], [MQTT-3.1.2-16]: the will is published when the socket closes without
/// DISCONNECT; with Will Retain = 0 it is not retained.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_1_2_8_will_published_on_socket_close_without_disconnect() {
    let b = Broker::start("");
    let mut watcher = client(&b, "watcher").await;
    watcher.subscribe("will/#", QoS::AtLeastOnce).await;

    let will = Will {
        topic: "will/a",
        payload: b"gone",
        qos: 1,
        retain: false,
        props: Vec::new(),
    };
    let (raw, _) = Raw::connect(&b, "dying", true, 60, Some(&will));
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
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_1_2_24_keep_alive_timeout_publishes_will() {
    let b = Broker::start("");
    let mut watcher = client(&b, "watcher").await;
    watcher.subscribe("ka/will", QoS::AtLeastOnce).await;

    let will = Will {
        topic: "ka/will",
        payload: b"timed out",
        qos: 1,
        retain: false,
        props: Vec::new(),
    };
    let (mut raw, _) = Raw::connect(&b, "silent", true, 1, Some(&will));
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
    raw.expect_closed(Duration::from_secs(1));
}

/// [MQTT-3.1.0-2], [MQTT-4.8.0-1], [MQTT-3.1.2-8]: a second CONNECT is a protocol
/// violation: the connection is closed and, as it was not a DISCONNECT, the will published.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_1_0_2_second_connect_closes_and_publishes_will() {
    let b = Broker::start("");
    let mut watcher = client(&b, "watcher").await;
    watcher.subscribe("pv/will", QoS::AtLeastOnce).await;

    let will = Will {
        topic: "pv/will",
        payload: b"violated",
        qos: 0,
        retain: false,
        props: Vec::new(),
    };
    let (mut raw, _) = Raw::connect(&b, "twice", true, 60, Some(&will));
    raw.send(&connect311("twice", true, 60, Some(&will)));
    let sent = raw.expect_closed(WAIT);
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
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_14_4_3_will_not_published_after_disconnect() {
    let b = Broker::start("");
    let mut watcher = client(&b, "watcher").await;
    watcher.subscribe("dc/#", QoS::AtLeastOnce).await;

    let will = Will {
        topic: "dc/will",
        payload: b"must not appear",
        qos: 1,
        retain: true,
        props: Vec::new(),
    };
    let (mut raw, _) = Raw::connect(&b, "polite", true, 60, Some(&will));
    raw.send(&DISCONNECT_BYTES);
    raw.expect_closed(WAIT);
    drop(raw);
    wait_closes(&b, "polite", 1);

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
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_1_2_12_no_will_flag_nothing_published() {
    let b = Broker::start("");
    let mut watcher = client(&b, "watcher").await;
    watcher.subscribe("#", QoS::AtLeastOnce).await;
    let (raw, _) = Raw::connect(&b, "nowill", true, 60, None);
    drop(raw);
    wait_closes(&b, "nowill", 1);
    let mut publ = client(&b, "pub").await;
    publ.publish("nw/sentinel", QoS::AtLeastOnce, false, "s")
        .await;
    assert_eq!(watcher.recv().await.topic, "nw/sentinel");
}

/// [MQTT-3.1.2-17]: a will with Will Retain = 1 is published as a retained message: live
/// subscribers get it (RETAIN=0, [MQTT-3.3.1-9]) and a later subscriber gets it with
/// RETAIN=1.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_1_2_17_will_retain_flag_honoured() {
    let b = Broker::start("");
    let mut watcher = client(&b, "watcher").await;
    watcher.subscribe("wr/t", QoS::AtLeastOnce).await;

    let will = Will {
        topic: "wr/t",
        payload: b"last words",
        qos: 1,
        retain: true,
        props: Vec::new(),
    };
    let (raw, _) = Raw::connect(&b, "dying", true, 60, Some(&will));
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
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_1_2_9_will_published_with_its_qos() {
    let b = Broker::start("");
    let mut watcher = client(&b, "watcher").await;
    watcher.subscribe("wq/#", QoS::ExactlyOnce).await;
    for qos in 0..3u8 {
        let topic = format!("wq/{qos}");
        let will = Will {
            topic: &topic,
            payload: b"w",
            qos,
            retain: false,
            props: Vec::new(),
        };
        let (raw, _) = Raw::connect(&b, &format!("dying{qos}"), true, 60, Some(&will));
        drop(raw);
        let p = watcher.recv().await;
        assert_eq!(
            (p.topic.as_str(), p.qos as u8),
            (topic.as_str(), qos),
            "will QoS {qos}"
        );
    }
}

/// [MQTT-3.1.4-2], [MQTT-3.1.4-3], [MQTT-3.1.2-8], [MQTT-3.2.2-2]: a second connection with
/// the same client id disconnects the first (whose will is published) and, with clean
/// session 0, takes over its session.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_1_4_2_client_id_takeover_disconnects_first_and_publishes_its_will() {
    let b = Broker::start("");
    let mut watcher = client(&b, "watcher").await;
    watcher.subscribe("tk/will", QoS::AtLeastOnce).await;

    let will = Will {
        topic: "tk/will",
        payload: b"first gone",
        qos: 1,
        retain: false,
        props: Vec::new(),
    };
    let (mut first, sp) = Raw::connect(&b, "same", false, 60, Some(&will));
    assert!(!sp);
    assert_eq!(first.subscribe(1, &[("tk/data", 1)]), vec![1]);

    let (mut second, sp) = Raw::connect(&b, "same", false, 60, None);
    assert!(
        sp,
        "the first connection's session must be resumed (session present 1)"
    );
    first.expect_closed(WAIT);
    let p = watcher.recv().await;
    assert_eq!(payload_str(&p), "first gone");

    let mut publ = client(&b, "pub").await;
    publ.publish("tk/data", QoS::AtLeastOnce, false, "for the session")
        .await;
    let p = second.recv_publish();
    assert_eq!(
        (p.topic.as_str(), p.payload.as_slice()),
        ("tk/data", &b"for the session"[..])
    );
    second.send(&ack_bytes(PUBACK, p.pkid));
    second.ping();
}

/// [MQTT-3.1.4-1], [MQTT-3.1.3-4], [MQTT-3.1.3-10], [MQTT-3.1.3-11], [MQTT-4.7.1-1],
/// [MQTT-3.2.2-6]: a CONNECT whose client id, will topic or user name is not valid UTF-8,
/// or whose will topic has a wildcard, is closed without CONNACK (and no will is published).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
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
        let mut raw = Raw::open(b.addr());
        raw.send(&bytes);
        let sent = raw.expect_closed(WAIT);
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
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_1_2_14_will_qos_3_closes_without_connack() {
    let b = Broker::start("");
    let mut raw = Raw::open(b.addr());
    raw.send(&connect_raw(0x02 | 0x04 | 0x18, &[b"q3", b"will/t", b"m"]));
    let sent = raw.expect_closed(WAIT);
    assert!(
        sent.is_empty(),
        "expected a close without CONNACK, got {sent:?}"
    );
}
