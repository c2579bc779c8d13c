//! The decision log (`transaction_log` in jobu's own database): one row per transaction over
//! several databases, written after every participant prepared and before the first commit.
//! The commit decision is fenced: it is inserted only while the attempt still owns its
//! execution (`owner_token` matches and the row is RUNNING, locked for the statement), so an
//! attempt that lost its lease can never decide to commit. The transaction id is the primary
//! key, so a coordinator and a recovery service that decide at once cannot both win.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult};

use crate::store::dialect::{is_unique_violation, Sql};
use crate::store::{Dialect, Status, Store};

/// What was decided for a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Commit,
    Rollback,
    /// Commit if the SQLite last resource committed (its `jobu_last_resource` row says so),
    /// otherwise roll back.
    LastResource,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Commit => "commit",
            Decision::Rollback => "rollback",
            Decision::LastResource => "last_resource",
        }
    }

    pub fn parse(text: &str) -> Option<Decision> {
        match text {
            "commit" => Some(Decision::Commit),
            "rollback" => Some(Decision::Rollback),
            "last_resource" => Some(Decision::LastResource),
            _ => None,
        }
    }
}

/// A row of the log.
#[derive(Debug, Clone, FromQueryResult)]
pub struct LogEntry {
    pub xid: String,
    pub execution_id: Option<i64>,
    pub attempt: i32,
    /// JSON array of participant names, in branch order.
    pub participants: String,
    pub decision: String,
    pub decided_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl LogEntry {
    pub fn decision(&self) -> Option<Decision> {
        Decision::parse(&self.decision)
    }

    pub fn participant_names(&self) -> Vec<String> {
        serde_json::from_str(&self.participants).unwrap_or_default()
    }
}

/// The outcome of a decision write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// This decision is the transaction's.
    Decided,
    /// The attempt no longer owns its execution: nothing was written.
    Fenced,
    /// Someone decided first (recovery rolled the transaction back): that decision stands.
    Already(Option<Decision>),
}

/// What a fenced decision names.
pub struct FencedDecision<'a> {
    pub xid: &'a str,
    pub execution_id: i64,
    pub attempt: u32,
    pub owner_token: &'a str,
    pub worker_id: &'a str,
    pub participants: &'a [String],
    pub decision: Decision,
}

const COLUMNS: &str =
    "xid, execution_id, attempt, participants, decision, decided_at, completed_at";

fn participants_json(names: &[String]) -> String {
    serde_json::to_string(names).unwrap_or_else(|_| "[]".into())
}

/// Inserts the decision if the attempt still owns its execution.
pub async fn decide_fenced(store: &Store, d: &FencedDecision<'_>) -> Result<Written, DbErr> {
    let dialect = store.dialect();
    let mut q = Sql::new(dialect);
    q.push("INSERT INTO transaction_log (xid, execution_id, attempt, worker_id, participants, decision) SELECT ")
        .bind(d.xid)
        .push(", id, ")
        .bind(d.attempt as i32)
        .push(", ")
        .bind(d.worker_id)
        .push(", ")
        .bind(participants_json(d.participants))
        .push(", ")
        .bind(d.decision.as_str())
        .push(" FROM job_executions WHERE id = ")
        .bind(d.execution_id)
        .push(" AND owner_token = ")
        .bind(d.owner_token)
        .push(" AND status = ")
        .status(Status::Running);
    if dialect != Dialect::Sqlite {
        // Holds the execution row until the statement commits: a rescue cannot take it
        // between the check and the insert.
        q.push(" FOR UPDATE");
    }
    match store.connection().execute(q.build()).await {
        Ok(r) if r.rows_affected() == 1 => Ok(Written::Decided),
        Ok(_) => Ok(Written::Fenced),
        Err(e) if is_unique_violation(&e) => Ok(Written::Already(
            entry(store, d.xid).await?.and_then(|e| e.decision()),
        )),
        Err(e) => Err(e),
    }
}

/// Inserts a decision unless one exists (recovery's rollback, a coordinator's abort);
/// returns the decision that stands.
pub async fn decide(
    store: &Store,
    xid: &super::Xid,
    participants: &[String],
    decision: Decision,
    worker_id: &str,
) -> Result<Option<Decision>, DbErr> {
    let mut q = Sql::new(store.dialect());
    q.push("INSERT INTO transaction_log (xid, execution_id, attempt, worker_id, participants, decision) VALUES (")
        .bind(xid.to_string())
        .push(", ")
        .bind(xid.execution_id)
        .push(", ")
        .bind(xid.attempt as i32)
        .push(", ")
        .bind(worker_id)
        .push(", ")
        .bind(participants_json(participants))
        .push(", ")
        .bind(decision.as_str())
        .push(")");
    match store.connection().execute(q.build()).await {
        Ok(_) => Ok(Some(decision)),
        Err(e) if is_unique_violation(&e) => Ok(entry(store, &xid.to_string())
            .await?
            .and_then(|e| e.decision())),
        Err(e) => Err(e),
    }
}

