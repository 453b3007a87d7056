//! The byte stream the connection reads and writes, over a WebSocket's binary messages.
//!
//! MQTT over WebSockets carries the same bytes as over TCP, in binary data frames: one
//! packet may span several frames, and one frame may hold several packets
//! [MQTT-6.0.0-2]. So the frames' boundaries are dropped here and the codec and the
//! connection loop stay as they are for TCP: what a binary message carries is read
//! as the next bytes of the stream, and what the connection writes goes out as one binary
//! message per (vectored) write: the connection writes whole batches of packets.
//!
//! The frame and message size limit is the largest MQTT packet (`max_packet_size` plus
//! its fixed header); tungstenite refuses a longer one from its header, before reading
//! its payload. A text frame is a protocol error [MQTT-6.0.0-1]; ping, pong and close
//! frames are tungstenite's (a ping is answered on the next read or write).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use super::budget::{Budget, FirstPacket};
use crate::log_limit::LogLimit;

/// What tungstenite reads from the socket at once (and holds for every connection from
/// its start): as the connection's own read buffer (`READ_MIN`), small enough for idle
/// connections, large enough that a 1 MiB frame takes 64 reads, not 256.
const READ_CHUNK: usize = 16 * 1024;

/// The longest MQTT fixed header: a type byte and a four-byte remaining length.
const FIXED_HEADER_MAX: usize = 5;

/// tungstenite's settings for a broker's side of a connection.
pub fn config(max_packet_size: usize) -> WebSocketConfig {
    let max = max_packet_size.saturating_add(FIXED_HEADER_MAX);
    WebSocketConfig::default()
        .read_buffer_size(READ_CHUNK)
        // Written at once: the connection writes whole batches and flushes after each,
        // and a buffer here would be a second copy of its outbox.
        .write_buffer_size(0)
        .max_frame_size(Some(max))
        .max_message_size(Some(max))
}

/// A WebSocket connection as a byte stream (see the module's comment).
pub struct WsBytes<S> {
    ws: WebSocketStream<Budget<S>>,
    /// Until the CONNECT has passed: where it ends (then the socket's budget is lifted).
    first: Option<FirstPacket>,
    /// The rest of the last binary message, not yet read.
    pending: Bytes,
    /// The close frame to send when the connection ends, for a close the broker causes.
    close: Option<CloseFrame>,
    /// Bytes taken into a frame that the socket has not taken all of yet. A write returns
    /// only once the socket has the whole frame, as a TCP write returns what the kernel
    /// took: otherwise the end of a batch could wait in tungstenite's buffer with nothing
    /// to flush it, as the connection never flushes (a TCP socket has nothing to flush).
    /// So the write is `Pending` until then, and the caller, which retries with the same
    /// bytes in front (the outbox consumes only what a write reports), is told `n` then.
    unflushed: Option<usize>,
}

impl<S> WsBytes<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    pub fn new(ws: WebSocketStream<Budget<S>>) -> WsBytes<S> {
        WsBytes {
            ws,
            first: Some(FirstPacket::default()),
            pending: Bytes::new(),
            close: None,
            unflushed: None,
        }
    }

    /// Ends reading with `e`, and the close frame says why (RFC 6455 §7.4.1).
    fn fail(&mut self, code: CloseCode, why: &'static str) -> io::Error {
        self.close = Some(CloseFrame {
            code,
            reason: why.into(),
        });
        io::Error::new(io::ErrorKind::InvalidData, why)
    }

    fn read_error(&mut self, e: tungstenite::Error) -> io::Error {
        use tungstenite::error::CapacityError;
        match e {
            tungstenite::Error::Io(e) => e,
            tungstenite::Error::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                static LOG: LogLimit = LogLimit::new(10_000);
                if let Some(suppressed) = LOG.allow() {
                    tracing::warn!(
                        event = "websocket_frame_too_large",
                        size,
                        max_size,
                        suppressed,
                        "websocket frame of {size} bytes is over max_packet_size \
                         ({max_size} with the fixed header): closing the connection"
                    );
                }
                self.fail(CloseCode::Size, "frame larger than max_packet_size")
            }
            tungstenite::Error::Utf8(_) => {
                self.fail(CloseCode::Invalid, "invalid UTF-8 in a close frame")
            }
            e => {
                let text = e.to_string();
                self.close = Some(CloseFrame {
                    code: CloseCode::Protocol,
                    reason: "websocket protocol error".into(),
                });
                io::Error::new(io::ErrorKind::InvalidData, text)
            }
        }
    }
}

fn write_error(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::ErrorKind::BrokenPipe.into()
        }
        e => io::Error::other(e.to_string()),
    }
}

impl<S> AsyncRead for WsBytes<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        use futures_util::StreamExt;
        let this = &mut *self;
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                if let Some(first) = &mut this.first {
                    if first.passed(&this.pending[..n]) {
                        this.first = None;
                        this.ws.get_mut().lift();
                    }
                }
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(this.ws.poll_next_unpin(cx)) {
                // The end of the stream: the peer's close frame (answered by tungstenite),
                // or the socket's end.
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(data))) => this.pending = data,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(this.fail(
                        CloseCode::Unsupported,
                        "text frame: MQTT travels in binary frames [MQTT-6.0.0-1]",
                    )))
                }
                // Pings are answered by tungstenite; pongs and raw frames carry nothing.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Err(e)) => return Poll::Ready(Err(this.read_error(e))),
            }
        }
    }
}

impl<S> AsyncWrite for WsBytes<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    /// All of `bufs` in one binary frame (the outbox hands its queued segments and its
    /// tail at once: one frame and one system call per batch, as on TCP).
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        use futures_util::SinkExt;
        let this = &mut *self;
        if let Some(n) = this.unflushed {
            // The caller is back with the same bytes in front (see `unflushed`).
            ready!(this.ws.poll_flush_unpin(cx)).map_err(write_error)?;
            this.unflushed = None;
            return Poll::Ready(Ok(n));
        }
        ready!(this.ws.poll_ready_unpin(cx)).map_err(write_error)?;
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        let mut frame = Vec::with_capacity(len);
        bufs.iter().for_each(|b| frame.extend_from_slice(b));
        this.ws
            .start_send_unpin(Message::Binary(frame.into()))
            .map_err(write_error)?;
        match this.ws.poll_flush_unpin(cx) {
            Poll::Ready(r) => Poll::Ready(r.map(|()| len).map_err(write_error)),
            Poll::Pending => {
                this.unflushed = Some(len);
                Poll::Pending
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        use futures_util::SinkExt;
        self.ws.poll_flush_unpin(cx).map_err(write_error)
    }

    /// The closing handshake: a close frame (with the reason the broker closes, if it is
    /// the broker's doing), then what tungstenite has left to write.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        use futures_util::SinkExt;
        if let Some(frame) = self.close.take() {
            // Queues it (and marks the connection closed by us); errors show in the flush.
            let _ = self.ws.start_send_unpin(Message::Close(Some(frame)));
        }
        self.ws.poll_close_unpin(cx).map_err(write_error)
    }
}
