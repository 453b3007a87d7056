//! Accepting connections: binds every configured listener (the MQTT ones and the
//! operator's `[http]` one, served by [`crate::http`]), enforces connection limits, spawns
//! one task per connection, parks idle plain-TCP connections outside their tasks and
//! resumes them (`parked`), and owns graceful shutdown.
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
use crate::client::Incoming;
use crate::config::Config;
use crate::connection;
use crate::http;
use crate::log_limit::LogLimit;
use crate::metrics::{self, ListenerStats};
use crate::store::durable::{DurableStore, Loaded};
use crate::store::{MemoryStore, Store};
use crate::tls;

mod acceptor;
mod parked;
mod websocket;

/// How long shutdown waits for connections to flush and close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A configuration with every file it names read and checked: the password and ACL
/// files, each TLS listener's certificates (the `[http]` listener's too, and its password
/// file), and the durable store (opened and replayed).
/// Made before anything listens (and before logging starts), so a bad file stops midge
/// with one message naming the key and the file, and a broker never runs half-secured
/// or on a store it could not read.
pub struct Prepared {
    config: Config,
    auth: Auth,
    acceptors: Vec<Option<TlsAcceptor>>,
    http: Option<http::Prepared>,
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
    let http = http::Prepared::new(&config, origin)?;
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
        http,
        store,
    })
}

/// What a reload (SIGHUP) does besides re-reading the password and ACL files: the binary
/// reopens its log file.
pub type ReloadHook = Box<dyn Fn() + Send + Sync>;

/// Runs the broker until `shutdown` is cancelled; every `reload` notification runs
/// `on_reload` and re-reads the password and ACL files. Fails, with a message for the
/// operator, if a listener cannot be bound. Tells systemd (when it started midge) when
/// it is ready, reloading and stopping ([`crate::systemd`]).
///
/// The MQTT accept loops run in this future, not in tasks of their own (see
/// `server::acceptor`): the binary polls it with `block_on` on its main thread, whose
/// allocator arena then holds what each connection starts with, and parked connections
/// give it back. Awaited in a spawned task instead, it works the same, only with less
/// memory given back.
pub async fn run(
    prepared: Prepared,
    shutdown: CancellationToken,
    reload: Arc<Notify>,
    on_reload: ReloadHook,
) -> Result<(), String> {
    let Prepared {
        config,
        auth,
        acceptors,
        http,
        store,
    } = prepared;
    let broker = match store {
        Some((store, loaded)) => {
            log_loaded(&loaded);
            let broker = Broker::new(config, auth, store.clone() as Arc<dyn Store>);
            // Holds the store's lock while it takes the broker's: safe only because nothing
            // else runs yet (elsewhere the order is the other way round).
            broker.restore(&store.state());
            broker.spill_restored();
            broker
        }
        None => {
            tracing::info!(
                event = "store_disabled",
                "persistence disabled: state lives in memory only"
            );
            Broker::new(config, auth, Arc::new(MemoryStore))
        }
    };
    let broker = Arc::new(broker);
    let mut bound = Vec::with_capacity(broker.config().listeners.len());
    for (listener, tls) in broker.config().listeners.iter().zip(acceptors) {
        let addr = SocketAddr::new(listener.bind, listener.port);
        let socket = bind(addr).map_err(|e| bind_error(addr, &e))?;
        let local = socket.local_addr().map_err(|e| e.to_string())?;
        let protocol = listener.scheme();
        let path = &listener.websockets_path;
        let kind = match protocol {
            "mqtts" => " (TLS)".to_owned(),
            "ws" => format!(" (WebSockets, path {path})"),
            "wss" => format!(" (WebSockets over TLS, path {path})"),
            _ => String::new(),
        };
        tracing::info!(
            event = "listening",
            addr = %local,
            tls = tls.is_some(),
            protocol,
            "listening on {local}{kind}"
        );
        let stats = metrics::register_listener(local.to_string(), protocol);
        bound.push((socket, Arc::new(listener.clone()), tls, stats));
    }
    let http = match http {
        Some(http) => {
            let addr = http.address();
            let socket =
                bind(addr).map_err(|e| format!("cannot listen on {addr} ([http]): {e}"))?;
            let local = socket.local_addr().map_err(|e| e.to_string())?;
            tracing::info!(
                event = "http_listening",
                "HTTP API listening on {}://{local}/",
                http.scheme()
            );
            Some((http, socket))
        }
        None => None,
    };

    for (addr, warning) in broker.config().refusal_warnings() {
        tracing::warn!(event = "listener_refuses_everyone", %addr, "{warning}");
    }

    let tracker = TaskTracker::new();
    tracker.spawn(broker.clone().sweep(shutdown.clone()));
    let (lot, run_lot) = if broker.config().park_idle_connections {
        parked::start(&tracker, &shutdown).unzip()
    } else {
        (None, None)
    };
    let serving = Arc::new(Serving {
        broker: broker.clone(),
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
        lot,
    });
    if let Some(run_lot) = run_lot {
        run_lot(serving.clone());
    }
    let http_access = http.as_ref().map(|(h, _)| h.access());
    tracker.spawn(reload_on_notify(
        broker.clone(),
        http_access,
        reload,
        on_reload,
        shutdown.clone(),
    ));
    if let Some((http, socket)) = http {
        tracker.spawn(http_accept_loop(
            socket,
            http,
            broker.clone(),
            shutdown.clone(),
            tracker.clone(),
        ));
    }
    tracker.spawn(crate::sys::run(broker.clone(), shutdown.clone()));
    let accepting = acceptor::accept_all(bound, &broker, serving);

    // The store is loaded and every listener is bound (connections wait in the backlog
    // until the accept loops run).
    crate::systemd::ready();

    // The accept loops run here, in this future (see `acceptor`), until shutdown.
    tokio::join!(accepting, shutdown.cancelled());
    crate::systemd::stopping();
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
            event = "store_torn_tail",
            file = ?file,
            offset = at,
            cut,
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
            event = "store_expired",
            expired = l.expired,
            "store: {} queued messages expired while midge was down",
            l.expired
        );
    }
    tracing::info!(
        event = "store_loaded",
        dir = ?l.dir,
        sessions = l.sessions,
        queued = l.queued,
        retained = l.retained,
        records = l.records,
        bytes = l.bytes,
        ms = l.elapsed.as_millis() as u64,
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

/// SIGHUP: the hook of the binary (the log file), the password and ACL files, and the
/// `[http]` password file; systemd is told around it.
async fn reload_on_notify(
    broker: Arc<Broker>,
    http: Option<Arc<http::Access>>,
    reload: Arc<Notify>,
    on_reload: ReloadHook,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = reload.notified() => {
                crate::systemd::reloading();
                on_reload();
                broker.auth().reload();
                if let Some(http) = &http {
                    http.reload();
                }
                crate::systemd::ready();
            }
        }
    }
}

