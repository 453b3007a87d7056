//! The park lot: where idle connections wait without a task.
//!
//! An idle connection in a task costs that task (a tokio cell of 640 bytes, aligned to
//! 128) and its socket's registration with tokio (256 bytes, aligned to 128) for nothing
//! but waiting. A parked one is a value in the lot's [`Slab`] (the connection's state and
//! its socket, about 220 bytes) and its socket in the lot's one epoll instance. It leaves
//! the lot, to be resumed by its owner (a new task), when its socket has something to
//! say (data, hang-up, error) or when the waker it left is woken (see [`waker`]).
//!
//! A leaf: generic over what is parked, it knows nothing of connections. The server
//! parks plain-TCP connections here (`server::parked`).
//!
//! One [`Runner`] task serves the lot: it waits on the epoll instance (registered with
//! tokio like any socket) and on the ready list the wakers fill, takes the values whose
//! time has come and hands each to its `resume`. When the runner is told to stop, the
//! lot closes (nothing parks any more) and every value still in it is resumed.

mod slab;
mod trim;
mod waker;

pub use slab::Key;

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Weak};
use std::task::Waker;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use parking_lot::Mutex;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use slab::Slab;
use waker::{Ready, Registration};

/// How long after the first park since the last trim the next one runs: parks come in
/// bursts (the sweeper asks every connection idle long enough at once, four times a
/// second), trimmed once.
const TRIM_DELAY: Duration = Duration::from_millis(100);
/// The least time between two trims: each walks the allocator's free lists, so while
/// connections keep parking it runs at most four times a second.
const TRIM_GAP: Duration = Duration::from_millis(250);
/// Epoll events taken per call.
const EVENTS: usize = 256;

/// Where values park; cheap to clone.
pub struct Lot<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Lot<T> {
    fn clone(&self) -> Lot<T> {
        Lot {
            shared: self.shared.clone(),
        }
    }
}

/// The task that serves a [`Lot`]: see [`Runner::run`].
pub struct Runner<T> {
    shared: Arc<Shared<T>>,
    poll: AsyncFd<Poll>,
    events: Events,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Registers parked sockets with the runner's epoll instance.
    registry: mio::Registry,
    /// Tells the runner that keys are ready, or that a trim is due.
    notify: Notify,
    /// The lot's number in the wakers' table; `None` if it got none (65,536 lots).
    registration: Option<Registration>,
}

struct State<T> {
    slab: Slab<T>,
    /// Keys whose wakers were woken, not yet resumed.
    ready: Vec<Key>,
    closed: bool,
    parked_since_trim: usize,
}

impl<T: Send + 'static> Ready for Shared<T> {
    fn ready(&self, key: Key) {
        let mut st = self.state.lock();
        // The runner empties the list each time it is told: telling it once is enough.
        let tell = st.ready.is_empty();
        st.ready.push(key);
        drop(st);
        if tell {
            self.notify.notify_one();
        }
    }
}

/// A lot and the task that serves it; within a tokio runtime (its epoll instance is
/// registered with it).
pub fn new<T: AsRawFd + Send + 'static>() -> io::Result<(Lot<T>, Runner<T>)> {
    let poll = Poll::new()?;
    let registry = poll.registry().try_clone()?;
    let shared = Arc::new_cyclic(|weak: &Weak<Shared<T>>| Shared {
        state: Mutex::new(State {
            slab: Slab::default(),
            ready: Vec::new(),
            closed: false,
            parked_since_trim: 0,
        }),
        registry,
        notify: Notify::new(),
        registration: waker::register(weak.clone() as Weak<dyn Ready>),
    });
    if shared.registration.is_none() {
        return Err(io::Error::other("too many park lots"));
    }
    // SAFETY: `register_with_interest` asks that the fd `poll.as_raw_fd()` returns stay
    // open, the same fd of the same file description, while the `AsyncFd` owns `poll`.
    // `Poll` opens its epoll instance in `Poll::new`, returns that fd from every
    // `as_raw_fd`, never replaces it, and closes it only when dropped, which the
    // `AsyncFd` owning it does last.
    let poll = unsafe { AsyncFd::register_with_interest(poll, tokio::io::Interest::READABLE) }
        .map_err(io::Error::from)?;
    let runner = Runner {
        shared: shared.clone(),
        poll,
        events: Events::with_capacity(EVENTS),
    };
    Ok((Lot { shared }, runner))
}

// (Lossless both ways: the module is built for 64-bit pointers only.)
fn token(key: Key) -> Token {
    Token(key.to_bits() as usize)
}

fn key_of(token: Token) -> Key {
    Key::from_bits(token.0 as u64)
}

