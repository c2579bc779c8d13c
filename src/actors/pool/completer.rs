//! Writing how attempts ended, many per statement: the pool hands each ended attempt to its
//! completer and frees the slot at once; the completer writes whatever has gathered in one
//! [`Store::finish_many`] (group commit: no timer, a batch is what arrived while the last
//! write ran), logs each row's outcome, then tells the pool which executions are written.
//!
//! - Every row is fenced by (id, token, RUNNING) as a single write is; a row that is no
//!   longer ours is logged and dropped.
//! - A failed write is retried with backoff, each entry for at most one lease period from
//!   when it ended: after that the rescuer owns the row, and a late write would be refused
//!   by the fence anyway.
//! - The completer is a task of its own, not part of the pool's state: if the pool crashes,
//!   what it handed over is still written (its sender drops, the queue drains, the task ends).
//! - An operator's cancel is honoured in the same statement (see `store::finish`).
//! - After a write: the next buffered fire time of exclusive crons is started, and the
//!   chains of executions that became final (`store::chain_start`); a dispatcher's poll
//!   catches both if this process dies in between.

use std::time::Duration;

use ractor::ActorRef;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{PoolConfig, PoolMsg};
use crate::actors::backoff;
use crate::entities::job_execution::{Model as Execution, Status};
use crate::store::finish::{End, Finish, Finished, FINISH_CHUNK};
use crate::store::transition::{FailOutcome, Failure, Released};
use crate::store::Store;

/// Longest wait between two tries to write outcomes while the database is unreachable.
const WRITE_RETRY_MAX: Duration = Duration::from_secs(5);
/// At most this many outcomes per write (a few statements of [`FINISH_CHUNK`]).
const WRITE_BATCH_MAX: usize = FINISH_CHUNK * 4;

/// How an attempt ended, as the pool saw it.
#[derive(Debug)]
pub(super) enum Outcome {
    Success(Value),
    Failed(String),
    Timeout(String),
    Cancelled,
    Release,
}

impl Outcome {
    /// The `outcome` label of `jobu_attempts_total`.
    pub(super) fn label(&self) -> &'static str {
        match self {
            Outcome::Success(_) => "success",
            Outcome::Failed(_) => "failed",
            Outcome::Timeout(_) => "timeout",
            Outcome::Cancelled => "cancelled",
            Outcome::Release => "released",
        }
    }
}

/// One ended attempt waiting to be written.
pub(super) struct Ended {
    pub execution: Execution,
    pub token: String,
    pub outcome: Outcome,
    pub elapsed: Duration,
}

struct Entry {
    ended: Ended,
    /// The write to give up at (one lease after the attempt ended).
    give_up: Instant,
    finish: Finish,
}

/// The pool's handle on its completer.
pub(super) struct Completer {
    tx: mpsc::UnboundedSender<Entry>,
    lease: Duration,
    config: PoolConfig,
}

impl Completer {
    /// Starts the completer task; it tells `pool` [`PoolMsg::Recorded`] after each write.
    pub(super) fn start(
        store: Store,
        worker: String,
        config: PoolConfig,
        pool: ActorRef<PoolMsg>,
    ) -> Completer {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, worker, rx, pool));
        Completer {
            tx,
            lease: config.lease,
            config,
        }
    }

    /// Queues an ended attempt for writing. Its outcome's retry delay is drawn here.
    pub(super) fn push(&self, ended: Ended) {
        let end = match &ended.outcome {
            Outcome::Success(v) => End::Success((!v.is_null()).then(|| v.clone())),
            Outcome::Cancelled => End::Cancelled("cancelled by an operator while running".into()),
            Outcome::Release => End::Release,
            Outcome::Failed(m) | Outcome::Timeout(m) => End::Failed {
                failure: if matches!(ended.outcome, Outcome::Timeout(_)) {
                    Failure::Timeout
                } else {
                    Failure::Failed
                },
                error: m.clone(),
                backoff_seconds: backoff(
                    self.config.retry_backoff_base_seconds,
                    self.config.retry_backoff_max_seconds,
                    (ended.execution.retry_count.max(0) + 1) as u32,
                    self.config.retry_jitter,
                )
                .as_secs_f64(),
            },
        };
        let finish = Finish {
            id: ended.execution.id,
            token: ended.token.clone(),
            end,
        };
        let entry = Entry {
            ended,
            give_up: Instant::now() + self.lease,
            finish,
        };
        if let Err(mpsc::error::SendError(entry)) = self.tx.send(entry) {
            // The task ended (it cannot, while this sender lives); say so rather than lose it.
            tracing::error!(
                execution_id = entry.ended.execution.id,
                "the completer stopped; the outcome is not written and the rescuer will return the execution"
            );
        }
    }
}

