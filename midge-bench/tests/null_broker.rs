//! `midge-bench null-broker`: its answers on the wire (hand-written bytes, so that the
//! load generator's own codec is not the only judge), and midge-bench's own scenarios,
//! small, against it with nothing lost. Bounded in time: every read has a timeout and the
//! run has --scenario-timeout. No timing thresholds.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The null broker on a free port, killed on drop.
struct Null {
    child: Child,
    addr: SocketAddr,
}

impl Null {
    /// `wait`: the variant (`--wait`).
    fn start(wait: &str) -> Null {
        let mut child = Command::new(env!("CARGO_BIN_EXE_midge-bench"))
            .args(["null-broker", "--port", "0", "--wait", wait])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the null broker");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("its first line");
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Null { child, addr }
    }

    fn client(&self, id: &str) -> TcpStream {
        let mut s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut connect = vec![
            0x10,
            (12 + id.len()) as u8,
            0,
            4,
            b'M',
            b'Q',
            b'T',
            b'T',
            4,
            2,
            0,
            60,
        ];
        connect.extend_from_slice(&[0, id.len() as u8]);
        connect.extend_from_slice(id.as_bytes());
        s.write_all(&connect).unwrap();
        assert_eq!(read_n(&mut s, 4), [0x20, 2, 0, 0], "CONNACK");
        s
    }
}

impl Drop for Null {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut b = vec![0; n];
    s.read_exact(&mut b).expect("bytes from the null broker");
    b
}

/// PUBLISH of `payload` to `topic` (one-byte remaining length).
fn publish(flags: u8, topic: &[u8], pkid: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let id_len = if pkid.is_some() { 2 } else { 0 };
    let mut b = vec![
        0x30 | flags,
        (2 + topic.len() + id_len + payload.len()) as u8,
    ];
    b.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    b.extend_from_slice(topic);
    if let Some(id) = pkid {
        b.extend_from_slice(&id.to_be_bytes());
    }
    b.extend_from_slice(payload);
    b
}

#[test]
fn answers_and_forwards_on_the_wire() {
    for wait in ["epoll", "spin", "threads"] {
        wire_checks(&Null::start(wait));
    }
}

