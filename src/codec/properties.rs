//! MQTT 5.0 properties (§2.2.2): the property block of every packet a client sends.
//!
//! A block is a Variable Byte Integer length and that many bytes of properties, each an
//! identifier and a value of the identifier's type. The rules, and how a breach is
//! classified (§4.13: 0x81 Malformed Packet or 0x82 Protocol Error):
//!
//! - the block length or a value running past the bytes present, a value that is not of
//!   its type (bad UTF-8, U+0000), an identifier that is not valid for the packet
//!   (Table 2-4): **Malformed** (§2.2.2.2, [MQTT-1.5.4-1], [MQTT-1.5.7-1]);
//! - a property other than User Property twice, a value out of its range (Receive
//!   Maximum 0, Payload Format Indicator 2, Subscription Identifier 0, ...): **Protocol
//!   Error**, as each property's section says.
//!
//! Values the handlers check against connection state (Topic Alias against the Topic
//! Alias Maximum, a DISCONNECT Session Expiry Interval against the CONNECT one) are passed
//! through.

use bytes::Bytes;

use super::{DecodeError, MessageProps, Reader, UserProperties};

pub(super) const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
pub(super) const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
pub(super) const CONTENT_TYPE: u8 = 0x03;
pub(super) const RESPONSE_TOPIC: u8 = 0x08;
pub(super) const CORRELATION_DATA: u8 = 0x09;
pub(super) const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
pub(super) const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
pub(super) const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
pub(super) const SERVER_KEEP_ALIVE: u8 = 0x13;
pub(super) const AUTHENTICATION_METHOD: u8 = 0x15;
pub(super) const AUTHENTICATION_DATA: u8 = 0x16;
pub(super) const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
pub(super) const WILL_DELAY_INTERVAL: u8 = 0x18;
pub(super) const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
pub(super) const RESPONSE_INFORMATION: u8 = 0x1A;
pub(super) const SERVER_REFERENCE: u8 = 0x1C;
pub(super) const REASON_STRING: u8 = 0x1F;
pub(super) const RECEIVE_MAXIMUM: u8 = 0x21;
pub(super) const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
pub(super) const TOPIC_ALIAS: u8 = 0x23;
pub(super) const MAXIMUM_QOS: u8 = 0x24;
pub(super) const RETAIN_AVAILABLE: u8 = 0x25;
pub(crate) const USER_PROPERTY: u8 = 0x26;
pub(super) const MAXIMUM_PACKET_SIZE: u8 = 0x27;
pub(super) const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
pub(super) const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
pub(super) const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

/// The largest Subscription Identifier, the largest Variable Byte Integer (§3.8.2.1.2).
pub(super) const MAX_SUBSCRIPTION_ID: u32 = 268_435_455;

/// Which property block is being read: decides the identifiers that are valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Block {
    Connect,
    Will,
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    Ack,
    Subscribe,
    Unsubscribe,
    Disconnect,
    Auth,
}

const fn mask(ids: &[u8]) -> u64 {
    let mut m = 0u64;
    let mut i = 0;
    while i < ids.len() {
        m |= 1 << ids[i];
        i += 1;
    }
    m
}

