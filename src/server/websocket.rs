//! A WebSocket listener's connections: the TLS handshake where the listener has keys,
//! then the HTTP upgrade, both within the CONNECT deadline (`connect_timeout` after
//! accept, which CONNECT must also meet), then [`connection::serve`] as for TCP. Never
//! parked: tungstenite's state, like rustls', cannot leave the task.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::Slot;
use crate::broker::Broker;
use crate::client::Incoming;
use crate::config::Listener;
use crate::log_limit::LogLimit;
use crate::{connection, tls, websocket};

pub(super) async fn serve_ws(
    tls: Option<TlsAcceptor>,
    stream: TcpStream,
    mut incoming: Box<Incoming>,
    broker: Arc<Broker>,
    listener: Arc<Listener>,
    shutdown: CancellationToken,
    _slot: Slot,
) {
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        return upgrade_and_serve(stream, incoming, &broker, &listener, &shutdown).await;
    };
    let timeout = broker.config().connect_timeout();
    let handshake = tokio::select! {
        _ = shutdown.cancelled() => return,
        h = tls::handshake(&tls, stream, incoming.peer, timeout) => h,
    };
    let Some(stream) = handshake else {
        return;
    };
    if listener.use_identity_as_username {
        incoming.cert_name = tls::peer_common_name(&stream);
    }
    upgrade_and_serve(stream, incoming, &broker, &listener, &shutdown).await
}

async fn upgrade_and_serve<S>(
    stream: S,
    mut incoming: Box<Incoming>,
    broker: &Arc<Broker>,
    listener: &Listener,
    shutdown: &CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let upgrade = websocket::accept(stream, listener, incoming.peer, broker.config());
    let upgraded = tokio::select! {
        _ = shutdown.cancelled() => return,
        r = tokio::time::timeout_at(incoming.deadline, upgrade) => r,
    };
    let Ok(upgraded) = upgraded else {
        static LOG: LogLimit = LogLimit::new(10_000);
        if let Some(suppressed) = LOG.allow() {
            tracing::info!(
                event = "websocket_upgrade_timeout",
                peer = %incoming.peer,
                suppressed,
                "websocket upgrade from {} not done within connect_timeout: closing",
                incoming.peer
            );
        }
        return;
    };
    let Some((mut ws, peer)) = upgraded else {
        return;
    };
    incoming.peer = peer;
    let _ = connection::serve(&mut ws, incoming, broker, shutdown, false).await;
}
