//! `midge-bench run`: starts each broker fresh for every scenario (or uses a running
//! one), runs the scenarios, each as many times as asked with the brokers alternating,
//! and prints the comparison table.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::client::{BoxError, Opts};
use crate::procs::{self, BrokerSpec};
use crate::report;
use crate::scenario::{self, Scenario, Sizes};

#[derive(Args)]
pub struct RunArgs {
    /// A broker to start for each scenario: `NAME=COMMAND`, `{port}` in COMMAND is replaced
    /// by the port to listen on (127.0.0.1). Repeat for several; the first one is compared
    /// to the others. Without it, the broker already running on --host/--port is used.
    #[arg(long = "broker", value_name = "NAME=COMMAND")]
    brokers: Vec<BrokerSpec>,
    /// Pid of the already running broker (for its memory and CPU), without --broker.
    #[arg(long)]
    pid: Option<u32>,
    /// Comma-separated reference brokers (names given to --broker): the ratio columns
    /// become every other broker's value divided by each reference's, instead of the
    /// first broker's divided by each other's.
    #[arg(long, value_name = "NAMES")]
    against: Option<String>,
    /// Comma-separated scenarios; `idle:N` for N idle connections; `durable-q1` (fan-in
    /// QoS 1 to a persistent session), the offline backlogs (`backlog`, `backlog-q2`,
    /// `backlog-fanout`, `backlog-fanout-q2`: queue, kill -9, restart, drain) and the independent harness's rows (issue 15, sizes
    /// of their own; `issue15` for all of them) only when named.
    #[arg(long, default_value = scenario::DEFAULT_LIST)]
    scenarios: String,
    /// Runs of each scenario against each broker, the brokers alternating (each round in
    /// a rotated order); the table shows each row's median and range, and ratios of the
    /// medians.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    repeat: u32,
    /// Brokers started by --broker listen on ports from here up, one new port per start.
    #[arg(long, default_value_t = 21000)]
    port_base: u16,
    /// Where the brokers' output goes.
    #[arg(long, default_value = "target/midge-bench")]
    log_dir: PathBuf,
    /// Also write the table (markdown) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seconds of load of the throughput scenarios.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds to wait for deliveries after the load ends, at most.
    #[arg(long, default_value_t = 20.0)]
    drain: f64,
    /// Deliveries are over once nothing arrived for this many seconds.
    #[arg(long, default_value_t = 2.0)]
    quiet: f64,
    /// Messages per throughput scenario at most (all publishers together).
    #[arg(long, default_value_t = 20_000_000)]
    max_msgs: u64,
    /// QoS 1 messages in flight per publisher.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Payload bytes of the small-message scenarios.
    #[arg(long, default_value_t = 64)]
    size: usize,
    #[arg(long, default_value_t = 50)]
    fanin_pubs: usize,
    #[arg(long, default_value_t = 100)]
    fanout_subs: usize,
    #[arg(long, default_value_t = 500)]
    pairs: usize,
    #[arg(long, default_value_t = 1)]
    pairs_qos: u8,
    #[arg(long, default_value_t = 10_000)]
    latency_rate: u64,
    #[arg(long, default_value_t = 20)]
    latency_secs: u64,
    #[arg(long, default_value_t = 1)]
    latency_qos: u8,
    #[arg(long, default_value_t = 1024 * 1024)]
    large_size: usize,
    #[arg(long, default_value_t = 10)]
    large_subs: usize,
    /// Large messages to publish at most.
    #[arg(long, default_value_t = 5000)]
    large_count: u64,
    #[arg(long, default_value_t = 100_000)]
    scale_subs: u64,
    #[arg(long, default_value_t = 100)]
    scale_conns: usize,
    #[arg(long, default_value_t = 4)]
    scale_pubs: usize,
    #[arg(long, default_value_t = 100_000)]
    retained: u64,
    #[arg(long, default_value_t = 10_000)]
    conn_count: usize,
    /// Handshakes in progress at once in the `conn` scenario (kept below the usual listen
    /// backlogs of 100-128, so that the rate is not set by SYN retransmissions).
    #[arg(long, default_value_t = 100)]
    conn_concurrency: usize,
    /// Handshakes in progress at once while connecting many clients.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Hard limit for one scenario against one broker, seconds (the backlog scenarios
    /// get at least the sum of their own bounds).
    #[arg(long, default_value_t = 300)]
    scenario_timeout: u64,
    /// Offline backlog: persistent sessions (`backlog-<i>`).
    #[arg(long, env = "MIDGE_BENCH_BACKLOG_SESSIONS", default_value_t = 1000)]
    backlog_sessions: usize,
    /// Offline backlog: messages queued in all, spread over the sessions (fan-out
    /// publishes total / sessions, each queued for every session).
    #[arg(long, env = "MIDGE_BENCH_BACKLOG_TOTAL", default_value_t = 10_000_000)]
    backlog_total: u64,
    /// Offline backlog: payload bytes (at least 20: stream, sequence number, time).
    #[arg(long, env = "MIDGE_BENCH_BACKLOG_SIZE", default_value_t = 64)]
    backlog_size: usize,
    /// Offline backlog: publishers.
    #[arg(long, env = "MIDGE_BENCH_BACKLOG_PUBS", default_value_t = 4)]
    backlog_pubs: usize,
    /// Offline backlog: seconds of publishing at most.
    #[arg(long, default_value_t = 900.0)]
    backlog_publish_secs: f64,
    /// Offline backlog: seconds the restarted broker has to answer CONNECT.
    #[arg(long, default_value_t = 120.0)]
    backlog_restart_secs: f64,
    /// Offline backlog: seconds of draining at most.
    #[arg(long, default_value_t = 900.0)]
    backlog_drain_secs: f64,
    /// Offline backlog: the drain ends once nothing arrived for this many seconds.
    #[arg(long, default_value_t = 15.0)]
    backlog_quiet_secs: f64,
    /// Offline backlog: stop publishing / draining when the broker's RSS passes this.
    #[arg(long, env = "MIDGE_BENCH_BACKLOG_MAX_RSS_MIB", default_value_t = 8192)]
    backlog_max_rss_mib: u64,
}

