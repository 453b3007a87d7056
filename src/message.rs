//! An application message as the broker holds it.
//!
//! A message is decoded once, wrapped in an [`Arc`], and that one allocation is shared by
//! the retained store and by every subscriber queue it lands in: routing to a thousand
//! subscribers costs a thousand reference-count increments, never a copy of the payload.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::codec::{MessageProps, QoS};

#[derive(Debug)]
pub struct Message {
    /// Shared with other messages of the same name (see `codec::topic_cache`).
    pub topic: Arc<str>,
    pub payload: Bytes,
    /// The QoS it was published with; each subscriber receives min(this, granted QoS).
    pub qos: QoS,
    /// The RETAIN flag it was published with.
    pub retain: bool,
    /// MQTT 5.0 properties forwarded to subscribers unchanged (None for 3.1.1 messages).
    pub props: Option<Box<MessageProps>>,
    /// From the Message Expiry Interval: after this instant the message is not delivered
    /// [MQTT-3.3.2-5].
    pub expires_at: Option<Instant>,
    /// Its id in the durable store once it has been written there (0: not yet); the
    /// store assigns it, and writes the message once however many queues hold it.
    store_id: AtomicU64,
    /// Its PUBLISH in MQTT 3.1.1's encoding (3.1's is the same) at QoS 1, packet id 0,
    /// no flags: encoded by the first 3.1.1 delivery at QoS 1 or 2 that writes it, and
    /// copied by every other, which patches in its own flags and packet id (see
    /// [`Message::v311_publish`]). Empty when MQTT cannot express the packet.
    v311: OnceLock<Bytes>,
}

pub type SharedMessage = Arc<Message>;

impl Drop for Message {
    fn drop(&mut self) {
        // What `restored` charged: the size never changes, a message is immutable.
        crate::memory::release(self.held_bytes());
        if self.v311.get().is_some_and(|f| !f.is_empty()) {
            // What `v311_publish` charged.
            crate::memory::release(crate::codec::publish_capacity(
                &self.topic,
                self.payload.len(),
            ));
        }
    }
}

impl Message {
    /// A message, with its MQTT 5.0 properties if it has any (`None` for 3.1.1); its
    /// expiry starts counting now. (The clock is
    /// read only for messages that expire: this runs for every message published.)
    pub fn with_props(
        topic: impl Into<Arc<str>>,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        props: Option<Box<MessageProps>>,
    ) -> Message {
        let expires_at = props
            .as_ref()
            .and_then(|p| p.message_expiry)
            .map(|secs| Instant::now() + Duration::from_secs(u64::from(secs)));
        Message::restored(topic, payload, qos, retain, props, expires_at, 0)
    }

    /// A message with its expiry instant and durable store id (0: not stored), as one
    /// read back from the store is.
    pub fn restored(
        topic: impl Into<Arc<str>>,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        props: Option<Box<MessageProps>>,
        expires_at: Option<Instant>,
        store_id: u64,
    ) -> Message {
        let msg = Message {
            topic: topic.into(),
            payload,
            qos,
            retain,
            props,
            expires_at,
            store_id: AtomicU64::new(store_id),
            v311: OnceLock::new(),
        };
        // Held from here until the last reference goes (`memory_limit`).
        crate::memory::charge(msg.held_bytes());
        msg
    }

    /// The durable store's id for this message (0: never stored).
    pub fn store_id(&self) -> u64 {
        self.store_id.load(Ordering::Relaxed)
    }

    /// Gives the message its store id (the store does, under its lock, once).
    pub fn set_store_id(&self, id: u64) {
        self.store_id.store(id, Ordering::Relaxed);
    }

    /// Topic and payload bytes (what the durable store weighs a message by).
    pub fn size(&self) -> usize {
        self.topic.len() + self.payload.len()
    }

    /// Every byte this message holds: the shared allocation (counts included), topic,
    /// payload and MQTT 5.0 properties at their stored size. Part of
    /// the session queue's `Queued::held_bytes`.
    pub fn held_bytes(&self) -> usize {
        // An `Arc` allocation is the value plus its two counts.
        std::mem::size_of::<Message>()
            + 2 * std::mem::size_of::<usize>()
            // The name's bytes as if this message held them alone (it may share them).
            + self.topic.len()
            + self.payload.len()
            + self.props.as_ref().map_or(0, |p| p.held_bytes())
    }

