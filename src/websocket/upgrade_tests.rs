use super::*;
use crate::config::ListenerProtocol;

fn listener() -> Listener {
    Listener {
        protocol: ListenerProtocol::Websockets,
        ..Listener::default()
    }
}

fn peer() -> SocketAddr {
    "127.0.0.1:50000".parse().unwrap()
}

/// A browser's request (Chromium's, with MQTT.js), with `extra` header lines.
fn request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:9001\r\nConnection: Upgrade\r\n\
         Pragma: no-cache\r\nUpgrade: websocket\r\nOrigin: http://127.0.0.1:8080\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         {extra}\r\n"
    )
}

fn refused(head: &str, l: &Listener) -> u16 {
    answer(head.as_bytes(), l, peer()).unwrap_err().status
}

#[test]
fn the_rfc_example_key_gets_its_accept_key_and_mqtt_is_chosen() {
    let head = request("/mqtt", "Sec-WebSocket-Protocol: mqtt\r\n");
    let a = answer(head.as_bytes(), &listener(), peer()).unwrap();
    // RFC 6455 §1.3's example.
    assert!(a
        .response
        .contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert!(a
        .response
        .starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
    assert!(a.response.contains("Sec-WebSocket-Protocol: mqtt\r\n"));
    assert!(a.response.ends_with("\r\n\r\n"));
    assert_eq!(a.peer, peer());
}

#[test]
fn mqtt_6_0_0_4_the_subprotocol_returned_is_one_the_client_offered() {
    let l = listener();
    for (offered, chosen) in [
        ("mqttv3.1", "mqttv3.1"),
        ("chat, mqtt", "mqtt"),
        ("mqttv3.1, mqtt", "mqttv3.1"),
        ("MQTT", "mqtt"),
    ] {
        let head = request("/mqtt", &format!("Sec-WebSocket-Protocol: {offered}\r\n"));
        let a = answer(head.as_bytes(), &l, peer()).unwrap();
        assert!(
            a.response
                .contains(&format!("Sec-WebSocket-Protocol: {chosen}\r\n")),
            "{offered}: {}",
            a.response
        );
    }
    assert_eq!(
        refused(&request("/mqtt", "Sec-WebSocket-Protocol: chat\r\n"), &l),
        400
    );
    assert_eq!(refused(&request("/mqtt", ""), &l), 400);
}

#[test]
fn the_path_and_origin_must_be_the_listeners() {
    let mqtt = "Sec-WebSocket-Protocol: mqtt\r\n";
    let l = listener();
    assert_eq!(refused(&request("/", mqtt), &l), 404);
    assert_eq!(refused(&request("/mqtt/x", mqtt), &l), 404);
    assert!(answer(request("/mqtt?token=1", mqtt).as_bytes(), &l, peer()).is_ok());
    let l = Listener {
        websockets_origin: vec!["https://dash.example".into()],
        ..listener()
    };
    assert_eq!(refused(&request("/mqtt", mqtt), &l), 403);
    let l = Listener {
        websockets_origin: vec!["http://127.0.0.1:8080".into()],
        ..listener()
    };
    assert!(answer(request("/mqtt", mqtt).as_bytes(), &l, peer()).is_ok());
    // Not a browser: no Origin, let in.
    let head = request("/mqtt", mqtt).replace("Origin: http://127.0.0.1:8080\r\n", "");
    let l = Listener {
        websockets_origin: vec!["https://dash.example".into()],
        ..listener()
    };
    assert!(answer(head.as_bytes(), &l, peer()).is_ok());
}

#[test]
fn requests_that_are_not_websocket_upgrades_are_refused() {
    let l = listener();
    let good = request("/mqtt", "Sec-WebSocket-Protocol: mqtt\r\n");
    let cases = [
        (good.replace("GET", "POST"), 405),
        (good.replace("HTTP/1.1", "HTTP/1.0"), 400),
        (good.replace("Upgrade: websocket\r\n", ""), 426),
        (
            good.replace("Connection: Upgrade", "Connection: keep-alive"),
            400,
        ),
        (good.replace("Version: 13", "Version: 8"), 426),
        (good.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"), 400),
        ("\x16\x03\x01 binary".to_owned(), 400),
    ];
    for (head, status) in cases {
        assert_eq!(refused(&head, &l), status, "{head:?}");
    }
    let many: String = (0..MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
    assert_eq!(refused(&request("/mqtt", &many), &l), 431);
    let r = answer(
        good.replace("Upgrade: websocket\r\n", "").as_bytes(),
        &l,
        peer(),
    );
    assert!(r.unwrap_err().response().contains("Upgrade: websocket\r\n"));
}

#[test]
fn x_forwarded_for_counts_only_from_a_trusted_proxy() {
    let xff = "Sec-WebSocket-Protocol: mqtt\r\nX-Forwarded-For: 6.6.6.6, 203.0.113.7\r\n";
    let head = request("/mqtt", xff);
    // Untrusted by default: the header is ignored.
    let a = answer(head.as_bytes(), &listener(), peer()).unwrap();
    assert_eq!(a.peer, peer());
    let l = Listener {
        trusted_proxies: vec![TrustedProxy::parse("127.0.0.0/8").unwrap()],
        ..listener()
    };
    // The proxy's own entry is the last; the one before it is only the client's claim.
    let a = answer(head.as_bytes(), &l, peer()).unwrap();
    assert_eq!(a.peer, "203.0.113.7:0".parse().unwrap());
    // Two trusted proxies in a row: skipped.
    let two = "Sec-WebSocket-Protocol: mqtt\r\nX-Forwarded-For: 198.51.100.2\r\n\
               X-Forwarded-For: 127.0.0.5\r\n";
    let a = answer(request("/mqtt", two).as_bytes(), &l, peer()).unwrap();
    assert_eq!(a.peer, "198.51.100.2:0".parse().unwrap());
    // A proxy elsewhere is not trusted.
    let other: SocketAddr = "192.0.2.1:1".parse().unwrap();
    assert_eq!(answer(head.as_bytes(), &l, other).unwrap().peer, other);
    // Garbage: the proxy's own address stays.
    let bad = "Sec-WebSocket-Protocol: mqtt\r\nX-Forwarded-For: unknown\r\n";
    let a = answer(request("/mqtt", bad).as_bytes(), &l, peer()).unwrap();
    assert_eq!(a.peer, peer());
}

#[tokio::test]
async fn the_head_is_read_to_its_end_and_no_further_than_8_kib() {
    let head = request("/mqtt", "Sec-WebSocket-Protocol: mqtt\r\n");
    // Split in odd places, with the WebSocket's first bytes behind it.
    let mut bytes = head.clone().into_bytes();
    bytes.extend_from_slice(&[0x82, 0x80]);
    let (mut a, mut b) = tokio::io::duplex(64);
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for piece in bytes.chunks(7) {
            a.write_all(piece).await.unwrap();
        }
        a
    });
    let mut buf = Vec::new();
    let Read::Head(n) = read_head(&mut b, &mut buf).await else {
        panic!("no head")
    };
    assert_eq!(&buf[..n], head.as_bytes());
    drop(writer.await.unwrap());

    let (mut a, mut b) = tokio::io::duplex(1 << 16);
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let _ = a.write_all(&vec![b'a'; MAX_REQUEST + 10]).await;
        a
    });
    let mut buf = Vec::new();
    assert!(matches!(read_head(&mut b, &mut buf).await, Read::TooLarge));
    assert!(buf.len() <= MAX_REQUEST + 1024);
}
