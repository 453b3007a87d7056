//! Kill -9 at random moments while publishers publish to an offline persistent subscriber,
//! and while QoS 2 messages are being delivered: every acknowledged message is delivered,
//! QoS 2 exactly once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::common::packets::*;
use super::common::raw::{Next, Raw};
use super::common::rng::Rng;
use super::common::Broker;
use super::*;

// ---------------------------------------------------------------------------------------
// The crash scenario
// ---------------------------------------------------------------------------------------

/// QoS of each crash publisher (publisher i publishes at `CRASH_QOS[i]`).
const CRASH_QOS: [u8; 3] = [1, 2, 1];
/// Unacknowledged PUBLISHes each crash publisher keeps outstanding.
const CRASH_WINDOW: usize = 10;
/// Bound on the messages one crash publisher sends in one round.
const CRASH_MAX_PER_PUBLISHER: u64 = 50_000;
/// Kill delay range after the publishers are connected, milliseconds.
const CRASH_DELAY_MS: (u64, u64) = (20, 300);
const CRASH_SUBSCRIBER: &str = "crash-sub";

/// `MIDGE_CRASH_SEED` if set (to replay the kill delays of a failed run), else the clock.
fn crash_seed() -> u64 {
    if let Ok(s) = std::env::var("MIDGE_CRASH_SEED") {
        return s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("MIDGE_CRASH_SEED={s:?} is not a number"));
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// What one crash publisher saw before the broker died.
#[derive(Debug, Default)]
struct PubOutcome {
    /// Sequence numbers whose PUBACK (QoS 1) or PUBCOMP (QoS 2) arrived.
    acked: Vec<u64>,
    /// Messages sent: 0..sent.
    sent: u64,
    /// QoS 2 messages whose PUBREL was sent but whose PUBCOMP never came.
    released_unfinished: usize,
    /// Protocol surprises (acks for packet ids not in flight, unexpected packets).
    anomalies: Vec<String>,
}

/// Publishes "tag:seq" to `crash/<tag>` at `qos`, `CRASH_WINDOW` at a time, completing
/// each flow, until the connection dies (the broker is killed) or the bounds are reached.
fn crash_publisher(addr: SocketAddr, tag: String, qos: u8, ready: mpsc::Sender<()>) -> PubOutcome {
    let mut out = PubOutcome::default();
    let Ok(mut s) = TcpStream::connect_timeout(&addr, WAIT) else {
        return out;
    };
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(WAIT));
    if s.write_all(&connect311(&tag, true, 60, None)).is_err() {
        return out;
    }
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16384];
    // CONNACK
    loop {
        if let Some(p) = Pkt::take(&mut buf, false) {
            if p.byte1 != 0x20 || p.body != [0, 0] {
                out.anomalies.push(format!("{tag}: CONNACK {p:?}"));
                return out;
            }
            break;
        }
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return out,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
    let _ = ready.send(());
    let _ = s.set_read_timeout(Some(Duration::from_millis(20)));
    let topic = format!("crash/{tag}");
    let pkid_of = |seq: u64| (seq % 60_000) as u16 + 1;
    // packet id -> (seq, PUBREL sent)
    let mut inflight: HashMap<u16, (u64, bool)> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let mut batch = Vec::new();
        while inflight.len() < CRASH_WINDOW && out.sent < CRASH_MAX_PER_PUBLISHER {
            let seq = out.sent;
            let payload = format!("{tag}:{seq}");
            batch.extend(publish311(
                &topic,
                payload.as_bytes(),
                qos,
                pkid_of(seq),
                false,
                false,
            ));
            inflight.insert(pkid_of(seq), (seq, false));
            out.sent += 1;
        }
        if !batch.is_empty() && s.write_all(&batch).is_err() {
            break;
        }
        match s.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if inflight.is_empty() && out.sent >= CRASH_MAX_PER_PUBLISHER {
                    break;
                }
                continue;
            }
            Err(_) => break,
        }
        let mut reply = Vec::new();
        while let Some(p) = Pkt::take(&mut buf, false) {
            let entry = if p.body.len() >= 2 {
                inflight.get(&p.pkid()).copied()
            } else {
                None
            };
            match (p.byte1, entry) {
                (0x40, Some((seq, _))) if qos == 1 => {
                    out.acked.push(seq);
                    inflight.remove(&p.pkid());
                }
                (0x50, Some((seq, false))) if qos == 2 => {
                    inflight.insert(p.pkid(), (seq, true));
                    reply.extend(ack_bytes(PUBREL, p.pkid()));
                }
                (0x70, Some((seq, true))) if qos == 2 => {
                    out.acked.push(seq);
                    inflight.remove(&p.pkid());
                }
                _ => out.anomalies.push(format!("{tag}: unexpected {p:?}")),
            }
        }
        if !reply.is_empty() && s.write_all(&reply).is_err() {
            break;
        }
    }
    out.released_unfinished = inflight.values().filter(|(_, rel)| *rel).count();
    out
}

