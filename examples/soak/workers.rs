//! The soak's clients, one thread each: publishers at QoS 0/1/2, a retained publisher
//! and a checker of retained messages, persistent subscribers that leave and come back,
//! and clients that connect and go away all the time. Each one survives the broker
//! restart by reconnecting; what they sent, had acknowledged and received is counted in
//! [`Shared`].

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::mqtt::{Client, Packet, Res};

/// Counters and sets shared by the workers and the orchestrator.
#[derive(Default)]
pub struct Shared {
    pub addr: Option<SocketAddr>,
    /// Publishers stop (end of the load).
    pub stop_publishing: AtomicBool,
    /// Subscribers stop leaving on their own (draining before the end).
    pub draining: AtomicBool,
    /// Everybody stops.
    pub stop: AtomicBool,
    pub sent: [AtomicU64; 3],
    pub acked: [AtomicU64; 3],
    /// Acknowledged with an error reason code (5.0).
    pub refused: AtomicU64,
    /// Deliveries to persistent subscribers, duplicates included, by QoS.
    pub delivered: [AtomicU64; 3],
    pub duplicates: AtomicU64,
    pub reconnects: AtomicU64,
    /// A persistent subscriber came back to no session.
    pub sessions_lost: AtomicU64,
    pub retained_checks: AtomicU64,
    /// A retained message older than the last acknowledged one, or missing.
    pub retained_stale: AtomicU64,
    pub churn_connections: AtomicU64,
    /// Persistent subscribers whose first SUBSCRIBE was granted.
    pub subscribed: AtomicU64,
    /// Ids of the QoS 1/2 messages the broker acknowledged (PUBACK / PUBCOMP).
    pub acked_ids: Mutex<HashSet<u64>>,
    /// Per persistent subscriber: the ids of the QoS 1/2 messages it received.
    pub got: Vec<Mutex<HashSet<u64>>>,
    /// Retained topic -> highest acknowledged sequence number.
    pub retained_acked: Mutex<HashMap<String, u64>>,
    /// The first few problems, for the report.
    pub notes: Mutex<Vec<String>>,
}

impl Shared {
    fn addr(&self) -> SocketAddr {
        self.addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 1883)))
    }

    pub fn note(&self, what: String) {
        let mut notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        if notes.len() < 20 {
            notes.push(what);
        }
    }
}

/// xorshift64, for the random pauses.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng((seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ t) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x % n.max(1)
    }
}

/// A message id: publisher in the high bits, sequence number in the low ones; it is the
/// first 8 bytes of every payload.
fn message_id(publisher: usize, seq: u64) -> u64 {
    (publisher as u64) << 40 | seq
}

fn payload(id: u64, size: usize) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.resize(size.max(8), b'.');
    p
}

fn id_of(payload: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(payload.get(..8)?.try_into().ok()?))
}

fn next_pkid(pkid: &mut u16) -> u16 {
    *pkid = pkid.wrapping_add(1).max(1);
    *pkid
}

/// Publishes one message and waits for its acknowledgement (QoS 1: PUBACK, QoS 2: PUBREC,
/// PUBREL, PUBCOMP). `Ok(true)`: acknowledged with success.
fn publish_acked(
    c: &mut Client,
    topic: &str,
    qos: u8,
    pkid: u16,
    retain: bool,
    body: &[u8],
) -> Res<bool> {
    c.publish(topic, qos, pkid, retain, body)?;
    if qos == 0 {
        return Ok(true);
    }
    let success = |p: &Packet| p.body.get(2).is_none_or(|r| *r < 0x80);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut released = false;
    while Instant::now() < deadline {
        let Some(p) = c.read(Duration::from_millis(500))? else {
            continue;
        };
        if p.pkid() != pkid {
            continue;
        }
        match (qos, p.byte1) {
            (1, 0x40) => return Ok(success(&p)),
            (2, 0x50) if !released => {
                if !success(&p) {
                    return Ok(false);
                }
                c.ack(0x62, pkid)?;
                released = true;
            }
            (2, 0x70) if released => return Ok(success(&p)),
            _ => {}
        }
    }
    Err("no acknowledgement within 10 s".into())
}

