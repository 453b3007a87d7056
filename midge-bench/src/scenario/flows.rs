//! Publishers to subscribers at full speed: fan-in (many publishers, one wildcard
//! subscriber; also to a persistent session), fan-out (one publisher, many subscribers of
//! one topic) and pairs (each publisher to its own subscriber).

use std::fmt::Write as _;

use super::messages::{messages, pub_job, Plan, SubPlan};
use super::metric::{Better, Metric, Outcome};
use super::{Ctx, Sizes};
use crate::client::BoxError;
use crate::procs;
use crate::workers::Topics;

/// `fanin_pubs` publishers, one topic each under `prefix`, into one subscriber of
/// `prefix/#` (with a persistent session when `persistent`).
fn fan_in_plan(z: &Sizes, prefix: &str, qos: u8, persistent: bool) -> Plan {
    let p = z.fanin_pubs;
    Plan {
        subs: vec![SubPlan {
            filters: vec![format!("{prefix}/#")],
            sources: (0..p as u32).collect(),
        }],
        pubs: (0..p)
            .map(|i| {
                pub_job(
                    z,
                    i as u32,
                    Topics::Fixed(format!("{prefix}/{i}")),
                    qos,
                    z.size,
                )
            })
            .collect(),
        qos,
        merged: false,
        persistent,
    }
}

pub async fn fan_in(ctx: &Ctx, qos: u8) -> Result<Outcome, BoxError> {
    let z = &ctx.sizes;
    let p = z.fanin_pubs;
    let plan = fan_in_plan(z, "bench/fanin", qos, false);
    let r = messages(ctx, plan, z.max_msgs).await?;
    Ok(r.throughput(&format!(
        "fan-in QoS {qos}, {p} pub → 1 wildcard sub, {} B",
        z.size
    )))
}

/// Fan-in QoS 1 to a persistent session: what a durable broker must store.
pub async fn durable(ctx: &Ctx) -> Result<Outcome, BoxError> {
    let z = &ctx.sizes;
    let p = z.fanin_pubs;
    let plan = fan_in_plan(z, "bench/durable", 1, true);
    let io0 = ctx.pid.and_then(procs::io_bytes);
    let r = messages(ctx, plan, z.max_msgs).await?;
    let io1 = ctx.pid.and_then(procs::io_bytes);
    let what = format!(
        "durable QoS 1, {p} pub → 1 persistent-session sub, {} B",
        z.size
    );
    let mut out = r.throughput(&what);
    // Whether, and how much, the broker wrote: a store that is not in use shows.
    if let (Some(w0), Some(w1)) = (io0, io1) {
        let bytes = w1.saturating_sub(w0);
        let _ = write!(
            out.detail,
            "; broker wrote {:.1} MiB to storage ({:.0} B per message acknowledged)",
            bytes as f64 / (1024.0 * 1024.0),
            bytes as f64 / r.acked.max(1) as f64,
        );
    }
    // What a durable broker's store limits first: how fast publishers get PUBACK.
    out.metrics.insert(
        1,
        Metric::num(
            format!("{what}: msg/s acknowledged to publishers"),
            Better::Higher,
            r.acked as f64 / r.send_secs.max(1e-9),
            0,
        ),
    );
    Ok(out)
}

pub async fn fan_out(ctx: &Ctx, qos: u8) -> Result<Outcome, BoxError> {
    let z = &ctx.sizes;
    let n = z.fanout_subs;
    let plan = Plan {
        subs: (0..n)
            .map(|_| SubPlan {
                filters: vec!["bench/fanout".into()],
                sources: vec![0],
            })
            .collect(),
        pubs: vec![pub_job(
            z,
            0,
            Topics::Fixed("bench/fanout".into()),
            qos,
            z.size,
        )],
        qos,
        merged: false,
        persistent: false,
    };
    // Deliveries are n times the messages: bound what the publisher sends.
    let r = messages(ctx, plan, (z.max_msgs / n as u64).max(1)).await?;
    Ok(r.throughput(&format!(
        "fan-out QoS {qos}, 1 pub → {n} subs, {} B",
        z.size
    )))
}

pub async fn pairs(ctx: &Ctx) -> Result<Outcome, BoxError> {
    let z = &ctx.sizes;
    let n = z.pairs;
    let qos = z.pairs_qos;
    let plan = Plan {
        subs: (0..n)
            .map(|i| SubPlan {
                filters: vec![format!("bench/pair/{i}")],
                sources: vec![i as u32],
            })
            .collect(),
        pubs: (0..n)
            .map(|i| {
                pub_job(
                    z,
                    i as u32,
                    Topics::Fixed(format!("bench/pair/{i}")),
                    qos,
                    z.size,
                )
            })
            .collect(),
        qos,
        merged: false,
        persistent: false,
    };
    let r = messages(ctx, plan, z.max_msgs).await?;
    Ok(r.throughput(&format!(
        "pairs QoS {qos}, {n} × (1 pub → 1 sub), {} B",
        z.size
    )))
}
