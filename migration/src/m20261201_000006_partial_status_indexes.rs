//! Only PENDING and RUNNING rows are ever looked up by status, yet the status indexes held an
//! entry for every finished row, and every change of status wrote one more: a drain of
//! 100,000 executions left 200,000 dead entries to skip. On PostgreSQL and SQLite these
//! indexes become partial, holding unfinished rows only; a finished row leaves them. MySQL
//! has no partial indexes and keeps the full ones. Queries name the status as a literal
//! (`Sql::status`) so that both planners can match the predicate.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// (name, definition) of each partial index and the full index it replaces.
const INDEXES: [(&str, &str, &str, &str); 3] = [
    (
        "ix_job_executions_pending_run_at_id",
        "(run_at, id) WHERE status = 'PENDING'",
        "ix_job_executions_status_run_at_id",
        "(status, run_at, id)",
    ),
    (
        "ix_job_executions_running_lease",
        "(lease_expires_at) WHERE status = 'RUNNING'",
        "ix_job_executions_status_lease",
        "(status, lease_expires_at)",
    ),
    (
        "ix_job_executions_unfinished_job_id",
        "(job_id) WHERE status IN ('PENDING', 'RUNNING')",
        "ix_job_executions_job_id_status",
        "(job_id, status)",
    ),
];

async fn swap(manager: &SchemaManager<'_>, to_partial: bool) -> Result<(), DbErr> {
    if manager.get_database_backend() == DatabaseBackend::MySql {
        return Ok(());
    }
    let db = manager.get_connection();
    for (partial, partial_def, full, full_def) in INDEXES {
        let (create, create_def, drop) = if to_partial {
            (partial, partial_def, full)
        } else {
            (full, full_def, partial)
        };
        // The new index first: every query always has one to use.
        db.execute_unprepared(&format!(
            "CREATE INDEX {create} ON job_executions {create_def}"
        ))
        .await?;
        db.execute_unprepared(&format!("DROP INDEX {drop}")).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        swap(manager, true).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        swap(manager, false).await
    }
}
