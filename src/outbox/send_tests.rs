//! Unit tests of the outbound side: each packet in the version the outbox was made for,
//! and the broker-to-client topic alias map.

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::{PeerV5, MAX_ALIAS_TOPIC_BYTES};
use crate::codec::{self, Ack, AckKind, ConnackProps, ProtocolVersion, QoS};
use crate::message::Message;
use crate::outbox::Outbox;

fn v5(max_packet_size: Option<u32>, topic_alias_max: u16) -> Outbox {
    Outbox::for_client(Some(Box::new(PeerV5::new(
        max_packet_size,
        topic_alias_max,
    ))))
}

fn written(out: &mut Outbox) -> Vec<u8> {
    out.buf().split().to_vec()
}

#[test]
fn broker_to_client_aliases_stop_at_the_maximum_and_the_byte_bound() {
    // A client allowing 65,535 aliases, sent thousands of distinct 1,000-byte topics.
    let mut peer = PeerV5::new(None, 65535);
    let mut aliased = 0;
    for i in 0..5000 {
        let topic = format!("{i:0>1000}");
        if let (Some(alias), true) = peer.alias_for(&topic) {
            peer.set_alias(&topic, alias);
            aliased += 1;
        }
    }
    let (count, bytes) = peer.alias_usage();
    assert_eq!(count, aliased);
    assert_eq!(count, MAX_ALIAS_TOPIC_BYTES / 1000);
    assert!(bytes <= MAX_ALIAS_TOPIC_BYTES);
    // An aliased topic keeps its alias; the topic is not sent again.
    let first = format!("{:0>1000}", 0);
    assert_eq!(peer.alias_for(&first), (Some(1), false));

    // The count bound: the maximum given (the client's, lowered to
    // max_topic_alias_broker by the CONNECT handler).
    let mut peer = PeerV5::new(None, 3);
    for i in 0..10 {
        let topic = format!("t/{i}");
        if let (Some(alias), true) = peer.alias_for(&topic) {
            peer.set_alias(&topic, alias);
        }
    }
    assert_eq!(peer.alias_usage(), (3, 9));
}

#[test]
fn acknowledgements_carry_a_reason_code_to_5_0_clients_only() {
    let ack = Ack {
        pkid: 7,
        reason: 0x10,
    };
    let mut out = Outbox::default();
    out.ack(AckKind::PubAck, ack);
    assert_eq!(written(&mut out), [0x40, 2, 0, 7]);
    let mut out = v5(None, 0);
    out.ack(AckKind::PubAck, ack);
    assert_eq!(written(&mut out), [0x40, 3, 0, 7, 0x10]);
    out.ack(AckKind::PubRel, Ack { pkid: 7, reason: 0 });
    assert_eq!(
        written(&mut out),
        [0x62, 2, 0, 7],
        "the short form for success"
    );
}

#[test]
fn suback_unsuback_and_disconnect_follow_the_version() {
    let mut out = Outbox::default();
    out.suback(1, &[1, 0x80]);
    assert_eq!(written(&mut out), [0x90, 4, 0, 1, 1, 0x80]);
    out.unsuback(1, &[0x11]);
    assert_eq!(
        written(&mut out),
        [0xB0, 2, 0, 1],
        "3.1.1 UNSUBACK has no codes"
    );
    out.disconnect(0x8E);
    assert!(out.is_empty(), "3.1.1 has no server DISCONNECT");
    let mut out = v5(None, 0);
    out.suback(1, &[1, 0x80]);
    assert_eq!(written(&mut out), [0x90, 5, 0, 1, 0, 1, 0x80]);
    out.unsuback(1, &[0x11]);
    assert_eq!(written(&mut out), [0xB0, 4, 0, 1, 0, 0x11]);
    out.disconnect(0x8E);
    assert_eq!(written(&mut out), [0xE0, 1, 0x8E]);
}

#[test]
fn connack_refusals_speak_the_clients_version() {
    let mut out = Outbox::for_refusal(None);
    out.connack_refused(codec::reason::v311::UNSUPPORTED_PROTOCOL_VERSION);
    assert_eq!(written(&mut out), [0x20, 2, 0, 1]);
    let mut out = Outbox::for_refusal(Some(ProtocolVersion::V5));
    out.connack_refused(codec::reason::v311::NOT_AUTHORIZED);
    let mut expected = BytesMut::new();
    codec::encode_connack_v5(&mut expected, false, 0x87);
    assert_eq!(written(&mut out), expected.to_vec());
}

