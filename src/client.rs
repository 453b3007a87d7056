//! The state of one connected client, as the packet handlers see it: the [`Client`]
//! (its session, protocol version, outbox and will), the withheld-acknowledgement gate
//! (acknowledgements wait for queue room and for the store, and leave in order), why a
//! connection ends ([`Close`]), and where it came from ([`Incoming`], [`ListenerPolicy`]).
//!
//! It sits between the handlers, which act on it, and the broker, which it calls: the
//! connection loop (above) owns one, and nothing below knows it exists.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::auth::Access;
use crate::broker::Broker;
use crate::codec::{reason, Ack, AckKind, ProtocolVersion, QoS, Will};
use crate::log_limit::{field, LogLimit};
use crate::outbox::{Outbox, PeerV5};
use crate::session::{AttachPermit, Limits, Session};
use crate::store::{Commit, StoreOutcome};

/// Why a connection ended.
#[derive(Debug)]
pub enum Close {
    /// The client sent DISCONNECT: the will is discarded [MQTT-3.14.4-3].
    Disconnected,
    /// MQTT 5.0 DISCONNECT with reason 0x04: close normally, but publish the will.
    DisconnectedWithWill,
    /// The socket was closed without DISCONNECT.
    PeerClosed,
    Io(std::io::Error),
    /// The client broke the protocol; `reason` is the MQTT 5.0 reason code sent to a 5.0
    /// client in DISCONNECT (0x81 malformed, 0x82 protocol error, 0x93, 0x94, 0x95, ...),
    /// the text says how.
    Violation {
        reason: u8,
        why: String,
    },
    KeepAliveTimeout,
    TakenOver,
    Shutdown,
    /// A message could not be stored (disk full, I/O error), so it cannot be acknowledged:
    /// MQTT 3.1.1 has no way to say so but closing the connection.
    StoreFailed,
    /// A QoS 1/2 message came while the broker was above `memory_limit`: it cannot be
    /// taken, and MQTT 3.1.1 has no way to say so but closing the connection.
    OverMemoryLimit,
}

impl Close {
    /// Every close other than DISCONNECT (and broker shutdown) publishes the will
    /// [MQTT-3.1.2-8].
    pub fn publishes_will(&self) -> bool {
        !matches!(self, Close::Disconnected | Close::Shutdown)
    }

    /// A Protocol Error (0x82).
    pub fn protocol(why: impl Into<String>) -> Close {
        Close::violation(reason::PROTOCOL_ERROR, why)
    }

    pub fn violation(reason: u8, why: impl Into<String>) -> Close {
        Close::Violation {
            reason,
            why: why.into(),
        }
    }

    /// Whether the broker ends the connection while the client may still be sending.
    pub fn server_initiated(&self) -> bool {
        self.disconnect_reason().is_some()
    }

    /// The reason code of the DISCONNECT a 5.0 client is sent before the close, if the
    /// server is the one closing.
    pub fn disconnect_reason(&self) -> Option<u8> {
        match self {
            Close::Violation { reason, .. } => Some(*reason),
            Close::KeepAliveTimeout => Some(reason::KEEP_ALIVE_TIMEOUT),
            Close::TakenOver => Some(reason::SESSION_TAKEN_OVER),
            Close::Shutdown => Some(reason::SERVER_SHUTTING_DOWN),
            Close::StoreFailed => Some(reason::UNSPECIFIED),
            Close::OverMemoryLimit => Some(reason::QUOTA_EXCEEDED),
            _ => None,
        }
    }
}

/// What an MQTT 5.0 connection keeps beyond a 3.1.1 one; boxed in [`Client`].
#[derive(Debug, Default)]
pub struct ClientV5 {
    /// Topic aliases the client has set, by alias [MQTT-3.3.2-10/11].
    pub aliases: std::collections::HashMap<u16, std::sync::Arc<str>>,
    /// The Session Expiry Interval in force (CONNECT, possibly changed by DISCONNECT).
    pub session_expiry: u32,
    /// QoS 2 packet ids received on this connection and not yet released: with withheld
    /// acknowledgements, what counts against the Receive Maximum, which starts afresh
    /// with every connection (MQTT 5.0 §4.9).
    pub qos2_in: std::collections::HashSet<u16>,
}

