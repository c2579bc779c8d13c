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
    pub cron_expression: String,
    /// IANA zone the expression is read in.
    pub timezone: String,
    pub handler_name: String,
    pub handler_params: Option<Json>,
    pub is_enabled: bool,
    pub allow_overlap: bool,
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
