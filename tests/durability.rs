//! Durability (issue 7): no acknowledged message is ever lost, across kill -9 and restarts.
//!
//! Black-box tests against the real `midge` binary and its `[persistence]` store:
//!
//! * a crash test: publishers with numbered QoS 1 / QoS 2 messages to an offline persistent
//!   subscriber, SIGKILL at random moments, restart on the same store, and every
//!   acknowledged message is delivered, QoS 2 at most once, in order per publisher
//!   ([`CrashRun`]; `scripts/crash-loop.sh` runs the same scenario hundreds of times
//!   through the ignored `crash_loop` test);
//! * a delivery crash test: SIGKILL while QoS 2 messages are being delivered to a
//!   persistent subscriber that keeps its QoS 2 receiver state as the specification says,
//!   and each message still arrives exactly once;
//! * restart tests: retained messages, subscriptions and queues, inflight packet ids,
//!   incoming QoS 2 state, session expiry and a clean SIGTERM shutdown;
//! * fault injection: a torn last record, corruption in the middle of a segment, a read-only
//!   store directory, a full disk (a small tmpfs: needs root / CAP_SYS_ADMIN, and fails,
//!   never skips, without it) and two brokers on one store.
//!
//! Every client is a raw socket speaking MQTT bytes ([`Conn`]), so that each test knows
//! exactly which acknowledgements arrived before the broker was killed. Everything runs on
//! 127.0.0.1, and every loop is bounded in count and in time.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{free_port, push_len, wait_child, Broker, TempDir};

/// How long anything that must happen may take.
const WAIT: Duration = Duration::from_secs(10);
/// How long to listen before concluding that nothing (more) arrives.
const QUIET: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------
// Raw MQTT packets (3.1.1 and the few 5.0 ones needed here)
// ---------------------------------------------------------------------------------------

const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PUBREC: u8 = 5;
const PUBREL: u8 = 6;
const PUBCOMP: u8 = 7;
const SUBACK: u8 = 9;
const PINGRESP: u8 = 13;

const PINGREQ_BYTES: [u8; 2] = [0xC0, 0x00];
const DISCONNECT_BYTES: [u8; 2] = [0xE0, 0x00];

/// MQTT 5.0 Session Expiry Interval property.
const SESSION_EXPIRY: u8 = 0x11;

fn frame(byte1: u8, body: Vec<u8>) -> Vec<u8> {
    let mut p = vec![byte1];
    push_len(&mut p, body.len());
    p.extend(body);
    p
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// An MQTT 3.1.1 CONNECT, keep-alive 60, no will.
fn connect311(id: &str, clean: bool) -> Vec<u8> {
    let mut body = vec![
        0x00,
        0x04,
        b'M',
        b'Q',
        b'T',
        b'T',
        0x04,
        u8::from(clean) << 1,
    ];
    body.extend_from_slice(&60u16.to_be_bytes());
    put_str(&mut body, id.as_bytes());
    frame(0x10, body)
}

/// An MQTT 5.0 CONNECT, keep-alive 60, no will, with an optional Session Expiry Interval.
fn connect5(id: &str, clean_start: bool, session_expiry: Option<u32>) -> Vec<u8> {
    let mut body = vec![
        0x00,
        0x04,
        b'M',
        b'Q',
        b'T',
        b'T',
        0x05,
        u8::from(clean_start) << 1,
    ];
    body.extend_from_slice(&60u16.to_be_bytes());
    let mut props = Vec::new();
    if let Some(secs) = session_expiry {
        props.push(SESSION_EXPIRY);
        props.extend_from_slice(&secs.to_be_bytes());
    }
    push_len(&mut body, props.len());
    body.extend(props);
    put_str(&mut body, id.as_bytes());
    frame(0x10, body)
}

/// A 3.1.1 PUBLISH (the packet id is written for QoS 1 and 2 only).
fn publish311(topic: &str, payload: &[u8], qos: u8, pkid: u16, retain: bool, dup: bool) -> Vec<u8> {
    let byte1 = 0x30 | (u8::from(dup) << 3) | (qos << 1) | u8::from(retain);
    let mut body = Vec::new();
    put_str(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    frame(byte1, body)
}

/// A 5.0 PUBLISH without properties.
fn publish5(topic: &str, payload: &[u8], qos: u8, pkid: u16) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.push(0); // no properties
    body.extend_from_slice(payload);
    frame(0x30 | (qos << 1), body)
}

/// SUBSCRIBE with (filter, requested QoS) pairs; 5.0 adds an empty property block.
fn subscribe(pkid: u16, filters: &[(&str, u8)], v5: bool) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    if v5 {
        body.push(0);
    }
    for (f, q) in filters {
        put_str(&mut body, f.as_bytes());
        body.push(*q);
    }
    frame(0x82, body)
}

fn ack_bytes(kind: u8, pkid: u16) -> Vec<u8> {
    let flags = if kind == PUBREL { 0x02 } else { 0x00 };
    frame((kind << 4) | flags, pkid.to_be_bytes().to_vec())
}

/// One packet received from the broker.
#[derive(Debug, Clone, PartialEq)]
struct Pkt {
    byte1: u8,
    body: Vec<u8>,
}

/// A decoded PUBLISH.
#[derive(Debug, Clone, PartialEq)]
struct RawPub {
    dup: bool,
    qos: u8,
    retain: bool,
    topic: String,
    pkid: u16,
    payload: Vec<u8>,
}

impl RawPub {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

impl Pkt {
    fn kind(&self) -> u8 {
        self.byte1 >> 4
    }

    /// Packet id of an acknowledgement.
    fn pkid(&self) -> u16 {
        assert!(self.body.len() >= 2, "no packet id in {self:?}");
        u16::from_be_bytes([self.body[0], self.body[1]])
    }

    /// Reason code of a 5.0 acknowledgement (0 when omitted).
    fn reason5(&self) -> u8 {
        self.body.get(2).copied().unwrap_or(0)
    }

    /// A PUBLISH; `v5` skips its property block.
    fn publish(&self, v5: bool) -> RawPub {
        assert_eq!(self.kind(), PUBLISH, "expected a PUBLISH, got {self:?}");
        let qos = (self.byte1 >> 1) & 0x03;
        let b = &self.body;
        let tlen = usize::from(u16::from_be_bytes([b[0], b[1]]));
        let topic = String::from_utf8(b[2..2 + tlen].to_vec()).expect("UTF-8 topic");
        let mut at = 2 + tlen;
        let mut pkid = 0;
        if qos > 0 {
            pkid = u16::from_be_bytes([b[at], b[at + 1]]);
            at += 2;
        }
        if v5 {
            let (len, used) = varint(&b[at..]);
            at += used + len;
        }
        RawPub {
            dup: self.byte1 & 0x08 != 0,
            qos,
            retain: self.byte1 & 0x01 != 0,
            topic,
            pkid,
            payload: b[at..].to_vec(),
        }
    }

    /// Asserts this is a `kind` acknowledgement for `pkid` (3.1.1 form, or 5.0 success).
    fn assert_ack(&self, kind: u8, pkid: u16) {
        assert_eq!(
            (self.kind(), self.pkid(), self.reason5()),
            (kind, pkid, 0),
            "expected packet type {kind} for packet id {pkid} (success), got {self:?}"
        );
    }
}

/// (value, bytes used) of a variable byte integer.
fn varint(b: &[u8]) -> (usize, usize) {
    let mut v = 0usize;
    for (i, byte) in b.iter().take(4).enumerate() {
        v |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return (v, i + 1);
        }
    }
    panic!("malformed variable byte integer {b:?}");
}

/// Splits the complete packets off the front of `buf`.
fn take_packet(buf: &mut Vec<u8>) -> Option<Pkt> {
    let mut len = 0usize;
    let mut mult = 1usize;
    let mut i = 1;
    loop {
        let &b = buf.get(i)?;
        len += usize::from(b & 0x7F) * mult;
        mult *= 128;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        assert!(i < 5, "remaining length longer than 4 bytes: {buf:?}");
    }
    if buf.len() < i + len {
        return None;
    }
    let pkt = Pkt {
        byte1: buf[0],
        body: buf[i..i + len].to_vec(),
    };
    buf.drain(..i + len);
    Some(pkt)
}

enum Next {
    Packet(Pkt),
    Closed,
    Quiet,
}

/// A raw MQTT connection (blocking socket, bounded reads).
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    v5: bool,
    id: String,
}

impl Conn {
    fn open(addr: SocketAddr, id: &str, v5: bool) -> Conn {
        let s = TcpStream::connect_timeout(&addr, WAIT).expect("TCP connect to midge");
        s.set_nodelay(true).expect("nodelay");
        Conn {
            s,
            buf: Vec::new(),
            v5,
            id: id.to_owned(),
        }
    }

    /// MQTT 3.1.1 CONNECT; asserts CONNACK 0 and returns session present.
    fn connect(b: &Broker, id: &str, clean: bool) -> (Conn, bool) {
        let mut c = Conn::open(b.addr(), id, false);
        c.send(&connect311(id, clean));
        let ack = c.recv("CONNACK");
        assert_eq!(
            (ack.byte1, ack.body.len()),
            (0x20, 2),
            "CONNACK for {id}: {ack:?}"
        );
        assert_eq!(ack.body[1], 0, "CONNACK return code for {id}: {ack:?}");
        (c, ack.body[0] == 1)
    }

