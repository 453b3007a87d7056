//! The offline backlog (issue 16), measured from outside as a user would see it: S
//! persistent sessions subscribe and go offline, publishers queue `total` QoS 1 (or 2)
//! messages for them, the broker's RSS is read while they wait, the broker is killed
//! with SIGKILL and started again on the same store, and the sessions come back and
//! drain their queues. Reported: publish rate, RSS queued / after the restart / once the
//! sessions are back / peak, restart time, drain rate, and what was lost (acknowledged
//! to a publisher, never delivered), duplicated or out of order.
//!
//! Shapes: `backlog` (fan-in: session i alone gets topic `backlog/<i>`), `backlog-fanout`
//! (every session subscribes `backlog/all`, each message is queued S times); `-q2` at
//! QoS 2. Brokers get `MIDGE_BENCH_LIMITS=backlog` (start scripts: unlimited queues, a
//! persistent store) and `MIDGE_BENCH_RESTART=1` on the restart (keep that store).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::backlog_io::{self, PubPart};
use super::backlog_track::{Bits, SessionTrack, Shape};
use super::metric::{Better, Metric, Outcome};
use super::Ctx;
use crate::client::{self, BoxError, Conn};
use crate::procs::{self, Control};
use crate::stats;

/// `MIDGE_BENCH_LIMITS` for these scenarios.
pub const LIMITS: &str = "backlog";

/// Sizes and bounds (`run --backlog-*`, or `MIDGE_BENCH_BACKLOG_*`).
#[derive(Debug, Clone)]
pub struct Sizes {
    pub sessions: usize,
    /// Messages queued in all (deliveries owed: fan-out publishes total / sessions).
    pub total: u64,
    pub size: usize,
    pub pubs: usize,
    pub publish_secs: f64,
    pub restart_secs: f64,
    pub drain_secs: f64,
    /// The drain is over once no message arrived for this long.
    pub quiet_secs: f64,
    /// Publishing / draining stops when the broker's RSS passes this.
    pub max_rss_mib: u64,
}

impl Default for Sizes {
    fn default() -> Sizes {
        Sizes {
            sessions: 1000,
            total: 10_000_000,
            size: 64,
            pubs: 4,
            publish_secs: 900.0,
            restart_secs: 120.0,
            drain_secs: 900.0,
            quiet_secs: 15.0,
            max_rss_mib: 8192,
        }
    }
}

/// Which backlog: QoS 1 or 2, each session its own messages or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub qos: u8,
    pub fanout: bool,
}

pub const NAMES: &str = "backlog,backlog-q2,backlog-fanout,backlog-fanout-q2";

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        let rest = s.strip_prefix("backlog")?;
        let (fanout, rest) = match rest.strip_prefix("-fanout") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let qos = match rest {
            "" => 1,
            "-q2" => 2,
            _ => return None,
        };
        Some(Kind { qos, fanout })
    }

    pub fn name(self) -> String {
        format!(
            "backlog{}{}",
            if self.fanout { "-fanout" } else { "" },
            if self.qos == 2 { "-q2" } else { "" }
        )
    }
}

/// Brokers this scenario does not run against (by the name given to --broker).
pub fn skips(broker: &str) -> Option<&'static str> {
    broker.contains("rumqttd").then_some(
        "rumqttd 0.20 has no persistent store (nothing to restart from); the offline \
         backlog is not run against it",
    )
}

/// The scenario's own bounds added up, with room for connecting the sessions twice.
pub fn min_timeout_secs(z: &Sizes) -> u64 {
    let phases = z.publish_secs + 30.0 + z.restart_secs + z.drain_secs + z.quiet_secs;
    phases as u64 + 120 + z.sessions as u64 / 20
}

fn mib(kib: Option<u64>) -> f64 {
    kib.map_or(f64::NAN, |k| k as f64 / 1024.0)
}

/// Samples the broker's VmRSS every 200 ms (whichever process is current), keeps the
/// highest, and sets `over` (and `stop`) past the cap.
struct RssWatch {
    max_kib: Arc<AtomicU64>,
    over: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
}

