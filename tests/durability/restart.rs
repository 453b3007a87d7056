//! What a restart on the same store keeps: retained messages, subscriptions and queues,
//! inflight packet ids, incoming QoS 2 state, session expiry, and everything after a clean
//! SIGTERM.

use std::time::{Duration, Instant};

use super::common::packets::*;
use super::common::raw::{Next, Raw};
use super::common::Broker;
use super::*;

// ---------------------------------------------------------------------------------------
// Restart tests
// ---------------------------------------------------------------------------------------

/// Subscribes a fresh clean session to `filter` and returns the retained messages it gets
/// (retain flag, QoS, topic, payload), listening until [`QUIET`].
fn retained_for(b: &Broker, id: &str, filter: &str) -> Vec<(bool, u8, String, String)> {
    let (mut c, _) = Raw::connect(b, id, true, 60, None);
    assert_eq!(c.subscribe(1, &[(filter, 2)]), [2]);
    let mut got = Vec::new();
    for _ in 0..100 {
        match c.next_within(QUIET) {
            Next::Packet(p) if p.kind() == PUBLISH => {
                let m = p.publish();
                match m.qos {
                    1 => c.send(&ack_bytes(PUBACK, m.pkid)),
                    2 => c.send(&ack_bytes(PUBREC, m.pkid)),
                    _ => {}
                }
                got.push((m.retain, m.qos, m.topic.clone(), m.text()));
            }
            Next::Packet(p) if p.kind() == PUBREL => c.send(&ack_bytes(PUBCOMP, p.pkid())),
            Next::Packet(p) => panic!("{id}: unexpected {p:?}"),
            Next::Closed => panic!("{id}: midge closed the connection"),
            Next::Quiet => break,
        }
    }
    c.go_offline(b);
    got.sort();
    got
}

/// Retained messages set (and replaced) with an acknowledged PUBLISH survive SIGKILL, and
/// one cleared with an acknowledged empty retained PUBLISH stays cleared, over two
/// restarts.
#[test]
fn retained_messages_survive_a_restart() {
    let mut b = durable_broker("");
    let (mut p, _) = Raw::connect(&b, "ret-pub", true, 60, None);
    p.publish("keep/a", "a-old", 1, 1, true);
    p.publish("keep/a", "a-new", 1, 2, true); // replaces a-old
    p.publish("keep/b", "b", 2, 3, true);
    p.publish("gone/c", "c", 1, 4, true);
    p.publish("gone/c", "", 1, 5, true); // clears gone/c
    p.publish("keep/plain", "not retained", 1, 6, false);
    drop(p);

    let expected = vec![
        (true, 1, "keep/a".to_owned(), "a-new".to_owned()),
        (true, 2, "keep/b".to_owned(), "b".to_owned()),
    ];
    for restart in 1..=2 {
        let loaded = kill_and_restart(&mut b);
        assert_eq!(
            loaded.retained, 2,
            "restart {restart}: two retained messages are live: {}",
            loaded.line
        );
        assert_eq!(
            retained_for(&b, &format!("ret-check-{restart}"), "#"),
            expected,
            "restart {restart}: retained messages after SIGKILL"
        );
        assert_eq!(
            retained_for(&b, &format!("ret-gone-{restart}"), "gone/#"),
            vec![],
            "restart {restart}: the cleared retained message came back"
        );
    }
}

