//! Planning a backfill: the fire times of the range, classified by the rows the cron has
//! there (create, re-arm, re-run, leave, excluded, or covered by a MISSED row to cut), read
//! again in each chunk's transaction so the plan is what that transaction writes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult};

use super::super::create::NewExecution;
use super::super::dialect::{Dialect, Sql};
use super::*;
use crate::entities::cron_job;
use crate::entities::job_execution::{CancelReason, ParamSource, Status};
use crate::schedule::{Schedule, Timetable};

/// A row of the cron in or around the range, as planning needs it.
#[derive(Debug, Clone, FromQueryResult)]
pub(super) struct RowAt {
    pub(super) id: i64,
    pub(super) scheduled_time: DateTime<Utc>,
    pub(super) status: String,
    pub(super) fire_time_until: Option<DateTime<Utc>>,
    pub(super) cancel_reason: Option<String>,
    pub(super) param_source: String,
    pub(super) error_message: Option<String>,
}

impl RowAt {
    pub(super) fn status(&self) -> Option<Status> {
        self.status.parse().ok()
    }

    /// Created ahead and cancelled only because the cron was off: not a decision.
    pub(super) fn rearmable(&self) -> bool {
        self.status == Status::Cancelled.as_str()
            && self.cancel_reason.as_deref() == Some(CancelReason::Unscheduled.as_str())
            && self.param_source == ParamSource::Cron.as_str()
    }

    /// A fire time's decision (the dispatcher's or a backfill's), not an operator's run
    /// that happens to share the instant.
    pub(super) fn is_fire_time(&self) -> bool {
        self.param_source == ParamSource::Cron.as_str()
            || self.param_source == ParamSource::Backfill.as_str()
    }
}

/// What to do with one fire time.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Step {
    /// No row: insert one.
    Insert,
    /// A row cancelled only because the cron was off: write the execution over it.
    Rearm(i64),
    /// Run this decision again; the row must still be in this status.
    Rerun(i64, Status),
    /// Covered by a MISSED row being cut: a new execution.
    Covered,
    /// An excluded fire time covered by a MISSED row being cut: an EXCLUDED row, written
    /// over that MISSED row when it is its first fire time.
    CoveredExcluded(Option<i64>),
    Leave(i64, Option<Status>),
    Excluded(Option<(i64, Option<Status>)>),
}

impl Step {
    pub(super) fn action(&self) -> BackfillAction {
        match self {
            Step::Insert | Step::Rearm(_) => BackfillAction::Create,
            Step::Rerun(..) | Step::Covered => BackfillAction::Rerun,
            Step::Leave(..) => BackfillAction::Exists,
            Step::CoveredExcluded(_) | Step::Excluded(_) => BackfillAction::Excluded,
        }
    }
}

/// The steps of the fire times of `[from, to)` given the rows there, and the MISSED rows
/// (with a range) that must be cut.
pub(super) struct Plan {
    pub(super) steps: Vec<(DateTime<Utc>, Step)>,
    pub(super) cut: Vec<RowAt>,
}

/// The cron's schedule, excluded dates and jitter, and the values its rows get.
pub(super) struct Cron<'a> {
    pub(super) model: &'a cron_job::Model,
    pub(super) timetable: Timetable,
}

