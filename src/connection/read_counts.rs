//! What one read of a connection counted, added to the metrics once when it is done.

use crate::metrics::{self, Counter};

/// The bytes and packets one `connection::process` call read (`$SYS/broker/bytes/received`,
/// `messages/received`), PUBLISHes by QoS (their payload bytes are counted by the
/// publish handler): added to the metrics in one thread-local access when the
/// call ends, not one per packet.
#[derive(Default)]
pub(super) struct ReadCounts {
    bytes: u64,
    packets: u64,
    publish: [u64; 3],
}

impl ReadCounts {
    /// The counts of a read of `bytes` bytes, before its packets are handled.
    pub(super) fn new(bytes: u64) -> ReadCounts {
        ReadCounts {
            bytes,
            ..ReadCounts::default()
        }
    }

    /// `n` packets that are not PUBLISHes (a run of PUBACKs).
    pub(super) fn others(&mut self, n: usize) {
        self.packets += n as u64;
    }

    /// One packet whose fixed header started with `first`.
    #[inline]
    pub(super) fn count(&mut self, first: Option<u8>) {
        self.packets += 1;
        if let Some(b) = first.filter(|b| b >> 4 == 3) {
            if let Some(n) = self.publish.get_mut(usize::from((b >> 1) & 3)) {
                *n += 1;
            }
        }
    }
}

impl Drop for ReadCounts {
    fn drop(&mut self) {
        if self.packets == 0 && self.bytes == 0 {
            return;
        }
        let [q0, q1, q2] = self.publish;
        metrics::add_each([
            (Counter::BytesReceived, self.bytes),
            (Counter::PacketsReceived, self.packets),
            (Counter::PublishReceivedQos0, q0),
            (Counter::PublishReceivedQos1, q1),
            (Counter::PublishReceivedQos2, q2),
        ]);
    }
}