impl RunArgs {
    fn sizes(&self) -> Result<Sizes, BoxError> {
        Ok(Sizes {
            load: Duration::from_secs_f64(self.duration),
            drain: Duration::from_secs_f64(self.drain),
            quiet: Duration::from_secs_f64(self.quiet),
            max_msgs: self.max_msgs,
            window: self.window,
            size: self.size,
            fanin_pubs: self.fanin_pubs,
            fanout_subs: self.fanout_subs,
            pairs: self.pairs,
            pairs_qos: self.pairs_qos,
            latency_rate: self.latency_rate,
            latency_secs: self.latency_secs,
            latency_qos: self.latency_qos,
            large_size: self.large_size,
            large_subs: self.large_subs,
            large_count: self.large_count,
            scale_subs: self.scale_subs,
            scale_conns: self.scale_conns,
            scale_pubs: self.scale_pubs,
            retained: self.retained,
            conn_count: self.conn_count,
            conn_concurrency: self.conn_concurrency,
            concurrency: self.concurrency,
            backlog: scenario::BacklogSizes {
                sessions: self.backlog_sessions,
                total: self.backlog_total,
                size: self.backlog_size,
                pubs: self.backlog_pubs,
                publish_secs: self.backlog_publish_secs,
                restart_secs: self.backlog_restart_secs,
                drain_secs: self.backlog_drain_secs,
                quiet_secs: self.backlog_quiet_secs,
                max_rss_mib: self.backlog_max_rss_mib,
            },
            exe: std::env::current_exe()?,
        })
    }
}

pub fn cmd_run(rt: &tokio::runtime::Runtime, opts: Arc<Opts>, a: RunArgs) -> Result<(), BoxError> {
    let list = scenario::parse_list(&a.scenarios)?;
    let sizes = a.sizes()?;
    std::fs::create_dir_all(&a.log_dir)?;
    let names: Vec<String> = if a.brokers.is_empty() {
        vec![format!("{}:{}", opts.host, opts.port)]
    } else {
        a.brokers.iter().map(|b| b.name.clone()).collect()
    };
    let runs = a.repeat as usize;
    let mut table = report::Table::new(names.clone(), runs);
    if let Some(refs) = &a.against {
        let refs: Vec<String> = refs
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        table.against(&refs)?;
    }
    let mut runner = Runner {
        rt,
        opts,
        a: &a,
        sizes,
        names,
        table,
        port: a.port_base,
        runs,
    };
    let started = std::time::Instant::now();
    for s in &list {
        for run in 0..runs {
            for bi in round_order(runner.names.len(), run) {
                runner.once(s, bi, run)?;
            }
        }
    }
    let md = runner.table.markdown();
    println!("{md}");
    eprintln!(
        "midge-bench run: {:.0} s in all",
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &a.out {
        std::fs::write(path, &md)?;
    }
    Ok(())
}

/// The brokers' order in round `run` (from 0) of a scenario: each round starts one broker
/// later, so that no broker always runs first or always follows the same one.
fn round_order(brokers: usize, run: usize) -> Vec<usize> {
    (0..brokers).map(|k| (k + run) % brokers).collect()
}

struct Runner<'a> {
    rt: &'a tokio::runtime::Runtime,
    opts: Arc<Opts>,
    a: &'a RunArgs,
    sizes: Sizes,
    names: Vec<String>,
    table: report::Table,
    /// The next port to start a broker on.
    port: u16,
    runs: usize,
}

