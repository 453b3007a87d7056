//! The `$SYS/broker/...` topics (issue 14), read with the real Mosquitto clients against
//! the real binary: values checked against known traffic, Mosquitto's formats, retained
//! delivery on subscribe, `sys_interval = 0`, who may read `$SYS` and that nobody may
//! write it. docs/monitoring.md lists the topics.
//!
//! `$SYS` values are published every `sys_interval` seconds, and only when they changed:
//! a test waits for the value it expects (bounded by [`PATIENCE`], never by a timing it
//! asserts) and checks every value it saw on the way, so that a count that ever went
//! past the truth fails.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::mosquitto::*;
use common::*;

/// How long a test waits for the values it expects before it fails (a few intervals of
/// one second each would do; the rest is room for a loaded machine).
const PATIENCE: Duration = Duration::from_secs(60);

/// A midge that updates `$SYS` every second, with `extra` configuration.
fn broker(extra: &str) -> Broker {
    start_broker(&format!("sys_interval = 1\n{extra}"))
}

/// `mosquitto_sub` on `topics`, printing what it receives until killed.
fn reader(b: &Broker, topics: &[&str]) -> Sub {
    let mut args = vec!["-W", "120"];
    for t in topics {
        args.extend(["-t", t]);
    }
    let mut sub = Sub::spawn(b.port, &args);
    sub.wait_subscribed(b);
    sub
}

