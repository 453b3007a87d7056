//! When offline sessions end and held-back wills go out: a deadline queue.
//!
//! The sweeper used to walk every session under the sessions lock four times a second to
//! find the few whose time had come; with many idle persistent sessions that is a lot of
//! work for nothing, and it holds up every CONNECT. Here each offline session with an
//! expiry (and each will waiting for its Will Delay Interval) has one entry keyed by its
//! deadline, so the sweeper only looks at the entries that are due: O(log n) per change,
//! O(due) per tick.
//!
//! Entries are removed when what they time is cancelled (the client comes back, the will
//! is sent), so the queue never holds more than one entry per session and kind, whatever a
//! client does. Whoever acts on a due entry still checks the session's own state under its
//! lock: the queue says "look at this session now", the session says whether it is due.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Deserialize;

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// An offline session's Session Expiry Interval runs out.
    Expiry,
    /// A will held back by its Will Delay Interval is due.
    Will,
}

/// Deadlines by (instant, owner, kind). `T` is what to act on (the broker keeps its
/// sessions here); `owner` is a unique number per owner (the session id), so two owners
/// with the same deadline keep one entry each.
pub struct Deadlines<T> {
    entries: Mutex<BTreeMap<(Instant, u64, Kind), T>>,
}

impl<T> Default for Deadlines<T> {
    fn default() -> Self {
        Deadlines {
            entries: Mutex::new(BTreeMap::new()),
        }
    }
}

impl<T> Deadlines<T> {
    /// Moves the `kind` deadline of `owner` from `old` to `new` (either may be `None`).
    /// The caller knows `old`: it is the value it is replacing in the owner's own state.
    pub fn reschedule(
        &self,
        owner: u64,
        kind: Kind,
        old: Option<Instant>,
        new: Option<Instant>,
        value: impl FnOnce() -> T,
    ) {
        if old == new {
            return;
        }
        let mut entries = self.entries.lock();
        if let Some(at) = old {
            entries.remove(&(at, owner, kind));
        }
        if let Some(at) = new {
            entries.insert((at, owner, kind), value());
        }
    }

    /// Takes out every entry due at `now`, earliest first.
    pub fn take_due(&self, now: Instant) -> Vec<(Kind, T)> {
        let mut entries = self.entries.lock();
        // Only the due entries are touched: split off the not-yet-due rest.
        let after_now = (
            Bound::Excluded((now, u64::MAX, Kind::Will)),
            Bound::Unbounded,
        );
        let first_not_due = entries.range(after_now).next().map(|(k, _)| *k);
        let rest = match first_not_due {
            Some(k) => entries.split_off(&k),
            None => BTreeMap::new(),
        };
        let due = std::mem::replace(&mut *entries, rest);
        due.into_iter().map(|((_, _, kind), v)| (kind, v)).collect()
    }

    /// Number of pending deadlines.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How long an offline persistent session is kept, from its Session Expiry Interval
/// (seconds; `u32::MAX` = never) and `persistent_client_expiration`, which bounds the
/// sessions that would otherwise never end (3.1.1 `clean_session = 0`, 5.0 `0xFFFFFFFF`).
/// `None`: kept until the client comes back.
pub fn kept_for(expiry: u32, persistent_client_expiration: Lifetime) -> Option<Duration> {
    if expiry == u32::MAX {
        persistent_client_expiration
            .0
            .map(|secs| Duration::from_secs(u64::from(secs)))
    } else {
        Some(Duration::from_secs(u64::from(expiry)))
    }
}

/// The Session Expiry Interval a 5.0 client asking for `requested` is given: at most
/// `max_session_expiry_interval` (0 = no maximum). `Some` when it differs from the
/// request: the CONNACK then carries the Server's value (5.0 §3.2.2.3.2, unnumbered:
/// the Server uses the property to tell the Client it uses another value).
pub fn granted(requested: u32, max: u32) -> (u32, Option<u32>) {
    if max > 0 && requested > max {
        (max, Some(max))
    } else {
        (requested, None)
    }
}

/// `persistent_client_expiration`: how long a never-expiring session is kept offline,
/// in seconds; `None` = forever. Written as Mosquitto writes it (`"1h"`, `"2d"`, `"1w"`,
/// `"1m"` (30 days), `"1y"` (365 days)), as `"never"`, or as a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime(pub Option<u32>);

impl Default for Lifetime {
    /// 30 days: a device offline for a month is most likely gone; its session is then
    /// dropped instead of being kept for ever (Mosquitto's default is never).
    fn default() -> Self {
        Lifetime(Some(30 * DAY))
    }
}

const HOUR: u32 = 3600;
const DAY: u32 = 24 * HOUR;

/// What `persistent_client_expiration` accepts, for error messages.
pub const LIFETIME_EXPECTED: &str = "a duration such as \"12h\", \"30d\", \"2w\", \"6m\", \"1y\" \
     (Mosquitto's units: s, h, d, w, m = 30 days, y = 365 days), \"never\", or whole seconds";

impl Lifetime {
    /// Parses Mosquitto's duration syntax (see [`Lifetime`]).
    pub fn parse(text: &str) -> Option<Lifetime> {
        let text = text.trim();
        if text == "never" {
            return Some(Lifetime(None));
        }
        let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
            Some(i) => text.split_at(i),
            None => (text, "s"),
        };
        let n: u64 = number.parse().ok()?;
        let unit: u64 = match unit {
            "s" => 1,
            "h" => u64::from(HOUR),
            "d" => u64::from(DAY),
            "w" => 7 * u64::from(DAY),
            "m" => 30 * u64::from(DAY),
            "y" => 365 * u64::from(DAY),
            _ => return None,
        };
        let secs = n.checked_mul(unit)?;
        // u32::MAX means "never" in MQTT; anything from there on is as good as never.
        match secs {
            0 => None,
            s if s >= u64::from(u32::MAX) => Some(Lifetime(None)),
            s => Some(Lifetime(Some(s as u32))),
        }
    }
}

