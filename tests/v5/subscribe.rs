//! SUBSCRIBE and UNSUBSCRIBE (3.8-3.11): subscription options and identifiers, reason
//! codes, shared subscriptions (4.8.2).

use super::common::packets::*;
use super::common::raw::Raw;
use super::common::*;
use super::*;

#[test]
fn mqtt5_3_8_3_1_no_local_suppresses_own_messages() {
    let broker = Broker::start("");
    let mut c = Raw::connected5(broker.addr(), "self", &[]);
    // Option bits: QoS 0, No Local (0x04).
    c.subscribe_keeping(1, &[("nl/#", 0x04)], None);
    c.send(&publish5("nl/mine", 0, 0, false, &[], b"x"));
    let mut other = Raw::connected5(broker.addr(), "other", &[]);
    other.send(&publish5("nl/theirs", 0, 0, false, &[], b"y"));
    assert_eq!(c.recv_publish().topic, "nl/theirs");
}

#[test]
fn mqtt5_3_3_4_3_subscription_identifiers_of_every_matching_subscription_are_delivered() {
    let broker = Broker::start("");
    let mut c = Raw::connected5(broker.addr(), "ids", &[]);
    c.subscribe_keeping(1, &[("ids/+", 0)], Some(7));
    c.subscribe_keeping(2, &[("ids/#", 1)], Some(300));
    c.subscribe_keeping(3, &[("other/#", 0)], None);
    let mut p = Raw::connected5(broker.addr(), "pub", &[]);
    p.publish_qos1("ids/a", 1, &[], b"x");
    let got = c.recv_publish();
    let mut ids = got.sub_ids();
    ids.sort_unstable();
    assert_eq!(ids, vec![7, 300], "one copy, every identifier");
    assert_eq!(got.qos, 1, "the highest granted QoS");
    p.publish_qos1("other/a", 2, &[], b"y");
    assert!(c.recv_publish().sub_ids().is_empty());
}

#[test]
fn mqtt5_3_9_3_suback_and_unsuback_reason_codes() {
    let broker = Broker::start("max_subscriptions_per_client = 2\n");
    let mut c = Raw::connected5(broker.addr(), "codes", &[]);
    assert_eq!(
        c.subscribe_keeping(1, &[("a/#", 2), ("a/#/b", 0), ("b", 1), ("c", 0)], None),
        vec![2, 0x8F, 1, 0x97]
    );
    c.send(&frame(0xA2, {
        let mut b = vec![0, 9, 0];
        put_str(&mut b, b"a/#");
        put_str(&mut b, b"never");
        b
    }));
    let ack = c.control();
    assert_eq!(ack.kind(), 11);
    assert_eq!(ack.reasons(), vec![0x00, 0x11]);
}

#[test]
fn mqtt5_4_8_2_shared_subscription_delivers_each_message_to_one_member_in_turn() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let mut members = Vec::new();
    for id in ["m1", "m2"] {
        let mut m = Raw::connected5(addr, id, &[]);
        assert_eq!(
            m.subscribe_keeping(1, &[("$share/g/jobs/#", 1)], None),
            vec![1]
        );
        members.push(m);
    }
    // A 3.1.1 client may join the same group, as in Mosquitto (raw 3.1.1 bytes; its
    // PUBLISHes have no property block, which `Pkt::publish` is not used for).
    let (mut m3, code) = Raw::handshake(addr, &connect_packet("m3-311"));
    assert_eq!(code.byte1, 0x20);
    m3.send(&subscribe_packet(1, &[(b"$share/g/jobs/#", 1)]));
    assert_eq!(m3.control().kind(), 9);
    members.push(m3);
    // A non-shared subscriber gets everything.
    let mut all = Raw::connected5(addr, "all", &[]);
    all.subscribe_keeping(1, &[("jobs/#", 0)], None);

    let mut p = Raw::connected5(addr, "pub", &[]);
    let mut counts = [0usize; 3];
    for i in 0..9u16 {
        p.publish_qos1("jobs/resize", i + 1, &[], format!("{i}").as_bytes());
        // Exactly one member gets it; each acknowledges at once, so every member is
        // equally idle and the turn rotates.
        let deadline = Instant::now() + WAIT;
        let (who, packet) = 'found: loop {
            for (n, m) in members.iter_mut().enumerate() {
                if let Some(packet) = m.try_read(Duration::from_millis(20)) {
                    break 'found (n, packet);
                }
            }
            assert!(Instant::now() < deadline, "message {i} reached no member");
        };
        assert_eq!(packet.kind(), 3);
        let tlen = usize::from(u16::from_be_bytes([packet.body[0], packet.body[1]]));
        let pkid = u16::from_be_bytes([packet.body[2 + tlen], packet.body[3 + tlen]]);
        members[who].ack(PUBACK, pkid);
        // A PINGREQ round trip: the broker has handled the PUBACK before the next
        // PUBLISH is routed, so every member is idle again.
        members[who].send(&[0xC0, 0x00]);
        assert_eq!(members[who].control().kind(), 13);
        counts[who] += 1;
        all.recv_publish();
    }
    assert_eq!(counts, [3, 3, 3], "each message to one member, in turn");
    for m in &mut members {
        m.expect_quiet(QUIET, "no second copy within the group");
    }
}

