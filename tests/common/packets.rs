//! MQTT packets byte by byte, the one set every test uses: builders for what a client
//! sends (3.1.1 or 5.0, chosen by a parameter), a property builder, and a parser of what
//! the broker sends ([`Pkt`], [`RawPub`]).
//!
//! Built by hand rather than with midge's codec, so that a codec bug cannot hide itself in
//! the tests, and so that tests can write what no codec would (bad flags, bad UTF-8,
//! misplaced properties).

// Packet types: the high nibble of the first header byte.
pub const CONNECT: u8 = 1;
pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const PUBREC: u8 = 5;
pub const PUBREL: u8 = 6;
pub const PUBCOMP: u8 = 7;
pub const SUBSCRIBE: u8 = 8;
pub const SUBACK: u8 = 9;
pub const UNSUBSCRIBE: u8 = 10;
pub const UNSUBACK: u8 = 11;
pub const PINGREQ: u8 = 12;
pub const PINGRESP: u8 = 13;
pub const DISCONNECT: u8 = 14;

pub const PINGREQ_BYTES: [u8; 2] = [0xC0, 0x00];
/// DISCONNECT without a body: 3.1.1, and 5.0's Normal disconnection.
pub const DISCONNECT_BYTES: [u8; 2] = [0xE0, 0x00];

// MQTT 5.0 property identifiers.
pub const PAYLOAD_FORMAT: u8 = 0x01;
pub const MESSAGE_EXPIRY: u8 = 0x02;
pub const CONTENT_TYPE: u8 = 0x03;
pub const RESPONSE_TOPIC: u8 = 0x08;
pub const CORRELATION_DATA: u8 = 0x09;
pub const SUBSCRIPTION_ID: u8 = 0x0B;
pub const SESSION_EXPIRY: u8 = 0x11;
pub const ASSIGNED_CLIENT_ID: u8 = 0x12;
pub const SERVER_KEEP_ALIVE: u8 = 0x13;
pub const AUTH_METHOD: u8 = 0x15;
pub const WILL_DELAY: u8 = 0x18;
pub const RECEIVE_MAXIMUM: u8 = 0x21;
pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
pub const TOPIC_ALIAS: u8 = 0x23;
pub const RETAIN_AVAILABLE: u8 = 0x25;
pub const USER_PROPERTY: u8 = 0x26;
pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
pub const SHARED_AVAILABLE: u8 = 0x2A;

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

/// Appends an MQTT variable byte integer.
pub fn push_len(p: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        p.push(b);
        if len == 0 {
            break;
        }
    }
}

/// Appends a two-byte length and the bytes (a UTF-8 string or binary data).
pub fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// A packet: the first header byte, the remaining length, the body.
pub fn frame(byte1: u8, body: Vec<u8>) -> Vec<u8> {
    let mut p = Vec::with_capacity(body.len() + 5);
    p.push(byte1);
    push_len(&mut p, body.len());
    p.extend(body);
    p
}

/// An MQTT 5.0 property as it goes on the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Prop {
    Byte(u8, u8),
    Two(u8, u16),
    Four(u8, u32),
    Var(u8, u32),
    Str(u8, String),
    Bin(u8, Vec<u8>),
    /// A User Property (0x26): name, value.
    Pair(String, String),
}

/// A User Property.
pub fn user(k: &str, v: &str) -> Prop {
    Prop::Pair(k.into(), v.into())
}

/// The properties' bytes, without the block's length.
pub fn props_raw(props: &[Prop]) -> Vec<u8> {
    let mut body = Vec::new();
    for p in props {
        match p {
            Prop::Byte(id, v) => body.extend([*id, *v]),
            Prop::Two(id, v) => {
                body.push(*id);
                body.extend(v.to_be_bytes());
            }
            Prop::Four(id, v) => {
                body.push(*id);
                body.extend(v.to_be_bytes());
            }
            Prop::Var(id, v) => {
                body.push(*id);
                push_len(&mut body, *v as usize);
            }
            Prop::Str(id, s) => {
                body.push(*id);
                put_str(&mut body, s.as_bytes());
            }
            Prop::Bin(id, b) => {
                body.push(*id);
                put_str(&mut body, b);
            }
            Prop::Pair(k, v) => {
                body.push(USER_PROPERTY);
                put_str(&mut body, k.as_bytes());
                put_str(&mut body, v.as_bytes());
            }
        }
    }
    body
}

