//! Cron rows and the dispatcher's per-cron marker. The marker (`next_fire_time`) is advanced
//! with a conditional update that names the value it expects, so when several dispatchers
//! race only one moves it; the unique key of the creation protocol stays the guarantee.
//!
//! The dispatcher works in pages ([`Store::dispatch_due`]): one transaction locks due crons
//! that no other dispatcher holds (`FOR UPDATE SKIP LOCKED` by id; PostgreSQL's `FOR NO KEY
//! UPDATE`, which does not block the foreign-key checks of inserts; SQLite serialises
//! writers), creates their executions in one batch, then moves their markers, a few
//! statements for the whole page (crons moving alike share one conditional UPDATE). Racing
//! dispatchers take disjoint pages, and one that dies mid-page rolls back and leaves its
//! crons to the others. [`Store::due_summary`] tells a dispatcher, in one query, when to
//! look next.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, FromQueryResult,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set, Statement, TransactionTrait,
};

use super::chains;
use super::create::{insert_many, Created, NewExecution};
use super::dialect::{is_transient, is_unique_violation, Dialect, Sql};
use super::fire_times::{self, LedgerRow};
use super::overlap::create_locked;
use super::{retry_transient, settle, Store, StoreError, StoreResult, TRANSIENT_RETRIES};
use crate::entities::cron_job::{self, MisfirePolicy, OverlapPolicy};
use crate::entities::job_execution::{CancelReason, ParamSource, Status};
use crate::schedule::{check_jitter, Schedule};

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
    pub overlap_policy: Option<OverlapPolicy>,
    pub max_retry: Option<i32>,
    pub timeout_seconds: Option<i32>,
    pub misfire_policy: Option<MisfirePolicy>,
    /// `Some(vec![])` clears them.
    pub excluded_dates: Option<Vec<NaiveDate>>,
    pub jitter_seconds: Option<u32>,
    /// The whole list; `Some(vec![])` clears it.
    pub on_success: Option<Vec<i64>>,
    pub on_failure: Option<Vec<i64>>,
    /// Why the cron is paused: kept with a pause (this change or an earlier one).
    pub pause_note: Option<String>,
    /// Who makes the change: recorded as `paused_by` when it pauses the cron.
    pub actor: Option<String>,
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
    pub overlap_policy: OverlapPolicy,
    pub max_retry: i32,
    pub timeout_seconds: i32,
    pub misfire_policy: MisfirePolicy,
    pub excluded_dates: Vec<NaiveDate>,
    pub jitter_seconds: u32,
    pub on_success: Vec<i64>,
    pub on_failure: Vec<i64>,
    /// With `is_enabled: false`: why it is paused, and by whom.
    pub pause_note: Option<String>,
    pub actor: Option<String>,
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
            overlap_policy: OverlapPolicy::Allow,
            max_retry: 3,
            timeout_seconds: 300,
            misfire_policy: MisfirePolicy::Latest,
            excluded_dates: Vec::new(),
            jitter_seconds: 0,
            on_success: Vec::new(),
            on_failure: Vec::new(),
            pause_note: None,
            actor: None,
        }
    }
}

