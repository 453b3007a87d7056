//! The scenarios of `midge-bench run`, each bounded in message count and in time, each
//! reporting a few metrics (rows of the final table) and a line of details. One family of
//! scenarios per file; the message scenarios share [`messages`].

mod backlog;
mod backlog_io;
mod backlog_phases;
mod backlog_track;
mod conn;
mod cpu;
mod flows;
mod harness;
mod idle;
mod large;
mod latency;
mod messages;
mod metric;
mod retained;
mod subscale;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::client::{BoxError, Opts};

pub use backlog::Sizes as BacklogSizes;
pub use harness::HARNESS_LIST;
pub use idle::open_idle;
pub use metric::{fmt_num, Better, Metric, Outcome};

/// Sizes and limits of the scenarios (the `run` command line).
#[derive(Debug, Clone)]
pub struct Sizes {
    pub load: Duration,
    pub drain: Duration,
    pub quiet: Duration,
    pub max_msgs: u64,
    pub window: usize,
    pub size: usize,
    pub fanin_pubs: usize,
    pub fanout_subs: usize,
    pub pairs: usize,
    pub pairs_qos: u8,
    pub latency_rate: u64,
    pub latency_secs: u64,
    pub latency_qos: u8,
    pub large_size: usize,
    pub large_subs: usize,
    pub large_count: u64,
    pub scale_subs: u64,
    pub scale_conns: usize,
    pub scale_pubs: usize,
    pub retained: u64,
    pub conn_count: usize,
    /// Handshakes in progress at once in the connection-rate scenario.
    pub conn_concurrency: usize,
    pub concurrency: usize,
    /// The offline backlog scenarios.
    pub backlog: backlog::Sizes,
    /// This executable, to start helper processes when one process has too few file
    /// descriptors for the idle connections.
    pub exe: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    FanIn(u8),
    /// Fan-in QoS 1 to a persistent session: what a durable broker must store.
    Durable,
    FanOut(u8),
    Pairs,
    Latency,
    Idle(usize),
    Large,
    SubScale,
    Retained,
    Conn,
    /// A row of the independent harness of issue 15, with sizes of its own.
    Harness(harness::Row),
    /// A large queue for offline persistent sessions across a kill -9 (issue 16).
    Backlog(backlog::Kind),
}

pub const DEFAULT_LIST: &str =
    "fanin-q0,fanin-q1,fanout-q0,fanout-q1,pairs,latency,idle,large,sub-scale,retained,conn";

/// Scenarios run only when named (besides [`HARNESS_LIST`] and [`backlog::NAMES`]).
pub const EXTRA_LIST: &str = "durable-q1";

/// Parses a comma-separated list of scenarios; `issue15` stands for [`HARNESS_LIST`].
pub fn parse_list(list: &str) -> Result<Vec<Scenario>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .flat_map(|s| {
            let names: Vec<&str> = if s == harness::ALIAS {
                HARNESS_LIST.split(',').collect()
            } else {
                vec![s]
            };
            names.into_iter().map(str::parse)
        })
        .collect()
}

impl std::str::FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(row) = harness::Row::parse(s) {
            return Ok(Scenario::Harness(row));
        }
        if let Some(kind) = backlog::Kind::parse(s) {
            return Ok(Scenario::Backlog(kind));
        }
        Ok(match s {
            "fanin-q0" => Scenario::FanIn(0),
            "fanin-q1" => Scenario::FanIn(1),
            "durable-q1" => Scenario::Durable,
            "fanout-q0" => Scenario::FanOut(0),
            "fanout-q1" => Scenario::FanOut(1),
            "pairs" => Scenario::Pairs,
            "latency" => Scenario::Latency,
            "idle" => Scenario::Idle(10_000),
            "large" => Scenario::Large,
            "sub-scale" => Scenario::SubScale,
            "retained" => Scenario::Retained,
            "conn" => Scenario::Conn,
            _ => match s.strip_prefix("idle:") {
                Some(n) => Scenario::Idle(
                    n.replace('_', "")
                        .parse()
                        .map_err(|_| format!("idle:{n}: expected a number of connections"))?,
                ),
                None => {
                    return Err(format!(
                        "unknown scenario {s:?} (known: {DEFAULT_LIST}, {EXTRA_LIST}, {}, idle:N; \
                         {} for {HARNESS_LIST})",
                        backlog::NAMES,
                        harness::ALIAS
                    ))
                }
            },
        })
    }
}

