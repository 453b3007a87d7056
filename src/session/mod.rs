//! A client's session: what outlives a single network connection.
//!
//! The session holds the client's subscriptions, the queue of messages waiting to be sent,
//! the inflight window of QoS 1/2 messages sent but not yet acknowledged, and the packet
//! ids of QoS 2 messages received but not yet released. Publishers push into the queue
//! from their own tasks ([`Session::offer`]; the broker then wakes the connection, once
//! per burst); the connection attached to the session pulls from it
//! ([`SessionState::fill`]) when its socket has room. A [`Wake`] links the two, so an idle
//! subscriber costs no task wake-ups at all.
//!
//! One file per state machine: this one holds the [`Session`] and its state, the store
//! handle and what a delivery comes to; `queue.rs` the queue, its limits and drop
//! policies and shared-subscription hand-over; `frames.rs` QoS 0 deliveries queued as
//! their encoded PUBLISH, in order with the queue; `inflight.rs` the outgoing window, packet
//! ids, retry and acknowledgements; `qos2.rs` incoming QoS 2; `timers.rs` keep-alive,
//! retry timing, expiry and the pending will. The packets themselves are written by the
//! connection's outbox, which knows the client's protocol version.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::auth::{Access, AclFile};
use crate::codec::QoS;
use crate::config::QueueFull;
use crate::message::{DeliveryProps, SharedMessage};
use crate::store::{Commit, SessionId, Store, StoreEvent, StoreOutcome, Waker};
use crate::subscriptions::Subscriptions;

/// Queue and window limits of one session, taken from the config and the listener the
/// client last connected through.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_inflight: usize,
    /// 0 = unlimited.
    pub max_queued_messages: usize,
    /// Bytes of a queue held in memory (a clean session's); 0 = unlimited.
    pub max_queued_bytes: usize,
    /// Bytes of a persistent session's queue, spool included; 0 = unlimited.
    pub max_spool_bytes: usize,
    pub queue_qos0: bool,
    pub queue_full: QueueFull,
    pub drop_log_interval: Duration,
}

/// Where a session's durable changes go: the broker's store, under the session's number.
/// Only persistent sessions record anything, and only with a durable store.
#[derive(Clone, Copy)]
pub struct StoreHandle<'a> {
    pub store: &'a dyn Store,
    pub session: SessionId,
    /// For ACL checks and log lines.
    pub client_id: &'a str,
}

impl StoreHandle<'_> {
    /// Records that a stored queue entry left the session.
    fn removed(&self, item: &Queued) {
        if item.in_store {
            let _ = self.store.record(StoreEvent::Removed {
                session: self.session,
                seq: item.seq,
            });
        }
    }
}

/// The attached connection's hold on its session (the one permit of
/// [`Session::attach`]), given back when the connection is done.
pub struct AttachPermit(pub Arc<Session>);

impl Drop for AttachPermit {
    fn drop(&mut self) {
        self.0.attach.add_permits(1);
    }
}

/// What happened to a message offered to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Queued,
    /// Not queued: QoS 0 for an offline client (unless `queue_qos0_messages`).
    Skipped,
    /// Not queued, or another message was dropped for it: the queue was full.
    Dropped,
    /// Queued beyond the limit under `queue_full = "backpressure"`: the publisher must
    /// withhold its acknowledgement until [`SessionState::has_room`].
    OverLimit,
}

impl Delivery {
    /// Whether the session's connection has something new to send. (A `Dropped` message
    /// under `drop_oldest` took a full queue's place: its connection was woken when the
    /// queue filled.)
    pub fn wakes(self) -> bool {
        matches!(self, Delivery::Queued | Delivery::OverLimit)
    }
}

