//! PostgreSQL writes an entry into every index of a table on each update that is not HOT, and
//! every change of status is such an update (`status` is in the partial indexes'
//! predicates). Three indexes held an entry for rows that can never match them:
//!
//! - `uq_job_executions_job_id_scheduled_time`: ad-hoc executions have no cron (`job_id` is
//!   NULL) and never collide;
//! - `ux_job_executions_chain`: only chained runs have a parent;
//! - `ix_job_executions_unfinished_job_id`: it answers "what of this cron is unfinished".
//!
//! So each claim and each completion of an ad-hoc execution wrote five to six index entries
//! instead of three, two of them into unique indexes (a uniqueness check each). Here they
//! become partial on the column that can be NULL. Every query that uses them compares that
//! column with `=`, which implies `IS NOT NULL`, so the planner still matches them; the
//! insert-if-absent names the predicate in its conflict target (`store::create`).
//!
//! SQLite and MySQL/MariaDB update only the indexes whose columns change, so for them the
//! extra entries cost nothing and the schema stays as it is.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// (name, unique, columns, predicate of the partial form).
const INDEXES: [(&str, bool, &str, &str); 3] = [
    (
        "uq_job_executions_job_id_scheduled_time",
        true,
        "(job_id, scheduled_time)",
        "job_id IS NOT NULL",
    ),
    (
        "ux_job_executions_chain",
        true,
        "(parent_execution_id, chain_child)",
        "parent_execution_id IS NOT NULL",
    ),
    (
        "ix_job_executions_unfinished_job_id",
        false,
        "(job_id)",
        "job_id IS NOT NULL AND status IN ('PENDING', 'RUNNING')",
    ),
];

/// The unfinished index was already partial on status; its full form keeps that part.
const UNFINISHED_FULL_PREDICATE: &str = "status IN ('PENDING', 'RUNNING')";

async fn rebuild(manager: &SchemaManager<'_>, sparse: bool) -> Result<(), DbErr> {
    if manager.get_database_backend() != DatabaseBackend::Postgres {
        return Ok(());
    }
    for (name, unique, columns, predicate) in INDEXES {
        let predicate = match (sparse, name) {
            (true, _) => format!(" WHERE {predicate}"),
            (false, "ix_job_executions_unfinished_job_id") => {
                format!(" WHERE {UNFINISHED_FULL_PREDICATE}")
            }
            (false, _) => String::new(),
        };
        crate::indexes::rebuild(manager, name, unique, &format!("{columns}{predicate}")).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        rebuild(manager, true).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        rebuild(manager, false).await
    }
}
