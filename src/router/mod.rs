//! The router: who is subscribed to what, and which sessions a topic reaches.
//!
//! Subscriptions live in a [`trie::SubscriptionTrie`] keyed by session id. Matching takes
//! a read lock, so publishers on different connections route in parallel; only SUBSCRIBE,
//! UNSUBSCRIBE and session clean-up take the write lock.
//!
//! A shared subscription (`$share/<group>/<filter>`, MQTT 5.0 §4.8.2, also usable by
//! 3.1.1 clients as in Mosquitto) is one entry in the trie under `<filter>`: the group,
//! with its members. Each message matching it goes to one member: the online member with
//! the fewest messages queued or awaiting acknowledgement, ties broken round-robin, so
//! work levels out across members of different speeds (see [`Group::pick`]).
//!
//! Lock order, everywhere in the broker: sessions map, then router, then a session's
//! state. Nothing holds a session's state lock while it takes the router lock.

mod subs;
pub mod trie;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::codec::QoS;
use crate::message::DeliveryProps;
use crate::session::Session;
use crate::subscriptions::Sub;
use crate::topic;
use trie::SubscriptionTrie;

/// One subscriber of a filter: its session and the subscription's options.
#[derive(Clone)]
pub(crate) struct Subscriber {
    pub session: Arc<Session>,
    pub sub: Sub,
}

/// Where one message goes: a session, and how it is to be sent there.
#[derive(Clone)]
pub(crate) struct Target {
    pub session: Arc<Session>,
    /// The highest QoS granted among the session's matching subscriptions.
    pub qos: QoS,
    /// Keep the RETAIN flag as published (some matching subscription asked for it).
    pub retain_as_published: bool,
    /// Subscription identifiers of every matching subscription [MQTT-3.3.4-3/4/5], and
    /// the shared subscription (`$share/g/f`) this delivery came through, whose
    /// unacknowledged messages move to another member when this one disconnects. Boxed,
    /// and `None` for plain subscriptions: a target is built for every delivery.
    pub extra: Option<Box<DeliveryProps>>,
}

impl Target {
    fn shared(&self) -> bool {
        self.extra.as_ref().is_some_and(|e| e.shared.is_some())
    }
}

/// A shared subscription group.
struct Group {
    /// The filter as subscribed, `$share/<group>/<filter>`.
    key: Arc<str>,
    members: Vec<Subscriber>,
    /// Round-robin position.
    next: AtomicUsize,
}

impl Group {
    /// The member to give the next message to: among online members, the one with the
    /// fewest messages queued or unacknowledged (so a slow member gets fewer), ties
    /// broken round-robin; offline members only when no member is online.
    fn pick(&self, exclude: Option<u64>) -> Option<&Subscriber> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(bool, usize, &Subscriber)> = None;
        for i in 0..n {
            let m = &self.members[(start + i) % n];
            if Some(m.session.id) == exclude {
                continue;
            }
            let (online, load) = {
                let st = m.session.state.lock();
                (st.connected, st.backlog())
            };
            let better = match best {
                None => true,
                Some((b_online, b_load, _)) => {
                    (online && !b_online) || (online == b_online && load < b_load)
                }
            };
            if better {
                best = Some((online, load, m));
            }
        }
        best.map(|(_, _, m)| m)
    }
}

enum Entry {
    One(Subscriber),
    Group(Box<Group>),
}

#[derive(Default)]
struct Inner {
    trie: SubscriptionTrie<Entry>,
    /// Trie id of each shared group, by its `$share/g/f` key.
    groups: HashMap<Arc<str>, u64>,
    next_group: u64,
}

/// Group ids live in the same per-filter id space as session ids: the top bit keeps them
/// apart.
const GROUP_ID_BIT: u64 = 1 << 63;

#[derive(Default)]
pub(crate) struct Router {
    inner: RwLock<Inner>,
}

