//! Unit tests of [`super`]: the subscription trie against `topic::matches`, its pruning and chains of
//! levels held as one node, and deep topics.

use super::*;
use crate::testing::{random_levels_upto, XorShift, FILTER_LEVELS, TOPIC_LEVELS};
use crate::topic::{matches, valid_topic_filter};
use std::collections::HashMap;

fn matched<V: Clone + Ord>(trie: &SubscriptionTrie<V>, topic: &str) -> Vec<(u64, V)> {
    let mut out = Vec::new();
    trie.for_each_match(topic, |id, v| out.push((id, v.clone())));
    out.sort();
    out
}

fn ids(trie: &SubscriptionTrie<&'static str>, topic: &str) -> Vec<u64> {
    let mut out: Vec<u64> = matched(trie, topic).into_iter().map(|e| e.0).collect();
    out.dedup();
    out
}

fn node_count<V>(node: &Node<V>) -> usize {
    1 + node
        .children
        .as_ref()
        .map_or(0, |c| c.values().map(|n| node_count(n)).sum::<usize>())
        + node.plus.as_deref().map_or(0, node_count)
}

#[test]
fn spec_examples() {
    let mut t = SubscriptionTrie::default();
    t.insert("sport/tennis/player1/#", 1, "f");
    assert_eq!(ids(&t, "sport/tennis/player1"), [1]);
    assert_eq!(ids(&t, "sport/tennis/player1/ranking"), [1]);
    assert_eq!(ids(&t, "sport/tennis/player1/score/wimbledon"), [1]);
    assert!(ids(&t, "sport/tennis/player2").is_empty());
    assert!(ids(&t, "sport/tennis").is_empty());

    let mut t = SubscriptionTrie::default();
    t.insert("sport/#", 1, "f");
    assert_eq!(ids(&t, "sport"), [1]);
    assert_eq!(ids(&t, "sport/"), [1]);
    assert!(ids(&t, "sports").is_empty());

    let mut t = SubscriptionTrie::default();
    t.insert("+/+", 1, "a");
    t.insert("/+", 2, "b");
    t.insert("+", 3, "c");
    assert_eq!(ids(&t, "/finance"), [1, 2]);
    assert_eq!(ids(&t, "finance"), [3]);
    assert_eq!(ids(&t, "/"), [1, 2]);

    let mut t = SubscriptionTrie::default();
    t.insert("sport/tennis/+", 1, "a");
    assert_eq!(ids(&t, "sport/tennis/player1"), [1]);
    assert!(ids(&t, "sport/tennis/player1/ranking").is_empty());
    assert!(ids(&t, "sport/tennis").is_empty());
}

#[test]
fn dollar_rule() {
    let mut t = SubscriptionTrie::default();
    t.insert("#", 1, "");
    t.insert("+/monitor/Clients", 2, "");
    t.insert("$SYS/#", 3, "");
    t.insert("$SYS/monitor/+", 4, "");
    t.insert("+/#", 5, "");
    t.insert("+", 6, "");
    assert_eq!(ids(&t, "$SYS/monitor/Clients"), [3, 4]);
    assert_eq!(ids(&t, "$SYS"), [3]);
    assert_eq!(ids(&t, "x/monitor/Clients"), [1, 2, 5]);
    assert_eq!(ids(&t, "a/$SYS"), [1, 5]);
}

#[test]
fn empty_levels() {
    let mut t = SubscriptionTrie::default();
    t.insert("a//b", 1, "");
    t.insert("/a", 2, "");
    t.insert("a/", 3, "");
    t.insert("a", 4, "");
    t.insert("a/+/b", 5, "");
    assert_eq!(ids(&t, "a//b"), [1, 5]);
    assert_eq!(ids(&t, "/a"), [2]);
    assert_eq!(ids(&t, "a/"), [3]);
    assert_eq!(ids(&t, "a"), [4]);
    assert!(ids(&t, "a/b").is_empty());
}

