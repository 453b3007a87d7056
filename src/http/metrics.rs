//! `/metrics`: the Prometheus text format (0.0.4), or OpenMetrics when the scraper asks
//! for it (`Accept: application/openmetrics-text`), both written by the
//! `prometheus-client` crate from one [`Snapshot`] per scrape. Every name starts with
//! `midge_`; counters end in `_total`, units are suffixes (`_seconds`, `_bytes`).
//! docs/monitoring.md lists them all.

use std::fmt;
use std::sync::Arc;

use hyper::{Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::api::Snapshot;
use super::{off_the_workers, respond, text, Body};
use crate::broker::{Broker, QueueDepth};
use crate::metrics::{self as counts, Counter, DropReason, HistogramSnapshot};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The response to one scrape.
pub async fn serve(broker: Arc<Broker>, openmetrics: bool) -> Response<Body> {
    let rendered = off_the_workers(move || render(Snapshot::take(&broker), openmetrics)).await;
    match rendered {
        Ok(Ok(body)) => {
            let kind = if openmetrics {
                OPENMETRICS
            } else {
                PROMETHEUS_TEXT
            };
            respond(StatusCode::OK, kind, body)
        }
        Ok(Err(_)) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n"),
        Err(r) => r,
    }
}

fn render(snapshot: Snapshot, openmetrics: bool) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Collected(snapshot)));
    let mut out = String::new();
    if openmetrics {
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    }
    Ok(out)
}

/// One scrape's figures, encoded as metric families.
#[derive(Debug)]
struct Collected(Snapshot);

type Labels<'a> = &'a [(&'a str, &'a str)];

/// A metric family: its name without the unit and type suffixes, which the encoder adds
/// (`midge_uptime` + seconds = `midge_uptime_seconds`; a counter gets `_total`).
struct M(&'static str, &'static str, Option<Unit>);

