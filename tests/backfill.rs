//! Backfill (issue 14) on every backend: two backfills of one range racing each other and
//! three dispatchers (real processes) give exactly one execution per fire time, none
//! outside the range, run one at a time in fire-time order (`buffer_all`) or all at once
//! (`allow`), even beside a cron's own long concurrent runs; a dry run writes nothing; the
//! cap is a 422 that names the count; `rerun` runs missed, skipped and failed fire times
//! again and leaves the rest alone, cutting MISSED rows so the ledger keeps one decision per
//! fire time; and `jobu cron backfill` does the same from the command line.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use jobu::entities::cron_job::OverlapPolicy;
use jobu::entities::job_execution;
use jobu::entities::job_execution::ParamSource;
use jobu::store::backfill::{BackfillAction, BackfillOverlap, BackfillRequest, Rerun};
use jobu::store::create::{Created, NewExecution};
use jobu::store::crons::NewCron;
use jobu::store::{Store, StoreError};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait, PaginatorTrait};
use serde_json::{json, Value};

use common::admin::AdminServer;
use common::process::{eventually, on_backends, Daemon, BIN};
use common::{executions_of, Backend, TestDb};

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

fn request(from: DateTime<Utc>, to: DateTime<Utc>) -> BackfillRequest {
    BackfillRequest {
        from,
        to,
        max_runs: 1000,
        dry_run: false,
        overlap: BackfillOverlap::BufferAll,
        rerun: BTreeSet::new(),
        requested_by: Some("test".into()),
        reason: None,
    }
}

async fn every_second(db: &TestDb, name: &str, policy: OverlapPolicy) -> i64 {
    let mut cron = NewCron::new(name, "* * * * * *", "noop");
    cron.overlap_policy = policy;
    cron.max_retry = 0;
    db.store.insert_cron(&cron).await.expect("cron").id
}

/// A whole second well in the past (a backfill is for past fire times).
async fn past(store: &Store, seconds_ago: i64) -> DateTime<Utc> {
    store.now().await.expect("clock").trunc_subsecs(0) - secs(seconds_ago)
}

/// A row of the cron at `at` in `status`, as a dispatcher would have left it.
async fn row(
    store: &Store,
    job_id: i64,
    at: DateTime<Utc>,
    status: &str,
    until: Option<DateTime<Utc>>,
    count: i32,
) -> i64 {
    let new = NewExecution {
        job_id: Some(job_id),
        handler_name: "noop".into(),
        scheduled_time: at,
        run_at: at,
        params: None,
        param_source: ParamSource::Cron,
        max_retry: 0,
        timeout_seconds: 30,
    };
    let Created::New(id) = store.create_if_absent(&new).await.expect("create") else {
        panic!("a row at {at} exists");
    };
    let model = job_execution::ActiveModel {
        id: Set(id),
        status: Set(status.to_string()),
        fire_time_until: Set(until),
        fire_count: Set(count),
        finished_at: Set((status != "PENDING" && status != "RUNNING").then_some(at)),
        started_at: Set((status == "RUNNING").then_some(at)),
        error_message: Set((status == "MISSED").then(|| "missed: every dispatcher was down".into())),
        cancel_reason: Set((status == "CANCELLED").then(|| "operator".into())),
        ..Default::default()
    };
    model.update(store.connection()).await.expect("set status");
    id
}

async fn backfill_rows(store: &Store) -> u64 {
    jobu::entities::cron_backfill::Entity::find()
        .count(store.connection())
        .await
        .expect("count backfills")
}

