//! The log's writer thread: it takes everything appended while it was busy (group
//! commit), writes it with one `write`, syncs per the [`SyncPolicy`], rotates segments,
//! publishes the highest durable commit and runs the wakers waiting for it. When a write
//! or sync fails it marks every commit not yet durable lost, stops appends, and cuts the
//! failed write off the segment so that the store can resume with a checkpoint.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::segment::{create_segment, delete_before, segment_path, Tail};
use super::{CheckpointFiles, LogConfig, LogError, PendingCell, Shared, SyncPolicy, Waker};

/// The writer's buffer is given back to the allocator after a write larger than this (a
/// checkpoint of a big backlog), so a one-off burst does not stay resident.
const KEEP_BUFFER: usize = 16 * 1024 * 1024;

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

/// Starts the writer thread, appending to `tail`.
pub(super) fn start(
    config: &LogConfig,
    tail: Tail,
    shared: Arc<Shared>,
    cell: Arc<PendingCell>,
) -> Result<JoinHandle<()>, LogError> {
    let writer = Writer {
        dir: config.dir.clone(),
        sync: config.sync,
        segment_bytes: config.segment_bytes,
        number: tail.number,
        file: tail.file,
        size: tail.size,
        last_sync: Instant::now(),
        unsynced: false,
        shared,
        cell,
    };
    std::thread::Builder::new()
        .name("midge-store".into())
        .spawn(move || writer.run())
        .map_err(|e| LogError(format!("cannot start the store writer: {e}")))
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
                let checkpoint = p
                    .checkpoint
                    .take()
                    .map(|at| (at, std::mem::take(&mut p.checkpoint_files)));
                (p.commit, checkpoint, p.closing)
            };
            let result = self.write(&buf, checkpoint, closing);
            if result.is_ok() && !buf.is_empty() {
                let stats = &self.shared.stats;
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats.batch_bytes.observe(buf.len() as f64);
            }
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
                        event = "store_failed",
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
        self.shared.stats.failures.fetch_add(1, Ordering::Relaxed);
        let mut p = self.cell.0.lock();
        let from = self.shared.durable.load(Ordering::Acquire) + 1;
        if p.commit >= from {
            self.shared.lost.lock().push((from, p.commit));
            self.shared.any_lost.store(true, Ordering::Release);
        }
        p.buf.clear();
        p.checkpoint = None;
        p.checkpoint_files = CheckpointFiles::default();
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
        checkpoint: Option<(usize, CheckpointFiles)>,
        force_sync: bool,
    ) -> Result<(), String> {
        let Some((at, files)) = checkpoint else {
            return self.write_part(bytes, force_sync);
        };
        self.write_part(&bytes[..at], false)?;
        if let Some(dir) = files.sync_first.filter(|_| self.sync != SyncPolicy::Never) {
            sync_filesystem(&dir)?;
        }
        self.rotate()?;
        let first = self.number;
        self.write_part(&bytes[at..], true)?;
        delete_before(&self.dir, first);
        for path in files.delete_after {
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("store: cannot delete {}: {e}", path.display());
                }
            }
        }
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
        let started = Instant::now();
        self.file
            .sync_data()
            .map_err(|e| format!("fsync of {} failed: {e}", self.path().display()))?;
        self.last_sync = Instant::now();
        self.shared
            .stats
            .fsync_seconds
            .observe(self.last_sync.duration_since(started).as_secs_f64());
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

    fn path(&self) -> PathBuf {
        segment_path(&self.dir, self.number)
    }
}

/// Syncs the filesystem `dir` is on: every file written there (the spools, hundreds of
/// them) reaches the disk in one call rather than one fsync each.
fn sync_filesystem(dir: &std::path::Path) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let d = std::fs::File::open(dir).map_err(|e| format!("cannot open {}: {e}", dir.display()))?;
    // SAFETY: `syncfs` takes a file descriptor and nothing else; `d` keeps it open for
    // the whole call.
    let r = unsafe { libc::syncfs(d.as_raw_fd()) };
    if r != 0 {
        return Err(format!(
            "syncing the filesystem of {} failed: {}",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::segment::list_segments;
    use super::super::tests::{open, records, Dir};
    use super::super::SyncPolicy;
    use std::time::Duration;

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
        // Always: the checkpoint syncs the filesystem of `sync_first` (the `syncfs` call).
        let mut config = dir.config(SyncPolicy::Always);
        config.segment_bytes = 100;
        let (log, _, _) = open(config.clone()).unwrap();
        for r in records(20) {
            let c = log.append(&[&r[..]]).unwrap();
            log.wait(c).unwrap();
        }
        assert!(list_segments(&dir.0).unwrap().len() > 2);
        let doomed = dir.0.join("doomed.q");
        std::fs::write(&doomed, b"x").unwrap();
        let files = super::CheckpointFiles {
            sync_first: Some(dir.0.clone()),
            delete_after: vec![doomed.clone()],
        };
        let c = log
            .checkpoint_with(files, |f| f.record(|b| b.extend_from_slice(b"snapshot")))
            .unwrap();
        log.append(&[b"later"]).unwrap();
        log.wait(c).unwrap();
        log.close().unwrap();
        drop(log);
        assert_eq!(list_segments(&dir.0).unwrap().len(), 1);
        assert!(!doomed.exists(), "deleted once the checkpoint is durable");
        let (_log, got, _) = open(config).unwrap();
        assert_eq!(got, vec![b"snapshot".to_vec(), b"later".to_vec()]);
    }
}