/// Everything known about one publisher of one kill point.
#[derive(Debug, Default)]
struct TagRecord {
    qos: u8,
    sent: u64,
    acked: Vec<u64>,
    /// (seq, delivered QoS) in arrival order, over every drain.
    delivered: Vec<(u64, u8)>,
}

/// Totals over kill points.
#[derive(Debug, Default)]
struct Summary {
    seed: u64,
    kill_points: usize,
    acknowledged: usize,
    delivered: usize,
    lost: Vec<String>,
    qos1_redeliveries: usize,
    qos2_duplicates: Vec<String>,
    order: Vec<String>,
    other: Vec<String>,
}

impl Summary {
    fn ok(&self) -> bool {
        self.lost.is_empty()
            && self.qos2_duplicates.is_empty()
            && self.order.is_empty()
            && self.other.is_empty()
    }

    fn line(&self) -> String {
        format!(
            "kill points {}, acknowledged {}, delivered {}, lost {}, qos1 redeliveries {}, \
             qos2 duplicates {}, order violations {}, other problems {}",
            self.kill_points,
            self.acknowledged,
            self.delivered,
            self.lost.len(),
            self.qos1_redeliveries,
            self.qos2_duplicates.len(),
            self.order.len(),
            self.other.len()
        )
    }

    fn details(&self) -> String {
        let mut s = String::new();
        for (what, list) in [
            ("lost (acknowledged, never delivered)", &self.lost),
            ("QoS 2 duplicates", &self.qos2_duplicates),
            ("order violations", &self.order),
            ("other problems", &self.other),
        ] {
            if !list.is_empty() {
                s.push_str(&format!("{what} ({}):\n", list.len()));
                for item in list.iter().take(20) {
                    s.push_str(&format!("  {item}\n"));
                }
            }
        }
        s
    }
}

/// One broker and store through many kill points: per kill point, [`CRASH_QOS`]
/// publishers publish to the offline persistent subscriber [`CRASH_SUBSCRIBER`] (QoS 2 on
/// `crash/#`), the broker is SIGKILLed after a random delay and restarted on the same
/// store, and the subscriber reconnects and takes everything, acknowledging it.
struct CrashRun {
    broker: Broker,
    rng: Rng,
    kill_points: usize,
    /// tag ("k<kill point>p<publisher>") -> record
    tags: BTreeMap<String, TagRecord>,
    other: Vec<String>,
}

impl CrashRun {
    fn new(config: &str, seed: u64) -> CrashRun {
        let broker = Broker::start(config);
        let (mut sub, present) = Raw::connect(&broker, CRASH_SUBSCRIBER, false, 60, None);
        assert!(
            !present,
            "a fresh store has no session for {CRASH_SUBSCRIBER}"
        );
        assert_eq!(sub.subscribe(1, &[("crash/#", 2)]), [2]);
        sub.go_offline(&broker);
        CrashRun {
            broker,
            rng: Rng::new(seed),
            kill_points: 0,
            tags: BTreeMap::new(),
            other: Vec::new(),
        }
    }

