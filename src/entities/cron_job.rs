//! `cron_jobs`: one row per schedule, with the dispatcher's per-cron progress marker.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "cron_jobs")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub name: String,
    pub description: Option<String>,
    /// One expression, or a JSON array of them (fire times are the union).
    pub cron_expression: String,
    /// IANA zone the expression is read in.
    pub timezone: String,
    pub handler_name: String,
    pub handler_params: Option<Json>,
    pub is_enabled: bool,
    /// [`OverlapPolicy`]'s name: what a fire time does while an execution is unfinished.
    pub overlap_policy: String,
    /// Local dates (`YYYY-MM-DD`, in `timezone`) on which the cron does not fire.
    pub excluded_dates: Option<Json>,
    /// Each fire time starts up to this many seconds late, by a delay derived from
    /// (cron id, fire time), the same on every dispatcher.
    pub jitter_seconds: i32,
    /// Retries after the first attempt; total attempts = max_retry + 1.
    pub max_retry: i32,
    pub timeout_seconds: i32,
    /// `skip`, `latest` or `all`: what to do with fire times missed while no dispatcher ran.
    pub misfire_policy: String,
    /// The earliest fire time not yet turned into an execution (dispatcher marker).
    pub next_fire_time: Option<DateTimeUtc>,
    /// The latest fire time turned into an execution.
    pub last_fire_time: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// Why the cron is paused (disabled), when and by whom; cleared when it is enabled.
    pub pause_note: Option<String>,
    pub paused_at: Option<DateTimeUtc>,
    pub paused_by: Option<String>,
    /// Crons to run once after each execution that ends SUCCESS (a JSON array of ids).
    pub on_success: Option<Json>,
    /// Crons to run once after each execution that ends FAILED or TIMEOUT, retries spent.
    pub on_failure: Option<Json>,
    /// Since when the cron has chains: executions that ended before start none.
    pub chains_since: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::job_execution::Entity")]
    JobExecutions,
}

impl Related<super::job_execution::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::JobExecutions.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}

/// What happens to fire times that passed while every dispatcher was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MisfirePolicy {
    /// Drop them; continue with the next fire time.
    Skip,
    /// Run once for the most recent missed fire time.
    #[default]
    Latest,
    /// Run every missed fire time, up to `dispatcher.max_catchup`.
    All,
}

impl MisfirePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            MisfirePolicy::Skip => "skip",
            MisfirePolicy::Latest => "latest",
            MisfirePolicy::All => "all",
        }
    }
}

impl std::str::FromStr for MisfirePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            MisfirePolicy::Skip,
            MisfirePolicy::Latest,
            MisfirePolicy::All,
        ]
        .into_iter()
        .find(|p| p.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| format!("unknown misfire policy `{s}`; use skip, latest or all"))
    }
}

/// What a fire time does while an execution of the cron is unfinished (Temporal's
/// vocabulary). Every policy but `allow` keeps at most one execution of the cron PENDING or
/// RUNNING, a constraint of the database (`exclusive_run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// Every fire time runs, concurrently if need be.
    #[default]
    Allow,
    /// The fire time is not run (recorded SKIPPED).
    Skip,
    /// At most one fire time waits (WAITING) and starts when the unfinished one ends;
    /// further ones are skipped.
    BufferOne,
    /// Every fire time runs, one after another, in fire-time order.
    BufferAll,
    /// The unfinished execution is cancelled and the new one starts once it has stopped.
    Replace,
}

impl OverlapPolicy {
    pub const ALL: [OverlapPolicy; 5] = [
        OverlapPolicy::Allow,
        OverlapPolicy::Skip,
        OverlapPolicy::BufferOne,
        OverlapPolicy::BufferAll,
        OverlapPolicy::Replace,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OverlapPolicy::Allow => "allow",
            OverlapPolicy::Skip => "skip",
            OverlapPolicy::BufferOne => "buffer_one",
            OverlapPolicy::BufferAll => "buffer_all",
            OverlapPolicy::Replace => "replace",
        }
    }

    /// At most one execution PENDING or RUNNING at a time.
    pub fn is_exclusive(self) -> bool {
        self != OverlapPolicy::Allow
    }

    /// The old boolean: true = `allow`, false = `skip`.
    pub fn from_allow_overlap(allow: bool) -> OverlapPolicy {
        if allow {
            OverlapPolicy::Allow
        } else {
            OverlapPolicy::Skip
        }
    }
}

impl std::fmt::Display for OverlapPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for OverlapPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OverlapPolicy::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "unknown overlap policy `{s}`; use allow, skip, buffer_one, buffer_all or replace"
                )
            })
    }
}
