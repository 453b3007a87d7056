//! The sweeper: one task that wakes a few times a second and hands out what is due to
//! the three timers, each in its own file (as Mosquitto keeps keepalive.c,
//! will_delay.c and session_expiry.c apart): keep-alive and retransmission of connected
//! sessions (`keep_alive.rs`), delayed wills (`will_delay.rs`) and offline
//! sessions' expiry (`session_expiry.rs`). One sweeper replaces a timer per
//! connection.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::Broker;
use crate::expiry::Kind;

/// How often the sweeper checks keep-alives, retransmissions, session expiry and delayed
/// wills: the precision of all four.
pub const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// A connection that can park (see `crate::park`) is asked to after this many sweeps in
/// a row without a turn of its loop: 0.5 to 0.75 s without traffic either way. Long
/// enough that a steady flow (a message every few hundred milliseconds) never parks and
/// resumes per message, short enough that idle connections leave their tasks soon after
/// a burst of connects.
pub const PARK_AFTER_SWEEPS: u8 = 3;

impl Broker {
    /// Times keep-alive and retransmission for every connected session: a few times a
    /// second it raises the flags of [`Timers`](crate::session::Timers) whose time has come and wakes those
    /// connections. Offline sessions whose expiry has come, and delayed wills now due, come
    /// from the deadline queue: only those are looked at. Runs until `shutdown`.
    pub async fn sweep(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            self.check_connections(now);
            for (kind, session) in self.deadlines.take_due(now) {
                match kind {
                    Kind::Will => self.publish_due_will(&session, now),
                    Kind::Expiry => self.expire(&session),
                }
            }
        }
    }
}
