//! Presence: keeps this process's row in `workers` fresh, so `GET /api/workers` lists the
//! live fleet. Beats every `admin.presence_interval_seconds`, prunes rows of processes that
//! stopped beating long ago, and removes its own row at a clean stop. A failed beat is
//! logged and retried at the next tick: presence is for operators, never for correctness.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;

use super::{Roles, Shared};
use crate::store::workers::Presence as Row;

/// Rows whose heartbeat is this many intervals old are deleted.
pub const PRUNE_AFTER_INTERVALS: f64 = 10.0;

pub enum PresenceMsg {
    Beat,
}

pub struct Presence;

pub struct PresenceState {
    shared: Arc<Shared>,
    me: Row,
    interval: Duration,
    first: bool,
    ticker: JoinHandle<()>,
}

impl Actor for Presence {
    type Msg = PresenceMsg;
    type State = PresenceState;
    type Arguments = (Arc<Shared>, Roles);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (shared, roles): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let interval = Duration::from_secs(shared.settings.admin.presence_interval_seconds);
        let mut role_names = Vec::new();
        for (on, name) in [
            (roles.dispatcher, "dispatcher"),
            (roles.worker, "worker"),
            (roles.admin, "admin"),
        ] {
            if on {
                role_names.push(name.to_string());
            }
        }
        let me = Row {
            id: shared.worker_id.clone(),
            host: super::hostname(),
            pid: i64::from(std::process::id()),
            roles: role_names,
            handlers: if roles.worker {
                shared.registry.names()
            } else {
                Vec::new()
            },
            concurrency: if roles.worker {
                shared.settings.worker.concurrency as i32
            } else {
                0
            },
        };
        let pacer = myself.clone();
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if pacer.send_message(PresenceMsg::Beat).is_err() {
                    return;
                }
            }
        });
        Ok(PresenceState {
            shared,
            me,
            interval,
            first: true,
            ticker,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.ticker.abort();
        if let Err(e) = state.shared.store.leave(&state.me.id).await {
            tracing::debug!(error = %e, "presence: cannot remove our row; it will go stale");
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::metrics::message_handled("presence");
        match msg {
            PresenceMsg::Beat => {
                let store = &state.shared.store;
                match store.beat(&state.me, state.first).await {
                    Ok(()) => state.first = false,
                    Err(e) => {
                        tracing::warn!(worker = %state.me.id, error = %e, "presence: heartbeat failed")
                    }
                }
                let stale = state.interval.as_secs_f64() * PRUNE_AFTER_INTERVALS;
                if let Err(e) = store.prune_workers(stale).await {
                    tracing::debug!(error = %e, "presence: pruning failed");
                }
            }
        }
        Ok(())
    }
}
