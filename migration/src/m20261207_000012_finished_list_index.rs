//! On PostgreSQL the execution list's index, `(scheduled_time, id)` over every row, took an
//! entry at each of an execution's three writes (insert, claim, completion): a change of
//! status is never a HOT update, so every version of a row goes into every index whose
//! predicate it matches. Here it holds only rows that are neither PENDING nor RUNNING, so an
//! ad-hoc execution gives it one entry instead of three. The list reads the PENDING and
//! RUNNING rows through their own partial indexes and merges the two (`store::queries`).
//! A drain of 100,000 no-op executions went from nine index entries per job to seven.
//!
//! SQLite and MySQL/MariaDB update only the indexes whose columns change, so their full index
//! costs nothing on a change of status and stays as it is (a partial one would cost them).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

const INDEX: &str = "ix_job_executions_scheduled_time_id";

/// The rows the list reads from this index; `store::queries` names the same statuses.
const PREDICATE: &str = " WHERE status NOT IN ('PENDING', 'RUNNING')";

async fn rebuild(manager: &SchemaManager<'_>, predicate: &str) -> Result<(), DbErr> {
    if manager.get_database_backend() != DatabaseBackend::Postgres {
        return Ok(());
    }
    crate::indexes::rebuild(
        manager,
        INDEX,
        false,
        &format!("(scheduled_time, id){predicate}"),
    )
    .await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        rebuild(manager, PREDICATE).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        rebuild(manager, "").await
    }
}
