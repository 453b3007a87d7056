//! Encoders for the MQTT 5.0 packets a server sends. Each appends one packet to the buffer
//! after reserving its exact size once.
//!
//! Sizes and bytes come from the same code: every packet's properties are written through
//! [`Sink`], once into a byte counter and once into the buffer, so the reserved size, the
//! property length, the remaining length and [`publish_v5_size`] cannot disagree with
//! what is written.
//!
//! What MQTT cannot express is a bug of the caller, never decoded input (everything midge
//! forwards was decoded under the same limits): a packet over the 256 MiB maximum asserts
//! in debug builds and is not written in release builds, as [`super::encode_publish`]
//! does; a string property over 65,535 bytes (or a Subscription Identifier out of
//! 1..=268,435,455) asserts in debug builds and is left out in release builds, which
//! keeps the packet valid.

use bytes::{BufMut, BytesMut};

use super::encode::{put_varint, varint_len};
use super::properties::{
    ASSIGNED_CLIENT_IDENTIFIER, CONTENT_TYPE, CORRELATION_DATA, MAXIMUM_PACKET_SIZE, MAXIMUM_QOS,
    MAX_SUBSCRIPTION_ID, MESSAGE_EXPIRY_INTERVAL, PAYLOAD_FORMAT_INDICATOR, REASON_STRING,
    RECEIVE_MAXIMUM, RESPONSE_INFORMATION, RESPONSE_TOPIC, RETAIN_AVAILABLE, SERVER_KEEP_ALIVE,
    SESSION_EXPIRY_INTERVAL, SHARED_SUBSCRIPTION_AVAILABLE, SUBSCRIPTION_IDENTIFIER,
    SUBSCRIPTION_IDENTIFIER_AVAILABLE, TOPIC_ALIAS, TOPIC_ALIAS_MAXIMUM, USER_PROPERTY,
    WILDCARD_SUBSCRIPTION_AVAILABLE,
};
use super::{MessageProps, QoS, MAX_REMAINING_LENGTH};

/// Where properties are written: a byte counter (to size a packet) or the buffer.
trait Sink {
    fn u8(&mut self, v: u8);
    fn u16(&mut self, v: u16);
    fn u32(&mut self, v: u32);
    fn slice(&mut self, s: &[u8]);
    fn varint(&mut self, v: usize);
}

/// Counts the bytes instead of writing them.
struct Count(usize);

impl Sink for Count {
    fn u8(&mut self, _: u8) {
        self.0 += 1;
    }
    fn u16(&mut self, _: u16) {
        self.0 += 2;
    }
    fn u32(&mut self, _: u32) {
        self.0 += 4;
    }
    fn slice(&mut self, s: &[u8]) {
        self.0 = self.0.saturating_add(s.len());
    }
    fn varint(&mut self, v: usize) {
        self.0 += varint_len(v);
    }
}

impl Sink for BytesMut {
    fn u8(&mut self, v: u8) {
        self.put_u8(v);
    }
    fn u16(&mut self, v: u16) {
        self.put_u16(v);
    }
    fn u32(&mut self, v: u32) {
        self.put_u32(v);
    }
    fn slice(&mut self, s: &[u8]) {
        self.put_slice(s);
    }
    fn varint(&mut self, v: usize) {
        put_varint(self, v);
    }
}

/// `s`'s length as a two-byte prefix, or `None` (and a debug assertion) when it has none.
fn short_len(s: &[u8]) -> Option<u16> {
    let len = u16::try_from(s.len()).ok();
    debug_assert!(len.is_some(), "string or binary property over 65535 bytes");
    len
}

fn put_u8_prop<S: Sink>(s: &mut S, id: u8, v: u8) {
    s.u8(id);
    s.u8(v);
}

fn put_u16_prop<S: Sink>(s: &mut S, id: u8, v: u16) {
    s.u8(id);
    s.u16(v);
}

fn put_u32_prop<S: Sink>(s: &mut S, id: u8, v: u32) {
    s.u8(id);
    s.u32(v);
}

/// A UTF-8 Encoded String or Binary Data property; left out if it cannot be expressed.
fn put_bytes_prop<S: Sink>(s: &mut S, id: u8, v: &[u8]) {
    if let Some(len) = short_len(v) {
        s.u8(id);
        s.u16(len);
        s.slice(v);
    }
}

