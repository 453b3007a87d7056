//! The JSON endpoints.
//!
//! * `/api/v1/systree` and `/api/v1/listeners`: the shapes of Mosquitto 2.1's HTTP API (a
//!   flat object of `$SYS` topics to integers; `{"listeners": [...]}` with `port`,
//!   `protocol`, `tls`, `mtls`, `allow_anonymous`), with midge's own fields added to the
//!   listeners.
//! * `/api/v1/clients?after=<client id>&limit=N`: midge's paged client list.
//! * `/api/v1/overview`: everything the status page shows, in one request.
//!
//! docs/monitoring.md has every field.

use std::net::IpAddr;

use hyper::{Response, StatusCode};
use serde_json::{json, Map, Value};

use super::{off_the_workers, respond, text, Body, Ctx};
use crate::broker::{Broker, ClientInfo, ClientPage, Overview, QueueDepth};
use crate::metrics::{self, Counter, DropReason, ListenerSnapshot};
use crate::store::StoreStats;

/// Clients in the deepest-queues lists of `/metrics` and the overview.
pub const DEEPEST: usize = 10;
/// `/api/v1/clients`: page size by default and at most.
pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;

/// Everything `/metrics` and the overview read, taken at once.
#[derive(Debug)]
pub struct Snapshot {
    pub overview: Overview,
    pub totals: [u64; Counter::COUNT],
    /// The listeners the server registered, with their connection counts.
    pub listeners: Vec<ListenerSnapshot>,
    pub store: Option<StoreStats>,
    /// `memory_limit` in bytes; 0 = none.
    pub memory_limit: usize,
}

impl Snapshot {
    /// Walks the sessions: call it off the async workers ([`off_the_workers`]).
    pub fn take(broker: &Broker) -> Snapshot {
        Snapshot {
            overview: broker.overview(DEEPEST),
            totals: metrics::totals(),
            listeners: metrics::listeners(),
            store: broker.store_stats(),
            memory_limit: broker.config().memory_limit(),
        }
    }

    pub fn count(&self, c: Counter) -> u64 {
        self.totals[c as usize]
    }

    /// PUBLISH packets received and sent, QoS 0, 1, 2.
    pub fn received(&self) -> [u64; 3] {
        metrics::publish_received(&self.totals)
    }

    pub fn sent(&self) -> [u64; 3] {
        metrics::publish_sent(&self.totals)
    }

    pub fn dropped(&self) -> u64 {
        metrics::dropped_total(&self.totals)
    }
}

fn json_response(value: &Value) -> Response<Body> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => respond(StatusCode::OK, "application/json", body),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n"),
    }
}

async fn snapshot(ctx: &Ctx) -> Result<Snapshot, Response<Body>> {
    let broker = ctx.broker.clone();
    off_the_workers(move || Snapshot::take(&broker)).await
}

/// `/api/v1/systree`: Mosquitto's `$SYS/broker/...` figures by topic, integers only.
pub async fn systree(ctx: &Ctx) -> Response<Body> {
    match snapshot(ctx).await {
        Ok(s) => json_response(&Value::Object(systree_of(&s))),
        Err(r) => r,
    }
}

fn systree_of(s: &Snapshot) -> Map<String, Value> {
    let o = &s.overview;
    let total = (o.clients_connected + o.persistent_offline) as u64;
    let stored = (o.queued + o.inflight) as u64;
    let sum = |v: [u64; 3]| v.iter().sum::<u64>();
    let entries: [(&str, u64); 24] = [
        ("clients/total", total),
        ("clients/maximum", o.clients_maximum as u64),
        ("clients/connected", o.clients_connected as u64),
        ("clients/active", o.clients_connected as u64),
        ("clients/disconnected", o.persistent_offline as u64),
        ("clients/inactive", o.persistent_offline as u64),
        ("clients/expired", s.count(Counter::SessionsExpired)),
        ("messages/stored", stored),
        ("store/messages/count", stored),
        ("store/messages/bytes", o.queued_bytes as u64),
        ("subscriptions/count", o.subscriptions as u64),
        ("retained messages/count", o.retained as u64),
        ("heap/current", o.memory_used as u64),
        ("messages/received", s.count(Counter::PacketsReceived)),
        ("messages/sent", s.count(Counter::PacketsSent)),
        ("bytes/received", s.count(Counter::BytesReceived)),
        ("bytes/sent", s.count(Counter::BytesSent)),
        (
            "publish/bytes/received",
            s.count(Counter::PublishBytesReceived),
        ),
        ("publish/bytes/sent", s.count(Counter::PublishBytesSent)),
        (
            "connections/socket/count",
            s.count(Counter::ConnectionsAccepted),
        ),
        ("publish/messages/dropped", s.dropped()),
        ("publish/messages/received", sum(s.received())),
        ("publish/messages/sent", sum(s.sent())),
        ("uptime", o.uptime.as_secs()),
    ];
    entries
        .into_iter()
        .map(|(topic, n)| (format!("$SYS/broker/{topic}"), Value::from(n)))
        .collect()
}

