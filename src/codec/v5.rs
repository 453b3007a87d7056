//! MQTT 5.0 packet bodies a client sends, other than CONNECT (`connect.rs` reads all
//! versions): the fixed header rules, PUBLISH, the four acknowledgements, SUBSCRIBE,
//! UNSUBSCRIBE, DISCONNECT and AUTH. Property blocks are read by `properties.rs`.
//!
//! Reason codes outside the packet's table are a Protocol Error: the packet parses, but
//! its sender broke "MUST use one of the ... Reason Codes" ([MQTT-3.4.2-1] and the like),
//! which is what §1.2 calls a Protocol Error.

use bytes::Bytes;

use super::properties::{self, Block};
use super::{
    connect, qos_from_u8, Ack, DecodeError, Disconnect, Packet, Publish, Reader, Subscribe,
    SubscriptionOptions, Unsubscribe, AUTH, CONNECT, DISCONNECT, PINGREQ, PUBACK, PUBCOMP, PUBLISH,
    PUBREC, PUBREL, SUBSCRIBE, UNSUBSCRIBE,
};

/// Remaining lengths that are wrong whatever follows, checked from the header.
pub(super) fn check_fixed_size(packet_type: u8, remaining: usize) -> Result<(), DecodeError> {
    match packet_type {
        PUBACK | PUBREC | PUBREL | PUBCOMP if remaining < 2 => Err(DecodeError::Malformed(
            "PUBACK/PUBREC/PUBREL/PUBCOMP without packet identifier (MQTT 5.0 §3.4.2)",
        )),
        PINGREQ if remaining != 0 => Err(DecodeError::Malformed(
            "PINGREQ remaining length must be 0 (MQTT 5.0 §3.12)",
        )),
        _ => Ok(()),
    }
}

/// Decodes the body (everything after the fixed header) of a frame whose first byte has
/// been checked.
pub(super) fn decode_frame(byte1: u8, body: Bytes) -> Result<Packet, DecodeError> {
    match byte1 >> 4 {
        CONNECT => connect::parse(body).map(Packet::Connect),
        PUBLISH => parse_publish(byte1, body).map(Packet::Publish),
        PUBACK => parse_ack(PUBACK, body).map(Packet::PubAck),
        PUBREC => parse_ack(PUBREC, body).map(Packet::PubRec),
        PUBREL => parse_ack(PUBREL, body).map(Packet::PubRel),
        PUBCOMP => parse_ack(PUBCOMP, body).map(Packet::PubComp),
        SUBSCRIBE => parse_subscribe(body).map(Packet::Subscribe),
        UNSUBSCRIBE => parse_unsubscribe(body).map(Packet::Unsubscribe),
        PINGREQ => Ok(Packet::PingReq),
        DISCONNECT => parse_disconnect(body).map(Packet::Disconnect),
        AUTH => parse_auth(body).map(Packet::Auth),
        other => Err(DecodeError::UnexpectedPacketType(other)),
    }
}

/// Topic, packet identifier, properties, payload (a large one a slice of the frame, a
/// small one its own copy: see `COPY_PAYLOAD_BELOW`).
///
/// Left to the PUBLISH handler, which knows the connection: the Topic Alias value (0 or
/// above its maximum: 0x94), an empty topic with or without alias, wildcards in the
/// topic, a payload that does not match its Payload Format Indicator.
fn parse_publish(byte1: u8, body: Bytes) -> Result<Publish, DecodeError> {
    let (qos, topic, pkid, head) = super::publish_head(byte1, &body, true)?;
    let mut r = Reader::new_v5(body.slice(head..));
    let mut props = properties::parse(&mut r, Block::Publish)?;
    Ok(Publish {
        dup: byte1 & 0x08 != 0,
        qos,
        retain: byte1 & 0x01 != 0,
        topic,
        pkid,
        topic_alias: props.topic_alias,
        props: props.take_message(false),
        payload: super::own_if_small(r.rest()),
    })
}

