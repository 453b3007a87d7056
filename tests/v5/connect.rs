//! CONNECT and CONNACK (3.1, 3.2): capabilities, keep-alive, authentication method,
//! assigned client ids; malformed properties (2.2.2); the reasons of a server DISCONNECT
//! (3.14).

use super::common::packets::*;
use super::common::raw::Raw;
use super::common::*;
use super::*;

#[test]
fn mqtt5_3_2_2_connack_announces_capabilities_and_assigns_client_id() {
    let broker = Broker::start("max_topic_alias = 5\nreceive_maximum = 50\n");
    let (_c, ack) = Raw::handshake(broker.addr(), &connect5("", false, 30, &[], None));
    let (sp, reason, props) = ack.connack();
    assert!(!sp);
    assert_eq!(
        reason, 0,
        "an empty client id is assigned in 5.0, whatever Clean Start says"
    );
    let Some(Prop::Str(_, assigned)) = find(&props, ASSIGNED_CLIENT_ID) else {
        panic!("no Assigned Client Identifier in {props:?}")
    };
    assert!(!assigned.is_empty());
    assert_eq!(
        find(&props, TOPIC_ALIAS_MAXIMUM),
        Some(&Prop::Two(TOPIC_ALIAS_MAXIMUM, 5))
    );
    assert_eq!(
        find(&props, RECEIVE_MAXIMUM),
        Some(&Prop::Two(RECEIVE_MAXIMUM, 50))
    );
    assert_eq!(
        find(&props, RETAIN_AVAILABLE),
        Some(&Prop::Byte(RETAIN_AVAILABLE, 1))
    );
    assert_eq!(
        find(&props, SHARED_AVAILABLE),
        Some(&Prop::Byte(SHARED_AVAILABLE, 1))
    );
    assert!(
        matches!(find(&props, MAXIMUM_PACKET_SIZE), Some(Prop::Four(_, n)) if *n > 0),
        "{props:?}"
    );
    // Maximum QoS is not sent: midge supports QoS 2, and 2 may not be announced.
    assert!(find(&props, 0x24).is_none());
}

#[test]
fn mqtt5_3_2_2_21_server_keep_alive_replaces_a_longer_or_zero_keep_alive() {
    let broker = Broker::start("max_keepalive = 30\n");
    for asked in [0u16, 600] {
        let (_c, ack) = Raw::handshake(
            broker.addr(),
            &connect5(&format!("ka{asked}"), true, asked, &[], None),
        );
        let (_, reason, props) = ack.connack();
        assert_eq!(reason, 0);
        assert_eq!(
            find(&props, SERVER_KEEP_ALIVE),
            Some(&Prop::Two(SERVER_KEEP_ALIVE, 30))
        );
    }
    let (_c, ack) = Raw::handshake(broker.addr(), &connect5("ka10", true, 10, &[], None));
    assert!(
        find(&ack.connack().2, SERVER_KEEP_ALIVE).is_none(),
        "10 s is within the limit"
    );
}

#[test]
fn mqtt5_4_12_authentication_method_gets_connack_0x8c() {
    let broker = Broker::start("");
    let (mut c, ack) = Raw::handshake(
        broker.addr(),
        &connect5(
            "auth",
            true,
            60,
            &[Prop::Str(AUTH_METHOD, "SCRAM-SHA-1".into())],
            None,
        ),
    );
    assert_eq!(ack.connack().1, 0x8C);
    assert!(read_until_closed(&mut c.s, WAIT).is_some());
}

#[test]
fn mqtt5_3_14_packet_over_max_packet_size_disconnects_with_0x95() {
    let broker = Broker::start("max_packet_size = 100\n");
    let mut p = Raw::connected5(broker.addr(), "big", &[]);
    p.send(&publish5("a", 0, 0, false, &[], &[0u8; 200]));
    assert_eq!(p.disconnect_reason(), 0x95);
}

#[test]
fn mqtt5_3_14_server_disconnect_reasons_take_over_and_keep_alive() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let mut first = Raw::connected5(addr, "dup", &[]);
    let _second = Raw::connected5(addr, "dup", &[]);
    assert_eq!(first.disconnect_reason(), 0x8E, "session taken over");

    let (mut idle, ack) = Raw::handshake(addr, &connect5("idle", true, 1, &[], None));
    assert_eq!(ack.connack().1, 0);
    assert_eq!(idle.disconnect_reason(), 0x8D, "keep alive timeout");
}

