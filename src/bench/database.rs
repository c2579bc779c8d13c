//! The database a bench run works in, made fresh for each run and removed after it:
//!
//! - no URL: a SQLite file in a new temporary folder;
//! - a PostgreSQL or MySQL/MariaDB URL: a database of the bench's own (`jobu_bench_<pid>_<n>`)
//!   created on that server through the URL's database and dropped at the end; nothing else
//!   on the server is touched;
//! - a SQLite file URL: the file (created if missing, removed after if the bench created
//!   it). A file that already holds jobu's tables is refused unless `--force`, which empties
//!   them before each run; tables the bench created in an existing file are dropped after.

use std::path::{Path, PathBuf};

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};

use super::BenchError;
use crate::config::{redact_url, sqlite_path, validate_database_url};
use crate::store::Dialect;

/// jobu's tables; a database holding any of them holds jobu data.
const JOBU_TABLES: [&str; 3] = ["cron_jobs", "job_executions", "workers"];
/// Every scratch database's name starts with this.
pub const SCRATCH_PREFIX: &str = "jobu_bench_";

/// Where the runs go, as given on the command line.
#[derive(Debug, Clone)]
pub enum Target {
    TempSqlite,
    SqliteFile { url: String, path: PathBuf },
    Server { url: String, dialect: Dialect },
}

impl Target {
    pub fn parse(url: Option<&str>) -> Result<Target, BenchError> {
        let Some(url) = url else {
            return Ok(Target::TempSqlite);
        };
        validate_database_url(url)
            .map_err(|m| BenchError::Usage(format!("--database-url: {m}")))?;
        let url = match url.strip_prefix("mariadb://") {
            Some(rest) => format!("mysql://{rest}"),
            None => url.to_string(),
        };
        if url.starts_with("sqlite:") {
            let path = sqlite_path(&url).map(Path::to_path_buf).ok_or_else(|| {
                BenchError::Usage(
                    "--database-url: an in-memory SQLite database cannot be shared by the \
                     bench's connection pools; give a file"
                        .into(),
                )
            })?;
            return Ok(Target::SqliteFile { url, path });
        }
        let dialect = if url.starts_with("postgres") {
            Dialect::Postgres
        } else {
            Dialect::MySql
        };
        Ok(Target::Server { url, dialect })
    }
}

/// One run's database; [`Scratch::remove`] undoes what the bench did.
pub struct Scratch {
    /// The URL the run connects to.
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    TempDir(tempfile::TempDir),
    RemoveFile(PathBuf),
    DropTables(String),
    /// Forced: jobu's tables were there before and stay (emptied).
    Keep,
    DropDatabase {
        admin_url: String,
        name: String,
        dialect: Dialect,
    },
}

impl Scratch {
    /// Makes the database for run number `run` (from 0). `force` allows a SQLite file that
    /// holds jobu tables.
    pub async fn create(target: &Target, run: usize, force: bool) -> Result<Scratch, BenchError> {
        match target {
            Target::TempSqlite => {
                let dir = tempfile::Builder::new()
                    .prefix("jobu-bench-")
                    .tempdir()
                    .map_err(|e| {
                        BenchError::Failed(format!("cannot make a temporary folder: {e}"))
                    })?;
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("jobu.db").display());
                Ok(Scratch {
                    url,
                    cleanup: Cleanup::TempDir(dir),
                })
            }
            Target::SqliteFile { url, path } => sqlite_file(url, path, force).await,
            Target::Server { url, dialect } => server(url, *dialect, run).await,
        }
    }

    /// Drops what the bench made; errors are reported, not fatal.
    pub async fn remove(self) {
        match self.cleanup {
            Cleanup::TempDir(dir) => {
                if let Err(e) = dir.close() {
                    eprintln!("jobu bench: cannot remove the temporary folder: {e}");
                }
            }
            Cleanup::RemoveFile(path) => remove_sqlite_files(&path),
            Cleanup::DropTables(url) => {
                let dropped = async {
                    let db = connect(&url).await?;
                    Migrator::down(&db, None).await?;
                    db.execute_unprepared("DROP TABLE IF EXISTS seaql_migrations")
                        .await?;
                    db.close().await
                }
                .await;
                if let Err(e) = dropped {
                    eprintln!("jobu bench: cannot drop the bench's tables: {e}");
                }
            }
            Cleanup::Keep => {}
            Cleanup::DropDatabase {
                admin_url,
                name,
                dialect,
            } => {
                let sql = match dialect {
                    Dialect::Postgres => format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
                    _ => format!("DROP DATABASE IF EXISTS `{name}`"),
                };
                let dropped = async {
                    let db = connect(&admin_url).await?;
                    db.execute_unprepared(&sql).await?;
                    db.close().await
                }
                .await;
                if let Err(e) = dropped {
                    eprintln!(
                        "jobu bench: cannot drop database {name} on {}: {e}",
                        redact_url(&admin_url)
                    );
                }
            }
        }
    }
}