// A buffer_all backfill of a cron that allows overlap and has a live run going starts its
// first fire time at once: only exclusive rows hold the cron's slot. A WAITING row left
// without a promotion (the backfilling process stopped) is found by the dispatchers' poll.
backend_test!(
    promotion_ignores_non_exclusive_runs,
    |db: TestDb| async move {
        let id = every_second(&db, "promote", OverlapPolicy::Allow).await;
        let base = past(&db.store, 120).await;
        row(&db.store, id, base - secs(30), "RUNNING", None, 1).await;
        let cron = db.store.cron(id).await.unwrap().unwrap();
        let out = db
            .store
            .backfill(&cron, &request(base, base + secs(5)))
            .await
            .expect("backfill");
        assert_eq!(out.created, 5, "{out:?}");
        let rows: Vec<_> = executions_of(&db.store, id)
            .await
            .into_iter()
            .filter(|r| r.param_source == "backfill")
            .collect();
        let statuses: Vec<&str> = rows.iter().map(|r| r.status.as_str()).collect();
        assert_eq!(
            statuses,
            ["PENDING", "WAITING", "WAITING", "WAITING", "WAITING"]
        );
        assert!(rows
            .iter()
            .all(|r| r.exclusive_run && r.backfill_id == out.backfill_id));
        assert_eq!(out.items[0].status.map(|s| s.as_str()), Some("PENDING"));

        // As if the first had ended and nobody promoted the next one.
        job_execution::ActiveModel {
            id: Set(rows[0].id),
            status: Set("SUCCESS".into()),
            ..Default::default()
        }
        .update(db.store.connection())
        .await
        .unwrap();
        assert_eq!(db.store.stalled_waiting(10).await.unwrap(), vec![id]);
        assert_eq!(db.store.promote_waiting(&[id]).await.unwrap(), 1);
        let second = db.store.execution(rows[1].id).await.unwrap().unwrap();
        assert_eq!(second.status, "PENDING");
        assert!(db.store.stalled_waiting(10).await.unwrap().is_empty());
    }
);

// A dry run writes nothing and lists what a real run would do; the cap counts the fire
// times it would run and refuses before writing; excluded dates are listed, not run; a
// repeated backfill creates nothing.
backend_test!(dry_run_cap_excluded_and_repeat, |db: TestDb| async move {
    let id = every_second(&db, "dry", OverlapPolicy::Allow).await;
    let base = past(&db.store, 600).await;
    let cron = db.store.cron(id).await.unwrap().unwrap();
    let mut req = request(base, base + secs(10));
    req.dry_run = true;
    let dry = db.store.backfill(&cron, &req).await.expect("dry run");
    assert_eq!((dry.created, dry.backfill_id), (10, None), "{dry:?}");
    assert!(dry.items.iter().all(|i| i.action == BackfillAction::Create));
    assert!(executions_of(&db.store, id).await.is_empty());
    assert_eq!(backfill_rows(&db.store).await, 0);

    req.dry_run = false;
    req.max_runs = 9;
    match db.store.backfill(&cron, &req).await {
        Err(StoreError::Rejected { field, message, .. }) => {
            assert_eq!(field, "max_runs");
            assert!(message.contains("would run 10 fire times"), "{message}");
            assert!(message.contains("max_runs 9"), "{message}");
        }
        other => panic!("not refused: {other:?}"),
    }
    req.dry_run = true;
    assert!(
        db.store.backfill(&cron, &req).await.is_err(),
        "a dry run is capped too"
    );
    assert!(executions_of(&db.store, id).await.is_empty());
    assert_eq!(backfill_rows(&db.store).await, 0);

    // Bad ranges.
    for (from, to, field) in [
        (base, base, "to"),
        (base + secs(5), base, "to"),
        (base + secs(3600), base + secs(7200), "from"),
    ] {
        let err = db
            .store
            .backfill(&cron, &request(from, to))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Rejected { field: f, .. } if *f == field),
            "{err:?}"
        );
    }

    let full = db
        .store
        .backfill(&cron, &request(base, base + secs(10)))
        .await
        .expect("backfill");
    assert_eq!(full.created, 10);
    let again = db
        .store
        .backfill(&cron, &request(base - secs(2), base + secs(12)))
        .await
        .expect("again");
    assert_eq!((again.created, again.left_alone), (4, 10), "{again:?}");
    assert_eq!(executions_of(&db.store, id).await.len(), 14);
    assert_eq!(backfill_rows(&db.store).await, 2);
    let view = db
        .store
        .backfill_view(full.backfill_id.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((view.total(), view.backfill.created), (10, 10));

    // A daily cron with an excluded date: listed as excluded, nothing written for it.
    let mut daily = NewCron::new("daily", "0 0 * * *", "noop");
    let start = (base - secs(10 * 86_400)).date_naive();
    daily.excluded_dates = vec![start + chrono::Days::new(2)];
    let daily = db.store.insert_cron(&daily).await.unwrap();
    let from = start.and_hms_opt(0, 0, 0).unwrap().and_utc();
    let out = db
        .store
        .backfill(&daily, &request(from, from + secs(5 * 86_400)))
        .await
        .unwrap();
    assert_eq!((out.created, out.excluded), (4, 1), "{out:?}");
    assert_eq!(out.items[2].action, BackfillAction::Excluded);
    assert_eq!(executions_of(&db.store, daily.id).await.len(), 4);
});

