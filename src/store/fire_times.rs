//! The fire-time ledger: every fire time of an enabled cron ends with exactly one row under
//! `UNIQUE(job_id, scheduled_time)`, whatever was decided for it: an execution (run), or a
//! row whose status says why it did not run: SKIPPED (overlap policy, [`super::overlap`]),
//! MISSED (dropped by the misfire policy after every dispatcher was down, or coalesced into
//! one run by `latest`), EXCLUDED (an excluded date).
//!
//! A MISSED row stands for every dropped fire time of one outage: `scheduled_time` is the
//! first, `fire_time_until` the last, `fire_count` how many (a lower bound when the outage
//! was too long to count in bounded work; the message says so). So a three-day outage of
//! an every-second cron writes one row, not 259,200. The dispatcher writes ledger rows in
//! the transaction that moves the cron's marker past them, so none is written twice.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr};

use super::create::{push_rearm_set, push_rearmable};
use super::dialect::{Dialect, Sql};
use super::overlap::insert_as;
use super::{execution_rows, Store, StoreResult};
use crate::entities::job_execution::{self, CancelReason, ParamSource, Status};
use crate::store::create::NewExecution;

/// Rows one ledger page returns at most.
pub const MAX_FIRE_TIMES: u64 = 1000;

/// A decision for fire times that did not run, as the dispatcher writes it.
#[derive(Debug, Clone)]
pub struct LedgerRow {
    /// The cron's row values (handler, params...) at its first fire time.
    pub first: NewExecution,
    /// SKIPPED, MISSED or EXCLUDED.
    pub status: Status,
    /// The last fire time the row stands for, when it stands for more than one.
    pub until: Option<DateTime<Utc>>,
    pub count: i32,
    pub message: String,
}

/// Writes one ledger row in `db`'s transaction: inserted if its first fire time has no row,
/// or written over a row that was created ahead and cancelled only because the cron was
/// switched off. False if the fire time had a decision already.
pub(crate) async fn record<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    row: &LedgerRow,
) -> Result<bool, DbErr> {
    let Some(job_id) = row.first.job_id else {
        return Err(DbErr::Custom("a ledger row needs a cron (job_id)".into()));
    };
    let id = match insert_as(
        db,
        dialect,
        &row.first,
        row.status,
        false,
        Some(&row.message),
    )
    .await?
    {
        Some(id) => Some(id),
        None => {
            let mut q = Sql::new(dialect);
            push_rearm_set(&mut q, &row.first, row.status, false, Some(&row.message));
            q.push(" WHERE job_id = ")
                .bind(job_id)
                .push(" AND scheduled_time = ")
                .bind(row.first.scheduled_time);
            push_rearmable(&mut q);
            if db.execute(q.build()).await?.rows_affected() == 0 {
                return Ok(false);
            }
            None
        }
    };
    if row.until.is_some() || row.count != 1 {
        let mut q = Sql::new(dialect);
        q.push("UPDATE job_executions SET fire_time_until = ")
            .bind(row.until)
            .push(", fire_count = ")
            .bind(row.count);
        match id {
            Some(id) => q.push(" WHERE id = ").bind(id),
            None => q
                .push(" WHERE job_id = ")
                .bind(job_id)
                .push(" AND scheduled_time = ")
                .bind(row.first.scheduled_time),
        };
        db.execute(q.build()).await?;
    }
    Ok(true)
}

impl Store {
    /// The cron's recorded decisions whose fire times meet `[from, to]` (a MISSED row that
    /// covers part of the window is included), oldest first, at most `limit`
    /// ([`MAX_FIRE_TIMES`]). A backfill's executions are fire times (`backfill`, see
    /// [`super::backfill`]); operators' runs (`manual`, `api`) are not, and rows
    /// cancelled only because the cron was off are not decisions: both are left out.
    pub async fn fire_times(
        &self,
        job_id: i64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u64,
    ) -> StoreResult<Vec<job_execution::Model>> {
        let mut q = Sql::new(self.dialect);
        q.push("SELECT ")
            .push(job_execution::select_list(false))
            .push(" FROM job_executions WHERE job_id = ")
            .bind(job_id)
            .push(" AND param_source IN ")
            .bind_list(&[ParamSource::Cron.as_str(), ParamSource::Backfill.as_str()])
            .push(" AND scheduled_time <= ")
            .bind(to)
            .push(" AND (scheduled_time >= ")
            .bind(from)
            .push(" OR fire_time_until >= ")
            .bind(from)
            .push(") AND NOT (status = ")
            .status(Status::Cancelled)
            .push(" AND cancel_reason IS NOT NULL AND cancel_reason = ")
            .bind(CancelReason::Unscheduled.as_str())
            .push(") ORDER BY scheduled_time LIMIT ")
            .push(&limit.clamp(1, MAX_FIRE_TIMES).to_string());
        Ok(execution_rows(&self.db, q).await?)
    }
}
