//! End-to-end latency: one publisher at a fixed rate, one subscriber, percentiles of the
//! publish-to-receive time.

use std::time::Duration;

use super::messages::{messages_for, pub_job, Plan, SubPlan};
use super::metric::{Better, Metric, Outcome};
use super::Ctx;
use crate::client::BoxError;
use crate::workers::Topics;

pub async fn latency(ctx: &Ctx) -> Result<Outcome, BoxError> {
    let z = &ctx.sizes;
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
