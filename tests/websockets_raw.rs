//! MQTT over WebSockets at the byte level (issue 17): frames as the spec allows them
//! ([MQTT-6.0.0-x]), refused upgrades, slow and oversize input, keep-alive and
//! authentication on a WebSocket listener, and WebSocket and TCP clients talking. The
//! clients are tests/common/ws.rs (frames by hand) and, over it, the raw MQTT client.
//! MQTT.js in Node and in Chromium is tests/websockets_js.rs.

mod common;

use std::time::{Duration, Instant};

use common::packets::*;
use common::raw::Raw;
use common::ws::{self, Ws, BINARY, CLOSE, PING, PONG, TEXT};
use common::*;

const WAIT: Duration = Duration::from_secs(10);

fn broker(top: &str, ws_keys: &str) -> Broker {
    Broker::start(&ws::config(top, ws_keys))
}

/// An MQTT 3.1.1 session over a fresh WebSocket, CONNACK checked.
fn ws_client(b: &Broker, id: &str) -> Ws {
    let mut w = Ws::open(ws::ws_addr(b));
    w.send(&connect311(id, true, 60, None));
    let connack = w.read_data(WAIT).expect("CONNACK over ws");
    assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK for {id}");
    w
}

/// [MQTT-6.0.0-2]: one PUBLISH in three binary messages, one in a message of three
/// fragments, and two PUBLISHes in one frame all arrive, whole and in order.
#[test]
fn mqtt_6_0_0_2_a_packet_may_span_frames_and_a_frame_may_hold_several() {
    let b = broker("", "");
    let mut sub = Raw::clean(&b, "tcp-sub");
    assert_eq!(sub.subscribe(1, &[("ws/#", 0)]), vec![0]);
    let mut w = ws_client(&b, "ws-pub");

    let one = publish311("ws/split", b"over three frames", 0, 0, false, false);
    let (a, rest) = one.split_at(1);
    let (b2, c) = rest.split_at(5);
    for part in [a, b2, c] {
        w.send(part);
    }
    let two = publish311(
        "ws/fragments",
        b"one message, three fragments",
        0,
        0,
        false,
        false,
    );
    w.send_frame(false, BINARY, &two[..3]);
    w.send_frame(false, 0, &two[3..10]);
    w.send_frame(true, 0, &two[10..]);
    let mut both = publish311("ws/both", b"first", 0, 0, false, false);
    both.extend(publish311("ws/both", b"second", 0, 0, false, false));
    w.send(&both);

    let got = sub.publishes(WAIT, 4);
    let got: Vec<(&str, &[u8])> = got
        .iter()
        .map(|(t, p)| (t.as_str(), p.as_slice()))
        .collect();
    assert_eq!(
        got,
        [
            ("ws/split", &b"over three frames"[..]),
            ("ws/fragments", b"one message, three fragments"),
            ("ws/both", b"first"),
            ("ws/both", b"second"),
        ]
    );
}

/// [MQTT-6.0.0-1]: a text frame closes the connection (close code 1003), and as no
/// DISCONNECT came, the will is published.
#[test]
fn mqtt_6_0_0_1_a_text_frame_closes_the_connection_and_sends_the_will() {
    let b = broker("", "");
    let mut watcher = Raw::clean(&b, "watcher");
    watcher.subscribe(1, &[("ws/will", 0)]);
    let mut w = Ws::open(ws::ws_addr(&b));
    let will = Will {
        topic: "ws/will",
        payload: b"gone",
        qos: 0,
        retain: false,
        props: Vec::new(),
    };
    w.send(&connect311("texter", true, 60, Some(&will)));
    assert_eq!(w.read_data(WAIT).expect("CONNACK"), [0x20, 2, 0, 0]);
    w.send_frame(true, TEXT, b"\x30\x07\x00\x03a/bhi");
    assert_eq!(
        w.close_code(WAIT),
        Some(1003),
        "close code: unsupported data"
    );
    assert!(w.closed_within(WAIT), "the broker closes the connection");
    let p = watcher.recv_publish();
    assert_eq!(
        (p.topic.as_str(), p.payload.as_slice()),
        ("ws/will", &b"gone"[..])
    );
}

