//! `cron`: M enabled `noop` crons firing every S seconds, a dispatcher and a worker pool for
//! T seconds. The window runs from the dispatcher's start (T_start, database clock) to
//! T_stop = T_start + T; then the dispatcher stops, the workers finish what was due by
//! T_stop, and the rows are checked:
//!
//! - every fire time of every cron in (T_start, T_stop] was created exactly once (counted
//!   per (job_id, scheduled_time));
//! - schedule lag = `started_at - scheduled_time` over those rows, p50/p99/max; also over
//!   the fire times after the first lookahead (steady state, without the dispatcher's start);
//! - the dispatcher's CPU share: the dispatcher runs in a tokio runtime of its own whose
//!   threads' CPU time (`/proc/self/task/<tid>`) is summed over the window, divided by the
//!   window. Database work done by other threads (SQLite's engine threads, the server) is
//!   not in it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::FromQueryResult;
use serde_json::{json, Value};

use super::report::{round3, thread_cpu_seconds, thread_id, Lag, Measured};
use super::{
    common_notes, settings_value, stop_all, BenchError, Monitor, Progress, RunContext, Window,
};
use crate::actors::{Roles, Runtime};
use crate::entities::cron_job::MisfirePolicy;
use crate::handlers::builtin::NOOP;
use crate::schedule::Schedule;
use crate::store::crons::NewCron;
use crate::store::dialect::Sql;

/// Tasks inserting crons side by side.
const INSERTERS: u64 = 4;
/// The workers must finish what was due by T_stop; failing that for this long fails the run.
const STALL: Duration = Duration::from_secs(60);

pub struct Args {
    pub crons: u64,
    pub every: u64,
    pub for_seconds: u64,
    pub concurrency: Option<u32>,
}

/// A six-field expression firing every `every` seconds at even intervals.
pub fn expression(every: u64) -> Result<String, BenchError> {
    let minutes = every / 60;
    match every {
        1 => Ok("* * * * * *".into()),
        s if s < 60 && 60 % s == 0 => Ok(format!("*/{s} * * * * *")),
        60 => Ok("0 * * * * *".into()),
        s if s % 60 == 0 && minutes < 60 && 60 % minutes == 0 => {
            Ok(format!("0 */{minutes} * * * *"))
        }
        3600 => Ok("0 0 * * * *".into()),
        _ => Err(BenchError::Usage(
            "--every must divide a minute (1, 2, 3, 4, 5, 6, 10, 12, 15, 20 or 30 seconds), or \
             be whole minutes that divide an hour (60, 120, 180, ..., 1800), or 3600"
                .into(),
        )),
    }
}

/// The dispatcher's role alone: no worker, no rescuer (the worker runtime has one).
const DISPATCHER_ONLY: Roles = Roles {
    dispatcher: true,
    worker: false,
    rescuer: false,
    admin: false,
};

#[derive(FromQueryResult)]
struct Fire {
    job_id: i64,
    scheduled_time: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
}

#[derive(FromQueryResult)]
struct Clock {
    now: DateTime<Utc>,
}

