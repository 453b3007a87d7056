//! Operations, the running side (issue 14): logging to a file in text or JSON, the file
//! reopened on SIGHUP (logrotate), and the systemd notifications (READY, RELOADING,
//! STOPPING) over a real unix datagram socket. Every test runs the real binary.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::process::{midge, wait_event_in_file, Launch, Running};
use common::*;

/// Starts midge on a config in `dir` with `extra` keys and a listener on a free port,
/// logging to `dir/midge.log` (given relatively: from the config file's directory).
fn start_logging_to_file(dir: &Path, extra: &str) -> (Running, u16, PathBuf) {
    let config = dir.join("midge.toml");
    let log = dir.join("midge.log");
    let (m, port) = Running::launch_on_free_port(|port| {
        let text = format!(
            "log_dest = \"midge.log\"\n{extra}\n[[listener]]\nbind = \"127.0.0.1\"\n\
             port = {port}\n[persistence]\nenabled = false\n"
        );
        Launch {
            log_file: Some(log.clone()),
            ..Launch::config(&config, &text, &format!("127.0.0.1:{port}"))
        }
    });
    (m, port, log)
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn log_dest_file_gets_the_log_and_a_fresh_file_after_logrotate_and_sighup() {
    let dir = TempDir::new("ops-log-file");
    let (m, port, log) = start_logging_to_file(dir.path(), "");
    assert!(
        m.log().is_empty(),
        "nothing on stderr with a log file:\n{}",
        m.log()
    );
    let connected = |log: &Path, id: &str| {
        wait_event_in_file(
            log,
            "client_connected",
            &[("client_id", id)],
            Duration::from_secs(5),
        )
    };
    let first = raw_connected(local(port), "before-rotation");
    assert!(connected(&log, "before-rotation"));

    // What logrotate does: move the file, then SIGHUP.
    let rotated = dir.path().join("midge.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    m.signal("HUP");
    assert!(
        wait_event_in_file(&log, "log_reopened", &[], Duration::from_secs(5)),
        "a new file at the path after SIGHUP; old one:\n{}",
        std::fs::read_to_string(&rotated).unwrap()
    );
    let _second = raw_connected(local(port), "after-rotation");
    assert!(connected(&log, "after-rotation"));
    drop(first);
    let old = std::fs::read_to_string(&rotated).unwrap();
    let in_old = |id: &str| event_lines(&old, "client_connected", &[("client_id", id)]).len();
    assert_eq!(
        (in_old("before-rotation"), in_old("after-rotation")),
        (1, 0)
    );
    assert_eq!(event_lines(&old, "reload", &[]).len(), 1, "{old}");
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let dir = TempDir::new("ops-log-json");
    let (_m, port, log) = start_logging_to_file(dir.path(), "log_format = \"json\"");
    // The launcher waited for the `listening` event, in JSON.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let listening = lines
        .iter()
        .find(|v| {
            v["fields"]["event"] == "listening"
                && v["fields"]["addr"] == format!("127.0.0.1:{port}")
        })
        .unwrap_or_else(|| panic!("no listening line:\n{text}"));
    assert_eq!(listening["level"], "INFO");
    assert!(listening["timestamp"].is_string());
    assert_eq!(listening["target"], "midge::server");
}

#[test]
fn log_dest_in_a_missing_directory_stops_midge_naming_the_key() {
    let dir = TempDir::new("ops-log-missing");
    let config = dir.path().join("midge.toml");
    std::fs::write(&config, "log_dest = \"no-such-dir/midge.log\"\n").unwrap();
    let out = common::process::run(&["-c", &config.display().to_string(), "-p", "1"]);
    let err = common::process::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("midge: ") && err.contains("log_dest") && err.contains("no-such-dir"),
        "{err}"
    );
}

/// The systemd side of `NOTIFY_SOCKET`: a datagram socket in a scratch directory.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: TempDir,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = TempDir::new("ops-notify");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        NotifySocket {
            socket,
            path,
            _dir: dir,
        }
    }

    /// The next message, or `None` after 10 s.
    fn next(&self) -> Option<String> {
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Whether `message` carries `state` (one `KEY=VALUE` per line).
    fn has(message: &str, state: &str) -> bool {
        message.lines().any(|l| l == state)
    }
}

#[test]
fn systemd_gets_ready_once_the_port_accepts_reloading_and_ready_on_sighup_stopping_on_sigterm() {
    let notify = NotifySocket::bind();
    // Not through the launcher: readiness is what is under test. A lost race for the
    // port ends the process before READY, and is retried.
    let (mut m, port) = 'started: {
        for _ in 0..5 {
            let port = free_port();
            let mut cmd = midge();
            cmd.args(["-p", &port.to_string()])
                .env("NOTIFY_SOCKET", &notify.path);
            let mut m = Running::spawn_command(cmd);
            let Some(first) = notify.next() else {
                assert!(m.log().contains("in use"), "no READY=1:\n{}", m.log());
                let _ = m.child.wait();
                continue;
            };
            // The first thing systemd hears is READY=1, and by then the port takes
            // connections.
            assert!(NotifySocket::has(&first, "READY=1"), "first: {first:?}");
            TcpStream::connect(local(port)).expect("the port accepts at READY=1");
            break 'started (m, port);
        }
        panic!("midge did not start on a free port in 5 attempts");
    };
    let _ = raw_connected(local(port), "notify-client");

    m.signal("HUP");
    let reloading = notify.next().expect("RELOADING=1 after SIGHUP");
    assert!(
        NotifySocket::has(&reloading, "RELOADING=1"),
        "{reloading:?}"
    );
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading:?}"
    );
    let ready = notify.next().expect("READY=1 after the reload");
    assert!(NotifySocket::has(&ready, "READY=1"), "{ready:?}");

    m.signal("TERM");
    let stopping = notify.next().expect("STOPPING=1 on SIGTERM");
    assert!(NotifySocket::has(&stopping, "STOPPING=1"), "{stopping:?}");
    let status = wait_child(&mut m.child, Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", m.log());
}

#[test]
fn an_unreachable_notify_socket_is_logged_and_midge_runs_on() {
    let dir = TempDir::new("ops-notify-gone");
    let gone = dir.path().join("no-such.sock");
    let (m, port) = Running::start_command_on_free_port(|port| {
        let mut cmd = midge();
        cmd.args(["-p", &port.to_string()])
            .env("NOTIFY_SOCKET", &gone);
        cmd
    });
    assert!(
        m.wait_event("notify_failed", &[("state", "READY=1")]),
        "{}",
        m.log()
    );
    let _ = raw_connected(local(port), "still-serving");
}
