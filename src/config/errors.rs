//! Turning the TOML parser's and serde's errors into the one-line messages midge prints:
//! the file, the key (with its table), the line, what the key takes, and the parser's own
//! words in brackets. The CLI tests (tests/cli.rs) check some of them word for word.

use super::validate::{
    range_text, LOG_DEST_EXPECTED, LOG_LEVEL_EXPECTED, MAX_PACKET_SIZE_RANGE, MAX_SECONDS,
    MAX_SESSION_EXPIRY_EXPECTED, MEMORY_LIMIT_EXPECTED, SYNC_INTERVAL_MS, TOKEN_EXPECTED,
};

/// What a key accepts, for messages about a value of the wrong type or shape.
fn expectation(in_listener: bool, key: &str) -> Option<String> {
    let text = match (in_listener, key) {
        (false, "log_level") => LOG_LEVEL_EXPECTED.to_owned(),
        (false, "log_format") => "one of \"text\", \"json\"".to_owned(),
        (false, "log_dest") => LOG_DEST_EXPECTED.to_owned(),
        (false, "connect_timeout" | "drop_log_interval") => {
            format!("an integer number of seconds in 1..={MAX_SECONDS}")
        }
        (false, "retry_interval" | "sys_interval") => {
            format!("an integer number of seconds in 0..={MAX_SECONDS}")
        }
        (false, "max_packet_size" | "max_connect_size") => range_text(&MAX_PACKET_SIZE_RANGE),
        (
            false,
            "max_client_id_len"
            | "max_inflight_messages"
            | "receive_maximum"
            | "max_queued_password_checks",
        ) => "1..=65535".to_owned(),
        (false, "max_topic_alias" | "max_topic_alias_broker" | "max_keepalive") => {
            "0..=65535".to_owned()
        }
        (false, "max_user_properties") => "an integer >= 0 (0 = unlimited)".to_owned(),
        (
            _,
            "max_connections"
            | "max_subscriptions_per_client"
            | "max_topic_levels"
            | "max_filters_per_subscribe"
            | "max_queued_messages"
            | "max_queued_bytes",
        ) => "an integer >= 0 (0 = unlimited)".to_owned(),
        (false, "persistent_client_expiration") => crate::expiry::LIFETIME_EXPECTED.to_owned(),
        (false, "max_disk_bytes") => super::schema::DISK_LIMIT_EXPECTED.to_owned(),
        (false, "max_session_expiry_interval") => MAX_SESSION_EXPIRY_EXPECTED.to_owned(),
        (false, "memory_limit") => MEMORY_LIMIT_EXPECTED.to_owned(),
        (false, "queue_qos0_messages" | "park_idle_connections")
        | (_, "allow_anonymous")
        | (true, "require_certificate" | "use_identity_as_username") => "true or false".to_owned(),
        (false, "password_file" | "acl_file") | (true, "certfile" | "keyfile" | "cafile") => {
            "a file path in quotes".to_owned()
        }
        (true, "tls_version") => "one of \"tlsv1.2\", \"tlsv1.3\"".to_owned(),
        (true, "protocol") => "one of \"mqtt\", \"websockets\"".to_owned(),
        (true, "websockets_path") => "a path in quotes, such as \"/mqtt\"".to_owned(),
        (true, "websockets_origin") => {
            "a list of origins, such as [\"https://dash.example.com\"]".to_owned()
        }
        (true, "trusted_proxies") => {
            "a list of addresses or networks, such as [\"10.0.0.0/8\"]".to_owned()
        }
        (false, "listener") => "[[listener]] tables".to_owned(),
        (false, "persistence") => "a [persistence] table".to_owned(),
        (false, "enabled") => "true or false".to_owned(),
        (false, "path") => "a directory path in quotes".to_owned(),
        (false, "sync") => "one of \"always\", \"interval\", \"never\"".to_owned(),
        (false, "sync_interval_ms") => range_text(&SYNC_INTERVAL_MS),
        (_, "bind") => "an IP address such as \"127.0.0.1\", \"0.0.0.0\" or \"::\"".to_owned(),
        (true, "port") => "1..=65535".to_owned(),
        // Only [http] has these outside a listener.
        (false, "port") => "0..=65535 (0 = any free port)".to_owned(),
        (false, "certfile" | "keyfile") => "a file path in quotes".to_owned(),
        (false, "token") => TOKEN_EXPECTED.to_owned(),
        (false, "http") => "an [http] table".to_owned(),
        (true, "queue_full") => "one of \"drop_oldest\", \"drop_new\", \"backpressure\"".to_owned(),
        _ => return None,
    };
    Some(text)
}

