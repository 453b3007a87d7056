//! PUBLISH and its QoS flows (3.3-3.7, 4.3, 4.6): QoS 0, 1 and 2, the inflight window,
//! retransmission, ordering, backpressure, long topics.

use super::common::packets::*;
use super::common::raw::{Next, Raw};
use super::*;

/// [MQTT-4.3.1-1], [MQTT-3.3.1-2], [MQTT-2.3.1-5], [MQTT-3.3.4-1]: a QoS 0 PUBLISH gets no
/// response, and is forwarded with QoS 0, DUP 0 and no packet identifier.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_4_3_1_1_qos0_delivered_with_qos0_dup0_and_no_packet_id() {
    let b = Broker::start("");
    let mut sub = Raw::clean(&b, "sub");
    assert_eq!(sub.subscribe(1, &[("q0/t", 2)]), vec![2]);

    let mut publ = Raw::clean(&b, "pub");
    publ.send(&publish311("q0/t", b"hello", 0, 0, false, false));
    // No response to QoS 0: the next packet is the answer to PINGREQ.
    publ.ping();

    let p = sub.recv();
    assert_eq!(p.byte1, 0x30, "QoS 0, DUP 0, RETAIN 0: {p:?}");
    let mut expected = Vec::new();
    put_str(&mut expected, b"q0/t");
    expected.extend_from_slice(b"hello");
    assert_eq!(p.body, expected, "topic then payload, no packet identifier");
    sub.expect_quiet(QUIET, "nothing more");
}

/// [MQTT-4.3.2-1], [MQTT-4.3.2-2], [MQTT-2.3.1-1], [MQTT-2.3.1-4], [MQTT-2.3.1-6]: PUBACK
/// carries the publisher's packet id; the broker forwards with QoS 1, DUP 0 and its own
/// non-zero packet ids, unused while unacknowledged. A PUBLISH reusing a packet id after its
/// PUBACK is a new message.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_4_3_2_2_qos1_puback_and_forwarded_with_fresh_packet_id() {
    let b = Broker::start("");
    let mut sub = Raw::clean(&b, "sub");
    assert_eq!(sub.subscribe(1, &[("q1/t", 1)]), vec![1]);

    let mut publ = Raw::clean(&b, "pub");
    publ.send(&publish311("q1/t", b"one", 1, 0x0A0B, false, false));
    publ.recv().assert_ack(PUBACK, 0x0A0B);
    // The same packet id again after its PUBACK: a new publication [MQTT-4.3.2-2].
    publ.send(&publish311("q1/t", b"two", 1, 0x0A0B, false, false));
    publ.recv().assert_ack(PUBACK, 0x0A0B);

    let first = sub.recv_publish();
    let second = sub.recv_publish();
    for (p, payload) in [(&first, b"one"), (&second, b"two")] {
        assert_eq!((p.qos, p.dup, p.retain), (1, false, false), "{p:?}");
        assert_eq!(p.topic, "q1/t");
        assert_eq!(p.payload, payload);
        assert_ne!(p.pkid, 0, "packet id must be non-zero [MQTT-2.3.1-1]");
    }
    assert_ne!(
        first.pkid, second.pkid,
        "packet id of an unacknowledged PUBLISH reused"
    );
    sub.send(&ack_bytes(PUBACK, first.pkid));
    sub.send(&ack_bytes(PUBACK, second.pkid));
    sub.expect_quiet(QUIET, "nothing more");
}