impl Block {
    /// The identifiers Table 2-4 allows in this block (the server-only ones included where
    /// the table lists them for the packet; they are refused by value below).
    fn allowed(self) -> u64 {
        const CONNECT: u64 = mask(&[
            SESSION_EXPIRY_INTERVAL,
            RECEIVE_MAXIMUM,
            MAXIMUM_PACKET_SIZE,
            TOPIC_ALIAS_MAXIMUM,
            REQUEST_RESPONSE_INFORMATION,
            REQUEST_PROBLEM_INFORMATION,
            USER_PROPERTY,
            AUTHENTICATION_METHOD,
            AUTHENTICATION_DATA,
        ]);
        const WILL: u64 = mask(&[
            WILL_DELAY_INTERVAL,
            PAYLOAD_FORMAT_INDICATOR,
            MESSAGE_EXPIRY_INTERVAL,
            CONTENT_TYPE,
            RESPONSE_TOPIC,
            CORRELATION_DATA,
            USER_PROPERTY,
        ]);
        const PUBLISH: u64 = mask(&[
            PAYLOAD_FORMAT_INDICATOR,
            MESSAGE_EXPIRY_INTERVAL,
            TOPIC_ALIAS,
            RESPONSE_TOPIC,
            CORRELATION_DATA,
            USER_PROPERTY,
            SUBSCRIPTION_IDENTIFIER,
            CONTENT_TYPE,
        ]);
        const ACK: u64 = mask(&[REASON_STRING, USER_PROPERTY]);
        const SUBSCRIBE: u64 = mask(&[SUBSCRIPTION_IDENTIFIER, USER_PROPERTY]);
        const UNSUBSCRIBE: u64 = mask(&[USER_PROPERTY]);
        const DISCONNECT: u64 = mask(&[
            SESSION_EXPIRY_INTERVAL,
            REASON_STRING,
            USER_PROPERTY,
            SERVER_REFERENCE,
        ]);
        const AUTH: u64 = mask(&[
            AUTHENTICATION_METHOD,
            AUTHENTICATION_DATA,
            REASON_STRING,
            USER_PROPERTY,
        ]);
        match self {
            Block::Connect => CONNECT,
            Block::Will => WILL,
            Block::Publish => PUBLISH,
            Block::Ack => ACK,
            Block::Subscribe => SUBSCRIBE,
            Block::Unsubscribe => UNSUBSCRIBE,
            Block::Disconnect => DISCONNECT,
            Block::Auth => AUTH,
        }
    }

    /// Whether the block's user properties are kept (they travel with a message) or only
    /// checked and counted. A CONNECT's own are not kept: nothing uses them, and they
    /// arrive before the client is authenticated.
    fn keeps_user_properties(self) -> bool {
        matches!(self, Block::Will | Block::Publish)
    }
}

/// The values of one property block; `None` / empty for what was absent. Reason String,
/// Authentication Data and the user properties of packets that do not carry them on are
/// checked and dropped.
#[derive(Debug, Default)]
pub(super) struct Props {
    pub payload_utf8: Option<bool>,
    pub message_expiry: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub subscription_id: Option<u32>,
    pub session_expiry: Option<u32>,
    pub authentication_method: Option<String>,
    pub has_authentication_data: bool,
    pub request_problem_information: Option<bool>,
    pub will_delay: Option<u32>,
    pub request_response_information: Option<bool>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_packet_size: Option<u32>,
    /// The wire encoding of the kept user properties (see [`UserProperties`]).
    user_wire: Vec<u8>,
    /// User properties in the block, kept or not.
    pub user_property_count: u32,
}

impl Props {
    /// The application message properties (PUBLISH, will), boxed, or `None` when none
    /// was sent. `copy`: the
    /// Correlation Data is copied out of the frame, for a will that is kept for the whole
    /// session and must not pin the read buffer.
    pub(super) fn take_message(&mut self, copy: bool) -> Option<Box<MessageProps>> {
        let payload_format = self.payload_utf8;
        if payload_format.is_none()
            && self.message_expiry.is_none()
            && self.content_type.is_none()
            && self.response_topic.is_none()
            && self.correlation_data.is_none()
            && self.user_wire.is_empty()
        {
            return None;
        }
        let correlation_data = self.correlation_data.take().map(|data| {
            if copy {
                Bytes::copy_from_slice(&data)
            } else {
                data
            }
        });
        Some(Box::new(MessageProps {
            payload_format,
            message_expiry: self.message_expiry,
            content_type: self.content_type.take(),
            response_topic: self.response_topic.take(),
            correlation_data,
            user_properties: UserProperties::from_wire(
                std::mem::take(&mut self.user_wire),
                self.user_property_count,
            ),
        }))
    }
}

const TRUNCATED: &str = "truncated property value (MQTT 5.0 §2.2.2.2)";

