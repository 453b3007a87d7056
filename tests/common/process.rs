//! The `midge` command as a process: run to completion ([`run`], [`run_command`]) or kept
//! running with its log in a file ([`Running`]), for the tests of the command line and of
//! operations (signals, logging, systemd notifications). [`super::Broker`] is the harness
//! for protocol tests; this one leaves the arguments, environment and working directory
//! to the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{event_lines, free_port, wait_child, wait_event_in, TempDir};

/// `midge` without RUST_LOG (the test decides the log level) and without standard input.
pub fn midge() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_midge"));
    cmd.env_remove("RUST_LOG").stdin(Stdio::null());
    cmd
}

/// Runs `midge args...` to completion (killed and failed after 10 s).
pub fn run(args: &[&str]) -> Output {
    let mut cmd = midge();
    cmd.args(args);
    run_command(cmd)
}

/// Runs `cmd` to completion, collecting its output (killed and failed after 10 s).
pub fn run_command(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn midge");
    let status = wait_child(&mut child, Duration::from_secs(10));
    let out = child.wait_with_output().expect("collect output");
    let status = status.unwrap_or_else(|| panic!("{cmd:?} did not exit within 10 s"));
    Output { status, ..out }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How to start midge on a port, for [`Running::launch_on_free_port`].
pub struct Launch {
    pub cmd: Command,
    /// The address whose `listening` event says it is ready, e.g. "0.0.0.0:1883".
    pub listening_on: String,
    /// Where midge logs (its `log_dest`), when not to stderr.
    pub log_file: Option<PathBuf>,
}

impl Launch {
    /// `midge -c config` with `text` written to `config` first; ready when it logs the
    /// `listening` event for `listening_on` to stderr.
    pub fn config(config: &Path, text: &str, listening_on: &str) -> Launch {
        std::fs::write(config, text).expect("write config");
        let mut cmd = midge();
        cmd.arg("-c").arg(config);
        Launch {
            cmd,
            listening_on: listening_on.to_owned(),
            log_file: None,
        }
    }
}

/// A midge process started by a test, its stderr in a file, killed on drop.
pub struct Running {
    pub child: Child,
    pub log_path: PathBuf,
    _dir: TempDir,
}

impl Running {
    /// Starts `midge args...`.
    pub fn spawn(args: &[String]) -> Running {
        let mut cmd = midge();
        cmd.args(args);
        Running::spawn_command(cmd)
    }

    /// Starts `cmd` (a [`midge`] command the test has set up: arguments, environment,
    /// working directory), its stderr going to the log file.
    pub fn spawn_command(mut cmd: Command) -> Running {
        let dir = TempDir::new("midge-run");
        let log_path = dir.path().join("midge.log");
        let log = std::fs::File::create(&log_path).expect("create log");
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn midge");
        Running {
            child,
            log_path,
            _dir: dir,
        }
    }

    /// Starts midge with the arguments `make_args(port)` for a free port, and waits until
    /// its log says it listens on 127.0.0.1:port. `free_port()` is only a guess (another
    /// test may take the port first): a lost race ("in use") is retried on a new port.
    pub fn start_on_free_port(make_args: impl Fn(u16) -> Vec<String>) -> (Running, u16) {
        Running::start_command_on_free_port(|port| {
            let mut cmd = midge();
            cmd.args(make_args(port));
            cmd
        })
    }

    /// [`Running::start_on_free_port`] for a whole command, `make(port)`, listening on
    /// 127.0.0.1 and logging to stderr.
    pub fn start_command_on_free_port(make: impl Fn(u16) -> Command) -> (Running, u16) {
        Running::launch_on_free_port(|port| Launch {
            cmd: make(port),
            listening_on: format!("127.0.0.1:{port}"),
            log_file: None,
        })
    }

    /// Starts `make(port).cmd` for a free port and waits for its `listening` event in its
    /// log (`log_file`, or stderr; text or JSON lines). A lost race for the port ("in use" on stderr, where
    /// midge reports why it stopped) is retried on a new port.
    pub fn launch_on_free_port(make: impl Fn(u16) -> Launch) -> (Running, u16) {
        const ATTEMPTS: u32 = 5;
        for attempt in 1..=ATTEMPTS {
            let port = free_port();
            let launch = make(port);
            let mut m = Running::spawn_command(launch.cmd);
            let log_path = launch.log_file.unwrap_or_else(|| m.log_path.clone());
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                if is_listening(&log, &launch.listening_on) {
                    return (m, port);
                }
                if let Ok(Some(status)) = m.child.try_wait() {
                    let log = m.log();
                    assert!(
                        log.contains("in use") && attempt < ATTEMPTS,
                        "midge exited with {status} instead of listening on port {port}; log:\n{log}"
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "midge did not log listening on {} within 10 s; stderr:\n{}",
                    launch.listening_on,
                    m.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// What midge wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits up to 5 s for the event `name` with the fields `with` in the stderr log.
    pub fn wait_event(&self, name: &str, with: &[(&str, &str)]) -> bool {
        wait_event_in_file(&self.log_path, name, with, Duration::from_secs(5))
    }

    /// Sends `signal` ("TERM", "INT", "HUP").
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Sends `signal` and waits up to `timeout` for the exit status.
    pub fn signal_and_wait(
        &mut self,
        signal: &str,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        self.signal(signal);
        wait_child(&mut self.child, timeout)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the (text) log file at `path` has the event `name` with the fields `with`
/// (see [`super::event_lines`]) (true), or `timeout` passes (false).
pub fn wait_event_in_file(
    path: &Path,
    name: &str,
    with: &[(&str, &str)],
    timeout: Duration,
) -> bool {
    wait_event_in(
        || std::fs::read_to_string(path).unwrap_or_default(),
        name,
        with,
        timeout,
    )
}

/// Whether `log` has the `listening` event for `addr`, in text lines or in JSON lines
/// (`log_format = "json"`, where the event's fields are JSON members).
pub fn is_listening(log: &str, addr: &str) -> bool {
    let json = ("\"event\":\"listening\"", format!("\"addr\":\"{addr}\""));
    !event_lines(log, "listening", &[("addr", addr)]).is_empty()
        || log
            .lines()
            .any(|l| l.contains(json.0) && l.contains(&json.1))
}
