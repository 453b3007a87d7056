//! The subscription tree: topic filters stored level by level, so that matching a topic
//! costs in proportion to its depth and the branches it reaches, not to the number of
//! subscriptions.
//!
//! Each node holds its literal children in a hash map, its `+` child in a separate slot,
//! the subscribers whose filter ends at this node, and the subscribers of "this node
//! followed by `/#`" (a `#` level is always last, so it needs no node of its own).
//!
//! Subscribers of one node are kept in a `Vec` (cheap to iterate when delivering); once a
//! node has many of them, an id → position index is added so that removing one
//! subscriber stays O(1) however popular the filter is.
//!
//! A run of levels no other filter branches from is one node (its *tail*, see
//! [`crate::chain`]): a filter costs about its bytes plus a constant, however many
//! levels it has, instead of a node per level.
//!
//! Nothing here recurses: filters and topics may have tens of thousands of levels, so the
//! walks use loops and, for matching, a small stack that lives on the call stack and only
//! spills to the heap for unusually branchy tries.

use std::collections::HashMap;

use super::subs::Subs;
use crate::chain::{common_levels, join_tail, match_filter_tail, split_tail_at, strip_tail};
use crate::topic::{is_dollar_topic, split_first};

/// A node's literal children by level. foldhash, randomly seeded per map, rather than
/// std's SipHash: hashing each level of every published topic was ~160 instructions a
/// message in fan-in (callgrind), and foldhash keeps the seed an attacker would need to
/// aim topic levels at one bucket unknown to them.
type Children<V> = HashMap<Box<str>, Box<Node<V>>, foldhash::fast::RandomState>;

/// A node: a leaf (most nodes, one per idle subscriber's own filter) is its chain and its
/// subscribers; what only inner nodes and `#` filters need is in one box beside them,
/// absent on a leaf (56 bytes a leaf, where the parts side by side were 96).
struct Node<V> {
    /// Levels after the one that keys this node in its parent, up to where it branches
    /// or holds subscribers (see [`crate::chain`]); `None` at the root and for a node
    /// that is just its key.
    tail: Option<Box<str>>,
    /// Filters ending at this node.
    subs: Subs<V>,
    more: Option<Box<More<V>>>,
}

/// The parts of a node a leaf does without.
struct More<V> {
    /// Boxed: a child then costs a pointer in its parent's table, not a whole node per
    /// bucket of the table's spare capacity. The map itself is boxed, so that a node
    /// with only `#` subscribers or a `+` child does not carry an empty map.
    #[allow(clippy::box_collection)]
    children: Option<Box<Children<V>>>,
    plus: Option<Box<Node<V>>>,
    /// Filters ending with this node followed by `#` (the root's are those of `#`).
    hash: Subs<V>,
}

impl<V> More<V> {
    fn is_empty(&self) -> bool {
        self.children.is_none() && self.plus.is_none() && self.hash.is_empty()
    }
}

impl<V> Node<V> {
    fn new() -> Self {
        Node::with_tail(None)
    }

    fn with_tail(tail: Option<Box<str>>) -> Self {
        Node {
            tail,
            subs: Subs::None,
            more: None,
        }
    }

    #[inline]
    fn children(&self) -> Option<&Children<V>> {
        self.more.as_ref()?.children.as_deref()
    }

    #[inline]
    fn plus(&self) -> Option<&Node<V>> {
        self.more.as_ref()?.plus.as_deref()
    }

    /// Subscribers of this node's `/#` filter.
    #[inline]
    fn hash(&self) -> Option<&Subs<V>> {
        self.more.as_deref().map(|m| &m.hash)
    }

    fn more_mut(&mut self) -> &mut More<V> {
        self.more.get_or_insert_with(|| {
            Box::new(More {
                children: None,
                plus: None,
                hash: Subs::None,
            })
        })
    }

    /// Lets go of the box of rarely used parts once it holds nothing.
    fn tidy_more(&mut self) {
        if self.more.as_ref().is_some_and(|m| m.is_empty()) {
            self.more = None;
        }
    }

    /// The subscribers of this node's filter, or of its `/#` filter when `hash`.
    fn subs_mut(&mut self, hash: bool) -> &mut Subs<V> {
        if hash {
            &mut self.more_mut().hash
        } else {
            &mut self.subs
        }
    }

    fn subs_of(&self, hash: bool) -> Option<&Subs<V>> {
        if hash {
            self.hash()
        } else {
            Some(&self.subs)
        }
    }

