//! The outgoing inflight window: packet ids, sending what is due ([`SessionState::fill`]),
//! retransmission with DUP, and the PUBACK / PUBREC / PUBREL / PUBCOMP transitions of
//! messages sent to the client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Queued, Session, SessionState, StoreHandle};
use crate::auth::{Access, AclFile};
use crate::codec::{Ack, AckKind, QoS};
use crate::outbox::{Outbox, SHARE_PAYLOAD_ON_WRITE_FROM};
use crate::store::{Commit, StoreEvent};

/// Where an outgoing QoS 1/2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflightState {
    /// PUBLISH sent (QoS 1 or 2), waiting for PUBACK or PUBREC.
    Published,
    /// QoS 2: PUBREC received, PUBREL sent, waiting for PUBCOMP.
    Released,
}

#[derive(Debug, Clone)]
pub struct Inflight {
    pub item: Queued,
    pub state: InflightState,
    /// A PUBLISH for it went out (or may have, before a restart): the next one has DUP.
    pub sent: bool,
    /// When it was last written to a socket; `None` when it still has to be (re)sent on
    /// the next connection, or is held until its packet id is on disk.
    pub sent_at: Option<Instant>,
}

impl SessionState {
    /// About how many bytes of the write buffer the queue's head fills, up to `room`:
    /// the first entry's PUBLISH (header, topic and a payload small enough to be copied;
    /// a large payload is written from the message itself) times the entries the window
    /// lets go now (`window`: QoS 1/2 messages that may still go in flight), and never
    /// more than the queue holds (`queued_bytes`, which weighs every entry at more than
    /// its PUBLISH). An estimate to reserve the buffer once per burst, from the head
    /// alone: a walk over the entries to be sent cost each delivery ~15 instructions
    /// (callgrind, 1 → 50 fan-out at QoS 1), and a burst is mostly alike; a wrong guess
    /// costs the buffer one more growth, or a larger reservation bounded as said.
    fn wire_estimate(&self, room: usize, window: usize) -> usize {
        let Some(head) = self.queue.front() else {
            return 0;
        };
        let entries = if head.qos == QoS::AtMostOnce {
            self.queue.len()
        } else {
            self.queue.len().min(window)
        };
        let payload = head.msg.payload.len();
        let copied = if payload < SHARE_PAYLOAD_ON_WRITE_FROM {
            payload
        } else {
            0
        };
        // Fixed header (at most 5), topic length, packet id; 5.0 properties unknown.
        // (QoS 0 frames are handed over in their own buffers, not written into this one.)
        let each = 9 + head.msg.topic.len() + copied;
        each.saturating_mul(entries)
            .min(self.queued_bytes)
            .min(room)
    }