    /// MQTT 5.0 CONNECT; asserts CONNACK reason 0 and returns session present.
    fn connect5(b: &Broker, id: &str, clean_start: bool, expiry: Option<u32>) -> (Conn, bool) {
        let mut c = Conn::open(b.addr(), id, true);
        c.send(&connect5(id, clean_start, expiry));
        let ack = c.recv("CONNACK");
        assert_eq!(ack.kind(), CONNACK, "CONNACK for {id}: {ack:?}");
        assert_eq!(ack.body[1], 0, "CONNACK reason code for {id}: {ack:?}");
        (c, ack.body[0] & 1 == 1)
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write to midge");
    }

    fn next_within(&mut self, d: Duration) -> Next {
        let deadline = Instant::now() + d;
        loop {
            if let Some(p) = take_packet(&mut self.buf) {
                return Next::Packet(p);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Next::Quiet;
            }
            self.s
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("set read timeout");
            let mut tmp = [0u8; 16384];
            match self.s.read(&mut tmp) {
                Ok(0) => return Next::Closed,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Next::Quiet
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Closed,
            }
        }
    }

    /// The next packet; panics if none comes within [`WAIT`] or the broker closes.
    fn recv(&mut self, what: &str) -> Pkt {
        match self.next_within(WAIT) {
            Next::Packet(p) => p,
            Next::Closed => panic!("{}: midge closed the connection; expected {what}", self.id),
            Next::Quiet => panic!("{}: nothing within {WAIT:?}; expected {what}", self.id),
        }
    }

    fn recv_publish(&mut self) -> RawPub {
        let v5 = self.v5;
        self.recv("PUBLISH").publish(v5)
    }

    /// Asserts nothing arrives (and the connection stays open) for [`QUIET`].
    fn expect_quiet(&mut self, what: &str) {
        match self.next_within(QUIET) {
            Next::Quiet => {}
            Next::Packet(p) => panic!("{}: {what}: expected nothing, got {p:?}", self.id),
            Next::Closed => panic!("{}: {what}: expected nothing, midge closed", self.id),
        }
    }

    /// SUBSCRIBE and its SUBACK; returns the granted codes.
    fn subscribe(&mut self, pkid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
        self.send(&subscribe(pkid, filters, self.v5));
        let p = self.recv("SUBACK");
        assert_eq!((p.kind(), p.pkid()), (SUBACK, pkid), "SUBACK: {p:?}");
        let codes = if self.v5 {
            let (len, used) = varint(&p.body[2..]);
            p.body[2 + used + len..].to_vec()
        } else {
            p.body[2..].to_vec()
        };
        assert_eq!(codes.len(), filters.len(), "SUBACK codes {codes:?}");
        codes
    }

    /// Publishes and completes the flow: PUBACK for QoS 1, PUBREC / PUBREL / PUBCOMP for
    /// QoS 2 (each checked for success), nothing for QoS 0.
    fn publish(&mut self, topic: &str, payload: &str, qos: u8, pkid: u16, retain: bool) {
        let bytes = if self.v5 {
            assert!(!retain, "5.0 retained publishes are not used here");
            publish5(topic, payload.as_bytes(), qos, pkid)
        } else {
            publish311(topic, payload.as_bytes(), qos, pkid, retain, false)
        };
        self.send(&bytes);
        match qos {
            0 => {}
            1 => self.recv("PUBACK").assert_ack(PUBACK, pkid),
            _ => {
                self.recv("PUBREC").assert_ack(PUBREC, pkid);
                self.send(&ack_bytes(PUBREL, pkid));
                self.recv("PUBCOMP").assert_ack(PUBCOMP, pkid);
            }
        }
    }

    fn ping(&mut self) {
        self.send(&PINGREQ_BYTES);
        let p = self.recv("PINGRESP");
        assert_eq!(
            p.kind(),
            PINGRESP,
            "{}: expected PINGRESP, got {p:?}",
            self.id
        );
    }

    /// Receives PUBLISHes, acknowledging each at once (PUBACK; PUBREC, then PUBCOMP for the
    /// PUBREL), until `last` returns true for one and then nothing comes for [`QUIET`].
    /// Returns them in arrival order. Bounded by `limit` in time and by a packet count.
    fn drain_until(&mut self, last: impl Fn(&RawPub) -> bool, limit: Duration) -> Vec<RawPub> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        let mut done = false;
        for _ in 0..2_000_000 {
            let wait = if done {
                QUIET
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            match self.next_within(wait) {
                Next::Packet(p) if p.kind() == PUBLISH => {
                    let publish = p.publish(self.v5);
                    match publish.qos {
                        1 => self.send(&ack_bytes(PUBACK, publish.pkid)),
                        2 => self.send(&ack_bytes(PUBREC, publish.pkid)),
                        _ => {}
                    }
                    done |= last(&publish);
                    got.push(publish);
                }
                Next::Packet(p) if p.kind() == PUBREL => {
                    self.send(&ack_bytes(PUBCOMP, p.pkid()));
                }
                Next::Packet(p) => panic!("{}: unexpected packet {p:?}", self.id),
                Next::Closed => panic!(
                    "{}: midge closed the connection after {} PUBLISHes",
                    self.id,
                    got.len()
                ),
                Next::Quiet if done => return got,
                Next::Quiet => panic!(
                    "{}: the awaited last message did not arrive within {limit:?}; got {} \
                     PUBLISHes, the last ones: {:?}",
                    self.id,
                    got.len(),
                    got.iter()
                        .rev()
                        .take(5)
                        .map(RawPub::text)
                        .collect::<Vec<_>>()
                ),
            }
        }
        panic!("{}: more than 2,000,000 packets while draining", self.id);
    }

    /// DISCONNECT, then waits until midge has logged the end of this connection, so that
    /// the session is offline before the test goes on.
    fn go_offline(mut self, b: &Broker) {
        let before = close_count(b, &self.id);
        self.send(&DISCONNECT_BYTES);
        drop(self.s);
        wait_closes(b, &self.id, before + 1);
    }
}

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

const CLOSE_PHRASES: &[&str] = &[
    "client disconnected",
    "client closed its connection",
    "socket error on client",
    "protocol error",
    "client has exceeded its keep-alive",
    "client id taken over",
];

fn close_count(b: &Broker, id: &str) -> usize {
    let needle = format!("client_id={id} peer=");
    b.log()
        .lines()
        .filter(|l| l.contains(&needle) && CLOSE_PHRASES.iter().any(|p| l.contains(p)))
        .count()
}

fn wait_closes(b: &Broker, id: &str, n: usize) {
    let deadline = Instant::now() + WAIT;
    while close_count(b, id) < n {
        assert!(
            Instant::now() < deadline,
            "midge did not log the end of connection #{n} of {id}; log:\n{}",
            log_tail(b, 60)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The session is detached right after the log line.
    std::thread::sleep(Duration::from_millis(100));
}

fn log_tail(b: &Broker, lines: usize) -> String {
    let log = b.log();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The counts of midge's start line
/// `store loaded from <dir>: <S> sessions, <M> queued messages, <R> retained messages in <T> ms`.
#[derive(Debug, Clone, PartialEq)]
struct Loaded {
    line: String,
    sessions: u64,
    queued: u64,
    retained: u64,
}

/// Parses the last "store loaded from" line of `log`.
fn parse_loaded(log: &str) -> Option<Loaded> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("store loaded from "))?;
    let number_before = |word: &str| -> Option<u64> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let i = words.iter().position(|w| w.trim_end_matches(',') == word)?;
        words.get(i.checked_sub(1)?)?.parse().ok()
    };
    Some(Loaded {
        line: line.to_owned(),
        sessions: number_before("sessions")?,
        queued: number_before("queued")?,
        retained: number_before("retained")?,
    })
}

/// The "store loaded" line of the run that began at log offset `from`.
fn loaded_since(b: &Broker, from: usize) -> Loaded {
    let log = b.log();
    let since = log.get(from..).unwrap_or_default();
    parse_loaded(since).unwrap_or_else(|| {
        panic!(
            "no \"store loaded from <dir>: <S> sessions, <M> queued messages, <R> retained \
             messages in <T> ms\" line since the restart; log since:\n{since}"
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
        log_tail(b, 40)
    );
    let from = b.log().len();
    b.spawn();
    loaded_since(b, from)
}

/// midge's warnings about a torn record (cut off at start).
fn torn_warnings(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("WARN") && l.contains("torn"))
        .collect()
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

// ---------------------------------------------------------------------------------------
// Mounts for fault injection (root / CAP_SYS_ADMIN)
// ---------------------------------------------------------------------------------------

/// A tmpfs mounted on a directory for the life of the value; unmounted on drop, also when
/// the test panics. Declare it after the directory it sits in and before the broker that
/// uses it, so that the broker is killed first and the directory removed last.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// `options` e.g. "size=2m" or "ro,size=1m". A failed mount fails the test: it needs
    /// root (or CAP_SYS_ADMIN) and never skips.
    fn mount(path: &Path, options: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("create mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(path)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `mount` ({e}): this test mounts a small tmpfs to inject store \
                     faults; it needs util-linux's mount and root (or CAP_SYS_ADMIN)"
                )
            });
        assert!(
            out.status.success(),
            "`mount -t tmpfs -o {options} tmpfs {}` failed ({}): {}\nThis test needs root (or \
             CAP_SYS_ADMIN) to mount a small tmpfs for the store; run it as root, or in a \
             container started with --cap-add SYS_ADMIN. It is not skipped.",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a process that has not exited yet): detach it lazily.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Makes `dir` unwritable for this process: `chmod 555` when that is enough (not root),
/// else a read-only tmpfs mounted over it. Checked by trying to create a file.
enum ReadOnly {
    Chmod(PathBuf),
    Mount { _tmpfs: Tmpfs },
}

impl ReadOnly {
    fn make(dir: &Path) -> ReadOnly {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).expect("create dir");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).expect("chmod");
        let probe = dir.join("probe");
        let ro = if std::fs::write(&probe, b"x").is_err() {
            ReadOnly::Chmod(dir.to_path_buf())
        } else {
            // Root ignores permission bits: use a read-only filesystem instead.
            let _ = std::fs::remove_file(&probe);
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            ReadOnly::Mount {
                _tmpfs: Tmpfs::mount(dir, "ro,size=1m"),
            }
        };
        assert!(
            std::fs::write(&probe, b"x").is_err(),
            "{} is still writable after making it read-only",
            dir.display()
        );
        ro
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if let ReadOnly::Chmod(dir) = self {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        }
    }
}

