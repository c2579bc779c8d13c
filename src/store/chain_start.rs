//! Chains at run time: the executions a parent's final outcome starts. A cron's `on_success`
//! crons start once after each of its executions that ends SUCCESS, its `on_failure` crons
//! once after each that ends FAILED or TIMEOUT with its retries spent. (What a cron may list
//! is checked when it is saved, in [`super::chains`].)
//!
//! - Once per (parent, chained cron): the child row carries `parent_execution_id` and
//!   `chain_child`, unique together (`ux_job_executions_chain`). The check for an existing
//!   child and the insert run under the chained cron's lock ([`lock_cron`]); the unique
//!   index is the guarantee (a deleted cron has no row to lock): a violation rolls the
//!   parent's transaction back and the check runs again, finding the winner's child.
//! - All children of one parent are created in one transaction, crons locked in id order
//!   (as `chains::check` locks them), so a parent has either every child or none; the
//!   sweep below looks for parents with none.
//! - What the child is: a cron that exists and is enabled gets an execution through its
//!   overlap policy (`param_source` `chain`; PENDING, WAITING or a SKIPPED row with the
//!   policy's reason); a disabled one gets a SKIPPED row on it saying so; a deleted one a
//!   SKIPPED row with `job_id` NULL, `chain_child` naming it, an empty `handler_name` (its
//!   handler is not known any more) and the reason as its message.
//! - `scheduled_time` and `run_at` are the database clock when the child is created. The
//!   instant must be free in `UNIQUE(job_id, scheduled_time)` (two parents may start one
//!   cron in the same millisecond), and is never a whole second, which is where the cron's
//!   own fire times are: a taken or whole-second instant is moved on by a millisecond.
//! - Who starts them: the worker that recorded the final outcome, right after writing it
//!   (the completer), the rescuer for rows it makes final, and every dispatcher's poll
//!   ([`Store::unchained_parents`]) for parents whose recorder died in between.
//! - CANCELLED parents start nothing: an operator stopped the work, and neither list says
//!   what should follow that. Executions that ended before their cron had chains
//!   (`chains_since`) start none, so adding a chain does not start a backlog.

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult, TransactionTrait};

use super::chains::stored_ids;
use super::create::{Created, NewExecution};
use super::dialect::{is_unique_violation, Dialect, Sql};
use super::overlap::{create_locked, insert_as, lock_cron};
use super::{query_ids, retry_transient, Store, StoreResult};
use crate::entities::cron_job::OverlapPolicy;
use crate::entities::job_execution::{ParamSource, Status};

/// How far back the sweep looks for parents without children, by their `scheduled_time`
/// (the cron's fire-time index bounds the scan): a parent whose recorder died is normally
/// found within a poll or two; one older than this (every dispatcher down for a day) is
/// left alone.
pub const CHAIN_SWEEP_HORIZON: Duration = Duration::from_secs(24 * 3600);

/// The sweep leaves parents that ended this recently to the worker that recorded them.
pub const CHAIN_SWEEP_GRACE: Duration = Duration::from_secs(2);

/// Crons with chains per sweep statement.
const SWEEP_CRON_CHUNK: usize = 100;

/// Parents read per statement.
const PARENT_CHUNK: usize = 500;

/// Instants tried for one child before giving up (each a millisecond later).
const SLOT_ATTEMPTS: i64 = 50;

/// Times a parent's transaction is redone after losing a race on the chain key.
const RACE_RETRIES: u32 = 5;

/// The final statuses that start chains: SUCCESS starts `on_success`, these `on_failure`.
const FAILED_FINAL: [Status; 2] = [Status::Failed, Status::Timeout];

/// A child a parent's outcome started (or recorded as not started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainChild {
    pub parent_execution_id: i64,
    /// The cron the chain names (`chain_child`).
    pub chain_child: i64,
    /// The child's cron: `chain_child`, or `None` when that cron does not exist.
    pub job_id: Option<i64>,
    /// The child execution (or ledger row).
    pub execution_id: i64,
    /// PENDING, WAITING or SKIPPED.
    pub status: Status,
    /// Why a SKIPPED child did not run.
    pub reason: Option<String>,
}

/// The outcome a child sees of its parent ([`Store::parent_outcome`]).
#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct ParentOutcome {
    pub id: i64,
    pub status: String,
    pub result: Option<serde_json::Value>,
    pub error_message: Option<String>,
}

