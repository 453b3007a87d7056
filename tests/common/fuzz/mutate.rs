//! Mutations of byte streams: bit flips, bytes set, inserted and deleted, truncation,
//! broken varints, slices spliced elsewhere.

use midge::codec::ProtocolVersion;
use proptest::prelude::*;
use proptest::sample::Index;

use super::{encode_session, session, version};

/// One change to a byte stream. Positions are [`Index`]es, mapped onto the stream's
/// length when applied.
#[derive(Debug, Clone)]
pub enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Truncate(Index),
    /// A byte that is often a length or a property identifier: 0, 0x7F, 0x80, 0xFF, ...
    Interesting(Index, u8),
    /// A varint with continuation bits (a remaining length or property length gone wrong).
    Varint(Index, Vec<u8>),
    /// Copies a slice of the stream to another place (splices packets into packets).
    Splice(Index, Index, Index),
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 0..8u8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        2 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..6)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => (any::<Index>(), 1..6usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        2 => (any::<Index>(), prop::sample::select(vec![0u8, 1, 2, 0x7F, 0x80, 0xFF, 0x26, 0x0B, 0x23, 0x15, 0x11])).prop_map(|(i, b)| Mutation::Interesting(i, b)),
        2 => (any::<Index>(), prop::collection::vec(prop::sample::select(vec![0x80u8, 0xFF, 0x81, 0x7F, 0x00, 0x01]), 1..6)).prop_map(|(i, v)| Mutation::Varint(i, v)),
        1 => (any::<Index>(), any::<Index>(), any::<Index>()).prop_map(|(a, b, c)| Mutation::Splice(a, b, c)),
    ]
}

/// Applies `mutations` in order. Never panics: every position is taken modulo the length.
pub fn apply(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        let len = bytes.len();
        if len == 0 {
            if let Mutation::Insert(_, b) = m {
                bytes.extend_from_slice(b);
            }
            continue;
        }
        match m {
            Mutation::FlipBit(i, bit) => bytes[i.index(len)] ^= 1 << bit,
            Mutation::SetByte(i, b) | Mutation::Interesting(i, b) => bytes[i.index(len)] = *b,
            Mutation::Insert(i, b) => {
                let at = i.index(len + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let at = i.index(len);
                let end = (at + n).min(len);
                bytes.drain(at..end);
            }
            Mutation::Truncate(i) => bytes.truncate(i.index(len)),
            Mutation::Varint(i, v) => {
                let at = i.index(len);
                let end = (at + v.len()).min(len);
                bytes.splice(at..end, v.iter().copied());
            }
            Mutation::Splice(from, n, to) => {
                let start = from.index(len);
                let end = start + n.index(len - start + 1).min(64);
                let piece = bytes[start..end].to_vec();
                let at = to.index(len + 1);
                bytes.splice(at..at, piece);
            }
        }
    }
}

/// A valid session, encoded, then mutated (no mutation a quarter of the time: valid
/// sequences are worth feeding as they are). Returns the version, the valid packets and
/// the bytes.
pub fn mutated_session(max_packets: usize) -> impl Strategy<Value = (ProtocolVersion, Vec<u8>)> {
    version()
        .prop_flat_map(move |v| (Just(v), session(v, max_packets)))
        .prop_flat_map(|(v, s)| {
            let bytes = encode_session(&s);
            (
                Just(v),
                Just(bytes),
                prop_oneof![1 => Just(vec![]), 3 => prop::collection::vec(mutation(), 1..5)],
            )
        })
        .prop_map(|(v, mut bytes, muts)| {
            apply(&mut bytes, &muts);
            (v, bytes)
        })
}

/// Random bytes, usually behind a plausible first byte (a packet type with its flags).
pub fn random_stream() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec![
            0x10u8, 0x30, 0x32, 0x34, 0x3B, 0x40, 0x50, 0x62, 0x70, 0x82, 0xA2, 0xC0, 0xE0, 0xF0,
            0x00, 0xFF,
        ]),
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(first, mut rest)| {
            rest.insert(0, first);
            rest
        })
}
