//! `/api/crons/{id}/next`, `/api/crons/preview` and `/api/crons/{id}/fire-times`: when a
//! cron will run (its expressions, excluded dates and jitter, as the dispatchers plan it),
//! before or after saving it, and what was decided for each of its past fire times (the
//! ledger: run, skipped, missed, excluded).

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};
use serde::Deserialize;

use super::models::{CronExpressionDto, Instant, StatusDto};
use super::strict::Strict;
use super::{validate, AdminState, ApiTag};
use crate::entities::job_execution::Status;
use crate::http::error::ApiError;
use crate::schedule::{PlannedFire, Timetable};
use crate::store::crons::stored_dates;
use crate::store::fire_times::MAX_FIRE_TIMES;

/// Fire times `next` and `preview` return when no count is given, and at most.
const DEFAULT_NEXT_COUNT: u32 = 5;
/// The ledger window when `from` or `to` is not given: a day either side of now.
const DEFAULT_WINDOW_HOURS: i64 = 24;
/// Ledger rows returned when no limit is given.
const DEFAULT_FIRE_TIMES_LIMIT: u64 = 100;

/// A planned fire time.
#[derive(Debug, Clone, Object)]
pub struct FireTime {
    /// The nominal fire time (`scheduled_time` of its execution).
    pub utc: Instant,
    /// RFC 3339 with the zone's offset at that instant.
    pub local: String,
    /// When it may start: the fire time pushed by the cron's deterministic jitter.
    pub run_at: Instant,
    /// On one of the cron's excluded dates: it will not run (recorded EXCLUDED).
    pub excluded: bool,
}

/// The next fire times of a cron, or of a definition not saved yet.
#[derive(Debug, Clone, Object)]
pub struct NextFireTimes {
    /// Absent for a preview.
    pub cron_id: Option<i64>,
    pub cron_expression: CronExpressionDto,
    pub timezone: String,
    /// The shortest gap between fire times of the expressions' union, in seconds (absent
    /// when it fires fewer than twice).
    pub min_interval_seconds: Option<i64>,
    pub times: Vec<FireTime>,
}

/// A cron definition to preview; the fields mean what they mean on `POST /api/crons`.
#[derive(Debug, Clone, Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct CronPreview {
    pub cron_expression: CronExpressionDto,
    #[oai(validator(max_length = 64))]
    pub timezone: Option<String>,
    pub excluded_dates: Option<Vec<String>>,
    #[oai(validator(minimum(value = "0"), maximum(value = "86400")))]
    pub jitter_seconds: Option<i32>,
    /// The jitter depends on the cron's id: the id the saved cron will have, or an
    /// existing cron's to see its times under this definition. Default 0.
    pub cron_id: Option<i64>,
    /// How many fire times, 1 to 100 (default 5).
    #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
    pub count: Option<u32>,
    /// Fire times strictly after this instant; default now.
    pub from: Option<DateTime<Utc>>,
}

/// What was decided for a fire time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase", rename = "FireTimeDecision")]
pub enum DecisionDto {
    /// An execution (see `status`).
    Run,
    /// Not run by the overlap policy.
    Skipped,
    /// Dropped by the misfire policy after every dispatcher was down.
    Missed,
    /// On an excluded date.
    Excluded,
    /// In the future and not decided yet: it will run (or, `excluded`, it will not).
    Planned,
}

/// One entry of a cron's ledger.
#[derive(Debug, Clone, Object)]
pub struct FireTimeEntry {
    pub fire_time: Instant,
    /// A MISSED entry stands for every fire time from `fire_time` to this one.
    pub fire_time_until: Option<Instant>,
    /// How many fire times the entry stands for.
    pub count: i32,
    pub decision: DecisionDto,
    /// The execution's status (absent for planned fire times).
    pub status: Option<StatusDto>,
    pub execution_id: Option<i64>,
    pub run_at: Option<Instant>,
    /// Why it did not run, or how its execution ended.
    pub reason: Option<String>,
    /// A planned fire time on an excluded date.
    pub excluded: bool,
}

