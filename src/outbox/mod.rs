//! A connection's outgoing bytes, written with vectored writes.
//!
//! Small packets (acknowledgements, small PUBLISHes) are encoded into one contiguous
//! buffer, so a burst of them leaves in one syscall. A large payload is not copied: its
//! PUBLISH header is encoded into the buffer and the payload itself, the same [`Bytes`]
//! every other subscriber's outbox holds, is queued as a segment of its own. A 1 MiB
//! message fanned out to ten subscribers stays one 1 MiB allocation. A session's queued
//! QoS 0 frames (`session::frames`) come in a buffer of their own, which is not copied
//! either: it becomes the buffer to encode into when nothing is waiting, or else a
//! segment.
//!
//! The outbox is a connection's one outbound side: it is made at CONNACK knowing the
//! client's protocol version, and `send.rs` has one method per packet the broker sends
//! (PUBLISH with 5.0 topic aliases and the client's Maximum Packet Size, every
//! acknowledgement, SUBACK, UNSUBACK, CONNACK, DISCONNECT), each written in that version.
//! No caller chooses an encoder by version.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

use crate::codec::{self, QoS};
use crate::log_limit::{field, LogLimit};
use crate::metrics::{self, Counter};

mod send;

pub use send::PeerV5;

/// Payloads at least this large are written by reference (the message's own [`Bytes`]
/// queued as a segment) instead of copied into the write buffer. (Not
/// `codec::COPY_PAYLOAD_BELOW`, which is about the read buffer.)
pub const SHARE_PAYLOAD_ON_WRITE_FROM: usize = 16 * 1024;

/// Encoding starts with this much room, so a burst does not grow the buffer step by step.
const INITIAL: usize = 4096;

/// At most this many segments go into one vectored write.
const MAX_SLICES: usize = 64;

/// PUBLISHes not written because their protocol cannot express them, since start.
static UNEXPRESSIBLE: AtomicU64 = AtomicU64::new(0);

/// How many deliveries were dropped because MQTT could not express their PUBLISH (see
/// [`Outbox::publish`]). Read by tests only until a metrics reader exists.
#[cfg(test)]
pub fn unexpressible_dropped() -> u64 {
    UNEXPRESSIBLE.load(Ordering::Relaxed)
}

pub struct Outbox {
    /// Frozen segments waiting to be written, in order, before `tail`. Boxed and
    /// allocated on the first large payload: most connections never have one.
    #[allow(clippy::box_collection)]
    segments: Option<Box<VecDeque<Bytes>>>,
    /// Where packets are encoded; written after `segments`.
    tail: BytesMut,
    /// Bytes in `segments`.
    segments_len: usize,
    /// How to send to an MQTT 5.0 client (its aliases and limits); `None` for 3.1.1 and
    /// 3.1. Set when the outbox is made and never changed: the connection's version.
    v5: Option<Box<PeerV5>>,
    /// Packets encoded since the last write, for the metrics: handed in with the bytes
    /// once per write call, not one thread-local access per packet (see [`SentCounts`]).
    counts: SentCounts,
}

/// What an outbox has encoded and not yet handed to the metrics. Counting into plain
/// fields and handing in once per write keeps the per-packet cost to an increment: each
/// `metrics::add` is a thread-local access (a state check, the shard, the add), which
/// per acknowledgement and per PUBLISH came to tens of instructions per QoS 1 message.
#[derive(Debug, Default)]
pub(crate) struct SentCounts {
    packets: u32,
    publish: [u32; 3],
    payload: u64,
}

impl SentCounts {
    /// One packet other than PUBLISH.
    #[inline]
    pub(crate) fn packet(&mut self) {
        self.packets = self.packets.wrapping_add(1);
    }

    /// One PUBLISH of `payload` bytes at `qos`.
    #[inline]
    pub(crate) fn publish(&mut self, qos: QoS, payload: usize) {
        self.packets = self.packets.wrapping_add(1);
        if let Some(n) = self.publish.get_mut(qos as usize) {
            *n = n.wrapping_add(1);
        }
        self.payload = self.payload.wrapping_add(payload as u64);
    }

    /// `n` QoS 0 PUBLISHes of `payload` bytes in all.
    #[inline]
    pub(crate) fn publishes_qos0(&mut self, n: u32, payload: u64) {
        self.packets = self.packets.wrapping_add(n);
        self.publish[0] = self.publish[0].wrapping_add(n);
        self.payload = self.payload.wrapping_add(payload);
    }
}

/// An outbox for MQTT 3.1.1 (and 3.1), the version tests and a refusal default to.
impl Default for Outbox {
    fn default() -> Outbox {
        Outbox::for_client(None)
    }
}

impl Outbox {
    /// The buffer to encode small packets into (they go out after everything queued).
    /// Inline, its first reservation out of line: every PUBLISH and acknowledgement
    /// written asks for it, and as a call it cost ~11 instructions each (callgrind).
    #[inline]
    pub fn buf(&mut self) -> &mut BytesMut {
        if self.tail.capacity() == 0 {
            self.reserve_initial();
        }
        &mut self.tail
    }

