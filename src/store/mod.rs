//! The protocols of DESIGN.md, the only code that writes `cron_jobs` scheduling state and
//! `job_executions`. One file per concern, each holding its SQL for all three dialects:
//!
//! - [`create`]: insert-if-absent on `UNIQUE(job_id, scheduled_time)`
//! - [`claim`]: PENDING -> RUNNING by conditional update, with owner token and lease
//! - [`transition`]: the retry rule, lease renewal and cancel polls of a claimed attempt
//! - [`finish`]: how attempts end (success, failure, cancel, release), many per statement
//! - [`chain_start`]: the executions a final outcome starts (`on_success`, `on_failure`)
//! - [`overlap`]: overlap policies: one unfinished execution per exclusive cron, buffering
//! - [`fire_times`]: the ledger of every fire time's decision (run, skipped, missed, excluded)
//! - [`backfill`]: executions for a cron's past fire times on an operator's request
//! - [`rescue`]: expired leases back to PENDING, or final when retries are exhausted
//! - [`retention`]: old finished executions deleted in batches
//! - [`crons`]: cron rows and the dispatcher's per-cron marker
//! - [`operator`]: what an operator does to executions: run now, retry, cancel, delete
//! - [`queries`]: read-only views for the admin API: execution lists and statistics
//! - [`workers`]: the presence rows of live processes
//! - [`wake`]: wake-ups of idle workers when work becomes due (in-process, PostgreSQL NOTIFY)
//!
//! Every instant the protocols compare (eligibility, leases) comes from the database clock.

pub mod backfill;
pub mod bulk;
pub mod chain_start;
pub mod chains;
pub mod claim;
pub mod create;
pub mod crons;
pub mod dialect;
pub mod finish;
pub mod fire_times;
pub mod operator;
pub mod overlap;
pub mod pause;
pub mod queries;
pub mod rescue;
pub mod retention;
pub mod stats;
pub mod transition;
pub mod wake;
pub mod workers;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr, FromQueryResult,
    TransactionTrait,
};

use crate::config::{self, DatabaseSettings};
pub use dialect::Dialect;

/// The status names as stored.
pub use crate::entities::job_execution::Status;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error("cannot prepare database at {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    /// The write would break a uniqueness rule (a cron name) or a state rule.
    #[error("{0}")]
    Conflict(String),
    /// Input the store refuses, naming the field and an error code for the API.
    #[error("{message}")]
    Rejected {
        field: &'static str,
        error: &'static str,
        message: String,
    },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// How many times a failed migration is re-checked and retried at start.
const MIGRATE_ATTEMPTS: u32 = 5;
/// Key of the database lock held while migrating (ASCII "jobu").
const MIGRATION_LOCK_KEY: i64 = 0x6a6f_6275;

/// How many times a statement that hit a deadlock or a busy SQLite file is retried.
const TRANSIENT_RETRIES: u32 = 8;

/// A connection pool to jobu's database and the dialect it speaks.
#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
    dialect: Dialect,
    /// How the pool was opened, so [`Store::dedicated`] can open another one like it.
    settings: Option<std::sync::Arc<DatabaseSettings>>,
    /// Shared by every clone: raised when work becomes due ([`wake`]).
    wakeups: std::sync::Arc<wake::Wakeups>,
}

/// MySQL/MariaDB sessions run at READ COMMITTED: at InnoDB's default REPEATABLE READ, range
/// updates (cancelling rows created ahead) take next-key and gap locks, and the subquery
/// rows they read are locked too, which deadlocks with the creation protocol's inserts.
/// Every protocol here relies on row guards and locks, not on a repeatable snapshot.
const MYSQL_SESSION_SETUP: &str = "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED";

