//! The `shell` handler: runs a command on the worker (Linux). Off unless
//! `handlers.shell.enabled` is set.
//!
//! Params, a JSON object (other keys are refused, to catch typos):
//! - `command` (required): a string, run as `/bin/sh -c <string>`, or a non-empty array of
//!   strings, run directly as the argv (no shell; the program is looked up in `PATH`).
//! - `env`: an object of extra environment variables, string values only.
//! - `cwd`: the working directory (default: the worker's).
//!
//! Environment: the worker's own environment without jobu's settings (variables starting
//! with `JOBU_`, which may hold a database password), plus `env`, plus these, which win over `env`: `JOBU_EXECUTION_ID`, `JOBU_JOB_ID`
//! (empty for ad-hoc runs), `JOBU_SCHEDULED_TIME` (RFC 3339 UTC, e.g.
//! `2024-01-02T03:04:05Z`), `JOBU_ATTEMPT` (1 for the first attempt), `JOBU_HANDLER`,
//! `JOBU_WORKER_ID`; for an execution a chain started (`on_success` / `on_failure` of another
//! cron) also `JOBU_PARENT_EXECUTION_ID`, `JOBU_PARENT_STATUS` (`SUCCESS`, `FAILED` or
//! `TIMEOUT`), `JOBU_PARENT_RESULT` (the parent's result as JSON text, e.g. its
//! `{"exit_code": 0, "stdout": …}`) and `JOBU_PARENT_ERROR` (a failed parent's error message),
//! each empty when there is no parent, or no such value (a parent deleted since).
//!
//! Output: stdin is `/dev/null`; only the last `handlers.shell.output_tail_bytes` bytes of
//! stdout and of stderr are kept (a leading `…` marks a cut). Exit code 0 gives the result
//! `{"exit_code": 0, "stdout": "…", "stderr": "…"}`; any other exit code, a signal, or a
//! failure to start fails the attempt (it is retried while retries remain) with a message
//! holding the exit code or signal number and the stderr tail.
//!
//! Processes: the command runs in a process group of its own. When the attempt is stopped
//! (timeout, cancel, worker shutdown) the whole group is killed with SIGKILL; so is every
//! running group when the worker is told to exit immediately. If the worker process dies
//! abruptly, the kernel sends SIGKILL to the direct child only (`PR_SET_PDEATHSIG`);
//! processes that it started survive in that case. Processes that leave the group (`setsid`,
//! `setpgid`) are never killed. After a normal exit the group is left alone, so a command
//! may start a daemon on purpose; output that such processes write after the command exits
//! is collected for at most half a second, then the pipes are closed and further writes to
//! them fail (EPIPE or SIGPIPE), so redirect a daemon's output.

use std::collections::BTreeSet;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::{async_trait, json_type, ExecutionContext, Handler, HandlerError, HandlerResult};
use crate::config::ShellSettings;

/// Name of the [`Shell`] handler.
pub const NAME: &str = "shell";

/// The shell a string `command` runs in.
const SHELL: &str = "/bin/sh";

/// After the command exits, how long output from processes it left running is still read.
const OUTPUT_GRACE_AFTER_EXIT: Duration = Duration::from_millis(500);

/// Safety net for a missed SIGCHLD: the child's status is checked at least this often.
const REAP_POLL_INTERVAL: Duration = Duration::from_secs(1);

const READ_CHUNK_BYTES: usize = 8192;

/// Marks output whose beginning was cut.
const TRUNCATION_MARK: &str = "…";

const PARAM_KEYS: [&str; 3] = ["command", "env", "cwd"];

/// Runs a command from the execution's params; see the [module docs](crate::handlers::shell)
/// for the params, the environment, the result and the kill semantics.
#[derive(Debug, Clone)]
pub struct Shell {
    settings: ShellSettings,
}

impl Shell {
    /// Uses `settings.output_tail_bytes`; `settings.enabled` is the registry's concern.
    pub fn new(settings: ShellSettings) -> Self {
        Shell { settings }
    }
}

#[async_trait]
impl Handler for Shell {
    async fn run(&self, params: Value, ctx: ExecutionContext) -> HandlerResult {
        let params = ShellParams::parse(&params).map_err(HandlerError::invalid_params)?;
        run_command(&params, &ctx, self.settings.output_tail_bytes).await
    }

    fn validate_params(&self, params: &Value) -> Result<(), String> {
        ShellParams::parse(params).map(|_| ())
    }
}

