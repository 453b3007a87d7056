//! Retained messages: the last retained message per topic, found again by topic filter
//! when a client subscribes.
//!
//! Topics are stored level by level in a tree whose nodes hold their children in a hash
//! map keyed by level and, optionally, the retained value of the topic ending there. A
//! run of levels no other topic branches from is one node (its *tail*, see
//! [`crate::chain`]), so a topic costs about its bytes however many levels it has. A
//! filter walks only the branches it can reach: a literal level follows one child, `+`
//! every child, `#` collects a whole subtree. Nothing recurses, so topics with tens of
//! thousands of levels are harmless.

use std::collections::HashMap;

use crate::chain::{
    common_levels, filter_through_tail, join_tail, split_tail_at, strip_tail, FilterThroughTail,
};
use crate::topic::{split_first, valid_topic_name};

struct Node<V> {
    /// Levels after the key of this node, up to where it branches or holds a value.
    tail: Option<Box<str>>,
    /// foldhash, as the subscription trie's children (see `router::trie`).
    children: HashMap<Box<str>, Node<V>, foldhash::fast::RandomState>,
    value: Option<V>,
}

impl<V> Node<V> {
    fn new() -> Self {
        Node::with_tail(None)
    }

    fn with_tail(tail: Option<Box<str>>) -> Self {
        Node {
            tail,
            children: HashMap::default(),
            value: None,
        }
    }

    /// Takes in the only child of a node without a value, so that a chain of levels
    /// stays one node after the branch beside it went away.
    fn merge_only_child(&mut self) {
        if self.children.len() != 1 || self.value.is_some() {
            return;
        }
        let Some((key, mut child)) = self.children.drain().next() else {
            return;
        };
        self.tail = Some(join_tail(self.tail.as_deref(), &key, child.tail.as_deref()));
        self.children = std::mem::take(&mut child.children);
        self.value = child.value.take();
    }

    fn remove_child(&mut self, key: &str) {
        self.children.remove(key);
        let cap = self.children.capacity();
        if cap > 32 && self.children.len() * 4 < cap {
            self.children.shrink_to(self.children.len() * 2);
        }
    }
}

impl<V> Drop for Node<V> {
    /// Dismantles the subtree with a loop: the default recursive drop could overflow the
    /// stack on a deeply branching tree.
    fn drop(&mut self) {
        if self.children.is_empty() {
            return;
        }
        let mut stack: Vec<Node<V>> = self.children.drain().map(|(_, n)| n).collect();
        while let Some(mut node) = stack.pop() {
            stack.extend(node.children.drain().map(|(_, n)| n));
        }
    }
}

/// Retained values by topic name, stored level by level so that a wildcard filter visits
/// only the branches it can match.
pub struct RetainTree<V> {
    root: Node<V>,
    len: usize,
}

impl<V> Default for RetainTree<V> {
    fn default() -> Self {
        RetainTree {
            root: Node::new(),
            len: 0,
        }
    }
}

impl<V: Clone> RetainTree<V> {
    /// Every retained value whose topic matches `filter`, honouring the `$` rule.
    pub fn matching(&self, filter: &str) -> Vec<V> {
        let mut out = Vec::new();
        self.for_each_matching(filter, |v| out.push(v.clone()));
        out
    }
}

impl<V> RetainTree<V> {
    /// Stores `value` as the retained message of `topic`, replacing any previous one.
    pub fn set(&mut self, topic: &str, value: V) {
        self.insert(topic, value);
    }

