//! Unit tests of [`super`]: QoS 0 deliveries queued as encoded frames, in order with the
//! queue's entries, under its limits and policies.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::*;
use crate::codec::{MessageProps, Packet};
use crate::message::SharedMessage;
use crate::outbox::Outbox;
use crate::session::test_support::{limits, message, session};
use crate::session::{Limits, Session};
use crate::store::StoreOutcome;

/// A connected session whose connection takes `wire`.
fn wired(limits: Limits, wire: Wire) -> Arc<Session> {
    let s = session(limits);
    s.state.lock().wire = Some(wire);
    s
}

/// Offers `msg` at `qos` as the publish path does, with its frames encoded once.
fn offer(s: &Session, enc: &mut Encoded, msg: &SharedMessage, qos: QoS, retain: bool) -> Delivery {
    enc.start(msg);
    let mut stored = StoreOutcome::default();
    s.offer_encoded(msg, qos, retain, None, None, None, &mut stored, Some(enc))
}

fn fill(s: &Session, out: &mut Outbox) {
    let mut st = s.state.lock();
    st.fill(out, usize::MAX, Instant::now(), s.store_handle(), None);
}

/// (topic, QoS, RETAIN) of every PUBLISH written, in order.
fn written(out: &mut Outbox, v5: bool) -> Vec<(String, QoS, bool)> {
    let mut buf = BytesMut::from(&out.take_all()[..]);
    let mut seen = Vec::new();
    loop {
        let p = if v5 {
            codec::decode_v5(&mut buf, usize::MAX)
        } else {
            codec::decode(&mut buf, usize::MAX)
        };
        match p {
            Ok(Some(Packet::Publish(p))) => seen.push((p.topic.to_string(), p.qos, p.retain)),
            Ok(Some(other)) => panic!("not a PUBLISH: {other:?}"), // ok: unit test; a failure here is the test failing
            Ok(None) => break,
            Err(e) => panic!("undecodable: {e:?}"), // ok: unit test; a failure here is the test failing
        }
    }
    assert!(buf.is_empty(), "whole packets only");
    seen
}

fn topics(seen: &[(String, QoS, bool)]) -> Vec<&str> {
    seen.iter().map(|(t, _, _)| t.as_str()).collect()
}

#[test]
fn qos0_frames_and_qos1_entries_go_out_in_offer_order() {
    let s = wired(limits(100, 0, QueueFull::DropNew), Wire::V311);
    let mut enc = Encoded::default();
    let plan = [0, 0, 1, 0, 1, 1, 0, 0, 0, 1];
    for (i, q) in plan.iter().enumerate() {
        let qos = if *q == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let msg = message(&format!("t/{i}"), QoS::AtLeastOnce);
        assert_eq!(offer(&s, &mut enc, &msg, qos, false), Delivery::Queued);
    }
    {
        let st = s.state.lock();
        assert_eq!(st.frames.len(), 6, "QoS 0 went in as frames");
        assert_eq!(st.queue.len(), 4);
        assert_eq!(st.queued_len(), 10);
        assert_eq!(st.backlog(), 10);
    }
    let mut out = Outbox::default();
    fill(&s, &mut out);
    let seen = written(&mut out, false);
    let expected: Vec<String> = (0..plan.len()).map(|i| format!("t/{i}")).collect();
    assert_eq!(topics(&seen), expected);
    for ((_, qos, _), q) in seen.iter().zip(plan) {
        assert_eq!(*qos as u8, q);
    }
    let st = s.state.lock();
    assert_eq!((st.queued_len(), st.queued_bytes), (0, 0));
}

