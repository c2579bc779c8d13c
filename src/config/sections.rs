//! The settings of each section (`databases`, `dispatcher`, `worker`, `admin`, `logging`,
//! `handlers`, `retention`) with their built-in defaults; ranges are checked in `validate.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::*;
use crate::entities::job_execution::Status;

/// One named database and its connection pool.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `sqlite://path?mode=rwc`, `postgres://user:pass@host/db` or `mysql://user:pass@host/db`.
    pub url: String,
    pub max_connections: u32,
    pub min_connections: u32,
    pub connect_timeout_seconds: u64,
    pub acquire_timeout_seconds: u64,
    pub idle_timeout_seconds: u64,
    pub max_lifetime_seconds: u64,
    /// Log every SQL statement (target `sqlx::query`, at INFO; slow ones at WARN). Off by
    /// default: one line per statement drowns everything else.
    pub log_statements: bool,
}

/// The URL's password never reaches a log through `{:?}`.
impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("connect_timeout_seconds", &self.connect_timeout_seconds)
            .field("acquire_timeout_seconds", &self.acquire_timeout_seconds)
            .field("idle_timeout_seconds", &self.idle_timeout_seconds)
            .field("max_lifetime_seconds", &self.max_lifetime_seconds)
            .field("log_statements", &self.log_statements)
            .finish()
    }
}

impl DatabaseSettings {
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
    pub const DEFAULT_MIN_CONNECTIONS: u32 = 1;
    pub const DEFAULT_CONNECT_TIMEOUT_SECONDS: u64 = 10;
    pub const DEFAULT_ACQUIRE_TIMEOUT_SECONDS: u64 = 30;
    pub const DEFAULT_IDLE_TIMEOUT_SECONDS: u64 = 600;
    pub const DEFAULT_MAX_LIFETIME_SECONDS: u64 = 1800;