/// PUBACK / PUBREC: Table 3-4 / 3-5.
const PUBACK_REASONS: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
/// PUBREL / PUBCOMP: Table 3-6 / 3-7.
const PUBREL_REASONS: &[u8] = &[0x00, 0x92];
/// DISCONNECT: Table 3-10 (and the DISCONNECT column of Table 2-6). The codes the table
/// marks as sent by the Server only are accepted from a client too: they carry no
/// meaning the server could misread, and the connection closes either way.
const DISCONNECT_REASONS: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8C, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94,
    0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
/// AUTH: Table 3-11.
const AUTH_REASONS: &[u8] = &[0x00, 0x18, 0x19];

/// PUBACK, PUBREC, PUBREL, PUBCOMP: packet identifier, then (remaining length 3) a reason
/// code, then (4 and more) a property block; absent means 0x00 Success (§3.4.2.1).
fn parse_ack(packet_type: u8, body: Bytes) -> Result<Ack, DecodeError> {
    let mut r = Reader::new_v5(body);
    let pkid = r.u16("acknowledgement without packet identifier (MQTT 5.0 §3.4.2)")?;
    let reason = if r.is_empty() {
        0
    } else {
        r.u8("acknowledgement without reason code (MQTT 5.0 §3.4.2.1)")?
    };
    let (allowed, why) = match packet_type {
        PUBACK => (
            PUBACK_REASONS,
            "PUBACK reason code not in Table 3-4 [MQTT-3.4.2-1]",
        ),
        PUBREC => (
            PUBACK_REASONS,
            "PUBREC reason code not in Table 3-5 [MQTT-3.5.2-1]",
        ),
        PUBREL => (
            PUBREL_REASONS,
            "PUBREL reason code not in Table 3-6 [MQTT-3.6.2-1]",
        ),
        _ => (
            PUBREL_REASONS,
            "PUBCOMP reason code not in Table 3-7 [MQTT-3.7.2-1]",
        ),
    };
    if !allowed.contains(&reason) {
        return Err(DecodeError::ProtocolError(why));
    }
    if !r.is_empty() {
        properties::parse(&mut r, Block::Ack)?;
        r.finish("acknowledgement: bytes after the properties (MQTT 5.0 §3.4.3)")?;
    }
    Ok(Ack { pkid, reason })
}

/// Packet identifier, properties (Subscription Identifier, User Property), then topic
/// filters, each with its Subscription Options byte (§3.8.3.1).
///
/// Left to the SUBSCRIBE handler: the filters themselves (empty, misplaced wildcards,
/// shared subscription syntax) and whether Subscription Identifiers, wildcards and
/// shared subscriptions are supported.
fn parse_subscribe(body: Bytes) -> Result<Subscribe, DecodeError> {
    let mut r = Reader::new_v5(body);
    let pkid = r.u16("SUBSCRIBE: missing packet identifier (MQTT 5.0 §3.8.2)")?;
    if pkid == 0 {
        return Err(DecodeError::Malformed(
            "SUBSCRIBE: packet identifier 0 [MQTT-2.2.1-3]",
        ));
    }
    let props = properties::parse(&mut r, Block::Subscribe)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string("SUBSCRIBE: truncated topic filter [MQTT-3.8.3-1]")?;
        let options =
            r.u8("SUBSCRIBE: topic filter without subscription options (MQTT 5.0 §3.8.3)")?;
        let opts = subscription_options(options)?;
        if opts.no_local && filter.starts_with("$share/") {
            return Err(DecodeError::ProtocolError(
                "SUBSCRIBE: No Local on a shared subscription [MQTT-3.8.3-4]",
            ));
        }
        filters.push((filter, opts));
    }
    if filters.is_empty() {
        return Err(DecodeError::ProtocolError(
            "SUBSCRIBE without topic filter [MQTT-3.8.3-2]",
        ));
    }
    Ok(Subscribe {
        pkid,
        filters,
        subscription_id: props.subscription_id,
    })
}

