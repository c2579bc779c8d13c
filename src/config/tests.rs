use super::*;
use crate::entities::job_execution::Status;

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

#[test]
fn retention_settings_from_env_and_their_validation() {
    let s = Settings::load(&env(&[])).expect("loads");
    assert_eq!(s.retention, RetentionSettings::default());
    assert!(s.retention.enabled);
    assert_eq!(
        s.retention.ages(),
        [
            (Status::Success, 7),
            (Status::Cancelled, 7),
            (Status::Failed, 30),
            (Status::Timeout, 30),
            (Status::Skipped, 7),
            (Status::Missed, 7),
            (Status::Excluded, 7)
        ]
    );
    let s = Settings::load(&env(&[
        ("JOBU__RETENTION__ENABLED", "false"),
        ("JOBU__RETENTION__FAILED_DAYS", "0"),
        ("JOBU__RETENTION__BATCH_SIZE", "10000"),
        ("JOBU__RETENTION__BATCH_PAUSE_MS", "0"),
    ]))
    .expect("loads");
    assert!(!s.retention.enabled);
    assert_eq!(s.retention.failed_days, 0, "0 keeps forever");
    assert_eq!(s.retention.batch_size, 10_000);
    let cases = [
        ("JOBU__RETENTION__BATCH_SIZE", "0", "retention.batch_size"),
        (
            "JOBU__RETENTION__BATCH_SIZE",
            "10001",
            "retention.batch_size",
        ),
        ("JOBU__RETENTION__BATCH_SIZE", "-1", "batch_size"),
        (
            "JOBU__RETENTION__INTERVAL_SECONDS",
            "0",
            "retention.interval_seconds",
        ),
        (
            "JOBU__RETENTION__BATCH_PAUSE_MS",
            "60001",
            "retention.batch_pause_ms",
        ),
        (
            "JOBU__RETENTION__SUCCESS_DAYS",
            "36501",
            "retention.success_days",
        ),
        ("JOBU__RETENTION__TIMEOUT_DAYS", "-3", "timeout_days"),
        ("JOBU__RETENTION__CANCELED_DAYS", "7", "canceled_days"),
    ];
    for (var, value, key) in cases {
        let err = Settings::load(&env(&[(var, value)])).expect_err(var);
        assert!(err.to_string().contains(key), "{var}={value}: {err}");
    }
}
