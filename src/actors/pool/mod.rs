//! The WorkerPool: claims due executions of the handlers this process has registered, runs
//! each attempt in its own TaskActor, and, as those actors' supervisor, records how each
//! attempt ended: SUCCESS with the result, FAILED with the error or panic message, TIMEOUT
//! when it killed the actor at `timeout_seconds`, then retry (exponential backoff with jitter)
//! or final through the store's fenced transitions.
//!
//! - At most `concurrency` attempts at once; claims take up to `claim_batch_size` rows.
//! - When nothing more is due it sleeps until the earliest PENDING `run_at` of its handlers
//!   (by the database clock), at most `poll_interval`; a freed slot claims again at once.
//! - Every `heartbeat_interval` it renews the leases of running attempts. A lost lease (the
//!   rescuer or an operator took the row) kills the attempt without reporting it; an
//!   operator's cancel request kills it and records CANCELLED. An attempt whose lease could
//!   not be renewed for `lease_seconds` is killed too: another worker may own it by now.
//! - Drain (shutdown): no more claims; running attempts get `shutdown_timeout`, then are
//!   killed and released to PENDING without counting the attempt; then the pool stops.
//!
//! Database writes run in spawned tasks that report back by message, so a slow or absent
//! database never stops the pool from enforcing deadlines.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::task::{TaskActor, TaskArgs, TaskState};
use super::{backoff, send_later, Shared};
use crate::config::WorkerSettings;
use crate::entities::job_execution::{Model as Execution, Status};
use crate::handlers::{ExecutionContext, HandlerError};
use crate::store::claim::ClaimRequest;
use crate::store::transition::{FailOutcome, Failure, Lease};
use crate::store::{Store, StoreError};

/// Longest wait between two attempts to record an outcome while the database is unreachable.
const RECORD_RETRY_MAX: Duration = Duration::from_secs(5);

/// The pool's settings as durations, from `worker.*`.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub concurrency: usize,
    pub claim_batch_size: u32,
    pub poll_interval: Duration,
    pub lease: Duration,
    pub heartbeat_interval: Duration,
    pub shutdown_timeout: Duration,
    pub retry_backoff_base_seconds: f64,
    pub retry_backoff_max_seconds: f64,
    pub retry_jitter: f64,
}

impl PoolConfig {
    pub fn from_settings(s: &WorkerSettings) -> PoolConfig {
        PoolConfig {
            concurrency: s.concurrency as usize,
            claim_batch_size: s.claim_batch_size,
            poll_interval: Duration::from_secs_f64(s.poll_interval_seconds),
            lease: Duration::from_secs(s.lease_seconds),
            heartbeat_interval: Duration::from_secs(s.heartbeat_interval_seconds),
            shutdown_timeout: Duration::from_secs(s.shutdown_timeout_seconds),
            retry_backoff_base_seconds: s.retry_backoff_base_seconds,
            retry_backoff_max_seconds: s.retry_backoff_max_seconds,
            retry_jitter: s.retry_jitter,
        }
    }
}

pub enum PoolMsg {
    /// Claim if there are free slots.
    Poll,
    /// A claim finished; `next_due` is set when it returned fewer rows than requested.
    Claimed {
        rows: Result<Vec<Execution>, String>,
        requested: usize,
        next_due: Option<Duration>,
    },
    /// Renew the leases of running attempts.
    Heartbeat,
    /// Renewal results.
    LeasesChecked(Vec<(i64, String, Result<Lease, String>)>),
    /// An attempt reached its timeout.
    Deadline(i64),
    /// The outcome of this execution's attempt is written (or given up on): its slot is free.
    Recorded(i64),
    /// Stop claiming and drain.
    Drain,
    /// The drain's grace period is over: release what still runs.
    DrainTimeout,
}

/// Why the pool killed an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Timeout,
    Cancelled,
    LeaseLost,
    Released,
}

struct Running {
    execution: Execution,
    token: String,
    actor: ActorCell,
    started: Instant,
    last_renewed: Instant,
    ending: Option<Ending>,
    deadline: JoinHandle<()>,
}

