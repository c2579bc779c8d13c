//! Prometheus metrics: the recorder, the names, and one function per event so call sites
//! stay one line and names cannot drift. Every name starts with `jobu_` and uses base units
//! (seconds). Rendered by `GET /metrics` in the Prometheus text format.
//!
//! Execution outcomes and durations are counted by the process that ran the attempt;
//! `jobu_executions` (by status) is counted in the database, at most every few seconds
//! (`http::scrape`), so every admin process reports the same fleet-wide backlog.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::entities::job_execution::Status;

/// Histogram buckets in seconds, for attempt durations and schedule lag alike.
const SECONDS_BUCKETS: [f64; 18] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
];
/// Histogram samples are folded into buckets this often even when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs jobu's recorder as the process-wide one, once. `None` when an embedding program
/// installed its own first: jobu's metrics then go to that recorder and `/metrics` says so.
pub fn install() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS);
            let handle = match builder.and_then(|b| b.install_recorder()) {
                Ok(handle) => handle,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install the Prometheus recorder; /metrics will be empty");
                    return None;
                }
            };
            describe();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let upkeep = handle.clone();
                rt.spawn(async move {
                    let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
                    loop {
                        tick.tick().await;
                        upkeep.run_upkeep();
                    }
                });
            }
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    describe_counter!(
        "jobu_executions_total",
        "Executions this process brought to a final status (as worker or rescuer), by handler and status"
    );
    describe_counter!(
        "jobu_attempts_total",
        "Attempts this process ran, by handler and outcome (success, failed, timeout, cancelled, released, lost)"
    );
    describe_histogram!(
        "jobu_attempt_duration_seconds",
        Unit::Seconds,
        "Run time of one attempt, by handler"
    );
    describe_histogram!(
        "jobu_schedule_lag_seconds",
        Unit::Seconds,
        "Start of a first attempt minus its scheduled time, by handler"
    );
    describe_gauge!(
        "jobu_executions",
        "Executions in the database by status, counted at most every 5 s"
    );
    describe_gauge!("jobu_actors", "Live actors of this process by kind");
    describe_gauge!(
        "jobu_task_actors_running",
        "TaskActors running a handler attempt in this process"
    );
    describe_counter!(
        "jobu_actor_restarts_total",
        "Restarts of a crashed actor by its supervisor, by actor"
    );
    describe_counter!("jobu_actor_messages_total", "Messages handled, by actor");
    describe_counter!(
        "jobu_fire_times_total",
        "Fire times of crons decided by this process's dispatcher, by decision (run, skipped, missed, excluded)"
    );
    describe_counter!(
        "jobu_supervisor_escalations_total",
        "Times the supervisor gave up on a child that crashed too often"
    );
    describe_counter!(
        "jobu_retention_deleted_total",
        "Old finished executions this process deleted (retention service, jobu prune), by status"
    );
    describe_counter!(
        "jobu_http_requests_total",
        "Admin HTTP requests by method, route and status"
    );
}

/// The Prometheus text of every metric of this process.
pub fn render() -> String {
    match install() {
        Some(handle) => handle.render(),
        None => "# jobu: the embedding program installed its own metrics recorder\n".into(),
    }
}

pub fn execution_finished(handler: &str, status: Status) {
    counter!("jobu_executions_total", "handler" => handler.to_string(), "status" => status.as_str())
        .increment(1);
}

pub fn attempt_finished(handler: &str, outcome: &'static str, duration: Duration) {
    counter!("jobu_attempts_total", "handler" => handler.to_string(), "outcome" => outcome)
        .increment(1);
    histogram!("jobu_attempt_duration_seconds", "handler" => handler.to_string())
        .record(duration.as_secs_f64());
}

pub fn schedule_lag(handler: &str, seconds: f64) {
    histogram!("jobu_schedule_lag_seconds", "handler" => handler.to_string())
        .record(seconds.max(0.0));
}

pub fn executions_by_status(counts: &BTreeMap<Status, u64>) {
    for (status, n) in counts {
        gauge!("jobu_executions", "status" => status.as_str()).set(*n as f64);
    }
}

pub fn live_actors(kind: &'static str, n: usize) {
    gauge!("jobu_actors", "kind" => kind).set(n as f64);
}

pub fn task_actors_running(n: usize) {
    gauge!("jobu_task_actors_running").set(n as f64);
    live_actors("task", n);
}

pub fn actor_restarted(actor: &'static str) {
    counter!("jobu_actor_restarts_total", "actor" => actor).increment(1);
}

pub fn message_handled(actor: &'static str) {
    counter!("jobu_actor_messages_total", "actor" => actor).increment(1);
}

pub fn supervisor_escalated(child: &'static str) {
    counter!("jobu_supervisor_escalations_total", "child" => child).increment(1);
}

/// Fire times decided by this process's dispatcher: `run`, `skipped`, `missed`, `excluded`
/// (a MISSED row counts every fire time it stands for).
pub fn fire_times_decided(decision: &'static str, n: u64) {
    if n > 0 {
        counter!("jobu_fire_times_total", "decision" => decision).increment(n);
    }
}

pub fn retention_deleted(status: Status, n: u64) {
    counter!("jobu_retention_deleted_total", "status" => status.as_str()).increment(n);
}

pub fn http_request(method: &str, route: &'static str, status: u16) {
    counter!(
        "jobu_http_requests_total",
        "method" => method.to_string(),
        "route" => route,
        "status" => status.to_string()
    )
    .increment(1);
}
