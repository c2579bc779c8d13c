//! Retention on every backend: old finished executions seeded next to recent ones, unfinished
//! ones and the newest of each cron; then the retention service (in this process, waited on
//! through its sweep reports), a real `jobu run`, `jobu prune --dry-run`, `jobu prune` and
//! two racing prunes delete exactly the old finished rows, each once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::admin::AdminServer;
use common::process::eventually;
use common::TestDb;
use jobu::actors::retention::{RetentionArgs, RetentionConfig, RetentionService, SweepReport};
use jobu::config::RetentionSettings;
use jobu::entities::job_execution::{ParamSource, Status};
use jobu::store::create::{Created, NewExecution};
use jobu::store::crons::NewCron;
use jobu::store::dialect::Sql;
use jobu::store::Store;
use sea_orm::ConnectionTrait;
use tokio::sync::watch;

/// A handler no process has, so the seeded PENDING rows stay PENDING.
const ABSENT_HANDLER: &str = "retention_test_absent";
const DAY: f64 = 86_400.0;
const WAIT: Duration = Duration::from_secs(60);

/// What the seed wrote and what retention with the default ages must do to it.
struct Seeded {
    kept: BTreeSet<i64>,
    deleted: BTreeMap<Status, u64>,
}

impl Seeded {
    fn total_deleted(&self) -> u64 {
        self.deleted.values().sum()
    }
}

async fn cron(store: &Store, name: &str) -> i64 {
    let mut new = NewCron::new(name, "0 0 1 1 *", ABSENT_HANDLER);
    // Disabled: no dispatcher adds a newer execution while the test runs.
    new.is_enabled = false;
    store.insert_cron(&new).await.expect("cron").id
}

/// One execution scheduled `scheduled_days_ago`, then set to `status`; a final one finished
/// `finished_days_ago`, a RUNNING one holds a lease for a day (no rescuer takes it).
async fn execution(
    store: &Store,
    now: DateTime<Utc>,
    job_id: Option<i64>,
    scheduled_days_ago: f64,
    status: Status,
    finished_days_ago: f64,
) -> i64 {
    let at = now - chrono::Duration::milliseconds((scheduled_days_ago * DAY * 1000.0) as i64);
    let new = NewExecution {
        job_id,
        handler_name: ABSENT_HANDLER.into(),
        scheduled_time: at,
        run_at: at,
        params: None,
        param_source: if job_id.is_some() {
            ParamSource::Cron
        } else {
            ParamSource::Api
        },
        max_retry: 0,
        timeout_seconds: 60,
    };
    let id = match store.create_if_absent(&new).await.expect("create") {
        Created::New(id) => id,
        other => panic!("not created: {other:?}"),
    };
    set_status(store, &[id], status, finished_days_ago).await;
    id
}

async fn set_status(store: &Store, ids: &[i64], status: Status, finished_days_ago: f64) {
    let mut q = Sql::new(store.dialect());
    q.push("UPDATE job_executions SET status = ")
        .bind(status.as_str());
    match status {
        Status::Pending => {}
        Status::Running => {
            q.push(", owner_token = 'ghost-token', worker_id = 'ghost', lease_expires_at = ")
                .now_plus(DAY)
                .push(", started_at = ")
                .now_plus(-finished_days_ago * DAY);
        }
        _ => {
            q.push(", finished_at = ")
                .now_plus(-finished_days_ago * DAY);
        }
    }
    q.push(" WHERE id IN ").bind_list(ids);
    store
        .connection()
        .execute(q.build())
        .await
        .expect("set status");
}

