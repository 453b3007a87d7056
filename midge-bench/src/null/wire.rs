//! The server side of MQTT 3.1.1 as far as the null broker needs it: what a client sends
//! (decoded in place, nothing allocated but a SUBSCRIBE's filter list), the few answers
//! it gets, the forwarded PUBLISH, and topic matching.
//!
//! Framing and the PUBLISH decoder are the load generator's own ([`proto::frame_len`],
//! [`proto::decode`]): a PUBLISH has the same layout in both directions.

use crate::proto::{self, Incoming, Version};

/// Why a connection is closed: the client sent something the null broker does not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bad(pub &'static str);

/// A packet from a client; slices borrow the frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    Connect,
    Publish(Pub<'a>),
    /// PUBACK from a subscriber: nothing is kept in flight, so nothing to release.
    PubAck,
    Subscribe {
        pkid: u16,
        /// Each filter with its requested QoS.
        filters: Vec<(&'a [u8], u8)>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<&'a [u8]>,
    },
    PingReq,
    Disconnect,
}

/// A PUBLISH as received: where its parts are in the frame, for forwarding by copy.
#[derive(Debug, PartialEq, Eq)]
pub struct Pub<'a> {
    pub qos: u8,
    pub pkid: u16,
    pub topic: &'a [u8],
    /// Offset of the payload in the frame (everything before it is the header).
    pub payload_at: usize,
}

fn u16_at(b: &[u8], i: usize) -> Result<u16, Bad> {
    match b.get(i..i + 2) {
        Some(s) => Ok(u16::from_be_bytes([s[0], s[1]])),
        None => Err(Bad("packet too short")),
    }
}

/// The body of the whole frame `frame` (fixed header skipped).
fn body(frame: &[u8]) -> Result<&[u8], Bad> {
    let mut i = 1;
    while frame.get(i).is_some_and(|b| b & 0x80 != 0) {
        i += 1;
    }
    frame.get(i + 1..).ok_or(Bad("fixed header cut"))
}

/// A length-prefixed string at `b[i..]`: `(bytes, index after it)`.
fn str_at(b: &[u8], i: usize) -> Result<(&[u8], usize), Bad> {
    let len = usize::from(u16_at(b, i)?);
    let s = b.get(i + 2..i + 2 + len).ok_or(Bad("string cut"))?;
    Ok((s, i + 2 + len))
}

/// Decodes one whole frame (exactly one packet, as [`proto::frame_len`] delimits it).
pub fn parse(frame: &[u8]) -> Result<Packet<'_>, Bad> {
    let first = *frame.first().ok_or(Bad("empty frame"))?;
    match first >> 4 {
        // CONNECT: anyone is accepted; the level must be 3.1.1's, since the answers are.
        1 => {
            let b = body(frame)?;
            let (name, i) = str_at(b, 0)?;
            match (name, b.get(i)) {
                (b"MQTT", Some(4)) => Ok(Packet::Connect),
                _ => Err(Bad("not an MQTT 3.1.1 CONNECT")),
            }
        }
        3 => match proto::decode(frame, Version::V311) {
            Ok(Some((
                Incoming::Publish {
                    qos,
                    pkid,
                    topic,
                    payload,
                    ..
                },
                n,
            ))) if n == frame.len() => {
                if qos == 2 {
                    return Err(Bad("QoS 2 is not supported"));
                }
                Ok(Packet::Publish(Pub {
                    qos,
                    pkid,
                    topic,
                    payload_at: frame.len() - payload.len(),
                }))
            }
            _ => Err(Bad("malformed PUBLISH")),
        },
        4 => Ok(Packet::PubAck),
        8 => {
            let b = body(frame)?;
            let pkid = u16_at(b, 0)?;
            let mut filters = Vec::with_capacity(1);
            let mut i = 2;
            while i < b.len() {
                let (f, next) = str_at(b, i)?;
                let qos = *b.get(next).ok_or(Bad("SUBSCRIBE options cut"))?;
                if qos > 2 || f.is_empty() {
                    return Err(Bad("bad subscription"));
                }
                filters.push((f, qos));
                i = next + 1;
            }
            if filters.is_empty() {
                return Err(Bad("SUBSCRIBE without a filter"));
            }
            Ok(Packet::Subscribe { pkid, filters })
        }
        10 => {
            let b = body(frame)?;
            let pkid = u16_at(b, 0)?;
            let mut filters = Vec::with_capacity(1);
            let mut i = 2;
            while i < b.len() {
                let (f, next) = str_at(b, i)?;
                filters.push(f);
                i = next;
            }
            Ok(Packet::Unsubscribe { pkid, filters })
        }
        12 => Ok(Packet::PingReq),
        14 => Ok(Packet::Disconnect),
        _ => Err(Bad("packet type not taken from a client")),
    }
}

