//! Backfill: executions for a cron's past fire times that have none, on an operator's request
//! (`POST /api/crons/{id}/backfill`, `jobu cron backfill`), and the progress of each request.
//!
//! A backfill looks at every fire time of the cron's current schedule in `[from, to)`:
//!
//! - no row: an execution is created (`create`), `param_source` `backfill`;
//! - a row that is a decision: left alone (`exists`), unless `rerun` names its decision
//!   (`missed`; `skipped`; `failed` = FAILED or TIMEOUT), in which case that row is re-armed
//!   (`rerun`) by a conditional UPDATE naming the status it was read in;
//! - a row cancelled only because the cron was off (`unscheduled`) is no decision: it is
//!   written over, as the dispatcher would (`create`);
//! - a fire time on one of the cron's excluded dates is never run (`excluded`).
//!
//! Creation is insert-if-absent on `UNIQUE(job_id, scheduled_time)`, so a repeated or racing
//! backfill and the dispatchers create each fire time once. The rows are written in chunks
//! of [`CHUNK`] fire times, each in one transaction under the cron's lock
//! ([`super::overlap::lock_cron`]), planned again from what that transaction reads.
//!
//! `buffer_all` (default) runs them one at a time in fire-time order: they are WAITING rows
//! with `exclusive_run`, so they take the cron's one exclusive slot in turn (the oldest
//! WAITING row is promoted first); each chunk's transaction promotes one if the slot is
//! free, the completer promotes the next when one ends, and a dispatcher's poll promotes a
//! WAITING row nobody started (this process stopped in between). So on a cron whose own
//! policy is exclusive, the backfill shares the slot with the live fire times, which the
//! cron's policy decides as usual (a `skip` cron skips live fire times while the backfill
//! runs; `buffer_all` buffers them behind it). `allow` creates PENDING rows without
//! `exclusive_run`: they run concurrently, beside whatever else runs.
//!
//! A MISSED row can stand for many fire times (`scheduled_time` to `fire_time_until`). With
//! `rerun: missed`, the fire times of such a row inside the range get executions and the row
//! is cut so every fire time keeps exactly one decision: the part before the range stays
//! the MISSED row (its `fire_time_until` and `fire_count` shrink), the part after the range
//! becomes a new MISSED row at its first fire time, and when the row's first fire time is in
//! the range the row itself becomes that fire time's execution. Excluded fire times inside
//! such a row get an EXCLUDED row of their own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use sea_orm::{ConnectionTrait, DbErr, EntityTrait, FromQueryResult, QueryOrder, TransactionTrait};

use super::create::{push_rearm_set, push_rearmable, NewExecution};
use super::dialect::{Dialect, Sql};
use super::fire_times::{record, LedgerRow};
use super::overlap::{insert_as, lock_cron, promote_locked};
use super::{retry_transient, Store, StoreError, StoreResult};
use crate::entities::job_execution::{CancelReason, ParamSource, Status};
use crate::entities::{cron_backfill, cron_job};
use crate::schedule::{Schedule, Timetable};
use crate::store::crons::stored_dates;

/// Fire times a backfill creates or re-runs when the request sets no `max_runs`.
pub const DEFAULT_MAX_RUNS: u32 = 1000;
/// The largest `max_runs` a request may set.
pub const MAX_MAX_RUNS: u32 = 10_000;
/// Fire times one backfill examines at most (created, re-run, left alone and excluded).
pub const MAX_EXAMINED: usize = 100_000;
/// Fire times per transaction: the cron's lock is held that long, so keep it short.
const CHUNK: usize = 200;
/// Fire times counted at most when a MISSED row is cut (its count becomes a lower bound).
const COUNT_LIMIT: usize = 1_000_000;

/// How a backfill's executions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackfillOverlap {
    /// One at a time, in fire-time order, in the cron's exclusive slot.
    #[default]
    BufferAll,
    /// Concurrently.
    Allow,
}

impl BackfillOverlap {
    pub fn as_str(self) -> &'static str {
        match self {
            BackfillOverlap::BufferAll => "buffer_all",
            BackfillOverlap::Allow => "allow",
        }
    }
}