/// An acknowledgement owed to the publisher (PUBACK, PUBREC or PUBCOMP with its MQTT 5.0
/// reason code), withheld under backpressure or until what it acknowledges is on disk.
pub struct Withheld {
    pub kind: AckKind,
    pub ack: Ack,
    /// Sessions whose queues must have room before the ack is sent.
    pub waiting: Vec<Arc<Session>>,
    /// The store commit that must be durable before the ack is sent (0: none).
    pub commit: Commit,
}

/// The state of one connected client that the packet handlers act on.
pub struct Client {
    pub broker: Arc<Broker>,
    pub session: Arc<Session>,
    pub generation: u64,
    pub version: ProtocolVersion,
    pub peer: SocketAddr,
    /// Authenticated username (or certificate identity); `None` when anonymous.
    pub username: Option<Arc<str>>,
    /// MQTT 5.0 connection state; `None` for 3.1.1 and 3.1 clients.
    pub v5: Option<Box<ClientV5>>,
    /// Bytes waiting to be written to the socket.
    pub out: Outbox,
    /// Boxed: most clients have none, and every connected client carries this struct.
    pub will: Option<Box<Will>>,
    /// Acknowledgements withheld under backpressure, in the order they are owed. Boxed
    /// and allocated on first use: most clients never have one withheld.
    #[allow(clippy::box_collection)]
    pub withheld: Option<Box<VecDeque<Withheld>>>,
    /// Retained messages SUBSCRIBEs owe, one entry per filter, queued by the connection (`connection::catch_up`)
    /// before the next packet is handled. Boxed and allocated only while there are some.
    #[allow(clippy::box_collection)]
    pub retained_due: Option<Box<VecDeque<RetainedDue>>>,
    /// Held while connected: a take-over waits for it (see [`Broker::attach`]).
    pub _attached: AttachPermit,
}

impl Client {
    /// Notes retained messages to queue after the packet being handled.
    pub fn owe_retained(&mut self, due: RetainedDue) {
        self.retained_due.get_or_insert_default().push_back(due);
    }

    pub(crate) fn next_retained_due(&mut self) -> Option<RetainedDue> {
        let queue = self.retained_due.as_mut()?;
        let due = queue.pop_front();
        if queue.is_empty() {
            self.retained_due = None;
        }
        due
    }

    pub fn client_id(&self) -> &str {
        &self.session.client_id
    }

    pub fn is_v5(&self) -> bool {
        self.version == ProtocolVersion::V5
    }

    /// Whether the ACL lets this client do `access` on `topic`.
    pub fn may(&self, topic: &str, access: Access) -> bool {
        self.broker
            .auth()
            .allows(self.client_id(), self.username.as_deref(), topic, access)
    }

    /// Writes an acknowledgement, or queues it behind earlier withheld ones so that
    /// acknowledgements leave in the order the PUBLISHes arrived [MQTT-4.6.0-2/3]. It
    /// waits for the sessions in `waiting` to have room (backpressure) and for the store
    /// to have made `commit` durable: nothing is acknowledged before it is stored.
    pub fn acknowledge(
        &mut self,
        kind: AckKind,
        ack: Ack,
        waiting: Vec<Arc<Session>>,
        commit: Commit,
    ) {
        let stored = self.broker.is_stored(commit);
        if waiting.is_empty() && stored && self.withheld_count() == 0 {
            self.out.ack(kind, ack);
            return;
        }
        if !stored {
            // The store's writer wakes this connection once the commit is on disk.
            self.broker.wake_when_durable(commit, &self.session);
        }
        self.withheld.get_or_insert_default().push_back(Withheld {
            kind,
            ack,
            waiting,
            commit,
        });
    }

