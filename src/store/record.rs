//! What the durable store writes: one record per change to durable state, and the replay
//! that turns the records of a log back into that state.
//!
//! A message is written once ([`Record::Message`]) and referenced by id from every
//! persistent session queue it lands in ([`Record::Enqueued`]) and from the retained store
//! ([`Record::Retained`]), as the broker holds it once in memory. A message no queue and no
//! retained topic refers to any more is dead: [`Replay`] drops it, and a compaction writes
//! only what [`Replay`] still holds (see [`Replay::snapshot`]).
//!
//! Encoding: a tag byte, then fields; strings and byte strings as a u32 length and the
//! bytes; integers little-endian. Decoding checks every length against the record, so a
//! damaged record is an error, never a panic or a huge allocation.

use std::collections::{BTreeMap, HashMap};

/// Subscription options as one byte: QoS (bits 0-1), No Local (2), Retain As Published
/// (3), Retain Handling (4-5) — the MQTT 5.0 wire layout.
pub type OptionsByte = u8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A persistent session exists (created, or resumed with a new expiry).
    SessionOpened {
        client_id: String,
        expiry: u32,
    },
    /// The session and everything queued for it are gone.
    SessionDiscarded {
        client_id: String,
    },
    Subscribed {
        client_id: String,
        filter: String,
        options: OptionsByte,
        /// MQTT 5.0 Subscription Identifier, 0 for none.
        sub_id: u32,
    },
    Unsubscribed {
        client_id: String,
        filter: String,
    },
    /// An application message, stored once.
    Message {
        id: u64,
        topic: String,
        qos: u8,
        retain: bool,
        payload: Vec<u8>,
        /// MQTT 5.0 properties in their wire encoding (empty for none).
        properties: Vec<u8>,
        /// Unix time (seconds) after which it is not delivered; 0 = never.
        expires_at: u64,
    },
    /// Message `message` was queued for `client_id` at position `seq`.
    Enqueued {
        client_id: String,
        seq: u64,
        message: u64,
        qos: u8,
        retain: bool,
    },
    /// Sent with packet id `pkid` (re-sent with the same id after a restart).
    Sent {
        client_id: String,
        seq: u64,
        pkid: u16,
    },
    /// QoS 2: PUBREC received, PUBREL owed.
    Released {
        client_id: String,
        seq: u64,
    },
    /// Acknowledged (or dropped by policy): gone from the session.
    Removed {
        client_id: String,
        seq: u64,
    },
    /// The retained message of `topic`: `message` 0 clears it.
    Retained {
        topic: String,
        message: u64,
    },
    /// A QoS 2 PUBLISH from the client was acknowledged with PUBREC (a re-send after a
    /// restart must not be delivered twice).
    Qos2Received {
        client_id: String,
        pkid: u16,
    },
    /// Its PUBREL came.
    Qos2Completed {
        client_id: String,
        pkid: u16,
    },
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

struct W(Vec<u8>);

