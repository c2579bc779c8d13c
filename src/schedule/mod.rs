//! Cron schedules: parsing and validating five-field Unix crontab
//! expressions (as Python's croniter reads them, plus an optional leading
//! seconds field), time zones, daylight-saving rules and fire-time
//! computation on top of croner.
//!
//! # Expression language
//!
//! Five fields `minute hour day-of-month month day-of-week`, or six with
//! `second` first. Each field is `*` or a comma list of `N`, `A-B`, `*/N`,
//! `A-B/N` and `A/N` (croniter's reading: A through the field's maximum,
//! weekdays stopping at 6). Month names `JAN`-`DEC` and day names
//! `SUN`-`SAT`, case-insensitive, also as range ends (`MON-FRI`; `SUN` at
//! the end of a range is 7, so `FRI-SUN` works). Weekday 0 and 7 are both
//! Sunday, also in ranges (`5-7`). Macros `@yearly @annually @monthly
//! @weekly @daily @midnight @hourly`, case-insensitive.
//!
//! Day of month and day of week follow croniter, not Vixie cron: when both
//! are restricted a day matches if *either* does. A day field is
//! unrestricted when it is `*`, or when it covers every value and the other
//! day field contains a `*`. So `0 0 */2 * MON-FRI` is odd days OR weekdays
//! (Vixie would AND them because the field starts with `*`).
//!
//! Rejected, with a message naming the field and token: croner/Quartz
//! extensions (`L W # ? +`, `H`), a year field, `@reboot`, values out of
//! range, step 0, reversed ranges (`5-3`; croniter would wrap around),
//! unknown names and garbage, and day-of-month values that no
//! selected month has (`0 0 31 2 *` never fires).
//!
//! # Daylight saving
//!
//! Expressions match wall-clock time in the schedule's zone. A time skipped
//! by a spring-forward gap does not run when the hour field is exactly `*`
//! (`15 * * * *` has one run fewer that day), and runs once at the first
//! instant after the gap otherwise (`30 2 * * *` at 03:00). A time repeated
//! by a fall-back runs in both passes when the hour field is `*` or a step,
//! and only in the first otherwise. See `dst.rs`.

mod dst;
mod validate;

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

pub use chrono_tz::Tz;

/// Why a schedule was refused. Display strings are single lines meant for
/// operators.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid cron expression {expression:?}: {reason}")]
    InvalidExpression { expression: String, reason: String },
    #[error("unknown time zone {0:?}")]
    UnknownTimeZone(String),
    #[error(
        "cron expression {expression:?} fires as often as every {interval_seconds}s, below the \
         minimum interval of {min_seconds}s (min_cron_interval_seconds)"
    )]
    TooFrequent {
        expression: String,
        interval_seconds: i64,
        min_seconds: i64,
    },
}

/// Parses an IANA time zone name. Empty means UTC, the default.
pub fn parse_timezone(name: &str) -> Result<Tz, ScheduleError> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Ok(Tz::UTC);
    }
    trimmed
        .parse::<Tz>()
        .map_err(|_| ScheduleError::UnknownTimeZone(name.to_string()))
}

/// A validated cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expression: String,
    tz: Tz,
    has_seconds: bool,
    /// Daylight-saving rules, from the hour field.
    dst: dst::Rules,
    /// Canonical numeric pattern, matched against naive local time only.
    cron: Cron,
}

/// Sampling bounds for [`Schedule::min_interval_seconds`].
const INTERVAL_WINDOW_SECONDS: i64 = 2 * 366 * 86_400;
const INTERVAL_MAX_FIRES: usize = 10_000;

impl Schedule {
    /// Parses `expression` in the IANA zone `timezone` (empty means UTC).
    pub fn parse(expression: &str, timezone: &str) -> Result<Schedule, ScheduleError> {
        Schedule::with_tz(expression, parse_timezone(timezone)?)
    }

    pub fn with_tz(expression: &str, tz: Tz) -> Result<Schedule, ScheduleError> {
        let invalid = |reason: String| ScheduleError::InvalidExpression {
            expression: expression.to_string(),
            reason,
        };
        let validated = validate::validate(expression).map_err(invalid)?;
        // Croner only sees our canonical numeric form, so its parser's
        // extensions and quirks cannot change the meaning.
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .year(Year::Disallowed)
            .build()
            .parse(&validated.canonical)
            .map_err(|e| {
                invalid(format!(
                    "internal error: croner rejected canonical pattern {:?}: {e}",
                    validated.canonical
                ))
            })?;
        Ok(Schedule {
            expression: expression.trim().to_string(),
            tz,
            has_seconds: validated.has_seconds,
            dst: dst::Rules {
                skips_gap: validated.skips_gap,
                fires_twice_in_fold: validated.fires_twice_in_fold,
            },
            cron,
        })
    }