/// A frame longer than `max_packet_size` (plus a fixed header) is refused from its
/// header, before its payload is read: close code 1009, connection closed, one log line.
#[test]
fn a_frame_over_max_packet_size_closes_the_connection() {
    let b = broker("max_packet_size = 1024", "");
    let mut w = ws_client(&b, "big");
    // The header of a masked 1 MiB binary frame, its mask, and 10 bytes.
    let mut head = vec![0x82, 0x80 | 127];
    head.extend_from_slice(&(1u64 << 20).to_be_bytes());
    head.extend_from_slice(&[1, 2, 3, 4]);
    head.extend_from_slice(&[0; 10]);
    std::io::Write::write_all(&mut w.s, &head).expect("send");
    assert_eq!(
        w.close_code(WAIT),
        Some(1009),
        "close code: message too big"
    );
    assert!(w.closed_within(WAIT));
    assert!(
        b.log().contains("websocket_frame_too_large"),
        "one log line for the limit"
    );
    // A packet of exactly max_packet_size in one frame is accepted.
    let mut sub = Raw::clean(&b, "sub");
    sub.subscribe(1, &[("big/#", 0)]);
    let mut w = ws_client(&b, "fits");
    let topic = "big/t";
    let payload = vec![7u8; 1024 - 2 - topic.len()];
    let publish = publish311(topic, &payload, 0, 0, false, false);
    assert_eq!(publish.len(), 1024 + 3, "remaining length 1024");
    w.send(&publish);
    assert_eq!(sub.recv_publish().payload, payload);
}

/// [MQTT-6.0.0-3], [MQTT-6.0.0-4]: the upgrade is accepted with the subprotocol `mqtt`
/// (or `mqttv3.1`) the client offered, and refused when it offers no MQTT one; a wrong
/// path and a wrong origin are refused too, and the connection closed.
#[test]
fn mqtt_6_0_0_4_the_server_selects_mqtt_and_refuses_other_subprotocols() {
    let b = broker("", "websockets_origin = [\"http://allowed.example\"]");
    let addr = ws::ws_addr(&b);
    let cases = [
        (
            "/mqtt",
            "Sec-WebSocket-Protocol: mqtt\r\n",
            "101",
            Some("mqtt"),
        ),
        (
            "/mqtt",
            "Sec-WebSocket-Protocol: chat, mqttv3.1\r\n",
            "101",
            Some("mqttv3.1"),
        ),
        ("/mqtt", "Sec-WebSocket-Protocol: chat\r\n", "400", None),
        ("/mqtt", "", "400", None),
        ("/", "Sec-WebSocket-Protocol: mqtt\r\n", "404", None),
        (
            "/mqtt",
            "Sec-WebSocket-Protocol: mqtt\r\nOrigin: http://evil.example\r\n",
            "403",
            None,
        ),
        (
            "/mqtt",
            "Sec-WebSocket-Protocol: mqtt\r\nOrigin: http://allowed.example\r\n",
            "101",
            Some("mqtt"),
        ),
    ];
    for (path, extra, status, protocol) in cases {
        let (mut w, answer) = Ws::request(addr, &ws::request(path, extra));
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{path} {extra:?}: {answer}"
        );
        match protocol {
            Some(p) => {
                assert!(
                    answer.contains(&format!("\r\nSec-WebSocket-Protocol: {p}\r\n")),
                    "{answer}"
                );
                assert!(
                    answer.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n")
                );
                w.send(&connect311("upgraded", true, 60, None));
                assert_eq!(w.read_data(WAIT).expect("CONNACK"), [0x20, 2, 0, 0]);
            }
            None => assert!(w.closed_within(WAIT), "refused: closed ({answer})"),
        }
    }
    let log = b.log();
    assert!(
        log.contains("websocket_upgrade_refused"),
        "refusals are logged"
    );
}