// ---------------------------------------------------------------------------------------
// The crash scenario
// ---------------------------------------------------------------------------------------

/// QoS of each crash publisher (publisher i publishes at `CRASH_QOS[i]`).
const CRASH_QOS: [u8; 3] = [1, 2, 1];
/// Unacknowledged PUBLISHes each crash publisher keeps outstanding.
const CRASH_WINDOW: usize = 10;
/// Bound on the messages one crash publisher sends in one round.
const CRASH_MAX_PER_PUBLISHER: u64 = 50_000;
/// Kill delay range after the publishers are connected, milliseconds.
const CRASH_DELAY_MS: (u64, u64) = (20, 300);
const CRASH_SUBSCRIBER: &str = "crash-sub";

/// xorshift64*: small, seedable, good enough for kill delays.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish in lo..=hi.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// `MIDGE_CRASH_SEED` if set (to replay the kill delays of a failed run), else the clock.
fn crash_seed() -> u64 {
    if let Ok(s) = std::env::var("MIDGE_CRASH_SEED") {
        return s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("MIDGE_CRASH_SEED={s:?} is not a number"));
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// What one crash publisher saw before the broker died.
#[derive(Debug, Default)]
struct PubOutcome {
    /// Sequence numbers whose PUBACK (QoS 1) or PUBCOMP (QoS 2) arrived.
    acked: Vec<u64>,
    /// Messages sent: 0..sent.
    sent: u64,
    /// QoS 2 messages whose PUBREL was sent but whose PUBCOMP never came.
    released_unfinished: usize,
    /// Protocol surprises (acks for packet ids not in flight, unexpected packets).
    anomalies: Vec<String>,
}

/// Publishes "tag:seq" to `crash/<tag>` at `qos`, `CRASH_WINDOW` at a time, completing
/// each flow, until the connection dies (the broker is killed) or the bounds are reached.
fn crash_publisher(addr: SocketAddr, tag: String, qos: u8, ready: mpsc::Sender<()>) -> PubOutcome {
    let mut out = PubOutcome::default();
    let Ok(mut s) = TcpStream::connect_timeout(&addr, WAIT) else {
        return out;
    };
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(WAIT));
    if s.write_all(&connect311(&tag, true)).is_err() {
        return out;
    }
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16384];
    // CONNACK
    loop {
        if let Some(p) = take_packet(&mut buf) {
            if p.byte1 != 0x20 || p.body != [0, 0] {
                out.anomalies.push(format!("{tag}: CONNACK {p:?}"));
                return out;
            }
            break;
        }
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return out,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
    let _ = ready.send(());
    let _ = s.set_read_timeout(Some(Duration::from_millis(20)));
    let topic = format!("crash/{tag}");
    let pkid_of = |seq: u64| (seq % 60_000) as u16 + 1;
    // packet id -> (seq, PUBREL sent)
    let mut inflight: HashMap<u16, (u64, bool)> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let mut batch = Vec::new();
        while inflight.len() < CRASH_WINDOW && out.sent < CRASH_MAX_PER_PUBLISHER {
            let seq = out.sent;
            let payload = format!("{tag}:{seq}");
            batch.extend(publish311(
                &topic,
                payload.as_bytes(),
                qos,
                pkid_of(seq),
                false,
                false,
            ));
            inflight.insert(pkid_of(seq), (seq, false));
            out.sent += 1;
        }
        if !batch.is_empty() && s.write_all(&batch).is_err() {
            break;
        }
        match s.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if inflight.is_empty() && out.sent >= CRASH_MAX_PER_PUBLISHER {
                    break;
                }
                continue;
            }
            Err(_) => break,
        }
        let mut reply = Vec::new();
        while let Some(p) = take_packet(&mut buf) {
            let entry = if p.body.len() >= 2 {
                inflight.get(&p.pkid()).copied()
            } else {
                None
            };
            match (p.byte1, entry) {
                (0x40, Some((seq, _))) if qos == 1 => {
                    out.acked.push(seq);
                    inflight.remove(&p.pkid());
                }
                (0x50, Some((seq, false))) if qos == 2 => {
                    inflight.insert(p.pkid(), (seq, true));
                    reply.extend(ack_bytes(PUBREL, p.pkid()));
                }
                (0x70, Some((seq, true))) if qos == 2 => {
                    out.acked.push(seq);
                    inflight.remove(&p.pkid());
                }
                _ => out.anomalies.push(format!("{tag}: unexpected {p:?}")),
            }
        }
        if !reply.is_empty() && s.write_all(&reply).is_err() {
            break;
        }
    }
    out.released_unfinished = inflight.values().filter(|(_, rel)| *rel).count();
    out
}

/// Everything known about one publisher of one kill point.
#[derive(Debug, Default)]
struct TagRecord {
    qos: u8,
    sent: u64,
    acked: Vec<u64>,
    /// (seq, delivered QoS) in arrival order, over every drain.
    delivered: Vec<(u64, u8)>,
}

/// Totals over kill points.
#[derive(Debug, Default)]
struct Summary {
    seed: u64,
    kill_points: usize,
    acknowledged: usize,
    delivered: usize,
    lost: Vec<String>,
    qos1_redeliveries: usize,
    qos2_duplicates: Vec<String>,
    order: Vec<String>,
    other: Vec<String>,
}

impl Summary {
    fn ok(&self) -> bool {
        self.lost.is_empty()
            && self.qos2_duplicates.is_empty()
            && self.order.is_empty()
            && self.other.is_empty()
    }

    fn line(&self) -> String {
        format!(
            "kill points {}, acknowledged {}, delivered {}, lost {}, qos1 redeliveries {}, \
             qos2 duplicates {}, order violations {}, other problems {}",
            self.kill_points,
            self.acknowledged,
            self.delivered,
            self.lost.len(),
            self.qos1_redeliveries,
            self.qos2_duplicates.len(),
            self.order.len(),
            self.other.len()
        )
    }

    fn details(&self) -> String {
        let mut s = String::new();
        for (what, list) in [
            ("lost (acknowledged, never delivered)", &self.lost),
            ("QoS 2 duplicates", &self.qos2_duplicates),
            ("order violations", &self.order),
            ("other problems", &self.other),
        ] {
            if !list.is_empty() {
                s.push_str(&format!("{what} ({}):\n", list.len()));
                for item in list.iter().take(20) {
                    s.push_str(&format!("  {item}\n"));
                }
            }
        }
        s
    }
}

/// One broker and store through many kill points: per kill point, [`CRASH_QOS`]
/// publishers publish to the offline persistent subscriber [`CRASH_SUBSCRIBER`] (QoS 2 on
/// `crash/#`), the broker is SIGKILLed after a random delay and restarted on the same
/// store, and the subscriber reconnects and takes everything, acknowledging it.
struct CrashRun {
    broker: Broker,
    rng: Rng,
    kill_points: usize,
    /// tag ("k<kill point>p<publisher>") -> record
    tags: BTreeMap<String, TagRecord>,
    other: Vec<String>,
}

impl CrashRun {
    fn new(config: &str, seed: u64) -> CrashRun {
        let broker = Broker::start(config);
        let (mut sub, present) = Conn::connect(&broker, CRASH_SUBSCRIBER, false);
        assert!(
            !present,
            "a fresh store has no session for {CRASH_SUBSCRIBER}"
        );
        assert_eq!(sub.subscribe(1, &[("crash/#", 2)]), [2]);
        sub.go_offline(&broker);
        CrashRun {
            broker,
            rng: Rng::new(seed),
            kill_points: 0,
            tags: BTreeMap::new(),
            other: Vec::new(),
        }
    }

