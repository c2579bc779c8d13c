//! How attempts end: SUCCESS with a result, CANCELLED, failed or timed out by the retry rule
//! ([`retry_or_final`]), or released to PENDING. Many attempts end in one statement
//! ([`Store::finish_many`]); the single-attempt calls are batches of one, so there is one
//! SQL text per dialect.
//!
//! Every row is fenced exactly as a single transition is: its id, `status = 'RUNNING'` and
//! its claim's owner token. A row whose token no longer matches (lease lost, rescued,
//! re-claimed) is left alone and reported as `None`.
//!
//! - PostgreSQL: `UPDATE ... FROM unnest($1, $2, ...) AS b(...) ... RETURNING`: one binary
//!   array parameter per column and one SQL text whatever the batch size.
//! - SQLite: the same shape over `json_each(?)` (SQLite 3.35+).
//! - MySQL/MariaDB: multi-table UPDATE does not promise the left-to-right SET order the
//!   retry rule relies on, so the batch is a single-table UPDATE whose per-row values are
//!   `CASE id WHEN ... END`; no RETURNING, so one transaction either sees every row match
//!   (the common case) or locks the matching rows first and reads back what it wrote.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::ArrayType;
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult, TransactionTrait, Value};
use serde_json::{json, Value as Json};

use super::dialect::{Arg, Dialect, Sql};
use super::transition::{cancelled_while_running, release_set, retry_or_final, truncate_error};
use super::{query_ids, retry_transient, Store, StoreResult};
use crate::entities::job_execution::{CancelReason, Status};
use crate::store::transition::{FailOutcome, Failure, Released};

/// At most this many attempts per statement.
pub const FINISH_CHUNK: usize = 500;

/// One attempt to end: the execution, its claim's token, and how it ended.
#[derive(Debug, Clone)]
pub struct Finish {
    pub id: i64,
    pub token: String,
    pub end: End,
}

/// How an attempt ended, as the worker saw it.
#[derive(Debug, Clone)]
pub enum End {
    /// SUCCESS with the handler's result (`None`: no result).
    Success(Option<serde_json::Value>),
    /// Stopped on an operator's request: CANCELLED with this message.
    Cancelled(String),
    /// Failed or timed out: retried after `backoff_seconds` if retries remain, else final;
    /// CANCELLED if an operator asked meanwhile.
    Failed {
        failure: Failure,
        error: String,
        backoff_seconds: f64,
    },
    /// Back to PENDING, not counted (or CANCELLED if an operator asked).
    Release,
}

/// Where a written attempt left its execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Success,
    Cancelled,
    Failed(FailOutcome),
    Released(Released),
}

#[derive(FromQueryResult)]
struct After {
    id: i64,
    status: String,
    retry_count: i32,
    run_at: DateTime<Utc>,
}

/// Which statement a batch entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Group {
    /// SUCCESS or CANCELLED: explicit values.
    Ended,
    /// The retry rule.
    Failed,
    /// The release rule.
    Released,
}

fn group(end: &End) -> Group {
    match end {
        End::Success(_) | End::Cancelled(_) => Group::Ended,
        End::Failed { .. } => Group::Failed,
        End::Release => Group::Released,
    }
}

/// An entry's column values, computed in Rust before writing.
struct Values {
    status: &'static str,
    /// The handler's result; `None` for none (a JSON null result is none too).
    result_json: Option<Json>,
    error: Option<String>,
    reason: Option<&'static str>,
    final_status: &'static str,
    cancelled_error: String,
    backoff: f64,
}