    /// Acknowledges a QoS 1/2 PUBLISH (PUBACK or PUBREC per `ack`) once what storing it
    /// came to allows. When a store write failed it is never acknowledged as received: an
    /// MQTT 5.0 client gets reason 0x80, a 3.1.1 client is disconnected.
    pub fn acknowledge_stored(
        &mut self,
        kind: AckKind,
        ack: Ack,
        waiting: Vec<Arc<Session>>,
        stored: StoreOutcome,
    ) -> Result<(), Close> {
        if !stored.failed {
            self.acknowledge(kind, ack, waiting, stored.commit);
            return Ok(());
        }
        static LOG: LogLimit = LogLimit::new(10_000);
        if let Some(suppressed) = LOG.allow() {
            tracing::debug!(
                client_id = ?field(self.client_id()),
                suppressed,
                "message could not be stored, not acknowledged"
            );
        }
        if !self.is_v5() {
            return Err(Close::StoreFailed);
        }
        let refused = Ack {
            reason: reason::UNSPECIFIED,
            ..ack
        };
        self.acknowledge(kind, refused, Vec::new(), 0);
        Ok(())
    }

    /// Acknowledgements withheld under backpressure.
    pub fn withheld_count(&self) -> usize {
        self.withheld.as_ref().map_or(0, |w| w.len())
    }

    /// Sends the withheld acknowledgements whose sessions have room again and whose
    /// messages are on disk. If the store failed before one of them was, it is refused
    /// instead (see [`Client::acknowledge_stored`]).
    pub(crate) fn release_withheld(&mut self) -> Result<(), Close> {
        let v5 = self.is_v5();
        let broker = &*self.broker;
        let Some(withheld) = self.withheld.as_mut() else {
            return Ok(());
        };
        while let Some(front) = withheld.front_mut() {
            if !broker.is_stored(front.commit) {
                // Lost to a failed write (every commit not durable when a write fails is),
                // or still on its way to the disk.
                if !broker.is_lost(front.commit) {
                    break;
                }
                if !v5 || front.kind == AckKind::PubComp {
                    return Err(Close::StoreFailed);
                }
                front.ack.reason = reason::UNSPECIFIED;
                front.commit = 0;
            }
            // A discarded session was reset, so it has room too. One still full (another
            // publisher took the room) gets this publisher registered again, under the
            // same lock, so the next room made wakes it.
            let me = &self.session;
            front.waiting.retain(|s| {
                let mut st = s.state.lock();
                let full = !st.has_room();
                if full {
                    st.add_space_waiter(me);
                }
                full
            });
            if !front.waiting.is_empty() {
                break;
            }
            let (kind, ack) = (front.kind, front.ack);
            withheld.pop_front();
            self.out.ack(kind, ack);
        }
        Ok(())
    }
}

/// A connected client while its connection is parked (see `server::parked`): the
/// [`Client`] less what an idle connection holds empty (the outbox's buffers and
/// counts, withheld acknowledgements, retained catch-up), less the broker (the server
/// has it), with its rarely set parts in one box and its peer address packed: 72 bytes
/// instead of 200, in every parked connection.
pub struct Dormant {
    generation: u64,
    peer: PackedAddr,
    username: Option<Arc<str>>,
    /// `None` for a 3.1.1 client without a will: most of them.
    rare: Option<Box<Rare>>,
    /// The session is the permit's.
    attached: AttachPermit,
    version: ProtocolVersion,
}

/// What few parked clients have: MQTT 5.0 state (the client's and the outbox's) and a
/// will.
struct Rare {
    v5: Option<Box<ClientV5>>,
    /// The outbox, to be made again (see [`Outbox::into_peer`]).
    out: Option<Box<PeerV5>>,
    will: Option<Box<Will>>,
}

/// A socket address in 24 bytes rather than `SocketAddr`'s 32 (the IPv6 flow label,
/// which midge never shows, is not kept).
#[derive(Clone, Copy)]
struct PackedAddr {
    ip: [u8; 16],
    scope_id: u32,
    port: u16,
    v6: bool,
}

impl From<SocketAddr> for PackedAddr {
    fn from(a: SocketAddr) -> PackedAddr {
        match a {
            SocketAddr::V4(a) => {
                let mut ip = [0; 16];
                ip[..4].copy_from_slice(&a.ip().octets());
                PackedAddr {
                    ip,
                    scope_id: 0,
                    port: a.port(),
                    v6: false,
                }
            }
            SocketAddr::V6(a) => PackedAddr {
                ip: a.ip().octets(),
                scope_id: a.scope_id(),
                port: a.port(),
                v6: true,
            },
        }
    }
}

