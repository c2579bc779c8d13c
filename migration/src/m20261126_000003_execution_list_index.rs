//! Execution lists (admin API, console) show the newest fire times first: an index on
//! (scheduled_time, id) lets a page be read backwards from the index instead of sorting the
//! whole table. (Lists of one cron use `uq_job_executions_job_id_scheduled_time`.)

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum JobExecutions {
    Table,
    Id,
    ScheduledTime,
}

const INDEX: &str = "ix_job_executions_scheduled_time_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(JobExecutions::Table)
                    .col(JobExecutions::ScheduledTime)
                    .col(JobExecutions::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(INDEX)
                    .table(JobExecutions::Table)
                    .to_owned(),
            )
            .await
    }
}
