//! Subscriptions: one place that adds or removes a filter in the session, the router and
//! the store, in that order, used by SUBSCRIBE, UNSUBSCRIBE and restore alike; and the
//! retained messages a new subscription is owed.

use std::sync::Arc;

use super::{min_qos, Broker};
use crate::codec::QoS;
use crate::message::SharedMessage;
use crate::session::Session;
use crate::store::StoreEvent;
use crate::subscriptions::Sub;

impl Broker {
    /// Adds or replaces `session`'s subscription to `filter`, in the one order every
    /// path uses: the session's own list, the router, then the store. Returns whether
    /// the subscription is new (Retain Handling 1 sends retained messages only then).
    /// `filter` must have been checked (see [`crate::topic::split_shared`]).
    pub fn subscribe(&self, session: &Arc<Session>, filter: &str, sub: Sub) -> bool {
        let is_new = self.add_subscription(session, filter, sub);
        // (A clean session's records change nothing and are not written.)
        let _ = self.store.record(StoreEvent::Subscribed {
            session: session.id,
            filter,
            options: sub.opts.to_byte(),
            sub_id: sub.id.map_or(0, |id| id.get()),
        });
        is_new
    }

    /// The session and router half of [`Broker::subscribe`], without the store record:
    /// what `restore` uses for subscriptions the store already holds.
    pub(super) fn add_subscription(&self, session: &Arc<Session>, filter: &str, sub: Sub) -> bool {
        let is_new = session.state.lock().subscriptions.insert(filter, sub);
        // After the session's lock is let go: the router's lock comes first where both
        // are held (see the router's lock order).
        self.router.subscribe(session, filter, sub);
        is_new
    }

    /// Removes `session`'s subscription to `filter` (compared character by character
    /// [MQTT-3.10.4-1]) from the session, the router and the store. Returns whether there
    /// was one.
    pub fn unsubscribe(&self, session: &Arc<Session>, filter: &str) -> bool {
        let existed = session.state.lock().subscriptions.remove(filter).is_some();
        if existed {
            self.router.unsubscribe(session, filter);
            let _ = self.store.record(StoreEvent::Unsubscribed {
                session: session.id,
                filter,
            });
        }
        existed
    }

    /// Takes the filters of a session that ended (or was discarded) out of the router;
    /// the session's own list was reset, and the store forgets them with the session.
    pub(super) fn drop_subscriptions(&self, session: &Arc<Session>, filters: &[String]) {
        self.router
            .unsubscribe_all(session, filters.iter().map(String::as_str));
    }

    /// Queues for `session` the retained messages matching a filter it just subscribed
    /// to, each at the lower of its QoS and `granted`, those `may_read` lets through
    /// (the ACL), under the queue limits (see [`Session::deliver_retained`]).
    pub fn deliver_retained(
        &self,
        session: &Session,
        filter: &str,
        granted: QoS,
        sub_id: Option<u32>,
        may_read: impl Fn(&str) -> bool,
    ) {
        let mut retained = self.retained_for(filter, granted);
        retained.retain(|(msg, _)| may_read(&msg.topic));
        session.deliver_retained(&retained, sub_id);
    }

    /// Retained messages matching `filter`, each with the QoS it is sent at.
    fn retained_for(&self, filter: &str, granted: QoS) -> Vec<(SharedMessage, QoS)> {
        self.retained
            .read()
            .matching(filter)
            .into_iter()
            .map(|m| {
                let qos = min_qos(m.qos, granted);
                (m, qos)
            })
            .collect()
    }
}
