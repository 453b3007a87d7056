//! The lot's storage: parked values in one vector, found again by a [`Key`] that carries
//! a generation, so that a key handed out for a value that has since left (a stale waker,
//! a late epoll event) never reaches the value parked in the same place after it.
//!
//! No allocation per value: a vacant place keeps the index of the next vacant one, and a
//! value parks in the most recently vacated place.

/// Where a value is parked: its index and the generation of that place when it parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub index: u32,
    /// Wraps at 65,536 parkings in the same place: a key that old (a waker kept that long
    /// by nobody: see the lot) could at worst resume a connection for nothing.
    pub generation: u16,
}

impl Key {
    /// The key in the low 48 bits of a word (`generation << 32 | index`): an epoll
    /// token, and the part of a waker's word below its lot's number (see `waker`).
    pub fn to_bits(self) -> u64 {
        u64::from(self.generation) << 32 | u64::from(self.index)
    }

    /// The key whose [`to_bits`](Self::to_bits) are the low 48 bits of `word`.
    pub fn from_bits(word: u64) -> Key {
        Key {
            index: word as u32,
            generation: (word >> 32) as u16,
        }
    }
}

/// No next vacant place.
const NONE: u32 = u32::MAX;

struct Entry<T> {
    value: Option<T>,
    generation: u16,
    /// The next vacant place, while this one is vacant.
    next: u32,
}

pub struct Slab<T> {
    entries: Vec<Entry<T>>,
    /// The most recently vacated place, or [`NONE`].
    vacant: u32,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Slab<T> {
        Slab {
            entries: Vec::new(),
            vacant: NONE,
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Parks `value`; gives it back when the slab holds `u32::MAX - 1` values.
    pub fn insert(&mut self, value: T) -> Result<Key, T> {
        let index = if self.vacant != NONE {
            self.vacant
        } else {
            match u32::try_from(self.entries.len()) {
                Ok(i) if i != NONE => {
                    self.entries.push(Entry {
                        value: None,
                        generation: 0,
                        next: NONE,
                    });
                    i
                }
                _ => return Err(value),
            }
        };
        let Some(entry) = self.entries.get_mut(index as usize) else {
            return Err(value);
        };
        if index == self.vacant {
            self.vacant = entry.next;
        }
        entry.value = Some(value);
        entry.next = NONE;
        self.len += 1;
        Ok(Key {
            index,
            generation: entry.generation,
        })
    }

    pub fn get(&self, key: Key) -> Option<&T> {
        let entry = self.entries.get(key.index as usize)?;
        if entry.generation != key.generation {
            return None;
        }
        entry.value.as_ref()
    }

    /// Takes the value `key` names, if it is still there.
    pub fn remove(&mut self, key: Key) -> Option<T> {
        let entry = self.entries.get_mut(key.index as usize)?;
        if entry.generation != key.generation {
            return None;
        }
        let value = entry.value.take()?;
        // Every key handed out for this place until now is stale from here on.
        entry.generation = entry.generation.wrapping_add(1);
        entry.next = self.vacant;
        self.vacant = key.index;
        self.len -= 1;
        Some(value)
    }

    /// Takes every value, and lets go of the vector.
    pub fn drain(&mut self) -> Vec<T> {
        let values = std::mem::take(&mut self.entries)
            .into_iter()
            .filter_map(|e| e.value)
            .collect();
        self.vacant = NONE;
        self.len = 0;
        values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_finds_its_value_until_it_is_removed() {
        let mut s = Slab::default();
        let a = s.insert("a").unwrap(); // ok: unit test
        let b = s.insert("b").unwrap(); // ok: unit test
        assert_eq!(s.get(a), Some(&"a"));
        assert_eq!(s.remove(a), Some("a"));
        assert_eq!(s.remove(a), None, "removed once");
        assert_eq!(s.get(b), Some(&"b"));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_stale_key_misses_the_next_value_in_its_place() {
        let mut s = Slab::default();
        let old = s.insert(1).unwrap(); // ok: unit test
        s.remove(old);
        let new = s.insert(2).unwrap(); // ok: unit test
        assert_eq!(new.index, old.index, "the place is reused");
        assert_ne!(new.generation, old.generation);
        assert_eq!(s.get(old), None);
        assert_eq!(s.remove(old), None);
        assert_eq!(s.remove(new), Some(2));
    }

    #[test]
    fn vacant_places_are_reused_before_the_vector_grows() {
        let mut s = Slab::default();
        let keys: Vec<Key> = (0..10).map(|i| s.insert(i).unwrap()).collect(); // ok: unit test
        for k in &keys[2..8] {
            s.remove(*k);
        }
        for i in 0..6 {
            s.insert(100 + i).unwrap(); // ok: unit test
        }
        assert_eq!(s.len(), 10);
        assert_eq!(s.entries.len(), 10, "no new place while one was vacant");
        let mut all = s.drain();
        all.sort();
        assert_eq!(all.len(), 10);
        assert_eq!(s.len(), 0);
    }
}
