//! Unit tests of the inflight window's storage: the ring of packet ids, the hash map
//! beside it, and that together they behave as one map.

use std::collections::HashMap;

use super::{PkidMap, SLACK};

#[test]
fn in_order_ids_stay_in_the_ring_and_acks_empty_it() {
    let mut m = PkidMap::default();
    for id in 1..=1000u16 {
        assert_eq!(m.insert(id, id), None);
    }
    assert_eq!(m.len(), 1000);
    assert_eq!(m.shape(), (1000, 0));
    for id in 1..=1000u16 {
        assert_eq!(m.get(&id), Some(&id));
        assert_eq!(m.remove(&id), Some(id));
        assert_eq!(m.remove(&id), None, "removed once");
    }
    assert!(m.is_empty());
    assert_eq!(m.shape(), (0, 0));
}

#[test]
fn ids_wrap_past_65535_to_1() {
    let mut m = PkidMap::default();
    for id in [65_533u16, 65_534, 65_535, 1, 2] {
        m.insert(id, u32::from(id));
    }
    assert_eq!(m.shape(), (5, 0), "one run of slots across the wrap");
    assert_eq!(m.get(&1), Some(&1));
    assert_eq!(m.get(&65_535), Some(&65_535));
    assert_eq!(m.get(&0), None, "0 is no id, and no slot");
    assert_eq!(m.get(&3), None);
    let mut ids: Vec<u16> = m.keys().collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 65_533, 65_534, 65_535]);
    assert_eq!(m.remove(&65_533), Some(65_533));
    assert_eq!(m.remove(&65_534), Some(65_534));
    assert_eq!(m.remove(&65_535), Some(65_535));
    assert_eq!(m.shape(), (2, 0));
    assert_eq!(m.remove(&1), Some(1));
    assert_eq!(m.remove(&2), Some(2));
    assert!(m.is_empty());
}

#[test]
fn acks_out_of_order_leave_holes_that_are_popped_once_the_front_goes() {
    let mut m = PkidMap::default();
    for id in 1..=10u16 {
        m.insert(id, id);
    }
    for id in [2u16, 5, 10, 9] {
        assert_eq!(m.remove(&id), Some(id));
    }
    assert_eq!(
        m.shape(),
        (8, 0),
        "the trailing holes went, the inner ones stay"
    );
    assert_eq!(m.get(&5), None);
    assert_eq!(m.remove(&1), Some(1));
    assert_eq!(m.shape(), (6, 0), "base moves past 1 and the hole at 2");
    assert_eq!(m.get(&3), Some(&3));
    assert!(m.contains_key(&8));
    assert!(!m.contains_key(&9));
}

#[test]
fn a_stuck_entry_moves_to_the_hash_map_and_is_still_found() {
    let mut m = PkidMap::default();
    m.insert(1u16, 1u16);
    // Many more go out and are acknowledged; 1 never is.
    for id in 2..=5000u16 {
        m.insert(id, id);
        assert_eq!(m.remove(&id), Some(id));
        let (slots, _) = m.shape();
        assert!(
            slots <= 2 * m.len() + SLACK,
            "ring stays dense: {slots} slots"
        );
    }
    assert_eq!(m.shape(), (0, 1), "1 went to the hash map");
    assert_eq!(m.get(&1), Some(&1));
    m.insert(5001, 5001);
    assert_eq!(m.shape(), (1, 1));
    *m.get_mut(&1).expect("still there") = 7; // ok: unit test
    assert_eq!(m.remove(&1), Some(7));
    assert_eq!(m.remove(&5001), Some(5001));
    assert!(m.is_empty());
}

#[test]
fn an_id_behind_the_ring_goes_to_the_hash_map() {
    let mut m = PkidMap::default();
    for id in 100..110u16 {
        m.insert(id, id);
    }
    m.insert(50, 50);
    assert_eq!(m.shape(), (10, 1));
    assert_eq!(m.get(&50), Some(&50));
    assert_eq!(m.insert(50, 51), Some(50), "replaced, not doubled");
    assert_eq!(m.len(), 11);
}

#[test]
fn an_id_the_hash_map_holds_is_moved_not_doubled_when_the_ring_reaches_it() {
    let mut m = PkidMap::default();
    for id in 100..110u16 {
        m.insert(id, id);
    }
    m.insert(120, 120);
    m.insert(50, 50);
    // The ring grows over 50 (ids wrapped around): inserting it again replaces it.
    m.remove(&100);
    assert_eq!(m.insert(50, 500), Some(50));
    assert_eq!(m.get(&50), Some(&500));
    assert_eq!(m.len(), 11);
    assert_eq!(m.remove(&50), Some(500));
    assert_eq!(m.get(&50), None);
}

