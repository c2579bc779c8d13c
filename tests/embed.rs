//! The runtime embedded as a library (as `examples/custom_handler.rs` does), on each backend:
//! a Rust handler runs next to the built-ins, unknown handlers stay PENDING, misfire
//! policies apply after downtime (also to every-second crons down for days), and a disabled
//! cron stops firing within one poll.

mod common;

use std::time::Duration;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use common::process::eventually;
use common::TestDb;
use jobu::actors::supervisor::SupervisorConfig;
use jobu::actors::{Exit, Roles};
use jobu::config::Settings;
use jobu::entities::cron_job::{self, MisfirePolicy};
use jobu::entities::job_execution::{self, ParamSource, Status};
use jobu::entities::{CronJobs, JobExecutions};
use jobu::handlers::{async_trait, ExecutionContext, Handler, HandlerResult};
use jobu::store::create::NewExecution;
use jobu::store::crons::NewCron;
use jobu::store::Store;
use jobu::Runtime;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, Set};
use serde_json::{json, Value};

struct Greet;

#[async_trait]
impl Handler for Greet {
    async fn run(&self, params: Value, ctx: ExecutionContext) -> HandlerResult {
        Ok(json!({ "hello": params["name"], "attempt": ctx.attempt }))
    }
}

fn fast_settings() -> Settings {
    let mut s = Settings::default();
    s.dispatcher.min_cron_interval_seconds = 0;
    s.dispatcher.poll_interval_seconds = 0.5;
    s.worker.poll_interval_seconds = 0.2;
    s.worker.id = Some("embedded".into());
    // Tests run in parallel; none of them needs the admin HTTP API.
    s.admin.enabled = false;
    s.worker.shutdown_timeout_seconds = 2;
    s
}

/// The cron's executions that run: not its ledger's MISSED rows.
async fn rows(store: &Store, job_id: i64) -> Vec<job_execution::Model> {
    JobExecutions::find()
        .filter(job_execution::Column::JobId.eq(job_id))
        .filter(job_execution::Column::Status.ne("MISSED"))
        .all(store.connection())
        .await
        .expect("rows")
}

/// The cron's MISSED rows: (first, last, count) of the fire times each stands for.
async fn missed_rows(
    store: &Store,
    job_id: i64,
) -> Vec<(DateTime<Utc>, Option<DateTime<Utc>>, i32)> {
    JobExecutions::find()
        .filter(job_execution::Column::JobId.eq(job_id))
        .filter(job_execution::Column::Status.eq("MISSED"))
        .all(store.connection())
        .await
        .expect("rows")
        .into_iter()
        .map(|r| (r.scheduled_time, r.fire_time_until, r.fire_count))
        .collect()
}

backend_test!(
    embedded_runtime_runs_a_rust_handler,
    |db: TestDb| async move {
        let running = Runtime::new(fast_settings())
            .handler("greet", Greet)
            .start_with_store(db.store.clone())
            .await
            .expect("start");
        let mut cron = NewCron::new("greet", "* * * * * *", "greet");
        cron.handler_params = Some(json!({"name": "jobu"}));
        let cron = db.store.insert_cron(&cron).await.expect("cron");
        let now = db.store.now().await.unwrap();
        let orphan = NewExecution {
            job_id: None,
            handler_name: "nobody-has-this".into(),
            scheduled_time: now,
            run_at: now,
            params: None,
            param_source: ParamSource::Api,
            max_retry: 0,
            timeout_seconds: 10,
        };
        let orphan = match db.store.create_if_absent(&orphan).await.unwrap() {
            jobu::store::create::Created::New(id) => id,
            other => panic!("{other:?}"),
        };

        let store = db.store.clone();
        assert!(
            eventually(Duration::from_secs(15), || {
                let store = store.clone();
                async move {
                    rows(&store, cron.id)
                        .await
                        .iter()
                        .any(|r| r.status == Status::Success.as_str())
                }
            })
            .await,
            "the cron's handler never succeeded"
        );
        let done = rows(&db.store, cron.id)
            .await
            .into_iter()
            .find(|r| r.status == Status::Success.as_str())
            .unwrap();
        assert_eq!(done.result, Some(json!({"hello": "jobu", "attempt": 1})));
        assert_eq!(done.worker_id.as_deref(), Some("embedded"));

        let orphan = db.store.execution(orphan).await.unwrap().unwrap();
        assert_eq!(orphan.status, Status::Pending.as_str(), "nobody can run it");

        running.shutdown();
        assert_eq!(running.wait().await, Exit::Clean);
    }
);

