//! Retained messages: store many, then time a `#` subscriber until it has them all.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::cpu::CpuUse;
use super::messages::{connect_and_subscribe, pub_job, wait_for_deliveries};
use super::metric::{Better, Metric, Outcome};
use super::Ctx;
use crate::client::{BoxError, Conn};
use crate::stats;
use crate::workers::{self, Topics};

/// Stores `retained` retained messages (QoS 1, one topic each), then times a `#`
/// subscriber until it has them all.
pub async fn retained(ctx: &Ctx) -> Result<Outcome, BoxError> {
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
            Metric::info(
                format!("{what}: lost / dup"),
                lost as f64,
                format!("{lost} / {}{errs}", st.tracker.dups),
            ),
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
