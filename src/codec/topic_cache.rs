//! PUBLISH topic names, shared between the messages that carry the same one.
//!
//! A device publishes to the same few topics over and over, and each PUBLISH used to
//! cost its topic a UTF-8 check, an allocation and a copy, and later a free, usually on
//! another thread (the subscriber's), which is glibc's slowest path: together about 450
//! instructions of the 4,400 a fan-in QoS 1 message cost (callgrind). Each thread keeps
//! the topic names it decoded last in a small direct-mapped table; a name whose bytes
//! equal an entry's is that entry, shared (`Arc<str>`): its bytes were checked when it
//! went in, and identical bytes pass the same checks.
//!
//! The table is bounded: [`SLOTS`] entries of names up to [`MAX_LEN`] bytes, about 37 KiB
//! per thread at most, not counted towards `memory_limit` (a message still counts its
//! topic's bytes in full, as if it held them alone). Any name, a hostile client's
//! included, only ever replaces one entry.

use std::cell::RefCell;
use std::hash::BuildHasher;
use std::sync::Arc;

use super::DecodeError;

/// Entries per thread (a power of two).
const SLOTS: usize = 256;
/// Longer names are not kept (they are checked and allocated every time, as before).
const MAX_LEN: usize = 128;

thread_local! {
    static TABLE: RefCell<[Option<Arc<str>>; SLOTS]> = const { RefCell::new([const { None }; SLOTS]) };
}

/// The topic name `raw`, checked by `check` unless identical bytes were checked before on
/// this thread.
pub(super) fn intern<'a>(
    raw: &'a [u8],
    check: impl FnOnce(&'a [u8]) -> Result<&'a str, DecodeError>,
) -> Result<Arc<str>, DecodeError> {
    if raw.len() > MAX_LEN {
        return check(raw).map(Arc::from);
    }
    // A fixed seed: which slot a name takes is no secret worth keeping (the worst a
    // client can do is make its own names miss, which costs what no table costs).
    let slot =
        foldhash::fast::FixedState::with_seed(0x006d_6964_6765).hash_one(raw) as usize % SLOTS;
    TABLE.with(|table| {
        let mut table = table.borrow_mut();
        if let Some(hit) = &table[slot] {
            if hit.as_bytes() == raw {
                return Ok(Arc::clone(hit));
            }
        }
        let name: Arc<str> = Arc::from(check(raw)?);
        table[slot] = Some(Arc::clone(&name));
        Ok(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(raw: &[u8]) -> Result<&str, DecodeError> {
        std::str::from_utf8(raw).map_err(|_| DecodeError::Malformed("bad"))
    }

    #[test]
    fn the_same_bytes_give_the_same_name_checked_once() {
        let a = intern(b"plant/1/temp", plain).unwrap();
        let mut checked = false;
        let b = intern(b"plant/1/temp", |raw| {
            checked = true;
            plain(raw)
        })
        .unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!checked, "a name seen before is not checked again");
    }

    #[test]
    fn different_bytes_never_share_an_entry() {
        for i in 0..2 * SLOTS {
            let t = format!("t/{i}");
            assert_eq!(&*intern(t.as_bytes(), plain).unwrap(), t);
        }
        // Every one again, whatever it evicted: always the right name.
        for i in 0..2 * SLOTS {
            let t = format!("t/{i}");
            assert_eq!(&*intern(t.as_bytes(), plain).unwrap(), t);
        }
    }

    #[test]
    fn a_name_that_fails_its_check_is_refused_and_not_kept() {
        assert!(intern(b"bad\xff", plain).is_err());
        assert!(
            intern(b"bad\xff", plain).is_err(),
            "still checked the second time"
        );
    }

    #[test]
    fn long_names_are_checked_every_time() {
        let long = vec![b'a'; MAX_LEN + 1];
        let a = intern(&long, plain).unwrap();
        let b = intern(&long, plain).unwrap();
        assert_eq!(a, b);
        assert!(!Arc::ptr_eq(&a, &b));
        let mut checked = false;
        intern(&long, |raw| {
            checked = true;
            plain(raw)
        })
        .unwrap();
        assert!(checked);
    }
}