/// The log row of a transaction.
pub async fn entry(store: &Store, xid: &str) -> Result<Option<LogEntry>, DbErr> {
    let mut q = Sql::new(store.dialect());
    q.push("SELECT ")
        .push(COLUMNS)
        .push(" FROM transaction_log WHERE xid = ")
        .bind(xid);
    LogEntry::find_by_statement(q.build())
        .one(store.connection())
        .await
}

/// Marks a transaction finished: no participant holds a branch of it any more.
pub async fn complete(store: &Store, xid: &str) -> Result<(), DbErr> {
    let mut q = Sql::new(store.dialect());
    q.push("UPDATE transaction_log SET completed_at = ")
        .now()
        .push(" WHERE xid = ")
        .bind(xid)
        .push(" AND completed_at IS NULL");
    store.connection().execute(q.build()).await?;
    Ok(())
}

/// Unfinished rows decided more than `older_than_seconds` ago, oldest first.
pub async fn unfinished(
    store: &Store,
    older_than_seconds: f64,
    limit: u32,
) -> Result<Vec<LogEntry>, DbErr> {
    let mut q = Sql::new(store.dialect());
    q.push("SELECT ")
        .push(COLUMNS)
        .push(" FROM transaction_log WHERE completed_at IS NULL AND decided_at < ")
        .now_plus(-older_than_seconds)
        .push(" ORDER BY decided_at LIMIT ")
        .bind(limit as i64);
    LogEntry::find_by_statement(q.build())
        .all(store.connection())
        .await
}

/// Deletes rows finished more than `retention_seconds` ago.
pub async fn purge(store: &Store, retention_seconds: f64) -> Result<u64, DbErr> {
    let mut q = Sql::new(store.dialect());
    q.push("DELETE FROM transaction_log WHERE completed_at IS NOT NULL AND completed_at < ")
        .now_plus(-retention_seconds);
    Ok(store.connection().execute(q.build()).await?.rows_affected())
}

/// Whether the attempt named by `xid` still runs: its execution is RUNNING at that attempt.
/// (A transaction of an attempt that no longer runs cannot be decided by its coordinator.)
pub async fn attempt_running(store: &Store, xid: &super::Xid) -> Result<bool, DbErr> {
    #[derive(FromQueryResult)]
    struct Row {
        retry_count: i32,
        status: String,
    }
    let mut q = Sql::new(store.dialect());
    q.push("SELECT retry_count, status FROM job_executions WHERE id = ")
        .bind(xid.execution_id);
    let row = Row::find_by_statement(q.build())
        .one(store.connection())
        .await?;
    Ok(row.is_some_and(|r| {
        r.status == Status::Running.as_str()
            && i64::from(r.retry_count) + 1 == i64::from(xid.attempt)
    }))
}

/// Whether the attempt still owns its execution (a read; the single-database commit's check).
pub async fn still_owner(
    db: &impl ConnectionTrait,
    dialect: Dialect,
    execution_id: i64,
    owner_token: &str,
    lock: bool,
) -> Result<bool, DbErr> {
    let mut q = Sql::new(dialect);
    q.push("SELECT id FROM job_executions WHERE id = ")
        .bind(execution_id)
        .push(" AND owner_token = ")
        .bind(owner_token)
        .push(" AND status = ")
        .status(Status::Running);
    if lock && dialect != Dialect::Sqlite {
        q.push(" FOR UPDATE");
    }
    Ok(db.query_one(q.build()).await?.is_some())
}

/// This jobu database's coordinator id (see [`super::xid`]): created on first use; every
/// process of the deployment reads the same one.
pub async fn coordinator_id(store: &Store) -> Result<String, DbErr> {
    #[derive(FromQueryResult)]
    struct Row {
        id: String,
    }
    let read = || async {
        let q = Sql::new(store.dialect());
        let mut q = q;
        q.push("SELECT id FROM transaction_coordinator WHERE singleton = 1");
        Row::find_by_statement(q.build())
            .one(store.connection())
            .await
    };
    if let Some(row) = read().await? {
        return Ok(row.id);
    }
    let mut q = Sql::new(store.dialect());
    q.push("INSERT INTO transaction_coordinator (singleton, id) VALUES (1, ")
        .bind(super::xid::new_coordinator_id())
        .push(")");
    match store.connection().execute(q.build()).await {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {}
        Err(e) => return Err(e),
    }
    read()
        .await?
        .map(|r| r.id)
        .ok_or_else(|| DbErr::Custom("transaction_coordinator has no row".into()))
}
