//! `config.toml`: every key, its default, and the checks that turn a bad file into a
//! message naming the file, the key and what was expected.
//!
//! `schema.rs` holds the keys (the structs serde reads, with their defaults),
//! `validate.rs` the checks the types alone do not express, and `errors.rs` the
//! presentation of the TOML parser's and serde's errors as one-line messages.

mod errors;
mod schema;
mod validate;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use schema::{Config, Http, Listener, Persistence, QueueFull, Secret, SyncMode, TlsVersion};

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
            return Err(ConfigError(errors::syntax_error(text, origin, &e)));
        }
        let config: Config = toml::from_str(text)
            .map_err(|e| ConfigError(errors::schema_error(text, origin, &e)))?;
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
