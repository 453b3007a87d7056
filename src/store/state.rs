//! The durable state as the store's records describe it: persistent sessions (their
//! subscriptions, queued and inflight messages, incoming QoS 2 ids), the messages they
//! refer to, and the retained messages.
//!
//! The same [`State`] serves twice. On start, replaying the log's records into it gives
//! what the broker held when it stopped, and the broker is rebuilt from it. While running,
//! the store applies every record to it as it writes the record, so it always knows what
//! is live on disk: whether a message still has to be written (it is written once, while
//! anything refers to it), which records would change nothing (and need no write), and
//! what a compaction must keep ([`State::snapshot`]). It holds messages as the broker's
//! own `Arc`s, so it costs an index, not a second copy of the payloads.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::codec;
use crate::id_hash::IdMap;
use crate::message::{Message, SharedMessage};

use super::record::{OptionsByte, Record, SessionId};

/// Accounted per queue entry in [`State::live_bytes`] besides its message.
const ENTRY_BYTES: u64 = 64;

/// A queued or inflight message of a persistent session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub message: u64,
    pub qos: u8,
    pub retain: bool,
    /// Packet id it was sent with, if it was.
    pub pkid: Option<u16>,
    /// QoS 2: PUBREC received.
    pub released: bool,
    pub sub_ids: Vec<u32>,
    /// The shared subscription it came through.
    pub shared: Option<Arc<str>>,
}

/// A persistent session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionImage {
    pub client_id: String,
    /// The identity the session is bound to; `None`: anonymous.
    pub owner: Option<String>,
    pub expiry: u32,
    /// When its client disconnected (Unix milliseconds); 0 while connected.
    pub closed_at: u64,
    /// Filter → (options, subscription identifier or 0).
    pub subscriptions: BTreeMap<String, (OptionsByte, u32)>,
    /// By sequence number: the send order.
    pub queue: BTreeMap<u64, Entry>,
    pub qos2_received: BTreeSet<u16>,
}

#[derive(Debug, Default)]
pub struct State {
    /// By the number the broker gave the session (its own numbers: see `id_hash`).
    pub sessions: IdMap<SessionId, SessionImage>,
    /// Live messages by id, with how many queue entries and retained topics refer to them.
    pub messages: IdMap<u64, (SharedMessage, usize)>,
    pub retained: BTreeMap<String, u64>,
    /// The highest message id used: new ids continue after it.
    pub last_message_id: u64,
    /// The highest session number seen: the broker numbers new sessions after it, so a
    /// number is never given to two sessions the store holds.
    pub last_session_id: SessionId,
    /// About how many bytes a snapshot of this state takes: what compaction keeps.
    pub live_bytes: u64,
}

