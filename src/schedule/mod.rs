//! Cron schedules: parsing and validating five-field Unix crontab
//! expressions (as Python's croniter 6 reads them, plus an optional leading
//! seconds field), lists of expressions, time zones, daylight-saving rules,
//! fire-time computation, and a cron's timetable (excluded dates, jitter).
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
//! croniter's day forms, case-insensitive:
//!
//! - `L` in day-of-month: the month's last day, also in lists (`1,15,L`)
//!   and as a range end (`10-L`, `10-L/5`: through the 31st, so through the
//!   last day);
//! - `nW` (or `Wn`) in day-of-month, as the whole field: the weekday
//!   (Monday-Friday) nearest to day `n` within the month: a Saturday moves
//!   to the Friday before unless that is in the previous month (`1W` on
//!   Saturday the 1st is Monday the 3rd), a Sunday to the Monday after
//!   unless that is in the next month (`31W` on Sunday the 31st is Friday
//!   the 29th); a day the month lacks is read as its last day (`31W` in
//!   April is about the 30th, `30W` in February about the 28th or 29th);
//! - `D#n` in day-of-week: the `n`-th (1-5) weekday `D` (number 0-7 or
//!   name) of the month (`5#3` the third Friday, `MON#2`); a fifth that a
//!   month lacks does not fire that month. croniter also takes ranges of
//!   day names (`MON-FRI#2`: the second Monday, ..., the second Friday);
//! - `LD` in day-of-week: the last weekday `D` (a number 0-7) of the month
//!   (`L5` the last Friday). Several `#`/`L` items may form a list
//!   (`1#2,L5`), but not together with plain weekdays (croniter refuses the
//!   mix).
//!
//! Day of month and day of week follow croniter, not Vixie cron: when both
//! are restricted a day matches if *either* does. A day field is
//! unrestricted when it is `*`, or when it covers every value and the other
//! day field contains a `*` (`L` counts as a value of its own). So
//! `0 0 */2 * MON-FRI` is odd days OR weekdays (Vixie would AND them
//! because the field starts with `*`), and `0 0 L * 5` the last day OR
//! Fridays. croniter does *not* apply that OR to `nW` with a restricted day
//! of week, or to `D#n`/`LD` with a restricted day of month: it silently
//! ignores the other field, or fails to find any fire time (`0 0 L * 5#3`).
//! jobu refuses those combinations; the other field must be `*` (or cover
//! every day), and a list of expressions gives "either".
//!
//! Rejected, with a message naming the field and token: croner/Quartz
//! forms croniter does not take or jobu does not (`?`, `+`, `H`, `R`, `5L`
//! in day-of-week, `LW`, `L-3`, `#` ranges of numbers or steps (`1-5#2`),
//! `#` in day-of-month, `W` outside day-of-month or in a list or range), a
//! year field, `@reboot`, values out of range, step 0, reversed ranges
//! (`5-3`; croniter would wrap around), unknown names and garbage, and
//! plain day-of-month values that no selected month has (`0 0 31 2 *` never
//! fires).
//!
//! # Several expressions
//!
//! A schedule's text may be a JSON array of up to [`MAX_EXPRESSIONS`]
//! expressions, `["30 14 * * MON", "30 8 * * TUE"]`. Its fire times are the
//! union (a time two members match fires once), its minimum interval is the
//! union's, and each member keeps its own daylight-saving rules (they follow
//! its hour field). Five- and six-field members may be mixed.
//!
//! # Daylight saving
//!
//! Expressions match wall-clock time in the schedule's zone. A time skipped
//! by a spring-forward gap does not run when the hour field is exactly `*`
//! (`15 * * * *` has one run fewer that day), and runs once at the first
//! instant after the gap otherwise (`30 2 * * *` at 03:00). A time repeated
//! by a fall-back runs in both passes when the hour field is `*` or a step,
//! and only in the first otherwise. The day forms only choose dates, so the
//! same rules apply to them. See `dst.rs`.

mod dst;
#[cfg(test)]
mod known_answers;
mod pattern;
mod timetable;
mod validate;

