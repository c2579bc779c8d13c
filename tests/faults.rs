//! Network faults between real `jobu` processes and their database server, injected by a TCP
//! proxy in the test ([`common::proxy`]): a partition, a lost reply, a slow network. Each
//! test checks from outside the binary (the rows, the shell handler's own output, the logs)
//! that the runtime keeps its promises under the fault: an execution never runs on two
//! workers at once, a claim whose reply (or whose commit's reply) was lost still runs
//! exactly once, and leases hold on a slow network at high concurrency.
//!
//! PostgreSQL and MariaDB only: SQLite has no network between a worker and its database,
//! so there is nothing to cut. Each test runs both backends at once; the tests themselves
//! run one at a time ([`SERIAL`]) because their assertions are about timing.
//!
//! `JOBU_TEST_BIN=<path to another jobu>` runs them against another build (see
//! [`common::process::bin`]), e.g. one from before the fixes these tests guard.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::process::{enqueue, eventually, on_backends, url_via_port, Daemon, Scratch};
use common::proxy::{Mode, Proxy};
use common::{Backend, TestDb};
use jobu::entities::job_execution::{self, ParamSource, Status};
use jobu::store::Store;
use sea_orm::{ActiveValue::Set, EntityTrait, QueryOrder};
use serde_json::json;
use tokio::time::Instant;

/// The backends with a network between worker and database.
const NETWORKED: [Backend; 2] = [Backend::Postgres, Backend::MySql];

/// One test at a time: they measure leases and deadlines on a small shared machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `n` ad-hoc executions of `handler` due now, inserted in one statement.
async fn enqueue_many(
    store: &Store,
    n: usize,
    handler: &str,
    params: serde_json::Value,
    max_retry: i32,
) {
    let now = store.now().await.expect("clock");
    let rows: Vec<job_execution::ActiveModel> = (0..n)
        .map(|i| job_execution::ActiveModel {
            job_id: Set(None),
            handler_name: Set(handler.to_string()),
            scheduled_time: Set(now),
            run_at: Set(now - chrono::Duration::milliseconds(i as i64)),
            status: Set(Status::Pending.as_str().to_string()),
            params: Set(Some(params.clone())),
            param_source: Set(ParamSource::Api.as_str().to_string()),
            retry_count: Set(0),
            max_retry: Set(max_retry),
            timeout_seconds: Set(300),
            cancel_requested: Set(false),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        })
        .collect();
    job_execution::Entity::insert_many(rows)
        .exec(store.connection())
        .await
        .expect("enqueue executions");
}

async fn execution(store: &Store, id: i64) -> job_execution::Model {
    store.execution(id).await.expect("read").expect("exists")
}

async fn all_executions(store: &Store) -> Vec<job_execution::Model> {
    job_execution::Entity::find()
        .order_by_asc(job_execution::Column::Id)
        .all(store.connection())
        .await
        .expect("read executions")
}

fn is_final(status: &str) -> bool {
    status.parse::<Status>().is_ok_and(|s| s.is_final())
}

/// The process log of `name` in `scratch`.
fn log_of(scratch: &Scratch, name: &str) -> String {
    std::fs::read_to_string(scratch.path(&format!("{name}.log"))).unwrap_or_default()
}

/// Waits until `name`'s pool is up (its startup queries are done).
async fn wait_pool_started(scratch: &Scratch, name: &str) {
    assert!(
        eventually(Duration::from_secs(20), || async {
            log_of(scratch, name).contains("worker pool started")
        })
        .await,
        "worker {name} did not start"
    );
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// One line of the heartbeat file: `worker attempt unix-time`.
#[derive(Debug, Clone, PartialEq)]
struct Beat {
    worker: String,
    attempt: u32,
    at: f64,
}

/// The heartbeat file's complete lines (one being written may be cut short: skipped).
fn beats(scratch: &Scratch, file: &str) -> Vec<Beat> {
    scratch
        .lines(file)
        .iter()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let worker = parts.next()?.to_string();
            let attempt = parts.next()?.parse().ok()?;
            let at: &str = parts.next()?;
            // `date +%s.%N`: a cut line has fewer than nine digits of nanoseconds.
            if at.split('.').nth(1).is_none_or(|ns| ns.len() != 9) || parts.next().is_some() {
                return None;
            }
            Some(Beat {
                worker,
                attempt,
                at: at.parse().ok()?,
            })
        })
        .collect()
}

