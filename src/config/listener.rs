//! One `[[listener]]`: where it binds, what it speaks (MQTT or MQTT over WebSockets), its
//! TLS keys, its limits and who it lets in.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use serde::Deserialize;

use super::schema::QueueFull;
use super::ConfigError;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listener {
    /// Address to listen on. Default 127.0.0.1.
    pub bind: IpAddr,
    /// TCP port, 1..=65535. Default 1883.
    pub port: u16,
    /// 0 = unlimited.
    pub max_connections: usize,
    /// Policy for the queues of subscribers that connected through this listener.
    pub queue_full: QueueFull,
    /// Whether clients without credentials may connect. Unset: the top-level
    /// `allow_anonymous`, and if that is unset too, true only for a listener bound to a
    /// loopback address (Mosquitto 2's "local only" default).
    pub allow_anonymous: Option<bool>,
    /// PEM certificate chain (leaf first). Setting it makes this a TLS listener.
    pub certfile: Option<PathBuf>,
    /// PEM private key of `certfile` (PKCS#8, PKCS#1 or SEC1).
    pub keyfile: Option<PathBuf>,
    /// PEM CA certificates that client certificates are checked against.
    pub cafile: Option<PathBuf>,
    /// Refuse clients without a certificate signed by `cafile`.
    pub require_certificate: bool,
    /// The client certificate's Common Name becomes the username (for ACLs); the
    /// password file is not consulted.
    pub use_identity_as_username: bool,
    /// Lowest TLS version accepted. Default TLS 1.2.
    pub tls_version: Option<TlsVersion>,
    /// `"mqtt"` (default) or `"websockets"`: MQTT over WebSockets (RFC 6455), wss when
    /// the listener has TLS keys.
    pub protocol: ListenerProtocol,
    /// WebSocket listeners: the request path clients upgrade on. Default `/mqtt`, the path
    /// MQTT.js and most browser clients use.
    pub websockets_path: String,
    /// WebSocket listeners: the `Origin` values let in, e.g. `"https://dash.example.com"`.
    /// Empty (default): any. A request without `Origin` (not from a browser) is let in
    /// either way: the check keeps other sites' pages from using a visitor's browser, and
    /// a program that is not a browser can send any `Origin` it likes.
    pub websockets_origin: Vec<String>,
    /// WebSocket listeners: the proxies (addresses or networks such as `"10.0.0.0/8"`)
    /// whose `X-Forwarded-For` header names the client's address in logs and the API.
    /// Empty (default): the header is ignored, as anyone can send it.
    pub trusted_proxies: Vec<TrustedProxy>,
}

/// What a listener speaks (Mosquitto's `protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ListenerProtocol {
    /// MQTT over TCP (or TLS). Default.
    #[default]
    Mqtt,
    /// MQTT over WebSockets (or secure WebSockets).
    Websockets,
}

/// An address or network (`"192.168.0.10"`, `"10.0.0.0/8"`, `"::1"`, `"fd00::/8"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedProxy {
    net: IpAddr,
    prefix: u8,
}

impl TrustedProxy {
    pub fn parse(text: &str) -> Option<TrustedProxy> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let net: IpAddr = addr.trim().parse().ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(TrustedProxy { net, prefix })
    }

    /// Whether `ip` is this address or in this network (an IPv4 address written as
    /// IPv6, `::ffff:a.b.c.d`, counts as the IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let (a, b, bits) = match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => (u32::from(n) as u128, u32::from(i) as u128, 32),
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.prefix);
        if shift >= 128 {
            return true;
        }
        (a >> shift) == (b >> shift)
    }
}

impl<'de> Deserialize<'de> for TrustedProxy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TrustedProxy, D::Error> {
        let text = String::deserialize(d)?;
        TrustedProxy::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is not an IP address or network (such as \"10.0.0.0/8\")"
            ))
        })
    }
}

/// Lowest TLS version a listener accepts (Mosquitto's `tls_version` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "tlsv1.2")]
    Tls12,
    #[serde(rename = "tlsv1.3")]
    Tls13,
}

impl Listener {
    pub fn is_tls(&self) -> bool {
        self.certfile.is_some()
    }

    pub fn is_websockets(&self) -> bool {
        self.protocol == ListenerProtocol::Websockets
    }

