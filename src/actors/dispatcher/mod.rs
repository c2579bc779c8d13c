//! The Dispatcher: turns the fire times of enabled crons into `job_executions` rows.
//!
//! The crons stay in the database; the dispatcher keeps only their parsed schedules (one per
//! distinct expression and zone) and a measure of its own pace. Each tick reads, in one
//! query, when the next markers are due ([`Store::due_summary`]), then sleeps until then,
//! at most `poll_interval`. When something is due it makes a pass over the crons by id, in
//! pages of `batch_size` ([`Store::dispatch_due`]): a page locks the due crons no other
//! dispatcher holds, plans their fire times up to the horizon (run_at = fire time, so
//! workers start on the second), creates the executions in one batched insert-if-absent
//! and moves the markers, all in one transaction.
//!
//! Any number of dispatchers may run. Pages of dispatchers running at once are disjoint
//! (`FOR UPDATE SKIP LOCKED`; SQLite serialises them), so they share a burst of fire times
//! between them; one that dies mid-page rolls back and its crons are taken by the next page
//! of another. Creation is insert-if-absent on `UNIQUE(job_id, scheduled_time)` whatever
//! happens, and a marker moves by conditional update only after its rows are in, in the
//! same transaction. Crons whose overlap policy is not `allow` are decided at their fire time
//! (no lookahead) under the policy's rule (`store::overlap`); fire times that do not run
//! (missed, excluded, skipped) are recorded in the same transaction (`store::fire_times`).
//!
//! The lookahead adapts to the load (`pace.rs`): to `lookahead_seconds` it adds the time the
//! dispatcher expects to need for the crons due within `max_lookahead_seconds`, measured on
//! its own earlier passes, so a burst of 100,000 fire times is in before its fire time.
//!
//! New, edited and re-enabled crons (no marker) are planned by the pass that runs every
//! `poll_interval`; an edit applies to every execution created after it, since a page reads
//! its crons under lock. Each poll also cancels executions created ahead for crons disabled
//! or deleted since, starts buffered fire times nobody started and, every few seconds, the
//! chains of final executions nobody started (`store::chain_start`). Misfires (fire times
//! more than `misfire_grace` late: every dispatcher was down) follow the cron's policy
//! (`plan.rs`).

mod pace;
mod page;
pub(crate) mod plan;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::time::Instant;

use super::{backoff, send_later, Shared};
use crate::config::DispatcherSettings;
use crate::store::crons::DueQuery;
use crate::store::{Store, StoreResult};
use pace::Pace;
use page::Planner;

/// Crons whose stalled buffered fire times one poll starts at most.
const STALLED_PER_POLL: u64 = 1000;

/// Parents without children one sweep starts chains for at most.
const CHAINS_PER_SWEEP: u64 = 500;

/// The chain sweep runs on poll ticks, at most this often (its query reads every recent
/// execution of the crons with chains).
const CHAIN_SWEEP_EVERY: Duration = Duration::from_secs(3);

/// How soon a tick looks again when crons are due but other dispatchers hold all of them.
const RETRY_HELD: Duration = Duration::from_millis(100);

/// The dispatcher's settings as durations, from `dispatcher.*`.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    pub poll_interval: Duration,
    pub max_sleep: Duration,
    pub min_cron_interval_seconds: i64,
    pub lookahead: chrono::Duration,
    /// The adaptive lookahead's bound (at least `lookahead`).
    pub max_lookahead: chrono::Duration,
    /// Crons per page (one transaction).
    pub batch_size: u64,
    pub max_catchup: usize,
    pub misfire_grace: chrono::Duration,
}

impl DispatcherConfig {
    pub fn from_settings(s: &DispatcherSettings) -> DispatcherConfig {
        let lookahead = chrono::Duration::seconds(s.lookahead_seconds.min(86_400) as i64);
        let max_lookahead = chrono::Duration::seconds(s.max_lookahead_seconds.min(86_400) as i64);
        DispatcherConfig {
            poll_interval: Duration::from_secs_f64(s.poll_interval_seconds),
            max_sleep: Duration::from_secs_f64(s.max_sleep_seconds),
            min_cron_interval_seconds: s.min_cron_interval_seconds.min(i64::MAX as u64) as i64,
            lookahead,
            max_lookahead: max_lookahead.max(lookahead),
            batch_size: u64::from(s.batch_size.max(1)),
            max_catchup: s.max_catchup as usize,
            misfire_grace: chrono::Duration::seconds(s.misfire_grace_seconds.min(86_400) as i64),
        }
    }
}

pub enum DispatcherMsg {
    Tick,
}

pub struct Dispatcher;

pub struct DispatcherState {
    shared: Arc<Shared>,
    config: DispatcherConfig,
    planner: Planner,
    pace: Pace,
    last_poll: Option<Instant>,
    last_chain_sweep: Option<Instant>,
    error_streak: u32,
    timer: Option<tokio::task::JoinHandle<()>>,
}