use chrono::{DateTime, Utc};

pub use chrono_tz::Tz;
pub use timetable::{
    check_jitter, parse_excluded_dates, PlannedFire, Timetable, TimetableError, MAX_EXCLUDED_DATES,
    MAX_JITTER_SECONDS,
};

/// Most expressions one cron's JSON list may hold.
pub const MAX_EXPRESSIONS: usize = 32;

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

/// One expression of a schedule.
#[derive(Debug, Clone)]
struct Member {
    /// Wall-clock fields, matched against naive local time only.
    pattern: pattern::Pattern,
    /// Daylight-saving rules, from this expression's hour field.
    dst: dst::Rules,
}

/// A validated cron expression, or a list of them, in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    text: String,
    expressions: Vec<String>,
    tz: Tz,
    has_seconds: bool,
    members: Vec<Member>,
}

/// Sampling bounds for [`Schedule::min_interval_seconds`].
const INTERVAL_WINDOW_SECONDS: i64 = 2 * 366 * 86_400;
const INTERVAL_MAX_FIRES: usize = 10_000;

/// The expressions of a schedule's text: the text itself, or the members of
/// a JSON array when it starts with `[`. The error is the reason only.
fn split_text(text: &str) -> Result<Vec<String>, String> {
    let trimmed = text.trim();
    if !trimmed.starts_with('[') {
        return Ok(vec![text.to_string()]);
    }
    let items: Vec<serde_json::Value> = serde_json::from_str(trimmed).map_err(|e| {
        format!("starts with \"[\" but is not a JSON array of expression strings ({e})")
    })?;
    if items.is_empty() {
        return Err("the expression list is empty; give at least one expression".to_string());
    }
    if items.len() > MAX_EXPRESSIONS {
        return Err(format!(
            "the expression list has {} expressions; at most {MAX_EXPRESSIONS} are allowed",
            items.len()
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            serde_json::Value::String(s) => Ok(s),
            other => {
                let kind = match other {
                    serde_json::Value::Null => "null",
                    serde_json::Value::Bool(_) => "a boolean",
                    serde_json::Value::Number(_) => "a number",
                    serde_json::Value::Array(_) => "an array",
                    _ => "an object",
                };
                Err(format!(
                    "item {} of the expression list is {kind}, not an expression string",
                    i + 1
                ))
            }
        })
        .collect()
}

impl Schedule {
    /// Parses `text` in the IANA zone `timezone` (empty means UTC). `text`
    /// is one expression, or a JSON array of up to [`MAX_EXPRESSIONS`]
    /// expressions (`["30 14 * * MON", "30 8 * * TUE"]`) whose fire times
    /// are united.
    pub fn parse(text: &str, timezone: &str) -> Result<Schedule, ScheduleError> {
        Schedule::with_tz(text, parse_timezone(timezone)?)
    }

    pub fn with_tz(text: &str, tz: Tz) -> Result<Schedule, ScheduleError> {
        let invalid = |reason: String| ScheduleError::InvalidExpression {
            expression: text.to_string(),
            reason,
        };
        let sources = split_text(text).map_err(invalid)?;
        let listed = sources.len() > 1 || text.trim().starts_with('[');
        let mut members = Vec::with_capacity(sources.len());
        let mut expressions = Vec::with_capacity(sources.len());
        let mut has_seconds = false;
        for (i, source) in sources.iter().enumerate() {
            let validated = validate::validate(source).map_err(|reason| {
                invalid(if listed {
                    format!("expression {} ({:?}): {reason}", i + 1, source.trim())
                } else {
                    reason
                })
            })?;
            has_seconds |= validated.has_seconds;
            members.push(Member {
                pattern: validated.pattern,
                dst: dst::Rules {
                    skips_gap: validated.skips_gap,
                    fires_twice_in_fold: validated.fires_twice_in_fold,
                },
            });
            expressions.push(source.trim().to_string());
        }
        Ok(Schedule {
            text: text.trim().to_string(),
            expressions,
            tz,
            has_seconds,
            members,
        })
    }

    /// The text as given (surrounding whitespace trimmed): one expression,
    /// or the JSON array.
    pub fn expression(&self) -> &str {
        &self.text
    }

    /// The expressions, trimmed: the one expression, or the members of the
    /// JSON array in their order.
    pub fn expressions(&self) -> &[String] {
        &self.expressions
    }

    /// The text to store for `exprs`: a single expression as itself, several
    /// as a compact JSON array (`["0 9 * * MON","0 8 * * TUE"]`). Members are
    /// trimmed; [`Schedule::parse`] reads the result back to the same
    /// expressions.
    pub fn canonical_text(exprs: &[String]) -> String {
        match exprs {
            [one] => one.trim().to_string(),
            many => {
                let trimmed: Vec<&str> = many.iter().map(|e| e.trim()).collect();
                serde_json::to_string(&trimmed).unwrap_or_default()
            }
        }
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// Whether any expression has a leading seconds field.
    pub fn has_seconds(&self) -> bool {
        self.has_seconds
    }

    /// Smallest fire instant strictly after `after`, in whole seconds; `None`
    /// if there is none before the year 5000. With several expressions, the
    /// earliest of theirs: each follows its own daylight-saving rules, and a
    /// time two of them match is one fire time.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Fire times are whole seconds, so "after 10:00:00.5" is "after 10:00:00".
        let after = after.timestamp();
        let instant = self
            .members
            .iter()
            .filter_map(|m| dst::next_after(&m.pattern, self.tz, m.dst, after))
            .min()?;
        DateTime::from_timestamp(instant, 0)
    }

    /// Successive fire instants after `after`, strictly increasing.
    pub fn iter_after(&self, after: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        std::iter::successors(self.next_after(after), move |prev| self.next_after(*prev))
    }

    /// First wall-clock match of any expression strictly after `local`.
    fn next_local(&self, local: i64) -> Option<i64> {
        self.members
            .iter()
            .filter_map(|m| dst::next_local(&m.pattern, local, false))
            .min()
    }

    /// Shortest gap in seconds between consecutive fire times (of all the
    /// expressions together), sampled from `from` over two years or 10,000
    /// fires, whichever ends first (and at least two fires). `None` if the
    /// schedule fires fewer than twice.
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
        let mut prev = self.next_local(start)?;
        let mut best: Option<i64> = None;
        for _ in 1..INTERVAL_MAX_FIRES {
            let Some(next) = self.next_local(prev) else {
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
                expression: self.text.clone(),
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
    fn expression_lists() {
        let s = Schedule::parse(r#" [ "30 14 * * MON", " 30 8 * * TUE " ] "#, "UTC").unwrap();
        assert_eq!(s.expressions(), ["30 14 * * MON", "30 8 * * TUE"]);
        assert_eq!(s.expression(), r#"[ "30 14 * * MON", " 30 8 * * TUE " ]"#);
        assert_eq!(
            Schedule::canonical_text(s.expressions()),
            r#"["30 14 * * MON","30 8 * * TUE"]"#
        );
        assert!(!s.has_seconds());
        let fires: Vec<_> = s.iter_after(utc("2026-01-04T00:00:00Z")).take(3).collect();
        assert_eq!(
            fires,
            [
                utc("2026-01-05T14:30:00Z"),
                utc("2026-01-06T08:30:00Z"),
                utc("2026-01-12T14:30:00Z")
            ]
        );

        let single = Schedule::parse(" 0 9 * * * ", "UTC").unwrap();
        assert_eq!(single.expressions(), ["0 9 * * *"]);
        assert_eq!(Schedule::canonical_text(single.expressions()), "0 9 * * *");
        let one = Schedule::parse(r#"["0 9 * * *"]"#, "UTC").unwrap();
        assert_eq!(Schedule::canonical_text(one.expressions()), "0 9 * * *");

        // Mixed five and six fields; seconds anywhere make has_seconds.
        let mixed = Schedule::parse(r#"["0 9 * * *", "15 0 9 * * *"]"#, "UTC").unwrap();
        assert!(mixed.has_seconds());
        let fires: Vec<_> = mixed
            .iter_after(utc("2026-01-01T00:00:00Z"))
            .take(3)
            .collect();
        assert_eq!(
            fires,
            [
                utc("2026-01-01T09:00:00Z"),
                utc("2026-01-01T09:00:15Z"),
                utc("2026-01-02T09:00:00Z")
            ]
        );
        let round_trip = Schedule::canonical_text(mixed.expressions());
        assert_eq!(
            Schedule::parse(&round_trip, "UTC").unwrap().expressions(),
            mixed.expressions()
        );
    }

    #[test]
    fn list_min_interval_is_the_union_s() {
        let from = utc("2026-01-01T00:00:00Z");
        let interval = |text: &str| {
            Schedule::parse(text, "Europe/Berlin")
                .unwrap()
                .min_interval_seconds(from)
        };
        assert_eq!(interval(r#"["0 * * * *", "30 * * * *"]"#), Some(1800));
        assert_eq!(interval(r#"["0 0 * * *", "0 0 * * *"]"#), Some(86_400));
        assert_eq!(interval(r#"["0 0 * * *", "59 23 * * *"]"#), Some(60));
        assert_eq!(interval(r#"["0 0 * * *", "30 0 0 * * *"]"#), Some(30));
        assert_eq!(interval(r#"["0 0 L * *", "0 0 1 * *"]"#), Some(86_400));
        let err = Schedule::parse(r#"["0 * * * *", "30 * * * *"]"#, "UTC")
            .unwrap()
            .check_min_interval(3600, from)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cron expression \"[\\\"0 * * * *\\\", \\\"30 * * * *\\\"]\" fires as often as every \
             1800s, below the minimum interval of 3600s (min_cron_interval_seconds)"
        );
    }

    #[test]
    #[rustfmt::skip]
    fn list_refusals() {
        let many = format!("[{}]", vec!["\"0 0 * * *\""; MAX_EXPRESSIONS + 1].join(","));
        let cases: Vec<(&str, &str)> = vec![
            ("[]", "the expression list is empty; give at least one expression"),
            (" [ ] ", "the expression list is empty; give at least one expression"),
            (&many, "the expression list has 33 expressions; at most 32 are allowed"),
            (r#"["0 0 * * *", 5]"#, "item 2 of the expression list is a number, not an expression string"),
            (r#"[null]"#, "item 1 of the expression list is null, not an expression string"),
            (r#"[["0 0 * * *"]]"#, "item 1 of the expression list is an array, not an expression string"),
            (r#"["0 0 * * *", "61 * * * *"]"#, "expression 2 (\"61 * * * *\"): minute field: value 61 is out of range 0-59"),
            (r#"["0 0 L * 5#3"]"#, "expression 1 (\"0 0 L * 5#3\"): day-of-week field: \"5#3\" needs \"*\" as the day of month, not \"L\": croniter ignores the day of month then, or finds no fire time; for either of them give a list of expressions"),
            (r#"["0 0 * * *", " "]"#, "expression 2 (\"\"): expression is empty"),
            (r#"["0 0 * * *""#, "starts with \"[\" but is not a JSON array of expression strings (EOF while parsing a list at line 1 column 12)"),
            (r#"["0 0 * * *"] x"#, "starts with \"[\" but is not a JSON array of expression strings (trailing characters at line 1 column 15)"),
            (r#"[0 0 * * *]"#, "starts with \"[\" but is not a JSON array of expression strings (expected `,` or `]` at line 1 column 4)"),
        ];
        for (text, reason) in cases {
            let err = Schedule::parse(text, "UTC").expect_err(text);
            assert_eq!(
                err,
                ScheduleError::InvalidExpression { expression: text.to_string(), reason: reason.to_string() },
                "{text}"
            );
            assert!(!err.to_string().contains('\n'));
        }
        let at_most = format!("[{}]", vec!["\"0 0 * * *\""; MAX_EXPRESSIONS].join(","));
        assert!(Schedule::parse(&at_most, "UTC").is_ok());
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
