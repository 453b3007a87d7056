//! The MQTT wire format, behind one module.
//!
//! Everything that turns bytes into packets and packets into bytes lives here, so the rest
//! of the broker never sees the codec crate and the codec can be extended (MQTT 5.0
//! properties, AUTH) or replaced without touching routing.
//!
//! We use `mqttbytes` where it is strict enough and our own code where it falls short of
//! the specification. `mqttbytes` decodes UNSUBSCRIBE bodies (we add the packet id 0, empty
//! list and U+0000 checks it lacks) and encodes UNSUBACK and PINGRESP for 3.1.1. PUBACK,
//! PUBREC, PUBREL and PUBCOMP have one encoder for both versions ([`encode_ack`]): with
//! reason 0 the 5.0 packet is the 3.1.1 one. Everything else is ours: it has no MQTT 3.1
//! (`MQIsdp`, level 3) CONNECT, does not check the reserved fixed-header flags or the
//! reserved CONNECT flag, reads passwords as UTF-8 strings, lets DUP on QoS 0 and U+0000
//! in strings through, masks away the reserved bits of the SUBSCRIBE options byte instead
//! of rejecting them, and its encoders want owned packets (an outgoing PUBLISH would copy
//! topic and payload into a `String` and `Bytes` first; CONNACK / SUBACK take its own
//! enums, the SUBACK one allocating two `Vec`s per packet).
//!
//! Layout: this file holds the public types, the fixed header, the dispatch and the MQTT
//! 3.1.1 / 3.1 body parsers; `reader` is a bounds-checked cursor over a frame, `connect`
//! the CONNECT parser (all three versions), `properties` the MQTT 5.0 property blocks,
//! `v5` the other MQTT 5.0 body parsers, `encode` the 3.1.1 encoders and `encode_v5` the
//! MQTT 5.0 ones. No input can make either decoder panic, index out of bounds, overflow or
//! allocate more than the bytes actually received.
//!
//! A connection starts with [`decode`], which reads a CONNECT of any version; once the
//! CONNECT was MQTT 5.0 it switches to [`decode_v5`]. MQTT 5.0 distinguishes a Malformed
//! Packet (0x81, [`DecodeError::Malformed`]) from a Protocol Error (0x82,
//! [`DecodeError::ProtocolError`]); each error text names the statement or section of the
//! specification it enforces.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};

mod connect;
mod encode;
mod encode_v5;
mod frame;
mod properties;
mod reader;
pub mod reason;
#[cfg(test)]
mod tests;
mod topic_cache;
mod user_properties;
mod v5;

pub use encode::{
    encode_connack, encode_connack_v5, encode_pingresp, encode_publish, encode_publish_header,
    encode_suback, encode_unsuback, publish_capacity, publish_fits,
};
pub use encode_v5::{
    encode_ack, encode_ack_v5, encode_connack_v5_props, encode_disconnect_v5, encode_message_props,
    encode_publish_header_v5, encode_publish_v5, encode_suback_v5, encode_unsuback_v5,
    publish_v5_size, AckKind, ConnackProps, PublishOut,
};

pub use frame::{leading_pubacks, publish_frame_len};
use frame::{remaining_length, short_ack};
use reader::Reader;
pub use user_properties::UserProperties;

/// Reads back a property block written by [`encode_message_props`] (checked like a
/// PUBLISH's: the durable store's bytes are not trusted either).
pub fn decode_message_props(block: &[u8]) -> Result<Option<Box<MessageProps>>, DecodeError> {
    let mut r = Reader::new_v5(bytes::Bytes::copy_from_slice(block));
    let mut props = properties::parse(&mut r, properties::Block::Publish)?;
    if !r.is_empty() {
        return Err(DecodeError::Malformed("bytes after the property block"));
    }
    Ok(props.take_message(false))
}

pub use mqttbytes::QoS;

/// The protocol revision a client connected with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// MQTT 3.1: protocol name `MQIsdp`, level 3.
    V31,
    /// MQTT 3.1.1: protocol name `MQTT`, level 4.
    V311,
    /// MQTT 5.0: protocol name `MQTT`, level 5.
    V5,
}

/// A decoded CONNECT packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Connect {
    pub version: ProtocolVersion,
    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub clean_session: bool,
    pub keep_alive: u16,
    pub client_id: String,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    /// MQTT 5.0 CONNECT properties; the defaults for 3.1.1 and 3.1.
    pub props: ConnectProps,
}

