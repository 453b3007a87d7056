//! The inflight window's storage: QoS 1/2 messages sent and not yet acknowledged, by
//! packet id.
//!
//! The packet ids are the broker's own, handed out one after another (`alloc_pkid`), and
//! most acknowledgements come in about the order the messages went out. So the entries
//! sit in a ring of slots indexed by the id's distance from the oldest one's: an insert
//! is a push at the back, an acknowledgement a slot taken and the empty front popped, a
//! lookup an index. A hash map cost ~200 instructions a QoS 1 message to insert and
//! remove (callgrind, `HashMap::insert` / `remove`); a `BTreeMap` ~480.
//!
//! Ids the ring cannot hold cheaply go to a small hash map beside it (`stray`): one
//! acknowledged long after the ones sent after it (the ring would keep the empty slots
//! between them), and one put back out of order (a restored session's ids). The ring
//! never holds more than twice its entries in slots, plus [`SLACK`]: when a new id or an
//! acknowledgement would make it sparser than that, its oldest entries move to the hash
//! map. A lookup tries the ring's slot, then the hash map only if it holds anything.
//! Every id is in one of the two at most.
//!
//! Boxed and allocated on the first message that goes in flight: an idle session, and
//! every session of a QoS 0-only client, carries one pointer.

use crate::id_hash::IdMap;

/// Empty slots the ring may hold beyond one per entry, so that a few acknowledgements out
/// of order in a small window do not send entries to the hash map.
const SLACK: usize = 64;

/// An id this far ahead of the ring's oldest or more is taken to be behind it (ids wrap
/// at 65535): it goes to the hash map rather than pushing the ring's entries there.
const AHEAD: usize = 32_768;

/// The inflight window (see the module's notes). Generic so its unit tests can use plain
/// values; the session holds [`InflightMap`].
pub struct PkidMap<V>(Option<Box<Window<V>>>);

/// What a session holds.
pub type InflightMap = PkidMap<super::Inflight>;

struct Window<V> {
    /// The packet id of the ring's oldest slot. The ring's first and last slots are full.
    base: u16,
    /// A ring buffer of `2^n` slots: the oldest at `head`, `len` of them in use. (Not a
    /// `VecDeque`: emptying the front slots in place, rather than popping each out by
    /// value, halved an acknowledgement's cost.)
    slots: Vec<Option<V>>,
    head: usize,
    len: usize,
    /// Full slots.
    in_ring: usize,
    /// Entries the ring does not hold (see the module's notes).
    stray: IdMap<u16, V>,
}

impl<V> Default for PkidMap<V> {
    fn default() -> Self {
        PkidMap(None)
    }
}

/// How many ids after `base` `pkid` comes, in the order ids are handed out: 1 to 65535,
/// then 1 again (0 is never an id, and `pkid` must not be 0).
#[inline]
fn distance(base: u16, pkid: u16) -> usize {
    let d = usize::from(pkid.wrapping_sub(base));
    if pkid < base {
        d - 1
    } else {
        d
    }
}

impl<V> Window<V> {
    fn new() -> Window<V> {
        Window {
            base: 1,
            slots: Vec::new(),
            head: 0,
            len: 0,
            in_ring: 0,
            stray: IdMap::default(),
        }
    }

    /// Where the ring's `d`th slot is in `slots`.
    #[inline]
    fn at(&self, d: usize) -> usize {
        // `slots.len()` is a power of two (or 0, when `len` is 0 and nothing is indexed).
        (self.head + d) & self.slots.len().wrapping_sub(1)
    }

    /// The index in `slots` of `pkid`, if the ring spans it.
    #[inline]
    fn slot(&self, pkid: u16) -> Option<usize> {
        if pkid == 0 {
            return None;
        }
        let d = distance(self.base, pkid);
        (d < self.len).then(|| self.at(d))
    }

    #[inline]
    fn is_full_at(&self, d: usize) -> bool {
        matches!(self.slots.get(self.at(d)), Some(Some(_)))
    }

