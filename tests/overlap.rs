//! Overlap policies under real processes: three dispatchers and two workers (the built
//! binary) share a cron that fires every second and whose runs outlast the interval. A
//! sampler reads the cron's rows every 50 ms while they run; afterwards every fire time of
//! the run is checked to have exactly one decision (the ledger), and each policy's own
//! promise is checked from the rows. On every backend.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jobu::entities::cron_job::OverlapPolicy;
use jobu::entities::job_execution;
use jobu::store::crons::NewCron;
use serde_json::json;

use common::process::{on_backends, Daemon, Scratch};
use common::{executions_of, Backend, TestDb};

/// How long the daemons dispatch.
const RUN_FOR: Duration = Duration::from_secs(12);

fn count(rows: &[job_execution::Model], status: &str) -> usize {
    rows.iter().filter(|r| r.status == status).count()
}

/// The most of each status seen at once over the sampled run.
#[derive(Debug, Default)]
struct Peaks {
    running: usize,
    unfinished: usize,
    waiting: usize,
}

/// Runs the cron under 3 dispatchers and 2 workers for [`RUN_FOR`], sampling every 50 ms;
/// stops the dispatchers, lets the workers finish what is left, and returns the peaks.
async fn run(db: &TestDb, scratch: &Arc<Scratch>, cron_id: i64, drain: Duration) -> Peaks {
    let mut daemons: Vec<Daemon> = (0..3)
        .map(|i| Daemon::start(scratch, db, "dispatcher", &format!("d{i}"), &[]))
        .collect();
    for i in 0..2 {
        daemons.push(Daemon::start(
            scratch,
            db,
            "worker",
            &format!("w{i}"),
            &[("JOBU__WORKER__CONCURRENCY", "4")],
        ));
    }
    let mut peaks = Peaks::default();
    let mut sample = |rows: &[job_execution::Model]| {
        let running = count(rows, "RUNNING");
        peaks.running = peaks.running.max(running);
        peaks.unfinished = peaks.unfinished.max(running + count(rows, "PENDING"));
        peaks.waiting = peaks.waiting.max(count(rows, "WAITING"));
    };
    let end = tokio::time::Instant::now() + RUN_FOR;
    while tokio::time::Instant::now() < end {
        sample(&executions_of(&db.store, cron_id).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for d in &mut daemons[..3] {
        let status = d.stop(Duration::from_secs(10)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "{} exit: {status:?}",
            d.name
        );
    }
    // The workers finish the buffered ones; keep sampling while they do.
    let end = tokio::time::Instant::now() + drain;
    loop {
        let rows = executions_of(&db.store, cron_id).await;
        sample(&rows);
        let open = count(&rows, "RUNNING") + count(&rows, "PENDING") + count(&rows, "WAITING");
        if open == 0 || tokio::time::Instant::now() > end {
            assert_eq!(open, 0, "still unfinished after {drain:?}: {rows:#?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for d in &mut daemons[3..] {
        d.stop(Duration::from_secs(10)).await;
    }
    peaks
}

async fn cron(db: &TestDb, policy: OverlapPolicy, seconds: f64) -> i64 {
    let mut cron = NewCron::new(policy.as_str(), "* * * * * *", "sleep");
    cron.overlap_policy = policy;
    cron.max_retry = 0;
    cron.handler_params = Some(json!({"seconds": seconds}));
    db.store.insert_cron(&cron).await.expect("cron").id
}

/// Every second from the first row's fire time to the last one's has exactly one row: the
/// unique key allows no second one, so this checks there is no gap.
fn assert_ledger_complete(rows: &[job_execution::Model]) {
    let times: Vec<DateTime<Utc>> = rows.iter().map(|r| r.scheduled_time).collect();
    assert!(times.len() >= 8, "only {} fire times recorded", times.len());
    for pair in times.windows(2) {
        assert_eq!(
            (pair[1] - pair[0]).num_seconds(),
            1,
            "a fire time between {} and {} has no decision",
            pair[0],
            pair[1]
        );
    }
    for r in rows {
        assert_eq!(r.param_source, "cron", "{r:?}");
        assert_eq!(r.fire_count, 1, "{r:?}");
    }
}

/// Runs (rows that started) never overlap: each starts after the previous one ended.
fn assert_runs_never_overlap(rows: &[job_execution::Model]) -> Vec<&job_execution::Model> {
    let mut ran: Vec<&job_execution::Model> =
        rows.iter().filter(|r| r.started_at.is_some()).collect();
    ran.sort_by_key(|r| r.started_at);
    for pair in ran.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        assert!(
            b.started_at >= a.finished_at,
            "execution {} ({}) started at {:?}, before {} ({}) finished at {:?}",
            b.id,
            b.scheduled_time,
            b.started_at,
            a.id,
            a.scheduled_time,
            a.finished_at
        );
    }
    ran
}

fn by_status(rows: &[job_execution::Model]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in rows {
        *m.entry(r.status.clone()).or_default() += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skip_runs_one_at_a_time_and_records_every_skipped_fire_time() {
    on_backends("overlap-skip", &Backend::ALL, |db, scratch| async move {
        let id = cron(&db, OverlapPolicy::Skip, 2.5).await;
        let peaks = run(&db, &scratch, id, Duration::from_secs(15)).await;
        assert!(peaks.unfinished <= 1, "{peaks:?}");
        assert_eq!(peaks.waiting, 0, "{peaks:?}");
        let rows = executions_of(&db.store, id).await;
        assert_ledger_complete(&rows);
        let ran = assert_runs_never_overlap(&rows);
        let statuses = by_status(&rows);
        assert!(ran.len() >= 3, "{statuses:?}");
        assert!(
            statuses.get("SKIPPED").copied().unwrap_or(0) >= 4,
            "{statuses:?}"
        );
        assert_eq!(statuses.len(), 2, "only SUCCESS and SKIPPED: {statuses:?}");
        for r in rows.iter().filter(|r| r.status == "SKIPPED") {
            let reason = r.error_message.as_deref().unwrap_or_default();
            assert!(reason.contains("overlap policy skip"), "{reason}");
            assert!(r.started_at.is_none() && r.finished_at.is_some(), "{r:?}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn buffer_one_holds_at_most_one_waiting_and_skips_the_rest() {
    on_backends(
        "overlap-buffer-one",
        &Backend::ALL,
        |db, scratch| async move {
            let id = cron(&db, OverlapPolicy::BufferOne, 2.5).await;
            let peaks = run(&db, &scratch, id, Duration::from_secs(20)).await;
            assert!(peaks.unfinished <= 1, "{peaks:?}");
            assert!(peaks.running <= 1, "{peaks:?}");
            assert!(peaks.waiting <= 1, "{peaks:?}");
            let rows = executions_of(&db.store, id).await;
            assert_ledger_complete(&rows);
            let ran = assert_runs_never_overlap(&rows);
            let statuses = by_status(&rows);
            assert!(ran.len() >= 4, "{statuses:?}");
            assert!(
                statuses.get("SKIPPED").copied().unwrap_or(0) >= 2,
                "{statuses:?}"
            );
            assert_eq!(
                statuses.get("SUCCESS").copied().unwrap_or(0),
                ran.len(),
                "{statuses:?}"
            );
            // A buffered run starts right after the one it waited for (well within a poll).
            for pair in ran.windows(2) {
                let gap = pair[1].started_at.unwrap() - pair[0].finished_at.unwrap();
                let waited = pair[1].scheduled_time < pair[0].finished_at.unwrap();
                if waited {
                    assert!(
                        gap < chrono::Duration::milliseconds(1500),
                        "buffered {} started {gap} after {} ended",
                        pair[1].id,
                        pair[0].id
                    );
                }
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn buffer_all_runs_every_fire_time_in_order_one_at_a_time() {
    on_backends(
        "overlap-buffer-all",
        &Backend::ALL,
        |db, scratch| async move {
            let id = cron(&db, OverlapPolicy::BufferAll, 1.4).await;
            let peaks = run(&db, &scratch, id, Duration::from_secs(40)).await;
            assert!(peaks.unfinished <= 1, "{peaks:?}");
            assert!(peaks.waiting >= 2, "the backlog never built up: {peaks:?}");
            let rows = executions_of(&db.store, id).await;
            assert_ledger_complete(&rows);
            let ran = assert_runs_never_overlap(&rows);
            let statuses = by_status(&rows);
            assert_eq!(ran.len(), rows.len(), "every fire time ran: {statuses:?}");
            assert_eq!(count(&rows, "SUCCESS"), rows.len(), "{statuses:?}");
            // Started in fire-time order.
            let order: Vec<DateTime<Utc>> = ran.iter().map(|r| r.scheduled_time).collect();
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(order, sorted, "runs out of fire-time order");
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replace_cancels_the_running_one_and_never_runs_two() {
    on_backends("overlap-replace", &Backend::ALL, |db, scratch| async move {
        let id = cron(&db, OverlapPolicy::Replace, 4.0).await;
        let peaks = run(&db, &scratch, id, Duration::from_secs(20)).await;
        assert!(peaks.running <= 1, "{peaks:?}");
        assert!(peaks.unfinished <= 1, "{peaks:?}");
        let rows = executions_of(&db.store, id).await;
        assert_ledger_complete(&rows);
        assert_runs_never_overlap(&rows);
        let replaced: Vec<_> = rows
            .iter()
            .filter(|r| r.status == "CANCELLED" && r.cancel_reason.as_deref() == Some("replaced"))
            .collect();
        assert!(replaced.len() >= 3, "{:?}", by_status(&rows));
        // A 4 s job under a fire time every second: each is replaced by the next; those
        // that started were stopped (CANCELLED with a finish time).
        for r in &replaced {
            assert!(r.finished_at.is_some(), "{r:?}");
        }
    })
    .await;
}
