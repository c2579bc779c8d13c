//! Recovery of in-doubt branches: one pass lists jobu's prepared branches on every
//! participant (`pg_prepared_xacts`, `XA RECOVER`) and finishes each as the decision log
//! says: `commit` commits, `rollback` rolls back, `last_resource` commits when the SQLite
//! last resource holds the transaction's commit record (read under its write lock, so a
//! coordinator still holding that database is waited for). A branch with no logged decision
//! is rolled back once its attempt no longer runs or it has been in doubt for the grace
//! period; the rollback is first logged (insert-if-absent on the transaction id), so a
//! coordinator deciding at the same moment and this pass cannot disagree. Every step is
//! idempotent, so any number of processes may run passes at once.
//!
//! The actor that runs passes at start and periodically is `crate::actors::recovery`.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DbErr, QueryResult, Statement};

use super::branch::Conn;
use super::coordinator::Coordinator;
use super::databases::{Databases, Participant, TwoPhase};
use super::log::{self, Decision};
use super::protocol;
use super::xid::{Xid, XA_FORMAT_ID};
use crate::store::{Dialect, Store};

/// Unfinished log rows looked at per pass.
const UNFINISHED_PER_PASS: u32 = 500;
/// Old log rows and last-resource records are deleted at most this often (the SQLite delete
/// takes its write lock, which may wait behind a running transaction).
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    pub committed: u32,
    pub rolled_back: u32,
    /// In doubt, but possibly still being decided by a live coordinator.
    pub waiting: u32,
    /// Could not be finished this pass (an error, logged); retried next pass.
    pub failed: u32,
    /// Log rows marked finished.
    pub completed: u32,
}

/// The state kept between passes: when each branch was first seen in doubt (MySQL's
/// `XA RECOVER` gives no age).
#[derive(Debug)]
pub struct Recovery {
    store: Store,
    databases: Databases,
    coordinator_id: String,
    worker_id: String,
    first_seen: HashMap<String, Instant>,
    last_purge: Option<Instant>,
}

impl Recovery {
    /// Recovery of the transactions `coordinator` runs (those of its jobu database).
    pub fn new(coordinator: &Coordinator, worker_id: impl Into<String>) -> Recovery {
        Recovery {
            store: coordinator.store().clone(),
            databases: coordinator.databases().clone(),
            coordinator_id: coordinator.id().to_string(),
            worker_id: worker_id.into(),
            first_seen: HashMap::new(),
            last_purge: None,
        }
    }

    /// One pass over every participant that can prepare; see the module documentation.
    pub async fn run_once(&mut self, grace: Duration, retention: Duration) -> PassReport {
        let mut report = PassReport::default();
        let mut seen_now = HashMap::new();
        // Transactions with a branch still in doubt, and participants that could not be read.
        let mut pending: BTreeSet<String> = BTreeSet::new();
        let mut unread: BTreeSet<String> = BTreeSet::new();
        let participants: Vec<Participant> = self
            .databases
            .participants()
            .filter(|p| p.two_phase == TwoPhase::Available)
            .cloned()
            .collect();
        for p in &participants {
            let branches = match in_doubt(p).await {
                Ok(b) => b,
                Err(e) => {
                    unread.insert(p.name.clone());
                    report.failed += 1;
                    tracing::warn!(database = %p.name, error = %e, "recovery: cannot list in-doubt transactions");
                    continue;
                }
            };
            for (branch, age) in branches {
                let Some((xid, _index)) = Xid::parse_branch(&branch) else {
                    continue;
                };
                if xid.coordinator != self.coordinator_id {
                    // Another jobu deployment's: its own recovery finishes it.
                    continue;
                }
                let first = *self.first_seen.get(&branch).unwrap_or(&Instant::now());
                seen_now.insert(branch.clone(), first);
                let age = age
                    .map(Duration::from_secs_f64)
                    .unwrap_or_else(|| first.elapsed());
                match self.resolve(p, &branch, &xid, age, grace).await {
                    Ok(Outcome::Committed) => report.committed += 1,
                    Ok(Outcome::RolledBack) => report.rolled_back += 1,
                    Ok(Outcome::Waiting) => {
                        report.waiting += 1;
                        pending.insert(xid.to_string());
                    }
                    Err(e) => {
                        report.failed += 1;
                        pending.insert(xid.to_string());
                        tracing::warn!(xid = %branch, execution_id = xid.execution_id, attempt = xid.attempt, database = %p.name, error = %e, "recovery: cannot finish an in-doubt branch; retrying next pass");
                    }
                }
            }
        }
        self.first_seen = seen_now;
        report.completed = self.complete_finished(grace, &pending, &unread).await;
        if self.last_purge.is_some_and(|t| t.elapsed() < PURGE_EVERY) {
            return report;
        }
        self.last_purge = Some(Instant::now());
        let retention_s = retention.as_secs_f64();
        if let Err(e) = log::purge(&self.store, retention_s).await {
            tracing::debug!(error = %e, "recovery: cannot purge the decision log");
        }
        for p in self.databases.participants() {
            if p.dialect() == Dialect::Sqlite {
                let stmt = Statement::from_sql_and_values(
                    p.dialect().backend(),
                    "DELETE FROM jobu_last_resource WHERE created_at < \
                     strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now', ?)",
                    [format!("-{retention_s:.0} seconds").into()],
                );
                let _ = p.connection().execute(stmt).await;
            }
        }
        report
    }

