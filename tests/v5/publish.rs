//! PUBLISH (3.3, 3.4, 4.3, 4.4): message properties, expiry, payload format, topic
//! aliases, flow control and sizes, QoS 2 flows; rumqttc and mosquitto 5.0 clients.

use super::common::packets::*;
use super::common::raw::Raw;
use super::common::*;
use super::*;

#[test]
fn mqtt5_3_3_2_message_properties_forwarded_unchanged_and_user_properties_in_order() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let mut sub = Raw::connected5(addr, "sub5", &[]);
    assert_eq!(sub.subscribe_keeping(1, &[("props/#", 0)], None), vec![0]);
    let mut old = raw_connected(addr, "sub311");
    old.write_all(&subscribe_packet(1, &[(b"props/#", 0)]))
        .unwrap();
    assert_eq!(read_packet(&mut old).0, 0x90);

    let mut p = Raw::connected5(addr, "pub5", &[]);
    let props = [
        Prop::Byte(PAYLOAD_FORMAT, 1),
        Prop::Str(CONTENT_TYPE, "application/json".into()),
        Prop::Str(RESPONSE_TOPIC, "replies/pub5".into()),
        Prop::Bin(CORRELATION_DATA, vec![0, 1, 2, 255]),
        user("z", "last-name-first"),
        user("a", "1"),
        user("a", "2"),
    ];
    assert_eq!(p.publish_qos1("props/x", 7, &props, b"{\"v\":1}"), 0);
    let got = sub.recv_publish();
    assert_eq!(got.payload, b"{\"v\":1}");
    assert_eq!(
        got.prop(PAYLOAD_FORMAT),
        Some(&Prop::Byte(PAYLOAD_FORMAT, 1))
    );
    assert_eq!(
        got.prop(CONTENT_TYPE),
        Some(&Prop::Str(CONTENT_TYPE, "application/json".into()))
    );
    assert_eq!(
        got.prop(RESPONSE_TOPIC),
        Some(&Prop::Str(RESPONSE_TOPIC, "replies/pub5".into()))
    );
    assert_eq!(
        got.prop(CORRELATION_DATA),
        Some(&Prop::Bin(CORRELATION_DATA, vec![0, 1, 2, 255]))
    );
    assert_eq!(
        got.user_properties(),
        vec![
            ("z".into(), "last-name-first".into()),
            ("a".into(), "1".into()),
            ("a".into(), "2".into())
        ],
        "user properties unchanged and in order [MQTT-3.3.2-17/18]"
    );
    // The 3.1.1 subscriber gets the same message, without properties.
    let (header, body) = read_packet(&mut old);
    assert_eq!(
        parse_publish(header, &body),
        ("props/x".into(), b"{\"v\":1}".to_vec())
    );
}

#[test]
fn mqtt5_3_3_2_5_expired_messages_are_not_delivered_and_the_rest_carry_remaining_time() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let mut c = Raw::connected5(addr, "late", &[Prop::Four(SESSION_EXPIRY, 60)]);
    assert_eq!(c.subscribe_keeping(1, &[("exp/#", 1)], None), vec![1]);
    drop(c);
    let mut p = Raw::connected5(addr, "pub", &[]);
    p.publish_qos1("exp/short", 1, &[Prop::Four(MESSAGE_EXPIRY, 1)], b"gone");
    p.publish_qos1("exp/long", 2, &[Prop::Four(MESSAGE_EXPIRY, 100)], b"kept");
    // Retained with a short life: expired before anyone subscribes.
    p.send(&publish5(
        "exp/retained",
        1,
        3,
        true,
        &[Prop::Four(MESSAGE_EXPIRY, 1)],
        b"old",
    ));
    assert_eq!(p.control().kind(), 4);
    std::thread::sleep(Duration::from_millis(2100));
    let (mut c, ack) = Raw::handshake(
        addr,
        &connect5("late", false, 60, &[Prop::Four(SESSION_EXPIRY, 60)], None),
    );
    assert!(ack.connack().0);
    let got = c.recv_publish();
    assert_eq!(got.topic, "exp/long", "the expired message is skipped");
    match got.prop(MESSAGE_EXPIRY) {
        Some(Prop::Four(_, left)) => assert!((95..=98).contains(left), "remaining {left}"),
        other => panic!("no Message Expiry Interval: {other:?}"),
    }
    c.ack(PUBACK, got.pkid);
    let mut fresh = Raw::connected5(addr, "fresh", &[]);
    fresh.subscribe_keeping(1, &[("exp/retained", 1)], None);
    fresh.expect_quiet(QUIET, "expired retained message");
}

