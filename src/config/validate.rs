//! Range and consistency checks on a parsed [`Config`], and the limits they check
//! against (which `errors.rs` also names when a value has the wrong type).

use std::net::SocketAddr;
use std::ops::RangeInclusive;

use tracing_subscriber::EnvFilter;

use super::{Config, ConfigError, Http, Listener, LogDest};

impl Config {
    /// Range and consistency checks that the types alone do not express: the first
    /// problem, as the broker reports it when it refuses to start.
    pub(super) fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        match self.problems(origin).into_iter().next() {
            Some(first) => Err(first),
            None => Ok(()),
        }
    }

    /// Every problem [`Config::validate`] would report, in the order checked (`midge
    /// check-config` lists them all).
    pub fn problems(&self, origin: &str) -> Vec<ConfigError> {
        let mut out = Vec::new();
        let mut bad = |key: &str, value: &dyn std::fmt::Display, expected: &str| {
            out.push(ConfigError(format!(
                "{origin}: {key} = {value} is invalid: expected {expected}"
            )))
        };

        if self.log_level.trim().is_empty() {
            bad("log_level", &"\"\"", LOG_LEVEL_EXPECTED);
        } else if let Err(e) = EnvFilter::try_new(&self.log_level) {
            bad(
                "log_level",
                &format_args!("{:?}", self.log_level),
                &format!("{LOG_LEVEL_EXPECTED} ({e})"),
            );
        }
        if let LogDest::File(path) = &self.log_dest {
            let text = path.to_string_lossy();
            if text.is_empty() || NOT_LOG_FILES.contains(&text.as_ref()) {
                bad(
                    "log_dest",
                    &format_args!("{text:?}"),
                    &format!("{LOG_DEST_EXPECTED} (only stderr is built in)"),
                );
            }
        }

        let u64_checks: [(&str, u64, RangeInclusive<u64>); 4] = [
            ("connect_timeout", self.connect_timeout, 1..=MAX_SECONDS),
            ("retry_interval", self.retry_interval, 0..=MAX_SECONDS),
            ("drop_log_interval", self.drop_log_interval, 1..=MAX_SECONDS),
            ("sys_interval", self.sys_interval, 0..=MAX_SECONDS),
        ];
        for (key, value, range) in u64_checks {
            if !range.contains(&value) {
                bad(key, &value, &range_text(&range));
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
                bad(key, &value, &range_text(&range));
            }
        }

        if self.receive_maximum == 0 {
            bad("receive_maximum", &0, "1..=65535");
        }
        if let Some(limit) = self.memory_limit {
            if limit != 0 && limit < MIN_MEMORY_LIMIT {
                bad("memory_limit", &limit, MEMORY_LIMIT_EXPECTED);
            }
        }
        if self.max_session_expiry_interval == u32::MAX {
            bad(
                "max_session_expiry_interval",
                &u32::MAX,
                MAX_SESSION_EXPIRY_EXPECTED,
            );
        }
        let p = &self.persistence;
        if !SYNC_INTERVAL_MS.contains(&p.sync_interval_ms) {
            bad(
                "[persistence].sync_interval_ms",
                &p.sync_interval_ms,
                &range_text(&SYNC_INTERVAL_MS),
            );
        }
        if p.path.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            bad("[persistence].path", &"\"\"", "a directory path");
        }
        if self.listeners.is_empty() {
            bad("listener", &"[]", "at least one [[listener]] table");
        }
        for (i, listener) in self.listeners.iter().enumerate() {
            if listener.port == 0 {
                bad(
                    &format!("listener[{}].port", i + 1),
                    &listener.port,
                    "1..=65535",
                );
            }
        }
        for (i, listener) in self.listeners.iter().enumerate() {
            let at = format!("{origin}: listener[{}]", i + 1);
            if let Err(e) = listener.validate_tls(&at) {
                out.push(e);
            }
            if let Err(e) = listener.validate_websockets(&at) {
                out.push(e);
            }
        }
        if let Some((a, b, addr)) = duplicate_listener(&self.listeners) {
            out.push(ConfigError(format!(
                "{origin}: listener[{}] and listener[{}] both bind {addr} \
                 (each bind:port pair may appear only once)",
                a + 1,
                b + 1
            )));
        }
        if let Some(http) = &self.http {
            if let Err(e) = http.validate(origin, &self.listeners) {
                out.push(e);
            }
        }
        out
    }
}

