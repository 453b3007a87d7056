//! Load averages as Mosquitto publishes them under `$SYS/broker/load/...`: a count's rate
//! per minute over the last interval, folded into exponentially decaying averages over
//! 1, 5 and 15 minutes (as a Unix load average decays). With a steady rate `r` every
//! average tends to `r`; after the traffic stops each decays towards 0, the 1-minute one
//! fastest.

/// The windows, seconds, and the topic suffix of each.
pub const WINDOWS: [(f64, &str); 3] = [(60.0, "1min"), (300.0, "5min"), (900.0, "15min")];

/// One count's three averages, events per minute.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Load {
    pub averages: [f64; 3],
}

impl Load {
    /// Folds in `delta` events counted over the last `seconds` (the interval actually
    /// elapsed, which may differ from `sys_interval` when the runtime is busy).
    pub fn update(&mut self, delta: u64, seconds: f64) {
        if seconds <= 0.0 {
            return;
        }
        let rate = delta as f64 * 60.0 / seconds;
        for (avg, (window, _)) in self.averages.iter_mut().zip(WINDOWS) {
            // The old average keeps the weight exp(-t/window): after one window's worth
            // of intervals it has faded to 1/e.
            let keep = (-seconds / window).exp();
            *avg = rate + keep * (*avg - rate);
        }
    }

    /// The value as published: two decimals, as Mosquitto's `%.2f`.
    pub fn text(value: f64) -> String {
        format!("{value:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_rate_is_approached_by_every_average_the_short_one_first() {
        let mut l = Load::default();
        // 100 events every 10 s: 600 per minute.
        for _ in 0..6 {
            l.update(100, 10.0);
        }
        let [one, five, fifteen] = l.averages;
        assert!(one > five && five > fifteen && fifteen > 0.0, "{l:?}");
        // After one minute the 1-minute average has covered 1 - 1/e of the way.
        let expected = 600.0 * (1.0 - (-1.0f64).exp());
        assert!((one - expected).abs() < 1e-9, "{one} vs {expected}");
        // Ten hours on, the 15-minute one too.
        for _ in 0..3600 {
            l.update(100, 10.0);
        }
        for avg in l.averages {
            assert!((avg - 600.0).abs() < 1e-6, "{l:?}");
        }
    }

    #[test]
    fn averages_decay_towards_zero_when_traffic_stops() {
        let mut l = Load {
            averages: [600.0; 3],
        };
        l.update(0, 60.0);
        assert!((l.averages[0] - 600.0 / std::f64::consts::E).abs() < 1e-9);
        assert!(l.averages[0] < l.averages[1] && l.averages[1] < l.averages[2]);
    }

    #[test]
    fn the_rate_is_per_minute_whatever_the_interval() {
        let mut a = Load::default();
        let mut b = Load::default();
        // The same rate (120 per minute), sampled every 1 s or every 30 s, for 5 minutes.
        for _ in 0..300 {
            a.update(2, 1.0);
        }
        for _ in 0..10 {
            b.update(60, 30.0);
        }
        for (x, y) in a.averages.iter().zip(b.averages) {
            assert!((x - y).abs() < 1e-9, "{a:?} {b:?}");
        }
    }

    #[test]
    fn no_elapsed_time_changes_nothing() {
        let mut l = Load {
            averages: [1.0, 2.0, 3.0],
        };
        l.update(1000, 0.0);
        assert_eq!(l.averages, [1.0, 2.0, 3.0]);
        assert_eq!(Load::text(1.0 / 3.0), "0.33");
        assert_eq!(Load::text(0.0), "0.00");
    }
}
