//! The brokers the attacks run against, each started fresh (new port, new empty store)
//! through [`procs::start`] with the configuration it ships with: midge with defaults
//! (its config.toml holds every key at its default) and Mosquitto 2.0 with only what a
//! test listener needs. Attacks about authentication get a password file written by the
//! broker's own tool (`midge passwd`, argon2id by default; `mosquitto_passwd`).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::procs::{self, BrokerSpec, Running};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Midge,
    Mosquitto,
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        match s {
            "midge" => Ok(Kind::Midge),
            "mosquitto" => Ok(Kind::Mosquitto),
            _ => Err(format!("unknown broker {s:?} (midge, mosquitto)")),
        }
    }
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Midge => "midge",
            Kind::Mosquitto => "mosquitto",
        }
    }
}

/// Users of the password file: (name, password). "healthy" is the healthy client's;
/// "alice" and "bob" are the take-over attack's.
pub const USERS: [(&str, &str); 3] = [
    ("healthy", "healthy-pass"),
    ("alice", "alice-pass"),
    ("bob", "bob-pass"),
];

pub struct Started {
    pub running: Running,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

/// Starts `kind` on a free port with its store and config under `work` (emptied first).
pub fn start(
    kind: Kind,
    midge: &Path,
    mosquitto: &Path,
    work: &Path,
    log: &Path,
    auth: bool,
) -> Result<Started, String> {
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    let passwd = work.join("passwd");
    if auth {
        write_passwords(kind, midge, &passwd)?;
    }
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port()?;
        let conf = match kind {
            Kind::Midge => {
                let store = work.join("store");
                let mut c = format!(
                    "[[listener]]\nbind = \"127.0.0.1\"\nport = {port}\n\n[persistence]\npath = \"{}\"\n",
                    store.display()
                );
                if auth {
                    // Top-level key: must come before the first table.
                    c = format!("password_file = \"{}\"\n{c}", passwd.display());
                }
                c
            }
            Kind::Mosquitto => {
                // set_tcp_nodelay: without it Mosquitto's replies wait for Nagle and
                // delayed ACKs (~40 ms a round trip), which would hide the broker's own
                // delay (midge sets TCP_NODELAY itself).
                let mut c = format!(
                    "listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\nlog_dest stderr\nuser root\n"
                );
                if auth {
                    c.push_str(&format!("password_file {}\n", passwd.display()));
                }
                c
            }
        };
        let path = work.join(match kind {
            Kind::Midge => "midge.toml",
            Kind::Mosquitto => "mosquitto.conf",
        });
        std::fs::write(&path, conf).map_err(|e| format!("{}: {e}", path.display()))?;
        let exe = match kind {
            Kind::Midge => midge,
            Kind::Mosquitto => mosquitto,
        };
        let spec = BrokerSpec {
            name: kind.name().into(),
            command: format!("'{}' -c '{}'", exe.display(), path.display()),
        };
        match procs::start(&spec, port, log, None) {
            Ok(running) => {
                return Ok(Started {
                    running,
                    addr: SocketAddr::from(([127, 0, 0, 1], port)),
                    log: log.to_path_buf(),
                })
            }
            Err(e) if e.contains("already in use") => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn write_passwords(kind: Kind, midge: &Path, file: &Path) -> Result<(), String> {
    for (i, (user, pass)) in USERS.iter().enumerate() {
        let mut cmd = match kind {
            Kind::Midge => {
                let mut c = Command::new(midge);
                c.arg("passwd");
                c
            }
            Kind::Mosquitto => Command::new("mosquitto_passwd"),
        };
        if i == 0 {
            cmd.arg("-c");
        }
        cmd.arg("-b").arg(file).arg(user).arg(pass);
        let out = cmd
            .output()
            .map_err(|e| format!("password file: cannot run {cmd:?}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "password file: {cmd:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(())
}