#[test]
fn frames_wait_behind_an_entry_the_window_holds_back() {
    // A window of one: the second QoS 1 message waits, and the QoS 0 behind it too.
    let s = wired(limits(1, 0, QueueFull::DropNew), Wire::V311);
    let mut enc = Encoded::default();
    offer(
        &s,
        &mut enc,
        &message("a", QoS::AtMostOnce),
        QoS::AtMostOnce,
        false,
    );
    offer(
        &s,
        &mut enc,
        &message("b", QoS::AtLeastOnce),
        QoS::AtLeastOnce,
        false,
    );
    offer(
        &s,
        &mut enc,
        &message("c", QoS::AtLeastOnce),
        QoS::AtLeastOnce,
        false,
    );
    offer(
        &s,
        &mut enc,
        &message("d", QoS::AtMostOnce),
        QoS::AtMostOnce,
        false,
    );
    let mut out = Outbox::default();
    fill(&s, &mut out);
    assert_eq!(topics(&written(&mut out, false)), ["a", "b"]);
    let pkid = s.state.lock().inflight.keys().next();
    let handle = s.store_handle();
    assert!(s.state.lock().puback(pkid.expect("b in flight"), handle)); // ok: unit test; a failure here is the test failing
    fill(&s, &mut out);
    assert_eq!(topics(&written(&mut out, false)), ["c", "d"]);
}

#[test]
fn one_message_encoded_once_serves_every_session_and_retain_is_per_delivery() {
    let a = wired(limits(10, 0, QueueFull::DropNew), Wire::V311);
    let b = wired(limits(10, 0, QueueFull::DropNew), Wire::V311);
    let mut enc = Encoded::default();
    let msg = message("r", QoS::AtMostOnce);
    enc.start(&msg);
    let mut stored = StoreOutcome::default();
    for (s, retain) in [(&a, true), (&b, false)] {
        let d = s.offer_encoded(
            &msg,
            QoS::AtMostOnce,
            retain,
            None,
            None,
            None,
            &mut stored,
            Some(&mut enc),
        );
        assert_eq!(d, Delivery::Queued);
    }
    for (s, retain) in [(&a, true), (&b, false)] {
        let mut out = Outbox::default();
        fill(s, &mut out);
        assert_eq!(
            written(&mut out, false),
            [("r".to_string(), QoS::AtMostOnce, retain)]
        );
    }
}

#[test]
fn byte_counts_are_the_frames_and_go_back_to_zero() {
    let s = wired(limits(10, 0, QueueFull::DropNew), Wire::V311);
    let mut enc = Encoded::default();
    let msg = message("topic", QoS::AtMostOnce);
    // Fixed header 2, topic length 2, topic 5, payload 1.
    let frame = 2 + 2 + 5 + 1;
    for _ in 0..3 {
        offer(&s, &mut enc, &msg, QoS::AtMostOnce, false);
    }
    {
        let st = s.state.lock();
        assert_eq!(st.frames.bytes(), 3 * frame);
        assert_eq!(st.queued_bytes, 3 * frame);
        assert_eq!(
            st.frames.spans().count(),
            1,
            "consecutive frames share one buffer"
        );
        let span = st.frames.spans().next().expect("a span"); // ok: unit test; a failure here is the test failing
        assert_eq!(
            span.charged,
            span.buf.capacity() + std::mem::size_of::<Span>()
        );
    }
    // An entry between frames starts a new span after it.
    offer(
        &s,
        &mut enc,
        &message("q1", QoS::AtLeastOnce),
        QoS::AtLeastOnce,
        false,
    );
    offer(&s, &mut enc, &msg, QoS::AtMostOnce, false);
    {
        let st = s.state.lock();
        assert_eq!(st.frames.spans().count(), 2);
        assert_eq!(st.frames.len(), 4);
        let entry = st.queue.front().expect("the entry").held_bytes(); // ok: unit test; a failure here is the test failing
        assert_eq!(st.queued_bytes, 4 * frame + entry);
    }
    let mut out = Outbox::default();
    fill(&s, &mut out);
    let st = s.state.lock();
    assert_eq!(
        (st.queued_len(), st.queued_bytes, st.frames.bytes()),
        (0, 0, 0)
    );
    assert!(st.frames.spans().next().is_none());
}

