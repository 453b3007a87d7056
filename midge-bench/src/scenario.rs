//! The scenarios of `midge-bench run`, each bounded in message count and in time, each
//! reporting a few metrics (rows of the final table) and a line of details.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{self, BoxError, Conn, Opts};
use crate::procs;
use crate::stats::{self, Histogram, Tracker};
use crate::workers::{self, PubJob, PubStats, SubStats, Topics};

/// Sizes and limits of the scenarios (the `run` command line).
#[derive(Debug, Clone)]
pub struct Sizes {
    pub load: Duration,
    pub drain: Duration,
    pub quiet: Duration,
    pub max_msgs: u64,
    pub window: usize,
    pub size: usize,
    pub fanin_pubs: usize,
    pub fanout_subs: usize,
    pub pairs: usize,
    pub pairs_qos: u8,
    pub latency_rate: u64,
    pub latency_secs: u64,
    pub latency_qos: u8,
    pub large_size: usize,
    pub large_subs: usize,
    pub large_count: u64,
    pub scale_subs: u64,
    pub scale_conns: usize,
    pub scale_pubs: usize,
    pub retained: u64,
    pub conn_count: usize,
    /// Handshakes in progress at once in the connection-rate scenario.
    pub conn_concurrency: usize,
    pub concurrency: usize,
    /// This executable, to start helper processes when one process has too few file
    /// descriptors for the idle connections.
    pub exe: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    FanIn(u8),
    /// Fan-in QoS 1 to a persistent session: what a durable broker must store.
    Durable,
    FanOut(u8),
    Pairs,
    Latency,
    Idle(usize),
    Large,
    SubScale,
    Retained,
    Conn,
}

pub const DEFAULT_LIST: &str =
    "fanin-q0,fanin-q1,fanout-q0,fanout-q1,pairs,latency,idle,large,sub-scale,retained,conn";

/// Scenarios run only when named.
pub const EXTRA_LIST: &str = "durable-q1";

impl std::str::FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "fanin-q0" => Scenario::FanIn(0),
            "fanin-q1" => Scenario::FanIn(1),
            "durable-q1" => Scenario::Durable,
            "fanout-q0" => Scenario::FanOut(0),
            "fanout-q1" => Scenario::FanOut(1),
            "pairs" => Scenario::Pairs,
            "latency" => Scenario::Latency,
            "idle" => Scenario::Idle(10_000),
            "large" => Scenario::Large,
            "sub-scale" => Scenario::SubScale,
            "retained" => Scenario::Retained,
            "conn" => Scenario::Conn,
            _ => match s.strip_prefix("idle:") {
                Some(n) => Scenario::Idle(
                    n.replace('_', "")
                        .parse()
                        .map_err(|_| format!("idle:{n}: expected a number of connections"))?,
                ),
                None => {
                    return Err(format!(
                        "unknown scenario {s:?} (known: {DEFAULT_LIST}, {EXTRA_LIST}, idle:N)"
                    ))
                }
            },
        })
    }
}

impl Scenario {
    pub fn name(&self) -> String {
        match self {
            Scenario::FanIn(q) => format!("fanin-q{q}"),
            Scenario::Durable => "durable-q1".into(),
            Scenario::FanOut(q) => format!("fanout-q{q}"),
            Scenario::Pairs => "pairs".into(),
            Scenario::Latency => "latency".into(),
            Scenario::Idle(n) => format!("idle:{n}"),
            Scenario::Large => "large".into(),
            Scenario::SubScale => "sub-scale".into(),
            Scenario::Retained => "retained".into(),
            Scenario::Conn => "conn".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
    /// A count to read, not to compare (losses, errors).
    Info,
}

/// One cell of the table: a row label, its direction and this broker's value.
#[derive(Debug, Clone)]
pub struct Metric {
    pub label: String,
    pub better: Better,
    pub value: f64,
    pub text: String,
}

impl Metric {
    fn num(label: String, better: Better, value: f64, decimals: usize) -> Metric {
        Metric {
            label,
            better,
            value,
            text: fmt_num(value, decimals),
        }
    }
}

/// `1234567.8` → `1,234,568` (with `decimals` 0).
pub fn fmt_num(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let s = format!("{:.*}", decimals, v.abs());
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i.to_owned(), Some(f.to_owned())),
        None => (s.clone(), None),
    };
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if let Some(f) = frac {
        out.push('.');
        out.push_str(&f);
    }
    if v < 0.0 {
        out.insert(0, '-');
    }
    out
}

pub struct Outcome {
    pub metrics: Vec<Metric>,
    pub detail: String,
}

pub struct Ctx {
    pub opts: Arc<Opts>,
    /// The broker's pid, for its memory.
    pub pid: Option<u32>,
    pub sizes: Sizes,
}

