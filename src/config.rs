//! `config.toml`: every key, its default, and the checks that turn a bad file into a
//! message naming the file, the key and what was expected.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

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
    pub bind: IpAddr,
    pub port: u16,
    /// 0 = unlimited.
    pub max_connections: usize,
    pub queue_full: QueueFull,
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
    pub max_client_id_len: usize,
    /// 0 = unlimited.
    pub max_subscriptions_per_client: usize,
    /// 0 = unlimited.
    pub max_topic_levels: usize,
    pub max_inflight_messages: usize,
    /// 0 = unlimited.
    pub max_queued_messages: usize,
    /// 0 = unlimited.
    pub max_queued_bytes: usize,
    pub queue_qos0_messages: bool,
    /// Seconds before an unacknowledged PUBLISH/PUBREL is re-sent on a live MQTT 3.1.1/3.1
    /// connection; 0 = only on reconnect.
    pub retry_interval: u64,
    /// Seconds between two "dropped messages" log lines for one client.
    pub drop_log_interval: u64,
    #[serde(rename = "listener")]
    pub listeners: Vec<Listener>,
}

impl Default for Listener {
    fn default() -> Self {
        todo!()
    }
}

impl Default for Config {
    fn default() -> Self {
        todo!()
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
        todo!()
    }

    /// Parses and validates TOML text; `origin` names the file in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        todo!()
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout)
    }
}
