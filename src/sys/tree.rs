//! The `$SYS/broker/...` values, worked out from one [`Snapshot`] of the broker, and the
//! change detection that publishes only what changed since the last update (everything
//! the first time), as Mosquitto does.

use std::collections::HashMap;
use std::time::Duration;

use super::load::{Load, WINDOWS};
use crate::broker::Overview;
use crate::metrics::{self, Counter, HistogramSnapshot};
use crate::store::StoreStats;

/// Every topic starts with this.
pub const PREFIX: &str = "$SYS/broker/";

/// What one update reads from the broker.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Every event counter ([`metrics::totals`]).
    pub totals: [u64; Counter::COUNT],
    /// With the uptime, and the deepest queue (`top` 1).
    pub overview: Overview,
    /// `None` without a durable store: no `store/...` topics then.
    pub store: Option<StoreStats>,
}

impl Snapshot {
    fn total(&self, c: Counter) -> u64 {
        self.totals[c as usize]
    }

    fn publish_received(&self) -> u64 {
        metrics::publish_received(&self.totals).iter().sum()
    }

    fn publish_sent(&self) -> u64 {
        metrics::publish_sent(&self.totals).iter().sum()
    }

    fn dropped(&self) -> u64 {
        metrics::dropped_total(&self.totals)
    }
}

/// The counts the load averages follow, with their topic under `load/` (Mosquitto's).
const LOADS: [&str; 9] = [
    "messages/received",
    "messages/sent",
    "publish/dropped",
    "publish/received",
    "publish/sent",
    "bytes/received",
    "bytes/sent",
    "sockets",
    "connections",
];

fn load_counts(s: &Snapshot) -> [u64; 9] {
    [
        s.total(Counter::PacketsReceived),
        s.total(Counter::PacketsSent),
        s.dropped(),
        s.publish_received(),
        s.publish_sent(),
        s.total(Counter::BytesReceived),
        s.total(Counter::BytesSent),
        s.total(Counter::ConnectionsAccepted),
        s.total(Counter::Connects),
    ]
}

/// What the publisher remembers between updates.
#[derive(Debug, Default)]
pub struct SysTree {
    /// The value last published on each topic (without the prefix).
    last: HashMap<String, String>,
    loads: [Load; 9],
    /// The counts the loads followed at the last update; `None` before the first.
    counts: Option<[u64; 9]>,
    /// The fsync histogram at the last update, for the average over one interval.
    fsync: HistogramSnapshot,
    fsync_average: f64,
}

impl SysTree {
    /// The topics (full names) and values to publish for `snap`, taken `elapsed` after
    /// the last update: every one the first time, then those whose value changed.
    pub fn update(&mut self, snap: &Snapshot, elapsed: Duration) -> Vec<(String, String)> {
        let counts = load_counts(snap);
        if let Some(before) = self.counts {
            let seconds = elapsed.as_secs_f64();
            for ((load, now), then) in self.loads.iter_mut().zip(counts).zip(before) {
                load.update(now.saturating_sub(then), seconds);
            }
        }
        self.counts = Some(counts);
        if let Some(store) = &snap.store {
            let count = store.fsync_seconds.count.saturating_sub(self.fsync.count);
            if count > 0 {
                self.fsync_average = (store.fsync_seconds.sum - self.fsync.sum) / count as f64;
            }
            self.fsync = store.fsync_seconds.clone();
        }
        let mut changed = Vec::new();
        for (topic, value) in self.values(snap) {
            if self.last.get(&topic) != Some(&value) {
                self.last.insert(topic.clone(), value.clone());
                changed.push((format!("{PREFIX}{topic}"), value));
            }
        }
        changed
    }

