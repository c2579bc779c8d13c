//! Bulk enqueue: many ad-hoc executions in one transaction, a multi-row INSERT per chunk of
//! [`ROWS_PER_STATEMENT`] rows, all or nothing, their ids returned in input order.
//!
//! How each dialect learns the ids, in input order, without relying on the order of a
//! `RETURNING` list (which no database promises):
//!
//! - PostgreSQL: the ids are drawn from the table's sequence first (one `nextval` statement
//!   for the whole call) and inserted explicitly, row i getting the i-th smallest; the
//!   sequence keeps them apart from every other insert.
//! - SQLite: `INSERT ... VALUES ... RETURNING id`, the ids sorted. SQLite inserts the rows of
//!   a `VALUES` list in order while holding the only write lock, so a statement's rowids
//!   ascend in input order (and are consecutive, which is checked).
//! - MySQL/MariaDB with `innodb_autoinc_lock_mode` 0 or 1: a multi-row INSERT of known size
//!   is a "simple insert", whose auto-increment values InnoDB documents as consecutive in
//!   row order (step `auto_increment_increment`) from `LAST_INSERT_ID()`, the first one.
//! - MariaDB in mode 2 (interleaved): `INSERT ... RETURNING id`, sorted: values ascend in
//!   row order, with gaps where other statements took some.
//! - MySQL in mode 2 (its default): one INSERT per row inside the transaction.

use sea_orm::{ConnectionTrait, DatabaseTransaction, DbErr, FromQueryResult, TransactionTrait};

use super::create::NewExecution;
use super::dialect::{Dialect, Sql};
use super::{query_ids, retry_transient, Store, StoreError, StoreResult};
use crate::entities::job_execution::Status;

/// Rows per INSERT: 9 placeholders a row stays far under the placeholder limits (SQLite
/// 32766, PostgreSQL and MySQL 65535).
pub const ROWS_PER_STATEMENT: usize = 1000;

/// The columns an execution row is created with, as in the creation protocol's insert.
const COLUMNS: &str = "job_id, handler_name, scheduled_time, run_at, status, params, \
                       param_source, retry_count, max_retry, timeout_seconds, \
                       cancel_requested, created_at, updated_at";

#[derive(FromQueryResult)]
struct IdRow {
    id: i64,
}

/// How a MySQL/MariaDB server hands out auto-increment values to a multi-row insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MySqlIds {
    /// Consecutive from `LAST_INSERT_ID()`, this far apart.
    Consecutive(i64),
    /// MariaDB: `INSERT ... RETURNING`.
    Returning,
    /// One INSERT per row.
    RowByRow,
}

