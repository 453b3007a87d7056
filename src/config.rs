//! `config.toml`: every key, its default, and the checks that turn a bad file into a
//! message naming the file, the key and what was expected.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// What a subscriber's full queue does with one more message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum QueueFull {
    /// Drop the oldest queued (not yet sent) message to make room. Default.
    #[default]
    DropOldest,
    /// Drop the new message.
    DropNew,
    /// Queue it anyway and withhold the publisher's PUBACK/PUBREC until there is room
    /// again (QoS 1/2 only; QoS 0 is dropped as with `drop_new`).
    Backpressure,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listener {
    /// Address to listen on. Default 127.0.0.1.
    pub bind: IpAddr,
    /// TCP port, 1..=65535. Default 1883.
    pub port: u16,
    /// 0 = unlimited.
    pub max_connections: usize,
    /// Policy for the queues of subscribers that connected through this listener.
    pub queue_full: QueueFull,
    /// Whether clients without credentials may connect. Unset: the top-level
    /// `allow_anonymous`, and if that is unset too, true only for a listener bound to a
    /// loopback address (Mosquitto 2's "local only" default).
    pub allow_anonymous: Option<bool>,
    /// PEM certificate chain (leaf first). Setting it makes this a TLS listener.
    pub certfile: Option<PathBuf>,
    /// PEM private key of `certfile` (PKCS#8, PKCS#1 or SEC1).
    pub keyfile: Option<PathBuf>,
    /// PEM CA certificates that client certificates are checked against.
    pub cafile: Option<PathBuf>,
    /// Refuse clients without a certificate signed by `cafile`.
    pub require_certificate: bool,
    /// The client certificate's Common Name becomes the username (for ACLs); the
    /// password file is not consulted.
    pub use_identity_as_username: bool,
    /// Lowest TLS version accepted. Default TLS 1.2.
    pub tls_version: Option<TlsVersion>,
}

/// Lowest TLS version a listener accepts (Mosquitto's `tls_version` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "tlsv1.2")]
    Tls12,
    #[serde(rename = "tlsv1.3")]
    Tls13,
}

impl Listener {
    pub fn is_tls(&self) -> bool {
        self.certfile.is_some()
    }