async fn run(
    store: Store,
    worker: String,
    mut rx: mpsc::UnboundedReceiver<Entry>,
    pool: ActorRef<PoolMsg>,
) {
    let mut batch: Vec<Entry> = Vec::new();
    let mut failures = 0u32;
    loop {
        if batch.is_empty() {
            match rx.recv().await {
                Some(entry) => batch.push(entry),
                None => return, // the pool is gone and everything it handed over is written
            }
        }
        while batch.len() < WRITE_BATCH_MAX {
            match rx.try_recv() {
                Ok(entry) => batch.push(entry),
                Err(_) => break,
            }
        }
        let finishes: Vec<Finish> = batch.iter().map(|e| e.finish.clone()).collect();
        match store.finish_many(&finishes).await {
            Ok(results) => {
                failures = 0;
                let mut ids = Vec::with_capacity(batch.len());
                let mut exclusive_crons = Vec::new();
                let mut chain_parents = Vec::new();
                for (entry, result) in batch.drain(..).zip(results) {
                    log_written(&worker, &entry.ended, result);
                    let execution = &entry.ended.execution;
                    ids.push(execution.id);
                    if let (true, Some(job_id)) = (execution.exclusive_run, execution.job_id) {
                        exclusive_crons.push(job_id);
                    }
                    if execution.job_id.is_some() && ends_chains(result) {
                        chain_parents.push(execution.id);
                    }
                }
                let _ = pool.send_message(PoolMsg::Recorded(ids));
                // The next buffered fire time of those crons may start now (a dispatcher's
                // poll does it too, should this fail).
                if !exclusive_crons.is_empty() {
                    if let Err(e) = store.promote_waiting(&exclusive_crons).await {
                        tracing::warn!(worker = %worker, error = %e, "cannot start the next buffered fire time; a dispatcher's poll will");
                    }
                }
                // Chains of the final outcomes (a dispatcher's poll starts them too, should
                // this fail or the process die first). Ad-hoc rows have no cron, so no chains
                // and no statement.
                if !chain_parents.is_empty() {
                    if let Err(e) = store.start_chains(&chain_parents).await {
                        tracing::warn!(worker = %worker, error = %e, "cannot start chained executions; a dispatcher's poll will");
                    }
                }
            }
            Err(e) => {
                failures += 1;
                let pause = backoff(0.1, WRITE_RETRY_MAX.as_secs_f64(), failures, 0.2);
                let now = Instant::now();
                let mut dropped = Vec::new();
                batch.retain(|entry| {
                    let keep = now + pause < entry.give_up;
                    if !keep {
                        dropped.push(entry.ended.execution.id);
                    }
                    keep
                });
                for id in &dropped {
                    tracing::error!(
                        execution_id = id,
                        worker = %worker,
                        error = %e,
                        "cannot record the outcome; the lease will expire and the rescuer will return the execution"
                    );
                }
                if !dropped.is_empty() {
                    let _ = pool.send_message(PoolMsg::Recorded(dropped));
                }
                tracing::warn!(worker = %worker, error = %e, failures, pending = batch.len(), "recording outcomes failed; retrying");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Whether a written outcome is final in a status that starts chains (SUCCESS, or FAILED
/// or TIMEOUT with the retries spent; not CANCELLED, see `store::chain_start`).
fn ends_chains(result: Option<Finished>) -> bool {
    matches!(
        result,
        Some(Finished::Success) | Some(Finished::Failed(FailOutcome::Final { .. }))
    )
}

/// Logs one written outcome with the attempt's fields and counts finished executions.
fn log_written(worker: &str, ended: &Ended, result: Option<Finished>) {
    let execution = &ended.execution;
    let id = execution.id;
    let attempt = execution.retry_count + 1;
    let duration_ms = ended.elapsed.as_millis() as u64;
    let handler = execution.handler_name.as_str();
    macro_rules! log {
        ($level:ident, $($rest:tt)*) => {
            tracing::$level!(
                execution_id = id,
                job_id = execution.job_id,
                handler,
                attempt,
                worker,
                duration_ms,
                $($rest)*
            )
        };
    }
    let error = match &ended.outcome {
        Outcome::Failed(m) | Outcome::Timeout(m) => m.as_str(),
        _ => "",
    };
    match result {
        None => log!(
            warn,
            "the execution was no longer ours when its outcome was written (lease expired, cancelled or rescued); outcome dropped"
        ),
        Some(Finished::Success) => {
            log!(info, status = "SUCCESS", "attempt succeeded");
            crate::metrics::execution_finished(handler, Status::Success);
        }
        Some(Finished::Cancelled) => {
            log!(info, status = "CANCELLED", "attempt cancelled");
            crate::metrics::execution_finished(handler, Status::Cancelled);
        }
        Some(Finished::Released(Released::Pending)) => log!(
            info,
            status = "PENDING",
            "attempt released for another worker (not counted)"
        ),
        Some(Finished::Released(Released::Cancelled)) => {
            log!(
                info,
                status = "CANCELLED",
                "attempt stopped at shutdown; an operator had asked to cancel it"
            );
            crate::metrics::execution_finished(handler, Status::Cancelled);
        }
        Some(Finished::Failed(FailOutcome::Retrying {
            retry_count,
            run_at,
        })) => log!(
            warn,
            status = if matches!(ended.outcome, Outcome::Timeout(_)) { "TIMEOUT" } else { "FAILED" },
            error,
            retry_count,
            retry_at = %run_at.to_rfc3339(),
            "attempt failed; retrying after backoff"
        ),
        Some(Finished::Failed(FailOutcome::Final {
            status,
            retry_count,
        })) => {
            log!(
                error,
                status = status.as_str(),
                error,
                retry_count,
                "attempt failed; no retries left"
            );
            crate::metrics::execution_finished(handler, status);
        }
        Some(Finished::Failed(FailOutcome::Cancelled { retry_count })) => {
            log!(
                info,
                status = "CANCELLED",
                error,
                retry_count,
                "attempt failed after an operator asked to cancel it; not retried"
            );
            crate::metrics::execution_finished(handler, Status::Cancelled);
        }
    }
}