impl Store {
    /// Connects with the pool settings of one named database. A SQLite file and its folder
    /// are created on first use when the URL says `mode=rwc`.
    pub async fn connect(settings: &DatabaseSettings) -> StoreResult<Store> {
        config::validate_database_url(&settings.url).map_err(StoreError::Invalid)?;
        let url = normalize_url(&settings.url);
        let is_mysql = url.starts_with("mysql:");
        if let Some(path) = config::sqlite_path(&url) {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                    path: parent.display().to_string(),
                    source,
                })?;
            }
        }
        let mut opts = ConnectOptions::new(url);
        opts.max_connections(settings.max_connections)
            .min_connections(settings.min_connections)
            .connect_timeout(Duration::from_secs(settings.connect_timeout_seconds))
            .acquire_timeout(Duration::from_secs(settings.acquire_timeout_seconds))
            .idle_timeout(Duration::from_secs(settings.idle_timeout_seconds))
            .max_lifetime(Duration::from_secs(settings.max_lifetime_seconds))
            .sqlx_logging(settings.log_statements)
            .sqlx_logging_level(tracing::log::LevelFilter::Info)
            // WAL lets readers run beside the one writer; waiting on a busy file beats
            // failing, since several processes may share it.
            .map_sqlx_sqlite_opts(|o| {
                o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(30))
                    .foreign_keys(true)
            });
        let db = if is_mysql {
            connect_mysql(opts).await?
        } else {
            Database::connect(opts).await?
        };
        let mut store = Store::from_connection(db);
        store.settings = Some(std::sync::Arc::new(settings.clone()));
        if store.dialect == Dialect::MySql {
            store.check_mysql_server().await?;
        }
        Ok(store)
    }

    pub fn from_connection(mut db: DatabaseConnection) -> Store {
        db.set_metric_callback(stats::count);
        let dialect = Dialect::of(db.get_database_backend());
        Store {
            db,
            dialect,
            settings: None,
            wakeups: Default::default(),
        }
    }

    /// Another pool to the same database, of at most `max_connections`, for work that must
    /// not queue behind everything else on the main pool (lease renewals: a worker whose
    /// renewals wait loses its leases). A store built from a connection, and an in-memory
    /// SQLite database, have no second pool to open: the store itself is returned.
    pub async fn dedicated(&self, max_connections: u32) -> StoreResult<Store> {
        let Some(settings) = &self.settings else {
            return Ok(self.clone());
        };
        if self.dialect == Dialect::Sqlite && config::sqlite_path(&settings.url).is_none() {
            return Ok(self.clone());
        }
        let max = max_connections.max(1);
        let mut store = Store::connect(&DatabaseSettings {
            max_connections: max,
            min_connections: settings.min_connections.min(max),
            ..(**settings).clone()
        })
        .await?;
        store.share_wakeups_with(self);
        Ok(store)
    }

    /// Refuses a MySQL or MariaDB server without `SKIP LOCKED`, which the claim needs.
    async fn check_mysql_server(&self) -> StoreResult<()> {
        let row = self
            .db
            .query_one(sea_orm::Statement::from_string(
                self.db.get_database_backend(),
                "SELECT VERSION() AS v",
            ))
            .await?
            .ok_or_else(|| StoreError::Invalid("the server returned no version".into()))?;
        let version: String = row.try_get("", "v")?;
        dialect::check_skip_locked_support(&version).map_err(StoreError::Invalid)
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Applies pending migrations; returns how many were applied (0 when up to date).
    pub async fn migrate(&self) -> StoreResult<usize> {
        let pending = Migrator::get_pending_migrations(&self.db).await?.len();
        Migrator::up(&self.db, None).await?;
        Ok(pending)
    }

    /// Applies pending migrations while other processes may be starting against the same
    /// database: PostgreSQL and MySQL take a database lock so one process migrates while the
    /// others wait; on SQLite, and whenever a racing migration fails anyway, the schema is
    /// re-checked and a database that another process has just migrated counts as done.
    pub async fn migrate_shared(&self) -> StoreResult<usize> {
        let mut attempt = 0;
        loop {
            let result = match self.dialect {
                Dialect::Sqlite => self.migrate().await,
                Dialect::Postgres | Dialect::MySql => self.migrate_under_lock().await,
            };
            match result {
                Ok(n) => return Ok(n),
                Err(e) if attempt < MIGRATE_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                    if self.pending_migrations().await? == 0 {
                        return Ok(0);
                    }
                    tracing::warn!(error = %e, attempt, "migration failed, retrying");
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn migrate_under_lock(&self) -> StoreResult<usize> {
        // The lock lives on the transaction's connection; the migrations run on others.
        let txn = self.db.begin().await?;
        let (lock, unlock) = match self.dialect {
            Dialect::Postgres => (
                format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"),
                None,
            ),
            _ => (
                format!("SELECT GET_LOCK('jobu_migrate_{MIGRATION_LOCK_KEY}', 600)"),
                Some(format!(
                    "SELECT RELEASE_LOCK('jobu_migrate_{MIGRATION_LOCK_KEY}')"
                )),
            ),
        };
        let outcome = async {
            txn.execute_unprepared(&lock).await?;
            let result = self.migrate().await;
            if let Some(unlock) = unlock {
                txn.execute_unprepared(&unlock).await?;
            }
            Ok::<_, StoreError>(result)
        }
        .await;
        settle(txn, outcome).await?
    }

    /// Migrations this binary knows that the database has not applied.
    pub async fn pending_migrations(&self) -> StoreResult<usize> {
        Ok(Migrator::get_pending_migrations(&self.db).await?.len())
    }

    /// The database clock.
    pub async fn now(&self) -> StoreResult<DateTime<Utc>> {
        #[derive(sea_orm::FromQueryResult)]
        struct Now {
            now: DateTime<Utc>,
        }
        let mut q = dialect::Sql::new(self.dialect);
        q.push("SELECT ").now().push(" AS now");
        let row = Now::find_by_statement(q.build()).one(&self.db).await?;
        row.map(|r| r.now)
            .ok_or_else(|| StoreError::Invalid("the database returned no clock".into()))
    }

    /// Refreshes the planner's statistics of `job_executions`, as autovacuum (PostgreSQL)
    /// or InnoDB would after a while: after a bulk load into a fresh table the planner
    /// still believes it is nearly empty and picks plans that read the whole backlog.
    pub async fn analyze(&self) -> StoreResult<()> {
        let sql = match self.dialect {
            Dialect::Postgres => "ANALYZE job_executions",
            Dialect::MySql => "ANALYZE TABLE job_executions",
            Dialect::Sqlite => "ANALYZE job_executions",
        };
        self.db.execute_unprepared(sql).await?;
        Ok(())
    }

    pub async fn close(self) -> StoreResult<()> {
        self.db.close().await?;
        Ok(())
    }
}

/// Opens a MySQL/MariaDB pool whose every connection runs [`MYSQL_SESSION_SETUP`] first
/// (sea-orm's own connect has no per-connection hook).
async fn connect_mysql(opts: ConnectOptions) -> StoreResult<DatabaseConnection> {
    use sea_orm::sqlx::mysql::{MySql, MySqlConnectOptions};
    use sea_orm::sqlx::ConnectOptions as _;
    let conn_err = |e: sea_orm::sqlx::Error| DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e));
    let connect = opts
        .get_url()
        .parse::<MySqlConnectOptions>()
        .map_err(conn_err)?
        .disable_statement_logging();
    let pool = opts
        .sqlx_pool_options::<MySql>()
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                sea_orm::sqlx::Executor::execute(&mut *conn, MYSQL_SESSION_SETUP).await?;
                Ok(())
            })
        })
        .connect_with(connect)
        .await
        .map_err(conn_err)?;
    Ok(sea_orm::SqlxMySqlConnector::from_sqlx_mysql_pool(pool))
}

