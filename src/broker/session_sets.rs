//! The broker's two tables of sessions, as sets of the sessions themselves.
//!
//! A session already holds its client id and its number, so a table keyed by either
//! needs no copy of the key beside it: each entry is one pointer where a map's was the
//! key and the pointer (24 bytes for a client id, 16 for a number). Every connected
//! client has an entry in both, so this is per idle connection (docs/BENCHMARKS.md,
//! "Idle connection, byte by byte").

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use crate::id_hash::IdHasher;
use crate::session::Session;

/// A session as found by its client id. Hashes and compares as its client id, so the
/// set is looked up with a `&str` (`Borrow` requires both to agree, and they hash the
/// same `str`).
struct ByClientId(Arc<Session>);

impl Borrow<str> for ByClientId {
    fn borrow(&self) -> &str {
        &self.0.client_id
    }
}

impl Hash for ByClientId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (*self.0.client_id).hash(state);
    }
}

impl PartialEq for ByClientId {
    fn eq(&self, other: &Self) -> bool {
        self.0.client_id == other.0.client_id
    }
}

impl Eq for ByClientId {}

/// Every session, online or offline, by client id. Client ids are chosen by clients, so
/// this keeps std's keyed SipHash.
#[derive(Default)]
pub(super) struct Sessions(HashSet<ByClientId>);

impl Sessions {
    pub fn get(&self, client_id: &str) -> Option<&Arc<Session>> {
        self.0.get(client_id).map(|s| &s.0)
    }

    pub fn contains(&self, client_id: &str) -> bool {
        self.0.contains(client_id)
    }

    /// Adds `session`, or replaces the one of the same client id.
    pub fn insert(&mut self, session: Arc<Session>) {
        self.0.replace(ByClientId(session));
    }

    /// Removes `session` if it is the one its client id has (a newer session of the
    /// same id stays). One lookup when it is (the client id is hashed with SipHash, at
    /// every connection's end), two in the rare case it is not.
    pub fn remove_same(&mut self, session: &Arc<Session>) {
        if let Some(found) = self.0.take(&*session.client_id) {
            if !Arc::ptr_eq(&found.0, session) {
                self.0.insert(found);
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Session>> {
        self.0.iter().map(|s| &s.0)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// A session as found by its number.
struct ById(Arc<Session>);

impl Borrow<u64> for ById {
    fn borrow(&self) -> &u64 {
        &self.0.id
    }
}

impl Hash for ById {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.id.hash(state);
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for ById {}

/// The sessions with a connection attached, by session number (the broker's own, hence
/// the one-multiply hasher of `id_hash`).
#[derive(Default)]
pub(super) struct Online(HashSet<ById, BuildHasherDefault<IdHasher>>);

impl Online {
    pub fn insert(&mut self, session: Arc<Session>) {
        self.0.replace(ById(session));
    }

    pub fn remove(&mut self, id: u64) {
        self.0.remove(&id);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Session>> {
        self.0.iter().map(|s| &s.0)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QueueFull;
    use crate::session::Limits;
    use crate::store::MemoryStore;
    use std::time::Duration;

    fn session(id: u64, client_id: &str) -> Arc<Session> {
        Arc::new(Session::new(
            id,
            Arc::from(client_id),
            Arc::new(Limits {
                max_inflight: 1,
                max_queued_messages: 1,
                max_queued_bytes: 0,
                max_spool_bytes: 0,
                queue_qos0: false,
                queue_full: QueueFull::DropNew,
                drop_log_interval: Duration::from_secs(1),
            }),
            Arc::new(MemoryStore),
        ))
    }

    #[test]
    fn sessions_are_found_by_client_id_and_replaced_by_the_same_id() {
        let mut s = Sessions::default();
        s.insert(session(1, "a"));
        s.insert(session(2, "b"));
        assert_eq!(s.get("a").map(|x| x.id), Some(1));
        assert!(s.contains("b") && !s.contains("c"));
        let newer = session(3, "a");
        s.insert(newer.clone());
        assert_eq!((s.len(), s.get("a").map(|x| x.id)), (2, Some(3)));
        // An older session of the same id is not the one there: it stays.
        s.remove_same(&session(1, "a"));
        assert_eq!(s.get("a").map(|x| x.id), Some(3));
        s.remove_same(&newer);
        assert!(!s.contains("a"));
        let ids: Vec<u64> = s.iter().map(|x| x.id).collect();
        assert_eq!(ids, [2]);
    }

    #[test]
    fn online_sessions_are_found_by_number() {
        let mut o = Online::default();
        o.insert(session(7, "x"));
        o.insert(session(8, "y"));
        o.insert(session(7, "x"));
        assert_eq!(o.len(), 2);
        o.remove(7);
        o.remove(9);
        let ids: Vec<u64> = o.iter().map(|x| x.id).collect();
        assert_eq!(ids, [8]);
    }

    #[test]
    fn an_entry_is_one_pointer() {
        assert_eq!(std::mem::size_of::<ByClientId>(), 8);
        assert_eq!(std::mem::size_of::<ById>(), 8);
    }
}
