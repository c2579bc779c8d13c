//! The `jobu` binary as a user runs it: `migrate` on each backend through `JOBU__`
//! environment overrides, configuration errors and their exit code, `cron next`, and
//! `jobu bench` on each backend.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Backend, TestDb};
use sea_orm::{ConnectionTrait, EntityTrait, PaginatorTrait};

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
        vec!["cron", "next", "0 0 * * 5L"],
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
        vec!["bench", "--help"],
        vec!["bench", "drain", "--help"],
    ] {
        let out = run(jobu().args(&args));
        assert!(out.status.success(), "{args:?}");
        assert!(text(&out.stdout).contains("Usage"), "{args:?}");
    }
}

// ---------------------------------------------------------------------------------------
// jobu bench

/// Runs `jobu bench ARGS --json` and returns its one JSON object (asserting exit 0).
fn bench_json(args: &[&str], envs: &[(&str, &str)], tmp: &Path) -> serde_json::Value {
    bench_json_pid(args, envs, tmp).0
}

/// Like [`bench_json`], with the process id of the bench (which names its scratch
/// databases `jobu_bench_<pid>_<run>`).
fn bench_json_pid(args: &[&str], envs: &[(&str, &str)], tmp: &Path) -> (serde_json::Value, u32) {
    let mut cmd = jobu();
    cmd.arg("--config")
        .arg(shipped_config())
        .arg("bench")
        .args(args)
        .arg("--json")
        .env("TMPDIR", tmp)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("start jobu bench");
    let pid = child.id();
    let out = child.wait_with_output().expect("run jobu bench");
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "jobu bench {args:?}: {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        text(&out.stderr)
    );
    assert_eq!(
        stdout.trim().lines().count(),
        1,
        "--json prints one line: {stdout}"
    );
    let report =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    (report, pid)
}