/// 1-based line and column of byte offset `at`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = floor_char_boundary(text, at);
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Messages from the TOML parser proper (bad syntax, duplicate keys).
pub(super) fn syntax_error(text: &str, origin: &str, e: &toml::de::Error) -> String {
    let message = one_line(e.message());
    let Some(span) = e.span() else {
        return format!("{origin}: invalid TOML: {message}");
    };
    let (line, col) = line_col(text, span.start);
    if message == "duplicate key" {
        if let Some(key) = text.get(span.clone()).filter(|k| !k.is_empty()) {
            return format!("{origin}: duplicate key `{key}` at line {line}");
        }
    }
    // A bad value after `key =`: name the key and what it takes. (`log_level = info` reads
    // to the parser like a malformed number, "inf...", so say what was meant.)
    if let Some(key) = key_before_value(text, span.start) {
        let value = value_text(text, span.start);
        if !value.is_empty() {
            let section = section_at(text, span.start);
            let in_listener = matches!(section, Section::Listener(_));
            let path = match &section {
                Section::Top => key.clone(),
                other => format!("{}.{key}", other.name()),
            };
            let expected = expectation(in_listener, &key);
            let wants_string = matches!(
                key.as_str(),
                "log_level"
                    | "bind"
                    | "queue_full"
                    | "password_file"
                    | "acl_file"
                    | "certfile"
                    | "keyfile"
                    | "cafile"
                    | "tls_version"
                    | "protocol"
                    | "websockets_path"
                    | "token"
            );
            if is_bare_word(value) && (wants_string || expected.is_none()) {
                return format!(
                    "{origin}: {path} = {value} at line {line} is invalid: strings must be \
                     quoted, as in {key} = \"{value}\""
                );
            }
            if let Some(expected) = expected {
                let value = shorten(value);
                return format!(
                    "{origin}: {path} = {value} at line {line} is invalid: expected {expected} \
                     ({message})"
                );
            }
        }
    }
    format!("{origin}: invalid TOML at line {line}, column {col}: {message}")
}

/// The source text of a value starting at `at`: the rest of its line, without a comment.
fn value_text(text: &str, at: usize) -> &str {
    let rest = &text[floor_char_boundary(text, at)..];
    rest.split(['\n', '#']).next().unwrap_or_default().trim()
}

/// Whether `value` is an unquoted word that the user most likely meant as a string.
fn is_bare_word(value: &str) -> bool {
    value.starts_with(|c: char| c.is_ascii_alphabetic())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '='))
        && !matches!(value, "true" | "false" | "inf" | "nan")
}

/// Messages from deserializing well-formed TOML into [`Config`] (unknown keys, wrong types,
/// values out of a type's range).
pub(super) fn schema_error(text: &str, origin: &str, e: &toml::de::Error) -> String {
    let message = one_line(e.message());
    let Some(span) = e.span() else {
        return format!("{origin}: {message}");
    };
    let (line, col) = line_col(text, span.start);
    let section = section_at(text, span.start);
    let in_listener = matches!(section, Section::Listener(_));

    // "unknown field `x`, expected one of `a`, `b`" / "unknown field `x`, there are no fields"
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((key, rest)) = rest.split_once('`') {
            let rest = rest.trim_start_matches(',').trim();
            let place = match &section {
                Section::Top => String::new(),
                other => format!(" in {}", other.name()),
            };
            return format!("{origin}: unknown key `{key}`{place} at line {line} ({rest})");
        }
    }

    if message == "invalid type: map, expected a sequence"
        && text.get(span.clone()).is_some_and(|s| s.starts_with('['))
    {
        let header = text.get(span.clone()).unwrap_or_default();
        return format!(
            "{origin}: {header} at line {line} is invalid: expected [[listener]] \
             (an array of tables, with double brackets)"
        );
    }

    if let Some(key) = key_before_value(text, span.start) {
        let value = shorten(text.get(span.clone()).unwrap_or_default());
        let path = match &section {
            Section::Top => key.clone(),
            other => format!("{}.{key}", other.name()),
        };
        return match expectation(in_listener, &key) {
            Some(expected) => format!(
                "{origin}: {path} = {value} at line {line} is invalid: expected {expected} \
                 ({message})"
            ),
            None => format!("{origin}: {path} = {value} at line {line} is invalid: {message}"),
        };
    }
    format!("{origin}: invalid configuration at line {line}, column {col}: {message}")
}