/// `fanin_pubs` publishers, one topic each under `prefix`, into one subscriber of
/// `prefix/#` (with a persistent session when `persistent`).
fn fan_in_plan(z: &Sizes, prefix: &str, qos: u8, persistent: bool) -> Plan {
    let p = z.fanin_pubs;
    Plan {
        subs: vec![SubPlan {
            filters: vec![format!("{prefix}/#")],
            sources: (0..p as u32).collect(),
        }],
        pubs: (0..p)
            .map(|i| {
                pub_job(
                    z,
                    i as u32,
                    Topics::Fixed(format!("{prefix}/{i}")),
                    qos,
                    z.size,
                )
            })
            .collect(),
        qos,
        merged: false,
        persistent,
    }
}

pub async fn run(s: &Scenario, ctx: &Ctx) -> Result<Outcome, BoxError> {
    let z = &ctx.sizes;
    match *s {
        Scenario::FanIn(qos) => {
            let p = z.fanin_pubs;
            let plan = fan_in_plan(z, "bench/fanin", qos, false);
            let r = messages(ctx, plan, z.max_msgs).await?;
            Ok(r.throughput(&format!(
                "fan-in QoS {qos}, {p} pub → 1 wildcard sub, {} B",
                z.size
            )))
        }
        Scenario::Durable => {
            let p = z.fanin_pubs;
            let plan = fan_in_plan(z, "bench/durable", 1, true);
            let io0 = ctx.pid.and_then(procs::io_bytes);
            let r = messages(ctx, plan, z.max_msgs).await?;
            let io1 = ctx.pid.and_then(procs::io_bytes);
            let what = format!(
                "durable QoS 1, {p} pub → 1 persistent-session sub, {} B",
                z.size
            );
            let mut out = r.throughput(&what);
            // Whether, and how much, the broker wrote: a store that is not in use shows.
            if let (Some(w0), Some(w1)) = (io0, io1) {
                let bytes = w1.saturating_sub(w0);
                let _ = write!(
                    out.detail,
                    "; broker wrote {:.1} MiB to storage ({:.0} B per message acknowledged)",
                    bytes as f64 / (1024.0 * 1024.0),
                    bytes as f64 / r.acked.max(1) as f64,
                );
            }
            // What a durable broker's store limits first: how fast publishers get PUBACK.
            out.metrics.insert(
                1,
                Metric::num(
                    format!("{what}: msg/s acknowledged to publishers"),
                    Better::Higher,
                    r.acked as f64 / r.send_secs.max(1e-9),
                    0,
                ),
            );
            Ok(out)
        }
        Scenario::FanOut(qos) => {
            let n = z.fanout_subs;
            let plan = Plan {
                subs: (0..n)
                    .map(|_| SubPlan {
                        filters: vec!["bench/fanout".into()],
                        sources: vec![0],
                    })
                    .collect(),
                pubs: vec![pub_job(
                    z,
                    0,
                    Topics::Fixed("bench/fanout".into()),
                    qos,
                    z.size,
                )],
                qos,
                merged: false,
                persistent: false,
            };
            // Deliveries are n times the messages: bound what the publisher sends.
            let r = messages(ctx, plan, (z.max_msgs / n as u64).max(1)).await?;
            Ok(r.throughput(&format!(
                "fan-out QoS {qos}, 1 pub → {n} subs, {} B",
                z.size
            )))
        }
        Scenario::Pairs => {
            let n = z.pairs;
            let qos = z.pairs_qos;
            let plan = Plan {
                subs: (0..n)
                    .map(|i| SubPlan {
                        filters: vec![format!("bench/pair/{i}")],
                        sources: vec![i as u32],
                    })
                    .collect(),
                pubs: (0..n)
                    .map(|i| {
                        pub_job(
                            z,
                            i as u32,
                            Topics::Fixed(format!("bench/pair/{i}")),
                            qos,
                            z.size,
                        )
                    })
                    .collect(),
                qos,
                merged: false,
                persistent: false,
            };
            let r = messages(ctx, plan, z.max_msgs).await?;
            Ok(r.throughput(&format!(
                "pairs QoS {qos}, {n} × (1 pub → 1 sub), {} B",
                z.size
            )))
        }
        Scenario::Latency => {
            let qos = z.latency_qos;
            let mut job = pub_job(z, 0, Topics::Fixed("bench/latency".into()), qos, z.size);
            job.rate = Some(z.latency_rate as f64);
            job.count = z.latency_rate * z.latency_secs;
            let plan = Plan {
                subs: vec![SubPlan {
                    filters: vec!["bench/latency".into()],
                    sources: vec![0],
                }],
                pubs: vec![job],
                qos,
                merged: false,
                persistent: false,
            };
            let load = Duration::from_secs(z.latency_secs) + Duration::from_secs(1);
            let r = messages_for(ctx, plan, u64::MAX, load).await?;
            let what = format!(
                "latency QoS {qos}, {} msg/s for {} s",
                z.latency_rate, z.latency_secs
            );
            let h = &r.latency;
            let ms = |v: u64| v as f64 / 1e6;
            let mut metrics = Vec::new();
            for (q, name) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")] {
                metrics.push(Metric::num(
                    format!("{what}: {name} ms"),
                    Better::Lower,
                    ms(h.quantile(q)),
                    3,
                ));
            }
            metrics.push(Metric::num(
                format!("{what}: max ms"),
                Better::Lower,
                ms(h.max),
                3,
            ));
            metrics.push(r.loss_metric(&what));
            let detail = format!(
                "{} mean {:.3} ms; achieved rate {:.0} msg/s; {}",
                r.summary(),
                ms(h.mean()),
                r.sent as f64 / r.send_secs.max(1e-9),
                r.cpu_text()
            );
            Ok(Outcome { metrics, detail })
        }
        Scenario::Idle(n) => idle(ctx, n).await,
        Scenario::Large => {
            let n = z.large_subs;
            let mut job = pub_job(z, 0, Topics::Fixed("bench/large".into()), 1, z.large_size);
            job.window = 8;
            let plan = Plan {
                subs: (0..n)
                    .map(|_| SubPlan {
                        filters: vec!["bench/large".into()],
                        sources: vec![0],
                    })
                    .collect(),
                pubs: vec![job],
                qos: 1,
                merged: false,
                persistent: false,
            };
            let r = messages(ctx, plan, z.large_count).await?;
            let mib = z.large_size as f64 / (1024.0 * 1024.0);
            let what = format!("{mib:.0} MiB payloads QoS 1, 1 pub → {n} subs");
            let rate = r.bytes as f64 / (1024.0 * 1024.0) / r.secs.max(1e-9);
            Ok(Outcome {
                metrics: vec![
                    Metric::num(format!("{what}: MiB/s delivered"), Better::Higher, rate, 1),
                    r.loss_metric(&what),
                ],
                detail: format!("{} {}", r.summary(), r.cpu_text()),
            })
        }
        Scenario::SubScale => sub_scale(ctx).await,
        Scenario::Retained => retained(ctx).await,
        Scenario::Conn => conn_rate(ctx).await,
    }
}

