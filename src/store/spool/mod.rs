//! Spools: the queues of offline and backlogged persistent sessions, on disk.
//!
//! A session whose client is away (or whose queue has grown past what is worth holding
//! in memory) has its new QoS 1/2 messages written to its spool, not kept in memory: a
//! series of files (chunks) named after the session and the queue position of their
//! first entry, each holding entries one after another (see `entry.rs`). What memory
//! keeps per session is the positions held (runs, `ranges.rs`), the packet ids of what
//! was sent, its chunks (a few numbers each) and a small buffer of entries not written
//! yet. When the client is back, the session reads its spool back in order, a batch at a
//! time, as its inflight window makes room.
//!
//! The log stays the durable record: a spooled message is recorded there like any queued
//! one (a Spooled record, after its Message record), and that is what its
//! acknowledgement waits for. Spool files are written without a sync of their own;
//! before a checkpoint lets the older log segments go, the writer syncs the filesystem
//! (see `log::writer`), so whatever the checkpoint leaves out of the log is on disk in a
//! spool. Entries spooled after the last checkpoint are still in the log: at open, the
//! replay hands them over ([`image::Replayed`]) and [`Spools::open`] writes the ones a
//! spool lacks (a crash may have lost its buffer). So a backlog is written twice (log
//! and spool) and never again: a checkpoint writes only where the spool stands, not its
//! entries, and a chunk is deleted, not rewritten, once everything in it is gone.
//!
//! Everything here runs under the durable store's mutex except reading a batch back,
//! which reads the files outside it ([`Spools::plan`], [`read`], [`Spools::advance`]).

pub mod entry;
pub mod image;
pub mod ranges;
mod recover;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::id_hash::IdMap;

use super::record::SessionId;
pub use entry::SpoolItem;
pub use image::{ChunkMeta, SpoolImage};
use ranges::SeqRanges;

/// A new chunk starts once the last one holds this much: a chunk goes only when
/// everything in it is gone, so this is also the most a nearly drained spool keeps.
const CHUNK_BYTES: u64 = 4 * 1024 * 1024;
/// A spool's buffer is written out once it holds this much.
const TAIL_BYTES: usize = 64 * 1024;
/// Above this much in all buffers together, every append writes its buffer out at once:
/// memory stays bounded however many sessions spool.
const TAILS_MAX: usize = 32 * 1024 * 1024;
/// How much one read of a batch takes from a file at most (a larger entry is read whole).
const READ_BYTES: u64 = 1024 * 1024;

/// One session's spool.
#[derive(Debug, Default)]
struct Spool {
    /// Ascending by first position; the last takes appends.
    chunks: VecDeque<Chunk>,
    /// Entries of the last chunk not written yet.
    tail: Vec<u8>,
    /// Where the next batch is read from: the chunk (by its first position) and offset.
    read_at: (u64, u64),
    /// The highest position handed out since the session last started over (0: none).
    loaded_through: u64,
}

#[derive(Debug, Clone, Copy)]
struct Chunk {
    first: u64,
    /// Bytes in the file (the tail comes after them, for the last chunk).
    bytes: u64,
    /// Entries in the file and the tail.
    entries: u64,
    /// Of these, the ones still held (for the size estimate and deletion).
    live: u64,
}

/// Every spool of the store.
#[derive(Debug)]
pub struct Spools {
    dir: PathBuf,
    /// [`CHUNK_BYTES`], lowered by tests.
    pub(in crate::store) chunk_bytes: u64,
    spools: IdMap<SessionId, Spool>,
    /// Bytes in all buffers.
    tails: usize,
    /// Bytes in all files.
    files: u64,
    /// Something was written since the last checkpoint synced the filesystem.
    unsynced: bool,
    /// Chunks nothing is held in any more: deleted once the next checkpoint is durable.
    doomed: Vec<PathBuf>,
}

/// Where a batch is read from, taken under the store's lock and read outside it.
#[derive(Debug)]
pub struct ReadPlan {
    /// Files and byte ranges, in order.
    parts: Vec<(PathBuf, u64, u64, u64)>,
    /// Positions handed out already: skipped.
    after: u64,
    present: SeqRanges,
    sent: Vec<(u64, (u16, bool))>,
}