    /// One kill point; returns a one-line report.
    fn kill_point(&mut self) -> String {
        let k = self.kill_points;
        self.kill_points += 1;
        let delay = self.rng.range(CRASH_DELAY_MS.0, CRASH_DELAY_MS.1);
        let addr = self.broker.addr();

        let (ready_tx, ready_rx) = mpsc::channel();
        let handles: Vec<_> = CRASH_QOS
            .iter()
            .enumerate()
            .map(|(i, &qos)| {
                let tag = format!("k{k}p{i}");
                let ready = ready_tx.clone();
                let t = tag.clone();
                (
                    tag,
                    qos,
                    std::thread::spawn(move || crash_publisher(addr, t, qos, ready)),
                )
            })
            .collect();
        drop(ready_tx);
        // The delay counts from when every publisher is connected (bounded wait).
        let connected_by = Instant::now() + WAIT;
        let mut connected = 0;
        while connected < CRASH_QOS.len() {
            let left = connected_by.saturating_duration_since(Instant::now());
            match ready_rx.recv_timeout(left) {
                Ok(()) => connected += 1,
                Err(_) => break,
            }
        }
        if connected < CRASH_QOS.len() {
            self.other.push(format!(
                "kill point {k}: only {connected} of {} publishers connected within {WAIT:?}",
                CRASH_QOS.len()
            ));
        }
        std::thread::sleep(Duration::from_millis(delay));
        self.broker.kill();

        let mut acked_now = 0;
        let mut unfinished = 0;
        for (tag, qos, h) in handles {
            let o = h.join().expect("publisher thread panicked");
            acked_now += o.acked.len();
            unfinished += o.released_unfinished;
            self.other.extend(o.anomalies);
            self.tags.insert(
                tag,
                TagRecord {
                    qos,
                    sent: o.sent,
                    acked: o.acked,
                    delivered: Vec::new(),
                },
            );
        }

        // Restart on the same store.
        let from = self.broker.log().len();
        self.broker.spawn();
        let loaded = loaded_since(&self.broker, from);
        if !loaded
            .line
            .contains(&store_dir(&self.broker).display().to_string())
        {
            self.other.push(format!(
                "kill point {k}: the load line does not name the store {}: {}",
                store_dir(&self.broker).display(),
                loaded.line
            ));
        }
        // Every acknowledged message is queued for the offline subscriber.
        if loaded.queued < acked_now as u64 {
            self.other.push(format!(
                "kill point {k}: {acked_now} messages were acknowledged but the store loaded \
                 only {} queued messages: {}",
                loaded.queued, loaded.line
            ));
        }

        // A sentinel after everything: the subscriber's queue is FIFO.
        let (mut p, _) = Conn::connect(&self.broker, "crash-sentinel", true);
        let end = format!("end:{k}");
        p.publish("crash/end", &end, 1, 1, false);
        drop(p);

        let (mut sub, present) = Conn::connect(&self.broker, CRASH_SUBSCRIBER, false);
        assert!(
            present,
            "kill point {k}: {CRASH_SUBSCRIBER}'s persistent session is gone after the restart \
             (CONNACK session present 0); log:\n{}",
            log_tail(&self.broker, 60)
        );
        let got = sub.drain_until(|m| m.text() == end, Duration::from_secs(60));
        sub.go_offline(&self.broker);

        let mut delivered_now = 0;
        for m in &got {
            let text = m.text();
            if text.starts_with("end:") {
                continue;
            }
            let parsed = text
                .split_once(':')
                .and_then(|(tag, seq)| Some((tag.to_owned(), seq.parse::<u64>().ok()?)));
            let Some((tag, seq)) = parsed else {
                self.other
                    .push(format!("kill point {k}: unknown payload {text:?}"));
                continue;
            };
            let Some(rec) = self.tags.get_mut(&tag) else {
                self.other
                    .push(format!("kill point {k}: unknown publisher in {text:?}"));
                continue;
            };
            if m.topic != format!("crash/{tag}") {
                self.other
                    .push(format!("{text:?} arrived on topic {:?}", m.topic));
            }
            rec.delivered.push((seq, m.qos));
            delivered_now += 1;
        }
        let lost_now: usize = (0..CRASH_QOS.len())
            .map(|i| {
                let rec = &self.tags[&format!("k{k}p{i}")];
                let seen: HashSet<u64> = rec.delivered.iter().map(|(s, _)| *s).collect();
                rec.acked.iter().filter(|s| !seen.contains(s)).count()
            })
            .sum();
        format!(
            "kill point {k}: killed {delay} ms after the publishers connected; acknowledged \
             {acked_now} (+{unfinished} QoS 2 with PUBREL sent, no PUBCOMP); load: {} \
             sessions, {} queued; delivered {delivered_now}; lost {lost_now}",
            loaded.sessions, loaded.queued
        )
    }

    /// Checks every kill point so far.
    fn summary(&self) -> Summary {
        let mut s = Summary {
            kill_points: self.kill_points,
            other: self.other.clone(),
            ..Summary::default()
        };
        for (tag, rec) in &self.tags {
            s.acknowledged += rec.acked.len();
            s.delivered += rec.delivered.len();
            let mut count: HashMap<u64, usize> = HashMap::new();
            for (seq, qos) in &rec.delivered {
                *count.entry(*seq).or_default() += 1;
                if *seq >= rec.sent {
                    s.other
                        .push(format!("{tag}:{seq} delivered but never published"));
                }
                if *qos != rec.qos {
                    s.other.push(format!(
                        "{tag}:{seq} published at QoS {} (subscription QoS 2) delivered at \
                         QoS {qos}",
                        rec.qos
                    ));
                }
            }
            for seq in &rec.acked {
                if !count.contains_key(seq) {
                    s.lost.push(format!("{tag}:{seq} (QoS {})", rec.qos));
                }
            }
            for (seq, n) in &count {
                if *n > 1 {
                    if rec.qos == 2 {
                        s.qos2_duplicates
                            .push(format!("{tag}:{seq} delivered {n} times"));
                    } else {
                        s.qos1_redeliveries += n - 1;
                    }
                }
            }
            // Order: the first occurrences of the sequence numbers must increase.
            let mut seen = HashSet::new();
            let mut last: Option<u64> = None;
            for (seq, _) in &rec.delivered {
                if seen.insert(*seq) {
                    if let Some(prev) = last {
                        if *seq < prev {
                            s.order
                                .push(format!("{tag}: {seq} first delivered after {prev}"));
                        }
                    }
                    last = Some(*seq);
                }
            }
        }
        s
    }
}

/// Runs `kill_points` kill points of the crash scenario on fresh brokers of `config`, a new
/// broker and store every `per_store` kill points; prints one line per kill point and the
/// summary, and returns the summary.
fn crash_scenario(config: &str, kill_points: usize, per_store: usize, label: &str) -> Summary {
    let seed = crash_seed();
    println!("{label}: seed {seed} (replay the kill delays with MIDGE_CRASH_SEED={seed})");
    let mut total = Summary::default();
    let mut rng = Rng::new(seed);
    let mut done = 0;
    while done < kill_points {
        let mut run = CrashRun::new(config, rng.next_u64());
        let n = per_store.min(kill_points - done);
        for _ in 0..n {
            let line = run.kill_point();
            println!("{label}: #{done} {line}");
            done += 1;
        }
        let s = run.summary();
        total.kill_points += s.kill_points;
        total.acknowledged += s.acknowledged;
        total.delivered += s.delivered;
        total.qos1_redeliveries += s.qos1_redeliveries;
        total.lost.extend(s.lost);
        total.qos2_duplicates.extend(s.qos2_duplicates);
        total.order.extend(s.order);
        total.other.extend(s.other);
        if !total.ok() {
            println!(
                "{label}: failing store's log tail:\n{}",
                log_tail(&run.broker, 40)
            );
            break;
        }
    }
    println!("{label}: summary: {}", total.line());
    total.seed = seed;
    total
}

/// Fails the test with the details of a failed crash scenario.
fn assert_crash_ok(label: &str, s: &Summary) {
    assert!(
        s.ok(),
        "{label} (seed {}): {}\n{}",
        s.seed,
        s.line(),
        s.details()
    );
}

/// 20 kill points on one store: every acknowledged message survives, QoS 2 at most once,
/// each publisher's messages in order.
#[test]
fn crash_at_random_points_loses_no_acknowledged_message() {
    let s = crash_scenario(&durable_config("", "always"), 20, 20, "crash");
    assert_crash_ok("crash", &s);
    assert!(
        s.acknowledged > 0,
        "no message was acknowledged before any of the 20 kills: the test checked nothing"
    );
}

/// The crash scenario many times, for scripts/crash-loop.sh: `MIDGE_CRASH_ITERATIONS`
/// kill points (default 500), a fresh broker and store every 20.
#[test]
#[ignore = "long: run by scripts/crash-loop.sh"]
fn crash_loop() {
    let iterations = std::env::var("MIDGE_CRASH_ITERATIONS")
        .ok()
        .map(|v| {
            v.trim()
                .parse::<usize>()
                .unwrap_or_else(|_| panic!("MIDGE_CRASH_ITERATIONS={v:?} is not a number"))
        })
        .unwrap_or(500);
    assert!(iterations > 0, "MIDGE_CRASH_ITERATIONS must be at least 1");
    let s = crash_scenario(&durable_config("", "always"), iterations, 20, "crash-loop");
    println!(
        "CRASH LOOP SUMMARY: iterations {} acknowledged {} lost {} qos1_redeliveries {} \
         qos2_duplicates {} order_violations {}",
        s.kill_points,
        s.acknowledged,
        s.lost.len(),
        s.qos1_redeliveries,
        s.qos2_duplicates.len(),
        s.order.len()
    );
    assert_crash_ok("crash-loop", &s);
}

