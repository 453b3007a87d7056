//! The operator's HTTP listener (`[http]`, issue 14) against the real binary: `/metrics`
//! read by a real Prometheus text parser (Debian's python3-prometheus-client) after known
//! traffic from `mosquitto_pub` / `mosquitto_sub`, the status page in headless Chromium,
//! the JSON API, credentials (password file, token), TLS and the HTTP limits.
//!
//! Every listener here has `port = 0`; its address comes from midge's log.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::http::{
    artifact, basic, call, chromium, element_text, get, get_tls, get_with, http_addr,
    parse_metrics, raw_request, row_cell, sample, Sample,
};
use common::raw::Raw;
use common::{
    assert_config_error, free_port, mosquitto_command, passwd_file, wait_child, wait_closes,
    Broker, Login, TempDir,
};

const WAIT: Duration = Duration::from_secs(20);

/// Starts `mosquitto_pub` / `mosquitto_sub` against `port` with `args`.
fn mosquitto(tool_name: &str, port: u16, args: &[&str]) -> Child {
    mosquitto_command(tool_name, port, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {tool_name}: {e}"))
}

/// Runs a mosquitto tool to its end, feeding `input` (lines for `-l`), and checks it
/// succeeded.
fn run(tool_name: &str, port: u16, args: &[&str], input: &str) {
    let mut child = mosquitto(tool_name, port, args);
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).expect("write stdin");
    }
    let status = wait_child(&mut child, WAIT);
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "{tool_name} {args:?}: {status:?} {err}"
    );
}

/// Lines `prefix1` .. `prefixN`, one message each for `mosquitto_pub -l`.
fn lines(prefix: &str, n: usize) -> String {
    (1..=n).map(|i| format!("{prefix}{i}\n")).collect()
}

/// A persistent session `id` with a QoS 1 subscription to `topic`, left offline.
fn stalled_subscriber(b: &Broker, port: u16, id: &str, topic: &str) {
    run(
        "mosquitto_sub",
        port,
        &["-i", id, "-c", "-q", "1", "-t", topic, "-E"],
        "",
    );
    wait_closes(b, id, 1);
}

/// A clean 3.1.1 client (keep-alive 60) that stays connected while the value lives.
fn idle(addr: SocketAddr, id: &str) -> Raw {
    let (r, _, code) = Raw::login(
        addr,
        &Login {
            client_id: id,
            clean: true,
            ..Login::default()
        },
    );
    assert_eq!(code, 0, "CONNACK for {id}");
    r
}

/// A broker after known traffic on two MQTT listeners, with three clients left connected
/// (two on the first listener, one on the second) and one stalled persistent subscriber:
///
/// | what                                     | listener | QoS | payload bytes |
/// |------------------------------------------|----------|-----|---------------|
/// | `stalled` subscribes to stall/t, leaves  | 1        |     |               |
/// | `live` subscribes to live/t at QoS 2, -C 10 | 1     |     |               |
/// | 7 messages to stall/t (queued, offline)  | 1        | 1   | 7 × 2         |
/// | 5 messages to live/t                     | 2        | 1   | 5 × 2         |
/// | 3 messages to live/t                     | 2        | 0   | 3 × 2         |
/// | 2 messages to live/t                     | 1        | 2   | 2 × 2         |
/// | 1 message to stall/t (dropped: QoS 0 for an offline session) | 1 | 0 | 7 |
/// | 1 retained message to ret/t              | 1        | 1   | 4             |
/// | idle-1, idle-2 stay connected            | 1        |     |               |
/// | idle-3 stays connected                   | 2        |     |               |
struct Traffic {
    broker: Broker,
    http: SocketAddr,
    second_port: u16,
    _idle: Vec<Raw>,
}