impl State {
    /// Applies one record. Returns whether it changed anything: a record about a session
    /// or queue entry that is not (or no longer) durable changes nothing, and is not
    /// written at all while running. A Message record that cannot be read back is an
    /// error (corruption).
    ///
    /// Checkpoint markers change nothing here: [`Replay`] is what acts on them.
    pub fn apply(&mut self, record: &Record) -> Result<bool, String> {
        Ok(match record {
            Record::Checkpoint | Record::CheckpointEnd => false,
            Record::SessionOpened {
                session,
                client_id,
                owner,
                expiry,
            } => {
                self.last_session_id = self.last_session_id.max(*session);
                let s = self.sessions.entry(*session).or_default();
                if s.client_id != *client_id {
                    s.client_id = (*client_id).to_owned();
                }
                if s.owner.as_deref() != *owner {
                    s.owner = owner.map(str::to_owned);
                }
                s.expiry = *expiry;
                s.closed_at = 0;
                true
            }
            Record::SessionClosed { session, at } => match self.sessions.get_mut(session) {
                Some(s) => {
                    s.closed_at = *at;
                    true
                }
                None => false,
            },
            Record::SessionDiscarded { session } => match self.sessions.remove(session) {
                Some(s) => {
                    for e in s.queue.values() {
                        self.live_bytes = self.live_bytes.saturating_sub(ENTRY_BYTES);
                        self.release(e.message);
                    }
                    true
                }
                None => false,
            },
            Record::Subscribed {
                session,
                filter,
                options,
                sub_id,
            } => match self.sessions.get_mut(session) {
                Some(s) => {
                    s.subscriptions
                        .insert((*filter).to_owned(), (*options, *sub_id));
                    true
                }
                None => false,
            },
            Record::Unsubscribed { session, filter } => self
                .sessions
                .get_mut(session)
                .is_some_and(|s| s.subscriptions.remove(*filter).is_some()),
            Record::Message { id, .. } => {
                if !self.messages.contains_key(id) {
                    self.add_message(Arc::new(decode_message(record)?));
                }
                true
            }
            Record::Enqueued {
                session,
                seq,
                message,
                qos,
                retain,
                sub_ids,
                shared,
            } => {
                let Some(s) = self.sessions.get_mut(session) else {
                    return Ok(false);
                };
                let Some(m) = self.messages.get_mut(message) else {
                    return Ok(false);
                };
                m.1 += 1;
                let entry = Entry {
                    message: *message,
                    qos: *qos,
                    retain: *retain,
                    pkid: None,
                    released: false,
                    sub_ids: sub_ids.to_vec(),
                    shared: (!shared.is_empty()).then(|| Arc::from(*shared)),
                };
                match s.queue.insert(*seq, entry) {
                    Some(old) => self.release(old.message),
                    None => self.live_bytes += ENTRY_BYTES,
                }
                true
            }
            Record::Sent { session, seq, pkid } => self.entry(*session, *seq).is_some_and(|e| {
                e.pkid = Some(*pkid);
                true
            }),
            Record::Released { session, seq } => self.entry(*session, *seq).is_some_and(|e| {
                e.released = true;
                true
            }),
            Record::Removed { session, seq } => {
                let removed = self
                    .sessions
                    .get_mut(session)
                    .and_then(|s| s.queue.remove(seq));
                match removed {
                    Some(e) => {
                        self.live_bytes = self.live_bytes.saturating_sub(ENTRY_BYTES);
                        self.release(e.message);
                        true
                    }
                    None => false,
                }
            }
            Record::Retained { topic, message } => {
                let old = self.retained.remove(*topic);
                if let Some(old) = old {
                    self.release(old);
                }
                let set = *message != 0
                    && match self.messages.get_mut(message) {
                        Some(m) => {
                            m.1 += 1;
                            true
                        }
                        None => false,
                    };
                if set {
                    self.retained.insert((*topic).to_owned(), *message);
                }
                set || old.is_some()
            }
            Record::Qos2Received { session, pkid } => self
                .sessions
                .get_mut(session)
                .is_some_and(|s| s.qos2_received.insert(*pkid)),
            Record::Qos2Completed { session, pkid } => self
                .sessions
                .get_mut(session)
                .is_some_and(|s| s.qos2_received.remove(pkid)),
        })
    }

    /// Adds a message (by its store id) with no references yet; the record that refers
    /// to it follows.
    pub fn add_message(&mut self, msg: SharedMessage) {
        let id = msg.store_id();
        self.last_message_id = self.last_message_id.max(id);
        self.live_bytes += message_bytes(&msg);
        self.messages.insert(id, (msg, 0));
    }

    pub fn has_message(&self, id: u64) -> bool {
        id != 0 && self.messages.contains_key(&id)
    }

    pub fn has_session(&self, session: SessionId) -> bool {
        self.sessions.contains_key(&session)
    }

    fn entry(&mut self, session: SessionId, seq: u64) -> Option<&mut Entry> {
        self.sessions.get_mut(&session)?.queue.get_mut(&seq)
    }

    /// One reference to a message fewer; the last one lets it go.
    fn release(&mut self, id: u64) {
        if let Some(m) = self.messages.get_mut(&id) {
            m.1 = m.1.saturating_sub(1);
            if m.1 == 0 {
                if let Some((msg, _)) = self.messages.remove(&id) {
                    self.live_bytes = self.live_bytes.saturating_sub(message_bytes(&msg));
                }
            }
        }
    }

