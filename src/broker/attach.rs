//! A connection claims a session (`attach`, taking it over from an older connection if
//! need be) and lets go of it (`detach`); a session that ends leaves the sessions map and
//! the router, and hands its unacknowledged shared-subscription messages to another
//! member of the group.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::session_sets::Sessions;
use super::{min_qos, wake_all, Broker};
use crate::log_limit::field;
use crate::message::DeliveryProps;
use crate::session::{AttachPermit, Limits, Peer, Session, Timers, Wire};
use crate::store::{StoreEvent, StoreOutcome};

/// Undoes a claim whose attach was abandoned before it completed (see
/// [`Broker::attach`]): the session goes offline as if that connection had ended. An
/// older connection that was already told to make way still goes: the claim came from
/// an authenticated CONNECT.
struct UndoAttach<'a> {
    broker: &'a Broker,
    session: &'a Arc<Session>,
    generation: u64,
}

impl Drop for UndoAttach<'_> {
    fn drop(&mut self) {
        self.broker.detach(self.session, self.generation);
    }
}

/// What a CONNECT claims its session with.
pub struct AttachRequest {
    pub username: Option<Arc<str>>,
    /// Clean Session (3.1.1) / Clean Start (5.0): discard any existing session.
    pub clean_start: bool,
    /// Session Expiry Interval, seconds (0: ends with the connection; `u32::MAX`: never).
    pub expiry: u32,
    pub limits: Arc<Limits>,
    pub timers: Timers,
    /// An MQTT 5.0 client's Receive Maximum; `None` for 3.1.1 and 3.1.
    pub receive_maximum: Option<u16>,
    /// The connection, as the operator's view shows it.
    pub peer: Peer,
    /// How the connection takes a QoS 0 PUBLISH, if every client of its version takes
    /// the same bytes ([`Wire::of`]).
    pub wire: Option<Wire>,
}

/// Why [`Broker::attach`] gave a CONNECT no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A later CONNECT for the same client id overtook this one.
    Overtaken,
    /// The session belongs to another identity (CONNACK 0x05 / 0x87): nothing of it was
    /// touched, and the connection that has it keeps it.
    NotOwner,
}

/// The session a connection attached to, returned by [`Broker::attach`].
pub struct AttachedSession {
    pub session: Arc<Session>,
    pub session_present: bool,
    pub generation: u64,
    /// Held for the life of the connection.
    pub guard: AttachPermit,
}

impl Broker {
    /// Claims the session of `client_id` for a new connection: creates it, or takes it
    /// over from the connection that has it (which is cancelled, and awaited until it has
    /// let go). With `clean`, or when the previous owner was a clean session, the state is
    /// discarded [MQTT-3.1.2-6]; otherwise it is resumed and `session_present` is set
    /// [MQTT-3.2.2-2].
    ///
    /// A session is bound to the identity that created it ([`SessionState::username`]):
    /// a claim by any other identity is refused before anything is touched, so a user
    /// who reuses someone else's client id can neither kick them off nor read their
    /// messages, subscriptions or will. Anonymous clients have no identity to tell apart,
    /// so among them any may take over (as in Mosquitto); and an anonymous session may
    /// be claimed by a verified user, who gets a fresh session of its own (the anonymous
    /// one ends), so that an anonymous client cannot lock a user out of its client id.
    ///
    /// [`SessionState::username`]: crate::session::SessionState::username
    pub async fn attach(
        &self,
        client_id: &str,
        request: AttachRequest,
    ) -> Result<AttachedSession, Refused> {
        let AttachRequest {
            username,
            clean_start: clean,
            expiry,
            limits,
            timers,
            receive_maximum,
            peer,
            wire,
        } = request;
        let (session, generation, existed) = {
            let mut sessions = self.sessions.lock();
            let (session, existed) = match sessions.get(client_id) {
                Some(s) => (s.clone(), true),
                None => {
                    let id = self.next_session_id.fetch_add(1, Ordering::Relaxed);
                    let s = Arc::new(Session::new(
                        id,
                        Arc::from(client_id),
                        limits.clone(),
                        self.store.clone(),
                    ));
                    sessions.insert(s.clone());
                    (s, false)
                }
            };
            let mut st = session.state.lock();
            // An anonymous session belongs to nobody: a verified user may claim it (so an
            // anonymous client cannot squat a user's client id), but starts afresh.
            let rebind = st.username.is_none() && username.is_some();
            if st.username != username && !rebind {
                return Err(Refused::NotOwner);
            }
            // Owned by the claimant from here on, so a rival claim is refused.
            st.username = username.clone();
            if rebind {
                // Ends with the anonymous connection, so that this claim, or one of the
                // same user that overtakes it, discards it rather than resume it.
                st.clean = true;
            }
            st.generation += 1;
            // Nothing more is encoded for the connection being replaced.
            st.wire = None;
            let taking_over = st.connected;
            st.connected = true;
            let generation = st.generation;
            drop(st);
            if taking_over {
                // The attached connection sees the new generation when it wakes.
                session.wake.notify_one();
            }
            // After `connected` is set: see `detach`.
            {
                let mut online = self.online.lock();
                online.insert(session.clone());
                self.max_connected
                    .fetch_max(online.len(), Ordering::Relaxed);
            }
            (session, generation, existed)
        };

        // The semaphore is never closed, so acquiring only waits; the permit is given
        // back by `AttachPermit` when this connection ends. The wait can be abandoned (the
        // CONNECT's connect_timeout passes): then the session must not stay marked
        // connected with no connection attached.
        let undo = UndoAttach {
            broker: self,
            session: &session,
            generation,
        };
        match session.attach.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return Err(Refused::Overtaken),
        }
        std::mem::forget(undo);
        let guard = AttachPermit(session.clone());

