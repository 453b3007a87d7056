//! Record encoding: every kind round-trips, damage is an error.
use super::*;

pub(crate) fn every_kind() -> Vec<Record<'static>> {
    let c = 1;
    vec![
        Record::SessionOpened {
            session: c,
            client_id: "dev-1",
            owner: Some("alice"),
            expiry: u32::MAX,
        },
        Record::Subscribed {
            session: c,
            filter: "a/#",
            options: 0x0D,
            sub_id: 7,
        },
        Record::SessionClosed {
            session: c,
            at: 1_700_000_000_000,
        },
        Record::Message {
            id: 1,
            topic: "a/b",
            qos: 1,
            retain: false,
            payload: b"payload-1",
            properties: Cow::Borrowed(&[]),
            expires_at: 0,
        },
        Record::Enqueued {
            session: c,
            seq: 1,
            message: 1,
            qos: 1,
            retain: false,
            sub_ids: Cow::Owned(vec![7, 9]),
            shared: "",
            spooled: false,
        },
        Record::Sent {
            session: c,
            seq: 1,
            pkid: 9,
        },
        Record::Released { session: c, seq: 1 },
        Record::Retained {
            topic: "a/b",
            message: 1,
        },
        Record::Qos2Received {
            session: c,
            pkid: 3,
        },
        Record::Qos2Completed {
            session: c,
            pkid: 3,
        },
        Record::Removed { session: c, seq: 1 },
        Record::Unsubscribed {
            session: c,
            filter: "a/#",
        },
        Record::Enqueued {
            session: c,
            seq: 2,
            message: 1,
            qos: 2,
            retain: true,
            sub_ids: Cow::Owned(vec![]),
            shared: "$share/g/a/#",
            spooled: true,
        },
        Record::SpoolState {
            session: c,
            last: 12,
            present: Cow::Owned(vec![(2, 2), (4, 9)]),
            chunks: Cow::Owned(vec![crate::store::spool::ChunkMeta {
                first: 2,
                bytes: 700,
                entries: 8,
            }]),
        },
        Record::SessionDiscarded { session: c },
        Record::Checkpoint,
        Record::CheckpointEnd,
    ]
}

fn encoded(r: &Record) -> Vec<u8> {
    let mut out = Vec::new();
    r.encode(&mut out);
    out
}

#[test]
fn every_record_round_trips() {
    for r in every_kind() {
        let bytes = encoded(&r);
        assert_eq!(Record::decode(&bytes), Ok(r.clone()));
    }
}

#[test]
fn an_anonymous_owner_round_trips_apart_from_an_empty_username() {
    for owner in [None, Some(""), Some("bob")] {
        let r = Record::SessionOpened {
            session: 7,
            client_id: "c",
            owner,
            expiry: 5,
        };
        assert_eq!(Record::decode(&encoded(&r)), Ok(r));
    }
}

#[test]
fn a_format_1_session_record_is_refused_with_a_message_saying_so() {
    // SessionDiscarded of format 1: tag 2, then the client id.
    let old = [2, 1, 0, 0, 0, b'c'];
    let e = Record::decode(&old).unwrap_err();
    assert!(e.contains("store format 1"), "{e}");
}

#[test]
fn damaged_records_are_errors_not_panics() {
    for r in every_kind() {
        let bytes = encoded(&r);
        for cut in 0..bytes.len() {
            assert!(Record::decode(&bytes[..cut]).is_err(), "{r:?} cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Record::decode(&longer).is_err());
    }
    assert!(Record::decode(&[99]).is_err());
    // A length field claiming 4 GiB is an error, not an allocation.
    let mut huge = vec![UNSUBSCRIBED];
    huge.extend_from_slice(&[0; 8]);
    huge.extend_from_slice(&[0xFF; 4]);
    assert!(Record::decode(&huge).is_err());
    let mut many_ids = vec![ENQUEUED];
    many_ids.extend_from_slice(&[0; 8 + 18]);
    many_ids.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
    assert!(Record::decode(&many_ids).is_err());
}