impl<'de> Deserialize<'de> for Lifetime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Lifetime;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(LIFETIME_EXPECTED)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Lifetime, E> {
                u64::try_from(v)
                    .ok()
                    .and_then(|s| Lifetime::parse(&s.to_string()))
                    .ok_or_else(|| E::custom(LIFETIME_EXPECTED))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Lifetime, E> {
                Lifetime::parse(v).ok_or_else(|| E::custom(LIFETIME_EXPECTED))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_due_entries_are_taken_earliest_first() {
        let q = Deadlines::default();
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        q.reschedule(1, Kind::Expiry, None, Some(t0 + 3 * s), || "c");
        q.reschedule(2, Kind::Expiry, None, Some(t0 + s), || "a");
        q.reschedule(3, Kind::Will, None, Some(t0 + 2 * s), || "b");
        assert!(q.take_due(t0).is_empty());
        assert_eq!(
            q.take_due(t0 + 2 * s),
            [(Kind::Expiry, "a"), (Kind::Will, "b")]
        );
        assert_eq!(q.len(), 1);
        assert_eq!(q.take_due(t0 + 10 * s), [(Kind::Expiry, "c")]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_cancelled_or_moved_deadline_leaves_no_entry_behind() {
        let q = Deadlines::default();
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        // A client that disconnects and comes back a thousand times: one entry at most.
        let mut at = None;
        for i in 0..1000u32 {
            let new = Some(t0 + s * (i + 1));
            q.reschedule(7, Kind::Expiry, at, new, || 7);
            at = new;
            assert_eq!(q.len(), 1);
            q.reschedule(7, Kind::Expiry, at, None, || 7);
            at = None;
            assert!(q.is_empty());
        }
        q.reschedule(7, Kind::Expiry, None, Some(t0 + s), || 7);
        q.reschedule(7, Kind::Expiry, Some(t0 + s), Some(t0 + 5 * s), || 7);
        assert!(q.take_due(t0 + 2 * s).is_empty(), "moved later");
        assert_eq!(q.take_due(t0 + 5 * s), [(Kind::Expiry, 7)]);
    }

    #[test]
    fn the_same_instant_for_two_owners_or_two_kinds_keeps_both() {
        let q = Deadlines::default();
        let now = Instant::now();
        let at = Some(now);
        q.reschedule(1, Kind::Expiry, None, at, || 1);
        q.reschedule(2, Kind::Expiry, None, at, || 2);
        q.reschedule(1, Kind::Will, None, at, || 3);
        assert_eq!(q.len(), 3);
        assert_eq!(q.take_due(now).len(), 3);
    }

    #[test]
    fn never_expiring_sessions_are_bounded_by_persistent_client_expiration() {
        let month = Lifetime(Some(30 * DAY));
        assert_eq!(
            kept_for(u32::MAX, month),
            Some(Duration::from_secs(2_592_000))
        );
        assert_eq!(kept_for(u32::MAX, Lifetime(None)), None);
        // An explicit 5.0 interval is the client's, not the operator's fallback.
        assert_eq!(kept_for(60, month), Some(Duration::from_secs(60)));
    }

    #[test]
    fn a_5_0_request_above_the_maximum_is_reduced_and_announced() {
        assert_eq!(granted(u32::MAX, 86400), (86400, Some(86400)));
        assert_eq!(granted(100, 86400), (100, None));
        assert_eq!(granted(u32::MAX, 0), (u32::MAX, None), "0 = no maximum");
    }

    #[test]
    fn mosquitto_duration_syntax() {
        let p = |s| Lifetime::parse(s).map(|l| l.0);
        assert_eq!(p("2s"), Some(Some(2)));
        assert_eq!(p("90"), Some(Some(90)));
        assert_eq!(p("1h"), Some(Some(3600)));
        assert_eq!(p("2d"), Some(Some(172_800)));
        assert_eq!(p("1w"), Some(Some(604_800)));
        assert_eq!(p("1m"), Some(Some(2_592_000)));
        assert_eq!(p("1y"), Some(Some(31_536_000)));
        assert_eq!(p("never"), Some(None));
        assert_eq!(p("200y"), Some(None), "beyond u32::MAX seconds is never");
        for bad in [
            "",
            "0",
            "0d",
            "d",
            "-1d",
            "1x",
            "1.5d",
            "1 d2",
            "99999999999999999999y",
        ] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
        assert_eq!(Lifetime::default().0, Some(2_592_000));
    }
}
