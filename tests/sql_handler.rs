//! The `sql` handler in the built binary: jobs over two databases (PostgreSQL and MariaDB)
//! created through the admin API commit in both or neither (a constraint violation in the
//! second database leaves both unchanged), bad params are refused up front, `/ready` reports
//! the named databases, the worker killed with SIGKILL between the logged decision and the
//! commits is finished by the next process's recovery, and an unconfigured name in
//! `worker.databases` stops jobu at start with exit code 2.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::admin::AdminServer;
use common::process::{eventually, Daemon, Scratch};
use common::{Backend, TestDb};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{json, Value};

const START_BALANCE: i64 = 100;

struct Dbs {
    jobu: TestDb,
    billing: TestDb,
    ledger: TestDb,
}

impl Dbs {
    async fn new() -> Dbs {
        let jobu = TestDb::create(Backend::Postgres).await.expect("jobu db");
        let billing = TestDb::create_with(Backend::Postgres, false)
            .await
            .expect("billing");
        let ledger = TestDb::create_with(Backend::MySql, false)
            .await
            .expect("ledger");
        for db in [&billing, &ledger] {
            let c = db.store.connection();
            c.execute_unprepared(
                "CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL, \
                 CONSTRAINT balance_not_negative CHECK (balance >= 0))",
            )
            .await
            .expect("create accounts");
            c.execute_unprepared(&format!(
                "INSERT INTO accounts VALUES (1, {START_BALANCE}), (2, {START_BALANCE})"
            ))
            .await
            .expect("seed");
        }
        Dbs {
            jobu,
            billing,
            ledger,
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("JOBU__DATABASES__BILLING__URL", self.billing.url.clone()),
            ("JOBU__DATABASES__BILLING__MIN_CONNECTIONS", "0".into()),
            ("JOBU__DATABASES__LEDGER__URL", self.ledger.url.clone()),
            ("JOBU__DATABASES__LEDGER__MIN_CONNECTIONS", "0".into()),
            ("JOBU__WORKER__DATABASES", "default,billing,ledger".into()),
            (
                "JOBU__WORKER__TRANSACTIONS__RECOVERY_INTERVAL_SECONDS",
                "1".into(),
            ),
        ]
    }

    async fn balances(&self) -> (Vec<i64>, Vec<i64>) {
        (
            balances(self.billing.store.connection()).await,
            balances(self.ledger.store.connection()).await,
        )
    }

    /// Prepared transactions of these databases' test left on the servers.
    async fn prepared(&self) -> usize {
        let pg = self
            .billing
            .store
            .connection()
            .query_all(Statement::from_string(
                DbBackend::Postgres,
                "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()",
            ))
            .await
            .expect("pg_prepared_xacts")
            .len();
        // MariaDB's list is server-wide: count only branches of this test's executions' ids
        // by the coordinator id kept in jobu's database.
        let id: String = self
            .jobu
            .store
            .connection()
            .query_one(Statement::from_string(
                DbBackend::Postgres,
                "SELECT id FROM transaction_coordinator",
            ))
            .await
            .expect("coordinator")
            .map(|r| r.try_get("", "id").expect("id"))
            .unwrap_or_default();
        let maria = self
            .ledger
            .store
            .connection()
            .query_all(Statement::from_string(DbBackend::MySql, "XA RECOVER"))
            .await
            .expect("XA RECOVER")
            .iter()
            .filter_map(|r| r.try_get::<Vec<u8>>("", "data").ok())
            .filter(|d| {
                !id.is_empty() && String::from_utf8_lossy(d).starts_with(&format!("jobu:{id}:"))
            })
            .count();
        pg + maria
    }

    async fn cleanup(self) {
        self.billing.cleanup().await;
        self.ledger.cleanup().await;
        self.jobu.cleanup().await;
    }
}

async fn balances(db: &impl ConnectionTrait) -> Vec<i64> {
    db.query_all(Statement::from_string(
        db.get_database_backend(),
        "SELECT balance FROM accounts ORDER BY id",
    ))
    .await
    .expect("balances")
    .iter()
    .map(|r| r.try_get::<i64>("", "balance").expect("balance"))
    .collect()
}

/// A transfer of `amount` from billing's account 1 to ledger's account 1, then a SELECT.
fn transfer(amount: i64) -> Value {
    json!({
        "databases": ["billing", "ledger"],
        "statements": [
            {"database": "billing", "sql": "UPDATE accounts SET balance = balance - $1 WHERE id = $2",
             "params": [amount, 1], "expect_rows": 1},
            {"database": "ledger", "sql": "UPDATE accounts SET balance = balance + ? WHERE id = ?",
             "params": [amount, 1], "expect_rows": 1},
            {"database": "ledger", "sql": "SELECT id, balance FROM accounts ORDER BY id"}
        ]
    })
}

/// Creates a cron of the `sql` handler through the API and runs it now; returns the
/// execution's id.
async fn run_sql(server: &AdminServer, name: &str, params: Value) -> i64 {
    let cron = server
        .api
        .post(
            "/api/crons",
            &json!({"name": name, "cron_expression": "0 0 1 1 *", "handler_name": "sql",
                    "handler_params": params, "max_retry": 0}),
        )
        .await
        .expect(201);
    let id = cron["id"].as_i64().expect("cron id");
    let job = server
        .api
        .post_empty(&format!("/api/crons/{id}/trigger"))
        .await
        .expect(201);
    job["id"].as_i64().expect("execution id")
}

