//! Wall-clock matching of a validated expression: the first naive local
//! time at or after a given one whose fields all match.
//!
//! jobu evaluates expressions itself rather than through croner so that the
//! day rules are exactly croniter's: `L`, `nW` and `D#n` / `LD` as croniter 6
//! computes them, and its OR of the two day fields. Time zones and daylight
//! saving are `dst.rs`'s business; this module only sees naive local times,
//! as "local seconds" (the naive time read as if it were UTC).

use chrono::{DateTime, Datelike, NaiveDate, Timelike};

/// Fire times are searched up to, not including, this year.
pub(super) const YEAR_LIMIT: i32 = 5000;

/// Bit `v` set when value `v` matches.
pub(super) type Set = u64;

/// Bit `n` (1-5) of a weekday's entry in [`Days::Nth`]: its `n`-th
/// occurrence in the month.
pub(super) const NTH_LAST: u8 = 1 << 6;

/// Which days of a month match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Days {
    /// Plain day-of-month and day-of-week lists. `None` is an unrestricted
    /// field. When both are restricted a day matches if either does
    /// (croniter's OR), otherwise the restricted one decides.
    Lists {
        /// Days of month (bits 1-31) and whether `L`, the month's last day,
        /// is in the list.
        dom: Option<(Set, bool)>,
        /// Weekdays, bits 0-6, 0 Sunday.
        dow: Option<Set>,
    },
    /// `nW`: the weekday (Monday-Friday) nearest to day `n`, without leaving
    /// the month; a day the month lacks is read as its last day (croniter).
    NearestWeekday(u32),
    /// `D#n` and `LD`, per weekday 0-6 (0 Sunday): bit `n` for the `n`-th
    /// occurrence, [`NTH_LAST`] for the last one.
    Nth([u8; 7]),
}

/// The time and date fields of one expression, as sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pattern {
    pub seconds: Set,
    pub minutes: Set,
    pub hours: Set,
    /// Bits 1-12.
    pub months: Set,
    pub days: Days,
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if NaiveDate::from_ymd_opt(year, 2, 29).is_some() => 29,
        2 => 28,
        _ => 31,
    }
}

/// Bits `1..=len`.
fn month_days(len: u32) -> Set {
    ((1 << (len + 1)) - 1) & !1
}

/// Smallest value in `set` that is at least `from`.
fn next_bit(set: Set, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let rest = set & (!0 << from);
    (rest != 0).then(|| rest.trailing_zeros())
}

/// croniter's `_get_nearest_weekday`: day `n` (or the last day if the month
/// is shorter) when it is a weekday; for a Saturday the Friday before, or
/// Monday the 3rd when the 1st is a Saturday; for a Sunday the Monday
/// after, or the Friday before when the Sunday is the month's last day.
fn nearest_weekday(n: u32, len: u32, weekday_of_first: u32) -> u32 {
    let day = n.min(len);
    match (weekday_of_first + day - 1) % 7 {
        6 if day > 1 => day - 1,
        6 => day + 2,
        0 if day < len => day + 1,
        0 => day - 2,
        _ => day,
    }
}

impl Days {
    /// Matching days of `year`-`month`, bits 1-31.
    pub(super) fn mask(&self, year: i32, month: u32) -> Set {
        let len = days_in_month(year, month);
        let all = month_days(len);
        let Some(first) = NaiveDate::from_ymd_opt(year, month, 1) else {
            return 0;
        };
        // 0 Sunday .. 6 Saturday, as in cron.
        let weekday_of_first = first.weekday().num_days_from_sunday();
        match self {
            Days::Lists { dom, dow } => {
                let dom_mask = dom.map(|(set, last)| (set & all) | if last { 1 << len } else { 0 });
                let dow_mask = dow.map(|weekdays| {
                    (1..=len)
                        .filter(|d| weekdays & (1 << ((weekday_of_first + d - 1) % 7)) != 0)
                        .fold(0, |mask, d| mask | 1 << d)
                });
                match (dom_mask, dow_mask) {
                    (Some(a), Some(b)) => a | b,
                    (Some(a), None) => a,
                    (None, Some(b)) => b,
                    (None, None) => all,
                }
            }
            Days::NearestWeekday(n) => 1 << nearest_weekday(*n, len, weekday_of_first),
            Days::Nth(table) => {
                let mut mask = 0;
                for (weekday, &wanted) in (0u32..).zip(table.iter()) {
                    if wanted == 0 {
                        continue;
                    }
                    // The weekday falls on first_day, first_day + 7, ...: four
                    // or five times.
                    let first_day = 1 + (weekday + 7 - weekday_of_first) % 7;
                    let occurrences = (len - first_day) / 7 + 1;
                    for n in 1..=occurrences {
                        if wanted & (1 << n) != 0 {
                            mask |= 1 << (first_day + 7 * (n - 1));
                        }
                    }
                    if wanted & NTH_LAST != 0 {
                        mask |= 1 << (first_day + 7 * (occurrences - 1));
                    }
                }
                mask
            }
        }
    }
}