#[test]
fn discard_if_drops_only_what_is_wanted_after_showing_it() {
    let mut m = PkidMap::default();
    for id in 1..=4u16 {
        m.insert(id, std::rc::Rc::new(id));
    }
    let kept = m.get(&1).cloned().expect("1 is there"); // ok: unit test
    let mut seen = Vec::new();
    assert!(
        !m.discard_if(&1, |v| **v == 9, |v| seen.push(**v)),
        "not wanted"
    );
    assert!(
        m.discard_if(&1, |v| **v == 1, |v| seen.push(**v)),
        "the oldest"
    );
    assert_eq!(
        std::rc::Rc::strong_count(&kept),
        1,
        "dropped, not kept anywhere"
    );
    assert!(
        m.discard_if(&3, |_| true, |v| seen.push(**v)),
        "one in the middle"
    );
    assert!(
        !m.discard_if(&3, |_| true, |v| seen.push(**v)),
        "gone already"
    );
    assert!(
        !m.discard_if(&7, |_| true, |v| seen.push(**v)),
        "never there"
    );
    assert_eq!(seen, [1, 3]);
    assert_eq!(m.len(), 2);
    assert!(m.discard_if(&2, |_| true, |_| {}));
    assert_eq!(m.shape(), (1, 0), "the front moved past the hole at 3");
}

#[test]
fn replace_and_get_mut() {
    let mut m = PkidMap::default();
    m.insert(3u16, "a");
    m.insert(4, "b");
    assert_eq!(m.insert(3, "c"), Some("a"));
    assert_eq!(m.len(), 2);
    *m.get_mut(&4).expect("there") = "d"; // ok: unit test
    for v in m.values_mut() {
        if *v == "c" {
            *v = "e";
        }
    }
    let mut all: Vec<(u16, &str)> = m.iter().map(|(k, v)| (k, *v)).collect();
    all.sort_unstable();
    assert_eq!(all, [(3, "e"), (4, "d")]);
    assert_eq!(m.get_mut(&5), None);
    m.clear();
    assert!(m.is_empty());
    assert_eq!(m.shape(), (0, 0));
}

#[test]
fn zero_is_kept_apart_and_never_aliases_a_slot() {
    let mut m = PkidMap::default();
    m.insert(65_535u16, 1);
    m.insert(1, 2);
    assert_eq!(m.get(&0), None);
    m.insert(0, 3);
    assert_eq!(m.get(&0), Some(&3));
    assert_eq!(m.remove(&0), Some(3));
    assert_eq!(m.len(), 2);
}

/// The ring and the hash map together behave as one map, under a random mix of
/// sequential inserts (as `alloc_pkid` makes them), acknowledgements in and out of
/// order, and out-of-order inserts (as a restore makes them).
#[test]
fn behaves_as_a_hash_map_under_random_operations() {
    let mut m = PkidMap::default();
    let mut model: HashMap<u16, u64> = HashMap::new();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut next_id = 0u16;
    for step in 0..200_000u64 {
        let r = next();
        match r % 10 {
            0..=3 if model.len() < 3000 => {
                // The next free id, as alloc_pkid hands them out.
                loop {
                    next_id = next_id.wrapping_add(1);
                    if next_id != 0 && !model.contains_key(&next_id) {
                        break;
                    }
                }
                assert_eq!(m.insert(next_id, step), model.insert(next_id, step));
            }
            4 => {
                let id = (next() % 65_536) as u16;
                assert_eq!(m.insert(id, step), model.insert(id, step));
            }
            5..=7 => {
                // Mostly the oldest-ish: an id a little behind the newest.
                let id = next_id.wrapping_sub((next() % 1200) as u16);
                if r % 3 == 0 {
                    let odd = |v: &u64| v % 2 == 1;
                    let want = model.get(&id).copied().filter(odd);
                    if want.is_some() {
                        model.remove(&id);
                    }
                    let mut seen = None;
                    let discarded = m.discard_if(&id, odd, |v| seen = Some(*v));
                    assert_eq!(discarded, want.is_some());
                    assert_eq!(seen, want);
                } else {
                    assert_eq!(m.remove(&id), model.remove(&id));
                }
            }
            8 => {
                let id = (next() % 65_536) as u16;
                assert_eq!(m.remove(&id), model.remove(&id));
            }
            _ => {
                let id = next_id.wrapping_sub((next() % 2000) as u16);
                assert_eq!(m.get(&id), model.get(&id));
                assert_eq!(m.get_mut(&id).copied(), model.get(&id).copied());
            }
        }
        assert_eq!(m.len(), model.len());
        let (slots, _) = m.shape();
        assert!(
            slots <= 2 * m.len() + SLACK,
            "{slots} slots for {}",
            m.len()
        );
        if step % 10_000 == 0 {
            let mut all: Vec<(u16, u64)> = m.iter().map(|(k, v)| (k, *v)).collect();
            all.sort_unstable();
            let mut want: Vec<(u16, u64)> = model.iter().map(|(k, v)| (*k, *v)).collect();
            want.sort_unstable();
            assert_eq!(all, want);
        }
    }
}
