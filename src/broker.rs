//! The broker's shared state: sessions by client id, the router, the retained store, the
//! storage backend and the counters. One [`Broker`] is shared by every connection task.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;

use crate::auth::Access;
use crate::auth::Auth;
use crate::codec::QoS;
use crate::codec::SubscriptionOptions;
use crate::config::{Config, Listener};
use crate::expiry::{Deadlines, Kind};
use crate::log_limit::field;
use crate::message::SharedMessage;
use crate::retain::RetainTree;
use crate::router::{Router, Target};
use crate::session::{
    Attached, Delivery, Extra, Limits, PeerV5, PendingWill, Queued, Rec, Session, SessionState,
    Timers,
};
use crate::store::state::{instant_from_unix_millis, State};
use crate::store::{Commit, Store, StoreEvent, Stored};
use crate::subscriptions::Sub;

/// `midge-` and 16 random hex digits. Should the OS generator fail, the time and a
/// process-wide counter still give a unique id (only less unpredictable).
fn random_client_id() -> String {
    static FALLBACK: AtomicU64 = AtomicU64::new(0);
    let mut bytes = [0u8; 8];
    let n = match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from_ne_bytes(bytes),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nanos ^ FALLBACK.fetch_add(1, Ordering::Relaxed).rotate_left(32)
        }
    };
    format!("midge-{n:016x}")
}

/// Undoes a claim whose attach was abandoned before it completed (see
/// [`Broker::attach`]): the session goes offline as if that connection had ended. An
/// older connection that was already told to make way still goes: the claim came from
/// an authenticated CONNECT.
struct UndoClaim<'a> {
    broker: &'a Broker,
    session: &'a Arc<Session>,
    generation: u64,
}

impl Drop for UndoClaim<'_> {
    fn drop(&mut self) {
        self.broker.detach(self.session, self.generation);
    }
}

/// Counters for logs now and `$SYS`/metrics later.
#[derive(Default)]
pub struct Stats {
    pub connections: AtomicUsize,
    pub messages_received: AtomicU64,
    pub messages_routed: AtomicU64,
    pub messages_dropped: AtomicU64,
}

/// How often the sweeper checks keep-alives, retransmissions, session expiry and delayed
/// wills: the precision of all four.
pub const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// The broker's shared state. Its fields are private: connections and handlers go
/// through the methods below, so that what must happen together (a subscription in the
/// session, the router and the store) happens in one place.
pub struct Broker {
    config: Config,
    /// Password and ACL files, reloaded on SIGHUP.
    auth: Auth,
    sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    /// The sessions with a connection attached, by session id: all the sweeper walks for
    /// keep-alive and retransmission (offline sessions have neither). Lock order: this
    /// before a session's state.
    online: Mutex<HashMap<u64, Arc<Session>>>,
    /// When offline sessions expire and delayed wills are due (see [`crate::expiry`]).
    /// Lock order: a session's state before this.
    deadlines: Deadlines<Arc<Session>>,
    /// `memory_limit` in bytes, the default worked out; 0 = none.
    memory_limit: usize,
    router: Router,
    retained: RwLock<RetainTree<SharedMessage>>,
    store: Arc<dyn Store>,
    stats: Stats,
    next_session_id: AtomicU64,
    shutting_down: AtomicBool,
}

/// What a CONNECT claims its session with.
pub struct Claim {
    pub username: Option<Arc<str>>,
    /// Clean Session (3.1.1) / Clean Start (5.0): discard any existing session.
    pub clean_start: bool,
    /// Session Expiry Interval, seconds (0: ends with the connection; `u32::MAX`: never).
    pub expiry: u32,
    pub limits: Arc<Limits>,
    pub timers: Timers,
    /// How to send to an MQTT 5.0 client.
    pub peer: Option<Box<PeerV5>>,
}

/// Why [`Broker::attach`] gave a CONNECT no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A later CONNECT for the same client id overtook this one.
    Overtaken,
    /// The session belongs to another identity (CONNACK 0x05 / 0x87): nothing of it was
    /// touched, and the connection that has it keeps it.
    NotOwner,
}

/// What publishing one message came to (see [`Broker::publish`]).
#[derive(Default)]
pub struct Published {
    /// Some subscriber matched (a 5.0 publisher is told otherwise: 0x10).
    pub matched: bool,
    /// Sessions whose queue went over its limit under `queue_full = "backpressure"`: the
    /// publisher's acknowledgement waits until each has room again.
    pub over_limit: Vec<Arc<Session>>,
    /// What the durable store wrote for it (persistent subscribers, the retained store):
    /// the commit the acknowledgement waits for, or a failed write that forbids it.
    pub stored: Stored,
}

