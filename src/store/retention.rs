//! Retention protocol: deletes finished executions of one final status that finished before
//! a cutoff on the database clock, at most `limit` per statement, and never
//!
//! - a PENDING or RUNNING row (the status is named, and must be final),
//! - the newest execution of a cron by `scheduled_time`, nor its newest finished one (a row
//!   is eligible only while a newer finished one of its cron exists; the console's "last
//!   run" and the overlap and misfire logic read them: a weekly cron's next run, created
//!   ahead and PENDING, must not cost it last week's result). Ad-hoc runs and executions of
//!   deleted crons (`job_id` NULL) have no such exception. Since no sweep deletes the newest
//!   finished row and a finished row stays finished, "has a newer finished one" stays true
//!   for a row once seen, however many sweeps run at once.
//!
//! Nothing references `job_executions` by foreign key (`transaction_log.execution_id` is a
//! plain column). Recovery needs no execution row of a finished attempt: a decided
//! transaction is finished from its log row alone, and an undecided branch of a finished or
//! missing execution is rolled back alike (`txn::log::attempt_running` is false for both),
//! so deleting a row of a final status days after it finished changes nothing there.
//!
//! Many processes may sweep at once: PostgreSQL skips rows another sweep has locked, MySQL
//! re-checks the status and cutoff in the `DELETE` by id (a row another sweep took is
//! simply not counted), SQLite serialises writers. Each row is deleted, and counted, once.
//! The candidates are read oldest first through `ix_job_executions_finished` (migration 8).

use sea_orm::{ConnectionTrait, FromQueryResult};

use super::dialect::{Dialect, Sql};
use super::{query_ids, retry_transient, Store, StoreError, StoreResult};
use crate::entities::job_execution::Status;

impl Store {
    /// Deletes up to `limit` executions of `status` that finished more than
    /// `older_than_seconds` ago and are not the newest of their cron; returns how many.
    pub async fn delete_expired(
        &self,
        status: Status,
        older_than_seconds: f64,
        limit: u32,
    ) -> StoreResult<u64> {
        check_final(status)?;
        if limit == 0 {
            return Ok(0);
        }
        let age = older_than_seconds.max(0.0);
        Ok(retry_transient(|| self.try_delete_expired(status, age, limit)).await?)
    }

    /// How many executions [`Store::delete_expired`] would delete in batches until none is
    /// left (`jobu prune --dry-run`).
    pub async fn count_expired(&self, status: Status, older_than_seconds: f64) -> StoreResult<u64> {
        check_final(status)?;
        #[derive(FromQueryResult)]
        struct Count {
            n: i64,
        }
        let mut q = Sql::new(self.dialect);
        q.push("SELECT COUNT(*) AS n FROM job_executions e WHERE");
        eligible(&mut q, status, older_than_seconds.max(0.0));
        let row = Count::find_by_statement(q.build()).one(&self.db).await?;
        Ok(row.map_or(0, |r| r.n.max(0) as u64))
    }

    async fn try_delete_expired(
        &self,
        status: Status,
        age: f64,
        limit: u32,
    ) -> Result<u64, sea_orm::DbErr> {
        let d = self.dialect;
        let candidates = |q: &mut Sql| {
            q.push("SELECT e.id FROM job_executions e WHERE");
            eligible(q, status, age);
            q.push(" ORDER BY e.finished_at LIMIT ").bind(limit as i64);
        };
        match d {
            Dialect::Postgres => {
                // MATERIALIZED: the planner must not re-run the locking subquery.
                let mut q = Sql::new(d);
                q.push("WITH picked AS MATERIALIZED (");
                candidates(&mut q);
                q.push(d.skip_locked())
                    .push(") DELETE FROM job_executions USING picked WHERE job_executions.id = picked.id AND job_executions.status = ")
                    .status(status);
                Ok(self.db.execute(q.build()).await?.rows_affected())
            }
            Dialect::Sqlite => {
                let mut q = Sql::new(d);
                q.push("DELETE FROM job_executions WHERE id IN (");
                candidates(&mut q);
                q.push(")");
                Ok(self.db.execute(q.build()).await?.rows_affected())
            }
            Dialect::MySql => {
                // MySQL cannot read the table a DELETE deletes from in its subquery: the ids
                // first, without locks, then the delete by primary key with the status and
                // cutoff checked again on the current row.
                let mut q = Sql::new(d);
                candidates(&mut q);
                let ids: Vec<i64> = query_ids(&self.db, q.build()).await?;
                if ids.is_empty() {
                    return Ok(0);
                }
                let mut q = Sql::new(d);
                q.push("DELETE FROM job_executions WHERE id IN ")
                    .bind_list(&ids)
                    .push(" AND status = ")
                    .status(status)
                    .push(" AND finished_at < ")
                    .now_plus(-age);
                Ok(self.db.execute(q.build()).await?.rows_affected())
            }
        }
    }
}

fn check_final(status: Status) -> StoreResult<()> {
    if status.is_final() {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "retention deletes finished executions only, not {status}"
        )))
    }
}

/// ` e.status = '<status>' AND e.finished_at < <cutoff> AND (a newer finished one of its cron exists)`
/// over `job_executions e`. The status is a literal so planners can match the partial index.
fn eligible(q: &mut Sql, status: Status, age: f64) {
    q.push(" e.status = ")
        .status(status)
        .push(" AND e.finished_at < ")
        .now_plus(-age)
        .push(
            " AND (e.job_id IS NULL OR EXISTS (SELECT 1 FROM job_executions n \
             WHERE n.job_id = e.job_id AND n.scheduled_time > e.scheduled_time \
             AND n.finished_at IS NOT NULL AND n.status NOT IN ",
        )
        // A fire time that did not run is no newer result: it does not cost the cron its
        // last run.
        .statuses(&Status::NOT_RUN)
        .push("))");
}