/// The table a byte offset falls in, judged from the last `[header]` line before it.
enum Section {
    Top,
    /// 1-based: the n-th `[[listener]]` table.
    Listener(usize),
    Other(String),
}

impl Section {
    fn name(&self) -> String {
        match self {
            Section::Top => String::new(),
            Section::Listener(n) => format!("listener[{n}]"),
            Section::Other(name) => format!("[{name}]"),
        }
    }
}

fn section_at(text: &str, at: usize) -> Section {
    let at = floor_char_boundary(text, at);
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let mut section = Section::Top;
    let mut listeners = 0;
    for line in text[..line_start].lines() {
        let line = line.trim();
        if let Some(inner) = line.strip_prefix("[[") {
            let name = header_name(inner.split("]]").next().unwrap_or_default());
            if name == "listener" {
                listeners += 1;
                section = Section::Listener(listeners);
            } else {
                section = Section::Other(name);
            }
        } else if let Some(inner) = line.strip_prefix('[') {
            section = Section::Other(header_name(inner.split(']').next().unwrap_or_default()));
        }
    }
    section
}

fn header_name(raw: &str) -> String {
    raw.split('.')
        .map(|part| part.trim().trim_matches(|c| c == '"' || c == '\''))
        .collect::<Vec<_>>()
        .join(".")
}

/// For a value starting at `at`, the key written before it on the same line (`key = `,
/// also inside an inline table `{ a = 1, key = `).
fn key_before_value(text: &str, at: usize) -> Option<String> {
    let at = floor_char_boundary(text, at);
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let prefix = text[line_start..at].trim_end().strip_suffix('=')?;
    let key = prefix
        .rsplit(['{', ','])
        .next()
        .unwrap_or_default()
        .trim()
        .trim_matches(|c| c == '"' || c == '\'');
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    plain.then(|| key.to_owned())
}

