//! A cron's full timetable: its schedule's fire times, the calendar dates on
//! which it does not run, and the jitter that spreads its start times.
//!
//! Jitter is deterministic: the delay of a fire time is a function of the
//! cron's id and the fire instant only, computed with integer arithmetic
//! written out below, so every dispatcher, on every platform and Rust
//! version, plans the same start time.

use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};

use super::Schedule;

/// Why excluded dates or a jitter were refused. Display strings are single
/// lines meant for operators. (A type of its own rather than more
/// [`ScheduleError`](super::ScheduleError) variants, so that matches on
/// that enum stay exhaustive.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimetableError {
    #[error("invalid excluded date {date:?}: {reason}")]
    InvalidExcludedDate { date: String, reason: String },
    #[error("{count} distinct excluded dates given; at most {max} are allowed")]
    TooManyExcludedDates { count: usize, max: usize },
    #[error("jitter of {seconds}s is above the maximum of {max}s (one day)")]
    InvalidJitter { seconds: u32, max: u32 },
}

/// Largest jitter a cron may have: one day.
pub const MAX_JITTER_SECONDS: u32 = 86_400;

/// Most distinct excluded dates a cron may have.
pub const MAX_EXCLUDED_DATES: usize = 1000;

/// `Err(InvalidJitter)` when `seconds` is above [`MAX_JITTER_SECONDS`].
pub fn check_jitter(seconds: u32) -> Result<(), TimetableError> {
    if seconds > MAX_JITTER_SECONDS {
        return Err(TimetableError::InvalidJitter {
            seconds,
            max: MAX_JITTER_SECONDS,
        });
    }
    Ok(())
}

/// Parses excluded dates written `YYYY-MM-DD` (exactly: four-digit year,
/// two-digit month and day). The error names the first bad entry. The
/// result is sorted, duplicates removed, and holds at most
/// [`MAX_EXCLUDED_DATES`] dates.
pub fn parse_excluded_dates(dates: &[String]) -> Result<Vec<NaiveDate>, TimetableError> {
    let mut out = dates
        .iter()
        .map(|text| parse_date(text))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_unstable();
    out.dedup();
    if out.len() > MAX_EXCLUDED_DATES {
        return Err(TimetableError::TooManyExcludedDates {
            count: out.len(),
            max: MAX_EXCLUDED_DATES,
        });
    }
    Ok(out)
}

fn parse_date(text: &str) -> Result<NaiveDate, TimetableError> {
    let invalid = |reason: &str| TimetableError::InvalidExcludedDate {
        date: text.to_string(),
        reason: reason.to_string(),
    };
    let shaped = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    if !shaped {
        return Err(invalid("expected YYYY-MM-DD, such as 2026-12-25"));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| invalid("no such calendar date (expected YYYY-MM-DD)"))
}

/// splitmix64's output function (Steele, Lea and Flood, "Fast splittable
/// pseudorandom number generators", 2014; the constants of Vigna's
/// `splitmix64.c`): a bijection of `u64` whose output bits each depend on
/// every input bit. Wrapping arithmetic only, so it is the same everywhere.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The jitter hash of a fire time: `splitmix64(splitmix64(cron_id) ^ t)`
/// with `cron_id` and the fire's Unix second `t` as two's-complement `u64`.
fn jitter_hash(cron_id: i64, fire_second: i64) -> u64 {
    splitmix64(splitmix64(cron_id as u64) ^ fire_second as u64)
}

/// One planned fire time of a cron.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlannedFire {
    /// The schedule's fire time.
    pub fire_time: DateTime<Utc>,
    /// When the run may start: the fire time plus its jitter delay.
    pub run_at: DateTime<Utc>,
    /// The fire time falls on an excluded date, so it does not run.
    pub excluded: bool,
}

