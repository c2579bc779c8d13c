//! Creation protocol: one execution per (cron, fire time), guaranteed by
//! `UNIQUE(job_id, scheduled_time)` and an insert that does nothing when the row exists.
//!
//! PostgreSQL and SQLite: `INSERT ... ON CONFLICT (job_id, scheduled_time) WHERE job_id IS
//! NOT NULL DO NOTHING RETURNING id`; a returned row means new. MySQL/MariaDB: a plain
//! INSERT whose duplicate-key error means "exists". (`INSERT IGNORE` would also swallow
//! foreign-key and truncation errors, and sqlx's found-rows flag makes `ON DUPLICATE KEY
//! UPDATE` report 1 row for a duplicate, so neither can tell new from existing.)
//!
//! Many cron executions at once ([`Store::create_many_if_absent`], and the dispatcher's pages
//! in [`super::crons`]): one multi-row statement per chunk, the same rules per row. On
//! PostgreSQL and SQLite the statement is `INSERT ... VALUES (...), ... ON CONFLICT DO
//! NOTHING RETURNING` the new keys. On MySQL/MariaDB a duplicate aborts a multi-row INSERT
//! and `INSERT IGNORE` would hide other errors, so the chunk's existing keys are read first
//! and only the others inserted, by a plain INSERT that fails (and is redone) if another
//! creator raced in.
//!
//! Crons whose overlap policy is not `allow` are created under their policy's rule, under a
//! lock on the cron row ([`super::overlap`]), so racing dispatchers never leave two
//! unfinished executions of one cron.
//!
//! A cron's row that exists only because it was created ahead and then cancelled when the
//! cron was disabled or deleted ([`CancelReason::Unscheduled`]) does not count as created:
//! when the cron fires that time after all (re-enabled within the lookahead), the row is
//! re-armed to PENDING with the cron's current handler and params by a conditional UPDATE,
//! so racing dispatchers re-arm it once.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult, TransactionTrait};

