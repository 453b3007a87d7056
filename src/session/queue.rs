//! A session's queue: messages waiting for the inflight window, the limits and
//! `queue_full` policies that bound it (with the publishers waiting for room under
//! backpressure), the drop counts, and the hand-over of shared-subscription messages when
//! a member goes away.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::{Delivery, Inflight, InflightState, Session, SessionState, StoreHandle};
use crate::codec::QoS;
use crate::config::QueueFull;
use crate::log_limit::{self, field, LogLimit};
use crate::message::{DeliveryProps, SharedMessage};
use crate::metrics::{self, DropReason};
use crate::store::{StoreEvent, StoreOutcome};

/// A message waiting in a session's queue. Built with [`Queued::new`], which counts the
/// entry towards `memory_limit` until it is dropped.
// Not `#[non_exhaustive]`: that would still let the rest of the crate build one without
// counting it; the private field keeps construction to this module's `Queued::new`.
#[allow(clippy::manual_non_exhaustive)]
#[derive(Debug)]
pub struct Queued {
    pub seq: u64,
    pub msg: SharedMessage,
    /// QoS it will be sent with: min(published, granted).
    pub qos: QoS,
    /// RETAIN flag it will be sent with: 1 for retained messages sent on subscribe, and
    /// as published for subscriptions with Retain As Published.
    pub retain: bool,
    /// What only some deliveries carry; boxed so the common case costs one pointer.
    pub extra: Option<Box<DeliveryProps>>,
    /// Written to the durable store (a QoS 1/2 message of a persistent session): what
    /// becomes of it is recorded too.
    pub in_store: bool,
    /// Loaded from the session's spool, where it stays until it is removed: let go of
    /// when the client leaves (see `spool`).
    pub spooled: bool,
    /// Only [`Queued::new`] makes one, so that every entry is counted.
    _counted: (),
}

impl Queued {
    pub fn new(
        seq: u64,
        msg: SharedMessage,
        qos: QoS,
        retain: bool,
        extra: Option<Box<DeliveryProps>>,
        in_store: bool,
    ) -> Queued {
        let item = Queued {
            seq,
            msg,
            qos,
            retain,
            extra,
            in_store,
            spooled: false,
            _counted: (),
        };
        crate::memory::charge(item.overhead());
        item
    }

    /// What the entry itself holds beyond its message (which is counted once, however
    /// many queues share it): the entry, and its per-delivery details.
    fn overhead(&self) -> usize {
        std::mem::size_of::<Queued>()
            + self.extra.as_ref().map_or(0, |e| {
                std::mem::size_of::<DeliveryProps>()
                    + e.sub_ids.len() * std::mem::size_of::<u32>()
                    + e.shared.as_ref().map_or(0, |s| s.len())
            })
    }
}

impl Clone for Queued {
    fn clone(&self) -> Queued {
        let mut q = Queued::new(
            self.seq,
            self.msg.clone(),
            self.qos,
            self.retain,
            self.extra.clone(),
            self.in_store,
        );
        q.spooled = self.spooled;
        q
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        crate::memory::release(self.overhead());
    }
}

impl Queued {
    /// Every byte this queue entry holds: the entry itself, the message (topic, payload,
    /// properties; counted in full by each queue holding it, as each may be the last) and
    /// the per-delivery details. The one measure of a queued message: `max_queued_bytes`
    /// counts it, and so may any broker-wide memory limit.
    pub fn held_bytes(&self) -> usize {
        Queued::bytes_of(&self.msg, self.extra.as_deref())
    }

    /// [`held_bytes`](Self::held_bytes) of an entry not built yet.
    pub(super) fn bytes_of(msg: &crate::message::Message, extra: Option<&DeliveryProps>) -> usize {
        std::mem::size_of::<Queued>()
            + msg.held_bytes()
            + extra.map_or(0, DeliveryProps::held_bytes)
    }
}

/// A QoS 0 message for an offline session that does not queue them: counted, skipped.
#[cold]
#[inline(never)]
fn skip_qos0_offline() -> Delivery {
    metrics::dropped(DropReason::Qos0Offline);
    Delivery::Skipped
}

/// What [`SessionState::enqueue`] knew when it found the queue full.
#[derive(Clone, Copy)]
struct Full {
    /// A retained message sent on SUBSCRIBE: no publisher waits for it.
    no_waiter: bool,
    /// It would go to the spool.
    to_spool: bool,
    /// ... and the store is past `max_disk_bytes`.
    disk_full: bool,
}