    /// The expression as given (surrounding whitespace trimmed).
    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// Whether the expression has a leading seconds field.
    pub fn has_seconds(&self) -> bool {
        self.has_seconds
    }

    /// Smallest fire instant strictly after `after`, in whole seconds; `None`
    /// if there is none before the year 5000.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Fire times are whole seconds, so "after 10:00:00.5" is "after 10:00:00".
        let instant = dst::next_after(&self.cron, self.tz, self.dst, after.timestamp())?;
        DateTime::from_timestamp(instant, 0)
    }

    /// Successive fire instants after `after`, strictly increasing.
    pub fn iter_after(&self, after: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        std::iter::successors(self.next_after(after), move |prev| self.next_after(*prev))
    }

    /// Shortest gap in seconds between consecutive fire times, sampled from
    /// `from` over two years or 10,000 fires, whichever ends first (and at
    /// least two fires). `None` if the schedule fires fewer than twice.
    ///
    /// Measured on the wall clock of the schedule's zone: daylight saving
    /// neither shortens a daily job to 23 hours nor squeezes `30 1,2 * * *`
    /// to 30 minutes once a year, so the same expression gets the same
    /// answer in every zone. This is the schedule's own frequency, which is
    /// what a minimum interval limits.
    pub fn min_interval_seconds(&self, from: DateTime<Utc>) -> Option<i64> {
        let start = from
            .with_timezone(&self.tz)
            .naive_local()
            .and_utc()
            .timestamp();
        let floor = if self.has_seconds { 1 } else { 60 };
        let end = start.saturating_add(INTERVAL_WINDOW_SECONDS);
        let mut prev = dst::next_local(&self.cron, start, false)?;
        let mut best: Option<i64> = None;
        for _ in 1..INTERVAL_MAX_FIRES {
            let Some(next) = dst::next_local(&self.cron, prev, false) else {
                break;
            };
            let gap = next - prev;
            best = Some(best.map_or(gap, |b| b.min(gap)));
            if gap <= floor || next > end {
                break;
            }
            prev = next;
        }
        best
    }

    /// `Err(TooFrequent)` if the schedule can fire more often than every
    /// `min_seconds`; `min_seconds <= 0` disables the check.
    pub fn check_min_interval(
        &self,
        min_seconds: i64,
        from: DateTime<Utc>,
    ) -> Result<(), ScheduleError> {
        if min_seconds <= 0 {
            return Ok(());
        }
        match self.min_interval_seconds(from) {
            Some(interval) if interval < min_seconds => Err(ScheduleError::TooFrequent {
                expression: self.expression.clone(),
                interval_seconds: interval,
                min_seconds,
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().expect(s)
    }

    #[test]
    fn error_messages_are_single_operator_lines() {
        let err = Schedule::parse("61 * * * *", "UTC").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid cron expression \"61 * * * *\": minute field: value 61 is out of range 0-59"
        );
        let err = Schedule::parse("* * * * *", "Mars/Base").unwrap_err();
        assert_eq!(err.to_string(), "unknown time zone \"Mars/Base\"");
        let err = Schedule::parse("* * * * *\n", "UTC")
            .unwrap()
            .check_min_interval(3600, utc("2026-01-01T00:00:00Z"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cron expression \"* * * * *\" fires as often as every 60s, below the minimum \
             interval of 3600s (min_cron_interval_seconds)"
        );
    }

    #[test]
    fn empty_zone_is_utc() {
        assert_eq!(parse_timezone("").unwrap(), Tz::UTC);
        assert_eq!(parse_timezone("Europe/Berlin").unwrap(), Tz::Europe__Berlin);
    }

    #[test]
    fn sub_second_start_is_exclusive() {
        let s = Schedule::parse("* * * * * *", "UTC").unwrap();
        assert_eq!(
            s.next_after(utc("2026-01-01T00:00:00.5Z")),
            Some(utc("2026-01-01T00:00:01Z"))
        );
    }

    #[test]
    fn min_interval_ignores_daylight_saving() {
        let from = utc("2026-01-01T00:00:00Z");
        let daily = Schedule::parse("0 0 * * *", "America/New_York").unwrap();
        assert_eq!(daily.min_interval_seconds(from), Some(86_400));
        let pair = Schedule::parse("30 1,2 * * *", "America/New_York").unwrap();
        assert_eq!(pair.min_interval_seconds(from), Some(3600));
        let secs = Schedule::parse("*/7 * * * * *", "UTC").unwrap();
        assert_eq!(secs.min_interval_seconds(from), Some(4));
        let yearly = Schedule::parse("@yearly", "UTC").unwrap();
        assert_eq!(yearly.min_interval_seconds(from), Some(365 * 86_400));
        assert!(yearly.check_min_interval(0, from).is_ok());
        assert!(Schedule::parse("* * * * * *", "UTC")
            .unwrap()
            .check_min_interval(0, from)
            .is_ok());
    }
}
