//! `POST /api/crons/{id}/backfill`, `GET /api/crons/{id}/backfills` and
//! `GET /api/backfills/{id}`: executions for a cron's past fire times on an operator's
//! request, and their progress (the rules are in `crate::store::backfill`).

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use serde::Deserialize;

use super::models::{Instant, Page, StatusCounts, StatusDto, DEFAULT_PAGE_SIZE};
use super::strict::Strict;
use super::{validate, AdminState, ApiTag, OPERATOR};
use crate::http::error::ApiError;
use crate::store::backfill::{
    BackfillAction, BackfillOutcome, BackfillOverlap, BackfillRequest, BackfillView, Rerun,
    DEFAULT_MAX_RUNS,
};

/// How a backfill's executions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Deserialize)]
#[oai(rename_all = "snake_case", rename = "BackfillOverlap")]
#[serde(rename_all = "snake_case")]
pub enum BackfillOverlapDto {
    /// One at a time, in fire-time order (the default).
    BufferAll,
    /// Concurrently.
    Allow,
}

impl From<BackfillOverlapDto> for BackfillOverlap {
    fn from(o: BackfillOverlapDto) -> Self {
        match o {
            BackfillOverlapDto::BufferAll => BackfillOverlap::BufferAll,
            BackfillOverlapDto::Allow => BackfillOverlap::Allow,
        }
    }
}

impl From<BackfillOverlap> for BackfillOverlapDto {
    fn from(o: BackfillOverlap) -> Self {
        match o {
            BackfillOverlap::BufferAll => BackfillOverlapDto::BufferAll,
            BackfillOverlap::Allow => BackfillOverlapDto::Allow,
        }
    }
}

/// A decision of the ledger a backfill may run again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Deserialize)]
#[oai(rename_all = "lowercase", rename = "BackfillRerun")]
#[serde(rename_all = "lowercase")]
pub enum RerunDto {
    /// MISSED (dropped by the misfire policy).
    Missed,
    /// SKIPPED (the overlap policy did not run it).
    Skipped,
    /// FAILED or TIMEOUT.
    Failed,
}

impl From<RerunDto> for Rerun {
    fn from(r: RerunDto) -> Self {
        match r {
            RerunDto::Missed => Rerun::Missed,
            RerunDto::Skipped => Rerun::Skipped,
            RerunDto::Failed => Rerun::Failed,
        }
    }
}

impl From<Rerun> for RerunDto {
    fn from(r: Rerun) -> Self {
        match r {
            Rerun::Missed => RerunDto::Missed,
            Rerun::Skipped => RerunDto::Skipped,
            Rerun::Failed => RerunDto::Failed,
        }
    }
}

/// What a backfill did with a fire time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase", rename = "BackfillAction")]
pub enum BackfillActionDto {
    /// An execution was created (or, for a dry run, would be).
    Create,
    /// Its missed, skipped or failed row runs again.
    Rerun,
    /// It has a row, left alone.
    Exists,
    /// On an excluded date of the cron: not run.
    Excluded,
}

impl From<BackfillAction> for BackfillActionDto {
    fn from(a: BackfillAction) -> Self {
        match a {
            BackfillAction::Create => BackfillActionDto::Create,
            BackfillAction::Rerun => BackfillActionDto::Rerun,
            BackfillAction::Exists => BackfillActionDto::Exists,
            BackfillAction::Excluded => BackfillActionDto::Excluded,
        }
    }
}

/// A backfill request.
#[derive(Debug, Clone, Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct BackfillCreate {
    /// Fire times at or after this instant ...
    pub from: DateTime<Utc>,
    /// ... and before this one. Moved back to now (and, for an enabled cron, to the fire
    /// time the dispatchers are at) when later: those fire times are the dispatchers'.
    pub to: DateTime<Utc>,
    /// The most fire times it may create or re-run, 1 to 10000 (default 1000); a range
    /// that needs more is refused (422 `over_max_runs`, saying how many).
    pub max_runs: Option<u32>,
    /// Answer what it would do; write nothing.
    pub dry_run: Option<bool>,
    /// `buffer_all` (default): one at a time in fire-time order; `allow`: concurrently.
    pub overlap: Option<BackfillOverlapDto>,
    /// Decisions to run again instead of leaving them alone (default none).
    pub rerun: Option<Vec<RerunDto>>,
    /// Why (kept on the backfill and its executions).
    #[oai(validator(max_length = 1000))]
    pub reason: Option<String>,
}

