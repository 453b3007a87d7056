//! Retained messages (3.3.1.3).

use super::common::packets::*;
use super::common::raw::Raw;
use super::*;

/// [MQTT-3.8.4-3]: subscribing again to an identical filter replaces the subscription (new
/// QoS, still one copy per message) and re-sends the matching retained messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_8_4_3_resubscribe_replaces_and_resends_retained() {
    let b = Broker::start("");
    let mut publ = client(&b, "pub").await;
    publ.publish("rs/a", QoS::AtLeastOnce, true, "kept").await;

    let mut sub = client(&b, "sub").await;
    sub.subscribe("rs/#", QoS::AtMostOnce).await;
    let p = sub.recv().await;
    assert_eq!(
        (payload_str(&p).as_str(), p.retain, p.qos),
        ("kept", true, QoS::AtMostOnce)
    );

    sub.subscribe("rs/#", QoS::AtLeastOnce).await;
    let p = sub.recv().await;
    assert_eq!(
        (payload_str(&p).as_str(), p.retain, p.qos),
        ("kept", true, QoS::AtLeastOnce),
        "retained message must be re-sent, at the new QoS"
    );

    publ.publish("rs/b", QoS::AtLeastOnce, false, "live").await;
    let p = sub.recv().await;
    assert_eq!(
        (payload_str(&p).as_str(), p.qos),
        ("live", QoS::AtLeastOnce)
    );
    sub.expect_quiet(QUIET).await;
}

/// [MQTT-3.3.1-5], [MQTT-3.3.1-6], [MQTT-3.3.1-8], [MQTT-3.1.2-7]: a retained message is
/// stored with its QoS (outliving its publisher's session) and sent to a new subscriber with
/// RETAIN=1 at min(stored QoS, granted QoS).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_3_1_5_retained_stored_with_qos_and_sent_on_subscribe() {
    let b = Broker::start("");
    let mut publ = client(&b, "pub").await;
    publ.publish("r/q1", QoS::AtLeastOnce, true, "v1").await;
    publ.publish("r/q2", QoS::ExactlyOnce, true, "v2").await;
    go_offline(&b, "pub", publ).await;

    let mut sub = Raw::clean(&b, "sub");
    assert_eq!(sub.subscribe(1, &[("r/q1", 2)]), vec![2]);
    let p = sub.recv_publish();
    assert_eq!(
        (
            p.topic.as_str(),
            p.payload.as_slice(),
            p.retain,
            p.qos,
            p.dup
        ),
        ("r/q1", &b"v1"[..], true, 1, false),
        "retained QoS 1 message to a QoS 2 subscriber"
    );
    sub.send(&ack_bytes(PUBACK, p.pkid));

    assert_eq!(sub.subscribe(2, &[("r/q2", 1)]), vec![1]);
    let p = sub.recv_publish();
    assert_eq!(
        (p.topic.as_str(), p.payload.as_slice(), p.retain, p.qos),
        ("r/q2", &b"v2"[..], true, 1),
        "retained QoS 2 message to a QoS 1 subscriber"
    );
    sub.send(&ack_bytes(PUBACK, p.pkid));

    assert_eq!(sub.subscribe(3, &[("r/q2", 2)]), vec![2]);
    let p = sub.recv_publish();
    assert_eq!(
        (p.retain, p.qos),
        (true, 2),
        "retained QoS 2 message stored with QoS 2"
    );
}

/// [MQTT-3.3.1-7]: a new retained message (here QoS 0) replaces the previous one.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_3_1_7_retained_replaced_by_newer_retained() {
    let b = Broker::start("");
    let mut publ = client(&b, "pub").await;
    publ.publish("r/t", QoS::AtLeastOnce, true, "old").await;
    publ.publish("r/t", QoS::AtMostOnce, true, "new").await;
    // QoS 0 has no acknowledgement: make sure the broker has handled it.
    publ.publish("r/sync", QoS::AtLeastOnce, false, "sync")
        .await;

    let mut sub = client(&b, "sub").await;
    sub.subscribe("r/t", QoS::ExactlyOnce).await;
    let p = sub.recv().await;
    assert_eq!(
        (payload_str(&p).as_str(), p.retain, p.qos),
        ("new", true, QoS::AtMostOnce)
    );
    sub.expect_quiet(QUIET).await;
}

