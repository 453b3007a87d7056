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

use super::spool::ChunkMeta;

/// Subscription options as one byte: QoS (bits 0-1), No Local (2), Retain As Published
/// (3), Retain Handling (4-5) — the MQTT 5.0 wire layout.
pub type OptionsByte = u8;

/// A persistent session's number in the store, given by the broker (unique among the
/// sessions the store holds; see [`super::state::State::last_session_id`]).
pub type SessionId = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// A persistent session exists (created, or resumed with a new expiry). The only
    /// record that names the client: every other one refers to the session by its number,
    /// so a long client id costs its bytes once per connection, not once per message.
    SessionOpened {
        session: SessionId,
        client_id: &'a str,
        /// The identity the session is bound to (verified username or certificate
        /// identity); `None` for an anonymous client.
        owner: Option<&'a str>,
        expiry: u32,
    },
    /// The session and everything queued for it are gone.
    SessionDiscarded {
        session: SessionId,
    },
    /// Its client disconnected at `at` (Unix milliseconds): the expiry counts from there.
    SessionClosed {
        session: SessionId,
        at: u64,
    },
    Subscribed {
        session: SessionId,
        filter: &'a str,
        options: OptionsByte,
        /// MQTT 5.0 Subscription Identifier, 0 for none.
        sub_id: u32,
    },
    Unsubscribed {
        session: SessionId,
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
    /// Message `message` was queued for session `session` at position `seq`.
    Enqueued {
        session: SessionId,
        seq: u64,
        message: u64,
        qos: u8,
        retain: bool,
        /// Subscription identifiers it is delivered with (MQTT 5.0).
        sub_ids: Cow<'a, [u32]>,
        /// The shared subscription (`$share/g/f`) it came through; empty for none.
        shared: &'a str,
        /// Queued in the session's spool file rather than in memory (see
        /// `store::spool`); an entry held in memory and then spooled is recorded again
        /// with this set.
        spooled: bool,
    },
    /// A checkpoint's view of a session's spool: the positions it holds and its files
    /// (the entries' sends follow as [`Record::Sent`] / [`Record::Released`]).
    SpoolState {
        session: SessionId,
        /// The highest position ever spooled.
        last: u64,
        present: Cow<'a, [(u64, u64)]>,
        chunks: Cow<'a, [ChunkMeta]>,
    },
    /// Sent with packet id `pkid` (re-sent with the same id after a restart).
    Sent {
        session: SessionId,
        seq: u64,
        pkid: u16,
    },
    /// QoS 2: PUBREC received, PUBREL owed.
    Released {
        session: SessionId,
        seq: u64,
    },
    /// Acknowledged (or dropped): gone from the session.
    Removed {
        session: SessionId,
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
        session: SessionId,
        pkid: u16,
    },
    /// Its PUBREL came.
    Qos2Completed {
        session: SessionId,
        pkid: u16,
    },
    /// A snapshot of the whole state follows, up to [`Record::CheckpointEnd`]: from
    /// there, replay goes on from the snapshot instead of what came before.
    Checkpoint,
    /// The end of a snapshot. A checkpoint without one was torn by a crash and counts for
    /// nothing (the segments before it are still there: they go only once it is synced).
    CheckpointEnd,
}

const MESSAGE: u8 = 5;
const RETAINED: u8 = 10;
const CHECKPOINT: u8 = 13;
const CHECKPOINT_END: u8 = 15;
// Session records by number (store format 2). Types 1-4, 6-9, 11, 12 and 14 were the
// same records keyed by client id (store format 1): refused on open with a
// message saying so, rather than read wrongly.
const SESSION_OPENED: u8 = 16;
const SESSION_DISCARDED: u8 = 17;
const SESSION_CLOSED: u8 = 18;
const SUBSCRIBED: u8 = 19;
const UNSUBSCRIBED: u8 = 20;
const ENQUEUED: u8 = 21;
const SENT: u8 = 22;
const RELEASED: u8 = 23;
const REMOVED: u8 = 24;
const QOS2_RECEIVED: u8 = 25;
const QOS2_COMPLETED: u8 = 26;
const SPOOLED: u8 = 27;
const SPOOL_STATE: u8 = 28;
/// Record types of store format 1 that format 2 replaced.
const FORMAT_1_SESSION_RECORDS: [u8; 11] = [1, 2, 3, 4, 6, 7, 8, 9, 11, 12, 14];

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
    fn opt_str(self, s: Option<&str>) -> Self {
        match s {
            Some(s) => self.u8(1).str(s),
            None => self.u8(0),
        }
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
    fn opt_str(&mut self) -> Result<Option<&'a str>, String> {
        Ok(if self.bool()? {
            Some(self.str()?)
        } else {
            None
        })
    }
    fn u32s(&mut self) -> Result<Vec<u32>, String> {
        self.list(4, |r| r.u32())
    }
    /// A u32 count, then that many items of `size` bytes each.
    fn list<T>(
        &mut self,
        size: usize,
        mut item: impl FnMut(&mut Self) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        let n = self.u32()? as usize;
        // Checked against what is there before allocating.
        if self.0.len() / size < n {
            return Err("record cut short".into());
        }
        (0..n).map(|_| item(self)).collect()
    }
}

