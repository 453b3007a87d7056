//! The durable store: [`StoreEvent`]s become [`Record`]s in the append-only [`Log`], and
//! the [`State`] they describe is kept beside it.
//!
//! One mutex orders everything: a record is applied to the state and appended to the log
//! under it, so the log's order is the state's order, and a compaction (a snapshot of the
//! state written as a checkpoint) happens at an exact point of the log. The lock is held
//! for an index update and a memcpy into the log's buffer; the write and the fsync happen
//! on the log's writer thread, for every appender at once.
//!
//! Space is reclaimed by compaction: once the log has grown well past the live state
//! (messages still queued, sessions, retained messages), the state is written as a
//! checkpoint at the head of a new segment and every older segment is deleted. So the
//! store's size on disk follows what is still undelivered, not what passed through.

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use super::log::{Log, LogConfig, SyncPolicy};
use super::record::Record;
use super::state::{message_record, State};
use super::{Commit, Store, StoreError, StoreEvent, Waker};
use crate::config::{Persistence, SyncMode};

/// A new segment starts past this size.
const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// Compaction runs once the log holds this much beyond the last checkpoint, and at least
/// [`COMPACT_RATIO`] times the live state.
const COMPACT_MIN: u64 = 32 * 1024 * 1024;
const COMPACT_RATIO: u64 = 4;

pub struct DurableStore {
    state: Mutex<State>,
    log: Log,
    dir: PathBuf,
}

/// What opening the store found, for the start-up log line.
#[derive(Debug)]
pub struct Loaded {
    pub dir: PathBuf,
    pub sessions: usize,
    pub queued: usize,
    pub retained: usize,
    pub records: usize,
    pub bytes: u64,
    /// A torn last record that was cut off: file, offset, bytes cut.
    pub torn: Option<(PathBuf, u64, u64)>,
    /// Queued messages that expired while midge was down.
    pub expired: usize,
    pub elapsed: Duration,
}

impl DurableStore {
    /// Opens the store in `p.dir()`, replays it, and compacts what it read into a fresh
    /// segment. Fails (with a message naming the file) on corruption, an unwritable
    /// directory, or a directory another midge holds.
    pub fn open(p: &Persistence) -> Result<(DurableStore, Loaded), String> {
        let started = Instant::now();
        let dir = p.dir();
        let sync = match p.sync {
            SyncMode::Always => SyncPolicy::Always,
            SyncMode::Interval => SyncPolicy::Interval(Duration::from_millis(p.sync_interval_ms)),
            SyncMode::Never => SyncPolicy::Never,
        };
        let config = LogConfig {
            dir: dir.clone(),
            sync,
            segment_bytes: SEGMENT_BYTES,
        };
        let mut state = State::default();
        let (log, recovery) = Log::open(config, |body| {
            let record = Record::decode(body)?;
            state.apply(&record).map(|_| ())
        })
        .map_err(|e| e.0)?;
        state.drop_unreferenced();
        let expired = state.drop_expired(Instant::now());
        let (sessions, queued, retained) = state.counts();
        let store = DurableStore {
            state: Mutex::new(state),
            log,
            dir: dir.clone(),
        };
        if recovery.records > 0 {
            // Start from one compact segment: what was read, less what is dead.
            let st = store.state.lock();
            let commit = store.checkpoint(&st).map_err(|e| e.0)?;
            drop(st);
            store.log.wait(commit).map_err(|e| e.0)?;
        }
        Ok((
            store,
            Loaded {
                dir,
                sessions,
                queued,
                retained,
                records: recovery.records,
                bytes: recovery.bytes,
                torn: recovery.torn,
                expired,
                elapsed: started.elapsed(),
            },
        ))
    }

    /// The state, to rebuild the broker from at start.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Writes `st` as a checkpoint: a new segment that starts from nothing.
    fn checkpoint(&self, st: &State) -> Result<Commit, super::log::LogError> {
        self.log
            .checkpoint_with(|f| st.snapshot(|r| f.record(|b| r.encode(b))))
    }

