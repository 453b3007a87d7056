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
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::broker::Broker;
use crate::client::{Incoming, ListenerPolicy};
use crate::config::{Config, Listener};
use crate::connection;
use crate::log_limit::LogLimit;
use crate::metrics::{self, ListenerStats, OpenConnection};
use crate::store::durable::{DurableStore, Loaded};
use crate::store::{MemoryStore, Store};
use crate::tls;

/// How long shutdown waits for connections to flush and close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A configuration with every file it names read and checked: the password and ACL
/// files, each TLS listener's certificates, and the durable store (opened and replayed).
/// Made before anything listens (and before logging starts), so a bad file stops midge
/// with one message naming the key and the file, and a broker never runs half-secured
/// or on a store it could not read.
pub struct Prepared {
    config: Config,
    auth: Auth,
    acceptors: Vec<Option<TlsAcceptor>>,
    store: Option<(Arc<DurableStore>, Loaded)>,
}

impl Prepared {
    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// Reads the files `config` names; `origin` names the configuration file in messages.
pub fn prepare(config: Config, origin: &str) -> Result<Prepared, String> {
    let auth = Auth::load(&config, origin).map_err(|e| e.to_string())?;
    let mut acceptors = Vec::with_capacity(config.listeners.len());
    for (i, listener) in config.listeners.iter().enumerate() {
        let at = format!("{origin}: listener[{}]", i + 1);
        acceptors.push(tls::acceptor(listener, &at).map_err(|e| e.to_string())?);
    }
    let store = if config.persistence.enabled {
        let (store, loaded) = DurableStore::open(&config.persistence)?;
        Some((Arc::new(store), loaded))
    } else {
        None
    };
    Ok(Prepared {
        config,
        auth,
        acceptors,
        store,
    })
}

/// Runs the broker until `shutdown` is cancelled; every `reload` notification re-reads the
/// password and ACL files. Fails, with a message for the operator, if a listener cannot be
/// bound.
pub async fn run(
    prepared: Prepared,
    shutdown: CancellationToken,
    reload: Arc<Notify>,
) -> Result<(), String> {
    let Prepared {
        config,
        auth,
        acceptors,
        store,
    } = prepared;
    let broker = match store {
        Some((store, loaded)) => {
            log_loaded(&loaded);
            let broker = Broker::new(config, auth, store.clone() as Arc<dyn Store>);
            // Holds the store's lock while it takes the broker's: safe only because nothing
            // else runs yet (elsewhere the order is the other way round).
            broker.restore(&store.state());
            broker
        }
        None => {
            tracing::info!("persistence disabled: state lives in memory only");
            Broker::new(config, auth, Arc::new(MemoryStore))
        }
    };
    let broker = Arc::new(broker);
    let mut bound = Vec::with_capacity(broker.config().listeners.len());
    for (listener, tls) in broker.config().listeners.iter().zip(acceptors) {
        let addr = SocketAddr::new(listener.bind, listener.port);
        let socket = bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = socket.local_addr().map_err(|e| e.to_string())?;
        let kind = if tls.is_some() { " (TLS)" } else { "" };
        tracing::info!("listening on {local}{kind}");
        let protocol = if tls.is_some() { "mqtts" } else { "mqtt" };
        let stats = metrics::register_listener(local.to_string(), protocol);
        bound.push((socket, Arc::new(listener.clone()), tls, stats));
    }

    let tracker = TaskTracker::new();
    tracker.spawn(broker.clone().sweep(shutdown.clone()));
    tracker.spawn(reload_on_notify(broker.clone(), reload, shutdown.clone()));
    tracker.spawn(crate::sys::run(broker.clone(), shutdown.clone()));
    let total = Arc::new(AtomicUsize::new(0));
    for (socket, listener, tls, stats) in bound {
        tracker.spawn(accept_loop(
            socket,
            listener,
            tls,
            stats,
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
    broker.close_store();
    Ok(())
}

/// What the store held at start, and what was wrong with it.
fn log_loaded(l: &Loaded) {
    if let Some((file, at, cut)) = &l.torn {
        tracing::warn!(
            "store: cut off a torn record at the end of {} (offset {at}, {cut} bytes): \
             a write the process did not finish, never acknowledged",
            file.display()
        );
    }
    if l.expired > 0 {
        // Dropped undelivered: counted like those that expire while midge runs.
        metrics::add(
            metrics::Counter::dropped(metrics::DropReason::Expired),
            l.expired as u64,
        );
        tracing::info!(
            "store: {} queued messages expired while midge was down",
            l.expired
        );
    }
    tracing::info!(
        "store loaded from {}: {} sessions, {} queued messages, {} retained messages in {} ms \
         ({} records, {} bytes)",
        l.dir.display(),
        l.sessions,
        l.queued,
        l.retained,
        l.elapsed.as_millis(),
        l.records,
        l.bytes
    );
}

async fn reload_on_notify(broker: Arc<Broker>, reload: Arc<Notify>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = reload.notified() => broker.auth().reload(),
        }
    }
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

/// Counts a connection against the global and the listener's limit while it lives, and
/// in its listener's figures for the operator.
struct Slot {
    total: Arc<AtomicUsize>,
    listener: Arc<AtomicUsize>,
    _open: OpenConnection,
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
    stats: &Arc<ListenerStats>,
) -> Option<Slot> {
    let t = total.fetch_add(1, Ordering::Relaxed);
    let h = here.fetch_add(1, Ordering::Relaxed);
    let over = (max_total > 0 && t >= max_total) || (max_here > 0 && h >= max_here);
    if over {
        total.fetch_sub(1, Ordering::Relaxed);
        here.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    Some(Slot {
        total: total.clone(),
        listener: here.clone(),
        _open: stats.opened(),
    })
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    socket: TcpListener,
    listener: Arc<Listener>,
    tls: Option<TlsAcceptor>,
    stats: Arc<ListenerStats>,
    broker: Arc<Broker>,
    total: Arc<AtomicUsize>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let here = Arc::new(AtomicUsize::new(0));
    // One set of queue limits per listener, shared by every session that connects here.
    let policy = Arc::new(ListenerPolicy {
        limits: Arc::new(broker.limits_for(&listener)),
        allow_anonymous: listener.allows_anonymous(broker.config().allow_anonymous),
        use_identity_as_username: listener.use_identity_as_username,
    });
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
            broker.config().max_connections,
            &here,
            listener.max_connections,
            &stats,
        ) else {
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
        let (broker, shutdown) = (broker.clone(), shutdown.clone());
        match &tls {
            None => tracker.spawn(serve_tcp(stream, incoming, broker, shutdown, slot)),
            Some(tls) => tracker.spawn(serve_tls(
                tls.clone(),
                stream,
                incoming,
                broker,
                shutdown,
                slot,
            )),
        };
    }
}

/// Not an `async fn`: that would keep a second copy of every argument in each idle
/// connection's task (see [`connection::serve`]).
fn serve_tcp(
    stream: TcpStream,
    incoming: Box<Incoming>,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    slot: Slot,
) -> impl std::future::Future<Output = ()> {
    // Small packets are the norm; waiting to coalesce them only adds latency.
    let _ = stream.set_nodelay(true);
    async move {
        let _slot = slot;
        connection::serve(stream, incoming, broker, shutdown).await;
    }
}

/// The TLS handshake gets the same deadline as CONNECT (`connect_timeout`), so a client
/// that opens a connection and stalls holds its slot no longer on a TLS listener than on
/// a plain one.
async fn serve_tls(
    tls: TlsAcceptor,
    stream: TcpStream,
    mut incoming: Box<Incoming>,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    _slot: Slot,
) {
    let _ = stream.set_nodelay(true);
    let timeout = broker.config().connect_timeout();
    let handshake = tokio::select! {
        _ = shutdown.cancelled() => return,
        h = tls::handshake(&tls, stream, incoming.peer, timeout) => h,
    };
    let Some(stream) = handshake else {
        return;
    };
    if incoming.listener.use_identity_as_username {
        incoming.cert_name = tls::peer_common_name(&stream);
    }
    connection::serve(stream, incoming, broker, shutdown).await;
}
