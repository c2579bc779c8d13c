//! Range and cross-key checks on loaded settings that types alone cannot express; every
//! error names its key.

use super::*;

impl Settings {
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
        self.retention.validate()?;
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.logging.level) {
            return Err(ConfigError::key(
                "logging.level",
                format!("not a valid log filter ({e})"),
            ));
        }
        for (target, level) in &self.logging.filters {
            let key = format!("logging.filters.{target}");
            if target.trim().is_empty() || target.contains([',', '=', ' ']) {
                return Err(ConfigError::key(key, "not a target such as jobu::store"));
            }
            if level
                .trim()
                .parse::<tracing_subscriber::filter::LevelFilter>()
                .is_err()
            {
                return Err(ConfigError::key(
                    key,
                    format!("{level:?} is not one of off, error, warn, info, debug, trace"),
                ));
            }
        }
        Ok(())
    }
}

impl RetentionSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        let max = Self::MAX_DAYS;
        for (key, days) in [
            ("retention.success_days", self.success_days),
            ("retention.cancelled_days", self.cancelled_days),
            ("retention.failed_days", self.failed_days),
            ("retention.timeout_days", self.timeout_days),
            ("retention.not_run_days", self.not_run_days),
        ] {
            if days > max {
                return Err(ConfigError::key(
                    key,
                    format!("must be between 0 (keep forever) and {max} days"),
                ));
            }
        }
        if self.interval_seconds == 0 {
            return Err(ConfigError::key(
                "retention.interval_seconds",
                "must be at least 1",
            ));
        }
        if self.batch_size == 0 || self.batch_size > Self::MAX_BATCH_SIZE {
            return Err(ConfigError::key(
                "retention.batch_size",
                format!("must be between 1 and {}", Self::MAX_BATCH_SIZE),
            ));
        }
        if self.batch_pause_ms > Self::MAX_BATCH_PAUSE_MS {
            return Err(ConfigError::key(
                "retention.batch_pause_ms",
                format!("must be between 0 and {}", Self::MAX_BATCH_PAUSE_MS),
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
