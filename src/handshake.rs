//! From an accepted connection to CONNACK: the part of a connection an unauthenticated
//! client controls, so everything here is bounded.
//!
//! * Time: the whole of it, CONNECT read, password check and session take-over, ends by
//!   the connection's deadline (`connect_timeout` after accept, the TLS handshake
//!   included); MQTT leaves that time to the server.
//! * Memory: a first packet that is not CONNECT closes the connection on its first byte,
//!   before its body is read [MQTT-3.1.0-1]; a CONNECT larger than `max_connect_size` is
//!   refused from its fixed header (5.0: CONNACK 0x95 Packet too large, §3.2.2.2; 3.1.1
//!   has no code for it: closed); bytes the client sends after CONNECT are kept only up to
//!   the same size until CONNACK.
//! * CPU: a connection that closes while its password check waits is dropped from the
//!   queue unchecked (see [`crate::auth::queue`]).

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::client::{Client, Incoming};
use crate::codec::{self, Connect, DecodeError, Packet, ProtocolVersion};
use crate::handlers;
use crate::linger;
use crate::log_limit::LogLimit;
use crate::metrics::{self, Counter};
use crate::outbox::Outbox;

/// Smallest read reservation while reading a CONNECT.
const READ_MIN: usize = 256;

/// How a handshake ended short of a connected client.
enum Outcome {
    Connected(Client),
    /// Refuse with this CONNACK (a 3.1.1 return code, or a 5.0 reason code >= 0x80), then
    /// close.
    Refused(Option<ProtocolVersion>, u8),
    /// Close without a word.
    Closed,
}

/// Reads the CONNECT and runs the CONNECT handler, all before the connection's
/// deadline. Returns the connected client with any bytes read after its CONNECT, or
/// `None` when the connection is to be closed (after a refusing CONNACK, which is
/// delivered with a graceful close, where the specification asks for one).
pub async fn handshake<S>(
    stream: &mut S,
    incoming: Box<Incoming>,
    broker: &Arc<Broker>,
    shutdown: &CancellationToken,
) -> Option<(Client, BytesMut)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let peer = incoming.peer;
    let mut rbuf = BytesMut::new();
    let outcome = tokio::select! {
        _ = shutdown.cancelled() => return None,
        r = tokio::time::timeout_at(
            incoming.deadline,
            connect(stream, &incoming, broker, &mut rbuf),
        ) => r,
    };
    let (version, code) = match outcome {
        Ok(Outcome::Connected(client)) => return Some((client, rbuf)),
        Ok(Outcome::Refused(version, code)) => (version, code),
        Ok(Outcome::Closed) => return None,
        Err(_) => {
            static LATE: LogLimit = LogLimit::new(10_000);
            if let Some(held_back) = LATE.allow() {
                tracing::info!(
                    event = "connect_timeout",
                    %peer,
                    held_back,
                    "not connected within connect_timeout ({} s), closing",
                    broker.config().connect_timeout
                );
            }
            return None;
        }
    };
    if is_auth_failure(code) {
        metrics::add(Counter::AuthFailures, 1);
    }
    let mut out = Outbox::for_refusal(version);
    out.connack_refused(code);
    // Counted as written: the refusal is the last thing this connection writes.
    out.hand_in_counts(out.len());
    linger::close_after(stream, out.buf()).await;
    None
}

/// Whether a refusing CONNACK's code says the client was not let in for who it is (or
/// failed to prove): bad user name or password, not authorized, bad authentication
/// method. What `$SYS` and `/metrics` count as authentication failures.
fn is_auth_failure(code: u8) -> bool {
    use codec::reason::{self, v311};
    matches!(
        code,
        v311::BAD_USERNAME_OR_PASSWORD
            | v311::NOT_AUTHORIZED
            | 0x86
            | reason::NOT_AUTHORIZED
            | reason::BAD_AUTHENTICATION_METHOD
    )
}

