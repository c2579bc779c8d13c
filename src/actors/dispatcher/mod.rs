//! The Dispatcher: turns the fire times of enabled crons into `job_executions` rows.
//!
//! Each tick reads the database clock, re-reads `cron_jobs` every `poll_interval` (so edits,
//! disables and deletes apply without a restart), creates the executions that are due within
//! the lookahead (run_at = fire time, so workers start on the second), advances each cron's
//! marker, and sleeps until the next creation is due, at most `max_sleep`.
//!
//! Any number of dispatchers may run: creation is insert-if-absent on
//! `UNIQUE(job_id, scheduled_time)`, and the marker moves by conditional update; a dispatcher
//! whose marker is stale re-reads the cron before creating. Rows are created before the marker
//! moves, so a dispatcher that dies in between loses nothing. Crons with
//! `allow_overlap = false` are created at their fire time (no lookahead) through
//! [`Store::create_exclusive`].
//!
//! Misfires: a fire time more than `misfire_grace` late (every dispatcher was down) is
//! handled by the cron's policy ([`plan`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::time::Instant;

use super::{backoff, send_later, Shared};
use crate::config::DispatcherSettings;
use crate::entities::cron_job::{self, MisfirePolicy};
use crate::entities::job_execution::ParamSource;
use crate::schedule::Schedule;
use crate::store::create::{Created, NewExecution};
use crate::store::StoreResult;
use plan::{first_candidate, plan_fire_times};

pub(crate) mod plan;

/// The dispatcher's settings as durations, from `dispatcher.*`.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    pub poll_interval: Duration,
    pub max_sleep: Duration,
    pub min_cron_interval_seconds: i64,
    pub lookahead: chrono::Duration,
    pub max_catchup: usize,
    pub misfire_grace: chrono::Duration,
}

impl DispatcherConfig {
    pub fn from_settings(s: &DispatcherSettings) -> DispatcherConfig {
        DispatcherConfig {
            poll_interval: Duration::from_secs_f64(s.poll_interval_seconds),
            max_sleep: Duration::from_secs_f64(s.max_sleep_seconds),
            min_cron_interval_seconds: s.min_cron_interval_seconds.min(i64::MAX as u64) as i64,
            lookahead: chrono::Duration::seconds(s.lookahead_seconds.min(86_400) as i64),
            max_catchup: s.max_catchup as usize,
            misfire_grace: chrono::Duration::seconds(s.misfire_grace_seconds.min(86_400) as i64),
        }
    }
}

pub enum DispatcherMsg {
    Tick,
}

pub struct Dispatcher;

struct CronEntry {
    model: cron_job::Model,
    /// The parsed schedule, or why the cron is refused (logged once per change).
    schedule: Result<Schedule, String>,
}

