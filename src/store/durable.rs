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
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{MappedMutexGuard, Mutex, MutexGuard};

use super::log::{CheckpointFiles, Frames, Log, LogConfig, SyncPolicy};
use super::record::{Record, SessionId};
use super::spool::{self, Spools};
use super::state::{message_record, unix_millis, Replay, State};
use super::{Commit, SpoolBatch, Store, StoreError, StoreEvent, StoreStats, Waker};
use crate::config::{Persistence, SyncMode};

/// A new segment starts past this size.
const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// Compaction runs once the log holds this much beyond the last checkpoint, and at least
/// [`COMPACT_RATIO`] times the live state.
const COMPACT_MIN: u64 = 32 * 1024 * 1024;
const COMPACT_RATIO: u64 = 4;

pub struct DurableStore {
    inner: Mutex<Inner>,
    log: Log,
    /// [`COMPACT_MIN`], lowered by tests.
    compact_min: u64,
    /// Compactions written since start.
    compactions: AtomicU64,
    /// `[persistence] max_disk_bytes` in bytes (0: none).
    disk_limit: u64,
    /// What the spools take (files and buffers), for [`Store::disk_full`] without the lock.
    spool_bytes: AtomicU64,
}

/// What the store's mutex guards: the state and the spool files, changed together.
struct Inner {
    state: State,
    spools: Spools,
    /// A spool entry being encoded (kept: one allocation for every entry spooled).
    frame: Vec<u8>,
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
    /// Opens the store in `p.dir()` and replays it (compacting it, if due). Fails (with a
    /// message naming the file) on corruption, an unwritable directory, or a directory
    /// another midge holds.
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
        let mut replay = Replay::default();
        let (log, recovery) =
            Log::open(config, |body| replay.apply(&Record::decode(body)?)).map_err(|e| e.0)?;
        let (mut state, torn_checkpoint) = replay.finish();
        if torn_checkpoint {
            tracing::warn!(
                "store: a compaction at the end of the store was cut short by a crash; \
                 the state before it is used"
            );
        }
        state.drop_unreferenced();
        let expired = state.drop_expired(Instant::now());
        let (sessions, queued, retained) = state.counts();
        let images = state
            .sessions
            .iter_mut()
            .filter_map(|(id, s)| s.spool.as_deref_mut().map(|sp| (*id, sp)))
            .collect();
        let spools = Spools::open(&dir.join("spool"), images)?;
        let used = recovery.bytes + spools.bytes();
        let disk_limit = p
            .max_disk_bytes
            .bytes(free_space(&dir).unwrap_or(0).saturating_add(used));
        let spool_bytes = AtomicU64::new(spools.bytes());
        let store = DurableStore {
            inner: Mutex::new(Inner {
                state,
                spools,
                frame: Vec::new(),
            }),
            log,
            compact_min: COMPACT_MIN,
            compactions: AtomicU64::new(0),
            disk_limit,
            spool_bytes,
        };
        // What was read counts towards the next compaction, which may be due now. (Not
        // forced: a store on a full disk must still open, and serve what it can.)
        store.maybe_compact(&mut store.inner.lock());
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
    pub fn state(&self) -> MappedMutexGuard<'_, State> {
        MutexGuard::map(self.inner.lock(), |i| &mut i.state)
    }

    /// Writes the state as a checkpoint: a new segment that starts from nothing (with
    /// `resume`, the one that lets the log go on after a failure). The spools' buffers
    /// are written first, and the writer syncs their filesystem before the checkpoint,
    /// which no longer carries their entries, goes to disk.
    fn checkpoint(&self, inner: &mut Inner, resume: bool) -> Result<Commit, String> {
        let Inner { state, spools, .. } = inner;
        let present = |session| state.spool_image(session).map(|sp| sp.present.clone());
        let sync = spools.prepare_checkpoint(&present)?;
        let files = CheckpointFiles {
            sync_first: sync.then(|| spools.dir().to_path_buf()),
            delete_after: spools.take_doomed(),
        };
        let chunks = |session| spools.chunks(session);
        let write = |f: &mut Frames| state.snapshot(&chunks, |r| f.record(|b| r.encode(b)));
        let commit = if resume {
            self.log.resume_with(files, write)
        } else {
            self.log.checkpoint_with(files, write)
        }
        .map_err(|e| e.0)?;
        state.checkpointed();
        Ok(commit)
    }

    /// Compacts when the log has grown well past the live state.
    fn maybe_compact(&self, inner: &mut Inner) {
        let since = self.log.since_checkpoint();
        if since < self.compact_min || since < COMPACT_RATIO.saturating_mul(inner.state.live_bytes)
        {
            return;
        }
        let started = Instant::now();
        inner.state.drop_expired(started);
        match self.checkpoint(inner, false) {
            Ok(_) => {
                self.compactions.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    before = since,
                    live = inner.state.live_bytes,
                    took_ms = started.elapsed().as_millis() as u64,
                    "store compacted"
                )
            }
            Err(e) => tracing::error!("store: compaction failed: {e}"),
        }
    }
}

