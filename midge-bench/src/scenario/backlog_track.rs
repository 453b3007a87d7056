//! What the offline-backlog scenario counts: which messages the broker acknowledged to
//! the publishers (per stream: a publisher's sequence of messages for one session, or for
//! all of them in the fan-out shape), and which of them each session received, how often,
//! in what order. One bit per message, never the messages themselves.

/// A set of sequence numbers `0..len`, one bit each.
#[derive(Debug, Clone, Default)]
pub struct Bits {
    words: Vec<u64>,
    len: u64,
    count: u64,
}

impl Bits {
    pub fn new(len: u64) -> Bits {
        Bits {
            words: vec![0; len.div_ceil(64) as usize],
            len,
            count: 0,
        }
    }

    /// Adds `i`; false if it was already there (or is out of range).
    #[inline]
    pub fn insert(&mut self, i: u64) -> bool {
        if i >= self.len {
            return false;
        }
        let (w, b) = ((i / 64) as usize, 1u64 << (i % 64));
        if self.words[w] & b != 0 {
            return false;
        }
        self.words[w] |= b;
        self.count += 1;
        true
    }

    #[inline]
    pub fn contains(&self, i: u64) -> bool {
        i < self.len && self.words[(i / 64) as usize] & (1u64 << (i % 64)) != 0
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Members of `self` that `other` lacks.
    pub fn missing_from(&self, other: &Bits) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(k, &w)| u64::from((w & !other.words.get(k).copied().unwrap_or(0)).count_ones()))
            .sum()
    }
}

/// Where the messages go: each session its own (`backlog/<i>`, stream `i` of `per`
/// messages), or every message to every session (`backlog/all`, one stream per
/// publisher).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub sessions: usize,
    pub publishers: usize,
    /// Messages published in all.
    pub published: u64,
    pub fanout: bool,
}

impl Shape {
    /// `total` queued messages (deliveries owed) over `sessions`, `pubs` publishers at most.
    pub fn new(sessions: usize, total: u64, pubs: usize, fanout: bool) -> Shape {
        let sessions = sessions.max(1);
        let per = (total / sessions as u64).max(1);
        let published = if fanout { per } else { per * sessions as u64 };
        let publishers = if fanout {
            pubs.clamp(1, per as usize)
        } else {
            pubs.clamp(1, sessions)
        };
        Shape {
            sessions,
            publishers,
            published,
            fanout,
        }
    }

    /// Deliveries owed when every published message is acknowledged.
    pub fn queued(&self) -> u64 {
        if self.fanout {
            self.published * self.sessions as u64
        } else {
            self.published
        }
    }

    pub fn streams(&self) -> usize {
        if self.fanout {
            self.publishers
        } else {
            self.sessions
        }
    }

    /// Messages of stream `s`.
    pub fn stream_len(&self, s: usize) -> u64 {
        if self.fanout {
            let p = self.publishers as u64;
            self.published / p + u64::from((s as u64) < self.published % p)
        } else {
            self.published / self.sessions as u64
        }
    }

    /// The streams publisher `p` sends: fan-in, the sessions `p, p + P, ...`; fan-out, its
    /// own.
    pub fn streams_of(&self, p: usize) -> Vec<usize> {
        if self.fanout {
            vec![p]
        } else {
            (p..self.sessions).step_by(self.publishers).collect()
        }
    }

    /// The streams session `i` receives (contiguous).
    pub fn streams_for(&self, i: usize) -> std::ops::Range<usize> {
        if self.fanout {
            0..self.publishers
        } else {
            i..i + 1
        }
    }

    pub fn topic(&self, stream: usize) -> String {
        if self.fanout {
            "backlog/all".into()
        } else {
            format!("backlog/{stream}")
        }
    }
}

/// What one session received after the restart.
#[derive(Debug, Clone, Default)]
pub struct SessionTrack {
    first_stream: usize,
    seen: Vec<Bits>,
    /// Per stream: one past the highest sequence number received.
    next: Vec<u64>,
    pub received: u64,
    /// Received again (any flags).
    pub dups: u64,
    /// Of those, sent with the DUP flag (a QoS 1 redelivery the protocol allows).
    pub dups_flagged: u64,
    /// First deliveries below a sequence number already received from the same stream.
    pub out_of_order: u64,
    /// Messages of no stream of this session (or without our header).
    pub foreign: u64,
    /// First deliveries of messages the broker had acknowledged.
    pub acked_delivered: u64,
    pub first_ns: u64,
    pub last_ns: u64,
}

