//! The `midge` command line: flags, configuration errors, logging and signals.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::process::{run, stderr, stdout, Running};
use common::*;

fn write_config(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn shipped_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml")
}

// ---------------------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------------------

#[test]
fn help_exits_0_and_documents_the_flags() {
    let out = run(&["--help"]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "--help: {} {}",
        out.status,
        stderr(&out)
    );
    for flag in ["--config", "--port", "--bind", "--verbose", "--version"] {
        assert!(text.contains(flag), "--help should mention {flag}:\n{text}");
    }
}

#[test]
fn version_prints_the_package_version() {
    let out = run(&["--version"]);
    assert!(out.status.success(), "--version: {}", out.status);
    let text = stdout(&out);
    assert_eq!(
        text.trim(),
        format!("midge {}", env!("CARGO_PKG_VERSION")),
        "--version output"
    );
}

#[test]
fn port_flag_overrides_the_configured_port() {
    let dir = TempDir::new("cli-port");
    let configured = free_port();
    let cfg = write_config(
        &dir,
        "midge.toml",
        &format!("[[listener]]\nbind = \"127.0.0.1\"\nport = {configured}\n"),
    );
    let (m, wanted) = Running::start_on_free_port(|port| {
        vec![
            "--config".into(),
            cfg.display().to_string(),
            "-p".into(),
            port.to_string(),
        ]
    });
    raw_connected(local(wanted), "port-override");
    let log = m.log();
    let configured_addr = format!("127.0.0.1:{configured}");
    assert!(
        event_lines(&log, "listening", &[("addr", &configured_addr)]).is_empty(),
        "the configured port {configured} should not be listened on when -p is given; log:\n{log}"
    );
}

#[test]
fn bind_flag_overrides_the_configured_address() {
    let dir = TempDir::new("cli-bind");
    // The configured address (::1) is never bound: --bind replaces it before listening.
    let (m, port) = Running::start_on_free_port(|port| {
        let cfg = write_config(
            &dir,
            "midge.toml",
            &format!("[[listener]]\nbind = \"::1\"\nport = {port}\n"),
        );
        vec![
            "-c".into(),
            cfg.display().to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
        ]
    });
    raw_connected(local(port), "bind-override");
    let log = m.log();
    let bound: Vec<&str> = event_lines(&log, "listening", &[])
        .into_iter()
        .filter_map(|l| log_field(l, "addr"))
        .collect();
    assert_eq!(
        bound,
        [format!("127.0.0.1:{port}")],
        "the configured ::1 should not be used; log:\n{log}"
    );
}

#[test]
fn port_in_use_exits_1_with_a_message() {
    let holder = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = holder.local_addr().unwrap().port();
    let out = run(&["-p", &port.to_string(), "--bind", "127.0.0.1"]);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "port in use: expected exit 1, got {}; stderr:\n{err}",
        out.status
    );
    assert!(
        err.contains("midge: ") && err.contains(&format!("127.0.0.1:{port}")),
        "port in use: stderr should say which address could not be bound:\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    drop(holder);
}

