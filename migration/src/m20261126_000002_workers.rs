//! `workers`: one row per running jobu process (dispatcher, worker or both), written by its
//! presence service, so operators can list the live fleet (`GET /api/workers`). Rows of
//! processes that stopped heartbeating are ignored by readers and pruned by the service.

use sea_orm_migration::prelude::*;

use crate::types::{instant, now_default};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Workers {
    Table,
    Id,
    Host,
    Pid,
    Roles,
    Handlers,
    Concurrency,
    StartedAt,
    LastHeartbeatAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_database_backend();
        manager
            .create_table(
                Table::create()
                    .table(Workers::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Workers::Id)
                            .string_len(128)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Workers::Host).string_len(255).not_null())
                    .col(ColumnDef::new(Workers::Pid).big_integer().not_null())
                    .col(ColumnDef::new(Workers::Roles).string_len(255).not_null())
                    .col(ColumnDef::new(Workers::Handlers).text().not_null())
                    .col(ColumnDef::new(Workers::Concurrency).integer().not_null())
                    .col(
                        instant(db, &mut ColumnDef::new(Workers::StartedAt))
                            .not_null()
                            .default(now_default(db)),
                    )
                    .col(
                        instant(db, &mut ColumnDef::new(Workers::LastHeartbeatAt))
                            .not_null()
                            .default(now_default(db)),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Workers::Table).if_exists().to_owned())
            .await
    }
}
