//! What a connection sends, one method per packet (as Mosquitto keeps send_*.c apart),
//! each written in the client's protocol version, which the outbox was made with at
//! CONNACK. For a 5.0 client the outbox also keeps what sending to it takes: the
//! broker-to-client topic aliases it set and the client's Maximum Packet Size.
//!
//! The version costs the hot path one branch on an `Option` per PUBLISH, as the
//! `Option<&mut PeerV5>` it was passed before did: no allocation, no dynamic dispatch.

use std::time::Instant;

use super::{Outbox, SHARE_PAYLOAD_ON_WRITE_FROM};
use crate::codec::reason::{self, v311};
use crate::codec::{self, Ack, AckKind, ConnackProps, ProtocolVersion, QoS};
use crate::log_limit::{field, LogLimit};
use crate::message::SharedMessage;
use crate::metrics;

/// A message with at least this many references (each queue entry holding it is one)
/// has its 3.1.1 QoS 1/2 PUBLISH encoded once and kept, for every delivery to copy (see
/// [`Outbox::publish`]). Keeping it costs about two encodings (callgrind: a fan-in to one
/// subscriber went from ~4,470 to ~5,100 instructions a message when every message kept
/// one), so a message few subscribers share is encoded for each instead.
pub const ENCODE_ONCE_FROM: usize = 3;

