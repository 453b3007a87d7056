//! Writing a session's messages to its client: PUBLISH (with topic aliases and the
//! Maximum Packet Size of a 5.0 client) and PUBREL.

use std::time::Instant;

use super::{Inflight, InflightState, Queued};
use crate::codec;
use crate::log_limit::{field, LogLimit};
use crate::outbox::Outbox;

/// How to send to the attached MQTT 5.0 client, from its CONNECT; `None` in
/// [`SessionState::peer`] for 3.1.1 and 3.1 clients.
#[derive(Debug)]
pub struct PeerV5 {
    /// The client's Receive Maximum: the inflight window never exceeds it [MQTT-3.3.4-7].
    pub receive_maximum: u16,
    /// The client's Maximum Packet Size: larger PUBLISHes are dropped for it
    /// [MQTT-3.1.2-25].
    pub max_packet_size: Option<u32>,
    /// How many aliases the broker sets: the client's Topic Alias Maximum
    /// [MQTT-3.1.2-26], lowered to `max_topic_alias_broker` by the caller.
    pub topic_alias_max: u16,
    /// Aliases set on this connection, by topic. At most `topic_alias_max` entries
    /// holding at most [`MAX_ALIAS_TOPIC_BYTES`] of topics: the connection keeps them
    /// for its whole life.
    aliases: std::collections::HashMap<Box<str>, u16>,
    /// Bytes of the topics in `aliases`.
    alias_bytes: usize,
}

/// Most bytes of topic names one connection's broker-to-client alias map holds: enough
/// for every alias a client may have with topics of a realistic length, and a bound on
/// what a client asking for many aliases on long topics makes the broker keep.
pub const MAX_ALIAS_TOPIC_BYTES: usize = 64 * 1024;

impl PeerV5 {
    pub fn new(receive_maximum: u16, max_packet_size: Option<u32>, topic_alias_max: u16) -> PeerV5 {
        PeerV5 {
            receive_maximum,
            max_packet_size,
            topic_alias_max,
            aliases: Default::default(),
            alias_bytes: 0,
        }
    }

    /// The alias to send `topic` with, and whether the topic itself must be sent too
    /// (the first time, which sets the alias: see [`PeerV5::set_alias`]). Aliases are
    /// handed out until the maximum or [`MAX_ALIAS_TOPIC_BYTES`] is reached; later
    /// topics go without (an alias is never re-assigned: no bookkeeping per message).
    pub(super) fn alias_for(&self, topic: &str) -> (Option<u16>, bool) {
        if self.topic_alias_max == 0 {
            return (None, true);
        }
        if let Some(alias) = self.aliases.get(topic) {
            return (Some(*alias), false);
        }
        if self.alias_bytes + topic.len() > MAX_ALIAS_TOPIC_BYTES {
            return (None, true);
        }
        match u16::try_from(self.aliases.len() + 1) {
            Ok(alias) if alias <= self.topic_alias_max => (Some(alias), true),
            _ => (None, true),
        }
    }

    /// Records an alias once the PUBLISH that sets it is written.
    pub(super) fn set_alias(&mut self, topic: &str, alias: u16) {
        if self.aliases.insert(topic.into(), alias).is_none() {
            self.alias_bytes += topic.len();
        }
    }

    /// Topic aliases set on this connection, and the bytes of their topics.
    pub fn alias_usage(&self) -> (usize, usize) {
        (self.aliases.len(), self.alias_bytes)
    }
}

/// Writes an inflight message's PUBLISH (DUP on a re-send) or PUBREL. Returns false when
/// the PUBLISH could not be sent to this client at all (too large for its Maximum Packet
/// Size): the caller forgets it.
pub(super) fn encode_inflight(
    out: &mut Outbox,
    peer: Option<&mut PeerV5>,
    pkid: u16,
    f: &mut Inflight,
    now: Instant,
) -> bool {
    match f.state {
        InflightState::Published => {
            let written = encode_publish(out, peer, &f.item, pkid, f.sent, now);
            f.sent |= written;
            written
        }
        InflightState::Released => {
            codec::encode_ack(out.buf(), codec::AckKind::PubRel, pkid, 0, peer.is_some());
            true
        }
    }
}

/// Writes one PUBLISH in the attached client's protocol version. For a 5.0 client: the
/// message's properties, its remaining expiry, the subscription identifiers and a topic
/// alias where the client accepts them; a message larger than the client's Maximum
/// Packet Size is not sent (false) [MQTT-3.1.2-25].
pub(super) fn encode_publish(
    out: &mut Outbox,
    peer: Option<&mut PeerV5>,
    item: &Queued,
    pkid: u16,
    dup: bool,
    now: Instant,
) -> bool {
    let msg = &item.msg;
    let Some(peer) = peer else {
        // False for a PUBLISH 3.1.1 cannot express: dropped for this subscriber.
        return out.publish(&msg.topic, &msg.payload, item.qos, pkid, item.retain, dup);
    };
    let sub_ids = item.extra.as_ref().map_or(&[][..], |e| &e.sub_ids[..]);
    let mut p = codec::PublishOut {
        topic: &msg.topic,
        qos: item.qos,
        retain: item.retain,
        dup,
        pkid,
        topic_alias: None,
        props: msg.props.as_deref(),
        message_expiry: msg.remaining_expiry(now),
        subscription_ids: sub_ids,
    };
    // The alias goes into the size: setting one adds a property, using one drops the topic.
    let (alias, with_topic) = peer.alias_for(&msg.topic);
    p.topic_alias = alias;
    if !with_topic {
        p.topic = "";
    }
    // `usize::MAX` when the packet cannot be expressed at all (the properties pushed it
    // over MQTT's limit): never written, whatever the client accepts.
    let max = peer.max_packet_size.map_or(usize::MAX - 1, |m| m as usize);
    let mut size = codec::publish_v5_size(&p, msg.payload.len());
    if size > max && alias.is_some() {
        // The alias property can be what tips it over: try the plain topic.
        p.topic = &msg.topic;
        p.topic_alias = None;
        size = codec::publish_v5_size(&p, msg.payload.len());
    }
    if size > max {
        static LOG: LogLimit = LogLimit::new(10_000);
        if let Some(suppressed) = LOG.allow() {
            tracing::debug!(
                topic = ?field(&msg.topic),
                size,
                max,
                suppressed,
                "message larger than the client's Maximum Packet Size, not sent"
            );
        }
        return false;
    }
    if !out.publish_v5(&p, &msg.payload) {
        return false;
    }
    if let (Some(alias), true) = (p.topic_alias, with_topic) {
        peer.set_alias(&msg.topic, alias);
    }
    true
}