#[test]
fn verbose_flag_enables_debug_logging() {
    for (extra, want_debug) in [(Some("-v"), true), (None, false)] {
        let (m, port) = Running::start_on_free_port(|port| {
            let mut args = vec!["-p".to_owned(), port.to_string()];
            args.extend(extra.map(str::to_owned));
            args
        });
        let mut s = raw_connected(local(port), "verbose");
        s.write_all(&subscribe_packet(1, &[(b"v/t", 0)]))
            .expect("write");
        assert_eq!(read_exact(&mut s, 5), [0x90, 0x03, 0x00, 0x01, 0x00]);
        s.write_all(&[0xE0, 0x00]).expect("write");
        assert!(read_until_closed(&mut s, Duration::from_secs(5)).is_some());
        assert!(
            m.wait_event("connection_closed", &[("client_id", "verbose")]),
            "log:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(200));
        let log = m.log();
        assert_eq!(
            log.contains("DEBUG"),
            want_debug,
            "midge {extra:?}: DEBUG lines expected: {want_debug}; log:\n{log}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Configuration errors
// ---------------------------------------------------------------------------------------

#[test]
fn unknown_config_key_exits_1_naming_file_and_key() {
    assert_config_error("max_packet_size = 1024\nbogus_key = 1\n", &["bogus_key"]);
    assert_config_error(
        "[[listener]]\nport = 1884\nfrobnicate = true\n",
        &["frobnicate"],
    );
}

#[test]
fn bad_config_values_exit_1_naming_file_and_key() {
    assert_config_error("max_packet_size = 0\n", &["max_packet_size"]);
    assert_config_error("[[listener]]\nport = 70000\n", &["port", "70000"]);
    assert_config_error(
        "[[listener]]\nqueue_full = \"sometimes\"\n",
        &["queue_full", "sometimes"],
    );
    assert_config_error("connect_timeout = 0\n", &["connect_timeout"]);
    assert_config_error(
        "max_inflight_messages = \"ten\"\n",
        &["max_inflight_messages"],
    );
    assert_config_error("log_level = info\n", &["log_level"]);
    assert_config_error("max_packet_size = \n", &["line 1"]);
}

#[test]
fn missing_config_file_exits_1_naming_the_path() {
    let dir = TempDir::new("cli-missing");
    let path = dir.path().join("does-not-exist.toml");
    let path_s = path.display().to_string();
    let out = run(&["-c", &path_s]);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "missing config: got {}; stderr:\n{err}",
        out.status
    );
    assert!(
        err.starts_with("midge: ") && err.contains(&path_s),
        "missing config: stderr should name {path_s}:\n{err}"
    );
}

#[test]
fn shipped_config_starts_and_accepts_an_mqtt_client() {
    // A copy, so that its store (`data` next to the config file) goes to a scratch
    // directory, not into the checkout, where a broker started with the README's first
    // command may hold it.
    let dir = TempDir::new("cli-shipped");
    let shipped = std::fs::read_to_string(shipped_config()).expect("read config.toml");
    let cfg = write_config(&dir, "config.toml", &shipped);
    let (_m, port) = Running::start_on_free_port(|port| {
        vec![
            "-c".into(),
            cfg.display().to_string(),
            "-p".into(),
            port.to_string(),
        ]
    });
    let mut s = raw_connected(local(port), "shipped-config");
    s.write_all(&[0xC0, 0x00]).expect("write PINGREQ");
    assert_eq!(read_exact(&mut s, 2), [0xD0, 0x00], "PINGRESP");
}

// ---------------------------------------------------------------------------------------
// Logging
// ---------------------------------------------------------------------------------------

#[test]
fn log_shows_listen_address_and_client_connect_and_disconnect_lines() {
    // start_on_free_port waits for the `listening` event on 127.0.0.1:PORT.
    let (m, port) = Running::start_on_free_port(|port| vec!["-p".into(), port.to_string()]);

    // A client that says DISCONNECT.
    let mut a = raw_connected(local(port), "log-client-a");
    let a_peer = a.local_addr().unwrap().to_string();
    assert!(
        m.wait_event(
            "client_connected",
            &[("client_id", "log-client-a"), ("peer", &a_peer)]
        ),
        "log should have the connect of log-client-a from {a_peer}; log:\n{}",
        m.log()
    );
    a.write_all(&[0xE0, 0x00]).expect("write DISCONNECT");
    assert!(read_until_closed(&mut a, Duration::from_secs(5)).is_some());

    // A client that just goes away.
    let b = raw_connected(local(port), "log-client-b");
    let b_peer = b.local_addr().unwrap().to_string();
    assert!(m.wait_event(
        "client_connected",
        &[("client_id", "log-client-b"), ("peer", &b_peer)]
    ));
    drop(b);

    // a said DISCONNECT; b's end may be read as a close or a socket error.
    let a_closed = [
        ("client_id", "log-client-a"),
        ("peer", a_peer.as_str()),
        ("cause", "disconnect"),
    ];
    let b_closed = [("client_id", "log-client-b"), ("peer", b_peer.as_str())];
    for closed in [&a_closed[..], &b_closed[..]] {
        assert!(
            m.wait_event("connection_closed", closed),
            "log should have a disconnect line for {closed:?}; log:\n{}",
            m.log()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------------------

#[test]
fn sigterm_exits_0_after_delivering_acknowledged_qos1_messages() {
    let mut broker = start_broker("");
    let mut sub = raw_connected(broker.addr(), "sigterm-sub");
    sub.write_all(&subscribe_packet(1, &[(b"sig/t", 1)]))
        .expect("write SUBSCRIBE");
    assert_eq!(read_exact(&mut sub, 5), [0x90, 0x03, 0x00, 0x01, 0x01]);

    let mut publ = raw_connected(broker.addr(), "sigterm-pub");
    let count = 10u16;
    for i in 1..=count {
        let payload = format!("inflight-{i}");
        publ.write_all(&publish_packet(b"sig/t", 1, i, payload.as_bytes(), false))
            .expect("write PUBLISH");
        let ack = read_exact(&mut publ, 4);
        assert_eq!(ack, [0x40, 0x02, (i >> 8) as u8, i as u8], "PUBACK {i}");
    }
    // Every message is acknowledged to the publisher: SIGTERM right away.
    let t0 = Instant::now();
    let status = broker.terminate();
    let took = t0.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!(
            "midge did not exit within 10 s of SIGTERM; log:\n{}",
            broker.log()
        )
    });
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM; log:\n{}",
        broker.log()
    );
    assert!(
        took < Duration::from_secs(5),
        "graceful shutdown took {took:?}"
    );

    let bytes = read_until_closed(&mut sub, Duration::from_secs(5))
        .expect("subscriber connection should be closed by the shutdown");
    let got: Vec<String> = split_packets(&bytes)
        .into_iter()
        .filter(|(h, _)| h >> 4 == 3)
        .map(|(h, body)| String::from_utf8_lossy(&parse_publish(h, &body).1).into_owned())
        .collect();
    let want: Vec<String> = (1..=count).map(|i| format!("inflight-{i}")).collect();
    assert_eq!(
        got,
        want,
        "every QoS 1 message acknowledged before SIGTERM must reach the online subscriber; log:\n{}",
        broker.log()
    );
}

#[test]
fn sigint_exits_0() {
    let (mut m, port) = Running::start_on_free_port(|port| vec!["-p".into(), port.to_string()]);
    let mut s = raw_connected(local(port), "sigint-client");
    let t0 = Instant::now();
    let status = m
        .signal_and_wait("INT", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("midge did not exit within 10 s of SIGINT"));
    assert_eq!(status.code(), Some(0), "exit status after SIGINT");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "SIGINT shutdown took {:?}",
        t0.elapsed()
    );
    assert!(
        read_until_closed(&mut s, Duration::from_secs(5)).is_some(),
        "client connection should be closed at shutdown"
    );
    assert!(
        TcpStream::connect(local(port)).is_err(),
        "port should be released"
    );
}

#[test]
fn sigterm_with_no_clients_exits_0() {
    let (mut m, _port) = Running::start_on_free_port(|port| vec!["-p".into(), port.to_string()]);
    let status = m
        .signal_and_wait("TERM", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("midge did not exit within 10 s of SIGTERM"));
    assert_eq!(status.code(), Some(0), "exit status; log:\n{}", m.log());
}
