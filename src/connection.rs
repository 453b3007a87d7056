//! One client connection: a single task that reads packets, hands them to the
//! [`handlers`](crate::handlers), and writes what the client's session has queued.
//!
//! Reading and writing share one task and one future over the unsplit stream; the task
//! waits on that and on its session's one `Notify`, and holds no buffers while idle (about
//! 2 KiB per idle connection in all, see docs/BENCHMARKS.md). Keep-alive and
//! retransmission are timed by the broker's sweeper, not by a timer here. Writes are
//! batched: everything due is encoded into one buffer and written with as few syscalls as
//! the socket allows (see [`Outbox`]). When the write
//! buffer is above its high-water mark the task stops reading and stops pulling from the
//! session queue, so a slow client is held back by TCP flow control and by its queue
//! limits, and never makes the broker's memory grow.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::auth::Access;
use crate::broker::{wake_all, Broker};
use crate::codec::{self, DecodeError, ProtocolVersion, Will};
use crate::handlers;
use crate::handlers::subscribe::RetainedDue;
use crate::linger;
use crate::log_limit::{field, LogLimit};
use crate::outbox::Outbox;
use crate::server::Endpoint;
use crate::session::Session;
use crate::store::{Commit, Stored};

/// Stop pulling queued messages into the write buffer above this many bytes.
const OUT_LOW: usize = 32 * 1024;
/// Stop reading from the client above this many bytes waiting to be written.
const OUT_HIGH: usize = 256 * 1024;
/// Smallest and largest read reservation; the size adapts to the traffic, so an idle
/// connection keeps only a small buffer.
const READ_MIN: usize = 256;
const READ_MAX: usize = 64 * 1024;
/// Acknowledgements withheld under backpressure before the connection stops reading.
const MAX_WITHHELD: usize = 1024;
/// Time given to flush the write buffer when a connection is closed by the broker.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

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
    fn publishes_will(&self) -> bool {
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
    fn server_initiated(&self) -> bool {
        self.disconnect_reason().is_some()
    }

    /// The reason code of the DISCONNECT a 5.0 client is sent before the close, if the
    /// server is the one closing.
    fn disconnect_reason(&self) -> Option<u8> {
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

/// MQTT 5.0 reason codes the broker sends.
pub mod reason {
    pub const SUCCESS: u8 = 0x00;
    pub const DISCONNECT_WITH_WILL: u8 = 0x04;
    pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    pub const UNSPECIFIED: u8 = 0x80;
    pub const MALFORMED_PACKET: u8 = 0x81;
    pub const PROTOCOL_ERROR: u8 = 0x82;
    pub const NOT_AUTHORIZED: u8 = 0x87;
    pub const BAD_AUTHENTICATION_METHOD: u8 = 0x8C;
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    pub const PACKET_ID_NOT_FOUND: u8 = 0x92;
    pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
    pub const SHARED_NOT_SUPPORTED: u8 = 0x9E;
}

/// An acknowledgement owed to the publisher (with its MQTT 5.0 reason code), withheld
/// under backpressure or until what it acknowledges is on disk.
#[derive(Debug, Clone, Copy)]
pub enum Ack {
    PubAck(u16, u8),
    PubRec(u16, u8),
    PubComp(u16, u8),
}

/// What an MQTT 5.0 connection keeps beyond a 3.1.1 one; boxed in [`Client`].
#[derive(Debug, Default)]
pub struct ClientV5 {
    /// Topic aliases the client has set, by alias [MQTT-3.3.2-10/11].
    pub aliases: std::collections::HashMap<u16, String>,
    /// The Session Expiry Interval in force (CONNECT, possibly changed by DISCONNECT).
    pub session_expiry: u32,
    /// QoS 2 packet ids received on this connection and not yet released: with withheld
    /// acknowledgements, what counts against the Receive Maximum, which starts afresh
    /// with every connection (MQTT 5.0 §4.9).
    pub qos2_in: std::collections::HashSet<u16>,
}

pub struct Withheld {
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
    /// Retained messages SUBSCRIBEs owe, one entry per filter, queued by [`catch_up`]
    /// before the next packet is handled. Boxed and allocated only while there are some.
    #[allow(clippy::box_collection)]
    pub retained_due: Option<Box<VecDeque<RetainedDue>>>,
    /// Held while connected: a take-over waits for it (see [`Broker::attach`]).
    pub _attached: crate::session::Attached,
}

impl Client {
    /// Notes retained messages to queue after the packet being handled.
    pub fn owe_retained(&mut self, due: RetainedDue) {
        self.retained_due.get_or_insert_default().push_back(due);
    }

    fn next_retained_due(&mut self) -> Option<RetainedDue> {
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
            .auth
            .allows(self.client_id(), self.username.as_deref(), topic, access)
    }

    /// Writes an acknowledgement, or queues it behind earlier withheld ones so that
    /// acknowledgements leave in the order the PUBLISHes arrived [MQTT-4.6.0-2/3]. It
    /// waits for the sessions in `waiting` to have room (backpressure) and for the store
    /// to have made `commit` durable: nothing is acknowledged before it is stored.
    pub fn acknowledge(&mut self, ack: Ack, waiting: Vec<Arc<Session>>, commit: Commit) {
        let stored = self.broker.store.is_stored(commit);
        if waiting.is_empty() && stored && self.withheld_count() == 0 {
            let v5 = self.is_v5();
            encode_ack(self.out.buf(), ack, v5);
            return;
        }
        if !stored {
            // The store's writer wakes this connection once the commit is on disk.
            self.broker.store.on_durable(commit, self.session.waker());
        }
        self.withheld.get_or_insert_default().push_back(Withheld {
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
        ack: Ack,
        waiting: Vec<Arc<Session>>,
        stored: Stored,
    ) -> Result<(), Close> {
        if !stored.failed {
            self.acknowledge(ack, waiting, stored.commit);
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
        self.acknowledge(with_reason(ack, reason::UNSPECIFIED), Vec::new(), 0);
        Ok(())
    }

    /// Acknowledgements withheld under backpressure.
    pub fn withheld_count(&self) -> usize {
        self.withheld.as_ref().map_or(0, |w| w.len())
    }

    /// Sends the withheld acknowledgements whose sessions have room again and whose
    /// messages are on disk. If the store failed before one of them was, it is refused
    /// instead (see [`Client::acknowledge_stored`]).
    fn release_withheld(&mut self) -> Result<(), Close> {
        let v5 = self.is_v5();
        let store = &*self.broker.store;
        let Some(withheld) = self.withheld.as_mut() else {
            return Ok(());
        };
        while let Some(front) = withheld.front_mut() {
            if !store.is_stored(front.commit) {
                // Lost to a failed write (every commit not durable when a write fails is),
                // or still on its way to the disk.
                if !store.is_lost(front.commit) {
                    break;
                }
                if !v5 || matches!(front.ack, Ack::PubComp(..)) {
                    return Err(Close::StoreFailed);
                }
                front.ack = with_reason(front.ack, reason::UNSPECIFIED);
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
            let ack = front.ack;
            withheld.pop_front();
            encode_ack(self.out.buf(), ack, v5);
        }
        Ok(())
    }
}

fn encode_ack(out: &mut BytesMut, ack: Ack, v5: bool) {
    let (kind, pkid, reason) = match ack {
        Ack::PubAck(pkid, reason) => (codec::AckKind::PubAck, pkid, reason),
        Ack::PubRec(pkid, reason) => (codec::AckKind::PubRec, pkid, reason),
        Ack::PubComp(pkid, reason) => (codec::AckKind::PubComp, pkid, reason),
    };
    codec::encode_ack(out, kind, pkid, reason, v5);
}

/// The same acknowledgement with another reason code.
fn with_reason(ack: Ack, code: u8) -> Ack {
    match ack {
        Ack::PubAck(pkid, _) => Ack::PubAck(pkid, code),
        Ack::PubRec(pkid, _) => Ack::PubRec(pkid, code),
        Ack::PubComp(pkid, _) => Ack::PubComp(pkid, code),
    }
}

/// Where a connection came from.
pub struct Origin {
    pub peer: SocketAddr,
    /// The listener it was accepted on.
    pub endpoint: Arc<Endpoint>,
    /// Common Name of the client certificate the TLS handshake verified, if any.
    pub cert_name: Option<String>,
    /// When the handshake (TLS, CONNECT, password check, take-over) must be over:
    /// `connect_timeout` after accept.
    pub deadline: tokio::time::Instant,
}

/// Serves one accepted connection until it closes. `stream` is any byte stream (TCP, TLS,
/// and WebSockets later).
///
/// `origin` is boxed: an async fn keeps its arguments twice (as captured values and as
/// locals) for the whole life of the connection, and the origin is only needed until the
/// client is connected.
pub async fn serve<S>(
    stream: S,
    origin: Box<Origin>,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut stream = stream;
    // The handshake is boxed: its futures (CONNECT read with its timeout, session
    // take-over) live only until the client is connected, and boxing keeps their size out
    // of the state that every connected, mostly idle, client carries for its whole life.
    let handshake = Box::pin(crate::handshake::handshake(
        &mut stream,
        origin,
        &broker,
        &shutdown,
    ));
    let Some((mut client, rbuf)) = handshake.await else {
        return;
    };
    broker.stats.connections.fetch_add(1, Ordering::Relaxed);
    let close = run(&mut client, &mut stream, rbuf).await;
    // An MQTT 5.0 client is told why the server closes [MQTT-3.14.0-1]; 3.1.1 has no way.
    if client.is_v5() {
        if let Some(reason) = close.disconnect_reason() {
            codec::encode_disconnect_v5(client.out.buf(), reason, None);
        }
    }

    // Flush what is already encoded (acknowledgements, messages) before closing.
    if !client.out.is_empty() && !matches!(close, Close::Io(_)) {
        let _ = tokio::time::timeout(FLUSH_TIMEOUT, client.out.flush_all(&mut stream)).await;
    }
    // When the broker is the one closing, the client may still be sending: the close
    // lingers so that what was just flushed (the DISCONNECT above) is not lost to a reset
    // (see `linger`). After `finish`, so a take-over or the will does not wait for it.
    let lingers = close.server_initiated();
    let shut = linger::shutdown(&mut stream).await;
    finish(client, close);
    broker.stats.connections.fetch_sub(1, Ordering::Relaxed);
    if lingers && shut {
        linger::drain(&mut stream).await;
    }
}

/// The packet loop of a connected client.
async fn run<S>(client: &mut Client, stream: &mut S, mut rbuf: BytesMut) -> Close
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let session = client.session.clone();
    let max_packet = client.broker.config.max_packet_size;
    let mut read_chunk = READ_MIN;
    // Keep-alive and retransmission are timed by the broker's sweeper (see
    // [`Broker::sweep`]), which raises flags and wakes us: no timer per connection.
    let mut last_in = std::time::Instant::now();

    // Packets that arrived together with CONNECT.
    if let Err(close) = process(client, &mut rbuf, max_packet) {
        return close;
    }
    if let Err(close) = catch_up(client, &mut rbuf, max_packet).await {
        return close;
    }

    loop {
        // Every wake-up lands here: shutdown, take-over, keep-alive expiry and due
        // retransmissions are flags checked on the way, so an idle connection waits on
        // one Notify and nothing else.
        if client.broker.is_shutting_down() {
            return Close::Shutdown;
        }
        {
            let now = std::time::Instant::now();
            let mut st = session.state.lock();
            if st.generation != client.generation {
                return Close::TakenOver;
            }
            st.timers.last_in = last_in;
            if st.timers.expired {
                // The sweeper may have looked before this turn recorded a fresh read.
                let silent = now.duration_since(last_in);
                if st.timers.keep_alive().is_some_and(|ka| silent >= ka) {
                    return Close::KeepAliveTimeout;
                }
                st.timers.expired = false;
            }
            let rec = session.rec(&*client.broker.store);
            if st.timers.retry_due {
                st.timers.retry_due = false;
                if let Some(retry) = st.timers.retry() {
                    st.retry(&mut client.out, retry, now, rec);
                }
            }
            if client.out.len() < OUT_LOW {
                // (No lock taken without an acl_file.)
                let acl = client.broker.auth.acl();
                let (waiters, hold) = st.fill(&mut client.out, OUT_HIGH, now, rec, acl.as_deref());
                drop(st);
                wake_all(waiters);
                if hold != 0 {
                    // A message waits for its packet id to reach the disk.
                    client.broker.store.on_durable(hold, session.waker());
                }
            }
        }
        if client.withheld_count() > 0 {
            if let Err(close) = client.release_withheld() {
                return close;
            }
        }
        let reading = client.out.len() < OUT_HIGH && client.withheld_count() < MAX_WITHHELD;

        // Reading and writing share one future over the one stream: no split halves, and
        // no buffer held while idle (see `poll_io`).
        let io = std::future::poll_fn(|cx| {
            poll_io(cx, stream, &mut client.out, &mut rbuf, reading, read_chunk)
        });
        tokio::select! {
            biased;
            r = io => match r {
                Io::Wrote => client.out.release_if_empty(),
                Io::Read { n, filled } => {
                    last_in = std::time::Instant::now();
                    read_chunk = if filled {
                        (read_chunk * 2).min(READ_MAX)
                    } else if n < read_chunk / 4 {
                        (read_chunk / 2).max(READ_MIN)
                    } else {
                        read_chunk
                    };
                    if let Err(close) = process(client, &mut rbuf, max_packet) {
                        return close;
                    }
                    if let Err(close) = catch_up(client, &mut rbuf, max_packet).await {
                        return close;
                    }
                    if rbuf.is_empty() {
                        // Let go of the buffer between bursts: idle connections hold none.
                        rbuf = BytesMut::new();
                    }
                }
                Io::Closed => return Close::PeerClosed,
                Io::Failed(e) => return Close::Io(e),
            },
            _ = session.wake.notified() => {}
        }
    }
}

/// What one turn of [`poll_io`] did.
enum Io {
    Wrote,
    /// `n` bytes were read; `filled` when they filled all the room there was.
    Read {
        n: usize,
        filled: bool,
    },
    Closed,
    Failed(std::io::Error),
}

/// Writes what is due, or else reads what has arrived. A connection with nothing buffered
/// reads into a small stack buffer first and only then allocates its read buffer, so an
/// idle connection holds no read memory at all; under traffic it reads straight into a
/// reservation of `read_chunk` bytes.
fn poll_io<S: AsyncRead + AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    stream: &mut S,
    out: &mut Outbox,
    rbuf: &mut BytesMut,
    reading: bool,
    read_chunk: usize,
) -> Poll<Io> {
    if !out.is_empty() {
        match out.poll_write_to(cx, stream) {
            Poll::Ready(Ok(0)) => {
                return Poll::Ready(Io::Failed(std::io::ErrorKind::WriteZero.into()))
            }
            Poll::Ready(Ok(_)) => return Poll::Ready(Io::Wrote),
            Poll::Ready(Err(e)) => return Poll::Ready(Io::Failed(e)),
            Poll::Pending => {}
        }
    }
    if !reading {
        return Poll::Pending;
    }
    if rbuf.capacity() == 0 {
        let mut stack = [0u8; READ_MIN];
        let mut buf = ReadBuf::new(&mut stack);
        return match Pin::new(stream).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(Io::Closed),
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len();
                rbuf.reserve(read_chunk.max(n));
                rbuf.extend_from_slice(buf.filled());
                Poll::Ready(Io::Read {
                    n,
                    filled: n == READ_MIN,
                })
            }
            Poll::Ready(Err(e)) => Poll::Ready(Io::Failed(e)),
            Poll::Pending => Poll::Pending,
        };
    }
    if rbuf.capacity() - rbuf.len() < READ_MIN {
        rbuf.reserve(read_chunk);
    }
    let room = rbuf.capacity() - rbuf.len();
    match tokio_util::io::poll_read_buf(Pin::new(stream), cx, rbuf) {
        Poll::Ready(Ok(0)) => Poll::Ready(Io::Closed),
        Poll::Ready(Ok(n)) => Poll::Ready(Io::Read {
            n,
            filled: n == room,
        }),
        Poll::Ready(Err(e)) => Poll::Ready(Io::Failed(e)),
        Poll::Pending => Poll::Pending,
    }
}

/// Decodes and handles every whole packet in `rbuf`.
fn process(client: &mut Client, rbuf: &mut BytesMut, max_packet: usize) -> Result<(), Close> {
    let v5 = client.is_v5();
    loop {
        let decoded = if v5 {
            codec::decode_v5(rbuf, max_packet)
        } else {
            codec::decode(rbuf, max_packet)
        };
        match decoded {
            Ok(Some(packet)) => {
                handlers::dispatch(client, packet)?;
                // A SUBSCRIBE owes retained messages: later packets wait for them (see
                // `catch_up`), so their effects come after, as before.
                if client.retained_due.is_some() {
                    return Ok(());
                }
            }
            Ok(None) => return Ok(()),
            Err(e) => return Err(decode_close(&e)),
        }
    }
}

/// Queues the retained messages SUBSCRIBEs owe, one filter at a time with a yield in
/// between (a SUBSCRIBE of hundreds of filters over a large retained store would
/// otherwise hold this worker thread and starve the connections sharing it), then
/// handles the packets that came after, which may owe more. Bounded: no reading here.
async fn catch_up(
    client: &mut Client,
    rbuf: &mut BytesMut,
    max_packet: usize,
) -> Result<(), Close> {
    while let Some(due) = client.next_retained_due() {
        handlers::subscribe::deliver_retained(client, due);
        tokio::task::yield_now().await;
        if client.retained_due.is_none() {
            process(client, rbuf, max_packet)?;
        }
    }
    Ok(())
}

/// The close (and 5.0 reason code) a decoding error calls for.
fn decode_close(e: &DecodeError) -> Close {
    let reason = match e {
        DecodeError::PacketTooLarge { .. } => reason::PACKET_TOO_LARGE,
        DecodeError::Malformed(_) => reason::MALFORMED_PACKET,
        _ => reason::PROTOCOL_ERROR,
    };
    Close::violation(reason, e.to_string())
}

/// Logs the close, publishes the will when the close was ungraceful, and lets go of the
/// session.
fn finish(mut client: Client, close: Close) {
    // (the will is taken out of `client` below)
    let client_id = client.session.client_id.clone();
    // An attacker chooses the client id's length.
    let id = field(&client_id);
    let peer = client.peer;
    match &close {
        Close::Disconnected => {
            tracing::info!(event = "connection_closed", client_id = %id, %peer, "client disconnected")
        }
        Close::DisconnectedWithWill => {
            tracing::info!(event = "connection_closed", client_id = %id, %peer, "client disconnected, asking for its will")
        }
        Close::PeerClosed => {
            tracing::info!(event = "connection_closed", client_id = %id, %peer, "client closed its connection")
        }
        Close::Io(e) => {
            tracing::info!(event = "connection_closed", client_id = %id, %peer, "socket error on client: {e}, disconnecting")
        }
        Close::Violation { reason, why } => {
            // Any client can break the protocol on purpose, again and again.
            static LOG: LogLimit = LogLimit::new(10_000);
            if let Some(suppressed) = LOG.allow() {
                tracing::warn!(event = "connection_closed", client_id = %id, %peer, suppressed, "protocol error: {why} (reason {reason:#04x}), disconnecting")
            }
        }
        Close::KeepAliveTimeout => {
            tracing::info!(event = "connection_closed", client_id = %id, %peer, "client has exceeded its keep-alive, disconnecting")
        }
        Close::TakenOver => {
            tracing::info!(event = "connection_closed", client_id = %id, %peer, "client id taken over by a new connection, disconnecting")
        }
        Close::Shutdown => tracing::debug!(client_id = %id, %peer, "closed for shutdown"),
        Close::StoreFailed => tracing::warn!(
            client_id = %id,
            %peer,
            "a message from the client could not be stored, disconnecting"
        ),
        // Logged, rate-limited, where the message was refused.
        Close::OverMemoryLimit => {
            tracing::debug!(event = "memory_limit", client_id = %id, %peer, "memory_limit reached, disconnecting")
        }
    }
    if close.publishes_will() {
        if let Some(will) = client.will.take() {
            // MQTT 5.0 Will Delay Interval: held back until the delay passes or the
            // session ends, whichever comes first, and dropped if the client comes back
            // in time [MQTT-3.1.3-9].
            let expiry = client.v5.as_ref().map_or(0, |v| v.session_expiry);
            let delay = will.delay.min(expiry);
            let pending = crate::session::PendingWill {
                due: std::time::Instant::now() + Duration::from_secs(u64::from(delay)),
                will: *will,
                username: client.username.clone(),
            };
            // On a take-over the new connection waits for this one to finish, then drops
            // the held will if it resumes the session, or sends it if it starts a new
            // one (see `Broker::attach`).
            if delay == 0 {
                client.broker.publish_will(&client_id, pending);
            } else {
                client.broker.delay_will(&client.session, pending);
            }
        }
    }
    client.broker.detach(&client.session, client.generation);
}
