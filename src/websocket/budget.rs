//! What a WebSocket client may make the broker read before its CONNECT is whole.
//!
//! On TCP, an unauthenticated connection makes the broker hold at most its CONNECT, which
//! `max_connect_size` bounds from the packet's fixed header. Over WebSockets the frame
//! comes first: tungstenite takes a frame of up to `max_packet_size` into its buffer
//! before midge sees a byte of it. So until the first packet (the CONNECT) has been
//! handed to the connection, the socket underneath may give tungstenite only the
//! CONNECT's limit plus one read's worth ([`SLACK`]: frame headers, and what a client
//! sends right behind its CONNECT); past that the connection fails. Once the CONNECT is
//! through, [`Budget::lift`] takes the limit off.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::log_limit::LogLimit;

/// Room beyond the CONNECT's own limit: one of tungstenite's reads.
pub const SLACK: usize = 16 * 1024;

/// A socket whose reads are counted against a budget until it is lifted.
pub struct Budget<S> {
    inner: S,
    /// Bytes still allowed; `None` once lifted.
    left: Option<usize>,
}

impl<S> Budget<S> {
    pub fn new(inner: S, connect_limit: usize) -> Budget<S> {
        Budget {
            inner,
            left: Some(connect_limit.saturating_add(SLACK)),
        }
    }

    pub fn lift(&mut self) {
        self.left = None;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Budget<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let n = buf.filled().len() - before;
        let Some(left) = self.left else {
            return Poll::Ready(Ok(()));
        };
        match left.checked_sub(n) {
            Some(rest) => {
                self.left = Some(rest);
                Poll::Ready(Ok(()))
            }
            None => {
                static LOG: LogLimit = LogLimit::new(10_000);
                if let Some(suppressed) = LOG.allow() {
                    tracing::info!(
                        event = "websocket_connect_too_large",
                        suppressed,
                        "websocket client sent more than max_connect_size before its \
                         CONNECT was whole: closing"
                    );
                }
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "more than max_connect_size before CONNECT",
                )))
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Budget<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Where the first packet ends in the bytes handed to the connection: its fixed header is
/// read as it passes, then its length counted down.
#[derive(Debug, Default)]
pub struct FirstPacket {
    /// The fixed header's bytes so far (type byte and remaining length).
    header: [u8; 5],
    header_len: usize,
    /// Bytes of the packet still to pass, once the header is whole.
    left: Option<usize>,
}

impl FirstPacket {
    /// Counts `bytes` passing; true once the whole packet has passed.
    pub fn passed(&mut self, mut bytes: &[u8]) -> bool {
        while self.left.is_none() {
            let Some((&b, rest)) = bytes.split_first() else {
                return false;
            };
            bytes = rest;
            self.header[self.header_len] = b;
            self.header_len += 1;
            // The remaining length's bytes follow the type byte; the last has no
            // continuation bit. Five bytes without an end are malformed: the codec
            // refuses them, so counting stops there.
            if self.header_len >= 2 && (b & 0x80 == 0 || self.header_len == 5) {
                let remaining = self.header[1..self.header_len]
                    .iter()
                    .rev()
                    .fold(0usize, |acc, b| (acc << 7) | usize::from(b & 0x7f));
                self.left = Some(remaining);
            }
        }
        let left = self.left.unwrap_or(0);
        let rest = left.saturating_sub(bytes.len());
        self.left = Some(rest);
        rest == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_packet_ends_where_its_fixed_header_says() {
        // CONNECT, remaining length 300 (0xac 0x02), in pieces that cut the header.
        let mut packet = vec![0x10, 0xac, 0x02];
        packet.extend(std::iter::repeat_n(7u8, 300));
        for cut in [1, 2, 3, 100, 302] {
            let mut f = FirstPacket::default();
            assert!(!f.passed(&packet[..cut]), "cut {cut}");
            assert!(f.passed(&packet[cut..]), "cut {cut}");
        }
        let mut f = FirstPacket::default();
        assert!(!f.passed(&packet[..packet.len() - 1]));
        assert!(f.passed(&[7, 0xc0, 0]), "and more behind it");
        let mut f = FirstPacket::default();
        assert!(f.passed(&[0xe0, 0]), "an empty packet");
    }

    #[tokio::test]
    async fn reads_past_the_budget_fail_until_it_is_lifted() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(&[1u8; 40_000]).await.unwrap();
        let mut budget = Budget::new(server, 10_000);
        let mut buf = vec![0u8; 40_000];
        let mut read = 0;
        let failed = loop {
            match budget.read(&mut buf).await {
                Ok(n) => read += n,
                Err(e) => break e,
            }
        };
        assert_eq!(failed.kind(), io::ErrorKind::InvalidData);
        assert!(read <= 10_000 + SLACK, "{read}");
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(&[1u8; 40_000]).await.unwrap();
        drop(client);
        let mut budget = Budget::new(server, 10);
        budget.lift();
        let mut all = Vec::new();
        budget.read_to_end(&mut all).await.unwrap();
        assert_eq!(all.len(), 40_000);
    }
}
