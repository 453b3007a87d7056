//! `midge-bench`: an MQTT load generator and benchmark runner.
//!
//! `pub`, `sub` and `conn` make one kind of load against a running broker; `run` starts
//! brokers from command lines (or uses a running one), runs the scenarios against each,
//! and prints a comparison table. See docs/BENCHMARKS.md.

mod attack;
mod client;
mod null;
mod procs;
mod proto;
mod report;
mod run;
mod scenario;
mod stats;
mod workers;

use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::time::Instant;

use client::{BoxError, Opts};
use proto::Version;
use stats::{Histogram, Tracker};
use workers::{PubJob, SubStats, Topics};

#[derive(Parser)]
#[command(
    name = "midge-bench",
    version,
    about = "MQTT load generator and broker benchmark"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Common {
    /// Broker address.
    #[arg(long, global = true, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Broker port (`run` without --broker: the broker to benchmark).
    #[arg(short, long, global = true, default_value_t = 1883)]
    port: u16,
    /// MQTT version: 3.1.1 or 5.
    #[arg(long = "mqtt", id = "mqtt", global = true, default_value = "3.1.1")]
    version: Version,
    /// Tokio worker threads of the load generator (leave the other cores to the broker).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    /// Keep-alive announced in CONNECT, seconds (idle connections ping at half of it).
    #[arg(long, global = true, default_value_t = 60)]
    keepalive: u16,
    /// Loopback source addresses to spread connections over (127.0.0.2, 127.0.0.3, ...),
    /// each with its own ephemeral ports; 0: let the kernel pick.
    #[arg(long, global = true, default_value_t = 8)]
    sources: usize,
    /// Seconds allowed for each TCP connect, CONNACK and SUBACK.
    #[arg(long, global = true, default_value_t = 15)]
    timeout: u64,
}

#[derive(Subcommand)]
enum Cmd {
    /// Publish from N clients (flood or fixed rate) and report the rate.
    Pub(PubArgs),
    /// Subscribe with N clients; report rate, latency, losses and duplicates.
    Sub(SubArgs),
    /// Open N connections and report the connection setup rate.
    Conn(ConnArgs),
    /// Run the scenarios against one or more brokers and print a comparison table.
    Run(Box<run::RunArgs>),
    /// Run the hardening attacks against fresh brokers and print RSS / delay per attack.
    Attack(Box<attack::AttackArgs>),
    /// Serve as a "null broker" on 127.0.0.1:--port (0: any free port, printed): the least
    /// work an MQTT 3.1.1 server can do for the scenarios, the ceiling of this load
    /// generator. One thread, epoll; CONNECT, SUBSCRIBE (`+`/`#`), UNSUBSCRIBE, PINGREQ,
    /// DISCONNECT; PUBLISH QoS 0 and 1 (PUBACK at once, forwarded at the lower QoS, retain
    /// cleared). Not supported: QoS 2 and MQTT 5.0 (the connection is closed), retained
    /// messages, sessions, keep-alive, anything kept for a client. For loopback benchmarks
    /// only.
    NullBroker(null::NullArgs),
}

#[derive(Args)]
struct PubArgs {
    /// Topic; `{i}` is replaced by the client index.
    #[arg(short, long, default_value = "bench/{i}")]
    topic: String,
    #[arg(short, long, default_value_t = 1)]
    clients: usize,
    #[arg(short, long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Payload bytes (at least 20: publisher id, sequence number, send time).
    #[arg(short, long, default_value_t = 64)]
    size: usize,
    /// Messages per second per client; 0: as fast as possible.
    #[arg(short, long, default_value_t = 0.0)]
    rate: f64,
    /// Messages per client at most.
    #[arg(short = 'n', long, default_value_t = 1_000_000)]
    count: u64,
    /// Seconds of publishing at most.
    #[arg(short, long, default_value_t = 10.0)]
    duration: f64,
    /// QoS 1/2 messages in flight per client.
    #[arg(short, long, default_value_t = 64)]
    window: usize,
    #[arg(long)]
    retain: bool,
    /// First publisher id written into the payloads (to tell several `pub` runs apart).
    #[arg(long, default_value_t = 0)]
    id_base: u32,
}

