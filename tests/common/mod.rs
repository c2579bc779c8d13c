//! Test harness shared by the backend suites: a fresh database (or SQLite file) per test on
//! each of SQLite, PostgreSQL and MySQL/MariaDB, migrated and ready.
//!
//! Server URLs come from `JOBU_TEST_POSTGRES_URL` and `JOBU_TEST_MYSQL_URL` (defaults: the
//! local servers as `postgres` and `root`). `JOBU_TEST_BACKENDS=sqlite` limits a run to some
//! backends on a machine without servers; under `CI=true` every backend must run, and an
//! excluded or unreachable one fails the test instead of skipping it.
#![allow(dead_code)]

pub mod admin;
pub mod process;
pub mod proxy;

use jobu::config::DatabaseSettings;
use jobu::store::Store;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};

pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/mysql";
/// Every database a test makes starts with this, so CI can drop leftovers of crashed runs.
pub const TEST_DB_PREFIX: &str = "jobu_t_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

impl Backend {
    pub const ALL: [Backend; 3] = [Backend::Sqlite, Backend::Postgres, Backend::MySql];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::MySql => "mysql",
        }
    }

    fn server_url(self) -> Option<String> {
        let (var, default) = match self {
            Backend::Sqlite => return None,
            Backend::Postgres => ("JOBU_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL),
            Backend::MySql => ("JOBU_TEST_MYSQL_URL", DEFAULT_MYSQL_URL),
        };
        Some(std::env::var(var).unwrap_or_else(|_| default.to_string()))
    }

    /// Whether this run includes the backend; under CI a missing backend is a failure.
    pub fn enabled(self) -> bool {
        let list = std::env::var("JOBU_TEST_BACKENDS").unwrap_or_default();
        let on = list.trim().is_empty()
            || list
                .split(',')
                .any(|b| b.trim().eq_ignore_ascii_case(self.name()));
        if !on && is_ci() {
            panic!(
                "backend {} is excluded by JOBU_TEST_BACKENDS, but CI=true requires every backend",
                self.name()
            );
        }
        if !on {
            eprintln!("skipping {} (JOBU_TEST_BACKENDS={list})", self.name());
        }
        on
    }
}

pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A migrated, empty database that belongs to one test. Clones share the pool.
#[derive(Clone)]
pub struct TestDb {
    pub backend: Backend,
    /// URL of the test's own database, for opening more pools (one per simulated process).
    pub url: String,
    pub store: Store,
    name: String,
    sqlite_dir: Option<std::path::PathBuf>,
}

impl TestDb {
    /// `None` when the backend is excluded from this run (never under CI).
    pub async fn create(backend: Backend) -> Option<TestDb> {
        Self::create_with(backend, true).await
    }

