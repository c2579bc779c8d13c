//! Handlers: the code an execution runs. A [`Handler`] gets the execution's params (JSON) and
//! an [`ExecutionContext`], and returns a result (JSON) or a [`HandlerError`]. Handlers are
//! looked up by name in a [`Registry`]; a worker claims only executions whose handler its
//! registry holds, so workers with different handler sets can share one database.
//!
//! Cancellation: a timed-out, cancelled or released attempt is stopped by dropping the
//! handler's future at its next `.await`. Hold external resources in guards that clean up on
//! drop (the shell handler kills its process group that way).
//!
//! Built-ins: [`shell`] (off unless `handlers.shell.enabled`), [`http`] (off unless
//! `handlers.http.enabled`), [`sql`] (when `worker.databases` names a database besides
//! `default`), [`builtin::Sleep`] and [`builtin::Noop`] for tests and benchmarks.

pub mod builtin;
pub mod http;
pub mod shell;
pub mod sql;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::config::HandlersSettings;
use crate::entities::job_execution::Status;
use crate::txn::{Coordinator, Fence, Tx, TxFuture, TxnError};

pub use async_trait::async_trait;

/// What a handler knows about the attempt it runs.
#[derive(Debug, Clone)]
pub struct ExecutionContext {
    pub execution_id: i64,
    /// The cron that created the execution; `None` for ad-hoc runs.
    pub job_id: Option<i64>,
    pub handler_name: String,
    /// The fire time (for ad-hoc runs, the requested time), UTC.
    pub scheduled_time: DateTime<Utc>,
    /// 1 for the first attempt, `retry_count + 1` in general.
    pub attempt: u32,
    /// Total attempts allowed: `max_retry + 1`.
    pub max_attempts: u32,
    /// The attempt is stopped after this long.
    pub timeout: Duration,
    /// The worker process running the attempt.
    pub worker_id: String,
    /// The named databases (`worker.databases`) and the attempt's fence; `None` outside a
    /// worker (unit tests of handlers).
    pub transactions: Option<AttemptTransactions>,
    /// The execution whose final outcome started this one (a chain: `on_success` or
    /// `on_failure` of its cron); `None` for every other execution.
    pub parent_execution_id: Option<i64>,
    /// The parent's final status (SUCCESS, FAILED or TIMEOUT); `None` without a parent, or
    /// when the parent is gone (deleted by retention or an operator).
    pub parent_status: Option<Status>,
    /// The parent's result (a SUCCESS parent's handler result; `None` when it has none).
    pub parent_result: Option<Value>,
    /// The parent's error message (a FAILED or TIMEOUT parent's last attempt).
    pub parent_error: Option<String>,
}

/// What an attempt needs to use the named databases: the coordinator of the process and the
/// attempt's owner token, which fences its commits.
#[derive(Clone)]
pub struct AttemptTransactions {
    pub coordinator: Arc<Coordinator>,
    pub owner_token: String,
}

// Written by hand: the owner token stays out of logs.
impl fmt::Debug for AttemptTransactions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttemptTransactions")
            .field("databases", &self.coordinator.databases().names())
            .finish_non_exhaustive()
    }
}

impl ExecutionContext {
    fn coordinator(&self) -> Result<&AttemptTransactions, TxnError> {
        self.transactions.as_ref().ok_or_else(|| {
            TxnError::Refused("no named databases are available to this attempt".into())
        })
    }

    /// The pool of the named database `name` (one of `worker.databases`), for work outside a
    /// transaction. An unknown name is an error naming the configured ones.
    pub fn database(&self, name: &str) -> Result<&sea_orm::DatabaseConnection, TxnError> {
        let t = self.coordinator()?;
        let databases = t.coordinator.databases();
        databases
            .get(name)
            .map(|p| p.connection())
            .ok_or_else(|| TxnError::unknown(name, databases))
    }

