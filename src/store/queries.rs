//! Read-only views of `job_executions` for operators: filtered pages and statistics. Nothing
//! here writes; every instant compared is bound through the dialect (MySQL DATETIME, SQLite
//! RFC 3339 text), so filters mean the same on the three databases.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, FromQueryResult, QueryFilter};

use super::dialect::{Dialect, Sql};
use super::{Store, StoreResult};
use crate::entities::cron_job;
use crate::entities::job_execution::{self, Status};

/// How many of the latest started executions the schedule-lag statistic looks at.
pub const LAG_SAMPLE: u64 = 1000;

/// The sides of an execution list on PostgreSQL: the rows of its index
/// (`ix_job_executions_scheduled_time_id`, whose predicate names the same statuses) and the
/// PENDING and RUNNING rows, which their own partial indexes hold. On SQLite and MySQL that
/// index holds every row, and one side reads it all.
#[derive(Clone, Copy)]
enum ListSide {
    Every,
    Indexed,
    Unfinished,
}

impl ListSide {
    fn push_predicate(self, q: &mut Sql) {
        match self {
            ListSide::Every => q,
            ListSide::Indexed => q
                .push(" AND status NOT IN ")
                .statuses(&[Status::Pending, Status::Running]),
            // An OR, not IN: the planner matches each arm to its partial index.
            ListSide::Unfinished => q
                .push(" AND (status = ")
                .status(Status::Pending)
                .push(" OR status = ")
                .status(Status::Running)
                .push(")"),
        };
    }
}

/// Which executions a list shows; `None` filters nothing.
#[derive(Debug, Clone, Default)]
pub struct ExecutionFilter {
    pub cron_id: Option<i64>,
    pub status: Option<Status>,
    /// `scheduled_time >= from`
    pub from: Option<DateTime<Utc>>,
    /// `scheduled_time <= to`
    pub to: Option<DateTime<Utc>>,
}

/// An execution with the name of its cron (`None` for ad-hoc runs and deleted crons).
#[derive(Debug, Clone)]
pub struct ExecutionView {
    pub execution: job_execution::Model,
    pub cron_name: Option<String>,
}

/// Counts by status, by handler, and the age of the backlog.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub by_status: BTreeMap<Status, u64>,
    pub by_handler: BTreeMap<String, BTreeMap<Status, u64>>,
    /// How long the oldest due PENDING execution has waited, in seconds.
    pub oldest_pending_age_seconds: Option<f64>,
    /// Start minus scheduled time of the latest [`LAG_SAMPLE`] first attempts, in seconds.
    pub lag_count: u64,
    pub lag_avg_seconds: Option<f64>,
    pub lag_max_seconds: Option<f64>,
}

#[derive(FromQueryResult)]
struct Count {
    total: i64,
}

#[derive(FromQueryResult)]
struct StatusCount {
    handler_name: String,
    status: String,
    total: i64,
}

#[derive(FromQueryResult)]
struct Oldest {
    oldest: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
}

#[derive(FromQueryResult)]
struct Started {
    scheduled_time: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
}

fn filtered(q: &mut Sql, filter: &ExecutionFilter) {
    q.push(" WHERE 1 = 1");
    if let Some(id) = filter.cron_id {
        q.push(" AND job_id = ").bind(id);
    }
    if let Some(status) = filter.status {
        q.push(" AND status = ").status(status);
    }
    if let Some(from) = filter.from {
        q.push(" AND scheduled_time >= ").bind(from);
    }
    if let Some(to) = filter.to {
        q.push(" AND scheduled_time <= ").bind(to);
    }
}

/// Totals over handlers, every status present.
fn sum_by_status(by_handler: &BTreeMap<String, BTreeMap<Status, u64>>) -> BTreeMap<Status, u64> {
    let mut by_status: BTreeMap<Status, u64> = Status::ALL.iter().map(|s| (*s, 0)).collect();
    for counts in by_handler.values() {
        for (status, n) in counts {
            *by_status.entry(*status).or_default() += n;
        }
    }
    by_status
}

impl Store {
    /// One page of executions, newest fire time first, and how many match in all.
    pub async fn list_executions(
        &self,
        filter: &ExecutionFilter,
        offset: u64,
        limit: u64,
    ) -> StoreResult<(Vec<ExecutionView>, u64)> {
        let mut count = Sql::new(self.dialect);
        count.push("SELECT COUNT(*) AS total FROM job_executions");
        filtered(&mut count, filter);
        let total = Count::find_by_statement(count.build())
            .one(&self.db)
            .await?
            .map_or(0, |c| c.total.max(0) as u64);

        let offset = offset.min(i64::MAX as u64) as i64;
        let limit = limit.min(i64::MAX as u64) as i64;
        // On PostgreSQL the list index holds neither PENDING nor RUNNING rows (migration 12:
        // each write of those would add an entry), so a page merges the newest of the other
        // rows, read from that index, with the newest of those two, read through their own
        // partial indexes; a status filter needs one side only. Elsewhere the index is full
        // (a side of unfinished rows would scan all of it backwards for a few).
        let sides: &[ListSide] = match (self.dialect, filter.status) {
            (Dialect::Sqlite | Dialect::MySql, _) => &[ListSide::Every],
            (Dialect::Postgres, Some(Status::Pending | Status::Running)) => &[ListSide::Unfinished],
            (Dialect::Postgres, Some(_)) => &[ListSide::Indexed],
            (Dialect::Postgres, None) => &[ListSide::Indexed, ListSide::Unfinished],
        };
        let columns = job_execution::select_list(false);
        let mut page = Sql::new(self.dialect);
        page.push("SELECT ").push(columns).push(" FROM (");
        for (i, side) in sides.iter().enumerate() {
            if i > 0 {
                page.push(" UNION ALL ");
            }
            page.push("SELECT * FROM (SELECT ")
                .push(columns)
                .push(" FROM job_executions");
            filtered(&mut page, filter);
            side.push_predicate(&mut page);
            // A literal limit: PostgreSQL plans a bound one as a tenth of the table once it
            // caches a generic plan, and would sort instead of reading the index.
            page.push(" ORDER BY scheduled_time DESC, id DESC LIMIT ")
                .push(&limit.saturating_add(offset).to_string())
                .push(") AS s")
                .push(&i.to_string());
        }
        page.push(") AS page ORDER BY scheduled_time DESC, id DESC LIMIT ")
            .bind(limit)
            .push(" OFFSET ")
            .bind(offset);
        let rows = job_execution::Model::find_by_statement(page.build())
            .all(&self.db)
            .await?;
        Ok((self.with_cron_names(rows).await?, total))
    }

