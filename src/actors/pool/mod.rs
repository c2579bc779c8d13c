//! The WorkerPool: claims due executions of the handlers this process has registered, runs
//! each attempt in its own TaskActor, and, as those actors' supervisor, records how each
//! attempt ended: SUCCESS with the result, FAILED with the error or panic message, TIMEOUT
//! when it killed the actor at `timeout_seconds`, then retry (exponential backoff with jitter)
//! or final through the store's fenced transitions ([`record`]).
//!
//! - At most `concurrency` attempts at once; claims take up to `claim_batch_size` rows.
//! - When nothing more is due it sleeps until the earliest PENDING `run_at` of its handlers
//!   (by the database clock), at most `poll_interval`; a freed slot claims again at once,
//!   and so does a wake-up when work becomes due (`store::wake`: in-process, and PostgreSQL
//!   `NOTIFY` across processes).
//! - A claim whose outcome is unknown (an error or timeout around its commit) is resolved by
//!   its token before the next claim: the rows it did take are adopted and run.
//! - Leases ([`leases`]): renewed in one statement per heartbeat on a dedicated pool; an
//!   attempt whose lease could not be renewed is killed before the lease ends; a lost lease
//!   kills the attempt without reporting it; an operator's cancel kills it within a second
//!   and records CANCELLED.
//! - Every attempt started and ended is reported to the supervisor, so if this actor crashes
//!   the supervisor kills and releases its attempts at once instead of leaving their rows
//!   RUNNING until the leases expire.
//! - Drain (shutdown): no more claims; running attempts get `shutdown_timeout`, then are
//!   killed and released to PENDING without counting the attempt; then the pool stops.
//! - Deadlines ([`deadlines`]): every running attempt's timeout and lease deadline sit in
//!   one ordered queue with one armed timer, not a timer task each.
//! - Ended attempts go to the completer ([`completer`]), which writes many per statement;
//!   the slot is free as soon as the attempt ends.
//!
//! Database writes run in spawned tasks that report back by message, so a slow or absent
//! database never stops the pool from enforcing deadlines.

mod completer;
mod deadlines;
mod leases;

pub use leases::CANCEL_POLL_INTERVAL;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::supervisor::SupervisorMsg;
use super::task::{TaskActor, TaskArgs, TaskState};
use super::{backoff, send_later, Shared};
use crate::config::WorkerSettings;
use crate::entities::job_execution::Model as Execution;
use crate::handlers::{ExecutionContext, HandlerError};
use crate::store::claim::{new_token, ClaimRequest};
use crate::store::Store;
use completer::{Completer, Ended, Outcome};
use deadlines::{Deadline, Deadlines};
use leases::Renewals;

/// Longest a few free slots wait for more to gather into one claim while attempts run.
const CLAIM_GATHER: Duration = Duration::from_millis(5);

/// Claims one pool may have in flight at once.
const CLAIMS_IN_FLIGHT_MAX: usize = 2;

/// Claims pause while this many ended attempts wait to be written.
const UNWRITTEN_MAX: usize = 10_000;

/// Longest pause between two tries to resolve a claim whose outcome is unknown.
const RESOLVE_RETRY_MAX: Duration = Duration::from_secs(5);

/// The pool's settings as durations, from `worker.*`.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub concurrency: usize,
    pub claim_batch_size: u32,
    pub poll_interval: Duration,
    pub lease: Duration,
    pub heartbeat_interval: Duration,
    /// An attempt whose lease was not renewed stops this long before the lease ends.
    pub lease_margin: Duration,
    pub shutdown_timeout: Duration,
    pub retry_backoff_base_seconds: f64,
    pub retry_backoff_max_seconds: f64,
    pub retry_jitter: f64,
}

