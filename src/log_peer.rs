//! A client's address as the connect and close log lines write it, for a quarter of what
//! `SocketAddr`'s `Display` costs; and the connect line's message, written the same way
//! ([`connected_message`]).
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
pub type PeerText = Text<CAPACITY>;

/// Text written into a buffer of its own, `N` bytes at most (what does not fit is cut,
/// and a `write!` that does not fit fails).
pub struct Text<const N: usize> {
    buf: [u8; N],
    len: usize,
}

/// The connect line's longest message: the fixed words, a peer, and a client id and a
/// username each cut by `log_limit::field` (64 bytes, and the length noted).
const MESSAGE_CAPACITY: usize = 384;

/// The connect line's message, `New client connected from ADDR as ID (pP, cC, kK[, u'USER']).`,
/// as `format!` writes it, for a fifth of the instructions: `core::fmt` goes through each
/// argument's `Display` with padding checks, and this copies bytes and writes the three
/// numbers with plain digit arithmetic. `client_id` and `user` are the fields as logged
/// (cut by `log_limit::field`). `None` if it does not fit (not seen: see
/// [`MESSAGE_CAPACITY`]); the caller formats it then.
pub fn connected_message(
    peer: SocketAddr,
    client_id: &str,
    level: u8,
    clean: bool,
    keep_alive: u16,
    user: Option<&str>,
) -> Option<Text<MESSAGE_CAPACITY>> {
    let mut t = Text::<MESSAGE_CAPACITY> {
        buf: [0; MESSAGE_CAPACITY],
        len: 0,
    };
    t.write_str("New client connected from ").ok()?;
    t.addr(peer).ok()?;
    t.write_str(" as ").ok()?;
    t.write_str(client_id).ok()?;
    t.write_str(" (p").ok()?;
    t.decimal(level.into());
    t.write_str(if clean { ", c1, k" } else { ", c0, k" })
        .ok()?;
    t.decimal(keep_alive);
    if let Some(u) = user {
        t.write_str(", u'").ok()?;
        t.write_str(u).ok()?;
        t.write_str("'").ok()?;
    }
    // (`decimal` cuts rather than fails, only when the buffer is full: then this fails.)
    t.write_str(").").ok()?;
    Some(t)
}

impl PeerText {
    pub fn new(addr: SocketAddr) -> PeerText {
        let mut text = PeerText {
            buf: [0; CAPACITY],
            len: 0,
        };
        if text.addr(addr).is_err() {
            text.len = 0;
        }
        text
    }
}

impl<const N: usize> Text<N> {
    /// Appends `addr` as `SocketAddr`'s `Display` writes it.
    fn addr(&mut self, addr: SocketAddr) -> fmt::Result {
        match addr {
            SocketAddr::V4(v4) => {
                let [a, b, c, d] = v4.ip().octets();
                for (octet, after) in [(a, b'.'), (b, b'.'), (c, b'.'), (d, b':')] {
                    self.decimal(octet.into());
                    self.push(after);
                }
                self.decimal(v4.port());
                Ok(())
            }
            // IPv6's compression rules are std's; they fit (see CAPACITY).
            SocketAddr::V6(_) => write!(self, "{addr}"),
        }
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

impl<const N: usize> Write for Text<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let slot = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl<const N: usize> fmt::Display for Text<N> {
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

    #[test]
    fn connected_message_is_what_format_writes() {
        let long = "x".repeat(crate::log_limit::MAX_LOGGED_FIELD + 10);
        let long = crate::log_limit::field(&long);
        for (addr, id, level, clean, ka, user) in [
            ("127.0.0.1:50312", "bench-conn-1", 4u8, true, 60u16, None),
            ("[::1]:1", "", 5, false, 0, Some("alice")),
            (
                "255.255.255.255:65535",
                &*long,
                3,
                true,
                65535,
                Some(&*long),
            ),
            (
                "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535",
                &*long,
                5,
                false,
                10,
                Some("é'"),
            ),
        ] {
            let parsed: SocketAddr = addr.parse().unwrap();
            let expected = format!(
                "New client connected from {} as {} (p{level}, c{}, k{ka}{}).",
                parsed,
                id,
                u8::from(clean),
                user.map(|u| format!(", u'{u}'")).unwrap_or_default(),
            );
            let message = connected_message(parsed, id, level, clean, ka, user).unwrap();
            assert_eq!(message.as_str(), expected);
        }
    }
}