/// Listen backlog: bursts of reconnecting devices (after a network outage, say) should
/// queue in the kernel rather than be dropped and retried a second later, as they are
/// with the usual 128.
const BACKLOG: u32 = 1024;

/// The message for a listener that cannot be bound; for an address in use, what to do
/// about it (the usual cause on Debian: the mosquitto package's service on 1883).
pub(crate) fn bind_error(addr: SocketAddr, e: &std::io::Error) -> String {
    let mut text = format!("cannot listen on {addr}: {e}");
    if e.kind() == std::io::ErrorKind::AddrInUse {
        let port = addr.port();
        text.push_str(&format!(
            ". Another program listens there (`ss -ltnp 'sport = :{port}'` shows which)"
        ));
        if port == 1883 {
            text.push_str(
                "; on Debian and Ubuntu it is often the mosquitto package's service \
                 (`systemctl disable --now mosquitto`)",
            );
        }
        text.push_str(&format!(
            ". Stop it, or run midge on another port: -p {} (for the first listener) or \
             `port` in its [[listener]]",
            port.checked_add(1).unwrap_or(1884)
        ));
    }
    text
}

pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
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

/// What a listener counts its connections in: the total over all MQTT listeners, its own,
/// and (for an MQTT listener) its figures for the operator.
struct SlotCounts {
    total: Arc<AtomicUsize>,
    max_total: usize,
    here: AtomicUsize,
    max_here: usize,
    /// `None` for `[http]`, which `/api/v1/listeners` reports on its own.
    stats: Option<Arc<ListenerStats>>,
}