fn values(end: &End) -> Values {
    let mut v = Values {
        status: Status::Success.as_str(),
        result_json: None,
        error: None,
        reason: None,
        final_status: Status::Failed.as_str(),
        cancelled_error: String::new(),
        backoff: 0.0,
    };
    match end {
        End::Success(result) => {
            v.result_json = result.as_ref().filter(|r| !r.is_null()).cloned();
        }
        End::Cancelled(message) => {
            v.status = Status::Cancelled.as_str();
            v.error = Some(truncate_error(message));
            v.reason = Some(CancelReason::Operator.as_str());
        }
        End::Failed {
            failure,
            error,
            backoff_seconds,
        } => {
            let how = match failure {
                Failure::Failed => format!("failed: {error}"),
                Failure::Timeout => format!("timed out: {error}"),
            };
            v.error = Some(truncate_error(error));
            v.final_status = failure.final_status().as_str();
            v.cancelled_error = cancelled_while_running(&how);
            v.backoff = backoff_seconds.max(0.0);
        }
        End::Release => {}
    }
    v
}

impl Store {
    /// Ends many attempts, in one statement per kind of ending (and per [`FINISH_CHUNK`]).
    /// Returns, in the order given, where each attempt left its execution, or `None` when
    /// the attempt was no longer ours and nothing changed. Entries must name distinct
    /// executions.
    pub async fn finish_many(&self, batch: &[Finish]) -> StoreResult<Vec<Option<Finished>>> {
        let mut found: HashMap<i64, Finished> = HashMap::with_capacity(batch.len());
        for g in [Group::Ended, Group::Failed, Group::Released] {
            let entries: Vec<&Finish> = batch.iter().filter(|f| group(&f.end) == g).collect();
            for chunk in entries.chunks(FINISH_CHUNK) {
                let rows = retry_transient(|| self.try_finish(g, chunk)).await?;
                for r in rows {
                    found.insert(r.id, finished(g, &r));
                }
            }
        }
        // Released rows are due now, retries at their backoff: other pools may take them.
        let due = found
            .values()
            .filter_map(|f| match f {
                Finished::Released(Released::Pending) => Some(Utc::now()),
                Finished::Failed(FailOutcome::Retrying { run_at, .. }) => Some(*run_at),
                _ => None,
            })
            .min();
        if let Some(due) = due {
            self.announce_due(due).await;
        }
        Ok(batch.iter().map(|f| found.get(&f.id).copied()).collect())
    }

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
        Ok(self
            .finish_one(id, token, End::Success(result))
            .await?
            .is_some())
    }

    /// RUNNING -> CANCELLED after the attempt was stopped on an operator's request.
    pub async fn cancelled(&self, id: i64, token: &str, message: &str) -> StoreResult<bool> {
        let end = End::Cancelled(message.to_string());
        Ok(self.finish_one(id, token, end).await?.is_some())
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
        let end = End::Failed {
            failure,
            error: error.to_string(),
            backoff_seconds,
        };
        Ok(match self.finish_one(id, token, end).await? {
            Some(Finished::Failed(outcome)) => Some(outcome),
            _ => None,
        })
    }

    /// RUNNING -> PENDING, eligible at once, without counting the attempt: the worker is
    /// shutting down (or its pool crashed) and another worker should take the execution.
    /// A row an operator asked to cancel becomes CANCELLED instead. `None`: no longer ours.
    pub async fn release(&self, id: i64, token: &str) -> StoreResult<Option<Released>> {
        Ok(match self.finish_one(id, token, End::Release).await? {
            Some(Finished::Released(r)) => Some(r),
            _ => None,
        })
    }

    async fn finish_one(&self, id: i64, token: &str, end: End) -> StoreResult<Option<Finished>> {
        let batch = [Finish {
            id,
            token: token.to_string(),
            end,
        }];
        Ok(self.finish_many(&batch).await?.into_iter().next().flatten())
    }

    async fn try_finish(&self, g: Group, chunk: &[&Finish]) -> Result<Vec<After>, DbErr> {
        match self.dialect {
            Dialect::Postgres | Dialect::Sqlite => self.finish_joined(g, chunk).await,
            Dialect::MySql => self.finish_mysql(g, chunk).await,
        }
    }

    /// PostgreSQL and SQLite: the batch joins the UPDATE as a table `b` with one row per
    /// entry: typed arrays zipped by `unnest` on PostgreSQL, JSON rows on SQLite.
    async fn finish_joined(&self, g: Group, chunk: &[&Finish]) -> Result<Vec<After>, DbErr> {
        let d = self.dialect;
        let all: Vec<Values> = chunk.iter().map(|f| values(&f.end)).collect();
        let col = |name: &'static str| Arg::Column(name);
        let mut q = Sql::new(d);
        q.push("UPDATE job_executions");
        set_list(
            &mut q,
            g,
            &Columns {
                status: col("b.b_status"),
                result: col("b.b_result"),
                error: col("b.b_error"),
                reason: col("b.b_reason"),
                final_status: col("b.b_final"),
                cancelled_error: col("b.b_cancelled"),
                backoff: col("b.b_backoff"),
            },
        );
        match d {
            Dialect::Postgres => joined_arrays(&mut q, chunk, &all),
            _ => joined_json(&mut q, chunk, &all),
        }
        // The rows are reached by primary key. `status = 'RUNNING'` as a plain restriction
        // lets the planner scan the status index instead (SQLite without statistics,
        // PostgreSQL through index entries of rows that finished long ago, dead until
        // vacuum): compared with the batch's column it is a join condition. PostgreSQL
        // also gets the ids as an array, so its estimate leads with the primary key.
        q.push(
            " WHERE job_executions.id = b.b_id AND job_executions.owner_token = b.b_token \
             AND job_executions.status = b.b_running",
        );
        if d == Dialect::Postgres {
            q.push(" AND job_executions.id = ANY(")
                .bind(chunk.iter().map(|f| f.id).collect::<Vec<i64>>())
                .push(")");
        }
        q.push(
            " RETURNING job_executions.id, job_executions.status, \
             job_executions.retry_count, job_executions.run_at",
        );
        After::find_by_statement(q.build()).all(&self.db).await
    }

    /// MySQL/MariaDB: a single-table UPDATE with per-row `CASE id` values, in a transaction.
    async fn finish_mysql(&self, g: Group, chunk: &[&Finish]) -> Result<Vec<After>, DbErr> {
        if g == Group::Ended {
            // Fast path: every row still ours, so the update's count says it all.
            let txn = self.db.begin().await?;
            let q = mysql_update(self.dialect, g, chunk);
            if txn.execute(q.build()).await?.rows_affected() == chunk.len() as u64 {
                txn.commit().await?;
                return Ok(chunk.iter().map(|f| after_ended(f)).collect());
            }
            txn.rollback().await?;
        }
        self.finish_mysql_locked(g, chunk).await
    }

    /// Locks the rows that are still ours, updates only those and reads back what it wrote.
    async fn finish_mysql_locked(&self, g: Group, chunk: &[&Finish]) -> Result<Vec<After>, DbErr> {
        let d = self.dialect;
        let txn = self.db.begin().await?;
        let mut lock = Sql::new(d);
        lock.push("SELECT id FROM job_executions");
        fence_many(&mut lock, chunk);
        lock.push(" FOR UPDATE");
        let ours: std::collections::HashSet<i64> = query_ids(&txn, lock.build()).await?;
        let chunk: Vec<&Finish> = chunk
            .iter()
            .copied()
            .filter(|f| ours.contains(&f.id))
            .collect();
        if chunk.is_empty() {
            txn.commit().await?;
            return Ok(Vec::new());
        }
        txn.execute(mysql_update(d, g, &chunk).build()).await?;
        let ids: Vec<i64> = chunk.iter().map(|f| f.id).collect();
        let mut read = Sql::new(d);
        read.push("SELECT id, status, retry_count, run_at FROM job_executions WHERE id IN ")
            .bind_list(&ids);
        let rows = After::find_by_statement(read.build()).all(&txn).await?;
        txn.commit().await?;
        Ok(rows)
    }
}