/// One fire time of a backfill.
#[derive(Debug, Clone, Object)]
pub struct BackfillItemDto {
    pub fire_time: Instant,
    pub action: BackfillActionDto,
    /// The execution that stands for the fire time (absent for a dry run's new ones and
    /// for excluded fire times without a row).
    pub execution_id: Option<i64>,
    /// That execution's status.
    pub status: Option<StatusDto>,
    /// When it may start: the fire time plus the cron's jitter.
    pub run_at: Instant,
}

/// What a backfill did (or, for a dry run, would do).
#[derive(Debug, Clone, Object)]
pub struct BackfillResult {
    /// Absent for a dry run.
    pub backfill_id: Option<i64>,
    pub cron_id: i64,
    pub from: Instant,
    /// The end used (see `note`).
    pub to: Instant,
    pub requested_to: Instant,
    /// Why `to` is earlier than asked.
    pub note: Option<String>,
    pub overlap: BackfillOverlapDto,
    pub rerun_decisions: Vec<RerunDto>,
    pub dry_run: bool,
    /// Fire times given a new execution.
    pub created: u32,
    /// Fire times whose missed, skipped or failed row runs again.
    pub rerun: u32,
    /// Fire times that had a row, left alone.
    pub left_alone: u32,
    /// Fire times on excluded dates.
    pub excluded: u32,
    /// Every fire time of the range, in order.
    pub items: Vec<BackfillItemDto>,
}

impl From<BackfillOutcome> for BackfillResult {
    fn from(o: BackfillOutcome) -> Self {
        BackfillResult {
            backfill_id: o.backfill_id,
            cron_id: o.cron_id,
            from: Instant(o.from),
            to: Instant(o.to),
            requested_to: Instant(o.requested_to),
            note: o.note,
            overlap: o.overlap.into(),
            rerun_decisions: o.rerun.iter().map(|r| (*r).into()).collect(),
            dry_run: o.dry_run,
            created: o.created,
            rerun: o.rerun_count,
            left_alone: o.left_alone,
            excluded: o.excluded,
            items: o
                .items
                .into_iter()
                .map(|i| BackfillItemDto {
                    fire_time: Instant(i.fire_time),
                    action: i.action.into(),
                    execution_id: i.execution_id,
                    status: i.status.map(StatusDto::from),
                    run_at: Instant(i.run_at),
                })
                .collect(),
        }
    }
}

/// How a backfill's executions stand.
#[derive(Debug, Clone, Object)]
pub struct BackfillProgress {
    /// Its executions (rows a later backfill ran again count there).
    pub total: u64,
    pub by_status: StatusCounts,
    /// None of them is PENDING, RUNNING or WAITING any more.
    pub done: bool,
}

/// A recorded backfill.
#[derive(Debug, Clone, Object)]
pub struct Backfill {
    pub id: i64,
    pub cron_id: i64,
    pub from: Instant,
    pub to: Instant,
    pub overlap: String,
    pub rerun_decisions: Vec<String>,
    pub created: i32,
    pub rerun: i32,
    pub left_alone: i32,
    pub requested_by: Option<String>,
    pub reason: Option<String>,
    pub created_at: Instant,
    pub progress: BackfillProgress,
}

impl From<BackfillView> for Backfill {
    fn from(v: BackfillView) -> Self {
        let progress = BackfillProgress {
            total: v.total(),
            by_status: StatusCounts::from(&v.progress),
            done: v.done(),
        };
        let b = v.backfill;
        Backfill {
            id: b.id,
            cron_id: b.job_id,
            from: Instant(b.range_from),
            to: Instant(b.range_to),
            overlap: b.overlap,
            rerun_decisions: b
                .rerun
                .as_ref()
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            created: b.created,
            rerun: b.rearmed,
            left_alone: b.left_alone,
            requested_by: b.requested_by,
            reason: b.reason,
            created_at: Instant(b.created_at),
            progress,
        }
    }
}

#[derive(ApiResponse)]
pub enum BackfillAnswer {
    /// The backfill was recorded and its executions created.
    #[oai(status = 201)]
    Created(Json<BackfillResult>),
    /// A dry run: what it would do; nothing was written.
    #[oai(status = 200)]
    DryRun(Json<BackfillResult>),
}

pub struct BackfillApi {
    pub state: Arc<AdminState>,
}