    /// The WebSocket keys belong to a WebSocket listener (on another they would be
    /// silently ignored), and the path is one a request line can carry.
    pub(super) fn validate_websockets(&self, at: &str) -> Result<(), ConfigError> {
        let fail = |text: &str| Err(ConfigError(format!("{at}: {text}")));
        if !self.is_websockets() {
            let default = Listener::default();
            let ws_only = [
                (
                    "websockets_path",
                    self.websockets_path != default.websockets_path,
                ),
                ("websockets_origin", !self.websockets_origin.is_empty()),
                ("trusted_proxies", !self.trusted_proxies.is_empty()),
            ];
            if let Some((key, _)) = ws_only.iter().find(|(_, set)| *set) {
                return fail(&format!(
                    "{key} is set on a listener that is not a WebSocket one (set \
                     protocol = \"websockets\")"
                ));
            }
            return Ok(());
        }
        let path = &self.websockets_path;
        if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'?') {
            return fail(&format!(
                "websockets_path = {path:?} is invalid: expected a path starting with / \
                 (no spaces, no query)"
            ));
        }
        if let Some(o) = self.websockets_origin.iter().find(|o| o.trim().is_empty()) {
            return fail(&format!("websockets_origin has an empty entry {o:?}"));
        }
        Ok(())
    }

    /// The URL scheme clients use: `mqtt`, `mqtts`, `ws` or `wss`.
    pub fn scheme(&self) -> &'static str {
        match (self.is_websockets(), self.is_tls()) {
            (false, false) => "mqtt",
            (false, true) => "mqtts",
            (true, false) => "ws",
            (true, true) => "wss",
        }
    }

    /// Whether clients without a username (or certificate identity) are let in.
    pub fn allows_anonymous(&self, global: Option<bool>) -> bool {
        self.allow_anonymous
            .or(global)
            .unwrap_or_else(|| self.bind.is_loopback())
    }
}

impl Default for Listener {
    fn default() -> Self {
        Listener {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 1883,
            max_connections: 0,
            queue_full: QueueFull::DropOldest,
            allow_anonymous: None,
            certfile: None,
            keyfile: None,
            cafile: None,
            require_certificate: false,
            use_identity_as_username: false,
            tls_version: None,
            protocol: ListenerProtocol::Mqtt,
            websockets_path: "/mqtt".to_owned(),
            websockets_origin: Vec::new(),
            trusted_proxies: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_keys_belong_to_a_websocket_listener() {
        let ws = Listener {
            protocol: ListenerProtocol::Websockets,
            ..Listener::default()
        };
        assert!(ws.validate_websockets("l").is_ok());
        for bad in ["mqtt", "/mqtt?x=1", "/a b", ""] {
            let l = Listener {
                websockets_path: bad.to_owned(),
                ..ws.clone()
            };
            let e = l.validate_websockets("l").unwrap_err().0;
            assert!(e.contains("websockets_path"), "{e}");
        }
        let l = Listener {
            websockets_origin: vec![" ".into()],
            ..ws.clone()
        };
        assert!(l.validate_websockets("l").is_err());
        let plain = [
            Listener {
                websockets_path: "/ws".into(),
                ..Listener::default()
            },
            Listener {
                websockets_origin: vec!["https://a.example".into()],
                ..Listener::default()
            },
            Listener {
                trusted_proxies: vec![TrustedProxy::parse("10.0.0.1").unwrap()],
                ..Listener::default()
            },
        ];
        for l in plain {
            let e = l.validate_websockets("listener[1]").unwrap_err().0;
            assert!(e.contains("not a WebSocket one"), "{e}");
        }
    }

    /// Mosquitto's #2459 (`allow_anonymous` ignored on its ws listener): here one rule for
    /// every listener, whatever it speaks.
    #[test]
    fn a_websocket_listener_off_loopback_refuses_anonymous_by_default() {
        let ws = |bind: &str| Listener {
            bind: bind.parse().unwrap(),
            protocol: ListenerProtocol::Websockets,
            ..Listener::default()
        };
        assert!(!ws("0.0.0.0").allows_anonymous(None));
        assert!(!ws("::").allows_anonymous(None));
        assert!(ws("127.0.0.1").allows_anonymous(None));
        assert!(!ws("127.0.0.1").allows_anonymous(Some(false)));
        assert!(ws("0.0.0.0").allows_anonymous(Some(true)));
        let own = Listener {
            allow_anonymous: Some(false),
            ..ws("127.0.0.1")
        };
        assert!(!own.allows_anonymous(Some(true)));
    }

    #[test]
    fn trusted_proxies_match_addresses_and_networks() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let one = TrustedProxy::parse("192.168.0.10").unwrap();
        assert!(one.contains(ip("192.168.0.10")));
        assert!(!one.contains(ip("192.168.0.11")));
        assert!(one.contains(ip("::ffff:192.168.0.10")), "IPv4-mapped IPv6");
        let net = TrustedProxy::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.200.3.4")) && !net.contains(ip("11.0.0.1")));
        let all = TrustedProxy::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("8.8.8.8")) && !all.contains(ip("::1")));
        let v6 = TrustedProxy::parse("fd00::/8").unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!(TrustedProxy::parse("::/0").unwrap().contains(ip("::1")));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "host.example",
            "10.0.0.0/x",
            "1.2.3.4/",
        ] {
            assert_eq!(TrustedProxy::parse(bad), None, "{bad}");
        }
    }
}