    /// Drops empty slots off both ends, so both ends are full (or the ring empty).
    fn trim(&mut self) {
        self.trim_front();
        while self.len > 0 && !self.is_full_at(self.len - 1) {
            self.len -= 1;
        }
    }

    /// Drops empty slots off the front (the back is full: only the front was emptied).
    #[inline]
    fn trim_front(&mut self) {
        while self.len > 0 && !self.is_full_at(0) {
            self.head = self.at(1);
            self.len -= 1;
            self.base = next_id(self.base);
        }
    }

    /// Acknowledgements far out of order: the oldest entries go to the hash map rather
    /// than the ring keeping many empty slots.
    #[cold]
    fn evict_sparse(&mut self) {
        while self.len > 2 * self.in_ring + SLACK {
            self.evict_front();
        }
    }

    /// Moves the ring's oldest entry to the hash map.
    #[cold]
    fn evict_front(&mut self) {
        let head = self.head;
        if let Some(v) = self.slots.get_mut(head).and_then(Option::take) {
            self.stray.insert(self.base, v);
            self.in_ring -= 1;
        }
        self.trim();
    }

    /// Makes room for `n` slots, the oldest moving to the start of `slots`.
    #[cold]
    fn grow(&mut self, n: usize) {
        let capacity = n.next_power_of_two().max(16);
        let mut slots: Vec<Option<V>> = Vec::with_capacity(capacity);
        for d in 0..self.len {
            let i = self.at(d);
            slots.push(self.slots.get_mut(i).and_then(Option::take));
        }
        slots.resize_with(capacity, || None);
        self.slots = slots;
        self.head = 0;
    }

    /// Whether `pkid` is the common case of an insert, done inline by [`push`]: the id
    /// after the ring's newest (as `alloc_pkid` hands them out), there is a free slot for
    /// it, and no entry is elsewhere. Every other insert goes
    /// [`insert_any`](Self::insert_any)'s way.
    ///
    /// [`push`]: Self::push
    #[inline]
    fn is_next(&self, pkid: u16) -> bool {
        // (One more slot at the back keeps the ring within its bound: it was.)
        self.len > 0
            && pkid != 0
            && self.stray.is_empty()
            && distance(self.base, pkid) == self.len
            && self.len < self.slots.len()
    }

    /// Puts `v` in the slot after the newest: the id [`is_next`](Self::is_next) said.
    #[inline]
    fn push(&mut self, v: V) {
        let i = self.at(self.len);
        if let Some(slot) = self.slots.get_mut(i) {
            *slot = Some(v);
            self.len += 1;
            self.in_ring += 1;
        }
    }

    #[inline(never)]
    fn insert_any(&mut self, pkid: u16, v: V) -> Option<V> {
        // An id is in one place only: the new entry replaces one the hash map holds.
        let old = if self.stray.is_empty() {
            None
        } else {
            self.stray.remove(&pkid)
        };
        if pkid == 0 {
            // Never an id the broker hands out; kept all the same, out of the ring.
            return self.stray.insert(pkid, v).or(old);
        }
        if let Some(i) = self.slot(pkid) {
            let prev = self.slots.get_mut(i).and_then(|s| s.replace(v));
            if prev.is_none() {
                self.in_ring += 1;
            }
            return prev.or(old);
        }
        if self.len > 0 && distance(self.base, pkid) >= AHEAD {
            // Behind the ring: a restored id out of order.
            return self.stray.insert(pkid, v).or(old);
        }
        // Ahead of the ring: its new last entry, the ring's oldest going to the hash map
        // while that would leave it too sparse.
        while self.len > 0 && distance(self.base, pkid) + 1 > 2 * (self.in_ring + 1) + SLACK {
            self.evict_front();
        }
        if self.len == 0 {
            self.base = pkid;
        }
        let d = distance(self.base, pkid);
        if d >= self.slots.len() {
            self.grow(d + 1);
        }
        // The slots between the last and `d` are empty already: every slot outside the
        // ring is.
        let i = self.at(d);
        if let Some(slot) = self.slots.get_mut(i) {
            *slot = Some(v);
        }
        self.len = d + 1;
        self.in_ring += 1;
        old
    }