impl std::str::FromStr for BackfillOverlap {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [BackfillOverlap::BufferAll, BackfillOverlap::Allow]
            .into_iter()
            .find(|o| o.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown overlap `{s}`; use buffer_all or allow"))
    }
}

/// A decision a backfill may run again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rerun {
    /// MISSED: dropped by the misfire policy.
    Missed,
    /// SKIPPED: not run by the overlap policy.
    Skipped,
    /// FAILED or TIMEOUT, retries spent.
    Failed,
}

impl Rerun {
    pub const ALL: [Rerun; 3] = [Rerun::Missed, Rerun::Skipped, Rerun::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Rerun::Missed => "missed",
            Rerun::Skipped => "skipped",
            Rerun::Failed => "failed",
        }
    }

    /// The decision a row in `status` is, if a backfill can run it again.
    fn of(status: Status) -> Option<Rerun> {
        match status {
            Status::Missed => Some(Rerun::Missed),
            Status::Skipped => Some(Rerun::Skipped),
            Status::Failed | Status::Timeout => Some(Rerun::Failed),
            _ => None,
        }
    }
}

impl std::str::FromStr for Rerun {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Rerun::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown rerun decision `{s}`; use missed, skipped or failed"))
    }
}

/// What an operator asks a backfill to do.
#[derive(Debug, Clone)]
pub struct BackfillRequest {
    /// Fire times `>= from` ...
    pub from: DateTime<Utc>,
    /// ... and `< to` (moved back to now, or to where the dispatchers are, when later).
    pub to: DateTime<Utc>,
    /// Most fire times it may create or re-run (1..[`MAX_MAX_RUNS`]); more is refused.
    pub max_runs: u32,
    /// Plan only: write nothing, answer what would be done.
    pub dry_run: bool,
    pub overlap: BackfillOverlap,
    pub rerun: BTreeSet<Rerun>,
    pub requested_by: Option<String>,
    pub reason: Option<String>,
}

/// What a backfill did (or would do) with one fire time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackfillAction {
    /// An execution was created for it.
    Create,
    /// Its row (missed, skipped or failed) runs again.
    Rerun,
    /// It has a row, left alone.
    Exists,
    /// On an excluded date of the cron: not run.
    Excluded,
}

impl BackfillAction {
    pub fn as_str(self) -> &'static str {
        match self {
            BackfillAction::Create => "create",
            BackfillAction::Rerun => "rerun",
            BackfillAction::Exists => "exists",
            BackfillAction::Excluded => "excluded",
        }
    }
}

/// One fire time of a backfill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillItem {
    pub fire_time: DateTime<Utc>,
    pub action: BackfillAction,
    /// The execution that stands for it (none for a dry run's new ones, or a fire time
    /// without a row).
    pub execution_id: Option<i64>,
    /// That execution's status (for a dry run: the one it has now).
    pub status: Option<Status>,
    /// When it may start: the fire time plus the cron's jitter.
    pub run_at: DateTime<Utc>,
}

/// The answer of [`Store::backfill`].
#[derive(Debug, Clone)]
pub struct BackfillOutcome {
    /// The `cron_backfills` row; `None` for a dry run.
    pub backfill_id: Option<i64>,
    pub cron_id: i64,
    pub from: DateTime<Utc>,
    /// The end actually used (see `note`).
    pub to: DateTime<Utc>,
    pub requested_to: DateTime<Utc>,
    /// Why `to` is earlier than asked, if it is.
    pub note: Option<String>,
    pub overlap: BackfillOverlap,
    pub rerun: BTreeSet<Rerun>,
    pub dry_run: bool,
    pub created: u32,
    pub rerun_count: u32,
    pub left_alone: u32,
    pub excluded: u32,
    pub items: Vec<BackfillItem>,
}

/// A recorded backfill and how its executions stand.
#[derive(Debug, Clone)]
pub struct BackfillView {
    pub backfill: cron_backfill::Model,
    /// Its executions per status (rows a later backfill re-ran count there instead).
    pub progress: BTreeMap<Status, u64>,
}