impl W {
    fn tag(t: u8) -> W {
        W(vec![t])
    }
    fn u8(mut self, v: u8) -> W {
        self.0.push(v);
        self
    }
    fn u16(mut self, v: u16) -> W {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(mut self, v: u32) -> W {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> W {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(mut self, b: &[u8]) -> W {
        self.0.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.0.extend_from_slice(b);
        self
    }
    fn str(self, s: &str) -> W {
        self.bytes(s.as_bytes())
    }
}

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
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, String> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?).map_err(|_| "string is not UTF-8".into())
    }
    fn bool(&mut self) -> Result<bool, String> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err("bad boolean".into()),
        }
    }
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Record::SessionOpened { client_id, expiry } => {
                W::tag(SESSION_OPENED).str(client_id).u32(*expiry)
            }
            Record::SessionDiscarded { client_id } => W::tag(SESSION_DISCARDED).str(client_id),
            Record::Subscribed {
                client_id,
                filter,
                options,
                sub_id,
            } => W::tag(SUBSCRIBED)
                .str(client_id)
                .str(filter)
                .u8(*options)
                .u32(*sub_id),
            Record::Unsubscribed { client_id, filter } => {
                W::tag(UNSUBSCRIBED).str(client_id).str(filter)
            }
            Record::Message {
                id,
                topic,
                qos,
                retain,
                payload,
                properties,
                expires_at,
            } => W::tag(MESSAGE)
                .u64(*id)
                .str(topic)
                .u8(*qos)
                .u8(u8::from(*retain))
                .bytes(payload)
                .bytes(properties)
                .u64(*expires_at),
            Record::Enqueued {
                client_id,
                seq,
                message,
                qos,
                retain,
            } => W::tag(ENQUEUED)
                .str(client_id)
                .u64(*seq)
                .u64(*message)
                .u8(*qos)
                .u8(u8::from(*retain)),
            Record::Sent {
                client_id,
                seq,
                pkid,
            } => W::tag(SENT).str(client_id).u64(*seq).u16(*pkid),
            Record::Released { client_id, seq } => W::tag(RELEASED).str(client_id).u64(*seq),
            Record::Removed { client_id, seq } => W::tag(REMOVED).str(client_id).u64(*seq),
            Record::Retained { topic, message } => W::tag(RETAINED).str(topic).u64(*message),
            Record::Qos2Received { client_id, pkid } => {
                W::tag(QOS2_RECEIVED).str(client_id).u16(*pkid)
            }
            Record::Qos2Completed { client_id, pkid } => {
                W::tag(QOS2_COMPLETED).str(client_id).u16(*pkid)
            }
        }
        .0
    }

    pub fn decode(bytes: &[u8]) -> Result<Record, String> {
        let mut r = R(bytes);
        let record = match r.u8()? {
            SESSION_OPENED => Record::SessionOpened {
                client_id: r.string()?,
                expiry: r.u32()?,
            },
            SESSION_DISCARDED => Record::SessionDiscarded {
                client_id: r.string()?,
            },
            SUBSCRIBED => Record::Subscribed {
                client_id: r.string()?,
                filter: r.string()?,
                options: r.u8()?,
                sub_id: r.u32()?,
            },
            UNSUBSCRIBED => Record::Unsubscribed {
                client_id: r.string()?,
                filter: r.string()?,
            },
            MESSAGE => Record::Message {
                id: r.u64()?,
                topic: r.string()?,
                qos: r.u8()?,
                retain: r.bool()?,
                payload: r.bytes()?,
                properties: r.bytes()?,
                expires_at: r.u64()?,
            },
            ENQUEUED => Record::Enqueued {
                client_id: r.string()?,
                seq: r.u64()?,
                message: r.u64()?,
                qos: r.u8()?,
                retain: r.bool()?,
            },
            SENT => Record::Sent {
                client_id: r.string()?,
                seq: r.u64()?,
                pkid: r.u16()?,
            },
            RELEASED => Record::Released {
                client_id: r.string()?,
                seq: r.u64()?,
            },
            REMOVED => Record::Removed {
                client_id: r.string()?,
                seq: r.u64()?,
            },
            RETAINED => Record::Retained {
                topic: r.string()?,
                message: r.u64()?,
            },
            QOS2_RECEIVED => Record::Qos2Received {
                client_id: r.string()?,
                pkid: r.u16()?,
            },
            QOS2_COMPLETED => Record::Qos2Completed {
                client_id: r.string()?,
                pkid: r.u16()?,
            },
            other => return Err(format!("unknown record type {other}")),
        };
        if !r.0.is_empty() {
            return Err("trailing bytes after the record".into());
        }
        Ok(record)
    }
}

/// A queued message of a recovered session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub message: u64,
    pub qos: u8,
    pub retain: bool,
    /// Packet id it was sent with, if it was.
    pub pkid: Option<u16>,
    /// QoS 2: PUBREC received.
    pub released: bool,
}

/// A recovered persistent session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionImage {
    pub expiry: u32,
    pub subscriptions: BTreeMap<String, (OptionsByte, u32)>,
    /// By sequence number: the send order.
    pub queue: BTreeMap<u64, Entry>,
    pub qos2_received: std::collections::BTreeSet<u16>,
}

/// The durable state a sequence of records describes: replaying a log's records in order
/// gives what the broker held when they were written.
#[derive(Debug, Default)]
pub struct Replay {
    pub sessions: HashMap<String, SessionImage>,
    /// Live messages by id, with how many queue entries and retained topics refer to them.
    pub messages: HashMap<u64, (Record, usize)>,
    pub retained: BTreeMap<String, u64>,
    /// The highest message id seen: new ids continue after it.
    pub last_message_id: u64,
}

