//! Operator actions (issue 14):
//!
//! - `cron_jobs`: a pause carries a note, when and by whom (`pause_note`, `paused_at`,
//!   `paused_by`); chains name the crons to run after a final outcome (`on_success`,
//!   `on_failure`: JSON arrays of cron ids) and since when (`chains_since`: executions that
//!   ended before their cron had chains start none).
//! - `job_executions`: why and by whom a run was asked for (`reason`, `requested_by`), the
//!   execution whose outcome started it (`parent_execution_id`, with the cron it was meant
//!   to start in `chain_child`: unique per parent, so any number of processes recording one
//!   parent create one child), and the backfill that created it (`backfill_id`).
//! - `cron_backfills`: one row per backfill request, for its progress.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DatabaseBackend};

use crate::types::{instant, json, now_default};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CronBackfills {
    Table,
    Id,
    JobId,
    RangeFrom,
    RangeTo,
    Overlap,
    Rerun,
    Created,
    Rearmed,
    LeftAlone,
    RequestedBy,
    Reason,
    CreatedAt,
}

#[derive(DeriveIden)]
enum CronJobs {
    Table,
    Id,
}

const CHAIN_INDEX: &str = "ux_job_executions_chain";
const BACKFILL_INDEX: &str = "ix_job_executions_backfill";
const BACKFILL_CRON_INDEX: &str = "ix_cron_backfills_job_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let db = manager.get_connection();
        let (instant_type, json_type) = match backend {
            DatabaseBackend::Postgres => ("timestamptz", "jsonb"),
            DatabaseBackend::MySql => ("DATETIME(6)", "JSON"),
            DatabaseBackend::Sqlite => ("timestamp_with_timezone_text", "json_text"),
        };
        let mut steps: Vec<String> = vec![
            "ALTER TABLE cron_jobs ADD COLUMN pause_note VARCHAR(1000) NULL".into(),
            format!("ALTER TABLE cron_jobs ADD COLUMN paused_at {instant_type} NULL"),
            "ALTER TABLE cron_jobs ADD COLUMN paused_by VARCHAR(200) NULL".into(),
            format!("ALTER TABLE cron_jobs ADD COLUMN on_success {json_type} NULL"),
            format!("ALTER TABLE cron_jobs ADD COLUMN on_failure {json_type} NULL"),
            format!("ALTER TABLE cron_jobs ADD COLUMN chains_since {instant_type} NULL"),
            "ALTER TABLE job_executions ADD COLUMN reason VARCHAR(1000) NULL".into(),
            "ALTER TABLE job_executions ADD COLUMN requested_by VARCHAR(200) NULL".into(),
            "ALTER TABLE job_executions ADD COLUMN parent_execution_id BIGINT NULL".into(),
            "ALTER TABLE job_executions ADD COLUMN chain_child BIGINT NULL".into(),
            "ALTER TABLE job_executions ADD COLUMN backfill_id BIGINT NULL".into(),
            // NULLs never collide, so rows that are not chained are not in the way.
            format!(
                "CREATE UNIQUE INDEX {CHAIN_INDEX} ON job_executions \
                 (parent_execution_id, chain_child)"
            ),
        ];
        steps.push(match backend {
            DatabaseBackend::MySql => {
                format!("CREATE INDEX {BACKFILL_INDEX} ON job_executions (backfill_id)")
            }
            _ => format!(
                "CREATE INDEX {BACKFILL_INDEX} ON job_executions (backfill_id) \
                 WHERE backfill_id IS NOT NULL"
            ),
        });
        for sql in steps {
            db.execute_unprepared(&sql).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(CronBackfills::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(CronBackfills::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(CronBackfills::JobId)
                            .big_integer()
                            .not_null(),
                    )
                    .col(instant(backend, &mut ColumnDef::new(CronBackfills::RangeFrom)).not_null())
                    .col(instant(backend, &mut ColumnDef::new(CronBackfills::RangeTo)).not_null())
                    .col(
                        ColumnDef::new(CronBackfills::Overlap)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(json(backend, &mut ColumnDef::new(CronBackfills::Rerun)))
                    .col(
                        ColumnDef::new(CronBackfills::Created)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(CronBackfills::Rearmed)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(CronBackfills::LeftAlone)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(ColumnDef::new(CronBackfills::RequestedBy).string_len(200))
                    .col(ColumnDef::new(CronBackfills::Reason).string_len(1000))
                    .col(
                        instant(backend, &mut ColumnDef::new(CronBackfills::CreatedAt))
                            .not_null()
                            .default(now_default(backend)),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(CronBackfills::Table, CronBackfills::JobId)
                            .to(CronJobs::Table, CronJobs::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(BACKFILL_CRON_INDEX)
                    .table(CronBackfills::Table)
                    .col(CronBackfills::JobId)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let db = manager.get_connection();
        manager
            .drop_table(Table::drop().table(CronBackfills::Table).to_owned())
            .await?;
        let on_executions = |name: &str| match backend {
            DatabaseBackend::MySql => format!("DROP INDEX {name} ON job_executions"),
            _ => format!("DROP INDEX {name}"),
        };
        let steps = [
            on_executions(CHAIN_INDEX),
            on_executions(BACKFILL_INDEX),
            "ALTER TABLE cron_jobs DROP COLUMN pause_note".to_string(),
            "ALTER TABLE cron_jobs DROP COLUMN paused_at".to_string(),
            "ALTER TABLE cron_jobs DROP COLUMN paused_by".to_string(),
            "ALTER TABLE cron_jobs DROP COLUMN on_success".to_string(),
            "ALTER TABLE cron_jobs DROP COLUMN on_failure".to_string(),
            "ALTER TABLE cron_jobs DROP COLUMN chains_since".to_string(),
            "ALTER TABLE job_executions DROP COLUMN reason".to_string(),
            "ALTER TABLE job_executions DROP COLUMN requested_by".to_string(),
            "ALTER TABLE job_executions DROP COLUMN parent_execution_id".to_string(),
            "ALTER TABLE job_executions DROP COLUMN chain_child".to_string(),
            "ALTER TABLE job_executions DROP COLUMN backfill_id".to_string(),
        ];
        for sql in steps {
            db.execute_unprepared(&sql).await?;
        }
        Ok(())
    }
}