/// `sync = "never"` and `"interval"` only leave out fsync: an acknowledged message was
/// written to the OS, which keeps it when the process is killed.
#[test]
fn sync_never_and_interval_survive_kill_9() {
    let never = durable_config("", "never");
    let s1 = crash_scenario(&never, 4, 4, "sync never");
    assert_crash_ok("sync never", &s1);
    let interval = format!(
        "{}sync_interval_ms = 1000\n",
        durable_config("", "interval")
    );
    let s2 = crash_scenario(&interval, 4, 4, "sync interval");
    assert_crash_ok("sync interval", &s2);
    assert!(
        s1.acknowledged > 0 && s2.acknowledged > 0,
        "nothing was acknowledged before the kills (never: {}, interval: {})",
        s1.acknowledged,
        s2.acknowledged
    );
}

// ---------------------------------------------------------------------------------------
// Restart tests
// ---------------------------------------------------------------------------------------

/// Subscribes a fresh clean session to `filter` and returns the retained messages it gets
/// (retain flag, QoS, topic, payload), listening until [`QUIET`].
fn retained_for(b: &Broker, id: &str, filter: &str) -> Vec<(bool, u8, String, String)> {
    let (mut c, _) = Conn::connect(b, id, true);
    assert_eq!(c.subscribe(1, &[(filter, 2)]), [2]);
    let mut got = Vec::new();
    for _ in 0..100 {
        match c.next_within(QUIET) {
            Next::Packet(p) if p.kind() == PUBLISH => {
                let m = p.publish(false);
                match m.qos {
                    1 => c.send(&ack_bytes(PUBACK, m.pkid)),
                    2 => c.send(&ack_bytes(PUBREC, m.pkid)),
                    _ => {}
                }
                got.push((m.retain, m.qos, m.topic.clone(), m.text()));
            }
            Next::Packet(p) if p.kind() == PUBREL => c.send(&ack_bytes(PUBCOMP, p.pkid())),
            Next::Packet(p) => panic!("{id}: unexpected {p:?}"),
            Next::Closed => panic!("{id}: midge closed the connection"),
            Next::Quiet => break,
        }
    }
    c.go_offline(b);
    got.sort();
    got
}

/// Retained messages set (and replaced) with an acknowledged PUBLISH survive SIGKILL, and
/// one cleared with an acknowledged empty retained PUBLISH stays cleared, over two
/// restarts.
#[test]
fn retained_messages_survive_a_restart() {
    let mut b = durable_broker("");
    let (mut p, _) = Conn::connect(&b, "ret-pub", true);
    p.publish("keep/a", "a-old", 1, 1, true);
    p.publish("keep/a", "a-new", 1, 2, true); // replaces a-old
    p.publish("keep/b", "b", 2, 3, true);
    p.publish("gone/c", "c", 1, 4, true);
    p.publish("gone/c", "", 1, 5, true); // clears gone/c
    p.publish("keep/plain", "not retained", 1, 6, false);
    drop(p);

    let expected = vec![
        (true, 1, "keep/a".to_owned(), "a-new".to_owned()),
        (true, 2, "keep/b".to_owned(), "b".to_owned()),
    ];
    for restart in 1..=2 {
        let loaded = kill_and_restart(&mut b);
        assert_eq!(
            loaded.retained, 2,
            "restart {restart}: two retained messages are live: {}",
            loaded.line
        );
        assert_eq!(
            retained_for(&b, &format!("ret-check-{restart}"), "#"),
            expected,
            "restart {restart}: retained messages after SIGKILL"
        );
        assert_eq!(
            retained_for(&b, &format!("ret-gone-{restart}"), "gone/#"),
            vec![],
            "restart {restart}: the cleared retained message came back"
        );
    }
}

/// A persistent session's subscriptions (each with its QoS) and its messages queued while
/// offline survive SIGKILL: session present 1, the queue in order at the granted QoS, and
/// the QoS 0 subscription still routes.
#[test]
fn subscriptions_and_queued_messages_survive_kill_9() {
    let mut b = durable_broker("");
    let (mut sub, present) = Conn::connect(&b, "q-sub", false);
    assert!(!present);
    assert_eq!(
        sub.subscribe(1, &[("q/zero", 0), ("q/one", 1), ("q/two", 2)]),
        [0, 1, 2]
    );
    sub.go_offline(&b);

    let (mut p, _) = Conn::connect(&b, "q-pub", true);
    p.publish("q/one", "m1", 1, 1, false);
    p.publish("q/two", "m2", 2, 2, false);
    p.publish("q/two", "m3", 1, 3, false); // published at 1: delivered at 1
    p.publish("q/one", "m4", 2, 4, false); // granted 1: delivered at 1
    p.publish("q/none", "m5", 1, 5, false); // no subscriber
    drop(p);

    let loaded = kill_and_restart(&mut b);
    assert_eq!(
        (loaded.sessions, loaded.queued),
        (1, 4),
        "one persistent session with four queued messages: {}",
        loaded.line
    );

    let (mut sub, present) = Conn::connect(&b, "q-sub", false);
    assert!(present, "CONNACK session present after SIGKILL and restart");
    let got: Vec<(String, u8, String)> = sub
        .drain_until(|m| m.text() == "m4", WAIT)
        .iter()
        .map(|m| (m.topic.clone(), m.qos, m.text()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("q/one".to_owned(), 1, "m1".to_owned()),
            ("q/two".to_owned(), 2, "m2".to_owned()),
            ("q/two".to_owned(), 1, "m3".to_owned()),
            ("q/one".to_owned(), 1, "m4".to_owned()),
        ],
        "queued messages after the restart, in order, at their QoS, and nothing else"
    );

    // Every subscription still routes, at its QoS.
    let (mut p, _) = Conn::connect(&b, "q-pub", true);
    for (topic, qos, granted) in [("q/zero", 1, 0), ("q/one", 2, 1), ("q/two", 2, 2)] {
        p.publish(topic, &format!("live {topic}"), qos, 9, false);
        let m = sub.recv_publish();
        assert_eq!(
            (m.topic.as_str(), m.qos, m.text()),
            (topic, granted, format!("live {topic}")),
            "live message through the restored subscription"
        );
        match m.qos {
            1 => sub.send(&ack_bytes(PUBACK, m.pkid)),
            2 => {
                sub.send(&ack_bytes(PUBREC, m.pkid));
                sub.recv("PUBREL").assert_ack(PUBREL, m.pkid);
                sub.send(&ack_bytes(PUBCOMP, m.pkid));
            }
            _ => {}
        }
    }
    p.publish("q/none", "nobody", 0, 0, false);
    sub.expect_quiet("a topic the session never subscribed to");
}

/// A store barrier: a QoS 1 message to a persistent session of its own ("barrier-sub",
/// offline), whose PUBACK means it is stored, and with it everything the broker appended
/// to its single, ordered log before it (docs/DESIGN.md). The broker does not wait for
/// its records of a PUBLISH sent to a subscriber or of a PUBREC received from one (losing
/// them only means a re-send); the barrier lets a test kill the broker right after seeing
/// such a packet without racing those records.
struct Barrier {
    n: u16,
}

impl Barrier {
    fn new(b: &Broker) -> Barrier {
        let (mut s, _) = Conn::connect(b, "barrier-sub", false);
        assert_eq!(s.subscribe(1, &[("barrier/#", 1)]), [1]);
        s.go_offline(b);
        Barrier { n: 0 }
    }
    fn pass(&mut self, b: &Broker) {
        self.n += 1;
        let (mut p, _) = Conn::connect(b, "barrier-pub", true);
        p.publish("barrier/x", "barrier", 1, self.n, false);
    }
}

/// A QoS 1 message sent but not PUBACKed, and a QoS 2 one PUBRECed but not PUBCOMPed,
/// are re-sent after SIGKILL and restart with their original packet ids: the PUBLISH
/// with DUP 1, the PUBREL for the QoS 2 one, and then the queue in order.
#[test]
fn inflight_messages_are_resent_with_their_packet_ids_after_restart() {
    let mut b = durable_broker("max_inflight_messages = 2\n");
    let mut barrier = Barrier::new(&b);
    let (mut sub, _) = Conn::connect(&b, "inf-sub", false);
    assert_eq!(sub.subscribe(1, &[("inf/#", 2)]), [2]);

    let (mut p, _) = Conn::connect(&b, "inf-pub", true);
    p.publish("inf/a", "one", 1, 1, false);
    p.publish("inf/b", "two", 2, 2, false);
    p.publish("inf/c", "three", 1, 3, false); // waits: the window is 2
    drop(p);

    let one = sub.recv_publish();
    assert_eq!((one.text(), one.qos, one.dup), ("one".to_owned(), 1, false));
    let two = sub.recv_publish();
    assert_eq!((two.text(), two.qos, two.dup), ("two".to_owned(), 2, false));
    sub.send(&ack_bytes(PUBREC, two.pkid)); // and no PUBACK for one
    sub.recv("PUBREL").assert_ack(PUBREL, two.pkid);
    sub.expect_quiet("'three' waits for a free slot in the inflight window");
    barrier.pass(&b);
    drop(sub); // no DISCONNECT: the broker dies with the connection up

    kill_and_restart(&mut b);
    let (mut sub, present) = Conn::connect(&b, "inf-sub", false);
    assert!(present, "CONNACK session present after SIGKILL and restart");
    let mut first = vec![sub.recv("re-sent PUBLISH"), sub.recv("re-sent PUBREL")];
    first.sort_by_key(Pkt::kind);
    let again = first[0].publish(false);
    assert_eq!(
        (again.text(), again.qos, again.dup, again.pkid),
        ("one".to_owned(), 1, true, one.pkid),
        "the unacknowledged QoS 1 PUBLISH is re-sent with DUP 1 and its packet id: {first:?}"
    );
    first[1].assert_ack(PUBREL, two.pkid);
    sub.expect_quiet("nothing else while the window is full");

    sub.send(&ack_bytes(PUBACK, one.pkid));
    let three = sub.recv_publish();
    assert_eq!(
        (three.text(), three.qos, three.dup),
        ("three".to_owned(), 1, false),
        "then the queue"
    );
    assert_ne!(
        three.pkid, two.pkid,
        "packet id {} is still in use",
        two.pkid
    );
    sub.send(&ack_bytes(PUBCOMP, two.pkid));
    sub.send(&ack_bytes(PUBACK, three.pkid));
    sub.expect_quiet("everything acknowledged");
    barrier.pass(&b);
    drop(sub);

    // Acknowledged means gone, also from the store.
    kill_and_restart(&mut b);
    let (mut sub, present) = Conn::connect(&b, "inf-sub", false);
    assert!(present);
    sub.expect_quiet("acknowledged messages are not re-sent after another restart");
}

