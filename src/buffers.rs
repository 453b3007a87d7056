//! Recycled I/O buffers: each worker thread keeps a few empty read and write buffers that
//! connections give back when they run dry and take again on their next burst.
//!
//! Connections let go of their buffers as soon as they are empty, so that an idle
//! connection holds none (see `connection`). Under traffic that meant a fresh allocation
//! of 4-256 KiB for every read and every write burst, and glibc's malloc pays for a large
//! allocation by consolidating its small free chunks first: in a 10 → 1 fan-in that was
//! ~1,200 instructions a message (callgrind), a quarter of the broker's work. A buffer
//! given back here is reused by the next connection on this thread that needs one, while
//! the memory held stays bounded: at most [`KEEP`] buffers of at most [`LARGEST`] bytes
//! per thread.

use std::cell::RefCell;

use bytes::BytesMut;

/// Empty buffers kept per thread.
const KEEP: usize = 8;
/// Larger buffers are freed, not kept.
const LARGEST: usize = 512 * 1024;
/// Smaller ones are not worth keeping (the allocator's caches serve them well).
const SMALLEST: usize = 1024;

thread_local! {
    static FREE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for at least `min` bytes: a recycled one when this thread
/// has one large enough.
pub fn take(min: usize) -> BytesMut {
    let reused = FREE.with_borrow_mut(|free| {
        let i = free.iter().rposition(|b| b.capacity() >= min)?;
        Some(free.swap_remove(i))
    });
    reused.unwrap_or_else(|| BytesMut::with_capacity(min))
}

/// Gives `buf` back (its contents are discarded).
pub fn give(mut buf: BytesMut) {
    buf.clear();
    let cap = buf.capacity();
    if !(SMALLEST..=LARGEST).contains(&cap) {
        return;
    }
    FREE.with_borrow_mut(|free| {
        if free.len() < KEEP {
            free.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_is_taken_again_and_the_pool_is_bounded() {
        let mut b = take(4096);
        b.extend_from_slice(b"data");
        let ptr = b.as_ptr();
        give(b);
        let again = take(2048);
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), ptr, "the same allocation");
        // Too small and too large ones are not kept; at most KEEP are.
        give(BytesMut::with_capacity(16));
        give(BytesMut::with_capacity(LARGEST * 2));
        assert_eq!(FREE.with_borrow(|f| f.len()), 0);
        for _ in 0..KEEP + 3 {
            give(BytesMut::with_capacity(4096));
        }
        assert_eq!(FREE.with_borrow(|f| f.len()), KEEP);
        assert!(take(8192).capacity() >= 8192);
    }
}
