//! Queues on disk (issue 16): an offline or backlogged persistent session's messages live
//! in its spool, not in memory; they come back in order, with DUP and their packet ids
//! for what was in flight, across disconnections, SIGKILL and restarts.

use std::time::Duration;

use super::common::packets::{PUBACK, PUBLISH};
use super::common::raw::{Next, Raw};
use super::common::Broker;
use super::{durable_broker, kill_and_restart, store_dir, WAIT};

/// Publishes `n` QoS 1 messages `prefix-<i>` of `size` bytes on `topic`, 100 in flight at
/// a time, and waits for every PUBACK.
fn publish_many(b: &Broker, id: &str, topic: &str, prefix: &str, n: usize, size: usize) {
    let (mut p, _) = Raw::connect(b, id, true, 60, None);
    let mut pkid: u16 = 0;
    let mut sent = 0;
    while sent < n {
        let batch = (n - sent).min(100);
        for i in sent..sent + batch {
            pkid = pkid % 60_000 + 1;
            let mut payload = format!("{prefix}-{i}-").into_bytes();
            payload.resize(size.max(payload.len()), b'.');
            p.send(&super::common::packets::publish311(
                topic, &payload, 1, pkid, false, false,
            ));
        }
        for _ in 0..batch {
            let ack = p.control();
            assert_eq!(ack.kind(), PUBACK, "{ack:?}");
        }
        sent += batch;
    }
    p.go_offline(b);
}

/// The message number in a payload `prefix-<i>-...`.
fn number(payload: &[u8]) -> usize {
    let text = String::from_utf8_lossy(payload);
    let mut parts = text.split('-');
    parts.next();
    parts
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a numbered payload: {text:?}"))
}

/// Receives (acknowledging) until `n` PUBLISHes came; returns their numbers.
fn receive(sub: &mut Raw, n: usize) -> Vec<usize> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match sub.next_within(WAIT) {
            Next::Packet(p) if p.kind() == PUBLISH => {
                let publish = p.publish();
                sub.ack(PUBACK, publish.pkid);
                got.push(number(&publish.payload));
            }
            other => panic!("after {} of {n} PUBLISHes: {other:?}", got.len()),
        }
    }
    got
}