/// A value's source text, on one line and not too long.
fn shorten(value: &str) -> String {
    const MAX: usize = 40;
    let flat = one_line(value);
    if flat.chars().count() > MAX {
        let cut: String = flat.chars().take(MAX).collect();
        format!("{cut}...")
    } else {
        flat
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::super::tests::{err, ok};
    use super::*;

    #[test]
    fn integer_out_of_type_range_names_the_key() {
        assert_eq!(
            err("[[listener]]\nport = 70000"),
            "config.toml: listener[1].port = 70000 at line 2 is invalid: expected 1..=65535 \
             (invalid value: integer `70000`, expected u16)"
        );
        assert_eq!(
            err("max_queued_messages = -1"),
            "config.toml: max_queued_messages = -1 at line 1 is invalid: expected an integer >= 0 \
             (0 = unlimited) (invalid value: integer `-1`, expected usize)"
        );
    }

    #[test]
    fn unknown_top_level_key() {
        let e = err("log_level = \"info\"\n\nmax_inflite = 3\n");
        assert!(
            e.starts_with(
                "config.toml: unknown key `max_inflite` at line 3 (expected one of `log_level`, "
            ),
            "{e}"
        );
        assert!(
            e.contains("`max_inflight_messages`") && e.contains("`listener`"),
            "{e}"
        );
        assert!(e.ends_with(')') && !e.contains('\n'), "{e}");
        // An unknown table is an unknown key too.
        let e = err("[mqtt]\nport = 1");
        assert!(
            e.starts_with("config.toml: unknown key `mqtt` at line 1 (expected one of"),
            "{e}"
        );
    }

    #[test]
    fn websocket_keys_say_what_they_expect() {
        let e = err("[[listener]]\nprotocol = \"websocket\"\n");
        assert!(
            e.contains("listener[1].protocol") && e.contains("\"websockets\""),
            "{e}"
        );
        let e = err("[[listener]]\nprotocol = websockets\n");
        assert!(e.contains("strings must be quoted"), "{e}");
        let e = err("[[listener]]\nprotocol = \"websockets\"\ntrusted_proxies = [\"x\"]\n");
        assert!(e.contains("trusted_proxies"), "{e}");
    }

    #[test]
    fn unknown_listener_key() {
        let e =
            err("[[listener]]\nport = 1884\n\n[[listener]]\nport = 1885\nqueue = \"drop_new\"\n");
        assert_eq!(
            e,
            "config.toml: unknown key `queue` in listener[2] at line 6 (expected one of `bind`, \
             `port`, `max_connections`, `queue_full`, `allow_anonymous`, `certfile`, `keyfile`, \
             `cafile`, `require_certificate`, `use_identity_as_username`, `tls_version`, \
             `protocol`, `websockets_path`, `websockets_origin`, `trusted_proxies`)"
        );
    }

    #[test]
    fn wrong_types() {
        assert_eq!(
            err("connect_timeout = \"10s\""),
            "config.toml: connect_timeout = \"10s\" at line 1 is invalid: expected an integer \
             number of seconds in 1..=31536000 (invalid type: string \"10s\", expected u64)"
        );
        assert_eq!(
            err("queue_qos0_messages = 1"),
            "config.toml: queue_qos0_messages = 1 at line 1 is invalid: expected true or false \
             (invalid type: integer `1`, expected a boolean)"
        );
        assert_eq!(
            err("max_packet_size = 1.5"),
            "config.toml: max_packet_size = 1.5 at line 1 is invalid: expected 1..=268435455 \
             (invalid type: floating point `1.5`, expected usize)"
        );
        assert_eq!(
            err("[[listener]]\nbind = \"localhost\""),
            "config.toml: listener[1].bind = \"localhost\" at line 2 is invalid: expected an IP \
             address such as \"127.0.0.1\", \"0.0.0.0\" or \"::\" (invalid IP address syntax)"
        );
        assert_eq!(
            err("[[listener]]\nqueue_full = \"block\""),
            "config.toml: listener[1].queue_full = \"block\" at line 2 is invalid: expected one of \
             \"drop_oldest\", \"drop_new\", \"backpressure\" (unknown variant `block`, expected one \
             of `drop_oldest`, `drop_new`, `backpressure`)"
        );
        assert_eq!(
            err("[listener]\nport = 1884"),
            "config.toml: [listener] at line 1 is invalid: expected [[listener]] (an array of \
             tables, with double brackets)"
        );
        let e = err("log_level = \"\"\"\ninfo\n\"\"\"\nlog_level2 = 1");
        assert!(
            e.starts_with("config.toml: unknown key `log_level2` at line 4"),
            "{e}"
        );
        let e = err("log_level = 3");
        assert!(
            e.starts_with("config.toml: log_level = 3 at line 1 is invalid: expected one of"),
            "{e}"
        );
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(
            err("max_connections = 1\nmax_connections = 2\n"),
            "config.toml: duplicate key `max_connections` at line 2"
        );
        assert_eq!(
            err("log_level = info"),
            "config.toml: log_level = info at line 1 is invalid: strings must be quoted, as in \
             log_level = \"info\""
        );
        assert_eq!(
            err("[[listener]]\nqueue_full = drop_new # comment"),
            "config.toml: listener[1].queue_full = drop_new at line 2 is invalid: strings must be \
             quoted, as in queue_full = \"drop_new\""
        );
        assert_eq!(
            err("connect_timeout = 10s"),
            "config.toml: connect_timeout = 10s at line 1 is invalid: expected an integer number \
             of seconds in 1..=31536000 (string values must be quoted, expected literal string)"
        );
        let e = err("max_connections = [1,\n");
        assert!(
            e.starts_with("config.toml: invalid TOML at line 1, column 22: "),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn positions_count_characters() {
        assert_eq!(line_col("a\nbé = 1", 6), (2, 4));
        assert_eq!(line_col("abc", 99), (1, 4));
        assert_eq!(
            key_before_value("x = { a = 1, b = 2 }", 17).as_deref(),
            Some("b")
        );
        assert_eq!(key_before_value("[a]", 1), None);
        assert_eq!(shorten(&"x".repeat(50)), format!("{}...", "x".repeat(40)));
    }

    #[test]
    fn message_limits_are_checked() {
        let e = err("max_topic_alias_broker = 65536");
        assert!(
            e.contains("max_topic_alias_broker") && e.contains("0..=65535"),
            "{e}"
        );
        let e = err("max_user_properties = -1");
        assert!(
            e.contains("max_user_properties") && e.contains("0 = unlimited"),
            "{e}"
        );
        let c = ok("max_topic_alias_broker = 0\nmax_user_properties = 0");
        assert_eq!((c.max_topic_alias_broker, c.max_user_properties), (0, 0));
    }
}
