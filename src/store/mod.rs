//! The storage interface under sessions and retained messages.
//!
//! The broker's working state (sessions, their queues and inflight windows, retained
//! messages) lives in memory, where routing reads it. Every change to state that must
//! survive the process is also reported to a [`Store`] as a [`StoreEvent`], at the point
//! where it happens and under the lock that orders it (a session's, or the retained
//! store's), so the store sees each session's changes in the order they were made. The
//! in-memory store records nothing, which is what a broker without persistence wants; the
//! durable store ([`durable::DurableStore`]) appends them to its log and, on start, hands
//! back the state they describe. Routing never knows which one it has.
//!
//! Recording returns a [`Commit`] number at once; the write happens on the store's writer
//! thread, shared by every publisher (group commit). Whoever must not go on before the
//! change is on disk (a PUBACK, a PUBREC, a PUBCOMP) waits for [`Store::durable`] to reach
//! it, woken through [`Store::on_durable`].

pub mod durable;
pub mod log;
pub mod record;
pub mod spool;
pub mod state;

use crate::codec::QoS;
use crate::message::DeliveryProps;
use crate::message::SharedMessage;

pub use log::{Commit, Waker};
pub use record::SessionId;
pub use spool::SpoolItem;

/// A change to durable state. Events about clean sessions are never reported. A session is
/// named by its number (the session's `id`); only `SessionOpened` carries
/// its client id.
#[derive(Debug)]
pub enum StoreEvent<'a> {
    /// A persistent session exists (created, resumed, or given a new expiry).
    SessionOpened {
        session: SessionId,
        client_id: &'a str,
        /// The identity it is bound to (the session's `username`).
        owner: Option<&'a str>,
        expiry: u32,
    },
    /// A session and everything queued for it is gone (or it is no longer persistent).
    SessionDiscarded {
        session: SessionId,
    },
    /// A persistent session's client disconnected: its expiry counts from `at`.
    SessionClosed {
        session: SessionId,
        at: std::time::Instant,
    },
    Subscribed {
        session: SessionId,
        filter: &'a str,
        /// MQTT 5.0 subscription options byte (QoS in bits 0-1).
        options: u8,
        sub_id: u32,
    },
    Unsubscribed {
        session: SessionId,
        filter: &'a str,
    },
    /// A QoS 1/2 message was queued for a persistent session at position `seq`.
    Enqueued {
        session: SessionId,
        seq: u64,
        message: &'a SharedMessage,
        qos: QoS,
        retain: bool,
        extra: Option<&'a DeliveryProps>,
        /// Into the session's spool file, not its memory queue (see `spool`): its client
        /// is away, or its queue is long.
        spool: bool,
    },
    /// It was sent with packet id `pkid`.
    Sent {
        session: SessionId,
        seq: u64,
        pkid: u16,
    },
    /// QoS 2: its PUBREC came.
    Released {
        session: SessionId,
        seq: u64,
    },
    /// It left the session: acknowledged, refused, expired or dropped.
    Removed {
        session: SessionId,
        seq: u64,
    },
    /// The retained message of a topic was set (`Some`) or cleared (`None`).
    Retained {
        topic: &'a str,
        message: Option<&'a SharedMessage>,
    },
    /// A QoS 2 PUBLISH from a persistent session's client was received (PUBREC owed).
    Qos2Received {
        session: SessionId,
        pkid: u16,
    },
    /// Its PUBREL came (PUBCOMP owed).
    Qos2Completed {
        session: SessionId,
        pkid: u16,
    },
}

