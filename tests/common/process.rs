//! Real `jobu` processes for the runtime tests: the built binary, configured only through
//! `JOBU__` environment variables (as a user would), with fast leases and polls so crash
//! recovery takes seconds. Each process logs to a file that a failing test prints.

use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use jobu::entities::job_execution::ParamSource;
use jobu::store::create::NewExecution;
use jobu::store::Store;

use super::{Backend, TestDb};

pub const BIN: &str = env!("CARGO_BIN_EXE_jobu");

/// The binary the tests run: `JOBU_TEST_BIN` when set (another build, e.g. an older commit's,
/// to show that a test fails without a fix), else this tree's [`BIN`]. A test that may run
/// another build prepares its database with [`fit_schema_to_binary`].
pub fn bin() -> String {
    std::env::var("JOBU_TEST_BIN")
        .ok()
        .filter(|b| !b.trim().is_empty())
        .unwrap_or_else(|| BIN.to_string())
}

/// `url` with its host and port replaced by a proxy's (which listens on 127.0.0.1), for a
/// process whose database traffic goes through [`super::proxy::Proxy`]. TLS is turned off
/// (`sslmode`), so the proxy sees the protocol in clear and can look for a reply's bytes.
pub fn url_via_port(url: &str, port: u16) -> String {
    let mut parsed = url::Url::parse(url).expect("database url");
    parsed.set_host(Some("127.0.0.1")).expect("set host");
    parsed.set_port(Some(port)).expect("set port");
    let no_tls = match parsed.scheme() {
        "postgres" | "postgresql" => "disable",
        _ => "disabled",
    };
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| k != "sslmode" && k != "ssl-mode")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    parsed
        .query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair("sslmode", no_tls);
    parsed.to_string()
}