impl Record<'_> {
    /// Appends the record's body to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::SessionOpened {
                session,
                client_id,
                owner,
                expiry,
            } => {
                tag(out, SESSION_OPENED)
                    .u64(*session)
                    .str(client_id)
                    .opt_str(*owner)
                    .u32(*expiry);
            }
            Record::SessionDiscarded { session } => {
                tag(out, SESSION_DISCARDED).u64(*session);
            }
            Record::SessionClosed { session, at } => {
                tag(out, SESSION_CLOSED).u64(*session).u64(*at);
            }
            Record::Subscribed {
                session,
                filter,
                options,
                sub_id,
            } => {
                tag(out, SUBSCRIBED)
                    .u64(*session)
                    .str(filter)
                    .u8(*options)
                    .u32(*sub_id);
            }
            Record::Unsubscribed { session, filter } => {
                tag(out, UNSUBSCRIBED).u64(*session).str(filter);
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
                session,
                seq,
                message,
                qos,
                retain,
                sub_ids,
                shared,
                spooled,
            } => {
                let mut w = tag(out, if *spooled { SPOOLED } else { ENQUEUED })
                    .u64(*session)
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
            Record::SpoolState {
                session,
                last,
                present,
                chunks,
            } => {
                let mut w = tag(out, SPOOL_STATE)
                    .u64(*session)
                    .u64(*last)
                    .u32(present.len() as u32);
                for (first, last) in present.iter() {
                    w = w.u64(*first).u64(*last);
                }
                w = w.u32(chunks.len() as u32);
                for c in chunks.iter() {
                    w = w.u64(c.first).u64(c.bytes).u64(c.entries);
                }
            }
            Record::Sent { session, seq, pkid } => {
                tag(out, SENT).u64(*session).u64(*seq).u16(*pkid);
            }
            Record::Released { session, seq } => {
                tag(out, RELEASED).u64(*session).u64(*seq);
            }
            Record::Removed { session, seq } => {
                tag(out, REMOVED).u64(*session).u64(*seq);
            }
            Record::Retained { topic, message } => {
                tag(out, RETAINED).str(topic).u64(*message);
            }
            Record::Qos2Received { session, pkid } => {
                tag(out, QOS2_RECEIVED).u64(*session).u16(*pkid);
            }
            Record::Qos2Completed { session, pkid } => {
                tag(out, QOS2_COMPLETED).u64(*session).u16(*pkid);
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
                session: r.u64()?,
                client_id: r.str()?,
                owner: r.opt_str()?,
                expiry: r.u32()?,
            },
            SESSION_DISCARDED => Record::SessionDiscarded { session: r.u64()? },
            SESSION_CLOSED => Record::SessionClosed {
                session: r.u64()?,
                at: r.u64()?,
            },
            SUBSCRIBED => Record::Subscribed {
                session: r.u64()?,
                filter: r.str()?,
                options: r.u8()?,
                sub_id: r.u32()?,
            },
            UNSUBSCRIBED => Record::Unsubscribed {
                session: r.u64()?,
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
            t @ (ENQUEUED | SPOOLED) => Record::Enqueued {
                session: r.u64()?,
                seq: r.u64()?,
                message: r.u64()?,
                qos: r.u8()?,
                retain: r.bool()?,
                sub_ids: Cow::Owned(r.u32s()?),
                shared: r.str()?,
                spooled: t == SPOOLED,
            },
            SPOOL_STATE => {
                let session = r.u64()?;
                let last = r.u64()?;
                let present = r.list(16, |r| Ok((r.u64()?, r.u64()?)))?;
                let chunks = r.list(24, |r| {
                    Ok(ChunkMeta {
                        first: r.u64()?,
                        bytes: r.u64()?,
                        entries: r.u64()?,
                    })
                })?;
                Record::SpoolState {
                    session,
                    last,
                    present: Cow::Owned(present),
                    chunks: Cow::Owned(chunks),
                }
            }
            SENT => Record::Sent {
                session: r.u64()?,
                seq: r.u64()?,
                pkid: r.u16()?,
            },
            RELEASED => Record::Released {
                session: r.u64()?,
                seq: r.u64()?,
            },
            REMOVED => Record::Removed {
                session: r.u64()?,
                seq: r.u64()?,
            },
            RETAINED => Record::Retained {
                topic: r.str()?,
                message: r.u64()?,
            },
            QOS2_RECEIVED => Record::Qos2Received {
                session: r.u64()?,
                pkid: r.u16()?,
            },
            QOS2_COMPLETED => Record::Qos2Completed {
                session: r.u64()?,
                pkid: r.u16()?,
            },
            CHECKPOINT => Record::Checkpoint,
            CHECKPOINT_END => Record::CheckpointEnd,
            old if FORMAT_1_SESSION_RECORDS.contains(&old) => {
                return Err(format!(
                    "record type {old} is a session record of store format 1 (keyed by \
                     client id), written by an older midge; this midge writes format 2 \
                     and cannot read it. Let the older midge deliver what is queued, or \
                     move the store directory aside"
                ))
            }
            other => return Err(format!("unknown record type {other}")),
        };
        if !r.0.is_empty() {
            return Err("trailing bytes after the record".into());
        }
        Ok(record)
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
pub(crate) mod tests;
