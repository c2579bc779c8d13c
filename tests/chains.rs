//! Chains at run time (`store::chain_start`), on every backend: a cron A that starts B on
//! success and C on failure, run by real dispatchers and workers (the built binary) with
//! retries deciding A's outcome, then every A counted against its children and the
//! children's own output; `start_chains` raced from many pools at once; the dispatchers'
//! sweep starting the chains nobody started; children that cannot run recorded SKIPPED with
//! the reason; and the API refusing chains that loop.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use jobu::entities::cron_job::OverlapPolicy;
use jobu::entities::job_execution::{self, ParamSource, Status};
use jobu::store::create::{Created, NewExecution};
use jobu::store::crons::NewCron;
use jobu::store::dialect::Sql;
use jobu::store::Store;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{json, Value};

use common::admin::AdminServer;
use common::process::{eventually, on_backends, Daemon};
use common::{executions_of, Backend, TestDb};

/// A schedule that does not fire while a test runs (29 February, midnight).
const NEVER: &str = "0 0 29 2 *";

/// Every row a chain created, oldest first.
async fn chained_rows(store: &Store) -> Vec<job_execution::Model> {
    job_execution::Entity::find()
        .filter(job_execution::Column::ParentExecutionId.is_not_null())
        .order_by_asc(job_execution::Column::Id)
        .all(store.connection())
        .await
        .expect("read chained rows")
}

/// The children of each parent.
fn by_parent(rows: &[job_execution::Model]) -> BTreeMap<i64, Vec<&job_execution::Model>> {
    let mut m: BTreeMap<i64, Vec<&job_execution::Model>> = BTreeMap::new();
    for r in rows {
        if let Some(p) = r.parent_execution_id {
            m.entry(p).or_default().push(r);
        }
    }
    m
}

async fn cron(store: &Store, name: &str, setup: impl FnOnce(&mut NewCron)) -> i64 {
    let mut c = NewCron::new(name, NEVER, "noop");
    c.max_retry = 0;
    setup(&mut c);
    store.insert_cron(&c).await.expect("insert cron").id
}

/// An execution of `cron` that has ended `status` by the database clock, as a worker (or
/// the rescuer) would have recorded it; `offset_ms` keeps fire times apart. With
/// `finished_at`, that instant instead of now; with `scheduled`, that fire time.
async fn ended(
    store: &Store,
    cron: i64,
    status: Status,
    offset_ms: i64,
    scheduled: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
) -> i64 {
    let now = store.now().await.expect("clock");
    let at = scheduled.unwrap_or(now - chrono::Duration::seconds(10))
        + chrono::Duration::milliseconds(offset_ms);
    let new = NewExecution {
        job_id: Some(cron),
        handler_name: "noop".into(),
        scheduled_time: at,
        run_at: at,
        params: None,
        param_source: ParamSource::Cron,
        max_retry: 0,
        timeout_seconds: 30,
    };
    let Created::New(id) = store.create_if_absent(&new).await.expect("create") else {
        panic!("parent not created");
    };
    let mut q = Sql::new(store.dialect());
    q.push("UPDATE job_executions SET status = ")
        .status(status)
        .push(", result = ")
        .bind(
            (status == Status::Success)
                .then(|| json!({"parent": id}))
                .map(Box::new)
                .map_or(sea_orm::Value::Json(None), |v| {
                    sea_orm::Value::Json(Some(v))
                }),
        )
        .push(", error_message = ")
        .bind((status != Status::Success).then(|| format!("parent {id} failed")))
        .push(", started_at = ")
        .now()
        .push(", finished_at = ");
    match finished_at {
        Some(t) => q.bind(t),
        None => q.now(),
    };
    q.push(" WHERE id = ").bind(id);
    store
        .connection()
        .execute(q.build())
        .await
        .expect("end parent");
    id
}

/// Many pools call `start_chains` for the same parents at once (and two parents start the
/// same cron in the same instant): one child per (parent, chained cron), of the cron the
/// outcome names, and the calls' answers add up to the rows.
mod racing_start_chains_make_one_child_each {
    use super::*;

