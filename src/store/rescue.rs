//! Rescue protocol: RUNNING rows whose lease expired on the database clock (their worker died,
//! hung or lost the database) go back to PENDING with the attempt counted, or become FAILED
//! when retries are exhausted, by the retry rule of [`super::transition`] (CANCELLED when an
//! operator had asked to cancel them). The guard `status = 'RUNNING' AND lease_expires_at <
//! now - grace` makes a row rescued once however many rescuers race: the second update
//! finds the row no longer RUNNING.
//!
//! The grace is what makes "never on two workers at once" hold: a worker stops an attempt
//! whose lease it could not renew before the lease ends (`lease − margin` after it sent the
//! last successful renewal), and the rescuer waits `grace` past the end, so the first
//! attempt is dead before any other process can claim the row.

use sea_orm::{ConnectionTrait, FromQueryResult, TransactionTrait};

use super::dialect::{Arg, Dialect, Sql};
use super::transition::{cancelled_while_running, retry_or_final};
use super::{execution_rows, query_ids, retry_transient, settle, Store, StoreResult};
use crate::entities::job_execution::{self, Status};

/// The error recorded on a rescued attempt.
pub const LEASE_EXPIRED_MESSAGE: &str =
    "lease expired: the worker running this attempt stopped renewing it (crashed, killed or cut off)";

/// PENDING executions of one handler that are overdue: nobody is claiming them, usually
/// because no running worker has registered the handler.
#[derive(Debug, Clone, PartialEq, sea_orm::FromQueryResult)]
pub struct Overdue {
    pub handler_name: String,
    pub count: i64,
    pub oldest_run_at: chrono::DateTime<chrono::Utc>,
}

impl Store {
    /// Handlers with PENDING executions due more than `late_seconds` ago.
    pub async fn overdue_pending(&self, late_seconds: f64) -> StoreResult<Vec<Overdue>> {
        let mut q = Sql::new(self.dialect);
        q.push(
            "SELECT handler_name, COUNT(*) AS count, MIN(run_at) AS oldest_run_at \
             FROM job_executions WHERE status = ",
        )
        .status(Status::Pending)
        .push(" AND run_at < ")
        .now_plus(-late_seconds)
        .push(" GROUP BY handler_name ORDER BY handler_name");
        Ok(Overdue::find_by_statement(q.build()).all(&self.db).await?)
    }

    /// Rescues up to `limit` leases that expired more than `grace_seconds` ago and returns
    /// the rows as they are afterwards (PENDING for a retry, FAILED, or CANCELLED). Rescued
    /// attempts are eligible again at once.
    pub async fn rescue_expired(
        &self,
        limit: u32,
        grace_seconds: f64,
    ) -> StoreResult<Vec<job_execution::Model>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = retry_transient(|| self.try_rescue(limit, grace_seconds.max(0.0))).await?;
        if rows.iter().any(|r| r.status == Status::Pending.as_str()) {
            self.announce_due(chrono::Utc::now()).await;
        }
        Ok(rows)
    }

    async fn try_rescue(
        &self,
        limit: u32,
        grace_seconds: f64,
    ) -> Result<Vec<job_execution::Model>, sea_orm::DbErr> {
        let d = self.dialect;
        let cancelled = cancelled_while_running("lost its worker (lease expired)");
        let expired = |q: &mut Sql| {
            q.push(" status = ")
                .status(Status::Running)
                .push(" AND lease_expires_at < ")
                .now_plus(-grace_seconds);
        };
        let set = |q: &mut Sql| {
            retry_or_final(
                q,
                &Arg::value(Status::Failed.as_str()),
                &Arg::value(LEASE_EXPIRED_MESSAGE),
                &Arg::value(cancelled.as_str()),
                &Arg::value(0.0),
            );
        };
        match d {
            Dialect::Postgres => {
                // MATERIALIZED: the planner must not re-run the locking subquery.
                let mut q = Sql::new(d);
                q.push("WITH picked AS MATERIALIZED (SELECT id FROM job_executions WHERE");
                expired(&mut q);
                q.push(" ORDER BY lease_expires_at LIMIT ")
                    .bind(limit as i64)
                    .push(d.skip_locked())
                    .push(") UPDATE job_executions");
                set(&mut q);
                q.push(" FROM picked WHERE job_executions.id = picked.id AND");
                expired(&mut q);
                q.push(" RETURNING ").push(job_execution::select_list(true));
                execution_rows(&self.db, q).await
            }
            Dialect::Sqlite => {
                let mut q = Sql::new(d);
                q.push("UPDATE job_executions");
                set(&mut q);
                q.push(" WHERE id IN (SELECT id FROM job_executions WHERE");
                expired(&mut q);
                q.push(" ORDER BY lease_expires_at LIMIT ")
                    .bind(limit as i64)
                    .push(d.skip_locked())
                    .push(") AND");
                expired(&mut q);
                q.push(" RETURNING ")
                    .push(job_execution::select_list(false));
                execution_rows(&self.db, q).await
            }
            Dialect::MySql => {
                let txn = self.db.begin().await?;
                let outcome = async {
                    let mut q = Sql::new(d);
                    q.push("SELECT id FROM job_executions WHERE");
                    expired(&mut q);
                    q.push(" ORDER BY lease_expires_at LIMIT ")
                        .bind(limit as i64)
                        .push(d.skip_locked());
                    let ids: Vec<i64> = query_ids(&txn, q.build()).await?;
                    if ids.is_empty() {
                        return Ok(Vec::new());
                    }
                    // The rows are locked by this transaction, so the guard still holds for all.
                    let mut q = Sql::new(d);
                    q.push("UPDATE job_executions");
                    set(&mut q);
                    q.push(" WHERE id IN ").bind_list(&ids).push(" AND");
                    expired(&mut q);
                    txn.execute(q.build()).await?;
                    let mut q = Sql::new(d);
                    q.push("SELECT ")
                        .push(job_execution::select_list(false))
                        .push(" FROM job_executions WHERE id IN ")
                        .bind_list(&ids);
                    execution_rows(&txn, q).await
                }
                .await;
                settle(txn, outcome).await
            }
        }
    }
}