    pub fn with_url(url: impl Into<String>) -> Self {
        DatabaseSettings {
            url: url.into(),
            ..Self::default()
        }
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: DEFAULT_DATABASE_URL.to_string(),
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            min_connections: Self::DEFAULT_MIN_CONNECTIONS,
            connect_timeout_seconds: Self::DEFAULT_CONNECT_TIMEOUT_SECONDS,
            acquire_timeout_seconds: Self::DEFAULT_ACQUIRE_TIMEOUT_SECONDS,
            idle_timeout_seconds: Self::DEFAULT_IDLE_TIMEOUT_SECONDS,
            max_lifetime_seconds: Self::DEFAULT_MAX_LIFETIME_SECONDS,
            log_statements: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DispatcherSettings {
    /// How often enabled crons are re-read, so edits apply without a restart.
    pub poll_interval_seconds: f64,
    /// Upper bound on one sleep while waiting for the next fire time.
    pub max_sleep_seconds: f64,
    /// Schedules that fire more often than this are refused (0 allows every second).
    pub min_cron_interval_seconds: u64,
    /// Executions are created this far ahead of their fire time, with run_at = fire time.
    pub lookahead_seconds: u64,
    /// The lookahead grows with the load, up to this: a burst of fire times gets created
    /// early enough to be in before its fire time (the time its creation took before).
    pub max_lookahead_seconds: u64,
    /// Crons per page of the dispatcher (one transaction: lock, create, move markers).
    pub batch_size: u32,
    /// With misfire policy `all`, at most this many missed fire times are created per cron.
    pub max_catchup: u32,
    /// A fire time less than this late still runs whatever the misfire policy: only older
    /// ones count as missed (all dispatchers were down).
    pub misfire_grace_seconds: u64,
}

impl DispatcherSettings {
    pub const DEFAULT_POLL_INTERVAL_SECONDS: f64 = 5.0;
    pub const DEFAULT_MAX_SLEEP_SECONDS: f64 = 60.0;
    pub const DEFAULT_MIN_CRON_INTERVAL_SECONDS: u64 = 60;
    pub const DEFAULT_LOOKAHEAD_SECONDS: u64 = 5;
    pub const DEFAULT_MAX_LOOKAHEAD_SECONDS: u64 = 60;
    pub const DEFAULT_BATCH_SIZE: u32 = 1000;
    pub const DEFAULT_MAX_CATCHUP: u32 = 100;
    pub const DEFAULT_MISFIRE_GRACE_SECONDS: u64 = 30;
}

impl Default for DispatcherSettings {
    fn default() -> Self {
        DispatcherSettings {
            poll_interval_seconds: Self::DEFAULT_POLL_INTERVAL_SECONDS,
            max_sleep_seconds: Self::DEFAULT_MAX_SLEEP_SECONDS,
            min_cron_interval_seconds: Self::DEFAULT_MIN_CRON_INTERVAL_SECONDS,
            lookahead_seconds: Self::DEFAULT_LOOKAHEAD_SECONDS,
            max_lookahead_seconds: Self::DEFAULT_MAX_LOOKAHEAD_SECONDS,
            batch_size: Self::DEFAULT_BATCH_SIZE,
            max_catchup: Self::DEFAULT_MAX_CATCHUP,
            misfire_grace_seconds: Self::DEFAULT_MISFIRE_GRACE_SECONDS,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Worker id in logs and in `job_executions.worker_id`; default `<host>-<pid>`.
    pub id: Option<String>,
    /// At most this many attempts run at once in one worker process (the original pool_size).
    pub concurrency: u32,
    /// Longest wait between claim attempts when nothing is due.
    pub poll_interval_seconds: f64,
    /// Executions taken per claim statement.
    pub claim_batch_size: u32,
    /// On SIGTERM, running attempts get this long to finish before they are released.
    pub shutdown_timeout_seconds: u64,
    /// Named databases (keys of `databases`) that handlers may use.
    pub databases: Vec<String>,
    /// A claimed execution belongs to its worker until this long after the last heartbeat.
    pub lease_seconds: u64,
    /// How often running attempts renew their lease; well under `lease_seconds`.
    pub heartbeat_interval_seconds: u64,
    /// First retry waits about this long; each further retry doubles it.
    pub retry_backoff_base_seconds: f64,
    /// No retry waits longer than this.
    pub retry_backoff_max_seconds: f64,
    /// Random spread applied to each backoff, as a fraction (0.2 = up to ±20%).
    pub retry_jitter: f64,
    /// How often the rescuer looks for expired leases.
    pub rescue_interval_seconds: u64,
    /// PostgreSQL: wake idle workers of every process through `LISTEN`/`NOTIFY` when work
    /// becomes due, instead of waiting for their next poll. Turn off behind PgBouncer in
    /// transaction mode, which cannot hold a `LISTEN`. (Pools in one process always wake.)
    pub notify: bool,
    /// Transactions over several databases (`jobu::txn`): recovery of in-doubt branches.
    pub transactions: TransactionSettings,
}

impl WorkerSettings {
    pub const DEFAULT_CONCURRENCY: u32 = 10;
    pub const DEFAULT_POLL_INTERVAL_SECONDS: f64 = 1.0;
    /// An upper bound: claims are sized to the free slots, so with the default concurrency
    /// they take at most 10.
    pub const DEFAULT_CLAIM_BATCH_SIZE: u32 = 100;
    pub const DEFAULT_SHUTDOWN_TIMEOUT_SECONDS: u64 = 30;
    pub const DEFAULT_LEASE_SECONDS: u64 = 30;
    pub const DEFAULT_HEARTBEAT_INTERVAL_SECONDS: u64 = 10;
    pub const DEFAULT_RETRY_BACKOFF_BASE_SECONDS: f64 = 10.0;
    pub const DEFAULT_RETRY_BACKOFF_MAX_SECONDS: f64 = 3600.0;
    pub const DEFAULT_RETRY_JITTER: f64 = 0.2;
    pub const DEFAULT_RESCUE_INTERVAL_SECONDS: u64 = 15;
    pub const DEFAULT_NOTIFY: bool = true;
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            id: None,
            concurrency: Self::DEFAULT_CONCURRENCY,
            poll_interval_seconds: Self::DEFAULT_POLL_INTERVAL_SECONDS,
            claim_batch_size: Self::DEFAULT_CLAIM_BATCH_SIZE,
            shutdown_timeout_seconds: Self::DEFAULT_SHUTDOWN_TIMEOUT_SECONDS,
            databases: vec![DEFAULT_DATABASE.to_string()],
            lease_seconds: Self::DEFAULT_LEASE_SECONDS,
            heartbeat_interval_seconds: Self::DEFAULT_HEARTBEAT_INTERVAL_SECONDS,
            retry_backoff_base_seconds: Self::DEFAULT_RETRY_BACKOFF_BASE_SECONDS,
            retry_backoff_max_seconds: Self::DEFAULT_RETRY_BACKOFF_MAX_SECONDS,
            retry_jitter: Self::DEFAULT_RETRY_JITTER,
            rescue_interval_seconds: Self::DEFAULT_RESCUE_INTERVAL_SECONDS,
            notify: Self::DEFAULT_NOTIFY,
            transactions: TransactionSettings::default(),
        }
    }
}

/// Recovery of two-phase transactions left in doubt (`worker.transactions`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TransactionSettings {
    /// How often the recovery service looks for in-doubt branches on every participant.
    pub recovery_interval_seconds: u64,
    /// A prepared branch whose decision was never logged is rolled back once it has been in
    /// doubt this long (sooner when its attempt no longer runs): its coordinator may still be
    /// between the last prepare and the decision until then.
    pub in_doubt_grace_seconds: u64,
    /// Finished entries of the decision log are deleted after this long.
    pub log_retention_hours: u64,
}

impl TransactionSettings {
    pub const DEFAULT_RECOVERY_INTERVAL_SECONDS: u64 = 30;
    pub const DEFAULT_IN_DOUBT_GRACE_SECONDS: u64 = 60;
    pub const DEFAULT_LOG_RETENTION_HOURS: u64 = 168;
}

impl Default for TransactionSettings {
    fn default() -> Self {
        TransactionSettings {
            recovery_interval_seconds: Self::DEFAULT_RECOVERY_INTERVAL_SECONDS,
            in_doubt_grace_seconds: Self::DEFAULT_IN_DOUBT_GRACE_SECONDS,
            log_retention_hours: Self::DEFAULT_LOG_RETENTION_HOURS,
        }
    }
}

/// Built-in handlers that need an operator's consent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct HandlersSettings {
    pub shell: ShellSettings,
    pub http: HttpSettings,
    pub sql: SqlSettings,
}