use super::dialect::{is_unique_violation, Dialect, Sql};
use super::overlap::{create_locked, lock_cron};
use super::{retry_transient, Store, StoreError, StoreResult};
use crate::entities::cron_job::OverlapPolicy;
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
    /// Created WAITING with this id: buffered behind an unfinished execution of its cron.
    Waiting(i64),
    /// Not run: the cron's overlap policy skipped it (recorded SKIPPED by a dispatcher).
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
            match insert(&self.db, self.dialect, new).await? {
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

    /// Like [`Store::create_if_absent`] for a cron whose overlap policy is exclusive, run
    /// by an operator: nothing is inserted while the cron has a PENDING, RUNNING or WAITING
    /// execution ([`Created::Overlap`]); the row is created with `exclusive_run`. The check
    /// and the insert run under the cron row's lock ([`super::overlap`]).
    pub async fn create_exclusive(&self, new: &NewExecution) -> StoreResult<Created> {
        let Some(job_id) = new.job_id else {
            return Err(StoreError::Invalid(
                "create_exclusive needs a cron (job_id)".into(),
            ));
        };
        let run = || async {
            let txn = self.db.begin().await?;
            lock_cron(&txn, self.dialect, job_id).await?;
            let created =
                create_locked(&txn, self.dialect, new, job_id, OverlapPolicy::Skip, false).await?;
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

/// Rows per insert statement of [`Store::create_many_if_absent`]: ten bound values each,
/// well within every backend's limit on bound parameters (SQLite 32,766; PostgreSQL and
/// MySQL 65,535).
pub const CREATE_CHUNK: usize = 1000;

#[derive(FromQueryResult)]
struct KeyRow {
    id: i64,
    job_id: i64,
    scheduled_time: DateTime<Utc>,
}

type Key = (i64, DateTime<Utc>);

impl Store {
    /// [`Store::create_if_absent`] for many executions of crons at once: one insert statement
    /// per [`CREATE_CHUNK`] rows, each chunk in a transaction of its own, with the same
    /// insert-if-absent and re-arm rules. Every row needs a `job_id` (ad-hoc runs never
    /// collide: create them one by one). The answer is in the order of `new`; a row that
    /// repeats an earlier one of `new` is [`Created::Exists`].
    pub async fn create_many_if_absent(&self, new: &[NewExecution]) -> StoreResult<Vec<Created>> {
        if new.iter().any(|n| n.job_id.is_none()) {
            return Err(StoreError::Invalid(
                "create_many_if_absent needs a cron (job_id) on every row".into(),
            ));
        }
        let mut out = Vec::with_capacity(new.len());
        for chunk in new.chunks(CREATE_CHUNK) {
            let run = || async {
                let txn = self.db.begin().await?;
                let created = insert_many(&txn, self.dialect, chunk).await?;
                txn.commit().await?;
                Ok(created)
            };
            out.extend(retry_transient(run).await?);
        }
        let first_new = new
            .iter()
            .zip(&out)
            .filter(|(_, c)| c.is_new())
            .map(|(n, _)| n.run_at)
            .min();
        if let Some(run_at) = first_new {
            self.announce_due(run_at).await;
        }
        Ok(out)
    }
}

/// The batched insert-if-absent of [`Store::create_many_if_absent`] on `db` (a transaction
/// the caller commits), in chunks of [`CREATE_CHUNK`]. Rows without a `job_id` are refused
/// by the caller.
///
/// - PostgreSQL and SQLite: `INSERT ... VALUES (...), ... ON CONFLICT (job_id,
///   scheduled_time) WHERE job_id IS NOT NULL DO NOTHING RETURNING id, job_id,
///   scheduled_time`: the returned keys are new, the others existed.
/// - MySQL/MariaDB: a duplicate key aborts a multi-row INSERT, and `INSERT IGNORE` would also
///   turn foreign-key and truncation errors into warnings. So the keys that exist are read
///   first, the others inserted by a plain multi-row INSERT, and their ids read back by key.
///   A duplicate-key error means another creator committed one of them in between: the
///   statement is rolled back on its own (the transaction goes on) and the chunk is read
///   and inserted again.
///
/// Then rows that existed are re-armed if they were cancelled as `unscheduled` (see the
/// module comment): one query finds those, usually none, and each is re-armed by the same
/// conditional UPDATE as [`Store::create_if_absent`].
pub(crate) async fn insert_many<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    rows: &[NewExecution],
) -> Result<Vec<Created>, DbErr> {
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(CREATE_CHUNK) {
        out.extend(insert_chunk(db, dialect, chunk).await?);
    }
    Ok(out)
}

async fn insert_chunk<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    rows: &[NewExecution],
) -> Result<Vec<Created>, DbErr> {
    // The first row of each key; later repeats are reported as existing.
    let mut first: HashMap<Key, usize> = HashMap::with_capacity(rows.len());
    let mut unique = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let Some(job_id) = row.job_id else {
            return Err(DbErr::Custom("a batched execution needs a job_id".into()));
        };
        if let Entry::Vacant(e) = first.entry(row_key(job_id, row.scheduled_time)) {
            e.insert(i);
            unique.push(row);
        }
    }
    let mut ids: HashMap<Key, i64> = match dialect {
        Dialect::Postgres | Dialect::Sqlite => {
            let mut q = Sql::new(dialect);
            push_insert_values(&mut q, &unique);
            q.push(ON_FIRE_TIME_CONFLICT)
                .push(" RETURNING id, job_id, scheduled_time");
            KeyRow::find_by_statement(q.build())
                .all(db)
                .await?
                .into_iter()
                .map(|r| (row_key(r.job_id, r.scheduled_time), r.id))
                .collect()
        }
        Dialect::MySql => insert_absent_mysql(db, &unique).await?,
    };
    // Rows that existed: re-arm the ones cancelled only because their cron was off.
    let existing: Vec<&NewExecution> = unique
        .iter()
        .copied()
        .filter(|n| !ids.contains_key(&key(n)))
        .collect();
    if !existing.is_empty() {
        let mut q = Sql::new(dialect);
        q.push("SELECT id, job_id, scheduled_time FROM job_executions WHERE 1 = 1");
        push_rearmable(&mut q);
        push_key_filter(&mut q, &existing);
        let cancelled: HashSet<Key> = KeyRow::find_by_statement(q.build())
            .all(db)
            .await?
            .into_iter()
            .map(|r| row_key(r.job_id, r.scheduled_time))
            .collect();
        for new in existing {
            if cancelled.contains(&key(new)) {
                if let Created::New(id) = rearm(db, dialect, new).await? {
                    ids.insert(key(new), id);
                }
            }
        }
    }
    Ok(rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let k = key(row);
            match ids.get(&k) {
                Some(id) if first.get(&k) == Some(&i) => Created::New(*id),
                _ => Created::Exists,
            }
        })
        .collect())
}