    /// One kill point; returns a one-line report.
    fn kill_point(&mut self) -> String {
        let k = self.kill_points;
        self.kill_points += 1;
        let delay = self.rng.range(CRASH_DELAY_MS.0, CRASH_DELAY_MS.1);
        let addr = self.broker.addr();

        let (ready_tx, ready_rx) = mpsc::channel();
        let handles: Vec<_> = CRASH_QOS
            .iter()
            .enumerate()
            .map(|(i, &qos)| {
                let tag = format!("k{k}p{i}");
                let ready = ready_tx.clone();
                let t = tag.clone();
                (
                    tag,
                    qos,
                    std::thread::spawn(move || crash_publisher(addr, t, qos, ready)),
                )
            })
            .collect();
        drop(ready_tx);
        // The delay counts from when every publisher is connected (bounded wait).
        let connected_by = Instant::now() + WAIT;
        let mut connected = 0;
        while connected < CRASH_QOS.len() {
            let left = connected_by.saturating_duration_since(Instant::now());
            match ready_rx.recv_timeout(left) {
                Ok(()) => connected += 1,
                Err(_) => break,
            }
        }
        if connected < CRASH_QOS.len() {
            self.other.push(format!(
                "kill point {k}: only {connected} of {} publishers connected within {WAIT:?}",
                CRASH_QOS.len()
            ));
        }
        std::thread::sleep(Duration::from_millis(delay));
        self.broker.kill();

        let mut acked_now = 0;
        let mut unfinished = 0;
        for (tag, qos, h) in handles {
            let o = h.join().expect("publisher thread panicked");
            acked_now += o.acked.len();
            unfinished += o.released_unfinished;
            self.other.extend(o.anomalies);
            self.tags.insert(
                tag,
                TagRecord {
                    qos,
                    sent: o.sent,
                    acked: o.acked,
                    delivered: Vec::new(),
                },
            );
        }

        // Restart on the same store.
        let from = self.broker.log().len();
        self.broker.spawn();
        let loaded = loaded_since(&self.broker, from);
        if loaded.dir != store_dir(&self.broker).display().to_string() {
            self.other.push(format!(
                "kill point {k}: the load line does not name the store {}: {}",
                store_dir(&self.broker).display(),
                loaded.line
            ));
        }
        // Every acknowledged message is queued for the offline subscriber.
        if loaded.queued < acked_now as u64 {
            self.other.push(format!(
                "kill point {k}: {acked_now} messages were acknowledged but the store loaded \
                 only {} queued messages: {}",
                loaded.queued, loaded.line
            ));
        }

        // A sentinel after everything: the subscriber's queue is FIFO.
        let (mut p, _) = Raw::connect(&self.broker, "crash-sentinel", true, 60, None);
        let end = format!("end:{k}");
        p.publish("crash/end", &end, 1, 1, false);
        drop(p);

        let (mut sub, present) = Raw::connect(&self.broker, CRASH_SUBSCRIBER, false, 60, None);
        assert!(
            present,
            "kill point {k}: {CRASH_SUBSCRIBER}'s persistent session is gone after the restart \
             (CONNACK session present 0); log:\n{}",
            self.broker.log_tail(60)
        );
        let got = sub.drain_until(|m| m.text() == end, Duration::from_secs(60), QUIET);
        sub.go_offline(&self.broker);

        let mut delivered_now = 0;
        for m in &got {
            let text = m.text();
            if text.starts_with("end:") {
                continue;
            }
            let parsed = text
                .split_once(':')
                .and_then(|(tag, seq)| Some((tag.to_owned(), seq.parse::<u64>().ok()?)));
            let Some((tag, seq)) = parsed else {
                self.other
                    .push(format!("kill point {k}: unknown payload {text:?}"));
                continue;
            };
            let Some(rec) = self.tags.get_mut(&tag) else {
                self.other
                    .push(format!("kill point {k}: unknown publisher in {text:?}"));
                continue;
            };
            if m.topic != format!("crash/{tag}") {
                self.other
                    .push(format!("{text:?} arrived on topic {:?}", m.topic));
            }
            rec.delivered.push((seq, m.qos));
            delivered_now += 1;
        }
        let lost_now: usize = (0..CRASH_QOS.len())
            .map(|i| {
                let rec = &self.tags[&format!("k{k}p{i}")];
                let seen: HashSet<u64> = rec.delivered.iter().map(|(s, _)| *s).collect();
                rec.acked.iter().filter(|s| !seen.contains(s)).count()
            })
            .sum();
        format!(
            "kill point {k}: killed {delay} ms after the publishers connected; acknowledged \
             {acked_now} (+{unfinished} QoS 2 with PUBREL sent, no PUBCOMP); load: {} \
             sessions, {} queued; delivered {delivered_now}; lost {lost_now}",
            loaded.sessions, loaded.queued
        )
    }