/// A partition between worker `a` and the database (its connections hang, nothing errors)
/// while `a` runs a shell attempt that writes a heartbeat line every 0.1 s. Worker `b`,
/// which reaches the database directly, rescues the execution once `a`'s lease has expired
/// and runs it. The partition begins just after one of `a`'s renewals. `a` must have
/// stopped its attempt (killed the command) before `b` started it, with time to spare, and
/// within its lease of the partition, though `a` itself is still alive: "never on two
/// workers at once".
///
/// `b` polls every 0.1 s so it starts the rescued row as early as the protocol allows:
/// that is the schedule most likely to catch an overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitioned_worker_stops_before_another_starts() {
    let _serial = SERIAL.lock().await;
    on_backends("partition", &NETWORKED, |db, scratch| async move {
        /// Lease of both workers (base_env), in seconds.
        const LEASE: f64 = 4.0;
        /// `b` may start at least this long after `a`'s last line. By design the gap is
        /// 1.5 heartbeats (a stops half a heartbeat before the lease ends, the rescuer waits
        /// one heartbeat past it), less the 0.1 s between lines.
        const MIN_GAP: f64 = 0.5;

        let proxy = Proxy::for_url(&db.url).await;
        let via_proxy = url_via_port(&db.url, proxy.port());
        let file = "heartbeat.txt";
        let command = format!(
            "while true; do echo \"$JOBU_WORKER_ID $JOBU_ATTEMPT $(date +%s.%N)\" >> '{}'; \
             sleep 0.1; done",
            scratch.path(file).display()
        );
        let id = enqueue(&db.store, "shell", json!({ "command": command }), 3, 120).await;

        let mut a = Daemon::start(
            &scratch,
            &db,
            "worker",
            "a",
            &[("JOBU__DATABASES__DEFAULT__URL", via_proxy.as_str())],
        );
        assert!(
            eventually(Duration::from_secs(20), || async {
                beats(&scratch, file).iter().any(|b| b.worker == "a")
            })
            .await,
            "worker a never ran the attempt"
        );
        let _b = Daemon::start(
            &scratch,
            &db,
            "worker",
            "b",
            &[("JOBU__WORKER__POLL_INTERVAL_SECONDS", "0.1")],
        );
        wait_pool_started(&scratch, "b").await;
        // Partition right after a renewal, so a's deadline counts from a renewal's, not
        // from the claim's.
        let claimed_lease = execution(&db.store, id).await.lease_expires_at;
        assert!(
            eventually(Duration::from_secs(10), || async {
                execution(&db.store, id).await.lease_expires_at > claimed_lease
            })
            .await,
            "worker a never renewed its lease"
        );

        proxy.set(Mode::Blackhole);
        let partitioned_at = unix_now();
        assert!(
            eventually(Duration::from_secs(20), || async {
                beats(&scratch, file).iter().any(|b| b.worker == "b")
            })
            .await,
            "worker b never ran the execution after a was cut off"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;

        let beats = beats(&scratch, file);
        assert!(
            a.alive(),
            "worker a exited; it should only have been cut off"
        );
        let of = |w: &str| beats.iter().filter(|b| b.worker == w).collect::<Vec<_>>();
        let (of_a, of_b) = (of("a"), of("b"));
        let others: Vec<&Beat> = beats
            .iter()
            .filter(|b| b.worker != "a" && b.worker != "b")
            .collect();
        assert!(others.is_empty(), "lines of unknown workers: {others:?}");
        let first_b = of_b.iter().map(|b| b.at).fold(f64::INFINITY, f64::min);
        let last_a = of_a.iter().map(|b| b.at).fold(f64::NEG_INFINITY, f64::max);
        eprintln!(
            "{}: partition at {partitioned_at:.3}; a's last line {:+.3} s; b's first line \
             {:+.3} s (gap {:.3} s)",
            db.backend.name(),
            last_a - partitioned_at,
            first_b - partitioned_at,
            first_b - last_a
        );
        let overlapping: Vec<String> = of_a
            .iter()
            .filter(|b| b.at >= first_b)
            .map(|b| format!("{:.3}", b.at))
            .collect();
        assert!(
            overlapping.is_empty(),
            "the execution ran on two workers at once: b started it at {first_b:.3}, and a \
             kept running it until {last_a:.3} ({:.3} s of overlap; a's lines at or after \
             b's first: {}); the partition began at {partitioned_at:.3}",
            last_a - first_b,
            overlapping.join(" ")
        );
        assert!(
            first_b - last_a >= MIN_GAP,
            "b started the execution only {:.3} s after a's last line ({last_a:.3} -> \
             {first_b:.3}), less than the {MIN_GAP} s the lease margin and rescue grace \
             must leave; the partition began at {partitioned_at:.3}",
            first_b - last_a
        );
        assert!(
            last_a - partitioned_at < LEASE,
            "a kept running {:.3} s into the partition (until {last_a:.3}), past its {LEASE} s \
             lease",
            last_a - partitioned_at
        );
        let attempts_a: Vec<u32> = of_a.iter().map(|b| b.attempt).collect();
        assert!(
            attempts_a.iter().all(|&n| n == 1),
            "a's attempts: {attempts_a:?}"
        );
        let attempts_b: Vec<u32> = of_b.iter().map(|b| b.attempt).collect();
        assert!(
            attempts_b.iter().all(|&n| n == 2),
            "b's attempts: {attempts_b:?}"
        );

        let row = execution(&db.store, id).await;
        assert_eq!(
            (
                row.status.as_str(),
                row.worker_id.as_deref(),
                row.retry_count
            ),
            ("RUNNING", Some("b"), 1),
            "the rescued execution should be b's second attempt: {row:?}"
        );
        drop(proxy);
    })
    .await;
}