/// Counts of messages dropped by a full queue, for the rate-limited log line.
#[derive(Debug, Default)]
pub(super) struct Drops {
    total: u64,
    unreported: u64,
    last_report: Option<Instant>,
}

impl SessionState {
    pub(super) fn is_full(&self, extra_bytes: usize) -> bool {
        let l = &self.limits;
        (l.max_queued_messages > 0 && self.queued_len() >= l.max_queued_messages) || {
            let cap = if self.clean {
                l.max_queued_bytes
            } else {
                l.max_spool_bytes
            };
            cap > 0 && self.queued_bytes_total() + extra_bytes > cap
        }
    }

    /// Messages queued: entries, QoS 0 frames (see `frames`), and entries waiting in
    /// the spool.
    pub fn queued_len(&self) -> usize {
        self.queue.len() + self.frames.len() + usize::try_from(self.spooled()).unwrap_or(usize::MAX)
    }

    /// Whether the oldest queued message is a QoS 0 frame rather than the queue's first
    /// entry (frames follow the entry whose sequence number they carry).
    pub(super) fn frames_first(&self) -> bool {
        if self.frames.is_empty() {
            return false;
        }
        match (self.frames.front_after(), self.queue.front()) {
            (Some(after), Some(q)) => after < q.seq,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Drops the oldest queued message, entry or frame, for a newer one (`drop_oldest`),
    /// counted. Returns false when the queue is empty.
    pub(super) fn drop_oldest(&mut self, handle: StoreHandle) -> bool {
        if self.frames_first() {
            self.drop_front_frame();
        } else if let Some(old) = self.queue.pop_front() {
            self.queued_bytes -= old.held_bytes();
            handle.removed(&old);
        } else if !self.drop_oldest_spooled(handle) {
            return false;
        }
        metrics::dropped(DropReason::QueueFullOldest);
        true
    }

    /// Messages waiting or unacknowledged: how busy this session is, for shared
    /// subscriptions.
    pub fn backlog(&self) -> usize {
        self.queued_len() + self.inflight.len()
    }

    /// Messages that would be lost with this session now: queued, or sent without their
    /// PUBACK / PUBREC (a QoS 2 message whose PUBREC came was delivered).
    pub fn undelivered(&self) -> usize {
        self.queued_len()
            + self
                .inflight
                .values()
                .filter(|f| f.state == InflightState::Published)
                .count()
    }

    /// Whether a publisher waiting under backpressure may acknowledge now.
    pub fn has_room(&self) -> bool {
        !self.is_full(0)
    }

    /// Whether this session's changes go to the store.
    pub(super) fn persists(&self, handle: StoreHandle) -> bool {
        !self.clean && handle.store.is_durable()
    }

    /// Queues a delivery of `msg`, under the queue's limits and `queue_full` policy.
    /// The common case (room in the queue) inline, into [`Session::offer`]: as a call of
    /// its own it cost each delivery ~30 instructions of argument passing, prologue and
    /// epilogue (callgrind, 1 → 50 fan-out at QoS 1); a full queue's policies and the
    /// rest out of line.
    ///
    /// [`Session::offer`]: super::Session::offer
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn enqueue(
        &mut self,
        msg: &SharedMessage,
        qos: QoS,
        retain: bool,
        extra: Option<Box<DeliveryProps>>,
        no_waiter: bool,
        handle: StoreHandle,
        stored: &mut StoreOutcome,
    ) -> Delivery {
        if qos == QoS::AtMostOnce && !self.connected && !self.limits.queue_qos0 {
            return skip_qos0_offline();
        }
        let size = Queued::bytes_of(msg, extra.as_deref());
        let to_spool = self.spools(extra.as_deref(), handle);
        // Past `max_disk_bytes`, a queue that would spool is full, whatever its own size.
        let disk_full = to_spool && handle.store.disk_full();
        if disk_full || self.is_full(size) {
            let full = Full {
                no_waiter,
                to_spool,
                disk_full,
            };
            return self.enqueue_full(msg, qos, retain, extra, full, handle, stored, size);
        }
        self.push_entry(msg, qos, retain, extra, size, to_spool, handle, stored);
        Delivery::Queued
    }

    /// [`enqueue`](Self::enqueue) into a full queue: the `queue_full` policy decides.
    #[allow(clippy::too_many_arguments)]
    #[cold]
    #[inline(never)]
    fn enqueue_full(
        &mut self,
        msg: &SharedMessage,
        qos: QoS,
        retain: bool,
        extra: Option<Box<DeliveryProps>>,
        full: Full,
        handle: StoreHandle,
        stored: &mut StoreOutcome,
        size: usize,
    ) -> Delivery {
        // The new message, when it is the one dropped: a retained message sent on
        // SUBSCRIBE (`no_waiter`) or a live one.
        let new_dropped = if full.no_waiter {
            DropReason::RetainedOverLimit
        } else {
            DropReason::QueueFullNew
        };
        let outcome = match self.limits.queue_full {
            QueueFull::DropNew => {
                metrics::dropped(new_dropped);
                return Delivery::Dropped;
            }
            // Nobody to slow down (QoS 0, or a retained message sent on SUBSCRIBE):
            // queuing beyond the limit would be unbounded.
            QueueFull::Backpressure if qos == QoS::AtMostOnce || full.no_waiter => {
                metrics::dropped(new_dropped);
                return Delivery::Dropped;
            }
            QueueFull::Backpressure => Delivery::OverLimit,
            QueueFull::DropOldest => {
                // Evict from the front until the new message fits (on a full disk, one
                // for one); an empty queue that still cannot take it (one message over
                // max_queued_bytes) drops the new one instead.
                let mut evicted = false;
                while self.is_full(size) || (full.disk_full && !evicted) {
                    if !self.drop_oldest(handle) {
                        metrics::dropped(new_dropped);
                        return Delivery::Dropped;
                    }
                    evicted = true;
                }
                Delivery::Dropped
            }
        };
        self.push_entry(msg, qos, retain, extra, size, full.to_spool, handle, stored);
        outcome
    }

    /// Puts a new entry of `size` bytes (see [`Queued::held_bytes`]) at the back of the
    /// queue, stored first when the session persists; or, `to_spool`, into the spool.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn push_entry(
        &mut self,
        msg: &SharedMessage,
        qos: QoS,
        retain: bool,
        extra: Option<Box<DeliveryProps>>,
        size: usize,
        to_spool: bool,
        handle: StoreHandle,
        stored: &mut StoreOutcome,
    ) {
        if to_spool && self.spool(msg, qos, retain, extra.as_deref(), size, handle, stored) {
            return;
        }
        self.next_seq += 1;
        let mut item = Queued::new(self.next_seq, msg.clone(), qos, retain, extra, false);
        if qos != QoS::AtMostOnce && self.persists(handle) {
            self.store_item(&mut item, handle, stored);
        }
        self.queued_bytes += size;
        self.queue.push_back(item);
    }

    /// Writes a queue entry to the store. A failed write leaves it unstored (it is
    /// still delivered while midge runs) and tells the publisher through `stored`.
    #[inline(never)]
    fn store_item(&self, item: &mut Queued, handle: StoreHandle, stored: &mut StoreOutcome) {
        let outcome = handle.store.record(StoreEvent::Enqueued {
            session: handle.session,
            seq: item.seq,
            message: &item.msg,
            qos: item.qos,
            retain: item.retain,
            extra: item.extra.as_deref(),
            spool: false,
        });
        item.in_store = matches!(outcome, Ok(Some(_)));
        stored.add(outcome);
    }

    /// Stores the queued messages of a persistent session that are not stored yet (QoS 0
    /// ones, kept for an offline session with `queue_qos0_messages`): at shutdown, so a
    /// clean restart loses nothing at any QoS.
    pub fn store_unstored(&mut self, handle: StoreHandle) -> StoreOutcome {
        let mut stored = StoreOutcome::default();
        if !self.persists(handle) {
            return stored;
        }
        let mut queue = std::mem::take(&mut self.queue);
        for item in queue.iter_mut().filter(|q| !q.in_store) {
            self.store_item(item, handle, &mut stored);
        }
        self.queue = queue;
        stored
    }

    /// Counts a dropped message and logs at most once per `drop_log_interval`.
    pub(super) fn report_drop(&mut self, client_id: &str) {
        let interval = self.limits.drop_log_interval;
        let d = &mut self.rare.get_or_insert_default().drops;
        d.total += 1;
        d.unreported += 1;
        let now = Instant::now();
        let due = d
            .last_report
            .is_none_or(|t| now.duration_since(t) >= interval);
        if due {
            tracing::warn!(
                event = "queue_full",
                client_id = ?field(client_id),
                dropped = d.unreported,
                total = d.total,
                "outgoing queue full ({:?}), messages dropped",
                self.limits.queue_full
            );
            d.unreported = 0;
            d.last_report = Some(now);
        }
    }

    /// Messages this session's queue has dropped so far.
    pub fn dropped_total(&self) -> u64 {
        self.rare.as_ref().map_or(0, |r| r.drops.total)
    }

    /// Counts a queued message the ACL denied at send time; one log line per interval
    /// for the whole broker.
    pub(super) fn report_denied(&mut self, client_id: &str, topic: &str) {
        metrics::dropped(DropReason::Denied);
        static LOG: LogLimit = LogLimit::new(10_000);
        if let Some(held_back) = LOG.allow() {
            tracing::info!(
                event = "delivery_denied",
                client_id = &*log_limit::field(client_id),
                topic = &*log_limit::field(topic),
                held_back,
                "queued message no longer readable under the ACL, dropped instead of sent"
            );
        }
    }

    /// Registers `publisher` to be woken when this queue has room again.
    pub fn add_space_waiter(&mut self, publisher: &Arc<Session>) {
        if !self.space_waiters.iter().any(|w| Arc::ptr_eq(w, publisher)) {
            self.space_waiters.push(publisher.clone());
        }
    }

    /// Takes the publishers waiting for room in this queue; the caller wakes them after
    /// unlocking.
    pub fn take_space_waiters(&mut self) -> Vec<Arc<Session>> {
        std::mem::take(&mut self.space_waiters)
    }

    /// Takes out the messages that came through a shared subscription and are not yet
    /// acknowledged: queued ones, and QoS 1 PUBLISHes sent without a PUBACK. A QoS 2
    /// message already sent stays: its delivery is completed when this client comes back,
    /// and it never goes to another member [MQTT-4.8.2-4/5].
    pub fn take_shared(&mut self) -> Vec<Queued> {
        let is_shared = |q: &Queued| q.extra.as_ref().is_some_and(|e| e.shared.is_some());
        let mut taken = Vec::new();
        let pkids: Vec<u16> = self
            .inflight
            .iter()
            .filter(|(_, f)| {
                f.state == InflightState::Published
                    && f.item.qos == QoS::AtLeastOnce
                    && is_shared(&f.item)
            })
            .map(|(pkid, _)| pkid)
            .collect();
        for pkid in pkids {
            if let Some(f) = self.inflight.remove(&pkid) {
                taken.push(f.item);
            }
        }
        taken.sort_by_key(|q| q.seq);
        if self.queue.iter().any(is_shared) {
            let (shared, rest): (VecDeque<Queued>, VecDeque<Queued>) =
                std::mem::take(&mut self.queue)
                    .into_iter()
                    .partition(is_shared);
            self.queue = rest;
            for q in &shared {
                self.queued_bytes -= q.held_bytes();
            }
            taken.extend(shared);
        }
        taken
    }

    /// Puts back a stored queue entry at start (entries come in send order): one that was
    /// sent goes into the inflight window with its packet id, to be re-sent on the next
    /// connection [MQTT-4.4.0-1]; the rest into the queue.
    pub fn restore(&mut self, item: Queued, sent: Option<(u16, bool)>) {
        self.next_seq = self.next_seq.max(item.seq);
        match sent {
            Some((pkid, released)) => {
                let state = if released {
                    InflightState::Released
                } else {
                    InflightState::Published
                };
                self.inflight.insert(
                    pkid,
                    Inflight {
                        item,
                        state,
                        sent: true,
                        sent_at: None,
                    },
                );
                self.resend_due = true;
            }
            None => {
                self.queued_bytes += item.held_bytes();
                self.queue.push_back(item);
            }
        }
    }

    /// Puts back messages [`take_shared`](Self::take_shared) found no other member for.
    pub fn requeue(&mut self, items: Vec<Queued>) {
        for q in items {
            self.queued_bytes += q.held_bytes();
            self.queue.push_back(q);
        }
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
