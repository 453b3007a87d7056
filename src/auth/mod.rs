//! Who may connect and what they may do: the password file ([`password`]), the ACL file
//! ([`acl`]), and their reload on SIGHUP.
//!
//! Both files are read at startup (a bad file stops the broker with a message naming the
//! key and the file) and again on every SIGHUP; a bad file on reload is logged and the
//! previous one stays in force, so a typo never locks every device out or opens the
//! broker up. Connections stay up across a reload; the new rules apply from the next
//! check on (the next CONNECT, SUBSCRIBE, PUBLISH or delivery).

pub(crate) mod acl;
pub mod password;
pub(crate) mod queue;

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::config::{Config, ConfigError};
pub(crate) use acl::{Access, AclFile};
pub use password::PasswordFile;

/// The broker's current password and ACL files.
pub(crate) struct Auth {
    password_file: Option<PathBuf>,
    acl_file: Option<PathBuf>,
    passwords: RwLock<Option<Arc<PasswordFile>>>,
    acl: RwLock<Option<Arc<AclFile>>>,
    /// Password checks running at once and waiting. One argon2id check as Mosquitto 2.1
    /// configures it takes ~46 MiB and tens of milliseconds of CPU: a storm of
    /// connecting clients (or an attacker) must queue here, one check per core, rather
    /// than fill the blocking pool's 512 threads and the memory with them; and the queue
    /// is bounded, newest first (see [`queue`]).
    checks: Arc<queue::CheckQueue>,
}

/// The outcome of checking a CONNECT's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allowed,
    /// Wrong password or unknown user (CONNACK 0x04 / 0x86).
    BadCredentials,
    /// No credentials where they are required (CONNACK 0x05 / 0x87).
    NotAuthorized,
    /// Not checked: too many checks waiting (CONNACK 0x03 / 0x89 Server busy).
    Busy,
}

impl Auth {
    /// Reads the files named in `config`; `origin` names the configuration file.
    pub fn load(config: &Config, origin: &str) -> Result<Auth, ConfigError> {
        let key_error = |key: &str, e: String| ConfigError(format!("{origin}: {key}: {e}"));
        let passwords = match &config.password_file {
            Some(path) => Some(Arc::new(
                PasswordFile::load(path).map_err(|e| key_error("password_file", e))?,
            )),
            None => None,
        };
        let acl = match &config.acl_file {
            Some(path) => Some(Arc::new(
                AclFile::load(path).map_err(|e| key_error("acl_file", e))?,
            )),
            None => None,
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Auth {
            password_file: config.password_file.clone(),
            acl_file: config.acl_file.clone(),
            passwords: RwLock::new(passwords),
            acl: RwLock::new(acl),
            checks: queue::CheckQueue::new(cores, config.max_queued_password_checks),
        })
    }

    /// Re-reads both files (SIGHUP). A file that fails to load keeps its predecessor.
    pub fn reload(&self) {
        if let Some(path) = &self.password_file {
            match PasswordFile::load(path) {
                Ok(file) => {
                    tracing::info!(
                        event = "passwords_reloaded",
                        users = file.len(),
                        "reloaded password file {} ({} users)",
                        path.display(),
                        file.len()
                    );
                    *self.passwords.write() = Some(Arc::new(file));
                }
                Err(e) => {
                    tracing::error!(
                        event = "passwords_not_reloaded",
                        "password_file not reloaded, keeping the previous one: {e}"
                    )
                }
            }
        }
        if let Some(path) = &self.acl_file {
            match AclFile::load(path) {
                Ok(file) => {
                    tracing::info!(
                        event = "acl_reloaded",
                        "reloaded ACL file {}",
                        path.display()
                    );
                    *self.acl.write() = Some(Arc::new(file));
                }
                Err(e) => tracing::error!(
                    event = "acl_not_reloaded",
                    "acl_file not reloaded, keeping the previous one: {e}"
                ),
            }
        }
        if self.password_file.is_none() && self.acl_file.is_none() {
            tracing::info!("SIGHUP: no password_file or acl_file configured, nothing to reload");
        }
    }

    pub fn passwords(&self) -> Option<Arc<PasswordFile>> {
        self.passwords.read().clone()
    }

    /// The ACL in force, or `None` when every client may do everything. Without an
    /// `acl_file` no lock is taken: this runs for every message routed.
    pub fn acl(&self) -> Option<Arc<AclFile>> {
        self.acl_file.as_ref()?;
        self.acl.read().clone()
    }

    /// Checks a CONNECT's username and password. Runs the password hash (argon2 takes
    /// tens of milliseconds of CPU on purpose) on the blocking pool, so that connecting
    /// clients never stall the workers that move messages. Checks wait their turn by the
    /// client's address `peer` when every core is busy (see [`queue`]).
    ///
    /// Without a password file a username is taken as given, but only where anonymous
    /// clients are allowed: an unverifiable name must not unlock what the ACL grants a
    /// user.
    pub async fn check_password(
        &self,
        username: Option<&str>,
        password: Option<&[u8]>,
        allow_anonymous: bool,
        peer: std::net::IpAddr,
    ) -> Verdict {
        // No username, or nothing to check it against: an anonymous client.
        let (Some(username), Some(passwords)) = (username, self.passwords()) else {
            return if allow_anonymous {
                Verdict::Allowed
            } else {
                Verdict::NotAuthorized
            };
        };
        let username = username.to_owned();
        let password = password.unwrap_or_default().to_vec();
        // Dropped here (connection closed, connect_timeout passed) while waiting, the
        // check is never run.
        let Some(slot) = self.checks.acquire(peer).await else {
            return Verdict::Busy;
        };
        // The slot goes with the hash: abandoned now, the check still holds its core
        // until the hash is done.
        let ok = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let started = std::time::Instant::now();
            let ok = passwords.verify(&username, &password);
            let ms = started.elapsed().as_millis() as u64;
            tracing::debug!(
                event = "password_checked",
                username = %crate::log_limit::field(&username),
                ms,
                "password check ran in {ms} ms"
            );
            ok
        })
        .await
        .unwrap_or(false);
        if ok {
            Verdict::Allowed
        } else {
            Verdict::BadCredentials
        }
    }

    /// Whether the client may do `access` on `topic` (a topic name, or a filter for
    /// [`Access::Subscribe`]); `username` is `None` for anonymous clients. Without an ACL
    /// file, true for everything but writing to `$SYS`.
    pub fn allows(
        &self,
        client_id: &str,
        username: Option<&str>,
        topic: &str,
        access: Access,
    ) -> bool {
        if access == Access::Write && is_sys(topic) {
            return false;
        }
        if self.acl_file.is_none() {
            return true;
        }
        match &*self.acl.read() {
            Some(acl) => acl.check(client_id, username, topic, access),
            None => true,
        }
    }
}

/// `$SYS` topics are the broker's own: no client writes them (PUBLISH, retained message
/// or will), ACL file or not, as in Mosquitto, so nobody can forge what the broker
/// reports about itself. (Mosquitto's one exception, bridge state topics, does not apply:
/// midge has no bridges.)
pub(crate) fn is_sys(topic: &str) -> bool {
    topic.starts_with("$SYS")
}
