//! Restore from the durable store at start, and the last writes at shutdown.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::Broker;
use crate::codec::SubscriptionOptions;
use crate::message::DeliveryProps;
use crate::session::{Queued, Session};
use crate::store::state::{instant_from_unix_millis, State};
use crate::subscriptions::Sub;

impl Broker {
    /// Rebuilds what the durable store kept, before anything listens: every persistent
    /// session (offline, its expiry counting from now), its subscriptions, its queued
    /// messages and the ones it had in flight (re-sent with their packet ids when the
    /// client comes back), its incoming QoS 2 ids, and the retained messages.
    pub fn restore(&self, state: &State) {
        let Some(listener) = self.config.listeners.first() else {
            return;
        };
        // Until the client connects again, through whichever listener.
        let limits = Arc::new(self.limits_for(listener));
        let now = Instant::now();
        let mut subscribe = Vec::new();
        // Entries deeper than max_topic_levels (written under a larger limit, or by hand)
        // would cost the trees memory per level: skipped, and counted in one log line.
        let max_levels = self.config.max_topic_levels;
        let mut too_deep = 0usize;
        // Sessions keep their numbers (the store knows them by these); new ones are
        // numbered after every number the store has seen.
        self.next_session_id
            .fetch_max(state.last_session_id + 1, Ordering::Relaxed);
        {
            let mut sessions = self.sessions.lock();
            // One session per client id: should the store hold two (a discard that was
            // never written), the later one, numbered higher, is the live one.
            let mut latest: HashMap<&str, u64> = HashMap::new();
            for (&id, image) in &state.sessions {
                let n = latest.entry(image.client_id.as_str()).or_default();
                *n = (*n).max(id);
            }
            for (&id, image) in &state.sessions {
                if latest.get(image.client_id.as_str()) != Some(&id) {
                    tracing::warn!(
                        client_id = &*crate::log_limit::field(&image.client_id),
                        session = id,
                        "store: an older session of the same client id is ignored"
                    );
                    continue;
                }
                let key: Arc<str> = Arc::from(image.client_id.as_str());
                let session = Arc::new(Session::new(
                    id,
                    key.clone(),
                    limits.clone(),
                    self.store.clone(),
                ));
                let mut st = session.state.lock();
                st.clean = false;
                // Bound to its owner across the restart: it is sent what the owner may
                // read, and only the owner may claim it.
                st.username = image.owner.as_deref().map(Arc::from);
                st.expiry = image.expiry;
                let kept =
                    crate::expiry::kept_for(image.expiry, self.config.persistent_client_expiration);
                if let Some(kept) = kept {
                    // From the disconnection, if it was recorded; from now for a session
                    // whose client was connected when midge stopped. A session that has
                    // expired while midge was down is due at the sweeper's first tick.
                    let since = match image.closed_at {
                        0 => now,
                        at => instant_from_unix_millis(at).min(now),
                    };
                    self.set_expiry(&session, &mut st, since.checked_add(kept));
                }
                for (filter, (options, sub_id)) in &image.subscriptions {
                    let Some(opts) = SubscriptionOptions::from_byte(*options) else {
                        continue;
                    };
                    let plain = match crate::topic::split_shared(filter) {
                        Some(Some((_, inner))) => inner,
                        _ => filter.as_str(),
                    };
                    if !crate::topic::within_levels(plain, max_levels) {
                        too_deep += 1;
                        continue;
                    }
                    let sub = Sub {
                        opts,
                        id: std::num::NonZeroU32::new(*sub_id),
                    };
                    subscribe.push((session.clone(), filter.as_str(), sub));
                }
                for (seq, e) in &image.queue {
                    let (Some((msg, _)), Some(qos)) = (
                        state.messages.get(&e.message),
                        crate::codec::qos_from_u8(e.qos),
                    ) else {
                        continue;
                    };
                    let item = Queued::new(
                        *seq,
                        msg.clone(),
                        qos,
                        e.retain,
                        DeliveryProps::boxed(e.sub_ids.clone(), e.shared.clone()),
                        true,
                    );
                    st.restore(item, e.pkid.map(|pkid| (pkid, e.released)));
                }
                if let Some(sp) = image.spool.as_deref() {
                    st.restore_spool(sp.present.len(), sp.bytes_at_open, sp.last);
                }
                for pkid in &image.qos2_received {
                    st.incoming_qos2_insert(*pkid);
                }
                drop(st);
                sessions.insert(session);
            }
        }
        // Outside the session's lock: the router's lock comes first. The store has
        // these already, so they are not recorded again.
        for (session, filter, sub) in subscribe {
            self.add_subscription(&session, filter, sub);
        }
        let mut retained = self.retained.write();
        for (topic, id) in &state.retained {
            if !crate::topic::within_levels(topic, max_levels) {
                too_deep += 1;
                continue;
            }
            if let Some((msg, _)) = state.messages.get(id) {
                retained.set(topic, msg.clone());
            }
        }
        if too_deep > 0 {
            tracing::warn!(
                event = "not_restored",
                skipped = too_deep,
                max_topic_levels = max_levels,
                "stored subscriptions and retained messages deeper than max_topic_levels \
                 not restored"
            );
        }
    }

    /// After [`restore`](Self::restore), with the store's lock let go: every restored
    /// session is offline, so what it holds in memory goes to its spool (see
    /// `SessionState::release_spool`); memory after a restart follows the sessions, not
    /// what they had queued.
    pub fn spill_restored(&self) {
        let sessions: Vec<Arc<Session>> = self.sessions.lock().iter().cloned().collect();
        for session in sessions {
            session.state.lock().release_spool(session.store_handle());
        }
    }

    /// At shutdown, once the connections are closed: stores what persistent sessions
    /// hold and the store does not have yet (QoS 0 messages queued for offline sessions
    /// under `queue_qos0_messages`), then closes the store, which syncs it. A clean
    /// restart loses nothing.
    pub fn close_store(&self) {
        if !self.store.is_durable() {
            return;
        }
        let sessions: Vec<Arc<Session>> = self.sessions.lock().iter().cloned().collect();
        for session in sessions {
            let stored = session.state.lock().store_unstored(session.store_handle());
            if stored.failed {
                break;
            }
        }
        if let Err(e) = self.store.close() {
            tracing::error!("store: closing failed: {e}");
        }
    }
}