fn pub_job(z: &Sizes, id: u32, topics: Topics, qos: u8, size: usize) -> PubJob {
    let now = Instant::now();
    PubJob {
        id,
        topics,
        qos,
        retain: false,
        size,
        count: u64::MAX,
        rate: None,
        window: z.window,
        send_until: now,
        give_up_at: now,
        keep_alive: Duration::from_secs(60),
    }
}

struct SubPlan {
    filters: Vec<String>,
    /// Publisher ids whose every message this subscriber should get.
    sources: Vec<u32>,
}

struct Plan {
    subs: Vec<SubPlan>,
    pubs: Vec<PubJob>,
    qos: u8,
    /// Every message goes to exactly one of the subscribers (which one is not known):
    /// losses and duplicates are counted over the union.
    merged: bool,
    /// Subscribers connect with clean session 0 (5.0: Clean Start 0 and a session expiry)
    /// and fixed client ids, so that their sessions, and the QoS 1/2 messages for them,
    /// are the broker's to keep; their session must be new (a broker started on a fresh
    /// store).
    persistent: bool,
}

/// What a message scenario measured.
struct MsgResult {
    sent: u64,
    acked: u64,
    expected: u64,
    received: u64,
    bytes: u64,
    lost: u64,
    dups: u64,
    /// From the publishers' start to the last message read.
    secs: f64,
    send_secs: f64,
    latency: Histogram,
    errors: Vec<String>,
    cpu: CpuUse,
    setup_secs: f64,
}

#[derive(Default)]
struct CpuUse {
    broker: Option<f64>,
    bench: f64,
    wall: f64,
}

impl CpuUse {
    fn start(pid: Option<u32>) -> (Option<f64>, f64, std::time::Instant) {
        (
            pid.and_then(procs::cpu_secs),
            procs::own_cpu_secs(),
            std::time::Instant::now(),
        )
    }

    fn since(pid: Option<u32>, start: (Option<f64>, f64, std::time::Instant)) -> CpuUse {
        CpuUse {
            broker: match (pid.and_then(procs::cpu_secs), start.0) {
                (Some(b), Some(a)) => Some(b - a),
                _ => None,
            },
            bench: procs::own_cpu_secs() - start.1,
            wall: start.2.elapsed().as_secs_f64(),
        }
    }

    fn text(&self) -> String {
        let pct = |c: f64| 100.0 * c / self.wall.max(1e-9);
        let broker = self
            .broker
            .map_or("broker ?".to_owned(), |b| format!("broker {:.0}%", pct(b)));
        format!(
            "cpu over {:.1} s: {broker}, bench {:.0}% (of one core)",
            self.wall,
            pct(self.bench)
        )
    }
}

impl MsgResult {
    fn summary(&self) -> String {
        let mut s = format!(
            "sent {} (acked {}), expected {}, received {}, lost {}, dup {}, {:.2} s",
            self.sent, self.acked, self.expected, self.received, self.lost, self.dups, self.secs
        );
        if !self.errors.is_empty() {
            let _ = write!(
                s,
                "; {} errors, first: {}",
                self.errors.len(),
                self.errors[0]
            );
        }
        s
    }