#[test]
fn mqtt5_2_2_2_duplicate_or_misplaced_properties_and_bad_values_disconnect() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let cases: Vec<(&str, Vec<u8>, u8)> = vec![
        (
            "duplicate Content Type",
            publish5(
                "a",
                0,
                0,
                false,
                &[
                    Prop::Str(CONTENT_TYPE, "x".into()),
                    Prop::Str(CONTENT_TYPE, "y".into()),
                ],
                b"",
            ),
            0x82,
        ),
        (
            "Session Expiry Interval on PUBLISH",
            publish5("a", 0, 0, false, &[Prop::Four(SESSION_EXPIRY, 1)], b""),
            0x81,
        ),
        (
            "Subscription Identifier from a client",
            publish5("a", 0, 0, false, &[Prop::Var(SUBSCRIPTION_ID, 3)], b""),
            0x82,
        ),
        (
            "Subscription Identifier 0",
            subscribe5(1, &[("a", 0)], Some(0)),
            0x82,
        ),
        (
            "Retain Handling 3",
            subscribe5(1, &[("a", 0x30)], None),
            0x82,
        ),
        (
            "reserved option bits",
            subscribe5(1, &[("a", 0x40)], None),
            0x81,
        ),
    ];
    for (what, bytes, reason) in cases {
        let mut c = Raw::connected5(addr, "bad", &[]);
        c.send(&bytes);
        assert_eq!(c.disconnect_reason(), reason, "{what}");
    }
    // Receive Maximum 0 in CONNECT: refused, connection closed.
    let mut s = raw(addr);
    s.write_all(&connect5(
        "rm0",
        true,
        60,
        &[Prop::Two(RECEIVE_MAXIMUM, 0)],
        None,
    ))
    .unwrap();
    let bytes = read_until_closed(&mut s, WAIT).expect("closed");
    assert!(bytes.is_empty() || bytes[0] == 0x20 && bytes.get(3).is_some_and(|r| *r >= 0x80));
    // Everyone else is unaffected.
    let mut ok = Raw::connected5(addr, "ok", &[]);
    assert_eq!(ok.subscribe_keeping(1, &[("fine", 0)], None), vec![0]);
}

#[test]
fn mqtt5_3_14_server_shutting_down_sends_disconnect_0x8b() {
    let mut broker = Broker::start("");
    let mut c = Raw::connected5(broker.addr(), "stays", &[]);
    let status = broker.terminate().expect("midge exits on SIGTERM");
    assert!(status.success());
    assert_eq!(c.disconnect_reason(), 0x8B);
}

#[test]
fn mqtt5_3_1_3_6_assigned_client_id_is_never_one_in_use() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let (_c, ack) = Raw::handshake(addr, &connect5("", true, 60, &[], None));
    let Some(Prop::Str(_, assigned)) = find(&ack.connack().2, ASSIGNED_CLIENT_ID).cloned() else {
        panic!()
    };
    // Ids are random (`midge-` and 16 hex digits): squat on the likeliest guess, the
    // first one plus one.
    let n = u64::from_str_radix(assigned.strip_prefix("midge-").unwrap(), 16).unwrap();
    let next = format!("midge-{:016x}", n.wrapping_add(1));
    let session = [Prop::Four(SESSION_EXPIRY, 60)];
    let mut squatter = Raw::connected5(addr, &next, &session);
    squatter.subscribe_keeping(1, &[("secret/#", 1)], None);
    let (_victim, ack) = Raw::handshake(addr, &connect5("", false, 60, &session, None));
    let (session_present, reason, props) = ack.connack();
    assert_eq!(reason, 0);
    assert!(
        !session_present,
        "someone else's session must not be handed out"
    );
    let Some(Prop::Str(_, id)) = find(&props, ASSIGNED_CLIENT_ID).cloned() else {
        panic!("no Assigned Client Identifier: {props:?}")
    };
    assert_ne!(
        id, next,
        "assigned id {id} is already used by another session"
    );
}

#[test]
fn mqtt5_3_1_2_24_connack_fits_a_small_client_maximum_packet_size() {
    let broker = Broker::start("");
    let (_c, ack) = Raw::handshake(
        broker.addr(),
        &connect5(
            "tiny",
            true,
            60,
            &[Prop::Four(MAXIMUM_PACKET_SIZE, 16)],
            None,
        ),
    );
    assert!(ack.size() <= 16, "CONNACK of {} bytes", ack.size());
    assert_eq!(ack.connack().1, 0);
}
