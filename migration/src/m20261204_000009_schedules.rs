//! Schedules beyond one expression (issue 13):
//!
//! - `cron_jobs.overlap_policy` (`allow`, `skip`, `buffer_one`, `buffer_all`, `replace`)
//!   replaces the boolean `allow_overlap` (true = `allow`, false = `skip`);
//!   `excluded_dates` (a JSON array of local dates), `jitter_seconds`; `cron_expression` is
//!   widened to hold a JSON list of expressions.
//! - `job_executions` records every fire time's decision under the unique key: new statuses
//!   `WAITING` (buffered behind an unfinished run), `SKIPPED`, `MISSED`, `EXCLUDED`; a row
//!   may stand for a run of consecutive fire times (`fire_time_until`, `fire_count`).
//! - `exclusive_run` marks executions of crons that allow one unfinished run at a time, and
//!   a unique index on the cron of such rows while PENDING or RUNNING makes "at most one"
//!   a constraint of the database: partial on PostgreSQL and SQLite. MySQL/MariaDB have no
//!   partial indexes, and refuse a generated column over `job_id` (its foreign key sets it
//!   NULL on delete), so a column that triggers keep equal to the cron while the row is an
//!   exclusive PENDING or RUNNING one, and NULL (never colliding) otherwise, is unique.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const ONE_ACTIVE: &str = "ux_job_executions_one_active";
const WAITING: &str = "ix_job_executions_waiting";
const TRIGGER_INSERT: &str = "jobu_active_exclusive_insert";
const TRIGGER_UPDATE: &str = "jobu_active_exclusive_update";
/// MySQL/MariaDB: the cron of an exclusive row while PENDING or RUNNING, else NULL.
const ACTIVE_SLOT: &str = "NEW.active_exclusive_job = CASE WHEN NEW.exclusive_run AND \
     NEW.status IN ('PENDING', 'RUNNING') THEN NEW.job_id END";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let db = manager.get_connection();
        let (instant, boolean_false, json) = match backend {
            DatabaseBackend::Postgres => ("timestamptz", "BOOLEAN NOT NULL DEFAULT false", "jsonb"),
            DatabaseBackend::MySql => ("DATETIME(6)", "BOOLEAN NOT NULL DEFAULT false", "JSON"),
            DatabaseBackend::Sqlite => (
                "timestamp_with_timezone_text",
                "BOOLEAN NOT NULL DEFAULT false",
                "json_text",
            ),
        };
        let mut steps: Vec<String> = vec![
            "ALTER TABLE cron_jobs ADD COLUMN overlap_policy VARCHAR(16) NOT NULL DEFAULT 'allow'"
                .into(),
            "UPDATE cron_jobs SET overlap_policy = CASE WHEN allow_overlap THEN 'allow' ELSE 'skip' END"
                .into(),
            "ALTER TABLE cron_jobs DROP COLUMN allow_overlap".into(),
            format!("ALTER TABLE cron_jobs ADD COLUMN excluded_dates {json} NULL"),
            "ALTER TABLE cron_jobs ADD COLUMN jitter_seconds INTEGER NOT NULL DEFAULT 0".into(),
            format!("ALTER TABLE job_executions ADD COLUMN exclusive_run {boolean_false}"),
            format!("ALTER TABLE job_executions ADD COLUMN fire_time_until {instant} NULL"),
            "ALTER TABLE job_executions ADD COLUMN fire_count INTEGER NOT NULL DEFAULT 1".into(),
        ];
        match backend {
            DatabaseBackend::Postgres => steps.extend([
                "ALTER TABLE cron_jobs ALTER COLUMN cron_expression TYPE VARCHAR(2048)".to_string(),
                format!(
                    "CREATE UNIQUE INDEX {ONE_ACTIVE} ON job_executions (job_id) \
                     WHERE exclusive_run AND status IN ('PENDING', 'RUNNING')"
                ),
                format!(
                    "CREATE INDEX {WAITING} ON job_executions (job_id, scheduled_time) \
                     WHERE status = 'WAITING'"
                ),
            ]),
            DatabaseBackend::Sqlite => steps.extend([
                // SQLite does not enforce VARCHAR lengths: nothing to widen.
                format!(
                    "CREATE UNIQUE INDEX {ONE_ACTIVE} ON job_executions (job_id) \
                     WHERE exclusive_run = 1 AND status IN ('PENDING', 'RUNNING')"
                ),
                format!(
                    "CREATE INDEX {WAITING} ON job_executions (job_id, scheduled_time) \
                     WHERE status = 'WAITING'"
                ),
            ]),
            DatabaseBackend::MySql => steps.extend([
                "ALTER TABLE cron_jobs MODIFY cron_expression VARCHAR(2048) NOT NULL".to_string(),
                "ALTER TABLE job_executions ADD COLUMN active_exclusive_job BIGINT NULL".to_string(),
                format!("CREATE UNIQUE INDEX {ONE_ACTIVE} ON job_executions (active_exclusive_job)"),
                format!("CREATE TRIGGER {TRIGGER_INSERT} BEFORE INSERT ON job_executions FOR EACH ROW SET {ACTIVE_SLOT}"),
                format!("CREATE TRIGGER {TRIGGER_UPDATE} BEFORE UPDATE ON job_executions FOR EACH ROW SET {ACTIVE_SLOT}"),
            ]),
        }
        for sql in steps {
            db.execute_unprepared(&sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let db = manager.get_connection();
        let mut steps: Vec<String> = Vec::new();
        match backend {
            DatabaseBackend::MySql => steps.extend([
                format!("DROP TRIGGER {TRIGGER_INSERT}"),
                format!("DROP TRIGGER {TRIGGER_UPDATE}"),
                format!("DROP INDEX {ONE_ACTIVE} ON job_executions"),
                "ALTER TABLE job_executions DROP COLUMN active_exclusive_job".to_string(),
            ]),
            _ => steps.extend([
                format!("DROP INDEX {ONE_ACTIVE}"),
                format!("DROP INDEX {WAITING}"),
            ]),
        }
        steps.extend([
            "ALTER TABLE cron_jobs ADD COLUMN allow_overlap BOOLEAN NOT NULL DEFAULT true"
                .to_string(),
            "UPDATE cron_jobs SET allow_overlap = (overlap_policy = 'allow')".to_string(),
            "ALTER TABLE cron_jobs DROP COLUMN overlap_policy".to_string(),
            "ALTER TABLE cron_jobs DROP COLUMN excluded_dates".to_string(),
            "ALTER TABLE cron_jobs DROP COLUMN jitter_seconds".to_string(),
            "ALTER TABLE job_executions DROP COLUMN exclusive_run".to_string(),
            "ALTER TABLE job_executions DROP COLUMN fire_time_until".to_string(),
            "ALTER TABLE job_executions DROP COLUMN fire_count".to_string(),
        ]);
        for sql in steps {
            db.execute_unprepared(&sql).await?;
        }
        Ok(())
    }
}