#[test]
fn mqtt5_3_3_2_4_payload_not_utf8_with_format_indicator_gets_0x99() {
    let broker = Broker::start("");
    let mut sub = Raw::connected5(broker.addr(), "sub", &[]);
    sub.subscribe_keeping(1, &[("fmt/#", 0)], None);
    let mut p = Raw::connected5(broker.addr(), "pub", &[]);
    let reason = p.publish_qos1(
        "fmt/bad",
        1,
        &[Prop::Byte(PAYLOAD_FORMAT, 1)],
        &[0xC3, 0x28],
    );
    assert_eq!(reason, 0x99);
    sub.expect_quiet(QUIET, "invalid payload not delivered");
}

#[test]
fn mqtt5_3_4_2_1_puback_reports_no_matching_subscribers() {
    let broker = Broker::start("");
    let mut p = Raw::connected5(broker.addr(), "pub", &[]);
    assert_eq!(p.publish_qos1("nobody/home", 1, &[], b"x"), 0x10);
    let mut s = Raw::connected5(broker.addr(), "sub", &[]);
    s.subscribe_keeping(1, &[("nobody/#", 0)], None);
    assert_eq!(p.publish_qos1("nobody/home", 2, &[], b"x"), 0x00);
}

#[test]
fn mqtt5_3_3_2_3_4_inbound_topic_alias_is_set_then_used() {
    let broker = Broker::start("max_topic_alias = 3\n");
    let mut sub = Raw::connected5(broker.addr(), "sub", &[]);
    sub.subscribe_keeping(1, &[("alias/#", 0)], None);
    let mut p = Raw::connected5(broker.addr(), "pub", &[]);
    p.send(&publish5(
        "alias/long/topic/name",
        0,
        0,
        false,
        &[Prop::Two(TOPIC_ALIAS, 2)],
        b"one",
    ));
    p.send(&publish5(
        "",
        0,
        0,
        false,
        &[Prop::Two(TOPIC_ALIAS, 2)],
        b"two",
    ));
    for payload in [&b"one"[..], b"two"] {
        let got = sub.recv_publish();
        assert_eq!(got.topic, "alias/long/topic/name");
        assert_eq!(got.payload, payload);
    }
}

#[test]
fn mqtt5_3_3_2_8_topic_alias_zero_or_above_maximum_disconnects_with_0x94() {
    let broker = Broker::start("max_topic_alias = 3\n");
    for alias in [0u16, 4] {
        let mut p = Raw::connected5(broker.addr(), &format!("bad-alias-{alias}"), &[]);
        p.send(&publish5(
            "a/b",
            0,
            0,
            false,
            &[Prop::Two(TOPIC_ALIAS, alias)],
            b"x",
        ));
        assert_eq!(p.disconnect_reason(), 0x94, "alias {alias}");
    }
}

#[test]
fn mqtt5_3_3_2_3_4_outbound_topic_alias_within_the_clients_maximum() {
    let broker = Broker::start("");
    let mut sub = Raw::connected5(broker.addr(), "sub", &[Prop::Two(TOPIC_ALIAS_MAXIMUM, 1)]);
    sub.subscribe_keeping(1, &[("out/#", 0)], None);
    let mut p = Raw::connected5(broker.addr(), "pub", &[]);
    for (topic, payload) in [("out/a", "1"), ("out/a", "2"), ("out/b", "3")] {
        p.send(&publish5(topic, 0, 0, false, &[], payload.as_bytes()));
    }
    let first = sub.recv_publish();
    assert_eq!(first.topic, "out/a");
    assert_eq!(first.prop(TOPIC_ALIAS), Some(&Prop::Two(TOPIC_ALIAS, 1)));
    let second = sub.recv_publish();
    assert_eq!(second.topic, "", "alias only, the topic is not repeated");
    assert_eq!(second.prop(TOPIC_ALIAS), Some(&Prop::Two(TOPIC_ALIAS, 1)));
    let third = sub.recv_publish();
    assert_eq!(third.topic, "out/b");
    assert!(
        third.prop(TOPIC_ALIAS).is_none(),
        "beyond the client's maximum: no alias"
    );
}