impl Actor for Dispatcher {
    type Msg = DispatcherMsg;
    type State = DispatcherState;
    type Arguments = (Arc<Shared>, DispatcherConfig);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (shared, config): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        tracing::info!(
            poll_interval_seconds = config.poll_interval.as_secs_f64(),
            lookahead_seconds = config.lookahead.num_seconds(),
            max_lookahead_seconds = config.max_lookahead.num_seconds(),
            batch_size = config.batch_size,
            "dispatcher started"
        );
        myself.send_message(DispatcherMsg::Tick)?;
        Ok(DispatcherState {
            shared,
            planner: Planner::new(&config),
            pace: Pace::new(config.lookahead, config.max_lookahead),
            config,
            last_poll: None,
            last_chain_sweep: None,
            error_streak: 0,
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
        tracing::info!("dispatcher stopped");
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::metrics::message_handled("dispatcher");
        match msg {
            DispatcherMsg::Tick => {
                let delay = match tick(state).await {
                    Ok(delay) => {
                        state.error_streak = 0;
                        delay
                    }
                    Err(e) => {
                        state.error_streak += 1;
                        let delay = backoff(
                            1.0,
                            state.config.max_sleep.as_secs_f64(),
                            state.error_streak,
                            0.2,
                        );
                        tracing::warn!(
                            error = %e,
                            failures = state.error_streak,
                            retry_in_ms = delay.as_millis() as u64,
                            "dispatcher tick failed; retrying"
                        );
                        delay
                    }
                };
                state.timer = Some(send_later(&myself, delay, DispatcherMsg::Tick));
            }
        }
        Ok(())
    }
}

/// One tick; returns how long to sleep.
async fn tick(state: &mut DispatcherState) -> StoreResult<Duration> {
    let started = Instant::now();
    let store = state.shared.store.clone();
    let poll_due = state
        .last_poll
        .is_none_or(|t| t.elapsed() >= state.config.poll_interval);
    if poll_due {
        // Edits cancel what they unschedule in their own transaction; this catches rows a
        // page created while its cron was being disabled or deleted.
        let cancelled = store.cancel_unscheduled().await?;
        if cancelled > 0 {
            tracing::info!(
                cancelled,
                "cancelled executions created ahead for crons that were disabled or deleted since"
            );
        }
        // A buffered fire time whose predecessor ended without anyone starting it (the
        // worker that recorded the end died before asking).
        let stalled = store.stalled_waiting(STALLED_PER_POLL).await?;
        if !stalled.is_empty() {
            let started = store.promote_waiting(&stalled).await?;
            if started > 0 {
                tracing::info!(started, "started buffered fire times nobody had started");
            }
        }
        let sweep_due = state
            .last_chain_sweep
            .is_none_or(|t| t.elapsed() >= CHAIN_SWEEP_EVERY);
        if sweep_due {
            state.last_chain_sweep = Some(Instant::now());
            sweep_chains(&store).await;
        }
        state.last_poll = Some(Instant::now());
    }

    let within = state.config.max_lookahead.num_milliseconds() as f64 / 1000.0;
    let summary = store.due_summary(within).await?;
    let now = summary.now;
    let lookahead = state.pace.lookahead(summary.due_soon);
    let horizon = now + lookahead;
    let markers_due = summary.next_overlap.is_some_and(|t| t <= horizon)
        || summary.next_exclusive.is_some_and(|t| t <= now);
    let mut held = false;
    if markers_due || (poll_due && summary.unmarked > 0) {
        let decided = pass(state, &store, now, horizon, lookahead, summary.due_soon).await?;
        if decided > 0 {
            // Markers moved: the next tick reads where they are now.
            return Ok(Duration::ZERO);
        }
        // Due, yet nothing to take: other dispatchers hold those crons (or a page of theirs
        // just committed). Look again shortly, in case one of them died.
        held = markers_due;
    }

    let mut wake = now + chrono::Duration::from_std(state.config.max_sleep).unwrap_or_default();
    if let Some(t) = summary.next_overlap {
        wake = wake.min(t - lookahead);
    }
    if let Some(t) = summary.next_exclusive {
        wake = wake.min(t);
    }
    let mut sleep = (wake - now)
        .to_std()
        .unwrap_or_default()
        .saturating_sub(started.elapsed());
    if held {
        sleep = sleep.max(RETRY_HELD);
    }
    let until_poll = state
        .last_poll
        .map(|t| state.config.poll_interval.saturating_sub(t.elapsed()))
        .unwrap_or_default();
    Ok(sleep.min(until_poll).min(state.config.max_sleep))
}

/// Starts the chains of final executions that have no children: their recorder died
/// between writing the outcome and starting them. A failure is logged and left to the next
/// sweep; dispatching goes on.
async fn sweep_chains(store: &Store) {
    let started = match store.unchained_parents(CHAINS_PER_SWEEP).await {
        Ok(parents) if parents.is_empty() => return,
        Ok(parents) => store.start_chains(&parents).await,
        Err(e) => Err(e),
    };
    match started {
        Ok(children) if !children.is_empty() => tracing::info!(
            started = children.len(),
            "started chained executions nobody had started"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "chain sweep failed; retrying at the next one"),
    }
}

/// One pass over the due crons, page by page in id order; returns how many crons it
/// decided on.
async fn pass(
    state: &mut DispatcherState,
    store: &Store,
    now: DateTime<Utc>,
    horizon: DateTime<Utc>,
    lookahead: chrono::Duration,
    due_soon: i64,
) -> StoreResult<usize> {
    let started = Instant::now();
    let mut tally = page::Tally::default();
    let mut after_id = 0;
    loop {
        let query = DueQuery {
            after_id,
            limit: state.config.batch_size,
            horizon,
            now,
        };
        let planner = &mut state.planner;
        let done = store
            .dispatch_due(&query, |crons| planner.plan(crons, now, lookahead))
            .await?;
        let decided = done.steps.len();
        tally.page(&done);
        match done.last_id {
            Some(id) if decided > 0 => after_id = id,
            _ => break,
        }
        if done.claimed < state.config.batch_size as usize && decided == done.claimed {
            break;
        }
    }
    let elapsed = started.elapsed();
    state.pace.record(due_soon, tally.rows(), elapsed);
    tally.log(elapsed, lookahead);
    Ok(tally.decided)
}