    fn alloc_pkid(&mut self) -> u16 {
        // The window is at most 65535 wide, so a free id always exists; the inflight map
        // is checked so an id still awaiting its acknowledgement is never reused.
        loop {
            self.next_pkid = self.next_pkid.wrapping_add(1);
            if self.next_pkid != 0 && !self.inflight.contains_key(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }

    /// Encodes into `out` what is due on the attached connection, until `out` holds
    /// `high_water` bytes: first inflight messages not yet (re)sent, in their original
    /// order and with their original packet ids (DUP=1 on a PUBLISH that was sent before),
    /// then queued messages while the inflight window has room. The queue is strictly
    /// FIFO, QoS 0 frames included (see `frames`), so per-topic order is kept. Returns
    /// the publishers to wake if the queue went from full to having room (see
    /// [`SessionState::space_waiters`]), and the store commit to be woken at, when a
    /// message is held for it.
    ///
    /// A QoS 2 message of a persistent session goes out only once its packet id is on
    /// disk. Otherwise a crash right after the PUBLISH would bring it back under a new
    /// packet id, and the subscriber would take it for a new message: exactly once would
    /// not hold. Everything behind it waits too, to keep the order.
    ///
    /// With an ACL (`acl`, the one in force now), every queued message is checked against
    /// the owner's read rights as it is sent: the ACL may have been reloaded since it was
    /// queued, and a message restored from the store was never checked by this process.
    /// One it denies is dropped, counted, and not sent.
    pub fn fill(
        &mut self,
        out: &mut Outbox,
        high_water: usize,
        now: Instant,
        handle: StoreHandle,
        acl: Option<&AclFile>,
    ) -> (Vec<Arc<Session>>, Commit) {
        let was_full = self.is_full(0);
        if self.held != 0 {
            // A lost commit will never be durable: send anyway rather than never.
            if handle.store.durable() < self.held && !handle.store.is_lost(self.held) {
                return (Vec::new(), 0);
            }
            self.held = 0;
        }
        let mut hold = 0;
        // Before the re-sends: a batch from the spool may bring entries sent before.
        self.load_spool(handle);
        if self.resend_due {
            self.resend_due = false;
            self.resend(out, now, handle, |f| f.sent_at.is_none());
        }
        let window = match self.receive_maximum {
            Some(receive_maximum) => self.limits.max_inflight.min(usize::from(receive_maximum)),
            None => self.limits.max_inflight,
        };
        let burst = self.wire_estimate(
            high_water.saturating_sub(out.len()),
            window.saturating_sub(self.inflight.len()),
        );
        if burst > 0 {
            out.reserve(burst);
        }
        while out.len() < high_water {
            if self.frames_first() {
                if let Some(span) = self.frames.pop_front() {
                    self.queued_bytes -= span.len();
                    self.send_span(out, span, handle.client_id, acl);
                }
                continue;
            }
            let Some(head) = self.queue.front() else {
                break;
            };
            if head.qos != QoS::AtMostOnce && self.inflight.len() >= window {
                break;
            }
            let Some(item) = self.queue.pop_front() else {
                break;
            };
            self.queued_bytes -= item.held_bytes();
            // An expired message is never delivered [MQTT-3.3.2-5].
            if item.msg.is_expired(now) {
                crate::metrics::dropped(crate::metrics::DropReason::Expired);
                handle.removed(&item);
                continue;
            }
            if acl.is_some_and(|acl| {
                !acl.check(
                    handle.client_id,
                    self.username.as_deref(),
                    &item.msg.topic,
                    Access::Read,
                )
            }) {
                handle.removed(&item);
                self.report_denied(handle.client_id, &item.msg.topic);
                continue;
            }
            if item.qos == QoS::AtMostOnce {
                // A QoS 0 message the client cannot take is dropped all the same.
                let _ = write_publish(out, &item, 0, false, now);
                handle.removed(&item);
            } else {
                let pkid = self.alloc_pkid();
                if item.in_store {
                    // Re-sent with this id after a restart [MQTT-4.4.0-1].
                    let sent = handle.store.record(StoreEvent::Sent {
                        session: handle.session,
                        seq: item.seq,
                        pkid,
                    });
                    if let (Ok(Some(commit)), QoS::ExactlyOnce) = (sent, item.qos) {
                        if !handle.store.is_stored(commit) {
                            let f = Inflight {
                                item,
                                state: InflightState::Published,
                                sent: false,
                                sent_at: None,
                            };
                            self.inflight.insert(pkid, f);
                            self.held = commit;
                            self.resend_due = true;
                            hold = commit;
                            break;
                        }
                    }
                }
                // Written before the entry is made, which then goes into the window in
                // one move (each move of an entry was ~10 instructions a message).
                if write_publish(out, &item, pkid, false, now) {
                    let f = Inflight {
                        item,
                        state: InflightState::Published,
                        sent: true,
                        sent_at: Some(now),
                    };
                    self.inflight.insert(pkid, f);
                } else {
                    handle.removed(&item);
                }
            }
        }
        let waiters = if was_full && !self.is_full(0) {
            self.take_space_waiters()
        } else {
            Vec::new()
        };
        (waiters, hold)
    }

    /// Re-sends inflight messages last sent before `now - retry` (MQTT 3.1.1 timed retry).
    pub fn retry(&mut self, out: &mut Outbox, retry: Duration, now: Instant, handle: StoreHandle) {
        self.resend(out, now, handle, |f| {
            f.sent_at.is_some_and(|t| now.duration_since(t) >= retry)
        });
    }

    /// Re-sends the inflight messages `due` picks, in their original send order, with
    /// their original packet ids (DUP=1 on a PUBLISH).
    fn resend(
        &mut self,
        out: &mut Outbox,
        now: Instant,
        handle: StoreHandle,
        due: impl Fn(&Inflight) -> bool,
    ) {
        let mut picked: Vec<(u64, u16)> = self
            .inflight
            .iter()
            .filter(|(_, f)| due(f))
            .map(|(pkid, f)| (f.item.seq, pkid))
            .collect();
        picked.sort_unstable();
        for (_, pkid) in picked {
            if let Some(f) = self.inflight.get_mut(&pkid) {
                if write_inflight(out, pkid, f, now) {
                    f.sent_at = Some(now);
                } else if let Some(f) = self.inflight.remove(&pkid) {
                    handle.removed(&f.item);
                }
            }
        }
    }

    /// When the longest-waiting inflight message was last sent, if any is waiting.
    pub fn oldest_sent(&self) -> Option<Instant> {
        self.inflight.values().filter_map(|f| f.sent_at).min()
    }

    /// Marks every inflight message to be re-sent by the next [`fill`](Self::fill): the
    /// connection it was sent on is gone.
    pub fn mark_inflight_unsent(&mut self) {
        for f in self.inflight.values_mut() {
            f.sent_at = None;
        }
        self.resend_due = !self.inflight.is_empty();
    }

    /// PUBACK for an outgoing QoS 1 message. Returns false for an unknown packet id.
    /// Inline in `handlers::ack::pubacks`' loop: a call per PUBACK cost ~15 instructions
    /// of prologue and epilogue (callgrind).
    #[inline]
    pub fn puback(&mut self, pkid: u16, handle: StoreHandle) -> bool {
        self.inflight.discard_if(
            &pkid,
            |f| f.item.qos == QoS::AtLeastOnce,
            |f| handle.removed(&f.item),
        )
    }

    fn remove_inflight(&mut self, pkid: u16, handle: StoreHandle) -> bool {
        match self.inflight.remove(&pkid) {
            Some(f) => {
                handle.removed(&f.item);
                true
            }
            None => false,
        }
    }

    /// PUBREC for an outgoing QoS 2 message: the PUBLISH is done, PUBREL is owed. An
    /// unknown packet id is answered with PUBREL all the same by the caller, as the
    /// specification's flow allows a duplicate PUBREC after a retransmission.
    ///
    /// Returns whether the id was known, and the store commit the PUBREL must wait for
    /// (0: answer at once). For a persistent session the PUBREL goes out only once the
    /// store knows the message is released: a subscriber that got PUBREL forgets the
    /// packet id, and a PUBLISH re-sent with it after a restart would be a new message to
    /// it. The held PUBREL is sent by [`fill`](Self::fill) once the commit is durable.
    pub fn pubrec(&mut self, pkid: u16, now: Instant, handle: StoreHandle) -> (bool, Commit) {
        let Some(f) = self.inflight.get_mut(&pkid) else {
            return (false, 0);
        };
        if f.item.qos != QoS::ExactlyOnce {
            return (false, 0);
        }
        let mut hold = 0;
        match f.state {
            InflightState::Published if f.item.in_store => {
                let released = handle.store.record(StoreEvent::Released {
                    session: handle.session,
                    seq: f.item.seq,
                });
                if let Ok(Some(commit)) = released {
                    if !handle.store.is_stored(commit) {
                        hold = commit;
                    }
                }
            }
            // A PUBREC again while the PUBREL is still held: it stays held.
            InflightState::Released if f.sent_at.is_none() && self.held != 0 => {
                hold = self.held;
            }
            _ => {}
        }
        f.state = InflightState::Released;
        if hold == 0 {
            f.sent_at = Some(now);
        } else {
            f.sent_at = None;
            self.held = self.held.max(hold);
            self.resend_due = true;
        }
        (true, hold)
    }

    /// A 5.0 PUBACK/PUBREC with a reason code of 0x80 or more: the subscriber refused the
    /// message, which is discarded and never sent anywhere else [MQTT-4.8.2-6]; its
    /// window slot is free.
    pub fn refused(&mut self, pkid: u16, handle: StoreHandle) -> bool {
        match self.inflight.get(&pkid) {
            Some(f) if f.state == InflightState::Published => self.remove_inflight(pkid, handle),
            _ => false,
        }
    }

    /// PUBCOMP for an outgoing QoS 2 message: delivery done, the window slot is free.
    pub fn pubcomp(&mut self, pkid: u16, handle: StoreHandle) -> bool {
        match self.inflight.get(&pkid) {
            Some(f) if f.state == InflightState::Released => self.remove_inflight(pkid, handle),
            _ => false,
        }
    }
}

/// Writes an inflight message's PUBLISH (DUP on a re-send) or PUBREL. Returns false when
/// the PUBLISH could not be sent to this client at all (too large for its Maximum Packet
/// Size): the caller forgets it.
fn write_inflight(out: &mut Outbox, pkid: u16, f: &mut Inflight, now: Instant) -> bool {
    match f.state {
        InflightState::Published => {
            let written = write_publish(out, &f.item, pkid, f.sent, now);
            f.sent |= written;
            written
        }
        InflightState::Released => {
            out.ack(AckKind::PubRel, Ack { pkid, reason: 0 });
            true
        }
    }
}

/// Writes a queued message's PUBLISH in the client's version (see [`Outbox::publish`]).
/// Inline: as a call of its own (with `Outbox::publish`'s fast path inlined into it) it
/// cost each delivery ~30 instructions of call, prologue and epilogue (callgrind,
/// 1 → 50 fan-out at QoS 1).
#[inline(always)]
fn write_publish(out: &mut Outbox, item: &Queued, pkid: u16, dup: bool, now: Instant) -> bool {
    let sub_ids = item.extra.as_ref().map_or(&[][..], |e| &e.sub_ids[..]);
    out.publish(&item.msg, item.qos, item.retain, pkid, dup, sub_ids, now)
}

#[cfg(test)]
#[path = "inflight_tests.rs"]
mod tests;