impl Http {
    /// `[http]`: TLS keys as a pair, a usable token, a listener of its own, and no open
    /// door beyond loopback.
    fn validate(&self, origin: &str, listeners: &[Listener]) -> Result<(), ConfigError> {
        let fail = |text: String| Err(ConfigError(format!("{origin}: [http].{text}")));
        match (&self.certfile, &self.keyfile) {
            (Some(_), None) => return fail("certfile is set but keyfile is not".into()),
            (None, Some(_)) => return fail("keyfile is set but certfile is not".into()),
            _ => {}
        }
        for (key, path) in [
            ("certfile", &self.certfile),
            ("keyfile", &self.keyfile),
            ("password_file", &self.password_file),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return fail(format!("{key} = \"\" is invalid: expected a file path"));
            }
        }
        if let Some(token) = &self.token {
            if token.0.len() < MIN_TOKEN_LEN || !token.0.bytes().all(|b| b.is_ascii_graphic()) {
                return fail(format!("token is invalid: expected {TOKEN_EXPECTED}"));
            }
        }
        if !self.bind.is_loopback() && self.is_open() {
            return fail(format!(
                "bind = \"{}\" is beyond loopback, which needs credentials: set [http] \
                 password_file or token (or bind to 127.0.0.1)",
                self.bind
            ));
        }
        if let Some(i) = listeners
            .iter()
            .position(|l| self.port != 0 && l.port == self.port && l.bind == self.bind)
        {
            return fail(format!(
                "port = {} is invalid: listener[{}] already binds {}",
                self.port,
                i + 1,
                SocketAddr::new(self.bind, self.port)
            ));
        }
        Ok(())
    }
}

/// `[http] token`: long enough not to be guessed, and sendable in a header as it is.
pub(super) const MIN_TOKEN_LEN: usize = 16;

pub(super) const TOKEN_EXPECTED: &str =
    "a string of at least 16 printable ASCII characters without spaces";

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
pub(super) const MAX_SECONDS: u64 = 365 * 24 * 60 * 60;

pub(super) const MAX_SESSION_EXPIRY_EXPECTED: &str =
    "seconds in 0..=4294967294 (0 = no maximum; 4294967295 would mean \"never\")";

/// Below this a broker could not hold one default-sized packet.
pub(super) const MIN_MEMORY_LIMIT: usize = 1 << 20;

pub(super) const MEMORY_LIMIT_EXPECTED: &str = "bytes, 0 (no limit) or at least 1048576";

/// `[persistence] sync_interval_ms`: 1 ms to one hour.
pub(super) const SYNC_INTERVAL_MS: RangeInclusive<u64> = 1..=3_600_000;

/// MQTT's largest encodable remaining length.
pub(super) const MAX_PACKET_SIZE_RANGE: RangeInclusive<usize> = 1..=268_435_455;

pub(super) const LOG_DEST_EXPECTED: &str = "\"stderr\" or a file path in quotes";

/// `log_dest` values that look like a destination other than a file, which midge does not
/// have (rather than create a file of that name).
const NOT_LOG_FILES: &[&str] = &["stdout", "syslog", "journal", "none", "topic"];

pub(super) const LOG_LEVEL_EXPECTED: &str =
    "one of \"error\", \"warn\", \"info\", \"debug\", \"trace\", \"off\" or a RUST_LOG-style filter";

