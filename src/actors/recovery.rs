//! The Recovery service: at start and every `interval`, finishes two-phase transactions left
//! in doubt on the named databases (`crate::txn::recovery`: commit or roll back per the
//! decision log). Runs in worker processes whose named databases can make a transaction over
//! several (two or more, one that can prepare); safe with any number of them at once.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::{send_later, Shared};
use crate::config::TransactionSettings;
use crate::txn::recovery::Recovery;

/// The recovery service's settings (from `worker.transactions`).
#[derive(Debug, Clone)]
pub struct RecoveryConfig {
    pub interval: Duration,
    /// A branch with no logged decision is rolled back after this long in doubt.
    pub grace: Duration,
    /// Finished decision-log rows are kept this long.
    pub retention: Duration,
}

impl RecoveryConfig {
    pub const DEFAULT_INTERVAL: Duration =
        Duration::from_secs(TransactionSettings::DEFAULT_RECOVERY_INTERVAL_SECONDS);
    pub const DEFAULT_GRACE: Duration =
        Duration::from_secs(TransactionSettings::DEFAULT_IN_DOUBT_GRACE_SECONDS);
    pub const DEFAULT_RETENTION: Duration =
        Duration::from_secs(TransactionSettings::DEFAULT_LOG_RETENTION_HOURS * 3600);

    pub fn from_settings(s: &TransactionSettings) -> RecoveryConfig {
        RecoveryConfig {
            interval: Duration::from_secs(s.recovery_interval_seconds),
            grace: Duration::from_secs(s.in_doubt_grace_seconds),
            retention: Duration::from_secs(s.log_retention_hours.saturating_mul(3600)),
        }
    }
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            interval: Self::DEFAULT_INTERVAL,
            grace: Self::DEFAULT_GRACE,
            retention: Self::DEFAULT_RETENTION,
        }
    }
}

pub enum RecoveryMsg {
    Tick,
}

pub struct RecoveryService;

pub struct RecoveryState {
    config: RecoveryConfig,
    recovery: Recovery,
    worker_id: String,
    timer: Option<tokio::task::JoinHandle<()>>,
}

impl Actor for RecoveryService {
    type Msg = RecoveryMsg;
    type State = RecoveryState;
    type Arguments = (Arc<Shared>, RecoveryConfig);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (shared, config): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let coordinator = shared
            .coordinator
            .clone()
            .ok_or("the recovery service needs named databases")?;
        myself.send_message(RecoveryMsg::Tick)?;
        Ok(RecoveryState {
            recovery: Recovery::new(&coordinator, shared.worker_id.clone()),
            worker_id: shared.worker_id.clone(),
            config,
            timer: None,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.timer.take() {
            timer.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::metrics::message_handled("recovery");
        match msg {
            RecoveryMsg::Tick => {
                let report = state
                    .recovery
                    .run_once(state.config.grace, state.config.retention)
                    .await;
                if report.committed + report.rolled_back + report.failed > 0 {
                    tracing::info!(
                        worker = %state.worker_id,
                        committed = report.committed,
                        rolled_back = report.rolled_back,
                        waiting = report.waiting,
                        failed = report.failed,
                        "recovery pass finished in-doubt transactions"
                    );
                }
                state.timer = Some(send_later(
                    &myself,
                    state.config.interval,
                    RecoveryMsg::Tick,
                ));
            }
        }
        Ok(())
    }
}