    /// The common case inline: the oldest entry's acknowledgement.
    #[inline]
    fn remove(&mut self, pkid: u16) -> Option<V> {
        if pkid == self.base && self.len > 0 {
            let head = self.head;
            if let Some(v) = self.slots.get_mut(head).and_then(Option::take) {
                self.in_ring -= 1;
                self.trim_front();
                if self.len > 2 * self.in_ring + SLACK {
                    self.evict_sparse();
                }
                return Some(v);
            }
        }
        self.remove_any(pkid)
    }

    /// [`remove`](Self::remove) if the entry is one `wanted` says, in one lookup when it
    /// is the oldest.
    #[inline]
    fn remove_if(&mut self, pkid: u16, wanted: impl FnOnce(&V) -> bool) -> Option<V> {
        if pkid == self.base && self.len > 0 {
            let head = self.head;
            let slot = self.slots.get_mut(head)?;
            if !slot.as_ref().is_some_and(wanted) {
                return None;
            }
            let v = slot.take();
            self.in_ring -= 1;
            self.trim_front();
            if self.len > 2 * self.in_ring + SLACK {
                self.evict_sparse();
            }
            return v;
        }
        if self.get(pkid).is_some_and(wanted) {
            self.remove_any(pkid)
        } else {
            None
        }
    }

    /// [`remove_if`](Self::remove_if), the entry dropped where it is after `seen` looks
    /// at it: not moved out to be returned (three copies of it, for the caller only to
    /// drop it, were a third of a PUBACK's cost). Always inline (into the PUBACK loop of
    /// `handlers::ack::pubacks`): left to the compiler, it was a call with ~30
    /// instructions of prologue and epilogue a PUBACK (callgrind).
    #[inline(always)]
    fn discard_if(
        &mut self,
        pkid: u16,
        wanted: impl FnOnce(&V) -> bool,
        seen: impl FnOnce(&V),
    ) -> bool {
        if pkid == self.base && self.len > 0 {
            let head = self.head;
            let Some(slot) = self.slots.get_mut(head) else {
                return false;
            };
            match slot {
                Some(v) if wanted(v) => seen(v),
                _ => return false,
            }
            *slot = None;
            self.in_ring -= 1;
            self.trim_front();
            if self.len > 2 * self.in_ring + SLACK {
                self.evict_sparse();
            }
            return true;
        }
        self.discard_any(pkid, wanted, seen)
    }

    /// [`discard_if`](Self::discard_if) of any entry but the oldest, out of line.
    #[inline(never)]
    fn discard_any(
        &mut self,
        pkid: u16,
        wanted: impl FnOnce(&V) -> bool,
        seen: impl FnOnce(&V),
    ) -> bool {
        match self.remove_if(pkid, wanted) {
            Some(v) => {
                seen(&v);
                true
            }
            None => false,
        }
    }

    #[inline(never)]
    fn remove_any(&mut self, pkid: u16) -> Option<V> {
        if let Some(i) = self.slot(pkid) {
            if let Some(v) = self.slots.get_mut(i).and_then(Option::take) {
                self.in_ring -= 1;
                self.trim();
                self.evict_sparse();
                return Some(v);
            }
        }
        if self.stray.is_empty() {
            None
        } else {
            self.stray.remove(&pkid)
        }
    }

    #[inline]
    fn get(&self, pkid: u16) -> Option<&V> {
        if let Some(v) = self.slot(pkid).and_then(|i| self.slots.get(i)?.as_ref()) {
            return Some(v);
        }
        if self.stray.is_empty() {
            None
        } else {
            self.stray.get(&pkid)
        }
    }

