//! Sessions (3.1.2.4, 4.1, 4.4): clean and persistent sessions, offline queues and
//! their bounds, resending after a reconnect, take-over.

use super::common::packets::*;
use super::common::raw::{Next, Raw};
use super::*;

/// [MQTT-3.1.2-6], [MQTT-3.2.2-1], [MQTT-3.2.2-3]: clean session 1 discards the stored
/// session (subscriptions and queued messages), session present is 0, and the clean
/// session's state is not reused afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
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
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
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
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
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
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_1_2_5_offline_queue_bounded_drop_oldest_keeps_newest() {
    assert_eq!(
        offline_queue_bound("drop_oldest").await,
        ["5", "6", "7", "8", "9"]
    );
}

/// [MQTT-3.1.2-5] with max_queued_messages = 5 and queue_full = "drop_new": of 10 messages
/// queued offline the oldest 5 are kept, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_1_2_5_offline_queue_bounded_drop_new_keeps_oldest() {
    assert_eq!(
        offline_queue_bound("drop_new").await,
        ["0", "1", "2", "3", "4"]
    );
}

/// [MQTT-4.4.0-1], [MQTT-4.6.0-1], [MQTT-3.3.1-1]: when a persistent session reconnects,
/// unacknowledged PUBLISHes are re-sent with DUP=1 and their original packet ids, in their
/// original order, and an unacknowledged PUBREL is re-sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_4_4_0_1_reconnect_resends_unacked_publish_and_pubrel() {
    let b = Broker::start("retry_interval = 0");
    let (mut sub, sp) = Raw::connect(&b, "rs", false, 60, None);
    assert!(!sp);
    assert_eq!(sub.subscribe(1, &[("rs/1", 1), ("rs/2", 2)]), vec![1, 2]);

    let mut publ = client(&b, "pub").await;
    publ.publish("rs/1", QoS::AtLeastOnce, false, "a").await;
    publ.publish("rs/2", QoS::ExactlyOnce, false, "b").await;
    publ.publish("rs/2", QoS::ExactlyOnce, false, "c").await;

    let a = sub.recv_publish();
    let bb = sub.recv_publish();
    let c = sub.recv_publish();
    assert_eq!(
        [
            a.payload.as_slice(),
            bb.payload.as_slice(),
            c.payload.as_slice()
        ],
        [&b"a"[..], b"b", b"c"]
    );
    sub.send(&ack_bytes(PUBREC, bb.pkid));
    sub.recv().assert_ack(PUBREL, bb.pkid);
    // Drop the connection with a, c unacknowledged and b's PUBREL unanswered.
    drop(sub);
    wait_closes(&b, "rs", 1);

    let (mut sub, sp) = Raw::connect(&b, "rs", false, 60, None);
    assert!(sp, "session present must be 1 on resume");
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(sub.recv());
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

    sub.send(&ack_bytes(PUBACK, a.pkid));
    sub.send(&ack_bytes(PUBCOMP, bb.pkid));
    sub.send(&ack_bytes(PUBREC, c.pkid));
    sub.recv().assert_ack(PUBREL, c.pkid);
    sub.send(&ack_bytes(PUBCOMP, c.pkid));
    sub.expect_quiet(QUIET, "nothing more");
}

/// [MQTT-4.3.3-2], [MQTT-4.4.0-1], [MQTT-4.1.0-1]: the QoS 2 receive state (packet ids
/// PUBREC'd but not yet released) is part of a persistent session: a publisher that
/// reconnects and re-sends the PUBLISH with the same packet id gets PUBREC again, and the
/// message is not delivered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_4_3_3_2_qos2_exactly_once_across_publisher_reconnect() {
    let b = Broker::start("");
    let mut sub = client(&b, "sub").await;
    sub.subscribe("x2/t", QoS::ExactlyOnce).await;

    let (mut publ, _) = Raw::connect(&b, "p2", false, 60, None);
    publ.send(&publish311("x2/t", b"once", 2, 5, false, false));
    publ.recv().assert_ack(PUBREC, 5);
    drop(publ);
    wait_closes(&b, "p2", 1);

    let (mut publ, sp) = Raw::connect(&b, "p2", false, 60, None);
    assert!(sp, "session present must be 1 on resume");
    publ.send(&publish311("x2/t", b"once", 2, 5, false, true));
    publ.recv().assert_ack(PUBREC, 5);
    publ.send(&ack_bytes(PUBREL, 5));
    publ.recv().assert_ack(PUBCOMP, 5);
    publ.send(&publish311("x2/t", b"sentinel", 1, 6, false, false));
    publ.recv().assert_ack(PUBACK, 6);

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
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_1_2_6_takeover_of_clean_session_does_not_resume_it() {
    let b = Broker::start("");
    let (mut first, _) = Raw::connect(&b, "tc", true, 60, None);
    assert_eq!(first.subscribe(1, &[("tc/t", 1)]), vec![1]);

    let (mut second, sp) = Raw::connect(&b, "tc", false, 60, None);
    assert!(!sp, "a clean session must not be resumed");
    first.expect_closed(WAIT);
    assert_eq!(second.subscribe(1, &[("tc/s", 1)]), vec![1]);

    let mut publ = client(&b, "pub").await;
    publ.publish("tc/t", QoS::AtLeastOnce, false, "old subscription")
        .await;
    publ.publish("tc/s", QoS::AtLeastOnce, false, "sentinel")
        .await;
    assert_eq!(second.recv_publish().topic, "tc/s");
}

/// [MQTT-4.3.2-1], [MQTT-4.6.0-6]: for a live subscriber, messages beyond the inflight window
/// wait in its queue, bounded by max_queued_messages (drop_oldest: the newest are kept);
/// what was already sent stays in flight until acknowledged, and order is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_4_3_2_1_live_queue_behind_inflight_window_bounded_drop_oldest() {
    let b = Broker::start(&format!(
        "max_inflight_messages = 2\nmax_queued_messages = 3\nretry_interval = 0\n{}",
        listener_toml("drop_oldest")
    ));
    let mut sub = Raw::clean(&b, "sub");
    assert_eq!(sub.subscribe(1, &[("lq/t", 1)]), vec![1]);
    let mut publ = client(&b, "pub").await;
    publ.publish("lq/t", QoS::AtLeastOnce, false, "0").await;
    publ.publish("lq/t", QoS::AtLeastOnce, false, "1").await;
    let m0 = sub.recv_publish();
    let m1 = sub.recv_publish();
    assert_eq!(
        (m0.payload.as_slice(), m1.payload.as_slice()),
        (&b"0"[..], &b"1"[..])
    );
    for i in 2..10 {
        publ.publish("lq/t", QoS::AtLeastOnce, false, i.to_string())
            .await;
    }
    sub.expect_quiet(QUIET, "nothing more");

    let mut got = Vec::new();
    let mut unacked = vec![m0.pkid, m1.pkid];
    while let Some(pkid) = unacked.pop() {
        sub.send(&ack_bytes(PUBACK, pkid));
        if let Next::Packet(p) = sub.next_within(Duration::from_millis(800)) {
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
    sub.expect_quiet(QUIET, "nothing more");
}
