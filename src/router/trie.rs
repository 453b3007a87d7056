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

use crate::chain::{common_levels, join_tail, match_filter_tail, split_tail_at, strip_tail};
use crate::topic::{is_dollar_topic, split_first};

mod subs;
use subs::Subs;

/// A node's literal children by level. foldhash, randomly seeded per map, rather than
/// std's SipHash: hashing each level of every published topic was ~160 instructions a
/// message in fan-in (callgrind), and foldhash keeps the seed an attacker would need to
/// aim topic levels at one bucket unknown to them.
type Children<V> = HashMap<Box<str>, Box<Node<V>>, foldhash::fast::RandomState>;

struct Node<V> {
    /// Levels after the one that keys this node in its parent, up to where it branches
    /// or holds subscribers (see [`crate::chain`]); `None` at the root and for a node
    /// that is just its key.
    tail: Option<Box<str>>,
    /// Boxed: a leaf (most nodes) then costs a pointer in its parent's table, not a
    /// whole node per bucket of the table's spare capacity.
    /// The map itself is boxed and absent on leaves (most nodes): 8 bytes a leaf where an
    /// empty map would cost 48.
    #[allow(clippy::box_collection)]
    children: Option<Box<Children<V>>>,
    plus: Option<Box<Node<V>>>,
    /// Filters ending at this node.
    subs: Subs<V>,
    /// Filters ending with this node followed by `#` (the root's are those of `#`).
    /// Boxed and absent while there are none (most nodes): a leaf is 72 bytes, not 96,
    /// and every subscribed topic has one (see docs/BENCHMARKS.md, "Idle connection,
    /// byte by byte").
    hash: Option<Box<Subs<V>>>,
}

impl<V> Node<V> {
    fn new() -> Self {
        Node::with_tail(None)
    }

    fn with_tail(tail: Option<Box<str>>) -> Self {
        Node {
            tail,
            children: None,
            plus: None,
            subs: Subs::new(),
            hash: None,
        }
    }

    fn branches(&self) -> usize {
        self.children.as_ref().map_or(0, |c| c.len()) + usize::from(self.plus.is_some())
    }

    fn is_empty(&self) -> bool {
        self.subs.is_empty() && self.hash.is_none() && self.branches() == 0
    }

    /// The child for filter level `level` (`+` or a literal).
    #[inline]
    fn child(&self, level: &str) -> Option<&Node<V>> {
        if level == "+" {
            self.plus.as_deref()
        } else {
            self.children
                .as_ref()
                .and_then(|c| c.get(level))
                .map(|n| &**n)
        }
    }

    #[inline]
    fn child_mut(&mut self, level: &str) -> Option<&mut Node<V>> {
        if level == "+" {
            self.plus.as_deref_mut()
        } else {
            self.children
                .as_mut()
                .and_then(|c| c.get_mut(level))
                .map(|n| &mut **n)
        }
    }

    /// The slot holding the child for `level`, to replace the child in place.
    fn slot_mut(&mut self, level: &str) -> Option<&mut Box<Node<V>>> {
        if level == "+" {
            self.plus.as_mut()
        } else {
            self.children.as_mut().and_then(|c| c.get_mut(level))
        }
    }

    /// Adds `child` under `level` (which must be free) and returns it.
    fn put_child(&mut self, level: &str, child: Box<Node<V>>) -> &mut Node<V> {
        if level == "+" {
            return self.plus.insert(child);
        }
        self.children
            .get_or_insert_default()
            .entry(level.into())
            .or_insert(child)
    }

    /// Takes in the only child of a node that holds no subscribers itself, so that a
    /// chain of levels stays one node after the branch beside it went away.
    fn merge_only_child(&mut self) {
        let (key, mut child): (Box<str>, Box<Node<V>>) =
            match (self.plus.take(), self.children.take()) {
                (Some(plus), None) => ("+".into(), plus),
                (None, Some(children)) if children.len() == 1 => {
                    let Some((key, child)) = children.into_iter().next() else {
                        return;
                    };
                    (key, child)
                }
                (plus, children) => {
                    // Not a single branch: leave it as it was.
                    self.plus = plus;
                    self.children = children;
                    return;
                }
            };
        self.tail = Some(join_tail(self.tail.as_deref(), &key, child.tail.as_deref()));
        self.children = child.children.take();
        self.plus = child.plus.take();
        self.subs = std::mem::replace(&mut child.subs, Subs::new());
        self.hash = child.hash.take();
    }

    fn remove_child(&mut self, level: &str) {
        if level == "+" {
            self.plus = None;
        } else {
            let Some(children) = &mut self.children else {
                return;
            };
            children.remove(level);
            let cap = children.capacity();
            if children.is_empty() {
                self.children = None;
            } else if cap > 32 && children.len() * 4 < cap {
                children.shrink_to(children.len() * 2);
            }
        }
    }
}

impl<V> Drop for Node<V> {
    /// Dismantles the subtree with a loop: the default recursive drop could overflow the
    /// stack on a filter with tens of thousands of levels.
    fn drop(&mut self) {
        if self.branches() == 0 {
            return;
        }
        let mut stack: Vec<Node<V>> = self
            .children
            .take()
            .into_iter()
            .flat_map(|c| c.into_values().map(|n| *n))
            .collect();
        stack.extend(self.plus.take().map(|p| *p));
        while let Some(mut node) = stack.pop() {
            if let Some(c) = node.children.take() {
                stack.extend(c.into_values().map(|n| *n));
            }
            stack.extend(node.plus.take().map(|p| *p));
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
        let subs = if hash {
            &mut **node.hash.get_or_insert_with(|| Box::new(Subs::new()))
        } else {
            &mut node.subs
        };
        let new = subs.insert(id, value);
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
        let removed = if hash {
            let Some(subs) = node.hash.as_mut() else {
                return false;
            };
            let removed = subs.remove(id);
            if subs.is_empty() {
                node.hash = None;
            }
            removed
        } else {
            node.subs.remove(id)
        };
        if removed.is_none() {
            return false;
        }
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
            if node.subs.is_empty() && node.hash.is_none() && node.branches() == 1 {
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
            if let Some(hash) = &root.hash {
                filters += hash.visit(&mut f);
            }
            if let Some(plus) = root.plus.as_deref() {
                stack.push((plus, rest));
            }
        }
        if let Some(child) = root.children.as_ref().and_then(|c| c.get(first)) {
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
                if let Some(hash) = &node.hash {
                    filters += hash.visit(&mut f);
                }
                let Some(r) = rest else {
                    filters += node.subs.visit(&mut f);
                    break;
                };
                let (level, next) = split_first(r);
                let exact = node
                    .children
                    .as_ref()
                    .and_then(|c| c.get(level))
                    .map(|n| &**n);
                rest = next;
                node = match (exact, node.plus.as_deref()) {
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
        let subs = if hash {
            node.hash.as_deref()?
        } else {
            &node.subs
        };
        let i = subs.position(id)?;
        subs.list.get(i).map(|(_, v)| v)
    }

    /// The value of `id`'s subscription to exactly `filter`, to change in place.
    pub fn get_mut(&mut self, filter: &str, id: u64) -> Option<&mut V> {
        let (path, hash) = split_filter(filter);
        let node = self.find_mut(path)?;
        let subs = if hash {
            node.hash.as_deref_mut()?
        } else {
            &mut node.subs
        };
        let i = subs.position(id)?;
        subs.list.get_mut(i).map(|(_, v)| v)
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
