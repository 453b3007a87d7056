//! Logging: the filter (`log_level`, `-v`, `RUST_LOG`), the format (`log_format`: text or
//! JSON lines) and the destination (`log_dest`: stderr or a file reopened on SIGHUP).

use std::io::IsTerminal;

use midge::config::{LogDest, LogFormat};
use midge::log_file::LogFile;
use midge::Config;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::EnvFilter;

use super::log_format::TextFormat;

/// Installs the process's logger as `config` and the command line say. Returns the log
/// file, when there is one, for SIGHUP to reopen.
pub fn init(config: &Config, verbose: u8) -> Result<Option<LogFile>, String> {
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let filter = filter(rust_log.as_deref(), &config.log_level, verbose)?;
    let file = match &config.log_dest {
        LogDest::Stderr => None,
        LogDest::File(path) => Some(
            LogFile::open(path)
                .map_err(|e| format!("log_dest = {:?}: cannot open: {e}", path.display()))?,
        ),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // Colours only for a person at a terminal, never in a file or JSON.
    let ansi = file.is_none() && config.log_format == LogFormat::Text && is_terminal();
    // Text lines through midge's own formatter (the same lines, for less work: see
    // log_format.rs); JSON through tracing-subscriber's.
    let text = TextFormat::default();
    match (config.log_format, &file) {
        (LogFormat::Text, None) => builder
            .with_ansi(ansi)
            .event_format(text)
            .with_writer(std::io::stderr)
            .init(),
        (LogFormat::Text, Some(file)) => builder
            .with_ansi(false)
            .event_format(text)
            .with_writer(file.clone())
            .init(),
        (LogFormat::Json, None) => builder.json().with_writer(std::io::stderr).init(),
        (LogFormat::Json, Some(file)) => builder.json().with_writer(file.clone()).init(),
    }
    Ok(file)
}

fn is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// SIGHUP: the log file (after logrotate moved it) is opened afresh at its path.
pub fn reopen(file: &LogFile) {
    match file.reopen() {
        Ok(()) => tracing::info!(
            event = "log_reopened",
            path = ?file.path(),
            "reopened log file {}",
            file.path().display()
        ),
        Err(e) => tracing::error!(
            event = "log_not_reopened",
            path = ?file.path(),
            "cannot reopen log file {}, still writing to the old one: {e}",
            file.path().display()
        ),
    }
}

/// RUST_LOG, when set, wins; otherwise the configured `log_level`, raised to at least debug
/// by `-v` and trace by `-vv`.
pub fn filter(rust_log: Option<&str>, log_level: &str, verbose: u8) -> Result<EnvFilter, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_only_raises_the_level() {
        let f = |rust_log, level, v| filter(rust_log, level, v).unwrap().to_string();
        assert_eq!(f(None, "info", 0), "info");
        assert_eq!(f(None, "info", 1), "debug");
        assert_eq!(f(None, "info", 2), "trace");
        assert_eq!(f(None, "trace", 1), "trace");
        assert_eq!(
            f(None, "warn,midge::router=trace", 1),
            "midge::router=trace,debug"
        );
        assert_eq!(f(Some("error"), "info", 2), "error");
        assert!(filter(Some("x=nope"), "info", 0)
            .unwrap_err()
            .starts_with("RUST_LOG="));
    }
}
