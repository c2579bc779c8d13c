//! Logs as operators get them: a `jobu run` with JSON logs, a database password, an admin
//! token and `Authorization` headers in use (API calls with the right and a wrong token, an
//! `http` job that sends one, a failing shell job) writes one JSON object per line, with the
//! structured fields of each attempt, no ractor span noise, and none of the secrets anywhere.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::admin::{free_port, Api};
use common::process::{bin, eventually};
use common::{Backend, TestDb};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{json, Value};

const DB_PASSWORD: &str = "db-Pw-4f1c9e";
const ADMIN_TOKEN: &str = "admin-Tok-8d2b7a61c0";
const WRONG_TOKEN: &str = "wrong-Tok-55aa";
const HEADER_SECRET: &str = "hdr-Secret-93e1";

async fn count(db: &TestDb, sql: &str) -> i64 {
    let conn = db.store.connection();
    conn.query_one(Statement::from_string(
        conn.get_database_backend(),
        sql.to_string(),
    ))
    .await
    .expect("query")
    .and_then(|r| r.try_get::<i64>("", "n").ok())
    .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_logs_carry_fields_and_no_secrets() {
    // PostgreSQL, where the URL can carry a password (trust auth ignores it).
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let mut url = url::Url::parse(&db.url).expect("url");
    url.set_password(Some(DB_PASSWORD)).expect("password");
    let scratch = tempfile::tempdir().expect("scratch");
    std::fs::create_dir_all(scratch.path().join("config")).expect("config dir");
    let port = free_port();
    let log_path = scratch.path().join("jobu.log");
    let mut child = Command::new(bin())
        .arg("run")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("JOBU_CONFIG_DIR", scratch.path().join("config"))
        .env("JOBU__DATABASES__DEFAULT__URL", url.as_str())
        .env("JOBU__ADMIN__PORT", port.to_string())
        .env("JOBU__ADMIN__AUTH_TOKEN", ADMIN_TOKEN)
        .env("JOBU__LOGGING__FORMAT", "json")
        // Debug for jobu itself: secrets must stay out at every level operators turn on.
        .env("JOBU__LOGGING__LEVEL", "info,jobu=debug")
        .env("JOBU__HANDLERS__SHELL__ENABLED", "true")
        .env("JOBU__HANDLERS__HTTP__ENABLED", "true")
        .env("JOBU__WORKER__POLL_INTERVAL_SECONDS", "0.2")
        .env("JOBU__WORKER__ID", "log-worker")
        .current_dir(scratch.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log"))
        .spawn()
        .expect("start jobu run");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let api = Api::new(port).with_token(ADMIN_TOKEN);
    let health = format!("http://127.0.0.1:{port}/health");
    let up = eventually(Duration::from_secs(30), || {
        let health = health.clone();
        async move {
            reqwest::get(&health)
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    assert!(up, "jobu run did not serve:\n{}", log());
    Api::new(port)
        .with_token(WRONG_TOKEN)
        .get("/api/crons")
        .await
        .expect_error(401);

    // An http job sending the admin token to the admin API itself, one sending a header
    // the API refuses, and a failing shell job.
    let jobs = [
        json!({"handler_name": "http", "max_retry": 0, "params": {
            "url": format!("http://127.0.0.1:{port}/api/crons"),
            "headers": {"Authorization": format!("Bearer {ADMIN_TOKEN}")}}}),
        json!({"handler_name": "http", "max_retry": 0, "params": {
            "url": format!("http://127.0.0.1:{port}/api/crons"),
            "headers": {"Authorization": format!("Bearer {HEADER_SECRET}")}}}),
        json!({"handler_name": "shell", "max_retry": 0,
            "params": {"command": "echo failing >&2; exit 3"}}),
    ];
    for job in &jobs {
        api.post("/api/jobs", job).await.expect(201);
    }
    let done = eventually(Duration::from_secs(30), || async {
        count(
            &db,
            "SELECT COUNT(*) AS n FROM job_executions WHERE status IN ('SUCCESS', 'FAILED')",
        )
        .await
            == 3
    })
    .await;
    assert!(done, "the jobs did not finish:\n{}", log());
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) AS n FROM job_executions WHERE status = 'SUCCESS'"
        )
        .await,
        1,
        "the http job with the right token succeeds, the other two fail"
    );

    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status:?}\n{}", log());

    let text = log();
    let mut started = 0;
    for line in text.lines() {
        let event: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        for secret in [DB_PASSWORD, ADMIN_TOKEN, WRONG_TOKEN, HEADER_SECRET] {
            assert!(!line.contains(secret), "a secret in the log: {line}");
        }
        // Help texts say `Bearer <token>` or `Bearer $(cat file)`; a value would follow.
        for (at, _) in line.match_indices("Bearer ") {
            let next = line[at + 7..].chars().next();
            assert!(
                matches!(next, Some('<' | '$')),
                "an Authorization value in the log: {line}"
            );
        }
        let spans = event["spans"].as_array().cloned().unwrap_or_default();
        assert!(
            spans.iter().all(|s| s["name"] != "Actor"),
            "ractor's Actor spans are quieted: {line}"
        );
        for key in ["timestamp", "level", "message", "target"] {
            assert!(event.get(key).is_some(), "`{key}` in every line: {line}");
        }
        if event["message"] == "attempt started" {
            started += 1;
            for key in ["execution_id", "handler", "attempt", "worker"] {
                assert!(event.get(key).is_some(), "`{key}` of an attempt: {line}");
            }
            assert_eq!(event["worker"], "log-worker");
        }
    }
    assert_eq!(started, 3, "one start line per attempt:\n{text}");
    db.cleanup().await;
}
