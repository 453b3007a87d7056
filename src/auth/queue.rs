//! The queue of password checks waiting for a core: bounded, fair between client
//! addresses, newest first within one.
//!
//! A password check takes tens of milliseconds of CPU (and argon2id ~46 MiB) on purpose, so
//! one runs per core and a flood of CONNECTs with wrong passwords offers more than the
//! cores can check. Served in arrival order, a real login arriving behind 2,000 bogus ones
//! would wait for all of them; refusing newcomers when the queue is full would refuse it
//! outright. So:
//!
//! - waiting checks are grouped by the client's IP address (an IPv6 client by its /64),
//!   and a free core goes to the addresses in turn: a flood from one address (or a few) costs a login from any other
//!   address at most one check per flooding address, however many CONNECTs it keeps
//!   waiting;
//! - within one address the newest waiting check goes first: whoever connects now is
//!   checked soon, and the ones that wait longest are those whose clients are likeliest
//!   to have given up;
//! - when the queue is full, the oldest check of the address with the most waiting is
//!   refused ("server busy"): the flooder pays for its flood, not the others.
//!
//! A waiting check whose CONNECT is abandoned (its connection closed, its
//! `connect_timeout` passed) leaves the queue without being run.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

pub struct CheckQueue {
    state: Mutex<State>,
    /// Checks run at once (one per core).
    max_running: usize,
    /// Checks waiting for one of those, all addresses together.
    max_waiting: usize,
}

#[derive(Default)]
struct State {
    running: usize,
    /// Waiting checks by client address, oldest at the front. A waiter is granted a slot
    /// by a send on its channel, refused by having its sender dropped. An address is here
    /// only while it has a waiter, so this holds at most `max_waiting` entries.
    waiting: HashMap<IpAddr, VecDeque<(u64, oneshot::Sender<()>)>>,
    /// Addresses with waiters, in the order they are served next (each once per turn).
    turn: VecDeque<IpAddr>,
    /// Waiters of all addresses.
    len: usize,
    next_id: u64,
}

impl State {
    /// Takes the waiter `pick` chooses from `ip`'s queue, forgetting the address once it
    /// has no more.
    fn take(
        &mut self,
        ip: IpAddr,
        pick: impl FnOnce(
            &mut VecDeque<(u64, oneshot::Sender<()>)>,
        ) -> Option<(u64, oneshot::Sender<()>)>,
    ) -> Option<oneshot::Sender<()>> {
        let queue = self.waiting.get_mut(&ip)?;
        let (_, tx) = pick(queue)?;
        self.len -= 1;
        if queue.is_empty() {
            self.waiting.remove(&ip);
            self.turn.retain(|a| *a != ip);
        }
        Some(tx)
    }

    /// The address holding the most waiters (the one a full queue refuses from).
    fn busiest(&self) -> Option<IpAddr> {
        self.waiting
            .iter()
            .max_by_key(|(_, q)| q.len())
            .map(|(ip, _)| *ip)
    }
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
            state: Mutex::new(State::default()),
            max_running: max_running.max(1),
            max_waiting,
        })
    }

    /// Waits for a free core for a check of a client connected from `ip`. `None`:
    /// refused, the queue being full.
    pub async fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let ip = turn_key(ip);
        let (id, rx) = {
            let mut st = self.state.lock();
            if st.running < self.max_running {
                st.running += 1;
                return Some(Slot(self.clone()));
            }
            if self.max_waiting == 0 {
                return None;
            }
            if st.len >= self.max_waiting {
                // Dropping its sender tells that waiter it is refused.
                if let Some(busiest) = st.busiest() {
                    st.take(busiest, VecDeque::pop_front);
                }
            }
            let id = st.next_id;
            st.next_id += 1;
            let (tx, rx) = oneshot::channel();
            let queue = st.waiting.entry(ip).or_default();
            queue.push_back((id, tx));
            if queue.len() == 1 {
                st.turn.push_back(ip);
            }
            st.len += 1;
            (id, rx)
        };
        let mut wait = Waiting {
            queue: self,
            ip,
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

    /// Hands the core to the newest live waiter of the address whose turn it is, or frees
    /// it.
    fn release(&self) {
        let mut st = self.state.lock();
        while let Some(ip) = st.turn.pop_front() {
            // To the back of the line: the next core goes to another address.
            st.turn.push_back(ip);
            let Some(tx) = st.take(ip, VecDeque::pop_back) else {
                continue;
            };
            // Fails only when the waiter has gone (see `Waiting::drop`).
            if tx.send(()).is_ok() {
                return;
            }
        }
        st.running -= 1;
    }

    /// Checks running and waiting.
    #[cfg(test)]
    pub fn load(&self) -> (usize, usize) {
        let st = self.state.lock();
        (st.running, st.len)
    }
}

