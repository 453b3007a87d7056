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
    // The smallest that fits: a 4 KiB write burst must not take the 64 KiB buffer the
    // next large read needs.
    let reused = FREE.with_borrow_mut(|free| {
        let (i, _) = free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= min)
            .min_by_key(|(_, b)| b.capacity())?;
        Some(free.swap_remove(i))
    });
    reused.unwrap_or_else(|| BytesMut::with_capacity(min))
}

/// A recycled buffer of `min` to `max` bytes, if this thread has one: for a buffer whose
/// size must stay near what it asks for (see `session::frames`).
pub fn take_within(min: usize, max: usize) -> Option<BytesMut> {
    FREE.with_borrow_mut(|free| {
        let (i, _) = free
            .iter()
            .enumerate()
            .filter(|(_, b)| (min..=max).contains(&b.capacity()))
            .min_by_key(|(_, b)| b.capacity())?;
        Some(free.swap_remove(i))
    })
}

/// Takes back as much of `buf`'s allocation as the largest power of two from
/// [`SMALLEST`] to [`LARGEST`] it covers, when `buf` is its last handle; nothing when it
/// covers not even [`SMALLEST`]. Whether `try_reclaim` can give a size back only goes
/// from yes to no as the size grows (and a yes leaves the buffer with at least that
/// room), so the largest is found by halving the range: one try for a buffer below
/// SMALLEST (a connection's first small read buffer), about four otherwise, where trying
/// each size from the largest down took up to ten (callgrind, conn5k: ~1,100
/// instructions per connection).
fn reclaim(buf: &mut BytesMut) {
    if !buf.try_reclaim(SMALLEST) {
        return;
    }
    let (mut known, mut above) = (SMALLEST.trailing_zeros(), LARGEST.trailing_zeros() + 1);
    while above - known > 1 {
        let mid = (known + above) / 2;
        if buf.try_reclaim(1 << mid) {
            known = mid;
        } else {
            above = mid;
        }
    }
}

/// Gives `buf` back (its contents are discarded).
pub fn give(mut buf: BytesMut) {
    buf.clear();
    // A buffer that was written out (advanced) or had frames split off it reports only
    // the room after them: without this, most buffers came back too small to keep, and
    // a fan-in still allocated a 4-64 KiB buffer every ~10 messages. Takes the whole
    // allocation back when this is its last handle (never allocates); the largest power
    // of two it covers is what `take` will see.
    reclaim(&mut buf);
    let cap = buf.capacity();
    if !(SMALLEST..=LARGEST).contains(&cap) {
        return;
    }
    // When full, a larger buffer takes the place of the smallest: small ones are the
    // cheap ones to allocate again, and a pool full of them turned every large read
    // into a fresh allocation.
    FREE.with_borrow_mut(|free| {
        if free.len() < KEEP {
            free.push(buf);
        } else if let Some(smallest) = free.iter_mut().min_by_key(|b| b.capacity()) {
            if smallest.capacity() < cap {
                *smallest = buf;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_written_out_or_split_comes_back_whole() {
        use bytes::Buf;
        FREE.with_borrow_mut(|f| f.clear());
        // Written out: advanced to its end, as the outbox does.
        let mut out = take(4096);
        let ptr = out.as_ptr();
        out.extend_from_slice(&[7; 4000]);
        out.advance(4000);
        assert!(out.capacity() < SMALLEST);
        give(out);
        let again = take(4096);
        assert_eq!((again.as_ptr(), again.capacity() >= 4096), (ptr, true));
        // Read from: frames split off and frozen, then dropped, as the decoder does.
        let mut read = again;
        read.extend_from_slice(&[1; 3000]);
        let frame = read.split_to(3000).freeze();
        drop(frame);
        give(read);
        let third = take(4096);
        assert_eq!((third.as_ptr(), third.capacity() >= 4096), (ptr, true));
        // A frame still held elsewhere keeps its bytes: only the room after it is kept.
        let mut held = third;
        held.extend_from_slice(&[2; 3500]);
        let frame = held.split_to(3500).freeze();
        give(held);
        assert!(take(2048).as_ptr() != ptr);
        assert_eq!(frame.len(), 3500);
    }

    #[test]
    fn take_within_takes_only_a_buffer_of_that_size() {
        FREE.with_borrow_mut(|f| f.clear());
        give(BytesMut::with_capacity(65536));
        assert!(take_within(1024, 4096).is_none(), "too large");
        give(BytesMut::with_capacity(4096));
        let b = take_within(1024, 4096).expect("the 4 KiB one");
        assert_eq!(b.capacity(), 4096);
        assert!(take_within(1024, 4096).is_none());
        assert!(take_within(32768, 65536).is_some());
    }

    #[test]
    fn the_smallest_fitting_buffer_is_taken_and_a_full_pool_keeps_the_larger() {
        FREE.with_borrow_mut(|f| f.clear());
        for _ in 0..KEEP {
            give(BytesMut::with_capacity(4096));
        }
        let big = BytesMut::with_capacity(65536);
        let big_ptr = big.as_ptr();
        give(big);
        assert_eq!(FREE.with_borrow(|f| f.len()), KEEP);
        // A small request leaves the large buffer for a large one.
        assert_eq!(take(2048).capacity(), 4096);
        assert_eq!(take(32768).as_ptr(), big_ptr);
        // A smaller buffer does not displace a larger one from a full pool.
        FREE.with_borrow_mut(|f| f.clear());
        for _ in 0..KEEP {
            give(BytesMut::with_capacity(8192));
        }
        give(BytesMut::with_capacity(2048));
        assert!(FREE.with_borrow(|f| f.iter().all(|b| b.capacity() == 8192)));
    }

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

    #[test]
    fn the_room_found_is_the_largest_reclaimable_power_of_two() {
        use bytes::Buf;
        // What `give` keeps, against trying each size from the largest down.
        let linear = |buf: &mut BytesMut| {
            let mut room = LARGEST;
            while room >= SMALLEST && !buf.try_reclaim(room) {
                room /= 2;
            }
            buf.capacity()
        };
        let halving = |buf: &mut BytesMut| {
            reclaim(buf);
            buf.capacity()
        };
        for cap in [
            16,
            256,
            1000,
            1024,
            4096,
            5000,
            65536,
            300_000,
            LARGEST,
            LARGEST * 2,
        ] {
            for advanced in [0, 1, cap / 2, cap.saturating_sub(1), cap] {
                let make = || {
                    let mut b = BytesMut::with_capacity(cap);
                    b.extend_from_slice(&vec![1; advanced]);
                    b.advance(advanced);
                    b.clear();
                    b
                };
                let (mut a, mut b) = (make(), make());
                assert_eq!(linear(&mut a), halving(&mut b), "{cap} {advanced}");
            }
        }
    }
}
