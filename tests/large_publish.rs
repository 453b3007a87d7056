//! A large PUBLISH is read into a buffer of its own frame's size, charged to
//! `memory_limit` while it arrives (src/connection/large_frame.rs). Its bytes must arrive
//! intact however the client's writes cut them and whatever shares a read with it; one
//! over `max_packet_size` is refused from its fixed header with the specification's
//! answer; and a connection that drops mid-payload gives its charge back.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

/// A payload whose every byte depends on its offset, so a misplaced chunk shows.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn subscribed(addr: SocketAddr, id: &str, filter: &str, qos: u8) -> TcpStream {
    let mut s = raw_connected(addr, id);
    s.write_all(&subscribe_packet(1, &[(filter.as_bytes(), qos)]))
        .expect("SUBSCRIBE");
    assert_eq!(
        read_exact(&mut s, 5),
        [0x90, 0x03, 0x00, 0x01, qos],
        "SUBACK"
    );
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s
}

/// Reads the next PUBLISH: (topic, payload).
fn next_publish(s: &mut TcpStream) -> (String, Vec<u8>) {
    let (h, body) = read_packet(s);
    parse_publish(h, &body)
}

const PINGREQ: [u8; 2] = [0xC0, 0x00];
const PINGRESP: [u8; 2] = [0xD0, 0x00];

/// Cut into pieces written apart (with a pause, so they reach the broker as separate
/// reads): after the first byte, inside the remaining length, right after the fixed
/// header, inside the topic, around the 64 KiB read size, and before the last byte, which
/// goes out in one write with a small PUBLISH and a PINGREQ behind it.
#[test]
fn large_publish_cut_at_awkward_boundaries_arrives_intact() {
    let b = Broker::start("");
    let mut sub = subscribed(b.addr(), "cut-sub", "cut/#", 1);
    let mut publ = raw_connected(b.addr(), "cut-pub");
    let big = payload((1 << 20) + 12_345);
    let packet = publish_packet(b"cut/big", 1, 7, &big, false);
    // 1 type byte + 3 length bytes for a remaining length of about 1 MiB.
    let cuts = [
        1,
        2,
        4,
        5,
        65_535,
        65_536,
        65_537,
        200_000,
        packet.len() - 1,
    ];
    let mut from = 0;
    for &to in &cuts {
        publ.write_all(&packet[from..to]).expect("write piece");
        std::thread::sleep(Duration::from_millis(20));
        from = to;
    }
    let mut last = packet[from..].to_vec();
    last.extend(publish_packet(b"cut/small", 1, 8, b"after", false));
    last.extend(PINGREQ);
    publ.write_all(&last).expect("write the rest");

    assert_eq!(
        read_exact(&mut publ, 4),
        [0x40, 0x02, 0x00, 0x07],
        "PUBACK 7"
    );
    assert_eq!(
        read_exact(&mut publ, 4),
        [0x40, 0x02, 0x00, 0x08],
        "PUBACK 8"
    );
    assert_eq!(read_exact(&mut publ, 2), PINGRESP);
    let (topic, got) = next_publish(&mut sub);
    assert_eq!(topic, "cut/big");
    assert!(got == big, "large payload differs ({} bytes)", got.len());
    assert_eq!(
        next_publish(&mut sub),
        ("cut/small".into(), b"after".to_vec())
    );
}

/// Several large PUBLISHes and small packets in one write: each frame is read whole and
/// the packets after it are handled, in order.
#[test]
fn large_publishes_and_small_packets_in_one_write_keep_their_order() {
    let b = Broker::start("");
    let mut sub = subscribed(b.addr(), "mix-sub", "mix/#", 0);
    let mut publ = raw_connected(b.addr(), "mix-pub");
    let sizes = [300_000, 65_536, 2 << 20, 100];
    let mut bytes = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        bytes.extend(publish_packet(
            format!("mix/{i}").as_bytes(),
            0,
            0,
            &payload(n),
            false,
        ));
        bytes.extend(publish_packet(b"mix/small", 0, 0, &[i as u8], false));
    }
    bytes.extend(PINGREQ);
    publ.write_all(&bytes).expect("write");
    assert_eq!(read_exact(&mut publ, 2), PINGRESP);
    for (i, &n) in sizes.iter().enumerate() {
        let (topic, got) = next_publish(&mut sub);
        assert_eq!(topic, format!("mix/{i}"));
        assert!(
            got == payload(n),
            "payload {i} differs ({} bytes)",
            got.len()
        );
        assert_eq!(next_publish(&mut sub), ("mix/small".into(), vec![i as u8]));
    }
}

