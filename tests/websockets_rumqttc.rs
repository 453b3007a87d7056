//! rumqttc, a real client, over midge's WebSocket listeners (issue 17): ws with QoS 0, 1
//! and 2 both ways with a TCP client, and wss with every TLS option of an MQTT listener
//! (client certificates required, the certificate's Common Name as the ACL user).

mod common;

use std::time::Duration;

use tokio::sync::mpsc;

use common::tls as pki;
use common::*;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};

const WAIT: Duration = Duration::from_secs(10);

fn options(url: &str, id: &str, transport: Transport) -> MqttOptions {
    // For WebSockets rumqttc takes the URL as the host; the port argument is unused.
    let mut opts = MqttOptions::new(id, url, 0);
    opts.set_transport(transport);
    opts.set_keep_alive(Duration::from_secs(30));
    opts
}

/// Connects and waits for CONNACK; `Err` carries the first connection error.
async fn connect(opts: MqttOptions) -> Result<(AsyncClient, EventLoop), String> {
    rumqttc_connect(opts).await
}

/// A connected client whose event loop runs in a task of its own, handing over what the
/// tests wait for.
struct Peer {
    client: AsyncClient,
    publishes: mpsc::UnboundedReceiver<rumqttc::Publish>,
    subacks: mpsc::UnboundedReceiver<Vec<rumqttc::SubscribeReasonCode>>,
}

impl Peer {
    async fn connect(opts: MqttOptions) -> Result<Peer, String> {
        let (client, mut ev) = connect(opts).await?;
        let (ptx, publishes) = mpsc::unbounded_channel();
        let (stx, subacks) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(event) = ev.poll().await {
                match event {
                    Event::Incoming(Packet::Publish(p)) => {
                        let _ = ptx.send(p);
                    }
                    Event::Incoming(Packet::SubAck(ack)) => {
                        let _ = stx.send(ack.return_codes);
                    }
                    _ => {}
                }
            }
        });
        Ok(Peer {
            client,
            publishes,
            subacks,
        })
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<rumqttc::SubscribeReasonCode> {
        self.client.subscribe(filter, qos).await.expect("subscribe");
        tokio::time::timeout(WAIT, self.subacks.recv())
            .await
            .expect("SUBACK within the wait")
            .expect("connection up")
    }

    async fn publish(&self, topic: &str, qos: QoS, payload: &str) {
        self.client
            .publish(topic, qos, false, payload.to_owned())
            .await
            .expect("publish");
    }

    async fn next(&mut self) -> rumqttc::Publish {
        tokio::time::timeout(WAIT, self.publishes.recv())
            .await
            .expect("a PUBLISH within the wait")
            .expect("connection up")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_over_ws_exchanges_qos_0_1_2_with_a_tcp_client() {
    let b = Broker::start(&common::ws::config("", ""));
    let url = format!("ws://127.0.0.1:{}/mqtt", b.second_port);
    let mut web = Peer::connect(options(&url, "web", Transport::Ws))
        .await
        .expect("rumqttc connects over ws");
    let mut tcp_opts = MqttOptions::new("tcp", "127.0.0.1", b.port);
    tcp_opts.set_keep_alive(Duration::from_secs(30));
    let mut tcp = Peer::connect(tcp_opts).await.expect("tcp client");
    assert_eq!(web.subscribe("to/web", QoS::ExactlyOnce).await.len(), 1);
    assert_eq!(tcp.subscribe("to/tcp", QoS::ExactlyOnce).await.len(), 1);

    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let down = format!("tcp to ws at {qos:?}");
        tcp.publish("to/web", qos, &down).await;
        let p = web.next().await;
        assert_eq!(
            (p.topic.as_str(), p.qos, &p.payload[..]),
            ("to/web", qos, down.as_bytes())
        );
        let up = format!("ws to tcp at {qos:?}");
        web.publish("to/tcp", qos, &up).await;
        let p = tcp.next().await;
        assert_eq!(
            (p.topic.as_str(), p.qos, &p.payload[..]),
            ("to/tcp", qos, up.as_bytes())
        );
    }
}

/// wss with client certificates required and the certificate's Common Name as the user:
/// the ACL lets `alice` use `alice/#` only, over WebSockets as over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_over_wss_with_client_certificates_and_the_cn_as_user() {
    let dir = TempDir::new("wss-mtls");
    let pki = pki::generate(dir.path(), "alice");
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "user alice\ntopic readwrite alice/#\n").unwrap();
    let wss = format!(
        "certfile = {:?}\nkeyfile = {:?}\ncafile = {:?}\nrequire_certificate = true\n\
         use_identity_as_username = true\nallow_anonymous = false\ntls_version = \"tlsv1.2\"",
        pki.server_cert, pki.server_key, pki.ca
    );
    let b = Broker::start(&common::ws::config(&format!("acl_file = {acl:?}"), &wss));
    let url = format!("wss://127.0.0.1:{}/mqtt", b.second_port);
    let read = |p: &std::path::Path| std::fs::read(p).expect("read a PEM file");
    let tls = |client: Option<(&std::path::Path, &std::path::Path)>| {
        Transport::Wss(TlsConfiguration::Simple {
            ca: read(&pki.ca),
            alpn: None,
            client_auth: client.map(|(c, k)| (read(c), read(k))),
        })
    };
    let certificate = Some((pki.client_cert.as_path(), pki.client_key.as_path()));
    let mut alice = Peer::connect(options(&url, "alice-page", tls(certificate)))
        .await
        .expect("a client certificate is accepted over wss");
    assert!(
        b.wait_event_with(
            "client_connected",
            &[("client_id", "alice-page"), ("user", "alice")],
            WAIT
        ),
        "the CN is the username: {}",
        b.log()
    );
    assert_eq!(
        alice.subscribe("alice/#", QoS::AtLeastOnce).await,
        vec![rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    assert_eq!(
        alice.subscribe("bob/#", QoS::AtLeastOnce).await,
        vec![rumqttc::SubscribeReasonCode::Failure],
        "outside alice's ACL"
    );
    alice.publish("alice/lamp", QoS::AtLeastOnce, "on").await;
    assert_eq!(alice.next().await.payload, "on".as_bytes());

    // Without a client certificate the TLS handshake fails: no CONNACK.
    let refused = connect(options(&url, "nobody", tls(None))).await;
    assert!(refused.is_err(), "no certificate, no connection");
}