        let (discard, filters, will) = {
            let mut st = session.state.lock();
            if st.generation != generation {
                return Err(Refused::Overtaken);
            }
            let discard = existed && (clean || st.clean);
            // A delayed will: a session resumed in time cancels it [MQTT-3.1.3-9]; one
            // that is discarded has ended, so its will goes out now.
            let will = self
                .take_will(&session, &mut st, |_| true)
                .filter(|_| discard);
            let filters: Vec<String> = if discard {
                st.subscriptions.filters()
            } else {
                Vec::new()
            };
            if discard {
                st.reset();
            }
            // Under the session's lock, so that the store sees the session restart
            // between the messages queued for the old one and those for the new one.
            if self.store.is_durable() {
                let session = session.id;
                if discard || expiry == 0 {
                    let _ = self.store.record(StoreEvent::SessionDiscarded { session });
                }
                if expiry != 0 {
                    let _ = self.store.record(StoreEvent::SessionOpened {
                        session,
                        client_id,
                        owner: username.as_deref(),
                        expiry,
                    });
                }
            }
            st.clean = expiry == 0;
            // Frames only for a session that ends with this connection: what it queues
            // can never be sent to another connection, of another version.
            st.wire = wire.filter(|_| st.clean);
            st.expiry = expiry;
            self.set_expiry(&session, &mut st, None);
            st.receive_maximum = receive_maximum;
            st.peer = Some(peer);
            st.limits = limits;
            st.timers = timers;
            st.mark_inflight_unsent();
            (discard, filters, will)
        };
        if let Some(will) = will {
            self.publish_will(client_id, *will);
        }
        if discard {
            self.drop_subscriptions(&session, &filters);
            wake_all(session.state.lock().take_space_waiters());
        }
        Ok(AttachedSession {
            session_present: existed && !discard,
            session,
            generation,
            guard,
        })
    }

    /// Called when the connection of `generation` ends. A clean session ends with its
    /// connection; a persistent one stays, offline, queueing what it is sent.
    pub fn detach(&self, session: &Arc<Session>, generation: u64) {
        {
            let mut st = session.state.lock();
            if st.generation != generation {
                // Taken over: the new connection owns the session now.
                return;
            }
            // Offline from here on, so shared subscriptions stop choosing it while another
            // member is online.
            st.connected = false;
            st.wire = None;
        }
        {
            // Checked under the online lock: a new connection that attached meanwhile
            // has set `connected` before inserting, so it is never removed here.
            let mut online = self.online.lock();
            if !session.state.lock().connected {
                online.remove(session.id);
            }
        }
        self.redistribute_shared(session);
        let mut sessions = self.sessions.lock();
        let filters = {
            let mut st = session.state.lock();
            if st.generation != generation {
                return;
            }
            if !st.clean {
                let now = Instant::now();
                let kept =
                    crate::expiry::kept_for(st.expiry, self.config.persistent_client_expiration);
                let at = kept.and_then(|d| now.checked_add(d));
                self.set_expiry(session, &mut st, at);
                // So that a restart does not give the session its whole expiry (or
                // persistent_client_expiration) again.
                let _ = self.store.record(StoreEvent::SessionClosed {
                    session: session.id,
                    at: now,
                });
                // An offline session holds no messages in memory that its spool has.
                st.release_spool(session.store_handle());
                return;
            }
            st.subscriptions.filters()
        };
        self.forget(&mut sessions, session, &filters);
        drop(sessions);
        // A shared message routed to it before it left the router still goes to another
        // member rather than down with the session.
        self.redistribute_shared(session);
        let waiters = {
            let mut st = session.state.lock();
            st.reset();
            st.take_space_waiters()
        };
        wake_all(waiters);
    }

    /// Takes an ended session out of the sessions map (if it is still the one there) and
    /// its subscriptions out of the router. The caller holds the sessions lock.
    pub(super) fn forget(
        &self,
        sessions: &mut Sessions,
        session: &Arc<Session>,
        filters: &[String],
    ) {
        sessions.remove_same(session);
        self.drop_subscriptions(session, filters);
    }

    /// Moves the messages a disconnecting member of shared subscriptions has not yet
    /// acknowledged (queued, or sent and unacknowledged) to another member of the same
    /// group, online members first: a work queue loses no job when a worker dies. With no
    /// other member they stay where they are.
    fn redistribute_shared(&self, session: &Arc<Session>) {
        let taken = session.state.lock().take_shared();
        if taken.is_empty() {
            return;
        }
        let acl = self.auth.acl();
        let mut kept = Vec::new();
        let mut moved = 0usize;
        let mut stored = StoreOutcome::default();
        let handle = session.store_handle();
        for item in taken {
            let Some(key) = item.extra.as_ref().and_then(|e| e.shared.clone()) else {
                continue;
            };
            match self.router.pick_shared(&key, session.id) {
                Some((other, sub)) => {
                    let qos = min_qos(item.msg.qos, sub.opts.qos);
                    let extra = DeliveryProps::boxed(
                        sub.id.into_iter().map(|n| n.get()).collect(),
                        Some(key),
                    );
                    let offered = other.offer(
                        &item.msg,
                        qos,
                        false,
                        extra,
                        None,
                        acl.as_deref(),
                        &mut stored,
                    );
                    if offered.wakes() {
                        other.wake.notify_one();
                    }
                    // Stored for the new member first: a crash in between duplicates the
                    // message rather than losing it.
                    if item.in_store {
                        let _ = self.store.record(StoreEvent::Removed {
                            session: handle.session,
                            seq: item.seq,
                        });
                    }
                    moved += 1;
                }
                None => kept.push(item),
            }
        }
        if moved > 0 {
            tracing::info!(
                event = "shared_moved",
                client_id = ?field(&session.client_id),
                moved,
                "unacknowledged shared-subscription messages moved to other members"
            );
        }
        if !kept.is_empty() {
            session.state.lock().requeue(kept);
        }
    }

    /// Changes the Session Expiry Interval of a connected session (MQTT 5.0 DISCONNECT):
    /// the store learns it now, and the session ends with its connection when it is 0.
    pub fn set_session_expiry(&self, session: &Session, expiry: u32) {
        let mut st = session.state.lock();
        if expiry != st.expiry {
            let _ = self.store.record(if expiry == 0 {
                StoreEvent::SessionDiscarded {
                    session: session.id,
                }
            } else {
                StoreEvent::SessionOpened {
                    session: session.id,
                    client_id: &session.client_id,
                    owner: st.username.as_deref(),
                    expiry,
                }
            });
        }
        st.expiry = expiry;
        st.clean = expiry == 0;
        if !st.clean {
            // (Not reached with frames queued: a session that ends with its connection
            // may not be given an expiry on DISCONNECT [MQTT-3.14.2-2].)
            st.wire = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Auth;
    use crate::config::{Config, Listener};
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    fn broker() -> Broker {
        let config = Config::default();
        let auth = Auth::load(&config, "test").expect("no files to load");
        Broker::new(config, auth, Arc::new(crate::store::MemoryStore))
    }

    fn claim(broker: &Broker) -> AttachRequest {
        AttachRequest {
            username: None,
            clean_start: true,
            expiry: 0,
            limits: Arc::new(broker.limits_for(&Listener::default())),
            timers: Timers::new(None, None),
            receive_maximum: None,
            peer: Peer {
                address: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
                protocol: 4,
                keep_alive: 0,
            },
            wire: Some(Wire::V311),
        }
    }

    fn poll<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn assigned_client_ids_are_random_hex_and_distinct() {
        let b = broker();
        let ids: Vec<String> = (0..100).map(|_| b.assign_client_id()).collect();
        for id in &ids {
            let hex = id.strip_prefix("midge-").expect("prefix");
            assert_eq!(hex.len(), 16);
            assert!(hex.bytes().all(|c| c.is_ascii_hexdigit()));
        }
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }

    #[test]
    fn a_take_over_abandoned_while_waiting_leaves_no_session_marked_connected() {
        let b = broker();
        let Poll::Ready(Ok(first)) = poll(pin!(b.attach("dev", claim(&b)))) else {
            panic!("a free session attaches at once")
        };
        {
            // The take-over waits for `first` to let go; its deadline passes meanwhile.
            let mut second = Box::pin(b.attach("dev", claim(&b)));
            assert!(poll(second.as_mut()).is_pending());
        }
        let st = first.session.state.lock();
        assert!(!st.connected, "nobody is attached to the new generation");
        drop(st);
        // The clean session ended with the abandoned claim; a new CONNECT starts afresh.
        drop(first);
        let Poll::Ready(Ok(third)) = poll(pin!(b.attach("dev", claim(&b)))) else {
            panic!("attaches again")
        };
        assert!(!third.session_present);
    }
}
