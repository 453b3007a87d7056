//! Fuzzing of whole connections against the real broker binary: each case opens a
//! connection, sends a CONNECT (3.1, 3.1.1 or 5.0) and the packets that follow, valid or
//! mutated (the CONNECT itself included), closes its sending side and reads what the
//! broker answers until it closes. Many cases share one broker process.
//!
//! Checked for every case: the broker answers with well-formed packets only, of types a
//! server sends, a CONNACK first and only once; 3.1 / 3.1.1 clients never get a
//! DISCONNECT; when the codec itself says the client's bytes break the protocol after an
//! accepted MQTT 5.0 CONNECT (and the client sent no DISCONNECT before), the broker's last
//! packet is a DISCONNECT with an error reason code [MQTT-4.13.1-1]; the broker closes
//! every connection once the client has finished sending. Checked along the way and at
//! the end: the process is running, its log holds no panic, and a healthy client is
//! still served.
//!
//! `MIDGE_FUZZ_CASES` / `MIDGE_FUZZ_SECONDS` scale the run (scripts/fuzz.sh).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::fuzz::{self, decode_stream};
use common::packets::frame_at;
use common::Broker;
use midge::codec::Packet;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// What the cases exercised, printed at the end so a run shows it reached past CONNECT.
static ACCEPTED: AtomicU64 = AtomicU64::new(0);
static V5_ERROR_CHECKED: AtomicU64 = AtomicU64::new(0);
static RESETS: AtomicU64 = AtomicU64::new(0);

/// The broker's default `max_packet_size`, which the model decodes with.
const BROKER_MAX_PACKET: usize = 8_388_608;

/// How a connection ended, seen from the client.
#[derive(Debug, PartialEq)]
enum End {
    /// FIN: everything the broker sent was received.
    Eof,
    /// RST: the broker closed with unread bytes, and Linux may drop what it had sent.
    Reset,
    /// Still open after the time limit.
    Open,
}

fn read_all(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, End) {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (got, End::Open);
        }
        let _ = s.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        match s.read(&mut buf) {
            Ok(0) => return (got, End::Eof),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return (got, End::Open)
            }
            Err(_) => return (got, End::Reset),
        }
    }
}

/// A packet from the broker: first byte, body.
type ServerPacket = (u8, Vec<u8>);

/// Splits the broker's bytes into packets, strictly: every packet type and its flags must
/// be one a server sends. Returns the packets (first byte, body) and whether bytes of an
/// incomplete packet trail them.
fn server_packets(mut bytes: &[u8], v5: bool) -> Result<(Vec<ServerPacket>, bool), String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let byte1 = bytes[0];
        let ok = match byte1 >> 4 {
            3 => (byte1 >> 1) & 3 != 3,
            2 | 4 | 5 | 7 | 9 | 11 | 13 => byte1 & 0x0F == 0,
            6 => byte1 & 0x0F == 2,
            14 | 15 => v5 && byte1 & 0x0F == 0,
            _ => false,
        };
        if !ok {
            return Err(format!("not a server packet: first byte {byte1:#04x}"));
        }
        let Some((i, len)) = frame_at(bytes) else {
            if bytes.len() > 5 && bytes[1..5].iter().all(|b| b & 0x80 != 0) {
                return Err("remaining length longer than 4 bytes".into());
            }
            return Ok((out, true));
        };
        out.push((byte1, bytes[i..i + len].to_vec()));
        bytes = &bytes[i + len..];
    }
    Ok((out, false))
}

/// Sends `bytes` on a new connection, then checks the broker's answer (see the module
/// documentation).
fn check_case(b: &Broker, max_packet: usize, bytes: &[u8]) -> Result<(), TestCaseError> {
    check_case_in_pieces(b, max_packet, bytes, &[])
}

