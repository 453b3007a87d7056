//! Replaying records into the state, snapshots and checkpoints.
use super::*;
use crate::codec::QoS;
use crate::store::record::tests::every_kind;

fn encoded(r: &Record) -> Vec<u8> {
    let mut out = Vec::new();
    r.encode(&mut out);
    out
}

/// The session of the tests below.
const S: SessionId = 5;

fn opened(session: SessionId, client_id: &str, expiry: u32) -> Record<'_> {
    Record::SessionOpened {
        session,
        client_id,
        owner: None,
        expiry,
    }
}

fn enqueue(seq: u64, message: u64) -> Record<'static> {
    Record::Enqueued {
        session: S,
        seq,
        message,
        qos: 1,
        retain: false,
        sub_ids: Cow::Borrowed(&[]),
        shared: "",
        spooled: false,
    }
}

fn message(id: u64) -> Record<'static> {
    Record::Message {
        id,
        topic: "t",
        qos: 1,
        retain: false,
        payload: b"p",
        properties: Cow::Borrowed(&[]),
        expires_at: 0,
    }
}

#[test]
fn replay_keeps_what_is_live_and_lets_the_rest_go() {
    let mut st = State::default();
    for rec in every_kind().into_iter().take(10) {
        st.apply(&rec).unwrap();
    }
    let s = &st.sessions[&1];
    assert_eq!(s.subscriptions["a/#"], (0x0D, 7));
    let e = &s.queue[&1];
    assert_eq!(
        (e.pkid, e.released, &e.sub_ids[..]),
        (Some(9), true, &[7, 9][..])
    );
    assert!(s.qos2_received.is_empty());
    assert_eq!(st.messages[&1].1, 2, "queued once, retained once");
    assert_eq!(&st.messages[&1].0.payload[..], b"payload-1");
    // Acknowledged: still retained, so still stored.
    assert!(st.apply(&Record::Removed { session: 1, seq: 1 }).unwrap());
    assert_eq!(st.messages[&1].1, 1);
    // Retained cleared: nothing refers to it any more.
    st.apply(&Record::Retained {
        topic: "a/b",
        message: 0,
    })
    .unwrap();
    assert!(st.messages.is_empty());
    assert_eq!(st.last_message_id, 1);
    // Records about what is gone change nothing.
    assert!(!st.apply(&Record::Removed { session: 1, seq: 1 }).unwrap());
    assert!(!st.apply(&Record::SessionDiscarded { session: 99 }).unwrap());
}

#[test]
fn a_discarded_session_releases_its_messages() {
    let mut st = State::default();
    st.apply(&opened(S, "s", 60)).unwrap();
    for id in 1..=3 {
        st.apply(&message(id)).unwrap();
        st.apply(&enqueue(id, id)).unwrap();
    }
    st.apply(&message(4)).unwrap(); // stored, never queued
    st.drop_unreferenced();
    assert_eq!(st.messages.len(), 3);
    st.apply(&Record::SessionDiscarded { session: S }).unwrap();
    assert!(st.messages.is_empty() && st.sessions.is_empty());
    assert_eq!(st.live_bytes, 0);
}

#[test]
fn a_checkpoint_starts_over_and_a_snapshot_rebuilds_the_same_state() {
    let mut st = State::default();
    for rec in every_kind().into_iter().take(10) {
        st.apply(&rec).unwrap();
    }
    st.apply(&Record::SessionOpened {
        session: 2,
        client_id: "other",
        owner: Some("bob"),
        expiry: 5,
    })
    .unwrap();
    // Replayed on top of the same records (old segments not yet deleted), the
    // checkpoint replaces what came before.
    let mut again = Replay::default();
    for rec in every_kind().into_iter().take(10) {
        again.apply(&rec).unwrap();
    }
    let mut bytes = Vec::new();
    st.snapshot(&|_| Vec::new(), |r| bytes.push(encoded(r)));
    for b in &bytes {
        again.apply(&Record::decode(b).unwrap()).unwrap();
    }
    let (again, torn) = again.finish();
    assert!(!torn);
    assert_eq!(again.sessions, st.sessions);
    assert_eq!(again.retained, st.retained);
    assert_eq!(again.live_bytes, st.live_bytes);
    for (id, (msg, refs)) in &st.messages {
        assert_eq!(again.messages[id].0.payload, msg.payload);
        assert_eq!(again.messages[id].1, *refs);
    }
}