impl Store for DurableStore {
    fn is_durable(&self) -> bool {
        true
    }

    fn record(&self, event: StoreEvent<'_>) -> Result<Option<Commit>, StoreError> {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        if let Some(e) = self.log.failure() {
            if !self.log.repaired() {
                return Err(StoreError(e));
            }
            // The failed write's tail is cut off: rewrite the whole state, which carries
            // what it lost, and go on.
            self.checkpoint(inner, true).map_err(StoreError)?;
            tracing::info!(
                event = "store_resumed",
                "store: writing again after a failure"
            );
        }
        let st = &mut inner.state;
        // The message a record refers to, when it is not in the store yet.
        let mut message = None;
        let mut spooled = false;
        let record = match event {
            StoreEvent::SessionOpened {
                session,
                client_id,
                owner,
                expiry,
            } => Record::SessionOpened {
                session,
                client_id,
                owner,
                expiry,
            },
            StoreEvent::SessionDiscarded { session } => {
                inner.spools.discard(session);
                Record::SessionDiscarded { session }
            }
            StoreEvent::SessionClosed { session, at } => Record::SessionClosed {
                session,
                at: unix_millis(at),
            },
            StoreEvent::Subscribed {
                session,
                filter,
                options,
                sub_id,
            } => Record::Subscribed {
                session,
                filter,
                options,
                sub_id,
            },
            StoreEvent::Unsubscribed { session, filter } => {
                Record::Unsubscribed { session, filter }
            }
            StoreEvent::Enqueued {
                session,
                seq,
                message: msg,
                qos,
                retain,
                extra,
                spool: to_spool,
            } => {
                if !st.has_session(session) {
                    return Ok(None);
                }
                if to_spool {
                    // Into the spool first: if that fails, nothing is recorded and the
                    // session keeps the message in memory.
                    let frame = &mut inner.frame;
                    frame.clear();
                    spool::entry::encode(frame, seq, msg, qos, retain, extra)
                        .ok_or_else(|| StoreError("message too large to spool".into()))?;
                    let appended = inner.spools.append(session, seq, frame);
                    // One large message must not keep its size allocated here.
                    if frame.capacity() > 1024 * 1024 {
                        *frame = Vec::new();
                    }
                    appended.map_err(StoreError)?;
                    spooled = true;
                }
                message = Some(msg);
                Record::Enqueued {
                    session,
                    seq,
                    message: 0, // set below, once the message has its id
                    qos: qos as u8,
                    retain,
                    sub_ids: Cow::Borrowed(extra.map_or(&[][..], |e| &e.sub_ids[..])),
                    shared: extra.and_then(|e| e.shared.as_deref()).unwrap_or(""),
                    spooled: to_spool,
                }
            }
            StoreEvent::Sent { session, seq, pkid } => Record::Sent { session, seq, pkid },
            StoreEvent::Released { session, seq } => Record::Released { session, seq },
            StoreEvent::Removed { session, seq } => {
                if st.is_spooled(session, seq) {
                    inner.spools.removed(session, seq);
                }
                Record::Removed { session, seq }
            }
            StoreEvent::Retained {
                topic,
                message: msg,
            } => {
                message = msg;
                Record::Retained { topic, message: 0 }
            }
            StoreEvent::Qos2Received { session, pkid } => Record::Qos2Received { session, pkid },
            StoreEvent::Qos2Completed { session, pkid } => Record::Qos2Completed { session, pkid },
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
                if spooled {
                    // Its content is in the spool: the state only remembers that the
                    // log has it, until the next checkpoint.
                    st.spooled_messages.insert(msg.store_id());
                } else {
                    st.add_message(msg.clone());
                }
                new_message = Some(msg);
            }
            match &mut record {
                Record::Enqueued { message, .. } | Record::Retained { message, .. } => {
                    *message = msg.store_id();
                }
                _ => {}
            }
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
        self.maybe_compact(inner);
        self.spool_bytes
            .store(inner.spools.bytes(), Ordering::Relaxed);
        Ok(Some(commit))
    }

    fn durable(&self) -> Commit {
        self.log.durable()
    }

    fn on_durable(&self, commit: Commit, waker: Waker) {
        self.log.on_durable(commit, waker);
    }

    fn is_lost(&self, commit: Commit) -> bool {
        self.log.is_lost(commit)
    }

    fn close(&self) -> Result<(), StoreError> {
        // Buffered spool entries are in the log too, but written out they need no
        // replay at the next open.
        if let Err(e) = self.inner.lock().spools.flush_all() {
            tracing::warn!("spool: {e}");
        }
        self.log.close().map_err(|e| StoreError(e.0))
    }

    fn disk_full(&self) -> bool {
        self.disk_limit > 0
            && self.log.since_checkpoint() + self.spool_bytes.load(Ordering::Relaxed)
                > self.disk_limit
    }

    fn spool_load(&self, session: SessionId, max: usize) -> Result<SpoolBatch, StoreError> {
        // Entries already acknowledged are skipped where a batch reads them (after a
        // rewind the first chunk may hold many): read on until something is found or the
        // files end, so that a load never comes back empty while entries wait.
        loop {
            let plan = {
                let mut guard = self.inner.lock();
                let Inner { state, spools, .. } = &mut *guard;
                let Some(image) = state.spool_image(session) else {
                    return Ok(SpoolBatch::default());
                };
                spools.plan(session, image).map_err(StoreError)?
            };
            // The files are read outside the lock: what a plan names is written and
            // never changes, and only this session (whose lock the caller holds) moves
            // its place.
            let batch = spool::read(&plan, max);
            let mut guard = self.inner.lock();
            let Inner { state, spools, .. } = &mut *guard;
            let Some(image) = state.spool_image(session) else {
                return Ok(SpoolBatch::default());
            };
            let moved = batch.moved(&plan);
            let left = spools.advance(session, &batch, image);
            if batch.items.is_empty() && moved && left > 0 {
                continue;
            }
            return Ok(SpoolBatch {
                left,
                left_bytes: share(spools.held_bytes(session), left, image.present.len()),
                items: batch.items,
            });
        }
    }

    fn spool_rewind(&self, session: SessionId) -> (u64, u64) {
        let mut guard = self.inner.lock();
        let Inner { state, spools, .. } = &mut *guard;
        let Some(image) = state.spool_image(session) else {
            return (0, 0);
        };
        spools.rewind(session);
        (image.present.len(), spools.held_bytes(session))
    }

    fn spool_drop_next(&self, session: SessionId) -> Option<u64> {
        let (seq, bytes) = {
            let guard = self.inner.lock();
            let image = guard.state.spool_image(session)?;
            let seq = guard.spools.next_unloaded(session, image)?;
            let bytes = share(guard.spools.held_bytes(session), 1, image.present.len());
            (seq, bytes)
        };
        // As the session's own acknowledgement would be: under the session's lock (the
        // caller's), so nothing about this entry can be recorded in between.
        let _ = self.record(StoreEvent::Removed { session, seq });
        Some(bytes)
    }

    fn stats(&self) -> Option<StoreStats> {
        let l = self.log.stats();
        let (spool_bytes, spool_files) = self.inner.lock().spools.disk_usage();
        Some(StoreStats {
            spool_bytes,
            spool_files,
            bytes_on_disk: l.bytes_on_disk,
            segments: l.segments,
            commits: l.commits,
            fsync_seconds: l.fsync_seconds,
            batch_bytes: l.batch_bytes,
            compactions: self.compactions.load(Ordering::Relaxed),
            failures: l.failures,
            failed: l.failed,
        })
    }
}

/// Bytes available to an unprivileged writer on the filesystem of `dir`.
fn free_space(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is a NUL-terminated string that outlives the call, and `st` points to
    // writable memory the size of a `statvfs`, which the call fills in on success (and
    // which is only read then); zeroed, it is a valid `statvfs` either way.
    let r = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if r != 0 {
        return None;
    }
    // SAFETY: zero-initialised above and filled in by the successful call.
    let st = unsafe { st.assume_init() };
    // u64 on 64-bit Linux, narrower elsewhere.
    #[allow(clippy::useless_conversion)]
    let (blocks, size) = (u64::from(st.f_bavail), u64::from(st.f_frsize));
    Some(blocks.saturating_mul(size))
}

/// `part` of `count` entries' share of `bytes`.
fn share(bytes: u64, part: u64, count: u64) -> u64 {
    if count == 0 {
        return 0;
    }
    (bytes as u128 * part as u128 / count as u128) as u64
}

#[cfg(test)]
#[path = "durable_tests.rs"]
mod tests;
