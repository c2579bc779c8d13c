//! The two tables of the original system with the columns the protocols need: scheduling
//! state on `cron_jobs`, eligibility (`run_at`), lease and fencing token on `job_executions`.

use sea_orm_migration::prelude::*;

use crate::types::{instant, json, now_default};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CronJobs {
    Table,
    Id,
    Name,
    Description,
    CronExpression,
    Timezone,
    HandlerName,
    HandlerParams,
    IsEnabled,
    AllowOverlap,
    MaxRetry,
    TimeoutSeconds,
    MisfirePolicy,
    NextFireTime,
    LastFireTime,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum JobExecutions {
    Table,
    Id,
    JobId,
    HandlerName,
    ScheduledTime,
    RunAt,
    Status,
    Params,
    ParamSource,
    RetryCount,
    MaxRetry,
    TimeoutSeconds,
    OwnerToken,
    WorkerId,
    LeaseExpiresAt,
    CancelRequested,
    StartedAt,
    FinishedAt,
    ErrorMessage,
    Result,
    CreatedAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_database_backend();

        manager
            .create_table(
                Table::create()
                    .table(CronJobs::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(CronJobs::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(CronJobs::Name).string_len(100).not_null())
                    .col(ColumnDef::new(CronJobs::Description).text().null())
                    .col(
                        ColumnDef::new(CronJobs::CronExpression)
                            .string_len(255)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(CronJobs::Timezone)
                            .string_len(64)
                            .not_null()
                            .default("UTC"),
                    )
                    .col(
                        ColumnDef::new(CronJobs::HandlerName)
                            .string_len(100)
                            .not_null(),
                    )
                    .col(json(db, &mut ColumnDef::new(CronJobs::HandlerParams)).null())
                    .col(
                        ColumnDef::new(CronJobs::IsEnabled)
                            .boolean()
                            .not_null()
                            .default(true),
                    )
                    .col(
                        ColumnDef::new(CronJobs::AllowOverlap)
                            .boolean()
                            .not_null()
                            .default(true),
                    )
                    .col(
                        ColumnDef::new(CronJobs::MaxRetry)
                            .integer()
                            .not_null()
                            .default(3),
                    )
                    .col(
                        ColumnDef::new(CronJobs::TimeoutSeconds)
                            .integer()
                            .not_null()
                            .default(300),
                    )
                    .col(
                        ColumnDef::new(CronJobs::MisfirePolicy)
                            .string_len(16)
                            .not_null()
                            .default("latest"),
                    )
                    .col(instant(db, &mut ColumnDef::new(CronJobs::NextFireTime)).null())
                    .col(instant(db, &mut ColumnDef::new(CronJobs::LastFireTime)).null())
                    .col(
                        instant(db, &mut ColumnDef::new(CronJobs::CreatedAt))
                            .not_null()
                            .default(now_default(db)),
                    )
                    .col(
                        instant(db, &mut ColumnDef::new(CronJobs::UpdatedAt))
                            .not_null()
                            .default(now_default(db)),
                    )
                    .index(
                        Index::create()
                            .name("uq_cron_jobs_name")
                            .col(CronJobs::Name)
                            .unique(),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(JobExecutions::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(JobExecutions::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(JobExecutions::JobId).big_integer().null())
                    .col(
                        ColumnDef::new(JobExecutions::HandlerName)
                            .string_len(100)
                            .not_null(),
                    )
                    .col(instant(db, &mut ColumnDef::new(JobExecutions::ScheduledTime)).not_null())
                    .col(instant(db, &mut ColumnDef::new(JobExecutions::RunAt)).not_null())
                    .col(
                        ColumnDef::new(JobExecutions::Status)
                            .string_len(16)
                            .not_null()
                            .default("PENDING"),
                    )
                    .col(json(db, &mut ColumnDef::new(JobExecutions::Params)).null())
                    .col(
                        ColumnDef::new(JobExecutions::ParamSource)
                            .string_len(16)
                            .not_null()
                            .default("cron"),
                    )
                    .col(
                        ColumnDef::new(JobExecutions::RetryCount)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(JobExecutions::MaxRetry)
                            .integer()
                            .not_null()
                            .default(3),
                    )
                    .col(
                        ColumnDef::new(JobExecutions::TimeoutSeconds)
                            .integer()
                            .not_null()
                            .default(300),
                    )
                    .col(
                        ColumnDef::new(JobExecutions::OwnerToken)
                            .string_len(64)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(JobExecutions::WorkerId)
                            .string_len(128)
                            .null(),
                    )
                    .col(instant(db, &mut ColumnDef::new(JobExecutions::LeaseExpiresAt)).null())
                    .col(
                        ColumnDef::new(JobExecutions::CancelRequested)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(instant(db, &mut ColumnDef::new(JobExecutions::StartedAt)).null())
                    .col(instant(db, &mut ColumnDef::new(JobExecutions::FinishedAt)).null())
                    .col(ColumnDef::new(JobExecutions::ErrorMessage).text().null())
                    .col(json(db, &mut ColumnDef::new(JobExecutions::Result)).null())
                    .col(
                        instant(db, &mut ColumnDef::new(JobExecutions::CreatedAt))
                            .not_null()
                            .default(now_default(db)),
                    )
                    .col(
                        instant(db, &mut ColumnDef::new(JobExecutions::UpdatedAt))
                            .not_null()
                            .default(now_default(db)),
                    )
                    // History outlives its cron: deleting a cron keeps its executions.
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_job_executions_job_id")
                            .from(JobExecutions::Table, JobExecutions::JobId)
                            .to(CronJobs::Table, CronJobs::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    // The creation protocol: one row per (cron, fire time).
                    .index(
                        Index::create()
                            .name("uq_job_executions_job_id_scheduled_time")
                            .col(JobExecutions::JobId)
                            .col(JobExecutions::ScheduledTime)
                            .unique(),
                    )
                    .to_owned(),
            )
            .await?;

        // The claim scans PENDING rows by run_at; without this index MariaDB's SKIP LOCKED
        // locks every row it scans.
        manager
            .create_index(
                Index::create()
                    .name("ix_job_executions_status_run_at")
                    .table(JobExecutions::Table)
                    .col(JobExecutions::Status)
                    .col(JobExecutions::RunAt)
                    .to_owned(),
            )
            .await?;
        // The rescuer scans RUNNING rows by lease expiry.
        manager
            .create_index(
                Index::create()
                    .name("ix_job_executions_status_lease")
                    .table(JobExecutions::Table)
                    .col(JobExecutions::Status)
                    .col(JobExecutions::LeaseExpiresAt)
                    .to_owned(),
            )
            .await?;
        // Execution lists filter by cron and status (admin API, overlap checks).
        manager
            .create_index(
                Index::create()
                    .name("ix_job_executions_job_id_status")
                    .table(JobExecutions::Table)
                    .col(JobExecutions::JobId)
                    .col(JobExecutions::Status)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(JobExecutions::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(CronJobs::Table).if_exists().to_owned())
            .await
    }
}
