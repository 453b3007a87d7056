//! The client side of the MQTT wire format, just what a load generator needs.
//!
//! Encoders append to a `Vec<u8>`; the decoder reads one packet from the front of a byte
//! slice without copying or allocating. MQTT 3.1.1 (level 4) and 5.0 (level 5) are spoken;
//! for 5.0 every property block we send is empty and every one we receive is skipped.

use std::fmt;

/// Protocol revision spoken on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

impl Version {
    fn level(self) -> u8 {
        match self {
            Version::V311 => 4,
            Version::V5 => 5,
        }
    }

    fn has_props(self) -> bool {
        self == Version::V5
    }
}

impl std::str::FromStr for Version {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "3" | "3.1.1" | "4" | "311" => Ok(Version::V311),
            "5" | "5.0" => Ok(Version::V5),
            _ => Err(format!("unknown MQTT version {s:?} (3.1.1 or 5)")),
        }
    }
}

pub const PUBACK: u8 = 0x40;
pub const PUBREC: u8 = 0x50;
pub const PUBREL: u8 = 0x62;
pub const PUBCOMP: u8 = 0x70;

/// Bytes of the variable byte integer encoding of `n`.
pub fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub fn put_varint(buf: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut byte = (n & 0x7F) as u8;
        n >>= 7;
        if n > 0 {
            byte |= 0x80;
        }
        buf.push(byte);
        if n == 0 {
            return;
        }
    }
}

fn put_str(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&(s.len() as u16).to_be_bytes());
    buf.extend_from_slice(s);
}

/// Session Expiry Interval (seconds) announced by a 5.0 CONNECT without Clean Start, so
/// that the session outlives the connection as a 3.1.1 clean session 0 one does.
pub const SESSION_EXPIRY: u32 = 3600;

/// CONNECT without will, user name or password. 5.0: no properties, except a Session
/// Expiry Interval of [`SESSION_EXPIRY`] when `clean` is false.
pub fn connect(buf: &mut Vec<u8>, v: Version, client_id: &str, clean: bool, keep_alive: u16) {
    let props: &[u8] = match (v.has_props(), clean) {
        (false, _) => &[],
        (true, true) => &[0],
        (true, false) => {
            let e = SESSION_EXPIRY.to_be_bytes();
            &[5, 0x11, e[0], e[1], e[2], e[3]]
        }
    };
    let remaining = 6 + 1 + 1 + 2 + props.len() + 2 + client_id.len();
    buf.push(0x10);
    put_varint(buf, remaining);
    put_str(buf, b"MQTT");
    buf.push(v.level());
    buf.push(if clean { 0x02 } else { 0x00 });
    buf.extend_from_slice(&keep_alive.to_be_bytes());
    buf.extend_from_slice(props);
    put_str(buf, client_id.as_bytes());
}

/// Everything of a PUBLISH up to its payload; the caller appends `payload_len` bytes.
pub fn publish_header(
    buf: &mut Vec<u8>,
    v: Version,
    topic: &[u8],
    qos: u8,
    retain: bool,
    pkid: u16,
    payload_len: usize,
) {
    publish_head(buf, v, topic, qos, retain, pkid, &[], payload_len);
}

