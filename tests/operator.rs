//! Operator actions through the admin API against the built binary, on every backend: a
//! run with other params and a reason (the handler's own output shows which params it got),
//! the overlap policy respected or not under a running execution, and bulk pause and resume
//! of crons that fire every second while two dispatchers and a worker run, then the rows
//! counted: nothing created while paused, nothing missing after the resume.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use jobu::entities::job_execution;
use serde_json::{json, Value};

use common::admin::AdminServer;
use common::process::{eventually, on_backends, Daemon};
use common::{executions_of, Backend};

fn instant(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("not an instant: {v}"))
}

async fn execution(api: &common::admin::Api, id: i64) -> Value {
    api.get(&format!("/api/jobs/{id}")).await.expect(200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_with_other_params_and_a_reason() {
    on_backends(
        "operator-trigger",
        &Backend::ALL,
        |db, _scratch| async move {
            let server = AdminServer::start(&db, "run", "operator-trigger", &[]).await;
            let api = &server.api;
            let out = server.scratch.dir.join("out.txt");
            let out = out.display();
            let cron_params = json!({"command": format!("echo cron-params >> {out}")});
            let cron = api
                .post(
                    "/api/crons",
                    &json!({"name": "report", "cron_expression": "0 0 1 1 *",
                        "handler_name": "shell", "handler_params": cron_params, "max_retry": 0}),
                )
                .await
                .expect(201);
            let id = cron["id"].as_i64().expect("id");

            // Params the shell handler refuses: 422 naming the field, nothing created.
            let refused = api
                .post(
                    &format!("/api/crons/{id}/trigger"),
                    &json!({"params": {"command": 5}}),
                )
                .await
                .expect_error(422);
            assert_eq!(refused.field.as_deref(), Some("params"), "{refused:?}");
            // Unknown fields are refused as in every body.
            api.post(&format!("/api/crons/{id}/trigger"), &json!({"param": {}}))
                .await
                .expect_error(400);
            assert!(executions_of(&db.store, id).await.is_empty());

            let overridden =
                json!({"command": format!("echo override-$JOBU_EXECUTION_ID >> {out}")});
            let run = api
                .post(
                    &format!("/api/crons/{id}/trigger"),
                    &json!({"params": overridden, "reason": "rerun after the fix of #12"}),
                )
                .await
                .expect(201);
            let run_id = run["id"].as_i64().expect("id");
            assert_eq!(run["param_source"], "manual", "{run}");
            assert_eq!(run["params"], overridden, "{run}");
            assert_eq!(run["reason"], "rerun after the fix of #12", "{run}");
            assert_eq!(run["requested_by"], "admin", "{run}");
            assert!(
                eventually(Duration::from_secs(20), || async {
                    execution(api, run_id).await["status"] == "SUCCESS"
                })
                .await,
                "the manual run did not succeed: {}",
                execution(api, run_id).await
            );
            let written =
                std::fs::read_to_string(server.scratch.dir.join("out.txt")).unwrap_or_default();
            assert_eq!(
                written.trim(),
                format!("override-{run_id}"),
                "the handler's output"
            );
            // The cron's own params are unchanged, and a run without a body uses them.
            let after = api.get(&format!("/api/crons/{id}")).await.expect(200);
            assert_eq!(after["handler_params"], cron_params);
            let plain = api
                .post_empty(&format!("/api/crons/{id}/trigger"))
                .await
                .expect(201);
            let plain_id = plain["id"].as_i64().expect("id");
            assert_eq!(plain["params"], cron_params);
            assert_eq!(plain["reason"], Value::Null);
            assert_eq!(plain["requested_by"], "admin");
            assert!(
                eventually(Duration::from_secs(20), || async {
                    execution(api, plain_id).await["status"] == "SUCCESS"
                })
                .await
            );
            let written =
                std::fs::read_to_string(server.scratch.dir.join("out.txt")).unwrap_or_default();
            assert_eq!(
                written.lines().collect::<Vec<_>>(),
                vec![format!("override-{run_id}").as_str(), "cron-params"]
            );
            let row = db
                .store
                .execution(run_id)
                .await
                .expect("read")
                .expect("row");
            assert_eq!(row.reason.as_deref(), Some("rerun after the fix of #12"));
            assert!(server.log().contains("admin: cron triggered"));
        },
    )
    .await;
}

fn running(rows: &[job_execution::Model]) -> usize {
    rows.iter().filter(|r| r.status == "RUNNING").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn respect_overlap_both_ways_under_a_running_execution() {
    on_backends(
        "operator-overlap",
        &Backend::ALL,
        |db, _scratch| async move {
            let server = AdminServer::start(&db, "run", "operator-overlap", &[]).await;
            let api = &server.api;
            let create = |name: &str, policy: &str| {
                json!({"name": name, "cron_expression": "0 0 1 1 *", "handler_name": "sleep",
                   "handler_params": {"seconds": 5}, "overlap_policy": policy, "max_retry": 0})
            };
            let skip = api
                .post("/api/crons", &create("solo", "skip"))
                .await
                .expect(201)["id"]
                .as_i64()
                .expect("id");
            let first = api
                .post_empty(&format!("/api/crons/{skip}/trigger"))
                .await
                .expect(201);
            assert!(
                eventually(Duration::from_secs(10), || async {
                    running(&executions_of(&db.store, skip).await) == 1
                })
                .await,
                "the first run did not start"
            );
            // The policy applies by default: refused, saying which execution holds the slot.
            let refused = api
                .post(
                    &format!("/api/crons/{skip}/trigger"),
                    &json!({"reason": "again"}),
                )
                .await
                .expect_error(409);
            assert_eq!(refused.error, "overlap", "{refused:?}");
            assert!(
                refused.message.contains(&first["id"].to_string())
                    && refused.message.contains("respect_overlap"),
                "{refused:?}"
            );
            assert_eq!(executions_of(&db.store, skip).await.len(), 1);
            // Without it the run starts beside the running one.
            let forced = api
                .post(
                    &format!("/api/crons/{skip}/trigger"),
                    &json!({"respect_overlap": false, "reason": "needed now"}),
                )
                .await
                .expect(201);
            assert_eq!(forced["reason"], "needed now");
            assert!(
                eventually(Duration::from_secs(10), || async {
                    running(&executions_of(&db.store, skip).await) == 2
                })
                .await,
                "the forced run did not run beside the first: {:?}",
                executions_of(&db.store, skip).await
            );

            // buffer_one: a manual run waits behind the running one, then runs.
            let buffered = api
                .post("/api/crons", &create("buffered", "buffer_one"))
                .await
                .expect(201)["id"]
                .as_i64()
                .expect("id");
            api.post_empty(&format!("/api/crons/{buffered}/trigger"))
                .await
                .expect(201);
            assert!(
                eventually(Duration::from_secs(10), || async {
                    running(&executions_of(&db.store, buffered).await) == 1
                })
                .await
            );
            let waiting = api
                .post_empty(&format!("/api/crons/{buffered}/trigger"))
                .await
                .expect(201);
            assert_eq!(waiting["status"], "WAITING", "{waiting}");
            let waiting_id = waiting["id"].as_i64().expect("id");
            // One waits already: the third is refused.
            api.post_empty(&format!("/api/crons/{buffered}/trigger"))
                .await
                .expect_error(409);
            assert!(
                eventually(Duration::from_secs(30), || async {
                    execution(api, waiting_id).await["status"] == "SUCCESS"
                })
                .await,
                "the buffered run did not run after the first: {}",
                execution(api, waiting_id).await
            );
            let rows = executions_of(&db.store, buffered).await;
            assert_eq!(rows.len(), 2, "{rows:?}");
            assert!(rows[1].started_at >= rows[0].finished_at, "{rows:?}");
        },
    )
    .await;
}

/// Every second in `[from, to]` has exactly one execution of the cron.
fn assert_every_second(rows: &[job_execution::Model], from: DateTime<Utc>, to: DateTime<Utc>) {
    let mut t = from;
    while t <= to {
        let at: Vec<&job_execution::Model> =
            rows.iter().filter(|r| r.scheduled_time == t).collect();
        assert_eq!(at.len(), 1, "fire time {t}: {at:?}");
        t += chrono::Duration::seconds(1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bulk_pause_and_resume_racing_the_dispatchers() {
    on_backends("operator-pause", &Backend::ALL, |db, scratch| async move {
        let server = AdminServer::start(&db, "admin", "operator-pause", &[]).await;
        let api = &server.api;
        let mut daemons: Vec<Daemon> = (0..2)
            .map(|i| Daemon::start(&scratch, &db, "dispatcher", &format!("d{i}"), &[]))
            .collect();
        daemons.push(Daemon::start(
            &scratch,
            &db,
            "worker",
            "w0",
            &[("JOBU__WORKER__CONCURRENCY", "20")],
        ));
        let mut ids = Vec::new();
        for i in 0..8 {
            let cron = api
                .post(
                    "/api/crons",
                    &json!({"name": format!("tick-{i}"), "cron_expression": "* * * * * *",
                            "handler_name": "noop", "max_retry": 0}),
                )
                .await
                .expect(201);
            ids.push(cron["id"].as_i64().expect("id"));
        }
        // A cron of another handler, outside the selection.
        let other = api
            .post(
                "/api/crons",
                &json!({"name": "other", "cron_expression": "* * * * * *",
                        "handler_name": "sleep", "handler_params": {"seconds": 0}}),
            )
            .await
            .expect(201)["id"]
            .as_i64()
            .expect("id");
        assert!(
            eventually(Duration::from_secs(20), || async {
                let mut all = true;
                for id in &ids {
                    all &= executions_of(&db.store, *id).await.len() >= 3;
                }
                all
            })
            .await,
            "the crons did not fire"
        );

        // Bad selections change nothing.
        let e = api
            .post(
                "/api/crons/pause",
                &json!({"ids": [ids[0], 999_999], "note": "x"}),
            )
            .await
            .expect_error(404);
        assert!(e.message.contains("999999"), "{e:?}");
        api.post("/api/crons/pause", &json!({"note": "x"}))
            .await
            .expect_error(422);
        api.post("/api/crons/pause", &json!({"ids": [ids[0]], "all": true}))
            .await
            .expect_error(422);
        let still = api.get(&format!("/api/crons/{}", ids[0])).await.expect(200);
        assert_eq!(still["is_enabled"], true, "{still}");

        let paused = api
            .post(
                "/api/crons/pause",
                &json!({"handler_name": "noop", "note": "database maintenance until 14:00"}),
            )
            .await
            .expect(200);
        let paused_at = db.store.now().await.expect("now");
        let mut changed: Vec<i64> = paused["changed"]
            .as_array()
            .expect("changed")
            .iter()
            .filter_map(Value::as_i64)
            .collect();
        changed.sort_unstable();
        assert_eq!(changed, ids, "{paused}");
        // Pausing again changes nothing.
        let again = api
            .post("/api/crons/pause", &json!({"ids": ids, "note": "again"}))
            .await
            .expect(200);
        assert_eq!(again["changed"], json!([]), "{again}");
        let cron = api.get(&format!("/api/crons/{}", ids[3])).await.expect(200);
        assert_eq!(cron["is_enabled"], false);
        assert_eq!(cron["pause_note"], "database maintenance until 14:00");
        assert_eq!(cron["paused_by"], "admin");
        assert!(instant(&cron["paused_at"]) <= paused_at, "{cron}");
        assert_eq!(cron["next_fire_time"], Value::Null);
        let other_cron = api.get(&format!("/api/crons/{other}")).await.expect(200);
        assert_eq!(other_cron["is_enabled"], true, "outside the selection");

        tokio::time::sleep(Duration::from_secs(3)).await;
        // The resume takes effect at its transaction's clock, which is between these two
        // readings: a fire time after the first may run (the dispatcher creates it, or
        // re-arms the one the pause cancelled), none before it may.
        let resume_sent = db.store.now().await.expect("now");
        let resumed = api
            .post("/api/crons/resume", &json!({"ids": ids, "note": "done"}))
            .await
            .expect(200);
        let resumed_at = db.store.now().await.expect("now");
        assert_eq!(resumed["changed"].as_array().map(Vec::len), Some(ids.len()));
        let cron = api.get(&format!("/api/crons/{}", ids[3])).await.expect(200);
        assert_eq!(cron["is_enabled"], true);
        assert_eq!(cron["pause_note"], Value::Null);
        assert_eq!(cron["paused_at"], Value::Null);
        assert_eq!(cron["paused_by"], Value::Null);

        tokio::time::sleep(Duration::from_secs(4)).await;
        let checked_at = db.store.now().await.expect("now");
        for d in &mut daemons[..2] {
            d.stop(Duration::from_secs(10)).await;
        }
        for id in &ids {
            let rows = executions_of(&db.store, *id).await;
            for r in &rows {
                // Nothing of the paused period: what was created ahead of it is cancelled
                // (never ran), and nothing was created while paused.
                if r.scheduled_time > paused_at && r.scheduled_time < resume_sent {
                    assert!(
                        r.status == "CANCELLED"
                            && r.cancel_reason.as_deref() == Some("unscheduled")
                            && r.started_at.is_none()
                            && r.created_at <= paused_at,
                        "cron {id}: a fire time of the paused period: {r:?}"
                    );
                }
            }
            // After the resume every fire time is there once (the first one may be the
            // second after the resume committed).
            let first = rows
                .iter()
                .filter(|r| r.scheduled_time > resumed_at)
                .map(|r| r.scheduled_time)
                .min()
                .unwrap_or_else(|| panic!("cron {id} did not fire after the resume: {rows:?}"));
            assert!(
                first - resumed_at <= chrono::Duration::milliseconds(2100),
                "cron {id}: first fire time after the resume {first}, resumed at {resumed_at}"
            );
            assert_every_second(&rows, first, checked_at - chrono::Duration::seconds(1));
        }
        for d in &mut daemons[2..] {
            d.stop(Duration::from_secs(10)).await;
        }
        let log = server.log();
        assert!(
            log.contains("admin: crons paused") && log.contains("operator"),
            "the pause is logged with the operator"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pause_note_on_one_cron() {
    on_backends("operator-note", &Backend::ALL, |db, _scratch| async move {
        let server = AdminServer::start(&db, "admin", "operator-note", &[]).await;
        let api = &server.api;
        let id = api
            .post(
                "/api/crons",
                &json!({"name": "n", "cron_expression": "0 0 1 1 *", "handler_name": "noop"}),
            )
            .await
            .expect(201)["id"]
            .as_i64()
            .expect("id");
        // A note needs a pause.
        let e = api
            .post(
                &format!("/api/crons/{id}/toggle"),
                &json!({"is_enabled": true, "pause_note": "x"}),
            )
            .await
            .expect_error(422);
        assert_eq!(e.field.as_deref(), Some("pause_note"));
        api.put(&format!("/api/crons/{id}"), &json!({"pause_note": "x"}))
            .await
            .expect_error(422);
        let off = api
            .post(
                &format!("/api/crons/{id}/toggle"),
                &json!({"is_enabled": false, "pause_note": "vendor API down"}),
            )
            .await
            .expect(200);
        assert_eq!(off["pause_note"], "vendor API down");
        assert_eq!(off["paused_by"], "admin");
        let paused_at = off["paused_at"].clone();
        assert!(paused_at.is_string(), "{off}");
        // A new note on a paused cron keeps when it was paused.
        let noted = api
            .put(
                &format!("/api/crons/{id}"),
                &json!({"pause_note": "vendor API down, ticket 7"}),
            )
            .await
            .expect(200);
        assert_eq!(noted["pause_note"], "vendor API down, ticket 7");
        assert_eq!(noted["paused_at"], paused_at);
        let on = api
            .post(
                &format!("/api/crons/{id}/toggle"),
                &json!({"is_enabled": true}),
            )
            .await
            .expect(200);
        assert_eq!(on["pause_note"], Value::Null);
        assert_eq!(on["paused_at"], Value::Null);
        // Created paused, with a note.
        let created = api
            .post(
                "/api/crons",
                &json!({"name": "m", "cron_expression": "0 0 1 1 *", "handler_name": "noop",
                        "is_enabled": false, "pause_note": "not before Monday"}),
            )
            .await
            .expect(201);
        assert_eq!(created["pause_note"], "not before Monday");
        assert_eq!(created["paused_by"], "admin");
    })
    .await;
}
