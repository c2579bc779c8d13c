//! Creation protocol: one execution per (cron, fire time), guaranteed by
//! `UNIQUE(job_id, scheduled_time)` and an insert that does nothing when the row exists.
//!
//! PostgreSQL and SQLite: `INSERT ... ON CONFLICT (job_id, scheduled_time) DO NOTHING
//! RETURNING id`; a returned row means new. MySQL/MariaDB: a plain INSERT whose duplicate-key
//! error means "exists". (`INSERT IGNORE` would also swallow foreign-key and truncation
//! errors, and sqlx's found-rows flag makes `ON DUPLICATE KEY UPDATE` report 1 row for a
//! duplicate, so neither can tell new from existing.)
//!
//! Crons with `allow_overlap = false` use [`Store::create_exclusive`]: the same insert, also
//! conditioned on the cron having no PENDING or RUNNING execution, under a lock on the cron
//! row, so racing dispatchers never leave two unfinished executions of one cron.
//!
//! A cron's row that exists only because it was created ahead and then cancelled when the
//! cron was disabled or deleted ([`CancelReason::Unscheduled`]) does not count as created:
//! when the cron fires that time after all (re-enabled within the lookahead), the row is
//! re-armed to PENDING with the cron's current handler and params by a conditional UPDATE,
//! so racing dispatchers re-arm it once.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult, TransactionTrait};

use super::dialect::{is_unique_violation, Dialect, Sql};
use super::{retry_transient, Store, StoreError, StoreResult};
use crate::entities::job_execution::{CancelReason, ParamSource, Status};

/// An execution to create.
#[derive(Debug, Clone)]
pub struct NewExecution {
    /// `None` for ad-hoc runs, which never collide.
    pub job_id: Option<i64>,
    pub handler_name: String,
    pub scheduled_time: DateTime<Utc>,
    /// When it may be claimed; usually the fire time.
    pub run_at: DateTime<Utc>,
    pub params: Option<serde_json::Value>,
    pub param_source: ParamSource,
    pub max_retry: i32,
    pub timeout_seconds: i32,
}

/// What create-if-absent did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// This call inserted the row with this id.
    New(i64),
    /// A row for this (job_id, scheduled_time) already existed.
    Exists,
    /// Not created: the cron forbids overlap and has a PENDING or RUNNING execution.
    Overlap,
}

impl Created {
    pub fn is_new(self) -> bool {
        matches!(self, Created::New(_))
    }
}

#[derive(FromQueryResult)]
struct IdRow {
    id: i64,
}

impl Store {
    /// Inserts the execution unless one exists for the same (job_id, scheduled_time).
    pub async fn create_if_absent(&self, new: &NewExecution) -> StoreResult<Created> {
        let run = || async {
            match insert(&self.db, self.dialect, new, false).await? {
                Created::Exists => rearm(&self.db, self.dialect, new).await,
                other => Ok(other),
            }
        };
        let created = retry_transient(run).await?;
        if created.is_new() {
            self.announce_due(new.run_at).await;
        }
        Ok(created)
    }

    /// Like [`Store::create_if_absent`] for a cron with `allow_overlap = false`: nothing is
    /// inserted while the cron has a PENDING or RUNNING execution ([`Created::Overlap`]).
    ///
    /// The check and the insert are one statement. On PostgreSQL and MySQL a transaction
    /// first locks the cron row, so dispatchers racing on one cron take turns and each sees
    /// the rows the previous one committed (PostgreSQL takes a fresh snapshot per statement;
    /// InnoDB's INSERT ... SELECT reads the latest committed rows). SQLite serialises
    /// writers, and a statement whose snapshot went stale fails with BUSY and is retried.
    pub async fn create_exclusive(&self, new: &NewExecution) -> StoreResult<Created> {
        let Some(job_id) = new.job_id else {
            return Err(StoreError::Invalid(
                "create_exclusive needs a cron (job_id)".into(),
            ));
        };
        let run = || async {
            // SQLite: the insert starts the write transaction, so the overlap check and the
            // re-arm after it are serialised with every other writer.
            let txn = self.db.begin().await?;
            if self.dialect != Dialect::Sqlite {
                let mut lock = Sql::new(self.dialect);
                lock.push("SELECT id FROM cron_jobs WHERE id = ")
                    .bind(job_id)
                    .push(" FOR UPDATE");
                txn.query_one(lock.build()).await?;
            }
            let created = match insert(&txn, self.dialect, new, true).await? {
                Created::Exists if has_unfinished(&txn, self.dialect, job_id).await? => {
                    Created::Exists
                }
                Created::Exists => rearm(&txn, self.dialect, new).await?,
                other => other,
            };
            txn.commit().await?;
            Ok(created)
        };
        let created = retry_transient(run).await?;
        if created.is_new() {
            self.announce_due(new.run_at).await;
        }
        Ok(created)
    }
}

