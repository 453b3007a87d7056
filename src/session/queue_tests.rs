//! Unit tests of [`super`]: retained messages sent on SUBSCRIBE under the queue limits.

use super::*;
use crate::message::Message;
use crate::session::{Limits, Session};
use crate::store::MemoryStore;
use std::time::Duration;

fn session(max_queued_messages: usize, queue_full: QueueFull) -> Session {
    let limits = Limits {
        max_inflight: 20,
        max_queued_messages,
        max_queued_bytes: 0,
        max_spool_bytes: 0,
        queue_qos0: false,
        queue_full,
        drop_log_interval: Duration::from_secs(3600),
    };
    let s = Session::new(1, Arc::from("c"), Arc::new(limits), Arc::new(MemoryStore));
    s.state.lock().connected = true;
    s
}

fn retained(n: usize) -> Vec<(SharedMessage, QoS)> {
    (0..n)
        .map(|i| {
            let msg = Message::with_props(
                format!("r/{i}"),
                bytes::Bytes::from_static(b"v"),
                QoS::AtLeastOnce,
                true,
                None,
            );
            (Arc::new(msg), QoS::AtLeastOnce)
        })
        .collect()
}

fn queued_topics(s: &Session) -> Vec<String> {
    let st = s.state.lock();
    st.queue.iter().map(|q| q.msg.topic.to_string()).collect()
}

#[test]
fn retained_on_subscribe_follow_the_queue_limit_and_policy() {
    let msgs = retained(5);
    // drop_oldest: the newest that fit stay.
    let s = session(3, QueueFull::DropOldest);
    assert_eq!(s.deliver_retained(&msgs, None), 2);
    assert_eq!(queued_topics(&s), ["r/2", "r/3", "r/4"]);
    assert_eq!(s.state.lock().dropped_total(), 2);
    // drop_new: the first that fit stay.
    let s = session(3, QueueFull::DropNew);
    assert_eq!(s.deliver_retained(&msgs, None), 2);
    assert_eq!(queued_topics(&s), ["r/0", "r/1", "r/2"]);
    // backpressure: no publisher to hold back, so as drop_new, never over the limit.
    let s = session(3, QueueFull::Backpressure);
    assert_eq!(s.deliver_retained(&msgs, Some(7)), 2);
    assert_eq!(queued_topics(&s), ["r/0", "r/1", "r/2"]);
    let st = s.state.lock();
    assert!(st
        .queue
        .iter()
        .all(|q| q.retain && q.extra.as_ref().is_some_and(|e| e.sub_ids == [7])));
    drop(st);
    // Unlimited: all of them.
    let s = session(0, QueueFull::DropOldest);
    assert_eq!(s.deliver_retained(&msgs, None), 0);
    assert_eq!(queued_topics(&s).len(), 5);
}

mod limits {
    //! The queue's limits and each `queue_full` policy, for publishers' deliveries.

    use crate::codec::QoS;
    use crate::config::QueueFull;
    use crate::message::DeliveryProps;
    use crate::outbox::Outbox;
    use crate::session::test_support::{fill, limits, message, offer, session};
    use crate::session::Delivery;

    fn topics(s: &crate::session::Session) -> Vec<String> {
        let st = s.state.lock();
        st.queue.iter().map(|q| q.msg.topic.to_string()).collect()
    }

    #[test]
    fn drop_new_keeps_what_was_queued() {
        let s = session(limits(0, 2, QueueFull::DropNew));
        for t in ["a", "b"] {
            assert_eq!(
                offer(&s, &message(t, QoS::AtLeastOnce), QoS::AtLeastOnce, None),
                Delivery::Queued
            );
        }
        let c = message("c", QoS::AtLeastOnce);
        assert_eq!(offer(&s, &c, QoS::AtLeastOnce, None), Delivery::Dropped);
        assert_eq!(topics(&s), ["a", "b"]);
        assert_eq!(s.state.lock().dropped_total(), 1);
    }

    #[test]
    fn drop_oldest_makes_room_for_the_new_one() {
        let s = session(limits(0, 2, QueueFull::DropOldest));
        for t in ["a", "b"] {
            offer(&s, &message(t, QoS::AtLeastOnce), QoS::AtLeastOnce, None);
        }
        // Reported as a drop: another message went for it.
        let c = message("c", QoS::AtLeastOnce);
        assert_eq!(offer(&s, &c, QoS::AtLeastOnce, None), Delivery::Dropped);
        assert_eq!(topics(&s), ["b", "c"]);
    }

    #[test]
    fn backpressure_queues_over_the_limit_and_wakes_the_publisher_when_there_is_room() {
        let s = session(limits(10, 1, QueueFull::Backpressure));
        let publisher = session(limits(10, 0, QueueFull::DropNew));
        offer(
            &s,
            &message("a", QoS::AtLeastOnce),
            QoS::AtLeastOnce,
            Some(&publisher),
        );
        let b = message("b", QoS::AtLeastOnce);
        assert_eq!(
            offer(&s, &b, QoS::AtLeastOnce, Some(&publisher)),
            Delivery::OverLimit
        );
        assert!(!s.state.lock().has_room());
        // QoS 0 has nobody to slow down: dropped, never queued beyond the limit.
        let q0 = message("q0", QoS::AtMostOnce);
        assert_eq!(
            offer(&s, &q0, QoS::AtMostOnce, Some(&publisher)),
            Delivery::Dropped
        );
        assert_eq!(topics(&s), ["a", "b"]);
        let waiters = fill(&s, &mut Outbox::default());
        assert_eq!(waiters.len(), 1, "the publisher is woken");
        assert!(std::sync::Arc::ptr_eq(&waiters[0], &publisher));
        assert!(s.state.lock().has_room());
    }

    #[test]
    fn qos0_for_an_offline_client_is_skipped_unless_configured() {
        let s = session(limits(10, 0, QueueFull::DropNew));
        s.state.lock().connected = false;
        let m = message("a", QoS::AtMostOnce);
        assert_eq!(offer(&s, &m, QoS::AtMostOnce, None), Delivery::Skipped);
        let mut l = limits(10, 0, QueueFull::DropNew);
        l.queue_qos0 = true;
        let s = session(l);
        s.state.lock().connected = false;
        assert_eq!(offer(&s, &m, QoS::AtMostOnce, None), Delivery::Queued);
    }

    #[test]
    fn shared_messages_are_taken_out_and_can_be_put_back() {
        let s = session(limits(10, 0, QueueFull::DropNew));
        let mut stored = crate::store::StoreOutcome::default();
        let shared = DeliveryProps::boxed(Vec::new(), Some("g".into()));
        for (t, extra) in [("plain", None), ("shared", shared)] {
            let m = message(t, QoS::AtLeastOnce);
            s.offer(&m, QoS::AtLeastOnce, false, extra, None, None, &mut stored);
        }
        let mut st = s.state.lock();
        let bytes = st.queued_bytes;
        let taken = st.take_shared();
        assert_eq!(taken.len(), 1);
        assert_eq!(&*taken[0].msg.topic, "shared");
        assert_eq!(st.queue.len(), 1);
        assert!(st.queued_bytes < bytes);
        st.requeue(taken);
        assert_eq!(st.queue.len(), 2);
        assert_eq!(st.queued_bytes, bytes);
    }
}
