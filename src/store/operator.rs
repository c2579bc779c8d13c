//! What an operator does to executions (admin API and console): run a handler now or later,
//! run a cron now, retry a finished execution, cancel, delete. Each state change is one
//! conditional UPDATE or DELETE whose WHERE names the states it applies to, so it cannot
//! race a worker's claim or transition into an impossible state: the loser sees 0 rows and
//! gets [`Action::WrongState`] with the state it lost to.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr, EntityTrait, TransactionTrait};

use super::create::{has_unfinished, Created, NewExecution};
use super::dialect::{Dialect, Sql};
use super::overlap::{create_locked, insert_as, lock_cron};
use super::{retry_transient, Store, StoreError, StoreResult};
use crate::entities::cron_job::{self, OverlapPolicy};
use crate::entities::job_execution::{self, CancelReason, ParamSource, Status};

/// The error message of executions an operator cancelled before they ran.
pub const CANCELLED_PENDING_MESSAGE: &str = "cancelled by an operator before it ran";

/// States from which an operator may retry an execution.
pub const RETRYABLE: [Status; 3] = [Status::Failed, Status::Timeout, Status::Cancelled];

/// How many times a manual run is re-stamped when its instant collides with an existing
/// row of the same cron (two runs within one clock tick).
const TRIGGER_ATTEMPTS: u32 = 5;

/// How an operator runs a cron now ([`Store::trigger_cron_with`]).
#[derive(Debug, Clone)]
pub struct Trigger {
    /// Params for this run instead of the cron's (already checked by its handler).
    pub params: Option<serde_json::Value>,
    /// Why, stored on the execution.
    pub reason: Option<String>,
    /// Who asked, stored on the execution.
    pub requested_by: Option<String>,
    /// The cron's overlap policy decides (true), or the run starts beside anything
    /// unfinished (false).
    pub respect_overlap: bool,
}

impl Default for Trigger {
    fn default() -> Self {
        Trigger {
            params: None,
            reason: None,
            requested_by: None,
            respect_overlap: true,
        }
    }
}

/// What holds an exclusive cron's slot, for a refusal's message: "execution 7 (RUNNING)
/// is unfinished and 8 waits".
async fn unfinished_of<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    job_id: i64,
) -> Result<String, DbErr> {
    let mut q = Sql::new(dialect);
    q.push("SELECT id, status FROM job_executions WHERE job_id = ")
        .bind(job_id)
        .push(" AND status IN ")
        .statuses(&[Status::Pending, Status::Running, Status::Waiting])
        .push(" ORDER BY scheduled_time, id");
    let rows = db.query_all(q.build()).await?;
    let mut parts = Vec::with_capacity(rows.len());
    for r in rows {
        let id: i64 = r.try_get_by_index(0)?;
        let status: String = r.try_get_by_index(1)?;
        parts.push(format!("{id} ({status})"));
    }
    Ok(if parts.is_empty() {
        "a fire time waits already".to_string()
    } else {
        format!("unfinished executions: {}", parts.join(", "))
    })
}

/// Records why and by whom a run was asked for, in the transaction that created it (the
/// creation SQL is shared with the dispatcher's batches and stays as it is).
pub(crate) async fn annotate<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    id: i64,
    reason: Option<&str>,
    requested_by: Option<&str>,
) -> Result<(), DbErr> {
    if reason.is_none() && requested_by.is_none() {
        return Ok(());
    }
    let mut q = Sql::new(dialect);
    q.push("UPDATE job_executions SET reason = ")
        .bind(reason.map(str::to_string))
        .push(", requested_by = ")
        .bind(requested_by.map(str::to_string))
        .push(" WHERE id = ")
        .bind(id);
    db.execute(q.build()).await?;
    Ok(())
}