impl PoolConfig {
    pub fn from_settings(s: &WorkerSettings) -> PoolConfig {
        let heartbeat_interval = Duration::from_secs(s.heartbeat_interval_seconds);
        PoolConfig {
            concurrency: s.concurrency as usize,
            claim_batch_size: s.claim_batch_size,
            poll_interval: Duration::from_secs_f64(s.poll_interval_seconds),
            lease: Duration::from_secs(s.lease_seconds),
            heartbeat_interval,
            lease_margin: heartbeat_interval / 2,
            shutdown_timeout: Duration::from_secs(s.shutdown_timeout_seconds),
            retry_backoff_base_seconds: s.retry_backoff_base_seconds,
            retry_backoff_max_seconds: s.retry_backoff_max_seconds,
            retry_jitter: s.retry_jitter,
        }
    }
}

/// What a pool starts with.
pub struct PoolArgs {
    pub(crate) shared: Arc<Shared>,
    pub config: PoolConfig,
    /// Told of every attempt started and ended, to release them if this pool crashes.
    pub book: Option<ActorRef<SupervisorMsg>>,
}

pub enum PoolMsg {
    /// Claim if there are free slots.
    Poll,
    /// Work became due (announced in this process or, on PostgreSQL, by another one).
    Wake,
    /// A claim finished. `lease_sent`: when the statement that set the rows' lease was sent.
    /// `error`: the claim's outcome was unknown and `rows` are what resolving it by its
    /// token found. `next_due` is set when a clean claim returned fewer rows than requested.
    Claimed {
        rows: Vec<Execution>,
        lease_sent: Instant,
        requested: usize,
        next_due: Option<Duration>,
        error: Option<String>,
    },
    /// Renew the leases of running attempts.
    Heartbeat,
    /// Renewal results; `sent_at`: when the renewal was sent.
    LeasesChecked {
        sent_at: Instant,
        results: Renewals,
    },
    /// Look for cancel requests.
    CancelPoll,
    CancelsChecked(Result<Vec<(i64, String)>, String>),
    /// An attempt's timeout or lease deadline may have come ([`Deadlines`]).
    DeadlinesDue,
    /// The outcomes of these executions' attempts are written (or given up on).
    Recorded(Vec<i64>),
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
    /// When the last statement that renewed (or set, by claiming) the lease was sent.
    lease_sent: Instant,
    ending: Option<Ending>,
    /// Its entries in the pool's [`Deadlines`], removed when it ends.
    timeout_at: Instant,
    lease_check_at: Instant,
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

pub struct WorkerPool;

pub struct PoolState {
    shared: Arc<Shared>,
    config: PoolConfig,
    book: Option<ActorRef<SupervisorMsg>>,
    handlers: Vec<String>,
    running: HashMap<i64, Running>,
    by_actor: HashMap<ActorId, i64>,
    /// Attempts that ended and whose outcome the completer is writing. Their slots are
    /// free; the drain waits for them, and claims pause while [`UNWRITTEN_MAX`] wait.
    recording: HashSet<i64>,
    completer: Completer,
    /// The running attempts' timeouts and lease deadlines.
    deadlines: Deadlines,
    /// A `Poll` is queued behind the supervision events already waiting, so attempts that
    /// end together free their slots before one claim takes them all.
    poll_queued: bool,
    /// Since when free slots have waited for more to gather into one claim.
    gathering_since: Option<Instant>,
    /// Slots reserved by claims in flight, and how many claims those are.
    claim_in_flight: usize,
    claims: usize,
    heartbeat_in_flight: bool,
    cancel_poll_in_flight: bool,
    draining: bool,
    claim_errors: u32,
    poll_timer: Option<(Instant, JoinHandle<()>)>,
    tickers: Vec<JoinHandle<()>>,
    drain_timer: Option<JoinHandle<()>>,
}

impl PoolState {
    fn used(&self) -> usize {
        self.running.len() + self.claim_in_flight
    }

    fn idle(&self) -> bool {
        self.running.is_empty() && self.recording.is_empty() && self.claim_in_flight == 0
    }

