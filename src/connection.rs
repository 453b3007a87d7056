//! One client connection: a single task that reads packets, hands them to the
//! [`handlers`], and writes what the client's session has queued.
//!
//! Reading and writing share one task and one future over the unsplit stream; the task
//! waits on that and on its session's one [`Wake`](crate::session::Wake), and holds no
//! buffers while idle (see docs/BENCHMARKS.md, "Idle connection, byte by byte").
//! Keep-alive and retransmission are timed by the broker's sweeper, not by a timer here.
//! Writes are batched: everything due is encoded into one buffer and written with as few
//! syscalls as the socket allows (see [`Outbox`]). When the write buffer is above its
//! high-water mark the task stops reading and stops pulling from the session queue, so a
//! slow client is held back by TCP flow control and by its queue limits, and never makes
//! the broker's memory grow.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::broker::{wake_all, Broker, DeferWakes};
use crate::client::{Client, Close, Incoming};
use crate::codec::{self, reason, DecodeError};
use crate::handlers;
use crate::linger;
use crate::log_limit::{field, LogLimit, Quoted};
use crate::log_peer::PeerText;
use crate::metrics::{self, Counter};
use crate::outbox::Outbox;

mod large_frame;
mod read_counts;
use large_frame::LargeFrame;
use read_counts::ReadCounts;

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

/// Serves one accepted connection until it closes, or until it parks: then the
/// connected client is returned, for the caller to park with the socket (see
/// [`resume`]). `stream` is any byte stream (TCP, TLS, and WebSockets later); only a
/// caller that can park it passes `may_park`.
///
/// Everything the connection owns for its whole life (the stream, the broker, the
/// shutdown token) is borrowed from the caller's task, and this is not an `async fn`: an
/// async fn keeps each argument twice in its state (as passed, and as the local it is
/// bound to), and a value moved into a callee's future stays in the caller's state as
/// well, so each idle connection would carry them two or three times. `incoming` is boxed
/// and moved, as it is only needed until the client is connected.
// (The `async fn` clippy asks for is the form this avoids.)
#[allow(clippy::manual_async_fn)]
pub fn serve<'a, S>(
    stream: &'a mut S,
    incoming: Box<Incoming>,
    broker: &'a Arc<Broker>,
    shutdown: &'a CancellationToken,
    may_park: bool,
) -> impl std::future::Future<Output = Option<Client>> + Send + 'a
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async move {
        // The handshake is boxed: its futures (CONNECT read with its timeout, session
        // take-over) live only until the client is connected, and boxing keeps their size out
        // of the state that every connected, mostly idle, client carries for its whole life.
        let handshake = Box::pin(crate::handshake::handshake(
            &mut *stream,
            incoming,
            broker,
            shutdown,
        ));
        let (mut client, rbuf) = handshake.await?;
        metrics::add(Counter::Connects, 1);
        // (`now()` in the call, not a local: a `Copy` local passed on stays in this
        // future's state as well.)
        let close = match run(
            &mut client,
            stream,
            rbuf,
            std::time::Instant::now(),
            may_park,
        )
        .await
        {
            Ended::Park => return Some(client),
            Ended::Close(close) => close,
        };
        // What `goodbye` does, written out: as a future of its own, with the references
        // it holds, it made this state (every unparked connection's task) 32 bytes larger.
        // An MQTT 5.0 client is told why the server closes [MQTT-3.14.0-1]; 3.1.1 has no way.
        if let Some(reason) = close.disconnect_reason() {
            client.out.disconnect(reason);
        }
        if !client.out.is_empty() && !matches!(close, Close::Io(_)) {
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, client.out.flush_all(&mut *stream)).await;
        }
        let lingers = close.server_initiated();
        let shut = linger::shutdown(&mut *stream).await;
        finish(client, close);
        if lingers && shut {
            linger::drain(stream).await;
        }
        None
    }
}

/// Serves a connection that was parked, from where [`serve`] left it, until it closes or
/// parks again (then the client is returned, as by `serve`, if `may_park`).
#[allow(clippy::manual_async_fn)]
pub fn resume<'a, S>(
    stream: &'a mut S,
    mut client: Client,
    may_park: bool,
) -> impl std::future::Future<Output = Option<Client>> + Send + 'a
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async move {
        let last_in = {
            let mut st = client.session.state.lock();
            // Parked no more: the sweeper may ask again once it is idle again.
            st.timers.park_due = false;
            st.timers.last_in
        };
        let close = match run(&mut client, stream, BytesMut::new(), last_in, may_park).await {
            Ended::Park => return Some(client),
            Ended::Close(close) => close,
        };
        let lingers = goodbye(&mut client, stream, &close).await;
        finish(client, close);
        if lingers {
            linger::drain(stream).await;
        }
        None
    }
}