/// Sends SIGKILL to the process group of every command the shell handler is running in this
/// process, and returns how many groups were signalled. For a worker that must exit at once
/// (a second shutdown signal): the attempts' futures will not be dropped in time to do it.
pub fn kill_all_process_groups() -> usize {
    let groups = live_groups();
    for &pgid in groups.iter() {
        // SAFETY: kill(2) has no memory-safety preconditions. Every registered group's leader
        // is still unreaped (an entry is removed under this lock, in the same critical
        // section that reaps the leader or before the leader is handed to tokio to reap), so
        // `pgid` cannot have been reused by an unrelated process.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
    groups.len()
}

/// Process groups (= pids of their leaders, our direct children) of running commands.
/// Invariant: a group is in the set only while its leader has not been reaped.
static LIVE_GROUPS: Mutex<BTreeSet<libc::pid_t>> = Mutex::new(BTreeSet::new());

fn live_groups() -> MutexGuard<'static, BTreeSet<libc::pid_t>> {
    // The set stays consistent even if a holder panicked: every critical section is a single
    // insert, remove or iteration.
    LIVE_GROUPS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CommandSpec {
    /// Run by `/bin/sh -c`.
    Script(String),
    /// Non-empty, with a non-empty program.
    Argv(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ShellParams {
    command: CommandSpec,
    env: Vec<(String, String)>,
    cwd: Option<String>,
}

impl ShellParams {
    fn parse(params: &Value) -> Result<Self, String> {
        let object = match params {
            Value::Object(object) => object,
            Value::Null => return Err("`command` is required".to_string()),
            other => {
                return Err(format!(
                    "params must be an object with a `command`, got {}",
                    json_type(other)
                ))
            }
        };
        if let Some(key) = object.keys().find(|k| !PARAM_KEYS.contains(&k.as_str())) {
            return Err(format!(
                "unknown key {key:?} (expected `command`, `env`, `cwd`)"
            ));
        }
        Ok(ShellParams {
            command: parse_command(object.get("command"))?,
            env: parse_env(object.get("env"))?,
            cwd: parse_cwd(object.get("cwd"))?,
        })
    }

    /// The program to execute and its arguments.
    fn program_and_args(&self) -> (&str, Vec<&str>) {
        match &self.command {
            CommandSpec::Script(script) => (SHELL, vec!["-c", script.as_str()]),
            CommandSpec::Argv(argv) => match argv.split_first() {
                Some((program, args)) => {
                    (program.as_str(), args.iter().map(String::as_str).collect())
                }
                // Refused by `parse`; an empty program fails to start with a clear error.
                None => ("", Vec::new()),
            },
        }
    }
}

fn parse_command(value: Option<&Value>) -> Result<CommandSpec, String> {
    match value {
        None | Some(Value::Null) => Err("`command` is required".to_string()),
        Some(Value::String(script)) => {
            if script.trim().is_empty() {
                return Err("`command` must not be empty".to_string());
            }
            check_no_nul("`command`", script)?;
            Ok(CommandSpec::Script(script.clone()))
        }
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err("`command` must not be an empty array".to_string());
            }
            let argv = items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(arg) => {
                        check_no_nul(&format!("`command[{i}]`"), arg)?;
                        Ok(arg.clone())
                    }
                    other => Err(format!(
                        "`command[{i}]` must be a string, got {}",
                        json_type(other)
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if argv.first().is_none_or(String::is_empty) {
                return Err("`command[0]` (the program) must not be empty".to_string());
            }
            Ok(CommandSpec::Argv(argv))
        }
        Some(other) => Err(format!(
            "`command` must be a string or an array of strings, got {}",
            json_type(other)
        )),
    }
}

fn parse_env(value: Option<&Value>) -> Result<Vec<(String, String)>, String> {
    let map: &Map<String, Value> = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(format!(
                "`env` must be an object of strings, got {}",
                json_type(other)
            ))
        }
    };
    map.iter()
        .map(|(key, value)| {
            if key.is_empty() {
                return Err("`env` keys must not be empty".to_string());
            }
            if key.contains('=') || key.contains('\0') {
                return Err(format!(
                    "`env` key {key:?} must not contain `=` or NUL characters"
                ));
            }
            match value {
                Value::String(value) => {
                    check_no_nul(&format!("`env.{key}`"), value)?;
                    Ok((key.clone(), value.clone()))
                }
                other => Err(format!(
                    "`env.{key}` must be a string, got {}",
                    json_type(other)
                )),
            }
        })
        .collect()
}

fn parse_cwd(value: Option<&Value>) -> Result<Option<String>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(cwd)) => {
            if cwd.is_empty() {
                return Err("`cwd` must not be empty".to_string());
            }
            check_no_nul("`cwd`", cwd)?;
            Ok(Some(cwd.clone()))
        }
        Some(other) => Err(format!("`cwd` must be a string, got {}", json_type(other))),
    }
}

fn check_no_nul(what: &str, value: &str) -> Result<(), String> {
    if value.contains('\0') {
        Err(format!("{what} must not contain NUL characters"))
    } else {
        Ok(())
    }
}

