//! `midge-bench attack`: runs each attack of issue 12 against a fresh broker (midge,
//! Mosquitto) and records the broker's resident memory before, at its peak during and
//! after the attack, what the attacker got (the spec's answer, a disconnect, nothing),
//! and the round trip of a healthy client before and during the attack. Prints a
//! markdown table, one row per attack and broker, and writes it to a file.
//!
//! Every attack is bounded in count and time (`--secs`); a broker whose memory passes
//! `--rss-cap-mib` is killed (and the row says so) rather than the machine. A broker that
//! refuses or disconnects the attacker early is an outcome to record, not an error.

mod brokers;
mod conns;
mod kit;
mod memory;
mod raw;
mod watch;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::time::Instant;

use crate::client::BoxError;
use crate::procs;
use brokers::Kind;

#[derive(Args)]
pub struct AttackArgs {
    /// Comma-separated attacks (default: all; `list` prints them).
    #[arg(long, default_value = "all")]
    attacks: String,
    /// Comma-separated brokers: midge, mosquitto.
    #[arg(long, default_value = "midge,mosquitto")]
    brokers: String,
    /// midge binary (default: `midge` beside this executable).
    #[arg(long)]
    midge: Option<PathBuf>,
    /// Mosquitto binary (default: `mosquitto` on PATH, else /usr/sbin/mosquitto).
    #[arg(long)]
    mosquitto: Option<PathBuf>,
    /// Time limit of one attack, seconds (what it sends, and how long slow attacks last).
    #[arg(long, default_value_t = 25.0)]
    secs: f64,
    /// Seconds to hold the attack's state (connections, sessions) while measured.
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
    /// A broker whose resident memory passes this many MiB is killed.
    #[arg(long, default_value_t = 3072)]
    rss_cap_mib: u64,
    /// Run the whole list this many times (figures on a shared machine are noisy).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Brokers' logs.
    #[arg(long, default_value = "target/midge-bench")]
    log_dir: PathBuf,
    /// The markdown table.
    #[arg(long, default_value = "target/midge-bench/attacks.md")]
    out: PathBuf,
    /// Brokers' configs and stores (emptied before each start).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

/// (name, needs a password file, what it is).
pub const ATTACKS: &[(&str, bool, &str)] = &[
    (
        "deep-subscribe",
        false,
        "1 SUBSCRIBE, three 60,000-level filters",
    ),
    ("deep-publish", false, "PUBLISH to 60,000-level topics"),
    (
        "deep-retain",
        false,
        "retained messages on 60,000-level topics",
    ),
    (
        "retained-amp",
        false,
        "R retained, then SUBSCRIBE with K x `#`",
    ),
    (
        "user-props-queued",
        false,
        "5.0 user properties, offline subscriber",
    ),
    (
        "user-props-retained",
        false,
        "5.0 user properties, retained",
    ),
    (
        "overlap-subs",
        false,
        "8,192 overlapping filters + subscription ids",
    ),
    ("preauth-big", false, "first packet not CONNECT, 8 MiB"),
    ("preauth-slow", false, "slow CONNECT (slowloris)"),
    (
        "preauth-huge-connect",
        false,
        "8 MB CONNECT of user properties",
    ),
    ("login-flood", true, "2,000 wrong passwords"),
    ("long-client-id", false, "60 KB client id, queued QoS 1"),
    ("sessions", false, "many persistent sessions"),
    ("retained-many", false, "many retained messages"),
    ("queued", false, "many queued messages"),
    ("takeover", true, "session take-over by another user"),
    ("topic-alias", false, "outgoing topic alias map growth"),
    ("disconnect-rst", false, "server DISCONNECT lost to RST"),
];

/// What an attack needs to know.
pub struct Target {
    pub addr: std::net::SocketAddr,
    /// Nothing is sent after this.
    pub until: Instant,
    hold: Duration,
    /// The broker's log (stdout and stderr), for what an attack makes it write.
    pub log: PathBuf,
}

impl Target {
    pub fn log_size(&self) -> u64 {
        std::fs::metadata(&self.log).map_or(0, |m| m.len())
    }
}

impl Target {
    /// How long to hold state while measured: `--hold`, within the time limit.
    pub fn hold(&self) -> Duration {
        self.hold
            .min(self.until.saturating_duration_since(Instant::now()))
    }
}

/// What an attack reports: what the attacker got, and what it sent.
pub struct Report {
    pub attacker: String,
    pub input: String,
}

impl Report {
    pub fn new(attacker: String, input: String) -> Report {
        Report { attacker, input }
    }
}

async fn run_one(name: &str, t: &Target) -> Result<Report, String> {
    match name {
        "deep-subscribe" => memory::deep_subscribe(t).await,
        "deep-publish" => memory::deep_publish(t).await,
        "deep-retain" => memory::deep_retain(t).await,
        "retained-amp" => memory::retained_amp(t).await,
        "user-props-queued" => memory::user_props_queued(t).await,
        "user-props-retained" => memory::user_props_retained(t).await,
        "overlap-subs" => memory::overlap_subs(t).await,
        "preauth-big" => conns::preauth_big(t).await,
        "preauth-slow" => conns::preauth_slow(t).await,
        "preauth-huge-connect" => conns::preauth_huge_connect(t).await,
        "login-flood" => conns::login_flood(t).await,
        "long-client-id" => conns::long_client_id(t).await,
        "sessions" => memory::sessions(t).await,
        "retained-many" => memory::retained_many(t).await,
        "queued" => memory::queued(t).await,
        "takeover" => conns::takeover(t).await,
        "topic-alias" => memory::topic_alias_growth(t).await,
        "disconnect-rst" => conns::disconnect_rst(t).await,
        _ => Err(format!("unknown attack {name}")),
    }
}

/// One row of the table.
struct Row {
    attack: String,
    broker: String,
    run: usize,
    input: String,
    attacker: String,
    rss: [Option<u64>; 3],
    base_ms: Option<f64>,
    health: watch::Health,
    log_bytes: Option<u64>,
    broker_note: String,
    secs: f64,
}

fn mib(k: Option<u64>) -> String {
    k.map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

impl Row {
    fn markdown(&self) -> String {
        let growth = match (self.rss[0], self.rss[1]) {
            (Some(a), Some(b)) => format!("{:+.1}", (b as f64 - a as f64) / 1024.0),
            _ => "-".into(),
        };
        let h = &self.health;
        format!(
            "| {} | {} | {} | {} | {} | {} → {} → {} | {growth} | {} → {} / {} ({}/{} failed) | {} | {}{:.0} s |",
            self.attack,
            self.broker,
            self.run,
            cell(&self.input),
            cell(&self.attacker),
            mib(self.rss[0]),
            mib(self.rss[1]),
            mib(self.rss[2]),
            ms(self.base_ms),
            ms(h.p50()),
            ms(h.max()),
            h.failed,
            h.failed + h.ok_ms.len(),
            self.log_bytes.map_or("-".into(), |b| b.to_string()),
            if self.broker_note.is_empty() { String::new() } else { format!("{}; ", cell(&self.broker_note)) },
            self.secs
        )
    }
}

const HEADER: &str = "| attack | broker | run | input | attacker got | RSS MiB before → peak → after | peak growth MiB | healthy round trip ms: baseline → during p50 / max (failed) | broker log bytes | broker, time |\n|---|---|---|---|---|---|---|---|---|---|";

pub fn cmd_attack(rt: &tokio::runtime::Runtime, a: AttackArgs) -> Result<(), BoxError> {
    if a.attacks == "list" {
        for (n, _, what) in ATTACKS {
            println!("{n:22} {what}");
        }
        return Ok(());
    }
    let list: Vec<&(&str, bool, &str)> = if a.attacks == "all" {
        ATTACKS.iter().collect()
    } else {
        a.attacks
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                ATTACKS
                    .iter()
                    .find(|x| x.0 == s)
                    .ok_or_else(|| format!("unknown attack {s:?} (`--attacks list` lists them)"))
            })
            .collect::<Result<_, _>>()?
    };
    let kinds: Vec<Kind> = a
        .brokers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let midge = match &a.midge {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("midge"),
    };
    let mosquitto = a.mosquitto.clone().unwrap_or_else(find_mosquitto);
    let work = a.work_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("midge-attacks-{}", std::process::id()))
    });
    std::fs::create_dir_all(&a.log_dir)?;
    if let Some(d) = a.out.parent() {
        std::fs::create_dir_all(d)?;
    }
    let mut rows = Vec::new();
    for run in 1..=a.runs.max(1) {
        for (name, auth, _) in &list {
            for &kind in &kinds {
                let row = rt.block_on(one(&a, name, *auth, kind, run, &midge, &mosquitto, &work));
                eprintln!("{}", row.markdown());
                rows.push(row);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    let mut md = format!(
        "midge: {}; Mosquitto: {}; --secs {} --hold {}\n\n{HEADER}\n",
        midge.display(),
        mosquitto.display(),
        a.secs,
        a.hold
    );
    for r in &rows {
        md.push_str(&r.markdown());
        md.push('\n');
    }
    println!("{md}");
    std::fs::write(&a.out, &md)?;
    eprintln!("midge-bench attack: table written to {}", a.out.display());
    Ok(())
}

fn find_mosquitto() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("mosquitto"))
                .find(|f| f.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/mosquitto"))
}

#[allow(clippy::too_many_arguments)]
async fn one(
    a: &AttackArgs,
    name: &str,
    auth: bool,
    kind: Kind,
    run: usize,
    midge: &std::path::Path,
    mosquitto: &std::path::Path,
    work: &std::path::Path,
) -> Row {
    let mut row = Row {
        attack: name.into(),
        broker: kind.name().into(),
        run,
        input: String::new(),
        attacker: String::new(),
        rss: [None; 3],
        base_ms: None,
        health: watch::Health::default(),
        log_bytes: None,
        broker_note: String::new(),
        secs: 0.0,
    };
    let log = a.log_dir.join(format!("attack-{name}-{}.log", kind.name()));
    eprintln!("[{name}] {} ...", kind.name());
    let mut st = match brokers::start(kind, midge, mosquitto, &work.join(kind.name()), &log, auth) {
        Ok(s) => s,
        Err(e) => {
            row.broker_note = format!("did not start: {e}");
            return row;
        }
    };
    let pid = st.running.pid;
    let creds = auth.then(|| {
        (
            brokers::USERS[0].0.to_string(),
            brokers::USERS[0].1.to_string(),
        )
    });
    let cref = creds.as_ref().map(|c| (c.0.as_str(), c.1.as_str()));
    let mut base = Vec::new();
    for i in 0..5 {
        if let Ok(d) = watch::probe(st.addr, cref, i).await {
            base.push(d.as_secs_f64() * 1e3);
        }
    }
    row.base_ms = watch::quantile(&base, 0.5);
    row.rss[0] = procs::status_kib(pid, "VmRSS");
    let log_size = || std::fs::metadata(&st.log).map(|m| m.len()).ok();
    let log0 = log_size();
    let rss = watch::RssWatch::start(pid, a.rss_cap_mib * 1024);
    let stop = Arc::new(AtomicBool::new(false));
    let prober = watch::prober(st.addr, creds.clone(), stop.clone());
    let t = Target {
        addr: st.addr,
        until: Instant::now() + Duration::from_secs_f64(a.secs),
        hold: Duration::from_secs_f64(a.hold),
        log: st.log.clone(),
    };
    let t0 = Instant::now();
    // The attack's own limits end it by `until`; this one is for an attack stuck anyway.
    let limit = Duration::from_secs_f64(a.secs + a.hold + 30.0);
    match tokio::time::timeout(limit, run_one(name, &t)).await {
        Ok(Ok(r)) => {
            row.attacker = r.attacker;
            row.input = r.input;
        }
        Ok(Err(e)) => row.attacker = format!("attack stopped: {e}"),
        Err(_) => row.attacker = format!("attack did not end within {limit:?}"),
    }
    row.secs = t0.elapsed().as_secs_f64();
    // The healthy client is measured for --hold seconds at least, also when the broker
    // ended the attack at once.
    tokio::time::sleep_until(t0 + t.hold).await;
    stop.store(true, Ordering::Relaxed);
    row.health = prober.join().unwrap_or_default();
    let (peak, capped) = rss.finish();
    row.rss[1] = Some(peak).filter(|&p| p > 0);
    // Let the broker free what the attacker's closed connections held.
    tokio::time::sleep(Duration::from_secs(2)).await;
    row.rss[2] = procs::status_kib(pid, "VmRSS");
    if let (Some(a), Some(b)) = (log0, log_size()) {
        row.log_bytes = Some(b.saturating_sub(a));
    }
    if capped {
        row.broker_note = format!("KILLED at the {} MiB cap", a.rss_cap_mib);
    } else if !st.running.alive() {
        row.broker_note = "BROKER DIED".into();
    }
    if let Some(e) = &row.health.first_error {
        if !row.broker_note.is_empty() {
            row.broker_note.push_str("; ");
        }
        row.broker_note
            .push_str(&format!("healthy client: {}", kit::short(e)));
    }
    st.running.stop();
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_attack_is_dispatched() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // An address nobody listens on: each attack must fail to connect, never be
        // "unknown".
        let t = Target {
            addr: "127.0.0.1:1".parse().unwrap(),
            until: Instant::now() + Duration::from_millis(200),
            hold: Duration::ZERO,
            log: PathBuf::from("/nonexistent"),
        };
        for (name, _, _) in ATTACKS {
            if *name == "preauth-slow" || *name == "preauth-big" || *name == "preauth-huge-connect"
            {
                continue;
            }
            let r = rt.block_on(run_one(name, &t));
            assert!(
                !matches!(&r, Err(e) if e.starts_with("unknown attack")),
                "{name} not dispatched"
            );
        }
    }
}