thread_local! {
    /// The subscribers a topic reaches, reused by every message published on this worker
    /// thread: no allocation per message, and no scratch buffer per connection.
    static TARGETS: RefCell<Vec<Target>> = const { RefCell::new(Vec::new()) };
}

/// A connection's claim on a session, returned by [`Broker::attach`].
pub struct Attachment {
    pub session: Arc<Session>,
    pub session_present: bool,
    pub generation: u64,
    /// Held for the life of the connection.
    pub guard: Attached,
}

impl Broker {
    /// A broker over `store` (the in-memory one, or a durable one: see
    /// [`Broker::restore`]).
    pub fn new(config: Config, auth: Auth, store: Arc<dyn Store>) -> Broker {
        let memory_limit = config.memory_limit();
        Broker {
            config,
            auth,
            sessions: Mutex::new(HashMap::new()),
            online: Mutex::new(HashMap::new()),
            deadlines: Deadlines::default(),
            memory_limit,
            router: Router::default(),
            retained: RwLock::new(RetainTree::default()),
            store,
            stats: Stats::default(),
            next_session_id: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Password and ACL files (reloaded on SIGHUP through [`Auth::reload`]).
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Counters, for logs now and `$SYS`/metrics later.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// `session`'s way to the store (see [`Rec`]).
    pub fn store_for<'a>(&'a self, session: &'a Session) -> Rec<'a> {
        session.rec(&*self.store)
    }

    /// Whether `commit` is on disk and was not lost: what may be acknowledged.
    pub fn is_stored(&self, commit: Commit) -> bool {
        self.store.is_stored(commit)
    }

    /// Whether a failed write lost `commit`: it is never to be acknowledged.
    pub fn is_lost(&self, commit: Commit) -> bool {
        self.store.is_lost(commit)
    }

    /// Wakes `session`'s connection once `commit` is durable (or the store has failed).
    pub fn wake_when_durable(&self, commit: Commit, session: &Arc<Session>) {
        self.store.on_durable(commit, session.waker());
    }

    /// Adds or replaces `session`'s subscription to `filter`, in the one order every
    /// path uses: the session's own list, the router, then the store. Returns whether
    /// the subscription is new (Retain Handling 1 sends retained messages only then).
    /// `filter` must have been checked (see [`crate::topic::split_shared`]).
    pub fn subscribe(&self, session: &Arc<Session>, filter: &str, sub: Sub) -> bool {
        let is_new = self.add_subscription(session, filter, sub);
        // (A clean session's records change nothing and are not written.)
        let _ = self.store.record(StoreEvent::Subscribed {
            session: session.id,
            filter,
            options: sub.opts.to_byte(),
            sub_id: sub.id.map_or(0, |id| id.get()),
        });
        is_new
    }

    /// The session and router half of [`Broker::subscribe`], without the store record:
    /// what `restore` uses for subscriptions the store already holds.
    fn add_subscription(&self, session: &Arc<Session>, filter: &str, sub: Sub) -> bool {
        let is_new = session.state.lock().subscriptions.insert(filter, sub);
        // After the session's lock is let go: the router's lock comes first where both
        // are held (see the router's lock order).
        self.router.subscribe(session, filter, sub);
        is_new
    }

    /// Removes `session`'s subscription to `filter` (compared character by character
    /// [MQTT-3.10.4-1]) from the session, the router and the store. Returns whether there
    /// was one.
    pub fn unsubscribe(&self, session: &Arc<Session>, filter: &str) -> bool {
        let existed = session.state.lock().subscriptions.remove(filter).is_some();
        if existed {
            self.router.unsubscribe(session, filter);
            let _ = self.store.record(StoreEvent::Unsubscribed {
                session: session.id,
                filter,
            });
        }
        existed
    }

    /// Takes the filters of a session that ended (or was discarded) out of the router;
    /// the session's own list was reset, and the store forgets them with the session.
    fn drop_subscriptions(&self, session: &Arc<Session>, filters: &[String]) {
        self.router
            .unsubscribe_all(session, filters.iter().map(String::as_str));
    }

    /// Changes the Session Expiry Interval of a connected session (MQTT 5.0 DISCONNECT):
    /// the store learns it now, and the session ends with its connection when it is 0.
    pub fn set_session_expiry(&self, session: &Session, expiry: u32) {
        let mut st = session.state.lock();
        if expiry != st.expiry {
            let _ = self.store.record(if expiry == 0 {
                StoreEvent::SessionDiscarded {
                    session: session.id,
                }
            } else {
                StoreEvent::SessionOpened {
                    session: session.id,
                    client_id: &session.client_id,
                    owner: st.username.as_deref(),
                    expiry,
                }
            });
        }
        st.expiry = expiry;
        st.clean = expiry == 0;
    }

    /// Queues for `session` the retained messages matching a filter it just subscribed
    /// to, each at the lower of its QoS and `granted`, those `may_read` lets through
    /// (the ACL), under the queue limits (see [`Session::deliver_retained`]).
    pub fn deliver_retained(
        &self,
        session: &Session,
        filter: &str,
        granted: QoS,
        sub_id: Option<u32>,
        may_read: impl Fn(&str) -> bool,
    ) {
        let mut retained = self.retained_for(filter, granted);
        retained.retain(|(msg, _)| may_read(&msg.topic));
        session.deliver_retained(&retained, sub_id, &*self.store);
    }

    /// A client id for a client that sent an empty one (clean session only).
    /// Never one a session already has: a client could have chosen the same string
    /// itself, and must not be handed someone else's session [MQTT-3.1.3-6].
    ///
    /// Random (64 bits from the OS), not a counter: an id that can be predicted can be
    /// taken first by another client, which then gets the next anonymous client's
    /// session, or has it taken over.
    pub fn assign_client_id(&self) -> String {
        loop {
            let id = random_client_id();
            if !self.sessions.lock().contains_key(id.as_str()) {
                return id;
            }
        }
    }

    pub fn limits_for(&self, listener: &Listener) -> Limits {
        let c = &self.config;
        Limits {
            max_inflight: c.max_inflight_messages,
            max_queued_messages: c.max_queued_messages,
            max_queued_bytes: c.max_queued_bytes,
            queue_qos0: c.queue_qos0_messages,
            queue_full: listener.queue_full,
            drop_log_interval: std::time::Duration::from_secs(c.drop_log_interval),
        }
    }

    /// Claims the session of `client_id` for a new connection: creates it, or takes it
    /// over from the connection that has it (which is cancelled, and awaited until it has
    /// let go). With `clean`, or when the previous owner was a clean session, the state is
    /// discarded [MQTT-3.1.2-6]; otherwise it is resumed and `session_present` is set
    /// [MQTT-3.2.2-2].
    ///
    /// A session is bound to the identity that created it ([`SessionState::username`]):
    /// a claim by any other identity is refused before anything is touched, so a user
    /// who reuses someone else's client id can neither kick them off nor read their
    /// messages, subscriptions or will. Anonymous clients have no identity to tell apart,
    /// so among them any may take over (as in Mosquitto); and an anonymous session may
    /// be claimed by a verified user, who gets a fresh session of its own (the anonymous
    /// one ends), so that an anonymous client cannot lock a user out of its client id.
    ///
    /// [`SessionState::username`]: crate::session::SessionState::username
    pub async fn attach(&self, client_id: &str, claim: Claim) -> Result<Attachment, Refused> {
        let Claim {
            username,
            clean_start: clean,
            expiry,
            limits,
            timers,
            peer,
        } = claim;
        let (session, generation, existed) = {
            let mut sessions = self.sessions.lock();
            let (session, existed) = match sessions.get(client_id) {
                Some(s) => (s.clone(), true),
                None => {
                    let id = self.next_session_id.fetch_add(1, Ordering::Relaxed);
                    let key: Arc<str> = Arc::from(client_id);
                    let s = Arc::new(Session::new(id, key.clone(), limits.clone()));
                    sessions.insert(key, s.clone());
                    (s, false)
                }
            };
            let mut st = session.state.lock();
            // An anonymous session belongs to nobody: a verified user may claim it (so an
            // anonymous client cannot squat a user's client id), but starts afresh.
            let rebind = st.username.is_none() && username.is_some();
            if st.username != username && !rebind {
                return Err(Refused::NotOwner);
            }
            // Owned by the claimant from here on, so a rival claim is refused.
            st.username = username.clone();
            if rebind {
                // Ends with the anonymous connection, so that this claim, or one of the
                // same user that overtakes it, discards it rather than resume it.
                st.clean = true;
            }
            st.generation += 1;
            let taking_over = st.connected;
            st.connected = true;
            let generation = st.generation;
            drop(st);
            if taking_over {
                // The attached connection sees the new generation when it wakes.
                session.wake.notify_one();
            }
            // After `connected` is set: see `detach`.
            self.online.lock().insert(session.id, session.clone());
            (session, generation, existed)
        };

        // The semaphore is never closed, so acquiring only waits; the permit is given
        // back by `Attached` when this connection ends. The wait can be abandoned (the
        // CONNECT's connect_timeout passes): then the session must not stay marked
        // connected with no connection attached.
        let undo = UndoClaim {
            broker: self,
            session: &session,
            generation,
        };
        match session.attach.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return Err(Refused::Overtaken),
        }
        std::mem::forget(undo);
        let guard = Attached(session.clone());

        let (discard, filters, will) = {
            let mut st = session.state.lock();
            if st.generation != generation {
                return Err(Refused::Overtaken);
            }
            let discard = existed && (clean || st.clean);
            // A delayed will: a session resumed in time cancels it [MQTT-3.1.3-9]; one
            // that is discarded has ended, so its will goes out now.
            let will = self
                .take_will(&session, &mut st, |_| true)
                .filter(|_| discard);
            let filters: Vec<String> = if discard {
                st.subscriptions.filters()
            } else {
                Vec::new()
            };
            if discard {
                st.reset();
            }
            // Under the session's lock, so that the store sees the session restart
            // between the messages queued for the old one and those for the new one.
            if self.store.is_durable() {
                let session = session.id;
                if discard || expiry == 0 {
                    let _ = self.store.record(StoreEvent::SessionDiscarded { session });
                }
                if expiry != 0 {
                    let _ = self.store.record(StoreEvent::SessionOpened {
                        session,
                        client_id,
                        owner: username.as_deref(),
                        expiry,
                    });
                }
            }
            st.clean = expiry == 0;
            st.expiry = expiry;
            self.set_expiry(&session, &mut st, None);
            st.peer = peer;
            st.limits = limits;
            st.timers = timers;
            st.mark_inflight_unsent();
            (discard, filters, will)
        };
        if let Some(will) = will {
            self.publish_will(client_id, *will);
        }
        if discard {
            self.drop_subscriptions(&session, &filters);
            wake_all(session.state.lock().take_space_waiters());
        }
        Ok(Attachment {
            session_present: existed && !discard,
            session,
            generation,
            guard,
        })
    }

    /// Called when the connection of `generation` ends. A clean session ends with its
    /// connection; a persistent one stays, offline, queueing what it is sent.
    pub fn detach(&self, session: &Arc<Session>, generation: u64) {
        {
            let mut st = session.state.lock();
            if st.generation != generation {
                // Taken over: the new connection owns the session now.
                return;
            }
            // Offline from here on, so shared subscriptions stop choosing it while another
            // member is online.
            st.connected = false;
        }
        {
            // Checked under the online lock: a new connection that attached meanwhile
            // has set `connected` before inserting, so it is never removed here.
            let mut online = self.online.lock();
            if !session.state.lock().connected {
                online.remove(&session.id);
            }
        }
        self.redistribute_shared(session);
        let mut sessions = self.sessions.lock();
        let filters = {
            let mut st = session.state.lock();
            if st.generation != generation {
                return;
            }
            if !st.clean {
                let now = Instant::now();
                let kept =
                    crate::expiry::kept_for(st.expiry, self.config.persistent_client_expiration);
                let at = kept.and_then(|d| now.checked_add(d));
                self.set_expiry(session, &mut st, at);
                // So that a restart does not give the session its whole expiry (or
                // persistent_client_expiration) again.
                let _ = self.store.record(StoreEvent::SessionClosed {
                    session: session.id,
                    at: now,
                });
                return;
            }
            st.subscriptions.filters()
        };
        self.forget(&mut sessions, session, &filters);
        drop(sessions);
        // A shared message routed to it before it left the router still goes to another
        // member rather than down with the session.
        self.redistribute_shared(session);
        let waiters = {
            let mut st = session.state.lock();
            st.reset();
            st.take_space_waiters()
        };
        wake_all(waiters);
    }

    /// Publishes a client's message: routes it to every matching session, and stores or
    /// clears it as the topic's retained message when `msg.retain` is set. `publisher` is
    /// the sending client's session: No Local subscriptions of its own are skipped, and it
    /// is registered to be woken when the sessions over their limit have room.
    pub fn publish(&self, msg: &SharedMessage, publisher: &Arc<Session>) -> Published {
        self.fan_out(msg, Some(publisher))
    }

    /// Publishes a message no client sent: wills now; `$SYS`, a bridge and a cluster link
    /// later. It goes through the same routing, retained store and durable store as a
    /// client's, but there is no publisher to hold back or to exclude.
    pub fn publish_internal(&self, msg: &SharedMessage) -> Published {
        self.fan_out(msg, None)
    }

    /// Delivers `msg` to every session its topic reaches (see [`Broker::publish`]).
    fn fan_out(&self, msg: &SharedMessage, publisher: Option<&Arc<Session>>) -> Published {
        let mut published = Published::default();
        TARGETS.with_borrow_mut(|targets| {
            self.deliver(msg, publisher, targets, &mut published);
        });
        published
    }

    fn deliver(
        &self,
        msg: &SharedMessage,
        publisher: Option<&Arc<Session>>,
        targets: &mut Vec<Target>,
        published: &mut Published,
    ) {
        self.stats.messages_received.fetch_add(1, Ordering::Relaxed);
        if msg.retain {
            self.retain(msg, &mut published.stored);
        }
        self.router
            .route(&msg.topic, publisher.map(|p| p.id), targets);
        // Subscribers whose read access the ACL denies never get the message
        // (checked per message, so a reloaded ACL applies to existing subscriptions).
        let acl = self.auth.acl();
        published.matched = !targets.is_empty();
        for sub in targets.drain(..) {
            let qos = min_qos(msg.qos, sub.qos);
            // RETAIN is 0 on live deliveries unless the subscription keeps it
            // [MQTT-3.3.1-12/13].
            let retain = sub.retain_as_published && msg.retain;
            let extra = sub.extra;
            match sub.session.deliver(
                msg,
                qos,
                retain,
                extra,
                publisher,
                acl.as_deref(),
                &*self.store,
                &mut published.stored,
            ) {
                Delivery::Queued => {
                    self.stats.messages_routed.fetch_add(1, Ordering::Relaxed);
                }
                Delivery::OverLimit => {
                    self.stats.messages_routed.fetch_add(1, Ordering::Relaxed);
                    published.over_limit.push(sub.session);
                }
                Delivery::Dropped => {
                    self.stats.messages_dropped.fetch_add(1, Ordering::Relaxed);
                }
                Delivery::Skipped => {}
            }
        }
    }

    /// Sets or clears the topic's retained message; stored under the retained store's
    /// lock, so the store keeps the same last one.
    fn retain(&self, msg: &SharedMessage, stored: &mut Stored) {
        let mut retained = self.retained.write();
        let message = if msg.payload.is_empty() {
            // A retained PUBLISH with no payload clears the topic [MQTT-3.3.1-10/11].
            retained.remove(&msg.topic);
            None
        } else {
            retained.set(&msg.topic, msg.clone());
            Some(msg)
        };
        if self.store.is_durable() {
            stored.add(self.store.record(StoreEvent::Retained {
                topic: &msg.topic,
                message,
            }));
        }
    }

    /// Retained messages matching `filter`, each with the QoS it is sent at.
    fn retained_for(&self, filter: &str, granted: QoS) -> Vec<(SharedMessage, QoS)> {
        self.retained
            .read()
            .matching(filter)
            .into_iter()
            .map(|m| {
                let qos = min_qos(m.qos, granted);
                (m, qos)
            })
            .collect()
    }

    /// Times keep-alive and retransmission for every connected session: a few times a
    /// second it raises the flags of [`Timers`] whose time has come and wakes those
    /// connections. Offline sessions whose expiry has come, and delayed wills now due, come
    /// from the deadline queue: only those are looked at. Runs until `shutdown`.
    pub async fn sweep(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            self.check_connections(now);
            for (kind, session) in self.deadlines.take_due(now) {
                match kind {
                    Kind::Will => {
                        let will = session.state.lock().take_pending_will(|w| w.due <= now);
                        if let Some(will) = will {
                            self.publish_will(&session.client_id, *will);
                        }
                    }
                    Kind::Expiry => self.expire(&session),
                }
            }
        }
    }