/// A property block: its length, then the properties.
pub fn props_bytes(props: &[Prop]) -> Vec<u8> {
    property_block(&props_raw(props))
}

/// A property block around raw property bytes (which may be deliberately wrong).
pub fn property_block(raw: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(raw.len() + 4);
    push_len(&mut b, raw.len());
    b.extend_from_slice(raw);
    b
}

/// `n` User Properties (name, value) as raw property bytes.
pub fn user_properties(n: usize, name: &str, value: &str) -> Vec<u8> {
    props_raw(&[user(name, value)]).repeat(n)
}

/// A will in a CONNECT.
#[derive(Debug, Clone, Default)]
pub struct Will<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: u8,
    pub retain: bool,
    /// Will properties (5.0 only).
    pub props: Vec<Prop>,
}

/// A CONNECT of either version; [`Connect::bytes`] writes it.
#[derive(Debug, Clone)]
pub struct Connect<'a> {
    pub v5: bool,
    pub client_id: &'a str,
    /// Clean Session (3.1.1) or Clean Start (5.0).
    pub clean: bool,
    pub keep_alive: u16,
    /// CONNECT properties (5.0 only).
    pub props: Vec<Prop>,
    pub will: Option<Will<'a>>,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
}

impl<'a> Connect<'a> {
    /// 3.1.1 (`v5` false) or 5.0, clean, keep-alive 60, nothing else.
    pub fn new(v5: bool, client_id: &'a str) -> Connect<'a> {
        Connect {
            v5,
            client_id,
            clean: true,
            keep_alive: 60,
            props: Vec::new(),
            will: None,
            username: None,
            password: None,
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut flags = u8::from(self.clean) << 1;
        if let Some(w) = &self.will {
            flags |= 0x04 | (w.qos << 3) | (u8::from(w.retain) << 5);
        }
        if self.username.is_some() {
            flags |= 0x80;
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        let level = if self.v5 { 5 } else { 4 };
        let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', level, flags];
        body.extend(self.keep_alive.to_be_bytes());
        if self.v5 {
            body.extend(props_bytes(&self.props));
        }
        put_str(&mut body, self.client_id.as_bytes());
        if let Some(w) = &self.will {
            if self.v5 {
                body.extend(props_bytes(&w.props));
            }
            put_str(&mut body, w.topic.as_bytes());
            put_str(&mut body, w.payload);
        }
        if let Some(u) = self.username {
            put_str(&mut body, u.as_bytes());
        }
        if let Some(p) = self.password {
            put_str(&mut body, p);
        }
        frame(0x10, body)
    }
}

/// An MQTT 3.1.1 CONNECT.
pub fn connect311(id: &str, clean: bool, keep_alive: u16, will: Option<&Will>) -> Vec<u8> {
    Connect {
        clean,
        keep_alive,
        will: will.cloned(),
        ..Connect::new(false, id)
    }
    .bytes()
}

/// An MQTT 5.0 CONNECT. `will`: (topic, payload, will properties), QoS 0, not retained.
pub fn connect5(
    id: &str,
    clean: bool,
    keep_alive: u16,
    props: &[Prop],
    will: Option<(&str, &[u8], &[Prop])>,
) -> Vec<u8> {
    Connect {
        clean,
        keep_alive,
        props: props.to_vec(),
        will: will.map(|(topic, payload, props)| Will {
            topic,
            payload,
            props: props.to_vec(),
            ..Will::default()
        }),
        ..Connect::new(true, id)
    }
    .bytes()
}

/// A PUBLISH of either version: `props5` is `Some(raw property bytes)` for 5.0 (the block
/// length is added), `None` for 3.1.1. The topic is raw bytes, so it may be invalid; the
/// packet id is written for QoS 1 and 2 only.
pub fn publish_bytes(
    props5: Option<&[u8]>,
    topic: &[u8],
    qos: u8,
    pkid: u16,
    retain: bool,
    dup: bool,
    payload: &[u8],
) -> Vec<u8> {
    let byte1 = 0x30 | (u8::from(dup) << 3) | (qos << 1) | u8::from(retain);
    let mut body = Vec::with_capacity(topic.len() + payload.len() + 16);
    put_str(&mut body, topic);
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    if let Some(props) = props5 {
        body.extend(property_block(props));
    }
    body.extend_from_slice(payload);
    frame(byte1, body)
}

/// A 3.1.1 PUBLISH.
pub fn publish311(
    topic: &str,
    payload: &[u8],
    qos: u8,
    pkid: u16,
    retain: bool,
    dup: bool,
) -> Vec<u8> {
    publish_bytes(None, topic.as_bytes(), qos, pkid, retain, dup, payload)
}

/// A 5.0 PUBLISH.
pub fn publish5(
    topic: &str,
    qos: u8,
    pkid: u16,
    retain: bool,
    props: &[Prop],
    payload: &[u8],
) -> Vec<u8> {
    let raw = props_raw(props);
    publish_bytes(
        Some(&raw),
        topic.as_bytes(),
        qos,
        pkid,
        retain,
        false,
        payload,
    )
}

/// A SUBSCRIBE (fixed header 0x82) of either version with raw filters and raw options
/// bytes: `props5` is `Some(properties)` for 5.0, `None` for 3.1.1.
pub fn subscribe_bytes(props5: Option<&[Prop]>, pkid: u16, filters: &[(&[u8], u8)]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    if let Some(props) = props5 {
        body.extend(props_bytes(props));
    }
    for (filter, options) in filters {
        put_str(&mut body, filter);
        body.push(*options);
    }
    frame(0x82, body)
}

/// A 3.1.1 SUBSCRIBE with (filter, requested QoS) pairs.
pub fn subscribe311(pkid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let filters: Vec<(&[u8], u8)> = filters.iter().map(|(f, q)| (f.as_bytes(), *q)).collect();
    subscribe_bytes(None, pkid, &filters)
}

/// A 5.0 SUBSCRIBE with (filter, options byte) pairs and an optional subscription
/// identifier.
pub fn subscribe5(pkid: u16, filters: &[(&str, u8)], sub_id: Option<u32>) -> Vec<u8> {
    let props: Vec<Prop> = sub_id
        .map(|id| Prop::Var(SUBSCRIPTION_ID, id))
        .into_iter()
        .collect();
    let filters: Vec<(&[u8], u8)> = filters.iter().map(|(f, o)| (f.as_bytes(), *o)).collect();
    subscribe_bytes(Some(&props), pkid, &filters)
}

/// An UNSUBSCRIBE of either version (5.0 adds an empty property block).
pub fn unsubscribe_bytes(v5: bool, pkid: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    if v5 {
        body.push(0);
    }
    for f in filters {
        put_str(&mut body, f.as_bytes());
    }
    frame(0xA2, body)
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP for `pkid`, with the fixed flags of its `kind`: the
/// 3.1.1 form, which is also 5.0's Success without properties.
pub fn ack_bytes(kind: u8, pkid: u16) -> Vec<u8> {
    let flags = if kind == PUBREL { 0x02 } else { 0x00 };
    frame((kind << 4) | flags, pkid.to_be_bytes().to_vec())
}

// ---------------------------------------------------------------------------------------
// Decoding what the broker sends
// ---------------------------------------------------------------------------------------

/// The header length and the body length of the packet at the start of `bytes`; `None`
/// while it is incomplete, or when its remaining length runs over 4 bytes.
pub fn frame_at(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut len = 0usize;
    let mut mult = 1usize;
    let mut i = 1;
    loop {
        if i > 4 {
            return None;
        }
        let &b = bytes.get(i)?;
        len += usize::from(b & 0x7F) * mult;
        mult *= 128;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    (bytes.len() >= i + len).then_some((i, len))
}

/// Takes the first complete packet (first header byte, body) off the front of `buf`.
pub fn take_packet(buf: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    let Some((head, len)) = frame_at(buf) else {
        assert!(
            buf.len() < 5 || buf[1..5].iter().any(|b| b & 0x80 == 0),
            "broker sent a remaining length longer than 4 bytes: {buf:?}"
        );
        return None;
    };
    let packet = (buf[0], buf[head..head + len].to_vec());
    buf.drain(..head + len);
    Some(packet)
}

/// Splits a byte stream into complete MQTT packets: (first header byte, body). Trailing
/// incomplete bytes are ignored.
pub fn split_packets(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some((head, len)) = frame_at(bytes) {
        out.push((bytes[0], bytes[head..head + len].to_vec()));
        bytes = &bytes[head + len..];
    }
    out
}

/// Reads the fields of a packet body in order.
pub struct Cursor<'a>(pub &'a [u8]);

impl Cursor<'_> {
    pub fn u8(&mut self) -> u8 {
        let b = self.0[0];
        self.0 = &self.0[1..];
        b
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn varint(&mut self) -> u32 {
        let mut v = 0u32;
        for i in 0..4 {
            let b = self.u8();
            v |= u32::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                break;
            }
        }
        v
    }
    pub fn bin(&mut self) -> Vec<u8> {
        let n = usize::from(self.u16());
        let v = self.0[..n].to_vec();
        self.0 = &self.0[n..];
        v
    }
    pub fn string(&mut self) -> String {
        String::from_utf8(self.bin()).expect("UTF-8")
    }
    /// A property block: its length, then the properties.
    pub fn props(&mut self) -> Vec<Prop> {
        let len = self.varint() as usize;
        let (mine, rest) = self.0.split_at(len);
        self.0 = rest;
        let mut c = Cursor(mine);
        let mut out = Vec::new();
        while !c.0.is_empty() {
            let id = c.u8();
            out.push(match id {
                0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => Prop::Byte(id, c.u8()),
                0x13 | 0x21 | 0x22 | 0x23 => Prop::Two(id, c.u16()),
                0x02 | 0x11 | 0x18 | 0x27 => Prop::Four(id, c.u32()),
                0x0B => Prop::Var(id, c.varint()),
                0x03 | 0x08 | 0x12 | 0x15 | 0x1A | 0x1C | 0x1F => Prop::Str(id, c.string()),
                0x09 | 0x16 => Prop::Bin(id, c.bin()),
                0x26 => Prop::Pair(c.string(), c.string()),
                other => panic!("unknown property {other:#04x}"),
            });
        }
        out
    }
}

/// The first property `id` in `props`.
pub fn find(props: &[Prop], id: u8) -> Option<&Prop> {
    props.iter().find(|p| match p {
        Prop::Byte(i, _) | Prop::Two(i, _) | Prop::Four(i, _) | Prop::Var(i, _) => *i == id,
        Prop::Str(i, _) | Prop::Bin(i, _) => *i == id,
        Prop::Pair(..) => id == USER_PROPERTY,
    })
}

/// One packet received from the broker, on a connection of version 5.0 (`v5`) or not.
#[derive(Debug, Clone, PartialEq)]
pub struct Pkt {
    pub byte1: u8,
    pub body: Vec<u8>,
    pub v5: bool,
}

/// A decoded PUBLISH received from the broker (`props` is empty on 3.1.1).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawPub {
    pub dup: bool,
    pub qos: u8,
    pub retain: bool,
    pub topic: String,
    pub pkid: u16,
    pub props: Vec<Prop>,
    pub payload: Vec<u8>,
}

impl RawPub {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
    pub fn prop(&self, id: u8) -> Option<&Prop> {
        find(&self.props, id)
    }
    pub fn user_properties(&self) -> Vec<(String, String)> {
        self.props
            .iter()
            .filter_map(|p| match p {
                Prop::Pair(k, v) => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect()
    }
    pub fn sub_ids(&self) -> Vec<u32> {
        self.props
            .iter()
            .filter_map(|p| match p {
                Prop::Var(SUBSCRIPTION_ID, v) => Some(*v),
                _ => None,
            })
            .collect()
    }
}

impl Pkt {
    /// Takes the first complete packet off the front of `buf`, received on a connection of
    /// version 5.0 (`v5`) or not.
    pub fn take(buf: &mut Vec<u8>, v5: bool) -> Option<Pkt> {
        take_packet(buf).map(|(byte1, body)| Pkt { byte1, body, v5 })
    }

    pub fn kind(&self) -> u8 {
        self.byte1 >> 4
    }

    /// Size on the wire.
    pub fn size(&self) -> usize {
        let mut len = Vec::new();
        push_len(&mut len, self.body.len());
        1 + len.len() + self.body.len()
    }

    /// Packet id of an acknowledgement (PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK).
    pub fn pkid(&self) -> u16 {
        assert!(self.body.len() >= 2, "no packet id in {self:?}");
        u16::from_be_bytes([self.body[0], self.body[1]])
    }

    /// Reason code of a 5.0 PUBACK / PUBREC / PUBREL / PUBCOMP (0 when omitted).
    pub fn reason5(&self) -> u8 {
        self.body.get(2).copied().unwrap_or(0)
    }

    /// (packet id, reason) of PUBACK / PUBREC / PUBREL / PUBCOMP.
    pub fn ack(&self) -> (u16, u8) {
        (self.pkid(), self.reason5())
    }

    pub fn publish(&self) -> RawPub {
        assert_eq!(self.kind(), PUBLISH, "expected a PUBLISH, got {self:?}");
        let qos = (self.byte1 >> 1) & 0x03;
        let mut c = Cursor(&self.body);
        let topic = c.string();
        let pkid = if qos > 0 { c.u16() } else { 0 };
        let props = if self.v5 { c.props() } else { Vec::new() };
        RawPub {
            dup: self.byte1 & 0x08 != 0,
            qos,
            retain: self.byte1 & 0x01 != 0,
            topic,
            pkid,
            props,
            payload: c.0.to_vec(),
        }
    }

    /// (session present, return or reason code, properties) of a CONNACK.
    pub fn connack(&self) -> (bool, u8, Vec<Prop>) {
        assert_eq!(self.kind(), CONNACK, "expected CONNACK, got {self:?}");
        let mut c = Cursor(&self.body);
        let sp = c.u8() == 1;
        let reason = c.u8();
        let props = if c.0.is_empty() {
            Vec::new()
        } else {
            c.props()
        };
        (sp, reason, props)
    }

    /// Reason code of a DISCONNECT (0 when omitted).
    pub fn disconnect_reason(&self) -> u8 {
        assert_eq!(self.kind(), DISCONNECT, "expected DISCONNECT, got {self:?}");
        self.body.first().copied().unwrap_or(0)
    }

    /// Return or reason codes of a SUBACK / UNSUBACK (5.0: after the property block).
    pub fn reasons(&self) -> Vec<u8> {
        let mut c = Cursor(&self.body);
        c.u16();
        if self.v5 {
            c.props();
        }
        c.0.to_vec()
    }

    /// Asserts this is an acknowledgement of `kind` for `pkid`: on 3.1.1 exactly the
    /// packet with its fixed flags, on 5.0 with reason Success.
    pub fn assert_ack(&self, kind: u8, pkid: u16) {
        if self.v5 {
            assert_eq!(
                (self.kind(), self.pkid(), self.reason5()),
                (kind, pkid, 0),
                "expected packet type {kind} for packet id {pkid} (success), got {self:?}"
            );
        } else {
            let flags = if kind == PUBREL { 0x02 } else { 0x00 };
            assert_eq!(
                (self.byte1, self.body.as_slice()),
                ((kind << 4) | flags, &pkid.to_be_bytes()[..]),
                "expected packet type {kind} for packet id {pkid}, got {self:?}"
            );
        }
    }
}