    fn cpu_text(&self) -> String {
        format!("setup {:.1} s; {}", self.setup_secs, self.cpu.text())
    }

    fn loss_metric(&self, what: &str) -> Metric {
        Metric {
            label: format!("{what}: lost / dup"),
            better: Better::Info,
            value: self.lost as f64,
            text: if self.errors.is_empty() {
                format!("{} / {}", self.lost, self.dups)
            } else {
                format!(
                    "{} / {} ({} errors)",
                    self.lost,
                    self.dups,
                    self.errors.len()
                )
            },
        }
    }

    fn throughput(&self, what: &str) -> Outcome {
        let rate = self.received as f64 / self.secs.max(1e-9);
        let p50 = self.latency.quantile(0.5) as f64 / 1e6;
        let p99 = self.latency.quantile(0.99) as f64 / 1e6;
        Outcome {
            metrics: vec![
                Metric::num(format!("{what}: msg/s delivered"), Better::Higher, rate, 0),
                self.loss_metric(what),
            ],
            detail: format!(
                "{}; publish rate {:.0} msg/s; latency under load p50 {p50:.1} ms p99 {p99:.1} ms; {}",
                self.summary(),
                self.sent as f64 / self.send_secs.max(1e-9),
                self.cpu_text()
            ),
        }
    }
}

async fn messages(ctx: &Ctx, plan: Plan, max_msgs: u64) -> Result<MsgResult, BoxError> {
    messages_for(ctx, plan, max_msgs, ctx.sizes.load).await
}

/// Connects and subscribes the subscribers, connects the publishers, lets them publish
/// for `load` (or `max_msgs` messages in all), waits for the deliveries, and counts.
async fn messages_for(
    ctx: &Ctx,
    mut plan: Plan,
    max_msgs: u64,
    load: Duration,
) -> Result<MsgResult, BoxError> {
    let z = &ctx.sizes;
    let opts = &ctx.opts;
    let setup_start = Instant::now();
    let qos = plan.qos;
    let ka = Duration::from_secs(u64::from(opts.keep_alive));

    // Subscribers: connect and subscribe, `concurrency` at a time.
    let filters: Vec<Vec<String>> = plan.subs.iter().map(|s| s.filters.clone()).collect();
    let (prefix, clean) = if plan.persistent {
        ("bench-durable-sub", false)
    } else {
        ("bench-sub", true)
    };
    let subs = connect_and_subscribe(opts, prefix, filters, qos, z.concurrency, 0, clean).await?;

    let n_pubs = plan.pubs.len();
    let pub_conns: Vec<Conn> =
        client::connect_many(opts, n_pubs, z.concurrency, |i| format!("bench-pub-{i}"))
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
    let setup_secs = setup_start.elapsed().as_secs_f64();

    let (stop_tx, stop_rx) = watch::channel(false);
    let progress = Arc::new(AtomicU64::new(0));
    let cpu0 = CpuUse::start(ctx.pid);
    let mut sub_tasks = Vec::new();
    let mut early = 0;
    for (conn, st) in subs {
        early += st.received;
        sub_tasks.push(tokio::spawn(workers::receive(
            conn,
            st,
            stop_rx.clone(),
            progress.clone(),
            ka,
        )));
    }
    let start = Instant::now();
    let start_ns = stats::now_ns();
    let per_pub = (max_msgs / n_pubs.max(1) as u64).max(1);
    let mut pub_tasks = Vec::new();
    for (conn, mut job) in pub_conns.into_iter().zip(plan.pubs.drain(..)) {
        job.count = job.count.min(per_pub);
        job.send_until = start + load;
        job.give_up_at = start + load + z.drain;
        job.keep_alive = ka;
        pub_tasks.push(tokio::spawn(workers::publish(conn, job)));
    }
    let mut pub_stats: Vec<PubStats> = Vec::new();
    let mut conns = Vec::new();
    let mut errors = Vec::new();
    for t in pub_tasks {
        let (c, st) = t.await?;
        if let Some(e) = &st.error {
            errors.push(format!("publisher: {e}"));
        }
        conns.push(c);
        pub_stats.push(st);
    }
    let send_secs = pub_stats
        .iter()
        .filter_map(|s| Some((s.finished? - s.started?).as_secs_f64()))
        .fold(0.0, f64::max);
    let sent_by = |id: u32| pub_stats.get(id as usize).map_or(0, |s| s.sent);
    let expected: u64 = if plan.merged {
        pub_stats.iter().map(|s| s.sent).sum()
    } else {
        plan.subs
            .iter()
            .map(|s| s.sources.iter().map(|&p| sent_by(p)).sum::<u64>())
            .sum()
    };

    // Deliveries: until all expected arrived, nothing came for `quiet`, or the deadline.
    let deadline = start + load + z.drain;
    wait_for_deliveries(
        &progress,
        early,
        expected,
        deadline,
        z.quiet,
        Duration::from_millis(10),
    )
    .await;
    stop_tx.send(true)?;
    let mut sub_stats: Vec<SubStats> = Vec::new();
    for t in sub_tasks {
        let (c, st) = t.await?;
        if let Some(e) = &st.error {
            errors.push(format!("subscriber: {e}"));
        }
        conns.push(c);
        sub_stats.push(st);
    }
    let cpu = CpuUse::since(ctx.pid, cpu0);
    client::close_all(conns, z.concurrency).await;
    if plan.persistent {
        // End the persistent sessions (a clean-session CONNECT discards them), so that a
        // broker that keeps running, or keeps its store, is left as it was found.
        for i in 0..plan.subs.len() {
            if let Ok((c, _)) = Conn::connect_session(opts, &format!("{prefix}-{i}"), i, true).await
            {
                c.close().await;
            }
        }
    }

    let received: u64 = sub_stats.iter().map(|s| s.received).sum();
    let bytes: u64 = sub_stats.iter().map(|s| s.bytes).sum();
    let last_ns = sub_stats
        .iter()
        .map(|s| s.last_ns)
        .max()
        .unwrap_or(start_ns);
    let mut latency = Histogram::default();
    for s in &sub_stats {
        latency.merge(&s.latency);
    }
    let (lost, dups) = if plan.merged {
        let mut all = Tracker::default();
        for s in &sub_stats {
            all.merge(&s.tracker);
        }
        (expected.saturating_sub(all.unique), all.dups)
    } else {
        let mut lost = 0;
        let mut dups = 0;
        for (plan, st) in plan.subs.iter().zip(&sub_stats) {
            for &p in &plan.sources {
                lost += sent_by(p).saturating_sub(st.tracker.unique_from(p));
            }
            dups += st.tracker.dups;
        }
        (lost, dups)
    };
    Ok(MsgResult {
        sent: pub_stats.iter().map(|s| s.sent).sum(),
        acked: pub_stats.iter().map(|s| s.acked).sum(),
        expected,
        received,
        bytes,
        lost,
        dups,
        secs: last_ns.saturating_sub(start_ns) as f64 / 1e9,
        send_secs,
        latency,
        errors,
        cpu,
        setup_secs,
    })
}