/// Re-arms the row of (job_id, scheduled_time) if it was cancelled only because its cron
/// was disabled or deleted before the fire time: [`Created::New`] with its id, else
/// [`Created::Exists`]. Only the dispatcher's own rows (`param_source` `cron`) qualify.
async fn rearm<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    new: &NewExecution,
) -> Result<Created, DbErr> {
    let Some(job_id) = new.job_id else {
        return Ok(Created::Exists);
    };
    if new.param_source != ParamSource::Cron {
        return Ok(Created::Exists);
    }
    let mut q = Sql::new(dialect);
    q.push("UPDATE job_executions SET status = ")
        .bind(Status::Pending.as_str())
        .push(", handler_name = ")
        .bind(new.handler_name.clone())
        .push(", run_at = ")
        .bind(new.run_at)
        .push(", params = ")
        .bind(new.params.clone())
        .push(", max_retry = ")
        .bind(new.max_retry)
        .push(", timeout_seconds = ")
        .bind(new.timeout_seconds)
        .push(
            ", retry_count = 0, started_at = NULL, finished_at = NULL, error_message = NULL, \
             result = NULL, worker_id = NULL, owner_token = NULL, lease_expires_at = NULL, \
             cancel_reason = NULL, cancel_requested = ",
        )
        .bind(false)
        .push(", updated_at = ")
        .now()
        .push(" WHERE job_id = ")
        .bind(job_id)
        .push(" AND scheduled_time = ")
        .bind(new.scheduled_time)
        .push(" AND status = ")
        .bind(Status::Cancelled.as_str())
        .push(" AND cancel_reason = ")
        .bind(CancelReason::Unscheduled.as_str())
        .push(" AND param_source = ")
        .bind(ParamSource::Cron.as_str());
    if db.execute(q.build()).await?.rows_affected() != 1 {
        return Ok(Created::Exists);
    }
    let mut q = Sql::new(dialect);
    q.push("SELECT id FROM job_executions WHERE job_id = ")
        .bind(job_id)
        .push(" AND scheduled_time = ")
        .bind(new.scheduled_time);
    Ok(match IdRow::find_by_statement(q.build()).one(db).await? {
        Some(r) => Created::New(r.id),
        None => Created::Exists,
    })
}

/// Whether the cron has a PENDING or RUNNING execution.
pub(crate) async fn has_unfinished<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    job_id: i64,
) -> Result<bool, DbErr> {
    let mut q = Sql::new(dialect);
    q.push("SELECT id FROM job_executions WHERE job_id = ")
        .bind(job_id)
        .push(" AND status IN ")
        .bind_list(&[Status::Pending.as_str(), Status::Running.as_str()])
        .push(" LIMIT 1");
    Ok(IdRow::find_by_statement(q.build()).one(db).await?.is_some())
}

/// The insert-if-absent statement; with `exclusive`, also "if the cron has no unfinished
/// execution".
async fn insert<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    new: &NewExecution,
    exclusive: bool,
) -> Result<Created, DbErr> {
    let mut q = Sql::new(dialect);
    q.push(
        "INSERT INTO job_executions (job_id, handler_name, scheduled_time, run_at, status, \
         params, param_source, retry_count, max_retry, timeout_seconds, cancel_requested, \
         created_at, updated_at) ",
    )
    .push(if exclusive { "SELECT " } else { "VALUES (" })
    .bind(new.job_id)
    .push(", ")
    .bind(new.handler_name.clone())
    .push(", ")
    .bind(new.scheduled_time)
    .push(", ")
    .bind(new.run_at)
    .push(", ")
    .bind(Status::Pending.as_str())
    .push(", ")
    .bind(new.params.clone())
    .push(", ")
    .bind(new.param_source.as_str())
    .push(", 0, ")
    .bind(new.max_retry)
    .push(", ")
    .bind(new.timeout_seconds)
    .push(", ")
    .bind(false)
    .push(", ")
    .now()
    .push(", ")
    .now();
    if exclusive {
        if dialect == Dialect::MySql {
            q.push(" FROM DUAL");
        }
        q.push(" WHERE NOT EXISTS (SELECT 1 FROM job_executions WHERE job_id = ")
            .bind(new.job_id)
            .push(" AND status IN ")
            .bind_list(&[Status::Pending.as_str(), Status::Running.as_str()])
            .push(")");
    } else {
        q.push(")");
    }

    match dialect {
        Dialect::Postgres | Dialect::Sqlite => {
            // SQLite reads `SELECT ... ON` as a join unless the SELECT has a WHERE clause;
            // the exclusive form has one.
            q.push(" ON CONFLICT (job_id, scheduled_time) DO NOTHING RETURNING id");
            let row = IdRow::find_by_statement(q.build()).one(db).await?;
            Ok(match row {
                Some(r) => Created::New(r.id),
                None if exclusive => unfinished_or_exists(db, dialect, new).await?,
                None => Created::Exists,
            })
        }
        Dialect::MySql => match db.execute(q.build()).await {
            Ok(res) if res.rows_affected() == 1 => Ok(Created::New(res.last_insert_id() as i64)),
            Ok(_) => unfinished_or_exists(db, dialect, new).await,
            Err(e) if is_unique_violation(&e) => Ok(Created::Exists),
            Err(e) => Err(e),
        },
    }
}

/// After an exclusive insert wrote nothing: was the fire time already created, or did an
/// unfinished execution block it?
async fn unfinished_or_exists<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    new: &NewExecution,
) -> Result<Created, DbErr> {
    let mut q = Sql::new(dialect);
    q.push("SELECT id FROM job_executions WHERE job_id = ")
        .bind(new.job_id)
        .push(" AND scheduled_time = ")
        .bind(new.scheduled_time);
    let exists = IdRow::find_by_statement(q.build()).one(db).await?.is_some();
    Ok(if exists {
        Created::Exists
    } else {
        Created::Overlap
    })
}
