//! The log's files: the frame format, segment naming, creation, listing and deletion,
//! the directory lock, and reading segments back at open (cutting a torn tail off the
//! last one, reporting damage anywhere else with the file and the offset).

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{LogError, Recovery};

/// Frame header: length and checksum.
pub(in crate::store) const HEADER: usize = 8;
/// A single record larger than this is refused (and a length field claiming more is
/// corruption, not an allocation request).
pub const MAX_RECORD: usize = 512 * 1024 * 1024;
/// How much of a segment recovery reads ahead of the record it hands over.
const READ_BUFFER: usize = 64 * 1024;

/// The last segment, opened for appending, where the writer goes on.
pub(super) struct Tail {
    pub number: u64,
    pub file: File,
    pub size: u64,
}

/// Locks `dir`, hands every record of its segments to `each` in the order written, and
/// opens the last segment (creating the first if there is none) for the writer.
pub(super) fn recover(
    dir: &Path,
    each: &mut impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<(File, Tail, Recovery), LogError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| LogError(format!("cannot create {}: {e}", dir.display())))?;
    let lock = lock_dir(dir)?;
    let segments = list_segments(dir)?;
    let mut recovery = Recovery::default();
    #[cfg(test)]
    {
        recovery.segments = segments.len();
    }
    for (i, (_, path)) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        read_segment(path, last, &mut recovery, each)?;
    }
    let tail = match segments.last() {
        Some((n, path)) => {
            let file = OpenOptions::new()
                .append(true)
                .open(path)
                .map_err(|e| LogError(format!("cannot open {}: {e}", path.display())))?;
            let size = file
                .metadata()
                .map_err(|e| LogError(format!("cannot stat {}: {e}", path.display())))?
                .len();
            Tail {
                number: *n,
                file,
                size,
            }
        }
        None => Tail {
            number: 1,
            file: create_segment(dir, 1)?,
            size: 0,
        },
    };
    Ok((lock, tail, recovery))
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

pub(super) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

pub(super) fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:08}.log"))
}

/// Creates segment `number` and makes its directory entry durable.
pub(super) fn create_segment(dir: &Path, number: u64) -> Result<File, LogError> {
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
pub(super) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
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

/// Deletes the segments before `first` (a checkpoint made them dead). A segment that
/// cannot be deleted is logged and left: it is replayed before the checkpoint, which
/// starts from nothing, so it does no harm but take space.
pub(super) fn delete_before(dir: &Path, first: u64) {
    let Ok(segments) = list_segments(dir) else {
        return;
    };
    for (n, path) in segments {
        if n < first {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!("store: cannot delete {}: {e}", path.display());
            }
        }
    }
    sync_dir(dir);
}

/// Why reading a segment's frames stopped.
enum ScanError {
    Io(std::io::Error),
    /// A frame that does not parse, or whose record `each` refused, at this offset.
    Corrupt(u64, String),
}

/// Hands one segment's records to `each`. In the last segment a bad tail is cut off (a
/// torn write); anywhere else it is corruption.
fn read_segment(
    path: &Path,
    last: bool,
    recovery: &mut Recovery,
    each: &mut impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), LogError> {
    let cannot_read = |e: std::io::Error| LogError(format!("cannot read {}: {e}", path.display()));
    let file = File::open(path).map_err(cannot_read)?;
    let len = file.metadata().map_err(cannot_read)?.len();
    recovery.bytes += len;
    let records = &mut recovery.records;
    let scanned = scan(
        BufReader::with_capacity(READ_BUFFER, file),
        len,
        last,
        |body| {
            each(body)?;
            *records += 1;
            Ok(())
        },
    );
    let at = match scanned {
        Ok(None) => return Ok(()),
        Ok(Some(at)) => at,
        Err(ScanError::Io(e)) => return Err(cannot_read(e)),
        Err(ScanError::Corrupt(at, why)) => {
            return Err(LogError(format!(
                "{}: corrupt record at offset {at} ({why}). The store cannot be loaded; move \
                 the store directory aside to start empty (see docs/durability.md)",
                path.display()
            )))
        }
    };
    let cut = len - at;
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| LogError(format!("cannot open {}: {e}", path.display())))?;
    file.set_len(at)
        .and_then(|()| file.sync_all())
        .map_err(|e| LogError(format!("cannot truncate {}: {e}", path.display())))?;
    recovery.torn = Some((path.to_path_buf(), at, cut));
    recovery.bytes -= cut;
    Ok(())
}