/// The reply to worker `a`'s claim is lost (the proxy cuts the connection on the first
/// server message that carries the execution's params: PostgreSQL's `UPDATE … RETURNING`,
/// MariaDB's read-back after the claim's commit), after the claim committed. The worker
/// resolves the claim by its token and runs the execution: it ends SUCCESS, having run
/// once, with no attempt charged (max_retry 0 would otherwise make it FAILED).
///
/// (A MariaDB claim that reads its rows back *inside* its transaction loses only an
/// uncommitted claim here, which the server rolls back: harmless. The reply that can be
/// lost after such a claim committed is the `COMMIT`'s, cut by the next test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claim_with_a_lost_reply_runs_once() {
    let _serial = SERIAL.lock().await;
    on_backends("lost_claim", &NETWORKED, |db, scratch| async move {
        lost_claim_reply(db, scratch, |marker| {
            Mode::CutReplyContaining(marker.as_bytes().to_vec())
        })
        .await
    })
    .await;
}

/// MariaDB claims in a transaction (pick ids, update them, commit): here the reply to the
/// claim's `COMMIT` is lost, though the commit took place. As above, the worker resolves
/// the claim by its token and runs the execution once, charging nothing. (PostgreSQL
/// claims in one statement, whose reply the test above cuts.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claim_with_a_lost_commit_reply_runs_once() {
    let _serial = SERIAL.lock().await;
    on_backends("lost_commit", &[Backend::MySql], |db, scratch| async move {
        lost_claim_reply(db, scratch, |_| Mode::CutReplyToRequest {
            // The claim's UPDATE, prepared on its connection the first time a claim takes
            // a row (the statement text goes over the wire once per connection).
            after: b"SET status = 'RUNNING', owner_token = ".to_vec(),
            request: b"COMMIT".to_vec(),
        })
        .await
    })
    .await;
}

