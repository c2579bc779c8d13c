//! Maps wall-clock cron matches (`pattern.rs`, naive local times) to real
//! instants in a time zone, with jobu's daylight-saving rules. The day forms
//! (`L`, `nW`, `D#n`, `LD`) only choose dates, so the rules apply to them
//! unchanged.
//!
//! Rules (DESIGN.md "Cron semantics"):
//!
//! - a wall-clock time that exists once fires at that instant;
//! - one skipped by a spring-forward gap does not fire at all when the hour
//!   field is exactly `*` (`15 * * * *` has one run fewer that day: only
//!   times that exist run); with any other hour field (a number, list, range
//!   or step) it fires at the first instant after the gap, once (all such
//!   matches, and a match at the gap's end itself, collapse into it);
//! - one repeated by a fall-back fires at both instants when the hour field
//!   is `*` or stepped, else only at the earlier one.
//!
//! Both rules read the hour field as written. croniter (checked with 7.0.0)
//! treats any hour field that covers all 24 hours (`*/1`, `0-23`) as `*` and
//! skips gap times for it too, where jobu runs them at the gap's end.
//!
//! Times are whole seconds: instants as Unix seconds, wall-clock times as
//! "local seconds" (the naive time read as if it were UTC), so that
//! `local = instant + offset` while the offset is constant.

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeZone};
use chrono_tz::Tz;

use super::pattern::Pattern;

/// Spacing of offset samples when looking for a change. No tzdb zone
/// changes its offset twice within 7 days (checked for 1900 onwards), so
/// sampling daily finds every change between two instants.
const SAMPLE_STEP: i64 = 86_400;

fn naive(local: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp(local, 0).map(|d| d.naive_utc())
}

fn offset_at(tz: Tz, instant: i64) -> Option<i64> {
    let utc = naive(instant)?;
    Some(i64::from(
        tz.offset_from_utc_datetime(&utc).fix().local_minus_utc(),
    ))
}

/// How a schedule treats the wall-clock times that daylight saving skips or
/// repeats; both follow from its hour field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Rules {
    /// Hour field exactly `*`: a time skipped by a spring-forward gap does not
    /// fire (otherwise it fires at the first instant after the gap).
    pub skips_gap: bool,
    /// Hour field `*` or stepped: a time repeated by a fall-back fires in both
    /// passes (otherwise only in the first).
    pub fires_twice_in_fold: bool,
}

/// First wall-clock match at (`inclusive`) or after `local`; `None` when
/// there is none before the year 5000.
pub(super) fn next_local(pattern: &Pattern, local: i64, inclusive: bool) -> Option<i64> {
    pattern.next_local(local, inclusive)
}

/// First instant in `(from, to]` whose offset differs from `offset`, the
/// offset at `from`.
fn first_change(tz: Tz, from: i64, to: i64, offset: i64) -> Option<Option<i64>> {
    let mut lo = from;
    while lo < to {
        let probe = to.min(lo.saturating_add(SAMPLE_STEP));
        if offset_at(tz, probe)? != offset {
            // The offset is `offset` at `lo` and differs at `probe`: bisect.
            let mut hi = probe;
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if offset_at(tz, mid)? == offset {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            return Some(Some(hi));
        }
        lo = probe;
    }
    Some(None)
}

/// Smallest fire instant strictly after `after`.
///
/// The mapping is not monotonic around a fall-back (01:30 of the second pass
/// is later than 01:45 of the first), so instead of converting one naive
/// answer the search walks the time line in spans of constant offset. Within
/// a span the local time is `instant + offset`, so the first wall-clock
/// match in the span is the earliest fire in it; spans are visited in
/// order, so the first fire found is the answer. Away from transitions that
/// is one pattern search and a few offset lookups.
pub(super) fn next_after(pattern: &Pattern, tz: Tz, rules: Rules, after: i64) -> Option<i64> {
    // `start` begins a span with offset `offset`; every instant in it is a
    // candidate.
    let mut start = after.checked_add(1)?;
    let mut offset = offset_at(tz, start)?;
    // When `start` is itself a spring-forward transition, wall-clock times
    // in the gap just before it belong to it: search from the gap's start.
    let mut from_local = start + offset.min(offset_at(tz, start - 1)?);
    loop {
        let local = next_local(pattern, from_local, true)?;
        if local < start + offset {
            // A match skipped by the gap that ends at `start`.
            if !rules.skips_gap {
                return Some(start);
            }
            // It does not exist, so it does not run: continue from the
            // wall-clock time at the gap's end, which exists.
            from_local = start + offset;
            continue;
        }
        let instant = local - offset;
        match first_change(tz, start, instant, offset)? {
            Some(change) => {
                // No match before the change: continue in the next span,
                // from the gap's start or the repeated range's start.
                let next_offset = offset_at(tz, change)?;
                from_local = change + offset.min(next_offset);
                start = change;
                offset = next_offset;
            }
            None if rules.fires_twice_in_fold => return Some(instant),
            None => match tz.from_local_datetime(&naive(local)?) {
                LocalResult::Ambiguous(earlier, later) if later.timestamp() == instant => {
                    // Second pass of a repeated time with a fixed hour: the
                    // job already ran in the first pass. Skip the whole
                    // repeated range, which ends where the earlier offset
                    // reaches the transition.
                    let earlier = earlier.timestamp();
                    let earlier_offset = offset_at(tz, earlier)?;
                    let change = first_change(tz, earlier, instant, earlier_offset)??;
                    from_local = change + earlier_offset;
                }
                _ => return Some(instant),
            },
        }
    }
}
