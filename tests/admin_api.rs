//! The admin HTTP API as documented in docs/admin-api.md, tested from outside: a real
//! `jobu admin` or `jobu run` process of the built binary on a free port, plain HTTP requests,
//! and the rows counted in the database afterwards. Every storage-touching test runs on
//! SQLite, PostgreSQL and MariaDB, each on a database of its own.

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use chrono::{DateTime, Offset, TimeZone, Utc};
use common::admin::{launch, raw, tail, AdminServer, Api};
use common::process::eventually;
use common::{Backend, TestDb};
use futures::FutureExt;
use jobu::entities::{job_execution, CronJobs, JobExecutions};
use reqwest::Method;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{json, Value};

/// Upper bound of every wait on the daemon (polls are 100 ms apart).
const WAIT: Duration = Duration::from_secs(20);
const STATUSES: [&str; 10] = [
    "PENDING",
    "RUNNING",
    "SUCCESS",
    "FAILED",
    "TIMEOUT",
    "CANCELLED",
    "WAITING",
    "SKIPPED",
    "MISSED",
    "EXCLUDED",
];
/// An expression that fires once a year, so nothing is dispatched while a test runs.
const YEARLY: &str = "0 0 1 1 *";

// ---------------------------------------------------------------------------------------
// helpers

fn cron_body(name: &str, expression: &str) -> Value {
    json!({"name": name, "cron_expression": expression, "handler_name": "noop"})
}

/// An RFC 3339 instant in UTC (offset zero); the `Z` notation itself is checked by
/// `documented_shapes`.
fn instant(value: &Value) -> DateTime<Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("expected an RFC 3339 string, got {value}"));
    let parsed =
        DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("not RFC 3339: {text}: {e}"));
    assert_eq!(parsed.offset().local_minus_utc(), 0, "not UTC: {text}");
    parsed.with_timezone(&Utc)
}

/// Runs labelled cases each to its end and fails once at the end listing every failed case,
/// so one run shows every difference from the documented behaviour.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    async fn run<Fut: Future<Output = ()>>(&mut self, label: &str, case: Fut) {
        if let Err(panic) = AssertUnwindSafe(case).catch_unwind().await {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            self.0.push(format!("{label}: {message}"));
        }
    }

    fn check(&mut self, ok: bool, message: String) {
        if !ok {
            self.0.push(message);
        }
    }

    #[track_caller]
    fn finish(self, what: &str) {
        assert!(
            self.0.is_empty(),
            "{} {what} differ from docs/admin-api.md:\n- {}",
            self.0.len(),
            self.0.join("\n- ")
        );
    }
}

fn id_of(value: &Value) -> i64 {
    value["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no integer id in {value}"))
}

fn ids(items: &Value) -> Vec<i64> {
    items
        .as_array()
        .unwrap_or_else(|| panic!("expected an array, got {items}"))
        .iter()
        .map(id_of)
        .collect()
}

/// An instant for a query string (`+` would read as a space).
fn query_instant(t: &str) -> String {
    t.replace('+', "%2B")
}

async fn count_crons(db: &TestDb) -> u64 {
    CronJobs::find()
        .count(db.store.connection())
        .await
        .expect("count crons")
}

async fn count_executions(db: &TestDb, status: Option<&str>) -> u64 {
    let mut query = JobExecutions::find();
    if let Some(status) = status {
        query = query.filter(job_execution::Column::Status.eq(status));
    }
    query
        .count(db.store.connection())
        .await
        .expect("count executions")
}

/// Asserts the page shape `{items, total, page, size, pages}` and returns it.
#[track_caller]
fn page_of(body: &Value, total: u64, page: u64, size: u64) -> Vec<Value> {
    assert_eq!(body["total"].as_u64(), Some(total), "total in {body}");
    assert_eq!(body["page"].as_u64(), Some(page), "page in {body}");
    assert_eq!(body["size"].as_u64(), Some(size), "size in {body}");
    assert_eq!(
        body["pages"].as_u64(),
        Some(total.div_ceil(size)),
        "pages in {body}"
    );
    body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items array in {body}"))
        .clone()
}

/// What a refused request must leave alone: every cron as the API lists it, and the row
/// counts of both tables.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    crons: Value,
    cron_rows: u64,
    execution_rows: u64,
}

impl Snapshot {
    async fn take(api: &Api, db: &TestDb) -> Snapshot {
        let body = api.get("/api/crons?page=1&size=100").await.expect(200);
        Snapshot {
            crons: body["items"].clone(),
            cron_rows: count_crons(db).await,
            execution_rows: count_executions(db, None).await,
        }
    }

    /// What differs from `self` in `now`: row counts, and the crons added or changed.
    fn change_to(&self, now: &Snapshot) -> String {
        let mut out = Vec::new();
        if self.cron_rows != now.cron_rows {
            out.push(format!("cron rows {} -> {}", self.cron_rows, now.cron_rows));
        }
        if self.execution_rows != now.execution_rows {
            out.push(format!(
                "execution rows {} -> {}",
                self.execution_rows, now.execution_rows
            ));
        }
        let old = self.crons.as_array().cloned().unwrap_or_default();
        for cron in now.crons.as_array().into_iter().flatten() {
            match old.iter().find(|c| c["id"] == cron["id"]) {
                None => out.push(format!("new cron {cron}")),
                Some(was) if was != cron => out.push(format!("cron {was} became {cron}")),
                Some(_) => {}
            }
        }
        out.join("; ")
    }
}

/// `GET /api/stats` against the rows in the database, status by status.
async fn assert_stats_match_rows(api: &Api, db: &TestDb) -> Value {
    let stats = api.get("/api/stats").await.expect(200);
    for status in STATUSES {
        assert_eq!(
            stats["by_status"][status].as_u64(),
            Some(count_executions(db, Some(status)).await),
            "by_status.{status} in {stats}"
        );
    }
    assert!(
        stats["schedule_lag_seconds"]["count"].is_u64(),
        "stats: {stats}"
    );
    stats
}

/// The `by_status` of one handler in `/api/stats` (`Null` when it is not listed).
fn handler_stats(stats: &Value, handler: &str) -> Value {
    stats["by_handler"]
        .as_array()
        .unwrap_or_else(|| panic!("no by_handler array in {stats}"))
        .iter()
        .find(|h| h["handler_name"] == handler)
        .map(|h| h["by_status"].clone())
        .unwrap_or(Value::Null)
}