fn wire_checks(null: &Null) {
    let mut sub = null.client("sub");
    let mut publ = null.client("pub");

    // SUBSCRIBE pkid 5: a/+ at QoS 1 and x/# at QoS 0 → SUBACK granting both.
    sub.write_all(&[
        0x82, 14, 0, 5, 0, 3, b'a', b'/', b'+', 1, 0, 3, b'x', b'/', b'#', 0,
    ])
    .unwrap();
    assert_eq!(read_n(&mut sub, 6), [0x90, 4, 0, 5, 1, 0]);

    // QoS 1 with retain on a/b: PUBACK at once; forwarded at QoS 1, the subscriber's
    // first packet id, retain cleared.
    publ.write_all(&publish(0b011, b"a/b", Some(300), b"hi"))
        .unwrap();
    assert_eq!(read_n(&mut publ, 4), [0x40, 2, 1, 44]);
    assert_eq!(read_n(&mut sub, 11), publish(0b010, b"a/b", Some(1), b"hi"));
    sub.write_all(&[0x40, 2, 0, 1]).unwrap(); // its PUBACK: read and dropped

    // QoS 1 on x/y, granted QoS 0: forwarded at QoS 0. QoS 0 on a/b: at QoS 0.
    publ.write_all(&publish(0b010, b"x/y", Some(301), b"q"))
        .unwrap();
    assert_eq!(read_n(&mut publ, 4), [0x40, 2, 1, 45]);
    assert_eq!(read_n(&mut sub, 8), publish(0, b"x/y", None, b"q"));
    publ.write_all(&publish(0, b"a/b", None, b"z")).unwrap();
    assert_eq!(read_n(&mut sub, 8), publish(0, b"a/b", None, b"z"));

    // UNSUBSCRIBE a/+ → UNSUBACK; then a/b reaches nobody: the PINGRESP comes first.
    sub.write_all(&[0xA2, 7, 0, 6, 0, 3, b'a', b'/', b'+'])
        .unwrap();
    assert_eq!(read_n(&mut sub, 4), [0xB0, 2, 0, 6]);
    publ.write_all(&publish(0, b"a/b", None, b"gone")).unwrap();
    publ.write_all(&[0xC0, 0]).unwrap();
    assert_eq!(read_n(&mut publ, 2), [0xD0, 0], "PINGRESP");
    sub.write_all(&[0xC0, 0]).unwrap();
    assert_eq!(
        read_n(&mut sub, 2),
        [0xD0, 0],
        "nothing before the PINGRESP"
    );

    // QoS 2, a packet before CONNECT, a malformed length: the connection is closed.
    for bad in [
        publish(0b100, b"a/b", Some(1), b"x"),
        vec![0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
    ] {
        let mut c = null.client("bad");
        c.write_all(&bad).unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).expect("closed, not timed out");
        assert!(rest.is_empty(), "{rest:?}");
    }
    let mut early = TcpStream::connect(null.addr).unwrap();
    early
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    early.write_all(&[0xC0, 0]).unwrap();
    assert_eq!(early.read(&mut [0; 4]).expect("closed"), 0);

    // DISCONNECT: closed; the broker still serves the others.
    sub.write_all(&[0xE0, 0]).unwrap();
    assert_eq!(sub.read(&mut [0; 4]).expect("closed"), 0);
    publ.write_all(&publish(0b010, b"x/y", Some(2), b"q"))
        .unwrap();
    assert_eq!(read_n(&mut publ, 4), [0x40, 2, 0, 2]);
}

#[test]
fn midge_bench_scenarios_run_against_it_without_loss() {
    let dir = std::env::temp_dir().join(format!("midge-null-broker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("table.md");
    let exe = env!("CARGO_BIN_EXE_midge-bench");
    // Small sizes of the ordinary families: QoS 0 fan-out to 20, QoS 1 fan-in (one
    // wildcard subscriber), large payloads to two subscribers, fixed-rate latency (QoS
    // 1). A generous --quiet: an unoptimized load generator on a loaded machine falls
    // behind the null broker's unbounded queues, and TCP's zero-window probing then leaves
    // gaps of seconds in a subscriber's stream (a gap longer than --quiet ends the
    // scenario and counts the rest as lost).
    let output = Command::new(exe)
        .args(["--threads", "1", "run"])
        .arg("--broker")
        .arg(format!("null={exe} null-broker --port {{port}}"))
        .args(["--scenarios", "fanout-q0,fanin-q1,large,latency"])
        .args([
            "--duration",
            "2",
            "--max-msgs",
            "200000",
            "--fanout-subs",
            "20",
        ])
        .args([
            "--fanin-pubs",
            "3",
            "--large-count",
            "20",
            "--large-subs",
            "2",
        ])
        .args(["--latency-secs", "1", "--latency-rate", "500"])
        .args(["--quiet", "10", "--drain", "60", "--scenario-timeout", "90"])
        .arg("--out")
        .arg(&out)
        .arg("--log-dir")
        .arg(&dir)
        .output()
        .expect("run midge-bench run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "midge-bench run failed: {stderr}");
    let md = std::fs::read_to_string(&out).expect("table written");
    let _ = std::fs::remove_dir_all(&dir);
    let losses: Vec<&str> = md.lines().filter(|l| l.contains("lost / dup")).collect();
    assert_eq!(
        losses.len(),
        4,
        "one loss row per scenario in:\n{md}\n{stderr}"
    );
    for l in losses {
        assert!(l.ends_with("| 0 / 0 |"), "{l}\n{stderr}");
    }
    assert!(
        !md.contains("did not start") && !md.contains("failed"),
        "{md}"
    );
}
