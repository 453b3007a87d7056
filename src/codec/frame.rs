//! The fixed header of a packet still arriving: its remaining length, and how long a
//! PUBLISH's frame will be, read before the rest of it is there; and the one packet read
//! in place from the buffer, a bare acknowledgement.

use super::{Ack, DecodeError, Packet, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL};

/// Reads the remaining length varint that follows the first byte of `buf`.
///
/// Returns the value and the number of bytes it took, `None` if more bytes are needed.
/// A fourth byte with its continuation bit set is malformed at once: no value could follow.
pub(super) fn remaining_length(buf: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut value: usize = 0;
    for (i, &byte) in buf.iter().skip(1).take(4).enumerate() {
        // i < 4, so the shift is at most 21 and the value stays below 2^28.
        value |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
        if i == 3 {
            return Err(DecodeError::Malformed(
                "remaining length longer than 4 bytes [MQTT-2.2.3]",
            ));
        }
    }
    Ok(None)
}

/// The whole length (fixed header included) of the PUBLISH `buf` begins with, once its
/// fixed header is complete; `None` for any other packet, an incomplete or malformed
/// header, or a remaining length above `max_packet_size` (the decoder refuses those).
/// Lets the connection size one buffer for a large PUBLISH before its body arrives.
pub fn publish_frame_len(buf: &[u8], max_packet_size: usize) -> Option<usize> {
    if buf.first()? >> 4 != PUBLISH {
        return None;
    }
    let (remaining, len_len) = remaining_length(buf).ok()??;
    // At most 1 + 4 + 268_435_455: cannot overflow.
    (remaining <= max_packet_size).then_some(1 + len_len + remaining)
}

/// How many PUBACKs of the shortest form (`0x40 0x02` and the packet id: no reason code,
/// which MQTT 5.0 reads as success) `buf` starts with, at most `max`. These are most of
/// what a QoS 1 subscriber sends: the connection handles such a run without decoding each
/// into a [`Packet`] (see `connection::process`). The bytes are exactly what [`decode`]
/// and [`decode_v5`] would accept as a PUBACK with that id, in either version.
///
/// [`decode`]: super::decode
/// [`decode_v5`]: super::decode_v5
#[inline]
pub fn leading_pubacks(buf: &[u8], max: usize) -> usize {
    buf.chunks_exact(4)
        .take(max)
        .take_while(|f| matches!(f, [0x40, 0x02, _, _]))
        .count()
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP with only its packet identifier (3.1.1 always; 5.0
/// when the reason is Success, left out [MQTT 5.0 §3.4.2.1]), read in place: half the
/// packets of a QoS 1 flow, and splitting each off the read buffer as a frame of its own
/// cost more than the rest of its decoding. Anything else is `None`, decoded as a frame.
pub(super) fn short_ack(byte1: u8, remaining: usize, body: Option<&[u8]>) -> Option<Packet> {
    let &[hi, lo] = body? else {
        return None;
    };
    if remaining != 2 {
        return None;
    }
    let ack = Ack {
        pkid: u16::from_be_bytes([hi, lo]),
        reason: 0,
    };
    // The first byte's flags were checked by `check_first_byte`.
    match byte1 >> 4 {
        PUBACK => Some(Packet::PubAck(ack)),
        PUBREC => Some(Packet::PubRec(ack)),
        PUBREL => Some(Packet::PubRel(ack)),
        PUBCOMP => Some(Packet::PubComp(ack)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_pubacks_counts_whole_short_pubacks_only() {
        let acks = [
            0x40, 0x02, 0, 1, 0x40, 0x02, 0xff, 0xff, 0x40, 0x03, 0, 2, 0,
        ];
        assert_eq!(leading_pubacks(&acks, 10), 2);
        assert_eq!(leading_pubacks(&acks, 1), 1);
        assert_eq!(
            leading_pubacks(&acks[..7], 10),
            1,
            "a partial one is not counted"
        );
        assert_eq!(leading_pubacks(&[0x50, 0x02, 0, 1], 10), 0, "PUBREC is not");
        assert_eq!(
            leading_pubacks(&[0x41, 0x02, 0, 1], 10),
            0,
            "reserved flags are not"
        );
        // Each is what the full decoder reads as that PUBACK, in both versions.
        for v5 in [false, true] {
            let mut buf = bytes::BytesMut::from(&acks[..8]);
            for pkid in [1, 0xffff] {
                let p = if v5 {
                    super::super::decode_v5(&mut buf, 100)
                } else {
                    super::super::decode(&mut buf, 100)
                };
                assert!(
                    matches!(p, Ok(Some(Packet::PubAck(a))) if a.pkid == pkid && a.reason == 0)
                );
            }
        }
    }

    #[test]
    fn publish_frame_len_needs_a_whole_publish_header_within_the_limit() {
        // PUBLISH QoS 1, remaining length 1 MiB + 9 (three length bytes).
        let remaining = (1usize << 20) + 9;
        let header = [0x32, 0x89, 0x80, 0x40];
        assert_eq!(remaining_length(&header), Ok(Some((remaining, 3))));
        assert_eq!(publish_frame_len(&header, 8 << 20), Some(4 + remaining));
        assert_eq!(publish_frame_len(&header, remaining), Some(4 + remaining));
        assert_eq!(publish_frame_len(&header, remaining - 1), None);
        // The length is not complete yet.
        assert_eq!(publish_frame_len(&header[..3], 8 << 20), None);
        assert_eq!(publish_frame_len(&[], 8 << 20), None);
        // Not a PUBLISH: SUBSCRIBE with the same length.
        assert_eq!(publish_frame_len(&[0x82, 0x89, 0x80, 0x40], 8 << 20), None);
        // A fifth length byte is malformed: left to the decoder.
        assert_eq!(
            publish_frame_len(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], 1 << 30),
            None
        );
    }
}