pub struct SessionState {
    /// Set by the connection that owns the session now; the session ends with it.
    pub clean: bool,
    /// Bumped by every CONNECT that claims this client id; a connection whose generation is
    /// no longer current has been taken over.
    pub generation: u64,
    /// A connection is attached (the client is online).
    pub connected: bool,
    /// Sessions of publishers withholding an acknowledgement until this queue has room:
    /// woken when it has.
    pub space_waiters: Vec<Arc<Session>>,
    /// Shared by every session of the listener the client connected through.
    pub limits: Arc<Limits>,
    /// The session's owner: the verified identity (username checked against the password
    /// file, or certificate identity under `use_identity_as_username`) it was created by,
    /// `None` for an anonymous client. Only the owner may claim the session again (see
    /// the broker's `attach`); its ACL read rights govern what the session is
    /// sent, online and offline. Stored with the session.
    pub username: Option<Arc<str>>,
    /// Session Expiry Interval, seconds: 0 ends the session with the connection,
    /// `u32::MAX` never.
    pub expiry: u32,
    /// The attached MQTT 5.0 client's Receive Maximum: the inflight window never exceeds
    /// it [MQTT-3.3.4-7]. `None` for 3.1.1 and 3.1. (How to write to the client, its
    /// version, aliases and Maximum Packet Size, is the connection's [`Outbox`]'s.)
    ///
    /// [`Outbox`]: crate::outbox::Outbox
    pub receive_maximum: Option<u16>,
    /// Who is (or was last) connected to this session, for the operator's view (the HTTP
    /// API's client list); `None` for a session restored from the store and not yet
    /// claimed.
    pub peer: Option<Peer>,
    /// When an offline session ends, and a will held back by its Will Delay Interval.
    /// Boxed and allocated only while there is one: most sessions never have either.
    pending: Option<Box<Pending>>,
    pub timers: Timers,
    pub subscriptions: Subscriptions,
    pub queue: VecDeque<Queued>,
    /// QoS 0 deliveries queued as their encoded PUBLISH, in order with `queue` (see
    /// `frames`).
    pub frames: Frames,
    /// What `queue` and `frames` weigh (see `max_queued_bytes`).
    pub queued_bytes: usize,
    /// How the attached connection takes a QoS 0 PUBLISH, while every client of its
    /// version takes the same bytes and the session ends with it; `None` otherwise.
    /// Queued QoS 0 deliveries are frames only while it is set.
    pub wire: Option<Wire>,
    /// By packet id (the broker's own, handed out in sequence: see `inflight_map`).
    /// Iterated in no particular order: what is re-sent goes in send order, by the queue
    /// sequence (`item.seq`) each entry keeps.
    pub inflight: InflightMap,
    /// QoS 2 packet ids received from the client and acknowledged with PUBREC, waiting for
    /// PUBREL: a PUBLISH re-sent with one of these is not delivered again.
    /// Boxed and allocated on first use: most sessions never receive QoS 2, and the box
    /// costs every session 8 bytes where the set itself would cost 48.
    #[allow(clippy::box_collection)]
    incoming_qos2: Option<Box<HashSet<u16>>>,
    /// Some inflight messages were sent on an earlier connection and are due again.
    resend_due: bool,
    /// Stored QoS 2 messages given a packet id are not written before that id is on disk
    /// (see [`SessionState::fill`]): the store commit they wait for, 0 for none.
    held: Commit,
    next_pkid: u16,
    next_seq: u64,
    /// Drop counts and the spool's count: allocated on first use, as most sessions never
    /// drop or spool anything.
    rare: Option<Box<Rare>>,
}

/// The parts of a session most never use.
#[derive(Debug, Default)]
struct Rare {
    drops: Drops,
    spool: SpoolCount,
}

/// The connection a session is (or was last) attached to, as an operator sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub address: SocketAddr,
    /// The protocol level of its CONNECT: 3 (MQTT 3.1), 4 (3.1.1) or 5.
    pub protocol: u8,
    /// Its Keep Alive, seconds (as granted: a 5.0 Server Keep Alive replaces it).
    pub keep_alive: u16,
}

