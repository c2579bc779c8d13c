//! `sleep`: N attempts of the `sleep` handler at once in one worker pool of concurrency N,
//! for the memory they hold. The executions are bulk-inserted first; the window runs from
//! the pool's start until all are finished. The peak resident set (VmHWM, reset at the
//! window's start) is the figure; the most RUNNING rows seen (every 200 ms) shows they did
//! run side by side.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::drain::enqueue;
use super::report::{rss_bytes, Measured};
use super::{
    common_notes, settings_value, stop_all, BenchError, Monitor, Progress, RunContext, Window,
};
use crate::actors::{Roles, Runtime};
use crate::entities::job_execution::Status;
use crate::handlers::builtin::SLEEP;

pub async fn run(
    ctx: &RunContext,
    monitor: &Monitor,
    progress: &Progress,
    jobs: u64,
    seconds: f64,
    batch: Option<u32>,
) -> Result<(Measured, Value, Vec<String>), BenchError> {
    let mut settings = ctx.settings.clone();
    settings.worker.concurrency = u32::try_from(jobs).unwrap_or(u32::MAX);
    if let Some(b) = batch {
        settings.worker.claim_batch_size = b;
    }
    settings.worker.id = Some(format!("bench-{}", std::process::id()));
    let store = ctx.store().await?;
    store.migrate().await?;
    let timeout = (seconds.ceil() as i32).saturating_add(60);
    enqueue(
        &store,
        progress,
        jobs,
        SLEEP,
        Some(json!({ "seconds": seconds })),
        timeout,
    )
    .await?;

    let pool_store = ctx.store().await?;
    progress.phase("sleep", jobs);
    let rss_before = rss_bytes();
    let window = Window::open();
    let running = Runtime::new(settings.clone())
        .roles(Roles::WORKER)
        .start_with_store(pool_store.clone())
        .await?;
    let mut max_running = 0u64;
    let mut last_count = Instant::now() - Duration::from_secs(1);
    let stall = Duration::from_secs_f64(seconds + 60.0);
    let finished = loop {
        if last_count.elapsed() >= Duration::from_millis(200) {
            last_count = Instant::now();
            match monitor.count_status(Status::Running).await {
                Ok(n) => max_running = max_running.max(n),
                Err(e) => break Err(e),
            }
            if let Ok(done) = monitor.count_status(Status::Success).await {
                progress.set(done);
            }
        }
        match monitor.unfinished(None).await {
            Ok(false) => break Ok(()),
            Ok(true) => {}
            Err(e) => break Err(e),
        }
        if window.elapsed() > stall {
            break Err(BenchError::Failed(format!(
                "the sleeping executions did not finish within {} s",
                stall.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (elapsed, statements, cpu, peak_rss) = window.close();
    stop_all(vec![running]).await;
    let _ = pool_store.close().await;
    finished?;
    let succeeded = monitor.count_status(Status::Success).await?;
    let _ = store.close().await;

    let mut used = ctx.settings_json(&settings);
    used.insert("workers".into(), 1.into());
    used.insert("sleep_seconds".into(), seconds.into());
    let details = json!({
        "succeeded": succeeded,
        "max_running_seen": max_running,
        "rss_before_bytes": rss_before,
        "rss_per_attempt_bytes": peak_rss.saturating_sub(rss_before) / jobs.max(1),
    });
    let mut notes = common_notes(&window, monitor.dialect == crate::store::Dialect::Sqlite);
    notes.push(
        "peak_rss_bytes: VmHWM of the process from the pool's start; rss_before_bytes: VmRSS \
         just before it"
            .into(),
    );
    Ok((
        Measured {
            jobs,
            window: elapsed,
            lag_ms: None,
            statements,
            peak_rss_bytes: peak_rss,
            cpu_seconds: cpu,
            ok: succeeded == jobs,
            details,
        },
        settings_value(used),
        notes,
    ))
}