    /// Drops messages nothing refers to: one whose queue entries were never written (the
    /// broker died between the two) is not state.
    pub fn drop_unreferenced(&mut self) {
        let mut freed = 0;
        self.messages.retain(|_, (msg, refs)| {
            if *refs == 0 {
                freed += message_bytes(msg);
            }
            *refs > 0
        });
        self.live_bytes = self.live_bytes.saturating_sub(freed);
    }

    /// Drops queued (never sent) entries whose message has expired: they would never be
    /// delivered [MQTT-3.3.2-5]. Returns how many.
    pub fn drop_expired(&mut self, now: Instant) -> usize {
        let expired: Vec<(SessionId, u64)> = self
            .sessions
            .iter()
            .flat_map(|(id, s)| {
                s.queue.iter().filter_map(|(seq, e)| {
                    let gone = e.pkid.is_none()
                        && self
                            .messages
                            .get(&e.message)
                            .is_some_and(|(m, _)| m.is_expired(now));
                    gone.then_some((*id, *seq))
                })
            })
            .collect();
        for (session, seq) in &expired {
            let _ = self.apply(&Record::Removed {
                session: *session,
                seq: *seq,
            });
        }
        expired.len()
    }

    /// Sessions, queued messages and retained messages.
    pub fn counts(&self) -> (usize, usize, usize) {
        let queued = self.sessions.values().map(|s| s.queue.len()).sum();
        (self.sessions.len(), queued, self.retained.len())
    }

    /// Hands `out` the records that rebuild this state from nothing, between a
    /// [`Record::Checkpoint`] and a [`Record::CheckpointEnd`]: what a compaction writes.
    pub fn snapshot(&self, mut out: impl FnMut(&Record)) {
        out(&Record::Checkpoint);
        let mut ids: Vec<&u64> = self.messages.keys().collect();
        ids.sort_unstable();
        for id in ids {
            let (msg, _) = &self.messages[id];
            out(&message_record(msg));
        }
        for (&session, s) in &self.sessions {
            out(&Record::SessionOpened {
                session,
                client_id: &s.client_id,
                owner: s.owner.as_deref(),
                expiry: s.expiry,
            });
            if s.closed_at != 0 {
                out(&Record::SessionClosed {
                    session,
                    at: s.closed_at,
                });
            }
            for (filter, (options, sub_id)) in &s.subscriptions {
                out(&Record::Subscribed {
                    session,
                    filter,
                    options: *options,
                    sub_id: *sub_id,
                });
            }
            for (seq, e) in &s.queue {
                out(&Record::Enqueued {
                    session,
                    seq: *seq,
                    message: e.message,
                    qos: e.qos,
                    retain: e.retain,
                    sub_ids: Cow::Borrowed(&e.sub_ids),
                    shared: e.shared.as_deref().unwrap_or(""),
                });
                if let Some(pkid) = e.pkid {
                    out(&Record::Sent {
                        session,
                        seq: *seq,
                        pkid,
                    });
                }
                if e.released {
                    out(&Record::Released { session, seq: *seq });
                }
            }
            for pkid in &s.qos2_received {
                out(&Record::Qos2Received {
                    session,
                    pkid: *pkid,
                });
            }
        }
        for (topic, message) in &self.retained {
            out(&Record::Retained {
                topic,
                message: *message,
            });
        }
        out(&Record::CheckpointEnd);
    }
}

/// Replays a log into a [`State`]. The records of a checkpoint build a new state beside
/// the current one, which they replace only at [`Record::CheckpointEnd`]: a checkpoint
/// torn by a crash leaves the state as the records before it made it.
#[derive(Debug, Default)]
pub struct Replay {
    state: State,
    building: Option<State>,
}