/// Bytes in the store's spool files.
fn spool_bytes(b: &Broker) -> u64 {
    std::fs::read_dir(store_dir(b).join("spool"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// 20,000 messages of 1 KiB for an offline subscriber take memory for their positions,
/// not their bytes; SIGKILL and a restart lose none, the restart does not read them into
/// memory, and they arrive in order.
#[test]
fn an_offline_backlog_lives_on_disk_survives_sigkill_and_arrives_in_order() {
    const N: usize = 20_000;
    let mut b = durable_broker("");
    let (mut sub, _) = Raw::connect(&b, "spool-sub", false, 60, None);
    assert_eq!(sub.subscribe(1, &[("spool/#", 1)]), [1]);
    sub.go_offline(&b);
    let before = b.rss_kib();
    publish_many(&b, "spool-pub", "spool/a", "m", N, 1024);
    let after = b.rss_kib();
    let on_disk = spool_bytes(&b);
    eprintln!(
        "{N} x 1 KiB queued offline: RSS {before} -> {after} KiB, spool files {on_disk} bytes"
    );
    assert!(on_disk > (N * 1024) as u64, "spooled: {on_disk} bytes");
    assert!(
        after.saturating_sub(before) < 12 * 1024,
        "20 MiB queued offline grew RSS by {} KiB",
        after.saturating_sub(before)
    );

    let loaded = kill_and_restart(&mut b);
    assert_eq!(
        (loaded.sessions, loaded.queued),
        (1, N as u64),
        "{}",
        loaded.line
    );
    let restarted = b.rss_kib();
    eprintln!("after SIGKILL and restart: RSS {restarted} KiB");
    assert!(
        restarted < 32 * 1024,
        "restart read the backlog into memory: RSS {restarted} KiB"
    );

    let (mut sub, present) = Raw::connect(&b, "spool-sub", false, 60, None);
    assert!(present);
    let got = receive(&mut sub, N);
    assert_eq!(
        got,
        (0..N).collect::<Vec<_>>(),
        "every message, once, in order"
    );
    sub.expect_quiet(Duration::from_millis(300), "nothing more");
}

/// A client that leaves in the middle of its backlog gets what it had not acknowledged
/// again, first, with DUP set and the same packet ids [MQTT-4.4.0-1], then the rest in
/// order; what it acknowledged never comes back.
#[test]
fn mqtt_4_4_0_1_a_spooled_backlog_resent_after_reconnect_keeps_packet_ids_and_order() {
    const N: usize = 3_000;
    let b = durable_broker("max_inflight_messages = 40\n");
    let (mut sub, _) = Raw::connect(&b, "spool-dup", false, 60, None);
    assert_eq!(sub.subscribe(1, &[("dup/#", 1)]), [1]);
    sub.go_offline(&b);
    publish_many(&b, "spool-dup-pub", "dup/a", "d", N, 64);

    let (mut sub, _) = Raw::connect(&b, "spool-dup", false, 60, None);
    // Acknowledge the first 500, then take 40 more without acknowledging.
    assert_eq!(receive(&mut sub, 500), (0..500).collect::<Vec<_>>());
    let mut unacked = Vec::new();
    for _ in 0..40 {
        let p = sub.recv_publish();
        assert!(!p.dup);
        unacked.push((number(&p.payload), p.pkid));
    }
    assert_eq!(
        unacked.iter().map(|u| u.0).collect::<Vec<_>>(),
        (500..540).collect::<Vec<_>>()
    );
    sub.go_offline(&b);

    let (mut sub, present) = Raw::connect(&b, "spool-dup", false, 60, None);
    assert!(present);
    for (n, pkid) in &unacked {
        let p = sub.recv_publish();
        assert!(p.dup, "message {n} is sent again with DUP");
        assert_eq!((number(&p.payload), p.pkid), (*n, *pkid));
        sub.ack(PUBACK, p.pkid);
    }
    assert_eq!(receive(&mut sub, N - 540), (540..N).collect::<Vec<_>>());
    sub.expect_quiet(Duration::from_millis(300), "nothing more");
}

/// A connected subscriber that falls far behind (more than 4,096 queued) has the rest
/// spooled; a memory queue it leaves with goes to the spool behind what is there. Across
/// SIGKILL, everything arrives once and in order.
#[test]
fn a_backlog_of_a_connected_subscriber_and_the_queue_it_leaves_with_keep_their_order() {
    const FIRST: usize = 6_000;
    const SECOND: usize = 1_000;
    let mut b = durable_broker("");
    let (mut sub, _) = Raw::connect(&b, "spool-slow", false, 60, None);
    assert_eq!(sub.subscribe(1, &[("slow/#", 1)]), [1]);
    // Connected but not reading: its queue grows past what is held in memory.
    publish_many(&b, "spool-slow-pub", "slow/a", "s", FIRST, 64);
    assert!(spool_bytes(&b) > 0, "a long queue spills to the spool");
    assert_eq!(receive(&mut sub, FIRST), (0..FIRST).collect::<Vec<_>>());
    // Then it leaves with a short memory queue (it is not reading again).
    publish_many(&b, "spool-slow-pub", "slow/a", "s", SECOND, 64);
    drop(sub);
    std::thread::sleep(Duration::from_millis(300));
    kill_and_restart(&mut b);
    let (mut sub, present) = Raw::connect(&b, "spool-slow", false, 60, None);
    assert!(present);
    let got = receive(&mut sub, SECOND);
    assert_eq!(got, (0..SECOND).collect::<Vec<_>>());
    sub.expect_quiet(Duration::from_millis(300), "nothing more");
}