#[test]
fn drop_oldest_drops_exactly_one_frame_per_new_message() {
    let s = wired(limits(10, 3, QueueFull::DropOldest), Wire::V311);
    let mut enc = Encoded::default();
    let mut outcomes = Vec::new();
    for i in 0..5 {
        let msg = message(&format!("m/{i}"), QoS::AtMostOnce);
        outcomes.push(offer(&s, &mut enc, &msg, QoS::AtMostOnce, false));
    }
    use Delivery::{Dropped, Queued};
    assert_eq!(outcomes, [Queued, Queued, Queued, Dropped, Dropped]);
    {
        let st = s.state.lock();
        assert_eq!(st.frames.len(), 3);
        assert_eq!(st.queued_bytes, 3 * (2 + 2 + 3 + 1));
        assert_eq!(st.dropped_total(), 2);
    }
    let mut out = Outbox::default();
    fill(&s, &mut out);
    assert_eq!(topics(&written(&mut out, false)), ["m/2", "m/3", "m/4"]);
}

#[test]
fn drop_oldest_takes_the_oldest_of_frames_and_entries() {
    let s = wired(limits(10, 3, QueueFull::DropOldest), Wire::V311);
    let mut enc = Encoded::default();
    offer(
        &s,
        &mut enc,
        &message("e0", QoS::AtLeastOnce),
        QoS::AtLeastOnce,
        false,
    );
    offer(
        &s,
        &mut enc,
        &message("f1", QoS::AtMostOnce),
        QoS::AtMostOnce,
        false,
    );
    offer(
        &s,
        &mut enc,
        &message("e2", QoS::AtLeastOnce),
        QoS::AtLeastOnce,
        false,
    );
    // Full: the entry e0 goes, then the frame f1.
    offer(
        &s,
        &mut enc,
        &message("f3", QoS::AtMostOnce),
        QoS::AtMostOnce,
        false,
    );
    offer(
        &s,
        &mut enc,
        &message("e4", QoS::AtLeastOnce),
        QoS::AtLeastOnce,
        false,
    );
    let mut out = Outbox::default();
    fill(&s, &mut out);
    assert_eq!(topics(&written(&mut out, false)), ["e2", "f3", "e4"]);
}

#[test]
fn a_full_queue_drops_new_qos0_frames_under_drop_new_and_backpressure() {
    for policy in [QueueFull::DropNew, QueueFull::Backpressure] {
        let s = wired(limits(10, 2, policy), Wire::V311);
        let mut enc = Encoded::default();
        let mut outcomes = Vec::new();
        for i in 0..4 {
            let msg = message(&format!("n/{i}"), QoS::AtMostOnce);
            outcomes.push(offer(&s, &mut enc, &msg, QoS::AtMostOnce, false));
        }
        use Delivery::{Dropped, Queued};
        assert_eq!(outcomes, [Queued, Queued, Dropped, Dropped], "{policy:?}");
        assert_eq!(s.state.lock().dropped_total(), 2);
        let mut out = Outbox::default();
        fill(&s, &mut out);
        assert_eq!(topics(&written(&mut out, false)), ["n/0", "n/1"]);
    }
}

#[test]
fn max_queued_bytes_counts_the_frames() {
    let mut l = limits(10, 0, QueueFull::DropOldest);
    // Three frames of 7 bytes fit, a fourth does not.
    l.max_queued_bytes = 3 * 7 + 6;
    let s = wired(l, Wire::V311);
    let mut enc = Encoded::default();
    for i in 0..5 {
        let msg = message(&format!("b{i}"), QoS::AtMostOnce);
        offer(&s, &mut enc, &msg, QoS::AtMostOnce, false);
    }
    {
        let st = s.state.lock();
        assert_eq!((st.frames.len(), st.queued_bytes), (3, 21));
    }
    let mut out = Outbox::default();
    fill(&s, &mut out);
    assert_eq!(topics(&written(&mut out, false)), ["b2", "b3", "b4"]);
}

