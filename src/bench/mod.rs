//! `jobu bench`: throughput and latency scenarios run in-process on the library, each on a
//! fresh database of its own ([`database`]), reported as lines or one JSON object
//! ([`report`]).
//!
//! - [`drain`]: N no-op executions bulk-inserted, then K worker pools run them all;
//! - [`trigger`]: executions created one at a time while workers are idle: creation to start;
//! - [`cron`]: M crons firing every S seconds for T seconds: every fire time once, schedule
//!   lag, the dispatcher's CPU share;
//! - [`sleep`]: N sleeping attempts at once in one pool: peak RSS.
//!
//! Statements are counted by the stores ([`crate::store::stats`]); the bench's own checks
//! run on a connection of their own and are not counted.

pub mod cron;
pub mod database;
pub mod drain;
pub mod report;
pub mod sleep;
pub mod trigger;

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, FromQueryResult};
use serde_json::Value;

use crate::actors::{RunningRuntime, RuntimeError};
use crate::config::{DatabaseSettings, LoggingSettings, Settings, DEFAULT_DATABASE};
use crate::entities::job_execution::Status;
use crate::store::dialect::Sql;
use crate::store::{stats, Dialect, Store, StoreError};
use database::{Scratch, Target};
pub use report::Report;

/// Why the bench stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad arguments or a database the bench must not touch: exit code 2.
    #[error("{0}")]
    Usage(String),
    /// Anything that went wrong while running: exit code 1.
    #[error("{0}")]
    Failed(String),
}

impl From<StoreError> for BenchError {
    fn from(e: StoreError) -> Self {
        BenchError::Failed(e.to_string())
    }
}

impl From<DbErr> for BenchError {
    fn from(e: DbErr) -> Self {
        BenchError::Failed(format!("database error: {e}"))
    }
}

impl From<RuntimeError> for BenchError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::Invalid(m) => BenchError::Usage(m),
            other => BenchError::Failed(other.to_string()),
        }
    }
}

/// How to run: where, how often, how to print.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `None`: a fresh SQLite file in a temporary folder.
    pub database_url: Option<String>,
    /// Allow a SQLite file that already holds jobu's tables (they are emptied).
    pub force: bool,
    /// Runs, each on a fresh database; the report gives medians and the spread.
    pub repeat: usize,
}