/// What reading a batch came to.
#[derive(Debug, Default)]
pub struct Batch {
    pub items: Vec<SpoolItem>,
    /// Where the next read starts, and the last position looked at.
    next: Option<((u64, u64), u64)>,
}

impl Spools {
    pub fn new(dir: PathBuf) -> Spools {
        Spools {
            dir,
            chunk_bytes: CHUNK_BYTES,
            spools: IdMap::default(),
            tails: 0,
            files: 0,
            unsynced: false,
            doomed: Vec::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, session: SessionId, first: u64) -> PathBuf {
        chunk_path(&self.dir, session, first)
    }

    /// Appends an encoded entry (`frame`, from [`entry::encode`]) at position `seq`.
    pub fn append(&mut self, session: SessionId, seq: u64, frame: &[u8]) -> Result<(), String> {
        let dir = &self.dir;
        let spool = self.spools.entry(session).or_default();
        let start_new = match spool.chunks.back() {
            None => true,
            Some(c) => c.bytes + spool.tail.len() as u64 >= self.chunk_bytes,
        };
        if start_new {
            let n = flush(dir, session, spool)?;
            self.tails -= n;
            self.files += n as u64;
            self.unsynced |= n > 0;
            spool.chunks.push_back(Chunk {
                first: seq,
                bytes: 0,
                entries: 0,
                live: 0,
            });
        }
        spool.tail.extend_from_slice(frame);
        self.tails += frame.len();
        crate::memory::charge(frame.len());
        if let Some(c) = spool.chunks.back_mut() {
            c.entries += 1;
            c.live += 1;
        }
        if spool.tail.len() >= TAIL_BYTES || self.tails > TAILS_MAX {
            let n = flush(dir, session, spool)?;
            self.tails -= n;
            self.files += n as u64;
            self.unsynced |= n > 0;
        }
        Ok(())
    }

    /// A held entry left the spool (acknowledged, dropped, expired).
    pub fn removed(&mut self, session: SessionId, seq: u64) {
        if let Some(spool) = self.spools.get_mut(&session) {
            let i = spool.chunks.partition_point(|c| c.first <= seq);
            if let Some(c) = i.checked_sub(1).and_then(|i| spool.chunks.get_mut(i)) {
                c.live = c.live.saturating_sub(1);
            }
        }
    }

    /// About how many bytes of its spool a session's held entries take: each chunk's
    /// bytes in proportion to the entries it still holds.
    pub fn held_bytes(&self, session: SessionId) -> u64 {
        self.spools.get(&session).map_or(0, |s| {
            let n = s.chunks.len();
            s.chunks
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let tail = if i + 1 == n { s.tail.len() as u64 } else { 0 };
                    (c.bytes + tail) * c.live / c.entries.max(1)
                })
                .sum()
        })
    }

    /// The session's spool starts over from its first held entry (its client went away
    /// with entries loaded and not acknowledged: they come back from the spool).
    pub fn rewind(&mut self, session: SessionId) {
        if let Some(spool) = self.spools.get_mut(&session) {
            spool.read_at = (spool.chunks.front().map_or(0, |c| c.first), 0);
            spool.loaded_through = 0;
        }
    }

    /// The session is gone: its files go with the next checkpoint.
    pub fn discard(&mut self, session: SessionId) {
        if let Some(spool) = self.spools.remove(&session) {
            self.tails -= spool.tail.len();
            crate::memory::release(spool.tail.len());
            for c in &spool.chunks {
                self.files -= c.bytes;
                self.doomed.push(self.path(session, c.first));
            }
        }
    }

    /// Where the next batch of `session` is read from: its buffer is written out first,
    /// so that everything is in its files. `image` is the session's durable spool state.
    pub fn plan(&mut self, session: SessionId, image: &SpoolImage) -> Result<ReadPlan, String> {
        let dir = self.dir.clone();
        let Some(spool) = self.spools.get_mut(&session) else {
            return Ok(ReadPlan::empty());
        };
        let n = flush(&dir, session, spool)?;
        self.tails -= n;
        self.files += n as u64;
        self.unsynced |= n > 0;
        let (at_chunk, at) = spool.read_at;
        let mut parts = Vec::new();
        let mut budget = READ_BYTES;
        for c in spool.chunks.iter().filter(|c| c.first >= at_chunk) {
            let from = if c.first == at_chunk { at } else { 0 };
            if from >= c.bytes {
                continue;
            }
            let len = (c.bytes - from).min(budget);
            parts.push((chunk_path(&dir, session, c.first), c.first, from, len));
            budget -= len;
            if budget == 0 {
                break;
            }
        }
        Ok(ReadPlan {
            parts,
            after: spool.loaded_through,
            present: image.present.clone(),
            sent: image
                .sent
                .range(spool.loaded_through + 1..)
                .map(|(s, v)| (*s, *v))
                .collect(),
        })
    }

    /// Records how far a batch read (see [`read`]); returns how many held entries are
    /// left to load.
    pub fn advance(&mut self, session: SessionId, batch: &Batch, image: &SpoolImage) -> u64 {
        if let (Some(spool), Some((read_at, through))) = (self.spools.get_mut(&session), batch.next)
        {
            spool.read_at = read_at;
            spool.loaded_through = spool.loaded_through.max(through);
        }
        self.left(session, image)
    }

    /// The first held entry not handed out yet (what `drop_oldest` drops when nothing is
    /// loaded).
    pub fn next_unloaded(&self, session: SessionId, image: &SpoolImage) -> Option<u64> {
        let through = self.spools.get(&session).map_or(0, |s| s.loaded_through);
        image.present.first_above(through)
    }

    /// Held entries not handed out since the session last started over.
    pub fn left(&self, session: SessionId, image: &SpoolImage) -> u64 {
        let through = self.spools.get(&session).map_or(0, |s| s.loaded_through);
        image.present.count_above(through)
    }

    /// Writes every buffer out.
    pub fn flush_all(&mut self) -> Result<(), String> {
        let dir = self.dir.clone();
        for (&session, spool) in self.spools.iter_mut() {
            let n = flush(&dir, session, spool)?;
            self.tails -= n;
            self.files += n as u64;
            self.unsynced |= n > 0;
        }
        Ok(())
    }

    /// Before a checkpoint: writes every buffer out, drops the chunks nothing is held in
    /// any more (their files are deleted once the checkpoint is durable: see
    /// [`Spools::take_doomed`]), and returns whether the filesystem must be synced first.
    pub fn prepare_checkpoint(
        &mut self,
        images: &dyn Fn(SessionId) -> Option<SeqRanges>,
    ) -> Result<bool, String> {
        self.flush_all()?;
        let dir = self.dir.clone();
        let mut doomed = Vec::new();
        for (&session, spool) in self.spools.iter_mut() {
            let present = images(session).unwrap_or_default();
            // A chunk with nothing held goes (the last one too: the next append starts a
            // new one, named after a higher position).
            while let Some(c) = spool.chunks.front() {
                let first = c.first;
                let next = spool.chunks.get(1).map_or(u64::MAX, |n| n.first);
                if present.any_in(first, next - 1) {
                    break;
                }
                doomed.push(chunk_path(&dir, session, first));
                if let Some(c) = spool.chunks.pop_front() {
                    self.files -= c.bytes;
                }
                if spool.read_at.0 < next {
                    spool.read_at = (next, 0);
                }
            }
        }
        self.spools.retain(|_, s| !s.chunks.is_empty());
        self.doomed.extend(doomed);
        Ok(std::mem::take(&mut self.unsynced) || !self.doomed.is_empty())
    }

    /// The chunks of `session` as a checkpoint records them.
    pub fn chunks(&self, session: SessionId) -> Vec<ChunkMeta> {
        self.spools.get(&session).map_or_else(Vec::new, |s| {
            s.chunks
                .iter()
                .map(|c| ChunkMeta {
                    first: c.first,
                    bytes: c.bytes,
                    entries: c.entries,
                })
                .collect()
        })
    }

    /// Files to delete once the checkpoint being written is durable.
    pub fn take_doomed(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.doomed)
    }

    /// Bytes in all spool files (and buffers), and how many files.
    pub fn disk_usage(&self) -> (u64, usize) {
        let files = self.spools.values().map(|s| s.chunks.len()).sum();
        (self.bytes(), files)
    }

    /// Bytes in all spool files and buffers: what counts towards `max_disk_bytes`.
    pub fn bytes(&self) -> u64 {
        self.files + self.tails as u64
    }
}

