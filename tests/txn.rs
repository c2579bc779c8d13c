//! Transactions over several databases (`jobu::txn`) against real servers: commits on every
//! combination (PostgreSQL + MariaDB, PostgreSQL + PostgreSQL, MariaDB + SQLite as the last
//! resource; SQLite + SQLite refused), faults at every step of the commit path (a statement
//! error in either participant, a failure after the first prepare, a fenced attempt, a
//! participant's reply cut after prepare and after commit, the process killed with SIGKILL
//! before and after the logged decision), recovery by several processes at once, and random
//! interleavings of concurrent transfers. Each test makes its own databases; after each,
//! every participant holds all of the changes or none and no branch is left prepared.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::proxy::{Mode, Proxy};
use common::{Backend, TestDb};
use jobu::store::claim::{new_token, ClaimRequest};
use jobu::store::Store;
use jobu::txn::recovery::{PassReport, Recovery};
use jobu::txn::{Branch, Coordinator, Databases, Fault, Fence, TxnError};
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};

const START_BALANCE: i64 = 100;
const LONG: Duration = Duration::from_secs(3600);

/// jobu's database and the participants, by name.
struct World {
    jobu: TestDb,
    parts: Vec<(String, Part)>,
    coordinator: Coordinator,
}

/// A participant database: a test database of the shared servers, or one of a private
/// PostgreSQL cluster.
struct Part {
    backend: Backend,
    url: String,
    store: Store,
    test_db: Option<TestDb>,
}

impl Part {
    fn of(db: TestDb) -> Part {
        Part {
            backend: db.backend,
            url: db.url.clone(),
            store: db.store.clone(),
            test_db: Some(db),
        }
    }

    async fn cleanup(self) {
        match self.test_db {
            Some(db) => db.cleanup().await,
            None => {
                let _ = self.store.close().await;
            }
        }
    }
}

fn ph(backend: DbBackend, n: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => "?".to_string(),
    }
}

async fn setup_accounts(db: &impl ConnectionTrait) {
    db.execute_unprepared(
        "CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL, \
         CONSTRAINT balance_not_negative CHECK (balance >= 0))",
    )
    .await
    .expect("create accounts");
    db.execute_unprepared(&format!(
        "INSERT INTO accounts (id, balance) VALUES (1, {START_BALANCE}), (2, {START_BALANCE})"
    ))
    .await
    .expect("seed accounts");
}

impl World {
    async fn new(jobu: Backend, parts: &[(&str, Backend)]) -> World {
        let jobu = TestDb::create(jobu).await.expect("jobu database");
        let mut made = Vec::new();
        for (name, backend) in parts {
            let db = TestDb::create_with(*backend, false)
                .await
                .expect("participant database");
            setup_accounts(db.store.connection()).await;
            made.push((name.to_string(), Part::of(db)));
        }
        let coordinator = coordinator(&jobu.store, &made, &BTreeMap::new()).await;
        World {
            jobu,
            parts: made,
            coordinator,
        }
    }

    fn part(&self, name: &str) -> &Part {
        &self
            .parts
            .iter()
            .find(|(n, _)| n == name)
            .expect("participant")
            .1
    }

    async fn fence(&self) -> Fence {
        fence(&self.jobu.store).await
    }

    async fn balances(&self) -> BTreeMap<String, Vec<i64>> {
        let mut out = BTreeMap::new();
        for (name, db) in &self.parts {
            out.insert(name.clone(), balances(db.store.connection()).await);
        }
        out
    }

    /// jobu's branches of this test still prepared on any participant.
    async fn prepared(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (_, db) in &self.parts {
            out.extend(prepared_on(db, self.coordinator.id()).await);
        }
        out.sort();
        out.dedup();
        out
    }

    async fn recover(&self, grace: Duration) -> PassReport {
        Recovery::new(&self.coordinator, "test-recovery")
            .run_once(grace, LONG)
            .await
    }

