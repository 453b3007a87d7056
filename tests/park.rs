//! Idle plain-TCP connections are parked outside their tasks (src/park, src/server/parked.rs)
//! and must behave as if they were not: every test here waits until the connection under
//! test has parked (midge logs `connection_parked` at debug level, after 0.5 to 0.75 s
//! without traffic) and then checks one thing a connection does. Nothing here asserts how
//! long anything takes; the waits are upper bounds for a loaded machine.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::packets::{self, Will};
use common::{
    is_closed, parse_publish, publish_packet, raw, raw_connected, read_exact, read_packet,
    read_until_closed, subscribe_packet, Broker,
};

/// Long enough for the sweeper to ask (three sweeps of 250 ms) on a loaded machine.
const PARKS_WITHIN: Duration = Duration::from_secs(20);

fn broker(extra: &str) -> Broker {
    Broker::start(&format!("log_level = \"debug\"\n{extra}"))
}

fn wait_parked(b: &Broker, client_id: &str, times: usize) {
    let deadline = std::time::Instant::now() + PARKS_WITHIN;
    while b.event_count("connection_parked", &[("client_id", client_id)]) < times {
        assert!(
            std::time::Instant::now() < deadline,
            "{client_id} was not parked {times} time(s); log:\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A connected client subscribed to `topic` at `qos`.
fn subscriber(addr: SocketAddr, id: &str, topic: &str, qos: u8) -> TcpStream {
    let mut s = raw_connected(addr, id);
    s.write_all(&subscribe_packet(1, &[(topic.as_bytes(), qos)]))
        .expect("write SUBSCRIBE");
    let (h, body) = read_packet(&mut s);
    assert_eq!(h, 0x90, "SUBACK expected, got {h:#x} {body:?}");
    assert_eq!(body, [0x00, 0x01, qos], "SUBACK");
    s
}

/// Connects `id` with keep-alive `keep_alive` and a will on `will_topic`.
fn with_will(addr: SocketAddr, id: &str, keep_alive: u16, will_topic: &str) -> TcpStream {
    let will = Will {
        topic: will_topic,
        payload: b"gone",
        ..Will::default()
    };
    let mut s = raw(addr);
    s.write_all(&packets::connect311(id, true, keep_alive, Some(&will)))
        .expect("write CONNECT");
    assert_eq!(read_exact(&mut s, 4), [0x20, 0x02, 0x00, 0x00], "CONNACK");
    s
}

fn expect_publish(s: &mut TcpStream, topic: &str, payload: &[u8]) -> u8 {
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let (h, body) = read_packet(s);
    let (t, p) = parse_publish(h, &body);
    assert_eq!((t.as_str(), p.as_slice()), (topic, payload));
    h
}

#[test]
fn a_parked_subscriber_gets_qos0_and_qos1_messages_and_parks_again() {
    let b = broker("");
    let mut sub = subscriber(b.addr(), "park-sub", "park/t", 1);
    wait_parked(&b, "park-sub", 1);

    let mut publisher = raw_connected(b.addr(), "park-pub");
    publisher
        .write_all(&publish_packet(b"park/t", 0, 0, b"zero", false))
        .expect("publish");
    publisher
        .write_all(&publish_packet(b"park/t", 1, 7, b"one", false))
        .expect("publish");
    assert_eq!(
        read_exact(&mut publisher, 4),
        [0x40, 0x02, 0x00, 0x07],
        "PUBACK"
    );

    let h = expect_publish(&mut sub, "park/t", b"zero");
    assert_eq!((h >> 1) & 3, 0);
    sub.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let (h, body) = read_packet(&mut sub);
    let (t, p) = parse_publish(h, &body);
    assert_eq!(
        (t.as_str(), p.as_slice(), (h >> 1) & 3),
        ("park/t", &b"one"[..], 1)
    );
    // Packet id after the topic (2-byte length + 6 bytes).
    let id = [body[8], body[9]];
    sub.write_all(&[0x40, 0x02, id[0], id[1]]).expect("PUBACK");

    // Idle again: parked again, and still delivered to.
    wait_parked(&b, "park-sub", 2);
    publisher
        .write_all(&publish_packet(b"park/t", 1, 8, b"two", false))
        .expect("publish");
    assert_eq!(
        read_exact(&mut publisher, 4),
        [0x40, 0x02, 0x00, 0x08],
        "PUBACK"
    );
    expect_publish(&mut sub, "park/t", b"two");
}

/// A 3.1.1 connection is sent again what it has not acknowledged after `retry_interval`
/// (as Mosquitto's older versions did), parked or not: the sweeper's retransmission flag
/// wakes the parked connection's session, which resumes it.
#[test]
fn a_parked_client_is_sent_an_unacknowledged_qos1_message_again_with_dup() {
    let b = broker("retry_interval = 2");
    let mut sub = subscriber(b.addr(), "park-retry", "park/r", 1);
    let mut publisher = raw_connected(b.addr(), "park-retry-pub");
    publisher
        .write_all(&publish_packet(b"park/r", 1, 3, b"again", false))
        .expect("publish");
    assert_eq!(
        read_exact(&mut publisher, 4),
        [0x40, 0x02, 0x00, 0x03],
        "PUBACK"
    );
    sub.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let (h, first) = read_packet(&mut sub);
    assert_eq!(h & 0x0f, 0x02, "QoS 1, no DUP the first time: {h:#x}");
    // Not acknowledged: the connection goes idle and parks with the message in flight.
    wait_parked(&b, "park-retry", 1);
    let (h, again) = read_packet(&mut sub);
    assert_eq!(h & 0x0f, 0x0a, "QoS 1 with DUP when sent again: {h:#x}");
    assert_eq!(again, first, "the same topic, packet id and payload");
    assert!(
        b.event_count("connection_resumed", &[("client_id", "park-retry")]) >= 1,
        "it was resumed to send it; log:\n{}",
        b.log()
    );
}

#[test]
fn a_parked_client_gets_pingresp() {
    let b = broker("");
    let mut c = raw_connected(b.addr(), "park-ping");
    wait_parked(&b, "park-ping", 1);
    c.write_all(&[0xC0, 0x00]).expect("PINGREQ");
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(read_exact(&mut c, 2), [0xD0, 0x00], "PINGRESP");
}

#[test]
fn a_parked_client_that_goes_silent_is_dropped_at_its_keep_alive_with_its_will() {
    let b = broker("");
    let mut watcher = subscriber(b.addr(), "park-watch-ka", "will/ka", 0);
    // Keep-alive 2 s: closed after 3 s of silence, well after it parked.
    let mut c = with_will(b.addr(), "park-silent", 2, "will/ka");
    wait_parked(&b, "park-silent", 1);
    assert!(
        read_until_closed(&mut c, Duration::from_secs(30)).is_some(),
        "a silent client is closed"
    );
    assert!(b.wait_event_with(
        "connection_closed",
        &[("client_id", "park-silent"), ("cause", "keep_alive")],
        Duration::from_secs(10)
    ));
    expect_publish(&mut watcher, "will/ka", b"gone");
}

#[test]
fn a_parked_client_is_taken_over_by_a_new_connection_with_its_id() {
    let b = broker("");
    let mut old = subscriber(b.addr(), "park-same", "park/same", 1);
    wait_parked(&b, "park-same", 1);
    let mut new = raw_connected(b.addr(), "park-same");
    old.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    assert!(is_closed(&mut old), "the parked connection is closed");
    assert!(b.wait_event_with(
        "connection_closed",
        &[("client_id", "park-same"), ("cause", "taken_over")],
        Duration::from_secs(10)
    ));
    new.write_all(&[0xC0, 0x00]).expect("PINGREQ");
    assert_eq!(
        read_exact(&mut new, 2),
        [0xD0, 0x00],
        "the new connection is served"
    );
}

#[test]
fn a_parked_client_that_closes_its_socket_has_its_will_published() {
    let b = broker("");
    let mut watcher = subscriber(b.addr(), "park-watch-hup", "will/hup", 0);
    let c = with_will(b.addr(), "park-hup", 60, "will/hup");
    wait_parked(&b, "park-hup", 1);
    drop(c);
    expect_publish(&mut watcher, "will/hup", b"gone");
    assert!(b.wait_event_with(
        "connection_closed",
        &[("client_id", "park-hup"), ("cause", "peer_closed")],
        Duration::from_secs(10)
    ));
}

#[test]
fn parked_connections_count_against_max_connections() {
    let b = broker("max_connections = 2");
    let _one = raw_connected(b.addr(), "park-one");
    let mut two = raw_connected(b.addr(), "park-two");
    wait_parked(&b, "park-one", 1);
    wait_parked(&b, "park-two", 1);
    let mut third = raw(b.addr());
    third
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert!(
        is_closed(&mut third),
        "the limit still counts parked connections"
    );
    two.write_all(&[0xE0, 0x00]).expect("DISCONNECT");
    two.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    assert!(is_closed(&mut two));
    // Its slot is free once it has closed: a new client gets in (retried, as the close
    // is counted after the socket closes).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut s = raw(b.addr());
        let _ = s.write_all(&common::connect_packet("park-three"));
        let mut ack = [0u8; 4];
        if std::io::Read::read_exact(&mut s, &mut ack).is_ok() {
            assert_eq!(ack, [0x20, 0x02, 0x00, 0x00]);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slot was not freed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn shutdown_with_parked_connections_completes() {
    let mut b = broker("");
    let mut clients: Vec<TcpStream> = (0..5)
        .map(|i| subscriber(b.addr(), &format!("park-down-{i}"), "park/down", 1))
        .collect();
    for i in 0..5 {
        wait_parked(&b, &format!("park-down-{i}"), 1);
    }
    let status = b
        .terminate()
        .expect("midge exits on SIGTERM with parked connections");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        !b.log().contains("did not close"),
        "every connection closed within the grace period"
    );
    for c in &mut clients {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(is_closed(c), "every parked connection was closed");
    }
}

#[test]
fn with_parking_off_an_idle_connection_keeps_its_task() {
    let b = broker("park_idle_connections = false");
    let mut c = raw_connected(b.addr(), "park-off");
    // Several times the sweeps that would have parked it.
    std::thread::sleep(Duration::from_secs(3));
    c.write_all(&[0xC0, 0x00]).expect("PINGREQ");
    assert_eq!(read_exact(&mut c, 2), [0xD0, 0x00], "PINGRESP");
    assert_eq!(b.event_count("connection_parked", &[]), 0, "nothing parked");
}
