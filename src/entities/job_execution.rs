//! `job_executions`: one row per (cron, fire time) or ad-hoc run, carrying its state, the
//! claim's fencing token and lease, and the outcome of its last attempt.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "job_executions")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The cron this fire time belongs to; `None` for ad-hoc runs and deleted crons.
    pub job_id: Option<i64>,
    pub handler_name: String,
    /// The fire time (for ad-hoc runs, the requested time).
    pub scheduled_time: DateTimeUtc,
    /// When the execution may next be claimed (fire time, or after a retry backoff).
    pub run_at: DateTimeUtc,
    /// One of [`Status`]'s names.
    pub status: String,
    pub params: Option<Json>,
    /// `cron`, `manual` or `api`.
    pub param_source: String,
    /// Retries so far; the running attempt is number retry_count + 1.
    pub retry_count: i32,
    pub max_retry: i32,
    pub timeout_seconds: i32,
    /// Fencing token of the current claim: every transition of the attempt names it.
    pub owner_token: Option<String>,
    pub worker_id: Option<String>,
    /// The claim is void after this instant (database clock) unless renewed.
    pub lease_expires_at: Option<DateTimeUtc>,
    /// An operator asked to stop the running attempt.
    pub cancel_requested: bool,
    /// Why a CANCELLED row was cancelled: [`CancelReason`]'s names.
    pub cancel_reason: Option<String>,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
    pub error_message: Option<String>,
    pub result: Option<Json>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// Its cron allows one unfinished execution at a time (overlap policy other than
    /// `allow` when it was created): a unique index keeps at most one such row of a cron
    /// PENDING or RUNNING.
    pub exclusive_run: bool,
    /// A ledger row (SKIPPED, MISSED, EXCLUDED) that stands for consecutive fire times:
    /// the last of them (`scheduled_time` is the first). `None` for a single fire time.
    pub fire_time_until: Option<DateTimeUtc>,
    /// How many fire times the row stands for (1 but for coalesced ledger rows; for a long
    /// outage possibly a lower bound, see the row's message).
    pub fire_count: i32,
    /// Why an operator asked for this run (manual runs, backfills).
    pub reason: Option<String>,
    /// Who asked for it: the operator's identity (manual runs, backfills).
    pub requested_by: Option<String>,
    /// The execution whose final outcome started this one (`param_source` `chain`).
    pub parent_execution_id: Option<i64>,
    /// The cron the parent's chain meant to start (kept when that cron is gone): unique
    /// with `parent_execution_id`, so one parent starts each chained cron once.
    pub chain_child: Option<i64>,
    /// The backfill that created or re-ran this execution.
    pub backfill_id: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::cron_job::Entity",
        from = "Column::JobId",
        to = "super::cron_job::Column::Id",
        on_delete = "SetNull"
    )]
    CronJob,
}

impl Related<super::cron_job::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::CronJob.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}