    #[cold]
    #[inline(never)]
    fn reserve_initial(&mut self) {
        self.reserve(INITIAL);
    }

    /// Makes room for `additional` (> 0) more bytes of small packets at once: a burst encoded
    /// into a buffer grown by doubling from [`INITIAL`] was copied about once more by the
    /// reallocations (12 % of a 1 → 50 fan-out's instructions under callgrind).
    pub fn reserve(&mut self, additional: usize) {
        if self.tail.capacity() == 0 {
            self.tail = crate::buffers::take(additional.max(INITIAL));
        } else {
            self.tail.reserve(additional);
        }
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.segments_len + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Encodes an MQTT 3.1.1 PUBLISH; a large payload is queued by reference, not copied.
    ///
    /// Returns false, having written nothing, for a packet MQTT 3.1.1 cannot express (a
    /// topic that came as a 5.0 Topic Alias, with a payload near the 256 MiB maximum):
    /// writing the payload without its header would make the subscriber read payload
    /// bytes as packets. The caller drops that delivery for this subscriber; it is
    /// counted ([`unexpressible_dropped`]) and logged.
    #[must_use]
    fn write_publish_v311(
        &mut self,
        topic: &str,
        payload: &Bytes,
        qos: QoS,
        pkid: u16,
        retain: bool,
        dup: bool,
    ) -> bool {
        if !codec::publish_fits(topic, payload.len(), qos) {
            unexpressible(topic, payload.len());
            return false;
        }
        let tail = self.buf();
        if payload.len() < SHARE_PAYLOAD_ON_WRITE_FROM {
            codec::encode_publish(tail, topic, payload, qos, pkid, retain, dup);
            return true;
        }
        codec::encode_publish_header(tail, topic, payload.len(), qos, pkid, retain, dup);
        self.push_segment(payload.clone());
        true
    }

    /// Encodes an MQTT 5.0 PUBLISH; a large payload is queued by reference, not copied.
    /// Returns false, having written nothing, for a packet MQTT cannot express (the
    /// caller checks [`codec::publish_v5_size`] first, so this is a second guard that
    /// never lets a payload go out without its header).
    #[must_use]
    fn write_publish_v5(&mut self, p: &codec::PublishOut<'_>, payload: &Bytes) -> bool {
        let tail = self.buf();
        let written = if payload.len() < SHARE_PAYLOAD_ON_WRITE_FROM {
            codec::encode_publish_v5(tail, p, payload)
        } else {
            let head = codec::encode_publish_header_v5(tail, p, payload.len());
            if head {
                self.push_segment(payload.clone());
            }
            head
        };
        if !written {
            unexpressible(p.topic, payload.len());
        }
        written
    }

    /// Appends `n` whole QoS 0 PUBLISH frames encoded beforehand (a session's queued
    /// frames, see `session::frames`), of `payload` bytes of payload in all.
    pub fn publish_frames(&mut self, frames: &[u8], n: u32, payload: u64) {
        self.buf().extend_from_slice(frames);
        self.counts.publishes_qos0(n, payload);
    }

    /// [`publish_frames`](Self::publish_frames) for a buffer of frames the outbox may
    /// keep: it becomes the buffer to encode into when nothing is waiting, or else a
    /// segment of its own after what is (the buffer so far frozen before it, as for a
    /// large payload). Either way the frames are not copied.
    pub fn publish_frames_owned(&mut self, frames: BytesMut, n: u32, payload: u64) {
        self.counts.publishes_qos0(n, payload);
        if frames.is_empty() {
            return;
        }
        if self.is_empty() && self.tail.capacity() == 0 {
            self.tail = frames;
            return;
        }
        self.push_segment(frames.freeze());
    }

    /// Queues what `tail` holds (a large payload's header just encoded, or whatever was
    /// waiting), then `segment`, shared bytes not copied, after it.
    fn push_segment(&mut self, segment: Bytes) {
        let segments = self.segments.get_or_insert_default();
        if !self.tail.is_empty() {
            let head = self.tail.split().freeze();
            self.segments_len += head.len();
            segments.push_back(head);
        }
        self.segments_len += segment.len();
        segments.push_back(segment);
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
            // Counted per write call (this is the connection's only way to its socket).
            self.hand_in_counts(n);
            self.consume(n);
        }
        polled
    }

