//! `memory_limit`: how many bytes the broker holds for its clients, and the ceiling above
//! which it takes no more.
//!
//! Counted where the memory is held, so the count cannot drift from it: a message
//! charges its bytes when it is created and gives them back when its last reference goes
//! (a message shared by a thousand queues and the retained store is counted once, as it is
//! held once); each queue entry charges its own small overhead while it exists, wherever
//! it sits (queue, inflight window, restored from the store); a session charges its fixed
//! cost and client id while it exists. The counter is one process-wide atomic, as in
//! Mosquitto (memory_mosq.c): one broker runs per process. Above the limit new messages
//! and new sessions are refused with the specification's answers; nothing already held,
//! and so nothing already acknowledged, is ever dropped for it.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes held now (see the module documentation).
static USED: AtomicUsize = AtomicUsize::new(0);

/// Counts `bytes` as held.
#[inline]
pub fn charge(bytes: usize) {
    USED.fetch_add(bytes, Ordering::Relaxed);
}

/// Counts `bytes` as given back (what [`charge`] counted, exactly).
#[inline]
pub fn release(bytes: usize) {
    USED.fetch_sub(bytes, Ordering::Relaxed);
}

/// Bytes held now.
pub fn used() -> usize {
    USED.load(Ordering::Relaxed)
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
    fn zero_means_no_limit() {
        assert!(!over(0, usize::MAX));
        assert!(over(1, usize::MAX));
    }
}
