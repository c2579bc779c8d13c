//! Fenced transitions of a claimed attempt. Each is one conditional UPDATE whose WHERE names
//! the execution, `status = 'RUNNING'` and the owner token of the claim; a worker whose
//! update touches no row has lost the execution (its lease expired and it was rescued,
//! cancelled or re-claimed) and must not report the attempt.
//!
//! The retry rule lives here once ([`retry_or_final`]) and is shared with the rescuer:
//! `retry_count < max_retry` goes back to PENDING with `retry_count + 1` and a later
//! `run_at`; otherwise the row becomes final with `retry_count = max_retry`.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr, EntityTrait, FromQueryResult, TransactionTrait};

use super::dialect::{Dialect, Sql};
use super::{retry_transient, Store, StoreResult};
use crate::entities::job_execution::{self, Status};

/// Longest error message stored; longer ones keep their tail, where the cause usually is.
pub const MAX_ERROR_CHARS: usize = 8 * 1024;

/// How a failed attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The handler returned an error or panicked.
    Failed,
    /// The handler ran past `timeout_seconds`.
    Timeout,
}

impl Failure {
    pub fn final_status(self) -> Status {
        match self {
            Failure::Failed => Status::Failed,
            Failure::Timeout => Status::Timeout,
        }
    }
}

/// Where a failed attempt left the execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Back to PENDING for another attempt at `run_at`; `retry_count` is the new count.
    Retrying {
        retry_count: i32,
        run_at: DateTime<Utc>,
    },
    /// Retries exhausted: FAILED or TIMEOUT for good.
    Final { status: Status, retry_count: i32 },
}

/// The state of a lease after a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Still ours, now until `expires_at`; `cancel_requested` if an operator asked to stop.
    Held {
        expires_at: DateTime<Utc>,
        cancel_requested: bool,
    },
    /// No longer ours: stop the attempt without reporting it.
    Lost,
}

/// Appends the SET list that applies the retry rule to a RUNNING row: back to PENDING after
/// `backoff_seconds`, or final with `final_status`. Ownership is dropped either way.
///
/// `retry_count` is assigned last on purpose: MySQL evaluates SET assignments left to right
/// against already-updated values, PostgreSQL and SQLite against the old row; with the
/// counter last, every CASE reads the old count on all three.
pub(crate) fn retry_or_final(q: &mut Sql, final_status: Status, error: &str, backoff_seconds: f64) {
    let retry = "CASE WHEN retry_count < max_retry THEN ";
    q.push(" SET status = ")
        .push(retry)
        .bind(Status::Pending.as_str())
        .push(" ELSE ")
        .bind(final_status.as_str())
        .push(" END, run_at = ")
        .push(retry)
        .now_plus(backoff_seconds.max(0.0))
        .push(" ELSE run_at END, finished_at = ")
        .push(retry)
        .push("NULL ELSE ")
        .now()
        .push(" END, error_message = ")
        .bind(truncate_error(error))
        .push(", owner_token = NULL, lease_expires_at = NULL, cancel_requested = ")
        .bind(false)
        .push(", updated_at = ")
        .now()
        .push(", retry_count = ")
        .push(retry)
        .push("retry_count + 1 ELSE retry_count END");
}

/// Keeps the last [`MAX_ERROR_CHARS`] characters of an error message.
pub fn truncate_error(error: &str) -> String {
    let count = error.chars().count();
    if count <= MAX_ERROR_CHARS {
        error.to_string()
    } else {
        let tail: String = error.chars().skip(count - MAX_ERROR_CHARS).collect();
        format!("…{tail}")
    }
}

/// `WHERE id = ? AND status = 'RUNNING' AND owner_token = ?`
fn fenced(q: &mut Sql, id: i64, token: &str) {
    q.push(" WHERE id = ")
        .bind(id)
        .push(" AND status = ")
        .bind(Status::Running.as_str())
        .push(" AND owner_token = ")
        .bind(token);
}

#[derive(FromQueryResult)]
struct AfterFail {
    status: String,
    retry_count: i32,
    run_at: DateTime<Utc>,
}

#[derive(FromQueryResult)]
struct AfterRenew {
    lease_expires_at: Option<DateTime<Utc>>,
    cancel_requested: bool,
}

impl Store {
    /// RUNNING -> SUCCESS with the handler's result. `false`: the attempt was no longer ours.
    pub async fn succeed(
        &self,
        id: i64,
        token: &str,
        result: Option<serde_json::Value>,
    ) -> StoreResult<bool> {
        self.finish(id, token, Status::Success, None, result).await
    }

    /// RUNNING -> CANCELLED after the attempt was stopped on an operator's request.
    pub async fn cancelled(&self, id: i64, token: &str, message: &str) -> StoreResult<bool> {
        self.finish(id, token, Status::Cancelled, Some(message), None)
            .await
    }