/// `extra_old_success` more ad-hoc SUCCESS rows finished 9 days ago, so small batches need
/// several statements.
async fn seed(store: &Store, extra_old_success: usize) -> Seeded {
    use Status::*;
    let now = store.now().await.expect("clock");
    let mut kept = BTreeSet::new();
    let mut deleted = BTreeMap::from([
        (Success, 0),
        (Cancelled, 0),
        (Failed, 0),
        (Timeout, 0),
        (Skipped, 0),
        (Missed, 0),
        (Excluded, 0),
    ]);
    let mut gone = |s: Status| *deleted.entry(s).or_default() += 1;

    // A cron whose executions are all old: every one goes but the newest.
    let a = cron(store, "all-old").await;
    execution(store, now, Some(a), 20.0, Success, 20.0).await;
    gone(Success);
    execution(store, now, Some(a), 40.0, Failed, 40.0).await;
    gone(Failed);
    execution(store, now, Some(a), 39.0, Timeout, 39.0).await;
    gone(Timeout);
    execution(store, now, Some(a), 11.0, Cancelled, 11.0).await;
    gone(Cancelled);
    kept.insert(execution(store, now, Some(a), 10.0, Success, 10.0).await);

    // Old unfinished rows stay; so does the newest finished one behind them (a weekly
    // cron's next run waits PENDING; its last result must not go); an older one goes.
    let b = cron(store, "unfinished").await;
    kept.insert(execution(store, now, Some(b), 40.0, Pending, 0.0).await);
    kept.insert(execution(store, now, Some(b), 39.0, Running, 39.0).await);
    kept.insert(execution(store, now, Some(b), 50.0, Success, 50.0).await);
    execution(store, now, Some(b), 60.0, Success, 60.0).await;
    gone(Success);

    // Fire times that did not run are no newer result: a cron whose last run is followed by
    // skipped fire times keeps that run, and those rows until a newer run has finished.
    let d = cron(store, "ledger-kept").await;
    kept.insert(execution(store, now, Some(d), 12.0, Success, 12.0).await);
    kept.insert(execution(store, now, Some(d), 11.0, Skipped, 11.0).await);
    let e = cron(store, "ledger-gone").await;
    execution(store, now, Some(e), 12.0, Skipped, 12.0).await;
    gone(Skipped);
    execution(store, now, Some(e), 11.0, Missed, 11.0).await;
    gone(Missed);
    execution(store, now, Some(e), 10.5, Excluded, 10.5).await;
    gone(Excluded);
    kept.insert(execution(store, now, Some(e), 1.0, Success, 1.0).await);

    // The only execution of a cron stays, however old.
    let c = cron(store, "single").await;
    kept.insert(execution(store, now, Some(c), 100.0, Success, 100.0).await);

    // Ad-hoc runs have no newest exception; each status has its own age.
    execution(store, now, None, 8.0, Success, 8.0).await;
    gone(Success);
    kept.insert(execution(store, now, None, 6.0, Success, 6.0).await);
    kept.insert(execution(store, now, None, 20.0, Failed, 20.0).await);
    execution(store, now, None, 31.0, Timeout, 31.0).await;
    gone(Timeout);
    kept.insert(execution(store, now, None, 3.0, Cancelled, 3.0).await);
    kept.insert(execution(store, now, None, 40.0, Pending, 0.0).await);
    // Scheduled long ago, finished recently (a long backlog): its age is since it finished.
    kept.insert(execution(store, now, None, 60.0, Success, 1.0).await);

    if extra_old_success > 0 {
        let at = now - chrono::Duration::days(9);
        let rows: Vec<NewExecution> = (0..extra_old_success)
            .map(|i| NewExecution {
                job_id: None,
                handler_name: ABSENT_HANDLER.into(),
                scheduled_time: at + chrono::Duration::seconds(i as i64),
                run_at: at,
                params: None,
                param_source: ParamSource::Api,
                max_retry: 0,
                timeout_seconds: 60,
            })
            .collect();
        let ids = store.create_many(&rows).await.expect("create many");
        for chunk in ids.chunks(500) {
            set_status(store, chunk, Success, 9.0).await;
        }
        *deleted.entry(Success).or_default() += ids.len() as u64;
    }
    Seeded { kept, deleted }
}

async fn remaining(store: &Store) -> BTreeSet<i64> {
    let mut q = Sql::new(store.dialect());
    q.push("SELECT id FROM job_executions");
    store
        .connection()
        .query_all(q.build())
        .await
        .expect("ids")
        .iter()
        .map(|r| r.try_get_by_index::<i64>(0).expect("id"))
        .collect()
}

fn config(batch: u32, interval: Duration) -> RetentionConfig {
    RetentionConfig {
        batch,
        interval,
        batch_pause: Duration::from_millis(5),
        ..RetentionConfig::from_settings(&RetentionSettings::default())
    }
}

/// Waits for the report of sweep number `n` (or later).
async fn sweep_report(rx: &mut watch::Receiver<Option<SweepReport>>, n: u64) -> SweepReport {
    let report = tokio::time::timeout(
        WAIT,
        rx.wait_for(|r| r.as_ref().is_some_and(|r| r.sweeps >= n)),
    )
    .await
    .unwrap_or_else(|_| panic!("no sweep {n} within {WAIT:?}"))
    .expect("the service is running");
    report.clone().expect("a report")
}

