//! A process-wide count of the statements jobu's stores send, for `jobu bench` (statements
//! per job). Every [`super::Store`] installs [`count`] as its connection's metric callback,
//! which sea-orm calls once per prepared statement (`execute`, `query_one`, `query_all`,
//! inside transactions too). Not counted: `BEGIN`/`COMMIT`/`ROLLBACK` and unprepared SQL
//! (`execute_unprepared`: migrations, the session setup of MySQL connections).

use std::sync::atomic::{AtomicU64, Ordering};

static STATEMENTS: AtomicU64 = AtomicU64::new(0);

/// The metric callback: one call per statement.
pub fn count(_info: &sea_orm::metric::Info<'_>) {
    STATEMENTS.fetch_add(1, Ordering::Relaxed);
}

/// Statements sent by every store of this process so far.
pub fn statements_executed() -> u64 {
    STATEMENTS.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseSettings;
    use crate::store::Store;

    #[tokio::test]
    async fn one_statement_counts_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/stats.db?mode=rwc", dir.path().display());
        let store = Store::connect(&DatabaseSettings::with_url(url))
            .await
            .expect("connect");
        let before = statements_executed();
        store.now().await.expect("clock");
        assert_eq!(statements_executed() - before, 1);
        store.now().await.expect("clock");
        assert_eq!(statements_executed() - before, 2);
        store.close().await.expect("close");
    }
}
