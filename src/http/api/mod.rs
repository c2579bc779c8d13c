//! The OpenAPI operations of the admin API (poem-openapi): crons, backfills, executions
//! ("jobs"), statistics, workers and the probes. The spec is generated from these types, so
//! it cannot drift from what the handlers accept and return.

pub mod backfill;
pub mod crons;
pub mod jobs;
pub mod models;
pub mod schedules;
pub mod strict;
pub mod system;
pub mod validate;

use std::sync::Arc;

use poem_openapi::{OpenApiService, Tags};

use crate::handlers::Registry;
use crate::store::Store;

/// What the handlers of the admin API share, read-only.
/// Who an admin action is recorded as (`requested_by`, `paused_by`, the logs). Tokens have
/// no names yet: every holder of the admin token is this operator.
pub const OPERATOR: &str = "admin";

pub struct AdminState {
    pub store: Store,
    /// The handlers this binary has: new crons and runs must name one of them.
    pub registry: Registry,
    pub min_cron_interval_seconds: u64,
    /// A process whose heartbeat is older than this is not listed as live.
    pub presence_stale_seconds: f64,
    /// The named databases handlers may use, reported by `/ready`.
    pub databases: crate::txn::Databases,
}

#[derive(Tags)]
pub enum ApiTag {
    /// Schedules.
    Crons,
    /// Executions of crons and ad-hoc runs.
    Jobs,
    /// Statistics, workers and probes.
    System,
}

pub type Apis = (
    crons::CronsApi,
    schedules::SchedulesApi,
    backfill::BackfillApi,
    jobs::JobsApi,
    system::SystemApi,
);

/// The OpenAPI service: the operations plus their spec.
pub fn service(state: Arc<AdminState>) -> OpenApiService<Apis, ()> {
    let apis = (
        crons::CronsApi {
            state: state.clone(),
        },
        schedules::SchedulesApi {
            state: state.clone(),
        },
        backfill::BackfillApi {
            state: state.clone(),
        },
        jobs::JobsApi {
            state: state.clone(),
        },
        system::SystemApi { state },
    );
    OpenApiService::new(apis, "jobu admin API", env!("CARGO_PKG_VERSION")).description(
        "Manage cron schedules and their executions. Every 4xx answer has the body \
         `{status, error, message, field?}`. Send `Authorization: Bearer <token>`: \
         admin.auth_token, or the token the server generated in admin.token_file \
         (data/admin_token by default).",
    )
}
