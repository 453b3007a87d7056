//! Large payloads: one publisher of (1 MiB) messages, QoS 1, 8 in flight, to one or
//! more subscribers; MiB/s delivered.

use super::messages::{messages, pub_job, Plan, SubPlan};
use super::metric::{Better, Metric, Outcome};
use super::Ctx;
use crate::client::BoxError;
use crate::workers::Topics;

pub async fn large(ctx: &Ctx) -> Result<Outcome, BoxError> {
    let z = &ctx.sizes;
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