/// Reads the `len` bytes of a segment frame by frame, handing each record to `each` before
/// reading the next, so recovery holds one record at a time, never the whole segment.
/// Returns the offset of a torn tail to cut off (`last` segment only), if there is one.
fn scan<R: Read + Seek>(
    mut reader: R,
    len: u64,
    last: bool,
    mut each: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<Option<u64>, ScanError> {
    let mut body = Vec::new();
    let mut at = 0u64;
    while at < len {
        match next_frame(&mut reader, len - at, &mut body).map_err(ScanError::Io)? {
            Ok(()) => {
                each(&body).map_err(|why| ScanError::Corrupt(at, why))?;
                at += (HEADER + body.len()) as u64;
            }
            Err(why) => {
                if !last {
                    return Err(ScanError::Corrupt(at, why.into()));
                }
                // Torn only if nothing valid follows: a crash cuts the end, it does not
                // damage the middle. Only this rest is read whole, and only when damaged.
                let mut rest = Vec::new();
                reader
                    .seek(SeekFrom::Start(at))
                    .and_then(|_| reader.read_to_end(&mut rest))
                    .map_err(ScanError::Io)?;
                if valid_frame_follows(&rest, 1) {
                    return Err(ScanError::Corrupt(at, why.into()));
                }
                return Ok(Some(at));
            }
        }
    }
    Ok(None)
}

/// Reads the frame the reader is at into `body`, `left` bytes before the end of the
/// segment; the inner error says why the frame does not parse. A length that runs past
/// the end is refused before anything is allocated for it.
fn next_frame(
    reader: &mut impl Read,
    left: u64,
    body: &mut Vec<u8>,
) -> std::io::Result<Result<(), &'static str>> {
    if left < HEADER as u64 {
        return Ok(Err("header cut short"));
    }
    let mut header = [0u8; HEADER];
    reader.read_exact(&mut header)?;
    let (len, crc) = parse_header(&header);
    if let Err(why) = check_len(len) {
        return Ok(Err(why));
    }
    if (len as u64) > left - HEADER as u64 {
        return Ok(Err("record cut short"));
    }
    body.clear();
    body.resize(len, 0);
    reader.read_exact(body)?;
    if crc32fast::hash(body) != crc {
        return Ok(Err("checksum mismatch"));
    }
    Ok(Ok(()))
}

/// Appends a frame whose body `encode` writes to `buf`: the header, then the body.
/// Returns the body's length; an empty or oversized body is taken back out, and its
/// length returned for the caller's error.
pub(in crate::store) fn push_frame(
    buf: &mut Vec<u8>,
    encode: impl FnOnce(&mut Vec<u8>),
) -> Result<usize, usize> {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER]);
    encode(buf);
    let body = &buf[start + HEADER..];
    let len = body.len();
    if check_len(len).is_err() {
        buf.truncate(start);
        return Err(len);
    }
    let crc = crc32fast::hash(body).to_le_bytes();
    buf[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    buf[start + 4..start + HEADER].copy_from_slice(&crc);
    Ok(len)
}

fn parse_header(header: &[u8]) -> (usize, u32) {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    (len, crc)
}

fn check_len(len: usize) -> Result<(), &'static str> {
    // Empty records are never written: a zero-filled region (what some filesystems leave
    // after a crash) must not read as a run of valid empty records.
    if len == 0 || len > MAX_RECORD {
        return Err("length field out of range");
    }
    Ok(())
}