impl Replay {
    /// Applies one record. A record that refers to something unknown (a session or
    /// message whose earlier records were compacted away as dead) is ignored.
    pub fn apply(&mut self, record: Record) {
        match record {
            Record::SessionOpened { client_id, expiry } => {
                self.sessions.entry(client_id).or_default().expiry = expiry;
            }
            Record::SessionDiscarded { client_id } => {
                if let Some(s) = self.sessions.remove(&client_id) {
                    for e in s.queue.values() {
                        self.release(e.message);
                    }
                }
            }
            Record::Subscribed {
                client_id,
                filter,
                options,
                sub_id,
            } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.subscriptions.insert(filter, (options, sub_id));
                }
            }
            Record::Unsubscribed { client_id, filter } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.subscriptions.remove(&filter);
                }
            }
            Record::Message { id, .. } => {
                self.last_message_id = self.last_message_id.max(id);
                self.messages.insert(id, (record, 0));
            }
            Record::Enqueued {
                client_id,
                seq,
                message,
                qos,
                retain,
            } => {
                let Some(s) = self.sessions.get_mut(&client_id) else {
                    return;
                };
                let Some(m) = self.messages.get_mut(&message) else {
                    return;
                };
                m.1 += 1;
                s.queue.insert(
                    seq,
                    Entry {
                        message,
                        qos,
                        retain,
                        pkid: None,
                        released: false,
                    },
                );
            }
            Record::Sent {
                client_id,
                seq,
                pkid,
            } => {
                if let Some(e) = self.entry(&client_id, seq) {
                    e.pkid = Some(pkid);
                }
            }
            Record::Released { client_id, seq } => {
                if let Some(e) = self.entry(&client_id, seq) {
                    e.released = true;
                }
            }
            Record::Removed { client_id, seq } => {
                let removed = self
                    .sessions
                    .get_mut(&client_id)
                    .and_then(|s| s.queue.remove(&seq));
                if let Some(e) = removed {
                    self.release(e.message);
                }
            }
            Record::Retained { topic, message } => {
                if let Some(old) = self.retained.remove(&topic) {
                    self.release(old);
                }
                if message != 0 {
                    if let Some(m) = self.messages.get_mut(&message) {
                        m.1 += 1;
                        self.retained.insert(topic, message);
                    }
                }
            }
            Record::Qos2Received { client_id, pkid } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.qos2_received.insert(pkid);
                }
            }
            Record::Qos2Completed { client_id, pkid } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.qos2_received.remove(&pkid);
                }
            }
        }
    }

    fn entry(&mut self, client_id: &str, seq: u64) -> Option<&mut Entry> {
        self.sessions.get_mut(client_id)?.queue.get_mut(&seq)
    }

    /// One reference to a message fewer; the last one lets it go.
    fn release(&mut self, id: u64) {
        if let Some(m) = self.messages.get_mut(&id) {
            m.1 = m.1.saturating_sub(1);
            if m.1 == 0 {
                self.messages.remove(&id);
            }
        }
    }

    /// Messages stored but not (yet) referred to are dropped: a message whose queue
    /// entries were never written (the broker died between the two) is not state.
    pub fn drop_unreferenced(&mut self) {
        self.messages.retain(|_, (_, refs)| *refs > 0);
    }

    /// The records that rebuild this state from nothing: what a compaction writes.
    pub fn snapshot(&self) -> Vec<Record> {
        let mut out = Vec::new();
        let mut ids: Vec<&u64> = self.messages.keys().collect();
        ids.sort();
        for id in ids {
            out.push(self.messages[id].0.clone());
        }
        let mut names: Vec<&String> = self.sessions.keys().collect();
        names.sort();
        for name in names {
            let s = &self.sessions[name];
            out.push(Record::SessionOpened {
                client_id: name.clone(),
                expiry: s.expiry,
            });
            for (filter, (options, sub_id)) in &s.subscriptions {
                out.push(Record::Subscribed {
                    client_id: name.clone(),
                    filter: filter.clone(),
                    options: *options,
                    sub_id: *sub_id,
                });
            }
            for (seq, e) in &s.queue {
                out.push(Record::Enqueued {
                    client_id: name.clone(),
                    seq: *seq,
                    message: e.message,
                    qos: e.qos,
                    retain: e.retain,
                });
                if let Some(pkid) = e.pkid {
                    out.push(Record::Sent {
                        client_id: name.clone(),
                        seq: *seq,
                        pkid,
                    });
                }
                if e.released {
                    out.push(Record::Released {
                        client_id: name.clone(),
                        seq: *seq,
                    });
                }
            }
            for pkid in &s.qos2_received {
                out.push(Record::Qos2Received {
                    client_id: name.clone(),
                    pkid: *pkid,
                });
            }
        }
        for (topic, message) in &self.retained {
            out.push(Record::Retained {
                topic: topic.clone(),
                message: *message,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: u64, topic: &str) -> Record {
        Record::Message {
            id,
            topic: topic.into(),
            qos: 1,
            retain: false,
            payload: format!("payload-{id}").into_bytes(),
            properties: vec![],
            expires_at: 0,
        }
    }

    fn every_kind() -> Vec<Record> {
        let c = || "dev-1".to_string();
        vec![
            Record::SessionOpened {
                client_id: c(),
                expiry: u32::MAX,
            },
            Record::Subscribed {
                client_id: c(),
                filter: "a/#".into(),
                options: 0x0D,
                sub_id: 7,
            },
            msg(1, "a/b"),
            Record::Enqueued {
                client_id: c(),
                seq: 1,
                message: 1,
                qos: 1,
                retain: false,
            },
            Record::Sent {
                client_id: c(),
                seq: 1,
                pkid: 9,
            },
            Record::Released {
                client_id: c(),
                seq: 1,
            },
            Record::Retained {
                topic: "a/b".into(),
                message: 1,
            },
            Record::Qos2Received {
                client_id: c(),
                pkid: 3,
            },
            Record::Qos2Completed {
                client_id: c(),
                pkid: 3,
            },
            Record::Removed {
                client_id: c(),
                seq: 1,
            },
            Record::Unsubscribed {
                client_id: c(),
                filter: "a/#".into(),
            },
            Record::SessionDiscarded { client_id: c() },
        ]
    }

    #[test]
    fn every_record_round_trips() {
        for r in every_kind() {
            assert_eq!(Record::decode(&r.encode()), Ok(r.clone()));
        }
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        for r in every_kind() {
            let bytes = r.encode();
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
    }

    #[test]
    fn replay_keeps_what_is_live_and_lets_the_rest_go() {
        let mut r = Replay::default();
        for rec in every_kind().into_iter().take(9) {
            r.apply(rec);
        }
        let s = &r.sessions["dev-1"];
        assert_eq!(s.subscriptions["a/#"], (0x0D, 7));
        assert_eq!(
            s.queue[&1],
            Entry {
                message: 1,
                qos: 1,
                retain: false,
                pkid: Some(9),
                released: true
            }
        );
        assert!(s.qos2_received.is_empty());
        assert_eq!(r.messages[&1].1, 2, "queued once, retained once");
        // Acknowledged: still retained, so still stored.
        r.apply(Record::Removed {
            client_id: "dev-1".into(),
            seq: 1,
        });
        assert_eq!(r.messages[&1].1, 1);
        // Retained cleared: nothing refers to it any more.
        r.apply(Record::Retained {
            topic: "a/b".into(),
            message: 0,
        });
        assert!(r.messages.is_empty());
        assert_eq!(r.last_message_id, 1);
    }

    #[test]
    fn a_discarded_session_releases_its_messages() {
        let mut r = Replay::default();
        r.apply(Record::SessionOpened {
            client_id: "s".into(),
            expiry: 60,
        });
        for id in 1..=3 {
            r.apply(msg(id, "t"));
            r.apply(Record::Enqueued {
                client_id: "s".into(),
                seq: id,
                message: id,
                qos: 1,
                retain: false,
            });
        }
        r.apply(msg(4, "t")); // stored, never queued
        r.drop_unreferenced();
        assert_eq!(r.messages.len(), 3);
        r.apply(Record::SessionDiscarded {
            client_id: "s".into(),
        });
        assert!(r.messages.is_empty() && r.sessions.is_empty());
    }

    #[test]
    fn a_snapshot_rebuilds_the_same_state() {
        let mut r = Replay::default();
        for rec in every_kind().into_iter().take(9) {
            r.apply(rec);
        }
        r.apply(Record::SessionOpened {
            client_id: "other".into(),
            expiry: 5,
        });
        let mut again = Replay::default();
        for rec in r.snapshot() {
            again.apply(Record::decode(&rec.encode()).unwrap());
        }
        assert_eq!(again.sessions, r.sessions);
        assert_eq!(again.retained, r.retained);
        assert_eq!(
            again.messages.keys().collect::<Vec<_>>(),
            r.messages.keys().collect::<Vec<_>>()
        );
        for (id, (rec, refs)) in &r.messages {
            assert_eq!(&again.messages[id].0, rec);
            assert_eq!(again.messages[id].1, *refs);
        }
    }
}
