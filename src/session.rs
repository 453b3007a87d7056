//! A client's session: what outlives a single network connection.
//!
//! The session holds the client's subscriptions, the queue of messages waiting to be sent,
//! the inflight window of QoS 1/2 messages sent but not yet acknowledged, and the packet
//! ids of QoS 2 messages received but not yet released. Publishers push into the queue
//! from their own tasks ([`Session::deliver`]); the connection attached to the session
//! pulls from it ([`SessionState::fill`]) when its socket has room. A [`Notify`] links the
//! two, so an idle subscriber costs no task wake-ups at all.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::auth::{Access, AclFile};
use crate::codec::{self, QoS};
use crate::config::QueueFull;
use crate::log_limit::{self, field, LogLimit};
use crate::message::{DeliveryProps, SharedMessage};
use crate::outbox::Outbox;
use crate::store::{Commit, SessionId, Store, StoreEvent, StoreOutcome, Waker};
use crate::subscriptions::Subscriptions;

/// Queue and window limits of one session, taken from the config and the listener the
/// client last connected through.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_inflight: usize,
    /// 0 = unlimited.
    pub max_queued_messages: usize,
    /// 0 = unlimited.
    pub max_queued_bytes: usize,
    pub queue_qos0: bool,
    pub queue_full: QueueFull,
    pub drop_log_interval: Duration,
}

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
        Queued::new(
            self.seq,
            self.msg.clone(),
            self.qos,
            self.retain,
            self.extra.clone(),
            self.in_store,
        )
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
    fn bytes_of(msg: &crate::message::Message, extra: Option<&DeliveryProps>) -> usize {
        std::mem::size_of::<Queued>()
            + msg.held_bytes()
            + extra.map_or(0, DeliveryProps::held_bytes)
    }
}

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

/// Keep-alive and retransmission timing of the attached connection. The broker's sweeper
/// reads it for every connected session a few times a second and raises the flags; the
/// connection acts on them when it wakes. One sweeper replaces a timer per connection.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    /// When the connection last received bytes (updated on its next loop turn).
    pub last_in: Instant,
    /// How long the connection may stay silent, in milliseconds: 1.5 × the client's
    /// keep-alive [MQTT-3.1.2-24]; 0 = keep-alive 0, no timeout. (Milliseconds in a u32
    /// rather than `Option<Duration>`: every session carries these.)
    keep_alive_ms: u32,
    /// Retransmission interval on a live connection (MQTT 3.1.1/3.1 only), milliseconds;
    /// 0 = none. At most ~49 days.
    retry_ms: u32,
    /// Raised by the sweeper: the keep-alive ran out.
    pub keep_alive_expired: bool,
    /// Raised by the sweeper: an inflight message is due to be re-sent.
    pub retry_due: bool,
}

impl Timers {
    pub fn new(keep_alive: Option<Duration>, retry: Option<Duration>) -> Timers {
        let ms = |d: Option<Duration>| {
            d.map_or(0, |d| {
                u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
            })
        };
        Timers {
            last_in: Instant::now(),
            keep_alive_ms: ms(keep_alive),
            retry_ms: ms(retry),
            keep_alive_expired: false,
            retry_due: false,
        }
    }

    pub fn keep_alive(&self) -> Option<Duration> {
        (self.keep_alive_ms > 0).then(|| Duration::from_millis(u64::from(self.keep_alive_ms)))
    }

    pub fn retry(&self) -> Option<Duration> {
        (self.retry_ms > 0).then(|| Duration::from_millis(u64::from(self.retry_ms)))
    }
}

/// How to send to the attached MQTT 5.0 client, from its CONNECT; `None` in
/// [`SessionState::peer`] for 3.1.1 and 3.1 clients.
#[derive(Debug)]
pub struct PeerV5 {
    /// The client's Receive Maximum: the inflight window never exceeds it [MQTT-3.3.4-7].
    pub receive_maximum: u16,
    /// The client's Maximum Packet Size: larger PUBLISHes are dropped for it
    /// [MQTT-3.1.2-25].
    pub max_packet_size: Option<u32>,
    /// How many aliases the broker sets: the client's Topic Alias Maximum
    /// [MQTT-3.1.2-26], lowered to `max_topic_alias_broker` by the caller.
    pub topic_alias_max: u16,
    /// Aliases set on this connection, by topic. At most `topic_alias_max` entries
    /// holding at most [`MAX_ALIAS_TOPIC_BYTES`] of topics: the connection keeps them
    /// for its whole life.
    aliases: std::collections::HashMap<Box<str>, u16>,
    /// Bytes of the topics in `aliases`.
    alias_bytes: usize,
}