    fn branches(&self) -> usize {
        self.children().map_or(0, |c| c.len()) + usize::from(self.plus().is_some())
    }

    fn is_empty(&self) -> bool {
        self.subs.is_empty() && self.more.as_ref().is_none_or(|m| m.is_empty())
    }

    /// The child for filter level `level` (`+` or a literal).
    #[inline]
    fn child(&self, level: &str) -> Option<&Node<V>> {
        if level == "+" {
            self.plus()
        } else {
            self.children().and_then(|c| c.get(level)).map(|n| &**n)
        }
    }

    #[inline]
    fn child_mut(&mut self, level: &str) -> Option<&mut Node<V>> {
        self.slot_mut(level).map(|n| &mut **n)
    }

    /// The slot holding the child for `level`, to replace the child in place.
    fn slot_mut(&mut self, level: &str) -> Option<&mut Box<Node<V>>> {
        let more = self.more.as_mut()?;
        if level == "+" {
            more.plus.as_mut()
        } else {
            more.children.as_mut().and_then(|c| c.get_mut(level))
        }
    }

    /// Adds `child` under `level` (which must be free) and returns it.
    fn put_child(&mut self, level: &str, child: Box<Node<V>>) -> &mut Node<V> {
        let more = self.more_mut();
        if level == "+" {
            return more.plus.insert(child);
        }
        more.children
            .get_or_insert_default()
            .entry(level.into())
            .or_insert(child)
    }

    /// Takes in the only child of a node that holds no subscribers itself, so that a
    /// chain of levels stays one node after the branch beside it went away.
    fn merge_only_child(&mut self) {
        let Some(more) = self.more.as_mut() else {
            return;
        };
        let (key, mut child): (Box<str>, Box<Node<V>>) =
            match (more.plus.take(), more.children.take()) {
                (Some(plus), None) => ("+".into(), plus),
                (None, Some(children)) if children.len() == 1 => {
                    let Some((key, child)) = children.into_iter().next() else {
                        return;
                    };
                    (key, child)
                }
                (plus, children) => {
                    // Not a single branch: leave it as it was.
                    more.plus = plus;
                    more.children = children;
                    return;
                }
            };
        self.tail = Some(join_tail(self.tail.as_deref(), &key, child.tail.as_deref()));
        self.subs = std::mem::replace(&mut child.subs, Subs::None);
        // This node had no `#` subscribers (it is merged only then): the child's rare
        // parts become its own.
        self.more = child.more.take();
    }

    fn remove_child(&mut self, level: &str) {
        let Some(more) = self.more.as_mut() else {
            return;
        };
        if level == "+" {
            more.plus = None;
        } else {
            let Some(children) = &mut more.children else {
                return;
            };
            children.remove(level);
            let cap = children.capacity();
            if children.is_empty() {
                more.children = None;
            } else if cap > 32 && children.len() * 4 < cap {
                children.shrink_to(children.len() * 2);
            }
        }
        self.tidy_more();
    }
}

impl<V> Drop for Node<V> {
    /// Dismantles the subtree with a loop: the default recursive drop could overflow the
    /// stack on a filter with tens of thousands of levels.
    fn drop(&mut self) {
        let mut stack: Vec<Node<V>> = Vec::new();
        let take = |more: Option<Box<More<V>>>, stack: &mut Vec<Node<V>>| {
            if let Some(mut m) = more {
                if let Some(c) = m.children.take() {
                    stack.extend(c.into_values().map(|n| *n));
                }
                stack.extend(m.plus.take().map(|p| *p));
            }
        };
        take(self.more.take(), &mut stack);
        while let Some(mut node) = stack.pop() {
            take(node.more.take(), &mut stack);
        }
    }
}

/// Splits a filter into the levels leading to its node (`None`: the root) and whether it
/// ends with `#`.
fn split_filter(filter: &str) -> (Option<&str>, bool) {
    if filter == "#" {
        (None, true)
    } else if let Some(path) = filter.strip_suffix("/#") {
        (Some(path), true)
    } else {
        (Some(filter), false)
    }
}

const INLINE_STACK: usize = 16;

/// LIFO stack of `Copy` items kept inline, spilling to the heap only past `INLINE_STACK`.
struct SmallStack<T: Copy> {
    inline: [Option<T>; INLINE_STACK],
    len: usize,
    spill: Vec<T>,
}