/// `JOBU_SCHEDULED_TIME`: whole seconds unless the time has sub-second digits.
fn format_scheduled_time(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The variables jobu sets for the child; applied after the user's `env`, so they win.
fn jobu_env(ctx: &ExecutionContext) -> [(&'static str, String); 10] {
    [
        ("JOBU_EXECUTION_ID", ctx.execution_id.to_string()),
        (
            "JOBU_JOB_ID",
            ctx.job_id.map(|id| id.to_string()).unwrap_or_default(),
        ),
        (
            "JOBU_SCHEDULED_TIME",
            format_scheduled_time(&ctx.scheduled_time),
        ),
        ("JOBU_ATTEMPT", ctx.attempt.to_string()),
        ("JOBU_HANDLER", ctx.handler_name.clone()),
        ("JOBU_WORKER_ID", ctx.worker_id.clone()),
        (
            "JOBU_PARENT_EXECUTION_ID",
            ctx.parent_execution_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
        ),
        (
            "JOBU_PARENT_STATUS",
            ctx.parent_status
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
        ),
        (
            "JOBU_PARENT_RESULT",
            ctx.parent_result
                .as_ref()
                .map(|r| r.to_string())
                .unwrap_or_default(),
        ),
        (
            "JOBU_PARENT_ERROR",
            ctx.parent_error.clone().unwrap_or_default(),
        ),
    ]
}

async fn run_command(
    params: &ShellParams,
    ctx: &ExecutionContext,
    tail_bytes: usize,
) -> HandlerResult {
    let (program, args) = params.program_and_args();

    // A missing cwd would otherwise surface as the same ENOENT as a missing program.
    if let Some(cwd) = &params.cwd {
        match tokio::fs::metadata(cwd).await {
            Ok(metadata) if metadata.is_dir() => {}
            Ok(_) => return Err(HandlerError::new(format!("cwd {cwd:?} is not a directory"))),
            Err(err) => return Err(HandlerError::new(format!("cwd {cwd:?}: {err}"))),
        }
    }

    let mut command = Command::new(program);
    // jobu's own settings (a database URL may hold a password) are not the command's business.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("JOBU_") {
            command.env_remove(&key);
        }
    }
    command
        .args(&args)
        .envs(params.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .envs(jobu_env(ctx))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Backs up the group kill in `RunningChild::drop`, and hands the dropped child to
        // tokio, which reaps it in the background.
        .kill_on_drop(true)
        .process_group(0);
    if let Some(cwd) = &params.cwd {
        command.current_dir(cwd);
    }
    set_parent_death_signal(&mut command);

    let spawned = command.spawn().map_err(|err| {
        let in_cwd = params
            .cwd
            .as_ref()
            .map(|cwd| format!(" in {cwd:?}"))
            .unwrap_or_default();
        HandlerError::new(format!("failed to start {program:?}{in_cwd}: {err}"))
    })?;
    // From here on, dropping `running` (this future being dropped) kills the process group.
    let mut running = RunningChild::register(spawned)
        .map_err(|err| HandlerError::new(format!("failed to start {program:?}: {err}")))?;
    let (Some(stdout), Some(stderr)) = (running.child.stdout.take(), running.child.stderr.take())
    else {
        return Err(HandlerError::new(format!(
            "failed to start {program:?}: no output pipes"
        )));
    };

    let mut stdout_tail = TailBuffer::new(tail_bytes);
    let mut stderr_tail = TailBuffer::new(tail_bytes);
    let status = {
        let mut output = std::pin::pin!(async {
            tokio::join!(
                drain(stdout, &mut stdout_tail),
                drain(stderr, &mut stderr_tail)
            )
        });
        tokio::select! {
            status = running.wait() => {
                // Processes the command left running may hold the pipes open indefinitely:
                // read what is there, but do not wait for them.
                let _ = tokio::time::timeout(OUTPUT_GRACE_AFTER_EXIT, &mut output).await;
                status
            }
            _ = &mut output => running.wait().await,
        }
        // `output` is dropped here, closing our ends of the pipes.
    };
    let status = status
        .map_err(|err| HandlerError::new(format!("waiting for {program:?} failed: {err}")))?;

    let stdout = stdout_tail.into_string();
    let stderr = stderr_tail.into_string();
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(json!({ "exit_code": 0, "stdout": stdout, "stderr": stderr })),
        (Some(code), _) => Err(HandlerError::new(format!(
            "command exited with code {code}: {}",
            describe_output(&stdout, &stderr)
        ))),
        (None, Some(signal)) => Err(HandlerError::new(format!(
            "command was killed by signal {signal}{}: {}",
            signal_name(signal)
                .map(|name| format!(" ({name})"))
                .unwrap_or_default(),
            describe_output(&stdout, &stderr)
        ))),
        (None, None) => Err(HandlerError::new(format!(
            "command ended with {status}: {}",
            describe_output(&stdout, &stderr)
        ))),
    }
}