/// [MQTT-4.3.3-2], [MQTT-3.3.4-1]: until PUBREL, a re-sent QoS 2 PUBLISH with the same
/// packet id is acknowledged with PUBREC again but not delivered again; after PUBCOMP the
/// packet id starts a new message.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_4_3_3_2_qos2_duplicate_publish_before_pubrel_delivered_once() {
    let b = Broker::start("");
    let mut sub = client(&b, "sub").await;
    sub.subscribe("q2/t", QoS::ExactlyOnce).await;

    let mut publ = Raw::clean(&b, "pub");
    publ.send(&publish311("q2/t", b"first", 2, 7, false, false));
    publ.recv().assert_ack(PUBREC, 7);
    publ.send(&publish311("q2/t", b"first", 2, 7, false, true));
    publ.recv().assert_ack(PUBREC, 7);
    publ.send(&publish311("q2/t", b"first", 2, 7, false, false));
    publ.recv().assert_ack(PUBREC, 7);
    publ.send(&ack_bytes(PUBREL, 7));
    publ.recv().assert_ack(PUBCOMP, 7);
    // After PUBCOMP, packet id 7 is a new publication.
    publ.send(&publish311("q2/t", b"second", 2, 7, false, false));
    publ.recv().assert_ack(PUBREC, 7);
    publ.send(&ack_bytes(PUBREL, 7));
    publ.recv().assert_ack(PUBCOMP, 7);

    let p = sub.recv().await;
    assert_eq!(
        (payload_str(&p).as_str(), p.qos),
        ("first", QoS::ExactlyOnce)
    );
    let p = sub.recv().await;
    assert_eq!(
        payload_str(&p),
        "second",
        "the duplicate QoS 2 PUBLISH was delivered again"
    );
    sub.expect_quiet(QUIET).await;
}

/// [MQTT-4.3.3-1], [MQTT-2.3.1-6]: the broker as QoS 2 sender: PUBLISH QoS 2 DUP 0, PUBREL
/// with the same packet id on PUBREC, and once PUBREL is sent the PUBLISH is never sent
/// again (only the PUBREL is retried, here with retry_interval = 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_4_3_3_1_qos2_outgoing_flow_no_publish_resend_after_pubrel() {
    let b = Broker::start("retry_interval = 1");
    let mut sub = Raw::clean(&b, "sub");
    assert_eq!(sub.subscribe(1, &[("q2/t", 2)]), vec![2]);
    let mut publ = client(&b, "pub").await;
    publ.publish("q2/t", QoS::ExactlyOnce, false, "x").await;

    let p = sub.recv_publish();
    assert_eq!(
        (p.qos, p.dup, p.retain, p.payload.as_slice()),
        (2, false, false, &b"x"[..])
    );
    assert_ne!(p.pkid, 0);
    sub.send(&ack_bytes(PUBREC, p.pkid));
    sub.recv().assert_ack(PUBREL, p.pkid);

    // No PUBCOMP yet: for 2.5 s only PUBREL may be re-sent, never the PUBLISH.
    let deadline = Instant::now() + Duration::from_millis(2500);
    let mut resent = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub.next_within(left) {
            Next::Quiet => break,
            Next::Closed => panic!("broker closed the connection"),
            Next::Packet(pkt) => {
                pkt.assert_ack(PUBREL, p.pkid);
                resent += 1;
            }
        }
    }
    assert!(
        resent >= 1,
        "PUBREL not re-sent within 2.5 s with retry_interval = 1"
    );
    sub.send(&ack_bytes(PUBCOMP, p.pkid));
    // Drain a PUBREL that may have crossed our PUBCOMP, then nothing more.
    if let Next::Packet(pkt) = sub.next_within(Duration::from_millis(300)) {
        pkt.assert_ack(PUBREL, p.pkid);
    }
    sub.expect_quiet(Duration::from_millis(1500), "nothing more");
}

/// [MQTT-3.3.1-3]: a DUP=1 PUBLISH from a client is forwarded with DUP=0 (the outgoing DUP
/// only says whether the outgoing packet is a retransmission).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_3_1_3_dup_flag_not_propagated_to_subscribers() {
    let b = Broker::start("");
    let mut sub = Raw::clean(&b, "sub");
    assert_eq!(sub.subscribe(1, &[("dup/t", 2)]), vec![2]);
    let mut publ = Raw::clean(&b, "pub");
    publ.send(&publish311("dup/t", b"a", 1, 9, false, true));
    publ.recv().assert_ack(PUBACK, 9);
    publ.send(&publish311("dup/t", b"b", 2, 10, false, true));
    publ.recv().assert_ack(PUBREC, 10);
    publ.send(&ack_bytes(PUBREL, 10));
    publ.recv().assert_ack(PUBCOMP, 10);

    let a = sub.recv_publish();
    assert_eq!((a.payload.as_slice(), a.qos, a.dup), (&b"a"[..], 1, false));
    sub.send(&ack_bytes(PUBACK, a.pkid));
    let c = sub.recv_publish();
    assert_eq!((c.payload.as_slice(), c.qos, c.dup), (&b"b"[..], 2, false));
}

