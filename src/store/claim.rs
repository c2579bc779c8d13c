//! Claim protocol: PENDING rows that are due (`run_at <= now` on the database clock) and whose
//! handler the worker has become RUNNING through an UPDATE guarded by `status = 'PENDING'`.
//! The rows the update touched are this worker's; they carry the claim's owner token (the
//! fencing token every later transition names) and a lease expiry on the database clock.
//!
//! - PostgreSQL: a `MATERIALIZED` CTE picks the ids `FOR UPDATE SKIP LOCKED`, then
//!   `UPDATE ... FROM picked ... RETURNING *`. (With `WHERE id IN (SELECT ... LIMIT n ...)`
//!   the planner may run the subquery more than once and update more than n rows.)
//! - SQLite: `UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING *` (writers are serialised,
//!   so there are no row locks to skip).
//! - MySQL/MariaDB: no `UPDATE ... RETURNING` and no `LIMIT` in `IN` subqueries, so one
//!   transaction selects ids `FOR UPDATE SKIP LOCKED` and updates them with the same guard;
//!   the rows are read back by token after the commit.
//!
//! The caller chooses the token ([`new_token`]). A claim whose outcome is unknown (the
//! connection failed around the commit, the reply was lost) is resolved by that token with
//! [`Store::adopt_claim`] or [`Store::release_claim`], never left to lease expiry, which
//! would charge an attempt that never ran.

use sea_orm::{ConnectionTrait, DbErr, FromQueryResult, TransactionTrait};

use super::dialect::{Dialect, Sql};
use super::{execution_rows, query_ids, retry_transient, settle, Store, StoreError, StoreResult};
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
    /// The fencing token the claimed rows get; one fresh [`new_token`] per claim.
    pub token: &'a str,
}

/// A fresh owner token for one claim.
pub fn new_token() -> String {
    uuid::Uuid::new_v4().to_string()
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
            .status(Status::Pending)
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
        if req.token.is_empty() || req.token.len() > 64 {
            return Err(StoreError::Invalid(
                "owner token must be 1 to 64 characters".into(),
            ));
        }
        Ok(retry_transient(|| self.try_claim(req, req.token)).await?)
    }

    /// Resolves a claim whose outcome is unknown: the RUNNING rows that carry `token` are
    /// the claim's (none if it did not commit); their lease is renewed to `lease_seconds`
    /// from now and they are returned for the caller to run. Safe to repeat.
    pub async fn adopt_claim(&self, token: &str, lease_seconds: f64) -> StoreResult<Vec<Claimed>> {
        let run = || async {
            let mut q = Sql::new(self.dialect);
            q.push("UPDATE job_executions SET lease_expires_at = ")
                .now_plus(lease_seconds)
                .push(", updated_at = ")
                .now()
                .push(" WHERE status = ")
                .status(Status::Running)
                .push(" AND owner_token = ")
                .bind(token);
            match self.dialect {
                Dialect::Postgres | Dialect::Sqlite => {
                    q.push(" RETURNING ")
                        .push(job_execution::select_list(false));
                    execution_rows(&self.db, q).await
                }
                Dialect::MySql => {
                    self.db.execute(q.build()).await?;
                    self.owned_by(token).await
                }
            }
        };
        let mut rows = retry_transient(run).await?;
        rows.sort_by_key(|r| (r.run_at, r.id));
        Ok(rows)
    }

    /// The RUNNING rows that carry `token`, oldest `run_at` first. The scan is bounded by
    /// the RUNNING rows (the status index), not the table.
    async fn owned_by(&self, token: &str) -> Result<Vec<Claimed>, sea_orm::DbErr> {
        let mut q = Sql::new(self.dialect);
        q.push("SELECT ")
            .push(job_execution::select_list(false))
            .push(" FROM job_executions WHERE status = ")
            .status(Status::Running)
            .push(" AND owner_token = ")
            .bind(token)
            .push(" ORDER BY run_at, id");
        execution_rows(&self.db, q).await
    }

    async fn try_claim(
        &self,
        req: &ClaimRequest<'_>,
        token: &str,
    ) -> Result<Vec<Claimed>, sea_orm::DbErr> {
        let d = self.dialect;
        let pick = |q: &mut Sql| {
            q.push("SELECT id FROM job_executions WHERE status = ")
                .status(Status::Pending)
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
                .status(Status::Running)
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

        let mut q = Sql::new(d);
        match d {
            Dialect::Postgres => {
                q.push("WITH picked AS MATERIALIZED (");
                pick(&mut q);
                q.push(") ");
                set_running(&mut q);
                q.push(
                    " FROM picked WHERE job_executions.id = picked.id AND job_executions.status = ",
                )
                .status(Status::Pending)
                .push(" RETURNING ")
                .push(job_execution::select_list(true));
            }
            Dialect::Sqlite => {
                set_running(&mut q);
                q.push(" WHERE id IN (");
                pick(&mut q);
                // `+status`: reach the picked rows by id, not by scanning every PENDING row.
                q.push(") AND +status = ")
                    .status(Status::Pending)
                    .push(" RETURNING ")
                    .push(job_execution::select_list(false));
            }
            Dialect::MySql => {
                let txn = self.db.begin().await?;
                let outcome = async {
                    let mut select = Sql::new(d);
                    pick(&mut select);
                    let ids: Vec<i64> = query_ids(&txn, select.build()).await?;
                    if !ids.is_empty() {
                        let mut update = Sql::new(d);
                        set_running(&mut update);
                        update
                            .push(" WHERE id IN ")
                            .bind_list(&ids)
                            .push(" AND status = ")
                            .status(Status::Pending);
                        txn.execute(update.build()).await?;
                    }
                    Ok::<_, DbErr>(ids)
                }
                .await;
                let ids = settle(txn, outcome).await?;
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                // Ours from the commit on; nothing but this token's holder and the rescuer
                // (after the lease) can change them.
                q.push("SELECT ")
                    .push(job_execution::select_list(false))
                    .push(" FROM job_executions WHERE id IN ")
                    .bind_list(&ids)
                    .push(" AND owner_token = ")
                    .bind(token);
            }
        }
        let mut rows = execution_rows(&self.db, q).await?;
        rows.sort_by_key(|r| (r.run_at, r.id));
        Ok(rows)
    }
}