pub const CONNACK: [u8; 4] = [0x20, 2, 0, 0];
pub const PINGRESP: [u8; 2] = [0xD0, 0];

pub fn puback(buf: &mut Vec<u8>, pkid: u16) {
    proto::ack(buf, proto::PUBACK, pkid);
}

pub fn suback(buf: &mut Vec<u8>, pkid: u16, granted: impl ExactSizeIterator<Item = u8>) {
    buf.push(0x90);
    proto::put_varint(buf, 2 + granted.len());
    buf.extend_from_slice(&pkid.to_be_bytes());
    buf.extend(granted);
}

pub fn unsuback(buf: &mut Vec<u8>, pkid: u16) {
    let id = pkid.to_be_bytes();
    buf.extend_from_slice(&[0xB0, 2, id[0], id[1]]);
}

/// Appends the header (everything before the payload) of `frame`, a PUBLISH decoded as
/// `p`, as forwarded at `qos` with packet id `pkid` (ignored at QoS 0), retain cleared.
/// At the received QoS that is a copy with the flags and the id patched; only a QoS 1
/// message forwarded at QoS 0 gets a new (2 bytes shorter) header.
pub fn forward_header(buf: &mut Vec<u8>, frame: &[u8], p: &Pub<'_>, qos: u8, pkid: u16) {
    let head = &frame[..p.payload_at];
    if qos == p.qos {
        let at = buf.len();
        buf.extend_from_slice(head);
        buf[at] &= !1; // retain cleared: nothing is stored, so it is never a retained copy
        if qos > 0 {
            let id = pkid.to_be_bytes();
            let end = buf.len();
            buf[end - 2..].copy_from_slice(&id);
        }
    } else {
        let payload_len = frame.len() - p.payload_at;
        let remaining = 2 + p.topic.len() + if qos > 0 { 2 } else { 0 } + payload_len;
        buf.push(0x30 | (qos << 1));
        proto::put_varint(buf, remaining);
        buf.extend_from_slice(&(p.topic.len() as u16).to_be_bytes());
        buf.extend_from_slice(p.topic);
        if qos > 0 {
            buf.extend_from_slice(&pkid.to_be_bytes());
        }
    }
}