    /// Raises the keep-alive and retransmission flags of connected sessions whose time
    /// has come, and wakes their connections.
    fn check_connections(&self, now: Instant) {
        let online = self.online.lock();
        for session in online.values() {
            let mut st = session.state.lock();
            if !st.connected {
                continue;
            }
            let mut wake = false;
            let t = st.timers;
            if let (Some(ka), false) = (t.keep_alive(), t.expired) {
                if now.duration_since(t.last_in) >= ka {
                    st.timers.expired = true;
                    wake = true;
                }
            }
            if let (Some(retry), false) = (t.retry(), t.retry_due) {
                if st
                    .oldest_sent()
                    .is_some_and(|sent| now.duration_since(sent) >= retry)
                {
                    st.timers.retry_due = true;
                    wake = true;
                }
            }
            drop(st);
            if wake {
                session.wake.notify_one();
            }
        }
    }

    /// Sets when an offline session ends (`None`: it does not), keeping the deadline
    /// queue in step. The caller holds the session's lock.
    fn set_expiry(&self, session: &Arc<Session>, st: &mut SessionState, at: Option<Instant>) {
        let old = st.expires_at();
        st.set_expires_at(at);
        self.deadlines
            .reschedule(session.id, Kind::Expiry, old, at, || session.clone());
    }

