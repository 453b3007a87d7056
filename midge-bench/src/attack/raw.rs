//! A raw MQTT connection for the attacks: send any bytes, read whole packets (type byte
//! and body) with a deadline, and tell apart what the broker did: answered, closed
//! (FIN), reset (RST) or said nothing.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout, Instant};

use crate::proto::{self, ConnectFields, Version};

/// Largest packet the harness accepts from a broker (a delivery with 8,192
/// subscription ids is ~41 KB; a retained message with thousands of user properties
/// can be a few MB).
const MAX_FRAME: usize = 64 << 20;

pub struct Raw {
    pub s: TcpStream,
    buf: BytesMut,
    pub v: Version,
}

/// One packet from the broker: its first byte and its body.
#[derive(Debug)]
pub struct Pkt {
    pub first: u8,
    pub body: Vec<u8>,
}

impl Pkt {
    pub fn kind(&self) -> u8 {
        self.first >> 4
    }
}

#[derive(Debug)]
pub enum Read {
    Got(Pkt),
    /// End of stream (FIN).
    Closed,
    /// A read error, typically "connection reset by peer" (RST).
    Error(String),
    Timeout,
}

pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const SUBACK: u8 = 9;
pub const DISCONNECT: u8 = 14;

impl Raw {
    pub async fn open(addr: SocketAddr, v: Version) -> Result<Raw, String> {
        Raw::open_from(addr, v, None).await
    }

    /// [`Raw::open`] from the local address `from` (another loopback address: another
    /// device as far as the broker can tell), or the one the kernel picks.
    pub async fn open_from(
        addr: SocketAddr,
        v: Version,
        from: Option<IpAddr>,
    ) -> Result<Raw, String> {
        let connect = async {
            let Some(ip) = from else {
                return TcpStream::connect(addr).await;
            };
            let socket = match ip {
                IpAddr::V4(_) => TcpSocket::new_v4()?,
                IpAddr::V6(_) => TcpSocket::new_v6()?,
            };
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(addr).await
        };
        let s = timeout(Duration::from_secs(10), connect)
            .await
            .map_err(|_| "TCP connect timed out".to_string())?
            .map_err(|e| format!("TCP connect: {e}"))?;
        let _ = s.set_nodelay(true);
        Ok(Raw {
            s,
            buf: BytesMut::with_capacity(4096),
            v,
        })
    }

    pub async fn send(&mut self, b: &[u8]) -> Result<(), String> {
        self.s.write_all(b).await.map_err(|e| e.to_string())
    }

    /// [`Raw::send`] that gives up at `until` (a broker that stops reading).
    pub async fn send_by(&mut self, b: &[u8], until: Instant) -> Result<(), String> {
        match tokio::time::timeout_at(until, self.s.write_all(b)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("broker stopped reading (write timed out)".into()),
        }
    }

    /// The next packet, or what happened instead, waiting at most until `until`.
    pub async fn read_until(&mut self, until: Instant) -> Read {
        loop {
            match proto::frame_len(&self.buf) {
                Err(e) => return Read::Error(e.to_string()),
                Ok(Some(n)) if n > MAX_FRAME => {
                    return Read::Error(format!("broker sent a {n}-byte packet"))
                }
                Ok(Some(n)) if self.buf.len() >= n => {
                    let first = self.buf[0];
                    let hdr = n - proto::frame_body_len(&self.buf);
                    let body = self.buf[hdr..n].to_vec();
                    self.buf.advance(n);
                    return Read::Got(Pkt { first, body });
                }
                _ => {}
            }
            if self.buf.capacity() - self.buf.len() < 16 * 1024 {
                self.buf.reserve(64 * 1024);
            }
            match tokio::time::timeout_at(until, self.s.read_buf(&mut self.buf)).await {
                Err(_) => return Read::Timeout,
                Ok(Ok(0)) => return Read::Closed,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Read::Error(e.to_string()),
            }
        }
    }

    pub async fn read(&mut self, wait: Duration) -> Read {
        self.read_until(Instant::now() + wait).await
    }

    /// Connects and sends CONNECT; `Ok((conn, code))` with the CONNACK's code (0:
    /// accepted), `Err` when no CONNACK came.
    pub async fn connect(
        addr: SocketAddr,
        v: Version,
        f: &ConnectFields<'_>,
        wait: Duration,
    ) -> Result<(Raw, u8), String> {
        Raw::connect_from(addr, v, f, wait, None).await
    }

    /// [`Raw::connect`] from the local address `from` (see [`Raw::open_from`]).
    pub async fn connect_from(
        addr: SocketAddr,
        v: Version,
        f: &ConnectFields<'_>,
        wait: Duration,
        from: Option<IpAddr>,
    ) -> Result<(Raw, u8), String> {
        let mut c = Raw::open_from(addr, v, from).await?;
        let mut b = Vec::new();
        proto::connect_with(&mut b, v, f);
        // Bounded: a broker may stop reading a huge CONNECT without closing.
        c.send_by(&b, Instant::now() + wait)
            .await
            .map_err(|e| format!("CONNECT not sent: {e}"))?;
        match c.read(wait).await {
            Read::Got(p) if p.kind() == CONNACK && p.body.len() >= 2 => {
                let code = p.body[1];
                Ok((c, code))
            }
            other => Err(format!("no CONNACK: {}", describe(&other))),
        }
    }