#[test]
fn mqtt5_3_3_4_7_receive_maximum_bounds_unacknowledged_deliveries() {
    let broker = Broker::start("");
    let mut sub = Raw::connected5(broker.addr(), "slow", &[Prop::Two(RECEIVE_MAXIMUM, 2)]);
    sub.subscribe_keeping(1, &[("rm/#", 1)], None);
    let mut p = Raw::connected5(broker.addr(), "pub", &[]);
    for i in 0..5u16 {
        p.publish_qos1("rm/x", i + 1, &[], &[b'0' + i as u8]);
    }
    let a = sub.recv_publish();
    let b = sub.recv_publish();
    sub.expect_quiet(QUIET, "a third PUBLISH before an acknowledgement");
    sub.ack(PUBACK, a.pkid);
    let c = sub.recv_publish();
    assert_eq!([a.payload, b.payload, c.payload].concat(), b"012");
    sub.expect_quiet(QUIET, "still two unacknowledged");
}

#[test]
fn mqtt5_3_3_4_9_more_unacknowledged_qos2_than_receive_maximum_disconnects_with_0x93() {
    let broker = Broker::start("receive_maximum = 2\n");
    let mut p = Raw::connected5(broker.addr(), "greedy", &[]);
    for pkid in 1..=2u16 {
        p.send(&publish5("rm/q2", 2, pkid, false, &[], b"x"));
        assert_eq!(p.control().ack().0, pkid, "PUBREC {pkid}");
    }
    // A re-send (DUP) of one not yet released is not a new PUBLISH.
    let mut dup = publish5("rm/q2", 2, 2, false, &[], b"x");
    dup[0] |= 0x08;
    p.send(&dup);
    assert_eq!(p.control().ack().0, 2, "PUBREC again for the re-send");
    p.send(&publish5("rm/q2", 2, 3, false, &[], b"x"));
    assert_eq!(p.disconnect_reason(), 0x93);
}

#[test]
fn mqtt5_3_1_2_25_message_over_the_clients_maximum_packet_size_is_dropped_for_it_only() {
    let broker = Broker::start("");
    let mut small = Raw::connected5(
        broker.addr(),
        "small",
        &[Prop::Four(MAXIMUM_PACKET_SIZE, 64)],
    );
    small.subscribe_keeping(1, &[("size/#", 0)], None);
    let mut big = Raw::connected5(broker.addr(), "big", &[]);
    big.subscribe_keeping(1, &[("size/#", 0)], None);
    let mut p = Raw::connected5(broker.addr(), "pub", &[]);
    p.send(&publish5("size/large", 0, 0, false, &[], &[b'x'; 200]));
    p.send(&publish5("size/small", 0, 0, false, &[], b"ok"));
    assert_eq!(
        small.recv_publish().topic,
        "size/small",
        "the large one was skipped"
    );
    assert_eq!(big.recv_publish().topic, "size/large");
    assert_eq!(big.recv_publish().topic, "size/small");
}

