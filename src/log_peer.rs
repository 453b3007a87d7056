//! A client's address as the connect and close log lines write it, for a quarter of what
//! `SocketAddr`'s `Display` costs.
//!
//! `SocketAddr`'s `Display` writes an IPv4 address as nine pieces (four octets through
//! `core::fmt`'s integer padding, the dots, the port): about 1,500 instructions under
//! callgrind, against about 400 for [`PeerText`], which writes the same text with plain
//! digit arithmetic (measured when octets had a writer of their own; the one decimal
//! writer now costs each octet a few more divisions). The connect line uses the address twice (in the message and as
//! `peer`), the close line once: 2,700 of the 33,000 instructions midge spent per
//! connection at `log_level = "info"` once the lines' formatting was cheap
//! (docs/BENCHMARKS.md, issue 15).

use std::fmt::{self, Write};
use std::net::SocketAddr;

/// The longest `SocketAddr` text: `[` eight groups of four hex digits `%` a 32-bit scope
/// id `]:` a port (58 bytes).
const CAPACITY: usize = 64;

/// `addr` as `SocketAddr`'s `Display` writes it (`127.0.0.1:50312`, `[::1]:50312`).
pub struct PeerText {
    buf: [u8; CAPACITY],
    len: usize,
}

impl PeerText {
    pub fn new(addr: SocketAddr) -> PeerText {
        let mut text = PeerText {
            buf: [0; CAPACITY],
            len: 0,
        };
        match addr {
            SocketAddr::V4(v4) => {
                let [a, b, c, d] = v4.ip().octets();
                for (octet, after) in [(a, b'.'), (b, b'.'), (c, b'.'), (d, b':')] {
                    text.decimal(octet.into());
                    text.push(after);
                }
                text.decimal(v4.port());
            }
            // IPv6's compression rules are std's; they fit (see CAPACITY).
            SocketAddr::V6(_) => {
                if write!(text, "{addr}").is_err() {
                    text.len = 0;
                }
            }
        }
        text
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII was written (digits, dots, colons, brackets, hex digits, `%`).
        std::str::from_utf8(self.buf.get(..self.len).unwrap_or_default()).unwrap_or_default()
    }

    fn push(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    /// `n` (an octet or the port) in decimal, without leading zeros.
    fn decimal(&mut self, n: u16) {
        let mut started = false;
        for div in [10_000, 1000, 100, 10] {
            let d = n / div % 10;
            started |= d > 0;
            if started {
                self.push(b'0' + d as u8);
            }
        }
        self.push(b'0' + (n % 10) as u8);
    }
}

impl Write for PeerText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let slot = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl fmt::Display for PeerText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, as `SocketAddr` does when given a width.
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_socket_addr_writes() {
        for addr in [
            "127.0.0.1:50312",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.20.3.40:1883",
            "1.99.100.9:10",
            "100.10.0.255:100",
            "[::1]:50312",
            "[::ffff:192.0.2.1]:80",
            "[2001:db8::1%4294967295]:443",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535",
        ] {
            let parsed: SocketAddr = addr.parse().unwrap();
            assert_eq!(PeerText::new(parsed).as_str(), parsed.to_string());
            assert_eq!(PeerText::new(parsed).to_string(), parsed.to_string());
            assert_eq!(
                format!("{:>24}|", PeerText::new(parsed)),
                format!("{parsed:>24}|")
            );
        }
    }
}
