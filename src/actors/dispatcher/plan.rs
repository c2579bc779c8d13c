//! Misfire planning: which fire times of one cron to create now, from its marker up to the
//! horizon, after however long an outage, in bounded work.
//!
//! A fire time more than `misfire_grace` late (every dispatcher was down) is handled by the
//! cron's policy: `skip` drops it, `latest` runs only the most recent one, `all` runs them,
//! the most recent `max_catchup` of them.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};

use crate::entities::cron_job::MisfirePolicy;
use crate::schedule::Schedule;

/// On-time fire times created per cron per tick; more continue on the next tick.
pub(crate) const MAX_SCAN: usize = 100_000;

/// The earliest fire time not yet handled: the marker, or for a cron that has none yet (new,
/// or reset after an edit), the first fire time after its last change but at most
/// `grace` in the past. A marker that is not a fire time of the current schedule (the
/// expression was edited) counts as none.
pub(crate) fn first_candidate(
    marker: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    schedule: &Schedule,
    now: DateTime<Utc>,
    grace: chrono::Duration,
) -> Option<DateTime<Utc>> {
    match marker {
        Some(marker)
            if schedule.next_after(marker - chrono::Duration::seconds(1)) == Some(marker) =>
        {
            Some(marker)
        }
        // Clamped to now: a row written by hand in a non-UTC MySQL session can carry a local
        // time ahead of UTC, which must not delay the cron.
        _ => schedule.next_after(updated_at.min(now).max(now - grace)),
    }
}

/// Which fire times to create, from `first` up to `horizon`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// In order: the missed fire times the policy keeps, then the on-time ones.
    pub create: Vec<DateTime<Utc>>,
    /// The fire times older than the grace period, if any.
    pub missed: Option<Missed>,
    /// The first fire time after the ones examined.
    pub next_marker: Option<DateTime<Utc>>,
}

/// The fire times of a plan that are older than the grace period (every dispatcher was down).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Missed {
    /// How many: exact when `exact`, else a lower bound (too many to count in a bounded scan).
    pub count: usize,
    pub exact: bool,
    /// How many of them the policy runs: the first `kept` of [`Plan::create`].
    pub kept: usize,
    /// The earliest missed fire time (the marker).
    pub first: DateTime<Utc>,
    /// The latest missed fire time, the last one before the cutoff.
    pub last: DateTime<Utc>,
    /// The latest missed fire time the policy drops (the one before the first kept), if
    /// it drops any: the dropped ones are `first..=last_dropped`.
    pub last_dropped: Option<DateTime<Utc>>,
}

impl Missed {
    /// Missed fire times the policy drops (a lower bound when `count` is).
    pub fn dropped(&self) -> usize {
        self.count.saturating_sub(self.kept)
    }
}

/// Missed fire times walked one by one before the count becomes a lower bound and the last
/// ones are found by searching back from the cutoff instead.
const MISSED_WALK: usize = 10_000;