/// The values a group's SET list reads, as per-row [`Arg`]s.
struct Columns<'a> {
    status: Arg<'a>,
    result: Arg<'a>,
    error: Arg<'a>,
    reason: Arg<'a>,
    final_status: Arg<'a>,
    cancelled_error: Arg<'a>,
    backoff: Arg<'a>,
}

fn set_list(q: &mut Sql, g: Group, c: &Columns) {
    match g {
        Group::Ended => {
            q.push(" SET status = ")
                .arg(&c.status)
                .push(", result = ")
                .arg(&c.result)
                .push(", error_message = ")
                .arg(&c.error)
                // A stop asked for with a reason (`replaced`) keeps it.
                .push(", cancel_reason = CASE WHEN ")
                .arg(&c.reason)
                .push(" IS NULL THEN NULL ELSE COALESCE(cancel_reason, ")
                .arg(&c.reason)
                .push(") END, finished_at = ")
                .now()
                .push(", owner_token = NULL, lease_expires_at = NULL, updated_at = ")
                .now();
        }
        Group::Failed => {
            retry_or_final(q, &c.final_status, &c.error, &c.cancelled_error, &c.backoff)
        }
        Group::Released => release_set(q),
    }
}

/// `WHERE status = 'RUNNING' AND id IN (...) AND (id, owner_token) IN (...)`; the plain id
/// list lets every dialect reach the rows by primary key.
fn fence_many(q: &mut Sql, chunk: &[&Finish]) {
    let ids: Vec<i64> = chunk.iter().map(|f| f.id).collect();
    let pairs: Vec<(i64, String)> = chunk.iter().map(|f| (f.id, f.token.clone())).collect();
    q.push(" WHERE status = ")
        .status(Status::Running)
        .push(" AND id IN ")
        .bind_list(&ids)
        .push(" AND ")
        .id_token_in(&pairs);
}