/// The broker's incoming QoS 2 state survives SIGKILL: a publisher that got PUBREC and
/// re-sends the PUBLISH (DUP 1, same packet id) after the restart gets PUBREC again and
/// PUBCOMP for its PUBREL, one that only sends PUBREL gets PUBCOMP, and the subscriber
/// gets each message exactly once. A completed packet id stays completed across another
/// SIGKILL: reused for a new message, that message is delivered.
#[test]
fn incoming_qos2_state_survives_restart() {
    let mut b = durable_broker("");
    let (mut sub, _) = Conn::connect(&b, "in2-sub", false);
    assert_eq!(sub.subscribe(1, &[("in2/#", 2)]), [2]);
    sub.go_offline(&b);

    let (mut p, present) = Conn::connect(&b, "in2-pub", false);
    assert!(!present);
    p.send(&publish311("in2/x", b"seven", 2, 7, false, false));
    p.recv("PUBREC 7").assert_ack(PUBREC, 7);
    p.send(&publish311("in2/x", b"eight", 2, 8, false, false));
    p.recv("PUBREC 8").assert_ack(PUBREC, 8);
    drop(p);

    kill_and_restart(&mut b);
    let (mut p, present) = Conn::connect(&b, "in2-pub", false);
    assert!(present, "the publisher's persistent session survives");
    p.send(&publish311("in2/x", b"seven", 2, 7, false, true));
    p.recv("PUBREC 7 for the re-sent PUBLISH")
        .assert_ack(PUBREC, 7);
    p.send(&ack_bytes(PUBREL, 7));
    p.recv("PUBCOMP 7").assert_ack(PUBCOMP, 7);
    p.send(&ack_bytes(PUBREL, 8));
    p.recv("PUBCOMP 8").assert_ack(PUBCOMP, 8);
    drop(p);

    // PUBCOMP means the completion is stored: after another SIGKILL, packet id 7 is free
    // again and a new message with it is a new message, not a duplicate.
    kill_and_restart(&mut b);
    let (mut p, present) = Conn::connect(&b, "in2-pub", false);
    assert!(present);
    p.publish("in2/x", "seven-again", 2, 7, false);
    p.publish("in2/x", "after", 1, 9, false);
    p.go_offline(&b);

    let (mut sub, present) = Conn::connect(&b, "in2-sub", false);
    assert!(present);
    let got: Vec<String> = sub
        .drain_until(|m| m.text() == "after", WAIT)
        .iter()
        .map(RawPub::text)
        .collect();
    assert_eq!(
        got,
        ["seven", "eight", "seven-again", "after"],
        "each message exactly once, in order"
    );
}

/// MQTT 5.0 sessions with a Session Expiry Interval survive SIGKILL and keep their queue;
/// one whose interval has passed after the restart is gone, and one with no interval
/// (ends at disconnect) is not resurrected.
#[test]
fn session_expiry_survives_a_restart() {
    let mut b = durable_broker("");
    for (id, expiry) in [
        ("exp-keep", Some(300)),
        ("exp-short", Some(1)),
        ("exp-zero", None),
    ] {
        let (mut c, present) = Conn::connect5(&b, id, true, expiry);
        assert!(!present);
        assert_eq!(c.subscribe(1, &[("exp/#", 1)]), [1]);
        c.go_offline(&b);
    }
    let (mut p, _) = Conn::connect(&b, "exp-pub", true);
    p.publish("exp/m", "kept", 1, 1, false);
    drop(p);

    kill_and_restart(&mut b);
    let restarted = Instant::now();

    let (mut keep, present) = Conn::connect5(&b, "exp-keep", false, Some(300));
    assert!(present, "a session with 300 s expiry survives the restart");
    let m = keep.recv_publish();
    assert_eq!((m.text(), m.qos), ("kept".to_owned(), 1));
    keep.send(&ack_bytes(PUBACK, m.pkid));
    keep.expect_quiet("one queued message");

    let (_zero, present) = Conn::connect5(&b, "exp-zero", false, None);
    assert!(
        !present,
        "a session without expiry ended at its disconnect; the store must not bring it back"
    );

    // Well past the 1 s interval, counted from the disconnect or from the restart.
    let until = restarted + Duration::from_millis(2500);
    std::thread::sleep(until.saturating_duration_since(Instant::now()));
    let (mut short, present) = Conn::connect5(&b, "exp-short", false, Some(1));
    assert!(!present, "a session whose 1 s expiry has passed is gone");
    short.expect_quiet("an expired session has no queue");
}

/// SIGTERM writes everything (with `queue_qos0_messages`, QoS 0 messages queued for an
/// offline persistent session too) and exits 0; after a restart every message, QoS 0, 1
/// and 2, is delivered in order, and nothing was torn.
#[test]
fn clean_shutdown_loses_nothing_at_any_qos() {
    let mut b = durable_broker("queue_qos0_messages = true\n");
    let (mut sub, _) = Conn::connect(&b, "term-sub", false);
    assert_eq!(sub.subscribe(1, &[("term/#", 2)]), [2]);
    sub.go_offline(&b);

    let (mut p, _) = Conn::connect(&b, "term-pub", true);
    let mut expected = Vec::new();
    let mut pkid = 0;
    for i in 0..8 {
        for qos in 0..=2u8 {
            pkid += 1;
            let payload = format!("q{qos}-{i}");
            // Each QoS 1/2 flow completes before the next PUBLISH, and a connection's
            // packets are handled in order: by the last PUBCOMP everything is queued.
            p.publish(&format!("term/{qos}"), &payload, qos, pkid, false);
            expected.push((qos, payload));
        }
    }
    drop(p);

    let from = b.log().len();
    let loaded = terminate_and_restart(&mut b);
    assert_eq!(
        (loaded.sessions, loaded.queued),
        (1, 24),
        "one session with 24 queued messages (QoS 0 included): {}",
        loaded.line
    );
    let log = b.log();
    assert_eq!(
        torn_warnings(&log[from..]),
        Vec::<&str>::new(),
        "a clean shutdown leaves no torn record"
    );

    let (mut sub, present) = Conn::connect(&b, "term-sub", false);
    assert!(present);
    let got: Vec<(u8, String)> = sub
        .drain_until(|m| m.text() == "q2-7", WAIT)
        .iter()
        .map(|m| (m.qos, m.text()))
        .collect();
    assert_eq!(got, expected, "every message, at its QoS, in order");
}

// ---------------------------------------------------------------------------------------
// Fault injection
// ---------------------------------------------------------------------------------------

/// Publishes `n` QoS 1 messages "<prefix>-<i>" to `topic` (each acknowledged).
fn publish_numbered(b: &Broker, topic: &str, prefix: &str, n: u16) {
    let (mut p, _) = Conn::connect(b, &format!("{prefix}-pub"), true);
    for i in 1..=n {
        p.publish(topic, &format!("{prefix}-{i}"), 1, i, false);
    }
    p.go_offline(b);
}