/// Whether topic filter `filter` (`+` one level, `#` this level and all below it)
/// matches topic `topic`. The `$` rule is not applied: no client here publishes `$` topics.
pub fn matches(filter: &[u8], topic: &[u8]) -> bool {
    let mut f = filter.split(|&b| b == b'/');
    let mut t = topic.split(|&b| b == b'/');
    loop {
        match (f.next(), t.next()) {
            // `a/#` also matches `a` itself.
            (Some(b"#"), _) => return true,
            (Some(b"+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(qos: u8, retain: bool, pkid: u16, topic: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        proto::publish_header(
            &mut b,
            Version::V311,
            topic,
            qos,
            retain,
            pkid,
            payload.len(),
        );
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn connect_and_simple_packets() {
        let mut b = Vec::new();
        proto::connect(&mut b, Version::V311, "id", true, 60);
        assert_eq!(parse(&b), Ok(Packet::Connect));
        let mut b5 = Vec::new();
        proto::connect(&mut b5, Version::V5, "id", true, 60);
        assert!(parse(&b5).is_err(), "5.0 is refused");
        assert_eq!(parse(&[0xC0, 0]), Ok(Packet::PingReq));
        assert_eq!(parse(&[0xE0, 0]), Ok(Packet::Disconnect));
        assert_eq!(parse(&[0x40, 2, 0, 1]), Ok(Packet::PubAck));
        assert!(
            parse(&[0x20, 2, 0, 0]).is_err(),
            "CONNACK is not a client's"
        );
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn publish_is_located_in_its_frame() {
        let f = publish(1, true, 7, b"a/b", b"xyz");
        let Ok(Packet::Publish(p)) = parse(&f) else {
            panic!("not a publish")
        };
        assert_eq!((p.qos, p.pkid, p.topic), (1, 7, &b"a/b"[..]));
        assert_eq!(&f[p.payload_at..], b"xyz");
        assert!(parse(&publish(2, false, 1, b"t", b"x")).is_err(), "QoS 2");
        // A frame longer than the packet it announces is malformed, not a second packet.
        let mut long = publish(0, false, 0, b"t", b"x");
        long.push(0);
        assert!(parse(&long).is_err());
    }

    #[test]
    fn subscribe_and_unsubscribe() {
        let mut b = Vec::new();
        proto::subscribe(&mut b, Version::V311, 9, &["a/+", "#"], 1);
        assert_eq!(
            parse(&b),
            Ok(Packet::Subscribe {
                pkid: 9,
                filters: vec![(&b"a/+"[..], 1), (&b"#"[..], 1)]
            })
        );
        // No filter, QoS 3, a cut filter: refused.
        assert!(parse(&[0x82, 2, 0, 1]).is_err());
        assert!(parse(&[0x82, 6, 0, 1, 0, 1, b'a', 3]).is_err());
        assert!(parse(&[0x82, 5, 0, 1, 0, 9, b'a']).is_err());
        let u = [0xA2, 7, 0, 4, 0, 3, b'a', b'/', b'b'];
        assert_eq!(
            parse(&u),
            Ok(Packet::Unsubscribe {
                pkid: 4,
                filters: vec![&b"a/b"[..]]
            })
        );
    }

    #[test]
    fn answers_decode_with_the_client_decoder() {
        let mut b = CONNACK.to_vec();
        puback(&mut b, 300);
        suback(&mut b, 5, [1u8, 0].into_iter());
        unsuback(&mut b, 6);
        b.extend_from_slice(&PINGRESP);
        let mut rest = &b[..];
        let mut got = Vec::new();
        while let Some((p, n)) = proto::decode(rest, Version::V311).unwrap() {
            got.push(format!("{p:?}"));
            rest = &rest[n..];
        }
        assert!(rest.is_empty());
        assert_eq!(
            got,
            [
                "ConnAck { session_present: false, code: 0 }",
                "PubAck(300)",
                "SubAck { pkid: 5, codes: [1, 0] }",
                "UnsubAck",
                "PingResp"
            ]
        );
    }

    #[test]
    fn forwarded_publish_at_each_qos() {
        let payload = vec![5u8; 200];
        for (in_qos, out_qos) in [(0, 0), (1, 1), (1, 0)] {
            let f = publish(in_qos, true, 77, b"x/y", &payload);
            let Ok(Packet::Publish(p)) = parse(&f) else {
                panic!("not a publish")
            };
            let mut out = Vec::new();
            forward_header(&mut out, &f, &p, out_qos, 1234);
            out.extend_from_slice(&f[p.payload_at..]);
            let (got, n) = proto::decode(&out, Version::V311).unwrap().unwrap();
            assert_eq!(n, out.len());
            assert_eq!(
                got,
                Incoming::Publish {
                    qos: out_qos,
                    retain: false,
                    dup: false,
                    pkid: if out_qos > 0 { 1234 } else { 0 },
                    topic: b"x/y",
                    payload: &payload,
                }
            );
        }
    }

    #[test]
    fn topic_matching() {
        let yes = [
            ("a/b", "a/b"),
            ("a/+", "a/b"),
            ("+/+", "a/b"),
            ("a/#", "a/b/c"),
            ("a/#", "a"),
            ("#", "a/b"),
            ("+", ""),
            ("a/+/c", "a//c"),
            ("bench/fanin/#", "bench/fanin/3"),
        ];
        for (f, t) in yes {
            assert!(matches(f.as_bytes(), t.as_bytes()), "{f} should match {t}");
        }
        let no = [
            ("a/b", "a"),
            ("a", "a/b"),
            ("a/+", "a/b/c"),
            ("+", "a/b"),
            ("a/b", "a/c"),
            ("b/#", "a/b"),
        ];
        for (f, t) in no {
            assert!(
                !matches(f.as_bytes(), t.as_bytes()),
                "{f} should not match {t}"
            );
        }
    }
}