#[derive(Args)]
struct SubArgs {
    /// Topic filter; `{i}` is replaced by the client index.
    #[arg(short, long, default_value = "bench/#")]
    topic: String,
    #[arg(short, long, default_value_t = 1)]
    clients: usize,
    #[arg(short, long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Stop once this many messages arrived in all; 0: no limit.
    #[arg(short = 'n', long, default_value_t = 0)]
    count: u64,
    /// Seconds to run at most.
    #[arg(short, long, default_value_t = 60.0)]
    duration: f64,
    /// Stop when nothing arrived for this many seconds after the first message; 0: never.
    #[arg(long, default_value_t = 3.0)]
    quiet: f64,
}

#[derive(Args)]
struct ConnArgs {
    #[arg(short = 'n', long, default_value_t = 1000)]
    count: usize,
    /// Handshakes in progress at once.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Subscribe each connection to its own topic `bench/idle/<index>` (QoS 1).
    #[arg(long)]
    subscribe: bool,
    /// Seconds to keep the connections open before disconnecting.
    #[arg(long, default_value_t = 0.0)]
    hold: f64,
    /// Print `READY ok=N failed=M` and hold the connections until standard input closes.
    #[arg(long)]
    hold_stdin: bool,
    /// First connection index (client ids, topics, source addresses).
    #[arg(long, default_value_t = 0)]
    index_base: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    procs::raise_nofile();
    let c = &cli.common;
    // The null broker is its own single thread: no runtime.
    if let Cmd::NullBroker(a) = &cli.cmd {
        return match null::cmd_null_broker(c.port, a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("midge-bench null-broker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let opts = Arc::new(Opts {
        host: c.host,
        port: c.port,
        version: c.version,
        keep_alive: c.keepalive,
        sources: Opts::loopback_sources(c.host, c.sources),
        timeout: Duration::from_secs(c.timeout),
    });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(c.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("midge-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.cmd {
        Cmd::Pub(a) => rt.block_on(cmd_pub(opts, a)),
        Cmd::Sub(a) => rt.block_on(cmd_sub(opts, a)),
        Cmd::Conn(a) => rt.block_on(cmd_conn(opts, a)),
        Cmd::Run(a) => run::cmd_run(&rt, opts, *a),
        Cmd::Attack(a) => attack::cmd_attack(&rt, *a),
        Cmd::NullBroker(_) => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("midge-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn cmd_pub(opts: Arc<Opts>, a: PubArgs) -> Result<(), BoxError> {
    let conns = client::connect_many(&opts, a.clients, 100, |i| {
        format!("midge-bench-pub-{}", a.id_base as usize + i)
    })
    .await;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, c) in conns.into_iter().enumerate() {
        let conn = c?;
        let job = PubJob {
            id: a.id_base + i as u32,
            topics: Topics::Fixed(a.topic.replace("{i}", &i.to_string())),
            qos: a.qos,
            retain: a.retain,
            size: a.size,
            count: a.count,
            rate: (a.rate > 0.0).then_some(a.rate),
            window: a.window,
            send_until: start + Duration::from_secs_f64(a.duration),
            give_up_at: start + Duration::from_secs_f64(a.duration + 30.0),
            keep_alive: Duration::from_secs(u64::from(opts.keep_alive)),
        };
        tasks.push(tokio::spawn(workers::publish(conn, job)));
    }
    let (mut sent, mut acked, mut errors) = (0, 0, 0);
    let mut conns = Vec::new();
    for t in tasks {
        let (c, st) = t.await?;
        sent += st.sent;
        acked += st.acked;
        if let Some(e) = st.error {
            errors += 1;
            eprintln!("publisher: {e}");
        }
        conns.push(c);
    }
    let secs = start.elapsed().as_secs_f64();
    client::close_all(conns, 100).await;
    println!(
        "pub: {} clients, QoS {}, {} B: sent {sent} in {secs:.2} s = {:.0} msg/s; acked {acked}; {errors} errors",
        a.clients,
        a.qos,
        a.size.max(stats::HEADER),
        sent as f64 / secs
    );
    Ok(())
}

async fn cmd_sub(opts: Arc<Opts>, a: SubArgs) -> Result<(), BoxError> {
    let mut subs = Vec::new();
    for i in 0..a.clients {
        let mut conn = client::Conn::connect(&opts, &format!("midge-bench-sub-{i}"), i).await?;
        let mut st = SubStats::default();
        let filter = a.topic.replace("{i}", &i.to_string());
        let refused = client::subscribe(&mut conn, &[filter], a.qos, opts.timeout, |p, out| {
            let _ = st.on_packet(p, stats::now_ns(), out);
        })
        .await?;
        if refused > 0 {
            return Err(format!("subscription of client {i} refused").into());
        }
        subs.push((conn, st));
    }
    eprintln!("sub: {} clients subscribed to {:?}", a.clients, a.topic);
    let (stop_tx, stop_rx) = watch::channel(false);
    let progress = Arc::new(AtomicU64::new(0));
    let early: u64 = subs.iter().map(|(_, s)| s.received).sum();
    let ka = Duration::from_secs(u64::from(opts.keep_alive));
    let tasks: Vec<_> = subs
        .into_iter()
        .map(|(c, s)| {
            tokio::spawn(workers::receive(
                c,
                s,
                stop_rx.clone(),
                progress.clone(),
                ka,
            ))
        })
        .collect();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(a.duration);
    let (mut last, mut last_change) = (0, start);
    loop {
        let got = progress.load(Ordering::Relaxed) + early;
        let now = Instant::now();
        if (a.count > 0 && got >= a.count) || now >= deadline {
            break;
        }
        if got != last {
            last = got;
            last_change = now;
        } else if got > 0 && a.quiet > 0.0 && now - last_change >= Duration::from_secs_f64(a.quiet)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_tx.send(true)?;
    let mut all = Tracker::default();
    let mut hist = Histogram::default();
    let (mut received, mut gaps, mut first, mut lastn) = (0, 0, u64::MAX, 0);
    let mut conns = Vec::new();
    for t in tasks {
        let (c, st) = t.await?;
        received += st.received;
        gaps += st.tracker.gaps();
        all.dups += st.tracker.dups;
        all.foreign += st.tracker.foreign;
        hist.merge(&st.latency);
        if st.received > 0 {
            first = first.min(st.first_ns);
            lastn = lastn.max(st.last_ns);
        }
        if let Some(e) = st.error {
            eprintln!("subscriber: {e}");
        }
        conns.push(c);
    }
    client::close_all(conns, 100).await;
    let secs = lastn.saturating_sub(first) as f64 / 1e9;
    let ms = |v: u64| v as f64 / 1e6;
    println!(
        "sub: received {received} in {secs:.2} s = {:.0} msg/s; dup {}, missing (sequence gaps) {gaps}, without header {}",
        if secs > 0.0 { received as f64 / secs } else { 0.0 },
        all.dups,
        all.foreign
    );
    println!(
        "latency ms: p50 {:.3} p99 {:.3} p99.9 {:.3} max {:.3} (clocks of this host)",
        ms(hist.quantile(0.5)),
        ms(hist.quantile(0.99)),
        ms(hist.quantile(0.999)),
        ms(hist.max)
    );
    Ok(())
}

async fn cmd_conn(opts: Arc<Opts>, a: ConnArgs) -> Result<(), BoxError> {
    let t0 = Instant::now();
    let (conns, ok, failed, first) = if a.subscribe {
        let (c, k, e) = scenario::open_idle(&opts, a.index_base, a.count, a.concurrency, 200).await;
        (c, k.ok, k.failed, e)
    } else {
        let mut ok = Vec::new();
        let mut first = None;
        let base = a.index_base;
        for r in client::connect_many(&opts, a.count, a.concurrency, |i| {
            format!("midge-bench-conn-{}", base + i)
        })
        .await
        {
            match r {
                Ok(c) => ok.push(c),
                Err(e) => {
                    first.get_or_insert(e.to_string());
                }
            }
        }
        let n = ok.len();
        (ok, n, a.count - n, first)
    };
    let secs = t0.elapsed().as_secs_f64();
    if a.hold_stdin {
        println!(
            "READY ok={ok} failed={failed} {}",
            first.unwrap_or_default()
        );
        let mut stdin = tokio::io::stdin();
        let mut sink = [0u8; 64];
        while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
    } else {
        println!(
            "conn: {ok} connected in {secs:.2} s = {:.0} connections/s; {failed} failed{}",
            ok as f64 / secs.max(1e-9),
            first.map(|e| format!(" (first: {e})")).unwrap_or_default()
        );
        if a.hold > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(a.hold)).await;
        }
    }
    client::close_all(conns, a.concurrency).await;
    // Scripts wait for a broker with `conn -n 1` in a loop: a failed connection must
    // show in the exit status, or they go on before the broker listens.
    if failed > 0 {
        return Err(format!("{failed} of {} connections failed", a.count).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks (duplicate argument ids panic only in debug builds,
    /// at the first parse).
    #[test]
    fn command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