    #[inline]
    fn get_mut(&mut self, pkid: u16) -> Option<&mut V> {
        // Looked at before borrowing mutably: returning the slot's borrow from an `if let`
        // would keep `self` borrowed for the hash map's lookup below.
        if let Some(i) = self.slot(pkid) {
            if matches!(self.slots.get(i), Some(Some(_))) {
                return self.slots.get_mut(i)?.as_mut();
            }
        }
        if self.stray.is_empty() {
            None
        } else {
            self.stray.get_mut(&pkid)
        }
    }

    fn entries(&self) -> usize {
        self.in_ring + self.stray.len()
    }

    /// The ring's entries, oldest first, with their ids.
    fn ring(&self) -> impl Iterator<Item = (u16, &V)> + '_ {
        let mut id = self.base;
        (0..self.len).filter_map(move |d| {
            let this = id;
            id = next_id(id);
            self.slots.get(self.at(d))?.as_ref().map(|v| (this, v))
        })
    }
}

/// The id handed out after `id`.
#[inline]
fn next_id(id: u16) -> u16 {
    match id.wrapping_add(1) {
        0 => 1,
        n => n,
    }
}

impl<V> PkidMap<V> {
    /// Inline when `pkid` is the next id (see `Window::is_next`); the rest out of line.
    #[inline]
    pub fn insert(&mut self, pkid: u16, v: V) -> Option<V> {
        match self.0.as_deref_mut() {
            Some(w) if w.is_next(pkid) => {
                w.push(v);
                None
            }
            _ => self.insert_any(pkid, v),
        }
    }

    #[inline(never)]
    fn insert_any(&mut self, pkid: u16, v: V) -> Option<V> {
        self.0
            .get_or_insert_with(|| Box::new(Window::new()))
            .insert_any(pkid, v)
    }

    #[inline]
    pub fn get(&self, pkid: &u16) -> Option<&V> {
        self.0.as_ref()?.get(*pkid)
    }

    #[inline]
    pub fn get_mut(&mut self, pkid: &u16) -> Option<&mut V> {
        self.0.as_mut()?.get_mut(*pkid)
    }

    #[inline]
    pub fn remove(&mut self, pkid: &u16) -> Option<V> {
        self.0.as_mut()?.remove(*pkid)
    }

    /// Removes and drops the entry of `pkid` if `wanted` says it is the one to remove,
    /// after `seen` looks at it. Returns whether it did.
    #[inline(always)]
    pub fn discard_if(
        &mut self,
        pkid: &u16,
        wanted: impl FnOnce(&V) -> bool,
        seen: impl FnOnce(&V),
    ) -> bool {
        self.0
            .as_mut()
            .is_some_and(|w| w.discard_if(*pkid, wanted, seen))
    }

    #[inline]
    pub fn contains_key(&self, pkid: &u16) -> bool {
        self.get(pkid).is_some()
    }

    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |w| w.entries())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slots the ring holds, full or not, and entries in the hash map.
    #[cfg(test)]
    fn shape(&self) -> (usize, usize) {
        self.0.as_ref().map_or((0, 0), |w| (w.len, w.stray.len()))
    }

    /// Lets go of the storage too (a session that ends its window holds no allocation).
    pub fn clear(&mut self) {
        self.0 = None;
    }

    /// In no particular order: callers that need the send order sort by the entries'
    /// queue sequence.
    pub fn iter(&self) -> impl Iterator<Item = (u16, &V)> + '_ {
        self.0
            .iter()
            .flat_map(|w| w.ring().chain(w.stray.iter().map(|(id, v)| (*id, v))))
    }

    #[cfg(test)]
    pub fn keys(&self) -> impl Iterator<Item = u16> + '_ {
        self.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.0.iter_mut().flat_map(|w| {
            // Every slot outside the ring is empty: all of them can be looked at.
            w.slots
                .iter_mut()
                .filter_map(Option::as_mut)
                .chain(w.stray.values_mut())
        })
    }
}

#[cfg(test)]
#[path = "inflight_map_tests.rs"]
mod tests;