    fn tell_book(&self, msg: SupervisorMsg) {
        if let Some(book) = &self.book {
            let _ = book.send_message(msg);
        }
    }
}

/// Sends `msg()` to the pool every `period`, the first time one period from now.
fn ticker(pool: &ActorRef<PoolMsg>, period: Duration, msg: fn() -> PoolMsg) -> JoinHandle<()> {
    let pool = pool.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval_at(Instant::now() + period, period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if pool.send_message(msg()).is_err() {
                return;
            }
        }
    })
}

/// Sends `Wake` to the pool whenever the store announces due work (bursts coalesce).
fn wake_on_due(pool: &ActorRef<PoolMsg>, store: &Store) -> JoinHandle<()> {
    let pool = pool.clone();
    let mut due = store.wakeups().subscribe();
    tokio::spawn(async move {
        while due.changed().await.is_ok() {
            if pool.send_message(PoolMsg::Wake).is_err() {
                return;
            }
        }
    })
}

impl Actor for WorkerPool {
    type Msg = PoolMsg;
    type State = PoolState;
    type Arguments = PoolArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: PoolArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let PoolArgs {
            shared,
            config,
            book,
        } = args;
        let handlers = shared.registry.names();
        tracing::info!(
            worker = %shared.worker_id,
            concurrency = config.concurrency,
            handlers = ?handlers,
            "worker pool started"
        );
        let tickers = vec![
            ticker(&myself, config.heartbeat_interval, || PoolMsg::Heartbeat),
            ticker(&myself, CANCEL_POLL_INTERVAL, || PoolMsg::CancelPoll),
            wake_on_due(&myself, &shared.store),
            {
                let store = shared.store.clone();
                tokio::spawn(async move { store.listen_for_due().await })
            },
        ];
        let completer = Completer::start(
            shared.claim_store.clone(),
            shared.worker_id.clone(),
            config.clone(),
            myself.clone(),
        );
        myself.send_message(PoolMsg::Poll)?;
        Ok(PoolState {
            shared,
            config,
            book,
            handlers,
            running: HashMap::new(),
            by_actor: HashMap::new(),
            recording: HashSet::new(),
            completer,
            deadlines: Deadlines::default(),
            poll_queued: false,
            gathering_since: None,
            claim_in_flight: 0,
            claims: 0,
            heartbeat_in_flight: false,
            cancel_poll_in_flight: false,
            draining: false,
            claim_errors: 0,
            poll_timer: None,
            tickers,
            drain_timer: None,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for timer in state
            .tickers
            .drain(..)
            .chain(state.poll_timer.take().map(|(_, t)| t))
            .chain(state.drain_timer.take())
        {
            timer.abort();
        }
        state.deadlines.clear();
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
            PoolMsg::Poll => {
                state.poll_queued = false;
                poll(&myself, state)
            }
            PoolMsg::Wake => poll(&myself, state),
            PoolMsg::Claimed {
                rows,
                lease_sent,
                requested,
                next_due,
                error,
            } => claimed(&myself, state, rows, lease_sent, requested, next_due, error).await,
            PoolMsg::Heartbeat => leases::heartbeat(&myself, state),
            PoolMsg::LeasesChecked { sent_at, results } => {
                leases::leases_checked(state, sent_at, results)
            }
            PoolMsg::CancelPoll => leases::poll_cancels(&myself, state),
            PoolMsg::CancelsChecked(result) => leases::cancels_checked(state, result),
            PoolMsg::DeadlinesDue => {
                for (id, kind) in state.deadlines.due(&myself) {
                    match kind {
                        Deadline::Lease => leases::deadline_reached(&myself, state, id),
                        Deadline::Timeout => {
                            if let Some(run) = state.running.get_mut(&id) {
                                run.stop(
                                    Ending::Timeout,
                                    &state.shared.worker_id,
                                    "timeout_seconds reached",
                                );
                            }
                        }
                    }
                }
            }
            PoolMsg::Recorded(ids) => {
                for id in ids {
                    state.recording.remove(&id);
                }
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
                if state.claim_in_flight > 0 {
                    // The database has not answered the claim (nor its resolution) for the
                    // whole grace period: stop waiting; its rows, if any, go to the rescuer.
                    tracing::warn!(
                        worker = %state.shared.worker_id,
                        "shutdown timeout with a claim still unresolved; its rows, if it took any, return when their lease expires"
                    );
                    state.claim_in_flight = 0;
                    state.claims = 0;
                }
                stop_if_drained(&myself, state);
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
        state
            .deadlines
            .remove(run.timeout_at, id, Deadline::Timeout);
        state
            .deadlines
            .remove(run.lease_check_at, id, Deadline::Lease);
        state.tell_book(SupervisorMsg::AttemptEnded {
            id,
            token: run.token.clone(),
        });
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
        let label = outcome.as_ref().map_or("lost", Outcome::label);
        crate::metrics::attempt_finished(&run.execution.handler_name, label, elapsed);
        match outcome {
            None => {
                tracing::warn!(
                    execution_id = id,
                    job_id = run.execution.job_id,
                    handler = %run.execution.handler_name,
                    attempt = run.execution.retry_count + 1,
                    worker = %state.shared.worker_id,
                    "attempt stopped: its lease was lost or could not be renewed in time; not reporting it"
                );
                if state.draining {
                    stop_if_drained(&myself, state);
                } else {
                    poll(&myself, state);
                }
            }
            Some(outcome) => {
                hand_over(state, run.execution, run.token, outcome, elapsed);
                queue_poll(&myself, state);
            }
        }
        Ok(())
    }
}

/// Gives an ended attempt to the completer; its slot is free from now on.
fn hand_over(
    state: &mut PoolState,
    execution: Execution,
    token: String,
    outcome: Outcome,
    elapsed: Duration,
) {
    state.recording.insert(execution.id);
    state.completer.push(Ended {
        execution,
        token,
        outcome,
        elapsed,
    });
}

/// Claims after the supervision events already queued have been handled (ractor handles
/// them before messages), so the slots they free go into one claim.
fn queue_poll(myself: &ActorRef<PoolMsg>, state: &mut PoolState) {
    if state.draining {
        stop_if_drained(myself, state);
        return;
    }
    if !state.poll_queued && myself.send_message(PoolMsg::Poll).is_ok() {
        state.poll_queued = true;
    }
}

fn poll(myself: &ActorRef<PoolMsg>, state: &mut PoolState) {
    // A second claim may run while one is in flight, so slots freed meanwhile do not wait
    // a round trip; never while claims are failing.
    let limit = if state.claim_errors > 0 {
        1
    } else {
        CLAIMS_IN_FLIGHT_MAX
    };
    if state.draining || state.claims >= limit {
        return;
    }
    if state.recording.len() >= UNWRITTEN_MAX {
        return; // the completer is behind (a slow database): the next write polls again
    }
    let free = state.config.concurrency.saturating_sub(state.used());
    if free == 0 {
        return; // a finished attempt polls again
    }
    // A few free slots while attempts still run (or a claim is in flight): more slots free
    // up soon, so wait up to CLAIM_GATHER for half a claim's worth rather than taking them
    // one claim each. An idle pool claims at once.
    let target = state
        .config
        .concurrency
        .min(state.config.claim_batch_size as usize);
    if free < target.div_ceil(2) && (state.claims > 0 || !state.running.is_empty()) {
        let now = Instant::now();
        let since = *state.gathering_since.get_or_insert(now);
        if now < since + CLAIM_GATHER {
            if state.claims == 0 {
                schedule_poll(myself, state, since + CLAIM_GATHER - now);
            }
            return; // a claim in flight polls again when it returns
        }
    }
    state.gathering_since = None;
    if let Some((_, timer)) = state.poll_timer.take() {
        timer.abort();
    }
    let requested = free.min(state.config.claim_batch_size as usize);
    state.claim_in_flight += requested;
    state.claims += 1;
    let store = state.shared.claim_store.clone();
    let handlers = state.handlers.clone();
    let worker_id = state.shared.worker_id.clone();
    let lease = state.config.lease;
    let pool = myself.clone();
    tokio::spawn(async move {
        let token = new_token();
        let req = ClaimRequest {
            worker_id: &worker_id,
            handlers: &handlers,
            limit: requested as u32,
            lease_seconds: lease.as_secs_f64(),
            token: &token,
        };
        let sent_at = Instant::now();
        // Past the lease the claimed rows would be the rescuer's anyway.
        let outcome = match tokio::time::timeout(lease, store.claim(&req)).await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} s", lease.as_secs())),
        };
        let msg = match outcome {
            Ok(rows) => {
                let next_due = if rows.len() < requested {
                    store.next_due(&handlers).await.ok().flatten()
                } else {
                    None
                };
                PoolMsg::Claimed {
                    rows,
                    lease_sent: sent_at,
                    requested,
                    next_due,
                    error: None,
                }
            }
            Err(error) => {
                let (rows, lease_sent) =
                    resolve_claim(&store, &token, lease, &worker_id, &error).await;
                PoolMsg::Claimed {
                    rows,
                    lease_sent,
                    requested,
                    next_due: None,
                    error: Some(error),
                }
            }
        };
        if pool.send_message(msg).is_err() {
            // The pool is gone (it crashed while the claim ran): nobody will run these rows,
            // so give them back now rather than to the rescuer after the lease.
            if let Err(e) = store.release_claim(&token).await {
                tracing::warn!(worker = %worker_id, error = %e, "cannot release a claim whose pool stopped; its rows return when their lease expires");
            }
        }
    });
}