impl Replay {
    pub fn apply(&mut self, record: &Record) -> Result<(), String> {
        match record {
            Record::Checkpoint => {
                self.building = Some(State {
                    last_message_id: self.state.last_message_id,
                    last_session_id: self.state.last_session_id,
                    ..State::default()
                });
            }
            Record::CheckpointEnd => {
                if let Some(mut done) = self.building.take() {
                    done.last_message_id = done.last_message_id.max(self.state.last_message_id);
                    done.last_session_id = done.last_session_id.max(self.state.last_session_id);
                    self.state = done;
                }
            }
            _ => {
                self.building
                    .as_mut()
                    .unwrap_or(&mut self.state)
                    .apply(record)?;
            }
        }
        Ok(())
    }

    /// The state, and whether a checkpoint at the end was unfinished (and ignored).
    pub fn finish(self) -> (State, bool) {
        (self.state, self.building.is_some())
    }
}

/// Bytes a message accounts for in [`State::live_bytes`].
fn message_bytes(msg: &Message) -> u64 {
    (msg.size() + 64) as u64
}

/// The record that stores `msg` (which has its store id).
pub fn message_record(msg: &Message) -> Record<'_> {
    let properties = match &msg.props {
        Some(p) => Cow::Owned(codec::encode_message_props(p)),
        None => Cow::Borrowed(&[][..]),
    };
    Record::Message {
        id: msg.store_id(),
        topic: &msg.topic,
        qos: msg.qos as u8,
        retain: msg.retain,
        payload: &msg.payload,
        properties,
        expires_at: msg.expires_at.map_or(0, unix_millis),
    }
}

/// The message a Message record stores.
fn decode_message(record: &Record) -> Result<Message, String> {
    let Record::Message {
        id,
        topic,
        qos,
        retain,
        payload,
        properties,
        expires_at,
    } = record
    else {
        return Err("not a message record".into());
    };
    let qos = codec::qos_from_u8(*qos).ok_or_else(|| format!("message {id}: bad QoS {qos}"))?;
    let props = if properties.is_empty() {
        None
    } else {
        codec::decode_message_props(properties)
            .map_err(|e| format!("message {id}: bad properties: {e}"))?
    };
    let expires_at = (*expires_at != 0).then(|| instant_from_unix_millis(*expires_at));
    Ok(Message::restored(
        (*topic).to_owned(),
        Bytes::copy_from_slice(payload),
        qos,
        *retain,
        props,
        expires_at,
        *id,
    ))
}

/// An instant as wall-clock Unix milliseconds (instants do not survive a restart).
pub fn unix_millis(at: Instant) -> u64 {
    let now = Instant::now();
    let wall = SystemTime::now();
    let t = if at >= now {
        wall + (at - now)
    } else {
        wall - (now - at)
    };
    t.duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis().max(1) as u64)
}