pub struct Session {
    /// Unique per session object, used as the subscriber key in the router, and the
    /// session's number in the durable store (kept across restarts).
    pub id: SessionId,
    /// Shared with the broker's sessions-by-client-id map.
    pub client_id: Arc<str>,
    pub state: Mutex<SessionState>,
    /// Wakes the attached connection: something was queued, a publisher it withholds an
    /// acknowledgement for may go on, the session was taken over, or the broker is
    /// shutting down. One [`Wake`] for all of these keeps an idle connection small.
    pub wake: Wake,
    /// Set while this session sits in a publisher's list of connections to wake once the
    /// publisher has routed everything it read (see `broker::DeferWakes`), so that a burst
    /// of messages adds it to that list once, not once per message.
    pub wake_deferred: AtomicBool,
    /// Held by the attached connection for its whole life, so that a take-over waits until
    /// the previous connection has let go of the session before using it.
    pub attach: tokio::sync::Semaphore,
    /// Where its durable changes go (see [`StoreHandle`]): the broker's store, held here
    /// so that whoever has the session can record its changes without the broker.
    store: Arc<dyn Store>,
}

impl Session {
    pub fn new(
        id: u64,
        client_id: Arc<str>,
        limits: Arc<Limits>,
        store: Arc<dyn Store>,
    ) -> Session {
        // Counted towards `memory_limit` while it exists (see `Drop`).
        crate::memory::charge(crate::memory::SESSION_BYTES + client_id.len());
        Session {
            id,
            client_id,
            state: Mutex::new(SessionState {
                clean: true,
                generation: 0,
                connected: false,
                space_waiters: Vec::new(),
                limits,
                username: None,
                expiry: 0,
                receive_maximum: None,
                peer: None,
                pending: None,
                timers: Timers::new(None, None),
                subscriptions: Subscriptions::default(),
                queue: VecDeque::new(),
                frames: Frames::default(),
                queued_bytes: 0,
                wire: None,
                inflight: InflightMap::default(),
                incoming_qos2: None,
                resend_due: false,
                held: 0,
                next_pkid: 0,
                next_seq: 0,
                rare: None,
            }),
            wake: Wake::default(),
            wake_deferred: AtomicBool::new(false),
            attach: tokio::sync::Semaphore::new(1),
            store,
        }
    }

