//! Wills (3.1.2.5, 3.1.3.2): the Will Delay Interval, DISCONNECT with Will Message, take-over.

use super::common::packets::*;
use super::common::raw::Raw;
use super::common::*;
use super::*;

#[test]
fn mqtt5_3_1_3_9_delayed_will_not_sent_when_the_session_resumes_in_time() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let mut watcher = Raw::connected5(addr, "watcher", &[]);
    watcher.subscribe_keeping(1, &[("wills/#", 0)], None);
    let session = [Prop::Four(SESSION_EXPIRY, 60)];
    let will_props = [Prop::Four(WILL_DELAY, 2)];
    let connect = connect5(
        "flaky",
        true,
        60,
        &session,
        Some(("wills/flaky", b"gone", &will_props)),
    );
    let (c, ack) = Raw::handshake(addr, &connect);
    assert_eq!(ack.connack().1, 0);
    drop(c); // ungraceful
    std::thread::sleep(Duration::from_millis(500));
    let (c, ack) = Raw::handshake(addr, &connect5("flaky", false, 60, &session, None));
    assert!(ack.connack().0);
    std::thread::sleep(Duration::from_millis(2500));
    watcher.expect_quiet(QUIET, "will cancelled by the reconnect");
    drop(c);
}

#[test]
fn mqtt5_3_1_2_8_delayed_will_sent_after_the_delay() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let mut watcher = Raw::connected5(addr, "watcher", &[]);
    watcher.subscribe_keeping(1, &[("wills/#", 0)], None);
    let session = [Prop::Four(SESSION_EXPIRY, 60)];
    let will_props = [Prop::Four(WILL_DELAY, 1), user("why", "test")];
    let connect = connect5(
        "gone",
        true,
        60,
        &session,
        Some(("wills/gone", b"bye", &will_props)),
    );
    let (c, _) = Raw::handshake(addr, &connect);
    let started = Instant::now();
    drop(c);
    let got = watcher.recv_publish();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before its delay"
    );
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("wills/gone", &b"bye"[..])
    );
    assert_eq!(got.user_properties(), vec![("why".into(), "test".into())]);
}

#[test]
fn mqtt5_3_14_4_disconnect_with_will_message_0x04_publishes_the_will() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let mut watcher = Raw::connected5(addr, "watcher", &[]);
    watcher.subscribe_keeping(1, &[("wills/#", 0)], None);
    let (mut c, _) = Raw::handshake(
        addr,
        &connect5(
            "polite",
            true,
            60,
            &[],
            Some(("wills/polite", b"asked", &[])),
        ),
    );
    c.send(&[0xE0, 0x01, 0x04]);
    assert_eq!(watcher.recv_publish().payload, b"asked");
    // A normal DISCONNECT (0x00) discards it.
    let (mut c, _) = Raw::handshake(
        addr,
        &connect5(
            "polite2",
            true,
            60,
            &[],
            Some(("wills/polite2", b"no", &[])),
        ),
    );
    c.send(&[0xE0, 0x00]);
    watcher.expect_quiet(QUIET, "will discarded by a normal DISCONNECT");
}

/// A connection with a delayed will (Session Expiry 60 s) taken over by a second one with
/// the given Clean Start; returns the watcher subscribed to `wills/#`, the old
/// connection and the new one's CONNACK.
fn take_over_with_will(addr: SocketAddr, delay: u32, clean_start: bool) -> (Raw, Raw, Raw, Pkt) {
    let mut watcher = Raw::connected5(addr, "watcher", &[]);
    watcher.subscribe_keeping(1, &[("wills/#", 0)], None);
    let session = [Prop::Four(SESSION_EXPIRY, 60)];
    let will_props = [Prop::Four(WILL_DELAY, delay)];
    let (mut old, _) = Raw::handshake(
        addr,
        &connect5(
            "twin",
            true,
            60,
            &session,
            Some(("wills/twin", b"gone", &will_props)),
        ),
    );
    let (new, ack) = Raw::handshake(addr, &connect5("twin", clean_start, 60, &session, None));
    assert_eq!(old.disconnect_reason(), 0x8E);
    (watcher, old, new, ack)
}

#[test]
fn mqtt5_3_1_4_3_take_over_resumes_the_session_so_a_delayed_will_is_not_sent() {
    let broker = Broker::start("");
    let (mut watcher, _old, _new, ack) = take_over_with_will(broker.addr(), 1, false);
    assert!(ack.connack().0, "the new connection resumes the session");
    std::thread::sleep(Duration::from_millis(1500));
    watcher.expect_quiet(
        QUIET,
        "no will: the session went on with the new connection",
    );
}

#[test]
fn mqtt5_3_1_4_3_take_over_with_clean_start_ends_the_session_and_sends_its_delayed_will() {
    let broker = Broker::start("");
    // Clean Start 1: the old session ends on the takeover, its will must go out.
    let (mut watcher, _old, _new, ack) = take_over_with_will(broker.addr(), 2, true);
    assert!(!ack.connack().0);
    match watcher.try_read(Duration::from_millis(3500)) {
        Some(p) => assert_eq!(p.publish().payload, b"gone"),
        None => panic!("the old session ended (Clean Start 1) but its will was never published"),
    }
}

#[test]
fn mqtt5_3_1_3_9_will_sent_when_the_session_ends_before_the_will_delay() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let mut watcher = Raw::connected5(addr, "watcher", &[]);
    watcher.subscribe_keeping(1, &[("wills/#", 0)], None);
    let (c, _) = Raw::handshake(
        addr,
        &connect5(
            "x",
            true,
            60,
            &[Prop::Four(SESSION_EXPIRY, 1)],
            Some((
                "wills/x",
                b"bye",
                &[Prop::Four(WILL_DELAY, 30), Prop::Four(MESSAGE_EXPIRY, 50)],
            )),
        ),
    );
    let t = Instant::now();
    drop(c);
    let got = watcher.recv_publish();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "sent when the session ended (1 s), not after the 30 s delay"
    );
    assert_eq!(got.payload, b"bye");
    // The will keeps its properties; its expiry counts from when it was published.
    assert!(matches!(
        got.prop(MESSAGE_EXPIRY),
        Some(Prop::Four(_, 49..=50))
    ));
}