/// [MQTT-3.3.1-10], [MQTT-3.3.1-11]: a retained PUBLISH with an empty payload is delivered
/// to current subscribers as usual, and clears the topic's retained message.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_3_1_10_empty_retained_payload_clears() {
    let b = Broker::start("");
    let mut publ = client(&b, "pub").await;
    publ.publish("r/t", QoS::AtLeastOnce, true, "v1").await;

    let mut live = client(&b, "live").await;
    live.subscribe("r/#", QoS::AtLeastOnce).await;
    assert_eq!(payload_str(&live.recv().await), "v1");

    publ.publish("r/t", QoS::AtLeastOnce, true, "").await;
    let p = live.recv().await;
    assert_eq!(
        (p.topic.as_str(), p.payload.len(), p.retain),
        ("r/t", 0, false)
    );

    let mut late = client(&b, "late").await;
    late.subscribe("r/#", QoS::AtLeastOnce).await;
    publ.publish("r/sentinel", QoS::AtLeastOnce, false, "s")
        .await;
    let p = late.recv().await;
    assert_eq!(
        p.topic, "r/sentinel",
        "a cleared retained message was sent: {p:?}"
    );
}

/// [MQTT-3.3.1-12]: a PUBLISH with RETAIN=0 neither stores nor replaces the retained
/// message.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_3_1_12_non_retained_publish_leaves_retained() {
    let b = Broker::start("");
    let mut publ = client(&b, "pub").await;
    publ.publish("r/t", QoS::AtLeastOnce, true, "retained")
        .await;
    publ.publish("r/t", QoS::AtLeastOnce, false, "not retained")
        .await;
    publ.publish("r/u", QoS::AtLeastOnce, false, "never retained")
        .await;

    let mut sub = client(&b, "sub").await;
    sub.subscribe("r/#", QoS::AtLeastOnce).await;
    let p = sub.recv().await;
    assert_eq!(
        (p.topic.as_str(), payload_str(&p).as_str(), p.retain),
        ("r/t", "retained", true)
    );
    sub.expect_quiet(QUIET).await;
}

/// [MQTT-3.3.1-9]: a retained PUBLISH forwarded to an established subscription has RETAIN=0.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_3_1_9_retain_cleared_for_live_subscribers() {
    let b = Broker::start("");
    let mut sub = Raw::clean(&b, "sub");
    assert_eq!(sub.subscribe(1, &[("live/#", 1)]), vec![1]);
    let mut publ = Raw::clean(&b, "pub");
    publ.send(&publish311("live/a", b"r0", 0, 0, true, false));
    publ.send(&publish311("live/b", b"r1", 1, 3, true, false));
    publ.recv().assert_ack(PUBACK, 3);

    let p = sub.recv();
    assert_eq!(
        p.byte1, 0x30,
        "QoS 0 retained forwarded live: RETAIN must be 0 ({p:?})"
    );
    let p = sub.recv();
    assert_eq!(
        p.byte1, 0x32,
        "QoS 1 retained forwarded live: RETAIN must be 0 ({p:?})"
    );
    sub.send(&ack_bytes(PUBACK, p.publish().pkid));

    // It was stored all the same: a new subscription gets it with RETAIN=1.
    assert_eq!(sub.subscribe(2, &[("live/b", 1)]), vec![1]);
    let p = sub.recv_publish();
    assert_eq!((p.topic.as_str(), p.retain), ("live/b", true));
}

/// [MQTT-3.3.1-6]: a wildcard subscription gets the retained message of every matching
/// topic (and only those), each with RETAIN=1.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_3_1_6_wildcard_subscribe_gets_all_matching_retained() {
    let b = Broker::start("");
    let mut publ = client(&b, "pub").await;
    for t in ["w/a", "w/b", "w/c/d", "x/a", "w"] {
        publ.publish(t, QoS::AtLeastOnce, true, t).await;
    }
    let mut sub = client(&b, "sub").await;
    sub.subscribe("w/#", QoS::AtLeastOnce).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        let p = sub.recv().await;
        assert!(
            p.retain,
            "retained message sent on subscribe without RETAIN=1: {p:?}"
        );
        assert_eq!(payload_str(&p), p.topic);
        got.push(p.topic);
    }
    got.sort();
    assert_eq!(got, ["w", "w/a", "w/b", "w/c/d"]);
    sub.expect_quiet(QUIET).await;

    let mut plus = client(&b, "plus").await;
    plus.subscribe("+/a", QoS::AtLeastOnce).await;
    let mut got = vec![plus.recv().await.topic, plus.recv().await.topic];
    got.sort();
    assert_eq!(got, ["w/a", "x/a"]);
    plus.expect_quiet(QUIET).await;
}
