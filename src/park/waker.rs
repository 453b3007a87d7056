//! The waker a parked value leaves where it waits to be woken (for a connection, its
//! session's wake slot): one machine word naming the lot and the value's [`Key`], and
//! no allocation. Waking it puts the key on its lot's ready list.
//!
//! The word is `lot << 48 | generation << 32 | index`, so this needs 64-bit pointers
//! (the module is only built there). The lot is found by its number in a process-wide
//! table, as a waker has no room for a pointer beside the key; a lot leaves the table
//! when it is dropped, and a waker of a lot that is gone does nothing.

use std::sync::{Arc, Weak};
use std::task::{RawWaker, RawWakerVTable, Waker};

use parking_lot::RwLock;

use super::slab::Key;

/// What a waker reaches: the lot's ready list.
pub trait Ready: Send + Sync {
    fn ready(&self, key: Key);
}

/// Every lot of the process, by number (one per running server: one, outside tests).
static LOTS: RwLock<Vec<Option<Weak<dyn Ready>>>> = RwLock::new(Vec::new());

/// A lot's place in [`LOTS`], given up on drop.
pub struct Registration(u16);

impl Registration {
    pub fn id(&self) -> u16 {
        self.0
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(slot) = LOTS.write().get_mut(usize::from(self.0)) {
            *slot = None;
        }
    }
}

/// Gives `lot` a number; `None` when 65,536 lots are alive at once.
pub fn register(lot: Weak<dyn Ready>) -> Option<Registration> {
    let mut lots = LOTS.write();
    // A free number is reused: a waker still held for the lot that had it (none should
    // be: see the module) could then at worst resume a value for nothing.
    if let Some(i) = lots.iter().position(Option::is_none) {
        lots[i] = Some(lot);
        return u16::try_from(i).ok().map(Registration);
    }
    let i = u16::try_from(lots.len()).ok()?;
    lots.push(Some(lot));
    Some(Registration(i))
}

fn encode(lot: u16, key: Key) -> usize {
    let word = u64::from(lot) << 48 | key.to_bits();
    // Lossless: the module is built for 64-bit pointers only.
    word as usize
}

fn decode(word: usize) -> (u16, Key) {
    let word = word as u64;
    ((word >> 48) as u16, Key::from_bits(word))
}

/// The waker that puts `key` on the ready list of lot number `lot`.
pub fn waker(lot: u16, key: Key) -> Waker {
    let data = std::ptr::without_provenance::<()>(encode(lot, key));
    // SAFETY: `Waker::from_raw` asks that the vtable's functions keep the `RawWaker`
    // contract for this data on any thread. The data is an integer made into a pointer
    // without provenance, never dereferenced: `clone` copies it, `drop` has nothing to
    // free, and `wake`/`wake_by_ref` decode it and look the lot up in `LOTS` behind its
    // lock, taking a strong reference only if the lot is still alive. Every function is
    // therefore sound for any data value, from any thread, any number of times, in any
    // order; nothing is owned, so no clone or drop can be unbalanced.
    unsafe { Waker::from_raw(RawWaker::new(data, &VTABLE)) }
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake, drop);

fn clone(data: *const ()) -> RawWaker {
    RawWaker::new(data, &VTABLE)
}

fn wake(data: *const ()) {
    let (lot, key) = decode(data.addr());
    // Cloned out so that the lot's lock is taken outside the table's.
    let lot: Option<Arc<dyn Ready>> = LOTS
        .read()
        .get(usize::from(lot))
        .and_then(|slot| slot.as_ref())
        .and_then(Weak::upgrade);
    if let Some(lot) = lot {
        lot.ready(key);
    }
}

fn drop(_: *const ()) {}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    #[derive(Default)]
    struct Seen(Mutex<Vec<Key>>);

    impl Ready for Seen {
        fn ready(&self, key: Key) {
            self.0.lock().push(key);
        }
    }

    #[test]
    fn the_word_holds_lot_index_and_generation() {
        let key = Key {
            index: u32::MAX - 1,
            generation: 0xBEEF,
        };
        assert_eq!(decode(encode(0xFFFF, key)), (0xFFFF, key));
        let key = Key {
            index: 7,
            generation: 0,
        };
        assert_eq!(decode(encode(3, key)), (3, key));
    }

    #[test]
    fn waking_puts_the_key_on_its_lots_list() {
        let seen = Arc::new(Seen::default());
        let reg = register(Arc::downgrade(&seen) as Weak<dyn Ready>).unwrap(); // ok: unit test
        let key = Key {
            index: 42,
            generation: 9,
        };
        let w = waker(reg.id(), key);
        let w2 = w.clone();
        assert!(w.will_wake(&w2), "a clone is the same waker");
        w2.wake_by_ref();
        w2.wake();
        std::thread::spawn(move || w.wake()).join().unwrap(); // ok: unit test
        assert_eq!(*seen.0.lock(), vec![key, key, key]);
    }

    #[test]
    fn a_waker_of_a_dropped_lot_does_nothing() {
        let seen = Arc::new(Seen::default());
        let reg = register(Arc::downgrade(&seen) as Weak<dyn Ready>).unwrap(); // ok: unit test
        let w = waker(
            reg.id(),
            Key {
                index: 1,
                generation: 1,
            },
        );
        std::mem::drop(reg);
        w.wake_by_ref();
        assert!(seen.0.lock().is_empty(), "the lot left the table");
        std::mem::drop(seen);
        w.wake();
    }
}