    /// Takes the session's delayed will if `due` says so, and its deadline with it. The
    /// caller holds the session's lock.
    fn take_will(
        &self,
        session: &Arc<Session>,
        st: &mut SessionState,
        due: impl Fn(&PendingWill) -> bool,
    ) -> Option<Box<PendingWill>> {
        let will = st.take_pending_will(due)?;
        self.deadlines
            .reschedule(session.id, Kind::Will, Some(will.due), None, || {
                session.clone()
            });
        Some(will)
    }

    /// Whether `incoming` more bytes would take the broker above `memory_limit`.
    pub fn memory_full(&self, incoming: usize) -> bool {
        crate::memory::over(self.memory_limit, incoming)
    }

    /// Whether `client_id` has a session (online or offline).
    pub fn has_session(&self, client_id: &str) -> bool {
        self.sessions.lock().contains_key(client_id)
    }

    /// Pending session expiries and delayed wills.
    pub fn deadline_count(&self) -> usize {
        self.deadlines.len()
    }

    /// Takes an ended session out of the sessions map (if it is still the one there) and
    /// its subscriptions out of the router. The caller holds the sessions lock.
    fn forget(
        &self,
        sessions: &mut HashMap<Arc<str>, Arc<Session>>,
        session: &Arc<Session>,
        filters: &[String],
    ) {
        if sessions
            .get(&session.client_id)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            sessions.remove(&session.client_id);
        }
        self.drop_subscriptions(session, filters);
    }

    /// Moves the messages a disconnecting member of shared subscriptions has not yet
    /// acknowledged (queued, or sent and unacknowledged) to another member of the same
    /// group, online members first: a work queue loses no job when a worker dies. With no
    /// other member they stay where they are.
    fn redistribute_shared(&self, session: &Arc<Session>) {
        let taken = session.state.lock().take_shared();
        if taken.is_empty() {
            return;
        }
        let acl = self.auth.acl();
        let mut kept = Vec::new();
        let mut moved = 0usize;
        let mut stored = Stored::default();
        let rec = session.rec(&*self.store);
        for item in taken {
            let Some(key) = item.extra.as_ref().and_then(|e| e.shared.clone()) else {
                continue;
            };
            match self.router.pick_shared(&key, session.id) {
                Some((other, sub)) => {
                    let qos = min_qos(item.msg.qos, sub.opts.qos);
                    let extra =
                        Extra::boxed(sub.id.into_iter().map(|n| n.get()).collect(), Some(key));
                    other.deliver(
                        &item.msg,
                        qos,
                        false,
                        extra,
                        None,
                        acl.as_deref(),
                        &*self.store,
                        &mut stored,
                    );
                    // Stored for the new member first: a crash in between duplicates the
                    // message rather than losing it.
                    if item.stored {
                        let _ = self.store.record(StoreEvent::Removed {
                            session: rec.session,
                            seq: item.seq,
                        });
                    }
                    moved += 1;
                }
                None => kept.push(item),
            }
        }
        if moved > 0 {
            tracing::info!(
                client_id = ?field(&session.client_id),
                moved,
                "unacknowledged shared-subscription messages moved to other members"
            );
        }
        if !kept.is_empty() {
            session.state.lock().requeue(kept);
        }
    }

    /// Ends an offline session whose Session Expiry Interval has passed: its state goes,
    /// and a will still waiting for its delay is published now (the session ended first).
    fn expire(&self, session: &Arc<Session>) {
        let mut sessions = self.sessions.lock();
        let (filters, will) = {
            let mut st = session.state.lock();
            if st.connected || st.expires_at().is_none_or(|t| t > Instant::now()) {
                return;
            }
            let filters = st.subscriptions.filters();
            st.reset();
            self.set_expiry(session, &mut st, None);
            let _ = self.store.record(StoreEvent::SessionDiscarded {
                session: session.id,
            });
            (filters, self.take_will(session, &mut st, |_| true))
        };
        self.forget(&mut sessions, session, &filters);
        drop(sessions);
        tracing::info!(client_id = ?field(&session.client_id), "session expired");
        wake_all(session.state.lock().take_space_waiters());
        if let Some(will) = will {
            self.publish_will(&session.client_id, *will);
        }
    }

    /// Publishes a will whose delay has passed (or whose session ended), if the ACL
    /// still lets its client write the topic.
    pub fn publish_will(&self, client_id: &str, pending: PendingWill) {
        let will = pending.will;
        if !self.auth.allows(
            client_id,
            pending.username.as_deref(),
            &will.topic,
            Access::Write,
        ) {
            tracing::info!(
                client_id = ?field(client_id),
                topic = ?field(&will.topic),
                "will denied by the ACL, not published"
            );
            return;
        }
        tracing::debug!(client_id = ?field(client_id), topic = ?field(&will.topic), "publishing will");
        let msg = Arc::new(crate::message::Message::with_props(
            will.topic,
            will.payload,
            will.qos,
            will.retain,
            will.props,
        ));
        // Nobody waits for a will's acknowledgement: what storing it came to, and the
        // sessions over their limit, concern no one.
        self.publish_internal(&msg);
    }

    /// Holds a will back for its delay (MQTT 5.0 Will Delay Interval).
    pub fn delay_will(&self, session: &Arc<Session>, pending: PendingWill) {
        let mut st = session.state.lock();
        let old = st.pending_will_due();
        let due = Some(pending.due);
        st.set_pending_will(pending);
        self.deadlines
            .reschedule(session.id, Kind::Will, old, due, || session.clone());
    }

    /// Rebuilds what the durable store kept, before anything listens: every persistent
    /// session (offline, its expiry counting from now), its subscriptions, its queued
    /// messages and the ones it had in flight (re-sent with their packet ids when the
    /// client comes back), its incoming QoS 2 ids, and the retained messages.
    pub fn restore(&self, state: &State) {
        let Some(listener) = self.config.listeners.first() else {
            return;
        };
        // Until the client connects again, through whichever listener.
        let limits = Arc::new(self.limits_for(listener));
        let now = Instant::now();
        let mut subscribe = Vec::new();
        // Entries deeper than max_topic_levels (written under a larger limit, or by hand)
        // would cost the trees memory per level: skipped, and counted in one log line.
        let max_levels = self.config.max_topic_levels;
        let mut too_deep = 0usize;
        // Sessions keep their numbers (the store knows them by these); new ones are
        // numbered after every number the store has seen.
        self.next_session_id
            .fetch_max(state.last_session_id + 1, Ordering::Relaxed);
        {
            let mut sessions = self.sessions.lock();
            // One session per client id: should the store hold two (a discard that was
            // never written), the later one, numbered higher, is the live one.
            let mut latest: HashMap<&str, u64> = HashMap::new();
            for (&id, image) in &state.sessions {
                let n = latest.entry(image.client_id.as_str()).or_default();
                *n = (*n).max(id);
            }
            for (&id, image) in &state.sessions {
                if latest.get(image.client_id.as_str()) != Some(&id) {
                    tracing::warn!(
                        client_id = &*crate::log_limit::field(&image.client_id),
                        session = id,
                        "store: an older session of the same client id is ignored"
                    );
                    continue;
                }
                let key: Arc<str> = Arc::from(image.client_id.as_str());
                let session = Arc::new(Session::new(id, key.clone(), limits.clone()));
                let mut st = session.state.lock();
                st.clean = false;
                // Bound to its owner across the restart: it is sent what the owner may
                // read, and only the owner may claim it.
                st.username = image.owner.as_deref().map(Arc::from);
                st.expiry = image.expiry;
                let kept =
                    crate::expiry::kept_for(image.expiry, self.config.persistent_client_expiration);
                if let Some(kept) = kept {
                    // From the disconnection, if it was recorded; from now for a session
                    // whose client was connected when midge stopped. A session that has
                    // expired while midge was down is due at the sweeper's first tick.
                    let since = match image.closed_at {
                        0 => now,
                        at => instant_from_unix_millis(at).min(now),
                    };
                    self.set_expiry(&session, &mut st, since.checked_add(kept));
                }
                for (filter, (options, sub_id)) in &image.subscriptions {
                    let Some(opts) = SubscriptionOptions::from_byte(*options) else {
                        continue;
                    };
                    let plain = match crate::topic::split_shared(filter) {
                        Some(Some((_, inner))) => inner,
                        _ => filter.as_str(),
                    };
                    if !crate::topic::within_levels(plain, max_levels) {
                        too_deep += 1;
                        continue;
                    }
                    let sub = Sub {
                        opts,
                        id: std::num::NonZeroU32::new(*sub_id),
                    };
                    subscribe.push((session.clone(), filter.as_str(), sub));
                }
                for (seq, e) in &image.queue {
                    let (Some((msg, _)), Some(qos)) = (
                        state.messages.get(&e.message),
                        crate::codec::qos_from_u8(e.qos),
                    ) else {
                        continue;
                    };
                    let item = Queued::new(
                        *seq,
                        msg.clone(),
                        qos,
                        e.retain,
                        Extra::boxed(e.sub_ids.clone(), e.shared.clone()),
                        true,
                    );
                    st.restore(item, e.pkid.map(|pkid| (pkid, e.released)));
                }
                for pkid in &image.qos2_received {
                    st.incoming_qos2_insert(*pkid);
                }
                drop(st);
                sessions.insert(key, session);
            }
        }
        // Outside the session's lock: the router's lock comes first. The store has
        // these already, so they are not recorded again.
        for (session, filter, sub) in subscribe {
            self.add_subscription(&session, filter, sub);
        }
        let mut retained = self.retained.write();
        for (topic, id) in &state.retained {
            if !crate::topic::within_levels(topic, max_levels) {
                too_deep += 1;
                continue;
            }
            if let Some((msg, _)) = state.messages.get(id) {
                retained.set(topic, msg.clone());
            }
        }
        if too_deep > 0 {
            tracing::warn!(
                skipped = too_deep,
                max_topic_levels = max_levels,
                "stored subscriptions and retained messages deeper than max_topic_levels \
                 not restored"
            );
        }
    }

    /// At shutdown, once the connections are closed: stores what persistent sessions
    /// hold and the store does not have yet (QoS 0 messages queued for offline sessions
    /// under `queue_qos0_messages`), then closes the store, which syncs it. A clean
    /// restart loses nothing.
    pub fn close_store(&self) {
        if !self.store.is_durable() {
            return;
        }
        let sessions: Vec<Arc<Session>> = self.sessions.lock().values().cloned().collect();
        for session in sessions {
            let stored = session
                .state
                .lock()
                .store_unstored(session.rec(&*self.store));
            if stored.failed {
                break;
            }
        }
        if let Err(e) = self.store.close() {
            tracing::error!("store: closing failed: {e}");
        }
    }

    /// Tells every connection to close: sets the flag each connection checks when it
    /// wakes, then wakes them all.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let sessions: Vec<Arc<Session>> = self.sessions.lock().values().cloned().collect();
        wake_all(sessions);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Number of sessions, online and offline.
    pub fn session_count(&self) -> usize {
        self.sessions.lock().len()
    }
}

