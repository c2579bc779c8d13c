//! The SQL of the commit protocol, per dialect, in one place: how a branch begins, prepares,
//! commits and rolls back, how in-doubt branches are listed, whether a server can prepare at
//! all, and which errors mean "no such prepared branch" (someone else resolved it).
//!
//! - PostgreSQL: `BEGIN` ... `PREPARE TRANSACTION 'gid'`, then `COMMIT PREPARED 'gid'` or
//!   `ROLLBACK PREPARED 'gid'` from any session of the same database; in doubt:
//!   `pg_prepared_xacts`. Needs `max_prepared_transactions > 0`.
//! - MySQL/MariaDB: `XA START` ... `XA END`, `XA PREPARE`, then `XA COMMIT` / `XA ROLLBACK`;
//!   in doubt: `XA RECOVER`. XA statements run as plain text (they cannot be prepared), and
//!   a branch runs on one connection from `XA START` to `XA PREPARE`.
//! - SQLite cannot prepare: `BEGIN IMMEDIATE` (the write lock for the whole transaction, so
//!   recovery can wait for the coordinator's end), then `COMMIT` or `ROLLBACK`.
//!
//! A transaction over one database uses `BEGIN` / `COMMIT` / `ROLLBACK` everywhere.

use sea_orm::{DbErr, RuntimeErr};

use super::xid::XA_FORMAT_ID;
use crate::store::Dialect;

/// Branch ids are made of `[a-z0-9:]` only ([`super::xid`]), so they can be quoted as they are.
fn quoted(branch: &str) -> String {
    debug_assert!(branch
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b':'));
    format!("'{branch}'")
}

/// `'gtrid','',formatID`: the XA xid of a jobu branch.
fn xa_xid(branch: &str) -> String {
    format!("{},'',{XA_FORMAT_ID}", quoted(branch))
}

/// Starts a branch; `branch` is `None` for a transaction over one database.
pub(crate) fn begin(d: Dialect, branch: Option<&str>) -> String {
    match (d, branch) {
        (Dialect::Sqlite, _) => "BEGIN IMMEDIATE".into(),
        (Dialect::MySql, Some(b)) => format!("XA START {}", xa_xid(b)),
        (Dialect::Postgres, _) | (Dialect::MySql, None) => "BEGIN".into(),
    }
}

/// Prepares a branch (phase one). SQLite cannot.
pub(crate) fn prepare(d: Dialect, branch: &str) -> Vec<String> {
    match d {
        Dialect::Postgres => vec![format!("PREPARE TRANSACTION {}", quoted(branch))],
        Dialect::MySql => vec![
            format!("XA END {}", xa_xid(branch)),
            format!("XA PREPARE {}", xa_xid(branch)),
        ],
        Dialect::Sqlite => Vec::new(),
    }
}

/// Commits a branch that was not prepared (one database, or the SQLite last resource).
pub(crate) fn commit_active(d: Dialect, branch: Option<&str>) -> Vec<String> {
    match (d, branch) {
        (Dialect::MySql, Some(b)) => vec![
            format!("XA END {}", xa_xid(b)),
            format!("XA COMMIT {} ONE PHASE", xa_xid(b)),
        ],
        _ => vec!["COMMIT".into()],
    }
}

/// Rolls back a branch that was not prepared.
pub(crate) fn rollback_active(d: Dialect, branch: Option<&str>) -> Vec<String> {
    match (d, branch) {
        (Dialect::MySql, Some(b)) => vec![
            format!("XA END {}", xa_xid(b)),
            format!("XA ROLLBACK {}", xa_xid(b)),
        ],
        _ => vec!["ROLLBACK".into()],
    }
}

/// Commits a prepared branch (phase two); any session of the participant may run it.
pub(crate) fn commit_prepared(d: Dialect, branch: &str) -> Option<String> {
    match d {
        Dialect::Postgres => Some(format!("COMMIT PREPARED {}", quoted(branch))),
        Dialect::MySql => Some(format!("XA COMMIT {}", xa_xid(branch))),
        Dialect::Sqlite => None,
    }
}