/// MQTT 5.0 CONNECT properties (§3.1.2.11), with the specification's values for absent
/// ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectProps {
    /// Seconds; 0 = the session ends with the connection, `u32::MAX` = never.
    pub session_expiry: u32,
    /// QoS 1/2 PUBLISHes the client accepts unacknowledged; 65535 when absent, never 0.
    pub receive_maximum: u16,
    /// Largest packet the client accepts; `None` = no limit beyond the protocol's.
    pub maximum_packet_size: Option<u32>,
    /// Highest topic alias the client accepts from the server; 0 = none.
    pub topic_alias_maximum: u16,
    pub request_response_information: bool,
    /// true when absent.
    pub request_problem_information: bool,
    /// How many User Properties the CONNECT carried: they are checked, never kept (no
    /// use for them, and they come before authentication).
    pub user_property_count: u32,
    /// Enhanced authentication, which midge does not offer (CONNACK 0x8C).
    pub authentication_method: Option<String>,
}

impl Default for ConnectProps {
    fn default() -> Self {
        ConnectProps {
            session_expiry: 0,
            receive_maximum: 65535,
            maximum_packet_size: None,
            topic_alias_maximum: 0,
            request_response_information: false,
            request_problem_information: true,
            user_property_count: 0,
            authentication_method: None,
        }
    }
}

/// The will message carried by a CONNECT.
#[derive(Debug, Clone, PartialEq)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// MQTT 5.0 Will Delay Interval, seconds (0 for 3.1.1).
    pub delay: u32,
    /// MQTT 5.0 will properties that travel with the message.
    pub props: Option<Box<MessageProps>>,
}

/// The MQTT 5.0 properties of an application message (§3.3.2.3) that the server forwards
/// unchanged from publisher to subscribers. Boxed in `Option` where they are carried, so
/// that 3.1.1 messages and 5.0 messages without properties pay one pointer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageProps {
    /// Payload Format Indicator as sent: `Some(true)` (1) the payload is UTF-8,
    /// `Some(false)` (0) unspecified bytes; forwarded unaltered [MQTT-3.3.2-4].
    pub payload_format: Option<bool>,
    /// Message Expiry Interval as received, seconds.
    pub message_expiry: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    /// In the order received [MQTT-3.3.2-18], at their wire size.
    pub user_properties: UserProperties,
}

impl MessageProps {
    /// Heap bytes these properties hold, their box included.
    pub fn held_bytes(&self) -> usize {
        std::mem::size_of::<MessageProps>()
            + self.content_type.as_ref().map_or(0, String::len)
            + self.response_topic.as_ref().map_or(0, String::len)
            + self.correlation_data.as_ref().map_or(0, Bytes::len)
            + self.user_properties.held_bytes()
    }
}

/// A decoded PUBLISH packet. The payload shares the read buffer's memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// Empty when an MQTT 5.0 client sends only a topic alias. Shared with the other
    /// PUBLISHes of the same name this thread decoded lately (see `topic_cache`).
    pub topic: Arc<str>,
    /// 0 for QoS 0.
    pub pkid: u16,
    pub payload: Bytes,
    /// MQTT 5.0 Topic Alias, if sent (resolved by the PUBLISH handler).
    pub topic_alias: Option<u16>,
    pub props: Option<Box<MessageProps>>,
}

/// MQTT 5.0 subscription options (§3.8.3.1); 3.1.1 filters get the QoS and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// 0: send retained messages at subscribe; 1: only if the subscription is new; 2: never.
    pub retain_handling: u8,
}

impl SubscriptionOptions {
    /// The options as the MQTT 5.0 options byte (QoS in bits 0-1, No Local 2, Retain As
    /// Published 3, Retain Handling 4-5), the form the durable store keeps them in.
    pub fn to_byte(self) -> u8 {
        (self.qos as u8)
            | u8::from(self.no_local) << 2
            | u8::from(self.retain_as_published) << 3
            | (self.retain_handling & 3) << 4
    }

    /// Reads [`to_byte`](Self::to_byte)'s byte back; `None` for values it never writes.
    pub fn from_byte(b: u8) -> Option<SubscriptionOptions> {
        let retain_handling = (b >> 4) & 3;
        if b >> 6 != 0 || retain_handling == 3 {
            return None;
        }
        Some(SubscriptionOptions {
            qos: qos_from_u8(b & 3)?,
            no_local: b & 4 != 0,
            retain_as_published: b & 8 != 0,
            retain_handling,
        })
    }