/// Over `max_packet_size` is refused from the fixed header, before the body: a 5.0 client
/// gets DISCONNECT 0x95 Packet too large, a 3.1.1 client is closed; a large PUBLISH of
/// exactly the maximum is delivered.
#[test]
fn large_publish_over_max_packet_size_is_refused_with_0x95() {
    let max = 256 * 1024;
    let b = Broker::start(&format!("max_packet_size = {max}\n"));
    let mut sub = subscribed(b.addr(), "max-sub", "max/#", 0);
    let topic = b"max/t";
    let at_max = payload(max - 2 - topic.len());
    let mut publ = raw_connected(b.addr(), "max-pub");
    publ.write_all(&publish_packet(topic, 0, 0, &at_max, false))
        .expect("write");
    let (_, got) = next_publish(&mut sub);
    assert!(got == at_max, "PUBLISH of exactly max_packet_size");

    let over = publish_packet(topic, 0, 0, &payload(at_max.len() + 1), false);
    let mut v5 = raw_connected5(b.addr(), "max-v5", true, &[]);
    v5.write_all(&over[..100_000]).expect("write");
    let (h, body) = read_packet(&mut v5);
    assert_eq!((h, body.first()), (0xE0, Some(&0x95)), "DISCONNECT 0x95");
    assert!(is_closed(&mut v5));

    let mut v311 = raw_connected(b.addr(), "max-v311");
    v311.write_all(&over[..100_000]).expect("write");
    let closed = read_until_closed(&mut v311, Duration::from_secs(5));
    assert_eq!(closed, Some(Vec::new()), "closed without an answer");
}

/// Connections that drop in the middle of a large payload give back what their frame's
/// buffer was charged: with `memory_limit` below two such frames, a whole one is still
/// accepted after ten were abandoned (a charge left behind would refuse it: a 3.1.1
/// publisher over the limit is closed without PUBACK).
#[test]
fn large_publish_dropped_mid_payload_gives_its_memory_back() {
    let b = Broker::start("memory_limit = 6291456\n");
    let frame = publish_packet(b"drop/t", 1, 1, &payload(4 << 20), false);
    for i in 0..10 {
        let mut s = raw_connected(b.addr(), &format!("drop-{i}"));
        s.write_all(&frame[..(1 << 20) + i]).expect("write part");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every abandoned connection has been closed by the broker (the sockets were dropped
    // at the end of each turn above).
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.event_count("connection_closed", &[("cause", "peer_closed")]) < 10 {
        assert!(Instant::now() < deadline, "broker did not see the drops");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut s = raw_connected(b.addr(), "drop-whole");
    s.write_all(&frame).expect("write");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    assert_eq!(read_exact(&mut s, 4), [0x40, 0x02, 0x00, 0x01], "PUBACK");
}

/// Above `memory_limit` a large frame gets no buffer of its own and is read as it arrives
/// into the connection's usual buffer: still delivered intact.
#[test]
fn large_publish_without_room_for_its_own_buffer_is_still_read_whole() {
    // Two frames of 3 MiB being received fit within 7 MiB, the third does not.
    let b = Broker::start("memory_limit = 7340032\n");
    let mut sub = subscribed(b.addr(), "room-sub", "room/#", 0);
    let big = payload(3 << 20);
    let frames: Vec<Vec<u8>> = (0..3)
        .map(|i| publish_packet(format!("room/{i}").as_bytes(), 0, 0, &big, false))
        .collect();
    let mut pubs: Vec<TcpStream> = (0..3)
        .map(|i| raw_connected(b.addr(), &format!("room-pub-{i}")))
        .collect();
    for (p, f) in pubs.iter_mut().zip(&frames) {
        p.write_all(&f[..100_000]).expect("write start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Finished in order, each delivered (and freed) before the next: the first two give their
    // charges back as they complete, the third never had one.
    for (i, (p, f)) in pubs.iter_mut().zip(&frames).enumerate() {
        p.write_all(&f[100_000..]).expect("write rest");
        let (topic, got) = next_publish(&mut sub);
        assert_eq!(topic, format!("room/{i}"));
        assert!(got == big, "payload {i} differs ({} bytes)", got.len());
    }
}
