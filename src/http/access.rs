//! Who may read the HTTP listener.
//!
//! * A bearer token (`[http] token`): `Authorization: Bearer <token>`, compared in
//!   constant time. A browser cannot send a bearer header by itself, so HTTP Basic with the
//!   token as the password (any user name) is taken too.
//! * A password file (`[http] password_file`, Mosquitto's format, reloaded on SIGHUP):
//!   HTTP Basic, checked by the auth module like an MQTT CONNECT's password, in the same
//!   bounded queue of password checks. A status page polling every two seconds would
//!   otherwise run an argon2 hash each time: credentials that passed are remembered (as a
//!   keyed hash, never in clear) for [`REMEMBER_FOR`].
//! * Neither (allowed only on a loopback address, see `config`): everyone who can reach
//!   the port. A web page the operator visits could still aim the browser at
//!   `127.0.0.1` under a name of its own (DNS rebinding), so then only requests whose
//!   `Host` is an IP address or `localhost` are answered.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use parking_lot::{Mutex, RwLock};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{text, Body};
use crate::auth::{Auth, PasswordFile, Verdict};
use crate::config::{Http, Secret};
use crate::log_limit::LogLimit;

/// How long credentials that passed a password check are taken without another.
pub const REMEMBER_FOR: Duration = Duration::from_secs(60);
/// Credentials remembered at most (the oldest are forgotten first).
const REMEMBERED: usize = 32;

/// The listener's credentials.
pub struct Access {
    token: Option<Secret>,
    password_file: Option<PathBuf>,
    passwords: RwLock<Option<Arc<PasswordFile>>>,
    /// Keyed hashes of credentials that passed, and when.
    remembered: Mutex<Vec<([u8; 32], Instant)>>,
    /// Random per process: the remembered hashes mean nothing outside it.
    key: [u8; 32],
}

/// Why a request was not let in.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// No credentials, or wrong ones: 401.
    Unauthorized { bearer: bool, basic: bool },
    /// The password checks are all busy: 503.
    Busy,
    /// Without credentials, a `Host` that is neither an IP address nor `localhost`: 421.
    Host,
}

impl Access {
    /// Reads `[http] password_file`; `origin` names the configuration file.
    pub fn load(http: &Http, origin: &str) -> Result<Access, String> {
        let passwords = match &http.password_file {
            Some(path) => {
                Some(Arc::new(PasswordFile::load(path).map_err(|e| {
                    format!("{origin}: [http].password_file: {e}")
                })?))
            }
            None => None,
        };
        let mut key = [0u8; 32];
        // Without OS randomness the key is predictable, which only makes the remembered
        // hashes as strong as SHA-256 of the credentials.
        let _ = getrandom::fill(&mut key);
        Ok(Access {
            token: http.token.clone(),
            password_file: http.password_file.clone(),
            passwords: RwLock::new(passwords),
            remembered: Mutex::new(Vec::new()),
            key,
        })
    }

    /// Re-reads the password file (SIGHUP); a file that fails to load keeps its
    /// predecessor. Remembered credentials are forgotten either way.
    pub fn reload(&self) {
        let Some(path) = &self.password_file else {
            return;
        };
        match PasswordFile::load(path) {
            Ok(file) => {
                tracing::info!(
                    event = "http_passwords_reloaded",
                    users = file.len(),
                    "reloaded [http] password file {} ({} users)",
                    path.display(),
                    file.len()
                );
                *self.passwords.write() = Some(Arc::new(file));
            }
            Err(e) => {
                tracing::error!(
                    event = "http_passwords_not_reloaded",
                    "[http] password_file not reloaded, keeping the previous one: {e}"
                )
            }
        }
        self.remembered.lock().clear();
    }

    /// No credentials configured: everyone who reaches the port gets in.
    pub fn is_open(&self) -> bool {
        self.token.is_none() && self.password_file.is_none()
    }

