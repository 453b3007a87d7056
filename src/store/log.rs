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
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Frame header: length and checksum.
const HEADER: usize = 8;
/// A single record larger than this is refused (and a length field claiming more is
/// corruption, not an allocation request).
pub const MAX_RECORD: usize = 512 * 1024 * 1024;

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
    /// Every record, in the order written.
    pub records: Vec<Vec<u8>>,
    pub segments: usize,
    /// Bytes cut off the end of the last segment (a write torn by a crash), and where.
    pub torn: Option<(PathBuf, u64, u64)>,
}

/// Commit numbers: everything appended with a number at or below
/// [`Log::durable`] is on disk (per the sync policy).
pub type Commit = u64;

type Callback = Box<dyn FnOnce() + Send>;

enum Cmd {
    Append {
        frames: Vec<u8>,
        commit: Commit,
        done: Option<Callback>,
    },
    /// Write and sync everything before it, then stop.
    Close,
}

struct Shared {
    durable: AtomicU64,
    /// The first write or sync error; once set, nothing more is acknowledged.
    failed: Mutex<Option<String>>,
    lock: Mutex<()>,
    cond: Condvar,
}

pub struct Log {
    tx: mpsc::Sender<Cmd>,
    /// Assigns commit numbers; held while sending so numbers reach the writer in order.
    next: Mutex<Commit>,
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

impl Log {
    /// Opens (creating if need be) the log in `config.dir`, recovers its records and
    /// starts the writer thread.
    pub fn open(config: LogConfig) -> Result<(Log, Recovery), LogError> {
        let dir = &config.dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| LogError(format!("cannot create {}: {e}", dir.display())))?;
        let segments = list_segments(dir)?;
        let mut recovery = Recovery {
            segments: segments.len(),
            ..Recovery::default()
        };
        for (i, (_, path)) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            read_segment(path, last, &mut recovery)?;
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
            lock: Mutex::new(()),
            cond: Condvar::new(),
        });
        let (tx, rx) = mpsc::channel();
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
        };
        let handle = std::thread::Builder::new()
            .name("midge-store".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| LogError(format!("cannot start the store writer: {e}")))?;
        Ok((
            Log {
                tx,
                next: Mutex::new(0),
                shared,
                writer: Some(handle),
            },
            recovery,
        ))
    }

    /// Appends `records` as one commit and returns its number at once; `done` runs on the
    /// writer thread once the commit is durable (not at all if the log has failed).
    pub fn append(&self, records: &[&[u8]], done: Option<Callback>) -> Result<Commit, LogError> {
        if let Some(e) = self.shared.failed.lock().as_ref() {
            return Err(LogError(e.clone()));
        }
        let mut frames = Vec::with_capacity(records.iter().map(|r| r.len() + HEADER).sum());
        for r in records {
            if r.is_empty() || r.len() > MAX_RECORD {
                return Err(LogError(format!(
                    "record of {} bytes cannot be stored",
                    r.len()
                )));
            }
            frames.extend_from_slice(&(r.len() as u32).to_le_bytes());
            frames.extend_from_slice(&crc32fast::hash(r).to_le_bytes());
            frames.extend_from_slice(r);
        }
        let mut next = self.next.lock();
        *next += 1;
        let commit = *next;
        self.tx
            .send(Cmd::Append {
                frames,
                commit,
                done,
            })
            .map_err(|_| LogError("the store writer has stopped".into()))?;
        Ok(commit)
    }

    /// The highest commit that is durable.
    pub fn durable(&self) -> Commit {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// The error that stopped the log, if one did.
    pub fn failure(&self) -> Option<String> {
        self.shared.failed.lock().clone()
    }

    /// Blocks until `commit` is durable or the log has failed.
    pub fn wait(&self, commit: Commit) -> Result<(), LogError> {
        let mut guard = self.shared.lock.lock();
        loop {
            if let Some(e) = self.failure() {
                return Err(LogError(e));
            }
            if self.durable() >= commit {
                return Ok(());
            }
            self.shared
                .cond
                .wait_for(&mut guard, Duration::from_millis(100));
        }
    }

    /// Writes and syncs everything appended so far and stops the writer.
    pub fn close(mut self) -> Result<(), LogError> {
        let _ = self.tx.send(Cmd::Close);
        if let Some(h) = self.writer.take() {
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
        if let Some(h) = self.writer.take() {
            let _ = self.tx.send(Cmd::Close);
            let _ = h.join();
        }
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
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        let mut buf = Vec::new();
        let mut callbacks: Vec<Callback> = Vec::new();
        loop {
            // In interval mode an idle log still gets its last writes synced in time.
            let first = match self.sync {
                SyncPolicy::Interval(d) if self.unsynced => match rx.recv_timeout(d) {
                    Ok(cmd) => Some(cmd),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => Some(Cmd::Close),
                },
                _ => Some(rx.recv().unwrap_or(Cmd::Close)),
            };
            let mut closing = false;
            let mut high = 0;
            // Group commit: everything that queued up while the last sync ran.
            let mut next = first;
            while let Some(cmd) = next.take() {
                match cmd {
                    Cmd::Append {
                        frames,
                        commit,
                        done,
                    } => {
                        buf.extend_from_slice(&frames);
                        high = commit;
                        callbacks.extend(done);
                    }
                    Cmd::Close => closing = true,
                }
                if !closing {
                    next = rx.try_recv().ok();
                }
            }
            let result = self.write(&buf, closing);
            buf.clear();
            match result {
                Ok(()) => {
                    if high > 0 {
                        self.shared.durable.fetch_max(high, Ordering::AcqRel);
                    }
                    for cb in callbacks.drain(..) {
                        cb();
                    }
                }
                Err(e) => {
                    tracing::error!("store: {e}; nothing more will be acknowledged");
                    *self.shared.failed.lock() = Some(e);
                    callbacks.clear();
                }
            }
            {
                let _guard = self.shared.lock.lock();
                self.shared.cond.notify_all();
            }
            if closing || self.shared.failed.lock().is_some() {
                return;
            }
        }
    }

    /// Writes `bytes` (starting a new segment first if the current one is full) and syncs
    /// as the policy says; `force_sync` syncs anyway (closing).
    fn write(&mut self, bytes: &[u8], force_sync: bool) -> Result<(), String> {
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
            self.file
                .sync_data()
                .map_err(|e| format!("fsync of {} failed: {e}", self.path().display()))?;
            self.last_sync = Instant::now();
            self.unsynced = false;
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), String> {
        if self.unsynced {
            self.file
                .sync_data()
                .map_err(|e| format!("fsync of {} failed: {e}", self.path().display()))?;
            self.unsynced = false;
        }
        self.number += 1;
        self.file = create_segment(&self.dir, self.number).map_err(|e| e.0)?;
        self.size = 0;
        Ok(())
    }

    fn path(&self) -> PathBuf {
        segment_path(&self.dir, self.number)
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
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
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

/// Reads one segment's records into `recovery`. In the last segment a bad tail is cut
/// off (a torn write); anywhere else it is corruption.
fn read_segment(path: &Path, last: bool, recovery: &mut Recovery) -> Result<(), LogError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| LogError(format!("cannot read {}: {e}", path.display())))?;
    let mut at = 0usize;
    while at < bytes.len() {
        match frame_at(&bytes, at) {
            Ok((body, next)) => {
                recovery.records.push(body.to_vec());
                at = next;
            }
            Err(why) => {
                // Torn only if nothing valid follows: a crash cuts the end, it does not
                // damage the middle.
                let tail_is_torn = last && !valid_frame_follows(&bytes, at + 1);
                if !tail_is_torn {
                    return Err(LogError(format!(
                        "{}: corrupt record at offset {at} ({why}). The store cannot be \
                         loaded; move the store directory aside to start empty (see README, \
                         \"Durability\")",
                        path.display()
                    )));
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

    #[test]
    fn appended_records_come_back_in_order_after_reopen() {
        let dir = Dir::new("order");
        let (log, rec) = Log::open(dir.config(SyncPolicy::Always)).unwrap();
        assert!(rec.records.is_empty());
        let rs = records(100);
        let mut last = 0;
        for chunk in rs.chunks(7) {
            let refs: Vec<&[u8]> = chunk.iter().map(|r| &r[..]).collect();
            last = log.append(&refs, None).unwrap();
        }
        log.wait(last).unwrap();
        assert!(log.durable() >= last);
        log.close().unwrap();
        let (_log, rec) = Log::open(dir.config(SyncPolicy::Always)).unwrap();
        assert_eq!(rec.records, rs);
        assert!(rec.torn.is_none());
    }

    #[test]
    fn many_writers_share_syncs_and_every_callback_runs_once_durable() {
        let dir = Dir::new("group");
        let (log, _) = Log::open(dir.config(SyncPolicy::Always)).unwrap();
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
                        let c = log
                            .append(
                                &[body.as_bytes()],
                                Some(Box::new(move || {
                                    d.fetch_add(1, Ordering::Relaxed);
                                })),
                            )
                            .unwrap();
                        log.wait(c).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(done.load(Ordering::Relaxed), 1600);
        let log = Arc::into_inner(log).unwrap();
        log.close().unwrap();
        let (_log, rec) = Log::open(dir.config(SyncPolicy::Never)).unwrap();
        assert_eq!(rec.records.len(), 1600);
    }

    #[test]
    fn segments_rotate_and_are_read_in_order() {
        let dir = Dir::new("rotate");
        let mut config = dir.config(SyncPolicy::Never);
        config.segment_bytes = 200;
        let (log, _) = Log::open(config.clone()).unwrap();
        let rs = records(50);
        for r in &rs {
            // One write each (waiting), so the size check runs between them.
            let c = log.append(&[&r[..]], None).unwrap();
            log.wait(c).unwrap();
        }
        log.close().unwrap();
        let (_log, rec) = Log::open(config).unwrap();
        assert!(rec.segments > 3, "{} segments", rec.segments);
        assert_eq!(rec.records, rs);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_reported() {
        let dir = Dir::new("torn");
        let (log, _) = Log::open(dir.config(SyncPolicy::Always)).unwrap();
        for r in records(10) {
            log.append(&[&r[..]], None).unwrap();
        }
        log.close().unwrap();
        let seg = segment_path(&dir.0, 1);
        let full = std::fs::metadata(&seg).unwrap().len();
        // A crash in the middle of the last record's write.
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(full - 3).unwrap();
        drop(f);
        let (log, rec) = Log::open(dir.config(SyncPolicy::Always)).unwrap();
        assert_eq!(rec.records, records(9));
        let (path, at, cut) = rec.torn.expect("torn tail reported");
        assert_eq!(path, seg);
        assert_eq!(at + cut, full - 3);
        // Appending after recovery continues cleanly.
        let c = log.append(&[b"after"], None).unwrap();
        log.wait(c).unwrap();
        log.close().unwrap();
        let (_log, rec) = Log::open(dir.config(SyncPolicy::Always)).unwrap();
        assert_eq!(rec.records.len(), 10);
        assert_eq!(rec.records[9], b"after");
    }

    #[test]
    fn corruption_in_the_middle_stops_the_open_naming_file_and_offset() {
        let dir = Dir::new("corrupt");
        let (log, _) = Log::open(dir.config(SyncPolicy::Always)).unwrap();
        for r in records(10) {
            log.append(&[&r[..]], None).unwrap();
        }
        log.close().unwrap();
        let seg = segment_path(&dir.0, 1);
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[HEADER + 2] ^= 0xFF; // inside the first record's body
        std::fs::write(&seg, &bytes).unwrap();
        let e = Log::open(dir.config(SyncPolicy::Always))
            .err()
            .expect("refused");
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
        let (_log, rec) = Log::open(dir.config(SyncPolicy::Never)).unwrap();
        assert!(rec.records.is_empty());
        assert!(rec.torn.is_some());
    }

    #[test]
    fn interval_sync_marks_commits_durable_after_the_write() {
        let dir = Dir::new("interval");
        let (log, _) =
            Log::open(dir.config(SyncPolicy::Interval(Duration::from_millis(20)))).unwrap();
        let c = log.append(&[b"x"], None).unwrap();
        log.wait(c).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        log.close().unwrap();
        let (_log, rec) = Log::open(dir.config(SyncPolicy::Never)).unwrap();
        assert_eq!(rec.records, vec![b"x".to_vec()]);
    }
}
