//! systemd's notify protocol as systemd sees it: the real `jobu` binary started with
//! `NOTIFY_SOCKET` naming a unix datagram socket the test binds. `READY=1` (with the roles in
//! `STATUS=`) comes once the roles are up (`/health` answers at once), `STOPPING=1` follows
//! SIGTERM, and the process exits 0; shell commands do not inherit `NOTIFY_SOCKET`; a
//! process that cannot reach its database never reports ready.

mod common;

use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use tokio::net::UnixDatagram;

use common::admin::{launch, tail, Api, Launched};
use common::process::{enqueue, eventually};
use common::{Backend, TestDb};

/// Longer than a start takes on a loaded machine (connect, migrate, bind).
const READY_LIMIT: Duration = Duration::from_secs(30);

/// The socket systemd would listen on, bound in a folder of the test's own.
struct NotifySocket {
    socket: UnixDatagram,
    path: String,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket {
            socket,
            path: path.display().to_string(),
            _dir: dir,
        }
    }

    /// The next datagram, or `None` when none comes within `limit`.
    async fn next(&self, limit: Duration) -> Option<String> {
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(limit, self.socket.recv(&mut buf)).await {
            Ok(Ok(n)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Ok(Err(e)) => panic!("reading the notify socket: {e}"),
            Err(_) => None,
        }
    }

    /// Panics with the process log when no datagram comes within `limit`.
    async fn expect(&self, launched: &Launched, what: &str, limit: Duration) -> Vec<String> {
        match self.next(limit).await {
            Some(text) => text.lines().map(str::to_string).collect(),
            None => panic!(
                "no {what} notification within {limit:?}; the process log:\n{}",
                tail(&launched.log(), 60)
            ),
        }
    }
}

fn has(lines: &[String], line: &str) -> bool {
    lines.iter().any(|l| l == line)
}

/// `jobu run`: ready once /health answers, a shell command without the variable, stopping
/// after SIGTERM (with the stop budget), exit 0, nothing more.
async fn ready_then_stopping(db: TestDb) {
    let notify = NotifySocket::bind();
    let mut launched = launch(
        &db,
        "run",
        "notify",
        &[("NOTIFY_SOCKET", notify.path.as_str())],
    );
    let ready = notify.expect(&launched, "READY=1", READY_LIMIT).await;
    // The first message, and only once everything is up: /health answers at the first try.
    let api = Api::new(launched.port);
    let health = api
        .try_send(Method::GET, "/health", None, None)
        .await
        .map(|r| r.status);
    assert!(
        matches!(health, Ok(200)),
        "READY=1 came before GET /health answered ({health:?}): {ready:?}"
    );
    assert!(has(&ready, "READY=1"), "{ready:?}");
    let status = format!(
        "STATUS=running dispatcher, worker pool, rescuer, admin API on 127.0.0.1:{}",
        launched.port
    );
    assert!(has(&ready, &status), "{ready:?} lacks {status}");

    // The variable was taken out of jobu's environment, so commands cannot notify.
    let out = launched.scratch.path("env.txt");
    // Written whole, then renamed, so the test never reads half of it.
    let command = format!("env > '{0}.part' && mv '{0}.part' '{0}'", out.display());
    enqueue(&db.store, "shell", json!({ "command": command }), 0, 30).await;
    let written = eventually(READY_LIMIT, || async {
        std::fs::read_to_string(&out).is_ok_and(|t| t.contains("JOBU_EXECUTION_ID="))
    })
    .await;
    assert!(
        written,
        "the shell job did not run:\n{}",
        tail(&launched.log(), 60)
    );
    let env = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        !env.lines().any(|l| l.starts_with("NOTIFY_SOCKET=")),
        "a shell command inherited NOTIFY_SOCKET:\n{env}"
    );

    launched.daemon.signal(libc::SIGTERM);
    let stopping = notify
        .expect(&launched, "STOPPING=1", Duration::from_secs(10))
        .await;
    assert!(has(&stopping, "STOPPING=1"), "{stopping:?}");
    // worker.shutdown_timeout_seconds (30) plus the 15 s margin.
    assert!(
        has(&stopping, "EXTEND_TIMEOUT_USEC=45000000"),
        "{stopping:?}"
    );
    let exit = launched.daemon.wait_exit(Duration::from_secs(40)).await;
    assert!(
        exit.is_some_and(|s| s.success()),
        "exit after SIGTERM: {exit:?}; log:\n{}",
        tail(&launched.log(), 60)
    );
    let extra = notify.next(Duration::from_millis(200)).await;
    assert_eq!(extra, None, "a notification after STOPPING=1");
    remove(&launched.scratch.dir);
}

backend_test!(run_is_ready_then_stopping, |db| async move {
    ready_then_stopping(db).await
});

/// The split roles name what they run; neither serves HTTP here.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_roles_name_their_services() {
    let Some(db) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    for (role, status) in [
        ("dispatcher", "STATUS=running dispatcher, rescuer"),
        ("worker", "STATUS=running worker pool, rescuer"),
    ] {
        let notify = NotifySocket::bind();
        let mut launched = launch(
            &db,
            role,
            &format!("notify-{role}"),
            &[("NOTIFY_SOCKET", notify.path.as_str())],
        );
        let ready = notify.expect(&launched, "READY=1", READY_LIMIT).await;
        assert!(
            has(&ready, "READY=1") && has(&ready, status),
            "{role}: {ready:?}"
        );
        launched.daemon.signal(libc::SIGTERM);
        let stopping = notify
            .expect(&launched, "STOPPING=1", Duration::from_secs(10))
            .await;
        assert!(has(&stopping, "STOPPING=1"), "{role}: {stopping:?}");
        let exit = launched.daemon.wait_exit(Duration::from_secs(40)).await;
        assert!(exit.is_some_and(|s| s.success()), "{role}: {exit:?}");
        remove(&launched.scratch.dir);
    }
    db.cleanup().await;
}

/// A database nobody answers for: the start fails (exit 1) and READY=1 is never sent, so
/// systemd sees a failed start instead of a service that is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_ready_without_the_database() {
    let Some(db) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    let nobody = format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        common::admin::free_port()
    );
    let notify = NotifySocket::bind();
    let mut launched = launch(
        &db,
        "run",
        "notify-nodb",
        &[
            ("NOTIFY_SOCKET", notify.path.as_str()),
            ("JOBU__DATABASES__DEFAULT__URL", nobody.as_str()),
            ("JOBU__DATABASES__DEFAULT__CONNECT_TIMEOUT_SECONDS", "2"),
            ("JOBU__DATABASES__DEFAULT__ACQUIRE_TIMEOUT_SECONDS", "2"),
        ],
    );
    let exit = launched.daemon.wait_exit(READY_LIMIT).await;
    assert_eq!(
        exit.and_then(|s| s.code()),
        Some(1),
        "jobu without its database: {exit:?}; log:\n{}",
        tail(&launched.log(), 60)
    );
    let message = notify.next(Duration::from_millis(200)).await;
    assert_eq!(
        message, None,
        "a notification from a process that never started"
    );
    remove(&launched.scratch.dir);
    db.cleanup().await;
}

fn remove(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}