/// Why a store could not record an event.
#[derive(Debug, Clone)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub trait Store: Send + Sync {
    /// Whether this store keeps anything: lets the broker skip building events nobody
    /// reads.
    fn is_durable(&self) -> bool;

    /// Records one change. `Ok(Some(commit))`: it is written as part of `commit`;
    /// `Ok(None)`: it changed nothing durable and nothing was written. An error means it
    /// is not stored, and never will be: whatever depends on it must not be acknowledged.
    fn record(&self, event: StoreEvent<'_>) -> Result<Option<Commit>, StoreError>;

    /// The highest commit that is on disk.
    fn durable(&self) -> Commit;

    /// Runs `waker` once `commit` is durable, or the store has failed.
    fn on_durable(&self, commit: Commit, waker: Waker);

    /// Whether a failed write lost `commit`: it is never to be acknowledged, even once
    /// later commits are durable.
    fn is_lost(&self, commit: Commit) -> bool;

    /// Whether `commit` is on disk and was not lost: what may be acknowledged.
    fn is_stored(&self, commit: Commit) -> bool {
        commit == 0 || (self.durable() >= commit && !self.is_lost(commit))
    }

    /// Writes and syncs everything recorded; nothing is recorded after it.
    fn close(&self) -> Result<(), StoreError>;

    /// The store holds `[persistence] max_disk_bytes` or more: a persistent session's
    /// queue counts as full (its `queue_full` policy applies).
    fn disk_full(&self) -> bool {
        false
    }

    /// Reads the next batch (at most `max` entries) of a session's spool back, in order;
    /// entries it had sent come with their packet ids.
    fn spool_load(&self, _session: SessionId, _max: usize) -> Result<SpoolBatch, StoreError> {
        Ok(SpoolBatch::default())
    }

    /// The session let go of what it had loaded (its client went away): the next load
    /// starts from its first held entry again. Returns the entries held and about how
    /// many bytes they take.
    fn spool_rewind(&self, _session: SessionId) -> (u64, u64) {
        (0, 0)
    }

    /// Drops the first spooled entry not loaded yet (`queue_full = "drop_oldest"`);
    /// returns about how many bytes it took, `None` if there is none.
    fn spool_drop_next(&self, _session: SessionId) -> Option<u64> {
        None
    }

    /// How the store is doing, for the operator (`$SYS/broker/store/...`, `/metrics`);
    /// `None` for a store that keeps nothing.
    fn stats(&self) -> Option<StoreStats> {
        None
    }
}

/// The durable store's health: what it holds, how fast it syncs, whether it failed.
#[derive(Clone, Debug, Default)]
pub struct StoreStats {
    /// Bytes in the log's segment files.
    pub bytes_on_disk: u64,
    pub segments: usize,
    /// Bytes in spool files (offline and backlogged queues), and how many files.
    pub spool_bytes: u64,
    pub spool_files: usize,
    /// Commits made durable (one write and, with `sync = "always"`, one fsync each).
    pub commits: u64,
    /// Seconds each fsync took.
    pub fsync_seconds: crate::metrics::HistogramSnapshot,
    /// Bytes written per commit (group commit: many publishers share one).
    pub batch_bytes: crate::metrics::HistogramSnapshot,
    pub compactions: u64,
    /// Failed writes or syncs: after one the store refuses appends (see docs/DESIGN.md).
    pub failures: u64,
    /// The store refuses appends after a failure.
    pub failed: bool,
}

/// Keeps nothing beyond the broker's live memory: state lasts as long as the process.
#[derive(Debug, Default)]
pub struct MemoryStore;

impl Store for MemoryStore {
    fn is_durable(&self) -> bool {
        false
    }

    fn record(&self, _event: StoreEvent<'_>) -> Result<Option<Commit>, StoreError> {
        Ok(None)
    }

    fn durable(&self) -> Commit {
        Commit::MAX
    }

    fn on_durable(&self, _commit: Commit, waker: Waker) {
        waker();
    }

    fn is_lost(&self, _commit: Commit) -> bool {
        false
    }

    fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A batch read back from a session's spool ([`Store::spool_load`]).
#[derive(Debug, Default)]
pub struct SpoolBatch {
    pub items: Vec<SpoolItem>,
    /// Held entries not loaded yet, and about how many bytes they take on disk.
    pub left: u64,
    pub left_bytes: u64,
}

/// What storing one published message came to: the commit its acknowledgement waits for,
/// and whether a write failed (then it must not be acknowledged at all).
#[derive(Debug, Default, Clone, Copy)]
pub struct StoreOutcome {
    pub commit: Commit,
    pub failed: bool,
}

impl StoreOutcome {
    /// Folds in the outcome of one record.
    pub fn add(&mut self, outcome: Result<Option<Commit>, StoreError>) {
        match outcome {
            Ok(Some(c)) => self.commit = self.commit.max(c),
            Ok(None) => {}
            Err(_) => self.failed = true,
        }
    }

    /// Folds in another outcome.
    pub fn merge(&mut self, other: StoreOutcome) {
        self.commit = self.commit.max(other.commit);
        self.failed |= other.failed;
    }
}
