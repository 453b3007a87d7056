//! Interoperability with the real Eclipse Mosquitto command-line clients (`mosquitto_pub`,
//! `mosquitto_sub` from Debian's mosquitto-clients), run as separate processes against
//! midge on 127.0.0.1. The clients must be installed (scripts/test.sh installs them): a
//! missing binary fails the test, it never skips it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Output format for received messages; `-d` debug lines never start with it.
const FORMAT: &str = "MSG|%t|%q|%r|%p";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Msg {
    topic: String,
    qos: u8,
    retain: bool,
    payload: String,
}

impl Msg {
    fn new(topic: &str, qos: u8, retain: bool, payload: &str) -> Msg {
        Msg {
            topic: topic.to_owned(),
            qos,
            retain,
            payload: payload.to_owned(),
        }
    }
}

fn parse_msg(line: &str) -> Option<Msg> {
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
struct Sub {
    child: Child,
    rx: mpsc::Receiver<String>,
    lines: Vec<String>,
    what: String,
}

impl Sub {
    fn spawn(port: u16, args: &[&str]) -> Sub {
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
    fn wait_line(&mut self, needle: &str, timeout: Duration, broker: &Broker) {
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

    fn wait_subscribed(&mut self, broker: &Broker) {
        self.wait_line("received SUBACK", Duration::from_secs(10), broker);
    }

    /// Waits for the process to exit (killing it after `timeout`) and returns its status
    /// (None if it had to be killed) and the messages it printed.
    fn finish(mut self, timeout: Duration) -> (Option<ExitStatus>, Vec<Msg>, String) {
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
    fn kill(&mut self) {
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
fn publish(broker: &Broker, args: &[&str]) -> Output {
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

fn run_tool(name: &str, broker: &Broker, args: &[&str], stdin: Option<&str>) -> Output {
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

fn assert_received(
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

// ---------------------------------------------------------------------------------------

#[test]
fn mosquitto_clients_qos_0_1_2_round_trips() {
    let broker = start_broker("");
    for qos in 0u8..=2 {
        let q = qos.to_string();
        let topic = format!("interop/qos{qos}");
        let mut sub = Sub::spawn(
            broker.port,
            &["-q", &q, "-t", &topic, "-C", "3", "-W", "15"],
        );
        sub.wait_subscribed(&broker);
        let mut expected = Vec::new();
        for i in 0..3 {
            let payload = format!("q{qos}-m{i}");
            publish(&broker, &["-q", &q, "-t", &topic, "-m", &payload]);
            expected.push(Msg::new(&topic, qos, false, &payload));
        }
        assert_received(
            sub.finish(Duration::from_secs(20)),
            &expected,
            true,
            &format!("QoS {qos} round trip"),
            &broker,
        );
    }

    // The delivered QoS is the minimum of the published QoS and the granted one.
    let mut sub = Sub::spawn(
        broker.port,
        &["-q", "1", "-t", "interop/down", "-C", "1", "-W", "15"],
    );
    sub.wait_subscribed(&broker);
    publish(&broker, &["-q", "2", "-t", "interop/down", "-m", "two"]);
    assert_received(
        sub.finish(Duration::from_secs(20)),
        &[Msg::new("interop/down", 1, false, "two")],
        false,
        "QoS 2 publish to a QoS 1 subscription",
        &broker,
    );
}

#[test]
fn mosquitto_clients_retained_message_set_and_cleared() {
    let broker = start_broker("");
    publish(
        &broker,
        &["-r", "-q", "1", "-t", "interop/ret", "-m", "keep"],
    );

    // A later subscriber gets it, flagged retained.
    let sub = Sub::spawn(
        broker.port,
        &["-q", "1", "-t", "interop/ret", "-C", "1", "-W", "10"],
    );
    assert_received(
        sub.finish(Duration::from_secs(15)),
        &[Msg::new("interop/ret", 1, true, "keep")],
        false,
        "retained message to a later subscriber",
        &broker,
    );

    // `-r -n` (empty retained payload) clears it: a new subscriber's first message is a
    // live one published after its SUBACK.
    publish(&broker, &["-r", "-n", "-t", "interop/ret"]);
    let mut sub = Sub::spawn(
        broker.port,
        &["-q", "1", "-t", "interop/ret", "-C", "1", "-W", "10"],
    );
    sub.wait_subscribed(&broker);
    publish(&broker, &["-q", "1", "-t", "interop/ret", "-m", "live"]);
    assert_received(
        sub.finish(Duration::from_secs(15)),
        &[Msg::new("interop/ret", 1, false, "live")],
        false,
        "after clearing the retained message with -r -n",
        &broker,
    );
}

#[test]
fn mosquitto_clients_wildcard_subscriptions() {
    let broker = start_broker("");
    let mut sub = Sub::spawn(
        broker.port,
        &[
            "-q", "1", "-t", "wild/+/x", "-t", "deep/#", "-C", "3", "-W", "15",
        ],
    );
    sub.wait_subscribed(&broker);
    for topic in [
        "wild/a/x",   // matches wild/+/x
        "wild/a/b",   // no
        "wild/a/b/x", // no: + is one level
        "wild/x",     // no
        "deep",       // matches deep/# (the parent level)
        "deep/er/st", // matches deep/#
        "deeper/x",   // no
    ] {
        publish(&broker, &["-q", "1", "-t", topic, "-m", topic]);
    }
    assert_received(
        sub.finish(Duration::from_secs(20)),
        &[
            Msg::new("wild/a/x", 1, false, "wild/a/x"),
            Msg::new("deep", 1, false, "deep"),
            Msg::new("deep/er/st", 1, false, "deep/er/st"),
        ],
        true,
        "wildcard subscriptions",
        &broker,
    );
}

#[test]
fn mosquitto_clients_persistent_session_receives_queued_messages() {
    let broker = start_broker("");
    // Create the persistent session and its subscription, then leave (-E: exit after SUBACK).
    let sub = Sub::spawn(
        broker.port,
        &[
            "-c",
            "-i",
            "interop-persist",
            "-q",
            "1",
            "-t",
            "persist/t",
            "-E",
        ],
    );
    let (status, msgs, output) = sub.finish(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()) && msgs.is_empty(),
        "mosquitto_sub -E did not subscribe and exit cleanly ({status:?}):\n{output}"
    );

    // Offline: first a QoS 0 message, which is not queued (queue_qos0_messages = false,
    // so it must not show up first below), then three QoS 1 messages from one publisher
    // connection (-l: one message per line).
    publish(
        &broker,
        &["-q", "0", "-t", "persist/t", "-m", "offline-qos0"],
    );
    let out = run_tool(
        "mosquitto_pub",
        &broker,
        &["-q", "1", "-t", "persist/t", "-l"],
        Some("offline-1\noffline-2\noffline-3\n"),
    );
    assert!(
        out.status.success(),
        "mosquitto_pub -l failed: {:?}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Back with the same id and no clean session: the queue arrives, in order.
    let sub = Sub::spawn(
        broker.port,
        &[
            "-c",
            "-i",
            "interop-persist",
            "-q",
            "1",
            "-t",
            "persist/t",
            "-C",
            "3",
            "-W",
            "10",
        ],
    );
    assert_received(
        sub.finish(Duration::from_secs(15)),
        &[
            Msg::new("persist/t", 1, false, "offline-1"),
            Msg::new("persist/t", 1, false, "offline-2"),
            Msg::new("persist/t", 1, false, "offline-3"),
        ],
        false,
        "persistent session after reconnect",
        &broker,
    );
}

#[test]
fn mosquitto_clients_mqtt_v31() {
    let broker = start_broker("");
    let mut sub = Sub::spawn(
        broker.port,
        &[
            "-V", "mqttv31", "-i", "v31-sub", "-q", "1", "-t", "v31/t", "-C", "2", "-W", "15",
        ],
    );
    sub.wait_subscribed(&broker);
    // A 3.1 publisher (mosquitto's generated id) and a 3.1.1 one.
    publish(
        &broker,
        &["-V", "mqttv31", "-q", "1", "-t", "v31/t", "-m", "from31"],
    );
    publish(
        &broker,
        &["-V", "mqttv311", "-q", "1", "-t", "v31/t", "-m", "from311"],
    );
    assert_received(
        sub.finish(Duration::from_secs(20)),
        &[
            Msg::new("v31/t", 1, false, "from31"),
            Msg::new("v31/t", 1, false, "from311"),
        ],
        true,
        "MQTT 3.1 clients",
        &broker,
    );
    let log = broker.log();
    assert!(
        !event_lines(
            &log,
            "client_connected",
            &[("client_id", "v31-sub"), ("protocol", "3")]
        )
        .is_empty(),
        "the subscriber should have connected with protocol level 3 (MQTT 3.1); log:\n{log}"
    );
}

#[test]
fn mosquitto_clients_will_delivered_on_sigkill_not_on_clean_exit() {
    let broker = start_broker("");
    let mut watcher = Sub::spawn(
        broker.port,
        &["-q", "1", "-t", "will/#", "-C", "1", "-W", "15"],
    );
    watcher.wait_subscribed(&broker);

    // A clean exit sends DISCONNECT: its will must be discarded.
    let clean = Sub::spawn(
        broker.port,
        &[
            "-i",
            "will-clean",
            "-t",
            "none/x",
            "-E",
            "--will-topic",
            "will/clean",
            "--will-payload",
            "must-not-arrive",
            "--will-qos",
            "1",
        ],
    );
    let (status, _, output) = clean.finish(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "mosquitto_sub -E with a will did not exit cleanly:\n{output}"
    );

    // SIGKILL: no DISCONNECT, so the will is published.
    let mut killed = Sub::spawn(
        broker.port,
        &[
            "-i",
            "will-killed",
            "-t",
            "none/x",
            "--will-topic",
            "will/killed",
            "--will-payload",
            "gone",
            "--will-qos",
            "1",
        ],
    );
    killed.wait_subscribed(&broker);
    killed.kill();

    assert_received(
        watcher.finish(Duration::from_secs(20)),
        &[Msg::new("will/killed", 1, false, "gone")],
        false,
        "will of a SIGKILLed mosquitto_sub",
        &broker,
    );
}

#[test]
fn mosquitto_clients_username_accepted_when_anonymous_allowed() {
    let broker = start_broker("");
    let mut sub = Sub::spawn(
        broker.port,
        &[
            "-u", "alice", "-i", "user-sub", "-q", "1", "-t", "user/t", "-C", "2", "-W", "15",
        ],
    );
    sub.wait_subscribed(&broker);
    publish(
        &broker,
        &["-u", "bob", "-q", "1", "-t", "user/t", "-m", "u-only"],
    );
    publish(
        &broker,
        &[
            "-u", "carol", "-P", "secret", "-q", "1", "-t", "user/t", "-m", "u-and-p",
        ],
    );
    assert_received(
        sub.finish(Duration::from_secs(20)),
        &[
            Msg::new("user/t", 1, false, "u-only"),
            Msg::new("user/t", 1, false, "u-and-p"),
        ],
        true,
        "clients with a username",
        &broker,
    );
    let log = broker.log();
    assert!(
        !event_lines(
            &log,
            "client_connected",
            &[("client_id", "user-sub"), ("user", "alice")]
        )
        .is_empty(),
        "connect log line should show the username; log:\n{log}"
    );
}
