//! What the durable store writes: one record per change to durable state.
//!
//! A message is written once ([`Record::Message`]) and referred to by id from every
//! persistent session queue it lands in ([`Record::Enqueued`]) and from the retained store
//! ([`Record::Retained`]), as the broker holds it once in memory. [`super::state::State`]
//! replays records into the state they describe.
//!
//! Records borrow what they carry: the broker encodes them straight from its own strings
//! and payloads, and recovery decodes them straight from the bytes read, so neither side
//! copies a payload for the record's sake.
//!
//! Encoding: a tag byte, then fields; strings and byte strings as a u32 length and the
//! bytes; integers little-endian. Decoding checks every length against the record, so a
//! damaged record is an error, never a panic or a huge allocation.

use std::borrow::Cow;

/// Subscription options as one byte: QoS (bits 0-1), No Local (2), Retain As Published
/// (3), Retain Handling (4-5) — the MQTT 5.0 wire layout.
pub type OptionsByte = u8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// A persistent session exists (created, or resumed with a new expiry).
    SessionOpened {
        client_id: &'a str,
        expiry: u32,
    },
    /// The session and everything queued for it are gone.
    SessionDiscarded {
        client_id: &'a str,
    },
    /// Its client disconnected at `at` (Unix milliseconds): the expiry counts from there.
    SessionClosed {
        client_id: &'a str,
        at: u64,
    },
    Subscribed {
        client_id: &'a str,
        filter: &'a str,
        options: OptionsByte,
        /// MQTT 5.0 Subscription Identifier, 0 for none.
        sub_id: u32,
    },
    Unsubscribed {
        client_id: &'a str,
        filter: &'a str,
    },
    /// An application message, stored once.
    Message {
        id: u64,
        topic: &'a str,
        qos: u8,
        retain: bool,
        payload: &'a [u8],
        /// MQTT 5.0 properties as a property block (empty for none).
        properties: Cow<'a, [u8]>,
        /// Unix time, milliseconds, after which it is not delivered; 0 = never.
        expires_at: u64,
    },
    /// Message `message` was queued for `client_id` at position `seq`.
    Enqueued {
        client_id: &'a str,
        seq: u64,
        message: u64,
        qos: u8,
        retain: bool,
        /// Subscription identifiers it is delivered with (MQTT 5.0).
        sub_ids: Cow<'a, [u32]>,
        /// The shared subscription (`$share/g/f`) it came through; empty for none.
        shared: &'a str,
    },
    /// Sent with packet id `pkid` (re-sent with the same id after a restart).
    Sent {
        client_id: &'a str,
        seq: u64,
        pkid: u16,
    },
    /// QoS 2: PUBREC received, PUBREL owed.
    Released {
        client_id: &'a str,
        seq: u64,
    },
    /// Acknowledged (or dropped): gone from the session.
    Removed {
        client_id: &'a str,
        seq: u64,
    },
    /// The retained message of `topic`: `message` 0 clears it.
    Retained {
        topic: &'a str,
        message: u64,
    },
    /// A QoS 2 PUBLISH from the client was acknowledged with PUBREC (a re-send after a
    /// restart must not be delivered twice).
    Qos2Received {
        client_id: &'a str,
        pkid: u16,
    },
    /// Its PUBREL came.
    Qos2Completed {
        client_id: &'a str,
        pkid: u16,
    },
    /// A snapshot of the whole state follows, up to [`Record::CheckpointEnd`]: from
    /// there, replay goes on from the snapshot instead of what came before.
    Checkpoint,
    /// The end of a snapshot. A checkpoint without one was torn by a crash and counts for
    /// nothing (the segments before it are still there: they go only once it is synced).
    CheckpointEnd,
}

const SESSION_OPENED: u8 = 1;
const SESSION_DISCARDED: u8 = 2;
const SUBSCRIBED: u8 = 3;
const UNSUBSCRIBED: u8 = 4;
const MESSAGE: u8 = 5;
const ENQUEUED: u8 = 6;
const SENT: u8 = 7;
const RELEASED: u8 = 8;
const REMOVED: u8 = 9;
const RETAINED: u8 = 10;
const QOS2_RECEIVED: u8 = 11;
const QOS2_COMPLETED: u8 = 12;
const CHECKPOINT: u8 = 13;
const SESSION_CLOSED: u8 = 14;
const CHECKPOINT_END: u8 = 15;

/// Appends fields to a record being encoded.
struct W<'a>(&'a mut Vec<u8>);