impl Running {
    /// Kills the attempt's actor once; `ending` says how its end is recorded.
    fn stop(&mut self, ending: Ending, worker: &str, why: &str) {
        if self.ending.is_some() {
            return;
        }
        let level_warn = matches!(ending, Ending::LeaseLost | Ending::Timeout);
        macro_rules! log {
            ($level:ident) => {
                tracing::$level!(
                    execution_id = self.execution.id,
                    job_id = self.execution.job_id,
                    handler = %self.execution.handler_name,
                    attempt = self.execution.retry_count + 1,
                    worker,
                    reason = why,
                    "stopping the attempt"
                )
            };
        }
        if level_warn {
            log!(warn);
        } else {
            log!(info);
        }
        self.ending = Some(ending);
        self.actor.kill();
    }
}

/// What to write for an ended attempt.
#[derive(Debug)]
enum Outcome {
    Success(Value),
    Failed(String),
    Timeout(String),
    Cancelled,
    Release,
}

pub struct WorkerPool;

pub struct PoolState {
    shared: Arc<Shared>,
    config: PoolConfig,
    handlers: Vec<String>,
    running: HashMap<i64, Running>,
    by_actor: HashMap<ActorId, i64>,
    /// Attempts that ended and whose outcome is being written; they keep their slot.
    recording: HashSet<i64>,
    claim_in_flight: usize,
    heartbeat_in_flight: bool,
    draining: bool,
    claim_errors: u32,
    poll_timer: Option<(Instant, JoinHandle<()>)>,
    heartbeat_timer: Option<JoinHandle<()>>,
    drain_timer: Option<JoinHandle<()>>,
}

impl PoolState {
    fn used(&self) -> usize {
        self.running.len() + self.recording.len() + self.claim_in_flight
    }

    fn idle(&self) -> bool {
        self.running.is_empty() && self.recording.is_empty() && self.claim_in_flight == 0
    }
}