/// [`check_case`], writing the bytes in pieces of the sizes in `pieces` (cycled; empty =
/// one write), so that the broker also reads packets split across reads.
fn check_case_in_pieces(
    b: &Broker,
    max_packet: usize,
    bytes: &[u8],
    pieces: &[usize],
) -> Result<(), TestCaseError> {
    // The codec's view of the bytes: whether the CONNECT is a 5.0 one, and whether the
    // stream breaks the protocol before any DISCONNECT from the client.
    let model = decode_stream(bytes, &[], max_packet, false)?;
    let v5 = matches!(model.packets.first(), Some(Packet::Connect(c)) if c.version == midge::codec::ProtocolVersion::V5);
    // A client may forbid packets larger than a DISCONNECT (§3.1.2.11.4): then the
    // broker rightly closes without one.
    let takes_disconnect = match model.packets.first() {
        Some(Packet::Connect(c)) => c.props.maximum_packet_size.is_none_or(|m| m >= 64),
        _ => true,
    };
    let client_disconnects = model
        .packets
        .iter()
        .skip(1)
        .any(|p| matches!(p, Packet::Disconnect(_)));

    let mut s = connect(b)?;
    let _ = s.set_nodelay(true);
    // The broker may close while we write (it refused the bytes): not a failure.
    if pieces.is_empty() {
        let _ = s.write_all(bytes);
    } else {
        let mut at = 0;
        for n in pieces.iter().cycle() {
            if at >= bytes.len() {
                break;
            }
            let end = (at + (*n).max(1)).min(bytes.len());
            if s.write_all(&bytes[at..end]).is_err() {
                break;
            }
            at = end;
        }
    }
    let _ = s.shutdown(Shutdown::Write);
    let (reply, end) = read_all(&mut s, Duration::from_secs(10));
    prop_assert!(
        end != End::Open,
        "the broker kept the connection open after the client finished sending; got {:02x?}",
        reply
    );
    let (packets, partial) = server_packets(&reply, v5).map_err(|e| {
        TestCaseError::fail(format!("{e}; broker sent {reply:02x?} for {bytes:02x?}"))
    })?;
    if end == End::Eof {
        prop_assert!(
            !partial,
            "incomplete packet before a clean close: {:02x?}",
            reply
        );
    }
    if let Some((first, _)) = packets.first() {
        prop_assert_eq!(*first, 0x20, "first packet is not CONNACK: {:02x?}", reply);
    }
    prop_assert!(
        packets.iter().filter(|(h, _)| *h == 0x20).count() <= 1,
        "more than one CONNACK: {:02x?}",
        reply
    );
    let accepted = packets.first().is_some_and(|(_, body)| {
        // 3.1.1: return code byte 1; 5.0: reason code byte 1.
        body.get(1) == Some(&0)
    });
    if accepted {
        ACCEPTED.fetch_add(1, Ordering::Relaxed);
    }
    if end == End::Reset {
        RESETS.fetch_add(1, Ordering::Relaxed);
    }
    if v5
        && accepted
        && takes_disconnect
        && end == End::Eof
        && model.error.is_some()
        && !client_disconnects
    {
        V5_ERROR_CHECKED.fetch_add(1, Ordering::Relaxed);
        let last = packets.last();
        prop_assert!(
            matches!(last, Some((0xE0, body)) if body.first().is_some_and(|r| *r >= 0x80)),
            "MQTT 5.0: the codec rejects {:?} but the broker's last packet is {:02x?}, not a \
             DISCONNECT with an error reason; sent {:02x?}",
            model.error,
            last,
            bytes
        );
    }
    Ok(())
}

/// Connects, waiting out a shortage of local ports (tens of thousands of short
/// connections leave theirs in TIME_WAIT): bounded to 30 s.
fn connect(b: &Broker) -> Result<TcpStream, TestCaseError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match TcpStream::connect(b.addr()) {
            Ok(s) => return Ok(s),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrNotAvailable
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(TestCaseError::fail(format!("connect: {e}"))),
        }
    }
}