impl<T: Copy> SmallStack<T> {
    fn new() -> Self {
        SmallStack {
            inline: [None; INLINE_STACK],
            len: 0,
            spill: Vec::new(),
        }
    }

    #[inline]
    fn push(&mut self, item: T) {
        if self.len < INLINE_STACK {
            self.inline[self.len] = Some(item);
            self.len += 1;
        } else {
            self.spill.push(item);
        }
    }

    #[inline]
    fn pop(&mut self) -> Option<T> {
        if let Some(item) = self.spill.pop() {
            return Some(item);
        }
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        self.inline[self.len].take()
    }
}

/// Subscriptions keyed by topic filter and subscriber id `u64`, each with a value `V`
/// (the subscriber handle and its granted QoS, as the router chooses).
///
/// Filters are expected to be valid (see [`crate::topic::valid_topic_filter`]).
pub struct SubscriptionTrie<V> {
    root: Node<V>,
    len: usize,
}

impl<V> Default for SubscriptionTrie<V> {
    fn default() -> Self {
        SubscriptionTrie {
            root: Node::new(),
            len: 0,
        }
    }
}

impl<V> SubscriptionTrie<V> {
    /// Adds or replaces the subscription of `id` to `filter`. Returns true if it is new.
    pub fn insert(&mut self, filter: &str, id: u64, value: V) -> bool {
        debug_assert!(crate::topic::valid_topic_filter(filter), "{filter:?}");
        let (path, hash) = split_filter(filter);
        let mut node = &mut self.root;
        let mut rest = path;
        while let Some(r) = rest {
            let (level, next) = split_first(r);
            if node.child(level).is_none() {
                // Nothing below here yet: the rest of the filter is one new node.
                let child = Box::new(Node::with_tail(next.map(Into::into)));
                node = node.put_child(level, child);
                break;
            }
            let Some(slot) = node.slot_mut(level) else {
                return false; // unreachable: the child exists (checked above)
            };
            let through = match &slot.tail {
                None => Some(next),
                Some(tail) => strip_tail(tail, next),
            };
            if let Some(after) = through {
                node = &mut **slot;
                rest = after;
                continue;
            }
            // The filter leaves the child's chain part-way: split the chain where they
            // part, so that the shared levels become a node of their own.
            let Some(tail) = slot.tail.take() else {
                return false; // unreachable: a node without a tail is always gone through
            };
            let (k, after) = common_levels(&tail, next);
            let (before, at, below) = split_tail_at(&tail, k);
            let mut lower = std::mem::replace(slot, Box::new(Node::with_tail(before)));
            lower.tail = below;
            slot.put_child(at, lower);
            node = &mut **slot;
            rest = after;
        }
        let new = node.subs_mut(hash).insert(id, value);
        if new {
            self.len += 1;
        }
        new
    }

    /// The node of exactly `path` (`None`: the root).
    fn find(&self, path: Option<&str>) -> Option<&Node<V>> {
        let mut node = &self.root;
        let mut rest = path;
        while let Some(r) = rest {
            let (level, next) = split_first(r);
            node = node.child(level)?;
            rest = match &node.tail {
                None => next,
                Some(tail) => strip_tail(tail, next)?,
            };
        }
        Some(node)
    }

    fn find_mut(&mut self, path: Option<&str>) -> Option<&mut Node<V>> {
        let mut node = &mut self.root;
        let mut rest = path;
        while let Some(r) = rest {
            let (level, next) = split_first(r);
            node = node.child_mut(level)?;
            rest = match &node.tail {
                None => next,
                Some(tail) => strip_tail(tail, next)?,
            };
        }
        Some(node)
    }

    /// Removes the subscription of `id` to `filter`. Returns true if there was one.
    /// Empty branches are pruned, and chains rejoined, so the tree does not grow with
    /// churn.
    pub fn remove(&mut self, filter: &str, id: u64) -> bool {
        let (path, hash) = split_filter(filter);
        // The key of each node on the way, to come back for pruning.
        let mut keys: Vec<&str> = Vec::new();
        let mut node = &mut self.root;
        let mut rest = path;
        while let Some(r) = rest {
            let (level, next) = split_first(r);
            let Some(child) = node.child_mut(level) else {
                return false;
            };
            node = child;
            keys.push(level);
            rest = match &node.tail {
                None => next,
                Some(tail) => match strip_tail(tail, next) {
                    Some(after) => after,
                    None => return false,
                },
            };
        }
        let removed = match node.subs_of(hash) {
            Some(subs) if subs.get(id).is_some() => node.subs_mut(hash).remove(id),
            _ => None,
        };
        if removed.is_none() {
            return false;
        }
        node.tidy_more();
        self.len -= 1;
        self.tidy(&keys);
        true
    }