/// Connects one subscriber per entry of `filters` and subscribes it to them. Messages
/// that arrive during the subscription are counted in the returned stats. Without a
/// clean session, a broker that already had a session for one of the client ids (a store
/// left over from an earlier run) is an error.
async fn connect_and_subscribe(
    opts: &Arc<Opts>,
    prefix: &str,
    filters: Vec<Vec<String>>,
    qos: u8,
    concurrency: usize,
    index_base: usize,
    clean: bool,
) -> Result<Vec<(Conn, SubStats)>, BoxError> {
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    let n = filters.len();
    for (i, f) in filters.into_iter().enumerate() {
        let permit = sem.clone().acquire_owned().await?;
        let opts = opts.clone();
        let id = format!("{prefix}-{}", index_base + i);
        set.spawn(async move {
            let r = async {
                let (mut conn, present) =
                    Conn::connect_session(&opts, &id, index_base + i, clean).await?;
                if present && !clean {
                    return Err(format!(
                        "the broker already had a session for {id:?} (is its store fresh?)"
                    )
                    .into());
                }
                let mut st = SubStats::default();
                let mut perr = None;
                let refused =
                    client::subscribe(&mut conn, &f, qos, Duration::from_secs(60), |p, out| {
                        if let Err(e) = st.on_packet(p, stats::now_ns(), out) {
                            perr = Some(e);
                        }
                    })
                    .await?;
                if let Some(e) = perr {
                    return Err(e.into());
                }
                if refused > 0 {
                    return Err(format!("{refused} of {} subscriptions refused", f.len()).into());
                }
                Ok::<_, BoxError>((conn, st))
            }
            .await;
            drop(permit);
            (i, r)
        });
    }
    let mut out: Vec<Option<(Conn, SubStats)>> = (0..n).map(|_| None).collect();
    let mut first_err = None;
    while let Some(r) = set.join_next().await {
        match r? {
            (i, Ok(v)) => out[i] = Some(v),
            (_, Err(e)) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        let ok: Vec<Conn> = out.into_iter().flatten().map(|(c, _)| c).collect();
        client::close_all(ok, concurrency).await;
        return Err(format!("subscriber setup failed: {e}").into());
    }
    Ok(out.into_iter().map(|v| v.expect("all set")).collect())
}

/// 100,000 wildcard subscriptions over `scale_conns` connections; publishers send to
/// random topics, each of which matches exactly one of them.
async fn sub_scale(ctx: &Ctx) -> Result<Outcome, BoxError> {
    let z = &ctx.sizes;
    let n = z.scale_subs;
    let per = n.div_ceil(z.scale_conns as u64);
    let filters: Vec<Vec<String>> = (0..z.scale_conns as u64)
        .map(|c| {
            (c * per..((c + 1) * per).min(n))
                .map(workers::scale_filter)
                .collect()
        })
        .collect();
    let t0 = Instant::now();
    let rss0 = ctx.pid.and_then(|p| procs::status_kib(p, "VmRSS"));
    // Subscribe once to time it, keep those connections for the load.
    let subs = connect_and_subscribe(
        &ctx.opts,
        "bench-scale",
        filters.clone(),
        1,
        z.concurrency,
        0,
        true,
    )
    .await?;
    let sub_secs = t0.elapsed().as_secs_f64();
    let rss1 = ctx.pid.and_then(|p| procs::status_kib(p, "VmRSS"));
    client::close_all(subs.into_iter().map(|(c, _)| c).collect(), z.concurrency).await;
    let plan = Plan {
        subs: filters
            .into_iter()
            .map(|f| SubPlan {
                filters: f,
                sources: Vec::new(),
            })
            .collect(),
        pubs: (0..z.scale_pubs)
            .map(|i| {
                pub_job(
                    z,
                    i as u32,
                    Topics::Scale {
                        n,
                        seed: 0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1),
                    },
                    1,
                    z.size,
                )
            })
            .collect(),
        qos: 1,
        merged: true,
        persistent: false,
    };
    let r = messages(ctx, plan, z.max_msgs).await?;
    let what = format!("{n} wildcard subscriptions, QoS 1, {} pub", z.scale_pubs);
    let rate = r.received as f64 / r.secs.max(1e-9);
    let mem = match (rss0, rss1) {
        (Some(a), Some(b)) => format!(
            "broker RSS +{} KiB for the subscriptions; ",
            b.saturating_sub(a)
        ),
        _ => String::new(),
    };
    Ok(Outcome {
        metrics: vec![
            Metric::num(format!("{what}: msg/s delivered"), Better::Higher, rate, 0),
            Metric::num(
                format!("{what}: s to subscribe all"),
                Better::Lower,
                sub_secs,
                2,
            ),
            r.loss_metric(&what),
        ],
        detail: format!(
            "{mem}{}; publish rate {:.0} msg/s; {}",
            r.summary(),
            r.sent as f64 / r.send_secs.max(1e-9),
            r.cpu_text()
        ),
    })
}

