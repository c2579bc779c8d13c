//! Cron rows and the dispatcher's per-cron marker. The marker (`next_fire_time`) is advanced
//! with a conditional update that names the value it expects, so when several dispatchers
//! race only one moves it; the unique key of the creation protocol stays the guarantee.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};

use super::dialect::{is_unique_violation, Dialect, Sql};
use super::{retry_transient, Store, StoreError, StoreResult};
use crate::entities::cron_job::{self, MisfirePolicy};
use crate::entities::job_execution::{CancelReason, ParamSource, Status};
use crate::schedule::Schedule;

/// The error message of executions cancelled by [`Store::cancel_unscheduled`].
pub const UNSCHEDULED_MESSAGE: &str =
    "cancelled before its fire time: the cron was disabled or deleted";

/// Changes to a cron; `None` leaves a field as it is. `description` and `handler_params`
/// take `Some(None)` to clear them.
#[derive(Debug, Clone, Default)]
pub struct CronChanges {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub cron_expression: Option<String>,
    pub timezone: Option<String>,
    pub handler_name: Option<String>,
    pub handler_params: Option<Option<serde_json::Value>>,
    pub is_enabled: Option<bool>,
    pub allow_overlap: Option<bool>,
    pub max_retry: Option<i32>,
    pub timeout_seconds: Option<i32>,
    pub misfire_policy: Option<MisfirePolicy>,
}

/// A cron name is taken: the message operators see.
fn duplicate_name(name: &str) -> StoreError {
    StoreError::Conflict(format!("a cron named {name:?} already exists"))
}

fn name_conflict(err: DbErr, name: &str) -> StoreError {
    if is_unique_violation(&err) {
        duplicate_name(name)
    } else {
        StoreError::Db(err)
    }
}

/// A cron to insert; the expression and zone are validated before anything is written.
#[derive(Debug, Clone)]
pub struct NewCron {
    pub name: String,
    pub description: Option<String>,
    pub cron_expression: String,
    pub timezone: String,
    pub handler_name: String,
    pub handler_params: Option<serde_json::Value>,
    pub is_enabled: bool,
    pub allow_overlap: bool,
    pub max_retry: i32,
    pub timeout_seconds: i32,
    pub misfire_policy: MisfirePolicy,
}

impl NewCron {
    /// A cron with the original defaults: enabled, overlap allowed, 3 retries, 300 s, UTC.
    pub fn new(name: &str, cron_expression: &str, handler_name: &str) -> NewCron {
        NewCron {
            name: name.to_string(),
            description: None,
            cron_expression: cron_expression.to_string(),
            timezone: "UTC".to_string(),
            handler_name: handler_name.to_string(),
            handler_params: None,
            is_enabled: true,
            allow_overlap: true,
            max_retry: 3,
            timeout_seconds: 300,
            misfire_policy: MisfirePolicy::Latest,
        }
    }
}

impl Store {
    /// Inserts a cron after checking its expression and time zone.
    pub async fn insert_cron(&self, new: &NewCron) -> StoreResult<cron_job::Model> {
        Schedule::parse(&new.cron_expression, &new.timezone)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let model = cron_job::ActiveModel {
            name: Set(new.name.clone()),
            description: Set(new.description.clone()),
            cron_expression: Set(new.cron_expression.clone()),
            timezone: Set(new.timezone.clone()),
            handler_name: Set(new.handler_name.clone()),
            handler_params: Set(new.handler_params.clone()),
            is_enabled: Set(new.is_enabled),
            allow_overlap: Set(new.allow_overlap),
            max_retry: Set(new.max_retry),
            timeout_seconds: Set(new.timeout_seconds),
            misfire_policy: Set(new.misfire_policy.as_str().to_string()),
            next_fire_time: Set(None),
            last_fire_time: Set(None),
            // created_at/updated_at come from the column defaults: the database clock.
            ..Default::default()
        };
        model
            .insert(&self.db)
            .await
            .map_err(|e| name_conflict(e, &new.name))
    }

