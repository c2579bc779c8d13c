//! Layered configuration: built-in defaults, then the YAML files of the config folder
//! (`database.yaml`, `dispatcher.yaml`, `worker.yaml`, `admin.yaml`, `logging.yaml`), then
//! `JOBU__SECTION__KEY` environment variables. Every error names the offending key so an
//! operator can fix it without reading code; the CLI turns [`ConfigError`] into exit code 2.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The files read from the config folder, in order; later files win on conflicting keys.
pub const CONFIG_FILES: [&str; 5] = [
    "database.yaml",
    "dispatcher.yaml",
    "worker.yaml",
    "admin.yaml",
    "logging.yaml",
];
/// Prefix of environment overrides: `JOBU__ADMIN__PORT=9000` sets `admin.port`.
pub const ENV_PREFIX: &str = "JOBU";
/// Separator between prefix, section and key in environment overrides.
pub const ENV_SEPARATOR: &str = "__";
/// The folder read when `--config` is not given.
pub const DEFAULT_CONFIG_DIR: &str = "config";
/// The database every role uses for `cron_jobs` and `job_executions`.
pub const DEFAULT_DATABASE: &str = "default";
/// Where a new user's data lives: a SQLite file created on first use.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/jobu.db?mode=rwc";
/// Where the admin token jobu generates is kept, next to the SQLite default.
pub const DEFAULT_ADMIN_TOKEN_FILE: &str = "data/admin_token";

/// Cap on `handlers.shell.output_tail_bytes` and `handlers.http.body_tail_bytes`: results are
/// stored in a database row.
const MAX_OUTPUT_TAIL_BYTES: usize = 1024 * 1024;
/// Cap on `handlers.sql.max_result_rows`: results are stored in a database row.
const MAX_SQL_RESULT_ROWS: usize = 10_000;

/// Keys whose environment value is a comma-separated list.
const ENV_LIST_KEYS: [&str; 6] = [
    "worker.databases",
    "handlers.http.allowed_hosts",
    "admin.allowed_hosts",
    "admin.cors.allow_origins",
    "admin.cors.allow_methods",
    "admin.cors.allow_headers",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config folder {0} does not exist")]
    MissingDir(PathBuf),
    #[error("config: {0}")]
    Load(String),
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
}

impl ConfigError {
    fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Everything a jobu process reads at start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Named databases; `default` holds jobu's own tables, the others are for handlers.
    pub databases: BTreeMap<String, DatabaseSettings>,
    pub dispatcher: DispatcherSettings,
    pub worker: WorkerSettings,
    pub admin: AdminSettings,
    pub logging: LoggingSettings,
    pub handlers: HandlersSettings,
}

impl Default for Settings {
    fn default() -> Self {
        let mut databases = BTreeMap::new();
        databases.insert(DEFAULT_DATABASE.to_string(), DatabaseSettings::default());
        Settings {
            databases,
            dispatcher: DispatcherSettings::default(),
            worker: WorkerSettings::default(),
            admin: AdminSettings::default(),
            logging: LoggingSettings::default(),
            handlers: HandlersSettings::default(),
        }
    }
}

/// One named database and its connection pool.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
}

impl Default for LoggingSettings {
    fn default() -> Self {
        LoggingSettings {
            format: LogFormat::Text,
            level: "info".to_string(),
        }
    }
}

/// Where settings come from. `dir: None` reads `config/` if it exists and otherwise runs on
/// the built-in defaults; an explicit folder must exist.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    pub dir: Option<PathBuf>,
    /// Environment overrides; `None` reads the process environment.
    pub env: Option<BTreeMap<String, String>>,
}