/// The outcome of an operator action on one execution.
#[derive(Debug, Clone, PartialEq)]
pub enum Action<T> {
    Done(T),
    NotFound,
    /// The execution is in a state the action does not apply to.
    WrongState(Status),
    /// Its cron does not allow overlap and has an unfinished execution; the message says so.
    Overlap(String),
}

impl Store {
    /// Creates an execution of `handler_name` that is not tied to a cron (`param_source`
    /// `api`), eligible at `run_at` (default: now, by the database clock).
    pub async fn create_adhoc(
        &self,
        handler_name: &str,
        params: Option<serde_json::Value>,
        run_at: Option<DateTime<Utc>>,
        max_retry: i32,
        timeout_seconds: i32,
    ) -> StoreResult<job_execution::Model> {
        let at = match run_at {
            Some(t) => t,
            None => self.now().await?,
        };
        let new = NewExecution {
            job_id: None,
            handler_name: handler_name.to_string(),
            scheduled_time: at,
            run_at: at,
            params,
            param_source: ParamSource::Api,
            max_retry,
            timeout_seconds,
        };
        match self.create_if_absent(&new).await? {
            Created::New(id) => self.created(id).await,
            // Ad-hoc rows have no cron, and NULL never collides in the unique key.
            other => Err(StoreError::Invalid(format!(
                "an ad-hoc execution was not created ({other:?})"
            ))),
        }
    }

    /// Runs a cron now, outside its schedule, as it is set: [`Store::trigger_cron_with`]
    /// with no overrides.
    pub async fn trigger_cron(&self, cron: &cron_job::Model) -> StoreResult<job_execution::Model> {
        self.trigger_cron_with(cron, &Trigger::default()).await
    }

    /// Runs a cron now, outside its schedule (`param_source` `manual`), with its handler,
    /// retries and timeout, and its params unless `trigger.params` replaces them for this
    /// run. With `respect_overlap` the cron's overlap policy decides, under the cron's lock
    /// as for a fire time: the run is PENDING, or WAITING behind the unfinished one
    /// (`buffer_one`, `buffer_all`, `replace`), or refused with [`StoreError::Conflict`]
    /// saying why (`skip`, or `buffer_one` with one waiting already). Without, it runs beside
    /// whatever is unfinished. The reason and who asked are stored on the execution in the
    /// same transaction.
    pub async fn trigger_cron_with(
        &self,
        cron: &cron_job::Model,
        trigger: &Trigger,
    ) -> StoreResult<job_execution::Model> {
        let policy = cron
            .overlap_policy
            .parse::<OverlapPolicy>()
            .unwrap_or(OverlapPolicy::Skip);
        let exclusive = trigger.respect_overlap && policy.is_exclusive();
        for attempt in 0..TRIGGER_ATTEMPTS {
            let now = self.now().await?;
            let new = NewExecution {
                job_id: Some(cron.id),
                handler_name: cron.handler_name.clone(),
                scheduled_time: now,
                run_at: now,
                params: trigger
                    .params
                    .clone()
                    .or_else(|| cron.handler_params.clone()),
                param_source: ParamSource::Manual,
                max_retry: cron.max_retry,
                timeout_seconds: cron.timeout_seconds,
            };
            let run = || async {
                let txn = self.db.begin().await?;
                let created = if exclusive {
                    lock_cron(&txn, self.dialect, cron.id).await?;
                    let busy = unfinished_of(&txn, self.dialect, cron.id).await?;
                    match create_locked(&txn, self.dialect, &new, cron.id, policy, false).await? {
                        Created::Overlap => Err(busy),
                        other => Ok(other),
                    }
                } else {
                    Ok(
                        match insert_as(&txn, self.dialect, &new, Status::Pending, false, None)
                            .await?
                        {
                            Some(id) => Created::New(id),
                            None => Created::Exists,
                        },
                    )
                };
                if let Ok(Created::New(id) | Created::Waiting(id)) = created {
                    annotate(
                        &txn,
                        self.dialect,
                        id,
                        trigger.reason.as_deref(),
                        trigger.requested_by.as_deref(),
                    )
                    .await?;
                }
                txn.commit().await?;
                Ok::<_, DbErr>(created)
            };
            match retry_transient(run).await? {
                Ok(Created::New(id)) => {
                    self.announce_due(now).await;
                    return self.created(id).await;
                }
                Ok(Created::Waiting(id)) => return self.created(id).await,
                Err(busy) => {
                    return Err(StoreError::Conflict(format!(
                        "cron {} has overlap policy {} and {}; run it with respect_overlap \
                         false to start it anyway",
                        cron.id, cron.overlap_policy, busy
                    )))
                }
                // Same instant as another row of this cron: take the next tick.
                Ok(_) => {
                    tokio::time::sleep(Duration::from_millis(2 << attempt)).await;
                }
            }
        }
        Err(StoreError::Conflict(format!(
            "cron {} was run at this instant already; try again",
            cron.id
        )))
    }

