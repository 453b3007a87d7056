//! The operator's view of the broker's state: what `$SYS`, `/metrics`, the HTTP API and
//! the status page show besides the event counters of [`crate::metrics`]. Read on demand
//! (every `sys_interval`, on each scrape), walking the sessions one lock at a time: the
//! data path never waits for more than one session's lock held for a few reads.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::Broker;
use crate::session::Session;

/// The broker's state as a whole.
#[derive(Clone, Debug, Default)]
pub struct Overview {
    pub uptime: Duration,
    /// Clients with a connection attached.
    pub clients_connected: usize,
    /// The most clients connected at once since start.
    pub clients_maximum: usize,
    /// Persistent sessions (not ended by the connection) with and without a connection.
    pub persistent_online: usize,
    pub persistent_offline: usize,
    /// Subscriptions over all sessions (a shared subscription counts once per member).
    pub subscriptions: usize,
    /// Retained messages set by clients (the broker's own `$SYS` ones not counted).
    pub retained: usize,
    /// Messages waiting in queues, not yet sent, and their bytes as the broker holds them
    /// (in memory, or in spool files on disk).
    pub queued: usize,
    pub queued_bytes: usize,
    /// Messages sent and not yet acknowledged by their subscriber.
    pub inflight: usize,
    /// Bytes the broker holds for its clients (`memory_limit`'s count).
    pub memory_used: usize,
    /// The sessions with the deepest queues, deepest first.
    pub deepest: Vec<QueueDepth>,
}

/// One session's queue, in the deepest-queues list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueDepth {
    pub client_id: Arc<str>,
    pub queued: usize,
    pub queued_bytes: usize,
    pub inflight: usize,
    pub connected: bool,
}

/// One client (session) as the client list shows it.
// Read by the HTTP listener (issue 14, branch h/http), not by `$SYS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    pub client_id: Arc<str>,
    pub username: Option<Arc<str>>,
    pub connected: bool,
    /// Ends with its connection (clean session / Session Expiry Interval 0).
    pub clean: bool,
    /// The connection it has, or last had (`None`: restored, not claimed since start).
    pub address: Option<SocketAddr>,
    pub protocol: Option<u8>,
    pub keep_alive: Option<u16>,
    pub subscriptions: usize,
    pub queued: usize,
    pub queued_bytes: usize,
    pub inflight: usize,
    /// Messages its queue dropped since start.
    pub dropped: u64,
}

/// One page of the client list, ordered by client id.
// Read by the HTTP listener (issue 14, branch h/http), not by `$SYS`.
#[derive(Clone, Debug, Default)]
pub struct ClientPage {
    pub clients: Vec<ClientInfo>,
    /// All sessions, on every page.
    pub total: usize,
    /// The client id to ask for the next page with (`after`), if there is one.
    pub next: Option<Arc<str>>,
}

impl Broker {
    /// The broker's state, with the `top` deepest queues.
    pub fn overview(&self, top: usize) -> Overview {
        let mut o = Overview {
            uptime: self.started.elapsed(),
            clients_maximum: self.max_connected.load(Ordering::Relaxed),
            retained: self.retained_count(),
            memory_used: crate::memory::used(),
            ..Overview::default()
        };
        for session in self.all_sessions() {
            let st = session.state.lock();
            if st.connected {
                o.clients_connected += 1;
            }
            if !st.clean {
                if st.connected {
                    o.persistent_online += 1;
                } else {
                    o.persistent_offline += 1;
                }
            }
            o.subscriptions += st.subscriptions.len();
            o.queued += st.queued_len();
            o.queued_bytes += st.queued_bytes_total();
            o.inflight += st.inflight.len();
            if top > 0 && st.backlog() > 0 {
                let depth = QueueDepth {
                    client_id: session.client_id.clone(),
                    queued: st.queued_len(),
                    queued_bytes: st.queued_bytes_total(),
                    inflight: st.inflight.len(),
                    connected: st.connected,
                };
                drop(st);
                keep_deepest(&mut o.deepest, depth, top);
            }
        }
        o
    }

    /// Up to `limit` clients whose ids sort after `after` (from the first with `None`).
    pub fn clients(&self, after: Option<&str>, limit: usize) -> ClientPage {
        let mut ids: Vec<Arc<str>> = self
            .sessions
            .lock()
            .iter()
            .map(|s| s.client_id.clone())
            .collect();
        let total = ids.len();
        ids.sort_unstable();
        let start = after.map_or(0, |a| ids.partition_point(|id| &**id <= a));
        let page: Vec<Arc<str>> = ids.into_iter().skip(start).take(limit + 1).collect();
        let next = if page.len() > limit {
            limit
                .checked_sub(1)
                .and_then(|last| page.get(last))
                .cloned()
        } else {
            None
        };
        let clients = page
            .iter()
            .take(limit)
            .filter_map(|id| {
                let session = self.sessions.lock().get(id).cloned()?;
                Some(client_info(&session))
            })
            .collect();
        ClientPage {
            clients,
            total,
            next,
        }
    }

    /// Retained messages clients set (the broker's own on `$SYS` left out).
    fn retained_count(&self) -> usize {
        let retained = self.retained.read();
        // Changed under the retained store's write lock: consistent with `len` here.
        retained
            .len()
            .saturating_sub(self.sys_retained.load(Ordering::Relaxed))
    }

    fn all_sessions(&self) -> Vec<Arc<Session>> {
        self.sessions.lock().iter().cloned().collect()
    }
}

fn client_info(session: &Session) -> ClientInfo {
    let st = session.state.lock();
    ClientInfo {
        client_id: session.client_id.clone(),
        username: st.username.clone(),
        connected: st.connected,
        clean: st.clean,
        address: st.peer.map(|p| p.address),
        protocol: st.peer.map(|p| p.protocol),
        keep_alive: st.peer.map(|p| p.keep_alive),
        subscriptions: st.subscriptions.len(),
        queued: st.queued_len(),
        queued_bytes: st.queued_bytes_total(),
        inflight: st.inflight.len(),
        dropped: st.dropped_total(),
    }
}

/// Keeps `list` the `top` deepest, deepest first.
fn keep_deepest(list: &mut Vec<QueueDepth>, depth: QueueDepth, top: usize) {
    let backlog = |d: &QueueDepth| d.queued + d.inflight;
    let at = list.partition_point(|d| backlog(d) >= backlog(&depth));
    if at < top {
        list.insert(at, depth);
        list.truncate(top);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(id: &str, queued: usize) -> QueueDepth {
        QueueDepth {
            client_id: Arc::from(id),
            queued,
            queued_bytes: 0,
            inflight: 0,
            connected: false,
        }
    }

    #[test]
    fn keeps_the_deepest_in_order() {
        let mut list = Vec::new();
        for (id, q) in [("a", 3), ("b", 9), ("c", 1), ("d", 5)] {
            keep_deepest(&mut list, depth(id, q), 3);
        }
        let ids: Vec<&str> = list.iter().map(|d| &*d.client_id).collect();
        assert_eq!(ids, ["b", "d", "a"]);
    }
}
