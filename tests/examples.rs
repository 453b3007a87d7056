//! The shipped examples work against a real broker: the sensor publishes readings at QoS 1
//! and the subscriber prints them. `cargo test` builds the examples next to the test
//! binaries (target/<profile>/examples/), which is where they are run from.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/<this test> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join("examples")
        .join(name);
    assert!(dir.exists(), "example binary {} not built", dir.display());
    dir
}

#[test]
fn sensor_readings_reach_the_subscriber_example() {
    let b = common::Broker::start("");
    let port = b.port.to_string();
    let subscriber = Command::new(example("subscriber"))
        .args(["--port", &port, "--count", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start subscriber example");
    assert!(
        b.wait_event_with(
            "client_connected",
            &[("client_id", "telemetry-printer")],
            Duration::from_secs(10)
        ),
        "subscriber example did not connect"
    );
    // Give its SUBSCRIBE a moment to be processed after CONNECT.
    assert!(
        b.wait_event_with(
            "subscribed",
            &[
                ("client_id", "telemetry-printer"),
                ("filter", "sensors/+/telemetry")
            ],
            Duration::from_secs(10)
        ),
        "subscriber example never subscribed"
    );

    let sensor = Command::new(example("sensor"))
        .args([
            "--port",
            &port,
            "--id",
            "s-7",
            "--count",
            "5",
            "--interval-ms",
            "20",
        ])
        .output()
        .expect("run sensor example");
    assert!(sensor.status.success(), "sensor failed: {sensor:?}");
    let said = String::from_utf8_lossy(&sensor.stdout);
    assert!(
        said.contains("5 readings acknowledged"),
        "sensor output: {said}"
    );

    let out = subscriber
        .wait_with_output()
        .expect("subscriber exits after 5 messages");
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 5, "subscriber printed: {printed}");
    for (i, line) in lines.iter().enumerate() {
        assert!(
            line.starts_with("sensors/s-7/telemetry {\"seq\":"),
            "line {line}"
        );
        assert!(
            line.contains(&format!("\"seq\":{}", i + 1)),
            "order: {line}"
        );
    }
}

/// Runs midge with `config` (relative to `dir`, its working directory), logging to
/// `dir/midge.log`, and waits until it has logged `event` with `with`.
fn start_example(
    dir: &std::path::Path,
    config: &str,
    rust_log: Option<&str>,
    event: &str,
    with: &[(&str, &str)],
) -> (std::process::Child, PathBuf) {
    let log_path = dir.join("midge.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_midge"));
    cmd.args(["-c", config])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap());
    if let Some(level) = rust_log {
        cmd.env("RUST_LOG", level);
    }
    let mut midge = cmd.spawn().expect("start midge");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::event_lines(&log(), event, with).is_empty() {
        assert!(
            Instant::now() < deadline && midge.try_wait().unwrap().is_none(),
            "midge did not start with {config}:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (midge, log_path)
}

/// examples/monitoring.toml runs as shipped (free ports instead of 1883 and 9883): the
/// status page and `/metrics` answer on its HTTP listener without credentials (loopback),
/// and `$SYS/broker/version` arrives retained over MQTT.
#[test]
fn monitoring_example_serves_the_status_page_metrics_and_sys() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = common::TempDir::new("monitoring-example");
    let (mqtt, http) = (common::free_port(), common::free_port());
    let shipped = std::fs::read_to_string(root.join("examples/monitoring.toml")).unwrap();
    assert!(shipped.contains("port = 1883") && shipped.contains("port = 9883"));
    assert!(shipped.contains("sys_interval = 10"));
    let config = shipped
        .replace("port = 1883", &format!("port = {mqtt}"))
        .replace("port = 9883", &format!("port = {http}"));
    std::fs::write(dir.path().join("monitoring.toml"), config).unwrap();

    let (mut midge, _log) =
        start_example(dir.path(), "monitoring.toml", None, "http_listening", &[]);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();

    let page = common::http::get(addr, "/");
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.text().contains("<title>"), "the status page");
    let metrics = common::http::get(addr, "/metrics");
    assert_eq!(metrics.status, 200);
    let samples = common::http::parse_metrics(&metrics.text(), false);
    assert!(
        common::http::sample(&samples, "midge_uptime_seconds", &[]).is_some(),
        "{}",
        metrics.text()
    );

    let version = Command::new(common::tool("mosquitto_sub"))
        .args(["-h", "127.0.0.1", "-p", &mqtt.to_string()])
        .args(["-t", "$SYS/broker/version", "-C", "1", "-W", "10", "-v"])
        .output()
        .expect("run mosquitto_sub");
    let said = String::from_utf8_lossy(&version.stdout);
    assert!(
        said.starts_with("$SYS/broker/version midge version "),
        "mosquitto_sub said: {said:?} {version:?}"
    );
    let _ = midge.kill();
    let _ = midge.wait();
}