/// A folder for the bench's temporary files, so the test can see they are removed.
fn bench_tmp() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jobu_t_bench_{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[track_caller]
fn assert_report(report: &serde_json::Value, scenario: &str, backend: &str, jobs: u64) {
    assert_eq!(report["scenario"], scenario, "{report}");
    assert_eq!(report["backend"], backend, "{report}");
    assert_eq!(report["jobs"], jobs, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert!(
        report["seconds"].as_f64().is_some_and(|s| s > 0.0),
        "{report}"
    );
    assert!(
        report["jobs_per_s"].as_f64().is_some_and(|r| r > 0.0),
        "{report}"
    );
    assert!(
        report["statements"].as_u64().is_some_and(|n| n > 0),
        "{report}"
    );
    assert!(
        report["statements_per_job"]
            .as_f64()
            .is_some_and(|n| n > 0.0),
        "{report}"
    );
    assert!(
        report["peak_rss_bytes"]
            .as_u64()
            .is_some_and(|n| n > 1_000_000),
        "{report}"
    );
    assert!(
        report["cpu_seconds"].as_f64().is_some_and(|n| n >= 0.0),
        "{report}"
    );
    assert!(report.get("lag_ms").is_some(), "{report}");
    assert!(report["settings"].is_object(), "{report}");
}

#[track_caller]
fn assert_lag(lag: &serde_json::Value) {
    let p50 = lag["p50"].as_f64().unwrap_or_else(|| panic!("lag: {lag}"));
    let p99 = lag["p99"].as_f64().unwrap_or_else(|| panic!("lag: {lag}"));
    let max = lag["max"].as_f64().unwrap_or_else(|| panic!("lag: {lag}"));
    assert!(p50 <= p99 && p99 <= max && max < 60_000.0, "{lag}");
}

fn server_url(backend: Backend) -> String {
    let (var, default) = match backend {
        Backend::Postgres => ("JOBU_TEST_POSTGRES_URL", common::DEFAULT_POSTGRES_URL),
        _ => ("JOBU_TEST_MYSQL_URL", common::DEFAULT_MYSQL_URL),
    };
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

#[test]
fn bench_drain_reports_json_on_sqlite() {
    let tmp = bench_tmp();
    let report = bench_json(&["drain", "--jobs", "200"], &[], &tmp);
    assert_report(&report, "drain", "sqlite", 200);
    assert_eq!(report["lag_ms"], serde_json::Value::Null);
    // The shipped defaults.
    assert_eq!(report["settings"]["concurrency"], 10, "{report}");
    assert_eq!(report["settings"]["workers"], 1, "{report}");
    assert_eq!(
        report["each_run"][0]["details"]["succeeded"], 200,
        "{report}"
    );
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "the temporary database was left behind"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

async fn bench_drain_on_server(backend: Backend) {
    if !backend.enabled() {
        return;
    }
    let tmp = bench_tmp();
    let url = server_url(backend);
    let (report, pid) = bench_json_pid(
        &[
            "drain",
            "--jobs",
            "200",
            "--workers",
            "2",
            "--database-url",
            &url,
        ],
        &[],
        &tmp,
    );
    let name = if backend == Backend::Postgres {
        "postgres"
    } else {
        "mariadb"
    };
    assert_report(&report, "drain", name, 200);
    assert_eq!(report["settings"]["workers"], 2, "{report}");
    // Its scratch database is gone.
    let scratch = format!("jobu_bench_{pid}_0");
    let admin = sea_orm::Database::connect(url.as_str()).await.unwrap();
    let sql = match backend {
        Backend::Postgres => format!("SELECT datname FROM pg_database WHERE datname = '{scratch}'"),
        _ => format!("SHOW DATABASES LIKE '{scratch}'"),
    };
    let left = admin
        .query_all(sea_orm::Statement::from_string(
            admin.get_database_backend(),
            sql,
        ))
        .await
        .unwrap();
    let _ = admin.close().await;
    assert!(left.is_empty(), "the bench left {scratch} behind");
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[tokio::test]
async fn bench_drain_reports_json_on_postgres() {
    bench_drain_on_server(Backend::Postgres).await
}

#[tokio::test]
async fn bench_drain_reports_json_on_mysql() {
    bench_drain_on_server(Backend::MySql).await
}

#[tokio::test]
async fn bench_refuses_a_sqlite_file_with_jobu_data_unless_forced() {
    let Some(db) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    db.store
        .insert_cron(&jobu::store::crons::NewCron::new(
            "keep",
            "0 0 1 1 *",
            "noop",
        ))
        .await
        .unwrap();
    let tmp = bench_tmp();
    let out = run(jobu()
        .arg("--config")
        .arg(shipped_config())
        .args([
            "bench",
            "drain",
            "--jobs",
            "10",
            "--json",
            "--database-url",
            &db.url,
        ])
        .env("TMPDIR", &tmp));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("--force"),
        "{}",
        text(&out.stderr)
    );
    let crons = || async {
        jobu::entities::CronJobs::find()
            .count(db.store.connection())
            .await
            .unwrap()
    };
    assert_eq!(crons().await, 1, "a refused bench touched the database");

    let report = bench_json(
        &[
            "drain",
            "--jobs",
            "10",
            "--database-url",
            &db.url,
            "--force",
        ],
        &[],
        &tmp,
    );
    assert_report(&report, "drain", "sqlite", 10);
    assert_eq!(crons().await, 0, "--force empties the tables");
    std::fs::remove_dir_all(&tmp).unwrap();
    db.cleanup().await;
}

#[test]
fn bench_on_a_new_sqlite_file_removes_it() {
    let tmp = bench_tmp();
    let file = tmp.join("fresh.db");
    let url = format!("sqlite://{}", file.display());
    let report = bench_json(
        &["drain", "--jobs", "20", "--database-url", &url],
        &[],
        &tmp,
    );
    assert_report(&report, "drain", "sqlite", 20);
    assert!(!file.exists(), "the bench's own file was left behind");
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn bench_repeats_and_prints_lines() {
    let tmp = bench_tmp();
    let out = run(jobu()
        .arg("--config")
        .arg(shipped_config())
        .args(["bench", "drain", "--jobs", "50", "--repeat", "2"])
        .env("TMPDIR", &tmp));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("2 runs"), "{stdout}");
    assert!(
        stdout.contains("jobs/s") && stdout.contains("min"),
        "{stdout}"
    );
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn bench_trigger_measures_creation_to_start() {
    let tmp = bench_tmp();
    let report = bench_json(
        &["trigger", "--jobs", "5"],
        &[("JOBU__WORKER__POLL_INTERVAL_SECONDS", "0.2")],
        &tmp,
    );
    assert_report(&report, "trigger", "sqlite", 5);
    assert_lag(&report["lag_ms"]);
    assert_lag(&report["each_run"][0]["details"]["observed_lag_ms"]);
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn bench_cron_creates_every_fire_time_once() {
    let tmp = bench_tmp();
    let report = bench_json(
        &["cron", "--crons", "3", "--every", "1", "--for", "3"],
        &[],
        &tmp,
    );
    let details = &report["each_run"][0]["details"];
    let expected = details["fire_times_expected"].as_u64().unwrap_or(0);
    assert!((9..=12).contains(&expected), "{report}");
    assert_report(&report, "cron", "sqlite", expected);
    assert_eq!(details["missing"], 0, "{report}");
    assert_eq!(details["duplicates"], 0, "{report}");
    assert_lag(&report["lag_ms"]);
    assert!(
        details["dispatcher_cpu_share"]
            .as_f64()
            .is_some_and(|s| (0.0..=1.0).contains(&s)),
        "{report}"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// The bench's dispatcher has a pool of its own but the workers' in-process signal, as in
/// `jobu run`: with a 30 s worker poll, fire times still start when due, not at the next poll.
#[test]
fn bench_cron_workers_hear_the_dispatcher_without_polling() {
    let tmp = bench_tmp();
    let report = bench_json(
        &["cron", "--crons", "2", "--every", "1", "--for", "3"],
        &[("JOBU__WORKER__POLL_INTERVAL_SECONDS", "30")],
        &tmp,
    );
    let details = &report["each_run"][0]["details"];
    assert_eq!(details["missing"], 0, "{report}");
    assert_eq!(details["not_started"], 0, "{report}");
    let max = report["lag_ms"]["max"].as_f64().unwrap_or(f64::MAX);
    assert!(max < 15_000.0, "a fire time waited for the poll: {report}");
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn bench_sleep_runs_attempts_side_by_side() {
    let tmp = bench_tmp();
    let report = bench_json(&["sleep", "--jobs", "20", "--seconds", "1"], &[], &tmp);
    assert_report(&report, "sleep", "sqlite", 20);
    assert_eq!(report["settings"]["concurrency"], 20, "{report}");
    assert_eq!(
        report["each_run"][0]["details"]["max_running_seen"], 20,
        "{report}"
    );
    let seconds = report["seconds"].as_f64().unwrap_or(0.0);
    assert!((1.0..10.0).contains(&seconds), "{report}");
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn bench_refuses_bad_arguments_with_exit_2() {
    for args in [
        vec!["bench", "drain", "--jobs", "0"],
        vec!["bench", "cron", "--every", "7"],
        vec!["bench", "drain", "--database-url", "sqlite::memory:"],
        vec!["bench", "drain", "--database-url", "oracle://x/y"],
    ] {
        let out = run(jobu().args(&args));
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