    /// Whether clients without a username (or certificate identity) are let in.
    pub fn allows_anonymous(&self, global: Option<bool>) -> bool {
        self.allow_anonymous
            .or(global)
            .unwrap_or_else(|| self.bind.is_loopback())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// tracing filter: "error", "warn", "info", "debug", "trace" or a RUST_LOG-style filter.
    pub log_level: String,
    /// Seconds a new connection has to send CONNECT.
    pub connect_timeout: u64,
    /// Across all listeners; 0 = unlimited.
    pub max_connections: usize,
    /// Largest packet (remaining length) accepted, bytes.
    pub max_packet_size: usize,
    /// Longest client identifier accepted, bytes; 1..=65535.
    pub max_client_id_len: usize,
    /// Largest CONNECT accepted (remaining length), bytes: what an unauthenticated
    /// connection can make the broker hold. The smaller of this and `max_packet_size`
    /// applies.
    pub max_connect_size: usize,
    /// Password checks that may wait for a free core (one check runs per core); when
    /// full, the longest-waiting one is refused with "server busy". 1..=65535.
    pub max_queued_password_checks: usize,
    /// 0 = unlimited. Default 1000: bounds what one client's overlapping filters cost
    /// every matching PUBLISH.
    pub max_subscriptions_per_client: usize,
    /// Levels in a topic name or filter; 0 = unlimited. Default 200 (Mosquitto's
    /// hard-coded hierarchy limit): every level costs trie and retained-tree memory.
    pub max_topic_levels: usize,
    /// Topic filters in one SUBSCRIBE; the excess are refused. 0 = unlimited. Default 500.
    pub max_filters_per_subscribe: usize,
    /// QoS 1/2 messages in flight (sent, not yet acknowledged) per client; 1..=65535.
    pub max_inflight_messages: usize,
    /// 0 = unlimited.
    pub max_queued_messages: usize,
    /// 0 = unlimited.
    pub max_queued_bytes: usize,
    /// Whether QoS 0 messages are queued for offline persistent sessions.
    pub queue_qos0_messages: bool,
    /// Seconds before an unacknowledged PUBLISH/PUBREL is re-sent on a live MQTT 3.1.1/3.1
    /// connection; 0 = only on reconnect.
    pub retry_interval: u64,
    /// Seconds between two "dropped messages" log lines for one client.
    pub drop_log_interval: u64,
    /// MQTT 5.0 Topic Alias Maximum announced to clients; 0 = no topic aliases.
    pub max_topic_alias: u16,
    /// Most topic aliases the broker sets towards one MQTT 5.0 client (the client's own
    /// Topic Alias Maximum may lower it); 0 = none.
    pub max_topic_alias_broker: u16,
    /// Most User Properties in a PUBLISH or will that the broker accepts and forwards;
    /// 0 = unlimited.
    pub max_user_properties: usize,
    /// MQTT 5.0 Receive Maximum announced to clients: unacknowledged QoS 1/2 PUBLISHes a
    /// client may have outstanding towards the broker. 1..=65535.
    pub receive_maximum: u16,
    /// Longest keep-alive accepted, seconds; a 5.0 client asking for more (or for 0) is
    /// given this one (Server Keep Alive). 0 = whatever the client asks.
    pub max_keepalive: u16,
    /// Default `allow_anonymous` of listeners that do not set their own.
    pub allow_anonymous: Option<bool>,
    /// Mosquitto-format password file (`user:hash`); reloaded on SIGHUP.
    pub password_file: Option<PathBuf>,
    /// Mosquitto-format ACL file; reloaded on SIGHUP. Unset: every client may publish and
    /// subscribe to everything.
    pub acl_file: Option<PathBuf>,
    #[serde(rename = "listener")]
    pub listeners: Vec<Listener>,
    /// The durable store (`[persistence]`).
    pub persistence: Persistence,
    /// How long a persistent session that would never expire (3.1.1 `clean_session =
    /// 0`, 5.0 `0xFFFFFFFF`) is kept while its client is offline. Default 30 days.
    pub persistent_client_expiration: crate::expiry::Lifetime,
    /// Longest Session Expiry Interval granted to a 5.0 client, seconds; a client asking
    /// for more gets this one, in CONNACK. 0 = no maximum. Default 30 days.
    pub max_session_expiry_interval: u32,
    /// Bytes the broker may hold for messages, queue entries and sessions; above it new
    /// messages and new sessions are refused. Unset: a quarter of the memory available
    /// (see [`crate::memory::default_limit`]); 0 = no limit.
    pub memory_limit: Option<usize>,
}

/// When the durable store syncs to disk before a commit counts (`[persistence] sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// fsync before acknowledging: survives a power cut. Default.
    #[default]
    Always,
    /// fsync at most every `sync_interval_ms`: survives a process kill; a power cut may
    /// lose the last interval.
    Interval,
    /// Never fsync (the OS writes when it likes): survives a process kill, not a power cut.
    Never,
}

/// `[persistence]`: where and how durable state is kept.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Persistence {
    /// Keep sessions, their queues and retained messages on disk. Default true.
    pub enabled: bool,
    /// Store directory. Unset: `data` next to the config file (the working directory
    /// without one); a relative path is taken from the config file's directory too
    /// (see [`Config::resolve_paths`]).
    pub path: Option<PathBuf>,
    pub sync: SyncMode,
    /// With `sync = "interval"`: the longest time between two fsyncs, milliseconds.
    pub sync_interval_ms: u64,
}

impl Default for Persistence {
    fn default() -> Self {
        Persistence {
            enabled: true,
            path: None,
            sync: SyncMode::Always,
            sync_interval_ms: 1000,
        }
    }
}

impl Persistence {
    /// The store directory (after [`Config::resolve_paths`], absolute or relative to the
    /// working directory).
    pub fn dir(&self) -> PathBuf {
        self.path.clone().unwrap_or_else(|| PathBuf::from("data"))
    }
}

impl Default for Listener {
    fn default() -> Self {
        Listener {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 1883,
            max_connections: 0,
            queue_full: QueueFull::DropOldest,
            allow_anonymous: None,
            certfile: None,
            keyfile: None,
            cafile: None,
            require_certificate: false,
            use_identity_as_username: false,
            tls_version: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            log_level: "info".to_owned(),
            connect_timeout: 10,
            max_connections: 0,
            max_packet_size: 8 * 1024 * 1024,
            max_client_id_len: 65535,
            max_subscriptions_per_client: 1000,
            max_topic_levels: 200,
            max_filters_per_subscribe: 500,
            max_connect_size: 64 * 1024,
            max_queued_password_checks: 256,
            max_inflight_messages: 20,
            max_queued_messages: 1000,
            max_queued_bytes: 0,
            queue_qos0_messages: false,
            retry_interval: 20,
            drop_log_interval: 10,
            max_topic_alias: 10,
            max_topic_alias_broker: 10,
            max_user_properties: 64,
            receive_maximum: 65535,
            max_keepalive: 0,
            allow_anonymous: None,
            password_file: None,
            acl_file: None,
            listeners: vec![Listener::default()],
            persistence: Persistence::default(),
            persistent_client_expiration: crate::expiry::Lifetime::default(),
            max_session_expiry_interval: DEFAULT_MAX_SESSION_EXPIRY,
            memory_limit: None,
        }
    }
}

