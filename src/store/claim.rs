//! Claim protocol: PENDING rows that are due (`run_at <= now` on the database clock) and whose
//! handler the worker has become RUNNING through an UPDATE guarded by `status = 'PENDING'`.
//! The rows the update touched are this worker's; they carry a fresh owner token (the
//! fencing token every later transition names) and a lease expiry on the database clock.
//!
//! - PostgreSQL: `UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING *`.
//! - SQLite: the same without row locks (writers are serialised) and `RETURNING *`.
//! - MySQL/MariaDB: no `UPDATE ... RETURNING` and no `LIMIT` in `IN` subqueries, so one
//!   transaction selects ids `FOR UPDATE SKIP LOCKED`, updates them with the same guard and
//!   reads them back.

use sea_orm::{ConnectionTrait, EntityTrait, FromQueryResult, TransactionTrait};

use super::dialect::{Dialect, Sql};
use super::{retry_transient, Store, StoreError, StoreResult};
use crate::entities::job_execution::{self, Status};

/// One batch claim request.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    /// Recorded on the row for operators (`job_executions.worker_id`).
    pub worker_id: &'a str,
    /// Only executions of these handlers are taken; others stay PENDING for other workers.
    pub handlers: &'a [String],
    /// At most this many rows.
    pub limit: u32,
    /// The lease lasts this long from now unless renewed.
    pub lease_seconds: f64,
}

/// A claimed attempt: the row as it is after the claim. `owner_token` is set.
pub type Claimed = job_execution::Model;

#[derive(sea_orm::FromQueryResult)]
struct NextDue {
    next_run_at: Option<chrono::DateTime<chrono::Utc>>,
    now: chrono::DateTime<chrono::Utc>,
}

impl Store {
    /// How long until the earliest PENDING execution of these handlers is due, by the
    /// database clock: zero when one is due now, `None` when there is none. Workers sleep
    /// this long (bounded by their poll interval) instead of polling blindly.
    pub async fn next_due(&self, handlers: &[String]) -> StoreResult<Option<std::time::Duration>> {
        if handlers.is_empty() {
            return Ok(None);
        }
        let mut q = Sql::new(self.dialect);
        q.push("SELECT MIN(run_at) AS next_run_at, ")
            .now()
            .push(" AS now FROM job_executions WHERE status = ")
            .bind(Status::Pending.as_str())
            .push(" AND handler_name IN ")
            .bind_list(handlers);
        let row = NextDue::find_by_statement(q.build()).one(&self.db).await?;
        Ok(row.and_then(|r| {
            let next = r.next_run_at?;
            Some((next - r.now).to_std().unwrap_or_default())
        }))
    }

    /// Takes up to `limit` due executions, oldest `run_at` first.
    pub async fn claim(&self, req: &ClaimRequest<'_>) -> StoreResult<Vec<Claimed>> {
        if req.handlers.is_empty() || req.limit == 0 {
            return Ok(Vec::new());
        }
        if req.worker_id.is_empty() || req.worker_id.len() > 128 {
            return Err(StoreError::Invalid(
                "worker id must be 1 to 128 characters".into(),
            ));
        }
        let token = uuid::Uuid::new_v4().to_string();
        Ok(retry_transient(|| self.try_claim(req, &token)).await?)
    }

    async fn try_claim(
        &self,
        req: &ClaimRequest<'_>,
        token: &str,
    ) -> Result<Vec<Claimed>, sea_orm::DbErr> {
        let d = self.dialect;
        let pick = |q: &mut Sql| {
            q.push("SELECT id FROM job_executions WHERE status = ")
                .bind(Status::Pending.as_str())
                .push(" AND run_at <= ")
                .now()
                .push(" AND handler_name IN ")
                .bind_list(req.handlers)
                .push(" ORDER BY run_at, id LIMIT ")
                .bind(req.limit as i64)
                .push(d.skip_locked());
        };
        let set_running = |q: &mut Sql| {
            q.push("UPDATE job_executions SET status = ")
                .bind(Status::Running.as_str())
                .push(", owner_token = ")
                .bind(token)
                .push(", worker_id = ")
                .bind(req.worker_id)
                .push(", lease_expires_at = ")
                .now_plus(req.lease_seconds)
                .push(", started_at = ")
                .now()
                .push(", finished_at = NULL, cancel_requested = ")
                .bind(false)
                .push(", updated_at = ")
                .now();
        };

        match d {
            Dialect::Postgres | Dialect::Sqlite => {
                let mut q = Sql::new(d);
                set_running(&mut q);
                q.push(" WHERE id IN (");
                pick(&mut q);
                q.push(") AND status = ")
                    .bind(Status::Pending.as_str())
                    .push(" RETURNING *");
                let mut rows = job_execution::Entity::find()
                    .from_raw_sql(q.build())
                    .all(&self.db)
                    .await?;
                rows.sort_by_key(|r| (r.run_at, r.id));
                Ok(rows)
            }
            Dialect::MySql => {
                let txn = self.db.begin().await?;
                let mut q = Sql::new(d);
                pick(&mut q);
                let ids: Vec<i64> = txn
                    .query_all(q.build())
                    .await?
                    .iter()
                    .map(|r| r.try_get_by_index::<i64>(0))
                    .collect::<Result<_, _>>()?;
                if ids.is_empty() {
                    txn.commit().await?;
                    return Ok(Vec::new());
                }
                let mut q = Sql::new(d);
                set_running(&mut q);
                q.push(" WHERE id IN ")
                    .bind_list(&ids)
                    .push(" AND status = ")
                    .bind(Status::Pending.as_str());
                txn.execute(q.build()).await?;
                let mut q = Sql::new(d);
                q.push("SELECT * FROM job_executions WHERE id IN ")
                    .bind_list(&ids)
                    .push(" AND owner_token = ")
                    .bind(token)
                    .push(" ORDER BY run_at, id");
                let rows = job_execution::Entity::find()
                    .from_raw_sql(q.build())
                    .all(&txn)
                    .await?;
                txn.commit().await?;
                Ok(rows)
            }
        }
    }
}