/// How to send to an MQTT 5.0 client, from its CONNECT; kept by its [`Outbox`].
#[derive(Debug)]
pub struct PeerV5 {
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
    pub fn new(max_packet_size: Option<u32>, topic_alias_max: u16) -> PeerV5 {
        PeerV5 {
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
    fn alias_for(&self, topic: &str) -> (Option<u16>, bool) {
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
    fn set_alias(&mut self, topic: &str, alias: u16) {
        if self.aliases.insert(topic.into(), alias).is_none() {
            self.alias_bytes += topic.len();
        }
    }

    /// Topic aliases set on this connection, and the bytes of their topics.
    #[cfg(test)]
    pub fn alias_usage(&self) -> (usize, usize) {
        (self.aliases.len(), self.alias_bytes)
    }
}

impl Outbox {
    /// The outbox of a connection whose CONNECT was accepted: MQTT 5.0 when `v5` is
    /// given (from the client's CONNECT), 3.1.1 or 3.1 otherwise.
    pub fn for_client(v5: Option<Box<PeerV5>>) -> Outbox {
        Outbox {
            segments: None,
            tail: bytes::BytesMut::new(),
            segments_len: 0,
            v5,
            counts: super::SentCounts::default(),
        }
    }

    /// Whether nothing is waiting and every buffer has been released: what
    /// [`into_peer`](Self::into_peer) asks.
    pub fn is_released(&self) -> bool {
        self.is_empty() && self.segments.is_none() && self.tail.capacity() == 0
    }

    /// What a released outbox (see [`is_released`](Self::is_released)) is made of
    /// besides its buffers: what [`Outbox::for_client`] takes to make it again.
    pub fn into_peer(self) -> Option<Box<PeerV5>> {
        debug_assert!(self.is_released());
        // Nothing counted is lost: counts are handed in with every write, and nothing
        // was encoded since the last one.
        self.v5
    }

    /// The outbox of a refused CONNECT, in its version if it was read that far.
    pub fn for_refusal(version: Option<ProtocolVersion>) -> Outbox {
        let v5 = (version == Some(ProtocolVersion::V5)).then(|| Box::new(PeerV5::new(None, 0)));
        Outbox::for_client(v5)
    }

    pub fn is_v5(&self) -> bool {
        self.v5.is_some()
    }

    /// What sending to this 5.0 client keeps (its aliases); `None` for 3.1.1.
    #[cfg(test)]
    pub fn peer_v5(&self) -> Option<&PeerV5> {
        self.v5.as_deref()
    }

    /// Writes one PUBLISH of `msg`. For a 5.0 client: the message's properties, its
    /// remaining expiry, the subscription identifiers and a topic alias where the client
    /// accepts them. Returns false, having written nothing, when the client cannot be
    /// sent it: larger than its Maximum Packet Size [MQTT-3.1.2-25], or a packet its
    /// protocol cannot express (see [`Outbox::write_publish_v311`]); the caller drops
    /// that delivery.
    ///
    /// A 3.1.1 PUBLISH at QoS 1 or 2 of a message that several subscribers are sent is
    /// copied from its encoding kept with the message ([`Message::v311_publish`]): when
    /// it is encoded already, or when at least [`ENCODE_ONCE_FROM`] references to the
    /// message exist (queue entries of other subscribers, most likely). Otherwise it is
    /// encoded here, as keeping an encoding for one delivery costs more than it saves.
    ///
    /// [`Message::v311_publish`]: crate::message::Message::v311_publish
    ///
    /// The copy of a kept encoding is inline in the caller (`SessionState::fill` sends
    /// each message of a fan-out that way): as a call of its own, with eight arguments
    /// and the prologue of the whole method, it cost ~20 instructions a delivery
    /// (callgrind, 1 → 50 fan-out at QoS 1); everything else is [`Outbox::publish_any`].
    #[allow(clippy::too_many_arguments)]
    #[must_use]
    #[inline(always)]
    pub fn publish(
        &mut self,
        msg: &SharedMessage,
        qos: QoS,
        retain: bool,
        pkid: u16,
        dup: bool,
        sub_ids: &[u32],
        now: Instant,
    ) -> bool {
        if self.v5.is_none()
            && qos != QoS::AtMostOnce
            && msg.payload.len() < SHARE_PAYLOAD_ON_WRITE_FROM
        {
            let shared = std::sync::Arc::strong_count(msg) >= ENCODE_ONCE_FROM;
            if let Some(frame) = msg.v311_publish(shared) {
                self.copy_publish_v311(frame, msg.payload.len(), qos, pkid, retain, dup);
                self.counts.publish(qos, msg.payload.len());
                return true;
            }
        }
        self.publish_any(msg, qos, retain, pkid, dup, sub_ids, now)
    }

    /// [`Outbox::publish`] but the copy of a kept 3.1.1 encoding: a 3.1.1 PUBLISH encoded
    /// here, or a 5.0 one.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn publish_any(
        &mut self,
        msg: &SharedMessage,
        qos: QoS,
        retain: bool,
        pkid: u16,
        dup: bool,
        sub_ids: &[u32],
        now: Instant,
    ) -> bool {
        let Some(peer) = self.v5.as_deref() else {
            let written = self.write_publish_v311(&msg.topic, &msg.payload, qos, pkid, retain, dup);
            if written {
                self.counts.publish(qos, msg.payload.len());
            }
            return written;
        };
        let mut p = codec::PublishOut {
            topic: &msg.topic,
            qos,
            retain,
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
            metrics::dropped(metrics::DropReason::TooLarge);
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
        if !self.write_publish_v5(&p, &msg.payload) {
            return false;
        }
        self.counts.publish(qos, msg.payload.len());
        if let (Some(alias), true, Some(peer)) = (p.topic_alias, with_topic, self.v5.as_deref_mut())
        {
            peer.set_alias(&msg.topic, alias);
        }
        true
    }

    /// Writes a message's 3.1.1 PUBLISH encoded once for every subscriber (`frame`, from
    /// `Message::v311_publish`: QoS 1, packet id 0, no flags), with this delivery's
    /// flags and packet id: the same bytes `codec::encode_publish` writes, for a copy
    /// and two patches instead of an encoding per subscriber.
    #[inline(always)]
    fn copy_publish_v311(
        &mut self,
        frame: &[u8],
        payload_len: usize,
        qos: QoS,
        pkid: u16,
        retain: bool,
        dup: bool,
    ) {
        let tail = self.buf();
        let start = tail.len();
        tail.extend_from_slice(frame);
        // The fixed header's first byte [MQTT-3.3.1]; the packet id is the two bytes
        // before the payload (QoS 1 and 2 alike).
        let first = 0x30 | (u8::from(dup) << 3) | ((qos as u8) << 1) | u8::from(retain);
        if let Some(b) = tail.get_mut(start) {
            *b = first;
        }
        let id_at = start + frame.len() - payload_len - 2;
        if let Some(id) = tail.get_mut(id_at..id_at + 2) {
            id.copy_from_slice(&pkid.to_be_bytes());
        }
    }

    /// PUBACK, PUBREC, PUBREL or PUBCOMP; the reason code goes to a 5.0 client only.
    pub fn ack(&mut self, kind: AckKind, ack: Ack) {
        let v5 = self.is_v5();
        codec::encode_ack(self.buf(), kind, ack.pkid, ack.reason, v5);
        self.counts.packet();
    }

    /// SUBACK with one code per filter: 5.0 reason codes, or 3.1.1's granted QoS / 0x80.
    pub fn suback(&mut self, pkid: u16, codes: &[u8]) {
        self.counts.packet();
        if self.is_v5() {
            codec::encode_suback_v5(self.buf(), pkid, codes, None);
        } else {
            codec::encode_suback(self.buf(), pkid, codes);
        }
    }

    /// UNSUBACK; 5.0 says per filter whether there was a subscription [MQTT-3.11.3-1],
    /// 3.1.1 has no codes.
    pub fn unsuback(&mut self, pkid: u16, codes: &[u8]) {
        self.counts.packet();
        if self.is_v5() {
            codec::encode_unsuback_v5(self.buf(), pkid, codes, None);
        } else {
            codec::encode_unsuback(self.buf(), pkid);
        }
    }

    /// The accepting CONNACK. A 5.0 client gets the properties `props` builds, or, if its
    /// Maximum Packet Size cannot take them, none but the one it must have (an assigned
    /// id) [MQTT-3.1.2-24]; a 3.1.1 client has no properties, and they are not built.
    pub fn connack(&mut self, session_present: bool, props: impl FnOnce() -> ConnackProps) {
        self.counts.packet();
        let Some(limit) = self.v5.as_ref().map(|p| p.max_packet_size) else {
            codec::encode_connack(self.buf(), session_present, v311::ACCEPTED);
            return;
        };
        let props = props();
        let limit = limit.map_or(usize::MAX, |m| m as usize);
        let buf = self.buf();
        let start = buf.len();
        codec::encode_connack_v5_props(buf, session_present, reason::SUCCESS, &props);
        if buf.len() - start > limit {
            buf.truncate(start);
            let bare = ConnackProps {
                assigned_client_id: props.assigned_client_id,
                ..ConnackProps::default()
            };
            codec::encode_connack_v5_props(buf, session_present, reason::SUCCESS, &bare);
        }
    }

    /// A refusing CONNACK. `code` is a 3.1.1 return code, or a 5.0 reason code (0x80 or
    /// more) for a refusal 3.1.1 has no code of its own for; a 5.0 client gets 5.0's
    /// reason code for the same refusal.
    pub fn connack_refused(&mut self, code: u8) {
        self.counts.packet();
        if !self.is_v5() {
            codec::encode_connack(self.buf(), false, code);
            return;
        }
        let reason = match code {
            v311::UNSUPPORTED_PROTOCOL_VERSION => 0x84,
            v311::IDENTIFIER_REJECTED => 0x85,
            v311::SERVER_UNAVAILABLE => 0x89,
            v311::BAD_USERNAME_OR_PASSWORD => 0x86,
            v311::NOT_AUTHORIZED => 0x87,
            // Already a 5.0 reason code (e.g. 0x8C bad authentication method).
            code if code >= 0x80 => code,
            _ => 0x80,
        };
        codec::encode_connack_v5(self.buf(), false, reason);
    }

    /// The DISCONNECT the server closes a 5.0 connection with [MQTT-3.14.0-1]; 3.1.1 has
    /// no server DISCONNECT, so nothing is written for it.
    pub fn disconnect(&mut self, reason: u8) {
        if self.is_v5() {
            codec::encode_disconnect_v5(self.buf(), reason, None);
            self.counts.packet();
        }
    }

    pub fn pingresp(&mut self) {
        codec::encode_pingresp(self.buf());
        self.counts.packet();
    }
}

#[cfg(test)]
#[path = "send_tests.rs"]
mod tests;