/// Runs a statement that returns whole `job_executions` rows (its select list from
/// [`crate::entities::job_execution::select_list`]), decoded by position.
pub(crate) async fn execution_rows<C: ConnectionTrait>(
    db: &C,
    q: dialect::Sql,
) -> Result<Vec<crate::entities::job_execution::Model>, DbErr> {
    db.query_all(q.build())
        .await?
        .iter()
        .map(crate::entities::job_execution::from_select_list)
        .collect()
}

/// The first column of every row `stmt` returns, as ids (into a `Vec`, a set...).
pub(crate) async fn query_ids<C, B>(db: &C, stmt: sea_orm::Statement) -> Result<B, DbErr>
where
    C: ConnectionTrait,
    B: FromIterator<i64>,
{
    db.query_all(stmt)
        .await?
        .iter()
        .map(|r| r.try_get_by_index::<i64>(0))
        .collect()
}

/// Ends `txn` by the outcome of what ran in it: COMMIT after `Ok`, ROLLBACK after `Err`,
/// awaited either way. A dropped sea-orm transaction only queues its ROLLBACK until the pool
/// next touches the connection, and until then its locks stand: `SKIP LOCKED` reads of
/// other sessions pass over the rows (a dispatcher's next page misses the crons, a claim
/// the executions) and an advisory lock blocks. The transactions whose locks others skip
/// (dispatch pages, MySQL's claim and rescue) and the migration lock end here, not by drop;
/// the others only make a waiter wait until the pool flushes the ROLLBACK.
pub(crate) async fn settle<T, E>(
    txn: sea_orm::DatabaseTransaction,
    outcome: Result<T, E>,
) -> Result<T, E>
where
    E: From<DbErr>,
{
    match outcome {
        Ok(value) => {
            txn.commit().await?;
            Ok(value)
        }
        Err(e) => {
            if let Err(rollback) = txn.rollback().await {
                // The connection is likely gone; the server ends the transaction with it.
                tracing::debug!(error = %rollback, "rollback after a failed transaction failed");
            }
            Err(e)
        }
    }
}

/// `mariadb://` is accepted for convenience; sqlx speaks to MariaDB as `mysql://`.
fn normalize_url(url: &str) -> String {
    match url.strip_prefix("mariadb://") {
        Some(rest) => format!("mysql://{rest}"),
        None => url.to_string(),
    }
}

/// Runs `op` again while it fails with a deadlock, lock timeout or busy SQLite file.
pub(crate) async fn retry_transient<T, F, Fut>(mut op: F) -> Result<T, DbErr>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DbErr>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Err(e) if attempt < TRANSIENT_RETRIES && dialect::is_transient(&e) => {
                attempt += 1;
                let pause = 5u64 * (1 << attempt.min(6)) + rand::random_range(0..10u64);
                tracing::debug!(error = %e, attempt, "transient database error, retrying");
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            other => return other,
        }
    }
}