#[test]
fn insert_replace_remove() {
    let mut t = SubscriptionTrie::default();
    assert!(t.is_empty());
    assert!(t.insert("a/b", 1, 10));
    assert!(!t.insert("a/b", 1, 11), "replacing is not new");
    assert_eq!(t.len(), 1);
    assert_eq!(matched(&t, "a/b"), [(1, 11)]);
    assert!(t.insert("a/b", 2, 20));
    assert!(t.insert("a/#", 1, 12));
    assert!(t.insert("a/+", 1, 13));
    assert!(t.insert("#", 1, 14));
    assert_eq!(t.len(), 5);
    assert!(t.contains("a/#", 1));
    assert!(!t.contains("a/#", 2));
    assert!(!t.contains("a", 1));

    assert!(!t.remove("a/b", 3));
    assert!(!t.remove("a/c", 1));
    assert!(!t.remove("x/y/z", 1));
    assert!(!t.remove("+", 1));
    assert!(!t.remove("a/b/#", 1));
    assert_eq!(t.len(), 5);

    assert!(t.remove("a/b", 1));
    assert!(!t.remove("a/b", 1));
    assert_eq!(matched(&t, "a/b"), [(1, 12), (1, 13), (1, 14), (2, 20)]);
    assert!(t.remove("a/#", 1));
    assert!(t.remove("a/+", 1));
    assert!(t.remove("#", 1));
    assert!(t.remove("a/b", 2));
    assert!(t.is_empty());
    assert!(t.root.is_empty(), "every branch is pruned");
}

#[test]
fn pruning_keeps_shared_branches() {
    let mut t = SubscriptionTrie::default();
    t.insert("a/b/c/d", 1, ());
    t.insert("a/b", 2, ());
    t.insert("a/+/x/#", 3, ());
    t.insert("a/b/c/e", 4, ());
    // root, a, b, c, d, e, and "+/x" as one node
    assert_eq!(node_count(&t.root), 7);
    assert!(t.remove("a/b/c/d", 1));
    // c and e rejoin as one node "c/e"
    assert_eq!(node_count(&t.root), 5);
    assert!(t.contains("a/b/c/e", 4));
    assert!(t.remove("a/b/c/e", 4));
    assert_eq!(node_count(&t.root), 4);
    assert!(t.remove("a/+/x/#", 3));
    // a and b rejoin as "a/b"
    assert_eq!(node_count(&t.root), 2);
    assert!(t.contains("a/b", 2));
    assert!(t.remove("a/b", 2));
    assert_eq!(node_count(&t.root), 1);
}

#[test]
fn overlapping_filters_visited_once_each() {
    let mut t = SubscriptionTrie::default();
    for (i, f) in ["#", "a/#", "a/+", "+/b", "a/b", "+/+", "a/b/#", "a/c"]
        .into_iter()
        .enumerate()
    {
        assert!(t.insert(f, 7, i));
    }
    t.insert("a/b", 8, 100);
    assert_eq!(
        matched(&t, "a/b"),
        [
            (7, 0),
            (7, 1),
            (7, 2),
            (7, 3),
            (7, 4),
            (7, 5),
            (7, 6),
            (8, 100)
        ]
    );
}

#[test]
fn many_subscribers_on_one_filter() {
    let mut t = SubscriptionTrie::default();
    for id in 0..5000u64 {
        assert!(t.insert("big/topic", id, id * 2));
    }
    assert!(!t.insert("big/topic", 1234, 1));
    assert_eq!(t.len(), 5000);
    let mut n = 0;
    t.for_each_match("big/topic", |id, v| {
        n += 1;
        assert_eq!(*v, if id == 1234 { 1 } else { id * 2 });
    });
    assert_eq!(n, 5000);
    for id in (0..5000u64).step_by(2) {
        assert!(t.remove("big/topic", id));
        assert!(!t.remove("big/topic", id));
    }
    assert_eq!(t.len(), 2500);
    for id in 0..5000u64 {
        assert_eq!(t.contains("big/topic", id), id % 2 == 1);
    }
    for id in (1..5000u64).step_by(2) {
        assert!(t.remove("big/topic", id));
    }
    assert!(t.is_empty());
    assert!(t.root.is_empty());
}

