//! Fuzzing helpers shared by tests/fuzz_codec.rs and tests/fuzz_connection.rs: proptest
//! strategies for valid client packets of MQTT 3.1, 3.1.1 and 5.0 (every packet type a
//! client sends, with properties), an encoder of those packets to bytes (the codec only
//! encodes what a server sends), mutations of encoded sequences, and a runner bounded by a
//! case count and a time budget that reports how many cases it tried.
//!
//! Knobs (scripts/fuzz.sh sets them): `MIDGE_FUZZ_CASES` (cases per target; each target
//! has a small default so `cargo test` stays fast) and `MIDGE_FUZZ_SECONDS` (time budget
//! per target; the run stops at whichever comes first).
#![allow(dead_code)]
//!
//! Layout: `packets` (strategies for valid packets), `encode` (packets to bytes), `mutate`
//! (changes to byte streams); this file has the runner and the decoding model.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use midge::codec::{self, DecodeError, Packet, ProtocolVersion};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

mod encode;
mod mutate;
mod packets;

// Every test crate includes `common`; most use none of this.
#[allow(unused_imports)]
pub use encode::*;
#[allow(unused_imports)]
pub use mutate::*;
#[allow(unused_imports)]
pub use packets::*;

/// Runs `test` on values of `strategy` until `MIDGE_FUZZ_CASES` (or `default_cases`)
/// cases passed or `MIDGE_FUZZ_SECONDS` ran out, in batches of fresh random seeds; panics
/// with the shrunk failing input. Prints and returns the number of cases tried.
pub fn run<S, F>(name: &str, default_cases: u64, strategy: S, test: F) -> u64
where
    S: Strategy,
    S::Value: std::fmt::Debug,
    F: Fn(S::Value) -> Result<(), TestCaseError>,
{
    let cases = env_u64("MIDGE_FUZZ_CASES").unwrap_or(default_cases).max(1);
    let budget = env_u64("MIDGE_FUZZ_SECONDS").map(Duration::from_secs);
    let started = Instant::now();
    let mut done = 0u64;
    while done < cases {
        if budget.is_some_and(|b| started.elapsed() >= b) {
            break;
        }
        let batch = (cases - done).min(1000);
        let mut runner = TestRunner::new(Config {
            cases: u32::try_from(batch).unwrap_or(1000),
            // Regressions are kept as explicit tests with their bytes, not in files.
            failure_persistence: None,
            max_shrink_iters: 2000,
            ..Config::default()
        });
        match runner.run(&strategy, &test) {
            Ok(()) => done += batch,
            Err(TestError::Fail(why, value)) => {
                panic!("fuzz {name}: failed after {done} cases: {why}\nminimal input: {value:?}")
            }
            Err(TestError::Abort(why)) => panic!("fuzz {name}: aborted: {why}"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fuzz {name}: {done} cases in {secs:.1} s ({:.0}/s), 0 failures",
        done as f64 / secs.max(1e-9)
    );
    done
}

fn env_u64(key: &str) -> Option<u64> {
    std::env::var(key).ok()?.trim().parse().ok()
}

// ---------------------------------------------------------------------------------------
// Decoding as a connection does.
// ---------------------------------------------------------------------------------------

/// The maximum packet size the codec fuzz decodes with by default.
pub const MAX: usize = 1 << 20;

/// What the decoder made of a stream: the packets in order, then the error that ended it
/// (if any).
#[derive(Debug, PartialEq)]
pub struct Outcome {
    pub packets: Vec<Packet>,
    pub error: Option<DecodeError>,
    /// Bytes left over without an error: the beginning of a packet still waiting for the
    /// rest. (After an error the connection closes: what is left does not matter, and
    /// depends on how much had arrived.)
    pub left: usize,
}

/// Feeds `bytes` to the decoder in pieces of the sizes in `chunks` (cycled; empty = all at
/// once), the way connection.rs does: `decode` until a CONNECT of MQTT 5.0 switches the
/// connection to `decode_v5` (or from the start when `v5_from_start`). Checks the
/// decoder's contract on the way: a packet consumes bytes, `Ok(None)` consumes none.
pub fn decode_stream(
    bytes: &[u8],
    chunks: &[usize],
    max: usize,
    v5_from_start: bool,
) -> Result<Outcome, TestCaseError> {
    let mut buf = BytesMut::new();
    let mut v5 = v5_from_start;
    let mut out = Outcome {
        packets: Vec::new(),
        error: None,
        left: 0,
    };
    let mut pos = 0;
    let mut piece = 0;
    while pos < bytes.len() {
        let n = if chunks.is_empty() {
            bytes.len()
        } else {
            chunks[piece % chunks.len()].max(1)
        };
        piece += 1;
        let end = (pos + n).min(bytes.len());
        buf.extend_from_slice(&bytes[pos..end]);
        pos = end;
        loop {
            let before = buf.len();
            let res = if v5 {
                codec::decode_v5(&mut buf, max)
            } else {
                codec::decode(&mut buf, max)
            };
            match res {
                Ok(Some(p)) => {
                    prop_assert!(buf.len() + 2 <= before, "a packet is at least 2 bytes");
                    if out.packets.is_empty() {
                        if let Packet::Connect(c) = &p {
                            v5 |= c.version == ProtocolVersion::V5;
                        }
                    }
                    out.packets.push(p);
                }
                Ok(None) => {
                    prop_assert_eq!(buf.len(), before, "Ok(None) must not consume");
                    break;
                }
                Err(e) => {
                    out.error = Some(e);
                    return Ok(out);
                }
            }
        }
    }
    out.left = buf.len();
    Ok(out)
}
