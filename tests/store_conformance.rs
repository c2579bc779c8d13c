//! The store conformance suite: every protocol of `jobu::store`, written once and run on
//! SQLite, PostgreSQL and MySQL/MariaDB (each test gets its own database). Races use
//! separate connection pools per contender, as separate processes would, and are judged by
//! counting rows afterwards.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use jobu::entities::job_execution::{self, CancelReason, ParamSource, Status};
use jobu::entities::{CronJobs, JobExecutions};
use jobu::store::claim::{new_token, ClaimRequest};
use jobu::store::create::{Created, NewExecution};
use jobu::store::crons::{CronChanges, NewCron};
use jobu::store::finish::{End, Finish, Finished, FINISH_CHUNK};
use jobu::store::operator::Action;
use jobu::store::queries::ExecutionFilter;
use jobu::store::transition::{FailOutcome, Failure, Lease, Released};
use jobu::store::workers::Presence;
use jobu::store::Store;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, Set};
use tokio::sync::Barrier;

use common::TestDb;

const HANDLER: &str = "noop";

fn handlers() -> Vec<String> {
    vec![HANDLER.to_string()]
}

/// A claim request with a fresh token (leaked: a test makes a bounded number of claims).
fn claim_req<'a>(worker: &'a str, handlers: &'a [String], limit: u32) -> ClaimRequest<'a> {
    ClaimRequest {
        worker_id: worker,
        handlers,
        limit,
        lease_seconds: 30.0,
        token: Box::leak(new_token().into_boxed_str()),
    }
}

fn execution(job_id: Option<i64>, scheduled: DateTime<Utc>, max_retry: i32) -> NewExecution {
    NewExecution {
        job_id,
        handler_name: HANDLER.to_string(),
        scheduled_time: scheduled,
        run_at: scheduled,
        params: Some(serde_json::json!({"n": 1})),
        param_source: ParamSource::Cron,
        max_retry,
        timeout_seconds: 300,
    }
}

/// Inserts `n` ad-hoc PENDING executions that are due now, in bulk.
async fn seed_pending(store: &Store, n: usize, max_retry: i32) {
    let due = store.now().await.expect("db clock") - Duration::seconds(5);
    let rows: Vec<job_execution::ActiveModel> = (0..n)
        .map(|i| job_execution::ActiveModel {
            job_id: Set(None),
            handler_name: Set(HANDLER.to_string()),
            scheduled_time: Set(due),
            run_at: Set(due + Duration::milliseconds(i as i64 % 1000)),
            status: Set(Status::Pending.as_str().to_string()),
            params: Set(None),
            param_source: Set(ParamSource::Api.as_str().to_string()),
            retry_count: Set(0),
            max_retry: Set(max_retry),
            timeout_seconds: Set(300),
            cancel_requested: Set(false),
            created_at: Set(due),
            updated_at: Set(due),
            ..Default::default()
        })
        .collect();
    for chunk in rows.chunks(500) {
        JobExecutions::insert_many(chunk.to_vec())
            .exec(store.connection())
            .await
            .expect("seed executions");
    }
}

async fn count_status(store: &Store, status: Status) -> u64 {
    JobExecutions::find()
        .filter(job_execution::Column::Status.eq(status.as_str()))
        .count(store.connection())
        .await
        .expect("count")
}

async fn claim_one(store: &Store, worker: &str) -> job_execution::Model {
    let h = handlers();
    let mut rows = store.claim(&claim_req(worker, &h, 1)).await.expect("claim");
    assert_eq!(rows.len(), 1, "expected one claimable execution");
    rows.remove(0)
}

backend_test!(migrations_are_idempotent, |db: TestDb| async move {
    assert_eq!(db.store.pending_migrations().await.unwrap(), 0);
    assert_eq!(
        db.store.migrate().await.unwrap(),
        0,
        "second run applies nothing"
    );
    assert_eq!(
        CronJobs::find().count(db.store.connection()).await.unwrap(),
        0
    );
});

backend_test!(
    migrations_go_down_one_at_a_time_and_up_again,
    |db: TestDb| async move {
        use migration::{Migrator, MigratorTrait};
        // Every `down` runs on a schema with rows in it (an operator rolling back a release
        // has data), then the whole set comes back and the store works on it.
        seed_pending(&db.store, 3, 0).await;
        let conn = db.store.connection();
        let total = Migrator::migrations().len();
        for left in (0..total).rev() {
            Migrator::down(conn, Some(1))
                .await
                .unwrap_or_else(|e| panic!("down to {left} migrations: {e}"));
            assert_eq!(
                Migrator::get_applied_migrations(conn).await.unwrap().len(),
                left
            );
        }
        assert_eq!(db.store.migrate().await.unwrap(), total);
        seed_pending(&db.store, 2, 0).await;
        let row = claim_one(&db.store, "w1").await;
        let token = row.owner_token.clone().unwrap();
        assert!(db.store.succeed(row.id, &token, None).await.unwrap());
        assert_eq!(count_status(&db.store, Status::Success).await, 1);
        assert_eq!(count_status(&db.store, Status::Pending).await, 1);
    }
);

backend_test!(
    eight_claimers_race_over_5000_rows,
    |db: TestDb| async move {
        const ROWS: usize = 5000;
        const CLAIMERS: usize = 8;
        seed_pending(&db.store, ROWS, 3).await;

        let barrier = Arc::new(Barrier::new(CLAIMERS));
        let mut tasks = Vec::new();
        for c in 0..CLAIMERS {
            let store = db.new_store(2).await;
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                let worker = format!("claimer-{c}");
                let h = handlers();
                let mut mine: Vec<(i64, String)> = Vec::new();
                barrier.wait().await;
                loop {
                    let batch = store
                        .claim(&claim_req(&worker, &h, 25))
                        .await
                        .expect("claim");
                    if batch.is_empty() {
                        break;
                    }
                    assert!(batch.len() <= 25, "a claim of 25 took {}", batch.len());
                    for row in batch {
                        assert_eq!(row.status, Status::Running.as_str());
                        assert_eq!(row.worker_id.as_deref(), Some(worker.as_str()));
                        mine.push((row.id, row.owner_token.expect("token on claimed row")));
                    }
                }
                let _ = store.close().await;
                mine
            }));
        }
        let mut seen: HashMap<i64, String> = HashMap::new();
        let mut claimers_with_rows = 0;
        for task in tasks {
            let mine = task.await.expect("claimer task");
            if !mine.is_empty() {
                claimers_with_rows += 1;
            }
            for (id, token) in mine {
                assert!(
                    seen.insert(id, token).is_none(),
                    "execution {id} claimed twice"
                );
            }
        }
        assert_eq!(seen.len(), ROWS, "every row claimed exactly once");
        assert!(claimers_with_rows > 1, "the claimers did not actually race");
        assert_eq!(count_status(&db.store, Status::Running).await, ROWS as u64);
        assert_eq!(count_status(&db.store, Status::Pending).await, 0);
        // The row's token is the one its claimer was handed.
        let rows = JobExecutions::find()
            .all(db.store.connection())
            .await
            .unwrap();
        for row in rows {
            assert_eq!(row.owner_token.as_ref(), seen.get(&row.id));
        }
    }
);

backend_test!(
    four_creators_race_over_1000_fire_times,
    |db: TestDb| async move {
        const FIRES: usize = 1000;
        const CREATORS: usize = 4;
        let cron = db
            .store
            .insert_cron(&NewCron::new("race", "* * * * *", HANDLER))
            .await
            .expect("cron");
        let cron_id = cron.id;
        let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let fires: Arc<Vec<DateTime<Utc>>> = Arc::new(
            (0..FIRES)
                .map(|i| base + Duration::minutes(i as i64))
                .collect(),
        );

        let barrier = Arc::new(Barrier::new(CREATORS));
        let mut tasks = Vec::new();
        for _ in 0..CREATORS {
            let store = db.new_store(2).await;
            let (barrier, fires) = (barrier.clone(), fires.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let mut new = 0usize;
                for &t in fires.iter() {
                    if store
                        .create_if_absent(&execution(Some(cron_id), t, 3))
                        .await
                        .expect("create")
                        .is_new()
                    {
                        new += 1;
                    }
                }
                let _ = store.close().await;
                new
            }));
        }
        let mut total_new = 0;
        for task in tasks {
            total_new += task.await.expect("creator task");
        }
        assert_eq!(
            total_new, FIRES,
            "the creators' new counts add up to the fire times"
        );
        let rows = JobExecutions::find()
            .all(db.store.connection())
            .await
            .unwrap();
        assert_eq!(rows.len(), FIRES);
        let distinct: HashSet<_> = rows.iter().map(|r| r.scheduled_time).collect();
        assert_eq!(distinct.len(), FIRES);
        assert!(rows.iter().all(|r| r.job_id == Some(cron.id)));
    }
);

backend_test!(create_reports_new_then_exists, |db: TestDb| async move {
    let cron = db
        .store
        .insert_cron(&NewCron::new("once", "0 * * * *", HANDLER))
        .await
        .unwrap();
    let t = Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap();
    let first = db
        .store
        .create_if_absent(&execution(Some(cron.id), t, 3))
        .await
        .unwrap();
    let Created::New(id) = first else {
        panic!("first insert must be new, got {first:?}")
    };
    assert_eq!(
        db.store
            .create_if_absent(&execution(Some(cron.id), t, 3))
            .await
            .unwrap(),
        Created::Exists
    );
    // Ad-hoc runs have no cron and never collide.
    for _ in 0..2 {
        assert!(db
            .store
            .create_if_absent(&execution(None, t, 3))
            .await
            .unwrap()
            .is_new());
    }
    let row = db.store.execution(id).await.unwrap().expect("row");
    assert_eq!(row.status, Status::Pending.as_str());
    assert_eq!(row.scheduled_time, t);
    assert_eq!(row.params, Some(serde_json::json!({"n": 1})));
    // A cron that does not exist is an error, not a silent "exists".
    assert!(db
        .store
        .create_if_absent(&execution(Some(cron.id + 1000), t, 3))
        .await
        .is_err());
});

backend_test!(
    instants_survive_2038_with_microseconds,
    |db: TestDb| async move {
        let t = Utc.with_ymd_and_hms(2100, 12, 31, 23, 59, 59).unwrap()
            + Duration::microseconds(123_456);
        let Created::New(id) = db
            .store
            .create_if_absent(&execution(None, t, 0))
            .await
            .unwrap()
        else {
            panic!("new row expected")
        };
        let row = db.store.execution(id).await.unwrap().unwrap();
        assert_eq!(row.scheduled_time, t);
        let clock = db.store.now().await.unwrap();
        assert!(
            (clock - Utc::now()).num_seconds().abs() < 60,
            "db clock is UTC: {clock}"
        );
    }
);

backend_test!(
    claim_takes_due_rows_of_known_handlers_oldest_first,
    |db: TestDb| async move {
        let now = db.store.now().await.unwrap();
        let mut future = execution(None, now, 0);
        future.run_at = now + Duration::hours(1);
        db.store.create_if_absent(&future).await.unwrap();
        let mut other = execution(None, now - Duration::seconds(30), 0);
        other.handler_name = "other".into();
        other.run_at = other.scheduled_time;
        db.store.create_if_absent(&other).await.unwrap();
        let later = execution(None, now - Duration::seconds(10), 0);
        let older = execution(None, now - Duration::seconds(20), 0);
        let Created::New(later_id) = db.store.create_if_absent(&later).await.unwrap() else {
            panic!()
        };
        let Created::New(older_id) = db.store.create_if_absent(&older).await.unwrap() else {
            panic!()
        };

        let h = handlers();
        let got = db.store.claim(&claim_req("w", &h, 10)).await.unwrap();
        assert_eq!(
            got.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![older_id, later_id]
        );
        let lease = got[0].lease_expires_at.expect("lease set");
        assert!(
            lease > now + Duration::seconds(20),
            "lease on the database clock: {lease}"
        );
        assert!(db
            .store
            .claim(&claim_req("w", &h, 10))
            .await
            .unwrap()
            .is_empty());
        let empty: Vec<String> = Vec::new();
        assert!(db
            .store
            .claim(&claim_req("w", &empty, 10))
            .await
            .unwrap()
            .is_empty());
        assert_eq!(count_status(&db.store, Status::Pending).await, 2);
    }
);

backend_test!(stale_token_changes_nothing, |db: TestDb| async move {
    seed_pending(&db.store, 1, 3).await;
    let row = claim_one(&db.store, "w1").await;
    let token = row.owner_token.clone().unwrap();
    let stale = uuid::Uuid::new_v4().to_string();

    assert!(!db.store.succeed(row.id, &stale, None).await.unwrap());
    assert_eq!(
        db.store
            .fail(row.id, &stale, Failure::Failed, "x", 0.0)
            .await
            .unwrap(),
        None
    );
    assert_eq!(db.store.release(row.id, &stale).await.unwrap(), None);
    assert!(!db.store.cancelled(row.id, &stale, "x").await.unwrap());
    assert_eq!(
        db.store.renew_lease(row.id, &stale, 30.0).await.unwrap(),
        Lease::Lost
    );
    let after = db.store.execution(row.id).await.unwrap().unwrap();
    assert_eq!(after, row, "a stale token must not change the row");

    assert!(db
        .store
        .succeed(row.id, &token, Some(serde_json::json!({"ok": true})))
        .await
        .unwrap());
    // Once final, even the real token changes nothing.
    assert!(!db.store.succeed(row.id, &token, None).await.unwrap());
    assert_eq!(
        db.store.renew_lease(row.id, &token, 30.0).await.unwrap(),
        Lease::Lost
    );
    let done = db.store.execution(row.id).await.unwrap().unwrap();
    assert_eq!(done.status, Status::Success.as_str());
    assert_eq!(done.result, Some(serde_json::json!({"ok": true})));
    assert!(done.finished_at.is_some() && done.owner_token.is_none());
});