/// Counts a connection against the global and the listener's limit while it lives, and
/// in its listener's figures for the operator. One pointer: each idle connection's task
/// carries it.
struct Slot(Arc<SlotCounts>);

impl Drop for Slot {
    fn drop(&mut self) {
        let c = &self.0;
        c.total.fetch_sub(1, Ordering::Relaxed);
        c.here.fetch_sub(1, Ordering::Relaxed);
        if let Some(stats) = &c.stats {
            stats.closed();
        }
    }
}

fn take_slot(counts: &Arc<SlotCounts>) -> Option<Slot> {
    let t = counts.total.fetch_add(1, Ordering::Relaxed);
    let h = counts.here.fetch_add(1, Ordering::Relaxed);
    let over = (counts.max_total > 0 && t >= counts.max_total)
        || (counts.max_here > 0 && h >= counts.max_here);
    if over {
        counts.total.fetch_sub(1, Ordering::Relaxed);
        counts.here.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    if let Some(stats) = &counts.stats {
        stats.opened();
    }
    Some(Slot(counts.clone()))
}

/// What every connection task of a server shares: the broker, shutdown, the task
/// tracker (a resumed connection's task is tracked like the first), and the park lot.
struct Serving {
    /// What a resumed connection's client is given back (a parked one does not keep it).
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// `None` where connections cannot be parked.
    lot: Option<parked::Lot>,
}

/// The next connection on `socket` (`what` names it in messages), or `None` at shutdown.
pub(super) async fn accept(
    socket: &TcpListener,
    shutdown: &CancellationToken,
    what: &str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return None,
            r = socket.accept() => r,
        };
        match accepted {
            Ok(a) => return Some(a),
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::error!("accept on {what} failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The `[http]` listener's accept loop: its own connection limit (`[http]
/// max_connections`; MQTT's `max_connections` does not count these), one task per
/// connection.
async fn http_accept_loop(
    socket: TcpListener,
    http: http::Prepared,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let local = socket.local_addr().unwrap_or_else(|_| http.address());
    let max = http.max_connections();
    let server = http.into_server(broker, local);
    let counts = Arc::new(SlotCounts {
        total: Arc::new(AtomicUsize::new(0)),
        max_total: 0,
        here: AtomicUsize::new(0),
        max_here: max,
        stats: None,
    });
    let what = format!("[http] {local}");
    while let Some((stream, peer)) = accept(&socket, &shutdown, &what).await {
        let Some(slot) = take_slot(&counts) else {
            static LOG: LogLimit = LogLimit::new(10_000);
            if let Some(suppressed) = LOG.allow() {
                tracing::warn!(event = "http_connection_limit", %peer, suppressed,
                    "[http] max_connections reached, refusing connection");
            }
            continue;
        };
        let (server, shutdown) = (server.clone(), shutdown.clone());
        tracker.spawn(async move {
            let _slot = slot;
            server.serve(stream, peer, shutdown).await;
        });
    }
}

/// Not an `async fn`, and what the connection keeps is owned here and only borrowed by
/// [`connection::serve`]: an argument moved into a callee's future stays in the caller's
/// state as well, so each idle connection would carry every one of them twice. A
/// connection that idles is parked (see `parked`): its task ends.
fn serve_tcp(
    stream: TcpStream,
    incoming: Box<Incoming>,
    broker: Arc<Broker>,
    serving: Arc<Serving>,
    slot: Slot,
) -> impl std::future::Future<Output = ()> {
    // Small packets are the norm; waiting to coalesce them only adds latency.
    let _ = stream.set_nodelay(true);
    let mut stream = stream;
    async move {
        let may_park = serving.lot.is_some();
        let connected =
            connection::serve(&mut stream, incoming, &broker, &serving.shutdown, may_park);
        if let Some(client) = connected.await {
            parked::park(stream, client, slot, &serving);
        }
        // Otherwise closed: the slot, counted until then, goes here.
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
    let Some(mut stream) = handshake else {
        return;
    };
    if incoming.listener.use_identity_as_username {
        incoming.cert_name = tls::peer_common_name(&stream);
    }
    // Never parked: rustls' state cannot leave the task.
    let _ = connection::serve(&mut stream, incoming, &broker, &shutdown, false).await;
}

#[cfg(test)]
#[path = "footprint_tests.rs"]
mod footprint_tests;
