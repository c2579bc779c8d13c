//! `workers`: the live processes, one row each, kept fresh by the presence service.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "workers")]
pub struct Model {
    /// The worker id (`worker.id`, default `<host>-<pid>`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub host: String,
    pub pid: i64,
    /// Comma-separated roles: `dispatcher`, `worker`, `admin`.
    pub roles: String,
    /// JSON array of the handler names this process runs.
    pub handlers: String,
    pub concurrency: i32,
    pub started_at: DateTimeUtc,
    pub last_heartbeat_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