backend_test!(failures_retry_then_end_final, |db: TestDb| async move {
    // max_retry = 2: three attempts, then FAILED with retry_count 2.
    seed_pending(&db.store, 1, 2).await;
    for attempt in 0..3 {
        let row = claim_one(&db.store, "w").await;
        assert_eq!(row.retry_count, attempt);
        let token = row.owner_token.unwrap();
        let outcome = db
            .store
            .fail(
                row.id,
                &token,
                Failure::Failed,
                &format!("boom {attempt}"),
                0.0,
            )
            .await
            .unwrap()
            .expect("owned");
        match (attempt, outcome) {
            (0 | 1, FailOutcome::Retrying { retry_count, .. }) => {
                assert_eq!(retry_count, attempt + 1)
            }
            (
                2,
                FailOutcome::Final {
                    status,
                    retry_count,
                },
            ) => {
                assert_eq!((status, retry_count), (Status::Failed, 2))
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    let h = handlers();
    assert!(db
        .store
        .claim(&claim_req("w", &h, 1))
        .await
        .unwrap()
        .is_empty());
    let row = JobExecutions::find()
        .one(db.store.connection())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, Status::Failed.as_str());
    assert_eq!(row.retry_count, 2);
    assert_eq!(row.error_message.as_deref(), Some("boom 2"));
    assert!(row.finished_at.is_some());
});

backend_test!(
    backoff_delays_the_retry_on_the_db_clock,
    |db: TestDb| async move {
        seed_pending(&db.store, 1, 1).await;
        let row = claim_one(&db.store, "w").await;
        let before = db.store.now().await.unwrap();
        let outcome = db
            .store
            .fail(
                row.id,
                row.owner_token.as_deref().unwrap(),
                Failure::Timeout,
                "slow",
                3600.0,
            )
            .await
            .unwrap();
        let Some(FailOutcome::Retrying {
            retry_count: 1,
            run_at,
        }) = outcome
        else {
            panic!("expected a retry, got {outcome:?}")
        };
        assert!(
            run_at >= before + Duration::seconds(3599),
            "run_at {run_at} not pushed out"
        );
        let h = handlers();
        assert!(
            db.store
                .claim(&claim_req("w", &h, 1))
                .await
                .unwrap()
                .is_empty(),
            "not yet due"
        );
        // The last attempt times out for good.
        JobExecutions::update_many()
            .col_expr(
                job_execution::Column::RunAt,
                sea_orm::sea_query::Expr::value(before - Duration::seconds(1)),
            )
            .exec(db.store.connection())
            .await
            .unwrap();
        let row = claim_one(&db.store, "w").await;
        let outcome = db
            .store
            .fail(
                row.id,
                row.owner_token.as_deref().unwrap(),
                Failure::Timeout,
                "slow",
                0.0,
            )
            .await
            .unwrap();
        assert_eq!(
            outcome,
            Some(FailOutcome::Final {
                status: Status::Timeout,
                retry_count: 1
            })
        );
    }
);

backend_test!(release_returns_without_counting, |db: TestDb| async move {
    seed_pending(&db.store, 1, 0).await;
    let row = claim_one(&db.store, "w1").await;
    assert_eq!(
        db.store
            .release(row.id, row.owner_token.as_deref().unwrap())
            .await
            .unwrap(),
        Some(Released::Pending)
    );
    let again = claim_one(&db.store, "w2").await;
    assert_eq!(again.id, row.id);
    assert_eq!(again.retry_count, 0, "a release is not an attempt");
    assert_ne!(
        again.owner_token, row.owner_token,
        "each claim has its own token"
    );
    assert!(!db
        .store
        .succeed(row.id, row.owner_token.as_deref().unwrap(), None)
        .await
        .unwrap());
});

backend_test!(renewal_extends_the_lease, |db: TestDb| async move {
    seed_pending(&db.store, 1, 0).await;
    let h = handlers();
    let mut req = claim_req("w", &h, 1);
    req.lease_seconds = 5.0;
    let row = db.store.claim(&req).await.unwrap().remove(0);
    let first = row.lease_expires_at.unwrap();
    let Lease::Held {
        expires_at,
        cancel_requested,
    } = db
        .store
        .renew_lease(row.id, row.owner_token.as_deref().unwrap(), 600.0)
        .await
        .unwrap()
    else {
        panic!("lease lost")
    };
    assert!(expires_at > first + Duration::seconds(500));
    assert!(!cancel_requested);
    // A renewed lease is not rescued.
    assert!(db.store.rescue_expired(100, 0.0).await.unwrap().is_empty());
});

backend_test!(
    expired_leases_are_rescued_once_by_racing_rescuers,
    |db: TestDb| async move {
        const ROWS: usize = 60;
        const RESCUERS: usize = 4;
        seed_pending(&db.store, ROWS, 1).await;
        // One more execution with no retries left: rescue makes it final.
        seed_pending(&db.store, 1, 0).await;
        let h = handlers();
        // A lease that already ended on the database clock: the worker "died" at claim time.
        let mut req = claim_req("dead-worker", &h, 100);
        req.lease_seconds = -1.0;
        let claimed = db.store.claim(&req).await.unwrap();
        assert_eq!(claimed.len(), ROWS + 1);
        // A live attempt with a valid lease must not be touched.
        seed_pending(&db.store, 1, 1).await;
        let live = claim_one(&db.store, "live-worker").await;

        let barrier = Arc::new(Barrier::new(RESCUERS));
        let mut tasks = Vec::new();
        for _ in 0..RESCUERS {
            let store = db.new_store(2).await;
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let mut ids = Vec::new();
                loop {
                    let rescued = store.rescue_expired(7, 0.0).await.expect("rescue");
                    if rescued.is_empty() {
                        break;
                    }
                    ids.extend(rescued.into_iter().map(|r| r.id));
                }
                let _ = store.close().await;
                ids
            }));
        }
        let mut seen = HashSet::new();
        for task in tasks {
            for id in task.await.unwrap() {
                assert!(seen.insert(id), "execution {id} rescued twice");
            }
        }
        assert_eq!(seen.len(), ROWS + 1);
        assert!(!seen.contains(&live.id));

        let rows = JobExecutions::find()
            .all(db.store.connection())
            .await
            .unwrap();
        let mut pending = 0;
        let mut failed = 0;
        for row in rows.iter().filter(|r| r.id != live.id) {
            match row.status.as_str() {
                "PENDING" => {
                    pending += 1;
                    assert_eq!(row.retry_count, 1, "the lost attempt counts once");
                    assert!(row.owner_token.is_none() && row.lease_expires_at.is_none());
                }
                "FAILED" => {
                    failed += 1;
                    assert_eq!((row.retry_count, row.max_retry), (0, 0));
                    assert!(row
                        .error_message
                        .as_deref()
                        .unwrap_or("")
                        .contains("lease expired"));
                }
                other => panic!("unexpected status {other}"),
            }
        }
        assert_eq!((pending, failed), (ROWS, 1));
        // The dead worker's late report is fenced off.
        let first = &claimed[0];
        assert!(!db
            .store
            .succeed(first.id, first.owner_token.as_deref().unwrap(), None)
            .await
            .unwrap());
        assert_eq!(count_status(&db.store, Status::Running).await, 1);
    }
);

backend_test!(marker_advances_once_under_a_race, |db: TestDb| async move {
    let cron = db
        .store
        .insert_cron(&NewCron::new("marker", "*/5 * * * *", HANDLER))
        .await
        .unwrap();
    let t0 = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    assert!(db
        .store
        .advance_marker(cron.id, None, t0, None)
        .await
        .unwrap());
    assert!(!db
        .store
        .advance_marker(cron.id, None, t0, None)
        .await
        .unwrap());

    let barrier = Arc::new(Barrier::new(4));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let store = db.new_store(1).await;
        let barrier = barrier.clone();
        let id = cron.id;
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let next = t0 + Duration::minutes(5 + i);
            let won = store
                .advance_marker(id, Some(t0), next, Some(t0))
                .await
                .unwrap();
            let _ = store.close().await;
            won
        }));
    }
    let mut winners = 0;
    for task in tasks {
        winners += task.await.unwrap() as usize;
    }
    assert_eq!(winners, 1, "exactly one dispatcher moves the marker");
    let row = CronJobs::find_by_id(cron.id)
        .one(db.store.connection())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.last_fire_time, Some(t0));
    assert!(row.next_fire_time.unwrap() > t0);
});

backend_test!(
    invalid_cron_is_refused_before_writing,
    |db: TestDb| async move {
        let err = db
            .store
            .insert_cron(&NewCron::new("bad", "61 * * * *", HANDLER))
            .await
            .expect_err("invalid expression");
        assert!(err.to_string().contains("61"), "{err}");
        let mut zone = NewCron::new("bad-zone", "* * * * *", HANDLER);
        zone.timezone = "Mars/Olympus".into();
        assert!(db.store.insert_cron(&zone).await.is_err());
        assert_eq!(
            CronJobs::find().count(db.store.connection()).await.unwrap(),
            0
        );
        // Names are unique.
        db.store
            .insert_cron(&NewCron::new("dup", "* * * * *", HANDLER))
            .await
            .unwrap();
        assert!(db
            .store
            .insert_cron(&NewCron::new("dup", "* * * * *", HANDLER))
            .await
            .is_err());
    }
);

backend_test!(
    exclusive_creators_leave_one_unfinished,
    |db: TestDb| async move {
        // Six creators race, each with its own pool, over 30 rounds of fire times; in every
        // round at most one execution of the cron may be unfinished. Finishing it lets the
        // next round create again.
        const CREATORS: usize = 6;
        const ROUNDS: i64 = 30;
        let mut cron = NewCron::new("exclusive", "* * * * * *", HANDLER);
        cron.overlap_policy = jobu::entities::cron_job::OverlapPolicy::Skip;
        let cron = db.store.insert_cron(&cron).await.expect("cron");
        let base = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        let due = db.store.now().await.unwrap() - Duration::seconds(1);
        let mut stores = Vec::new();
        for _ in 0..CREATORS {
            stores.push(db.new_store(2).await);
        }
        let h = handlers();
        for round in 0..ROUNDS {
            let barrier = Arc::new(Barrier::new(CREATORS));
            let mut tasks = Vec::new();
            for (c, store) in stores.iter().enumerate() {
                let store = store.clone();
                let barrier = barrier.clone();
                // Every creator proposes a different fire time, so the unique key cannot
                // be what stops them: only the overlap rule can.
                let fire = base + Duration::seconds(round * 100 + c as i64);
                tasks.push(tokio::spawn(async move {
                    // Due at once, so the round's winner can be claimed and finished.
                    let mut new = execution(Some(cron.id), fire, 0);
                    new.run_at = due;
                    barrier.wait().await;
                    store
                        .create_exclusive(&new)
                        .await
                        .expect("create_exclusive")
                }));
            }
            let mut created = 0;
            for task in tasks {
                match task.await.expect("creator") {
                    Created::New(_) => created += 1,
                    Created::Overlap => {}
                    Created::Waiting(_) => panic!("an operator's run never waits"),
                    Created::Exists => panic!("distinct fire times cannot exist"),
                }
            }
            assert_eq!(created, 1, "round {round}: {created} unfinished executions");
            let claimed = db
                .store
                .claim(&claim_req("w", &h, 10))
                .await
                .expect("claim");
            assert_eq!(claimed.len(), 1);
            let row = &claimed[0];
            assert!(db
                .store
                .succeed(row.id, row.owner_token.as_deref().unwrap(), None)
                .await
                .unwrap());
        }
        for store in stores {
            let _ = store.close().await;
        }
        let total = JobExecutions::find()
            .filter(job_execution::Column::JobId.eq(cron.id))
            .count(db.store.connection())
            .await
            .unwrap();
        assert_eq!(total, ROUNDS as u64);
        // The same fire time again is "exists", not "overlap", once nothing is unfinished.
        let first = JobExecutions::find()
            .filter(job_execution::Column::JobId.eq(cron.id))
            .one(db.store.connection())
            .await
            .unwrap()
            .expect("a row");
        let again = db
            .store
            .create_exclusive(&execution(Some(cron.id), first.scheduled_time, 0))
            .await
            .unwrap();
        assert_eq!(again, Created::Exists);
    }
);

backend_test!(next_due_and_overdue_report, |db: TestDb| async move {
    let h = handlers();
    assert_eq!(db.store.next_due(&h).await.unwrap(), None);
    let now = db.store.now().await.unwrap();
    let mut later = execution(None, now, 0);
    later.run_at = now + Duration::seconds(30);
    db.store.create_if_absent(&later).await.unwrap();
    let wait = db.store.next_due(&h).await.unwrap().expect("one pending");
    assert!((25..=30).contains(&wait.as_secs()), "next due in {wait:?}");
    // Another handler's rows do not wake this worker.
    assert_eq!(
        db.store.next_due(&["other".to_string()]).await.unwrap(),
        None
    );

    let mut stale = execution(None, now - Duration::seconds(600), 0);
    stale.handler_name = "nobody".into();
    db.store.create_if_absent(&stale).await.unwrap();
    assert_eq!(
        db.store.next_due(&["nobody".to_string()]).await.unwrap(),
        Some(std::time::Duration::ZERO)
    );
    let overdue = db.store.overdue_pending(60.0).await.unwrap();
    assert_eq!(overdue.len(), 1, "{overdue:?}");
    assert_eq!(overdue[0].handler_name, "nobody");
    assert_eq!(overdue[0].count, 1);
});

