//! The daemon as users run it: real `jobu` processes of the built binary against PostgreSQL,
//! MariaDB and one SQLite file, killed and stopped while they work, then the rows and the
//! shell handler's own output counted. Each test runs its three backends at once (each in
//! its own database) because most of the time is spent waiting on schedules and leases.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use common::process::{enqueue, eventually, on_backends, Daemon, Scratch};
use common::{executions_of, Backend, TestDb};
use jobu::entities::job_execution::{self, Status};
use jobu::store::crons::NewCron;
use jobu::store::Store;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;

/// Runs `body` on every backend concurrently; prints the process logs of a failing backend.
async fn on_all_backends<F, Fut>(label: &'static str, body: F)
where
    F: Fn(TestDb, Arc<Scratch>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    on_backends(label, &Backend::ALL, body).await
}

async fn execution(store: &Store, id: i64) -> job_execution::Model {
    store.execution(id).await.expect("read").expect("exists")
}

async fn count_status(store: &Store, status: Status, worker: Option<&str>) -> usize {
    let mut q =
        job_execution::Entity::find().filter(job_execution::Column::Status.eq(status.as_str()));
    if let Some(w) = worker {
        q = q.filter(job_execution::Column::WorkerId.eq(w));
    }
    q.all(store.connection()).await.expect("read").len()
}

async fn unfinished(store: &Store, job_id: i64) -> usize {
    executions_of(store, job_id)
        .await
        .iter()
        .filter(|e| e.status == "PENDING" || e.status == "RUNNING")
        .count()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// 3 dispatchers and 2 workers for over 60 s on an every-second cron, while dispatchers are
/// killed (-9) and stopped and restarted: exactly one execution per fire time, no gap, and
/// the shell handler ran each exactly once with the right environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_second_cron_three_dispatchers_two_workers() {
    on_all_backends("soak", |db, scratch| async move {
        let out = scratch.path("out.txt");
        let mut cron = NewCron::new("every-second", "* * * * * *", "shell");
        cron.handler_params = Some(json!({
            "command": format!(
                "echo \"$JOBU_EXECUTION_ID $JOBU_SCHEDULED_TIME $JOBU_ATTEMPT $JOBU_JOB_ID\" >> '{}'",
                out.display()
            )
        }));
        let cron = db.store.insert_cron(&cron).await.expect("cron");

        let mut dispatchers: Vec<Daemon> = (0..3)
            .map(|i| Daemon::start(&scratch, &db, "dispatcher", &format!("d{i}"), &[]))
            .collect();
        let mut workers: Vec<Daemon> = (0..2)
            .map(|i| {
                Daemon::start(
                    &scratch,
                    &db,
                    "worker",
                    &format!("w{i}"),
                    &[("JOBU__WORKER__CONCURRENCY", "4")],
                )
            })
            .collect();

        tokio::time::sleep(Duration::from_secs(20)).await;
        dispatchers[0].kill9();
        tokio::time::sleep(Duration::from_secs(5)).await;
        dispatchers[0] = Daemon::start(&scratch, &db, "dispatcher", "d0-restarted", &[]);
        tokio::time::sleep(Duration::from_secs(15)).await;
        let status = dispatchers[1].stop(Duration::from_secs(10)).await;
        assert!(status.is_some_and(|s| s.success()), "d1 exit: {status:?}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        dispatchers[1] = Daemon::start(&scratch, &db, "dispatcher", "d1-restarted", &[]);
        tokio::time::sleep(Duration::from_secs(21)).await;

        for d in &mut dispatchers {
            let status = d.stop(Duration::from_secs(10)).await;
            assert!(status.is_some_and(|s| s.success()), "{} exit: {status:?}", d.name);
        }
        let store = db.store.clone();
        assert!(
            eventually(Duration::from_secs(30), || {
                let store = store.clone();
                async move { unfinished(&store, cron.id).await == 0 }
            })
            .await,
            "executions left unfinished"
        );
        for w in &mut workers {
            let status = w.stop(Duration::from_secs(10)).await;
            assert!(status.is_some_and(|s| s.success()), "{} exit: {status:?}", w.name);
        }

        let rows = executions_of(&db.store, cron.id).await;
        assert!(rows.len() >= 60, "only {} executions", rows.len());
        for pair in rows.windows(2) {
            let gap = pair[1].scheduled_time - pair[0].scheduled_time;
            assert_eq!(
                gap,
                chrono::Duration::seconds(1),
                "gap or duplicate between {} and {}",
                pair[0].scheduled_time,
                pair[1].scheduled_time
            );
        }
        for row in &rows {
            assert_eq!(row.status, "SUCCESS", "execution {}: {row:?}", row.id);
            assert_eq!(row.retry_count, 0, "execution {}", row.id);
        }
        let lines = scratch.lines("out.txt");
        assert_eq!(lines.len(), rows.len(), "handler runs vs executions");
        for row in &rows {
            let expected = format!(
                "{} {} 1 {}",
                row.id,
                rfc3339(row.scheduled_time),
                cron.id
            );
            let n = lines.iter().filter(|l| **l == expected).count();
            assert_eq!(n, 1, "handler output for execution {}: {expected}", row.id);
        }
    })
    .await;
}

/// kill -9 of a worker while 20 attempts run: after the lease expires another worker runs
/// all of them; none stays RUNNING; the lost attempt counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_worker_attempts_finish_elsewhere() {
    on_all_backends("kill9", |db, scratch| async move {
        let mut ids = Vec::new();
        for _ in 0..20 {
            ids.push(enqueue(&db.store, "sleep", json!({"seconds": 2}), 3, 60).await);
        }
        let conc = [("JOBU__WORKER__CONCURRENCY", "20")];
        let mut a = Daemon::start(&scratch, &db, "worker", "a", &conc);
        let store = db.store.clone();
        assert!(
            eventually(Duration::from_secs(20), || {
                let store = store.clone();
                async move { count_status(&store, Status::Running, Some("a")).await == 20 }
            })
            .await,
            "worker a never ran 20 attempts at once"
        );
        a.kill9();
        let mut b = Daemon::start(&scratch, &db, "worker", "b", &conc);
        assert!(
            eventually(Duration::from_secs(40), || {
                let store = store.clone();
                async move { count_status(&store, Status::Success, None).await == 20 }
            })
            .await,
            "not every execution finished after the kill"
        );
        for id in ids {
            let row = execution(&db.store, id).await;
            assert_eq!(row.status, "SUCCESS");
            assert_eq!(row.worker_id.as_deref(), Some("b"), "{row:?}");
            assert_eq!(row.retry_count, 1, "the killed attempt counts: {row:?}");
        }
        assert_eq!(count_status(&db.store, Status::Running, None).await, 0);
        let status = b.stop(Duration::from_secs(10)).await;
        assert!(status.is_some_and(|s| s.success()), "b exit: {status:?}");
    })
    .await;
}

/// SIGTERM during attempts: short ones drain to SUCCESS, long ones are released to PENDING
/// without counting the attempt and another worker runs them; exit code 0. A second signal
/// exits at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_then_releases() {
    on_all_backends("sigterm", |db, scratch| async move {
        let short: Vec<i64> = vec![
            enqueue(&db.store, "sleep", json!({"seconds": 1.5}), 3, 60).await,
            enqueue(&db.store, "sleep", json!({"seconds": 1.5}), 3, 60).await,
        ];
        let long: Vec<i64> = vec![
            enqueue(&db.store, "sleep", json!({"seconds": 5}), 3, 60).await,
            enqueue(&db.store, "sleep", json!({"seconds": 5}), 3, 60).await,
        ];
        let mut a = Daemon::start(
            &scratch,
            &db,
            "worker",
            "a",
            &[("JOBU__WORKER__SHUTDOWN_TIMEOUT_SECONDS", "3")],
        );
        // Started, not only claimed: a claim whose rows arrive after the signal is released
        // whole, short attempts included (the rows are RUNNING before their attempts start).
        assert!(
            eventually(Duration::from_secs(20), || {
                let started = scratch
                    .lines("a.log")
                    .iter()
                    .filter(|l| l.contains("attempt started"))
                    .count();
                async move { started == 4 }
            })
            .await,
            "worker a never ran all four"
        );
        let store = db.store.clone();
        let status = a.stop(Duration::from_secs(15)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "exit after SIGTERM: {status:?}"
        );
        for id in &short {
            let row = execution(&db.store, *id).await;
            assert_eq!(row.status, "SUCCESS", "drained: {row:?}");
        }
        for id in &long {
            let row = execution(&db.store, *id).await;
            assert_eq!(row.status, "PENDING", "released: {row:?}");
            assert_eq!(row.retry_count, 0, "a release does not count: {row:?}");
            assert!(row.owner_token.is_none() && row.started_at.is_none());
        }
        let mut b = Daemon::start(&scratch, &db, "worker", "b", &[]);
        assert!(
            eventually(Duration::from_secs(20), || {
                let store = store.clone();
                async move { count_status(&store, Status::Success, Some("b")).await == 2 }
            })
            .await,
            "released executions did not run on b"
        );

        // A second signal does not wait for the 30 s drain.
        let id = enqueue(&db.store, "sleep", json!({"seconds": 30}), 0, 60).await;
        let started = format!("attempt started execution_id={id} ");
        assert!(
            eventually(Duration::from_secs(20), || {
                let running = scratch.lines("b.log").iter().any(|l| l.contains(&started));
                async move { running }
            })
            .await
        );
        b.signal(libc::SIGTERM);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(b.alive(), "still draining after one signal");
        b.signal(libc::SIGTERM);
        let status = b.wait_exit(Duration::from_secs(3)).await;
        assert_eq!(status.and_then(|s| s.code()), Some(128 + libc::SIGTERM));
    })
    .await;
}