    /// Runs `f` over the named databases and commits all or none ([`crate::txn`]): one
    /// database is an ordinary transaction, several a two-phase commit. The commit is fenced:
    /// an attempt that lost its lease rolls back everywhere.
    pub async fn transaction<T, F>(&self, names: &[&str], f: F) -> Result<T, TxnError>
    where
        T: Send,
        F: for<'a> FnOnce(&'a Tx) -> TxFuture<'a, T>,
    {
        let t = self.coordinator()?;
        let fence = Fence {
            execution_id: self.execution_id,
            attempt: self.attempt,
            owner_token: t.owner_token.clone(),
            worker_id: self.worker_id.clone(),
        };
        t.coordinator.run(&fence, names, f).await
    }
}

/// A failed attempt. The message is stored in `job_executions.error_message` (its last 8 KiB)
/// and the execution is retried while retries remain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    message: String,
}

impl HandlerError {
    pub fn new(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
        }
    }

    /// Bad params: the message names the param so an operator can fix the cron.
    pub fn invalid_params(message: impl fmt::Display) -> Self {
        HandlerError::new(format!("invalid params: {message}"))
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HandlerError {}

impl From<String> for HandlerError {
    fn from(message: String) -> Self {
        HandlerError::new(message)
    }
}

impl From<&str> for HandlerError {
    fn from(message: &str) -> Self {
        HandlerError::new(message)
    }
}

/// The result JSON (stored in `job_executions.result`; `Value::Null` stores nothing) or the
/// failure.
pub type HandlerResult = Result<Value, HandlerError>;

/// A named piece of work. Implement it with `#[jobu::handlers::async_trait]`:
///
/// ```
/// use jobu::handlers::{async_trait, ExecutionContext, Handler, HandlerResult};
/// use serde_json::{json, Value};
///
/// struct Greet;
///
/// #[async_trait]
/// impl Handler for Greet {
///     async fn run(&self, params: Value, ctx: ExecutionContext) -> HandlerResult {
///         let who = params["name"].as_str().unwrap_or("world");
///         Ok(json!({ "greeting": format!("hello {who}"), "attempt": ctx.attempt }))
///     }
/// }
/// ```
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt. `params` is the execution's params (`Value::Null` when none).
    async fn run(&self, params: Value, ctx: ExecutionContext) -> HandlerResult;

    /// Checks params before an execution is stored (the admin API calls this), so bad input
    /// is refused up front instead of failing at run time. The default accepts anything.
    fn validate_params(&self, _params: &Value) -> Result<(), String> {
        Ok(())
    }
}

/// "a string", "an object", ...: for params error messages.
pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Handlers by name.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<dyn Handler>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.handlers.keys()).finish()
    }
}

/// Longest handler name; `job_executions.handler_name` holds 100 characters.
pub const MAX_HANDLER_NAME_CHARS: usize = 100;

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// `noop`, `sleep`, `shell` when `handlers.shell.enabled` is set and `http` when
    /// `handlers.http.enabled` is.
    pub fn with_builtins(settings: &HandlersSettings) -> Self {
        let mut registry = Registry::new();
        registry.insert(builtin::NOOP, builtin::Noop);
        registry.insert(builtin::SLEEP, builtin::Sleep);
        if settings.shell.enabled {
            registry.insert(shell::NAME, shell::Shell::new(settings.shell.clone()));
        }
        if settings.http.enabled {
            registry.insert(http::NAME, http::Http::new(settings.http.clone()));
        }
        registry
    }

    /// Adds or replaces the handler called `name`.
    ///
    /// # Panics
    /// When `name` is empty or longer than [`MAX_HANDLER_NAME_CHARS`]: that is a programming
    /// error in the embedding code, found on the first start.
    pub fn insert(&mut self, name: impl Into<String>, handler: impl Handler) -> &mut Self {
        let name = name.into();
        assert!(
            !name.is_empty() && name.chars().count() <= MAX_HANDLER_NAME_CHARS,
            "handler names must be 1 to {MAX_HANDLER_NAME_CHARS} characters, got {name:?}"
        );
        self.handlers.insert(name, Arc::new(handler));
        self
    }

    /// Builder form of [`Registry::insert`].
    pub fn with(mut self, name: impl Into<String>, handler: impl Handler) -> Self {
        self.insert(name, handler);
        self
    }

    pub fn remove(&mut self, name: &str) -> bool {
        self.handlers.remove(name).is_some()
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(name).cloned()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.handlers.contains_key(name)
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.handlers.keys().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }
}
