//! The Retention service: every `interval`, deletes finished executions older than the age
//! configured for their status ([`Store::delete_expired`]: never PENDING or RUNNING rows,
//! never the newest execution of a cron; safe with any number of processes sweeping at
//! once), `batch` rows per statement with `batch_pause` between statements. Each batch is a
//! message of its own, so a long first sweep never holds up a shutdown. Runs in dispatcher
//! and worker processes; [`sweep`] and [`dry_run`] are `jobu prune`'s one-off sweep.

use std::collections::BTreeMap;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::watch;
use tokio::time::Instant;

use super::send_later;
use crate::config::RetentionSettings;
use crate::entities::job_execution::Status;
use crate::store::{Store, StoreResult};

const SECONDS_PER_DAY: u64 = 86_400;

/// The retention service's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionConfig {
    /// Executions of each status are deleted this long after they finished, in this order.
    /// Statuses kept forever are not listed.
    pub ages: Vec<(Status, Duration)>,
    /// How often a sweep starts (a sweep that takes longer is followed at once).
    pub interval: Duration,
    /// Rows deleted per statement.
    pub batch: u32,
    /// Pause between two statements.
    pub batch_pause: Duration,
}

impl RetentionConfig {
    pub const DEFAULT_INTERVAL: Duration =
        Duration::from_secs(RetentionSettings::DEFAULT_INTERVAL_SECONDS);
    pub const DEFAULT_BATCH: u32 = RetentionSettings::DEFAULT_BATCH_SIZE;
    pub const DEFAULT_BATCH_PAUSE: Duration =
        Duration::from_millis(RetentionSettings::DEFAULT_BATCH_PAUSE_MS);

    pub fn from_settings(s: &RetentionSettings) -> RetentionConfig {
        RetentionConfig {
            ages: s
                .ages()
                .into_iter()
                .filter(|(_, days)| *days > 0)
                .map(|(status, days)| {
                    (
                        status,
                        Duration::from_secs(u64::from(days) * SECONDS_PER_DAY),
                    )
                })
                .collect(),
            interval: Duration::from_secs(s.interval_seconds),
            batch: s.batch_size,
            batch_pause: Duration::from_millis(s.batch_pause_ms),
        }
    }

    /// Refuses what would make a sweep misbehave (a non-final status, an empty batch, a
    /// zero interval); settings loaded through `Settings::validate` always pass.
    pub fn validate(&self) -> Result<(), String> {
        if let Some((status, _)) = self.ages.iter().find(|(s, _)| !s.is_final()) {
            return Err(format!(
                "retention deletes finished executions only, not {status}"
            ));
        }
        if self.batch == 0 || self.batch > RetentionSettings::MAX_BATCH_SIZE {
            return Err(format!(
                "retention batch must be between 1 and {}",
                RetentionSettings::MAX_BATCH_SIZE
            ));
        }
        if self.interval.is_zero() {
            return Err("retention interval must be positive".into());
        }
        Ok(())
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self::from_settings(&RetentionSettings::default())
    }
}

/// What one finished sweep did: published on the service's watch channel, so tests and
/// embedding programs can wait for a sweep instead of sleeping.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SweepReport {
    /// Sweeps this service finished so far, this one included.
    pub sweeps: u64,
    /// Rows deleted per status (every swept status has an entry).
    pub deleted: BTreeMap<Status, u64>,
    pub elapsed: Duration,
    /// The database error that ended the sweep early, if any.
    pub error: Option<String>,
}

pub struct RetentionArgs {
    pub store: Store,
    pub config: RetentionConfig,
    /// Names this process in logs.
    pub worker_id: String,
    /// Receives a [`SweepReport`] after every sweep.
    pub reports: Option<watch::Sender<Option<SweepReport>>>,
}

pub enum RetentionMsg {
    /// Start a sweep.
    Tick,
    /// Delete the next batch of the running sweep.
    Batch,
}

pub struct RetentionService;

/// The sweep in progress.
struct Sweep {
    started: Instant,
    /// Index into `config.ages` of the status being deleted.
    next: usize,
    status_started: Instant,
    deleted: BTreeMap<Status, u64>,
}

pub struct RetentionState {
    args: RetentionArgs,
    sweep: Option<Sweep>,
    sweeps: u64,
    timer: Option<tokio::task::JoinHandle<()>>,
}