/// The table's columns as a select list (`qualified`: each prefixed with the table name),
/// for hand-written statements that return whole rows. Named rather than `*` so a statement
/// returns exactly the columns this binary knows, whatever a newer migration added: SQLite
/// connections cache the schema, and a `*` prepared before an `ALTER TABLE` changes width
/// under sqlx.
pub fn select_list(qualified: bool) -> &'static str {
    static PLAIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static QUALIFIED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let (cell, prefix) = if qualified {
        (&QUALIFIED, "job_executions.")
    } else {
        (&PLAIN, "")
    };
    cell.get_or_init(|| {
        use sea_orm::{Iden, Iterable};
        Column::iter()
            .map(|c| format!("{prefix}{}", c.to_string()))
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// Decodes a row of [`select_list`] by position. sea-orm's derived decoder looks every
/// column up by a name it first formats into a new string; for the claim's hundreds of rows
/// that was a seventh of a busy worker's CPU. Same types, same order as the derived one
/// (the fields in declaration order, which is `Column::iter()`'s order).
pub fn from_select_list(r: &sea_orm::QueryResult) -> Result<Model, DbErr> {
    let mut i = 0usize;
    let mut next = || {
        i += 1;
        i - 1
    };
    let model = Model {
        id: r.try_get_by_index(next())?,
        job_id: r.try_get_by_index(next())?,
        handler_name: r.try_get_by_index(next())?,
        scheduled_time: r.try_get_by_index(next())?,
        run_at: r.try_get_by_index(next())?,
        status: r.try_get_by_index(next())?,
        params: r.try_get_by_index(next())?,
        param_source: r.try_get_by_index(next())?,
        retry_count: r.try_get_by_index(next())?,
        max_retry: r.try_get_by_index(next())?,
        timeout_seconds: r.try_get_by_index(next())?,
        owner_token: r.try_get_by_index(next())?,
        worker_id: r.try_get_by_index(next())?,
        lease_expires_at: r.try_get_by_index(next())?,
        cancel_requested: r.try_get_by_index(next())?,
        cancel_reason: r.try_get_by_index(next())?,
        started_at: r.try_get_by_index(next())?,
        finished_at: r.try_get_by_index(next())?,
        error_message: r.try_get_by_index(next())?,
        result: r.try_get_by_index(next())?,
        created_at: r.try_get_by_index(next())?,
        updated_at: r.try_get_by_index(next())?,
        exclusive_run: r.try_get_by_index(next())?,
        fire_time_until: r.try_get_by_index(next())?,
        fire_count: r.try_get_by_index(next())?,
        reason: r.try_get_by_index(next())?,
        requested_by: r.try_get_by_index(next())?,
        parent_execution_id: r.try_get_by_index(next())?,
        chain_child: r.try_get_by_index(next())?,
        backfill_id: r.try_get_by_index(next())?,
    };
    debug_assert_eq!(i, COLUMN_COUNT);
    Ok(model)
}

/// How many columns [`from_select_list`] reads: every column of the table.
const COLUMN_COUNT: usize = 30;

/// The states of an execution: `PENDING -> RUNNING -> SUCCESS | FAILED | TIMEOUT`, and
/// `CANCELLED` from PENDING or RUNNING. `WAITING -> PENDING` for a fire time buffered behind
/// an unfinished execution of its cron. `SKIPPED`, `MISSED` and `EXCLUDED` are the ledger's
/// decisions for fire times that did not run; they are final from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Pending,
    Running,
    Success,
    Failed,
    Timeout,
    Cancelled,
    Waiting,
    Skipped,
    Missed,
    Excluded,
}

impl Status {
    pub const ALL: [Status; 10] = [
        Status::Pending,
        Status::Running,
        Status::Success,
        Status::Failed,
        Status::Timeout,
        Status::Cancelled,
        Status::Waiting,
        Status::Skipped,
        Status::Missed,
        Status::Excluded,
    ];

    /// The ledger's decisions for fire times that did not run.
    pub const NOT_RUN: [Status; 3] = [Status::Skipped, Status::Missed, Status::Excluded];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Running => "RUNNING",
            Status::Success => "SUCCESS",
            Status::Failed => "FAILED",
            Status::Timeout => "TIMEOUT",
            Status::Cancelled => "CANCELLED",
            Status::Waiting => "WAITING",
            Status::Skipped => "SKIPPED",
            Status::Missed => "MISSED",
            Status::Excluded => "EXCLUDED",
        }
    }

    pub fn is_final(self) -> bool {
        !matches!(self, Status::Pending | Status::Running | Status::Waiting)
    }

    /// A fire time's decision in the ledger: `run` for every execution, else the reason it
    /// did not run.
    pub fn decision(self) -> &'static str {
        match self {
            Status::Skipped => "skipped",
            Status::Missed => "missed",
            Status::Excluded => "excluded",
            _ => "run",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown status `{s}`"))
    }
}

/// Why an execution was CANCELLED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CancelReason {
    /// An operator cancelled it (before it ran, or while it ran).
    Operator,
    /// Created ahead of its fire time, then its cron was disabled or deleted before the
    /// fire time came; re-armed if the cron fires that time after all.
    Unscheduled,
    /// Its cron's overlap policy is `replace` and a later fire time came.
    Replaced,
}

impl CancelReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::Operator => "operator",
            CancelReason::Unscheduled => "unscheduled",
            CancelReason::Replaced => "replaced",
        }
    }
}

/// Where an execution came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamSource {
    Cron,
    Manual,
    Api,
    /// Created by a backfill for a past fire time.
    Backfill,
    /// Started by the final outcome of another cron's execution.
    Chain,
}

impl ParamSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ParamSource::Cron => "cron",
            ParamSource::Manual => "manual",
            ParamSource::Api => "api",
            ParamSource::Backfill => "backfill",
            ParamSource::Chain => "chain",
        }
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::Iterable;

    #[test]
    fn the_positional_decoder_reads_every_column() {
        assert_eq!(super::Column::iter().count(), super::COLUMN_COUNT);
    }
}
