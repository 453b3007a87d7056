//! What the subscribers count: which (publisher, sequence) pairs arrived, how often, and
//! how long each message took from the publisher's write to the subscriber's read.

use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes at the front of every payload: publisher id (u32 LE), sequence number (u64 LE)
/// and send time (u64 LE, nanoseconds since the Unix epoch). The rest is padding.
pub const HEADER: usize = 20;

/// Wall-clock nanoseconds since the Unix epoch: comparable between processes on one host.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub fn write_header(out: &mut [u8], publisher: u32, seq: u64, sent_ns: u64) {
    out[0..4].copy_from_slice(&publisher.to_le_bytes());
    out[4..12].copy_from_slice(&seq.to_le_bytes());
    out[12..20].copy_from_slice(&sent_ns.to_le_bytes());
}

/// `(publisher, seq, sent_ns)` of a payload written by [`write_header`].
pub fn read_header(payload: &[u8]) -> Option<(u32, u64, u64)> {
    let h = payload.get(..HEADER)?;
    Some((
        u32::from_le_bytes(h[0..4].try_into().ok()?),
        u64::from_le_bytes(h[4..12].try_into().ok()?),
        u64::from_le_bytes(h[12..20].try_into().ok()?),
    ))
}

/// Publisher ids and sequence numbers past these are not tracked (counted as foreign).
const MAX_PUBLISHERS: usize = 1 << 20;
const MAX_SEQ_WORDS: usize = 1 << 26;

/// One bit per (publisher, sequence number) seen: duplicates and losses without storing
/// the messages.
#[derive(Default, Clone)]
pub struct Tracker {
    seen: Vec<Vec<u64>>,
    /// Distinct (publisher, seq) pairs received.
    pub unique: u64,
    /// Messages received again.
    pub dups: u64,
    /// Messages whose payload carried no usable header.
    pub foreign: u64,
}

impl Tracker {
    #[inline]
    pub fn record(&mut self, publisher: u32, seq: u64) {
        let p = publisher as usize;
        let w = (seq >> 6) as usize;
        if p >= MAX_PUBLISHERS || w >= MAX_SEQ_WORDS {
            self.foreign += 1;
            return;
        }
        if p >= self.seen.len() {
            self.seen.resize_with(p + 1, Vec::new);
        }
        let words = &mut self.seen[p];
        if w >= words.len() {
            words.resize((w + 1).next_power_of_two().max(16), 0);
        }
        let bit = 1u64 << (seq & 63);
        if words[w] & bit != 0 {
            self.dups += 1;
        } else {
            words[w] |= bit;
            self.unique += 1;
        }
    }

    /// Distinct sequence numbers received from `publisher`.
    pub fn unique_from(&self, publisher: u32) -> u64 {
        self.seen
            .get(publisher as usize)
            .map_or(0, |w| w.iter().map(|x| u64::from(x.count_ones())).sum())
    }

    /// Sequence numbers below each publisher's highest one that never arrived: the losses
    /// a subscriber can see without knowing how much was sent.
    pub fn gaps(&self) -> u64 {
        self.seen
            .iter()
            .map(|words| {
                let Some(last_word) = words.iter().rposition(|&w| w != 0) else {
                    return 0;
                };
                let highest =
                    last_word as u64 * 64 + 63 - u64::from(words[last_word].leading_zeros());
                let got: u64 = words.iter().map(|x| u64::from(x.count_ones())).sum();
                highest + 1 - got
            })
            .sum()
    }

    /// Adds `other`'s messages; a pair both saw counts as a duplicate.
    pub fn merge(&mut self, other: &Tracker) {
        self.foreign += other.foreign;
        self.dups += other.dups;
        if other.seen.len() > self.seen.len() {
            self.seen.resize_with(other.seen.len(), Vec::new);
        }
        for (mine, theirs) in self.seen.iter_mut().zip(&other.seen) {
            if theirs.len() > mine.len() {
                mine.resize(theirs.len(), 0);
            }
            for (m, t) in mine.iter_mut().zip(theirs) {
                let both = *m & *t;
                self.dups += u64::from(both.count_ones());
                self.unique += u64::from((*t & !*m).count_ones());
                *m |= *t;
            }
        }
    }
}

/// Log-linear histogram of nanosecond values: exact below 128, then 64 buckets per power
/// of two (at most 1.6 % relative error). Fixed size, no allocation per sample.
#[derive(Clone)]
pub struct Histogram {
    buckets: Vec<u64>,
    pub count: u64,
    pub min: u64,
    pub max: u64,
    sum: u128,
}

const SUB: usize = 64;
const BUCKETS: usize = 128 + (64 - 7) * SUB;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: vec![0; BUCKETS],
            count: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }
}

fn bucket(v: u64) -> usize {
    if v < 128 {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros() as usize; // >= 7
    let mantissa = (v >> (exp - 6)) as usize; // 64..128
    128 + (exp - 7) * SUB + (mantissa - SUB)
}

/// Highest value that falls in bucket `i`.
fn bucket_high(i: usize) -> u64 {
    if i < 128 {
        return i as u64;
    }
    let exp = (i - 128) / SUB + 7;
    let mantissa = ((i - 128) % SUB + SUB) as u128;
    u64::try_from(((mantissa + 1) << (exp - 6)) - 1).unwrap_or(u64::MAX)
}

impl Histogram {
    #[inline]
    pub fn record(&mut self, v: u64) {
        self.buckets[bucket(v)] += 1;
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += u128::from(v);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Value at quantile `q` (0..=1): the upper edge of its bucket, capped at the maximum.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bucket_high(i).min(self.max);
            }
        }
        self.max
    }

    pub fn mean(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            (self.sum / u128::from(self.count)) as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_counts_dups_and_gaps() {
        let mut t = Tracker::default();
        for s in [0, 1, 2, 2, 5, 1000] {
            t.record(3, s);
        }
        assert_eq!(t.unique, 5);
        assert_eq!(t.dups, 1);
        assert_eq!(t.unique_from(3), 5);
        assert_eq!(t.unique_from(0), 0);
        assert_eq!(t.gaps(), 1001 - 5);
        let mut u = Tracker::default();
        u.record(3, 5);
        u.record(3, 6);
        u.record(9, 0);
        t.merge(&u);
        assert_eq!(t.unique, 7);
        assert_eq!(t.dups, 2);
    }

    #[test]
    fn histogram_buckets_are_monotonic_and_tight() {
        let mut prev = 0;
        for i in 1..BUCKETS {
            let hi = bucket_high(i);
            assert!(hi > prev, "bucket {i}");
            assert_eq!(bucket(hi), i);
            assert_eq!(bucket(prev + 1), i);
            prev = hi;
        }
        for v in [
            0u64,
            1,
            127,
            128,
            129,
            1000,
            123_456,
            10_000_000_000,
            u64::MAX / 3,
        ] {
            let hi = bucket_high(bucket(v));
            assert!(
                hi >= v && (hi - v) as f64 <= v as f64 / 60.0 + 1.0,
                "{v} {hi}"
            );
        }
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::default();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.02, "{p50}");
        assert_eq!(h.quantile(1.0), 1_000_000);
        assert_eq!(h.min, 1000);
        assert_eq!(h.mean(), 500_500);
    }

    #[test]
    fn header_round_trip() {
        let mut p = [0u8; 64];
        write_header(&mut p, 7, 1 << 40, 123);
        assert_eq!(read_header(&p), Some((7, 1 << 40, 123)));
        assert_eq!(read_header(&p[..19]), None);
    }
}
