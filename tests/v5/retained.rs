//! Retained messages (3.3.1.3): Retain As Published, Retain Handling, and the
//! subscription identifier they carry.

use super::common::packets::*;
use super::common::raw::Raw;
use super::common::*;
use super::*;

#[test]
fn mqtt5_3_3_1_12_retain_as_published_and_retain_handling() {
    let broker = Broker::start("");
    let mut p = Raw::connected5(broker.addr(), "pub", &[]);
    p.send(&publish5("rh/state", 1, 1, true, &[], b"on"));
    assert_eq!(p.control().kind(), 4);

    // Retain Handling 0: retained sent on every subscribe (RETAIN=1); without RAP, live
    // retained messages arrive with RETAIN=0.
    let mut a = Raw::connected5(broker.addr(), "rh0", &[]);
    a.subscribe_keeping(1, &[("rh/#", 0)], None);
    let got = a.recv_publish();
    assert!(got.retain && got.payload == b"on");
    // Retain Handling 1: only for a new subscription.
    let mut b = Raw::connected5(broker.addr(), "rh1", &[]);
    b.subscribe_keeping(1, &[("rh/#", 0x10)], None);
    assert!(b.recv_publish().retain);
    b.subscribe_keeping(2, &[("rh/#", 0x10)], None);
    b.expect_quiet(QUIET, "Retain Handling 1 on an existing subscription");
    // Retain Handling 2: never. With Retain As Published (0x08), live retained messages
    // keep RETAIN=1.
    let mut c = Raw::connected5(broker.addr(), "rh2", &[]);
    c.subscribe_keeping(1, &[("rh/#", 0x20 | 0x08)], None);
    c.expect_quiet(QUIET, "Retain Handling 2");
    p.send(&publish5("rh/state", 1, 2, true, &[], b"off"));
    assert_eq!(p.control().kind(), 4);
    assert!(c.recv_publish().retain, "Retain As Published keeps RETAIN");
    assert!(
        !a.recv_publish().retain,
        "without it RETAIN is 0 on live delivery"
    );
}

#[test]
fn mqtt5_3_3_4_3_retained_carry_subscription_id_and_shared_members_get_their_granted_qos() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let mut p = Raw::connected5(addr, "pub", &[]);
    p.send(&publish5(
        "ret/a",
        1,
        1,
        true,
        &[Prop::Four(MESSAGE_EXPIRY, 100)],
        b"r",
    ));
    assert_eq!(p.control().kind(), 4);
    let mut s = Raw::connected5(addr, "s", &[]);
    s.subscribe_keeping(1, &[("ret/#", 1)], Some(42));
    let got = s.recv_publish();
    assert_eq!(got.sub_ids(), vec![42]);
    s.ack(PUBACK, got.pkid);
    let mut m = Raw::connected5(addr, "m", &[]);
    m.subscribe_keeping(1, &[("$share/g/sq", 0)], None);
    p.publish_qos1("sq", 2, &[], b"x");
    let got = m.recv_publish();
    assert_eq!(got.qos, 0);
    // invalid shared filters
    let codes = m.subscribe_keeping(
        2,
        &[("$share//x", 0), ("$share/g+/x", 0), ("$share/g", 0)],
        None,
    );
    assert_eq!(codes, vec![0x8F, 0x8F, 0x8F]);
}
