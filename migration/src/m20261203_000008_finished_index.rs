//! Retention deletes finished executions by status and age (`store::retention`), oldest
//! first. No index held `finished_at`, and the status indexes of PostgreSQL and SQLite hold
//! unfinished rows only, so each batch read and sorted the whole table (a sequential scan
//! of 400,000 rows for 1,000). This index holds finished rows only (`finished_at` is set
//! when, and only when, an execution reaches a final status), one entry per execution, in
//! the order the sweep reads them. MySQL has no partial indexes and indexes every row.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const INDEX: &str = "ix_job_executions_finished";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let predicate = match manager.get_database_backend() {
            DatabaseBackend::MySql => "",
            DatabaseBackend::Postgres | DatabaseBackend::Sqlite => " WHERE finished_at IS NOT NULL",
        };
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "CREATE INDEX {INDEX} ON job_executions (status, finished_at){predicate}"
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(INDEX)
                    .table(Alias::new("job_executions"))
                    .to_owned(),
            )
            .await
    }
}