backend_test!(
    rows_ahead_of_a_disabled_cron_are_cancelled,
    |db: TestDb| async move {
        let kept = db
            .store
            .insert_cron(&NewCron::new("kept", "* * * * * *", HANDLER))
            .await
            .unwrap();
        let disabled = db
            .store
            .insert_cron(&NewCron::new("disabled", "* * * * * *", HANDLER))
            .await
            .unwrap();
        let now = db.store.now().await.unwrap();
        for cron in [kept.id, disabled.id] {
            db.store
                .create_if_absent(&execution(Some(cron), now + Duration::seconds(60), 0))
                .await
                .unwrap();
            // Already due: it runs even though the cron is disabled afterwards.
            db.store
                .create_if_absent(&execution(Some(cron), now - Duration::seconds(1), 0))
                .await
                .unwrap();
        }
        // A fire time that came and failed, its retry waiting out the backoff: it is work
        // started, not a fire time to come, and keeps its retry.
        let mut retry = execution(Some(disabled.id), now - Duration::seconds(30), 3);
        retry.run_at = now + Duration::seconds(60);
        let retry = match db.store.create_if_absent(&retry).await.unwrap() {
            Created::New(id) => id,
            other => panic!("{other:?}"),
        };
        JobExecutions::update(job_execution::ActiveModel {
            id: Set(retry),
            retry_count: Set(1),
            ..Default::default()
        })
        .exec(db.store.connection())
        .await
        .unwrap();
        CronJobs::update(jobu::entities::cron_job::ActiveModel {
            id: Set(disabled.id),
            is_enabled: Set(false),
            ..Default::default()
        })
        .exec(db.store.connection())
        .await
        .unwrap();
        assert_eq!(db.store.cancel_unscheduled().await.unwrap(), 1);
        assert_eq!(db.store.cancel_unscheduled().await.unwrap(), 0);
        let cancelled = JobExecutions::find()
            .filter(job_execution::Column::Status.eq(Status::Cancelled.as_str()))
            .all(db.store.connection())
            .await
            .unwrap();
        assert_eq!(cancelled.len(), 1);
        assert_eq!(cancelled[0].job_id, Some(disabled.id));
        assert!(cancelled[0].scheduled_time > now);
        let kept_retry = db.store.execution(retry).await.unwrap().unwrap();
        assert_eq!(kept_retry.status, Status::Pending.as_str());
    }
);

// ---- Operator actions (admin API): conditional updates that race workers safely ----

backend_test!(
    cancel_races_claim_without_a_lost_or_double_owner,
    |db: TestDb| async move {
        const ROWS: usize = 300;
        seed_pending(&db.store, ROWS, 0).await;
        let ids: Vec<i64> = JobExecutions::find()
            .all(db.store.connection())
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();

        let barrier = Arc::new(Barrier::new(3));
        let mut claimers = Vec::new();
        for c in 0..2 {
            let store = db.new_store(2).await;
            let barrier = barrier.clone();
            claimers.push(tokio::spawn(async move {
                let worker = format!("claimer-{c}");
                let h = handlers();
                let mut mine = HashSet::new();
                barrier.wait().await;
                loop {
                    let batch = store
                        .claim(&claim_req(&worker, &h, 10))
                        .await
                        .expect("claim");
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch.into_iter().map(|r| r.id));
                }
            }));
        }
        let canceller = {
            let store = db.new_store(2).await;
            let barrier = barrier.clone();
            let ids = ids.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let mut cancelled = HashSet::new();
                for id in ids {
                    match store.cancel_execution(id).await.expect("cancel") {
                        Action::Done(row) if row.status == Status::Cancelled.as_str() => {
                            cancelled.insert(id);
                        }
                        Action::Done(row) => {
                            assert_eq!(row.status, Status::Running.as_str());
                            assert!(row.cancel_requested, "a running row is flagged");
                        }
                        other => panic!("execution {id}: {other:?}"),
                    }
                }
                cancelled
            })
        };
        let mut claimed = HashSet::new();
        for c in claimers {
            let mine = c.await.unwrap();
            assert!(claimed.is_disjoint(&mine), "an execution claimed twice");
            claimed.extend(mine);
        }
        let cancelled = canceller.await.unwrap();
        assert!(claimed.is_disjoint(&cancelled), "claimed and cancelled");
        assert_eq!(
            claimed.len() + cancelled.len(),
            ROWS,
            "every row is accounted for"
        );
        assert_eq!(
            count_status(&db.store, Status::Cancelled).await,
            cancelled.len() as u64
        );
        let running = JobExecutions::find()
            .filter(job_execution::Column::Status.eq(Status::Running.as_str()))
            .all(db.store.connection())
            .await
            .unwrap();
        assert_eq!(running.len(), claimed.len());
        assert!(
            running
                .iter()
                .all(|r| r.cancel_requested && r.owner_token.is_some()),
            "every claimed row keeps its owner and carries the cancel request"
        );
    }
);

backend_test!(
    retry_is_once_and_only_from_final_states,
    |db: TestDb| async move {
        let t = db.store.now().await.unwrap() - Duration::seconds(1);
        let id = match db
            .store
            .create_if_absent(&execution(None, t, 0))
            .await
            .unwrap()
        {
            Created::New(id) => id,
            other => panic!("{other:?}"),
        };
        // PENDING and RUNNING cannot be retried.
        assert_eq!(
            db.store.retry_execution(id).await.unwrap(),
            Action::WrongState(Status::Pending)
        );
        let row = claim_one(&db.store, "w").await;
        assert_eq!(
            db.store.retry_execution(id).await.unwrap(),
            Action::WrongState(Status::Running)
        );
        let token = row.owner_token.unwrap();
        db.store
            .fail(id, &token, Failure::Failed, "boom", 0.0)
            .await
            .unwrap();

        // Eight operators retry the FAILED row at once: exactly one succeeds.
        let barrier = Arc::new(Barrier::new(8));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let store = db.new_store(1).await;
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                store.retry_execution(id).await.unwrap()
            }));
        }
        let mut done = 0;
        for t in tasks {
            match t.await.unwrap() {
                Action::Done(row) => {
                    done += 1;
                    assert_eq!(row.status, Status::Pending.as_str());
                    assert_eq!(row.retry_count, 0);
                    assert!(row.error_message.is_none() && row.finished_at.is_none());
                }
                Action::WrongState(s) => assert_eq!(s, Status::Pending),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(done, 1);
        // It runs again.
        claim_one(&db.store, "w2").await;
        assert_eq!(
            db.store.retry_execution(i64::MAX).await.unwrap(),
            Action::NotFound
        );
    }
);

backend_test!(
    delete_refuses_running_and_cancel_refuses_final,
    |db: TestDb| async move {
        let t = db.store.now().await.unwrap() - Duration::seconds(1);
        let a = db
            .store
            .create_adhoc(HANDLER, None, Some(t), 0, 30)
            .await
            .unwrap();
        let running = claim_one(&db.store, "w").await;
        assert_eq!(running.id, a.id);
        assert_eq!(
            db.store.delete_execution(a.id).await.unwrap(),
            Action::WrongState(Status::Running)
        );
        let token = running.owner_token.unwrap();
        assert!(db.store.succeed(a.id, &token, None).await.unwrap());
        assert_eq!(
            db.store.cancel_execution(a.id).await.unwrap(),
            Action::WrongState(Status::Success)
        );
        assert_eq!(
            db.store.delete_execution(a.id).await.unwrap(),
            Action::Done(())
        );
        assert_eq!(
            db.store.delete_execution(a.id).await.unwrap(),
            Action::NotFound
        );
    }
);

backend_test!(
    trigger_respects_no_overlap_and_lists_filter,
    |db: TestDb| async move {
        let mut new = NewCron::new("solo", "0 0 1 1 *", HANDLER);
        new.overlap_policy = jobu::entities::cron_job::OverlapPolicy::Skip;
        let cron = db.store.insert_cron(&new).await.unwrap();
        let first = db.store.trigger_cron(&cron).await.unwrap();
        assert_eq!(first.param_source, ParamSource::Manual.as_str());
        assert!(matches!(
            db.store.trigger_cron(&cron).await,
            Err(jobu::store::StoreError::Conflict(_))
        ));
        // Overlap allowed: two quick triggers make two rows despite the unique key.
        let many = db
            .store
            .insert_cron(&NewCron::new("many", "0 0 1 1 *", HANDLER))
            .await
            .unwrap();
        let x = db.store.trigger_cron(&many).await.unwrap();
        let y = db.store.trigger_cron(&many).await.unwrap();
        assert_ne!(x.id, y.id);
        // Duplicate names are a conflict, not a database error.
        assert!(matches!(
            db.store
                .insert_cron(&NewCron::new("many", "* * * * *", HANDLER))
                .await,
            Err(jobu::store::StoreError::Conflict(_))
        ));

        let filter = ExecutionFilter {
            cron_id: Some(many.id),
            ..ExecutionFilter::default()
        };
        let (page, total) = db.store.list_executions(&filter, 0, 1).await.unwrap();
        assert_eq!(total, 2);
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].cron_name.as_deref(), Some("many"));
        let far = ExecutionFilter {
            from: Some(Utc.with_ymd_and_hms(2100, 1, 1, 0, 0, 0).unwrap()),
            ..ExecutionFilter::default()
        };
        assert_eq!(db.store.list_executions(&far, 0, 10).await.unwrap().1, 0);
        let stats = db.store.stats().await.unwrap();
        assert_eq!(stats.by_status[&Status::Pending], 3);
        assert_eq!(stats.by_handler[HANDLER][&Status::Pending], 3);

        // Deleting the cron keeps its executions, without the cron.
        assert!(db.store.delete_cron(many.id).await.unwrap());
        let view = db.store.execution_view(x.id).await.unwrap().unwrap();
        assert_eq!(view.execution.job_id, None);
        assert_eq!(view.cron_name, None);
    }
);

backend_test!(
    execution_pages_merge_every_status_newest_fire_time_first,
    |db: TestDb| async move {
        // Rows of every kind of status with interleaved and tied fire times: the list reads
        // unfinished and other rows through different indexes and must merge them exactly.
        let base = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        let statuses = [
            Status::Pending,
            Status::Running,
            Status::Success,
            Status::Failed,
            Status::Waiting,
            Status::Cancelled,
            Status::Pending,
        ];
        let mut rows = Vec::new();
        for i in 0..40_i64 {
            let status = statuses[i as usize % statuses.len()];
            let at = base + Duration::minutes(i * 7 % 23);
            let finished = status.is_final().then_some(at);
            rows.push(job_execution::ActiveModel {
                handler_name: Set(HANDLER.to_string()),
                scheduled_time: Set(at),
                run_at: Set(at),
                status: Set(status.as_str().to_string()),
                param_source: Set(ParamSource::Api.as_str().to_string()),
                retry_count: Set(0),
                max_retry: Set(0),
                timeout_seconds: Set(300),
                cancel_requested: Set(false),
                finished_at: Set(finished),
                created_at: Set(at),
                updated_at: Set(at),
                ..Default::default()
            });
        }
        JobExecutions::insert_many(rows)
            .exec(db.store.connection())
            .await
            .unwrap();
        let mut all = JobExecutions::find()
            .all(db.store.connection())
            .await
            .unwrap();
        all.sort_by_key(|r| std::cmp::Reverse((r.scheduled_time, r.id)));

        let filters = [
            ExecutionFilter::default(),
            ExecutionFilter {
                status: Some(Status::Pending),
                ..ExecutionFilter::default()
            },
            ExecutionFilter {
                status: Some(Status::Running),
                ..ExecutionFilter::default()
            },
            ExecutionFilter {
                status: Some(Status::Success),
                ..ExecutionFilter::default()
            },
            ExecutionFilter {
                from: Some(base + Duration::minutes(5)),
                to: Some(base + Duration::minutes(15)),
                ..ExecutionFilter::default()
            },
        ];
        for filter in &filters {
            let expected: Vec<i64> = all
                .iter()
                .filter(|r| filter.status.is_none_or(|s| r.status == s.as_str()))
                .filter(|r| filter.from.is_none_or(|t| r.scheduled_time >= t))
                .filter(|r| filter.to.is_none_or(|t| r.scheduled_time <= t))
                .map(|r| r.id)
                .collect();
            assert!(!expected.is_empty(), "{filter:?} matches nothing");
            for size in [1_u64, 3, 7, 50] {
                let mut listed = Vec::new();
                let mut offset = 0;
                loop {
                    let (page, total) = db
                        .store
                        .list_executions(filter, offset, size)
                        .await
                        .unwrap();
                    assert_eq!(total, expected.len() as u64, "{filter:?}");
                    assert!(page.len() as u64 <= size);
                    if page.is_empty() {
                        break;
                    }
                    offset += page.len() as u64;
                    listed.extend(page.into_iter().map(|v| v.execution.id));
                }
                assert_eq!(listed, expected, "{filter:?}, pages of {size}");
            }
        }
    }
);

backend_test!(presence_rows_live_and_go, |db: TestDb| async move {
    let me = Presence {
        id: "w-1".into(),
        host: "h".into(),
        pid: 7,
        roles: vec!["worker".into()],
        handlers: handlers(),
        concurrency: 4,
    };
    db.store.beat(&me, true).await.unwrap();
    db.store.beat(&me, false).await.unwrap();
    let t = db.store.now().await.unwrap() - Duration::seconds(1);
    db.store
        .create_if_absent(&execution(None, t, 0))
        .await
        .unwrap();
    claim_one(&db.store, "w-1").await;
    let live = db.store.live_workers(30.0).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].running, 1);
    assert_eq!(live[0].handlers, handlers());
    assert_eq!(live[0].concurrency, 4);
    // Nothing is stale yet; a window of zero hides everyone.
    assert_eq!(db.store.prune_workers(30.0).await.unwrap(), 0);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(db.store.live_workers(0.0).await.unwrap().is_empty());
    db.store.leave("w-1").await.unwrap();
    assert!(db.store.live_workers(30.0).await.unwrap().is_empty());
});