/// A last record cut short (a write torn by a crash) is cut off with a warning containing
/// "torn"; the start goes on and the records before it are all there.
#[test]
fn torn_last_record_is_cut_off_and_logged() {
    let mut b = durable_broker("");
    let (mut sub, _) = Conn::connect(&b, "cut-sub", false);
    assert_eq!(sub.subscribe(1, &[("cut/#", 1)]), [1]);
    sub.go_offline(&b);
    publish_numbered(&b, "cut/x", "cut", 10);
    let status = b.terminate().expect("exit after SIGTERM");
    assert!(status.success(), "SIGTERM exit status {status}");

    // Cut the last segment's last record in the middle: 3 bytes before the end of its
    // data (a preallocated segment's zero-filled end is not data).
    let dir = store_dir(&b);
    let last = segments(&dir)
        .pop()
        .unwrap_or_else(|| panic!("no NNNNNNNN.log segment in {}", dir.display()));
    let bytes = std::fs::read(&last).expect("read segment");
    let used = used_len(&bytes);
    assert!(
        used > 8,
        "the last segment {} holds no record to tear; segments: {}",
        last.display(),
        describe_segments(&dir)
    );
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .expect("open segment");
    f.set_len((used - 3) as u64).expect("truncate segment");
    drop(f);

    let from = b.log().len();
    b.spawn();
    let log = b.log();
    let since = &log[from..];
    assert!(
        !torn_warnings(since).is_empty(),
        "no warning mentioning \"torn\" after cutting 3 bytes off {}:\n{since}",
        last.display()
    );
    loaded_since(&b, from);

    // Everything before the torn record is delivered, in order; at most the last
    // message (if the torn record was its) is missing.
    let (mut sub, present) = Conn::connect(&b, "cut-sub", false);
    assert!(
        present,
        "the session was written long before the torn record"
    );
    let mut got = Vec::new();
    while let Next::Packet(p) = sub.next_within(QUIET) {
        let m = p.publish(false);
        sub.send(&ack_bytes(PUBACK, m.pkid));
        got.push(m.text());
        assert!(
            got.len() <= 20,
            "more messages than were published: {got:?}"
        );
    }
    let all: Vec<String> = (1..=10).map(|i| format!("cut-{i}")).collect();
    assert!(
        got == all || got == all[..9],
        "messages before the torn record, in order: {got:?}"
    );

    // The cut is final: the store works and the next start finds nothing torn.
    publish_numbered(&b, "cut/x", "again", 1);
    let m = sub.recv_publish();
    assert_eq!(m.text(), "again-1");
    sub.send(&ack_bytes(PUBACK, m.pkid));
    drop(sub);
    let from = b.log().len();
    terminate_and_restart(&mut b);
    let log = b.log();
    assert_eq!(
        torn_warnings(&log[from..]),
        Vec::<&str>::new(),
        "a second start still finds a torn record"
    );
}

/// Damage in the middle of a segment with valid records after it is corruption, not a
/// torn tail: midge refuses to start (exit 1) naming the segment file and the record's
/// offset, and changes nothing; with the store moved aside it starts empty.
#[test]
fn corrupt_store_stops_the_start_naming_file_and_offset() {
    let mut b = durable_broker("");
    let (mut sub, _) = Conn::connect(&b, "bad-sub", false);
    assert_eq!(sub.subscribe(1, &[("bad/#", 1)]), [1]);
    sub.go_offline(&b);
    publish_numbered(&b, "bad/x", "bad", 40);
    let status = b.terminate().expect("exit after SIGTERM");
    assert!(status.success(), "SIGTERM exit status {status}");

    // Flip 4 bytes in the middle of the largest segment's data.
    let dir = store_dir(&b);
    let seg = segments(&dir)
        .into_iter()
        .max_by_key(|p| std::fs::read(p).map(|b| used_len(&b)).unwrap_or(0))
        .unwrap_or_else(|| panic!("no NNNNNNNN.log segment in {}", dir.display()));
    let mut bytes = std::fs::read(&seg).expect("read segment");
    let used = used_len(&bytes);
    assert!(
        used > 1000,
        "40 stored messages should make more than 1000 bytes of records; segments: {}",
        describe_segments(&dir)
    );
    let at = used / 2;
    for byte in &mut bytes[at..at + 4] {
        *byte ^= 0xA5;
    }
    std::fs::write(&seg, &bytes).expect("write damaged segment");

    let (status, err) = run_expecting_refusal(&b.config_path, b.port);
    assert_eq!(
        status.code(),
        Some(1),
        "a corrupt store must stop the start with exit status 1; stderr:\n{err}"
    );
    let line = refusal_line(&err);
    let seg_s = seg.display().to_string();
    assert!(
        line.contains(&seg_s),
        "the message names the segment {seg_s}: {line}"
    );
    let offset: usize = line
        .split("corrupt record at offset ")
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or_else(|| panic!("no \"corrupt record at offset <N>\" in: {line}"));
    assert!(
        offset <= at + 3,
        "the damaged record starts at or before the flipped bytes {at}..{}: offset {offset}",
        at + 4
    );
    assert!(!err.contains("panicked"), "midge panicked:\n{err}");
    assert_eq!(
        std::fs::read(&seg).expect("read segment"),
        bytes,
        "a refused start must not change the damaged segment"
    );

    // Moved aside, the store is started empty.
    let aside = b.dir.path().join("data.damaged");
    std::fs::rename(&dir, &aside).expect("mv data data.damaged");
    let from = b.log().len();
    b.spawn();
    let loaded = loaded_since(&b, from);
    assert_eq!(
        (loaded.sessions, loaded.queued, loaded.retained),
        (0, 0, 0),
        "an empty store: {}",
        loaded.line
    );
    let (_sub, present) = Conn::connect(&b, "bad-sub", false);
    assert!(!present, "the damaged store's session is not there");
    assert!(aside.join(seg.file_name().unwrap()).exists());
}

/// A store directory that cannot be written refuses the start (exit 1), naming it.
#[test]
fn read_only_store_directory_refuses_to_start() {
    let scratch = TempDir::new("ro-store");
    let store = scratch.path().join("store");
    let _ro = ReadOnly::make(&store);
    let config = scratch.path().join("midge.toml");
    let port = free_port();
    std::fs::write(
        &config,
        format!(
            "{BASE}[persistence]\npath = \"{}\"\nsync = \"always\"\n\n[[listener]]\n\
             bind = \"127.0.0.1\"\nport = {port}\n",
            store.display()
        ),
    )
    .expect("write config");
    let (status, err) = run_expecting_refusal(&config, port);
    assert_eq!(
        status.code(),
        Some(1),
        "a read-only store directory must stop the start with exit status 1; stderr:\n{err}"
    );
    let line = refusal_line(&err);
    assert!(
        line.contains(&store.display().to_string()),
        "the message names the store directory {}: {line}",
        store.display()
    );
    assert!(!err.contains("panicked"), "midge panicked:\n{err}");
}