/// `/api/v1/listeners`: the MQTT listeners and this one, as configured, with the
/// connections of each the server has registered.
pub fn listeners(ctx: &Ctx) -> Response<Body> {
    json_response(&json!({ "listeners": listeners_of(ctx, &metrics::listeners()) }))
}

fn listeners_of(ctx: &Ctx, live: &[ListenerSnapshot]) -> Vec<Value> {
    let config = ctx.broker.config();
    let mut out: Vec<Value> = config
        .listeners
        .iter()
        .map(|l| {
            let stats = registered(live, l.bind, l.port);
            let protocol = if l.is_websockets() {
                "websockets"
            } else {
                "mqtt"
            };
            let mut listener = json!({
                "port": l.port,
                "protocol": protocol,
                "tls": l.is_tls(),
                "mtls": l.require_certificate,
                "allow_anonymous": l.allows_anonymous(config.allow_anonymous),
                "bind": l.bind.to_string(),
                "connections": stats.map(|s| s.connections),
                "accepted": stats.map(|s| s.accepted),
            });
            if l.is_websockets() {
                listener["websockets_path"] = json!(l.websockets_path);
            }
            listener
        })
        .collect();
    out.push(json!({
        "port": ctx.local.port(),
        "protocol": "httpapi",
        "tls": ctx.tls,
        "mtls": false,
        "allow_anonymous": ctx.access.is_open(),
        "bind": ctx.local.ip().to_string(),
        "connections": Value::Null,
        "accepted": Value::Null,
    }));
    out
}

/// The registered listener at `bind:port` (written either as `1.2.3.4:1883` or, for
/// IPv6, `[::]:1883` or `:::1883`).
fn registered(live: &[ListenerSnapshot], bind: IpAddr, port: u16) -> Option<&ListenerSnapshot> {
    let socket = std::net::SocketAddr::new(bind, port).to_string();
    let plain = format!("{bind}:{port}");
    live.iter()
        .find(|s| s.address == socket || s.address == plain)
}

/// `/api/v1/overview`: the status page's one request.
pub async fn overview(ctx: &Ctx) -> Response<Body> {
    let s = match snapshot(ctx).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let o = &s.overview;
    let qos = |v: [u64; 3]| json!({"qos0": v[0], "qos1": v[1], "qos2": v[2], "total": v.iter().sum::<u64>()});
    let by_reason: Map<String, Value> = metrics::drops(&s.totals)
        .map(|(r, n)| (DropReason::name(r).to_owned(), Value::from(n)))
        .collect();
    let value = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": o.uptime.as_secs(),
        "clients": {
            "connected": o.clients_connected,
            "maximum": o.clients_maximum,
            "total": o.clients_connected + o.persistent_offline,
            "persistent_online": o.persistent_online,
            "persistent_offline": o.persistent_offline,
            "expired": s.count(Counter::SessionsExpired),
        },
        "connections_accepted": s.count(Counter::ConnectionsAccepted),
        "auth_failures": s.count(Counter::AuthFailures),
        "messages": {
            "received": qos(s.received()),
            "sent": qos(s.sent()),
            "internal": s.count(Counter::PublishInternal),
            "dropped": { "total": s.dropped(), "by_reason": by_reason },
        },
        "bytes": {
            "received": s.count(Counter::BytesReceived),
            "sent": s.count(Counter::BytesSent),
            "publish_received": s.count(Counter::PublishBytesReceived),
            "publish_sent": s.count(Counter::PublishBytesSent),
        },
        "packets": {
            "received": s.count(Counter::PacketsReceived),
            "sent": s.count(Counter::PacketsSent),
        },
        "subscriptions": o.subscriptions,
        "retained": o.retained,
        "queued": { "messages": o.queued, "bytes": o.queued_bytes },
        "inflight": o.inflight,
        "memory": { "used": o.memory_used, "limit": s.memory_limit },
        "listeners": listeners_of(ctx, &s.listeners),
        "deepest": o.deepest.iter().map(depth_json).collect::<Vec<_>>(),
        "persistence": ctx.broker.config().persistence.enabled,
        "store": s.store.as_ref().map(store_json),
    });
    json_response(&value)
}