/// Ends a parked connection whose socket could not be taken back (see [`resume`]): as a
/// socket error, will and all.
pub fn abandon(client: Client, e: std::io::Error) {
    finish(client, Close::Io(e));
}

/// The start of a close, before [`finish`]: an MQTT 5.0 client is told why, what is
/// already encoded is flushed, and the socket is shut down. Returns whether the close is
/// to linger after `finish` (see `linger`).
#[allow(clippy::manual_async_fn)]
fn goodbye<'a, S>(
    client: &'a mut Client,
    stream: &'a mut S,
    close: &'a Close,
) -> impl std::future::Future<Output = bool> + Send + 'a
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async move {
        // An MQTT 5.0 client is told why the server closes [MQTT-3.14.0-1]; 3.1.1 has no way.
        if let Some(reason) = close.disconnect_reason() {
            client.out.disconnect(reason);
        }
        // Flush what is already encoded (acknowledgements, messages) before closing.
        if !client.out.is_empty() && !matches!(close, Close::Io(_)) {
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, client.out.flush_all(&mut *stream)).await;
        }
        // When the broker is the one closing, the client may still be sending: the close
        // lingers so that what was just flushed (the DISCONNECT above) is not lost to a reset
        // (see `linger`), after `finish`, so a take-over or the will does not wait for it.
        let lingers = close.server_initiated();
        let shut = linger::shutdown(&mut *stream).await;
        lingers && shut
    }
}

/// How the packet loop ended.
enum Ended {
    Close(Close),
    /// Idle and holding nothing but the client: to be parked (see [`resume`]).
    Park,
}