    /// Whether the request with `headers` from `peer` may be answered.
    pub async fn check(
        &self,
        headers: &HeaderMap,
        peer: IpAddr,
        auth: &Auth,
    ) -> Result<(), Denied> {
        if self.is_open() {
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
            return match host {
                Some(host) if !is_local_host(host) => Err(Denied::Host),
                _ => Ok(()),
            };
        }
        let unauthorized = Denied::Unauthorized {
            bearer: self.token.is_some(),
            basic: true,
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(Credentials::parse);
        let verdict = match given {
            None => Err(unauthorized),
            Some(Credentials::Bearer(token)) if self.token_is(token.as_bytes()) => Ok(()),
            Some(Credentials::Bearer(_)) => Err(unauthorized),
            Some(Credentials::Basic(_, password)) if self.token_is(&password) => Ok(()),
            Some(Credentials::Basic(user, password)) => {
                let passwords = self.passwords.read().clone();
                match passwords {
                    None => Err(unauthorized),
                    Some(_) if self.remembers(&user, &password) => Ok(()),
                    Some(file) => match auth.verify(file, &user, &password, peer).await {
                        Verdict::Allowed => {
                            self.remember(&user, &password);
                            Ok(())
                        }
                        Verdict::Busy => Err(Denied::Busy),
                        _ => Err(unauthorized),
                    },
                }
            }
        };
        if verdict.is_err() {
            static LOG: LogLimit = LogLimit::new(10_000);
            if let Some(suppressed) = LOG.allow() {
                tracing::info!(event = "http_auth_failed", %peer, suppressed,
                    "[http] request without valid credentials");
            }
        }
        verdict
    }

    fn token_is(&self, given: &[u8]) -> bool {
        self.token
            .as_ref()
            .is_some_and(|t| bool::from(t.0.as_bytes().ct_eq(given)))
    }

    fn digest(&self, user: &str, password: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update((user.len() as u64).to_be_bytes());
        h.update(user.as_bytes());
        h.update(password);
        h.finalize().into()
    }

    fn remembers(&self, user: &str, password: &[u8]) -> bool {
        let digest = self.digest(user, password);
        let mut list = self.remembered.lock();
        list.retain(|(_, at)| at.elapsed() < REMEMBER_FOR);
        list.iter().any(|(d, _)| bool::from(d.ct_eq(&digest)))
    }

    fn remember(&self, user: &str, password: &[u8]) {
        let digest = self.digest(user, password);
        let mut list = self.remembered.lock();
        if list.len() >= REMEMBERED {
            list.remove(0);
        }
        list.push((digest, Instant::now()));
    }
}

impl Denied {
    pub fn response(&self) -> Response<Body> {
        match self {
            Denied::Unauthorized { bearer, basic } => {
                let mut r = text(StatusCode::UNAUTHORIZED, "authentication required\n");
                let h = r.headers_mut();
                if *basic {
                    h.append(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"midge\", charset=\"UTF-8\""),
                    );
                }
                if *bearer {
                    h.append(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"midge\""),
                    );
                }
                r
            }
            Denied::Busy => {
                let mut r = text(StatusCode::SERVICE_UNAVAILABLE, "busy checking passwords\n");
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
            Denied::Host => text(
                StatusCode::MISDIRECTED_REQUEST,
                "without credentials this listener answers only to an IP address or localhost\n",
            ),
        }
    }
}

/// What an `Authorization` header carries.
#[derive(Debug, PartialEq, Eq)]
enum Credentials {
    Bearer(String),
    /// User name and password (any bytes; the password file compares bytes).
    Basic(String, Vec<u8>),
}

impl Credentials {
    fn parse(value: &str) -> Option<Credentials> {
        let (scheme, rest) = value.trim().split_once(' ')?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(Credentials::Bearer(rest.to_owned()));
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let colon = decoded.iter().position(|&b| b == b':')?;
        let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
        Some(Credentials::Basic(user, decoded[colon + 1..].to_vec()))
    }
}

/// Whether a `Host` header names this machine by address or as `localhost`.
fn is_local_host(host: &str) -> bool {
    let name = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_headers_are_parsed() {
        let basic = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert_eq!(
            Credentials::parse(&basic("ops:s3cr:et")),
            Some(Credentials::Basic("ops".into(), b"s3cr:et".to_vec()))
        );
        assert_eq!(
            Credentials::parse("bearer abc"),
            Some(Credentials::Bearer("abc".into()))
        );
        assert_eq!(Credentials::parse(&basic("no colon")), None);
        assert_eq!(Credentials::parse("Basic !!!"), None);
        assert_eq!(Credentials::parse("Digest x"), None);
        assert_eq!(Credentials::parse("Basic"), None);
    }

    #[test]
    fn only_addresses_and_localhost_are_local_hosts() {
        for ok in [
            "127.0.0.1",
            "127.0.0.1:9883",
            "[::1]:9883",
            "[::1]",
            "localhost:80",
            "LOCALHOST",
            "10.0.0.2",
        ] {
            assert!(is_local_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9883",
            "127.0.0.1.nip.io",
            "localhost.evil",
        ] {
            assert!(!is_local_host(bad), "{bad}");
        }
    }
}