    /// Every topic (without the prefix) and its value now.
    fn values(&self, s: &Snapshot) -> Vec<(String, String)> {
        let o = &s.overview;
        let mut v: Vec<(String, String)> = Vec::with_capacity(96);
        let mut put = |topic: &str, value: String| v.push((topic.to_owned(), value));
        put(
            "version",
            format!("midge version {}", env!("CARGO_PKG_VERSION")),
        );
        put("uptime", format!("{} seconds", o.uptime.as_secs()));

        put("clients/connected", o.clients_connected.to_string());
        put("clients/active", o.clients_connected.to_string());
        put("clients/disconnected", o.persistent_offline.to_string());
        put("clients/inactive", o.persistent_offline.to_string());
        put(
            "clients/total",
            (o.clients_connected + o.persistent_offline).to_string(),
        );
        put("clients/maximum", o.clients_maximum.to_string());
        put(
            "clients/expired",
            s.total(Counter::SessionsExpired).to_string(),
        );

        put(
            "messages/received",
            s.total(Counter::PacketsReceived).to_string(),
        );
        put("messages/sent", s.total(Counter::PacketsSent).to_string());
        let stored = (o.retained + o.queued + o.inflight).to_string();
        put("messages/stored", stored.clone());
        put("store/messages/count", stored);
        put("messages/inflight", o.inflight.to_string());

        put(
            "publish/messages/received",
            s.publish_received().to_string(),
        );
        put("publish/messages/sent", s.publish_sent().to_string());
        put("publish/messages/dropped", s.dropped().to_string());
        for (reason, n) in metrics::drops(&s.totals) {
            put(
                &format!("publish/messages/dropped/{}", reason.name()),
                n.to_string(),
            );
        }
        put(
            "publish/bytes/received",
            s.total(Counter::PublishBytesReceived).to_string(),
        );
        put(
            "publish/bytes/sent",
            s.total(Counter::PublishBytesSent).to_string(),
        );
        put(
            "bytes/received",
            s.total(Counter::BytesReceived).to_string(),
        );
        put("bytes/sent", s.total(Counter::BytesSent).to_string());

        put("subscriptions/count", o.subscriptions.to_string());
        put("retained messages/count", o.retained.to_string());
        put("heap/current", o.memory_used.to_string());

        for (name, load) in LOADS.iter().zip(&self.loads) {
            for (avg, (_, window)) in load.averages.iter().zip(WINDOWS) {
                put(&format!("load/{name}/{window}"), Load::text(*avg));
            }
        }

        put("queues/depth", o.queued.to_string());
        put("queues/bytes", o.queued_bytes.to_string());
        let deepest = o.deepest.first();
        // An empty retained payload clears the topic: no client when no queue holds any.
        put(
            "queues/deepest/client",
            deepest.map_or(String::new(), |d| d.client_id.to_string()),
        );
        put(
            "queues/deepest/depth",
            deepest.map_or(0, |d| d.queued + d.inflight).to_string(),
        );

        if let Some(st) = &s.store {
            put("store/bytes", st.bytes_on_disk.to_string());
            put("store/segments", st.segments.to_string());
            put("store/spool/bytes", st.spool_bytes.to_string());
            put("store/spool/files", st.spool_files.to_string());
            put("store/commits", st.commits.to_string());
            put("store/fsync/count", st.fsync_seconds.count.to_string());
            put("store/fsync/average", format!("{:.6}", self.fsync_average));
            put("store/compactions", st.compactions.to_string());
            put("store/failures", st.failures.to_string());
            put("store/failed", u8::from(st.failed).to_string());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::QueueDepth;
    use crate::metrics::DropReason;
    use std::sync::Arc;

    const TEN: Duration = Duration::from_secs(10);

    fn value<'a>(published: &'a [(String, String)], topic: &str) -> Option<&'a str> {
        published
            .iter()
            .find(|(t, _)| t == &format!("{PREFIX}{topic}"))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn everything_is_published_the_first_time_then_only_what_changed() {
        let mut tree = SysTree::default();
        let mut snap = Snapshot::default();
        snap.overview.uptime = Duration::from_secs(1);
        let first = tree.update(&snap, Duration::ZERO);
        assert_eq!(
            value(&first, "version"),
            Some(format!("midge version {}", env!("CARGO_PKG_VERSION")).as_str())
        );
        assert_eq!(value(&first, "uptime"), Some("1 seconds"));
        assert_eq!(value(&first, "clients/connected"), Some("0"));
        assert_eq!(value(&first, "load/messages/received/1min"), Some("0.00"));
        assert_eq!(value(&first, "queues/deepest/client"), Some(""));
        assert_eq!(
            value(&first, "publish/messages/dropped/queue_full_drop_new"),
            Some("0")
        );
        // No durable store, no store topics.
        assert_eq!(value(&first, "store/bytes"), None);

        // Nothing happened but time: only the uptime is new.
        snap.overview.uptime = Duration::from_secs(11);
        let second = tree.update(&snap, TEN);
        assert_eq!(
            second,
            vec![(format!("{PREFIX}uptime"), "11 seconds".into())]
        );

        // A client connects and publishes: its figures change, the version does not.
        snap.overview.uptime = Duration::from_secs(21);
        snap.overview.clients_connected = 1;
        snap.overview.clients_maximum = 1;
        snap.totals[Counter::PublishReceivedQos1 as usize] = 3;
        snap.totals[Counter::PublishReceivedQos0 as usize] = 2;
        let third = tree.update(&snap, TEN);
        assert_eq!(value(&third, "version"), None);
        assert_eq!(value(&third, "clients/connected"), Some("1"));
        assert_eq!(value(&third, "clients/total"), Some("1"));
        assert_eq!(value(&third, "publish/messages/received"), Some("5"));
        // 5 in 10 s: 30 per minute, of which the 1-minute average took 1 - e^(-1/6).
        let one = 30.0 * (1.0 - (-1.0f64 / 6.0).exp());
        assert_eq!(
            value(&third, "load/publish/received/1min"),
            Some(Load::text(one).as_str())
        );
        assert_eq!(value(&third, "publish/messages/sent"), None);
    }

    #[test]
    fn drops_are_published_in_total_and_by_reason() {
        let mut tree = SysTree::default();
        let mut snap = Snapshot::default();
        tree.update(&snap, Duration::ZERO);
        snap.totals[Counter::dropped(DropReason::QueueFullNew) as usize] = 7;
        snap.totals[Counter::dropped(DropReason::Expired) as usize] = 2;
        let got = tree.update(&snap, TEN);
        assert_eq!(value(&got, "publish/messages/dropped"), Some("9"));
        assert_eq!(
            value(&got, "publish/messages/dropped/queue_full_drop_new"),
            Some("7")
        );
        assert_eq!(
            value(&got, "publish/messages/dropped/message_expired"),
            Some("2")
        );
        assert_eq!(value(&got, "load/publish/dropped/1min"), Some("8.29"));
    }

    #[test]
    fn the_deepest_queue_and_the_store_are_published_while_they_exist() {
        let mut tree = SysTree::default();
        let mut snap = Snapshot::default();
        snap.overview.queued = 5;
        snap.overview.deepest = vec![QueueDepth {
            client_id: Arc::from("slow"),
            queued: 5,
            queued_bytes: 500,
            inflight: 2,
            connected: false,
        }];
        snap.store = Some(StoreStats {
            bytes_on_disk: 4096,
            segments: 1,
            ..StoreStats::default()
        });
        let got = tree.update(&snap, Duration::ZERO);
        assert_eq!(value(&got, "queues/depth"), Some("5"));
        assert_eq!(value(&got, "queues/deepest/client"), Some("slow"));
        assert_eq!(value(&got, "queues/deepest/depth"), Some("7"));
        assert_eq!(value(&got, "store/bytes"), Some("4096"));
        assert_eq!(value(&got, "store/failed"), Some("0"));
        assert_eq!(value(&got, "store/fsync/average"), Some("0.000000"));

        // The queue drains: the client topic is cleared (an empty retained payload).
        snap.overview.queued = 0;
        snap.overview.deepest.clear();
        let mut store = snap.store.take().unwrap_or_default();
        store.fsync_seconds.count = 4;
        store.fsync_seconds.sum = 0.002;
        snap.store = Some(store);
        let got = tree.update(&snap, TEN);
        assert_eq!(value(&got, "queues/deepest/client"), Some(""));
        assert_eq!(value(&got, "queues/deepest/depth"), Some("0"));
        assert_eq!(value(&got, "store/fsync/count"), Some("4"));
        assert_eq!(value(&got, "store/fsync/average"), Some("0.000500"));

        // No fsync in the next interval: the average stays what it was (not republished).
        let got = tree.update(&snap, TEN);
        assert_eq!(value(&got, "store/fsync/average"), None);
    }
}