fn mysql_update(d: Dialect, g: Group, chunk: &[&Finish]) -> Sql {
    let all: Vec<(i64, Values)> = chunk.iter().map(|f| (f.id, values(&f.end))).collect();
    // A value that is the same for every row is bound once instead of per row.
    let per_row = |pick: &dyn Fn(&Values) -> Value| -> Arg<'static> {
        let first = all.first().map(|(_, v)| pick(v));
        if all.iter().all(|(_, v)| Some(pick(v)) == first) {
            if let Some(v) = first {
                return Arg::Value(v);
            }
        }
        Arg::ById(all.iter().map(|(id, v)| (*id, pick(v))).collect())
    };
    let columns = Columns {
        status: per_row(&|v| v.status.into()),
        result: per_row(&|v| Value::Json(v.result_json.clone().map(Box::new))),
        error: per_row(&|v| v.error.clone().into()),
        reason: per_row(&|v| v.reason.map(str::to_string).into()),
        final_status: per_row(&|v| v.final_status.into()),
        cancelled_error: per_row(&|v| v.cancelled_error.clone().into()),
        backoff: per_row(&|v| v.backoff.into()),
    };
    let mut q = Sql::new(d);
    q.push("UPDATE job_executions");
    set_list(&mut q, g, &columns);
    fence_many(&mut q, chunk);
    q
}