    /// The options a 3.1.1 / 3.1 subscription has.
    pub fn qos(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Subscribe {
    pub pkid: u16,
    /// Topic filter and options, in packet order. Never empty.
    pub filters: Vec<(String, SubscriptionOptions)>,
    /// MQTT 5.0 Subscription Identifier (1..=268435455).
    pub subscription_id: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Unsubscribe {
    pub pkid: u16,
    /// Never empty.
    pub filters: Vec<String>,
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP, the one acknowledgement type both ways: decoded
/// from the client (the [`Packet`] variant says which), or owed and written to it (with an
/// [`AckKind`], see `Outbox::ack`). `reason` is 0 for 3.1.1, which has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub pkid: u16,
    pub reason: u8,
}

/// DISCONNECT from the client. `reason` is 0 for 3.1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnect {
    pub reason: u8,
    /// MQTT 5.0: a new Session Expiry Interval.
    pub session_expiry: Option<u32>,
}

/// The packets a client may send to a server.
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    Connect(Connect),
    Publish(Publish),
    PubAck(Ack),
    PubRec(Ack),
    PubRel(Ack),
    PubComp(Ack),
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
    PingReq,
    Disconnect(Disconnect),
    /// MQTT 5.0 AUTH (reason code). midge offers no enhanced authentication.
    Auth(u8),
}

/// Why a byte stream could not be decoded. Every variant ends the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes break the packet format (bad remaining length, reserved flags, bad
    /// string, QoS 3, packet id 0, missing payload, ...). The text says which rule.
    /// MQTT 5.0: reason code 0x81 (Malformed Packet).
    Malformed(&'static str),
    /// MQTT 5.0 only: the packet parses but holds what the protocol does not allow (a
    /// property twice, Receive Maximum 0, Subscription Identifier 0, Retain Handling 3, a
    /// reason code the packet may not carry, ...). Reason code 0x82 (Protocol Error). The
    /// text says which rule.
    ProtocolError(&'static str),
    /// The remaining length announced in the fixed header exceeds the configured maximum.
    PacketTooLarge { size: usize, max: usize },
    /// CONNECT with a protocol name we know but a level we do not (CONNACK 0x01).
    UnsupportedProtocolLevel(u8),
    /// CONNECT with an unknown protocol name: close without CONNACK [MQTT-3.1.2-1].
    InvalidProtocolName,
    /// A packet type only a server may send (CONNACK, SUBACK, ...), or type 0/15.
    UnexpectedPacketType(u8),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Malformed(why) => write!(f, "malformed packet: {why}"),
            DecodeError::ProtocolError(why) => write!(f, "protocol error: {why}"),
            DecodeError::PacketTooLarge { size, max } => {
                write!(f, "packet of {size} bytes exceeds max_packet_size {max}")
            }
            DecodeError::UnsupportedProtocolLevel(l) => {
                write!(f, "unsupported protocol level {l}")
            }
            DecodeError::InvalidProtocolName => write!(f, "invalid protocol name"),
            DecodeError::UnexpectedPacketType(t) => {
                write!(f, "packet type {t} is not allowed from a client")
            }
        }
    }
}

/// The largest remaining length the four-byte variable length encoding can express.
const MAX_REMAINING_LENGTH: usize = 268_435_455;

const CONNECT: u8 = 1;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PUBREC: u8 = 5;
const PUBREL: u8 = 6;
const PUBCOMP: u8 = 7;
const SUBSCRIBE: u8 = 8;
const UNSUBSCRIBE: u8 = 10;
const PINGREQ: u8 = 12;
const DISCONNECT: u8 = 14;
const AUTH: u8 = 15;

/// Decodes one client packet from the front of `buf`, consuming its bytes.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole packet. The remaining length is
/// checked against `max_packet_size` as soon as the fixed header is complete, before the
/// body is waited for, so a length field alone can never make us allocate.
pub fn decode(buf: &mut BytesMut, max_packet_size: usize) -> Result<Option<Packet>, DecodeError> {
    decode_packet(buf, max_packet_size, false)
}

/// [`decode`] for a connection whose CONNECT was MQTT 5.0: the same contract (`Ok(None)`
/// until a whole packet is there, `max_packet_size` checked against the remaining length
/// from the fixed header alone), with 5.0's packet formats: properties, reason codes,
/// subscription options and AUTH.
pub fn decode_v5(
    buf: &mut BytesMut,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    decode_packet(buf, max_packet_size, true)
}