impl Scenario {
    pub fn name(&self) -> String {
        match self {
            Scenario::FanIn(q) => format!("fanin-q{q}"),
            Scenario::Durable => "durable-q1".into(),
            Scenario::FanOut(q) => format!("fanout-q{q}"),
            Scenario::Pairs => "pairs".into(),
            Scenario::Latency => "latency".into(),
            Scenario::Idle(n) => format!("idle:{n}"),
            Scenario::Large => "large".into(),
            Scenario::SubScale => "sub-scale".into(),
            Scenario::Retained => "retained".into(),
            Scenario::Conn => "conn".into(),
            Scenario::Harness(row) => row.name(),
            Scenario::Backlog(kind) => kind.name(),
        }
    }

    /// The broker limits this scenario is meant for, handed to the brokers it starts as
    /// `MIDGE_BENCH_LIMITS`: `issue15` for the independent harness's rows, none otherwise.
    pub fn limits(&self) -> Option<&'static str> {
        match self {
            Scenario::Harness(_) => Some(harness::LIMITS),
            Scenario::Backlog(_) => Some(backlog::LIMITS),
            _ => None,
        }
    }

    /// Why this scenario is not run against `broker` (the name given to --broker), if so.
    pub fn skips(&self, broker: &str) -> Option<&'static str> {
        match self {
            Scenario::Backlog(_) => backlog::skips(broker),
            _ => None,
        }
    }

    /// The least --scenario-timeout this scenario needs (its own bounds added up), 0 for
    /// none.
    pub fn min_timeout_secs(&self, z: &Sizes) -> u64 {
        match self {
            Scenario::Backlog(_) => backlog::min_timeout_secs(&z.backlog),
            _ => 0,
        }
    }
}

pub struct Ctx {
    pub opts: Arc<Opts>,
    /// The broker's pid, for its memory.
    pub pid: Option<u32>,
    pub sizes: Sizes,
    /// The broker, when this run started it: scenarios that kill and restart it.
    pub broker: Option<Arc<crate::procs::Control>>,
}

pub async fn run(s: &Scenario, ctx: &Ctx) -> Result<Outcome, BoxError> {
    let Scenario::Harness(row) = *s else {
        return run_family(s, ctx).await;
    };
    // The row's own sizes, whatever the command line said.
    let fixed = Ctx {
        opts: ctx.opts.clone(),
        pid: ctx.pid,
        sizes: row.sizes(ctx.sizes.exe.clone()),
        broker: ctx.broker.clone(),
    };
    let mut out = run_family(&row.family(), &fixed).await?;
    for m in &mut out.metrics {
        m.label = harness::label(row, &m.label);
    }
    Ok(out)
}

async fn run_family(s: &Scenario, ctx: &Ctx) -> Result<Outcome, BoxError> {
    match *s {
        Scenario::FanIn(qos) => flows::fan_in(ctx, qos).await,
        Scenario::Durable => flows::durable(ctx).await,
        Scenario::FanOut(qos) => flows::fan_out(ctx, qos).await,
        Scenario::Pairs => flows::pairs(ctx).await,
        Scenario::Latency => latency::latency(ctx).await,
        Scenario::Idle(n) => idle::idle(ctx, n).await,
        Scenario::Large => large::large(ctx).await,
        Scenario::SubScale => subscale::sub_scale(ctx).await,
        Scenario::Retained => retained::retained(ctx).await,
        Scenario::Conn => conn::conn_rate(ctx).await,
        Scenario::Backlog(kind) => backlog::backlog(ctx, kind).await,
        Scenario::Harness(_) => Err("a harness row is not a scenario family".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_issue15_expands() {
        let all = parse_list(DEFAULT_LIST).unwrap();
        assert_eq!(all.len(), DEFAULT_LIST.split(',').count());
        assert!(all.iter().all(|s| s.limits().is_none()));
        let rows = parse_list("issue15").unwrap();
        let names: Vec<String> = rows.iter().map(Scenario::name).collect();
        assert_eq!(names.join(","), HARNESS_LIST);
        assert!(rows.iter().all(|s| s.limits() == Some("issue15")));
        let mixed = parse_list(" fanin-q1, idle:5_000 ,conn5k,").unwrap();
        assert_eq!(
            mixed,
            vec![
                Scenario::FanIn(1),
                Scenario::Idle(5000),
                Scenario::Harness(harness::Row::Conn5k)
            ]
        );
        assert!(parse_list("fanout50").is_err());
        let b = parse_list(backlog::NAMES).unwrap();
        let names: Vec<String> = b.iter().map(Scenario::name).collect();
        assert_eq!(names.join(","), backlog::NAMES);
        assert!(b.iter().all(|s| s.limits() == Some("backlog")));
        assert!(b[0].skips("rumqttd").is_some() && b[0].skips("mosquitto").is_none());
        assert!(parse_list("backlog-q3").is_err());
    }
}
