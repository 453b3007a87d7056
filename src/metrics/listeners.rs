//! Connections per listener: the server registers each listener it binds, and each
//! connection holds its listener's [`ListenerStats`] while it is open.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// One listener's connection counts.
#[derive(Debug)]
pub struct ListenerStats {
    /// `bind:port` as configured (the port actually bound when it was 0).
    pub address: String,
    /// `mqtt` or `mqtts` (later `ws`, `wss`).
    pub protocol: &'static str,
    current: AtomicUsize,
    accepted: AtomicU64,
}

/// What one listener looked like when read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSnapshot {
    pub address: String,
    pub protocol: &'static str,
    /// Open now.
    pub connections: usize,
    /// Accepted since start.
    pub accepted: u64,
}

impl ListenerStats {
    /// A connection opened; [`ListenerStats::closed`] must follow when it closes.
    pub fn opened(&self) {
        self.current.fetch_add(1, Ordering::Relaxed);
        self.accepted.fetch_add(1, Ordering::Relaxed);
        super::add(super::Counter::ConnectionsAccepted, 1);
    }

    /// A connection [`ListenerStats::opened`] closed.
    pub fn closed(&self) {
        self.current.fetch_sub(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> ListenerSnapshot {
        ListenerSnapshot {
            address: self.address.clone(),
            protocol: self.protocol,
            connections: self.current.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
        }
    }
}

static LISTENERS: Mutex<Vec<Arc<ListenerStats>>> = Mutex::new(Vec::new());

/// Registers a listener (once, when it is bound).
pub fn register_listener(address: String, protocol: &'static str) -> Arc<ListenerStats> {
    let stats = Arc::new(ListenerStats {
        address,
        protocol,
        current: AtomicUsize::new(0),
        accepted: AtomicU64::new(0),
    });
    LISTENERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(stats.clone());
    stats
}

/// Every registered listener, in the order they were bound.
pub fn listeners() -> Vec<ListenerSnapshot> {
    LISTENERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|l| l.snapshot())
        .collect()
}