#[test]
fn what_a_frame_cannot_carry_goes_as_an_entry() {
    let s = wired(limits(10, 0, QueueFull::DropNew), Wire::V311);
    let mut enc = Encoded::default();
    // Subscription identifiers or a shared subscription.
    let msg = message("x", QoS::AtMostOnce);
    enc.start(&msg);
    let mut stored = StoreOutcome::default();
    let extra = crate::message::DeliveryProps::boxed(vec![7], None);
    s.offer_encoded(
        &msg,
        QoS::AtMostOnce,
        false,
        extra,
        None,
        None,
        &mut stored,
        Some(&mut enc),
    );
    // A message that expires.
    let props = MessageProps {
        message_expiry: Some(60),
        ..Default::default()
    };
    let expiring = Arc::new(Message::with_props(
        "y",
        Bytes::from_static(b"p"),
        QoS::AtMostOnce,
        false,
        Some(Box::new(props)),
    ));
    offer(&s, &mut enc, &expiring, QoS::AtMostOnce, false);
    // A payload written by reference.
    let large = Arc::new(Message::with_props(
        "z",
        Bytes::from(vec![0; SHARE_PAYLOAD_ON_WRITE_FROM]),
        QoS::AtMostOnce,
        false,
        None,
    ));
    offer(&s, &mut enc, &large, QoS::AtMostOnce, false);
    // QoS 1.
    offer(
        &s,
        &mut enc,
        &message("w", QoS::AtLeastOnce),
        QoS::AtLeastOnce,
        false,
    );
    let st = s.state.lock();
    assert_eq!((st.frames.len(), st.queue.len()), (0, 4));
    drop(st);
    // And a session whose connection's frames are its own.
    let own = session(limits(10, 0, QueueFull::DropNew));
    offer(
        &own,
        &mut enc,
        &message("v", QoS::AtMostOnce),
        QoS::AtMostOnce,
        false,
    );
    assert_eq!(own.state.lock().frames.len(), 0);
}

#[test]
fn v5_frames_carry_the_message_properties_and_respect_maximum_packet_size() {
    let props = MessageProps {
        content_type: Some("text/plain".into()),
        user_properties: [("k", "v")].into_iter().collect(),
        ..Default::default()
    };
    let msg: SharedMessage = Arc::new(Message::with_props(
        "p/q",
        Bytes::from_static(b"hello"),
        QoS::AtMostOnce,
        false,
        Some(Box::new(props.clone())),
    ));
    let s = wired(limits(10, 0, QueueFull::DropNew), Wire::V5 { max_log2: 32 });
    let mut enc = Encoded::default();
    offer(&s, &mut enc, &msg, QoS::AtMostOnce, false);
    assert_eq!(s.state.lock().frames.len(), 1);
    let mut out = Outbox::for_client(Some(Box::new(PeerV5::new(None, 0))));
    fill(&s, &mut out);
    let mut buf = BytesMut::from(&out.take_all()[..]);
    let Ok(Some(Packet::Publish(p))) = codec::decode_v5(&mut buf, usize::MAX) else {
        panic!("a PUBLISH") // ok: unit test; a failure here is the test failing
    };
    assert_eq!((&*p.topic, &p.payload[..]), ("p/q", &b"hello"[..]));
    assert_eq!(p.props.as_deref(), Some(&props));

    // Larger than the client takes: not a frame (the general way drops it, counted).
    let small = wired(
        limits(10, 0, QueueFull::DropNew),
        Wire::of(Some(&PeerV5::new(Some(15), 0))).expect("no aliases"), // ok: unit test; a failure here is the test failing
    );
    offer(&small, &mut enc, &msg, QoS::AtMostOnce, false);
    let st = small.state.lock();
    assert_eq!((st.frames.len(), st.queue.len()), (0, 1));
}