/// A cron's fire times in a window: recorded decisions, then the planned ones.
#[derive(Debug, Clone, Object)]
pub struct FireTimes {
    pub cron_id: i64,
    pub from: Instant,
    pub to: Instant,
    pub items: Vec<FireTimeEntry>,
    /// The limit cut the list short.
    pub truncated: bool,
}

pub struct SchedulesApi {
    pub state: Arc<AdminState>,
}

#[OpenApi(prefix_path = "/api", tag = "ApiTag::Crons")]
impl SchedulesApi {
    /// The next fire times of a cron, in UTC and in its zone, with its excluded dates and
    /// jitter applied as the dispatchers will.
    #[oai(
        path = "/crons/:id/next",
        method = "get",
        operation_id = "next_fire_times"
    )]
    async fn next(
        &self,
        id: Path<i64>,
        /// How many, 1 to 100 (default 5).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        count: Query<Option<u32>>,
        /// Fire times strictly after this instant; default now.
        from: Query<Option<DateTime<Utc>>>,
    ) -> Result<Json<NextFireTimes>, ApiError> {
        let cron = self.cron(id.0).await?;
        // A stored cron may predate a stricter minimum interval; show its times anyway.
        let schedule = validate::schedule(&cron.cron_expression, &cron.timezone, 0)?;
        let timetable = Timetable::new(
            Arc::new(schedule),
            &stored_dates(cron.excluded_dates.as_ref()),
            cron.jitter_seconds.max(0) as u32,
        );
        if let Some(from) = from.0 {
            validate::instant("from", from)?;
        }
        let after = from.0.unwrap_or_else(Utc::now);
        let count = count.0.unwrap_or(DEFAULT_NEXT_COUNT) as usize;
        Ok(Json(next_times(
            Some(cron.id),
            &cron.cron_expression,
            &cron.timezone,
            &timetable,
            cron.id,
            after,
            count,
        )))
    }

    /// Preview a cron definition before saving it: the same checks as `POST /api/crons`
    /// (expressions, zone, minimum interval, excluded dates, jitter) and its next fire times.
    #[oai(
        path = "/crons/preview",
        method = "post",
        operation_id = "preview_cron"
    )]
    async fn preview(
        &self,
        body: Json<Strict<CronPreview>>,
    ) -> Result<Json<NextFireTimes>, ApiError> {
        let b = body.0 .0;
        let timezone = b
            .timezone
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "UTC".to_string());
        let expression = validate::expression(&b.cron_expression)?;
        let schedule =
            validate::schedule(&expression, &timezone, self.state.min_cron_interval_seconds)?;
        let dates = validate::excluded_dates(b.excluded_dates.as_deref().unwrap_or(&[]))?;
        let jitter = b.jitter_seconds.unwrap_or(0).max(0) as u32;
        let timetable = Timetable::new(Arc::new(schedule), &dates, jitter);
        if let Some(from) = b.from {
            validate::instant("from", from)?;
        }
        let after = b.from.unwrap_or_else(Utc::now);
        let count = b.count.unwrap_or(DEFAULT_NEXT_COUNT) as usize;
        Ok(Json(next_times(
            None,
            &expression,
            &timezone,
            &timetable,
            b.cron_id.unwrap_or(0),
            after,
            count,
        )))
    }

    /// The cron's fire times in `[from, to]`: what was decided for each past one (run,
    /// skipped, missed, excluded; a MISSED entry stands for every fire time of one outage),
    /// then the planned ones still to come. Operators' runs are not fire times and are not
    /// listed.
    #[oai(
        path = "/crons/:id/fire-times",
        method = "get",
        operation_id = "cron_fire_times"
    )]
    async fn fire_times(
        &self,
        id: Path<i64>,
        /// Default: a day before now.
        from: Query<Option<DateTime<Utc>>>,
        /// Default: a day after now.
        to: Query<Option<DateTime<Utc>>>,
        /// At most this many entries, 1 to 1000 (default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<u64>>,
    ) -> Result<Json<FireTimes>, ApiError> {
        let cron = self.cron(id.0).await?;
        let now = Utc::now();
        let from = from
            .0
            .unwrap_or(now - Duration::hours(DEFAULT_WINDOW_HOURS));
        let to = to.0.unwrap_or(now + Duration::hours(DEFAULT_WINDOW_HOURS));
        validate::instant("from", from)?;
        validate::instant("to", to)?;
        if from > to {
            return Err(ApiError::invalid(
                "invalid_window",
                "from",
                format!(
                    "from ({}) is after to ({})",
                    from.to_rfc3339(),
                    to.to_rfc3339()
                ),
            ));
        }
        let limit = limit
            .0
            .unwrap_or(DEFAULT_FIRE_TIMES_LIMIT)
            .min(MAX_FIRE_TIMES);
        let rows = self
            .state
            .store
            .fire_times(cron.id, from, to, limit + 1)
            .await?;
        let mut truncated = rows.len() as u64 > limit;
        let mut recorded = HashSet::new();
        let mut items: Vec<FireTimeEntry> = Vec::new();
        for row in rows.into_iter().take(limit as usize) {
            recorded.insert(row.scheduled_time);
            let status = row.status.parse::<Status>().ok();
            let decision = match status {
                Some(Status::Skipped) => DecisionDto::Skipped,
                Some(Status::Missed) => DecisionDto::Missed,
                Some(Status::Excluded) => DecisionDto::Excluded,
                _ => DecisionDto::Run,
            };
            items.push(FireTimeEntry {
                fire_time: Instant(row.scheduled_time),
                fire_time_until: row.fire_time_until.map(Instant),
                count: row.fire_count,
                decision,
                status: status.map(StatusDto::from),
                execution_id: Some(row.id),
                run_at: Some(Instant(row.run_at)),
                reason: row.error_message,
                excluded: false,
            });
        }
        // Planned: after the last decision recorded, from now on (what the dispatchers
        // have not reached yet), while the cron is enabled.
        let last_recorded = items.iter().map(|i| i.fire_time.0).max();
        if cron.is_enabled && !truncated {
            let schedule = validate::schedule(&cron.cron_expression, &cron.timezone, 0)?;
            let timetable = Timetable::new(
                Arc::new(schedule),
                &stored_dates(cron.excluded_dates.as_ref()),
                cron.jitter_seconds.max(0) as u32,
            );
            let start = [Some(from - Duration::seconds(1)), Some(now), last_recorded]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(now);
            let room = (limit as usize).saturating_sub(items.len());
            let planned = timetable.preview(cron.id, start, room + 1);
            for p in planned.into_iter().filter(|p| p.fire_time <= to) {
                if recorded.contains(&p.fire_time) {
                    continue;
                }
                if items.len() as u64 >= limit {
                    truncated = true;
                    break;
                }
                items.push(FireTimeEntry {
                    fire_time: Instant(p.fire_time),
                    fire_time_until: None,
                    count: 1,
                    decision: DecisionDto::Planned,
                    status: None,
                    execution_id: None,
                    run_at: Some(Instant(p.run_at)),
                    reason: None,
                    excluded: p.excluded,
                });
            }
        }
        Ok(Json(FireTimes {
            cron_id: cron.id,
            from: Instant(from),
            to: Instant(to),
            items,
            truncated,
        }))
    }
}

impl SchedulesApi {
    async fn cron(&self, id: i64) -> Result<crate::entities::cron_job::Model, ApiError> {
        super::crons::find_cron(&self.state, id).await
    }
}

fn next_times(
    cron_id: Option<i64>,
    expression: &str,
    timezone: &str,
    timetable: &Timetable,
    hash_id: i64,
    after: DateTime<Utc>,
    count: usize,
) -> NextFireTimes {
    let zone = timetable.schedule().timezone();
    let times = timetable
        .preview(hash_id, after, count)
        .into_iter()
        .map(|p: PlannedFire| FireTime {
            utc: Instant(p.fire_time),
            local: p
                .fire_time
                .with_timezone(&zone)
                .to_rfc3339_opts(SecondsFormat::Secs, true),
            run_at: Instant(p.run_at),
            excluded: p.excluded,
        })
        .collect();
    NextFireTimes {
        cron_id,
        cron_expression: CronExpressionDto::from_stored(expression),
        timezone: timezone.to_string(),
        min_interval_seconds: timetable.schedule().min_interval_seconds(Utc::now()),
        times,
    }
}