async fn final_state(server: &AdminServer, id: i64) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let job = server.api.get(&format!("/api/jobs/{id}")).await.expect(200);
        let status = job["status"].as_str().unwrap_or_default();
        if status == "SUCCESS" || status == "FAILED" {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "execution {id} did not finish: {job}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sql_jobs_over_two_databases_commit_in_both_or_neither() {
    let dbs = Dbs::new().await;
    let env = dbs.env();
    let extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = AdminServer::start(&dbs.jobu, "run", "sql-two-dbs", &extra).await;

    let ready = server.api.get("/ready").await.expect(200);
    assert_eq!(
        ready["databases"],
        json!({"default": "ok", "billing": "ok", "ledger": "ok"})
    );

    // Bad params are refused up front, naming the problem.
    for (params, expected) in [
        (
            json!({"database": "nope", "statements": [{"sql": "SELECT 1"}]}),
            "unknown database `nope`",
        ),
        (
            json!({"databases": ["billing", "ledger"], "statements": [{"sql": "SELECT 1"}]}),
            "statements[0].database is required",
        ),
        (
            json!({"database": "billing"}),
            "`statements` must be a non-empty array",
        ),
    ] {
        let err = server
            .api
            .post(
                "/api/crons",
                &json!({"name": "bad", "cron_expression": "0 0 1 1 *", "handler_name": "sql",
                        "handler_params": params}),
            )
            .await
            .expect_client_error();
        assert!(err.message.contains(expected), "{params}: {}", err.message);
    }

    let id = run_sql(&server, "transfer", transfer(30)).await;
    let job = final_state(&server, id).await;
    assert_eq!(job["status"], "SUCCESS", "{job}");
    assert_eq!(
        job["result"]["statements"],
        json!([{"database": "billing", "rows_affected": 1},
               {"database": "ledger", "rows_affected": 1},
               {"database": "ledger", "rows_affected": 2}])
    );
    assert_eq!(
        job["result"]["rows"],
        json!([{"id": 1, "balance": START_BALANCE + 30}, {"id": 2, "balance": START_BALANCE}])
    );
    let after = dbs.balances().await;
    assert_eq!(after, (vec![70, 100], vec![130, 100]));

    // The second database violates its constraint: neither changes.
    let id = run_sql(&server, "overdraw", transfer(-500)).await;
    let job = final_state(&server, id).await;
    assert_eq!(job["status"], "FAILED", "{job}");
    let message = job["error_message"].as_str().unwrap_or_default();
    assert!(
        message.contains("balance_not_negative") && message.contains("ledger"),
        "{message}"
    );
    assert_eq!(dbs.balances().await, after);

    // A missing table in the first database: neither changes.
    let mut params = transfer(1);
    params["statements"][1]["sql"] = json!("UPDATE missing_table SET x = ?");
    params["statements"][1]["params"] = json!([1]);
    let id = run_sql(&server, "missing", params).await;
    let job = final_state(&server, id).await;
    assert_eq!(job["status"], "FAILED", "{job}");
    assert!(
        job["error_message"]
            .as_str()
            .unwrap_or_default()
            .contains("missing_table"),
        "{job}"
    );
    assert_eq!(dbs.balances().await, after);
    assert_eq!(dbs.prepared().await, 0, "nothing left prepared");

    drop(server);
    dbs.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_after_the_decision_is_finished_by_the_next_process() {
    let dbs = Dbs::new().await;
    let env = dbs.env();
    let mut extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    extra.push(("JOBU_TEST_TXN_FAULT", "kill_after_decision"));
    let mut server = AdminServer::start(&dbs.jobu, "run", "sql-killed", &extra).await;
    let _id = run_sql(&server, "transfer", transfer(40)).await;
    let status = server.daemon.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(
        status.and_then(|s| s.signal()),
        Some(libc::SIGKILL),
        "the worker killed itself mid-commit\n{}",
        server.log()
    );
    assert_eq!(dbs.prepared().await, 2, "both branches in doubt");
    assert_eq!(dbs.balances().await, (vec![100, 100], vec![100, 100]));

    // The next worker's recovery commits both, as the log says.
    extra.pop();
    let scratch = Scratch::new("sql-recovery");
    let mut worker = Daemon::start(&scratch, &dbs.jobu, "worker", "sql-recovery", &extra);
    let done = eventually(Duration::from_secs(30), || async {
        dbs.prepared().await == 0
    })
    .await;
    assert!(done, "recovery did not finish the branches");
    assert_eq!(dbs.balances().await, (vec![60, 100], vec![140, 100]));
    worker.stop(Duration::from_secs(20)).await;
    drop(server);
    dbs.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unconfigured_name_in_worker_databases_is_a_config_error() {
    let db = TestDb::create(Backend::Sqlite).await.expect("db");
    let scratch = Scratch::new("sql-unconfigured");
    let mut daemon = Daemon::start(
        &scratch,
        &db,
        "worker",
        "sql-unconfigured",
        &[("JOBU__WORKER__DATABASES", "default,billing")],
    );
    let status = daemon
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("exits");
    assert_eq!(status.code(), Some(2));
    let log = std::fs::read_to_string(scratch.path("sql-unconfigured.log")).unwrap_or_default();
    assert!(
        log.contains("worker.databases[1]") && log.contains("billing"),
        "{log}"
    );
    db.cleanup().await;
}
