//! The `midge` command: reads the configuration, sets up logging and signal handling,
//! and runs the broker until SIGINT or SIGTERM.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use clap::{ArgAction, Parser};
use midge::config::Listener;
use midge::Config;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::EnvFilter;

mod cli;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// midge: a lightweight MQTT broker.
#[derive(Debug, Parser)]
#[command(name = "midge", version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Configuration file (TOML). Without it, the built-in defaults are used
    /// (one listener on 127.0.0.1:1883).
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Port of the first listener (overrides the configuration file).
    #[arg(short, long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,

    /// Address of the first listener, e.g. 0.0.0.0 or :: (overrides the configuration file).
    #[arg(long, value_name = "ADDR")]
    bind: Option<IpAddr>,

    /// Log more: -v for debug, -vv for trace (RUST_LOG, when set, takes precedence).
    #[arg(short, long, action = ArgAction::Count)]
    verbose: u8,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Manage a password file (the same format and options as mosquitto_passwd).
    Passwd(cli::passwd::PasswdArgs),
}

fn main() -> ExitCode {
    let mut args = Cli::parse();
    if let Some(Command::Passwd(passwd)) = args.command.take() {
        return match cli::passwd::run(passwd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("midge passwd: {message}");
                ExitCode::FAILURE
            }
        };
    }
    match start(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("midge: {message}");
            ExitCode::FAILURE
        }
    }
}

fn start(args: Cli) -> Result<(), String> {
    let mut config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    apply_overrides(&mut config, args.port, args.bind)?;
    // The store lives next to the config file unless it says otherwise. Without a config
    // file there is no such place, and midge keeps state in memory (as Mosquitto does when
    // started without one) rather than litter the working directory.
    match &args.config {
        Some(path) => config.resolve_paths(path.parent()),
        None => config.persistence.enabled = false,
    }
    // Password, ACL and certificate files are read now, so that a bad one is reported
    // before anything else is printed.
    let origin = args
        .config
        .as_ref()
        .map_or_else(|| "defaults".to_owned(), |p| p.display().to_string());
    let prepared = midge::server::prepare(config, &origin)?;

    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let filter = log_filter(
        rust_log.as_deref(),
        &prepared.config().log_level,
        args.verbose,
    )?;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();

    let source = match &args.config {
        Some(path) => format!("config file {}", path.display()),
        None => "no config file, using defaults".to_owned(),
    };
    tracing::info!("midge {VERSION} starting ({source})");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let reload = Arc::new(Notify::new());
        let signals = Signals::new().map_err(|e| format!("cannot install signal handlers: {e}"))?;
        tokio::spawn(watch_signals(signals, shutdown.clone(), reload.clone()));
        midge::run(prepared, shutdown, reload).await
    });
    if result.is_ok() {
        tracing::info!("midge stopped");
    }
    result
}

/// `-p/--port` and `--bind` replace the first listener's port and address.
fn apply_overrides(
    config: &mut Config,
    port: Option<u16>,
    bind: Option<IpAddr>,
) -> Result<(), String> {
    if port.is_none() && bind.is_none() {
        return Ok(());
    }
    if config.listeners.is_empty() {
        config.listeners.push(Listener::default());
    }
    let first = &mut config.listeners[0];
    if let Some(port) = port {
        first.port = port;
    }
    if let Some(bind) = bind {
        first.bind = bind;
    }
    let addr = SocketAddr::new(first.bind, first.port);
    match config.listeners[1..]
        .iter()
        .position(|l| SocketAddr::new(l.bind, l.port) == addr)
    {
        Some(i) => Err(format!(
            "--port/--bind: {addr} is also the address of listener[{}] in the configuration",
            i + 2
        )),
        None => Ok(()),
    }
}

