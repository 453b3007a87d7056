//! The durable store's engine: an append-only log of our own, with group commit.
//!
//! Chosen by measurement over redb and fjall for this workload (messages written as they
//! arrive and deleted moments later; see docs/DESIGN.md): appending to one file and
//! syncing once per batch is what the workload needs, and a log does nothing more.
//!
//! * **Records** are opaque byte strings framed as `[len: u32 LE][crc32: u32 LE][body]`;
//!   the store above gives them meaning.
//! * **Segments** are files `NNNNNNNN.log` in the store directory, written in order; a new
//!   one starts when the current one passes `segment_bytes`. Dropping whole segments
//!   whose records are all dead reclaims space (the store above decides when).
//! * **Group commit**: callers hand records to [`Log::append`] and get a commit number at
//!   once; one writer thread takes everything that arrived while it was busy, writes it
//!   with one `write`, syncs once (per [`SyncPolicy`]), then publishes the highest commit
//!   number that is durable and runs the callbacks waiting for it. Many publishers share
//!   one fsync, so durable throughput grows with load instead of being capped by disk
//!   latency.
//! * **Recovery** ([`Log::open`]) reads every segment in order. A record cut short or
//!   failing its checksum at the very end of the last segment is a write torn by a crash:
//!   it is cut off and reported. Anything else that does not parse is corruption, and the
//!   open fails naming the file and the offset; nothing is ever discarded silently.
//!   Segments are read record by record, so a restart on a big store holds one record at
//!   a time, not a whole segment.
//!
//! This file is the API the store calls (append, commit numbers, waiting for
//! durability); `writer.rs` is the writer thread and its failure handling; `segment.rs`
//! is the files (framing, naming, reading back, rotation, deletion).

pub(in crate::store) mod segment;
mod writer;

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::metrics::{Histogram, HistogramSnapshot};

/// When appended records are synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// fsync (fdatasync) before a commit counts as durable.
    Always,
    /// Written to the OS at once, fsynced at most this often: survives a process kill,
    /// may lose the last interval on power loss.
    Interval(Duration),
    /// Written to the OS only: survives a process kill, not a power cut.
    Never,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub dir: PathBuf,
    pub sync: SyncPolicy,
    /// A new segment starts once the current one is this large.
    pub segment_bytes: u64,
}

/// A problem with the log's files, phrased for the operator.
#[derive(Debug)]
pub struct LogError(pub String);

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LogError {}

/// What [`Log::open`] found.
#[derive(Debug, Default)]
pub struct Recovery {
    pub records: usize,
    /// Segment files read; only tests look.
    #[cfg(test)]
    pub segments: usize,
    /// Bytes cut off the end of the last segment (a write torn by a crash), and where.
    pub torn: Option<(PathBuf, u64, u64)>,
    /// Bytes in the segments read.
    pub bytes: u64,
}

/// Commit numbers: everything appended with a number at or below
/// [`Log::durable`] is on disk (per the sync policy).
pub type Commit = u64;

/// Runs once a commit is durable (or the log has failed).
pub type Waker = Box<dyn FnOnce() + Send>;

/// What a checkpoint needs done with files besides its own segment.
#[derive(Debug, Default)]
pub struct CheckpointFiles {
    /// A directory whose files must be on disk before the checkpoint is (the spools,
    /// whose entries the checkpoint no longer carries): the writer syncs its filesystem
    /// first (unless the sync policy is `never`).
    pub sync_first: Option<PathBuf>,
    /// Files to delete once the checkpoint is durable.
    pub delete_after: Vec<PathBuf>,
}

impl CheckpointFiles {
    fn merge(&mut self, other: CheckpointFiles) {
        if other.sync_first.is_some() {
            self.sync_first = other.sync_first;
        }
        self.delete_after.extend(other.delete_after);
    }
}

/// Appends waiting for the writer: one buffer of frames that every appender adds to, and
/// the writer swaps out whole. Group commit is this buffer.
struct Pending {
    buf: Vec<u8>,
    /// The number of the last commit in `buf`.
    commit: Commit,
    /// Offset in `buf` where a checkpoint starts: from there the records go to a new
    /// segment, and once they are durable every older segment is deleted.
    checkpoint: Option<usize>,
    /// What that checkpoint needs done with other files.
    checkpoint_files: CheckpointFiles,
    closing: bool,
}

