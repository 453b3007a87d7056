//! The lot with real sockets: what resumes a parked value, and what does not.

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use tokio::sync::mpsc;

use super::*;

struct Parked {
    n: u32,
    socket: UnixStream,
}

impl AsRawFd for Parked {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// A parked value's socket and the other end of it.
fn value(n: u32) -> (Parked, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap(); // ok: unit test
    a.set_nonblocking(true).unwrap(); // ok: unit test
    (Parked { n, socket: a }, b)
}

/// A lot whose runner sends what it resumes down a channel.
fn start() -> (
    Lot<Parked>,
    mpsc::UnboundedReceiver<Parked>,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let (lot, runner) = new::<Parked>().unwrap(); // ok: unit test
    let (tx, rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move {
            runner
                .run(&stop, |v| {
                    let _ = tx.send(v);
                })
                .await
        }
    });
    (lot, rx, stop, task)
}

/// The next value resumed; the test's time limit guards a lost one.
async fn next(rx: &mut mpsc::UnboundedReceiver<Parked>) -> Parked {
    rx.recv().await.unwrap() // ok: unit test
}

/// Nothing resumed for a while (not a timing assertion: only that nothing comes).
async fn nothing(rx: &mut mpsc::UnboundedReceiver<Parked>) {
    let got = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await;
    assert!(got.is_err(), "resumed for nothing");
}

#[tokio::test]
async fn data_on_the_socket_resumes_it() {
    let (lot, mut rx, _stop, _task) = start();
    let (a, mut peer_a) = value(1);
    let (b, _peer_b) = value(2);
    assert!(lot.park(a, |_, _| false).is_ok());
    assert!(lot.park(b, |_, _| false).is_ok());
    assert_eq!(lot.len(), 2);
    nothing(&mut rx).await;
    peer_a.write_all(b"x").unwrap(); // ok: unit test
    assert_eq!(next(&mut rx).await.n, 1);
    assert_eq!(lot.len(), 1);
    nothing(&mut rx).await;
}

#[tokio::test]
async fn data_already_there_resumes_it_at_once() {
    let (lot, mut rx, _stop, _task) = start();
    let (a, mut peer) = value(1);
    peer.write_all(b"x").unwrap(); // ok: unit test
    assert!(lot.park(a, |_, _| false).is_ok());
    assert_eq!(next(&mut rx).await.n, 1);
}

#[tokio::test]
async fn a_hang_up_resumes_it() {
    let (lot, mut rx, _stop, _task) = start();
    let (a, peer) = value(7);
    assert!(lot.park(a, |_, _| false).is_ok());
    drop(peer);
    assert_eq!(next(&mut rx).await.n, 7);
}

#[tokio::test]
async fn its_waker_resumes_it_once_and_then_is_stale() {
    let (lot, mut rx, _stop, _task) = start();
    let kept = StdMutex::new(None);
    let (a, _peer) = value(3);
    assert!(lot
        .park(a, |_, w| {
            *kept.lock().unwrap() = Some(w.clone()); // ok: unit test
            false
        })
        .is_ok());
    let waker = kept.lock().unwrap().take().unwrap(); // ok: unit test
    waker.wake_by_ref();
    let a = next(&mut rx).await;
    assert_eq!(a.n, 3);
    // Parked again in the same place: the old waker names the old generation.
    let (b, _peer_b) = value(4);
    assert!(lot.park(a, |_, _| false).is_ok());
    assert!(lot.park(b, |_, _| false).is_ok());
    waker.wake();
    nothing(&mut rx).await;
    assert_eq!(lot.len(), 2);
}

#[tokio::test]
async fn a_wake_before_the_waker_was_in_place_resumes_at_once() {
    let (lot, mut rx, _stop, _task) = start();
    let (a, _peer) = value(5);
    assert!(lot.park(a, |_, _| true).is_ok());
    assert_eq!(next(&mut rx).await.n, 5);
}

#[tokio::test]
async fn stopping_resumes_everything_and_closes_the_lot() {
    let (lot, mut rx, stop, task) = start();
    for n in 0..10 {
        let (v, peer) = value(n);
        std::mem::forget(peer);
        assert!(lot.park(v, |_, _| false).is_ok());
    }
    stop.cancel();
    task.await.unwrap(); // ok: unit test
    let mut seen = Vec::new();
    while let Ok(v) = rx.try_recv() {
        seen.push(v.n);
    }
    seen.sort();
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
    assert_eq!(lot.len(), 0);
    let (v, _peer) = value(99);
    let back = lot.park(v, |_, _| false).err().map(|v| v.n);
    assert_eq!(back, Some(99), "a closed lot gives the value back");
}

#[tokio::test]
async fn many_values_resume_each_on_its_own_socket() {
    let (lot, mut rx, _stop, _task) = start();
    let mut peers = Vec::new();
    for n in 0..600 {
        let (v, peer) = value(n);
        assert!(lot.park(v, |_, _| false).is_ok());
        peers.push(peer);
    }
    // More than one epoll batch at once.
    for p in peers.iter_mut().step_by(2) {
        p.write_all(b"x").unwrap(); // ok: unit test
    }
    let mut seen = Vec::new();
    for _ in 0..300 {
        seen.push(next(&mut rx).await.n);
    }
    seen.sort();
    assert_eq!(seen, (0..600).step_by(2).collect::<Vec<_>>());
    assert_eq!(lot.len(), 300);
}