/// Most bytes of topic names one connection's broker-to-client alias map holds: enough
/// for every alias a client may have with topics of a realistic length, and a bound on
/// what a client asking for many aliases on long topics makes the broker keep.
pub const MAX_ALIAS_TOPIC_BYTES: usize = 64 * 1024;

impl PeerV5 {
    pub fn new(receive_maximum: u16, max_packet_size: Option<u32>, topic_alias_max: u16) -> PeerV5 {
        PeerV5 {
            receive_maximum,
            max_packet_size,
            topic_alias_max,
            aliases: Default::default(),
            alias_bytes: 0,
        }
    }

    /// The alias to send `topic` with, and whether the topic itself must be sent too
    /// (the first time, which sets the alias: see [`PeerV5::set_alias`]). Aliases are
    /// handed out until the maximum or [`MAX_ALIAS_TOPIC_BYTES`] is reached; later
    /// topics go without (an alias is never re-assigned: no bookkeeping per message).
    fn alias_for(&self, topic: &str) -> (Option<u16>, bool) {
        if self.topic_alias_max == 0 {
            return (None, true);
        }
        if let Some(alias) = self.aliases.get(topic) {
            return (Some(*alias), false);
        }
        if self.alias_bytes + topic.len() > MAX_ALIAS_TOPIC_BYTES {
            return (None, true);
        }
        match u16::try_from(self.aliases.len() + 1) {
            Ok(alias) if alias <= self.topic_alias_max => (Some(alias), true),
            _ => (None, true),
        }
    }

    /// Records an alias once the PUBLISH that sets it is written.
    fn set_alias(&mut self, topic: &str, alias: u16) {
        if self.aliases.insert(topic.into(), alias).is_none() {
            self.alias_bytes += topic.len();
        }
    }

