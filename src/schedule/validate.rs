//! Cron expression validation: reads Unix crontab the way Python's croniter
//! does, rejects everything else with a message naming the field and token,
//! and renders a canonical numeric pattern for croner.

use std::fmt::Write as _;

/// An expression that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Validated {
    /// Six fields, seconds first, numbers only: croner gets nothing to
    /// interpret beyond lists and `*`.
    pub canonical: String,
    /// The expression was written with a seconds field.
    pub has_seconds: bool,
    /// The hour field is `*` or stepped, so a wall-clock time repeated by a
    /// fall-back transition fires in both passes.
    pub fires_twice_in_fold: bool,
    /// The hour field is exactly `*` (also `@hourly`), so a wall-clock time
    /// skipped by a spring-forward gap does not fire at all: the job has one
    /// run fewer that day. Any other hour field runs a skipped time at the
    /// first instant after the gap.
    pub skips_gap: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Second,
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Second => "second",
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::DayOfMonth => "day-of-month",
            Field::Month => "month",
            Field::DayOfWeek => "day-of-week",
        }
    }

    /// Values that may be written; 7 is accepted as Sunday.
    fn bounds(self) -> (u32, u32) {
        match self {
            Field::Second | Field::Minute => (0, 59),
            Field::Hour => (0, 23),
            Field::DayOfMonth => (1, 31),
            Field::Month => (1, 12),
            Field::DayOfWeek => (0, 7),
        }
    }

    /// Upper end of `*/N` and `A/N`. croniter stops weekdays at 6, which
    /// matters for `1/2` (Mon, Wed, Fri — not Sunday too).
    fn step_max(self) -> u32 {
        match self {
            Field::DayOfWeek => 6,
            other => other.bounds().1,
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            Field::Month => &MONTH_NAMES,
            Field::DayOfWeek => &DAY_NAMES,
            _ => &[],
        }
    }

    /// Value of the first name in `names()`.
    fn name_base(self) -> u32 {
        match self {
            Field::Month => 1,
            _ => 0,
        }
    }
}

/// Bit `v` set when value `v` matches. Weekdays are stored 0-6 (7 folded
/// into 0).
type Set = u64;

fn full_set(field: Field) -> Set {
    let (lo, _) = field.bounds();
    range_set(lo, field.step_max(), 1)
}

fn range_set(lo: u32, hi: u32, step: u32) -> Set {
    let mut set = 0;
    let mut v = lo;
    while v <= hi {
        set |= 1 << v;
        v = match v.checked_add(step) {
            Some(next) => next,
            None => break,
        };
    }
    set
}

fn render(set: Set) -> String {
    let mut out = String::new();
    for v in 0..64 {
        if set & (1 << v) != 0 {
            if !out.is_empty() {
                out.push(',');
            }
            let _ = write!(out, "{v}");
        }
    }
    out
}

const MACROS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