fn decode_packet(
    buf: &mut BytesMut,
    max_packet_size: usize,
    v5: bool,
) -> Result<Option<Packet>, DecodeError> {
    let Some(&byte1) = buf.first() else {
        return Ok(None);
    };
    // The first byte alone tells whether the packet type and flags are acceptable: fail
    // before waiting for anything else.
    check_first_byte(byte1, v5)?;
    let Some((remaining, len_len)) = remaining_length(buf)? else {
        return Ok(None);
    };
    if remaining > max_packet_size {
        return Err(DecodeError::PacketTooLarge {
            size: remaining,
            max: max_packet_size,
        });
    }
    if v5 {
        v5::check_fixed_size(byte1 >> 4, remaining)?;
    } else {
        check_fixed_size(byte1 >> 4, remaining)?;
    }
    // At most 1 + 4 + 268_435_455: cannot overflow.
    let header_len = 1 + len_len;
    let frame_len = header_len + remaining;
    if buf.len() < frame_len {
        return Ok(None);
    }
    if let Some(ack) = short_ack(byte1, remaining, buf.get(header_len..frame_len)) {
        buf.advance(frame_len);
        return Ok(Some(ack));
    }
    if !v5 && byte1 >> 4 == PUBLISH {
        return parse_publish(byte1, buf, header_len, frame_len).map(|p| Some(Packet::Publish(p)));
    }
    let frame = buf.split_to(frame_len).freeze();
    if v5 {
        v5::decode_frame(byte1, frame.slice(header_len..)).map(Some)
    } else {
        decode_frame(byte1, len_len, remaining, frame).map(Some)
    }
}

/// Rejects packet types a client may not send and reserved flag values (3.1.1:
/// [MQTT-2.2.2-1] [MQTT-2.2.2-2]; 5.0: [MQTT-2.1.3-1], and AUTH exists).
fn check_first_byte(byte1: u8, v5: bool) -> Result<(), DecodeError> {
    let flags = byte1 & 0x0F;
    match byte1 >> 4 {
        PUBLISH => {
            let qos = (flags >> 1) & 0x03;
            if qos == 3 {
                return Err(DecodeError::Malformed("PUBLISH with QoS 3 [MQTT-3.3.1-4]"));
            }
            if qos == 0 && flags & 0x08 != 0 {
                return Err(DecodeError::Malformed(
                    "PUBLISH with DUP set on QoS 0 [MQTT-3.3.1-2]",
                ));
            }
            Ok(())
        }
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => {
            if flags == 0b0010 {
                Ok(())
            } else {
                Err(DecodeError::Malformed(
                    "fixed header flags of PUBREL/SUBSCRIBE/UNSUBSCRIBE must be 0010 [MQTT-2.2.2-1]",
                ))
            }
        }
        AUTH if !v5 => Err(DecodeError::UnexpectedPacketType(AUTH)),
        CONNECT | PUBACK | PUBREC | PUBCOMP | PINGREQ | DISCONNECT | AUTH => {
            if flags == 0 {
                Ok(())
            } else {
                Err(DecodeError::Malformed(
                    "reserved fixed header flags must be 0000 [MQTT-2.2.2-1]",
                ))
            }
        }
        other => Err(DecodeError::UnexpectedPacketType(other)),
    }
}

/// Packets whose remaining length is fixed are checked as soon as the header is known.
fn check_fixed_size(packet_type: u8, remaining: usize) -> Result<(), DecodeError> {
    match packet_type {
        PUBACK | PUBREC | PUBREL | PUBCOMP if remaining != 2 => Err(DecodeError::Malformed(
            "PUBACK/PUBREC/PUBREL/PUBCOMP remaining length must be 2",
        )),
        PINGREQ | DISCONNECT if remaining != 0 => Err(DecodeError::Malformed(
            "PINGREQ/DISCONNECT remaining length must be 0",
        )),
        _ => Ok(()),
    }
}