    /// Checks every kill point so far.
    fn summary(&self) -> Summary {
        let mut s = Summary {
            kill_points: self.kill_points,
            other: self.other.clone(),
            ..Summary::default()
        };
        for (tag, rec) in &self.tags {
            s.acknowledged += rec.acked.len();
            s.delivered += rec.delivered.len();
            let mut count: HashMap<u64, usize> = HashMap::new();
            for (seq, qos) in &rec.delivered {
                *count.entry(*seq).or_default() += 1;
                if *seq >= rec.sent {
                    s.other
                        .push(format!("{tag}:{seq} delivered but never published"));
                }
                if *qos != rec.qos {
                    s.other.push(format!(
                        "{tag}:{seq} published at QoS {} (subscription QoS 2) delivered at \
                         QoS {qos}",
                        rec.qos
                    ));
                }
            }
            for seq in &rec.acked {
                if !count.contains_key(seq) {
                    s.lost.push(format!("{tag}:{seq} (QoS {})", rec.qos));
                }
            }
            for (seq, n) in &count {
                if *n > 1 {
                    if rec.qos == 2 {
                        s.qos2_duplicates
                            .push(format!("{tag}:{seq} delivered {n} times"));
                    } else {
                        s.qos1_redeliveries += n - 1;
                    }
                }
            }
            // Order: the first occurrences of the sequence numbers must increase.
            let mut seen = HashSet::new();
            let mut last: Option<u64> = None;
            for (seq, _) in &rec.delivered {
                if seen.insert(*seq) {
                    if let Some(prev) = last {
                        if *seq < prev {
                            s.order
                                .push(format!("{tag}: {seq} first delivered after {prev}"));
                        }
                    }
                    last = Some(*seq);
                }
            }
        }
        s
    }
}

/// Runs `kill_points` kill points of the crash scenario on fresh brokers of `config`, a new
/// broker and store every `per_store` kill points; prints one line per kill point and the
/// summary, and returns the summary.
fn crash_scenario(config: &str, kill_points: usize, per_store: usize, label: &str) -> Summary {
    let seed = crash_seed();
    println!("{label}: seed {seed} (replay the kill delays with MIDGE_CRASH_SEED={seed})");
    let mut total = Summary::default();
    let mut rng = Rng::new(seed);
    let mut done = 0;
    while done < kill_points {
        let mut run = CrashRun::new(config, rng.next_u64());
        let n = per_store.min(kill_points - done);
        for _ in 0..n {
            let line = run.kill_point();
            println!("{label}: #{done} {line}");
            done += 1;
        }
        let s = run.summary();
        total.kill_points += s.kill_points;
        total.acknowledged += s.acknowledged;
        total.delivered += s.delivered;
        total.qos1_redeliveries += s.qos1_redeliveries;
        total.lost.extend(s.lost);
        total.qos2_duplicates.extend(s.qos2_duplicates);
        total.order.extend(s.order);
        total.other.extend(s.other);
        if !total.ok() {
            println!(
                "{label}: failing store's log tail:\n{}",
                run.broker.log_tail(40)
            );
            break;
        }
    }
    println!("{label}: summary: {}", total.line());
    total.seed = seed;
    total
}

/// Fails the test with the details of a failed crash scenario.
fn assert_crash_ok(label: &str, s: &Summary) {
    assert!(
        s.ok(),
        "{label} (seed {}): {}\n{}",
        s.seed,
        s.line(),
        s.details()
    );
}

/// 20 kill points on one store: every acknowledged message survives, QoS 2 at most once,
/// each publisher's messages in order.
#[test]
fn crash_at_random_points_loses_no_acknowledged_message() {
    let s = crash_scenario(&durable_config("", "always"), 20, 20, "crash");
    assert_crash_ok("crash", &s);
    assert!(
        s.acknowledged > 0,
        "no message was acknowledged before any of the 20 kills: the test checked nothing"
    );
}