// The service in this process: one sweep in batches of 3 deletes exactly the old finished
// rows and reports them per status; the next sweep finds nothing.
backend_test!(service_sweeps_in_batches, |db: TestDb| async move {
    let seeded = seed(&db.store, 10).await;
    let (tx, mut rx) = watch::channel(None);
    let args = RetentionArgs {
        store: db.store.clone(),
        config: config(3, Duration::from_millis(200)),
        worker_id: "retention-test".into(),
        reports: Some(tx),
    };
    let (service, handle) = ractor::Actor::spawn(None, RetentionService, args)
        .await
        .expect("spawn");
    let first = sweep_report(&mut rx, 1).await;
    assert_eq!(first.error, None);
    assert_eq!(first.deleted, seeded.deleted);
    assert_eq!(remaining(&db.store).await, seeded.kept);
    let second = sweep_report(&mut rx, 2).await;
    assert!(second.deleted.values().all(|n| *n == 0), "{second:?}");
    assert_eq!(remaining(&db.store).await, seeded.kept);
    service.stop(None);
    handle.await.expect("stopped");
});

// A service that may not delete what is not finished refuses to start.
backend_test!(
    service_refuses_unfinished_statuses,
    |db: TestDb| async move {
        let mut config = config(3, Duration::from_secs(1));
        config.ages.push((Status::Pending, Duration::from_secs(1)));
        let args = RetentionArgs {
            store: db.store.clone(),
            config,
            worker_id: "retention-test".into(),
            reports: None,
        };
        assert!(ractor::Actor::spawn(None, RetentionService, args)
            .await
            .is_err());
        assert!(db
            .store
            .delete_expired(Status::Running, 0.0, 10)
            .await
            .is_err());
    }
);

// Embedded as a worker-only runtime: the supervisor runs the service, and the runtime's
// reports say when its first sweep is done.
backend_test!(worker_runtime_runs_the_service, |db: TestDb| async move {
    let seeded = seed(&db.store, 3).await;
    let mut settings = jobu::config::Settings::default();
    settings.admin.enabled = false;
    settings.worker.id = Some("retention-worker".into());
    settings.retention.batch_size = 2;
    settings.retention.batch_pause_ms = 0;
    let running = jobu::Runtime::new(settings)
        .roles(jobu::actors::Roles::WORKER)
        .start_with_store(db.store.clone())
        .await
        .expect("start");
    let mut reports = running.retention_reports();
    let report = sweep_report(&mut reports, 1).await;
    assert_eq!(report.deleted, seeded.deleted);
    assert_eq!(remaining(&db.store).await, seeded.kept);
    running.shutdown();
    assert_eq!(running.wait().await, jobu::actors::Exit::Clean);
});

fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

// `jobu run` sweeps at start, in batches of 2: the old finished rows go, the log says so
// per status, and /metrics counts them.
backend_test!(jobu_run_sweeps, |db: TestDb| async move {
    let seeded = seed(&db.store, 5).await;
    let server = AdminServer::start(
        &db,
        "run",
        "retention",
        &[
            ("JOBU__RETENTION__BATCH_SIZE", "2"),
            ("JOBU__RETENTION__BATCH_PAUSE_MS", "10"),
            ("JOBU__RETENTION__INTERVAL_SECONDS", "1"),
        ],
    )
    .await;
    let gone = eventually(WAIT, || async {
        remaining(&db.store).await.len() == seeded.kept.len()
    })
    .await;
    assert!(
        gone,
        "rows left: {:?}\n{}",
        remaining(&db.store).await,
        server.log()
    );
    assert_eq!(remaining(&db.store).await, seeded.kept);
    let metrics = server.api.get("/metrics").await.text;
    for (status, n) in &seeded.deleted {
        let name = format!("jobu_retention_deleted_total{{status=\"{status}\"}}");
        assert_eq!(
            sample(&metrics, &name),
            Some(*n as f64),
            "{name}\n{metrics}"
        );
    }
    let log = server.log();
    let success = format!(
        "status=SUCCESS deleted={}",
        seeded.deleted[&Status::Success]
    );
    assert!(
        log.contains("retention: deleted old executions") && log.contains(&success),
        "{success}\n{log}"
    );
});