struct Shared {
    durable: AtomicU64,
    /// The write or sync error the log is stopped by; while set, nothing is appended.
    failed: Mutex<Option<String>>,
    /// Commit ranges a failure lost: never durable, whatever `durable` says later.
    lost: Mutex<Vec<(Commit, Commit)>>,
    /// `lost` is not empty: every acknowledgement asks, and almost always the answer is no.
    any_lost: std::sync::atomic::AtomicBool,
    /// After a failure: the damaged tail has been cut off, and the log can go on once a
    /// checkpoint rewrites the state (see [`Log::resume_with`]).
    repaired: std::sync::atomic::AtomicBool,
    /// Callbacks waiting for a commit to become durable.
    waiters: Mutex<Vec<(Commit, Waker)>>,
    /// What the writer did, for the operator.
    stats: WriterStats,
}

/// fsync latency buckets, seconds: 50 µs to 1 s.
const FSYNC_SECONDS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// Batch size buckets, bytes: 256 B to 16 MiB.
const BATCH_BYTES: [f64; 9] = [
    256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
];

/// Counted by the writer thread (the one writer of each), read by anyone.
struct WriterStats {
    /// Writes that reached the file (each a group commit of every append before it).
    commits: AtomicU64,
    fsync_seconds: Histogram,
    batch_bytes: Histogram,
    /// Writes or syncs that failed.
    failures: AtomicU64,
}

/// What the log has done since it was opened, and what it holds (see [`Log::stats`]).
#[derive(Clone, Debug, Default)]
pub struct LogStats {
    pub bytes_on_disk: u64,
    pub segments: usize,
    pub commits: u64,
    pub fsync_seconds: HistogramSnapshot,
    pub batch_bytes: HistogramSnapshot,
    pub failures: u64,
    /// Appends are refused: a write failed and the log has not resumed.
    pub failed: bool,
}

pub struct Log {
    shared: Arc<Shared>,
    pending: Arc<PendingCell>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Bytes written since the last checkpoint (for the store's compaction decision).
    since_checkpoint: AtomicU64,
    /// The store directory, to measure what its segments hold.
    dir: PathBuf,
    /// Held for the life of the log: one process per store directory.
    _lock: File,
}

/// The pending buffer, shared with the writer thread, and the condition variable that
/// wakes the writer when it has something.
struct PendingCell(Mutex<Pending>, Condvar);

/// Frames being added to one commit (see [`Log::append_with`]).
pub struct Frames<'a> {
    buf: &'a mut Vec<u8>,
    error: Option<LogError>,
}

impl Frames<'_> {
    /// Adds one record whose body `encode` writes.
    pub fn record(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        if self.error.is_some() {
            return;
        }
        if let Err(len) = segment::push_frame(self.buf, encode) {
            self.error = Some(LogError(format!("record of {len} bytes cannot be stored")));
        }
    }
}