#[test]
fn a_frame_is_parsed_back_into_its_length_topic_and_payload() {
    let msg = message("a/b", QoS::AtMostOnce);
    let mut enc = Encoded::default();
    enc.start(&msg);
    let v311 = enc.frame(&msg, Wire::V311).expect("encodable").to_vec(); // ok: unit test; a failure here is the test failing
    assert_eq!(parts(&v311, false), Some((v311.len(), &b"a/b"[..], 1)));
    let v5 = enc
        .frame(&msg, Wire::V5 { max_log2: 32 })
        .expect("encodable") // ok: unit test; a failure here is the test failing
        .to_vec();
    assert_eq!(parts(&v5, true), Some((v5.len(), &b"a/b"[..], 1)));
    // Cut short: nothing.
    assert_eq!(parts(&v311[..v311.len() - 1], false), None);
    assert_eq!(parts(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], false), None);
}

#[test]
fn a_span_grows_with_the_backlog_up_to_its_maximum() {
    let s = wired(limits(100_000, 0, QueueFull::DropNew), Wire::V311);
    let mut enc = Encoded::default();
    let msg = message("g", QoS::AtMostOnce);
    for _ in 0..20_000 {
        offer(&s, &mut enc, &msg, QoS::AtMostOnce, false);
    }
    let st = s.state.lock();
    let caps: Vec<usize> = st.frames.spans().map(|s| s.buf.capacity()).collect();
    assert_eq!(caps.first(), Some(&MIN_SPAN));
    assert!(caps.iter().all(|c| *c <= MAX_SPAN));
    // Each new one as large as the backlog it joins (100,000 bytes by the end).
    assert!(caps.windows(2).all(|w| w[1] >= w[0]), "{caps:?}");
    assert!(caps.last().is_some_and(|c| *c > MAX_SPAN / 2), "{caps:?}");
    let frames: usize = st.frames.spans().map(|s| s.frames as usize).sum();
    assert_eq!(frames, 20_000);
}

#[test]
fn an_acl_in_force_at_send_time_is_checked_per_frame() {
    let s = wired(limits(10, 0, QueueFull::DropNew), Wire::V311);
    let mut enc = Encoded::default();
    for t in ["ok/1", "no/2", "ok/3"] {
        offer(
            &s,
            &mut enc,
            &message(t, QoS::AtMostOnce),
            QoS::AtMostOnce,
            false,
        );
    }
    // Reloaded since they were queued: `no/#` is not readable any more.
    let acl = match crate::auth::AclFile::parse("topic read ok/#\n", "test.acl") {
        Ok(acl) => acl,
        Err(e) => panic!("{e}"), // ok: unit test; a failure here is the test failing
    };
    let mut out = Outbox::default();
    {
        let mut st = s.state.lock();
        st.fill(
            &mut out,
            usize::MAX,
            Instant::now(),
            s.store_handle(),
            Some(&acl),
        );
        assert_eq!((st.queued_len(), st.queued_bytes), (0, 0));
    }
    assert_eq!(topics(&written(&mut out, false)), ["ok/1", "ok/3"]);
}

#[test]
fn a_wire_takes_frames_within_the_maximum_packet_size_rounded_down_to_a_power_of_two() {
    assert_eq!(Wire::of(None), Some(Wire::V311));
    // Broker-to-client topic aliases: the connection's frames are its own.
    assert_eq!(Wire::of(Some(&PeerV5::new(None, 5))), None);
    let unlimited = Wire::of(Some(&PeerV5::new(None, 0))).expect("a wire"); // ok: unit test; a failure here is the test failing
    assert!(unlimited.takes(268_435_460));
    let w = Wire::of(Some(&PeerV5::new(Some(100), 0))).expect("a wire"); // ok: unit test; a failure here is the test failing
    assert_eq!(w, Wire::V5 { max_log2: 6 });
    assert!(w.takes(64));
    // 65..=100 would fit: they go the general way, which sends them.
    assert!(!w.takes(65));
    let exact = Wire::of(Some(&PeerV5::new(Some(128), 0))).expect("a wire"); // ok: unit test; a failure here is the test failing
    assert!(exact.takes(128) && !exact.takes(129));
}