impl Store {
    /// Inserts a cron after checking its expression, time zone and chains (every cron
    /// they name must exist).
    pub async fn insert_cron(&self, new: &NewCron) -> StoreResult<cron_job::Model> {
        Schedule::parse(&new.cron_expression, &new.timezone)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        check_jitter(new.jitter_seconds).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let on_success = chains::normalise("on_success", &new.on_success)?;
        let on_failure = chains::normalise("on_failure", &new.on_failure)?;
        let has_chains = !(on_success.is_empty() && on_failure.is_empty());
        let now = if has_chains || !new.is_enabled {
            Some(self.now().await?)
        } else {
            None
        };
        let paused = !new.is_enabled;
        let model = cron_job::ActiveModel {
            on_success: Set(chains::ids_json(&on_success)),
            on_failure: Set(chains::ids_json(&on_failure)),
            chains_since: Set(now.filter(|_| has_chains)),
            pause_note: Set(new.pause_note.clone().filter(|_| paused)),
            paused_at: Set(now.filter(|_| paused)),
            paused_by: Set(new.actor.clone().filter(|_| paused)),
            name: Set(new.name.clone()),
            description: Set(new.description.clone()),
            cron_expression: Set(new.cron_expression.clone()),
            timezone: Set(new.timezone.clone()),
            handler_name: Set(new.handler_name.clone()),
            handler_params: Set(new.handler_params.clone()),
            is_enabled: Set(new.is_enabled),
            overlap_policy: Set(new.overlap_policy.as_str().to_string()),
            max_retry: Set(new.max_retry),
            timeout_seconds: Set(new.timeout_seconds),
            misfire_policy: Set(new.misfire_policy.as_str().to_string()),
            excluded_dates: Set(dates_json(&new.excluded_dates)),
            jitter_seconds: Set(new.jitter_seconds as i32),
            next_fire_time: Set(None),
            last_fire_time: Set(None),
            // created_at/updated_at come from the column defaults: the database clock.
            ..Default::default()
        };
        let run = || async {
            let txn = self.db.begin().await?;
            if let Err(refused) =
                chains::check(&txn, self.dialect, None, &on_success, &on_failure).await?
            {
                txn.rollback().await?;
                return Ok(Err(refused));
            }
            let inserted = model.clone().insert(&txn).await?;
            txn.commit().await?;
            Ok(Ok(inserted))
        };
        retry_transient(run)
            .await
            .map_err(|e| name_conflict(e, &new.name))?
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
        if let Some(jitter) = changes.jitter_seconds {
            check_jitter(jitter).map_err(|e| StoreError::Invalid(e.to_string()))?;
        }
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
            max_retry,
            timeout_seconds
        );
        if let Some(policy) = changes.misfire_policy {
            model.misfire_policy = Set(policy.as_str().to_string());
        }
        if let Some(policy) = changes.overlap_policy {
            model.overlap_policy = Set(policy.as_str().to_string());
        }
        if let Some(dates) = &changes.excluded_dates {
            model.excluded_dates = Set(dates_json(dates));
        }
        if let Some(jitter) = changes.jitter_seconds {
            model.jitter_seconds = Set(jitter as i32);
        }
        if reschedule {
            model.next_fire_time = Set(None);
        }
        let now = self.now().await?;
        model.updated_at = Set(now);
        // A pause records its note, when and by whom; enabling clears them.
        let enabled = changes.is_enabled.unwrap_or(current.is_enabled);
        if !enabled {
            if current.is_enabled {
                model.paused_at = Set(Some(now));
                model.paused_by = Set(changes.actor.clone());
                model.pause_note = Set(changes.pause_note.clone());
            } else if changes.pause_note.is_some() {
                model.pause_note = Set(changes.pause_note.clone());
            }
        } else if !current.is_enabled {
            model.paused_at = Set(None);
            model.paused_by = Set(None);
            model.pause_note = Set(None);
        }
        let on_success = match &changes.on_success {
            Some(ids) => chains::normalise("on_success", ids)?,
            None => chains::stored_ids(current.on_success.as_ref()),
        };
        let on_failure = match &changes.on_failure {
            Some(ids) => chains::normalise("on_failure", ids)?,
            None => chains::stored_ids(current.on_failure.as_ref()),
        };
        let chains_change = changes.on_success.is_some() || changes.on_failure.is_some();
        if chains_change {
            let has_chains = !(on_success.is_empty() && on_failure.is_empty());
            model.on_success = Set(chains::ids_json(&on_success));
            model.on_failure = Set(chains::ids_json(&on_failure));
            // Executions that ended before the cron had chains start none.
            model.chains_since = Set(match (has_chains, current.chains_since) {
                (false, _) => None,
                (true, Some(since)) => Some(since),
                (true, None) => Some(now),
            });
        }
        let name = changes.name.as_deref().unwrap_or(&current.name);
        // The cron change and the cancel of what it unschedules commit together: a failure
        // means nothing changed, never "failed" for a change that committed.
        let run = || async {
            let txn = self.db.begin().await?;
            if chains_change {
                if let Err(refused) = chains::check(
                    &txn,
                    self.dialect,
                    Some(current.id),
                    &on_success,
                    &on_failure,
                )
                .await?
                {
                    txn.rollback().await?;
                    return Ok(Err(refused));
                }
            }
            let updated = match model.clone().update(&txn).await {
                Ok(updated) => updated,
                Err(DbErr::RecordNotUpdated) => {
                    txn.rollback().await?;
                    return Ok(Ok(None));
                }
                Err(e) => return Err(e),
            };
            if !updated.is_enabled {
                cancel_unscheduled_in(&txn, self.dialect, Some(updated.id)).await?;
            }
            txn.commit().await?;
            Ok(Ok(Some(updated)))
        };
        retry_transient(run)
            .await
            .map_err(|e| name_conflict(e, name))?
    }

    /// Deletes a cron; its executions stay, with `job_id` NULL, and those created ahead of
    /// their fire time are cancelled in the same transaction. `false` when there was no such
    /// cron.
    pub async fn delete_cron(&self, id: i64) -> StoreResult<bool> {
        let run = || async {
            let txn = self.db.begin().await?;
            // Before the delete: afterwards the foreign key has set their job_id to NULL.
            cancel_unscheduled_in(&txn, self.dialect, Some(id)).await?;
            // Buffered fire times would wait for a cron that no longer exists.
            cancel_waiting_in(&txn, self.dialect, id).await?;
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

/// A cron as a dispatch page reads it: what planning and creation need, nothing more.
#[derive(Debug, Clone, FromQueryResult)]
pub struct DueCron {
    pub id: i64,
    pub name: String,
    pub cron_expression: String,
    pub timezone: String,
    pub handler_name: String,
    pub handler_params: Option<serde_json::Value>,
    pub overlap_policy: String,
    pub max_retry: i32,
    pub timeout_seconds: i32,
    pub misfire_policy: String,
    pub excluded_dates: Option<serde_json::Value>,
    pub jitter_seconds: i32,
    pub next_fire_time: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

const DUE_COLUMNS: &str = "id, name, cron_expression, timezone, handler_name, handler_params, \
     overlap_policy, max_retry, timeout_seconds, misfire_policy, excluded_dates, \
     jitter_seconds, next_fire_time, updated_at";

/// Which crons one page of a dispatch pass takes: enabled ones with an id above `after_id`
/// that have no marker or whose marker is due, at most `limit`, by id.
#[derive(Debug, Clone)]
pub struct DueQuery {
    pub after_id: i64,
    pub limit: u64,
    /// Crons whose overlap policy is `allow`: markers up to here are due (now + lookahead).
    pub horizon: DateTime<Utc>,
    /// The others: markers up to here (now; they are decided at their fire time).
    pub now: DateTime<Utc>,
}

/// Where a cron's marker goes after its step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MarkerMove {
    Keep,
    To(DateTime<Utc>),
    /// No marker: the cron is planned afresh from its `updated_at` next time (a dispatcher
    /// that cannot plan it, or a schedule without further fire times).
    Clear,
}

/// What a dispatcher decided for one cron of a page.
#[derive(Debug, Clone)]
pub struct CronStep {
    pub cron_id: i64,
    /// In order. Created by [`Store::create_many_if_absent`]'s batch (`allow`), or one by one
    /// under the overlap policy's rule ([`super::overlap`]).
    pub create: Vec<NewExecution>,
    pub policy: OverlapPolicy,
    /// Fire times that do not run (missed, excluded), written before `create`.
    pub ledger: Vec<LedgerRow>,
    pub marker: MarkerMove,
}

/// What a step did.
#[derive(Debug, Clone)]
pub struct StepDone {
    pub cron_id: i64,
    /// Per execution of the step's `create`, in order.
    pub created: Vec<(DateTime<Utc>, Created)>,
    /// The step's ledger rows, and per row whether it was written (false: the fire time
    /// had a decision already).
    pub ledger: Vec<LedgerRow>,
    pub recorded: Vec<bool>,
    /// The marker moved as asked (false for `Keep`, or a marker no longer as read).
    pub marker_moved: bool,
}

/// One committed page.
#[derive(Debug)]
pub struct DuePage<T> {
    /// Crons the page locked: fewer than the limit when it reached the last id.
    pub claimed: usize,
    /// The id of the last cron decided on, where the next page starts.
    pub last_id: Option<i64>,
    /// One per cron decided on (a prefix of the claimed ones), with the planner's note.
    pub steps: Vec<(StepDone, T)>,
}

/// When the next crons are due, for a dispatcher's sleep.
#[derive(Debug, Clone)]
pub struct DueSummary {
    /// The database clock.
    pub now: DateTime<Utc>,
    /// The earliest marker of an enabled cron whose overlap policy is `allow`.
    pub next_overlap: Option<DateTime<Utc>>,
    /// The earliest marker of an enabled cron with another policy.
    pub next_exclusive: Option<DateTime<Utc>>,
    /// Enabled crons without a marker (new, edited, enabled again, or not plannable).
    pub unmarked: i64,
    /// Enabled crons with policy `allow` whose marker is at most `within` seconds ahead:
    /// the load the lookahead must make room for.
    pub due_soon: i64,
}

#[derive(FromQueryResult)]
struct SummaryRow {
    now: DateTime<Utc>,
    next_overlap: Option<DateTime<Utc>>,
    next_exclusive: Option<DateTime<Utc>>,
    unmarked: i64,
    due_soon: i64,
}

#[derive(FromQueryResult)]
struct MarkerRow {
    id: i64,
    next_fire_time: Option<DateTime<Utc>>,
}

/// Crons whose markers move alike: (marker read, where to, last fire time created).
type MarkerGroup = (Option<DateTime<Utc>>, MarkerMove, Option<DateTime<Utc>>);

/// Crons per marker UPDATE (ids bound in an IN list).
const MARKER_CHUNK: usize = 1000;

/// PostgreSQL ends the transaction of a page whose dispatcher has sent nothing for this long
/// (milliseconds), so one cut off from the server mid-page does not hold its crons until
/// the connection times out. Planning a page takes milliseconds.
const IDLE_IN_PAGE_MS: u64 = 10_000;

impl Store {
    /// When the next enabled crons are due (see [`DueSummary`]), in one query.
    pub async fn due_summary(&self, within_seconds: f64) -> StoreResult<DueSummary> {
        let mut q = Sql::new(self.dialect);
        q.push("SELECT ")
            .now()
            .push(" AS now, MIN(CASE WHEN overlap_policy = ")
            .bind(OverlapPolicy::Allow.as_str())
            .push(" THEN next_fire_time END) AS next_overlap, MIN(CASE WHEN overlap_policy <> ")
            .bind(OverlapPolicy::Allow.as_str())
            .push(
                " THEN next_fire_time END) AS next_exclusive, \
                 COUNT(CASE WHEN next_fire_time IS NULL THEN 1 END) AS unmarked, \
                 COUNT(CASE WHEN overlap_policy = ",
            )
            .bind(OverlapPolicy::Allow.as_str())
            .push(" AND next_fire_time <= ")
            .now_plus(within_seconds)
            .push(" THEN 1 END) AS due_soon FROM cron_jobs WHERE is_enabled = ")
            .bind(true);
        let row = SummaryRow::find_by_statement(q.build())
            .one(&self.db)
            .await?
            .ok_or_else(|| StoreError::Invalid("the database returned no summary".into()))?;
        Ok(DueSummary {
            now: row.now,
            next_overlap: row.next_overlap,
            next_exclusive: row.next_exclusive,
            unmarked: row.unmarked,
            due_soon: row.due_soon,
        })
    }

    /// One page of a dispatch pass, in one transaction: locks the due crons of `due` that no
    /// other dispatcher holds (`FOR UPDATE SKIP LOCKED`; SQLite serialises writers instead),
    /// asks `plan` what to do with them, creates the executions, moves the markers and
    /// commits. So dispatchers running at once take disjoint pages and share the work, a
    /// dispatcher that dies mid-page leaves its crons as they were (its transaction rolls
    /// back and the others take them), and a marker never moves without its rows.
    ///
    /// `plan` decides on a prefix of the crons it is given (at least one), one step each in
    /// order, and adds a note of its own to each; it may be called again if the page is
    /// retried after a deadlock or a busy SQLite file. Creation is insert-if-absent
    /// ([`Store::create_many_if_absent`]'s batch, or [`Store::create_exclusive`]'s rule for
    /// exclusive steps, the lock already held), and a marker moves by conditional update
    /// from the value read, after the rows are in.
    pub async fn dispatch_due<T, F>(&self, due: &DueQuery, mut plan: F) -> StoreResult<DuePage<T>>
    where
        F: FnMut(&[DueCron]) -> Vec<(CronStep, T)>,
    {
        let mut attempt = 0;
        loop {
            match self.dispatch_page(due, &mut plan).await {
                Err(StoreError::Db(e)) if attempt < TRANSIENT_RETRIES && is_transient(&e) => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "transient database error, retrying the page");
                    let pause = 5u64 * (1 << attempt.min(6)) + rand::random_range(0..10u64);
                    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                }
                other => return other,
            }
        }
    }

    async fn dispatch_page<T, F>(&self, due: &DueQuery, plan: &mut F) -> StoreResult<DuePage<T>>
    where
        F: FnMut(&[DueCron]) -> Vec<(CronStep, T)>,
    {
        let dialect = self.dialect;
        let txn = self.db.begin().await?;
        // Everything up to the commit in one block, so that every way out of it ends the
        // transaction at once (see `settle`): a dropped one would hold the page's crons.
        let outcome: StoreResult<(DuePage<T>, Option<DateTime<Utc>>)> = async {
            // Counted statements (prepared), as the page's others are.
            let first = match dialect {
                // Take the write lock first (a write that changes nothing), as BEGIN IMMEDIATE
                // would: the page then reads the latest rows and cannot fail later on a stale
                // snapshot because another dispatcher wrote meanwhile.
                Dialect::Sqlite => Some("UPDATE cron_jobs SET id = id WHERE id < 0".to_string()),
                // A dispatcher cut off from the server must not hold its page for long.
                Dialect::Postgres => Some(format!(
                    "SET LOCAL idle_in_transaction_session_timeout = {IDLE_IN_PAGE_MS}"
                )),
                Dialect::MySql => None,
            };
            if let Some(sql) = first {
                txn.execute(Statement::from_string(dialect.backend(), sql))
                    .await?;
            }
            let mut q = Sql::new(dialect);
            q.push("SELECT ")
                .push(DUE_COLUMNS)
                .push(" FROM cron_jobs WHERE is_enabled = ")
                .bind(true)
                .push(" AND id > ")
                .bind(due.after_id)
                .push(" AND (next_fire_time IS NULL OR next_fire_time <= ")
                .bind(due.now)
                .push(" OR (overlap_policy = ")
                .bind(OverlapPolicy::Allow.as_str())
                .push(" AND next_fire_time <= ")
                .bind(due.horizon)
                .push(")) ORDER BY id LIMIT ")
                .push(&due.limit.to_string())
                .push(match dialect {
                    Dialect::Postgres => " FOR NO KEY UPDATE SKIP LOCKED",
                    Dialect::MySql => " FOR UPDATE SKIP LOCKED",
                    Dialect::Sqlite => "",
                });
            let crons = DueCron::find_by_statement(q.build()).all(&txn).await?;
            if crons.is_empty() {
                let empty = DuePage {
                    claimed: 0,
                    last_id: None,
                    steps: Vec::new(),
                };
                return Ok((empty, None));
            }
            let planned = plan(&crons);
            if planned.is_empty()
                || planned.len() > crons.len()
                || planned
                    .iter()
                    .zip(&crons)
                    .any(|((s, _), c)| s.cron_id != c.id)
            {
                return Err(StoreError::Invalid(
                    "a dispatch plan must decide on a prefix of its crons, in order".into(),
                ));
            }
            let by_id: HashMap<i64, &DueCron> = crons.iter().map(|c| (c.id, c)).collect();

            // The ledger rows (missed, excluded fire times) first, then the runs: one batch for
            // the crons that allow overlap...
            let mut recorded: Vec<Vec<bool>> = Vec::with_capacity(planned.len());
            for (step, _) in &planned {
                let mut written = Vec::with_capacity(step.ledger.len());
                for row in &step.ledger {
                    written.push(fire_times::record(&txn, dialect, row).await?);
                }
                recorded.push(written);
            }
            let batch: Vec<NewExecution> = planned
                .iter()
                .filter(|(s, _)| !s.policy.is_exclusive())
                .flat_map(|(s, _)| s.create.iter().cloned())
                .collect();
            let mut batch_created = insert_many(&txn, dialect, &batch).await?.into_iter();
            let mut steps = Vec::with_capacity(planned.len());
            for ((step, note), recorded) in planned.into_iter().zip(recorded) {
                let mut created = Vec::with_capacity(step.create.len());
                for new in &step.create {
                    // ...and one by one, in fire-time order, under the cron's policy (the page
                    // holds the cron's lock).
                    let outcome = if step.policy.is_exclusive() {
                        create_locked(&txn, dialect, new, step.cron_id, step.policy, true).await?
                    } else {
                        batch_created.next().unwrap_or(Created::Exists)
                    };
                    created.push((new.scheduled_time, outcome));
                }
                steps.push((step, created, recorded, note));
            }

            // ...then the markers, grouped by (marker read, marker to, last fire time).
            let mut groups: HashMap<MarkerGroup, Vec<i64>> = HashMap::new();
            for (step, created, _, _) in &steps {
                let read = by_id.get(&step.cron_id).and_then(|c| c.next_fire_time);
                let last = created
                    .iter()
                    .filter(|(_, c)| *c != Created::Overlap)
                    .map(|(t, _)| *t)
                    .max();
                let unchanged_ledger = step.ledger.is_empty();
                let unchanged = match step.marker {
                    MarkerMove::Keep => true,
                    MarkerMove::Clear => read.is_none(),
                    MarkerMove::To(t) => read == Some(t) && last.is_none() && unchanged_ledger,
                };
                if !unchanged {
                    groups
                        .entry((read, step.marker, last))
                        .or_default()
                        .push(step.cron_id);
                }
            }
            let mut moved: HashSet<i64> = HashSet::new();
            for ((read, to, last), ids) in groups {
                for chunk in ids.chunks(MARKER_CHUNK) {
                    let target = match to {
                        MarkerMove::To(t) => Some(t),
                        _ => None,
                    };
                    let mut q = Sql::new(dialect);
                    q.push("UPDATE cron_jobs SET next_fire_time = ")
                        .bind(target);
                    if let Some(last) = last {
                        q.push(", last_fire_time = ").bind(last);
                    }
                    q.push(" WHERE id IN ")
                        .bind_list(chunk)
                        .push(" AND next_fire_time ")
                        .push(dialect.null_safe_eq())
                        .push(" ")
                        .bind(read);
                    let hit = txn.execute(q.build()).await?.rows_affected();
                    if hit == chunk.len() as u64 {
                        moved.extend(chunk.iter().copied());
                    } else {
                        // Not reached while the page holds its crons; should it be, find out
                        // which markers moved rather than report them all.
                        let mut q = Sql::new(dialect);
                        q.push("SELECT id, next_fire_time FROM cron_jobs WHERE id IN ")
                            .bind_list(chunk);
                        for row in MarkerRow::find_by_statement(q.build()).all(&txn).await? {
                            if row.next_fire_time == target {
                                moved.insert(row.id);
                            }
                        }
                    }
                }
            }
            let first_new = steps
                .iter()
                .flat_map(|(step, created, _, _)| step.create.iter().zip(created))
                .filter(|(_, (_, c))| c.is_new())
                .map(|(new, _)| new.run_at)
                .min();
            let last_id = steps.last().map(|(s, _, _, _)| s.cron_id);
            let page = DuePage {
                claimed: crons.len(),
                last_id,
                steps: steps
                    .into_iter()
                    .map(|(step, created, recorded, note)| {
                        let marker_moved =
                            step.marker != MarkerMove::Keep && moved.contains(&step.cron_id);
                        (
                            StepDone {
                                cron_id: step.cron_id,
                                created,
                                ledger: step.ledger,
                                recorded,
                                marker_moved,
                            },
                            note,
                        )
                    })
                    .collect(),
            };
            Ok((page, first_new))
        }
        .await;
        let (page, first_new) = settle(txn, outcome).await?;
        if let Some(run_at) = first_new {
            self.announce_due(run_at).await;
        }
        Ok(page)
    }
}

