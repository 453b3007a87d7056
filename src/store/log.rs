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

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Frame header: length and checksum.
const HEADER: usize = 8;
/// A single record larger than this is refused (and a length field claiming more is
/// corruption, not an allocation request).
pub const MAX_RECORD: usize = 512 * 1024 * 1024;
/// The writer's buffer is given back to the allocator after a write larger than this (a
/// checkpoint of a big backlog), so a one-off burst does not stay resident.
const KEEP_BUFFER: usize = 16 * 1024 * 1024;

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

/// Appends waiting for the writer: one buffer of frames that every appender adds to, and
/// the writer swaps out whole. Group commit is this buffer.
struct Pending {
    buf: Vec<u8>,
    /// The number of the last commit in `buf`.
    commit: Commit,
    /// Offset in `buf` where a checkpoint starts: from there the records go to a new
    /// segment, and once they are durable every older segment is deleted.
    checkpoint: Option<usize>,
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
}

pub struct Log {
    shared: Arc<Shared>,
    pending: Arc<PendingCell>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Bytes written since the last checkpoint (for the store's compaction decision).
    since_checkpoint: AtomicU64,
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
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; HEADER]);
        encode(self.buf);
        let body = &self.buf[start + HEADER..];
        if body.is_empty() || body.len() > MAX_RECORD {
            self.error = Some(LogError(format!(
                "record of {} bytes cannot be stored",
                body.len()
            )));
            self.buf.truncate(start);
            return;
        }
        let len = (body.len() as u32).to_le_bytes();
        let crc = crc32fast::hash(body).to_le_bytes();
        self.buf[start..start + 4].copy_from_slice(&len);
        self.buf[start + 4..start + HEADER].copy_from_slice(&crc);
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
        let dir = &config.dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| LogError(format!("cannot create {}: {e}", dir.display())))?;
        let lock = lock_dir(dir)?;
        let segments = list_segments(dir)?;
        let mut recovery = Recovery {
            segments: segments.len(),
            ..Recovery::default()
        };
        for (i, (_, path)) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            read_segment(path, last, &mut recovery, &mut each)?;
        }
        let (number, file, size) = match segments.last() {
            Some((n, path)) => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(path)
                    .map_err(|e| LogError(format!("cannot open {}: {e}", path.display())))?;
                let size = file
                    .metadata()
                    .map_err(|e| LogError(format!("cannot stat {}: {e}", path.display())))?
                    .len();
                (*n, file, size)
            }
            None => {
                let file = create_segment(dir, 1)?;
                (1, file, 0)
            }
        };
        let shared = Arc::new(Shared {
            durable: AtomicU64::new(0),
            failed: Mutex::new(None),
            lost: Mutex::new(Vec::new()),
            any_lost: std::sync::atomic::AtomicBool::new(false),
            repaired: std::sync::atomic::AtomicBool::new(false),
            waiters: Mutex::new(Vec::new()),
        });
        let cell = Arc::new(PendingCell(
            Mutex::new(Pending {
                buf: Vec::new(),
                commit: 0,
                checkpoint: None,
                closing: false,
            }),
            Condvar::new(),
        ));
        let writer = Writer {
            dir: config.dir.clone(),
            sync: config.sync,
            segment_bytes: config.segment_bytes,
            number,
            file,
            size,
            last_sync: Instant::now(),
            unsynced: false,
            shared: shared.clone(),
            cell: cell.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("midge-store".into())
            .spawn(move || writer.run())
            .map_err(|e| LogError(format!("cannot start the store writer: {e}")))?;
        Ok((
            Log {
                shared,
                pending: cell,
                writer: Mutex::new(Some(handle)),
                since_checkpoint: AtomicU64::new(recovery.bytes),
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
        self.add(false, write)
    }

    /// Like [`append_with`](Self::append_with), for a checkpoint: the records (a snapshot
    /// of the whole live state) start a new segment, and once they are durable every
    /// older segment is deleted.
    pub fn checkpoint_with(&self, write: impl FnOnce(&mut Frames)) -> Result<Commit, LogError> {
        self.add(true, write)
    }

    fn add(&self, checkpoint: bool, write: impl FnOnce(&mut Frames)) -> Result<Commit, LogError> {
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
        if checkpoint {
            p.checkpoint = Some(start);
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
    pub fn resume_with(&self, write: impl FnOnce(&mut Frames)) -> Result<Commit, LogError> {
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
        self.add(true, write)
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

struct Writer {
    dir: PathBuf,
    sync: SyncPolicy,
    segment_bytes: u64,
    number: u64,
    file: File,
    size: u64,
    last_sync: Instant,
    unsynced: bool,
    shared: Arc<Shared>,
    cell: Arc<PendingCell>,
}

impl Writer {
    fn run(mut self) {
        let mut buf = Vec::new();
        loop {
            // Group commit: take everything appended while the last write and sync ran.
            let (high, checkpoint, closing) = {
                let mut p = self.cell.0.lock();
                while p.buf.is_empty() && !p.closing {
                    match self.sync {
                        // In interval mode an idle log still gets its last writes synced
                        // in time.
                        SyncPolicy::Interval(d) if self.unsynced => {
                            let left = d.saturating_sub(self.last_sync.elapsed());
                            if self.cell.1.wait_for(&mut p, left).timed_out() {
                                break;
                            }
                        }
                        _ => self.cell.1.wait(&mut p),
                    }
                }
                std::mem::swap(&mut p.buf, &mut buf);
                (p.commit, p.checkpoint.take(), p.closing)
            };
            let result = self.write(&buf, checkpoint, closing);
            buf.clear();
            if buf.capacity() > KEEP_BUFFER {
                buf = Vec::new();
            }
            match result {
                Ok(()) => {
                    self.shared.durable.fetch_max(high, Ordering::AcqRel);
                }
                Err(e) => {
                    tracing::error!(
                        "store: {e}; messages for persistent sessions are refused until it \
                         can write again"
                    );
                    self.fail(e);
                }
            }
            self.run_waiters();
            if closing {
                return;
            }
            if self.shared.failed.lock().is_some() && !self.repair() {
                return;
            }
        }
    }

    /// Records a failed write: every commit not durable yet is lost, including those
    /// appended behind it, which are dropped unwritten.
    fn fail(&mut self, e: String) {
        let mut p = self.cell.0.lock();
        let from = self.shared.durable.load(Ordering::Acquire) + 1;
        if p.commit >= from {
            self.shared.lost.lock().push((from, p.commit));
            self.shared.any_lost.store(true, Ordering::Release);
        }
        p.buf.clear();
        p.checkpoint = None;
        *self.shared.failed.lock() = Some(e);
    }

    /// After a failure: cuts what the failed write left in the segment off (once a
    /// second until that works), then lets the store resume with a checkpoint. Returns
    /// false when the log is closed meanwhile.
    fn repair(&mut self) -> bool {
        loop {
            {
                let mut p = self.cell.0.lock();
                if p.closing {
                    return false;
                }
                self.cell.1.wait_for(&mut p, Duration::from_secs(1));
                if p.closing {
                    return false;
                }
            }
            let cut = self
                .file
                .set_len(self.size)
                .and_then(|()| self.file.sync_all());
            match cut {
                Ok(()) => {
                    self.unsynced = false;
                    self.shared.repaired.store(true, Ordering::Release);
                    return true;
                }
                Err(e) => tracing::debug!("store: cannot repair {}: {e}", self.path().display()),
            }
        }
    }

    /// Wakes whoever waits for a commit that is now durable (all of them if the log
    /// failed: they must learn it).
    fn run_waiters(&self) {
        let durable = self.shared.durable.load(Ordering::Acquire);
        let failed = self.shared.failed.lock().is_some();
        let due: Vec<Waker> = {
            let mut waiters = self.shared.waiters.lock();
            if failed {
                waiters.drain(..).map(|(_, w)| w).collect()
            } else if waiters.iter().any(|(c, _)| *c <= durable) {
                let (due, rest): (Vec<_>, Vec<_>) =
                    waiters.drain(..).partition(|(c, _)| *c <= durable);
                *waiters = rest;
                due.into_iter().map(|(_, w)| w).collect()
            } else {
                Vec::new()
            }
        };
        for w in due {
            w();
        }
    }

    /// Writes `bytes`, syncing as the policy says; `force_sync` syncs anyway (closing).
    /// From `checkpoint` on, the bytes go to a new segment, and once they are synced the
    /// older segments are deleted.
    fn write(
        &mut self,
        bytes: &[u8],
        checkpoint: Option<usize>,
        force_sync: bool,
    ) -> Result<(), String> {
        let Some(at) = checkpoint else {
            return self.write_part(bytes, force_sync);
        };
        self.write_part(&bytes[..at], false)?;
        self.rotate()?;
        let first = self.number;
        self.write_part(&bytes[at..], true)?;
        self.delete_before(first);
        Ok(())
    }

    fn write_part(&mut self, bytes: &[u8], force_sync: bool) -> Result<(), String> {
        if !bytes.is_empty() {
            if self.size >= self.segment_bytes {
                self.rotate()?;
            }
            self.file
                .write_all(bytes)
                .map_err(|e| format!("write to {} failed: {e}", self.path().display()))?;
            self.size += bytes.len() as u64;
            self.unsynced = true;
        }
        let due = match self.sync {
            SyncPolicy::Always => self.unsynced,
            SyncPolicy::Interval(d) => self.unsynced && self.last_sync.elapsed() >= d,
            SyncPolicy::Never => false,
        };
        if due || (force_sync && self.unsynced) {
            self.sync_file()?;
        }
        Ok(())
    }

    fn sync_file(&mut self) -> Result<(), String> {
        self.file
            .sync_data()
            .map_err(|e| format!("fsync of {} failed: {e}", self.path().display()))?;
        self.last_sync = Instant::now();
        self.unsynced = false;
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), String> {
        if self.unsynced {
            self.sync_file()?;
        }
        self.file = create_segment(&self.dir, self.number + 1).map_err(|e| e.0)?;
        self.number += 1;
        self.size = 0;
        Ok(())
    }

    /// Deletes the segments before `first` (a checkpoint made them dead). A segment that
    /// cannot be deleted is logged and left: it is replayed before the checkpoint, which
    /// starts from nothing, so it does no harm but take space.
    fn delete_before(&self, first: u64) {
        let Ok(segments) = list_segments(&self.dir) else {
            return;
        };
        for (n, path) in segments {
            if n < first {
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!("store: cannot delete {}: {e}", path.display());
                }
            }
        }
        sync_dir(&self.dir);
    }

    fn path(&self) -> PathBuf {
        segment_path(&self.dir, self.number)
    }
}

/// Takes the store directory's lock file: a second midge on the same directory would
/// interleave its writes with ours.
fn lock_dir(dir: &Path) -> Result<File, LogError> {
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| LogError(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(LogError(format!(
            "the store {} is in use by another midge (it holds {})",
            dir.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(LogError(format!("cannot lock {}: {e}", path.display())))
        }
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:08}.log"))
}

/// Creates segment `number` and makes its directory entry durable.
fn create_segment(dir: &Path, number: u64) -> Result<File, LogError> {
    let path = segment_path(dir, number);
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(|e| LogError(format!("cannot create {}: {e}", path.display())))?;
    sync_dir(dir);
    Ok(file)
}

/// The segment files of `dir`, by number. Other files are left alone.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| LogError(format!("cannot read {}: {e}", dir.display())))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LogError(format!("cannot read {}: {e}", dir.display())))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".log")) else {
            continue;
        };
        if let Ok(n) = stem.parse::<u64>() {
            segments.push((n, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

/// Hands one segment's records to `each`. In the last segment a bad tail is cut off (a
/// torn write); anywhere else it is corruption.
fn read_segment(
    path: &Path,
    last: bool,
    recovery: &mut Recovery,
    each: &mut impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), LogError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| LogError(format!("cannot read {}: {e}", path.display())))?;
    recovery.bytes += bytes.len() as u64;
    let corrupt = |at: usize, why: &str| {
        LogError(format!(
            "{}: corrupt record at offset {at} ({why}). The store cannot be loaded; move \
             the store directory aside to start empty (see README, \"Durability\")",
            path.display()
        ))
    };
    let mut at = 0usize;
    while at < bytes.len() {
        match frame_at(&bytes, at) {
            Ok((body, next)) => {
                each(body).map_err(|why| corrupt(at, &why))?;
                recovery.records += 1;
                at = next;
            }
            Err(why) => {
                // Torn only if nothing valid follows: a crash cuts the end, it does not
                // damage the middle.
                let tail_is_torn = last && !valid_frame_follows(&bytes, at + 1);
                if !tail_is_torn {
                    return Err(corrupt(at, why));
                }
                let cut = (bytes.len() - at) as u64;
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| LogError(format!("cannot open {}: {e}", path.display())))?;
                file.set_len(at as u64)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| LogError(format!("cannot truncate {}: {e}", path.display())))?;
                recovery.torn = Some((path.to_path_buf(), at as u64, cut));
                recovery.bytes -= cut;
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The record body at `at` and the offset after it.
fn frame_at(bytes: &[u8], at: usize) -> Result<(&[u8], usize), &'static str> {
    let header = bytes.get(at..at + HEADER).ok_or("header cut short")?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    // Empty records are never written: a zero-filled region (what some filesystems leave
    // after a crash) must not read as a run of valid empty records.
    if len == 0 || len > MAX_RECORD {
        return Err("length field out of range");
    }
    let body = bytes
        .get(at + HEADER..at + HEADER + len)
        .ok_or("record cut short")?;
    if crc32fast::hash(body) != crc {
        return Err("checksum mismatch");
    }
    Ok((body, at + HEADER + len))
}

/// Whether a valid frame starts anywhere at or after `from` (scanning byte by byte, so
/// damage in the middle of a segment is told apart from a torn end).
fn valid_frame_follows(bytes: &[u8], from: usize) -> bool {
    (from..bytes.len().saturating_sub(HEADER)).any(|at| frame_at(bytes, at).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str) -> Dir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let p =
                std::env::temp_dir().join(format!("midge-log-{}-{tag}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            Dir(p)
        }
        fn config(&self, sync: SyncPolicy) -> LogConfig {
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

    fn records(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("record-{i}").into_bytes()).collect()
    }

    /// Writes `records(10)` into a new log in `dir` and closes it; returns its one segment.
    fn ten_records_in_one_segment(dir: &Dir) -> PathBuf {
        let (log, _, _) = open(dir.config(SyncPolicy::Always)).unwrap();
        for r in records(10) {
            log.append(&[&r[..]]).unwrap();
        }
        log.close().unwrap();
        drop(log);
        segment_path(&dir.0, 1)
    }

    /// Opens the log, collecting every record it holds.
    fn open(config: LogConfig) -> Result<(Log, Vec<Vec<u8>>, Recovery), LogError> {
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

    #[test]
    fn segments_rotate_and_are_read_in_order() {
        let dir = Dir::new("rotate");
        let mut config = dir.config(SyncPolicy::Never);
        config.segment_bytes = 200;
        let (log, _, _) = open(config.clone()).unwrap();
        let rs = records(50);
        for r in &rs {
            // One write each (waiting), so the size check runs between them.
            let c = log.append(&[&r[..]]).unwrap();
            log.wait(c).unwrap();
        }
        log.close().unwrap();
        drop(log);
        let (_log, got, rec) = open(config).unwrap();
        assert!(rec.segments > 3, "{} segments", rec.segments);
        assert_eq!(got, rs);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_reported() {
        let dir = Dir::new("torn");
        let seg = ten_records_in_one_segment(&dir);
        let full = std::fs::metadata(&seg).unwrap().len();
        // A crash in the middle of the last record's write.
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(full - 3).unwrap();
        drop(f);
        let (log, got, rec) = open(dir.config(SyncPolicy::Always)).unwrap();
        assert_eq!(got, records(9));
        let (path, at, cut) = rec.torn.expect("torn tail reported");
        assert_eq!(path, seg);
        assert_eq!(at + cut, full - 3);
        // Appending after recovery continues cleanly.
        let c = log.append(&[b"after"]).unwrap();
        log.wait(c).unwrap();
        log.close().unwrap();
        drop(log);
        let (_log, got, _) = open(dir.config(SyncPolicy::Always)).unwrap();
        assert_eq!(got.len(), 10);
        assert_eq!(got[9], b"after");
    }

    #[test]
    fn corruption_in_the_middle_stops_the_open_naming_file_and_offset() {
        let dir = Dir::new("corrupt");
        let seg = ten_records_in_one_segment(&dir);
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[HEADER + 2] ^= 0xFF; // inside the first record's body
        std::fs::write(&seg, &bytes).unwrap();
        let e = open(dir.config(SyncPolicy::Always)).err().expect("refused");
        assert!(
            e.0.contains("00000001.log") && e.0.contains("offset 0"),
            "{e}"
        );
        // The file is left as it was: nothing is wiped.
        assert_eq!(std::fs::read(&seg).unwrap(), bytes);
    }

    #[test]
    fn a_length_field_of_garbage_is_corruption_not_an_allocation() {
        let dir = Dir::new("garbage");
        std::fs::create_dir_all(&dir.0).unwrap();
        let seg = segment_path(&dir.0, 1);
        let mut bytes = vec![0xFF, 0xFF, 0xFF, 0x7F, 0, 0, 0, 0];
        bytes.extend_from_slice(&[1u8; 64]);
        std::fs::write(&seg, &bytes).unwrap();
        // Last segment, nothing valid after it: treated as a torn tail and cut.
        let (_log, got, rec) = open(dir.config(SyncPolicy::Never)).unwrap();
        assert!(got.is_empty());
        assert!(rec.torn.is_some());
    }

    #[test]
    fn interval_sync_marks_commits_durable_after_the_write() {
        let dir = Dir::new("interval");
        let (log, _, _) =
            open(dir.config(SyncPolicy::Interval(Duration::from_millis(20)))).unwrap();
        let c = log.append(&[b"x"]).unwrap();
        log.wait(c).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        log.close().unwrap();
        drop(log);
        let (_log, got, _) = open(dir.config(SyncPolicy::Never)).unwrap();
        assert_eq!(got, vec![b"x".to_vec()]);
    }

    #[test]
    fn a_checkpoint_starts_a_segment_and_deletes_the_older_ones() {
        let dir = Dir::new("checkpoint");
        let mut config = dir.config(SyncPolicy::Never);
        config.segment_bytes = 100;
        let (log, _, _) = open(config.clone()).unwrap();
        for r in records(20) {
            let c = log.append(&[&r[..]]).unwrap();
            log.wait(c).unwrap();
        }
        assert!(list_segments(&dir.0).unwrap().len() > 2);
        let c = log
            .checkpoint_with(|f| f.record(|b| b.extend_from_slice(b"snapshot")))
            .unwrap();
        log.append(&[b"later"]).unwrap();
        log.wait(c).unwrap();
        log.close().unwrap();
        drop(log);
        assert_eq!(list_segments(&dir.0).unwrap().len(), 1);
        let (_log, got, _) = open(config).unwrap();
        assert_eq!(got, vec![b"snapshot".to_vec(), b"later".to_vec()]);
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused() {
        let dir = Dir::new("lock");
        let (_log, _, _) = open(dir.config(SyncPolicy::Never)).unwrap();
        let e = open(dir.config(SyncPolicy::Never)).err().expect("refused");
        assert!(e.0.contains("in use by another midge"), "{e}");
    }

    #[test]
    fn a_record_that_does_not_decode_is_corruption_naming_the_offset() {
        let dir = Dir::new("undecodable");
        let (log, _, _) = open(dir.config(SyncPolicy::Never)).unwrap();
        log.append(&[b"good", b"bad", b"good"]).unwrap();
        log.close().unwrap();
        drop(log);
        let e = Log::open(dir.config(SyncPolicy::Never), |r| {
            if r == b"bad" {
                Err("unknown record type".into())
            } else {
                Ok(())
            }
        })
        .err()
        .expect("refused");
        assert!(
            e.0.contains("offset 12") && e.0.contains("unknown record type"),
            "{e}"
        );
    }
}