/// The fixed header, topic, packet id and (5.0) property block of a PUBLISH whose payload
/// of `payload_len` bytes follows.
#[allow(clippy::too_many_arguments)]
fn publish_head(
    buf: &mut Vec<u8>,
    v: Version,
    topic: &[u8],
    qos: u8,
    retain: bool,
    pkid: u16,
    props: &[u8],
    payload_len: usize,
) {
    let props_len = if v.has_props() {
        varint_len(props.len()) + props.len()
    } else {
        0
    };
    let remaining = 2 + topic.len() + if qos > 0 { 2 } else { 0 } + props_len + payload_len;
    buf.reserve(1 + varint_len(remaining) + remaining);
    buf.push(0x30 | (qos << 1) | u8::from(retain));
    put_varint(buf, remaining);
    put_str(buf, topic);
    if qos > 0 {
        buf.extend_from_slice(&pkid.to_be_bytes());
    }
    if v.has_props() {
        put_varint(buf, props.len());
        buf.extend_from_slice(props);
    }
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP (`kind` is the first byte). The two-byte form is
/// valid in 5.0 too (reason code 0, no properties).
pub fn ack(buf: &mut Vec<u8>, kind: u8, pkid: u16) {
    let id = pkid.to_be_bytes();
    buf.extend_from_slice(&[kind, 2, id[0], id[1]]);
}

/// SUBSCRIBE with one or more filters, all at `qos` (5.0: no other subscription option set).
pub fn subscribe<S: AsRef<str>>(buf: &mut Vec<u8>, v: Version, pkid: u16, filters: &[S], qos: u8) {
    let remaining = 2
        + usize::from(v.has_props())
        + filters
            .iter()
            .map(|f| 2 + f.as_ref().len() + 1)
            .sum::<usize>();
    buf.push(0x82);
    put_varint(buf, remaining);
    buf.extend_from_slice(&pkid.to_be_bytes());
    if v.has_props() {
        buf.push(0);
    }
    for f in filters {
        put_str(buf, f.as_ref().as_bytes());
        buf.push(qos);
    }
}

pub fn pingreq(buf: &mut Vec<u8>) {
    buf.extend_from_slice(&[0xC0, 0x00]);
}

pub fn disconnect(buf: &mut Vec<u8>) {
    buf.extend_from_slice(&[0xE0, 0x00]);
}

/// The fields of a CONNECT beyond [`connect`]'s: credentials and 5.0 properties (raw
/// property bytes, without their length; ignored for 3.1.1).
#[derive(Debug, Default, Clone)]
pub struct ConnectFields<'a> {
    pub client_id: &'a [u8],
    pub clean: bool,
    pub keep_alive: u16,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    pub props: &'a [u8],
}

/// CONNECT with every field of [`ConnectFields`].
pub fn connect_with(buf: &mut Vec<u8>, v: Version, f: &ConnectFields<'_>) {
    let props_len = if v.has_props() {
        varint_len(f.props.len()) + f.props.len()
    } else {
        0
    };
    let remaining = 10
        + props_len
        + 2
        + f.client_id.len()
        + f.username.map_or(0, |u| 2 + u.len())
        + f.password.map_or(0, |p| 2 + p.len());
    buf.reserve(5 + remaining);
    buf.push(0x10);
    put_varint(buf, remaining);
    put_str(buf, b"MQTT");
    buf.push(v.level());
    let flags = u8::from(f.clean) << 1
        | u8::from(f.password.is_some()) << 6
        | u8::from(f.username.is_some()) << 7;
    buf.push(flags);
    buf.extend_from_slice(&f.keep_alive.to_be_bytes());
    if v.has_props() {
        put_varint(buf, f.props.len());
        buf.extend_from_slice(f.props);
    }
    put_str(buf, f.client_id);
    if let Some(u) = f.username {
        put_str(buf, u.as_bytes());
    }
    if let Some(p) = f.password {
        put_str(buf, p);
    }
}

/// A whole PUBLISH with 5.0 properties (raw bytes, without their length; ignored for 3.1.1).
#[allow(clippy::too_many_arguments)]
pub fn publish_with(
    buf: &mut Vec<u8>,
    v: Version,
    topic: &[u8],
    qos: u8,
    retain: bool,
    pkid: u16,
    props: &[u8],
    payload: &[u8],
) {
    publish_head(buf, v, topic, qos, retain, pkid, props, payload.len());
    buf.extend_from_slice(payload);
}