/// User Properties the server makes (CONNACK), in their order; a pair that cannot be
/// expressed is left out.
fn put_user_properties<S: Sink>(s: &mut S, pairs: &[(String, String)]) {
    for (name, value) in pairs {
        if let (Some(n), Some(v)) = (short_len(name.as_bytes()), short_len(value.as_bytes())) {
            s.u8(USER_PROPERTY);
            s.u16(n);
            s.slice(name.as_bytes());
            s.u16(v);
            s.slice(value.as_bytes());
        }
    }
}

/// The size of what `write` writes.
fn count(write: impl FnOnce(&mut Count)) -> usize {
    let mut c = Count(0);
    write(&mut c);
    c.0
}

/// Fixed header byte, remaining length, then `body_len` bytes: the packet size, if MQTT
/// can express it (asserting in debug builds when it cannot).
fn packet_len(body_len: usize) -> Option<usize> {
    if body_len > MAX_REMAINING_LENGTH {
        debug_assert!(false, "packet larger than the MQTT maximum");
        return None;
    }
    Some(1 + varint_len(body_len) + body_len)
}

// ---------------------------------------------------------------- CONNACK

/// The MQTT 5.0 CONNACK properties a server may send (§3.2.2.3); `None` / empty ones are
/// not written. Server Reference and the authentication properties are not here: midge
/// neither redirects nor offers enhanced authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnackProps {
    pub session_expiry: Option<u32>,
    pub receive_maximum: Option<u16>,
    /// 0 or 1: the highest QoS the server supports, when below 2.
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<bool>,
    pub maximum_packet_size: Option<u32>,
    pub assigned_client_id: Option<String>,
    pub topic_alias_maximum: Option<u16>,
    pub reason_string: Option<String>,
    pub user_properties: Vec<(String, String)>,
    pub wildcard_available: Option<bool>,
    pub subscription_ids_available: Option<bool>,
    pub shared_available: Option<bool>,
    pub server_keep_alive: Option<u16>,
    pub response_information: Option<String>,
}

fn put_connack_props<S: Sink>(s: &mut S, p: &ConnackProps) {
    if let Some(v) = p.session_expiry {
        put_u32_prop(s, SESSION_EXPIRY_INTERVAL, v);
    }
    if let Some(v) = p.receive_maximum {
        debug_assert!(v != 0, "Receive Maximum 0 (MQTT 5.0 §3.2.2.3.3)");
        put_u16_prop(s, RECEIVE_MAXIMUM, v);
    }
    if let Some(v) = p.maximum_qos {
        debug_assert!(
            v <= 1,
            "Maximum QoS other than 0 or 1 (MQTT 5.0 §3.2.2.3.4)"
        );
        put_u8_prop(s, MAXIMUM_QOS, v);
    }
    if let Some(v) = p.retain_available {
        put_u8_prop(s, RETAIN_AVAILABLE, u8::from(v));
    }
    if let Some(v) = p.maximum_packet_size {
        debug_assert!(v != 0, "Maximum Packet Size 0 (MQTT 5.0 §3.2.2.3.6)");
        put_u32_prop(s, MAXIMUM_PACKET_SIZE, v);
    }
    if let Some(v) = &p.assigned_client_id {
        put_bytes_prop(s, ASSIGNED_CLIENT_IDENTIFIER, v.as_bytes());
    }
    if let Some(v) = p.topic_alias_maximum {
        put_u16_prop(s, TOPIC_ALIAS_MAXIMUM, v);
    }
    if let Some(v) = &p.reason_string {
        put_bytes_prop(s, REASON_STRING, v.as_bytes());
    }
    put_user_properties(s, &p.user_properties);
    if let Some(v) = p.wildcard_available {
        put_u8_prop(s, WILDCARD_SUBSCRIPTION_AVAILABLE, u8::from(v));
    }
    if let Some(v) = p.subscription_ids_available {
        put_u8_prop(s, SUBSCRIPTION_IDENTIFIER_AVAILABLE, u8::from(v));
    }
    if let Some(v) = p.shared_available {
        put_u8_prop(s, SHARED_SUBSCRIPTION_AVAILABLE, u8::from(v));
    }
    if let Some(v) = p.server_keep_alive {
        put_u16_prop(s, SERVER_KEEP_ALIVE, v);
    }
    if let Some(v) = &p.response_information {
        put_bytes_prop(s, RESPONSE_INFORMATION, v.as_bytes());
    }
}