/// PostgreSQL's batch table: one binary array parameter per column, zipped by `unnest`
/// (no per-row text to parse, unlike JSON). Nullable texts travel as `jsonb[]` elements, a
/// JSON null standing for SQL NULL, because the binder's `text[]` has no NULL element.
fn joined_arrays(q: &mut Sql, chunk: &[&Finish], all: &[Values]) {
    fn texts<'a>(all: &'a [Values], pick: impl Fn(&'a Values) -> &'a str) -> Vec<String> {
        all.iter().map(|v| pick(v).to_string()).collect()
    }
    fn nullable<'a>(all: &'a [Values], pick: impl Fn(&'a Values) -> Option<&'a str>) -> Value {
        let items = all
            .iter()
            .map(|v| Value::Json(Some(Box::new(pick(v).map_or(Json::Null, Json::from)))))
            .collect();
        Value::Array(ArrayType::Json, Some(Box::new(items)))
    }
    let results = all
        .iter()
        .map(|v| {
            let r = v.result_json.clone().unwrap_or(Json::Null);
            Value::Json(Some(Box::new(r)))
        })
        .collect();
    q.push(
        " FROM (SELECT b_id, b_token, b_status, NULLIF(b_result, 'null'::jsonb) AS b_result, \
         b_error #>> '{}' AS b_error, b_reason #>> '{}' AS b_reason, b_final, b_cancelled, \
         b_backoff, b_running FROM unnest(",
    )
    .bind(chunk.iter().map(|f| f.id).collect::<Vec<i64>>())
    .push(", ")
    .bind(
        chunk
            .iter()
            .map(|f| f.token.clone())
            .collect::<Vec<String>>(),
    )
    .push(", ")
    .bind(texts(all, |v| v.status))
    .push(", ")
    .bind(Value::Array(ArrayType::Json, Some(Box::new(results))))
    .push(", ")
    .bind(nullable(all, |v| v.error.as_deref()))
    .push(", ")
    .bind(nullable(all, |v| v.reason))
    .push(", ")
    .bind(texts(all, |v| v.final_status))
    .push(", ")
    .bind(texts(all, |v| &v.cancelled_error))
    .push(", ")
    .bind(all.iter().map(|v| v.backoff).collect::<Vec<f64>>())
    .push(", ")
    .bind(texts(all, |_| Status::Running.as_str()))
    .push(
        ") AS u(b_id, b_token, b_status, b_result, b_error, b_reason, b_final, b_cancelled, \
         b_backoff, b_running)) AS b",
    );
}

/// SQLite's batch table: `json_each` over an array of JSON objects.
fn joined_json(q: &mut Sql, chunk: &[&Finish], all: &[Values]) {
    let rows: Vec<Json> = chunk
        .iter()
        .zip(all)
        .map(|(f, v)| {
            json!({
                "b_id": f.id,
                "b_token": f.token,
                "b_status": v.status,
                "b_result": v.result_json.as_ref().map(Json::to_string),
                "b_error": v.error,
                "b_reason": v.reason,
                "b_final": v.final_status,
                "b_cancelled": v.cancelled_error,
                "b_backoff": v.backoff,
                "b_running": Status::Running.as_str(),
            })
        })
        .collect();
    q.push(" FROM (SELECT");
    for (i, name) in BATCH_COLUMNS.iter().enumerate() {
        if i > 0 {
            q.push(",");
        }
        q.push(" json_extract(value, '$.")
            .push(name)
            .push("') AS ")
            .push(name);
    }
    q.push(" FROM json_each(")
        .bind(Json::Array(rows).to_string())
        .push(")) AS b");
}

const BATCH_COLUMNS: [&str; 10] = [
    "b_id",
    "b_token",
    "b_status",
    "b_result",
    "b_error",
    "b_reason",
    "b_final",
    "b_cancelled",
    "b_backoff",
    "b_running",
];

fn after_ended(f: &Finish) -> After {
    let status = match f.end {
        End::Cancelled(_) => Status::Cancelled,
        _ => Status::Success,
    };
    After {
        id: f.id,
        status: status.as_str().to_string(),
        // Not read for an ended attempt.
        retry_count: 0,
        run_at: DateTime::<Utc>::MIN_UTC,
    }
}

fn finished(g: Group, r: &After) -> Finished {
    let status = r.status.as_str();
    match g {
        Group::Ended if status == Status::Cancelled.as_str() => Finished::Cancelled,
        Group::Ended => Finished::Success,
        Group::Released if status == Status::Cancelled.as_str() => {
            Finished::Released(Released::Cancelled)
        }
        Group::Released => Finished::Released(Released::Pending),
        Group::Failed if status == Status::Pending.as_str() => {
            Finished::Failed(FailOutcome::Retrying {
                retry_count: r.retry_count,
                run_at: r.run_at,
            })
        }
        Group::Failed if status == Status::Cancelled.as_str() => {
            Finished::Failed(FailOutcome::Cancelled {
                retry_count: r.retry_count,
            })
        }
        Group::Failed => Finished::Failed(FailOutcome::Final {
            status: if status == Status::Timeout.as_str() {
                Status::Timeout
            } else {
                Status::Failed
            },
            retry_count: r.retry_count,
        }),
    }
}