#[tokio::test]
async fn mqtt5_rumqttc_v5_client_and_311_client_exchange_messages_both_ways() {
    use rumqttc::v5::mqttbytes::v5::{Packet as P5, PublishProperties};
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::{AsyncClient as C5, Event as E5, MqttOptions as O5};

    let broker = Broker::start("");
    let mut o5 = O5::new("rc5", "127.0.0.1", broker.port);
    o5.set_keep_alive(Duration::from_secs(30));
    let (c5, mut ev5) = C5::new(o5, 50);
    let mut o3 = rumqttc::MqttOptions::new("rc3", "127.0.0.1", broker.port);
    o3.set_keep_alive(Duration::from_secs(30));
    let (c3, mut ev3) = rumqttc::AsyncClient::new(o3, 50);
    // Each event loop runs on its own task (rumqttc's poll must not be cancelled midway,
    // as a select! over both would), forwarding SUBACKs and PUBLISHes.
    let (tx5, mut rx5) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(e) = ev5.poll().await {
            match e {
                E5::Incoming(P5::SubAck(_)) => drop(tx5.send(None)),
                E5::Incoming(P5::Publish(p)) => drop(tx5.send(Some(p))),
                _ => {}
            }
        }
    });
    let (tx3, mut rx3) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(e) = ev3.poll().await {
            match e {
                rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) => drop(tx3.send(None)),
                rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => drop(tx3.send(Some(p))),
                _ => {}
            }
        }
    });

    c5.subscribe("mixed/to5", Q5::AtLeastOnce).await.unwrap();
    c3.subscribe("mixed/to3", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let suback5 = tokio::time::timeout(WAIT, rx5.recv())
        .await
        .expect("SUBACK 5.0");
    let suback3 = tokio::time::timeout(WAIT, rx3.recv())
        .await
        .expect("SUBACK 3.1.1");
    assert!(matches!(suback5, Some(None)) && matches!(suback3, Some(None)));
    let props = PublishProperties {
        user_properties: vec![("k".into(), "v".into())],
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    c5.publish_with_properties("mixed/to3", Q5::AtLeastOnce, false, "from five", props)
        .await
        .unwrap();
    c3.publish("mixed/to5", rumqttc::QoS::AtLeastOnce, false, "from three")
        .await
        .unwrap();
    let got5 = tokio::time::timeout(WAIT, rx5.recv())
        .await
        .expect("5.0 receives");
    let got3 = tokio::time::timeout(WAIT, rx3.recv())
        .await
        .expect("3.1.1 receives");
    let (Some(Some(got5)), Some(Some(got3))) = (got5, got3) else {
        panic!("messages did not cross")
    };
    assert_eq!(&got5.payload[..], b"from three");
    assert!(got5.properties.is_none_or(|p| p.user_properties.is_empty()));
    assert_eq!(&got3.payload[..], b"from five");
}

#[test]
fn mqtt5_mosquitto_clients_v5_properties_round_trip() {
    let broker = Broker::start("");
    let port = broker.port.to_string();
    let sub = Command::new(tool("mosquitto_sub"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "-t",
            "mq5/#",
            "-C",
            "1",
            "-W",
            "10",
        ])
        .args(["-F", "%t|%C|%R|%F|%P|%p"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        broker.wait_event_with("subscribed", &[("filter", "mq5/#")], WAIT),
        "{}",
        broker.log()
    );
    let out = Command::new(tool("mosquitto_pub"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "-t",
            "mq5/x",
            "-m",
            "hello",
            "-q",
            "1",
        ])
        .args(["-D", "publish", "content-type", "text/plain"])
        .args(["-D", "publish", "response-topic", "mq5/reply"])
        .args(["-D", "publish", "payload-format-indicator", "1"])
        .args(["-D", "publish", "user-property", "k1", "v1"])
        .args(["-D", "publish", "user-property", "k2", "v2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", broker.log());
    let got = sub.wait_with_output().unwrap();
    assert!(got.status.success(), "{got:?}");
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim(),
        "mq5/x|text/plain|mq5/reply|1|k1:v1 k2:v2|hello"
    );
}

#[test]
fn mqtt5_4_4_0_2_pubrec_error_ends_the_delivery_and_frees_the_window() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let props = [
        Prop::Two(RECEIVE_MAXIMUM, 1),
        Prop::Four(SESSION_EXPIRY, 60),
    ];
    let mut sub = Raw::connected5(addr, "q2sub", &props);
    sub.subscribe_keeping(1, &[("q2/#", 2)], None);
    let mut p = Raw::connected5(addr, "pub", &[]);
    p.publish_qos2("q2/a", 1, b"one");
    p.publish_qos2("q2/a", 2, b"two");
    let first = sub.recv_publish();
    assert_eq!(first.payload, b"one");
    // PUBREC with 0x80: the message is acknowledged, quota comes back.
    sub.send(&[0x50, 3, (first.pkid >> 8) as u8, first.pkid as u8, 0x80]);
    match sub.try_read(Duration::from_millis(1500)) {
        Some(pk) if pk.kind() == 3 => assert_eq!(pk.publish().payload, b"two"),
        other => panic!("quota not returned after PUBREC 0x80, got {other:?}"),
    }
}

#[test]
fn mqtt5_3_1_2_24_topic_alias_counts_towards_the_clients_maximum_packet_size() {
    let broker = Broker::start("");
    let addr = broker.addr();
    // Without alias: 1 + 1 + (2 + 1) + 1 + 50 = 56 bytes.
    let mut sub = Raw::connected5(
        addr,
        "small",
        &[
            Prop::Four(MAXIMUM_PACKET_SIZE, 56),
            Prop::Two(TOPIC_ALIAS_MAXIMUM, 5),
        ],
    );
    sub.subscribe_keeping(1, &[("t", 0)], None);
    let mut p = Raw::connected5(addr, "pub", &[]);
    p.send(&publish5("t", 0, 0, false, &[], &[b'x'; 50]));
    let got = sub.read();
    let size = got.size();
    assert!(size <= 56, "{size} > 56");
}

#[test]
fn mqtt5_3_3_4_10_pingreq_and_subscribe_answered_while_the_receive_window_is_full() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let mut sub = Raw::connected5(addr, "rm1", &[Prop::Two(RECEIVE_MAXIMUM, 1)]);
    sub.subscribe_keeping(1, &[("z/#", 1)], None);
    let mut p = Raw::connected5(addr, "pub", &[]);
    p.publish_qos1("z/a", 1, &[], b"1");
    p.publish_qos1("z/a", 2, &[], b"2");
    let first = sub.recv_publish();
    assert_eq!(first.payload, b"1");
    sub.send(&[0xC0, 0]);
    let r = sub.read();
    assert_eq!(r.kind(), 13, "PINGRESP at zero quota: {r:?}");
    assert_eq!(sub.subscribe_keeping(2, &[("other", 0)], None), vec![0]);
    sub.expect_quiet(QUIET, "second QoS 1 held");
    sub.ack(PUBACK, first.pkid);
    assert_eq!(sub.recv_publish().payload, b"2");
}