/// Bits 0-1 Maximum QoS, 2 No Local, 3 Retain As Published, 4-5 Retain Handling, 6-7
/// reserved.
fn subscription_options(options: u8) -> Result<SubscriptionOptions, DecodeError> {
    if options & 0xC0 != 0 {
        return Err(DecodeError::Malformed(
            "SUBSCRIBE: reserved bits of the subscription options set [MQTT-3.8.3-5]",
        ));
    }
    let qos = qos_from_u8(options & 0x03).ok_or(DecodeError::ProtocolError(
        "SUBSCRIBE: Maximum QoS 3 (MQTT 5.0 §3.8.3.1)",
    ))?;
    let retain_handling = (options >> 4) & 0x03;
    if retain_handling == 3 {
        return Err(DecodeError::ProtocolError(
            "SUBSCRIBE: Retain Handling 3 (MQTT 5.0 §3.8.3.1)",
        ));
    }
    Ok(SubscriptionOptions {
        qos,
        no_local: options & 0x04 != 0,
        retain_as_published: options & 0x08 != 0,
        retain_handling,
    })
}

/// Packet identifier, properties (User Property only), then topic filters.
fn parse_unsubscribe(body: Bytes) -> Result<Unsubscribe, DecodeError> {
    let mut r = Reader::new_v5(body);
    let pkid = r.u16("UNSUBSCRIBE: missing packet identifier (MQTT 5.0 §3.10.2)")?;
    if pkid == 0 {
        return Err(DecodeError::Malformed(
            "UNSUBSCRIBE: packet identifier 0 [MQTT-2.2.1-3]",
        ));
    }
    properties::parse(&mut r, Block::Unsubscribe)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(r.string("UNSUBSCRIBE: truncated topic filter [MQTT-3.10.3-1]")?);
    }
    if filters.is_empty() {
        return Err(DecodeError::ProtocolError(
            "UNSUBSCRIBE without topic filter [MQTT-3.10.3-2]",
        ));
    }
    Ok(Unsubscribe { pkid, filters })
}

/// Remaining length 0: 0x00 Normal disconnection; 1: a reason code; more: reason code and
/// properties (Session Expiry Interval, Reason String, User Property) (§3.14.2).
///
/// Left to the handler: a non-zero Session Expiry Interval after a CONNECT with 0.
fn parse_disconnect(body: Bytes) -> Result<Disconnect, DecodeError> {
    let mut r = Reader::new_v5(body);
    if r.is_empty() {
        return Ok(Disconnect {
            reason: 0,
            session_expiry: None,
        });
    }
    let reason = r.u8("DISCONNECT without reason code (MQTT 5.0 §3.14.2.1)")?;
    if !DISCONNECT_REASONS.contains(&reason) {
        return Err(DecodeError::ProtocolError(
            "DISCONNECT reason code not in Table 3-10 [MQTT-3.14.2-1]",
        ));
    }
    let mut session_expiry = None;
    if !r.is_empty() {
        session_expiry = properties::parse(&mut r, Block::Disconnect)?.session_expiry;
        r.finish("DISCONNECT: bytes after the properties (MQTT 5.0 §3.14.3)")?;
    }
    Ok(Disconnect {
        reason,
        session_expiry,
    })
}

/// Remaining length 0: 0x00 Success; otherwise a reason code and properties
/// (Authentication Method, Authentication Data, Reason String, User Property) (§3.15.2).
/// Returns the reason code: midge offers no enhanced authentication, the handler refuses
/// any AUTH.
fn parse_auth(body: Bytes) -> Result<u8, DecodeError> {
    let mut r = Reader::new_v5(body);
    if r.is_empty() {
        return Ok(0);
    }
    let reason = r.u8("AUTH without reason code (MQTT 5.0 §3.15.2.1)")?;
    if !AUTH_REASONS.contains(&reason) {
        return Err(DecodeError::ProtocolError(
            "AUTH reason code not in Table 3-11 [MQTT-3.15.2-1]",
        ));
    }
    let mut has_method = false;
    let has_props = !r.is_empty();
    if has_props {
        has_method = properties::parse(&mut r, Block::Auth)?
            .authentication_method
            .is_some();
        r.finish("AUTH: bytes after the properties (MQTT 5.0 §3.15.3)")?;
    }
    // Only "0x00 and no properties" may leave the method out (§3.15.2.1).
    if !has_method && (reason != 0 || has_props) {
        return Err(DecodeError::ProtocolError(
            "AUTH without Authentication Method (MQTT 5.0 §3.15.2.2.2)",
        ));
    }
    Ok(reason)
}