/// Retries, timeouts and panics: a command that always fails with max_retry 2 runs exactly
/// 3 times and ends FAILED with retry_count 2; a sleep past its timeout ends TIMEOUT; a
/// panicking handler is recorded FAILED and the worker keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_timeouts_and_panics() {
    on_all_backends("failures", |db, scratch| async move {
        let attempts = scratch.path("attempts.txt");
        let failing = enqueue(
            &db.store,
            "shell",
            json!({"command": format!(
                "echo $JOBU_ATTEMPT >> '{}'; echo boom >&2; exit 3",
                attempts.display()
            )}),
            2,
            60,
        )
        .await;
        let slow = enqueue(&db.store, "sleep", json!({"seconds": 30}), 0, 1).await;
        let panics = enqueue(&db.store, "noop", json!({"panic": "kaboom"}), 1, 60).await;
        let mut a = Daemon::start(&scratch, &db, "worker", "a", &[]);
        let store = db.store.clone();
        let all = [failing, slow, panics];
        assert!(
            eventually(Duration::from_secs(30), || {
                let store = store.clone();
                async move {
                    for id in all {
                        let s = execution(&store, id).await.status;
                        if s == "PENDING" || s == "RUNNING" {
                            return false;
                        }
                    }
                    true
                }
            })
            .await,
            "not all final"
        );

        let row = execution(&db.store, failing).await;
        assert_eq!((row.status.as_str(), row.retry_count), ("FAILED", 2));
        let error = row.error_message.unwrap_or_default();
        assert!(
            error.contains("code 3") && error.contains("boom"),
            "{error}"
        );
        assert_eq!(scratch.lines("attempts.txt"), vec!["1", "2", "3"]);

        let row = execution(&db.store, slow).await;
        assert_eq!((row.status.as_str(), row.retry_count), ("TIMEOUT", 0));
        let ran = row.finished_at.expect("finished") - row.started_at.expect("started");
        assert!(ran < chrono::Duration::seconds(5), "timeout took {ran}");

        let row = execution(&db.store, panics).await;
        assert_eq!((row.status.as_str(), row.retry_count), ("FAILED", 1));
        let error = row.error_message.unwrap_or_default();
        assert!(error.contains("kaboom"), "{error}");

        assert!(a.alive(), "the worker survived the panics");
        let after = enqueue(&db.store, "noop", json!({}), 0, 60).await;
        assert!(
            eventually(Duration::from_secs(10), || {
                let store = store.clone();
                async move { execution(&store, after).await.status == "SUCCESS" }
            })
            .await,
            "the worker stopped working after a panic"
        );
        let status = a.stop(Duration::from_secs(10)).await;
        assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");
    })
    .await;
}