#[OpenApi(prefix_path = "/api", tag = "ApiTag::Crons")]
impl BackfillApi {
    /// Backfill a cron: one execution for every fire time in `[from, to)` that has none
    /// (`param_source` `backfill`), run one at a time in fire-time order (`overlap`
    /// `buffer_all`, the default) or concurrently (`allow`). Fire times with a row are left
    /// alone unless `rerun` names their decision; excluded dates are not run. Idempotent:
    /// a repeated backfill creates nothing new.
    #[oai(
        path = "/crons/:id/backfill",
        method = "post",
        operation_id = "backfill_cron"
    )]
    async fn backfill(
        &self,
        id: Path<i64>,
        body: Json<Strict<BackfillCreate>>,
    ) -> Result<BackfillAnswer, ApiError> {
        let b = body.0 .0;
        let cron = super::crons::find_cron(&self.state, id.0).await?;
        validate::instant("from", b.from)?;
        validate::instant("to", b.to)?;
        let reason = match b.reason.map(|r| r.trim().to_string()) {
            Some(r) if !r.is_empty() => {
                validate::text("reason", &r, true)?;
                Some(r)
            }
            _ => None,
        };
        let dry_run = b.dry_run.unwrap_or(false);
        if !dry_run && !self.state.registry.contains(&cron.handler_name) {
            return Err(ApiError::conflict(
                "unknown_handler",
                format!(
                    "cron {} uses handler {:?}, which this jobu does not have",
                    cron.id, cron.handler_name
                ),
            ));
        }
        let request = BackfillRequest {
            from: b.from,
            to: b.to,
            max_runs: b.max_runs.unwrap_or(DEFAULT_MAX_RUNS),
            dry_run,
            overlap: b.overlap.map(Into::into).unwrap_or_default(),
            rerun: b
                .rerun
                .unwrap_or_default()
                .into_iter()
                .map(Rerun::from)
                .collect::<BTreeSet<_>>(),
            requested_by: Some(OPERATOR.to_string()),
            reason,
        };
        let outcome = self.state.store.backfill(&cron, &request).await?;
        log_outcome(&outcome, OPERATOR);
        let answer = BackfillResult::from(outcome);
        Ok(if dry_run {
            BackfillAnswer::DryRun(Json(answer))
        } else {
            BackfillAnswer::Created(Json(answer))
        })
    }

    /// A cron's backfills, newest first, each with its progress.
    #[oai(
        path = "/crons/:id/backfills",
        method = "get",
        operation_id = "list_cron_backfills"
    )]
    async fn list(
        &self,
        id: Path<i64>,
        /// Page number, from 1.
        #[oai(validator(minimum(value = "1"), maximum(value = "1000000000")))]
        page: Query<Option<u64>>,
        /// Items per page, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        size: Query<Option<u64>>,
    ) -> Result<Json<Page<Backfill>>, ApiError> {
        let cron = super::crons::find_cron(&self.state, id.0).await?;
        let page = page.0.unwrap_or(1);
        let size = size.0.unwrap_or(DEFAULT_PAGE_SIZE);
        let (views, total) = self
            .state
            .store
            .backfills_of(cron.id, (page - 1) * size, size)
            .await?;
        let items = views.into_iter().map(Backfill::from).collect();
        Ok(Json(Page::new(items, total, page, size)))
    }

    /// One backfill and its progress: its executions per status.
    #[oai(path = "/backfills/:id", method = "get", operation_id = "get_backfill")]
    async fn get(&self, id: Path<i64>) -> Result<Json<Backfill>, ApiError> {
        let view = self
            .state
            .store
            .backfill_view(id.0)
            .await?
            .ok_or_else(|| ApiError::not_found("backfill", id.0))?;
        Ok(Json(view.into()))
    }
}

/// Logs a backfill with who asked for it (the API and the CLI).
pub fn log_outcome(o: &BackfillOutcome, operator: &str) {
    let rerun: Vec<&str> = o.rerun.iter().map(|r| r.as_str()).collect();
    if o.dry_run {
        tracing::info!(
            job_id = o.cron_id,
            operator,
            from = %o.from.to_rfc3339(),
            to = %o.to.to_rfc3339(),
            would_create = o.created,
            would_rerun = o.rerun_count,
            left_alone = o.left_alone,
            excluded = o.excluded,
            "admin: cron backfill planned (dry run)"
        );
    } else {
        tracing::info!(
            job_id = o.cron_id,
            backfill_id = o.backfill_id,
            operator,
            from = %o.from.to_rfc3339(),
            to = %o.to.to_rfc3339(),
            overlap = o.overlap.as_str(),
            rerun = ?rerun,
            created = o.created,
            rerun_count = o.rerun_count,
            left_alone = o.left_alone,
            excluded = o.excluded,
            "admin: cron backfilled"
        );
    }
}
