//! `trigger`: creation-to-start latency with idle workers. One worker runtime runs, idle;
//! N ad-hoc executions, due now, are created one at a time through
//! [`Store::create_if_absent`] (as the API's run-now does), each once the previous one has
//! started. Latency is measured from the client clock just before the insert, to:
//!
//! - `started_at` as the database recorded it at the claim (`lag_ms`);
//! - the moment the handler ran in this process (`observed_lag_ms`): the executions run a
//!   probe handler that notes its start and returns like `noop`.

use std::time::{Duration, Instant};

use chrono::Utc;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::report::{round3, Lag, Measured};
use super::{
    common_notes, settings_value, stop_all, BenchError, Monitor, Progress, RunContext, Window,
};
use crate::actors::{Roles, Runtime};
use crate::entities::job_execution::{self, ParamSource};
use crate::entities::JobExecutions;
use crate::handlers::{async_trait, ExecutionContext, Handler, HandlerResult};
use crate::store::create::{Created, NewExecution};

/// The probe handler's name.
pub const PROBE: &str = "bench_probe";
/// Time the workers get to start and go idle before the first execution.
const SETTLE: Duration = Duration::from_millis(500);
/// Longest wait for one execution to start, beyond the poll interval.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a start before the next creation, at most (random, so creations do not keep
/// one phase of the workers' poll timer).
const MAX_PAUSE_MS: u64 = 50;

/// Notes when it ran and returns `null`.
struct Probe {
    started: mpsc::UnboundedSender<(i64, Instant)>,
}

#[async_trait]
impl Handler for Probe {
    async fn run(&self, _params: Value, ctx: ExecutionContext) -> HandlerResult {
        let _ = self.started.send((ctx.execution_id, Instant::now()));
        Ok(Value::Null)
    }
}

pub async fn run(
    ctx: &RunContext,
    monitor: &Monitor,
    progress: &Progress,
    jobs: u64,
) -> Result<(Measured, Value, Vec<String>), BenchError> {
    let settings = ctx.settings.clone();
    let store = ctx.store().await?;
    store.migrate().await?;
    let (tx, mut started) = mpsc::unbounded_channel();
    let mut worker_settings = settings.clone();
    worker_settings.worker.id = Some(format!("bench-{}", std::process::id()));
    let poll = Duration::from_secs_f64(settings.worker.poll_interval_seconds);
    let running = Runtime::new(worker_settings)
        .roles(Roles::WORKER)
        .handler(PROBE, Probe { started: tx })
        .start_with_store(store.clone())
        .await?;
    tokio::time::sleep(SETTLE).await;

    // The database clock against this one, so run_at is due by the database's clock.
    let before = Utc::now();
    let db_now = store.now().await?;
    let after = Utc::now();
    let offset = db_now - (before + (after - before) / 2);
    let margin = chrono::Duration::milliseconds(50);

    progress.phase("trigger", jobs);
    let window = Window::open();
    let mut created = Vec::with_capacity(jobs as usize);
    let mut observed = Vec::with_capacity(jobs as usize);
    let mut failure = None;
    for _ in 0..jobs {
        let wall = Utc::now();
        let t0 = Instant::now();
        let at = wall + offset - margin;
        let new = NewExecution {
            job_id: None,
            handler_name: PROBE.to_string(),
            scheduled_time: at,
            run_at: at,
            params: None,
            param_source: ParamSource::Api,
            max_retry: 0,
            timeout_seconds: 60,
        };
        let id = match store.create_if_absent(&new).await? {
            Created::New(id) => id,
            other => {
                failure = Some(format!("an ad-hoc execution was not created: {other:?}"));
                break;
            }
        };
        let deadline = tokio::time::Instant::now() + poll + START_TIMEOUT;
        let start = loop {
            match tokio::time::timeout_at(deadline, started.recv()).await {
                Ok(Some((started_id, at))) if started_id == id => break Some(at),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break None,
            }
        };
        let Some(start) = start else {
            failure = Some(format!(
                "execution {id} did not start within {} s",
                (poll + START_TIMEOUT).as_secs()
            ));
            break;
        };
        observed.push(start.duration_since(t0).as_secs_f64() * 1000.0);
        created.push((id, wall));
        progress.inc(1);
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..=MAX_PAUSE_MS))).await;
    }
    let (elapsed, statements, cpu, peak_rss) = window.close();
    stop_all(vec![running]).await;
    let _ = store.close().await;
    if let Some(f) = failure {
        return Err(BenchError::Failed(f));
    }

    let ids: Vec<i64> = created.iter().map(|(id, _)| *id).collect();
    let rows = JobExecutions::find()
        .filter(job_execution::Column::Id.is_in(ids))
        .all(monitor.connection())
        .await?;
    let mut recorded = Vec::with_capacity(created.len());
    for (id, wall) in &created {
        let started_at = rows.iter().find(|r| r.id == *id).and_then(|r| r.started_at);
        if let Some(s) = started_at {
            recorded.push((s - *wall).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0);
        }
    }
    let all_started = recorded.len() == created.len() && created.len() as u64 == jobs;

    let mut used = ctx.settings_json(&settings);
    used.insert("workers".into(), 1.into());
    let details = json!({
        "observed_lag_ms": Lag::of(&observed),
        "clock_offset_ms": round3(offset.num_microseconds().unwrap_or(0) as f64 / 1000.0),
    });
    let mut notes = common_notes(&window, monitor.dialect == crate::store::Dialect::Sqlite);
    notes.push(
        "lag_ms: started_at (database clock, at the claim) minus this process's clock just \
         before the INSERT; observed_lag_ms: from the same instant to the handler's start in \
         this process; clock_offset_ms: the database clock minus this one"
            .into(),
    );
    notes.push(format!(
        "one execution at a time, each created 0-{MAX_PAUSE_MS} ms after the previous one \
         started; jobs_per_s is not a throughput here"
    ));
    Ok((
        Measured {
            jobs,
            window: elapsed,
            lag_ms: Lag::of(&recorded),
            statements,
            peak_rss_bytes: peak_rss,
            cpu_seconds: cpu,
            ok: all_started,
            details,
        },
        settings_value(used),
        notes,
    ))
}