/// The address a client takes turns as: its IPv4 address (also when it comes as an
/// IPv4-mapped IPv6 address), or its IPv6 /64. One IPv6 host usually holds a whole /64
/// and could otherwise take as many turns as addresses it cares to use.
fn turn_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

/// A waiter that may be abandoned (its future dropped) at any point.
struct Waiting<'a> {
    queue: &'a Arc<CheckQueue>,
    ip: IpAddr,
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
        let id = self.id;
        let still_waiting = st.take(self.ip, |q| {
            let at = q.iter().position(|(i, _)| *i == id)?;
            q.remove(at)
        });
        if still_waiting.is_some() {
            // Left without ever being run.
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

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    fn poll<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn runs_up_to_max_running_then_serves_newest_first() {
        let q = CheckQueue::new(1, 4);
        let Poll::Ready(Some(first)) = poll(pin!(q.acquire(A))) else {
            panic!("a free core is granted at once")
        };
        let mut old = pin!(q.acquire(A));
        let mut new = pin!(q.acquire(A));
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
        let Poll::Ready(Some(_running)) = poll(pin!(q.acquire(A))) else {
            panic!()
        };
        let mut a = pin!(q.acquire(A));
        let mut b = pin!(q.acquire(A));
        let mut c = pin!(q.acquire(A));
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
        let Poll::Ready(Some(running)) = poll(pin!(q.acquire(A))) else {
            panic!()
        };
        {
            let mut gone = Box::pin(q.acquire(A));
            assert!(poll(gone.as_mut()).is_pending());
        }
        assert_eq!(q.load(), (1, 0), "an abandoned waiter leaves the queue");
        // Granted (the sender fired) but dropped before it saw the grant.
        let mut granted = Box::pin(q.acquire(A));
        assert!(poll(granted.as_mut()).is_pending());
        drop(running);
        assert_eq!(q.load(), (1, 0));
        drop(granted);
        assert_eq!(q.load(), (0, 0), "the unused core is given back");
    }

    #[test]
    fn addresses_take_turns_so_a_flood_from_one_delays_another_by_one_check() {
        let q = CheckQueue::new(1, 64);
        let Poll::Ready(Some(running)) = poll(pin!(q.acquire(A))) else {
            panic!()
        };
        let mut flood: Vec<_> = (0..20).map(|_| Box::pin(q.acquire(A))).collect();
        for f in &mut flood {
            assert!(poll(f.as_mut()).is_pending());
        }
        let mut other = pin!(q.acquire(B));
        assert!(poll(other.as_mut()).is_pending());
        // More of the flood after it: newer, but from the address that just had a turn.
        let mut later: Vec<_> = (0..20).map(|_| Box::pin(q.acquire(A))).collect();
        for f in &mut later {
            assert!(poll(f.as_mut()).is_pending());
        }
        drop(running);
        // The first free core went to A (its turn came first), to its newest waiter.
        let mut granted = None;
        for f in &mut later {
            if let Poll::Ready(slot) = poll(f.as_mut()) {
                assert!(granted.is_none(), "one core, one grant");
                granted = Some(slot.expect("granted, not refused"));
            }
        }
        assert!(granted.is_some(), "A's newest waiter had the first turn");
        assert!(poll(other.as_mut()).is_pending());
        drop(granted);
        let Poll::Ready(Some(_b)) = poll(other.as_mut()) else {
            panic!("B is served after one check of A's, not after 40")
        };
    }

    #[test]
    fn a_full_queue_refuses_from_the_address_with_the_most_waiting() {
        let q = CheckQueue::new(1, 3);
        let Poll::Ready(Some(_running)) = poll(pin!(q.acquire(A))) else {
            panic!()
        };
        let mut b = pin!(q.acquire(B));
        let mut a1 = pin!(q.acquire(A));
        let mut a2 = pin!(q.acquire(A));
        assert!(poll(b.as_mut()).is_pending());
        assert!(poll(a1.as_mut()).is_pending());
        assert!(poll(a2.as_mut()).is_pending());
        let mut a3 = pin!(q.acquire(A));
        assert!(poll(a3.as_mut()).is_pending());
        assert!(
            matches!(poll(a1.as_mut()), Poll::Ready(None)),
            "A's oldest refused"
        );
        assert!(poll(b.as_mut()).is_pending(), "B keeps its place");
        assert_eq!(q.load(), (1, 3));
    }

    #[test]
    fn ipv6_hosts_take_turns_by_their_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("addr");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("addr");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("addr");
        assert_eq!(turn_key(a), turn_key(b), "one /64, one turn");
        assert_ne!(turn_key(a), turn_key(c));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("addr");
        assert_eq!(turn_key(mapped), A);
        assert_eq!(turn_key(B), B);
    }
}