/// A configuration problem, already phrased for the operator.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `origin` names the file in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        // Syntax first, so that "not TOML at all" and "TOML, but not a midge config" read
        // differently.
        if let Err(e) = text.parse::<toml::Table>() {
            return Err(ConfigError(syntax_error(text, origin, &e)));
        }
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError(schema_error(text, origin, &e)))?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Makes the store path independent of the working directory: unset becomes `data`
    /// in `config_dir`, a relative one is joined to it. `config_dir` is the directory of
    /// the config file, `None` when there is none (paths stay relative to the working
    /// directory).
    pub fn resolve_paths(&mut self, config_dir: Option<&Path>) {
        let p = &mut self.persistence;
        let path = p.path.take().unwrap_or_else(|| PathBuf::from("data"));
        p.path = Some(match config_dir {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path,
        });
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout)
    }

    /// `memory_limit` in bytes, the default worked out (0 = no limit).
    pub fn memory_limit(&self) -> usize {
        self.memory_limit
            .unwrap_or_else(crate::memory::default_limit)
    }

    /// Range and consistency checks that the types alone do not express.
    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, value: &dyn std::fmt::Display, expected: &str| {
            Err(ConfigError(format!(
                "{origin}: {key} = {value} is invalid: expected {expected}"
            )))
        };

        if self.log_level.trim().is_empty() {
            return bad("log_level", &"\"\"", LOG_LEVEL_EXPECTED);
        }
        if let Err(e) = EnvFilter::try_new(&self.log_level) {
            return bad(
                "log_level",
                &format_args!("{:?}", self.log_level),
                &format!("{LOG_LEVEL_EXPECTED} ({e})"),
            );
        }

        let u64_checks: [(&str, u64, RangeInclusive<u64>); 3] = [
            ("connect_timeout", self.connect_timeout, 1..=MAX_SECONDS),
            ("retry_interval", self.retry_interval, 0..=MAX_SECONDS),
            ("drop_log_interval", self.drop_log_interval, 1..=MAX_SECONDS),
        ];
        for (key, value, range) in u64_checks {
            if !range.contains(&value) {
                return bad(key, &value, &range_text(&range));
            }
        }
        let usize_checks: [(&str, usize, RangeInclusive<usize>); 5] = [
            (
                "max_packet_size",
                self.max_packet_size,
                MAX_PACKET_SIZE_RANGE,
            ),
            ("max_client_id_len", self.max_client_id_len, 1..=65535),
            (
                "max_connect_size",
                self.max_connect_size,
                MAX_PACKET_SIZE_RANGE,
            ),
            (
                "max_queued_password_checks",
                self.max_queued_password_checks,
                1..=65535,
            ),
            (
                "max_inflight_messages",
                self.max_inflight_messages,
                1..=65535,
            ),
        ];
        for (key, value, range) in usize_checks {
            if !range.contains(&value) {
                return bad(key, &value, &range_text(&range));
            }
        }

        if self.receive_maximum == 0 {
            return bad("receive_maximum", &0, "1..=65535");
        }
        if let Some(limit) = self.memory_limit {
            if limit != 0 && limit < MIN_MEMORY_LIMIT {
                return bad("memory_limit", &limit, MEMORY_LIMIT_EXPECTED);
            }
        }
        if self.max_session_expiry_interval == u32::MAX {
            return bad(
                "max_session_expiry_interval",
                &u32::MAX,
                MAX_SESSION_EXPIRY_EXPECTED,
            );
        }
        let p = &self.persistence;
        if !SYNC_INTERVAL_MS.contains(&p.sync_interval_ms) {
            return bad(
                "[persistence].sync_interval_ms",
                &p.sync_interval_ms,
                &range_text(&SYNC_INTERVAL_MS),
            );
        }
        if p.path.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            return bad("[persistence].path", &"\"\"", "a directory path");
        }
        if self.listeners.is_empty() {
            return bad("listener", &"[]", "at least one [[listener]] table");
        }
        for (i, listener) in self.listeners.iter().enumerate() {
            if listener.port == 0 {
                return bad(
                    &format!("listener[{}].port", i + 1),
                    &listener.port,
                    "1..=65535",
                );
            }
            listener.validate_tls(&format!("{origin}: listener[{}]", i + 1))?;
        }
        if let Some((a, b, addr)) = duplicate_listener(&self.listeners) {
            return Err(ConfigError(format!(
                "{origin}: listener[{}] and listener[{}] both bind {addr} \
                 (each bind:port pair may appear only once)",
                a + 1,
                b + 1
            )));
        }
        Ok(())
    }
}

