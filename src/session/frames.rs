//! QoS 0 deliveries queued as the PUBLISH bytes the client will be sent.
//!
//! Most of a fan-out of small QoS 0 messages is the same work fifty times over: a queue
//! entry per subscriber holding the shared message (its reference count, one cache line
//! written by the publisher's thread and the subscribers' both), then per subscriber the
//! same PUBLISH encoded again when the connection drains its queue. When the session's
//! connection is known to take exactly the frame everyone else of its version gets (see
//! [`Wire`]), the publish path encodes the frame once per message ([`Encoded`]) and the
//! session's queue takes a copy of those bytes: consecutive frames sit back to back in
//! one buffer (a [`Span`]) that `fill` hands to the outbox whole, without a copy. No
//! reference to the message is kept, so nothing is shared between the threads but the
//! bytes.
//!
//! The spans sit beside the queue of [`Queued`](super::Queued) entries, each marked with
//! the sequence number of the entry it follows, so the one order of the session's
//! deliveries, QoS 0 and QoS 1/2 mixed, is kept exactly. Every frame is a whole PUBLISH,
//! self-delimiting, so a span knows how many messages it holds and `drop_oldest` can take
//! exactly one off its front. What a frame weighs in `max_queued_bytes` is its encoded
//! length; what `memory_limit` counts is the buffers' whole capacity.
//!
//! Only what is simple and exact goes this way: a QoS 0 delivery with no subscription
//! identifier and no shared subscription, of a message that never expires (an expired
//! message must not be sent [MQTT-3.3.2-5], and a 5.0 frame carries the time left) and
//! whose payload would be copied anyway (a large one is written by reference), to a
//! session that ends with its connection (so its frames can never meet a connection of
//! another version) and whose client takes no topic aliases from the broker. Everything
//! else is queued as a `Queued` entry, as before.

use std::collections::VecDeque;

use bytes::{Buf, BytesMut};

use super::{Delivery, SessionState, StoreHandle};
use crate::auth::{Access, AclFile};
use crate::codec::{self, QoS};
use crate::config::QueueFull;
use crate::message::Message;
use crate::metrics::{self, DropReason};
use crate::outbox::{Outbox, PeerV5, SHARE_PAYLOAD_ON_WRITE_FROM};

/// A new span's buffer holds at least this much (the smallest size `buffers` keeps)...
const MIN_SPAN: usize = 1024;
/// ...and at most this much (unless one frame is larger): as much as the session has
/// queued in frames already, so an idle session's rare message takes a small buffer and
/// a backlog is kept in large ones.
const MAX_SPAN: usize = 64 * 1024;

/// How a session's connection takes a QoS 0 PUBLISH, when every client of its version
/// takes the same bytes: MQTT 3.1.1 and 3.1, or 5.0 without broker-to-client topic
/// aliases (whose numbering is the connection's own). Known from CONNECT; set on the
/// session only while that connection is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    V311,
    /// Frames up to 2^`max_log2` bytes, the largest power of two within the client's
    /// Maximum Packet Size: a larger one goes the general way, which sends it if it fits
    /// the exact limit and drops it (counted) if not. Two bytes where the size itself
    /// would take eight of the session, which every client carries.
    V5 {
        max_log2: u8,
    },
}

impl Wire {
    /// The wire of a client sent to through an outbox made with `v5` (see
    /// [`Outbox::for_client`]); `None` when its frames are its own.
    pub fn of(v5: Option<&PeerV5>) -> Option<Wire> {
        match v5 {
            None => Some(Wire::V311),
            Some(p) if p.topic_alias_max == 0 => Some(Wire::V5 {
                // (A Maximum Packet Size of 0 is a protocol error: never accepted.)
                max_log2: p.max_packet_size.map_or(32, |m| m.max(1).ilog2() as u8),
            }),
            Some(_) => None,
        }
    }

    fn is_v5(self) -> bool {
        matches!(self, Wire::V5 { .. })
    }

    /// Whether a frame of `len` bytes may go to this client as such.
    fn takes(self, len: usize) -> bool {
        match self {
            Wire::V311 => true,
            Wire::V5 { max_log2 } => (len as u64) <= 1u64 << max_log2.min(32),
        }
    }
}

