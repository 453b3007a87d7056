//! A session's side of its spool (the store's `spool` module holds the files): when a
//! QoS 1/2 message goes to disk rather than into the memory queue, how many wait there,
//! loading them back in batches as the inflight window makes room, and letting go of
//! what was loaded when the client leaves.
//!
//! A message goes to the spool when the session is persistent, the store durable, and
//! either its client is away, its memory queue is long ([`SPOOL_AFTER`]), or the spool
//! already holds messages not loaded yet: those come first, so the queue's order is the
//! order of positions throughout. Messages of a shared subscription stay in memory (they
//! may be handed to another member when this one leaves).

use super::{Queued, SessionState, StoreHandle};
use crate::codec::QoS;
use crate::message::{DeliveryProps, SharedMessage};
use crate::store::{StoreEvent, StoreOutcome};

/// A connected session's memory queue this long sends further messages to the spool.
pub const SPOOL_AFTER: usize = 4096;
/// The spool is read back when the memory queue is shorter than this...
const LOAD_BELOW: usize = 256;
/// ...a batch of at most this many entries.
const LOAD_BATCH: usize = 512;

/// What a session knows of its spool. Part of the session's rarely used parts.
#[derive(Debug, Default)]
pub(super) struct SpoolCount {
    /// Entries held in the spool and not loaded.
    pub waiting: u64,
    /// About how many bytes they take there.
    pub bytes: u64,
    /// The highest position ever spooled: memory entries above it may follow the spool.
    pub last: u64,
}

/// One log line per interval for failed loads, however many sessions fail.
static LOAD_FAILED: crate::log_limit::LogLimit = crate::log_limit::LogLimit::new(10_000);

impl SessionState {
    /// Entries waiting in the spool (not loaded).
    pub fn spooled(&self) -> u64 {
        self.rare.as_ref().map_or(0, |r| r.spool.waiting)
    }

    /// About how many bytes those take on disk.
    pub(super) fn spooled_bytes(&self) -> usize {
        self.rare
            .as_ref()
            .map_or(0, |r| usize::try_from(r.spool.bytes).unwrap_or(usize::MAX))
    }

    /// Whether a message of `qos` (with `extra`) goes to the spool.
    pub(super) fn spools(
        &self,
        qos: QoS,
        extra: Option<&DeliveryProps>,
        handle: StoreHandle,
    ) -> bool {
        qos != QoS::AtMostOnce
            && self.persists(handle)
            && extra.is_none_or(|e| e.shared.is_none())
            && (!self.connected || self.spooled() > 0 || self.queue.len() >= SPOOL_AFTER)
    }

    /// Writes a message to the spool at the next position. Returns false if the store
    /// would not take it (the caller queues it in memory instead).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn spool(
        &mut self,
        msg: &SharedMessage,
        qos: QoS,
        retain: bool,
        extra: Option<&DeliveryProps>,
        size: usize,
        handle: StoreHandle,
        stored: &mut StoreOutcome,
    ) -> bool {
        let seq = self.next_seq + 1;
        let outcome = handle.store.record(StoreEvent::Enqueued {
            session: handle.session,
            seq,
            message: msg,
            qos,
            retain,
            extra,
            spool: true,
        });
        if !matches!(outcome, Ok(Some(_))) {
            return false;
        }
        stored.add(outcome);
        self.next_seq = seq;
        let count = &mut self.rare.get_or_insert_default().spool;
        count.waiting += 1;
        count.bytes += size as u64;
        count.last = seq;
        true
    }

    /// Loads the next batch from the spool when the memory queue runs short: entries
    /// that were sent go back into the inflight window (sent again with DUP), the rest to
    /// the back of the queue.
    pub(super) fn load_spool(&mut self, handle: StoreHandle) {
        if self.spooled() == 0 || self.queue.len() >= LOAD_BELOW {
            return;
        }
        let batch = match handle.store.spool_load(handle.session, LOAD_BATCH) {
            Ok(b) => b,
            Err(e) => {
                if let Some(held_back) = LOAD_FAILED.allow() {
                    tracing::error!(
                        client_id = &*crate::log_limit::field(handle.client_id),
                        held_back,
                        "spool: cannot read queued messages back: {e}"
                    );
                }
                return;
            }
        };
        for item in batch.items {
            let mut q = Queued::new(
                item.seq,
                item.message,
                item.qos,
                item.retain,
                item.extra,
                true,
            );
            q.spooled = true;
            self.restore(q, item.sent);
        }
        let count = &mut self.rare.get_or_insert_default().spool;
        count.waiting = batch.left;
        count.bytes = batch.left_bytes;
    }

    /// The client went away: what was loaded from the spool and not acknowledged is let
    /// go (it is still in the spool, packet ids included, and is loaded again when the
    /// client is back), so an offline session holds no messages in memory. Unless a
    /// memory entry follows the spool: then everything stays, to keep the order.
    pub fn release_spool(&mut self, handle: StoreHandle) {
        let Some(last) = self.rare.as_ref().map(|r| r.spool.last).filter(|l| *l > 0) else {
            return;
        };
        let newer_in_memory = self.queue.iter().any(|q| !q.spooled && q.seq > last)
            || self
                .inflight
                .values()
                .any(|f| !f.item.spooled && f.item.seq > last);
        if newer_in_memory {
            return;
        }
        let mut released = 0;
        self.queue.retain(|q| {
            if q.spooled {
                released += q.held_bytes();
            }
            !q.spooled
        });
        self.queued_bytes -= released;
        let loaded: Vec<u16> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.item.spooled)
            .map(|(pkid, _)| pkid)
            .collect();
        for pkid in &loaded {
            self.inflight.remove(pkid);
        }
        if released == 0 && loaded.is_empty() && self.spooled() == 0 {
            return;
        }
        let (waiting, bytes) = handle.store.spool_rewind(handle.session);
        let count = &mut self.rare.get_or_insert_default().spool;
        count.waiting = waiting;
        count.bytes = bytes;
    }

    /// `drop_oldest` with nothing in memory: drops the first entry waiting in the spool.
    pub(super) fn drop_oldest_spooled(&mut self, handle: StoreHandle) -> bool {
        if self.spooled() == 0 {
            return false;
        }
        let Some(bytes) = handle.store.spool_drop_next(handle.session) else {
            return false;
        };
        let count = &mut self.rare.get_or_insert_default().spool;
        count.waiting -= 1;
        count.bytes = count.bytes.saturating_sub(bytes);
        true
    }

    /// At start: the session's spool holds `waiting` entries (about `bytes` bytes),
    /// positions up to `last`.
    pub fn restore_spool(&mut self, waiting: u64, bytes: u64, last: u64) {
        self.next_seq = self.next_seq.max(last);
        let count = &mut self.rare.get_or_insert_default().spool;
        count.waiting = waiting;
        count.bytes = bytes;
        count.last = last;
    }
}
