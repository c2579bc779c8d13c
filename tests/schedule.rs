//! Known-answer table for `jobu::schedule`: croniter-compatible matching,
//! daylight-saving rules, iteration order and rejection messages.

use chrono::{DateTime, Duration, Utc};
use jobu::schedule::*;

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().expect(s)
}

fn fires(expr: &str, zone: &str, after: &str, n: usize) -> Vec<String> {
    let schedule = Schedule::parse(expr, zone).unwrap_or_else(|e| panic!("{e}"));
    schedule
        .iter_after(utc(after))
        .take(n)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .collect()
}

/// (expression, zone, after, expected fires in UTC)
type Case = (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
);

fn check(cases: &[Case]) {
    let mut failures = Vec::new();
    for (expr, zone, after, expected) in cases {
        let got = fires(expr, zone, after, expected.len());
        if got != *expected {
            failures.push(format!(
                "{expr:?} in {zone} after {after}:\n  expected {expected:?}\n  got      {got:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
#[rustfmt::skip]
fn unix_syntax() {
    // 2026-01-01 is a Thursday.
    check(&[
        // Sunday as 0, 7, a name, and 7 closing a range.
        ("0 0 * * 0", "UTC", "2026-01-01T00:00:00Z", &["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"]),
        ("0 0 * * 7", "UTC", "2026-01-01T00:00:00Z", &["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"]),
        ("0 0 * * sun", "UTC", "2026-01-01T00:00:00Z", &["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"]),
        ("0 0 * * 5-7", "UTC", "2026-01-01T00:00:00Z", &["2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z", "2026-01-04T00:00:00Z", "2026-01-09T00:00:00Z"]),
        ("0 0 * * FRI-SUN", "UTC", "2026-01-01T00:00:00Z", &["2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z", "2026-01-04T00:00:00Z", "2026-01-09T00:00:00Z"]),
        // Day and month names, any case.
        ("0 9 * * MON-FRI", "UTC", "2026-01-02T10:00:00Z", &["2026-01-05T09:00:00Z", "2026-01-06T09:00:00Z", "2026-01-07T09:00:00Z"]),
        ("0 9 * * mon-Fri", "UTC", "2026-01-02T10:00:00Z", &["2026-01-05T09:00:00Z", "2026-01-06T09:00:00Z", "2026-01-07T09:00:00Z"]),
        ("0 12 1 jan,Jul *", "UTC", "2026-01-01T12:00:00Z", &["2026-07-01T12:00:00Z", "2027-01-01T12:00:00Z", "2027-07-01T12:00:00Z"]),
        ("0 12 1 MAR-MAY *", "UTC", "2026-01-01T00:00:00Z", &["2026-03-01T12:00:00Z", "2026-04-01T12:00:00Z", "2026-05-01T12:00:00Z", "2027-03-01T12:00:00Z"]),
        // Steps, lists, ranges.
        ("*/15 * * * *", "UTC", "2026-01-01T00:00:00Z", &["2026-01-01T00:15:00Z", "2026-01-01T00:30:00Z", "2026-01-01T00:45:00Z", "2026-01-01T01:00:00Z"]),
        ("10/15 * * * *", "UTC", "2026-01-01T00:00:00Z", &["2026-01-01T00:10:00Z", "2026-01-01T00:25:00Z", "2026-01-01T00:40:00Z", "2026-01-01T00:55:00Z", "2026-01-01T01:10:00Z"]),
        ("5-20/5 8 * * *", "UTC", "2026-01-01T00:00:00Z", &["2026-01-01T08:05:00Z", "2026-01-01T08:10:00Z", "2026-01-01T08:15:00Z", "2026-01-01T08:20:00Z", "2026-01-02T08:05:00Z"]),
        ("1,2,3 0 * * *", "UTC", "2026-01-01T00:00:00Z", &["2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z", "2026-01-01T00:03:00Z", "2026-01-02T00:01:00Z"]),
        ("0 22-23 * * *", "UTC", "2026-01-01T00:00:00Z", &["2026-01-01T22:00:00Z", "2026-01-01T23:00:00Z", "2026-01-02T22:00:00Z"]),
        // A/N on weekdays stops at 6 (croniter): Mon, Wed, Fri.
        ("0 0 * * 1/2", "UTC", "2026-01-01T00:00:00Z", &["2026-01-02T00:00:00Z", "2026-01-05T00:00:00Z", "2026-01-07T00:00:00Z", "2026-01-09T00:00:00Z"]),
        ("0 0 29 2 *", "UTC", "2026-01-01T00:00:00Z", &["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"]),
        ("0 9 * * *", "Asia/Kolkata", "2026-01-01T00:00:00Z", &["2026-01-01T03:30:00Z", "2026-01-02T03:30:00Z"]),
        // A range with equal ends is its one value, as in Unix cron.
        ("5-5 0 * * *", "UTC", "2026-01-01T00:00:00Z", &["2026-01-01T00:05:00Z", "2026-01-02T00:05:00Z"]),
        ("0 0 * * SUN-SUN", "UTC", "2026-01-01T00:00:00Z", &["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"]),
        ("0 0 * * 7-7", "UTC", "2026-01-01T00:00:00Z", &["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"]),
        // Whitespace around and between fields.
        ("  0\t9 * *  *\n", "UTC", "2026-01-01T00:00:00Z", &["2026-01-01T09:00:00Z"]),
    ]);
}

#[test]
#[rustfmt::skip]
fn day_of_month_or_day_of_week() {
    check(&[
        // Both restricted: the 13th OR any Friday.
        ("0 0 13 * 5", "UTC", "2026-01-01T00:00:00Z", &["2026-01-02T00:00:00Z", "2026-01-09T00:00:00Z", "2026-01-13T00:00:00Z", "2026-01-16T00:00:00Z", "2026-01-23T00:00:00Z"]),
        // One side `*`: only the other decides.
        ("0 0 13 * *", "UTC", "2026-01-01T00:00:00Z", &["2026-01-13T00:00:00Z", "2026-02-13T00:00:00Z"]),
        ("0 0 * * 5", "UTC", "2026-01-01T00:00:00Z", &["2026-01-02T00:00:00Z", "2026-01-09T00:00:00Z"]),
        // `*/2` is restricted (croniter; Vixie would AND): odd days OR Mondays.
        ("0 0 */2 * 1", "UTC", "2026-01-01T00:00:00Z", &["2026-01-03T00:00:00Z", "2026-01-05T00:00:00Z", "2026-01-07T00:00:00Z", "2026-01-09T00:00:00Z", "2026-01-11T00:00:00Z", "2026-01-12T00:00:00Z"]),
        // Every day of month plus a weekday field with `*`: croniter treats the
        // days as unrestricted, so only Sun/Tue/Thu/Sat.
        ("0 0 */1 * */2", "UTC", "2026-01-01T00:00:00Z", &["2026-01-03T00:00:00Z", "2026-01-04T00:00:00Z", "2026-01-06T00:00:00Z", "2026-01-08T00:00:00Z"]),
        // ... but without a `*` in the weekday field it is OR: every day.
        ("0 0 1-31 * 1", "UTC", "2026-01-01T00:00:00Z", &["2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z", "2026-01-04T00:00:00Z"]),
    ]);
}

#[test]
#[rustfmt::skip]
fn macros_and_seconds() {
    check(&[
        ("@yearly", "UTC", "2026-01-01T00:00:00Z", &["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"]),
        ("@annually", "UTC", "2026-01-01T00:00:00Z", &["2027-01-01T00:00:00Z"]),
        ("@monthly", "UTC", "2026-01-01T00:00:00Z", &["2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"]),
        ("@weekly", "UTC", "2026-01-01T00:00:00Z", &["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"]),
        ("@daily", "UTC", "2026-01-01T00:00:00Z", &["2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"]),
        ("@midnight", "UTC", "2026-01-01T00:00:00Z", &["2026-01-02T00:00:00Z"]),
        ("@hourly", "UTC", "2026-01-01T00:00:00Z", &["2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z"]),
        ("@Daily", "Europe/Berlin", "2026-01-01T00:00:00Z", &["2026-01-01T23:00:00Z", "2026-01-02T23:00:00Z"]),
        // Six fields: seconds first.
        ("*/20 * * * * *", "UTC", "2026-01-01T00:00:00Z", &["2026-01-01T00:00:20Z", "2026-01-01T00:00:40Z", "2026-01-01T00:01:00Z", "2026-01-01T00:01:20Z"]),
        ("30 0 12 * * *", "UTC", "2026-01-01T00:00:00Z", &["2026-01-01T12:00:30Z", "2026-01-02T12:00:30Z"]),
        ("15 30 9 * * mon", "America/New_York", "2026-01-01T00:00:00Z", &["2026-01-05T14:30:15Z", "2026-01-12T14:30:15Z"]),
    ]);
    assert!(Schedule::parse("30 0 12 * * *", "UTC").unwrap().has_seconds());
    assert!(!Schedule::parse("0 12 * * *", "UTC").unwrap().has_seconds());
    assert!(!Schedule::parse("@hourly", "UTC").unwrap().has_seconds());
}

#[test]
#[rustfmt::skip]
fn new_york_spring_forward() {
    // 2026-03-08 02:00 EST -> 03:00 EDT at 07:00Z; 02:00-02:59 never happens.
    check(&[
        // Fixed time in the gap: the first instant after it.
        ("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", &["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z"]),
        ("30 2 * * *", "America/New_York", "2026-03-08T06:59:59Z", &["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"]),
        // A list, a range or a step in the hour field: the same, once; every
        // gap match and a match at 03:00 itself collapse into 03:00.
        ("0 2,3 * * *", "America/New_York", "2026-03-07T12:00:00Z", &["2026-03-08T07:00:00Z", "2026-03-09T06:00:00Z", "2026-03-09T07:00:00Z"]),
        ("30 1-5 * * *", "America/New_York", "2026-03-08T06:00:00Z", &["2026-03-08T06:30:00Z", "2026-03-08T07:00:00Z", "2026-03-08T07:30:00Z", "2026-03-08T08:30:00Z"]),
        ("30 */2 * * *", "America/New_York", "2026-03-08T05:00:00Z", &["2026-03-08T05:30:00Z", "2026-03-08T07:00:00Z", "2026-03-08T08:30:00Z", "2026-03-08T10:30:00Z"]),
        ("*/20 */2 * * *", "America/New_York", "2026-03-08T06:30:00Z", &["2026-03-08T07:00:00Z", "2026-03-08T08:00:00Z", "2026-03-08T08:20:00Z"]),
        // `*/1` is a step, not `*`: 02:30 runs at 03:00 (croniter 7 reads it as `*`
        // and would skip 02:30; the rule here goes by the field as written).
        ("30 */1 * * *", "America/New_York", "2026-03-08T06:00:00Z", &["2026-03-08T06:30:00Z", "2026-03-08T07:00:00Z", "2026-03-08T07:30:00Z"]),
        // Hour exactly `*`: times in the gap do not exist, so they do not run;
        // nothing extra at 03:00 EDT (07:00Z), 03:15 EDT (07:15Z) is a normal fire.
        ("15 * * * *", "America/New_York", "2026-03-08T05:00:00Z", &["2026-03-08T05:15:00Z", "2026-03-08T06:15:00Z", "2026-03-08T07:15:00Z", "2026-03-08T08:15:00Z"]),
        ("15 * * * *", "America/New_York", "2026-03-08T06:59:59Z", &["2026-03-08T07:15:00Z"]),
        ("30 * * * *", "America/New_York", "2026-03-08T06:00:00Z", &["2026-03-08T06:30:00Z", "2026-03-08T07:30:00Z", "2026-03-08T08:30:00Z"]),
        ("0 15 * * * *", "America/New_York", "2026-03-08T06:00:00Z", &["2026-03-08T06:15:00Z", "2026-03-08T07:15:00Z", "2026-03-08T08:15:00Z"]),
        ("5/20 * * * *", "America/New_York", "2026-03-08T06:30:00Z", &["2026-03-08T06:45:00Z", "2026-03-08T07:05:00Z", "2026-03-08T07:25:00Z"]),
        // 03:00 EDT itself exists: a regular fire, not a gap one.
        ("*/20 * * * *", "America/New_York", "2026-03-08T06:30:00Z", &["2026-03-08T06:40:00Z", "2026-03-08T07:00:00Z", "2026-03-08T07:20:00Z", "2026-03-08T07:40:00Z", "2026-03-08T08:00:00Z"]),
        ("*/15 * * * *", "America/New_York", "2026-03-08T06:30:00Z", &["2026-03-08T06:45:00Z", "2026-03-08T07:00:00Z", "2026-03-08T07:15:00Z", "2026-03-08T07:30:00Z", "2026-03-08T07:45:00Z"]),
        ("@hourly", "America/New_York", "2026-03-08T05:30:00Z", &["2026-03-08T06:00:00Z", "2026-03-08T07:00:00Z", "2026-03-08T08:00:00Z"]),
    ]);
}

/// Fire instants of `expr` in `zone` within `[from, to)`.
fn fires_between(expr: &str, zone: &str, from: &str, to: &str) -> Vec<DateTime<Utc>> {
    let schedule = Schedule::parse(expr, zone).unwrap_or_else(|e| panic!("{e}"));
    let (from, to) = (utc(from), utc(to));
    schedule
        .iter_after(from - Duration::seconds(1))
        .take_while(|t| *t < to)
        .collect()
}

#[test]
fn wildcard_hour_has_one_run_fewer_on_spring_forward_day() {
    // 2026-03-08 in New York (00:00 EST = 05:00Z to 00:00 EDT = 04:00Z next
    // day) has 23 hours; 2026-11-01 has 25.
    let spring = ("2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z");
    let fall = ("2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z");
    for expr in ["15 * * * *", "0 15 * * * *", "@hourly", "0 * * * *"] {
        let got = fires_between(expr, "America/New_York", spring.0, spring.1);
        assert_eq!(got.len(), 23, "{expr:?}: {got:?}");
        let got = fires_between(expr, "America/New_York", fall.0, fall.1);
        assert_eq!(got.len(), 25, "{expr:?}: {got:?}");
    }
    for expr in ["*/20 * * * *", "*/10 * * * *"] {
        let per_hour = 60 / if expr.starts_with("*/20") { 20 } else { 10 };
        let got = fires_between(expr, "America/New_York", spring.0, spring.1);
        assert_eq!(got.len(), 23 * per_hour, "{expr:?}");
        // Nothing between the regular 01:xx EST and 03:xx EDT fires.
        assert!(got
            .windows(2)
            .all(|w| w[1] - w[0] == Duration::minutes(60 / per_hour as i64)));
    }
    // Any other hour field still runs its skipped time, once.
    let got = fires_between("30 2 * * *", "America/New_York", spring.0, spring.1);
    assert_eq!(got, vec![utc("2026-03-08T07:00:00Z")]);
    let got = fires_between("30 */2 * * *", "America/New_York", spring.0, spring.1);
    assert_eq!(got.len(), 12);
    assert!(got.contains(&utc("2026-03-08T07:00:00Z")));
}

#[test]
#[rustfmt::skip]
fn new_york_fall_back() {
    // 2026-11-01 02:00 EDT -> 01:00 EST at 06:00Z; 01:00-01:59 happens twice.
    check(&[
        // Fixed hour: once, in the first pass.
        ("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", &["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]),
        ("*/30 1 * * *", "America/New_York", "2026-11-01T04:00:00Z", &["2026-11-01T05:00:00Z", "2026-11-01T05:30:00Z", "2026-11-02T06:00:00Z"]),
        // Already ran in the first pass: nothing in the second.
        ("45 1 * * *", "America/New_York", "2026-11-01T05:50:00Z", &["2026-11-02T06:45:00Z"]),
        // Wildcard or stepped hour: both passes.
        ("30 * * * *", "America/New_York", "2026-11-01T04:00:00Z", &["2026-11-01T04:30:00Z", "2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z", "2026-11-01T07:30:00Z"]),
        ("30 */1 * * *", "America/New_York", "2026-11-01T04:00:00Z", &["2026-11-01T04:30:00Z", "2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z", "2026-11-01T07:30:00Z"]),
        ("@hourly", "America/New_York", "2026-11-01T04:30:00Z", &["2026-11-01T05:00:00Z", "2026-11-01T06:00:00Z", "2026-11-01T07:00:00Z"]),
        // Not monotonic in wall-clock order: from 01:50 EDT the next fire is
        // 01:00 EST (06:00Z), not 02:00 EST.
        ("*/15 * * * *", "America/New_York", "2026-11-01T05:50:00Z", &["2026-11-01T06:00:00Z", "2026-11-01T06:15:00Z"]),
        ("30 * * * *", "America/New_York", "2026-11-01T06:10:00Z", &["2026-11-01T06:30:00Z"]),
    ]);
}

#[test]
#[rustfmt::skip]
fn berlin_transitions() {
    check(&[
        // 2026-03-29 02:00 CET -> 03:00 CEST at 01:00Z.
        ("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", &["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]),
        ("30 2,3 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", &["2026-03-29T01:00:00Z", "2026-03-29T01:30:00Z", "2026-03-30T00:30:00Z"]),
        // Hour exactly `*`: 02:xx does not exist, so it does not run.
        ("30 * * * *", "Europe/Berlin", "2026-03-29T00:00:00Z", &["2026-03-29T00:30:00Z", "2026-03-29T01:30:00Z", "2026-03-29T02:30:00Z"]),
        ("15 * * * *", "Europe/Berlin", "2026-03-29T00:00:00Z", &["2026-03-29T00:15:00Z", "2026-03-29T01:15:00Z"]),
        ("@hourly", "Europe/Berlin", "2026-03-28T23:30:00Z", &["2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z"]),
        ("*/20 * * * *", "Europe/Berlin", "2026-03-29T00:30:00Z", &["2026-03-29T00:40:00Z", "2026-03-29T01:00:00Z", "2026-03-29T01:20:00Z", "2026-03-29T01:40:00Z"]),
        ("30 */2 * * *", "Europe/Berlin", "2026-03-29T00:00:00Z", &["2026-03-29T01:00:00Z", "2026-03-29T02:30:00Z"]),
        // 2026-10-25 03:00 CEST -> 02:00 CET at 01:00Z.
        ("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", &["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]),
        ("0 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", &["2026-10-25T00:00:00Z", "2026-10-26T01:00:00Z"]),
        ("*/20 * * * *", "Europe/Berlin", "2026-10-25T00:00:00Z", &["2026-10-25T00:20:00Z", "2026-10-25T00:40:00Z", "2026-10-25T01:00:00Z", "2026-10-25T01:20:00Z", "2026-10-25T01:40:00Z", "2026-10-25T02:00:00Z"]),
        ("0 */1 * * *", "Europe/Berlin", "2026-10-24T23:30:00Z", &["2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z", "2026-10-25T03:00:00Z"]),
    ]);
}

#[test]
#[rustfmt::skip]
fn other_zones() {
    check(&[
        // Lord Howe shifts by 30 minutes: gap 02:00-02:30 (15:30Z on
        // 2026-10-03), repeat 01:30-02:00.
        ("15 2 * * *", "Australia/Lord_Howe", "2026-10-03T00:00:00Z", &["2026-10-03T15:30:00Z", "2026-10-04T15:15:00Z"]),
        ("15 1-3 * * *", "Australia/Lord_Howe", "2026-10-03T14:00:00Z", &["2026-10-03T14:45:00Z", "2026-10-03T15:30:00Z", "2026-10-03T16:15:00Z"]),
        // Hour exactly `*`: 02:15 does not exist and does not run; 02:45 does.
        ("15 * * * *", "Australia/Lord_Howe", "2026-10-03T14:00:00Z", &["2026-10-03T14:45:00Z", "2026-10-03T16:15:00Z", "2026-10-03T17:15:00Z"]),
        ("45 * * * *", "Australia/Lord_Howe", "2026-10-03T14:30:00Z", &["2026-10-03T15:15:00Z", "2026-10-03T15:45:00Z", "2026-10-03T16:45:00Z"]),
        ("*/15 * * * *", "Australia/Lord_Howe", "2026-10-03T15:00:00Z", &["2026-10-03T15:15:00Z", "2026-10-03T15:30:00Z", "2026-10-03T15:45:00Z"]),
        ("45 1 * * *", "Australia/Lord_Howe", "2026-04-04T00:00:00Z", &["2026-04-04T14:45:00Z", "2026-04-05T15:15:00Z"]),
        ("45 * * * *", "Australia/Lord_Howe", "2026-04-04T13:00:00Z", &["2026-04-04T13:45:00Z", "2026-04-04T14:45:00Z", "2026-04-04T15:15:00Z", "2026-04-04T16:15:00Z"]),
        // Santiago skips midnight: a daily job runs at 01:00 that day.
        ("@daily", "America/Santiago", "2026-09-05T12:00:00Z", &["2026-09-06T04:00:00Z", "2026-09-07T03:00:00Z"]),
        // ... and an hourly one has no 00:30 that day.
        ("30 * * * *", "America/Santiago", "2026-09-06T03:00:00Z", &["2026-09-06T03:30:00Z", "2026-09-06T04:30:00Z"]),
    ]);
}

#[test]
fn iteration_is_strictly_increasing_through_transitions() {
    let windows = [
        ("America/New_York", "2026-03-07T00:00:00Z"),
        ("America/New_York", "2026-10-31T00:00:00Z"),
        ("Europe/Berlin", "2026-03-28T00:00:00Z"),
        ("Europe/Berlin", "2026-10-24T00:00:00Z"),
    ];
    let exprs = [
        "* * * * *",
        "*/7 * * * *",
        "30 * * * *",
        "30 1,2 * * *",
        "* 1-3 * * *",
        "*/10 */1 * * *",
        "0 0-4 * * *",
        "59 59 * * * *",
        "@hourly",
    ];
    for (zone, start) in windows {
        let start = utc(start);
        let end = start + Duration::days(3);
        for expr in exprs {
            let schedule = Schedule::parse(expr, zone).unwrap();
            let mut prev = start;
            for t in schedule.iter_after(start).take_while(|t| *t < end) {
                assert!(t > prev, "{expr:?} in {zone}: {t} after {prev}");
                assert_eq!(schedule.next_after(prev), Some(t));
                prev = t;
            }
        }
    }
}

#[test]
fn every_minute_fires_every_real_minute_across_transitions() {
    for (zone, start) in [
        ("America/New_York", "2026-03-08T04:00:00Z"),
        ("America/New_York", "2026-11-01T04:00:00Z"),
        ("Europe/Berlin", "2026-03-28T23:00:00Z"),
        ("Europe/Berlin", "2026-10-24T23:00:00Z"),
    ] {
        let schedule = Schedule::parse("* * * * *", zone).unwrap();
        let start = utc(start);
        let got: Vec<_> = schedule.iter_after(start).take(300).collect();
        let want: Vec<_> = (1..=300).map(|m| start + Duration::minutes(m)).collect();
        assert_eq!(got, want, "{zone}");
    }
    // A fixed hour skips the second pass of the repeated hour entirely.
    let schedule = Schedule::parse("* 1 * * *", "America/New_York").unwrap();
    let got: Vec<_> = schedule
        .iter_after(utc("2026-11-01T04:59:00Z"))
        .take(61)
        .collect();
    assert_eq!(got[0], utc("2026-11-01T05:00:00Z"));
    assert_eq!(got[59], utc("2026-11-01T05:59:00Z"));
    assert_eq!(got[60], utc("2026-11-02T06:00:00Z"));
}

#[test]
fn every_second_is_cheap() {
    let schedule = Schedule::parse("* * * * * *", "Europe/Berlin").unwrap();
    let start = utc("2026-10-25T00:59:00Z");
    let got: Vec<_> = schedule.iter_after(start).take(20_000).collect();
    assert_eq!(got.len(), 20_000);
    assert_eq!(got[19_999], start + Duration::seconds(20_000));
}

#[test]
fn no_fire_before_year_5000_is_none() {
    let schedule = Schedule::parse("0 0 29 2 *", "UTC").unwrap();
    assert_eq!(schedule.next_after(utc("4996-03-01T00:00:00Z")), None);
}

#[test]
fn accessors() {
    let schedule = Schedule::parse(" 0 9 * * MON-FRI ", "Europe/Berlin").unwrap();
    assert_eq!(schedule.expression(), "0 9 * * MON-FRI");
    assert_eq!(schedule.timezone(), Tz::Europe__Berlin);
    let same = Schedule::with_tz("0 9 * * MON-FRI", Tz::Europe__Berlin).unwrap();
    assert_eq!(
        same.next_after(utc("2026-01-01T00:00:00Z")),
        schedule.next_after(utc("2026-01-01T00:00:00Z"))
    );
    assert_eq!(Schedule::parse("@daily", "").unwrap().timezone(), Tz::UTC);
}

#[test]
fn unknown_time_zone() {
    let err = Schedule::parse("* * * * *", "Mars/Base").unwrap_err();
    assert_eq!(err, ScheduleError::UnknownTimeZone("Mars/Base".to_string()));
    assert_eq!(err.to_string(), "unknown time zone \"Mars/Base\"");
    assert!(parse_timezone("Mars/Base").is_err());
}

#[test]
#[rustfmt::skip]
fn rejections_name_field_and_token() {
    // (expression, fragments the message must contain)
    let cases: &[(&str, &[&str])] = &[
        ("61 * * * *", &["minute field: value 61 is out of range 0-59"]),
        ("* 24 * * *", &["hour field", "value 24", "0-23"]),
        ("* * 0 * *", &["day-of-month field", "value 0", "1-31"]),
        ("* * 32 * *", &["day-of-month field", "value 32"]),
        ("* * * 13 *", &["month field", "value 13", "1-12"]),
        ("* * * * 8", &["day-of-week field", "value 8", "0-7"]),
        ("60 * * * * *", &["second field", "value 60", "0-59"]),
        ("*/0 * * * *", &["minute field", "step 0", "\"*/0\""]),
        ("0 5-3 * * *", &["hour field", "\"5-3\"", "reversed"]),
        ("0 0 * * 7-5", &["day-of-week field", "\"7-5\"", "reversed"]),
        ("0 0 * NOV-FEB *", &["month field", "\"NOV-FEB\"", "reversed"]),
        ("0 0 LW * *", &["day-of-month field", "\"LW\""]),
        ("0 0 L-3 * *", &["day-of-month field", "\"L-3\""]),
        ("0 0 * * 5L", &["day-of-week field", "\"5L\"", "\"L\""]),
        ("0 0 * * 1-5#2", &["day-of-week field", "\"1-5#2\"", "\"#\""]),
        ("0 0 ? * 1", &["day-of-month field", "\"?\""]),
        ("0 0 * * +MON", &["day-of-week field", "\"+MON\"", "\"+\""]),
        ("H * * * *", &["minute field", "\"H\""]),
        ("0 0 1 1 * 2026 x", &["found 7 fields"]),
        ("0 0 0 1 1 * 2026", &["found 7 fields", "year"]),
        ("* * * *", &["found 4 fields"]),
        ("* * * * * * * *", &["found 8 fields"]),
        ("", &["empty"]),
        ("@reboot", &["@reboot"]),
        ("@fortnightly", &["unknown macro \"@fortnightly\""]),
        ("@daily 5", &["macro must be the whole expression"]),
        ("1,,2 * * * *", &["minute field", "empty list item", "\"1,,2\""]),
        ("1, * * * *", &["minute field", "empty list item"]),
        ("0 0 * * funday", &["day-of-week field", "unknown day name \"funday\""]),
        ("0 0 * JUNE *", &["month field", "unknown month name \"JUNE\""]),
        ("0 0 * * jan", &["day-of-week field", "\"jan\""]),
        ("0 mon * * *", &["hour field", "\"mon\" is not a number"]),
        ("abc * * * *", &["minute field", "\"abc\""]),
        ("*/x * * * *", &["minute field", "step \"x\""]),
        ("/5 * * * *", &["minute field", "\"/5\""]),
        ("-1 * * * *", &["minute field", "negative", "\"-1\""]),
        ("1-2-3 * * * *", &["minute field", "\"1-2-3\" is not a valid range"]),
        ("*-5 * * * *", &["minute field", "\"*-5\" is not a valid range"]),
        ("0\u{a0}0 * * * *", &["non-ASCII space U+00A0"]),
        ("0 0 30 2 *", &["day-of-month field", "day 30 never occurs", "2"]),
    ];
    for (expr, fragments) in cases {
        let err = Schedule::parse(expr, "UTC").expect_err(expr);
        let ScheduleError::InvalidExpression { expression, reason } = &err else {
            panic!("{expr:?}: wrong error {err:?}");
        };
        assert_eq!(expression, expr);
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("invalid cron expression {expr:?}: ")),
            "{text}"
        );
        assert!(!text.contains('\n'), "multi-line message: {text:?}");
        for fragment in *fragments {
            assert!(
                reason.contains(fragment),
                "{expr:?}: {reason:?} lacks {fragment:?}"
            );
        }
    }
}

#[test]
fn min_interval() {
    let from = utc("2026-01-01T00:00:00Z");
    let cases: &[(&str, &str, Option<i64>)] = &[
        ("* * * * *", "UTC", Some(60)),
        ("*/15 * * * *", "UTC", Some(900)),
        ("0 9,17 * * *", "UTC", Some(8 * 3600)),
        ("*/7 * * * * *", "UTC", Some(4)),
        ("@daily", "America/New_York", Some(86_400)),
        ("30 1,2 * * *", "America/New_York", Some(3600)),
        ("@weekly", "Europe/Berlin", Some(7 * 86_400)),
        ("0 0 29 2 *", "UTC", Some(4 * 365 * 86_400 + 86_400)),
    ];
    for (expr, zone, want) in cases {
        let schedule = Schedule::parse(expr, zone).unwrap();
        assert_eq!(schedule.min_interval_seconds(from), *want, "{expr:?}");
    }

    let every_minute = Schedule::parse("* * * * *", "UTC").unwrap();
    assert_eq!(every_minute.check_min_interval(60, from), Ok(()));
    assert_eq!(every_minute.check_min_interval(0, from), Ok(()));
    assert_eq!(
        every_minute.check_min_interval(300, from),
        Err(ScheduleError::TooFrequent {
            expression: "* * * * *".to_string(),
            interval_seconds: 60,
            min_seconds: 300,
        })
    );
}