// `rerun` runs missed, skipped, failed and timed-out fire times again and leaves successes
// and cancelled runs alone; MISSED rows that stand for many fire times are cut so that every
// fire time keeps exactly one decision, and the ledger reads without gaps or doubles.
backend_test!(rerun_and_missed_ranges, |db: TestDb| async move {
    let s = &db.store;
    let id = every_second(&db, "rerun", OverlapPolicy::Skip).await;
    let base = past(s, 900).await;
    let t = |n: i64| base + secs(n);
    // MISSED base-3 .. base+2: its head stays before the range.
    let missed_a = row(s, id, t(-3), "MISSED", Some(t(2)), 6).await;
    // MISSED base+5 .. base+7: wholly inside.
    let missed_b = row(s, id, t(5), "MISSED", Some(t(7)), 3).await;
    let success = row(s, id, t(10), "SUCCESS", None, 1).await;
    let failed = row(s, id, t(11), "FAILED", None, 1).await;
    let timeout = row(s, id, t(12), "TIMEOUT", None, 1).await;
    let skipped = row(s, id, t(13), "SKIPPED", None, 1).await;
    let cancelled = row(s, id, t(14), "CANCELLED", None, 1).await;
    // MISSED base+17 .. base+24: its tail goes on after the range.
    let missed_c = row(s, id, t(17), "MISSED", Some(t(24)), 8).await;
    let cron = s.cron(id).await.unwrap().unwrap();

    let mut plain = request(t(0), t(20));
    plain.dry_run = true;
    let out = s.backfill(&cron, &plain).await.unwrap();
    assert_eq!(
        (out.created, out.rerun_count, out.left_alone),
        (6, 0, 14),
        "{out:?}"
    );

    let mut req = request(t(0), t(20));
    req.rerun = Rerun::ALL.into_iter().collect();
    req.dry_run = true;
    let dry = s.backfill(&cron, &req).await.unwrap();
    req.dry_run = false;
    let out = s.backfill(&cron, &req).await.unwrap();
    assert_eq!(
        (out.created, out.rerun_count, out.left_alone),
        (6, 12, 2),
        "{out:?}"
    );
    let actions = |o: &jobu::store::backfill::BackfillOutcome| -> Vec<_> {
        o.items.iter().map(|i| (i.fire_time, i.action)).collect()
    };
    assert_eq!(actions(&dry), actions(&out), "the dry run said the same");
    let by_id: HashMap<i64, job_execution::Model> = executions_of(s, id)
        .await
        .into_iter()
        .map(|r| (r.id, r))
        .collect();
    for kept in [success, cancelled] {
        assert_eq!(by_id[&kept].param_source, "cron", "{:?}", by_id[&kept]);
        assert_eq!(by_id[&kept].backfill_id, None);
    }
    for again in [failed, timeout, skipped, missed_b, missed_c] {
        let r = &by_id[&again];
        assert_eq!(
            (
                r.status.as_str(),
                r.param_source.as_str(),
                r.fire_count,
                r.fire_time_until
            ),
            ("WAITING", "backfill", 1, None),
            "{r:?}"
        );
        assert!(
            r.error_message.is_none() && r.finished_at.is_none(),
            "{r:?}"
        );
        assert_eq!(r.backfill_id, out.backfill_id);
        assert_eq!(r.requested_by.as_deref(), Some("test"));
    }
    // The first in fire-time order holds the slot.
    let first = by_id.values().find(|r| r.scheduled_time == t(0)).unwrap();
    assert_eq!(first.status, "PENDING", "{first:?}");
    let head = &by_id[&missed_a];
    assert_eq!(
        (head.status.as_str(), head.fire_time_until, head.fire_count),
        ("MISSED", Some(t(-1)), 3)
    );
    let tail = by_id.values().find(|r| r.scheduled_time == t(20)).unwrap();
    assert_eq!(
        (tail.status.as_str(), tail.fire_time_until, tail.fire_count),
        ("MISSED", Some(t(24)), 5),
        "{tail:?}"
    );

    // The ledger: every second from base-3 to base+24 exactly once.
    let ledger = s.fire_times(id, t(-10), t(30), 1000).await.unwrap();
    let mut expect = t(-3);
    for r in &ledger {
        assert_eq!(r.scheduled_time, expect, "gap or double before {r:?}");
        let last = r.fire_time_until.unwrap_or(r.scheduled_time);
        assert_eq!(
            i64::from(r.fire_count),
            (last - r.scheduled_time).num_seconds() + 1
        );
        expect = last + secs(1);
    }
    assert_eq!(expect, t(25));

    // Again: nothing new, the re-armed ones are left alone now.
    let repeat = s.backfill(&cron, &req).await.unwrap();
    assert_eq!(
        (repeat.created, repeat.rerun_count, repeat.left_alone),
        (0, 0, 20),
        "{repeat:?}"
    );
});

