//! What the broker counts for operators: `$SYS`, `/metrics`, the HTTP API and the
//! status page all read it. A leaf: it imports nothing of the crate, so every layer may
//! count into it.
//!
//! Three kinds of figures:
//! * events ([`Counter`], through [`add`]): cheap from any thread, summed when read;
//! * distributions ([`Histogram`]): fixed buckets, for the store's fsync latency and
//!   batch sizes;
//! * per-listener connection gauges ([`ListenerStats`], registered by the server).
//!
//! What is a state rather than an event (clients connected, queue depth, retained count)
//! is not counted here but read from where it lives when asked: see `Broker::overview`.

mod counters;
mod histogram;
mod listeners;

pub use counters::{add, add_each, totals};
pub use histogram::{Histogram, HistogramSnapshot};
pub use listeners::{listeners, register_listener, ListenerSnapshot, ListenerStats};

/// Why a message meant for a subscriber was not delivered to it. Each is counted
/// separately ([`Counter::dropped`]), and named in `/metrics` by [`DropReason::name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The queue was full and `queue_full = "drop_new"` dropped the new message.
    QueueFullNew,
    /// The queue was full and `queue_full = "drop_oldest"` dropped the oldest one.
    QueueFullOldest,
    /// Retained messages for a new subscription beyond the queue's limit.
    RetainedOverLimit,
    /// A QoS 0 message for an offline session (`queue_qos0_messages = false`).
    Qos0Offline,
    /// Its 5.0 Message Expiry Interval passed while it waited.
    Expired,
    /// Larger than the subscriber's Maximum Packet Size [MQTT-3.1.2-25].
    TooLarge,
    /// The ACL no longer lets the subscriber read it when it was due to be sent.
    Denied,
    /// The session it waited in expired.
    SessionExpired,
    /// Refused on arrival above `memory_limit`: counted once per PUBLISH refused, not per
    /// subscriber it would have reached.
    MemoryLimit,
}

impl DropReason {
    pub const ALL: [DropReason; 9] = [
        DropReason::QueueFullNew,
        DropReason::QueueFullOldest,
        DropReason::RetainedOverLimit,
        DropReason::Qos0Offline,
        DropReason::Expired,
        DropReason::TooLarge,
        DropReason::Denied,
        DropReason::SessionExpired,
        DropReason::MemoryLimit,
    ];

    /// The label value in `/metrics` and the JSON API.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::QueueFullNew => "queue_full_drop_new",
            DropReason::QueueFullOldest => "queue_full_drop_oldest",
            DropReason::RetainedOverLimit => "retained_over_limit",
            DropReason::Qos0Offline => "qos0_offline",
            DropReason::Expired => "message_expired",
            DropReason::TooLarge => "too_large_for_client",
            DropReason::Denied => "acl_denied",
            DropReason::SessionExpired => "session_expired",
            DropReason::MemoryLimit => "memory_limit",
        }
    }
}

/// Events counted since the broker started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    /// MQTT packets of any type read from clients (Mosquitto's `messages/received`).
    PacketsReceived,
    /// MQTT packets of any type sent to clients (`messages/sent`), counted as the outbox
    /// encodes them for the socket.
    PacketsSent,
    /// Bytes read from client sockets (after TLS).
    BytesReceived,
    /// Bytes written to client sockets (before TLS).
    BytesSent,
    /// PUBLISH packets received, by QoS (`publish/messages/received` is their sum).
    PublishReceivedQos0,
    PublishReceivedQos1,
    PublishReceivedQos2,
    /// PUBLISH packets sent, by QoS (`publish/messages/sent` is their sum).
    PublishSentQos0,
    PublishSentQos1,
    PublishSentQos2,
    /// Payload bytes of PUBLISH packets received and sent.
    PublishBytesReceived,
    PublishBytesSent,
    /// Messages no client sent: wills, `$SYS`.
    PublishInternal,
    /// Connections accepted on any listener (Mosquitto's `load/sockets`).
    ConnectionsAccepted,
    /// CONNECTs accepted: a client connected (Mosquitto's `load/connections`).
    Connects,
    /// CONNECTs refused with "bad user name or password" or "not authorized" (3.1.1
    /// return codes 4 and 5, 5.0 reason codes 0x86, 0x87 and 0x8C): a wrong password, an
    /// anonymous client where none is allowed, no certificate identity, a client id
    /// owned by another user, a will topic the ACL denies.
    AuthFailures,
    /// Offline sessions ended by their expiry (`clients/expired`).
    SessionsExpired,
    /// Messages not delivered, one counter per [`DropReason`] (see [`Counter::dropped`]).
    DroppedQueueFullNew,
    DroppedQueueFullOldest,
    DroppedRetainedOverLimit,
    DroppedQos0Offline,
    DroppedExpired,
    DroppedTooLarge,
    DroppedDenied,
    DroppedSessionExpired,
    DroppedMemoryLimit,
}

impl Counter {
    /// How many counters there are.
    pub const COUNT: usize = Counter::DroppedMemoryLimit as usize + 1;

    /// The counter of one drop reason.
    pub fn dropped(reason: DropReason) -> Counter {
        match reason {
            DropReason::QueueFullNew => Counter::DroppedQueueFullNew,
            DropReason::QueueFullOldest => Counter::DroppedQueueFullOldest,
            DropReason::RetainedOverLimit => Counter::DroppedRetainedOverLimit,
            DropReason::Qos0Offline => Counter::DroppedQos0Offline,
            DropReason::Expired => Counter::DroppedExpired,
            DropReason::TooLarge => Counter::DroppedTooLarge,
            DropReason::Denied => Counter::DroppedDenied,
            DropReason::SessionExpired => Counter::DroppedSessionExpired,
            DropReason::MemoryLimit => Counter::DroppedMemoryLimit,
        }
    }

    /// PUBLISH received at `qos` (0, 1 or 2; anything else counts as 2).
    pub fn publish_received(qos: u8) -> Counter {
        match qos {
            0 => Counter::PublishReceivedQos0,
            1 => Counter::PublishReceivedQos1,
            _ => Counter::PublishReceivedQos2,
        }
    }

    /// PUBLISH sent at `qos`.
    pub fn publish_sent(qos: u8) -> Counter {
        match qos {
            0 => Counter::PublishSentQos0,
            1 => Counter::PublishSentQos1,
            _ => Counter::PublishSentQos2,
        }
    }
}

/// Counts one dropped message.
#[inline]
pub fn dropped(reason: DropReason) {
    add(Counter::dropped(reason), 1);
}

/// Every drop counted so far, by reason.
pub fn drops(totals: &[u64; Counter::COUNT]) -> impl Iterator<Item = (DropReason, u64)> + '_ {
    DropReason::ALL
        .into_iter()
        .map(|r| (r, totals[Counter::dropped(r) as usize]))
}

/// PUBLISH packets received so far, QoS 0, 1 and 2, from [`totals`].
pub fn publish_received(totals: &[u64; Counter::COUNT]) -> [u64; 3] {
    [0, 1, 2].map(|q| totals[Counter::publish_received(q) as usize])
}

/// PUBLISH packets sent so far, QoS 0, 1 and 2, from [`totals`].
pub fn publish_sent(totals: &[u64; Counter::COUNT]) -> [u64; 3] {
    [0, 1, 2].map(|q| totals[Counter::publish_sent(q) as usize])
}

/// Messages dropped so far, every reason together, from [`totals`].
pub fn dropped_total(totals: &[u64; Counter::COUNT]) -> u64 {
    drops(totals).map(|(_, n)| n).sum()
}
