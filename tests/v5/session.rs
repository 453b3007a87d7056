//! Sessions (3.1.2.11, 4.1): Session Expiry Interval, what does and does not survive a
//! reconnect.

use super::common::packets::*;
use super::common::raw::Raw;
use super::common::*;
use super::*;

#[test]
fn mqtt5_3_1_2_11_session_expiry_interval_keeps_then_ends_the_session() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let props = [Prop::Four(SESSION_EXPIRY, 2)];
    let mut c = Raw::connected5(addr, "expiring", &props);
    assert_eq!(c.subscribe_keeping(1, &[("exp/#", 1)], None), vec![1]);
    drop(c);
    // Within the interval: resumed, and it received what was published meanwhile.
    std::thread::sleep(Duration::from_millis(300));
    let mut p = Raw::connected5(addr, "pub", &[]);
    assert_eq!(p.publish_qos1("exp/a", 1, &[], b"kept"), 0);
    let (mut c, ack) = Raw::handshake(addr, &connect5("expiring", false, 60, &props, None));
    assert!(
        ack.connack().0,
        "session present within the expiry interval"
    );
    assert_eq!(c.recv_publish().payload, b"kept");
    drop(c);
    // After it: gone.
    std::thread::sleep(Duration::from_millis(3000));
    let (_c, ack) = Raw::handshake(addr, &connect5("expiring", false, 60, &props, None));
    assert!(!ack.connack().0, "session ended after its expiry interval");
    assert!(broker.event_count("session_expired", &[("client_id", "expiring")]) > 0);
}

#[test]
fn mqtt5_3_14_2_2_session_expiry_cannot_be_set_from_zero_at_disconnect() {
    let broker = Broker::start("");
    let mut c = Raw::connected5(broker.addr(), "zero", &[]);
    // DISCONNECT, reason 0, properties: Session Expiry Interval 10.
    c.send(&[0xE0, 0x07, 0x00, 0x05, SESSION_EXPIRY, 0, 0, 0, 10]);
    assert_eq!(c.disconnect_reason(), 0x82);
}

#[test]
fn mqtt5_4_4_0_2_message_refused_by_pubrec_error_is_not_resent_on_reconnect() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let props = [Prop::Four(SESSION_EXPIRY, 60)];
    let mut sub = Raw::connected5(addr, "q2sub", &props);
    sub.subscribe_keeping(1, &[("q2/#", 2)], None);
    let mut p = Raw::connected5(addr, "pub", &[]);
    p.publish_qos2("q2/a", 1, b"one");
    let first = sub.recv_publish();
    sub.send(&[0x50, 3, (first.pkid >> 8) as u8, first.pkid as u8, 0x80]);
    // PINGREQ round trip so the PUBREC was handled.
    sub.send(&[0xC0, 0]);
    assert_eq!(sub.control().kind(), 13);
    drop(sub);
    std::thread::sleep(Duration::from_millis(300));
    let (mut sub, ack) = Raw::handshake(addr, &connect5("q2sub", false, 60, &props, None));
    assert!(ack.connack().0);
    if let Some(pk) = sub.try_read(Duration::from_millis(1000)) {
        panic!(
            "after PUBREC 0x80 the broker re-sent on reconnect: {pk:?} (dup flag {})",
            pk.byte1 & 0x08
        );
    }
}

#[test]
fn mqtt5_4_3_3_qos2_resend_after_reconnect_is_acknowledged_within_receive_maximum() {
    let broker = Broker::start("receive_maximum = 1\n");
    let addr = broker.addr();
    let session = [Prop::Four(SESSION_EXPIRY, 60)];
    let mut c = Raw::connected5(addr, "p2", &session);
    c.send(&publish5("x/y", 2, 5, false, &[], b"m"));
    assert_eq!(c.control().kind(), 5);
    drop(c);
    std::thread::sleep(Duration::from_millis(300));
    let (mut c, ack) = Raw::handshake(addr, &connect5("p2", false, 60, &session, None));
    assert!(ack.connack().0);
    // PUBREC was lost: the client re-sends the PUBLISH with DUP.
    let mut pkt = publish5("x/y", 2, 5, false, &[], b"m");
    pkt[0] |= 0x08;
    c.send(&pkt);
    let r = c.read();
    assert_eq!(r.kind(), 5, "expected PUBREC, got {r:?}");
}

#[test]
fn mqtt5_3_3_2_7_topic_aliases_do_not_survive_a_reconnect() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let session = [Prop::Four(SESSION_EXPIRY, 60)];
    let mut c = Raw::connected5(addr, "al", &session);
    c.send(&publish5(
        "al/t",
        0,
        0,
        false,
        &[Prop::Two(TOPIC_ALIAS, 1)],
        b"m",
    ));
    c.send(&[0xC0, 0]);
    assert_eq!(c.control().kind(), 13);
    drop(c);
    std::thread::sleep(Duration::from_millis(200));
    let (mut c, ack) = Raw::handshake(addr, &connect5("al", false, 60, &session, None));
    assert!(ack.connack().0);
    c.send(&publish5(
        "",
        0,
        0,
        false,
        &[Prop::Two(TOPIC_ALIAS, 1)],
        b"m",
    ));
    assert_eq!(c.disconnect_reason(), 0x82);
}

#[test]
fn mqtt5_4_9_0_receive_maximum_starts_afresh_with_each_connection() {
    let broker = Broker::start("receive_maximum = 1\n");
    let addr = broker.addr();
    let session = [Prop::Four(SESSION_EXPIRY, 60)];
    let mut c = Raw::connected5(addr, "p2", &session);
    c.send(&publish5("x/y", 2, 5, false, &[], b"m"));
    assert_eq!(c.control().kind(), 5);
    drop(c);
    std::thread::sleep(Duration::from_millis(300));
    let (mut c, ack) = Raw::handshake(addr, &connect5("p2", false, 60, &session, None));
    assert!(ack.connack().0);
    // New connection, new send quota of 1: a new QoS 2 PUBLISH, then the PUBREL re-sent.
    c.send(&publish5("x/y", 2, 6, false, &[], b"n"));
    let r = c.read();
    assert_eq!(
        r.kind(),
        5,
        "expected PUBREC for the new PUBLISH, got {r:?}"
    );
}