    async fn body(db: TestDb) {
        // A deleted cron has no row to lock: only the chain key keeps its child single (the
        // lowest id, so it comes before the other cron, whose lock would serialise them).
        let gone = cron(&db.store, "gone", |_| {}).await;
        let b = cron(&db.store, "b", |_| {}).await;
        let c = cron(&db.store, "c", |_| {}).await;
        let a = cron(&db.store, "a", |a| {
            a.on_success = vec![b];
            a.on_failure = vec![c, gone];
        })
        .await;
        assert!(db.store.delete_cron(gone).await.expect("delete"));
        let mut parents = BTreeMap::new();
        for i in 0..24 {
            let status = match i % 3 {
                0 => Status::Success,
                1 => Status::Failed,
                _ => Status::Timeout,
            };
            parents.insert(ended(&db.store, a, status, i, None, None).await, status);
        }
        let ids: Vec<i64> = parents.keys().copied().collect();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = db.new_store(2).await;
            let mut ids = ids.clone();
            if i % 2 == 1 {
                ids.reverse();
            }
            tasks.push(tokio::spawn(async move {
                store.start_chains(&ids).await.expect("start chains")
            }));
        }
        let mut created = 0;
        for t in tasks {
            created += t.await.expect("task").len();
        }
        let rows = chained_rows(&db.store).await;
        assert_eq!(created, rows.len(), "answers and rows differ: {rows:#?}");
        let children = by_parent(&rows);
        assert_eq!(children.len(), parents.len(), "{rows:#?}");
        for (parent, status) in &parents {
            let kids = &children[parent];
            let want = if *status == Status::Success { b } else { c };
            let kid = kids
                .iter()
                .find(|k| k.chain_child == Some(want))
                .unwrap_or_else(|| panic!("parent {parent}: {kids:#?}"));
            assert_eq!(kid.job_id, Some(want), "{kid:?}");
            assert_eq!(kid.status, "PENDING", "{kid:?}");
            assert_eq!(kid.param_source, "chain", "{kid:?}");
            assert_eq!(kid.handler_name, "noop", "{kid:?}");
            if *status == Status::Success {
                assert_eq!(kids.len(), 1, "parent {parent}: {kids:#?}");
            } else {
                assert_eq!(kids.len(), 2, "parent {parent}: {kids:#?}");
                let skipped = kids
                    .iter()
                    .find(|k| k.chain_child == Some(gone))
                    .unwrap_or_else(|| panic!("parent {parent}: {kids:#?}"));
                assert_eq!((skipped.job_id, skipped.status.as_str()), (None, "SKIPPED"));
            }
        }
        assert_eq!(
            rows.iter().filter(|r| r.chain_child == Some(b)).count(),
            8,
            "every successful parent started b, at whatever instant: {rows:#?}"
        );
        // Again, and the sweep once the grace has passed: nothing more.
        assert!(db.store.start_chains(&ids).await.expect("again").is_empty());
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(db
            .store
            .unchained_parents(100)
            .await
            .expect("sweep")
            .is_empty());
        assert_eq!(chained_rows(&db.store).await.len(), rows.len());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite() {
        common::run(Backend::Sqlite, body).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres() {
        common::run(Backend::Postgres, body).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn mysql() {
        common::run(Backend::MySql, body).await
    }
}

/// Children that cannot run: a disabled cron (SKIPPED on it), a deleted one (SKIPPED with no
/// cron, `chain_child` naming it), an exclusive one that is busy (SKIPPED by its policy, or
/// WAITING for `buffer_one`); a free one runs with its own handler and params.
mod children_that_cannot_run_are_recorded_skipped {
    use super::*;

    async fn body(db: TestDb) {
        let s = &db.store;
        let disabled = cron(s, "disabled", |c| c.is_enabled = false).await;
        let deleted = cron(s, "deleted", |_| {}).await;
        let skip = cron(s, "skip", |c| c.overlap_policy = OverlapPolicy::Skip).await;
        let buffer = cron(s, "buffer", |c| c.overlap_policy = OverlapPolicy::BufferOne).await;
        let free = cron(s, "free", |c| {
            c.handler_name = "sleep".into();
            c.handler_params = Some(json!({"seconds": 0.1}));
            c.max_retry = 2;
            c.timeout_seconds = 40;
        })
        .await;
        let a = cron(s, "a", |c| {
            c.on_success = vec![disabled, deleted, skip, buffer, free];
        })
        .await;
        // The exclusive ones are busy.
        let now = s.now().await.expect("clock");
        for busy in [skip, buffer] {
            let new = NewExecution {
                job_id: Some(busy),
                handler_name: "noop".into(),
                scheduled_time: now,
                run_at: now + chrono::Duration::hours(1),
                params: None,
                param_source: ParamSource::Manual,
                max_retry: 0,
                timeout_seconds: 30,
            };
            assert!(s.create_exclusive(&new).await.expect("busy").is_new());
        }
        assert!(s.delete_cron(deleted).await.expect("delete"));
        let parent = ended(s, a, Status::Success, 0, None, None).await;
        let started = s.start_chains(&[parent]).await.expect("start");
        assert_eq!(started.len(), 5, "{started:#?}");
        let rows = chained_rows(s).await;
        let of = |child: i64| {
            rows.iter()
                .find(|r| r.chain_child == Some(child))
                .unwrap_or_else(|| panic!("no child for cron {child}: {rows:#?}"))
        };
        for r in &rows {
            assert_eq!(r.parent_execution_id, Some(parent), "{r:?}");
            assert_eq!(r.param_source, "chain", "{r:?}");
        }
        let skipped = |r: &job_execution::Model, words: &[&str]| {
            assert_eq!(r.status, "SKIPPED", "{r:?}");
            assert!(r.finished_at.is_some() && r.started_at.is_none(), "{r:?}");
            let reason = r.error_message.as_deref().unwrap_or_default();
            for w in words {
                assert!(reason.contains(w), "{w:?} not in {reason:?}");
            }
        };
        let r = of(disabled);
        assert_eq!(r.job_id, Some(disabled));
        skipped(r, &["disabled", &format!("cron {disabled}"), "on_success"]);
        let r = of(deleted);
        assert_eq!(r.job_id, None, "{r:?}");
        assert_eq!(r.handler_name, "", "{r:?}");
        skipped(
            r,
            &[&format!(
                "cron {deleted} named in on_success of cron {a} does not exist"
            )],
        );
        let r = of(skip);
        assert_eq!(r.job_id, Some(skip));
        skipped(r, &["overlap policy skip"]);
        let r = of(buffer);
        assert_eq!((r.job_id, r.status.as_str()), (Some(buffer), "WAITING"));
        let r = of(free);
        assert_eq!((r.job_id, r.status.as_str()), (Some(free), "PENDING"));
        assert_eq!(r.handler_name, "sleep");
        assert_eq!(r.params, Some(json!({"seconds": 0.1})));
        assert_eq!((r.max_retry, r.timeout_seconds), (2, 40));
        // Each reported as the rows say.
        for c in &started {
            let row = rows.iter().find(|r| r.id == c.execution_id).expect("row");
            assert_eq!(row.status, c.status.as_str(), "{c:?}");
            assert_eq!(row.chain_child, Some(c.chain_child));
        }
        // Once only, whoever asks again.
        assert!(s.start_chains(&[parent]).await.expect("again").is_empty());
        assert_eq!(chained_rows(s).await.len(), 5);
        // What a child's handler is told of its parent.
        let outcome = s
            .parent_outcome(parent)
            .await
            .expect("read")
            .expect("parent");
        assert_eq!(outcome.status, "SUCCESS");
        assert_eq!(outcome.result, Some(json!({"parent": parent})));
        assert!(s.parent_outcome(i64::MAX).await.expect("read").is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite() {
        common::run(Backend::Sqlite, body).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres() {
        common::run(Backend::Postgres, body).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn mysql() {
        common::run(Backend::MySql, body).await
    }
}

/// A parent whose recorder died before starting its chains (written final straight into the
/// table, no worker running): the sweep finds exactly the parents that should start
/// something, and a dispatcher process starts their children; cancelled parents, parents
/// that ended before their cron had chains, parents past the horizon and parents of crons
/// without chains are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dispatchers_sweep_starts_chains_nobody_started() {
    on_backends("chains-sweep", &Backend::ALL, |db, scratch| async move {
        let s = &db.store;
        let b = cron(s, "b", |_| {}).await;
        let c = cron(s, "c", |_| {}).await;
        let plain = cron(s, "plain", |_| {}).await;
        let success_only = cron(s, "success-only", |x| x.on_success = vec![b]).await;
        let a = cron(s, "a", |x| {
            x.on_success = vec![b];
            x.on_failure = vec![c];
        })
        .await;
        let since = job_execution_cron_since(s, a).await;
        let now = s.now().await.expect("clock");
        let ok = ended(s, a, Status::Success, 0, None, None).await;
        let failed = ended(s, a, Status::Failed, 1, None, None).await;
        let timeout = ended(s, a, Status::Timeout, 2, None, None).await;
        let cancelled = ended(s, a, Status::Cancelled, 3, None, None).await;
        let before = ended(
            s,
            a,
            Status::Success,
            4,
            None,
            Some(since - chrono::Duration::seconds(1)),
        )
        .await;
        let old = ended(
            s,
            a,
            Status::Success,
            5,
            Some(now - chrono::Duration::hours(25)),
            None,
        )
        .await;
        let no_chains = ended(s, plain, Status::Success, 6, None, None).await;
        let no_failure_list = ended(s, success_only, Status::Failed, 7, None, None).await;
        // Just ended: the recorder's own business for a moment.
        assert!(s.unchained_parents(100).await.expect("sweep").is_empty());
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let found: BTreeSet<i64> = s
            .unchained_parents(100)
            .await
            .expect("sweep")
            .into_iter()
            .collect();
        assert_eq!(found, BTreeSet::from([ok, failed, timeout]));

        let _dispatcher = Daemon::start(&scratch, &db, "dispatcher", "d0", &[]);
        let done = eventually(Duration::from_secs(30), || async {
            by_parent(&chained_rows(s).await).len() == 3
        })
        .await;
        assert!(done, "{:#?}", chained_rows(s).await);
        // A few more sweeps start nothing else.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let rows = chained_rows(s).await;
        let children = by_parent(&rows);
        assert_eq!(rows.len(), 3, "{rows:#?}");
        assert_eq!(children[&ok][0].chain_child, Some(b));
        assert_eq!(children[&failed][0].chain_child, Some(c));
        assert_eq!(children[&timeout][0].chain_child, Some(c));
        for p in [cancelled, before, old, no_chains, no_failure_list] {
            assert!(!children.contains_key(&p), "{p} got a child: {rows:#?}");
        }
        assert!(s.unchained_parents(100).await.expect("sweep").is_empty());
    })
    .await;
}

async fn job_execution_cron_since(store: &Store, id: i64) -> DateTime<Utc> {
    store
        .cron(id)
        .await
        .expect("read cron")
        .expect("cron")
        .chains_since
        .expect("chains_since")
}

/// The test: A fires every second under two dispatchers and two workers; an even
/// execution id fails its first attempt and succeeds on the retry, an odd one fails both.
/// Each successful A starts one B, each failed A one C (never both, never twice), children
/// carry their parent, and each child's shell output shows the parent it was told about.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn success_starts_b_failure_starts_c_once_each_under_real_processes() {
    on_backends("chains-run", &Backend::ALL, |db, scratch| async move {
        let admin = AdminServer::start(&db, "admin", "chains-run-admin", &[]).await;
        let api = &admin.api;
        let child = |name: &str, file: &str| {
            json!({
                "name": name,
                "cron_expression": NEVER,
                "handler_name": "shell",
                "handler_params": {"command": format!(
                    "printf '%s|%s|%s|%s|%s\\n' \"$JOBU_EXECUTION_ID\" \"$JOBU_PARENT_EXECUTION_ID\" \
                     \"$JOBU_PARENT_STATUS\" \"$JOBU_PARENT_RESULT\" \
                     \"$(printf %s \"$JOBU_PARENT_ERROR\" | tr '\\n' ' ')\" >> {file}"
                )},
                "max_retry": 0,
                "timeout_seconds": 30,
            })
        };
        let b = api.post("/api/crons", &child("b", "b.txt")).await.expect(201)["id"]
            .as_i64()
            .expect("id");
        let c = api.post("/api/crons", &child("c", "c.txt")).await.expect(201)["id"]
            .as_i64()
            .expect("id");
        let command = "if [ $((JOBU_EXECUTION_ID % 2)) -eq 0 ] && [ \"$JOBU_ATTEMPT\" -ge 2 ]; \
                       then echo \"a-$JOBU_EXECUTION_ID\"; \
                       else echo \"a-$JOBU_EXECUTION_ID attempt $JOBU_ATTEMPT fails\" >&2; exit 3; fi";
        let a = api
            .post(
                "/api/crons",
                &json!({
                    "name": "a",
                    "cron_expression": "* * * * * *",
                    "handler_name": "shell",
                    "handler_params": {"command": command},
                    "max_retry": 1,
                    "timeout_seconds": 30,
                    "on_success": [b],
                    "on_failure": [c],
                }),
            )
            .await
            .expect(201);
        assert_eq!(a["on_success"], json!([b]));
        assert_eq!(a["on_failure"], json!([c]));
        let a = a["id"].as_i64().expect("id");

        let mut daemons = Vec::new();
        for i in 0..2 {
            daemons.push(Daemon::start(&scratch, &db, "dispatcher", &format!("d{i}"), &[]));
            daemons.push(Daemon::start(
                &scratch,
                &db,
                "worker",
                &format!("w{i}"),
                &[("JOBU__WORKER__CONCURRENCY", "4")],
            ));
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        api.post(&format!("/api/crons/{a}/toggle"), &json!({"is_enabled": false}))
            .await
            .expect(200);
        // Everything started ends: A's runs, then their children.
        let settled = eventually(Duration::from_secs(60), || async {
            let open = |r: &job_execution::Model| {
                matches!(r.status.as_str(), "PENDING" | "RUNNING" | "WAITING")
            };
            let parents = executions_of(&db.store, a).await;
            let parents_open = parents.iter().any(open);
            // A parent that just ended gets its child a moment later (after the write).
            let decided = parents
                .iter()
                .filter(|r| matches!(r.status.as_str(), "SUCCESS" | "FAILED"))
                .count();
            let children_open = chained_rows(&db.store).await.iter().any(open);
            let lines = scratch.lines("b.txt").len() + scratch.lines("c.txt").len();
            let children = chained_rows(&db.store).await.len();
            !parents_open && !children_open && children == decided && lines == children
        })
        .await;
        let rows_a = executions_of(&db.store, a).await;
        let rows = chained_rows(&db.store).await;
        assert!(settled, "not settled: {rows_a:#?}\n{rows:#?}");
        for d in &mut daemons {
            d.stop(Duration::from_secs(10)).await;
        }

        let succeeded: BTreeSet<i64> = rows_a
            .iter()
            .filter(|r| r.status == "SUCCESS")
            .map(|r| r.id)
            .collect();
        let failed: BTreeSet<i64> = rows_a
            .iter()
            .filter(|r| r.status == "FAILED")
            .map(|r| r.id)
            .collect();
        eprintln!(
            "{}: {} executions of a, {} succeeded, {} failed; {} children",
            db.backend.name(),
            rows_a.len(),
            succeeded.len(),
            failed.len(),
            rows.len()
        );
        assert!(succeeded.len() >= 2 && failed.len() >= 2, "{rows_a:#?}");
        for r in rows_a.iter().filter(|r| r.status == "SUCCESS" || r.status == "FAILED") {
            // Decided by the retry: two attempts each.
            assert_eq!(r.retry_count, 1, "{r:?}");
            assert_eq!(r.id % 2 == 0, r.status == "SUCCESS", "{r:?}");
        }
        let children = by_parent(&rows);
        for r in &rows {
            assert_eq!(r.param_source, "chain", "{r:?}");
            assert_eq!(r.status, "SUCCESS", "{r:?}");
            let parent = r.parent_execution_id.expect("parent");
            assert!(
                succeeded.contains(&parent) || failed.contains(&parent),
                "a child of {parent}, which did not end SUCCESS or FAILED: {r:?}"
            );
        }
        let finished: BTreeMap<i64, DateTime<Utc>> = rows_a
            .iter()
            .filter_map(|r| Some((r.id, r.finished_at?)))
            .collect();
        for (parents, want) in [(&succeeded, b), (&failed, c)] {
            for p in parents {
                let kids = children.get(p).map(Vec::as_slice).unwrap_or_default();
                assert_eq!(kids.len(), 1, "parent {p}: {kids:#?}");
                assert_eq!(kids[0].chain_child, Some(want), "{:?}", kids[0]);
                assert_eq!(kids[0].job_id, Some(want), "{:?}", kids[0]);
                // Started by the worker that recorded the parent, not left to the sweep
                // (which waits out a grace of 2 s).
                let after = kids[0].created_at - finished[p];
                assert!(
                    after < chrono::Duration::milliseconds(1500),
                    "child {} created {after} after its parent {p} ended",
                    kids[0].id
                );
            }
        }
        // The children's own output: one line each, naming the parent as recorded.
        let child_of: BTreeMap<i64, i64> = rows
            .iter()
            .map(|r| (r.id, r.parent_execution_id.unwrap_or_default()))
            .collect();
        for (file, parents, status) in [
            ("b.txt", &succeeded, "SUCCESS"),
            ("c.txt", &failed, "FAILED"),
        ] {
            let lines = scratch.lines(file);
            let mut seen = BTreeSet::new();
            for line in &lines {
                let f: Vec<&str> = line.splitn(5, '|').collect();
                assert_eq!(f.len(), 5, "{line}");
                let (me, parent): (i64, i64) = (
                    f[0].parse().expect("execution id"),
                    f[1].parse().expect("parent id"),
                );
                assert_eq!(child_of.get(&me), Some(&parent), "{line}");
                assert!(seen.insert(parent), "{parent} ran two children: {lines:#?}");
                assert_eq!(f[2], status, "{line}");
                if status == "SUCCESS" {
                    let result: Value = serde_json::from_str(f[3]).expect("result JSON");
                    assert_eq!(result["stdout"], format!("a-{parent}\n"), "{line}");
                    assert_eq!(f[4], "", "{line}");
                } else {
                    assert_eq!(f[3], "", "{line}");
                    assert!(
                        f[4].contains(&format!("a-{parent} attempt 2 fails")),
                        "{line}"
                    );
                }
            }
            assert_eq!(&seen, parents, "{file}: {lines:#?}");
        }
    })
    .await;
}

/// Saving chains: a loop between two crons, a cron naming itself and an unknown cron are
/// refused with 422, the field and (for loops) the cycle in the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_refuses_chains_that_loop() {
    on_backends("chains-api", &Backend::ALL, |db, _scratch| async move {
        let admin = AdminServer::start(&db, "admin", "chains-api", &[]).await;
        let api = &admin.api;
        let mut ids = Vec::new();
        for name in ["x", "y", "z"] {
            let body = json!({"name": name, "cron_expression": NEVER, "handler_name": "noop"});
            ids.push(
                api.post("/api/crons", &body).await.expect(201)["id"]
                    .as_i64()
                    .expect("id"),
            );
        }
        let (x, y, z) = (ids[0], ids[1], ids[2]);
        let path = |id: i64| format!("/api/crons/{id}");
        let saved = api
            .put(&path(x), &json!({"on_success": [y]}))
            .await
            .expect(200);
        assert_eq!(saved["on_success"], json!([y]));
        api.put(&path(y), &json!({"on_failure": [z]}))
            .await
            .expect(200);

        let refused = api
            .put(&path(z), &json!({"on_success": [x]}))
            .await
            .expect_error_field(422, "on_success");
        assert_eq!(refused.error, "chain_cycle");
        assert!(
            refused
                .message
                .contains(&format!("{z} -> {x} -> {y} -> {z}")),
            "{}",
            refused.message
        );
        let refused = api
            .put(&path(y), &json!({"on_success": [x]}))
            .await
            .expect_error_field(422, "on_success");
        assert!(
            refused.message.contains(&format!("{y} -> {x} -> {y}")),
            "{}",
            refused.message
        );
        let refused = api
            .put(&path(x), &json!({"on_failure": [x]}))
            .await
            .expect_error_field(422, "on_failure");
        assert!(
            refused.message.contains(&format!("{x} -> {x}")),
            "{}",
            refused.message
        );
        let refused = api
            .put(&path(x), &json!({"on_success": [y, 999_999]}))
            .await
            .expect_error_field(422, "on_success");
        assert!(refused.message.contains("999999"), "{}", refused.message);
        let body = json!({"name": "w", "cron_expression": NEVER, "handler_name": "noop",
                          "on_failure": [999_999]});
        api.post("/api/crons", &body)
            .await
            .expect_error_field(422, "on_failure");
        // Nothing refused was saved.
        let z_now = api.get(&path(z)).await.expect(200);
        assert_eq!(z_now["on_success"], json!([]));
        let x_now = api.get(&path(x)).await.expect(200);
        assert_eq!(
            (x_now["on_success"].clone(), x_now["on_failure"].clone()),
            (json!([y]), json!([]))
        );
    })
    .await;
}

/// A worker killed (-9) while running a parent: the rescuer of another worker makes it
/// FAILED when the lease has expired and starts its `on_failure` chain itself (no dispatcher
/// runs, so no sweep could); the child sees the rescue's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rescued_parent_starts_its_failure_chain() {
    on_backends("chains-rescue", &Backend::ALL, |db, scratch| async move {
        let admin = AdminServer::start(&db, "admin", "chains-rescue-admin", &[]).await;
        let api = &admin.api;
        let c = api
            .post(
                "/api/crons",
                &json!({
                    "name": "c",
                    "cron_expression": NEVER,
                    "handler_name": "shell",
                    "handler_params": {"command":
                        "printf '%s|%s\n' \"$JOBU_PARENT_STATUS\" \"$JOBU_PARENT_ERROR\" >> c.txt"},
                    "max_retry": 0,
                }),
            )
            .await
            .expect(201)["id"]
            .as_i64()
            .expect("id");
        let a = api
            .post(
                "/api/crons",
                &json!({
                    "name": "a",
                    "cron_expression": NEVER,
                    "handler_name": "shell",
                    "handler_params": {"command": "sleep 60"},
                    "max_retry": 0,
                    "timeout_seconds": 120,
                    "on_failure": [c],
                }),
            )
            .await
            .expect(201)["id"]
            .as_i64()
            .expect("id");
        let mut w0 = Daemon::start(&scratch, &db, "worker", "w0", &[]);
        let parent = api
            .post_empty(&format!("/api/crons/{a}/trigger"))
            .await
            .expect(201)["id"]
            .as_i64()
            .expect("id");
        let running = eventually(Duration::from_secs(20), || async {
            let rows = executions_of(&db.store, a).await;
            rows.iter().any(|r| r.id == parent && r.status == "RUNNING")
        })
        .await;
        assert!(running, "{:#?}", executions_of(&db.store, a).await);
        w0.kill9();
        let _w1 = Daemon::start(&scratch, &db, "worker", "w1", &[]);
        let ran = eventually(Duration::from_secs(30), || async {
            !scratch.lines("c.txt").is_empty()
        })
        .await;
        let rows = chained_rows(&db.store).await;
        assert!(ran, "{rows:#?}");
        assert_eq!(rows.len(), 1, "{rows:#?}");
        assert_eq!(rows[0].parent_execution_id, Some(parent));
        assert_eq!(rows[0].chain_child, Some(c));
        let lines = scratch.lines("c.txt");
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(lines[0].starts_with("FAILED|lease expired"), "{lines:#?}");
    })
    .await;
}
