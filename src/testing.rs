//! Helpers shared by the unit tests: a small deterministic random generator (no extra
//! crate) and random topic names and filters over a small alphabet of levels, so that
//! randomized cross-checks hit matches and `$` topics often.

/// xorshift64: deterministic from its seed, good enough to spread test inputs.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Levels a random filter is made of.
pub const FILTER_LEVELS: [&str; 6] = ["a", "b", "", "$x", "+", "#"];
/// Levels a random topic name is made of.
pub const TOPIC_LEVELS: [&str; 4] = ["a", "b", "", "$x"];

/// One to `max` levels drawn from `alphabet`, joined with '/' (deeper ones exercise the
/// trees' chains of levels held as one node).
pub fn random_levels_upto(rng: &mut XorShift, alphabet: &[&str], max: usize) -> String {
    let n = 1 + rng.below(max);
    (0..n)
        .map(|_| alphabet[rng.below(alphabet.len())])
        .collect::<Vec<_>>()
        .join("/")
}