// `jobu cron backfill`: a dry run writes nothing, a real run creates, bad input exits 2.
backend_test!(command_line, |db: TestDb| async move {
    let id = every_second(&db, "cli", OverlapPolicy::Allow).await;
    let base = past(&db.store, 300).await;
    let config = std::env::temp_dir().join(format!("jobu_bf_cli_{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&config).unwrap();
    let at = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let run = |args: Vec<String>| {
        let out = std::process::Command::new(BIN)
            .arg("cron")
            .arg("backfill")
            .args(&args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("JOBU_CONFIG_DIR", &config)
            .env("JOBU__DATABASES__DEFAULT__URL", &db.url)
            .env("JOBU__LOGGING__LEVEL", "warn")
            .output()
            .expect("run jobu");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let range = |extra: &[&str]| {
        let mut v = vec![
            id.to_string(),
            "--from".into(),
            at(base),
            "--to".into(),
            at(base + secs(5)),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let (code, stdout, stderr) = run(range(&["--dry-run"]));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("dry run, nothing written"), "{stdout}");
    assert!(stdout.contains("would create 5"), "{stdout}");
    assert!(executions_of(&db.store, id).await.is_empty());

    let (code, stdout, stderr) = run(range(&["--max-runs", "3"]));
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("would run 5 fire times"), "{stderr}");

    for bad in [
        vec![
            id.to_string(),
            "--from".into(),
            "yesterday".into(),
            "--to".into(),
            at(base),
        ],
        range(&["--rerun", "missed,bogus"]),
        range(&["--overlap", "sometimes"]),
        vec![
            "999999".into(),
            "--from".into(),
            at(base),
            "--to".into(),
            at(base + secs(5)),
        ],
        vec![
            id.to_string(),
            "--from".into(),
            at(base),
            "--to".into(),
            at(base),
        ],
    ] {
        let (code, stdout, stderr) = run(bad.clone());
        assert_eq!(code, Some(2), "{bad:?}: {stdout}{stderr}");
        assert!(!stderr.trim().is_empty(), "{bad:?}: no message");
    }
    assert!(executions_of(&db.store, id).await.is_empty());

    let (code, stdout, stderr) = run(range(&["--allow-overlap", "--reason", "replay", "--json"]));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let answer: Value = serde_json::from_str(stdout.trim()).expect("json");
    assert_eq!(answer["created"], 5, "{answer}");
    assert_eq!(answer["overlap"], "allow");
    assert_eq!(answer["items"].as_array().unwrap().len(), 5);
    let rows = executions_of(&db.store, id).await;
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|r| r.status == "PENDING"
        && !r.exclusive_run
        && r.reason.as_deref() == Some("replay")
        && r.requested_by.as_deref() == Some("admin")));
    let (code, stdout, _) = run(range(&[]));
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("created 0, rerun 0, left alone 5"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&config);
});

/// The executions of the cron in `[from, to)`, and every execution before `outside_before`
/// that is outside it.
fn in_range(
    rows: &[job_execution::Model],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<job_execution::Model> {
    rows.iter()
        .filter(|r| r.scheduled_time >= from && r.scheduled_time < to)
        .cloned()
        .collect()
}

/// Two backfills of the same range at once through the API, while three dispatchers and
/// two workers run a cron that fires every second with runs that outlast the interval (so
/// it always has live runs going). Returns the backfill's rows once they all ended.
async fn race(db: TestDb, scratch: Arc<common::process::Scratch>, overlap: &str) {
    let out = scratch.path("out.txt");
    let mut cron = NewCron::new("race", "* * * * * *", "shell");
    cron.max_retry = 0;
    cron.handler_params = Some(json!({
        "command": format!("echo \"$JOBU_SCHEDULED_TIME $JOBU_EXECUTION_ID\" >> {}; sleep 1.2", out.display())
    }));
    let cron = db.store.insert_cron(&cron).await.expect("cron");
    let created = cron.created_at.trunc_subsecs(0);
    let (from, to) = (created - secs(9), created - secs(3));

    let admin = AdminServer::start(&db, "admin", "backfill", &[]).await;
    let mut daemons: Vec<Daemon> = (0..3)
        .map(|i| Daemon::start(&scratch, &db, "dispatcher", &format!("d{i}"), &[]))
        .collect();
    for i in 0..2 {
        daemons.push(Daemon::start(
            &scratch,
            &db,
            "worker",
            &format!("w{i}"),
            &[("JOBU__WORKER__CONCURRENCY", "8")],
        ));
    }
    // Live runs first, so the backfill meets them.
    let live = eventually(Duration::from_secs(20), || async {
        executions_of(&db.store, cron.id)
            .await
            .iter()
            .any(|r| r.status == "RUNNING")
    })
    .await;
    assert!(live, "the cron's own runs never started");

    let path = format!("/api/crons/{}/backfill", cron.id);
    let body = json!({"from": from, "to": to, "overlap": overlap, "reason": "race"});
    let dry = admin
        .api
        .post(&path, &json!({"from": from, "to": to, "dry_run": true}))
        .await
        .expect(200);
    assert_eq!(dry["created"], 6, "{dry}");
    assert_eq!(dry["backfill_id"], Value::Null);
    assert!(in_range(&executions_of(&db.store, cron.id).await, from, to).is_empty());
    let over = admin
        .api
        .post(&path, &json!({"from": from, "to": to, "max_runs": 5}))
        .await
        .expect_error_field(422, "max_runs");
    assert!(
        over.message.contains("would run 6 fire times"),
        "{}",
        over.message
    );

    let (a, b) = tokio::join!(admin.api.post(&path, &body), admin.api.post(&path, &body));
    let (a, b) = (a.expect(201), b.expect(201));
    assert_eq!(
        a["created"].as_u64().unwrap() + b["created"].as_u64().unwrap(),
        6,
        "{a}\n{b}"
    );
    for answer in [&a, &b] {
        assert_eq!(answer["items"].as_array().unwrap().len(), 6, "{answer}");
        assert_eq!(
            answer["left_alone"].as_u64().unwrap() + answer["created"].as_u64().unwrap(),
            6
        );
    }

    let finished = eventually(Duration::from_secs(60), || async {
        let rows = in_range(&executions_of(&db.store, cron.id).await, from, to);
        rows.len() == 6 && rows.iter().all(|r| r.finished_at.is_some())
    })
    .await;
    let all = executions_of(&db.store, cron.id).await;
    let rows = in_range(&all, from, to);
    assert!(finished, "the backfill did not finish: {rows:#?}");
    for d in &mut daemons {
        d.stop(Duration::from_secs(10)).await;
    }

    // One execution per fire time of the range, all SUCCESS, none outside it.
    let times: Vec<DateTime<Utc>> = rows.iter().map(|r| r.scheduled_time).collect();
    let expect: Vec<DateTime<Utc>> = (0..6).map(|i| from + secs(i)).collect();
    assert_eq!(times, expect);
    assert!(rows.iter().all(|r| r.status == "SUCCESS"
        && r.param_source == "backfill"
        && r.reason.as_deref() == Some("race")
        && r.backfill_id.is_some()));
    assert!(
        all.iter()
            .filter(|r| r.scheduled_time < created)
            .all(|r| r.scheduled_time >= from && r.scheduled_time < to),
        "an execution outside the range"
    );
    // The handler ran once for each.
    let lines = scratch.lines("out.txt");
    for r in &rows {
        let mine = format!(" {}", r.id);
        assert_eq!(
            lines.iter().filter(|l| l.ends_with(&mine)).count(),
            1,
            "{lines:?}"
        );
    }

    let mut ran = rows.clone();
    ran.sort_by_key(|r| r.started_at);
    if overlap == "buffer_all" {
        assert!(rows.iter().all(|r| r.exclusive_run));
        for pair in ran.windows(2) {
            assert!(
                pair[0].scheduled_time < pair[1].scheduled_time,
                "out of order: {ran:#?}"
            );
            assert!(
                pair[1].started_at >= pair[0].finished_at,
                "{} started before {} ended",
                pair[1].id,
                pair[0].id
            );
        }
    } else {
        assert!(rows.iter().all(|r| !r.exclusive_run));
        // Concurrently: some started before another ended.
        assert!(
            ran.windows(2).any(|p| p[1].started_at < p[0].finished_at),
            "they ran one by one: {ran:#?}"
        );
    }

    // Progress through the API.
    let ids: BTreeSet<i64> = rows.iter().filter_map(|r| r.backfill_id).collect();
    for id in &ids {
        let view = admin
            .api
            .get(&format!("/api/backfills/{id}"))
            .await
            .expect(200);
        assert_eq!(view["progress"]["done"], true, "{view}");
        assert_eq!(
            view["progress"]["by_status"]["SUCCESS"],
            view["progress"]["total"]
        );
    }
    let list = admin
        .api
        .get(&format!("/api/crons/{}/backfills", cron.id))
        .await
        .expect(200);
    assert_eq!(list["total"], 2, "{list}");
    let newest = list["items"][0]["id"].as_i64().unwrap();
    assert!(newest > list["items"][1]["id"].as_i64().unwrap());
    let done: u64 = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["progress"]["total"].as_u64().unwrap())
        .sum();
    assert_eq!(done, 6);
    admin
        .api
        .get("/api/backfills/999999")
        .await
        .expect_error(404);
    admin
        .api
        .post("/api/crons/999999/backfill", &body)
        .await
        .expect_error(404);
    admin
        .api
        .post(&path, &json!({"from": from, "to": to, "bogus": 1}))
        .await
        .expect_error(400);
    let bad = admin
        .api
        .post(&path, &json!({"from": to, "to": from}))
        .await
        .expect_error_field(422, "to");
    assert!(bad.message.contains("must be after"), "{}", bad.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_buffer_all_backfills_run_each_fire_time_once_in_order() {
    on_backends("backfill-buffer-all", &Backend::ALL, |db, scratch| {
        race(db, scratch, "buffer_all")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_allow_backfills_run_each_fire_time_once_concurrently() {
    on_backends("backfill-allow", &Backend::ALL, |db, scratch| {
        race(db, scratch, "allow")
    })
    .await;
}
