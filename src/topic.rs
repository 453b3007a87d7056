//! Topic names and topic filters: validation and matching rules of MQTT 3.1.1 section 4.7.

/// A topic name a client may PUBLISH to: at least one character, no `+` or `#`
/// [MQTT-4.7.1-1], [MQTT-4.7.3-1]. (UTF-8 validity and U+0000 are checked by the codec.)
pub(crate) fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && !topic.bytes().any(|b| b == b'+' || b == b'#')
}

/// A topic filter a client may SUBSCRIBE to: at least one character, `#` only as the last
/// level and alone in it [MQTT-4.7.1-2], `+` alone in its level [MQTT-4.7.1-3].
pub(crate) fn valid_topic_filter(filter: &str) -> bool {
    if filter.is_empty() {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.len() == 1 {
            // "+" and "#" alone in their level are fine, except "#" before the last level.
            if level == "#" && levels.peek().is_some() {
                return false;
            }
        } else if level.bytes().any(|b| b == b'+' || b == b'#') {
            return false;
        }
    }
    true
}

/// The prefix of an MQTT 5.0 shared subscription filter.
pub(crate) const SHARE_PREFIX: &str = "$share/";

/// Splits a shared subscription `$share/<group>/<filter>` into group and filter.
/// `None`: not a shared subscription. `Some(None)`: one, but malformed (an empty group,
/// a group with `+` or `#`, or no valid filter after it) [MQTT-4.8.2-1/2].
pub(crate) fn split_shared(filter: &str) -> Option<Option<(&str, &str)>> {
    let rest = filter.strip_prefix(SHARE_PREFIX)?;
    let Some((group, inner)) = rest.split_once('/') else {
        return Some(None);
    };
    let group_ok = !group.is_empty() && !group.contains(['+', '#']);
    Some((group_ok && valid_topic_filter(inner)).then_some((group, inner)))
}

/// Number of levels (`a/b/c` has 3, `/` has 2).
#[cfg(test)]
pub(crate) fn level_count(s: &str) -> usize {
    s.bytes().filter(|&b| b == b'/').count() + 1
}

