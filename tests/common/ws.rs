//! The raw WebSocket test client (RFC 6455, client side): the upgrade request, masked
//! frames of any opcode and size out, frames in. [`Ws::into_raw`] turns an upgraded
//! connection into a [`Raw`] MQTT client, so every verb of the raw client works over
//! WebSockets too: two threads carry its bytes to and from binary frames.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::raw::{Raw, WAIT};
use super::rng::Rng;
use super::Broker;

pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// A config (for [`Broker::start`]) with a TCP listener on the broker's port and a
/// WebSocket listener on its second port, with `ws` (keys of the WebSocket listener) and
/// `top` (top-level keys).
pub fn config(top: &str, ws: &str) -> String {
    format!(
        "{top}\n[[listener]]\nbind = \"127.0.0.1\"\n\n[[listener]]\nbind = \"127.0.0.1\"\n\
         port = {}\nprotocol = \"websockets\"\n{ws}\n",
        super::SECOND_PORT
    )
}

/// The WebSocket listener's address.
pub fn ws_addr(b: &Broker) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], b.second_port))
}

/// A request head as MQTT.js in a browser sends it, with `extra` header lines.
pub fn request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

pub struct Ws {
    pub s: TcpStream,
    buf: Vec<u8>,
    rng: Rng,
}

impl Ws {
    /// Sends `head` and reads the answer's head: (the connection, the answer).
    pub fn request(addr: SocketAddr, head: &str) -> (Ws, String) {
        let mut s = TcpStream::connect_timeout(&addr, WAIT).expect("TCP connect to midge");
        s.set_nodelay(true).expect("nodelay");
        s.set_read_timeout(Some(WAIT)).expect("read timeout");
        s.write_all(head.as_bytes())
            .expect("send the upgrade request");
        let mut ws = Ws::from_stream(s);
        let answer = ws.read_head();
        (ws, answer)
    }

    /// A connection opened elsewhere (its request sent or not).
    pub fn from_stream(s: TcpStream) -> Ws {
        Ws {
            s,
            buf: Vec::new(),
            rng: Rng::new(0x5eed),
        }
    }

    /// An upgraded connection on path `/mqtt` offering `mqtt`; panics otherwise.
    pub fn open(addr: SocketAddr) -> Ws {
        let (ws, answer) = Ws::request(addr, &request("/mqtt", "Sec-WebSocket-Protocol: mqtt\r\n"));
        assert!(
            answer.starts_with("HTTP/1.1 101 "),
            "upgrade refused: {answer}"
        );
        ws
    }

    /// The answer's head (up to its empty line), or what came before the close.
    fn read_head(&mut self) -> String {
        let mut byte = [0u8; 1];
        while !self.buf.ends_with(b"\r\n\r\n") {
            match self.s.read(&mut byte) {
                Ok(1) => self.buf.push(byte[0]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned()
    }

    /// One frame, masked as a client's must be.
    pub fn frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = (self.rng.next_u64() as u32).to_be_bytes();
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let f = self.frame(fin, opcode, payload);
        self.s.write_all(&f).expect("write a frame to midge");
    }

    /// A binary message in one frame.
    pub fn send(&mut self, payload: &[u8]) {
        self.send_frame(true, BINARY, payload);
    }

    /// The next frame (fin, opcode, payload), or `None` when the connection closed or
    /// nothing came within `within`.
    pub fn read_frame(&mut self, within: Duration) -> Option<(bool, u8, Vec<u8>)> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(f) = take_frame(&mut self.buf) {
                return Some(f);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.s
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            let mut chunk = [0u8; 16 * 1024];
            match self.s.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next data frame's payload, skipping control frames; `None` as `read_frame`.
    pub fn read_data(&mut self, within: Duration) -> Option<Vec<u8>> {
        loop {
            let (_, opcode, payload) = self.read_frame(within)?;
            if opcode == BINARY || opcode == 0 {
                return Some(payload);
            }
            if opcode == CLOSE {
                return None;
            }
        }
    }

    /// Reads frames until the close frame: its status code (`None` when the connection
    /// ended without one).
    pub fn close_code(&mut self, within: Duration) -> Option<u16> {
        while let Some((_, opcode, payload)) = self.read_frame(within) {
            if opcode == CLOSE {
                return Some(
                    payload
                        .get(..2)
                        .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]])),
                );
            }
        }
        None
    }

    /// Whether the broker closed the TCP connection within `within` (reading and
    /// discarding whatever comes first).
    pub fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut chunk = [0u8; 4096];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let _ = self
                .s
                .set_read_timeout(Some(left.max(Duration::from_millis(1))));
            match self.s.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
                Err(_) => return true,
            }
        }
        false
    }

    /// The connection as a raw MQTT client (see the module's comment). The threads end
    /// when either side closes.
    pub fn into_raw(self) -> Raw {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind a local pipe");
        let near = TcpStream::connect(l.local_addr().expect("addr")).expect("connect the pipe");
        let (far, _) = l.accept().expect("accept the pipe");
        near.set_nodelay(true).expect("nodelay");
        let mut to_broker = Ws {
            s: self.s.try_clone().expect("clone"),
            buf: Vec::new(),
            rng: Rng::new(0xfeed),
        };
        let mut from_broker = self;
        let _ = from_broker.s.set_read_timeout(None);
        let mut far_in = far.try_clone().expect("clone");
        let mut far_out = far;
        std::thread::spawn(move || {
            let mut chunk = [0u8; 64 * 1024];
            loop {
                match far_in.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let f = to_broker.frame(true, BINARY, &chunk[..n]);
                        if to_broker.s.write_all(&f).is_err() {
                            break;
                        }
                    }
                }
            }
            let close = to_broker.frame(true, CLOSE, &1000u16.to_be_bytes());
            let _ = to_broker.s.write_all(&close);
        });
        std::thread::spawn(move || {
            // Until the broker closes: frames are waited for without a deadline.
            while let Some((_, opcode, payload)) = from_broker.read_frame(Duration::from_secs(3600))
            {
                match opcode {
                    CLOSE => break,
                    PING => {
                        let pong = from_broker.frame(true, PONG, &payload);
                        let _ = from_broker.s.write_all(&pong);
                    }
                    _ if far_out.write_all(&payload).is_err() => break,
                    _ => {}
                }
            }
            let _ = far_out.shutdown(Shutdown::Both);
        });
        Raw::from_stream(near, "")
    }
}

/// Takes one whole frame from the front of `buf` (a server's frames are not masked).
fn take_frame(buf: &mut Vec<u8>) -> Option<(bool, u8, Vec<u8>)> {
    let (b0, b1) = (*buf.first()?, *buf.get(1)?);
    let (len, mut at) = match b1 & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let mask = if b1 & 0x80 != 0 {
        let m: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(m)
    } else {
        None
    };
    let mut payload = buf.get(at..at + len)?.to_vec();
    if let Some(m) = mask {
        payload
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b ^= m[i % 4]);
    }
    buf.drain(..at + len);
    Some((b0 & 0x80 != 0, b0 & 0x0f, payload))
}