/// The part of the broker's log written since the last call (`seen` is the offset): a
/// long run writes a large log, which must not be read whole again and again.
fn new_log(b: &Broker, seen: &AtomicU64) -> String {
    use std::io::{Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(&b.log_path) else {
        return String::new();
    };
    let from = seen.load(Ordering::Relaxed);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(from)).is_ok() && f.read_to_end(&mut buf).is_ok() {
        seen.store(from + buf.len() as u64, Ordering::Relaxed);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn assert_healthy(b: &mut Broker, tag: &str) {
    println!(
        "{tag}: so far {} connections accepted, {} MQTT 5.0 protocol errors answered with \
         DISCONNECT checked, {} closed by reset",
        ACCEPTED.load(Ordering::Relaxed),
        V5_ERROR_CHECKED.load(Ordering::Relaxed),
        RESETS.load(Ordering::Relaxed)
    );
    assert!(
        b.is_running(),
        "{tag}: the broker exited; log:\n{}",
        b.log()
    );
    let log = b.log();
    assert!(
        !log.contains("panicked"),
        "{tag}: the broker panicked; log:\n{log}"
    );
    b.assert_serves_healthy_client(tag);
}

/// Valid and mutated 3.1 / 3.1.1 / 5.0 sessions against one broker process.
#[test]
fn fuzz_connections_get_well_formed_answers_and_clean_closes() {
    let mut b = Broker::start("log_level = \"info\"\n");
    let cases = AtomicU64::new(0);
    let log_seen = AtomicU64::new(0);
    let broker = &b;
    let done = fuzz::run(
        "connection-sessions",
        500,
        (
            fuzz::mutated_session(6),
            prop_oneof![Just(vec![]), prop::collection::vec(1..40usize, 1..8)],
        ),
        |((_, bytes), pieces)| {
            check_case_in_pieces(broker, BROKER_MAX_PACKET, &bytes, &pieces)?;
            // Every 50 cases: still there, no panic in the log.
            if cases.fetch_add(1, Ordering::Relaxed) % 50 == 49 {
                let new = new_log(broker, &log_seen);
                prop_assert!(
                    !new.contains("panicked"),
                    "the broker panicked; log:\n{}",
                    new
                );
            }
            Ok(())
        },
    );
    assert!(done > 0);
    assert_healthy(&mut b, "after-fuzzed-sessions");
}

/// Random bytes as the first thing on a connection, and behind a valid CONNECT.
#[test]
fn fuzz_connections_random_bytes_get_clean_closes() {
    let mut b = Broker::start("log_level = \"info\"\n");
    let broker = &b;
    let strategy = (
        prop::option::of(fuzz::version().prop_flat_map(|v| fuzz::session(v, 1))),
        fuzz::random_stream(),
    );
    fuzz::run(
        "connection-random-bytes",
        300,
        strategy,
        |(connect, random)| {
            let mut bytes = connect
                .map(|s| fuzz::encode_session(&s))
                .unwrap_or_default();
            bytes.extend(random);
            check_case(broker, BROKER_MAX_PACKET, &bytes)
        },
    );
    assert_healthy(&mut b, "after-random-bytes");
}

/// The broker's limits set tight, so that fuzzed sessions hit them all the time: packet
/// size, in-flight and queued messages, topic aliases, receive maximum.
const TIGHT: &str = "log_level = \"info\"\nmax_packet_size = 64\nmax_inflight_messages = 2\n\
                     max_queued_messages = 3\nmax_topic_alias = 2\nreceive_maximum = 2\n";

/// Valid and mutated sessions against a broker whose limits are tight.
#[test]
fn fuzz_connections_against_tight_limits_get_the_specs_answers() {
    let mut b = Broker::start(TIGHT);
    let broker = &b;
    fuzz::run(
        "connection-tight-limits",
        300,
        fuzz::mutated_session(6),
        |(_, bytes)| check_case(broker, 64, &bytes),
    );
    assert_healthy(&mut b, "after-tight-limits");
}