    /// This message's PUBLISH as a 3.1.1 (or 3.1) client is sent it at QoS 1 or 2, with
    /// packet id 0 and the flags (DUP, QoS, RETAIN) clear, for the caller to copy and
    /// patch: encoded once, by the first delivery that asks, however many subscribers
    /// take it (a fan-out encoded the same bytes once per subscriber). `None` when MQTT
    /// cannot express it. Only for a payload below `SHARE_PAYLOAD_ON_WRITE_FROM`, which
    /// is copied anyway: a large one is written by reference and never encoded whole.
    ///
    /// Held as long as the message, and counted towards `memory_limit` at what
    /// `codec::publish_capacity` reserves for it (not in
    /// [`held_bytes`](Self::held_bytes), which must not change while the message is
    /// queued).
    ///
    /// Encoded by this call only when `encode` (the caller expects more deliveries to
    /// share it); otherwise `None` unless it is encoded already.
    pub fn v311_publish(&self, encode: bool) -> Option<&[u8]> {
        if !encode {
            return self.v311.get().filter(|f| !f.is_empty()).map(|f| &f[..]);
        }
        let frame = self.v311.get_or_init(|| {
            if !crate::codec::publish_fits(&self.topic, self.payload.len(), QoS::AtLeastOnce) {
                return Bytes::new();
            }
            let capacity = crate::codec::publish_capacity(&self.topic, self.payload.len());
            let mut buf = BytesMut::with_capacity(capacity);
            crate::codec::encode_publish(
                &mut buf,
                &self.topic,
                &self.payload,
                QoS::AtLeastOnce,
                0,
                false,
                false,
            );
            crate::memory::charge(capacity);
            buf.freeze()
        });
        (!frame.is_empty()).then_some(&frame[..])
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    /// The Message Expiry Interval to forward: the time the message has left, in whole
    /// seconds rounded up [MQTT-3.3.2-6]. `None` when it never expires.
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        let left = self.expires_at?.saturating_duration_since(now);
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Some(u32::try_from(secs).unwrap_or(u32::MAX))
    }
}

/// What one delivery of a message carries beyond the message itself (MQTT 5.0): the
/// subscription identifiers of the subscriptions it matched, and the shared subscription
/// it came through. Made by the router, kept in the session's queue entry, written to
/// the store with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryProps {
    /// Subscription identifiers of the matching subscriptions.
    pub sub_ids: Vec<u32>,
    /// The shared subscription (`$share/g/f`) it came through.
    pub shared: Option<Arc<str>>,
}

impl DeliveryProps {
    /// The box and its subscription ids (the shared subscription's name belongs to the
    /// subscription, and is only pointed to).
    pub fn held_bytes(&self) -> usize {
        std::mem::size_of::<DeliveryProps>() + self.sub_ids.capacity() * std::mem::size_of::<u32>()
    }

    /// `None` when there is nothing to carry.
    pub fn boxed(sub_ids: Vec<u32>, shared: Option<Arc<str>>) -> Option<Box<DeliveryProps>> {
        (!sub_ids.is_empty() || shared.is_some())
            .then(|| Box::new(DeliveryProps { sub_ids, shared }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_bytes_count_topic_payload_and_user_properties_at_wire_size() {
        let plain = Message::with_props(
            "a/b",
            Bytes::from_static(b"12345"),
            QoS::AtMostOnce,
            false,
            None,
        );
        let base = std::mem::size_of::<Message>() + 2 * std::mem::size_of::<usize>();
        assert_eq!(plain.held_bytes(), base + 3 + 5);
        // A thousand empty user properties: 5 wire bytes each, held as 5 bytes each.
        let props = MessageProps {
            user_properties: (0..1000).map(|_| ("", "")).collect(),
            ..Default::default()
        };
        let heavy = Message::with_props(
            "a/b",
            Bytes::from_static(b"12345"),
            QoS::AtMostOnce,
            false,
            Some(Box::new(props)),
        );
        assert_eq!(
            heavy.held_bytes(),
            base + 3 + 5 + std::mem::size_of::<MessageProps>() + 5000
        );
    }

    #[test]
    fn expiry_counts_down_from_arrival_and_rounds_up() {
        let props = MessageProps {
            message_expiry: Some(10),
            ..Default::default()
        };
        let m = Message::with_props(
            "t",
            Bytes::new(),
            QoS::AtMostOnce,
            false,
            Some(Box::new(props)),
        );
        let now = m.expires_at.unwrap() - Duration::from_secs(10);
        assert_eq!(m.remaining_expiry(now), Some(10));
        assert_eq!(
            m.remaining_expiry(now + Duration::from_millis(2500)),
            Some(8)
        );
        assert!(!m.is_expired(now + Duration::from_millis(9999)));
        assert!(m.is_expired(now + Duration::from_secs(10)));
        let plain = Message::with_props("t", Bytes::new(), QoS::AtMostOnce, false, None);
        assert!(m.held_bytes() > plain.held_bytes());
        assert_eq!(plain.remaining_expiry(now), None);
        assert!(!plain.is_expired(now + Duration::from_secs(1_000_000)));
    }
}