    /// Applies `changes` to `current` (the cron as the caller read it); `None` when the cron
    /// was deleted meanwhile. A new expression or zone, or enabling a disabled cron, resets
    /// the dispatcher's marker, so the cron fires from its next fire time on instead of
    /// catching up on the time it was off or different.
    pub async fn update_cron(
        &self,
        current: cron_job::Model,
        changes: &CronChanges,
    ) -> StoreResult<Option<cron_job::Model>> {
        let expression = changes
            .cron_expression
            .as_deref()
            .unwrap_or(&current.cron_expression);
        let timezone = changes.timezone.as_deref().unwrap_or(&current.timezone);
        Schedule::parse(expression, timezone).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let reschedule = expression != current.cron_expression
            || timezone != current.timezone
            || (changes.is_enabled == Some(true) && !current.is_enabled);

        let mut model: cron_job::ActiveModel = current.clone().into();
        macro_rules! apply {
            ($($field:ident),*) => {$(
                if let Some(v) = &changes.$field {
                    model.$field = Set(v.clone());
                }
            )*};
        }
        apply!(
            name,
            description,
            cron_expression,
            timezone,
            handler_name,
            handler_params,
            is_enabled,
            allow_overlap,
            max_retry,
            timeout_seconds
        );
        if let Some(policy) = changes.misfire_policy {
            model.misfire_policy = Set(policy.as_str().to_string());
        }
        if reschedule {
            model.next_fire_time = Set(None);
        }
        model.updated_at = Set(self.now().await?);
        let name = changes.name.as_deref().unwrap_or(&current.name);
        // The cron change and the cancel of what it unschedules commit together: a failure
        // means nothing changed, never "failed" for a change that committed.
        let run = || async {
            let txn = self.db.begin().await?;
            let updated = match model.clone().update(&txn).await {
                Ok(updated) => updated,
                Err(DbErr::RecordNotUpdated) => {
                    txn.rollback().await?;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            if !updated.is_enabled {
                cancel_unscheduled_in(&txn, self.dialect, Some(updated.id)).await?;
            }
            txn.commit().await?;
            Ok(Some(updated))
        };
        retry_transient(run)
            .await
            .map_err(|e| name_conflict(e, name))
    }

    /// Deletes a cron; its executions stay, with `job_id` NULL, and those created ahead of
    /// their fire time are cancelled in the same transaction. `false` when there was no such
    /// cron.
    pub async fn delete_cron(&self, id: i64) -> StoreResult<bool> {
        let run = || async {
            let txn = self.db.begin().await?;
            // Before the delete: afterwards the foreign key has set their job_id to NULL.
            cancel_unscheduled_in(&txn, self.dialect, Some(id)).await?;
            let deleted = cron_job::Entity::delete_by_id(id)
                .exec(&txn)
                .await?
                .rows_affected
                == 1;
            if deleted {
                txn.commit().await?;
            } else {
                txn.rollback().await?;
            }
            Ok(deleted)
        };
        Ok(retry_transient(run).await?)
    }

    /// One page of crons by id, and how many match in all.
    pub async fn list_crons(
        &self,
        is_enabled: Option<bool>,
        offset: u64,
        limit: u64,
    ) -> StoreResult<(Vec<cron_job::Model>, u64)> {
        let mut query = cron_job::Entity::find();
        if let Some(enabled) = is_enabled {
            query = query.filter(cron_job::Column::IsEnabled.eq(enabled));
        }
        let total = query.clone().count(&self.db).await?;
        let items = query
            .order_by_asc(cron_job::Column::Id)
            .offset(offset)
            .limit(limit)
            .all(&self.db)
            .await?;
        Ok((items, total))
    }

    /// Enabled crons, by id.
    pub async fn enabled_crons(&self) -> StoreResult<Vec<cron_job::Model>> {
        Ok(cron_job::Entity::find()
            .filter(cron_job::Column::IsEnabled.eq(true))
            .order_by_asc(cron_job::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// Cancels PENDING executions created ahead (lookahead) for fire times that have not
    /// come yet, of crons that were disabled or deleted since. Returns how many.
    pub async fn cancel_unscheduled(&self) -> StoreResult<u64> {
        Ok(retry_transient(|| cancel_unscheduled_in(&self.db, self.dialect, None)).await?)
    }
    /// Reads one cron.
    pub async fn cron(&self, id: i64) -> StoreResult<Option<cron_job::Model>> {
        Ok(cron_job::Entity::find_by_id(id).one(&self.db).await?)
    }

    /// Moves a cron's marker from `expected` to `next` (and records `last_fire` when given).
    /// `false`: another dispatcher moved it first, or the cron is gone.
    pub async fn advance_marker(
        &self,
        cron_id: i64,
        expected: Option<DateTime<Utc>>,
        next: DateTime<Utc>,
        last_fire: Option<DateTime<Utc>>,
    ) -> StoreResult<bool> {
        let mut q = Sql::new(self.dialect);
        q.push("UPDATE cron_jobs SET next_fire_time = ").bind(next);
        if let Some(last) = last_fire {
            q.push(", last_fire_time = ").bind(last);
        }
        q.push(" WHERE id = ")
            .bind(cron_id)
            .push(" AND next_fire_time ")
            .push(self.dialect.null_safe_eq())
            .push(" ")
            .bind(expected);
        Ok(self.db.execute(q.build()).await?.rows_affected() == 1)
    }
}

/// The unscheduling cancel: PENDING cron executions whose fire time has not come, of one
/// cron (`Some`, which the caller has just disabled or is deleting) or of every cron that
/// is disabled or gone (`None`). They are marked [`CancelReason::Unscheduled`] so the
/// creation protocol re-arms one if its cron fires that time after all.
async fn cancel_unscheduled_in<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    cron: Option<i64>,
) -> Result<u64, DbErr> {
    let mut q = Sql::new(dialect);
    q.push("UPDATE job_executions SET status = ")
        .bind(Status::Cancelled.as_str())
        .push(", finished_at = ")
        .now()
        .push(", updated_at = ")
        .now()
        .push(", error_message = ")
        .bind(UNSCHEDULED_MESSAGE)
        .push(", cancel_reason = ")
        .bind(CancelReason::Unscheduled.as_str())
        .push(" WHERE status = ")
        .bind(Status::Pending.as_str())
        .push(" AND run_at > ")
        .now()
        .push(" AND param_source = ")
        .bind(ParamSource::Cron.as_str());
    match cron {
        Some(id) => q.push(" AND job_id = ").bind(id),
        None => q
            .push(" AND (job_id IS NULL OR job_id IN (SELECT id FROM cron_jobs WHERE is_enabled = ")
            .bind(false)
            .push("))"),
    };
    Ok(db.execute(q.build()).await?.rows_affected())
}
