//! `/api/stats`, `/api/workers`, and the probes `/health` (liveness: no database) and
//! `/ready` (database reachable and schema current).

use std::sync::Arc;
use std::time::Duration;

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};

use super::models::{HandlerCounts, Health, LagStats, Readiness, Stats, StatusCounts, Worker};
use super::{AdminState, ApiTag};
use crate::http::error::ApiError;
use crate::store::queries::LAG_SAMPLE;

/// `/ready` gives the database this long to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// The database answers and the schema is current.
    #[oai(status = 200)]
    Ready(Json<Readiness>),
}

pub struct SystemApi {
    pub state: Arc<AdminState>,
}

#[OpenApi(tag = "ApiTag::System")]
impl SystemApi {
    /// Counts by status and handler, backlog age and schedule lag.
    #[oai(path = "/api/stats", method = "get", operation_id = "stats")]
    async fn stats(&self) -> Result<Json<Stats>, ApiError> {
        let s = self.state.store.stats().await?;
        crate::metrics::executions_by_status(&s.by_status);
        Ok(Json(Stats {
            by_status: StatusCounts::from(&s.by_status),
            by_handler: s
                .by_handler
                .iter()
                .map(|(name, counts)| HandlerCounts {
                    handler_name: name.clone(),
                    by_status: StatusCounts::from(counts),
                })
                .collect(),
            oldest_pending_age_seconds: s.oldest_pending_age_seconds,
            schedule_lag_seconds: LagStats {
                sample_size: LAG_SAMPLE,
                count: s.lag_count,
                avg: s.lag_avg_seconds,
                max: s.lag_max_seconds,
            },
            handlers: self.state.registry.names(),
        }))
    }

    /// Live jobu processes (dispatchers and workers) and the attempts each runs.
    #[oai(path = "/api/workers", method = "get", operation_id = "list_workers")]
    async fn workers(&self) -> Result<Json<Vec<Worker>>, ApiError> {
        let live = self
            .state
            .store
            .live_workers(self.state.presence_stale_seconds)
            .await?;
        Ok(Json(live.into_iter().map(Worker::from).collect()))
    }

    /// Liveness: the process answers. Never touches the database.
    #[oai(path = "/health", method = "get", operation_id = "health")]
    async fn health(&self) -> Json<Health> {
        Json(Health {
            status: "ok".into(),
        })
    }

    /// Readiness: the database answers, every migration of this binary is applied, and each
    /// named database of `worker.databases` answers (listed under `databases`).
    #[oai(path = "/ready", method = "get", operation_id = "ready")]
    async fn ready(&self) -> Result<ReadyResponse, ApiError> {
        let pending =
            tokio::time::timeout(READY_TIMEOUT, self.state.store.pending_migrations()).await;
        match pending {
            Ok(Ok(0)) => {
                let mut databases = std::collections::BTreeMap::new();
                let mut down = Vec::new();
                for (name, result) in self.state.databases.ping().await {
                    let status = match result {
                        Ok(()) => "ok".to_string(),
                        Err(why) => {
                            down.push(format!("`{name}` {why}"));
                            why
                        }
                    };
                    databases.insert(name, status);
                }
                if !down.is_empty() {
                    return Err(ApiError::unavailable(format!(
                        "named database(s) not ready: {}",
                        down.join(", ")
                    )));
                }
                Ok(ReadyResponse::Ready(Json(Readiness {
                    status: "ready".into(),
                    database: "ok".into(),
                    pending_migrations: 0,
                    databases,
                })))
            }
            Ok(Ok(n)) => Err(ApiError::unavailable(format!(
                "the database lacks {n} migration(s) of this binary; run `jobu migrate`"
            ))),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness: database error");
                Err(ApiError::unavailable("the database is unreachable"))
            }
            Err(_) => Err(ApiError::unavailable(format!(
                "the database did not answer within {} s",
                READY_TIMEOUT.as_secs()
            ))),
        }
    }
}
