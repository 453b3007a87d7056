//! Plain-TCP connections parked while idle: out of their tasks and out of tokio, into the
//! server's one [`park`](crate::park) lot, and back into a new task when their socket
//! has something to say or their session wakes them (see docs/DESIGN.md, "The park
//! lot").
//!
//! What a parked connection keeps is [`Parked`]: the connected client (as a
//! [`Dormant`]), the socket, and its connection [`Slot`], so it still counts against `max_connections`. Its
//! session stays attached and online, and its sweeper flags (keep-alive, retransmission)
//! are raised as for any connection: raising one wakes the session, which resumes it.
//! TLS connections are not parked (rustls' state lives in the task).

use std::sync::Arc;

use tokio::net::TcpStream;

use super::{Serving, Slot};
use crate::client::{Client, Dormant};
use crate::connection;
use crate::log_limit::field;

/// A parked connection.
pub(super) struct Parked {
    client: Dormant,
    stream: std::net::TcpStream,
    _slot: Slot,
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
mod imp {
    use std::os::fd::{AsRawFd, RawFd};
    use std::sync::Arc;
    use std::task::{Context, Waker};

    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::{resume, Parked, Serving};

    pub(in crate::server) type Lot = crate::park::Lot<Parked>;

    impl AsRawFd for Parked {
        fn as_raw_fd(&self) -> RawFd {
            self.stream.as_raw_fd()
        }
    }

    /// The server's lot, its runner spawned on `tracker` (it resumes every parked
    /// connection at `shutdown`, before it ends: the tracker cannot finish before they
    /// do). `None` (nothing is parked) if the lot's epoll instance cannot be made.
    pub(in crate::server) fn start(
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Option<(Lot, impl FnOnce(Arc<Serving>))> {
        let (lot, runner) = match crate::park::new::<Parked>() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("cannot make the park lot ({e}): idle connections keep their tasks");
                return None;
            }
        };
        let (tracker, shutdown) = (tracker.clone(), shutdown.clone());
        let run = move |serving: Arc<Serving>| {
            tracker.spawn(async move {
                runner.run(&shutdown, |p| resume(p, &serving)).await;
            });
        };
        Some((lot, run))
    }

    /// Parks `p`; gives it back if the lot is closed (shutdown) or the socket could not
    /// be registered.
    pub(in crate::server) fn park(lot: &Lot, p: Parked) -> Result<(), Parked> {
        lot.park(p, |p, waker: &Waker| {
            // The session's one waker slot gets the lot's waker: a message queued, a
            // take-over, a sweeper flag or shutdown resumes the connection. A wake that
            // came since the connection last looked is taken here.
            let mut cx = Context::from_waker(waker);
            p.client.session().wake.poll_woken(&mut cx).is_ready()
        })
    }
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
mod imp {
    use std::sync::Arc;

    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::{Parked, Serving};

    /// No lot here (it needs epoll): nothing parks.
    pub(in crate::server) enum Lot {}

    pub(in crate::server) fn start(
        _: &TaskTracker,
        _: &CancellationToken,
    ) -> Option<(Lot, impl FnOnce(Arc<Serving>))> {
        None::<(Lot, fn(Arc<Serving>))>
    }

    pub(in crate::server) fn park(lot: &Lot, _: Parked) -> Result<(), Parked> {
        match *lot {}
    }
}

pub(super) use imp::{start, Lot};

/// Parks a connection that [`connection::serve`] or [`connection::resume`] returned: its
/// socket leaves tokio and joins the lot. If it cannot park after all, it goes on in a
/// new task.
pub(super) fn park(stream: TcpStream, client: Client, slot: Slot, serving: &Arc<Serving>) {
    let Some(lot) = &serving.lot else {
        // Not asked for: `may_park` is false without a lot. Served on, not dropped.
        return spawn_serve(stream, client, slot, serving);
    };
    let client = match client.into_dormant() {
        Ok(c) => c,
        // `connection::run` parks only with nothing under way: not seen.
        Err(client) => return spawn_serve(stream, client, slot, serving),
    };
    let stream = match stream.into_std() {
        Ok(s) => s,
        Err(e) => return connection::abandon(client.wake(serving.broker.clone()), e),
    };
    tracing::debug!(event = "connection_parked", client_id = ?field(client.client_id()), "idle, parked");
    let p = Parked {
        client,
        stream,
        _slot: slot,
    };
    if let Err(p) = imp::park(lot, p) {
        resume(p, serving);
    }
}

/// Resumes a parked connection in a new task.
fn resume(p: Parked, serving: &Arc<Serving>) {
    serving.tracker.spawn(resume_tcp(p, serving.clone()));
}

async fn resume_tcp(p: Parked, serving: Arc<Serving>) {
    let Parked {
        client,
        stream,
        _slot: slot,
    } = p;
    let client = client.wake(serving.broker.clone());
    let stream = match TcpStream::from_std(stream) {
        Ok(s) => s,
        Err(e) => return connection::abandon(client, e),
    };
    tracing::debug!(event = "connection_resumed", client_id = ?field(client.client_id()), "resumed");
    serve_on(stream, client, slot, serving).await;
}

/// Serves a connected client on `stream` in this task until it closes or parks again.
async fn serve_on(mut stream: TcpStream, client: Client, slot: Slot, serving: Arc<Serving>) {
    let may_park = serving.lot.is_some();
    if let Some(client) = connection::resume(&mut stream, client, may_park).await {
        park(stream, client, slot, &serving);
    }
}

/// A client that could not park, served on in a task of its own.
fn spawn_serve(stream: TcpStream, client: Client, slot: Slot, serving: &Arc<Serving>) {
    serving
        .tracker
        .spawn(serve_on(stream, client, slot, serving.clone()));
}
