//! A Rust handler that moves rows from one database to another atomically: each run takes
//! up to `batch` rows out of `outbox` in the `source` database and appends them to
//! `archive` in the `archive` database, in one transaction over both (two-phase commit; the
//! SQLite archive is the last resource). A crash at any point leaves every row in exactly one
//! of the two databases.
//!
//! ```sh
//! # source: the local PostgreSQL (needs max_prepared_transactions > 0); archive: a SQLite file
//! cargo run --example transfer -- --once
//! JOBU_EXAMPLE_SOURCE_URL=mysql://root@127.0.0.1:3306/test cargo run --example transfer
//! ```

use std::time::Duration;

use jobu::config::{ConfigSource, DatabaseSettings, Settings};
use jobu::handlers::{async_trait, ExecutionContext, Handler, HandlerResult};
use jobu::store::crons::NewCron;
use jobu::store::Store;
use jobu::Runtime;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{json, Value};

/// Moves rows from `source.outbox` to `archive.archive`.
struct MoveRows;

#[async_trait]
impl Handler for MoveRows {
    async fn run(&self, params: Value, ctx: ExecutionContext) -> HandlerResult {
        let batch = params.get("batch").and_then(Value::as_i64).unwrap_or(100);
        let moved = ctx
            .transaction(&["source", "archive"], move |tx| {
                Box::pin(async move {
                    let source = tx.db("source")?;
                    let archive = tx.db("archive")?;
                    let lock = match source.get_database_backend() {
                        DbBackend::Sqlite => "",
                        _ => " FOR UPDATE SKIP LOCKED",
                    };
                    let rows = source
                        .query_all(Statement::from_string(
                            source.get_database_backend(),
                            format!("SELECT id, body FROM outbox ORDER BY id LIMIT {batch}{lock}"),
                        ))
                        .await?;
                    for row in &rows {
                        let id: i64 = row.try_get("", "id")?;
                        let body: String = row.try_get("", "body")?;
                        archive
                            .execute(Statement::from_sql_and_values(
                                archive.get_database_backend(),
                                "INSERT INTO archive (id, body) VALUES (?, ?)",
                                [id.into(), body.into()],
                            ))
                            .await?;
                        source
                            .execute(Statement::from_sql_and_values(
                                source.get_database_backend(),
                                match source.get_database_backend() {
                                    DbBackend::Postgres => "DELETE FROM outbox WHERE id = $1",
                                    _ => "DELETE FROM outbox WHERE id = ?",
                                },
                                [id.into()],
                            ))
                            .await?;
                    }
                    Ok(rows.len())
                })
            })
            .await?;
        tracing::info!(moved, attempt = ctx.attempt, "rows moved to the archive");
        Ok(json!({ "moved": moved }))
    }

    fn validate_params(&self, params: &Value) -> Result<(), String> {
        match params.get("batch") {
            None => Ok(()),
            Some(b) if b.as_i64().is_some_and(|n| (1..=10_000).contains(&n)) => Ok(()),
            Some(_) => Err("`batch` must be an integer from 1 to 10000".into()),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let once = std::env::args().any(|a| a == "--once");
    let mut settings = Settings::load(&ConfigSource::default())?;
    settings.dispatcher.min_cron_interval_seconds = 0;
    let source = std::env::var("JOBU_EXAMPLE_SOURCE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let archive = std::env::var("JOBU_EXAMPLE_ARCHIVE_URL")
        .unwrap_or_else(|_| "sqlite://data/archive.db?mode=rwc".into());
    setup(&source, &archive).await?;
    settings
        .databases
        .insert("source".into(), DatabaseSettings::with_url(source));
    settings
        .databases
        .insert("archive".into(), DatabaseSettings::with_url(archive));
    settings.worker.databases = vec!["source".into(), "archive".into()];
    let _log = jobu::telemetry::init(&settings.logging);

    let running = Runtime::new(settings)
        .handler("move_rows", MoveRows)
        .start()
        .await?;
    let mut cron = NewCron::new(
        "move-rows-example",
        if once { "*/2 * * * * *" } else { "* * * * *" },
        "move_rows",
    );
    cron.handler_params = Some(json!({ "batch": 100 }));
    if let Err(e) = running.store().insert_cron(&cron).await {
        tracing::debug!(error = %e, "cron not inserted (created by an earlier run)");
    }
    if !once {
        running.run_until_signal().await;
        return Ok(());
    }
    let store = running.store().clone();
    for _ in 0..150 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let done = store
            .connection()
            .query_one(Statement::from_string(
                store.connection().get_database_backend(),
                "SELECT COUNT(*) AS n FROM job_executions WHERE handler_name = 'move_rows' \
                 AND status = 'SUCCESS'",
            ))
            .await?
            .map(|r| r.try_get::<i64>("", "n"))
            .transpose()?
            .unwrap_or(0);
        if done > 0 {
            println!("moved the outbox to the archive atomically");
            break;
        }
    }
    running.shutdown();
    running.wait().await;
    Ok(())
}

/// The example's tables, and a few rows to move.
async fn setup(source: &str, archive: &str) -> Result<(), Box<dyn std::error::Error>> {
    let table = |name: &str| {
        format!(
            "CREATE TABLE IF NOT EXISTS {name} (id BIGINT PRIMARY KEY, body VARCHAR(200) NOT NULL)"
        )
    };
    let source = Store::connect(&DatabaseSettings::with_url(source)).await?;
    source
        .connection()
        .execute_unprepared(&table("outbox"))
        .await?;
    let archive = Store::connect(&DatabaseSettings::with_url(archive)).await?;
    archive
        .connection()
        .execute_unprepared(&table("archive"))
        .await?;
    let base = chrono::Utc::now().timestamp_millis() * 10;
    for i in 0..3 {
        source
            .connection()
            .execute_unprepared(&format!(
                "INSERT INTO outbox (id, body) VALUES ({}, 'message {i}')",
                base + i
            ))
            .await?;
    }
    source.close().await?;
    archive.close().await?;
    Ok(())
}
