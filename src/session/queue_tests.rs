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
    st.queue.iter().map(|q| q.msg.topic.clone()).collect()
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