#[test]
fn a_checkpoint_cut_short_leaves_the_state_before_it() {
    let mut st = State::default();
    for rec in every_kind().into_iter().take(10) {
        st.apply(&rec).unwrap();
    }
    let mut bytes = Vec::new();
    st.snapshot(&|_| Vec::new(), |r| bytes.push(encoded(r)));
    // Every cut inside the snapshot: the records before it stand.
    for cut in 1..bytes.len() {
        let mut replay = Replay::default();
        for rec in every_kind().into_iter().take(10) {
            replay.apply(&rec).unwrap();
        }
        for b in &bytes[..cut] {
            replay.apply(&Record::decode(b).unwrap()).unwrap();
        }
        let (got, torn) = replay.finish();
        assert!(torn, "cut at {cut}");
        assert_eq!(got.sessions, st.sessions, "cut at {cut}");
        assert_eq!(got.retained, st.retained, "cut at {cut}");
    }
}

#[test]
fn owners_and_session_numbers_survive_a_checkpoint() {
    let mut replay = Replay::default();
    for (session, client_id, owner) in [(3, "a", Some("alice")), (9, "b", None)] {
        replay
            .apply(&Record::SessionOpened {
                session,
                client_id,
                owner,
                expiry: 60,
            })
            .unwrap();
    }
    // Reopened by its owner with a new expiry: still one session.
    replay
        .apply(&Record::SessionOpened {
            session: 3,
            client_id: "a",
            owner: Some("alice"),
            expiry: 120,
        })
        .unwrap();
    replay
        .apply(&Record::SessionDiscarded { session: 9 })
        .unwrap();
    let mut snapshot = Vec::new();
    replay
        .state
        .snapshot(&|_| Vec::new(), |r| snapshot.push(encoded(r)));
    for b in &snapshot {
        replay.apply(&Record::decode(b).unwrap()).unwrap();
    }
    let (st, torn) = replay.finish();
    assert!(!torn);
    assert_eq!(st.sessions.len(), 1);
    let a = &st.sessions[&3];
    assert_eq!(
        (a.client_id.as_str(), a.owner.as_deref(), a.expiry),
        ("a", Some("alice"), 120)
    );
    // 9 is gone, but its number is never given again while the log may hold it.
    assert_eq!(st.last_session_id, 9);
}

#[test]
fn records_of_another_session_number_do_not_touch_a_session() {
    let mut st = State::default();
    st.apply(&opened(S, "s", 60)).unwrap();
    st.apply(&message(1)).unwrap();
    st.apply(&enqueue(1, 1)).unwrap();
    assert!(!st
        .apply(&Record::Removed {
            session: S + 1,
            seq: 1
        })
        .unwrap());
    assert!(!st
        .apply(&Record::SessionDiscarded { session: S + 1 })
        .unwrap());
    assert_eq!(st.sessions[&S].queue.len(), 1);
}

#[test]
fn message_properties_and_expiry_survive_the_round_trip() {
    let props = codec::MessageProps {
        payload_format: Some(true),
        message_expiry: Some(3600),
        content_type: Some("text/plain".into()),
        response_topic: Some("reply/here".into()),
        correlation_data: Some(Bytes::from_static(b"\x00\x01")),
        user_properties: [("k", "v"), ("k", "w")].into_iter().collect(),
    };
    let msg = Message::with_props(
        "t/1",
        Bytes::from_static(b"hello"),
        QoS::ExactlyOnce,
        true,
        Some(Box::new(props)),
    );
    msg.set_store_id(42);
    let bytes = encoded(&message_record(&msg));
    let back = decode_message(&Record::decode(&bytes).unwrap()).unwrap();
    assert_eq!(back.props, msg.props);
    assert_eq!(
        (back.qos, back.retain, back.store_id()),
        (QoS::ExactlyOnce, true, 42)
    );
    let left = back.remaining_expiry(Instant::now()).unwrap();
    assert!((3598..=3600).contains(&left), "{left}");
}

#[test]
fn expired_queued_entries_are_dropped_but_sent_ones_stay() {
    let mut st = State::default();
    st.apply(&opened(S, "s", 0)).unwrap();
    let gone = Message::restored(
        "t",
        Bytes::new(),
        QoS::AtLeastOnce,
        false,
        None,
        Some(Instant::now()),
        1,
    );
    st.add_message(Arc::new(gone));
    st.apply(&enqueue(1, 1)).unwrap();
    st.apply(&enqueue(2, 1)).unwrap();
    st.apply(&Record::Sent {
        session: S,
        seq: 2,
        pkid: 5,
    })
    .unwrap();
    assert_eq!(
        st.drop_expired(Instant::now() + Duration::from_millis(1)),
        1
    );
    assert_eq!(st.sessions[&S].queue.keys().collect::<Vec<_>>(), vec![&2]);
}
