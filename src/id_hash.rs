//! Hash maps keyed by numbers the broker itself chose (subscriber ids, packet ids): one
//! folded multiply instead of SipHash, which only pays for itself on keys an attacker
//! picks. A client can choose which of its packet ids to acknowledge, never their values.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map keyed by broker-chosen numbers.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;
pub type IdSet<K> = std::collections::HashSet<K, BuildHasherDefault<IdHasher>>;

/// One folded multiply (see the module documentation for why that is safe here).
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(MIX);
        }
    }

    fn write_u16(&mut self, x: u16) {
        self.0 ^= u64::from(x);
    }

    fn write_u64(&mut self, x: u64) {
        self.0 ^= x;
    }

    fn finish(&self) -> u64 {
        let p = u128::from(self.0 ^ MIX) * u128::from(MIX);
        (p as u64) ^ ((p >> 64) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_spread_over_the_table() {
        // hashbrown takes its control tag from the top 7 bits: sequential ids must not all
        // share one.
        let tags: std::collections::HashSet<u64> = (0u16..512)
            .map(|id| {
                let mut h = IdHasher::default();
                h.write_u16(id);
                h.finish() >> 57
            })
            .collect();
        assert!(tags.len() > 100, "{} distinct tags", tags.len());
        let mut m: IdMap<u16, u16> = IdMap::default();
        for id in 1..=1000 {
            m.insert(id, id);
        }
        assert!((1..=1000).all(|id| m.get(&id) == Some(&id)));
    }
}
