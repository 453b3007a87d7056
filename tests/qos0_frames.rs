//! QoS 0 deliveries queued as encoded frames (src/session/frames.rs), over real sockets:
//! mixed with QoS 1 they arrive in publish order, in both protocol versions; the
//! subscribers whose packets are their own (topic aliases, subscription identifiers, a
//! persistent session) still get theirs right; and a full queue drops QoS 0 messages
//! as each `queue_full` policy says.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

use common::packets::*;
use common::raw::Raw;
use common::*;

/// Messages published in one burst.
const N: usize = 300;

/// QoS of message `i` in the burst: QoS 1 now and then, in runs of QoS 0 of varying
/// length.
fn qos_of(i: usize) -> u8 {
    u8::from(i.is_multiple_of(7) || i % 11 == 3)
}

/// Receives the burst, resolving topic aliases; checks order, QoS, topic, and what
/// `check` asks of each PUBLISH.
fn receive_burst(sub: &mut Raw, check: impl Fn(&RawPub)) {
    let last = (N - 1).to_string();
    let got = sub.drain_until(
        |p| p.text() == last,
        Duration::from_secs(20),
        Duration::from_millis(300),
    );
    let mut aliases: HashMap<u16, String> = HashMap::new();
    let mut seen = Vec::new();
    for p in &got {
        let mut topic = p.topic.clone();
        if let Some(Prop::Two(_, alias)) = p.prop(TOPIC_ALIAS) {
            if topic.is_empty() {
                topic = aliases.get(alias).cloned().expect("a known alias");
            } else {
                aliases.insert(*alias, topic.clone());
            }
        }
        let i: usize = p.text().parse().expect("an index");
        assert_eq!(topic, format!("o/{}", i % 5), "{}: topic of {i}", sub.id);
        assert_eq!(p.qos, qos_of(i), "{}: QoS of {i}", sub.id);
        assert!(!p.retain, "{}: RETAIN on a live delivery", sub.id);
        check(p);
        seen.push(i);
    }
    assert_eq!(
        seen,
        (0..N).collect::<Vec<_>>(),
        "{}: publish order",
        sub.id
    );
}

#[test]
fn qos0_and_qos1_interleaved_arrive_in_publish_order_whatever_the_subscriber() {
    let b = Broker::start("");
    // The frames' way: 3.1.1 and plain 5.0, clean sessions.
    let mut v311 = Raw::clean(&b, "v311");
    v311.subscribe(1, &[("o/#", 1)]);
    let mut v5 = Raw::connected5(b.addr(), "v5", &[]);
    v5.subscribe(1, &[("o/#", 1)]);
    // Their own packets: topic aliases, a subscription identifier, a persistent session.
    let mut aliased = Raw::connected5(b.addr(), "aliased", &[Prop::Two(TOPIC_ALIAS_MAXIMUM, 10)]);
    aliased.subscribe(1, &[("o/#", 1)]);
    let mut sub_id = Raw::connected5(b.addr(), "sub-id", &[]);
    sub_id.subscribe_keeping(1, &[("o/#", 1)], Some(42));
    let (mut kept, _) = Raw::connect5(b.addr(), "kept", true, &[Prop::Four(SESSION_EXPIRY, 3600)]);
    kept.subscribe(1, &[("o/#", 1)]);

    // One burst, one write: the broker routes it in few reads, the subscribers' queues
    // fill with frames and entries mixed.
    let mut publisher = Raw::connected5(b.addr(), "publisher", &[]);
    let props = [user("k", "v")];
    let mut burst = Vec::new();
    for i in 0..N {
        let qos = qos_of(i);
        let topic = format!("o/{}", i % 5);
        burst.extend(publish5(
            &topic,
            qos,
            i as u16 + 1,
            false,
            &props,
            i.to_string().as_bytes(),
        ));
    }
    publisher.send(&burst);
    for i in (0..N).filter(|i| qos_of(*i) == 1) {
        let ack = publisher.control();
        assert_eq!(ack.kind(), PUBACK);
        assert_eq!(ack.ack().0, i as u16 + 1);
    }

    let user_props = vec![("k".to_string(), "v".to_string())];
    receive_burst(&mut v311, |p| assert!(p.props.is_empty()));
    receive_burst(&mut v5, |p| {
        assert_eq!(p.user_properties(), user_props);
        assert!(p.sub_ids().is_empty());
        assert!(p.prop(TOPIC_ALIAS).is_none());
    });
    receive_burst(&mut aliased, |p| {
        assert_eq!(p.user_properties(), user_props);
        assert!(p.prop(TOPIC_ALIAS).is_some(), "every topic fits 10 aliases");
    });
    receive_burst(&mut sub_id, |p| {
        assert_eq!(p.user_properties(), user_props);
        assert_eq!(p.sub_ids(), [42]);
    });
    receive_burst(&mut kept, |p| assert_eq!(p.user_properties(), user_props));
}

/// Messages published to fill a stalled subscriber's socket, write buffer and queue.
const FILL: usize = 20_000;
/// Messages published once it is full; indexes from `MARK`.
const LATE: usize = 200;
const MARK: usize = 1_000_000;

