//! The fire-time ledger from outside: a dispatcher process (the built binary) comes back
//! after a simulated three-day outage of an every-second cron, under each misfire policy;
//! every fire time of the outage is then accounted for exactly once, in a bounded number of
//! rows, and `GET /api/crons/{id}/fire-times` and `/metrics` say the same. Excluded dates
//! and jitter as the dispatcher applies them. On every backend.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jobu::entities::cron_job::MisfirePolicy;
use jobu::entities::job_execution;
use jobu::schedule::{Schedule, Timetable};
use jobu::store::crons::{CronChanges, NewCron};

use common::admin::AdminServer;
use common::process::{eventually, on_backends, Daemon};
use common::{executions_of, Backend, TestDb};

const OUTAGE_SECONDS: i64 = 3 * 86_400;

/// The fire times a row stands for: `[scheduled_time, fire_time_until]`.
fn span(r: &job_execution::Model) -> (DateTime<Utc>, DateTime<Utc>) {
    (
        r.scheduled_time,
        r.fire_time_until.unwrap_or(r.scheduled_time),
    )
}

/// The rows cover every second from `from` to their last fire time, each exactly once.
fn assert_every_second_once(rows: &[job_execution::Model], from: DateTime<Utc>) {
    let mut expect = from;
    for r in rows {
        let (first, last) = span(r);
        assert_eq!(
            first, expect,
            "fire times {expect} .. {first} have no decision, or one twice: {r:?}"
        );
        assert!(last >= first);
        if r.status == "MISSED" {
            let covered = (last - first).num_seconds() + 1;
            assert!(
                i64::from(r.fire_count) <= covered && r.fire_count >= 1,
                "count {} for {covered} fire times",
                r.fire_count
            );
        } else {
            assert_eq!(r.fire_count, 1, "{r:?}");
        }
        expect = last + chrono::Duration::seconds(1);
    }
}

