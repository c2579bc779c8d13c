//! Embedding jobu: run the runtime inside your own program with a handler written in Rust.
//!
//! ```sh
//! cargo run --example custom_handler            # SQLite file under data/, until Ctrl-C
//! cargo run --example custom_handler -- --once  # stop after the first successful run
//! ```
//!
//! The example registers a `greet` handler next to the built-ins, creates a cron that calls
//! it every minute (every 5 s with `--once`), and runs dispatcher,
//! worker and rescuer in this process. Any other `jobu worker` with a `greet` handler could
//! share the work through the same database.

use std::time::Duration;

use jobu::config::{ConfigSource, Settings};
use jobu::entities::job_execution::{self, Status};
use jobu::entities::JobExecutions;
use jobu::handlers::{async_trait, ExecutionContext, Handler, HandlerError, HandlerResult};
use jobu::store::crons::NewCron;
use jobu::Runtime;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{json, Value};

/// Greets whoever `params.name` names; refuses a non-string name up front.
struct Greet;

#[async_trait]
impl Handler for Greet {
    async fn run(&self, params: Value, ctx: ExecutionContext) -> HandlerResult {
        let name = params
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("world");
        tracing::info!(name, attempt = ctx.attempt, "greeting");
        Ok(json!({ "greeting": format!("hello, {name}"), "scheduled_time": ctx.scheduled_time }))
    }

    fn validate_params(&self, params: &Value) -> Result<(), String> {
        match params.get("name") {
            None | Some(Value::String(_)) => Ok(()),
            Some(_) => Err("`name` must be a string".into()),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let once = std::env::args().any(|a| a == "--once");
    let mut settings = Settings::load(&ConfigSource::default())?;
    settings.dispatcher.min_cron_interval_seconds = 0;
    let _log = jobu::telemetry::init(&settings.logging);

    let running = Runtime::new(settings)
        .handler("greet", Greet)
        .start()
        .await?;
    let store = running.store().clone();
    let mut cron = NewCron::new(
        "greet-example",
        if once { "*/5 * * * * *" } else { "* * * * *" },
        "greet",
    );
    cron.handler_params = Some(json!({ "name": "jobu" }));
    Greet
        .validate_params(cron.handler_params.as_ref().unwrap_or(&Value::Null))
        .map_err(HandlerError::invalid_params)?;
    if let Err(e) = store.insert_cron(&cron).await {
        // Already created by an earlier run (the name is unique).
        tracing::debug!(error = %e, "cron not inserted");
    }

    if !once {
        running.run_until_signal().await;
        return Ok(());
    }
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let done = JobExecutions::find()
            .filter(job_execution::Column::HandlerName.eq("greet"))
            .filter(job_execution::Column::Status.eq(Status::Success.as_str()))
            .one(store.connection())
            .await?;
        if let Some(row) = done {
            println!(
                "execution {} succeeded: {}",
                row.id,
                row.result.unwrap_or_default()
            );
            break;
        }
    }
    running.shutdown();
    let exit = running.wait().await;
    println!("runtime ended: {exit:?}");
    Ok(())
}