/// The `sql` handler, registered when `worker.databases` names a database besides `default`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SqlSettings {
    /// Rows of a final SELECT kept in the result.
    pub max_result_rows: usize,
}

impl SqlSettings {
    pub const DEFAULT_MAX_RESULT_ROWS: usize = 100;
}

impl Default for SqlSettings {
    fn default() -> Self {
        SqlSettings {
            max_result_rows: Self::DEFAULT_MAX_RESULT_ROWS,
        }
    }
}

/// The `shell` handler runs commands from `job_executions.params`, so whoever can write a
/// cron can run code on the worker: it is off unless enabled.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ShellSettings {
    pub enabled: bool,
    /// Bytes of stdout and of stderr kept (the tail) in the result and error message.
    pub output_tail_bytes: usize,
}

impl ShellSettings {
    pub const DEFAULT_OUTPUT_TAIL_BYTES: usize = 4096;
}

impl Default for ShellSettings {
    fn default() -> Self {
        ShellSettings {
            enabled: false,
            output_tail_bytes: Self::DEFAULT_OUTPUT_TAIL_BYTES,
        }
    }
}

/// The `http` handler sends requests that `job_executions.params` describe from the worker,
/// which may reach services nothing else exposes: it is off unless enabled.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    pub enabled: bool,
    /// Hosts requests (and each redirect) may go to: exact names, `.example.com` for the
    /// domain and its subdomains, IP addresses, `*`. Empty: any host.
    pub allowed_hosts: Vec<String>,
    /// Bytes of the response body kept (the tail) in the result and error message.
    pub body_tail_bytes: usize,
}