/// First level of `s` and the rest after the separator, if there is one: how the topic
/// trees (subscriptions, retained messages) walk a topic or filter level by level.
#[inline]
pub(crate) fn split_first(s: &str) -> (&str, Option<&str>) {
    // A plain byte search ('/' is ASCII, so where it is found is a char boundary):
    // `split_once('/')` goes through the general char searcher, ~100 instructions a
    // routed message for a three-level topic (callgrind).
    match s.bytes().position(|b| b == b'/') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

/// Whether `s` has at most `max` levels (0 = no limit). O(1) for the usual short topic
/// (a string shorter than `max` cannot have more levels than that), and stops counting
/// at the first level over the limit: this runs on every PUBLISH.
#[inline]
pub(crate) fn within_levels(s: &str, max: usize) -> bool {
    max == 0 || s.len() < max || s.bytes().filter(|&b| b == b'/').nth(max - 1).is_none()
}

/// Whether a topic name is subject to the `$` rule: filters whose first level is a
/// wildcard do not match it [MQTT-4.7.2-1].
#[inline]
pub(crate) fn is_dollar_topic(topic: &str) -> bool {
    topic.as_bytes().first() == Some(&b'$')
}

/// Whether `filter` matches `topic`, including the rule that a filter starting with a
/// wildcard does not match a topic starting with `$` [MQTT-4.7.2-1].
pub fn matches(filter: &str, topic: &str) -> bool {
    if is_dollar_topic(topic) && matches!(filter.as_bytes().first(), Some(b'+' | b'#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            // "#" matches the parent level and any number of child levels.
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(valid_topic_name("a"));
        assert!(valid_topic_name("/"));
        assert!(valid_topic_name("a//b"));
        assert!(valid_topic_name("$SYS/x"));
        assert!(valid_topic_name(" "));
        assert!(!valid_topic_name(""));
        assert!(!valid_topic_name("a/+"));
        assert!(!valid_topic_name("a/#"));
        assert!(!valid_topic_name("sport+"));
        assert!(!valid_topic_name("#"));
    }

    #[test]
    fn topic_filters() {
        for ok in [
            "#",
            "+",
            "/",
            "+/+",
            "/+",
            "+/",
            "sport/#",
            "sport/+/player1",
            "sport/tennis/player1/#",
            "+/tennis/#",
            "a//b",
            "$SYS/#",
            "/#",
            "//",
        ] {
            assert!(valid_topic_filter(ok), "{ok:?} should be valid");
        }
        for bad in [
            "",
            "sport+",
            "sport/tennis#",
            "sport/tennis/#/ranking",
            "#/",
            "##",
            "++",
            "a/+b",
            "a/b+/c",
            "#/a",
            "a/#b",
        ] {
            assert!(!valid_topic_filter(bad), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn levels() {
        assert_eq!(level_count("a"), 1);
        assert_eq!(level_count("a/b/c"), 3);
        assert_eq!(level_count("/"), 2);
        assert_eq!(level_count("a//"), 3);
        for (s, max) in [("a", 1), ("a/b/c", 3), ("a/b/c", 4), ("//", 3), ("x", 0)] {
            assert!(within_levels(s, max), "{s:?} within {max}");
        }
        for (s, max) in [("a/b", 1), ("a/b/c/d", 3), ("///", 3), ("/", 1)] {
            assert!(!within_levels(s, max), "{s:?} over {max}");
        }
        let deep = "/".repeat(60_000);
        assert!(!within_levels(&deep, 200));
        assert!(within_levels(&deep, 60_001));
        assert!(!within_levels(&deep, 60_000));
    }

    #[test]
    fn split_first_takes_one_level_and_keeps_empty_ones() {
        assert_eq!(split_first("a"), ("a", None));
        assert_eq!(split_first("a/b/c"), ("a", Some("b/c")));
        assert_eq!(split_first("/"), ("", Some("")));
        assert_eq!(split_first(""), ("", None));
        assert_eq!(split_first("+/#"), ("+", Some("#")));
    }

    #[test]
    fn spec_examples() {
        // 4.7.1.2
        let f = "sport/tennis/player1/#";
        assert!(matches(f, "sport/tennis/player1"));
        assert!(matches(f, "sport/tennis/player1/ranking"));
        assert!(matches(f, "sport/tennis/player1/score/wimbledon"));
        assert!(!matches(f, "sport/tennis/player2"));
        assert!(!matches(f, "sport/tennis"));
        assert!(matches("sport/#", "sport"));
        assert!(matches("sport/#", "sport/"));
        assert!(!matches("sport/#", "sports"));
        assert!(matches("#", "sport/tennis"));
        assert!(matches("#", "/"));
        // 4.7.1.3
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(matches("sport/tennis/+", "sport/tennis/player2"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("+", "finance"));
        assert!(matches("+/tennis/#", "sport/tennis/x"));
    }

    #[test]
    fn empty_levels_are_distinct() {
        assert!(matches("a//b", "a//b"));
        assert!(!matches("a//b", "a/b"));
        assert!(!matches("/a", "a"));
        assert!(!matches("a/", "a"));
        assert!(matches("a/+", "a/"));
        assert!(matches("+/a", "/a"));
        assert!(matches("a/+/b", "a//b"));
        assert!(!matches("a/b", "a/b/"));
    }

    #[test]
    fn dollar_rule() {
        let t = "$SYS/monitor/Clients";
        assert!(!matches("#", t));
        assert!(!matches("+/monitor/Clients", t));
        assert!(matches("$SYS/#", t));
        assert!(matches("$SYS/monitor/+", t));
        assert!(matches("$SYS/monitor/Clients", t));
        assert!(!matches("+", "$SYS"));
        // Only the first level is concerned.
        assert!(matches("a/+", "a/$x"));
        assert!(matches("a/#", "a/$x"));
        assert!(matches("#", "a$"));
    }
}

#[cfg(test)]
mod shared_tests {
    use super::*;

    #[test]
    fn shared_subscriptions_split_into_group_and_filter() {
        assert_eq!(split_shared("a/b"), None);
        assert_eq!(split_shared("$shared/g/a"), None);
        assert_eq!(split_shared("$share/g/a/+"), Some(Some(("g", "a/+"))));
        assert_eq!(
            split_shared("$share/workers/#"),
            Some(Some(("workers", "#")))
        );
        assert_eq!(split_shared("$share/g"), Some(None));
        assert_eq!(split_shared("$share//a"), Some(None));
        assert_eq!(split_shared("$share/g+/a"), Some(None));
        assert_eq!(split_shared("$share/g/a/#/b"), Some(None));
        assert_eq!(split_shared("$share/g/"), Some(None));
    }
}
