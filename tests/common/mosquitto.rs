//! The Eclipse Mosquitto command-line clients (`mosquitto_sub`, `mosquitto_pub` from
//! Debian's mosquitto-clients) as test helpers: run against midge on 127.0.0.1 as
//! separate processes. A missing binary fails the test ([`super::tool`]), never skips it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::{tool, wait_child, Broker};

/// Output format for received messages; `-d` debug lines never start with it.
pub const FORMAT: &str = "MSG|%t|%q|%r|%p";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Msg {
    pub topic: String,
    pub qos: u8,
    pub retain: bool,
    pub payload: String,
}

impl Msg {
    pub fn new(topic: &str, qos: u8, retain: bool, payload: &str) -> Msg {
        Msg {
            topic: topic.to_owned(),
            qos,
            retain,
            payload: payload.to_owned(),
        }
    }
}

pub fn parse_msg(line: &str) -> Option<Msg> {
    let rest = line.strip_prefix("MSG|")?;
    let mut parts = rest.splitn(4, '|');
    let topic = parts.next()?.to_owned();
    let qos = parts.next()?.parse().ok()?;
    let retain = parts.next()? == "1";
    let payload = parts.next()?.to_owned();
    Some(Msg {
        topic,
        qos,
        retain,
        payload,
    })
}

/// A running `mosquitto_sub -d -F FORMAT ...` whose stdout is collected line by line.
pub struct Sub {
    child: Child,
    rx: mpsc::Receiver<String>,
    lines: Vec<String>,
    what: String,
}

impl Sub {
    pub fn spawn(port: u16, args: &[&str]) -> Sub {
        // mosquitto_sub's stdout is block-buffered on a pipe: stdbuf makes it line-buffered
        // so that "received SUBACK" can be seen while it runs.
        let mut cmd = Command::new(tool("stdbuf"));
        cmd.arg("-oL")
            .arg(tool("mosquitto_sub"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-d",
                "-F",
                FORMAT,
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = format!("mosquitto_sub {}", args.join(" "));
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Sub {
            child,
            rx,
            lines: Vec::new(),
            what,
        }
    }

    /// Waits for a line containing `needle` (printed by `-d`), panicking after `timeout`.
    pub fn wait_line(&mut self, needle: &str, timeout: Duration, broker: &Broker) {
        let deadline = Instant::now() + timeout;
        if self.lines.iter().any(|l| l.contains(needle)) {
            return;
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.lines.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!(
                    "{}: no line containing {needle:?} within {timeout:?}; output:\n{}\nbroker log:\n{}",
                    self.what,
                    self.lines.join("\n"),
                    broker.log()
                ),
            }
        }
    }

    /// The next message it prints (lines are kept for [`Sub::finish`] too), or `None` if
    /// none comes within `timeout`.
    pub fn next_msg(&mut self, timeout: Duration) -> Option<Msg> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.rx.recv_timeout(left).ok()?;
            let msg = parse_msg(&line);
            self.lines.push(line);
            if msg.is_some() {
                return msg;
            }
        }
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        self.lines.join("\n")
    }

    pub fn wait_subscribed(&mut self, broker: &Broker) {
        self.wait_line("received SUBACK", Duration::from_secs(10), broker);
    }

    /// Waits for the process to exit (killing it after `timeout`) and returns its status
    /// (None if it had to be killed) and the messages it printed.
    pub fn finish(mut self, timeout: Duration) -> (Option<ExitStatus>, Vec<Msg>, String) {
        let status = wait_child(&mut self.child, timeout);
        // Give the reader threads a moment to drain the pipes after exit.
        let drain_until = Instant::now() + Duration::from_secs(2);
        while let Ok(line) = self
            .rx
            .recv_timeout(drain_until.saturating_duration_since(Instant::now()))
        {
            self.lines.push(line);
        }
        let msgs = self.lines.iter().filter_map(|l| parse_msg(l)).collect();
        (status, msgs, self.lines.join("\n"))
    }

    /// SIGKILL: the client gets no chance to send DISCONNECT.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `mosquitto_pub` to completion (killed after 10 s) and asserts it succeeded.
pub fn publish(broker: &Broker, args: &[&str]) -> Output {
    let out = run_tool("mosquitto_pub", broker, args, None);
    assert!(
        out.status.success(),
        "mosquitto_pub {} failed with {}: stdout {:?} stderr {:?}\nbroker log:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        broker.log()
    );
    out
}

pub fn run_tool(name: &str, broker: &Broker, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(tool(name))
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    if let Some(text) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    // Read the pipes on threads so a chatty child cannot block on a full pipe.
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out_pipe, &mut v);
        v
    });
    let err_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err_pipe, &mut v);
        v
    });
    let status = wait_child(&mut child, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{name} {} did not finish within 10 s", args.join(" ")));
    Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

pub fn assert_received(
    (status, msgs, output): (Option<ExitStatus>, Vec<Msg>, String),
    expected: &[Msg],
    sorted: bool,
    what: &str,
    broker: &Broker,
) {
    let mut got = msgs;
    let mut want = expected.to_vec();
    if sorted {
        got.sort();
        want.sort();
    }
    assert_eq!(
        got,
        want,
        "{what}: messages received by mosquitto_sub differ; its output:\n{output}\nbroker log:\n{}",
        broker.log()
    );
    let status = status.unwrap_or_else(|| panic!("{what}: mosquitto_sub had to be killed"));
    assert!(
        status.success(),
        "{what}: mosquitto_sub exited with {status}; output:\n{output}"
    );
}