    async fn created(&self, id: i64) -> StoreResult<job_execution::Model> {
        self.execution(id).await?.ok_or_else(|| {
            StoreError::Invalid(format!(
                "execution {id} vanished right after it was created"
            ))
        })
    }

    /// FAILED, TIMEOUT or CANCELLED -> PENDING, eligible now, with a fresh retry budget
    /// (`retry_count` 0) and the previous outcome cleared. An execution of a cron with
    /// `allow_overlap = false` is not retried while the cron has a PENDING or RUNNING
    /// execution ([`Action::Overlap`]): the check runs under the same cron-row lock as
    /// [`Store::create_exclusive`], so a retry and a dispatcher cannot both start one.
    pub async fn retry_execution(&self, id: i64) -> StoreResult<Action<job_execution::Model>> {
        let run = || async {
            let txn = self.db.begin().await?;
            let Some(row) = job_execution::Entity::find_by_id(id).one(&txn).await? else {
                txn.rollback().await?;
                return Ok::<_, DbErr>(None);
            };
            let mut exclusive = false;
            if let Some(job_id) = row.job_id {
                let mut q = Sql::new(self.dialect);
                q.push("SELECT overlap_policy FROM cron_jobs WHERE id = ")
                    .bind(job_id)
                    .push(if self.dialect == Dialect::Sqlite {
                        ""
                    } else {
                        " FOR UPDATE"
                    });
                exclusive = match txn.query_one(q.build()).await? {
                    Some(r) => r
                        .try_get_by_index::<String>(0)?
                        .parse::<OverlapPolicy>()
                        .map_or(true, OverlapPolicy::is_exclusive),
                    None => false,
                };
                if exclusive && has_unfinished(&txn, self.dialect, job_id).await? {
                    txn.rollback().await?;
                    return Ok(Some(Err(job_id)));
                }
            }
            let mut q = Sql::new(self.dialect);
            q.push("UPDATE job_executions SET status = ")
                .status(Status::Pending)
                .push(", exclusive_run = ")
                .bind(exclusive)
                .push(", run_at = ")
                .now()
                .push(
                    ", retry_count = 0, started_at = NULL, finished_at = NULL, \
                     error_message = NULL, result = NULL, worker_id = NULL, owner_token = NULL, \
                     lease_expires_at = NULL, cancel_reason = NULL, cancel_requested = ",
                )
                .bind(false)
                .push(", updated_at = ")
                .now()
                .push(" WHERE id = ")
                .bind(id)
                .push(" AND status IN ")
                .bind_list(&RETRYABLE.map(Status::as_str));
            let changed = txn.execute(q.build()).await?.rows_affected() == 1;
            txn.commit().await?;
            Ok(Some(Ok(changed)))
        };
        match retry_transient(run).await? {
            None => Ok(Action::NotFound),
            Some(Err(job_id)) => Ok(Action::Overlap(format!(
                "cron {job_id} allows one execution at a time (overlap policy) and has one that \
                 is PENDING, RUNNING or WAITING"
            ))),
            Some(Ok(changed)) => {
                if changed {
                    self.announce_due(Utc::now()).await;
                }
                self.after_action(id, changed).await
            }
        }
    }

