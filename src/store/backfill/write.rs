//! Writing a backfill: the `cron_backfills` row, then each chunk of planned fire times in one
//! transaction under the cron's lock (inserts if absent, conditional re-arms, excluded rows,
//! MISSED rows cut so every fire time keeps one decision).

use chrono::{DateTime, Duration, Utc};
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult};

use super::super::create::{push_rearm_set, push_rearmable};
use super::super::dialect::{Dialect, Sql};
use super::super::fire_times::{record, LedgerRow};
use super::super::overlap::{insert_as, promote_locked};
use super::plan::*;
use super::*;
use crate::entities::job_execution::{ParamSource, Status};

/// The `cron_backfills` row of a request; its counts grow with each chunk.
pub(super) async fn insert_backfill<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    job_id: i64,
    req: &BackfillRequest,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<i64, DbErr> {
    let rerun = serde_json::Value::Array(
        req.rerun
            .iter()
            .map(|r| serde_json::Value::String(r.as_str().to_string()))
            .collect(),
    );
    let mut q = Sql::new(dialect);
    q.push(
        "INSERT INTO cron_backfills (job_id, range_from, range_to, overlap, rerun, created, \
         rearmed, left_alone, requested_by, reason, created_at) VALUES (",
    )
    .bind(job_id)
    .push(", ")
    .bind(from)
    .push(", ")
    .bind(to)
    .push(", ")
    .bind(req.overlap.as_str())
    .push(", ")
    .bind(rerun)
    .push(", 0, 0, 0, ")
    .bind(req.requested_by.clone())
    .push(", ")
    .bind(req.reason.clone())
    .push(", ")
    .now()
    .push(")");
    match dialect {
        Dialect::Postgres | Dialect::Sqlite => {
            q.push(" RETURNING id");
            let row = db
                .query_one(q.build())
                .await?
                .ok_or_else(|| DbErr::Custom("the backfill row was not returned".into()))?;
            row.try_get_by_index::<i64>(0)
        }
        Dialect::MySql => Ok(db.execute(q.build()).await?.last_insert_id() as i64),
    }
}

/// One chunk in `db`'s transaction, which holds the cron's lock: plans `fires` (those of
/// `[from, to)`) from the rows as they are now, writes them, starts the first buffered one
/// if the cron's slot is free, and adds the counts to the backfill's row.
#[allow(clippy::too_many_arguments)]
pub(super) async fn write_chunk<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    cron: &Cron<'_>,
    req: &BackfillRequest,
    backfill_id: i64,
    fires: &[DateTime<Utc>],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<BackfillItem>, DbErr> {
    let job_id = cron.model.id;
    let rows = rows_in_range(db, dialect, job_id, from, to, 2 * MAX_EXAMINED + 1).await?;
    let plan = cron.plan(fires, &rows, &req.rerun);
    let (status, exclusive) = match req.overlap {
        BackfillOverlap::BufferAll => (Status::Waiting, true),
        BackfillOverlap::Allow => (Status::Pending, false),
    };
    for row in &plan.cut {
        cut_missed(db, dialect, cron, row, from, to).await?;
    }
    let mut items = Vec::with_capacity(plan.steps.len());
    let mut tagged = Vec::new();
    for (fire, step) in &plan.steps {
        let fire = *fire;
        let new = cron.new_row(fire, ParamSource::Backfill);
        let written: Option<i64> = match step {
            Step::Insert | Step::Covered => {
                insert_as(db, dialect, &new, status, exclusive, None).await?
            }
            Step::Rearm(id) => {
                let mut q = Sql::new(dialect);
                push_rearm_set(&mut q, &new, status, exclusive, None);
                q.push(" WHERE id = ").bind(*id);
                push_rearmable(&mut q);
                (db.execute(q.build()).await?.rows_affected() == 1).then_some(*id)
            }
            Step::Rerun(id, expected) => {
                let mut q = Sql::new(dialect);
                push_rearm_set(&mut q, &new, status, exclusive, None);
                q.push(" WHERE id = ")
                    .bind(*id)
                    .push(" AND status = ")
                    .status(*expected);
                (db.execute(q.build()).await?.rows_affected() == 1).then_some(*id)
            }
            Step::CoveredExcluded(over) => {
                write_excluded(db, dialect, cron, fire, *over).await?;
                None
            }
            Step::Leave(..) | Step::Excluded(_) => None,
        };
        let item = match (written, step) {
            (Some(id), _) => {
                tagged.push(id);
                BackfillItem {
                    fire_time: fire,
                    action: step.action(),
                    execution_id: Some(id),
                    status: Some(status),
                    run_at: new.run_at,
                }
            }
            (None, Step::Leave(id, status)) => BackfillItem {
                fire_time: fire,
                action: BackfillAction::Exists,
                execution_id: Some(*id),
                status: *status,
                run_at: new.run_at,
            },
            (None, Step::Excluded(row)) => BackfillItem {
                fire_time: fire,
                action: BackfillAction::Excluded,
                execution_id: row.map(|r| r.0),
                status: row.and_then(|r| r.1),
                run_at: new.run_at,
            },
            // An EXCLUDED row written, or a row taken by someone else in between (a
            // dispatcher creating a fire time of an `allow` cron does not take its lock):
            // reported as it is now.
            (None, _) => {
                let now = row_at(db, dialect, job_id, fire).await?;
                let action = match step {
                    Step::CoveredExcluded(_) => BackfillAction::Excluded,
                    _ => BackfillAction::Exists,
                };
                BackfillItem {
                    fire_time: fire,
                    action,
                    execution_id: now.as_ref().map(|r| r.0),
                    status: now.and_then(|r| r.1),
                    run_at: new.run_at,
                }
            }
        };
        items.push(item);
    }
    if !tagged.is_empty() {
        let mut q = Sql::new(dialect);
        q.push("UPDATE job_executions SET param_source = ")
            .bind(ParamSource::Backfill.as_str())
            .push(", backfill_id = ")
            .bind(backfill_id)
            .push(", requested_by = ")
            .bind(req.requested_by.clone())
            .push(", reason = ")
            .bind(req.reason.clone())
            .push(" WHERE id IN ")
            .bind_list(&tagged);
        db.execute(q.build()).await?;
    }
    if exclusive && !tagged.is_empty() {
        promote_locked(db, dialect, job_id).await?;
        // The first of them may be PENDING now: report it so.
        if let Some(first) = items.iter_mut().find(|i| i.execution_id == Some(tagged[0])) {
            if let Some((_, status)) = row_at(db, dialect, job_id, first.fire_time).await? {
                first.status = status;
            }
        }
    }
    let n = |a: BackfillAction| items.iter().filter(|i| i.action == a).count() as i32;
    let mut q = Sql::new(dialect);
    q.push("UPDATE cron_backfills SET created = created + ")
        .bind(n(BackfillAction::Create))
        .push(", rearmed = rearmed + ")
        .bind(n(BackfillAction::Rerun))
        .push(", left_alone = left_alone + ")
        .bind(n(BackfillAction::Exists))
        .push(" WHERE id = ")
        .bind(backfill_id);
    db.execute(q.build()).await?;
    Ok(items)
}