/// Validates `expression`; the error is the reason only (the caller adds
/// the expression itself).
pub(super) fn validate(expression: &str) -> Result<Validated, String> {
    let trimmed = expression.trim_ascii();
    if trimmed.is_empty() {
        return Err("expression is empty".to_string());
    }
    let body = if trimmed.starts_with('@') {
        expand_macro(trimmed)?
    } else {
        trimmed
    };

    // croniter splits on ASCII whitespace only; anything else stays inside a
    // field and is rejected there as garbage.
    if let Some(c) = body.chars().find(|c| c.is_whitespace() && !c.is_ascii()) {
        return Err(format!(
            "contains the non-ASCII space U+{:04X}; separate fields with ordinary spaces",
            u32::from(c)
        ));
    }
    let raw: Vec<&str> = body.split_ascii_whitespace().collect();
    let (has_seconds, fields): (bool, [(Field, &str); 6]) = match raw.as_slice() {
        [mi, h, dom, mo, dow] => (
            false,
            [
                (Field::Second, "0"),
                (Field::Minute, mi),
                (Field::Hour, h),
                (Field::DayOfMonth, dom),
                (Field::Month, mo),
                (Field::DayOfWeek, dow),
            ],
        ),
        [s, mi, h, dom, mo, dow] => (
            true,
            [
                (Field::Second, s),
                (Field::Minute, mi),
                (Field::Hour, h),
                (Field::DayOfMonth, dom),
                (Field::Month, mo),
                (Field::DayOfWeek, dow),
            ],
        ),
        [_, _, _, _, _, _, _] => {
            return Err(
                "found 7 fields; a year field is not supported (expected 5 fields \
                 \"minute hour day-of-month month day-of-week\", or 6 with seconds first)"
                    .to_string(),
            )
        }
        other => {
            return Err(format!(
                "found {} field{}; expected 5 fields \"minute hour day-of-month month \
                 day-of-week\", or 6 with seconds first",
                other.len(),
                if other.len() == 1 { "" } else { "s" }
            ))
        }
    };

    let mut sets = [0 as Set; 6];
    for (i, (field, text)) in fields.iter().enumerate() {
        sets[i] = parse_field(*field, text).map_err(|e| format!("{} field: {e}", field.name()))?;
    }
    let [seconds, minutes, hours, dom, months, dow] = sets;
    let dom_raw = fields[3].1;
    let dow_raw = fields[5].1;

    // croniter's "restricted" test: a field is unrestricted when written `*`,
    // or when it covers every value and the *other* day field contains a `*`
    // somewhere. When either day field is unrestricted the two combine with
    // AND, otherwise with OR. Hence `*/2` days with `MON-FRI` is OR (Vixie
    // would AND), while `1-31` days with `*/2` weekdays is only the weekdays.
    let dom_star = dom_raw == "*" || (dom == full_set(Field::DayOfMonth) && dow_raw.contains('*'));
    let dow_star = dow_raw == "*" || (dow == full_set(Field::DayOfWeek) && dom_raw.contains('*'));

    // With AND semantics the day of month alone decides, so it must be a day
    // that some selected month has (29 February counts: leap years).
    if !dom_star && dow_star {
        const MONTH_DAYS: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        let first_day = dom.trailing_zeros();
        let longest = (1..=12u32)
            .filter(|m| months & (1 << m) != 0)
            .map(|m| MONTH_DAYS[(m - 1) as usize])
            .max()
            .unwrap_or(0);
        if first_day > longest {
            return Err(format!(
                "day-of-month field: day {first_day} never occurs in month(s) {}, so the \
                 expression never fires",
                render(months)
            ));
        }
    }

    let plain = |set: Set, field: Field| {
        if set == full_set(field) {
            "*".to_string()
        } else {
            render(set)
        }
    };
    let canonical = format!(
        "{} {} {} {} {} {}",
        plain(seconds, Field::Second),
        plain(minutes, Field::Minute),
        plain(hours, Field::Hour),
        if dom_star {
            "*".to_string()
        } else {
            render(dom)
        },
        plain(months, Field::Month),
        if dow_star {
            "*".to_string()
        } else {
            render(dow)
        },
    );
    let hour_raw = fields[2].1;
    Ok(Validated {
        canonical,
        has_seconds,
        fires_twice_in_fold: hour_raw == "*" || hour_raw.contains('/'),
        skips_gap: hour_raw == "*",
    })
}

fn expand_macro(trimmed: &str) -> Result<&'static str, String> {
    if trimmed.split_ascii_whitespace().nth(1).is_some() {
        return Err(format!(
            "a macro must be the whole expression, found {trimmed:?}"
        ));
    }
    if trimmed.eq_ignore_ascii_case("@reboot") {
        return Err("@reboot is not supported: it has no fire times".to_string());
    }
    MACROS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(trimmed))
        .map(|(_, body)| *body)
        .ok_or_else(|| {
            format!(
                "unknown macro {trimmed:?}; expected one of @yearly, @annually, @monthly, \
                 @weekly, @daily, @midnight, @hourly"
            )
        })
}

fn parse_field(field: Field, text: &str) -> Result<Set, String> {
    if text == "*" {
        return Ok(full_set(field));
    }
    let mut set = 0;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("empty list item in {text:?}"));
        }
        set |= parse_item(field, item)?;
    }
    Ok(set)
}