/// The stderr tail for an error message; the stdout tail when stderr is empty.
fn describe_output(stdout: &str, stderr: &str) -> String {
    let stderr = stderr.trim_end();
    let stdout = stdout.trim_end();
    if !stderr.is_empty() {
        stderr.to_string()
    } else if !stdout.is_empty() {
        format!("(stderr empty) stdout: {stdout}")
    } else {
        "(no output)".to_string()
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        _ => return None,
    })
}

/// Asks the kernel to SIGKILL the child when its parent dies.
///
/// Linux ties this to the *thread* that forked the child: the signal is sent when that thread
/// exits. Tokio runtime worker threads live as long as the runtime, so the handler must be
/// polled on one (not inside `spawn_blocking` or `block_in_place`, whose threads come and go).
/// Only the direct child is covered: the setting is cleared in processes it forks, which are
/// covered by the process group kill instead.
fn set_parent_death_signal(command: &mut Command) {
    // Captured before the fork: pid_t is i32 and Linux pids are at most 2^22.
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // work is allowed. It makes two system calls (prctl, getppid) and builds `io::Error`s
    // from raw errno values, which neither allocates nor takes locks. It captures one integer.
    unsafe {
        command.pre_exec(move || {
            // prctl is variadic and reads an unsigned long: pass exactly that.
            let signal = libc::SIGKILL as libc::c_ulong;
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal) == -1 {
                return Err(io::Error::last_os_error());
            }
            // The parent died between fork and prctl: no signal will come, so give up.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// A spawned child leading its own process group. Until the child is reaped, it is listed in
/// [`LIVE_GROUPS`], and dropping this kills the whole group.
struct RunningChild {
    child: Child,
    /// Equal to the child's pid (`process_group(0)`).
    pgid: libc::pid_t,
    reaped: bool,
}

impl RunningChild {
    fn register(child: Child) -> io::Result<Self> {
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("the child has no pid"))?;
        let pgid = libc::pid_t::try_from(pid)
            .map_err(|_| io::Error::other(format!("pid {pid} out of range")))?;
        live_groups().insert(pgid);
        Ok(RunningChild {
            child,
            pgid,
            reaped: false,
        })
    }

    /// Waits for the child to exit and reaps it.
    ///
    /// Not `Child::wait`: reaping has to happen under the [`LIVE_GROUPS`] lock, so that
    /// [`kill_all_process_groups`] never signals a group whose leader's pid may have been
    /// reused. So this polls `try_wait` on every SIGCHLD (and every second, as a safety net).
    async fn wait(&mut self) -> io::Result<ExitStatus> {
        // Created before the first check, so an exit right after it still wakes us.
        let mut sigchld: Option<Signal> = signal(SignalKind::child()).ok();
        loop {
            if let Some(status) = self.try_reap()? {
                return Ok(status);
            }
            match &mut sigchld {
                Some(stream) => {
                    if let Ok(None) = tokio::time::timeout(REAP_POLL_INTERVAL, stream.recv()).await
                    {
                        // The signal driver is gone: fall back to polling.
                        sigchld = None;
                    }
                }
                None => tokio::time::sleep(REAP_POLL_INTERVAL).await,
            }
        }
    }

    fn try_reap(&mut self) -> io::Result<Option<ExitStatus>> {
        let mut groups = live_groups();
        let status = self.child.try_wait()?;
        if status.is_some() {
            self.reaped = true;
            groups.remove(&self.pgid);
        }
        Ok(status)
    }
}

impl Drop for RunningChild {
    fn drop(&mut self) {
        if self.reaped {
            // The pid may belong to someone else by now: never signal it.
            return;
        }
        let mut groups = live_groups();
        // SAFETY: kill(2) has no memory-safety preconditions. The group leader (our child) is
        // not reaped yet, so its pid, which is the group id, cannot have been reused. Errors
        // (e.g. everything already gone) are ignored: this is best effort.
        unsafe {
            libc::kill(-self.pgid, libc::SIGKILL);
        }
        groups.remove(&self.pgid);
        // `self.child` is dropped next: `kill_on_drop` signals the leader again (harmless) and
        // tokio reaps it in the background.
    }
}

/// Reads `reader` to the end (or to the first error), keeping its tail.
async fn drain<R: AsyncRead + Unpin>(mut reader: R, tail: &mut TailBuffer) {
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => tail.push(&chunk[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

/// The last `limit` bytes of a stream (also the `http` handler's body tail).
#[derive(Debug)]
pub(super) struct TailBuffer {
    bytes: std::collections::VecDeque<u8>,
    limit: usize,
    truncated: bool,
}

impl TailBuffer {
    pub(super) fn new(limit: usize) -> Self {
        TailBuffer {
            bytes: std::collections::VecDeque::new(),
            limit,
            truncated: false,
        }
    }

    pub(super) fn push(&mut self, data: &[u8]) {
        let keep_new = data.len().min(self.limit);
        let overflow = (self.bytes.len() + keep_new).saturating_sub(self.limit);
        if overflow > 0 || keep_new < data.len() {
            self.truncated = true;
        }
        self.bytes.drain(..overflow);
        self.bytes.extend(&data[data.len() - keep_new..]);
    }

    /// Lossy UTF-8, with [`TRUNCATION_MARK`] in front if the beginning was cut.
    pub(super) fn into_string(self) -> String {
        let bytes = Vec::from(self.bytes);
        if !self.truncated {
            return String::from_utf8_lossy(&bytes).into_owned();
        }
        // Skip a character the cut split (at most 3 continuation bytes) rather than show U+FFFD.
        let start = bytes
            .iter()
            .take(3)
            .take_while(|&&b| b & 0b1100_0000 == 0b1000_0000)
            .count();
        format!(
            "{TRUNCATION_MARK}{}",
            String::from_utf8_lossy(&bytes[start..])
        )
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use chrono::TimeZone;
    use tokio::sync::RwLock;

    use super::*;

    /// `kill_all_process_groups` kills every test's children: that test takes this for
    /// writing, the other spawning tests for reading.
    static SPAWN_LOCK: RwLock<()> = RwLock::const_new(());

    fn ctx() -> ExecutionContext {
        ExecutionContext {
            execution_id: 42,
            job_id: Some(7),
            handler_name: NAME.to_string(),
            scheduled_time: Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap(),
            attempt: 2,
            max_attempts: 3,
            timeout: Duration::from_secs(60),
            worker_id: "worker-test-1".to_string(),
            transactions: None,
            parent_execution_id: None,
            parent_status: None,
            parent_result: None,
            parent_error: None,
        }
    }

    fn shell(output_tail_bytes: usize) -> Shell {
        Shell::new(ShellSettings {
            enabled: true,
            output_tail_bytes,
        })
    }

    async fn run(params: Value) -> HandlerResult {
        let _guard = SPAWN_LOCK.read().await;
        shell(ShellSettings::DEFAULT_OUTPUT_TAIL_BYTES)
            .run(params, ctx())
            .await
    }

    fn ok_stdout(result: HandlerResult) -> String {
        let value = result.unwrap();
        assert_eq!(value["exit_code"], json!(0), "{value}");
        value["stdout"].as_str().unwrap().to_string()
    }

    fn err_message(result: HandlerResult) -> String {
        result.unwrap_err().message().to_string()
    }

    /// A fresh empty directory.
    fn temp_dir(name: &str) -> PathBuf {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "jobu-shell-test-{}-{name}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// `Some(state)` from /proc/PID/stat (`'Z'` for a zombie), `None` when there is no such
    /// process.
    fn process_state(pid: i32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after_comm = &stat[stat.rfind(')')? + 1..];
        after_comm.trim_start().chars().next()
    }

    /// Waits up to 2 s for `pid` to be gone or a zombie.
    async fn assert_dies(pid: i32, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match process_state(pid) {
                None | Some('Z') => return,
                Some(state) if Instant::now() >= deadline => {
                    panic!("{what} (pid {pid}) still alive, state {state}")
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Waits up to 5 s for `path` and returns the pids it holds.
    async fn read_pids(path: &Path) -> Vec<i32> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(text) = std::fs::read_to_string(path) {
                return text
                    .split_whitespace()
                    .map(|pid| pid.parse().unwrap())
                    .collect();
            }
            assert!(
                Instant::now() < deadline,
                "{} never appeared",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A script that starts `sleep 30` in the background, writes "SHELL_PID SLEEP_PID" to
    /// `pid_file` (atomically) and waits.
    fn background_sleep_script(pid_file: &Path) -> String {
        let pid_file = pid_file.display();
        format!(
            "sleep 30 & echo \"$$ $!\" > '{pid_file}.tmp' && mv '{pid_file}.tmp' '{pid_file}'; wait"
        )
    }

    #[tokio::test]
    async fn string_command_captures_stdout_and_stderr() {
        let result = run(json!({"command": "echo hello; echo oops >&2"})).await;
        assert_eq!(
            result,
            Ok(json!({"exit_code": 0, "stdout": "hello\n", "stderr": "oops\n"}))
        );
    }

    #[tokio::test]
    async fn argv_runs_without_a_shell() {
        let result = run(json!({"command": ["printf", "%s|", "a b", "$HOME", "*"]})).await;
        assert_eq!(ok_stdout(result), "a b|$HOME|*|");
    }

    #[tokio::test]
    async fn stdin_is_dev_null() {
        let result = run(json!({"command": "cat; echo end"})).await;
        assert_eq!(ok_stdout(result), "end\n");
    }

    #[tokio::test]
    async fn env_vars_reach_the_child() {
        let script = r#"printf '%s\n' "$JOBU_EXECUTION_ID" "$JOBU_JOB_ID" "$JOBU_SCHEDULED_TIME" \
            "$JOBU_ATTEMPT" "$JOBU_HANDLER" "$JOBU_WORKER_ID" "$MY_VAR" "$PATH""#;
        let result = run(json!({
            "command": script,
            "env": {"MY_VAR": "x y", "JOBU_ATTEMPT": "99", "JOBU_EXECUTION_ID": "1"},
        }))
        .await;
        let path = std::env::var("PATH").unwrap_or_default();
        assert_eq!(
            ok_stdout(result),
            format!("42\n7\n2024-01-02T03:04:05Z\n2\nshell\nworker-test-1\nx y\n{path}\n")
        );
    }

    #[tokio::test]
    async fn job_id_is_empty_for_ad_hoc_runs() {
        let mut context = ctx();
        context.job_id = None;
        context.scheduled_time = Utc.timestamp_millis_opt(1_704_164_645_250).unwrap();
        let _guard = SPAWN_LOCK.read().await;
        let result = shell(4096)
            .run(
                json!({"command": "printf '[%s] %s' \"${JOBU_JOB_ID-unset}\" \"$JOBU_SCHEDULED_TIME\""}),
                context,
            )
            .await;
        assert_eq!(ok_stdout(result), "[] 2024-01-02T03:04:05.250Z");
    }

    #[tokio::test]
    async fn a_chained_execution_sees_its_parent() {
        let script = r#"printf '[%s] [%s] [%s] [%s]' "${JOBU_PARENT_EXECUTION_ID-unset}" \
            "${JOBU_PARENT_STATUS-unset}" "${JOBU_PARENT_RESULT-unset}" "${JOBU_PARENT_ERROR-unset}""#;
        let _guard = SPAWN_LOCK.read().await;
        // Without a parent every one is set, and empty.
        let result = shell(4096).run(json!({ "command": script }), ctx()).await;
        assert_eq!(ok_stdout(result), "[] [] [] []");
        let mut context = ctx();
        context.parent_execution_id = Some(41);
        context.parent_status = Some(crate::entities::job_execution::Status::Success);
        context.parent_result = Some(json!({"exit_code": 0, "stdout": "a b\n"}));
        let result = shell(4096)
            .run(
                json!({"command": script, "env": {"JOBU_PARENT_EXECUTION_ID": "9"}}),
                context,
            )
            .await;
        assert_eq!(
            ok_stdout(result),
            r#"[41] [SUCCESS] [{"exit_code":0,"stdout":"a b\n"}] []"#
        );
    }

    #[test]
    fn scheduled_time_format() {
        let whole = Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(format_scheduled_time(&whole), "2024-01-02T03:04:05Z");
        let micros = whole + chrono::Duration::microseconds(123_456);
        assert_eq!(
            format_scheduled_time(&micros),
            "2024-01-02T03:04:05.123456Z"
        );
    }

    #[tokio::test]
    async fn cwd_is_used() {
        let dir = temp_dir("cwd");
        let result = run(json!({"command": ["pwd", "-P"], "cwd": dir.to_str().unwrap()})).await;
        assert_eq!(
            ok_stdout(result),
            format!("{}\n", dir.canonicalize().unwrap().display())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn missing_cwd_is_reported() {
        let parent = temp_dir("gone");
        let dir = parent.join("missing");
        let message =
            err_message(run(json!({"command": "true", "cwd": dir.to_str().unwrap()})).await);
        std::fs::remove_dir_all(&parent).unwrap();
        assert!(message.starts_with("cwd \""), "{message}");
        assert!(message.contains("No such file or directory"), "{message}");
    }

    #[tokio::test]
    async fn non_zero_exit_reports_the_stderr_tail() {
        let message =
            err_message(run(json!({"command": "echo out; echo 'bad thing' >&2; exit 3"})).await);
        assert_eq!(message, "command exited with code 3: bad thing");

        let message = err_message(run(json!({"command": "echo only-out; exit 4"})).await);
        assert_eq!(
            message,
            "command exited with code 4: (stderr empty) stdout: only-out"
        );

        let message = err_message(run(json!({"command": ["false"]})).await);
        assert_eq!(message, "command exited with code 1: (no output)");
    }

    #[tokio::test]
    async fn death_by_signal_is_reported() {
        let message = err_message(run(json!({"command": "echo dying >&2; kill -TERM $$"})).await);
        assert_eq!(message, "command was killed by signal 15 (SIGTERM): dying");
    }

    #[tokio::test]
    async fn long_output_is_cut_to_the_tail() {
        let _guard = SPAWN_LOCK.read().await;
        let value = shell(64)
            .run(json!({"command": "seq 1 100000; seq 1 50000 >&2"}), ctx())
            .await
            .unwrap();
        let stdout = value["stdout"].as_str().unwrap();
        let kept = stdout.strip_prefix(TRUNCATION_MARK).unwrap();
        assert_eq!(kept.len(), 64);
        assert!(kept.ends_with("\n99998\n99999\n100000\n"), "{stdout}");
        let stderr = value["stderr"].as_str().unwrap();
        assert!(stderr.starts_with(TRUNCATION_MARK));
        assert!(stderr.ends_with("\n49999\n50000\n"), "{stderr}");

        let message = err_message(
            shell(32)
                .run(json!({"command": "seq 1 100000 >&2; exit 2"}), ctx())
                .await,
        );
        assert!(
            message.starts_with("command exited with code 2: …"),
            "{message}"
        );
        assert!(message.ends_with("\n100000"), "{message}");
        assert!(message.len() < 80, "{message}");
    }

    #[test]
    fn tail_buffer() {
        let mut tail = TailBuffer::new(5);
        tail.push(b"ab");
        tail.push(b"cde");
        assert_eq!(tail.into_string(), "abcde");

        let mut tail = TailBuffer::new(5);
        tail.push(b"abc");
        tail.push(b"def");
        assert_eq!(tail.into_string(), "…bcdef");

        let mut tail = TailBuffer::new(5);
        tail.push(b"abcdefgh");
        tail.push(b"");
        assert_eq!(tail.into_string(), "…defgh");

        let mut tail = TailBuffer::new(0);
        tail.push(b"abc");
        assert_eq!(tail.into_string(), "…");

        assert_eq!(TailBuffer::new(0).into_string(), "");

        // A cut inside "é" (2 bytes) drops its orphaned continuation byte.
        let mut tail = TailBuffer::new(4);
        tail.push("aébc".as_bytes());
        tail.push("d".as_bytes());
        assert_eq!(tail.into_string(), "…bcd");

        // Invalid UTF-8 that was not cut is replaced, not dropped.
        let mut tail = TailBuffer::new(8);
        tail.push(b"a\xffb");
        assert_eq!(tail.into_string(), "a\u{fffd}b");
    }

    #[tokio::test]
    async fn invalid_params_are_refused() {
        let cases = [
            (Value::Null, "`command` is required"),
            (json!({}), "`command` is required"),
            (
                json!("ls"),
                "params must be an object with a `command`, got a string",
            ),
            (
                json!({"command": 5}),
                "`command` must be a string or an array of strings, got a number",
            ),
            (json!({"command": " "}), "`command` must not be empty"),
            (
                json!({"command": "a\u{0}b"}),
                "`command` must not contain NUL characters",
            ),
            (
                json!({"command": []}),
                "`command` must not be an empty array",
            ),
            (
                json!({"command": ["ls", 1]}),
                "`command[1]` must be a string, got a number",
            ),
            (
                json!({"command": ["", "x"]}),
                "`command[0]` (the program) must not be empty",
            ),
            (
                json!({"command": "ls", "comand": "ls"}),
                "unknown key \"comand\" (expected `command`, `env`, `cwd`)",
            ),
            (
                json!({"command": "ls", "env": ["A=1"]}),
                "`env` must be an object of strings, got an array",
            ),
            (
                json!({"command": "ls", "env": {"A": 1}}),
                "`env.A` must be a string, got a number",
            ),
            (
                json!({"command": "ls", "env": {"": "x"}}),
                "`env` keys must not be empty",
            ),
            (
                json!({"command": "ls", "env": {"A=B": "x"}}),
                "`env` key \"A=B\" must not contain `=` or NUL characters",
            ),
            (
                json!({"command": "ls", "cwd": 1}),
                "`cwd` must be a string, got a number",
            ),
            (
                json!({"command": "ls", "cwd": ""}),
                "`cwd` must not be empty",
            ),
        ];
        let handler = shell(4096);
        for (params, message) in cases {
            assert_eq!(
                handler.validate_params(&params),
                Err(message.to_string()),
                "{params}"
            );
            assert_eq!(
                handler.run(params.clone(), ctx()).await,
                Err(HandlerError::invalid_params(message)),
                "{params}"
            );
        }
        assert_eq!(
            handler.validate_params(&json!({
                "command": ["ls", "-l"], "env": {"A": "1"}, "cwd": "/tmp"
            })),
            Ok(())
        );
        assert_eq!(
            handler.validate_params(&json!({"command": "ls", "env": null, "cwd": null})),
            Ok(())
        );
    }

    #[tokio::test]
    async fn spawn_failure_names_the_program() {
        let message =
            err_message(run(json!({"command": ["/nonexistent/jobu-test-program"]})).await);
        assert!(
            message.starts_with("failed to start \"/nonexistent/jobu-test-program\": "),
            "{message}"
        );
        assert!(message.contains("No such file or directory"), "{message}");
    }

    #[tokio::test]
    async fn background_processes_survive_a_normal_exit_without_holding_it_up() {
        let started = Instant::now();
        let result = run(json!({"command": "sleep 30 & echo $!"})).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        let pid: i32 = ok_stdout(result).trim().parse().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let state = process_state(pid);
        // SAFETY (test): the sleep is still alive (checked just above), so pid is ours.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        assert!(
            matches!(state, Some(s) if s != 'Z'),
            "background sleep was killed: {state:?}"
        );
    }

    #[tokio::test]
    async fn dropping_the_future_kills_the_process_group() {
        let dir = temp_dir("cancel");
        let pid_file = dir.join("pids");
        let _guard = SPAWN_LOCK.read().await;
        let handler = shell(4096);
        let attempt = handler.run(
            json!({"command": background_sleep_script(&pid_file)}),
            ctx(),
        );
        let pids = tokio::select! {
            result = attempt => panic!("finished early: {result:?}"),
            pids = read_pids(&pid_file) => pids,
        };
        // `attempt` is dropped now.
        let [shell_pid, sleep_pid] = pids[..] else {
            panic!("bad pid file: {pids:?}")
        };
        assert!(!live_groups().contains(&shell_pid));
        assert_dies(sleep_pid, "grandchild").await;
        assert_dies(shell_pid, "child").await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn timeout_kills_the_process_group() {
        let dir = temp_dir("timeout");
        let pid_file = dir.join("pids");
        let _guard = SPAWN_LOCK.read().await;
        let handler = shell(4096);
        let attempt = tokio::spawn(async move {
            tokio::time::timeout(
                Duration::from_secs(2),
                handler.run(
                    json!({"command": background_sleep_script(&pid_file)}),
                    ctx(),
                ),
            )
            .await
        });
        let pids = read_pids(&dir.join("pids")).await;
        assert!(attempt.await.unwrap().is_err(), "the command finished");
        for pid in pids {
            assert_dies(pid, "child or grandchild").await;
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `PR_SET_PDEATHSIG`: the child dies when the thread that spawned it exits, even if the
    /// attempt's future is never dropped (as when the worker process dies).
    #[test]
    fn the_child_dies_with_the_spawning_thread() {
        let dir = temp_dir("pdeathsig");
        let pid_file = dir.join("pids");
        let _guard = SPAWN_LOCK.blocking_write();
        let script = {
            let pid_file = pid_file.display();
            format!(
                "echo $$ > '{pid_file}.tmp' && mv '{pid_file}.tmp' '{pid_file}' && exec sleep 30"
            )
        };
        let pids = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let handler = shell(4096);
                let mut attempt = Box::pin(handler.run(json!({ "command": script }), ctx()));
                let pids = tokio::select! {
                    result = &mut attempt => panic!("finished early: {result:?}"),
                    pids = read_pids(&pid_file) => pids,
                };
                // Neither the guard nor `kill_on_drop` gets a chance to run.
                std::mem::forget(attempt);
                pids
            })
        })
        .join()
        .unwrap();
        let [pid] = pids[..] else {
            panic!("bad pid file: {pids:?}")
        };
        // The leaked child stays unreaped (a zombie at worst), so its pid is not reused before
        // this removes the leaked registration.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(assert_dies(pid, "child"));
        assert!(live_groups().remove(&pid));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn kill_all_process_groups_kills_running_commands() {
        let dir = temp_dir("kill-all");
        let pid_file = dir.join("pids");
        let _guard = SPAWN_LOCK.write().await;
        let handler = shell(4096);
        let script = background_sleep_script(&pid_file);
        let attempt = tokio::spawn(async move {
            handler
                .run(json!({"command": script, "env": {"A": "1"}}), ctx())
                .await
        });
        let pids = read_pids(&pid_file).await;
        assert_eq!(kill_all_process_groups(), 1);
        let message = tokio::time::timeout(Duration::from_secs(5), attempt)
            .await
            .unwrap()
            .unwrap()
            .unwrap_err()
            .message()
            .to_string();
        assert!(
            message.starts_with("command was killed by signal 9 (SIGKILL)"),
            "{message}"
        );
        assert!(live_groups().is_empty());
        for pid in pids {
            assert_dies(pid, "child or grandchild").await;
        }
        assert_eq!(kill_all_process_groups(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