impl Settings {
    /// Reads and validates the settings of this process.
    pub fn load(source: &ConfigSource) -> Result<Settings, ConfigError> {
        let dir = match &source.dir {
            Some(dir) if !dir.is_dir() => return Err(ConfigError::MissingDir(dir.clone())),
            Some(dir) => Some(dir.clone()),
            None => Some(PathBuf::from(DEFAULT_CONFIG_DIR)).filter(|d| d.is_dir()),
        };

        let mut builder = config::Config::builder();
        if let Some(dir) = &dir {
            for file in CONFIG_FILES {
                builder = builder.add_source(
                    config::File::from(dir.join(file))
                        .format(config::FileFormat::Yaml)
                        .required(false),
                );
            }
        }
        let mut env = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator(ENV_SEPARATOR)
            .separator(ENV_SEPARATOR)
            .try_parsing(true)
            .list_separator(",");
        for key in ENV_LIST_KEYS {
            env = env.with_list_parse_key(key);
        }
        if let Some(vars) = &source.env {
            env = env.source(Some(vars.clone().into_iter().collect()));
        }
        let merged = builder
            .add_source(env)
            .build()
            .map_err(|e| ConfigError::Load(e.to_string()))?;

        let settings: Settings = serde_path_to_error::deserialize(merged).map_err(|e| {
            let key = e.path().to_string();
            let message = e.into_inner().to_string();
            if key == "." || key.is_empty() {
                ConfigError::Load(message)
            } else {
                ConfigError::key(key, message)
            }
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// The settings of the database that holds jobu's tables.
    pub fn default_database(&self) -> &DatabaseSettings {
        // validate() guarantees the entry exists.
        &self.databases[DEFAULT_DATABASE]
    }

    /// Checks ranges and cross-key rules that types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.databases.contains_key(DEFAULT_DATABASE) {
            return Err(ConfigError::key(
                "databases",
                "a database named `default` is required",
            ));
        }
        for (name, db) in &self.databases {
            let key = |k: &str| format!("databases.{name}.{k}");
            validate_database_url(&db.url).map_err(|m| ConfigError::key(key("url"), m))?;
            if db.max_connections == 0 {
                return Err(ConfigError::key(
                    key("max_connections"),
                    "must be at least 1",
                ));
            }
            if db.min_connections > db.max_connections {
                return Err(ConfigError::key(
                    key("min_connections"),
                    "must not exceed max_connections",
                ));
            }
        }

        let d = &self.dispatcher;
        positive("dispatcher.poll_interval_seconds", d.poll_interval_seconds)?;
        positive("dispatcher.max_sleep_seconds", d.max_sleep_seconds)?;
        if d.batch_size == 0 || d.batch_size > 10_000 {
            return Err(ConfigError::key(
                "dispatcher.batch_size",
                "must be between 1 and 10000",
            ));
        }

        let w = &self.worker;
        if w.concurrency == 0 {
            return Err(ConfigError::key("worker.concurrency", "must be at least 1"));
        }
        if w.claim_batch_size == 0 {
            return Err(ConfigError::key(
                "worker.claim_batch_size",
                "must be at least 1",
            ));
        }
        positive("worker.poll_interval_seconds", w.poll_interval_seconds)?;
        if w.lease_seconds == 0 {
            return Err(ConfigError::key(
                "worker.lease_seconds",
                "must be at least 1",
            ));
        }
        if w.heartbeat_interval_seconds == 0 || w.heartbeat_interval_seconds * 2 > w.lease_seconds {
            return Err(ConfigError::key(
                "worker.heartbeat_interval_seconds",
                format!(
                    "must be at least 1 and at most half of worker.lease_seconds ({})",
                    w.lease_seconds
                ),
            ));
        }
        positive(
            "worker.retry_backoff_base_seconds",
            w.retry_backoff_base_seconds,
        )?;
        if !w.retry_backoff_max_seconds.is_finite()
            || w.retry_backoff_max_seconds < w.retry_backoff_base_seconds
        {
            return Err(ConfigError::key(
                "worker.retry_backoff_max_seconds",
                "must be at least worker.retry_backoff_base_seconds",
            ));
        }
        if !(0.0..=1.0).contains(&w.retry_jitter) {
            return Err(ConfigError::key(
                "worker.retry_jitter",
                "must be between 0 and 1",
            ));
        }
        if w.rescue_interval_seconds == 0 {
            return Err(ConfigError::key(
                "worker.rescue_interval_seconds",
                "must be at least 1",
            ));
        }
        if let Some(id) = &w.id {
            if id.is_empty() || id.len() > 128 {
                return Err(ConfigError::key("worker.id", "must be 1 to 128 characters"));
            }
        }
        for (i, name) in w.databases.iter().enumerate() {
            if !self.databases.contains_key(name) {
                return Err(ConfigError::key(
                    format!("worker.databases[{i}]"),
                    format!("no database named `{name}` under `databases`"),
                ));
            }
        }

        let t = &w.transactions;
        if t.recovery_interval_seconds == 0 {
            return Err(ConfigError::key(
                "worker.transactions.recovery_interval_seconds",
                "must be at least 1",
            ));
        }
        if t.in_doubt_grace_seconds == 0 {
            return Err(ConfigError::key(
                "worker.transactions.in_doubt_grace_seconds",
                "must be at least 1",
            ));
        }
        if t.log_retention_hours == 0 {
            return Err(ConfigError::key(
                "worker.transactions.log_retention_hours",
                "must be at least 1",
            ));
        }
        if self.handlers.sql.max_result_rows == 0
            || self.handlers.sql.max_result_rows > MAX_SQL_RESULT_ROWS
        {
            return Err(ConfigError::key(
                "handlers.sql.max_result_rows",
                format!("must be between 1 and {MAX_SQL_RESULT_ROWS}"),
            ));
        }
        if self.handlers.shell.output_tail_bytes == 0
            || self.handlers.shell.output_tail_bytes > MAX_OUTPUT_TAIL_BYTES
        {
            return Err(ConfigError::key(
                "handlers.shell.output_tail_bytes",
                format!("must be between 1 and {MAX_OUTPUT_TAIL_BYTES}"),
            ));
        }
        let http = &self.handlers.http;
        if http.body_tail_bytes == 0 || http.body_tail_bytes > MAX_OUTPUT_TAIL_BYTES {
            return Err(ConfigError::key(
                "handlers.http.body_tail_bytes",
                format!("must be between 1 and {MAX_OUTPUT_TAIL_BYTES}"),
            ));
        }
        // The same syntax as admin.allowed_hosts; the handler matches URLs against it.
        for (i, entry) in http.allowed_hosts.iter().enumerate() {
            validate_allowed_host(entry)
                .map_err(|m| ConfigError::key(format!("handlers.http.allowed_hosts[{i}]"), m))?;
        }

        if self.admin.host.parse::<std::net::IpAddr>().is_err() && self.admin.host != "localhost" {
            return Err(ConfigError::key(
                "admin.host",
                format!("`{}` is not an IP address", self.admin.host),
            ));
        }
        if self.admin.port == 0 {
            return Err(ConfigError::key(
                "admin.port",
                "must be between 1 and 65535",
            ));
        }
        for (i, entry) in self.admin.allowed_hosts.iter().enumerate() {
            validate_allowed_host(entry)
                .map_err(|m| ConfigError::key(format!("admin.allowed_hosts[{i}]"), m))?;
        }
        if let Some(token) = &self.admin.auth_token {
            if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(ConfigError::key(
                    "admin.auth_token",
                    "must not contain spaces or control characters",
                ));
            }
        }
        if self.admin.token_file.as_os_str().is_empty() {
            return Err(ConfigError::key(
                "admin.token_file",
                "must be a file path such as data/admin_token",
            ));
        }
        if self.admin.presence_interval_seconds == 0 {
            return Err(ConfigError::key(
                "admin.presence_interval_seconds",
                "must be at least 1",
            ));
        }
        for (i, origin) in self.admin.cors.allow_origins.iter().enumerate() {
            if origin != "*" && url::Url::parse(origin).is_err() {
                return Err(ConfigError::key(
                    format!("admin.cors.allow_origins[{i}]"),
                    format!("`{origin}` is not an origin such as https://ops.example.com"),
                ));
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.logging.level) {
            return Err(ConfigError::key(
                "logging.level",
                format!("not a valid log filter ({e})"),
            ));
        }
        Ok(())
    }
}

/// An `admin.allowed_hosts` entry: `*`, a host name or IP address, or `.domain`.
fn validate_allowed_host(entry: &str) -> Result<(), String> {
    if entry == "*" {
        return Ok(());
    }
    let name = entry.strip_prefix('.').unwrap_or(entry);
    let ip = name.trim_start_matches('[').trim_end_matches(']');
    if name.len() == entry.len() && ip.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let is_name = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if is_name {
        Ok(())
    } else {
        Err(format!(
            "`{entry}` is not a host name such as jobu.example.com or .example.com (no scheme, \
             port or path), an IP address, or `*`"
        ))
    }
}

fn positive(key: &str, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(ConfigError::key(key, "must be a positive number"))
    }
}

