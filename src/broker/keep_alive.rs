//! Keep-alive, retransmission and parking of connected sessions: the sweeper raises the
//! flags in each session's [`Timers`](crate::session::Timers) whose time has come and
//! wakes that connection, which acts on them in its own loop.

use std::time::Instant;

use super::Broker;

impl Broker {
    /// Raises the keep-alive, retransmission and park flags of connected sessions whose
    /// time has come, and wakes their connections.
    pub(super) fn check_connections(&self, now: Instant) {
        let online = self.online.lock();
        for session in online.iter() {
            let mut st = session.state.lock();
            if !st.connected {
                continue;
            }
            let mut wake = false;
            let t = st.timers;
            if let (Some(ka), false) = (t.keep_alive(), t.keep_alive_expired) {
                if now.duration_since(t.last_in) >= ka {
                    st.timers.keep_alive_expired = true;
                    wake = true;
                }
            }
            if let (Some(retry), false) = (t.retry(), t.retry_due) {
                if st
                    .oldest_sent()
                    .is_some_and(|sent| now.duration_since(sent) >= retry)
                {
                    st.timers.retry_due = true;
                    wake = true;
                }
            }
            if t.parkable && !t.park_due {
                if t.idle_sweeps + 1 >= super::sweep::PARK_AFTER_SWEEPS {
                    st.timers.park_due = true;
                    wake = true;
                } else {
                    st.timers.idle_sweeps += 1;
                }
            }
            drop(st);
            if wake {
                session.wake.notify_one();
            }
        }
    }
}