/// The record body at `at` and the offset after it.
pub(in crate::store) fn frame_at(bytes: &[u8], at: usize) -> Result<(&[u8], usize), &'static str> {
    let header = bytes.get(at..at + HEADER).ok_or("header cut short")?;
    let (len, crc) = parse_header(header);
    check_len(len)?;
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
    use super::super::tests::{open, records, Dir};
    use super::super::{Log, SyncPolicy};
    use super::*;

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

    /// A reader that counts the bytes it has handed out.
    struct Counting<'a> {
        inner: std::io::Cursor<Vec<u8>>,
        read: &'a std::cell::Cell<u64>,
    }
    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read.set(self.read.get() + n as u64);
            Ok(n)
        }
    }
    impl Seek for Counting<'_> {
        fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
            self.inner.seek(to)
        }
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn a_segment_is_read_record_by_record_not_whole() {
        let mut segment = Vec::new();
        for i in 0..1000 {
            segment.extend_from_slice(&frame(
                format!("record-{i:04}-{}", "x".repeat(80)).as_bytes(),
            ));
        }
        let len = segment.len() as u64;
        let read = std::cell::Cell::new(0);
        let reader = BufReader::with_capacity(
            256,
            Counting {
                inner: std::io::Cursor::new(segment),
                read: &read,
            },
        );
        let mut at = 0u64;
        let mut n = 0;
        let torn = scan(reader, len, true, |body| {
            at += (HEADER + body.len()) as u64;
            n += 1;
            // Never more read than this record and one buffer beyond it.
            assert!(read.get() <= at + 256, "{} read at record {n}", read.get());
            Ok(())
        });
        assert!(matches!(torn, Ok(None)));
        assert_eq!(n, 1000);
        assert_eq!(read.get(), len);
    }

    /// What recovery decided when it read a whole segment into memory: the records up to
    /// the first bad frame, and then a torn tail, corruption, or neither.
    fn whole_segment(bytes: &[u8], last: bool) -> (Vec<Vec<u8>>, Result<Option<u64>, u64>) {
        let mut got = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            match frame_at(bytes, at) {
                Ok((body, next)) => {
                    got.push(body.to_vec());
                    at = next;
                }
                Err(_) if last && !valid_frame_follows(bytes, at + 1) => {
                    return (got, Ok(Some(at as u64)))
                }
                Err(_) => return (got, Err(at as u64)),
            }
        }
        (got, Ok(None))
    }

    #[test]
    fn reading_record_by_record_decides_as_reading_the_whole_segment_did() {
        let mut rng = crate::testing::XorShift(0x5EED_1065);
        for case in 0..2000 {
            let mut bytes = Vec::new();
            for i in 0..1 + rng.below(8) {
                bytes.extend_from_slice(&frame(&vec![i as u8 + 1; 1 + rng.below(40)]));
            }
            // Damage: flip a byte, cut the end, or append garbage (or several).
            for _ in 0..rng.below(3) {
                match rng.below(3) {
                    0 if !bytes.is_empty() => {
                        let i = rng.below(bytes.len());
                        bytes[i] ^= 1 + rng.below(255) as u8;
                    }
                    1 => bytes.truncate(rng.below(bytes.len() + 1)),
                    _ => bytes.extend((0..rng.below(20)).map(|_| rng.below(256) as u8)),
                }
            }
            let last = rng.below(2) == 0;
            let (want, outcome) = whole_segment(&bytes, last);
            let mut got = Vec::new();
            let scanned = scan(
                std::io::Cursor::new(bytes.clone()),
                bytes.len() as u64,
                last,
                |body| {
                    got.push(body.to_vec());
                    Ok(())
                },
            );
            let scanned = match scanned {
                Ok(torn) => Ok(torn),
                Err(ScanError::Corrupt(at, _)) => Err(at),
                Err(ScanError::Io(e)) => panic!("case {case}: {e}"),
            };
            assert_eq!(scanned, outcome, "case {case}: {bytes:?}");
            assert_eq!(got, want, "case {case}");
        }
    }
}