/// The packet loop of a connected client. Not an `async fn`, for the reason given at
/// [`serve`].
#[allow(clippy::manual_async_fn)]
///
/// `last_in` is when the client last sent anything (keep-alive counts from it). With
/// `may_park`, the loop ends with [`Ended::Park`] when the sweeper asks it to park and
/// it holds nothing but the client.
fn run<'a, S>(
    client: &'a mut Client,
    stream: &'a mut S,
    mut rbuf: BytesMut,
    mut last_in: std::time::Instant,
    may_park: bool,
) -> impl std::future::Future<Output = Ended> + 'a
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    async move {
        // Nothing here that `client` already has (its session, the broker's config): every
        // local that lives across the waits below is carried by each idle connection.
        let mut read_chunk = READ_MIN;
        // Keep-alive, retransmission and parking are timed by the broker's sweeper (see
        // [`Broker::sweep`]), which raises flags and wakes us: no timer per connection.

        // Packets that arrived together with CONNECT (their bytes counted by the handshake).
        if let Err(close) = process(client, &mut rbuf, 0) {
            return Ended::Close(close);
        }
        if let Err(close) = catch_up_boxed(client, &mut rbuf).await {
            return Ended::Close(close);
        }
        // The large PUBLISH being received, if any, into a buffer of its own size.
        let mut large = LargeFrame::begin(&mut rbuf, &client.broker);

        loop {
            // Every wake-up lands here: shutdown, take-over, keep-alive expiry and due
            // retransmissions are flags checked on the way, so an idle connection waits on
            // one waker slot and nothing else.
            if client.broker.is_shutting_down() {
                return Ended::Close(Close::Shutdown);
            }
            let park_due = {
                let now = std::time::Instant::now();
                let mut st = client.session.state.lock();
                if st.generation != client.generation {
                    return Ended::Close(Close::TakenOver);
                }
                st.timers.last_in = last_in;
                st.timers.idle_sweeps = 0;
                st.timers.parkable = may_park;
                let park_due = st.timers.park_due;
                if st.timers.keep_alive_expired {
                    // The sweeper may have looked before this turn recorded a fresh read.
                    let silent = now.duration_since(last_in);
                    if st.timers.keep_alive().is_some_and(|ka| silent >= ka) {
                        return Ended::Close(Close::KeepAliveTimeout);
                    }
                    st.timers.keep_alive_expired = false;
                }
                let handle = client.session.store_handle();
                if st.timers.retry_due {
                    st.timers.retry_due = false;
                    if let Some(retry) = st.timers.retry() {
                        st.retry(&mut client.out, retry, now, handle);
                    }
                }
                if client.out.len() < OUT_LOW {
                    // (No lock taken without an acl_file.)
                    let acl = client.broker.auth().acl();
                    let (waiters, hold) =
                        st.fill(&mut client.out, OUT_HIGH, now, handle, acl.as_deref());
                    drop(st);
                    wake_all(waiters);
                    if hold != 0 {
                        // A message waits for its packet id to reach the disk.
                        client.broker.wake_when_durable(hold, &client.session);
                    }
                }
                park_due
            };
            if client.withheld_count() > 0 {
                if let Err(close) = client.release_withheld() {
                    return Ended::Close(close);
                }
            }
            if park_due {
                // Parked only when nothing is under way: everything written, no partial
                // packet read, nothing withheld or owed. (Whatever wakes the session or
                // arrives on the socket resumes it.)
                let idle = client.out.is_empty()
                    && rbuf.is_empty()
                    && large.is_none()
                    && client.withheld_count() == 0
                    && client.retained_due.is_none();
                if idle {
                    client.out.release_if_empty();
                    if rbuf.capacity() > 0 {
                        crate::buffers::give(std::mem::take(&mut rbuf));
                    }
                    return Ended::Park;
                }
                // Asked again once it has been idle as long again.
                client.session.state.lock().timers.park_due = false;
            }
            let reading = client.out.len() < OUT_HIGH && client.withheld_count() < MAX_WITHHELD;

            // Reading and writing share one poll over the one stream: no split halves, and
            // no buffer held while idle (see `poll_io`); the session's wake is polled beside
            // it, the socket first, and leaves only its waker behind (see `Wake`).
            let turn = std::future::poll_fn(|cx| {
                let chunk = if large.is_some() { 0 } else { read_chunk };
                match poll_io(cx, stream, &mut client.out, &mut rbuf, reading, chunk) {
                    Poll::Ready(io) => Poll::Ready(Some(io)),
                    Poll::Pending => client.session.wake.poll_woken(cx).map(|()| None),
                }
            });
            if let Some(r) = turn.await {
                match r {
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
                        // A large frame's charge ends when it is whole: the message made of
                        // it charges what it keeps, and must not be refused for this charge.
                        if large.as_ref().is_some_and(|l| l.is_complete(&rbuf)) {
                            large = None;
                        }
                        if let Err(close) = process(client, &mut rbuf, n) {
                            return Ended::Close(close);
                        }
                        if let Err(close) = catch_up_boxed(client, &mut rbuf).await {
                            return Ended::Close(close);
                        }
                        if rbuf.is_empty() {
                            // Let go of the buffer between bursts: idle connections hold none.
                            // It goes back to this thread's recycled buffers (see `buffers`).
                            crate::buffers::give(std::mem::take(&mut rbuf));
                        } else if large.is_none() {
                            large = LargeFrame::begin(&mut rbuf, &client.broker);
                        }
                    }
                    Io::Closed => return Ended::Close(Close::PeerClosed),
                    Io::Failed(e) => return Ended::Close(Close::Io(e)),
                }
            }
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
/// reservation of `read_chunk` bytes. A `read_chunk` of 0 keeps the buffer as it is: a
/// large frame's own buffer (see [`LargeFrame`]) is read into until it is full, never
/// grown, which would copy it.
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
                *rbuf = crate::buffers::take(read_chunk.max(n));
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
    if rbuf.capacity() - rbuf.len() < READ_MIN && read_chunk > 0 {
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

/// Decodes and handles every whole packet in `rbuf`; `read` is how many bytes the read
/// before it added (0 when nothing was read).
fn process(client: &mut Client, rbuf: &mut BytesMut, read: usize) -> Result<(), Close> {
    let v5 = client.is_v5();
    let max_packet = client.broker.config().max_packet_size;
    // Subscribers are woken once, when every packet of this read has been routed (see
    // `DeferWakes`).
    let _wakes = DeferWakes::begin();
    // Counted into the metrics once, when this returns (however it returns), with the
    // bytes read: one thread-local access per read.
    let mut counts = ReadCounts::new(read as u64);
    loop {
        // A run of PUBACKs goes without decoding each (see `handlers::ack::pubacks`).
        let acks = handlers::ack::pubacks(client, rbuf, max_packet);
        if acks > 0 {
            rbuf.advance(4 * acks);
            counts.others(acks);
            continue;
        }
        // The fixed header's first byte says the type and a PUBLISH's QoS: counted from it
        // rather than from the decoded packet, whose borrow here cost ~70 instructions per
        // QoS 1 message (callgrind) by keeping the handlers from taking it in registers.
        let first = rbuf.first().copied();
        let decoded = if v5 {
            codec::decode_v5(rbuf, max_packet)
        } else {
            codec::decode(rbuf, max_packet)
        };
        match decoded {
            Ok(Some(packet)) => {
                counts.count(first);
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

/// [`catch_up`], boxed and only when retained messages are owed: its state (the filter
/// being served, the yield) would otherwise be part of every idle connection's task.
async fn catch_up_boxed(client: &mut Client, rbuf: &mut BytesMut) -> Result<(), Close> {
    if client.retained_due.is_none() {
        return Ok(());
    }
    Box::pin(catch_up(client, rbuf)).await
}

/// Queues the retained messages SUBSCRIBEs owe, one filter at a time with a yield in
/// between (a SUBSCRIBE of hundreds of filters over a large retained store would
/// otherwise hold this worker thread and starve the connections sharing it), then
/// handles the packets that came after, which may owe more. Bounded: no reading here.
async fn catch_up(client: &mut Client, rbuf: &mut BytesMut) -> Result<(), Close> {
    while let Some(due) = client.next_retained_due() {
        handlers::subscribe::deliver_retained(client, due);
        tokio::task::yield_now().await;
        if client.retained_due.is_none() {
            process(client, rbuf, 0)?;
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
    // Written through PeerText, at a quarter of SocketAddr's cost (src/log_peer.rs).
    let peer = client.peer;
    match &close {
        Close::Disconnected => {
            tracing::info!(event = "connection_closed", client_id = ?Quoted(&id), peer = %PeerText::new(peer), cause = "disconnect", "client disconnected")
        }
        Close::DisconnectedWithWill => {
            tracing::info!(event = "connection_closed", client_id = ?Quoted(&id), peer = %PeerText::new(peer), cause = "disconnect_with_will", "client disconnected, asking for its will")
        }
        Close::PeerClosed => {
            tracing::info!(event = "connection_closed", client_id = ?Quoted(&id), peer = %PeerText::new(peer), cause = "peer_closed", "client closed its connection")
        }
        Close::Io(e) => {
            tracing::info!(event = "connection_closed", client_id = ?Quoted(&id), peer = %PeerText::new(peer), cause = "io_error", "socket error on client: {e}, disconnecting")
        }
        Close::Violation { reason, why } => {
            // Any client can break the protocol on purpose, again and again.
            static LOG: LogLimit = LogLimit::new(10_000);
            if let Some(suppressed) = LOG.allow() {
                tracing::warn!(event = "connection_closed", client_id = ?Quoted(&id), peer = %PeerText::new(peer), cause = "protocol_error", suppressed, "protocol error: {why} (reason {reason:#04x}), disconnecting")
            }
        }
        Close::KeepAliveTimeout => {
            tracing::info!(event = "connection_closed", client_id = ?Quoted(&id), peer = %PeerText::new(peer), cause = "keep_alive", "client has exceeded its keep-alive, disconnecting")
        }
        Close::TakenOver => {
            tracing::info!(event = "connection_closed", client_id = ?Quoted(&id), peer = %PeerText::new(peer), cause = "taken_over", "client id taken over by a new connection, disconnecting")
        }
        Close::Shutdown => {
            tracing::debug!(client_id = %id, peer = %PeerText::new(peer), "closed for shutdown")
        }
        Close::StoreFailed => tracing::warn!(
            client_id = %id,
            peer = %PeerText::new(peer),
            "a message from the client could not be stored, disconnecting"
        ),
        // Logged, rate-limited, where the message was refused.
        Close::OverMemoryLimit => {
            tracing::debug!(event = "memory_limit", client_id = %id, peer = %PeerText::new(peer), "memory_limit reached, disconnecting")
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
    // Before the attach permit goes (with `client`): the next connection registers its
    // own waker only after that.
    client.session.wake.forget_waker();
    client.broker.detach(&client.session, client.generation);
}