    async fn finish(
        &self,
        id: i64,
        token: &str,
        status: Status,
        error: Option<&str>,
        result: Option<serde_json::Value>,
    ) -> StoreResult<bool> {
        let run = || async {
            let mut q = Sql::new(self.dialect);
            q.push("UPDATE job_executions SET status = ")
                .bind(status.as_str())
                .push(", result = ")
                .bind(result.clone())
                .push(", error_message = ")
                .bind(error.map(truncate_error))
                .push(", finished_at = ")
                .now()
                .push(", owner_token = NULL, lease_expires_at = NULL, updated_at = ")
                .now();
            fenced(&mut q, id, token);
            Ok::<_, DbErr>(self.db.execute(q.build()).await?.rows_affected() == 1)
        };
        Ok(retry_transient(run).await?)
    }

    /// A failed or timed-out attempt: back to PENDING after `backoff_seconds` if retries
    /// remain, else final. `None`: the attempt was no longer ours and nothing changed.
    pub async fn fail(
        &self,
        id: i64,
        token: &str,
        failure: Failure,
        error: &str,
        backoff_seconds: f64,
    ) -> StoreResult<Option<FailOutcome>> {
        let run = || async {
            let mut q = Sql::new(self.dialect);
            q.push("UPDATE job_executions");
            retry_or_final(&mut q, failure.final_status(), error, backoff_seconds);
            fenced(&mut q, id, token);
            let row = match self.dialect {
                Dialect::Postgres | Dialect::Sqlite => {
                    q.push(" RETURNING status, retry_count, run_at");
                    AfterFail::find_by_statement(q.build())
                        .one(&self.db)
                        .await?
                }
                Dialect::MySql => {
                    // The update's row lock holds until commit, so the read-back sees our write.
                    let txn = self.db.begin().await?;
                    if txn.execute(q.build()).await?.rows_affected() != 1 {
                        txn.commit().await?;
                        return Ok(None);
                    }
                    let mut read = Sql::new(self.dialect);
                    read.push("SELECT status, retry_count, run_at FROM job_executions WHERE id = ")
                        .bind(id);
                    let row = AfterFail::find_by_statement(read.build()).one(&txn).await?;
                    txn.commit().await?;
                    row
                }
            };
            Ok::<_, DbErr>(row.map(|r| {
                if r.status == Status::Pending.as_str() {
                    FailOutcome::Retrying {
                        retry_count: r.retry_count,
                        run_at: r.run_at,
                    }
                } else {
                    FailOutcome::Final {
                        status: failure.final_status(),
                        retry_count: r.retry_count,
                    }
                }
            }))
        };
        Ok(retry_transient(run).await?)
    }

    /// RUNNING -> PENDING, eligible at once, without counting the attempt: the worker is
    /// shutting down and another worker should take the execution.
    pub async fn release(&self, id: i64, token: &str) -> StoreResult<bool> {
        let run = || async {
            let mut q = Sql::new(self.dialect);
            q.push("UPDATE job_executions SET status = ")
                .bind(Status::Pending.as_str())
                .push(", run_at = ")
                .now()
                .push(", started_at = NULL, owner_token = NULL, lease_expires_at = NULL, updated_at = ")
                .now();
            fenced(&mut q, id, token);
            Ok::<_, DbErr>(self.db.execute(q.build()).await?.rows_affected() == 1)
        };
        Ok(retry_transient(run).await?)
    }

    /// Extends the lease of a running attempt to `lease_seconds` from now.
    pub async fn renew_lease(
        &self,
        id: i64,
        token: &str,
        lease_seconds: f64,
    ) -> StoreResult<Lease> {
        let run = || async {
            let mut q = Sql::new(self.dialect);
            q.push("UPDATE job_executions SET lease_expires_at = ")
                .now_plus(lease_seconds)
                .push(", updated_at = ")
                .now();
            fenced(&mut q, id, token);
            let row = match self.dialect {
                Dialect::Postgres | Dialect::Sqlite => {
                    q.push(" RETURNING lease_expires_at, cancel_requested");
                    AfterRenew::find_by_statement(q.build())
                        .one(&self.db)
                        .await?
                }
                Dialect::MySql => {
                    let txn = self.db.begin().await?;
                    if txn.execute(q.build()).await?.rows_affected() != 1 {
                        txn.commit().await?;
                        return Ok(Lease::Lost);
                    }
                    let mut read = Sql::new(self.dialect);
                    read.push(
                        "SELECT lease_expires_at, cancel_requested FROM job_executions WHERE id = ",
                    )
                    .bind(id);
                    let row = AfterRenew::find_by_statement(read.build())
                        .one(&txn)
                        .await?;
                    txn.commit().await?;
                    row
                }
            };
            Ok::<_, DbErr>(match row {
                Some(AfterRenew {
                    lease_expires_at: Some(expires_at),
                    cancel_requested,
                }) => Lease::Held {
                    expires_at,
                    cancel_requested,
                },
                _ => Lease::Lost,
            })
        };
        Ok(retry_transient(run).await?)
    }

    /// Reads one execution.
    pub async fn execution(&self, id: i64) -> StoreResult<Option<job_execution::Model>> {
        Ok(job_execution::Entity::find_by_id(id).one(&self.db).await?)
    }
}
