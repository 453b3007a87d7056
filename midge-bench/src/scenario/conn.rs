//! Connection setup rate: many clients connect (TCP + CONNECT/CONNACK), a bounded number
//! of handshakes at a time.

use std::time::Duration;

use tokio::time::Instant;

use super::cpu::CpuUse;
use super::metric::{Better, Metric, Outcome};
use super::Ctx;
use crate::client::{self, BoxError};
use crate::procs;

/// Connection setup rate: `conn_count` connections (TCP + CONNECT/CONNACK), at most
/// `concurrency` handshakes at a time, all held until the last one is up.
pub async fn conn_rate(ctx: &Ctx) -> Result<Outcome, BoxError> {
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
    metrics.push(Metric::info(
        format!("{what}: errors"),
        errors as f64,
        errors.to_string(),
    ));
    Ok(Outcome {
        metrics,
        detail: format!(
            "{up} up in {secs:.2} s, {errors} failed{}{overflows}; {}",
            first.map(|e| format!(" (first: {e})")).unwrap_or_default(),
            cpu.text()
        ),
    })
}

/// `, N accept-queue overflows` since `before`, when there were any.
pub fn overflow_text(before: Option<u64>) -> String {
    match (before, procs::listen_overflows()) {
        (Some(a), Some(b)) if b > a => {
            format!(", {} accept-queue overflows (SYN retried after 1 s)", b - a)
        }
        _ => String::new(),
    }
}