impl Store {
    /// Creates ad-hoc executions (`job_id` `None`; any other row is [`StoreError::Invalid`]
    /// and nothing is written) in one transaction; returns their ids in the order of `rows`.
    pub async fn create_many(&self, rows: &[NewExecution]) -> StoreResult<Vec<i64>> {
        if let Some(i) = rows.iter().position(|r| r.job_id.is_some()) {
            return Err(StoreError::Invalid(format!(
                "row {i}: create_many creates ad-hoc executions only (job_id must be None)"
            )));
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let run = || async {
            let txn = self.db.begin().await?;
            let ids = match self.dialect {
                Dialect::Postgres => insert_postgres(&txn, rows).await?,
                Dialect::Sqlite => insert_sqlite(&txn, rows).await?,
                Dialect::MySql => insert_mysql(&txn, rows).await?,
            };
            txn.commit().await?;
            Ok(ids)
        };
        let ids = retry_transient(run).await?;
        if ids.len() != rows.len() {
            return Err(StoreError::Invalid(format!(
                "bulk insert of {} rows returned {} ids",
                rows.len(),
                ids.len()
            )));
        }
        if let Some(first) = rows.iter().map(|r| r.run_at).min() {
            self.announce_due(first).await;
        }
        Ok(ids)
    }
}

/// `INSERT INTO job_executions ([id, ]columns) VALUES (...), (...)` for `rows`, with
/// explicit ids when `ids` is given.
fn insert_statement(dialect: Dialect, rows: &[NewExecution], ids: Option<&[i64]>) -> Sql {
    let mut q = Sql::new(dialect);
    q.push("INSERT INTO job_executions (");
    if ids.is_some() {
        q.push("id, ");
    }
    q.push(COLUMNS).push(") VALUES ");
    for (i, row) in rows.iter().enumerate() {
        q.push(if i == 0 { "(" } else { ", (" });
        if let Some(ids) = ids {
            q.bind(ids[i]).push(", ");
        }
        q.push("NULL, ")
            .bind(row.handler_name.clone())
            .push(", ")
            .bind(row.scheduled_time)
            .push(", ")
            .bind(row.run_at)
            .push(", ")
            .status(Status::Pending)
            .push(", ")
            .bind(row.params.clone())
            .push(", ")
            .bind(row.param_source.as_str())
            .push(", 0, ")
            .bind(row.max_retry)
            .push(", ")
            .bind(row.timeout_seconds)
            .push(", ")
            .bind(false)
            .push(", ")
            .now()
            .push(", ")
            .now()
            .push(")");
    }
    q
}

async fn insert_postgres(
    txn: &DatabaseTransaction,
    rows: &[NewExecution],
) -> Result<Vec<i64>, DbErr> {
    let mut q = Sql::new(Dialect::Postgres);
    q.push(
        "SELECT nextval(pg_get_serial_sequence('job_executions', 'id')) AS id \
         FROM generate_series(1, ",
    )
    .bind(rows.len() as i64)
    .push(")");
    let mut ids: Vec<i64> = IdRow::find_by_statement(q.build())
        .all(txn)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    if ids.len() != rows.len() {
        return Err(DbErr::Custom(format!(
            "the id sequence gave {} values for {} rows",
            ids.len(),
            rows.len()
        )));
    }
    ids.sort_unstable();
    for (chunk, chunk_ids) in rows
        .chunks(ROWS_PER_STATEMENT)
        .zip(ids.chunks(ROWS_PER_STATEMENT))
    {
        let q = insert_statement(Dialect::Postgres, chunk, Some(chunk_ids));
        txn.execute(q.build()).await?;
    }
    Ok(ids)
}

async fn insert_sqlite(
    txn: &DatabaseTransaction,
    rows: &[NewExecution],
) -> Result<Vec<i64>, DbErr> {
    let mut all = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut q = insert_statement(Dialect::Sqlite, chunk, None);
        q.push(" RETURNING id");
        let mut ids = returned_ids(txn, q, chunk.len()).await?;
        ids.sort_unstable();
        let consecutive = ids
            .first()
            .zip(ids.last())
            .is_some_and(|(first, last)| last - first + 1 == chunk.len() as i64);
        if !consecutive {
            return Err(DbErr::Custom(
                "the rowids of a bulk insert are not consecutive".into(),
            ));
        }
        all.extend(ids);
    }
    Ok(all)
}

async fn insert_mysql(txn: &DatabaseTransaction, rows: &[NewExecution]) -> Result<Vec<i64>, DbErr> {
    let mut all = Vec::with_capacity(rows.len());
    match mysql_ids(txn).await? {
        MySqlIds::Consecutive(step) => {
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                let q = insert_statement(Dialect::MySql, chunk, None);
                let res = txn.execute(q.build()).await?;
                if res.rows_affected() != chunk.len() as u64 {
                    return Err(DbErr::Custom(format!(
                        "a bulk insert of {} rows inserted {}",
                        chunk.len(),
                        res.rows_affected()
                    )));
                }
                let first = res.last_insert_id() as i64;
                all.extend((0..chunk.len() as i64).map(|i| first + i * step));
            }
        }
        MySqlIds::Returning => {
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                let mut q = insert_statement(Dialect::MySql, chunk, None);
                q.push(" RETURNING id");
                let mut ids = returned_ids(txn, q, chunk.len()).await?;
                ids.sort_unstable();
                all.extend(ids);
            }
        }
        MySqlIds::RowByRow => {
            for row in rows {
                let q = insert_statement(Dialect::MySql, std::slice::from_ref(row), None);
                let res = txn.execute(q.build()).await?;
                all.push(res.last_insert_id() as i64);
            }
        }
    }
    Ok(all)
}

