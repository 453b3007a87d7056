//! An application message as the broker holds it.
//!
//! A message is decoded once, wrapped in an [`Arc`], and that one allocation is shared by
//! the retained store and by every subscriber queue it lands in: routing to a thousand
//! subscribers costs a thousand reference-count increments, never a copy of the payload.

use std::sync::Arc;

use bytes::Bytes;

use crate::codec::QoS;

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    /// The QoS it was published with; each subscriber receives min(this, granted QoS).
    pub qos: QoS,
    /// The RETAIN flag it was published with.
    pub retain: bool,
}

pub type SharedMessage = Arc<Message>;

impl Message {
    /// Bytes this message accounts for in a queue (`max_queued_bytes`): topic and payload.
    pub fn size(&self) -> usize {
        self.topic.len() + self.payload.len()
    }
}