/// One message's QoS 0 frames, encoded at most once per [`Wire`] however many sessions
/// take them. The publish path keeps one per thread and [`start`](Encoded::start)s it for
/// each message; the buffers are reused.
#[derive(Debug, Default)]
pub struct Encoded {
    /// The message qualifies at all (see the module's notes).
    eligible: bool,
    v311: Slot,
    v5: Slot,
}

#[derive(Debug, Default)]
struct Slot {
    buf: BytesMut,
    /// `None`: not encoded yet; `Some(false)`: cannot be.
    done: Option<bool>,
}

impl Encoded {
    /// Forgets the previous message's frames; `msg` is the one the next offers carry.
    pub fn start(&mut self, msg: &Message) {
        self.eligible = msg.expires_at.is_none()
            && msg
                .props
                .as_ref()
                .is_none_or(|p| p.message_expiry.is_none())
            && msg.payload.len() < SHARE_PAYLOAD_ON_WRITE_FROM;
        self.v311.done = None;
        self.v5.done = None;
    }

    /// The QoS 0 PUBLISH of `msg` (the one given to `start`) for `wire`, RETAIN clear;
    /// `None` when it goes the general way.
    fn frame(&mut self, msg: &Message, wire: Wire) -> Option<&[u8]> {
        if !self.eligible {
            return None;
        }
        let slot = match wire {
            Wire::V311 => &mut self.v311,
            Wire::V5 { .. } => &mut self.v5,
        };
        if slot.done.is_none() {
            slot.buf.clear();
            let done = match wire {
                Wire::V311 => {
                    codec::publish_fits(&msg.topic, msg.payload.len(), QoS::AtMostOnce) && {
                        codec::encode_publish(
                            &mut slot.buf,
                            &msg.topic,
                            &msg.payload,
                            QoS::AtMostOnce,
                            0,
                            false,
                            false,
                        );
                        true
                    }
                }
                Wire::V5 { .. } => {
                    let p = codec::PublishOut {
                        topic: &msg.topic,
                        qos: QoS::AtMostOnce,
                        retain: false,
                        dup: false,
                        pkid: 0,
                        topic_alias: None,
                        props: msg.props.as_deref(),
                        message_expiry: None,
                        subscription_ids: &[],
                    };
                    codec::publish_v5_size(&p, msg.payload.len()) != usize::MAX
                        && codec::encode_publish_v5(&mut slot.buf, &p, &msg.payload)
                }
            };
            slot.done = Some(done);
        }
        match slot.done {
            Some(true) if wire.takes(slot.buf.len()) => Some(&slot.buf),
            _ => None,
        }
    }
}

/// Frames queued back to back, all following the same queue entry.
#[derive(Debug)]
pub(super) struct Span {
    /// The sequence number of the [`Queued`](super::Queued) entry these frames were
    /// queued after (the session's `next_seq` then): they go out before any entry with
    /// a higher one.
    after: u64,
    /// Whole PUBLISH frames, the oldest first.
    buf: BytesMut,
    frames: u32,
    /// Their payload bytes, for the metrics.
    payload: u64,
    /// In 5.0's encoding (where the properties stand between topic and payload).
    v5: bool,
    /// What this span counts towards `memory_limit`: its buffer's capacity and itself.
    charged: usize,
}

impl Span {
    fn new(after: u64, capacity: usize, v5: bool) -> Span {
        // A recycled write buffer of about that size if this thread has one (a span
        // usually becomes a connection's write buffer, and goes back there): in a
        // one-to-one flow that saves an allocation a message. Never much larger than
        // asked, as it is held (and counted) until the connection takes it.
        let buf = crate::buffers::take_within(capacity, 4 * capacity)
            .unwrap_or_else(|| BytesMut::with_capacity(capacity));
        let charged = buf.capacity() + std::mem::size_of::<Span>();
        crate::memory::charge(charged);
        Span {
            after,
            buf,
            frames: 0,
            payload: 0,
            v5,
            charged,
        }
    }

    /// Bytes of the frames it holds.
    pub(super) fn len(&self) -> usize {
        self.buf.len()
    }

