//! A connection's outgoing bytes, written with vectored writes.
//!
//! Small packets (acknowledgements, small PUBLISHes) are encoded into one contiguous
//! buffer, so a burst of them leaves in one syscall. A large payload is not copied: its
//! PUBLISH header is encoded into the buffer and the payload itself, the same [`Bytes`]
//! every other subscriber's outbox holds, is queued as a segment of its own. A 1 MiB
//! message fanned out to ten subscribers stays one 1 MiB allocation.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

use crate::codec::{self, QoS};

/// Payloads at least this large are shared with the outbox instead of copied into it.
pub const SHARE_FROM: usize = 16 * 1024;

/// Encoding starts with this much room, so a burst does not grow the buffer step by step.
const INITIAL: usize = 4096;

/// At most this many segments go into one vectored write.
const MAX_SLICES: usize = 64;

#[derive(Default)]
pub struct Outbox {
    /// Frozen segments waiting to be written, in order, before `tail`. Boxed and
    /// allocated on the first large payload: most connections never have one.
    #[allow(clippy::box_collection)]
    segments: Option<Box<VecDeque<Bytes>>>,
    /// Where packets are encoded; written after `segments`.
    tail: BytesMut,
    /// Bytes in `segments`.
    segments_len: usize,
}

impl Outbox {
    /// The buffer to encode small packets into (they go out after everything queued).
    pub fn buf(&mut self) -> &mut BytesMut {
        if self.tail.capacity() == 0 {
            self.tail.reserve(INITIAL);
        }
        &mut self.tail
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.segments_len + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Encodes a PUBLISH; a large payload is queued by reference, not copied.
    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        &mut self,
        topic: &str,
        payload: &Bytes,
        qos: QoS,
        pkid: u16,
        retain: bool,
        dup: bool,
    ) {
        let tail = self.buf();
        if payload.len() < SHARE_FROM {
            codec::encode_publish(tail, topic, payload, qos, pkid, retain, dup);
            return;
        }
        codec::encode_publish_header(tail, topic, payload.len(), qos, pkid, retain, dup);
        let head = tail.split().freeze();
        self.segments_len += head.len() + payload.len();
        let segments = self.segments.get_or_insert_default();
        segments.push_back(head);
        segments.push_back(payload.clone());
    }

    /// Encodes an MQTT 5.0 PUBLISH; a large payload is queued by reference, not copied.
    pub fn publish_v5(&mut self, p: &codec::PublishOut<'_>, payload: &Bytes) {
        let tail = self.buf();
        if payload.len() < SHARE_FROM {
            codec::encode_publish_v5(tail, p, payload);
            return;
        }
        codec::encode_publish_header_v5(tail, p, payload.len());
        let head = tail.split().freeze();
        self.segments_len += head.len() + payload.len();
        let segments = self.segments.get_or_insert_default();
        segments.push_back(head);
        segments.push_back(payload.clone());
    }

    /// Writes as much as one (vectored) write takes, consuming what was written.
    pub fn poll_write_to<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        w: &mut W,
    ) -> Poll<std::io::Result<usize>> {
        let polled = if let Some(segments) = self.segments.as_ref().filter(|s| !s.is_empty()) {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES + 1];
            let mut used = 0;
            for s in segments.iter().take(MAX_SLICES) {
                slices[used] = IoSlice::new(s);
                used += 1;
            }
            if segments.len() <= MAX_SLICES && !self.tail.is_empty() {
                slices[used] = IoSlice::new(&self.tail);
                used += 1;
            }
            Pin::new(&mut *w).poll_write_vectored(cx, &slices[..used])
        } else {
            Pin::new(&mut *w).poll_write(cx, &self.tail)
        };
        if let Poll::Ready(Ok(n)) = polled {
            self.consume(n);
        }
        polled
    }

    fn consume(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.segments.as_mut().and_then(|s| s.front_mut()) else {
                let take = n.min(self.tail.len());
                self.tail.advance(take);
                return;
            };
            if n >= front.len() {
                n -= front.len();
                self.segments_len -= front.len();
                if let Some(s) = self.segments.as_mut() {
                    s.pop_front();
                }
            } else {
                front.advance(n);
                self.segments_len -= n;
                return;
            }
        }
    }

    /// Writes everything (used when closing).
    pub async fn flush_all<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> std::io::Result<()> {
        while !self.is_empty() {
            if std::future::poll_fn(|cx| self.poll_write_to(cx, w)).await? == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }

    /// Once everything is written, lets go of the buffers: an idle connection holds no
    /// output memory, and the next burst starts from a fresh [`INITIAL`] reservation.
    pub fn release_if_empty(&mut self) {
        if self.is_empty() {
            self.tail = BytesMut::new();
            self.segments = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn large_payload_is_shared_not_copied_and_order_is_kept() {
        let payload = Bytes::from(vec![7u8; SHARE_FROM * 2]);
        let mut out = Outbox::default();
        codec::encode_ack(out.buf(), codec::AckKind::PubAck, 1, 0, false);
        out.publish("t", &payload, QoS::AtLeastOnce, 9, false, false);
        codec::encode_ack(out.buf(), codec::AckKind::PubAck, 2, 0, false);
        // The queued segment is the very same allocation as the message's payload.
        assert!(out
            .segments
            .as_ref()
            .expect("a large payload is queued as a segment")
            .iter()
            .any(|s| s.as_ptr() == payload.as_ptr() && s.len() == payload.len()));

        let mut expected = BytesMut::new();
        codec::encode_ack(&mut expected, codec::AckKind::PubAck, 1, 0, false);
        codec::encode_publish(
            &mut expected,
            "t",
            &payload,
            QoS::AtLeastOnce,
            9,
            false,
            false,
        );
        codec::encode_ack(&mut expected, codec::AckKind::PubAck, 2, 0, false);

        let mut written = Vec::new();
        out.flush_all(&mut written).await.expect("write to a Vec");
        assert_eq!(written, expected.to_vec());
        assert!(out.is_empty());
    }

    #[test]
    fn partial_writes_consume_across_segments() {
        let payload = Bytes::from(vec![1u8; SHARE_FROM]);
        let mut out = Outbox::default();
        out.publish("a", &payload, QoS::AtMostOnce, 0, false, false);
        codec::encode_pingresp(out.buf());
        let total = out.len();
        out.consume(3);
        assert_eq!(out.len(), total - 3);
        out.consume(SHARE_FROM);
        assert_eq!(out.len(), total - 3 - SHARE_FROM);
        out.consume(out.len());
        assert!(out.is_empty());
    }
}