#[test]
fn mqtt5_4_8_2_unacknowledged_messages_of_a_disconnected_member_go_to_another() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let mut holder = Raw::connected5(addr, "holder", &[Prop::Two(RECEIVE_MAXIMUM, 1)]);
    holder.subscribe_keeping(1, &[("$share/w/work", 1)], None);
    let mut p = Raw::connected5(addr, "pub", &[]);
    p.publish_qos1("work", 1, &[], b"job-1");
    let got = holder.recv_publish();
    assert_eq!(got.payload, b"job-1");
    // Another member joins; the holder dies without acknowledging.
    let mut other = Raw::connected5(addr, "other", &[]);
    other.subscribe_keeping(1, &[("$share/w/work", 1)], None);
    drop(holder);
    let moved = other.recv_publish();
    assert_eq!(
        moved.payload, b"job-1",
        "redelivered to the remaining member"
    );
    assert!(broker.wait_event("shared_moved", WAIT));
}

#[test]
fn mqtt5_3_8_3_4_no_local_on_a_shared_subscription_is_a_protocol_error() {
    let broker = Broker::start("");
    let mut c = Raw::connected5(broker.addr(), "nl-shared", &[]);
    c.send(&subscribe5(1, &[("$share/g/x", 0x04)], None));
    assert_eq!(c.disconnect_reason(), 0x82);
}

#[test]
fn mqtt5_4_8_2_4_shared_qos2_in_flight_stays_with_its_member() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let session = [Prop::Four(SESSION_EXPIRY, 60)];
    let mut a = Raw::connected5(addr, "ma", &session);
    a.subscribe_keeping(1, &[("$share/g/q2", 2)], None);
    let mut p = Raw::connected5(addr, "pub", &[]);
    p.publish_qos2("q2", 1, b"exactly-once");
    let got = a.recv_publish();
    assert_eq!(got.qos, 2);
    let mut b = Raw::connected5(addr, "mb", &[]);
    b.subscribe_keeping(1, &[("$share/g/q2", 2)], None);
    drop(a); // connection breaks before PUBREC; session persists (expiry 60)
    b.expect_quiet(
        QUIET,
        "a QoS 2 message in flight is not moved to another member",
    );
    // It is completed with the member it was sent to, when it comes back [MQTT-4.8.2-4].
    let (mut a, ack) = Raw::handshake(addr, &connect5("ma", false, 60, &session, None));
    assert!(ack.connack().0);
    let again = a.recv_publish();
    assert_eq!(again.payload, b"exactly-once");
}

#[test]
fn mqtt5_4_8_2_6_shared_message_refused_by_pubrec_error_goes_to_no_other_member() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let mut a = Raw::connected5(addr, "ma", &[]);
    a.subscribe_keeping(1, &[("$share/g/q2", 2)], None);
    let mut p = Raw::connected5(addr, "pub", &[]);
    p.publish_qos2("q2", 1, b"refused");
    let got = a.recv_publish();
    a.send(&[0x50, 3, (got.pkid >> 8) as u8, got.pkid as u8, 0x80]);
    a.send(&[0xC0, 0]);
    assert_eq!(a.control().kind(), 13);
    let mut b = Raw::connected5(addr, "mb", &[]);
    b.subscribe_keeping(1, &[("$share/g/q2", 2)], None);
    drop(a);
    if let Some(pk) = b.try_read(Duration::from_millis(1500)) {
        panic!(
            "message refused with PUBREC 0x80 was sent to another member: {:?}",
            pk.publish().payload
        );
    }
}