    /// Like [`TestDb::create`]; with `migrate: false` the database is left empty.
    pub async fn create_with(backend: Backend, migrate: bool) -> Option<TestDb> {
        if !backend.enabled() {
            return None;
        }
        let name = format!(
            "{TEST_DB_PREFIX}{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut sqlite_dir = None;
        let url = match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(&name);
                std::fs::create_dir_all(&dir).expect("create sqlite test dir");
                let url = format!("sqlite://{}/jobu.db?mode=rwc", dir.display());
                sqlite_dir = Some(dir);
                url
            }
            Backend::Postgres | Backend::MySql => {
                let server = backend.server_url().expect("server url");
                let admin = connect_admin(backend, &server).await;
                let quoted = match backend {
                    Backend::Postgres => format!("\"{name}\""),
                    _ => format!("`{name}`"),
                };
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {quoted}"))
                    .await
                    .unwrap_or_else(|e| {
                        panic!("create database {name} on {}: {e}", backend.name())
                    });
                let _ = admin.close().await;
                with_database(&server, &name)
            }
        };
        let store = Store::connect(&pool(&url, 5))
            .await
            .expect("connect test db");
        if migrate {
            store.migrate().await.expect("migrate test db");
        }
        Some(TestDb {
            backend,
            url,
            store,
            name,
            sqlite_dir,
        })
    }

    /// Another connection pool to the same database, as a separate process would have.
    pub async fn new_store(&self, max_connections: u32) -> Store {
        Store::connect(&pool(&self.url, max_connections))
            .await
            .expect("connect another pool")
    }

    /// Drops the database. Tests call it last; a failed test leaves its database behind for
    /// inspection, and CI drops leftovers before the next run.
    pub async fn cleanup(self) {
        let TestDb {
            backend,
            store,
            name,
            sqlite_dir,
            ..
        } = self;
        let _ = store.close().await;
        match backend {
            Backend::Sqlite => {
                if let Some(dir) = sqlite_dir {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
            Backend::Postgres | Backend::MySql => {
                let server = backend.server_url().expect("server url");
                let admin = connect_admin(backend, &server).await;
                let sql = match backend {
                    Backend::Postgres => format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
                    _ => format!("DROP DATABASE IF EXISTS `{name}`"),
                };
                let _ = admin.execute_unprepared(&sql).await;
                let _ = admin.close().await;
            }
        }
    }
}

fn pool(url: &str, max_connections: u32) -> DatabaseSettings {
    DatabaseSettings {
        max_connections,
        min_connections: 0,
        ..DatabaseSettings::with_url(url)
    }
}

async fn connect_admin(backend: Backend, url: &str) -> DatabaseConnection {
    let mut opts = sea_orm::ConnectOptions::new(url.to_string());
    opts.max_connections(1).sqlx_logging(false);
    Database::connect(opts).await.unwrap_or_else(|e| {
        panic!(
            "cannot reach the {} test server at {url}: {e}. Start it (see .ci/run), set {} \
             to its URL, or exclude it with JOBU_TEST_BACKENDS (not allowed under CI=true)",
            backend.name(),
            match backend {
                Backend::Postgres => "JOBU_TEST_POSTGRES_URL",
                _ => "JOBU_TEST_MYSQL_URL",
            }
        )
    })
}

/// The server URL with its database path replaced by `name`, query kept.
fn with_database(server: &str, name: &str) -> String {
    let mut url = url::Url::parse(server).expect("valid server url");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Writes one test per backend around an async body taking a [`TestDb`]:
///
/// ```ignore
/// backend_test!(claims_once, |db| async move { ... });
/// ```
///
/// expands to module `claims_once` with tests `sqlite`, `postgres` and `mysql`, each on a
/// 4-thread runtime. `backend_test!(current_thread name, body)` runs them on the
/// single-threaded test runtime instead: nothing the store spawned runs while the test
/// blocks that thread, so what the store has not finished before returning stays undone.
#[macro_export]
macro_rules! backend_test {
    ($name:ident, $body:expr) => {
        $crate::backend_test!(@on [flavor = "multi_thread", worker_threads = 4] $name, $body);
    };
    (current_thread $name:ident, $body:expr) => {
        $crate::backend_test!(@on [] $name, $body);
    };
    (@on [$($runtime:tt)*] $name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test($($runtime)*)]
            async fn sqlite() {
                $crate::common::run(common::Backend::Sqlite, $body).await
            }
            #[tokio::test($($runtime)*)]
            async fn postgres() {
                $crate::common::run(common::Backend::Postgres, $body).await
            }
            #[tokio::test($($runtime)*)]
            async fn mysql() {
                $crate::common::run(common::Backend::MySql, $body).await
            }
        }
    };
}

/// Runs `body` on a fresh database of `backend` and drops the database after it passes.
pub async fn run<F, Fut>(backend: Backend, body: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    body(db.clone()).await;
    db.cleanup().await;
}

/// A cron's executions, oldest fire time first.
#[allow(dead_code)]
pub async fn executions_of(
    store: &Store,
    job_id: i64,
) -> Vec<jobu::entities::job_execution::Model> {
    use jobu::entities::job_execution;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
    job_execution::Entity::find()
        .filter(job_execution::Column::JobId.eq(job_id))
        .order_by_asc(job_execution::Column::ScheduledTime)
        .all(store.connection())
        .await
        .expect("read executions")
}