const BUILD_INFO: M = M(
    "midge_build_info",
    "The running midge's version (always 1)",
    None,
);
const UPTIME: M = M(
    "midge_uptime",
    "Time since the broker started",
    Some(Unit::Seconds),
);
const LISTENER_CONNECTIONS: M = M(
    "midge_listener_connections",
    "Connections open on each MQTT listener",
    None,
);
const LISTENER_ACCEPTED: M = M(
    "midge_listener_connections_accepted",
    "Connections accepted by each MQTT listener",
    None,
);
const ACCEPTED: M = M(
    "midge_connections_accepted",
    "Connections accepted on all MQTT listeners",
    None,
);
const CONNECTED: M = M(
    "midge_clients_connected",
    "Clients connected (CONNECT accepted)",
    None,
);
const MAXIMUM: M = M(
    "midge_clients_maximum",
    "The most clients connected at once since start",
    None,
);
const PERSISTENT: M = M(
    "midge_persistent_sessions",
    "Persistent sessions with a connection (online) and without (offline)",
    None,
);
const EXPIRED: M = M(
    "midge_sessions_expired",
    "Offline sessions ended by their expiry",
    None,
);
const AUTH_FAILURES: M = M(
    "midge_auth_failures",
    "CONNECTs refused for a bad user name or password, or no certificate identity",
    None,
);
const RECEIVED: M = M(
    "midge_messages_received",
    "PUBLISH packets received from clients, by QoS",
    None,
);
const SENT: M = M(
    "midge_messages_sent",
    "PUBLISH packets sent to clients, by QoS",
    None,
);
const INTERNAL: M = M(
    "midge_messages_internal",
    "Messages no client sent (wills, $SYS)",
    None,
);
const PAYLOAD_RECEIVED: M = M(
    "midge_publish_payload_received",
    "Payload bytes of PUBLISH packets received",
    Some(Unit::Bytes),
);
const PAYLOAD_SENT: M = M(
    "midge_publish_payload_sent",
    "Payload bytes of PUBLISH packets sent",
    Some(Unit::Bytes),
);
const PACKETS_RECEIVED: M = M(
    "midge_packets_received",
    "MQTT packets of any type received",
    None,
);
const PACKETS_SENT: M = M("midge_packets_sent", "MQTT packets of any type sent", None);
const NETWORK_RECEIVED: M = M(
    "midge_network_received",
    "Bytes read from client connections (after TLS)",
    Some(Unit::Bytes),
);
const NETWORK_SENT: M = M(
    "midge_network_sent",
    "Bytes written to client connections (before TLS)",
    Some(Unit::Bytes),
);
const DROPPED: M = M(
    "midge_messages_dropped",
    "Messages not delivered to a subscriber, by reason",
    None,
);
const QUEUED: M = M(
    "midge_queued_messages",
    "Messages waiting in session queues, not yet sent",
    None,
);
const QUEUED_BYTES: M = M(
    "midge_queued",
    "Bytes of the messages waiting in session queues",
    Some(Unit::Bytes),
);
const INFLIGHT: M = M(
    "midge_inflight_messages",
    "Messages sent and not yet acknowledged by their subscriber",
    None,
);
const CLIENT_QUEUED: M = M(
    "midge_client_queued_messages",
    "Queued messages of the clients with the deepest queues (at most 10)",
    None,
);
const CLIENT_QUEUED_BYTES: M = M(
    "midge_client_queued",
    "Queued bytes of the clients with the deepest queues",
    Some(Unit::Bytes),
);
const CLIENT_INFLIGHT: M = M(
    "midge_client_inflight_messages",
    "Unacknowledged messages of the clients with the deepest queues",
    None,
);
const RETAINED: M = M("midge_retained_messages", "Retained messages", None);
const SUBSCRIPTIONS: M = M(
    "midge_subscriptions",
    "Subscriptions over all sessions",
    None,
);
const MEMORY_USED: M = M(
    "midge_memory_used",
    "Bytes held for messages, queues and sessions (what memory_limit counts)",
    Some(Unit::Bytes),
);
const MEMORY_LIMIT: M = M(
    "midge_memory_limit",
    "memory_limit in bytes (0 = none)",
    Some(Unit::Bytes),
);
const FSYNC: M = M(
    "midge_store_fsync",
    "Time each fsync of the store took",
    Some(Unit::Seconds),
);
const COMMIT_BYTES: M = M(
    "midge_store_commit",
    "Bytes written per commit (one write shared by every publisher waiting for it)",
    Some(Unit::Bytes),
);
const COMMITS: M = M("midge_store_commits", "Commits made durable", None);
const COMPACTIONS: M = M(
    "midge_store_compactions",
    "Compactions of the store's log",
    None,
);
const STORE_FAILURES: M = M(
    "midge_store_failures",
    "Failed writes or syncs of the store",
    None,
);
const DISK: M = M(
    "midge_store_disk",
    "Bytes in the store's segment files",
    Some(Unit::Bytes),
);
const SEGMENTS: M = M(
    "midge_store_segments",
    "Segment files of the store's log",
    None,
);
const SPOOL_BYTES: M = M(
    "midge_store_spool_bytes",
    "Bytes in spool files: queues of offline and backlogged persistent sessions on disk",
    None,
);
const SPOOL_FILES: M = M(
    "midge_store_spool_files",
    "Spool files (chunks of offline and backlogged queues)",
    None,
);
const FAILED: M = M(
    "midge_store_failed",
    "1 while the store refuses writes after a failure",
    None,
);

/// Writes one family after another; a family without samples is left out.
struct Families<'e, 'w> {
    e: &'e mut DescriptorEncoder<'w>,
}

impl Families<'_, '_> {
    fn counter(&mut self, m: &M, v: u64) -> fmt::Result {
        self.counters(m, &[(&[], v)])
    }

