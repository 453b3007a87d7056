//! The queue positions a spool still holds, as runs of consecutive numbers.
//!
//! A session's queue positions (`seq`) are handed out in order, and a spooled queue takes
//! them one after another, so what a spool holds is almost always one run: positions
//! come in at the end and leave from the front as the subscriber acknowledges them. Gaps
//! appear where a position went to a message kept in memory (QoS 0) or where an
//! acknowledgement came out of order, and each costs one run. So the memory this takes
//! follows the gaps (bounded by the inflight window), not the messages.

/// Disjoint runs `(first, last)` (inclusive), in ascending order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqRanges {
    runs: Vec<(u64, u64)>,
    count: u64,
}

impl SeqRanges {
    /// Rebuilds the set from its runs (as [`SeqRanges::runs`] gave them); runs that are
    /// out of order or overlap are refused.
    pub fn from_runs(runs: &[(u64, u64)]) -> Result<SeqRanges, String> {
        let mut set = SeqRanges::default();
        for &(first, last) in runs {
            if first > last || set.runs.last().is_some_and(|&(_, l)| first <= l) {
                return Err(format!("spool ranges out of order at {first}..={last}"));
            }
            set.runs.push((first, last));
            set.count += last - first + 1;
        }
        Ok(set)
    }

    pub fn runs(&self) -> &[(u64, u64)] {
        &self.runs
    }

    /// How many positions it holds.
    pub fn len(&self) -> u64 {
        self.count
    }

    #[cfg(test)]
    pub fn first(&self) -> Option<u64> {
        self.runs.first().map(|r| r.0)
    }

    #[cfg(test)]
    pub fn last(&self) -> Option<u64> {
        self.runs.last().map(|r| r.1)
    }

    /// Adds `seq`, which must come after everything held; returns false (and adds
    /// nothing) otherwise.
    pub fn push(&mut self, seq: u64) -> bool {
        match self.runs.last_mut() {
            Some((_, last)) if seq <= *last => return false,
            Some((_, last)) if seq == *last + 1 => *last = seq,
            _ => self.runs.push((seq, seq)),
        }
        self.count += 1;
        true
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.run_of(seq).is_some()
    }

    fn run_of(&self, seq: u64) -> Option<usize> {
        let i = self.runs.partition_point(|&(_, last)| last < seq);
        (i < self.runs.len() && self.runs[i].0 <= seq).then_some(i)
    }

    /// Takes `seq` out; returns whether it was there.
    pub fn remove(&mut self, seq: u64) -> bool {
        let Some(i) = self.run_of(seq) else {
            return false;
        };
        let (first, last) = self.runs[i];
        match (seq == first, seq == last) {
            (true, true) => {
                self.runs.remove(i);
            }
            (true, false) => self.runs[i].0 = seq + 1,
            (false, true) => self.runs[i].1 = seq - 1,
            // Out of order: the run splits in two.
            (false, false) => {
                self.runs[i].1 = seq - 1;
                self.runs.insert(i + 1, (seq + 1, last));
            }
        }
        self.count -= 1;
        true
    }

    /// How many held positions are above `seq`.
    pub fn count_above(&self, seq: u64) -> u64 {
        let i = self.runs.partition_point(|&(_, last)| last <= seq);
        self.runs[i..]
            .iter()
            .map(|&(first, last)| last - first.max(seq.saturating_add(1)) + 1)
            .sum()
    }

    /// The lowest held position above `seq`.
    pub fn first_above(&self, seq: u64) -> Option<u64> {
        let i = self.runs.partition_point(|&(_, last)| last <= seq);
        self.runs.get(i).map(|&(first, _)| first.max(seq + 1))
    }

    /// Whether any held position lies in `first..=last`.
    pub fn any_in(&self, first: u64, last: u64) -> bool {
        let i = self.runs.partition_point(|&(_, l)| l < first);
        i < self.runs.len() && self.runs[i].0 <= last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn in_order_traffic_stays_one_run() {
        let mut r = SeqRanges::default();
        for seq in 1..=1000 {
            assert!(r.push(seq));
        }
        for seq in 1..=500 {
            assert!(r.remove(seq));
        }
        assert_eq!(r.runs(), &[(501, 1000)]);
        assert_eq!((r.len(), r.first(), r.last()), (500, Some(501), Some(1000)));
        assert!(!r.push(1000), "a position at or below the last is refused");
    }

    #[test]
    fn out_of_order_removals_and_gaps_split_runs() {
        let mut r = SeqRanges::default();
        for seq in [1, 2, 3, 5, 6, 7] {
            r.push(seq);
        }
        assert_eq!(r.runs(), &[(1, 3), (5, 7)]);
        assert!(r.remove(6));
        assert_eq!(r.runs(), &[(1, 3), (5, 5), (7, 7)]);
        assert!(!r.remove(4) && !r.remove(6) && !r.remove(99));
        assert_eq!(r.count_above(0), 5);
        assert_eq!(r.count_above(3), 2);
        assert_eq!(r.count_above(5), 1);
        assert_eq!(r.count_above(7), 0);
        assert!(r.any_in(4, 5) && !r.any_in(6, 6) && r.any_in(0, 1));
        assert_eq!(SeqRanges::from_runs(r.runs()).unwrap(), r);
        assert!(SeqRanges::from_runs(&[(5, 7), (7, 9)]).is_err());
        assert!(SeqRanges::from_runs(&[(5, 4)]).is_err());
    }

    #[test]
    fn agrees_with_a_set_under_random_traffic() {
        // A small deterministic generator: no test depends on the run's luck.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut r = SeqRanges::default();
        let mut set = BTreeSet::new();
        let mut seq = 0;
        for _ in 0..20_000 {
            if next() % 3 != 0 {
                seq += 1 + next() % 3;
                assert!(r.push(seq));
                set.insert(seq);
            } else if let Some(&first) = set.iter().next() {
                // Mostly the oldest, sometimes one a little further on.
                let pick = first + next() % 8;
                assert_eq!(r.remove(pick), set.remove(&pick));
            }
            assert_eq!(r.len(), set.len() as u64);
            assert_eq!(r.first(), set.iter().next().copied());
            let probe = next() % (seq + 2);
            assert_eq!(r.contains(probe), set.contains(&probe));
            assert_eq!(r.count_above(probe), set.range(probe + 1..).count() as u64);
            assert_eq!(r.first_above(probe), set.range(probe + 1..).next().copied());
        }
    }
}