    fn room(&self) -> usize {
        self.buf.capacity() - self.buf.len()
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        crate::memory::release(self.charged);
    }
}

/// A session's queued QoS 0 frames (see the module's notes). Boxed, and allocated with
/// the first frame: every session carries this, idle or not (see
/// `footprint_tests.rs`).
#[derive(Debug, Default)]
pub struct Frames(Option<Box<Spans>>);

#[derive(Debug, Default)]
struct Spans {
    spans: VecDeque<Span>,
    /// Frames held, in all spans.
    count: usize,
    /// Their bytes (what `max_queued_bytes` counts of them).
    bytes: usize,
}

impl Frames {
    /// Frames (messages) held.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |f| f.count)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the frames held (part of `queued_bytes`).
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |f| f.bytes)
    }

    /// The sequence number the oldest frames follow (see [`Span::after`]).
    pub(super) fn front_after(&self) -> Option<u64> {
        self.0.as_ref()?.spans.front().map(|s| s.after)
    }

    /// Appends `frame` (RETAIN set when `retain`) after the queue entry `after`.
    fn push(&mut self, after: u64, frame: &[u8], retain: bool, payload: usize, v5: bool) {
        let f = self.0.get_or_insert_default();
        let fits = f
            .spans
            .back()
            .is_some_and(|s| s.after == after && s.v5 == v5 && s.room() >= frame.len());
        if !fits {
            let capacity = f.bytes.clamp(MIN_SPAN, MAX_SPAN).max(frame.len());
            f.spans.push_back(Span::new(after, capacity, v5));
        }
        let Some(span) = f.spans.back_mut() else {
            return;
        };
        let start = span.buf.len();
        span.buf.extend_from_slice(frame);
        if retain {
            // RETAIN is bit 0 of the fixed header, in both versions [MQTT-3.3.1-12/13].
            if let Some(b) = span.buf.get_mut(start) {
                *b |= 0x01;
            }
        }
        span.frames += 1;
        span.payload += payload as u64;
        f.count += 1;
        f.bytes += frame.len();
    }

    /// Takes the oldest span out whole.
    pub(super) fn pop_front(&mut self) -> Option<Span> {
        let f = self.0.as_mut()?;
        let span = f.spans.pop_front()?;
        f.count -= span.frames as usize;
        f.bytes -= span.buf.len();
        Some(span)
    }

    /// Drops the oldest frame. Returns its bytes (0: there was none).
    fn drop_front(&mut self) -> usize {
        let Some(f) = self.0.as_mut() else {
            return 0;
        };
        let Some(span) = f.spans.front_mut() else {
            return 0;
        };
        let (len, payload) = match parts(&span.buf, span.v5) {
            Some((frame, _, payload)) => (frame, payload),
            // Never: the span holds whole frames this module wrote. Drop it all rather
            // than leave bytes that do not parse.
            None => (span.buf.len(), 0),
        };
        let frames = if len == span.buf.len() {
            span.frames
        } else {
            1
        };
        span.buf.advance(len);
        span.frames -= frames;
        span.payload = span.payload.saturating_sub(payload as u64);
        f.count -= frames as usize;
        f.bytes -= len;
        if span.frames == 0 {
            f.spans.pop_front();
        }
        len
    }

    /// Drops every frame, and the box.
    pub(super) fn clear(&mut self) {
        self.0 = None;
    }

    #[cfg(test)]
    fn spans(&self) -> impl Iterator<Item = &Span> {
        self.0.iter().flat_map(|f| f.spans.iter())
    }
}

/// The first frame of `buf`: its length, its topic, and its payload's length.
fn parts(buf: &[u8], v5: bool) -> Option<(usize, &[u8], usize)> {
    let mut remaining = 0usize;
    let mut i = 1;
    loop {
        let b = *buf.get(i)?;
        remaining |= usize::from(b & 0x7f) << (7 * (i - 1));
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i > 4 {
            return None;
        }
    }
    let len = i + remaining;
    let body = buf.get(i..len)?;
    let topic_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let topic = body.get(2..2 + topic_len)?;
    let mut at = 2 + topic_len;
    if v5 {
        let mut props = 0usize;
        let mut shift = 0;
        loop {
            let b = *body.get(at)?;
            props |= usize::from(b & 0x7f) << shift;
            at += 1;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
            if shift > 21 {
                return None;
            }
        }
        at += props;
    }
    let payload = body.len().checked_sub(at)?;
    Some((len, topic, payload))
}