impl Batch {
    /// Whether reading got anywhere: past at least one entry of the plan.
    pub fn moved(&self, plan: &ReadPlan) -> bool {
        match (self.next, plan.parts.first()) {
            (Some(((chunk, at), _)), Some((_, first, from, _))) => (chunk, at) != (*first, *from),
            _ => false,
        }
    }
}

impl ReadPlan {
    fn empty() -> ReadPlan {
        ReadPlan {
            parts: Vec::new(),
            after: 0,
            present: SeqRanges::default(),
            sent: Vec::new(),
        }
    }
}

/// Reads a batch as `plan` says, outside the store's lock: at most `max` held entries
/// not handed out yet, each with its packet id if it was sent. A file that cannot be
/// read ends the batch there (the entries stay in the spool, and the next batch tries
/// again); a damaged entry is reported and the rest of its chunk skipped.
pub fn read(plan: &ReadPlan, max: usize) -> Batch {
    let mut batch = Batch::default();
    let mut last_seen = plan.after;
    for (path, first, from, len) in &plan.parts {
        let bytes = match read_range(path, *from, *len) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("spool: cannot read {}: {e}", path.display());
                break;
            }
        };
        let mut at = 0;
        while at < bytes.len() {
            let (seq, next) = match entry::peek(&bytes, at) {
                Ok(x) => x,
                // The read ended inside an entry: the next batch starts with it.
                Err(_) if at > 0 || bytes.len() < *len as usize => break,
                Err(why) => {
                    tracing::error!(
                        "spool: {} is damaged at offset {}: {why}; its later entries are \
                         skipped",
                        path.display(),
                        from + at as u64
                    );
                    at = bytes.len();
                    break;
                }
            };
            if seq > plan.after && plan.present.contains(seq) {
                if batch.items.len() >= max {
                    break;
                }
                match entry::decode(&bytes, at) {
                    Ok((mut item, _)) => {
                        item.sent = plan
                            .sent
                            .binary_search_by_key(&seq, |(s, _)| *s)
                            .ok()
                            .map(|i| plan.sent[i].1);
                        batch.items.push(item);
                    }
                    Err(e) => tracing::error!(
                        "spool: entry {seq} in {} does not decode: {e}",
                        path.display()
                    ),
                }
            }
            last_seen = last_seen.max(seq);
            at = next;
        }
        batch.next = Some(((*first, from + at as u64), last_seen));
        if batch.items.len() >= max || at < bytes.len() {
            break;
        }
    }
    batch
}

