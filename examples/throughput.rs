//! Benchmark: how many executions per second one worker process completes on a database.
//!
//! ```sh
//! cargo run --release --example throughput -- sqlite:///tmp/jobu-bench.db?mode=rwc 5000
//! cargo run --release --example throughput -- postgres://postgres@127.0.0.1/jobu_bench 5000
//! cargo run --release --example throughput -- mysql://root@127.0.0.1/jobu_bench 5000
//! ```
//!
//! Enqueues N `noop` executions (due now), starts a worker-only runtime with the configured
//! concurrency (`JOBU__WORKER__CONCURRENCY`, default 10) and batch size, and reports the time
//! until every execution is SUCCESS: claim, start a TaskActor, record, for each one. The
//! database must exist (for PostgreSQL and MySQL create it first); its tables are emptied.

use std::time::{Duration, Instant};

use jobu::config::{ConfigSource, DatabaseSettings, Settings};
use jobu::entities::job_execution::{self, ParamSource, Status};
use jobu::entities::JobExecutions;
use jobu::store::create::NewExecution;
use jobu::store::Store;
use jobu::{Roles, Runtime};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or("usage: throughput DATABASE_URL [N]")?;
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5000);

    let mut settings = Settings::load(&ConfigSource::default())?;
    settings.databases.insert(
        "default".into(),
        DatabaseSettings {
            max_connections: 20,
            ..DatabaseSettings::with_url(url)
        },
    );
    settings.worker.poll_interval_seconds = 0.05;
    let store = Store::connect(settings.default_database()).await?;
    store.migrate().await?;
    JobExecutions::delete_many()
        .exec(store.connection())
        .await?;

    let now = store.now().await?;
    let started = Instant::now();
    for _ in 0..n {
        store
            .create_if_absent(&NewExecution {
                job_id: None,
                handler_name: "noop".into(),
                scheduled_time: now,
                run_at: now,
                params: None,
                param_source: ParamSource::Api,
                max_retry: 0,
                timeout_seconds: 60,
            })
            .await?;
    }
    let enqueue = started.elapsed();

    let concurrency = settings.worker.concurrency;
    let running = Runtime::new(settings)
        .roles(Roles::WORKER)
        .start_with_store(store.clone())
        .await?;
    let started = Instant::now();
    loop {
        let done = JobExecutions::find()
            .filter(job_execution::Column::Status.eq(Status::Success.as_str()))
            .count(store.connection())
            .await? as usize;
        if done == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let run = started.elapsed();
    running.shutdown();
    running.wait().await;
    println!(
        "{} executions; enqueue {:.0}/s; run {:.0}/s ({:.2} s, concurrency {concurrency}, {} backend)",
        n,
        n as f64 / enqueue.as_secs_f64(),
        n as f64 / run.as_secs_f64(),
        run.as_secs_f64(),
        format!("{:?}", store.dialect()).to_lowercase(),
    );
    Ok(())
}