impl Actor for WorkerPool {
    type Msg = PoolMsg;
    type State = PoolState;
    type Arguments = (Arc<Shared>, PoolConfig);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (shared, config): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let handlers = shared.registry.names();
        tracing::info!(
            worker = %shared.worker_id,
            concurrency = config.concurrency,
            handlers = ?handlers,
            "worker pool started"
        );
        let heartbeat = {
            let pool = myself.clone();
            let period = config.heartbeat_interval;
            tokio::spawn(async move {
                let mut interval = tokio::time::interval_at(Instant::now() + period, period);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    interval.tick().await;
                    if pool.send_message(PoolMsg::Heartbeat).is_err() {
                        return;
                    }
                }
            })
        };
        myself.send_message(PoolMsg::Poll)?;
        Ok(PoolState {
            shared,
            config,
            handlers,
            running: HashMap::new(),
            by_actor: HashMap::new(),
            recording: HashSet::new(),
            claim_in_flight: 0,
            heartbeat_in_flight: false,
            draining: false,
            claim_errors: 0,
            poll_timer: None,
            heartbeat_timer: Some(heartbeat),
            drain_timer: None,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for timer in [
            state.poll_timer.take().map(|(_, t)| t),
            state.heartbeat_timer.take(),
            state.drain_timer.take(),
        ]
        .into_iter()
        .flatten()
        {
            timer.abort();
        }
        for run in state.running.values() {
            run.deadline.abort();
        }
        tracing::info!(worker = %state.shared.worker_id, "worker pool stopped");
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::metrics::message_handled("worker_pool");
        match msg {
            PoolMsg::Poll => poll(&myself, state),
            PoolMsg::Claimed {
                rows,
                requested,
                next_due,
            } => claimed(&myself, state, rows, requested, next_due).await,
            PoolMsg::Heartbeat => heartbeat(&myself, state),
            PoolMsg::LeasesChecked(results) => leases_checked(state, results),
            PoolMsg::Deadline(id) => {
                if let Some(run) = state.running.get_mut(&id) {
                    run.stop(
                        Ending::Timeout,
                        &state.shared.worker_id,
                        "timeout_seconds reached",
                    );
                }
            }
            PoolMsg::Recorded(id) => {
                state.recording.remove(&id);
                if state.draining {
                    stop_if_drained(&myself, state);
                } else {
                    poll(&myself, state);
                }
            }
            PoolMsg::Drain => {
                if !state.draining {
                    state.draining = true;
                    if let Some((_, timer)) = state.poll_timer.take() {
                        timer.abort();
                    }
                    tracing::info!(
                        worker = %state.shared.worker_id,
                        running = state.running.len(),
                        timeout_seconds = state.config.shutdown_timeout.as_secs(),
                        "draining: no new claims; waiting for running attempts"
                    );
                    state.drain_timer = Some(send_later(
                        &myself,
                        state.config.shutdown_timeout,
                        PoolMsg::DrainTimeout,
                    ));
                    stop_if_drained(&myself, state);
                }
            }
            PoolMsg::DrainTimeout => {
                for run in state.running.values_mut() {
                    run.stop(
                        Ending::Released,
                        &state.shared.worker_id,
                        "shutdown timeout: returning it to PENDING for another worker",
                    );
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, outcome) = match event {
            SupervisionEvent::ActorTerminated(cell, boxed, _reason) => {
                let result = boxed
                    .and_then(|mut b| b.take::<TaskState>().ok())
                    .and_then(|s| s.result);
                (cell, result.map(Outcome::Success))
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                let message = match err.downcast_ref::<HandlerError>() {
                    Some(e) => e.message().to_string(),
                    None => format!("handler panicked: {err}"),
                };
                (cell, Some(Outcome::Failed(message)))
            }
            _ => return Ok(()),
        };
        let Some(id) = state.by_actor.remove(&cell.get_id()) else {
            return Ok(());
        };
        let Some(run) = state.running.remove(&id) else {
            return Ok(());
        };
        crate::metrics::task_actors_running(state.running.len());
        run.deadline.abort();
        let timeout = run.execution.timeout_seconds;
        let outcome = match (run.ending, outcome) {
            (Some(Ending::LeaseLost), _) => None,
            (_, Some(Outcome::Success(v))) => Some(Outcome::Success(v)),
            (Some(Ending::Timeout), _) => Some(Outcome::Timeout(format!(
                "timed out after {timeout} s (timeout_seconds)"
            ))),
            (Some(Ending::Cancelled), _) => Some(Outcome::Cancelled),
            (Some(Ending::Released), _) => Some(Outcome::Release),
            (None, Some(other)) => Some(other),
            (None, None) => Some(Outcome::Failed("the attempt stopped unexpectedly".into())),
        };
        let elapsed = run.started.elapsed();
        let label = match &outcome {
            None => "lost",
            Some(Outcome::Success(_)) => "success",
            Some(Outcome::Failed(_)) => "failed",
            Some(Outcome::Timeout(_)) => "timeout",
            Some(Outcome::Cancelled) => "cancelled",
            Some(Outcome::Release) => "released",
        };
        crate::metrics::attempt_finished(&run.execution.handler_name, label, elapsed);
        match outcome {
            None => {
                tracing::warn!(
                    execution_id = id,
                    job_id = run.execution.job_id,
                    handler = %run.execution.handler_name,
                    attempt = run.execution.retry_count + 1,
                    worker = %state.shared.worker_id,
                    "attempt stopped: its lease was lost (rescued, cancelled or taken by another worker); not reporting it"
                );
                if state.draining {
                    stop_if_drained(&myself, state);
                } else {
                    poll(&myself, state);
                }
            }
            Some(outcome) => {
                state.recording.insert(id);
                spawn_record(&myself, state, run.execution, run.token, outcome, elapsed);
            }
        }
        Ok(())
    }
}

fn poll(myself: &ActorRef<PoolMsg>, state: &mut PoolState) {
    if state.draining || state.claim_in_flight > 0 {
        return;
    }
    let free = state.config.concurrency.saturating_sub(state.used());
    if free == 0 {
        return; // a finished attempt polls again
    }
    if let Some((_, timer)) = state.poll_timer.take() {
        timer.abort();
    }
    let requested = free.min(state.config.claim_batch_size as usize);
    state.claim_in_flight = requested;
    let store = state.shared.store.clone();
    let handlers = state.handlers.clone();
    let worker_id = state.shared.worker_id.clone();
    let lease = state.config.lease.as_secs_f64();
    let pool = myself.clone();
    tokio::spawn(async move {
        let req = ClaimRequest {
            worker_id: &worker_id,
            handlers: &handlers,
            limit: requested as u32,
            lease_seconds: lease,
        };
        let rows = store.claim(&req).await.map_err(|e| e.to_string());
        let next_due = match &rows {
            Ok(rows) if rows.len() < requested => store.next_due(&handlers).await.ok().flatten(),
            _ => None,
        };
        let _ = pool.send_message(PoolMsg::Claimed {
            rows,
            requested,
            next_due,
        });
    });
}

fn schedule_poll(myself: &ActorRef<PoolMsg>, state: &mut PoolState, delay: Duration) {
    let at = Instant::now() + delay;
    if let Some((due, timer)) = &state.poll_timer {
        if *due <= at && !timer.is_finished() {
            return;
        }
    }
    if let Some((_, timer)) = state.poll_timer.take() {
        timer.abort();
    }
    state.poll_timer = Some((at, send_later(myself, delay, PoolMsg::Poll)));
}

async fn claimed(
    myself: &ActorRef<PoolMsg>,
    state: &mut PoolState,
    rows: Result<Vec<Execution>, String>,
    requested: usize,
    next_due: Option<Duration>,
) {
    state.claim_in_flight = 0;
    let rows = match rows {
        Ok(rows) => {
            state.claim_errors = 0;
            rows
        }
        Err(e) => {
            state.claim_errors += 1;
            let delay = backoff(
                state.config.poll_interval.as_secs_f64().min(1.0),
                30.0,
                state.claim_errors,
                0.2,
            );
            tracing::warn!(
                worker = %state.shared.worker_id,
                error = %e,
                failures = state.claim_errors,
                retry_in_ms = delay.as_millis() as u64,
                "claim failed"
            );
            if !state.draining {
                schedule_poll(myself, state, delay);
            } else {
                stop_if_drained(myself, state);
            }
            return;
        }
    };
    let full = rows.len() == requested;
    for row in rows {
        if state.draining {
            // Claimed while the drain began: give it straight back.
            state.recording.insert(row.id);
            let token = row.owner_token.clone().unwrap_or_default();
            spawn_record(myself, state, row, token, Outcome::Release, Duration::ZERO);
            continue;
        }
        start_attempt(myself, state, row).await;
    }
    if state.draining {
        stop_if_drained(myself, state);
        return;
    }
    if full {
        poll(myself, state);
    } else {
        let delay = next_due
            .unwrap_or(state.config.poll_interval)
            .min(state.config.poll_interval);
        schedule_poll(myself, state, delay);
    }
}

async fn start_attempt(myself: &ActorRef<PoolMsg>, state: &mut PoolState, row: Execution) {
    let id = row.id;
    let token = row.owner_token.clone().unwrap_or_default();
    let attempt = (row.retry_count.max(0) + 1) as u32;
    let timeout = Duration::from_secs(row.timeout_seconds.max(1) as u64);
    let lag_ms = (Utc::now() - row.scheduled_time).num_milliseconds();
    let Some(handler) = state.shared.registry.get(&row.handler_name) else {
        // Unreachable: the claim names only registered handlers.
        state.recording.insert(id);
        spawn_record(myself, state, row, token, Outcome::Release, Duration::ZERO);
        return;
    };
    let ctx = ExecutionContext {
        execution_id: id,
        job_id: row.job_id,
        handler_name: row.handler_name.clone(),
        scheduled_time: row.scheduled_time,
        attempt,
        max_attempts: (row.max_retry.max(0) + 1) as u32,
        timeout,
        worker_id: state.shared.worker_id.clone(),
    };
    let args = TaskArgs {
        handler,
        params: row.params.clone().unwrap_or(Value::Null),
        ctx,
    };
    match Actor::spawn_linked(None, TaskActor, args, myself.get_cell()).await {
        Ok((actor, _)) => {
            tracing::info!(
                execution_id = id,
                job_id = row.job_id,
                handler = %row.handler_name,
                attempt,
                worker = %state.shared.worker_id,
                scheduled_time = %row.scheduled_time.to_rfc3339(),
                lag_ms,
                "attempt started"
            );
            // Lag of first attempts only: a retry starts late by design (its backoff).
            if row.retry_count == 0 {
                crate::metrics::schedule_lag(&row.handler_name, lag_ms as f64 / 1000.0);
            }
            let cell = actor.get_cell();
            state.by_actor.insert(cell.get_id(), id);
            let now = Instant::now();
            state.running.insert(
                id,
                Running {
                    execution: row,
                    token,
                    actor: cell,
                    started: now,
                    last_renewed: now,
                    ending: None,
                    deadline: send_later(myself, timeout, PoolMsg::Deadline(id)),
                },
            );
            crate::metrics::task_actors_running(state.running.len());
        }
        Err(e) => {
            state.recording.insert(id);
            spawn_record(
                myself,
                state,
                row,
                token,
                Outcome::Failed(format!("cannot start the attempt: {e}")),
                Duration::ZERO,
            );
        }
    }
}

fn heartbeat(myself: &ActorRef<PoolMsg>, state: &mut PoolState) {
    // An attempt whose lease could not be renewed for a whole lease period may belong to
    // another worker by now: stop it rather than run it twice.
    let lease = state.config.lease;
    for run in state.running.values_mut() {
        if run.last_renewed.elapsed() >= lease {
            run.stop(
                Ending::LeaseLost,
                &state.shared.worker_id,
                "lease not renewed for a whole lease period",
            );
        }
    }
    if state.heartbeat_in_flight {
        return;
    }
    let leases: Vec<(i64, String)> = state
        .running
        .iter()
        .filter(|(_, r)| r.ending.is_none())
        .map(|(id, r)| (*id, r.token.clone()))
        .collect();
    if leases.is_empty() {
        return;
    }
    state.heartbeat_in_flight = true;
    let store = state.shared.store.clone();
    let seconds = state.config.lease.as_secs_f64();
    let pool = myself.clone();
    tokio::spawn(async move {
        let mut results = Vec::with_capacity(leases.len());
        for (id, token) in leases {
            let lease = store
                .renew_lease(id, &token, seconds)
                .await
                .map_err(|e| e.to_string());
            results.push((id, token, lease));
        }
        let _ = pool.send_message(PoolMsg::LeasesChecked(results));
    });
}

fn leases_checked(state: &mut PoolState, results: Vec<(i64, String, Result<Lease, String>)>) {
    state.heartbeat_in_flight = false;
    for (id, token, lease) in results {
        let Some(run) = state.running.get_mut(&id) else {
            continue;
        };
        if run.token != token || run.ending.is_some() {
            continue;
        }
        match lease {
            Ok(Lease::Held {
                cancel_requested, ..
            }) => {
                run.last_renewed = Instant::now();
                if cancel_requested {
                    run.stop(
                        Ending::Cancelled,
                        &state.shared.worker_id,
                        "an operator asked to cancel it",
                    );
                }
            }
            Ok(Lease::Lost) => run.stop(
                Ending::LeaseLost,
                &state.shared.worker_id,
                "its lease is gone (rescued, cancelled or taken by another worker)",
            ),
            Err(e) => tracing::warn!(
                execution_id = id,
                worker = %state.shared.worker_id,
                error = %e,
                "lease renewal failed; will retry at the next heartbeat"
            ),
        }
    }
}

fn stop_if_drained(myself: &ActorRef<PoolMsg>, state: &mut PoolState) {
    if state.draining && state.idle() {
        myself.stop(Some("drained".into()));
    }
}

/// Writes an attempt's outcome in a task of its own, retrying while the database is
/// unreachable, then frees the slot with [`PoolMsg::Recorded`].
fn spawn_record(
    myself: &ActorRef<PoolMsg>,
    state: &PoolState,
    execution: Execution,
    token: String,
    outcome: Outcome,
    elapsed: Duration,
) {
    let pool = myself.clone();
    let store = state.shared.store.clone();
    let worker = state.shared.worker_id.clone();
    let config = state.config.clone();
    tokio::spawn(async move {
        let id = execution.id;
        record(
            &store, &config, &worker, &execution, &token, outcome, elapsed,
        )
        .await;
        let _ = pool.send_message(PoolMsg::Recorded(id));
    });
}

async fn record(
    store: &Store,
    config: &PoolConfig,
    worker: &str,
    execution: &Execution,
    token: &str,
    outcome: Outcome,
    elapsed: Duration,
) {
    let id = execution.id;
    let attempt = execution.retry_count + 1;
    let duration_ms = elapsed.as_millis() as u64;
    macro_rules! log {
        ($level:ident, $($rest:tt)*) => {
            tracing::$level!(
                execution_id = id,
                job_id = execution.job_id,
                handler = %execution.handler_name,
                attempt,
                worker,
                duration_ms,
                $($rest)*
            )
        };
    }
    // Past the lease the rescuer owns the row; a late write would be refused anyway.
    let give_up = Instant::now() + config.lease;
    let mut failures = 0u32;
    loop {
        let written: Result<bool, StoreError> = match &outcome {
            Outcome::Success(result) => {
                let result = (!result.is_null()).then(|| result.clone());
                let ok = store.succeed(id, token, result).await;
                if let Ok(true) = ok {
                    log!(info, status = "SUCCESS", "attempt succeeded");
                    crate::metrics::execution_finished(&execution.handler_name, Status::Success);
                }
                ok
            }
            Outcome::Cancelled => {
                let ok = store
                    .cancelled(id, token, "cancelled by an operator while running")
                    .await;
                if let Ok(true) = ok {
                    log!(info, status = "CANCELLED", "attempt cancelled");
                    crate::metrics::execution_finished(&execution.handler_name, Status::Cancelled);
                }
                ok
            }
            Outcome::Release => {
                let ok = store.release(id, token).await;
                if let Ok(true) = ok {
                    log!(
                        info,
                        status = "PENDING",
                        "attempt released for another worker (not counted)"
                    );
                }
                ok
            }
            Outcome::Failed(message) | Outcome::Timeout(message) => {
                let failure = if matches!(outcome, Outcome::Timeout(_)) {
                    Failure::Timeout
                } else {
                    Failure::Failed
                };
                let delay = backoff(
                    config.retry_backoff_base_seconds,
                    config.retry_backoff_max_seconds,
                    (execution.retry_count.max(0) + 1) as u32,
                    config.retry_jitter,
                );
                match store
                    .fail(id, token, failure, message, delay.as_secs_f64())
                    .await
                {
                    Ok(Some(FailOutcome::Retrying {
                        retry_count,
                        run_at,
                    })) => {
                        log!(
                            warn,
                            status = failure.final_status().as_str(),
                            error = %message,
                            retry_count,
                            retry_at = %run_at.to_rfc3339(),
                            "attempt failed; retrying after backoff"
                        );
                        Ok(true)
                    }
                    Ok(Some(FailOutcome::Final {
                        status,
                        retry_count,
                    })) => {
                        log!(
                            error,
                            status = status.as_str(),
                            error = %message,
                            retry_count,
                            "attempt failed; no retries left"
                        );
                        crate::metrics::execution_finished(&execution.handler_name, status);
                        Ok(true)
                    }
                    Ok(None) => Ok(false),
                    Err(e) => Err(e),
                }
            }
        };
        match written {
            Ok(true) => return,
            Ok(false) => {
                log!(
                    warn,
                    "the execution was no longer ours when its outcome was written (lease expired, cancelled or rescued); outcome dropped"
                );
                return;
            }
            Err(e) => {
                failures += 1;
                let pause = backoff(0.1, RECORD_RETRY_MAX.as_secs_f64(), failures, 0.2);
                if Instant::now() + pause >= give_up {
                    log!(
                        error,
                        error = %e,
                        "cannot record the outcome; the lease will expire and the rescuer will return the execution"
                    );
                    return;
                }
                log!(warn, error = %e, failures, "recording the outcome failed; retrying");
                tokio::time::sleep(pause).await;
            }
        }
    }
}