impl Listener {
    /// The TLS keys must come as a consistent set: a key without a certificate, or a
    /// client-certificate option on a plain listener, would otherwise be silently ignored.
    fn validate_tls(&self, at: &str) -> Result<(), ConfigError> {
        let fail = |text: &str| Err(ConfigError(format!("{at}: {text}")));
        match (&self.certfile, &self.keyfile) {
            (Some(_), None) => return fail("certfile is set but keyfile is not"),
            (None, Some(_)) => return fail("keyfile is set but certfile is not"),
            _ => {}
        }
        if !self.is_tls() {
            let tls_only = [
                ("cafile", self.cafile.is_some()),
                ("require_certificate", self.require_certificate),
                ("use_identity_as_username", self.use_identity_as_username),
                ("tls_version", self.tls_version.is_some()),
            ];
            if let Some((key, _)) = tls_only.iter().find(|(_, set)| *set) {
                return fail(&format!(
                    "{key} is set on a listener without TLS (set certfile and keyfile to make \
                     it a TLS listener)"
                ));
            }
        }
        if self.require_certificate && self.cafile.is_none() {
            return fail(
                "require_certificate = true needs cafile (the CA that signs client certificates)",
            );
        }
        if self.use_identity_as_username && !self.require_certificate {
            return fail("use_identity_as_username = true needs require_certificate = true");
        }
        Ok(())
    }
}

/// Upper bound for the keys counted in seconds (one year): generous, and far from the
/// values at which `Instant + Duration` would overflow.
const MAX_SECONDS: u64 = 365 * 24 * 60 * 60;

/// `max_session_expiry_interval` by default: 30 days, as `persistent_client_expiration`.
const DEFAULT_MAX_SESSION_EXPIRY: u32 = 30 * 24 * 60 * 60;

const MAX_SESSION_EXPIRY_EXPECTED: &str =
    "seconds in 0..=4294967294 (0 = no maximum; 4294967295 would mean \"never\")";

/// Below this a broker could not hold one default-sized packet.
const MIN_MEMORY_LIMIT: usize = 1 << 20;

const MEMORY_LIMIT_EXPECTED: &str = "bytes, 0 (no limit) or at least 1048576";

/// `[persistence] sync_interval_ms`: 1 ms to one hour.
const SYNC_INTERVAL_MS: RangeInclusive<u64> = 1..=3_600_000;

/// MQTT's largest encodable remaining length.
const MAX_PACKET_SIZE_RANGE: RangeInclusive<usize> = 1..=268_435_455;

const LOG_LEVEL_EXPECTED: &str =
    "one of \"error\", \"warn\", \"info\", \"debug\", \"trace\", \"off\" or a RUST_LOG-style filter";

fn range_text<T: std::fmt::Display>(range: &RangeInclusive<T>) -> String {
    format!("{}..={}", range.start(), range.end())
}

/// The first pair of listeners (indices, 0-based) with the same bind address and port.
fn duplicate_listener(listeners: &[Listener]) -> Option<(usize, usize, SocketAddr)> {
    for (i, a) in listeners.iter().enumerate() {
        for (j, b) in listeners.iter().enumerate().skip(i + 1) {
            if a.bind == b.bind && a.port == b.port {
                return Some((i, j, SocketAddr::new(a.bind, a.port)));
            }
        }
    }
    None
}