/// One list item: `*`, `A`, `A-B`, each optionally `/N`, or `A/N` (croniter:
/// A through the field maximum).
fn parse_item(field: Field, item: &str) -> Result<Set, String> {
    let (base, step) = match item.split_once('/') {
        Some((base, step_text)) => {
            if base.is_empty() {
                return Err(format!(
                    "{item:?} has no start before \"/\"; write \"*/{step_text}\""
                ));
            }
            (base, Some(parse_step(item, step_text)?))
        }
        None => (item, None),
    };

    let (lo, hi) = if base == "*" {
        (field.bounds().0, field.step_max())
    } else if let Some((a, b)) = split_range(base) {
        if a == "*" || b.contains('-') {
            return Err(format!("{item:?} is not a valid range; write A-B"));
        }
        let lo = parse_value(field, a, item, false)?;
        let hi = parse_value(field, b, item, true)?;
        // Equal ends name one value, as in Unix cron (croniter reads `5-5` as every value,
        // which no one writes on purpose). Raw equality also catches SUN-SUN, whose end
        // would read as 7.
        if lo == hi || parse_value(field, b, item, false)? == lo {
            let mut set = range_set(lo, lo, 1);
            if field == Field::DayOfWeek && set & (1 << 7) != 0 {
                set = (set & !(1 << 7)) | 1;
            }
            return Ok(set);
        }
        if lo > hi {
            let hint = if field == Field::DayOfWeek && lo == 7 {
                format!(" (7 is Sunday; write \"0-{hi}\")")
            } else {
                String::new()
            };
            return Err(format!(
                "range {item:?} is reversed: its start is after its end, and wraparound \
                 ranges are not Unix cron{hint}"
            ));
        }
        (lo, hi)
    } else {
        let v = parse_value(field, base, item, false)?;
        match step {
            // croniter reads Sunday-as-7 with a step as Sunday-as-0.
            Some(_) if field == Field::DayOfWeek && v == 7 => (0, field.step_max()),
            Some(_) => (v, field.step_max()),
            None => (v, v),
        }
    };

    let mut set = range_set(lo, hi, step.unwrap_or(1));
    if field == Field::DayOfWeek && set & (1 << 7) != 0 {
        set = (set & !(1 << 7)) | 1;
    }
    Ok(set)
}

/// Splits `A-B`; `None` when there is no `-`. A leading `-` is left for
/// `parse_value` to report as a negative number.
fn split_range(base: &str) -> Option<(&str, &str)> {
    let idx = base.get(1..)?.find('-')? + 1;
    Some((&base[..idx], &base[idx + 1..]))
}

fn parse_step(item: &str, text: &str) -> Result<u32, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "step {text:?} in {item:?} is not a positive whole number"
        ));
    }
    match text.parse::<u32>() {
        Ok(0) => Err(format!("step 0 in {item:?} must be at least 1")),
        Ok(n) => Ok(n),
        // Absurdly long digit strings: as good as any step past the range.
        Err(_) => Ok(u32::MAX),
    }
}

/// Parses a number or a name. `range_end` lets `SUN` close a weekday range
/// as 7, so `FRI-SUN` means Friday through Sunday as in croniter and croner.
fn parse_value(field: Field, token: &str, item: &str, range_end: bool) -> Result<u32, String> {
    let (lo, hi) = field.bounds();
    if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
        let value = token.parse::<u32>().unwrap_or(u32::MAX);
        if value < lo || value > hi {
            let display = if value == u32::MAX {
                token.to_string()
            } else {
                value.to_string()
            };
            return Err(format!("value {display} is out of range {lo}-{hi}"));
        }
        return Ok(value);
    }
    if !token.is_empty() && token.bytes().all(|b| b.is_ascii_alphabetic()) {
        let names = field.names();
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(token)) {
            let value = field.name_base() + i as u32;
            return Ok(if range_end && field == Field::DayOfWeek && value == 0 {
                7
            } else {
                value
            });
        }
        if let Some(ext) = extension(token) {
            return Err(ext);
        }
        return Err(match field {
            Field::Month => format!("unknown month name {token:?}; expected JAN-DEC"),
            Field::DayOfWeek => format!("unknown day name {token:?}; expected SUN-SAT"),
            _ => format!("{token:?} is not a number"),
        });
    }
    if let Some(ext) = extension(token) {
        return Err(ext);
    }
    if token.is_empty() {
        return Err(format!("{item:?} is missing a value"));
    }
    if token.starts_with('-') {
        return Err(format!("negative value {token:?} is not allowed"));
    }
    Err(format!("{token:?} is not a number"))
}