/// The same properties and options through a client library: rumqttc's v5 client.
#[tokio::test]
async fn mqtt5_rumqttc_v5_properties_subscription_options_and_identifiers() {
    use rumqttc::v5::mqttbytes::v5::{
        Filter, Packet as P5, PublishProperties, RetainForwardRule, SubscribeProperties,
    };
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::{AsyncClient as C5, Event as E5, EventLoop, MqttOptions as O5};

    let broker = Broker::start("");
    let client = |id: &str| {
        let mut o = O5::new(id, "127.0.0.1", broker.port);
        o.set_keep_alive(Duration::from_secs(30));
        C5::new(o, 50)
    };
    let (sub, mut sub_ev) = client("rc-sub");
    let (publ, mut pub_ev) = client("rc-pub");
    // Drive the publisher's event loop in the background.
    tokio::spawn(async move { while pub_ev.poll().await.is_ok() {} });

    let filter = Filter {
        path: "rc/#".into(),
        qos: Q5::AtLeastOnce,
        nolocal: true,
        preserve_retain: true,
        retain_forward_rule: RetainForwardRule::OnEverySubscribe,
    };
    let sub_props = SubscribeProperties {
        id: Some(7),
        user_properties: vec![],
    };
    sub.subscribe_many_with_properties(vec![filter], sub_props)
        .await
        .unwrap();
    async fn next_publish(ev: &mut EventLoop) -> rumqttc::v5::mqttbytes::v5::Publish {
        loop {
            match tokio::time::timeout(WAIT, ev.poll()).await {
                Ok(Ok(E5::Incoming(P5::Publish(p)))) => return p,
                Ok(Ok(_)) => {}
                other => panic!("no PUBLISH: {other:?}"),
            }
        }
    }
    loop {
        match tokio::time::timeout(WAIT, sub_ev.poll()).await {
            Ok(Ok(E5::Incoming(P5::SubAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("no SUBACK: {other:?}"),
        }
    }

    // Its own message is not delivered back (No Local); the other client's is, with every
    // property, the subscription identifier and the remaining expiry.
    sub.publish("rc/self", Q5::AtLeastOnce, false, "mine")
        .await
        .unwrap();
    let props = PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(60),
        content_type: Some("text/plain".into()),
        response_topic: Some("rc/replies".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"req-1")),
        user_properties: vec![("b".into(), "2".into()), ("a".into(), "1".into())],
        ..Default::default()
    };
    publ.publish_with_properties("rc/theirs", Q5::AtLeastOnce, false, "hello", props)
        .await
        .unwrap();
    let got = next_publish(&mut sub_ev).await;
    assert_eq!(&got.topic[..], b"rc/theirs", "No Local skipped rc/self");
    assert!(!got.retain);
    let p = got.properties.expect("properties");
    assert_eq!(p.payload_format_indicator, Some(1));
    assert_eq!(p.content_type.as_deref(), Some("text/plain"));
    assert_eq!(p.response_topic.as_deref(), Some("rc/replies"));
    assert_eq!(p.correlation_data.as_deref(), Some(&b"req-1"[..]));
    assert_eq!(
        p.user_properties,
        vec![("b".into(), "2".into()), ("a".into(), "1".into())]
    );
    assert_eq!(p.subscription_identifiers, vec![7]);
    assert!(matches!(p.message_expiry_interval, Some(58..=60)));

    // Retain As Published: a live retained message keeps RETAIN=1.
    publ.publish("rc/state", Q5::AtLeastOnce, true, "on")
        .await
        .unwrap();
    let got = next_publish(&mut sub_ev).await;
    assert_eq!(&got.topic[..], b"rc/state");
    assert!(got.retain);
}