/// examples/websockets.toml runs as shipped (free ports instead of 1883 and 9001): a
/// WebSocket client on `/mqtt` and mosquitto_pub on the MQTT port talk through it.
#[test]
fn websockets_example_joins_mqtt_and_websocket_clients() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = common::TempDir::new("websockets-example");
    let (mqtt, ws) = (common::free_port(), common::free_port());
    let shipped = std::fs::read_to_string(root.join("examples/websockets.toml")).unwrap();
    assert!(shipped.contains("port = 1883") && shipped.contains("port = 9001"));
    let config = shipped
        .replace("port = 1883", &format!("port = {mqtt}"))
        .replace("port = 9001", &format!("port = {ws}"));
    std::fs::write(dir.path().join("websockets.toml"), config).unwrap();
    let ws_addr = format!("127.0.0.1:{ws}");
    let (mut midge, _log) = start_example(
        dir.path(),
        "websockets.toml",
        None,
        "listening",
        &[("addr", &ws_addr)],
    );

    let mut browser = common::ws::Ws::open(ws_addr.parse().unwrap()).into_raw();
    browser.send(&common::packets::connect311("page", true, 60, None));
    assert_eq!(browser.recv().body, [0, 0], "anonymous on loopback");
    assert_eq!(browser.subscribe(1, &[("lamp/state", 0)]), vec![0]);
    let publish = Command::new(common::tool("mosquitto_pub"))
        .args(["-h", "127.0.0.1", "-p", &mqtt.to_string()])
        .args(["-t", "lamp/state", "-m", "on"])
        .output()
        .expect("run mosquitto_pub");
    assert!(publish.status.success(), "{publish:?}");
    let p = browser.recv_publish();
    assert_eq!(
        (p.topic.as_str(), p.payload.as_slice()),
        ("lamp/state", &b"on"[..])
    );
    let _ = midge.kill();
    let _ = midge.wait();
}

/// examples/secure.toml runs as shipped, with the certificates certs/generate.sh makes and
/// the password and ACL files under examples/, and docs/security.md's command
/// lines work against it. The only changes: free ports instead of 1883/8883, and the TLS
/// listener on 127.0.0.1 instead of 0.0.0.0 (tests listen on loopback only).
#[test]
fn secure_example_runs_with_generated_certs_password_and_acl() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = common::TempDir::new("secure-example");
    let out = Command::new(root.join("certs/generate.sh"))
        .arg(dir.path().join("certs"))
        .output()
        .expect("run certs/generate.sh");
    assert!(out.status.success(), "certs/generate.sh: {out:?}");
    std::fs::create_dir_all(dir.path().join("examples")).unwrap();
    for file in ["passwords", "acl"] {
        std::fs::copy(
            root.join("examples").join(file),
            dir.path().join("examples").join(file),
        )
        .unwrap();
    }
    let (plain, tls) = (common::free_port(), common::free_port());
    let shipped = std::fs::read_to_string(root.join("examples/secure.toml")).unwrap();
    assert!(shipped.contains("port = 1883") && shipped.contains("port = 8883"));
    let config = shipped
        .replace("port = 1883", &format!("port = {plain}"))
        .replace("port = 8883", &format!("port = {tls}"))
        .replace("bind = \"0.0.0.0\"", "bind = \"127.0.0.1\"");
    std::fs::write(dir.path().join("examples/secure.toml"), config).unwrap();

    let tls_addr = format!("127.0.0.1:{tls}");
    let tls_listening = [("addr", tls_addr.as_str()), ("tls", "true")];
    let (mut midge, log_path) = start_example(
        dir.path(),
        "examples/secure.toml",
        Some("debug"),
        "listening",
        &tls_listening,
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let client = |tool: &str, port: u16, args: &[&str]| {
        Command::new(common::tool(tool))
            .current_dir(dir.path())
            .args(["-h", "localhost", "-p", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mosquitto client")
    };
    let tls_args = [
        "--cafile",
        "certs/ca.crt",
        "--cert",
        "certs/client.crt",
        "--key",
        "certs/client.key",
    ];
    let login = ["-u", "demo", "-P", "demo-password"];

    // A device on the TLS listener waits for one message under demo/ ...
    let mut sub_args: Vec<&str> = tls_args.iter().chain(&login).copied().collect();
    sub_args.extend([
        "-i",
        "demo-device",
        "-t",
        "demo/#",
        "-C",
        "1",
        "-v",
        "-W",
        "10",
    ]);
    let sub = client("mosquitto_sub", tls, &sub_args);
    assert!(
        common::wait_event_in(
            log,
            "subscribed",
            &[("client_id", "demo-device"), ("filter", "demo/#")],
            Duration::from_secs(10)
        ),
        "no subscription:\n{}",
        log()
    );
    // ... and a tool on the plain listener publishes it.
    let mut pub_args: Vec<&str> = login.to_vec();
    pub_args.extend(["-t", "demo/hello", "-m", "hi", "-q", "1"]);
    let publish = client("mosquitto_pub", plain, &pub_args)
        .wait_with_output()
        .unwrap();
    assert!(publish.status.success(), "{publish:?}\n{}", log());
    let got = sub.wait_with_output().unwrap();
    assert!(got.status.success(), "{got:?}\n{}", log());
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "demo/hello hi");

    // No password, a wrong one, or no client certificate: refused.
    let anonymous = client("mosquitto_pub", plain, &["-t", "demo/x", "-m", "x"])
        .wait_with_output()
        .unwrap();
    assert!(!anonymous.status.success());
    assert!(String::from_utf8_lossy(&anonymous.stderr).contains("not authorised"));
    let wrong = client(
        "mosquitto_pub",
        plain,
        &["-u", "demo", "-P", "guess", "-t", "demo/x", "-m", "x"],
    )
    .wait_with_output()
    .unwrap();
    assert!(!wrong.status.success());
    let mut no_cert: Vec<&str> = vec!["--cafile", "certs/ca.crt"];
    no_cert.extend(login);
    no_cert.extend(["-t", "demo/x", "-m", "x"]);
    let no_cert = client("mosquitto_pub", tls, &no_cert)
        .wait_with_output()
        .unwrap();
    assert!(!no_cert.status.success());

    let _ = midge.kill();
    let _ = midge.wait();
}