/// Overlap policy `skip` (the old allow_overlap = false) under 3 dispatchers and 2 workers: never two unfinished executions
/// of the cron, sampled all along, and the attempts' run windows never overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_overlap_under_three_dispatchers() {
    on_all_backends("overlap", |db, scratch| async move {
        let mut cron = NewCron::new("exclusive", "* * * * * *", "sleep");
        cron.overlap_policy = jobu::entities::cron_job::OverlapPolicy::Skip;
        cron.max_retry = 0;
        cron.handler_params = Some(json!({"seconds": 2.5}));
        let cron = db.store.insert_cron(&cron).await.expect("cron");

        let mut daemons: Vec<Daemon> = (0..3)
            .map(|i| Daemon::start(&scratch, &db, "dispatcher", &format!("d{i}"), &[]))
            .collect();
        for i in 0..2 {
            daemons.push(Daemon::start(
                &scratch,
                &db,
                "worker",
                &format!("w{i}"),
                &[("JOBU__WORKER__CONCURRENCY", "4")],
            ));
        }
        let store = db.store.clone();
        let sampler = tokio::spawn(async move {
            let mut max = 0;
            let end = tokio::time::Instant::now() + Duration::from_secs(15);
            while tokio::time::Instant::now() < end {
                max = max.max(unfinished(&store, cron.id).await);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            max
        });
        let max = sampler.await.expect("sampler");
        for d in &mut daemons[..3] {
            let status = d.stop(Duration::from_secs(10)).await;
            assert!(
                status.is_some_and(|s| s.success()),
                "{} exit: {status:?}",
                d.name
            );
        }
        let store = db.store.clone();
        assert!(
            eventually(Duration::from_secs(20), || {
                let store = store.clone();
                async move { unfinished(&store, cron.id).await == 0 }
            })
            .await
        );
        assert!(max <= 1, "{max} unfinished executions of one cron at once");
        // The fire times skipped while one ran are in the ledger (SKIPPED); the others ran.
        let mut rows = executions_of(&db.store, cron.id).await;
        let skipped = rows.iter().filter(|r| r.status == "SKIPPED").count();
        assert!(skipped >= 2, "{skipped} skipped fire times recorded");
        rows.retain(|r| r.status != "SKIPPED");
        assert!(rows.len() >= 3, "only {} executions", rows.len());
        rows.sort_by_key(|r| r.started_at);
        for pair in rows.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert_eq!(a.status, "SUCCESS", "{a:?}");
            assert!(
                b.started_at >= a.finished_at,
                "execution {} started before {} finished",
                b.id,
                a.id
            );
        }
    })
    .await;
}