/// Decodes a whole frame (fixed header included) whose first byte has been checked; a
/// PUBLISH never comes here, it is parsed in place first (see [`parse_publish`]).
fn decode_frame(
    byte1: u8,
    len_len: usize,
    remaining: usize,
    frame: Bytes,
) -> Result<Packet, DecodeError> {
    let body = frame.slice(1 + len_len..);
    match byte1 >> 4 {
        CONNECT => connect::parse(body).map(Packet::Connect),
        PUBACK => parse_pkid(body).map(|pkid| Packet::PubAck(Ack { pkid, reason: 0 })),
        PUBREC => parse_pkid(body).map(|pkid| Packet::PubRec(Ack { pkid, reason: 0 })),
        PUBREL => parse_pkid(body).map(|pkid| Packet::PubRel(Ack { pkid, reason: 0 })),
        PUBCOMP => parse_pkid(body).map(|pkid| Packet::PubComp(Ack { pkid, reason: 0 })),
        SUBSCRIBE => parse_subscribe(body).map(Packet::Subscribe),
        UNSUBSCRIBE => parse_unsubscribe(byte1, len_len, remaining, frame).map(Packet::Unsubscribe),
        PINGREQ => Ok(Packet::PingReq),
        DISCONNECT => Ok(Packet::Disconnect(Disconnect {
            reason: 0,
            session_expiry: None,
        })),
        other => Err(DecodeError::UnexpectedPacketType(other)),
    }
}

pub fn qos_from_u8(value: u8) -> Option<QoS> {
    match value {
        0 => Some(QoS::AtMostOnce),
        1 => Some(QoS::AtLeastOnce),
        2 => Some(QoS::ExactlyOnce),
        _ => None,
    }
}

/// Payloads smaller than this are the packet's own copy, made as it is decoded, so that
/// a message kept in a queue or the retained store does not pin a whole read buffer;
/// larger ones mostly fill their buffer anyway and share it. (Not the outbox's
/// `SHARE_PAYLOAD_ON_WRITE_FROM`, which is about writing.)
pub const COPY_PAYLOAD_BELOW: usize = 4096;

/// A small payload as its own copy (see [`COPY_PAYLOAD_BELOW`]), a large one as it is.
fn own_if_small(payload: Bytes) -> Bytes {
    if payload.len() < COPY_PAYLOAD_BELOW {
        Bytes::copy_from_slice(&payload)
    } else {
        payload
    }
}

/// The hot path: an MQTT 3.1.1 PUBLISH, the frame `buf[..frame_len]` whose body starts at
/// `header_len`, taken off `buf`. The topic is the thread's shared copy of that name
/// (`topic_cache`); a small payload is copied straight out of the read buffer, which is
/// then only advanced (no shared handle to it is made and dropped for the packet); a
/// large one is split off and shared.
fn parse_publish(
    byte1: u8,
    buf: &mut BytesMut,
    header_len: usize,
    frame_len: usize,
) -> Result<Publish, DecodeError> {
    let body = buf.get(header_len..frame_len).unwrap_or_default();
    let (qos, topic, pkid, head) = publish_head(byte1, body, false)?;
    let payload = if body.len() < COPY_PAYLOAD_BELOW {
        let payload = Bytes::copy_from_slice(body.get(head..).unwrap_or_default());
        buf.advance(frame_len);
        payload
    } else {
        buf.split_to(frame_len).freeze().slice(header_len + head..)
    };
    Ok(Publish {
        dup: byte1 & 0x08 != 0,
        qos,
        retain: byte1 & 0x01 != 0,
        topic,
        pkid,
        payload,
        topic_alias: None,
        props: None,
    })
}

/// The shared name of a topic read back from the store (checked when it was published):
/// the `Arc<str>` this thread already holds for it when there is one (see
/// `topic_cache`), so a backlog read back does not allocate its topic per message.
pub fn stored_topic(name: &str) -> Arc<str> {
    topic_cache::intern(name.as_bytes(), |_| Ok(name)).unwrap_or_else(|_| Arc::from(name))
}