/// A schedule with excluded dates and jitter.
#[derive(Debug, Clone)]
pub struct Timetable {
    schedule: Arc<Schedule>,
    /// Sorted, without duplicates.
    excluded: Vec<NaiveDate>,
    jitter_seconds: u32,
}

impl Timetable {
    /// `excluded` need not be sorted or distinct. Validate `jitter_seconds`
    /// with [`check_jitter`] first; a larger value is read as
    /// [`MAX_JITTER_SECONDS`].
    pub fn new(schedule: Arc<Schedule>, excluded: &[NaiveDate], jitter_seconds: u32) -> Timetable {
        let mut excluded = excluded.to_vec();
        excluded.sort_unstable();
        excluded.dedup();
        Timetable {
            schedule,
            excluded,
            jitter_seconds: jitter_seconds.min(MAX_JITTER_SECONDS),
        }
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The excluded dates, sorted, without duplicates.
    pub fn excluded_dates(&self) -> &[NaiveDate] {
        &self.excluded
    }

    pub fn jitter_seconds(&self) -> u32 {
        self.jitter_seconds
    }

    /// The fire time's local calendar date (in the schedule's zone) is an
    /// excluded date.
    pub fn is_excluded(&self, fire: DateTime<Utc>) -> bool {
        if self.excluded.is_empty() {
            return false;
        }
        let date = fire.with_timezone(&self.schedule.timezone()).date_naive();
        self.excluded.binary_search(&date).is_ok()
    }

    /// When the fire time `fire` of cron `cron_id` may start: `fire` plus a
    /// delay uniform in `[0, jitter]` at millisecond resolution, taken from
    /// a stable hash of `(cron_id, fire.timestamp())`:
    /// `splitmix64(splitmix64(cron_id) ^ fire_second) % (jitter_ms + 1)`
    /// (the modulo bias is below 1e-11). The delay is capped so that the
    /// result stays strictly before the schedule's next fire time. Jitter 0
    /// returns `fire`.
    pub fn run_at(&self, cron_id: i64, fire: DateTime<Utc>) -> DateTime<Utc> {
        self.run_at_before(cron_id, fire, None)
    }

    /// [`Timetable::run_at`], with the next fire time when the caller has it.
    fn run_at_before(
        &self,
        cron_id: i64,
        fire: DateTime<Utc>,
        next: Option<Option<DateTime<Utc>>>,
    ) -> DateTime<Utc> {
        if self.jitter_seconds == 0 {
            return fire;
        }
        let span_ms = u64::from(self.jitter_seconds) * 1000;
        // At most 86,400,000: fits an i64.
        let mut delay_ms = (jitter_hash(cron_id, fire.timestamp()) % (span_ms + 1)) as i64;
        // Fire times are whole seconds apart: a delay under a second from a
        // whole second cannot reach the next one.
        if delay_ms >= 1000 || fire.timestamp_subsec_nanos() != 0 {
            let next = next.unwrap_or_else(|| self.schedule.next_after(fire));
            if let Some(next) = next {
                let room_ms = (next - fire).num_milliseconds() - 1;
                delay_ms = delay_ms.min(room_ms.max(0));
            }
        }
        fire + Duration::milliseconds(delay_ms)
    }

    /// The next `count` fire times strictly after `after`, each with whether
    /// it is excluded and its `run_at` (computed for excluded ones too).
    pub fn preview(&self, cron_id: i64, after: DateTime<Utc>, count: usize) -> Vec<PlannedFire> {
        let mut out = Vec::with_capacity(count.min(1024));
        let mut fires = self.schedule.iter_after(after).peekable();
        while out.len() < count {
            let Some(fire_time) = fires.next() else {
                break;
            };
            let next = self.jitter_seconds.ne(&0).then(|| fires.peek().copied());
            out.push(PlannedFire {
                fire_time,
                run_at: self.run_at_before(cron_id, fire_time, next),
                excluded: self.is_excluded(fire_time),
            });
        }
        out
    }
}
