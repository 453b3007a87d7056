//! The soak's orchestrator: starts midge on a scratch store, runs the workers for the
//! configured time, restarts the broker in the middle (kill -9 or SIGTERM), samples the
//! broker's RSS and open file descriptors, drains, and counts what was lost.

use std::collections::HashSet;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::workers::{self, Shared};

/// How the broker is restarted in the middle of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// SIGKILL: acknowledged messages must survive a crash.
    Kill,
    /// SIGTERM: a graceful shutdown.
    Term,
    None,
}

#[derive(Debug, Clone)]
pub struct Opts {
    /// The midge binary.
    pub midge: PathBuf,
    /// How long the load runs (the drain comes after it, at most `drain`).
    pub duration: Duration,
    pub drain: Duration,
    pub sample_every: Duration,
    pub restart: Restart,
    /// Publishers per QoS level.
    pub publishers_per_qos: usize,
    /// Persistent subscribers (every other one MQTT 5.0).
    pub subscribers: usize,
    pub churners: usize,
    /// Messages a second, per publisher.
    pub rate: u32,
    /// Messages per publisher at most.
    pub max_messages: u64,
    pub payload_size: usize,
    /// Extra TOML for the broker's config (top-level keys).
    pub extra_config: String,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            midge: PathBuf::from("midge"),
            duration: Duration::from_secs(30 * 60),
            drain: Duration::from_secs(30),
            sample_every: Duration::from_secs(10),
            restart: Restart::Kill,
            publishers_per_qos: 2,
            subscribers: 3,
            churners: 2,
            rate: 50,
            max_messages: 10_000_000,
            payload_size: 64,
            extra_config: String::new(),
        }
    }
}

/// One sample of the broker process.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Duration,
    /// Which broker process: 0 before the restart, 1 after.
    pub generation: u32,
    pub rss_kib: u64,
    pub fds: usize,
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
}

#[derive(Debug, Default)]
pub struct Report {
    pub sent: [u64; 3],
    pub acked: [u64; 3],
    pub delivered: [u64; 3],
    /// Acknowledged QoS 1/2 messages missing at a persistent subscriber, summed over them.
    pub lost: u64,
    pub duplicates: u64,
    pub refused: u64,
    pub reconnects: u64,
    pub sessions_lost: u64,
    pub retained_checks: u64,
    pub retained_stale: u64,
    pub churn_connections: u64,
    pub unexpected_exits: u64,
    pub samples: Vec<Sample>,
    pub notes: Vec<String>,
}

impl Report {
    /// Nothing acknowledged was lost, no session or retained message went missing, the
    /// broker never died on its own, and the load did run.
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.sessions_lost == 0
            && self.retained_stale == 0
            && self.unexpected_exits == 0
            && self.acked[1] > 0
            && self.acked[2] > 0
    }

    /// (first sample after warm-up, last sample) of broker process `generation`: warm-up
    /// is the first 40% of its samples.
    pub fn steady(&self, generation: u32) -> Option<(&Sample, &Sample)> {
        let s: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.generation == generation)
            .collect();
        let first = *s.get(s.len() * 2 / 5)?;
        Some((first, *s.last()?))
    }
}

struct Broker {
    midge: PathBuf,
    config: PathBuf,
    log: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Broker {
    fn start(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("open {}: {e}", self.log.display()))?;
        let offset = std::fs::metadata(&self.log)
            .map(|m| m.len() as usize)
            .unwrap_or(0);
        let child = Command::new(&self.midge)
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.midge.display()))?;
        self.child = Some(child);
        let needle = format!("listening on 127.0.0.1:{}", self.port);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let text = std::fs::read(&self.log).unwrap_or_default();
            if text
                .get(offset..)
                .is_some_and(|t| String::from_utf8_lossy(t).contains(&needle))
            {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!(
                    "midge exited at start: {status}; see {}",
                    self.log.display()
                ));
            }
            sleep(Duration::from_millis(20));
        }
        Err("midge did not listen within 30 s".into())
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn stop(&mut self, how: Restart) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if how == Restart::Term {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                sleep(Duration::from_millis(20));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop(Restart::Kill);
    }
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn total(a: &[std::sync::atomic::AtomicU64; 3]) -> u64 {
    a.iter().map(|c| c.load(Relaxed)).sum()
}

fn scratch_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!("midge-soak-{}-{nanos}", std::process::id()))
}