/// A persistent session's subscriptions (each with its QoS) and its messages queued while
/// offline survive SIGKILL: session present 1, the queue in order at the granted QoS, and
/// the QoS 0 subscription still routes.
#[test]
fn subscriptions_and_queued_messages_survive_kill_9() {
    let mut b = durable_broker("");
    let (mut sub, present) = Raw::connect(&b, "q-sub", false, 60, None);
    assert!(!present);
    assert_eq!(
        sub.subscribe(1, &[("q/zero", 0), ("q/one", 1), ("q/two", 2)]),
        [0, 1, 2]
    );
    sub.go_offline(&b);

    let (mut p, _) = Raw::connect(&b, "q-pub", true, 60, None);
    p.publish("q/one", "m1", 1, 1, false);
    p.publish("q/two", "m2", 2, 2, false);
    p.publish("q/two", "m3", 1, 3, false); // published at 1: delivered at 1
    p.publish("q/one", "m4", 2, 4, false); // granted 1: delivered at 1
    p.publish("q/none", "m5", 1, 5, false); // no subscriber
    drop(p);

    let loaded = kill_and_restart(&mut b);
    assert_eq!(
        (loaded.sessions, loaded.queued),
        (1, 4),
        "one persistent session with four queued messages: {}",
        loaded.line
    );

    let (mut sub, present) = Raw::connect(&b, "q-sub", false, 60, None);
    assert!(present, "CONNACK session present after SIGKILL and restart");
    let got: Vec<(String, u8, String)> = sub
        .drain_until(|m| m.text() == "m4", WAIT, QUIET)
        .iter()
        .map(|m| (m.topic.clone(), m.qos, m.text()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("q/one".to_owned(), 1, "m1".to_owned()),
            ("q/two".to_owned(), 2, "m2".to_owned()),
            ("q/two".to_owned(), 1, "m3".to_owned()),
            ("q/one".to_owned(), 1, "m4".to_owned()),
        ],
        "queued messages after the restart, in order, at their QoS, and nothing else"
    );

    // Every subscription still routes, at its QoS.
    let (mut p, _) = Raw::connect(&b, "q-pub", true, 60, None);
    for (topic, qos, granted) in [("q/zero", 1, 0), ("q/one", 2, 1), ("q/two", 2, 2)] {
        p.publish(topic, &format!("live {topic}"), qos, 9, false);
        let m = sub.recv_publish();
        assert_eq!(
            (m.topic.as_str(), m.qos, m.text()),
            (topic, granted, format!("live {topic}")),
            "live message through the restored subscription"
        );
        match m.qos {
            1 => sub.send(&ack_bytes(PUBACK, m.pkid)),
            2 => {
                sub.send(&ack_bytes(PUBREC, m.pkid));
                sub.recv().assert_ack(PUBREL, m.pkid);
                sub.send(&ack_bytes(PUBCOMP, m.pkid));
            }
            _ => {}
        }
    }
    p.publish("q/none", "nobody", 0, 0, false);
    sub.expect_quiet(QUIET, "a topic the session never subscribed to");
}

/// A store barrier: a QoS 1 message to a persistent session of its own ("barrier-sub",
/// offline), whose PUBACK means it is stored, and with it everything the broker appended
/// to its single, ordered log before it (docs/DESIGN.md). The broker does not wait for
/// its records of a PUBLISH sent to a subscriber or of a PUBREC received from one (losing
/// them only means a re-send); the barrier lets a test kill the broker right after seeing
/// such a packet without racing those records.
struct Barrier {
    n: u16,
}

impl Barrier {
    fn new(b: &Broker) -> Barrier {
        let (mut s, _) = Raw::connect(b, "barrier-sub", false, 60, None);
        assert_eq!(s.subscribe(1, &[("barrier/#", 1)]), [1]);
        s.go_offline(b);
        Barrier { n: 0 }
    }
    fn pass(&mut self, b: &Broker) {
        self.n += 1;
        let (mut p, _) = Raw::connect(b, "barrier-pub", true, 60, None);
        p.publish("barrier/x", "barrier", 1, self.n, false);
    }
}