fn depth_json(d: &QueueDepth) -> Value {
    json!({
        "client_id": &*d.client_id,
        "queued": d.queued,
        "queued_bytes": d.queued_bytes,
        "inflight": d.inflight,
        "connected": d.connected,
    })
}

fn store_json(st: &StoreStats) -> Value {
    json!({
        "bytes_on_disk": st.bytes_on_disk,
        "segments": st.segments,
        "spool_bytes": st.spool_bytes,
        "spool_files": st.spool_files,
        "commits": st.commits,
        "compactions": st.compactions,
        "failures": st.failures,
        "failed": st.failed,
        "fsync": { "count": st.fsync_seconds.count, "sum_seconds": st.fsync_seconds.sum },
        "batches": { "count": st.batch_bytes.count, "sum_bytes": st.batch_bytes.sum },
    })
}

/// `/api/v1/clients?after=<client id>&limit=N`.
pub async fn clients(ctx: &Ctx, query: &str) -> Response<Body> {
    let (after, limit) = match page_query(query) {
        Ok(q) => q,
        Err(why) => return respond(StatusCode::BAD_REQUEST, "text/plain; charset=utf-8", why),
    };
    let broker = ctx.broker.clone();
    let read = move || -> ClientPage { broker.clients(after.as_deref(), limit) };
    let page = match off_the_workers(read).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    json_response(&json!({
        "total": page.total,
        "next": page.next.as_deref(),
        "clients": page.clients.iter().map(client_json).collect::<Vec<_>>(),
    }))
}

fn client_json(c: &ClientInfo) -> Value {
    json!({
        "client_id": &*c.client_id,
        "username": c.username.as_deref(),
        "address": c.address.map(|a| a.to_string()),
        "protocol": c.protocol.map(protocol_name),
        "keep_alive": c.keep_alive,
        "connected": c.connected,
        "clean": c.clean,
        "subscriptions": c.subscriptions,
        "queued": c.queued,
        "queued_bytes": c.queued_bytes,
        "inflight": c.inflight,
        "dropped": c.dropped,
    })
}

/// MQTT's protocol level as people write it.
fn protocol_name(level: u8) -> String {
    match level {
        3 => "3.1".to_owned(),
        4 => "3.1.1".to_owned(),
        5 => "5.0".to_owned(),
        other => format!("level {other}"),
    }
}

/// `after` (percent-decoded) and `limit` (1..; above [`MAX_PAGE`] counts as it).
fn page_query(query: &str) -> Result<(Option<String>, usize), String> {
    let mut after = None;
    let mut limit = DEFAULT_PAGE;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value =
            percent_decode(value).ok_or_else(|| format!("{key}: bad percent-encoding\n"))?;
        match key {
            "after" => after = Some(value),
            "limit" => {
                limit = match value.parse::<usize>() {
                    Ok(0) | Err(_) => {
                        return Err(format!("limit = {value:?}: expected 1..={MAX_PAGE}\n"))
                    }
                    Ok(n) => n.min(MAX_PAGE),
                }
            }
            _ => {}
        }
    }
    Ok((after, limit))
}

/// `%XX` escapes and `+` for a space (as forms send them); `None` if not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                let hex = std::str::from_utf8(&hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_queries_are_read_and_bounded() {
        assert_eq!(page_query(""), Ok((None, DEFAULT_PAGE)));
        assert_eq!(
            page_query("after=a%2Fb+c&limit=7"),
            Ok((Some("a/b c".to_owned()), 7))
        );
        assert_eq!(page_query("limit=5000"), Ok((None, MAX_PAGE)));
        assert!(page_query("limit=0").is_err());
        assert!(page_query("limit=-1").is_err());
        assert!(page_query("after=%zz").is_err());
        assert!(page_query("after=%ff").is_err(), "not UTF-8");
        assert_eq!(
            page_query("x=1&after=").map(|q| q.0),
            Ok(Some(String::new()))
        );
    }

    #[test]
    fn systree_has_mosquittos_topics() {
        let s = Snapshot {
            overview: Overview {
                clients_connected: 2,
                persistent_offline: 1,
                queued: 4,
                inflight: 1,
                ..Overview::default()
            },
            totals: [0; Counter::COUNT],
            listeners: Vec::new(),
            store: None,
            memory_limit: 0,
        };
        let tree = systree_of(&s);
        assert_eq!(tree["$SYS/broker/clients/total"], 3);
        assert_eq!(tree["$SYS/broker/clients/disconnected"], 1);
        assert_eq!(tree["$SYS/broker/messages/stored"], 5);
        assert!(tree.contains_key("$SYS/broker/uptime"));
        assert!(tree.keys().all(|k| k.starts_with("$SYS/broker/")));
    }
}