/// An MQTT 5.0 CONNACK with a reason code and properties. Session Present is written as
/// given (the caller sends 0 with a reason code of 0x80 or more [MQTT-3.2.2-6]).
pub fn encode_connack_v5_props(
    buf: &mut BytesMut,
    session_present: bool,
    reason: u8,
    props: &ConnackProps,
) {
    let props_len = count(|c| put_connack_props(c, props));
    let remaining = (2 + varint_len(props_len)).saturating_add(props_len);
    let Some(len) = packet_len(remaining) else {
        return;
    };
    buf.reserve(len);
    buf.put_u8(0x20);
    put_varint(buf, remaining);
    buf.put_u8(u8::from(session_present));
    buf.put_u8(reason);
    put_varint(buf, props_len);
    put_connack_props(buf, props);
}

// ---------------------------------------------------------------- PUBLISH

/// An outgoing MQTT 5.0 PUBLISH, borrowed from the stored message.
#[derive(Debug, Clone, Copy)]
pub struct PublishOut<'a> {
    /// `""` when only the topic alias is sent.
    pub topic: &'a str,
    pub qos: QoS,
    pub retain: bool,
    /// Never written for QoS 0 [MQTT-3.3.1-2].
    pub dup: bool,
    /// Ignored for QoS 0.
    pub pkid: u16,
    pub topic_alias: Option<u16>,
    /// The message's properties, forwarded unaltered [MQTT-3.3.2-4] [MQTT-3.3.2-15..20].
    pub props: Option<&'a MessageProps>,
    /// When `Some`, sent instead of `props.message_expiry`: the remaining lifetime
    /// [MQTT-3.3.2-6].
    pub message_expiry: Option<u32>,
    /// One Subscription Identifier property each, in this order [MQTT-3.3.4-3].
    pub subscription_ids: &'a [u32],
}

/// Payload format, expiry, content type, response topic, correlation data, user
/// properties, topic alias, subscription identifiers.
fn put_publish_props<S: Sink>(s: &mut S, p: &PublishOut) {
    if let Some(m) = p.props {
        if let Some(utf8) = m.payload_format {
            put_u8_prop(s, PAYLOAD_FORMAT_INDICATOR, u8::from(utf8));
        }
    }
    if let Some(v) = p.message_expiry.or(p.props.and_then(|m| m.message_expiry)) {
        put_u32_prop(s, MESSAGE_EXPIRY_INTERVAL, v);
    }
    if let Some(m) = p.props {
        if let Some(v) = &m.content_type {
            put_bytes_prop(s, CONTENT_TYPE, v.as_bytes());
        }
        if let Some(v) = &m.response_topic {
            put_bytes_prop(s, RESPONSE_TOPIC, v.as_bytes());
        }
        if let Some(v) = &m.correlation_data {
            put_bytes_prop(s, CORRELATION_DATA, v);
        }
        // Validated at decode: written back as they came [MQTT-3.3.2-17/18].
        s.slice(m.user_properties.wire());
    }
    if let Some(v) = p.topic_alias {
        debug_assert!(v != 0, "Topic Alias 0 [MQTT-3.3.2-8]");
        put_u16_prop(s, TOPIC_ALIAS, v);
    }
    for &id in p.subscription_ids {
        let valid = (1..=MAX_SUBSCRIPTION_ID).contains(&id);
        debug_assert!(valid, "Subscription Identifier {id} out of 1..=268435455");
        if valid {
            s.u8(SUBSCRIPTION_IDENTIFIER);
            // A u32 up to 268,435,455 always fits a usize.
            s.varint(id as usize);
        }
    }
}

/// `(property length, remaining length)` of the PUBLISH, or `None` if MQTT cannot express
/// it (topic over 65,535 bytes, packet over 256 MiB).
fn publish_lens(p: &PublishOut, payload_len: usize) -> Option<(usize, usize)> {
    let props_len = count(|c| put_publish_props(c, p));
    let pkid_len = if p.qos == QoS::AtMostOnce { 0 } else { 2 };
    let remaining = (2 + p.topic.len() + pkid_len + varint_len(props_len))
        .checked_add(props_len)?
        .checked_add(payload_len)?;
    if p.topic.len() > usize::from(u16::MAX) || remaining > MAX_REMAINING_LENGTH {
        return None;
    }
    Some((props_len, remaining))
}