/// When [`bin`] is another build, makes the test database acceptable to it: an older
/// binary refuses to start on a database that has migrations it does not know, and test
/// databases are migrated by this tree. Such migrations are forgotten (their rows in
/// `seaql_migrations` deleted; their schema changes stay, which older code ignores) until
/// `<bin> migrate` accepts the database. Does nothing for this tree's binary.
pub async fn fit_schema_to_binary(db: &TestDb) {
    use sea_orm::ConnectionTrait;
    let bin = bin();
    if bin == BIN {
        return;
    }
    let config = std::env::temp_dir().join("jobu_test_empty_config");
    std::fs::create_dir_all(&config).expect("empty config dir");
    for _ in 0..20 {
        let out = tokio::process::Command::new(&bin)
            .arg("migrate")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("JOBU_CONFIG_DIR", &config)
            .env("JOBU__DATABASES__DEFAULT__URL", &db.url)
            .output()
            .await
            .expect("run <bin> migrate");
        if out.status.success() {
            return;
        }
        let text = String::from_utf8_lossy(&out.stderr);
        let unknown = text
            .split("Migration file of version '")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .filter(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        let Some(version) = unknown else {
            panic!("{bin} migrate refused the test database: {text}");
        };
        eprintln!("{bin} does not know migration {version}: forgetting it for this test");
        db.store
            .connection()
            .execute_unprepared(&format!(
                "DELETE FROM seaql_migrations WHERE version = '{version}'"
            ))
            .await
            .expect("forget a migration");
    }
    panic!("{bin} migrate still refuses the test database");
}

/// A scratch folder per test: the (empty) config folder, process logs, handler output.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(label: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "jobu_run_{label}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        std::fs::create_dir_all(dir.join("config")).expect("scratch dir");
        Scratch { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Lines of a file the shell handler appended to (empty if it does not exist yet).
    pub fn lines(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.path(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The last lines of every process log, for a failing test's output.
    pub fn dump_logs(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(40)..];
                eprintln!("===== {} =====\n{}", path.display(), tail.join("\n"));
            }
        }
    }

    pub fn remove(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One running `jobu` process; killed (SIGKILL) when dropped.
pub struct Daemon {
    pub name: String,
    child: Child,
}

/// Settings every test process gets: fast polls, a 4 s lease, quick retries, the shell
/// handler on, every-second schedules allowed.
pub fn base_env(db: &TestDb, name: &str) -> Vec<(String, String)> {
    [
        ("JOBU__DATABASES__DEFAULT__URL", db.url.as_str()),
        ("JOBU__DATABASES__DEFAULT__MAX_CONNECTIONS", "5"),
        ("JOBU__DATABASES__DEFAULT__MIN_CONNECTIONS", "0"),
        ("JOBU__DISPATCHER__MIN_CRON_INTERVAL_SECONDS", "0"),
        ("JOBU__DISPATCHER__POLL_INTERVAL_SECONDS", "1"),
        ("JOBU__WORKER__ID", name),
        ("JOBU__WORKER__POLL_INTERVAL_SECONDS", "0.5"),
        ("JOBU__WORKER__LEASE_SECONDS", "4"),
        ("JOBU__WORKER__HEARTBEAT_INTERVAL_SECONDS", "1"),
        ("JOBU__WORKER__RESCUE_INTERVAL_SECONDS", "1"),
        ("JOBU__WORKER__RETRY_BACKOFF_BASE_SECONDS", "0.2"),
        ("JOBU__WORKER__RETRY_BACKOFF_MAX_SECONDS", "1"),
        ("JOBU__HANDLERS__SHELL__ENABLED", "true"),
        ("JOBU__LOGGING__LEVEL", "info"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl Daemon {
    /// Starts `jobu <role>` with [`base_env`] plus `extra`.
    pub fn start(
        scratch: &Scratch,
        db: &TestDb,
        role: &str,
        name: &str,
        extra: &[(&str, &str)],
    ) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(scratch.path(&format!("{name}.log")))
            .expect("log file");
        let mut cmd = Command::new(bin());
        cmd.arg(role)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("JOBU_CONFIG_DIR", scratch.path("config"))
            .current_dir(&scratch.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in base_env(db, name) {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start jobu");
        Daemon {
            name: name.to_string(),
            child,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid; it has not been reaped while we hold it.
        unsafe {
            libc::kill(self.pid(), signal);
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `limit` for the process to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn stop(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        self.wait_exit(limit).await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.alive() {
            self.kill9();
        }
    }
}

/// Polls `check` every 100 ms until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `body` on each backend concurrently (each in its own database and scratch folder);
/// prints the process logs of a failing backend.
pub async fn on_backends<F, Fut>(label: &'static str, backends: &[Backend], body: F)
where
    F: Fn(TestDb, Arc<Scratch>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut runs = Vec::new();
    for &backend in backends {
        let body = body.clone();
        runs.push((
            backend,
            tokio::spawn(async move {
                let Some(db) = TestDb::create(backend).await else {
                    return;
                };
                fit_schema_to_binary(&db).await;
                let scratch = Arc::new(Scratch::new(&format!("{label}_{}", backend.name())));
                let result = tokio::spawn(body(db.clone(), scratch.clone())).await;
                if let Err(e) = result {
                    scratch.dump_logs();
                    std::panic::resume_unwind(e.into_panic());
                }
                db.cleanup().await;
                if let Ok(scratch) = Arc::try_unwrap(scratch) {
                    scratch.remove();
                }
            }),
        ));
    }
    let mut failed = Vec::new();
    for (backend, run) in runs {
        if let Err(e) = run.await {
            let message = e
                .try_into_panic()
                .ok()
                .and_then(|p| {
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                })
                .unwrap_or_default();
            failed.push(format!("{}: {message}", backend.name()));
        }
    }
    assert!(failed.is_empty(), "failed on {}", failed.join("\n"));
}

/// An ad-hoc execution due now.
pub async fn enqueue(
    store: &Store,
    handler: &str,
    params: serde_json::Value,
    max_retry: i32,
    timeout: i32,
) -> i64 {
    let now = store.now().await.expect("clock");
    let new = NewExecution {
        job_id: None,
        handler_name: handler.into(),
        scheduled_time: now,
        run_at: now,
        params: Some(params),
        param_source: ParamSource::Api,
        max_retry,
        timeout_seconds: timeout,
    };
    match store.create_if_absent(&new).await.expect("enqueue") {
        jobu::store::create::Created::New(id) => id,
        other => panic!("not created: {other:?}"),
    }
}