    /// Compacts when the log has grown well past the live state.
    fn maybe_compact(&self, st: &mut State) {
        let since = self.log.since_checkpoint();
        if since < COMPACT_MIN || since < COMPACT_RATIO.saturating_mul(st.live_bytes) {
            return;
        }
        let started = Instant::now();
        st.drop_expired(started);
        match self.checkpoint(st) {
            Ok(_) => tracing::debug!(
                before = since,
                live = st.live_bytes,
                took_ms = started.elapsed().as_millis() as u64,
                "store compacted"
            ),
            Err(e) => tracing::error!("store: compaction failed: {e}"),
        }
    }
}

impl Store for DurableStore {
    fn is_durable(&self) -> bool {
        true
    }

    fn record(&self, event: StoreEvent<'_>) -> Result<Option<Commit>, StoreError> {
        let mut st = self.state.lock();
        // The message a record refers to, when it is not in the store yet.
        let mut message = None;
        let record = match event {
            StoreEvent::SessionOpened { client_id, expiry } => {
                Record::SessionOpened { client_id, expiry }
            }
            StoreEvent::SessionDiscarded { client_id } => Record::SessionDiscarded { client_id },
            StoreEvent::Subscribed {
                client_id,
                filter,
                options,
                sub_id,
            } => Record::Subscribed {
                client_id,
                filter,
                options,
                sub_id,
            },
            StoreEvent::Unsubscribed { client_id, filter } => {
                Record::Unsubscribed { client_id, filter }
            }
            StoreEvent::Enqueued {
                client_id,
                seq,
                message: msg,
                qos,
                retain,
                extra,
            } => {
                if !st.has_session(client_id) {
                    return Ok(None);
                }
                message = Some(msg);
                Record::Enqueued {
                    client_id,
                    seq,
                    message: 0, // set below, once the message has its id
                    qos: qos as u8,
                    retain,
                    sub_ids: Cow::Borrowed(extra.map_or(&[][..], |e| &e.sub_ids[..])),
                    shared: extra.and_then(|e| e.shared.as_deref()).unwrap_or(""),
                }
            }
            StoreEvent::Sent {
                client_id,
                seq,
                pkid,
            } => Record::Sent {
                client_id,
                seq,
                pkid,
            },
            StoreEvent::Released { client_id, seq } => Record::Released { client_id, seq },
            StoreEvent::Removed { client_id, seq } => Record::Removed { client_id, seq },
            StoreEvent::Retained {
                topic,
                message: msg,
            } => {
                message = msg;
                Record::Retained { topic, message: 0 }
            }
            StoreEvent::Qos2Received { client_id, pkid } => {
                Record::Qos2Received { client_id, pkid }
            }
            StoreEvent::Qos2Completed { client_id, pkid } => {
                Record::Qos2Completed { client_id, pkid }
            }
        };
        // A message is written once, before the first record that refers to it, and
        // again only if everything that referred to it has gone in between.
        let mut record = record;
        let mut new_message = None;
        if let Some(msg) = message {
            if !st.has_message(msg.store_id()) {
                if msg.store_id() == 0 {
                    st.last_message_id += 1;
                    msg.set_store_id(st.last_message_id);
                }
                st.add_message(msg.clone());
                new_message = Some(msg);
            }
            match &mut record {
                Record::Enqueued { message, .. } | Record::Retained { message, .. } => {
                    *message = msg.store_id();
                }
                _ => {}
            }
        }
        if let Some(e) = self.log.failure() {
            return Err(StoreError(e));
        }
        let changed = st
            .apply(&record)
            .map_err(|e| StoreError(format!("cannot store: {e}")))?;
        if !changed && new_message.is_none() {
            return Ok(None);
        }
        let commit = self
            .log
            .append_with(|f| {
                if let Some(msg) = new_message {
                    f.record(|b| message_record(msg).encode(b));
                }
                if changed {
                    f.record(|b| record.encode(b));
                }
            })
            .map_err(|e| StoreError(e.0))?;
        self.maybe_compact(&mut st);
        Ok(Some(commit))
    }

    fn durable(&self) -> Commit {
        self.log.durable()
    }

    fn failure(&self) -> Option<String> {
        self.log.failure()
    }

    fn on_durable(&self, commit: Commit, waker: Waker) {
        self.log.on_durable(commit, waker);
    }

    fn close(&self) -> Result<(), StoreError> {
        self.log.close().map_err(|e| StoreError(e.0))
    }
}