#[derive(FromQueryResult)]
struct Parent {
    id: i64,
    job_id: i64,
    status: String,
    on_success: Option<serde_json::Value>,
    on_failure: Option<serde_json::Value>,
}

#[derive(FromQueryResult)]
struct ChildCron {
    name: String,
    is_enabled: bool,
    handler_name: String,
    handler_params: Option<serde_json::Value>,
    max_retry: i32,
    timeout_seconds: i32,
    overlap_policy: String,
}

#[derive(FromQueryResult)]
struct Now {
    now: DateTime<Utc>,
}

impl Store {
    /// Starts the chains of these executions: for each that is final SUCCESS, FAILED or
    /// TIMEOUT, whose cron has chains and which ended since the cron got them, one child per
    /// cron its list names, unless that child exists. Safe to call any number of times from
    /// any number of processes: each (parent, cron) gets one child. Returns the children
    /// this call created.
    pub async fn start_chains(&self, parent_ids: &[i64]) -> StoreResult<Vec<ChainChild>> {
        let mut ids = parent_ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut started = Vec::new();
        for chunk in ids.chunks(PARENT_CHUNK) {
            let parents = retry_transient(|| self.chained_parents(chunk)).await?;
            for parent in parents {
                let (list, ids) = if parent.status == Status::Success.as_str() {
                    ("on_success", stored_ids(parent.on_success.as_ref()))
                } else {
                    ("on_failure", stored_ids(parent.on_failure.as_ref()))
                };
                let mut targets = ids;
                targets.sort_unstable();
                targets.dedup();
                if targets.is_empty() {
                    continue;
                }
                let children = self.start_children(&parent, list, &targets).await?;
                for c in &children {
                    tracing::info!(
                        execution_id = c.execution_id,
                        job_id = c.job_id,
                        chain_child = c.chain_child,
                        parent_execution_id = c.parent_execution_id,
                        parent_job_id = parent.job_id,
                        chain = list,
                        status = c.status.as_str(),
                        reason = c.reason.as_deref().unwrap_or(""),
                        "chained execution created"
                    );
                }
                started.extend(children);
            }
        }
        if started.iter().any(|c| c.status == Status::Pending) {
            self.announce_due(Utc::now()).await;
        }
        Ok(started)
    }

    /// Executions of crons with chains that ended in a status their cron's lists start
    /// something for and have no child yet: chains nobody started (the worker that
    /// recorded the outcome died first). At most `limit`, ended at least
    /// [`CHAIN_SWEEP_GRACE`] ago, fire times within [`CHAIN_SWEEP_HORIZON`].
    ///
    /// First the crons with chains (`chains_since` set; few, and `cron_jobs` is small), then
    /// their executions by cron id, so every backend reads them through the fire-time index
    /// `(job_id, scheduled_time)` from the horizon on (with the ids in the text the
    /// planners do; without, they would start from every recent execution), and probes the
    /// chain index for a child.
    pub async fn unchained_parents(&self, limit: u64) -> StoreResult<Vec<i64>> {
        let mut q = Sql::new(self.dialect);
        q.push("SELECT id FROM cron_jobs WHERE chains_since IS NOT NULL ORDER BY id");
        let crons: Vec<i64> = query_ids(&self.db, q.build()).await?;
        let mut found = Vec::new();
        for chunk in crons.chunks(SWEEP_CRON_CHUNK) {
            let left = limit.max(1).saturating_sub(found.len() as u64);
            if left == 0 {
                break;
            }
            let mut q = Sql::new(self.dialect);
            q.push(
                "SELECT e.id FROM cron_jobs c JOIN job_executions e ON e.job_id = c.id \
                 WHERE c.id IN ",
            )
            .bind_list(chunk)
            .push(" AND e.job_id IN ")
            .bind_list(chunk)
            .push(" AND c.chains_since IS NOT NULL AND e.scheduled_time >= ")
            .now_plus(-CHAIN_SWEEP_HORIZON.as_secs_f64())
            .push(" AND e.finished_at >= c.chains_since AND e.finished_at < ")
            .now_plus(-CHAIN_SWEEP_GRACE.as_secs_f64())
            .push(" AND ((e.status = ")
            .status(Status::Success)
            .push(" AND c.on_success IS NOT NULL) OR (e.status IN ")
            .statuses(&FAILED_FINAL)
            .push(
                " AND c.on_failure IS NOT NULL)) AND NOT EXISTS (SELECT 1 FROM job_executions k \
                 WHERE k.parent_execution_id = e.id) LIMIT ",
            )
            .push(&left.to_string());
            for row in self.db.query_all(q.build()).await? {
                found.push(row.try_get_by_index::<i64>(0)?);
            }
        }
        Ok(found)
    }