impl Pattern {
    /// First `(hour, minute, second)` of a matching day at or after the
    /// given one.
    fn first_time(&self, h: u32, m: u32, s: u32) -> Option<(u32, u32, u32)> {
        let first_minute = self.minutes.trailing_zeros();
        let first_second = self.seconds.trailing_zeros();
        let hour = next_bit(self.hours, h)?;
        if hour > h {
            return Some((hour, first_minute, first_second));
        }
        if let Some(minute) = next_bit(self.minutes, m) {
            if minute > m {
                return Some((h, minute, first_second));
            }
            if let Some(second) = next_bit(self.seconds, s) {
                return Some((h, m, second));
            }
            if let Some(minute) = next_bit(self.minutes, m + 1) {
                return Some((h, minute, first_second));
            }
        }
        let hour = next_bit(self.hours, h + 1)?;
        Some((hour, first_minute, first_second))
    }

    /// First matching local second at (`inclusive`) or after `local`; `None`
    /// when there is none before [`YEAR_LIMIT`].
    pub(super) fn next_local(&self, local: i64, inclusive: bool) -> Option<i64> {
        let start = if inclusive {
            local
        } else {
            local.checked_add(1)?
        };
        let start = DateTime::from_timestamp(start, 0)?.naive_utc();
        let (mut year, mut month, mut day) = (start.year(), start.month(), start.day());
        let mut time = (start.hour(), start.minute(), start.second());
        while year < YEAR_LIMIT {
            if self.months & (1 << month) != 0 {
                let mut days = self.days.mask(year, month) & !((1 << day) - 1);
                while days != 0 {
                    let d = days.trailing_zeros();
                    days &= days - 1;
                    let from = if d == day { time } else { (0, 0, 0) };
                    if let Some((h, m, s)) = self.first_time(from.0, from.1, from.2) {
                        let date = NaiveDate::from_ymd_opt(year, month, d)?;
                        return Some(date.and_hms_opt(h, m, s)?.and_utc().timestamp());
                    }
                }
            }
            day = 1;
            time = (0, 0, 0);
            month += 1;
            if month > 12 {
                month = 1;
                year += 1;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_weekday_follows_croniter() {
        // (n, month length, weekday of the 1st, expected)
        let cases = [
            (1, 31, 6, 3),   // 1st a Saturday: Monday the 3rd
            (1, 31, 0, 2),   // 1st a Sunday: Monday the 2nd
            (15, 31, 4, 15), // a Thursday
            (15, 28, 0, 16), // 15th a Sunday: Monday
            (15, 31, 6, 14), // 15th a Saturday: Friday
            (31, 31, 5, 29), // 31st a Sunday, the last day: Friday the 29th
            (31, 30, 0, 30), // 30-day month: read as the 30th, a Monday
            (30, 28, 0, 27), // February, 28th a Saturday: Friday the 27th
            (31, 28, 1, 26), // 28th a Sunday, the last day: Friday the 26th
        ];
        for (n, len, first, want) in cases {
            assert_eq!(nearest_weekday(n, len, first), want, "{n}W");
        }
    }

    #[test]
    fn nth_weekday_masks() {
        // January 2026 starts on a Thursday.
        let mut table = [0u8; 7];
        table[5] = 1 << 3; // third Friday
        assert_eq!(Days::Nth(table).mask(2026, 1), 1 << 16);
        table[5] = NTH_LAST;
        assert_eq!(Days::Nth(table).mask(2026, 1), 1 << 30);
        table[5] = 1 << 5; // fifth Friday: 30 January, none in February
        assert_eq!(Days::Nth(table).mask(2026, 1), 1 << 30);
        assert_eq!(Days::Nth(table).mask(2026, 2), 0);
    }
}