/// MySQL/MariaDB: inserts the rows of `unique` whose key is absent; the new keys and ids.
async fn insert_absent_mysql<C: ConnectionTrait>(
    db: &C,
    unique: &[&NewExecution],
) -> Result<HashMap<Key, i64>, DbErr> {
    let dialect = Dialect::MySql;
    let mut attempt = 0;
    loop {
        let mut q = Sql::new(dialect);
        q.push("SELECT id, job_id, scheduled_time FROM job_executions WHERE 1 = 1");
        push_key_filter(&mut q, unique);
        let present: HashSet<Key> = KeyRow::find_by_statement(q.build())
            .all(db)
            .await?
            .into_iter()
            .map(|r| row_key(r.job_id, r.scheduled_time))
            .collect();
        let absent: Vec<&NewExecution> = unique
            .iter()
            .copied()
            .filter(|n| !present.contains(&key(n)))
            .collect();
        if absent.is_empty() {
            return Ok(HashMap::new());
        }
        let mut q = Sql::new(dialect);
        push_insert_values(&mut q, &absent);
        match db.execute(q.build()).await {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) && attempt < MYSQL_DUPLICATE_RETRIES => {
                attempt += 1;
                continue;
            }
            Err(e) => return Err(e),
        }
        let wanted: HashSet<Key> = absent.iter().map(|n| key(n)).collect();
        let mut q = Sql::new(dialect);
        q.push("SELECT id, job_id, scheduled_time FROM job_executions WHERE 1 = 1");
        push_key_filter(&mut q, &absent);
        return Ok(KeyRow::find_by_statement(q.build())
            .all(db)
            .await?
            .into_iter()
            .map(|r| (row_key(r.job_id, r.scheduled_time), r.id))
            .filter(|(k, _)| wanted.contains(k))
            .collect());
    }
}

/// How many times a MySQL chunk is read and inserted again after a duplicate-key race.
const MYSQL_DUPLICATE_RETRIES: u32 = 5;

/// A row's unique key, its instant at the microsecond precision the databases keep, so keys
/// read back compare equal to the ones written.
fn key(new: &NewExecution) -> Key {
    row_key(new.job_id.unwrap_or_default(), new.scheduled_time)
}

fn row_key(job_id: i64, scheduled_time: DateTime<Utc>) -> Key {
    (job_id, scheduled_time.round_subsecs(6))
}

/// ` AND job_id IN (...) AND scheduled_time IN (...)`: a superset of the rows' keys (the
/// caller keeps the exact ones), which the unique index answers. Fire times of one batch
/// are few, so both lists stay short.
fn push_key_filter(q: &mut Sql, rows: &[&NewExecution]) {
    let mut jobs: Vec<i64> = rows.iter().filter_map(|n| n.job_id).collect();
    jobs.sort_unstable();
    jobs.dedup();
    let mut times: Vec<DateTime<Utc>> = rows.iter().map(|n| n.scheduled_time).collect();
    times.sort_unstable();
    times.dedup();
    q.push(" AND job_id IN ")
        .bind_list(&jobs)
        .push(" AND scheduled_time IN ")
        .bind_list(&times);
}