/// A publisher at `qos`, `rate` messages a second, clean sessions, until told to stop or
/// `max` messages.
pub fn publisher(sh: &Shared, index: usize, qos: u8, v5: bool, rate: u32, max: u64, size: usize) {
    let topic = format!("soak/{qos}/{index}");
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut seq = 0u64;
    let mut pkid = 0u16;
    let mut first = true;
    'outer: while !sh.stop_publishing.load(Relaxed) && seq < max {
        let mut c = match Client::connect(sh.addr(), &format!("soak-pub-{index}"), v5, true, 0) {
            Ok(c) => c,
            Err(_) => {
                sleep(Duration::from_millis(200));
                continue;
            }
        };
        if !first {
            sh.reconnects.fetch_add(1, Relaxed);
        }
        first = false;
        let mut next = Instant::now();
        loop {
            if sh.stop_publishing.load(Relaxed) || seq >= max {
                c.disconnect();
                break 'outer;
            }
            let now = Instant::now();
            if next > now {
                sleep(next - now);
            }
            next += interval;
            seq += 1;
            let id = message_id(index, seq);
            sh.sent[usize::from(qos)].fetch_add(1, Relaxed);
            match publish_acked(
                &mut c,
                &topic,
                qos,
                next_pkid(&mut pkid),
                false,
                &payload(id, size),
            ) {
                // QoS 0 has no acknowledgement: sent is all there is.
                Ok(true) if qos == 0 => {}
                Ok(true) => {
                    sh.acked[usize::from(qos)].fetch_add(1, Relaxed);
                    sh.acked_ids
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id);
                }
                Ok(false) => {
                    sh.refused.fetch_add(1, Relaxed);
                }
                // The broker went away (restart): the message counts as sent, not acked.
                Err(_) => break,
            }
        }
        sleep(Duration::from_millis(100));
    }
}

/// Retained QoS 1 messages on a few topics, remembering the last acknowledged one per
/// topic.
pub fn retained_publisher(sh: &Shared, index: usize, rate: u32) {
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut seq = 0u64;
    let mut pkid = 0u16;
    'outer: while !sh.stop_publishing.load(Relaxed) {
        let Ok(mut c) = Client::connect(sh.addr(), "soak-retainer", false, true, 0) else {
            sleep(Duration::from_millis(200));
            continue;
        };
        loop {
            if sh.stop_publishing.load(Relaxed) {
                c.disconnect();
                break 'outer;
            }
            sleep(interval);
            seq += 1;
            let topic = format!("soak/retained/{}", seq % 8);
            sh.sent[1].fetch_add(1, Relaxed);
            match publish_acked(
                &mut c,
                &topic,
                1,
                next_pkid(&mut pkid),
                true,
                &payload(message_id(index, seq), 16),
            ) {
                Ok(true) => {
                    sh.acked[1].fetch_add(1, Relaxed);
                    let mut map = sh.retained_acked.lock().unwrap_or_else(|e| e.into_inner());
                    let e = map.entry(topic).or_insert(0);
                    *e = (*e).max(seq);
                }
                Ok(false) => {
                    sh.refused.fetch_add(1, Relaxed);
                }
                Err(_) => break,
            }
        }
        sleep(Duration::from_millis(100));
    }
}