    /// Topic aliases set on this connection, and the bytes of their topics.
    pub fn alias_usage(&self) -> (usize, usize) {
        (self.aliases.len(), self.alias_bytes)
    }
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

/// A will waiting for its Will Delay Interval (MQTT 5.0) to pass.
#[derive(Debug)]
pub struct PendingWill {
    pub due: Instant,
    pub will: codec::Will,
    /// The identity it is published with (ACL write check).
    pub username: Option<Arc<str>>,
}

/// What an offline session is waiting for.
#[derive(Debug, Default)]
struct Pending {
    expires_at: Option<Instant>,
    will: Option<Box<PendingWill>>,
}

/// Counts of messages dropped by a full queue, for the rate-limited log line.
#[derive(Debug, Default)]
struct Drops {
    total: u64,
    unreported: u64,
    last_report: Option<Instant>,
    /// Queued messages the owner's ACL no longer let through when they were sent.
    denied: u64,
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
    /// [`crate::broker::Broker::attach`]); its ACL read rights govern what the session is
    /// sent, online and offline. StoreOutcome with the session.
    pub username: Option<Arc<str>>,
    /// Session Expiry Interval, seconds: 0 ends the session with the connection,
    /// `u32::MAX` never.
    pub expiry: u32,
    /// How to send to the attached client when it speaks MQTT 5.0.
    pub peer: Option<Box<PeerV5>>,
    /// When an offline session ends, and a will held back by its Will Delay Interval.
    /// Boxed and allocated only while there is one: most sessions never have either.
    pending: Option<Box<Pending>>,
    pub timers: Timers,
    pub subscriptions: Subscriptions,
    pub queue: VecDeque<Queued>,
    pub queued_bytes: usize,
    /// By packet id; `item.seq` gives the send order for retransmission.
    pub inflight: BTreeMap<u16, Inflight>,
    /// QoS 2 packet ids received from the client and acknowledged with PUBREC, waiting for
    /// PUBREL: a PUBLISH re-sent with one of these is not delivered again.
    /// Boxed and allocated on first use: most sessions never receive QoS 2, and the box
    /// costs every session 8 bytes where the set itself would cost 48.
    #[allow(clippy::box_collection)]
    incoming_qos2: Option<Box<HashSet<u16>>>,
    /// Some inflight messages were sent on an earlier connection and are due again.
    resend_due: bool,
    /// StoreOutcome QoS 2 messages given a packet id are not written before that id is on disk
    /// (see [`SessionState::fill`]): the store commit they wait for, 0 for none.
    held: Commit,
    next_pkid: u16,
    next_seq: u64,
    /// Allocated on the first drop: most sessions never drop anything.
    drops: Option<Box<Drops>>,
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
    /// shutting down. One [`Notify`] for all of these keeps an idle connection small.
    pub wake: Notify,
    /// Held by the attached connection for its whole life, so that a take-over waits until
    /// the previous connection has let go of the session before using it.
    pub attach: tokio::sync::Semaphore,
}

impl Session {
    pub fn new(id: u64, client_id: Arc<str>, limits: Arc<Limits>) -> Session {
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
                peer: None,
                pending: None,
                timers: Timers::new(None, None),
                subscriptions: Subscriptions::default(),
                queue: VecDeque::new(),
                queued_bytes: 0,
                inflight: BTreeMap::new(),
                incoming_qos2: None,
                resend_due: false,
                held: 0,
                next_pkid: 0,
                next_seq: 0,
                drops: None,
            }),
            wake: Notify::new(),
            attach: tokio::sync::Semaphore::new(1),
        }
    }

    /// Offers a message to this session's queue and wakes its connection. When the queue
    /// is over its limit under backpressure, `publisher` is registered, under the same
    /// lock, to be woken once the queue has room.
    /// With a durable store, a QoS 1/2 message for a persistent session is stored under
    /// the session's lock (so that its removal, recorded under the same lock, cannot come
    /// first), and `stored` learns the commit the publisher's acknowledgement waits for.
    #[allow(clippy::too_many_arguments)]
    pub fn deliver(
        &self,
        msg: &SharedMessage,
        qos: QoS,
        retain: bool,
        extra: Option<Box<DeliveryProps>>,
        publisher: Option<&Arc<Session>>,
        acl: Option<&AclFile>,
        store: &dyn Store,
        stored: &mut StoreOutcome,
    ) -> Delivery {
        let outcome = {
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
            let handle = self.store_handle(store);
            let outcome = st.enqueue(msg, qos, retain, extra, false, handle, stored);
            match (outcome, publisher) {
                (Delivery::Dropped, _) => st.report_drop(&self.client_id),
                (Delivery::OverLimit, Some(p)) => st.add_space_waiter(p),
                _ => {}
            }
            outcome
        };
        if matches!(outcome, Delivery::Queued | Delivery::OverLimit) {
            self.wake.notify_one();
        }
        outcome
    }

    /// Queues retained messages for a new subscription, under the queue limits and
    /// `queue_full` policy like any other delivery: otherwise one SUBSCRIBE of `#` (or of
    /// many overlapping filters) would queue the whole retained store, as often as it
    /// likes. Under `backpressure` there is no publisher whose acknowledgement could be
    /// withheld, so the excess is dropped as with `drop_new`. Drops are counted and
    /// logged like the others. Returns how many were dropped.
    pub fn deliver_retained(
        &self,
        msgs: &[(SharedMessage, QoS)],
        sub_id: Option<u32>,
        store: &dyn Store,
    ) -> usize {
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
                    self.store_handle(store),
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
    pub fn store_handle<'a>(&'a self, store: &'a dyn Store) -> StoreHandle<'a> {
        StoreHandle {
            store,
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
    fn is_full(&self, extra_bytes: usize) -> bool {
        let l = &self.limits;
        (l.max_queued_messages > 0 && self.queue.len() >= l.max_queued_messages)
            || (l.max_queued_bytes > 0 && self.queued_bytes + extra_bytes > l.max_queued_bytes)
    }

    /// When this offline session ends, if it does.
    pub fn expires_at(&self) -> Option<Instant> {
        self.pending.as_ref().and_then(|p| p.expires_at)
    }

    pub fn set_expires_at(&mut self, at: Option<Instant>) {
        self.pending.get_or_insert_default().expires_at = at;
        self.tidy_pending();
    }

    /// When the held-back will is due, if there is one.
    pub fn pending_will_due(&self) -> Option<Instant> {
        self.pending
            .as_ref()
            .and_then(|p| p.will.as_ref())
            .map(|w| w.due)
    }

    /// Whether a QoS 2 PUBLISH with this packet id was received and not yet released.
    pub fn incoming_qos2_has(&self, pkid: u16) -> bool {
        self.incoming_qos2
            .as_ref()
            .is_some_and(|set| set.contains(&pkid))
    }

    /// Holds a will back until `will.due`.
    pub fn set_pending_will(&mut self, will: PendingWill) {
        self.pending.get_or_insert_default().will = Some(Box::new(will));
    }

    /// Takes the held-back will, if there is one and `due` says so.
    pub fn take_pending_will(
        &mut self,
        due: impl Fn(&PendingWill) -> bool,
    ) -> Option<Box<PendingWill>> {
        let will = self
            .pending
            .as_mut()
            .and_then(|p| p.will.take_if(|w| due(w)));
        self.tidy_pending();
        will
    }

    fn tidy_pending(&mut self) {
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.expires_at.is_none() && p.will.is_none())
        {
            self.pending = None;
        }
    }

    /// Messages waiting or unacknowledged: how busy this session is, for shared
    /// subscriptions.
    pub fn backlog(&self) -> usize {
        self.queue.len() + self.inflight.len()
    }

    /// Whether a publisher waiting under backpressure may acknowledge now.
    pub fn has_room(&self) -> bool {
        !self.is_full(0)
    }

    /// Whether this session's changes go to the store.
    fn persists(&self, handle: StoreHandle) -> bool {
        !self.clean && handle.store.is_durable()
    }

    #[allow(clippy::too_many_arguments)]
    fn enqueue(
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
            return Delivery::Skipped;
        }
        let size = Queued::bytes_of(msg, extra.as_deref());
        let mut outcome = Delivery::Queued;
        if self.is_full(size) {
            match self.limits.queue_full {
                QueueFull::DropNew => return Delivery::Dropped,
                // Nobody to slow down (QoS 0, or a retained message sent on SUBSCRIBE):
                // queuing beyond the limit would be unbounded.
                QueueFull::Backpressure if qos == QoS::AtMostOnce || no_waiter => {
                    return Delivery::Dropped
                }
                QueueFull::Backpressure => outcome = Delivery::OverLimit,
                QueueFull::DropOldest => {
                    // Evict from the front until the new message fits; an empty queue
                    // that still cannot take it (one message over max_queued_bytes)
                    // drops the new one instead.
                    while self.is_full(size) {
                        match self.queue.pop_front() {
                            Some(old) => {
                                self.queued_bytes -= old.held_bytes();
                                handle.removed(&old);
                            }
                            None => return Delivery::Dropped,
                        }
                    }
                    outcome = Delivery::Dropped;
                }
            }
        }
        self.next_seq += 1;
        let mut item = Queued::new(self.next_seq, msg.clone(), qos, retain, extra, false);
        if qos != QoS::AtMostOnce && self.persists(handle) {
            self.store_item(&mut item, handle, stored);
        }
        self.queued_bytes += size;
        self.queue.push_back(item);
        outcome
    }

    /// Writes a queue entry to the store. A failed write leaves it unstored (it is
    /// still delivered while midge runs) and tells the publisher through `stored`.
    fn store_item(&self, item: &mut Queued, handle: StoreHandle, stored: &mut StoreOutcome) {
        let outcome = handle.store.record(StoreEvent::Enqueued {
            session: handle.session,
            seq: item.seq,
            message: &item.msg,
            qos: item.qos,
            retain: item.retain,
            extra: item.extra.as_deref(),
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
    fn report_drop(&mut self, client_id: &str) {
        let interval = self.limits.drop_log_interval;
        let d = self.drops.get_or_insert_default();
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
        self.drops.as_ref().map_or(0, |d| d.total)
    }

    /// Counts a queued message the ACL denied at send time; one log line per interval
    /// for the whole broker.
    fn report_denied(&mut self, client_id: &str, topic: &str) {
        self.drops.get_or_insert_default().denied += 1;
        static LOG: LogLimit = LogLimit::new(10_000);
        if let Some(held_back) = LOG.allow() {
            tracing::info!(
                client_id = &*log_limit::field(client_id),
                topic = &*log_limit::field(topic),
                held_back,
                "queued message no longer readable under the ACL, dropped instead of sent"
            );
        }
    }

    /// Queued messages the ACL denied when they were due to be sent.
    pub fn denied_total(&self) -> u64 {
        self.drops.as_ref().map_or(0, |d| d.denied)
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
    /// FIFO, so per-topic order is kept. Returns the publishers to wake if the queue went
    /// from full to having room (see [`SessionState::space_waiters`]), and the store
    /// commit to be woken at, when a message is held for it.
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
        if self.resend_due {
            self.resend_due = false;
            self.resend(out, now, handle, |f| f.sent_at.is_none());
        }
        let window = match &self.peer {
            Some(peer) => self
                .limits
                .max_inflight
                .min(usize::from(peer.receive_maximum)),
            None => self.limits.max_inflight,
        };
        while out.len() < high_water {
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
                encode_publish(out, self.peer.as_deref_mut(), &item, 0, false, now);
                handle.removed(&item);
            } else {
                let pkid = self.alloc_pkid();
                let mut f = Inflight {
                    item,
                    state: InflightState::Published,
                    sent: false,
                    sent_at: None,
                };
                if f.item.in_store {
                    // Re-sent with this id after a restart [MQTT-4.4.0-1].
                    let sent = handle.store.record(StoreEvent::Sent {
                        session: handle.session,
                        seq: f.item.seq,
                        pkid,
                    });
                    if let (Ok(Some(commit)), QoS::ExactlyOnce) = (sent, f.item.qos) {
                        if !handle.store.is_stored(commit) {
                            self.inflight.insert(pkid, f);
                            self.held = commit;
                            self.resend_due = true;
                            hold = commit;
                            break;
                        }
                    }
                }
                if encode_inflight(out, self.peer.as_deref_mut(), pkid, &mut f, now) {
                    f.sent_at = Some(now);
                    self.inflight.insert(pkid, f);
                } else {
                    handle.removed(&f.item);
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
            .map(|(pkid, f)| (f.item.seq, *pkid))
            .collect();
        picked.sort_unstable();
        for (_, pkid) in picked {
            if let Some(f) = self.inflight.get_mut(&pkid) {
                if encode_inflight(out, self.peer.as_deref_mut(), pkid, f, now) {
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

    /// Records an incoming QoS 2 packet id (PUBREC sent, PUBREL awaited). Returns false
    /// if it was already recorded: the PUBLISH is a re-send, not to be delivered again.
    pub fn incoming_qos2_insert(&mut self, pkid: u16) -> bool {
        self.incoming_qos2.get_or_insert_default().insert(pkid)
    }

    /// [`incoming_qos2_insert`](Self::incoming_qos2_insert), stored for a persistent
    /// session (so a re-send after a restart is not delivered twice): the PUBREC waits
    /// for the returned commit.
    pub fn receive_qos2(&mut self, pkid: u16, handle: StoreHandle) -> (bool, StoreOutcome) {
        let mut stored = StoreOutcome::default();
        let first_time = self.incoming_qos2_insert(pkid);
        if first_time && self.persists(handle) {
            stored.add(handle.store.record(StoreEvent::Qos2Received {
                session: handle.session,
                pkid,
            }));
        }
        (first_time, stored)
    }

    /// [`incoming_qos2_remove`](Self::incoming_qos2_remove), stored for a persistent
    /// session: the PUBCOMP waits for the returned commit, since a client that got it may
    /// reuse the id at once.
    pub fn release_qos2(&mut self, pkid: u16, handle: StoreHandle) -> (bool, StoreOutcome) {
        let mut stored = StoreOutcome::default();
        let known = self.incoming_qos2_remove(pkid);
        if known && self.persists(handle) {
            stored.add(handle.store.record(StoreEvent::Qos2Completed {
                session: handle.session,
                pkid,
            }));
        }
        (known, stored)
    }

    /// Forgets an incoming QoS 2 packet id (PUBREL received). Returns whether it was known.
    pub fn incoming_qos2_remove(&mut self, pkid: u16) -> bool {
        self.incoming_qos2
            .as_mut()
            .is_some_and(|set| set.remove(&pkid))
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
            .map(|(pkid, _)| *pkid)
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

    /// Drops everything: subscriptions, queue, inflight window, QoS 2 receive state.
    pub fn reset(&mut self) {
        self.subscriptions.clear();
        self.queue.clear();
        self.queued_bytes = 0;
        self.inflight.clear();
        self.held = 0;
        self.incoming_qos2 = None;
    }

    /// PUBACK for an outgoing QoS 1 message. Returns false for an unknown packet id.
    pub fn puback(&mut self, pkid: u16, handle: StoreHandle) -> bool {
        match self.inflight.get(&pkid) {
            Some(f) if f.item.qos == QoS::AtLeastOnce => self.remove_inflight(pkid, handle),
            _ => false,
        }
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

    /// PUBCOMP for an outgoing QoS 2 message.
    /// A 5.0 PUBACK/PUBREC with a reason code of 0x80 or more: the subscriber refused the
    /// message, which is discarded and never sent anywhere else [MQTT-4.8.2-6]; its
    /// window slot is free.
    pub fn refused(&mut self, pkid: u16, handle: StoreHandle) -> bool {
        match self.inflight.get(&pkid) {
            Some(f) if f.state == InflightState::Published => self.remove_inflight(pkid, handle),
            _ => false,
        }
    }

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
fn encode_inflight(
    out: &mut Outbox,
    peer: Option<&mut PeerV5>,
    pkid: u16,
    f: &mut Inflight,
    now: Instant,
) -> bool {
    match f.state {
        InflightState::Published => {
            let written = encode_publish(out, peer, &f.item, pkid, f.sent, now);
            f.sent |= written;
            written
        }
        InflightState::Released => {
            codec::encode_ack(out.buf(), codec::AckKind::PubRel, pkid, 0, peer.is_some());
            true
        }
    }
}

/// Writes one PUBLISH in the attached client's protocol version. For a 5.0 client: the
/// message's properties, its remaining expiry, the subscription identifiers and a topic
/// alias where the client accepts them; a message larger than the client's Maximum
/// Packet Size is not sent (false) [MQTT-3.1.2-25].
fn encode_publish(
    out: &mut Outbox,
    peer: Option<&mut PeerV5>,
    item: &Queued,
    pkid: u16,
    dup: bool,
    now: Instant,
) -> bool {
    let msg = &item.msg;
    let Some(peer) = peer else {
        // False for a PUBLISH 3.1.1 cannot express: dropped for this subscriber.
        return out.publish(&msg.topic, &msg.payload, item.qos, pkid, item.retain, dup);
    };
    let sub_ids = item.extra.as_ref().map_or(&[][..], |e| &e.sub_ids[..]);
    let mut p = codec::PublishOut {
        topic: &msg.topic,
        qos: item.qos,
        retain: item.retain,
        dup,
        pkid,
        topic_alias: None,
        props: msg.props.as_deref(),
        message_expiry: msg.remaining_expiry(now),
        subscription_ids: sub_ids,
    };
    // The alias goes into the size: setting one adds a property, using one drops the topic.
    let (alias, with_topic) = peer.alias_for(&msg.topic);
    p.topic_alias = alias;
    if !with_topic {
        p.topic = "";
    }
    // `usize::MAX` when the packet cannot be expressed at all (the properties pushed it
    // over MQTT's limit): never written, whatever the client accepts.
    let max = peer.max_packet_size.map_or(usize::MAX - 1, |m| m as usize);
    let mut size = codec::publish_v5_size(&p, msg.payload.len());
    if size > max && alias.is_some() {
        // The alias property can be what tips it over: try the plain topic.
        p.topic = &msg.topic;
        p.topic_alias = None;
        size = codec::publish_v5_size(&p, msg.payload.len());
    }
    if size > max {
        static LOG: LogLimit = LogLimit::new(10_000);
        if let Some(suppressed) = LOG.allow() {
            tracing::debug!(
                topic = ?field(&msg.topic),
                size,
                max,
                suppressed,
                "message larger than the client's Maximum Packet Size, not sent"
            );
        }
        return false;
    }
    if !out.publish_v5(&p, &msg.payload) {
        return false;
    }
    if let (Some(alias), true) = (p.topic_alias, with_topic) {
        peer.set_alias(&msg.topic, alias);
    }
    true
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "session_bytes_tests.rs"]
mod bytes_tests;