#[test]
fn deep_topics_do_not_overflow() {
    let deep = "/".repeat(100_000);
    let plus = vec!["+"; 50_000].join("/");
    let mut t = SubscriptionTrie::default();
    t.insert(&deep, 1, ());
    t.insert(&format!("{deep}/#"), 2, ());
    t.insert(&plus, 3, ());
    assert_eq!(ids_unit(&t, &deep), [1, 2]);
    assert_eq!(ids_unit(&t, &vec![""; 50_000].join("/")), [3]);
    assert!(t.remove(&deep, 1));
    assert!(t.remove(&format!("{deep}/#"), 2));
    assert!(t.remove(&plus, 3));
    assert!(t.root.is_empty());
    // Dropping a deep tree must not recurse either.
    t.insert(&deep, 1, ());
    t.insert(&plus, 3, ());
    drop(t);
}

/// Bytes the nodes of a tree hold: the nodes themselves, their tails and keys, and
/// their child tables (entries only; a table's spare room is not counted).
fn approx_bytes<V>(node: &Node<V>) -> usize {
    let own = std::mem::size_of::<Node<V>>() + node.tail.as_ref().map_or(0, |t| t.len());
    let children = node.children.as_ref().map_or(0, |c| {
        c.iter()
            .map(|(k, n)| {
                k.len() + std::mem::size_of::<(Box<str>, Box<Node<V>>)>() + approx_bytes(n)
            })
            .sum::<usize>()
    });
    own + children + node.plus.as_deref().map_or(0, approx_bytes)
}

/// Every node below the root either holds subscribers or branches: chains are never
/// left split after removals.
fn assert_compressed<V>(node: &Node<V>, is_root: bool) {
    if !is_root {
        assert!(
            !node.subs.is_empty() || node.hash.is_some() || node.branches() >= 2,
            "a node with no subscribers and {} branches",
            node.branches()
        );
    }
    if let Some(c) = &node.children {
        for n in c.values() {
            assert_compressed(n, false);
        }
    }
    if let Some(p) = &node.plus {
        assert_compressed(p, false);
    }
}

#[test]
fn deep_filters_cost_about_their_bytes() {
    let mut t = SubscriptionTrie::default();
    let deep = format!("a{}", "/x".repeat(60_000));
    let plus = vec!["+"; 60_000].join("/");
    assert!(t.insert(&deep, 1, ()));
    assert!(t.insert(&plus, 1, ()));
    assert!(t.insert(&format!("{deep}/#"), 2, ()));
    // root, "a/x/x/...", "+/+/..."; the '#' one shares a's node.
    assert_eq!(node_count(&t.root), 3);
    let bytes = approx_bytes(&t.root);
    let filters = deep.len() + plus.len();
    assert!(
        bytes < filters + 1024,
        "{bytes} bytes for {filters} bytes of filters"
    );
    // A filter branching off half-way splits the chain once.
    let half = format!("a{}/y", "/x".repeat(30_000));
    assert!(t.insert(&half, 3, ()));
    assert_eq!(node_count(&t.root), 5);
    assert_eq!(ids_unit(&t, &half), [3]);
    assert_eq!(ids_unit(&t, &deep), [1, 2]);
    assert!(t.remove(&half, 3));
    assert_eq!(node_count(&t.root), 3, "the chain is one node again");
    assert_eq!(ids_unit(&t, &deep), [1, 2]);
}

fn ids_unit(t: &SubscriptionTrie<()>, topic: &str) -> Vec<u64> {
    let mut out = Vec::new();
    t.for_each_match(topic, |id, _| out.push(id));
    out.sort();
    out
}

