//! Layered configuration: built-in defaults, then the YAML files of the config folder
//! (`database.yaml`, `dispatcher.yaml`, `worker.yaml`, `admin.yaml`, `logging.yaml`,
//! `retention.yaml`), then
//! `JOBU__SECTION__KEY` environment variables. Every error names the offending key so an
//! operator can fix it without reading code; the CLI turns [`ConfigError`] into exit code 2.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod sections;
mod validate;

pub use sections::*;
pub use validate::validate_database_url;

/// The files read from the config folder, in order; later files win on conflicting keys.
pub const CONFIG_FILES: [&str; 6] = [
    "database.yaml",
    "dispatcher.yaml",
    "worker.yaml",
    "admin.yaml",
    "logging.yaml",
    "retention.yaml",
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
    pub retention: RetentionSettings,
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
            retention: RetentionSettings::default(),
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

    /// A copy safe to print: database passwords and the admin token masked.
    pub fn redacted(&self) -> Settings {
        let mut out = self.clone();
        for db in out.databases.values_mut() {
            db.url = redact_url(&db.url);
        }
        if out.admin.auth_token.is_some() {
            out.admin.auth_token = Some("***".to_string());
        }
        out
    }

    /// The settings of the database that holds jobu's tables.
    pub fn default_database(&self) -> &DatabaseSettings {
        // validate() guarantees the entry exists.
        &self.databases[DEFAULT_DATABASE]
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
mod tests;