fn known_traffic() -> Traffic {
    let second_port = free_port();
    let b = Broker::start(&format!(
        "[[listener]]\nbind = \"127.0.0.1\"\nport = 1\n\n\
         [[listener]]\nbind = \"127.0.0.1\"\nport = {second_port}\n\n[http]\nport = 0\n"
    ));
    let http = http_addr(&b);
    let (p1, p2) = (b.port, second_port);

    stalled_subscriber(&b, p1, "stalled", "stall/t");
    let mut live = mosquitto(
        "mosquitto_sub",
        p1,
        &["-i", "live", "-q", "2", "-t", "live/t", "-C", "10"],
    );
    assert!(
        b.wait_event_with("subscribed", &[("client_id", "live")], WAIT),
        "live never subscribed"
    );
    // (listener port, client id, QoS, topic, messages: `lines(prefix, n)`)
    let publishers = [
        (p1, "pub-stall", "1", "stall/t", "s", 7),
        (p2, "pub-qos1", "1", "live/t", "a", 5),
        (p2, "pub-qos0", "0", "live/t", "b", 3),
        (p1, "pub-qos2", "2", "live/t", "c", 2),
    ];
    for (port, id, qos, topic, prefix, n) in publishers {
        let args = ["-i", id, "-q", qos, "-t", topic, "-l"];
        run("mosquitto_pub", port, &args, &lines(prefix, n));
    }
    let status = wait_child(&mut live, WAIT);
    assert!(
        status.is_some_and(|s| s.success()),
        "live got 10 messages: {status:?}"
    );
    run(
        "mosquitto_pub",
        p1,
        &[
            "-i", "pub-drop", "-q", "0", "-t", "stall/t", "-m", "dropped",
        ],
        "",
    );
    run(
        "mosquitto_pub",
        p1,
        &[
            "-i",
            "pub-retain",
            "-q",
            "1",
            "-r",
            "-t",
            "ret/t",
            "-m",
            "kept",
        ],
        "",
    );
    // Every one of them has left: its packets are processed and its connection counted
    // closed.
    for id in [
        "live",
        "pub-stall",
        "pub-qos1",
        "pub-qos0",
        "pub-qos2",
        "pub-drop",
        "pub-retain",
    ] {
        wait_closes(&b, id, 1);
    }
    let idle = vec![
        idle(b.addr(), "idle-1"),
        idle(b.addr(), "idle-2"),
        idle(SocketAddr::from(([127, 0, 0, 1], p2)), "idle-3"),
    ];
    Traffic {
        broker: b,
        http,
        second_port,
        _idle: idle,
    }
}

