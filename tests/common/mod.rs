//! Shared test harness: starts the real `midge` binary on a free loopback port with a
//! config written for the test, and stops it when the handle is dropped.
//!
//! The helpers every test binary shares live here once: [`packets`] (MQTT packets of
//! either version byte by byte, and a parser of what the broker sends), [`raw`] (the one
//! raw MQTT client), [`mosquitto`] (the Mosquitto command-line clients), [`rng`] (the one
//! random generator), [`fuzz`], [`tls`], [`http`] (the operator's HTTP listener: a client,
//! the Prometheus parser, headless Chromium), [`process`] (the `midge` command run by a
//! test: arguments, environment, signals), and below the older socket-level helpers, now
//! written over [`packets`].
#![allow(dead_code)]

pub mod http;
pub mod mosquitto;
pub mod packets;
pub mod process;
pub mod raw;
pub mod rng;
pub mod tls;
pub mod ws;

// Each test binary uses its own part of the harness.
use packets::{frame, publish_bytes, put_str, Connect, Prop, Will, SESSION_EXPIRY, WILL_DELAY};
#[allow(unused_imports)]
pub use packets::{property_block, push_len, split_packets, user_properties};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("midge-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

pub struct Broker {
    pub child: Option<Child>,
    pub port: u16,
    /// The port that replaced [`SECOND_PORT`] in the config (a second listener's), or 0.
    pub second_port: u16,
    pub dir: TempDir,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
}

/// Written in a config given to [`Broker::start`] where a second listener's port goes.
pub const SECOND_PORT: &str = "@SECOND_PORT@";

impl Broker {
    /// Starts midge with the default config plus `extra` TOML (top-level keys; a
    /// `[[listener]]` is added for the chosen port unless `extra` declares listeners).
    pub fn start(extra: &str) -> Broker {
        // `free_port` only finds a port that was free a moment ago; another test can take it
        // before midge binds it. Readiness is midge's own `listening` event, and a lost
        // race is retried on a new port.
        const ATTEMPTS: u32 = 5;
        for attempt in 1..=ATTEMPTS {
            let dir = TempDir::new("broker");
            let port = free_port();
            // A second listener's port is chosen again with the first on each attempt.
            let second_port = if extra.contains(SECOND_PORT) {
                free_port()
            } else {
                0
            };
            let mut config = extra.replace(SECOND_PORT, &second_port.to_string());
            if !extra.contains("[[listener]]") {
                config.push_str(&format!(
                    "\n[[listener]]\nbind = \"127.0.0.1\"\nport = {port}\n"
                ));
            }
            let config_path = dir.path().join("midge.toml");
            std::fs::write(&config_path, config).expect("write config");
            let log_path = dir.path().join("midge.log");
            let mut b = Broker {
                child: None,
                port,
                second_port,
                dir,
                config_path,
                log_path,
            };
            match b.try_spawn() {
                Ok(()) => return b,
                Err(log) if log.contains("in use") && attempt < ATTEMPTS => continue,
                Err(log) => panic!("midge did not start on port {port}; log:\n{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// (Re)starts the process on the same config and port, and waits until it listens.
    pub fn spawn(&mut self) {
        if let Err(log) = self.try_spawn() {
            panic!("midge did not start on port {}; log:\n{log}", self.port);
        }
    }

    /// Starts the process and waits for its `listening` event on 127.0.0.1:PORT (logged
    /// after this spawn, not by an earlier run). On failure returns the log.
    fn try_spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open log");
        let offset = self.log().len();
        let child = Command::new(env!("CARGO_BIN_EXE_midge"))
            .arg("-c")
            .arg(&self.config_path)
            .arg("-p")
            .arg(self.port.to_string())
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn midge");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            let since = log.get(offset..).unwrap_or_default();
            if !event_lines(since, "listening", &[("addr", &addr)]).is_empty() {
                return Ok(());
            }
            if !self.is_running() {
                self.child = None;
                return Err(log);
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(log);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the broker logs the event `name` (true) or `timeout` passes (false):
    /// the structured field `event = "name"` of a tracing call in src/, which stays when
    /// the wording of the line changes.
    pub fn wait_event(&self, name: &str, timeout: Duration) -> bool {
        self.wait_event_with(name, &[], timeout)
    }

    /// Waits until the broker logs the event `name` with every field of `with` (see
    /// [`event_lines`]) (true) or `timeout` passes (false).
    pub fn wait_event_with(&self, name: &str, with: &[(&str, &str)], timeout: Duration) -> bool {
        wait_event_in(|| self.log(), name, with, timeout)
    }

    /// How many times the broker has logged the event `name` with every field of `with`.
    pub fn event_count(&self, name: &str, with: &[(&str, &str)]) -> usize {
        event_lines(&self.log(), name, with).len()
    }

    /// Sends SIGTERM and waits for the exit status (None if it did not exit in time).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILL, for restart tests.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Opens a raw TCP connection to the broker with a read timeout.
pub fn raw(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// A minimal MQTT 3.1.1 CONNECT (clean session, keep-alive 60).
pub fn connect_packet(client_id: &str) -> Vec<u8> {
    packets::connect311(client_id, true, 60, None)
}

/// Reads exactly `n` bytes, or panics with what was read.
pub fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).expect("read");
    buf
}

/// True when the peer closes the connection (EOF or reset) within the read timeout.
pub fn is_closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Connects with a raw socket and checks CONNACK accepted.
pub fn raw_connected(addr: SocketAddr, client_id: &str) -> TcpStream {
    let mut s = raw(addr);
    s.write_all(&connect_packet(client_id))
        .expect("write CONNECT");
    let ack = read_exact(&mut s, 4);
    assert_eq!(ack, [0x20, 0x02, 0x00, 0x00], "CONNACK for {client_id}");
    s
}

// ---------------------------------------------------------------------------------------
// Helpers added for the malformed-input, interop and CLI tests.
// ---------------------------------------------------------------------------------------

/// Reads until the peer closes the connection (EOF or reset) and returns everything read
/// before that, or `None` if the connection is still open after `timeout`.
pub fn read_until_closed(s: &mut TcpStream, timeout: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("set read timeout");
        match s.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return None
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Some(got),
        }
    }
}

/// A 3.1.1 PUBLISH with a raw (possibly invalid) topic; `pkid` is written for QoS 1 and 2
/// only.
pub fn publish_packet(topic: &[u8], qos: u8, pkid: u16, payload: &[u8], retain: bool) -> Vec<u8> {
    packets::publish_bytes(None, topic, qos, pkid, retain, false, payload)
}

/// A 3.1.1 SUBSCRIBE (fixed header 0x82) with raw filters and raw options bytes.
pub fn subscribe_packet(pkid: u16, filters: &[(&[u8], u8)]) -> Vec<u8> {
    packets::subscribe_bytes(None, pkid, filters)
}

/// (topic, payload) of a PUBLISH packet body, given its first header byte.
pub fn parse_publish(header: u8, body: &[u8]) -> (String, Vec<u8>) {
    assert_eq!(header >> 4, 3, "not a PUBLISH: {header:#04x}");
    let tlen = u16::from_be_bytes([body[0], body[1]]) as usize;
    let topic = String::from_utf8_lossy(&body[2..2 + tlen]).into_owned();
    let qos = (header >> 1) & 0x03;
    let start = 2 + tlen + if qos > 0 { 2 } else { 0 };
    (topic, body[start..].to_vec())
}

/// Waits for a child to exit, killing it after `timeout` (then returns `None`).
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads one complete MQTT packet (first header byte, body) within the socket's read
/// timeout; panics on EOF or timeout.
pub fn read_packet(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let header = read_exact(s, 1)[0];
    read_packet_after(s, header)
}

/// The rest of a packet whose first header byte has been read.
fn read_packet_after(s: &mut TcpStream, header: u8) -> (u8, Vec<u8>) {
    let mut len = 0usize;
    let mut mult = 1usize;
    for _ in 0..4 {
        let b = read_exact(s, 1)[0];
        len += (b & 0x7F) as usize * mult;
        mult *= 128;
        if b & 0x80 == 0 {
            return (header, read_exact(s, len));
        }
    }
    panic!("malformed remaining length from the broker");
}

/// The next packet (first header byte, body), or `None` when nothing arrives within the
/// socket's read timeout.
pub fn try_read_packet(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut first = [0u8; 1];
    match s.read(&mut first) {
        Ok(1) => {}
        _ => return None,
    }
    let (header, body) = read_packet_after(s, first[0]);
    Some((header, body))
}

/// Kept for the tests written against it: [`Broker::start`] now waits for midge's own
/// `listening` event and retries a lost port race itself.
pub fn start_broker(extra: &str) -> Broker {
    Broker::start(extra)
}

/// A CONNECT (MQTT 3.1.1, clean session, keep-alive 60) with optional credentials and
/// will (topic, payload; QoS 0, not retained).
pub fn connect_packet_with(
    client_id: &str,
    username: Option<&str>,
    password: Option<&[u8]>,
    will: Option<(&str, &[u8])>,
) -> Vec<u8> {
    Connect {
        username,
        password,
        will: will.map(|(topic, payload)| Will {
            topic,
            payload,
            ..Will::default()
        }),
        ..Connect::new(false, client_id)
    }
    .bytes()
}

/// Sends `connect` on a new raw connection and returns the socket with the CONNACK return
/// code.
pub fn raw_connack(addr: SocketAddr, connect: &[u8]) -> (TcpStream, u8) {
    let mut s = raw(addr);
    s.write_all(connect).expect("write CONNECT");
    let (header, body) = read_packet(&mut s);
    assert_eq!(header, 0x20, "expected CONNACK, got {header:#04x} {body:?}");
    assert_eq!(body.len(), 2, "CONNACK body {body:?}");
    (s, body[1])
}

/// The path of a command-line tool on PATH. A missing tool fails the test with the Debian
/// package that provides it (scripts/test.sh installs them all): it never skips.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    let package = match name {
        "stdbuf" => "coreutils",
        "mosquitto" | "mosquitto_passwd" => "mosquitto",
        "openssl" => "openssl",
        "chromium" => "chromium",
        _ => "mosquitto-clients",
    };
    panic!(
        "`{name}` was not found on PATH. This test needs Debian's {package} package: run \
         scripts/test.sh (which installs it) or `apt-get install {package}`."
    );
}

/// `mosquitto_pub` or `mosquitto_sub` (`tool_name`) aimed at 127.0.0.1:`port`, with
/// `args`; the caller sets its standard streams and starts it.
pub fn mosquitto_command(tool_name: &str, port: u16, args: &[&str]) -> Command {
    let mut cmd = Command::new(tool(tool_name));
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args);
    cmd
}

/// Runs midge on `config_text` (written to a scratch `bad-config.toml`) and asserts that
/// it exits with status 1 and one "midge: ..." message naming the file and every string in
/// `must_name`, before printing anything else. Returns the message.
pub fn assert_config_error(config_text: &str, must_name: &[&str]) -> String {
    let dir = TempDir::new("bad-config");
    let path = dir.path().join("bad-config.toml");
    std::fs::write(&path, config_text).expect("write config");
    let path_s = path.display().to_string();
    let out = process::run(&["-c", &path_s, "-p", &free_port().to_string()]);
    let err = process::stderr(&out);
    let status = out.status;
    assert_eq!(
        status.code(),
        Some(1),
        "config {config_text:?}: expected exit status 1, got {status}; stderr:\n{err}"
    );
    assert!(
        err.starts_with("midge: "),
        "config {config_text:?}: stderr should start with \"midge: \":\n{err}"
    );
    assert!(
        err.contains(&path_s),
        "config {config_text:?}: stderr should name the file {path_s}:\n{err}"
    );
    for needle in must_name {
        assert!(
            err.contains(needle),
            "config {config_text:?}: stderr should name {needle:?}:\n{err}"
        );
    }
    assert!(
        !err.contains("panicked"),
        "config {config_text:?}: midge panicked:\n{err}"
    );
    err
}

// ---------------------------------------------------------------------------------------
// Helpers for the hardening tests (issue 12): what the broker process really holds, and
// a probe that a well-behaved client is still served.
// ---------------------------------------------------------------------------------------

impl Broker {
    /// The broker process's resident set size in KiB (VmRSS from /proc), or 0 when it is
    /// not running.
    pub fn rss_kib(&self) -> u64 {
        let Some(child) = self.child.as_ref() else {
            return 0;
        };
        proc_status_kib(child.id(), "VmRSS:")
    }

    /// The broker process's peak resident set size in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        let Some(child) = self.child.as_ref() else {
            return 0;
        };
        proc_status_kib(child.id(), "VmHWM:")
    }

    /// How many file descriptors the broker process has open.
    pub fn open_fds(&self) -> usize {
        let Some(child) = self.child.as_ref() else {
            return 0;
        };
        std::fs::read_dir(format!("/proc/{}/fd", child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Asserts that a fresh, well-behaved 3.1.1 client can still connect, subscribe and
    /// get its own QoS 1 message back within a few seconds.
    pub fn assert_serves_healthy_client(&self, tag: &str) {
        assert_round_trip(self.addr(), tag);
    }
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Connects a new 3.1.1 client, subscribes to a topic of its own at QoS 1, publishes one
/// QoS 1 message to it and checks it comes back: the broker still serves others.
pub fn assert_round_trip(addr: SocketAddr, tag: &str) {
    let id = format!("healthy-{tag}-{}", COUNTER.fetch_add(1, Ordering::Relaxed));
    let topic = format!("healthy/{id}");
    let mut s = raw_connected(addr, &id);
    s.write_all(&subscribe_packet(1, &[(topic.as_bytes(), 1)]))
        .expect("write SUBSCRIBE");
    let (h, body) = read_packet(&mut s);
    assert_eq!(h, 0x90, "{tag}: SUBACK expected, got {h:#x} {body:?}");
    assert_eq!(body, [0x00, 0x01, 0x01], "{tag}: SUBACK granted QoS 1");
    s.write_all(&publish_packet(
        topic.as_bytes(),
        1,
        2,
        b"still-served",
        false,
    ))
    .expect("write PUBLISH");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got_puback = false;
    let mut got_message = false;
    while !(got_puback && got_message) {
        assert!(
            Instant::now() < deadline,
            "{tag}: healthy client not served in 5 s"
        );
        let (h, body) = read_packet(&mut s);
        match h & 0xF0 {
            0x40 => got_puback = true,
            0x30 => {
                let (t, payload) = parse_publish(h, &body);
                assert_eq!(
                    (t.as_str(), payload.as_slice()),
                    (topic.as_str(), &b"still-served"[..])
                );
                if h & 0x06 != 0 {
                    let pkid = &body[2 + t.len()..4 + t.len()];
                    s.write_all(&[0x40, 0x02, pkid[0], pkid[1]])
                        .expect("write PUBACK");
                }
                got_message = true;
            }
            other => panic!("{tag}: unexpected packet {other:#x} {body:?}"),
        }
    }
    let _ = s.write_all(&[0xE0, 0x00]);
}

// ---------------------------------------------------------------------------------------
// Helpers for the authz hardening tests (session owners, ACL at send time, $SYS): a
// CONNECT with every field they need, a password file, SIGHUP, and a buffered raw
// connection that collects the PUBLISHes it is sent.
// ---------------------------------------------------------------------------------------

/// A will for [`Login`].
#[derive(Clone, Copy, Default)]
pub struct LoginWill<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: u8,
    pub retain: bool,
    /// MQTT 5.0 Will Delay Interval, seconds.
    pub delay: Option<u32>,
}

/// A CONNECT with what the authz tests vary (keep-alive 60), for [`raw::Raw::login`].
#[derive(Clone, Copy, Default)]
pub struct Login<'a> {
    pub v5: bool,
    pub client_id: &'a str,
    pub clean: bool,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    /// MQTT 5.0 Session Expiry Interval, seconds.
    pub session_expiry: Option<u32>,
    pub will: Option<LoginWill<'a>>,
}

impl Login<'_> {
    pub fn bytes(&self) -> Vec<u8> {
        Connect {
            clean: self.clean,
            props: self
                .session_expiry
                .filter(|_| self.v5)
                .map(|secs| Prop::Four(SESSION_EXPIRY, secs))
                .into_iter()
                .collect(),
            will: self.will.map(|w| Will {
                topic: w.topic,
                payload: w.payload,
                qos: w.qos,
                retain: w.retain,
                props: w
                    .delay
                    .filter(|_| self.v5)
                    .map(|secs| Prop::Four(WILL_DELAY, secs))
                    .into_iter()
                    .collect(),
            }),
            username: self.username,
            password: self.password.map(str::as_bytes),
            ..Connect::new(self.v5, self.client_id)
        }
        .bytes()
    }
}