    /// The node reached from the root through the children keyed `keys`.
    fn node_at_mut(&mut self, keys: &[&str]) -> Option<&mut Node<V>> {
        let mut node = &mut self.root;
        for key in keys {
            node = node.child_mut(key)?;
        }
        Some(node)
    }

    /// After a removal at the node reached through `keys`: removes the nodes left empty
    /// going up, and merges the first one left with a single branch and no subscribers
    /// into its child, so chains stay one node.
    fn tidy(&mut self, keys: &[&str]) {
        let mut depth = keys.len();
        while depth > 0 {
            let Some(node) = self.node_at_mut(&keys[..depth]) else {
                return;
            };
            if node.is_empty() {
                if let Some(parent) = self.node_at_mut(&keys[..depth - 1]) {
                    parent.remove_child(keys[depth - 1]);
                }
                depth -= 1;
                continue;
            }
            if node.subs.is_empty()
                && node.hash().is_none_or(|h| h.is_empty())
                && node.branches() == 1
            {
                node.merge_only_child();
            }
            return;
        }
    }

    /// Calls `f(id, value)` for every subscription whose filter matches `topic`. A
    /// subscriber with several matching filters is visited once per filter. Returns how
    /// many filters had subscribers: ids are unique within one filter, so with 1 no id
    /// was visited twice (the router then has no duplicates to merge).
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(u64, &V)) -> usize {
        let mut filters = 0;
        let root = &self.root;
        let mut stack: SmallStack<(&Node<V>, Option<&str>)> = SmallStack::new();
        let (first, rest) = split_first(topic);
        // Wildcards at the first level do not match topics starting with '$'.
        if !is_dollar_topic(topic) {
            if let Some(hash) = root.hash() {
                filters += hash.visit(&mut f);
            }
            if let Some(plus) = root.plus() {
                stack.push((plus, rest));
            }
        }
        if let Some(child) = root.children().and_then(|c| c.get(first)) {
            stack.push((&**child, rest));
        }
        // Each entry: a node reached through its key, and the topic after that key.
        while let Some((mut node, mut rest)) = stack.pop() {
            loop {
                if let Some(tail) = &node.tail {
                    match match_filter_tail(tail, rest) {
                        Some(after) => rest = after,
                        None => break,
                    }
                }
                let Some(more) = node.more.as_deref() else {
                    // A leaf: only its own filter can match, and only the whole topic.
                    if rest.is_none() {
                        filters += node.subs.visit(&mut f);
                    }
                    break;
                };
                filters += more.hash.visit(&mut f);
                let Some(r) = rest else {
                    filters += node.subs.visit(&mut f);
                    break;
                };
                let (level, next) = split_first(r);
                let exact = more
                    .children
                    .as_ref()
                    .and_then(|c| c.get(level))
                    .map(|n| &**n);
                rest = next;
                node = match (exact, more.plus.as_deref()) {
                    (Some(exact), Some(plus)) => {
                        stack.push((plus, next));
                        exact
                    }
                    (Some(only), None) | (None, Some(only)) => only,
                    (None, None) => break,
                };
            }
        }
        filters
    }

    /// Number of (filter, id) subscriptions stored.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of `id`'s subscription to exactly `filter`.
    pub fn get(&self, filter: &str, id: u64) -> Option<&V> {
        let (path, hash) = split_filter(filter);
        let node = self.find(path)?;
        node.subs_of(hash)?.get(id)
    }

    /// The value of `id`'s subscription to exactly `filter`, to change in place.
    pub fn get_mut(&mut self, filter: &str, id: u64) -> Option<&mut V> {
        let (path, hash) = split_filter(filter);
        let node = self.find_mut(path)?;
        match node.subs_of(hash) {
            Some(subs) if subs.get(id).is_some() => node.subs_mut(hash).get_mut(id),
            _ => None,
        }
    }

    /// Whether `id` is subscribed to exactly `filter`.
    pub fn contains(&self, filter: &str, id: u64) -> bool {
        self.get(filter, id).is_some()
    }

    /// Removes every subscription.
    pub fn clear(&mut self) {
        self.root = Node::new();
        self.len = 0;
    }
}

#[cfg(test)]
#[path = "trie_tests.rs"]
mod tests;