/// A store on a 2 MiB tmpfs fills up: the 3.1.1 publisher of the message that could not
/// be stored is disconnected without its PUBACK, a 5.0 publisher gets reason 0x80 / 0x97
/// (PUBACK and PUBREC) and stays connected, an error naming the store is logged, and
/// QoS 0 and clean-session traffic goes on: nobody else is disconnected and the process
/// keeps running.
#[test]
fn full_disk_is_never_acknowledged_and_others_keep_working() {
    let scratch = TempDir::new("full-disk");
    let mnt = scratch.path().join("mnt");
    let _tmpfs = Tmpfs::mount(&mnt, "size=2m");
    let store = mnt.join("store");
    let mut b = Broker::start(&format!(
        "{BASE}[persistence]\npath = \"{}\"\nsync = \"always\"\n",
        store.display()
    ));

    // A persistent subscriber, offline: what is published to full/# must be stored.
    let (mut sub, _) = Conn::connect(&b, "full-sub", false);
    assert_eq!(sub.subscribe(1, &[("full/#", 1)]), [1]);
    sub.go_offline(&b);
    // A clean-session QoS 0 pair, connected throughout.
    let (mut live_sub, _) = Conn::connect(&b, "live-sub", true);
    assert_eq!(live_sub.subscribe(1, &[("live/#", 0)]), [0]);
    let (mut live_pub, _) = Conn::connect(&b, "live-pub", true);
    live_pub.publish("live/x", "before", 0, 0, false);
    assert_eq!(live_sub.recv_publish().text(), "before");

    // Fill the store with 64 KiB messages until one cannot be stored (2 MiB: at most ~32).
    let payload = "x".repeat(64 * 1024);
    let (mut filler, _) = Conn::connect(&b, "fill-311", true);
    let mut acked = 0;
    let mut refused = None;
    for i in 1..=200u16 {
        let bytes = publish311("full/data", payload.as_bytes(), 1, i, false, false);
        if filler.s.write_all(&bytes).is_err() {
            refused = Some(i);
            break;
        }
        match filler.next_within(WAIT) {
            Next::Packet(p) => {
                p.assert_ack(PUBACK, i);
                acked += 1;
            }
            Next::Closed => {
                refused = Some(i);
                break;
            }
            Next::Quiet => panic!(
                "message {i}: neither a PUBACK nor a disconnect within {WAIT:?}; log:\n{}",
                log_tail(&b, 30)
            ),
        }
    }
    let refused = refused
        .unwrap_or_else(|| panic!("200 messages of 64 KiB were all acknowledged on a 2 MiB store"));
    assert!(
        acked >= 1,
        "the store refused the very first message: the test never saw it working"
    );
    println!("3.1.1 publisher: {acked} acknowledged, disconnected at message {refused}");
    assert!(b.is_running(), "midge exited when the store filled up");
    let deadline = Instant::now() + WAIT;
    while !b
        .log()
        .lines()
        .any(|l| l.contains("ERROR") && l.to_lowercase().contains("store"))
    {
        assert!(
            Instant::now() < deadline,
            "no error line mentioning the store; log:\n{}",
            log_tail(&b, 30)
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // A 5.0 publisher is told: reason 0x80 or 0x97, and keeps its connection.
    let (mut v5, _) = Conn::connect5(&b, "fill-5", true, None);
    let mut refused5 = None;
    for i in 1..=200u16 {
        v5.send(&publish5("full/data", payload.as_bytes(), 1, i));
        let ack = v5.recv("PUBACK");
        assert_eq!((ack.kind(), ack.pkid()), (PUBACK, i), "{ack:?}");
        match ack.reason5() {
            0 => {}
            0x80 | 0x97 => {
                refused5 = Some(ack.reason5());
                break;
            }
            other => panic!("PUBACK reason {other:#04x}: expected 0, 0x80 or 0x97"),
        }
    }
    assert!(
        refused5.is_some(),
        "a 5.0 QoS 1 publisher never got 0x80 / 0x97 from a full store"
    );
    v5.send(&publish5("full/data", payload.as_bytes(), 2, 500));
    let rec = v5.recv("PUBREC");
    assert_eq!((rec.kind(), rec.pkid()), (PUBREC, 500), "{rec:?}");
    assert!(
        matches!(rec.reason5(), 0x80 | 0x97),
        "a QoS 2 message that cannot be stored: PUBREC reason 0x80 or 0x97, got {rec:?}"
    );
    v5.ping();

    // Everything else goes on.
    assert!(b.is_running(), "midge exited");
    live_pub.publish("live/x", "after", 0, 0, false);
    assert_eq!(live_sub.recv_publish().text(), "after");
    // QoS 1 to an online clean session only: nothing to store, acknowledged as usual.
    live_pub.publish("live/y", "clean qos 1", 1, 1, false);
    assert_eq!(live_sub.recv_publish().text(), "clean qos 1");
    live_sub.ping();
    live_pub.ping();
    let (mut fresh, _) = Conn::connect(&b, "late-client", true);
    fresh.ping();
}

/// One midge per store: a second one on the same directory refuses to start (exit 1,
/// naming the directory) and leaves the store alone; the lock goes with the process, so a
/// restart after SIGKILL is not refused.
#[test]
fn second_broker_on_the_same_store_refuses_to_start() {
    let mut a = durable_broker("");
    let store = store_dir(&a);
    assert!(
        store.join("lock").exists(),
        "no lock file in {}",
        store.display()
    );
    let (mut sub, _) = Conn::connect(&a, "lock-sub", false);
    assert_eq!(sub.subscribe(1, &[("lock/#", 1)]), [1]);
    sub.go_offline(&a);
    publish_numbered(&a, "lock/x", "lock", 1);

    let scratch = TempDir::new("second");
    let config = scratch.path().join("midge.toml");
    let port = free_port();
    std::fs::write(
        &config,
        format!(
            "{BASE}[persistence]\npath = \"{}\"\n\n[[listener]]\nbind = \"127.0.0.1\"\nport = {port}\n",
            store.display()
        ),
    )
    .expect("write config");
    let (status, err) = run_expecting_refusal(&config, port);
    assert_eq!(
        status.code(),
        Some(1),
        "a second midge on the same store must exit 1; stderr:\n{err}"
    );
    let line = refusal_line(&err);
    assert!(
        line.contains(&store.display().to_string()),
        "the message names the store {}: {line}",
        store.display()
    );

    // The first one is unaffected, and so is its store.
    assert!(a.is_running());
    publish_numbered(&a, "lock/x", "still", 1);
    let loaded = kill_and_restart(&mut a);
    assert_eq!(loaded.queued, 2, "{}", loaded.line);
    let (mut sub, present) = Conn::connect(&a, "lock-sub", false);
    assert!(present);
    let got: Vec<String> = sub
        .drain_until(|m| m.text() == "still-1", WAIT)
        .iter()
        .map(RawPub::text)
        .collect();
    assert_eq!(got, ["lock-1", "still-1"]);
}

/// Publishes `n` QoS 2 messages "<prefix>:<i>" to `topic`, `window` at a time, every flow
/// completed (PUBCOMP): all `n` are acknowledged.
fn publish_many_qos2(b: &Broker, topic: &str, prefix: &str, n: u16, window: u16) {
    let (mut p, _) = Conn::connect(b, &format!("{prefix}-pub"), true);
    let (mut next, mut done, mut open) = (1u16, 0u16, 0u16);
    for _ in 0..u32::from(n) * 4 {
        if done == n {
            return;
        }
        let mut batch = Vec::new();
        while open < window && next <= n {
            let payload = format!("{prefix}:{next}");
            batch.extend(publish311(topic, payload.as_bytes(), 2, next, false, false));
            next += 1;
            open += 1;
        }
        if !batch.is_empty() {
            p.send(&batch);
        }
        let pkt = p.recv("PUBREC or PUBCOMP");
        match pkt.kind() {
            PUBREC => p.send(&ack_bytes(PUBREL, pkt.pkid())),
            PUBCOMP => {
                done += 1;
                open -= 1;
            }
            _ => panic!("publisher: unexpected {pkt:?}"),
        }
    }
    assert_eq!(done, n, "not every QoS 2 flow completed");
}

/// A QoS 2 receiver as the specification has it [MQTT-4.3.3-2]: a PUBLISH with a packet id
/// it has PUBRECed and not yet seen PUBREL for is that same message again (acknowledged,
/// not delivered); after it sends PUBCOMP the id is free, and a PUBLISH with it is a new
/// message. Its state outlives connections, like a persistent client's.
#[derive(Default)]
struct Qos2Receiver {
    /// packet id -> payload, PUBREC sent, PUBREL not yet received.
    awaiting_pubrel: HashMap<u16, String>,
    deliveries: HashMap<String, usize>,
    /// Deliveries beyond the first, and messages swallowed because the broker reused a
    /// packet id the receiver was still holding for another message.
    problems: Vec<String>,
}

impl Qos2Receiver {
    /// Handles packets until the connection closes, or nothing comes for `quiet`.
    fn run(&mut self, c: &mut Conn, quiet: Duration, label: &str) {
        for _ in 0..2_000_000 {
            match c.next_within(quiet) {
                Next::Packet(p) if p.kind() == PUBLISH => {
                    let m = p.publish(false);
                    assert_eq!(m.qos, 2, "{label}: {m:?}");
                    match self.awaiting_pubrel.get(&m.pkid) {
                        None => {
                            let n = self.deliveries.entry(m.text()).or_default();
                            *n += 1;
                            if *n > 1 {
                                self.problems.push(format!(
                                    "{label}: {} delivered again (packet id {}, DUP {})",
                                    m.text(),
                                    m.pkid,
                                    u8::from(m.dup)
                                ));
                            }
                            self.awaiting_pubrel.insert(m.pkid, m.text());
                        }
                        Some(held) if *held != m.text() => self.problems.push(format!(
                            "{label}: packet id {} still awaiting PUBREL for {held} was used for                              {} (DUP {}): a compliant receiver takes it for {held} again",
                            m.pkid,
                            m.text(),
                            u8::from(m.dup)
                        )),
                        Some(_) => {}
                    }
                    if c.s.write_all(&ack_bytes(PUBREC, m.pkid)).is_err() {
                        return;
                    }
                }
                Next::Packet(p) if p.kind() == PUBREL => {
                    self.awaiting_pubrel.remove(&p.pkid());
                    if c.s.write_all(&ack_bytes(PUBCOMP, p.pkid())).is_err() {
                        return;
                    }
                }
                Next::Packet(p) => panic!("{label}: unexpected {p:?}"),
                Next::Closed | Next::Quiet => return,
            }
        }
    }
}

/// Killed (SIGKILL) again and again while it delivers QoS 2 messages to a persistent
/// subscriber that follows the specification, midge still delivers each message exactly
/// once: after a restart it re-sends the PUBLISH (DUP 1, same packet id) only for messages
/// whose PUBREC it has not had, PUBREL for those whose PUBREL it had sent, and never
/// reuses a packet id the subscriber still holds.
#[test]
fn crash_while_delivering_qos2_delivers_each_message_exactly_once() {
    const N: u16 = 3000;
    let mut b = durable_broker("");
    let (mut sub, _) = Conn::connect(&b, "dlv-sub", false);
    assert_eq!(sub.subscribe(1, &[("dlv/#", 2)]), [2]);
    sub.go_offline(&b);
    publish_many_qos2(&b, "dlv/x", "m", N, 20);

    let seed = crash_seed();
    println!("delivery crash: seed {seed} (replay the kill delays with MIDGE_CRASH_SEED={seed})");
    let mut rng = Rng::new(seed);
    let mut rx = Qos2Receiver::default();
    for k in 0..10 {
        let (mut c, present) = Conn::connect(&b, "dlv-sub", false);
        assert!(
            present,
            "kill point {k}: the session is gone after a restart"
        );
        let pid = b.child.as_ref().expect("midge running").id();
        let delay = rng.range(5, 60);
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(delay));
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        });
        rx.run(&mut c, WAIT, &format!("kill point {k}"));
        killer.join().expect("killer thread");
        b.kill();
        b.spawn();
        println!(
            "delivery crash: kill point {k} after {delay} ms: {} of {N} delivered",
            rx.deliveries.len()
        );
    }
    let (mut c, present) = Conn::connect(&b, "dlv-sub", false);
    assert!(present);
    rx.run(&mut c, QUIET, "after the last restart");

    let missing: Vec<String> = (1..=N)
        .map(|i| format!("m:{i}"))
        .filter(|m| !rx.deliveries.contains_key(m))
        .collect();
    assert!(
        rx.problems.is_empty() && missing.is_empty(),
        "seed {seed}: {} problems, {} of {N} acknowledged messages never delivered {:?}; \
         the first problems:\n{}",
        rx.problems.len(),
        missing.len(),
        &missing[..missing.len().min(20)],
        rx.problems
            .iter()
            .take(20)
            .map(|p| format!("  {p}\n"))
            .collect::<String>()
    );
}