backend_test!(misfire_policies_after_downtime, |db: TestDb| async move {
    // Yearly crons whose marker says the last handled fire time is 2020-01-01: every
    // dispatcher has been down since. Fire times 2020..=2026 were missed.
    let since = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
    let mut ids = Vec::new();
    for policy in [
        MisfirePolicy::Skip,
        MisfirePolicy::Latest,
        MisfirePolicy::All,
    ] {
        let mut cron = NewCron::new(policy.as_str(), "0 0 1 1 *", "noop");
        cron.misfire_policy = policy;
        let cron = db.store.insert_cron(&cron).await.unwrap();
        assert!(db
            .store
            .advance_marker(cron.id, None, since, None)
            .await
            .unwrap());
        ids.push(cron.id);
    }
    let now = db.store.now().await.unwrap();
    let new_year = |y: i32| Utc.with_ymd_and_hms(y, 1, 1, 0, 0, 0).unwrap();
    let next_new_year = new_year(now.year() + 1);
    let missed = (2020..=now.year()).count();

    let running = Runtime::new(fast_settings())
        .roles(Roles::DISPATCHER)
        .start_with_store(db.store.clone())
        .await
        .expect("start");
    let store = db.store.clone();
    let ids2 = ids.clone();
    assert!(
        eventually(Duration::from_secs(10), || {
            let store = store.clone();
            let ids = ids2.clone();
            async move {
                for id in ids {
                    let cron = store.cron(id).await.unwrap().unwrap();
                    if cron.next_fire_time != Some(next_new_year) {
                        return false;
                    }
                }
                true
            }
        })
        .await,
        "markers did not move to the next fire time"
    );
    running.shutdown();
    assert_eq!(running.wait().await, Exit::Clean);

    let skip = rows(&db.store, ids[0]).await;
    assert!(skip.is_empty(), "skip created {skip:?}");
    // The ledger: one MISSED row for all of them, or all but the one `latest` ran.
    let ledger = missed_rows(&db.store, ids[0]).await;
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0].2 as usize, missed, "{ledger:?}");
    let latest = rows(&db.store, ids[1]).await;
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0].scheduled_time, new_year(now.year()));
    let ledger = missed_rows(&db.store, ids[1]).await;
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0].2 as usize, missed - 1, "{ledger:?}");
    let all = rows(&db.store, ids[2]).await;
    assert_eq!(all.len(), missed);
    assert!(missed_rows(&db.store, ids[2]).await.is_empty());
    let cron = db.store.cron(ids[1]).await.unwrap().unwrap();
    assert_eq!(cron.last_fire_time, Some(latest[0].scheduled_time));
});

