//! CONNECT, our own parser: `mqttbytes` knows neither MQTT 3.1 nor the reserved flag, and
//! reads the password as a UTF-8 string.

use bytes::Bytes;

use super::{qos_from_u8, Connect, DecodeError, ProtocolVersion, Reader, Will};

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
/// without a username is refused for both versions, as Mosquitto does.
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
        // MQTT 5.0: parsed far enough (properties skipped) to authenticate the client and
        // answer in 5.0's CONNACK format; the connect handler then refuses it with 0x84
        // until MQTT 5.0 sessions are implemented.
        (true, 5) => ProtocolVersion::V5,
        (_, level) => return Err(DecodeError::UnsupportedProtocolLevel(level)),
    };
    let strict = version != ProtocolVersion::V31;

    let flags = r.u8("CONNECT: missing connect flags")?;
    if strict && flags & RESERVED != 0 {
        return Err(DecodeError::Malformed(
            "CONNECT: reserved connect flag set [MQTT-3.1.2-3]",
        ));
    }
    let will_flag = flags & WILL != 0;
    let will_qos = qos_from_u8((flags >> 3) & 0x03).ok_or(DecodeError::Malformed(
        "CONNECT: will QoS 3 [MQTT-3.1.2-14]",
    ))?;
    let will_retain = flags & WILL_RETAIN != 0;
    if strict && !will_flag && (will_qos != super::QoS::AtMostOnce || will_retain) {
        return Err(DecodeError::Malformed(
            "CONNECT: will QoS or will retain set without will flag [MQTT-3.1.2-11/13/15]",
        ));
    }
    let username_flag = flags & USERNAME != 0;
    let password_flag = flags & PASSWORD != 0;
    if password_flag && !username_flag {
        return Err(DecodeError::Malformed(
            "CONNECT: password flag set without username flag [MQTT-3.1.2-22]",
        ));
    }

    let keep_alive = r.u16("CONNECT: missing keep alive")?;
    if version == ProtocolVersion::V5 {
        r.skip_properties("CONNECT: missing or truncated properties")?;
    }
    let client_id = r.string("CONNECT: missing or truncated client identifier")?;

    let will = if will_flag {
        if version == ProtocolVersion::V5 {
            r.skip_properties("CONNECT: missing or truncated will properties")?;
        }
        let topic = r.string("CONNECT: missing or truncated will topic")?;
        let payload = r.binary("CONNECT: missing or truncated will message")?;
        Some(Will {
            topic,
            // A copy, so the will kept for the whole session does not pin the read buffer.
            payload: Bytes::copy_from_slice(&payload),
            qos: will_qos,
            retain: will_retain,
            delay: 0,
            props: None,
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
        props: super::ConnectProps::default(),
    })
}