/// A claim failed in a way that leaves its outcome unknown (it may have committed with the
/// reply lost). Looks for the rows carrying its token, renewing their lease, until the
/// database answers: those rows are the claim's, to be run (or released when draining),
/// so none stays RUNNING with no attempt behind it. Returns them with when the renewal
/// that stands as their lease was sent.
async fn resolve_claim(
    store: &Store,
    token: &str,
    lease: Duration,
    worker: &str,
    error: &str,
) -> (Vec<Execution>, Instant) {
    let mut failures = 0u32;
    loop {
        let sent = Instant::now();
        let answer =
            tokio::time::timeout(lease, store.adopt_claim(token, lease.as_secs_f64())).await;
        match answer {
            Ok(Ok(rows)) => {
                tracing::warn!(
                    worker,
                    error,
                    adopted = rows.len(),
                    tries = failures + 1,
                    "claim failed with an unknown outcome; resolved by its token (the rows it took run now)"
                );
                return (rows, sent);
            }
            Ok(Err(e)) => {
                failures += 1;
                tracing::warn!(worker, error = %e, failures, "cannot resolve an unfinished claim yet; retrying");
            }
            Err(_) => {
                failures += 1;
                tracing::warn!(
                    worker,
                    failures,
                    "resolving an unfinished claim timed out; retrying"
                );
            }
        }
        tokio::time::sleep(backoff(0.2, RESOLVE_RETRY_MAX.as_secs_f64(), failures, 0.2)).await;
    }
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
    rows: Vec<Execution>,
    lease_sent: Instant,
    requested: usize,
    next_due: Option<Duration>,
    error: Option<String>,
) {
    state.claim_in_flight = state.claim_in_flight.saturating_sub(requested);
    state.claims = state.claims.saturating_sub(1);
    let full = error.is_none() && rows.len() == requested;
    // A failed claim was logged when it was resolved (`resolve_claim`); the next claim waits
    // a backoff, the database having just failed.
    match &error {
        Some(_) => state.claim_errors += 1,
        None => state.claim_errors = 0,
    }
    for row in rows {
        if state.draining {
            // Claimed while the drain began: give it straight back.
            release_unstarted(myself, state, row);
            continue;
        }
        start_attempt(myself, state, row, lease_sent).await;
    }
    if state.draining {
        stop_if_drained(myself, state);
        return;
    }
    if error.is_some() {
        let delay = backoff(
            state.config.poll_interval.as_secs_f64().min(1.0),
            30.0,
            state.claim_errors,
            0.2,
        );
        schedule_poll(myself, state, delay);
    } else if full {
        poll(myself, state);
    } else {
        let delay = next_due
            .unwrap_or(state.config.poll_interval)
            .min(state.config.poll_interval);
        schedule_poll(myself, state, delay);
    }
}