/// RUST_LOG, when set, wins; otherwise the configured `log_level`, raised to at least debug
/// by `-v` and trace by `-vv`.
fn log_filter(rust_log: Option<&str>, log_level: &str, verbose: u8) -> Result<EnvFilter, String> {
    if let Some(rust_log) = rust_log {
        return EnvFilter::try_new(rust_log)
            .map_err(|e| format!("RUST_LOG={rust_log:?} is invalid: {e}"));
    }
    let filter = EnvFilter::try_new(log_level)
        .map_err(|e| format!("log_level = {log_level:?} is invalid: {e}"))?;
    let wanted = match verbose {
        0 => return Ok(filter),
        1 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    // The level that applies to every target, if the configured filter names one; -v must
    // only ever raise it.
    let current = log_level
        .split(',')
        .filter_map(|directive| directive.trim().parse::<LevelFilter>().ok())
        .max();
    if current.is_some_and(|current| current >= wanted) {
        Ok(filter)
    } else {
        Ok(filter.add_directive(wanted.into()))
    }
}

/// The signal streams, registered before the broker starts so that an early SIGTERM (or
/// SIGHUP, whose default action would kill the broker) is not lost.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

enum SignalEvent {
    Stop(&'static str),
    Reload,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
                hangup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for the next SIGINT, SIGTERM or SIGHUP.
    async fn next(&mut self) -> SignalEvent {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => SignalEvent::Stop("SIGINT"),
                _ = self.terminate.recv() => SignalEvent::Stop("SIGTERM"),
                _ = self.hangup.recv() => SignalEvent::Reload,
            }
        }
        #[cfg(not(unix))]
        {
            match tokio::signal::ctrl_c().await {
                Ok(()) => SignalEvent::Stop("SIGINT"),
                Err(e) => {
                    tracing::warn!("cannot wait for Ctrl-C: {e}");
                    std::future::pending().await
                }
            }
        }
    }
}

/// SIGHUP: reload the password and ACL files. First SIGINT/SIGTERM: graceful shutdown. A
/// second one while shutting down: exit at once.
async fn watch_signals(mut signals: Signals, shutdown: CancellationToken, reload: Arc<Notify>) {
    let mut stopping = false;
    loop {
        match signals.next().await {
            SignalEvent::Reload => {
                tracing::info!("received SIGHUP, reloading the password and ACL files");
                reload.notify_one();
            }
            SignalEvent::Stop(name) if !stopping => {
                tracing::info!("received {name}, shutting down");
                shutdown.cancel();
                stopping = true;
            }
            SignalEvent::Stop(name) => {
                tracing::warn!("received {name} again, exiting without finishing the shutdown");
                std::process::exit(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
        let args =
            Cli::try_parse_from(["midge", "-c", "x.toml", "-p", "1884", "--bind", "::", "-vv"])
                .unwrap();
        assert_eq!(args.config, Some(PathBuf::from("x.toml")));
        assert_eq!(args.port, Some(1884));
        assert_eq!(args.bind, Some("::".parse().unwrap()));
        assert_eq!(args.verbose, 2);
        assert!(Cli::try_parse_from(["midge", "-p", "0"]).is_err());
        assert!(Cli::try_parse_from(["midge", "--bind", "localhost"]).is_err());
    }

    #[test]
    fn overrides_change_the_first_listener() {
        let mut config = Config::default();
        apply_overrides(&mut config, Some(1884), None).unwrap();
        assert_eq!(config.listeners[0].port, 1884);
        assert_eq!(
            config.listeners[0].bind,
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );

        let mut config = Config::default();
        config.listeners.clear();
        apply_overrides(&mut config, None, Some("0.0.0.0".parse().unwrap())).unwrap();
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(config.listeners[0].port, 1883);

        let mut config = Config::parse("[[listener]]\n[[listener]]\nport = 1884", "t").unwrap();
        let e = apply_overrides(&mut config, Some(1884), None).unwrap_err();
        assert!(e.contains("listener[2]"), "{e}");

        let mut config = Config::default();
        apply_overrides(&mut config, None, None).unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn verbosity_only_raises_the_level() {
        let f = |rust_log, level, v| log_filter(rust_log, level, v).unwrap().to_string();
        assert_eq!(f(None, "info", 0), "info");
        assert_eq!(f(None, "info", 1), "debug");
        assert_eq!(f(None, "info", 2), "trace");
        assert_eq!(f(None, "trace", 1), "trace");
        assert_eq!(
            f(None, "warn,midge::router=trace", 1),
            "midge::router=trace,debug"
        );
        assert_eq!(f(Some("error"), "info", 2), "error");
        assert!(log_filter(Some("x=nope"), "info", 0)
            .unwrap_err()
            .starts_with("RUST_LOG="));
    }
}
