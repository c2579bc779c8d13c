//! `transaction_log`: the decision log of transactions that span several databases
//! (two-phase commit, `jobu::txn`). A row is written, fenced by the attempt's owner token,
//! after every participant prepared and before the first commit; recovery reads it to commit
//! or roll back branches left in doubt. `decision` is `commit`, `rollback` or
//! `last_resource` (the SQLite participant's own commit decides, see `jobu::txn`).
//!
//! `transaction_coordinator` holds one row: the random id of this jobu database, part of
//! every transaction id, so deployments sharing a participant server leave each other's
//! branches alone.

use sea_orm_migration::prelude::*;

use crate::types::{instant, now_default};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum TransactionLog {
    Table,
    Xid,
    ExecutionId,
    Attempt,
    WorkerId,
    Participants,
    Decision,
    DecidedAt,
    CompletedAt,
}

#[derive(DeriveIden)]
enum TransactionCoordinator {
    Table,
    Singleton,
    Id,
}

const DECIDED_INDEX: &str = "ix_transaction_log_completed_at_decided_at";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_database_backend();
        manager
            .create_table(
                Table::create()
                    .table(TransactionLog::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(TransactionLog::Xid)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(TransactionLog::ExecutionId).big_integer())
                    .col(ColumnDef::new(TransactionLog::Attempt).integer().not_null())
                    .col(ColumnDef::new(TransactionLog::WorkerId).string_len(128))
                    .col(
                        ColumnDef::new(TransactionLog::Participants)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(TransactionLog::Decision)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        instant(db, &mut ColumnDef::new(TransactionLog::DecidedAt))
                            .not_null()
                            .default(now_default(db)),
                    )
                    .col(instant(
                        db,
                        &mut ColumnDef::new(TransactionLog::CompletedAt),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(DECIDED_INDEX)
                    .table(TransactionLog::Table)
                    .col(TransactionLog::CompletedAt)
                    .col(TransactionLog::DecidedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(TransactionCoordinator::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(TransactionCoordinator::Singleton)
                            .integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(TransactionCoordinator::Id)
                            .string_len(8)
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(TransactionCoordinator::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(
                Table::drop()
                    .table(TransactionLog::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