/// QoS, topic name and packet id from the front of a PUBLISH body, the same in 3.1.1 and
/// 5.0, and how many bytes they took: a packet id only for QoS 1 and 2, and never 0
/// ([MQTT-2.3.1-1], 5.0 [MQTT-2.2.1-3]). The topic is checked like every UTF-8 string
/// ([MQTT-1.5.3-1/2], 5.0 [MQTT-1.5.4-1/2]).
fn publish_head(
    byte1: u8,
    body: &[u8],
    v5: bool,
) -> Result<(QoS, Arc<str>, u16, usize), DecodeError> {
    let qos = qos_from_u8((byte1 >> 1) & 0x03)
        .ok_or(DecodeError::Malformed("PUBLISH with QoS 3 [MQTT-3.3.1-4]"))?;
    let truncated = DecodeError::Malformed("PUBLISH: missing or truncated topic name");
    let Some((len, rest)) = body.split_first_chunk::<2>() else {
        return Err(truncated);
    };
    let len = usize::from(u16::from_be_bytes(*len));
    let Some(raw) = rest.get(..len) else {
        return Err(truncated);
    };
    let (nul, bad) = reader::string_errors(v5);
    let topic = topic_cache::intern(raw, |raw| reader::utf8(raw, nul, bad))?;
    let mut used = 2 + len;
    let pkid = if qos == QoS::AtMostOnce {
        0
    } else {
        let Some(&pkid) = body.get(used..).and_then(|b| b.first_chunk::<2>()) else {
            return Err(DecodeError::Malformed("PUBLISH: missing packet identifier"));
        };
        let pkid = u16::from_be_bytes(pkid);
        if pkid == 0 {
            return Err(DecodeError::Malformed(
                "PUBLISH: packet identifier 0 [MQTT-2.3.1-1] (5.0: [MQTT-2.2.1-3])",
            ));
        }
        used += 2;
        pkid
    };
    Ok((qos, topic, pkid, used))
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP: the remaining length was checked to be 2.
fn parse_pkid(body: Bytes) -> Result<u16, DecodeError> {
    let mut r = Reader::new(body);
    let pkid = r.u16("acknowledgement without packet identifier")?;
    r.finish("acknowledgement longer than 2 bytes")?;
    Ok(pkid)
}

/// Our own parser: `mqttbytes` masks the reserved option bits away instead of rejecting
/// them and accepts packet id 0 and an empty filter list.
fn parse_subscribe(body: Bytes) -> Result<Subscribe, DecodeError> {
    let mut r = Reader::new(body);
    let pkid = r.u16("SUBSCRIBE: missing packet identifier")?;
    if pkid == 0 {
        return Err(DecodeError::Malformed(
            "SUBSCRIBE: packet identifier 0 [MQTT-2.3.1-1]",
        ));
    }
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string("SUBSCRIBE: truncated topic filter")?;
        let options = r.u8("SUBSCRIBE: topic filter without requested QoS")?;
        if options & 0xFC != 0 {
            return Err(DecodeError::Malformed(
                "SUBSCRIBE: reserved bits of the requested QoS byte set [MQTT-3.8.3-4]",
            ));
        }
        let qos = qos_from_u8(options).ok_or(DecodeError::Malformed(
            "SUBSCRIBE: requested QoS 3 [MQTT-3.8.3-4]",
        ))?;
        filters.push((filter, SubscriptionOptions::qos(qos)));
    }
    if filters.is_empty() {
        return Err(DecodeError::Malformed(
            "SUBSCRIBE without topic filter [MQTT-3.8.3-3]",
        ));
    }
    Ok(Subscribe {
        pkid,
        filters,
        subscription_id: None,
    })
}

/// `mqttbytes` reads the body (bounds-checked, UTF-8 checked); we add what it lacks.
fn parse_unsubscribe(
    byte1: u8,
    len_len: usize,
    remaining: usize,
    frame: Bytes,
) -> Result<Unsubscribe, DecodeError> {
    // `Unsubscribe::read` skips the fixed header and trusts `remaining` to be the length
    // of what follows it, which `decode` guarantees.
    let header = mqttbytes::FixedHeader::new(byte1, len_len, remaining);
    let unsubscribe = mqttbytes::v4::Unsubscribe::read(header, frame).map_err(|e| match e {
        mqttbytes::Error::TopicNotUtf8 => {
            DecodeError::Malformed("UNSUBSCRIBE: topic filter is not valid UTF-8 [MQTT-1.5.3-1]")
        }
        _ => DecodeError::Malformed(
            "UNSUBSCRIBE: missing packet identifier or truncated topic filter",
        ),
    })?;
    if unsubscribe.pkid == 0 {
        return Err(DecodeError::Malformed(
            "UNSUBSCRIBE: packet identifier 0 [MQTT-2.3.1-1]",
        ));
    }
    if unsubscribe.topics.is_empty() {
        return Err(DecodeError::Malformed(
            "UNSUBSCRIBE without topic filter [MQTT-3.10.3-2]",
        ));
    }
    if unsubscribe.topics.iter().any(|t| t.contains('\0')) {
        return Err(DecodeError::Malformed(
            "UNSUBSCRIBE: topic filter contains U+0000 [MQTT-1.5.3-2]",
        ));
    }
    Ok(Unsubscribe {
        pkid: unsubscribe.pkid,
        filters: unsubscribe.topics,
    })
}
