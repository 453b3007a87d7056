//! Unit tests of [`super`]: the retained tree against `topic::matches`, its pruning and chains of
//! levels held as one node, and deep topics.

use super::*;
use crate::testing::{random_levels_upto, XorShift, FILTER_LEVELS, TOPIC_LEVELS};
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
    assert!(
        bytes < deep.len() + 1024,
        "{bytes} bytes for {}",
        deep.len()
    );
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
    assert!(r.matching(&format!("/{deep}+")).is_empty());
    assert_eq!(r.remove(&deep), Some(1));
    assert_eq!(r.remove(&format!("{deep}a")), Some(2));
    assert!(r.is_empty());
    r.set(&deep, 3);
    drop(r);
}

/// Random inserts and removals of topics of up to `max_levels` levels, and filters of as
/// many, checked against a plain `matches` over a reference map after every round.
fn randomized_against_matches_upto(max_levels: usize) {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut r = RetainTree::default();
    let mut reference: HashMap<String, u32> = HashMap::new();
    let mut value = 0;
    for _ in 0..6 {
        for _ in 0..150 {
            let topic = random_levels_upto(&mut rng, &TOPIC_LEVELS, max_levels);
            if topic.is_empty() {
                continue;
            }
            value += 1;
            assert_eq!(r.insert(&topic, value), reference.insert(topic, value));
        }
        for _ in 0..100 {
            let topic = random_levels_upto(&mut rng, &TOPIC_LEVELS, max_levels);
            assert_eq!(r.remove(&topic), reference.remove(&topic), "{topic:?}");
        }
        assert_eq!(r.len(), reference.len());
        assert_compressed(&r.root, true);
        let mut checked = 0;
        while checked < 600 {
            let filter = random_levels_upto(&mut rng, &FILTER_LEVELS, max_levels);
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
fn randomized_against_matches() {
    randomized_against_matches_upto(4);
}

#[test]
fn randomized_deep_against_matches() {
    // Deeper topics exercise the chains of levels held as one node.
    randomized_against_matches_upto(9);
}