backend_test!(
    a_claimed_row_reads_back_column_for_column,
    |db: TestDb| async move {
        // Every column holds a value no other column of its type holds, so a claim that
        // decoded any two columns into each other's fields would differ from the row as
        // the entity reads it.
        let cron = db
            .store
            .insert_cron(&NewCron::new("every-column", "* * * * *", HANDLER))
            .await
            .unwrap();
        let now = db.store.now().await.unwrap();
        let at = |s: i64| now - Duration::seconds(s);
        let row = job_execution::ActiveModel {
            job_id: Set(Some(cron.id)),
            handler_name: Set(HANDLER.to_string()),
            scheduled_time: Set(at(50)),
            run_at: Set(at(40)),
            status: Set(Status::Pending.as_str().to_string()),
            params: Set(Some(serde_json::json!({"p": 1}))),
            param_source: Set(ParamSource::Manual.as_str().to_string()),
            retry_count: Set(2),
            max_retry: Set(5),
            timeout_seconds: Set(77),
            owner_token: Set(Some("stale-token".into())),
            worker_id: Set(Some("earlier-worker".into())),
            lease_expires_at: Set(Some(at(30))),
            cancel_requested: Set(true),
            cancel_reason: Set(Some(CancelReason::Operator.as_str().into())),
            started_at: Set(Some(at(20))),
            finished_at: Set(Some(at(10))),
            error_message: Set(Some("earlier error".into())),
            result: Set(Some(serde_json::json!({"r": 2}))),
            created_at: Set(at(60)),
            updated_at: Set(at(55)),
            exclusive_run: Set(true),
            fire_time_until: Set(Some(at(45))),
            fire_count: Set(3),
            reason: Set(Some("a reason".into())),
            requested_by: Set(Some("an operator".into())),
            parent_execution_id: Set(Some(901)),
            chain_child: Set(Some(902)),
            backfill_id: Set(Some(903)),
            ..Default::default()
        };
        JobExecutions::insert(row)
            .exec(db.store.connection())
            .await
            .unwrap();
        let claimed = claim_one(&db.store, "w-columns").await;
        let stored = db.store.execution(claimed.id).await.unwrap().unwrap();
        assert_eq!(claimed, stored);
        assert_eq!(
            (claimed.job_id, claimed.retry_count, claimed.max_retry),
            (Some(cron.id), 2, 5)
        );
        assert_eq!(
            (
                claimed.parent_execution_id,
                claimed.chain_child,
                claimed.backfill_id
            ),
            (Some(901), Some(902), Some(903))
        );
    }
);

// ---- Many attempts end in one statement ----

/// Claims every due execution (up to 2,000) in one claim.
async fn claim_all(store: &Store, worker: &str) -> Vec<job_execution::Model> {
    let h = handlers();
    store
        .claim(&claim_req(worker, &h, 2000))
        .await
        .expect("claim")
}

fn ending(row: &job_execution::Model, end: End) -> Finish {
    Finish {
        id: row.id,
        token: row.owner_token.clone().expect("claimed"),
        end,
    }
}

backend_test!(
    a_batch_of_endings_gives_each_row_its_own_outcome,
    |db: TestDb| async move {
        seed_pending(&db.store, 6, 1).await;
        seed_pending(&db.store, 3, 0).await;
        let mut rows = claim_all(&db.store, "w").await;
        rows.sort_by_key(|r| (-r.max_retry, r.id));
        assert_eq!(rows.len(), 9);
        // The last row of the max_retry = 0 set: an operator asks to cancel it while it runs.
        assert!(matches!(
            db.store.cancel_execution(rows[8].id).await.unwrap(),
            Action::Done(_)
        ));
        let failed = |failure, error: &str| End::Failed {
            failure,
            error: error.to_string(),
            backoff_seconds: 60.0,
        };
        let mut stale = ending(&rows[5], End::Success(None));
        stale.token = new_token();
        let batch = vec![
            ending(&rows[0], End::Success(Some(serde_json::json!({"n": 0})))),
            ending(&rows[1], End::Success(Some(serde_json::json!("text")))),
            ending(&rows[2], failed(Failure::Failed, "boom")),
            ending(&rows[3], End::Cancelled("stopped by an operator".into())),
            ending(&rows[4], End::Release),
            stale,
            ending(&rows[6], failed(Failure::Timeout, "too slow")),
            ending(&rows[7], End::Success(None)),
            ending(&rows[8], failed(Failure::Failed, "boom after cancel")),
        ];
        let before = db.store.now().await.unwrap();
        let out = db.store.finish_many(&batch).await.unwrap();
        assert_eq!(out[0], Some(Finished::Success));
        assert_eq!(out[1], Some(Finished::Success));
        match out[2] {
            Some(Finished::Failed(FailOutcome::Retrying {
                retry_count,
                run_at,
            })) => {
                assert_eq!(retry_count, 1);
                assert!(
                    run_at >= before + Duration::seconds(59),
                    "{run_at} vs {before}"
                );
            }
            other => panic!("row 2: {other:?}"),
        }
        assert_eq!(out[3], Some(Finished::Cancelled));
        assert_eq!(out[4], Some(Finished::Released(Released::Pending)));
        assert_eq!(out[5], None, "a stale token ends nothing");
        assert_eq!(
            out[6],
            Some(Finished::Failed(FailOutcome::Final {
                status: Status::Timeout,
                retry_count: 0
            }))
        );
        assert_eq!(out[7], Some(Finished::Success));
        assert_eq!(
            out[8],
            Some(Finished::Failed(FailOutcome::Cancelled { retry_count: 0 }))
        );

        let get = |i: usize| {
            let store = db.store.clone();
            let id = rows[i].id;
            async move { store.execution(id).await.unwrap().unwrap() }
        };
        let r0 = get(0).await;
        assert_eq!(r0.status, Status::Success.as_str());
        assert_eq!(r0.result, Some(serde_json::json!({"n": 0})));
        assert!(
            r0.finished_at.is_some() && r0.owner_token.is_none() && r0.lease_expires_at.is_none()
        );
        assert_eq!(get(1).await.result, Some(serde_json::json!("text")));
        let r2 = get(2).await;
        assert_eq!(
            (
                r2.status.as_str(),
                r2.retry_count,
                r2.error_message.as_deref()
            ),
            (Status::Pending.as_str(), 1, Some("boom"))
        );
        assert!(r2.owner_token.is_none() && r2.finished_at.is_none());
        let r3 = get(3).await;
        assert_eq!(r3.status, Status::Cancelled.as_str());
        assert_eq!(r3.cancel_reason.as_deref(), Some("operator"));
        assert_eq!(r3.error_message.as_deref(), Some("stopped by an operator"));
        let r4 = get(4).await;
        assert_eq!(
            (r4.status.as_str(), r4.retry_count),
            (Status::Pending.as_str(), 0)
        );
        assert!(r4.started_at.is_none() && r4.owner_token.is_none());
        assert_eq!(
            get(5).await,
            rows[5],
            "the stale entry left its row as it was"
        );
        let r6 = get(6).await;
        assert_eq!(r6.status, Status::Timeout.as_str());
        assert_eq!(r6.error_message.as_deref(), Some("too slow"));
        let r7 = get(7).await;
        assert_eq!(
            (r7.status.as_str(), r7.result),
            (Status::Success.as_str(), None)
        );
        assert_cancelled_for_good(&get(8).await, 0);
    }
);

backend_test!(
    a_batch_stores_results_and_messages_exactly_as_given,
    |db: TestDb| async move {
        seed_pending(&db.store, 7, 0).await;
        let mut rows = claim_all(&db.store, "w").await;
        rows.sort_by_key(|r| r.id);
        // Quotes, backslashes, braces, commas, newlines and non-ASCII text: the batch's
        // encoding (JSON rows, typed arrays) must carry every one of them unchanged.
        let odd = "it's \"quoted\", {braced} \\ back\\slash\nnew line, ünïcödé, NULL";
        let batch = vec![
            // A JSON null result is no result; the JSON *string* "null" is a result.
            ending(&rows[0], End::Success(Some(serde_json::Value::Null))),
            ending(&rows[1], End::Success(Some(serde_json::json!("null")))),
            ending(
                &rows[2],
                End::Success(Some(serde_json::json!({"k": odd, "n": [1, null]}))),
            ),
            ending(&rows[3], End::Cancelled(odd.to_string())),
            // An empty message is a message, not a missing one.
            ending(&rows[4], End::Cancelled(String::new())),
            ending(&rows[5], End::Success(None)),
            ending(
                &rows[6],
                End::Failed {
                    failure: Failure::Failed,
                    error: odd.to_string(),
                    backoff_seconds: 0.0,
                },
            ),
        ];
        let out = db.store.finish_many(&batch).await.unwrap();
        assert!(out.iter().all(Option::is_some), "{out:?}");
        let get = |i: usize| {
            let store = db.store.clone();
            let id = rows[i].id;
            async move { store.execution(id).await.unwrap().unwrap() }
        };
        assert_eq!(get(0).await.result, None);
        assert_eq!(get(1).await.result, Some(serde_json::json!("null")));
        assert_eq!(
            get(2).await.result,
            Some(serde_json::json!({"k": odd, "n": [1, null]}))
        );
        let r3 = get(3).await;
        assert_eq!(r3.error_message.as_deref(), Some(odd));
        assert_eq!(r3.cancel_reason.as_deref(), Some("operator"));
        let r4 = get(4).await;
        assert_eq!(
            (r4.status.as_str(), r4.error_message.as_deref()),
            (Status::Cancelled.as_str(), Some(""))
        );
        let r5 = get(5).await;
        assert_eq!(
            (r5.result, r5.error_message, r5.cancel_reason),
            (None, None, None)
        );
        let r6 = get(6).await;
        assert_eq!(
            (r6.status.as_str(), r6.error_message.as_deref()),
            (Status::Failed.as_str(), Some(odd))
        );
    }
);

backend_test!(
    a_batch_larger_than_a_chunk_ends_every_row_it_owns,
    |db: TestDb| async move {
        let n = FINISH_CHUNK * 2 + 100;
        seed_pending(&db.store, n, 0).await;
        let rows = claim_all(&db.store, "w").await;
        assert_eq!(rows.len(), n);
        // Every 97th row was rescued and re-claimed by another worker meanwhile: its token moved.
        let mut batch: Vec<Finish> = rows
            .iter()
            .map(|r| ending(r, End::Success(Some(serde_json::json!({"id": r.id})))))
            .collect();
        for f in batch.iter_mut().step_by(97) {
            f.token = new_token();
        }
        let out = db.store.finish_many(&batch).await.unwrap();
        for (i, o) in out.iter().enumerate() {
            if i % 97 == 0 {
                assert_eq!(*o, None, "entry {i}");
            } else {
                assert_eq!(*o, Some(Finished::Success), "entry {i}");
            }
        }
        let lost = n.div_ceil(97) as u64;
        assert_eq!(
            count_status(&db.store, Status::Success).await,
            n as u64 - lost
        );
        assert_eq!(count_status(&db.store, Status::Running).await, lost);
        let one = db.store.execution(rows[1].id).await.unwrap().unwrap();
        assert_eq!(one.result, Some(serde_json::json!({"id": rows[1].id})));
    }
);

backend_test!(
    racing_batches_end_each_attempt_once,
    |db: TestDb| async move {
        // Two holders of the same batch (a retried flush, a confused worker) race: each row is
        // ended by exactly one of them.
        seed_pending(&db.store, 300, 0).await;
        let rows = claim_all(&db.store, "w").await;
        let batch: Vec<Finish> = rows.iter().map(|r| ending(r, End::Success(None))).collect();
        let barrier = Arc::new(Barrier::new(2));
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let store = db.new_store(4).await;
            let batch = batch.clone();
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                store.finish_many(&batch).await.unwrap()
            }));
        }
        let mut ended = 0;
        for t in tasks {
            ended += t.await.unwrap().iter().filter(|o| o.is_some()).count();
        }
        assert_eq!(ended, 300, "every attempt ended once, by one of the two");
        assert_eq!(count_status(&db.store, Status::Success).await, 300);
    }
);

// ---- Cancels win, claims resolve, leases batch, identifiers compare as bytes ----

/// Claims the only due execution and asks to cancel it while it "runs".
async fn claim_then_request_cancel(store: &Store, worker: &str) -> job_execution::Model {
    let row = claim_one(store, worker).await;
    match store.cancel_execution(row.id).await.unwrap() {
        Action::Done(r) => assert!(r.cancel_requested && r.status == Status::Running.as_str()),
        other => panic!("cancel of a running row: {other:?}"),
    }
    row
}

fn assert_cancelled_for_good(row: &job_execution::Model, retry_count: i32) {
    assert_eq!(row.status, Status::Cancelled.as_str(), "{row:?}");
    assert_eq!(
        row.retry_count, retry_count,
        "a cancelled attempt is not retried"
    );
    assert_eq!(row.cancel_reason.as_deref(), Some("operator"));
    assert!(row.owner_token.is_none() && row.lease_expires_at.is_none());
    assert!(row.finished_at.is_some());
    assert!(
        row.error_message
            .as_deref()
            .unwrap_or("")
            .contains("cancelled by an operator"),
        "{:?}",
        row.error_message
    );
}