/// Stores `retained` retained messages (QoS 1, one topic each), then times a `#`
/// subscriber until it has them all.
async fn retained(ctx: &Ctx) -> Result<Outcome, BoxError> {
    let z = &ctx.sizes;
    let n = z.retained;
    let opts = &ctx.opts;
    let conn = Conn::connect(opts, "bench-retain-pub", 0).await?;
    let now = Instant::now();
    let mut job = pub_job(z, 0, Topics::Tree("bench/retained".into()), 1, z.size);
    job.retain = true;
    job.count = n;
    job.window = 100;
    job.send_until = now + Duration::from_secs(120);
    job.give_up_at = now + Duration::from_secs(150);
    let t0 = Instant::now();
    let (conn, pst) = workers::publish(conn, job).await;
    let store_secs = t0.elapsed().as_secs_f64();
    conn.close().await;
    if let Some(e) = pst.error {
        return Err(format!("storing retained messages: {e}").into());
    }
    let cpu0 = CpuUse::start(ctx.pid);
    let t1 = Instant::now();
    let t1_ns = stats::now_ns();
    let mut subs = connect_and_subscribe(
        opts,
        "bench-retain-sub",
        vec![vec!["#".into()]],
        1,
        1,
        0,
        true,
    )
    .await?;
    let (conn, st) = subs.pop().ok_or("no subscriber")?;
    let early = st.received;
    let (stop_tx, stop_rx) = watch::channel(false);
    let progress = Arc::new(AtomicU64::new(0));
    let ka = Duration::from_secs(u64::from(opts.keep_alive));
    let task = tokio::spawn(workers::receive(conn, st, stop_rx, progress.clone(), ka));
    let deadline = t1 + Duration::from_secs(120);
    wait_for_deliveries(
        &progress,
        early,
        n,
        deadline,
        z.quiet,
        Duration::from_millis(5),
    )
    .await;
    stop_tx.send(true)?;
    let (conn, st) = task.await?;
    let cpu = CpuUse::since(ctx.pid, cpu0);
    conn.close().await;
    let secs = st.last_ns.saturating_sub(t1_ns) as f64 / 1e9;
    let lost = n.saturating_sub(st.tracker.unique_from(0));
    let what = format!("{n} retained topics, `#` subscriber QoS 1");
    let mut errs = String::new();
    if let Some(e) = &st.error {
        errs = format!(" (error: {e})");
    }
    Ok(Outcome {
        metrics: vec![
            Metric::num(format!("{what}: s until all received"), Better::Lower, secs, 2),
            Metric::num(format!("{what}: s to store all (publisher, QoS 1)"), Better::Lower, store_secs, 2),
            Metric {
                label: format!("{what}: lost / dup"),
                better: Better::Info,
                value: lost as f64,
                text: format!("{lost} / {}{errs}", st.tracker.dups),
            },
        ],
        detail: format!(
            "stored {} (acked {}) in {store_secs:.2} s; received {} ({} with retain flag) in {secs:.2} s; {}",
            pst.sent,
            pst.acked,
            st.received,
            st.retained,
            cpu.text()
        ),
    })
}

