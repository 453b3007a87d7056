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
        b.wait_log("telemetry-printer", Duration::from_secs(10)),
        "subscriber example did not connect"
    );
    // Give its SUBSCRIBE a moment to be processed after CONNECT.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b
        .log()
        .contains("subscribed client_id=\"telemetry-printer\" filter=\"sensors/+/telemetry\"")
    {
        assert!(
            Instant::now() < deadline,
            "subscriber example never subscribed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

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