/// The whole packet, fixed header included, as [`encode_publish_v5`] writes it: what is
/// compared with the client's Maximum Packet Size [MQTT-3.1.2-24]. `usize::MAX` for a
/// packet MQTT cannot express (which the encoders do not write).
pub fn publish_v5_size(p: &PublishOut, payload_len: usize) -> usize {
    match publish_lens(p, payload_len) {
        Some((_, remaining)) => 1 + varint_len(remaining) + remaining,
        None => usize::MAX,
    }
}

/// Encodes an outgoing MQTT 5.0 PUBLISH, copying topic, properties and payload once.
/// Returns false, having written nothing, for a packet MQTT cannot express.
pub fn encode_publish_v5(buf: &mut BytesMut, p: &PublishOut, payload: &[u8]) -> bool {
    if let Some(lens) = publish_lens(p, payload.len()) {
        buf.reserve(1 + varint_len(lens.1) + lens.1);
        put_publish_header(buf, p, lens);
        buf.put_slice(payload);
        true
    } else {
        debug_assert!(false, "PUBLISH that MQTT cannot express");
        false
    }
}

/// Encodes an MQTT 5.0 PUBLISH up to (not including) its payload of `payload_len` bytes,
/// for a payload written from its own buffer. Writes nothing for a packet MQTT cannot
/// express: [`publish_v5_size`] returns `usize::MAX` for it, and a caller that checks it
/// against the client's Maximum Packet Size never gets here.
pub fn encode_publish_header_v5(buf: &mut BytesMut, p: &PublishOut, payload_len: usize) -> bool {
    if let Some(lens) = publish_lens(p, payload_len) {
        buf.reserve(1 + varint_len(lens.1) + lens.1 - payload_len);
        put_publish_header(buf, p, lens);
        true
    } else {
        debug_assert!(false, "PUBLISH that MQTT cannot express");
        false
    }
}

fn put_publish_header(buf: &mut BytesMut, p: &PublishOut, (props_len, remaining): (usize, usize)) {
    let has_pkid = p.qos != QoS::AtMostOnce;
    let byte1 =
        0x30 | (u8::from(p.dup && has_pkid) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain);
    buf.put_u8(byte1);
    put_varint(buf, remaining);
    // Checked by `publish_lens`.
    buf.put_u16(p.topic.len() as u16);
    buf.put_slice(p.topic.as_bytes());
    if has_pkid {
        buf.put_u16(p.pkid);
    }
    put_varint(buf, props_len);
    put_publish_props(buf, p);
}

// ---------------------------------------------------------------- acknowledgements

/// Which acknowledgement [`encode_ack_v5`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    PubAck,
    PubRec,
    PubRel,
    PubComp,
}

/// A Reason String property, if one is given and can be expressed.
fn reason_prop(reason_string: Option<&str>) -> Option<&str> {
    reason_string.filter(|s| short_len(s.as_bytes()).is_some())
}

