//! Unit tests of the session's byte accounting across its queue and its window (`fill`),
//! and of what `fill` does with a PUBLISH its client's protocol cannot express. (The
//! broker-to-client topic alias map's test is with the outbox, which now keeps the map.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::codec;
use crate::codec::MessageProps;
use crate::config::QueueFull;
use crate::message::Message;
use crate::store::MemoryStore;

fn limits(max_queued_bytes: usize) -> Arc<Limits> {
    Arc::new(Limits {
        max_inflight: 20,
        max_queued_messages: 0,
        max_queued_bytes,
        max_spool_bytes: max_queued_bytes,
        queue_qos0: true,
        queue_full: QueueFull::DropNew,
        drop_log_interval: Duration::from_secs(3600),
    })
}

/// Moves what the session may send into an outbox, with no byte bound, as the
/// connection's writer does once the client is connected.
fn fill_all(st: &mut SessionState, s: &Session) -> crate::outbox::Outbox {
    let mut out = crate::outbox::Outbox::default();
    st.fill(&mut out, usize::MAX, Instant::now(), s.store_handle(), None);
    out
}

fn message(topic: String, payload: Bytes, user_props: usize) -> SharedMessage {
    let props = (user_props > 0).then(|| {
        Box::new(MessageProps {
            user_properties: (0..user_props).map(|_| ("", "")).collect(),
            ..Default::default()
        })
    });
    Arc::new(Message::with_props(
        topic,
        payload,
        QoS::AtLeastOnce,
        false,
        props,
    ))
}

fn deliver(s: &Session, msg: &SharedMessage, extra: Option<Box<DeliveryProps>>) -> Delivery {
    let mut stored = StoreOutcome::default();
    s.offer(msg, QoS::AtLeastOnce, false, extra, None, None, &mut stored)
}

#[test]
fn max_queued_bytes_counts_properties_subscription_ids_and_overhead() {
    // Each message: 1,000 empty user properties (5,000 wire bytes) and a 1-byte payload.
    // Counted as topic + payload alone, a 256 KiB limit would take tens of thousands.
    let s = Session::new(1, "c".into(), limits(256 * 1024), Arc::new(MemoryStore));
    let msg = message("t".into(), Bytes::from_static(b"x"), 1000);
    let extra = || DeliveryProps::boxed(vec![1, 2, 3], None);
    let one = Queued::bytes_of(&msg, extra().as_deref());
    assert!(one > 5000 + std::mem::size_of::<Queued>() + 3 * 4);
    let mut queued = 0;
    for _ in 0..1000 {
        if deliver(&s, &msg, extra()) == Delivery::Queued {
            queued += 1;
        }
    }
    assert_eq!(queued, 256 * 1024 / one);
    assert!(queued > 20);
    let mut st = s.state.lock();
    assert_eq!(st.queued_bytes, queued * one);
    assert!(st.queue.iter().all(|q| q.held_bytes() == one));
    // Sending takes exactly what was counted back out.
    st.connected = true;
    fill_all(&mut st, &s);
    st.mark_inflight_unsent();
    assert_eq!(st.queue.len(), queued - 20, "the window took 20");
    assert_eq!(st.queued_bytes, (queued - 20) * one);
}

#[test]
fn mqtt_2_2_3_publish_311_cannot_express_is_dropped_and_frees_its_slot() {
    // A 65,535-byte topic (as a 5.0 Topic Alias can bring) with a payload that filled
    // the publisher's 256 MiB packet: the 3.1.1 PUBLISH would be longer than MQTT's
    // maximum. (The zeroed payload is never touched, so it costs no memory.)
    let topic = "t".repeat(65_535);
    let payload = Bytes::from(vec![0u8; 268_435_455 - 2 - 3]);
    let s = Session::new(1, "c".into(), limits(0), Arc::new(MemoryStore));
    let big = message(topic, payload, 0);
    let small = message("ok".into(), Bytes::from_static(b"fine"), 0);
    assert_eq!(deliver(&s, &big, None), Delivery::Queued);
    assert_eq!(deliver(&s, &small, None), Delivery::Queued);
    let mut st = s.state.lock();
    st.connected = true;
    let before = crate::outbox::unexpressible_dropped();
    let out = fill_all(&mut st, &s);
    assert!(crate::outbox::unexpressible_dropped() > before, "counted");
    // Only the small message went out (its packet id is the second one allocated),
    // and the dropped one holds no inflight slot and no queue space.
    assert_eq!(st.inflight.len(), 1);
    assert!(st.queue.is_empty());
    assert_eq!(st.queued_bytes, 0);
    let mut expected = bytes::BytesMut::new();
    let pkid = st.inflight.keys().next().expect("one inflight"); // ok: unit test; `fill` just put one message in the window
    codec::encode_publish(
        &mut expected,
        "ok",
        b"fine",
        QoS::AtLeastOnce,
        pkid,
        false,
        false,
    );
    assert_eq!(
        out.len(),
        expected.len(),
        "only the small PUBLISH was written"
    );
}