/// Connection setup rate: `conn_count` connections (TCP + CONNECT/CONNACK), at most
/// `concurrency` handshakes at a time, all held until the last one is up.
async fn conn_rate(ctx: &Ctx) -> Result<Outcome, BoxError> {
    let z = &ctx.sizes;
    let n = z.conn_count;
    // Warm-up, not measured: the first thousands of connections of a process cost the
    // load generator more (allocator growth, task slab), which would favour whichever
    // broker comes later in a run.
    let warm = client::connect_many(&ctx.opts, n, z.conn_concurrency, |i| {
        format!("bench-warm-{i}")
    })
    .await;
    client::close_all(warm.into_iter().flatten().collect(), z.concurrency).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let overflows0 = procs::listen_overflows();
    let cpu0 = CpuUse::start(ctx.pid);
    let t0 = Instant::now();
    let results = client::connect_many(&ctx.opts, n, z.conn_concurrency, |i| {
        format!("bench-conn-{i}")
    })
    .await;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = CpuUse::since(ctx.pid, cpu0);
    let mut ok = Vec::new();
    let mut errors = 0;
    let mut first = None;
    for r in results {
        match r {
            Ok(c) => ok.push(c),
            Err(e) => {
                errors += 1;
                first.get_or_insert(e.to_string());
            }
        }
    }
    let up = ok.len();
    let overflows = overflow_text(overflows0);
    client::close_all(ok, z.concurrency).await;
    let what = format!(
        "connect {n} clients, {} handshakes at a time",
        z.conn_concurrency
    );
    let mut metrics = vec![Metric::num(
        format!("{what}: connections/s"),
        Better::Higher,
        up as f64 / secs.max(1e-9),
        0,
    )];
    // On loopback the kernel's share of each handshake is charged to the connecting side,
    // so the rate can be capped by the load generator's core; the broker's own CPU time
    // per connection is the figure that cap does not blur.
    if let Some(b) = cpu.broker {
        metrics.push(Metric::num(
            format!("{what}: broker CPU µs per connection"),
            Better::Lower,
            b * 1e6 / up.max(1) as f64,
            1,
        ));
    }
    metrics.push(Metric {
        label: format!("{what}: errors"),
        better: Better::Info,
        value: errors as f64,
        text: errors.to_string(),
    });
    Ok(Outcome {
        metrics,
        detail: format!(
            "{up} up in {secs:.2} s, {errors} failed{}{overflows}; {}",
            first.map(|e| format!(" (first: {e})")).unwrap_or_default(),
            cpu.text()
        ),
    })
}

/// What the idle connections of one process achieved.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdleCount {
    pub ok: usize,
    pub failed: usize,
}

/// Opens `n` connections with index `base..base+n`, each subscribed to its own topic
/// `bench/idle/<index>` at QoS 1; stops trying after `max_errors` failures.
pub async fn open_idle(
    opts: &Arc<Opts>,
    base: usize,
    n: usize,
    concurrency: usize,
    max_errors: usize,
) -> (Vec<Conn>, IdleCount, Option<String>) {
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let failed = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    for i in base..base + n {
        if failed.load(Ordering::Relaxed) as usize >= max_errors {
            break;
        }
        let permit = sem.clone().acquire_owned().await.expect("semaphore open");
        let opts = opts.clone();
        let failed = failed.clone();
        set.spawn(async move {
            let r = async {
                let mut c = Conn::connect(&opts, &format!("bench-idle-{i}"), i).await?;
                let refused = client::subscribe(
                    &mut c,
                    &[format!("bench/idle/{i}")],
                    1,
                    opts.timeout,
                    |_, _| {},
                )
                .await?;
                if refused > 0 {
                    return Err::<Conn, BoxError>("subscription refused".into());
                }
                Ok(c)
            }
            .await;
            if r.is_err() {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
            r
        });
    }
    let mut conns = Vec::with_capacity(n);
    let mut count = IdleCount::default();
    let mut first = None;
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(c)) => {
                conns.push(c);
                count.ok += 1;
            }
            Ok(Err(e)) => {
                count.failed += 1;
                first.get_or_insert(e.to_string());
            }
            Err(e) => {
                count.failed += 1;
                first.get_or_insert(e.to_string());
            }
        }
    }
    // Those never tried count as failed too.
    count.failed = n - count.ok;
    (conns, count, first)
}

