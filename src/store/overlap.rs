//! Overlap protocol: what a fire time of a cron whose policy is not `allow` does while an
//! execution of the cron is unfinished, and how a buffered fire time starts once it ends.
//!
//! Every decision is taken under the lock of the cron's row (`SELECT ... FOR [NO KEY] UPDATE`
//! on PostgreSQL and MySQL; SQLite serialises writers), in the transaction that writes it, so
//! dispatchers, operators and workers racing on one cron take turns and each sees what the
//! previous one committed. The decision for one fire time, from the cron's unfinished
//! executions (PENDING or RUNNING) and its WAITING ones:
//!
//! | policy       | none unfinished | unfinished, none waiting | unfinished and waiting |
//! |--------------|-----------------|--------------------------|------------------------|
//! | `skip`       | PENDING         | SKIPPED                  | SKIPPED                |
//! | `buffer_one` | PENDING         | WAITING                  | SKIPPED                |
//! | `buffer_all` | PENDING         | WAITING                  | WAITING                |
//! | `replace`    | PENDING         | cancel it; WAITING while it still runs, else PENDING |
//!
//! (`replace` also skips a fire time still waiting: the newest one wins.) Rows written here
//! carry `exclusive_run`, and a unique index keeps at most one such row of a cron PENDING
//! or RUNNING: the invariant holds in the database whatever a process believes.
//!
//! A WAITING row becomes PENDING ([`Store::promote_waiting`]) when the cron has no exclusive
//! execution unfinished left: the worker that recorded the end asks for it, and every dispatcher
//! poll looks for WAITING rows nobody promoted (a worker killed in between).

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult, TransactionTrait};

use super::create::{
    push_rearm_set, push_rearmable, push_row_as, Created, NewExecution, INSERT_COLUMNS,
    ON_FIRE_TIME_CONFLICT,
};
use super::dialect::{is_unique_violation, Dialect, Sql};
use super::{query_ids, retry_transient, Store, StoreResult};
use crate::entities::cron_job::OverlapPolicy;
use crate::entities::job_execution::{CancelReason, ParamSource, Status};

/// The statuses that hold a cron's one exclusive slot.
pub(crate) const UNFINISHED: [Status; 2] = [Status::Pending, Status::Running];

#[derive(FromQueryResult)]
struct StateRow {
    id: i64,
    status: String,
}

/// What one fire time of an exclusive cron became.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Run,
    Wait,
    Skip(String),
}

/// Locks the cron's row for the rest of `db`'s transaction (PostgreSQL, MySQL); SQLite's
/// transaction takes the write lock with its first write instead.
pub(crate) async fn lock_cron<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    job_id: i64,
) -> Result<bool, DbErr> {
    let mut q = Sql::new(dialect);
    match dialect {
        Dialect::Sqlite => q
            .push("UPDATE cron_jobs SET id = id WHERE id = ")
            .bind(job_id),
        // NO KEY UPDATE: as a dispatch page locks its crons (new executions' foreign keys
        // take KEY SHARE, which it does not block).
        Dialect::Postgres => q
            .push("SELECT id FROM cron_jobs WHERE id = ")
            .bind(job_id)
            .push(" FOR NO KEY UPDATE"),
        Dialect::MySql => q
            .push("SELECT id FROM cron_jobs WHERE id = ")
            .bind(job_id)
            .push(" FOR UPDATE"),
    };
    Ok(match dialect {
        Dialect::Sqlite => db.execute(q.build()).await?.rows_affected() == 1,
        _ => db.query_one(q.build()).await?.is_some(),
    })
}

/// The cron's executions in `statuses`, oldest fire time first.
async fn rows_in<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    job_id: i64,
    statuses: &[Status],
) -> Result<Vec<StateRow>, DbErr> {
    let mut q = Sql::new(dialect);
    q.push("SELECT id, status FROM job_executions WHERE job_id = ")
        .bind(job_id)
        .push(" AND status IN ")
        .statuses(statuses)
        .push(" ORDER BY scheduled_time, id");
    StateRow::find_by_statement(q.build()).all(db).await
}

