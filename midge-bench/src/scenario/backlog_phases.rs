//! The offline backlog's three phases with many clients: the sessions subscribe and go
//! offline, the publishers fill their queues, the sessions return and drain them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::backlog::Sizes;
use super::backlog_io::{self, PubPart};
use super::backlog_track::{Bits, SessionTrack, Shape};
use super::Ctx;
use crate::client::{self, BoxError, Conn};
use crate::procs::{self, Control};
use crate::stats;

/// Connects, subscribes and disconnects every session; returns how many already had a
/// session (the store was not fresh).
pub async fn setup_sessions(ctx: &Ctx, shape: &Shape, qos: u8) -> Result<u64, BoxError> {
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

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub struct Published {
    pub sent: u64,
    pub acked: u64,
    pub secs: f64,
    pub timed_out: bool,
    /// Per stream.
    pub acked_bits: Vec<Bits>,
    pub errors: Vec<String>,
}

pub async fn publish_all(
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
    // Progress on stderr: a 10 M backlog takes minutes. Stopped however this returns.
    let _progress = AbortOnDrop({
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
    });
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
    client::close_all(conns, 100).await;
    Ok(out)
}

pub struct Drained {
    pub tracks: Vec<SessionTrack>,
    /// First deliveries of acknowledged messages.
    pub fresh: u64,
    /// From the first reconnection to the last message (or to the end of the wait).
    pub secs: f64,
    pub connect_secs: f64,
    pub connected: u64,
    pub present: u64,
    pub rss_reconnected: Option<u64>,
    pub timed_out: bool,
    pub errors: Vec<String>,
}

pub async fn drain_all(
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
    let mut report_at = start + Duration::from_secs(10);
    loop {
        let now = Instant::now();
        let got = progress.load(Ordering::Relaxed);
        if now >= report_at {
            // Progress on stderr: a 10 M drain at QoS 2 takes minutes.
            eprintln!(
                "  backlog: {got} of {target} delivered after {:.0} s, {} sessions back",
                start.elapsed().as_secs_f64(),
                connected.load(Ordering::Relaxed)
            );
            report_at = now + Duration::from_secs(10);
        }
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