/// Idle connections, one subscription each: the broker's resident memory per connection.
/// One process can hold only as many sockets as its open-files limit allows; beyond
/// that, helper processes (`midge-bench conn --hold-stdin`) hold the rest.
async fn idle(ctx: &Ctx, n: usize) -> Result<Outcome, BoxError> {
    let z = &ctx.sizes;
    let limit = procs::raise_nofile() as usize;
    let per_proc = limit.saturating_sub(200).max(100);
    let max_errors = 200;
    let broker_limit = ctx.pid.and_then(procs::nofile_of);
    // Let the broker settle after start-up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0 = ctx.pid.and_then(|p| procs::status_kib(p, "VmRSS"));
    let overflows0 = procs::listen_overflows();
    let cpu0 = CpuUse::start(ctx.pid);
    let t0 = Instant::now();
    let mut count = IdleCount::default();
    let mut first_err = None;
    let mut local = Vec::new();
    let mut children = Vec::new();
    if n <= per_proc {
        let (c, k, e) = open_idle(&ctx.opts, 0, n, z.concurrency, max_errors).await;
        local = c;
        count = k;
        first_err = e;
    } else {
        let procs_needed = n.div_ceil(per_proc);
        let share = n.div_ceil(procs_needed);
        let mut readers = Vec::new();
        for k in 0..procs_needed {
            let base = k * share;
            let count_k = share.min(n - base);
            let mut cmd = tokio::process::Command::new(&z.exe);
            cmd.arg("--threads")
                .arg("1")
                .arg("--host")
                .arg(ctx.opts.host.to_string())
                .arg("--port")
                .arg(ctx.opts.port.to_string())
                .arg("--sources")
                .arg(ctx.opts.sources.len().to_string())
                .arg("conn")
                .arg("--count")
                .arg(count_k.to_string())
                .arg("--index-base")
                .arg(base.to_string())
                .arg("--concurrency")
                .arg(z.concurrency.to_string())
                .arg("--subscribe")
                .arg("--hold-stdin")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true);
            let mut child = cmd.spawn()?;
            let out = child.stdout.take().ok_or("no stdout")?;
            readers.push(BufReader::new(out).lines());
            children.push(child);
        }
        for r in &mut readers {
            // "READY ok=N failed=M [first error]"
            let line = tokio::time::timeout(Duration::from_secs(600), r.next_line())
                .await
                .map_err(|_| "helper process did not report")??
                .unwrap_or_default();
            let mut it = line.splitn(4, ' ');
            if it.next() != Some("READY") {
                return Err(format!("helper process said {line:?}").into());
            }
            let num = |s: Option<&str>| {
                s.and_then(|s| s.split('=').nth(1)?.parse::<usize>().ok())
                    .unwrap_or(0)
            };
            count.ok += num(it.next());
            count.failed += num(it.next());
            if let Some(e) = it.next() {
                first_err.get_or_insert(e.to_owned());
            }
        }
    }
    let setup = t0.elapsed().as_secs_f64();
    let overflows = overflow_text(overflows0);
    // Give the broker a moment to finish whatever it does after SUBACK.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss1 = ctx.pid.and_then(|p| procs::status_kib(p, "VmRSS"));
    let cpu = CpuUse::since(ctx.pid, cpu0);
    client::close_all(local, z.concurrency).await;
    for mut c in children {
        if let Some(mut stdin) = c.stdin.take() {
            let _ = stdin.shutdown().await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(60), c.wait()).await;
    }
    let what = format!(
        "{} idle connections, 1 subscription each",
        fmt_num(n as f64, 0)
    );
    let mut metrics = Vec::new();
    let mut detail = format!("{} up, {} failed in {setup:.1} s", count.ok, count.failed);
    if let Some(e) = &first_err {
        let _ = write!(detail, " (first error: {e})");
    }
    detail.push_str(&overflows);
    if let Some(l) = broker_limit {
        let _ = write!(detail, "; broker open-files limit {l}");
    }
    if let (Some(a), Some(b)) = (rss0, rss1) {
        let per = (b as f64 - a as f64) / count.ok.max(1) as f64;
        metrics.push(Metric::num(
            format!("{what}: broker RSS KiB per connection"),
            Better::Lower,
            per,
            2,
        ));
        let _ = write!(detail, "; broker RSS {a} → {b} KiB");
    }
    metrics.push(Metric {
        label: format!("{what}: failed connections"),
        better: Better::Info,
        value: count.failed as f64,
        text: count.failed.to_string(),
    });
    let _ = write!(detail, "; {}", cpu.text());
    Ok(Outcome { metrics, detail })
}

/// `, N accept-queue overflows` since `before`, when there were any.
fn overflow_text(before: Option<u64>) -> String {
    match (before, procs::listen_overflows()) {
        (Some(a), Some(b)) if b > a => {
            format!(", {} accept-queue overflows (SYN retried after 1 s)", b - a)
        }
        _ => String::new(),
    }
}

/// Polls `progress` (plus `early`, deliveries counted before it existed) every `poll` until
/// it reaches `expected`, `deadline` passes, or nothing new arrived for `quiet`.
async fn wait_for_deliveries(
    progress: &AtomicU64,
    early: u64,
    expected: u64,
    deadline: Instant,
    quiet: Duration,
    poll: Duration,
) {
    let mut last_seen = progress.load(Ordering::Relaxed) + early;
    let mut last_change = Instant::now();
    loop {
        let got = progress.load(Ordering::Relaxed) + early;
        if got >= expected {
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        if got != last_seen {
            last_seen = got;
            last_change = now;
        } else if now - last_change >= quiet {
            return;
        }
        tokio::time::sleep(poll).await;
    }
}