backend_test!(
    a_cancel_request_wins_over_every_end_of_the_attempt,
    |db: TestDb| async move {
        // Four executions with retries left; each is cancelled while running, then its
        // attempt ends in one of the ways that used to put it back to PENDING.
        seed_pending(&db.store, 4, 3).await;
        let mut ended = Vec::new();
        for (failure, error) in [(Failure::Failed, "exit 1"), (Failure::Timeout, "timed out")] {
            let row = claim_then_request_cancel(&db.store, "w").await;
            let token = row.owner_token.as_deref().unwrap();
            let outcome = db
                .store
                .fail(row.id, token, failure, error, 0.0)
                .await
                .unwrap();
            assert_eq!(
                outcome,
                Some(FailOutcome::Cancelled { retry_count: 0 }),
                "{failure:?}"
            );
            ended.push(row.id);
        }

        let released = claim_then_request_cancel(&db.store, "w").await;
        assert_eq!(
            db.store
                .release(released.id, released.owner_token.as_deref().unwrap())
                .await
                .unwrap(),
            Some(Released::Cancelled)
        );

        // The worker of the last one dies: its lease ends and the rescuer ends it.
        let h = handlers();
        let mut req = claim_req("dead", &h, 1);
        req.lease_seconds = -5.0;
        let lost = db.store.claim(&req).await.unwrap().remove(0);
        db.store.cancel_execution(lost.id).await.unwrap();
        let rescued = db.store.rescue_expired(10, 0.0).await.unwrap();
        assert_eq!(rescued.len(), 1);
        assert_cancelled_for_good(&rescued[0], 0);

        for id in ended.into_iter().chain([released.id, lost.id]) {
            let row = db.store.execution(id).await.unwrap().unwrap();
            assert_cancelled_for_good(&row, 0);
        }
        // Nothing is left to run.
        assert!(db
            .store
            .claim(&claim_req("w", &h, 10))
            .await
            .unwrap()
            .is_empty());
        // A cancel before the run is recorded as an operator's too.
        seed_pending(&db.store, 1, 3).await;
        let pending = JobExecutions::find()
            .filter(job_execution::Column::Status.eq(Status::Pending.as_str()))
            .one(db.store.connection())
            .await
            .unwrap()
            .unwrap();
        let Action::Done(row) = db.store.cancel_execution(pending.id).await.unwrap() else {
            panic!("cancel of a pending row")
        };
        assert_eq!(row.status, Status::Cancelled.as_str());
        assert_eq!(row.cancel_reason.as_deref(), Some("operator"));
        // Final rows refuse it.
        assert_eq!(
            db.store.cancel_execution(pending.id).await.unwrap(),
            Action::WrongState(Status::Cancelled)
        );
    }
);

backend_test!(
    cancel_requests_reach_the_worker_by_poll,
    |db: TestDb| async move {
        seed_pending(&db.store, 3, 0).await;
        let h = handlers();
        let mine = db.store.claim(&claim_req("poller", &h, 2)).await.unwrap();
        let other = claim_one(&db.store, "someone-else").await;
        assert!(db.store.cancel_requests("poller").await.unwrap().is_empty());
        db.store.cancel_execution(mine[1].id).await.unwrap();
        db.store.cancel_execution(other.id).await.unwrap();
        assert_eq!(
            db.store.cancel_requests("poller").await.unwrap(),
            vec![(mine[1].id, mine[1].owner_token.clone().unwrap())]
        );
    }
);

backend_test!(
    a_claim_whose_reply_was_lost_is_resolved_by_its_token,
    |db: TestDb| async move {
        seed_pending(&db.store, 5, 0).await;
        let h = handlers();
        let token = new_token();
        let req = ClaimRequest {
            worker_id: "w",
            handlers: &h,
            limit: 3,
            lease_seconds: 5.0,
            token: &token,
        };
        // The claim commits; its answer is "lost" (dropped here).
        let committed = db.store.claim(&req).await.unwrap();
        assert_eq!(committed.len(), 3);
        let first_lease = committed[0].lease_expires_at.unwrap();

        let adopted = db.store.adopt_claim(&token, 600.0).await.unwrap();
        let ids = |rows: &[job_execution::Model]| rows.iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(
            ids(&adopted),
            ids(&committed),
            "the claim's rows, and only those"
        );
        assert!(adopted.iter().all(|r| r.status == Status::Running.as_str()
            && r.owner_token.as_deref() == Some(token.as_str())
            && r.lease_expires_at.unwrap() > first_lease + Duration::seconds(500)));
        // Repeating it is harmless; another token finds nothing.
        assert_eq!(
            ids(&db.store.adopt_claim(&token, 600.0).await.unwrap()),
            ids(&committed)
        );
        assert!(db
            .store
            .adopt_claim(&new_token(), 600.0)
            .await
            .unwrap()
            .is_empty());

        // Or the rows go back, not counted, when the worker is stopping.
        assert_eq!(db.store.release_claim(&token).await.unwrap(), 3);
        assert_eq!(db.store.release_claim(&token).await.unwrap(), 0);
        assert!(db
            .store
            .adopt_claim(&token, 600.0)
            .await
            .unwrap()
            .is_empty());
        let again = db.store.claim(&claim_req("w2", &h, 10)).await.unwrap();
        assert_eq!(again.len(), 5);
        assert!(again.iter().all(|r| r.retry_count == 0));
    }
);

backend_test!(
    leases_of_many_attempts_renew_in_one_call,
    |db: TestDb| async move {
        const ROWS: usize = 700; // more than one statement's chunk
        seed_pending(&db.store, ROWS, 0).await;
        let h = handlers();
        let mut attempts: Vec<(i64, String)> = Vec::new();
        for _ in 0..2 {
            let rows = db.store.claim(&claim_req("w", &h, 350)).await.unwrap();
            attempts.extend(rows.into_iter().map(|r| (r.id, r.owner_token.unwrap())));
        }
        assert_eq!(attempts.len(), ROWS);
        // One of them was cancelled by an operator, one finished meanwhile, one is asked
        // about with a stale token, and one id does not exist.
        db.store.cancel_execution(attempts[10].0).await.unwrap();
        assert!(db
            .store
            .succeed(attempts[20].0, &attempts[20].1, None)
            .await
            .unwrap());
        let mut asked = attempts.clone();
        asked[30].1 = new_token();
        asked.push((i64::MAX, new_token()));

        let before = db.store.now().await.unwrap();
        let leases = db.store.renew_leases(&asked, 600.0).await.unwrap();
        assert_eq!(leases.len(), asked.len());
        for (i, ((id, _), (got_id, lease))) in asked.iter().zip(&leases).enumerate() {
            assert_eq!(id, got_id, "answers come in the order asked");
            match (i, lease) {
                (20 | 30 | ROWS, Lease::Lost) => {}
                (
                    _,
                    Lease::Held {
                        expires_at,
                        cancel_requested,
                    },
                ) if i != 20 && i != 30 && i != ROWS => {
                    assert!(*expires_at > before + Duration::seconds(500));
                    assert_eq!(*cancel_requested, i == 10);
                }
                (i, other) => panic!("attempt {i}: {other:?}"),
            }
        }
        // The stale token renewed nothing: that row keeps its 30 s lease.
        let row = db.store.execution(attempts[30].0).await.unwrap().unwrap();
        assert!(row.lease_expires_at.unwrap() < before + Duration::seconds(60));
        assert!(db.store.renew_leases(&[], 600.0).await.unwrap().is_empty());
    }
);

backend_test!(
    a_rescue_waits_out_the_grace_after_the_lease,
    |db: TestDb| async move {
        seed_pending(&db.store, 1, 1).await;
        let h = handlers();
        let mut req = claim_req("w", &h, 1);
        req.lease_seconds = -2.0; // ended two seconds ago
        db.store.claim(&req).await.unwrap();
        assert!(
            db.store.rescue_expired(10, 30.0).await.unwrap().is_empty(),
            "within the grace"
        );
        assert_eq!(db.store.rescue_expired(10, 1.0).await.unwrap().len(), 1);
    }
);

backend_test!(
    identifiers_compare_as_bytes_on_every_backend,
    |db: TestDb| async move {
        // Executions of handlers that only look like `noop` under a case-insensitive or
        // space-padding collation (MySQL's default) must not be claimed by a `noop` worker.
        for name in ["Noop", "NOOP", "noop "] {
            let mut new = execution(
                None,
                db.store.now().await.unwrap() - Duration::seconds(1),
                0,
            );
            new.handler_name = name.to_string();
            assert!(db.store.create_if_absent(&new).await.unwrap().is_new());
        }
        let h = handlers();
        assert!(
            db.store
                .claim(&claim_req("w", &h, 10))
                .await
                .unwrap()
                .is_empty(),
            "a worker claimed another handler's executions"
        );
        let upper = vec!["Noop".to_string()];
        let got = db.store.claim(&claim_req("w", &upper, 10)).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].handler_name, "Noop");
        // Cron names are unique byte for byte, as on PostgreSQL and SQLite.
        for name in ["report", "Report", "report "] {
            db.store
                .insert_cron(&NewCron::new(name, "0 * * * *", HANDLER))
                .await
                .unwrap_or_else(|e| panic!("cron {name:?}: {e}"));
        }
        assert!(db
            .store
            .insert_cron(&NewCron::new("Report", "0 * * * *", HANDLER))
            .await
            .is_err());
    }
);

backend_test!(
    lookahead_rows_cancelled_by_a_disable_are_rearmed_on_enable,
    |db: TestDb| async move {
        let cron = db
            .store
            .insert_cron(&NewCron::new("ahead", "* * * * * *", HANDLER))
            .await
            .unwrap();
        let soon = db.store.now().await.unwrap() + Duration::seconds(60);
        let fire = soon - Duration::nanoseconds(soon.timestamp_subsec_nanos() as i64);
        let Created::New(id) = db
            .store
            .create_if_absent(&execution(Some(cron.id), fire, 3))
            .await
            .unwrap()
        else {
            panic!("new")
        };
        // Disabled: the row created ahead is cancelled, marked as unscheduled.
        let disabled = db
            .store
            .update_cron(
                cron,
                &CronChanges {
                    is_enabled: Some(false),
                    handler_params: Some(Some(serde_json::json!({"v": 2}))),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .unwrap();
        let row = db.store.execution(id).await.unwrap().unwrap();
        assert_eq!(row.status, Status::Cancelled.as_str());
        assert_eq!(row.cancel_reason.as_deref(), Some("unscheduled"));
        // Enabled again before the fire time: the dispatcher creates that fire time and
        // the cancelled row must not swallow it.
        db.store
            .update_cron(
                disabled,
                &CronChanges {
                    is_enabled: Some(true),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let mut again = execution(Some(cron_id_of(&db, "ahead").await), fire, 5);
        again.params = Some(serde_json::json!({"v": 2}));
        assert_eq!(
            db.store.create_if_absent(&again).await.unwrap(),
            Created::New(id)
        );
        let row = db.store.execution(id).await.unwrap().unwrap();
        assert_eq!(row.status, Status::Pending.as_str());
        assert_eq!(
            row.params,
            Some(serde_json::json!({"v": 2})),
            "the cron's current params"
        );
        assert_eq!((row.max_retry, row.retry_count), (5, 0));
        assert!(
            row.cancel_reason.is_none() && row.finished_at.is_none() && row.error_message.is_none()
        );
        // Re-armed once: a second dispatcher sees it exist.
        assert_eq!(
            db.store.create_if_absent(&again).await.unwrap(),
            Created::Exists
        );

        // A row an operator cancelled stays cancelled.
        db.store.cancel_execution(id).await.unwrap();
        assert_eq!(
            db.store.create_if_absent(&again).await.unwrap(),
            Created::Exists
        );
        assert_eq!(
            db.store.execution(id).await.unwrap().unwrap().status,
            Status::Cancelled.as_str()
        );
    }
);

async fn cron_id_of(db: &TestDb, name: &str) -> i64 {
    CronJobs::find()
        .filter(jobu::entities::cron_job::Column::Name.eq(name))
        .one(db.store.connection())
        .await
        .unwrap()
        .expect("cron")
        .id
}

backend_test!(
    exclusive_crons_rearm_only_without_an_unfinished_execution,
    |db: TestDb| async move {
        let mut new = NewCron::new("exclusive", "* * * * * *", HANDLER);
        new.overlap_policy = jobu::entities::cron_job::OverlapPolicy::Skip;
        let cron = db.store.insert_cron(&new).await.unwrap();
        let now = db.store.now().await.unwrap();
        let at = |s: i64| {
            let t = now + Duration::seconds(s);
            t - Duration::nanoseconds(t.timestamp_subsec_nanos() as i64)
        };
        let Created::New(ahead) = db
            .store
            .create_exclusive(&execution(Some(cron.id), at(60), 0))
            .await
            .unwrap()
        else {
            panic!("new")
        };
        let cron = db
            .store
            .update_cron(
                cron,
                &CronChanges {
                    is_enabled: Some(false),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .unwrap();
        db.store
            .update_cron(
                cron,
                &CronChanges {
                    is_enabled: Some(true),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        // Another execution is unfinished: the cancelled one stays as it is.
        assert!(db
            .store
            .create_exclusive(&execution(
                Some(cron_id_of(&db, "exclusive").await),
                at(-1),
                0
            ))
            .await
            .unwrap()
            .is_new());
        let id = cron_id_of(&db, "exclusive").await;
        assert_eq!(
            db.store
                .create_exclusive(&execution(Some(id), at(60), 0))
                .await
                .unwrap(),
            Created::Exists
        );
        // Once that one is done, the fire time is re-armed.
        let running = claim_one(&db.store, "w").await;
        assert!(db
            .store
            .succeed(running.id, running.owner_token.as_deref().unwrap(), None)
            .await
            .unwrap());
        assert_eq!(
            db.store
                .create_exclusive(&execution(Some(id), at(60), 0))
                .await
                .unwrap(),
            Created::New(ahead)
        );
    }
);

backend_test!(
    an_operator_retry_obeys_no_overlap,
    |db: TestDb| async move {
        let mut new = NewCron::new("single", "0 * * * *", HANDLER);
        new.overlap_policy = jobu::entities::cron_job::OverlapPolicy::Skip;
        let cron = db.store.insert_cron(&new).await.unwrap();
        let past = db.store.now().await.unwrap() - Duration::seconds(30);
        // Two earlier executions failed; a third is PENDING.
        let mut failed = Vec::new();
        for i in 0..2 {
            let t = past - Duration::hours(i + 1);
            let Created::New(id) = db
                .store
                .create_exclusive(&execution(Some(cron.id), t, 0))
                .await
                .unwrap()
            else {
                panic!("new")
            };
            let row = claim_one(&db.store, "w").await;
            assert_eq!(row.id, id);
            db.store
                .fail(
                    id,
                    row.owner_token.as_deref().unwrap(),
                    Failure::Failed,
                    "x",
                    0.0,
                )
                .await
                .unwrap();
            failed.push(id);
        }
        let Created::New(pending) = db
            .store
            .create_exclusive(&execution(Some(cron.id), past, 0))
            .await
            .unwrap()
        else {
            panic!("new")
        };
        match db.store.retry_execution(failed[0]).await.unwrap() {
            Action::Overlap(message) => assert!(message.contains("overlap"), "{message}"),
            other => panic!("retry while another is PENDING: {other:?}"),
        }
        assert_eq!(
            db.store.execution(failed[0]).await.unwrap().unwrap().status,
            Status::Failed.as_str()
        );
        // The pending one finishes; now 8 operators retry both failed ones at once: exactly
        // one retry wins, so the cron never has two unfinished executions.
        let row = claim_one(&db.store, "w").await;
        assert_eq!(row.id, pending);
        db.store
            .succeed(pending, row.owner_token.as_deref().unwrap(), None)
            .await
            .unwrap();
        let barrier = Arc::new(Barrier::new(8));
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = db.new_store(1).await;
            let barrier = barrier.clone();
            let id = failed[i % 2];
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                store.retry_execution(id).await.unwrap()
            }));
        }
        let mut done = 0;
        for t in tasks {
            match t.await.unwrap() {
                Action::Done(_) => done += 1,
                Action::Overlap(_) | Action::WrongState(Status::Pending) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(done, 1);
        let unfinished = JobExecutions::find()
            .filter(job_execution::Column::JobId.eq(cron.id))
            .filter(
                job_execution::Column::Status
                    .is_in([Status::Pending.as_str(), Status::Running.as_str()]),
            )
            .count(db.store.connection())
            .await
            .unwrap();
        assert_eq!(unfinished, 1);
    }
);

backend_test!(
    unscheduling_races_exclusive_creation_without_errors,
    |db: TestDb| async move {
        // Dispatchers creating the next execution of a no-overlap cron race cron edits that
        // cancel what a disable unschedules (the API) and dispatcher reloads that cancel it
        // for every disabled cron. At REPEATABLE READ on InnoDB these take next-key and gap
        // locks in opposite orders and deadlock; nothing here may surface an error.
        let mut exclusive = NewCron::new("exclusive", "* * * * * *", HANDLER);
        exclusive.overlap_policy = jobu::entities::cron_job::OverlapPolicy::Skip;
        let exclusive = db.store.insert_cron(&exclusive).await.unwrap();
        let flapping = db
            .store
            .insert_cron(&NewCron::new("flapping", "* * * * * *", HANDLER))
            .await
            .unwrap();
        let base = db.store.now().await.unwrap();
        let base = base - Duration::nanoseconds(base.timestamp_subsec_nanos() as i64);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for c in 0..3i64 {
            let store = db.new_store(2).await;
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let h = handlers();
                let mut i = 0i64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let t = base - Duration::seconds(c * 100_000 + i);
                    if store
                        .create_exclusive(&execution(Some(exclusive.id), t, 0))
                        .await
                        .expect("create_exclusive")
                        .is_new()
                    {
                        let rows = store.claim(&claim_req("w", &h, 1)).await.expect("claim");
                        for r in rows {
                            store
                                .succeed(r.id, r.owner_token.as_deref().unwrap(), None)
                                .await
                                .expect("succeed");
                        }
                    }
                }
                i
            }));
        }
        for c in 0..3i64 {
            let store = db.new_store(2).await;
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = 0i64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    // Rows created ahead for the flapping cron, then unscheduled.
                    let t = base + Duration::seconds(3600 + c * 100_000 + i);
                    store
                        .create_if_absent(&execution(Some(flapping.id), t, 0))
                        .await
                        .expect("create ahead");
                    let cron = store.cron(flapping.id).await.expect("read").expect("cron");
                    let enable = !cron.is_enabled;
                    store
                        .update_cron(
                            cron,
                            &CronChanges {
                                is_enabled: Some(enable),
                                ..Default::default()
                            },
                        )
                        .await
                        .expect("update_cron");
                    store
                        .cancel_unscheduled()
                        .await
                        .expect("cancel_unscheduled");
                }
                i
            }));
        }
        tokio::time::sleep(std::time::Duration::from_secs(4)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut rounds = 0;
        for t in tasks {
            rounds += t.await.expect("no task may fail");
        }
        assert!(rounds > 20, "the race did not run ({rounds} rounds)");
        let unfinished = JobExecutions::find()
            .filter(job_execution::Column::JobId.eq(exclusive.id))
            .filter(
                job_execution::Column::Status
                    .is_in([Status::Pending.as_str(), Status::Running.as_str()]),
            )
            .count(db.store.connection())
            .await
            .unwrap();
        assert!(unfinished <= 1);
    }
);