/// `Some(state)` from /proc/PID/stat (`'Z'` for a zombie), `None` when there is no process.
fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.trim_start().chars().next()
}

/// Waits until `file` holds a pid, and returns it.
async fn pid_in(scratch: &Scratch, file: &str) -> i32 {
    let read = || {
        scratch
            .lines(file)
            .first()
            .and_then(|l| l.trim().parse().ok())
    };
    eventually(Duration::from_secs(20), || {
        let found = read().is_some();
        async move { found }
    })
    .await;
    read().unwrap_or_else(|| panic!("no pid in {file}"))
}

/// Cancels `id` (RUNNING) and returns when the request was stored.
async fn request_cancel(store: &Store, id: i64) {
    match store.cancel_execution(id).await.expect("cancel") {
        jobu::store::operator::Action::Done(row) => assert!(row.cancel_requested, "{row:?}"),
        other => panic!("cancel of {id}: {other:?}"),
    }
}

/// A shell command that records each attempt and its pid, then runs `rest`.
fn recorded(scratch: &Scratch, name: &str, rest: &str) -> serde_json::Value {
    json!({"command": format!(
        "echo $JOBU_ATTEMPT >> '{}'; echo $$ > '{}'; {rest}",
        scratch.path(&format!("{name}.attempts")).display(),
        scratch.path(&format!("{name}.pid")).display(),
    )})
}

