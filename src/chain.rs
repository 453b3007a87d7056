//! Chains of topic levels held by one tree node.
//!
//! The subscription trie and the retained tree store topics level by level, and a node
//! per level costs a few hundred bytes (the node, its children table, its key). A filter
//! or topic with tens of thousands of levels would cost that many times more than its
//! bytes. So a run of levels that no other entry branches from is held by one node as
//! its *tail*: the levels after the one that keys the node in its parent, joined by
//! `/` (`Some("")` is one empty level, `None` no extra level). A node then costs its
//! bytes plus a constant, however deep.
//!
//! The helpers here compare tails with the rest of a topic or filter, level by level.

use crate::topic::split_first;

/// `rest` after the levels of `tail`, if `rest` starts with exactly those levels: `Some(None)`
/// when nothing follows them. Exact comparison (a `+` in either is just a character).
#[inline]
pub fn strip_tail<'a>(tail: &str, rest: Option<&'a str>) -> Option<Option<&'a str>> {
    let r = rest?;
    let after = r.strip_prefix(tail)?;
    if after.is_empty() {
        Some(None)
    } else {
        after.strip_prefix('/').map(Some)
    }
}

/// How many leading levels `tail` and `rest` share exactly, and `rest` after them.
pub fn common_levels<'a>(tail: &str, rest: Option<&'a str>) -> (usize, Option<&'a str>) {
    let mut k = 0;
    let mut p = rest;
    for t in tail.split('/') {
        let Some(r) = p else { break };
        let (level, after) = split_first(r);
        if level != t {
            break;
        }
        k += 1;
        p = after;
    }
    (k, p)
}

/// A tail split at level `k` (which must exist): the levels before it (`None` if none),
/// level `k` itself, and the levels after it (`None` if none).
pub fn split_tail_at(tail: &str, k: usize) -> (Option<Box<str>>, &str, Option<Box<str>>) {
    let mut start = 0;
    for _ in 0..k {
        // `k` levels exist, so each has a separator after it.
        start += tail[start..]
            .find('/')
            .map_or(tail.len() - start, |i| i + 1);
    }
    let before = (k > 0).then(|| tail[..start - 1].into());
    let (level, after) = split_first(&tail[start..]);
    (before, level, after.map(Into::into))
}

/// The tail of a node merged with its only child: its own tail, the child's key, the
/// child's tail.
pub fn join_tail(head: Option<&str>, key: &str, tail: Option<&str>) -> Box<str> {
    let mut s = String::with_capacity(
        head.map_or(0, |h| h.len() + 1) + key.len() + tail.map_or(0, |t| t.len() + 1),
    );
    if let Some(h) = head {
        s.push_str(h);
        s.push('/');
    }
    s.push_str(key);
    if let Some(t) = tail {
        s.push('/');
        s.push_str(t);
    }
    s.into_boxed_str()
}

/// Matches a tail against topic levels (the tail comes from a filter: `+` matches any
/// one level): the topic after the tail, or `None` if it does not match (or ends inside
/// the tail).
#[inline]
pub fn match_filter_tail<'a>(tail: &str, mut rest: Option<&'a str>) -> Option<Option<&'a str>> {
    for t in tail.split('/') {
        let (level, next) = split_first(rest?);
        if t != "+" && t != level {
            return None;
        }
        rest = next;
    }
    Some(rest)
}

/// How a filter meets a tail of topic levels (the retained tree's).
#[derive(Debug, PartialEq, Eq)]
pub enum FilterThroughTail<'a> {
    /// Every level of the tail matched; the filter after them (`None`: it ends exactly
    /// there).
    Through(Option<&'a str>),
    /// A `#` in the filter: the node and everything below it match.
    All,
    /// No topic at or below the node matches.
    Fail,
}

/// Applies filter levels to a tail of topic levels.
pub fn filter_through_tail<'a>(tail: &str, mut filter: Option<&'a str>) -> FilterThroughTail<'a> {
    for t in tail.split('/') {
        let Some(f) = filter else {
            // The filter ended above this node's topic.
            return FilterThroughTail::Fail;
        };
        let (level, next) = split_first(f);
        match level {
            "#" => return FilterThroughTail::All,
            "+" => {}
            literal if literal == t => {}
            _ => return FilterThroughTail::Fail,
        }
        filter = next;
    }
    FilterThroughTail::Through(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_and_common_levels() {
        assert_eq!(strip_tail("b/c", Some("b/c")), Some(None));
        assert_eq!(strip_tail("b/c", Some("b/c/d")), Some(Some("d")));
        assert_eq!(strip_tail("b/c", Some("b/c/")), Some(Some("")));
        assert_eq!(strip_tail("b/c", Some("b/cd")), None);
        assert_eq!(strip_tail("b/c", Some("b")), None);
        assert_eq!(strip_tail("b", None), None);
        assert_eq!(strip_tail("", Some("")), Some(None));
        assert_eq!(strip_tail("", Some("/x")), Some(Some("x")));
        assert_eq!(common_levels("b/c/d", Some("b/c/x/y")), (2, Some("x/y")));
        assert_eq!(common_levels("b/c/d", Some("b/c")), (2, None));
        assert_eq!(common_levels("b/c/d", Some("x")), (0, Some("x")));
        assert_eq!(common_levels("b", None), (0, None));
        assert_eq!(common_levels("//", Some("/x")), (1, Some("x")));
    }

    #[test]
    fn split_and_join_round_trip() {
        assert_eq!(split_tail_at("b/c/d", 0), (None, "b", Some("c/d".into())));
        assert_eq!(
            split_tail_at("b/c/d", 1),
            (Some("b".into()), "c", Some("d".into()))
        );
        assert_eq!(split_tail_at("b/c/d", 2), (Some("b/c".into()), "d", None));
        assert_eq!(
            split_tail_at("//", 1),
            (Some("".into()), "", Some("".into()))
        );
        assert_eq!(split_tail_at("", 0), (None, "", None));
        for (tail, k) in [
            ("b/c/d", 0),
            ("b/c/d", 1),
            ("b/c/d", 2),
            ("//", 1),
            ("/", 0),
        ] {
            let (before, level, after) = split_tail_at(tail, k);
            assert_eq!(
                &*join_tail(before.as_deref(), level, after.as_deref()),
                tail
            );
        }
    }

    #[test]
    fn filters_against_tails() {
        assert_eq!(match_filter_tail("+/c", Some("b/c/d")), Some(Some("d")));
        assert_eq!(match_filter_tail("+/c", Some("b/c")), Some(None));
        assert_eq!(match_filter_tail("+/c", Some("b")), None);
        assert_eq!(match_filter_tail("b/c", Some("b/x")), None);
        use FilterThroughTail::*;
        assert_eq!(filter_through_tail("b/c", Some("b/c")), Through(None));
        assert_eq!(
            filter_through_tail("b/c", Some("+/c/x")),
            Through(Some("x"))
        );
        assert_eq!(filter_through_tail("b/c", Some("b/#")), All);
        assert_eq!(filter_through_tail("b/c", Some("#")), All);
        assert_eq!(filter_through_tail("b/c", Some("b")), Fail);
        assert_eq!(filter_through_tail("b/c", Some("x/c")), Fail);
        assert_eq!(filter_through_tail("b", None), Fail);
    }
}