backend_test!(
    misfire_policies_after_days_of_an_every_second_cron,
    |db: TestDb| async move {
        // Every-second crons whose dispatchers were all down for three days: 259,200 missed
        // fire times. However many, `latest` runs one of them and `all` at most `max_catchup`.
        let mut settings = fast_settings();
        settings.dispatcher.max_catchup = 5;
        let grace = chrono::Duration::seconds(settings.dispatcher.misfire_grace_seconds as i64);
        let now = db.store.now().await.unwrap();
        let since =
            DateTime::from_timestamp(now.timestamp(), 0).unwrap() - chrono::Duration::days(3);
        let mut ids = Vec::new();
        for policy in [MisfirePolicy::Latest, MisfirePolicy::All] {
            let mut cron = NewCron::new(policy.as_str(), "* * * * * *", "noop");
            cron.misfire_policy = policy;
            let cron = db.store.insert_cron(&cron).await.unwrap();
            assert!(db
                .store
                .advance_marker(cron.id, None, since, None)
                .await
                .unwrap());
            ids.push(cron.id);
        }

        // Start just after a whole second of the database clock: the dispatcher's cutoff
        // (its now - grace) then falls in the same second as `started - grace` unless its
        // first tick comes almost a second later, so the last fire time it misses is the
        // whole second before `started - grace` and the first one on time comes after it.
        let started = loop {
            let t = db.store.now().await.unwrap();
            if (20..300).contains(&t.timestamp_subsec_millis()) {
                break t;
            }
            let wait = 1020 - u64::from(t.timestamp_subsec_millis().min(1000));
            tokio::time::sleep(Duration::from_millis(wait)).await;
        };
        let running = Runtime::new(settings)
            .roles(Roles::DISPATCHER)
            .start_with_store(db.store.clone())
            .await
            .expect("start");
        let store = db.store.clone();
        let ids2 = ids.clone();
        assert!(
            eventually(Duration::from_secs(20), || {
                let store = store.clone();
                let ids = ids2.clone();
                async move {
                    for id in ids {
                        let cron = store.cron(id).await.unwrap().unwrap();
                        if cron.next_fire_time.is_none_or(|m| m <= started) {
                            return false;
                        }
                    }
                    true
                }
            })
            .await,
            "markers did not move past the missed period"
        );
        // Let the dispatcher run a little longer: later ticks must not add catch-up runs.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        running.shutdown();
        assert_eq!(running.wait().await, Exit::Clean);

        let threshold = started - grace;
        // The whole second before the cutoff, as seen from `started`.
        let last_missed = DateTime::from_timestamp(threshold.timestamp(), 0).unwrap();
        let mut got = Vec::new();
        let mut want = Vec::new();
        for (id, kept) in [(ids[0], 1), (ids[1], 5)] {
            let all = rows(&db.store, id).await;
            assert!(
                all.iter().any(|r| r.scheduled_time > started),
                "cron {id}: on-time fire times were created too"
            );
            let mut missed: Vec<_> = all
                .iter()
                .map(|r| r.scheduled_time)
                .filter(|t| *t < threshold)
                .collect();
            missed.sort();
            got.push(missed);
            want.push(
                (0..kept)
                    .rev()
                    .map(|back| last_missed - chrono::Duration::seconds(back))
                    .collect::<Vec<_>>(),
            );
        }
        assert_eq!(
            got, want,
            "missed fire times that ran: [latest, all with max_catchup 5]"
        );
    }
);

