//! Creation protocol: one execution per (cron, fire time), guaranteed by
//! `UNIQUE(job_id, scheduled_time)` and an insert that does nothing when the row exists.
//!
//! PostgreSQL and SQLite: `INSERT ... ON CONFLICT (job_id, scheduled_time) DO NOTHING
//! RETURNING id`; a returned row means new. MySQL/MariaDB: a plain INSERT whose duplicate-key
//! error means "exists". (`INSERT IGNORE` would also swallow foreign-key and truncation
//! errors, and sqlx's found-rows flag makes `ON DUPLICATE KEY UPDATE` report 1 row for a
//! duplicate, so neither can tell new from existing.)

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, FromQueryResult};

use super::dialect::{is_unique_violation, Dialect, Sql};
use super::{retry_transient, Store, StoreResult};
use crate::entities::job_execution::{ParamSource, Status};

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
        Ok(retry_transient(|| self.try_create(new)).await?)
    }

    async fn try_create(&self, new: &NewExecution) -> Result<Created, sea_orm::DbErr> {
        let mut q = Sql::new(self.dialect);
        q.push(
            "INSERT INTO job_executions (job_id, handler_name, scheduled_time, run_at, status, \
             params, param_source, retry_count, max_retry, timeout_seconds, cancel_requested, \
             created_at, updated_at) VALUES (",
        )
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
        .now()
        .push(")");

        match self.dialect {
            Dialect::Postgres | Dialect::Sqlite => {
                q.push(" ON CONFLICT (job_id, scheduled_time) DO NOTHING RETURNING id");
                let row = IdRow::find_by_statement(q.build()).one(&self.db).await?;
                Ok(row.map_or(Created::Exists, |r| Created::New(r.id)))
            }
            Dialect::MySql => match self.db.execute(q.build()).await {
                Ok(res) => Ok(Created::New(res.last_insert_id() as i64)),
                Err(e) if is_unique_violation(&e) => Ok(Created::Exists),
                Err(e) => Err(e),
            },
        }
    }
}
