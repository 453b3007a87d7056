//! Log lines an attacker can cause: at most one per interval per call site, and fields
//! an attacker chose (client ids, usernames, topics) cut to a readable length.
//!
//! A hostile client must not be able to fill the operator's disk or drown the log by
//! repeating what makes midge complain, so every "limit hit" line goes through a
//! [`LogLimit`] kept in a `static` at its call site.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// Longest attacker-chosen field written to a log line, in bytes.
pub const MAX_LOGGED_FIELD: usize = 64;

/// One log line per `interval_ms` at one call site; the lines held back in between are
/// counted and reported with the next one.
pub struct LogLimit {
    interval_ms: u64,
    /// Milliseconds since [`epoch`] of the last line written, plus one (0: never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimit {
    pub const fn new(interval_ms: u64) -> LogLimit {
        LogLimit {
            interval_ms,
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when a line may be written now, else
    /// `None` (and this one is counted as held back).
    pub fn allow(&self) -> Option<u64> {
        let now = epoch().elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < self.interval_ms {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        // One winner when many hit the limit at the same instant.
        if self
            .last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// `s` cut to [`MAX_LOGGED_FIELD`] bytes (on a character boundary), with the original
/// length noted when cut.
pub fn field(s: &str) -> Cow<'_, str> {
    if s.len() <= MAX_LOGGED_FIELD {
        return Cow::Borrowed(s);
    }
    let mut end = MAX_LOGGED_FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…({} bytes)", &s[..end], s.len()))
}

/// A string logged as `?value` (`Debug`: quoted, escaped), as `str`'s `Debug` writes it,
/// for a fraction of the instructions when it needs no escape: `str`'s `Debug` looks at
/// each character in turn and hands each to the writer (~300 instructions for a client
/// id of a dozen characters, twice per connection at `log_level = "info"`). Same text
/// for every log format (the JSON one records a `Debug` value as its text as well).
pub struct Quoted<'a>(pub &'a str);

impl std::fmt::Debug for Quoted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        // What `str`'s `Debug` writes as it is: printable ASCII but `"` and `\`. No
        // early exit: the compiler checks many bytes at a time.
        let plain = !self.0.bytes().fold(false, |escape, b| {
            escape | !(b' '..=b'~').contains(&b) | (b == b'"') | (b == b'\\')
        });
        if !plain {
            return std::fmt::Debug::fmt(self.0, f);
        }
        f.write_char('"')?;
        f.write_str(self.0)?;
        f.write_char('"')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_rest_counted() {
        let limit = LogLimit::new(60_000);
        assert_eq!(limit.allow(), Some(0));
        assert_eq!(limit.allow(), None);
        assert_eq!(limit.allow(), None);
        assert_eq!(limit.suppressed.load(Ordering::Relaxed), 2);
        let open = LogLimit::new(0);
        assert_eq!(open.allow(), Some(0));
        assert_eq!(open.allow(), Some(0));
    }

    #[test]
    fn quoted_is_what_str_debug_writes() {
        for s in [
            "",
            "bench-conn-42",
            "with space and 'quote'",
            "a\"b",
            "back\\slash",
            "tab\there",
            "nl\n",
            "\x1b[31m",
            "é",
            "\u{9b}",
            "~!@#$%^&*()_+{}|:<>?",
        ] {
            assert_eq!(format!("{:?}", Quoted(s)), format!("{s:?}"), "{s}");
        }
    }

    #[test]
    fn long_fields_are_cut_on_a_char_boundary() {
        assert_eq!(field("short"), "short");
        let long = "é".repeat(100);
        let cut = field(&long);
        assert!(cut.starts_with(&"é".repeat(32)));
        assert!(cut.ends_with("…(200 bytes)"));
        assert!(cut.len() < 100);
    }
}
