//! The keys of `config.toml` as serde reads them, each with its default. Every key is
//! here once; what a value may be beyond its type is checked in `validate.rs`.

use std::net::{IpAddr, Ipv4Addr};

pub use super::listener::{Listener, TlsVersion};
use std::path::PathBuf;

use serde::Deserialize;

/// How log lines are written (`log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One line of text per event, for people. Default.
    #[default]
    Text,
    /// One JSON object per line (tracing-subscriber's JSON formatter), for log collectors.
    Json,
}

/// Where log lines go (`log_dest`): `"stderr"` or a file path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LogDest {
    /// Standard error (under systemd: the journal). Default.
    #[default]
    Stderr,
    /// A file, appended to, reopened on SIGHUP (after logrotate moved it). A relative path
    /// is taken from the config file's directory (see [`Config::resolve_paths`]).
    File(PathBuf),
}

impl<'de> Deserialize<'de> for LogDest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<LogDest, D::Error> {
        let text = String::deserialize(d)?;
        Ok(match text.as_str() {
            "stderr" => LogDest::Stderr,
            _ => LogDest::File(PathBuf::from(text)),
        })
    }
}

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
pub struct Config {
    /// tracing filter: "error", "warn", "info", "debug", "trace" or a RUST_LOG-style filter.
    pub log_level: String,
    /// Text (default) or JSON lines.
    pub log_format: LogFormat,
    /// `"stderr"` (default) or a file path.
    pub log_dest: LogDest,
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
    /// Messages one session's queue may hold; 0 = unlimited (the default: the byte
    /// limits decide, so nothing is dropped before them). Kept for Mosquitto configs.
    pub max_queued_messages: usize,
    /// Bytes one session's queue may hold; 0 = unlimited. Unset: see
    /// [`Config::queue_byte_limits`].
    pub max_queued_bytes: Option<usize>,
    /// Whether QoS 0 messages are queued for offline persistent sessions.
    pub queue_qos0_messages: bool,
    /// Whether idle plain-TCP connections leave their tasks for the park lot (less memory
    /// per idle connection, a little CPU each time one parks and resumes).
    pub park_idle_connections: bool,
    /// Seconds before an unacknowledged PUBLISH/PUBREL is re-sent on a live MQTT 3.1.1/3.1
    /// connection; 0 = only on reconnect.
    pub retry_interval: u64,
    /// Seconds between two "dropped messages" log lines for one client.
    pub drop_log_interval: u64,
    /// Seconds between two updates of the `$SYS/broker/...` topics; 0 = no `$SYS` topics.
    /// Default 10, as Mosquitto.
    pub sys_interval: u64,
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
    /// The operator's HTTP listener (`[http]`): `/metrics`, the JSON API, the status page.
    /// Off unless the table is there.
    pub http: Option<Http>,
}

/// `[http]`: where the operator's HTTP listener listens and who may read it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Address to listen on. Default 127.0.0.1; anything else needs `password_file` or
    /// `token`.
    pub bind: IpAddr,
    /// TCP port. Default 9883 (Mosquitto 2.1's HTTP API port); 0 = any free port (the one
    /// bound is logged).
    pub port: u16,
    /// HTTP connections open at once; more are closed at once. 0 = unlimited. Default 32.
    pub max_connections: usize,
    /// PEM certificate chain and its key: set both to serve HTTPS (loaded as a
    /// `[[listener]]`'s are).
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    /// Mosquitto-format password file whose users may log in with HTTP Basic
    /// authentication; reloaded on SIGHUP.
    pub password_file: Option<PathBuf>,
    /// A bearer token (`Authorization: Bearer ...`) that grants access; at least 16
    /// characters.
    pub token: Option<Secret>,
}

/// A configuration value never to be printed (`{:?}` shows `"<secret>"`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<secret>\"")
    }
}

impl Http {
    pub fn is_tls(&self) -> bool {
        self.certfile.is_some()
    }

    /// Whether anyone who reaches the port gets in (no password file, no token).
    pub fn is_open(&self) -> bool {
        self.password_file.is_none() && self.token.is_none()
    }
}

impl Default for Http {
    fn default() -> Self {
        Http {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 9883,
            max_connections: 32,
            certfile: None,
            keyfile: None,
            password_file: None,
            token: None,
        }
    }
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
    /// Store directory. Unset: `data` next to the config file; a relative path is taken
    /// from the config file's directory too (see [`Config::resolve_paths`]). Without a
    /// config file midge keeps no store at all (state in memory only).
    pub path: Option<PathBuf>,
    pub sync: SyncMode,
    /// With `sync = "interval"`: the longest time between two fsyncs, milliseconds.
    pub sync_interval_ms: u64,
    /// What the store (log and spools) may take on disk: bytes, or a share of the space
    /// it had at start ("90%", the default: of the filesystem's free space plus what the
    /// store already took). Past it, a persistent session's queue counts as full.
    pub max_disk_bytes: DiskLimit,
}

/// `[persistence] max_disk_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskLimit {
    /// Bytes; 0 = no limit of its own.
    Bytes(u64),
    /// Percent of the space available at start.
    Share(u8),
}

pub const DISK_LIMIT_EXPECTED: &str =
    "an integer >= 0 (bytes), or a share of the free space such as \"90%\" (1-100)";

impl DiskLimit {
    fn parse_share(v: &str) -> Option<DiskLimit> {
        let n: u8 = v.trim().strip_suffix('%')?.trim().parse().ok()?;
        (1..=100).contains(&n).then_some(DiskLimit::Share(n))
    }