/// Reads a property block (its length, then the properties) from `r`.
pub(super) fn parse(r: &mut Reader, block: Block) -> Result<Props, DecodeError> {
    let len = r.varint("missing or truncated property length [MQTT-2.2.2-1]")?;
    let mut r = r.take(
        len,
        "property length runs past the end of the packet (MQTT 5.0 §2.2.2.1)",
    )?;
    let allowed = block.allowed();
    let keep_user = block.keeps_user_properties();
    let mut seen = 0u64;
    let mut p = Props::default();
    while !r.is_empty() {
        // Identifiers are Variable Byte Integers, but every defined one is below 128: a
        // first byte with the continuation bit is either an undefined identifier or a
        // non-minimal encoding [MQTT-1.5.5-1], invalid either way.
        let id = r.u8(TRUNCATED)?;
        if id >= 64 || allowed & (1 << id) == 0 {
            return Err(DecodeError::Malformed(
                "property identifier not valid for this packet (MQTT 5.0 §2.2.2.2, Table 2-4)",
            ));
        }
        if id != USER_PROPERTY {
            if seen & (1 << id) != 0 {
                return Err(DecodeError::ProtocolError(duplicate(id)));
            }
            seen |= 1 << id;
        }
        match id {
            PAYLOAD_FORMAT_INDICATOR => {
                p.payload_utf8 = Some(match r.u8(TRUNCATED)? {
                    0 => false,
                    1 => true,
                    _ => {
                        return Err(DecodeError::ProtocolError(
                            "Payload Format Indicator other than 0 or 1 (MQTT 5.0 §3.3.2.3.2)",
                        ))
                    }
                });
            }
            MESSAGE_EXPIRY_INTERVAL => p.message_expiry = Some(r.u32(TRUNCATED)?),
            CONTENT_TYPE => p.content_type = Some(r.string(TRUNCATED)?),
            RESPONSE_TOPIC => {
                let topic = r.string(TRUNCATED)?;
                if topic.is_empty() {
                    return Err(DecodeError::ProtocolError(
                        "empty Response Topic [MQTT-4.7.3-1]",
                    ));
                }
                if topic.contains(['+', '#']) {
                    return Err(DecodeError::ProtocolError(
                        "Response Topic contains a wildcard [MQTT-3.3.2-14]",
                    ));
                }
                p.response_topic = Some(topic);
            }
            CORRELATION_DATA => p.correlation_data = Some(r.binary(TRUNCATED)?),
            SUBSCRIPTION_IDENTIFIER => {
                let id = r.varint(TRUNCATED)?;
                if block == Block::Publish {
                    return Err(DecodeError::ProtocolError(
                        "PUBLISH from a client with a Subscription Identifier [MQTT-3.3.4-6]",
                    ));
                }
                if id == 0 {
                    return Err(DecodeError::ProtocolError(
                        "Subscription Identifier 0 (MQTT 5.0 §3.8.2.1.2)",
                    ));
                }
                // Four bytes hold at most MAX_SUBSCRIPTION_ID: the conversion cannot fail.
                p.subscription_id = u32::try_from(id).ok();
            }
            SESSION_EXPIRY_INTERVAL => p.session_expiry = Some(r.u32(TRUNCATED)?),
            AUTHENTICATION_METHOD => p.authentication_method = Some(r.string(TRUNCATED)?),
            AUTHENTICATION_DATA => {
                r.binary(TRUNCATED)?;
                p.has_authentication_data = true;
            }
            REQUEST_PROBLEM_INFORMATION => {
                p.request_problem_information = Some(zero_or_one(
                    r.u8(TRUNCATED)?,
                    "Request Problem Information other than 0 or 1 (MQTT 5.0 §3.1.2.11.7)",
                )?);
            }
            WILL_DELAY_INTERVAL => p.will_delay = Some(r.u32(TRUNCATED)?),
            REQUEST_RESPONSE_INFORMATION => {
                p.request_response_information = Some(zero_or_one(
                    r.u8(TRUNCATED)?,
                    "Request Response Information other than 0 or 1 (MQTT 5.0 §3.1.2.11.6)",
                )?);
            }
            SERVER_REFERENCE => {
                r.skip_string(TRUNCATED)?;
                return Err(DecodeError::ProtocolError(
                    "DISCONNECT from a client with a Server Reference (MQTT 5.0 §3.14.2.2.5)",
                ));
            }
            REASON_STRING => r.skip_string(TRUNCATED)?,
            RECEIVE_MAXIMUM => {
                let v = r.u16(TRUNCATED)?;
                if v == 0 {
                    return Err(DecodeError::ProtocolError(
                        "Receive Maximum 0 (MQTT 5.0 §3.1.2.11.3)",
                    ));
                }
                p.receive_maximum = Some(v);
            }
            TOPIC_ALIAS_MAXIMUM => p.topic_alias_maximum = Some(r.u16(TRUNCATED)?),
            TOPIC_ALIAS => p.topic_alias = Some(r.u16(TRUNCATED)?),
            USER_PROPERTY => {
                if keep_user {
                    p.user_wire.push(USER_PROPERTY);
                    r.string_pair_into(&mut p.user_wire, TRUNCATED)?;
                } else {
                    r.string_pair(false, TRUNCATED)?;
                }
                // At most one per 5 bytes of a 256 MiB packet: cannot overflow.
                p.user_property_count += 1;
            }
            MAXIMUM_PACKET_SIZE => {
                let v = r.u32(TRUNCATED)?;
                if v == 0 {
                    return Err(DecodeError::ProtocolError(
                        "Maximum Packet Size 0 (MQTT 5.0 §3.1.2.11.4)",
                    ));
                }
                p.maximum_packet_size = Some(v);
            }
            // `allowed` lets no other identifier through.
            _ => {
                return Err(DecodeError::Malformed(
                    "property identifier not valid for this packet (MQTT 5.0 §2.2.2.2, Table 2-4)",
                ))
            }
        }
    }
    Ok(p)
}

