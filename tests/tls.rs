//! TLS and mutual TLS listeners, against a real `midge` process on 127.0.0.1.
//!
//! Certificates are generated for each test at run time (tests/common/tls.rs, rcgen), so
//! nothing here expires. Clients: rumqttc over rustls, the real `mosquitto_pub` /
//! `mosquitto_sub` with `--cafile` / `--cert` / `--key`, and raw sockets for plaintext,
//! garbage and stalled handshakes.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tls::{self as pki, Pki};
use common::*;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use tokio_rustls::rustls;

const WAIT: Duration = Duration::from_secs(10);

/// A TLS listener (first, so the harness's `-p` gives it the test's port) using the PKI's
/// server certificate, plus `extra` listener keys.
fn tls_listener(pki: &Pki, extra: &str) -> String {
    format!(
        "[[listener]]\nbind = \"127.0.0.1\"\ncertfile = {:?}\nkeyfile = {:?}\n{extra}\n",
        pki.server_cert, pki.server_key
    )
}

/// Requires client certificates signed by the PKI's CA.
fn mtls_listener(pki: &Pki, extra: &str) -> String {
    tls_listener(
        pki,
        &format!("cafile = {:?}\nrequire_certificate = true\n{extra}", pki.ca),
    )
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn tls_options(port: u16, id: &str, ca: &Path, client: Option<(&Path, &Path)>) -> MqttOptions {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
        ca: read(ca),
        alpn: None,
        client_auth: client.map(|(c, k)| (read(c), read(k))),
    }));
    opts
}

/// Connects and waits for CONNACK; `Err` carries the first connection error.
async fn connect(opts: MqttOptions) -> Result<(AsyncClient, EventLoop), String> {
    rumqttc_connect(opts).await
}