impl SessionTrack {
    pub fn new(shape: &Shape, session: usize) -> SessionTrack {
        let r = shape.streams_for(session);
        SessionTrack {
            first_stream: r.start,
            seen: r.clone().map(|s| Bits::new(shape.stream_len(s))).collect(),
            next: vec![0; r.len()],
            ..SessionTrack::default()
        }
    }

    /// Counts one delivery; true if it is the first of a message in `acked`.
    #[inline]
    pub fn record(&mut self, stream: u32, seq: u64, dup: bool, acked: &[Bits], now: u64) -> bool {
        self.received += 1;
        if self.first_ns == 0 {
            self.first_ns = now;
        }
        self.last_ns = now;
        let Some(k) = (stream as usize)
            .checked_sub(self.first_stream)
            .filter(|&k| k < self.seen.len())
        else {
            self.foreign += 1;
            return false;
        };
        let bits = &mut self.seen[k];
        if seq >= bits.len {
            self.foreign += 1;
            return false;
        }
        if !bits.insert(seq) {
            self.dups += 1;
            self.dups_flagged += u64::from(dup);
            return false;
        }
        if seq < self.next[k] {
            self.out_of_order += 1;
        }
        self.next[k] = self.next[k].max(seq + 1);
        let was_acked = acked.get(stream as usize).is_some_and(|a| a.contains(seq));
        self.acked_delivered += u64::from(was_acked);
        was_acked
    }

    /// Acknowledged to a publisher but never received here.
    pub fn lost(&self, acked: &[Bits]) -> u64 {
        self.seen
            .iter()
            .enumerate()
            .map(|(k, seen)| {
                acked
                    .get(self.first_stream + k)
                    .map_or(0, |a| a.missing_from(seen))
            })
            .sum()
    }

    /// Received, but never acknowledged to the publisher (in flight when publishing
    /// stopped): not an error.
    pub fn unacked_delivered(&self) -> u64 {
        self.seen.iter().map(Bits::count).sum::<u64>() - self.acked_delivered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_insert_count_and_difference() {
        let mut a = Bits::new(130);
        assert!(a.insert(0) && a.insert(129) && a.insert(64));
        assert!(!a.insert(64) && !a.insert(130));
        assert_eq!(a.count(), 3);
        let mut b = Bits::new(130);
        b.insert(64);
        assert_eq!(a.missing_from(&b), 2);
        assert!(a.contains(129) && !a.contains(1) && !a.contains(999));
    }

    #[test]
    fn shapes_split_the_total() {
        let s = Shape::new(100, 1000, 4, false);
        assert_eq!((s.published, s.queued(), s.streams()), (1000, 1000, 100));
        assert_eq!(s.stream_len(7), 10);
        assert_eq!(s.streams_of(1)[..3], [1, 5, 9]);
        assert_eq!(s.streams_of(1).len(), 25);
        assert_eq!(s.streams_for(7), 7..8);
        assert_eq!(s.topic(7), "backlog/7");
        let f = Shape::new(100, 1000, 4, true);
        assert_eq!((f.published, f.queued(), f.streams()), (10, 1000, 4));
        assert_eq!((0..4).map(|p| f.stream_len(p)).sum::<u64>(), 10);
        assert_eq!(f.stream_len(0), 3);
        assert_eq!(f.stream_len(3), 2);
        assert_eq!(f.streams_for(50), 0..4);
        assert_eq!(f.topic(2), "backlog/all");
        // Fewer sessions than publishers: one publisher per session.
        assert_eq!(Shape::new(2, 10, 4, false).publishers, 2);
    }

    #[test]
    fn session_counts_losses_duplicates_and_order() {
        let shape = Shape::new(2, 8, 1, false); // 4 messages per session
        let mut acked = vec![Bits::new(4), Bits::new(4)];
        for s in 0..3 {
            acked[1].insert(s); // seq 3 of session 1 was never acknowledged
        }
        let mut t = SessionTrack::new(&shape, 1);
        assert!(t.record(1, 1, false, &acked, 5));
        assert!(t.record(1, 0, false, &acked, 6)); // out of order
        assert!(!t.record(1, 0, true, &acked, 7)); // redelivered with DUP
        assert!(!t.record(1, 1, false, &acked, 8)); // duplicate without DUP
        assert!(!t.record(1, 3, false, &acked, 9)); // delivered, never acknowledged
        assert!(!t.record(0, 0, false, &acked, 9)); // another session's
        assert_eq!(t.received, 6);
        assert_eq!((t.dups, t.dups_flagged, t.out_of_order), (2, 1, 1));
        assert_eq!((t.foreign, t.acked_delivered), (1, 2));
        assert_eq!(t.lost(&acked), 1); // seq 2
        assert_eq!(t.unacked_delivered(), 1);
        assert_eq!((t.first_ns, t.last_ns), (5, 9));
    }
}