#[test]
fn branchy_trie_spills_stack() {
    // Every level has both a literal and a '+' child: many pending branches.
    let mut t = SubscriptionTrie::default();
    let mut expected = 0;
    for mask in 0u32..(1 << 10) {
        let f: Vec<&str> = (0..10)
            .map(|i| if mask & (1 << i) != 0 { "+" } else { "a" })
            .collect();
        t.insert(&f.join("/"), u64::from(mask), ());
        expected += 1;
    }
    let topic = ["a"; 10].join("/");
    assert_eq!(ids_unit(&t, &topic).len(), expected);
}

/// Random inserts and removals of filters of up to `max_levels` levels, checked against
/// a plain `matches` over a reference map after every round.
fn randomized_against_matches_upto(max_levels: usize) {
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let mut t = SubscriptionTrie::default();
    let mut reference: HashMap<(String, u64), u32> = HashMap::new();
    let check =
        |t: &SubscriptionTrie<u32>, reference: &HashMap<(String, u64), u32>, rng: &mut XorShift| {
            assert_eq!(t.len(), reference.len());
            for _ in 0..1000 {
                let topic = random_levels_upto(rng, &TOPIC_LEVELS, max_levels);
                let mut expected: Vec<(u64, u32)> = reference
                    .iter()
                    .filter(|((f, _), _)| matches(f, &topic))
                    .map(|((_, id), v)| (*id, *v))
                    .collect();
                expected.sort();
                assert_eq!(matched(t, &topic), expected, "topic {topic:?}");
            }
        };
    let mut value = 0u32;
    for round in 0..4 {
        for _ in 0..400 {
            let filter = random_levels_upto(&mut rng, &FILTER_LEVELS, max_levels);
            if !valid_topic_filter(&filter) {
                continue;
            }
            let id = rng.below(8) as u64;
            value += 1;
            let new = reference.insert((filter.clone(), id), value).is_none();
            assert_eq!(t.insert(&filter, id, value), new, "{filter:?} {id}");
        }
        check(&t, &reference, &mut rng);
        assert_compressed(&t.root, true);
        // Remove about half, plus some that are not there.
        for _ in 0..300 {
            let filter = random_levels_upto(&mut rng, &FILTER_LEVELS, max_levels);
            if !valid_topic_filter(&filter) {
                continue;
            }
            let id = rng.below(8) as u64;
            let had = reference.remove(&(filter.clone(), id)).is_some();
            assert_eq!(t.remove(&filter, id), had, "{filter:?} {id}");
        }
        let keys: Vec<_> = reference.keys().cloned().collect();
        for (i, (filter, id)) in keys.into_iter().enumerate() {
            if (i + round) % 2 == 0 {
                reference.remove(&(filter.clone(), id));
                assert!(t.remove(&filter, id));
                assert!(!t.contains(&filter, id));
            }
        }
        check(&t, &reference, &mut rng);
        assert_compressed(&t.root, true);
    }
    for (filter, id) in reference.keys() {
        assert!(t.remove(filter, *id));
    }
    assert!(t.is_empty());
    assert!(t.root.is_empty(), "all branches pruned");
}

#[test]
fn randomized_against_matches() {
    randomized_against_matches_upto(4);
}

#[test]
fn randomized_deep_against_matches() {
    // Deeper filters exercise the chains of levels held as one node.
    randomized_against_matches_upto(9);
}

/// The router skips its per-session merge when one filter matched: the count returned
/// must be the number of matching filters that hold subscribers.
#[test]
fn for_each_match_counts_the_filters_with_subscribers() {
    let mut t = SubscriptionTrie::default();
    for id in 0..50 {
        t.insert("a/b", id, "exact");
    }
    let count = |t: &SubscriptionTrie<&str>, topic: &str| {
        let mut n = 0;
        let filters = t.for_each_match(topic, |_, _| n += 1);
        (filters, n)
    };
    assert_eq!(count(&t, "a/b"), (1, 50));
    assert_eq!(count(&t, "a/c"), (0, 0));
    t.insert("a/+", 7, "plus");
    t.insert("#", 7, "all");
    t.insert("a/#", 8, "hash");
    assert_eq!(count(&t, "a/b"), (4, 53));
    assert_eq!(count(&t, "a/c"), (3, 3));
}
