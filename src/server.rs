//! Accepting connections: binds every configured listener, enforces connection limits,
//! spawns one task per connection, and owns graceful shutdown.
//!
//! Shutdown is one [`CancellationToken`]: cancelling it stops every accept loop at once
//! (no new clients), tells every connection task to flush what it has encoded and close
//! its socket, and `run` returns once the last of them has finished.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::config::{Config, Listener};
use crate::connection;
use crate::session::Limits;

/// How long shutdown waits for connections to flush and close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs the broker until `shutdown` is cancelled. Fails only if a listener cannot be bound.
pub async fn run(config: Config, shutdown: CancellationToken) -> std::io::Result<()> {
    let mut bound = Vec::with_capacity(config.listeners.len());
    for listener in &config.listeners {
        let addr = SocketAddr::new(listener.bind, listener.port);
        let socket = bind(addr)
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        tracing::info!("listening on {}", socket.local_addr()?);
        bound.push((socket, Arc::new(listener.clone())));
    }

    let broker = Arc::new(Broker::new(config));
    let tracker = TaskTracker::new();
    tracker.spawn(broker.clone().sweep(shutdown.clone()));
    let total = Arc::new(AtomicUsize::new(0));
    for (socket, listener) in bound {
        tracker.spawn(accept_loop(
            socket,
            listener,
            broker.clone(),
            total.clone(),
            shutdown.clone(),
            tracker.clone(),
        ));
    }

    shutdown.cancelled().await;
    broker.begin_shutdown();
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close within {SHUTDOWN_GRACE:?}");
    }
    tracing::info!("midge stopped");
    Ok(())
}

/// Listen backlog: bursts of reconnecting devices (after a network outage, say) should
/// queue in the kernel rather than be dropped and retried a second later, as they are
/// with the usual 128.
const BACKLOG: u32 = 1024;

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Restarting must not wait for the previous process's connections in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Counts a connection against the global and the listener's limit while it lives.
struct Slot {
    total: Arc<AtomicUsize>,
    listener: Arc<AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.total.fetch_sub(1, Ordering::Relaxed);
        self.listener.fetch_sub(1, Ordering::Relaxed);
    }
}

fn take_slot(
    total: &Arc<AtomicUsize>,
    max_total: usize,
    here: &Arc<AtomicUsize>,
    max_here: usize,
) -> Option<Slot> {
    let t = total.fetch_add(1, Ordering::Relaxed);
    let h = here.fetch_add(1, Ordering::Relaxed);
    let slot = Slot {
        total: total.clone(),
        listener: here.clone(),
    };
    let over = (max_total > 0 && t >= max_total) || (max_here > 0 && h >= max_here);
    (!over).then_some(slot)
}

async fn accept_loop(
    socket: TcpListener,
    listener: Arc<Listener>,
    broker: Arc<Broker>,
    total: Arc<AtomicUsize>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let here = Arc::new(AtomicUsize::new(0));
    // One set of queue limits per listener, shared by every session that connects here.
    let limits = Arc::new(broker.limits_for(&listener));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = socket.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::error!("accept on {}:{} failed: {e}", listener.bind, listener.port);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = take_slot(
            &total,
            broker.config.max_connections,
            &here,
            listener.max_connections,
        ) else {
            tracing::warn!(%peer, "connection limit reached, refusing connection");
            drop(stream);
            continue;
        };
        tracker.spawn(serve_tcp(
            stream,
            peer,
            broker.clone(),
            limits.clone(),
            shutdown.clone(),
            slot,
        ));
    }
}

async fn serve_tcp(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    limits: Arc<Limits>,
    shutdown: CancellationToken,
    _slot: Slot,
) {
    // Small packets are the norm; waiting to coalesce them only adds latency.
    let _ = stream.set_nodelay(true);
    connection::serve(stream, peer, broker, limits, shutdown).await;
}
