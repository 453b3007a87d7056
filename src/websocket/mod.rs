//! MQTT over WebSockets (RFC 6455; MQTT 5.0 §6): a listener with `protocol =
//! "websockets"` reads the HTTP upgrade here ([`upgrade`]), then serves the connection as
//! any other through [`WsBytes`], a byte stream over binary frames ([`stream`]). The
//! codec, the connection loop, keep-alive, limits and authentication are the TCP ones.

mod budget;
mod stream;
mod upgrade;

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

pub use stream::WsBytes;
pub use upgrade::Refusal;

use budget::Budget;

use crate::config::{Config, Listener};
use crate::log_limit::LogLimit;

/// Reads the upgrade request from `stream` and answers it; on success the WebSocket
/// over `stream` and the client's address (see `upgrade::answer`). Not bounded in time:
/// the caller's deadline is.
pub async fn accept<S>(
    mut stream: S,
    listener: &Listener,
    peer: SocketAddr,
    config: &Config,
) -> Option<(WsBytes<S>, SocketAddr)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(1024);
    let answer = match upgrade::read_head(&mut stream, &mut buf).await {
        upgrade::Read::Closed => return None,
        upgrade::Read::TooLarge => Err(upgrade::TOO_LARGE),
        upgrade::Read::Head(n) => upgrade::answer(&buf[..n], listener, peer).map(|a| (a, n)),
    };
    let (accepted, n) = match answer {
        Ok(a) => a,
        Err(refusal) => {
            refused(peer, listener, &refusal);
            let _ = stream.write_all(refusal.response().as_bytes()).await;
            // (shutdown flushes: over TLS the answer is in rustls until then.)
            let _ = stream.shutdown().await;
            return None;
        }
    };
    stream.write_all(accepted.response.as_bytes()).await.ok()?;
    stream.flush().await.ok()?;
    // What the client sent behind its request already belongs to the WebSocket.
    buf.drain(..n);
    // What a TCP connection may send before it is authenticated (see `budget`).
    let connect_limit = config.max_connect_size.min(config.max_packet_size);
    let stream = Budget::new(stream, connect_limit.saturating_sub(buf.len()));
    let ws_config = stream::config(config.max_packet_size);
    let ws = WebSocketStream::from_partially_read(stream, buf, Role::Server, Some(ws_config)).await;
    Some((WsBytes::new(ws), accepted.peer))
}

/// One rate-limited line for refused upgrades: a wrong path or origin in a web page is a
/// configuration mistake the operator has to see, a flood of them is not worth more.
fn refused(peer: SocketAddr, listener: &Listener, refusal: &Refusal) {
    static LOG: LogLimit = LogLimit::new(10_000);
    if let Some(suppressed) = LOG.allow() {
        tracing::warn!(
            event = "websocket_upgrade_refused",
            %peer,
            status = refusal.status,
            suppressed,
            "websocket upgrade from {peer} refused on {}:{} ({}): {}",
            listener.bind,
            listener.port,
            refusal.status,
            refusal.why
        );
    }
}