impl W<'_> {
    fn u8(self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u16(self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(self, b: &[u8]) -> Self {
        // Every field comes from a packet (at most 256 MiB) or the config.
        self.0.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.0.extend_from_slice(b);
        self
    }
    fn str(self, s: &str) -> Self {
        self.bytes(s.as_bytes())
    }
    fn bool(self, v: bool) -> Self {
        self.u8(u8::from(v))
    }
}

/// Starts a record of type `t`.
fn tag(out: &mut Vec<u8>, t: u8) -> W<'_> {
    out.push(t);
    W(out)
}

/// Reads fields of a record being decoded.
struct R<'a>(&'a [u8]);

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("record cut short".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn str(&mut self) -> Result<&'a str, String> {
        std::str::from_utf8(self.bytes()?).map_err(|_| "string is not UTF-8".into())
    }
    fn bool(&mut self) -> Result<bool, String> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err("bad boolean".into()),
        }
    }
    fn u32s(&mut self) -> Result<Vec<u32>, String> {
        let n = self.u32()? as usize;
        // Checked against what is there before allocating.
        if self.0.len() / 4 < n {
            return Err("record cut short".into());
        }
        (0..n).map(|_| self.u32()).collect()
    }
}

impl Record<'_> {
    /// Appends the record's body to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::SessionOpened { client_id, expiry } => {
                tag(out, SESSION_OPENED).str(client_id).u32(*expiry);
            }
            Record::SessionDiscarded { client_id } => {
                tag(out, SESSION_DISCARDED).str(client_id);
            }
            Record::SessionClosed { client_id, at } => {
                tag(out, SESSION_CLOSED).str(client_id).u64(*at);
            }
            Record::Subscribed {
                client_id,
                filter,
                options,
                sub_id,
            } => {
                tag(out, SUBSCRIBED)
                    .str(client_id)
                    .str(filter)
                    .u8(*options)
                    .u32(*sub_id);
            }
            Record::Unsubscribed { client_id, filter } => {
                tag(out, UNSUBSCRIBED).str(client_id).str(filter);
            }
            Record::Message {
                id,
                topic,
                qos,
                retain,
                payload,
                properties,
                expires_at,
            } => {
                tag(out, MESSAGE)
                    .u64(*id)
                    .str(topic)
                    .u8(*qos)
                    .bool(*retain)
                    .bytes(payload)
                    .bytes(properties)
                    .u64(*expires_at);
            }
            Record::Enqueued {
                client_id,
                seq,
                message,
                qos,
                retain,
                sub_ids,
                shared,
            } => {
                let mut w = tag(out, ENQUEUED)
                    .str(client_id)
                    .u64(*seq)
                    .u64(*message)
                    .u8(*qos)
                    .bool(*retain)
                    .u32(sub_ids.len() as u32);
                for id in sub_ids.iter() {
                    w = w.u32(*id);
                }
                w.str(shared);
            }
            Record::Sent {
                client_id,
                seq,
                pkid,
            } => {
                tag(out, SENT).str(client_id).u64(*seq).u16(*pkid);
            }
            Record::Released { client_id, seq } => {
                tag(out, RELEASED).str(client_id).u64(*seq);
            }
            Record::Removed { client_id, seq } => {
                tag(out, REMOVED).str(client_id).u64(*seq);
            }
            Record::Retained { topic, message } => {
                tag(out, RETAINED).str(topic).u64(*message);
            }
            Record::Qos2Received { client_id, pkid } => {
                tag(out, QOS2_RECEIVED).str(client_id).u16(*pkid);
            }
            Record::Qos2Completed { client_id, pkid } => {
                tag(out, QOS2_COMPLETED).str(client_id).u16(*pkid);
            }
            Record::Checkpoint => {
                tag(out, CHECKPOINT);
            }
            Record::CheckpointEnd => {
                tag(out, CHECKPOINT_END);
            }
        }
    }
}

