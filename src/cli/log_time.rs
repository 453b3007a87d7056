//! The timestamp at the head of a text log line, as tracing-subscriber's default timer
//! writes it (UTC, RFC 3339 with microseconds: `2026-12-03T13:21:47.735409Z`), without
//! `core::fmt`: the date and the time of day change once a second, so the thread that
//! writes lines keeps the `2026-12-03T13:21:47.` of the last second it wrote, and a line
//! costs its six digits of microseconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// `YYYY-MM-DDTHH:MM:SS.`
const PREFIX: usize = 20;

/// The last second after 1970 that has a four-digit year (9999-12-31T23:59:59Z).
const LAST_FOUR_DIGIT_SECOND: u64 = 253_402_300_799;

/// The prefix of the second last written.
pub struct TimeCache {
    second: u64,
    prefix: String,
}

impl TimeCache {
    pub const fn new() -> TimeCache {
        TimeCache {
            second: u64::MAX,
            prefix: String::new(),
        }
    }

    /// Appends `time` as `YYYY-MM-DDTHH:MM:SS.ffffffZ` to `out`; false (and nothing
    /// appended) for a time before 1970 or after the year 9999, which tracing-subscriber
    /// writes in other forms.
    pub fn write(&mut self, time: SystemTime, out: &mut String) -> bool {
        let Ok(since) = time.duration_since(UNIX_EPOCH) else {
            return false;
        };
        let secs = since.as_secs();
        if secs > LAST_FOUR_DIGIT_SECOND {
            return false;
        }
        if secs != self.second {
            self.prefix.clear();
            self.prefix
                .extend(second_prefix(secs).into_iter().map(char::from));
            self.second = secs;
        }
        out.push_str(&self.prefix);
        let mut micros = [0; 6];
        digits(&mut micros, u64::from(since.subsec_micros()));
        out.extend(micros.into_iter().map(char::from));
        out.push('Z');
        true
    }
}

/// `YYYY-MM-DDTHH:MM:SS.` of `secs` after 1970 (at most [`LAST_FOUR_DIGIT_SECOND`]).
fn second_prefix(secs: u64) -> [u8; PREFIX] {
    let (year, month, day) = civil_from_days(secs / 86_400);
    let in_day = secs % 86_400;
    let mut p = *b"0000-00-00T00:00:00.";
    digits(&mut p[0..4], year);
    digits(&mut p[5..7], month);
    digits(&mut p[8..10], day);
    digits(&mut p[11..13], in_day / 3600);
    digits(&mut p[14..16], in_day / 60 % 60);
    digits(&mut p[17..19], in_day % 60);
    p
}

/// `n` in decimal, right-aligned and zero-padded to the width of `out` (`n` fits).
fn digits(out: &mut [u8], mut n: u64) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// (year, month, day) of the day `days` after 1970-01-01, in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`, for days after the epoch only).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Days since 0000-03-01: years then start in March, so that the leap day is the
    // last day of a year.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March (0) to February (11).
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(cache: &mut TimeCache, secs: u64, micros: u32) -> Option<String> {
        let time = UNIX_EPOCH + Duration::new(secs, micros * 1000 + 999);
        let mut out = String::from("x");
        cache
            .write(time, &mut out)
            .then(|| out.split_off(1))
            .or_else(|| {
                assert_eq!(out, "x");
                None
            })
    }

    #[test]
    fn formats_as_the_default_timer_does() {
        let c = &mut TimeCache::new();
        assert_eq!(at(c, 0, 0).unwrap(), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            at(c, 951_782_400, 7).unwrap(),
            "2000-02-29T00:00:00.000007Z"
        );
        assert_eq!(
            at(c, 1_796_304_135, 735_409).unwrap(),
            "2026-12-03T13:22:15.735409Z"
        );
        // The same second again, then the next: the prefix is reused, then replaced.
        assert_eq!(
            at(c, 1_796_304_135, 5).unwrap(),
            "2026-12-03T13:22:15.000005Z"
        );
        assert_eq!(
            at(c, 1_796_304_136, 1).unwrap(),
            "2026-12-03T13:22:16.000001Z"
        );
        assert_eq!(
            at(c, LAST_FOUR_DIGIT_SECOND, 999_999).unwrap(),
            "9999-12-31T23:59:59.999999Z"
        );
        assert_eq!(at(c, LAST_FOUR_DIGIT_SECOND + 1, 0), None);
        let mut out = String::new();
        assert!(!c.write(UNIX_EPOCH - Duration::from_secs(1), &mut out));
        assert!(out.is_empty());
    }

    #[test]
    fn every_day_until_2200_follows_the_one_before() {
        let leap =
            |y: u64| y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400));
        let (mut y, mut m, mut d) = (1970, 1, 1);
        for days in 0..84_000 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let month_len = match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > month_len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }
}