impl HttpSettings {
    pub const DEFAULT_BODY_TAIL_BYTES: usize = 4096;
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            enabled: false,
            allowed_hosts: Vec::new(),
            body_tail_bytes: Self::DEFAULT_BODY_TAIL_BYTES,
        }
    }
}

#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Whether `jobu run` serves the admin HTTP API and console (`jobu admin` always does).
    pub enabled: bool,
    pub host: String,
    pub port: u16,
    /// Names besides loopback and `host` that requests may carry in `Host` (DNS rebinding
    /// protection): exact names, `.example.com` for a domain and its subdomains, `*` for any.
    pub allowed_hosts: Vec<String>,
    /// `/api`, the console and `/docs` require `Authorization: Bearer <token>`. Without it
    /// (and without `allow_insecure`) the admin role uses the token in `token_file`,
    /// generating it on first start.
    pub auth_token: Option<String>,
    /// The generated token's file (0600), relative to the working directory.
    pub token_file: PathBuf,
    /// `/metrics` requires the token too.
    pub metrics_auth: bool,
    /// Serve the API without any token (refused while `handlers.shell.enabled`).
    pub allow_insecure: bool,
    /// How often running processes record their heartbeat in `workers`.
    pub presence_interval_seconds: u64,
    pub cors: CorsSettings,
}

impl AdminSettings {
    /// Loopback by default: the admin API is for the operator's network only.
    pub const DEFAULT_HOST: &'static str = "127.0.0.1";
    pub const DEFAULT_PORT: u16 = 8080;
    pub const DEFAULT_PRESENCE_INTERVAL_SECONDS: u64 = 10;

    /// The token, when authentication is on (an empty value counts as unset).
    pub fn token(&self) -> Option<&str> {
        self.auth_token.as_deref().filter(|t| !t.is_empty())
    }

    /// Whether `host` is a loopback address, which may be served without a token.
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            enabled: true,
            host: Self::DEFAULT_HOST.to_string(),
            port: Self::DEFAULT_PORT,
            allowed_hosts: Vec::new(),
            auth_token: None,
            token_file: PathBuf::from(DEFAULT_ADMIN_TOKEN_FILE),
            metrics_auth: false,
            allow_insecure: false,
            presence_interval_seconds: Self::DEFAULT_PRESENCE_INTERVAL_SECONDS,
            cors: CorsSettings::default(),
        }
    }
}

// Written by hand so the token never reaches a log line.
impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("enabled", &self.enabled)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("auth_token", &self.auth_token.as_ref().map(|_| "***"))
            .field("token_file", &self.token_file)
            .field("metrics_auth", &self.metrics_auth)
            .field("allow_insecure", &self.allow_insecure)
            .field("presence_interval_seconds", &self.presence_interval_seconds)
            .field("cors", &self.cors)
            .finish()
    }
}

/// Cross-origin rules of the admin API; no origins means no CORS headers at all.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CorsSettings {
    pub allow_origins: Vec<String>,
    pub allow_credentials: bool,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSettings {
    pub format: LogFormat,
    /// A tracing filter: `info`, or per target such as `info,jobu::store=debug`.
    pub level: String,
    /// Levels per target (module path), added to `level`: `{"jobu::store": "debug"}`.
    pub filters: BTreeMap<String, String>,
}

impl LoggingSettings {
    /// Targets quieted unless `level` or `filters` name them: ractor's `Actor{id=…}` spans
    /// wrap every line of every actor and say nothing an operator needs.
    pub const QUIET_TARGETS: [(&'static str, &'static str); 1] = [("ractor", "warn")];