pub(super) fn range_text<T: std::fmt::Display>(range: &RangeInclusive<T>) -> String {
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

#[cfg(test)]
mod tests {
    use super::super::tests::{err, ok};
    use super::*;

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
                "sys_interval = 31536001",
                "config.toml: sys_interval = 31536001 is invalid: expected 0..=31536000",
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
                    sys_interval = 0\n[[listener]]\nport = 65535",
        );
        assert_eq!(c.max_packet_size, 268_435_455);
        ok("max_packet_size = 1\nmax_client_id_len = 65535\nmax_inflight_messages = 1");
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
    fn http_listener_is_checked() {
        let http = ok("[http]\n")
            .http
            .expect("an empty [http] table turns it on");
        assert_eq!(http, Http::default());
        assert_eq!(
            (http.bind.to_string(), http.port, http.max_connections),
            ("127.0.0.1".to_owned(), 9883, 32)
        );
        let e = err("[http]\nbind = \"0.0.0.0\"\n");
        assert_eq!(
            e,
            "config.toml: [http].bind = \"0.0.0.0\" is beyond loopback, which needs \
             credentials: set [http] password_file or token (or bind to 127.0.0.1)"
        );
        ok("[http]\nbind = \"0.0.0.0\"\npassword_file = \"operators\"\n");
        ok("[http]\nbind = \"::\"\ntoken = \"0123456789abcdef\"\n");
        ok("[http]\nbind = \"::1\"\nport = 0\n");
        let e = err("[http]\ntoken = \"short\"\n");
        assert!(
            e.contains("[http].token") && e.contains("at least 16"),
            "{e}"
        );
        let e = err("[http]\ntoken = \"0123456789 abcdef\"\n");
        assert!(e.contains("[http].token"), "{e}");
        assert!(!e.contains("0123456789"), "a token is never echoed: {e}");
        let e = err("[http]\ncertfile = \"a.crt\"\n");
        assert!(e.contains("[http].certfile is set but keyfile"), "{e}");
        let e = err("[http]\npassword_file = \"\"\n");
        assert!(e.contains("[http].password_file"), "{e}");
        let e = err("[[listener]]\nport = 9883\n[http]\n");
        assert!(
            e.contains("[http].port = 9883") && e.contains("listener[1]"),
            "{e}"
        );
        let e = err("[http]\nenabled = true\n");
        assert!(e.contains("unknown key `enabled` in [http]"), "{e}");
        let e = err("[http]\nport = 70000\n");
        assert!(
            e.contains("[http].port = 70000") && e.contains("0..=65535"),
            "{e}"
        );
        let e = err("[http]\nbind = \"localhost\"\n");
        assert!(
            e.contains("[http].bind") && e.contains("an IP address"),
            "{e}"
        );
        let e = err("[http]\ntoken = 1234\n");
        assert!(
            e.contains("[http].token") && e.contains("at least 16"),
            "{e}"
        );
        let c = ok("[http]\ntoken = \"0123456789abcdef\"\n");
        assert!(
            !format!("{c:?}").contains("0123456789abcdef"),
            "Debug hides the token"
        );
    }

    #[test]
    fn log_format_and_log_dest_are_checked() {
        let e = err("log_format = \"xml\"");
        assert!(e.contains("log_format") && e.contains("\"json\""), "{e}");
        for dest in ["", "stdout", "syslog"] {
            let e = err(&format!("log_dest = {dest:?}"));
            assert!(
                e.starts_with(&format!("config.toml: log_dest = {dest:?} is invalid")),
                "{e}"
            );
        }
        let e = err("log_dest = 3");
        assert!(e.contains("log_dest") && e.contains("file path"), "{e}");
        assert_eq!(
            ok("log_dest = \"stderr\"").log_dest,
            crate::config::LogDest::Stderr
        );
    }

    #[test]
    fn problems_lists_every_one_not_just_the_first() {
        let c: Config = toml::from_str(
            "max_packet_size = 0\nconnect_timeout = 0\n[[listener]]\nport = 0\n\
             [[listener]]\ncertfile = \"a.crt\"\n",
        )
        .unwrap();
        let all: Vec<String> = c.problems("c.toml").into_iter().map(|e| e.0).collect();
        assert_eq!(all.len(), 4, "{all:#?}");
        assert!(all[0].contains("connect_timeout"), "{all:#?}");
        assert!(all[1].contains("max_packet_size"), "{all:#?}");
        assert!(all[2].contains("listener[1].port"), "{all:#?}");
        assert!(
            all[3].contains("listener[2]: certfile is set but keyfile"),
            "{all:#?}"
        );
        assert_eq!(c.validate("c.toml").unwrap_err().0, all[0]);
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
}