    /// Recovery passes, as the service runs them, until no branch is left prepared; the
    /// reports summed. After a SIGKILL, MariaDB keeps the dead session's branch attached
    /// until it notices the closed socket, so the first pass may find it held (`waiting`).
    async fn recover_all(&self, grace: Duration) -> PassReport {
        let mut recovery = Recovery::new(&self.coordinator, "test-recovery");
        let mut total = PassReport::default();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let r = recovery.run_once(grace, LONG).await;
            total.committed += r.committed;
            total.rolled_back += r.rolled_back;
            total.failed += r.failed;
            total.completed += r.completed;
            total.waiting = r.waiting;
            if self.prepared().await.is_empty() {
                return total;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "branches still prepared after 20 s of recovery: {:?} ({total:?})",
                self.prepared().await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn assert_unchanged(&self) {
        for (name, balances) in self.balances().await {
            assert_eq!(balances, [START_BALANCE, START_BALANCE], "{name} changed");
        }
        assert_eq!(self.prepared().await, Vec::<String>::new(), "left prepared");
    }

    async fn cleanup(self) {
        let _ = self.coordinator;
        for (_, db) in self.parts {
            db.cleanup().await;
        }
        self.jobu.cleanup().await;
    }
}

/// A coordinator over `parts`, reaching those named in `via` through another URL (a proxy).
async fn coordinator(
    jobu: &Store,
    parts: &[(String, Part)],
    via: &BTreeMap<String, String>,
) -> Coordinator {
    let mut stores = Vec::new();
    for (name, db) in parts {
        let store = match via.get(name) {
            Some(url) => Store::connect(&jobu::config::DatabaseSettings {
                max_connections: 4,
                min_connections: 0,
                connect_timeout_seconds: 5,
                acquire_timeout_seconds: 10,
                ..jobu::config::DatabaseSettings::with_url(url)
            })
            .await
            .expect("connect through the proxy"),
            None => db.store.clone(),
        };
        stores.push((name.clone(), store));
    }
    let databases = Databases::from_stores(stores).await;
    Coordinator::open(jobu.clone(), databases)
        .await
        .expect("coordinator")
}

/// A claimed execution: the attempt that owns it may commit.
async fn fence(store: &Store) -> Fence {
    let row = store
        .create_adhoc("noop", None, None, 3, 600)
        .await
        .expect("create execution");
    let token = new_token();
    let handlers = vec!["noop".to_string()];
    for _ in 0..50 {
        let claimed = store
            .claim(&ClaimRequest {
                worker_id: "test-worker",
                handlers: &handlers,
                limit: 1,
                lease_seconds: 600.0,
                token: &token,
            })
            .await
            .expect("claim");
        if let Some(c) = claimed.into_iter().next() {
            return Fence {
                execution_id: c.id,
                attempt: (c.retry_count + 1) as u32,
                owner_token: token,
                worker_id: "test-worker".into(),
            };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("could not claim execution {}", row.id);
}

async fn balances(db: &impl ConnectionTrait) -> Vec<i64> {
    let rows = db
        .query_all(Statement::from_string(
            db.get_database_backend(),
            "SELECT balance FROM accounts ORDER BY id",
        ))
        .await
        .expect("read balances");
    rows.iter()
        .map(|r| r.try_get::<i64>("", "balance").expect("balance"))
        .collect()
}

async fn prepared_on(db: &Part, coordinator: &str) -> Vec<String> {
    let conn = db.store.connection();
    let prefix = format!("jobu:{coordinator}:");
    match db.backend {
        Backend::Postgres => conn
            .query_all(Statement::from_string(
                DbBackend::Postgres,
                "SELECT gid FROM pg_prepared_xacts",
            ))
            .await
            .expect("pg_prepared_xacts")
            .iter()
            .map(|r| r.try_get::<String>("", "gid").expect("gid"))
            .filter(|g| g.starts_with(&prefix))
            .collect(),
        Backend::MySql => conn
            .query_all(Statement::from_string(DbBackend::MySql, "XA RECOVER"))
            .await
            .expect("XA RECOVER")
            .iter()
            .filter_map(|r| {
                r.try_get::<Vec<u8>>("", "data")
                    .ok()
                    .or_else(|| r.try_get::<String>("", "data").ok().map(String::into_bytes))
            })
            .map(|d| String::from_utf8_lossy(&d).into_owned())
            .filter(|g| g.starts_with(&prefix))
            .collect(),
        Backend::Sqlite => Vec::new(),
    }
}

/// Adds `delta` to account `id` by read-modify-write under a row lock (a lost update would
/// show in the final balances).
async fn add(branch: &Branch, id: i32, delta: i64) -> Result<(), TxnError> {
    let b = branch.get_database_backend();
    let lock = if b == DbBackend::Sqlite {
        ""
    } else {
        " FOR UPDATE"
    };
    let row = branch
        .query_one(Statement::from_sql_and_values(
            b,
            format!("SELECT balance FROM accounts WHERE id = {}{lock}", ph(b, 1)),
            [Value::from(id)],
        ))
        .await?
        .ok_or_else(|| TxnError::Aborted(format!("no account {id}")))?;
    let balance: i64 = row.try_get("", "balance")?;
    branch
        .execute(Statement::from_sql_and_values(
            b,
            format!(
                "UPDATE accounts SET balance = {} WHERE id = {}",
                ph(b, 1),
                ph(b, 2)
            ),
            [Value::from(balance + delta), Value::from(id)],
        ))
        .await?;
    Ok(())
}

/// Moves `amount` from account 1 of `from` to account 1 of `to`.
async fn transfer(
    c: &Coordinator,
    fence: &Fence,
    from: &str,
    to: &str,
    amount: i64,
) -> Result<(), TxnError> {
    let (from, to) = (from.to_string(), to.to_string());
    let names = [from.as_str(), to.as_str()];
    let (f, t) = (from.clone(), to.clone());
    c.run(fence, &names, move |tx| {
        Box::pin(async move {
            add(tx.db(&f)?, 1, -amount).await?;
            add(tx.db(&t)?, 1, amount).await?;
            Ok(())
        })
    })
    .await
}

/// Commit, then a failing statement in the second participant, then in the first: the
/// failures change nothing anywhere.
async fn commit_and_statement_errors(w: &World, a: &str, b: &str) {
    let fence = w.fence().await;
    transfer(&w.coordinator, &fence, a, b, 30)
        .await
        .expect("transfer commits");
    let after = w.balances().await;
    assert_eq!(after[a], [START_BALANCE - 30, START_BALANCE]);
    assert_eq!(after[b], [START_BALANCE + 30, START_BALANCE]);
    // The second participant violates its CHECK constraint, then the first does.
    for (amount, failing) in [(-1000, b), (1000, a)] {
        let err = transfer(&w.coordinator, &fence, a, b, amount)
            .await
            .expect_err("a negative balance is refused");
        assert!(
            err.to_string().contains("balance_not_negative"),
            "{failing}: {err}"
        );
    }
    assert_eq!(
        w.balances().await,
        after,
        "failed transfers changed something"
    );
    assert_eq!(w.prepared().await, Vec::<String>::new());
    // A statement on a missing table.
    let (a2, b2) = (a.to_string(), b.to_string());
    let err = w
        .coordinator
        .run(&fence, &[a, b], move |tx| {
            Box::pin(async move {
                tx.db(&a2)?
                    .execute_unprepared("UPDATE accounts SET balance = balance + 1")
                    .await?;
                tx.db(&b2)?
                    .execute_unprepared("UPDATE no_such_table SET x = 1")
                    .await?;
                Ok(())
            })
        })
        .await
        .expect_err("a missing table fails");
    assert!(err.to_string().contains("no_such_table"), "{err}");
    assert_eq!(w.balances().await, after);
    assert_eq!(w.prepared().await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_and_mariadb_commit_all_or_none() {
    let w = World::new(
        Backend::Postgres,
        &[("pg", Backend::Postgres), ("maria", Backend::MySql)],
    )
    .await;
    commit_and_statement_errors(&w, "pg", "maria").await;
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_and_postgres_commit_all_or_none() {
    let w = World::new(
        Backend::MySql,
        &[("pg1", Backend::Postgres), ("pg2", Backend::Postgres)],
    )
    .await;
    commit_and_statement_errors(&w, "pg1", "pg2").await;
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_and_sqlite_commit_with_sqlite_as_last_resource() {
    let w = World::new(
        Backend::Sqlite,
        &[("maria", Backend::MySql), ("lite", Backend::Sqlite)],
    )
    .await;
    commit_and_statement_errors(&w, "lite", "maria").await;
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sqlite_databases_are_refused_and_unknown_names_fail_clearly() {
    let w = World::new(
        Backend::Sqlite,
        &[("lite1", Backend::Sqlite), ("lite2", Backend::Sqlite)],
    )
    .await;
    let fence = w.fence().await;
    let err = transfer(&w.coordinator, &fence, "lite1", "lite2", 1)
        .await
        .expect_err("two SQLite participants are refused");
    assert!(matches!(err, TxnError::Refused(_)), "{err:?}");
    assert!(err.to_string().contains("at most one SQLite"), "{err}");
    let err = transfer(&w.coordinator, &fence, "lite1", "billing", 1)
        .await
        .expect_err("an unknown database");
    assert!(
        err.to_string().contains("no database named `billing`")
            && err.to_string().contains("lite1"),
        "{err}"
    );
    // One SQLite database alone is an ordinary transaction.
    let names = ["lite1"];
    w.coordinator
        .run(&fence, &names, |tx| {
            Box::pin(async move {
                add(tx.db("lite1")?, 2, -5).await?;
                assert!(tx.db("lite2").is_err(), "not part of the transaction");
                Ok(())
            })
        })
        .await
        .expect("one database commits");
    assert_eq!(
        w.balances().await["lite1"],
        [START_BALANCE, START_BALANCE - 5]
    );
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failure_after_the_first_prepare_rolls_back_everywhere() {
    let mut w = World::new(
        Backend::Postgres,
        &[("pg", Backend::Postgres), ("maria", Backend::MySql)],
    )
    .await;
    w.coordinator = w
        .coordinator
        .clone()
        .with_fault(Some(Fault::FailAfterFirstPrepare));
    let fence = w.fence().await;
    let err = transfer(&w.coordinator, &fence, "pg", "maria", 10)
        .await
        .expect_err("the injected failure");
    assert!(err.to_string().contains("test fault"), "{err}");
    w.assert_unchanged().await;
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fenced_attempt_rolls_back_everywhere() {
    let w = World::new(
        Backend::Postgres,
        &[("pg", Backend::Postgres), ("maria", Backend::MySql)],
    )
    .await;
    let mut fence = w.fence().await;
    // Another worker took the execution over: its token is no longer this attempt's.
    w.jobu
        .store
        .connection()
        .execute(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE job_executions SET owner_token = 'someone-else' WHERE id = $1",
            [Value::from(fence.execution_id)],
        ))
        .await
        .expect("take the execution over");
    let err = transfer(&w.coordinator, &fence, "pg", "maria", 10)
        .await
        .expect_err("fenced");
    assert!(matches!(err, TxnError::Fenced(_)), "{err:?}");
    w.assert_unchanged().await;
    // One database alone is fenced as well.
    fence.owner_token = "stale".into();
    let err = w
        .coordinator
        .run(&fence, &["pg"], |tx| {
            Box::pin(async move { add(tx.db("pg")?, 1, 1).await })
        })
        .await
        .expect_err("fenced");
    assert!(matches!(err, TxnError::Fenced(_)), "{err:?}");
    w.assert_unchanged().await;
    w.cleanup().await;
}

/// A participant's reply to the prepare is lost (its connection dropped): the coordinator
/// cannot know the branch prepared, rolls back everywhere and logs the rollback; recovery
/// finishes whatever the server did prepare.
async fn reply_to_prepare_cut(target: Backend, after: &[u8], request: &[u8]) {
    let mut w = World::new(
        Backend::Postgres,
        &[("pg", Backend::Postgres), ("maria", Backend::MySql)],
    )
    .await;
    let name = if target == Backend::Postgres {
        "pg"
    } else {
        "maria"
    };
    let proxy = Proxy::for_url(&w.part(name).url).await;
    let via = BTreeMap::from([(
        name.to_string(),
        common::process::url_via_port(&w.part(name).url, proxy.port()),
    )]);
    w.coordinator = coordinator(&w.jobu.store, &w.parts, &via).await;
    proxy.set(Mode::CutReplyToRequest {
        after: after.to_vec(),
        request: request.to_vec(),
    });
    let fence = w.fence().await;
    let err = transfer(&w.coordinator, &fence, "pg", "maria", 10)
        .await
        .expect_err("the prepare's reply was cut");
    assert_eq!(proxy.cuts(), 1, "the proxy cut a reply ({err})");
    // The server finishes the prepare it got and keeps the cut session for a while
    // (MariaDB lets no other session finish a branch whose session is still connected);
    // recovery rolls the branch back per the log once it can.
    tokio::time::sleep(common::proxy::CUT_DRAIN + Duration::from_millis(500)).await;
    w.recover_all(LONG).await;
    w.assert_unchanged().await;
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_connection_dropped_at_prepare_rolls_back() {
    reply_to_prepare_cut(Backend::Postgres, b"BEGIN", b"PREPARE TRANSACTION").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_connection_dropped_at_prepare_rolls_back() {
    reply_to_prepare_cut(Backend::MySql, b"XA START", b"XA PREPARE").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connection_dropped_after_prepare_at_commit_still_commits_everywhere() {
    let mut w = World::new(
        Backend::Postgres,
        &[("pg", Backend::Postgres), ("maria", Backend::MySql)],
    )
    .await;
    let proxy = Proxy::for_url(&w.part("maria").url).await;
    let via = BTreeMap::from([(
        "maria".to_string(),
        common::process::url_via_port(&w.part("maria").url, proxy.port()),
    )]);
    w.coordinator = coordinator(&w.jobu.store, &w.parts, &via).await;
    proxy.set(Mode::CutReplyToRequest {
        after: b"XA PREPARE".to_vec(),
        request: b"XA COMMIT".to_vec(),
    });
    let fence = w.fence().await;
    // The decision was logged: the transaction is committed, whatever the lost reply.
    transfer(&w.coordinator, &fence, "pg", "maria", 10)
        .await
        .expect("committed");
    assert_eq!(proxy.cuts(), 1);
    tokio::time::sleep(common::proxy::CUT_DRAIN + Duration::from_millis(500)).await;
    w.recover_all(LONG).await;
    let b = w.balances().await;
    assert_eq!(b["pg"], [START_BALANCE - 10, START_BALANCE]);
    assert_eq!(b["maria"], [START_BALANCE + 10, START_BALANCE]);
    assert_eq!(w.prepared().await, Vec::<String>::new());
    w.cleanup().await;
}

// --- A process killed with SIGKILL in the middle of the commit -------------------------------

const CHILD_ENV: &str = "JOBU_TXN_TEST_CHILD";

/// Runs in a child process (this test binary, re-run on `child_transfer` only): connects as
/// the parent says and transfers with the fault injected, which kills it.
#[tokio::test]
#[ignore = "run by the kill tests in a child process"]
async fn child_transfer() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let spec: serde_json::Value = serde_json::from_str(&spec).expect("child spec");
    async fn connect(url: &str) -> Result<Store, jobu::store::StoreError> {
        Store::connect(&jobu::config::DatabaseSettings {
            max_connections: 4,
            min_connections: 0,
            ..jobu::config::DatabaseSettings::with_url(url)
        })
        .await
    }
    let jobu = connect(spec["jobu"].as_str().expect("jobu url"))
        .await
        .expect("jobu");
    let mut stores = Vec::new();
    for (name, url) in spec["parts"].as_object().expect("parts") {
        stores.push((
            name.clone(),
            connect(url.as_str().expect("url")).await.expect("part"),
        ));
    }
    let coordinator = Coordinator::open(jobu, Databases::from_stores(stores).await)
        .await
        .expect("coordinator")
        .with_fault(Fault::parse(spec["fault"].as_str().expect("fault")));
    let fence = Fence {
        execution_id: spec["execution_id"].as_i64().expect("id"),
        attempt: spec["attempt"].as_u64().expect("attempt") as u32,
        owner_token: spec["token"].as_str().expect("token").to_string(),
        worker_id: "child".into(),
    };
    let from = spec["from"].as_str().expect("from");
    let to = spec["to"].as_str().expect("to");
    let result = transfer(&coordinator, &fence, from, to, 25).await;
    panic!("the fault should have killed this process, got {result:?}");
}

/// Starts the child with `fault` and waits for its SIGKILL; the transaction is then in doubt.
async fn killed_mid_commit(w: &World, fault: &str) -> Fence {
    killed_mid_transfer(w, fault, "pg", "maria").await
}

async fn killed_mid_transfer(w: &World, fault: &str, from: &str, to: &str) -> Fence {
    let fence = w.fence().await;
    let parts: serde_json::Map<String, serde_json::Value> = w
        .parts
        .iter()
        .map(|(n, db)| (n.clone(), db.url.clone().into()))
        .collect();
    let spec = serde_json::json!({
        "jobu": w.jobu.url, "parts": parts, "fault": fault, "from": from, "to": to,
        "execution_id": fence.execution_id, "attempt": fence.attempt, "token": fence.owner_token,
    });
    let exe = std::env::current_exe().expect("test binary");
    let status = tokio::process::Command::new(exe)
        .args(["--exact", "child_transfer", "--ignored", "--nocapture"])
        .env(CHILD_ENV, spec.to_string())
        .status()
        .await
        .expect("run the child");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "child: {status:?}");
    fence
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_after_the_decision_recovery_commits_everywhere() {
    let w = World::new(
        Backend::Postgres,
        &[("pg", Backend::Postgres), ("maria", Backend::MySql)],
    )
    .await;
    killed_mid_commit(&w, "kill_after_decision").await;
    assert_eq!(w.prepared().await.len(), 2, "both branches in doubt");
    assert_eq!(w.balances().await["pg"], [START_BALANCE, START_BALANCE]);
    // Three recovery processes at once.
    let (a, b, c) = tokio::join!(w.recover(LONG), w.recover(LONG), w.recover(LONG));
    // Then passes until settled, in case MariaDB still held the dead session's branch.
    let rest = w.recover_all(LONG).await;
    assert_eq!(
        a.committed + b.committed + c.committed + rest.committed,
        2,
        "{a:?} {b:?} {c:?} {rest:?}"
    );
    let bal = w.balances().await;
    assert_eq!(bal["pg"], [START_BALANCE - 25, START_BALANCE]);
    assert_eq!(bal["maria"], [START_BALANCE + 25, START_BALANCE]);
    assert_eq!(w.prepared().await, Vec::<String>::new());
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_after_the_first_commit_recovery_commits_the_rest() {
    let w = World::new(
        Backend::Postgres,
        &[("pg", Backend::Postgres), ("maria", Backend::MySql)],
    )
    .await;
    killed_mid_commit(&w, "kill_after_first_commit").await;
    assert_eq!(
        w.prepared().await.len(),
        1,
        "one branch committed, one in doubt"
    );
    let report = w.recover_all(LONG).await;
    assert_eq!(report.committed, 1, "{report:?}");
    let bal = w.balances().await;
    assert_eq!(bal["pg"], [START_BALANCE - 25, START_BALANCE]);
    assert_eq!(bal["maria"], [START_BALANCE + 25, START_BALANCE]);
    assert_eq!(w.prepared().await, Vec::<String>::new());
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_before_the_decision_recovery_rolls_back_once_the_attempt_is_gone() {
    let w = World::new(
        Backend::Postgres,
        &[("pg", Backend::Postgres), ("maria", Backend::MySql)],
    )
    .await;
    let fence = killed_mid_commit(&w, "kill_after_prepare").await;
    assert_eq!(w.prepared().await.len(), 2, "both branches in doubt");
    // The attempt still runs (its lease holds) and the grace period is long: recovery waits,
    // since a live coordinator could still log its decision.
    let report = w.recover(LONG).await;
    assert_eq!(report.waiting, 2, "{report:?}");
    assert_eq!(w.prepared().await.len(), 2);
    // The attempt is gone (its execution went back to PENDING): no decision = roll back.
    w.jobu
        .store
        .release(fence.execution_id, &fence.owner_token)
        .await
        .expect("release");
    let report = w.recover_all(LONG).await;
    assert_eq!(report.rolled_back, 2, "{report:?}");
    w.assert_unchanged().await;
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_decision_is_rolled_back_after_the_grace_period() {
    let w = World::new(
        Backend::Postgres,
        &[("pg", Backend::Postgres), ("maria", Backend::MySql)],
    )
    .await;
    killed_mid_commit(&w, "kill_after_prepare").await;
    let mut recovery = Recovery::new(&w.coordinator, "test-recovery");
    let first = recovery.run_once(Duration::from_secs(1), LONG).await;
    // PostgreSQL knows its branch's age; MariaDB's is counted from the first pass that saw it.
    assert!(first.waiting >= 1, "{first:?}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let second = recovery.run_once(Duration::from_secs(1), LONG).await;
    assert_eq!(
        first.rolled_back + second.rolled_back,
        2,
        "{first:?} {second:?}"
    );
    w.assert_unchanged().await;
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn last_resource_killed_before_its_commit_recovery_rolls_back() {
    let w = World::new(
        Backend::Postgres,
        &[("maria", Backend::MySql), ("lite", Backend::Sqlite)],
    )
    .await;
    killed_mid_transfer(&w, "kill_after_decision", "lite", "maria").await;
    assert_eq!(w.prepared().await.len(), 1, "the MariaDB branch in doubt");
    // The decision is the SQLite commit, which never happened: roll back.
    let report = w.recover_all(LONG).await;
    assert_eq!(report.rolled_back, 1, "{report:?}");
    w.assert_unchanged().await;
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn last_resource_killed_after_its_commit_recovery_commits_the_rest() {
    let w = World::new(
        Backend::MySql,
        &[("maria", Backend::MySql), ("lite", Backend::Sqlite)],
    )
    .await;
    killed_mid_transfer(&w, "kill_after_first_commit", "lite", "maria").await;
    assert_eq!(w.prepared().await.len(), 1, "the MariaDB branch in doubt");
    assert_eq!(
        w.balances().await["lite"],
        [START_BALANCE - 25, START_BALANCE]
    );
    let report = w.recover_all(LONG).await;
    assert_eq!(report.committed, 1, "{report:?}");
    let bal = w.balances().await;
    assert_eq!(bal["maria"], [START_BALANCE + 25, START_BALANCE]);
    assert_eq!(w.prepared().await, Vec::<String>::new());
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recovery_leaves_other_deployments_branches_alone() {
    let w = World::new(
        Backend::Postgres,
        &[("pg", Backend::Postgres), ("maria", Backend::MySql)],
    )
    .await;
    killed_mid_commit(&w, "kill_after_prepare").await;
    assert_eq!(w.prepared().await.len(), 2);
    // Another jobu deployment (its own database) uses the same participants: its recovery,
    // however eager, must not touch this deployment's in-doubt branches.
    let other = TestDb::create(Backend::Sqlite).await.expect("other jobu");
    let theirs = coordinator(&other.store, &w.parts, &BTreeMap::new()).await;
    assert_ne!(theirs.id(), w.coordinator.id());
    let report = Recovery::new(&theirs, "other-recovery")
        .run_once(Duration::ZERO, LONG)
        .await;
    assert_eq!(report.rolled_back + report.committed, 0, "{report:?}");
    assert_eq!(
        w.prepared().await.len(),
        2,
        "the other deployment left them alone"
    );
    // This deployment's own recovery finishes them.
    let report = w.recover_all(Duration::ZERO).await;
    assert_eq!(report.rolled_back, 2, "{report:?}");
    w.assert_unchanged().await;
    other.cleanup().await;
    w.cleanup().await;
}

// --- A participant server restarted ---------------------------------------------------------

/// A PostgreSQL cluster of the test's own (initdb + pg_ctl in a temporary folder, on a free
/// port), so it can be crash-restarted without touching the shared server. Run as the
/// `postgres` user when the tests run as root (PostgreSQL refuses root).
struct PrivatePg {
    dir: std::path::PathBuf,
    port: u16,
    max_prepared_transactions: u32,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

impl PrivatePg {
    fn command(program: &str) -> std::process::Command {
        let path = format!("{PG_BIN}/{program}");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--", &path]);
            c
        } else {
            std::process::Command::new(path)
        }
    }

    fn run(program: &str, args: &[&str]) {
        let out = Self::command(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start() -> PrivatePg {
        Self::start_with(10)
    }

    fn start_with(max_prepared_transactions: u32) -> PrivatePg {
        let dir = std::env::temp_dir().join(format!(
            "{}pg_{}",
            common::TEST_DB_PREFIX,
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(status.success());
        }
        let data = dir.join("data");
        let data = data.to_str().expect("path");
        Self::run(
            "initdb",
            &["-D", data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        let port = common::admin::free_port();
        let pg = PrivatePg {
            dir,
            port,
            max_prepared_transactions,
        };
        pg.pg_ctl_start();
        pg
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_prepared_transactions={} -c fsync=off",
            self.port,
            self.dir.display(),
            self.max_prepared_transactions
        );
        let log = self.dir.join("log").display().to_string();
        Self::run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    /// Kills the server as a crash would (immediate stop) and starts it again.
    fn crash_restart(&self) {
        Self::run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
        self.pg_ctl_start();
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = Self::command("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_participant_server_crash_restarted_while_in_doubt_is_recovered() {
    let pg = PrivatePg::start();
    let jobu = TestDb::create(Backend::Postgres)
        .await
        .expect("jobu database");
    let maria = TestDb::create_with(Backend::MySql, false)
        .await
        .expect("maria");
    setup_accounts(maria.store.connection()).await;
    let private = Store::connect(&jobu::config::DatabaseSettings {
        min_connections: 0,
        ..jobu::config::DatabaseSettings::with_url(pg.url())
    })
    .await
    .expect("private cluster");
    setup_accounts(private.connection()).await;
    let parts = vec![
        (
            "pg".to_string(),
            Part {
                backend: Backend::Postgres,
                url: pg.url(),
                store: private,
                test_db: None,
            },
        ),
        ("maria".to_string(), Part::of(maria)),
    ];
    let coordinator = coordinator(&jobu.store, &parts, &BTreeMap::new()).await;
    let w = World {
        jobu,
        parts,
        coordinator,
    };
    killed_mid_commit(&w, "kill_after_decision").await;
    assert_eq!(w.prepared().await.len(), 2, "both branches in doubt");
    // The participant's server crashes and comes back: its prepared branch survives, and
    // recovery reconnects and commits it with the other.
    pg.crash_restart();
    assert_eq!(
        w.prepared().await.len(),
        2,
        "the prepared branch survived the crash"
    );
    let report = w.recover_all(LONG).await;
    assert_eq!(report.committed, 2, "{report:?}");
    let bal = w.balances().await;
    assert_eq!(bal["pg"], [START_BALANCE - 25, START_BALANCE]);
    assert_eq!(bal["maria"], [START_BALANCE + 25, START_BALANCE]);
    assert_eq!(w.prepared().await, Vec::<String>::new());
    w.cleanup().await;
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_that_cannot_prepare_is_refused_plainly_in_two_phase_commit() {
    let pg = PrivatePg::start_with(0);
    let jobu = TestDb::create(Backend::Sqlite)
        .await
        .expect("jobu database");
    let maria = TestDb::create_with(Backend::MySql, false)
        .await
        .expect("maria");
    setup_accounts(maria.store.connection()).await;
    let private = Store::connect(&jobu::config::DatabaseSettings {
        min_connections: 0,
        ..jobu::config::DatabaseSettings::with_url(pg.url())
    })
    .await
    .expect("private cluster");
    setup_accounts(private.connection()).await;
    let databases = Databases::from_stores([
        ("pg".to_string(), private.clone()),
        ("maria".to_string(), maria.store.clone()),
    ])
    .await;
    match &databases.get("pg").expect("pg").two_phase {
        jobu::txn::TwoPhase::Unavailable(why) => {
            assert!(why.contains("max_prepared_transactions is 0"), "{why}")
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert_eq!(
        databases.get("maria").expect("maria").two_phase,
        jobu::txn::TwoPhase::Available
    );
    let c = Coordinator::open(jobu.store.clone(), databases)
        .await
        .expect("coordinator");
    let fence = fence(&jobu.store).await;
    let err = transfer(&c, &fence, "pg", "maria", 5)
        .await
        .expect_err("refused");
    assert!(
        matches!(err, TxnError::Refused(_))
            && err.to_string().contains("database `pg` cannot take part"),
        "{err}"
    );
    // Alone it is an ordinary transaction.
    c.run(&fence, &["pg"], |tx| {
        Box::pin(async move { add(tx.db("pg")?, 1, -5).await })
    })
    .await
    .expect("one database commits");
    assert_eq!(
        balances(private.connection()).await,
        [START_BALANCE - 5, START_BALANCE]
    );
    assert_eq!(
        balances(maria.store.connection()).await,
        [START_BALANCE, START_BALANCE]
    );
    let _ = private.close().await;
    maria.cleanup().await;
    jobu.cleanup().await;
    drop(pg);
}

// --- Concurrency ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_interleavings_of_concurrent_transfers_conserve_the_sum() {
    let w = World::new(
        Backend::Postgres,
        &[("pg", Backend::Postgres), ("maria", Backend::MySql)],
    )
    .await;
    const ROUNDS: usize = 40;
    let run = |seed: u64| {
        let c = w.coordinator.clone();
        let store = w.jobu.store.clone();
        async move {
            let fence = fence(&store).await;
            let mut moved = 0i64;
            let mut rng = seed;
            for _ in 0..ROUNDS {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let amount = (rng >> 33) as i64 % 80 - 40;
                let pause = Duration::from_millis((rng >> 20) % 4);
                // Always PostgreSQL first: both transactions lock in the same order, so they
                // wait for each other instead of deadlocking across two servers.
                let result = c
                    .run(&fence, &["pg", "maria"], move |tx| {
                        Box::pin(async move {
                            add(tx.db("pg")?, 1, -amount).await?;
                            tokio::time::sleep(pause).await;
                            add(tx.db("maria")?, 1, amount).await?;
                            Ok(())
                        })
                    })
                    .await;
                if result.is_ok() {
                    moved += amount;
                }
            }
            moved
        }
    };
    let (a, b) = tokio::join!(run(1), run(2));
    let bal = w.balances().await;
    assert_eq!(
        bal["pg"][0] + bal["maria"][0],
        2 * START_BALANCE,
        "sum conserved: {bal:?}"
    );
    assert_eq!(
        bal["pg"][0],
        START_BALANCE - a - b,
        "no lost update: {bal:?}"
    );
    assert_eq!(
        bal["maria"][0],
        START_BALANCE + a + b,
        "no lost update: {bal:?}"
    );
    assert!(bal["pg"][0] >= 0 && bal["maria"][0] >= 0);
    assert_eq!(w.prepared().await, Vec::<String>::new());
    w.cleanup().await;
}
