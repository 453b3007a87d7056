//! What the session's unit tests share: a session over the in-memory store, messages, and
//! the packets a fill wrote, decoded.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::{Limits, Session};
use crate::codec::{self, Packet, QoS};
use crate::config::QueueFull;
use crate::message::{Message, SharedMessage};
use crate::outbox::Outbox;
use crate::store::MemoryStore;

pub fn limits(max_inflight: usize, max_queued_messages: usize, queue_full: QueueFull) -> Limits {
    Limits {
        max_inflight,
        max_queued_messages,
        max_queued_bytes: 0,
        max_spool_bytes: 0,
        queue_qos0: false,
        queue_full,
        drop_log_interval: Duration::from_secs(3600),
    }
}

/// A connected session with these limits, over the in-memory store.
pub fn session(limits: Limits) -> Arc<Session> {
    let s = Session::new(1, Arc::from("c"), Arc::new(limits), Arc::new(MemoryStore));
    s.state.lock().connected = true;
    Arc::new(s)
}

pub fn message(topic: &str, qos: QoS) -> SharedMessage {
    Arc::new(Message::with_props(
        topic.to_string(),
        Bytes::from_static(b"p"),
        qos,
        false,
        None,
    ))
}

/// Decodes every packet an outbox holds (small packets only: they all sit in its buffer).
pub fn packets(out: &mut Outbox) -> Vec<Packet> {
    let mut buf: BytesMut = out.buf().split();
    let mut packets = Vec::new();
    while let Ok(Some(p)) = codec::decode(&mut buf, usize::MAX) {
        packets.push(p);
    }
    assert!(buf.is_empty(), "whole packets only");
    packets
}

/// (packet id, DUP) of each PUBLISH in `packets`.
pub fn publishes(packets: &[Packet]) -> Vec<(u16, bool)> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.pkid, p.dup)),
            _ => None,
        })
        .collect()
}

/// Offers `msg` at `qos` to `s` as a publisher's delivery would.
pub fn offer(
    s: &Session,
    msg: &SharedMessage,
    qos: QoS,
    publisher: Option<&Arc<Session>>,
) -> super::Delivery {
    let mut stored = crate::store::StoreOutcome::default();
    s.offer(msg, qos, false, None, publisher, None, &mut stored)
}

/// Fills an outbox from `s` with no byte bound, as a connection with room does.
pub fn fill(s: &Session, out: &mut Outbox) -> Vec<Arc<Session>> {
    let mut st = s.state.lock();
    st.fill(
        out,
        usize::MAX,
        std::time::Instant::now(),
        s.store_handle(),
        None,
    )
    .0
}
