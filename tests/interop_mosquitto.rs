//! Interoperability with the real Eclipse Mosquitto command-line clients (`mosquitto_pub`,
//! `mosquitto_sub` from Debian's mosquitto-clients), run as separate processes against
//! midge on 127.0.0.1. The clients must be installed (scripts/test.sh installs them): a
//! missing binary fails the test, it never skips it. The wrappers around the clients are
//! in tests/common/mosquitto.rs.

mod common;

use std::time::Duration;

use common::mosquitto::*;
use common::*;

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