/// Runs one dispatcher after an outage under `policy`; returns the cron, the first missed
/// fire time and the rows.
async fn after_outage(
    db: &TestDb,
    scratch: &Arc<common::process::Scratch>,
    policy: MisfirePolicy,
) -> (i64, DateTime<Utc>, Vec<job_execution::Model>) {
    let mut cron = NewCron::new(
        &format!("outage-{}", policy.as_str()),
        "* * * * * *",
        "noop",
    );
    cron.misfire_policy = policy;
    let cron = db.store.insert_cron(&cron).await.expect("cron");
    let now = db.store.now().await.expect("now");
    let first = DateTime::from_timestamp(now.timestamp() - OUTAGE_SECONDS, 0).expect("first");
    // The dispatchers' marker as the last one left it, three days ago.
    assert!(db
        .store
        .advance_marker(cron.id, None, first, None)
        .await
        .expect("marker"));
    let mut dispatcher = Daemon::start(scratch, db, "dispatcher", "d", &[]);
    let store = db.store.clone();
    let caught_up = eventually(Duration::from_secs(30), || {
        let store = store.clone();
        async move {
            let c = store.cron(cron.id).await.expect("cron").expect("exists");
            let now = store.now().await.expect("now");
            c.next_fire_time.is_some_and(|t| t > now)
        }
    })
    .await;
    let status = dispatcher.stop(Duration::from_secs(10)).await;
    assert!(caught_up, "the dispatcher did not catch up");
    assert!(status.is_some_and(|s| s.success()), "exit {status:?}");
    (cron.id, first, executions_of(&db.store, cron.id).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outage_is_accounted_for_once_in_bounded_rows_under_every_misfire_policy() {
    on_backends("ledger-outage", &Backend::ALL, |db, scratch| async move {
        for policy in [
            MisfirePolicy::Skip,
            MisfirePolicy::Latest,
            MisfirePolicy::All,
        ] {
            let (_, first, rows) = after_outage(&db, &scratch, policy).await;
            assert_every_second_once(&rows, first);
            let missed: Vec<_> = rows.iter().filter(|r| r.status == "MISSED").collect();
            assert_eq!(missed.len(), 1, "{policy:?}: one MISSED row for the outage");
            let m = missed[0];
            assert_eq!(m.scheduled_time, first);
            assert!(m.finished_at.is_some() && m.started_at.is_none());
            let reason = m.error_message.as_deref().unwrap_or_default();
            assert!(
                reason.contains(&format!("misfire policy {}", policy.as_str())),
                "{reason}"
            );
            // Runs kept from the outage, then the on-time ones (within the grace period
            // and the lookahead): a few dozen rows, not 259,200.
            let kept_missed = rows
                .iter()
                .filter(|r| r.status == "PENDING" && r.scheduled_time < m.fire_time_until.unwrap())
                .count();
            assert_eq!(kept_missed, 0, "{policy:?}");
            let pending = rows.iter().filter(|r| r.status == "PENDING").count();
            let bound = match policy {
                MisfirePolicy::All => 100 + 100,
                _ => 100,
            };
            assert!(
                rows.len() <= bound && pending + 1 == rows.len(),
                "{policy:?}: {} rows",
                rows.len()
            );
            let covered = (span(m).1 - span(m).0).num_seconds() + 1;
            match policy {
                // The first run after the outage is the latest missed fire time, or the
                // last 100 (max_catchup): what the policy keeps; on-time ones follow.
                MisfirePolicy::Skip | MisfirePolicy::Latest => {
                    assert!(covered > OUTAGE_SECONDS - 60, "{covered}")
                }
                MisfirePolicy::All => assert!(covered > OUTAGE_SECONDS - 160, "{covered}"),
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn excluded_dates_and_jitter_as_the_dispatcher_applies_them() {
    on_backends("ledger-exclude", &Backend::ALL, |db, _scratch| async move {
        let now = db.store.now().await.expect("now");
        let today = now.date_naive();
        // Excluded today (UTC): every fire time until midnight is recorded EXCLUDED.
        let mut excluded = NewCron::new("excluded", "* * * * * *", "noop");
        excluded.excluded_dates = vec![today];
        let excluded = db.store.insert_cron(&excluded).await.expect("cron");
        // Jitter: each fire time's run_at is pushed, the same as the timetable says.
        let mut jittered = NewCron::new("jittered", "*/5 * * * * *", "noop");
        jittered.jitter_seconds = 3;
        let jittered = db.store.insert_cron(&jittered).await.expect("cron");
        // All roles in one process, so its /metrics counts its dispatcher's decisions.
        let server = AdminServer::start(&db, "run", "ledger-exclude", &[]).await;
        let store = db.store.clone();
        let enough = eventually(Duration::from_secs(20), || {
            let store = store.clone();
            async move {
                executions_of(&store, excluded.id).await.len() >= 5
                    && executions_of(&store, jittered.id).await.len() >= 3
            }
        })
        .await;
        // Clearing the exclusion: from the next poll on the cron runs again.
        db.store
            .update_cron(
                excluded.clone(),
                &CronChanges {
                    excluded_dates: Some(Vec::new()),
                    ..Default::default()
                },
            )
            .await
            .expect("update")
            .expect("exists");
        let store = db.store.clone();
        let runs_again = eventually(Duration::from_secs(20), || {
            let store = store.clone();
            async move {
                executions_of(&store, excluded.id)
                    .await
                    .iter()
                    .any(|r| r.status != "EXCLUDED")
            }
        })
        .await;
        let metrics = server.api.get("/metrics").await.text;
        let sample = |series: &str| {
            metrics
                .lines()
                .find(|l| l.starts_with(series))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
        };
        assert!(
            sample("jobu_fire_times_total{decision=\"excluded\"}").is_some_and(|n| n >= 5.0),
            "{metrics}"
        );
        assert!(
            sample("jobu_fire_times_total{decision=\"run\"}").is_some_and(|n| n >= 3.0),
            "{metrics}"
        );
        drop(server);
        assert!(
            enough && runs_again,
            "{:#?}",
            executions_of(&db.store, excluded.id).await
        );

        let rows = executions_of(&db.store, excluded.id).await;
        for r in &rows {
            let local = r.scheduled_time.date_naive();
            match r.status.as_str() {
                "EXCLUDED" => {
                    assert_eq!(local, today);
                    assert!(r
                        .error_message
                        .as_deref()
                        .unwrap_or_default()
                        .contains("excluded"));
                }
                "PENDING" | "RUNNING" | "SUCCESS" => assert!(local == today),
                other => panic!("unexpected {other}: {r:?}"),
            }
        }
        assert!(rows.iter().filter(|r| r.status == "EXCLUDED").count() >= 5);

        let schedule = Arc::new(Schedule::parse("*/5 * * * * *", "UTC").expect("schedule"));
        let timetable = Timetable::new(schedule, &[], 3);
        let rows = executions_of(&db.store, jittered.id).await;
        let mut pushed = 0;
        for r in &rows {
            let delay = r.run_at - r.scheduled_time;
            assert!(
                delay >= chrono::Duration::zero() && delay <= chrono::Duration::seconds(3),
                "{delay} for {r:?}"
            );
            assert_eq!(
                r.run_at,
                timetable.run_at(jittered.id, r.scheduled_time),
                "{r:?}"
            );
            if delay > chrono::Duration::zero() {
                pushed += 1;
            }
        }
        assert!(pushed > 0, "no fire time was pushed: {rows:#?}");
    })
    .await;
}

/// `GET /api/crons/{id}/fire-times` lists the recorded decisions, then the planned ones;
/// `POST /api/crons/preview` checks and previews a definition not saved yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_lists_the_ledger_and_previews_definitions() {
    on_backends("ledger-api", &Backend::ALL, |db, scratch| async move {
        let (id, first, rows) = after_outage(&db, &scratch, MisfirePolicy::Latest).await;
        let server = AdminServer::start(&db, "admin", "ledger-api", &[]).await;
        let api = &server.api;
        let from = (first + chrono::Duration::hours(1))
            .to_rfc3339()
            .replace('+', "%2B");
        let to = (Utc::now() + chrono::Duration::minutes(1))
            .to_rfc3339()
            .replace('+', "%2B");
        let body = api
            .get(&format!(
                "/api/crons/{id}/fire-times?from={from}&to={to}&limit=1000"
            ))
            .await
            .expect(200);
        let items = body["items"].as_array().expect("items");
        assert_eq!(items[0]["decision"], "missed", "{body}");
        assert_eq!(
            items[0]["fire_time"],
            rows[0]
                .scheduled_time
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        );
        assert!(
            items[0]["count"].as_i64().unwrap_or(0) > 1000,
            "{}",
            items[0]
        );
        let run = items.iter().filter(|i| i["decision"] == "run").count();
        assert_eq!(run, rows.len() - 1, "{body}");
        assert!(
            items.iter().any(|i| i["decision"] == "planned"),
            "no planned fire time: {body}"
        );
        api.get(&format!("/api/crons/{id}/fire-times?from={to}&to={from}"))
            .await
            .expect(422);
        api.get("/api/crons/999999/fire-times").await.expect(404);

        let preview = api
            .post(
                "/api/crons/preview",
                &serde_json::json!({
                    "cron_expression": ["30 14 * * MON", "30 8 * * TUE"],
                    "timezone": "Europe/Berlin",
                    "excluded_dates": ["2026-12-08"],
                    "from": "2026-12-06T00:00:00Z",
                    "count": 3
                }),
            )
            .await
            .expect(200);
        let times: Vec<(String, bool)> = preview["times"]
            .as_array()
            .expect("times")
            .iter()
            .map(|t| {
                (
                    t["utc"].as_str().unwrap_or("").to_string(),
                    t["excluded"] == true,
                )
            })
            .collect();
        assert_eq!(
            times,
            [
                ("2026-12-07T13:30:00Z".to_string(), false),
                ("2026-12-08T07:30:00Z".to_string(), true),
                ("2026-12-14T13:30:00Z".to_string(), false),
            ],
            "{preview}"
        );
        api.post(
            "/api/crons/preview",
            &serde_json::json!({"cron_expression": ["* * * * *", "61 * * * *"]}),
        )
        .await
        .expect(422);
        api.post(
            "/api/crons/preview",
            &serde_json::json!({"cron_expression": "0 0 * * *", "excluded_dates": ["2026-02-30"]}),
        )
        .await
        .expect(422);
        drop(server);
    })
    .await;
}