/// Reads `len` bytes at `from`; if the first entry there is larger, all of it.
fn read_range(path: &Path, from: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    (&mut f).take(len).read_to_end(&mut buf)?;
    if buf.len() >= 4 {
        let need = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as u64
            + super::log::segment::HEADER as u64;
        if need > buf.len() as u64 && need <= super::log::segment::MAX_RECORD as u64 {
            f.take(need - buf.len() as u64).read_to_end(&mut buf)?;
        }
    }
    Ok(buf)
}

/// Writes a spool's buffer to its last chunk; returns the bytes written.
fn flush(dir: &Path, session: SessionId, spool: &mut Spool) -> Result<usize, String> {
    let n = spool.tail.len();
    if n == 0 {
        return Ok(0);
    }
    let Some(chunk) = spool.chunks.back_mut() else {
        return Ok(0);
    };
    let path = chunk_path(dir, session, chunk.first);
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    f.write_all(&spool.tail)
        .map_err(|e| format!("write to {} failed: {e}", path.display()))?;
    chunk.bytes += n as u64;
    crate::memory::release(n);
    // Not kept: a buffer per session that spooled once would stay for good.
    spool.tail = Vec::new();
    Ok(n)
}

pub fn chunk_path(dir: &Path, session: SessionId, first: u64) -> PathBuf {
    dir.join(format!("{session:016x}-{first:016x}.q"))
}

/// The session and first position a spool file's name gives.
pub fn parse_chunk_name(name: &str) -> Option<(SessionId, u64)> {
    let stem = name.strip_suffix(".q")?;
    let (s, f) = stem.split_once('-')?;
    if s.len() != 16 || f.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(s, 16).ok()?,
        u64::from_str_radix(f, 16).ok()?,
    ))
}

#[cfg(test)]
#[path = "spool_tests.rs"]
mod tests;