/// A password file with `users` (name, password), written by `midge passwd -b` into
/// `dir`.
pub fn passwd_file(dir: &std::path::Path, users: &[(&str, &str)]) -> PathBuf {
    let path = dir.join("passwords");
    for (i, (user, password)) in users.iter().enumerate() {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_midge"));
        cmd.arg("passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let out = cmd
            .arg("-b")
            .arg(&path)
            .args([user, password])
            .output()
            .expect("run midge passwd");
        assert!(
            out.status.success(),
            "midge passwd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    path
}

impl Broker {
    /// Sends SIGHUP (reload the password and ACL files).
    pub fn sighup(&self) {
        let pid = self.child.as_ref().expect("midge running").id();
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Bytes in the files of `dir` (the store directory).
    pub fn dir_bytes(dir: &std::path::Path) -> u64 {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}
// Fuzzing (issue 12): packet strategies, encoder, mutations and a bounded runner, in
// their own file.
// ---------------------------------------------------------------------------------------

pub mod fuzz;
// Helpers for the messages hardening tests (issue 12: user properties, topic aliases):
// raw MQTT 5.0 packets with property blocks, built byte by byte.
// ---------------------------------------------------------------------------------------

/// An MQTT 5.0 CONNECT (keep-alive 60) with raw CONNECT properties and an optional will
/// (topic, payload, raw will properties; QoS 0, not retained).
pub fn connect5_packet(
    client_id: &str,
    clean_start: bool,
    props: &[u8],
    will: Option<(&str, &[u8], &[u8])>,
) -> Vec<u8> {
    let flags = u8::from(clean_start) << 1 | if will.is_some() { 0x04 } else { 0 };
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, flags, 0x00, 0x3c];
    // Raw property bytes (possibly wrong on purpose), so not `Connect`, which takes `Prop`s.
    body.extend(property_block(props));
    put_str(&mut body, client_id.as_bytes());
    if let Some((topic, payload, will_props)) = will {
        body.extend(property_block(will_props));
        put_str(&mut body, topic.as_bytes());
        put_str(&mut body, payload);
    }
    frame(0x10, body)
}

/// An MQTT 5.0 PUBLISH with raw properties; `pkid` is written for QoS 1 and 2 only.
pub fn publish5_packet(topic: &str, qos: u8, pkid: u16, props: &[u8], payload: &[u8]) -> Vec<u8> {
    publish_bytes(
        Some(props),
        topic.as_bytes(),
        qos,
        pkid,
        false,
        false,
        payload,
    )
}

/// Connects with MQTT 5.0 and asserts CONNACK reason 0x00; returns the socket.
pub fn raw_connected5(
    addr: SocketAddr,
    client_id: &str,
    clean_start: bool,
    props: &[u8],
) -> TcpStream {
    let mut s = raw(addr);
    s.write_all(&connect5_packet(client_id, clean_start, props, None))
        .expect("write CONNECT");
    let (h, body) = read_packet(&mut s);
    assert_eq!(h, 0x20, "CONNACK for {client_id}");
    assert_eq!(body.get(1), Some(&0x00), "CONNACK reason for {client_id}");
    s
}

/// An MQTT 5.0 PUBLISH a client received: topic, raw properties (without the block
/// length), payload.
pub fn parse_publish5(header: u8, body: &[u8]) -> (String, Vec<u8>, Vec<u8>) {
    let mut c = packets::Cursor(body);
    let topic = c.string();
    if header & 0x06 != 0 {
        c.u16();
    }
    let len = c.varint() as usize;
    let (props, payload) = c.0.split_at(len);
    (topic, props.to_vec(), payload.to_vec())
}

/// The Topic Alias (property 0x23) in raw PUBLISH properties, if any.
pub fn topic_alias_of(props: &[u8]) -> Option<u16> {
    let props = packets::Cursor(&property_block(props)).props();
    // The properties midge writes in an outgoing PUBLISH, and no other.
    for p in &props {
        let id = match p {
            Prop::Byte(id, _) | Prop::Two(id, _) | Prop::Four(id, _) | Prop::Var(id, _) => *id,
            Prop::Str(id, _) | Prop::Bin(id, _) => *id,
            Prop::Pair(..) => packets::USER_PROPERTY,
        };
        assert!(
            [0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x23, 0x26].contains(&id),
            "unexpected property {id:#x} in an outgoing PUBLISH"
        );
    }
    match packets::find(&props, packets::TOPIC_ALIAS) {
        Some(Prop::Two(_, alias)) => Some(*alias),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// The broker's log, read by its structured fields
// ---------------------------------------------------------------------------------------

/// The lines of `log` (midge's text log) that carry the structured field `event="name"`
/// and, for every `(key, value)` of `with`, the field `key` with that value (see
/// [`log_field`]). A tracing call in src/ marks a line tests wait for with
/// `event = "name"`, which stays when the wording of the line, which is for people,
/// changes.
pub fn event_lines<'a>(log: &'a str, name: &str, with: &[(&str, &str)]) -> Vec<&'a str> {
    log.lines()
        .filter(|l| log_field(l, "event") == Some(name))
        .filter(|l| {
            with.iter()
                .all(|(key, value)| log_field(l, key) == Some(*value))
        })
        .collect()
}

/// Waits until `log()`, read afresh every 20 ms, has a line of the event `name` with every
/// field of `with` (see [`event_lines`]) (true), or `timeout` passes (false). For a midge
/// not started as a [`Broker`]; a `Broker` has [`Broker::wait_event_with`].
pub fn wait_event_in(
    log: impl Fn() -> String,
    name: &str,
    with: &[(&str, &str)],
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !event_lines(&log(), name, with).is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of the structured field `key` in one line of midge's log, which
/// tracing-subscriber writes after the message as ` key=value` (a field logged with `%`,
/// a number or a bool) or ` key="value"` (a string, or a field logged with `?`); the value
/// is given without those quotes, escapes left as written. The last ` key=` of the line
/// is taken, as the fields come after the message.
pub fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!(" {key}=");
    let rest = &line[line.rfind(&needle)? + needle.len()..];
    let Some(quoted) = rest.strip_prefix('"') else {
        return rest.split(' ').next();
    };
    let mut escaped = false;
    for (i, c) in quoted.char_indices() {
        match c {
            '"' if !escaped => return Some(&quoted[..i]),
            '\\' => escaped = !escaped,
            _ => escaped = false,
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// The end of a connection, from the broker's log
// ---------------------------------------------------------------------------------------

/// How many connections of `id` the broker has logged as ended. Keyed on the structured
/// field `event="connection_closed"` that every close line of src/connection.rs carries,
/// not on the lines' wording, which is for people.
pub fn close_count(b: &Broker, id: &str) -> usize {
    b.event_count("connection_closed", &[("client_id", id)])
}

/// Waits until the broker has logged `n` connection ends for `id`, so that its session is
/// offline before the test goes on.
pub fn wait_closes(b: &Broker, id: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while close_count(b, id) < n {
        assert!(
            Instant::now() < deadline,
            "midge did not log the end of connection #{n} of {id}; log:\n{}",
            b.log_tail(60)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The session is detached right after the log line.
    std::thread::sleep(Duration::from_millis(100));
}

impl Broker {
    /// The last `lines` lines of the log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// Connects rumqttc with `opts` and waits for the CONNACK: the client and its event loop,
/// or the first connection error or the refusal.
pub async fn rumqttc_connect(
    opts: rumqttc::MqttOptions,
) -> Result<(rumqttc::AsyncClient, rumqttc::EventLoop), String> {
    use rumqttc::{Event, Packet};
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 100);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                return if ack.code == rumqttc::ConnectReturnCode::Success {
                    Ok((client, eventloop))
                } else {
                    Err(format!("refused: {:?}", ack.code))
                };
            }
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("no CONNACK within the wait".to_owned()),
        }
    }
}
