//! What the durable state knows of one session's spool: which queue positions it still
//! holds, which of them were sent (with their packet ids), and its files as of the last
//! checkpoint. Nothing per message is kept in memory except what is in flight.

use std::collections::BTreeMap;

use crate::message::SharedMessage;

use super::ranges::SeqRanges;

/// A spool file as a checkpoint saw it (see [`SpoolImage::chunks`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMeta {
    /// The queue position of its first entry: what the file is named after.
    pub first: u64,
    /// Bytes written to it (and synced) when the checkpoint was taken.
    pub bytes: u64,
    /// Entries in those bytes.
    pub entries: u64,
}

/// A spooled entry replayed from the log (its records came after the last checkpoint):
/// the spool file may not have it yet, and the store writes it there at open.
#[derive(Debug, Clone)]
pub struct Replayed {
    pub seq: u64,
    pub message: SharedMessage,
    pub qos: u8,
    pub retain: bool,
    pub sub_ids: Vec<u32>,
    pub shared: Option<std::sync::Arc<str>>,
}

#[derive(Debug, Clone, Default)]
pub struct SpoolImage {
    /// Queue positions still held (spooled and not removed).
    pub present: SeqRanges,
    /// The highest position ever spooled, held or not: positions only go up, across
    /// restarts too, so that a file never holds two entries of one position (the
    /// session numbers its queue after it; see `SessionState::restore_spool`).
    pub last: u64,
    /// Held entries that were sent: packet id, and for QoS 2 whether PUBREC came.
    pub sent: BTreeMap<u64, (u16, bool)>,
    /// The files as of the checkpoint this image was read from (empty while running: the
    /// store's `Spools` knows the files then).
    pub chunks: Vec<ChunkMeta>,
    /// While replaying: entries spooled since that checkpoint.
    pub replayed: Vec<Replayed>,
    /// About how many bytes the held entries take in the files, as found at open (for
    /// the session's count; not kept up to date while running).
    pub bytes_at_open: u64,
}

impl PartialEq for SpoolImage {
    fn eq(&self, other: &SpoolImage) -> bool {
        self.present == other.present && self.sent == other.sent && self.last == other.last
    }
}

impl Eq for SpoolImage {}

impl SpoolImage {
    /// Records a spooled position; false if it does not come after the ones held (a
    /// record replayed twice).
    pub fn push(&mut self, seq: u64) -> bool {
        if seq <= self.last || !self.present.push(seq) {
            return false;
        }
        self.last = seq;
        true
    }

    pub fn holds(&self, seq: u64) -> bool {
        self.present.contains(seq)
    }

    pub fn sent(&mut self, seq: u64, pkid: u16) -> bool {
        if !self.holds(seq) {
            return false;
        }
        self.sent.insert(seq, (pkid, false));
        true
    }

    pub fn released(&mut self, seq: u64) -> bool {
        match self.sent.get_mut(&seq) {
            Some(s) => {
                s.1 = true;
                true
            }
            None => false,
        }
    }

    pub fn remove(&mut self, seq: u64) -> bool {
        if !self.present.remove(seq) {
            return false;
        }
        self.sent.remove(&seq);
        true
    }
}
