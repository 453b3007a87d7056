//! Wills: published when their client's connection ends ungracefully, at once or, with a
//! MQTT 5.0 Will Delay Interval, once the delay passes or the session ends, whichever is
//! first. A will is published through the broker's internal-publish entry.

use std::sync::Arc;
use std::time::Instant;

use super::Broker;
use crate::auth::Access;
use crate::expiry::Kind;
use crate::log_limit::field;
use crate::session::{PendingWill, Session, SessionState};

impl Broker {
    /// Publishes a will whose delay has passed (or whose session ended), if the ACL
    /// still lets its client write the topic.
    pub fn publish_will(&self, client_id: &str, pending: PendingWill) {
        let will = pending.will;
        if !self.auth.allows(
            client_id,
            pending.username.as_deref(),
            &will.topic,
            Access::Write,
        ) {
            tracing::info!(
                client_id = ?field(client_id),
                topic = ?field(&will.topic),
                "will denied by the ACL, not published"
            );
            return;
        }
        tracing::debug!(client_id = ?field(client_id), topic = ?field(&will.topic), "publishing will");
        let msg = Arc::new(crate::message::Message::with_props(
            will.topic,
            will.payload,
            will.qos,
            will.retain,
            will.props,
        ));
        // Nobody waits for a will's acknowledgement: what storing it came to, and the
        // sessions over their limit, concern no one.
        self.publish_internal(&msg);
    }

    /// Holds a will back for its delay (MQTT 5.0 Will Delay Interval).
    pub fn delay_will(&self, session: &Arc<Session>, pending: PendingWill) {
        let mut st = session.state.lock();
        let old = st.pending_will_due();
        let due = Some(pending.due);
        st.set_pending_will(pending);
        self.deadlines
            .reschedule(session.id, Kind::Will, old, due, || session.clone());
    }

    /// Takes the session's delayed will if `due` says so, and its deadline with it. The
    /// caller holds the session's lock.
    pub(super) fn take_will(
        &self,
        session: &Arc<Session>,
        st: &mut SessionState,
        due: impl Fn(&PendingWill) -> bool,
    ) -> Option<Box<PendingWill>> {
        let will = st.take_pending_will(due)?;
        self.deadlines
            .reschedule(session.id, Kind::Will, Some(will.due), None, || {
                session.clone()
            });
        Some(will)
    }

    /// Publishes the session's held-back will if its delay has passed by `now` (the
    /// deadline queue said so; the session's own state decides).
    pub(super) fn publish_due_will(&self, session: &Arc<Session>, now: Instant) {
        let will = session.state.lock().take_pending_will(|w| w.due <= now);
        if let Some(will) = will {
            self.publish_will(&session.client_id, *will);
        }
    }
}