/// The ids a `... RETURNING id` statement returned; exactly `expected` of them. Read by
/// position: MariaDB describes no result columns when it prepares an INSERT ... RETURNING,
/// so the rows carry no column names.
async fn returned_ids(
    txn: &DatabaseTransaction,
    q: Sql,
    expected: usize,
) -> Result<Vec<i64>, DbErr> {
    let ids: Vec<i64> = query_ids(txn, q.build()).await?;
    if ids.len() != expected {
        return Err(DbErr::Custom(format!(
            "a bulk insert of {expected} rows returned {} ids",
            ids.len()
        )));
    }
    Ok(ids)
}

/// Reads the server's auto-increment lock mode and step.
async fn mysql_ids(txn: &DatabaseTransaction) -> Result<MySqlIds, DbErr> {
    #[derive(FromQueryResult)]
    struct Server {
        version: String,
        lock_mode: i64,
        step: i64,
    }
    let mut q = Sql::new(Dialect::MySql);
    q.push(
        "SELECT VERSION() AS version, CAST(@@innodb_autoinc_lock_mode AS SIGNED) AS lock_mode, \
         CAST(@@auto_increment_increment AS SIGNED) AS step",
    );
    let server = Server::find_by_statement(q.build())
        .one(txn)
        .await?
        .ok_or_else(|| DbErr::Custom("the server did not describe itself".into()))?;
    Ok(mysql_strategy(
        &server.version,
        server.lock_mode,
        server.step,
    ))
}

fn mysql_strategy(version: &str, lock_mode: i64, step: i64) -> MySqlIds {
    let mariadb = version.to_ascii_lowercase().contains("mariadb");
    match lock_mode {
        0 | 1 if step >= 1 => MySqlIds::Consecutive(step),
        // Every MariaDB jobu accepts (10.6+) has INSERT ... RETURNING.
        _ if mariadb => MySqlIds::Returning,
        _ => MySqlIds::RowByRow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entities::job_execution::ParamSource;

    fn row() -> NewExecution {
        let now = chrono::Utc::now();
        NewExecution {
            job_id: None,
            handler_name: "noop".into(),
            scheduled_time: now,
            run_at: now,
            params: None,
            param_source: ParamSource::Api,
            max_retry: 0,
            timeout_seconds: 60,
        }
    }

    #[test]
    fn mysql_ids_follow_the_lock_mode() {
        assert_eq!(mysql_strategy("8.0.36", 1, 1), MySqlIds::Consecutive(1));
        assert_eq!(mysql_strategy("8.0.36", 0, 2), MySqlIds::Consecutive(2));
        assert_eq!(mysql_strategy("8.0.36", 2, 1), MySqlIds::RowByRow);
        assert_eq!(
            mysql_strategy("10.11.19-MariaDB-0+deb12u1", 2, 1),
            MySqlIds::Returning
        );
        assert_eq!(
            mysql_strategy("10.11.19-MariaDB-0+deb12u1", 1, 1),
            MySqlIds::Consecutive(1)
        );
    }

    #[test]
    fn a_full_chunk_stays_under_every_placeholder_limit() {
        let rows = vec![row(); ROWS_PER_STATEMENT];
        let ids: Vec<i64> = (1..=ROWS_PER_STATEMENT as i64).collect();
        for dialect in [Dialect::Postgres, Dialect::MySql, Dialect::Sqlite] {
            let stmt = insert_statement(dialect, &rows, Some(&ids)).build();
            let values = stmt.values.map(|v| v.0.len()).unwrap_or(0);
            assert!(values < 32_766, "{dialect:?}: {values} placeholders");
            assert_eq!(values, ROWS_PER_STATEMENT * 9);
        }
    }
}