/// MySQL/MariaDB only: every connection of jobu's pools runs at READ COMMITTED.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_sessions_run_at_read_committed() {
    let Some(db) = TestDb::create(common::Backend::MySql).await else {
        return;
    };
    let store = db.new_store(3).await;
    // Hold three connections at once so the answers come from different sessions.
    let mut txns = Vec::new();
    for _ in 0..3 {
        use sea_orm::TransactionTrait;
        txns.push(store.connection().begin().await.unwrap());
    }
    for txn in &txns {
        use sea_orm::ConnectionTrait;
        // MariaDB names the variable tx_isolation, MySQL 8 transaction_isolation.
        let mut level = None;
        for var in ["@@transaction_isolation", "@@tx_isolation"] {
            let q = sea_orm::Statement::from_string(
                sea_orm::DatabaseBackend::MySql,
                format!("SELECT CAST({var} AS CHAR) AS level"),
            );
            if let Ok(Some(row)) = txn.query_one(q).await {
                level = Some(row.try_get::<String>("", "level").unwrap());
                break;
            }
        }
        assert_eq!(level.as_deref(), Some("READ-COMMITTED"));
    }
    drop(txns);
    let _ = store.close().await;
    db.cleanup().await;
}

/// PostgreSQL only: a claim never takes more rows than it asked for, even when the planner
/// picks a nested-loop semi-join that re-runs the locking subquery for every outer row
/// (forced here with planner settings): with `WHERE id IN (SELECT ... LIMIT n FOR UPDATE
/// SKIP LOCKED)` each re-run skips what racing claimers locked meanwhile and picks other
/// rows, and the update takes them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_claims_take_at_most_their_limit_under_a_rescanning_plan() {
    const ROWS: usize = 1500;
    const CLAIMERS: usize = 6;
    const LIMIT: u32 = 10;
    let Some(db) = TestDb::create(common::Backend::Postgres).await else {
        return;
    };
    seed_pending(&db.store, ROWS, 0).await;
    let mut url = url::Url::parse(&db.url).unwrap();
    url.query_pairs_mut().append_pair(
        "options",
        "-c enable_material=off -c enable_hashjoin=off -c enable_mergejoin=off -c enable_hashagg=off",
    );
    let barrier = Arc::new(Barrier::new(CLAIMERS));
    let mut tasks = Vec::new();
    for c in 0..CLAIMERS {
        let store = Store::connect(&jobu::config::DatabaseSettings {
            max_connections: 1,
            min_connections: 0,
            ..jobu::config::DatabaseSettings::with_url(url.as_str())
        })
        .await
        .unwrap();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let worker = format!("claimer-{c}");
            let h = handlers();
            let mut largest = 0;
            let mut taken = Vec::new();
            barrier.wait().await;
            loop {
                let batch = store.claim(&claim_req(&worker, &h, LIMIT)).await.unwrap();
                if batch.is_empty() {
                    break;
                }
                largest = largest.max(batch.len());
                taken.extend(batch.into_iter().map(|r| r.id));
            }
            let _ = store.close().await;
            (largest, taken)
        }));
    }
    let mut seen = HashSet::new();
    for t in tasks {
        let (largest, taken) = t.await.unwrap();
        assert!(
            largest <= LIMIT as usize,
            "a claim of {LIMIT} took {largest} rows"
        );
        for id in taken {
            assert!(seen.insert(id), "execution {id} claimed twice");
        }
    }
    assert_eq!(seen.len(), ROWS);
    db.cleanup().await;
}

/// PostgreSQL only: an update that changes `status` is not HOT, so it writes an entry into
/// every index of the row. The fire-time key, the chain key and the unfinished-by-cron index
/// are partial on their nullable column (migration 11): ad-hoc executions, claimed and
/// finished, hold no entry in them, and the lookups by cron and by parent still use them
/// under generic plans (the prepared statements' own), including the insert-if-absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_ad_hoc_executions_stay_out_of_the_cron_indexes() {
    const AD_HOC: usize = 40;
    let Some(db) = TestDb::create(common::Backend::Postgres).await else {
        return;
    };
    let conn = db.store.connection();
    let cron = db
        .store
        .insert_cron(&NewCron::new("indexed", "0 * * * *", HANDLER))
        .await
        .unwrap();
    let t = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    assert!(matches!(
        db.store
            .create_if_absent(&execution(Some(cron.id), t, 0))
            .await
            .unwrap(),
        Created::New(_)
    ));
    assert!(matches!(
        db.store
            .create_if_absent(&execution(Some(cron.id), t, 0))
            .await
            .unwrap(),
        Created::Exists
    ));
    seed_pending(&db.store, AD_HOC, 0).await;

    // VACUUM (with its index pass forced) sets each index's reltuples to the entries it holds.
    let entries = |index: &'static str| async move {
        let row = conn
            .query_one(sea_orm::Statement::from_string(
                sea_orm::DatabaseBackend::Postgres,
                format!("SELECT reltuples::bigint FROM pg_class WHERE relname = '{index}'"),
            ))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("index {index} is missing"));
        row.try_get_by_index::<i64>(0).unwrap()
    };
    let vacuum = || conn.execute_unprepared("VACUUM (INDEX_CLEANUP ON) job_executions");

    let claimed = claim_all(&db.store, "w").await;
    assert_eq!(claimed.len(), AD_HOC);
    vacuum().await.unwrap();
    // Only the cron's own row, not the RUNNING ad-hoc ones.
    assert_eq!(entries("ix_job_executions_unfinished_job_id").await, 1);

    let endings: Vec<Finish> = claimed
        .iter()
        .map(|r| ending(r, End::Success(None)))
        .collect();
    let outcomes = db.store.finish_many(&endings).await.unwrap();
    assert!(outcomes.iter().all(Option::is_some));
    vacuum().await.unwrap();
    assert_eq!(entries("job_executions_pkey").await, AD_HOC as i64 + 1);
    for (index, expected) in [
        ("uq_job_executions_job_id_scheduled_time", 1),
        ("ux_job_executions_chain", 0),
    ] {
        assert_eq!(entries(index).await, expected, "entries of {index}");
    }

    // One connection, generic plans (what a prepared statement runs after its first uses),
    // and no sequential scan, which a table this small would prefer: can the planner prove
    // that each lookup falls inside its index's predicate?
    let txn = sea_orm::TransactionTrait::begin(conn).await.unwrap();
    txn.execute_unprepared(
        "SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_seqscan = off",
    )
    .await
    .unwrap();
    for (name, sql, index) in [
        (
            "fire_time",
            "PREPARE fire_time(bigint, timestamptz) AS SELECT id FROM job_executions \
             WHERE job_id = $1 AND scheduled_time = $2",
            "uq_job_executions_job_id_scheduled_time",
        ),
        (
            "unfinished",
            "PREPARE unfinished(bigint) AS SELECT id FROM job_executions \
             WHERE job_id = $1 AND status IN ('PENDING', 'RUNNING') LIMIT 1",
            "ix_job_executions_unfinished_job_id",
        ),
        (
            "children",
            "PREPARE children(bigint) AS SELECT id FROM job_executions \
             WHERE parent_execution_id = $1",
            "ux_job_executions_chain",
        ),
    ] {
        txn.execute_unprepared(sql).await.unwrap();
        let args = if name == "fire_time" {
            "(1, now())"
        } else {
            "(1)"
        };
        let plan: Vec<String> = txn
            .query_all(sea_orm::Statement::from_string(
                sea_orm::DatabaseBackend::Postgres,
                format!("EXPLAIN EXECUTE {name}{args}"),
            ))
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get_by_index::<String>(0).unwrap())
            .collect();
        assert!(
            plan.iter().any(|l| l.contains(index)),
            "{name} does not use {index}: {plan:#?}"
        );
    }
    txn.rollback().await.unwrap();
    db.cleanup().await;
}

/// An ad-hoc execution for bulk enqueue, telling its place by its params.
fn bulk_row(tag: &str, i: usize, due: DateTime<Utc>) -> NewExecution {
    NewExecution {
        job_id: None,
        handler_name: HANDLER.to_string(),
        scheduled_time: due,
        run_at: due + Duration::milliseconds(i as i64 % 7),
        params: Some(serde_json::json!({"tag": tag, "i": i})),
        param_source: ParamSource::Api,
        max_retry: (i % 4) as i32,
        timeout_seconds: 60 + (i % 5) as i32,
    }
}

