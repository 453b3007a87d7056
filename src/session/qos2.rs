//! Incoming QoS 2: packet ids the client sent a PUBLISH with and got PUBREC for, until
//! its PUBREL. A PUBLISH re-sent with one of them is acknowledged but not delivered again.

use super::{SessionState, StoreHandle};
use crate::store::{StoreEvent, StoreOutcome};

impl SessionState {
    /// Whether a QoS 2 PUBLISH with this packet id was received and not yet released.
    pub fn incoming_qos2_has(&self, pkid: u16) -> bool {
        self.incoming_qos2
            .as_ref()
            .is_some_and(|set| set.contains(&pkid))
    }

    /// Records an incoming QoS 2 packet id (PUBREC sent, PUBREL awaited). Returns false
    /// if it was already recorded: the PUBLISH is a re-send, not to be delivered again.
    pub fn incoming_qos2_insert(&mut self, pkid: u16) -> bool {
        self.incoming_qos2.get_or_insert_default().insert(pkid)
    }

    /// [`incoming_qos2_insert`](Self::incoming_qos2_insert), stored for a persistent
    /// session (so a re-send after a restart is not delivered twice): the PUBREC waits
    /// for the returned commit.
    pub fn receive_qos2(&mut self, pkid: u16, handle: StoreHandle) -> (bool, StoreOutcome) {
        let mut stored = StoreOutcome::default();
        let first_time = self.incoming_qos2_insert(pkid);
        if first_time && self.persists(handle) {
            stored.add(handle.store.record(StoreEvent::Qos2Received {
                session: handle.session,
                pkid,
            }));
        }
        (first_time, stored)
    }

    /// [`incoming_qos2_remove`](Self::incoming_qos2_remove), stored for a persistent
    /// session: the PUBCOMP waits for the returned commit, since a client that got it may
    /// reuse the id at once.
    pub fn release_qos2(&mut self, pkid: u16, handle: StoreHandle) -> (bool, StoreOutcome) {
        let mut stored = StoreOutcome::default();
        let known = self.incoming_qos2_remove(pkid);
        if known && self.persists(handle) {
            stored.add(handle.store.record(StoreEvent::Qos2Completed {
                session: handle.session,
                pkid,
            }));
        }
        (known, stored)
    }

    /// Forgets an incoming QoS 2 packet id (PUBREL received). Returns whether it was known.
    pub fn incoming_qos2_remove(&mut self, pkid: u16) -> bool {
        self.incoming_qos2
            .as_mut()
            .is_some_and(|set| set.remove(&pkid))
    }
}

#[cfg(test)]
#[path = "qos2_tests.rs"]
mod tests;
