//! The MQTT wire format, behind one module.
//!
//! Everything that turns bytes into packets and packets into bytes lives here, so the rest
//! of the broker never sees the codec crate and the codec can be extended (MQTT 5.0
//! properties, AUTH) or replaced without touching routing.
//!
//! We use `mqttbytes` where it is strict enough (SUBSCRIBE, UNSUBSCRIBE bodies and the
//! encoders of the small acknowledgement packets) and our own code where it falls short of
//! the specification: it has no MQTT 3.1 (`MQIsdp`, level 3) CONNECT, does not check the
//! reserved fixed-header flags or the reserved CONNECT flag, reads passwords as UTF-8
//! strings, and copies every PUBLISH topic into a `String` on the hot path.

use bytes::{Bytes, BytesMut};

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
    pub clean_session: bool,
    pub keep_alive: u16,
    pub client_id: String,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Bytes>,
}

/// The will message carried by a CONNECT.
#[derive(Debug, Clone, PartialEq)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
}

/// A decoded PUBLISH packet. The payload shares the read buffer's memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    pub topic: String,
    /// 0 for QoS 0.
    pub pkid: u16,
    pub payload: Bytes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Subscribe {
    pub pkid: u16,
    /// Topic filter and requested QoS, in packet order. Never empty.
    pub filters: Vec<(String, QoS)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Unsubscribe {
    pub pkid: u16,
    /// Never empty.
    pub filters: Vec<String>,
}

/// The packets a client may send to a server.
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    Connect(Connect),
    Publish(Publish),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
    PingReq,
    Disconnect,
}

/// Why a byte stream could not be decoded. Every variant ends the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes break the packet format (bad remaining length, reserved flags, bad
    /// string, QoS 3, packet id 0, missing payload, ...). The text says which rule.
    Malformed(&'static str),
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

/// Decodes one client packet from the front of `buf`, consuming its bytes.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole packet. The remaining length is
/// checked against `max_packet_size` as soon as the fixed header is complete, before the
/// body is waited for, so a length field alone can never make us allocate.
pub fn decode(buf: &mut BytesMut, max_packet_size: usize) -> Result<Option<Packet>, DecodeError> {
    todo!()
}

pub fn encode_connack(buf: &mut BytesMut, session_present: bool, code: u8) {
    todo!()
}

/// Encodes an outgoing PUBLISH. `pkid` is ignored for QoS 0.
pub fn encode_publish(
    buf: &mut BytesMut,
    topic: &str,
    payload: &[u8],
    qos: QoS,
    pkid: u16,
    retain: bool,
    dup: bool,
) {
    todo!()
}

pub fn encode_puback(buf: &mut BytesMut, pkid: u16) {
    todo!()
}

pub fn encode_pubrec(buf: &mut BytesMut, pkid: u16) {
    todo!()
}

pub fn encode_pubrel(buf: &mut BytesMut, pkid: u16) {
    todo!()
}

pub fn encode_pubcomp(buf: &mut BytesMut, pkid: u16) {
    todo!()
}

/// `codes` holds one return code per filter: granted QoS 0-2 or 0x80 for failure.
pub fn encode_suback(buf: &mut BytesMut, pkid: u16, codes: &[u8]) {
    todo!()
}

pub fn encode_unsuback(buf: &mut BytesMut, pkid: u16) {
    todo!()
}

pub fn encode_pingresp(buf: &mut BytesMut) {
    todo!()
}
