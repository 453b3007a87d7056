//! Retained messages: the last retained message per topic, found again by topic filter
//! when a client subscribes.
//!
//! Topics are stored level by level in a tree whose nodes hold their children in a hash
//! map keyed by level and, optionally, the retained value of the topic ending there. A
//! filter walks only the branches it can reach: a literal level follows one child, `+`
//! every child, `#` collects a whole subtree. Nothing recurses, so topics with tens of
//! thousands of levels are harmless.

use std::collections::HashMap;

use crate::topic::valid_topic_name;

struct Node<V> {
    children: HashMap<Box<str>, Node<V>>,
    value: Option<V>,
}

impl<V> Node<V> {
    fn new() -> Self {
        Node {
            children: HashMap::new(),
            value: None,
        }
    }
}

impl<V> Drop for Node<V> {
    /// Dismantles the subtree with a loop: the default recursive drop could overflow the
    /// stack on a topic with tens of thousands of levels.
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

/// First level of `s` and the rest after the separator, if there is one.
#[inline]
fn split_first(s: &str) -> (&str, Option<&str>) {
    match s.split_once('/') {
        Some((first, rest)) => (first, Some(rest)),
        None => (s, None),
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
        for level in topic.split('/') {
            if !node.children.contains_key(level) {
                node.children.insert(level.into(), Node::new());
            }
            node = node.children.get_mut(level).expect("just inserted") // ok: inserted on the line above;
        }
        let old = node.value.replace(value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Clears the retained message of `topic` (a retained PUBLISH with empty payload).
    /// Prunes empty branches. Returns the removed value.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        let mut node = &mut self.root;
        for level in topic.split('/') {
            node = node.children.get_mut(level)?;
        }
        let old = node.value.take()?;
        self.len -= 1;
        if node.children.is_empty() {
            self.prune(topic);
        }
        Some(old)
    }

    /// Removes the longest chain of nodes at the end of `topic` that holds nothing but
    /// the path itself. The node at the end of `topic` must be empty.
    fn prune(&mut self, topic: &str) {
        // Depth (1 = child of the root) of the first node of that chain.
        let mut cut = None;
        let mut node = &self.root;
        for (i, level) in topic.split('/').enumerate() {
            let Some(next) = node.children.get(level) else {
                return;
            };
            node = next;
            if node.value.is_none() && node.children.len() <= 1 {
                cut.get_or_insert(i + 1);
            } else {
                cut = None;
            }
        }
        let Some(cut) = cut else { return };
        let mut node = &mut self.root;
        for (i, level) in topic.split('/').enumerate() {
            if i + 1 == cut {
                node.children.remove(level);
                let cap = node.children.capacity();
                if cap > 32 && node.children.len() * 4 < cap {
                    node.children.shrink_to(node.children.len() * 2);
                }
                return;
            }
            let Some(next) = node.children.get_mut(level) else {
                return;
            };
            node = next;
        }
    }

    /// The retained value of exactly `topic`.
    pub fn get(&self, topic: &str) -> Option<&V> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
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
                    while let Some(n) = whole.pop() {
                        if let Some(v) = &n.value {
                            f(v);
                        }
                        whole.extend(n.children.values());
                    }
                }
                "+" => {
                    for (key, child) in &node.children {
                        if !visible(key) {
                            continue;
                        }
                        match rest {
                            None => {
                                if let Some(v) = &child.value {
                                    f(v);
                                }
                            }
                            Some(rest) => pending.push((child, rest, false)),
                        }
                    }
                }
                literal => {
                    if let Some(child) = node.children.get(literal) {
                        match rest {
                            None => {
                                if let Some(v) = &child.value {
                                    f(v);
                                }
                            }
                            Some(rest) => pending.push((child, rest, false)),
                        }
                    }
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{random_levels, XorShift, FILTER_LEVELS, TOPIC_LEVELS};
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
        // root, a, b, c, d, e
        assert_eq!(node_count(&r.root), 6);
        assert_eq!(r.remove("a/b"), None);
        assert_eq!(r.remove("a/b/x"), None);
        assert_eq!(r.remove("a/b/c/d"), None);
        assert_eq!(r.len(), 3);
        assert_eq!(r.remove("a/b/d/e"), Some(5));
        assert_eq!(r.remove("a/b/d/e"), None);
        assert_eq!(node_count(&r.root), 4);
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
}