/// Plans one cron's fire times from `first` (a fire time, the marker) up to `horizon`.
///
/// Fire times before the cutoff `now - grace` are missed: `skip` runs none, `latest` the last
/// one, `all` the last `max_catchup`, however long the outage. The work is bounded whatever
/// its length: at most [`MISSED_WALK`] (plus the number kept) missed fire times are walked
/// from `first` (the count is exact if they end before the cutoff), and otherwise the last
/// ones are found in windows ending at the cutoff (see [`last_before`]). The marker then
/// jumps past the missed period. Fire times from the cutoff to the horizon are on time and
/// all created, at most [`MAX_SCAN`] per call (the rest on the next tick).
pub(crate) fn plan_fire_times(
    schedule: &Schedule,
    first: DateTime<Utc>,
    now: DateTime<Utc>,
    horizon: DateTime<Utc>,
    grace: chrono::Duration,
    policy: MisfirePolicy,
    max_catchup: usize,
) -> Plan {
    let cutoff = now - grace;
    let mut create = Vec::new();
    let mut missed = None;
    let mut next = Some(first);
    if first < cutoff {
        let keep = match policy {
            MisfirePolicy::Skip => 0,
            MisfirePolicy::Latest => 1,
            MisfirePolicy::All => max_catchup,
        };
        // One more than the policy keeps: the last one it drops, for the ledger.
        let wanted = keep.saturating_add(1);
        let budget = wanted.saturating_add(MISSED_WALK);
        let walked = walk(schedule, Some(first), cutoff, wanted, budget);
        let (tail, count, exact) = if walked.complete {
            let count = walked.count;
            (walked, count, true)
        } else {
            // Too many to walk: the last ones lie in a window ending at the cutoff. Both
            // walks leave out a missed fire time (the next one, or `first`), hence the `+ 1`
            // of the lower bound.
            let tail = last_before(schedule, first, cutoff, wanted, budget);
            let count = walked.count.max(tail.count).saturating_add(1);
            (tail, count, false)
        };
        next = tail.next;
        let last = tail.kept.back().copied().unwrap_or(first);
        let skipped = tail.kept.len().saturating_sub(keep);
        let last_dropped = skipped
            .checked_sub(1)
            .and_then(|i| tail.kept.get(i).copied());
        create.extend(tail.kept.into_iter().skip(skipped));
        missed = Some(Missed {
            count,
            exact,
            kept: create.len(),
            first,
            last,
            last_dropped,
        });
    }
    let mut scanned = 0;
    while let Some(fire) = next {
        if fire > horizon || scanned == MAX_SCAN {
            break;
        }
        scanned += 1;
        create.push(fire);
        next = schedule.next_after(fire);
    }
    Plan {
        create,
        missed,
        next_marker: next,
    }
}

/// Fire times walked forward up to an end, the last few of them kept.
struct Walk {
    /// The last fire times walked (at most the number asked for), in order.
    kept: VecDeque<DateTime<Utc>>,
    /// How many were walked.
    count: usize,
    /// Every fire time before the end was walked (the budget was enough).
    complete: bool,
    /// The first fire time not walked: at or after the end when `complete`.
    next: Option<DateTime<Utc>>,
}

/// Walks the fire times from `start` (a fire time, or none) while they are before `end`,
/// keeping the last `keep`; stops after `budget` of them.
fn walk(
    schedule: &Schedule,
    start: Option<DateTime<Utc>>,
    end: DateTime<Utc>,
    keep: usize,
    budget: usize,
) -> Walk {
    let mut kept = VecDeque::new();
    let mut count = 0;
    let mut next = start;
    while let Some(fire) = next {
        if fire >= end {
            break;
        }
        if count == budget {
            return Walk {
                kept,
                count,
                complete: false,
                next,
            };
        }
        count += 1;
        if keep > 0 {
            if kept.len() == keep {
                kept.pop_front();
            }
            kept.push_back(fire);
        }
        next = schedule.next_after(fire);
    }
    Walk {
        kept,
        count,
        complete: true,
        next,
    }
}

/// The first fire time at or after `t`.
fn first_at_or_after(schedule: &Schedule, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // `next_after` works in whole seconds: from `t - 1s` it can return the second `t` falls in.
    let fire = schedule.next_after(t - chrono::Duration::seconds(1))?;
    if fire < t {
        schedule.next_after(fire)
    } else {
        Some(fire)
    }
}

