//! A small blocking MQTT 3.1.1 / 5.0 client for the soak: just what its workers need,
//! with every wait bounded, so a worker notices a broker restart and reconnects.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub type Res<T> = Result<T, String>;

fn io(e: io::Error) -> String {
    e.to_string()
}

/// One packet from the broker: first header byte and body.
pub struct Packet {
    pub byte1: u8,
    pub body: Vec<u8>,
}

impl Packet {
    pub fn kind(&self) -> u8 {
        self.byte1 >> 4
    }

    /// The packet identifier at the start of the body (acks, SUBACK).
    pub fn pkid(&self) -> u16 {
        match self.body.get(..2) {
            Some(b) => u16::from_be_bytes([b[0], b[1]]),
            None => 0,
        }
    }
}

/// An incoming PUBLISH.
pub struct Publish {
    pub qos: u8,
    pub topic: String,
    pub pkid: u16,
    pub payload: Vec<u8>,
}

pub struct Client {
    s: TcpStream,
    buf: Vec<u8>,
    pub v5: bool,
    pub session_present: bool,
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    loop {
        let mut b = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            b |= 0x80;
        }
        out.push(b);
        if v == 0 {
            break;
        }
    }
}

fn frame(byte1: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![byte1];
    put_varint(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// Reads a Variable Byte Integer at `*at`, advancing it.
fn varint(b: &[u8], at: &mut usize) -> Option<usize> {
    let mut v = 0usize;
    for i in 0..4 {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

impl Client {
    /// Connects and waits for the CONNACK; `session_expiry` is for 5.0 (3.1.1 persistent
    /// sessions have none).
    pub fn connect(
        addr: SocketAddr,
        id: &str,
        v5: bool,
        clean: bool,
        session_expiry: u32,
    ) -> Res<Client> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(io)?;
        s.set_nodelay(true).map_err(io)?;
        let mut c = Client {
            s,
            buf: Vec::new(),
            v5,
            session_present: false,
        };
        let mut body = Vec::new();
        put_str(&mut body, b"MQTT");
        body.push(if v5 { 5 } else { 4 });
        body.push(if clean { 0x02 } else { 0 });
        body.extend_from_slice(&30u16.to_be_bytes());
        if v5 {
            let mut props = Vec::new();
            if session_expiry > 0 {
                props.push(0x11);
                props.extend_from_slice(&session_expiry.to_be_bytes());
            }
            put_varint(&mut body, props.len());
            body.extend(props);
        }
        put_str(&mut body, id.as_bytes());
        c.send(&frame(0x10, &body))?;
        let p = c.read(Duration::from_secs(5))?.ok_or("no CONNACK")?;
        if p.byte1 != 0x20 || p.body.len() < 2 {
            return Err(format!("expected CONNACK, got {:#04x}", p.byte1));
        }
        if p.body[1] != 0 {
            return Err(format!("CONNACK refused: {:#04x}", p.body[1]));
        }
        c.session_present = p.body[0] & 1 == 1;
        Ok(c)
    }

    pub fn send(&mut self, bytes: &[u8]) -> Res<()> {
        self.s.write_all(bytes).map_err(io)
    }

    /// The next packet within `wait`, `None` if none came. A closed connection is an error.
    pub fn read(&mut self, wait: Duration) -> Res<Option<Packet>> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(p) = self.parse()? {
                return Ok(Some(p));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.s
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .map_err(io)?;
            let mut chunk = [0u8; 16 * 1024];
            match self.s.read(&mut chunk) {
                Ok(0) => return Err("connection closed by the broker".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    return Ok(None)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(e)),
            }
        }
    }

    fn parse(&mut self) -> Res<Option<Packet>> {
        if self.buf.len() < 2 {
            return Ok(None);
        }
        let mut at = 1;
        let Some(len) = varint(&self.buf, &mut at) else {
            if self.buf.len() >= 5 {
                return Err("bad remaining length from the broker".into());
            }
            return Ok(None);
        };
        if self.buf.len() < at + len {
            return Ok(None);
        }
        let byte1 = self.buf[0];
        let body = self.buf[at..at + len].to_vec();
        self.buf.drain(..at + len);
        Ok(Some(Packet { byte1, body }))
    }

    /// Reads a PUBLISH body; `None` if it is not one or is malformed.
    pub fn publish_of(&self, p: &Packet) -> Option<Publish> {
        if p.kind() != 3 {
            return None;
        }
        let qos = (p.byte1 >> 1) & 3;
        let b = &p.body;
        let tlen = usize::from(u16::from_be_bytes([*b.first()?, *b.get(1)?]));
        let topic = String::from_utf8(b.get(2..2 + tlen)?.to_vec()).ok()?;
        let mut at = 2 + tlen;
        let mut pkid = 0;
        if qos > 0 {
            pkid = u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]);
            at += 2;
        }
        if self.v5 {
            let plen = varint(b, &mut at)?;
            at += plen;
        }
        Some(Publish {
            qos,
            topic,
            pkid,
            payload: b.get(at..)?.to_vec(),
        })
    }

    pub fn publish(
        &mut self,
        topic: &str,
        qos: u8,
        pkid: u16,
        retain: bool,
        payload: &[u8],
    ) -> Res<()> {
        let mut body = Vec::new();
        put_str(&mut body, topic.as_bytes());
        if qos > 0 {
            body.extend_from_slice(&pkid.to_be_bytes());
        }
        if self.v5 {
            body.push(0);
        }
        body.extend_from_slice(payload);
        self.send(&frame(0x30 | qos << 1 | u8::from(retain), &body))
    }

    /// An acknowledgement (PUBACK 0x40, PUBREC 0x50, PUBREL 0x62, PUBCOMP 0x70).
    pub fn ack(&mut self, byte1: u8, pkid: u16) -> Res<()> {
        self.send(&frame(byte1, &pkid.to_be_bytes()))
    }

    /// Subscribes and waits for the SUBACK; fails unless every filter was granted.
    pub fn subscribe(&mut self, pkid: u16, filters: &[(&str, u8)]) -> Res<Vec<Packet>> {
        let mut body = pkid.to_be_bytes().to_vec();
        if self.v5 {
            body.push(0);
        }
        for (f, q) in filters {
            put_str(&mut body, f.as_bytes());
            body.push(*q);
        }
        self.send(&frame(0x82, &body))?;
        // Messages (retained ones, queued ones) may come before the SUBACK: hand them back.
        let mut before = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let Some(p) = self.read(Duration::from_millis(200))? else {
                continue;
            };
            if p.byte1 == 0x90 && p.pkid() == pkid {
                let mut at = 2;
                if self.v5 {
                    let plen = varint(&p.body, &mut at).ok_or("bad SUBACK")?;
                    at += plen;
                }
                let codes = p.body.get(at..).unwrap_or_default();
                if codes.len() != filters.len() || codes.iter().any(|c| *c >= 0x80) {
                    return Err(format!("SUBACK refused: {codes:02x?}"));
                }
                return Ok(before);
            }
            before.push(p);
        }
        Err("no SUBACK".into())
    }

    pub fn disconnect(mut self) {
        let _ = self.send(&[0xE0, 0x00]);
    }
}
