//! The web console in a real browser: starts `jobu run` on a scratch SQLite file as a user
//! would, without a token configured (so it generates one in `data/admin_token` and logs a
//! console login URL), then runs `tests/browser/console.mjs` (Playwright driving Debian's
//! Chromium) against it. The script signs in with the token typed and with the login URL,
//! creates, triggers, retries, filters, edits and deletes through the pages; see its steps.
//!
//! It needs node, /usr/bin/chromium and `npm ci --prefix tests/browser` (`.ci/run` installs
//! them). Without them the test says why and passes, except under `CI=true`, where it fails.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_jobu");
const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const CHROMIUM: &str = "/usr/bin/chromium";
const HEALTH_TIMEOUT: Duration = Duration::from_secs(60);
/// The script bounds each of its waits to 30 s; this bounds the whole run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Why the browser test cannot run here, if it cannot.
fn missing_tool() -> Option<String> {
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !node.is_ok_and(|s| s.success()) {
        return Some("node is not on PATH".into());
    }
    if !Path::new(CHROMIUM).exists() {
        return Some(format!("{CHROMIUM} is missing (apt-get install chromium)"));
    }
    let playwright = Path::new(MANIFEST_DIR).join("tests/browser/node_modules/playwright-core");
    if !playwright.exists() {
        return Some(format!(
            "{} is missing (npm ci --prefix tests/browser)",
            playwright.display()
        ));
    }
    None
}

/// The daemon and its scratch folder: the daemon is killed when this drops (a failed
/// assertion included); the folder is removed only after a pass, for the logs.
struct Daemon {
    child: Child,
    scratch: PathBuf,
    passed: bool,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(self.scratch.join("jobu.log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.passed {
            let _ = std::fs::remove_dir_all(&self.scratch);
        } else {
            eprintln!("scratch folder kept: {}", self.scratch.display());
        }
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// `GET /health` over plain HTTP/1.0; true on a 200.
fn healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200")
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn console_works_in_a_real_browser() {
    if let Some(reason) = missing_tool() {
        if is_ci() {
            panic!("the browser test cannot run under CI=true: {reason}");
        }
        eprintln!("skipping the console browser test: {reason}");
        return;
    }

    let id = uuid::Uuid::new_v4().simple().to_string();
    let scratch = std::env::temp_dir().join(format!("jobu_console_{}", &id[..8]));
    std::fs::create_dir_all(scratch.join("config")).expect("scratch dir");
    let port = free_port();
    let log = std::fs::File::create(scratch.join("jobu.log")).expect("log file");
    let child = Command::new(BIN)
        .arg("run")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("JOBU_CONFIG_DIR", scratch.join("config"))
        .env(
            "JOBU__DATABASES__DEFAULT__URL",
            format!("sqlite://{}/jobu.db?mode=rwc", scratch.display()),
        )
        .env("JOBU__ADMIN__PORT", port.to_string())
        .env("JOBU__HANDLERS__SHELL__ENABLED", "true")
        .env("JOBU__WORKER__POLL_INTERVAL_SECONDS", "0.5")
        .env("JOBU__WORKER__HEARTBEAT_INTERVAL_SECONDS", "1")
        .env("JOBU__WORKER__LEASE_SECONDS", "4")
        .env("JOBU__DISPATCHER__MIN_CRON_INTERVAL_SECONDS", "0")
        .env("JOBU__LOGGING__LEVEL", "info")
        .current_dir(&scratch)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("start jobu run");
    let mut daemon = Daemon {
        child,
        scratch: scratch.clone(),
        passed: false,
    };

    let deadline = Instant::now() + HEALTH_TIMEOUT;
    while !healthy(port) {
        if let Ok(Some(status)) = daemon.child.try_wait() {
            panic!(
                "jobu run exited ({status}) before serving /health:\n{}",
                tail(&daemon.log(), 60)
            );
        }
        assert!(
            Instant::now() < deadline,
            "jobu run did not answer /health on port {port} within {HEALTH_TIMEOUT:?}:\n{}",
            tail(&daemon.log(), 60)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The token it generated; the log names the console and the file, never the token.
    let token = std::fs::read_to_string(scratch.join("data/admin_token"))
        .unwrap_or_else(|e| panic!("no generated token file: {e}\n{}", tail(&daemon.log(), 40)));
    let token = token.trim_end().to_string();
    let log = daemon.log();
    assert!(
        log.contains(&format!("open the console at http://127.0.0.1:{port}/ "))
            && log.contains("data/admin_token"),
        "the log must name the console and the token file:\n{}",
        tail(&log, 40)
    );
    assert!(!log.contains(&token), "the token must not be logged");
    // The login URL jobu prints at a terminal (not in its log).
    let login_url = format!("http://127.0.0.1:{port}/?token={token}");

    let started = Instant::now();
    let out_path = scratch.join("console.out");
    let out = std::fs::File::create(&out_path).expect("script output file");
    let mut script = Command::new("node")
        .arg("tests/browser/console.mjs")
        .arg(format!("http://127.0.0.1:{port}"))
        .arg(&token)
        .arg(&scratch)
        .arg(&login_url)
        .current_dir(MANIFEST_DIR)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("script output file"))
        .stderr(out)
        .spawn()
        .expect("start node");
    let status = loop {
        if let Some(status) = script.try_wait().expect("wait for node") {
            break Some(status);
        }
        if started.elapsed() > SCRIPT_TIMEOUT {
            let _ = script.kill();
            let _ = script.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    println!("{output}");
    let ok = status.is_some_and(|s| s.success());
    assert!(
        ok,
        "the console script {} after {:.1} s:\n{output}\n===== jobu log (last lines) =====\n{}",
        status.map_or_else(
            || format!("was killed after {SCRIPT_TIMEOUT:?}"),
            |s| format!("failed ({s})")
        ),
        started.elapsed().as_secs_f64(),
        tail(&daemon.log(), 80),
    );
    daemon.passed = true;
}