#[test]
fn connack_properties_give_way_to_the_clients_maximum_packet_size() {
    let props = ConnackProps {
        assigned_client_id: Some("midge-1".into()),
        receive_maximum: Some(10),
        server_keep_alive: Some(60),
        ..ConnackProps::default()
    };
    let mut full = BytesMut::new();
    codec::encode_connack_v5_props(&mut full, false, 0, &props);
    let mut out = v5(None, 0);
    out.connack(false, || props.clone());
    assert_eq!(written(&mut out), full.to_vec());
    // Too small for all of them: only the assigned id.
    let max = u32::try_from(full.len()).unwrap() - 1; // ok: unit test; a few bytes fit in u32
    let mut out = v5(Some(max), 0);
    out.connack(false, || props);
    let bare = ConnackProps {
        assigned_client_id: Some("midge-1".into()),
        ..ConnackProps::default()
    };
    let mut expected = BytesMut::new();
    codec::encode_connack_v5_props(&mut expected, false, 0, &bare);
    assert_eq!(written(&mut out), expected.to_vec());
    // 3.1.1: no properties, and none are built.
    let mut out = Outbox::default();
    out.connack(true, || {
        unreachable!("CONNACK properties built for a 3.1.1 client")
    });
    assert_eq!(written(&mut out), [0x20, 2, 1, 0]);
}

#[test]
fn publish_sets_an_alias_once_and_respects_the_maximum_packet_size() {
    let msg = std::sync::Arc::new(Message::with_props(
        "a/b",
        Bytes::from_static(b"x"),
        QoS::AtMostOnce,
        false,
        None,
    ));
    let now = Instant::now();
    let mut out = v5(None, 5);
    assert!(out.publish(&msg, QoS::AtMostOnce, false, 0, false, &[], now));
    let first = written(&mut out);
    assert!(out.publish(&msg, QoS::AtMostOnce, false, 0, false, &[], now));
    let second = written(&mut out);
    assert!(second.len() < first.len(), "the topic is not sent again");
    assert_eq!(out.peer_v5().map(PeerV5::alias_usage), Some((1, 3)));
    // Larger than the client takes: not written at all.
    let mut out = v5(Some(4), 5);
    assert!(!out.publish(&msg, QoS::AtMostOnce, false, 0, false, &[], now));
    assert!(out.is_empty());
    // 3.1.1: the plain PUBLISH.
    let mut out = Outbox::default();
    assert!(out.publish(&msg, QoS::AtLeastOnce, true, 3, true, &[], now));
    let mut expected = BytesMut::new();
    codec::encode_publish(&mut expected, "a/b", b"x", QoS::AtLeastOnce, 3, true, true);
    assert_eq!(written(&mut out), expected.to_vec());
}

#[test]
fn a_v311_qos1_2_publish_copied_from_the_shared_encoding_is_what_encoding_writes() {
    // Topic and payload lengths around the remaining length's one/two byte boundary.
    for (topic, payload) in [("a/b", 64usize), ("t", 0), ("x".repeat(100).as_str(), 30)] {
        let msg = std::sync::Arc::new(Message::with_props(
            topic,
            Bytes::from(vec![7u8; payload]),
            QoS::AtLeastOnce,
            false,
            None,
        ));
        // Shared by enough queues that its encoding is kept.
        let others = vec![msg.clone(); super::ENCODE_ONCE_FROM];
        for (qos, pkid, retain, dup) in [
            (QoS::AtLeastOnce, 1, false, false),
            (QoS::AtLeastOnce, 65_535, true, true),
            (QoS::ExactlyOnce, 258, false, true),
            (QoS::ExactlyOnce, 7, true, false),
        ] {
            let mut out = Outbox::default();
            assert!(out.publish(&msg, qos, retain, pkid, dup, &[], Instant::now()));
            let mut expected = BytesMut::new();
            codec::encode_publish(&mut expected, topic, &msg.payload, qos, pkid, retain, dup);
            assert_eq!(
                written(&mut out),
                expected.to_vec(),
                "{topic} {qos:?} {pkid}"
            );
        }
        assert!(msg.v311_publish(false).is_some(), "encoded once and kept");
        drop(others);
    }
}

#[test]
fn a_v311_publish_of_an_unshared_message_is_encoded_for_it_and_not_kept() {
    let msg = std::sync::Arc::new(Message::with_props(
        "a/b",
        Bytes::from_static(b"hello"),
        QoS::AtLeastOnce,
        false,
        None,
    ));
    let mut out = Outbox::default();
    assert!(out.publish(&msg, QoS::AtLeastOnce, false, 9, false, &[], Instant::now()));
    let mut expected = BytesMut::new();
    codec::encode_publish(
        &mut expected,
        "a/b",
        b"hello",
        QoS::AtLeastOnce,
        9,
        false,
        false,
    );
    assert_eq!(written(&mut out), expected.to_vec());
    assert!(
        msg.v311_publish(false).is_none(),
        "nothing kept for one delivery"
    );
}