impl Cron<'_> {
    pub(super) fn schedule(&self) -> &Schedule {
        self.timetable.schedule()
    }

    pub(super) fn new_row(&self, fire: DateTime<Utc>, source: ParamSource) -> NewExecution {
        NewExecution {
            job_id: Some(self.model.id),
            handler_name: self.model.handler_name.clone(),
            scheduled_time: fire,
            run_at: self.timetable.run_at(self.model.id, fire),
            params: self.model.handler_params.clone(),
            param_source: source,
            max_retry: self.model.max_retry,
            timeout_seconds: self.model.timeout_seconds,
        }
    }

    pub(super) fn excluded_message(&self, fire: DateTime<Utc>) -> String {
        let local = fire.with_timezone(&self.schedule().timezone()).date_naive();
        format!("excluded: {local} is an excluded date of the cron")
    }

    /// The schedule's fire times in `[from, to)`, at most `limit` (one more means more).
    pub(super) fn fires(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        // Fire times are whole seconds: the first one >= from is after from - 1 s.
        self.schedule()
            .iter_after(from - Duration::seconds(1))
            .skip_while(|t| *t < from)
            .take_while(|t| *t < to)
            .take(limit)
            .collect()
    }

    /// How many fire times are in `[from, to)` (at most [`COUNT_LIMIT`]) and the last one.
    pub(super) fn count(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> (i32, Option<DateTime<Utc>>) {
        let mut n = 0;
        let mut last = None;
        for t in self
            .schedule()
            .iter_after(from - Duration::seconds(1))
            .skip_while(|t| *t < from)
            .take_while(|t| *t < to)
        {
            n += 1;
            last = Some(t);
            if n >= COUNT_LIMIT {
                // Too many to count: a lower bound, and the last one found by looking back.
                return (n as i32, self.last_before(from, to));
            }
        }
        (n as i32, last)
    }

    /// The last fire time in `[from, to)`, looking back from `to` in growing steps.
    pub(super) fn last_before(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        for back in [60, 3_600, 86_400, 32 * 86_400, 367 * 86_400, 3_000 * 86_400] {
            let start = (to - Duration::seconds(back)).max(from);
            if let Some(last) = self.fires(start, to, usize::MAX).last() {
                return Some(*last);
            }
            if start == from {
                return None;
            }
        }
        None
    }

    /// Classifies each fire time of `fires` (those of `[from, to)`) by `rows`.
    pub(super) fn plan(
        &self,
        fires: &[DateTime<Utc>],
        rows: &[RowAt],
        rerun: &BTreeSet<Rerun>,
    ) -> Plan {
        let exact: HashMap<DateTime<Utc>, &RowAt> =
            rows.iter().map(|r| (r.scheduled_time, r)).collect();
        // MISSED rows with a range, by first fire time.
        let ranges: Vec<&RowAt> = rows
            .iter()
            .filter(|r| r.status == Status::Missed.as_str() && r.fire_time_until.is_some())
            .collect();
        let cut_missed = rerun.contains(&Rerun::Missed);
        let mut cut: BTreeMap<i64, RowAt> = BTreeMap::new();
        let mut steps = Vec::with_capacity(fires.len());
        for &fire in fires {
            let excluded = self.timetable.is_excluded(fire);
            let step = if let Some(row) = exact.get(&fire) {
                let status = row.status();
                let is_range = row.fire_time_until.is_some_and(|u| u > fire);
                if row.rearmable() {
                    if excluded {
                        Step::Excluded(Some((row.id, status)))
                    } else {
                        Step::Rearm(row.id)
                    }
                } else if status == Some(Status::Missed) && cut_missed && row.is_fire_time() {
                    if is_range {
                        cut.insert(row.id, (*row).clone());
                    }
                    if excluded {
                        Step::CoveredExcluded(Some(row.id))
                    } else {
                        Step::Rerun(row.id, Status::Missed)
                    }
                } else if excluded {
                    Step::Excluded(Some((row.id, status)))
                } else {
                    match status.and_then(Rerun::of) {
                        Some(r) if rerun.contains(&r) && row.is_fire_time() => {
                            Step::Rerun(row.id, status.unwrap_or(Status::Failed))
                        }
                        _ => Step::Leave(row.id, status),
                    }
                }
            } else if let Some(row) = ranges
                .iter()
                .find(|r| r.scheduled_time < fire && r.fire_time_until.is_some_and(|u| fire <= u))
            {
                if cut_missed {
                    cut.insert(row.id, (*row).clone());
                    if excluded {
                        Step::CoveredExcluded(None)
                    } else {
                        Step::Covered
                    }
                } else if excluded {
                    Step::Excluded(Some((row.id, Some(Status::Missed))))
                } else {
                    Step::Leave(row.id, Some(Status::Missed))
                }
            } else if excluded {
                Step::Excluded(None)
            } else {
                Step::Insert
            };
            steps.push((fire, step));
        }
        Plan {
            steps,
            cut: cut.into_values().collect(),
        }
    }
}

/// The cron's rows with a fire time in `[from, to)`, and the MISSED rows that start before
/// `from` and reach into it. At most `limit`.
pub(super) async fn rows_in_range<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    job_id: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<RowAt>, DbErr> {
    let mut q = Sql::new(dialect);
    q.push(
        "SELECT id, scheduled_time, status, fire_time_until, cancel_reason, param_source, \
         error_message FROM job_executions WHERE job_id = ",
    )
    .bind(job_id)
    .push(" AND ((scheduled_time >= ")
    .bind(from)
    .push(" AND scheduled_time < ")
    .bind(to)
    .push(") OR (status = ")
    .status(Status::Missed)
    .push(" AND scheduled_time < ")
    .bind(from)
    .push(" AND fire_time_until >= ")
    .bind(from)
    .push(")) ORDER BY scheduled_time, id LIMIT ")
    .push(&limit.to_string());
    RowAt::find_by_statement(q.build()).all(db).await
}
