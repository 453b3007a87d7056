//! Many wildcard subscriptions: the time to subscribe them all, the broker's memory for
//! them, and the delivery rate when every message matches exactly one of them.

use super::messages::{connect_and_subscribe, messages, pub_job, Plan, SubPlan};
use super::metric::{Better, Metric, Outcome};
use super::Ctx;
use crate::client::{self, BoxError};
use crate::procs;
use crate::workers::{self, Topics};
use tokio::time::Instant;

/// 100,000 wildcard subscriptions over `scale_conns` connections; publishers send to
/// random topics, each of which matches exactly one of them.
pub async fn sub_scale(ctx: &Ctx) -> Result<Outcome, BoxError> {
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
