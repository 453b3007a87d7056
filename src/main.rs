//! The `midge` command: reads the configuration, sets up logging and signal handling,
//! and runs the broker until SIGINT or SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use clap::{ArgAction, Parser};
use midge::config::Listener;
use midge::Config;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

mod cli;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// midge: a lightweight MQTT broker.
#[derive(Debug, Parser)]
#[command(name = "midge", version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Configuration file (TOML). Without it, the built-in defaults are used (one
    /// listener on 127.0.0.1:1883) and state is kept in memory only (no store).
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
    /// Check a configuration file without starting: every file it names and every
    /// listener's address; lists every problem found (exit 1), or says "config OK".
    CheckConfig(cli::check::CheckArgs),
}

fn main() -> ExitCode {
    let mut args = Cli::parse();
    match args.command.take() {
        Some(Command::Passwd(passwd)) => {
            return match cli::passwd::run(passwd) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    eprintln!("midge passwd: {message}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::CheckConfig(check)) => {
            return match cli::check::run(&check) {
                true => ExitCode::SUCCESS,
                false => ExitCode::FAILURE,
            };
        }
        None => {}
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
    // Every path in a config file is taken from its directory, so that midge finds the
    // same files whatever directory it is started from (`/` under systemd). Without a
    // config file there is no such place, and midge keeps state in memory (as Mosquitto
    // does when started without one) rather than litter the working directory.
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
    let log_file = cli::logging::init(prepared.config(), args.verbose)
        .map_err(|e| format!("{origin}: {e}"))?;

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
        let on_reload: midge::server::ReloadHook = match log_file {
            Some(file) => Box::new(move || cli::logging::reopen(&file)),
            None => Box::new(|| {}),
        };
        midge::run(prepared, shutdown, reload, on_reload).await
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

/// SIGHUP: reopen the log file and reload the password and ACL files. First
/// SIGINT/SIGTERM: graceful shutdown. A second one while shutting down: exit at once.
async fn watch_signals(mut signals: Signals, shutdown: CancellationToken, reload: Arc<Notify>) {
    let mut stopping = false;
    loop {
        match signals.next().await {
            SignalEvent::Reload => {
                tracing::info!(event = "reload", "received SIGHUP, reloading");
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
}
