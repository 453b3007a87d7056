//! The MQTT listeners' accept loops, polled by the future of [`super::run`] itself rather
//! than spawned: on the thread that runs it (the binary's main thread, in `block_on`),
//! not on a runtime worker.
//!
//! Why: what every accepted connection starts with (its task, its socket's registration
//! with tokio, its `Incoming`) is allocated by the thread that accepts it, and glibc
//! serves each thread from its own arena. Accepted on a worker, those allocations sit
//! between the sessions, client ids and subscriptions the workers allocate next, and when
//! an idle connection parks (see `parked`) and frees its task and registration, the holes
//! it leaves are smaller than a page: the memory stays resident. Accepted on the main
//! thread, they fill the main arena, which parked connections empty, and the park lot's
//! trim gives the emptied pages back to the system (see docs/BENCHMARKS.md, "Idle
//! connection, byte by byte"). Each connection's task is spawned onto the workers as
//! before.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::task::Poll;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::websocket::serve_ws;
use super::{accept, serve_tcp, serve_tls, take_slot, Serving, SlotCounts};
use crate::broker::Broker;
use crate::client::{Incoming, ListenerPolicy};
use crate::config::Listener;
use crate::log_limit::LogLimit;
use crate::metrics::ListenerStats;

/// A bound MQTT listener: the socket, its configuration, its TLS acceptor, its figures.
pub(super) type Bound = (
    TcpListener,
    Arc<Listener>,
    Option<TlsAcceptor>,
    Arc<ListenerStats>,
);

/// Accepts on every listener in `bound` until `serving`'s shutdown; to be awaited by
/// `run`, not spawned.
pub(super) async fn accept_all(bound: Vec<Bound>, broker: &Arc<Broker>, serving: Arc<Serving>) {
    let total = Arc::new(AtomicUsize::new(0));
    let mut loops: Vec<Pin<Box<dyn Future<Output = ()> + Send>>> = bound
        .into_iter()
        .map(|(socket, listener, tls, stats)| {
            let loop_ = accept_loop(
                socket,
                listener,
                tls,
                stats,
                broker.clone(),
                total.clone(),
                serving.clone(),
            );
            Box::pin(loop_) as Pin<Box<dyn Future<Output = ()> + Send>>
        })
        .collect();
    drop(serving);
    // A join of the loops, one per listener: each poll polls those not finished.
    std::future::poll_fn(|cx| {
        loops.retain_mut(|l| l.as_mut().poll(cx).is_pending());
        if loops.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Accepts on `socket` until shutdown, and spawns each connection's task.
async fn accept_loop(
    socket: TcpListener,
    listener: Arc<Listener>,
    tls: Option<TlsAcceptor>,
    stats: Arc<ListenerStats>,
    broker: Arc<Broker>,
    total: Arc<AtomicUsize>,
    serving: Arc<Serving>,
) {
    let (shutdown, tracker) = (&serving.shutdown, &serving.tracker);
    let counts = Arc::new(SlotCounts {
        total,
        max_total: broker.config().max_connections,
        here: AtomicUsize::new(0),
        max_here: listener.max_connections,
        stats: Some(stats),
    });
    // One set of queue limits per listener, shared by every session that connects here.
    let policy = Arc::new(ListenerPolicy {
        limits: Arc::new(broker.limits_for(&listener)),
        allow_anonymous: listener.allows_anonymous(broker.config().allow_anonymous),
        use_identity_as_username: listener.use_identity_as_username,
    });
    let what = format!("{}:{}", listener.bind, listener.port);
    while let Some((stream, peer)) = accept(&socket, shutdown, &what).await {
        let Some(slot) = take_slot(&counts) else {
            static LOG: LogLimit = LogLimit::new(10_000);
            if let Some(suppressed) = LOG.allow() {
                tracing::warn!(event = "connection_limit", %peer, suppressed, "connection limit reached, refusing connection");
            }
            drop(stream);
            continue;
        };
        let incoming = Box::new(Incoming {
            peer,
            listener: policy.clone(),
            cert_name: None,
            deadline: tokio::time::Instant::now() + broker.config().connect_timeout(),
        });
        let broker = broker.clone();
        if listener.is_websockets() {
            tracker.spawn(serve_ws(
                tls.clone(),
                stream,
                incoming,
                broker,
                listener.clone(),
                shutdown.clone(),
                slot,
            ));
            continue;
        }
        match &tls {
            None => tracker.spawn(serve_tcp(stream, incoming, broker, serving.clone(), slot)),
            Some(tls) => tracker.spawn(serve_tls(
                tls.clone(),
                stream,
                incoming,
                broker,
                shutdown.clone(),
                slot,
            )),
        };
    }
}
