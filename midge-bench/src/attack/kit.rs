//! Building blocks of the attacks: connect and expect acceptance, publish many messages
//! with a bounded window, subscribe, and wait for a broker to catch up.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::raw::{describe, Raw, Read, DISCONNECT, PUBACK, SUBACK};
use super::Target;
use crate::proto::{self, prop, ConnectFields, Version};

pub const WAIT: Duration = Duration::from_secs(10);

/// Connects with CONNACK 0 required. `expiry`: 3.1.1 clean session 0 / 5.0 Session
/// Expiry Interval (seconds), `None` for a clean session.
pub async fn session(
    addr: SocketAddr,
    v: Version,
    id: &str,
    expiry: Option<u32>,
    extra_props: &[u8],
) -> Result<Raw, String> {
    let mut props = extra_props.to_vec();
    if let Some(e) = expiry {
        prop::u32(&mut props, prop::SESSION_EXPIRY, e);
    }
    let f = ConnectFields {
        client_id: id.as_bytes(),
        clean: expiry.is_none(),
        keep_alive: 120,
        props: &props,
        ..Default::default()
    };
    let (c, code) = Raw::connect(addr, v, &f, WAIT).await?;
    if code != 0 {
        return Err(format!("CONNACK {code:#04x} for {}", short(id)));
    }
    Ok(c)
}

pub async fn client(addr: SocketAddr, v: Version, id: &str) -> Result<Raw, String> {
    session(addr, v, id, None, &[]).await
}

/// Subscribes to `filters` in one SUBSCRIBE; the SUBACK's codes.
pub async fn subscribe(c: &mut Raw, filters: &[&str], qos: u8) -> Result<Vec<u8>, String> {
    let list: Vec<(&[u8], u8)> = filters.iter().map(|f| (f.as_bytes(), qos)).collect();
    let mut b = Vec::new();
    proto::subscribe_with(&mut b, c.v, 1, &[], &list);
    c.send(&b).await?;
    let until = Instant::now() + WAIT;
    loop {
        match c.read_until(until).await {
            Read::Got(p) if p.kind() == SUBACK => {
                return Ok(super::raw::suback_codes(&p, c.v).to_vec())
            }
            Read::Got(_) => {}
            other => return Err(format!("no SUBACK: {}", describe(&other))),
        }
    }
}

/// DISCONNECT (normal) and close.
pub async fn leave(mut c: Raw) {
    let mut b = Vec::new();
    proto::disconnect(&mut b);
    let _ = c.send(&b).await;
    let _ = c.drain(Duration::from_millis(500)).await;
}

#[derive(Debug, Default)]
pub struct Piped {
    pub sent: usize,
    pub acked: usize,
    /// Why it stopped before every message was acknowledged.
    pub stopped: Option<String>,
}

impl Piped {
    pub fn summary(&self, n: usize) -> String {
        let mut s = format!("{}/{n} PUBACKed", self.acked);
        if let Some(e) = &self.stopped {
            s.push_str(&format!(" ({e})"));
        }
        s
    }
}

/// Sends `n` QoS 1 PUBLISHes built by `make(i, pkid, buf)`, at most `window`
/// unacknowledged, until all are acknowledged or `until`.
pub async fn pipeline(
    c: &mut Raw,
    n: usize,
    window: usize,
    until: Instant,
    mut make: impl FnMut(usize, u16, &mut Vec<u8>),
) -> Piped {
    let mut r = Piped::default();
    let mut buf = Vec::new();
    while r.acked < n {
        if r.sent < n && r.sent - r.acked < window {
            buf.clear();
            make(r.sent, (r.sent % 65_535 + 1) as u16, &mut buf);
            if let Err(e) = c.send_by(&buf, until).await {
                r.stopped = Some(format!("write: {e}"));
                return r;
            }
            r.sent += 1;
            continue;
        }
        match c.read_until(until).await {
            Read::Got(p) if p.kind() == PUBACK => {
                r.acked += 1;
                // 5.0: a reason code >= 0x80 refuses the message.
                if p.body.get(2).is_some_and(|&rc| rc >= 0x80) {
                    r.stopped
                        .get_or_insert(format!("PUBACK {:#04x}", p.body[2]));
                }
            }
            Read::Got(p) if p.kind() == DISCONNECT => {
                r.stopped = Some(format!(
                    "DISCONNECT {:#04x}",
                    p.body.first().copied().unwrap_or(0)
                ));
                return r;
            }
            Read::Got(_) => {}
            Read::Timeout => {
                r.stopped = Some("time limit".into());
                return r;
            }
            other => {
                r.stopped = Some(describe(&other));
                return r;
            }
        }
    }
    r
}

/// One client's QoS 1 flood: connects `id` to `t` (clean session), sends `n` QoS 1
/// PUBLISHes built by `make(i, pkid, buf)` through [`pipeline`] (at most `window`
/// unacknowledged, until the attack's time limit), then leaves.
pub async fn flood1(
    t: &Target,
    v: Version,
    id: &str,
    n: usize,
    window: usize,
    make: impl FnMut(usize, u16, &mut Vec<u8>),
) -> Result<Piped, String> {
    let mut c = client(t.addr, v, id).await?;
    let p = pipeline(&mut c, n, window, t.until, make).await;
    leave(c).await;
    Ok(p)
}

/// Sends QoS 0 packets built by `make(i, buf)`, then a QoS 1 PUBLISH, and waits for its
/// PUBACK: the broker has read everything before. How many were sent, and the outcome.
pub async fn flood0(
    c: &mut Raw,
    n: usize,
    until: Instant,
    mut make: impl FnMut(usize, &mut Vec<u8>),
) -> (usize, String) {
    let mut buf = Vec::new();
    let mut sent = 0;
    for i in 0..n {
        // Batch writes: fewer syscalls for many small packets.
        make(i, &mut buf);
        if buf.len() >= 64 * 1024 || i + 1 == n {
            if let Err(e) = c.send_by(&buf, until).await {
                return (sent, format!("write: {e}"));
            }
            buf.clear();
        }
        sent = i + 1;
    }
    let v = c.v;
    let p = pipeline(c, 1, 1, until, |_, id, b| {
        proto::publish_with(b, v, b"midge-bench/sync", 1, false, id, &[], b"s")
    })
    .await;
    let outcome = match (p.acked, p.stopped) {
        (1, None) => "all read (sync PUBACKed)".to_string(),
        (_, Some(e)) => e,
        _ => "?".into(),
    };
    (sent, outcome)
}

/// An attacker-chosen string cut for the table.
pub fn short(s: &str) -> String {
    if s.len() <= 24 {
        s.to_string()
    } else {
        format!("{}...({} bytes)", &s[..12], s.len())
    }
}

/// "0x00 x3" / "0x80 x2, 0x01 x1": SUBACK / CONNACK code counts.
pub fn codes(list: &[u8]) -> String {
    let mut seen: Vec<(u8, usize)> = Vec::new();
    for &c in list {
        match seen.iter_mut().find(|e| e.0 == c) {
            Some(e) => e.1 += 1,
            None => seen.push((c, 1)),
        }
    }
    seen.iter()
        .map(|(c, n)| format!("{c:#04x} x{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