/// Gives a claimed row back without running it (not counted).
fn release_unstarted(myself: &ActorRef<PoolMsg>, state: &mut PoolState, row: Execution) {
    let token = row.owner_token.clone().unwrap_or_default();
    hand_over(state, row, token, Outcome::Release, Duration::ZERO);
    queue_poll(myself, state);
}

async fn start_attempt(
    myself: &ActorRef<PoolMsg>,
    state: &mut PoolState,
    row: Execution,
    lease_sent: Instant,
) {
    let id = row.id;
    let token = row.owner_token.clone().unwrap_or_default();
    let attempt = (row.retry_count.max(0) + 1) as u32;
    let timeout = Duration::from_secs(row.timeout_seconds.max(1) as u64);
    let lag_ms = (Utc::now() - row.scheduled_time).num_milliseconds();
    let lease_deadline = leases::lease_deadline(state, lease_sent);
    if Instant::now() >= lease_deadline {
        // The claim took so long that its lease is nearly over: running it now could
        // overlap with a rescue.
        tracing::warn!(execution_id = id, worker = %state.shared.worker_id, "claimed too late to run safely; releasing it");
        release_unstarted(myself, state, row);
        return;
    }
    let Some(handler) = state.shared.registry.get(&row.handler_name) else {
        // Unreachable: the claim names only registered handlers.
        release_unstarted(myself, state, row);
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
        transactions: state.shared.coordinator.as_ref().map(|coordinator| {
            crate::handlers::AttemptTransactions {
                coordinator: coordinator.clone(),
                owner_token: token.clone(),
            }
        }),
        // The task reads the parent's outcome before running the handler.
        parent_execution_id: row.parent_execution_id,
        parent_status: None,
        parent_result: None,
        parent_error: None,
    };
    let args = TaskArgs {
        handler,
        params: row.params.clone().unwrap_or(Value::Null),
        ctx,
        parent_lookup: row.parent_execution_id.map(|_| state.shared.store.clone()),
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
            state.tell_book(SupervisorMsg::AttemptStarted {
                id,
                token: token.clone(),
                actor: cell.clone(),
            });
            let started = Instant::now();
            let timeout_at = started + timeout;
            state
                .deadlines
                .insert(myself, timeout_at, id, Deadline::Timeout);
            state
                .deadlines
                .insert(myself, lease_deadline, id, Deadline::Lease);
            state.running.insert(
                id,
                Running {
                    execution: row,
                    token,
                    actor: cell,
                    started,
                    lease_sent,
                    ending: None,
                    timeout_at,
                    lease_check_at: lease_deadline,
                },
            );
            crate::metrics::task_actors_running(state.running.len());
        }
        Err(e) => {
            hand_over(
                state,
                row,
                token,
                Outcome::Failed(format!("cannot start the attempt: {e}")),
                Duration::ZERO,
            );
            queue_poll(myself, state);
        }
    }
}

fn stop_if_drained(myself: &ActorRef<PoolMsg>, state: &mut PoolState) {
    if state.draining && state.idle() {
        myself.stop(Some("drained".into()));
    }
}
