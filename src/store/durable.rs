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

use parking_lot::{Mutex, MutexGuard};

use super::log::{Log, LogConfig, SyncPolicy};
use super::record::Record;
use super::state::{message_record, unix_millis, Replay, State};
use super::{Commit, Store, StoreError, StoreEvent, StoreStats, Waker};
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
    /// [`COMPACT_MIN`], lowered by tests.
    compact_min: u64,
    /// Compactions written since start.
    compactions: AtomicU64,
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
        let store = DurableStore {
            state: Mutex::new(state),
            log,
            compact_min: COMPACT_MIN,
            compactions: AtomicU64::new(0),
        };
        // What was read counts towards the next compaction, which may be due now. (Not
        // forced: a store on a full disk must still open, and serve what it can.)
        store.maybe_compact(&mut store.state.lock());
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

    /// Writes `st` as a checkpoint: a new segment that starts from nothing.
    fn checkpoint(&self, st: &State) -> Result<Commit, super::log::LogError> {
        self.log
            .checkpoint_with(|f| st.snapshot(|r| f.record(|b| r.encode(b))))
    }

    /// Compacts when the log has grown well past the live state.
    fn maybe_compact(&self, st: &mut State) {
        let since = self.log.since_checkpoint();
        if since < self.compact_min || since < COMPACT_RATIO.saturating_mul(st.live_bytes) {
            return;
        }
        let started = Instant::now();
        st.drop_expired(started);
        match self.checkpoint(st) {
            Ok(_) => {
                self.compactions.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    before = since,
                    live = st.live_bytes,
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
        let mut st = self.state.lock();
        if let Some(e) = self.log.failure() {
            if !self.log.repaired() {
                return Err(StoreError(e));
            }
            // The failed write's tail is cut off: rewrite the whole state, which carries
            // what it lost, and go on.
            self.log
                .resume_with(|f| st.snapshot(|r| f.record(|b| r.encode(b))))
                .map_err(|e| StoreError(e.0))?;
            tracing::info!(
                event = "store_resumed",
                "store: writing again after a failure"
            );
        }
        // The message a record refers to, when it is not in the store yet.
        let mut message = None;
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
            StoreEvent::SessionDiscarded { session } => Record::SessionDiscarded { session },
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
            } => {
                if !st.has_session(session) {
                    return Ok(None);
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
                }
            }
            StoreEvent::Sent { session, seq, pkid } => Record::Sent { session, seq, pkid },
            StoreEvent::Released { session, seq } => Record::Released { session, seq },
            StoreEvent::Removed { session, seq } => Record::Removed { session, seq },
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

    fn on_durable(&self, commit: Commit, waker: Waker) {
        self.log.on_durable(commit, waker);
    }

    fn is_lost(&self, commit: Commit) -> bool {
        self.log.is_lost(commit)
    }

    fn close(&self) -> Result<(), StoreError> {
        self.log.close().map_err(|e| StoreError(e.0))
    }

    fn stats(&self) -> Option<StoreStats> {
        let l = self.log.stats();
        Some(StoreStats {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::QoS;
    use crate::message::Message;
    use bytes::Bytes;
    use std::sync::Arc;

    fn config(dir: &std::path::Path) -> Persistence {
        Persistence {
            enabled: true,
            path: Some(dir.to_path_buf()),
            sync: SyncMode::Never,
            sync_interval_ms: 1000,
        }
    }

    fn dir_bytes(dir: &std::path::Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    }

    /// Records a QoS 1 message queued for `session` as `seq`, then sent with a packet id
    /// made from `seq`: the commit of the send, if the store wrote it.
    fn store_and_send(
        store: &DurableStore,
        session: u64,
        seq: u64,
        topic: &str,
        payload: &Bytes,
    ) -> Option<Commit> {
        let msg = Arc::new(Message::with_props(
            topic,
            payload.clone(),
            QoS::AtLeastOnce,
            false,
            None,
        ));
        store
            .record(StoreEvent::Enqueued {
                session,
                seq,
                message: &msg,
                qos: QoS::AtLeastOnce,
                retain: false,
                extra: None,
            })
            .unwrap();
        let pkid = u16::try_from(seq % 60_000).unwrap() + 1;
        store
            .record(StoreEvent::Sent { session, seq, pkid })
            .unwrap()
    }

    #[test]
    fn delivered_messages_are_reclaimed_and_the_undelivered_survive() {
        let dir = std::env::temp_dir().join(format!("midge-durable-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (mut store, _) = DurableStore::open(&config(&dir)).unwrap();
        store.compact_min = 64 * 1024;
        let session = 1;
        fn rec(s: &DurableStore, e: StoreEvent<'_>) -> Option<Commit> {
            s.record(e).unwrap()
        }
        rec(
            &store,
            StoreEvent::SessionOpened {
                session,
                client_id: "sub",
                owner: None,
                expiry: u32::MAX,
            },
        );
        // 20 MiB pass through; everything but the last 10 messages is acknowledged.
        let payload = Bytes::from(vec![7u8; 1024]);
        let mut last = 0;
        for seq in 1..=20_000u64 {
            last =
                store_and_send(&store, session, seq, &format!("t/{seq}"), &payload).unwrap_or(last);
            if seq <= 19_990 {
                rec(&store, StoreEvent::Removed { session, seq });
            }
        }
        store.log.wait(last).unwrap();
        let size = dir_bytes(&dir);
        assert!(
            size < 2 * 1024 * 1024,
            "store holds {size} bytes after 20 MiB passed"
        );
        let stats = store.stats().expect("a durable store has stats");
        assert!(stats.compactions > 0, "{stats:?}");
        assert_eq!(stats.bytes_on_disk, size, "{stats:?}");
        store.close().unwrap();
        drop(store);
        let (store, loaded) = DurableStore::open(&config(&dir)).unwrap();
        assert_eq!((loaded.sessions, loaded.queued), (1, 10));
        let st = store.state();
        let queue = &st.sessions[&session].queue;
        assert_eq!(
            queue.keys().copied().collect::<Vec<_>>(),
            (19_991..=20_000).collect::<Vec<_>>()
        );
        assert!(queue.values().all(|e| e.pkid.is_some()));
        drop(st);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn stats_count_commits_fsyncs_batches_and_segments() {
        let dir = std::env::temp_dir().join(format!("midge-durable-stats-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut p = config(&dir);
        p.sync = SyncMode::Always;
        let (store, _) = DurableStore::open(&p).unwrap();
        for session in 1..=3 {
            let commit = store
                .record(StoreEvent::SessionOpened {
                    session,
                    client_id: "c",
                    owner: None,
                    expiry: u32::MAX,
                })
                .unwrap()
                .unwrap();
            store.log.wait(commit).unwrap();
        }
        let s = store.stats().expect("a durable store has stats");
        // One write per wait above (group commit: each waited for alone).
        assert!(s.commits >= 3, "{s:?}");
        assert_eq!(s.batch_bytes.count, s.commits, "{s:?}");
        assert!(s.fsync_seconds.count >= 3, "{s:?}");
        assert_eq!(s.segments, 1, "{s:?}");
        assert_eq!(s.bytes_on_disk, dir_bytes(&dir) - lock_bytes(&dir), "{s:?}");
        assert_eq!((s.compactions, s.failures, s.failed), (0, 0, false));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Bytes of the files in `dir` that are not segments (the lock file).
    fn lock_bytes(dir: &std::path::Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| !e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    }

    #[test]
    fn a_format_1_store_is_refused_with_a_message_not_misread() {
        let dir = std::env::temp_dir().join(format!("midge-durable-v1-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let (store, _) = DurableStore::open(&config(&dir)).unwrap();
            // Format 1's SessionOpened: tag 1, the client id, the expiry.
            let old = [1, 3, 0, 0, 0, b'd', b'e', b'v', 0xFF, 0xFF, 0xFF, 0xFF];
            let c = store.log.append(&[&old]).unwrap();
            store.log.wait(c).unwrap();
            store.close().unwrap();
        }
        let e = DurableStore::open(&config(&dir)).err().expect("refused");
        assert!(
            e.contains("store format 1") && e.contains("00000001.log"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Bytes the log grows by per 64-byte QoS 1 message delivered to a persistent
    /// session (stored, sent, acknowledged), with a client id of `id_len` bytes.
    fn log_bytes_per_message(id_len: usize) -> u64 {
        let dir = std::env::temp_dir().join(format!(
            "midge-durable-size-{}-{id_len}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let (store, _) = DurableStore::open(&config(&dir)).unwrap();
        let client_id = "c".repeat(id_len);
        let client_id = client_id.as_str();
        let session = 1;
        let mut last = store
            .record(StoreEvent::SessionOpened {
                session,
                client_id,
                owner: Some("alice"),
                expiry: u32::MAX,
            })
            .unwrap()
            .unwrap();
        store.log.wait(last).unwrap();
        let before = dir_bytes(&dir);
        const N: u64 = 100;
        let payload = Bytes::from(vec![7u8; 64]);
        for seq in 1..=N {
            store_and_send(
                &store,
                session,
                seq,
                "sensors/dev-0001/temperature",
                &payload,
            )
            .expect("a commit");
            last = store
                .record(StoreEvent::Removed { session, seq })
                .unwrap()
                .unwrap();
        }
        store.log.wait(last).unwrap();
        let per = (dir_bytes(&dir) - before) / N;
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
        per
    }

    #[test]
    fn log_bytes_per_message_do_not_grow_with_the_client_id() {
        let short = log_bytes_per_message(16);
        let long = log_bytes_per_message(60 * 1024);
        eprintln!("log bytes per 64-byte QoS 1 message: client id 16 B: {short}, 60 KiB: {long}");
        // The session is named by number: the client id is written once, when the
        // session opens. (Store format 1 wrote it in three records per message: 262
        // bytes with a 16-byte id, 184534 with a 60 KiB one.)
        assert_eq!(short, long);
        assert!(short < 256, "{short} bytes per message");
    }
}
