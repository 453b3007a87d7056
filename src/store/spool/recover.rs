//! Opening the spools after a stop or a crash: the files are matched with what the
//! replayed state says each session holds, and what a crash took from them is written
//! again from the log.
//!
//! Only what was written after the last checkpoint is read: the checkpoint recorded each
//! chunk's length when it synced them, so a spool's older bytes are known good and are
//! not touched. Start-up reads follow the traffic since that checkpoint, not the
//! backlog.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::codec;
use crate::id_hash::IdMap;
use crate::message::DeliveryProps;

use super::super::record::SessionId;
use super::{chunk_path, entry, parse_chunk_name, Chunk, Spool, SpoolImage, Spools};

/// What reading a chunk from an offset found.
struct Scan {
    /// Where the valid entries end.
    end: u64,
    entries: u64,
    last_seq: Option<u64>,
}

impl Spools {
    /// Opens the spools in `dir` (created if missing) for the sessions of `images`, the
    /// replayed state: checks the files written since the last checkpoint, cuts off a
    /// torn last entry, writes the entries the log has and the spool lacks, and deletes
    /// files no session holds anything in. Their replayed entries are let go.
    pub fn open(dir: &Path, images: Vec<(SessionId, &mut SpoolImage)>) -> Result<Spools, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut files: IdMap<SessionId, BTreeMap<u64, u64>> = IdMap::default();
        let listing =
            std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        for e in listing.flatten() {
            let name = e.file_name();
            let Some((session, first)) = name.to_str().and_then(parse_chunk_name) else {
                continue;
            };
            let len = e.metadata().map_or(0, |m| m.len());
            files.entry(session).or_default().insert(first, len);
        }
        let mut spools = Spools::new(dir.to_path_buf());
        for (session, image) in images {
            let on_disk = files.remove(&session).unwrap_or_default();
            let mut spool = Spool::default();
            let mut highest = None;
            let known: BTreeMap<u64, (u64, u64)> = image
                .chunks
                .iter()
                .map(|c| (c.first, (c.bytes, c.entries)))
                .collect();
            let last_known = known.keys().next_back().copied();
            for (&first, &len) in &on_disk {
                let path = chunk_path(dir, session, first);
                let (from, entries) = match known.get(&first) {
                    Some(&(bytes, entries)) if bytes <= len => (bytes, entries),
                    // Shorter than the checkpoint saw it (a filesystem that lost synced
                    // data): read what is there.
                    Some(_) => (0, 0),
                    None if last_known.is_none_or(|l| first > l) => (0, 0),
                    // Before the checkpoint's chunks: one it let go.
                    None => {
                        remove(&path);
                        continue;
                    }
                };
                let scan = scan(&path, from)?;
                if scan.end < len {
                    tracing::warn!(
                        "spool: {} ends in a torn entry at {}; cut off (the log has it)",
                        path.display(),
                        scan.end
                    );
                    truncate(&path, scan.end)?;
                }
                if scan.last_seq.is_some() {
                    highest = scan.last_seq;
                }
                spools.files += scan.end;
                spool.chunks.push_back(Chunk {
                    first,
                    bytes: scan.end,
                    entries: entries + scan.entries,
                    live: 0,
                });
            }
            for (i, c) in image.chunks.iter().enumerate() {
                let last = image.chunks.get(i + 1).map_or(u64::MAX, |n| n.first - 1);
                if !on_disk.contains_key(&c.first) && image.present.any_in(c.first, last) {
                    tracing::error!(
                        "spool: {} is missing; what it held cannot be delivered",
                        chunk_path(dir, session, c.first).display()
                    );
                }
            }
            spools.spools.insert(session, spool);
            // Spooled after the checkpoint, held, and not in the files: written now.
            let replayed = std::mem::take(&mut image.replayed);
            image.chunks = Vec::new();
            let mut frame = Vec::new();
            for r in replayed {
                if highest.is_some_and(|h| r.seq <= h) || !image.present.contains(r.seq) {
                    continue;
                }
                let Some(qos) = codec::qos_from_u8(r.qos) else {
                    continue;
                };
                let extra = DeliveryProps::boxed(r.sub_ids, r.shared);
                frame.clear();
                if entry::encode(
                    &mut frame,
                    r.seq,
                    &r.message,
                    qos,
                    r.retain,
                    extra.as_deref(),
                )
                .is_some()
                {
                    spools.append(session, r.seq, &frame)?;
                }
            }
            if let Some(spool) = spools.spools.get_mut(&session) {
                let n = spool.chunks.len();
                for i in 0..n {
                    let first = spool.chunks[i].first;
                    let last = spool.chunks.get(i + 1).map_or(u64::MAX, |c| c.first - 1);
                    spool.chunks[i].live = count_in(&image.present, first, last);
                }
                spool.read_at = (spool.chunks.front().map_or(0, |c| c.first), 0);
            }
            image.bytes_at_open = spools.held_bytes(session);
        }
        // Files of sessions the state does not hold.
        for (session, chunks) in files {
            for first in chunks.keys() {
                remove(&chunk_path(dir, session, *first));
            }
        }
        spools.flush_all()?;
        Ok(spools)
    }
}

fn count_in(present: &super::ranges::SeqRanges, first: u64, last: u64) -> u64 {
    present.count_above(first.saturating_sub(1)) - present.count_above(last)
}

fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!("spool: cannot delete {}: {e}", path.display());
    }
}

fn truncate(path: &Path, len: u64) -> Result<(), String> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len))
        .map_err(|e| format!("cannot cut {} at {len}: {e}", path.display()))
}

/// Reads a chunk from `from` to its end, entry by entry (a block at a time), to where its
/// valid entries end.
fn scan(path: &Path, from: u64) -> Result<Scan, String> {
    let fail = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let mut f = File::open(path).map_err(fail)?;
    f.seek(SeekFrom::Start(from)).map_err(fail)?;
    let mut out = Scan {
        end: from,
        entries: 0,
        last_seq: None,
    };
    let mut buf = Vec::new();
    let mut block = vec![0u8; 1024 * 1024];
    loop {
        let n = f.read(&mut block).map_err(fail)?;
        buf.extend_from_slice(&block[..n]);
        let mut at = 0;
        while let Ok((seq, next)) = entry::peek(&buf, at) {
            out.entries += 1;
            out.last_seq = Some(seq);
            at = next;
        }
        out.end += at as u64;
        buf.drain(..at);
        if n == 0 {
            return Ok(out);
        }
    }
}