    /// One execution with its cron's name.
    pub async fn execution_view(&self, id: i64) -> StoreResult<Option<ExecutionView>> {
        let Some(row) = self.execution(id).await? else {
            return Ok(None);
        };
        Ok(self.with_cron_names(vec![row]).await?.pop())
    }

    /// Attaches cron names with one query for the whole page.
    pub async fn with_cron_names(
        &self,
        rows: Vec<job_execution::Model>,
    ) -> StoreResult<Vec<ExecutionView>> {
        let mut ids: Vec<i64> = rows.iter().filter_map(|r| r.job_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let names: BTreeMap<i64, String> = if ids.is_empty() {
            BTreeMap::new()
        } else {
            cron_job::Entity::find()
                .filter(cron_job::Column::Id.is_in(ids))
                .all(&self.db)
                .await?
                .into_iter()
                .map(|c| (c.id, c.name))
                .collect()
        };
        Ok(rows
            .into_iter()
            .map(|execution| ExecutionView {
                cron_name: execution.job_id.and_then(|id| names.get(&id).cloned()),
                execution,
            })
            .collect())
    }

    /// Execution counts by status (every status present, zeros included).
    /// Grouped by status alone, so the (status, run_at) index answers it without reading
    /// the table: `/metrics` runs it at every scrape.
    pub async fn status_counts(&self) -> StoreResult<BTreeMap<Status, u64>> {
        #[derive(FromQueryResult)]
        struct ByStatus {
            status: String,
            total: i64,
        }
        let mut q = Sql::new(self.dialect);
        q.push("SELECT status, COUNT(*) AS total FROM job_executions GROUP BY status");
        let mut counts: BTreeMap<Status, u64> = Status::ALL.iter().map(|s| (*s, 0)).collect();
        for row in ByStatus::find_by_statement(q.build()).all(&self.db).await? {
            if let Ok(status) = row.status.parse::<Status>() {
                *counts.entry(status).or_default() += row.total.max(0) as u64;
            }
        }
        Ok(counts)
    }

    async fn handler_status_counts(&self) -> StoreResult<BTreeMap<String, BTreeMap<Status, u64>>> {
        let mut q = Sql::new(self.dialect);
        q.push(
            "SELECT handler_name, status, COUNT(*) AS total FROM job_executions \
             GROUP BY handler_name, status",
        );
        let mut by_handler: BTreeMap<String, BTreeMap<Status, u64>> = BTreeMap::new();
        for row in StatusCount::find_by_statement(q.build())
            .all(&self.db)
            .await?
        {
            // A status this binary does not know (written by hand) is not counted.
            if let Ok(status) = row.status.parse::<Status>() {
                let counts = by_handler
                    .entry(row.handler_name)
                    .or_insert_with(|| Status::ALL.iter().map(|s| (*s, 0)).collect());
                *counts.entry(status).or_default() += row.total.max(0) as u64;
            }
        }
        Ok(by_handler)
    }

    /// Counts, backlog age and schedule lag for `GET /api/stats`.
    pub async fn stats(&self) -> StoreResult<Stats> {
        let by_handler = self.handler_status_counts().await?;
        let by_status = sum_by_status(&by_handler);

        let mut q = Sql::new(self.dialect);
        q.push("SELECT MIN(run_at) AS oldest, ")
            .now()
            .push(" AS now FROM job_executions WHERE status = ")
            .status(Status::Pending)
            .push(" AND run_at <= ")
            .now();
        let oldest = Oldest::find_by_statement(q.build()).one(&self.db).await?;
        let oldest_pending_age_seconds = oldest.and_then(|o| {
            let age = o.now - o.oldest?;
            Some(age.num_milliseconds().max(0) as f64 / 1000.0)
        });

        // The newest rows by id (the primary key), so this stays cheap on a large table.
        let mut q = Sql::new(self.dialect);
        q.push("SELECT scheduled_time, started_at FROM job_executions WHERE started_at IS NOT NULL AND retry_count = 0 ORDER BY id DESC LIMIT ")
            .bind(LAG_SAMPLE as i64);
        let lags: Vec<f64> = Started::find_by_statement(q.build())
            .all(&self.db)
            .await?
            .into_iter()
            .filter_map(|r| {
                let lag = r.started_at? - r.scheduled_time;
                Some(lag.num_milliseconds().max(0) as f64 / 1000.0)
            })
            .collect();
        let lag_count = lags.len() as u64;
        let lag_avg_seconds =
            (!lags.is_empty()).then(|| lags.iter().sum::<f64>() / lags.len() as f64);
        let lag_max_seconds = lags.iter().copied().reduce(f64::max);

        Ok(Stats {
            by_status,
            by_handler,
            oldest_pending_age_seconds,
            lag_count,
            lag_avg_seconds,
            lag_max_seconds,
        })
    }
}
