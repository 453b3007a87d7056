//! How a session wakes its attached connection: a flag and the one waker to call.
//!
//! A session has at most one connection waiting on it, so tokio's `Notify` (a list of
//! waiters, 32 bytes) and the `Notified` future the connection had to keep pinned while
//! idle (64 bytes in every idle connection's task) are more than it needs. Here the
//! connection polls [`Wake::poll_woken`] beside its socket, and the waker it leaves is the
//! only thing kept: 32 bytes in the session, nothing in the task.

use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

#[derive(Default)]
pub struct Wake {
    /// Something happened since the connection last looked (a permit, as with
    /// `Notify::notify_one`: a wake with nobody waiting is not lost). Outside the lock:
    /// while it is set, a wake costs one atomic swap, however many publishers deliver to
    /// the session before its connection looks.
    woken: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Wake {
    /// Wakes the connection, or has its next [`Wake::poll_woken`] return at once.
    pub fn notify_one(&self) {
        if self.woken.swap(true, Ordering::AcqRel) {
            // Already due: the connection has been woken and has not looked yet.
            return;
        }
        let waker = self.waker.lock().take();
        // Outside the lock: waking may run the task's scheduler.
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Ready once [`Wake::notify_one`] was called since the last time it was ready;
    /// otherwise remembers `cx`'s waker for it.
    pub fn poll_woken(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.woken.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        let mut slot = self.waker.lock();
        match &mut *slot {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        // Looked at again with the waker in place: a wake that came since the first look
        // either is seen here or finds the waker (it takes the lock after setting the
        // flag, and this holds the lock).
        if self.woken.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Lets go of the waker a connection left: called by a connection that is done with
    /// the session. A tokio waker holds its task, so a session that outlives its
    /// connection (a persistent one, offline) would otherwise keep the finished
    /// connection's task cell allocated until its next wake.
    pub fn forget_waker(&self) {
        let waker = self.waker.lock().take();
        drop(waker);
    }

    /// Waits for [`Wake::notify_one`] (for tests; the connection polls it with its
    /// socket).
    #[cfg(test)]
    pub async fn notified(&self) {
        std::future::poll_fn(|cx| self.poll_woken(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_wake_before_the_wait_is_kept_and_used_once() {
        let w = Wake::default();
        w.notify_one();
        w.notify_one();
        w.notified().await;
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(
            w.poll_woken(&mut cx).is_pending(),
            "two wakes are one permit"
        );
    }

    #[test]
    fn a_forgotten_waker_is_dropped() {
        let w = Wake::default();
        let task = Arc::new(Flag);
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(w.poll_woken(&mut cx).is_pending());
        drop(waker);
        assert_eq!(Arc::strong_count(&task), 2, "the session holds the waker");
        w.forget_waker();
        assert_eq!(Arc::strong_count(&task), 1, "and lets go of it");
    }

    struct Flag;

    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {}
    }

    #[tokio::test]
    async fn a_wake_from_another_task_ends_the_wait() {
        let w = Arc::new(Wake::default());
        let waiter = tokio::spawn({
            let w = w.clone();
            async move { w.notified().await }
        });
        tokio::task::yield_now().await;
        w.notify_one();
        // A lost wake-up would hang here (the test's timeout).
        waiter.await.unwrap(); // ok: unit test; the waiting task cannot panic
    }
}