/// [MQTT-4.3.2-1], [MQTT-4.6.0-6]: with max_inflight_messages = 2 a subscriber that never
/// PUBACKs gets exactly 2 QoS 1 PUBLISHes; each PUBACK lets exactly one more through, in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_4_3_2_1_inflight_window_limits_unacknowledged_publishes() {
    let b = Broker::start("max_inflight_messages = 2\nretry_interval = 0");
    let mut sub = Raw::clean(&b, "sub");
    assert_eq!(sub.subscribe(1, &[("win/t", 1)]), vec![1]);
    let mut publ = client(&b, "pub").await;
    for i in 0..5 {
        publ.publish("win/t", QoS::AtLeastOnce, false, i.to_string())
            .await;
    }

    let m0 = sub.recv_publish();
    let m1 = sub.recv_publish();
    assert_eq!(
        (m0.payload.as_slice(), m1.payload.as_slice()),
        (&b"0"[..], &b"1"[..])
    );
    assert_ne!(m0.pkid, m1.pkid);
    sub.expect_quiet(Duration::from_millis(700), "nothing more");

    sub.send(&ack_bytes(PUBACK, m0.pkid));
    let m2 = sub.recv_publish();
    assert_eq!(m2.payload, b"2");
    assert_ne!(
        m2.pkid, m1.pkid,
        "packet id of an unacknowledged PUBLISH reused"
    );
    sub.expect_quiet(QUIET, "nothing more");

    sub.send(&ack_bytes(PUBACK, m1.pkid));
    let m3 = sub.recv_publish();
    assert_eq!(m3.payload, b"3");
    sub.expect_quiet(QUIET, "nothing more");

    sub.send(&ack_bytes(PUBACK, m2.pkid));
    sub.send(&ack_bytes(PUBACK, m3.pkid));
    let m4 = sub.recv_publish();
    assert_eq!(m4.payload, b"4");
    sub.send(&ack_bytes(PUBACK, m4.pkid));
    sub.expect_quiet(QUIET, "nothing more");
}

/// [MQTT-3.3.1-1], [MQTT-2.3.1-4]: with retry_interval = 1 an unacknowledged QoS 1 PUBLISH
/// is re-sent with DUP=1 and the same packet id; after PUBACK it is not re-sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_3_1_1_unacknowledged_publish_resent_with_dup_and_same_packet_id() {
    let b = Broker::start("retry_interval = 1");
    let mut sub = Raw::clean(&b, "sub");
    assert_eq!(sub.subscribe(1, &[("rt/t", 1)]), vec![1]);
    let mut publ = client(&b, "pub").await;
    publ.publish("rt/t", QoS::AtLeastOnce, false, "again").await;

    let first = sub.recv_publish();
    let t0 = Instant::now();
    assert!(!first.dup);
    let again = sub.recv_publish();
    let waited = t0.elapsed();
    assert_eq!(
        (
            again.dup,
            again.pkid,
            again.qos,
            again.topic.as_str(),
            again.payload.as_slice()
        ),
        (true, first.pkid, 1, "rt/t", &b"again"[..]),
        "re-sent PUBLISH must have DUP=1 and the same packet id"
    );
    assert!(
        waited >= Duration::from_millis(800),
        "re-sent after only {waited:?}"
    );
    sub.send(&ack_bytes(PUBACK, first.pkid));
    if let Next::Packet(p) = sub.next_within(Duration::from_millis(300)) {
        // A retransmission that crossed our PUBACK.
        assert_eq!(p.publish().pkid, first.pkid);
    }
    sub.expect_quiet(Duration::from_millis(1800), "nothing more");
}

/// [MQTT-4.6.0-5], [MQTT-4.6.0-6]: 100 QoS 1 messages from one publisher to one topic arrive
/// in the order they were published (the publisher does not wait for each PUBACK).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_4_6_0_6_ordered_topic_100_qos1_messages_in_order() {
    let b = Broker::start("");
    let mut sub = client(&b, "sub").await;
    sub.subscribe("ord/t", QoS::AtLeastOnce).await;
    let publ = client(&b, "pub").await;
    for i in 0..100 {
        publ.c
            .publish("ord/t", QoS::AtLeastOnce, false, i.to_string())
            .await
            .expect("queue PUBLISH");
    }
    let mut got = Vec::new();
    for _ in 0..100 {
        got.push(
            payload_str(&sub.recv().await)
                .parse::<u32>()
                .expect("numbered payload"),
        );
    }
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    sub.expect_quiet(QUIET).await;
}

