//! `midge check-config`: everything that would stop midge from starting with a
//! configuration, or make it start broken, found at once instead of one at a time.
//!
//! The files are read by the loaders the broker itself uses (password file, ACL file, TLS
//! certificates and keys, the log file's opener) and each listener's address is bound and
//! released at once, as the broker binds it. What the broker would create (the store
//! directory, the log file) is created only to find out whether it can be, and removed
//! again, so a check run as root leaves nothing root-owned behind for the service's user.

use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::auth::{AclFile, PasswordFile};
use crate::config::{Config, LogDest};

/// What a check found: problems (midge would not start, or would start without what the
/// file asks for) and warnings (it would start, but see [`Config::refusal_warnings`]).
#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

/// Checks every file `config` names and every listener's address. `config` has its paths
/// resolved (see [`Config::resolve_paths`]); `origin` names the file in messages.
pub fn files(config: &Config, origin: &str) -> Report {
    let mut problems = Vec::new();
    let mut fail = |key: &str, e: String| problems.push(format!("{origin}: {key}: {e}"));
    if let Some(path) = &config.password_file {
        if let Err(e) = PasswordFile::load(path) {
            fail("password_file", e);
        }
    }
    if let Some(path) = &config.acl_file {
        if let Err(e) = AclFile::load(path) {
            fail("acl_file", e);
        }
    }
    if let LogDest::File(path) = &config.log_dest {
        if let Err(e) = log_file_writable(path) {
            fail("log_dest", format!("{}: {e}", path.display()));
        }
    }
    if config.persistence.enabled {
        let dir = config.persistence.dir();
        if let Err(e) = store_dir_writable(&dir) {
            fail("[persistence].path", format!("{}: {e}", dir.display()));
        }
    }
    for (i, listener) in config.listeners.iter().enumerate() {
        let at = format!("{origin}: listener[{}]", i + 1);
        if let Err(e) = crate::tls::acceptor(listener, &at) {
            problems.push(e.to_string());
        }
    }
    if let Err(e) = crate::http::Prepared::new(config, origin) {
        problems.push(e);
    }
    problems.extend(bind_each(config, origin));
    Report {
        problems,
        warnings: config
            .refusal_warnings()
            .into_iter()
            .map(|(_, text)| text)
            .collect(),
    }
}

/// Binds each listener's address, and `[http]`'s, and releases it at once.
fn bind_each(config: &Config, origin: &str) -> Vec<String> {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(r) => r,
        Err(e) => return vec![format!("cannot start a runtime to bind listeners: {e}")],
    };
    let _inside = runtime.enter();
    // Port 0 is skipped: a listener's is reported by the validation, `[http]`'s means any
    // free port; either would bind anywhere.
    let listeners = config
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| l.port != 0)
        .map(|(i, l)| {
            (
                format!("listener[{}]", i + 1),
                SocketAddr::new(l.bind, l.port),
            )
        });
    let http = config
        .http
        .iter()
        .filter(|h| h.port != 0)
        .map(|h| ("[http]".to_owned(), SocketAddr::new(h.bind, h.port)));
    let mut problems = Vec::new();
    for (name, addr) in listeners.chain(http) {
        if let Err(e) = crate::server::bind(addr) {
            let why = crate::server::bind_error(addr, &e);
            problems.push(format!("{origin}: {name}: {why}"));
        }
    }
    problems
}

/// The log file can be opened for appending. An existing file is opened as it is; a
/// missing one is created and removed again.
fn log_file_writable(path: &Path) -> Result<(), String> {
    match OpenOptions::new().append(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            crate::log_file::open_append(path).map_err(|e| format!("cannot create: {e}"))?;
            let _ = fs::remove_file(path);
            Ok(())
        }
        Err(e) => Err(format!("cannot open for appending: {e}")),
    }
}

/// The store directory exists (or can be created) and a file can be written in it. What
/// this creates is removed again.
fn store_dir_writable(dir: &Path) -> Result<(), String> {
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut at = dir;
    loop {
        match fs::metadata(at) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => return Err(format!("{} is not a directory", at.display())),
            // Missing, or under something that is not a directory (found further up).
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                missing.push(at.to_owned());
                match at.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => at = parent,
                    _ => break,
                }
            }
            Err(e) => return Err(format!("cannot read {}: {e}", at.display())),
        }
    }
    fs::create_dir_all(dir).map_err(|e| format!("cannot create the directory: {e}"))?;
    let probe = dir.join(format!(".midge-check-config-{}", std::process::id()));
    let written = fs::write(&probe, b"").map_err(|e| format!("not writable: {e}"));
    let _ = fs::remove_file(&probe);
    // Deepest first, so each is empty when its turn comes.
    for created in &missing {
        let _ = fs::remove_dir(created);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_dir_check_creates_nothing_it_leaves_behind() {
        let base = std::env::temp_dir().join(format!("midge-check-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(&base).unwrap();
        let deep = base.join("a/b/c");
        store_dir_writable(&deep).unwrap();
        assert!(!base.join("a").exists(), "created directories are removed");

        let file = base.join("file");
        fs::write(&file, b"x").unwrap();
        let e = store_dir_writable(&file.join("store")).unwrap_err();
        assert!(e.contains("is not a directory"), "{e}");

        let log = base.join("midge.log");
        log_file_writable(&log).unwrap();
        assert!(!log.exists(), "a log file created to check is removed");
        let e = log_file_writable(&base.join("no/such/dir/midge.log")).unwrap_err();
        assert!(e.starts_with("cannot create"), "{e}");
        fs::remove_dir_all(&base).unwrap();
    }
}