impl Router {
    /// Adds or replaces `session`'s subscription to `filter` (which may be a shared
    /// subscription; it must be valid, see [`topic::split_shared`]).
    pub fn subscribe(&self, session: &Arc<Session>, filter: &str, sub: Sub) {
        let subscriber = Subscriber {
            session: session.clone(),
            sub,
        };
        let mut inner = self.inner.write();
        let Some(Some((_, inner_filter))) = topic::split_shared(filter) else {
            inner
                .trie
                .insert(filter, session.id, Entry::One(subscriber));
            return;
        };
        let gid = match inner.groups.get(filter) {
            Some(gid) => *gid,
            None => {
                inner.next_group += 1;
                let gid = GROUP_ID_BIT | inner.next_group;
                let key: Arc<str> = Arc::from(filter);
                inner.groups.insert(key.clone(), gid);
                let group = Group {
                    key,
                    members: Vec::new(),
                    next: AtomicUsize::new(0),
                };
                inner
                    .trie
                    .insert(inner_filter, gid, Entry::Group(Box::new(group)));
                gid
            }
        };
        if let Some(Entry::Group(group)) = inner.trie.get_mut(inner_filter, gid) {
            match group
                .members
                .iter_mut()
                .find(|m| m.session.id == session.id)
            {
                Some(m) => m.sub = sub,
                None => group.members.push(subscriber),
            }
        }
    }

    pub fn unsubscribe(&self, session: &Session, filter: &str) -> bool {
        let mut inner = self.inner.write();
        Self::remove(&mut inner, session, filter)
    }

    fn remove(inner: &mut Inner, session: &Session, filter: &str) -> bool {
        let Some(Some((_, inner_filter))) = topic::split_shared(filter) else {
            return inner.trie.remove(filter, session.id);
        };
        let Some(&gid) = inner.groups.get(filter) else {
            return false;
        };
        let Some(Entry::Group(group)) = inner.trie.get_mut(inner_filter, gid) else {
            return false;
        };
        let before = group.members.len();
        group.members.retain(|m| m.session.id != session.id);
        let removed = group.members.len() != before;
        if group.members.is_empty() {
            inner.trie.remove(inner_filter, gid);
            inner.groups.remove(filter);
        }
        removed
    }

    /// Removes all of `session`'s subscriptions (the filters are the session's own list).
    pub fn unsubscribe_all<'a>(&self, session: &Session, filters: impl Iterator<Item = &'a str>) {
        let mut inner = self.inner.write();
        for filter in filters {
            Self::remove(&mut inner, session, filter);
        }
    }

    /// Collects where a message on `topic`, published by the session `publisher`,
    /// goes. A session with several matching (non-shared) subscriptions gets one entry:
    /// the highest QoS, every subscription identifier [MQTT-3.3.4-2/3]. A subscription
    /// with No Local does not deliver its own client's messages [MQTT-3.8.3-3]. Each
    /// matching shared subscription adds one entry for the member whose turn it is.
    pub fn targets(&self, topic: &str, publisher: Option<u64>, out: &mut Vec<Target>) {
        out.clear();
        let inner = self.inner.read();
        let filters = inner.trie.for_each_match(topic, |_, entry| match entry {
            Entry::One(s) => {
                if s.sub.opts.no_local && publisher == Some(s.session.id) {
                    return;
                }
                out.push(Target {
                    session: s.session.clone(),
                    qos: s.sub.opts.qos,
                    retain_as_published: s.sub.opts.retain_as_published,
                    extra: s.sub.id.map(|id| {
                        Box::new(DeliveryProps {
                            sub_ids: vec![id.get()],
                            shared: None,
                        })
                    }),
                });
            }
            Entry::Group(g) => {
                if let Some(m) = g.pick(None) {
                    out.push(Target {
                        session: m.session.clone(),
                        qos: m.sub.opts.qos,
                        retain_as_published: m.sub.opts.retain_as_published,
                        extra: Some(Box::new(DeliveryProps {
                            sub_ids: m.sub.id.into_iter().map(|n| n.get()).collect(),
                            shared: Some(g.key.clone()),
                        })),
                    });
                }
            }
        });
        drop(inner);
        // Sessions repeat only across filters: a fan-out through one filter skips the
        // merge (sorting 50 ids per message was ~5 % of a 1 → 50 fan-out's instructions).
        if filters > 1 && out.len() > 1 {
            merge_per_session(out);
        }
    }

    /// Another member of the shared subscription `key` to take over a message from the
    /// member `from` (online members first), with its granted QoS.
    pub fn pick_shared(&self, key: &str, from: u64) -> Option<(Arc<Session>, Sub)> {
        let inner = self.inner.read();
        let &gid = inner.groups.get(key)?;
        let (_, inner_filter) = topic::split_shared(key)??;
        match inner.trie.get(inner_filter, gid)? {
            Entry::Group(g) => g.pick(Some(from)).map(|m| (m.session.clone(), m.sub)),
            Entry::One(_) => None,
        }
    }
}