/// Creates one fire time of a cron whose policy is exclusive, in a transaction `db` that
/// holds the cron's lock ([`lock_cron`]). With `record_skip`, a skipped fire time is
/// written as a SKIPPED row (the dispatcher's ledger); without, nothing is written (an
/// operator's run, refused). `Created::New` is a PENDING row, `Created::Waiting` a
/// WAITING one, `Created::Overlap` a skipped fire time.
pub(crate) async fn create_locked<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    new: &NewExecution,
    job_id: i64,
    policy: OverlapPolicy,
    record_skip: bool,
) -> Result<Created, DbErr> {
    let existing = row_at(db, dialect, job_id, new.scheduled_time).await?;
    if let Some(row) = &existing {
        if !row.rearmable {
            return Ok(Created::Exists);
        }
    }
    let unfinished = rows_in(db, dialect, job_id, &UNFINISHED).await?;
    let waiting = rows_in(db, dialect, job_id, &[Status::Waiting]).await?;
    let describe = |rows: &[StateRow]| {
        rows.iter()
            .map(|r| format!("{} ({})", r.id, r.status))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let decision = match policy {
        OverlapPolicy::Allow => Decision::Run,
        _ if unfinished.is_empty() && waiting.is_empty() => Decision::Run,
        OverlapPolicy::Skip => Decision::Skip(format!(
            "skipped by overlap policy skip: execution {} of the cron had not finished",
            describe(if unfinished.is_empty() {
                &waiting
            } else {
                &unfinished
            })
        )),
        OverlapPolicy::BufferOne if waiting.is_empty() => Decision::Wait,
        OverlapPolicy::BufferOne => Decision::Skip(format!(
            "skipped by overlap policy buffer_one: execution {} already waits behind {}",
            describe(&waiting),
            describe(&unfinished)
        )),
        OverlapPolicy::BufferAll => Decision::Wait,
        OverlapPolicy::Replace => {
            replace(db, dialect, new, &unfinished, &waiting).await?;
            let still_running = unfinished
                .iter()
                .any(|r| r.status == Status::Running.as_str());
            if still_running {
                Decision::Wait
            } else {
                Decision::Run
            }
        }
    };
    let (status, message) = match decision {
        Decision::Run => (Status::Pending, None),
        Decision::Wait => (Status::Waiting, None),
        // A fire time that has a row (cancelled while the cron was off) is reported as
        // existing, as insert-if-absent would.
        Decision::Skip(_) if !record_skip && existing.is_some() => return Ok(Created::Exists),
        Decision::Skip(_) if !record_skip => return Ok(Created::Overlap),
        Decision::Skip(reason) => (Status::Skipped, Some(reason)),
    };
    let id = match existing {
        Some(row) => rearm_as(db, dialect, row.id, new, status, message.as_deref()).await?,
        None => insert_as(db, dialect, new, status, true, message.as_deref()).await?,
    };
    Ok(match (id, status) {
        (None, _) => Created::Exists,
        (Some(id), Status::Pending) => Created::New(id),
        (Some(id), Status::Waiting) => Created::Waiting(id),
        (Some(_), _) => Created::Overlap,
    })
}

/// `replace`: the cron's unfinished executions are cancelled (PENDING ones at once, RUNNING
/// ones asked to stop: their worker kills the attempt and records CANCELLED, reason
/// `replaced`), and fire times still waiting are skipped in favour of `new`.
async fn replace<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    new: &NewExecution,
    unfinished: &[StateRow],
    waiting: &[StateRow],
) -> Result<(), DbErr> {
    let at = new.scheduled_time.to_rfc3339();
    let ids = |rows: &[StateRow], status: Status| -> Vec<i64> {
        rows.iter()
            .filter(|r| r.status == status.as_str())
            .map(|r| r.id)
            .collect()
    };
    let pending = ids(unfinished, Status::Pending);
    if !pending.is_empty() {
        let mut q = Sql::new(dialect);
        q.push("UPDATE job_executions SET status = ")
            .status(Status::Cancelled)
            .push(", cancel_reason = ")
            .bind(CancelReason::Replaced.as_str())
            .push(", error_message = ")
            .bind(format!(
                "cancelled before it ran: replaced by the fire time {at} (overlap policy replace)"
            ))
            .push(", finished_at = ")
            .now()
            .push(", updated_at = ")
            .now()
            .push(" WHERE id IN ")
            .bind_list(&pending)
            .push(" AND status = ")
            .status(Status::Pending);
        db.execute(q.build()).await?;
    }
    let running = ids(unfinished, Status::Running);
    if !running.is_empty() {
        let mut q = Sql::new(dialect);
        q.push("UPDATE job_executions SET cancel_requested = ")
            .bind(true)
            .push(", cancel_reason = ")
            .bind(CancelReason::Replaced.as_str())
            .push(", updated_at = ")
            .now()
            .push(" WHERE id IN ")
            .bind_list(&running)
            .push(" AND status = ")
            .status(Status::Running);
        db.execute(q.build()).await?;
    }
    if !waiting.is_empty() {
        let ids: Vec<i64> = waiting.iter().map(|r| r.id).collect();
        let mut q = Sql::new(dialect);
        q.push("UPDATE job_executions SET status = ")
            .status(Status::Skipped)
            .push(", error_message = ")
            .bind(format!(
                "skipped by overlap policy replace: the later fire time {at} replaced it while it waited"
            ))
            .push(", finished_at = ")
            .now()
            .push(", updated_at = ")
            .now()
            .push(" WHERE id IN ")
            .bind_list(&ids)
            .push(" AND status = ")
            .status(Status::Waiting);
        db.execute(q.build()).await?;
    }
    Ok(())
}

