//! Session expiry: an offline session whose Session Expiry Interval (or
//! `persistent_client_expiration`) has passed ends, with its will if one is still held
//! back. Deadlines live in the broker's deadline queue ([`crate::expiry`]).

use std::sync::Arc;
use std::time::Instant;

use super::{wake_all, Broker};
use crate::expiry::Kind;
use crate::log_limit::field;
use crate::metrics::{self, Counter, DropReason};
use crate::session::{Session, SessionState};
use crate::store::StoreEvent;

impl Broker {
    /// Sets when an offline session ends (`None`: it does not), keeping the deadline
    /// queue in step. The caller holds the session's lock.
    pub(super) fn set_expiry(
        &self,
        session: &Arc<Session>,
        st: &mut SessionState,
        at: Option<Instant>,
    ) {
        let old = st.expires_at();
        st.set_expires_at(at);
        self.deadlines
            .reschedule(session.id, Kind::Expiry, old, at, || session.clone());
    }

    /// Ends an offline session whose Session Expiry Interval has passed: its state goes,
    /// and a will still waiting for its delay is published now (the session ended first).
    pub(super) fn expire(&self, session: &Arc<Session>) {
        let mut sessions = self.sessions.lock();
        let (filters, will) = {
            let mut st = session.state.lock();
            if st.connected || st.expires_at().is_none_or(|t| t > Instant::now()) {
                return;
            }
            let filters = st.subscriptions.filters();
            metrics::add_each([
                (Counter::SessionsExpired, 1),
                (
                    Counter::dropped(DropReason::SessionExpired),
                    st.undelivered() as u64,
                ),
            ]);
            st.reset();
            self.set_expiry(session, &mut st, None);
            let _ = self.store.record(StoreEvent::SessionDiscarded {
                session: session.id,
            });
            (filters, self.take_will(session, &mut st, |_| true))
        };
        self.forget(&mut sessions, session, &filters);
        drop(sessions);
        tracing::info!(event = "session_expired", client_id = ?field(&session.client_id), "session expired");
        wake_all(session.state.lock().take_space_waiters());
        if let Some(will) = will {
            self.publish_will(&session.client_id, *will);
        }
    }
}
