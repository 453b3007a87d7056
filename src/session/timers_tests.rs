//! Unit tests of a session's timers and its pending will.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::codec::{QoS, Will};
use crate::config::QueueFull;
use crate::session::test_support::{limits, session};
use crate::session::{PendingWill, Timers};

fn will(due: Instant) -> PendingWill {
    PendingWill {
        due,
        will: Will {
            topic: "w".into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtMostOnce,
            retain: false,
            delay: 5,
            props: None,
        },
        username: None,
    }
}

#[test]
fn a_pending_will_is_taken_only_when_due_and_can_be_cancelled() {
    let s = session(limits(10, 0, QueueFull::DropNew));
    let mut st = s.state.lock();
    let now = Instant::now();
    let due = now + Duration::from_secs(5);
    st.set_pending_will(will(due));
    assert_eq!(st.pending_will_due(), Some(due));
    assert!(
        st.take_pending_will(|w| w.due <= now).is_none(),
        "not due yet"
    );
    assert_eq!(st.pending_will_due(), Some(due));
    let taken = st.take_pending_will(|w| w.due <= due).expect("due"); // ok: unit test; set due just above
    assert_eq!(taken.will.topic, "w");
    assert!(st.pending_will_due().is_none());
    assert!(
        st.pending.is_none(),
        "nothing left pending: the box is freed"
    );
    // Cancelled (the client came back): taken without asking when.
    st.set_pending_will(will(due));
    st.set_expires_at(Some(due));
    assert!(st.take_pending_will(|_| true).is_some());
    assert_eq!(st.expires_at(), Some(due), "the expiry stays");
    st.set_expires_at(None);
    assert!(st.pending.is_none());
}

#[test]
fn keep_alive_and_retry_keep_their_meaning_in_milliseconds() {
    let t = Timers::new(None, None);
    assert_eq!((t.keep_alive(), t.retry()), (None, None));
    let t = Timers::new(
        Some(Duration::from_secs(90)),
        Some(Duration::from_micros(10)),
    );
    assert_eq!(t.keep_alive(), Some(Duration::from_secs(90)));
    assert_eq!(
        t.retry(),
        Some(Duration::from_millis(1)),
        "never rounded to none"
    );
}
