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

use tokio::time::Instant;

use super::backlog_phases::{drain_all, publish_all, setup_sessions};
use super::backlog_track::{SessionTrack, Shape};
use super::metric::{Better, Metric, Outcome};
use super::Ctx;
use crate::client::BoxError;
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