/// Subscribes, publishes to the same topic over the same TLS connection, and expects the
/// message back: the whole QoS 1 path works over TLS.
async fn round_trip(client: &AsyncClient, eventloop: &mut EventLoop, topic: &str) {
    client
        .subscribe(topic, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut published = false;
    loop {
        let event = tokio::time::timeout_at(deadline, eventloop.poll())
            .await
            .expect("message within the wait")
            .expect("connection stays up");
        match event {
            Event::Incoming(Packet::SubAck(_)) if !published => {
                client
                    .publish(topic, QoS::AtLeastOnce, false, b"over tls".to_vec())
                    .await
                    .expect("publish");
                published = true;
            }
            Event::Incoming(Packet::Publish(p)) => {
                assert_eq!(p.topic, topic);
                assert_eq!(&p.payload[..], b"over tls");
                return;
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn tls_rumqttc_publishes_and_receives_over_tls() {
    let dir = TempDir::new("tls-basic");
    let pki = pki::generate(dir.path(), "alice");
    let broker = Broker::start(&tls_listener(&pki, ""));
    let (client, mut ev) = connect(tls_options(broker.port, "t1", &pki.ca, None))
        .await
        .expect("TLS client connects");
    round_trip(&client, &mut ev, "tls/basic").await;
    let addr = format!("127.0.0.1:{}", broker.port);
    assert_eq!(
        broker.event_count("listening", &[("addr", &addr), ("tls", "true")]),
        1,
        "{}",
        broker.log()
    );
}

#[tokio::test]
async fn tls_plain_and_tls_listeners_side_by_side_share_one_broker() {
    let dir = TempDir::new("tls-both");
    let pki = pki::generate(dir.path(), "alice");
    let tls_port = free_port();
    let broker = Broker::start(&format!(
        "[[listener]]\nbind = \"127.0.0.1\"\nport = 1\n\
         [[listener]]\nbind = \"127.0.0.1\"\nport = {tls_port}\ncertfile = {:?}\nkeyfile = {:?}\n",
        pki.server_cert, pki.server_key
    ));
    // A TLS subscriber receives what a plain-TCP client publishes.
    let (sub, mut ev) = connect(tls_options(tls_port, "tls-sub", &pki.ca, None))
        .await
        .expect("TLS client connects");
    sub.subscribe("mixed/#", QoS::AtLeastOnce).await.unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = tokio::time::timeout(WAIT, ev.poll())
            .await
            .expect("SUBACK")
            .expect("up")
        {
            break;
        }
    }
    let mut plain = raw_connected(broker.addr(), "plain-pub");
    plain
        .write_all(&publish_packet(b"mixed/x", 0, 0, b"from tcp", false))
        .unwrap();
    loop {
        if let Event::Incoming(Packet::Publish(p)) = tokio::time::timeout(WAIT, ev.poll())
            .await
            .expect("PUBLISH")
            .expect("up")
        {
            assert_eq!(&p.payload[..], b"from tcp");
            break;
        }
    }
}

#[tokio::test]
async fn mtls_client_certificate_accepted_and_missing_one_refused() {
    let dir = TempDir::new("mtls");
    let pki = pki::generate(dir.path(), "alice");
    let broker = Broker::start(&mtls_listener(&pki, ""));
    let with_cert = tls_options(
        broker.port,
        "m1",
        &pki.ca,
        Some((&pki.client_cert, &pki.client_key)),
    );
    let (client, mut ev) = connect(with_cert).await.expect("client cert accepted");
    round_trip(&client, &mut ev, "mtls/ok").await;

    let without = tls_options(broker.port, "m2", &pki.ca, None);
    let err = connect(without)
        .await
        .err()
        .expect("no client certificate must be refused");
    assert!(!err.is_empty());
    assert!(
        broker.wait_event_with("tls_failed", &[("cause", "no_certificate")], WAIT),
        "{}",
        broker.log()
    );
    // The refused client cost nothing: the first one still works.
    round_trip(&client, &mut ev, "mtls/still").await;
}

#[tokio::test]
async fn mtls_expired_and_untrusted_client_certificates_refused() {
    let dir = TempDir::new("mtls-bad");
    let pki = pki::generate(dir.path(), "alice");
    let broker = Broker::start(&mtls_listener(&pki, ""));
    let (expired_cert, expired_key) = pki.client("old", true);
    let err = connect(tls_options(
        broker.port,
        "exp",
        &pki.ca,
        Some((&expired_cert, &expired_key)),
    ))
    .await
    .err()
    .expect("expired certificate must be refused");
    assert!(!err.is_empty());
    assert!(
        broker.wait_event_with("tls_failed", &[("cause", "certificate_expired")], WAIT),
        "{}",
        broker.log()
    );

    let (other_cert, other_key) = pki::untrusted_client(dir.path(), "mallory");
    connect(tls_options(
        broker.port,
        "untrusted",
        &pki.ca,
        Some((&other_cert, &other_key)),
    ))
    .await
    .err()
    .expect("certificate from another CA must be refused");
    // Handshake failures are logged once per 10 s (a stranger can cause them at will), so
    // this second refusal is counted in the next line rather than written now.
    assert_eq!(
        broker.event_count("tls_failed", &[("cause", "unknown_issuer")]),
        0,
        "rate-limited: {}",
        broker.log()
    );
}

#[tokio::test]
async fn tls_key_formats_pkcs1_sec1_and_certificate_chain_are_read() {
    let dir = TempDir::new("tls-keys");
    let pki = pki::generate(dir.path(), "alice");

    // SEC1 ("EC PRIVATE KEY").
    let sec1 = pki.server_key_sec1();
    assert_eq!(pki::pem_label(&sec1), "EC PRIVATE KEY");
    let broker = Broker::start(&format!(
        "[[listener]]\nbind = \"127.0.0.1\"\ncertfile = {:?}\nkeyfile = {sec1:?}\n",
        pki.server_cert
    ));
    connect(tls_options(broker.port, "sec1", &pki.ca, None))
        .await
        .expect("SEC1 key works");
    drop(broker);

    // PKCS#1 ("RSA PRIVATE KEY").
    let (rsa_cert, rsa_key) = pki.server_rsa_pkcs1();
    assert_eq!(pki::pem_label(&rsa_key), "RSA PRIVATE KEY");
    let broker = Broker::start(&format!(
        "[[listener]]\nbind = \"127.0.0.1\"\ncertfile = {rsa_cert:?}\nkeyfile = {rsa_key:?}\n"
    ));
    connect(tls_options(broker.port, "rsa", &pki.ca, None))
        .await
        .expect("PKCS#1 RSA key works");
    drop(broker);

    // A chain file (leaf + intermediate): clients that trust only the root accept it.
    let chain = pki.server_chain();
    let broker = Broker::start(&format!(
        "[[listener]]\nbind = \"127.0.0.1\"\ncertfile = {:?}\nkeyfile = {:?}\n",
        chain.chain, chain.key
    ));
    connect(tls_options(broker.port, "chain", &pki.ca, None))
        .await
        .expect("certificate chain is sent whole");
}

/// A client config limited to TLS 1.2, trusting the PKI's CA.
fn tls12_only(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

#[tokio::test]
async fn tls_version_sets_the_minimum_protocol() {
    let dir = TempDir::new("tls-version");
    let pki = pki::generate(dir.path(), "alice");
    let tls12 = |port| {
        let mut opts = MqttOptions::new("v12", "127.0.0.1", port);
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls12_only(&pki.ca),
        )));
        opts
    };
    // Default minimum TLS 1.2: a TLS 1.2 client connects.
    let broker = Broker::start(&tls_listener(&pki, ""));
    connect(tls12(broker.port))
        .await
        .expect("TLS 1.2 accepted by default");
    drop(broker);
    // tls_version = "tlsv1.3": the TLS 1.2 client is refused, a TLS 1.3 one is not.
    let broker = Broker::start(&tls_listener(&pki, "tls_version = \"tlsv1.3\""));
    connect(tls12(broker.port))
        .await
        .err()
        .expect("TLS 1.2 refused when the minimum is 1.3");
    assert!(broker.wait_event("tls_failed", WAIT), "{}", broker.log());
    connect(tls_options(broker.port, "v13", &pki.ca, None))
        .await
        .expect("TLS 1.3 accepted");
}

#[tokio::test]
async fn tls_plaintext_garbage_and_stalled_handshakes_are_closed_and_cost_nothing_else() {
    let dir = TempDir::new("tls-bad-input");
    let pki = pki::generate(dir.path(), "alice");
    let broker = Broker::start(&format!("connect_timeout = 1\n{}", tls_listener(&pki, "")));
    let (client, mut ev) = connect(tls_options(broker.port, "healthy", &pki.ca, None))
        .await
        .expect("TLS client connects");

    // Plaintext MQTT on the TLS port.
    let mut plain = raw(broker.addr());
    plain.write_all(&connect_packet("plain")).unwrap();
    assert!(
        read_until_closed(&mut plain, WAIT).is_some(),
        "plaintext client must be closed"
    );

    // Garbage.
    let mut junk = raw(broker.addr());
    let garbage: Vec<u8> = (0..2000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let _ = junk.write_all(&garbage);
    assert!(
        read_until_closed(&mut junk, WAIT).is_some(),
        "garbage closed"
    );

    // A truncated ClientHello, then silence; and a connection that sends nothing.
    let started = Instant::now();
    let mut truncated = raw(broker.addr());
    truncated
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc])
        .unwrap();
    let mut silent = raw(broker.addr());
    assert!(
        read_until_closed(&mut truncated, WAIT).is_some(),
        "truncated handshake closed"
    );
    assert!(
        read_until_closed(&mut silent, WAIT).is_some(),
        "silent connection closed"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stalled handshakes must be dropped after connect_timeout"
    );
    assert!(broker.wait_event("tls_timeout", WAIT), "{}", broker.log());
    assert!(broker.wait_event("tls_failed", WAIT), "{}", broker.log());

    // The healthy client never noticed.
    round_trip(&client, &mut ev, "still/fine").await;
}

// ---------------------------------------------------------------------------------------
// The real mosquitto_pub / mosquitto_sub over TLS
// ---------------------------------------------------------------------------------------

fn mosquitto(tool_name: &str, port: u16, args: &[&str]) -> std::process::Child {
    mosquitto_command(tool_name, port, args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {tool_name}: {e}"))
}

/// `mosquitto_sub -C 1` receives what `mosquitto_pub` sends, both with the given TLS
/// arguments; returns the subscriber's output.
fn mosquitto_round_trip(broker: &Broker, tls_args: &[&str], topic: &str) -> String {
    let mut sub_args = tls_args.to_vec();
    sub_args.extend([
        "-t", topic, "-q", "1", "-C", "1", "-W", "10", "-i", "mq-sub",
    ]);
    let sub = mosquitto("mosquitto_sub", broker.port, &sub_args);
    assert!(
        broker.wait_event_with("client_connected", &[("client_id", "mq-sub")], WAIT),
        "{}",
        broker.log()
    );
    // The subscription is made right after CONNACK; give it a moment to be in place
    // before publishing (a retained message covers a late one anyway).
    let mut pub_args = tls_args.to_vec();
    pub_args.extend([
        "-t",
        topic,
        "-q",
        "1",
        "-r",
        "-m",
        "hello tls",
        "-i",
        "mq-pub",
    ]);
    let out = mosquitto("mosquitto_pub", broker.port, &pub_args)
        .wait_with_output()
        .unwrap();
    assert!(
        out.status.success(),
        "mosquitto_pub failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        broker.log()
    );
    let out = sub.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mosquitto_sub failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        broker.log()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn mosquitto_clients_over_tls_with_cafile() {
    let dir = TempDir::new("mq-tls");
    let pki = pki::generate(dir.path(), "alice");
    let broker = Broker::start(&tls_listener(&pki, ""));
    let ca = pki.ca.to_str().unwrap();
    let got = mosquitto_round_trip(&broker, &["--cafile", ca], "mq/tls");
    assert_eq!(got.trim(), "hello tls");
}

#[test]
fn mosquitto_clients_over_mutual_tls_with_cert_key_and_password() {
    let dir = TempDir::new("mq-mtls");
    let pki = pki::generate(dir.path(), "alice");
    let passwords = dir.path().join("passwords");
    let made = Command::new(env!("CARGO_BIN_EXE_midge"))
        .args(["passwd", "-c", "-b"])
        .arg(&passwords)
        .args(["alice", "s3cret"])
        .status()
        .unwrap();
    assert!(made.success());
    let broker = Broker::start(&format!(
        "password_file = {passwords:?}\n{}",
        mtls_listener(&pki, "allow_anonymous = false")
    ));
    let (ca, cert, key) = (
        pki.ca.to_str().unwrap(),
        pki.client_cert.to_str().unwrap(),
        pki.client_key.to_str().unwrap(),
    );
    let args = [
        "--cafile", ca, "--cert", cert, "--key", key, "-u", "alice", "-P", "s3cret",
    ];
    let got = mosquitto_round_trip(&broker, &args, "mq/mtls");
    assert_eq!(got.trim(), "hello tls");

    // Right certificate, wrong password: refused by CONNACK.
    let out = mosquitto(
        "mosquitto_pub",
        broker.port,
        &[
            "--cafile", ca, "--cert", cert, "--key", key, "-u", "alice", "-P", "wrong", "-t", "x",
            "-m", "y",
        ],
    )
    .wait_with_output()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad user name or password"), "{stderr}");
    // The password is never written to the log.
    assert!(!broker.log().contains("s3cret"));
    assert!(!broker.log().contains("wrong"));

    // No client certificate: the TLS handshake fails before MQTT.
    let out = mosquitto(
        "mosquitto_pub",
        broker.port,
        &[
            "--cafile", ca, "-u", "alice", "-P", "s3cret", "-t", "x", "-m", "y",
        ],
    )
    .wait_with_output()
    .unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn mtls_use_identity_as_username_makes_the_certificate_cn_the_acl_user() {
    let dir = TempDir::new("mtls-identity");
    let pki = pki::generate(dir.path(), "alice");
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "user alice\ntopic readwrite alice/#\n").unwrap();
    let broker = Broker::start(&format!(
        "acl_file = {acl:?}\n{}",
        mtls_listener(
            &pki,
            "use_identity_as_username = true\nallow_anonymous = false"
        )
    ));
    let opts = tls_options(
        broker.port,
        "cn-client",
        &pki.ca,
        Some((&pki.client_cert, &pki.client_key)),
    );
    let (client, mut ev) = connect(opts).await.expect("certificate identity accepted");
    assert!(
        broker.wait_event_with(
            "client_connected",
            &[("client_id", "cn-client"), ("user", "alice")],
            WAIT
        ),
        "the CN is the username: {}",
        broker.log()
    );
    round_trip(&client, &mut ev, "alice/data").await;
    // bob's topics are outside alice's ACL: the subscription is refused.
    client.subscribe("bob/#", QoS::AtLeastOnce).await.unwrap();
    loop {
        let event = tokio::time::timeout(WAIT, ev.poll())
            .await
            .expect("SUBACK")
            .expect("up");
        if let Event::Incoming(Packet::SubAck(ack)) = event {
            assert_eq!(
                ack.return_codes,
                vec![rumqttc::SubscribeReasonCode::Failure]
            );
            break;
        }
    }

    // A certificate without a Common Name has no identity: not authorized.
    let (anon_cert, anon_key) = pki.client("", false);
    let err = connect(tls_options(
        broker.port,
        "no-cn",
        &pki.ca,
        Some((&anon_cert, &anon_key)),
    ))
    .await
    .err()
    .expect("no CN, no identity");
    assert!(err.contains("NotAuthorized"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Configuration errors: non-zero exit naming the key and the file
// ---------------------------------------------------------------------------------------

#[test]
fn tls_config_errors_name_the_key_and_the_file() {
    let dir = TempDir::new("tls-config");
    let pki = pki::generate(dir.path(), "alice");
    // The port is replaced by the harness's -p; what matters is that the files are
    // checked before anything is bound.
    let listener = |cert: &Path, key: &Path, extra: &str| {
        format!(
            "[[listener]]\nbind = \"127.0.0.1\"\ncertfile = {cert:?}\nkeyfile = {key:?}\n{extra}"
        )
    };
    let missing = dir.path().join("nope.crt");
    assert_config_error(
        &listener(&missing, &pki.server_key, ""),
        &["listener[1].certfile", "nope.crt", "cannot read"],
    );
    let missing_key = dir.path().join("nope.key");
    assert_config_error(
        &listener(&pki.server_cert, &missing_key, ""),
        &["listener[1].keyfile", "nope.key"],
    );
    // The client's key does not belong to the server certificate.
    assert_config_error(
        &listener(&pki.server_cert, &pki.client_key, ""),
        &["listener[1].keyfile", "does not fit certfile"],
    );
    // A key file given as the certificate.
    assert_config_error(
        &listener(&pki.server_key, &pki.server_key, ""),
        &["listener[1].certfile", "no PEM certificate"],
    );
    let missing_ca = dir.path().join("nope-ca.crt");
    assert_config_error(
        &listener(
            &pki.server_cert,
            &pki.server_key,
            &format!("cafile = {missing_ca:?}\nrequire_certificate = true\n"),
        ),
        &["listener[1].cafile", "nope-ca.crt"],
    );
}
