//! A large PUBLISH is received into a buffer of its own, sized from its fixed header.
//!
//! Read into the connection's usual buffer, a 1 MiB PUBLISH arrived 64 KiB at a time into
//! a reservation that grew by doubling: every growth a `realloc` that copied what had
//! arrived (0.9 MiB copied per MiB received) and touched fresh pages (the kernel zeroing
//! them was 43% of the broker's CPU in the 1 MiB one-to-one benchmark, see
//! docs/BENCHMARKS.md), and the message then pinned a buffer of up to twice its size.
//! Once the fixed header says how long the frame is, one buffer of exactly that length
//! takes the rest in reads as large as the socket gives, and the decoded payload is a
//! slice of it, shared with every subscriber's outbox as it is.
//!
//! The buffer exists before its bytes do, so it is bounded and counted: only a PUBLISH
//! within `max_packet_size` gets one (the decoder has already refused a larger one), it
//! is charged to `memory_limit` until the frame is whole (then the message charges what
//! it keeps), and above the limit the frame is read the old way, growing with the bytes
//! that actually arrive. A connection holds at most one such buffer.

use bytes::BytesMut;

use crate::broker::Broker;
use crate::codec;

/// Frames at least this long get a buffer of their own: the connection's largest read
/// reservation (`READ_MAX`), which smaller ones fit in without growing it.
pub const OWN_BUFFER_FROM: usize = 64 * 1024;

/// The buffer of one large frame being received, charged to `memory_limit` until the
/// frame is whole or the connection ends (dropping it gives the charge back).
#[derive(Debug)]
pub struct LargeFrame {
    len: usize,
}

impl LargeFrame {
    /// If `rbuf` begins with a PUBLISH of at least [`OWN_BUFFER_FROM`] bytes that it has
    /// no room for, moves what has arrived of it (at most one read) into a buffer of
    /// exactly the frame's length. `rbuf` holds no whole packet here (they were handled).
    pub fn begin(rbuf: &mut BytesMut, broker: &Broker) -> Option<LargeFrame> {
        let len = codec::publish_frame_len(rbuf, broker.config().max_packet_size)?;
        if len < OWN_BUFFER_FROM || rbuf.capacity() >= len || broker.memory_full(len) {
            return None;
        }
        crate::memory::charge(len);
        let mut own = BytesMut::with_capacity(len);
        own.extend_from_slice(rbuf);
        *rbuf = own;
        Some(LargeFrame { len })
    }

    /// Whether the whole frame is in `rbuf` (it is decoded from there next).
    pub fn is_complete(&self, rbuf: &BytesMut) -> bool {
        rbuf.len() >= self.len
    }
}

impl Drop for LargeFrame {
    fn drop(&mut self) {
        crate::memory::release(self.len);
    }
}
