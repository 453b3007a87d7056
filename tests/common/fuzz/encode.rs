//! Client packets to bytes, as a client of the given version sends them (the codec only
//! encodes what a server sends).

use midge::codec::{Ack, Connect, MessageProps, Packet, ProtocolVersion, QoS};

use super::Extras;
use crate::common::packets::{frame, property_block, push_len, put_str};

/// A property block: its length, then the properties.
fn block(out: &mut Vec<u8>, props: Vec<u8>) {
    out.extend(property_block(&props));
}

fn user_props(p: &mut Vec<u8>, user: &[(String, String)]) {
    for (k, v) in user {
        p.push(0x26);
        put_str(p, k.as_bytes());
        put_str(p, v.as_bytes());
    }
}

fn message_props_bytes(p: &mut Vec<u8>, m: &MessageProps) {
    if let Some(f) = m.payload_format {
        p.extend([0x01, u8::from(f)]);
    }
    if let Some(e) = m.message_expiry {
        p.push(0x02);
        p.extend(e.to_be_bytes());
    }
    if let Some(c) = &m.content_type {
        p.push(0x03);
        put_str(p, c.as_bytes());
    }
    if let Some(t) = &m.response_topic {
        p.push(0x08);
        put_str(p, t.as_bytes());
    }
    if let Some(c) = &m.correlation_data {
        p.push(0x09);
        put_str(p, c);
    }
    // Kept as their wire bytes by the codec: written back verbatim.
    p.extend_from_slice(m.user_properties.wire());
}

fn reason_and_user(p: &mut Vec<u8>, x: &Extras) {
    if let Some(r) = &x.reason_string {
        p.push(0x1F);
        put_str(p, r.as_bytes());
    }
    user_props(p, &x.user);
}

/// Encodes a client packet the way a client would send it on a connection of `version`.
pub fn encode(packet: &Packet, x: &Extras, v5: bool) -> Vec<u8> {
    match packet {
        Packet::Connect(c) => encode_connect(c, x),
        Packet::Publish(p) => {
            let byte1 = 0x30 | u8::from(p.dup) << 3 | (p.qos as u8) << 1 | u8::from(p.retain);
            let mut body = Vec::new();
            put_str(&mut body, p.topic.as_bytes());
            if p.qos != QoS::AtMostOnce {
                body.extend(p.pkid.to_be_bytes());
            }
            if v5 {
                let mut props = Vec::new();
                if let Some(a) = p.topic_alias {
                    props.push(0x23);
                    props.extend(a.to_be_bytes());
                }
                if let Some(m) = &p.props {
                    message_props_bytes(&mut props, m);
                }
                block(&mut body, props);
            }
            body.extend_from_slice(&p.payload);
            frame(byte1, body)
        }
        Packet::PubAck(a) => encode_ack(0x40, a, x, v5),
        Packet::PubRec(a) => encode_ack(0x50, a, x, v5),
        Packet::PubRel(a) => encode_ack(0x62, a, x, v5),
        Packet::PubComp(a) => encode_ack(0x70, a, x, v5),
        Packet::Subscribe(s) => {
            let mut body = s.pkid.to_be_bytes().to_vec();
            if v5 {
                let mut props = Vec::new();
                if let Some(id) = s.subscription_id {
                    props.push(0x0B);
                    push_len(&mut props, id as usize);
                }
                user_props(&mut props, &x.user);
                block(&mut body, props);
            }
            for (f, o) in &s.filters {
                put_str(&mut body, f.as_bytes());
                body.push(if v5 { o.to_byte() } else { o.qos as u8 });
            }
            frame(0x82, body)
        }
        Packet::Unsubscribe(u) => {
            let mut body = u.pkid.to_be_bytes().to_vec();
            if v5 {
                let mut props = Vec::new();
                user_props(&mut props, &x.user);
                block(&mut body, props);
            }
            for f in &u.filters {
                put_str(&mut body, f.as_bytes());
            }
            frame(0xA2, body)
        }
        Packet::PingReq => vec![0xC0, 0x00],
        Packet::Disconnect(d) => {
            let mut props = Vec::new();
            if v5 {
                if let Some(e) = d.session_expiry {
                    props.push(0x11);
                    props.extend(e.to_be_bytes());
                }
                reason_and_user(&mut props, x);
            }
            if !v5 || (d.reason == 0 && props.is_empty()) {
                return vec![0xE0, 0x00];
            }
            let mut body = vec![d.reason];
            block(&mut body, props);
            frame(0xE0, body)
        }
        Packet::Auth(reason) => {
            // Only "0x00 without properties" may leave the Authentication Method out.
            if *reason == 0 && x.auth_data.is_none() {
                return vec![0xF0, 0x00];
            }
            let mut props = vec![0x15];
            put_str(&mut props, b"SCRAM-SHA-1");
            if let Some(d) = &x.auth_data {
                props.push(0x16);
                put_str(&mut props, d);
            }
            reason_and_user(&mut props, x);
            let mut body = vec![*reason];
            block(&mut body, props);
            frame(0xF0, body)
        }
    }
}