fn put_reason_prop<S: Sink>(s: &mut S, reason_string: Option<&str>) {
    if let Some(v) = reason_string {
        put_bytes_prop(s, REASON_STRING, v.as_bytes());
    }
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP. Reason 0x00 without reason string: the 2-byte
/// short form; without reason string: packet identifier and reason code (§3.4.2.1);
/// otherwise the reason code and a Reason String property. Whether a reason string may
/// be sent at all (Request Problem Information 0 [MQTT-3.1.2-29], the client's Maximum
/// Packet Size [MQTT-3.4.2-2]) is the caller's decision.
/// PUBACK, PUBREC, PUBREL or PUBCOMP for a client of either version: the reason code goes
/// to MQTT 5.0 clients only. With reason 0 and no reason string the 5.0 packet is the
/// 3.1.1 one byte for byte, so a 3.1.1 client gets exactly what 3.1.1 prescribes.
pub fn encode_ack(buf: &mut BytesMut, kind: AckKind, pkid: u16, reason: u8, v5: bool) {
    encode_ack_v5(buf, kind, pkid, if v5 { reason } else { 0 }, None);
}

pub fn encode_ack_v5(
    buf: &mut BytesMut,
    kind: AckKind,
    pkid: u16,
    reason: u8,
    reason_string: Option<&str>,
) {
    let byte1 = match kind {
        AckKind::PubAck => 0x40,
        AckKind::PubRec => 0x50,
        AckKind::PubRel => 0x62,
        AckKind::PubComp => 0x70,
    };
    let [hi, lo] = pkid.to_be_bytes();
    match reason_prop(reason_string) {
        None if reason == 0 => {
            buf.reserve(4);
            buf.put_slice(&[byte1, 2, hi, lo]);
        }
        None => {
            buf.reserve(5);
            buf.put_slice(&[byte1, 3, hi, lo, reason]);
        }
        Some(s) => {
            let props_len = count(|c| put_reason_prop(c, Some(s)));
            // At most 3 + 65,535: always expressible.
            let remaining = 3 + varint_len(props_len) + props_len;
            buf.reserve(1 + varint_len(remaining) + remaining);
            buf.put_u8(byte1);
            put_varint(buf, remaining);
            buf.put_slice(&[hi, lo, reason]);
            put_varint(buf, props_len);
            put_reason_prop(buf, Some(s));
        }
    }
}

/// SUBACK / UNSUBACK: packet identifier, properties, one reason code per filter.
fn encode_reasons_ack(
    buf: &mut BytesMut,
    byte1: u8,
    pkid: u16,
    reasons: &[u8],
    reason_string: Option<&str>,
) {
    let reason_string = reason_prop(reason_string);
    let props_len = count(|c| put_reason_prop(c, reason_string));
    let remaining = (2 + varint_len(props_len) + props_len).saturating_add(reasons.len());
    let Some(len) = packet_len(remaining) else {
        return;
    };
    buf.reserve(len);
    buf.put_u8(byte1);
    put_varint(buf, remaining);
    buf.put_u16(pkid);
    put_varint(buf, props_len);
    put_reason_prop(buf, reason_string);
    buf.put_slice(reasons);
}

/// `reasons` holds one Subscribe Reason Code per filter, in the SUBSCRIBE's order
/// [MQTT-3.9.3-1]: the granted QoS 0-2 or a failure code (Table 3-8).
pub fn encode_suback_v5(
    buf: &mut BytesMut,
    pkid: u16,
    reasons: &[u8],
    reason_string: Option<&str>,
) {
    encode_reasons_ack(buf, 0x90, pkid, reasons, reason_string);
}

/// `reasons` holds one Unsubscribe Reason Code per filter, in the UNSUBSCRIBE's order
/// [MQTT-3.11.3-1] (Table 3-9: 0x00 Success, 0x11 No subscription existed, ...).
pub fn encode_unsuback_v5(
    buf: &mut BytesMut,
    pkid: u16,
    reasons: &[u8],
    reason_string: Option<&str>,
) {
    encode_reasons_ack(buf, 0xB0, pkid, reasons, reason_string);
}

// ---------------------------------------------------------------- DISCONNECT

/// A server DISCONNECT: `E0 00` for 0x00 without reason string, `E0 01 reason` without
/// reason string, otherwise the reason code and a Reason String property. A server never
/// sends a Session Expiry Interval [MQTT-3.14.2-2].
pub fn encode_disconnect_v5(buf: &mut BytesMut, reason: u8, reason_string: Option<&str>) {
    match reason_prop(reason_string) {
        None if reason == 0 => {
            buf.reserve(2);
            buf.put_slice(&[0xE0, 0x00]);
        }
        None => {
            buf.reserve(3);
            buf.put_slice(&[0xE0, 0x01, reason]);
        }
        Some(s) => {
            let props_len = count(|c| put_reason_prop(c, Some(s)));
            let remaining = 1 + varint_len(props_len) + props_len;
            buf.reserve(1 + varint_len(remaining) + remaining);
            buf.put_u8(0xE0);
            put_varint(buf, remaining);
            buf.put_u8(reason);
            put_varint(buf, props_len);
            put_reason_prop(buf, Some(s));
        }
    }
}

/// A message's properties as an MQTT 5.0 property block (its length, then the
/// properties), the form the durable store keeps them in; read back with
/// [`super::decode_message_props`].
pub fn encode_message_props(props: &MessageProps) -> Vec<u8> {
    let p = PublishOut {
        topic: "",
        qos: QoS::AtMostOnce,
        retain: false,
        dup: false,
        pkid: 0,
        topic_alias: None,
        props: Some(props),
        message_expiry: None,
        subscription_ids: &[],
    };
    let len = count(|c| put_publish_props(c, &p));
    let mut buf = BytesMut::with_capacity(varint_len(len) + len);
    put_varint(&mut buf, len);
    put_publish_props(&mut buf, &p);
    buf.to_vec()
}
