//! Guards the reason jobu stays on sea-orm 1.1 / sqlx 0.8.6: sqlx 0.9.0 stopped setting
//! TCP_NODELAY, and Nagle's algorithm then stalls each small query by about 40 ms on TCP.
//! A median round trip of a small prepared query over 127.0.0.1 takes well under a
//! millisecond here; a stalled one takes ~40 ms. The bound sits far from both, so machine
//! noise cannot flip it.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, TestDb};
use sea_orm::{ConnectionTrait, Statement};

const ROUND_TRIPS: usize = 41;
const STALL_BOUND: Duration = Duration::from_millis(20);

async fn median_round_trip(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    assert!(
        db.url.contains("127.0.0.1") || db.url.contains("localhost"),
        "must be TCP: {}",
        db.url
    );
    let store = db.new_store(1).await;
    let conn = store.connection();
    let sql = match backend {
        Backend::Postgres => "SELECT COUNT(*) FROM job_executions WHERE id > $1",
        _ => "SELECT COUNT(*) FROM job_executions WHERE id > ?",
    };
    let mut times = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..ROUND_TRIPS + 5 {
        let stmt =
            Statement::from_sql_and_values(conn.get_database_backend(), sql, [(i as i64).into()]);
        let start = Instant::now();
        conn.query_one(stmt).await.expect("query");
        if i >= 5 {
            times.push(start.elapsed());
        }
    }
    times.sort();
    let median = times[ROUND_TRIPS / 2];
    let _ = store.close().await;
    db.cleanup().await;
    assert!(
        median < STALL_BOUND,
        "{}: median round trip {median:?} >= {STALL_BOUND:?}: are small writes delayed (TCP_NODELAY)?",
        backend.name()
    );
}

#[tokio::test]
async fn postgres_small_queries_do_not_stall() {
    median_round_trip(Backend::Postgres).await
}

#[tokio::test]
async fn mysql_small_queries_do_not_stall() {
    median_round_trip(Backend::MySql).await
}
