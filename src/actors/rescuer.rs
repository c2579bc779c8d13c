//! The Rescuer: every `interval`, returns RUNNING executions whose lease expired at least
//! `grace` ago (their worker crashed, hung or lost the database) to PENDING with the attempt
//! counted, or makes them FAILED when retries are exhausted, or CANCELLED when an operator
//! asked for it ([`Store::rescue_expired`]; safe with any number of rescuers). A rescue that
//! makes an execution final starts its cron's `on_failure` chains. It also warns about
//! PENDING executions nobody claims, usually because no running worker has registered their
//! handler.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::time::Instant;

use super::{send_later, Shared};
use crate::config::WorkerSettings;
use crate::entities::job_execution::Status;
use crate::store::StoreResult;

/// The rescuer's settings.
#[derive(Debug, Clone)]
pub struct RescuerConfig {
    pub interval: Duration,
    /// A lease must have ended this long ago before its row is rescued: one heartbeat
    /// interval, while workers stop an unrenewed attempt half a heartbeat *before* the end
    /// (`pool::PoolConfig::lease_margin`), so the old attempt is dead before a new one starts.
    pub grace: Duration,
    /// Rows rescued per statement.
    pub batch: u32,
    /// A PENDING execution this late is reported as unclaimed.
    pub overdue_after: Duration,
    /// Each handler's unclaimed executions are reported at most this often.
    pub overdue_report_every: Duration,
}

impl RescuerConfig {
    pub const DEFAULT_BATCH: u32 = 100;
    pub const DEFAULT_OVERDUE_AFTER: Duration = Duration::from_secs(60);
    pub const DEFAULT_OVERDUE_REPORT_EVERY: Duration = Duration::from_secs(300);

    pub fn from_settings(s: &WorkerSettings) -> RescuerConfig {
        RescuerConfig {
            interval: Duration::from_secs(s.rescue_interval_seconds),
            grace: Duration::from_secs(s.heartbeat_interval_seconds),
            batch: Self::DEFAULT_BATCH,
            overdue_after: Self::DEFAULT_OVERDUE_AFTER,
            overdue_report_every: Self::DEFAULT_OVERDUE_REPORT_EVERY,
        }
    }
}

pub enum RescuerMsg {
    Tick,
}

pub struct Rescuer;

pub struct RescuerState {
    shared: Arc<Shared>,
    config: RescuerConfig,
    reported: HashMap<String, Instant>,
    timer: Option<tokio::task::JoinHandle<()>>,
}

impl Actor for Rescuer {
    type Msg = RescuerMsg;
    type State = RescuerState;
    type Arguments = (Arc<Shared>, RescuerConfig);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (shared, config): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_message(RescuerMsg::Tick)?;
        Ok(RescuerState {
            shared,
            config,
            reported: HashMap::new(),
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
        crate::metrics::message_handled("rescuer");
        match msg {
            RescuerMsg::Tick => {
                if let Err(e) = rescue(state).await {
                    tracing::warn!(error = %e, "rescue pass failed; retrying at the next interval");
                }
                if let Err(e) = report_overdue(state).await {
                    tracing::debug!(error = %e, "overdue report failed");
                }
                state.timer = Some(send_later(&myself, state.config.interval, RescuerMsg::Tick));
            }
        }
        Ok(())
    }
}

async fn rescue(state: &mut RescuerState) -> StoreResult<()> {
    loop {
        let rows = state
            .shared
            .store
            .rescue_expired(state.config.batch, state.config.grace.as_secs_f64())
            .await?;
        // A rescue that ended an exclusive cron's execution lets its next fire time start.
        let ended: Vec<i64> = rows
            .iter()
            .filter(|r| r.exclusive_run && r.status != Status::Pending.as_str())
            .filter_map(|r| r.job_id)
            .collect();
        if !ended.is_empty() {
            state.shared.store.promote_waiting(&ended).await?;
        }
        // A rescue that made a cron's execution final (retries spent) starts its
        // on_failure chains (a dispatcher's poll would, later).
        let final_of_crons: Vec<i64> = rows
            .iter()
            .filter(|r| r.job_id.is_some())
            .filter(|r| r.status.parse::<Status>().is_ok_and(ends_chains))
            .map(|r| r.id)
            .collect();
        if !final_of_crons.is_empty() {
            if let Err(e) = state.shared.store.start_chains(&final_of_crons).await {
                tracing::warn!(error = %e, "cannot start chained executions of rescued executions; a dispatcher's poll will");
            }
        }
        for row in &rows {
            tracing::warn!(
                execution_id = row.id,
                job_id = row.job_id,
                handler = %row.handler_name,
                // Back to PENDING counted the attempt; a final row kept its count.
                attempt = if row.status == Status::Pending.as_str() {
                    row.retry_count
                } else {
                    row.retry_count + 1
                },
                worker = row.worker_id.as_deref().unwrap_or(""),
                status = %row.status,
                rescued_by = %state.shared.worker_id,
                "lease expired: execution rescued"
            );
            // The attempt's worker is gone, so the rescue is what ends a final one.
            if let Ok(status) = row.status.parse::<Status>() {
                if status.is_final() {
                    crate::metrics::execution_finished(&row.handler_name, status);
                }
            }
        }
        if rows.len() < state.config.batch as usize {
            return Ok(());
        }
    }
}

/// Statuses a rescue leaves that start chains (a rescue never records SUCCESS).
fn ends_chains(status: Status) -> bool {
    matches!(status, Status::Success | Status::Failed | Status::Timeout)
}

async fn report_overdue(state: &mut RescuerState) -> StoreResult<()> {
    let overdue = state
        .shared
        .store
        .overdue_pending(state.config.overdue_after.as_secs_f64())
        .await?;
    for o in overdue {
        let due = state
            .reported
            .get(&o.handler_name)
            .is_none_or(|t| t.elapsed() >= state.config.overdue_report_every);
        if !due {
            continue;
        }
        state
            .reported
            .insert(o.handler_name.clone(), Instant::now());
        tracing::warn!(
            handler = %o.handler_name,
            pending = o.count,
            oldest_run_at = %o.oldest_run_at.to_rfc3339(),
            registered_here = state.shared.registry.contains(&o.handler_name),
            "executions are overdue and unclaimed: is a worker with this handler running?"
        );
    }
    Ok(())
}