#[test]
fn mqtt5_3_6_2_qos2_inbound_flow_and_packet_identifier_not_found_0x92() {
    let broker = Broker::start("");
    let addr = broker.addr();
    let mut c = Raw::connected5(addr, "c", &[]);
    c.send(&publish5("w/x", 2, 9, false, &[], b"m"));
    let rec = c.control();
    assert_eq!((rec.kind(), rec.ack()), (5, (9, 0x10)));
    c.send(&[0x62, 2, 0, 9]);
    let comp = c.control();
    assert_eq!((comp.kind(), comp.ack()), (7, (9, 0)));
    c.send(&[0x62, 2, 0, 77]);
    let comp = c.control();
    assert_eq!((comp.kind(), comp.ack()), (7, (77, 0x92)));
    c.send(&[0x50, 2, 0, 78]);
    let rel = c.control();
    assert_eq!((rel.kind(), rel.ack()), (6, (78, 0x92)));
    // empty topic without alias
    c.send(&publish5("", 0, 0, false, &[], b"m"));
    assert_eq!(c.disconnect_reason(), 0x82);
}

#[test]
fn mqtt5_3_3_2_4_payload_format_indicator_0_is_forwarded_unaltered() {
    let broker = Broker::start("");
    let mut sub = Raw::connected5(broker.addr(), "sub", &[]);
    sub.subscribe_keeping(1, &[("pfi/#", 0)], None);
    let mut p = Raw::connected5(broker.addr(), "pub", &[]);
    p.send(&publish5(
        "pfi/zero",
        0,
        0,
        false,
        &[Prop::Byte(PAYLOAD_FORMAT, 0)],
        &[0xFF, 0xFE],
    ));
    p.send(&publish5("pfi/none", 0, 0, false, &[], b"x"));
    let zero = sub.recv_publish();
    assert_eq!(
        zero.prop(PAYLOAD_FORMAT),
        Some(&Prop::Byte(PAYLOAD_FORMAT, 0))
    );
    assert_eq!(zero.payload, [0xFF, 0xFE], "not checked as UTF-8");
    assert!(sub.recv_publish().prop(PAYLOAD_FORMAT).is_none());
}
