//! A session's side of its spool (the store's `spool` module holds the files): when a
//! stored message goes to disk rather than into the memory queue, how many wait there,
//! loading them back in batches as the inflight window makes room, and letting go of
//! what was loaded when the client leaves.
//!
//! A message goes to the spool when the session is persistent, the store durable, and
//! either its client is away, its memory queue is long ([`SPOOL_AFTER`]), or the spool
//! already holds messages not loaded yet: those come first, so the queue's order is the
//! order of positions throughout. Messages of a shared subscription stay in memory (they
//! may be handed to another member when this one leaves).

use super::{InflightState, Queued, SessionState, StoreHandle};
use crate::codec::QoS;
use crate::message::{DeliveryProps, SharedMessage};
use crate::store::{StoreEvent, StoreOutcome};

/// A connected session's memory queue this long sends further messages to the spool.
pub const SPOOL_AFTER: usize = 4096;
/// The spool is read back when the memory queue is shorter than this...
const LOAD_BELOW: usize = 256;
/// ...a batch of at most this many entries.
const LOAD_BATCH: usize = 512;

/// Where a memory entry being spilled to the spool is: in the queue (at an index), or
/// sent with a packet id (and, for QoS 2, whether PUBREC came).
#[derive(Clone, Copy)]
enum Spill {
    Queued(usize),
    Sent(u16, bool),
}

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

    /// Bytes queued in memory and in the spool: what `max_queued_bytes` bounds and the
    /// operator's views show.
    pub fn queued_bytes_total(&self) -> usize {
        self.queued_bytes.saturating_add(self.spooled_bytes())
    }

    /// Whether a message (with `extra`) goes to the spool. QoS 0 ones reach this only for
    /// a session that queues them (`queue_qos0_messages` while offline, or a connected
    /// one): they go to the spool like the others, so one queue keeps one order.
    pub(super) fn spools(&self, extra: Option<&DeliveryProps>, handle: StoreHandle) -> bool {
        self.persists(handle)
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

    /// The client went away (or, at start, never came back): an offline session holds no
    /// stored messages in memory. Stored entries newer than the spool go to its end, in
    /// order, those that were sent with their packet ids; what was loaded from the spool
    /// and not acknowledged is let go (it is still there, packet ids included, and is
    /// loaded again when the client is back). Older memory entries (queued before the
    /// spool began) stay, as they come first. If a spill fails, everything stays, to keep
    /// the order.
    pub fn release_spool(&mut self, handle: StoreHandle) {
        if !self.persists(handle) {
            return;
        }
        let last = self.rare.as_ref().map_or(0, |r| r.spool.last);
        let spillable = |q: &Queued| {
            q.in_store
                && !q.spooled
                && q.seq > last
                && q.extra.as_ref().is_none_or(|e| e.shared.is_none())
        };
        let mut newer: Vec<(u64, Spill)> = self
            .queue
            .iter()
            .enumerate()
            .filter(|(_, q)| spillable(q))
            .map(|(i, q)| (q.seq, Spill::Queued(i)))
            .collect();
        newer.extend(
            self.inflight
                .iter()
                .filter(|(_, f)| spillable(&f.item))
                .map(|(pkid, f)| {
                    let released = f.state == InflightState::Released;
                    (f.item.seq, Spill::Sent(pkid, released))
                }),
        );
        newer.sort_unstable_by_key(|n| n.0);
        let spilled = newer
            .iter()
            .take_while(|(seq, from)| self.spill_one(*seq, *from, handle))
            .count();
        // Positions (sorted) of what is in the spool now.
        let gone: Vec<u64> = newer[..spilled].iter().map(|n| n.0).collect();
        self.drop_from_memory(|q| gone.binary_search(&q.seq).is_ok());
        if spilled < newer.len() {
            // Whatever did not go stays in memory, and so must what is older than it.
            return;
        }
        let loaded = self.drop_from_memory(|q| q.spooled);
        if loaded == 0 && spilled == 0 && self.spooled() == 0 {
            return;
        }
        let (waiting, bytes) = handle.store.spool_rewind(handle.session);
        let count = &mut self.rare.get_or_insert_default().spool;
        count.waiting = waiting;
        count.bytes = bytes;
    }

    /// Records the memory entry at `seq` as spooled (with its packet id, if it was sent).
    fn spill_one(&mut self, seq: u64, from: Spill, handle: StoreHandle) -> bool {
        let item = match from {
            Spill::Sent(pkid, _) => self.inflight.get(&pkid).map(|f| &f.item),
            Spill::Queued(i) => self.queue.get(i),
        };
        let Some(item) = item else {
            return false;
        };
        let outcome = handle.store.record(StoreEvent::Enqueued {
            session: handle.session,
            seq,
            message: &item.msg,
            qos: item.qos,
            retain: item.retain,
            extra: item.extra.as_deref(),
            spool: true,
        });
        if !matches!(outcome, Ok(Some(_))) {
            return false;
        }
        if let Spill::Sent(pkid, released) = from {
            let session = handle.session;
            let _ = handle.store.record(StoreEvent::Sent { session, seq, pkid });
            if released {
                let _ = handle.store.record(StoreEvent::Released { session, seq });
            }
        }
        let count = &mut self.rare.get_or_insert_default().spool;
        count.last = seq;
        true
    }

    /// Takes the entries `gone` picks out of the memory queue and the inflight window
    /// (they are in the spool); returns how many.
    fn drop_from_memory(&mut self, gone: impl Fn(&Queued) -> bool) -> usize {
        let mut released = 0;
        let mut n = 0;
        self.queue.retain(|q| {
            let g = gone(q);
            if g {
                released += q.held_bytes();
                n += 1;
            }
            !g
        });
        self.queued_bytes -= released;
        let pkids: Vec<u16> = self
            .inflight
            .iter()
            .filter(|(_, f)| gone(&f.item))
            .map(|(pkid, _)| pkid)
            .collect();
        for pkid in &pkids {
            self.inflight.remove(pkid);
        }
        n + pkids.len()
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
