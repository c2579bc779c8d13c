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

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().expect(s)
    }

    fn date(s: &str) -> NaiveDate {
        s.parse().expect(s)
    }

    fn timetable(text: &str, zone: &str, excluded: &[&str], jitter: u32) -> Timetable {
        let schedule = Arc::new(Schedule::parse(text, zone).unwrap());
        let excluded: Vec<NaiveDate> = excluded.iter().map(|d| date(d)).collect();
        Timetable::new(schedule, &excluded, jitter)
    }

    #[test]
    fn excluded_dates_parse_strictly() {
        let dates = |list: &[&str]| {
            parse_excluded_dates(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(
            dates(&["2026-12-25", "2026-01-01", "2026-12-25"]).unwrap(),
            [date("2026-01-01"), date("2026-12-25")]
        );
        assert_eq!(dates(&[]).unwrap(), []);
        assert_eq!(dates(&["2028-02-29"]).unwrap(), [date("2028-02-29")]);
        let bad = [
            ("2026-2-03", "expected YYYY-MM-DD, such as 2026-12-25"),
            ("20260203", "expected YYYY-MM-DD, such as 2026-12-25"),
            (" 2026-02-03", "expected YYYY-MM-DD, such as 2026-12-25"),
            (
                "2026-02-03T00:00:00Z",
                "expected YYYY-MM-DD, such as 2026-12-25",
            ),
            ("", "expected YYYY-MM-DD, such as 2026-12-25"),
            ("2026-02-30", "no such calendar date (expected YYYY-MM-DD)"),
            ("2026-13-01", "no such calendar date (expected YYYY-MM-DD)"),
            ("2027-02-29", "no such calendar date (expected YYYY-MM-DD)"),
        ];
        for (text, reason) in bad {
            let err = dates(&["2026-01-01", text]).unwrap_err();
            assert_eq!(
                err,
                TimetableError::InvalidExcludedDate {
                    date: text.to_string(),
                    reason: reason.to_string()
                }
            );
        }
        assert_eq!(
            dates(&["2026-02-30"]).unwrap_err().to_string(),
            "invalid excluded date \"2026-02-30\": no such calendar date (expected YYYY-MM-DD)"
        );

        let start = date("2026-01-01");
        let distinct = |n: u64| -> Vec<String> {
            (0..n)
                .map(|i| (start + chrono::Days::new(i)).to_string())
                .collect()
        };
        assert_eq!(parse_excluded_dates(&distinct(1000)).unwrap().len(), 1000);
        let err = parse_excluded_dates(&distinct(1001)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "1001 distinct excluded dates given; at most 1000 are allowed"
        );
        // Duplicates do not count.
        let repeated = vec!["2026-01-01".to_string(); 5000];
        assert_eq!(parse_excluded_dates(&repeated).unwrap().len(), 1);
    }

    #[test]
    fn jitter_limit() {
        assert_eq!(check_jitter(0), Ok(()));
        assert_eq!(check_jitter(MAX_JITTER_SECONDS), Ok(()));
        let err = check_jitter(MAX_JITTER_SECONDS + 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "jitter of 86401s is above the maximum of 86400s (one day)"
        );
        assert_eq!(
            timetable("@daily", "UTC", &[], u32::MAX).jitter_seconds(),
            MAX_JITTER_SECONDS
        );
    }

    #[test]
    fn exclusion_is_by_local_date() {
        // Tokyo is UTC+9: its 08:00 is 23:00 UTC the day before.
        let tokyo = timetable("0 8 * * *", "Asia/Tokyo", &["2026-05-05"], 0);
        let fires = tokyo.preview(1, utc("2026-05-03T00:00:00Z"), 3);
        assert_eq!(
            fires
                .iter()
                .map(|f| (f.fire_time, f.excluded))
                .collect::<Vec<_>>(),
            [
                (utc("2026-05-03T23:00:00Z"), false),
                (utc("2026-05-04T23:00:00Z"), true),
                (utc("2026-05-05T23:00:00Z"), false),
            ]
        );
        assert!(!tokyo.is_excluded(utc("2026-05-05T23:00:00Z")));
        assert!(tokyo.is_excluded(utc("2026-05-04T15:00:00Z")));

        // New York's spring-forward day: 02:30 runs at 03:00 EDT, still on
        // the 8th.
        let ny = timetable("30 2 * * *", "America/New_York", &["2026-03-08"], 0);
        assert!(ny.is_excluded(utc("2026-03-08T07:00:00Z")));
        assert!(!ny.is_excluded(utc("2026-03-09T06:30:00Z")));

        // Berlin's fall-back day: both passes of the repeated hour are on
        // the excluded date; 00:30 CET on the 26th is 23:30 UTC on the 25th.
        let berlin = timetable("30 * * * *", "Europe/Berlin", &["2026-10-25"], 0);
        let day: Vec<PlannedFire> = berlin.preview(0, utc("2026-10-24T21:00:00Z"), 30);
        let excluded: Vec<DateTime<Utc>> = day
            .iter()
            .filter(|f| f.excluded)
            .map(|f| f.fire_time)
            .collect();
        assert_eq!(excluded.len(), 25, "a 25-hour day");
        assert_eq!(excluded[0], utc("2026-10-24T22:30:00Z"));
        assert_eq!(excluded[24], utc("2026-10-25T22:30:00Z"));
        assert!(!berlin.is_excluded(utc("2026-10-25T23:30:00Z")));
        assert!(!berlin.is_excluded(utc("2026-10-24T21:30:00Z")));
    }

    #[test]
    fn splitmix64_is_the_reference_function() {
        // Vigna's splitmix64.c seeded with 0 yields 0xE220A8397B1DCDAF first.
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(0x9E37_79B9_7F4A_7C15), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn jitter_is_deterministic_and_bounded() {
        let t = timetable("0 0 * * *", "UTC", &[], 3600);
        let fire = utc("2026-01-01T00:00:00Z");
        // Pinned (and checked with an independent Python computation of the
        // same formula): the same on every process, platform and Rust version.
        assert_eq!(t.run_at(42, fire), utc("2026-01-01T00:50:52.460Z"));
        assert_eq!(t.run_at(-7, fire), utc("2026-01-01T00:42:11.426Z"));
        assert_eq!(t.run_at(42, fire), t.clone().run_at(42, fire));

        let fires: Vec<_> = t.schedule().iter_after(fire).take(2000).collect();
        let delays: Vec<i64> = fires
            .iter()
            .map(|f| (t.run_at(42, *f) - *f).num_milliseconds())
            .collect();
        assert!(delays.iter().all(|d| (0..=3_600_000).contains(d)));
        // Spread over the window, not clustered: every sixth has some.
        for sixth in 0..6 {
            let (lo, hi) = (sixth * 600_000, (sixth + 1) * 600_000);
            let n = delays.iter().filter(|d| (lo..hi).contains(*d)).count();
            assert!((200..=470).contains(&n), "{n} delays in [{lo}, {hi})");
        }
        // Other crons get other delays for the same fire time.
        let spread: std::collections::BTreeSet<_> = (0..100).map(|id| t.run_at(id, fire)).collect();
        assert!(spread.len() > 95);
    }

    #[test]
    fn jitter_zero_is_the_fire_time() {
        let t = timetable("*/5 * * * *", "Europe/Berlin", &[], 0);
        let fire = utc("2026-03-29T01:00:00Z");
        assert_eq!(t.run_at(9, fire), fire);
        assert!(t
            .preview(9, fire, 20)
            .iter()
            .all(|p| p.run_at == p.fire_time));
    }

    #[test]
    fn jitter_stays_before_the_next_fire() {
        // Every second, up to a day of jitter: always within the second.
        let t = timetable("* * * * * *", "UTC", &[], MAX_JITTER_SECONDS);
        for planned in t.preview(1, utc("2026-01-01T00:00:00Z"), 500) {
            let next = t.schedule().next_after(planned.fire_time).unwrap();
            assert!(planned.run_at >= planned.fire_time && planned.run_at < next);
            assert_eq!(planned.run_at, t.run_at(1, planned.fire_time));
        }
        // Every minute with an hour of jitter: capped at 59.999 s.
        let t = timetable(r#"["0 * * * *", "1 * * * *"]"#, "UTC", &[], 3600);
        let capped = t
            .preview(5, utc("2026-01-01T00:00:00Z"), 200)
            .iter()
            .filter(|p| p.fire_time.format("%M").to_string() == "00")
            .map(|p| (p.run_at - p.fire_time).num_milliseconds())
            .collect::<Vec<_>>();
        assert!(capped.iter().all(|d| *d <= 59_999));
        assert!(capped.contains(&59_999), "most delays are capped");
        // A fire time off the whole second is capped too.
        let t = timetable("* * * * * *", "UTC", &[], 10);
        let fire = utc("2026-01-01T00:00:00.900Z");
        assert!(t.run_at(3, fire) < utc("2026-01-01T00:00:01Z"));
    }

    #[test]
    fn preview_serializes_for_the_cli_and_api() {
        let t = timetable("0 0 * * *", "UTC", &["2026-01-02"], 3600);
        let planned = t.preview(42, utc("2025-12-31T12:00:00Z"), 2);
        assert_eq!(
            serde_json::to_string(&planned).unwrap(),
            "[{\"fire_time\":\"2026-01-01T00:00:00Z\",\"run_at\":\"2026-01-01T00:50:52.460Z\",\
             \"excluded\":false},{\"fire_time\":\"2026-01-02T00:00:00Z\",\"run_at\":\
             \"2026-01-02T00:19:31.323Z\",\"excluded\":true}]"
        );
        assert_eq!(t.preview(42, utc("2025-12-31T12:00:00Z"), 0), []);
        assert_eq!(t.excluded_dates(), [date("2026-01-02")]);
    }
}