    /// Offers a message to this session's queue; the caller wakes the connection when the
    /// outcome [`Delivery::wakes`] (a publisher routing a burst wakes each subscriber once,
    /// after the burst). When the queue is over its limit under backpressure, `publisher`
    /// is registered, under the same lock, to be woken once the queue has room.
    /// With a durable store, a QoS 1/2 message for a persistent session is stored under
    /// the session's lock (so that its removal, recorded under the same lock, cannot come
    /// first), and `stored` learns the commit the publisher's acknowledgement waits for.
    ///
    /// Inline in the broker's routing loop: a call per delivery, with seven arguments,
    /// cost ~20 instructions of prologue and epilogue (callgrind, 1 → 50 fan-out at QoS 1).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn offer(
        &self,
        msg: &SharedMessage,
        qos: QoS,
        retain: bool,
        extra: Option<Box<DeliveryProps>>,
        publisher: Option<&Arc<Session>>,
        acl: Option<&AclFile>,
        stored: &mut StoreOutcome,
    ) -> Delivery {
        self.offer_inner(msg, qos, retain, extra, publisher, acl, stored, None)
    }

    /// [`offer`](Self::offer), with the message's QoS 0 frames encoded once for every
    /// session it is offered to (`encoded`, [`Encoded::start`]ed with `msg`): a QoS 0
    /// delivery this session's connection takes as such is queued as those bytes (see
    /// `frames`).
    #[allow(clippy::too_many_arguments)]
    pub fn offer_encoded(
        &self,
        msg: &SharedMessage,
        qos: QoS,
        retain: bool,
        extra: Option<Box<DeliveryProps>>,
        publisher: Option<&Arc<Session>>,
        acl: Option<&AclFile>,
        stored: &mut StoreOutcome,
        encoded: Option<&mut Encoded>,
    ) -> Delivery {
        self.offer_inner(msg, qos, retain, extra, publisher, acl, stored, encoded)
    }

    /// Both of the above, compiled into each: `offer` without the frames' branch, so
    /// that what never becomes a frame (QoS 1/2 above all) pays nothing for them.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn offer_inner(
        &self,
        msg: &SharedMessage,
        qos: QoS,
        retain: bool,
        extra: Option<Box<DeliveryProps>>,
        publisher: Option<&Arc<Session>>,
        acl: Option<&AclFile>,
        stored: &mut StoreOutcome,
        encoded: Option<&mut Encoded>,
    ) -> Delivery {
        let mut st = self.state.lock();
        if let Some(acl) = acl {
            if !acl.check(
                &self.client_id,
                st.username.as_deref(),
                &msg.topic,
                Access::Read,
            ) {
                return Delivery::Skipped;
            }
        }
        if let Some(frame) = encoded.and_then(|e| st.frame_for(e, msg, qos, extra.is_some())) {
            // The common case inline; a full queue's policies out of line.
            if st.push_frame(frame, retain, msg.payload.len()) {
                return Delivery::Queued;
            }
            let outcome = st.enqueue_frame(frame, retain, msg.payload.len(), self.store_handle());
            if outcome == Delivery::Dropped {
                st.report_drop(&self.client_id);
            }
            return outcome;
        }
        let handle = self.store_handle();
        let outcome = st.enqueue(msg, qos, retain, extra, false, handle, stored);
        match (outcome, publisher) {
            (Delivery::Dropped, _) => st.report_drop(&self.client_id),
            (Delivery::OverLimit, Some(p)) => st.add_space_waiter(p),
            _ => {}
        }
        outcome
    }

    /// Queues retained messages for a new subscription, under the queue limits and
    /// `queue_full` policy like any other delivery: otherwise one SUBSCRIBE of `#` (or of
    /// many overlapping filters) would queue the whole retained store, as often as it
    /// likes. Under `backpressure` there is no publisher whose acknowledgement could be
    /// withheld, so the excess is dropped as with `drop_new`. Drops are counted and
    /// logged like the others. Returns how many were dropped.
    pub fn deliver_retained(&self, msgs: &[(SharedMessage, QoS)], sub_id: Option<u32>) -> usize {
        if msgs.is_empty() {
            return 0;
        }
        let mut dropped = 0;
        {
            let mut st = self.state.lock();
            let mut stored = StoreOutcome::default();
            for (msg, qos) in msgs {
                let extra = DeliveryProps::boxed(sub_id.into_iter().collect(), None);
                let outcome = st.enqueue(
                    msg,
                    *qos,
                    true,
                    extra,
                    true,
                    self.store_handle(),
                    &mut stored,
                );
                if outcome == Delivery::Dropped {
                    dropped += 1;
                    st.report_drop(&self.client_id);
                }
            }
        }
        self.wake.notify_one();
        dropped
    }

    /// What the store runs to wake this session's connection once a commit it waits for
    /// is durable.
    pub fn waker(self: &Arc<Session>) -> Waker {
        let me = self.clone();
        Box::new(move || me.wake.notify_one())
    }

    /// This session's way to the store.
    pub fn store_handle(&self) -> StoreHandle<'_> {
        StoreHandle {
            store: &*self.store,
            session: self.id,
            client_id: &self.client_id,
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        crate::memory::release(crate::memory::SESSION_BYTES + self.client_id.len());
    }
}

impl SessionState {
    /// Drops everything: subscriptions, queue, inflight window, QoS 2 receive state, the
    /// spool's count.
    pub fn reset(&mut self) {
        self.subscriptions.clear();
        self.queue.clear();
        self.frames.clear();
        self.queued_bytes = 0;
        self.inflight.clear();
        self.held = 0;
        self.incoming_qos2 = None;
        // The store let the spool go with the session; what a new one spools is numbered
        // on from `next_seq`, which stays.
        if let Some(rare) = self.rare.as_mut() {
            rare.spool = SpoolCount::default();
        }
    }
}

mod frames;
mod inflight;
mod inflight_map;
mod qos2;
mod queue;
mod spool;
#[cfg(test)]
pub(crate) mod test_support;
mod timers;
mod wake;

pub use frames::{Encoded, Frames, Wire};
pub use inflight::{Inflight, InflightState};
pub use inflight_map::InflightMap;
use queue::Drops;
pub use queue::Queued;
use spool::SpoolCount;
use timers::Pending;
pub use timers::{PendingWill, Timers};
pub use wake::Wake;

#[cfg(test)]
#[path = "bytes_tests.rs"]
mod bytes_tests;
