//! The HTTP/1.1 request that opens a WebSocket (RFC 6455 §4.2), read and answered here
//! rather than by tungstenite's handshake, so that it is bounded: at most
//! [`MAX_REQUEST`] bytes and [`MAX_HEADERS`] headers, within the connection's CONNECT
//! deadline (the caller's). A request is let in only on the listener's path, from an
//! allowed origin, offering an MQTT subprotocol; otherwise it gets an HTTP error and the
//! connection closes.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::config::{Listener, TrustedProxy};

/// The longest request head: browsers send about 500 bytes, with cookies a few KiB.
pub const MAX_REQUEST: usize = 8 * 1024;
/// The most headers in it.
pub const MAX_HEADERS: usize = 48;

/// The subprotocols midge speaks: `mqtt` (MQTT 3.1.1 and 5.0 [MQTT-6.0.0-3]) and
/// `mqttv3.1`, which old MQTT 3.1 clients ask for.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Why a request is not upgraded: the status line and a header to send with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub why: &'static str,
    /// A header line (with its CRLF) the answer carries, or "".
    extra: &'static str,
}

impl Refusal {
    const fn new(status: u16, why: &'static str) -> Refusal {
        Refusal {
            status,
            why,
            extra: "",
        }
    }

    /// The answer's bytes: an empty body, and the connection closes.
    pub fn response(&self) -> String {
        let text = match self.status {
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            426 => "Upgrade Required",
            431 => "Request Header Fields Too Large",
            _ => "Bad Request",
        };
        format!(
            "HTTP/1.1 {} {text}\r\nConnection: close\r\nContent-Length: 0\r\n{}\r\n",
            self.status, self.extra
        )
    }
}

pub const TOO_LARGE: Refusal = Refusal::new(431, "request head over 8 KiB or 48 headers");

/// An accepted upgrade: the 101 answer to send, and the client's address (the proxy's
/// `X-Forwarded-For` one where the proxy is trusted).
#[derive(Debug, PartialEq, Eq)]
pub struct Accepted {
    pub response: String,
    pub peer: SocketAddr,
}

/// How reading the request head ended.
#[derive(Debug)]
pub enum Read {
    /// The head is `buf[..n]`; what follows it already belongs to the WebSocket.
    Head(usize),
    /// Over [`MAX_REQUEST`] bytes without its end.
    TooLarge,
    /// The connection closed or failed first.
    Closed,
}

/// Reads until the empty line that ends the request head.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> Read {
    let mut chunk = [0u8; 1024];
    loop {
        // Where the end may be: the last 3 bytes read before may start it.
        let from = buf.len().saturating_sub(3);
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Read::Closed,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = from + at + 4;
            return if end > MAX_REQUEST {
                Read::TooLarge
            } else {
                Read::Head(end)
            };
        }
        if buf.len() >= MAX_REQUEST {
            return Read::TooLarge;
        }
    }
}

/// The answer to the request head `head` on `listener`, from `peer`.
pub fn answer(head: &[u8], listener: &Listener, peer: SocketAddr) -> Result<Accepted, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => return Err(TOO_LARGE),
        _ => return Err(Refusal::new(400, "not an HTTP/1.1 request")),
    }
    if request.method != Some("GET") {
        return Err(Refusal::new(405, "not a GET"));
    }
    if request.version != Some(1) {
        return Err(Refusal::new(400, "not HTTP/1.1"));
    }
    let path = request.path.unwrap_or("");
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if path != listener.websockets_path {
        return Err(Refusal::new(404, "not the listener's websockets_path"));
    }
    let all = |name: &'static str| {
        request
            .headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
    };
    let one = |name: &str| {
        let mut values = request
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name));
        match (values.next(), values.next()) {
            (Some(h), None) => std::str::from_utf8(h.value).ok().map(str::trim),
            _ => None,
        }
    };
    if !all("upgrade").any(|t| t.eq_ignore_ascii_case("websocket")) {
        return Err(Refusal {
            extra: "Upgrade: websocket\r\n",
            ..Refusal::new(426, "no Upgrade: websocket")
        });
    }
    if !all("connection").any(|t| t.eq_ignore_ascii_case("upgrade")) {
        return Err(Refusal::new(400, "no Connection: Upgrade"));
    }
    if one("sec-websocket-version") != Some("13") {
        return Err(Refusal {
            extra: "Sec-WebSocket-Version: 13\r\n",
            ..Refusal::new(426, "not WebSocket version 13")
        });
    }
    // 16 random bytes in base64 (§4.1); its value only goes into the accept key.
    let key = match one("sec-websocket-key") {
        Some(k) if k.len() == 24 => k,
        _ => return Err(Refusal::new(400, "no valid Sec-WebSocket-Key")),
    };
    if !listener.websockets_origin.is_empty() {
        if let Some(origin) = one("origin") {
            if !listener.websockets_origin.iter().any(|o| o == origin) {
                return Err(Refusal::new(403, "Origin not in websockets_origin"));
            }
        }
    }
    // The client's first choice among those midge speaks [MQTT-6.0.0-4].
    let Some(protocol) = all("sec-websocket-protocol").find_map(|offered| {
        SUBPROTOCOLS
            .into_iter()
            .find(|p| offered.eq_ignore_ascii_case(p))
    }) else {
        return Err(Refusal::new(400, "no MQTT subprotocol (mqtt) offered"));
    };
    let peer = forwarded_for(peer, &listener.trusted_proxies, all("x-forwarded-for"));
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    Ok(Accepted { response, peer })
}

/// The client's address: `peer`, unless `peer` is a trusted proxy; then the last address
/// in `X-Forwarded-For` that is not a trusted proxy itself (each proxy appends the address
/// it was connected from, so the ones before a trusted proxy's may be anyone's claim).
/// The port is 0: the header has none.
fn forwarded_for<'a>(
    peer: SocketAddr,
    trusted: &[TrustedProxy],
    chain: impl DoubleEndedIterator<Item = &'a str>,
) -> SocketAddr {
    let trusted_ip = |ip: IpAddr| trusted.iter().any(|t| t.contains(ip));
    if !trusted_ip(peer.ip()) {
        return peer;
    }
    for hop in chain.rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            // Not an address (a port, an obfuscated name): nothing further is trusted.
            return peer;
        };
        if !trusted_ip(ip) {
            return SocketAddr::new(ip, 0);
        }
    }
    peer
}

#[cfg(test)]
#[path = "upgrade_tests.rs"]
mod tests;