/// The unscheduling cancel: PENDING cron executions whose fire time has not come, of one
/// cron (`Some`, which the caller has just disabled or is deleting) or of every cron that
/// is disabled or gone (`None`). They are marked [`CancelReason::Unscheduled`] so the
/// creation protocol re-arms one if its cron fires that time after all.
pub(crate) async fn cancel_unscheduled_in<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    cron: Option<i64>,
) -> Result<u64, DbErr> {
    let mut q = Sql::new(dialect);
    q.push("UPDATE job_executions SET status = ")
        .status(Status::Cancelled)
        .push(", finished_at = ")
        .now()
        .push(", updated_at = ")
        .now()
        .push(", error_message = ")
        .bind(UNSCHEDULED_MESSAGE)
        .push(", cancel_reason = ")
        .bind(CancelReason::Unscheduled.as_str())
        .push(" WHERE status = ")
        .status(Status::Pending)
        .push(" AND run_at > ")
        .now()
        // A retry waiting out its backoff belongs to a fire time that came: disabling the
        // cron stops fire times to come, not work already started.
        .push(" AND retry_count = 0 AND param_source = ")
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

/// Excluded dates as stored: a JSON array of `YYYY-MM-DD`, `None` for none.
fn dates_json(dates: &[NaiveDate]) -> Option<serde_json::Value> {
    if dates.is_empty() {
        return None;
    }
    let mut sorted = dates.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    Some(serde_json::Value::Array(
        sorted
            .iter()
            .map(|d| serde_json::Value::String(d.format("%Y-%m-%d").to_string()))
            .collect(),
    ))
}

/// The excluded dates of a stored cron (entries that do not parse are ignored; the API
/// writes only valid ones).
pub fn stored_dates(value: Option<&serde_json::Value>) -> Vec<NaiveDate> {
    value
        .and_then(|v| v.as_array())
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.as_str())
                .filter_map(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A deleted cron's WAITING executions are cancelled: nothing would ever start them.
async fn cancel_waiting_in<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    cron: i64,
) -> Result<u64, DbErr> {
    let mut q = Sql::new(dialect);
    q.push("UPDATE job_executions SET status = ")
        .status(Status::Cancelled)
        .push(", finished_at = ")
        .now()
        .push(", updated_at = ")
        .now()
        .push(", error_message = ")
        .bind("cancelled while waiting behind an unfinished run: the cron was deleted")
        .push(", cancel_reason = ")
        .bind(CancelReason::Operator.as_str())
        .push(" WHERE job_id = ")
        .bind(cron)
        .push(" AND status = ")
        .status(Status::Waiting);
    Ok(db.execute(q.build()).await?.rows_affected())
}
