//! Presence: each running process keeps one `workers` row fresh (upsert at start and on every
//! beat, delete at a clean stop), so operators can list the live fleet. A process that died
//! leaves a row whose heartbeat goes stale; readers ignore stale rows and beats prune them.
//! How many attempts a process runs is read from `job_executions` (RUNNING rows naming it),
//! so the figure cannot drift from the rows themselves.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult};

use super::dialect::Sql;
use super::{retry_transient, Store, StoreResult};
use crate::entities::job_execution::Status;

/// One process as it registers itself.
#[derive(Debug, Clone)]
pub struct Presence {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub roles: Vec<String>,
    pub handlers: Vec<String>,
    pub concurrency: i32,
}

/// A live process and the attempts it runs now.
#[derive(Debug, Clone)]
pub struct LiveWorker {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub roles: Vec<String>,
    pub handlers: Vec<String>,
    pub concurrency: i32,
    pub running: u64,
    pub started_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
}

#[derive(FromQueryResult)]
struct Row {
    id: String,
    host: String,
    pid: i64,
    roles: String,
    handlers: String,
    concurrency: i32,
    started_at: DateTime<Utc>,
    last_heartbeat_at: DateTime<Utc>,
    running: i64,
}

impl Store {
    /// Inserts or refreshes this process's row. `started` is true for the first beat, which
    /// also resets `started_at` (a restarted process may reuse a configured id).
    pub async fn beat(&self, me: &Presence, started: bool) -> StoreResult<()> {
        let roles = me.roles.join(",");
        let handlers = serde_json::to_string(&me.handlers).unwrap_or_else(|_| "[]".into());
        let run = || async {
            let mut q = Sql::new(self.dialect);
            q.push("UPDATE workers SET last_heartbeat_at = ")
                .now()
                .push(", host = ")
                .bind(me.host.clone())
                .push(", pid = ")
                .bind(me.pid)
                .push(", roles = ")
                .bind(roles.clone())
                .push(", handlers = ")
                .bind(handlers.clone())
                .push(", concurrency = ")
                .bind(me.concurrency);
            if started {
                q.push(", started_at = ").now();
            }
            q.push(" WHERE id = ").bind(me.id.clone());
            if self.db.execute(q.build()).await?.rows_affected() > 0 {
                return Ok::<_, DbErr>(());
            }
            let mut q = Sql::new(self.dialect);
            q.push(
                "INSERT INTO workers (id, host, pid, roles, handlers, concurrency, started_at, \
                 last_heartbeat_at) VALUES (",
            )
            .bind(me.id.clone())
            .push(", ")
            .bind(me.host.clone())
            .push(", ")
            .bind(me.pid)
            .push(", ")
            .bind(roles.clone())
            .push(", ")
            .bind(handlers.clone())
            .push(", ")
            .bind(me.concurrency)
            .push(", ")
            .now()
            .push(", ")
            .now()
            .push(")");
            match self.db.execute(q.build()).await {
                Ok(_) => Ok(()),
                // Another process inserted the same id between our two statements: a
                // misconfigured duplicate worker.id; its next beat updates the row.
                Err(e) if super::dialect::is_unique_violation(&e) => Ok(()),
                Err(e) => Err(e),
            }
        };
        Ok(retry_transient(run).await?)
    }

    /// Removes this process's row at a clean stop.
    pub async fn leave(&self, id: &str) -> StoreResult<()> {
        let mut q = Sql::new(self.dialect);
        q.push("DELETE FROM workers WHERE id = ")
            .bind(id.to_string());
        self.db.execute(q.build()).await?;
        Ok(())
    }

    /// Deletes rows whose heartbeat is older than `stale_seconds`: processes that died.
    pub async fn prune_workers(&self, stale_seconds: f64) -> StoreResult<u64> {
        let mut q = Sql::new(self.dialect);
        q.push("DELETE FROM workers WHERE last_heartbeat_at < ")
            .now_plus(-stale_seconds);
        Ok(self.db.execute(q.build()).await?.rows_affected())
    }

    /// Processes whose heartbeat is at most `stale_seconds` old, by id, with the number of
    /// RUNNING executions that name each.
    pub async fn live_workers(&self, stale_seconds: f64) -> StoreResult<Vec<LiveWorker>> {
        let mut q = Sql::new(self.dialect);
        q.push(
            "SELECT w.id, w.host, w.pid, w.roles, w.handlers, w.concurrency, w.started_at, \
             w.last_heartbeat_at, (SELECT COUNT(*) FROM job_executions e WHERE e.worker_id = w.id \
             AND e.status = ",
        )
        .status(Status::Running)
        .push(") AS running FROM workers w WHERE w.last_heartbeat_at >= ")
        .now_plus(-stale_seconds)
        .push(" ORDER BY w.id");
        let rows = Row::find_by_statement(q.build()).all(&self.db).await?;
        Ok(rows
            .into_iter()
            .map(|r| LiveWorker {
                id: r.id,
                host: r.host,
                pid: r.pid,
                roles: r
                    .roles
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
                handlers: serde_json::from_str(&r.handlers).unwrap_or_default(),
                concurrency: r.concurrency,
                running: r.running.max(0) as u64,
                started_at: r.started_at,
                last_heartbeat_at: r.last_heartbeat_at,
            })
            .collect())
    }
}