/// SUBSCRIBE of `filters` (each with its options byte: QoS, 5.0 flags) and 5.0 properties.
pub fn subscribe_with(
    buf: &mut Vec<u8>,
    v: Version,
    pkid: u16,
    props: &[u8],
    filters: &[(&[u8], u8)],
) {
    let props_len = if v.has_props() {
        varint_len(props.len()) + props.len()
    } else {
        0
    };
    let remaining = 2 + props_len + filters.iter().map(|f| 3 + f.0.len()).sum::<usize>();
    buf.reserve(5 + remaining);
    buf.push(0x82);
    put_varint(buf, remaining);
    buf.extend_from_slice(&pkid.to_be_bytes());
    if v.has_props() {
        put_varint(buf, props.len());
        buf.extend_from_slice(props);
    }
    for (f, opts) in filters {
        put_str(buf, f);
        buf.push(*opts);
    }
}

/// 5.0 property identifiers the attack harness sends.
pub mod prop {
    pub const SUBSCRIPTION_ID: u8 = 0x0B;
    pub const SESSION_EXPIRY: u8 = 0x11;
    pub const TOPIC_ALIAS_MAX: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const USER: u8 = 0x26;

    pub fn u16(buf: &mut Vec<u8>, id: u8, v: u16) {
        buf.push(id);
        buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn u32(buf: &mut Vec<u8>, id: u8, v: u32) {
        buf.push(id);
        buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn varint(buf: &mut Vec<u8>, id: u8, v: usize) {
        buf.push(id);
        super::put_varint(buf, v);
    }

    /// A User Property: name and value pair.
    pub fn user(buf: &mut Vec<u8>, name: &[u8], value: &[u8]) {
        buf.push(USER);
        super::put_str(buf, name);
        super::put_str(buf, value);
    }
}

/// A packet from the server. Slices borrow the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    ConnAck {
        /// Session Present: the server resumed a session it already had for the client id.
        session_present: bool,
        code: u8,
    },
    Publish {
        qos: u8,
        retain: bool,
        /// The DUP flag: the server sends this QoS 1/2 message again.
        dup: bool,
        pkid: u16,
        topic: &'a [u8],
        payload: &'a [u8],
    },
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    SubAck {
        pkid: u16,
        codes: &'a [u8],
    },
    UnsubAck,
    PingResp,
    /// 5.0 servers may send DISCONNECT with a reason code.
    Disconnect(u8),
    /// AUTH (5.0), which we never ask for.
    Other(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed packet from server: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

/// Reads a variable byte integer at the start of `b`: `(value, bytes used)`, `None` when
/// `b` ends first.
fn varint(b: &[u8]) -> Result<Option<(usize, usize)>, Malformed> {
    let mut value = 0usize;
    for (i, &byte) in b.iter().enumerate().take(4) {
        value |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if b.len() >= 4 {
        Err(Malformed("remaining length longer than 4 bytes"))
    } else {
        Ok(None)
    }
}

/// Length of the whole frame at the front of `buf` once its fixed header is complete.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, Malformed> {
    if buf.is_empty() {
        return Ok(None);
    }
    Ok(varint(&buf[1..])?.map(|(remaining, n)| 1 + n + remaining))
}

/// The remaining length (body size) of the frame at the front of `buf`; 0 when the
/// fixed header is incomplete or malformed.
pub fn frame_body_len(buf: &[u8]) -> usize {
    buf.get(1..)
        .and_then(|b| varint(b).ok().flatten())
        .map_or(0, |(remaining, _)| remaining)
}

fn u16_at(b: &[u8], i: usize) -> Result<u16, Malformed> {
    match b.get(i..i + 2) {
        Some(s) => Ok(u16::from_be_bytes([s[0], s[1]])),
        None => Err(Malformed("packet too short")),
    }
}

/// Skips a 5.0 property block at `body[i..]`, returning the index after it.
fn skip_props(body: &[u8], i: usize) -> Result<usize, Malformed> {
    let (len, n) = varint(body.get(i..).unwrap_or(&[]))?.ok_or(Malformed("properties cut"))?;
    let end = i + n + len;
    if end > body.len() {
        return Err(Malformed("properties longer than packet"));
    }
    Ok(end)
}

/// Decodes the packet at the front of `buf`: `Ok(None)` if it is not all there yet,
/// otherwise the packet and the number of bytes it took.
pub fn decode(buf: &[u8], v: Version) -> Result<Option<(Incoming<'_>, usize)>, Malformed> {
    let Some(&byte1) = buf.first() else {
        return Ok(None);
    };
    let Some((remaining, n)) = varint(&buf[1..])? else {
        return Ok(None);
    };
    let start = 1 + n;
    let total = start + remaining;
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[start..total];
    let packet = match byte1 >> 4 {
        2 => {
            // CONNACK: flags, return / reason code (5.0: then properties).
            let code = *body.get(1).ok_or(Malformed("CONNACK too short"))?;
            Incoming::ConnAck {
                session_present: body[0] & 1 == 1,
                code,
            }
        }
        3 => {
            let qos = (byte1 >> 1) & 3;
            if qos == 3 {
                return Err(Malformed("PUBLISH with QoS 3"));
            }
            let tlen = usize::from(u16_at(body, 0)?);
            let mut i = 2 + tlen;
            let topic = body.get(2..i).ok_or(Malformed("PUBLISH topic cut"))?;
            let mut pkid = 0;
            if qos > 0 {
                pkid = u16_at(body, i)?;
                i += 2;
            }
            if v.has_props() {
                i = skip_props(body, i)?;
            }
            let payload = body.get(i..).ok_or(Malformed("PUBLISH cut"))?;
            Incoming::Publish {
                qos,
                retain: byte1 & 1 == 1,
                dup: byte1 & 0x08 != 0,
                pkid,
                topic,
                payload,
            }
        }
        4 => Incoming::PubAck(u16_at(body, 0)?),
        5 => Incoming::PubRec(u16_at(body, 0)?),
        6 => Incoming::PubRel(u16_at(body, 0)?),
        7 => Incoming::PubComp(u16_at(body, 0)?),
        9 => {
            let pkid = u16_at(body, 0)?;
            let i = if v.has_props() {
                skip_props(body, 2)?
            } else {
                2
            };
            Incoming::SubAck {
                pkid,
                codes: &body[i.min(body.len())..],
            }
        }
        11 => Incoming::UnsubAck,
        13 => Incoming::PingResp,
        14 => Incoming::Disconnect(body.first().copied().unwrap_or(0)),
        t => Incoming::Other(t),
    };
    Ok(Some((packet, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_311_bytes() {
        let mut b = Vec::new();
        connect(&mut b, Version::V311, "ab", true, 60);
        assert_eq!(
            b,
            [0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 2, b'a', b'b']
        );
    }

    #[test]
    fn connect_v5_properties() {
        let mut b = Vec::new();
        connect(&mut b, Version::V5, "", true, 30);
        assert_eq!(
            b,
            [0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 30, 0, 0, 0]
        );
        // Without Clean Start: a Session Expiry Interval of one hour.
        let mut b = Vec::new();
        connect(&mut b, Version::V5, "", false, 30);
        assert_eq!(
            b,
            [
                0x10, 18, 0, 4, b'M', b'Q', b'T', b'T', 5, 0, 0, 30, 5, 0x11, 0, 0, 0x0E, 0x10, 0,
                0
            ]
        );
    }

    #[test]
    fn publish_dup_flag_is_read() {
        let mut b = Vec::new();
        publish_header(&mut b, Version::V311, b"t", 1, false, 7, 2);
        b.extend_from_slice(b"xy");
        b[0] |= 0x08;
        let (p, _) = decode(&b, Version::V311).unwrap().unwrap();
        assert!(matches!(
            p,
            Incoming::Publish {
                dup: true,
                qos: 1,
                pkid: 7,
                ..
            }
        ));
    }

    #[test]
    fn publish_round_trip() {
        for v in [Version::V311, Version::V5] {
            for qos in 0..=2 {
                let mut b = Vec::new();
                let payload = vec![7u8; 300];
                publish_header(&mut b, v, b"a/b", qos, true, 9, payload.len());
                b.extend_from_slice(&payload);
                let (p, n) = decode(&b, v).unwrap().unwrap();
                assert_eq!(n, b.len());
                assert_eq!(
                    p,
                    Incoming::Publish {
                        qos,
                        retain: true,
                        dup: false,
                        pkid: if qos > 0 { 9 } else { 0 },
                        topic: b"a/b",
                        payload: &payload,
                    }
                );
                // Any prefix is incomplete, never an error.
                for cut in 0..b.len() {
                    assert_eq!(decode(&b[..cut], v), Ok(None));
                }
            }
        }
    }

    #[test]
    fn suback_and_acks() {
        assert_eq!(
            decode(&[0x90, 4, 0, 7, 1, 0x80], Version::V311).unwrap(),
            Some((
                Incoming::SubAck {
                    pkid: 7,
                    codes: &[1, 0x80]
                },
                6
            ))
        );
        // 5.0: properties (one user property-sized blob) skipped.
        assert_eq!(
            decode(&[0x90, 6, 0, 7, 2, 0x1F, 0, 1], Version::V5).unwrap(),
            Some((
                Incoming::SubAck {
                    pkid: 7,
                    codes: &[1]
                },
                8
            ))
        );
        let mut b = Vec::new();
        ack(&mut b, PUBREL, 300);
        assert_eq!(
            decode(&b, Version::V311).unwrap(),
            Some((Incoming::PubRel(300), 4))
        );
        assert_eq!(
            decode(&[0x20, 3, 0, 0, 0], Version::V5).unwrap(),
            Some((
                Incoming::ConnAck {
                    session_present: false,
                    code: 0
                },
                5
            ))
        );
        assert_eq!(
            decode(&[0x20, 2, 1, 0], Version::V311).unwrap(),
            Some((
                Incoming::ConnAck {
                    session_present: true,
                    code: 0
                },
                4
            ))
        );
    }

    #[test]
    fn connect_with_credentials_and_props() {
        let mut a = Vec::new();
        connect(&mut a, Version::V5, "id", true, 30);
        let mut b = Vec::new();
        let f = ConnectFields {
            client_id: b"id",
            clean: true,
            keep_alive: 30,
            ..Default::default()
        };
        connect_with(&mut b, Version::V5, &f);
        assert_eq!(a, b);
        let mut c = Vec::new();
        let f = ConnectFields {
            username: Some("u"),
            password: Some(b"p"),
            props: &[0x22, 0, 10],
            ..f
        };
        connect_with(&mut c, Version::V5, &f);
        assert_eq!(c[9], 0xC2);
        assert_eq!(&c[12..16], &[3, 0x22, 0, 10]);
        assert_eq!(&c[c.len() - 6..], &[0, 1, b'u', 0, 1, b'p']);
        assert_eq!(frame_len(&c).unwrap(), Some(c.len()));
    }

    #[test]
    fn publish_with_props_decodes() {
        let mut b = Vec::new();
        let mut props = Vec::new();
        prop::user(&mut props, b"k", b"v");
        publish_with(&mut b, Version::V5, b"t", 1, false, 5, &props, b"xy");
        let (p, n) = decode(&b, Version::V5).unwrap().unwrap();
        assert_eq!(n, b.len());
        assert_eq!(
            p,
            Incoming::Publish {
                qos: 1,
                retain: false,
                dup: false,
                pkid: 5,
                topic: b"t",
                payload: b"xy"
            }
        );
        let mut s = Vec::new();
        subscribe_with(&mut s, Version::V311, 1, &[], &[(b"a", 1), (b"b", 0)]);
        let mut s2 = Vec::new();
        subscribe(&mut s2, Version::V311, 1, &["a"], 1);
        assert_eq!(&s[4..8], &s2[4..8]);
        assert_eq!(frame_len(&s).unwrap(), Some(s.len()));
    }

    #[test]
    fn varints() {
        for n in [
            0,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            268_435_455,
        ] {
            let mut b = vec![0x30];
            put_varint(&mut b, n);
            assert_eq!(b.len() - 1, varint_len(n));
            assert_eq!(varint(&b[1..]).unwrap(), Some((n, varint_len(n))));
        }
        assert!(varint(&[0xFF, 0xFF, 0xFF, 0xFF]).is_err());
    }
}