/// Every few seconds a new clean session subscribes to the retained topics: each must
/// hold the last acknowledged message or a later one, across the restart too.
pub fn retained_checker(sh: &Shared, index: usize) {
    while !sh.stop.load(Relaxed) {
        sleep(Duration::from_secs(3));
        let want = sh
            .retained_acked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Ok(mut c) = Client::connect(
            sh.addr(),
            &format!("soak-retained-check-{index}"),
            true,
            true,
            0,
        ) else {
            continue;
        };
        let mut got: HashMap<String, u64> = HashMap::new();
        let mut packets = match c.subscribe(1, &[("soak/retained/#", 1)]) {
            Ok(before) => before,
            Err(_) => continue,
        };
        let until = Instant::now() + Duration::from_secs(1);
        let mut failed = false;
        while Instant::now() < until {
            match c.read(Duration::from_millis(100)) {
                Ok(Some(p)) => packets.push(p),
                Ok(None) => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        for p in &packets {
            if let Some(m) = c.publish_of(p) {
                if m.qos > 0 {
                    let _ = c.ack(0x40, m.pkid);
                }
                if p.byte1 & 1 == 1 {
                    let seq = id_of(&m.payload).unwrap_or(0) & ((1 << 40) - 1);
                    let e = got.entry(m.topic).or_insert(0);
                    *e = (*e).max(seq);
                }
            }
        }
        if failed {
            // The broker restarted under the check: inconclusive, not stale.
            continue;
        }
        c.disconnect();
        sh.retained_checks.fetch_add(1, Relaxed);
        for (topic, acked) in want {
            let have = got.get(&topic).copied().unwrap_or(0);
            if have < acked {
                sh.retained_stale.fetch_add(1, Relaxed);
                sh.note(format!(
                    "retained {topic}: last acknowledged #{acked}, got #{have}"
                ));
            }
        }
    }
}

/// A persistent subscriber to every soak topic (QoS 2 granted): leaves now and then and
/// comes back to its session, and must end up with every acknowledged QoS 1/2 message.
pub fn subscriber(sh: &Shared, index: usize, v5: bool) {
    let id = format!("soak-sub-{index}");
    let mut rng = Rng::new(index as u64 + 1);
    let mut first = true;
    while !sh.stop.load(Relaxed) {
        let mut c = match Client::connect(sh.addr(), &id, v5, false, if v5 { 3600 } else { 0 }) {
            Ok(c) => c,
            Err(_) => {
                sleep(Duration::from_millis(200));
                continue;
            }
        };
        if !first {
            sh.reconnects.fetch_add(1, Relaxed);
            if !c.session_present {
                sh.sessions_lost.fetch_add(1, Relaxed);
                sh.note(format!("{id}: reconnected to no session"));
            }
        }
        if first || !c.session_present {
            let filters = [("soak/0/#", 0), ("soak/1/#", 1), ("soak/2/#", 2)];
            match c.subscribe(1, &filters) {
                Ok(before) => {
                    if first {
                        sh.subscribed.fetch_add(1, Relaxed);
                    }
                    for p in before {
                        if handle(sh, index, &mut c, &p).is_err() {
                            break;
                        }
                    }
                }
                Err(e) => {
                    sh.note(format!("{id}: {e}"));
                    sleep(Duration::from_millis(200));
                    continue;
                }
            }
        }
        first = false;
        let leave_at = Instant::now() + Duration::from_millis(5000 + rng.below(10_000));
        loop {
            if sh.stop.load(Relaxed) {
                c.disconnect();
                return;
            }
            if !sh.draining.load(Relaxed) && Instant::now() >= leave_at {
                c.disconnect();
                sleep(Duration::from_millis(300 + rng.below(1200)));
                break;
            }
            match c.read(Duration::from_millis(200)) {
                Ok(Some(p)) => {
                    if handle(sh, index, &mut c, &p).is_err() {
                        break;
                    }
                }
                Ok(None) => {}
                Err(_) => {
                    sleep(Duration::from_millis(200));
                    break;
                }
            }
        }
    }
}

/// Counts and acknowledges what a persistent subscriber receives.
fn handle(sh: &Shared, index: usize, c: &mut Client, p: &Packet) -> Res<()> {
    match p.byte1 >> 4 {
        3 => {
            let m = c.publish_of(p).ok_or("malformed PUBLISH from the broker")?;
            sh.delivered[usize::from(m.qos.min(2))].fetch_add(1, Relaxed);
            if m.qos > 0 {
                if let (Some(id), Some(got)) = (id_of(&m.payload), sh.got.get(index)) {
                    if !got.lock().unwrap_or_else(|e| e.into_inner()).insert(id) {
                        sh.duplicates.fetch_add(1, Relaxed);
                    }
                }
                c.ack(if m.qos == 1 { 0x40 } else { 0x50 }, m.pkid)?;
            }
        }
        6 => c.ack(0x70, p.pkid())?,
        _ => {}
    }
    Ok(())
}

/// Clean sessions that connect, subscribe, publish at QoS 0 and go, half of them without
/// DISCONNECT: what the broker sets up per connection must all go away again.
pub fn churn(sh: &Shared, index: usize) {
    let mut rng = Rng::new(1000 + index as u64);
    let mut n = 0u64;
    while !sh.stop_publishing.load(Relaxed) {
        n += 1;
        let v5 = n.is_multiple_of(2);
        let Ok(mut c) = Client::connect(sh.addr(), &format!("soak-churn-{index}"), v5, true, 0)
        else {
            sleep(Duration::from_millis(200));
            continue;
        };
        sh.churn_connections.fetch_add(1, Relaxed);
        if c.subscribe(1, &[("soak/0/#", 0)]).is_ok() {
            let _ = c.read(Duration::from_millis(50 + rng.below(200)));
            let _ = c.publish(&format!("soak/churn/{index}"), 0, 0, false, b"churn");
        }
        if rng.below(2) == 0 {
            c.disconnect();
        }
        sleep(Duration::from_millis(50 + rng.below(100)));
    }
}
