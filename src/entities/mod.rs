//! SeaORM entities for jobu's tables. Reads go through these; every write that is part
//! of a protocol (creation, claim, transitions, rescue) goes through `crate::store`.

pub mod cron_backfill;
pub mod cron_job;
pub mod job_execution;
pub mod worker;

pub use cron_backfill::Entity as CronBackfills;
pub use cron_job::Entity as CronJobs;
pub use job_execution::Entity as JobExecutions;
pub use worker::Entity as Workers;
