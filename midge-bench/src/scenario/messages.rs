//! The machinery of the message scenarios: a plan (subscribers, publishers), running it
//! (connect, subscribe, publish, wait for the deliveries) and what it measured.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::cpu::CpuUse;
use super::metric::{Better, Metric, Outcome};
use super::{Ctx, Sizes};
use crate::client::{self, BoxError, Conn, Opts};
use crate::stats::{self, Histogram, Tracker};
use crate::workers::{self, PubJob, PubStats, SubStats, Topics};

pub fn pub_job(z: &Sizes, id: u32, topics: Topics, qos: u8, size: usize) -> PubJob {
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

pub struct SubPlan {
    pub filters: Vec<String>,
    /// Publisher ids whose every message this subscriber should get.
    pub sources: Vec<u32>,
}

pub struct Plan {
    pub subs: Vec<SubPlan>,
    pub pubs: Vec<PubJob>,
    pub qos: u8,
    /// Every message goes to exactly one of the subscribers (which one is not known):
    /// losses and duplicates are counted over the union.
    pub merged: bool,
    /// Subscribers connect with clean session 0 (5.0: Clean Start 0 and a session expiry)
    /// and fixed client ids, so that their sessions, and the QoS 1/2 messages for them,
    /// are the broker's to keep; their session must be new (a broker started on a fresh
    /// store).
    pub persistent: bool,
}

/// What a message scenario measured.
pub struct MsgResult {
    pub sent: u64,
    pub acked: u64,
    pub expected: u64,
    pub received: u64,
    pub bytes: u64,
    pub lost: u64,
    pub dups: u64,
    /// From the publishers' start to the last message read.
    pub secs: f64,
    pub send_secs: f64,
    pub latency: Histogram,
    pub errors: Vec<String>,
    pub cpu: CpuUse,
    pub setup_secs: f64,
}

impl MsgResult {
    pub fn summary(&self) -> String {
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

    pub fn cpu_text(&self) -> String {
        format!("setup {:.1} s; {}", self.setup_secs, self.cpu.text())
    }

    pub fn loss_metric(&self, what: &str) -> Metric {
        let text = if self.errors.is_empty() {
            format!("{} / {}", self.lost, self.dups)
        } else {
            format!(
                "{} / {} ({} errors)",
                self.lost,
                self.dups,
                self.errors.len()
            )
        };
        Metric::info(format!("{what}: lost / dup"), self.lost as f64, text)
    }

    pub fn throughput(&self, what: &str) -> Outcome {
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

pub async fn messages(ctx: &Ctx, plan: Plan, max_msgs: u64) -> Result<MsgResult, BoxError> {
    messages_for(ctx, plan, max_msgs, ctx.sizes.load).await
}

/// Connects and subscribes the subscribers, connects the publishers, lets them publish
/// for `load` (or `max_msgs` messages in all), waits for the deliveries, and counts.
pub async fn messages_for(
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
pub async fn connect_and_subscribe(
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

/// Polls `progress` (plus `early`, deliveries counted before it existed) every `poll` until
/// it reaches `expected`, `deadline` passes, or nothing new arrived for `quiet`.
pub async fn wait_for_deliveries(
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
