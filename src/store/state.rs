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
use crate::id_hash::{IdMap, IdSet};
use crate::message::{Message, SharedMessage};

use super::record::{OptionsByte, Record, SessionId};
use super::spool::image::Replayed;
use super::spool::ranges::SeqRanges;
use super::spool::{ChunkMeta, SpoolImage};

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
    /// Entries held in memory, by sequence number: the send order.
    pub queue: BTreeMap<u64, Entry>,
    /// Entries held in the session's spool file (see `store::spool`); `None` for a
    /// session that never spooled.
    pub spool: Option<Box<SpoolImage>>,
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
    /// Ids of messages written to the log since the last checkpoint for spooled entries
    /// only: known, so that the next spooled copy refers to the same record rather than
    /// writing it again (the message itself is in the spools, not kept here). Forgotten
    /// at every checkpoint (see [`State::checkpointed`]).
    pub spooled_messages: IdSet<u64>,
    /// Replaying a log: spooled entries keep their messages ([`SpoolImage::replayed`]),
    /// for the spools to be completed from them at open.
    pub replaying: bool,
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
                spooled,
            } => {
                if *spooled {
                    return Ok(self
                        .apply_spooled(*session, *seq, *message, *qos, *retain, sub_ids, shared));
                }
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
            Record::SpoolState {
                session,
                last,
                present,
                chunks,
            } => match self.sessions.get_mut(session) {
                Some(s) => {
                    s.spool = Some(Box::new(SpoolImage {
                        last: *last,
                        present: SeqRanges::from_runs(present)?,
                        chunks: chunks.to_vec(),
                        ..SpoolImage::default()
                    }));
                    true
                }
                None => false,
            },
            Record::Sent { session, seq, pkid } => match self.entry(*session, *seq) {
                Some(e) => {
                    e.pkid = Some(*pkid);
                    true
                }
                None => self.spool(*session).is_some_and(|sp| sp.sent(*seq, *pkid)),
            },
            Record::Released { session, seq } => match self.entry(*session, *seq) {
                Some(e) => {
                    e.released = true;
                    true
                }
                None => self.spool(*session).is_some_and(|sp| sp.released(*seq)),
            },
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
                    None => self.spool(*session).is_some_and(|sp| sp.remove(*seq)),
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
        id != 0 && (self.messages.contains_key(&id) || self.spooled_messages.contains(&id))
    }

    pub fn has_session(&self, session: SessionId) -> bool {
        self.sessions.contains_key(&session)
    }

    fn entry(&mut self, session: SessionId, seq: u64) -> Option<&mut Entry> {
        self.sessions.get_mut(&session)?.queue.get_mut(&seq)
    }

    fn spool(&mut self, session: SessionId) -> Option<&mut SpoolImage> {
        self.sessions.get_mut(&session)?.spool.as_deref_mut()
    }

    /// What the state knows of `session`'s spool, if it has one.
    pub fn spool_image(&self, session: SessionId) -> Option<&SpoolImage> {
        self.sessions.get(&session)?.spool.as_deref()
    }

    /// Whether `seq` of `session` is held in its spool.
    pub fn is_spooled(&self, session: SessionId, seq: u64) -> bool {
        self.spool_image(session).is_some_and(|sp| sp.holds(seq))
    }

    /// A spooled entry: its position joins the session's spool (leaving the memory queue,
    /// if it was held there before). Its message is only remembered while replaying.
    #[allow(clippy::too_many_arguments)]
    fn apply_spooled(
        &mut self,
        session: SessionId,
        seq: u64,
        message: u64,
        qos: u8,
        retain: bool,
        sub_ids: &[u32],
        shared: &str,
    ) -> bool {
        // Replaying, the message comes from its record; running, the store has just
        // made sure the log has it.
        let msg = self.messages.get(&message).map(|(m, _)| m.clone());
        if msg.is_none() && !self.spooled_messages.contains(&message) {
            return false;
        }
        let Some(s) = self.sessions.get_mut(&session) else {
            return false;
        };
        let spool = s.spool.get_or_insert_default();
        if !spool.push(seq) {
            return false;
        }
        if let Some(msg) = msg.filter(|_| self.replaying) {
            spool.replayed.push(Replayed {
                seq,
                message: msg,
                qos,
                retain,
                sub_ids: sub_ids.to_vec(),
                shared: (!shared.is_empty()).then(|| Arc::from(shared)),
            });
        }
        if let Some(old) = s.queue.remove(&seq) {
            self.live_bytes = self.live_bytes.saturating_sub(ENTRY_BYTES);
            self.release(old.message);
        }
        true
    }

    /// After a checkpoint: spooled entries' messages are in the spools, and the next
    /// spooled copy of one writes its record again.
    pub fn checkpointed(&mut self) {
        self.spooled_messages = IdSet::default();
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

    /// Sessions, queued messages (in memory and spooled) and retained messages.
    pub fn counts(&self) -> (usize, usize, usize) {
        let queued = self
            .sessions
            .values()
            .map(|s| s.queue.len() + s.spool.as_ref().map_or(0, |sp| sp.present.len() as usize))
            .sum();
        (self.sessions.len(), queued, self.retained.len())
    }

    /// Hands `out` the records that rebuild this state from nothing, between a
    /// [`Record::Checkpoint`] and a [`Record::CheckpointEnd`]: what a compaction writes.
    /// `chunks` gives each spooling session's files as they stand (written and synced
    /// before the checkpoint is).
    pub fn snapshot(
        &self,
        chunks: &dyn Fn(SessionId) -> Vec<ChunkMeta>,
        mut out: impl FnMut(&Record),
    ) {
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
                    spooled: false,
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
            // Written while it holds nothing too: its `last` keeps positions going up.
            if let Some(sp) = s.spool.as_deref() {
                out(&Record::SpoolState {
                    session,
                    last: sp.last,
                    present: Cow::Borrowed(sp.present.runs()),
                    chunks: Cow::Owned(chunks(session)),
                });
                for (&seq, &(pkid, released)) in &sp.sent {
                    out(&Record::Sent { session, seq, pkid });
                    if released {
                        out(&Record::Released { session, seq });
                    }
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
#[derive(Debug)]
pub struct Replay {
    state: State,
    building: Option<State>,
}

impl Default for Replay {
    fn default() -> Replay {
        Replay {
            state: State {
                replaying: true,
                ..State::default()
            },
            building: None,
        }
    }
}

impl Replay {
    pub fn apply(&mut self, record: &Record) -> Result<(), String> {
        match record {
            Record::Checkpoint => {
                self.building = Some(State {
                    last_message_id: self.state.last_message_id,
                    last_session_id: self.state.last_session_id,
                    replaying: true,
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
    pub fn finish(mut self) -> (State, bool) {
        self.state.replaying = false;
        self.state.checkpointed();
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
pub(super) fn decode_message(record: &Record) -> Result<Message, String> {
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
        codec::stored_topic(topic),
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
#[path = "state_tests.rs"]
mod tests;