/// What a key accepts, for messages about a value of the wrong type or shape.
fn expectation(in_listener: bool, key: &str) -> Option<String> {
    let text = match (in_listener, key) {
        (false, "log_level") => LOG_LEVEL_EXPECTED.to_owned(),
        (false, "connect_timeout" | "drop_log_interval") => {
            format!("an integer number of seconds in 1..={MAX_SECONDS}")
        }
        (false, "retry_interval") => format!("an integer number of seconds in 0..={MAX_SECONDS}"),
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
        (false, "max_session_expiry_interval") => MAX_SESSION_EXPIRY_EXPECTED.to_owned(),
        (false, "memory_limit") => MEMORY_LIMIT_EXPECTED.to_owned(),
        (false, "queue_qos0_messages")
        | (_, "allow_anonymous")
        | (true, "require_certificate" | "use_identity_as_username") => "true or false".to_owned(),
        (false, "password_file" | "acl_file") | (true, "certfile" | "keyfile" | "cafile") => {
            "a file path in quotes".to_owned()
        }
        (true, "tls_version") => "one of \"tlsv1.2\", \"tlsv1.3\"".to_owned(),
        (false, "listener") => "[[listener]] tables".to_owned(),
        (false, "persistence") => "a [persistence] table".to_owned(),
        (false, "enabled") => "true or false".to_owned(),
        (false, "path") => "a directory path in quotes".to_owned(),
        (false, "sync") => "one of \"always\", \"interval\", \"never\"".to_owned(),
        (false, "sync_interval_ms") => range_text(&SYNC_INTERVAL_MS),
        (true, "bind") => "an IP address such as \"127.0.0.1\", \"0.0.0.0\" or \"::\"".to_owned(),
        (true, "port") => "1..=65535".to_owned(),
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
fn syntax_error(text: &str, origin: &str, e: &toml::de::Error) -> String {
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
fn schema_error(text: &str, origin: &str, e: &toml::de::Error) -> String {
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
    use super::*;
    use std::net::Ipv6Addr;

    fn err(text: &str) -> String {
        match Config::parse(text, "config.toml") {
            Ok(c) => panic!("expected an error for {text:?}, got {c:?}"),
            Err(e) => e.0,
        }
    }

    fn ok(text: &str) -> Config {
        Config::parse(text, "config.toml").unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[test]
    fn defaults_are_as_documented() {
        let c = Config::default();
        assert_eq!(c.log_level, "info");
        assert_eq!(c.connect_timeout, 10);
        assert_eq!(c.connect_timeout(), Duration::from_secs(10));
        assert_eq!(c.max_connections, 0);
        assert_eq!(c.max_packet_size, 8_388_608);
        assert_eq!(c.max_client_id_len, 65535);
        assert_eq!(c.max_subscriptions_per_client, 1000);
        assert_eq!(c.max_topic_levels, 200);
        assert_eq!(c.max_filters_per_subscribe, 500);
        assert_eq!(c.max_connect_size, 65_536);
        assert_eq!(c.max_queued_password_checks, 256);
        assert_eq!(c.max_inflight_messages, 20);
        assert_eq!(c.max_queued_messages, 1000);
        assert_eq!(c.max_queued_bytes, 0);
        assert!(!c.queue_qos0_messages);
        assert_eq!(c.retry_interval, 20);
        assert_eq!(c.drop_log_interval, 10);
        assert_eq!(
            c.listeners,
            vec![Listener {
                bind: "127.0.0.1".parse().unwrap(),
                port: 1883,
                max_connections: 0,
                queue_full: QueueFull::DropOldest,
                allow_anonymous: None,
                certfile: None,
                keyfile: None,
                cafile: None,
                require_certificate: false,
                use_identity_as_username: false,
                tls_version: None,
            }]
        );
        assert_eq!(c.allow_anonymous, None);
        assert_eq!(c.password_file, None);
        assert_eq!(c.acl_file, None);
        assert!(c.persistence.enabled);
        assert_eq!(c.persistence.path, None);
        assert_eq!(c.persistence.sync, SyncMode::Always);
        assert_eq!(c.persistence.sync_interval_ms, 1000);
        assert!(c.listeners[0].allows_anonymous(None), "loopback default");
        c.validate("defaults").unwrap();
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(ok(""), Config::default());
        assert_eq!(ok("# only a comment\n\n"), Config::default());
    }

    #[test]
    fn shipped_config_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        assert_eq!(Config::load(&path).unwrap(), Config::default());
    }

    #[test]
    fn every_key_is_read() {
        let c = ok(r#"
            log_level = "debug,midge::router=trace"
            connect_timeout = 5
            max_connections = 100
            max_packet_size = 1024
            max_client_id_len = 23
            max_connect_size = 512
            max_queued_password_checks = 4
            max_subscriptions_per_client = 10
            max_topic_levels = 8
            max_filters_per_subscribe = 4
            max_inflight_messages = 1
            max_queued_messages = 0
            max_queued_bytes = 65536
            queue_qos0_messages = true
            retry_interval = 0
            drop_log_interval = 1
            max_topic_alias = 0
            max_topic_alias_broker = 3
            max_user_properties = 16
            receive_maximum = 100
            max_keepalive = 600
            allow_anonymous = false
            password_file = "/etc/midge/passwords"
            acl_file = "acl.txt"
            persistent_client_expiration = "2w"
            max_session_expiry_interval = 3600
            memory_limit = 268435456

            [[listener]]
            bind = "::"
            port = 1884
            max_connections = 7
            queue_full = "backpressure"
            allow_anonymous = true
            certfile = "server.crt"
            keyfile = "server.key"
            cafile = "ca.crt"
            require_certificate = true
            use_identity_as_username = true
            tls_version = "tlsv1.3"

            [persistence]
            enabled = false
            path = "/var/lib/midge"
            sync = "interval"
            sync_interval_ms = 250
        "#);
        let expected = Config {
            log_level: "debug,midge::router=trace".into(),
            connect_timeout: 5,
            max_connections: 100,
            max_packet_size: 1024,
            max_client_id_len: 23,
            max_connect_size: 512,
            max_queued_password_checks: 4,
            max_subscriptions_per_client: 10,
            max_topic_levels: 8,
            max_filters_per_subscribe: 4,
            max_inflight_messages: 1,
            max_queued_messages: 0,
            max_queued_bytes: 65536,
            queue_qos0_messages: true,
            retry_interval: 0,
            drop_log_interval: 1,
            max_topic_alias: 0,
            max_topic_alias_broker: 3,
            max_user_properties: 16,
            receive_maximum: 100,
            max_keepalive: 600,
            allow_anonymous: Some(false),
            password_file: Some("/etc/midge/passwords".into()),
            acl_file: Some("acl.txt".into()),
            listeners: vec![Listener {
                bind: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                port: 1884,
                max_connections: 7,
                queue_full: QueueFull::Backpressure,
                allow_anonymous: Some(true),
                certfile: Some("server.crt".into()),
                keyfile: Some("server.key".into()),
                cafile: Some("ca.crt".into()),
                require_certificate: true,
                use_identity_as_username: true,
                tls_version: Some(TlsVersion::Tls13),
            }],
            persistence: Persistence {
                enabled: false,
                path: Some("/var/lib/midge".into()),
                sync: SyncMode::Interval,
                sync_interval_ms: 250,
            },
            persistent_client_expiration: crate::expiry::Lifetime(Some(14 * 86400)),
            max_session_expiry_interval: 3600,
            memory_limit: Some(268_435_456),
        };
        assert_eq!(c, expected);
    }

    #[test]
    fn session_and_memory_limits_are_checked() {
        let c = Config::default();
        assert_eq!(c.persistent_client_expiration.0, Some(2_592_000));
        assert_eq!(c.max_session_expiry_interval, 2_592_000);
        assert_eq!(c.memory_limit, None);
        assert!(c.memory_limit() >= MIN_MEMORY_LIMIT, "a quarter of memory");
        assert_eq!(ok("memory_limit = 0").memory_limit(), 0);
        assert_eq!(
            ok("persistent_client_expiration = 7200")
                .persistent_client_expiration
                .0,
            Some(7200)
        );
        assert_eq!(
            ok("persistent_client_expiration = \"never\"")
                .persistent_client_expiration
                .0,
            None
        );
        let e = err("persistent_client_expiration = \"3 days\"");
        assert!(
            e.contains("persistent_client_expiration") && e.contains("30d"),
            "{e}"
        );
        let e = err("persistent_client_expiration = 0");
        assert!(e.contains("persistent_client_expiration"), "{e}");
        let e = err("memory_limit = 1000");
        assert!(
            e.contains("memory_limit = 1000") && e.contains("1048576"),
            "{e}"
        );
        let e = err("max_session_expiry_interval = 4294967295");
        assert!(e.contains("max_session_expiry_interval"), "{e}");
    }

    #[test]
    fn store_path_is_next_to_the_config_file() {
        let mut c = ok("");
        c.resolve_paths(Some(Path::new("/etc/midge")));
        assert_eq!(c.persistence.dir(), Path::new("/etc/midge/data"));
        let mut c = ok("[persistence]\npath = \"store\"\n");
        c.resolve_paths(Some(Path::new("/etc/midge")));
        assert_eq!(c.persistence.dir(), Path::new("/etc/midge/store"));
        let mut c = ok("[persistence]\npath = \"/srv/midge\"\n");
        c.resolve_paths(Some(Path::new("/etc/midge")));
        assert_eq!(c.persistence.dir(), Path::new("/srv/midge"));
        let mut c = ok("");
        c.resolve_paths(None);
        assert_eq!(c.persistence.dir(), Path::new("data"));
    }

    #[test]
    fn persistence_errors_name_the_key() {
        let e = err("[persistence]\nsync = \"sometimes\"\n");
        assert!(
            e.contains("[persistence].sync") && e.contains("\"interval\""),
            "{e}"
        );
        let e = err("[persistence]\nsync_interval_ms = 0\n");
        assert!(e.contains("[persistence].sync_interval_ms = 0"), "{e}");
        let e = err("[persistence]\nenabled = \"yes\"\n");
        assert!(
            e.contains("[persistence].enabled") && e.contains("true or false"),
            "{e}"
        );
        let e = err("[persistence]\nfsync = true\n");
        assert!(e.contains("unknown key `fsync` in [persistence]"), "{e}");
        let e = err("[persistence]\npath = \"\"\n");
        assert!(e.contains("[persistence].path"), "{e}");
    }

    #[test]
    fn anonymous_default_is_loopback_only_unless_set() {
        let l = |bind: &str, own: Option<bool>| Listener {
            bind: bind.parse().unwrap(),
            allow_anonymous: own,
            ..Listener::default()
        };
        assert!(l("127.0.0.1", None).allows_anonymous(None));
        assert!(l("::1", None).allows_anonymous(None));
        assert!(!l("0.0.0.0", None).allows_anonymous(None));
        assert!(!l("192.168.1.2", None).allows_anonymous(None));
        assert!(l("0.0.0.0", None).allows_anonymous(Some(true)));
        assert!(!l("127.0.0.1", None).allows_anonymous(Some(false)));
        assert!(l("0.0.0.0", Some(true)).allows_anonymous(Some(false)));
        assert!(!l("127.0.0.1", Some(false)).allows_anonymous(Some(true)));
    }

    #[test]
    fn tls_keys_must_be_consistent() {
        let e = err("[[listener]]\ncertfile = \"a.crt\"\n");
        assert!(e.contains("listener[1]") && e.contains("keyfile"), "{e}");
        let e = err("[[listener]]\nkeyfile = \"a.key\"\n");
        assert!(e.contains("certfile is not"), "{e}");
        for key in [
            "cafile = \"ca.crt\"",
            "require_certificate = true",
            "use_identity_as_username = true",
            "tls_version = \"tlsv1.3\"",
        ] {
            let e = err(&format!("[[listener]]\n[[listener]]\nport = 1884\n{key}\n"));
            let name = key.split(' ').next().unwrap();
            assert!(
                e.contains("listener[2]") && e.contains(name) && e.contains("without TLS"),
                "{e}"
            );
        }
        let tls = "[[listener]]\ncertfile = \"a.crt\"\nkeyfile = \"a.key\"\n";
        let e = err(&format!("{tls}require_certificate = true\n"));
        assert!(e.contains("needs cafile"), "{e}");
        let e = err(&format!(
            "{tls}cafile = \"ca.crt\"\nuse_identity_as_username = true\n"
        ));
        assert!(e.contains("needs require_certificate"), "{e}");
        let e = err(&format!("{tls}tls_version = \"tlsv1.1\"\n"));
        assert!(e.contains("tls_version") && e.contains("tlsv1.2"), "{e}");
        ok(&format!(
            "{tls}cafile = \"ca.crt\"\nrequire_certificate = true\nuse_identity_as_username = true\n"
        ));
    }

    #[test]
    fn listener_tables_replace_the_default_and_get_listener_defaults() {
        let c = ok("max_connections = 3\n[[listener]]\nport = 1884\n[[listener]]\nbind = \"0.0.0.0\"\nqueue_full = \"drop_new\"\n");
        assert_eq!(c.max_connections, 3);
        assert_eq!(
            c.listeners,
            vec![
                Listener {
                    port: 1884,
                    ..Listener::default()
                },
                Listener {
                    bind: "0.0.0.0".parse().unwrap(),
                    queue_full: QueueFull::DropNew,
                    ..Listener::default()
                },
            ]
        );
        // An empty table is one default listener.
        assert_eq!(ok("[[listener]]\n").listeners, vec![Listener::default()]);
        // Inline form works too.
        assert_eq!(ok("listener = [{ port = 1885 }]").listeners[0].port, 1885);
    }

    #[test]
    fn range_checks() {
        let cases: &[(&str, &str)] = &[
            (
                "max_packet_size = 0",
                "config.toml: max_packet_size = 0 is invalid: expected 1..=268435455",
            ),
            (
                "max_packet_size = 268435456",
                "config.toml: max_packet_size = 268435456 is invalid: expected 1..=268435455",
            ),
            (
                "max_client_id_len = 0",
                "config.toml: max_client_id_len = 0 is invalid: expected 1..=65535",
            ),
            (
                "max_connect_size = 0",
                "config.toml: max_connect_size = 0 is invalid: expected 1..=268435455",
            ),
            (
                "max_queued_password_checks = 0",
                "config.toml: max_queued_password_checks = 0 is invalid: expected 1..=65535",
            ),
            (
                "max_client_id_len = 65536",
                "config.toml: max_client_id_len = 65536 is invalid: expected 1..=65535",
            ),
            (
                "max_inflight_messages = 0",
                "config.toml: max_inflight_messages = 0 is invalid: expected 1..=65535",
            ),
            (
                "max_inflight_messages = 65536",
                "config.toml: max_inflight_messages = 65536 is invalid: expected 1..=65535",
            ),
            (
                "drop_log_interval = 0",
                "config.toml: drop_log_interval = 0 is invalid: expected 1..=31536000",
            ),
            (
                "drop_log_interval = 31536001",
                "config.toml: drop_log_interval = 31536001 is invalid: expected 1..=31536000",
            ),
            (
                "connect_timeout = 0",
                "config.toml: connect_timeout = 0 is invalid: expected 1..=31536000",
            ),
            (
                "connect_timeout = 99999999999",
                "config.toml: connect_timeout = 99999999999 is invalid: expected 1..=31536000",
            ),
            (
                "retry_interval = 31536001",
                "config.toml: retry_interval = 31536001 is invalid: expected 0..=31536000",
            ),
            (
                "[[listener]]\nport = 0",
                "config.toml: listener[1].port = 0 is invalid: expected 1..=65535",
            ),
            (
                "[[listener]]\nport = 1\n[[listener]]\nport = 0",
                "config.toml: listener[2].port = 0 is invalid: expected 1..=65535",
            ),
            (
                "listener = []",
                "config.toml: listener = [] is invalid: expected at least one [[listener]] table",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(&err(text), expected, "for {text:?}");
        }
        // The bounds themselves are accepted.
        let c = ok(
            "max_packet_size = 268435455\nmax_client_id_len = 1\nmax_inflight_messages = 65535\n\
                    drop_log_interval = 1\nconnect_timeout = 31536000\nretry_interval = 0\n\
                    [[listener]]\nport = 65535",
        );
        assert_eq!(c.max_packet_size, 268_435_455);
        ok("max_packet_size = 1\nmax_client_id_len = 65535\nmax_inflight_messages = 1");
    }

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
    fn bad_log_level() {
        let e = err("log_level = \"info=bogus\"");
        assert!(
            e.starts_with(
                "config.toml: log_level = \"info=bogus\" is invalid: expected one of \"error\""
            ),
            "{e}"
        );
        assert!(e.contains("error parsing level filter"), "{e}");
        assert!(err("log_level = \"\"").starts_with("config.toml: log_level = \"\" is invalid"));
        assert_eq!(ok("log_level = \"warn\"").log_level, "warn");
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
    fn unknown_listener_key() {
        let e =
            err("[[listener]]\nport = 1884\n\n[[listener]]\nport = 1885\nqueue = \"drop_new\"\n");
        assert_eq!(
            e,
            "config.toml: unknown key `queue` in listener[2] at line 6 (expected one of `bind`, \
             `port`, `max_connections`, `queue_full`, `allow_anonymous`, `certfile`, `keyfile`, \
             `cafile`, `require_certificate`, `use_identity_as_username`, `tls_version`)"
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
    fn duplicate_listeners() {
        let text = "[[listener]]\nport = 1884\n[[listener]]\nport = 1885\n[[listener]]\nbind = \"127.0.0.1\"\nport = 1884\n";
        assert_eq!(
            err(text),
            "config.toml: listener[1] and listener[3] both bind 127.0.0.1:1884 (each bind:port \
             pair may appear only once)"
        );
        let text = "[[listener]]\nbind = \"::1\"\n[[listener]]\nbind = \"::1\"\n";
        assert!(err(text).contains("both bind [::1]:1883"));
        // Same port on different addresses, or same address on different ports, is fine.
        ok("[[listener]]\nbind = \"127.0.0.1\"\n[[listener]]\nbind = \"::1\"\n[[listener]]\nport = 1884\n");
    }

    #[test]
    fn load_names_the_path() {
        let missing = Path::new("/nonexistent/midge/config.toml");
        let e = Config::load(missing).unwrap_err().0;
        assert!(
            e.starts_with("cannot read /nonexistent/midge/config.toml: "),
            "{e}"
        );

        let path =
            std::env::temp_dir().join(format!("midge-config-test-{}.toml", std::process::id()));
        std::fs::write(&path, "max_packet_size = 0\n").unwrap();
        let e = Config::load(&path).unwrap_err().0;
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            e,
            format!(
                "{}: max_packet_size = 0 is invalid: expected 1..=268435455",
                path.display()
            )
        );
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