impl<'a> Record<'a> {
    /// Decodes one record body, borrowing from it.
    pub fn decode(bytes: &'a [u8]) -> Result<Record<'a>, String> {
        let mut r = R(bytes);
        let record = match r.u8()? {
            SESSION_OPENED => Record::SessionOpened {
                client_id: r.str()?,
                expiry: r.u32()?,
            },
            SESSION_DISCARDED => Record::SessionDiscarded {
                client_id: r.str()?,
            },
            SESSION_CLOSED => Record::SessionClosed {
                client_id: r.str()?,
                at: r.u64()?,
            },
            SUBSCRIBED => Record::Subscribed {
                client_id: r.str()?,
                filter: r.str()?,
                options: r.u8()?,
                sub_id: r.u32()?,
            },
            UNSUBSCRIBED => Record::Unsubscribed {
                client_id: r.str()?,
                filter: r.str()?,
            },
            MESSAGE => Record::Message {
                id: r.u64()?,
                topic: r.str()?,
                qos: r.u8()?,
                retain: r.bool()?,
                payload: r.bytes()?,
                properties: Cow::Borrowed(r.bytes()?),
                expires_at: r.u64()?,
            },
            ENQUEUED => Record::Enqueued {
                client_id: r.str()?,
                seq: r.u64()?,
                message: r.u64()?,
                qos: r.u8()?,
                retain: r.bool()?,
                sub_ids: Cow::Owned(r.u32s()?),
                shared: r.str()?,
            },
            SENT => Record::Sent {
                client_id: r.str()?,
                seq: r.u64()?,
                pkid: r.u16()?,
            },
            RELEASED => Record::Released {
                client_id: r.str()?,
                seq: r.u64()?,
            },
            REMOVED => Record::Removed {
                client_id: r.str()?,
                seq: r.u64()?,
            },
            RETAINED => Record::Retained {
                topic: r.str()?,
                message: r.u64()?,
            },
            QOS2_RECEIVED => Record::Qos2Received {
                client_id: r.str()?,
                pkid: r.u16()?,
            },
            QOS2_COMPLETED => Record::Qos2Completed {
                client_id: r.str()?,
                pkid: r.u16()?,
            },
            CHECKPOINT => Record::Checkpoint,
            CHECKPOINT_END => Record::CheckpointEnd,
            other => return Err(format!("unknown record type {other}")),
        };
        if !r.0.is_empty() {
            return Err("trailing bytes after the record".into());
        }
        Ok(record)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn every_kind() -> Vec<Record<'static>> {
        let c = "dev-1";
        vec![
            Record::SessionOpened {
                client_id: c,
                expiry: u32::MAX,
            },
            Record::Subscribed {
                client_id: c,
                filter: "a/#",
                options: 0x0D,
                sub_id: 7,
            },
            Record::SessionClosed {
                client_id: c,
                at: 1_700_000_000_000,
            },
            Record::Message {
                id: 1,
                topic: "a/b",
                qos: 1,
                retain: false,
                payload: b"payload-1",
                properties: Cow::Borrowed(&[]),
                expires_at: 0,
            },
            Record::Enqueued {
                client_id: c,
                seq: 1,
                message: 1,
                qos: 1,
                retain: false,
                sub_ids: Cow::Owned(vec![7, 9]),
                shared: "",
            },
            Record::Sent {
                client_id: c,
                seq: 1,
                pkid: 9,
            },
            Record::Released {
                client_id: c,
                seq: 1,
            },
            Record::Retained {
                topic: "a/b",
                message: 1,
            },
            Record::Qos2Received {
                client_id: c,
                pkid: 3,
            },
            Record::Qos2Completed {
                client_id: c,
                pkid: 3,
            },
            Record::Removed {
                client_id: c,
                seq: 1,
            },
            Record::Unsubscribed {
                client_id: c,
                filter: "a/#",
            },
            Record::SessionDiscarded { client_id: c },
            Record::Checkpoint,
            Record::CheckpointEnd,
        ]
    }

    fn encoded(r: &Record) -> Vec<u8> {
        let mut out = Vec::new();
        r.encode(&mut out);
        out
    }

    #[test]
    fn every_record_round_trips() {
        for r in every_kind() {
            let bytes = encoded(&r);
            assert_eq!(Record::decode(&bytes), Ok(r.clone()));
        }
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        for r in every_kind() {
            let bytes = encoded(&r);
            for cut in 0..bytes.len() {
                assert!(Record::decode(&bytes[..cut]).is_err(), "{r:?} cut at {cut}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(Record::decode(&longer).is_err());
        }
        assert!(Record::decode(&[99]).is_err());
        // A length field claiming 4 GiB is an error, not an allocation.
        assert!(Record::decode(&[SESSION_DISCARDED, 0xFF, 0xFF, 0xFF, 0xFF]).is_err());
        let mut many_ids = vec![ENQUEUED, 1, 0, 0, 0, b'c'];
        many_ids.extend_from_slice(&[0; 18]);
        many_ids.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
        assert!(Record::decode(&many_ids).is_err());
    }
}