fn encode_ack(byte1: u8, a: &Ack, x: &Extras, v5: bool) -> Vec<u8> {
    let mut body = a.pkid.to_be_bytes().to_vec();
    if v5 {
        let mut props = Vec::new();
        reason_and_user(&mut props, x);
        if a.reason != 0 || !props.is_empty() {
            body.push(a.reason);
        }
        if !props.is_empty() {
            block(&mut body, props);
        }
    }
    frame(byte1, body)
}

fn encode_connect(c: &Connect, x: &Extras) -> Vec<u8> {
    let v5 = c.version == ProtocolVersion::V5;
    let mut body = Vec::new();
    match c.version {
        ProtocolVersion::V31 => {
            put_str(&mut body, b"MQIsdp");
            body.push(3);
        }
        ProtocolVersion::V311 => {
            put_str(&mut body, b"MQTT");
            body.push(4);
        }
        ProtocolVersion::V5 => {
            put_str(&mut body, b"MQTT");
            body.push(5);
        }
    }
    let mut flags = u8::from(c.clean_session) << 1;
    if let Some(w) = &c.will {
        flags |= 0x04 | (w.qos as u8) << 3 | u8::from(w.retain) << 5;
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    body.push(flags);
    body.extend(c.keep_alive.to_be_bytes());
    if v5 {
        let p = &c.props;
        let mut props = Vec::new();
        if p.session_expiry != 0 {
            props.push(0x11);
            props.extend(p.session_expiry.to_be_bytes());
        }
        if p.receive_maximum != u16::MAX {
            props.push(0x21);
            props.extend(p.receive_maximum.to_be_bytes());
        }
        if let Some(m) = p.maximum_packet_size {
            props.push(0x27);
            props.extend(m.to_be_bytes());
        }
        if p.topic_alias_maximum != 0 {
            props.push(0x22);
            props.extend(p.topic_alias_maximum.to_be_bytes());
        }
        if p.request_response_information {
            props.extend([0x19, 1]);
        }
        if !p.request_problem_information {
            props.extend([0x17, 0]);
        }
        // The codec counts CONNECT user properties and keeps none: any pairs will do.
        let user: Vec<(String, String)> = (0..p.user_property_count)
            .map(|i| (format!("k{i}"), "v".to_owned()))
            .collect();
        user_props(&mut props, &user);
        if let Some(m) = &p.authentication_method {
            props.push(0x15);
            put_str(&mut props, m.as_bytes());
            if let Some(d) = &x.auth_data {
                props.push(0x16);
                put_str(&mut props, d);
            }
        }
        block(&mut body, props);
    }
    put_str(&mut body, c.client_id.as_bytes());
    if let Some(w) = &c.will {
        if v5 {
            let mut props = Vec::new();
            if w.delay != 0 {
                props.push(0x18);
                props.extend(w.delay.to_be_bytes());
            }
            if let Some(m) = &w.props {
                message_props_bytes(&mut props, m);
            }
            block(&mut body, props);
        }
        put_str(&mut body, w.topic.as_bytes());
        put_str(&mut body, &w.payload);
    }
    if let Some(u) = &c.username {
        put_str(&mut body, u.as_bytes());
    }
    if let Some(p) = &c.password {
        put_str(&mut body, p);
    }
    frame(0x10, body)
}

/// Encodes a session (CONNECT first): the bytes a client of that version sends.
pub fn encode_session(packets: &[(Packet, Extras)]) -> Vec<u8> {
    let v5 = matches!(
        packets.first(),
        Some((Packet::Connect(c), _)) if c.version == ProtocolVersion::V5
    );
    let mut out = Vec::new();
    for (p, x) in packets {
        out.extend(encode(p, x, v5));
    }
    out
}
