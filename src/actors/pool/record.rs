//! Writing how an attempt ended: one fenced transition per outcome, in a task of its own so a
//! slow or absent database never holds up the pool, retried while the database is
//! unreachable (for at most one lease period: after that the rescuer owns the row, and a
//! late write would be refused by the fence anyway). Every path honours an operator's
//! cancel request in the same statement (see `store::transition`).

use std::time::Duration;

use ractor::ActorRef;
use serde_json::Value;
use tokio::time::Instant;

use super::{PoolConfig, PoolMsg, PoolState};
use crate::actors::backoff;
use crate::entities::job_execution::{Model as Execution, Status};
use crate::store::transition::{FailOutcome, Failure, Released};
use crate::store::{Store, StoreError};

/// Longest wait between two attempts to record an outcome while the database is unreachable.
const RECORD_RETRY_MAX: Duration = Duration::from_secs(5);

/// What to write for an ended attempt.
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

/// Writes an attempt's outcome in a task of its own, then frees the slot with
/// [`PoolMsg::Recorded`].
pub(super) fn spawn_record(
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
    let give_up = Instant::now() + config.lease;
    let mut failures = 0u32;
    loop {
        let written: Result<bool, StoreError> = match &outcome {
            Outcome::Success(result) => {
                let result = (!result.is_null()).then(|| result.clone());
                store.succeed(id, token, result).await.inspect(|&ok| {
                    if ok {
                        log!(info, status = "SUCCESS", "attempt succeeded");
                        crate::metrics::execution_finished(handler, Status::Success);
                    }
                })
            }
            Outcome::Cancelled => store
                .cancelled(id, token, "cancelled by an operator while running")
                .await
                .inspect(|&ok| {
                    if ok {
                        log!(info, status = "CANCELLED", "attempt cancelled");
                        crate::metrics::execution_finished(handler, Status::Cancelled);
                    }
                }),
            Outcome::Release => store.release(id, token).await.map(|released| {
                match released {
                    Some(Released::Pending) => log!(
                        info,
                        status = "PENDING",
                        "attempt released for another worker (not counted)"
                    ),
                    Some(Released::Cancelled) => {
                        log!(
                            info,
                            status = "CANCELLED",
                            "attempt stopped at shutdown; an operator had asked to cancel it"
                        );
                        crate::metrics::execution_finished(handler, Status::Cancelled);
                    }
                    None => {}
                }
                released.is_some()
            }),
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
                let written = store
                    .fail(id, token, failure, message, delay.as_secs_f64())
                    .await;
                match &written {
                    Ok(Some(FailOutcome::Retrying {
                        retry_count,
                        run_at,
                    })) => log!(
                        warn,
                        status = failure.final_status().as_str(),
                        error = %message,
                        retry_count,
                        retry_at = %run_at.to_rfc3339(),
                        "attempt failed; retrying after backoff"
                    ),
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
                        crate::metrics::execution_finished(handler, *status);
                    }
                    Ok(Some(FailOutcome::Cancelled { retry_count })) => {
                        log!(
                            info,
                            status = "CANCELLED",
                            error = %message,
                            retry_count,
                            "attempt failed after an operator asked to cancel it; not retried"
                        );
                        crate::metrics::execution_finished(handler, Status::Cancelled);
                    }
                    _ => {}
                }
                written.map(|o| o.is_some())
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
