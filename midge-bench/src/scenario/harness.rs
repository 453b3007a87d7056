//! The shapes of the independent harness of issue 15 (midge against Mosquitto 2.0.11,
//! rumqttd 0.20 and FlashMQ 1.9), as rows of their own: each row fixes every size itself,
//! whatever `run`'s size flags say, and runs one of the ordinary scenario families with
//! those sizes. Their labels start with the row's name in brackets, so they never share a
//! table row with the ordinary scenarios.
//!
//! The brokers are meant to run with that harness's limits, 1000 messages in flight and
//! 1,000,000 queued per client: `run` starts them with `MIDGE_BENCH_LIMITS=issue15` in
//! their environment for these rows ([`LIMITS`]), and scripts/bench.sh's start scripts
//! write their configs from it.

use std::path::PathBuf;
use std::time::Duration;

use super::{Scenario, Sizes};

/// Every row, in the order `--scenarios issue15` runs them.
pub const HARNESS_LIST: &str = "fanout50-q0,fanout50-q1,fanin10-q1,fanin10-q0,large1-q1,\
latency1k-q0,latency1k-q1,idle5k,conn5k";

/// The name that stands for [`HARNESS_LIST`] in `--scenarios`.
pub const ALIAS: &str = "issue15";

/// `MIDGE_BENCH_LIMITS` for the brokers of these rows.
pub const LIMITS: &str = "issue15";

/// Payload bytes of the small-message rows.
const SIZE: usize = 64;
/// Fan-out: 1 publisher → 50 subscribers of one topic, 60,000 messages published.
const FANOUT_SUBS: usize = 50;
const FANOUT_MSGS: u64 = 60_000;
/// Fan-in: 10 publishers, 60,000 messages each (the issue gives no count for fan-in).
const FANIN_PUBS: usize = 10;
const FANIN_MSGS_EACH: u64 = 60_000;
/// Large: 1 MiB payloads, 1 → 1, 8 in flight (the family's window), 2,000 messages.
const LARGE_SIZE: usize = 1024 * 1024;
const LARGE_MSGS: u64 = 2_000;
/// Latency: 1,000 msg/s for 10 s (10,000 samples).
const LATENCY_RATE: u64 = 1_000;
const LATENCY_SECS: u64 = 10;
/// Idle connections, 1 subscription each, and connection setup rate.
const IDLE_CONNS: usize = 5_000;
const CONN_COUNT: usize = 5_000;
/// QoS 1 messages in flight per small-message publisher.
const WINDOW: usize = 64;

/// One row of the independent harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row {
    /// Fan-out, 1 publisher → 50 subscribers, 64 B, 60,000 messages: deliveries/s.
    FanOut50(u8),
    /// Fan-in, 10 publishers → 1 wildcard subscriber, 64 B: msg/s.
    FanIn10(u8),
    /// 1 MiB payloads, QoS 1, 1 publisher → 1 subscriber, 8 in flight: MiB/s.
    Large1,
    /// 1,000 msg/s, 64 B, 1 → 1: p50 / p99.
    Latency1k(u8),
    /// 5,000 idle clients, 1 subscription each: broker RSS per connection.
    Idle5k,
    /// 5,000 clients connect: connections/s.
    Conn5k,
}

impl Row {
    pub const ALL: [Row; 9] = [
        Row::FanOut50(0),
        Row::FanOut50(1),
        Row::FanIn10(1),
        Row::FanIn10(0),
        Row::Large1,
        Row::Latency1k(0),
        Row::Latency1k(1),
        Row::Idle5k,
        Row::Conn5k,
    ];

    pub fn name(self) -> String {
        match self {
            Row::FanOut50(q) => format!("fanout50-q{q}"),
            Row::FanIn10(q) => format!("fanin10-q{q}"),
            Row::Large1 => "large1-q1".into(),
            Row::Latency1k(q) => format!("latency1k-q{q}"),
            Row::Idle5k => "idle5k".into(),
            Row::Conn5k => "conn5k".into(),
        }
    }

