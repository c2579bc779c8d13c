//! One participant's part of a transaction: a connection of its own, taken from the
//! participant's pool for the whole branch (XA needs one session from `XA START` to
//! `XA PREPARE`), on which the handler's statements run. A [`Branch`] is a sea-orm
//! [`ConnectionTrait`], so entities, query builders and raw statements all work on it.
//!
//! A branch dropped before it finished (the attempt was cancelled or timed out, or the
//! coordinator failed) closes its connection instead of returning it to the pool: the server
//! then rolls back whatever was not prepared.

use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::{self, MySql, Postgres, Sqlite};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, ExecResult, QueryResult, RuntimeErr,
    Statement,
};
use sea_query_binder::SqlxValues;

use crate::store::Dialect;

/// A connection taken out of a participant's pool.
pub(crate) enum Conn {
    Postgres(PoolConnection<Postgres>),
    MySql(PoolConnection<MySql>),
    Sqlite(PoolConnection<Sqlite>),
}

fn exec_err(e: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(e))
}

fn query_err(e: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(e))
}

fn values(stmt: &Statement) -> SqlxValues {
    SqlxValues(stmt.values.clone().unwrap_or(sea_orm::Values(Vec::new())))
}

impl Conn {
    /// A connection of `db`'s pool.
    pub(crate) async fn acquire(db: &DatabaseConnection, dialect: Dialect) -> Result<Conn, DbErr> {
        let conn_err = |e| DbErr::Conn(RuntimeErr::SqlxError(e));
        Ok(match dialect {
            Dialect::Postgres => Conn::Postgres(
                db.get_postgres_connection_pool()
                    .acquire()
                    .await
                    .map_err(conn_err)?,
            ),
            Dialect::MySql => Conn::MySql(
                db.get_mysql_connection_pool()
                    .acquire()
                    .await
                    .map_err(conn_err)?,
            ),
            Dialect::Sqlite => Conn::Sqlite(
                db.get_sqlite_connection_pool()
                    .acquire()
                    .await
                    .map_err(conn_err)?,
            ),
        })
    }

    /// Runs `sql` as plain text, without preparing it (XA statements must be sent so).
    pub(crate) async fn simple(&mut self, sql: &str) -> Result<ExecResult, DbErr> {
        use sqlx::Executor;
        match self {
            Conn::Postgres(c) => c.execute(sql).await.map(Into::into).map_err(exec_err),
            Conn::MySql(c) => c.execute(sql).await.map(Into::into).map_err(exec_err),
            Conn::Sqlite(c) => c.execute(sql).await.map(Into::into).map_err(exec_err),
        }
    }

    pub(crate) async fn execute(&mut self, stmt: &Statement) -> Result<ExecResult, DbErr> {
        let sql = stmt.sql.as_str();
        match self {
            Conn::Postgres(c) => sqlx::query_with(sql, values(stmt))
                .execute(&mut **c)
                .await
                .map(Into::into)
                .map_err(exec_err),
            Conn::MySql(c) => sqlx::query_with(sql, values(stmt))
                .execute(&mut **c)
                .await
                .map(Into::into)
                .map_err(exec_err),
            Conn::Sqlite(c) => sqlx::query_with(sql, values(stmt))
                .execute(&mut **c)
                .await
                .map(Into::into)
                .map_err(exec_err),
        }
    }

    pub(crate) async fn query_all(&mut self, stmt: &Statement) -> Result<Vec<QueryResult>, DbErr> {
        let sql = stmt.sql.as_str();
        match self {
            Conn::Postgres(c) => sqlx::query_with(sql, values(stmt))
                .fetch_all(&mut **c)
                .await
                .map(|rows| rows.into_iter().map(Into::into).collect())
                .map_err(query_err),
            Conn::MySql(c) => sqlx::query_with(sql, values(stmt))
                .fetch_all(&mut **c)
                .await
                .map(|rows| rows.into_iter().map(Into::into).collect())
                .map_err(query_err),
            Conn::Sqlite(c) => sqlx::query_with(sql, values(stmt))
                .fetch_all(&mut **c)
                .await
                .map(|rows| rows.into_iter().map(Into::into).collect())
                .map_err(query_err),
        }
    }