/// Worker `a` alone, through the proxy in the mode `cut(marker)` returns, set before the
/// execution (a shell command that writes a unique marker) exists. The claim's reply is
/// lost; the execution must still end SUCCESS, with retry_count 0, having run once.
async fn lost_claim_reply(db: TestDb, scratch: Arc<Scratch>, cut: impl Fn(&str) -> Mode) {
    let proxy = Proxy::for_url(&db.url).await;
    let via_proxy = url_via_port(&db.url, proxy.port());
    let mut a = Daemon::start(
        &scratch,
        &db,
        "worker",
        "a",
        &[("JOBU__DATABASES__DEFAULT__URL", via_proxy.as_str())],
    );
    wait_pool_started(&scratch, "a").await;

    let marker = format!("CUT-{}", uuid::Uuid::new_v4().simple());
    proxy.set(cut(&marker));
    let out = scratch.path("out.txt");
    let command = format!("echo {marker} >> '{}'", out.display());
    let id = enqueue(&db.store, "shell", json!({ "command": command }), 0, 60).await;

    let store = db.store.clone();
    let done = eventually(Duration::from_secs(20), || {
        let store = store.clone();
        async move { is_final(&execution(&store, id).await.status) }
    })
    .await;
    let row = execution(&db.store, id).await;
    let lines = scratch.lines("out.txt");
    assert_eq!(
        proxy.cuts(),
        1,
        "the proxy never saw the claim's reply (mode now {:?}); row: {row:?}",
        proxy.mode()
    );
    assert!(
        done,
        "the execution is still {} after 20 s: {row:?}",
        row.status
    );
    assert_eq!(
        (row.status.as_str(), row.retry_count),
        ("SUCCESS", 0),
        "the claim whose reply was lost was not resolved: the execution ended {} with \
         retry_count {} (error: {:?}), and the command ran {} time(s)",
        row.status,
        row.retry_count,
        row.error_message,
        lines.len()
    );
    assert_eq!(lines, vec![marker], "the command's output");
    assert!(
        log_of(&scratch, "a")
            .contains("claim failed with an unknown outcome; resolved by its token"),
        "the execution ran once, but a's log does not say that a claim with an unknown \
         outcome was resolved by its token"
    );
    let status = a.stop(Duration::from_secs(10)).await;
    assert!(status.is_some_and(|s| s.success()), "a exit: {status:?}");
}