impl<T: AsRawFd + Send + 'static> Lot<T> {
    /// Parks `value` until its socket has something to say or the waker handed to `arm`
    /// is woken. `arm` gets the value and that waker, and returns whether the value is to
    /// be resumed at once (a wake came before the waker was in place). Runs under the
    /// lot's lock, so that the value cannot be resumed before `arm` is done: `arm` must
    /// not park or wake in this lot.
    ///
    /// Gives the value back when the lot is closed or the socket cannot be registered.
    pub fn park(&self, value: T, arm: impl FnOnce(&T, &Waker) -> bool) -> Result<(), T> {
        let sh = &*self.shared;
        let Some(registration) = &sh.registration else {
            return Err(value);
        };
        let fd: RawFd = value.as_raw_fd();
        let mut st = sh.state.lock();
        if st.closed {
            return Err(value);
        }
        let key = st.slab.insert(value)?;
        if sh
            .registry
            .register(&mut SourceFd(&fd), token(key), Interest::READABLE)
            .is_err()
        {
            // Just inserted under this lock: always there to give back.
            return st.slab.remove(key).map_or(Ok(()), Err);
        }
        let waker = waker::waker(registration.id(), key);
        let woken = st.slab.get(key).is_some_and(|v| arm(v, &waker));
        let mut tell = false;
        if woken {
            tell = st.ready.is_empty();
            st.ready.push(key);
        }
        st.parked_since_trim += 1;
        if st.parked_since_trim == 1 {
            // The runner schedules a trim.
            tell = true;
        }
        drop(st);
        if tell {
            sh.notify.notify_one();
        }
        Ok(())
    }

    /// Values parked now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shared.state.lock().slab.len()
    }
}

impl<T: AsRawFd + Send + 'static> Shared<T> {
    /// Takes the values `due` and the ready list name (those still parked), and clears
    /// `due`.
    fn take(&self, due: &mut Vec<Key>) -> Vec<T> {
        let mut st = self.state.lock();
        let ready = std::mem::take(&mut st.ready);
        let values: Vec<T> = due
            .drain(..)
            .chain(ready)
            .filter_map(|key| st.slab.remove(key))
            .collect();
        values
    }

    /// Out of the lot's epoll instance, before it is handed back.
    fn leave(&self, value: &T) {
        // An error means it was not registered, which is what is wanted.
        let _ = self.registry.deregister(&mut SourceFd(&value.as_raw_fd()));
    }
}

impl<T: AsRawFd + Send + 'static> Runner<T> {
    /// Serves the lot until `stop`: each value whose socket became readable (or hung up,
    /// or failed) or whose waker was woken leaves the lot and is handed to `resume`.
    /// Then closes the lot and hands every value still in it to `resume`.
    ///
    /// After a burst of parks it also hands the memory they freed back to the system
    /// (see [`trim`]).
    pub async fn run(self, stop: &CancellationToken, mut resume: impl FnMut(T)) {
        let Runner {
            shared,
            mut poll,
            mut events,
        } = self;
        let mut due: Vec<Key> = Vec::new();
        let mut trim_at: Option<tokio::time::Instant> = None;
        let mut trimmed_at = tokio::time::Instant::now();
        loop {
            let trim_due = async move {
                match trim_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = shared.notify.notified() => {}
                _ = trim_due => {
                    trim_at = None;
                    trimmed_at = tokio::time::Instant::now();
                    trim::release_free_pages();
                }
                ready = poll.readable_mut() => {
                    let Ok(mut guard) = ready else {
                        // Never seen: tokio could not poll the epoll instance. The lot
                        // closes, and connections stay in their tasks.
                        tracing::error!("park lot: cannot wait on its epoll instance, closing it");
                        break;
                    };
                    match guard.get_inner_mut().poll(&mut events, Some(Duration::ZERO)) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            tracing::error!("park lot: epoll_wait failed: {e}, closing it");
                            break;
                        }
                    }
                    if events.is_empty() {
                        guard.clear_ready();
                    }
                    due.extend(events.iter().map(|e| key_of(e.token())));
                }
            }
            for value in shared.take(&mut due) {
                shared.leave(&value);
                resume(value);
            }
            if trim_at.is_none() {
                let mut st = shared.state.lock();
                if st.parked_since_trim > 0 {
                    st.parked_since_trim = 0;
                    let now = tokio::time::Instant::now();
                    trim_at = Some((now + TRIM_DELAY).max(trimmed_at + TRIM_GAP));
                }
            }
        }
        let values = {
            let mut st = shared.state.lock();
            st.closed = true;
            st.ready.clear();
            st.slab.drain()
        };
        for value in values {
            shared.leave(&value);
            resume(value);
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