/// Polls `GET /api/jobs/{id}` until its status is `status`; returns the execution.
async fn wait_status(api: &Api, id: i64, status: &str) -> Value {
    let mut last = Value::Null;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        last = api.get(&format!("/api/jobs/{id}")).await.expect(200);
        if last["status"] == status {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("execution {id} did not reach {status} within {WAIT:?}; last: {last}");
}

// ---------------------------------------------------------------------------------------
// 1. crons CRUD

backend_test!(
    crons_crud_pagination_toggle_delete,
    |db: TestDb| async move {
        let server = AdminServer::start(&db, "admin", "crud", &[]).await;
        let api = &server.api;

        // Create with only the required fields: the documented defaults are filled in.
        let created = api
            .post("/api/crons", &cron_body("nightly", "30 2 * * *"))
            .await
            .expect(201);
        let id = id_of(&created);
        assert_eq!(created["name"], "nightly");
        assert_eq!(created["cron_expression"], "30 2 * * *");
        assert_eq!(created["handler_name"], "noop");
        assert_eq!(created["timezone"], "UTC");
        assert_eq!(created["max_retry"], 3);
        assert_eq!(created["timeout_seconds"], 300);
        assert_eq!(created["misfire_policy"], "latest");
        assert_eq!(created["is_enabled"], true);
        assert_eq!(created["allow_overlap"], true);
        assert_eq!(created["description"], Value::Null);
        assert_eq!(created["last_fire_time"], Value::Null);
        instant(&created["created_at"]);
        instant(&created["updated_at"]);
        assert_eq!(count_crons(&db).await, 1);

        // Get returns the same cron.
        let got = api.get(&format!("/api/crons/{id}")).await.expect(200);
        for key in [
            "id",
            "name",
            "description",
            "cron_expression",
            "timezone",
            "handler_name",
            "handler_params",
            "is_enabled",
            "allow_overlap",
            "max_retry",
            "timeout_seconds",
            "misfire_policy",
        ] {
            assert_eq!(got[key], created[key], "GET differs from POST in `{key}`");
        }

        // Every field given explicitly, including a 100-character (200-byte) name.
        let long_name = "ü".repeat(100);
        let full = api
            .post(
                "/api/crons",
                &json!({
                    "name": long_name, "cron_expression": "*/15 * * * *", "handler_name": "sleep",
                    "description": "every quarter hour", "timezone": "Europe/Berlin",
                    "handler_params": {"seconds": 1}, "is_enabled": false, "allow_overlap": false,
                    "max_retry": 0, "timeout_seconds": 86400, "misfire_policy": "all"
                }),
            )
            .await
            .expect(201);
        assert_eq!(full["name"], long_name);
        assert_eq!(full["description"], "every quarter hour");
        assert_eq!(full["timezone"], "Europe/Berlin");
        assert_eq!(full["handler_params"], json!({"seconds": 1}));
        assert_eq!(full["is_enabled"], false);
        assert_eq!(full["allow_overlap"], false);
        assert_eq!(full["max_retry"], 0);
        assert_eq!(full["timeout_seconds"], 86400);
        assert_eq!(full["misfire_policy"], "all");
        let full_id = id_of(&full);

        // Three more (two disabled): 5 crons, 2 of them disabled.
        let mut all_ids = vec![id, full_id];
        for (name, enabled) in [("c3", true), ("c4", false), ("c5", true)] {
            let mut body = cron_body(name, YEARLY);
            body["is_enabled"] = json!(enabled);
            body["misfire_policy"] = json!("skip");
            all_ids.push(id_of(&api.post("/api/crons", &body).await.expect(201)));
        }
        assert_eq!(count_crons(&db).await, 5);

        // Pagination, ordered by id.
        let mut seen = Vec::new();
        for page in 1..=3u64 {
            let body = api
                .get(&format!("/api/crons?page={page}&size=2"))
                .await
                .expect(200);
            let items = page_of(&body, 5, page, 2);
            assert_eq!(
                items.len(),
                if page < 3 { 2 } else { 1 },
                "page {page}: {body}"
            );
            seen.extend(items.iter().map(id_of));
        }
        assert_eq!(seen, all_ids, "pages must list every cron once, by id");
        let beyond = api.get("/api/crons?page=4&size=2").await.expect(200);
        assert!(page_of(&beyond, 5, 4, 2).is_empty(), "{beyond}");
        let default_page = api.get("/api/crons").await.expect(200);
        assert_eq!(default_page["page"], 1);
        assert_eq!(default_page["size"], 20);
        assert_eq!(ids(&default_page["items"]), all_ids);
        let max_page = api.get("/api/crons?size=100").await.expect(200);
        assert_eq!(page_of(&max_page, 5, 1, 100).len(), 5);

        // Size out of range, page 0, a bad filter: refused with the error body.
        for query in [
            "size=101",
            "size=0",
            "page=0",
            "size=abc",
            "is_enabled=maybe",
        ] {
            api.get(&format!("/api/crons?{query}"))
                .await
                .expect_error_in(&[400, 422]);
        }

        // is_enabled filter.
        let enabled = api.get("/api/crons?is_enabled=true").await.expect(200);
        let enabled_items = page_of(&enabled, 3, 1, 20);
        assert!(
            enabled_items.iter().all(|c| c["is_enabled"] == true),
            "{enabled}"
        );
        assert_eq!(
            ids(&enabled["items"]),
            vec![all_ids[0], all_ids[2], all_ids[4]]
        );
        let disabled = api
            .get("/api/crons?is_enabled=false&page=1&size=1")
            .await
            .expect(200);
        let disabled_items = page_of(&disabled, 2, 1, 1);
        assert_eq!(ids(&Value::Array(disabled_items)), vec![full_id]);

        // PUT with a subset changes only those fields.
        let updated = api
            .put(
                &format!("/api/crons/{id}"),
                &json!({"description": "updated", "max_retry": 7, "timezone": "America/New_York"}),
            )
            .await
            .expect(200);
        assert_eq!(updated["description"], "updated");
        assert_eq!(updated["max_retry"], 7);
        assert_eq!(updated["timezone"], "America/New_York");
        for key in [
            "name",
            "cron_expression",
            "handler_name",
            "handler_params",
            "is_enabled",
            "allow_overlap",
            "timeout_seconds",
            "misfire_policy",
        ] {
            assert_eq!(
                updated[key], created[key],
                "PUT changed `{key}`, which it was not given"
            );
        }
        assert!(instant(&updated["updated_at"]) >= instant(&created["updated_at"]));
        let reread = api.get(&format!("/api/crons/{id}")).await.expect(200);
        assert_eq!(reread["description"], "updated");
        assert_eq!(reread["max_retry"], 7);
        // Renaming to its own name is not a duplicate; a new expression is accepted.
        let renamed = api
        .put(
            &format!("/api/crons/{id}"),
            &json!({"name": "nightly", "cron_expression": "0 3 * * 1-5", "handler_params": {"a": 1}}),
        )
        .await
        .expect(200);
        assert_eq!(renamed["cron_expression"], "0 3 * * 1-5");
        assert_eq!(renamed["handler_params"], json!({"a": 1}));
        // handler_params: null clears them.
        let cleared = api
            .put(
                &format!("/api/crons/{id}"),
                &json!({"handler_params": null}),
            )
            .await
            .expect(200);
        assert_eq!(cleared["handler_params"], Value::Null, "{cleared}");
        assert_eq!(cleared["description"], "updated");

        // Toggle flips is_enabled, twice back.
        let toggled = api
            .post_empty(&format!("/api/crons/{id}/toggle"))
            .await
            .expect(200);
        assert_eq!(toggled["is_enabled"], false);
        assert_eq!(
            api.get(&format!("/api/crons/{id}")).await.expect(200)["is_enabled"],
            false
        );
        let toggled = api
            .post_empty(&format!("/api/crons/{id}/toggle"))
            .await
            .expect(200);
        assert_eq!(toggled["is_enabled"], true);
        let toggled = api
            .post_empty(&format!("/api/crons/{full_id}/toggle"))
            .await
            .expect(200);
        assert_eq!(toggled["is_enabled"], true);
        let enabled = api.get("/api/crons?is_enabled=true").await.expect(200);
        assert_eq!(enabled["total"], 4);

        // Delete: 204, then 404 everywhere, and the row is gone.
        api.delete(&format!("/api/crons/{id}"))
            .await
            .expect_empty(204);
        assert_eq!(count_crons(&db).await, 4);
        api.get(&format!("/api/crons/{id}")).await.expect_error(404);
        api.delete(&format!("/api/crons/{id}"))
            .await
            .expect_error(404);
        api.put(&format!("/api/crons/{id}"), &json!({"description": "x"}))
            .await
            .expect_error(404);
        api.post_empty(&format!("/api/crons/{id}/toggle"))
            .await
            .expect_error(404);
        api.get(&format!("/api/crons/{id}/next?count=1"))
            .await
            .expect_error(404);
        let listed = api.get("/api/crons").await.expect(200);
        assert_eq!(listed["total"], 4);
        assert!(!ids(&listed["items"]).contains(&id));
        // The name is free again.
        api.post("/api/crons", &cron_body("nightly", YEARLY))
            .await
            .expect(201);
    }
);

// `POST /api/crons/{id}/toggle` with `{"is_enabled": bool}` sets that state: a retried call
// changes nothing (not even `updated_at`); without a body it flips; a bad body is refused
// like every other body, and writes nothing.
backend_test!(
    retry_obeys_no_overlap_and_cancels_say_why,
    |db: TestDb| async move {
        let server = AdminServer::start(&db, "admin", "overlap", &[]).await;
        let api = &server.api;
        let mut body = cron_body("single", YEARLY);
        body["allow_overlap"] = json!(false);
        let cron = id_of(&api.post("/api/crons", &body).await.expect(201));
        // An earlier run failed (written as a worker would); a manual run is PENDING.
        let now = db.store.now().await.unwrap();
        let earlier = jobu::store::create::NewExecution {
            job_id: Some(cron),
            handler_name: "noop".into(),
            scheduled_time: now - chrono::Duration::hours(1),
            run_at: now - chrono::Duration::hours(1),
            params: None,
            param_source: job_execution::ParamSource::Cron,
            max_retry: 0,
            timeout_seconds: 60,
        };
        assert!(db.store.create_exclusive(&earlier).await.unwrap().is_new());
        let token = jobu::store::claim::new_token();
        let claimed = db
            .store
            .claim(&jobu::store::claim::ClaimRequest {
                worker_id: "w",
                handlers: &["noop".to_string()],
                limit: 1,
                lease_seconds: 30.0,
                token: &token,
            })
            .await
            .unwrap();
        let failed = claimed[0].id;
        db.store
            .fail(
                failed,
                &token,
                jobu::store::transition::Failure::Failed,
                "boom",
                0.0,
            )
            .await
            .unwrap();
        let manual = id_of(
            &api.post_empty(&format!("/api/crons/{cron}/trigger"))
                .await
                .expect(201),
        );

        let refused = api.post_empty(&format!("/api/jobs/{failed}/retry")).await;
        let error = refused.expect_error(409);
        assert_eq!(error.error, "overlap", "{refused}");
        assert_eq!(
            api.get(&format!("/api/jobs/{failed}")).await.expect(200)["status"],
            "FAILED",
            "a refused retry changes nothing"
        );

        let cancelled = api
            .post_empty(&format!("/api/jobs/{manual}/cancel"))
            .await
            .expect(200);
        assert_eq!(cancelled["status"], "CANCELLED");
        assert_eq!(cancelled["cancel_reason"], "operator", "{cancelled}");
        let retried = api
            .post_empty(&format!("/api/jobs/{failed}/retry"))
            .await
            .expect(200);
        assert_eq!(retried["status"], "PENDING");
        assert_eq!(retried["cancel_reason"], Value::Null);
    }
);

backend_test!(toggle_with_a_body_sets_the_state, |db: TestDb| async move {
    let server = AdminServer::start(&db, "admin", "toggle", &[]).await;
    let api = &server.api;
    let id = id_of(
        &api.post("/api/crons", &cron_body("switch", YEARLY))
            .await
            .expect(201),
    );
    let path = format!("/api/crons/{id}/toggle");
    let stored = |db: TestDb| async move {
        CronJobs::find_by_id(id)
            .one(db.store.connection())
            .await
            .expect("read cron")
            .expect("cron row")
    };

    let off = api
        .post(&path, &json!({"is_enabled": false}))
        .await
        .expect(200);
    assert_eq!(off["is_enabled"], false, "{off}");
    let row = stored(db.clone()).await;
    assert!(!row.is_enabled);
    // The same call again (a client's retry): still disabled, nothing written.
    let again = api
        .post(&path, &json!({"is_enabled": false}))
        .await
        .expect(200);
    assert_eq!(
        again["is_enabled"], false,
        "a repeated disable enabled it: {again}"
    );
    assert_eq!(again["updated_at"], off["updated_at"], "{again}");
    assert_eq!(
        stored(db.clone()).await,
        row,
        "a repeated disable wrote the row"
    );
    assert_eq!(
        api.get(&format!("/api/crons/{id}")).await.expect(200)["is_enabled"],
        false
    );

    for _ in 0..2 {
        let on = api
            .post(&path, &json!({"is_enabled": true}))
            .await
            .expect(200);
        assert_eq!(on["is_enabled"], true, "{on}");
        assert!(stored(db.clone()).await.is_enabled);
    }

    // Refused bodies: 400 (or 415 for another content type), and the cron is unchanged.
    let before = stored(db.clone()).await;
    type Refused<'a> = (&'a str, &'a str, &'a [u8], u16, Option<&'a str>);
    let refused: [Refused; 7] = [
        (
            "unknown field",
            "application/json",
            br#"{"is_enabled": false, "x": 1}"#,
            400,
            None,
        ),
        (
            "wrong type",
            "application/json",
            br#"{"is_enabled": "no"}"#,
            400,
            Some("is_enabled"),
        ),
        (
            "null state",
            "application/json",
            br#"{"is_enabled": null}"#,
            400,
            None,
        ),
        ("empty object", "application/json", b"{}", 400, None),
        ("not an object", "application/json", b"[false]", 400, None),
        (
            "malformed JSON",
            "application/json",
            b"{\"is_enabled\": ",
            400,
            None,
        ),
        (
            "text/plain",
            "text/plain",
            br#"{"is_enabled": false}"#,
            415,
            None,
        ),
    ];
    for (label, content_type, body, status, field) in refused {
        let reply = api
            .send(Method::POST, &path, Some((content_type, body.to_vec())))
            .await;
        let error = reply.expect_error(status);
        if let Some(field) = field {
            assert_eq!(error.field.as_deref(), Some(field), "{label}: {reply}");
        }
        assert_eq!(stored(db.clone()).await, before, "{label} changed the cron");
    }
    api.post("/api/crons/424242/toggle", &json!({"is_enabled": false}))
        .await
        .expect_error(404);

    // Without a body it flips, as before.
    let flipped = api.post_empty(&path).await.expect(200);
    assert_eq!(flipped["is_enabled"], false, "{flipped}");
    let flipped = api.post_empty(&path).await.expect(200);
    assert_eq!(flipped["is_enabled"], true, "{flipped}");

    // The spec documents the optional body.
    let spec = api.get("/openapi.json").await.expect(200);
    let op = &spec["paths"]["/api/crons/{id}/toggle"]["post"];
    assert_eq!(op["requestBody"]["required"], false, "{op}");
    let schema = &spec["components"]["schemas"]["CronToggle"];
    assert_eq!(schema["required"], json!(["is_enabled"]), "{schema}");
    assert_eq!(schema["additionalProperties"], false, "{schema}");
});

// ---------------------------------------------------------------------------------------
// 2. validation: refused with the documented status, field and body, nothing written

backend_test!(
    cron_validation_refuses_without_writing,
    |db: TestDb| async move {
        let server = AdminServer::start(
            &db,
            "admin",
            "validation",
            &[("JOBU__DISPATCHER__MIN_CRON_INTERVAL_SECONDS", "3600")],
        )
        .await;
        let api = &server.api;
        let existing = api
            .post("/api/crons", &cron_body("existing", YEARLY))
            .await
            .expect(201);
        let existing_id = id_of(&existing);
        let other = api
            .post("/api/crons", &cron_body("other", "0 * * * *"))
            .await
            .expect(201);
        let other_id = id_of(&other);
        let before = Snapshot::take(api, &db).await;
        assert_eq!(before.cron_rows, 2);

        let with = |patch: Value| {
            let mut body = cron_body("fresh", YEARLY);
            for (k, v) in patch.as_object().expect("object").iter() {
                body[k] = v.clone();
            }
            body
        };
        let json_of = |body: Value| Some(("application/json", serde_json::to_vec(&body).unwrap()));
        let crons = "/api/crons".to_string();
        let existing_path = format!("/api/crons/{existing_id}");
        let other_path = format!("/api/crons/{other_id}");
        let long = "n".repeat(101);
        let valid = serde_json::to_vec(&cron_body("fresh", YEARLY)).unwrap();

        // (label, method, path, body, expected)
        let mut cases: Vec<Case> = vec![
            (
                "61 * * * *".into(),
                Method::POST,
                crons.clone(),
                json_of(with(json!({"cron_expression": "61 * * * *"}))),
                Expect::Field(422, "cron_expression"),
            ),
            (
                "5L token (croniter refuses it too)".into(),
                Method::POST,
                crons.clone(),
                json_of(with(json!({"cron_expression": "0 0 * * 5L"}))),
                Expect::Field(422, "cron_expression"),
            ),
            (
                "empty expression".into(),
                Method::POST,
                crons.clone(),
                json_of(with(json!({"cron_expression": ""}))),
                Expect::Field(422, "cron_expression"),
            ),
            (
                "unknown zone".into(),
                Method::POST,
                crons.clone(),
                json_of(with(json!({"timezone": "Mars/Olympus_Mons"}))),
                Expect::Field(422, "timezone"),
            ),
            (
                "too frequent".into(),
                Method::POST,
                crons.clone(),
                json_of(with(json!({"cron_expression": "* * * * *"}))),
                Expect::Status(422),
            ),
            (
                "too frequent (seconds field)".into(),
                Method::POST,
                crons.clone(),
                json_of(with(json!({"cron_expression": "*/10 * * * * *"}))),
                Expect::Status(422),
            ),
            (
                "unknown handler".into(),
                Method::POST,
                crons.clone(),
                json_of(with(json!({"handler_name": "no-such-handler"}))),
                Expect::Field(422, "handler_name"),
            ),
            (
                "empty name".into(),
                Method::POST,
                crons.clone(),
                json_of(with(json!({"name": ""}))),
                Expect::Field(422, "name"),
            ),
            (
                "101-character name".into(),
                Method::POST,
                crons.clone(),
                json_of(with(json!({"name": long}))),
                Expect::Field(422, "name"),
            ),
            (
                "max_retry 101".into(),
                Method::POST,
                crons.clone(),
                json_of(with(json!({"max_retry": 101}))),
                Expect::Field(422, "max_retry"),
            ),
            (
                "timeout_seconds 0".into(),
                Method::POST,
                crons.clone(),
                json_of(with(json!({"timeout_seconds": 0}))),
                Expect::Field(422, "timeout_seconds"),
            ),
            (
                "timeout_seconds 86401".into(),
                Method::POST,
                crons.clone(),
                json_of(with(json!({"timeout_seconds": 86401}))),
                Expect::Field(422, "timeout_seconds"),
            ),
            (
                "sleep params out of range".into(),
                Method::POST,
                crons.clone(),
                json_of(with(
                    json!({"handler_name": "sleep", "handler_params": {"seconds": -5}}),
                )),
                Expect::Status(422),
            ),
            (
                "sleep params of a wrong type".into(),
                Method::POST,
                crons.clone(),
                json_of(with(
                    json!({"handler_name": "sleep", "handler_params": {"seconds": "long"}}),
                )),
                Expect::Status(422),
            ),
            (
                "wrong type: max_retry \"three\"".into(),
                Method::POST,
                crons.clone(),
                json_of(with(json!({"max_retry": "three"}))),
                Expect::Status(400),
            ),
            (
                "wrong type: is_enabled \"yes\"".into(),
                Method::POST,
                crons.clone(),
                json_of(with(json!({"is_enabled": "yes"}))),
                Expect::Status(400),
            ),
            (
                "wrong type: name 5".into(),
                Method::POST,
                crons.clone(),
                json_of(with(json!({"name": 5}))),
                Expect::Status(400),
            ),
            // The doc does not pin these down between 400 and 422.
            (
                "unknown misfire policy".into(),
                Method::POST,
                crons.clone(),
                json_of(with(json!({"misfire_policy": "sometimes"}))),
                Expect::OneOf(&[400, 422]),
            ),
            (
                "handler_params a string".into(),
                Method::POST,
                crons.clone(),
                json_of(with(json!({"handler_params": "x"}))),
                Expect::OneOf(&[400, 422]),
            ),
            (
                "max_retry -1".into(),
                Method::POST,
                crons.clone(),
                json_of(with(json!({"max_retry": -1}))),
                Expect::OneOf(&[400, 422]),
            ),
            (
                "missing cron_expression".into(),
                Method::POST,
                crons.clone(),
                json_of(json!({"name": "fresh", "handler_name": "noop"})),
                Expect::OneOf(&[400, 422]),
            ),
            (
                "missing name".into(),
                Method::POST,
                crons.clone(),
                json_of(json!({"cron_expression": YEARLY, "handler_name": "noop"})),
                Expect::OneOf(&[400, 422]),
            ),
            (
                "body an array".into(),
                Method::POST,
                crons.clone(),
                json_of(json!(["fresh"])),
                Expect::OneOf(&[400, 422]),
            ),
            // Conflicts.
            (
                "duplicate name".into(),
                Method::POST,
                crons.clone(),
                json_of(cron_body("existing", YEARLY)),
                Expect::Code(409, "duplicate_name"),
            ),
            (
                "rename to a taken name".into(),
                Method::PUT,
                other_path.clone(),
                json_of(json!({"name": "existing"})),
                Expect::Code(409, "duplicate_name"),
            ),
            // Malformed bodies.
            (
                "truncated JSON".into(),
                Method::POST,
                crons.clone(),
                Some(("application/json", b"{\"name\": \"fresh\", ".to_vec())),
                Expect::Status(400),
            ),
            (
                "not JSON".into(),
                Method::POST,
                crons.clone(),
                Some(("application/json", b"name=fresh".to_vec())),
                Expect::Status(400),
            ),
            (
                "empty body".into(),
                Method::POST,
                crons.clone(),
                Some(("application/json", Vec::new())),
                Expect::Status(400),
            ),
            (
                "body over 1 MiB".into(),
                Method::POST,
                crons.clone(),
                json_of(with(json!({"description": "x".repeat(1024 * 1024 + 1)}))),
                Expect::Status(413),
            ),
            // PostgreSQL refuses NUL in text: a client error, not a 500.
            (
                "NUL in name".into(),
                Method::POST,
                crons.clone(),
                json_of(with(json!({"name": "nul\u{0}name"}))),
                Expect::ClientError,
            ),
            (
                "NUL in description".into(),
                Method::POST,
                crons.clone(),
                json_of(with(json!({"description": "nul\u{0}"}))),
                Expect::ClientError,
            ),
            (
                "NUL in handler_params".into(),
                Method::POST,
                crons.clone(),
                json_of(with(json!({"handler_params": {"k": "nul\u{0}"}}))),
                Expect::ClientError,
            ),
            (
                "content type text/plain".into(),
                Method::POST,
                crons.clone(),
                Some(("text/plain", valid.clone())),
                Expect::Status(415),
            ),
            (
                "content type form".into(),
                Method::POST,
                crons.clone(),
                Some(("application/x-www-form-urlencoded", valid.clone())),
                Expect::Status(415),
            ),
            (
                "no content type".into(),
                Method::POST,
                crons.clone(),
                Some(("", valid.clone())),
                Expect::ClientError,
            ),
            // PUT validates the same way and writes nothing when it refuses.
            (
                "PUT 61 * * * *".into(),
                Method::PUT,
                existing_path.clone(),
                json_of(json!({"cron_expression": "61 * * * *"})),
                Expect::Field(422, "cron_expression"),
            ),
            (
                "PUT too frequent".into(),
                Method::PUT,
                existing_path.clone(),
                json_of(json!({"cron_expression": "* * * * *"})),
                Expect::Status(422),
            ),
            (
                "PUT unknown zone".into(),
                Method::PUT,
                existing_path.clone(),
                json_of(json!({"timezone": "Nowhere/Land"})),
                Expect::Field(422, "timezone"),
            ),
            (
                "PUT unknown handler".into(),
                Method::PUT,
                existing_path.clone(),
                json_of(json!({"handler_name": "no-such-handler"})),
                Expect::Field(422, "handler_name"),
            ),
            (
                "PUT empty name".into(),
                Method::PUT,
                existing_path.clone(),
                json_of(json!({"name": ""})),
                Expect::Field(422, "name"),
            ),
            (
                "PUT max_retry 101".into(),
                Method::PUT,
                existing_path.clone(),
                json_of(json!({"max_retry": 101})),
                Expect::Field(422, "max_retry"),
            ),
            (
                "PUT timeout_seconds 0".into(),
                Method::PUT,
                existing_path.clone(),
                json_of(json!({"timeout_seconds": 0})),
                Expect::Field(422, "timeout_seconds"),
            ),
            (
                "PUT max_retry \"three\"".into(),
                Method::PUT,
                existing_path.clone(),
                json_of(json!({"max_retry": "three"})),
                Expect::Status(400),
            ),
            (
                "PUT a valid field next to an invalid one".into(),
                Method::PUT,
                existing_path.clone(),
                json_of(json!({"description": "half", "timeout_seconds": 86401})),
                Expect::Field(422, "timeout_seconds"),
            ),
            (
                "PUT sleep params the handler refuses".into(),
                Method::PUT,
                existing_path.clone(),
                json_of(json!({"handler_name": "sleep", "handler_params": {"seconds": 86401}})),
                Expect::Status(422),
            ),
            (
                "PUT malformed JSON".into(),
                Method::PUT,
                existing_path.clone(),
                Some(("application/json", b"{".to_vec())),
                Expect::Status(400),
            ),
            (
                "PUT text/plain".into(),
                Method::PUT,
                existing_path.clone(),
                Some(("text/plain", b"{}".to_vec())),
                Expect::Status(415),
            ),
            // Query parameters.
            (
                "list size 101".into(),
                Method::GET,
                "/api/crons?size=101".into(),
                None,
                Expect::OneOf(&[400, 422]),
            ),
            (
                "list page 0".into(),
                Method::GET,
                "/api/crons?page=0".into(),
                None,
                Expect::OneOf(&[400, 422]),
            ),
            // Numeric ids that do not exist: 404.
            (
                "GET missing cron".into(),
                Method::GET,
                "/api/crons/424242".into(),
                None,
                Expect::Status(404),
            ),
            (
                "GET missing job".into(),
                Method::GET,
                "/api/jobs/424242".into(),
                None,
                Expect::Status(404),
            ),
        ];
        // Ids that do not exist or are not ids, on every route with an id: 404 or 400.
        for bad in [
            "424242",
            "0",
            "abc",
            "-1",
            "99999999999999999999",
            "1.5",
            "%00",
        ] {
            for (method, path) in [
                (Method::GET, format!("/api/crons/{bad}")),
                (Method::PUT, format!("/api/crons/{bad}")),
                (Method::DELETE, format!("/api/crons/{bad}")),
                (Method::POST, format!("/api/crons/{bad}/toggle")),
                (Method::POST, format!("/api/crons/{bad}/trigger")),
                (Method::GET, format!("/api/crons/{bad}/next?count=1")),
                (Method::GET, format!("/api/jobs/{bad}")),
                (Method::DELETE, format!("/api/jobs/{bad}")),
                (Method::POST, format!("/api/jobs/{bad}/cancel")),
                (Method::POST, format!("/api/jobs/{bad}/retry")),
            ] {
                let body = (method == Method::PUT)
                    .then(|| json_of(json!({"description": "x"})))
                    .flatten();
                cases.push((
                    format!("id {bad}"),
                    method,
                    path,
                    body,
                    Expect::OneOf(&[400, 404]),
                ));
            }
        }

        let mut failures = Failures::default();
        let mut baseline = before.clone();
        for (label, method, path, body, expected) in cases {
            let label = format!("{label} ({method} {path})");
            failures
                .run(&label, async {
                    let reply = api.send(method.clone(), &path, body).await;
                    expected.check(&reply);
                })
                .await;
            // Judge each case on its own: a write is reported once, then becomes the baseline.
            let now = Snapshot::take(api, &db).await;
            if now != baseline {
                failures.check(
                    false,
                    format!("{label} changed data: {}", baseline.change_to(&now)),
                );
                baseline = now;
            }
        }

        // The message of a bad expression names the field and the token.
        let reply = api
            .post(
                "/api/crons",
                &with(json!({"cron_expression": "61 * * * *"})),
            )
            .await;
        let error = reply.expect_error(422);
        failures.check(
            error.error == "invalid_cron_expression",
            format!("error code of 61 * * * *: {reply}"),
        );
        failures.check(
            error.message.contains("minute") && error.message.contains("61"),
            format!("message must name the minute field and the token: {reply}"),
        );

        // The daemon is still healthy after all that.
        api.get("/health").await.expect(200);
        failures.finish("validation cases");
        assert_eq!(Snapshot::take(api, &db).await, before);
    }
);

/// A request body: content type (empty for none) and bytes.
type Body = Option<(&'static str, Vec<u8>)>;
/// One refused request: label, method, path, body and what it must answer.
type Case = (String, Method, String, Body, Expect);

/// What a refused request must answer.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// This status and the error body.
    Status(u16),
    /// One of these statuses and the error body.
    OneOf(&'static [u16]),
    /// This status and the error body naming `field`.
    Field(u16, &'static str),
    /// This status and the error body with this `error` code.
    Code(u16, &'static str),
    /// Any 4xx with the error body.
    ClientError,
}

impl Expect {
    #[track_caller]
    fn check(self, reply: &common::admin::Reply) {
        match self {
            Expect::Status(status) => {
                reply.expect_error(status);
            }
            Expect::OneOf(statuses) => {
                reply.expect_error_in(statuses);
            }
            Expect::Field(status, field) => {
                reply.expect_error_field(status, field);
            }
            Expect::Code(status, code) => {
                let error = reply.expect_error(status);
                assert_eq!(error.error, code, "error code: {reply}");
            }
            Expect::ClientError => {
                reply.expect_client_error();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// 3. next fire times

backend_test!(next_fire_times_in_zone, |db: TestDb| async move {
    let server = AdminServer::start(&db, "admin", "next", &[]).await;
    let api = &server.api;
    let mut body = cron_body("ny", "30 2 * * *");
    body["timezone"] = json!("America/New_York");
    let id = id_of(&api.post("/api/crons", &body).await.expect(201));

    let next = api
        .get(&format!("/api/crons/{id}/next?count=3"))
        .await
        .expect(200);
    assert_eq!(next["cron_id"], id);
    assert_eq!(next["cron_expression"], "30 2 * * *");
    assert_eq!(next["timezone"], "America/New_York");
    let times = next["times"].as_array().expect("times array");
    assert_eq!(times.len(), 3, "{next}");
    let zone = chrono_tz::America::New_York;
    let now = Utc::now();
    let mut previous: Option<DateTime<Utc>> = None;
    for time in times {
        let utc = instant(&time["utc"]);
        let local_text = time["local"].as_str().expect("local string");
        let local = DateTime::parse_from_rfc3339(local_text)
            .unwrap_or_else(|e| panic!("local {local_text}: {e}"));
        assert_eq!(
            local.with_timezone(&Utc),
            utc,
            "local and utc differ: {time}"
        );
        let offset = zone.offset_from_utc_datetime(&utc.naive_utc()).fix();
        assert_eq!(
            local.offset().local_minus_utc(),
            offset.local_minus_utc(),
            "local must carry New York's offset at that instant: {time}"
        );
        assert!(
            ["02:30", "03:00", "03:30"].contains(&local.format("%H:%M").to_string().as_str()),
            "02:30 New York time (03:00 on the spring-forward day): {time}"
        );
        assert!(
            utc > now - chrono::Duration::seconds(5),
            "in the past: {time}"
        );
        if let Some(p) = previous {
            assert!(utc > p, "times must increase strictly: {next}");
            assert!(
                utc - p <= chrono::Duration::hours(25),
                "a day is skipped: {next}"
            );
        }
        previous = Some(utc);
    }

    let one = api
        .get(&format!("/api/crons/{id}/next?count=1"))
        .await
        .expect(200);
    assert_eq!(one["times"].as_array().map(Vec::len), Some(1));
    let hundred = api
        .get(&format!("/api/crons/{id}/next?count=100"))
        .await
        .expect(200);
    assert_eq!(hundred["times"].as_array().map(Vec::len), Some(100));
    for count in ["0", "101", "-1", "many"] {
        api.get(&format!("/api/crons/{id}/next?count={count}"))
            .await
            .expect_error_in(&[400, 422]);
    }
});

// ---------------------------------------------------------------------------------------
// 4. executions through the API (admin role only: nothing runs them)

backend_test!(
    executions_create_list_cancel_retry_delete,
    |db: TestDb| async move {
        let server = AdminServer::start(&db, "admin", "jobs", &[]).await;
        let api = &server.api;

        let empty = api.get("/api/jobs").await.expect(200);
        assert!(page_of(&empty, 0, 1, 20).is_empty());
        let stats = assert_stats_match_rows(api, &db).await;
        assert_eq!(stats["oldest_pending_age_seconds"], Value::Null, "{stats}");

        // A future run: stored as given, not yet due (no oldest pending age).
        let later = (Utc::now() + chrono::Duration::hours(2))
            .with_timezone(&Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let future = api
            .post(
                "/api/jobs",
                &json!({"handler_name": "noop", "params": {"x": [1, 2]}, "run_at": later,
                    "max_retry": 2, "timeout_seconds": 30}),
            )
            .await
            .expect(201);
        assert_eq!(instant(&future["run_at"]), instant(&json!(later)));
        assert_eq!(future["params"], json!({"x": [1, 2]}));
        assert_eq!(future["max_retry"], 2);
        assert_eq!(future["timeout_seconds"], 30);
        assert_eq!(future["status"], "PENDING");
        let stats = assert_stats_match_rows(api, &db).await;
        assert_eq!(
            stats["oldest_pending_age_seconds"],
            Value::Null,
            "only due executions count: {stats}"
        );

        // An ad-hoc run now: 201, param_source api, PENDING, no cron.
        let before_post = Utc::now();
        let job = api
            .post("/api/jobs", &json!({"handler_name": "noop"}))
            .await
            .expect(201);
        let job_id = id_of(&job);
        assert_eq!(job["param_source"], "api");
        assert_eq!(job["status"], "PENDING");
        assert_eq!(job["job_id"], Value::Null);
        assert_eq!(job["cron_name"], Value::Null);
        assert_eq!(job["handler_name"], "noop");
        assert_eq!(job["retry_count"], 0);
        assert_eq!(job["max_retry"], 0);
        assert_eq!(job["timeout_seconds"], 300);
        assert_eq!(job["cancel_requested"], false);
        assert_eq!(job["worker_id"], Value::Null);
        assert_eq!(job["started_at"], Value::Null);
        assert_eq!(job["finished_at"], Value::Null);
        let run_at = instant(&job["run_at"]);
        assert!(
            (run_at - before_post).num_seconds().abs() <= 30,
            "run_at defaults to now: {job}"
        );
        instant(&job["scheduled_time"]);
        assert_eq!(count_executions(&db, None).await, 2);
        let stats = assert_stats_match_rows(api, &db).await;
        assert!(
            stats["oldest_pending_age_seconds"]
                .as_f64()
                .is_some_and(|a| a >= 0.0),
            "a due PENDING execution has an age: {stats}"
        );

        // GET one.
        let got = api.get(&format!("/api/jobs/{job_id}")).await.expect(200);
        for key in [
            "id",
            "job_id",
            "handler_name",
            "status",
            "params",
            "param_source",
            "retry_count",
            "max_retry",
            "timeout_seconds",
        ] {
            assert_eq!(got[key], job[key], "GET differs from POST in `{key}`");
        }

        // Refused creations write nothing.
        let rows = count_executions(&db, None).await;
        api.post("/api/jobs", &json!({"handler_name": "no-such-handler"}))
            .await
            .expect_error_field(422, "handler_name");
        api.post(
            "/api/jobs",
            &json!({"handler_name": "sleep", "params": {"seconds": "long"}}),
        )
        .await
        .expect_error(422);
        api.post(
            "/api/jobs",
            &json!({"handler_name": "noop", "run_at": "tomorrow"}),
        )
        .await
        .expect_error(400);
        api.post(
            "/api/jobs",
            &json!({"handler_name": "noop", "max_retry": "three"}),
        )
        .await
        .expect_error(400);
        api.post("/api/jobs", &json!({"params": {}}))
            .await
            .expect_error_in(&[400, 422]);
        api.send(
            Method::POST,
            "/api/jobs",
            Some(("application/json", b"{".to_vec())),
        )
        .await
        .expect_error(400);
        assert_eq!(
            count_executions(&db, None).await,
            rows,
            "a refused POST /api/jobs wrote a row"
        );

        // A manual trigger of a cron: param_source manual, linked to the cron.
        let mut cron = cron_body("once", YEARLY);
        cron["allow_overlap"] = json!(false);
        cron["handler_params"] = json!({"fail": "only if run"});
        let cron_id = id_of(&api.post("/api/crons", &cron).await.expect(201));
        let triggered = api
            .post_empty(&format!("/api/crons/{cron_id}/trigger"))
            .await
            .expect(201);
        let triggered_id = id_of(&triggered);
        assert_eq!(triggered["param_source"], "manual");
        assert_eq!(triggered["job_id"], cron_id);
        assert_eq!(triggered["cron_name"], "once");
        assert_eq!(triggered["params"], json!({"fail": "only if run"}));
        assert_eq!(triggered["status"], "PENDING");
        assert_eq!(triggered["max_retry"], 3);
        // allow_overlap false and one PENDING: 409 overlap, nothing written.
        let rows = count_executions(&db, None).await;
        let reply = api
            .post_empty(&format!("/api/crons/{cron_id}/trigger"))
            .await;
        assert_eq!(reply.expect_error(409).error, "overlap", "{reply}");
        assert_eq!(count_executions(&db, None).await, rows);

        // Three runs a day apart, for the date filters.
        let mut dated = Vec::new();
        for days in [1, 2, 3] {
            let at = (Utc::now() + chrono::Duration::days(days))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            dated.push(
                api.post(
                    "/api/jobs",
                    &json!({"handler_name": "sleep", "params": {"seconds": 1}, "run_at": at}),
                )
                .await
                .expect(201),
            );
        }
        let total = count_executions(&db, None).await;
        assert_eq!(total, 6);

        // The whole list, newest first (scheduled_time descending).
        let all = api.get("/api/jobs?size=100").await.expect(200);
        let all_items = page_of(&all, total, 1, 100);
        let times: Vec<DateTime<Utc>> = all_items
            .iter()
            .map(|e| instant(&e["scheduled_time"]))
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] >= w[1]),
            "jobs must be newest first by scheduled_time: {all}"
        );

        // Pagination covers every execution once.
        let mut seen = Vec::new();
        for page in 1..=3u64 {
            let body = api
                .get(&format!("/api/jobs?page={page}&size=2"))
                .await
                .expect(200);
            seen.extend(page_of(&body, total, page, 2).iter().map(id_of));
        }
        assert_eq!(seen, ids(&all["items"]));
        for query in [
            "size=101",
            "size=0",
            "page=0",
            "status=BOGUS",
            "cron_id=abc",
            "from_date=yesterday",
            "to_date=2026-13-01T00:00:00Z",
        ] {
            api.get(&format!("/api/jobs?{query}"))
                .await
                .expect_error_in(&[400, 422]);
        }

        // Filters: cron_id, status, from_date/to_date (inclusive).
        let by_cron = api
            .get(&format!("/api/jobs?cron_id={cron_id}"))
            .await
            .expect(200);
        assert_eq!(
            ids(&Value::Array(page_of(&by_cron, 1, 1, 20))),
            vec![triggered_id]
        );
        let none = api.get("/api/jobs?cron_id=424242").await.expect(200);
        assert!(page_of(&none, 0, 1, 20).is_empty());
        let pending = api
            .get("/api/jobs?status=PENDING&size=100")
            .await
            .expect(200);
        page_of(&pending, total, 1, 100);
        let cancelled = api.get("/api/jobs?status=CANCELLED").await.expect(200);
        assert!(page_of(&cancelled, 0, 1, 20).is_empty());

        let from = dated[1]["scheduled_time"].as_str().unwrap().to_string();
        let to = dated[2]["scheduled_time"].as_str().unwrap().to_string();
        let expected: BTreeSet<i64> = all_items
            .iter()
            .filter(|e| {
                let t = instant(&e["scheduled_time"]);
                t >= instant(&json!(from)) && t <= instant(&json!(to))
            })
            .map(id_of)
            .collect();
        assert!(expected.contains(&id_of(&dated[1])) && expected.contains(&id_of(&dated[2])));
        let window = api
            .get(&format!(
                "/api/jobs?from_date={}&to_date={}&size=100",
                query_instant(&from),
                query_instant(&to)
            ))
            .await
            .expect(200);
        let got: BTreeSet<i64> = ids(&window["items"]).into_iter().collect();
        assert_eq!(
            got, expected,
            "from_date <= scheduled_time <= to_date: {window}"
        );
        assert_eq!(window["total"].as_u64(), Some(expected.len() as u64));
        let only_from = api
            .get(&format!(
                "/api/jobs?from_date={}&size=100",
                query_instant(&to)
            ))
            .await
            .expect(200);
        assert!(
            ids(&only_from["items"]).contains(&id_of(&dated[2])),
            "{only_from}"
        );
        assert!(
            !ids(&only_from["items"]).contains(&id_of(&dated[1])),
            "{only_from}"
        );
        let only_to = api
            .get(&format!(
                "/api/jobs?to_date={}&size=100",
                query_instant(&from)
            ))
            .await
            .expect(200);
        assert!(
            ids(&only_to["items"]).contains(&id_of(&dated[1])),
            "{only_to}"
        );
        assert!(
            !ids(&only_to["items"]).contains(&id_of(&dated[2])),
            "{only_to}"
        );
        let combined = api
            .get(&format!(
                "/api/jobs?status=PENDING&cron_id={cron_id}&to_date={}",
                query_instant(&from)
            ))
            .await
            .expect(200);
        assert_eq!(ids(&combined["items"]), vec![triggered_id]);

        // Cancel a PENDING one: CANCELLED at once; cancelling again is 409 invalid_state.
        let cancelled = api
            .post_empty(&format!("/api/jobs/{job_id}/cancel"))
            .await
            .expect(200);
        assert_eq!(cancelled["status"], "CANCELLED", "{cancelled}");
        assert_eq!(
            api.get(&format!("/api/jobs/{job_id}")).await.expect(200)["status"],
            "CANCELLED"
        );
        assert_eq!(count_executions(&db, Some("CANCELLED")).await, 1);
        let reply = api.post_empty(&format!("/api/jobs/{job_id}/cancel")).await;
        assert_eq!(reply.expect_error(409).error, "invalid_state", "{reply}");
        let listed = api.get("/api/jobs?status=CANCELLED").await.expect(200);
        assert_eq!(ids(&Value::Array(page_of(&listed, 1, 1, 20))), vec![job_id]);
        assert_stats_match_rows(api, &db).await;

        // Retry of CANCELLED: PENDING again with retry_count 0; of PENDING: 409 invalid_state.
        let retried = api
            .post_empty(&format!("/api/jobs/{job_id}/retry"))
            .await
            .expect(200);
        assert_eq!(retried["status"], "PENDING", "{retried}");
        assert_eq!(retried["retry_count"], 0);
        assert_eq!(retried["cancel_requested"], false);
        assert!(instant(&retried["run_at"]) <= Utc::now() + chrono::Duration::seconds(30));
        let reply = api.post_empty(&format!("/api/jobs/{job_id}/retry")).await;
        assert_eq!(reply.expect_error(409).error, "invalid_state", "{reply}");
        assert_eq!(count_executions(&db, Some("CANCELLED")).await, 0);

        // Delete: 204, then 404; the row is gone.
        api.delete(&format!("/api/jobs/{job_id}"))
            .await
            .expect_empty(204);
        api.get(&format!("/api/jobs/{job_id}"))
            .await
            .expect_error(404);
        api.delete(&format!("/api/jobs/{job_id}"))
            .await
            .expect_error(404);
        api.post_empty(&format!("/api/jobs/{job_id}/cancel"))
            .await
            .expect_error(404);
        assert_eq!(count_executions(&db, None).await, total - 1);

        // Deleting a cron keeps its executions, unlinked.
        api.delete(&format!("/api/crons/{cron_id}"))
            .await
            .expect_empty(204);
        let orphan = api
            .get(&format!("/api/jobs/{triggered_id}"))
            .await
            .expect(200);
        assert_eq!(orphan["job_id"], Value::Null, "{orphan}");
        assert_eq!(orphan["cron_name"], Value::Null, "{orphan}");
        api.post_empty(&format!("/api/crons/{cron_id}/trigger"))
            .await
            .expect_error(404);
        assert_eq!(count_executions(&db, None).await, total - 1);
        assert_stats_match_rows(api, &db).await;
    }
);

// ---------------------------------------------------------------------------------------
// 5. with the dispatcher and worker: executions really run, cancel reaches a running one

backend_test!(
    run_role_executes_cancels_and_reports,
    |db: TestDb| async move {
        let server = AdminServer::start(&db, "run", "run", &[]).await;
        let api = &server.api;

        // Trigger a noop cron: manual, runs to SUCCESS on this worker.
        let cron_id = id_of(
            &api.post("/api/crons", &cron_body("manual-noop", YEARLY))
                .await
                .expect(201),
        );
        let triggered = api
            .post_empty(&format!("/api/crons/{cron_id}/trigger"))
            .await
            .expect(201);
        assert_eq!(triggered["param_source"], "manual");
        assert_eq!(triggered["job_id"], cron_id);
        let done = wait_status(api, id_of(&triggered), "SUCCESS").await;
        assert_eq!(done["worker_id"], server.name.as_str(), "{done}");
        assert_eq!(done["error_message"], Value::Null);
        assert_eq!(done["result"], Value::Null, "noop's result is null: {done}");
        assert!(instant(&done["finished_at"]) >= instant(&done["started_at"]));
        let reply = api
            .post_empty(&format!("/api/jobs/{}/cancel", id_of(&done)))
            .await;
        assert_eq!(reply.expect_error(409).error, "invalid_state", "{reply}");
        let reply = api
            .post_empty(&format!("/api/jobs/{}/retry", id_of(&done)))
            .await;
        assert_eq!(reply.expect_error(409).error, "invalid_state", "{reply}");

        // A failing run, then a retry of the FAILED one runs it again.
        let failing = api
            .post(
                "/api/jobs",
                &json!({"handler_name": "noop", "params": {"fail": "boom"}}),
            )
            .await
            .expect(201);
        let failing_id = id_of(&failing);
        let failed = wait_status(api, failing_id, "FAILED").await;
        assert!(
            failed["error_message"]
                .as_str()
                .is_some_and(|m| m.contains("boom")),
            "{failed}"
        );
        let retried = api
            .post_empty(&format!("/api/jobs/{failing_id}/retry"))
            .await
            .expect(200);
        assert_eq!(retried["retry_count"], 0);
        assert!(
            matches!(
                retried["status"].as_str(),
                Some("PENDING" | "RUNNING" | "FAILED")
            ),
            "{retried}"
        );
        let failed_again = wait_status(api, failing_id, "FAILED").await;
        assert!(
            instant(&failed_again["finished_at"]) > instant(&failed["finished_at"]),
            "the retry ran again: {failed_again}"
        );

        // A long sleep reaches RUNNING; DELETE is refused while it runs; cancel stops it.
        let sleeping = api
            .post(
                "/api/jobs",
                &json!({"handler_name": "sleep", "params": {"seconds": 60}}),
            )
            .await
            .expect(201);
        let sleep_id = id_of(&sleeping);
        let running = wait_status(api, sleep_id, "RUNNING").await;
        assert_eq!(running["worker_id"], server.name.as_str());
        instant(&running["lease_expires_at"]);
        let reply = api.delete(&format!("/api/jobs/{sleep_id}")).await;
        assert_eq!(reply.expect_error(409).error, "running", "{reply}");
        let reply = api.post_empty(&format!("/api/jobs/{sleep_id}/retry")).await;
        assert_eq!(reply.expect_error(409).error, "invalid_state", "{reply}");

        // While it runs, the worker is listed with it.
        let workers = api.get("/api/workers").await.expect(200);
        let me = workers
            .as_array()
            .expect("workers array")
            .iter()
            .find(|w| w["id"] == server.name.as_str())
            .unwrap_or_else(|| panic!("worker {} not listed: {workers}", server.name))
            .clone();
        assert_eq!(me["pid"].as_i64(), Some(server.daemon.pid() as i64), "{me}");
        assert!(me["host"].as_str().is_some_and(|h| !h.is_empty()), "{me}");
        assert!(me["running"].as_u64().is_some(), "running >= 0: {me}");
        assert!(me["concurrency"].as_u64().is_some_and(|c| c >= 1), "{me}");
        let roles: Vec<&str> = me["roles"]
            .as_array()
            .expect("roles")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            roles.contains(&"dispatcher") && roles.contains(&"worker"),
            "{me}"
        );
        let handlers: Vec<&str> = me["handlers"]
            .as_array()
            .expect("handlers")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for handler in ["noop", "sleep", "shell"] {
            assert!(
                handlers.contains(&handler),
                "handler {handler} missing: {me}"
            );
        }
        let heartbeat = instant(&me["last_heartbeat_at"]);
        assert!(
            (Utc::now() - heartbeat).num_seconds().abs() <= 15,
            "last_heartbeat_at is not recent: {me}"
        );
        assert!(instant(&me["started_at"]) <= heartbeat + chrono::Duration::seconds(1));
        let still_running = eventually(WAIT, || async {
            let workers = api.get("/api/workers").await.expect(200);
            workers
                .as_array()
                .into_iter()
                .flatten()
                .any(|w| w["id"] == server.name.as_str() && w["running"].as_u64() == Some(1))
        })
        .await;
        assert!(
            still_running,
            "the worker's `running` never showed the sleep"
        );

        let asked = Instant::now();
        let reply = api
            .post_empty(&format!("/api/jobs/{sleep_id}/cancel"))
            .await
            .expect(200);
        assert!(
            reply["status"] == "CANCELLED" || reply["cancel_requested"] == true,
            "a RUNNING execution gets cancel_requested: {reply}"
        );
        let stopped = wait_status(api, sleep_id, "CANCELLED").await;
        let took = asked.elapsed();
        assert!(
            took <= Duration::from_secs(6),
            "cancel took {took:?} with a 1 s heartbeat"
        );
        assert!(stopped["finished_at"].is_string(), "{stopped}");

        // Stats agree with the rows, per status and per handler.
        let stats = assert_stats_match_rows(api, &db).await;
        assert_eq!(stats["by_status"]["SUCCESS"], 1, "{stats}");
        assert_eq!(stats["by_status"]["FAILED"], 1, "{stats}");
        assert_eq!(stats["by_status"]["CANCELLED"], 1, "{stats}");
        assert_eq!(stats["by_status"]["PENDING"], 0, "{stats}");
        assert_eq!(stats["by_status"]["RUNNING"], 0, "{stats}");
        let noop = handler_stats(&stats, "noop");
        assert_eq!(noop["SUCCESS"], 1, "{stats}");
        assert_eq!(noop["FAILED"], 1, "{stats}");
        let sleep = handler_stats(&stats, "sleep");
        assert_eq!(sleep["CANCELLED"], 1, "{stats}");
        assert_eq!(stats["oldest_pending_age_seconds"], Value::Null, "{stats}");
        assert_eq!(count_executions(&db, None).await, 3);

        // Metrics: Prometheus text, every name jobu_, the executions counter for noop.
        let metrics = api.get("/metrics").await;
        assert_eq!(metrics.status, 200, "{metrics}");
        let mut names = BTreeSet::new();
        for line in metrics.text.lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let name = if let Some(rest) = line
                .strip_prefix("# TYPE ")
                .or_else(|| line.strip_prefix("# HELP "))
            {
                rest.split_whitespace().next().unwrap_or("").to_string()
            } else if line.starts_with('#') {
                continue;
            } else {
                line.split(['{', ' ']).next().unwrap_or("").to_string()
            };
            names.insert(name);
        }
        assert!(!names.is_empty(), "no metrics: {metrics}");
        let foreign: Vec<&String> = names.iter().filter(|n| !n.starts_with("jobu_")).collect();
        assert!(
            foreign.is_empty(),
            "metric names without the jobu_ prefix: {foreign:?}"
        );
        let noop_total = metrics
            .text
            .lines()
            .any(|l| l.starts_with("jobu_executions_total{") && l.contains("\"noop\""));
        assert!(
            noop_total,
            "no jobu_executions_total sample for handler noop:\n{}",
            metrics.text
        );

        // SIGTERM: a clean exit.
        let mut server = server;
        let status = server.daemon.stop(Duration::from_secs(20)).await;
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "jobu run did not exit 0 on SIGTERM"
        );
    }
);

// ---------------------------------------------------------------------------------------
// 6. health, readiness, the spec and the docs page

backend_test!(health_ready_openapi_docs, |db: TestDb| async move {
    let server = AdminServer::start(&db, "admin", "health", &[]).await;
    let api = &server.api;

    assert_eq!(
        api.get("/health").await.expect(200),
        json!({"status": "ok"})
    );
    assert_eq!(
        api.get("/ready").await.expect(200),
        json!({"status": "ready", "database": "ok", "pending_migrations": 0,
               "databases": {"default": "ok"}})
    );

    let spec = api.get("/openapi.json").await.expect(200);
    assert!(
        spec["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "openapi version: {}",
        spec["openapi"]
    );
    let paths = spec["paths"].as_object().expect("paths object");
    for path in [
        "/api/crons",
        "/api/crons/{id}",
        "/api/crons/{id}/toggle",
        "/api/crons/{id}/trigger",
        "/api/crons/{id}/next",
        "/api/jobs",
        "/api/jobs/{id}",
        "/api/jobs/{id}/retry",
        "/api/jobs/{id}/cancel",
        "/api/stats",
        "/api/workers",
    ] {
        assert!(
            paths.contains_key(path),
            "spec lacks {path}; has {:?}",
            paths.keys()
        );
    }

    let docs = api.get("/docs").await;
    assert_eq!(docs.status, 200, "{docs}");
    assert!(
        docs.content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("text/html")),
        "/docs content type {:?}",
        docs.content_type
    );
    let external = external_assets(&docs.text);
    assert!(
        external.is_empty(),
        "/docs loads assets from other hosts: {external:?}"
    );
    // The page is built on its first request, around the finished spec /openapi.json serves
    // (with its security scheme), not the generated one; a second request gets the same.
    let served = api.get("/openapi.json").await;
    assert!(
        docs.text.contains(&format!("let spec = {};", served.text)),
        "/docs does not embed the spec /openapi.json serves"
    );
    assert!(
        served.text.contains("bearer"),
        "the finished spec: {}",
        served.text
    );
    assert_eq!(api.get("/docs").await.text, docs.text);

    // An unknown API route is a 404 with the error body too.
    api.get("/api/no-such-thing").await.expect_error(404);
});

/// The value of one sample in Prometheus text, such as `jobu_executions{status="PENDING"}`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

// `/metrics` does not count executions in the database on every scrape: the counts are
// cached for 5 s, so a row added between two quick scrapes shows only after the period.
backend_test!(metrics_cache_database_counts, |db: TestDb| async move {
    const PENDING: &str = "jobu_executions{status=\"PENDING\"}";
    const PERIOD: Duration = Duration::from_secs(5);
    let server = AdminServer::start(&db, "admin", "metrics", &[]).await;
    let api = &server.api;
    let job = json!({"handler_name": "noop"});
    api.post("/api/jobs", &job).await.expect(201);

    let first = api.get("/metrics").await;
    let scraped = Instant::now();
    assert_eq!(sample(&first.text, PENDING), Some(1.0), "{first}");
    let age = sample(&first.text, "jobu_executions_scrape_age_seconds");
    assert!(age.is_some_and(|a| (0.0..1.0).contains(&a)), "{first}");

    api.post("/api/jobs", &job).await.expect(201);
    assert_eq!(count_executions(&db, Some("PENDING")).await, 2);
    let second = api.get("/metrics").await;
    if scraped.elapsed() < PERIOD - Duration::from_secs(1) {
        assert_eq!(
            sample(&second.text, PENDING),
            Some(1.0),
            "the second scrape {:?} after the first counted again: {second}",
            scraped.elapsed()
        );
    }

    let last = std::sync::Mutex::new(String::new());
    let updated = eventually(WAIT, || async {
        let text = api.get("/metrics").await.text;
        let done = sample(&text, PENDING) == Some(2.0);
        *last.lock().expect("lock") = text;
        done
    })
    .await;
    let last = last.into_inner().expect("lock");
    assert!(updated, "the new count never showed:\n{last}");
    assert!(
        scraped.elapsed() >= PERIOD - Duration::from_millis(500),
        "the new count showed {:?} after the first scrape, before the cache period",
        scraped.elapsed()
    );
});

/// Same-host `src`/`href` paths of `<script>` and `<link>` tags (absolute paths only).
fn local_assets(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attr in ["src=\"", "href=\""] {
        let mut rest = html;
        while let Some(pos) = rest.find(attr) {
            rest = &rest[pos + attr.len()..];
            let value = &rest[..rest.find('"').unwrap_or(0)];
            let is_asset = value.ends_with(".js") || value.ends_with(".css");
            if value.starts_with('/') && !value.starts_with("//") && is_asset {
                found.push(value.to_string());
            }
        }
    }
    found
}

/// `src`/`href` values of `<script>` and `<link>` tags that name another host
/// (`http://`, `https://` or protocol-relative `//`).
fn external_assets(html: &str) -> Vec<String> {
    let lower = html.to_ascii_lowercase();
    let mut found = Vec::new();
    for tag in ["<script", "<link"] {
        let mut from = 0;
        while let Some(pos) = lower[from..].find(tag) {
            let start = from + pos;
            let end = lower[start..].find('>').map_or(lower.len(), |e| start + e);
            let element = &lower[start..end];
            for attr in ["src=", "href="] {
                if let Some(a) = element.find(attr) {
                    let value = element[a + attr.len()..].trim_start_matches(['"', '\'']);
                    if value.starts_with("http:")
                        || value.starts_with("https:")
                        || value.starts_with("//")
                    {
                        found.push(html[start..end].to_string());
                    }
                }
            }
            from = end.max(start + 1);
        }
    }
    found
}

// ---------------------------------------------------------------------------------------
// response shapes as documented: every key present (null when empty), instants with `Z`,
// next_fire_time kept by the API, the stats object

const CRON_KEYS: [&str; 24] = [
    "id",
    "name",
    "description",
    "cron_expression",
    "timezone",
    "handler_name",
    "handler_params",
    "is_enabled",
    "overlap_policy",
    "allow_overlap",
    "excluded_dates",
    "jitter_seconds",
    "max_retry",
    "timeout_seconds",
    "misfire_policy",
    "next_fire_time",
    "last_fire_time",
    "created_at",
    "updated_at",
    "on_success",
    "on_failure",
    "pause_note",
    "paused_at",
    "paused_by",
];
const EXECUTION_KEYS: [&str; 29] = [
    "id",
    "job_id",
    "cron_name",
    "handler_name",
    "scheduled_time",
    "run_at",
    "status",
    "params",
    "param_source",
    "retry_count",
    "max_retry",
    "timeout_seconds",
    "worker_id",
    "lease_expires_at",
    "cancel_requested",
    "cancel_reason",
    "started_at",
    "finished_at",
    "error_message",
    "result",
    "created_at",
    "updated_at",
    "fire_time_until",
    "fire_count",
    "reason",
    "requested_by",
    "parent_execution_id",
    "chain_child",
    "backfill_id",
];

/// Missing and undocumented keys of a JSON object, as messages.
fn key_differences(what: &str, object: &Value, documented: &[&str]) -> Vec<String> {
    let Some(map) = object.as_object() else {
        return vec![format!("{what} is not an object: {object}")];
    };
    let mut out = Vec::new();
    let missing: BTreeSet<&str> = documented
        .iter()
        .copied()
        .filter(|k| !map.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        out.push(format!(
            "{what} lacks documented keys {missing:?}: {object}"
        ));
    }
    let extra: Vec<&String> = map
        .keys()
        .filter(|k| !documented.contains(&k.as_str()))
        .collect();
    if !extra.is_empty() {
        out.push(format!("{what} has undocumented keys {extra:?}: {object}"));
    }
    out
}

/// Every string in `value` that parses as an RFC 3339 instant, with its JSON path.
fn instants_in(value: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::String(s) if DateTime::parse_from_rfc3339(s).is_ok() => {
            out.push((path.to_string(), s.clone()))
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                instants_in(item, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                instants_in(v, &format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

backend_test!(documented_shapes, |db: TestDb| async move {
    let server = AdminServer::start(&db, "admin", "shapes", &[]).await;
    let api = &server.api;
    let mut failures = Failures::default();
    let mut bodies: Vec<(String, Value)> = Vec::new();

    let created = api
        .post("/api/crons", &cron_body("shape", "30 2 * * *"))
        .await
        .expect(201);
    let id = id_of(&created);
    for d in key_differences("POST /api/crons", &created, &CRON_KEYS) {
        failures.check(false, d);
    }
    let next = api
        .get(&format!("/api/crons/{id}/next?count=1"))
        .await
        .expect(200);
    let first = instant(&next["times"][0]["utc"]);
    failures.check(
        created["next_fire_time"].is_string() && instant(&created["next_fire_time"]) == first,
        format!("an enabled cron's next_fire_time must be its next fire time {first}: {created}"),
    );
    let updated = api
        .put(
            &format!("/api/crons/{id}"),
            &json!({"timezone": "Asia/Tokyo"}),
        )
        .await
        .expect(200);
    let first = instant(
        &api.get(&format!("/api/crons/{id}/next?count=1"))
            .await
            .expect(200)["times"][0]["utc"],
    );
    failures.check(
        updated["next_fire_time"].is_string() && instant(&updated["next_fire_time"]) == first,
        format!("after a zone change next_fire_time must follow it ({first}): {updated}"),
    );
    let listed = api.get("/api/crons").await.expect(200);
    for d in key_differences(
        "GET /api/crons page",
        &listed,
        &["items", "total", "page", "size", "pages"],
    ) {
        failures.check(false, d);
    }
    for d in key_differences("GET /api/crons item", &listed["items"][0], &CRON_KEYS) {
        failures.check(false, d);
    }
    let toggled = api
        .post_empty(&format!("/api/crons/{id}/toggle"))
        .await
        .expect(200);
    failures.check(
        toggled["next_fire_time"].is_null(),
        format!("a disabled cron has no next fire time: {toggled}"),
    );
    let toggled = api
        .post_empty(&format!("/api/crons/{id}/toggle"))
        .await
        .expect(200);
    bodies.extend([
        ("POST /api/crons".to_string(), created),
        ("PUT /api/crons/{id}".to_string(), updated),
        ("GET /api/crons".to_string(), listed),
        ("POST /api/crons/{id}/toggle".to_string(), toggled),
    ]);

    let job = api
        .post("/api/jobs", &json!({"handler_name": "noop"}))
        .await
        .expect(201);
    for d in key_differences("POST /api/jobs", &job, &EXECUTION_KEYS) {
        failures.check(false, d);
    }
    let triggered = api
        .post_empty(&format!("/api/crons/{id}/trigger"))
        .await
        .expect(201);
    for d in key_differences("POST /api/crons/{id}/trigger", &triggered, &EXECUTION_KEYS) {
        failures.check(false, d);
    }
    let jobs = api.get("/api/jobs").await.expect(200);
    for d in key_differences("GET /api/jobs item", &jobs["items"][0], &EXECUTION_KEYS) {
        failures.check(false, d);
    }
    let got = api
        .get(&format!("/api/jobs/{}", id_of(&job)))
        .await
        .expect(200);
    for d in key_differences("GET /api/jobs/{id}", &got, &EXECUTION_KEYS) {
        failures.check(false, d);
    }

    let stats = api.get("/api/stats").await.expect(200);
    for d in key_differences(
        "GET /api/stats",
        &stats,
        &[
            "by_status",
            "by_handler",
            "oldest_pending_age_seconds",
            "schedule_lag_seconds",
            "handlers",
        ],
    ) {
        failures.check(false, d);
    }
    for d in key_differences(
        "GET /api/stats schedule_lag_seconds",
        &stats["schedule_lag_seconds"],
        &["sample_size", "count", "avg", "max"],
    ) {
        failures.check(false, d);
    }
    for d in key_differences("GET /api/stats by_status", &stats["by_status"], &STATUSES) {
        failures.check(false, d);
    }

    bodies.extend([
        ("POST /api/jobs".to_string(), job),
        ("POST /api/crons/{id}/trigger".to_string(), triggered),
        ("GET /api/jobs".to_string(), jobs),
        ("GET /api/jobs/{id}".to_string(), got),
        ("GET /api/stats".to_string(), stats),
        (
            "GET /api/crons/{id}/next (utc)".to_string(),
            json!(next["times"][0]["utc"]),
        ),
    ]);
    // "Every instant is RFC 3339 in UTC (2026-11-26T10:00:00Z, fractions allowed)".
    let mut not_z = Vec::new();
    for (what, body) in &bodies {
        let mut found = Vec::new();
        instants_in(body, "", &mut found);
        for (path, text) in found {
            if !text.ends_with('Z') {
                not_z.push(format!("{what} {path} = {text}"));
            }
        }
    }
    failures.check(
        not_z.is_empty(),
        format!("instants not written with `Z`: {}", not_z.join("; ")),
    );
    failures.finish("response shapes");
});

/// The page scanners find what they look for, so a CDN link cannot slip through unseen.
#[test]
fn asset_scanners_find_external_and_local_assets() {
    let html = r#"<link rel="stylesheet" href="https://cdn.example/x.css">
        <script src="//cdn.example/y.js"></script><SCRIPT SRC='http://a.example/z.js'></SCRIPT>
        <script src="/console/app.js"></script><link href="/console/app.css" rel="stylesheet">
        <script>const u = "https://inline.example/not-an-asset";</script>"#;
    assert_eq!(
        external_assets(html).len(),
        3,
        "{:?}",
        external_assets(html)
    );
    assert_eq!(
        local_assets(html),
        vec!["/console/app.js", "/console/app.css"]
    );
}

// ---------------------------------------------------------------------------------------
// 7. authentication (SQLite is enough)

const TOKEN: &str = "s3cret";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auth_token_guards_api_console_docs() {
    common::run(Backend::Sqlite, |db: TestDb| async move {
        let server =
            AdminServer::start(&db, "admin", "auth", &[("JOBU__ADMIN__AUTH_TOKEN", TOKEN)]).await;
        let anonymous = &server.api;
        let authorized = server.api_with_token(TOKEN);
        let wrong = server.api_with_token("wrong");

        // The console's own assets, as its page links them.
        let page = authorized.get("/crons").await;
        assert_eq!(page.status, 200, "/crons with the token: {page}");
        let assets = local_assets(&page.text);
        assert!(
            !assets.is_empty(),
            "the console page links no script or stylesheet"
        );
        let credentials = [
            "Bearer wrong",
            "s3cret",
            "Basic czNjcmV0",
            "Bearer s3cre",
            "Bearer s3cretX",
            "Bearer",
            "bearer  ",
        ];
        let api_paths = [
            "/api/crons",
            "/api/jobs",
            "/api/stats",
            "/api/workers",
            "/openapi.json",
        ];
        let pages = vec![
            "/".to_string(),
            "/crons".into(),
            "/jobs".into(),
            "/jobs/1".into(),
            "/docs".into(),
        ];
        let mut failures = Failures::default();
        // The console's static assets hold no data and are open, so the login page can use
        // them.
        for asset in &assets {
            let reply = anonymous.get(asset).await;
            failures.check(
                reply.status == 200,
                format!("{asset} without a token: {reply}"),
            );
        }
        // API routes: 401 with the JSON error body.
        for path in api_paths {
            failures
                .run(&format!("GET {path}"), async {
                    anonymous.get(path).await.expect_error(401);
                    for header in credentials {
                        anonymous
                            .send_with_authorization(Method::GET, path, header)
                            .await
                            .expect_error(401);
                    }
                    let reply = authorized.get(path).await;
                    assert_eq!(reply.status, 200, "{path} with the token: {reply}");
                })
                .await;
        }
        // Console pages and /docs: 401 (the login page, for people).
        for path in &pages {
            failures
                .run(&format!("GET {path}"), async {
                    let reply = anonymous.get(path).await;
                    assert_eq!(reply.status, 401, "{path} without a token: {reply}");
                    for header in credentials {
                        let reply = anonymous
                            .send_with_authorization(Method::GET, path, header)
                            .await;
                        assert_eq!(reply.status, 401, "{path} with `{header}`: {reply}");
                    }
                    let reply = authorized.get(path).await;
                    assert_eq!(reply.status, 200, "{path} with the token: {reply}");
                })
                .await;
        }
        failures.finish("guarded routes");
        assert_eq!(wrong.get("/api/crons").await.status, 401);
        // Writes are guarded too, and a refused one writes nothing.
        anonymous
            .post("/api/crons", &cron_body("sneaky", YEARLY))
            .await
            .expect_error(401);
        anonymous
            .post("/api/jobs", &json!({"handler_name": "noop"}))
            .await
            .expect_error(401);
        assert_eq!(count_crons(&db).await, 0);
        assert_eq!(count_executions(&db, None).await, 0);
        authorized
            .post("/api/crons", &cron_body("allowed", YEARLY))
            .await
            .expect(201);
        assert_eq!(count_crons(&db).await, 1);

        // Open: health, readiness, metrics.
        assert_eq!(anonymous.get("/health").await.expect(200)["status"], "ok");
        assert_eq!(anonymous.get("/ready").await.expect(200)["status"], "ready");
        assert_eq!(anonymous.get("/metrics").await.status, 200);
        drop(server);

        // metrics_auth: /metrics needs the token as well.
        let server = AdminServer::start(
            &db,
            "admin",
            "metrics-auth",
            &[
                ("JOBU__ADMIN__AUTH_TOKEN", TOKEN),
                ("JOBU__ADMIN__METRICS_AUTH", "true"),
            ],
        )
        .await;
        server.api.get("/metrics").await.expect_error(401);
        server
            .api
            .with_token("wrong")
            .get("/metrics")
            .await
            .expect_error(401);
        assert_eq!(
            server.api_with_token(TOKEN).get("/metrics").await.status,
            200
        );
        assert_eq!(server.api.get("/health").await.status, 200);
    })
    .await;
}

/// Every console URL the token announcement names ("open the console at URL"), in order.
fn console_urls(log: &str) -> Vec<String> {
    log.split("open the console at ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The token reaches no log line: not in a login URL, not anywhere.
fn assert_token_not_logged(log: &str, token: &str) {
    assert!(!log.contains(token), "the token is in the log:\n{log}");
    assert!(
        !log.contains("?token="),
        "a login URL is in the log:\n{log}"
    );
}

/// Waits for a process that must refuse to start; its exit code and log.
async fn refused_start(launched: &mut common::admin::Launched) -> (Option<i32>, String) {
    let status = launched.daemon.wait_exit(WAIT).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    (status.and_then(|s| s.code()), launched.log())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn non_loopback_host_gets_a_token_unless_allow_insecure() {
    common::run(Backend::Sqlite, |db: TestDb| async move {
        // 0.0.0.0 without a token: served with the generated one, never open. The login URL
        // names loopback (a browser cannot open 0.0.0.0) and the real port.
        let server = AdminServer::start(
            &db,
            "admin",
            "any-host",
            &[("JOBU__ADMIN__HOST", "0.0.0.0")],
        )
        .await;
        let token = server.token.clone().expect("a generated token");
        server
            .api
            .without_token()
            .get("/api/crons")
            .await
            .expect_error(401);
        assert_eq!(server.api.get("/api/crons").await.expect(200)["total"], 0);
        assert_eq!(
            console_urls(&server.log()),
            [format!("http://127.0.0.1:{}/", server.port)]
        );
        assert_token_not_logged(&server.log(), &token);
        drop(server);

        // allow_insecure with the shell handler (base_env enables it): refused, exit 2.
        let mut launched = launch(
            &db,
            "admin",
            "insecure-shell",
            &[
                ("JOBU__ADMIN__HOST", "0.0.0.0"),
                ("JOBU__ADMIN__ALLOW_INSECURE", "true"),
            ],
        );
        let (code, log) = refused_start(&mut launched).await;
        assert_eq!(
            code,
            Some(2),
            "allow_insecure with shell must exit 2; log:\n{}",
            tail(&log, 30)
        );
        launched.scratch.remove();

        // allow_insecure without the shell handler: open.
        let server = AdminServer::start(
            &db,
            "admin",
            "allow-insecure",
            &[
                ("JOBU__ADMIN__HOST", "0.0.0.0"),
                ("JOBU__ADMIN__ALLOW_INSECURE", "true"),
                ("JOBU__HANDLERS__SHELL__ENABLED", "false"),
            ],
        )
        .await;
        assert_eq!(server.token, None);
        assert_eq!(server.api.get("/api/crons").await.expect(200)["total"], 0);

        // With a token instead it serves too, and guards the API.
        let server = AdminServer::start(
            &db,
            "admin",
            "host-with-token",
            &[
                ("JOBU__ADMIN__HOST", "0.0.0.0"),
                ("JOBU__ADMIN__AUTH_TOKEN", TOKEN),
            ],
        )
        .await;
        server.api.get("/api/crons").await.expect_error(401);
        assert_eq!(
            server.api_with_token(TOKEN).get("/api/crons").await.status,
            200
        );
        assert_token_not_logged(&server.log(), TOKEN);
    })
    .await;
}

/// Without a token configured, `jobu admin` generates one in `data/admin_token` (0600), logs
/// the console URL and the file (never the token), guards the API with it, and a restart
/// reuses it. The
/// login URL signs a browser in: 303 to the page without the token, and the session cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generated_token_file_login_url_and_restart() {
    use std::os::unix::fs::PermissionsExt;
    common::run(Backend::Sqlite, |db: TestDb| async move {
        let server = AdminServer::start(&db, "admin", "generated", &[]).await;
        let port = server.port;
        let file = server.scratch.path(common::admin::TOKEN_FILE);
        let token = server.token.clone().expect("a generated token");
        let meta = std::fs::metadata(&file).expect("the token file");
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "mode of {}",
            file.display()
        );
        assert_eq!(
            std::fs::read_to_string(&file).expect("read"),
            format!("{token}\n")
        );
        assert!(
            token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()),
            "32 random bytes as hex: {token}"
        );
        let log = server.log();
        assert_eq!(
            console_urls(&log),
            [format!("http://127.0.0.1:{port}/")],
            "the console URL, logged once:\n{log}"
        );
        assert!(
            log.contains(common::admin::TOKEN_FILE),
            "names the file:\n{log}"
        );
        assert_token_not_logged(&log, &token);

        // The API needs the token; a refused write writes nothing.
        let anonymous = server.api.without_token();
        anonymous.get("/api/crons").await.expect_error(401);
        let shell = json!({"name": "open-door", "cron_expression": YEARLY,
            "handler_name": "shell", "handler_params": {"command": "id"}});
        anonymous.post("/api/crons", &shell).await.expect_error(401);
        assert_eq!(count_crons(&db).await, 0);
        assert_eq!(server.api.get("/api/crons").await.expect(200)["total"], 0);
        server.api.get("/openapi.json").await.expect(200);

        // The login URL: 303 to the same page without `token`, other parameters kept.
        let host = format!("127.0.0.1:{port}");
        for (path, location) in [
            (format!("/?token={token}"), "/".to_string()),
            (
                format!("/jobs?status=FAILED&token={token}&page=2"),
                "/jobs?status=FAILED&page=2".to_string(),
            ),
        ] {
            let reply = get_with_host(port, &path, Some(&host), None).await;
            assert_eq!(reply.status, 303, "{reply}");
            assert_eq!(
                reply.header("location"),
                Some(location.as_str()),
                "{reply:?}"
            );
            let cookie = reply.header("set-cookie").unwrap_or_default();
            assert_eq!(
                cookie,
                format!("jobu_token={token}; Path=/; SameSite=Strict"),
                "{reply:?}"
            );
        }
        // The cookie opens the pages.
        let page = raw(
            port,
            &format!("GET /crons HTTP/1.1\nHost: {host}\nCookie: jobu_token={token}"),
            b"",
        )
        .await;
        assert_eq!(page.status, 200, "{page}");
        assert!(page.text.contains("data-page=\"crons\""), "{page}");
        // A wrong token: the login page, no cookie.
        let wrong = get_with_host(port, "/crons?token=wrong", Some(&host), None).await;
        assert_eq!(wrong.status, 401, "{wrong}");
        assert!(wrong.text.contains("data-page=\"login\""), "{wrong}");
        assert_eq!(wrong.header("set-cookie"), None);
        // The API takes the header only, not a query parameter.
        get_with_host(
            port,
            &format!("/api/crons?token={token}"),
            Some(&host),
            None,
        )
        .await
        .expect_error(401);

        // A restart reads the same file: the same token, a login URL with the new port.
        let server = server.restart(&db).await;
        assert_eq!(server.token.as_deref(), Some(token.as_str()));
        let urls = console_urls(&server.log());
        assert_eq!(
            urls.last().map(String::as_str),
            Some(format!("http://127.0.0.1:{}/", server.port).as_str()),
            "{urls:?}"
        );
        assert_eq!(urls.len(), 2, "{urls:?}");
        assert_token_not_logged(&server.log(), &token);
        assert_eq!(server.api.get("/api/crons").await.expect(200)["total"], 0);
        server
            .api
            .without_token()
            .get("/api/crons")
            .await
            .expect_error(401);
    })
    .await;
}

/// A token file written by hand is used (a mode wider than 0600 is warned about); an empty
/// one, or one with spaces, stops jobu with exit code 2 naming it; `admin.token_file` moves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_file_is_checked() {
    use std::os::unix::fs::PermissionsExt;
    common::run(Backend::Sqlite, |db: TestDb| async move {
        let prepared = |label: &str, content: &str, mode: u32| {
            let name = format!("{label}-{}", db.backend.name());
            let scratch = common::process::Scratch::new(&name);
            let file = scratch.path(common::admin::TOKEN_FILE);
            std::fs::create_dir_all(file.parent().expect("folder")).expect("data folder");
            std::fs::write(&file, content).expect("token file");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod");
            (scratch, name)
        };

        let (scratch, name) = prepared("by-hand", "written-by-hand\n", 0o644);
        let server = AdminServer::start_in(scratch, &db, "admin", &name, &[]).await;
        assert_eq!(server.token.as_deref(), Some("written-by-hand"));
        server.api.get("/api/crons").await.expect(200);
        let log = server.log();
        assert!(
            log.contains("chmod 600"),
            "no warning about mode 644:\n{log}"
        );
        drop(server);

        for (label, content) in [("empty", ""), ("spaces", "two words\n")] {
            let (scratch, name) = prepared(label, content, 0o600);
            let mut launched = common::admin::launch_in(scratch, &db, "admin", &name, &[]);
            let (code, log) = refused_start(&mut launched).await;
            assert_eq!(code, Some(2), "{label}: log:\n{}", tail(&log, 20));
            assert!(
                log.contains(common::admin::TOKEN_FILE),
                "{label}: the message must name the file:\n{log}"
            );
            launched.scratch.remove();
        }

        let elsewhere = [("JOBU__ADMIN__TOKEN_FILE", "secrets/jobu.token")];
        let server = AdminServer::start(&db, "admin", "token-file", &elsewhere).await;
        let token = server.token.clone().expect("token");
        assert!(server.scratch.path("secrets/jobu.token").is_file());
        assert!(!server.scratch.path(common::admin::TOKEN_FILE).exists());
        assert!(
            server.log().contains("secrets/jobu.token"),
            "{}",
            server.log()
        );
        assert_token_not_logged(&server.log(), &token);
    })
    .await;
}

/// No token at all (`allow_insecure`) is refused while the shell handler is on in a process
/// that serves the admin API, with exit code 2 naming both settings; processes without the
/// admin role are not concerned; with the shell handler off the API is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allow_insecure_refuses_the_shell_handler() {
    common::run(Backend::Sqlite, |db: TestDb| async move {
        let insecure = [("JOBU__ADMIN__ALLOW_INSECURE", "true")];
        for role in ["admin", "run"] {
            let mut launched = launch(&db, role, &format!("insecure-{role}"), &insecure);
            let (code, log) = refused_start(&mut launched).await;
            assert_eq!(code, Some(2), "jobu {role}: log:\n{}", tail(&log, 20));
            for key in ["handlers.shell.enabled", "admin.allow_insecure"] {
                assert!(
                    log.contains(key),
                    "jobu {role}: the message must name {key}:\n{log}"
                );
            }
            launched.scratch.remove();
        }
        // No admin API in the process: nothing to refuse.
        let mut worker = launch(&db, "worker", "insecure-worker", &insecure);
        let no_admin = [
            ("JOBU__ADMIN__ALLOW_INSECURE", "true"),
            ("JOBU__ADMIN__ENABLED", "false"),
        ];
        let mut run = launch(&db, "run", "insecure-no-admin", &no_admin);
        tokio::time::sleep(Duration::from_secs(2)).await;
        for launched in [&mut worker, &mut run] {
            assert!(
                launched.daemon.alive(),
                "{} exited:\n{}",
                launched.name,
                tail(&launched.log(), 20)
            );
            launched.daemon.kill9();
        }
        worker.scratch.remove();
        run.scratch.remove();

        // Without the shell handler: the API is open, and no token file is made.
        let server = AdminServer::start(
            &db,
            "admin",
            "insecure-open",
            &[
                ("JOBU__ADMIN__ALLOW_INSECURE", "true"),
                ("JOBU__HANDLERS__SHELL__ENABLED", "false"),
            ],
        )
        .await;
        assert_eq!(server.token, None);
        server.api.get("/api/crons").await.expect(200);
        server
            .api
            .post("/api/crons", &cron_body("open", YEARLY))
            .await
            .expect(201);
        assert!(!server.scratch.path(common::admin::TOKEN_FILE).exists());
        // The shell handler is not there to be named.
        let stats = server.api.get("/api/stats").await.expect(200);
        assert!(
            !stats["handlers"]
                .as_array()
                .is_some_and(|h| h.contains(&json!("shell"))),
            "{stats}"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 8. /ready is 503 when the database is gone (dropped under the running process)

mod ready_fails_without_database {
    use super::*;

    async fn body(db: TestDb) {
        let server = AdminServer::start(&db, "admin", "ready503", &[]).await;
        let api = &server.api;
        assert_eq!(api.get("/ready").await.expect(200)["database"], "ok");

        drop_database(&db).await;
        let deadline = Instant::now() + WAIT;
        let reply = loop {
            let reply = api.get("/ready").await;
            if reply.status == 503 || Instant::now() >= deadline {
                break reply;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        reply.expect_error(503);
        // Liveness does not depend on the database.
        assert_eq!(api.get("/health").await.expect(200)["status"], "ok");
    }

    /// Drops the test's database with a separate admin connection to its server.
    async fn drop_database(db: &TestDb) {
        let mut url = url::Url::parse(&db.url).expect("db url");
        let name = url.path().trim_start_matches('/').to_string();
        let (server_db, sql) = match db.backend {
            Backend::Postgres => ("postgres", format!("DROP DATABASE \"{name}\" WITH (FORCE)")),
            Backend::MySql => ("mysql", format!("DROP DATABASE `{name}`")),
            Backend::Sqlite => unreachable!("not run on SQLite"),
        };
        url.set_path(&format!("/{server_db}"));
        let mut opts = sea_orm::ConnectOptions::new(url.to_string());
        opts.max_connections(1).sqlx_logging(false);
        let admin = sea_orm::Database::connect(opts)
            .await
            .expect("admin connection");
        admin.execute_unprepared(&sql).await.expect("drop database");
        let _ = admin.close().await;
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

/// CORS comes from `admin.cors`: a listed origin gets the headers (preflight included, before
/// authentication), any other origin none; without origins there are no CORS headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_follows_config() {
    common::run(Backend::Sqlite, |db: TestDb| async move {
        const ALLOWED: &str = "https://ops.example.com";
        let server = AdminServer::start(
            &db,
            "admin",
            "cors",
            &[
                ("JOBU__ADMIN__CORS__ALLOW_ORIGINS", ALLOWED),
                ("JOBU__ADMIN__AUTH_TOKEN", "s3cret"),
            ],
        )
        .await;
        let http = reqwest::Client::new();
        let url = format!("{}/api/crons", server.api.base);
        let preflight = http
            .request(Method::OPTIONS, &url)
            .header("Origin", ALLOWED)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization, content-type",
            )
            .send()
            .await
            .expect("preflight");
        assert!(preflight.status().is_success(), "{}", preflight.status());
        let allow = preflight.headers().get("access-control-allow-origin");
        assert_eq!(
            allow.and_then(|v| v.to_str().ok()),
            Some(ALLOWED),
            "{:?}",
            preflight.headers()
        );
        let methods = preflight
            .headers()
            .get("access-control-allow-methods")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_uppercase();
        assert!(
            methods.contains("POST") && methods.contains("DELETE"),
            "{methods}"
        );

        let get = http
            .get(&url)
            .header("Origin", ALLOWED)
            .bearer_auth("s3cret")
            .send()
            .await
            .expect("get");
        assert_eq!(get.status(), 200);
        assert!(get.headers().contains_key("access-control-allow-origin"));

        let foreign = http
            .request(Method::OPTIONS, &url)
            .header("Origin", "https://evil.example.net")
            .header("Access-Control-Request-Method", "POST")
            .send()
            .await
            .expect("foreign preflight");
        assert!(
            !foreign
                .headers()
                .contains_key("access-control-allow-origin"),
            "{:?}",
            foreign.headers()
        );

        // No origins configured: no CORS headers at all.
        let plain = AdminServer::start(&db, "admin", "no-cors", &[]).await;
        let reply = http
            .get(format!("{}/api/crons", plain.api.base))
            .header("Origin", ALLOWED)
            .send()
            .await
            .expect("get");
        assert!(!reply.headers().contains_key("access-control-allow-origin"));
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 9. DNS rebinding and cross-site requests: the Host and Origin checks (SQLite is enough)

/// `GET path` with this `Host` (none when `None`) and optionally the bearer token.
async fn get_with_host(
    port: u16,
    path: &str,
    host: Option<&str>,
    token: Option<&str>,
) -> common::admin::Reply {
    let mut head = format!("GET {path} HTTP/1.1");
    if let Some(host) = host {
        head.push_str(&format!("\nHost: {host}"));
    }
    if let Some(token) = token {
        head.push_str(&format!("\nAuthorization: Bearer {token}"));
    }
    raw(port, &head, b"").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_header_must_name_this_server() {
    common::run(Backend::Sqlite, |db: TestDb| async move {
        let server = AdminServer::start(
            &db,
            "admin",
            "hosts",
            &[
                ("JOBU__ADMIN__AUTH_TOKEN", TOKEN),
                ("JOBU__ADMIN__ALLOWED_HOSTS", "jobu.example.com,.corp.example"),
            ],
        )
        .await;
        let port = server.port;
        let mut failures = Failures::default();
        let served = [
            format!("127.0.0.1:{port}"),
            "127.0.0.1".to_string(),
            format!("localhost:{port}"),
            "LocalHost".to_string(),
            format!("[::1]:{port}"),
            "127.9.9.9".to_string(),
            format!("jobu.example.com:{port}"),
            "JOBU.Example.COM".to_string(),
            "corp.example".to_string(),
            format!("a.b.corp.example:{port}"),
        ];
        for host in &served {
            let reply = get_with_host(port, "/api/crons", Some(host), Some(TOKEN)).await;
            failures.check(reply.status == 200, format!("Host {host}: {reply}"));
        }
        let refused = [
            format!("evil.example:{port}"),
            "evil.example".to_string(),
            "localhost.evil.example".to_string(),
            "127.0.0.1.nip.io".to_string(),
            "x.jobu.example.com".to_string(),
            "evilcorp.example".to_string(),
            // An IP literal other than loopback is not ours when bound to 127.0.0.1.
            format!("10.1.2.3:{port}"),
            format!("[fd00::1]:{port}"),
            "bad host".to_string(),
        ];
        for host in &refused {
            // With and without the token, on every kind of path.
            for (path, token) in [
                ("/api/crons", Some(TOKEN)),
                ("/api/crons", None),
                ("/crons", Some(TOKEN)),
                ("/health", None),
                ("/metrics", None),
                ("/console/app.js", None),
            ] {
                failures
                    .run(&format!("Host {host} {path} token {}", token.is_some()), async {
                        let reply = get_with_host(port, path, Some(host), token).await;
                        reply.expect_error_field(421, "Host");
                    })
                    .await;
            }
        }
        // No Host at all (HTTP/1.0 allows leaving it out).
        let reply = raw(port, &format!("GET /api/crons HTTP/1.0\nAuthorization: Bearer {TOKEN}"), b"").await;
        failures
            .run("no Host", async { reply.expect_error_field(421, "Host"); })
            .await;
        // A write with a foreign Host writes nothing, even with the token.
        let body = serde_json::to_vec(&cron_body("rebound", YEARLY)).expect("body");
        let reply = raw(
            port,
            &format!(
                "POST /api/crons HTTP/1.1\nHost: evil.example:{port}\nAuthorization: Bearer {TOKEN}\n\
                 Content-Type: application/json"
            ),
            &body,
        )
        .await;
        failures
            .run("POST with a foreign Host", async { reply.expect_error_field(421, "Host"); })
            .await;
        failures.check(count_crons(&db).await == 0, "a refused POST created a cron".into());
        failures.finish("Host checks");
        drop(server);

        // Bound to 0.0.0.0: any IP literal is one of its addresses (a pod IP, say); names
        // still are not.
        let server = AdminServer::start(
            &db,
            "admin",
            "hosts-any",
            &[("JOBU__ADMIN__HOST", "0.0.0.0"), ("JOBU__ADMIN__AUTH_TOKEN", TOKEN)],
        )
        .await;
        let port = server.port;
        for host in [format!("10.1.2.3:{port}"), "[fd00::1]".into(), format!("localhost:{port}")] {
            let reply = get_with_host(port, "/api/crons", Some(&host), Some(TOKEN)).await;
            assert_eq!(reply.status, 200, "Host {host} on 0.0.0.0: {reply}");
        }
        get_with_host(port, "/api/crons", Some("jobu.internal"), Some(TOKEN))
            .await
            .expect_error_field(421, "Host");

        // "*" turns the check off.
        let server = AdminServer::start(
            &db,
            "admin",
            "hosts-star",
            &[("JOBU__ADMIN__AUTH_TOKEN", TOKEN), ("JOBU__ADMIN__ALLOWED_HOSTS", "*")],
        )
        .await;
        let reply = get_with_host(server.port, "/api/crons", Some("anything.example"), Some(TOKEN)).await;
        assert_eq!(reply.status, 200, "{reply}");
    })
    .await;
}

/// `METHOD /api/crons` with this `Origin`, the token, and the `Host` a browser on `host`
/// would send.
async fn with_origin(
    port: u16,
    method: &str,
    host: &str,
    origin: &str,
    body: &Value,
) -> common::admin::Reply {
    let mut head = format!(
        "{method} /api/crons HTTP/1.1\nHost: {host}\nOrigin: {origin}\nAuthorization: Bearer {TOKEN}"
    );
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        head.push_str("\nContent-Type: application/json");
        serde_json::to_vec(body).expect("body")
    };
    raw(port, &head, &bytes).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origins_are_refused() {
    common::run(Backend::Sqlite, |db: TestDb| async move {
        const LISTED: &str = "https://ops.example.com";
        let server = AdminServer::start(
            &db,
            "admin",
            "origins",
            &[
                ("JOBU__ADMIN__AUTH_TOKEN", TOKEN),
                ("JOBU__ADMIN__CORS__ALLOW_ORIGINS", LISTED),
            ],
        )
        .await;
        let port = server.port;
        let own = format!("127.0.0.1:{port}");
        let shell = |name: &str| {
            json!({"name": name, "cron_expression": YEARLY, "handler_name": "shell",
                "handler_params": {"command": "touch /tmp/jobu-csrf-proof"}})
        };
        let mut failures = Failures::default();
        // A page elsewhere posting a shell cron (the token would not help it: it has none, but
        // even a request with one is refused), and nothing is created.
        for origin in [
            "https://evil.example".to_string(),
            "http://evil.example:8080".into(),
            "null".into(),
            format!("http://127.0.0.1:{}", port.wrapping_add(1)),
            format!("http://localhost:{port}"),
            "http://ops.example.com".into(),
            "file://".into(),
            "not an origin".into(),
        ] {
            failures
                .run(&format!("POST with Origin {origin}"), async {
                    with_origin(port, "POST", &own, &origin, &shell("csrf"))
                        .await
                        .expect_error_field(403, "Origin");
                    with_origin(port, "GET", &own, &origin, &Value::Null)
                        .await
                        .expect_error_field(403, "Origin");
                })
                .await;
        }
        failures.check(
            count_crons(&db).await == 0,
            "a POST from a foreign origin created a cron".into(),
        );
        // The server's own origin (the console's fetches), by address or by name, and with
        // another scheme (a TLS-terminating proxy in front).
        for (host, origin, name) in [
            (own.clone(), format!("http://{own}"), "own"),
            (
                format!("localhost:{port}"),
                format!("http://localhost:{port}"),
                "own-by-name",
            ),
            (own.clone(), format!("https://{own}"), "own-https"),
            (own.clone(), LISTED.to_string(), "listed"),
        ] {
            failures
                .run(&format!("POST from {origin} to {host}"), async {
                    with_origin(port, "POST", &host, &origin, &shell(name))
                        .await
                        .expect(201);
                })
                .await;
        }
        failures.check(
            count_crons(&db).await == 4,
            format!("{} crons, expected 4", count_crons(&db).await),
        );
        failures.finish("Origin checks");

        // With "*" in allow_origins any origin may call (with the token), except null.
        let server = AdminServer::start(
            &db,
            "admin",
            "origins-any",
            &[
                ("JOBU__ADMIN__AUTH_TOKEN", TOKEN),
                ("JOBU__ADMIN__CORS__ALLOW_ORIGINS", "*"),
            ],
        )
        .await;
        let own = format!("127.0.0.1:{}", server.port);
        with_origin(
            server.port,
            "GET",
            &own,
            "https://anywhere.example",
            &Value::Null,
        )
        .await
        .expect(200);
        with_origin(server.port, "GET", &own, "null", &Value::Null)
            .await
            .expect_error_field(403, "Origin");
    })
    .await;
}

/// The spec's request examples are accepted as they are (Swagger UI's "Try it out" starts
/// from them), and `handler_name` lists exactly the handlers the server accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_examples_are_accepted() {
    common::run(Backend::Sqlite, |db: TestDb| async move {
        let server = AdminServer::start(&db, "admin", "examples", &[]).await;
        let spec = server.api.get("/openapi.json").await.expect(200);
        let schemas = &spec["components"]["schemas"];
        let stats = server.api.get("/api/stats").await.expect(200);
        for name in ["CronCreate", "ExecutionCreate"] {
            assert_eq!(
                schemas[name]["properties"]["handler_name"]["enum"], stats["handlers"],
                "{name}"
            );
        }
        let cron = server
            .api
            .post("/api/crons", &schemas["CronCreate"]["example"])
            .await
            .expect(201);
        server
            .api
            .put(
                &format!("/api/crons/{}", cron["id"]),
                &schemas["CronUpdate"]["example"],
            )
            .await
            .expect(200);
        server
            .api
            .post("/api/jobs", &schemas["ExecutionCreate"]["example"])
            .await
            .expect(201);
    })
    .await;
}

// `POST /api/jobs` with a list: all created in order, or none; the limit; each item
// checked as a single one is, its errors naming the item.
backend_test!(executions_created_from_a_list, |db: TestDb| async move {
    const LIMIT: usize = 1000;
    let server = AdminServer::start(&db, "admin", "bulk", &[]).await;
    let api = &server.api;

    let later = (Utc::now() + chrono::Duration::hours(3))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let items = json!([
        {"handler_name": "noop", "params": {"n": 0}},
        {"handler_name": "sleep", "params": {"seconds": 1}, "run_at": later, "max_retry": 2,
            "timeout_seconds": 30},
        {"handler_name": "noop", "params": {"n": 2}},
    ]);
    let created = api.post("/api/jobs", &items).await.expect(201);
    let created_ids: Vec<i64> = created
        .as_array()
        .unwrap_or_else(|| panic!("a list answers a list of ids: {created}"))
        .iter()
        .map(|v| v.as_i64().unwrap_or_else(|| panic!("not an id: {v}")))
        .collect();
    assert_eq!(created_ids.len(), 3, "{created}");
    for (i, id) in created_ids.iter().enumerate() {
        let job = api.get(&format!("/api/jobs/{id}")).await.expect(200);
        let given = &items[i];
        assert_eq!(
            job["handler_name"], given["handler_name"],
            "item {i}: {job}"
        );
        assert_eq!(job["params"], given["params"], "item {i}: {job}");
        assert_eq!(job["param_source"], "api");
        assert_eq!(job["status"], "PENDING");
        assert_eq!(job["job_id"], Value::Null);
        assert_eq!(
            job["max_retry"],
            given.get("max_retry").cloned().unwrap_or(json!(0))
        );
        assert_eq!(
            job["timeout_seconds"],
            given.get("timeout_seconds").cloned().unwrap_or(json!(300))
        );
    }
    let second = api
        .get(&format!("/api/jobs/{}", created_ids[1]))
        .await
        .expect(200);
    assert_eq!(instant(&second["run_at"]), instant(&json!(later)));
    assert_eq!(count_executions(&db, None).await, 3);

    // The single form answers the execution, as before.
    let one = api
        .post("/api/jobs", &json!({"handler_name": "noop"}))
        .await
        .expect(201);
    assert_eq!(one["status"], "PENDING", "{one}");
    assert!(one["id"].is_i64(), "{one}");

    assert_eq!(
        api.post("/api/jobs", &json!([])).await.expect(201),
        json!([])
    );

    // Exactly the limit goes in whole, in order.
    let full: Vec<Value> = (0..LIMIT)
        .map(|i| json!({"handler_name": "noop", "params": {"i": i}}))
        .collect();
    let ids_full = api.post("/api/jobs", &json!(full)).await.expect(201);
    let ids_full: Vec<i64> = ids_full
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    assert_eq!(ids_full.len(), LIMIT);
    assert_eq!(
        ids_full.iter().collect::<BTreeSet<_>>().len(),
        LIMIT,
        "ids are distinct"
    );
    for i in [0, 1, 499, LIMIT - 1] {
        let job = api
            .get(&format!("/api/jobs/{}", ids_full[i]))
            .await
            .expect(200);
        assert_eq!(
            job["params"],
            json!({"i": i}),
            "id {} of item {i}",
            ids_full[i]
        );
    }
    let rows = count_executions(&db, None).await;
    assert_eq!(rows, 4 + LIMIT as u64);

    // Refused lists write nothing.
    let mut over = full.clone();
    over.push(json!({"handler_name": "noop"}));
    let error = api.post("/api/jobs", &json!(over)).await.expect_error(422);
    assert!(
        error.message.contains(&LIMIT.to_string()),
        "the refusal names the limit: {error:?}"
    );
    let ok = json!({"handler_name": "noop"});
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!([ok, ok, {"handler_name": "no-such-handler"}]),
            422,
            "[2].handler_name",
        ),
        (
            json!([ok, {"handler_name": "sleep", "params": {"seconds": "long"}}]),
            422,
            "[1].params",
        ),
        (
            json!([ok, {"handler_name": "noop", "max_retry": "three"}]),
            400,
            "[1].max_retry",
        ),
        (
            json!([{"handler_name": "noop", "max_retry": 101}]),
            422,
            "[0].max_retry",
        ),
        (
            json!([ok, {"handler_name": "noop", "run_at": "tomorrow"}]),
            400,
            "[1].run_at",
        ),
        (
            json!([ok, {"handler_name": "noop", "colour": "red"}]),
            400,
            "[1].colour",
        ),
        (json!([ok, {"params": {}}]), 400, "[1].handler_name"),
        (json!([ok, 7]), 400, "[1]"),
    ];
    for (body, status, field) in cases {
        let reply = api.post("/api/jobs", &body).await;
        let error = reply.expect_error_field(status, field);
        if status == 422 && field.ends_with("handler_name") {
            assert!(error.message.starts_with("item 2: "), "{error:?}");
        }
    }
    assert_eq!(
        count_executions(&db, None).await,
        rows,
        "a refused list wrote rows"
    );

    // The spec: an object or a list of at most the limit.
    let spec = api.get("/openapi.json").await.expect(200);
    let content = &spec["paths"]["/api/jobs"]["post"]["requestBody"]["content"];
    let schema = content
        .as_object()
        .and_then(|c| c.iter().find(|(t, _)| t.starts_with("application/json")))
        .map(|(_, media)| &media["schema"])
        .unwrap_or_else(|| panic!("no JSON request body: {content}"));
    let one_of = schema["oneOf"]
        .as_array()
        .unwrap_or_else(|| panic!("request schema: {schema}"));
    assert_eq!(
        one_of[0]["$ref"], "#/components/schemas/ExecutionCreate",
        "{schema}"
    );
    assert_eq!(one_of[1]["type"], "array", "{schema}");
    assert_eq!(one_of[1]["maxItems"], LIMIT, "{schema}");
    assert_eq!(
        one_of[1]["items"]["$ref"], "#/components/schemas/ExecutionCreate",
        "{schema}"
    );
});