/// The handshake proper, without its deadline.
async fn connect<S>(
    stream: &mut S,
    incoming: &Incoming,
    broker: &Arc<Broker>,
    rbuf: &mut BytesMut,
) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let peer = incoming.peer;
    let cap = broker
        .config()
        .max_connect_size
        .min(broker.config().max_packet_size);
    let connect = match read_connect(stream, rbuf, cap).await {
        Ok(Some(connect)) => connect,
        Ok(None) => {
            tracing::debug!(%peer, "connection closed before CONNECT");
            return Outcome::Closed;
        }
        Err(ReadError::NotConnect(byte1)) => {
            static NOT_CONNECT: LogLimit = LogLimit::new(10_000);
            if let Some(held_back) = NOT_CONNECT.allow() {
                tracing::info!(%peer, held_back, "first packet was not CONNECT (first byte {byte1:#04x}), closing");
            }
            return Outcome::Closed;
        }
        Err(ReadError::Decode(DecodeError::PacketTooLarge { size, .. })) => {
            static TOO_LARGE: LogLimit = LogLimit::new(10_000);
            if let Some(held_back) = TOO_LARGE.allow() {
                tracing::info!(%peer, held_back, size, max_connect_size = cap, "CONNECT too large, refusing");
            }
            // Only 5.0 can say so (0x95); the level is read from the variable header,
            // the body never is.
            return match peek_level(rbuf) {
                Some(5) => {
                    Outcome::Refused(Some(ProtocolVersion::V5), codec::reason::PACKET_TOO_LARGE)
                }
                _ => Outcome::Closed,
            };
        }
        Err(ReadError::Decode(DecodeError::UnsupportedProtocolLevel(level))) => {
            // [MQTT-3.1.2-2]: CONNACK 0x01, then close.
            static LEVEL: LogLimit = LogLimit::new(10_000);
            if let Some(held_back) = LEVEL.allow() {
                tracing::info!(%peer, level, held_back, "unsupported protocol level, refusing");
            }
            return Outcome::Refused(None, handlers::connect::UNSUPPORTED_PROTOCOL_VERSION);
        }
        Err(e) => {
            // Anyone can send garbage: one line per interval, not one per connection.
            static BAD: LogLimit = LogLimit::new(10_000);
            if let Some(held_back) = BAD.allow() {
                tracing::info!(%peer, held_back, "bad CONNECT: {e}, closing");
            }
            return Outcome::Closed;
        }
    };
    let version = connect.version;
    // The client may send more right after CONNECT; reading on while its CONNECT is
    // handled shows when it goes away, so that its password is never checked for nobody.
    let handled = handlers::connect::handle(broker, incoming, connect);
    tokio::select! {
        // The socket first: a CONNECT that arrived with the client's FIN is never checked.
        biased;
        () = until_closed(stream, rbuf, cap) => {
            tracing::debug!(event = "connect_abandoned", %peer, "connection closed before its CONNECT was answered");
            Outcome::Closed
        }
        r = handled => match r {
            Ok(client) => Outcome::Connected(client),
            Err(refusal) => match refusal.connack {
                Some(code) => Outcome::Refused(Some(version), code),
                None => Outcome::Closed,
            },
        },
    }
}

#[derive(Debug)]
enum ReadError {
    Io(std::io::Error),
    Decode(DecodeError),
    /// The first packet is not a CONNECT (its first byte).
    NotConnect(u8),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Decode(e) => write!(f, "{e}"),
            ReadError::NotConnect(b) => write!(f, "first packet {b:#04x} is not CONNECT"),
        }
    }
}

/// Reads until a whole CONNECT of at most `cap` bytes is decoded. `Ok(None)` on a clean
/// end of stream.
async fn read_connect<R: AsyncRead + Unpin>(
    rd: &mut R,
    rbuf: &mut BytesMut,
    cap: usize,
) -> Result<Option<Connect>, ReadError> {
    loop {
        // The first byte says whether it is a CONNECT: nothing more is read if not.
        if let Some(&byte1) = rbuf.first() {
            if byte1 >> 4 != 1 {
                return Err(ReadError::NotConnect(byte1));
            }
        }
        match codec::decode(rbuf, cap) {
            Ok(Some(Packet::Connect(c))) => {
                metrics::add(Counter::PacketsReceived, 1);
                return Ok(Some(c));
            }
            Ok(Some(_)) => return Err(ReadError::NotConnect(0)),
            Ok(None) => {}
            Err(e) => return Err(ReadError::Decode(e)),
        }
        // Small reads first, growing with what has arrived (never more than twice it): a
        // client that is not sending a CONNECT gets at most READ_MIN bytes read.
        let want = READ_MIN.max(rbuf.len());
        if read_some(rd, rbuf, want).await? == 0 {
            return if rbuf.is_empty() {
                Ok(None)
            } else {
                Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()))
            };
        }
    }
}