    /// Adds `bytes` written, and the packets encoded since the last call, to the metrics
    /// (`$SYS/broker/messages/sent`, `publish/messages/sent`, `bytes/sent`): one
    /// thread-local access. A packet counts once some of the outbox has been written after
    /// it was encoded.
    pub fn hand_in_counts(&mut self, bytes: usize) {
        let c = std::mem::take(&mut self.counts);
        metrics::add_each([
            (Counter::BytesSent, bytes as u64),
            (Counter::PacketsSent, u64::from(c.packets)),
            (Counter::PublishSentQos0, u64::from(c.publish[0])),
            (Counter::PublishSentQos1, u64::from(c.publish[1])),
            (Counter::PublishSentQos2, u64::from(c.publish[2])),
            (Counter::PublishBytesSent, c.payload),
        ]);
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

    /// Everything waiting, in order, taken out as if written (for tests that decode it).
    #[cfg(test)]
    pub fn take_all(&mut self) -> Vec<u8> {
        let mut all = Vec::with_capacity(self.len());
        for s in self.segments.iter().flat_map(|s| s.iter()) {
            all.extend_from_slice(s);
        }
        all.extend_from_slice(&self.tail);
        self.consume(all.len());
        all
    }

    /// Once everything is written, lets go of the buffers: an idle connection holds no
    /// output memory, and the next burst starts from a fresh [`INITIAL`] reservation.
    pub fn release_if_empty(&mut self) {
        if self.is_empty() {
            // Back to this thread's recycled buffers (see `buffers`): an idle connection
            // holds none, a busy one takes one again without going to the allocator.
            crate::buffers::give(std::mem::take(&mut self.tail));
            self.segments = None;
        }
    }
}

/// Counts and logs (rate-limited) a PUBLISH MQTT cannot express: for the operator a
/// message too large for this client ([`metrics::DropReason::TooLarge`]).
fn unexpressible(topic: &str, payload_len: usize) {
    static LOG: LogLimit = LogLimit::new(10_000);
    metrics::dropped(metrics::DropReason::TooLarge);
    let total = UNEXPRESSIBLE.fetch_add(1, Ordering::Relaxed) + 1;
    if let Some(suppressed) = LOG.allow() {
        tracing::warn!(
            topic = ?field(topic),
            topic_len = topic.len(),
            payload_len,
            total,
            suppressed,
            "PUBLISH larger than MQTT can express for this subscriber (topic from a topic alias?), delivery dropped"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn large_payload_is_shared_not_copied_and_order_is_kept() {
        let payload = Bytes::from(vec![7u8; SHARE_PAYLOAD_ON_WRITE_FROM * 2]);
        let mut out = Outbox::default();
        codec::encode_ack(out.buf(), codec::AckKind::PubAck, 1, 0, false);
        assert!(out.write_publish_v311("t", &payload, QoS::AtLeastOnce, 9, false, false));
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
        let payload = Bytes::from(vec![1u8; SHARE_PAYLOAD_ON_WRITE_FROM]);
        let mut out = Outbox::default();
        assert!(out.write_publish_v311("a", &payload, QoS::AtMostOnce, 0, false, false));
        codec::encode_pingresp(out.buf());
        let total = out.len();
        out.consume(3);
        assert_eq!(out.len(), total - 3);
        out.consume(SHARE_PAYLOAD_ON_WRITE_FROM);
        assert_eq!(out.len(), total - 3 - SHARE_PAYLOAD_ON_WRITE_FROM);
        out.consume(out.len());
        assert!(out.is_empty());
    }

    #[test]
    fn mqtt_2_2_3_publish_mqtt_cannot_express_is_not_written_at_all() {
        // A 65,535-byte topic (as a 5.0 Topic Alias can bring) and a payload that fits
        // 256 MiB with an empty topic, but not with this one: nothing is written, not the
        // header and not the payload (which the subscriber would parse as packets).
        let topic = "t".repeat(65_535);
        let max = 268_435_455;
        let fits = max - 2 - topic.len();
        assert!(codec::publish_fits(&topic, fits, QoS::AtMostOnce));
        assert!(!codec::publish_fits(&topic, fits + 1, QoS::AtMostOnce));
        assert!(!codec::publish_fits(&topic, fits - 1, QoS::AtLeastOnce));
        assert!(!codec::publish_fits(
            &"t".repeat(65_536),
            0,
            QoS::AtMostOnce
        ));
        // The payload is never touched when it does not fit: a short one stands in
        // for its length through a topic that alone is too long.
        let payload = Bytes::from(vec![0u8; SHARE_PAYLOAD_ON_WRITE_FROM]);
        let before = unexpressible_dropped();
        let mut out = Outbox::default();
        assert!(!out.write_publish_v311(
            &"t".repeat(65_536),
            &payload,
            QoS::AtLeastOnce,
            1,
            false,
            false
        ));
        assert!(out.is_empty(), "nothing written");
        assert!(out.segments.is_none(), "the payload was not queued");
        assert!(unexpressible_dropped() > before, "counted");
        // What fits is still written.
        assert!(out.write_publish_v311(&topic, &payload, QoS::AtLeastOnce, 1, false, false));
        assert_eq!(out.len(), 1 + 3 + 2 + topic.len() + 2 + payload.len());
    }
}
