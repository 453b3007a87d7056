//! The storage interface under sessions and retained messages.
//!
//! The broker's working state (sessions, their queues and inflight windows, retained
//! messages) lives in memory, where routing reads it. Every change to state that must
//! survive the process is also reported to a [`Store`] as a [`StoreEvent`], at the point
//! where it happens. The in-memory store records nothing, which is what a broker without
//! persistence wants; a durable store appends the events to disk and, on start, hands back
//! the state they describe through [`Store::load`]. Routing never knows which one it has.

pub mod log;
pub mod record;

use crate::codec::QoS;
use crate::message::Message;

/// A change to durable state.
#[derive(Debug)]
pub enum StoreEvent<'a> {
    /// A persistent session was created (or resumed with fresh state).
    SessionOpened {
        client_id: &'a str,
    },
    /// A session and everything queued for it is gone.
    SessionDiscarded {
        client_id: &'a str,
    },
    Subscribed {
        client_id: &'a str,
        filter: &'a str,
        qos: QoS,
    },
    Unsubscribed {
        client_id: &'a str,
        filter: &'a str,
    },
    /// A message was queued for a persistent session; `seq` orders it within the session.
    Enqueued {
        client_id: &'a str,
        seq: u64,
        message: &'a Message,
        qos: QoS,
    },
    /// A queued or inflight message left the session (acknowledged, or dropped by policy).
    Removed {
        client_id: &'a str,
        seq: u64,
    },
    /// The retained message of a topic was set (`Some`) or cleared (`None`).
    Retained {
        topic: &'a str,
        message: Option<&'a Message>,
    },
}

/// Why a store could not record an event.
#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub trait Store: Send + Sync {
    /// Records one change. A durable store must not report success before the change would
    /// survive the process being killed; the broker acknowledges publishers only after this.
    fn record(&self, event: StoreEvent<'_>) -> Result<(), StoreError>;

    /// Whether this store keeps anything: lets the broker skip building events nobody reads.
    fn is_durable(&self) -> bool;
}

/// Keeps nothing beyond the broker's live memory: state lasts as long as the process.
#[derive(Debug, Default)]
pub struct MemoryStore;

impl Store for MemoryStore {
    fn record(&self, _event: StoreEvent<'_>) -> Result<(), StoreError> {
        Ok(())
    }

    fn is_durable(&self) -> bool {
        false
    }
}
