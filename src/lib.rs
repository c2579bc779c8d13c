//! jobu: a cron job scheduler and job runner whose only coordination point is its database.
//!
//! - [`actors`]: the runtime: supervisor, dispatcher, worker pool, task actors, rescuer
//! - [`schedule`]: Unix cron expressions, time zones, next fire times
//! - [`entities`]: SeaORM models of `cron_jobs` and `job_executions`
//! - [`store`]: the creation, claim, lease and rescue protocols on PostgreSQL, MySQL, SQLite
//! - [`handlers`]: the Handler trait, the registry and the built-in handlers
//! - [`config`]: layered settings (YAML files, `JOBU__SECTION__KEY` environment overrides)
//! - [`telemetry`]: tracing setup (text or JSON)
//! - [`metrics`]: Prometheus metrics of executions and actors
//! - [`http`]: the admin API, console, health and metrics endpoints
//! - [`health`]: `jobu health`, the probe for container health checks and scripts
//! - [`txn`]: transactions over the named databases, two-phase commit and its recovery
//! - [`bench`]: `jobu bench`, throughput and latency scenarios on a scratch database
//! - [`systemd`]: systemd's notify protocol (ready, stopping)

pub mod actors;
pub mod bench;
pub mod config;
pub mod entities;
pub mod handlers;
pub mod health;
pub mod http;
pub mod metrics;
pub mod schedule;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod txn;

pub use actors::{Roles, Runtime};
