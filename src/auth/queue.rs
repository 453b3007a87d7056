//! The queue of password checks waiting for a core: bounded, newest first.
//!
//! A password check takes tens of milliseconds of CPU (and argon2id ~46 MiB) on purpose, so
//! one runs per core and a flood of CONNECTs with wrong passwords offers more than the
//! cores can check. Served in arrival order, a real login arriving behind 2,000 bogus ones
//! would wait for all of them; refusing newcomers when the queue is full would refuse it
//! outright. So the newest waiting check gets the next free core, and when the queue is
//! full the one that has waited longest is refused ("server busy"): whoever connects now
//! is checked within about two check times, and the check dropped is the one whose client
//! is likeliest to have given up already. A waiting check whose CONNECT is abandoned (its
//! connection closed, its `connect_timeout` passed) leaves the queue without being run.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

pub struct CheckQueue {
    state: Mutex<State>,
    /// Checks run at once (one per core).
    max_running: usize,
    /// Checks waiting for one of those.
    max_waiting: usize,
}

struct State {
    running: usize,
    /// Oldest at the front. A waiter is granted a slot by a send on its channel, refused
    /// by having its sender dropped.
    waiting: VecDeque<(u64, oneshot::Sender<()>)>,
    next_id: u64,
}

/// The right to run one check; the core is given to the next waiter when it is dropped.
/// Owned, so it can move into the blocking task: a check abandoned while it runs keeps
/// its core until the hash is done, and never lets more checks run than there are cores.
pub struct Slot(Arc<CheckQueue>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl CheckQueue {
    pub fn new(max_running: usize, max_waiting: usize) -> Arc<CheckQueue> {
        Arc::new(CheckQueue {
            state: Mutex::new(State {
                running: 0,
                waiting: VecDeque::new(),
                next_id: 0,
            }),
            max_running: max_running.max(1),
            max_waiting,
        })
    }

    /// Waits for a free core. `None`: refused, the queue being full of newer checks.
    pub async fn acquire(self: &Arc<Self>) -> Option<Slot> {
        let (id, rx) = {
            let mut st = self.state.lock();
            if st.running < self.max_running {
                st.running += 1;
                return Some(Slot(self.clone()));
            }
            if self.max_waiting == 0 {
                return None;
            }
            if st.waiting.len() >= self.max_waiting {
                // Dropping its sender tells the oldest waiter it is refused.
                st.waiting.pop_front();
            }
            let id = st.next_id;
            st.next_id += 1;
            let (tx, rx) = oneshot::channel();
            st.waiting.push_back((id, tx));
            (id, rx)
        };
        let mut wait = Waiting {
            queue: self,
            id,
            rx: Some(rx),
        };
        let granted = match wait.rx.as_mut() {
            Some(rx) => rx.await.is_ok(),
            None => false,
        };
        wait.rx = None;
        granted.then(|| Slot(self.clone()))
    }

    /// Hands the core to the newest live waiter, or frees it.
    fn release(&self) {
        let mut st = self.state.lock();
        while let Some((_, tx)) = st.waiting.pop_back() {
            // Fails only when the waiter has gone (see `Waiting::drop`).
            if tx.send(()).is_ok() {
                return;
            }
        }
        st.running -= 1;
    }

    /// Checks running and waiting (for tests and logs).
    pub fn load(&self) -> (usize, usize) {
        let st = self.state.lock();
        (st.running, st.waiting.len())
    }
}

/// A waiter that may be abandoned (its future dropped) at any point.
struct Waiting<'a> {
    queue: &'a Arc<CheckQueue>,
    id: u64,
    /// `None` once the outcome was taken.
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        let mut st = self.queue.state.lock();
        if let Some(at) = st.waiting.iter().position(|(id, _)| *id == self.id) {
            // Still waiting: leave without ever being run.
            st.waiting.remove(at);
            return;
        }
        drop(st);
        // Refused, or granted a core nobody is going to use: give that back.
        rx.close();
        if rx.try_recv().is_ok() {
            self.queue.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    fn poll<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn runs_up_to_max_running_then_serves_newest_first() {
        let q = CheckQueue::new(1, 4);
        let Poll::Ready(Some(first)) = poll(pin!(q.acquire())) else {
            panic!("a free core is granted at once")
        };
        let mut old = pin!(q.acquire());
        let mut new = pin!(q.acquire());
        assert!(poll(old.as_mut()).is_pending());
        assert!(poll(new.as_mut()).is_pending());
        assert_eq!(q.load(), (1, 2));
        drop(first);
        assert!(
            poll(old.as_mut()).is_pending(),
            "the older waiter is not next"
        );
        let Poll::Ready(Some(second)) = poll(new.as_mut()) else {
            panic!("the newest waiter gets the core")
        };
        assert_eq!(q.load(), (1, 1));
        drop(second);
        assert!(matches!(poll(old.as_mut()), Poll::Ready(Some(_))));
        assert_eq!(q.load(), (0, 0));
    }

    #[test]
    fn full_queue_refuses_the_oldest_waiter() {
        let q = CheckQueue::new(1, 2);
        let Poll::Ready(Some(_running)) = poll(pin!(q.acquire())) else {
            panic!()
        };
        let mut a = pin!(q.acquire());
        let mut b = pin!(q.acquire());
        let mut c = pin!(q.acquire());
        assert!(poll(a.as_mut()).is_pending());
        assert!(poll(b.as_mut()).is_pending());
        assert!(poll(c.as_mut()).is_pending());
        assert!(
            matches!(poll(a.as_mut()), Poll::Ready(None)),
            "oldest refused"
        );
        assert!(poll(b.as_mut()).is_pending());
        assert_eq!(q.load(), (1, 2));
    }

    #[test]
    fn abandoned_waiter_is_never_run_and_a_granted_core_comes_back() {
        let q = CheckQueue::new(1, 4);
        let Poll::Ready(Some(running)) = poll(pin!(q.acquire())) else {
            panic!()
        };
        {
            let mut gone = Box::pin(q.acquire());
            assert!(poll(gone.as_mut()).is_pending());
        }
        assert_eq!(q.load(), (1, 0), "an abandoned waiter leaves the queue");
        // Granted (the sender fired) but dropped before it saw the grant.
        let mut granted = Box::pin(q.acquire());
        assert!(poll(granted.as_mut()).is_pending());
        drop(running);
        assert_eq!(q.load(), (1, 0));
        drop(granted);
        assert_eq!(q.load(), (0, 0), "the unused core is given back");
    }
}