/// Reads messages until the latest value of every topic in `want` is the one given,
/// passing each message to `check` on the way (with how many came before it). Returns
/// the latest value of every topic seen.
fn wait_values(
    sub: &mut Sub,
    b: &Broker,
    want: &[(&str, &str)],
    mut check: impl FnMut(&Msg, usize),
) -> HashMap<String, String> {
    let deadline = Instant::now() + PATIENCE;
    let mut latest: HashMap<String, String> = HashMap::new();
    let mut seen = 0;
    loop {
        if want
            .iter()
            .all(|(t, v)| latest.get(*t).map(String::as_str) == Some(*v))
        {
            return latest;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(msg) = sub.next_msg(left) else {
            panic!(
                "$SYS did not reach {want:?}; latest values {latest:?}\nreader output:\n{}\nbroker log:\n{}",
                sub.output(),
                b.log_tail(40)
            );
        };
        check(&msg, seen);
        seen += 1;
        latest.insert(msg.topic.clone(), msg.payload.clone());
    }
}

/// A persistent session (`id`) subscribed to `topic` at QoS 1, left offline.
fn offline_subscriber(b: &Broker, id: &str, topic: &str) {
    let sub = Sub::spawn(b.port, &["-c", "-i", id, "-q", "1", "-t", topic, "-E"]);
    let (status, _, output) = sub.finish(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "mosquitto_sub -E did not subscribe and exit cleanly:\n{output}"
    );
}

/// Publishes `n` messages on one connection at `qos`.
fn publish_n(b: &Broker, topic: &str, qos: u8, n: usize) {
    let lines: String = (1..=n).map(|i| format!("m{i}\n")).collect();
    let out = run_tool(
        "mosquitto_pub",
        b,
        &["-q", &qos.to_string(), "-t", topic, "-l"],
        Some(&lines),
    );
    assert!(
        out.status.success(),
        "mosquitto_pub -l failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The topic [`until_marker`] waits for.
const MARKER: &str = "marker/sys";

/// Subscribes to `filters` and [`MARKER`], publishes to the marker, and returns what
/// arrived up to the marker. Retained messages are queued when the SUBSCRIBE is handled,
/// before its SUBACK is written, so every retained `$SYS` message the filters reach
/// arrives before the marker (which is published after the SUBACK).
fn received_before_marker(b: &Broker, filters: &[&str]) -> Vec<Msg> {
    let mut all = filters.to_vec();
    all.push(MARKER);
    let mut sub = reader(b, &all);
    publish(b, &["-q", "1", "-t", MARKER, "-m", "here"]);
    until_marker(&mut sub, b)
}

/// What `sub` receives before the marker.
fn until_marker(sub: &mut Sub, b: &Broker) -> Vec<Msg> {
    let deadline = Instant::now() + PATIENCE;
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub.next_msg(left) {
            Some(m) if m.topic == MARKER => return got,
            Some(m) => got.push(m),
            None => panic!(
                "the marker did not arrive; output:\n{}\nbroker log:\n{}",
                sub.output(),
                b.log_tail(40)
            ),
        }
    }
}

#[test]
fn sys_is_on_by_default_and_its_topics_arrive_retained_in_mosquitto_formats() {
    // The default sys_interval (10 s): the first update is made at start.
    let b = start_broker("");
    let mut sub = reader(&b, &["$SYS/broker/#"]);
    // Every topic below, at least: read until all have come.
    let counts = [
        "clients/connected",
        "clients/disconnected",
        "clients/total",
        "clients/maximum",
        "clients/expired",
        "messages/received",
        "messages/sent",
        "messages/stored",
        "messages/inflight",
        "publish/messages/received",
        "publish/messages/sent",
        "publish/messages/dropped",
        "bytes/received",
        "bytes/sent",
        "subscriptions/count",
        "retained messages/count",
        "heap/current",
        "queues/depth",
        "queues/bytes",
        "store/bytes",
        "store/segments",
        "store/commits",
        "store/failed",
    ];
    let loads: Vec<String> = [
        "messages/received",
        "messages/sent",
        "bytes/received",
        "bytes/sent",
        "publish/received",
        "publish/sent",
        "publish/dropped",
        "connections",
        "sockets",
    ]
    .iter()
    .flat_map(|k| ["1min", "5min", "15min"].map(|w| format!("load/{k}/{w}")))
    .collect();
    let mut wanted: Vec<String> = counts.iter().map(|t| t.to_string()).collect();
    wanted.extend(loads.iter().cloned());
    wanted.extend(["version".to_string(), "uptime".to_string()]);
    let mut retained: HashMap<String, String> = HashMap::new();
    let deadline = Instant::now() + PATIENCE;
    while !wanted
        .iter()
        .all(|t| retained.contains_key(&format!("$SYS/broker/{t}")))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(m) = sub.next_msg(left) else {
            panic!("not every topic came: {retained:?}");
        };
        // Retained messages come first, queued at SUBSCRIBE; a live update (RETAIN 0) can
        // only follow them, for a topic already seen.
        if !retained.contains_key(&m.topic) {
            assert!(m.retain, "{m:?} is not retained");
        }
        assert_eq!(m.qos, 0, "{m:?}");
        retained.insert(m.topic, m.payload);
    }
    let get = |t: &str| {
        retained
            .get(&format!("$SYS/broker/{t}"))
            .unwrap_or_else(|| panic!("no {t} among {retained:?}"))
            .clone()
    };
    assert_eq!(
        get("version"),
        format!("midge version {}", env!("CARGO_PKG_VERSION"))
    );
    let uptime = get("uptime");
    let secs = uptime
        .strip_suffix(" seconds")
        .unwrap_or_else(|| panic!("uptime {uptime:?}"));
    assert!(secs.parse::<u64>().is_ok(), "uptime {uptime:?}");
    for t in counts {
        let v = get(t);
        assert!(v.parse::<u64>().is_ok(), "{t} = {v:?} is not a count");
    }
    // Load averages: two decimals, as Mosquitto's %.2f.
    for t in &loads {
        let v = get(t);
        let (whole, decimals) = v.split_once('.').unwrap_or_else(|| panic!("{t} = {v:?}"));
        assert!(
            whole.parse::<u64>().is_ok() && decimals.len() == 2,
            "{t} = {v:?}"
        );
    }
    // A durable store (the default) that has not failed.
    assert_eq!(get("store/failed"), "0");
    assert_eq!(get("store/segments"), "1");
}

#[test]
fn sys_publish_received_and_sent_are_exact_after_known_traffic() {
    let b = broker("");
    // Two subscribers, one at QoS 0 and one at QoS 1, each stopping after 5 messages.
    let mut subs: Vec<Sub> = ["0", "1"]
        .iter()
        .map(|q| {
            let mut s = Sub::spawn(b.port, &["-q", q, "-t", "traffic/t", "-C", "5", "-W", "30"]);
            s.wait_subscribed(&b);
            s
        })
        .collect();
    publish_n(&b, "traffic/t", 1, 5);
    for s in subs.drain(..) {
        let (status, msgs, output) = s.finish(Duration::from_secs(40));
        assert!(
            status.is_some_and(|s| s.success()) && msgs.len() == 5,
            "{output}"
        );
    }
    // 5 PUBLISH received; 10 sent to the subscribers. The reader's own $SYS messages are
    // PUBLISHes sent too: the value the k-th one it gets carries can count at most the
    // k - 1 before it, and counts exactly those once they were written before the update.
    let mut r = reader(
        &b,
        &[
            "$SYS/broker/publish/messages/received",
            "$SYS/broker/publish/messages/sent",
        ],
    );
    let deadline = Instant::now() + PATIENCE;
    let mut got_exact = false;
    let mut seen = 0u64;
    while !got_exact {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = r
            .next_msg(left)
            .unwrap_or_else(|| panic!("no exact publish/messages/sent; reader:\n{}", r.output()));
        let v: u64 = m.payload.parse().expect("a count");
        if m.topic.ends_with("/received") {
            assert!(v <= 5, "publish/messages/received = {v} after 5 PUBLISH");
        } else {
            let most = 10 + seen;
            assert!(v <= most, "publish/messages/sent = {v}, at most {most}");
            got_exact = v == most;
        }
        seen += 1;
    }
    // The received count settles at exactly 5 (retained, so a new reader sees it).
    let mut r2 = reader(&b, &["$SYS/broker/publish/messages/received"]);
    wait_values(
        &mut r2,
        &b,
        &[("$SYS/broker/publish/messages/received", "5")],
        |m, _| {
            let v: u64 = m.payload.parse().expect("a count");
            assert!(v <= 5, "publish/messages/received = {v}");
        },
    );
}

#[test]
fn sys_clients_subscriptions_and_retained_counts_match_the_known_state() {
    let b = broker("");
    for i in 0..3 {
        publish(
            &b,
            &["-r", "-q", "1", "-t", &format!("kept/{i}"), "-m", "v"],
        );
    }
    // Two connected clients with three subscriptions between them.
    let mut one = Sub::spawn(b.port, &["-t", "a/1", "-t", "a/2", "-W", "120"]);
    one.wait_subscribed(&b);
    let mut two = Sub::spawn(b.port, &["-t", "b/1", "-W", "120"]);
    two.wait_subscribed(&b);
    // And one persistent session offline, with one subscription.
    offline_subscriber(&b, "sys-offline", "c/1");

    // The reader is the third client connected, with three subscriptions of its own.
    let mut r = reader(
        &b,
        &[
            "$SYS/broker/clients/+",
            "$SYS/broker/subscriptions/count",
            "$SYS/broker/retained messages/count",
        ],
    );
    wait_values(
        &mut r,
        &b,
        &[
            ("$SYS/broker/clients/connected", "3"),
            ("$SYS/broker/clients/disconnected", "1"),
            ("$SYS/broker/clients/total", "4"),
            ("$SYS/broker/subscriptions/count", "7"),
            // The broker's own $SYS retained messages are not counted.
            ("$SYS/broker/retained messages/count", "3"),
        ],
        |_, _| {},
    );
    drop((one, two));
}

#[test]
fn sys_queue_depth_of_an_offline_persistent_subscriber_is_exact() {
    let b = broker("");
    offline_subscriber(&b, "sys-slow", "slow/t");
    publish_n(&b, "slow/t", 1, 7);
    let mut r = reader(&b, &["$SYS/broker/queues/#"]);
    wait_values(
        &mut r,
        &b,
        &[
            ("$SYS/broker/queues/depth", "7"),
            ("$SYS/broker/queues/deepest/client", "sys-slow"),
            ("$SYS/broker/queues/deepest/depth", "7"),
        ],
        |m, _| {
            if m.topic.ends_with("depth") {
                let v: u64 = m.payload.parse().expect("a count");
                assert!(v <= 7, "{m:?}");
            }
        },
    );
}

#[test]
fn sys_drops_by_reason_are_exact_for_a_drop_new_overflow() {
    // Three messages fit in a queue; the listener drops new ones beyond. (The limit is
    // every session's, the readers' too: each reads at most three topics, whose retained
    // values fit its queue, after the traffic.)
    let b = broker("max_queued_messages = 3\n[[listener]]\nqueue_full = \"drop_new\"\n");
    offline_subscriber(&b, "sys-full", "full/t");
    // 10 QoS 1: 3 queued, 7 dropped as new. 2 QoS 0: not kept for an offline session.
    publish_n(&b, "full/t", 1, 10);
    publish_n(&b, "full/t", 0, 2);
    let at_most = |limit: u64| {
        move |m: &Msg, _: usize| {
            let v: u64 = m.payload.parse().expect("a count");
            assert!(v <= limit, "{m:?}");
        }
    };
    let mut r = reader(
        &b,
        &[
            "$SYS/broker/publish/messages/dropped",
            "$SYS/broker/publish/messages/dropped/queue_full_drop_new",
            "$SYS/broker/publish/messages/dropped/qos0_offline",
        ],
    );
    // The total is the sum over every reason: 7 + 2 leaves 0 for all the others.
    wait_values(
        &mut r,
        &b,
        &[
            ("$SYS/broker/publish/messages/dropped", "9"),
            (
                "$SYS/broker/publish/messages/dropped/queue_full_drop_new",
                "7",
            ),
            ("$SYS/broker/publish/messages/dropped/qos0_offline", "2"),
        ],
        at_most(9),
    );
    drop(r);
    let mut r = reader(
        &b,
        &[
            "$SYS/broker/queues/depth",
            "$SYS/broker/queues/deepest/depth",
            "$SYS/broker/publish/messages/dropped",
        ],
    );
    wait_values(
        &mut r,
        &b,
        &[
            ("$SYS/broker/queues/depth", "3"),
            ("$SYS/broker/queues/deepest/depth", "3"),
            ("$SYS/broker/publish/messages/dropped", "9"),
        ],
        at_most(9),
    );
}

#[test]
fn sys_interval_0_publishes_nothing() {
    let b = start_broker("sys_interval = 0\n");
    let got = received_before_marker(&b, &["$SYS/#"]);
    assert!(got.is_empty(), "$SYS with sys_interval = 0: {got:?}");
    // The same reading finds the version when $SYS is on.
    let on = broker("");
    let got = received_before_marker(&on, &["$SYS/#"]);
    assert!(
        got.iter().any(|m| m.topic == "$SYS/broker/version"),
        "{got:?}"
    );
}

#[test]
fn mqtt_4_7_2_1_a_hash_subscription_gets_no_sys_topics() {
    let b = broker("");
    let got = received_before_marker(&b, &["#", "+/broker/#"]);
    assert!(
        got.iter().all(|m| !m.topic.starts_with('$')),
        "a # or +/... subscription received $SYS: {got:?}"
    );
}

#[test]
fn sys_is_read_only_where_an_acl_dollar_rule_allows_it() {
    let dir = TempDir::new("sys-acl");
    let without = dir.path().join("without");
    let with = dir.path().join("with");
    std::fs::write(&without, "topic readwrite #\n").expect("write acl");
    std::fs::write(&with, "topic readwrite #\ntopic read $SYS/#\n").expect("write acl");
    // `#` does not reach $SYS: the subscription to $SYS/# is refused, nothing arrives.
    let b = broker(&format!("acl_file = {:?}\n", without.display().to_string()));
    let got = received_before_marker(&b, &["$SYS/#"]);
    assert!(got.is_empty(), "without a $SYS rule: {got:?}");
    // A `$` rule lets it read.
    let b = broker(&format!("acl_file = {:?}\n", with.display().to_string()));
    let got = received_before_marker(&b, &["$SYS/#"]);
    assert!(
        got.iter().any(|m| m.topic == "$SYS/broker/version"),
        "with topic read $SYS/#: {got:?}"
    );
}

#[test]
fn no_client_can_publish_to_sys_with_or_without_an_acl() {
    let dir = TempDir::new("sys-write");
    let acl = dir.path().join("acl");
    // Even an ACL that grants writing $SYS does not let a client write it.
    std::fs::write(&acl, "topic readwrite #\ntopic readwrite $SYS/#\n").expect("write acl");
    for extra in [
        String::new(),
        format!("acl_file = {:?}\n", acl.display().to_string()),
    ] {
        let b = broker(&extra);
        // A retained forgery of a broker topic, and a plain PUBLISH to a new one, at QoS
        // 0 and 1.
        publish(
            &b,
            &["-r", "-q", "1", "-t", "$SYS/broker/version", "-m", "forged"],
        );
        // A reader of $SYS/x that was there before the forgeries.
        let mut before = reader(&b, &["$SYS/x", MARKER]);
        publish(&b, &["-q", "1", "-t", "$SYS/x", "-m", "forged"]);
        publish(&b, &["-q", "0", "-t", "$SYS/x", "-m", "forged"]);
        let got = received_before_marker(&b, &["$SYS/broker/version", "$SYS/x"]);
        assert!(
            got.iter().all(|m| m.payload != "forged"),
            "{extra:?}: {got:?}"
        );
        assert!(
            got.iter()
                .any(|m| m.topic == "$SYS/broker/version" && m.payload.starts_with("midge ")),
            "{extra:?}: {got:?}"
        );
        let live = until_marker(&mut before, &b);
        assert!(live.is_empty(), "{extra:?}: {live:?}");
    }
}
