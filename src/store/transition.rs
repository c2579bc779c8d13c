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

use super::dialect::{Arg, Dialect, Sql};
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
/// Ownership is dropped either way. Each value may differ per row ([`Arg`]): one rule for
/// the rescuer's statement, a single failed attempt and a batch of them.
///
/// `retry_count` is assigned last and `cancel_requested` never: MySQL evaluates SET
/// assignments left to right against already-updated values, PostgreSQL and SQLite against
/// the old row; this way every CASE reads the old values on all three.
pub(crate) fn retry_or_final(
    q: &mut Sql,
    final_status: &Arg,
    error: &Arg,
    cancelled_error: &Arg,
    backoff_seconds: &Arg,
) {
    q.push(" SET status = CASE WHEN cancel_requested THEN ")
        .status(Status::Cancelled)
        .push(" WHEN retry_count < max_retry THEN ")
        .status(Status::Pending)
        .push(" ELSE ")
        .arg(final_status)
        .push(" END, run_at = ")
        .push(RETRIES_LEFT)
        .now_plus_arg(backoff_seconds)
        .push(" ELSE run_at END, finished_at = ")
        .push(RETRIES_LEFT)
        .push("NULL ELSE ")
        .now()
        .push(" END, error_message = CASE WHEN cancel_requested THEN ")
        .arg(cancelled_error)
        .push(" ELSE ")
        .arg(error)
        .push(" END, cancel_reason = CASE WHEN cancel_requested THEN COALESCE(cancel_reason, ")
        .bind(CancelReason::Operator.as_str())
        .push(
            ") ELSE cancel_reason END, owner_token = NULL, lease_expires_at = NULL, updated_at = ",
        )
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
    /// Releases every RUNNING row of one claim (by its token), as [`Store::release`] does
    /// one: for a claim whose outcome was unknown when the worker stopped claiming. Returns
    /// how many rows it released; safe to repeat.
    pub async fn release_claim(&self, token: &str) -> StoreResult<u64> {
        let run = || async {
            let mut q = Sql::new(self.dialect);
            q.push("UPDATE job_executions");
            release_set(&mut q);
            q.push(" WHERE status = ")
                .status(Status::Running)
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
        let ids: Vec<i64> = chunk.iter().map(|(id, _)| *id).collect();
        // The id list reaches the rows by primary key on every dialect (SQLite cannot from
        // the row-value list alone, and must not from the status index: `no_index`).
        let fence = |q: &mut Sql| {
            q.push(" WHERE ")
                .push(self.dialect.no_index())
                .push("status = ")
                .status(Status::Running)
                .push(" AND id IN ")
                .bind_list(&ids)
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
            .status(Status::Running)
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
pub(crate) fn release_set(q: &mut Sql) {
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
        .push(" ELSE error_message END, cancel_reason = CASE WHEN cancel_requested THEN COALESCE(cancel_reason, ")
        .bind(CancelReason::Operator.as_str())
        .push(") ELSE cancel_reason END, owner_token = NULL, lease_expires_at = NULL, updated_at = ")
        .now()
        .push(", status = CASE WHEN cancel_requested THEN ")
        .status(Status::Cancelled)
        .push(" ELSE ")
        .status(Status::Pending)
        .push(" END");
}