/// A QoS 1 message sent but not PUBACKed, and a QoS 2 one PUBRECed but not PUBCOMPed,
/// are re-sent after SIGKILL and restart with their original packet ids: the PUBLISH
/// with DUP 1, the PUBREL for the QoS 2 one, and then the queue in order.
#[test]
fn inflight_messages_are_resent_with_their_packet_ids_after_restart() {
    let mut b = durable_broker("max_inflight_messages = 2\n");
    let mut barrier = Barrier::new(&b);
    let (mut sub, _) = Raw::connect(&b, "inf-sub", false, 60, None);
    assert_eq!(sub.subscribe(1, &[("inf/#", 2)]), [2]);

    let (mut p, _) = Raw::connect(&b, "inf-pub", true, 60, None);
    p.publish("inf/a", "one", 1, 1, false);
    p.publish("inf/b", "two", 2, 2, false);
    p.publish("inf/c", "three", 1, 3, false); // waits: the window is 2
    drop(p);

    let one = sub.recv_publish();
    assert_eq!((one.text(), one.qos, one.dup), ("one".to_owned(), 1, false));
    let two = sub.recv_publish();
    assert_eq!((two.text(), two.qos, two.dup), ("two".to_owned(), 2, false));
    sub.send(&ack_bytes(PUBREC, two.pkid)); // and no PUBACK for one
    sub.recv().assert_ack(PUBREL, two.pkid);
    sub.expect_quiet(
        QUIET,
        "'three' waits for a free slot in the inflight window",
    );
    barrier.pass(&b);
    drop(sub); // no DISCONNECT: the broker dies with the connection up

    kill_and_restart(&mut b);
    let (mut sub, present) = Raw::connect(&b, "inf-sub", false, 60, None);
    assert!(present, "CONNACK session present after SIGKILL and restart");
    let mut first = vec![sub.recv(), sub.recv()];
    first.sort_by_key(Pkt::kind);
    let again = first[0].publish();
    assert_eq!(
        (again.text(), again.qos, again.dup, again.pkid),
        ("one".to_owned(), 1, true, one.pkid),
        "the unacknowledged QoS 1 PUBLISH is re-sent with DUP 1 and its packet id: {first:?}"
    );
    first[1].assert_ack(PUBREL, two.pkid);
    sub.expect_quiet(QUIET, "nothing else while the window is full");

    sub.send(&ack_bytes(PUBACK, one.pkid));
    let three = sub.recv_publish();
    assert_eq!(
        (three.text(), three.qos, three.dup),
        ("three".to_owned(), 1, false),
        "then the queue"
    );
    assert_ne!(
        three.pkid, two.pkid,
        "packet id {} is still in use",
        two.pkid
    );
    sub.send(&ack_bytes(PUBCOMP, two.pkid));
    sub.send(&ack_bytes(PUBACK, three.pkid));
    sub.expect_quiet(QUIET, "everything acknowledged");
    barrier.pass(&b);
    drop(sub);

    // Acknowledged means gone, also from the store.
    kill_and_restart(&mut b);
    let (mut sub, present) = Raw::connect(&b, "inf-sub", false, 60, None);
    assert!(present);
    sub.expect_quiet(
        QUIET,
        "acknowledged messages are not re-sent after another restart",
    );
}

/// The broker's incoming QoS 2 state survives SIGKILL: a publisher that got PUBREC and
/// re-sends the PUBLISH (DUP 1, same packet id) after the restart gets PUBREC again and
/// PUBCOMP for its PUBREL, one that only sends PUBREL gets PUBCOMP, and the subscriber
/// gets each message exactly once. A completed packet id stays completed across another
/// SIGKILL: reused for a new message, that message is delivered.
#[test]
fn incoming_qos2_state_survives_restart() {
    let mut b = durable_broker("");
    let (mut sub, _) = Raw::connect(&b, "in2-sub", false, 60, None);
    assert_eq!(sub.subscribe(1, &[("in2/#", 2)]), [2]);
    sub.go_offline(&b);

    let (mut p, present) = Raw::connect(&b, "in2-pub", false, 60, None);
    assert!(!present);
    p.send(&publish311("in2/x", b"seven", 2, 7, false, false));
    p.recv().assert_ack(PUBREC, 7);
    p.send(&publish311("in2/x", b"eight", 2, 8, false, false));
    p.recv().assert_ack(PUBREC, 8);
    drop(p);

    kill_and_restart(&mut b);
    let (mut p, present) = Raw::connect(&b, "in2-pub", false, 60, None);
    assert!(present, "the publisher's persistent session survives");
    p.send(&publish311("in2/x", b"seven", 2, 7, false, true));
    p.recv().assert_ack(PUBREC, 7);
    p.send(&ack_bytes(PUBREL, 7));
    p.recv().assert_ack(PUBCOMP, 7);
    p.send(&ack_bytes(PUBREL, 8));
    p.recv().assert_ack(PUBCOMP, 8);
    drop(p);

    // PUBCOMP means the completion is stored: after another SIGKILL, packet id 7 is free
    // again and a new message with it is a new message, not a duplicate.
    kill_and_restart(&mut b);
    let (mut p, present) = Raw::connect(&b, "in2-pub", false, 60, None);
    assert!(present);
    p.publish("in2/x", "seven-again", 2, 7, false);
    p.publish("in2/x", "after", 1, 9, false);
    p.go_offline(&b);

    let (mut sub, present) = Raw::connect(&b, "in2-sub", false, 60, None);
    assert!(present);
    let got: Vec<String> = sub
        .drain_until(|m| m.text() == "after", WAIT, QUIET)
        .iter()
        .map(RawPub::text)
        .collect();
    assert_eq!(
        got,
        ["seven", "eight", "seven-again", "after"],
        "each message exactly once, in order"
    );
}