impl SessionState {
    /// The QoS 0 frame of `msg` for this session's connection, if it takes one (see the
    /// module's notes): what [`Session::offer`](super::Session::offer) queues instead of
    /// an entry. `extra` is the delivery's subscription identifiers and shared
    /// subscription.
    pub(super) fn frame_for<'e>(
        &self,
        encoded: &'e mut Encoded,
        msg: &Message,
        qos: QoS,
        has_extra: bool,
    ) -> Option<&'e [u8]> {
        if qos != QoS::AtMostOnce || has_extra {
            return None;
        }
        encoded.frame(msg, self.wire?)
    }

    /// Queues a QoS 0 frame if the queue has room for it. Returns false, having done
    /// nothing, when it is full: then [`enqueue_frame`](Self::enqueue_frame) applies the
    /// policy.
    #[inline]
    pub(super) fn push_frame(&mut self, frame: &[u8], retain: bool, payload: usize) -> bool {
        if self.is_full(frame.len()) {
            return false;
        }
        let v5 = self.wire.is_some_and(Wire::is_v5);
        self.frames.push(self.next_seq, frame, retain, payload, v5);
        self.queued_bytes += frame.len();
        true
    }

    /// Queues a QoS 0 frame under the queue's limits and `queue_full` policy, as
    /// [`enqueue`](Self::enqueue) does an entry: a full queue drops the new frame, or
    /// under `drop_oldest` the oldest messages (entries or frames) until it fits.
    #[cold]
    pub(super) fn enqueue_frame(
        &mut self,
        frame: &[u8],
        retain: bool,
        payload: usize,
        handle: StoreHandle,
    ) -> Delivery {
        let size = frame.len();
        let mut outcome = Delivery::Queued;
        if self.is_full(size) {
            match self.limits.queue_full {
                // Under backpressure there is nobody to slow down for QoS 0.
                QueueFull::DropNew | QueueFull::Backpressure => {
                    metrics::dropped(DropReason::QueueFullNew);
                    return Delivery::Dropped;
                }
                QueueFull::DropOldest => {
                    while self.is_full(size) {
                        if !self.drop_oldest(handle) {
                            metrics::dropped(DropReason::QueueFullNew);
                            return Delivery::Dropped;
                        }
                    }
                    outcome = Delivery::Dropped;
                }
            }
        }
        if self.push_frame(frame, retain, payload) {
            outcome
        } else {
            // Never: there is room now.
            metrics::dropped(DropReason::QueueFullNew);
            Delivery::Dropped
        }
    }

    /// Drops the oldest frame. Returns its bytes (0: there was none).
    pub(super) fn drop_front_frame(&mut self) -> usize {
        let len = self.frames.drop_front();
        self.queued_bytes -= len;
        len
    }

    /// Writes a span taken off the queue. With an ACL each frame's topic is checked
    /// against the owner's read rights as it is sent, as an entry's is; a denied one is
    /// dropped and counted.
    pub(super) fn send_span(
        &mut self,
        out: &mut Outbox,
        span: Span,
        client_id: &str,
        acl: Option<&AclFile>,
    ) {
        let Some(acl) = acl else {
            let mut span = span;
            let buf = std::mem::take(&mut span.buf);
            out.publish_frames_owned(buf, span.frames, span.payload);
            return;
        };
        let mut rest = &span.buf[..];
        while let Some((len, topic, payload)) = parts(rest, span.v5) {
            let Some((frame, after)) = rest.split_at_checked(len) else {
                break;
            };
            // The topic came from a `String`: always UTF-8.
            let topic = std::str::from_utf8(topic).ok();
            match topic {
                Some(t) if acl.check(client_id, self.username.as_deref(), t, Access::Read) => {
                    out.publish_frames(frame, 1, payload as u64);
                }
                _ => self.report_denied(client_id, topic.unwrap_or_default()),
            }
            rest = after;
        }
    }
}

#[cfg(test)]
#[path = "frames_tests.rs"]
mod tests;