/// The row at (cron, fire time): its id and status.
pub(super) async fn row_at<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    job_id: i64,
    fire: DateTime<Utc>,
) -> Result<Option<(i64, Option<Status>)>, DbErr> {
    #[derive(FromQueryResult)]
    struct IdStatus {
        id: i64,
        status: String,
    }
    let mut q = Sql::new(dialect);
    q.push("SELECT id, status FROM job_executions WHERE job_id = ")
        .bind(job_id)
        .push(" AND scheduled_time = ")
        .bind(fire);
    Ok(IdStatus::find_by_statement(q.build())
        .one(db)
        .await?
        .map(|r| (r.id, r.status.parse().ok())))
}

/// An excluded fire time that a cut MISSED row stood for keeps a decision: EXCLUDED, over
/// the MISSED row when it was its first fire time, else a row of its own.
pub(super) async fn write_excluded<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    cron: &Cron<'_>,
    fire: DateTime<Utc>,
    over: Option<i64>,
) -> Result<(), DbErr> {
    let mut new = cron.new_row(fire, ParamSource::Cron);
    new.run_at = fire;
    let message = cron.excluded_message(fire);
    match over {
        Some(id) => {
            let mut q = Sql::new(dialect);
            push_rearm_set(&mut q, &new, Status::Excluded, false, Some(&message));
            q.push(" WHERE id = ")
                .bind(id)
                .push(" AND status = ")
                .status(Status::Missed);
            db.execute(q.build()).await?;
        }
        None => {
            insert_as(db, dialect, &new, Status::Excluded, false, Some(&message)).await?;
        }
    }
    Ok(())
}

/// Cuts a MISSED row at `[from, to)` (see the module): the part before `from` stays the
/// row, the part from `to` on becomes a new MISSED row. The fire times inside are the
/// chunk's to write; when the row's own first fire time is inside, its step re-arms it.
pub(super) async fn cut_missed<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    cron: &Cron<'_>,
    row: &RowAt,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(), DbErr> {
    let Some(until) = row.fire_time_until else {
        return Ok(());
    };
    let start = row.scheduled_time;
    let message = row
        .error_message
        .clone()
        .unwrap_or_else(|| "missed: every dispatcher was down".to_string());
    // The row's own first fire time is inside the range when its step re-arms it; else the
    // row keeps it (it may also be a fire time of an earlier schedule) and the fire times
    // before `from`.
    let first_inside =
        start >= from && cron.fires(start, start + Duration::seconds(1), 1) == [start];
    if !first_inside {
        let (head, last) = cron.count(start, from.min(until + Duration::seconds(1)));
        let own = i32::from(cron.fires(start, start + Duration::seconds(1), 1) != [start]);
        let last = last.filter(|l| *l > start);
        let mut q = Sql::new(dialect);
        q.push("UPDATE job_executions SET fire_time_until = ")
            .bind(last)
            .push(", fire_count = ")
            .bind((head + own).max(1))
            .push(", updated_at = ")
            .now()
            .push(" WHERE id = ")
            .bind(row.id)
            .push(" AND status = ")
            .status(Status::Missed);
        db.execute(q.build()).await?;
    }
    if until >= to {
        let tail_end = until + Duration::seconds(1);
        if let Some(&first) = cron.fires(to, tail_end, 1).first() {
            let (count, last) = cron.count(first, tail_end);
            let mut new = cron.new_row(first, ParamSource::Cron);
            new.run_at = first;
            record(
                db,
                dialect,
                &LedgerRow {
                    first: new,
                    status: Status::Missed,
                    until: last.filter(|l| *l > first),
                    count: count.max(1),
                    message,
                },
            )
            .await?;
        }
    }
    Ok(())
}