impl BackfillView {
    pub fn total(&self) -> u64 {
        self.progress.values().sum()
    }

    /// Nothing of it is left to run.
    pub fn done(&self) -> bool {
        [Status::Pending, Status::Running, Status::Waiting]
            .iter()
            .all(|s| self.progress.get(s).copied().unwrap_or(0) == 0)
    }
}

/// A row of the cron in or around the range, as planning needs it.
#[derive(Debug, Clone, FromQueryResult)]
struct RowAt {
    id: i64,
    scheduled_time: DateTime<Utc>,
    status: String,
    fire_time_until: Option<DateTime<Utc>>,
    cancel_reason: Option<String>,
    param_source: String,
    error_message: Option<String>,
}

impl RowAt {
    fn status(&self) -> Option<Status> {
        self.status.parse().ok()
    }

    /// Created ahead and cancelled only because the cron was off: not a decision.
    fn rearmable(&self) -> bool {
        self.status == Status::Cancelled.as_str()
            && self.cancel_reason.as_deref() == Some(CancelReason::Unscheduled.as_str())
            && self.param_source == ParamSource::Cron.as_str()
    }

    /// A fire time's decision (the dispatcher's or a backfill's), not an operator's run
    /// that happens to share the instant.
    fn is_fire_time(&self) -> bool {
        self.param_source == ParamSource::Cron.as_str()
            || self.param_source == ParamSource::Backfill.as_str()
    }
}

/// What to do with one fire time.
#[derive(Debug, Clone, PartialEq)]
enum Step {
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
    fn action(&self) -> BackfillAction {
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
struct Plan {
    steps: Vec<(DateTime<Utc>, Step)>,
    cut: Vec<RowAt>,
}

/// The cron's schedule, excluded dates and jitter, and the values its rows get.
struct Cron<'a> {
    model: &'a cron_job::Model,
    timetable: Timetable,
}

impl Cron<'_> {
    fn schedule(&self) -> &Schedule {
        self.timetable.schedule()
    }

