//! The scenarios of `midge-bench run`, each bounded in message count and in time, each
//! reporting a few metrics (rows of the final table) and a line of details. One family of
//! scenarios per file; the message scenarios share [`messages`].

mod conn;
mod cpu;
mod flows;
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

pub use idle::open_idle;
pub use metric::{Better, Metric, Outcome};

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
}

pub const DEFAULT_LIST: &str =
    "fanin-q0,fanin-q1,fanout-q0,fanout-q1,pairs,latency,idle,large,sub-scale,retained,conn";

/// Scenarios run only when named.
pub const EXTRA_LIST: &str = "durable-q1";

impl std::str::FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
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
                        "unknown scenario {s:?} (known: {DEFAULT_LIST}, {EXTRA_LIST}, idle:N)"
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
        }
    }
}

pub struct Ctx {
    pub opts: Arc<Opts>,
    /// The broker's pid, for its memory.
    pub pid: Option<u32>,
    pub sizes: Sizes,
}

pub async fn run(s: &Scenario, ctx: &Ctx) -> Result<Outcome, BoxError> {
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
    }
}