    fn counters(&mut self, m: &M, samples: &[(Labels<'_>, u64)]) -> fmt::Result {
        if samples.is_empty() {
            return Ok(());
        }
        let mut e = self
            .e
            .encode_descriptor(m.0, m.1, m.2.as_ref(), MetricType::Counter)?;
        for (labels, v) in samples {
            if labels.is_empty() {
                e.encode_counter::<NoLabelSet, _, u64>(v, None)?;
            } else {
                e.encode_family(labels)?
                    .encode_counter::<NoLabelSet, _, u64>(v, None)?;
            }
        }
        Ok(())
    }

    fn gauge<G: EncodeGaugeValue>(&mut self, m: &M, v: G) -> fmt::Result {
        self.gauges(m, &[(&[], v)])
    }

    fn gauges<G: EncodeGaugeValue>(&mut self, m: &M, samples: &[(Labels<'_>, G)]) -> fmt::Result {
        if samples.is_empty() {
            return Ok(());
        }
        let mut e = self
            .e
            .encode_descriptor(m.0, m.1, m.2.as_ref(), MetricType::Gauge)?;
        for (labels, v) in samples {
            if labels.is_empty() {
                e.encode_gauge(v)?;
            } else {
                e.encode_family(labels)?.encode_gauge(v)?;
            }
        }
        Ok(())
    }

    fn histogram(&mut self, m: &M, h: &HistogramSnapshot) -> fmt::Result {
        let mut e = self
            .e
            .encode_descriptor(m.0, m.1, m.2.as_ref(), MetricType::Histogram)?;
        e.encode_histogram::<NoLabelSet>(h.sum, h.count, &per_bucket(h), None)
    }
}

/// The encoder wants each bucket's own count (it sums them up) and the `+Inf` one last;
/// [`HistogramSnapshot`] holds them cumulative, without `+Inf`.
fn per_bucket(h: &HistogramSnapshot) -> Vec<(f64, u64)> {
    let mut below = 0;
    let mut out: Vec<(f64, u64)> = h
        .buckets
        .iter()
        .map(|&(bound, cumulative)| {
            let own = cumulative.saturating_sub(below);
            below = below.max(cumulative);
            (bound, own)
        })
        .collect();
    out.push((f64::INFINITY, h.count.saturating_sub(below)));
    out
}

/// `usize` figures as gauge values.
fn n(v: usize) -> u64 {
    v as u64
}

impl Collector for Collected {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let (s, o) = (&self.0, &self.0.overview);
        let mut f = Families { e: &mut encoder };
        f.gauges(
            &BUILD_INFO,
            &[(&[("version", env!("CARGO_PKG_VERSION"))], 1u64)],
        )?;
        f.gauge(&UPTIME, o.uptime.as_secs_f64())?;

        // Connections and sessions.
        let listeners: Vec<_> = s
            .listeners
            .iter()
            .map(|l| {
                (
                    [("listener", l.address.as_str()), ("protocol", l.protocol)],
                    l,
                )
            })
            .collect();
        let open: Vec<(Labels, u64)> = listeners
            .iter()
            .map(|(k, l)| (&k[..], n(l.connections)))
            .collect();
        f.gauges(&LISTENER_CONNECTIONS, &open)?;
        let accepted: Vec<(Labels, u64)> = listeners
            .iter()
            .map(|(k, l)| (&k[..], l.accepted))
            .collect();
        f.counters(&LISTENER_ACCEPTED, &accepted)?;
        f.counter(&ACCEPTED, s.count(Counter::ConnectionsAccepted))?;
        f.gauge(&CONNECTED, n(o.clients_connected))?;
        f.gauge(&MAXIMUM, n(o.clients_maximum))?;
        let online = n(o.persistent_online);
        let offline = n(o.persistent_offline);
        f.gauges(
            &PERSISTENT,
            &[
                (&[("state", "online")], online),
                (&[("state", "offline")], offline),
            ],
        )?;
        f.counter(&EXPIRED, s.count(Counter::SessionsExpired))?;
        f.counter(&AUTH_FAILURES, s.count(Counter::AuthFailures))?;

        // Messages.
        let by_qos = |v: [u64; 3]| {
            [
                (&[("qos", "0")][..], v[0]),
                (&[("qos", "1")][..], v[1]),
                (&[("qos", "2")][..], v[2]),
            ]
        };
        f.counters(&RECEIVED, &by_qos(s.received()))?;
        f.counters(&SENT, &by_qos(s.sent()))?;
        f.counter(&INTERNAL, s.count(Counter::PublishInternal))?;
        f.counter(&PAYLOAD_RECEIVED, s.count(Counter::PublishBytesReceived))?;
        f.counter(&PAYLOAD_SENT, s.count(Counter::PublishBytesSent))?;
        f.counter(&PACKETS_RECEIVED, s.count(Counter::PacketsReceived))?;
        f.counter(&PACKETS_SENT, s.count(Counter::PacketsSent))?;
        f.counter(&NETWORK_RECEIVED, s.count(Counter::BytesReceived))?;
        f.counter(&NETWORK_SENT, s.count(Counter::BytesSent))?;
        let drops: Vec<_> = counts::drops(&s.totals)
            .map(|(r, n)| ([("reason", DropReason::name(r))], n))
            .collect();
        let drops: Vec<(Labels, u64)> = drops.iter().map(|(k, n)| (&k[..], *n)).collect();
        f.counters(&DROPPED, &drops)?;

        // Queues, and the clients with the deepest.
        f.gauge(&QUEUED, n(o.queued))?;
        f.gauge(&QUEUED_BYTES, n(o.queued_bytes))?;
        f.gauge(&INFLIGHT, n(o.inflight))?;
        let top: Vec<_> = o
            .deepest
            .iter()
            .map(|d| ([("client_id", &*d.client_id)], d))
            .collect();
        let each = |v: fn(&QueueDepth) -> usize| -> Vec<(Labels, u64)> {
            top.iter().map(|(k, d)| (&k[..], n(v(d)))).collect()
        };
        f.gauges(&CLIENT_QUEUED, &each(|d| d.queued))?;
        f.gauges(&CLIENT_QUEUED_BYTES, &each(|d| d.queued_bytes))?;
        f.gauges(&CLIENT_INFLIGHT, &each(|d| d.inflight))?;
        f.gauge(&RETAINED, n(o.retained))?;
        f.gauge(&SUBSCRIPTIONS, n(o.subscriptions))?;
        f.gauge(&MEMORY_USED, n(o.memory_used))?;
        f.gauge(&MEMORY_LIMIT, n(s.memory_limit))?;

        // The durable store, when there is one.
        if let Some(st) = &s.store {
            f.histogram(&FSYNC, &st.fsync_seconds)?;
            f.histogram(&COMMIT_BYTES, &st.batch_bytes)?;
            f.counter(&COMMITS, st.commits)?;
            f.counter(&COMPACTIONS, st.compactions)?;
            f.counter(&STORE_FAILURES, st.failures)?;
            f.gauge(&DISK, st.bytes_on_disk)?;
            f.gauge(&SEGMENTS, n(st.segments))?;
            f.gauge(&SPOOL_BYTES, st.spool_bytes)?;
            f.gauge(&SPOOL_FILES, n(st.spool_files))?;
            f.gauge(&FAILED, u64::from(st.failed))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Overview;

    fn snapshot() -> Snapshot {
        Snapshot {
            overview: Overview {
                deepest: vec![QueueDepth {
                    client_id: "a \"quoted\"\nid".into(),
                    queued: 7,
                    queued_bytes: 70,
                    inflight: 1,
                    connected: false,
                }],
                ..Overview::default()
            },
            totals: [0; Counter::COUNT],
            listeners: Vec::new(),
            store: Some(crate::store::StoreStats {
                fsync_seconds: HistogramSnapshot {
                    buckets: vec![(0.001, 2), (0.01, 3)],
                    count: 4,
                    sum: 0.5,
                },
                ..Default::default()
            }),
            memory_limit: 0,
        }
    }

    #[test]
    fn both_formats_name_counters_total_and_escape_labels() {
        for openmetrics in [false, true] {
            let out = render(snapshot(), openmetrics).expect("encodes");
            assert!(
                out.contains("midge_messages_received_total{qos=\"1\"} 0"),
                "{out}"
            );
            assert!(
                out.contains("midge_client_queued_messages{client_id=\"a \\\"quoted\\\"\\nid\"} 7"),
                "{out}"
            );
            assert!(
                out.contains("midge_store_fsync_seconds_bucket{le=\"0.01\"} 3"),
                "{out}"
            );
            assert!(
                out.contains("midge_store_fsync_seconds_bucket{le=\"+Inf\"} 4"),
                "{out}"
            );
            assert_eq!(out.ends_with("# EOF\n"), openmetrics, "{out}");
        }
    }

    #[test]
    fn cumulative_buckets_become_each_buckets_own() {
        let h = HistogramSnapshot {
            buckets: vec![(1.0, 2), (2.0, 2), (4.0, 5)],
            count: 6,
            sum: 9.0,
        };
        assert_eq!(
            per_bucket(&h),
            vec![(1.0, 2), (2.0, 0), (4.0, 3), (f64::INFINITY, 1)]
        );
    }
}
