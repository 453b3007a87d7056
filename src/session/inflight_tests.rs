//! Unit tests of the outgoing inflight window: packet ids, the window, retry with DUP,
//! and the PUBACK / PUBREC / PUBREL / PUBCOMP transitions.

use std::time::{Duration, Instant};

use crate::codec::{Packet, QoS};
use crate::config::QueueFull;
use crate::outbox::Outbox;
use crate::session::test_support::{fill, limits, message, offer, packets, publishes, session};
use crate::session::InflightState;

#[test]
fn packet_ids_wrap_past_65535_skip_0_and_ids_in_use() {
    let s = session(limits(10, 0, QueueFull::DropNew));
    let mut st = s.state.lock();
    st.next_pkid = 65_534;
    assert_eq!(st.alloc_pkid(), 65_535);
    assert_eq!(st.alloc_pkid(), 1, "0 is never a packet id");
    // An id still awaiting its acknowledgement is not handed out again.
    drop(st);
    offer(&s, &message("a", QoS::AtLeastOnce), QoS::AtLeastOnce, None);
    let mut st = s.state.lock();
    st.next_pkid = 0;
    let mut out = Outbox::default();
    let handle = s.store_handle();
    st.fill(&mut out, usize::MAX, Instant::now(), handle, None);
    assert!(st.inflight.contains_key(&1));
    st.next_pkid = 0;
    assert_eq!(st.alloc_pkid(), 2);
}

#[test]
fn the_window_bounds_what_is_sent_and_an_ack_frees_a_slot() {
    let s = session(limits(2, 0, QueueFull::DropNew));
    for t in ["a", "b", "c"] {
        offer(&s, &message(t, QoS::AtLeastOnce), QoS::AtLeastOnce, None);
    }
    let mut out = Outbox::default();
    fill(&s, &mut out);
    assert_eq!(publishes(&packets(&mut out)), [(1, false), (2, false)]);
    assert_eq!(s.state.lock().queue.len(), 1);
    assert!(s.state.lock().puback(1, s.store_handle()));
    assert!(!s.state.lock().puback(1, s.store_handle()), "unknown now");
    fill(&s, &mut out);
    assert_eq!(publishes(&packets(&mut out)), [(3, false)]);
}

#[test]
fn retry_resends_with_dup_and_the_same_packet_id() {
    let s = session(limits(10, 0, QueueFull::DropNew));
    for t in ["a", "b"] {
        offer(&s, &message(t, QoS::AtLeastOnce), QoS::AtLeastOnce, None);
    }
    let mut out = Outbox::default();
    fill(&s, &mut out);
    assert_eq!(publishes(&packets(&mut out)), [(1, false), (2, false)]);
    let mut st = s.state.lock();
    // Not due yet.
    st.retry(
        &mut out,
        Duration::from_secs(3600),
        Instant::now(),
        s.store_handle(),
    );
    assert!(out.is_empty());
    st.retry(&mut out, Duration::ZERO, Instant::now(), s.store_handle());
    assert_eq!(publishes(&packets(&mut out)), [(1, true), (2, true)]);
    // A new connection: everything inflight goes again, in order, with DUP.
    st.mark_inflight_unsent();
    assert!(st.oldest_sent().is_none());
    drop(st);
    fill(&s, &mut out);
    assert_eq!(publishes(&packets(&mut out)), [(1, true), (2, true)]);
}

#[test]
fn qos2_goes_pubrec_then_pubcomp_and_pubrel_is_resent() {
    let s = session(limits(10, 0, QueueFull::DropNew));
    offer(&s, &message("a", QoS::ExactlyOnce), QoS::ExactlyOnce, None);
    let mut out = Outbox::default();
    fill(&s, &mut out);
    assert_eq!(publishes(&packets(&mut out)), [(1, false)]);
    let h = s.store_handle();
    let mut st = s.state.lock();
    assert!(!st.puback(1, h), "PUBACK does not complete QoS 2");
    assert!(!st.pubcomp(1, h), "PUBCOMP before PUBREC");
    assert_eq!(st.pubrec(1, Instant::now(), h), (true, 0));
    assert_eq!(
        st.inflight.get(&1).map(|f| f.state),
        Some(InflightState::Released)
    );
    // A duplicate PUBREC is known all the same; an unknown id is not.
    assert_eq!(st.pubrec(1, Instant::now(), h), (true, 0));
    assert_eq!(st.pubrec(9, Instant::now(), h), (false, 0));
    assert!(!st.refused(1, h), "refusal only before PUBREC");
    // Reconnected before PUBCOMP: the PUBREL goes again, not the PUBLISH.
    st.mark_inflight_unsent();
    drop(st);
    fill(&s, &mut out);
    let sent = packets(&mut out);
    assert!(
        matches!(sent[..], [Packet::PubRel(a)] if a.pkid == 1),
        "{sent:?}"
    );
    let mut st = s.state.lock();
    assert!(st.pubcomp(1, h));
    assert!(st.inflight.is_empty());
}

#[test]
fn a_refused_message_frees_its_slot() {
    let s = session(limits(10, 0, QueueFull::DropNew));
    offer(&s, &message("a", QoS::AtLeastOnce), QoS::AtLeastOnce, None);
    fill(&s, &mut Outbox::default());
    let mut st = s.state.lock();
    assert!(st.refused(1, s.store_handle()));
    assert!(st.inflight.is_empty());
}