    /// Takes the connection out of its pool and closes it.
    pub(crate) fn discard(self) {
        match self {
            Conn::Postgres(c) => drop(c.detach()),
            Conn::MySql(c) => drop(c.detach()),
            Conn::Sqlite(c) => drop(c.detach()),
        }
    }
}

/// Where a branch stands in the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BranchState {
    /// Begun; the handler's statements run.
    Active,
    /// Prepared (phase one done): only the decision is missing.
    Prepared,
    /// The prepare was sent but its reply was lost: prepared or not, nobody knows.
    PrepareUnknown,
    /// Committed or rolled back; the connection went back to the pool.
    Finished,
}

/// One participant's branch; see the module documentation.
pub struct Branch {
    pub(crate) name: String,
    pub(crate) dialect: Dialect,
    /// The branch id for two-phase commit; `None` for a transaction over one database.
    pub(crate) id: Option<String>,
    pub(crate) conn: tokio::sync::Mutex<Option<Conn>>,
    pub(crate) state: BranchState,
}

impl std::fmt::Debug for Branch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Branch")
            .field("database", &self.name)
            .field("dialect", &self.dialect)
            .field("id", &self.id)
            .field("state", &self.state)
            .finish()
    }
}

impl Branch {
    /// The configured name of the participant (a key of `databases`).
    pub fn database(&self) -> &str {
        &self.name
    }

    /// Runs protocol statements in order on the branch's connection.
    pub(crate) async fn protocol(&mut self, statements: &[String]) -> Result<(), DbErr> {
        let conn = self.conn.get_mut().as_mut().ok_or_else(closed)?;
        for sql in statements {
            conn.simple(sql).await?;
        }
        Ok(())
    }

    /// Ends the branch: its connection goes back to the pool, clean.
    pub(crate) fn finish(&mut self) {
        self.state = BranchState::Finished;
        drop(self.conn.get_mut().take());
    }

    /// Ends the branch after a failure: its connection is closed, so the server drops
    /// whatever the session still held.
    pub(crate) fn discard(&mut self) {
        self.state = BranchState::Finished;
        if let Some(conn) = self.conn.get_mut().take() {
            conn.discard();
        }
    }
}

impl Drop for Branch {
    fn drop(&mut self) {
        // A PostgreSQL session after PREPARE TRANSACTION is clean; any other unfinished
        // branch may hold an open transaction and must not go back to the pool.
        let clean = self.state == BranchState::Finished
            || (self.state == BranchState::Prepared && self.dialect == Dialect::Postgres);
        if !clean {
            if let Some(conn) = self.conn.get_mut().take() {
                conn.discard();
            }
        }
    }
}

fn closed() -> DbErr {
    DbErr::Custom("the transaction branch is finished".into())
}

#[async_trait::async_trait]
impl ConnectionTrait for Branch {
    fn get_database_backend(&self) -> DbBackend {
        self.dialect.backend()
    }

    async fn execute(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        let mut guard = self.conn.lock().await;
        guard.as_mut().ok_or_else(closed)?.execute(&stmt).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        let mut guard = self.conn.lock().await;
        guard.as_mut().ok_or_else(closed)?.simple(sql).await
    }

    async fn query_one(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        let mut guard = self.conn.lock().await;
        let rows = guard.as_mut().ok_or_else(closed)?.query_all(&stmt).await?;
        Ok(rows.into_iter().next())
    }

    async fn query_all(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        let mut guard = self.conn.lock().await;
        guard.as_mut().ok_or_else(closed)?.query_all(&stmt).await
    }
}