impl PackedAddr {
    fn addr(self) -> SocketAddr {
        if self.v6 {
            let ip = std::net::Ipv6Addr::from(self.ip);
            SocketAddr::V6(std::net::SocketAddrV6::new(ip, self.port, 0, self.scope_id))
        } else {
            let [a, b, c, d, ..] = self.ip;
            SocketAddr::from(([a, b, c, d], self.port))
        }
    }
}

impl Client {
    /// The client to park; `Err(self)` if something is under way (bytes to write or
    /// buffers held, acknowledgements withheld, retained messages owed).
    // The client is handed back as it came, by move: nothing is copied that was not.
    #[allow(clippy::result_large_err)]
    pub fn into_dormant(self) -> Result<Dormant, Client> {
        if self.withheld.is_some() || self.retained_due.is_some() || !self.out.is_released() {
            return Err(self);
        }
        let Client {
            broker,
            session,
            generation,
            version,
            peer,
            username,
            v5,
            out,
            will,
            withheld,
            retained_due,
            _attached: attached,
        } = self;
        let out = out.into_peer();
        // The permit holds the same session; the broker is given back at `wake`.
        drop((broker, session, withheld, retained_due));
        let rare = (v5.is_some() || out.is_some() || will.is_some())
            .then(|| Box::new(Rare { v5, out, will }));
        Ok(Dormant {
            generation,
            peer: PackedAddr::from(peer),
            username,
            rare,
            attached,
            version,
        })
    }
}

impl Dormant {
    pub fn session(&self) -> &Arc<Session> {
        &self.attached.0
    }

    pub fn client_id(&self) -> &str {
        &self.attached.0.client_id
    }

    /// The client again, as it was parked, of `broker`.
    pub fn wake(self, broker: Arc<Broker>) -> Client {
        let (v5, out, will) = match self.rare {
            Some(rare) => (rare.v5, rare.out, rare.will),
            None => (None, None, None),
        };
        Client {
            session: self.attached.0.clone(),
            broker,
            generation: self.generation,
            version: self.version,
            peer: self.peer.addr(),
            username: self.username,
            v5,
            out: Outbox::for_client(out),
            will,
            withheld: None,
            retained_due: None,
            _attached: self.attached,
        }
    }
}

#[cfg(test)]
mod packed_addr_tests {
    use super::PackedAddr;
    use std::net::SocketAddr;

    #[test]
    fn an_address_comes_back_as_it_was_packed() {
        for text in ["127.0.0.1:1883", "[::1]:8883", "[fe80::1%3]:1", "0.0.0.0:0"] {
            let a: SocketAddr = text.parse().unwrap(); // ok: unit test
            assert_eq!(PackedAddr::from(a).addr(), a, "{text}");
        }
        assert_eq!(std::mem::size_of::<PackedAddr>(), 24);
    }
}

/// Where a connection came from.
pub struct Incoming {
    pub peer: SocketAddr,
    /// The listener it was accepted on.
    pub listener: Arc<ListenerPolicy>,
    /// Common Name of the client certificate the TLS handshake verified, if any.
    pub cert_name: Option<String>,
    /// When the handshake (TLS, CONNECT, password check, take-over) must be over:
    /// `connect_timeout` after accept.
    pub deadline: tokio::time::Instant,
}

/// What a connection needs to know about the listener that accepted it; one per listener,
/// shared by its connections.
pub struct ListenerPolicy {
    /// Queue limits of the sessions that connect here.
    pub limits: Arc<Limits>,
    pub allow_anonymous: bool,
    pub use_identity_as_username: bool,
}

/// The retained messages a SUBSCRIBE owes for one of its filters, queued by the
/// connection before it handles the next packet (see [`Client::owe_retained`]).
#[derive(Debug)]
pub struct RetainedDue {
    pub filter: String,
    /// The granted QoS: each message goes at the lower of it and its own.
    pub qos: QoS,
    pub sub_id: Option<u32>,
}
