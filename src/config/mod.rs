//! `config.toml`: every key, its default, and the checks that turn a bad file into a
//! message naming the file, the key and what was expected.
//!
//! `schema.rs` holds the keys (the structs serde reads, with their defaults),
//! `validate.rs` the checks the types alone do not express, and `errors.rs` the
//! presentation of the TOML parser's and serde's errors as one-line messages.

mod errors;
mod listener;
mod schema;
mod validate;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use listener::{ListenerProtocol, TrustedProxy};
pub use schema::{
    Config, DiskLimit, Http, Listener, LogDest, LogFormat, Persistence, QueueFull, Secret,
    SyncMode, TlsVersion,
};

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
        let config = Config::load_unchecked(path)?;
        config.validate(&path.display().to_string())?;
        Ok(config)
    }

    /// Reads and parses `path` without the range and consistency checks (`midge
    /// check-config` lists every one of [`Config::problems`] instead of the first).
    pub fn load_unchecked(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        Config::parse_unchecked(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `origin` names the file in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config = Config::parse_unchecked(text, origin)?;
        config.validate(origin)?;
        Ok(config)
    }

    fn parse_unchecked(text: &str, origin: &str) -> Result<Config, ConfigError> {
        // Syntax first, so that "not TOML at all" and "TOML, but not a midge config" read
        // differently.
        if let Err(e) = text.parse::<toml::Table>() {
            return Err(ConfigError(errors::syntax_error(text, origin, &e)));
        }
        toml::from_str(text).map_err(|e| ConfigError(errors::schema_error(text, origin, &e)))
    }

    /// Makes every path the file names independent of the working directory: a relative
    /// path is taken from `config_dir`, the directory of the config file, whatever the
    /// key (`password_file`, `acl_file`, `log_dest`, each listener's `certfile`,
    /// `keyfile` and `cafile`, `[http]`'s `certfile`, `keyfile` and `password_file`,
    /// `[persistence] path`), and an unset store path becomes
    /// `data` there. With `None` (no config file) paths stay as they are.
    pub fn resolve_paths(&mut self, config_dir: Option<&Path>) {
        let resolve = |path: &mut PathBuf| {
            if let Some(dir) = config_dir {
                if path.is_relative() {
                    *path = dir.join(&*path);
                }
            }
        };
        let p = &mut self.persistence;
        let mut store = p.path.take().unwrap_or_else(|| PathBuf::from("data"));
        resolve(&mut store);
        p.path = Some(store);
        for path in [&mut self.password_file, &mut self.acl_file]
            .into_iter()
            .flatten()
        {
            resolve(path);
        }
        if let LogDest::File(path) = &mut self.log_dest {
            resolve(path);
        }
        if let Some(h) = &mut self.http {
            for path in [&mut h.certfile, &mut h.keyfile, &mut h.password_file]
                .into_iter()
                .flatten()
            {
                resolve(path);
            }
        }
        for l in &mut self.listeners {
            for path in [&mut l.certfile, &mut l.keyfile, &mut l.cafile]
                .into_iter()
                .flatten()
            {
                resolve(path);
            }
        }
    }

    /// One warning per listener that will refuse every client, saying why and what to
    /// set: anonymous clients are not allowed there (`allow_anonymous` false, or unset on
    /// a listener bound beyond loopback) and there is no `password_file` to log in with
    /// (nor a certificate identity, `use_identity_as_username`).
    /// Each comes with the listener's address.
    pub fn refusal_warnings(&self) -> Vec<(std::net::SocketAddr, String)> {
        if self.password_file.is_some() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (i, l) in self.listeners.iter().enumerate() {
            if l.allows_anonymous(self.allow_anonymous) || l.use_identity_as_username {
                continue;
            }
            let why = if l.allow_anonymous.or(self.allow_anonymous).is_some() {
                "allow_anonymous = false"
            } else {
                "it is not bound to a loopback address, so anonymous clients are refused \
                 (allow_anonymous is unset)"
            };
            let addr = std::net::SocketAddr::new(l.bind, l.port);
            out.push((
                addr,
                format!(
                    "listener[{}] {addr} will refuse every client (CONNACK \"not authorised\"): \
                     {why}, and there is no password_file to log in with; set password_file \
                     (create one with `midge passwd -c FILE USER`) or allow_anonymous = true",
                    i + 1,
                ),
            ));
        }
        out
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout)
    }

    /// `max_queued_bytes` for a queue held in memory (a clean session's, or any without
    /// persistence) and for one that can go to disk (a persistent session's spool), in
    /// that order (0 = unlimited). Unset, 16 MiB and 1 GiB: a spool's bytes are disk, not
    /// memory, and an hour of a busy sensor's messages fits; `[persistence]
    /// max_disk_bytes` bounds them all together.
    pub fn queue_byte_limits(&self) -> (usize, usize) {
        match self.max_queued_bytes {
            Some(n) => (n, n),
            None => (16 << 20, 1 << 30),
        }
    }

    /// `memory_limit` in bytes, the default worked out (0 = no limit).
    pub fn memory_limit(&self) -> usize {
        self.memory_limit
            .unwrap_or_else(crate::memory::default_limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message `text` is refused with.
    pub(super) fn err(text: &str) -> String {
        match Config::parse(text, "config.toml") {
            Ok(c) => panic!("expected an error for {text:?}, got {c:?}"),
            Err(e) => e.0,
        }
    }

    pub(super) fn ok(text: &str) -> Config {
        Config::parse(text, "config.toml").unwrap_or_else(|e| panic!("{text:?}: {e}"))
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
    fn every_relative_path_is_taken_from_the_config_files_directory() {
        let mut c = ok(r#"
            password_file = "passwords"
            acl_file = "conf/acl"
            log_dest = "log/midge.log"
            [[listener]]
            certfile = "certs/server.crt"
            keyfile = "/etc/ssl/server.key"
            cafile = "../ca.crt"
            [persistence]
            path = "store"
            [http]
            certfile = "certs/http.crt"
            keyfile = "certs/http.key"
            password_file = "operators"
        "#);
        c.resolve_paths(Some(Path::new("/etc/midge")));
        let at = |p: &str| Some(PathBuf::from(p));
        assert_eq!(c.password_file, at("/etc/midge/passwords"));
        assert_eq!(c.acl_file, at("/etc/midge/conf/acl"));
        assert_eq!(c.log_dest, LogDest::File("/etc/midge/log/midge.log".into()));
        let l = &c.listeners[0];
        assert_eq!(l.certfile, at("/etc/midge/certs/server.crt"));
        assert_eq!(l.keyfile, at("/etc/ssl/server.key"), "absolute: unchanged");
        assert_eq!(l.cafile, at("/etc/midge/../ca.crt"));
        assert_eq!(c.persistence.dir(), Path::new("/etc/midge/store"));
        let h = c.http.as_ref().expect("[http] is set");
        assert_eq!(h.certfile, at("/etc/midge/certs/http.crt"));
        assert_eq!(h.keyfile, at("/etc/midge/certs/http.key"));
        assert_eq!(h.password_file, at("/etc/midge/operators"));

        // stderr is not a path; no config directory leaves paths alone.
        let mut c = ok("acl_file = \"acl\"");
        c.resolve_paths(None);
        assert_eq!(c.acl_file, at("acl"));
        assert_eq!(c.log_dest, LogDest::Stderr);
    }

    #[test]
    fn a_listener_that_refuses_every_client_is_warned_about() {
        let warnings = |text: &str| -> Vec<String> {
            let w = ok(text).refusal_warnings();
            for (addr, line) in &w {
                assert!(line.contains(&addr.to_string()), "{line}");
            }
            w.into_iter().map(|(_, line)| line).collect()
        };
        // Loopback, or anonymous allowed, or a password file: clients can get in.
        assert!(warnings("").is_empty());
        assert!(warnings("allow_anonymous = true\n[[listener]]\nbind = \"0.0.0.0\"").is_empty());
        assert!(warnings("password_file = \"p\"\n[[listener]]\nbind = \"::\"").is_empty());
        assert!(warnings("[[listener]]\nbind = \"0.0.0.0\"\nallow_anonymous = true").is_empty());

        let w = warnings("[[listener]]\n[[listener]]\nbind = \"0.0.0.0\"\nport = 1884");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("listener[2] 0.0.0.0:1884 will refuse every client")
                && w[0].contains("not bound to a loopback address")
                && w[0].contains("password_file")
                && w[0].contains("allow_anonymous = true"),
            "{}",
            w[0]
        );
        let w = warnings("allow_anonymous = false");
        assert!(
            w.len() == 1
                && w[0].contains("127.0.0.1:1883")
                && w[0].contains("allow_anonymous = false"),
            "{w:?}"
        );
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
}
