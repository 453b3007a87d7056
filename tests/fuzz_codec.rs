//! Fuzzing of the codec, in process: valid MQTT 3.1, 3.1.1 and 5.0 client packets of
//! every type (with properties: user properties, subscription identifiers, topic aliases,
//! will properties) round-trip through the decoder; mutated sequences of them and random
//! bytes never make it panic, always end in a packet or a `DecodeError`, and give the
//! same result whether the bytes arrive at once or in pieces, as from a socket.
//!
//! `MIDGE_FUZZ_CASES` / `MIDGE_FUZZ_SECONDS` scale the runs (scripts/fuzz.sh); the
//! defaults keep `cargo test` fast. Inputs that once failed are regression tests at the
//! end of this file, with their exact bytes.

mod common;

use common::fuzz::{self, decode_stream, Extras, MAX};
use midge::codec::{self, DecodeError, Packet, ProtocolVersion};
use proptest::prelude::*;

fn chunks() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1..40usize, 1..8)
}

/// Every valid packet sequence decodes to exactly the packets encoded, whole and in
/// pieces.
#[test]
fn fuzz_valid_sequences_round_trip() {
    let strategy = fuzz::version()
        .prop_flat_map(|v| fuzz::session(v, 8))
        .prop_flat_map(|s| (Just(s), chunks()));
    fuzz::run(
        "codec-valid-round-trip",
        800,
        strategy,
        |(session, chunks)| {
            let bytes = fuzz::encode_session(&session);
            let want: Vec<Packet> = session.into_iter().map(|(p, _)| p).collect();
            for c in [&[][..], &chunks[..]] {
                let got = decode_stream(&bytes, c, MAX, false)?;
                prop_assert_eq!(&got.error, &None, "bytes {:02x?}", bytes);
                prop_assert_eq!(got.left, 0);
                prop_assert_eq!(&got.packets, &want);
            }
            Ok(())
        },
    );
}

/// Mutated valid sequences: no panic, the same outcome whole and in pieces, with the
/// default maximum packet size and with a small one.
#[test]
fn fuzz_mutated_sequences_decode_or_fail_cleanly() {
    let strategy = (fuzz::mutated_session(8), chunks(), 2..400usize);
    fuzz::run(
        "codec-mutated-sequences",
        1500,
        strategy,
        |((_, bytes), chunks, small)| {
            for max in [MAX, small] {
                let whole = decode_stream(&bytes, &[], max, false)?;
                let pieces = decode_stream(&bytes, &chunks, max, false)?;
                prop_assert_eq!(&whole, &pieces, "bytes {:02x?}", bytes);
                if let Some(DecodeError::PacketTooLarge { size, max: m }) = whole.error {
                    prop_assert!(size > m && m == max);
                }
            }
            Ok(())
        },
    );
}

/// Random bytes, read by the 3.1.1 decoder and by the 5.0 one from the first byte.
#[test]
fn fuzz_random_bytes_decode_or_fail_cleanly() {
    let strategy = (fuzz::random_stream(), chunks(), 2..400usize);
    fuzz::run(
        "codec-random-bytes",
        5000,
        strategy,
        |(bytes, chunks, small)| {
            for v5 in [false, true] {
                for max in [MAX, small] {
                    let whole = decode_stream(&bytes, &[], max, v5)?;
                    let pieces = decode_stream(&bytes, &chunks, max, v5)?;
                    prop_assert_eq!(&whole, &pieces, "bytes {:02x?}", bytes);
                }
            }
            Ok(())
        },
    );
}

/// The store keeps MQTT 5.0 message properties in the encoder's bytes: they read back as
/// they were, and any bytes read back fail cleanly.
#[test]
fn fuzz_message_props_round_trip_and_random_blocks() {
    let strategy = (
        fuzz::some_message_props(),
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(fuzz::mutation(), 0..3),
    );
    fuzz::run(
        "codec-message-props",
        2000,
        strategy,
        |(props, random, muts)| {
            if let Some(p) = &props {
                let mut block = codec::encode_message_props(p);
                let back = codec::decode_message_props(&block);
                prop_assert_eq!(back, Ok(props.clone()));
                fuzz::apply(&mut block, &muts);
                let _ = codec::decode_message_props(&block);
            }
            let _ = codec::decode_message_props(&random);
            Ok(())
        },
    );
}

/// The encoder of the fuzz harness itself writes what the decoder expects: one fixed
/// packet of each kind, checked byte for byte where the specification's examples exist.
#[test]
fn fuzz_harness_encodes_a_plain_connect_like_the_spec() {
    let connect = Packet::Connect(codec::Connect {
        version: ProtocolVersion::V311,
        clean_session: true,
        keep_alive: 60,
        client_id: "c".into(),
        will: None,
        username: None,
        password: None,
        props: codec::ConnectProps::default(),
    });
    let bytes = fuzz::encode(&connect, &Extras::default(), false);
    assert_eq!(
        bytes,
        [0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'c']
    );
    assert_eq!(
        fuzz::encode(&Packet::PingReq, &Extras::default(), true),
        [0xC0, 0]
    );
}
