//! Encoders for the packets a server sends. Each appends one packet to the buffer after
//! reserving its exact size once.

use bytes::{BufMut, BytesMut};
use mqttbytes::v4::{PingResp, UnsubAck};

use super::{QoS, MAX_REMAINING_LENGTH};

/// Number of bytes of the variable length encoding of `len` (`len` is at most
/// `MAX_REMAINING_LENGTH`).
pub(super) fn varint_len(len: usize) -> usize {
    match len {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub(super) fn put_varint(buf: &mut BytesMut, mut len: usize) {
    loop {
        // Truncation intended: the low 7 bits.
        let mut byte = (len & 0x7F) as u8;
        len >>= 7;
        if len > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if len == 0 {
            break;
        }
    }
}

/// Our own encoder: `mqttbytes` takes its `ConnectReturnCode` enum, which cannot carry
/// every `u8` the caller may pass.
pub fn encode_connack(buf: &mut BytesMut, session_present: bool, code: u8) {
    buf.reserve(4);
    buf.put_slice(&[0x20, 0x02, u8::from(session_present), code]);
}

/// An MQTT 5.0 CONNACK with a reason code and no properties.
pub fn encode_connack_v5(buf: &mut BytesMut, session_present: bool, reason: u8) {
    buf.reserve(5);
    buf.put_slice(&[0x20, 0x03, u8::from(session_present), reason, 0x00]);
}

/// Whether MQTT 3.1.1 can express a PUBLISH of `topic` and `payload_len` bytes at `qos`:
/// a topic of at most 65,535 bytes and a remaining length of at most 268,435,455. A
/// message can fail this only when its topic reached midge as a 5.0 Topic Alias: the
/// 3.1.1 packet carries the whole topic the publisher's packet did not.
pub fn publish_fits(topic: &str, payload_len: usize, qos: QoS) -> bool {
    let pkid_len = if qos == QoS::AtMostOnce { 0 } else { 2 };
    topic.len() <= usize::from(u16::MAX)
        && (2 + topic.len() + pkid_len)
            .checked_add(payload_len)
            .is_some_and(|remaining| remaining <= MAX_REMAINING_LENGTH)
}

/// Room enough for a 3.1.1 PUBLISH of `topic` and `payload_len` bytes of payload, at any
/// QoS: what [`encode_publish`] reserves, so that it never grows the buffer.
pub fn publish_capacity(topic: &str, payload_len: usize) -> usize {
    // Fixed header (at most 5), topic length and topic, packet id, payload.
    1 + 4 + 2 + topic.len() + 2 + payload_len
}

/// Encodes an outgoing PUBLISH. `pkid` is ignored for QoS 0.
///
/// DUP is never set on QoS 0 [MQTT-3.3.1-2]. The topic must fit a 16-bit length and the
/// packet the 256 MiB MQTT limit; anything decoded with a sane `max_packet_size` does. A
/// packet breaking that limit is a bug of the caller: it asserts in debug builds and is
/// not written in release builds (a corrupt frame would break the whole stream).
pub fn encode_publish(
    buf: &mut BytesMut,
    topic: &str,
    payload: &[u8],
    qos: QoS,
    pkid: u16,
    retain: bool,
    dup: bool,
) {
    // One reservation for the whole packet: encoding copies topic and payload once.
    buf.reserve(publish_capacity(topic, payload.len()));
    if encode_publish_header(buf, topic, payload.len(), qos, pkid, retain, dup) {
        buf.put_slice(payload);
    }
}

/// Encodes a PUBLISH up to (not including) its payload of `payload_len` bytes, for a
/// payload that is written from its own buffer. Returns false, having written nothing, for
/// a packet MQTT cannot express.
pub fn encode_publish_header(
    buf: &mut BytesMut,
    topic: &str,
    payload_len: usize,
    qos: QoS,
    pkid: u16,
    retain: bool,
    dup: bool,
) -> bool {
    let has_pkid = qos != QoS::AtMostOnce;
    let remaining = (2 + topic.len() + if has_pkid { 2 } else { 0 }).checked_add(payload_len);
    let (Ok(topic_len), Some(remaining)) = (u16::try_from(topic.len()), remaining) else {
        debug_assert!(false, "PUBLISH topic longer than 65535 bytes");
        return false;
    };
    if remaining > MAX_REMAINING_LENGTH {
        debug_assert!(false, "PUBLISH larger than the MQTT maximum");
        return false;
    }
    buf.reserve(1 + varint_len(remaining) + remaining - payload_len);
    // The fixed header and the topic's length are put together on the stack and appended
    // in one copy: a put per byte was ~110 instructions a PUBLISH, the most costly step
    // of a fan-out's delivery (callgrind).
    let mut head = [0u8; 7];
    head[0] = 0x30 | (u8::from(dup && has_pkid) << 3) | ((qos as u8) << 1) | u8::from(retain);
    let mut n = 1;
    let mut rest = remaining;
    for slot in head.iter_mut().skip(1).take(4) {
        // Truncation intended: the low 7 bits.
        *slot = (rest & 0x7F) as u8;
        rest >>= 7;
        n += 1;
        if rest == 0 {
            break;
        }
        *slot |= 0x80;
    }
    let [hi, lo] = topic_len.to_be_bytes();
    let head = match head.get_mut(n..n + 2) {
        Some(len) => {
            len.copy_from_slice(&[hi, lo]);
            head.get(..n + 2)
        }
        None => None,
    };
    let Some(head) = head else {
        debug_assert!(false, "remaining length over 4 bytes");
        return false;
    };
    buf.extend_from_slice(head);
    buf.extend_from_slice(topic.as_bytes());
    if has_pkid {
        buf.extend_from_slice(&pkid.to_be_bytes());
    }
    true
}

/// `codes` holds one return code per filter: granted QoS 0-2 or 0x80 for failure.
///
/// Our own encoder: `mqttbytes` wants a `Vec` of its reason code enum and collects it
/// into a second `Vec` while writing. `codes` is never longer than the SUBSCRIBE it
/// answers, so it always fits; a longer one asserts in debug builds and is not written.
pub fn encode_suback(buf: &mut BytesMut, pkid: u16, codes: &[u8]) {
    let remaining = codes.len().saturating_add(2);
    if remaining > MAX_REMAINING_LENGTH {
        debug_assert!(false, "SUBACK larger than the MQTT maximum");
        return;
    }
    buf.reserve(1 + varint_len(remaining) + remaining);
    buf.put_u8(0x90);
    put_varint(buf, remaining);
    buf.put_u16(pkid);
    buf.put_slice(codes);
}

pub fn encode_unsuback(buf: &mut BytesMut, pkid: u16) {
    buf.reserve(4);
    let _ = UnsubAck::new(pkid).write(buf);
}

pub fn encode_pingresp(buf: &mut BytesMut) {
    buf.reserve(2);
    let _ = PingResp.write(buf);
}