/// An operator's cancel of a RUNNING execution wins however the attempt ends, and reaches
/// it quickly: with the default 10 s heartbeat the attempt is stopped (its process killed)
/// within about a second; an attempt that fails, whose worker is killed -9, or that a
/// SIGTERM releases after the cancel ends CANCELLED, and no attempt runs after the cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operators_cancel_always_wins() {
    on_all_backends("cancel", |db, scratch| async move {
        let slow_heartbeat = [
            ("JOBU__WORKER__LEASE_SECONDS", "30"),
            ("JOBU__WORKER__HEARTBEAT_INTERVAL_SECONDS", "10"),
            ("JOBU__WORKER__SHUTDOWN_TIMEOUT_SECONDS", "2"),
        ];
        let store = db.store.clone();
        let status_of = |id: i64| {
            let store = store.clone();
            async move { execution(&store, id).await.status }
        };

        // 1. A long attempt: stopped within about a second of the cancel, not at the
        //    heartbeat ten seconds later.
        let mut a = Daemon::start(&scratch, &db, "worker", "a", &slow_heartbeat);
        let long = enqueue(
            &db.store,
            "shell",
            recorded(&scratch, "long", "exec sleep 60"),
            3,
            120,
        )
        .await;
        let pid = pid_in(&scratch, "long.pid").await;
        let asked = tokio::time::Instant::now();
        request_cancel(&db.store, long).await;
        assert!(
            eventually(Duration::from_secs(8), || {
                let s = status_of(long);
                async move { s.await == "CANCELLED" }
            })
            .await,
            "not CANCELLED: {:?}",
            execution(&db.store, long).await
        );
        let took = asked.elapsed();
        assert!(
            took < Duration::from_millis(2500),
            "the cancel took {took:?}"
        );
        assert!(
            matches!(process_state(pid), None | Some('Z')),
            "the attempt's process still runs"
        );

        // 2. An attempt that fails right after the cancel: CANCELLED, not retried.
        let failing = enqueue(
            &db.store,
            "shell",
            recorded(&scratch, "failing", "sleep 0.6; exit 1"),
            3,
            120,
        )
        .await;
        pid_in(&scratch, "failing.pid").await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        request_cancel(&db.store, failing).await;
        assert!(
            eventually(Duration::from_secs(10), || {
                let s = status_of(failing);
                async move { s.await == "CANCELLED" }
            })
            .await,
            "failing: {:?}",
            execution(&db.store, failing).await
        );
        let status = a.stop(Duration::from_secs(10)).await;
        assert!(status.is_some_and(|s| s.success()), "a exit: {status:?}");

        // 3. The worker dies after the cancel was asked: the rescue ends it CANCELLED.
        let orphan = enqueue(
            &db.store,
            "shell",
            recorded(&scratch, "orphan", "exec sleep 60"),
            3,
            120,
        )
        .await;
        let mut b = Daemon::start(
            &scratch,
            &db,
            "worker",
            "b",
            &[("JOBU__WORKER__LEASE_SECONDS", "3")],
        );
        assert!(
            eventually(Duration::from_secs(20), || {
                let store = store.clone();
                async move { execution(&store, orphan).await.worker_id.as_deref() == Some("b") }
            })
            .await,
            "b never took the orphan"
        );
        pid_in(&scratch, "orphan.pid").await;
        b.kill9();
        request_cancel(&db.store, orphan).await;

        // 4. A shutdown releases an attempt whose cancel was just asked: CANCELLED.
        let released = enqueue(
            &db.store,
            "shell",
            recorded(&scratch, "released", "exec sleep 60"),
            3,
            120,
        )
        .await;
        let mut c = Daemon::start(&scratch, &db, "worker", "c", &slow_heartbeat);
        assert!(
            eventually(Duration::from_secs(20), || {
                let store = store.clone();
                async move { execution(&store, released).await.worker_id.as_deref() == Some("c") }
            })
            .await,
            "c never took it"
        );
        pid_in(&scratch, "released.pid").await;
        c.signal(libc::SIGTERM);
        request_cancel(&db.store, released).await;
        let status = c.wait_exit(Duration::from_secs(15)).await;
        assert!(status.is_some_and(|s| s.success()), "c exit: {status:?}");

        // A fresh worker with every attempt's retries still open has nothing to run.
        let _d = Daemon::start(&scratch, &db, "worker", "d", &[]);
        for (id, name) in [
            (failing, "failing"),
            (orphan, "orphan"),
            (released, "released"),
        ] {
            assert!(
                eventually(Duration::from_secs(20), || {
                    let s = status_of(id);
                    async move { s.await == "CANCELLED" }
                })
                .await,
                "{name}: {:?}",
                execution(&db.store, id).await
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        for (id, name) in [
            (long, "long"),
            (failing, "failing"),
            (orphan, "orphan"),
            (released, "released"),
        ] {
            let row = execution(&db.store, id).await;
            assert_eq!(row.status, "CANCELLED", "{name}: {row:?}");
            assert_eq!(row.retry_count, 0, "{name} was retried: {row:?}");
            assert_eq!(row.cancel_reason.as_deref(), Some("operator"), "{name}");
            assert_eq!(
                scratch.lines(&format!("{name}.attempts")),
                vec!["1"],
                "{name}: an attempt ran after the cancel"
            );
        }
    })
    .await;
}

/// PostgreSQL `LISTEN`/`NOTIFY`: work created by another process (here the test's own
/// store) wakes an idle `jobu worker` at once, though its poll interval is a minute; with
/// `worker.notify: false` the same worker waits for its poll.
#[tokio::test(flavor = "multi_thread")]
async fn work_created_in_another_process_wakes_an_idle_worker_on_postgres() {
    on_backends("notify", &[Backend::Postgres], |db, scratch| async move {
        let slow_poll = [("JOBU__WORKER__POLL_INTERVAL_SECONDS", "60")];
        let mut worker = Daemon::start(&scratch, &db, "worker", "w-notify", &slow_poll);
        // Until the worker's first claim (found nothing) it is not idle yet.
        tokio::time::sleep(Duration::from_secs(3)).await;
        for _ in 0..5 {
            let id = enqueue(&db.store, "noop", json!({}), 0, 10).await;
            let started = eventually(Duration::from_secs(10), || {
                let store = db.store.clone();
                async move { execution(&store, id).await.status == Status::Success.as_str() }
            })
            .await;
            assert!(started, "execution {id} was not run on a notification");
            let row = execution(&db.store, id).await;
            let waited = row.started_at.expect("started") - row.created_at;
            assert!(
                waited < chrono::Duration::seconds(5),
                "started {waited} after creation, with a 60 s poll"
            );
        }
        let status = worker.stop(Duration::from_secs(10)).await;
        assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");

        let mut quiet = Daemon::start(
            &scratch,
            &db,
            "worker",
            "w-quiet",
            &[slow_poll[0], ("JOBU__WORKER__NOTIFY", "false")],
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        let id = enqueue(&db.store, "noop", json!({}), 0, 10).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            execution(&db.store, id).await.status,
            Status::Pending.as_str(),
            "with notify off the worker waits for its poll"
        );
        let status = quiet.stop(Duration::from_secs(10)).await;
        assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");
    })
    .await;
}

/// Rows created by one dispatcher process, from its "executions created" log lines, in all
/// and (when `before` is given) in lines logged before it.
fn created_in_log(scratch: &Scratch, name: &str, before: Option<DateTime<Utc>>) -> u64 {
    let text = std::fs::read_to_string(scratch.path(&format!("{name}.log"))).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("executions created"))
        .filter(|l| {
            before.is_none_or(|limit| {
                l.split_whitespace()
                    .next()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| t.to_utc() < limit)
            })
        })
        .filter_map(|l| {
            let rest = &l[l.find(" created=")? + " created=".len()..];
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// Two dispatcher processes over 300 every-second crons, in pages of 20: each fire time is
/// created exactly once, both take a share of the work (where rows lock apart: SQLite takes
/// its writers in turn), and after one is killed (-9) the other creates every fire time,
/// without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_dispatchers_share_the_crons_and_one_covers_for_a_killed_one() {
    on_all_backends("share", |db, scratch| async move {
        const CRONS: usize = 300;
        let mut ids = Vec::with_capacity(CRONS);
        for i in 0..CRONS {
            let cron = NewCron::new(&format!("share-{i}"), "* * * * * *", "noop");
            ids.push(db.store.insert_cron(&cron).await.expect("cron").id);
        }
        let seeded = db.store.now().await.expect("clock");
        let pages = [("JOBU__DISPATCHER__BATCH_SIZE", "20")];
        let mut d0 = Daemon::start(&scratch, &db, "dispatcher", "d0", &pages);
        let mut d1 = Daemon::start(&scratch, &db, "dispatcher", "d1", &pages);
        tokio::time::sleep(Duration::from_secs(12)).await;
        let killed_at = Utc::now();
        d0.kill9();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let status = d1.stop(Duration::from_secs(10)).await;
        assert!(status.is_some_and(|s| s.success()), "d1 exit: {status:?}");
        let stopped = db.store.now().await.expect("clock");

        // Every cron, every second from shortly after it was created until the stop.
        let rows = job_execution::Entity::find()
            .all(db.store.connection())
            .await
            .expect("rows");
        let mut per: std::collections::HashMap<(i64, i64), usize> = Default::default();
        for r in &rows {
            let job = r.job_id.expect("a cron's row");
            *per.entry((job, r.scheduled_time.timestamp())).or_default() += 1;
        }
        let duplicates: Vec<_> = per.iter().filter(|(_, n)| **n > 1).collect();
        assert!(duplicates.is_empty(), "created twice: {duplicates:?}");
        let from = seeded.timestamp() + 2;
        let to = stopped.timestamp();
        assert!(to - from > 15, "window {from}..{to}");
        for id in &ids {
            for second in from..=to {
                assert!(
                    per.contains_key(&(*id, second)),
                    "cron {id}: no execution at {}",
                    rfc3339(DateTime::from_timestamp(second, 0).expect("instant"))
                );
            }
        }

        // Both took a share before the kill; the survivor took all after it.
        let d0_rows = created_in_log(&scratch, "d0", None);
        let d1_before = created_in_log(&scratch, "d1", Some(killed_at));
        let d1_rows = created_in_log(&scratch, "d1", None);
        eprintln!(
            "{}: d0 created {d0_rows}, d1 {d1_before} before the kill and {d1_rows} in all",
            db.backend.name()
        );
        // A pass logs after its last page: the killed one's last pass may be missing.
        assert!(d0_rows + d1_rows <= rows.len() as u64);
        assert!(d1_rows > d1_before, "the survivor went on");
        if db.backend != Backend::Sqlite {
            let before = d0_rows + d1_before;
            assert!(
                d0_rows * 10 >= before && d1_before * 10 >= before,
                "both dispatchers took a share: d0 {d0_rows}, d1 {d1_before} of {before}"
            );
        }
    })
    .await;
}
