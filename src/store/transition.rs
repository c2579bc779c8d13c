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
use crate::entities::job_execution::{self, CancelReason, Status};

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
    /// An operator had asked to cancel it while it ran: CANCELLED, not retried.
    Cancelled { retry_count: i32 },
}

/// Where a released attempt left the execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// PENDING again, eligible at once, the attempt not counted.
    Pending,
    /// An operator had asked to cancel it: CANCELLED instead.
    Cancelled,
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

/// At most this many attempts per lease-renewal statement (placeholders stay well under
/// every dialect's limit).
pub const RENEW_CHUNK: usize = 500;

/// The error message of an execution an operator cancelled while it ran, whose attempt
/// then ended in some other way (`how`: failed, timed out, lost its worker, released).
pub fn cancelled_while_running(how: &str) -> String {
    truncate_error(&format!(
        "cancelled by an operator while running; the attempt then {how}"
    ))
}

/// `NOT cancel_requested AND retry_count < max_retry`: the attempt goes back to PENDING.
const RETRIES_LEFT: &str = "CASE WHEN NOT cancel_requested AND retry_count < max_retry THEN ";

/// Appends the SET list that ends a RUNNING row's attempt by the retry rule: back to
/// PENDING after `backoff_seconds`, or final with `final_status`; a row an operator asked
/// to cancel becomes CANCELLED instead, whatever its retries, in this same statement.
/// Ownership is dropped either way.
///
/// `retry_count` is assigned last and `cancel_requested` never: MySQL evaluates SET
/// assignments left to right against already-updated values, PostgreSQL and SQLite against
/// the old row; this way every CASE reads the old values on all three.
pub(crate) fn retry_or_final(
    q: &mut Sql,
    final_status: Status,
    error: &str,
    cancelled_error: &str,
    backoff_seconds: f64,
) {
    q.push(" SET status = CASE WHEN cancel_requested THEN ")
        .bind(Status::Cancelled.as_str())
        .push(" WHEN retry_count < max_retry THEN ")
        .bind(Status::Pending.as_str())
        .push(" ELSE ")
        .bind(final_status.as_str())
        .push(" END, run_at = ")
        .push(RETRIES_LEFT)
        .now_plus(backoff_seconds.max(0.0))
        .push(" ELSE run_at END, finished_at = ")
        .push(RETRIES_LEFT)
        .push("NULL ELSE ")
        .now()
        .push(" END, error_message = CASE WHEN cancel_requested THEN ")
        .bind(truncate_error(cancelled_error))
        .push(" ELSE ")
        .bind(truncate_error(error))
        .push(" END, cancel_reason = CASE WHEN cancel_requested THEN ")
        .bind(CancelReason::Operator.as_str())
        .push(" ELSE cancel_reason END, owner_token = NULL, lease_expires_at = NULL, updated_at = ")
        .now()
        .push(", retry_count = ")
        .push(RETRIES_LEFT)
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
struct AfterRelease {
    status: String,
}

#[derive(FromQueryResult)]
struct Renewed {
    id: i64,
    lease_expires_at: Option<DateTime<Utc>>,
    cancel_requested: bool,
}

#[derive(FromQueryResult)]
struct IdToken {
    id: i64,
    owner_token: Option<String>,
}

impl Store {
    /// RUNNING -> SUCCESS with the handler's result. `false`: the attempt was no longer ours.
    ///
    /// A cancel request that arrives after the handler returned does not undo its work: the
    /// attempt ended before the cancel reached it, so it is recorded as it ended.
    pub async fn succeed(
        &self,
        id: i64,
        token: &str,
        result: Option<serde_json::Value>,
    ) -> StoreResult<bool> {
        self.finish(id, token, Status::Success, None, None, result)
            .await
    }

    /// RUNNING -> CANCELLED after the attempt was stopped on an operator's request.
    pub async fn cancelled(&self, id: i64, token: &str, message: &str) -> StoreResult<bool> {
        self.finish(
            id,
            token,
            Status::Cancelled,
            Some(message),
            Some(CancelReason::Operator),
            None,
        )
        .await
    }

    async fn finish(
        &self,
        id: i64,
        token: &str,
        status: Status,
        error: Option<&str>,
        reason: Option<CancelReason>,
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
                .push(", cancel_reason = ")
                .bind(reason.map(CancelReason::as_str))
                .push(", finished_at = ")
                .now()
                .push(", owner_token = NULL, lease_expires_at = NULL, updated_at = ")
                .now();
            fenced(&mut q, id, token);
            Ok::<_, DbErr>(self.db.execute(q.build()).await?.rows_affected() == 1)
        };
        Ok(retry_transient(run).await?)
    }

    /// Runs a fenced UPDATE of execution `id` and reads `columns` of the row it left, in
    /// the same statement (`RETURNING`) or, on MySQL, in the same transaction. `None`: the
    /// update touched no row (the attempt was no longer ours).
    async fn update_returning<T: FromQueryResult>(
        &self,
        mut q: Sql,
        id: i64,
        columns: &str,
    ) -> Result<Option<T>, DbErr> {
        match self.dialect {
            Dialect::Postgres | Dialect::Sqlite => {
                q.push(" RETURNING ").push(columns);
                T::find_by_statement(q.build()).one(&self.db).await
            }
            Dialect::MySql => {
                // The update's row lock holds until commit, so the read-back sees our write.
                let txn = self.db.begin().await?;
                if txn.execute(q.build()).await?.rows_affected() != 1 {
                    txn.commit().await?;
                    return Ok(None);
                }
                let mut read = Sql::new(self.dialect);
                read.push("SELECT ")
                    .push(columns)
                    .push(" FROM job_executions WHERE id = ")
                    .bind(id);
                let row = T::find_by_statement(read.build()).one(&txn).await?;
                txn.commit().await?;
                Ok(row)
            }
        }
    }

    /// A failed or timed-out attempt: back to PENDING after `backoff_seconds` if retries
    /// remain, else final; CANCELLED if an operator asked to cancel it meanwhile. `None`:
    /// the attempt was no longer ours and nothing changed.
    pub async fn fail(
        &self,
        id: i64,
        token: &str,
        failure: Failure,
        error: &str,
        backoff_seconds: f64,
    ) -> StoreResult<Option<FailOutcome>> {
        let how = match failure {
            Failure::Failed => format!("failed: {error}"),
            Failure::Timeout => format!("timed out: {error}"),
        };
        let cancelled_error = cancelled_while_running(&how);
        let run = || async {
            let mut q = Sql::new(self.dialect);
            q.push("UPDATE job_executions");
            retry_or_final(
                &mut q,
                failure.final_status(),
                error,
                &cancelled_error,
                backoff_seconds,
            );
            fenced(&mut q, id, token);
            let row: Option<AfterFail> = self
                .update_returning(q, id, "status, retry_count, run_at")
                .await?;
            Ok::<_, DbErr>(row.map(|r| {
                if r.status == Status::Pending.as_str() {
                    FailOutcome::Retrying {
                        retry_count: r.retry_count,
                        run_at: r.run_at,
                    }
                } else if r.status == Status::Cancelled.as_str() {
                    FailOutcome::Cancelled {
                        retry_count: r.retry_count,
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
    /// shutting down (or its pool crashed) and another worker should take the execution.
    /// A row an operator asked to cancel becomes CANCELLED instead. `None`: no longer ours.
    pub async fn release(&self, id: i64, token: &str) -> StoreResult<Option<Released>> {
        let run = || async {
            let mut q = Sql::new(self.dialect);
            q.push("UPDATE job_executions");
            release_set(&mut q);
            fenced(&mut q, id, token);
            let row: Option<AfterRelease> = self.update_returning(q, id, "status").await?;
            Ok::<_, DbErr>(row.map(|r| {
                if r.status == Status::Cancelled.as_str() {
                    Released::Cancelled
                } else {
                    Released::Pending
                }
            }))
        };
        Ok(retry_transient(run).await?)
    }

    /// Releases every RUNNING row of one claim (by its token), as [`Store::release`] does
    /// one: for a claim whose outcome was unknown when the worker stopped claiming. Returns
    /// how many rows it released; safe to repeat.
    pub async fn release_claim(&self, token: &str) -> StoreResult<u64> {
        let run = || async {
            let mut q = Sql::new(self.dialect);
            q.push("UPDATE job_executions");
            release_set(&mut q);
            q.push(" WHERE status = ")
                .bind(Status::Running.as_str())
                .push(" AND owner_token = ")
                .bind(token);
            Ok::<_, DbErr>(self.db.execute(q.build()).await?.rows_affected())
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
        let leases = self
            .renew_leases(&[(id, token.to_string())], lease_seconds)
            .await?;
        Ok(leases.into_iter().next().map_or(Lease::Lost, |(_, l)| l))
    }

    /// Extends the leases of many running attempts to `lease_seconds` from now, in one
    /// statement per [`RENEW_CHUNK`] attempts (plus one read-back on MySQL, which has no
    /// `UPDATE ... RETURNING`). Returns every attempt asked about, in order, with its lease:
    /// `Lost` when the row no longer carries that token or is no longer RUNNING.
    pub async fn renew_leases(
        &self,
        attempts: &[(i64, String)],
        lease_seconds: f64,
    ) -> StoreResult<Vec<(i64, Lease)>> {
        let mut held = std::collections::HashMap::new();
        for chunk in attempts.chunks(RENEW_CHUNK) {
            let rows = retry_transient(|| self.try_renew(chunk, lease_seconds)).await?;
            for r in rows {
                if let Some(expires_at) = r.lease_expires_at {
                    held.insert(
                        r.id,
                        Lease::Held {
                            expires_at,
                            cancel_requested: r.cancel_requested,
                        },
                    );
                }
            }
        }
        Ok(attempts
            .iter()
            .map(|(id, _)| (*id, held.get(id).copied().unwrap_or(Lease::Lost)))
            .collect())
    }

    async fn try_renew(
        &self,
        chunk: &[(i64, String)],
        lease_seconds: f64,
    ) -> Result<Vec<Renewed>, DbErr> {
        const COLUMNS: &str = "id, lease_expires_at, cancel_requested";
        let fence = |q: &mut Sql| {
            q.push(" WHERE status = ")
                .bind(Status::Running.as_str())
                .push(" AND ")
                .id_token_in(chunk);
        };
        let mut q = Sql::new(self.dialect);
        q.push("UPDATE job_executions SET lease_expires_at = ")
            .now_plus(lease_seconds)
            .push(", updated_at = ")
            .now();
        fence(&mut q);
        match self.dialect {
            Dialect::Postgres | Dialect::Sqlite => {
                q.push(" RETURNING ").push(COLUMNS);
                Renewed::find_by_statement(q.build()).all(&self.db).await
            }
            Dialect::MySql => {
                let txn = self.db.begin().await?;
                txn.execute(q.build()).await?;
                let mut read = Sql::new(self.dialect);
                read.push("SELECT ")
                    .push(COLUMNS)
                    .push(" FROM job_executions");
                fence(&mut read);
                let rows = Renewed::find_by_statement(read.build()).all(&txn).await?;
                txn.commit().await?;
                Ok(rows)
            }
        }
    }

    /// The RUNNING executions of `worker_id` that an operator asked to cancel, with their
    /// owner tokens (match both: two processes may share a worker id). A read, cheap enough
    /// for a worker to poll every fraction of a second while it runs attempts.
    pub async fn cancel_requests(&self, worker_id: &str) -> StoreResult<Vec<(i64, String)>> {
        let mut q = Sql::new(self.dialect);
        q.push("SELECT id, owner_token FROM job_executions WHERE status = ")
            .bind(Status::Running.as_str())
            .push(" AND cancel_requested AND worker_id = ")
            .bind(worker_id);
        let rows = IdToken::find_by_statement(q.build()).all(&self.db).await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| Some((r.id, r.owner_token?)))
            .collect())
    }

    /// Reads one execution.
    pub async fn execution(&self, id: i64) -> StoreResult<Option<job_execution::Model>> {
        Ok(job_execution::Entity::find_by_id(id).one(&self.db).await?)
    }
}

/// The SET list of a release: PENDING, eligible now, not counted, unowned; or CANCELLED
/// when an operator asked for it. Columns that read `cancel_requested` come first and it
/// is never assigned (MySQL's left-to-right SET).
fn release_set(q: &mut Sql) {
    q.push(" SET run_at = CASE WHEN cancel_requested THEN run_at ELSE ")
        .now()
        .push(
            " END, started_at = CASE WHEN cancel_requested THEN started_at ELSE NULL END, \
               finished_at = CASE WHEN cancel_requested THEN ",
        )
        .now()
        .push(" ELSE NULL END, error_message = CASE WHEN cancel_requested THEN ")
        .bind(cancelled_while_running(
            "was stopped by its worker's shutdown",
        ))
        .push(" ELSE error_message END, cancel_reason = CASE WHEN cancel_requested THEN ")
        .bind(CancelReason::Operator.as_str())
        .push(" ELSE cancel_reason END, owner_token = NULL, lease_expires_at = NULL, updated_at = ")
        .now()
        .push(", status = CASE WHEN cancel_requested THEN ")
        .bind(Status::Cancelled.as_str())
        .push(" ELSE ")
        .bind(Status::Pending.as_str())
        .push(" END");
}