/// `INSERT INTO job_executions (...) VALUES (...), ...` for `rows` (not empty).
fn push_insert_values(q: &mut Sql, rows: &[&NewExecution]) {
    q.push(INSERT_COLUMNS).push(" VALUES ");
    for (i, new) in rows.iter().enumerate() {
        if i > 0 {
            q.push(", ");
        }
        q.push("(");
        push_row(q, new);
        q.push(")");
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
    push_rearm_set(&mut q, new, Status::Pending, false, None);
    q.push(" WHERE job_id = ")
        .bind(job_id)
        .push(" AND scheduled_time = ")
        .bind(new.scheduled_time);
    push_rearmable(&mut q);
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

/// ` AND` the row was created ahead by a dispatcher and cancelled only because its cron was
/// switched off: the rows a fresh decision may be written over.
pub(crate) fn push_rearmable(q: &mut Sql) {
    q.push(" AND status = ")
        .status(Status::Cancelled)
        .push(" AND cancel_reason = ")
        .bind(CancelReason::Unscheduled.as_str())
        .push(" AND param_source = ")
        .bind(ParamSource::Cron.as_str());
}

/// `UPDATE job_executions SET ...`: a fresh decision for `new` in `status` written over a
/// row that was cancelled only because its cron was off (the caller adds the WHERE, which
/// names that state).
pub(crate) fn push_rearm_set(
    q: &mut Sql,
    new: &NewExecution,
    status: Status,
    exclusive: bool,
    message: Option<&str>,
) {
    let finished_at = if status.is_final() {
        q.dialect().now()
    } else {
        "NULL"
    };
    q.push("UPDATE job_executions SET status = ")
        .status(status)
        .push(", exclusive_run = ")
        .bind(exclusive)
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
            ", retry_count = 0, started_at = NULL, result = NULL, worker_id = NULL, \
             owner_token = NULL, lease_expires_at = NULL, cancel_reason = NULL, \
             fire_time_until = NULL, fire_count = 1, cancel_requested = ",
        )
        .bind(false)
        .push(", error_message = ")
        .bind(message.map(str::to_string))
        .push(", finished_at = ")
        .push(finished_at)
        .push(", updated_at = ")
        .now();
}

/// Whether the cron has a PENDING, RUNNING or WAITING execution.
pub(crate) async fn has_unfinished<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    job_id: i64,
) -> Result<bool, DbErr> {
    let mut q = Sql::new(dialect);
    q.push("SELECT id FROM job_executions WHERE job_id = ")
        .bind(job_id)
        .push(" AND status IN ")
        .statuses(&[Status::Pending, Status::Running, Status::Waiting])
        .push(" LIMIT 1");
    Ok(IdRow::find_by_statement(q.build()).one(db).await?.is_some())
}

/// Insert-if-absent on the fire-time key (PostgreSQL, SQLite). The key is a partial unique
/// index on PostgreSQL (migration 11: rows without a cron are not in it), and a conflict
/// target must name a partial index's predicate to be matched; SQLite's full index matches
/// the same text.
pub(crate) const ON_FIRE_TIME_CONFLICT: &str =
    " ON CONFLICT (job_id, scheduled_time) WHERE job_id IS NOT NULL DO NOTHING";

pub(crate) const INSERT_COLUMNS: &str = "INSERT INTO job_executions (job_id, handler_name, \
     scheduled_time, run_at, status, params, param_source, retry_count, max_retry, \
     timeout_seconds, cancel_requested, created_at, updated_at, exclusive_run)";

/// The values of one new PENDING row that allows overlap, in the order of [`INSERT_COLUMNS`].
fn push_row(q: &mut Sql, new: &NewExecution) {
    push_row_as(q, new, Status::Pending, false);
}

/// The values of one new row in `status`, in the order of [`INSERT_COLUMNS`].
pub(crate) fn push_row_as(q: &mut Sql, new: &NewExecution, status: Status, exclusive: bool) {
    q.bind(new.job_id)
        .push(", ")
        .bind(new.handler_name.clone())
        .push(", ")
        .bind(new.scheduled_time)
        .push(", ")
        .bind(new.run_at)
        .push(", ")
        .status(status)
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
        .push(", ")
        .bind(exclusive);
}

/// The insert-if-absent statement.
async fn insert<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    new: &NewExecution,
) -> Result<Created, DbErr> {
    let mut q = Sql::new(dialect);
    q.push(INSERT_COLUMNS).push(" VALUES (");
    push_row(&mut q, new);
    q.push(")");
    match dialect {
        Dialect::Postgres | Dialect::Sqlite => {
            q.push(ON_FIRE_TIME_CONFLICT).push(" RETURNING id");
            let row = IdRow::find_by_statement(q.build()).one(db).await?;
            Ok(match row {
                Some(r) => Created::New(r.id),
                None => Created::Exists,
            })
        }
        Dialect::MySql => match db.execute(q.build()).await {
            Ok(res) if res.rows_affected() == 1 => Ok(Created::New(res.last_insert_id() as i64)),
            Ok(_) => Ok(Created::Exists),
            Err(e) if is_unique_violation(&e) => Ok(Created::Exists),
            Err(e) => Err(e),
        },
    }
}