pub async fn run(
    ctx: &RunContext,
    monitor: &Monitor,
    progress: &Progress,
    args: Args,
) -> Result<(Measured, Value, Vec<String>), BenchError> {
    let expr = expression(args.every)?;
    let mut settings = ctx.settings.clone();
    if let Some(c) = args.concurrency {
        settings.worker.concurrency = c;
    }
    settings.dispatcher.min_cron_interval_seconds = settings
        .dispatcher
        .min_cron_interval_seconds
        .min(args.every);
    let store = ctx.store().await?;
    store.migrate().await?;

    progress.phase("crons", args.crons);
    let mut inserters = tokio::task::JoinSet::new();
    for part in 0..INSERTERS {
        let store = store.clone();
        let expr = expr.clone();
        let total = args.crons;
        inserters.spawn(async move {
            let mut done = 0u64;
            for i in (part..total).step_by(INSERTERS as usize) {
                let mut cron = NewCron::new(&format!("bench-{i}"), &expr, NOOP);
                cron.max_retry = 0;
                cron.timeout_seconds = 60;
                cron.misfire_policy = MisfirePolicy::Latest;
                store.insert_cron(&cron).await?;
                done += 1;
            }
            Ok::<u64, crate::store::StoreError>(done)
        });
    }
    while let Some(joined) = inserters.join_next().await {
        let n =
            joined.map_err(|e| BenchError::Failed(format!("a cron inserter failed: {e}")))??;
        progress.inc(n);
    }

    // The workers first, idle; then the dispatcher, in a tokio runtime of its own.
    let mut worker_settings = settings.clone();
    worker_settings.worker.id = Some(format!("bench-{}-worker", std::process::id()));
    let worker_store = ctx.store().await?;
    let workers = Runtime::new(worker_settings)
        .roles(Roles::WORKER)
        .start_with_store(worker_store.clone())
        .await?;

    let threads = Arc::new(Mutex::new(Vec::new()));
    let recorded = threads.clone();
    let dispatcher_rt = OwnRuntime(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(2)
            .thread_name("jobu-bench-dispatcher")
            .enable_all()
            .on_thread_start(move || {
                if let Ok(mut t) = recorded.lock() {
                    t.push(thread_id());
                }
            })
            .build()
            .map_err(|e| {
                BenchError::Failed(format!("cannot start the dispatcher's runtime: {e}"))
            })?,
    ));
    let dispatcher_cpu = || -> f64 {
        threads
            .lock()
            .map(|t| t.iter().map(|&tid| thread_cpu_seconds(tid)).sum())
            .unwrap_or(0.0)
    };

    let t_start = db_now(monitor).await?;
    progress.phase("cron", args.for_seconds);
    let window = Window::open();
    let cpu_before = dispatcher_cpu();
    let mut dispatcher_settings = settings.clone();
    dispatcher_settings.worker.id = Some(format!("bench-{}-dispatcher", std::process::id()));
    let db = settings.default_database().clone();
    let signal_of = worker_store.clone();
    let started = dispatcher_rt
        .handle()?
        .spawn(async move {
            // Its own pool, opened in its own runtime so that the driver's work counts as
            // the dispatcher's; the in-process signal is the workers', as in `jobu run`
            // (without it, on SQLite and MySQL the workers would learn of the first fire
            // times only at their next poll).
            let mut store = crate::store::Store::connect(&db).await?;
            store.share_wakeups_with(&signal_of);
            let running = Runtime::new(dispatcher_settings)
                .roles(DISPATCHER_ONLY)
                .start_with_store(store.clone())
                .await?;
            Ok::<_, BenchError>((running, store))
        })
        .await
        .map_err(|e| BenchError::Failed(format!("the dispatcher did not start: {e}")))?;
    let (dispatcher, dispatcher_store) = match started {
        Ok(started) => started,
        Err(e) => {
            stop_all(vec![workers]).await;
            return Err(e);
        }
    };
    for s in 1..=args.for_seconds {
        tokio::time::sleep(Duration::from_secs(s).saturating_sub(window.elapsed())).await;
        progress.set(s);
    }
    let t_stop = db_now(monitor).await?;
    let dispatcher_seconds = (dispatcher_cpu() - cpu_before).max(0.0);
    let (elapsed, statements, cpu, peak_rss) = window.close();

    dispatcher.shutdown();
    let _ = dispatcher_rt
        .handle()?
        .spawn(async move {
            let _ = dispatcher.wait().await;
            let _ = dispatcher_store.close().await;
        })
        .await;
    drop(dispatcher_rt);
    let expected_fires: Vec<DateTime<Utc>> = Schedule::parse(&expr, "UTC")
        .map_err(|e| BenchError::Failed(e.to_string()))?
        .iter_after(t_start)
        .take_while(|f| *f <= t_stop)
        .collect();
    progress.phase("finish", args.crons * expected_fires.len() as u64);
    let finished = monitor.wait_finished(Some(t_stop), progress, STALL).await;
    stop_all(vec![workers]).await;
    let _ = worker_store.close().await;
    finished?;

    // The check, on the bench's own connection.
    let mut q = Sql::new(monitor.dialect);
    q.push(
        "SELECT job_id, scheduled_time, started_at FROM job_executions WHERE job_id IS NOT NULL",
    );
    let rows = Fire::find_by_statement(q.build())
        .all(monitor.connection())
        .await?;
    let crons = store.enabled_crons().await?;
    let _ = store.close().await;
    let mut per_fire: HashMap<(i64, DateTime<Utc>), u32> = HashMap::new();
    let mut lags = Vec::new();
    let mut steady_lags = Vec::new();
    let steady_from =
        t_start + chrono::Duration::seconds(settings.dispatcher.lookahead_seconds as i64);
    let mut not_started = 0u64;
    let mut ahead = 0u64;
    for row in &rows {
        *per_fire
            .entry((row.job_id, row.scheduled_time))
            .or_default() += 1;
        if row.scheduled_time <= t_start {
            continue;
        }
        if row.scheduled_time > t_stop {
            ahead += 1;
            continue;
        }
        match row.started_at {
            Some(s) => {
                let lag = (s - row.scheduled_time)
                    .num_microseconds()
                    .unwrap_or(i64::MAX) as f64
                    / 1000.0;
                lags.push(lag);
                if row.scheduled_time > steady_from {
                    steady_lags.push(lag);
                }
            }
            None => not_started += 1,
        }
    }
    let mut missing = 0u64;
    let mut duplicates = 0u64;
    for cron in &crons {
        for fire in &expected_fires {
            match per_fire.get(&(cron.id, *fire)).copied().unwrap_or(0) {
                0 => missing += 1,
                1 => {}
                _ => duplicates += 1,
            }
        }
    }
    let expected = crons.len() as u64 * expected_fires.len() as u64;
    let window_seconds = elapsed.as_secs_f64();

    let mut used = ctx.settings_json(&settings);
    used.insert("workers".into(), 1.into());
    used.insert("dispatchers".into(), 1.into());
    used.insert("crons".into(), args.crons.into());
    used.insert("cron_expression".into(), expr.clone().into());
    used.insert(
        "lookahead_seconds".into(),
        settings.dispatcher.lookahead_seconds.into(),
    );
    used.insert(
        "dispatcher_poll_interval_seconds".into(),
        settings.dispatcher.poll_interval_seconds.into(),
    );
    used.insert(
        "min_cron_interval_seconds".into(),
        settings.dispatcher.min_cron_interval_seconds.into(),
    );
    let details = json!({
        "fire_times_expected": expected,
        "missing": missing,
        "duplicates": duplicates,
        "not_started": not_started,
        "created_ahead": ahead,
        "steady_lag_ms": Lag::of(&steady_lags),
        "dispatcher_cpu_seconds": round3(dispatcher_seconds),
        "dispatcher_cpu_share": round3(dispatcher_seconds / window_seconds.max(1e-9)),
    });
    let mut notes = common_notes(&window, monitor.dialect == crate::store::Dialect::Sqlite);
    notes.push(
        "window: from the dispatcher's start to --for seconds later; fire times in it must \
         each have exactly one execution; steady_lag_ms leaves out the first lookahead"
            .into(),
    );
    notes.push(
        "dispatcher_cpu_share: CPU time of the dispatcher's own tokio runtime threads over the \
         window (its database driver work included, the database engine's not)"
            .into(),
    );
    Ok((
        Measured {
            jobs: expected,
            window: elapsed,
            lag_ms: Lag::of(&lags),
            statements,
            peak_rss_bytes: peak_rss,
            cpu_seconds: cpu,
            ok: missing == 0 && duplicates == 0 && not_started == 0,
            details,
        },
        settings_value(used),
        notes,
    ))
}

/// A tokio runtime owned by async code: dropped (on any path, a cancelled run included) it
/// shuts down in the background, as a runtime may not block inside another.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl OwnRuntime {
    fn handle(&self) -> Result<&tokio::runtime::Handle, BenchError> {
        self.0
            .as_ref()
            .map(|rt| rt.handle())
            .ok_or_else(|| BenchError::Failed("the dispatcher's runtime is gone".into()))
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The database clock, read on the bench's own connection.
async fn db_now(monitor: &Monitor) -> Result<DateTime<Utc>, BenchError> {
    let mut q = Sql::new(monitor.dialect);
    q.push("SELECT ").now().push(" AS now");
    Clock::find_by_statement(q.build())
        .one(monitor.connection())
        .await?
        .map(|c| c.now)
        .ok_or_else(|| BenchError::Failed("the database returned no clock".into()))
}
