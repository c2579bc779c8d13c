//! `jobu health`, as a container's `HEALTHCHECK` runs it, on every backend: exit 0 while the
//! probed role is up, 1 once it is down (admin stopped, worker gone, database unreachable),
//! 2 for bad configuration or arguments.

mod common;

use std::process::Command;
use std::time::Duration;

use common::admin::free_port;
use common::process::{bin, eventually, Daemon, Scratch};
use common::TestDb;

/// `jobu health ARGS` with the settings a process of `db` has: its exit code and line.
fn health(scratch: &Scratch, db: &TestDb, port: u16, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin())
        .arg("health")
        .args(args)
        .env_clear()
        .env("JOBU_CONFIG_DIR", scratch.path("config"))
        .env("JOBU__DATABASES__DEFAULT__URL", &db.url)
        .env("JOBU__ADMIN__PORT", port.to_string())
        .env("JOBU__ADMIN__PRESENCE_INTERVAL_SECONDS", "1")
        .current_dir(&scratch.dir)
        .output()
        .expect("run jobu health");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

async fn wait_for(
    scratch: &Scratch,
    db: &TestDb,
    port: u16,
    args: &[&str],
    code: i32,
) -> (i32, String) {
    let mut last = (0, String::new());
    eventually(Duration::from_secs(20), || {
        last = health(scratch, db, port, args);
        let ok = last.0 == code;
        async move { ok }
    })
    .await;
    last
}

backend_test!(exit_codes_follow_the_roles, |db: TestDb| async move {
    let scratch = Scratch::new("health");
    let port = free_port();
    let port_text = port.to_string();
    let env = [
        ("JOBU__ADMIN__PORT", port_text.as_str()),
        ("JOBU__ADMIN__PRESENCE_INTERVAL_SECONDS", "1"),
    ];

    // Nothing runs: the admin is down, no worker beats; the database answers.
    let (code, line) = health(&scratch, &db, port, &[]);
    assert_eq!(code, 1, "{line}");
    assert!(line.starts_with("unhealthy: "), "{line}");
    let (code, line) = health(&scratch, &db, port, &["--role", "worker"]);
    assert_eq!(code, 1, "{line}");
    let (code, line) = health(&scratch, &db, port, &["--role", "database"]);
    assert_eq!(code, 0, "{line}");

    // A worker and an admin process: each probe passes for its role only.
    let mut worker = Daemon::start(&scratch, &db, "worker", "health-worker", &env);
    let mut admin = Daemon::start(&scratch, &db, "admin", "health-admin", &env);
    let (code, line) = wait_for(&scratch, &db, port, &["--role", "worker"], 0).await;
    assert_eq!(code, 0, "worker: {line}");
    assert!(line.contains("health-worker"), "{line}");
    let (code, line) = wait_for(&scratch, &db, port, &[], 0).await;
    assert_eq!(code, 0, "admin: {line}");
    let (code, line) = health(&scratch, &db, port, &["--role", "dispatcher"]);
    assert_eq!(code, 1, "no dispatcher runs: {line}");

    // Stopped: unhealthy again (a clean stop removes the presence row at once).
    admin.stop(Duration::from_secs(20)).await;
    worker.stop(Duration::from_secs(40)).await;
    let (code, line) = health(&scratch, &db, port, &["--role", "admin"]);
    assert_eq!(code, 1, "admin stopped: {line}");
    let (code, line) = wait_for(&scratch, &db, port, &["--role", "worker"], 1).await;
    assert_eq!(code, 1, "worker stopped: {line}");
    scratch.remove();
});

#[test]
fn unreachable_database_and_bad_input() {
    let scratch = Scratch::new("health-bad");
    let run = |env: &[(&str, &str)], args: &[&str]| {
        let out = Command::new(bin())
            .arg("health")
            .args(args)
            .env_clear()
            .env("JOBU_CONFIG_DIR", scratch.path("config"))
            .envs(env.iter().copied())
            .current_dir(&scratch.dir)
            .output()
            .expect("run jobu health");
        out.status.code()
    };
    // Nothing listens on port 1: the database probe fails within its timeout.
    let down = [(
        "JOBU__DATABASES__DEFAULT__URL",
        "postgres://jobu@127.0.0.1:1/jobu",
    )];
    assert_eq!(
        run(&down, &["--role", "database", "--timeout", "3"]),
        Some(1)
    );
    assert_eq!(run(&[], &["--role", "bogus"]), Some(2));
    assert_eq!(run(&[], &["--timeout", "0"]), Some(2));
    assert_eq!(run(&[("JOBU__ADMIN__PORT", "x")], &[]), Some(2));
    scratch.remove();
}
