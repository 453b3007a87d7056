//! midge's own limits and slow-consumer protection: connection limits, and a subscriber that
//! stops reading must not block publishers or other subscribers, nor grow memory without
//! bound. (Message-size and id/topic-length limits are in malformed_input.rs and
//! v311/.)

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// A SUBSCRIBE packet for one filter.
fn subscribe(pkid: u16, filter: &str, qos: u8) -> Vec<u8> {
    subscribe_packet(pkid, &[(filter.as_bytes(), qos)])
}

/// A PUBLISH packet.
fn publish(topic: &str, payload: &[u8], qos: u8, pkid: u16) -> Vec<u8> {
    publish_packet(topic.as_bytes(), qos, pkid, payload, false)
}

fn subscribed(addr: std::net::SocketAddr, id: &str, filter: &str, qos: u8) -> TcpStream {
    let mut s = raw_connected(addr, id);
    s.write_all(&subscribe(1, filter, qos)).expect("SUBSCRIBE");
    assert_eq!(
        read_exact(&mut s, 5),
        [0x90, 0x03, 0x00, 0x01, qos],
        "SUBACK"
    );
    s
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Connections over a listener's `max_connections` are closed at once, without CONNACK;
/// the ones already connected keep working, and a freed slot can be used again.
#[test]
fn limit_listener_max_connections_refuses_extra_connections() {
    let port2 = free_port();
    let b = Broker::start(&format!(
        "[[listener]]\nbind = \"127.0.0.1\"\nport = {}\nmax_connections = 2\n\
         [[listener]]\nbind = \"127.0.0.1\"\nport = {port2}\n",
        free_port()
    ));
    let mut first = raw_connected(b.addr(), "one");
    let _second = raw_connected(b.addr(), "two");
    let mut third = raw(b.addr());
    let _ = third.write_all(&connect_packet("three"));
    assert!(is_closed(&mut third), "third connection must be closed");
    assert!(b.wait_event("connection_limit", Duration::from_secs(5)));

    // The other listener has no limit of its own.
    let other = std::net::SocketAddr::from(([127, 0, 0, 1], port2));
    let _elsewhere = raw_connected(other, "elsewhere");

    // The connected clients are unaffected.
    first.write_all(&[0xC0, 0x00]).expect("PINGREQ");
    assert_eq!(read_exact(&mut first, 2), [0xD0, 0x00]);

    // Closing one frees its slot.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = raw(b.addr());
        let _ = s.write_all(&connect_packet("four"));
        let mut ack = [0u8; 4];
        if s.read_exact(&mut ack).is_ok() {
            assert_eq!(ack, [0x20, 0x02, 0x00, 0x00]);
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The global `max_connections` counts every listener together.
#[test]
fn limit_global_max_connections_counts_all_listeners() {
    let port2 = free_port();
    let b = Broker::start(&format!(
        "max_connections = 2\n[[listener]]\nbind = \"127.0.0.1\"\nport = {}\n\
         [[listener]]\nbind = \"127.0.0.1\"\nport = {port2}\n",
        free_port()
    ));
    let other = std::net::SocketAddr::from(([127, 0, 0, 1], port2));
    let _a = raw_connected(b.addr(), "a");
    let _b = raw_connected(other, "b");
    let mut c = raw(other);
    let _ = c.write_all(&connect_packet("c"));
    assert!(
        is_closed(&mut c),
        "connection over the global limit must be closed"
    );
}

/// A subscriber that never reads (QoS 0 and QoS 1) does not slow a QoS 1 publisher or a
/// healthy subscriber; its queue stays bounded (drops are counted and logged once per
/// interval), and the broker's memory does not grow with what was published.
#[test]
fn limit_slow_consumer_never_blocks_publishers_or_others() {
    let mut b = Broker::start("max_queued_messages = 4000\ndrop_log_interval = 3600\n");
    let pid = b.child.as_ref().expect("running").id();
    // Two stalled subscribers: they never read a byte after SUBACK.
    let _stalled_q0 = subscribed(b.addr(), "stalled-q0", "load/#", 0);
    let _stalled_q1 = subscribed(b.addr(), "stalled-q1", "load/#", 1);
    // A healthy subscriber, drained by a thread.
    let mut healthy = subscribed(b.addr(), "healthy", "load/#", 0);
    let reader = std::thread::spawn(move || {
        let mut total = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        healthy
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        while let Ok(n) = healthy.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });

    // 60,000 messages of 1 KiB = 60 MiB at QoS 1, acknowledged one window at a time.
    let rss_before = rss_kib(pid);
    let mut publ = raw_connected(b.addr(), "publisher");
    let payload = vec![b'x'; 1024];
    let count: u16 = 60_000;
    let window = 100u16;
    let started = Instant::now();
    let mut sent = 0u16;
    while sent < count {
        let batch = window.min(count - sent);
        let mut bytes = Vec::new();
        for i in 0..batch {
            bytes.extend(publish("load/t", &payload, 1, sent + i + 1));
        }
        publ.write_all(&bytes).expect("publish");
        let acks = read_exact(&mut publ, 4 * batch as usize);
        for (i, ack) in acks.chunks(4).enumerate() {
            assert_eq!(ack[0], 0x40, "PUBACK expected");
            assert_eq!(u16::from_be_bytes([ack[2], ack[3]]), sent + i as u16 + 1);
        }
        sent += batch;
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "publisher stalled at {sent}"
        );
    }
    let rss_after = rss_kib(pid);

    // The healthy subscriber got every message: its queue (4000 messages) is far deeper
    // than one publisher window (100), so a client that reads loses nothing.
    let remaining = 2 + "load/t".len() + payload.len();
    let per_message = 1 + 2 + remaining;
    let received = reader.join().expect("reader");
    assert_eq!(
        received,
        per_message * count as usize,
        "healthy subscriber bytes"
    );

    // Drops are counted and logged, once per interval per client.
    let log = b.log();
    let reports = event_lines(&log, "queue_full", &[]).len();
    assert!(reports >= 1, "drops must be logged");
    assert!(
        reports <= 2,
        "at most one report per stalled client per interval, got {reports}"
    );
    let healthy_drops = event_lines(&log, "queue_full", &[("client_id", "healthy")]).len();
    assert_eq!(
        healthy_drops, 0,
        "the reading subscriber must not lose messages"
    );

    // 60 MiB went through; the stalled clients may hold their queues of 4000 plus what
    // fits in socket and write buffers, far less than what was published.
    // (4000-message queues of 1 KiB for two stalled clients: about 8 MiB.)
    let grown_mib = rss_after.saturating_sub(rss_before) / 1024;
    assert!(
        grown_mib < 32,
        "broker RSS grew by {grown_mib} MiB while 60 MiB passed through"
    );
    assert!(b.is_running());
}

/// A 1 MiB message to several subscribers arrives intact and in order around small ones
/// (the large payload is written from the shared message buffer, not copied per
/// subscriber; this checks the bytes on the wire are still exactly right).
#[test]
fn large_payload_fan_out_arrives_intact_between_small_messages() {
    let b = Broker::start("");
    let mut subs: Vec<TcpStream> = (0..3)
        .map(|i| subscribed(b.addr(), &format!("big-sub-{i}"), "big/#", 0))
        .collect();
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let mut publ = raw_connected(b.addr(), "big-pub");
    let mut bytes = publish("big/a", b"before", 0, 0);
    bytes.extend(publish("big/b", &big, 0, 0));
    bytes.extend(publish("big/c", b"after", 0, 0));
    publ.write_all(&bytes).expect("publish");
    for s in &mut subs {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let got = read_exact(s, bytes.len());
        assert!(got == bytes, "subscriber received different bytes");
    }
}

/// Reads one PUBLISH (QoS 1) from a raw subscriber: returns (packet id, payload).
fn read_qos1_publish(s: &mut TcpStream) -> (u16, Vec<u8>) {
    let head = read_exact(s, 2);
    assert_eq!(
        head[0] & 0xF6,
        0x32,
        "QoS 1 PUBLISH expected, got {:#04x}",
        head[0]
    );
    let body = read_exact(s, head[1] as usize);
    let topic_len = u16::from_be_bytes([body[0], body[1]]) as usize;
    let pkid = u16::from_be_bytes([body[2 + topic_len], body[3 + topic_len]]);
    (pkid, body[4 + topic_len..].to_vec())
}

/// Under `queue_full = "backpressure"` with a live subscriber that acknowledges slowly,
/// the publisher's PUBACKs are withheld while the queue is full and released, in order,
/// as soon as the subscriber makes room: nothing is dropped, nothing waits for a timer.
#[test]
fn backpressure_releases_withheld_acks_as_a_live_subscriber_drains() {
    let b = Broker::start(&format!(
        "max_queued_messages = 2\nmax_inflight_messages = 1\n\
         [[listener]]\nbind = \"127.0.0.1\"\nport = {}\nqueue_full = \"backpressure\"\n",
        free_port()
    ));
    let mut sub = subscribed(b.addr(), "bp-sub", "bp/#", 1);
    let mut publ = raw_connected(b.addr(), "bp-pub");
    let mut bytes = Vec::new();
    for i in 1..=8u16 {
        bytes.extend(publish("bp/t", format!("m{i}").as_bytes(), 1, i));
    }
    publ.write_all(&bytes).expect("publish");

    // One message inflight to the subscriber and two queued: the rest are withheld.
    let (first, payload) = read_qos1_publish(&mut sub);
    assert_eq!(payload, b"m1");
    publ.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut acked = Vec::new();
    let mut buf = [0u8; 4];
    while publ.read_exact(&mut buf).is_ok() {
        acked.push(u16::from_be_bytes([buf[2], buf[3]]));
    }
    assert!(
        acked.len() < 8,
        "all PUBACKs arrived although the queue was full: {acked:?}"
    );

    // The subscriber now acknowledges each message; every one arrives, in order, and the
    // publisher gets all eight PUBACKs, in order.
    let mut pkid = first;
    for i in 2..=8 {
        sub.write_all(&[0x40, 0x02, (pkid >> 8) as u8, pkid as u8])
            .expect("PUBACK");
        let (next, payload) = read_qos1_publish(&mut sub);
        assert_eq!(payload, format!("m{i}").as_bytes());
        pkid = next;
    }
    sub.write_all(&[0x40, 0x02, (pkid >> 8) as u8, pkid as u8])
        .expect("PUBACK");
    publ.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    while acked.len() < 8 {
        publ.read_exact(&mut buf).expect("withheld PUBACK released");
        assert_eq!(buf[0], 0x40);
        acked.push(u16::from_be_bytes([buf[2], buf[3]]));
    }
    assert_eq!(acked, (1..=8).collect::<Vec<u16>>());
}