/// `/metrics` in the Prometheus text format, parsed; checks the content type.
fn scrape(http: SocketAddr) -> Vec<Sample> {
    let r = get(http, "/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    parse_metrics(&r.text(), false)
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(samples, name, labels).unwrap_or_else(|| {
        let names: BTreeSet<&str> = samples.iter().map(|s| s.name.as_str()).collect();
        panic!("no sample {name}{labels:?} in /metrics; names: {names:?}")
    })
}

/// What the broker holds (read from its state, not from event counters): the stalled
/// subscriber's queue depth, the sessions, the retained message, the subscriptions, the
/// connected clients; in `/metrics` (both text formats, through the real parsers), the
/// overview, the systree and the listeners.
#[test]
fn metrics_parse_as_prometheus_text_and_report_the_stalled_queue_exactly() {
    let t = known_traffic();
    let m = scrape(t.http);
    for s in &m {
        assert!(s.name.starts_with("midge_"), "{s:?}");
        if s.kind == "counter" {
            assert!(s.name.ends_with("_total"), "counter sample {s:?}");
        }
    }
    let stalled = [("client_id", "stalled")];
    assert_eq!(value(&m, "midge_client_queued_messages", &stalled), 7.0);
    assert_eq!(value(&m, "midge_client_inflight_messages", &stalled), 0.0);
    assert!(value(&m, "midge_client_queued_bytes", &stalled) > 0.0);
    assert_eq!(value(&m, "midge_queued_messages", &[]), 7.0);
    assert_eq!(value(&m, "midge_inflight_messages", &[]), 0.0);
    assert_eq!(
        value(&m, "midge_persistent_sessions", &[("state", "offline")]),
        1.0
    );
    assert_eq!(
        value(&m, "midge_persistent_sessions", &[("state", "online")]),
        0.0
    );
    assert_eq!(value(&m, "midge_clients_connected", &[]), 3.0);
    assert_eq!(value(&m, "midge_retained_messages", &[]), 1.0);
    assert_eq!(value(&m, "midge_subscriptions", &[]), 1.0);
    value(&m, "midge_uptime_seconds", &[]);
    value(&m, "midge_memory_used_bytes", &[]);
    value(
        &m,
        "midge_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
    );

    // The same through the strict OpenMetrics parser, when a scraper asks for it.
    let r = get_with(
        t.http,
        "/metrics",
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let om = parse_metrics(&r.text(), true);
    assert_eq!(value(&om, "midge_client_queued_messages", &stalled), 7.0);

    let o = get(t.http, "/api/v1/overview").json();
    assert_eq!(o["clients"]["connected"], 3);
    assert_eq!(o["clients"]["persistent_offline"], 1);
    assert_eq!(o["queued"]["messages"], 7);
    assert_eq!(o["deepest"][0]["client_id"], "stalled");
    assert_eq!(o["deepest"][0]["queued"], 7);
    assert_eq!(o["deepest"][0]["connected"], false);
    assert_eq!(o["retained"], 1);
    assert_eq!(o["persistence"], true);

    let tree = get(t.http, "/api/v1/systree").json();
    assert_eq!(tree["$SYS/broker/clients/connected"], 3);
    assert_eq!(tree["$SYS/broker/clients/disconnected"], 1);
    assert_eq!(tree["$SYS/broker/clients/total"], 4);
    assert_eq!(tree["$SYS/broker/store/messages/count"], 7);
    assert_eq!(tree["$SYS/broker/retained messages/count"], 1);
    assert_eq!(tree["$SYS/broker/subscriptions/count"], 1);
    assert!(tree["$SYS/broker/uptime"].is_u64(), "{tree}");

    let l = get(t.http, "/api/v1/listeners").json();
    let l = l["listeners"].as_array().expect("listeners").clone();
    let ports: Vec<u64> = l.iter().map(|x| x["port"].as_u64().unwrap_or(0)).collect();
    assert_eq!(
        ports,
        [
            u64::from(t.broker.port),
            u64::from(t.second_port),
            u64::from(t.http.port())
        ]
    );
    assert_eq!(l[0]["protocol"], "mqtt");
    assert_eq!(l[2]["protocol"], "httpapi");
    for x in &l {
        assert_eq!(x["tls"], false);
        assert_eq!(x["mtls"], false);
        assert_eq!(x["allow_anonymous"], true);
    }
}

/// The event counters against the same known traffic: messages in and out by QoS and
/// their payload bytes, connections per listener, drops by reason, the store's commits.
/// These are counted on the data path (the `$SYS` work of issue 14 feeds them).
#[test]
fn metrics_count_known_mosquitto_traffic_exactly() {
    let t = known_traffic();
    let m = scrape(t.http);
    let qos = |q: &'static str| [("qos", q)];
    assert_eq!(value(&m, "midge_messages_received_total", &qos("0")), 4.0);
    assert_eq!(value(&m, "midge_messages_received_total", &qos("1")), 13.0);
    assert_eq!(value(&m, "midge_messages_received_total", &qos("2")), 2.0);
    assert_eq!(value(&m, "midge_messages_sent_total", &qos("0")), 3.0);
    assert_eq!(value(&m, "midge_messages_sent_total", &qos("1")), 5.0);
    assert_eq!(value(&m, "midge_messages_sent_total", &qos("2")), 2.0);
    assert_eq!(
        value(&m, "midge_publish_payload_received_bytes_total", &[]),
        45.0
    );
    assert_eq!(
        value(&m, "midge_publish_payload_sent_bytes_total", &[]),
        20.0
    );

    let first = format!("127.0.0.1:{}", t.broker.port);
    let second = format!("127.0.0.1:{}", t.second_port);
    let at = |name: &str, addr: &str| value(&m, name, &[("listener", addr), ("protocol", "mqtt")]);
    assert_eq!(at("midge_listener_connections", &first), 2.0);
    assert_eq!(at("midge_listener_connections", &second), 1.0);
    assert_eq!(at("midge_listener_connections_accepted_total", &first), 8.0);
    assert_eq!(
        at("midge_listener_connections_accepted_total", &second),
        3.0
    );
    assert_eq!(value(&m, "midge_connections_accepted_total", &[]), 11.0);

    for s in m
        .iter()
        .filter(|s| s.name == "midge_messages_dropped_total")
    {
        let expected = if s.labels["reason"] == "qos0_offline" {
            1.0
        } else {
            0.0
        };
        assert_eq!(s.value, expected, "{s:?}");
    }
    assert_eq!(
        value(
            &m,
            "midge_messages_dropped_total",
            &[("reason", "qos0_offline")]
        ),
        1.0
    );
    assert_eq!(value(&m, "midge_auth_failures_total", &[]), 0.0);
    assert!(value(&m, "midge_store_commits_total", &[]) > 0.0);
    assert!(value(&m, "midge_store_fsync_seconds_count", &[]) > 0.0);
    assert!(value(&m, "midge_store_disk_bytes", &[]) > 0.0);

    let tree = get(t.http, "/api/v1/systree").json();
    assert_eq!(tree["$SYS/broker/publish/messages/received"], 19);
    assert_eq!(tree["$SYS/broker/publish/messages/sent"], 10);
    assert_eq!(tree["$SYS/broker/publish/messages/dropped"], 1);
    assert_eq!(tree["$SYS/broker/connections/socket/count"], 11);
    let l = get(t.http, "/api/v1/listeners").json();
    assert_eq!(l["listeners"][0]["connections"], 2);
    assert_eq!(l["listeners"][1]["connections"], 1);
}

/// The status page, loaded by headless Chromium while three clients are connected and a
/// stalled persistent subscriber holds four messages, shows both in its DOM (the page
/// filled them in from `/api/v1/overview`); a screenshot is kept in
/// target/test-artifacts/status-page.png.
#[test]
fn status_page_in_headless_chromium_shows_connections_and_the_stalled_queue() {
    let b = Broker::start("[http]\nport = 0\n");
    let http = http_addr(&b);
    stalled_subscriber(&b, b.port, "stalled", "stall/t");
    run(
        "mosquitto_pub",
        b.port,
        &["-i", "pub", "-q", "1", "-t", "stall/t", "-l"],
        &lines("m", 4),
    );
    wait_closes(&b, "pub", 1);
    let _idle: Vec<Raw> = (1..=3)
        .map(|i| idle(b.addr(), &format!("idle-{i}")))
        .collect();

    let url = format!("http://{http}/");
    let dom = chromium(&url, &["--dump-dom"]);
    assert!(
        dom.contains("data-loaded=\"1\""),
        "the page never loaded its data:\n{dom}"
    );
    assert_eq!(
        element_text(&dom, "connections").as_deref(),
        Some("3"),
        "{dom}"
    );
    assert_eq!(element_text(&dom, "queued").as_deref(), Some("4"), "{dom}");
    assert_eq!(
        row_cell(&dom, "stalled", "queued").as_deref(),
        Some("4"),
        "{dom}"
    );
    assert_eq!(
        row_cell(&dom, "stalled", "inflight").as_deref(),
        Some("0"),
        "{dom}"
    );

    let shot = artifact("status-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &url,
        &[
            "--window-size=1280,1000",
            &format!("--screenshot={}", shot.display()),
        ],
    );
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
}

/// `[http] password_file`: HTTP Basic against it; without credentials or with wrong ones
/// 401 with a Basic challenge; reloaded on SIGHUP (and what was remembered is forgotten).
#[test]
fn http_listener_with_password_file_asks_for_basic_credentials() {
    let dir = TempDir::new("http-users");
    let users = passwd_file(dir.path(), &[("ops", "s3cret-pass")]);
    let b = Broker::start(&format!(
        "[http]\nport = 0\npassword_file = \"{}\"\n",
        users.display()
    ));
    let http = http_addr(&b);
    for path in ["/", "/metrics", "/api/v1/clients"] {
        let r = get(http, path);
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(
            r.headers_named("www-authenticate"),
            ["Basic realm=\"midge\", charset=\"UTF-8\""],
            "{path}"
        );
    }
    let wrong = basic("ops", "guess");
    assert_eq!(
        get_with(http, "/metrics", &[("Authorization", &wrong)]).status,
        401
    );
    let nobody = basic("nobody", "s3cret-pass");
    assert_eq!(
        get_with(http, "/metrics", &[("Authorization", &nobody)]).status,
        401
    );
    let bearer = [("Authorization", "Bearer s3cret-pass")];
    assert_eq!(get_with(http, "/metrics", &bearer).status, 401);
    let right = basic("ops", "s3cret-pass");
    for path in ["/", "/metrics", "/api/v1/overview"] {
        let r = get_with(http, path, &[("Authorization", &right)]);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }

    passwd_file(dir.path(), &[("ops2", "other-pass")]);
    b.sighup();
    assert!(
        b.wait_event("http_passwords_reloaded", WAIT),
        "{}",
        b.log_tail(20)
    );
    assert_eq!(
        get_with(http, "/metrics", &[("Authorization", &right)]).status,
        401
    );
    let new = basic("ops2", "other-pass");
    assert_eq!(
        get_with(http, "/metrics", &[("Authorization", &new)]).status,
        200
    );
}

/// `[http] token`: `Authorization: Bearer <token>`, or Basic with the token as the
/// password (what a browser can send); anything else 401 with both challenges. The token
/// never reaches the log.
#[test]
fn http_listener_with_token_takes_bearer_or_basic_with_the_token() {
    const TOKEN: &str = "tok-0123456789abcdef";
    let b = Broker::start(&format!("[http]\nport = 0\ntoken = \"{TOKEN}\"\n"));
    let http = http_addr(&b);
    let r = get(http, "/metrics");
    assert_eq!(r.status, 401);
    assert_eq!(
        r.headers_named("www-authenticate"),
        [
            "Basic realm=\"midge\", charset=\"UTF-8\"",
            "Bearer realm=\"midge\""
        ]
    );
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(
        get_with(http, "/metrics", &[("Authorization", &bearer)]).status,
        200
    );
    let wrong = format!("Bearer {TOKEN}x");
    assert_eq!(
        get_with(http, "/metrics", &[("Authorization", &wrong)]).status,
        401
    );
    let short = "Bearer tok-0123456789abcde";
    assert_eq!(
        get_with(http, "/metrics", &[("Authorization", short)]).status,
        401
    );
    let browser = basic("anyone", TOKEN);
    assert_eq!(
        get_with(http, "/", &[("Authorization", &browser)]).status,
        200
    );
    assert!(!b.log().contains(TOKEN), "the token is in the log");
}

/// An `[http]` listener beyond loopback without credentials stops midge at start, naming
/// the key and the way out; so does a password file that cannot be read.
#[test]
fn http_listener_beyond_loopback_without_credentials_is_refused_at_start() {
    assert_config_error(
        "[http]\nbind = \"0.0.0.0\"\n",
        &[
            "[http].bind = \"0.0.0.0\"",
            "beyond loopback",
            "password_file or token",
        ],
    );
    assert_config_error(
        "[http]\nbind = \"::\"\nport = 9883\n",
        &["[http].bind", "password_file or token"],
    );
    assert_config_error(
        "[http]\nbind = \"0.0.0.0\"\npassword_file = \"/nonexistent/midge-operators\"\n",
        &["[http].password_file", "/nonexistent/midge-operators"],
    );
}

/// `[http] certfile` / `keyfile`: HTTPS with the certificate, loaded as an MQTT
/// listener's are.
#[test]
fn https_listener_serves_the_api_with_the_configured_certificate() {
    let dir = TempDir::new("http-tls");
    let pki = common::tls::generate(dir.path(), "client");
    let b = Broker::start(&format!(
        "[http]\nport = 0\ncertfile = \"{}\"\nkeyfile = \"{}\"\n",
        pki.server_cert.display(),
        pki.server_key.display()
    ));
    let http = http_addr(&b);
    assert!(
        b.log().contains(&format!("https://{http}/")),
        "{}",
        b.log_tail(10)
    );
    let r = get_tls(http, &pki.ca, "/api/v1/listeners");
    assert_eq!(r.status, 200, "{}", r.text());
    let l = r.json();
    let me = &l["listeners"][1];
    assert_eq!(me["protocol"], "httpapi");
    assert_eq!(me["tls"], true);
    assert_eq!(get_tls(http, &pki.ca, "/metrics").status, 200);

    assert_config_error(
        &format!(
            "[http]\ncertfile = \"{}\"\nkeyfile = \"/nonexistent/http.key\"\n",
            pki.server_cert.display()
        ),
        &["[http].keyfile", "/nonexistent/http.key"],
    );
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `/api/v1/clients` pages through 250 offline sessions, one with an id that needs
/// encoding, and a connected client: each once, in order, `total` on every page, `next`
/// until the last; the connected client's fields.
#[test]
fn clients_api_pages_through_250_clients_returning_each_once() {
    let b = Broker::start("[http]\nport = 0\n");
    let http = http_addr(&b);
    let mut expected: BTreeSet<String> = (0..250).map(|i| format!("client-{i:03}")).collect();
    expected.insert("odd id/ü&x=1".to_owned());
    for id in &expected {
        let login = Login {
            client_id: id,
            clean: false,
            ..Login::default()
        };
        let (r, _, code) = Raw::login(b.addr(), &login);
        assert_eq!(code, 0, "CONNACK for {id}");
        drop(r);
    }
    let _live = idle(b.addr(), "live-one");
    expected.insert("live-one".to_owned());

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            None => "/api/v1/clients?limit=100".to_owned(),
            Some(a) => format!("/api/v1/clients?limit=100&after={}", encode(a)),
        };
        let page = get(http, &path).json();
        assert_eq!(page["total"], 252, "{path}");
        let clients = page["clients"].as_array().expect("clients");
        sizes.push(clients.len());
        seen.extend(
            clients
                .iter()
                .map(|c| c["client_id"].as_str().unwrap_or_default().to_owned()),
        );
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
        assert!(sizes.len() < 10, "paging does not end");
    }
    assert_eq!(sizes, [100, 100, 52]);
    let sorted: Vec<String> = expected.iter().cloned().collect();
    assert_eq!(seen, sorted, "each client once, ordered by id");

    let all = get(http, "/api/v1/clients?limit=5000").json();
    assert_eq!(all["clients"].as_array().map(Vec::len), Some(252));
    assert!(all["next"].is_null());
    let live = all["clients"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["client_id"] == "live-one"))
        .expect("live-one listed")
        .clone();
    assert_eq!(live["connected"], true);
    assert_eq!(live["clean"], true);
    assert_eq!(live["protocol"], "3.1.1");
    assert_eq!(live["keep_alive"], 60);
    assert!(
        live["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{live}"
    );
    for key in ["username", "subscriptions", "queued", "inflight", "dropped"] {
        assert!(live.get(key).is_some(), "{key} missing: {live}");
    }
    assert_eq!(get(http, "/api/v1/clients?limit=0").status, 400);
    assert_eq!(get(http, "/api/v1/clients?limit=many").status, 400);
}

/// GET and HEAD only (405 with `Allow`), unknown paths 404, oversized heads 431, garbage
/// 400, and the listener keeps answering after each. Without credentials only an address
/// or `localhost` is accepted as `Host` (a DNS-rebinding page gets 421).
#[test]
fn http_answers_get_and_head_on_known_paths_and_refuses_the_rest() {
    let b = Broker::start("[http]\nport = 0\n");
    let http = http_addr(&b);
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let r = call(method, http, "/metrics");
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }
    assert_eq!(get(http, "/nope").status, 404);
    assert_eq!(get(http, "/api/v1").status, 404);
    let head = call("HEAD", http, "/");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty(), "HEAD has no body");
    assert!(head.header("content-length").is_some_and(|n| n != "0"));
    assert!(head.header("content-security-policy").is_some());

    let big = "x".repeat(10_000);
    assert_eq!(get_with(http, "/metrics", &[("X-Big", &big)]).status, 431);
    assert_eq!(raw_request(http, b"NOT HTTP AT ALL\r\n\r\n").status, 400);
    let rebound = raw_request(
        http,
        b"GET /api/v1/clients HTTP/1.1\r\nHost: attacker.example:9883\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(rebound.status, 421);
    let by_name = raw_request(
        http,
        b"GET /api/v1/version HTTP/1.1\r\nHost: localhost:9883\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(by_name.status, 200);
    assert_eq!(by_name.text().trim(), env!("CARGO_PKG_VERSION"));
    assert_eq!(get(http, "/metrics").status, 200, "still serving");
    assert!(!b.log().contains("panicked"), "{}", b.log_tail(20));
}

/// `[http] max_connections`: with two connections open (no request sent yet), a third is
/// closed at once, unanswered; once they go, requests are answered again.
#[test]
fn http_connections_beyond_max_connections_are_closed() {
    let b = Broker::start("[http]\nport = 0\nmax_connections = 2\n");
    let http = http_addr(&b);
    let held: Vec<std::net::TcpStream> = (0..2)
        .map(|_| std::net::TcpStream::connect(http).expect("connect"))
        .collect();
    let mut third = std::net::TcpStream::connect(http).expect("connect");
    third.set_read_timeout(Some(WAIT)).expect("read timeout");
    let _ = third.write_all(b"GET /api/v1/version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut third, &mut got);
    assert!(
        got.is_empty(),
        "answered beyond the limit: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        b.wait_event("http_connection_limit", WAIT),
        "{}",
        b.log_tail(10)
    );

    drop(held);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let mut s = std::net::TcpStream::connect(http).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("read timeout");
        let _ = s.write_all(
            b"GET /api/v1/version HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        );
        let mut got = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut got);
        if got.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slots never freed");
        std::thread::sleep(Duration::from_millis(50));
    }
}
