//! The adaptive lookahead: how far ahead a dispatcher creates executions so that a burst of
//! fire times is in before the fire time.
//!
//! A pass that creates rows measures how long it took per cron that was due when it began
//! (wall time, the database included; the crons counted are all those due within
//! `max_lookahead_seconds`, whichever dispatcher takes them). The lookahead is then
//! `lookahead_seconds` plus 1.5 times what the crons due now would take at that pace,
//! rounded up to a power of two seconds (nothing under a quarter second) and bounded by
//! `max_lookahead_seconds`. Dispatchers sharing a pass measure the same time for the same
//! crons, so they keep waking at the same moment and keep sharing; rounding keeps the
//! lookahead steady from minute to minute. One left alone measures its longer passes and
//! starts earlier.

use std::time::Duration;

/// Before any measurement: 10,000 crons a second, slower than any database measured.
const INITIAL_SECONDS_PER_CRON: f64 = 100e-6;
/// Passes creating fewer rows than this measure their overhead, not a pace.
const MIN_ROWS_TO_MEASURE: u64 = 200;
/// Headroom on the expected creation time.
const SAFETY: f64 = 1.5;
/// Expected creation times under half of this add nothing (a few crons: dispatchers wake
/// exactly at `lookahead_seconds`); above, the extra is at least this.
const SMALLEST_EXTRA_SECONDS: f64 = 0.5;

#[derive(Debug, Clone)]
pub(super) struct Pace {
    base: chrono::Duration,
    max: chrono::Duration,
    seconds_per_cron: f64,
    measured: bool,
}

impl Pace {
    pub fn new(base: chrono::Duration, max: chrono::Duration) -> Pace {
        Pace {
            base,
            max: max.max(base),
            seconds_per_cron: INITIAL_SECONDS_PER_CRON,
            measured: false,
        }
    }

    /// The lookahead when `due_soon` crons are due within the maximum.
    pub fn lookahead(&self, due_soon: i64) -> chrono::Duration {
        let expected = SAFETY * self.seconds_per_cron * due_soon.max(0) as f64;
        let extra = if expected < SMALLEST_EXTRA_SECONDS / 2.0 {
            0.0
        } else {
            let mut extra = SMALLEST_EXTRA_SECONDS;
            while extra < expected {
                extra *= 2.0;
            }
            extra
        };
        let room = (self.max - self.base).num_milliseconds() as f64 / 1000.0;
        let extra = extra.min(room.max(0.0));
        self.base + chrono::Duration::milliseconds((extra * 1000.0) as i64)
    }

    /// Records a pass that began with `due` crons due and created `rows` in `elapsed`.
    pub fn record(&mut self, due: i64, rows: u64, elapsed: Duration) {
        if rows < MIN_ROWS_TO_MEASURE || due <= 0 {
            return;
        }
        let measured = elapsed.as_secs_f64() / due as f64;
        self.seconds_per_cron = if self.measured {
            0.5 * self.seconds_per_cron + 0.5 * measured
        } else {
            measured
        };
        self.measured = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> chrono::Duration {
        chrono::Duration::milliseconds((s * 1000.0) as i64)
    }

    #[test]
    fn a_few_crons_get_the_configured_lookahead() {
        let mut pace = Pace::new(secs(5.0), secs(60.0));
        assert_eq!(pace.lookahead(0), secs(5.0));
        assert_eq!(pace.lookahead(1000), secs(5.0));
        // 400 crons in 80 ms: 0.05 s expected, nothing added.
        pace.record(400, 400, Duration::from_millis(80));
        assert_eq!(pace.lookahead(400), secs(5.0));
    }

    #[test]
    fn a_burst_gets_room_for_its_creation_rounded_up_and_bounded() {
        let mut pace = Pace::new(secs(5.0), secs(60.0));
        // Unmeasured: 100 µs a cron, 1.5 x 10,000 crons = 1.5 s, rounded up to 2 s.
        assert_eq!(pace.lookahead(10_000), secs(7.0));
        // Measured at 40 µs a cron: 100,000 crons, 6 s expected, 8 s of room.
        pace.record(10_000, 10_000, Duration::from_millis(400));
        assert_eq!(pace.lookahead(100_000), secs(13.0));
        // A pass creating a few rows, or none (another dispatcher took the crons), does
        // not change the pace.
        pace.record(10_000, 10, Duration::from_secs(10));
        pace.record(10_000, 0, Duration::from_secs(10));
        assert_eq!(pace.lookahead(100_000), secs(13.0));
        // Never more than the maximum.
        assert_eq!(pace.lookahead(100_000_000), secs(60.0));
        let fixed = Pace::new(secs(5.0), secs(1.0));
        assert_eq!(fixed.lookahead(100_000_000), secs(5.0));
    }

    #[test]
    fn the_pace_follows_later_passes() {
        let mut pace = Pace::new(secs(5.0), secs(60.0));
        pace.record(1000, 1000, Duration::from_millis(100));
        pace.record(1000, 2000, Duration::from_millis(300));
        // (100 + 300) / 2 µs a cron.
        assert!((pace.seconds_per_cron - 200e-6).abs() < 1e-9);
    }
}
