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

use chrono::{DateTime, Utc};
use sea_orm::{DbErr, EntityTrait, FromQueryResult, QueryOrder, TransactionTrait};

use super::dialect::Sql;
use super::overlap::lock_cron;
use super::{retry_transient, Store, StoreError, StoreResult};
use crate::entities::job_execution::Status;
use crate::entities::{cron_backfill, cron_job};
use crate::schedule::{Schedule, Timetable};
use crate::store::crons::stored_dates;

mod plan;
mod write;

use plan::*;
use write::*;

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