/// Wakes the connections of `sessions` (publishers waiting for queue room).
pub fn wake_all(sessions: Vec<Arc<Session>>) {
    for s in sessions {
        s.wake.notify_one();
    }
}

pub fn min_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) {
        a
    } else {
        b
    }
}

#[cfg(test)]
mod connect_tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    fn broker() -> Broker {
        let config = Config::default();
        let auth = Auth::load(&config, "test").expect("no files to load");
        Broker::new(config, auth, Arc::new(crate::store::MemoryStore))
    }

    fn claim(broker: &Broker) -> Claim {
        Claim {
            username: None,
            clean_start: true,
            expiry: 0,
            limits: Arc::new(broker.limits_for(&Listener::default())),
            timers: Timers::new(None, None),
            peer: None,
        }
    }

    fn poll<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn assigned_client_ids_are_random_hex_and_distinct() {
        let b = broker();
        let ids: Vec<String> = (0..100).map(|_| b.assign_client_id()).collect();
        for id in &ids {
            let hex = id.strip_prefix("midge-").expect("prefix");
            assert_eq!(hex.len(), 16);
            assert!(hex.bytes().all(|c| c.is_ascii_hexdigit()));
        }
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }

    #[test]
    fn a_take_over_abandoned_while_waiting_leaves_no_session_marked_connected() {
        let b = broker();
        let Poll::Ready(Ok(first)) = poll(pin!(b.attach("dev", claim(&b)))) else {
            panic!("a free session attaches at once")
        };
        {
            // The take-over waits for `first` to let go; its deadline passes meanwhile.
            let mut second = Box::pin(b.attach("dev", claim(&b)));
            assert!(poll(second.as_mut()).is_pending());
        }
        let st = first.session.state.lock();
        assert!(!st.connected, "nobody is attached to the new generation");
        drop(st);
        // The clean session ended with the abandoned claim; a new CONNECT starts afresh.
        drop(first);
        let Poll::Ready(Ok(third)) = poll(pin!(b.attach("dev", claim(&b)))) else {
            panic!("attaches again")
        };
        assert!(!third.session_present);
    }
}