/// A subscriber that does not read while `FILL` QoS 0 messages of 1,000 bytes are
/// published (far more than the socket buffers and the write buffer hold, so the rest
/// meets its queue of 50), then `LATE` more once all of that is still: its socket is
/// full, its write buffer is above the mark below which the connection takes from the
/// queue, and its queue is full. Then it reads everything. Returns the indexes of the
/// late messages it got, in order.
fn late_messages_a_stalled_subscriber_gets(policy: &str, v5: bool) -> (Vec<usize>, Broker) {
    let b = Broker::start(&format!(
        "max_queued_messages = 50\ndrop_log_interval = 3600\n\
         [[listener]]\nbind = \"127.0.0.1\"\nport = {}\nqueue_full = \"{policy}\"\n",
        free_port()
    ));
    let mut sub = if v5 {
        Raw::connected5(b.addr(), "stalled", &[])
    } else {
        Raw::clean(&b, "stalled")
    };
    sub.subscribe(1, &[("s/t", 0)]);
    let mut publisher = Raw::clean(&b, "publisher");
    let mut publish = |range: std::ops::Range<usize>| {
        let mut burst = Vec::new();
        for i in range {
            let mut payload = format!("{i:07}").into_bytes();
            payload.resize(1000, b'.');
            burst.extend(publish311("s/t", &payload, 0, 0, false, false));
            if burst.len() > 1 << 20 {
                publisher.send(&burst);
                burst.clear();
            }
        }
        publisher.send(&burst);
        // Answered once everything before it was read and routed.
        publisher.ping();
    };
    publish(0..FILL);
    // Whatever the socket still takes is taken.
    std::thread::sleep(Duration::from_millis(300));
    publish(MARK..MARK + LATE);

    let mut bytes = Vec::new();
    sub.s
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(n) = sub.s.read(&mut buf) {
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&buf[..n]);
    }
    let mut got = Vec::new();
    for (h, body) in split_packets(&bytes) {
        assert_eq!(h, 0x30, "QoS 0 PUBLISH");
        let (topic, payload) = if v5 {
            let (t, _, p) = parse_publish5(h, &body);
            (t, p)
        } else {
            parse_publish(h, &body)
        };
        assert_eq!((topic.as_str(), payload.len()), ("s/t", 1000));
        let i: usize = std::str::from_utf8(&payload[..7])
            .expect("index")
            .parse()
            .expect("index");
        got.push(i);
    }
    assert!(got.len() < FILL, "some were dropped: {}", got.len());
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order");
    sub.s.write_all(&PINGREQ_BYTES).expect("PINGREQ");
    let late = got.into_iter().filter(|i| *i >= MARK).collect();
    (late, b)
}

#[test]
fn a_full_queue_under_drop_oldest_keeps_the_newest_qos0_messages() {
    for v5 in [false, true] {
        let (late, b) = late_messages_a_stalled_subscriber_gets("drop_oldest", v5);
        // Ending with the queue's 50, the newest (the connection may have taken some
        // earlier ones from the queue if the socket took more meanwhile).
        let newest: Vec<usize> = (MARK + LATE - 50..MARK + LATE).collect();
        assert!(late.ends_with(&newest), "v5 {v5}: {late:?}");
        assert!(late.len() < LATE, "v5 {v5}: {late:?}");
        assert!(b.wait_event_with(
            "queue_full",
            &[("client_id", "stalled")],
            Duration::from_secs(5)
        ));
    }
}

/// Behind a full inflight window of one (the first QoS 1 message sent and not
/// acknowledged), a QoS 1 message and then ten QoS 0 ones meet a queue of five. Returns
/// the payloads the subscriber gets once it acknowledges the first one.
fn behind_a_full_window(policy: &str, v5: bool) -> Vec<String> {
    let b = Broker::start(&format!(
        "max_inflight_messages = 1\nmax_queued_messages = 5\nretry_interval = 0\n\
         [[listener]]\nbind = \"127.0.0.1\"\nport = {}\nqueue_full = \"{policy}\"\n",
        free_port()
    ));
    let mut sub = if v5 {
        Raw::connected5(b.addr(), "sub", &[])
    } else {
        Raw::clean(&b, "sub")
    };
    sub.subscribe(1, &[("w/#", 1)]);
    let mut publisher = Raw::clean(&b, "publisher");
    publisher.publish("w/t", "h0", 1, 1, false);
    let h0 = sub.recv_publish();
    assert_eq!((h0.text().as_str(), h0.qos), ("h0", 1));
    // One write: routed in one go.
    let mut burst = publish311("w/t", b"h1", 1, 2, false, false);
    for i in 0..10 {
        burst.extend(publish311(
            "w/t",
            format!("q{i}").as_bytes(),
            0,
            0,
            false,
            false,
        ));
    }
    publisher.send(&burst);
    publisher.recv().assert_ack(PUBACK, 2);
    publisher.ping();
    sub.ack(PUBACK, h0.pkid);
    let got = sub.drain_until(|_| true, Duration::from_secs(5), Duration::from_millis(500));
    got.iter().map(|p| p.text()).collect()
}

#[test]
fn a_full_queue_drops_qos0_frames_by_policy_behind_a_full_window() {
    for v5 in [false, true] {
        for policy in ["drop_new", "backpressure"] {
            // The first four QoS 0 fit behind h1; the other six are dropped.
            assert_eq!(
                behind_a_full_window(policy, v5),
                ["h1", "q0", "q1", "q2", "q3"],
                "{policy} v5 {v5}"
            );
        }
        // The oldest go for the newest: h1 first, then q0..q4.
        assert_eq!(
            behind_a_full_window("drop_oldest", v5),
            ["q5", "q6", "q7", "q8", "q9"],
            "drop_oldest v5 {v5}"
        );
    }
}

#[test]
fn a_full_queue_under_drop_new_or_backpressure_drops_the_new_qos0_messages() {
    for policy in ["drop_new", "backpressure"] {
        for v5 in [false, true] {
            let (late, b) = late_messages_a_stalled_subscriber_gets(policy, v5);
            // Fewer than were published: the queue was full when most of them came.
            assert!(late.len() < LATE, "{policy} v5 {v5}: {late:?}");
            assert!(b.wait_event_with(
                "queue_full",
                &[("client_id", "stalled")],
                Duration::from_secs(5)
            ));
        }
    }
}
