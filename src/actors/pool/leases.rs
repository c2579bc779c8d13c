//! Keeping the leases of running attempts, and stopping attempts that lost them:
//!
//! - **Renewal**: every `heartbeat_interval` one statement renews the leases of all running
//!   attempts ([`Store::renew_leases`]), on the worker's dedicated lease pool so it never
//!   queues behind claims and outcome writes. A lease missing from the answer is lost (the
//!   rescuer, an operator or another worker took the row): the attempt is stopped and not
//!   reported.
//! - **Deadline**: an attempt's lease is counted from when its last successful renewal (or
//!   its claim) was *sent*, which is no later than the database stamped it. If no renewal
//!   succeeds, the attempt is stopped (its process group killed) at `sent + lease − margin`,
//!   strictly before the lease ends; the rescuer waits a further grace past the end, so no
//!   other worker can start the execution while this one still runs it.
//! - **Cancel**: every [`CANCEL_POLL_INTERVAL`] a read lists this worker's RUNNING rows with
//!   `cancel_requested`, so an operator's cancel stops the attempt within a second instead of
//!   at the next heartbeat.

use std::time::Duration;

use ractor::ActorRef;
use tokio::time::Instant;

use super::{Deadline, Ending, PoolMsg, PoolState};
use crate::store::transition::Lease;

/// How often a worker with running attempts looks for cancel requests.
pub const CANCEL_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// A cancel poll that takes longer than this is abandoned (the next one tries again).
const CANCEL_POLL_TIMEOUT: Duration = Duration::from_secs(5);

/// Results of one renewal: each attempt sent, with its lease or why it could not be read.
pub type Renewals = Result<Vec<(i64, String, Lease)>, String>;

/// When an attempt whose lease was last confirmed by a statement sent at `sent` must stop.
pub(super) fn lease_deadline(state: &PoolState, sent: Instant) -> Instant {
    sent + state.config.lease.saturating_sub(state.config.lease_margin)
}

/// The lease deadline of `id` came (its entry is out of the queue): stop the attempt unless
/// a renewal moved the deadline, in which case the new one is queued.
pub(super) fn deadline_reached(myself: &ActorRef<PoolMsg>, state: &mut PoolState, id: i64) {
    let deadline = match state.running.get(&id) {
        Some(run) if run.ending.is_none() => lease_deadline(state, run.lease_sent),
        _ => return,
    };
    let worker = state.shared.worker_id.clone();
    let Some(run) = state.running.get_mut(&id) else {
        return;
    };
    if Instant::now() >= deadline {
        run.stop(
            Ending::LeaseLost,
            &worker,
            "its lease could not be renewed in time; stopping it before the lease ends, so no \
             other worker can run it at the same time",
        );
    } else {
        run.lease_check_at = deadline;
        state
            .deadlines
            .insert(myself, deadline, id, Deadline::Lease);
    }
}

/// Heartbeat tick: renew every running attempt's lease in one statement.
pub(super) fn heartbeat(myself: &ActorRef<PoolMsg>, state: &mut PoolState) {
    if state.heartbeat_in_flight {
        return;
    }
    let attempts: Vec<(i64, String)> = state
        .running
        .iter()
        .filter(|(_, r)| r.ending.is_none())
        .map(|(id, r)| (*id, r.token.clone()))
        .collect();
    if attempts.is_empty() {
        return;
    }
    state.heartbeat_in_flight = true;
    let store = state.shared.lease_store.clone();
    let seconds = state.config.lease.as_secs_f64();
    let limit = state.config.heartbeat_interval;
    let pool = myself.clone();
    let sent_at = Instant::now();
    tokio::spawn(async move {
        let results =
            match tokio::time::timeout(limit, store.renew_leases(&attempts, seconds)).await {
                Ok(Ok(leases)) => Ok(attempts
                    .into_iter()
                    .zip(leases)
                    .map(|((id, token), (_, lease))| (id, token, lease))
                    .collect()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!(
                    "the renewal took longer than {} ms",
                    limit.as_millis()
                )),
            };
        let _ = pool.send_message(PoolMsg::LeasesChecked { sent_at, results });
    });
}

/// A renewal came back.
pub(super) fn leases_checked(state: &mut PoolState, sent_at: Instant, results: Renewals) {
    state.heartbeat_in_flight = false;
    let worker = state.shared.worker_id.clone();
    let results = match results {
        Ok(results) => results,
        Err(e) => {
            tracing::warn!(
                worker = %worker,
                running = state.running.len(),
                error = %e,
                "lease renewal failed; retrying at the next heartbeat (attempts stop before their leases end)"
            );
            return;
        }
    };
    for (id, token, lease) in results {
        let Some(run) = state.running.get_mut(&id) else {
            continue;
        };
        if run.token != token || run.ending.is_some() {
            continue;
        }
        match lease {
            Lease::Held {
                cancel_requested, ..
            } => {
                if sent_at > run.lease_sent {
                    run.lease_sent = sent_at;
                }
                if cancel_requested {
                    run.stop(Ending::Cancelled, &worker, "an operator asked to cancel it");
                }
            }
            Lease::Lost => run.stop(
                Ending::LeaseLost,
                &worker,
                "its lease is gone (rescued, cancelled or taken by another worker)",
            ),
        }
    }
}

/// Cancel tick: look for cancel requests among this worker's running attempts.
pub(super) fn poll_cancels(myself: &ActorRef<PoolMsg>, state: &mut PoolState) {
    if state.cancel_poll_in_flight || !state.running.values().any(|r| r.ending.is_none()) {
        return;
    }
    state.cancel_poll_in_flight = true;
    let store = state.shared.lease_store.clone();
    let worker = state.shared.worker_id.clone();
    let pool = myself.clone();
    tokio::spawn(async move {
        let result =
            match tokio::time::timeout(CANCEL_POLL_TIMEOUT, store.cancel_requests(&worker)).await {
                Ok(Ok(rows)) => Ok(rows),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".to_string()),
            };
        let _ = pool.send_message(PoolMsg::CancelsChecked(result));
    });
}

/// A cancel poll came back.
pub(super) fn cancels_checked(state: &mut PoolState, result: Result<Vec<(i64, String)>, String>) {
    state.cancel_poll_in_flight = false;
    let worker = state.shared.worker_id.clone();
    match result {
        Ok(requests) => {
            for (id, token) in requests {
                if let Some(run) = state.running.get_mut(&id) {
                    if run.token == token {
                        run.stop(Ending::Cancelled, &worker, "an operator asked to cancel it");
                    }
                }
            }
        }
        Err(e) => tracing::debug!(worker = %worker, error = %e, "cancel poll failed"),
    }
}
