//! The `$SYS` publisher: every `sys_interval` seconds one task reads the broker's figures
//! (the event counters of [`crate::metrics`], [`Broker::overview`], the store's health)
//! and publishes those that changed under `$SYS/broker/...` with Mosquitto's topic names
//! and value formats, so that dashboards made for Mosquitto (mosquitto-exporter, Home
//! Assistant) read midge unchanged. docs/monitoring.md lists every topic.
//!
//! An internal publisher as docs/DESIGN.md describes one: it builds messages and hands
//! them to [`Broker::publish_internal`], like a will. They are QoS 0 and retained (as
//! Mosquitto's are): since an unchanged value is not published again, a new subscriber
//! gets every current value from the retained store at once. The broker does not write
//! `$SYS` retained messages to the durable store (they describe this process only), nor
//! count them among the retained messages it reports. Who may read them is the ACL's
//! business (a `#` subscription never matches `$SYS` [MQTT-4.7.2-1]); no client can
//! write them (`auth::is_sys`).
//!
//! The reading walks the sessions one lock at a time (see `broker/observe.rs`), a few
//! milliseconds for a hundred thousand sessions, once per interval.

mod load;
mod tree;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::codec::QoS;
use crate::message::Message;
use crate::metrics;
use tree::{Snapshot, SysTree};

/// Publishes the `$SYS` topics every `sys_interval` seconds (the first time at once) until
/// `shutdown`; returns at once when `sys_interval` is 0.
pub async fn run(broker: Arc<Broker>, shutdown: CancellationToken) {
    let seconds = broker.config().sys_interval;
    if seconds == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(seconds));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tree = SysTree::default();
    let mut last = Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        let snapshot = Snapshot {
            totals: metrics::totals(),
            overview: broker.overview(1),
            store: broker.store_stats(),
        };
        for (topic, value) in tree.update(&snapshot, now.duration_since(last)) {
            let msg = Message::with_props(topic, Bytes::from(value), QoS::AtMostOnce, true, None);
            broker.publish_internal(&Arc::new(msg));
        }
        last = now;
    }
}
