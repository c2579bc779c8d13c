//! Cron expression validation: reads Unix crontab the way Python's croniter
//! does, with croniter's `L`, `nW`, `D#n` and `LD` day forms, rejects
//! everything else with a message naming the field and token, and builds the
//! [`Pattern`] that `pattern.rs` matches.

use super::pattern::{Days, Pattern, Set, NTH_LAST};

/// An expression that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Validated {
    pub pattern: Pattern,
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

/// `1,3,5`: the values of `set`, for messages.
fn render(set: Set) -> String {
    (0..64)
        .filter(|v| set & (1 << v) != 0)
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",")
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
        if matches!(field, Field::DayOfMonth | Field::DayOfWeek) {
            continue;
        }
        sets[i] = parse_field(*field, text).map_err(|e| format!("{} field: {e}", field.name()))?;
    }
    let [seconds, minutes, hours, _, months, _] = sets;
    let dom_raw = fields[3].1;
    let dow_raw = fields[5].1;
    let dom = parse_dom(dom_raw).map_err(|e| format!("day-of-month field: {e}"))?;
    let dow = parse_dow(dow_raw).map_err(|e| format!("day-of-week field: {e}"))?;
    let days = combine_days(dom_raw, &dom, dow_raw, &dow, months)?;

    let hour_raw = fields[2].1;
    Ok(Validated {
        pattern: Pattern {
            seconds,
            minutes,
            hours,
            months,
            days,
        },
        has_seconds,
        fires_twice_in_fold: hour_raw == "*" || hour_raw.contains('/'),
        skips_gap: hour_raw == "*",
    })
}

/// The day-of-month field: plain values, `L` (the last day) and at most one
/// `nW` (nearest weekday), which croniter accepts only as the whole field.
#[derive(Debug, Default)]
struct DomField {
    set: Set,
    last: bool,
    nearest: Option<(u32, String)>,
}

/// The day-of-week field: plain weekdays, or `D#n` / `LD` forms (croniter
/// refuses a mix of the two).
#[derive(Debug, Default)]
struct DowField {
    set: Set,
    /// Per weekday 0-6: bit `n` for `D#n`, [`NTH_LAST`] for `LD`.
    nth: [u8; 7],
    /// The first `#` or `L` item, for messages.
    nth_item: Option<String>,
    /// The first plain item, for messages.
    plain_item: Option<String>,
}

