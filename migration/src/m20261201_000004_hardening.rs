//! Hardening of the schema:
//!
//! - `job_executions.cancel_reason`: why a row was CANCELLED by someone other than its
//!   attempt (`operator`, or `unscheduled` when its cron was disabled or deleted before the
//!   fire time). Rows cancelled only because the cron was off are re-armed when the cron
//!   fires that time after all, so their unique key does not swallow the fire time.
//! - MySQL/MariaDB: identifier columns get a binary, NO PAD collation. The server default
//!   (`utf8mb4_general_ci`, PAD SPACE) compares `Report`, `report` and `report ` as equal,
//!   so a worker could claim an execution of a handler it does not have and cron names
//!   would be unique differently than on PostgreSQL and SQLite, which compare bytes.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, Statement};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum JobExecutions {
    Table,
    CancelReason,
}

/// (table, column, type and nullability as created by the earlier migrations).
const IDENTIFIERS: [(&str, &str, &str); 10] = [
    ("cron_jobs", "name", "VARCHAR(100) NOT NULL"),
    ("cron_jobs", "handler_name", "VARCHAR(100) NOT NULL"),
    (
        "cron_jobs",
        "timezone",
        "VARCHAR(64) NOT NULL DEFAULT 'UTC'",
    ),
    (
        "cron_jobs",
        "misfire_policy",
        "VARCHAR(16) NOT NULL DEFAULT 'latest'",
    ),
    ("job_executions", "handler_name", "VARCHAR(100) NOT NULL"),
    (
        "job_executions",
        "status",
        "VARCHAR(16) NOT NULL DEFAULT 'PENDING'",
    ),
    (
        "job_executions",
        "param_source",
        "VARCHAR(16) NOT NULL DEFAULT 'cron'",
    ),
    ("job_executions", "owner_token", "VARCHAR(64) NULL"),
    ("job_executions", "worker_id", "VARCHAR(128) NULL"),
    ("workers", "id", "VARCHAR(128) NOT NULL"),
];

/// The binary NO PAD collation of utf8mb4 on this server: MariaDB calls it
/// `utf8mb4_nopad_bin` (10.2+), MySQL `utf8mb4_0900_bin` (8.0.17+).
async fn binary_collation(manager: &SchemaManager<'_>) -> Result<&'static str, DbErr> {
    let db = manager.get_connection();
    let row = db
        .query_one(Statement::from_string(
            DbBackend::MySql,
            "SELECT VERSION() AS v".to_string(),
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("the server returned no version".into()))?;
    let version: String = row.try_get("", "v")?;
    Ok(if version.to_ascii_lowercase().contains("mariadb") {
        "utf8mb4_nopad_bin"
    } else {
        "utf8mb4_0900_bin"
    })
}

async fn set_collations(manager: &SchemaManager<'_>, collation: Option<&str>) -> Result<(), DbErr> {
    let db = manager.get_connection();
    for table in ["cron_jobs", "job_executions", "workers"] {
        let columns: Vec<String> = IDENTIFIERS
            .iter()
            .filter(|(t, _, _)| *t == table)
            .map(|(_, column, ty)| {
                let (base, rest) = ty.split_once(' ').unwrap_or((ty, ""));
                match collation {
                    Some(c) => {
                        format!("MODIFY `{column}` {base} CHARACTER SET utf8mb4 COLLATE {c} {rest}")
                    }
                    None => format!("MODIFY `{column}` {base} {rest}"),
                }
            })
            .collect();
        db.execute_unprepared(&format!("ALTER TABLE `{table}` {}", columns.join(", ")))
            .await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(JobExecutions::Table)
                    .add_column(
                        ColumnDef::new(JobExecutions::CancelReason)
                            .string_len(32)
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DbBackend::MySql {
            let collation = binary_collation(manager).await?;
            set_collations(manager, Some(collation)).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::MySql {
            set_collations(manager, None).await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(JobExecutions::Table)
                    .drop_column(JobExecutions::CancelReason)
                    .to_owned(),
            )
            .await
    }
}