/// Names the non-Unix extension a token uses, if it looks like one.
fn extension(token: &str) -> Option<String> {
    let upper = token.to_ascii_uppercase();
    let what = if upper == "?" {
        "\"?\" (no specific value), a Quartz/croner extension; write \"*\""
    } else if upper.contains('#') {
        "\"#\" (nth weekday of the month), a croner/Quartz extension, not Unix cron"
    } else if upper.starts_with('+') {
        "the \"+\" prefix (AND of day fields), a croner extension, not Unix cron"
    } else if upper == "H" || upper.starts_with("H(") {
        "\"H\" (hashed value), a Jenkins/croniter extension, not Unix cron"
    } else if upper.starts_with('R') && (upper == "R" || upper.starts_with("R(")) {
        "\"R\" (random value), a croniter extension, not Unix cron"
    } else if upper.contains('W') && upper.bytes().any(|b| b.is_ascii_digit()) || upper == "LW" {
        "\"W\" (nearest weekday), a croner/Quartz extension, not Unix cron"
    } else if upper.contains('L')
        && (upper == "L" || upper.bytes().all(|b| b.is_ascii_digit() || b == b'L'))
    {
        "\"L\" (last day or weekday of the month), a croner/Quartz extension, not Unix cron"
    } else {
        return None;
    };
    Some(format!("{token:?} uses {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(expr: &str) -> String {
        validate(expr).expect(expr).canonical
    }

    fn err(expr: &str) -> String {
        validate(expr).expect_err(expr)
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(canon("* * * * *"), "0 * * * * *");
        assert_eq!(
            canon("*/15 9-17 * * mon-FRI"),
            "0 0,15,30,45 9,10,11,12,13,14,15,16,17 * * 1,2,3,4,5"
        );
        assert_eq!(canon("0 0 * * 7"), "0 0 0 * * 0");
        assert_eq!(canon("0 0 * * 5-7"), "0 0 0 * * 0,5,6");
        assert_eq!(canon("0 0 * * fri-sun"), "0 0 0 * * 0,5,6");
        assert_eq!(canon("0 0 * * 0-7"), "0 0 0 * * *");
        assert_eq!(canon("0 0 * * 1/2"), "0 0 0 * * 1,3,5");
        assert_eq!(canon("0 0 * * 7/2"), "0 0 0 * * 0,2,4,6");
        assert_eq!(canon("0 0 * * 3-7/2"), "0 0 0 * * 0,3,5");
        assert_eq!(canon("10/15 * * * *"), "0 10,25,40,55 * * * *");
        assert_eq!(canon("0 0 1 jan-mar/2 *"), "0 0 0 1 1,3 *");
        assert_eq!(canon("5 0 0 1 1 *"), "5 0 0 1 1 *");
        assert_eq!(canon("@WEEKLY"), "0 0 0 * * 0");
        assert_eq!(canon(" 05 * * * * "), "0 5 * * * *");
    }

    #[test]
    fn day_fields_follow_croniter() {
        // Both restricted: OR, kept as two lists for croner.
        assert_eq!(
            canon("0 0 */2 * 1-5"),
            "0 0 0 1,3,5,7,9,11,13,15,17,19,21,23,25,27,29,31 * 1,2,3,4,5"
        );
        // Every day of month, and the weekday field has a '*': only weekdays.
        assert_eq!(canon("0 0 */1 * */2"), "0 0 0 * * 0,2,4,6");
        // Every day of month without '*' in weekdays: OR, so every day.
        assert!(canon("0 0 1-31 * 1").starts_with("0 0 0 1,2,3"));
        // Every weekday and a '*' in days of month: only the days of month.
        assert_eq!(canon("0 0 */10 * 0-6"), "0 0 0 1,11,21,31 * *");
    }

    #[test]
    fn fold_rule_follows_hour_field() {
        assert!(validate("30 * * * *").unwrap().fires_twice_in_fold);
        assert!(validate("30 */1 * * *").unwrap().fires_twice_in_fold);
        assert!(validate("30 1,*/6 * * *").unwrap().fires_twice_in_fold);
        assert!(validate("@hourly").unwrap().fires_twice_in_fold);
        assert!(!validate("*/30 1 * * *").unwrap().fires_twice_in_fold);
        assert!(!validate("30 0-23 * * *").unwrap().fires_twice_in_fold);
        assert!(!validate("@daily").unwrap().fires_twice_in_fold);
    }

    #[test]
    fn gap_rule_follows_hour_field() {
        // Exactly `*`: times skipped by a spring-forward gap do not fire.
        assert!(validate("15 * * * *").unwrap().skips_gap);
        assert!(validate("*/10 * * * *").unwrap().skips_gap);
        assert!(validate("0 15 * * * *").unwrap().skips_gap);
        assert!(validate("@hourly").unwrap().skips_gap);
        assert!(validate(" 30  *  * * * ").unwrap().skips_gap);
        // Anything else, steps included, runs them at the end of the gap.
        assert!(!validate("30 */1 * * *").unwrap().skips_gap);
        assert!(!validate("30 */2 * * *").unwrap().skips_gap);
        assert!(!validate("30 0-23 * * *").unwrap().skips_gap);
        assert!(!validate("30 1-5 * * *").unwrap().skips_gap);
        assert!(!validate("30 2,3 * * *").unwrap().skips_gap);
        assert!(!validate("30 2 * * *").unwrap().skips_gap);
        assert!(!validate("@daily").unwrap().skips_gap);
    }

    #[test]
    fn rejections() {
        assert_eq!(
            err("61 * * * *"),
            "minute field: value 61 is out of range 0-59"
        );
        assert_eq!(
            err("* 24 * * *"),
            "hour field: value 24 is out of range 0-23"
        );
        assert_eq!(
            err("* * 0 * *"),
            "day-of-month field: value 0 is out of range 1-31"
        );
        assert_eq!(
            err("* * * 13 *"),
            "month field: value 13 is out of range 1-12"
        );
        assert_eq!(
            err("* * * * 8"),
            "day-of-week field: value 8 is out of range 0-7"
        );
        assert_eq!(
            err("60 * * * * *"),
            "second field: value 60 is out of range 0-59"
        );
        assert!(err("*/0 * * * *").contains("step 0"));
        assert!(err("5-3 * * * *").contains("\"5-3\" is reversed"));
        assert!(err("0 0 * * 7-5").contains("write \"0-5\""));
        assert!(err("0 0 L * *").starts_with("day-of-month field: \"L\""));
        assert!(err("0 0 15W * *").contains("\"W\""));
        assert!(err("0 0 * * 5L").contains("\"L\""));
        assert!(err("0 0 * * 1#2").contains("\"#\""));
        assert!(err("0 0 ? * 1").contains("\"?\""));
        assert!(err("0 0 * * +1").contains("\"+\""));
        assert!(err("H * * * *").contains("\"H\""));
        assert!(err("0 0 * * * * 2026").contains("year field"));
        assert!(err("@reboot").contains("@reboot"));
        assert!(err("@every").contains("unknown macro"));
        assert!(err("* * * *").contains("found 4 fields"));
        assert!(err("1,,2 * * * *").contains("empty list item"));
        assert!(err("0 0 * * monday").contains("unknown day name \"monday\""));
        assert!(err("0 0 * foo *").contains("unknown month name \"foo\""));
        assert!(err("0 0 * * jan").contains("unknown day name"));
        assert!(err("x * * * *").contains("\"x\" is not a number"));
        assert!(err("-5 * * * *").contains("negative"));
        assert!(err("/5 * * * *").contains("no start"));
        assert!(err("*/x * * * *").contains("step \"x\""));
        assert!(err("0 0 31 2,4 *").contains("never occurs"));
        assert!(err("").contains("empty"));
        assert!(err("1-60/5 * * * *").contains("value 60 is out of range 0-59"));
        assert!(err("99999999999 * * * *").contains("value 99999999999"));
    }

    #[test]
    fn leap_day_is_possible() {
        assert!(validate("0 0 29 2 *").is_ok());
        assert!(
            validate("0 0 31 2 1").is_ok(),
            "OR with weekday always fires"
        );
    }
}
