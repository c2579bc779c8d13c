//! What `/metrics` reads from the database: executions by status, for the fleet-wide backlog.
//! A scrape must not load the database, and `/metrics` is open by default, so the counts are
//! cached for [`EXECUTIONS_CACHE_TTL`] and refreshed single-flight: concurrent scrapes wait
//! for the one query under way and share its answer, and at most one query starts per period
//! whatever its outcome, so a slow or failing database does not pile up queries. When a
//! refresh fails the last good counts stay, and `jobu_executions_scrape_age_seconds` says how
//! old they are.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::entities::job_execution::Status;
use crate::store::StoreResult;

/// Counts read from the database are reused this long.
pub const EXECUTIONS_CACHE_TTL: Duration = Duration::from_secs(5);
/// One refresh gives the database this long.
pub const EXECUTIONS_QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Seconds since the counts were read.
pub const AGE_GAUGE: &str = "jobu_executions_scrape_age_seconds";

#[derive(Default)]
struct Cached {
    /// The last counts read, and when.
    counts: Option<(BTreeMap<Status, u64>, Instant)>,
    /// When the last refresh started, successful or not.
    attempted: Option<Instant>,
}

/// The cache of one admin application.
pub struct ExecutionCounts {
    ttl: Duration,
    timeout: Duration,
    cached: Mutex<Cached>,
}

impl Default for ExecutionCounts {
    fn default() -> Self {
        Self::new(EXECUTIONS_CACHE_TTL, EXECUTIONS_QUERY_TIMEOUT)
    }
}

impl ExecutionCounts {
    pub fn new(ttl: Duration, timeout: Duration) -> Self {
        metrics::describe_gauge!(
            AGE_GAUGE,
            metrics::Unit::Seconds,
            "Age of the jobu_executions counts (cached between scrapes; they stay when the \
             database does not answer)"
        );
        ExecutionCounts {
            ttl,
            timeout,
            cached: Mutex::new(Cached::default()),
        }
    }

    /// The counts, read with `query` when the cached ones are older than the period (and no
    /// refresh started within it), with their age; `None` until one read succeeded.
    pub async fn get<F, Fut>(&self, query: F) -> Option<(BTreeMap<Status, u64>, Duration)>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = StoreResult<BTreeMap<Status, u64>>>,
    {
        // Held across the query: a concurrent scrape waits here, then finds fresh counts.
        let mut cached = self.cached.lock().await;
        let now = Instant::now();
        let due = cached
            .attempted
            .is_none_or(|at| now.duration_since(at) >= self.ttl);
        if due {
            // Marked before the query, so a scrape cancelled mid-query does not make the
            // next one retry at once.
            cached.attempted = Some(now);
            match tokio::time::timeout(self.timeout, query()).await {
                Ok(Ok(counts)) => cached.counts = Some((counts, Instant::now())),
                Ok(Err(e)) => tracing::warn!(error = %e, "metrics: cannot count executions"),
                Err(_) => tracing::warn!(
                    timeout_seconds = self.timeout.as_secs_f64(),
                    "metrics: counting executions timed out"
                ),
            }
        }
        cached
            .counts
            .as_ref()
            .map(|(counts, at)| (counts.clone(), at.elapsed()))
    }

    /// Refreshes (when due) and sets the gauges.
    pub async fn record<F, Fut>(&self, query: F)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = StoreResult<BTreeMap<Status, u64>>>,
    {
        if let Some((counts, age)) = self.get(query).await {
            crate::metrics::executions_by_status(&counts);
            metrics::gauge!(AGE_GAUGE).set(age.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use crate::store::StoreError;

    fn counts(pending: u64) -> BTreeMap<Status, u64> {
        BTreeMap::from([(Status::Pending, pending)])
    }

    const TTL: Duration = Duration::from_millis(300);
    const TIMEOUT: Duration = Duration::from_millis(100);

    #[tokio::test]
    async fn reuses_counts_for_the_period() {
        let cache = ExecutionCounts::new(TTL, TIMEOUT);
        let queries = AtomicUsize::new(0);
        let query = |n: u64| {
            queries.fetch_add(1, Ordering::SeqCst);
            async move { Ok(counts(n)) }
        };
        assert_eq!(cache.get(|| query(1)).await.map(|c| c.0), Some(counts(1)));
        let (cached, age) = cache.get(|| query(2)).await.expect("cached");
        assert_eq!(
            cached,
            counts(1),
            "a second scrape within the period queried again"
        );
        assert!(age < TTL, "{age:?}");
        assert_eq!(queries.load(Ordering::SeqCst), 1);
        tokio::time::sleep(TTL).await;
        assert_eq!(cache.get(|| query(2)).await.map(|c| c.0), Some(counts(2)));
        assert_eq!(queries.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn keeps_the_last_counts_when_the_database_fails() {
        let cache = ExecutionCounts::new(TTL, TIMEOUT);
        assert!(cache.get(|| async { Ok(counts(3)) }).await.is_some());
        tokio::time::sleep(TTL).await;
        let (kept, age) = cache
            .get(|| async { Err(StoreError::Invalid("down".into())) })
            .await
            .expect("last good counts");
        assert_eq!(kept, counts(3));
        assert!(age >= TTL, "{age:?}");
        // A database that hangs: the refresh gives up after the timeout, the counts stay.
        tokio::time::sleep(TTL).await;
        let started = Instant::now();
        let (kept, _) = cache
            .get(std::future::pending::<StoreResult<BTreeMap<Status, u64>>>)
            .await
            .expect("last good counts");
        assert_eq!(kept, counts(3));
        assert!(started.elapsed() < TTL, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_failed_refresh_is_not_retried_within_the_period() {
        let cache = ExecutionCounts::new(TTL, TIMEOUT);
        let queries = AtomicUsize::new(0);
        for _ in 0..3 {
            let got = cache
                .get(|| {
                    queries.fetch_add(1, Ordering::SeqCst);
                    async { Err(StoreError::Invalid("down".into())) }
                })
                .await;
            assert!(got.is_none());
        }
        assert_eq!(queries.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_scrapes_share_one_query() {
        let cache = Arc::new(ExecutionCounts::new(
            Duration::from_secs(60),
            Duration::from_secs(10),
        ));
        let queries = Arc::new(AtomicUsize::new(0));
        let scrapes: Vec<_> = (0..8)
            .map(|_| {
                let cache = cache.clone();
                let queries = queries.clone();
                tokio::spawn(async move {
                    cache
                        .get(|| async move {
                            queries.fetch_add(1, Ordering::SeqCst);
                            // A slow database.
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            Ok(counts(7))
                        })
                        .await
                })
            })
            .collect();
        for scrape in scrapes {
            let got = scrape.await.expect("scrape task");
            assert_eq!(got.map(|c| c.0), Some(counts(7)));
        }
        assert_eq!(queries.load(Ordering::SeqCst), 1);
    }
}
