//! Idle connections, one subscription each: the broker's resident memory per connection.

use std::fmt::Write as _;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::conn::overflow_text;
use super::cpu::CpuUse;
use super::metric::{fmt_num, Better, Metric, Outcome};
use super::Ctx;
use crate::client::{self, BoxError, Conn, Opts};
use crate::procs;

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
pub async fn idle(ctx: &Ctx, n: usize) -> Result<Outcome, BoxError> {
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
    metrics.push(Metric::info(
        format!("{what}: failed connections"),
        count.failed as f64,
        count.failed.to_string(),
    ));
    let _ = write!(detail, "; {}", cpu.text());
    Ok(Outcome { metrics, detail })
}
