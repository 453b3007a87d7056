//! The subscribers of one filter in the trie: a list of `(id, value)` kept as small as
//! the common case allows.
//!
//! Most filters have exactly one subscriber (a device subscribed to its own command
//! topic), and every idle connection pays for its filter's list: so one subscriber is
//! held inline, with no allocation of its own, and a list only exists from the second.
//! A long list gets an id → position index as well, so that removing one subscriber of
//! a popular filter stays O(1).

use std::hash::BuildHasherDefault;

use crate::id_hash::IdMap;

/// A list gets an id index once it has more subscribers than this.
const INDEX_ABOVE: usize = 32;
/// ... and loses it again below this, so churn around the threshold does not rebuild it.
const INDEX_DROP_BELOW: usize = 16;

/// Subscriber ids are chosen by the broker, not by clients (see `id_hash`).
type IdIndex = IdMap<u64, usize>;

/// Two or more subscribers. Boxed in [`Subs`], so that the one-subscriber case is only as
/// large as its entry.
pub(super) struct Many<V> {
    list: Vec<(u64, V)>,
    /// Position of each id in `list`, present only when `list` is large.
    index: Option<IdIndex>,
}

/// The subscribers of one filter.
pub(super) enum Subs<V> {
    None,
    One((u64, V)),
    Many(Box<Many<V>>),
}

impl<V> Subs<V> {
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        matches!(self, Subs::None)
    }

    #[inline]
    fn as_slice(&self) -> &[(u64, V)] {
        match self {
            Subs::None => &[],
            Subs::One(e) => std::slice::from_ref(e),
            Subs::Many(m) => &m.list,
        }
    }

    /// Calls `f` for each entry; 1 if there was any, else 0.
    #[inline]
    pub(super) fn visit(&self, f: &mut impl FnMut(u64, &V)) -> usize {
        let list = self.as_slice();
        for (id, v) in list {
            f(*id, v);
        }
        usize::from(!list.is_empty())
    }

    fn position(&self, id: u64) -> Option<usize> {
        match self {
            Subs::Many(m) if m.index.is_some() => m.index.as_ref()?.get(&id).copied(),
            _ => self.as_slice().iter().position(|e| e.0 == id),
        }
    }

    /// The value of `id`.
    pub(super) fn get(&self, id: u64) -> Option<&V> {
        let i = self.position(id)?;
        self.as_slice().get(i).map(|(_, v)| v)
    }

    /// The value of `id`, to change in place.
    pub(super) fn get_mut(&mut self, id: u64) -> Option<&mut V> {
        let i = self.position(id)?;
        match self {
            Subs::None => None,
            Subs::One(e) => Some(&mut e.1),
            Subs::Many(m) => m.list.get_mut(i).map(|(_, v)| v),
        }
    }

    /// Adds or replaces; true if `id` is new.
    pub(super) fn insert(&mut self, id: u64, value: V) -> bool {
        if let Some(v) = self.get_mut(id) {
            *v = value;
            return false;
        }
        match std::mem::replace(self, Subs::None) {
            Subs::None => *self = Subs::One((id, value)),
            Subs::One(first) => {
                *self = Subs::Many(Box::new(Many {
                    list: vec![first, (id, value)],
                    index: None,
                }))
            }
            Subs::Many(mut m) => {
                let i = m.list.len();
                m.list.push((id, value));
                match &mut m.index {
                    Some(index) => {
                        index.insert(id, i);
                    }
                    None if m.list.len() > INDEX_ABOVE => {
                        let mut index = IdIndex::with_capacity_and_hasher(
                            m.list.len() * 2,
                            BuildHasherDefault::default(),
                        );
                        index.extend(m.list.iter().enumerate().map(|(i, e)| (e.0, i)));
                        m.index = Some(index);
                    }
                    None => {}
                }
                *self = Subs::Many(m);
            }
        }
        true
    }

    /// Removes `id`'s entry and returns its value.
    pub(super) fn remove(&mut self, id: u64) -> Option<V> {
        let i = self.position(id)?;
        match std::mem::replace(self, Subs::None) {
            Subs::None => None,
            // `position` found it, so it is this one.
            Subs::One((_, value)) => Some(value),
            Subs::Many(mut m) => {
                let (_, value) = m.list.swap_remove(i);
                if m.list.len() == 1 {
                    // Back to one: inline again, and the list and index are freed.
                    if let Some(last) = m.list.pop() {
                        *self = Subs::One(last);
                    }
                    return Some(value);
                }
                let drop_index = m.list.len() < INDEX_DROP_BELOW;
                if let Some(index) = &mut m.index {
                    if drop_index {
                        m.index = None;
                    } else {
                        index.remove(&id);
                        if let Some(moved) = m.list.get(i) {
                            index.insert(moved.0, i);
                        }
                        if index.capacity() > 64 && index.len() * 4 < index.capacity() {
                            index.shrink_to(index.len() * 2);
                        }
                    }
                }
                if m.list.capacity() > 8 && m.list.len() * 4 < m.list.capacity() {
                    m.list.shrink_to(m.list.len() * 2);
                }
                *self = Subs::Many(m);
                Some(value)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(s: &Subs<u32>) -> Vec<u64> {
        let mut v = Vec::new();
        s.visit(&mut |id, _| v.push(id));
        v.sort_unstable();
        v
    }

    #[test]
    fn one_subscriber_is_inline_and_the_list_comes_and_goes_with_the_second() {
        let mut s = Subs::None;
        assert!(s.is_empty());
        assert!(s.insert(7, 1));
        assert!(matches!(s, Subs::One(_)));
        assert!(!s.insert(7, 2), "same id replaces");
        assert_eq!(s.get(7), Some(&2));
        assert!(s.insert(8, 3));
        assert!(matches!(s, Subs::Many(_)));
        assert_eq!(ids(&s), [7, 8]);
        assert_eq!(s.remove(7), Some(2));
        assert!(matches!(s, Subs::One((8, 3))));
        assert_eq!(s.remove(9), None);
        assert_eq!(s.remove(8), Some(3));
        assert!(s.is_empty());
        assert_eq!(s.visit(&mut |_, _| {}), 0);
    }

    #[test]
    fn a_long_list_is_indexed_and_every_removal_finds_the_right_entry() {
        let mut s = Subs::None;
        for id in 0..100u64 {
            assert!(s.insert(id, id as u32 * 10));
        }
        assert!(matches!(&s, Subs::Many(m) if m.index.is_some()));
        for id in (0..100u64).step_by(3) {
            assert_eq!(s.remove(id), Some(id as u32 * 10));
        }
        for id in 0..100u64 {
            let want = (id % 3 != 0).then_some(id as u32 * 10);
            assert_eq!(s.get(id).copied(), want, "id {id}");
        }
        while let Some(&id) = ids(&s).first() {
            assert!(s.remove(id).is_some());
        }
        assert!(s.is_empty());
    }

    #[test]
    fn a_one_subscriber_list_is_no_larger_than_its_entry_and_a_tag() {
        // The router's entry is 24 bytes with its id; one subscriber costs no allocation.
        assert!(std::mem::size_of::<Subs<[u64; 2]>>() <= 32);
    }
}
