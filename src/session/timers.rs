//! A session's clocks: keep-alive and retransmission timing of the attached connection,
//! and, for an offline session, when it expires and the will it holds back for its Will
//! Delay Interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::SessionState;
use crate::codec;

/// Keep-alive and retransmission timing of the attached connection. The broker's sweeper
/// reads it for every connected session a few times a second and raises the flags; the
/// connection acts on them when it wakes. One sweeper replaces a timer per connection.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    /// When the connection last received bytes (updated on its next loop turn).
    pub last_in: Instant,
    /// How long the connection may stay silent, in milliseconds: 1.5 × the client's
    /// keep-alive [MQTT-3.1.2-24]; 0 = keep-alive 0, no timeout. (Milliseconds in a u32
    /// rather than `Option<Duration>`: every session carries these.)
    keep_alive_ms: u32,
    /// Retransmission interval on a live connection (MQTT 3.1.1/3.1 only), milliseconds;
    /// 0 = none. At most ~49 days.
    retry_ms: u32,
    /// Raised by the sweeper: the keep-alive ran out.
    pub keep_alive_expired: bool,
    /// Raised by the sweeper: an inflight message is due to be re-sent.
    pub retry_due: bool,
    /// Whether the connection can be parked (plain TCP): set by the connection.
    pub parkable: bool,
    /// Sweeps since the connection's last turn: counted by the sweeper, reset by the
    /// connection on every turn (in the padding of the fields above: no bytes added).
    pub idle_sweeps: u8,
    /// Raised by the sweeper: the connection has been idle long enough to park. Stays
    /// raised while it is parked (so the sweeper does not ask again) and is lowered when
    /// it resumes, or when it could not park.
    pub park_due: bool,
}

impl Timers {
    pub fn new(keep_alive: Option<Duration>, retry: Option<Duration>) -> Timers {
        let ms = |d: Option<Duration>| {
            d.map_or(0, |d| {
                u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
            })
        };
        Timers {
            last_in: Instant::now(),
            keep_alive_ms: ms(keep_alive),
            retry_ms: ms(retry),
            keep_alive_expired: false,
            retry_due: false,
            parkable: false,
            idle_sweeps: 0,
            park_due: false,
        }
    }

    pub fn keep_alive(&self) -> Option<Duration> {
        (self.keep_alive_ms > 0).then(|| Duration::from_millis(u64::from(self.keep_alive_ms)))
    }

    pub fn retry(&self) -> Option<Duration> {
        (self.retry_ms > 0).then(|| Duration::from_millis(u64::from(self.retry_ms)))
    }
}

/// A will waiting for its Will Delay Interval (MQTT 5.0) to pass.
#[derive(Debug)]
pub struct PendingWill {
    pub due: Instant,
    pub will: codec::Will,
    /// The identity it is published with (ACL write check).
    pub username: Option<Arc<str>>,
}

/// What an offline session is waiting for.
#[derive(Debug, Default)]
pub(super) struct Pending {
    expires_at: Option<Instant>,
    will: Option<Box<PendingWill>>,
}

impl SessionState {
    /// When this offline session ends, if it does.
    pub fn expires_at(&self) -> Option<Instant> {
        self.pending.as_ref().and_then(|p| p.expires_at)
    }

    pub fn set_expires_at(&mut self, at: Option<Instant>) {
        self.pending.get_or_insert_default().expires_at = at;
        self.tidy_pending();
    }

    /// When the held-back will is due, if there is one.
    pub fn pending_will_due(&self) -> Option<Instant> {
        self.pending
            .as_ref()
            .and_then(|p| p.will.as_ref())
            .map(|w| w.due)
    }

    /// Holds a will back until `will.due`.
    pub fn set_pending_will(&mut self, will: PendingWill) {
        self.pending.get_or_insert_default().will = Some(Box::new(will));
    }

    /// Takes the held-back will, if there is one and `due` says so.
    pub fn take_pending_will(
        &mut self,
        due: impl Fn(&PendingWill) -> bool,
    ) -> Option<Box<PendingWill>> {
        let will = self
            .pending
            .as_mut()
            .and_then(|p| p.will.take_if(|w| due(w)));
        self.tidy_pending();
        will
    }

    fn tidy_pending(&mut self) {
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.expires_at.is_none() && p.will.is_none())
        {
            self.pending = None;
        }
    }
}

#[cfg(test)]
#[path = "timers_tests.rs"]
mod tests;