    async fn resolve(
        &self,
        p: &Participant,
        branch: &str,
        xid: &Xid,
        age: Duration,
        grace: Duration,
    ) -> Result<Outcome, DbErr> {
        let text = xid.to_string();
        let entry = log::entry(&self.store, &text).await?;
        let decision = match entry.as_ref().and_then(|e| e.decision()) {
            Some(Decision::LastResource) => {
                let names = entry.map(|e| e.participant_names()).unwrap_or_default();
                match self.last_resource_outcome(&names, &text).await? {
                    Some(true) => Decision::Commit,
                    Some(false) => Decision::Rollback,
                    None => {
                        tracing::warn!(xid = %branch, database = %p.name, "recovery: the transaction's SQLite last resource is not configured in this process; leaving the branch to a process that has it");
                        return Ok(Outcome::Waiting);
                    }
                }
            }
            Some(d) => d,
            None => {
                let running = log::attempt_running(&self.store, xid).await?;
                if running && age < grace {
                    return Ok(Outcome::Waiting);
                }
                let names = vec![p.name.clone()];
                match log::decide(
                    &self.store,
                    xid,
                    &names,
                    Decision::Rollback,
                    &self.worker_id,
                )
                .await?
                {
                    Some(Decision::LastResource) | None => return Ok(Outcome::Waiting),
                    Some(d) => d,
                }
            }
        };
        let sql = match decision {
            Decision::Commit => protocol::commit_prepared(p.dialect(), branch),
            _ => protocol::rollback_prepared(p.dialect(), branch),
        };
        let Some(sql) = sql else {
            return Ok(Outcome::Waiting);
        };
        let stmt = Statement::from_string(p.dialect().backend(), sql);
        match p.connection().execute(stmt).await {
            Ok(_) => {}
            // Another process finished it meanwhile, or (MySQL) the session that prepared it
            // is still connected and holds it: looked at again next pass while listed.
            Err(e)
                if protocol::is_unknown_branch(p.dialect(), &e)
                    || protocol::is_busy_branch(p.dialect(), &e) =>
            {
                tracing::debug!(xid = %branch, database = %p.name, error = %e, "recovery: the branch is held or finished elsewhere");
                return Ok(Outcome::Waiting);
            }
            Err(e) => return Err(e),
        }
        tracing::info!(
            xid = %branch,
            execution_id = xid.execution_id,
            attempt = xid.attempt,
            database = %p.name,
            decision = decision.as_str(),
            worker = %self.worker_id,
            in_doubt_seconds = age.as_secs_f64(),
            "recovery: finished an in-doubt branch"
        );
        Ok(match decision {
            Decision::Commit => Outcome::Committed,
            _ => Outcome::RolledBack,
        })
    }