/// Every id is the row that was given at its place.
async fn assert_bulk_rows(store: &Store, ids: &[i64], rows: &[NewExecution]) {
    assert_eq!(ids.len(), rows.len());
    let stored: HashMap<i64, job_execution::Model> = JobExecutions::find()
        .filter(job_execution::Column::Id.is_in(ids.to_vec()))
        .all(store.connection())
        .await
        .expect("read bulk rows")
        .into_iter()
        .map(|r| (r.id, r))
        .collect();
    assert_eq!(
        stored.len(),
        ids.len(),
        "ids are distinct and every row exists"
    );
    for (id, given) in ids.iter().zip(rows) {
        let row = &stored[id];
        assert_eq!(row.params, given.params, "execution {id}");
        assert_eq!(row.status, Status::Pending.as_str());
        assert_eq!(row.job_id, None);
        assert_eq!(row.handler_name, given.handler_name);
        assert_eq!(row.param_source, ParamSource::Api.as_str());
        assert_eq!(row.retry_count, 0);
        assert_eq!(row.max_retry, given.max_retry);
        assert_eq!(row.timeout_seconds, given.timeout_seconds);
        assert_eq!(row.scheduled_time, given.scheduled_time);
        assert_eq!(row.run_at, given.run_at);
        assert!(!row.cancel_requested);
        assert!(row.owner_token.is_none() && row.started_at.is_none());
    }
}

backend_test!(bulk_create_keeps_input_order, |db: TestDb| async move {
    let due = db.store.now().await.unwrap() - Duration::seconds(5);
    assert_eq!(db.store.create_many(&[]).await.unwrap(), Vec::<i64>::new());
    assert_eq!(count_status(&db.store, Status::Pending).await, 0);

    let one = vec![bulk_row("one", 0, due)];
    let ids = db.store.create_many(&one).await.unwrap();
    assert_bulk_rows(&db.store, &ids, &one).await;

    // Three statements' worth, the last one partial.
    let many: Vec<NewExecution> = (0..2500).map(|i| bulk_row("many", i, due)).collect();
    let ids = db.store.create_many(&many).await.unwrap();
    assert_bulk_rows(&db.store, &ids, &many).await;
    assert_eq!(count_status(&db.store, Status::Pending).await, 2501);

    // Every one is claimable, once.
    let h = handlers();
    let mut claimed = HashSet::new();
    loop {
        let batch = db.store.claim(&claim_req("w", &h, 500)).await.unwrap();
        if batch.is_empty() {
            break;
        }
        for row in batch {
            assert!(claimed.insert(row.id), "execution {} claimed twice", row.id);
        }
    }
    assert_eq!(claimed.len(), 2501);
    assert!(ids.iter().all(|id| claimed.contains(id)));
});

backend_test!(
    bulk_create_with_a_bad_row_creates_nothing,
    |db: TestDb| async move {
        let due = db.store.now().await.unwrap();
        let mut rows: Vec<NewExecution> = (0..2000).map(|i| bulk_row("bad", i, due)).collect();

        // A cron's row is refused before anything is written.
        rows[1700].job_id = Some(1);
        let err = db.store.create_many(&rows).await.unwrap_err();
        assert!(
            matches!(err, jobu::store::StoreError::Invalid(ref m) if m.contains("1700")),
            "{err}"
        );
        rows[1700].job_id = None;

        // A row the database refuses, in the second statement, undoes the first one too.
        match db.backend {
            common::Backend::Sqlite => {
                // SQLite does not enforce column lengths; a trigger refuses the row instead.
                db.store
                    .connection()
                    .execute_unprepared(
                        "CREATE TRIGGER refuse_boom BEFORE INSERT ON job_executions \
                         WHEN NEW.handler_name = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END",
                    )
                    .await
                    .unwrap();
                rows[1500].handler_name = "boom".into();
            }
            // Longer than the column (MySQL in its default strict mode).
            _ => rows[1500].handler_name = "x".repeat(101),
        }
        db.store
            .create_many(&rows)
            .await
            .expect_err("a row the database refuses fails the bulk");
        let total = JobExecutions::find()
            .count(db.store.connection())
            .await
            .unwrap();
        assert_eq!(total, 0, "a failed bulk left rows behind");

        // The same bulk without the bad row goes in whole.
        rows[1500].handler_name = HANDLER.into();
        let ids = db.store.create_many(&rows).await.unwrap();
        assert_bulk_rows(&db.store, &ids, &rows).await;
    }
);

backend_test!(
    concurrent_bulk_creates_get_disjoint_ids,
    |db: TestDb| async move {
        const TASKS: usize = 2;
        const ROUNDS: usize = 3;
        const ROWS: usize = 1500;
        let due = db.store.now().await.unwrap();
        let barrier = Arc::new(Barrier::new(TASKS));
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let store = db.new_store(2).await;
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                for round in 0..ROUNDS {
                    let tag = format!("t{t}-r{round}");
                    let rows: Vec<NewExecution> =
                        (0..ROWS).map(|i| bulk_row(&tag, i, due)).collect();
                    barrier.wait().await;
                    let ids = store.create_many(&rows).await.expect("concurrent bulk");
                    mine.push((rows, ids));
                }
                let _ = store.close().await;
                mine
            }));
        }
        let mut seen = HashSet::new();
        for task in tasks {
            for (rows, ids) in task.await.expect("bulk task") {
                assert_bulk_rows(&db.store, &ids, &rows).await;
                for id in ids {
                    assert!(seen.insert(id), "id {id} returned twice");
                }
            }
        }
        assert_eq!(seen.len(), TASKS * ROUNDS * ROWS);
        let total = JobExecutions::find()
            .count(db.store.connection())
            .await
            .unwrap();
        assert_eq!(total as usize, seen.len(), "rows nobody was told about");
    }
);

// ---- The dispatcher's batched creation and pages (dispatcher branch) ----

use jobu::store::crons::{CronStep, DueCron, DuePage, DueQuery, MarkerMove};

/// A cron execution as the dispatcher would create it.
fn fire_of(cron: &jobu::entities::cron_job::Model, at: DateTime<Utc>) -> NewExecution {
    NewExecution {
        job_id: Some(cron.id),
        handler_name: cron.handler_name.clone(),
        scheduled_time: at,
        run_at: at,
        params: cron.handler_params.clone(),
        param_source: ParamSource::Cron,
        max_retry: cron.max_retry,
        timeout_seconds: cron.timeout_seconds,
    }
}

async fn executions_of_cron(store: &Store, job_id: i64) -> Vec<job_execution::Model> {
    let mut rows = JobExecutions::find()
        .filter(job_execution::Column::JobId.eq(job_id))
        .all(store.connection())
        .await
        .expect("rows");
    rows.sort_by_key(|r| r.scheduled_time);
    rows
}

/// `n` enabled crons `prefix-i`, every minute.
async fn insert_crons(
    store: &Store,
    prefix: &str,
    n: usize,
) -> Vec<jobu::entities::cron_job::Model> {
    let mut crons = Vec::with_capacity(n);
    for i in 0..n {
        crons.push(
            store
                .insert_cron(&NewCron::new(
                    &format!("{prefix}-{i}"),
                    "* * * * *",
                    HANDLER,
                ))
                .await
                .unwrap(),
        );
    }
    crons
}

/// Makes a row CANCELLED for `reason`, as a disable or an operator would have left it.
async fn mark_cancelled(store: &Store, id: i64, reason: CancelReason) {
    JobExecutions::update_many()
        .col_expr(
            job_execution::Column::Status,
            Status::Cancelled.as_str().into(),
        )
        .col_expr(
            job_execution::Column::CancelReason,
            Some(reason.as_str()).into(),
        )
        .filter(job_execution::Column::Id.eq(id))
        .exec(store.connection())
        .await
        .unwrap();
}

backend_test!(
    batched_creation_reports_new_exists_and_rearms,
    |db: TestDb| async move {
        let a = db
            .store
            .insert_cron(&NewCron::new("batch-a", "* * * * *", HANDLER))
            .await
            .unwrap();
        let mut b = NewCron::new("batch-b", "* * * * *", HANDLER);
        b.handler_params = Some(serde_json::json!({"b": 1}));
        let b = db.store.insert_cron(&b).await.unwrap();
        let t1 = Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap();
        let t2 = t1 + Duration::minutes(1);
        let rows = vec![
            fire_of(&a, t1),
            fire_of(&a, t2),
            fire_of(&b, t1),
            fire_of(&a, t1),
        ];
        let got = db.store.create_many_if_absent(&rows).await.unwrap();
        assert!(got[..3].iter().all(|c| c.is_new()), "{got:?}");
        assert_eq!(got[3], Created::Exists, "a repeat within the batch");
        let again = db.store.create_many_if_absent(&rows).await.unwrap();
        assert!(again.iter().all(|c| *c == Created::Exists), "{again:?}");
        assert_eq!(executions_of_cron(&db.store, a.id).await.len(), 2);
        let b_rows = executions_of_cron(&db.store, b.id).await;
        assert_eq!(b_rows[0].params, Some(serde_json::json!({"b": 1})));
        assert_eq!(b_rows[0].status, Status::Pending.as_str());

        // Unscheduled rows are re-armed, with the params given now; an operator's cancel is
        // final.
        let Created::New(b_id) = got[2] else { panic!() };
        let Created::New(a2_id) = got[1] else {
            panic!()
        };
        mark_cancelled(&db.store, b_id, CancelReason::Unscheduled).await;
        mark_cancelled(&db.store, a2_id, CancelReason::Operator).await;
        let mut rearmed = fire_of(&b, t1);
        rearmed.params = Some(serde_json::json!({"b": 2}));
        let got = db
            .store
            .create_many_if_absent(&[fire_of(&a, t2), rearmed.clone(), fire_of(&b, t2)])
            .await
            .unwrap();
        assert_eq!(got[0], Created::Exists, "an operator's cancel stays");
        assert_eq!(got[1], Created::New(b_id), "re-armed in place");
        assert!(got[2].is_new());
        let row = db.store.execution(b_id).await.unwrap().unwrap();
        assert_eq!(row.status, Status::Pending.as_str());
        assert_eq!(row.params, Some(serde_json::json!({"b": 2})));
        assert_eq!(row.cancel_reason, None);
        let row = db.store.execution(a2_id).await.unwrap().unwrap();
        assert_eq!(row.status, Status::Cancelled.as_str());
        // Re-armed once: a second batch finds it PENDING.
        assert_eq!(
            db.store.create_many_if_absent(&[rearmed]).await.unwrap(),
            vec![Created::Exists]
        );

        // Ad-hoc rows are refused; a missing cron fails the batch and writes nothing of it.
        assert!(db
            .store
            .create_many_if_absent(&[execution(None, t1, 0)])
            .await
            .is_err());
        let mut ghost = fire_of(&a, t1 + Duration::hours(1));
        ghost.job_id = Some(b.id + 1000);
        let before = JobExecutions::find()
            .count(db.store.connection())
            .await
            .unwrap();
        assert!(db
            .store
            .create_many_if_absent(&[fire_of(&a, t1 + Duration::hours(2)), ghost])
            .await
            .is_err());
        assert_eq!(
            JobExecutions::find()
                .count(db.store.connection())
                .await
                .unwrap(),
            before
        );

        // More rows than one statement takes: 2,500 over five crons.
        let crons = insert_crons(&db.store, "batch-many", 5).await;
        let many: Vec<NewExecution> = (0..500)
            .flat_map(|m| {
                crons
                    .iter()
                    .map(move |c| fire_of(c, t1 + Duration::minutes(m)))
                    .collect::<Vec<_>>()
            })
            .collect();
        let got = db.store.create_many_if_absent(&many).await.unwrap();
        assert_eq!(got.iter().filter(|c| c.is_new()).count(), 2500);
        let ids: HashSet<i64> = got
            .iter()
            .map(|c| match c {
                Created::New(id) => *id,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids.len(), 2500, "each row reports its own id");
        for c in &crons {
            assert_eq!(executions_of_cron(&db.store, c.id).await.len(), 500);
        }
    }
);

async fn marker_of(store: &Store, id: i64) -> jobu::entities::cron_job::Model {
    store.cron(id).await.unwrap().expect("cron")
}

backend_test!(
    due_summary_says_when_crons_are_due,
    |db: TestDb| async move {
        let empty = db.store.due_summary(60.0).await.unwrap();
        assert_eq!(
            (
                empty.next_overlap,
                empty.next_exclusive,
                empty.unmarked,
                empty.due_soon
            ),
            (None, None, 0, 0)
        );
        let crons = insert_crons(&db.store, "summary", 4).await;
        let mut exclusive = NewCron::new("summary-exclusive", "* * * * *", HANDLER);
        exclusive.overlap_policy = jobu::entities::cron_job::OverlapPolicy::Skip;
        let exclusive = db.store.insert_cron(&exclusive).await.unwrap();
        let now = db.store.now().await.unwrap();
        let soon = DateTime::from_timestamp(now.timestamp() + 30, 0).unwrap();
        let later = soon + Duration::hours(1);
        for (cron, at) in [(&crons[0], soon), (&crons[1], later)] {
            assert!(db
                .store
                .advance_marker(cron.id, None, at, None)
                .await
                .unwrap());
        }
        assert!(db
            .store
            .advance_marker(exclusive.id, None, soon - Duration::seconds(10), None)
            .await
            .unwrap());
        // A disabled cron counts for nothing.
        db.store
            .update_cron(
                crons[3].clone(),
                &CronChanges {
                    is_enabled: Some(false),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let s = db.store.due_summary(60.0).await.unwrap();
        assert_eq!(s.next_overlap, Some(soon));
        assert_eq!(s.next_exclusive, Some(soon - Duration::seconds(10)));
        assert_eq!(s.unmarked, 1, "crons[2] has no marker yet");
        assert_eq!(s.due_soon, 1, "only crons[0] is due within a minute");
        assert!((s.now - now).num_seconds().abs() < 5);
    }
);

/// Plans each cron as the dispatcher would for `* * * * *`: its marker (or `base`) and the
/// minute after, then the marker two minutes on.
fn two_minutes_from(base: DateTime<Utc>) -> impl FnMut(&[DueCron]) -> Vec<(CronStep, ())> {
    move |crons: &[DueCron]| {
        crons
            .iter()
            .map(|c| {
                let first = c.next_fire_time.unwrap_or(base);
                let new = |at: DateTime<Utc>| NewExecution {
                    job_id: Some(c.id),
                    handler_name: c.handler_name.clone(),
                    scheduled_time: at,
                    run_at: at,
                    params: c.handler_params.clone(),
                    param_source: ParamSource::Cron,
                    max_retry: c.max_retry,
                    timeout_seconds: c.timeout_seconds,
                };
                (
                    CronStep {
                        cron_id: c.id,
                        create: vec![new(first), new(first + Duration::minutes(1))],
                        policy: c.overlap_policy.parse().expect("policy"),
                        ledger: Vec::new(),
                        marker: MarkerMove::To(first + Duration::minutes(2)),
                    },
                    (),
                )
            })
            .collect()
    }
}

/// [`two_minutes_from`] with its steps reversed: a plan the page refuses.
fn out_of_order(base: DateTime<Utc>) -> impl FnMut(&[DueCron]) -> Vec<(CronStep, ())> {
    let mut plan = two_minutes_from(base);
    move |crons: &[DueCron]| {
        let mut steps = plan(crons);
        steps.reverse();
        steps
    }
}

fn page_query(now: DateTime<Utc>, after_id: i64, limit: u64) -> DueQuery {
    DueQuery {
        after_id,
        limit,
        horizon: now + Duration::seconds(10),
        now,
    }
}

// A page that fails ends its transaction before it returns: a transaction left to drop
// keeps its crons locked until the pool next touches the connection, so another
// dispatcher's page right after it would skip them (PostgreSQL, MySQL) or wait on the file
// (SQLite). The test blocks its only runtime thread while another process takes the page,
// so nothing the failed page left to a background task can happen meanwhile.
backend_test!(
    current_thread a_failed_dispatch_page_leaves_its_crons_to_the_next_at_once,
    |db: TestDb| async move {
        let crons = insert_crons(&db.store, "failed-page", 3).await;
        let now = db.store.now().await.unwrap();
        let t0 = DateTime::from_timestamp(now.timestamp() - 60, 0).unwrap();
        for c in &crons {
            assert!(db.store.advance_marker(c.id, None, t0, None).await.unwrap());
        }
        let bad = db
            .store
            .dispatch_due(&page_query(now, 0, 100), out_of_order(t0))
            .await;
        assert!(bad.is_err());
        let other = db.clone();
        let page = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let store = other.new_store(2).await;
                // SQLite would wait out its busy timeout on a held write lock.
                tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    store.dispatch_due(&page_query(now, 0, 100), two_minutes_from(t0)),
                )
                .await
                .map_err(|_| "the next page waited on the failed page's lock".to_string())
                .and_then(|page: Result<DuePage<()>, _>| page.map_err(|e| e.to_string()))
                .map(|page| page.claimed)
            })
        })
        .join()
        .unwrap();
        assert_eq!(page, Ok(3), "the next page takes every due cron");
    }
);