fn zero_or_one(v: u8, why: &'static str) -> Result<bool, DecodeError> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::ProtocolError(why)),
    }
}

/// "It is a Protocol Error to include the X more than once", in the section of each
/// property (for properties of several packets, the first one).
fn duplicate(id: u8) -> &'static str {
    match id {
        PAYLOAD_FORMAT_INDICATOR => {
            "Payload Format Indicator included more than once (MQTT 5.0 §3.3.2.3.2)"
        }
        MESSAGE_EXPIRY_INTERVAL => {
            "Message Expiry Interval included more than once (MQTT 5.0 §3.3.2.3.3)"
        }
        CONTENT_TYPE => "Content Type included more than once (MQTT 5.0 §3.3.2.3.9)",
        RESPONSE_TOPIC => "Response Topic included more than once (MQTT 5.0 §3.3.2.3.5)",
        CORRELATION_DATA => "Correlation Data included more than once (MQTT 5.0 §3.3.2.3.6)",
        SUBSCRIPTION_IDENTIFIER => {
            "Subscription Identifier included more than once (MQTT 5.0 §3.8.2.1.2)"
        }
        SESSION_EXPIRY_INTERVAL => {
            "Session Expiry Interval included more than once (MQTT 5.0 §3.1.2.11.2)"
        }
        AUTHENTICATION_METHOD => {
            "Authentication Method included more than once (MQTT 5.0 §3.1.2.11.9)"
        }
        AUTHENTICATION_DATA => {
            "Authentication Data included more than once (MQTT 5.0 §3.1.2.11.10)"
        }
        REQUEST_PROBLEM_INFORMATION => {
            "Request Problem Information included more than once (MQTT 5.0 §3.1.2.11.7)"
        }
        WILL_DELAY_INTERVAL => "Will Delay Interval included more than once (MQTT 5.0 §3.1.3.2.2)",
        REQUEST_RESPONSE_INFORMATION => {
            "Request Response Information included more than once (MQTT 5.0 §3.1.2.11.6)"
        }
        SERVER_REFERENCE => "Server Reference included more than once (MQTT 5.0 §3.14.2.2.5)",
        REASON_STRING => "Reason String included more than once (MQTT 5.0 §3.4.2.2.2)",
        RECEIVE_MAXIMUM => "Receive Maximum included more than once (MQTT 5.0 §3.1.2.11.3)",
        TOPIC_ALIAS_MAXIMUM => "Topic Alias Maximum included more than once (MQTT 5.0 §3.1.2.11.5)",
        TOPIC_ALIAS => "Topic Alias included more than once (MQTT 5.0 §3.3.2.3.4)",
        MAXIMUM_PACKET_SIZE => "Maximum Packet Size included more than once (MQTT 5.0 §3.1.2.11.4)",
        _ => "property included more than once (MQTT 5.0 §2.2.2.2)",
    }
}
