//! jobu's schema for PostgreSQL, MySQL/MariaDB and SQLite: one migration set, applied by
//! `jobu migrate` and checked by the daemon at start. Each step is written once with the
//! column types that differ per backend chosen in `types`.

pub use sea_orm_migration::prelude::*;

mod indexes;
mod m20261126_000001_initial;
mod m20261126_000002_workers;
mod m20261126_000003_execution_list_index;
mod m20261201_000004_hardening;
mod m20261201_000005_claim_order_index;
mod m20261201_000006_partial_status_indexes;
mod m20261202_000007_transaction_log;
mod m20261203_000008_finished_index;
mod m20261204_000009_schedules;
mod m20261205_000010_operator_actions;
mod m20261206_000011_sparse_execution_indexes;
mod m20261207_000012_finished_list_index;
pub mod types;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261126_000001_initial::Migration),
            Box::new(m20261126_000002_workers::Migration),
            Box::new(m20261126_000003_execution_list_index::Migration),
            Box::new(m20261201_000004_hardening::Migration),
            Box::new(m20261201_000005_claim_order_index::Migration),
            Box::new(m20261201_000006_partial_status_indexes::Migration),
            Box::new(m20261202_000007_transaction_log::Migration),
            Box::new(m20261203_000008_finished_index::Migration),
            Box::new(m20261204_000009_schedules::Migration),
            Box::new(m20261205_000010_operator_actions::Migration),
            Box::new(m20261206_000011_sparse_execution_indexes::Migration),
            Box::new(m20261207_000012_finished_list_index::Migration),
        ]
    }
}