/// How the two day fields combine, as croniter 6 computes it.
fn combine_days(
    dom_raw: &str,
    dom: &DomField,
    dow_raw: &str,
    dow: &DowField,
    months: Set,
) -> Result<Days, String> {
    let dom_every_day = dom.set == full_set(Field::DayOfMonth) && dom.nearest.is_none();
    let dow_every_day = dow.set == full_set(Field::DayOfWeek) && dow.nth_item.is_none();

    // croniter evaluates `D#n`/`LD` and `nW` with a restricted other day
    // field not as the documented OR: it ANDs them in one pass and keeps
    // only the special field in the other, so the restricted field is
    // ignored, or the search fails when the two never coincide (`0 0 L *
    // 5#3`). Such an expression has no meaning worth keeping; refuse it.
    if let Some(item) = &dow.nth_item {
        if !dom_every_day {
            return Err(format!(
                "day-of-week field: {item:?} needs \"*\" as the day of month, not {dom_raw:?}: \
                 croniter ignores the day of month then, or finds no fire time; for either of \
                 them give a list of expressions"
            ));
        }
        return Ok(Days::Nth(dow.nth));
    }
    if let Some((n, item)) = &dom.nearest {
        if !dow_every_day {
            return Err(format!(
                "day-of-month field: {item:?} needs \"*\" as the day of week, not {dow_raw:?}: \
                 croniter ignores the day of week then, or finds no fire time; for either of \
                 them give a list of expressions"
            ));
        }
        return Ok(Days::NearestWeekday(*n));
    }

    // croniter's "restricted" test: a field is unrestricted when written `*`,
    // or when it covers every value and the *other* day field contains a `*`
    // somewhere (`L` counts as a value of its own, so `1-31,L` covers more
    // than every day). When either day field is unrestricted the two combine
    // with AND, otherwise with OR. Hence `*/2` days with `MON-FRI` is OR
    // (Vixie would AND), while `1-31` days with `*/2` weekdays is only the
    // weekdays.
    let dom_star = dom_raw == "*" || (dom_every_day && !dom.last && dow_raw.contains('*'));
    let dow_star = dow_raw == "*" || (dow_every_day && dom_raw.contains('*'));

    // With AND semantics the day of month alone decides, so it must be a day
    // that some selected month has (29 February counts: leap years).
    if !dom_star && dow_star && !dom.last {
        const MONTH_DAYS: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        let first_day = dom.set.trailing_zeros();
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
    Ok(Days::Lists {
        dom: (!dom_star).then_some((dom.set, dom.last)),
        dow: (!dow_star).then_some(dow.set),
    })
}

/// `nW` or `Wn` (croniter reads both), any case: the digits.
fn nearest_weekday_digits(item: &str) -> Option<&str> {
    let digits = item
        .strip_suffix(['W', 'w'])
        .or_else(|| item.strip_prefix(['W', 'w']))?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

fn parse_dom(text: &str) -> Result<DomField, String> {
    let field = Field::DayOfMonth;
    let mut out = DomField::default();
    if text == "*" {
        out.set = full_set(field);
        return Ok(out);
    }
    let items: Vec<&str> = text.split(',').collect();
    for item in &items {
        if item.is_empty() {
            return Err(format!("empty list item in {text:?}"));
        }
        if item.eq_ignore_ascii_case("L") {
            out.last = true;
        } else if let Some(digits) = nearest_weekday_digits(item) {
            let n = digits.parse::<u32>().unwrap_or(u32::MAX);
            if !(1..=31).contains(&n) {
                return Err(format!(
                    "day {digits} in {item:?} is out of range 1-31 (\"15W\" is the weekday \
                     nearest the 15th)"
                ));
            }
            if items.len() > 1 {
                return Err(format!(
                    "{item:?} (nearest weekday) must be the whole field, not part of a list \
                     (croniter refuses {text:?})"
                ));
            }
            out.nearest = Some((n, item.to_string()));
            out.set |= 1 << n;
        } else {
            out.set |= parse_item(field, item)?;
        }
    }
    Ok(out)
}

fn parse_dow(text: &str) -> Result<DowField, String> {
    let field = Field::DayOfWeek;
    let mut out = DowField::default();
    if text == "*" {
        out.set = full_set(field);
        return Ok(out);
    }
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("empty list item in {text:?}"));
        }
        let last_digits = item
            .strip_prefix(['L', 'l'])
            .filter(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()));
        if let Some(digits) = last_digits {
            // `LD`: the last weekday D of the month.
            let day = parse_value(field, digits, item, false)? % 7;
            out.nth[day as usize] |= NTH_LAST;
            out.nth_item.get_or_insert_with(|| item.to_string());
        } else if let Some((day, nth)) = item.split_once('#') {
            // `D#n`: the n-th weekday D of the month.
            let n = match nth.parse::<u8>() {
                Ok(n @ 1..=5) if nth.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => {
                    return Err(format!(
                        "the occurrence {nth:?} in {item:?} must be 1-5 (\"5#3\" is the third \
                         Friday)"
                    ))
                }
            };
            let days = match split_range(day) {
                // croniter takes ranges only of day names (`MON-FRI#2`).
                Some((a, b))
                    if [a, b]
                        .iter()
                        .all(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphabetic())) =>
                {
                    parse_item(field, day).map_err(|e| format!("{e} (in {item:?})"))?
                }
                None if !day.contains('/') && day != "*" => {
                    1 << (parse_value(field, day, item, false)? % 7)
                }
                _ => {
                    return Err(format!(
                        "{item:?}: \"#\" takes a single weekday (\"5#3\") or a range of day \
                         names (\"MON-FRI#2\"), not numbers, steps or \"*\""
                    ))
                }
            };
            for d in 0..7 {
                if days & (1 << d) != 0 {
                    out.nth[d] |= 1 << n;
                }
            }
            out.nth_item.get_or_insert_with(|| item.to_string());
        } else {
            out.set |= parse_item(field, item)?;
            out.plain_item.get_or_insert_with(|| item.to_string());
        }
    }
    if let (Some(nth), Some(plain)) = (&out.nth_item, &out.plain_item) {
        return Err(format!(
            "{nth:?} and the plain weekday {plain:?} cannot share the field (croniter refuses \
             the mix); give a list of expressions instead"
        ));
    }
    Ok(out)
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
        // croniter: `L` may end a day-of-month range (`10-L`, `10-L/5`) and
        // reads as 31 there: through the month's last day.
        let last_end = field == Field::DayOfMonth && b.eq_ignore_ascii_case("L");
        let value_of = |range_end| {
            if last_end {
                Ok(31)
            } else {
                parse_value(field, b, item, range_end)
            }
        };
        let hi = value_of(true)?;
        // Equal ends name one value, as in Unix cron (croniter reads `5-5` as every value,
        // which no one writes on purpose). Raw equality also catches SUN-SUN, whose end
        // would read as 7.
        if lo == hi || value_of(false)? == lo {
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
        if let Some(ext) = extension(field, token, item) {
            return Err(ext);
        }
        return Err(match field {
            Field::Month => format!("unknown month name {token:?}; expected JAN-DEC"),
            Field::DayOfWeek => format!("unknown day name {token:?}; expected SUN-SAT"),
            _ => format!("{token:?} is not a number"),
        });
    }
    if let Some(ext) = extension(field, token, item) {
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

/// Names the extension or misuse a token shows, if it looks like one: the
/// croner/Quartz forms croniter refuses, and croniter's own day forms where
/// they do not belong.
fn extension(field: Field, token: &str, item: &str) -> Option<String> {
    let upper = token.to_ascii_uppercase();
    let is_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let is_day_name = |s: &str| DAY_NAMES.contains(&s);
    // `L`, `L5`, `LFRI`, `5L`.
    let last_form = upper == "L"
        || upper
            .strip_prefix('L')
            .is_some_and(|rest| is_digits(rest) || is_day_name(rest))
        || upper.strip_suffix('L').is_some_and(is_digits);
    // `W`, `LW`, `15W`, `W15`.
    let weekday_form = upper == "W"
        || upper == "LW"
        || upper.strip_suffix('W').is_some_and(is_digits)
        || upper.strip_prefix('W').is_some_and(is_digits);
    let what = if upper == "?" {
        "\"?\" (no specific value) is a Quartz/croner extension; write \"*\"".to_string()
    } else if upper.starts_with('+') {
        "the \"+\" prefix (AND of day fields) is a croner extension, not Unix cron".to_string()
    } else if upper == "H" || upper.starts_with("H(") {
        "\"H\" (hashed value) is a Jenkins/croniter extension jobu does not support".to_string()
    } else if upper.starts_with('R') && (upper == "R" || upper.starts_with("R(")) {
        "\"R\" (random value) is a croniter extension jobu does not support".to_string()
    } else if upper.contains('#') {
        match field {
            Field::DayOfWeek => "\"#\" takes a weekday and an occurrence 1-5, as in \"5#3\" \
                                 (the third Friday)"
                .to_string(),
            _ => "\"#\" (nth weekday of the month) belongs in the day-of-week field, as in \
                  \"5#3\" (the third Friday)"
                .to_string(),
        }
    } else if weekday_form {
        match field {
            Field::DayOfMonth if upper == "LW" => {
                "\"LW\" (last weekday of the month) is not supported (croniter refuses it)"
                    .to_string()
            }
            Field::DayOfMonth => "\"W\" takes one day of month, as in \"15W\" (the weekday \
                                  nearest the 15th), not a range or step"
                .to_string(),
            _ => "\"W\" (nearest weekday) belongs in the day-of-month field, as in \"15W\""
                .to_string(),
        }
    } else if last_form {
        match field {
            Field::DayOfMonth => "\"L\" (the month's last day) stands alone or ends a range \
                                  (\"10-L\"); offsets, steps and \"LW\" are not supported"
                .to_string(),
            Field::DayOfWeek if upper.starts_with('L') && upper.len() > 1 => {
                "\"L\" takes a weekday number 0-7, as in \"L5\" (the last Friday), not a name \
                 or range"
                    .to_string()
            }
            Field::DayOfWeek => {
                let hint = upper
                    .strip_suffix('L')
                    .filter(|d| is_digits(d))
                    .map_or("L5".to_string(), |d| format!("L{d}"));
                format!(
                    "\"L\" goes before the weekday in the day-of-week field: write \"{hint}\" \
                     for the last such weekday of the month (croniter's form)"
                )
            }
            _ => "\"L\" (last) belongs in the day-of-month or day-of-week field".to_string(),
        }
    } else {
        return None;
    };
    Some(format!("{item:?}: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Six fields, seconds first, numbers only (and the day forms), for
    /// comparing what an expression was read as.
    fn canon(expr: &str) -> String {
        let p = validate(expr).expect(expr).pattern;
        let plain = |set: Set, field: Field| {
            if set == full_set(field) {
                "*".to_string()
            } else {
                render(set)
            }
        };
        let (dom, dow) = match &p.days {
            Days::Lists { dom, dow } => (
                dom.map_or("*".to_string(), |(set, last)| {
                    let mut parts = Vec::new();
                    if set != 0 {
                        parts.push(render(set));
                    }
                    if last {
                        parts.push("L".to_string());
                    }
                    parts.join(",")
                }),
                dow.map_or("*".to_string(), render),
            ),
            Days::NearestWeekday(n) => (format!("{n}W"), "*".to_string()),
            Days::Nth(table) => {
                let mut parts = Vec::new();
                for (d, wanted) in table.iter().enumerate() {
                    for n in 1..=5 {
                        if wanted & (1 << n) != 0 {
                            parts.push(format!("{d}#{n}"));
                        }
                    }
                    if wanted & NTH_LAST != 0 {
                        parts.push(format!("L{d}"));
                    }
                }
                ("*".to_string(), parts.join(","))
            }
        };
        format!(
            "{} {} {} {dom} {} {dow}",
            plain(p.seconds, Field::Second),
            plain(p.minutes, Field::Minute),
            plain(p.hours, Field::Hour),
            plain(p.months, Field::Month),
        )
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
        // Both restricted: OR, the two lists kept side by side.
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
    fn croniter_day_forms() {
        assert_eq!(canon("0 0 L * *"), "0 0 0 L * *");
        assert_eq!(canon("0 0 1,15,l * *"), "0 0 0 1,15,L * *");
        assert_eq!(canon("0 0 L,L * *"), "0 0 0 L * *");
        assert_eq!(canon("0 0 10-L/5 * *"), "0 0 0 10,15,20,25,30 * *");
        assert_eq!(canon("0 0 31-L * *"), "0 0 0 31 * *");
        // Every day, and the weekday field is `*`.
        assert_eq!(canon("0 0 1-L * *"), "0 0 0 * * *");
        assert_eq!(canon("0 0 15W * *"), "0 0 0 15W * *");
        assert_eq!(canon("0 0 w1 * 0-6"), "0 0 0 1W * *");
        assert_eq!(canon("0 0 0015w * */1"), "0 0 0 15W * *");
        assert_eq!(canon("0 0 * * 5#3"), "0 0 0 * * 5#3");
        assert_eq!(canon("0 0 * * mon#2,L5"), "0 0 0 * * 1#2,L5");
        assert_eq!(canon("0 0 * * 05#02,5#2"), "0 0 0 * * 5#2");
        assert_eq!(canon("0 0 * * L7,l0"), "0 0 0 * * L0");
        assert_eq!(canon("0 0 * * 7#1"), "0 0 0 * * 0#1");
        assert_eq!(canon("0 0 * * MON-WED#2"), "0 0 0 * * 1#2,2#2,3#2");
        assert_eq!(canon("0 0 * * fri-sun#1"), "0 0 0 * * 0#1,5#1,6#1");
        assert_eq!(canon("0 0 1-31 * fri#5"), "0 0 0 * * 5#5");
        assert_eq!(canon("0 0 1-31,L * L5"), "0 0 0 * * L5");
        // `L` with plain weekdays: croniter's OR.
        assert_eq!(canon("0 0 L * 5"), "0 0 0 L * 5");
        assert_eq!(canon("0 0 1,L * MON"), "0 0 0 1,L * 1");
        assert_eq!(canon("0 0 L * */2"), "0 0 0 L * 0,2,4,6");
        // `L` is a value of its own: `1-31,L` is not "every day" for the
        // restricted test, so this is OR (every day), not the weekdays alone.
        assert!(canon("0 0 1-31,L * */2").ends_with(",31,L * 0,2,4,6"));
    }

    #[test]
    #[rustfmt::skip]
    fn day_form_refusals() {
        let cases: &[(&str, &str)] = &[
            ("0 0 * * 5L", "day-of-week field: \"5L\": \"L\" goes before the weekday in the day-of-week field: write \"L5\" for the last such weekday of the month (croniter's form)"),
            ("0 0 * * L", "day-of-week field: \"L\": \"L\" goes before the weekday in the day-of-week field: write \"L5\" for the last such weekday of the month (croniter's form)"),
            ("0 0 * * Lfri", "day-of-week field: \"Lfri\": \"L\" takes a weekday number 0-7, as in \"L5\" (the last Friday), not a name or range"),
            ("0 0 * * L8", "day-of-week field: value 8 is out of range 0-7"),
            ("0 0 LW * *", "day-of-month field: \"LW\": \"LW\" (last weekday of the month) is not supported (croniter refuses it)"),
            ("0 0 L-3 * *", "day-of-month field: \"L-3\": \"L\" (the month's last day) stands alone or ends a range (\"10-L\"); offsets, steps and \"LW\" are not supported"),
            ("0 0 L/2 * *", "day-of-month field: \"L/2\": \"L\" (the month's last day) stands alone or ends a range (\"10-L\"); offsets, steps and \"LW\" are not supported"),
            ("0 0 * * 1-5#2", "day-of-week field: \"1-5#2\": \"#\" takes a single weekday (\"5#3\") or a range of day names (\"MON-FRI#2\"), not numbers, steps or \"*\""),
            ("0 0 * * */2#2", "day-of-week field: \"*/2#2\": \"#\" takes a single weekday (\"5#3\") or a range of day names (\"MON-FRI#2\"), not numbers, steps or \"*\""),
            ("0 0 * * 5#6", "day-of-week field: the occurrence \"6\" in \"5#6\" must be 1-5 (\"5#3\" is the third Friday)"),
            ("0 0 * * 5#0", "day-of-week field: the occurrence \"0\" in \"5#0\" must be 1-5 (\"5#3\" is the third Friday)"),
            ("0 0 * * 8#1", "day-of-week field: value 8 is out of range 0-7"),
            ("0 0 * * jan#1", "day-of-week field: unknown day name \"jan\"; expected SUN-SAT"),
            ("0 0 1#2 * *", "day-of-month field: \"1#2\": \"#\" (nth weekday of the month) belongs in the day-of-week field, as in \"5#3\" (the third Friday)"),
            ("0 0 * * 1W", "day-of-week field: \"1W\": \"W\" (nearest weekday) belongs in the day-of-month field, as in \"15W\""),
            ("0 1W * * *", "hour field: \"1W\": \"W\" (nearest weekday) belongs in the day-of-month field, as in \"15W\""),
            ("0 0 * L *", "month field: \"L\": \"L\" (last) belongs in the day-of-month or day-of-week field"),
            ("0 0 1-5W * *", "day-of-month field: \"1-5W\": \"W\" takes one day of month, as in \"15W\" (the weekday nearest the 15th), not a range or step"),
            ("0 0 W * *", "day-of-month field: \"W\": \"W\" takes one day of month, as in \"15W\" (the weekday nearest the 15th), not a range or step"),
            ("0 0 32W * *", "day-of-month field: day 32 in \"32W\" is out of range 1-31 (\"15W\" is the weekday nearest the 15th)"),
            ("0 0 15W,L * *", "day-of-month field: \"15W\" (nearest weekday) must be the whole field, not part of a list (croniter refuses \"15W,L\")"),
            ("0 0 * * 1#2,3", "day-of-week field: \"1#2\" and the plain weekday \"3\" cannot share the field (croniter refuses the mix); give a list of expressions instead"),
            ("0 0 * * 0-6,L5", "day-of-week field: \"L5\" and the plain weekday \"0-6\" cannot share the field (croniter refuses the mix); give a list of expressions instead"),
            ("0 0 L * 5#3", "day-of-week field: \"5#3\" needs \"*\" as the day of month, not \"L\": croniter ignores the day of month then, or finds no fire time; for either of them give a list of expressions"),
            ("0 0 15 * L5", "day-of-week field: \"L5\" needs \"*\" as the day of month, not \"15\": croniter ignores the day of month then, or finds no fire time; for either of them give a list of expressions"),
            ("0 0 15W * MON", "day-of-month field: \"15W\" needs \"*\" as the day of week, not \"MON\": croniter ignores the day of week then, or finds no fire time; for either of them give a list of expressions"),
            ("0 0 15W * 5#3", "day-of-week field: \"5#3\" needs \"*\" as the day of month, not \"15W\": croniter ignores the day of month then, or finds no fire time; for either of them give a list of expressions"),
        ];
        for (expr, want) in cases {
            assert_eq!(err(expr), *want, "{expr:?}");
        }
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