impl Actor for RetentionService {
    type Msg = RetentionMsg;
    type State = RetentionState;
    type Arguments = RetentionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        args.config.validate()?;
        myself.send_message(RetentionMsg::Tick)?;
        Ok(RetentionState {
            args,
            sweep: None,
            sweeps: 0,
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
        crate::metrics::message_handled("retention");
        match msg {
            RetentionMsg::Tick => {
                if state.sweep.is_none() {
                    let now = Instant::now();
                    state.sweep = Some(Sweep {
                        started: now,
                        next: 0,
                        status_started: now,
                        deleted: BTreeMap::new(),
                    });
                    batch(&myself, state).await;
                }
            }
            RetentionMsg::Batch => batch(&myself, state).await,
        }
        Ok(())
    }
}

/// Deletes one batch of the running sweep, then schedules the next batch or the next sweep.
async fn batch(myself: &ActorRef<RetentionMsg>, state: &mut RetentionState) {
    let Some(sweep) = state.sweep.as_mut() else {
        return;
    };
    let config = &state.args.config;
    let Some(&(status, age)) = config.ages.get(sweep.next) else {
        finish(myself, state, None);
        return;
    };
    match state
        .args
        .store
        .delete_expired(status, age.as_secs_f64(), config.batch)
        .await
    {
        Ok(n) => {
            *sweep.deleted.entry(status).or_default() += n;
            crate::metrics::retention_deleted(status, n);
            if n < u64::from(config.batch) {
                log_status(&state.args.worker_id, status, sweep);
                sweep.next += 1;
                sweep.status_started = Instant::now();
                if sweep.next >= config.ages.len() {
                    finish(myself, state, None);
                    return;
                }
            }
            let pause = config.batch_pause;
            state.timer = Some(send_later(myself, pause, RetentionMsg::Batch));
        }
        Err(e) => {
            log_status(&state.args.worker_id, status, sweep);
            tracing::warn!(
                status = %status,
                error = %e,
                worker = %state.args.worker_id,
                "retention sweep failed; retrying at the next interval"
            );
            finish(myself, state, Some(e.to_string()));
        }
    }
}

fn log_status(worker: &str, status: Status, sweep: &Sweep) {
    let deleted = sweep.deleted.get(&status).copied().unwrap_or(0);
    if deleted > 0 {
        tracing::info!(
            status = %status,
            deleted,
            elapsed_ms = sweep.status_started.elapsed().as_millis() as u64,
            worker = %worker,
            "retention: deleted old executions"
        );
    }
}

/// Ends the running sweep: publishes its report and schedules the next one.
fn finish(myself: &ActorRef<RetentionMsg>, state: &mut RetentionState, error: Option<String>) {
    let Some(mut sweep) = state.sweep.take() else {
        return;
    };
    for (status, _) in &state.args.config.ages {
        sweep.deleted.entry(*status).or_default();
    }
    state.sweeps += 1;
    let elapsed = sweep.started.elapsed();
    if let Some(reports) = &state.args.reports {
        reports.send_replace(Some(SweepReport {
            sweeps: state.sweeps,
            deleted: sweep.deleted,
            elapsed,
            error,
        }));
    }
    let wait = state.args.config.interval.saturating_sub(elapsed);
    state.timer = Some(send_later(myself, wait, RetentionMsg::Tick));
}

/// One full sweep now (`jobu prune`): every configured status in batches until none is left;
/// rows deleted per status.
pub async fn sweep(store: &Store, config: &RetentionConfig) -> StoreResult<BTreeMap<Status, u64>> {
    let mut deleted = BTreeMap::new();
    let mut first = true;
    for &(status, age) in &config.ages {
        let total: &mut u64 = deleted.entry(status).or_default();
        loop {
            if !first {
                tokio::time::sleep(config.batch_pause).await;
            }
            first = false;
            let n = store
                .delete_expired(status, age.as_secs_f64(), config.batch)
                .await?;
            *total += n;
            crate::metrics::retention_deleted(status, n);
            if n < u64::from(config.batch) {
                break;
            }
        }
    }
    Ok(deleted)
}

/// What [`sweep`] would delete now, writing nothing (`jobu prune --dry-run`).
pub async fn dry_run(
    store: &Store,
    config: &RetentionConfig,
) -> StoreResult<BTreeMap<Status, u64>> {
    let mut counts = BTreeMap::new();
    for &(status, age) in &config.ages {
        counts.insert(
            status,
            store.count_expired(status, age.as_secs_f64()).await?,
        );
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_of_zero_are_kept_forever() {
        let s = RetentionSettings {
            failed_days: 0,
            ..RetentionSettings::default()
        };
        let c = RetentionConfig::from_settings(&s);
        let day = Duration::from_secs(SECONDS_PER_DAY);
        assert_eq!(
            c.ages,
            [
                (Status::Success, day * 7),
                (Status::Cancelled, day * 7),
                (Status::Timeout, day * 30),
                (Status::Skipped, day * 7),
                (Status::Missed, day * 7),
                (Status::Excluded, day * 7)
            ]
        );
        assert!(c.validate().is_ok());
        assert_eq!(c.batch, RetentionConfig::DEFAULT_BATCH);
        assert_eq!(c.interval, RetentionConfig::DEFAULT_INTERVAL);
        assert_eq!(c.batch_pause, RetentionConfig::DEFAULT_BATCH_PAUSE);
    }

    #[test]
    fn refuses_unfinished_statuses_and_empty_batches() {
        let mut c = RetentionConfig::default();
        c.ages.push((Status::Running, Duration::from_secs(1)));
        assert!(c.validate().unwrap_err().contains("RUNNING"));
        let c = RetentionConfig {
            batch: 0,
            ..RetentionConfig::default()
        };
        assert!(c.validate().is_err());
        let c = RetentionConfig {
            interval: Duration::ZERO,
            ..RetentionConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
