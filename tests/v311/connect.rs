//! CONNECT and CONNACK (3.1, 3.2): client identifiers, take-over, the first packet,
//! strings that are not UTF-8, keep-alive and PINGREQ (3.12).

use super::common::packets::*;
use super::common::raw::Raw;
use super::*;

/// [MQTT-3.12.4-1], [MQTT-3.1.2-24]: PINGREQ is answered with PINGRESP, and a client that
/// pings within its keep-alive is not disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_12_4_1_pingreq_answered_and_keeps_connection_alive() {
    let b = Broker::start("");
    let (mut raw, _) = Raw::connect(&b, "pinger", true, 1, None);
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        raw.ping();
    }
    // 3.6 s > 1.5 keep-alives, and still connected.
    raw.expect_quiet(Duration::from_millis(300), "nothing more");
}

/// Section 3.1.2.10: a keep-alive of 0 turns the mechanism off: a silent client stays
/// connected (checked over 2.5 s, well beyond the 1.5 s a keep-alive of 1 would allow).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_1_2_24_keep_alive_zero_never_times_out() {
    let b = Broker::start("");
    let (mut raw, _) = Raw::connect(&b, "idle", true, 0, None);
    raw.expect_quiet(Duration::from_millis(2500), "nothing more");
    raw.ping();
}

/// [MQTT-3.1.3-6], [MQTT-3.2.2-1]: an empty client id with clean session is accepted
/// (CONNACK 0, session present 0) and given a unique id: two such clients coexist.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_1_3_6_empty_client_id_with_clean_session_gets_unique_id() {
    let b = Broker::start("");
    let (mut one, sp1) = Raw::connect(&b, "", true, 60, None);
    let (mut two, sp2) = Raw::connect(&b, "", true, 60, None);
    assert!(
        !sp1 && !sp2,
        "session present must be 0 for a clean session"
    );
    assert_eq!(one.subscribe(1, &[("anon/t", 1)]), vec![1]);
    two.send(&publish311("anon/t", b"hi", 1, 1, false, false));
    two.recv().assert_ack(PUBACK, 1);
    let p = one.recv_publish();
    assert_eq!(p.payload, b"hi");
    // Neither took the other over.
    one.send(&ack_bytes(PUBACK, p.pkid));
    one.ping();
    two.ping();
}

/// [MQTT-3.1.3-8], [MQTT-3.2.2-4], [MQTT-3.2.2-5]: an empty client id without clean session
/// gets CONNACK 0x02 with session present 0, then the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_1_3_8_empty_client_id_without_clean_session_rejected() {
    let b = Broker::start("");
    let mut raw = Raw::open(b.addr());
    raw.send(&connect311("", false, 60, None));
    let sent = raw.expect_closed(WAIT);
    assert_eq!(
        sent,
        vec![Pkt {
            byte1: 0x20,
            body: vec![0x00, 0x02],
            v5: false,
        }]
    );
}

/// [MQTT-3.1.3-9]: a client id longer than max_client_id_len (10) is rejected with CONNACK
/// 0x02 and the connection closed; 10 bytes are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_1_3_9_client_id_over_max_client_id_len_rejected() {
    let b = Broker::start("max_client_id_len = 10");
    let (mut ok, _) = Raw::connect(&b, "abcdefghij", true, 60, None);
    ok.ping();

    let mut raw = Raw::open(b.addr());
    raw.send(&connect311("abcdefghijk", true, 60, None));
    let sent = raw.expect_closed(WAIT);
    assert_eq!(
        sent,
        vec![Pkt {
            byte1: 0x20,
            body: vec![0x00, 0x02],
            v5: false,
        }]
    );
}

/// [MQTT-3.1.3-5], [MQTT-3.1.4-4]: a 23-character alphanumeric client id is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_1_3_5_23_char_alphanumeric_client_id_accepted() {
    let b = Broker::start("");
    let (mut raw, sp) = Raw::connect(&b, "a1B2c3D4e5F6g7H8i9J0kLm", true, 60, None);
    assert!(!sp);
    raw.ping();
}

/// [MQTT-3.2.0-1], [MQTT-3.1.4-4]: packets sent right behind CONNECT (before CONNACK) are
/// processed, and CONNACK is still the first packet from the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_2_0_1_connack_first_even_when_packets_pipelined() {
    let b = Broker::start("");
    let mut raw = Raw::open(b.addr());
    let mut bytes = connect311("eager", true, 60, None);
    bytes.extend(subscribe311(1, &[("pl/t", 1)]));
    bytes.extend(publish311("pl/t", b"hello", 1, 2, false, false));
    bytes.extend(PINGREQ_BYTES);
    raw.send(&bytes);

    let p = raw.recv();
    assert_eq!(
        (p.byte1, p.body.as_slice()),
        (0x20, &[0u8, 0][..]),
        "first packet must be CONNACK"
    );
    let p = raw.recv();
    assert_eq!(
        (p.byte1, p.body.as_slice()),
        (0x90, &[0u8, 1, 1][..]),
        "then the SUBACK"
    );
    let mut rest = Vec::new();
    for _ in 0..3 {
        rest.push(raw.recv());
    }
    assert!(
        rest.iter().any(|p| p.byte1 == 0x40 && p.pkid() == 2),
        "PUBACK 2 missing: {rest:?}"
    );
    assert!(
        rest.iter().any(|p| p.kind() == PINGRESP),
        "PINGRESP missing: {rest:?}"
    );
    let publ = rest
        .iter()
        .find(|p| p.kind() == PUBLISH)
        .expect("own message delivered");
    assert_eq!(publ.publish().payload, b"hello");
}

/// [MQTT-3.1.4-5]: data sent behind a refused CONNECT is not processed (a retained PUBLISH
/// piggy-backed on it is not stored).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mqtt_3_1_4_5_data_after_rejected_connect_not_processed() {
    let b = Broker::start("");
    let mut raw = Raw::open(b.addr());
    let mut bytes = connect311("", false, 60, None); // refused: 0x02
    bytes.extend(publish311("rej/t", b"sneaky", 0, 0, true, false));
    raw.send(&bytes);
    let sent = raw.expect_closed(WAIT);
    assert_eq!(
        sent,
        vec![Pkt {
            byte1: 0x20,
            body: vec![0x00, 0x02],
            v5: false,
        }]
    );

    let mut sub = client(&b, "sub").await;
    sub.subscribe("rej/#", QoS::AtLeastOnce).await;
    let mut publ = client(&b, "pub").await;
    publ.publish("rej/sentinel", QoS::AtLeastOnce, false, "s")
        .await;
    assert_eq!(
        sub.recv().await.topic,
        "rej/sentinel",
        "data after a refused CONNECT was processed"
    );
}
