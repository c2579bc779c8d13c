//! `cron_backfills`: one row per backfill request over a cron's past fire times, with what
//! it did; its executions carry its id, so its progress is a count of their states.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "cron_backfills")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub job_id: i64,
    /// The range of fire times, `[range_from, range_to)`.
    pub range_from: DateTimeUtc,
    pub range_to: DateTimeUtc,
    /// `buffer_all` (one at a time, in fire-time order) or `allow` (concurrently).
    pub overlap: String,
    /// The ledger decisions it ran again (JSON array: `missed`, `skipped`, `failed`).
    pub rerun: Option<Json>,
    /// Fire times it created executions for.
    pub created: i32,
    /// Fire times that had a row it ran again (`rerun`).
    pub rearmed: i32,
    /// Fire times that had a row it left alone.
    pub left_alone: i32,
    pub requested_by: Option<String>,
    pub reason: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::cron_job::Entity",
        from = "Column::JobId",
        to = "super::cron_job::Column::Id",
        on_delete = "Cascade"
    )]
    CronJob,
}

impl Related<super::cron_job::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::CronJob.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
