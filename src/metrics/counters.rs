//! Event counters that cost the data path next to nothing.
//!
//! Every PUBLISH in and out bumps a few counters, a million times a second across the
//! worker threads. One shared atomic per counter would bounce its cache line between the
//! cores on every message (the same cost `memory.rs` measured for its total). Here each
//! thread owns a shard: a row of atomics only it writes (a plain load and store, no locked
//! instruction), which readers sum. A thread's shard is folded into the retired row when
//! the thread ends, so short-lived blocking threads do not pile up shards.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::Counter;

/// One thread's counts, on cache lines of their own: a shard allocated next to another
/// thread's (or next to anything another thread writes) must not share a line with it.
#[repr(align(128))]
struct Shard([AtomicU64; Counter::COUNT]);

impl Shard {
    fn new() -> Shard {
        Shard(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

/// Every live thread's shard, and what ended threads counted.
struct Registry {
    live: Vec<Arc<Shard>>,
    retired: [u64; Counter::COUNT],
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    live: Vec::new(),
    retired: [0; Counter::COUNT],
});

fn registry() -> MutexGuard<'static, Registry> {
    // A panic elsewhere while holding the lock leaves sums that are still valid counts.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The current thread's shard; folded into the retired counts when the thread ends.
struct Local(Arc<Shard>);

impl Local {
    fn new() -> Local {
        let shard = Arc::new(Shard::new());
        registry().live.push(shard.clone());
        Local(shard)
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        // Under the registry lock, so a reader sees these counts exactly once: in the
        // live shard before, in the retired row after.
        let mut reg = registry();
        for (sum, c) in reg.retired.iter_mut().zip(self.0 .0.iter()) {
            *sum += c.load(Ordering::Relaxed);
        }
        reg.live.retain(|s| !Arc::ptr_eq(s, &self.0));
    }
}

thread_local! {
    static LOCAL: Local = Local::new();
}

/// Adds `n` to `counter`.
#[inline]
pub fn add(counter: Counter, n: u64) {
    let counted = LOCAL.try_with(|local| {
        // Only this thread writes its shard: no read-modify-write instruction needed.
        let c = &local.0 .0[counter as usize];
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    });
    if counted.is_err() {
        // The thread is ending and its shard is gone: count into the retired row.
        registry().retired[counter as usize] += n;
    }
}

/// Adds to several counters at once: one thread-local access for all of them (a PUBLISH
/// counts its packet, its QoS and its payload bytes together).
#[inline]
pub fn add_each<const N: usize>(adds: [(Counter, u64); N]) {
    let counted = LOCAL.try_with(|local| {
        for (counter, n) in adds {
            let c = &local.0 .0[counter as usize];
            c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        }
    });
    if counted.is_err() {
        let mut reg = registry();
        for (counter, n) in adds {
            reg.retired[counter as usize] += n;
        }
    }
}

/// Every counter's total so far, indexed by [`Counter`].
pub fn totals() -> [u64; Counter::COUNT] {
    let reg = registry();
    let mut sums = reg.retired;
    for shard in &reg.live {
        for (sum, c) in sums.iter_mut().zip(shard.0.iter()) {
            *sum = sum.wrapping_add(c.load(Ordering::Relaxed));
        }
    }
    sums
}

/// One counter's total so far.
#[allow(dead_code)] // tests, and the HTTP listener (h/http)
pub fn get(counter: Counter) -> u64 {
    totals()[counter as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_every_thread_including_ended_ones() {
        let before = get(Counter::AuthFailures);
        add(Counter::AuthFailures, 2);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..1000 {
                        add(Counter::AuthFailures, 1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("counting thread");
        }
        // Other tests may count concurrently: at least ours are there.
        assert!(get(Counter::AuthFailures) >= before + 4002);
    }

    #[test]
    fn add_each_counts_every_pair() {
        let before = totals();
        add_each([(Counter::DroppedDenied, 3), (Counter::DroppedTooLarge, 5)]);
        let after = totals();
        let grew = |c: Counter| after[c as usize] - before[c as usize];
        // Other tests may count concurrently: at least ours are there.
        assert!(grew(Counter::DroppedDenied) >= 3);
        assert!(grew(Counter::DroppedTooLarge) >= 5);
    }
}