/// The row of (job_id, fire time), if any, and whether it may be written over: it was
/// created ahead and cancelled only because its cron was switched off (see `create`).
struct AtRow {
    id: i64,
    rearmable: bool,
}

#[derive(FromQueryResult)]
struct AtQuery {
    id: i64,
    status: String,
    cancel_reason: Option<String>,
    param_source: String,
}

async fn row_at<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    job_id: i64,
    at: DateTime<Utc>,
) -> Result<Option<AtRow>, DbErr> {
    let mut q = Sql::new(dialect);
    q.push("SELECT id, status, cancel_reason, param_source FROM job_executions WHERE job_id = ")
        .bind(job_id)
        .push(" AND scheduled_time = ")
        .bind(at);
    Ok(AtQuery::find_by_statement(q.build())
        .one(db)
        .await?
        .map(|r| AtRow {
            id: r.id,
            rearmable: r.status == Status::Cancelled.as_str()
                && r.cancel_reason.as_deref() == Some(CancelReason::Unscheduled.as_str())
                && r.param_source == ParamSource::Cron.as_str(),
        }))
}

/// Inserts one row in `status`; `None` if its (job_id, fire time) exists.
pub(crate) async fn insert_as<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    new: &NewExecution,
    status: Status,
    exclusive: bool,
    message: Option<&str>,
) -> Result<Option<i64>, DbErr> {
    let mut q = Sql::new(dialect);
    q.push(INSERT_COLUMNS).push(" VALUES (");
    push_row_as(&mut q, new, status, exclusive);
    q.push(")");
    let id = match dialect {
        Dialect::Postgres | Dialect::Sqlite => {
            q.push(ON_FIRE_TIME_CONFLICT).push(" RETURNING id");
            match db.query_one(q.build()).await? {
                Some(row) => Some(row.try_get_by_index::<i64>(0)?),
                None => None,
            }
        }
        Dialect::MySql => match db.execute(q.build()).await {
            Ok(res) if res.rows_affected() == 1 => Some(res.last_insert_id() as i64),
            Ok(_) => None,
            Err(e) if is_unique_violation(&e) => None,
            Err(e) => return Err(e),
        },
    };
    if let (Some(id), true) = (id, status.is_final() || message.is_some()) {
        mark_decided(db, dialect, id, message).await?;
    }
    Ok(id)
}

/// A ledger row is final from the start: `finished_at` now, the reason as its message.
async fn mark_decided<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    id: i64,
    message: Option<&str>,
) -> Result<(), DbErr> {
    let mut q = Sql::new(dialect);
    q.push("UPDATE job_executions SET finished_at = ")
        .now()
        .push(", error_message = ")
        .bind(message.map(str::to_string))
        .push(" WHERE id = ")
        .bind(id);
    db.execute(q.build()).await?;
    Ok(())
}