/// Most Subscription Identifiers one PUBLISH carries. MQTT 5.0 asks for the identifier
/// of every matching subscription [MQTT-3.3.4-3], but a client whose thousands of
/// overlapping filters all match would turn each small message into kilobytes of
/// identifiers: past this many, the rest are left out (a documented deviation). An
/// identifier repeated by several subscriptions is carried once.
pub(crate) const MAX_SUB_IDS_PER_DELIVERY: usize = 32;

thread_local! {
    /// Session ids of one message's targets, reused by every route on this thread.
    static IDS: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Merges the non-shared entries of one session into one: highest QoS, Retain As
/// Published if any asked, all subscription identifiers. Shared deliveries stay separate.
/// In place: this runs for every message that reaches more than one subscription.
fn merge_per_session(out: &mut Vec<Target>) {
    // Most messages reach each session once: find that out by sorting ids alone, and
    // leave the (larger) targets where they are.
    let repeats = IDS.with_borrow_mut(|ids| {
        ids.clear();
        ids.extend(out.iter().map(|t| t.session.id));
        ids.sort_unstable();
        ids.windows(2).any(|w| w[0] == w[1])
    });
    if !repeats {
        return;
    }
    out.sort_unstable_by_key(|t| (t.session.id, t.shared()));
    out.dedup_by(|later, kept| {
        let same = later.session.id == kept.session.id && !later.shared() && !kept.shared();
        if same {
            if (later.qos as u8) > (kept.qos as u8) {
                kept.qos = later.qos;
            }
            kept.retain_as_published |= later.retain_as_published;
            if let Some(more) = later.extra.take() {
                add_sub_ids(
                    &mut kept.extra.get_or_insert_default().sub_ids,
                    &more.sub_ids,
                );
            }
        }
        same
    });
}

/// Adds the identifiers of `more` not yet in `ids`, up to [`MAX_SUB_IDS_PER_DELIVERY`]:
/// O(1) per identifier, as `ids` stays that small.
fn add_sub_ids(ids: &mut Vec<u32>, more: &[u32]) {
    for &id in more {
        if ids.len() >= MAX_SUB_IDS_PER_DELIVERY {
            return;
        }
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The trie's leaf is sized for an entry of 16 bytes (see `trie`'s test of its leaf).
    #[test]
    fn an_entry_is_a_session_pointer_and_its_options() {
        assert_eq!(std::mem::size_of::<Entry>(), 16);
    }

    #[test]
    fn sub_ids_per_delivery_are_capped_and_deduplicated() {
        let mut ids = vec![1];
        add_sub_ids(&mut ids, &[1, 2, 2, 3]);
        assert_eq!(ids, [1, 2, 3]);
        let many: Vec<u32> = (1..=10_000).collect();
        add_sub_ids(&mut ids, &many);
        assert_eq!(ids.len(), MAX_SUB_IDS_PER_DELIVERY);
        assert_eq!(ids[..4], [1, 2, 3, 4]);
    }
}