    /// The whole filter: `level`, the quieted targets, then `filters`.
    pub fn directives(&self) -> String {
        let mut out = self.level.trim().to_string();
        let named = |target: &str| {
            self.level.contains(target) || self.filters.keys().any(|k| k.starts_with(target))
        };
        for (target, level) in Self::QUIET_TARGETS {
            if !named(target) {
                out.push_str(&format!(",{target}={level}"));
            }
        }
        for (target, level) in &self.filters {
            out.push_str(&format!(",{}={}", target.trim(), level.trim()));
        }
        out
    }
}

impl Default for LoggingSettings {
    fn default() -> Self {
        LoggingSettings {
            format: LogFormat::Text,
            level: "info".to_string(),
            filters: BTreeMap::new(),
        }
    }
}

/// Deletion of old finished executions (`retention`, the retention service and `jobu prune`).
/// Each age is in days since the execution finished; 0 keeps that status forever.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Whether dispatcher and worker processes run the retention service (`jobu prune`
    /// sweeps whatever this says).
    pub enabled: bool,
    pub success_days: u32,
    pub cancelled_days: u32,
    pub failed_days: u32,
    pub timeout_days: u32,
    /// The ledger's rows for fire times that did not run (SKIPPED, MISSED, EXCLUDED).
    pub not_run_days: u32,
    /// How often a sweep starts.
    pub interval_seconds: u64,
    /// Rows deleted per statement.
    pub batch_size: u32,
    /// Pause between two batches, so a large first sweep does not hog the database.
    pub batch_pause_ms: u64,
}

impl RetentionSettings {
    pub const DEFAULT_ENABLED: bool = true;
    pub const DEFAULT_SUCCESS_DAYS: u32 = 7;
    pub const DEFAULT_CANCELLED_DAYS: u32 = 7;
    pub const DEFAULT_FAILED_DAYS: u32 = 30;
    pub const DEFAULT_TIMEOUT_DAYS: u32 = 30;
    pub const DEFAULT_NOT_RUN_DAYS: u32 = 7;
    pub const DEFAULT_INTERVAL_SECONDS: u64 = 3600;
    pub const DEFAULT_BATCH_SIZE: u32 = 1000;
    pub const DEFAULT_BATCH_PAUSE_MS: u64 = 100;
    /// Upper bound on `batch_size`: one statement's rows stay a short transaction.
    pub const MAX_BATCH_SIZE: u32 = 10_000;
    /// Upper bound on each age (about 100 years).
    pub const MAX_DAYS: u32 = 36_500;
    /// Upper bound on `batch_pause_ms`.
    pub const MAX_BATCH_PAUSE_MS: u64 = 60_000;

    /// The age of each final status in days, 0 for "kept forever", in sweep order.
    pub fn ages(&self) -> [(Status, u32); 7] {
        [
            (Status::Success, self.success_days),
            (Status::Cancelled, self.cancelled_days),
            (Status::Failed, self.failed_days),
            (Status::Timeout, self.timeout_days),
            (Status::Skipped, self.not_run_days),
            (Status::Missed, self.not_run_days),
            (Status::Excluded, self.not_run_days),
        ]
    }
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            enabled: Self::DEFAULT_ENABLED,
            success_days: Self::DEFAULT_SUCCESS_DAYS,
            cancelled_days: Self::DEFAULT_CANCELLED_DAYS,
            failed_days: Self::DEFAULT_FAILED_DAYS,
            timeout_days: Self::DEFAULT_TIMEOUT_DAYS,
            not_run_days: Self::DEFAULT_NOT_RUN_DAYS,
            interval_seconds: Self::DEFAULT_INTERVAL_SECONDS,
            batch_size: Self::DEFAULT_BATCH_SIZE,
            batch_pause_ms: Self::DEFAULT_BATCH_PAUSE_MS,
        }
    }
}
