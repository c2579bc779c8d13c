//! The `jobu` binary as a user runs it: `migrate` on each backend through `JOBU__`
//! environment overrides, configuration errors and their exit code, and `cron next`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Backend, TestDb};
use sea_orm::ConnectionTrait;

fn jobu() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jobu"))
}

fn shipped_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run jobu")
}

async fn migrate_twice(backend: Backend) {
    let Some(db) = TestDb::create_with(backend, false).await else {
        return;
    };
    let migrate = || {
        run(jobu()
            .args(["--config"])
            .arg(shipped_config())
            .arg("migrate")
            .env("JOBU__DATABASES__DEFAULT__URL", &db.url))
    };
    let first = migrate();
    assert!(
        first.status.success(),
        "first migrate: {}",
        text(&first.stderr)
    );
    assert!(
        text(&first.stdout).contains(&format!(
            "applied {} migration",
            <migration::Migrator as migration::MigratorTrait>::migrations().len()
        )),
        "{}",
        text(&first.stdout)
    );
    let second = migrate();
    assert!(
        second.status.success(),
        "second migrate: {}",
        text(&second.stderr)
    );
    assert!(
        text(&second.stdout).contains("up to date"),
        "{}",
        text(&second.stdout)
    );
    for table in ["cron_jobs", "job_executions"] {
        db.store
            .connection()
            .execute_unprepared(&format!("SELECT COUNT(*) FROM {table}"))
            .await
            .unwrap_or_else(|e| panic!("{table} missing after migrate: {e}"));
    }
    db.cleanup().await;
}

#[tokio::test]
async fn migrate_builds_the_schema_once_on_sqlite() {
    migrate_twice(Backend::Sqlite).await
}

#[tokio::test]
async fn migrate_builds_the_schema_once_on_postgres() {
    migrate_twice(Backend::Postgres).await
}

#[tokio::test]
async fn migrate_builds_the_schema_once_on_mysql() {
    migrate_twice(Backend::MySql).await
}

#[test]
fn default_config_creates_the_sqlite_file() {
    let dir = std::env::temp_dir().join(format!("jobu_t_cwd_{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = run(jobu()
        .arg("migrate")
        .current_dir(&dir)
        .env_remove("JOBU_CONFIG_DIR"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        dir.join("data/jobu.db").is_file(),
        "data/jobu.db not created"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn configuration_errors_name_the_key_and_exit_2() {
    let cases = [
        ("JOBU__ADMIN__PORT", "eighty", "admin.port"),
        ("JOBU__WORKER__CONCURRENCY", "-1", "worker.concurrency"),
        (
            "JOBU__DATABASES__DEFAULT__URL",
            "oracle://db/x",
            "databases.default.url",
        ),
        (
            "JOBU__DATABASES__DEFAULT__URL",
            "not a url",
            "databases.default.url",
        ),
        ("JOBU__DISPATCHER__POLL_INTERVAL", "5", "poll_interval"),
    ];
    for (var, value, key) in cases {
        let out = run(jobu()
            .arg("--config")
            .arg(shipped_config())
            .arg("migrate")
            .env(var, value));
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let err = text(&out.stderr);
        assert!(
            err.contains(key),
            "{var}={value}: stderr does not name {key}: {err}"
        );
    }
}

#[test]
fn unknown_key_in_a_file_is_refused() {
    let dir = std::env::temp_dir().join(format!("jobu_t_cfg_{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("worker.yaml"), "worker:\n  concurency: 4\n").unwrap();
    let out = run(jobu().arg("--config").arg(&dir).arg("migrate"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("concurency"),
        "{}",
        text(&out.stderr)
    );
    let missing = run(jobu().arg("--config").arg(dir.join("nope")).arg("migrate"));
    assert_eq!(missing.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn database_password_stays_out_of_errors() {
    let out = run(jobu()
        .arg("--config")
        .arg(shipped_config())
        .arg("migrate")
        .env(
            "JOBU__DATABASES__DEFAULT__URL",
            "postgres://jobu:hunter2@127.0.0.1:1/jobu",
        )
        .env("JOBU__DATABASES__DEFAULT__CONNECT_TIMEOUT_SECONDS", "2")
        .env("JOBU__DATABASES__DEFAULT__ACQUIRE_TIMEOUT_SECONDS", "2"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!all.contains("hunter2"), "password leaked: {all}");
}

#[test]
fn cron_next_prints_utc_instants() {
    let out = run(jobu().args([
        "cron",
        "next",
        "30 2 * * *",
        "--tz",
        "America/New_York",
        "--from",
        "2026-03-07T00:00:00Z",
        "--count",
        "3",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    // 2026-03-08 02:30 does not exist in New York: it runs at 03:00 EDT, the end of the gap.
    assert_eq!(
        text(&out.stdout),
        "2026-03-07T07:30:00Z\n2026-03-08T07:00:00Z\n2026-03-09T06:30:00Z\n"
    );
    let default = run(jobu().args([
        "cron",
        "next",
        "@hourly",
        "--from",
        "2026-01-01T00:00:00+02:00",
    ]));
    assert_eq!(text(&default.stdout), "2025-12-31T23:00:00Z\n");
}

#[test]
fn cron_next_rejects_bad_input_with_exit_2() {
    for args in [
        vec!["cron", "next", "61 * * * *"],
        vec!["cron", "next", "* * * *"],
        vec!["cron", "next", "0 0 L * *"],
        vec!["cron", "next", "* * * * *", "--tz", "Mars/Olympus"],
        vec!["cron", "next", "* * * * *", "--from", "yesterday"],
        vec!["cron", "next", "* * * * *", "--count", "0"],
    ] {
        let out = run(jobu().args(&args));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            out.stdout.is_empty(),
            "{args:?} printed {}",
            text(&out.stdout)
        );
        assert!(!text(&out.stderr).trim().is_empty(), "{args:?}: no message");
    }
}

#[test]
fn help_is_everywhere() {
    for args in [
        vec!["--help"],
        vec!["migrate", "--help"],
        vec!["cron", "next", "--help"],
    ] {
        let out = run(jobu().args(&args));
        assert!(out.status.success(), "{args:?}");
        assert!(text(&out.stdout).contains("Usage"), "{args:?}");
    }
}