/// Writes a fresh decision over a row cancelled only because its cron was off.
async fn rearm_as<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    id: i64,
    new: &NewExecution,
    status: Status,
    message: Option<&str>,
) -> Result<Option<i64>, DbErr> {
    let mut q = Sql::new(dialect);
    push_rearm_set(&mut q, new, status, true, message);
    q.push(" WHERE id = ").bind(id);
    push_rearmable(&mut q);
    Ok((db.execute(q.build()).await?.rows_affected() == 1).then_some(id))
}

impl Store {
    /// Starts the next buffered fire time of each of these crons that has no exclusive
    /// execution PENDING or RUNNING left: its oldest WAITING execution becomes PENDING. Under the cron's lock, so
    /// it cannot race a dispatcher's decision or another promotion. Returns how many started.
    pub async fn promote_waiting(&self, job_ids: &[i64]) -> StoreResult<u64> {
        let mut ids = job_ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut promoted = 0;
        for job_id in ids {
            let run = || async {
                let txn = self.db.begin().await?;
                if !lock_cron(&txn, self.dialect, job_id).await? {
                    // The cron is gone; its rows (job_id set NULL) wait for no one.
                    txn.commit().await?;
                    return Ok::<_, DbErr>(0);
                }
                let n = promote_locked(&txn, self.dialect, job_id).await?;
                txn.commit().await?;
                Ok(n)
            };
            promoted += retry_transient(run).await?;
        }
        if promoted > 0 {
            self.announce_due(Utc::now()).await;
        }
        Ok(promoted)
    }

    /// Crons with a WAITING execution and no exclusive one PENDING or RUNNING: a promotion
    /// nobody made (the worker that ended the previous run died before asking, or a
    /// backfill's process stopped between writing its rows and starting the first). At most
    /// `limit`. Non-exclusive runs (an `allow` cron's own, or an `allow` backfill's) do not
    /// hold the slot, as in [`promote_locked`].
    pub async fn stalled_waiting(&self, limit: u64) -> StoreResult<Vec<i64>> {
        let mut q = Sql::new(self.dialect);
        q.push("SELECT DISTINCT w.job_id FROM job_executions w WHERE w.status = ")
            .status(Status::Waiting)
            .push(
                " AND w.job_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM job_executions a \
                 WHERE a.job_id = w.job_id AND a.exclusive_run = ",
            )
            .bind(true)
            .push(" AND a.status IN ")
            .statuses(&UNFINISHED)
            .push(") LIMIT ")
            .push(&limit.to_string());
        Ok(query_ids(&self.db, q.build()).await?)
    }
}

/// [`Store::promote_waiting`] for one cron whose lock `db` holds. Only exclusive rows hold
/// the cron's slot (the unique index covers exactly those): a WAITING row of an `allow` cron
/// (a backfill run one at a time) does not wait for the cron's own concurrent runs, which
/// would never leave it a gap. The decision for a new fire time ([`create_locked`]) still
/// looks at every unfinished row.
pub(crate) async fn promote_locked<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    job_id: i64,
) -> Result<u64, DbErr> {
    let mut q = Sql::new(dialect);
    q.push("SELECT id FROM job_executions WHERE job_id = ")
        .bind(job_id)
        .push(" AND exclusive_run = ")
        .bind(true)
        .push(" AND status IN ")
        .statuses(&UNFINISHED)
        .push(" LIMIT 1");
    if db.query_one(q.build()).await?.is_some() {
        return Ok(0);
    }
    let Some(next) = rows_in(db, dialect, job_id, &[Status::Waiting])
        .await?
        .into_iter()
        .next()
    else {
        return Ok(0);
    };
    let mut q = Sql::new(dialect);
    q.push("UPDATE job_executions SET status = ")
        .status(Status::Pending)
        .push(", updated_at = ")
        .now()
        .push(" WHERE id = ")
        .bind(next.id)
        .push(" AND status = ")
        .status(Status::Waiting);
    Ok(db.execute(q.build()).await?.rows_affected())
}