/// Rolls back a prepared branch.
pub(crate) fn rollback_prepared(d: Dialect, branch: &str) -> Option<String> {
    match d {
        Dialect::Postgres => Some(format!("ROLLBACK PREPARED {}", quoted(branch))),
        Dialect::MySql => Some(format!("XA ROLLBACK {}", xa_xid(branch))),
        Dialect::Sqlite => None,
    }
}

/// Lists prepared branches. PostgreSQL: jobu's of the current database, with their age in
/// seconds on the server's clock (columns `gid`, `age`). MySQL: every XA transaction of the
/// server (columns `formatID`, `gtrid_length`, `bqual_length`, `data`), filtered by the caller.
pub(crate) fn in_doubt(d: Dialect) -> Option<&'static str> {
    match d {
        Dialect::Postgres => Some(
            "SELECT gid, CAST(EXTRACT(EPOCH FROM (now() - prepared)) AS DOUBLE PRECISION) AS age \
             FROM pg_prepared_xacts WHERE database = current_database() AND gid LIKE 'jobu:%'",
        ),
        Dialect::MySql => Some("XA RECOVER"),
        Dialect::Sqlite => None,
    }
}

/// A statement that succeeds (PostgreSQL: with a positive `n`) where the server can prepare.
pub(crate) fn two_phase_probe(d: Dialect) -> Option<&'static str> {
    match d {
        Dialect::Postgres => {
            Some("SELECT CAST(current_setting('max_prepared_transactions') AS INTEGER) AS n")
        }
        Dialect::MySql => Some("XA RECOVER"),
        Dialect::Sqlite => None,
    }
}

/// The table of the SQLite last resource that records, in the same local transaction as
/// the data, that the transaction committed (its presence is the decision).
pub(crate) const LAST_RESOURCE_TABLE: &str = "CREATE TABLE IF NOT EXISTS jobu_last_resource (\
     xid VARCHAR(64) NOT NULL PRIMARY KEY, outcome VARCHAR(16) NOT NULL, \
     created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')))";

/// The SQLSTATE of a database error.
pub(crate) fn sql_state(err: &DbErr) -> Option<String> {
    let sqlx = match err {
        DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e))
        | DbErr::Conn(RuntimeErr::SqlxError(e)) => e,
        _ => return None,
    };
    match sqlx {
        sea_orm::sqlx::Error::Database(e) => e.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// The branch is not (or no longer) prepared there: another process committed or rolled it
/// back, or it never got prepared.
pub(crate) fn is_unknown_branch(d: Dialect, err: &DbErr) -> bool {
    let state = sql_state(err);
    match d {
        // undefined_object: "prepared transaction with identifier ... does not exist"
        Dialect::Postgres => state.as_deref() == Some("42704"),
        // XAER_NOTA: Unknown XID
        Dialect::MySql => state.as_deref() == Some("XAE04"),
        Dialect::Sqlite => false,
    }
}

/// Another session is committing or rolling back that branch right now.
pub(crate) fn is_busy_branch(d: Dialect, err: &DbErr) -> bool {
    d == Dialect::Postgres && sql_state(err).as_deref() == Some("55000")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xa_statements_name_jobus_format() {
        let b = "jobu:0123abcd:1:1:0123456789ab:0";
        assert_eq!(
            prepare(Dialect::MySql, b),
            [
                format!("XA END '{b}','',{XA_FORMAT_ID}"),
                format!("XA PREPARE '{b}','',{XA_FORMAT_ID}")
            ]
        );
        assert_eq!(
            commit_prepared(Dialect::Postgres, b).as_deref(),
            Some("COMMIT PREPARED 'jobu:0123abcd:1:1:0123456789ab:0'")
        );
    }
}