/// What to measure.
#[derive(Debug, Clone)]
pub enum Scenario {
    Drain {
        jobs: u64,
        workers: u32,
        concurrency: Option<u32>,
        batch: Option<u32>,
    },
    Trigger {
        jobs: u64,
    },
    Cron {
        crons: u64,
        every: u64,
        for_seconds: u64,
        concurrency: Option<u32>,
    },
    Sleep {
        jobs: u64,
        seconds: f64,
        batch: Option<u32>,
    },
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Drain { .. } => "drain",
            Scenario::Trigger { .. } => "trigger",
            Scenario::Cron { .. } => "cron",
            Scenario::Sleep { .. } => "sleep",
        }
    }

    fn check(&self) -> Result<(), BenchError> {
        let positive = |what: &str, n: u64| {
            if n == 0 {
                Err(BenchError::Usage(format!("{what} must be at least 1")))
            } else {
                Ok(())
            }
        };
        match self {
            Scenario::Drain {
                jobs,
                workers,
                concurrency,
                batch,
            } => {
                positive("--jobs", *jobs)?;
                positive("--workers", u64::from(*workers))?;
                positive("--concurrency", u64::from(concurrency.unwrap_or(1)))?;
                positive("--batch", u64::from(batch.unwrap_or(1)))
            }
            Scenario::Trigger { jobs } => positive("--jobs", *jobs),
            Scenario::Cron {
                crons,
                every,
                for_seconds,
                concurrency,
            } => {
                positive("--crons", *crons)?;
                positive("--for", *for_seconds)?;
                positive("--concurrency", u64::from(concurrency.unwrap_or(1)))?;
                cron::expression(*every).map(|_| ())
            }
            Scenario::Sleep {
                jobs,
                seconds,
                batch,
            } => {
                positive("--jobs", *jobs)?;
                positive("--batch", u64::from(batch.unwrap_or(1)))?;
                if !(0.0..=crate::handlers::builtin::MAX_SLEEP_SECONDS).contains(seconds) {
                    return Err(BenchError::Usage(
                        "--seconds must be between 0 and 86400".into(),
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Logging for the bench: warnings only unless `RUST_LOG` says otherwise, so the report is
/// not drowned by the runtime's per-attempt lines.
pub fn init_logging(settings: &LoggingSettings) -> crate::telemetry::LogGuard {
    crate::telemetry::init(&LoggingSettings {
        level: "warn".into(),
        ..settings.clone()
    })
}

/// Runs the scenario `options.repeat` times, each on a fresh database, and reports.
pub async fn run(
    settings: &Settings,
    scenario: &Scenario,
    options: &Options,
) -> Result<Report, BenchError> {
    scenario.check()?;
    let target = Target::parse(options.database_url.as_deref())?;
    let repeat = options.repeat.max(1);
    let mut runs = Vec::with_capacity(repeat);
    let mut server = (String::new(), String::new());
    let mut used = Value::Null;
    let mut notes = Vec::new();
    for i in 0..repeat {
        let scratch = Scratch::create(&target, i, options.force).await?;
        let ctx = RunContext::new(settings, &scratch.url);
        let result = tokio::select! {
            r = run_once(scenario, &ctx, i, repeat) => r,
            _ = tokio::signal::ctrl_c() => Err(BenchError::Failed("interrupted".into())),
        };
        scratch.remove().await;
        let (run, info) = result?;
        server = info.server;
        used = info.settings;
        notes = info.notes;
        runs.push(run.into());
    }
    Ok(Report::new(
        scenario.name(),
        &server.0,
        &server.1,
        used,
        notes,
        runs,
    ))
}

/// What a run says about itself besides its figures.
pub struct RunInfo {
    /// (backend, server version)
    pub server: (String, String),
    /// The settings the run used.
    pub settings: Value,
    pub notes: Vec<String>,
}

async fn run_once(
    scenario: &Scenario,
    ctx: &RunContext,
    run: usize,
    runs: usize,
) -> Result<(report::Measured, RunInfo), BenchError> {
    let progress = Progress::new(if runs > 1 {
        format!("{} {}/{runs}", scenario.name(), run + 1)
    } else {
        scenario.name().to_string()
    });
    let monitor = Monitor::connect(&ctx.url).await?;
    let server = monitor.server().await?;
    let result = match scenario {
        Scenario::Drain {
            jobs,
            workers,
            concurrency,
            batch,
        } => {
            drain::run(
                ctx,
                &monitor,
                &progress,
                drain::Args {
                    jobs: *jobs,
                    workers: *workers,
                    concurrency: *concurrency,
                    batch: *batch,
                },
            )
            .await
        }
        Scenario::Trigger { jobs } => trigger::run(ctx, &monitor, &progress, *jobs).await,
        Scenario::Cron {
            crons,
            every,
            for_seconds,
            concurrency,
        } => {
            cron::run(
                ctx,
                &monitor,
                &progress,
                cron::Args {
                    crons: *crons,
                    every: *every,
                    for_seconds: *for_seconds,
                    concurrency: *concurrency,
                },
            )
            .await
        }
        Scenario::Sleep {
            jobs,
            seconds,
            batch,
        } => sleep::run(ctx, &monitor, &progress, *jobs, *seconds, *batch).await,
    };
    progress.finish();
    monitor.close().await;
    let (measured, settings, notes) = result?;
    Ok((
        measured,
        RunInfo {
            server,
            settings,
            notes,
        },
    ))
}

/// The settings of one run: the configured ones on the run's database, no admin server, no
/// shell handler, no retention sweeps (a scratch database has nothing to prune, and their
/// statements would count in the statements per job).
pub struct RunContext {
    pub settings: Settings,
    pub url: String,
}

impl RunContext {
    fn new(base: &Settings, url: &str) -> RunContext {
        let mut settings = base.clone();
        let pool = DatabaseSettings {
            url: url.to_string(),
            ..base.default_database().clone()
        };
        settings.databases = [(DEFAULT_DATABASE.to_string(), pool)].into_iter().collect();
        settings.worker.databases = vec![DEFAULT_DATABASE.to_string()];
        settings.worker.id = None;
        settings.admin.enabled = false;
        settings.handlers.shell.enabled = false;
        settings.retention.enabled = false;
        RunContext {
            settings,
            url: url.to_string(),
        }
    }

    /// A new connection pool to the run's database (migrated by the first one).
    pub async fn store(&self) -> Result<Store, BenchError> {
        Ok(Store::connect(self.settings.default_database()).await?)
    }

    /// The common part of the settings report.
    pub fn settings_json(&self, settings: &Settings) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("concurrency".into(), settings.worker.concurrency.into());
        m.insert(
            "claim_batch_size".into(),
            settings.worker.claim_batch_size.into(),
        );
        m.insert(
            "worker_poll_interval_seconds".into(),
            settings.worker.poll_interval_seconds.into(),
        );
        m.insert(
            "max_connections".into(),
            settings.default_database().max_connections.into(),
        );
        m
    }
}

/// A window of measurement: wall time, statements, CPU time and peak RSS from its start.
pub struct Window {
    started: Instant,
    statements: u64,
    cpu: f64,
    pub rss_reset: bool,
}

impl Window {
    pub fn open() -> Window {
        let rss_reset = report::reset_peak_rss();
        Window {
            started: Instant::now(),
            statements: stats::statements_executed(),
            cpu: report::process_cpu_seconds(),
            rss_reset,
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// (wall time, statements, CPU seconds, peak RSS) since the start.
    pub fn close(&self) -> (Duration, u64, f64, u64) {
        (
            self.started.elapsed(),
            stats::statements_executed().saturating_sub(self.statements),
            (report::process_cpu_seconds() - self.cpu).max(0.0),
            report::peak_rss_bytes(),
        )
    }
}

/// Notes every report carries.
pub fn common_notes(window: &Window, sqlite: bool) -> Vec<String> {
    let mut notes = vec![
        "statements: every prepared statement jobu's stores sent in the window (BEGIN/COMMIT \
         not included); the bench's own checks are not counted"
            .to_string(),
        format!(
            "cpu_seconds and peak_rss_bytes are the whole bench process{}",
            if sqlite {
                ", SQLite's engine included"
            } else {
                ""
            }
        ),
    ];
    if !window.rss_reset {
        notes.push(
            "the kernel did not allow resetting the peak RSS: it covers the whole process life"
                .into(),
        );
    }
    notes
}

/// Stops runtimes gracefully and waits for them.
pub async fn stop_all(running: Vec<RunningRuntime>) {
    for r in &running {
        r.shutdown();
    }
    for r in running {
        let _ = r.wait().await;
    }
}

/// The bench's own connection: progress and completion checks, never counted as jobu's
/// statements.
pub struct Monitor {
    db: DatabaseConnection,
    pub dialect: Dialect,
}

#[derive(FromQueryResult)]
struct Count {
    n: i64,
}

impl Monitor {
    pub async fn connect(url: &str) -> Result<Monitor, BenchError> {
        let db = database::connect(url).await.map_err(|e| {
            BenchError::Failed(format!(
                "cannot connect to {}: {e}",
                crate::config::redact_url(url)
            ))
        })?;
        let dialect = Dialect::of(db.get_database_backend());
        Ok(Monitor { db, dialect })
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    pub async fn close(self) {
        let _ = self.db.close().await;
    }

    /// (backend name, server version).
    async fn server(&self) -> Result<(String, String), BenchError> {
        let sql = match self.dialect {
            Dialect::Postgres => "SHOW server_version",
            Dialect::MySql => "SELECT VERSION()",
            Dialect::Sqlite => "SELECT sqlite_version()",
        };
        let row = self
            .db
            .query_one(sea_orm::Statement::from_string(
                self.db.get_database_backend(),
                sql,
            ))
            .await?
            .ok_or_else(|| BenchError::Failed("the server returned no version".into()))?;
        let version: String = row.try_get_by_index(0)?;
        let backend = match self.dialect {
            Dialect::Postgres => "postgres",
            Dialect::MySql if version.to_ascii_lowercase().contains("mariadb") => "mariadb",
            Dialect::MySql => "mysql",
            Dialect::Sqlite => "sqlite",
        };
        Ok((backend.to_string(), version))
    }

    async fn count(&self, q: Sql) -> Result<u64, BenchError> {
        let row = Count::find_by_statement(q.build()).one(&self.db).await?;
        Ok(row.map(|r| r.n.max(0) as u64).unwrap_or(0))
    }

    /// Executions in `status`.
    pub async fn count_status(&self, status: Status) -> Result<u64, BenchError> {
        let mut q = Sql::new(self.dialect);
        q.push("SELECT COUNT(*) AS n FROM job_executions WHERE status = ")
            .bind(status.as_str());
        self.count(q).await
    }

    /// SUCCESS rows, for the progress bar: counted in the index of finished rows (which
    /// holds every SUCCESS row) rather than by reading the table the workers are writing.
    pub async fn count_succeeded(&self) -> Result<u64, BenchError> {
        let mut q = Sql::new(self.dialect);
        q.push("SELECT COUNT(*) AS n FROM job_executions WHERE status = ")
            .status(Status::Success)
            .push(" AND finished_at IS NOT NULL");
        self.count(q).await
    }

    /// Whether any execution is PENDING or RUNNING (with a fire time at or before `until`,
    /// when given): a probe of the PENDING rows' index and of the RUNNING rows', in one
    /// statement so that a row moving between the two is seen in one of them. The statuses
    /// are literals, one per probe, so that PostgreSQL's and SQLite's planners can use those
    /// partial indexes: a bound list made every probe, 50 a second, scan the table from its
    /// first row to the first unfinished one, which on SQLite took CPU from the very
    /// workers the bench measures.
    pub async fn unfinished(&self, until: Option<DateTime<Utc>>) -> Result<bool, BenchError> {
        let mut q = Sql::new(self.dialect);
        for (i, status) in [Status::Pending, Status::Running].into_iter().enumerate() {
            if i > 0 {
                q.push(" UNION ALL ");
            }
            q.push("SELECT id FROM (SELECT id FROM job_executions WHERE status = ")
                .status(status);
            if let Some(t) = until {
                q.push(" AND scheduled_time <= ").bind(t);
            }
            q.push(" LIMIT 1) AS probe_").push(status.as_str());
        }
        Ok(self.db.query_one(q.build()).await?.is_some())
    }

    /// Waits until no execution (due by `until`) is PENDING or RUNNING, checking every 20 ms;
    /// shows the count of SUCCESS rows out of `total` on the progress bar. Fails when
    /// nothing finished for `stall`.
    pub async fn wait_finished(
        &self,
        until: Option<DateTime<Utc>>,
        progress: &Progress,
        stall: Duration,
    ) -> Result<(), BenchError> {
        let mut last_change = Instant::now();
        let mut last_count = None;
        let mut last_look = Instant::now();
        loop {
            if !self.unfinished(until).await? {
                return Ok(());
            }
            // A count is dearer than the probe: once a second at most, or faster for the bar.
            let every = if progress.visible() {
                Duration::from_millis(250)
            } else {
                Duration::from_secs(1)
            };
            if last_look.elapsed() >= every {
                last_look = Instant::now();
                let done = self.count_succeeded().await?;
                progress.set(done);
                if last_count != Some(done) {
                    last_count = Some(done);
                    last_change = Instant::now();
                } else if last_change.elapsed() > stall {
                    return Err(BenchError::Failed(format!(
                        "no execution finished for {} s ({done} SUCCESS so far)",
                        stall.as_secs()
                    )));
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A progress bar on stderr, shown only when stderr is a terminal.
pub struct Progress {
    bar: indicatif::ProgressBar,
    label: String,
}

impl Progress {
    fn new(label: String) -> Progress {
        let bar = if std::io::stderr().is_terminal() {
            indicatif::ProgressBar::with_draw_target(
                None,
                indicatif::ProgressDrawTarget::stderr_with_hz(10),
            )
        } else {
            indicatif::ProgressBar::hidden()
        };
        Progress { bar, label }
    }

    pub fn visible(&self) -> bool {
        !self.bar.is_hidden()
    }

    /// A new phase of `total` steps.
    pub fn phase(&self, what: &str, total: u64) {
        self.bar.set_length(total);
        self.bar.set_position(0);
        let style = indicatif::ProgressStyle::with_template(
            "{prefix} {msg:<12} [{bar:30}] {pos}/{len} {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
        self.bar.set_style(style);
        self.bar.set_prefix(self.label.clone());
        self.bar.set_message(what.to_string());
    }

    pub fn set(&self, position: u64) {
        self.bar.set_position(position);
    }

    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// `name=value` settings as a JSON object.
pub fn settings_value(m: serde_json::Map<String, Value>) -> Value {
    Value::Object(m)
}