    fn new_row(&self, fire: DateTime<Utc>, source: ParamSource) -> NewExecution {
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

    fn excluded_message(&self, fire: DateTime<Utc>) -> String {
        let local = fire.with_timezone(&self.schedule().timezone()).date_naive();
        format!("excluded: {local} is an excluded date of the cron")
    }

    /// The schedule's fire times in `[from, to)`, at most `limit` (one more means more).
    fn fires(&self, from: DateTime<Utc>, to: DateTime<Utc>, limit: usize) -> Vec<DateTime<Utc>> {
        // Fire times are whole seconds: the first one >= from is after from - 1 s.
        self.schedule()
            .iter_after(from - Duration::seconds(1))
            .skip_while(|t| *t < from)
            .take_while(|t| *t < to)
            .take(limit)
            .collect()
    }

    /// How many fire times are in `[from, to)` (at most [`COUNT_LIMIT`]) and the last one.
    fn count(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> (i32, Option<DateTime<Utc>>) {
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
    fn last_before(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Option<DateTime<Utc>> {
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
    fn plan(&self, fires: &[DateTime<Utc>], rows: &[RowAt], rerun: &BTreeSet<Rerun>) -> Plan {
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
async fn rows_in_range<C: ConnectionTrait>(
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

/// What one chunk's transaction did.
struct ChunkDone {
    items: Vec<BackfillItem>,
    backfill_id: i64,
}

fn rejected(field: &'static str, error: &'static str, message: String) -> StoreError {
    StoreError::Rejected {
        field,
        error,
        message,
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

impl Store {
    /// Backfills `cron`'s fire times in `[req.from, req.to)` (see the module). Bad input
    /// ([`StoreError::Rejected`], naming the field) is refused before anything is written,
    /// and so is a range that would create or re-run more than `req.max_runs` executions.
    /// A dry run writes nothing and answers the same listing.
    pub async fn backfill(
        &self,
        cron: &cron_job::Model,
        req: &BackfillRequest,
    ) -> StoreResult<BackfillOutcome> {
        if req.max_runs == 0 || req.max_runs > MAX_MAX_RUNS {
            return Err(rejected(
                "max_runs",
                "out_of_range",
                format!("max_runs must be between 1 and {MAX_MAX_RUNS}"),
            ));
        }
        if req.to <= req.from {
            return Err(rejected(
                "to",
                "invalid_range",
                format!(
                    "to ({}) must be after from ({})",
                    rfc3339(req.to),
                    rfc3339(req.from)
                ),
            ));
        }
        let schedule = Schedule::parse(&cron.cron_expression, &cron.timezone).map_err(|e| {
            rejected(
                "cron_expression",
                "invalid_schedule",
                format!("cron {} has a schedule that does not parse: {e}", cron.id),
            )
        })?;
        let timetable = Timetable::new(
            Arc::new(schedule),
            &stored_dates(cron.excluded_dates.as_ref()),
            cron.jitter_seconds.max(0) as u32,
        );
        let cron_ctx = Cron {
            model: cron,
            timetable,
        };

        // Fire times from now on, and those the dispatchers have not reached yet, are theirs.
        let now = self.now().await?;
        let mut to = req.to;
        let mut note = None;
        if to > now {
            to = now;
            note = Some(format!(
                "to moved back to now ({}): fire times from now on belong to the dispatchers",
                rfc3339(now)
            ));
        }
        if let (true, Some(marker)) = (cron.is_enabled, cron.next_fire_time) {
            if marker < to {
                to = marker;
                note = Some(format!(
                    "to moved back to {}: the dispatchers have not reached the fire times from \
                     there on yet and decide them",
                    rfc3339(marker)
                ));
            }
        }
        if req.from >= to {
            return Err(rejected(
                "from",
                "invalid_range",
                format!(
                    "from ({}) is not before {}; {}",
                    rfc3339(req.from),
                    rfc3339(to),
                    note.as_deref()
                        .unwrap_or("a backfill is for past fire times")
                ),
            ));
        }
        let from = req.from;
        let fires = cron_ctx.fires(from, to, MAX_EXAMINED + 1);
        if fires.len() > MAX_EXAMINED {
            return Err(rejected(
                "to",
                "range_too_large",
                format!(
                    "[{}, {}) holds more than {MAX_EXAMINED} fire times of cron {}, more than one \
                     backfill examines (and it would run at most max_runs {}): backfill a \
                     shorter range",
                    rfc3339(from),
                    rfc3339(to),
                    cron.id,
                    req.max_runs
                ),
            ));
        }
        let rows = rows_in_range(
            &self.db,
            self.dialect,
            cron.id,
            from,
            to,
            2 * MAX_EXAMINED + 1,
        )
        .await?;
        if rows.len() > 2 * MAX_EXAMINED {
            return Err(rejected(
                "to",
                "range_too_large",
                format!(
                    "[{}, {}) holds more than {} executions of cron {}: backfill a shorter range",
                    rfc3339(from),
                    rfc3339(to),
                    2 * MAX_EXAMINED,
                    cron.id
                ),
            ));
        }
        let plan = cron_ctx.plan(&fires, &rows, &req.rerun);
        let count = |a: BackfillAction| plan.steps.iter().filter(|(_, s)| s.action() == a).count();
        let (would_create, would_rerun) =
            (count(BackfillAction::Create), count(BackfillAction::Rerun));
        if would_create + would_rerun > req.max_runs as usize {
            return Err(rejected(
                "max_runs",
                "over_max_runs",
                format!(
                    "the backfill of [{}, {}) would run {} fire times of cron {} ({} new, {} \
                     again), more than max_runs {}: raise max_runs (at most {MAX_MAX_RUNS}) or \
                     backfill a shorter range",
                    rfc3339(from),
                    rfc3339(to),
                    would_create + would_rerun,
                    cron.id,
                    would_create,
                    would_rerun,
                    req.max_runs
                ),
            ));
        }

        let items = if req.dry_run {
            plan.steps
                .iter()
                .map(|(fire, step)| {
                    let (execution_id, status) = match step {
                        Step::Insert | Step::Covered | Step::CoveredExcluded(None) => (None, None),
                        Step::Rearm(id) | Step::CoveredExcluded(Some(id)) => (Some(*id), None),
                        Step::Rerun(id, status) => (Some(*id), Some(*status)),
                        Step::Leave(id, status) => (Some(*id), *status),
                        Step::Excluded(row) => (row.map(|r| r.0), row.and_then(|r| r.1)),
                    };
                    BackfillItem {
                        fire_time: *fire,
                        action: step.action(),
                        execution_id,
                        status,
                        run_at: cron_ctx.timetable.run_at(cron.id, *fire),
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut outcome = BackfillOutcome {
            backfill_id: None,
            cron_id: cron.id,
            from,
            to,
            requested_to: req.to,
            note,
            overlap: req.overlap,
            rerun: req.rerun.clone(),
            dry_run: req.dry_run,
            created: 0,
            rerun_count: 0,
            left_alone: 0,
            excluded: 0,
            items,
        };
        if !req.dry_run {
            self.write_backfill(&cron_ctx, req, from, to, &fires, &mut outcome)
                .await?;
        }
        for item in &outcome.items {
            match item.action {
                BackfillAction::Create => outcome.created += 1,
                BackfillAction::Rerun => outcome.rerun_count += 1,
                BackfillAction::Exists => outcome.left_alone += 1,
                BackfillAction::Excluded => outcome.excluded += 1,
            }
        }
        Ok(outcome)
    }

    /// Writes the backfill chunk by chunk; records it in `cron_backfills` with the first.
    async fn write_backfill(
        &self,
        cron: &Cron<'_>,
        req: &BackfillRequest,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        fires: &[DateTime<Utc>],
        outcome: &mut BackfillOutcome,
    ) -> StoreResult<()> {
        let job_id = cron.model.id;
        let mut backfill_id: Option<i64> = None;
        let chunks: Vec<&[DateTime<Utc>]> = if fires.is_empty() {
            vec![&[]]
        } else {
            fires.chunks(CHUNK).collect()
        };
        let mut offset = 0;
        for (i, chunk) in chunks.iter().enumerate() {
            let sub_from = if i == 0 { from } else { chunk[0] };
            let sub_to = fires.get(offset + chunk.len()).copied().unwrap_or(to);
            offset += chunk.len();
            let run = || async {
                let txn = self.db.begin().await?;
                if !lock_cron(&txn, self.dialect, job_id).await? {
                    txn.rollback().await?;
                    return Ok::<_, DbErr>(None);
                }
                let id = match backfill_id {
                    Some(id) => id,
                    None => insert_backfill(&txn, self.dialect, job_id, req, from, to).await?,
                };
                let items =
                    write_chunk(&txn, self.dialect, cron, req, id, chunk, sub_from, sub_to).await?;
                txn.commit().await?;
                Ok(Some(ChunkDone {
                    items,
                    backfill_id: id,
                }))
            };
            let Some(done) = retry_transient(run).await? else {
                return Err(StoreError::Conflict(format!(
                    "cron {job_id} was deleted while it was backfilled"
                )));
            };
            backfill_id = Some(done.backfill_id);
            outcome.items.extend(done.items);
        }
        outcome.backfill_id = backfill_id;
        let started = outcome
            .items
            .iter()
            .any(|i| matches!(i.action, BackfillAction::Create | BackfillAction::Rerun));
        if started {
            self.announce_due(Utc::now()).await;
        }
        Ok(())
    }

    /// A recorded backfill with its progress.
    pub async fn backfill_view(&self, id: i64) -> StoreResult<Option<BackfillView>> {
        let Some(backfill) = cron_backfill::Entity::find_by_id(id).one(&self.db).await? else {
            return Ok(None);
        };
        let mut progress = self.backfill_progress(&[id]).await?;
        Ok(Some(BackfillView {
            backfill,
            progress: progress.remove(&id).unwrap_or_default(),
        }))
    }

    /// A cron's backfills, newest first, `limit` from `offset`, with the total.
    pub async fn backfills_of(
        &self,
        job_id: i64,
        offset: u64,
        limit: u64,
    ) -> StoreResult<(Vec<BackfillView>, u64)> {
        use sea_orm::{ColumnTrait, PaginatorTrait, QueryFilter, QuerySelect};
        let query = cron_backfill::Entity::find().filter(cron_backfill::Column::JobId.eq(job_id));
        let total = query.clone().count(&self.db).await?;
        let rows = query
            .order_by_desc(cron_backfill::Column::Id)
            .offset(offset)
            .limit(limit)
            .all(&self.db)
            .await?;
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let mut progress = if ids.is_empty() {
            HashMap::new()
        } else {
            self.backfill_progress(&ids).await?
        };
        let views = rows
            .into_iter()
            .map(|backfill| BackfillView {
                progress: progress.remove(&backfill.id).unwrap_or_default(),
                backfill,
            })
            .collect();
        Ok((views, total))
    }

    /// The executions of these backfills per status.
    async fn backfill_progress(
        &self,
        ids: &[i64],
    ) -> StoreResult<HashMap<i64, BTreeMap<Status, u64>>> {
        #[derive(FromQueryResult)]
        struct Count {
            backfill_id: i64,
            status: String,
            n: i64,
        }
        let mut q = Sql::new(self.dialect);
        q.push(
            "SELECT backfill_id, status, COUNT(*) AS n FROM job_executions WHERE backfill_id IN ",
        )
        .bind_list(ids)
        .push(" GROUP BY backfill_id, status");
        let mut out: HashMap<i64, BTreeMap<Status, u64>> = HashMap::new();
        for row in Count::find_by_statement(q.build()).all(&self.db).await? {
            if let Ok(status) = row.status.parse::<Status>() {
                *out.entry(row.backfill_id)
                    .or_default()
                    .entry(status)
                    .or_default() += row.n.max(0) as u64;
            }
        }
        Ok(out)
    }
}

/// The `cron_backfills` row of a request; its counts grow with each chunk.
async fn insert_backfill<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    job_id: i64,
    req: &BackfillRequest,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<i64, DbErr> {
    let rerun = serde_json::Value::Array(
        req.rerun
            .iter()
            .map(|r| serde_json::Value::String(r.as_str().to_string()))
            .collect(),
    );
    let mut q = Sql::new(dialect);
    q.push(
        "INSERT INTO cron_backfills (job_id, range_from, range_to, overlap, rerun, created, \
         rearmed, left_alone, requested_by, reason, created_at) VALUES (",
    )
    .bind(job_id)
    .push(", ")
    .bind(from)
    .push(", ")
    .bind(to)
    .push(", ")
    .bind(req.overlap.as_str())
    .push(", ")
    .bind(rerun)
    .push(", 0, 0, 0, ")
    .bind(req.requested_by.clone())
    .push(", ")
    .bind(req.reason.clone())
    .push(", ")
    .now()
    .push(")");
    match dialect {
        Dialect::Postgres | Dialect::Sqlite => {
            q.push(" RETURNING id");
            let row = db
                .query_one(q.build())
                .await?
                .ok_or_else(|| DbErr::Custom("the backfill row was not returned".into()))?;
            row.try_get_by_index::<i64>(0)
        }
        Dialect::MySql => Ok(db.execute(q.build()).await?.last_insert_id() as i64),
    }
}

/// One chunk in `db`'s transaction, which holds the cron's lock: plans `fires` (those of
/// `[from, to)`) from the rows as they are now, writes them, starts the first buffered one
/// if the cron's slot is free, and adds the counts to the backfill's row.
#[allow(clippy::too_many_arguments)]
async fn write_chunk<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    cron: &Cron<'_>,
    req: &BackfillRequest,
    backfill_id: i64,
    fires: &[DateTime<Utc>],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<BackfillItem>, DbErr> {
    let job_id = cron.model.id;
    let rows = rows_in_range(db, dialect, job_id, from, to, 2 * MAX_EXAMINED + 1).await?;
    let plan = cron.plan(fires, &rows, &req.rerun);
    let (status, exclusive) = match req.overlap {
        BackfillOverlap::BufferAll => (Status::Waiting, true),
        BackfillOverlap::Allow => (Status::Pending, false),
    };
    for row in &plan.cut {
        cut_missed(db, dialect, cron, row, from, to).await?;
    }
    let mut items = Vec::with_capacity(plan.steps.len());
    let mut tagged = Vec::new();
    for (fire, step) in &plan.steps {
        let fire = *fire;
        let new = cron.new_row(fire, ParamSource::Backfill);
        let written: Option<i64> = match step {
            Step::Insert | Step::Covered => {
                insert_as(db, dialect, &new, status, exclusive, None).await?
            }
            Step::Rearm(id) => {
                let mut q = Sql::new(dialect);
                push_rearm_set(&mut q, &new, status, exclusive, None);
                q.push(" WHERE id = ").bind(*id);
                push_rearmable(&mut q);
                (db.execute(q.build()).await?.rows_affected() == 1).then_some(*id)
            }
            Step::Rerun(id, expected) => {
                let mut q = Sql::new(dialect);
                push_rearm_set(&mut q, &new, status, exclusive, None);
                q.push(" WHERE id = ")
                    .bind(*id)
                    .push(" AND status = ")
                    .status(*expected);
                (db.execute(q.build()).await?.rows_affected() == 1).then_some(*id)
            }
            Step::CoveredExcluded(over) => {
                write_excluded(db, dialect, cron, fire, *over).await?;
                None
            }
            Step::Leave(..) | Step::Excluded(_) => None,
        };
        let item = match (written, step) {
            (Some(id), _) => {
                tagged.push(id);
                BackfillItem {
                    fire_time: fire,
                    action: step.action(),
                    execution_id: Some(id),
                    status: Some(status),
                    run_at: new.run_at,
                }
            }
            (None, Step::Leave(id, status)) => BackfillItem {
                fire_time: fire,
                action: BackfillAction::Exists,
                execution_id: Some(*id),
                status: *status,
                run_at: new.run_at,
            },
            (None, Step::Excluded(row)) => BackfillItem {
                fire_time: fire,
                action: BackfillAction::Excluded,
                execution_id: row.map(|r| r.0),
                status: row.and_then(|r| r.1),
                run_at: new.run_at,
            },
            // An EXCLUDED row written, or a row taken by someone else in between (a
            // dispatcher creating a fire time of an `allow` cron does not take its lock):
            // reported as it is now.
            (None, _) => {
                let now = row_at(db, dialect, job_id, fire).await?;
                let action = match step {
                    Step::CoveredExcluded(_) => BackfillAction::Excluded,
                    _ => BackfillAction::Exists,
                };
                BackfillItem {
                    fire_time: fire,
                    action,
                    execution_id: now.as_ref().map(|r| r.0),
                    status: now.and_then(|r| r.1),
                    run_at: new.run_at,
                }
            }
        };
        items.push(item);
    }
    if !tagged.is_empty() {
        let mut q = Sql::new(dialect);
        q.push("UPDATE job_executions SET param_source = ")
            .bind(ParamSource::Backfill.as_str())
            .push(", backfill_id = ")
            .bind(backfill_id)
            .push(", requested_by = ")
            .bind(req.requested_by.clone())
            .push(", reason = ")
            .bind(req.reason.clone())
            .push(" WHERE id IN ")
            .bind_list(&tagged);
        db.execute(q.build()).await?;
    }
    if exclusive && !tagged.is_empty() {
        promote_locked(db, dialect, job_id).await?;
        // The first of them may be PENDING now: report it so.
        if let Some(first) = items.iter_mut().find(|i| i.execution_id == Some(tagged[0])) {
            if let Some((_, status)) = row_at(db, dialect, job_id, first.fire_time).await? {
                first.status = status;
            }
        }
    }
    let n = |a: BackfillAction| items.iter().filter(|i| i.action == a).count() as i32;
    let mut q = Sql::new(dialect);
    q.push("UPDATE cron_backfills SET created = created + ")
        .bind(n(BackfillAction::Create))
        .push(", rearmed = rearmed + ")
        .bind(n(BackfillAction::Rerun))
        .push(", left_alone = left_alone + ")
        .bind(n(BackfillAction::Exists))
        .push(" WHERE id = ")
        .bind(backfill_id);
    db.execute(q.build()).await?;
    Ok(items)
}

/// The row at (cron, fire time): its id and status.
async fn row_at<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    job_id: i64,
    fire: DateTime<Utc>,
) -> Result<Option<(i64, Option<Status>)>, DbErr> {
    #[derive(FromQueryResult)]
    struct IdStatus {
        id: i64,
        status: String,
    }
    let mut q = Sql::new(dialect);
    q.push("SELECT id, status FROM job_executions WHERE job_id = ")
        .bind(job_id)
        .push(" AND scheduled_time = ")
        .bind(fire);
    Ok(IdStatus::find_by_statement(q.build())
        .one(db)
        .await?
        .map(|r| (r.id, r.status.parse().ok())))
}

/// An excluded fire time that a cut MISSED row stood for keeps a decision: EXCLUDED, over
/// the MISSED row when it was its first fire time, else a row of its own.
async fn write_excluded<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    cron: &Cron<'_>,
    fire: DateTime<Utc>,
    over: Option<i64>,
) -> Result<(), DbErr> {
    let mut new = cron.new_row(fire, ParamSource::Cron);
    new.run_at = fire;
    let message = cron.excluded_message(fire);
    match over {
        Some(id) => {
            let mut q = Sql::new(dialect);
            push_rearm_set(&mut q, &new, Status::Excluded, false, Some(&message));
            q.push(" WHERE id = ")
                .bind(id)
                .push(" AND status = ")
                .status(Status::Missed);
            db.execute(q.build()).await?;
        }
        None => {
            insert_as(db, dialect, &new, Status::Excluded, false, Some(&message)).await?;
        }
    }
    Ok(())
}

/// Cuts a MISSED row at `[from, to)` (see the module): the part before `from` stays the
/// row, the part from `to` on becomes a new MISSED row. The fire times inside are the
/// chunk's to write; when the row's own first fire time is inside, its step re-arms it.
async fn cut_missed<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    cron: &Cron<'_>,
    row: &RowAt,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(), DbErr> {
    let Some(until) = row.fire_time_until else {
        return Ok(());
    };
    let start = row.scheduled_time;
    let message = row
        .error_message
        .clone()
        .unwrap_or_else(|| "missed: every dispatcher was down".to_string());
    // The row's own first fire time is inside the range when its step re-arms it; else the
    // row keeps it (it may also be a fire time of an earlier schedule) and the fire times
    // before `from`.
    let first_inside =
        start >= from && cron.fires(start, start + Duration::seconds(1), 1) == [start];
    if !first_inside {
        let (head, last) = cron.count(start, from.min(until + Duration::seconds(1)));
        let own = i32::from(cron.fires(start, start + Duration::seconds(1), 1) != [start]);
        let last = last.filter(|l| *l > start);
        let mut q = Sql::new(dialect);
        q.push("UPDATE job_executions SET fire_time_until = ")
            .bind(last)
            .push(", fire_count = ")
            .bind((head + own).max(1))
            .push(", updated_at = ")
            .now()
            .push(" WHERE id = ")
            .bind(row.id)
            .push(" AND status = ")
            .status(Status::Missed);
        db.execute(q.build()).await?;
    }
    if until >= to {
        let tail_end = until + Duration::seconds(1);
        if let Some(&first) = cron.fires(to, tail_end, 1).first() {
            let (count, last) = cron.count(first, tail_end);
            let mut new = cron.new_row(first, ParamSource::Cron);
            new.run_at = first;
            record(
                db,
                dialect,
                &LedgerRow {
                    first: new,
                    status: Status::Missed,
                    until: last.filter(|l| *l > first),
                    count: count.max(1),
                    message,
                },
            )
            .await?;
        }
    }
    Ok(())
}