impl Runner<'_> {
    /// Run `run` (from 0) of scenario `s` against broker `bi`: start it (with --broker),
    /// run the scenario within --scenario-timeout, record the outcome, stop the broker.
    fn once(&mut self, s: &Scenario, bi: usize, run: usize) -> Result<(), BoxError> {
        let a = self.a;
        let name = self.names[bi].clone();
        let (tag, file_tag) = if self.runs > 1 {
            (
                format!(" (run {} of {})", run + 1, self.runs),
                format!("-r{}", run + 1),
            )
        } else {
            (String::new(), String::new())
        };
        let what = format!("{}{tag}", s.name());
        if let Some(skip) = s.skips(&name) {
            eprintln!("[{what}] {name}: skipped: {skip}");
            self.table.note(&name, &what, format!("skipped: {skip}"));
            return Ok(());
        }
        let mut control = None;
        let mut opts_here = (*self.opts).clone();
        let mut pid = a.pid;
        if let Some(spec) = a.brokers.get(bi) {
            let log = a.log_dir.join(format!(
                "{}-{}{file_tag}.log",
                spec.name,
                s.name().replace(':', "-")
            ));
            let r = loop {
                let p = self.port;
                self.port = self.port.wrapping_add(1).max(1024);
                match procs::start(spec, p, &log, s.limits()) {
                    Err(e) if e.contains("already in use") => continue,
                    r => break r,
                }
            };
            match r {
                Ok(r) => {
                    opts_here.port = r.port;
                    opts_here.host = "127.0.0.1".parse()?;
                    pid = Some(r.pid);
                    control = Some(Arc::new(procs::Control::new(
                        spec.clone(),
                        log,
                        s.limits(),
                        r,
                    )));
                }
                Err(e) => {
                    eprintln!("[{what}] {name}: {e}");
                    self.table.note(&name, &what, format!("did not start: {e}"));
                    return Ok(());
                }
            }
        }
        eprintln!(
            "[{what}] {name} on port {}{} ...",
            opts_here.port,
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
        );
        let ctx = scenario::Ctx {
            opts: Arc::new(opts_here),
            pid,
            sizes: self.sizes.clone(),
            broker: control.clone(),
        };
        // A scenario bounded by its own phases (the offline backlog) gets at least their
        // sum.
        let limit = a.scenario_timeout.max(s.min_timeout_secs(&self.sizes));
        let t = std::time::Instant::now();
        let result = self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(limit), scenario::run(s, &ctx)).await
        });
        // The scenario may have restarted the broker: its current process.
        let pid = control.as_ref().map_or(pid, |c| c.pid());
        let hwm = pid.and_then(|p| procs::status_kib(p, "VmHWM"));
        let crashed = control.as_ref().is_some_and(|c| !c.alive());
        match result {
            Ok(Ok(outcome)) => {
                eprintln!(
                    "[{what}] {name}: {}{}; broker peak RSS {} KiB; {:.1} s",
                    outcome.detail,
                    if crashed { "; BROKER EXITED" } else { "" },
                    hwm.map_or("?".into(), |h| h.to_string()),
                    t.elapsed().as_secs_f64()
                );
                for m in outcome.metrics {
                    self.table.add(&name, m);
                }
                if crashed {
                    self.table
                        .note(&name, &what, "broker exited during the scenario".into());
                }
            }
            Ok(Err(e)) => {
                eprintln!("[{what}] {name}: FAILED: {e}");
                self.table.note(&name, &what, format!("failed: {e}"));
            }
            Err(_) => {
                eprintln!("[{what}] {name}: TIMED OUT after {limit} s");
                self.table
                    .note(&name, &what, format!("timed out after {limit} s"));
            }
        }
        if let Some(c) = control {
            c.stop();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::round_order;

    #[test]
    fn rounds_rotate_the_brokers() {
        assert_eq!(round_order(4, 0), [0, 1, 2, 3]);
        assert_eq!(round_order(4, 1), [1, 2, 3, 0]);
        assert_eq!(round_order(4, 5), [1, 2, 3, 0]);
        assert_eq!(round_order(1, 2), [0]);
        assert!(round_order(0, 1).is_empty());
    }
}
