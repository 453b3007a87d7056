//! The broker's shared state: sessions by client id, the router, the retained store and
//! the storage backend. (Event counters are not kept here: see [`crate::metrics`].) One [`Broker`] is shared by every connection task.
//!
//! Its fields are private; what the layers above may do is this module's API, one file
//! per concern:
//! * `attach.rs`: a connection claims a session and lets it go;
//! * `publish.rs`: a client's message, and messages no client sent (wills, `$SYS`, later
//!   bridges, a cluster link), routed to subscribers and the retained store;
//! * `subscribe.rs`: subscriptions in the session, the router and the store, in one step;
//! * the sweeper (`sweep.rs`) and its three timers, `keep_alive.rs`, `will_delay.rs` and
//!   `session_expiry.rs`;
//! * `restore.rs`: rebuilding from the durable store at start, and the writes at shutdown.

mod attach;
mod keep_alive;
mod observe;
mod publish;
mod restore;
mod session_expiry;
mod session_sets;
mod subscribe;
mod sweep;
mod wakes;
mod will_delay;

pub use attach::{AttachRequest, Refused};
// Read by the HTTP listener (issue 14, branch h/http), not by `$SYS`.
pub use observe::{ClientInfo, ClientPage, Overview, QueueDepth};
pub use publish::Published;
pub use wakes::DeferWakes;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::auth::Auth;
use crate::codec::QoS;
use crate::config::{Config, Listener};
use crate::expiry::Deadlines;
use crate::message::SharedMessage;
use crate::retain::RetainTree;
use crate::router::Router;
use crate::session::{Limits, Session};
use crate::store::{Commit, Store};
use session_sets::{Online, Sessions};

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

/// The broker's shared state. Its fields are private: connections and handlers go
/// through the methods below, so that what must happen together (a subscription in the
/// session, the router and the store) happens in one place.
pub struct Broker {
    config: Config,
    /// Password and ACL files, reloaded on SIGHUP.
    auth: Auth,
    sessions: Mutex<Sessions>,
    /// The sessions with a connection attached, by session id: all the sweeper walks for
    /// keep-alive and retransmission (offline sessions have neither). Keyed by the broker's
    /// own numbers (see `id_hash`): every connection inserts and removes one. Lock order:
    /// this before a session's state.
    online: Mutex<Online>,
    /// When offline sessions expire and delayed wills are due (see [`crate::expiry`]).
    /// Lock order: a session's state before this.
    deadlines: Deadlines<Arc<Session>>,
    /// `memory_limit` in bytes, the default worked out; 0 = none.
    memory_limit: usize,
    router: Router,
    retained: RwLock<RetainTree<SharedMessage>>,
    store: Arc<dyn Store>,
    /// Retained messages on `$SYS` topics (the broker's own): left out of the retained
    /// count an operator is shown. Changed under the retained store's lock.
    sys_retained: AtomicUsize,
    /// When the broker started, for `uptime`.
    started: std::time::Instant,
    /// The most clients connected at once since start.
    max_connected: AtomicUsize,
    next_session_id: AtomicU64,
    shutting_down: AtomicBool,
}

impl Broker {
    /// A broker over `store` (the in-memory one, or a durable one: see
    /// [`Broker::restore`]).
    pub fn new(config: Config, auth: Auth, store: Arc<dyn Store>) -> Broker {
        let memory_limit = config.memory_limit();
        Broker {
            config,
            auth,
            sessions: Mutex::new(Sessions::default()),
            online: Mutex::new(Online::default()),
            deadlines: Deadlines::default(),
            memory_limit,
            router: Router::default(),
            retained: RwLock::new(RetainTree::default()),
            store,
            sys_retained: AtomicUsize::new(0),
            started: std::time::Instant::now(),
            max_connected: AtomicUsize::new(0),
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

    /// The durable store's health, `None` when state is kept in memory only.
    pub fn store_stats(&self) -> Option<crate::store::StoreStats> {
        self.store.stats()
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
            if !self.sessions.lock().contains(id.as_str()) {
                return id;
            }
        }
    }

    pub fn limits_for(&self, listener: &Listener) -> Limits {
        let c = &self.config;
        let (memory, spool) = c.queue_byte_limits();
        Limits {
            max_inflight: c.max_inflight_messages,
            max_queued_messages: c.max_queued_messages,
            max_queued_bytes: memory,
            // Without a durable store nothing spools: every queue is in memory.
            max_spool_bytes: if self.store.is_durable() {
                spool
            } else {
                memory
            },
            queue_qos0: c.queue_qos0_messages,
            queue_full: listener.queue_full,
            drop_log_interval: std::time::Duration::from_secs(c.drop_log_interval),
        }
    }

    /// Whether `incoming` more bytes would take the broker above `memory_limit`.
    pub fn memory_full(&self, incoming: usize) -> bool {
        crate::memory::over(self.memory_limit, incoming)
    }

    /// Whether `client_id` has a session (online or offline).
    pub fn has_session(&self, client_id: &str) -> bool {
        self.sessions.lock().contains(client_id)
    }

    /// Tells every connection to close: sets the flag each connection checks when it
    /// wakes, then wakes them all.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let sessions: Vec<Arc<Session>> = self.sessions.lock().iter().cloned().collect();
        wake_all(sessions);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
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