/// Runs the soak; `out` gets the progress table.
pub fn run(opts: &Opts, out: &mut dyn Write) -> Result<Report, String> {
    let dir = scratch_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let result = run_in(opts, &dir, out);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(opts: &Opts, dir: &Path, out: &mut dyn Write) -> Result<Report, String> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let config = dir.join("midge.toml");
    // A queue far above what a subscriber gathers while away (a few seconds of load), so
    // that a loss is the broker's and not the queue limit doing its job.
    let text = format!(
        "log_level = \"info\"\nmax_queued_messages = 100000\n{}\n\n[[listener]]\nbind = \"127.0.0.1\"\nport = {port}\n\n[persistence]\nenabled = true\npath = \"{}\"\nsync = \"always\"\n",
        opts.extra_config,
        dir.join("data").display()
    );
    std::fs::write(&config, text).map_err(|e| format!("write config: {e}"))?;
    let mut broker = Broker {
        midge: opts.midge.clone(),
        config,
        log: dir.join("midge.log"),
        port,
        child: None,
    };
    broker.start()?;

    let mut shared = Shared {
        addr: Some(SocketAddr::from(([127, 0, 0, 1], port))),
        ..Shared::default()
    };
    shared.got = (0..opts.subscribers)
        .map(|_| Mutex::new(HashSet::new()))
        .collect();
    let sh = Arc::new(shared);

    // Subscribers first, and subscribed, before anything is published.
    let mut subs = Vec::new();
    for i in 0..opts.subscribers {
        let sh = sh.clone();
        subs.push(std::thread::spawn(move || {
            workers::subscriber(&sh, i, i % 2 == 1)
        }));
    }
    let ready = Instant::now() + Duration::from_secs(20);
    while (sh.subscribed.load(Relaxed) as usize) < opts.subscribers && Instant::now() < ready {
        sleep(Duration::from_millis(50));
    }
    let mut pubs = Vec::new();
    let mut index = 0;
    for qos in 0..3u8 {
        for k in 0..opts.publishers_per_qos {
            let (sh, o) = (sh.clone(), opts.clone());
            let i = index;
            pubs.push(std::thread::spawn(move || {
                workers::publisher(
                    &sh,
                    i,
                    qos,
                    k % 2 == 1,
                    o.rate,
                    o.max_messages,
                    o.payload_size,
                )
            }));
            index += 1;
        }
    }
    {
        let sh = sh.clone();
        let i = index;
        pubs.push(std::thread::spawn(move || {
            workers::retained_publisher(&sh, i, 5)
        }));
    }
    for i in 0..opts.churners {
        let sh = sh.clone();
        pubs.push(std::thread::spawn(move || workers::churn(&sh, i)));
    }
    let checker = {
        let sh = sh.clone();
        std::thread::spawn(move || workers::retained_checker(&sh, 0))
    };

    let mut report = Report::default();
    let _ = writeln!(
        out,
        "{:>7} {:>4} {:>9} {:>5} {:>10} {:>10} {:>10}",
        "t(s)", "gen", "RSS(KiB)", "fds", "sent", "acked 1/2", "delivered"
    );
    let start = Instant::now();
    let restart_at = opts.duration / 2;
    let mut generation = 0u32;
    let mut next_sample = start;
    let end = start + opts.duration;
    let drain_end = end + opts.drain;
    let mut draining = false;
    loop {
        let now = Instant::now();
        if !draining && now >= end {
            sh.stop_publishing.store(true, Relaxed);
            sh.draining.store(true, Relaxed);
            draining = true;
            // A publisher may still wait for the acknowledgement of its last message
            // (10 s at most): the drain starts once every acknowledged id is known.
            for t in std::mem::take(&mut pubs) {
                let _ = t.join();
            }
        }
        if draining && (now >= drain_end || all_delivered(&sh)) {
            break;
        }
        if generation == 0 && opts.restart != Restart::None && now >= start + restart_at {
            let _ = writeln!(out, "-- restarting the broker ({:?}) --", opts.restart);
            broker.stop(opts.restart);
            broker.start()?;
            generation = 1;
        }
        if let Some(Ok(Some(status))) = broker.child.as_mut().map(|c| c.try_wait()) {
            report.unexpected_exits += 1;
            sh.note(format!("broker exited on its own: {status}"));
            broker.child = None;
            broker.start()?;
            generation += 1;
        }
        if now >= next_sample {
            next_sample += opts.sample_every;
            if let Some(pid) = broker.pid() {
                let s = Sample {
                    at: now - start,
                    generation,
                    rss_kib: status_kib(pid, "VmRSS:"),
                    fds: fds(pid),
                    sent: total(&sh.sent),
                    acked: total(&sh.acked),
                    delivered: total(&sh.delivered),
                };
                let _ = writeln!(
                    out,
                    "{:>7.0} {:>4} {:>9} {:>5} {:>10} {:>10} {:>10}",
                    s.at.as_secs_f64(),
                    s.generation,
                    s.rss_kib,
                    s.fds,
                    s.sent,
                    s.acked,
                    s.delivered
                );
                report.samples.push(s);
            }
        }
        sleep(Duration::from_millis(50));
    }
    sh.stop_publishing.store(true, Relaxed);
    sh.stop.store(true, Relaxed);
    for t in pubs.into_iter().chain(subs).chain([checker]) {
        let _ = t.join();
    }
    let log = std::fs::read_to_string(&broker.log).unwrap_or_default();
    if log.contains("panicked") {
        sh.note("the broker's log holds a panic".into());
        report.unexpected_exits += 1;
    }
    broker.stop(Restart::Term);

    let acked = sh
        .acked_ids
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for (i, got) in sh.got.iter().enumerate() {
        let got = got.lock().unwrap_or_else(|e| e.into_inner());
        let mut ids: Vec<u64> = acked.difference(&got).copied().collect();
        let missing = ids.len() as u64;
        if missing > 0 {
            ids.sort_unstable();
            let first: Vec<String> = ids
                .iter()
                .take(5)
                .map(|id| format!("publisher {} #{}", id >> 40, id & ((1 << 40) - 1)))
                .collect();
            sh.note(format!(
                "soak-sub-{i}: {missing} acknowledged messages never delivered, first: {}",
                first.join(", ")
            ));
        }
        report.lost += missing;
    }
    for q in 0..3 {
        report.sent[q] = sh.sent[q].load(Relaxed);
        report.acked[q] = sh.acked[q].load(Relaxed);
        report.delivered[q] = sh.delivered[q].load(Relaxed);
    }
    report.duplicates = sh.duplicates.load(Relaxed);
    report.refused = sh.refused.load(Relaxed);
    report.reconnects = sh.reconnects.load(Relaxed);
    report.sessions_lost = sh.sessions_lost.load(Relaxed);
    report.retained_checks = sh.retained_checks.load(Relaxed);
    report.retained_stale = sh.retained_stale.load(Relaxed);
    report.churn_connections = sh.churn_connections.load(Relaxed);
    report.notes = sh.notes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(report)
}