    /// Reads until the broker closes or `wait` passes; what it sent meanwhile.
    pub async fn drain(&mut self, wait: Duration) -> Drained {
        let until = Instant::now() + wait;
        let mut d = Drained::default();
        loop {
            match self.read_until(until).await {
                Read::Got(p) => {
                    d.packets += 1;
                    d.bytes += p.body.len() as u64;
                    if p.kind() == DISCONNECT {
                        d.disconnect = Some(p.body.first().copied().unwrap_or(0));
                    }
                    if p.kind() == SUBACK {
                        d.suback = Some(suback_codes(&p, self.v).to_vec());
                    }
                    if p.kind() == PUBLISH {
                        d.publishes += 1;
                    }
                }
                Read::Closed => {
                    d.end = End::Closed;
                    return d;
                }
                Read::Error(e) => {
                    d.end = End::Error(e);
                    return d;
                }
                Read::Timeout => return d,
            }
        }
    }
}

#[derive(Debug, Default)]
pub enum End {
    #[default]
    Open,
    Closed,
    Error(String),
}

#[derive(Debug, Default)]
pub struct Drained {
    pub packets: u64,
    pub publishes: u64,
    pub bytes: u64,
    pub disconnect: Option<u8>,
    pub suback: Option<Vec<u8>>,
    pub end: End,
}

impl Drained {
    /// "open", "closed", "DISCONNECT 0x97 then closed", ...
    pub fn fate(&self) -> String {
        let end = match &self.end {
            End::Open => "still open".to_string(),
            End::Closed => "closed".to_string(),
            End::Error(e) => format!("reset ({e})"),
        };
        match self.disconnect {
            Some(r) => format!("DISCONNECT {r:#04x}, {end}"),
            None => end,
        }
    }
}

pub fn describe(r: &Read) -> String {
    match r {
        Read::Got(p) => format!("packet type {}", p.kind()),
        Read::Closed => "closed".into(),
        Read::Error(e) => format!("error: {e}"),
        Read::Timeout => "timeout".into(),
    }
}

/// The return / reason codes of a SUBACK body.
pub fn suback_codes(p: &Pkt, v: Version) -> &[u8] {
    let mut i = 2;
    if v == Version::V5 {
        i = skip_props(&p.body, 2).unwrap_or(p.body.len());
    }
    p.body.get(i..).unwrap_or(&[])
}

/// A 5.0 PUBLISH's Topic Alias, if it has one.
pub fn topic_alias(p: &Pkt) -> Option<u16> {
    let tlen = usize::from(u16::from_be_bytes([*p.body.first()?, *p.body.get(1)?]));
    let mut i = 2 + tlen;
    if (p.first >> 1) & 3 > 0 {
        i += 2;
    }
    let (len, n) = varint(p.body.get(i..)?)?;
    let props = p.body.get(i + n..i + n + len)?;
    let mut j = 0;
    while j < props.len() {
        let id = props[j];
        j += 1;
        let skip = match id {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            0x13 | 0x21 | 0x22 | 0x23 => {
                if id == 0x23 {
                    return Some(u16::from_be_bytes([*props.get(j)?, *props.get(j + 1)?]));
                }
                2
            }
            0x02 | 0x11 | 0x18 | 0x27 => 4,
            0x0B => varint(&props[j..])?.1,
            0x26 => {
                let a = str_len(props, j)?;
                a + str_len(props, j + a)?
            }
            _ => str_len(props, j)?,
        };
        j += skip;
    }
    None
}

fn str_len(b: &[u8], i: usize) -> Option<usize> {
    Some(2 + usize::from(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?])))
}

fn varint(b: &[u8]) -> Option<(usize, usize)> {
    let mut v = 0usize;
    for (i, &x) in b.iter().enumerate().take(4) {
        v |= usize::from(x & 0x7F) << (7 * i);
        if x & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn skip_props(b: &[u8], i: usize) -> Option<usize> {
    let (len, n) = varint(b.get(i..)?)?;
    Some(i + n + len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::prop;

    #[test]
    fn topic_alias_found_after_other_props() {
        let mut props = Vec::new();
        prop::user(&mut props, b"k", b"v");
        prop::varint(&mut props, prop::SUBSCRIPTION_ID, 300);
        prop::u16(&mut props, prop::TOPIC_ALIAS, 7);
        let mut b = Vec::new();
        proto::publish_with(&mut b, Version::V5, b"t/x", 1, false, 3, &props, b"p");
        let hdr = b.len() - proto::frame_body_len(&b);
        let p = Pkt {
            first: b[0],
            body: b[hdr..].to_vec(),
        };
        assert_eq!(topic_alias(&p), Some(7));
        let mut b = Vec::new();
        proto::publish_with(&mut b, Version::V5, b"t/x", 0, false, 0, &[], b"p");
        let p = Pkt {
            first: b[0],
            body: b[2..].to_vec(),
        };
        assert_eq!(topic_alias(&p), None);
    }
}
