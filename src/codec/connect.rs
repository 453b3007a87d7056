//! CONNECT, our own parser: `mqttbytes` knows neither MQTT 3.1 nor the reserved flag, and
//! reads the password as a UTF-8 string. One parser for the three versions; `decode` and
//! `decode_v5` both use it.

use bytes::Bytes;

use super::properties::{self, Block};
use super::{qos_from_u8, Connect, ConnectProps, DecodeError, ProtocolVersion, Reader, Will};

const RESERVED: u8 = 0x01;
const CLEAN_SESSION: u8 = 0x02;
const WILL: u8 = 0x04;
const WILL_RETAIN: u8 = 0x20;
const PASSWORD: u8 = 0x40;
const USERNAME: u8 = 0x80;

/// Parses a CONNECT body (everything after the fixed header).
///
/// MQTT 3.1 (`MQIsdp`, level 3) is accepted as Mosquitto accepts it: the 3.1.1 rules on the
/// reserved flag [MQTT-3.1.2-3] and on will QoS / will retain without a will
/// [MQTT-3.1.2-11/13/15] are not applied to it, and a username or password whose flag is
/// set but which is missing because the packet ends there is taken as absent. A password
/// without a username is refused for 3.1 and 3.1.1, as Mosquitto does.
///
/// MQTT 5.0 (`MQTT`, level 5) applies the 3.1.1 rules on the reserved flag
/// [MQTT-3.1.2-3] and on will QoS / will retain without a will [MQTT-3.1.2-11/13], allows
/// a password without a username (§3.1.2.9), and reads the CONNECT properties into
/// [`ConnectProps`] and the will properties into [`Will::delay`] and [`Will::props`]
/// (Authentication Data is checked and dropped: midge offers no enhanced
/// authentication).
pub(super) fn parse(body: Bytes) -> Result<Connect, DecodeError> {
    let mut r = Reader::new(body);

    let name = r.binary("CONNECT: missing or truncated protocol name")?;
    let mqtt = match &name[..] {
        b"MQTT" => true,
        b"MQIsdp" => false,
        // Closed without CONNACK [MQTT-3.1.2-1].
        _ => return Err(DecodeError::InvalidProtocolName),
    };
    let level = r.u8("CONNECT: missing protocol level")?;
    let version = match (mqtt, level) {
        (true, 4) => ProtocolVersion::V311,
        (false, 3) => ProtocolVersion::V31,
        (true, 5) => ProtocolVersion::V5,
        (_, level) => return Err(DecodeError::UnsupportedProtocolLevel(level)),
    };
    let strict = version != ProtocolVersion::V31;
    let v5 = version == ProtocolVersion::V5;
    if v5 {
        r.set_v5();
    }

    let flags = r.u8("CONNECT: missing connect flags")?;
    if strict && flags & RESERVED != 0 {
        return Err(DecodeError::Malformed(
            "CONNECT: reserved connect flag set [MQTT-3.1.2-3]",
        ));
    }
    let will_flag = flags & WILL != 0;
    let will_qos = qos_from_u8((flags >> 3) & 0x03).ok_or(DecodeError::Malformed(if v5 {
        "CONNECT: will QoS 3 [MQTT-3.1.2-12]"
    } else {
        "CONNECT: will QoS 3 [MQTT-3.1.2-14]"
    }))?;
    let will_retain = flags & WILL_RETAIN != 0;
    if strict && !will_flag && (will_qos != super::QoS::AtMostOnce || will_retain) {
        return Err(DecodeError::Malformed(if v5 {
            "CONNECT: will QoS or will retain set without will flag [MQTT-3.1.2-11/13]"
        } else {
            "CONNECT: will QoS or will retain set without will flag [MQTT-3.1.2-11/13/15]"
        }));
    }
    let username_flag = flags & USERNAME != 0;
    let password_flag = flags & PASSWORD != 0;
    // MQTT 5.0 allows a password without a username (§3.1.2.9, non-normative comment).
    if password_flag && !username_flag && !v5 {
        return Err(DecodeError::Malformed(
            "CONNECT: password flag set without username flag [MQTT-3.1.2-22]",
        ));
    }

    let keep_alive = r.u16("CONNECT: missing keep alive")?;
    let props = if v5 {
        connect_props(&mut r)?
    } else {
        ConnectProps::default()
    };
    let client_id = r.string("CONNECT: missing or truncated client identifier")?;

    let will = if will_flag {
        let (delay, props) = if v5 {
            let mut p = properties::parse(&mut r, Block::Will)?;
            (p.will_delay.unwrap_or(0), p.take_message(true))
        } else {
            (0, None)
        };
        let topic = r.string("CONNECT: missing or truncated will topic")?;
        let payload = r.binary("CONNECT: missing or truncated will message")?;
        Some(Will {
            topic,
            // A copy, so the will kept for the whole session does not pin the read buffer.
            payload: Bytes::copy_from_slice(&payload),
            qos: will_qos,
            retain: will_retain,
            delay,
            props,
        })
    } else {
        None
    };

    let username = if username_flag && (strict || !r.is_empty()) {
        Some(r.string("CONNECT: missing or truncated username")?)
    } else {
        None
    };
    // Binary data, not a string: any bytes are accepted.
    let password = if password_flag && (strict || !r.is_empty()) {
        let password = r.binary("CONNECT: missing or truncated password")?;
        Some(Bytes::copy_from_slice(&password))
    } else {
        None
    };

    r.finish("CONNECT: trailing bytes after the payload")?;

    Ok(Connect {
        version,
        clean_session: flags & CLEAN_SESSION != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
        props,
    })
}

/// The CONNECT properties (§3.1.2.11), absent ones at the specification's defaults.
fn connect_props(r: &mut Reader) -> Result<ConnectProps, DecodeError> {
    let p = properties::parse(r, Block::Connect)?;
    if p.has_authentication_data && p.authentication_method.is_none() {
        return Err(DecodeError::ProtocolError(
            "CONNECT: Authentication Data without Authentication Method (MQTT 5.0 §3.1.2.11.10)",
        ));
    }
    let defaults = ConnectProps::default();
    Ok(ConnectProps {
        session_expiry: p.session_expiry.unwrap_or(defaults.session_expiry),
        receive_maximum: p.receive_maximum.unwrap_or(defaults.receive_maximum),
        maximum_packet_size: p.maximum_packet_size,
        topic_alias_maximum: p
            .topic_alias_maximum
            .unwrap_or(defaults.topic_alias_maximum),
        request_response_information: p
            .request_response_information
            .unwrap_or(defaults.request_response_information),
        request_problem_information: p
            .request_problem_information
            .unwrap_or(defaults.request_problem_information),
        user_property_count: p.user_property_count,
        authentication_method: p.authentication_method,
    })
}