/// A request head sent a byte at a time is cut off at `connect_timeout` (which the
/// CONNECT must meet too); one over 8 KiB is refused with 431 at once.
#[test]
fn a_slow_or_oversize_upgrade_request_is_cut_off() {
    let b = broker("connect_timeout = 1", "");
    let addr = ws::ws_addr(&b);
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let head = ws::request("/mqtt", "Sec-WebSocket-Protocol: mqtt\r\n");
    let start = Instant::now();
    let mut closed = false;
    for byte in head.as_bytes() {
        if std::io::Write::write_all(&mut s, &[*byte]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if start.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let mut w = Ws::from_stream(s);
    assert!(closed || w.closed_within(WAIT), "slowloris upgrade closed");
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "not before connect_timeout"
    );
    assert!(b.log().contains("websocket_upgrade_timeout"), "logged");

    let big = ws::request("/mqtt", &format!("Cookie: {}\r\n", "x".repeat(9000)));
    let (mut w, answer) = Ws::request(addr, &big);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert!(w.closed_within(WAIT));
}

/// [MQTT-3.1.2-24] over WebSockets: a client silent for 1.5 × its keep-alive is dropped
/// by the same sweeper as on TCP, and its will published.
#[test]
fn an_idle_ws_client_is_dropped_at_one_and_a_half_keep_alive_with_its_will() {
    let b = broker("", "");
    let mut watcher = Raw::clean(&b, "watcher");
    watcher.subscribe(1, &[("ka/will", 1)]);
    let mut raw = Ws::open(ws::ws_addr(&b)).into_raw();
    let will = Will {
        topic: "ka/will",
        payload: b"timed out",
        qos: 1,
        retain: false,
        props: Vec::new(),
    };
    let start = Instant::now();
    raw.send(&connect311("silent", true, 1, Some(&will)));
    assert_eq!(raw.recv().kind(), CONNACK);
    let p = watcher.recv_publish();
    assert_eq!(p.payload, b"timed out");
    assert!(
        start.elapsed() >= Duration::from_millis(1000),
        "not before the keep-alive: {:?}",
        start.elapsed()
    );
    raw.expect_closed(WAIT);
}

/// A ping frame is answered with a pong carrying its payload; it is not an MQTT packet,
/// so it does not count as the client's keep-alive traffic either way.
#[test]
fn a_ping_frame_is_answered_with_its_payload() {
    let b = broker("", "");
    let mut w = ws_client(&b, "pinger");
    w.send_frame(true, PING, b"are you there");
    let (fin, opcode, payload) = w.read_frame(WAIT).expect("pong");
    assert!(fin);
    assert_eq!((opcode, payload.as_slice()), (PONG, &b"are you there"[..]));
    // Still an MQTT connection.
    w.send(&[0xc0, 0]);
    assert_eq!(w.read_data(WAIT).expect("PINGRESP"), [0xd0, 0]);
    // A close frame from the client ends it: the broker answers in kind.
    w.send_frame(true, CLOSE, &1000u16.to_be_bytes());
    assert_eq!(w.close_code(WAIT), Some(1000));
}

/// `allow_anonymous`, the password file and `max_connections` apply to a WebSocket
/// listener as to a TCP one (Mosquitto's #2459: the setting ignored on its ws listener).
#[test]
fn anonymous_passwords_and_max_connections_apply_on_a_ws_listener() {
    let dir = TempDir::new("ws-auth");
    let passwords = passwd_file(dir.path(), &[("alice", "secret")]);
    let b = broker(
        &format!("password_file = {:?}", passwords.display().to_string()),
        "allow_anonymous = false\nmax_connections = 2",
    );
    let addr = ws::ws_addr(&b);
    // The TCP listener allows anonymous (loopback, unset): this one does not.
    Raw::clean(&b, "anon-tcp").ping();
    let anonymous = Login {
        client_id: "anon-ws",
        clean: true,
        ..Login::default()
    };
    let mut raw = Ws::open(addr).into_raw();
    raw.send(&anonymous.bytes());
    let ack = raw.recv();
    assert_eq!(ack.body, [0, 5], "CONNACK 5: not authorized");
    raw.expect_closed(WAIT);
    let wrong = Login {
        username: Some("alice"),
        password: Some("wrong"),
        ..anonymous
    };
    let mut raw = Ws::open(addr).into_raw();
    raw.send(&wrong.bytes());
    assert_eq!(
        raw.recv().body,
        [0, 4],
        "CONNACK 4: bad user name or password"
    );
    raw.expect_closed(WAIT);
    let right = Login {
        password: Some("secret"),
        ..wrong
    };
    let mut one = Ws::open(addr).into_raw();
    one.send(&right.bytes());
    assert_eq!(one.recv().body, [0, 0]);
    let mut two = Ws::open(addr).into_raw();
    two.send(
        &Login {
            client_id: "two",
            ..right
        }
        .bytes(),
    );
    assert_eq!(two.recv().body, [0, 0]);
    // The third is over the listener's max_connections: closed before the upgrade.
    let (mut w, answer) = Ws::request(
        addr,
        &ws::request("/mqtt", "Sec-WebSocket-Protocol: mqtt\r\n"),
    );
    assert!(
        answer.is_empty(),
        "no answer past max_connections: {answer}"
    );
    assert!(w.closed_within(WAIT));
    one.ping();
    two.ping();
}

/// A WebSocket client and a TCP client exchange QoS 1 messages both ways, and a retained
/// message set over one is delivered over the other.
#[test]
fn ws_and_tcp_clients_exchange_messages_both_ways() {
    let b = broker("", "");
    let mut tcp = Raw::clean(&b, "tcp");
    let mut web = Ws::open(ws::ws_addr(&b)).into_raw();
    web.send(&connect311("web", true, 60, None));
    assert_eq!(web.recv().body, [0, 0]);
    assert_eq!(web.subscribe(1, &[("to/web", 1)]), vec![1]);
    assert_eq!(tcp.subscribe(1, &[("to/tcp", 1)]), vec![1]);

    tcp.send(&publish311("to/web", b"hello browser", 1, 7, false, false));
    tcp.wait_puback(7);
    let p = web.recv_publish();
    assert_eq!(
        (p.topic.as_str(), p.qos, p.payload.as_slice()),
        ("to/web", 1, &b"hello browser"[..])
    );
    web.send(&ack_bytes(PUBACK, p.pkid));

    web.send(&publish311("to/tcp", b"hello device", 1, 9, false, false));
    web.wait_puback(9);
    let p = tcp.recv_publish();
    assert_eq!(
        (p.topic.as_str(), p.payload.as_slice()),
        ("to/tcp", &b"hello device"[..])
    );
    tcp.send(&ack_bytes(PUBACK, p.pkid));

    web.send(&publish311("status/lamp", b"on", 1, 10, true, false));
    web.wait_puback(10);
    assert_eq!(tcp.subscribe(2, &[("status/#", 1)]), vec![1]);
    let p = tcp.recv_publish();
    assert!(p.retain, "retained flag on a new subscription");
    assert_eq!(p.payload, b"on");
}

/// A WebSocket subscriber that stops reading while 32 MiB are sent to it: the broker's
/// writes wait for the socket (a frame half written is finished before the next), and
/// once it reads again every message arrives, whole and in order.
#[test]
fn a_ws_subscriber_that_stops_reading_gets_everything_in_order_afterwards() {
    let b = broker("max_queued_bytes = 134217728", "");
    let mut w = ws_client(&b, "slow-web");
    w.send(&subscribe311(1, &[("bulk/#", 0)]));
    assert_eq!(w.read_data(WAIT).expect("SUBACK"), [0x90, 3, 0, 1, 0]);
    let mut publisher = Raw::clean(&b, "publisher");
    const N: usize = 4096;
    for i in 0..N {
        let mut payload = vec![b'x'; 8 * 1024];
        payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
        publisher.send(&publish311(
            "bulk/data",
            &payload,
            1,
            1 + (i % 60000) as u16,
            false,
            false,
        ));
        publisher.wait_puback(1 + (i % 60000) as u16);
    }
    // Now read: 4096 PUBLISHes of 8 KiB, in order, however the frames cut them.
    let mut stream = Vec::new();
    let mut seen = 0u64;
    while seen < N as u64 {
        let data = w.read_data(WAIT).expect("the rest of the messages");
        stream.extend_from_slice(&data);
        while let Some((byte1, body)) = take_packet(&mut stream) {
            assert_eq!(byte1 & 0xf0, 0x30, "a PUBLISH");
            let topic_len = u16::from_be_bytes([body[0], body[1]]) as usize;
            let payload = &body[2 + topic_len..];
            let index = u64::from_be_bytes(payload[..8].try_into().unwrap());
            assert_eq!(index, seen, "in order, none lost");
            assert_eq!(payload.len(), 8 * 1024);
            seen += 1;
        }
    }
}

/// Anonymous clients are refused by default on a WebSocket listener bound off loopback,
/// as on an MQTT one (Mosquitto's #2459). Tests listen only on loopback addresses, so this
/// listener's address, 10.77.0.1, is on a veth pair in a network namespace of its own
/// (`unshare --net`): not a loopback address, yet nothing outside the namespace reaches
/// it. The test's client thread joins the namespace (`setns`).
#[test]
fn anonymous_is_refused_on_a_ws_listener_bound_off_loopback() {
    use std::os::fd::AsRawFd;
    use std::process::{Command, Stdio};

    let dir = TempDir::new("ws-netns");
    let passwords = passwd_file(dir.path(), &[("alice", "secret")]);
    let config = dir.path().join("midge.toml");
    std::fs::write(
        &config,
        format!(
            "password_file = {:?}\n[[listener]]\nbind = \"10.77.0.1\"\nport = 9001\n\
             protocol = \"websockets\"\n",
            passwords.display().to_string()
        ),
    )
    .unwrap();
    let log_path = dir.path().join("midge.log");
    let setup = "ip link set lo up && ip link add v0 type veth peer name v1 && \
                 ip addr add 10.77.0.1/24 dev v0 && ip link set v0 up && ip link set v1 up && \
                 exec \"$0\" -c \"$1\"";
    let mut midge = Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            setup,
            env!("CARGO_BIN_EXE_midge"),
        ])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("run unshare");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + WAIT;
    while event_lines(&log(), "listening", &[("addr", "10.77.0.1:9001")]).is_empty() {
        let exited = midge.try_wait().unwrap();
        assert!(
            exited.is_none() && Instant::now() < deadline,
            "midge did not start in its namespace ({exited:?}):\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let netns = std::fs::File::open(format!("/proc/{}/ns/net", midge.id())).expect("netns");
    let acks = std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with a namespace file that stays open for
        // the call; it changes which network this thread's (and its children's) sockets
        // use, nothing else.
        let joined = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(joined, 0, "setns: {}", std::io::Error::last_os_error());
        let addr = "10.77.0.1:9001".parse().unwrap();
        let anonymous = Login {
            client_id: "anon",
            clean: true,
            ..Login::default()
        };
        let mut raw = Ws::open(addr).into_raw();
        raw.send(&anonymous.bytes());
        let refused = raw.recv().body;
        let alice = Login {
            username: Some("alice"),
            password: Some("secret"),
            ..anonymous
        };
        let mut raw = Ws::open(addr).into_raw();
        raw.send(&alice.bytes());
        (refused, raw.recv().body)
    })
    .join();
    let _ = midge.kill();
    let _ = midge.wait();
    let (refused, accepted) = acks.expect("the client thread");
    assert_eq!(refused, [0, 5], "anonymous: CONNACK 5, not authorized");
    assert_eq!(accepted, [0, 0], "a user with a password gets in");
}