    /// PENDING or WAITING -> CANCELLED at once; RUNNING gets `cancel_requested`: its worker stops the
    /// attempt within a second and records CANCELLED, and every other way the attempt can
    /// end (failure, timeout, lost worker, shutdown release) records CANCELLED too. One
    /// statement, so it cannot fall between a worker's transitions. Final rows are refused.
    pub async fn cancel_execution(&self, id: i64) -> StoreResult<Action<job_execution::Model>> {
        let run = || async {
            let mut q = Sql::new(self.dialect);
            // `status` last: MySQL evaluates the assignments left to right.
            q.push("UPDATE job_executions SET cancel_requested = CASE WHEN status = ")
                .status(Status::Running)
                .push(" THEN ")
                .bind(true)
                .push(" ELSE cancel_requested END, finished_at = CASE WHEN status <> ")
                .status(Status::Running)
                .push(" THEN ")
                .now()
                .push(" ELSE finished_at END, error_message = CASE WHEN status <> ")
                .status(Status::Running)
                .push(" THEN ")
                .bind(CANCELLED_PENDING_MESSAGE)
                .push(" ELSE error_message END, cancel_reason = CASE WHEN status <> ")
                .status(Status::Running)
                .push(" THEN ")
                .bind(CancelReason::Operator.as_str())
                .push(" ELSE cancel_reason END, updated_at = ")
                .now()
                .push(", status = CASE WHEN status <> ")
                .status(Status::Running)
                .push(" THEN ")
                .status(Status::Cancelled)
                .push(" ELSE status END WHERE id = ")
                .bind(id)
                .push(" AND status IN ")
                .statuses(&[Status::Pending, Status::Running, Status::Waiting]);
            Ok::<_, DbErr>(self.db.execute(q.build()).await?.rows_affected() == 1)
        };
        let changed = retry_transient(run).await?;
        let action = self.after_action(id, changed).await?;
        // A cancelled exclusive execution lets its cron's next buffered fire time start.
        if let Action::Done(row) = &action {
            if let (true, Some(job_id)) = (row.exclusive_run, row.job_id) {
                if row.status != Status::Running.as_str() {
                    self.promote_waiting(&[job_id]).await?;
                }
            }
        }
        Ok(action)
    }

    /// Deletes an execution that is not RUNNING (cancel it first).
    pub async fn delete_execution(&self, id: i64) -> StoreResult<Action<()>> {
        let run = || async {
            let mut q = Sql::new(self.dialect);
            q.push("DELETE FROM job_executions WHERE id = ")
                .bind(id)
                .push(" AND status <> ")
                .status(Status::Running);
            Ok::<_, DbErr>(self.db.execute(q.build()).await?.rows_affected() == 1)
        };
        if retry_transient(run).await? {
            return Ok(Action::Done(()));
        }
        Ok(match self.action_refused::<()>(id).await? {
            Action::WrongState(s) => Action::WrongState(s),
            _ => Action::NotFound,
        })
    }

    async fn after_action(
        &self,
        id: i64,
        changed: bool,
    ) -> StoreResult<Action<job_execution::Model>> {
        if !changed {
            return self.action_refused(id).await;
        }
        Ok(match self.execution(id).await? {
            Some(row) => Action::Done(row),
            None => Action::NotFound,
        })
    }

    /// Why an action touched no row: the row is gone, or in this state.
    async fn action_refused<T>(&self, id: i64) -> StoreResult<Action<T>> {
        Ok(match self.execution(id).await? {
            None => Action::NotFound,
            Some(row) => Action::WrongState(row.status.parse().map_err(StoreError::Invalid)?),
        })
    }
}