/// The last `wanted` fire times before `cutoff`, when more than `budget >= wanted` of them lie
/// in `[first, cutoff)`: walks windows `[cutoff - w, cutoff)` with `w` doubling from one
/// second until one holds at least `wanted`. If that window holds more than `budget`, its
/// start is bisected between it and the previous (too small) window: one more second of
/// window adds at most one fire time, so some start in between gives a window holding
/// `wanted..=budget` fire times. Every walk is at most `budget` long and there are at most
/// about 2 x 64 of them, however many fire times lie before the cutoff.
fn last_before(
    schedule: &Schedule,
    first: DateTime<Utc>,
    cutoff: DateTime<Utc>,
    wanted: usize,
    budget: usize,
) -> Walk {
    // Seconds from `first` to the cutoff, rounded up: a window this long starts at `first`.
    let mut span = (cutoff - first).num_seconds().max(1);
    if first + chrono::Duration::seconds(span) < cutoff {
        span += 1;
    }
    let window = |back: i64| {
        let start = if back >= span {
            Some(first)
        } else {
            first_at_or_after(schedule, cutoff - chrono::Duration::seconds(back))
        };
        walk(schedule, start, cutoff, wanted, budget)
    };
    // `short`: a window length (seconds) known to hold fewer than `wanted` fire times.
    let mut short = 0;
    let mut back = 1;
    loop {
        let found = window(back);
        if !found.complete {
            break;
        }
        if found.count >= wanted || back >= span {
            return found;
        }
        short = back;
        back = back.saturating_mul(2);
    }
    // `back` holds more than `budget`, `short` fewer than `wanted`.
    let mut long = back;
    while long - short > 1 {
        let mid = short + (long - short) / 2;
        let found = window(mid);
        if !found.complete {
            long = mid;
        } else if found.count < wanted {
            short = mid;
        } else {
            return found;
        }
    }
    // Not reached while `budget >= wanted` (see above). Should it be, the short window still
    // holds the latest fire times before the cutoff, only fewer of them.
    window(short)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("instant").to_utc()
    }

    fn minutely() -> Schedule {
        Schedule::parse("* * * * *", "UTC").expect("schedule")
    }

    fn plan(policy: MisfirePolicy, max_catchup: usize) -> Plan {
        // Marker at 10:00; now 10:10:10 with 30 s grace; 5 s lookahead.
        plan_fire_times(
            &minutely(),
            at("2026-01-01T10:00:00Z"),
            at("2026-01-01T10:10:10Z"),
            at("2026-01-01T10:10:15Z"),
            chrono::Duration::seconds(30),
            policy,
            max_catchup,
        )
    }

    #[test]
    fn on_time_fire_times_are_all_created() {
        let p = plan_fire_times(
            &minutely(),
            at("2026-01-01T10:00:00Z"),
            at("2026-01-01T10:00:20Z"),
            at("2026-01-01T10:01:05Z"),
            chrono::Duration::seconds(30),
            MisfirePolicy::Skip,
            100,
        );
        assert_eq!(
            p.create,
            vec![at("2026-01-01T10:00:00Z"), at("2026-01-01T10:01:00Z")]
        );
        assert_eq!(p.missed, None);
        assert_eq!(p.next_marker, Some(at("2026-01-01T10:02:00Z")));
    }

    #[test]
    fn skip_drops_every_missed_fire_time() {
        let p = plan(MisfirePolicy::Skip, 100);
        // 10:00 .. 10:09 are missed (older than 10:09:40); 10:10 is within the grace.
        assert_eq!(p.create, vec![at("2026-01-01T10:10:00Z")]);
        assert_eq!(
            p.missed,
            Some(Missed {
                count: 10,
                exact: true,
                kept: 0,
                first: at("2026-01-01T10:00:00Z"),
                last: at("2026-01-01T10:09:00Z"),
                last_dropped: Some(at("2026-01-01T10:09:00Z")),
            })
        );
        assert_eq!(p.missed.map(|m| m.dropped()), Some(10));
        assert_eq!(p.next_marker, Some(at("2026-01-01T10:11:00Z")));
    }

    #[test]
    fn latest_keeps_the_most_recent_missed_fire_time() {
        let p = plan(MisfirePolicy::Latest, 100);
        assert_eq!(
            p.create,
            vec![at("2026-01-01T10:09:00Z"), at("2026-01-01T10:10:00Z")]
        );
        let missed = p.missed.expect("missed");
        assert_eq!((missed.count, missed.exact, missed.kept), (10, true, 1));
        assert_eq!(missed.dropped(), 9);
        assert_eq!(missed.last, at("2026-01-01T10:09:00Z"));
        assert_eq!(missed.last_dropped, Some(at("2026-01-01T10:08:00Z")));
    }

    #[test]
    fn all_catches_up_to_the_cap() {
        let p = plan(MisfirePolicy::All, 100);
        assert_eq!(p.create.len(), 11);
        let p = plan(MisfirePolicy::All, 3);
        assert_eq!(
            p.create,
            vec![
                at("2026-01-01T10:07:00Z"),
                at("2026-01-01T10:08:00Z"),
                at("2026-01-01T10:09:00Z"),
                at("2026-01-01T10:10:00Z")
            ]
        );
        let missed = p.missed.expect("missed");
        assert_eq!((missed.count, missed.exact, missed.kept), (10, true, 3));
        assert_eq!(missed.dropped(), 7);
        assert_eq!(missed.last_dropped, Some(at("2026-01-01T10:06:00Z")));
        let p = plan(MisfirePolicy::All, 100);
        assert_eq!(p.missed.expect("missed").last_dropped, None);
    }

    #[test]
    fn nothing_due_before_the_horizon() {
        let p = plan_fire_times(
            &minutely(),
            at("2026-01-01T10:01:00Z"),
            at("2026-01-01T10:00:10Z"),
            at("2026-01-01T10:00:15Z"),
            chrono::Duration::seconds(30),
            MisfirePolicy::Latest,
            100,
        );
        assert!(p.create.is_empty());
        assert_eq!(p.next_marker, Some(at("2026-01-01T10:01:00Z")));
    }

    fn every_second() -> Schedule {
        Schedule::parse("* * * * * *", "UTC").expect("schedule")
    }

    /// A plan after an outage since `marker`, now `now`, 30 s grace and 5 s lookahead.
    fn after_outage(
        schedule: &Schedule,
        marker: &str,
        now: &str,
        policy: MisfirePolicy,
        max_catchup: usize,
    ) -> Plan {
        let now = at(now);
        plan_fire_times(
            schedule,
            at(marker),
            now,
            now + chrono::Duration::seconds(5),
            chrono::Duration::seconds(30),
            policy,
            max_catchup,
        )
    }

    fn seconds(from: &str, n: i64) -> Vec<DateTime<Utc>> {
        (0..n)
            .map(|i| at(from) + chrono::Duration::seconds(i))
            .collect()
    }

    /// Every second from `from` through `to`.
    fn every_second_between(from: &str, to: &str) -> Vec<DateTime<Utc>> {
        seconds(from, (at(to) - at(from)).num_seconds() + 1)
    }

    #[test]
    fn latest_runs_once_after_days_of_an_every_second_cron() {
        // Three days down: 259,170 missed fire times; one run for all of them.
        let p = after_outage(
            &every_second(),
            "2026-01-07T12:00:00Z",
            "2026-01-10T12:00:00Z",
            MisfirePolicy::Latest,
            100,
        );
        let missed = p.missed.clone().expect("missed");
        assert_eq!(missed.kept, 1);
        assert_eq!(missed.first, at("2026-01-07T12:00:00Z"));
        assert_eq!(missed.last, at("2026-01-10T11:59:29Z"));
        assert!(!missed.exact, "too many to count one by one");
        assert!(missed.count > MISSED_WALK && missed.count <= 259_170);
        let mut want = vec![at("2026-01-10T11:59:29Z")];
        // On time: from the cutoff 11:59:30 to the horizon 12:00:05.
        want.extend(every_second_between(
            "2026-01-10T11:59:30Z",
            "2026-01-10T12:00:05Z",
        ));
        assert_eq!(p.create, want);
        assert_eq!(p.next_marker, Some(at("2026-01-10T12:00:06Z")));
    }

    #[test]
    fn all_keeps_the_most_recent_max_catchup_after_days() {
        let p = after_outage(
            &every_second(),
            "2026-01-07T12:00:00Z",
            "2026-01-10T12:00:00Z",
            MisfirePolicy::All,
            7,
        );
        let missed = p.missed.clone().expect("missed");
        assert_eq!(missed.kept, 7);
        assert_eq!(p.create[..7], seconds("2026-01-10T11:59:23Z", 7)[..]);
        assert_eq!(p.create.len(), 7 + 36);
        assert_eq!(p.next_marker, Some(at("2026-01-10T12:00:06Z")));
    }

    #[test]
    fn skip_runs_none_after_days_but_records_the_last() {
        let p = after_outage(
            &every_second(),
            "2026-01-07T12:00:00Z",
            "2026-01-10T12:00:00Z",
            MisfirePolicy::Skip,
            100,
        );
        let missed = p.missed.clone().expect("missed");
        assert_eq!((missed.kept, missed.dropped()), (0, missed.count));
        assert_eq!(missed.last, at("2026-01-10T11:59:29Z"));
        assert_eq!(
            p.create,
            every_second_between("2026-01-10T11:59:30Z", "2026-01-10T12:00:05Z")
        );
        assert!(p.next_marker > Some(at("2026-01-10T12:00:05Z")));
    }

    #[test]
    fn cutoff_between_seconds() {
        // Now 12:00:00.250: the cutoff 11:59:30.250 makes 11:59:30 missed, 11:59:31 on time.
        let p = after_outage(
            &every_second(),
            "2026-01-07T12:00:00Z",
            "2026-01-10T12:00:00.250Z",
            MisfirePolicy::All,
            2,
        );
        assert_eq!(p.missed.expect("missed").last, at("2026-01-10T11:59:30Z"));
        assert_eq!(p.create[..3], seconds("2026-01-10T11:59:29Z", 3)[..]);
        assert_eq!(p.create.last(), Some(&at("2026-01-10T12:00:05Z")));
        // The same when the walk from the marker reaches the cutoff.
        let p = after_outage(
            &every_second(),
            "2026-01-10T11:00:00Z",
            "2026-01-10T12:00:00.250Z",
            MisfirePolicy::All,
            2,
        );
        let missed = p.missed.expect("missed");
        assert_eq!((missed.count, missed.exact), (3571, true));
        assert_eq!(p.create[..3], seconds("2026-01-10T11:59:29Z", 3)[..]);
    }

    #[test]
    fn a_ten_year_outage_of_an_every_second_cron_is_planned_in_bounded_work() {
        // 315 million missed fire times: walking them one by one would take many minutes.
        for (policy, kept) in [
            (MisfirePolicy::Latest, 1),
            (MisfirePolicy::All, 100),
            (MisfirePolicy::Skip, 0),
        ] {
            let p = after_outage(
                &every_second(),
                "2016-06-15T12:00:00Z",
                "2026-06-15T12:00:00Z",
                policy,
                100,
            );
            let missed = p.missed.clone().expect("missed");
            assert_eq!(missed.kept, kept);
            assert_eq!(missed.last, at("2026-06-15T11:59:29Z"));
            let want: Vec<_> = (0..kept as i64)
                .rev()
                .map(|back| at("2026-06-15T11:59:29Z") - chrono::Duration::seconds(back))
                .collect();
            assert_eq!(p.create[..kept], want[..]);
            assert_eq!(p.create.len(), kept + 36);
            assert_eq!(p.next_marker, Some(at("2026-06-15T12:00:06Z")));
        }
    }

    #[test]
    fn sparse_schedule_after_thirty_years() {
        let yearly = Schedule::parse("0 0 1 1 *", "UTC").expect("schedule");
        let p = after_outage(
            &yearly,
            "1996-01-01T00:00:00Z",
            "2026-06-15T12:00:00Z",
            MisfirePolicy::Latest,
            100,
        );
        let missed = p.missed.clone().expect("missed");
        assert_eq!((missed.count, missed.exact, missed.kept), (31, true, 1));
        assert_eq!(missed.last, at("2026-01-01T00:00:00Z"));
        assert_eq!(p.create, vec![at("2026-01-01T00:00:00Z")]);
        assert_eq!(p.next_marker, Some(at("2027-01-01T00:00:00Z")));
        let p = after_outage(
            &yearly,
            "1996-01-01T00:00:00Z",
            "2026-06-15T12:00:00Z",
            MisfirePolicy::All,
            3,
        );
        assert_eq!(
            p.create,
            vec![
                at("2024-01-01T00:00:00Z"),
                at("2025-01-01T00:00:00Z"),
                at("2026-01-01T00:00:00Z")
            ]
        );
    }

    #[test]
    fn bursty_schedule_after_years() {
        // Every minute of 00:xx UTC, ten years down.
        let bursty = Schedule::parse("* 0 * * *", "UTC").expect("schedule");
        let p = after_outage(
            &bursty,
            "2016-06-15T00:00:00Z",
            "2026-06-15T12:00:00Z",
            MisfirePolicy::All,
            7,
        );
        let missed = p.missed.clone().expect("missed");
        assert!(!missed.exact);
        assert_eq!(missed.last, at("2026-06-15T00:59:00Z"));
        let want: Vec<_> = (53..60)
            .map(|m| at("2026-06-15T00:00:00Z") + chrono::Duration::minutes(m))
            .collect();
        assert_eq!(p.create, want);
        assert_eq!(p.next_marker, Some(at("2026-06-16T00:00:00Z")));
        // Down until the middle of a burst: the cutoff 00:29:40 ends the missed period.
        let p = after_outage(
            &bursty,
            "2016-06-15T00:00:00Z",
            "2026-06-15T00:30:10Z",
            MisfirePolicy::Latest,
            7,
        );
        assert_eq!(p.missed.expect("missed").last, at("2026-06-15T00:29:00Z"));
        assert_eq!(
            p.create,
            vec![at("2026-06-15T00:29:00Z"), at("2026-06-15T00:30:00Z")]
        );
        assert_eq!(p.next_marker, Some(at("2026-06-15T00:31:00Z")));
    }

    #[test]
    fn bursts_longer_than_a_walk_are_narrowed_down() {
        // 14,400 fire times each night (every second of 00:00-03:59), more than one walk.
        // From the cutoff 23:59:30 the windows of 2^16 s (back to 05:47:14) hold none and
        // the next, 2^17 s, the whole burst: it is bisected.
        let nightly = Schedule::parse("* * 0-3 * * *", "UTC").expect("schedule");
        let p = after_outage(
            &nightly,
            "2025-06-15T00:00:00Z",
            "2026-06-16T00:00:00Z",
            MisfirePolicy::All,
            3,
        );
        let mut want = seconds("2026-06-15T03:59:57Z", 3);
        // The night's burst has begun: on time up to the horizon 00:00:05.
        want.extend(seconds("2026-06-16T00:00:00Z", 6));
        assert_eq!(p.create, want);
        assert_eq!(p.next_marker, Some(at("2026-06-16T00:00:06Z")));
        // A cap above the walk: the last 20,000 of three days of every second.
        let p = after_outage(
            &every_second(),
            "2026-01-07T12:00:00Z",
            "2026-01-10T12:00:00Z",
            MisfirePolicy::All,
            20_000,
        );
        let missed = p.missed.expect("missed");
        assert_eq!((missed.kept, missed.exact), (20_000, false));
        assert_eq!(
            p.create[..20_000],
            every_second_between("2026-01-10T06:26:10Z", "2026-01-10T11:59:29Z")[..]
        );
    }
}
