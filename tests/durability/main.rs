//! Durability (issue 7): no acknowledged message is ever lost, across kill -9 and restarts.
//!
//! Black-box tests against the real `midge` binary and its `[persistence]` store:
//!
//! * a crash test: publishers with numbered QoS 1 / QoS 2 messages to an offline persistent
//!   subscriber, SIGKILL at random moments, restart on the same store, and every
//!   acknowledged message is delivered, QoS 2 at most once, in order per publisher
//!   (crash.rs, `CrashRun`; `scripts/crash-loop.sh` runs the same scenario hundreds of
//!   times through the ignored `crash::crash_loop` test);
//! * a delivery crash test: SIGKILL while QoS 2 messages are being delivered to a
//!   persistent subscriber that keeps its QoS 2 receiver state as the specification says,
//!   and each message still arrives exactly once (crash.rs);
//! * restart tests (restart.rs): retained messages, subscriptions and queues, inflight packet ids,
//!   incoming QoS 2 state, session expiry and a clean SIGTERM shutdown;
//! * fault injection (faults.rs): a torn last record, corruption in the middle of a segment, a read-only
//!   store directory, a full disk (a small tmpfs: needs root / CAP_SYS_ADMIN, and fails,
//!   never skips, without it) and two brokers on one store.
//!
//! Every client is the raw client of tests/common ([`common::raw::Raw`]), a socket speaking
//! MQTT bytes, so that each test knows exactly which acknowledgements arrived before the
//! broker was killed. Everything runs on 127.0.0.1, and every loop is bounded in count and
//! in time. One test binary with a module an area: each binary links the whole crate.

#[path = "../common/mod.rs"]
mod common;

mod crash;
mod faults;
mod restart;
mod spool;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use common::{event_lines, log_field, wait_child, Broker};

/// How long anything that must happen may take.
const WAIT: Duration = Duration::from_secs(10);
/// How long to listen before concluding that nothing (more) arrives.
const QUIET: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------
// Broker helpers
// ---------------------------------------------------------------------------------------

/// Top-level keys every test here uses: unlimited queues (so no acknowledged message is
/// dropped by a queue policy) and re-sending only on reconnect.
const BASE: &str = "max_queued_messages = 0\nmax_queued_bytes = 0\nretry_interval = 0\n";

/// A config with the durable store in `data/` next to the config file.
fn durable_config(top: &str, sync: &str) -> String {
    format!("{BASE}{top}\n[persistence]\nenabled = true\nsync = \"{sync}\"\n")
}

fn durable_broker(top: &str) -> Broker {
    Broker::start(&durable_config(top, "always"))
}

/// The default store directory of a harness broker: `data` next to its config file.
fn store_dir(b: &Broker) -> PathBuf {
    b.dir.path().join("data")
}

/// CONNECT properties with an optional Session Expiry Interval.
fn session_expiry(secs: Option<u32>) -> Vec<common::packets::Prop> {
    secs.map(|s| common::packets::Prop::Four(common::packets::SESSION_EXPIRY, s))
        .into_iter()
        .collect()
}

/// The fields of midge's start event `store_loaded` (the line "store loaded from <dir>:
/// <S> sessions, <M> queued messages, <R> retained messages in <T> ms ...").
#[derive(Debug, Clone, PartialEq)]
struct Loaded {
    line: String,
    dir: String,
    sessions: u64,
    queued: u64,
    retained: u64,
}

/// Reads the last `store_loaded` event of `log`.
fn parse_loaded(log: &str) -> Option<Loaded> {
    let line = *event_lines(log, "store_loaded", &[]).last()?;
    let number = |key: &str| -> Option<u64> { log_field(line, key)?.parse().ok() };
    Some(Loaded {
        line: line.to_owned(),
        dir: log_field(line, "dir")?.to_owned(),
        sessions: number("sessions")?,
        queued: number("queued")?,
        retained: number("retained")?,
    })
}

/// The `store_loaded` event of the run that began at log offset `from`.
fn loaded_since(b: &Broker, from: usize) -> Loaded {
    let log = b.log();
    let since = log.get(from..).unwrap_or_default();
    parse_loaded(since).unwrap_or_else(|| {
        panic!(
            "no store_loaded event with dir, sessions, queued and retained since the \
             restart; log since:\n{since}"
        )
    })
}

/// SIGKILL, then start again on the same config (so the same store); returns the start's
/// "store loaded" counts.
fn kill_and_restart(b: &mut Broker) -> Loaded {
    b.kill();
    let from = b.log().len();
    b.spawn();
    loaded_since(b, from)
}

/// SIGTERM (which must exit 0), then start again on the same config.
fn terminate_and_restart(b: &mut Broker) -> Loaded {
    let status = b.terminate().expect("midge exits within 10 s of SIGTERM");
    assert!(
        status.success(),
        "SIGTERM: midge must flush and exit 0, got {status}; log:\n{}",
        b.log_tail(40)
    );
    let from = b.log().len();
    b.spawn();
    loaded_since(b, from)
}

/// midge's warnings about a torn record (cut off at start): its `store_torn_tail` events.
fn torn_warnings(log: &str) -> Vec<&str> {
    event_lines(log, "store_torn_tail", &[])
}

/// Segment files (`NNNNNNNN.log`, 8 digits) in `dir`, in order.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list the store {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.len() == 12 && n.ends_with(".log") && n[..8].bytes().all(|c| c.is_ascii_digit())
            })
        })
        .collect();
    out.sort();
    out
}

fn describe_segments(dir: &Path) -> String {
    segments(dir)
        .iter()
        .map(|p| {
            let len = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            format!("{} ({len} bytes)", p.display())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Length of `bytes` without its trailing zero bytes (a preallocated segment's unused
/// end is zero-filled, not records).
fn used_len(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
}

/// Runs midge on `config` (with `-p port`) expecting it to refuse to start; returns its
/// exit status and stderr. Panics if it is still running after [`WAIT`].
fn run_expecting_refusal(config: &Path, port: u16) -> (ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_midge"))
        .arg("-c")
        .arg(config)
        .arg("-p")
        .arg(port.to_string())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn midge");
    // Read stderr on its own thread so a chatty child never blocks on a full pipe.
    let mut pipe = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    });
    let status = wait_child(&mut child, WAIT);
    let err = reader.join().expect("stderr reader");
    let status = status.unwrap_or_else(|| {
        panic!("midge should have refused to start but was still running after {WAIT:?}; stderr:\n{err}")
    });
    (status, err)
}

/// The `midge: ...` line of a refused start.
fn refusal_line(err: &str) -> String {
    err.lines()
        .find(|l| l.starts_with("midge: "))
        .unwrap_or_else(|| panic!("no line starting with \"midge: \" in stderr:\n{err}"))
        .to_owned()
}