/// 200 attempts at once on one worker whose every statement waits 20 ms on the way to the
/// database: each heartbeat must still renew all leases well within the lease, so none is
/// lost, nothing is rescued, nothing runs twice, and all 200 end SUCCESS on the first
/// attempt in about the time one of them takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_hold_at_concurrency_200_on_a_slow_network() {
    let _serial = SERIAL.lock().await;
    on_backends("slow_net", &NETWORKED, |db, scratch| async move {
        const N: usize = 200;
        const SLEEP_SECONDS: u64 = 12;
        const DELAY: Duration = Duration::from_millis(20);
        /// Claiming 200 rows and writing 200 outcomes through the delay.
        const OVERHEAD: Duration = Duration::from_secs(10);

        let proxy = Proxy::for_url(&db.url).await;
        let via_proxy = url_via_port(&db.url, proxy.port());
        let n = N.to_string();
        let mut a = Daemon::start(
            &scratch,
            &db,
            "worker",
            "a",
            &[
                ("JOBU__DATABASES__DEFAULT__URL", via_proxy.as_str()),
                ("JOBU__WORKER__CONCURRENCY", n.as_str()),
                ("JOBU__WORKER__CLAIM_BATCH_SIZE", n.as_str()),
            ],
        );
        wait_pool_started(&scratch, "a").await;
        proxy.set(Mode::Delay(DELAY));

        let started = Instant::now();
        enqueue_many(
            &db.store,
            N,
            "sleep",
            json!({ "seconds": SLEEP_SECONDS }),
            3,
        )
        .await;
        let limit = Duration::from_secs(SLEEP_SECONDS) + OVERHEAD + Duration::from_secs(10);
        let mut rows;
        loop {
            rows = all_executions(&db.store).await;
            let finished = rows.iter().all(|r| is_final(&r.status));
            let went_wrong = rows
                .iter()
                .any(|r| r.retry_count > 0 || (is_final(&r.status) && r.status != "SUCCESS"));
            if finished || went_wrong || started.elapsed() >= limit {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let elapsed = started.elapsed();
        assert_eq!(rows.len(), N, "executions");
        eprintln!(
            "{}: {N} attempts of {SLEEP_SECONDS} s through a {DELAY:?} delay: {:.1} s",
            db.backend.name(),
            elapsed.as_secs_f64()
        );

        let log = log_of(&scratch, "a");
        let stopped = log.matches("stopping the attempt").count();
        let rescued: Vec<String> = rows
            .iter()
            .filter(|r| r.retry_count > 0 || r.status != "SUCCESS" && is_final(&r.status))
            .map(|r| {
                format!(
                    "{} ({} retry_count {}: {})",
                    r.id,
                    r.status,
                    r.retry_count,
                    r.error_message.as_deref().unwrap_or("-")
                )
            })
            .collect();
        assert!(
            rescued.is_empty(),
            "{} of {N} executions lost their lease after {:.1} s ({stopped} attempts stopped \
             by the worker, {} rescues in its log); e.g. {}",
            rescued.len(),
            elapsed.as_secs_f64(),
            log.matches("lease expired: execution rescued").count(),
            rescued[..rescued.len().min(5)].join(", ")
        );
        let unfinished: Vec<String> = rows
            .iter()
            .filter(|r| r.status != "SUCCESS")
            .map(|r| format!("{} {}", r.id, r.status))
            .collect();
        assert!(
            unfinished.is_empty(),
            "{} of {N} executions not SUCCESS after {:.1} s: {}",
            unfinished.len(),
            elapsed.as_secs_f64(),
            unfinished[..unfinished.len().min(10)].join(", ")
        );
        assert!(
            elapsed <= Duration::from_secs(SLEEP_SECONDS) + OVERHEAD,
            "200 attempts of {SLEEP_SECONDS} s at once took {:.1} s",
            elapsed.as_secs_f64()
        );
        let runs = log.matches("attempt started").count();
        assert_eq!(runs, N, "attempts started in a's log");
        assert_eq!(stopped, 0, "attempts stopped by the worker");
        let status = a.stop(Duration::from_secs(15)).await;
        assert!(status.is_some_and(|s| s.success()), "a exit: {status:?}");
    })
    .await;
}

/// PostgreSQL wake-ups survive a partition of the LISTEN connection: a worker idling with a
/// one-minute poll notices the silent connection by its ping, reconnects once the network is
/// back, and work another process creates afterwards still starts at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_listener_reconnects_and_wakes_the_worker_again() {
    let _serial = SERIAL.lock().await;
    on_backends(
        "listen_cut",
        &[Backend::Postgres],
        |db, scratch| async move {
            let proxy = Proxy::for_url(&db.url).await;
            let via_proxy = url_via_port(&db.url, proxy.port());
            let mut w = Daemon::start(
                &scratch,
                &db,
                "worker",
                "w",
                &[
                    ("JOBU__DATABASES__DEFAULT__URL", via_proxy.as_str()),
                    ("JOBU__DATABASES__DEFAULT__CONNECT_TIMEOUT_SECONDS", "3"),
                    ("JOBU__WORKER__POLL_INTERVAL_SECONDS", "60"),
                ],
            );
            wait_pool_started(&scratch, "w").await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            proxy.set(Mode::Blackhole);
            assert!(
                eventually(Duration::from_secs(30), || async {
                    log_of(&scratch, "w").contains("does not answer")
                })
                .await,
                "the worker never noticed its silent listener"
            );
            proxy.set(Mode::Forward);
            assert!(
                eventually(Duration::from_secs(60), || async {
                    log_of(&scratch, "w").contains("listening for due work again")
                })
                .await,
                "the listener never came back"
            );
            let id = enqueue(&db.store, "noop", json!({}), 0, 10).await;
            assert!(
                eventually(Duration::from_secs(5), || async {
                    execution(&db.store, id).await.status == Status::Success.as_str()
                })
                .await,
                "work created after the reconnect waited for the poll"
            );
            let status = w.stop(Duration::from_secs(15)).await;
            assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");
        },
    )
    .await;
}