pub struct DispatcherState {
    shared: Arc<Shared>,
    config: DispatcherConfig,
    crons: BTreeMap<i64, CronEntry>,
    last_reload: Option<Instant>,
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
            "dispatcher started"
        );
        myself.send_message(DispatcherMsg::Tick)?;
        Ok(DispatcherState {
            shared,
            config,
            crons: BTreeMap::new(),
            last_reload: None,
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

/// One pass; returns how long to sleep.
async fn tick(state: &mut DispatcherState) -> StoreResult<Duration> {
    let started = Instant::now();
    let store = state.shared.store.clone();
    let now = store.now().await?;
    let reload_due = state
        .last_reload
        .is_none_or(|t| t.elapsed() >= state.config.poll_interval);
    if reload_due {
        reload(state, now).await?;
        state.last_reload = Some(Instant::now());
    }

    let mut wake = now + chrono::Duration::from_std(state.config.max_sleep).unwrap_or_default();
    let ids: Vec<i64> = state.crons.keys().copied().collect();
    for id in ids {
        if let Some(at) = process_cron(state, id, now).await? {
            wake = wake.min(at);
        }
    }

    let until_wake = (wake - now).to_std().unwrap_or_default();
    let until_reload = state
        .last_reload
        .map(|t| state.config.poll_interval.saturating_sub(t.elapsed()))
        .unwrap_or_default();
    let sleep = until_wake
        .min(until_reload)
        .min(state.config.max_sleep)
        .saturating_sub(started.elapsed());
    Ok(sleep)
}

/// Re-reads the enabled crons; parses a schedule again only when it changed.
async fn reload(state: &mut DispatcherState, now: DateTime<Utc>) -> StoreResult<()> {
    let rows = state.shared.store.enabled_crons().await?;
    let mut next = BTreeMap::new();
    for row in rows {
        let schedule = match state.crons.remove(&row.id) {
            Some(old)
                if old.model.cron_expression == row.cron_expression
                    && old.model.timezone == row.timezone =>
            {
                old.schedule
            }
            _ => parse_schedule(&row, now, state.config.min_cron_interval_seconds),
        };
        next.insert(
            row.id,
            CronEntry {
                model: row,
                schedule,
            },
        );
    }
    for (id, gone) in std::mem::take(&mut state.crons) {
        tracing::info!(job_id = id, cron = %gone.model.name, "cron disabled or deleted; it no longer fires");
    }
    state.crons = next;
    let cancelled = state.shared.store.cancel_unscheduled().await?;
    if cancelled > 0 {
        tracing::info!(
            cancelled,
            "cancelled executions created ahead for crons that were disabled or deleted since"
        );
    }
    Ok(())
}

fn parse_schedule(
    cron: &cron_job::Model,
    now: DateTime<Utc>,
    min_interval: i64,
) -> Result<Schedule, String> {
    let parsed = Schedule::parse(&cron.cron_expression, &cron.timezone)
        .and_then(|s| s.check_min_interval(min_interval, now).map(|()| s));
    match parsed {
        Ok(schedule) => {
            tracing::info!(
                job_id = cron.id,
                cron = %cron.name,
                expression = %cron.cron_expression,
                timezone = %cron.timezone,
                handler = %cron.handler_name,
                "cron scheduled"
            );
            Ok(schedule)
        }
        Err(e) => {
            tracing::warn!(
                job_id = cron.id,
                cron = %cron.name,
                expression = %cron.cron_expression,
                timezone = %cron.timezone,
                reason = %e,
                "cron refused: it will not fire until it is fixed"
            );
            Err(e.to_string())
        }
    }
}

/// Creates what is due for one cron; returns when (database clock) it next needs attention.
async fn process_cron(
    state: &mut DispatcherState,
    id: i64,
    now: DateTime<Utc>,
) -> StoreResult<Option<DateTime<Utc>>> {
    let config = state.config.clone();
    let store = state.shared.store.clone();
    let Some(entry) = state.crons.get_mut(&id) else {
        return Ok(None);
    };
    let Ok(schedule) = &entry.schedule else {
        return Ok(None);
    };
    let lookahead = if entry.model.allow_overlap {
        config.lookahead
    } else {
        chrono::Duration::zero()
    };
    let horizon = now + lookahead;
    let first = first_candidate(&entry.model, schedule, now, config.misfire_grace);
    match first {
        Some(t) if t <= horizon => {}
        Some(t) => return Ok(Some(t - lookahead)),
        None => return Ok(None),
    }

    // Due: another dispatcher may have moved the marker since the last reload.
    match store.cron(id).await? {
        Some(fresh) if fresh.is_enabled => {
            if fresh.cron_expression != entry.model.cron_expression
                || fresh.timezone != entry.model.timezone
            {
                entry.schedule = parse_schedule(&fresh, now, config.min_cron_interval_seconds);
            }
            entry.model = fresh;
        }
        _ => {
            state.crons.remove(&id);
            tracing::info!(job_id = id, "cron disabled or deleted; it no longer fires");
            return Ok(None);
        }
    }
    let Ok(schedule) = &entry.schedule else {
        return Ok(None);
    };
    let cron = &entry.model;
    let Some(first) = first_candidate(cron, schedule, now, config.misfire_grace) else {
        return Ok(None);
    };
    if first > horizon {
        return Ok(Some(first - lookahead));
    }

    let policy = cron.misfire_policy.parse().unwrap_or_else(|e: String| {
        tracing::warn!(job_id = cron.id, error = %e, "using misfire policy `latest`");
        MisfirePolicy::Latest
    });
    let plan = plan_fire_times(
        schedule,
        first,
        now,
        horizon,
        config.misfire_grace,
        policy,
        config.max_catchup,
    );
    if let Some(missed) = &plan.missed {
        let first_missed = missed.first.to_rfc3339();
        let last_missed = missed.last.to_rfc3339();
        if missed.exact {
            tracing::warn!(
                job_id = cron.id,
                cron = %cron.name,
                missed = missed.count,
                kept = missed.kept,
                dropped = missed.dropped(),
                first_missed = %first_missed,
                last_missed = %last_missed,
                policy = policy.as_str(),
                "missed fire times (no dispatcher was running); applying the misfire policy"
            );
        } else {
            tracing::warn!(
                job_id = cron.id,
                cron = %cron.name,
                missed_at_least = missed.count,
                kept = missed.kept,
                dropped_at_least = missed.dropped(),
                first_missed = %first_missed,
                last_missed = %last_missed,
                policy = policy.as_str(),
                "missed at least {} fire times (no dispatcher was running); applying the \
                 misfire policy",
                missed.count
            );
        }
    }

    let mut last_created = None;
    for fire in &plan.create {
        let new = NewExecution {
            job_id: Some(cron.id),
            handler_name: cron.handler_name.clone(),
            scheduled_time: *fire,
            run_at: *fire,
            params: cron.handler_params.clone(),
            param_source: ParamSource::Cron,
            max_retry: cron.max_retry,
            timeout_seconds: cron.timeout_seconds,
        };
        let created = if cron.allow_overlap {
            store.create_if_absent(&new).await?
        } else {
            store.create_exclusive(&new).await?
        };
        match created {
            Created::New(execution_id) => {
                last_created = Some(*fire);
                tracing::info!(
                    execution_id,
                    job_id = cron.id,
                    handler = %cron.handler_name,
                    scheduled_time = %fire.to_rfc3339(),
                    "execution created"
                );
            }
            Created::Exists => {
                last_created = Some(*fire);
                tracing::debug!(job_id = cron.id, scheduled_time = %fire.to_rfc3339(), "already created by another dispatcher");
            }
            Created::Overlap => tracing::info!(
                job_id = cron.id,
                cron = %cron.name,
                handler = %cron.handler_name,
                scheduled_time = %fire.to_rfc3339(),
                "fire time skipped: the previous execution has not finished (allow_overlap = false)"
            ),
        }
    }

    let Some(next) = plan.next_marker else {
        tracing::warn!(job_id = cron.id, "the schedule has no further fire times");
        return Ok(None);
    };
    let expected = cron.next_fire_time;
    if store
        .advance_marker(cron.id, expected, next, last_created)
        .await?
    {
        entry.model.next_fire_time = Some(next);
        if last_created.is_some() {
            entry.model.last_fire_time = last_created;
        }
    } else {
        tracing::debug!(
            job_id = cron.id,
            "another dispatcher advanced the marker first"
        );
    }
    Ok(Some(next - lookahead))
}
