//! `drain`: N no-op executions, due now, bulk-inserted with [`Store::create_many`]; then K
//! worker-only runtimes, each with a connection pool of its own as a separate process would
//! have, run them. The window is from the pools' start until no execution is PENDING or
//! RUNNING (index probes every 20 ms on the bench's own connection); then every one must
//! be SUCCESS, after one attempt.

use serde_json::{json, Value};

use super::report::Measured;
use super::{
    common_notes, settings_value, stop_all, BenchError, Monitor, Progress, RunContext, Window,
};
use crate::actors::{Roles, Runtime};
use crate::entities::job_execution::{ParamSource, Status};
use crate::handlers::builtin::NOOP;
use crate::store::create::NewExecution;
use crate::store::dialect::Sql;
use crate::store::Store;

/// Rows per `create_many` call (one transaction each).
pub const ENQUEUE_CHUNK: usize = 5000;
/// A drain that finishes nothing for this long has failed.
const STALL: std::time::Duration = std::time::Duration::from_secs(60);

pub struct Args {
    pub jobs: u64,
    pub workers: u32,
    pub concurrency: Option<u32>,
    pub batch: Option<u32>,
}

/// Bulk-inserts `n` ad-hoc executions of `handler` due now; returns (seconds, statements).
pub async fn enqueue(
    store: &Store,
    progress: &Progress,
    n: u64,
    handler: &str,
    params: Option<Value>,
    timeout_seconds: i32,
) -> Result<(f64, u64), BenchError> {
    progress.phase("enqueue", n);
    let window = Window::open();
    let now = store.now().await?;
    let mut left = n as usize;
    while left > 0 {
        let take = left.min(ENQUEUE_CHUNK);
        let rows: Vec<NewExecution> = (0..take)
            .map(|_| NewExecution {
                job_id: None,
                handler_name: handler.to_string(),
                scheduled_time: now,
                run_at: now,
                params: params.clone(),
                param_source: ParamSource::Api,
                max_retry: 0,
                timeout_seconds,
            })
            .collect();
        store.create_many(&rows).await?;
        left -= take;
        progress.inc(take as u64);
    }
    let (elapsed, statements, _, _) = window.close();
    // Outside the window: the steady state of a table autovacuum has seen.
    store.analyze().await?;
    Ok((elapsed.as_secs_f64(), statements))
}

pub async fn run(
    ctx: &RunContext,
    monitor: &Monitor,
    progress: &Progress,
    args: Args,
) -> Result<(Measured, Value, Vec<String>), BenchError> {
    let mut settings = ctx.settings.clone();
    if let Some(c) = args.concurrency {
        settings.worker.concurrency = c;
    }
    if let Some(b) = args.batch {
        settings.worker.claim_batch_size = b;
    }
    let store = ctx.store().await?;
    store.migrate().await?;
    let (enqueue_seconds, enqueue_statements) =
        enqueue(&store, progress, args.jobs, NOOP, None, 60).await?;

    // Pools connect before the window opens; the runtimes start inside it.
    let mut stores = Vec::new();
    for _ in 0..args.workers {
        stores.push(ctx.store().await?);
    }
    progress.phase("drain", args.jobs);
    let window = Window::open();
    let mut running = Vec::new();
    for (i, pool_store) in stores.iter().enumerate() {
        let mut s = settings.clone();
        s.worker.id = Some(format!("bench-{}-{i}", std::process::id()));
        running.push(
            Runtime::new(s)
                .roles(Roles::WORKER)
                .start_with_store(pool_store.clone())
                .await?,
        );
    }
    let finished = monitor.wait_finished(None, progress, STALL).await;
    let (elapsed, statements, cpu, peak_rss) = window.close();
    stop_all(running).await;
    for s in stores {
        let _ = s.close().await;
    }
    finished?;

    let succeeded = monitor.count_status(Status::Success).await?;
    let mut q = Sql::new(monitor.dialect);
    q.push("SELECT COUNT(*) AS n FROM job_executions WHERE retry_count <> 0 OR started_at IS NULL");
    let retried = monitor.count(q).await?;
    let _ = store.close().await;

    let mut used = ctx.settings_json(&settings);
    used.insert("workers".into(), args.workers.into());
    let details = json!({
        "succeeded": succeeded,
        "enqueue_seconds": super::report::round3(enqueue_seconds),
        "enqueue_jobs_per_s": super::report::round1(args.jobs as f64 / enqueue_seconds.max(1e-9)),
        "enqueue_statements": enqueue_statements,
    });
    let mut notes = common_notes(&window, monitor.dialect == crate::store::Dialect::Sqlite);
    notes.push(format!(
        "window: from starting {} worker pool(s) until no execution is PENDING or RUNNING; \
         enqueue (create_many, {} rows a call) is timed apart",
        args.workers, ENQUEUE_CHUNK
    ));
    Ok((
        Measured {
            jobs: args.jobs,
            window: elapsed,
            lag_ms: None,
            statements,
            peak_rss_bytes: peak_rss,
            cpu_seconds: cpu,
            ok: succeeded == args.jobs && retried == 0,
            details,
        },
        settings_value(used),
        notes,
    ))
}