/// MQTT 5.0 sessions with a Session Expiry Interval survive SIGKILL and keep their queue;
/// one whose interval has passed after the restart is gone, and one with no interval
/// (ends at disconnect) is not resurrected.
#[test]
fn session_expiry_survives_a_restart() {
    let mut b = durable_broker("");
    for (id, expiry) in [
        ("exp-keep", Some(300)),
        ("exp-short", Some(1)),
        ("exp-zero", None),
    ] {
        let (mut c, present) = Raw::connect5(b.addr(), id, true, &session_expiry(expiry));
        assert!(!present);
        assert_eq!(c.subscribe(1, &[("exp/#", 1)]), [1]);
        c.go_offline(&b);
    }
    let (mut p, _) = Raw::connect(&b, "exp-pub", true, 60, None);
    p.publish("exp/m", "kept", 1, 1, false);
    drop(p);

    kill_and_restart(&mut b);
    let restarted = Instant::now();

    let (mut keep, present) =
        Raw::connect5(b.addr(), "exp-keep", false, &session_expiry(Some(300)));
    assert!(present, "a session with 300 s expiry survives the restart");
    let m = keep.recv_publish();
    assert_eq!((m.text(), m.qos), ("kept".to_owned(), 1));
    keep.send(&ack_bytes(PUBACK, m.pkid));
    keep.expect_quiet(QUIET, "one queued message");

    let (_zero, present) = Raw::connect5(b.addr(), "exp-zero", false, &session_expiry(None));
    assert!(
        !present,
        "a session without expiry ended at its disconnect; the store must not bring it back"
    );

    // Well past the 1 s interval, counted from the disconnect or from the restart.
    let until = restarted + Duration::from_millis(2500);
    std::thread::sleep(until.saturating_duration_since(Instant::now()));
    let (mut short, present) =
        Raw::connect5(b.addr(), "exp-short", false, &session_expiry(Some(1)));
    assert!(!present, "a session whose 1 s expiry has passed is gone");
    short.expect_quiet(QUIET, "an expired session has no queue");
}

/// SIGTERM writes everything (with `queue_qos0_messages`, QoS 0 messages queued for an
/// offline persistent session too) and exits 0; after a restart every message, QoS 0, 1
/// and 2, is delivered in order, and nothing was torn.
#[test]
fn clean_shutdown_loses_nothing_at_any_qos() {
    let mut b = durable_broker("queue_qos0_messages = true\n");
    let (mut sub, _) = Raw::connect(&b, "term-sub", false, 60, None);
    assert_eq!(sub.subscribe(1, &[("term/#", 2)]), [2]);
    sub.go_offline(&b);

    let (mut p, _) = Raw::connect(&b, "term-pub", true, 60, None);
    let mut expected = Vec::new();
    let mut pkid = 0;
    for i in 0..8 {
        for qos in 0..=2u8 {
            pkid += 1;
            let payload = format!("q{qos}-{i}");
            // Each QoS 1/2 flow completes before the next PUBLISH, and a connection's
            // packets are handled in order: by the last PUBCOMP everything is queued.
            p.publish(&format!("term/{qos}"), &payload, qos, pkid, false);
            expected.push((qos, payload));
        }
    }
    drop(p);

    let from = b.log().len();
    let loaded = terminate_and_restart(&mut b);
    assert_eq!(
        (loaded.sessions, loaded.queued),
        (1, 24),
        "one session with 24 queued messages (QoS 0 included): {}",
        loaded.line
    );
    let log = b.log();
    assert_eq!(
        torn_warnings(&log[from..]),
        Vec::<&str>::new(),
        "a clean shutdown leaves no torn record"
    );

    let (mut sub, present) = Raw::connect(&b, "term-sub", false, 60, None);
    assert!(present);
    let got: Vec<(u8, String)> = sub
        .drain_until(|m| m.text() == "q2-7", WAIT, QUIET)
        .iter()
        .map(|m| (m.qos, m.text()))
        .collect();
    assert_eq!(got, expected, "every message, at its QoS, in order");
}