    /// Whether the SQLite last resource among `names` committed the transaction, read under
    /// its write lock; a missing record is made a rollback record there. `None` when no
    /// SQLite participant of the transaction is configured here.
    async fn last_resource_outcome(
        &self,
        names: &[String],
        xid: &str,
    ) -> Result<Option<bool>, DbErr> {
        let Some(p) = names
            .iter()
            .filter_map(|n| self.databases.get(n))
            .find(|p| p.dialect() == Dialect::Sqlite)
        else {
            return Ok(None);
        };
        let mut conn = Conn::acquire(p.connection(), Dialect::Sqlite).await?;
        let result = async {
            // Waits (busy timeout) while a coordinator still holds the database.
            conn.simple("BEGIN IMMEDIATE").await?;
            let backend = Dialect::Sqlite.backend();
            let rows = conn
                .query_all(&Statement::from_sql_and_values(
                    backend,
                    "SELECT outcome FROM jobu_last_resource WHERE xid = ?",
                    [xid.into()],
                ))
                .await?;
            let committed = match rows.first() {
                Some(row) => row.try_get::<String>("", "outcome")? == "commit",
                None => {
                    conn.execute(&Statement::from_sql_and_values(
                        backend,
                        "INSERT INTO jobu_last_resource (xid, outcome) VALUES (?, 'rollback')",
                        [xid.into()],
                    ))
                    .await?;
                    false
                }
            };
            conn.simple("COMMIT").await?;
            Ok::<bool, DbErr>(committed)
        }
        .await;
        match result {
            Ok(committed) => Ok(Some(committed)),
            Err(e) => {
                conn.discard();
                Err(e)
            }
        }
    }

    /// Marks finished the log rows none of whose participants holds a branch any more.
    async fn complete_finished(
        &self,
        grace: Duration,
        pending: &BTreeSet<String>,
        unread: &BTreeSet<String>,
    ) -> u32 {
        let rows =
            match log::unfinished(&self.store, grace.as_secs_f64(), UNFINISHED_PER_PASS).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::debug!(error = %e, "recovery: cannot read the decision log");
                    return 0;
                }
            };
        let mut done = 0;
        for row in rows {
            if pending.contains(&row.xid) {
                continue;
            }
            let names = row.participant_names();
            let all_read = names.iter().all(|n| match self.databases.get(n) {
                Some(p) => !unread.contains(n) || p.two_phase != TwoPhase::Available,
                None => false,
            });
            if all_read && log::complete(&self.store, &row.xid).await.is_ok() {
                done += 1;
            }
        }
        done
    }
}

enum Outcome {
    Committed,
    RolledBack,
    Waiting,
}

/// jobu's prepared branches on `p`, with their age when the server says it.
async fn in_doubt(p: &Participant) -> Result<Vec<(String, Option<f64>)>, DbErr> {
    let Some(sql) = protocol::in_doubt(p.dialect()) else {
        return Ok(Vec::new());
    };
    let db = p.connection();
    let rows = db
        .query_all(Statement::from_string(db.get_database_backend(), sql))
        .await?;
    let mut out = Vec::new();
    for row in rows {
        match p.dialect() {
            Dialect::Postgres => {
                let gid: String = row.try_get("", "gid")?;
                let age: Option<f64> = row.try_get("", "age").ok();
                out.push((gid, age));
            }
            _ => {
                if let Some(gtrid) = xa_recover_row(&row) {
                    out.push((gtrid, None));
                }
            }
        }
    }
    Ok(out)
}

/// The gtrid of a jobu branch in a row of `XA RECOVER`; `None` for other XA users' rows.
fn xa_recover_row(row: &QueryResult) -> Option<String> {
    let format: i64 = row
        .try_get::<i64>("", "formatID")
        .or_else(|_| row.try_get::<i32>("", "formatID").map(i64::from))
        .ok()?;
    let gtrid_length: i64 = row
        .try_get::<i64>("", "gtrid_length")
        .or_else(|_| row.try_get::<i32>("", "gtrid_length").map(i64::from))
        .ok()?;
    let data: Vec<u8> = row
        .try_get::<Vec<u8>>("", "data")
        .or_else(|_| row.try_get::<String>("", "data").map(String::into_bytes))
        .ok()?;
    let gtrid = data.get(..usize::try_from(gtrid_length).ok()?)?;
    let gtrid = std::str::from_utf8(gtrid).ok()?;
    (format == XA_FORMAT_ID && gtrid.starts_with(super::xid::PREFIX)).then(|| gtrid.to_string())
}
