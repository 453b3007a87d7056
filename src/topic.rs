//! Topic names and topic filters: validation and matching rules of MQTT 3.1.1 section 4.7.

/// A topic name a client may PUBLISH to: at least one character, no `+` or `#`
/// [MQTT-4.7.1-1], [MQTT-4.7.3-1]. (UTF-8 validity and U+0000 are checked by the codec.)
pub fn valid_topic_name(topic: &str) -> bool {
    todo!()
}

/// A topic filter a client may SUBSCRIBE to: at least one character, `#` only as the last
/// level and alone in it [MQTT-4.7.1-2], `+` alone in its level [MQTT-4.7.1-3].
pub fn valid_topic_filter(filter: &str) -> bool {
    todo!()
}

/// Number of levels (`a/b/c` has 3, `/` has 2).
pub fn level_count(s: &str) -> usize {
    todo!()
}

/// Whether `filter` matches `topic`, including the rule that a filter starting with a
/// wildcard does not match a topic starting with `$` [MQTT-4.7.2-1].
pub fn matches(filter: &str, topic: &str) -> bool {
    todo!()
}
