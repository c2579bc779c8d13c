//! jobu: a cron job scheduler and job runner whose only coordination point is its database.
//!
//! - [`schedule`]: Unix cron expressions, time zones, next fire times
//! - [`entities`]: SeaORM models of `cron_jobs` and `job_executions`
//! - [`store`]: the creation, claim, lease and rescue protocols on PostgreSQL, MySQL, SQLite
//! - [`config`]: layered settings (YAML files, `JOBU__SECTION__KEY` environment overrides)
//! - [`telemetry`]: tracing setup (text or JSON)

pub mod config;
pub mod entities;
pub mod schedule;
pub mod store;
pub mod telemetry;