    pub fn parse(s: &str) -> Option<Row> {
        Row::ALL.into_iter().find(|r| r.name() == s)
    }

    /// The ordinary scenario this row runs, with [`Row::sizes`].
    pub fn family(self) -> Scenario {
        match self {
            Row::FanOut50(q) => Scenario::FanOut(q),
            Row::FanIn10(q) => Scenario::FanIn(q),
            Row::Large1 => Scenario::Large,
            Row::Latency1k(_) => Scenario::Latency,
            Row::Idle5k => Scenario::Idle(IDLE_CONNS),
            Row::Conn5k => Scenario::Conn,
        }
    }

    /// Every size and limit of this row; only `exe` comes from outside.
    pub fn sizes(self, exe: PathBuf) -> Sizes {
        // Fan-out bounds its publisher at max_msgs / subscribers; the message scenarios
        // share max_msgs out among their publishers.
        let max_msgs = match self {
            Row::FanOut50(_) => FANOUT_MSGS * FANOUT_SUBS as u64,
            Row::FanIn10(_) => FANIN_MSGS_EACH * FANIN_PUBS as u64,
            _ => 0,
        };
        Sizes {
            // Long enough for every message of the row to go out on a slow broker
            // (Mosquitto's fan-out QoS 1 took 43 s on a busy 2-core machine); the counts
            // end the rows first. With the drain, within the default --scenario-timeout.
            load: Duration::from_secs(120),
            drain: Duration::from_secs(30),
            quiet: Duration::from_secs(2),
            max_msgs,
            window: WINDOW,
            size: SIZE,
            fanin_pubs: FANIN_PUBS,
            fanout_subs: FANOUT_SUBS,
            pairs: 0,
            pairs_qos: 1,
            latency_rate: LATENCY_RATE,
            latency_secs: LATENCY_SECS,
            latency_qos: match self {
                Row::Latency1k(q) => q,
                _ => 1,
            },
            large_size: LARGE_SIZE,
            large_subs: 1,
            large_count: LARGE_MSGS,
            scale_subs: 0,
            scale_conns: 1,
            scale_pubs: 1,
            retained: 0,
            conn_count: CONN_COUNT,
            conn_concurrency: 100,
            concurrency: 200,
            backlog: Default::default(),
            exe,
        }
    }
}

/// `[name] label`: the row's metric labels, apart from the ordinary scenarios' rows.
pub fn label(row: Row, label: &str) -> String {
    format!("[{}] {label}", row.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_parses_back_and_is_listed() {
        let listed: Vec<&str> = HARNESS_LIST.split(',').collect();
        assert_eq!(listed.len(), Row::ALL.len());
        for (r, name) in Row::ALL.into_iter().zip(listed) {
            assert_eq!(r.name(), name);
            assert_eq!(Row::parse(name), Some(r));
            assert_ne!(r.family().name(), name, "a row needs a name of its own");
        }
        assert_eq!(Row::parse("fanout-q0"), None);
    }

    #[test]
    fn sizes_are_the_harness_shapes() {
        let z = |r: Row| r.sizes(PathBuf::from("x"));
        let f = z(Row::FanOut50(0));
        assert_eq!((f.fanout_subs, f.size), (50, 64));
        assert_eq!(f.max_msgs / f.fanout_subs as u64, 60_000);
        let i = z(Row::FanIn10(1));
        assert_eq!((i.fanin_pubs, i.size), (10, 64));
        let l = z(Row::Large1);
        assert_eq!((l.large_size, l.large_subs), (1 << 20, 1));
        assert_eq!(z(Row::Latency1k(0)).latency_qos, 0);
        assert_eq!(z(Row::Latency1k(1)).latency_rate, 1_000);
        assert_eq!(Row::Idle5k.family(), Scenario::Idle(5_000));
        assert_eq!(z(Row::Conn5k).conn_count, 5_000);
    }
}