fn prune(db: &TestDb, args: &[&str], extra: &[(&str, &str)]) -> std::process::Command {
    let config = std::env::temp_dir().join("jobu_test_empty_config");
    std::fs::create_dir_all(&config).expect("empty config dir");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_jobu"));
    cmd.arg("prune")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("JOBU_CONFIG_DIR", &config)
        .env("JOBU__DATABASES__DEFAULT__URL", &db.url)
        .env("JOBU__LOGGING__LEVEL", "warn");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The counts `jobu prune` printed: `STATUS: <verb> N (...)` per line.
fn printed(out: &Output, verb: &str) -> BTreeMap<Status, u64> {
    assert!(
        out.status.success(),
        "jobu prune: {:?}\n{}\n{}",
        out.status,
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(out)
        .lines()
        .filter_map(|line| {
            let (status, rest) = line.split_once(": ")?;
            let n = rest.strip_prefix(verb)?.trim_start().split(' ').next()?;
            Some((status.parse().ok()?, n.parse().ok()?))
        })
        .collect()
}

// `jobu prune --dry-run` counts and deletes nothing (ages 0 say "kept forever"); `jobu
// prune` deletes the same rows; a second prune finds none.
backend_test!(prune_dry_run_then_prune, |db: TestDb| async move {
    let seeded = seed(&db.store, 4).await;
    let before = remaining(&db.store).await;

    let out = prune(&db, &["--dry-run"], &[]).output().expect("run");
    assert_eq!(printed(&out, "would delete"), seeded.deleted);
    assert_eq!(
        remaining(&db.store).await,
        before,
        "a dry run deletes nothing"
    );

    let out = prune(
        &db,
        &["--dry-run"],
        &[("JOBU__RETENTION__FAILED_DAYS", "0")],
    )
    .output()
    .expect("run");
    let mut expected = seeded.deleted.clone();
    expected.remove(&Status::Failed);
    assert_eq!(printed(&out, "would delete"), expected);
    assert!(
        stdout(&out).contains("FAILED: kept forever"),
        "{}",
        stdout(&out)
    );

    let out = prune(&db, &[], &[("JOBU__RETENTION__BATCH_SIZE", "3")])
        .output()
        .expect("run");
    assert_eq!(printed(&out, "deleted"), seeded.deleted);
    assert_eq!(remaining(&db.store).await, seeded.kept);

    let out = prune(&db, &[], &[]).output().expect("run");
    assert!(printed(&out, "deleted").values().all(|n| *n == 0));
});

// Two prunes at once, in small batches without pauses: every row is deleted and counted
// once, and neither fails.
backend_test!(
    racing_prunes_delete_each_row_once,
    |db: TestDb| async move {
        let seeded = seed(&db.store, 300).await;
        let settings = [
            ("JOBU__RETENTION__BATCH_SIZE", "7"),
            ("JOBU__RETENTION__BATCH_PAUSE_MS", "0"),
        ];
        let (a, b) = tokio::join!(
            tokio::task::spawn_blocking({
                let mut cmd = prune(&db, &[], &settings);
                move || cmd.output().expect("run")
            }),
            tokio::task::spawn_blocking({
                let mut cmd = prune(&db, &[], &settings);
                move || cmd.output().expect("run")
            }),
        );
        let (a, b) = (a.expect("join"), b.expect("join"));
        let (a, b) = (printed(&a, "deleted"), printed(&b, "deleted"));
        eprintln!("{}: the prunes deleted {a:?} and {b:?}", db.backend.name());
        let mut sum = BTreeMap::new();
        for (status, n) in a.iter().chain(b.iter()) {
            *sum.entry(*status).or_insert(0) += n;
        }
        assert_eq!(sum, seeded.deleted, "{a:?} + {b:?}");
        assert_eq!(remaining(&db.store).await, seeded.kept);
        assert_eq!(seeded.total_deleted(), 310);
    }
);

#[test]
fn prune_exit_codes() {
    let config = std::env::temp_dir().join("jobu_test_empty_config");
    std::fs::create_dir_all(&config).expect("empty config dir");
    let run = |extra: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_jobu"));
        cmd.args(["prune", "--dry-run"])
            .env_clear()
            .env("JOBU_CONFIG_DIR", &config)
            .env("JOBU__DATABASES__DEFAULT__CONNECT_TIMEOUT_SECONDS", "2")
            .env("JOBU__DATABASES__DEFAULT__ACQUIRE_TIMEOUT_SECONDS", "2");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd.output().expect("run jobu prune")
    };
    let bad = run(&[("JOBU__RETENTION__BATCH_SIZE", "0")]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("retention.batch_size"));
    let unreachable = run(&[(
        "JOBU__DATABASES__DEFAULT__URL",
        "postgres://postgres@127.0.0.1:1/nothing",
    )]);
    assert_eq!(unreachable.status.code(), Some(1), "{unreachable:?}");
}