/// The shipped config.toml as it is, but for its listener (the harness gives each broker
/// its own port; the shipped listener's `queue_full` is the default, checked here): its
/// queue limits and policy, its store settings.
fn shipped_config() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
    let text = std::fs::read_to_string(path).expect("read config.toml");
    let mut out = String::new();
    let mut in_listener = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_listener = t == "[[listener]]";
        }
        if in_listener {
            if let Some(v) = t.strip_prefix("queue_full") {
                assert_eq!(
                    v.trim_start_matches([' ', '=']).trim(),
                    "\"drop_oldest\"",
                    "the shipped listener's queue_full is the default the harness's has"
                );
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    assert!(
        out.contains("[persistence]"),
        "config.toml keeps its store settings"
    );
    out
}

/// The same with the shipped config.toml (issue 16: its queue limits once dropped
/// acknowledged messages for an offline subscriber with a backlog).
#[test]
fn crash_with_the_shipped_config_loses_no_acknowledged_message() {
    let s = crash_scenario(&shipped_config(), 10, 10, "crash (shipped config)");
    assert_crash_ok("crash (shipped config)", &s);
    assert!(
        s.acknowledged > 0,
        "nothing was acknowledged: the test checked nothing"
    );
}

/// The crash scenario many times, for scripts/crash-loop.sh: `MIDGE_CRASH_ITERATIONS`
/// kill points (default 500), a fresh broker and store every 20.
#[test]
#[ignore = "long: run by scripts/crash-loop.sh"]
fn crash_loop() {
    let iterations = std::env::var("MIDGE_CRASH_ITERATIONS")
        .ok()
        .map(|v| {
            v.trim()
                .parse::<usize>()
                .unwrap_or_else(|_| panic!("MIDGE_CRASH_ITERATIONS={v:?} is not a number"))
        })
        .unwrap_or(500);
    assert!(iterations > 0, "MIDGE_CRASH_ITERATIONS must be at least 1");
    // MIDGE_CRASH_CONFIG: "unlimited" (unlimited queues, the default) or "shipped" (the
    // shipped config.toml).
    let config = match std::env::var("MIDGE_CRASH_CONFIG").as_deref() {
        Ok("shipped") => shipped_config(),
        Ok("unlimited") | Err(_) => durable_config("", "always"),
        Ok(other) => panic!("MIDGE_CRASH_CONFIG={other:?}: expected shipped or unlimited"),
    };
    let s = crash_scenario(&config, iterations, 20, "crash-loop");
    println!(
        "CRASH LOOP SUMMARY: iterations {} acknowledged {} lost {} qos1_redeliveries {} \
         qos2_duplicates {} order_violations {}",
        s.kill_points,
        s.acknowledged,
        s.lost.len(),
        s.qos1_redeliveries,
        s.qos2_duplicates.len(),
        s.order.len()
    );
    assert_crash_ok("crash-loop", &s);
}

/// `sync = "never"` and `"interval"` only leave out fsync: an acknowledged message was
/// written to the OS, which keeps it when the process is killed.
#[test]
fn sync_never_and_interval_survive_kill_9() {
    let never = durable_config("", "never");
    let s1 = crash_scenario(&never, 4, 4, "sync never");
    assert_crash_ok("sync never", &s1);
    let interval = format!(
        "{}sync_interval_ms = 1000\n",
        durable_config("", "interval")
    );
    let s2 = crash_scenario(&interval, 4, 4, "sync interval");
    assert_crash_ok("sync interval", &s2);
    assert!(
        s1.acknowledged > 0 && s2.acknowledged > 0,
        "nothing was acknowledged before the kills (never: {}, interval: {})",
        s1.acknowledged,
        s2.acknowledged
    );
}

/// Publishes `n` QoS 2 messages "<prefix>:<i>" to `topic`, `window` at a time, every flow
/// completed (PUBCOMP): all `n` are acknowledged.
fn publish_many_qos2(b: &Broker, topic: &str, prefix: &str, n: u16, window: u16) {
    let (mut p, _) = Raw::connect(b, &format!("{prefix}-pub"), true, 60, None);
    let (mut next, mut done, mut open) = (1u16, 0u16, 0u16);
    for _ in 0..u32::from(n) * 4 {
        if done == n {
            return;
        }
        let mut batch = Vec::new();
        while open < window && next <= n {
            let payload = format!("{prefix}:{next}");
            batch.extend(publish311(topic, payload.as_bytes(), 2, next, false, false));
            next += 1;
            open += 1;
        }
        if !batch.is_empty() {
            p.send(&batch);
        }
        let pkt = p.recv();
        match pkt.kind() {
            PUBREC => p.send(&ack_bytes(PUBREL, pkt.pkid())),
            PUBCOMP => {
                done += 1;
                open -= 1;
            }
            _ => panic!("publisher: unexpected {pkt:?}"),
        }
    }
    assert_eq!(done, n, "not every QoS 2 flow completed");
}

/// A QoS 2 receiver as the specification has it [MQTT-4.3.3-2]: a PUBLISH with a packet id
/// it has PUBRECed and not yet seen PUBREL for is that same message again (acknowledged,
/// not delivered); after it sends PUBCOMP the id is free, and a PUBLISH with it is a new
/// message. Its state outlives connections, like a persistent client's.
#[derive(Default)]
struct Qos2Receiver {
    /// packet id -> payload, PUBREC sent, PUBREL not yet received.
    awaiting_pubrel: HashMap<u16, String>,
    deliveries: HashMap<String, usize>,
    /// Deliveries beyond the first, and messages swallowed because the broker reused a
    /// packet id the receiver was still holding for another message.
    problems: Vec<String>,
}

impl Qos2Receiver {
    /// Handles packets until the connection closes, or nothing comes for `quiet`.
    fn run(&mut self, c: &mut Raw, quiet: Duration, label: &str) {
        for _ in 0..2_000_000 {
            match c.next_within(quiet) {
                Next::Packet(p) if p.kind() == PUBLISH => {
                    let m = p.publish();
                    assert_eq!(m.qos, 2, "{label}: {m:?}");
                    match self.awaiting_pubrel.get(&m.pkid) {
                        None => {
                            let n = self.deliveries.entry(m.text()).or_default();
                            *n += 1;
                            if *n > 1 {
                                self.problems.push(format!(
                                    "{label}: {} delivered again (packet id {}, DUP {})",
                                    m.text(),
                                    m.pkid,
                                    u8::from(m.dup)
                                ));
                            }
                            self.awaiting_pubrel.insert(m.pkid, m.text());
                        }
                        Some(held) if *held != m.text() => self.problems.push(format!(
                            "{label}: packet id {} still awaiting PUBREL for {held} was used for                              {} (DUP {}): a compliant receiver takes it for {held} again",
                            m.pkid,
                            m.text(),
                            u8::from(m.dup)
                        )),
                        Some(_) => {}
                    }
                    if c.s.write_all(&ack_bytes(PUBREC, m.pkid)).is_err() {
                        return;
                    }
                }
                Next::Packet(p) if p.kind() == PUBREL => {
                    self.awaiting_pubrel.remove(&p.pkid());
                    if c.s.write_all(&ack_bytes(PUBCOMP, p.pkid())).is_err() {
                        return;
                    }
                }
                Next::Packet(p) => panic!("{label}: unexpected {p:?}"),
                Next::Closed | Next::Quiet => return,
            }
        }
    }
}

/// Killed (SIGKILL) again and again while it delivers QoS 2 messages to a persistent
/// subscriber that follows the specification, midge still delivers each message exactly
/// once: after a restart it re-sends the PUBLISH (DUP 1, same packet id) only for messages
/// whose PUBREC it has not had, PUBREL for those whose PUBREL it had sent, and never
/// reuses a packet id the subscriber still holds.
#[test]
fn crash_while_delivering_qos2_delivers_each_message_exactly_once() {
    const N: u16 = 3000;
    let mut b = durable_broker("");
    let (mut sub, _) = Raw::connect(&b, "dlv-sub", false, 60, None);
    assert_eq!(sub.subscribe(1, &[("dlv/#", 2)]), [2]);
    sub.go_offline(&b);
    publish_many_qos2(&b, "dlv/x", "m", N, 20);

    let seed = crash_seed();
    println!("delivery crash: seed {seed} (replay the kill delays with MIDGE_CRASH_SEED={seed})");
    let mut rng = Rng::new(seed);
    let mut rx = Qos2Receiver::default();
    for k in 0..10 {
        let (mut c, present) = Raw::connect(&b, "dlv-sub", false, 60, None);
        assert!(
            present,
            "kill point {k}: the session is gone after a restart"
        );
        let pid = b.child.as_ref().expect("midge running").id();
        let delay = rng.range(5, 60);
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(delay));
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        });
        rx.run(&mut c, WAIT, &format!("kill point {k}"));
        killer.join().expect("killer thread");
        b.kill();
        b.spawn();
        println!(
            "delivery crash: kill point {k} after {delay} ms: {} of {N} delivered",
            rx.deliveries.len()
        );
    }
    let (mut c, present) = Raw::connect(&b, "dlv-sub", false, 60, None);
    assert!(present);
    rx.run(&mut c, QUIET, "after the last restart");

    let missing: Vec<String> = (1..=N)
        .map(|i| format!("m:{i}"))
        .filter(|m| !rx.deliveries.contains_key(m))
        .collect();
    assert!(
        rx.problems.is_empty() && missing.is_empty(),
        "seed {seed}: {} problems, {} of {N} acknowledged messages never delivered {:?}; \
         the first problems:\n{}",
        rx.problems.len(),
        missing.len(),
        &missing[..missing.len().min(20)],
        rx.problems
            .iter()
            .take(20)
            .map(|p| format!("  {p}\n"))
            .collect::<String>()
    );
}
