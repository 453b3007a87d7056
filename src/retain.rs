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
    common_levels, filter_through_tail, join_tail, split_first, split_tail_at, strip_tail,
    FilterThroughTail,
};
use crate::topic::valid_topic_name;

struct Node<V> {
    /// Levels after the key of this node, up to where it branches or holds a value.
    tail: Option<Box<str>>,
    children: HashMap<Box<str>, Node<V>>,
    value: Option<V>,
}

impl<V> Node<V> {
    fn new() -> Self {
        Node::with_tail(None)
    }

    fn with_tail(tail: Option<Box<str>>) -> Self {
        Node {
            tail,
            children: HashMap::new(),
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

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every retained value.
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
mod tests {
    use super::*;
    use crate::testing::{random_levels, random_levels_upto, XorShift, FILTER_LEVELS, TOPIC_LEVELS};
    use crate::topic::{matches, valid_topic_filter};
    use std::collections::HashMap;

    fn sorted(mut v: Vec<u32>) -> Vec<u32> {
        v.sort();
        v
    }

    fn node_count<V>(node: &Node<V>) -> usize {
        1 + node.children.values().map(node_count).sum::<usize>()
    }

    fn sample() -> RetainTree<u32> {
        let mut r = RetainTree::default();
        for (i, t) in [
            "sport",
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
            "sport/tennis/player2",
            "/finance",
            "finance",
            "$SYS/monitor/Clients",
            "$SYS",
            "a//b",
            "a/",
            "/",
        ]
        .into_iter()
        .enumerate()
        {
            r.set(t, i as u32);
        }
        r
    }

    #[test]
    fn spec_examples() {
        let r = sample();
        assert_eq!(r.len(), 12);
        assert_eq!(sorted(r.matching("sport/tennis/player1/#")), [1, 2, 3]);
        assert_eq!(sorted(r.matching("sport/#")), [0, 1, 2, 3, 4]);
        assert_eq!(sorted(r.matching("sport/tennis/+")), [1, 4]);
        assert_eq!(sorted(r.matching("+/+")), [5, 10, 11]);
        assert_eq!(sorted(r.matching("/+")), [5, 11]);
        assert_eq!(sorted(r.matching("+")), [0, 6]);
        assert_eq!(sorted(r.matching("a/+/b")), [9]);
        assert_eq!(sorted(r.matching("a/+")), [10]);
        assert_eq!(sorted(r.matching("sport/tennis/player1")), [1]);
        assert!(r.matching("sport/tennis").is_empty());
        assert!(r.matching("nothing/#").is_empty());
        assert_eq!(sorted(r.matching("#")), [0, 1, 2, 3, 4, 5, 6, 9, 10, 11]);
    }

    #[test]
    fn dollar_rule() {
        let r = sample();
        assert!(r.matching("+/monitor/Clients").is_empty());
        assert!(!r.matching("#").contains(&7));
        assert_eq!(sorted(r.matching("$SYS/#")), [7, 8]);
        assert_eq!(sorted(r.matching("$SYS/monitor/+")), [7]);
        assert_eq!(sorted(r.matching("$SYS/monitor/Clients")), [7]);
        assert_eq!(sorted(r.matching("+")), [0, 6]);
        let mut r = RetainTree::default();
        r.set("a/$x", 1);
        assert_eq!(r.matching("a/+"), [1]);
        assert_eq!(r.matching("+/+"), [1]);
    }

    #[test]
    fn set_replace_remove_prune() {
        let mut r = RetainTree::default();
        assert!(r.is_empty());
        r.set("a/b/c", 1);
        r.set("a/b/c", 2);
        assert_eq!(r.len(), 1);
        assert_eq!(r.get("a/b/c"), Some(&2));
        assert_eq!(r.insert("a/b/c", 3), Some(2));
        r.set("a", 4);
        r.set("a/b/d/e", 5);
        assert_eq!(r.len(), 3);
        // root, a, b, c, and "d/e" as one node
        assert_eq!(node_count(&r.root), 5);
        assert_eq!(r.remove("a/b"), None);
        assert_eq!(r.remove("a/b/x"), None);
        assert_eq!(r.remove("a/b/c/d"), None);
        assert_eq!(r.len(), 3);
        assert_eq!(r.remove("a/b/d/e"), Some(5));
        assert_eq!(r.remove("a/b/d/e"), None);
        assert_eq!(node_count(&r.root), 3, "b and c rejoined");
        assert_eq!(r.remove("a/b/c"), Some(3));
        assert_eq!(node_count(&r.root), 2);
        assert_eq!(r.remove("a"), Some(4));
        assert_eq!(node_count(&r.root), 1);
        assert!(r.is_empty());
        assert!(r.matching("#").is_empty());
    }

    #[test]
    fn for_each_and_clear() {
        let mut r = sample();
        let mut all = Vec::new();
        r.for_each(|t, v| all.push((t.to_string(), *v)));
        all.sort_by_key(|e| e.1);
        let topics: Vec<&str> = all.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            topics,
            [
                "sport",
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "sport/tennis/player1/score/wimbledon",
                "sport/tennis/player2",
                "/finance",
                "finance",
                "$SYS/monitor/Clients",
                "$SYS",
                "a//b",
                "a/",
                "/",
            ]
        );
        r.clear();
        assert!(r.is_empty());
        assert!(r.matching("#").is_empty());
    }

    /// Every node below the root holds a value or branches.
    fn assert_compressed<V>(node: &Node<V>, is_root: bool) {
        if !is_root {
            assert!(
                node.value.is_some() || node.children.len() >= 2,
                "a node with no value and {} children",
                node.children.len()
            );
        }
        for n in node.children.values() {
            assert_compressed(n, false);
        }
    }

    fn approx_bytes<V>(node: &Node<V>) -> usize {
        std::mem::size_of::<Node<V>>()
            + node.tail.as_ref().map_or(0, |t| t.len())
            + node
                .children
                .iter()
                .map(|(k, n)| k.len() + std::mem::size_of::<Box<str>>() + approx_bytes(n))
                .sum::<usize>()
    }

    #[test]
    fn deep_topics_cost_about_their_bytes() {
        let mut r = RetainTree::default();
        let deep = format!("a{}", "/x".repeat(60_000));
        r.set(&deep, 1);
        assert_eq!(node_count(&r.root), 2);
        let bytes = approx_bytes(&r.root);
        assert!(bytes < deep.len() + 1024, "{bytes} bytes for {}", deep.len());
        let half = format!("a{}/y", "/x".repeat(30_000));
        r.set(&half, 2);
        assert_eq!(node_count(&r.root), 4);
        assert_eq!(r.matching(&format!("a{}/+", "/x".repeat(30_000))), [2]);
        assert_eq!(sorted(r.matching("a/#")), [1, 2]);
        assert_eq!(sorted(r.matching("+/x/#")), [1, 2]);
        assert_eq!(r.matching("a/x/+"), Vec::<u32>::new());
        assert_eq!(r.remove(&half), Some(2));
        assert_eq!(node_count(&r.root), 2, "one node again");
        let mut all = Vec::new();
        r.for_each(|t, v| all.push((t.to_string(), *v)));
        assert_eq!(all, [(deep.clone(), 1)]);
    }

    #[test]
    fn deep_topics_do_not_overflow() {
        let deep = "/".repeat(100_000);
        let mut r = RetainTree::default();
        r.set(&deep, 1);
        r.set(&format!("{deep}a"), 2);
        assert_eq!(sorted(r.matching("#")), [1, 2]);
        assert_eq!(sorted(r.matching(&format!("{deep}+"))), [1, 2]);
        assert_eq!(r.matching(&format!("{deep}a")), [2]);
        assert_eq!(r.matching(&format!("/{deep}+")), []);
        assert_eq!(r.remove(&deep), Some(1));
        assert_eq!(r.remove(&format!("{deep}a")), Some(2));
        assert!(r.is_empty());
        r.set(&deep, 3);
        drop(r);
    }

    #[test]
    fn randomized_against_matches() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut r = RetainTree::default();
        let mut reference: HashMap<String, u32> = HashMap::new();
        let mut value = 0;
        for _ in 0..6 {
            for _ in 0..150 {
                let topic = random_levels(&mut rng, &TOPIC_LEVELS);
                if topic.is_empty() {
                    continue;
                }
                value += 1;
                assert_eq!(r.insert(&topic, value), reference.insert(topic, value));
            }
            for _ in 0..100 {
                let topic = random_levels(&mut rng, &TOPIC_LEVELS);
                assert_eq!(r.remove(&topic), reference.remove(&topic), "{topic:?}");
            }
            assert_eq!(r.len(), reference.len());
            assert_compressed(&r.root, true);
            let mut checked = 0;
            while checked < 600 {
                let filter = random_levels(&mut rng, &FILTER_LEVELS);
                if !valid_topic_filter(&filter) {
                    continue;
                }
                checked += 1;
                let expected: Vec<u32> = reference
                    .iter()
                    .filter(|(t, _)| matches(&filter, t))
                    .map(|(_, v)| *v)
                    .collect();
                assert_eq!(sorted(r.matching(&filter)), sorted(expected), "{filter:?}");
            }
        }
        let topics: Vec<String> = reference.keys().cloned().collect();
        for t in topics {
            assert_eq!(r.remove(&t), reference.remove(&t));
        }
        assert!(r.is_empty());
        assert_eq!(node_count(&r.root), 1, "all branches pruned");
    }

    #[test]
    fn randomized_deep_against_matches() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut r = RetainTree::default();
        let mut reference: HashMap<String, u32> = HashMap::new();
        let mut value = 0;
        for _ in 0..6 {
            for _ in 0..150 {
                let topic = random_levels_upto(&mut rng, &TOPIC_LEVELS, 9);
                if topic.is_empty() {
                    continue;
                }
                value += 1;
                assert_eq!(r.insert(&topic, value), reference.insert(topic, value));
            }
            for _ in 0..100 {
                let topic = random_levels_upto(&mut rng, &TOPIC_LEVELS, 9);
                assert_eq!(r.remove(&topic), reference.remove(&topic), "{topic:?}");
            }
            assert_eq!(r.len(), reference.len());
            assert_compressed(&r.root, true);
            let mut checked = 0;
            while checked < 600 {
                let filter = random_levels_upto(&mut rng, &FILTER_LEVELS, 9);
                if !valid_topic_filter(&filter) {
                    continue;
                }
                checked += 1;
                let expected: Vec<u32> = reference
                    .iter()
                    .filter(|(t, _)| matches(&filter, t))
                    .map(|(_, v)| *v)
                    .collect();
                assert_eq!(sorted(r.matching(&filter)), sorted(expected), "{filter:?}");
            }
        }
        let topics: Vec<String> = reference.keys().cloned().collect();
        for t in topics {
            assert_eq!(r.remove(&t), reference.remove(&t));
        }
        assert!(r.is_empty());
        assert_eq!(node_count(&r.root), 1, "all branches pruned");
    }
}
