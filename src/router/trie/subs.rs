//! The subscribers of one node of the subscription tree (see `trie`): a `Vec` (cheap to
//! iterate when delivering) and, once there are many, an id → position index, so that
//! removing one stays O(1) however popular the filter is.

use std::hash::BuildHasherDefault;

use crate::id_hash::IdMap;

/// A node gets an id index once it has more subscribers than this.
const INDEX_ABOVE: usize = 32;
/// ... and loses it again below this, so churn around the threshold does not rebuild it.
const INDEX_DROP_BELOW: usize = 16;

/// Subscriber ids are chosen by the broker, not by clients (see `id_hash`).
type IdIndex = IdMap<u64, usize>;

/// The subscribers of one filter.
pub(super) struct Subs<V> {
    pub(super) list: Vec<(u64, V)>,
    /// Position of each id in `list`, present only when `list` is large.
    index: Option<Box<IdIndex>>,
}

impl<V> Subs<V> {
    pub(super) const fn new() -> Self {
        Subs {
            list: Vec::new(),
            index: None,
        }
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Calls `f` for each entry; 1 if there was any, else 0.
    #[inline]
    pub(super) fn visit(&self, f: &mut impl FnMut(u64, &V)) -> usize {
        for (id, v) in self.list.iter() {
            f(*id, v);
        }
        usize::from(!self.list.is_empty())
    }

    pub(super) fn position(&self, id: u64) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(&id).copied(),
            None => self.list.iter().position(|e| e.0 == id),
        }
    }

    /// Adds or replaces; true if `id` is new.
    pub(super) fn insert(&mut self, id: u64, value: V) -> bool {
        if let Some(i) = self.position(id) {
            self.list[i].1 = value;
            return false;
        }
        let i = self.list.len();
        if self.list.capacity() == 0 {
            // Most filters have one subscriber: room for one, not the four a push reserves.
            self.list.reserve_exact(1);
        }
        self.list.push((id, value));
        match &mut self.index {
            Some(index) => {
                index.insert(id, i);
            }
            None if self.list.len() > INDEX_ABOVE => {
                let mut index = IdIndex::with_capacity_and_hasher(
                    self.list.len() * 2,
                    BuildHasherDefault::default(),
                );
                index.extend(self.list.iter().enumerate().map(|(i, e)| (e.0, i)));
                self.index = Some(Box::new(index));
            }
            None => {}
        }
        true
    }

    pub(super) fn remove(&mut self, id: u64) -> Option<V> {
        let i = self.position(id)?;
        let (_, value) = self.list.swap_remove(i);
        let drop_index = self.list.len() < INDEX_DROP_BELOW;
        if let Some(index) = &mut self.index {
            if drop_index {
                self.index = None;
            } else {
                index.remove(&id);
                if let Some(moved) = self.list.get(i) {
                    index.insert(moved.0, i);
                }
                if index.capacity() > 64 && index.len() * 4 < index.capacity() {
                    index.shrink_to(index.len() * 2);
                }
            }
        }
        if self.list.is_empty() {
            self.list = Vec::new();
        } else if self.list.capacity() > 8 && self.list.len() * 4 < self.list.capacity() {
            self.list.shrink_to(self.list.len() * 2);
        }
        Some(value)
    }
}