/// A connection of one, outside jobu's stores (so the bench's own statements are not
/// counted as jobu's).
pub async fn connect(url: &str) -> Result<DatabaseConnection, sea_orm::DbErr> {
    let mut opts = sea_orm::ConnectOptions::new(url.to_string());
    opts.max_connections(1)
        .min_connections(0)
        .connect_timeout(std::time::Duration::from_secs(10))
        .sqlx_logging(false);
    Database::connect(opts).await
}

async fn sqlite_file(url: &str, path: &Path, force: bool) -> Result<Scratch, BenchError> {
    if !path.exists() {
        let url = with_create_mode(url);
        return Ok(Scratch {
            url,
            cleanup: Cleanup::RemoveFile(path.to_path_buf()),
        });
    }
    let db = connect(url)
        .await
        .map_err(|e| BenchError::Failed(format!("cannot open {}: {e}", path.display())))?;
    let mut found = Vec::new();
    for table in JOBU_TABLES {
        let rows = db
            .query_all(Statement::from_sql_and_values(
                sea_orm::DatabaseBackend::Sqlite,
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?",
                [table.into()],
            ))
            .await?;
        if !rows.is_empty() {
            found.push(table);
        }
    }
    if found.is_empty() {
        let _ = db.close().await;
        return Ok(Scratch {
            url: url.to_string(),
            cleanup: Cleanup::DropTables(url.to_string()),
        });
    }
    if !force {
        let _ = db.close().await;
        return Err(BenchError::Usage(format!(
            "{} holds jobu data (tables {}); the bench would empty them: pass --force to allow \
             it, or leave out --database-url for a temporary database",
            path.display(),
            found.join(", ")
        )));
    }
    for table in ["job_executions", "workers", "cron_jobs"] {
        if found.contains(&table) {
            db.execute_unprepared(&format!("DELETE FROM {table}"))
                .await?;
        }
    }
    let _ = db.close().await;
    Ok(Scratch {
        url: url.to_string(),
        cleanup: Cleanup::Keep,
    })
}

/// `mode=rwc` unless the URL sets a mode.
fn with_create_mode(url: &str) -> String {
    if url.contains("mode=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

fn remove_sqlite_files(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = PathBuf::from(name);
        if file.exists() {
            if let Err(e) = std::fs::remove_file(&file) {
                eprintln!("jobu bench: cannot remove {}: {e}", file.display());
            }
        }
    }
}

async fn server(admin_url: &str, dialect: Dialect, run: usize) -> Result<Scratch, BenchError> {
    let name = format!("{SCRATCH_PREFIX}{}_{run}", std::process::id());
    let admin = connect(admin_url).await.map_err(|e| {
        BenchError::Failed(format!("cannot connect to {}: {e}", redact_url(admin_url)))
    })?;
    let sql = match dialect {
        Dialect::Postgres => format!("CREATE DATABASE \"{name}\""),
        _ => format!("CREATE DATABASE `{name}`"),
    };
    let created = admin.execute_unprepared(&sql).await;
    let _ = admin.close().await;
    created.map_err(|e| {
        BenchError::Failed(format!(
            "cannot create the scratch database {name} on {}: {e}",
            redact_url(admin_url)
        ))
    })?;
    let mut url = url::Url::parse(admin_url)
        .map_err(|e| BenchError::Usage(format!("--database-url: {e}")))?;
    url.set_path(&format!("/{name}"));
    Ok(Scratch {
        url: url.to_string(),
        cleanup: Cleanup::DropDatabase {
            admin_url: admin_url.to_string(),
            name,
            dialect,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_from_urls() {
        assert!(matches!(Target::parse(None), Ok(Target::TempSqlite)));
        assert!(matches!(
            Target::parse(Some("sqlite:///tmp/x.db")),
            Ok(Target::SqliteFile { .. })
        ));
        assert!(matches!(
            Target::parse(Some("postgres://u@h/db")),
            Ok(Target::Server {
                dialect: Dialect::Postgres,
                ..
            })
        ));
        match Target::parse(Some("mariadb://root@h/mysql")) {
            Ok(Target::Server { url, dialect }) => {
                assert_eq!(dialect, Dialect::MySql);
                assert!(url.starts_with("mysql://"), "{url}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Target::parse(Some("sqlite::memory:")),
            Err(BenchError::Usage(_))
        ));
        assert!(matches!(
            Target::parse(Some("oracle://x")),
            Err(BenchError::Usage(_))
        ));
    }

    #[test]
    fn create_mode_is_added_once() {
        assert_eq!(
            with_create_mode("sqlite:///a.db"),
            "sqlite:///a.db?mode=rwc"
        );
        assert_eq!(
            with_create_mode("sqlite:///a.db?cache=shared"),
            "sqlite:///a.db?cache=shared&mode=rwc"
        );
        assert_eq!(
            with_create_mode("sqlite:///a.db?mode=rw"),
            "sqlite:///a.db?mode=rw"
        );
    }
}
