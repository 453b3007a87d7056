//! The inflight window's storage: QoS 1/2 messages sent and not yet acknowledged, by
//! packet id.
//!
//! A hash map keyed by the broker's own packet ids (see `id_hash`): a `BTreeMap` cost ~480
//! instructions a QoS 1 message to insert and remove (callgrind). Boxed and allocated on
//! the first message that goes in flight: an idle session, and every session of a
//! QoS 0-only client, carries one pointer instead of a map.

use crate::id_hash::IdMap;

use super::Inflight;

#[derive(Default)]
pub struct InflightMap(Option<Box<IdMap<u16, Inflight>>>);

impl InflightMap {
    pub fn insert(&mut self, pkid: u16, f: Inflight) -> Option<Inflight> {
        self.0.get_or_insert_default().insert(pkid, f)
    }

    pub fn get(&self, pkid: &u16) -> Option<&Inflight> {
        self.0.as_ref()?.get(pkid)
    }

    pub fn get_mut(&mut self, pkid: &u16) -> Option<&mut Inflight> {
        self.0.as_mut()?.get_mut(pkid)
    }

    pub fn remove(&mut self, pkid: &u16) -> Option<Inflight> {
        self.0.as_mut()?.remove(pkid)
    }

    pub fn contains_key(&self, pkid: &u16) -> bool {
        self.0.as_ref().is_some_and(|m| m.contains_key(pkid))
    }

    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lets go of the map too (a session that ends its window holds no allocation).
    pub fn clear(&mut self) {
        self.0 = None;
    }

    /// In no particular order: callers that need the send order sort by the entries'
    /// queue sequence.
    pub fn iter(&self) -> impl Iterator<Item = (&u16, &Inflight)> {
        self.0.iter().flat_map(|m| m.iter())
    }

    #[cfg(test)]
    pub fn keys(&self) -> impl Iterator<Item = &u16> {
        self.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &Inflight> {
        self.iter().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Inflight> {
        self.0.iter_mut().flat_map(|m| m.values_mut())
    }
}
