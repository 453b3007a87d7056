//! `memory_limit`: how many bytes the broker holds for its clients, and the ceiling above
//! which it takes no more.
//!
//! Counted where the memory is held, so the count cannot drift from it: a message
//! charges its bytes when it is created and gives them back when its last reference goes
//! (a message shared by a thousand queues and the retained store is counted once, as it is
//! held once); each queue entry charges its own small overhead while it exists, wherever
//! it sits (queue, inflight window, restored from the store); a session charges its fixed
//! cost and client id while it exists. One broker runs per process, so the count is
//! process-wide, as in Mosquitto (memory_mosq.c). Above the limit new messages and new
//! sessions are refused with the specification's answers; nothing already held, and so
//! nothing already acknowledged, is ever dropped for it.
//!
//! Every message and queue entry is counted on its way in and out, so the count must cost
//! next to nothing: with one shared atomic written for each of them, its cache line went
//! back and forth between the publisher's core and the subscribers' (a few percent of
//! the broker's CPU in a fan-out profile, on top of the message's own reference count). Each thread
//! keeps its own running difference and adds it to the shared total once it passes
//! [`BATCH`] either way, so the total is off by at most `BATCH` per thread: a few hundred
//! KiB against a limit of hundreds of MiB.

use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};

/// Bytes held now, give or take what the threads have not handed in yet.
static USED: AtomicIsize = AtomicIsize::new(0);

/// How far one thread's count may drift from the shared total before it is handed in.
pub const BATCH: isize = 32 * 1024;

/// One thread's bytes not yet added to [`USED`]; handed in when the thread ends too.
struct Local(Cell<isize>);

impl Drop for Local {
    fn drop(&mut self) {
        USED.fetch_add(self.0.get(), Ordering::Relaxed);
    }
}

thread_local! {
    static LOCAL: Local = const { Local(Cell::new(0)) };
}

/// Adds `delta` to this thread's difference, and hands it in once it passes [`BATCH`].
#[inline]
fn add(delta: isize) {
    let handed = LOCAL.try_with(|local| {
        let now = local.0.get().wrapping_add(delta);
        if !(-BATCH..=BATCH).contains(&now) {
            USED.fetch_add(now, Ordering::Relaxed);
            local.0.set(0);
        } else {
            local.0.set(now);
        }
    });
    // During thread exit the local is gone: count straight into the total.
    if handed.is_err() {
        USED.fetch_add(delta, Ordering::Relaxed);
    }
}

/// Counts `bytes` as held.
#[inline]
pub fn charge(bytes: usize) {
    add(isize::try_from(bytes).unwrap_or(isize::MAX));
}

/// Counts `bytes` as given back (what [`charge`] counted, exactly).
#[inline]
pub fn release(bytes: usize) {
    add(-isize::try_from(bytes).unwrap_or(isize::MAX));
}

/// Bytes held now.
pub fn used() -> usize {
    // Threads hand in their differences at different times, so the total may briefly
    // read below zero (bytes released on one thread, charged on another not yet in).
    usize::try_from(USED.load(Ordering::Relaxed)).unwrap_or(0)
}

/// Whether taking `incoming` more bytes would go above `limit` (0 = no limit).
#[inline]
pub fn over(limit: usize, incoming: usize) -> bool {
    limit > 0 && used().saturating_add(incoming) > limit
}

/// What a session costs beyond its client id and what it queues: the session itself, its
/// entry in the sessions map and a little state. An estimate, on the high side.
pub const SESSION_BYTES: usize = 512;

/// The default `memory_limit`: a quarter of the memory this process may use (the cgroup's
/// `memory.max` when a container sets one, otherwise physical memory), leaving room for
/// allocator overhead, socket buffers and the rest of the system. 1 GiB when neither can
/// be read.
pub fn default_limit() -> usize {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let physical = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| mem_total_bytes(&s));
    let total = match (cgroup, physical) {
        (Some(c), Some(p)) => Some(c.min(p)),
        (c, p) => c.or(p),
    };
    match total {
        Some(t) => usize::try_from(t / 4).unwrap_or(usize::MAX),
        None => 1 << 30,
    }
}

/// `MemTotal` of /proc/meminfo, in bytes.
fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_read_from_meminfo() {
        let text = "MemTotal:        4028812 kB\nMemFree:          123 kB\n";
        assert_eq!(mem_total_bytes(text), Some(4_028_812 * 1024));
        assert_eq!(mem_total_bytes("nothing here"), None);
    }

    #[test]
    fn the_default_limit_is_a_safe_fraction() {
        let limit = default_limit();
        assert!(limit >= 16 << 20, "{limit}");
    }

    #[test]
    fn a_thread_hands_in_its_count_past_the_batch_and_when_it_ends() {
        // Other tests in this process count too: look only at this thread's effect, made
        // large enough to stand out.
        let big = 64 << 20;
        let before = used();
        std::thread::spawn(move || {
            charge(big);
            charge(10);
        })
        .join()
        .expect("thread");
        let after = used();
        assert!(after >= before + big - (1 << 20), "{before} -> {after}");
        std::thread::spawn(move || {
            release(10);
            release(big);
        })
        .join()
        .expect("thread");
        assert!(used() < after - big + (1 << 20));
    }

    #[test]
    fn zero_means_no_limit() {
        assert!(!over(0, usize::MAX));
        assert!(over(1, usize::MAX));
    }
}