backend_test!(
    disabled_cron_stops_firing_within_a_poll,
    |db: TestDb| async move {
        let cron = db
            .store
            .insert_cron(&NewCron::new("soon-disabled", "* * * * * *", "noop"))
            .await
            .unwrap();
        let running = Runtime::new(fast_settings())
            .roles(Roles::DISPATCHER)
            .start_with_store(db.store.clone())
            .await
            .expect("start");
        let store = db.store.clone();
        assert!(
            eventually(Duration::from_secs(10), || {
                let store = store.clone();
                async move { rows(&store, cron.id).await.len() >= 3 }
            })
            .await
        );
        CronJobs::update(cron_job::ActiveModel {
            id: Set(cron.id),
            is_enabled: Set(false),
            ..Default::default()
        })
        .exec(db.store.connection())
        .await
        .unwrap();
        // One poll (0.5 s) and a margin.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let after_poll = rows(&db.store, cron.id).await.len();
        let now = db.store.now().await.unwrap();
        for row in rows(&db.store, cron.id).await {
            if row.scheduled_time > now {
                assert_eq!(row.status, Status::Cancelled.as_str(), "{row:?}");
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(rows(&db.store, cron.id).await.len(), after_poll);
        let pending_ahead = JobExecutions::find()
            .filter(job_execution::Column::Status.eq(Status::Pending.as_str()))
            .filter(job_execution::Column::RunAt.gt(now))
            .count(db.store.connection())
            .await
            .unwrap();
        assert_eq!(pending_ahead, 0);
        running.shutdown();
        assert_eq!(running.wait().await, Exit::Clean);
    }
);

backend_test!(
    crashed_services_restart_then_escalate,
    |db: TestDb| async move {
        // Killing a service counts as a crash: it is restarted after a backoff, and one
        // crash too many within the window ends the runtime with an escalation.
        let policy = SupervisorConfig {
            max_restarts: 2,
            window: Duration::from_secs(60),
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_millis(100),
        };
        let running = Runtime::new(fast_settings())
            .roles(Roles::DISPATCHER)
            .supervisor(policy)
            .start_with_store(db.store.clone())
            .await
            .expect("start");
        let supervisor = running.supervisor();
        let services = || {
            let mut ids: Vec<_> = supervisor
                .get_children()
                .iter()
                .map(|c| c.get_id())
                .collect();
            ids.sort();
            ids
        };
        const SERVICES: usize = 4;
        assert_eq!(
            services().len(),
            SERVICES,
            "dispatcher, rescuer, presence and retention"
        );
        // Always the newest child: the one restarted last, so the same service each time.
        let newest = || {
            supervisor
                .get_children()
                .into_iter()
                .max_by_key(|c| c.get_id())
                .expect("a child")
        };
        for crash in 1..=2 {
            let before = services();
            newest().kill();
            assert!(
                eventually(Duration::from_secs(5), || {
                    let now = services();
                    let changed = now.len() == SERVICES && now != before;
                    async move { changed }
                })
                .await,
                "crash {crash}: the service was not restarted"
            );
        }
        // Kill the same service a third time within the window: escalation.
        newest().kill();
        let exit = tokio::time::timeout(Duration::from_secs(10), running.wait())
            .await
            .expect("the runtime ended");
        match exit {
            Exit::Escalated { child, reason } => {
                assert!(
                    !child.is_empty() && reason.contains("crashed"),
                    "{child}: {reason}"
                )
            }
            other => panic!("expected an escalation, got {other:?}"),
        }
    }
);

/// Counts its live attempts (the future is dropped when an attempt is killed) and the most
/// that were ever live at once.
#[derive(Clone, Default)]
struct Tracked {
    live: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    most: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    started: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

struct Alive(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait]
impl Handler for Tracked {
    async fn run(&self, _params: Value, _ctx: ExecutionContext) -> HandlerResult {
        use std::sync::atomic::Ordering::SeqCst;
        self.started.fetch_add(1, SeqCst);
        let now = self.live.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        let _alive = Alive(self.live.clone());
        tokio::time::sleep(Duration::from_secs(600)).await;
        Ok(Value::Null)
    }
}

backend_test!(
    a_crashed_worker_pool_releases_its_attempts_at_once,
    |db: TestDb| async move {
        // Leases of 30 s: without the release the row would stay RUNNING that long.
        let tracked = Tracked::default();
        let running = Runtime::new(fast_settings())
            .roles(Roles::WORKER)
            .handler("tracked", tracked.clone())
            .start_with_store(db.store.clone())
            .await
            .expect("start");
        let now = db.store.now().await.unwrap();
        let new = NewExecution {
            job_id: None,
            handler_name: "tracked".into(),
            scheduled_time: now,
            run_at: now,
            params: None,
            param_source: ParamSource::Api,
            max_retry: 0,
            timeout_seconds: 600,
        };
        let jobu::store::create::Created::New(id) = db.store.create_if_absent(&new).await.unwrap()
        else {
            panic!("new")
        };
        let store = db.store.clone();
        let row_of = || {
            let store = store.clone();
            async move { store.execution(id).await.unwrap().unwrap() }
        };
        assert!(
            eventually(Duration::from_secs(10), || {
                let live = tracked.live.clone();
                async move { live.load(std::sync::atomic::Ordering::SeqCst) == 1 }
            })
            .await,
            "the attempt never started"
        );
        let first = row_of().await;
        assert_eq!(first.status, Status::Running.as_str());

        // Crash the pool: the child of the supervisor that supervises the task actor.
        let pool = running
            .supervisor()
            .get_children()
            .into_iter()
            .find(|c| !c.get_children().is_empty())
            .expect("the worker pool runs the attempt");
        pool.kill();

        // Released at once (not counted) and run again by the restarted pool, well before
        // the 30 s lease would have run out.
        assert!(
            eventually(Duration::from_secs(8), || {
                let row = row_of();
                let started = tracked.started.clone();
                let old = first.owner_token.clone();
                async move {
                    let row = row.await;
                    row.owner_token.is_some()
                        && row.owner_token != old
                        && started.load(std::sync::atomic::Ordering::SeqCst) == 2
                }
            })
            .await,
            "the crashed pool's attempt was not released and rerun: {:?}",
            row_of().await
        );
        let again = row_of().await;
        assert_eq!(again.status, Status::Running.as_str());
        assert_eq!(
            again.retry_count, 0,
            "a release is not an attempt: {again:?}"
        );
        assert_eq!(
            tracked.most.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the old attempt still ran when the new one started"
        );
        running.shutdown();
        assert_eq!(running.wait().await, Exit::Clean);
    }
);

backend_test!(
    a_cron_enabled_again_within_the_lookahead_keeps_its_fire_times,
    |db: TestDb| async move {
        // Rows are created 5 s ahead; disabling cancels them, enabling again a second later
        // must run the fire times from then on, not leave them to the cancelled rows.
        let cron = db
            .store
            .insert_cron(&NewCron::new("flapping", "* * * * * *", "noop"))
            .await
            .unwrap();
        let running = Runtime::new(fast_settings())
            .roles(Roles::ALL)
            .start_with_store(db.store.clone())
            .await
            .expect("start");
        let store = db.store.clone();
        assert!(
            eventually(Duration::from_secs(10), || {
                let store = store.clone();
                async move {
                    let now = store.now().await.unwrap();
                    rows(&store, cron.id)
                        .await
                        .iter()
                        .filter(|r| r.scheduled_time > now + chrono::Duration::seconds(2))
                        .count()
                        >= 2
                }
            })
            .await,
            "no executions created ahead"
        );
        let current = db.store.cron(cron.id).await.unwrap().unwrap();
        let off = jobu::store::crons::CronChanges {
            is_enabled: Some(false),
            ..Default::default()
        };
        let disabled = db.store.update_cron(current, &off).await.unwrap().unwrap();
        let cancelled_ahead = rows(&db.store, cron.id)
            .await
            .iter()
            .filter(|r| r.status == Status::Cancelled.as_str())
            .count();
        assert!(
            cancelled_ahead >= 2,
            "disabling cancels the rows created ahead"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let on = jobu::store::crons::CronChanges {
            is_enabled: Some(true),
            ..Default::default()
        };
        db.store.update_cron(disabled, &on).await.unwrap().unwrap();
        let enabled_at = db.store.now().await.unwrap();
        tokio::time::sleep(Duration::from_secs(6)).await;
        let now = db.store.now().await.unwrap();
        // Every fire time from one second after the re-enable up to now ran (or runs).
        let window: Vec<_> = rows(&db.store, cron.id)
            .await
            .into_iter()
            .filter(|r| {
                r.scheduled_time > enabled_at + chrono::Duration::seconds(1)
                    && r.scheduled_time < now - chrono::Duration::seconds(1)
            })
            .collect();
        assert!(
            window.len() >= 3,
            "{} fire times in the window",
            window.len()
        );
        for row in &window {
            assert_eq!(
                row.status,
                Status::Success.as_str(),
                "fire time lost: {row:?}"
            );
        }
        running.shutdown();
        assert_eq!(running.wait().await, Exit::Clean);
    }
);

backend_test!(
    work_created_in_the_process_starts_without_waiting_for_a_poll,
    |db: TestDb| async move {
        let mut settings = fast_settings();
        settings.worker.poll_interval_seconds = 60.0;
        let running = Runtime::new(settings)
            .roles(Roles::WORKER)
            .start_with_store(db.store.clone())
            .await
            .expect("start");
        // The pool's first claim finds nothing; from then on it would sleep for a minute.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for _ in 0..5 {
            let row = db
                .store
                .create_adhoc("noop", None, None, 0, 10)
                .await
                .expect("create");
            let done = eventually(Duration::from_secs(10), || {
                let store = db.store.clone();
                async move {
                    let row = store.execution(row.id).await.unwrap().unwrap();
                    row.status == Status::Success.as_str()
                }
            })
            .await;
            assert!(
                done,
                "execution {} did not run on the in-process wake-up",
                row.id
            );
            let after = db.store.execution(row.id).await.unwrap().unwrap();
            let waited = after.started_at.expect("started") - row.created_at;
            assert!(
                waited < chrono::Duration::seconds(5),
                "started {waited} after creation, with a 60 s poll"
            );
        }
        running.shutdown();
        assert_eq!(running.wait().await, Exit::Clean);
    }
);