    /// The outcome of the execution `id` as a chained child's handler sees it; `None` if it
    /// is gone (retention).
    pub async fn parent_outcome(&self, id: i64) -> StoreResult<Option<ParentOutcome>> {
        let mut q = Sql::new(self.dialect);
        q.push("SELECT id, status, result, error_message FROM job_executions WHERE id = ")
            .bind(id);
        Ok(ParentOutcome::find_by_statement(q.build())
            .one(&self.db)
            .await?)
    }

    /// The parents of `ids` that start chains: final in a status their lists care for,
    /// their cron with chains since before they ended.
    async fn chained_parents(&self, ids: &[i64]) -> Result<Vec<Parent>, DbErr> {
        let mut q = Sql::new(self.dialect);
        q.push(
            "SELECT e.id, e.job_id, e.status, c.on_success, c.on_failure \
             FROM job_executions e JOIN cron_jobs c ON c.id = e.job_id WHERE e.id IN ",
        )
        .bind_list(ids)
        .push(" AND e.status IN ")
        .statuses(&[Status::Success, Status::Failed, Status::Timeout])
        .push(" AND c.chains_since IS NOT NULL AND e.finished_at >= c.chains_since");
        Parent::find_by_statement(q.build()).all(&self.db).await
    }

    /// Creates the missing children of one parent, in one transaction; redone when another
    /// process created one of them meanwhile (the chain key refused ours).
    async fn start_children(
        &self,
        parent: &Parent,
        list: &'static str,
        targets: &[i64],
    ) -> StoreResult<Vec<ChainChild>> {
        let mut races = 0;
        loop {
            let run = || async {
                let txn = self.db.begin().await?;
                let mut out = Vec::new();
                for &child in targets {
                    if let Some(c) = start_child(&txn, self.dialect, parent, list, child).await? {
                        out.push(c);
                    }
                }
                txn.commit().await?;
                Ok(out)
            };
            match retry_transient(run).await {
                Ok(out) => return Ok(out),
                Err(e) if is_unique_violation(&e) && races < RACE_RETRIES => {
                    races += 1;
                    tracing::debug!(
                        parent_execution_id = parent.id,
                        races,
                        "another process started a chain of this execution; checking again"
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// One (parent, cron) in the parent's transaction `db`: `None` if the child exists.
async fn start_child<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    parent: &Parent,
    list: &'static str,
    child: i64,
) -> Result<Option<ChainChild>, DbErr> {
    let exists = lock_cron(db, dialect, child).await?;
    if chained_row(db, dialect, parent.id, child).await?.is_some() {
        return Ok(None);
    }
    let cron = if exists {
        child_cron(db, dialect, child).await?
    } else {
        None
    };
    let now = db_now(db, dialect).await?;
    let mut new = NewExecution {
        job_id: None,
        handler_name: String::new(),
        scheduled_time: now,
        run_at: now,
        params: None,
        param_source: ParamSource::Chain,
        max_retry: 0,
        timeout_seconds: 0,
    };
    let policy = match &cron {
        None => None,
        Some(c) => {
            new.job_id = Some(child);
            new.handler_name = c.handler_name.clone();
            new.params = c.handler_params.clone();
            new.max_retry = c.max_retry;
            new.timeout_seconds = c.timeout_seconds;
            // An unreadable policy is treated as exclusive, as an operator's run treats it.
            Some(c.overlap_policy.parse().unwrap_or(OverlapPolicy::Skip))
        }
    };
    let parent_job = parent.job_id;
    let not_run = match &cron {
        None => Some(format!(
            "cron {child} named in {list} of cron {parent_job} does not exist: not started \
             for execution {}",
            parent.id
        )),
        Some(c) if !c.is_enabled => Some(format!(
            "cron {child} ({}) named in {list} of cron {parent_job} is disabled: not started \
             for execution {}",
            c.name, parent.id
        )),
        Some(_) => None,
    };
    for slot in 0..SLOT_ATTEMPTS {
        let at = now + chrono::Duration::milliseconds(slot);
        if at.nanosecond() == 0 {
            continue;
        }
        new.scheduled_time = at;
        new.run_at = at;
        if new.job_id.is_some() && row_at(db, dialect, child, at).await?.is_some() {
            continue;
        }
        let made = match (&not_run, policy) {
            (Some(reason), _) => insert_as(db, dialect, &new, Status::Skipped, false, Some(reason))
                .await?
                .map(|id| (id, Status::Skipped, Some(reason.clone()))),
            (None, Some(OverlapPolicy::Allow) | None) => {
                insert_as(db, dialect, &new, Status::Pending, false, None)
                    .await?
                    .map(|id| (id, Status::Pending, None))
            }
            (None, Some(policy)) => {
                match create_locked(db, dialect, &new, child, policy, true).await? {
                    Created::New(id) => Some((id, Status::Pending, None)),
                    Created::Waiting(id) => Some((id, Status::Waiting, None)),
                    Created::Overlap => row_at(db, dialect, child, at)
                        .await?
                        .map(|(id, message)| (id, Status::Skipped, message)),
                    Created::Exists => None,
                }
            }
        };
        let Some((id, status, reason)) = made else {
            continue;
        };
        set_parent(db, dialect, id, parent.id, child).await?;
        return Ok(Some(ChainChild {
            parent_execution_id: parent.id,
            chain_child: child,
            job_id: new.job_id,
            execution_id: id,
            status,
            reason,
        }));
    }
    Err(DbErr::Custom(format!(
        "no free instant for the chained execution of cron {child} (parent {})",
        parent.id
    )))
}

/// The child of (parent, cron), if one exists (the chain index answers).
async fn chained_row<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    parent: i64,
    child: i64,
) -> Result<Option<i64>, DbErr> {
    let mut q = Sql::new(dialect);
    q.push("SELECT id FROM job_executions WHERE parent_execution_id = ")
        .bind(parent)
        .push(" AND chain_child = ")
        .bind(child);
    match db.query_one(q.build()).await? {
        Some(row) => Ok(Some(row.try_get_by_index::<i64>(0)?)),
        None => Ok(None),
    }
}

/// The row of (cron, instant) with its message, if any.
async fn row_at<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    job_id: i64,
    at: DateTime<Utc>,
) -> Result<Option<(i64, Option<String>)>, DbErr> {
    let mut q = Sql::new(dialect);
    q.push("SELECT id, error_message FROM job_executions WHERE job_id = ")
        .bind(job_id)
        .push(" AND scheduled_time = ")
        .bind(at);
    match db.query_one(q.build()).await? {
        Some(row) => Ok(Some((
            row.try_get_by_index::<i64>(0)?,
            row.try_get_by_index::<Option<String>>(1)?,
        ))),
        None => Ok(None),
    }
}

async fn child_cron<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    id: i64,
) -> Result<Option<ChildCron>, DbErr> {
    let mut q = Sql::new(dialect);
    q.push(
        "SELECT name, is_enabled, handler_name, handler_params, max_retry, timeout_seconds, \
         overlap_policy FROM cron_jobs WHERE id = ",
    )
    .bind(id);
    ChildCron::find_by_statement(q.build()).one(db).await
}

async fn db_now<C: ConnectionTrait>(db: &C, dialect: Dialect) -> Result<DateTime<Utc>, DbErr> {
    let mut q = Sql::new(dialect);
    q.push("SELECT ").now().push(" AS now");
    Now::find_by_statement(q.build())
        .one(db)
        .await?
        .map(|r| r.now)
        .ok_or_else(|| DbErr::Custom("the database returned no clock".into()))
}

/// Marks row `id` as the child of (parent, cron); the chain key refuses a second one.
async fn set_parent<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    id: i64,
    parent: i64,
    child: i64,
) -> Result<(), DbErr> {
    let mut q = Sql::new(dialect);
    q.push("UPDATE job_executions SET parent_execution_id = ")
        .bind(parent)
        .push(", chain_child = ")
        .bind(child)
        .push(" WHERE id = ")
        .bind(id);
    db.execute(q.build()).await?;
    Ok(())
}