/// The operator sees a WebSocket listener: in `/api/v1/listeners` (protocol
/// `websockets`, its path) and in `/metrics` (protocol label `ws`) with its connection.
#[test]
fn a_ws_listener_shows_in_the_listener_api_and_metrics() {
    use common::http::{get, http_addr, parse_metrics, sample};
    let b = Broker::start(&format!("{}\n[http]\nport = 0\n", ws::config("", "")));
    let http = http_addr(&b);
    let _web = ws_client(&b, "web");
    let l = get(http, "/api/v1/listeners").json();
    let ws_listener = l["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .find(|x| x["port"] == u64::from(b.second_port))
        .expect("the ws listener")
        .clone();
    assert_eq!(ws_listener["protocol"], "websockets", "{ws_listener}");
    assert_eq!(ws_listener["websockets_path"], "/mqtt");
    assert_eq!(ws_listener["connections"], 1);
    let metrics = parse_metrics(&get(http, "/metrics").text(), false);
    let addr = ws::ws_addr(&b).to_string();
    let open = sample(
        &metrics,
        "midge_listener_connections",
        &[("listener", &addr), ("protocol", "ws")],
    );
    assert_eq!(open, Some(1.0));
}

/// Before its CONNECT is whole, a WebSocket client may make the broker read no more than
/// on TCP (`max_connect_size`, plus one read): a frame that claims 1 MiB ahead of any
/// CONNECT is cut off long before, while a client that connects first may then send a
/// packet up to `max_packet_size`.
#[test]
fn before_connect_a_ws_client_is_held_to_max_connect_size() {
    let b = broker("max_connect_size = 1024\nmax_packet_size = 2097152", "");
    let mut w = Ws::open(ws::ws_addr(&b));
    let mut head = vec![0x82, 0x80 | 127];
    head.extend_from_slice(&(1u64 << 20).to_be_bytes());
    head.extend_from_slice(&[9, 9, 9, 9]);
    std::io::Write::write_all(&mut w.s, &head).expect("send a frame header");
    let chunk = vec![0u8; 4096];
    let mut sent = 0;
    while sent < (1 << 20) {
        if std::io::Write::write_all(&mut w.s, &chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    assert!(w.closed_within(WAIT), "closed");
    assert!(
        b.wait_event("websocket_connect_too_large", WAIT),
        "one log line: {}",
        b.log()
    );
    // Connected first, a 1 MiB PUBLISH in one frame is fine.
    let mut sub = Raw::clean(&b, "sub");
    sub.subscribe(1, &[("big", 0)]);
    let mut w = ws_client(&b, "big-sender");
    let payload = vec![5u8; 1 << 20];
    w.send(&publish311("big", &payload, 0, 0, false, false));
    assert_eq!(sub.recv_publish().payload.len(), 1 << 20);
}