    /// Stores `value` as the retained message of `topic`; returns the previous one.
    pub fn insert(&mut self, topic: &str, value: V) -> Option<V> {
        debug_assert!(valid_topic_name(topic), "{topic:?}");
        let mut node = &mut self.root;
        let mut rest = Some(topic);
        while let Some(r) = rest {
            let (level, next) = split_first(r);
            if !node.children.contains_key(level) {
                // Nothing below here yet: the rest of the topic is one new node.
                node = node
                    .children
                    .entry(level.into())
                    .or_insert(Node::with_tail(next.map(Into::into)));
                break;
            }
            let Some(slot) = node.children.get_mut(level) else {
                return None; // unreachable: the child exists (checked above)
            };
            let through = match &slot.tail {
                None => Some(next),
                Some(tail) => strip_tail(tail, next),
            };
            if let Some(after) = through {
                node = slot;
                rest = after;
                continue;
            }
            // The topic leaves the child's chain part-way: split it where they part.
            let Some(tail) = slot.tail.take() else {
                return None; // unreachable: a node without a tail is always gone through
            };
            let (k, after) = common_levels(&tail, next);
            let (before, at, below) = split_tail_at(&tail, k);
            let mut lower = std::mem::replace(slot, Node::with_tail(before));
            lower.tail = below;
            slot.children.insert(at.into(), lower);
            node = slot;
            rest = after;
        }
        let old = node.value.replace(value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Clears the retained message of `topic` (a retained PUBLISH with empty payload).
    /// Prunes empty branches and rejoins chains. Returns the removed value.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        // The key of each node on the way, to come back for pruning.
        let mut keys: Vec<&str> = Vec::new();
        let mut node = &mut self.root;
        let mut rest = Some(topic);
        while let Some(r) = rest {
            let (level, next) = split_first(r);
            node = node.children.get_mut(level)?;
            keys.push(level);
            rest = match &node.tail {
                None => next,
                Some(tail) => strip_tail(tail, next)?,
            };
        }
        let old = node.value.take()?;
        self.len -= 1;
        self.tidy(&keys);
        Some(old)
    }

    /// After a removal at the node reached through `keys`: removes the nodes left empty
    /// going up, and merges the first one left with a single child and no value into
    /// that child.
    fn tidy(&mut self, keys: &[&str]) {
        let mut depth = keys.len();
        while depth > 0 {
            let Some(node) = self.node_at_mut(&keys[..depth]) else {
                return;
            };
            if node.value.is_none() && node.children.is_empty() {
                if let Some(parent) = self.node_at_mut(&keys[..depth - 1]) {
                    parent.remove_child(keys[depth - 1]);
                }
                depth -= 1;
                continue;
            }
            node.merge_only_child();
            return;
        }
    }

    fn node_at_mut(&mut self, keys: &[&str]) -> Option<&mut Node<V>> {
        let mut node = &mut self.root;
        for key in keys {
            node = node.children.get_mut(*key)?;
        }
        Some(node)
    }

    /// The retained value of exactly `topic`.
    pub fn get(&self, topic: &str) -> Option<&V> {
        let mut node = &self.root;
        let mut rest = Some(topic);
        while let Some(r) = rest {
            let (level, next) = split_first(r);
            node = node.children.get(level)?;
            rest = match &node.tail {
                None => next,
                Some(tail) => strip_tail(tail, next)?,
            };
        }
        node.value.as_ref()
    }

    /// Calls `f(value)` for every retained value whose topic matches `filter`, honouring
    /// the `$` rule, without cloning (in no particular order).
    pub fn for_each_matching(&self, filter: &str, mut f: impl FnMut(&V)) {
        // A filter without wildcards names one topic.
        if !filter.bytes().any(|b| b == b'+' || b == b'#') {
            if let Some(v) = self.get(filter) {
                f(v);
            }
            return;
        }
        // (node, rest of the filter to apply below it, whether node is the root)
        let mut pending: Vec<(&Node<V>, &str, bool)> = vec![(&self.root, filter, true)];
        // Subtrees collected whole by '#'.
        let mut whole: Vec<&Node<V>> = Vec::new();
        while let Some((node, filter, at_root)) = pending.pop() {
            let (level, rest) = split_first(filter);
            // Wildcards at the first level do not match topics starting with '$'.
            let visible = |key: &str| !at_root || !key.starts_with('$');
            match level {
                "#" => {
                    // '#' also matches the parent level ("a/#" matches "a").
                    if let Some(v) = &node.value {
                        f(v);
                    }
                    whole.extend(
                        node.children
                            .iter()
                            .filter(|(key, _)| visible(key))
                            .map(|(_, child)| child),
                    );
                }
                "+" => {
                    for (key, child) in &node.children {
                        if visible(key) {
                            match through(child, rest) {
                                FilterThroughTail::Through(None) => {
                                    if let Some(v) = &child.value {
                                        f(v);
                                    }
                                }
                                FilterThroughTail::Through(Some(r)) => {
                                    pending.push((child, r, false))
                                }
                                FilterThroughTail::All => whole.push(child),
                                FilterThroughTail::Fail => {}
                            }
                        }
                    }
                }
                literal => {
                    if let Some(child) = node.children.get(literal) {
                        match through(child, rest) {
                            FilterThroughTail::Through(None) => {
                                if let Some(v) = &child.value {
                                    f(v);
                                }
                            }
                            FilterThroughTail::Through(Some(r)) => pending.push((child, r, false)),
                            FilterThroughTail::All => whole.push(child),
                            FilterThroughTail::Fail => {}
                        }
                    }
                }
            }
            while let Some(n) = whole.pop() {
                if let Some(v) = &n.value {
                    f(v);
                }
                whole.extend(n.children.values());
            }
        }
    }

    /// Calls `f(topic, value)` for every retained value (in no particular order), e.g.
    /// to persist them.
    #[cfg(test)]
    pub fn for_each(&self, mut f: impl FnMut(&str, &V)) {
        let mut topic = String::new();
        // (node, key, length of the parent's topic or None for children of the root)
        let mut stack: Vec<(&Node<V>, &str, Option<usize>)> = self
            .root
            .children
            .iter()
            .map(|(k, n)| (n, &**k, None))
            .collect();
        while let Some((node, key, parent)) = stack.pop() {
            match parent {
                None => topic.clear(),
                Some(len) => {
                    topic.truncate(len);
                    topic.push('/');
                }
            }
            topic.push_str(key);
            if let Some(tail) = &node.tail {
                topic.push('/');
                topic.push_str(tail);
            }
            if let Some(v) = &node.value {
                f(&topic, v);
            }
            let len = topic.len();
            stack.extend(node.children.iter().map(|(k, n)| (n, &**k, Some(len))));
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every retained value.
    #[cfg(test)]
    pub fn clear(&mut self) {
        self.root = Node::new();
        self.len = 0;
    }
}

/// A child reached by a filter level: its tail against the rest of the filter.
#[inline]
fn through<'a, V>(child: &Node<V>, rest: Option<&'a str>) -> FilterThroughTail<'a> {
    match &child.tail {
        None => FilterThroughTail::Through(rest),
        Some(tail) => filter_through_tail(tail, rest),
    }
}

#[cfg(test)]
#[path = "retain_tests.rs"]
mod tests;