/// Every persistent subscriber holds every acknowledged QoS 1/2 message.
fn all_delivered(sh: &Shared) -> bool {
    let acked = sh
        .acked_ids
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    sh.got
        .iter()
        .all(|g| acked.is_subset(&g.lock().unwrap_or_else(|e| e.into_inner())))
}

/// The report as text.
pub fn print(opts: &Opts, r: &Report, out: &mut dyn Write) {
    let _ = writeln!(
        out,
        "\nsoak: {:.0} s of load, broker restart: {:?}",
        opts.duration.as_secs_f64(),
        opts.restart
    );
    let _ = writeln!(
        out,
        "{:>8} {:>10} {:>10} {:>10}",
        "", "sent", "acked", "delivered"
    );
    for q in 0..3 {
        // QoS 0 has no acknowledgement.
        let acked = if q == 0 {
            "-".to_string()
        } else {
            r.acked[q].to_string()
        };
        let _ = writeln!(
            out,
            "{:>8} {:>10} {:>10} {:>10}",
            format!("QoS {q}"),
            r.sent[q],
            acked,
            r.delivered[q]
        );
    }
    let _ = writeln!(
        out,
        "lost (acknowledged QoS 1/2 never delivered to a persistent subscriber): {}",
        r.lost
    );
    let _ = writeln!(
        out,
        "duplicates {}  refused {}  reconnects {}  sessions lost {}  retained checks {} (stale {})  churn connections {}  unexpected broker exits {}",
        r.duplicates, r.refused, r.reconnects, r.sessions_lost, r.retained_checks, r.retained_stale, r.churn_connections, r.unexpected_exits
    );
    for g in 0..2 {
        if let Some((a, b)) = r.steady(g) {
            let _ = writeln!(
                out,
                "broker process {g}: after warm-up (t={:.0} s) RSS {} KiB, fds {}; at t={:.0} s RSS {} KiB ({:+}), fds {} ({:+})",
                a.at.as_secs_f64(),
                a.rss_kib,
                a.fds,
                b.at.as_secs_f64(),
                b.rss_kib,
                b.rss_kib as i64 - a.rss_kib as i64,
                b.fds,
                b.fds as i64 - a.fds as i64
            );
        }
    }
    for n in &r.notes {
        let _ = writeln!(out, "note: {n}");
    }
    let _ = writeln!(
        out,
        "SOAK RESULT: {} lost={} sent={} acked={} delivered={} sessions_lost={} retained_stale={} unexpected_exits={}",
        if r.ok() { "ok" } else { "FAILED" },
        r.lost,
        r.sent.iter().sum::<u64>(),
        r.acked.iter().sum::<u64>(),
        r.delivered.iter().sum::<u64>(),
        r.sessions_lost,
        r.retained_stale,
        r.unexpected_exits
    );
}