/// Accepts the URLs jobu can connect to; the message never echoes the URL (it may hold a
/// password).
pub fn validate_database_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("not a valid database URL ({e})"))?;
    match parsed.scheme() {
        "sqlite" => {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Err(
                    "a sqlite URL needs a file path, e.g. sqlite://data/jobu.db?mode=rwc".into(),
                );
            }
            Ok(())
        }
        "postgres" | "postgresql" | "mysql" | "mariadb" => {
            if parsed.host_str().unwrap_or_default().is_empty() {
                return Err(format!("a {} URL needs a host", parsed.scheme()));
            }
            Ok(())
        }
        other => Err(format!(
            "unsupported scheme `{other}`; use sqlite://, postgres:// or mysql://"
        )),
    }
}

/// The URL with any password replaced, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_string(),
        Err(_) => "<unparseable url>".to_string(),
    }
}

/// The file path of a sqlite URL, relative paths as written (`sqlite://data/jobu.db` →
/// `data/jobu.db`); `None` for other schemes and in-memory databases.
pub fn sqlite_path(url: &str) -> Option<&Path> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    if path.is_empty() || path == ":memory:" {
        None
    } else {
        Some(Path::new(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> ConfigSource {
        ConfigSource {
            dir: Some(PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/config"
            ))),
            env: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
        }
    }

    #[test]
    fn shipped_files_equal_builtin_defaults() {
        let loaded = Settings::load(&env(&[])).expect("shipped config loads");
        // The shipped local config turns the shell handler on; the built-in default is off.
        let mut expected = Settings::default();
        expected.handlers.shell.enabled = true;
        assert_eq!(loaded, expected);
    }

    #[test]
    fn env_overrides_nested_keys() {
        let s = Settings::load(&env(&[
            (
                "JOBU__DATABASES__DEFAULT__URL",
                "postgres://u:p@db.internal/jobu",
            ),
            ("JOBU__ADMIN__PORT", "9090"),
            ("JOBU__WORKER__CONCURRENCY", "3"),
            ("JOBU__LOGGING__FORMAT", "json"),
        ]))
        .expect("loads");
        assert_eq!(s.default_database().url, "postgres://u:p@db.internal/jobu");
        assert_eq!(s.admin.port, 9090);
        assert_eq!(s.worker.concurrency, 3);
        assert_eq!(s.logging.format, LogFormat::Json);
    }

    #[test]
    fn errors_name_the_key() {
        let cases: [(&str, &str, &str); 6] = [
            ("JOBU__ADMIN__PORT", "eighty", "admin.port"),
            ("JOBU__ADMIN__PORTT", "80", "portt"),
            ("JOBU__WORKER__CONCURRENCY", "0", "worker.concurrency"),
            ("JOBU__DISPATCHER__BATCH_SIZE", "0", "dispatcher.batch_size"),
            (
                "JOBU__DATABASES__DEFAULT__URL",
                "redis://x",
                "databases.default.url",
            ),
            ("JOBU__LOGGING__FORMAT", "xml", "logging.format"),
        ];
        for (var, value, key) in cases {
            let err = Settings::load(&env(&[(var, value)])).expect_err(var);
            assert!(err.to_string().contains(key), "{var}={value}: {err}");
        }
    }

    #[test]
    fn transaction_and_sql_settings_are_validated_by_key() {
        let s = Settings::load(&env(&[
            ("JOBU__WORKER__TRANSACTIONS__IN_DOUBT_GRACE_SECONDS", "5"),
            ("JOBU__HANDLERS__SQL__MAX_RESULT_ROWS", "7"),
        ]))
        .expect("loads");
        assert_eq!(s.worker.transactions.in_doubt_grace_seconds, 5);
        assert_eq!(s.handlers.sql.max_result_rows, 7);
        for (var, key) in [
            (
                "JOBU__WORKER__TRANSACTIONS__RECOVERY_INTERVAL_SECONDS",
                "worker.transactions.recovery_interval_seconds",
            ),
            (
                "JOBU__WORKER__TRANSACTIONS__IN_DOUBT_GRACE_SECONDS",
                "worker.transactions.in_doubt_grace_seconds",
            ),
            (
                "JOBU__WORKER__TRANSACTIONS__LOG_RETENTION_HOURS",
                "worker.transactions.log_retention_hours",
            ),
            (
                "JOBU__HANDLERS__SQL__MAX_RESULT_ROWS",
                "handlers.sql.max_result_rows",
            ),
        ] {
            let err = Settings::load(&env(&[(var, "0")])).expect_err(var);
            assert!(err.to_string().contains(key), "{var}: {err}");
        }
        let err = Settings::load(&env(&[("JOBU__WORKER__DATABASES", "default,billing")]))
            .expect_err("unconfigured");
        assert!(err.to_string().contains("worker.databases[1]"), "{err}");
    }

    #[test]
    fn allowed_hosts_from_env_and_their_validation() {
        let s = Settings::load(&env(&[(
            "JOBU__ADMIN__ALLOWED_HOSTS",
            "jobu.example.com,.corp.example,10.0.0.5,[::1],*",
        )]))
        .expect("loads");
        assert_eq!(
            s.admin.allowed_hosts,
            [
                "jobu.example.com",
                ".corp.example",
                "10.0.0.5",
                "[::1]",
                "*"
            ]
        );
        for bad in [
            "https://jobu.example.com",
            "jobu.example.com:8080",
            "jobu.example.com/",
            "a b",
            ".",
            "",
        ] {
            let err = Settings::load(&env(&[("JOBU__ADMIN__ALLOWED_HOSTS", bad)]))
                .expect_err(bad)
                .to_string();
            assert!(err.contains("admin.allowed_hosts[0]"), "{bad}: {err}");
        }
    }

    #[test]
    fn http_handler_settings_from_env_and_their_validation() {
        let s = Settings::load(&env(&[])).expect("loads");
        assert!(!s.handlers.http.enabled, "off unless enabled");
        let s = Settings::load(&env(&[
            ("JOBU__HANDLERS__HTTP__ENABLED", "true"),
            (
                "JOBU__HANDLERS__HTTP__ALLOWED_HOSTS",
                "api.example.com,.corp.example,127.0.0.1",
            ),
            ("JOBU__HANDLERS__HTTP__BODY_TAIL_BYTES", "100"),
        ]))
        .expect("loads");
        assert!(s.handlers.http.enabled);
        assert_eq!(
            s.handlers.http.allowed_hosts,
            ["api.example.com", ".corp.example", "127.0.0.1"]
        );
        assert_eq!(s.handlers.http.body_tail_bytes, 100);
        let cases = [
            (
                "JOBU__HANDLERS__HTTP__BODY_TAIL_BYTES",
                "0",
                "handlers.http.body_tail_bytes",
            ),
            (
                "JOBU__HANDLERS__HTTP__BODY_TAIL_BYTES",
                "1048577",
                "handlers.http.body_tail_bytes",
            ),
            (
                "JOBU__HANDLERS__HTTP__ALLOWED_HOSTS",
                "https://api.example.com",
                "handlers.http.allowed_hosts[0]",
            ),
            (
                "JOBU__HANDLERS__HTTP__ALLOWED_HOSTS",
                "ok.example,api.example.com:443",
                "handlers.http.allowed_hosts[1]",
            ),
            ("JOBU__HANDLERS__HTTP__ENABLED", "maybe", "enabled"),
        ];
        for (var, value, key) in cases {
            let err = Settings::load(&env(&[(var, value)])).expect_err(value);
            assert!(err.to_string().contains(key), "{var}={value}: {err}");
        }
    }

    #[test]
    fn missing_explicit_dir_is_an_error() {
        let source = ConfigSource {
            dir: Some(PathBuf::from("/nonexistent/jobu")),
            env: Some(BTreeMap::new()),
        };
        assert!(matches!(
            Settings::load(&source),
            Err(ConfigError::MissingDir(_))
        ));
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://jobu:secret@db/jobu"),
            "postgres://jobu:***@db/jobu"
        );
        assert_eq!(
            sqlite_path("sqlite://data/jobu.db?mode=rwc"),
            Some(Path::new("data/jobu.db"))
        );
    }
}