impl RssWatch {
    fn spawn(control: Arc<Control>, cap_kib: u64, stop: Arc<AtomicBool>) -> RssWatch {
        let w = RssWatch {
            max_kib: Arc::new(AtomicU64::new(0)),
            over: Arc::new(AtomicBool::new(false)),
            done: Arc::new(AtomicBool::new(false)),
        };
        let (max, over, done) = (w.max_kib.clone(), w.over.clone(), w.done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Some(kib) = control.pid().and_then(|p| procs::status_kib(p, "VmRSS")) {
                    max.fetch_max(kib, Ordering::Relaxed);
                    if kib > cap_kib {
                        over.store(true, Ordering::Relaxed);
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        w
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

pub async fn backlog(ctx: &Ctx, kind: Kind) -> Result<Outcome, BoxError> {
    let control = ctx
        .broker
        .clone()
        .ok_or("the backlog scenarios kill and restart the broker: start it with --broker")?;
    let b = ctx.sizes.backlog.clone();
    let shape = Shape::new(b.sessions, b.total, b.pubs, kind.fanout);
    let per = shape.queued() / shape.sessions as u64;
    let what = format!(
        "backlog {} QoS {}, {} offline sessions × {} = {} queued, {} B",
        if kind.fanout { "fan-out" } else { "fan-in" },
        kind.qos,
        super::fmt_num(shape.sessions as f64, 0),
        super::fmt_num(per as f64, 0),
        super::fmt_num(shape.queued() as f64, 0),
        b.size.max(stats::HEADER)
    );
    let stop = Arc::new(AtomicBool::new(false));
    let watch = RssWatch::spawn(control.clone(), b.max_rss_mib * 1024, stop.clone());

    // 1. The sessions: subscribe, go offline.
    let t = Instant::now();
    let stale = setup_sessions(ctx, &shape, kind.qos).await?;
    let setup_secs = t.elapsed().as_secs_f64();
    let rss_idle = control.pid().and_then(|p| procs::status_kib(p, "VmRSS"));

    // 2. Fill their queues.
    let io0 = control.pid().and_then(procs::io_bytes);
    let p = publish_all(ctx, &shape, &b, kind.qos, stop.clone()).await?;
    let rss_cap_publish = watch.over.load(Ordering::Relaxed);

    // 3. RSS while queued.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid0 = control.pid();
    let rss_queued = pid0.and_then(|p| procs::status_kib(p, "VmRSS"));
    let hwm_queued = pid0.and_then(|p| procs::status_kib(p, "VmHWM"));
    let wrote = pid0
        .and_then(procs::io_bytes)
        .zip(io0)
        .map(|(w1, w0)| w1.saturating_sub(w0));
    let alive_before_kill = control.alive();

    // 4. kill -9, start again on the same store.
    let c = control.clone();
    let wait = Duration::from_secs_f64(b.restart_secs);
    let restart = tokio::task::spawn_blocking(move || c.restart(wait)).await?;
    let restart_secs = match &restart {
        Ok(d) => d.as_secs_f64(),
        Err(e) => return Err(format!("{what}: restart after kill -9 failed: {e}").into()),
    };
    let rss_restart = control.pid().and_then(|p| procs::status_kib(p, "VmRSS"));
    watch.max_kib.store(0, Ordering::Relaxed);
    stop.store(false, Ordering::Relaxed);
    watch.over.store(false, Ordering::Relaxed);

    // 5. The sessions return.
    let d = drain_all(ctx, &shape, &b, &p.acked_bits, &control, &stop).await?;
    let pid1 = control.pid();
    let rss_end = pid1.and_then(|p| procs::status_kib(p, "VmRSS"));
    let hwm_after = pid1.and_then(|p| procs::status_kib(p, "VmHWM"));
    let rss_cap_drain = watch.over.load(Ordering::Relaxed);
    drop(watch);

    let acked_deliveries = if kind.fanout {
        p.acked * shape.sessions as u64
    } else {
        p.acked
    };
    // Deliveries owed per second: fan-out queues each acknowledged message S times.
    let publish_rate = acked_deliveries as f64 / p.secs.max(1e-9);
    let drain_rate = d.fresh as f64 / d.secs.max(1e-9);
    let sum = |f: fn(&SessionTrack) -> u64| d.tracks.iter().map(f).sum::<u64>();
    let lost: u64 = d.tracks.iter().map(|t| t.lost(&p.acked_bits)).sum();
    let (dups, dups_flagged) = (sum(|t| t.dups), sum(|t| t.dups_flagged));
    let (ooo, foreign) = (sum(|t| t.out_of_order), sum(|t| t.foreign));
    let unacked = sum(SessionTrack::unacked_delivered);

    let mut detail = format!(
        "{} sessions set up in {setup_secs:.1} s{} (RSS {:.0} MiB); published {} (acknowledged {}) in {:.1} s = \
         {publish_rate:.0} msg/s queued{}{}; RSS queued {:.0} MiB (peak {:.0} MiB){}; kill -9{}; \
         restart {restart_secs:.2} s, RSS {:.0} MiB; {} of {} sessions back ({} with a session \
         present) in {:.1} s, RSS then {:.0} MiB; delivered {} of {acked_deliveries} \
         acknowledged in {:.1} s = {drain_rate:.0} msg/s{}; lost {lost}, dup {dups} ({dups_flagged} \
         with DUP), out of order {ooo}, delivered unacknowledged {unacked}, foreign {foreign}; \
         RSS after the drain {:.0} MiB, peak since restart {:.0} MiB",
        shape.sessions,
        if stale > 0 {
            format!(" ({stale} had a session already: not a fresh store)")
        } else {
            String::new()
        },
        mib(rss_idle),
        p.sent,
        p.acked,
        p.secs,
        if p.timed_out { " (stopped at --backlog-publish-secs)" } else { "" },
        if rss_cap_publish {
            format!(" (stopped: broker RSS over {} MiB)", b.max_rss_mib)
        } else {
            String::new()
        },
        mib(rss_queued),
        mib(hwm_queued),
        wrote.map_or(String::new(), |w| format!(
            ", broker wrote {:.0} MiB to storage",
            w as f64 / 1048576.0
        )),
        if alive_before_kill { "" } else { " (the broker had already exited)" },
        mib(rss_restart),
        d.connected,
        shape.sessions,
        d.present,
        d.connect_secs,
        mib(d.rss_reconnected),
        d.fresh,
        d.secs,
        match (rss_cap_drain, d.timed_out) {
            (true, _) => format!(" (stopped: broker RSS over {} MiB)", b.max_rss_mib),
            (false, true) => " (stopped at --backlog-drain-secs)".into(),
            _ => String::new(),
        },
        mib(rss_end),
        mib(hwm_after),
    );
    for e in p.errors.iter().chain(&d.errors).take(3) {
        let _ = write!(detail, "; error: {e}");
    }
    let num =
        |label: &str, better, v: f64, dec| Metric::num(format!("{what}: {label}"), better, v, dec);
    let mut metrics = vec![
        num(
            "msg/s queued (acknowledged to publishers)",
            Better::Higher,
            publish_rate,
            0,
        ),
        num("RSS while queued, MiB", Better::Lower, mib(rss_queued), 0),
        num("restart after kill -9, s", Better::Lower, restart_secs, 2),
        num("RSS after restart, MiB", Better::Lower, mib(rss_restart), 0),
        num(
            "RSS sessions back, MiB",
            Better::Lower,
            mib(d.rss_reconnected),
            0,
        ),
        num(
            "peak RSS after restart, MiB",
            Better::Lower,
            mib(hwm_after),
            0,
        ),
        num("msg/s drained after restart", Better::Higher, drain_rate, 0),
        Metric::info(
            format!("{what}: delivered after restart / acknowledged"),
            d.fresh as f64,
            format!(
                "{} / {}",
                super::fmt_num(d.fresh as f64, 0),
                super::fmt_num(acked_deliveries as f64, 0)
            ),
        ),
        Metric::info(
            format!("{what}: lost / dup (with DUP) / out of order"),
            lost as f64,
            format!(
                "{} / {dups} ({dups_flagged}) / {ooo}",
                super::fmt_num(lost as f64, 0)
            ),
        ),
    ];
    // A broker that came back without the backlog restarted fast and small because it
    // lost everything: its after-restart figures are shown, not compared.
    if acked_deliveries > 0 && d.fresh == 0 {
        for m in &mut metrics[2..6] {
            m.text = format!("{} (kept nothing)", m.text);
            m.value = f64::NAN;
        }
    }
    Ok(Outcome { metrics, detail })
}

/// Connects, subscribes and disconnects every session; returns how many already had a
/// session (the store was not fresh).
async fn setup_sessions(ctx: &Ctx, shape: &Shape, qos: u8) -> Result<u64, BoxError> {
    let sem = Arc::new(Semaphore::new(ctx.sizes.concurrency.max(1)));
    let mut set = JoinSet::new();
    for i in 0..shape.sessions {
        let permit = sem.clone().acquire_owned().await?;
        let opts = ctx.opts.clone();
        let filter = shape.topic(if shape.fanout { 0 } else { i });
        set.spawn(async move {
            let (mut conn, present) =
                Conn::connect_session(&opts, &format!("backlog-{i}"), i, false).await?;
            let refused =
                client::subscribe(&mut conn, &[filter], qos, opts.timeout, |_, _| {}).await?;
            conn.close().await;
            drop(permit);
            if refused > 0 {
                return Err::<bool, BoxError>(format!("session {i}: subscription refused").into());
            }
            Ok(present)
        });
    }
    let (mut stale, mut failed, mut first) = (0, 0, None);
    while let Some(r) = set.join_next().await {
        match r? {
            Ok(p) => stale += u64::from(p),
            Err(e) => {
                failed += 1;
                first.get_or_insert(e.to_string());
            }
        }
    }
    if let Some(e) = first {
        return Err(format!(
            "{failed} of {} sessions not set up; first: {e}",
            shape.sessions
        )
        .into());
    }
    Ok(stale)
}

struct Published {
    sent: u64,
    acked: u64,
    secs: f64,
    timed_out: bool,
    /// Per stream.
    acked_bits: Vec<Bits>,
    errors: Vec<String>,
}

async fn publish_all(
    ctx: &Ctx,
    shape: &Shape,
    b: &Sizes,
    qos: u8,
    stop: Arc<AtomicBool>,
) -> Result<Published, BoxError> {
    let conns = client::connect_many(&ctx.opts, shape.publishers, 100, |p| {
        format!("backlog-pub-{p}")
    })
    .await;
    let start = Instant::now();
    let send_until = start + Duration::from_secs_f64(b.publish_secs);
    let acked_all = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (index, c) in conns.into_iter().enumerate() {
        let part = PubPart {
            shape: *shape,
            index,
            qos,
            size: b.size,
            window: ctx.sizes.window,
            send_until,
            give_up_at: send_until + Duration::from_secs(30),
            stop: stop.clone(),
            acked_all: acked_all.clone(),
        };
        tasks.push(tokio::spawn(backlog_io::publish(c?, part)));
    }
    // Progress on stderr: a 10 M backlog takes minutes.
    let progress = {
        let acked_all = acked_all.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let n = acked_all.load(Ordering::Relaxed);
                eprintln!(
                    "  backlog: {n} acknowledged after {:.0} s",
                    start.elapsed().as_secs_f64()
                );
            }
        })
    };
    let mut out = Published {
        sent: 0,
        acked: 0,
        secs: 0.0,
        timed_out: false,
        acked_bits: (0..shape.streams()).map(|_| Bits::default()).collect(),
        errors: Vec::new(),
    };
    let mut conns = Vec::new();
    for t in tasks {
        let (c, o) = t.await?;
        out.sent += o.sent;
        out.acked += o.acked;
        for (s, bits) in o.acked_bits {
            out.acked_bits[s] = bits;
        }
        out.errors.extend(o.error);
        conns.push(c);
    }
    out.secs = start.elapsed().as_secs_f64();
    out.timed_out = Instant::now() >= send_until && out.sent < shape.published;
    progress.abort();
    client::close_all(conns, 100).await;
    Ok(out)
}

struct Drained {
    tracks: Vec<SessionTrack>,
    /// First deliveries of acknowledged messages.
    fresh: u64,
    /// From the first reconnection to the last message (or to the end of the wait).
    secs: f64,
    connect_secs: f64,
    connected: u64,
    present: u64,
    rss_reconnected: Option<u64>,
    timed_out: bool,
    errors: Vec<String>,
}

async fn drain_all(
    ctx: &Ctx,
    shape: &Shape,
    b: &Sizes,
    acked: &[Bits],
    control: &Control,
    stop: &AtomicBool,
) -> Result<Drained, BoxError> {
    let acked = Arc::new(acked.to_vec());
    let target: u64 = (0..shape.sessions)
        .map(|i| shape.streams_for(i).map(|s| acked[s].count()).sum::<u64>())
        .sum();
    let (stop_tx, stop_rx) = watch::channel(false);
    let progress = Arc::new(AtomicU64::new(0));
    let (connected, present, attempted) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let start = Instant::now();
    let start_ns = stats::now_ns();
    let connector = {
        let (opts, shape, acked) = (ctx.opts.clone(), *shape, acked.clone());
        let (progress, connected, present, attempted) = (
            progress.clone(),
            connected.clone(),
            present.clone(),
            attempted.clone(),
        );
        let sem = Arc::new(Semaphore::new(ctx.sizes.concurrency.max(1)));
        let ka = Duration::from_secs(u64::from(opts.keep_alive));
        tokio::spawn(async move {
            let mut set = JoinSet::new();
            for i in 0..shape.sessions {
                let Ok(permit) = sem.clone().acquire_owned().await else {
                    break;
                };
                let (opts, acked, progress) = (opts.clone(), acked.clone(), progress.clone());
                let (connected, present, attempted) =
                    (connected.clone(), present.clone(), attempted.clone());
                let stop_rx = stop_rx.clone();
                set.spawn(async move {
                    let track = SessionTrack::new(&shape, i);
                    let r = Conn::connect_session(&opts, &format!("backlog-{i}"), i, false).await;
                    attempted.fetch_add(1, Ordering::Relaxed);
                    drop(permit);
                    match r {
                        Ok((conn, p)) => {
                            connected.fetch_add(1, Ordering::Relaxed);
                            present.fetch_add(u64::from(p), Ordering::Relaxed);
                            let (c, t, e) =
                                backlog_io::drain(conn, track, acked, stop_rx, progress, ka).await;
                            (Some(c), t, e)
                        }
                        Err(e) => (None, track, Some(format!("session {i}: {e}"))),
                    }
                });
            }
            let mut out = Vec::new();
            while let Some(r) = set.join_next().await {
                if let Ok(r) = r {
                    out.push(r);
                }
            }
            out
        })
    };
    let deadline = start + Duration::from_secs_f64(b.drain_secs);
    let quiet = Duration::from_secs_f64(b.quiet_secs);
    let (mut last, mut last_change) = (0, start);
    let (mut rss_reconnected, mut connect_secs) = (None, None);
    let mut timed_out = false;
    loop {
        let now = Instant::now();
        let got = progress.load(Ordering::Relaxed);
        if connect_secs.is_none() && attempted.load(Ordering::Relaxed) >= shape.sessions as u64 {
            connect_secs = Some(start.elapsed().as_secs_f64());
            rss_reconnected = control.pid().and_then(|p| procs::status_kib(p, "VmRSS"));
            last_change = last_change.max(now);
        }
        if got >= target && connect_secs.is_some() || stop.load(Ordering::Relaxed) {
            break;
        }
        if now >= deadline {
            timed_out = true;
            break;
        }
        if got != last {
            (last, last_change) = (got, now);
        } else if connect_secs.is_some() && now - last_change >= quiet {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waited = start.elapsed().as_secs_f64();
    stop_tx.send(true)?;
    let results = connector.await?;
    let mut d = Drained {
        tracks: Vec::new(),
        fresh: 0,
        secs: 0.0,
        connect_secs: connect_secs.unwrap_or(waited),
        connected: connected.load(Ordering::Relaxed),
        present: present.load(Ordering::Relaxed),
        rss_reconnected,
        timed_out,
        errors: Vec::new(),
    };
    let mut conns = Vec::new();
    let mut last_ns = 0;
    for (c, t, e) in results {
        conns.extend(c);
        d.errors.extend(e);
        d.fresh += t.acked_delivered;
        last_ns = last_ns.max(t.last_ns);
        d.tracks.push(t);
    }
    d.secs = if last_ns > start_ns {
        (last_ns - start_ns) as f64 / 1e9
    } else {
        waited
    };
    client::close_all(conns, ctx.sizes.concurrency).await;
    Ok(d)
}