backend_test!(
    a_dispatch_page_creates_then_moves_its_markers,
    |db: TestDb| async move {
        let crons = insert_crons(&db.store, "page", 3).await;
        let mut exclusive = NewCron::new("page-exclusive", "* * * * *", HANDLER);
        exclusive.overlap_policy = jobu::entities::cron_job::OverlapPolicy::Skip;
        let exclusive = db.store.insert_cron(&exclusive).await.unwrap();
        let mut off = NewCron::new("page-off", "* * * * *", HANDLER);
        off.is_enabled = false;
        let off = db.store.insert_cron(&off).await.unwrap();
        let later = insert_crons(&db.store, "page-later", 1).await.remove(0);
        let now = db.store.now().await.unwrap();
        let t0 = DateTime::from_timestamp(now.timestamp() - 60, 0).unwrap();
        for c in [&crons[0], &crons[1], &exclusive] {
            assert!(db.store.advance_marker(c.id, None, t0, None).await.unwrap());
        }
        assert!(db
            .store
            .advance_marker(later.id, None, now + Duration::hours(1), None)
            .await
            .unwrap());
        // The exclusive cron has an unfinished execution: its fire times are skipped.
        db.store
            .create_if_absent(&fire_of(&exclusive, t0 - Duration::hours(1)))
            .await
            .unwrap();

        // A planner must decide on a prefix of its crons, in order; otherwise nothing of the
        // page is written.
        let bad = db
            .store
            .dispatch_due(&page_query(now, 0, 100), out_of_order(t0))
            .await;
        assert!(bad.is_err());
        assert_eq!(
            marker_of(&db.store, crons[0].id).await.next_fire_time,
            Some(t0)
        );
        assert!(executions_of_cron(&db.store, crons[0].id).await.is_empty());

        // A prefix: the first cron only.
        let mut plan = two_minutes_from(t0);
        let first: DuePage<()> = db
            .store
            .dispatch_due(&page_query(now, 0, 100), |crons: &[DueCron]| {
                let mut steps = plan(crons);
                steps.truncate(1);
                steps
            })
            .await
            .unwrap();
        // Due: the three crons with a marker in the past or none; not the disabled one, nor
        // the one due in an hour.
        assert_eq!(first.claimed, 4, "{first:?}");
        assert_eq!(first.last_id, Some(crons[0].id));
        assert_eq!(first.steps.len(), 1);
        let page: DuePage<()> = db
            .store
            .dispatch_due(
                &page_query(now, crons[0].id, 100),
                two_minutes_from(t0 + Duration::minutes(10)),
            )
            .await
            .unwrap();
        assert_eq!(page.claimed, 3);
        let ids: Vec<i64> = page.steps.iter().map(|(s, _)| s.cron_id).collect();
        assert_eq!(ids, vec![crons[1].id, crons[2].id, exclusive.id]);
        for (done, ()) in first.steps.iter().chain(&page.steps) {
            assert!(done.marker_moved, "{done:?}");
            let want = if done.cron_id == exclusive.id {
                vec![Created::Overlap, Created::Overlap]
            } else {
                vec![Created::New(0), Created::New(0)]
            };
            let got: Vec<Created> = done
                .created
                .iter()
                .map(|(_, c)| match c {
                    Created::New(_) => Created::New(0),
                    other => *other,
                })
                .collect();
            assert_eq!(got, want, "{done:?}");
        }
        // Markers moved after the rows, with the last fire time created.
        let c0 = marker_of(&db.store, crons[0].id).await;
        assert_eq!(c0.next_fire_time, Some(t0 + Duration::minutes(2)));
        assert_eq!(c0.last_fire_time, Some(t0 + Duration::minutes(1)));
        assert_eq!(executions_of_cron(&db.store, crons[0].id).await.len(), 2);
        let c2 = marker_of(&db.store, crons[2].id).await;
        assert_eq!(
            c2.next_fire_time,
            Some(t0 + Duration::minutes(12)),
            "from no marker"
        );
        let ex = marker_of(&db.store, exclusive.id).await;
        assert_eq!(ex.next_fire_time, Some(t0 + Duration::minutes(2)));
        assert_eq!(ex.last_fire_time, None, "nothing created");
        // The ledger: both fire times recorded SKIPPED, behind the unfinished one.
        let ex_rows = executions_of_cron(&db.store, exclusive.id).await;
        let statuses: Vec<&str> = ex_rows.iter().map(|r| r.status.as_str()).collect();
        assert_eq!(statuses, ["PENDING", "SKIPPED", "SKIPPED"]);
        assert_eq!(
            ex_rows[1..]
                .iter()
                .map(|r| r.scheduled_time)
                .collect::<Vec<_>>(),
            [t0, t0 + Duration::minutes(1)]
        );
        assert!(executions_of_cron(&db.store, off.id).await.is_empty());
        assert!(executions_of_cron(&db.store, later.id).await.is_empty());

        // Nothing is due any more; and a page of nothing asks the planner nothing.
        let empty: DuePage<()> = db
            .store
            .dispatch_due(&page_query(now, 0, 100), |_: &[DueCron]| {
                panic!("no crons, no plan")
            })
            .await
            .unwrap();
        assert_eq!((empty.claimed, empty.last_id), (0, None));

        // Clearing a marker, and a marker that stays.
        let mut due_now = now + Duration::minutes(30);
        let page: DuePage<()> = db
            .store
            .dispatch_due(
                &DueQuery {
                    after_id: 0,
                    limit: 100,
                    horizon: now + Duration::hours(2),
                    now: now + Duration::hours(2),
                },
                |crons: &[DueCron]| {
                    crons
                        .iter()
                        .map(|c| {
                            due_now = due_now.max(c.next_fire_time.unwrap_or(due_now));
                            let marker = if c.id == later.id {
                                MarkerMove::Clear
                            } else {
                                MarkerMove::Keep
                            };
                            (
                                CronStep {
                                    cron_id: c.id,
                                    create: Vec::new(),
                                    policy: jobu::entities::cron_job::OverlapPolicy::Allow,
                                    ledger: Vec::new(),
                                    marker,
                                },
                                (),
                            )
                        })
                        .collect()
                },
            )
            .await
            .unwrap();
        assert_eq!(page.claimed, 5);
        for (done, ()) in &page.steps {
            assert_eq!(done.marker_moved, done.cron_id == later.id, "{done:?}");
        }
        assert_eq!(marker_of(&db.store, later.id).await.next_fire_time, None);
        assert_eq!(
            c0.next_fire_time,
            marker_of(&db.store, crons[0].id).await.next_fire_time
        );
    }
);

/// Runs passes of pages of `limit` until a pass finds nothing due; returns the crons this
/// dispatcher decided on.
async fn dispatch_until_done(
    store: &Store,
    now: DateTime<Utc>,
    base: DateTime<Utc>,
    limit: u64,
) -> usize {
    let mut decided = 0;
    loop {
        let mut after_id = 0;
        let mut pass = 0;
        loop {
            let page: DuePage<()> = store
                .dispatch_due(&page_query(now, after_id, limit), two_minutes_from(base))
                .await
                .expect("page");
            pass += page.steps.len();
            match page.last_id {
                Some(id) => after_id = id,
                None => break,
            }
            if page.claimed < limit as usize {
                break;
            }
        }
        decided += pass;
        if pass == 0 {
            let summary = store.due_summary(60.0).await.expect("summary");
            let left = summary
                .next_overlap
                .is_some_and(|t| t <= now + Duration::seconds(10))
                || summary.unmarked > 0;
            if !left {
                return decided;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// Every cron has exactly the rows of `base` and the minute after, and its marker two
/// minutes on.
async fn assert_each_fire_time_once(db: &TestDb, prefix: &str, base: DateTime<Utc>) {
    let crons: Vec<_> = CronJobs::find()
        .filter(jobu::entities::cron_job::Column::Name.starts_with(prefix))
        .all(db.store.connection())
        .await
        .unwrap();
    let rows = JobExecutions::find()
        .all(db.store.connection())
        .await
        .unwrap();
    let mut per: HashMap<(i64, DateTime<Utc>), usize> = HashMap::new();
    for r in &rows {
        *per.entry((r.job_id.expect("cron row"), r.scheduled_time))
            .or_default() += 1;
    }
    for c in &crons {
        for at in [base, base + Duration::minutes(1)] {
            assert_eq!(per.get(&(c.id, at)), Some(&1), "cron {} at {at}", c.id);
        }
        assert_eq!(
            c.next_fire_time,
            Some(base + Duration::minutes(2)),
            "cron {}",
            c.id
        );
    }
    assert_eq!(rows.len(), 2 * crons.len(), "nothing else was created");
}

backend_test!(
    racing_dispatchers_share_pages_and_create_each_fire_time_once,
    |db: TestDb| async move {
        const CRONS: usize = 300;
        const LIMIT: u64 = 10;
        insert_crons(&db.store, "race", CRONS).await;
        let now = db.store.now().await.unwrap();
        let base = DateTime::from_timestamp(now.timestamp() + 5, 0).unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let store = db.new_store(2).await;
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let decided = dispatch_until_done(&store, now, base, LIMIT).await;
                let _ = store.close().await;
                decided
            }));
        }
        let mut shares = Vec::new();
        for t in tasks {
            shares.push(t.await.unwrap());
        }
        assert_each_fire_time_once(&db, "race", base).await;
        assert_eq!(
            shares.iter().sum::<usize>(),
            CRONS,
            "each cron decided once: {shares:?}"
        );
        // Pages are disjoint where rows can be locked apart; SQLite takes writers in turn.
        if db.backend != common::Backend::Sqlite {
            assert!(
                shares.iter().all(|s| *s >= CRONS / 5),
                "both dispatchers took a share: {shares:?}"
            );
        }
    }
);

backend_test!(
    a_dispatcher_dying_mid_page_leaves_its_crons_to_the_others,
    |db: TestDb| async move {
        const CRONS: usize = 60;
        insert_crons(&db.store, "dying", CRONS).await;
        let now = db.store.now().await.unwrap();
        let base = DateTime::from_timestamp(now.timestamp() + 5, 0).unwrap();
        // The first dispatcher locks a page of 20, stalls, then dies without committing.
        let (locked_tx, locked_rx) = tokio::sync::oneshot::channel::<()>();
        let doomed = db.new_store(1).await;
        let dying = tokio::spawn(async move {
            let mut locked = Some(locked_tx);
            let _ = doomed
                .dispatch_due(
                    &page_query(now, 0, 20),
                    move |_: &[DueCron]| -> Vec<(CronStep, ())> {
                        if let Some(tx) = locked.take() {
                            let _ = tx.send(());
                        }
                        std::thread::sleep(std::time::Duration::from_millis(1500));
                        panic!("the dispatcher dies holding its page");
                    },
                )
                .await;
        });
        locked_rx.await.unwrap();
        let survivor = db.new_store(2).await;
        let decided = dispatch_until_done(&survivor, now, base, 7).await;
        assert!(dying.await.is_err(), "the first dispatcher died");
        assert_eq!(decided, CRONS, "the survivor decided on every cron");
        assert_each_fire_time_once(&db, "dying", base).await;
        let _ = survivor.close().await;
    }
);