    /// The limit in bytes, given the space available to the store at start (0 = none).
    pub fn bytes(self, available: u64) -> u64 {
        match self {
            DiskLimit::Bytes(n) => n,
            DiskLimit::Share(p) => (available as u128 * u128::from(p) / 100) as u64,
        }
    }
}

impl<'de> Deserialize<'de> for DiskLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DiskLimit;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(DISK_LIMIT_EXPECTED)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<DiskLimit, E> {
                u64::try_from(v)
                    .map(DiskLimit::Bytes)
                    .map_err(|_| E::custom(DISK_LIMIT_EXPECTED))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DiskLimit, E> {
                DiskLimit::parse_share(v).ok_or_else(|| E::custom(DISK_LIMIT_EXPECTED))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl Default for Persistence {
    fn default() -> Self {
        Persistence {
            enabled: true,
            path: None,
            sync: SyncMode::Always,
            sync_interval_ms: 1000,
            max_disk_bytes: DiskLimit::Share(90),
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

impl Default for Config {
    fn default() -> Self {
        Config {
            log_level: "info".to_owned(),
            log_format: LogFormat::Text,
            log_dest: LogDest::Stderr,
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
            max_queued_messages: 0,
            max_queued_bytes: None,
            queue_qos0_messages: false,
            park_idle_connections: true,
            retry_interval: 20,
            drop_log_interval: 10,
            sys_interval: 10,
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
            http: None,
        }
    }
}

/// `max_session_expiry_interval` by default: 30 days, as `persistent_client_expiration`.
const DEFAULT_MAX_SESSION_EXPIRY: u32 = 30 * 24 * 60 * 60;

#[cfg(test)]
mod tests {
    use super::super::tests::ok;
    use super::*;
    use crate::config::{ListenerProtocol, TrustedProxy};
    use std::net::Ipv6Addr;
    use std::time::Duration;

    #[test]
    fn defaults_are_as_documented() {
        let c = Config::default();
        assert_eq!(c.log_level, "info");
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.log_dest, LogDest::Stderr);
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
        assert_eq!(c.max_queued_messages, 0);
        assert_eq!(c.max_queued_bytes, None);
        assert_eq!(c.queue_byte_limits(), (16 << 20, 1 << 30));
        assert!(!c.queue_qos0_messages);
        assert_eq!(c.retry_interval, 20);
        assert_eq!(c.drop_log_interval, 10);
        assert_eq!(c.sys_interval, 10);
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
                protocol: ListenerProtocol::Mqtt,
                websockets_path: "/mqtt".into(),
                websockets_origin: Vec::new(),
                trusted_proxies: Vec::new(),
            }]
        );
        assert_eq!(c.allow_anonymous, None);
        assert_eq!(c.password_file, None);
        assert_eq!(c.acl_file, None);
        assert!(c.persistence.enabled);
        assert_eq!(c.persistence.path, None);
        assert_eq!(c.persistence.sync, SyncMode::Always);
        assert_eq!(c.persistence.sync_interval_ms, 1000);
        assert_eq!(c.http, None, "the HTTP listener is off by default");
        assert!(c.listeners[0].allows_anonymous(None), "loopback default");
        c.validate("defaults").unwrap();
    }

    #[test]
    fn every_key_is_read() {
        let c = ok(r#"
            log_level = "debug,midge::router=trace"
            log_format = "json"
            log_dest = "/var/log/midge/midge.log"
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
            sys_interval = 0
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
            protocol = "websockets"
            websockets_path = "/ws"
            websockets_origin = ["https://dash.example"]
            trusted_proxies = ["10.0.0.0/8"]

            [persistence]
            enabled = false
            path = "/var/lib/midge"
            sync = "interval"
            sync_interval_ms = 250
            max_disk_bytes = "50%"

            [http]
            bind = "::1"
            port = 9884
            max_connections = 4
            certfile = "http.crt"
            keyfile = "http.key"
            password_file = "operators"
            token = "0123456789abcdef"
        "#);
        let expected = Config {
            log_level: "debug,midge::router=trace".into(),
            log_format: LogFormat::Json,
            log_dest: LogDest::File("/var/log/midge/midge.log".into()),
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
            max_queued_bytes: Some(65536),
            queue_qos0_messages: true,
            park_idle_connections: true,
            retry_interval: 0,
            drop_log_interval: 1,
            sys_interval: 0,
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
                protocol: ListenerProtocol::Websockets,
                websockets_path: "/ws".into(),
                websockets_origin: vec!["https://dash.example".into()],
                trusted_proxies: vec![TrustedProxy::parse("10.0.0.0/8").unwrap()],
            }],
            persistence: Persistence {
                enabled: false,
                path: Some("/var/lib/midge".into()),
                sync: SyncMode::Interval,
                sync_interval_ms: 250,
                max_disk_bytes: DiskLimit::Share(50),
            },
            persistent_client_expiration: crate::expiry::Lifetime(Some(14 * 86400)),
            max_session_expiry_interval: 3600,
            memory_limit: Some(268_435_456),
            http: Some(Http {
                bind: "::1".parse().unwrap(),
                port: 9884,
                max_connections: 4,
                certfile: Some("http.crt".into()),
                keyfile: Some("http.key".into()),
                password_file: Some("operators".into()),
                token: Some(Secret("0123456789abcdef".into())),
            }),
        };
        assert_eq!(c, expected);
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
}
