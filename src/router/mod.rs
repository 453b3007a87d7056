//! The router: who is subscribed to what, and which sessions a topic reaches.
//!
//! Subscriptions live in a [`trie::SubscriptionTrie`] keyed by session id. Matching takes
//! a read lock, so publishers on different connections route in parallel; only SUBSCRIBE,
//! UNSUBSCRIBE and session clean-up take the write lock.
//!
//! Lock order, everywhere in the broker: sessions map, then router, then a session's
//! state. Nothing holds a session's state lock while it takes the router lock.

pub mod trie;

use std::sync::Arc;

use parking_lot::RwLock;

use crate::codec::QoS;
use crate::session::Session;
use trie::SubscriptionTrie;

/// One subscriber of a filter: its session and the QoS it was granted.
#[derive(Clone)]
pub struct Subscriber {
    pub session: Arc<Session>,
    pub qos: QoS,
}

#[derive(Default)]
pub struct Router {
    trie: RwLock<SubscriptionTrie<Subscriber>>,
}

impl Router {
    /// Adds or replaces `session`'s subscription to `filter`.
    pub fn subscribe(&self, session: &Arc<Session>, filter: &str, qos: QoS) {
        self.trie.write().insert(
            filter,
            session.id,
            Subscriber {
                session: session.clone(),
                qos,
            },
        );
    }

    pub fn unsubscribe(&self, session: &Session, filter: &str) -> bool {
        self.trie.write().remove(filter, session.id)
    }

    /// Removes all of `session`'s subscriptions (the filters are the session's own list).
    pub fn unsubscribe_all<'a>(&self, session: &Session, filters: impl Iterator<Item = &'a str>) {
        let mut trie = self.trie.write();
        for filter in filters {
            trie.remove(filter, session.id);
        }
    }

    /// Collects the sessions `topic` reaches into `out`, one entry per session with the
    /// highest QoS among its matching subscriptions: a client with overlapping
    /// subscriptions receives one copy [MQTT-3.3.5-1].
    pub fn route(&self, topic: &str, out: &mut Vec<Subscriber>) {
        out.clear();
        self.trie
            .read()
            .for_each_match(topic, |_, sub| out.push(sub.clone()));
        if out.len() > 1 {
            out.sort_unstable_by(|a, b| {
                a.session
                    .id
                    .cmp(&b.session.id)
                    .then((b.qos as u8).cmp(&(a.qos as u8)))
            });
            // Sorted by id, highest QoS first within an id: keep the first of each id.
            out.dedup_by(|later, first| later.session.id == first.session.id);
        }
    }

    /// Number of (filter, session) subscriptions.
    pub fn len(&self) -> usize {
        self.trie.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