/// One read of at most `max` more bytes into `rbuf`.
async fn read_some<R: AsyncRead + Unpin>(
    rd: &mut R,
    rbuf: &mut BytesMut,
    max: usize,
) -> Result<usize, ReadError> {
    rbuf.reserve(max);
    let mut limited = (&mut *rd).take(max as u64);
    let n = limited.read_buf(rbuf).await.map_err(ReadError::Io)?;
    metrics::add(Counter::BytesReceived, n as u64);
    Ok(n)
}

/// The protocol level of a CONNECT whose fixed header is in `rbuf`, if the bytes that
/// hold it ("MQTT" and the level) have arrived with it. Nothing more is waited for: a
/// client sends its CONNECT in one go, and one that does not is closed without a word,
/// as a 3.1.1 client is.
fn peek_level(rbuf: &[u8]) -> Option<u8> {
    // Fixed header: 1 byte, then 1 to 4 bytes of remaining length.
    let len_len = rbuf.iter().skip(1).take(4).position(|b| b & 0x80 == 0)? + 1;
    let header = rbuf.get(1 + len_len..1 + len_len + 7)?;
    (header[..6] == [0x00, 0x04, b'M', b'Q', b'T', b'T']).then_some(header[6])
}

/// Completes when the client closes its side (or the socket fails). Keeps what the client
/// sends meanwhile in `rbuf` for after CONNACK, up to `cap` bytes; beyond that stops
/// reading (TCP holds the client back) and only the deadline ends the wait.
async fn until_closed<R: AsyncRead + Unpin>(rd: &mut R, rbuf: &mut BytesMut, cap: usize) {
    while rbuf.len() < cap {
        match read_some(rd, rbuf, READ_MIN.min(cap - rbuf.len())).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_level_reads_the_level_behind_any_length_of_remaining_length() {
        let v5 = [
            0x10, 0xFF, 0xFF, 0xFF, 0x7F, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02,
        ];
        assert_eq!(peek_level(&v5), Some(5));
        let v311 = [0x10, 0x80, 0x08, 0, 4, b'M', b'Q', b'T', b'T', 4];
        assert_eq!(peek_level(&v311), Some(4));
        // Not there yet, or not "MQTT" (3.1's "MQIsdp" has no code for it either).
        assert_eq!(peek_level(&v5[..11]), None);
        assert_eq!(
            peek_level(&[0x10, 0x80, 0x08, 0, 6, b'M', b'Q', b'I', b's']),
            None
        );
        assert_eq!(peek_level(&[0x10, 0x80, 0x80, 0x80, 0x80]), None);
    }

    #[tokio::test]
    async fn a_first_byte_that_is_not_connect_ends_the_read_at_once() {
        // A PUBLISH announcing 8 MiB, with more behind it than one read takes.
        let mut bytes = vec![0x30, 0xFF, 0xFF, 0xFF, 0x03];
        bytes.extend(vec![b'x'; 4096]);
        let mut rd = &bytes[..];
        let mut rbuf = BytesMut::new();
        let r = read_connect(&mut rd, &mut rbuf, 65536).await;
        assert!(matches!(r, Err(ReadError::NotConnect(0x30))), "{r:?}");
        assert!(rbuf.len() <= READ_MIN, "read {} bytes", rbuf.len());
    }

    #[tokio::test]
    async fn a_connect_over_the_cap_is_refused_from_its_fixed_header() {
        let mut bytes = vec![0x10, 0x80, 0x80, 0x04, 0, 4, b'M', b'Q', b'T', b'T', 5];
        bytes.extend(vec![b'x'; 4096]);
        let mut rd = &bytes[..];
        let mut rbuf = BytesMut::new();
        let r = read_connect(&mut rd, &mut rbuf, 1024).await;
        assert!(
            matches!(
                r,
                Err(ReadError::Decode(DecodeError::PacketTooLarge { .. }))
            ),
            "{r:?}"
        );
        assert_eq!(peek_level(&rbuf), Some(5));
    }
}
