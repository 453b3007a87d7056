//! Broker processes (start from a command line, wait until they answer MQTT, stop) and
//! what /proc tells about them: resident memory and CPU time.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::proto::{self, Incoming, Version};

/// `name=command`, where the command may contain `{port}`.
#[derive(Debug, Clone)]
pub struct BrokerSpec {
    pub name: String,
    pub command: String,
}

impl std::str::FromStr for BrokerSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, command) = s
            .split_once('=')
            .ok_or_else(|| format!("--broker {s:?}: expected NAME=COMMAND"))?;
        let (name, command) = (name.trim(), command.trim());
        if name.is_empty() || command.is_empty() {
            return Err(format!("--broker {s:?}: expected NAME=COMMAND"));
        }
        Ok(BrokerSpec {
            name: name.to_owned(),
            command: command.to_owned(),
        })
    }
}

pub struct Running {
    pub child: Child,
    pub pid: u32,
    pub port: u16,
}

/// Starts `spec` on `port` (through `sh -c 'exec ...'`, so the process we get is the
/// broker itself) with stdout and stderr to `log`, and waits until it answers a CONNECT.
/// `limits` goes to the command as `MIDGE_BENCH_LIMITS` (unset without), for start
/// scripts that configure a broker differently for some scenarios (`issue15`: the
/// independent harness's 1000 in flight and 1,000,000 queued per client).
pub fn start(
    spec: &BrokerSpec,
    port: u16,
    log: &Path,
    limits: Option<&str>,
) -> Result<Running, String> {
    spawn(spec, port, log, limits, false, Duration::from_secs(20))
}

/// [`start`], or with `restart` the same broker again after it died: the command gets
/// `MIDGE_BENCH_RESTART=1` (start scripts then keep the store of the earlier start
/// instead of making a new empty one) and its output is appended to `log`. Waits up to
/// `wait` for the CONNACK, probing every 10 ms.
pub fn spawn(
    spec: &BrokerSpec,
    port: u16,
    log: &Path,
    limits: Option<&str>,
    restart: bool,
    wait: Duration,
) -> Result<Running, String> {
    if TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
    {
        return Err(format!("port {port} is already in use"));
    }
    let command = spec.command.replace("{port}", &port.to_string());
    let out = if restart {
        File::options().create(true).append(true).open(log)
    } else {
        File::create(log)
    }
    .map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new("sh");
    match limits {
        Some(l) => cmd.env("MIDGE_BENCH_LIMITS", l),
        None => cmd.env_remove("MIDGE_BENCH_LIMITS"),
    };
    if restart {
        cmd.env("MIDGE_BENCH_RESTART", "1");
    } else {
        cmd.env_remove("MIDGE_BENCH_RESTART");
    }
    let child = cmd
        .arg("-c")
        .arg(format!("exec {command}"))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", spec.name))?;
    let pid = child.id();
    let mut running = Running { child, pid, port };
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(Some(status)) = running.child.try_wait() {
            return Err(format!(
                "{} exited ({status}) before it accepted connections; log {}:\n{}",
                spec.name,
                log.display(),
                tail(log, 20)
            ));
        }
        if probe(port).is_ok() {
            return Ok(running);
        }
        if Instant::now() > deadline {
            running.stop();
            return Err(format!(
                "{} did not answer CONNECT on port {port} within {:.0} s; log {}:\n{}",
                spec.name,
                wait.as_secs_f64(),
                log.display(),
                tail(log, 20)
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A broker started for one scenario, which the scenario may kill and start again (the
/// offline backlog's restart); the runner stops whichever process is current at the end.
pub struct Control {
    spec: BrokerSpec,
    port: u16,
    log: PathBuf,
    limits: Option<&'static str>,
    running: Mutex<Option<Running>>,
}

impl Control {
    pub fn new(
        spec: BrokerSpec,
        log: PathBuf,
        limits: Option<&'static str>,
        running: Running,
    ) -> Control {
        Control {
            spec,
            port: running.port,
            log,
            limits,
            running: Mutex::new(Some(running)),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Option<Running>) -> T) -> T {
        let mut g = self.running.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// The current broker process.
    pub fn pid(&self) -> Option<u32> {
        self.with(|r| r.as_ref().map(|r| r.pid))
    }

    pub fn alive(&self) -> bool {
        self.with(|r| r.as_mut().is_some_and(Running::alive))
    }

    /// SIGKILL, and reap it: nothing of it runs any more (its listening socket is closed).
    pub fn kill9(&self) {
        self.with(|r| {
            if let Some(mut r) = r.take() {
                let _ = r.child.kill();
                let _ = r.child.wait();
            }
        });
    }

    /// Starts the broker again with the same command, port and store (see [`spawn`]);
    /// returns the time from the spawn until it answered a CONNECT. Blocking.
    pub fn restart(&self, wait: Duration) -> Result<Duration, String> {
        self.kill9();
        let t = Instant::now();
        let r = spawn(&self.spec, self.port, &self.log, self.limits, true, wait)?;
        let took = t.elapsed();
        self.with(|slot| *slot = Some(r));
        Ok(took)
    }

    pub fn stop(&self) {
        self.with(|r| {
            if let Some(mut r) = r.take() {
                r.stop();
            }
        });
    }
}

impl Running {
    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A blocking MQTT 3.1.1 handshake: does something on `port` speak MQTT?
pub fn probe(port: u16) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    proto::connect(&mut buf, Version::V311, "midge-bench-probe", true, 30);
    s.write_all(&buf).map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut chunk = [0u8; 64];
    loop {
        if let Some((p, _)) = proto::decode(&got, Version::V311).map_err(|e| e.to_string())? {
            let Incoming::ConnAck { code: 0, .. } = p else {
                return Err(format!("unexpected answer {p:?}"));
            };
            let mut bye = Vec::new();
            proto::disconnect(&mut bye);
            let _ = s.write_all(&bye);
            // Let the broker close first (no TIME_WAIT on our side).
            let _ = s.read(&mut chunk);
            return Ok(());
        }
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed".into());
        }
        got.extend_from_slice(&chunk[..n]);
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `write_bytes` of `/proc/<pid>/io`: bytes the process caused to be sent to storage
/// (counted when it dirties page-cache pages, so also without fsync).
pub fn io_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// A `/proc/<pid>/status` field in KiB (VmRSS, VmHWM, ...).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// User + system CPU seconds of process `pid` (all its threads).
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// CPU seconds of the whole machine, all cores together, from the first line of
/// /proc/stat: `(what its processes ran: user + nice + system, what the hypervisor
/// took: steal)`. Interrupt time is no process's and is left out.
pub fn machine_cpu_secs() -> Option<(f64, f64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<f64> = line
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy: f64 = f.iter().take(3).sum();
    let steal = f.get(7).copied().unwrap_or(0.0);
    Some((busy / clock_ticks(), steal / clock_ticks()))
}

/// User + system CPU seconds of this process.
pub fn own_cpu_secs() -> f64 {
    // SAFETY: getrusage writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe {
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Raises the soft open-files limit to the hard one; returns the limit now in force.
pub fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                r = want;
            }
        }
        r.rlim_cur as u64
    }
}

/// Open-files limit of another process (from /proc/<pid>/limits).
pub fn nofile_of(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The kernel's count of connections dropped because a listener's accept queue was full
/// (TcpExt ListenOverflows, all listeners of this network namespace).
pub fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let names = lines.next()?;
    let values = lines.next()?;
    let i = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows")?;
    values.split_whitespace().nth(i)?.parse().ok()
}