pub fn instant_from_unix_millis(ms: u64) -> Instant {
    let now = Instant::now();
    let wall_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    if ms >= wall_ms {
        now + Duration::from_millis(ms - wall_ms)
    } else {
        now.checked_sub(Duration::from_millis(wall_ms - ms))
            .unwrap_or(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::QoS;
    use crate::store::record::tests::every_kind;

    fn encoded(r: &Record) -> Vec<u8> {
        let mut out = Vec::new();
        r.encode(&mut out);
        out
    }

    /// The session of the tests below.
    const S: SessionId = 5;

    fn opened(session: SessionId, client_id: &str, expiry: u32) -> Record<'_> {
        Record::SessionOpened {
            session,
            client_id,
            owner: None,
            expiry,
        }
    }

    fn enqueue(seq: u64, message: u64) -> Record<'static> {
        Record::Enqueued {
            session: S,
            seq,
            message,
            qos: 1,
            retain: false,
            sub_ids: Cow::Borrowed(&[]),
            shared: "",
        }
    }

    fn message(id: u64) -> Record<'static> {
        Record::Message {
            id,
            topic: "t",
            qos: 1,
            retain: false,
            payload: b"p",
            properties: Cow::Borrowed(&[]),
            expires_at: 0,
        }
    }

    #[test]
    fn replay_keeps_what_is_live_and_lets_the_rest_go() {
        let mut st = State::default();
        for rec in every_kind().into_iter().take(10) {
            st.apply(&rec).unwrap();
        }
        let s = &st.sessions[&1];
        assert_eq!(s.subscriptions["a/#"], (0x0D, 7));
        let e = &s.queue[&1];
        assert_eq!(
            (e.pkid, e.released, &e.sub_ids[..]),
            (Some(9), true, &[7, 9][..])
        );
        assert!(s.qos2_received.is_empty());
        assert_eq!(st.messages[&1].1, 2, "queued once, retained once");
        assert_eq!(&st.messages[&1].0.payload[..], b"payload-1");
        // Acknowledged: still retained, so still stored.
        assert!(st.apply(&Record::Removed { session: 1, seq: 1 }).unwrap());
        assert_eq!(st.messages[&1].1, 1);
        // Retained cleared: nothing refers to it any more.
        st.apply(&Record::Retained {
            topic: "a/b",
            message: 0,
        })
        .unwrap();
        assert!(st.messages.is_empty());
        assert_eq!(st.last_message_id, 1);
        // Records about what is gone change nothing.
        assert!(!st.apply(&Record::Removed { session: 1, seq: 1 }).unwrap());
        assert!(!st.apply(&Record::SessionDiscarded { session: 99 }).unwrap());
    }

    #[test]
    fn a_discarded_session_releases_its_messages() {
        let mut st = State::default();
        st.apply(&opened(S, "s", 60)).unwrap();
        for id in 1..=3 {
            st.apply(&message(id)).unwrap();
            st.apply(&enqueue(id, id)).unwrap();
        }
        st.apply(&message(4)).unwrap(); // stored, never queued
        st.drop_unreferenced();
        assert_eq!(st.messages.len(), 3);
        st.apply(&Record::SessionDiscarded { session: S }).unwrap();
        assert!(st.messages.is_empty() && st.sessions.is_empty());
        assert_eq!(st.live_bytes, 0);
    }

    #[test]
    fn a_checkpoint_starts_over_and_a_snapshot_rebuilds_the_same_state() {
        let mut st = State::default();
        for rec in every_kind().into_iter().take(10) {
            st.apply(&rec).unwrap();
        }
        st.apply(&Record::SessionOpened {
            session: 2,
            client_id: "other",
            owner: Some("bob"),
            expiry: 5,
        })
        .unwrap();
        // Replayed on top of the same records (old segments not yet deleted), the
        // checkpoint replaces what came before.
        let mut again = Replay::default();
        for rec in every_kind().into_iter().take(10) {
            again.apply(&rec).unwrap();
        }
        let mut bytes = Vec::new();
        st.snapshot(|r| bytes.push(encoded(r)));
        for b in &bytes {
            again.apply(&Record::decode(b).unwrap()).unwrap();
        }
        let (again, torn) = again.finish();
        assert!(!torn);
        assert_eq!(again.sessions, st.sessions);
        assert_eq!(again.retained, st.retained);
        assert_eq!(again.live_bytes, st.live_bytes);
        for (id, (msg, refs)) in &st.messages {
            assert_eq!(again.messages[id].0.payload, msg.payload);
            assert_eq!(again.messages[id].1, *refs);
        }
    }

    #[test]
    fn a_checkpoint_cut_short_leaves_the_state_before_it() {
        let mut st = State::default();
        for rec in every_kind().into_iter().take(10) {
            st.apply(&rec).unwrap();
        }
        let mut bytes = Vec::new();
        st.snapshot(|r| bytes.push(encoded(r)));
        // Every cut inside the snapshot: the records before it stand.
        for cut in 1..bytes.len() {
            let mut replay = Replay::default();
            for rec in every_kind().into_iter().take(10) {
                replay.apply(&rec).unwrap();
            }
            for b in &bytes[..cut] {
                replay.apply(&Record::decode(b).unwrap()).unwrap();
            }
            let (got, torn) = replay.finish();
            assert!(torn, "cut at {cut}");
            assert_eq!(got.sessions, st.sessions, "cut at {cut}");
            assert_eq!(got.retained, st.retained, "cut at {cut}");
        }
    }

    #[test]
    fn owners_and_session_numbers_survive_a_checkpoint() {
        let mut replay = Replay::default();
        for (session, client_id, owner) in [(3, "a", Some("alice")), (9, "b", None)] {
            replay
                .apply(&Record::SessionOpened {
                    session,
                    client_id,
                    owner,
                    expiry: 60,
                })
                .unwrap();
        }
        // Reopened by its owner with a new expiry: still one session.
        replay
            .apply(&Record::SessionOpened {
                session: 3,
                client_id: "a",
                owner: Some("alice"),
                expiry: 120,
            })
            .unwrap();
        replay
            .apply(&Record::SessionDiscarded { session: 9 })
            .unwrap();
        let mut snapshot = Vec::new();
        replay.state.snapshot(|r| snapshot.push(encoded(r)));
        for b in &snapshot {
            replay.apply(&Record::decode(b).unwrap()).unwrap();
        }
        let (st, torn) = replay.finish();
        assert!(!torn);
        assert_eq!(st.sessions.len(), 1);
        let a = &st.sessions[&3];
        assert_eq!(
            (a.client_id.as_str(), a.owner.as_deref(), a.expiry),
            ("a", Some("alice"), 120)
        );
        // 9 is gone, but its number is never given again while the log may hold it.
        assert_eq!(st.last_session_id, 9);
    }

    #[test]
    fn records_of_another_session_number_do_not_touch_a_session() {
        let mut st = State::default();
        st.apply(&opened(S, "s", 60)).unwrap();
        st.apply(&message(1)).unwrap();
        st.apply(&enqueue(1, 1)).unwrap();
        assert!(!st
            .apply(&Record::Removed {
                session: S + 1,
                seq: 1
            })
            .unwrap());
        assert!(!st
            .apply(&Record::SessionDiscarded { session: S + 1 })
            .unwrap());
        assert_eq!(st.sessions[&S].queue.len(), 1);
    }

    #[test]
    fn message_properties_and_expiry_survive_the_round_trip() {
        let props = codec::MessageProps {
            payload_format: Some(true),
            message_expiry: Some(3600),
            content_type: Some("text/plain".into()),
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01")),
            user_properties: [("k", "v"), ("k", "w")].into_iter().collect(),
        };
        let msg = Message::with_props(
            "t/1",
            Bytes::from_static(b"hello"),
            QoS::ExactlyOnce,
            true,
            Some(Box::new(props)),
        );
        msg.set_store_id(42);
        let bytes = encoded(&message_record(&msg));
        let back = decode_message(&Record::decode(&bytes).unwrap()).unwrap();
        assert_eq!(back.props, msg.props);
        assert_eq!(
            (back.qos, back.retain, back.store_id()),
            (QoS::ExactlyOnce, true, 42)
        );
        let left = back.remaining_expiry(Instant::now()).unwrap();
        assert!((3598..=3600).contains(&left), "{left}");
    }

    #[test]
    fn expired_queued_entries_are_dropped_but_sent_ones_stay() {
        let mut st = State::default();
        st.apply(&opened(S, "s", 0)).unwrap();
        let gone = Message::restored(
            "t",
            Bytes::new(),
            QoS::AtLeastOnce,
            false,
            None,
            Some(Instant::now()),
            1,
        );
        st.add_message(Arc::new(gone));
        st.apply(&enqueue(1, 1)).unwrap();
        st.apply(&enqueue(2, 1)).unwrap();
        st.apply(&Record::Sent {
            session: S,
            seq: 2,
            pkid: 5,
        })
        .unwrap();
        assert_eq!(
            st.drop_expired(Instant::now() + Duration::from_millis(1)),
            1
        );
        assert_eq!(st.sessions[&S].queue.keys().collect::<Vec<_>>(), vec![&2]);
    }
}
