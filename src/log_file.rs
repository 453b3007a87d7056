//! The log file of `log_dest = "/path"`: appended to, and reopened on SIGHUP, so that
//! logrotate can move the file away, send SIGHUP, and midge writes a fresh file at the
//! path.
//!
//! Every log line is one `write` under a mutex, so lines never interleave, and a reopen
//! swaps the file between two lines.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

/// A log file shared by every thread that logs; cheap to clone.
#[derive(Clone)]
pub struct LogFile {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    file: Mutex<File>,
}

impl LogFile {
    /// Opens (creating if need be) `path` for appending. The directory must exist.
    pub fn open(path: &Path) -> io::Result<LogFile> {
        Ok(LogFile {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                file: Mutex::new(open_append(path)?),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Opens the path again and writes to the new file from the next line on. On failure
    /// the old file stays in use (and the error is returned, to be logged there).
    pub fn reopen(&self) -> io::Result<()> {
        let fresh = open_append(&self.inner.path)?;
        *self.inner.file.lock() = fresh;
        Ok(())
    }
}

/// How midge opens a log file, here and in `midge check-config`.
pub fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Write for &LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // One log line arrives as one write_all: keep it whole.
        self.inner.file.lock().write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.file.lock().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogFile {
    type Writer = &'a LogFile;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopen_writes_a_fresh_file_after_the_old_one_was_moved() {
        let dir = std::env::temp_dir().join(format!("midge-log-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("midge.log");
        let log = LogFile::open(&path).unwrap();
        (&log).write_all(b"one\n").unwrap();
        let moved = dir.join("midge.log.1");
        std::fs::rename(&path, &moved).unwrap();
        (&log).write_all(b"two\n").unwrap();
        log.reopen().unwrap();
        (&log).write_all(b"three\n").unwrap();
        assert_eq!(std::fs::read_to_string(&moved).unwrap(), "one\ntwo\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");

        // A path that cannot be opened any more: the old file stays in use.
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(log.reopen().is_err());
        (&log).write_all(b"four\n").unwrap();
    }
}