impl Log {
    /// Opens (creating if need be) the log in `config.dir`, hands every record to `each`
    /// in the order written, and starts the writer thread. An error from `each` (a record
    /// that does not decode) is corruption, reported with the file and offset.
    pub fn open(
        config: LogConfig,
        mut each: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(Log, Recovery), LogError> {
        let (lock, tail, recovery) = segment::recover(&config.dir, &mut each)?;
        let shared = Arc::new(Shared {
            durable: AtomicU64::new(0),
            failed: Mutex::new(None),
            lost: Mutex::new(Vec::new()),
            any_lost: std::sync::atomic::AtomicBool::new(false),
            repaired: std::sync::atomic::AtomicBool::new(false),
            waiters: Mutex::new(Vec::new()),
            stats: WriterStats {
                commits: AtomicU64::new(0),
                fsync_seconds: Histogram::new(&FSYNC_SECONDS),
                batch_bytes: Histogram::new(&BATCH_BYTES),
                failures: AtomicU64::new(0),
            },
        });
        let cell = Arc::new(PendingCell(
            Mutex::new(Pending {
                buf: Vec::new(),
                commit: 0,
                checkpoint: None,
                checkpoint_files: CheckpointFiles::default(),
                closing: false,
            }),
            Condvar::new(),
        ));
        let handle = writer::start(&config, tail, shared.clone(), cell.clone())?;
        Ok((
            Log {
                shared,
                pending: cell,
                writer: Mutex::new(Some(handle)),
                since_checkpoint: AtomicU64::new(recovery.bytes),
                dir: config.dir.clone(),
                _lock: lock,
            },
            recovery,
        ))
    }

    /// Appends `records` as one commit and returns its number at once (tests).
    #[cfg(test)]
    pub fn append(&self, records: &[&[u8]]) -> Result<Commit, LogError> {
        self.append_with(|f| {
            for r in records {
                f.record(|buf| buf.extend_from_slice(r));
            }
        })
    }

    /// Appends the records `write` adds as one commit, and returns its number at once
    /// (see [`Log::durable`], [`Log::on_durable`]). Callers that need their commits in a
    /// particular order make their calls in that order: numbers follow the calls.
    pub fn append_with(&self, write: impl FnOnce(&mut Frames)) -> Result<Commit, LogError> {
        self.add(None, write)
    }

    /// Like [`append_with`](Self::append_with), for a checkpoint: the records (a snapshot
    /// of the whole live state) start a new segment, and once they are durable every
    /// older segment is deleted.
    /// `files` says what must be on disk before the checkpoint is, and what may be deleted
    /// once it is.
    pub fn checkpoint_with(
        &self,
        files: CheckpointFiles,
        write: impl FnOnce(&mut Frames),
    ) -> Result<Commit, LogError> {
        self.add(Some(files), write)
    }

    fn add(
        &self,
        checkpoint: Option<CheckpointFiles>,
        write: impl FnOnce(&mut Frames),
    ) -> Result<Commit, LogError> {
        let cell = &self.pending;
        let mut p = cell.0.lock();
        // Checked under the pending lock, which the writer holds while it records a
        // failure: nothing is added behind a failed write.
        if let Some(e) = self.shared.failed.lock().as_ref() {
            return Err(LogError(e.clone()));
        }
        if p.closing {
            return Err(LogError("the store is closed".into()));
        }
        let start = p.buf.len();
        let mut frames = Frames {
            buf: &mut p.buf,
            error: None,
        };
        write(&mut frames);
        if let Some(e) = frames.error {
            p.buf.truncate(start);
            return Err(e);
        }
        let written = (p.buf.len() - start) as u64;
        if let Some(files) = checkpoint {
            p.checkpoint = Some(start);
            p.checkpoint_files.merge(files);
            self.since_checkpoint.store(written, Ordering::Relaxed);
        } else {
            self.since_checkpoint.fetch_add(written, Ordering::Relaxed);
        }
        p.commit += 1;
        let commit = p.commit;
        drop(p);
        cell.1.notify_one();
        Ok(commit)
    }

    /// After a failure, once the writer has cut the damaged tail off: clears the failure
    /// and appends the records `write` adds (a snapshot of the whole state) as a
    /// checkpoint, so that what the failed writes lost is rewritten. Fails if the log has
    /// not failed, or is not repaired yet.
    pub fn resume_with(
        &self,
        files: CheckpointFiles,
        write: impl FnOnce(&mut Frames),
    ) -> Result<Commit, LogError> {
        {
            let _p = self.pending.0.lock();
            if !self.shared.repaired.swap(false, Ordering::AcqRel) {
                return Err(LogError(
                    self.failure()
                        .unwrap_or_else(|| "the store has not failed".into()),
                ));
            }
            *self.shared.failed.lock() = None;
        }
        self.add(Some(files), write)
    }

    /// Whether the log has failed and can be resumed (see [`Log::resume_with`]).
    pub fn repaired(&self) -> bool {
        self.shared.repaired.load(Ordering::Acquire)
    }

    /// Whether `commit` was lost to a failed write: it never becomes durable.
    pub fn is_lost(&self, commit: Commit) -> bool {
        if !self.shared.any_lost.load(Ordering::Acquire) {
            return false;
        }
        self.shared
            .lost
            .lock()
            .iter()
            .any(|&(from, to)| (from..=to).contains(&commit))
    }

    /// Bytes appended since the last checkpoint (or, after an open, in the segments
    /// read).
    pub fn since_checkpoint(&self) -> u64 {
        self.since_checkpoint.load(Ordering::Relaxed)
    }

    /// The highest commit that is durable.
    pub fn durable(&self) -> Commit {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// What the writer has done and what the segments hold now (one directory listing
    /// and a `stat` per segment: for the operator every few seconds, not per message).
    pub fn stats(&self) -> LogStats {
        let w = &self.shared.stats;
        let (bytes_on_disk, segments) = match segment::list_segments(&self.dir) {
            Ok(list) => (
                list.iter()
                    .filter_map(|(_, path)| std::fs::metadata(path).ok())
                    .map(|m| m.len())
                    .sum(),
                list.len(),
            ),
            Err(_) => (0, 0),
        };
        LogStats {
            bytes_on_disk,
            segments,
            commits: w.commits.load(Ordering::Relaxed),
            fsync_seconds: w.fsync_seconds.snapshot(),
            batch_bytes: w.batch_bytes.snapshot(),
            failures: w.failures.load(Ordering::Relaxed),
            failed: self.shared.failed.lock().is_some(),
        }
    }

    /// The error that stopped the log, if one did.
    pub fn failure(&self) -> Option<String> {
        self.shared.failed.lock().clone()
    }

    /// Runs `waker` once `commit` is durable or the log has failed: at once if it already
    /// is, otherwise on the writer thread.
    pub fn on_durable(&self, commit: Commit, waker: Waker) {
        let mut waiters = self.shared.waiters.lock();
        // The writer publishes `durable` (or `failed`) before it takes this lock to run
        // the waiters, so a waiter added after that sees the new value here.
        if self.durable() >= commit || self.shared.failed.lock().is_some() {
            drop(waiters);
            waker();
        } else {
            waiters.push((commit, waker));
        }
    }

    /// Blocks until `commit` is durable or the log has failed (tests; the broker is woken
    /// through [`Log::on_durable`] instead).
    #[cfg(test)]
    pub fn wait(&self, commit: Commit) -> Result<(), LogError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.on_durable(
            commit,
            Box::new(move || {
                let _ = tx.send(());
            }),
        );
        let _ = rx.recv();
        if self.durable() >= commit && !self.is_lost(commit) {
            Ok(())
        } else {
            Err(LogError(self.failure().unwrap_or_default()))
        }
    }

    /// Writes and syncs everything appended so far and stops the writer. Appends after
    /// this fail.
    pub fn close(&self) -> Result<(), LogError> {
        {
            let mut p = self.pending.0.lock();
            p.closing = true;
        }
        self.pending.1.notify_one();
        if let Some(h) = self.writer.lock().take() {
            let _ = h.join();
        }
        match self.failure() {
            Some(e) => Err(LogError(e)),
            None => Ok(()),
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A fresh store directory, removed when dropped.
    pub(in crate::store::log) struct Dir(pub(in crate::store::log) PathBuf);
    impl Dir {
        pub(in crate::store::log) fn new(tag: &str) -> Dir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let p =
                std::env::temp_dir().join(format!("midge-log-{}-{tag}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            Dir(p)
        }
        pub(in crate::store::log) fn config(&self, sync: SyncPolicy) -> LogConfig {
            LogConfig {
                dir: self.0.clone(),
                sync,
                segment_bytes: 1 << 20,
            }
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub(in crate::store::log) fn records(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("record-{i}").into_bytes()).collect()
    }

    /// Opens the log, collecting every record it holds.
    pub(in crate::store::log) fn open(
        config: LogConfig,
    ) -> Result<(Log, Vec<Vec<u8>>, Recovery), LogError> {
        let mut got = Vec::new();
        let (log, rec) = Log::open(config, |r| {
            got.push(r.to_vec());
            Ok(())
        })?;
        Ok((log, got, rec))
    }

    #[test]
    fn appended_records_come_back_in_order_after_reopen() {
        let dir = Dir::new("order");
        let (log, got, _) = open(dir.config(SyncPolicy::Always)).unwrap();
        assert!(got.is_empty());
        let rs = records(100);
        let mut last = 0;
        for chunk in rs.chunks(7) {
            let refs: Vec<&[u8]> = chunk.iter().map(|r| &r[..]).collect();
            last = log.append(&refs).unwrap();
        }
        log.wait(last).unwrap();
        assert!(log.durable() >= last);
        log.close().unwrap();
        drop(log);
        let (_log, got, rec) = open(dir.config(SyncPolicy::Always)).unwrap();
        assert_eq!(got, rs);
        assert!(rec.torn.is_none());
    }

    #[test]
    fn many_writers_share_syncs_and_every_waker_runs_once_durable() {
        let dir = Dir::new("group");
        let (log, _, _) = open(dir.config(SyncPolicy::Always)).unwrap();
        let log = Arc::new(log);
        let done = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = log.clone();
                let done = done.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let body = format!("{t}-{i}");
                        let d = done.clone();
                        let c = log.append(&[body.as_bytes()]).unwrap();
                        let me = log.clone();
                        log.on_durable(
                            c,
                            Box::new(move || {
                                assert!(me.durable() >= c);
                                d.fetch_add(1, Ordering::Relaxed);
                            }),
                        );
                        log.wait(c).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        log.close().unwrap();
        assert_eq!(done.load(Ordering::Relaxed), 1600);
        drop(log);
        let (_log, got, _) = open(dir.config(SyncPolicy::Never)).unwrap();
        assert_eq!(got.len(), 1600);
    }
}