/// [MQTT-4.6.0-2], [MQTT-4.3.2-2] with queue_full = "backpressure", max_queued_messages = 2
/// and a persistent subscriber offline: the publisher's first 2 PUBACKs come at once, the
/// 3rd is withheld (and the 4th, for a topic nobody subscribes to, waits behind it so that
/// PUBACKs keep their order) until the subscriber reconnects and drains its queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_4_6_0_2_backpressure_withholds_puback_until_subscriber_drains() {
    let b = Broker::start(&format!(
        "max_queued_messages = 2\n{}",
        listener_toml("backpressure")
    ));
    let mut c = persistent(&b, "bp").await;
    c.subscribe("bp/t", QoS::AtLeastOnce).await;
    go_offline(&b, "bp", c).await;

    let mut publ = Raw::clean(&b, "bpp");
    publ.send(&publish311("bp/t", b"m1", 1, 1, false, false));
    publ.recv().assert_ack(PUBACK, 1);
    publ.send(&publish311("bp/t", b"m2", 1, 2, false, false));
    publ.recv().assert_ack(PUBACK, 2);
    publ.send(&publish311("bp/t", b"m3", 1, 3, false, false));
    publ.expect_quiet(Duration::from_secs(1), "nothing more");
    publ.send(&publish311("nobody/t", b"m4", 1, 4, false, false));
    publ.expect_quiet(QUIET, "nothing more");

    let mut c = persistent(&b, "bp").await;
    assert!(c.session_present);
    publ.recv().assert_ack(PUBACK, 3);
    publ.recv().assert_ack(PUBACK, 4);
    for m in ["m1", "m2", "m3"] {
        assert_eq!(payload_str(&c.recv().await), m);
    }
    c.expect_quiet(QUIET).await;
}

/// [MQTT-4.7.3-3]: topic names and filters of the maximum length, 65535 bytes, are
/// accepted, matched and forwarded intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_4_7_3_3_topic_of_65535_bytes_round_trips() {
    let b = Broker::start("");
    let topic = format!("t/{}", "x".repeat(65533));
    assert_eq!(topic.len(), 65535);
    let mut sub = Raw::clean(&b, "sub");
    assert_eq!(sub.subscribe(1, &[(&topic, 1)]), vec![1]);
    let mut publ = Raw::clean(&b, "pub");
    publ.send(&publish311(&topic, b"long", 1, 1, false, false));
    publ.recv().assert_ack(PUBACK, 1);
    let p = sub.recv_publish();
    assert_eq!((p.topic.len(), p.payload.as_slice()), (65535, &b"long"[..]));
    assert_eq!(p.topic, topic);
}

/// [MQTT-4.6.0-4], [MQTT-4.6.0-6]: as a QoS 2 sender the broker answers each PUBREC with its
/// PUBREL, in the order the PUBRECs arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_4_6_0_4_pubrel_sent_in_pubrec_order() {
    let b = Broker::start("");
    let mut sub = Raw::clean(&b, "sub");
    assert_eq!(sub.subscribe(1, &[("po/t", 2)]), vec![2]);
    let mut publ = client(&b, "pub").await;
    for m in ["a", "b", "c"] {
        publ.publish("po/t", QoS::ExactlyOnce, false, m).await;
    }
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
    let order = [c.pkid, a.pkid, bb.pkid];
    let mut bytes = Vec::new();
    for pkid in order {
        bytes.extend(ack_bytes(PUBREC, pkid));
    }
    sub.send(&bytes);
    for pkid in order {
        sub.recv().assert_ack(PUBREL, pkid);
    }
    let mut bytes = Vec::new();
    for pkid in order {
        bytes.extend(ack_bytes(PUBCOMP, pkid));
    }
    sub.send(&bytes);
    sub.expect_quiet(QUIET, "nothing more");
}
