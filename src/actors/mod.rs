//! The runtime: a ractor actor tree per process (DESIGN.md, "The actor tree").
//!
//! ```text
//! Supervisor      supervisor.rs  restarts crashed children with backoff, escalates
//! ├── Dispatcher  dispatcher.rs  due fire times -> job_executions rows
//! ├── WorkerPool  pool.rs        claims, heartbeats, records outcomes; supervises tasks
//! │   └── Task    task.rs        runs one handler attempt, then stops
//! ├── Rescuer     rescuer.rs     expired leases back to PENDING (or final)
//! ├── Recovery    recovery.rs    in-doubt two-phase branches committed or rolled back
//! ├── Presence    presence.rs    this process's heartbeat row for GET /api/workers
//! ├── Retention   retention.rs   old finished executions deleted in batches
//! └── AdminServer admin.rs       the admin HTTP API, console and metrics (crate::http)
//! ```
//!
//! Actors keep their state in a struct and talk through message enums; the database is the
//! only state shared between processes, and nothing mutable is shared between actors.
//! [`Runtime`] is the entry point for the binary and for Rust users with their own handlers.

pub mod admin;
pub mod dispatcher;
pub mod pool;
pub mod presence;
pub mod recovery;
pub mod rescuer;
pub mod retention;
pub mod supervisor;
pub mod task;

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use tokio::sync::watch;

use crate::config::{redact_url, Settings};
use crate::handlers::{Handler, Registry};
use crate::store::{Store, StoreError};
use supervisor::{Supervisor, SupervisorArgs, SupervisorConfig, SupervisorMsg};

/// Which services a process runs. `jobu run` runs all of them; any number of processes with
/// any roles may share one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub dispatcher: bool,
    pub worker: bool,
    /// Returns expired leases; cheap and safe to run anywhere, so every role has it.
    pub rescuer: bool,
    /// Serves the admin HTTP API and console when `admin.enabled` (always for `jobu admin`).
    pub admin: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        dispatcher: true,
        worker: true,
        rescuer: true,
        admin: true,
    };
    pub const DISPATCHER: Roles = Roles {
        dispatcher: true,
        worker: false,
        rescuer: true,
        admin: false,
    };
    pub const WORKER: Roles = Roles {
        dispatcher: false,
        worker: true,
        rescuer: true,
        admin: false,
    };
    pub const ADMIN: Roles = Roles {
        dispatcher: false,
        worker: false,
        rescuer: false,
        admin: true,
    };
}

/// How a runtime ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Shut down on request; running attempts finished or were released.
    Clean,
    /// A child crashed too often; the process should exit non-zero and be restarted by
    /// systemd or the container runtime.
    Escalated { child: String, reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot connect to {url}: {source}")]
    Connect { url: String, source: StoreError },
    #[error("cannot migrate {url}: {source}")]
    Migrate { url: String, source: StoreError },
    #[error("{0}")]
    Invalid(String),
    #[error("cannot start the supervisor: {0}")]
    Spawn(String),
    #[error("{0}")]
    Listen(String),
    /// A database of `worker.databases` cannot be opened.
    #[error("{0}")]
    Database(String),
}

/// Time a graceful shutdown may take beyond the worker's drain: releasing what still runs,
/// the last outcome writes, closing the pools.
pub const STOP_MARGIN: Duration = Duration::from_secs(15);

/// Connections of the worker's dedicated lease pool (renewals and cancel polls).
pub const LEASE_POOL_CONNECTIONS: u32 = 2;

/// Connections of the worker's claim pool on a SQLite file (see [`Shared::claim_store`]).
pub const SQLITE_CLAIM_POOL_CONNECTIONS: u32 = 1;

/// What every actor of one process shares, read-only.
pub struct Shared {
    pub(crate) store: Store,
    /// A small pool of its own for lease renewals and cancel polls, so they never wait
    /// behind claims and outcome writes on `store` (the same pool when it cannot be opened
    /// separately, see [`Store::dedicated`]).
    pub(crate) lease_store: Store,
    /// The worker pool's claims and outcome writes. On a SQLite file, a pool of one
    /// connection of its own: SQLite runs one writer at a time anyway, and in WAL mode a
    /// connection drops its page cache whenever another connection has written, so claims
    /// and writes spread over the main pool's connections read the same pages from the
    /// kernel again (one connection drained 11 % faster). Elsewhere it is `store`.
    pub(crate) claim_store: Store,
    pub(crate) settings: Settings,
    pub(crate) registry: Registry,
    pub(crate) worker_id: String,
    /// The named databases of `worker.databases` (workers and the admin API open them).
    pub(crate) databases: crate::txn::Databases,
    /// Runs handlers' transactions over `databases`; `None` when none are configured.
    pub(crate) coordinator: Option<Arc<crate::txn::Coordinator>>,
    /// The retention service's report of its last sweep ([`RunningRuntime::retention_reports`]).
    pub(crate) retention_reports: watch::Sender<Option<retention::SweepReport>>,
}

/// Builds and starts the actor tree.
///
/// ```no_run
/// # async fn demo() -> Result<(), jobu::actors::RuntimeError> {
/// use jobu::actors::Runtime;
/// use jobu::config::Settings;
/// let running = Runtime::new(Settings::default()).start().await?;
/// let exit = running.run_until_signal().await;
/// # Ok(()) }
/// ```
pub struct Runtime {
    settings: Settings,
    registry: Registry,
    roles: Roles,
    supervisor: SupervisorConfig,
}

impl Runtime {
    /// All roles, with the built-in handlers that `settings.handlers` allows.
    pub fn new(settings: Settings) -> Runtime {
        let mut registry = Registry::with_builtins(&settings.handlers);
        if let Some(sql) = crate::handlers::sql::Sql::from_settings(&settings) {
            registry.insert(crate::handlers::sql::NAME, sql);
        }
        Runtime {
            settings,
            registry,
            roles: Roles::ALL,
            supervisor: SupervisorConfig::default(),
        }
    }

    /// The restart policy (defaults: [`SupervisorConfig`]'s constants).
    pub fn supervisor(mut self, config: SupervisorConfig) -> Runtime {
        self.supervisor = config;
        self
    }

    pub fn roles(mut self, roles: Roles) -> Runtime {
        self.roles = roles;
        self
    }

    /// Registers (or replaces) a handler.
    pub fn handler(mut self, name: impl Into<String>, handler: impl Handler) -> Runtime {
        self.registry.insert(name, handler);
        self
    }

    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Connects to the default database, applies pending migrations (safe while other
    /// processes start too) and starts the supervisor with the children of the roles.
    pub async fn start(self) -> Result<RunningRuntime, RuntimeError> {
        self.settings
            .validate()
            .map_err(|e| RuntimeError::Invalid(e.to_string()))?;
        // A configuration error: refuse before touching the database.
        if self.roles.admin && self.settings.admin.enabled {
            crate::http::check_settings(&self.settings, &self.registry)
                .map_err(RuntimeError::Invalid)?;
        }
        let db = self.settings.default_database();
        let url = redact_url(&db.url);
        let store = Store::connect(db)
            .await
            .map_err(|source| RuntimeError::Connect {
                url: url.clone(),
                source,
            })?;
        match store.migrate_shared().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(database = %url, applied = n, "applied migrations"),
            Err(source) => return Err(RuntimeError::Migrate { url, source }),
        }
        let mut running = Self::start_with_store(self, store).await?;
        running.owns_store = true;
        Ok(running)
    }

    /// Like [`Runtime::start`] on an existing, migrated store.
    pub async fn start_with_store(mut self, store: Store) -> Result<RunningRuntime, RuntimeError> {
        store.set_notify(self.settings.worker.notify);
        if self.roles.worker && self.registry.is_empty() {
            return Err(RuntimeError::Invalid(
                "the worker role needs at least one handler".into(),
            ));
        }
        self.roles.admin &= self.settings.admin.enabled;
        // Bound before anything starts: a taken port, an unsafe exposure or a bad token file
        // is a start error. Leaves the token in force in the admin settings.
        let listener = if self.roles.admin {
            Some(Arc::new(
                crate::http::prepare(&mut self.settings, &self.registry).await?,
            ))
        } else {
            None
        };
        let admin_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let worker_id = self
            .settings
            .worker
            .id
            .clone()
            .unwrap_or_else(default_worker_id);
        // A worker's pools of its own (the main store when not needed or not possible).
        let url = redact_url(&self.settings.default_database().url);
        let own_pool = |wanted: bool, connections: u32| {
            let (store, url) = (&store, url.clone());
            async move {
                if !wanted {
                    return Ok(store.clone());
                }
                store
                    .dedicated(connections)
                    .await
                    .map_err(|source| RuntimeError::Connect { url, source })
            }
        };
        let lease_store = own_pool(self.roles.worker, LEASE_POOL_CONNECTIONS).await?;
        let sqlite = store.dialect() == crate::store::Dialect::Sqlite;
        let claim_store =
            own_pool(self.roles.worker && sqlite, SQLITE_CLAIM_POOL_CONNECTIONS).await?;
        let databases = if self.roles.worker || self.roles.admin {
            crate::txn::Databases::open(&self.settings, &store)
                .await
                .map_err(|e| RuntimeError::Database(e.to_string()))?
        } else {
            crate::txn::Databases::default()
        };
        let coordinator = if self.roles.worker && !databases.is_empty() {
            let c = crate::txn::Coordinator::open(store.clone(), databases.clone())
                .await
                .map_err(|e| {
                    RuntimeError::Database(format!(
                        "cannot read the transaction coordinator id: {e}"
                    ))
                })?;
            Some(Arc::new(c))
        } else {
            None
        };
        let (retention_tx, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            store: store.clone(),
            lease_store,
            claim_store,
            settings: self.settings,
            registry: self.registry,
            worker_id,
            databases,
            coordinator,
            retention_reports: retention_tx.clone(),
        });
        let stop_budget = Duration::from_secs(shared.settings.worker.shutdown_timeout_seconds)
            .saturating_add(STOP_MARGIN);
        let (exit_tx, exit_rx) = watch::channel(None);
        let args = SupervisorArgs {
            shared,
            roles: self.roles,
            config: self.supervisor,
            exit: exit_tx,
            admin_listener: listener,
        };
        let (supervisor, join) = Actor::spawn(None, Supervisor, args)
            .await
            .map_err(|e| RuntimeError::Spawn(e.to_string()))?;
        Ok(RunningRuntime {
            supervisor,
            join,
            exit: exit_rx,
            store,
            owns_store: false,
            admin_addr,
            retention_reports: retention_tx.subscribe(),
            roles: self.roles,
            stop_budget,
        })
    }
}

/// A started runtime.
pub struct RunningRuntime {
    supervisor: ActorRef<SupervisorMsg>,
    join: tokio::task::JoinHandle<()>,
    exit: watch::Receiver<Option<Exit>>,
    store: Store,
    /// Opened by [`Runtime::start`], so closed when the runtime ends.
    owns_store: bool,
    admin_addr: Option<std::net::SocketAddr>,
    retention_reports: watch::Receiver<Option<retention::SweepReport>>,
    /// What runs (the admin role only when it serves), for systemd's status line.
    roles: Roles,
    /// How long a graceful shutdown may take: the worker's drain plus a margin for
    /// recording outcomes (told to systemd, which would otherwise kill the process sooner).
    stop_budget: Duration,
}

impl RunningRuntime {
    /// The retention service's report of its last finished sweep (`None` until the first, and
    /// always when this process runs no retention service): wait on it instead of sleeping.
    pub fn retention_reports(&self) -> watch::Receiver<Option<retention::SweepReport>> {
        self.retention_reports.clone()
    }

    /// Where the admin HTTP API listens, when this runtime serves it.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin_addr
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The supervisor actor; its children are the running services.
    pub fn supervisor(&self) -> ractor::ActorCell {
        self.supervisor.get_cell()
    }

    /// Starts a graceful shutdown: the dispatcher stops at once, the pool stops claiming and
    /// drains (up to `worker.shutdown_timeout_seconds`, then releases what still runs).
    pub fn shutdown(&self) {
        let _ = self.supervisor.send_message(SupervisorMsg::Shutdown);
    }

    /// Waits until the supervisor has stopped.
    pub async fn wait(mut self) -> Exit {
        let exit = match self.exit.wait_for(Option::is_some).await {
            Ok(exit) => exit.clone(),
            Err(_) => None,
        };
        let _ = (&mut self.join).await;
        if self.owns_store {
            let _ = self.store.close().await;
        }
        exit.unwrap_or(Exit::Escalated {
            child: "supervisor".into(),
            reason: "stopped without reporting an exit".into(),
        })
    }

    /// Runs until SIGTERM or SIGINT, then shuts down gracefully; a second signal exits the
    /// process at once (code 128 + signal) after killing shell handlers' process groups.
    /// Under systemd (`Type=notify`) it reports READY=1 once the handlers are installed and
    /// STOPPING=1 at the first signal ([`crate::systemd`]).
    pub async fn run_until_signal(self) -> Exit {
        use tokio::signal::unix::{signal, SignalKind};
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => (t, i),
            _ => {
                tracing::error!("cannot install signal handlers; shutting down");
                self.shutdown();
                return self.wait().await;
            }
        };
        // Only now: a SIGTERM that systemd sends after READY=1 must find the handlers.
        crate::systemd::ready(self.roles, self.admin_addr);
        let supervisor = self.supervisor.clone();
        let stop_budget = self.stop_budget;
        let wait = self.wait();
        tokio::pin!(wait);
        tokio::select! {
            exit = &mut wait => return exit,
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down gracefully; a second signal exits at once"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down gracefully; a second signal exits at once"),
        }
        crate::systemd::stopping(stop_budget);
        let _ = supervisor.send_message(SupervisorMsg::Shutdown);
        let signo = tokio::select! {
            exit = &mut wait => return exit,
            _ = term.recv() => libc::SIGTERM,
            _ = int.recv() => libc::SIGINT,
        };
        tracing::warn!(
            signal = signo,
            "second signal: exiting now; running attempts are left to lease expiry"
        );
        crate::handlers::shell::kill_all_process_groups();
        std::process::exit(128 + signo);
    }
}

/// `<hostname>-<pid>`: unique per process, and tells an operator where to look.
pub fn default_worker_id() -> String {
    let mut id = format!("{}-{}", hostname(), std::process::id());
    id.truncate(128);
    id
}

/// This machine's host name, or `unknown`.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it
    // on success (and we stop at the first NUL or the end either way).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "unknown".to_string()
    }
}

/// Exponential backoff: `base * 2^(attempt - 1)` capped at `max`, spread by ±`jitter`.
pub fn backoff(base: f64, max: f64, attempt: u32, jitter: f64) -> Duration {
    let exp = base * 2f64.powi(attempt.saturating_sub(1).min(62) as i32);
    let capped = exp.min(max).max(0.0);
    let spread = if jitter > 0.0 {
        1.0 + rand::random_range(-jitter..=jitter)
    } else {
        1.0
    };
    Duration::from_secs_f64((capped * spread).max(0.0))
}

/// A one-shot timer that sends `msg` to `actor` after `delay`; abort the handle to cancel.
pub(crate) fn send_later<M: ractor::Message>(
    actor: &ActorRef<M>,
    delay: Duration,
    msg: M,
) -> tokio::task::JoinHandle<()> {
    let actor = actor.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = actor.send_message(msg);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(10.0, 3600.0, 1, 0.0), Duration::from_secs(10));
        assert_eq!(backoff(10.0, 3600.0, 2, 0.0), Duration::from_secs(20));
        assert_eq!(backoff(10.0, 3600.0, 3, 0.0), Duration::from_secs(40));
        assert_eq!(backoff(10.0, 3600.0, 20, 0.0), Duration::from_secs(3600));
        assert_eq!(backoff(10.0, 3600.0, 500, 0.0), Duration::from_secs(3600));
        for _ in 0..100 {
            let d = backoff(10.0, 3600.0, 1, 0.2).as_secs_f64();
            assert!((8.0..=12.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn worker_id_has_host_and_pid() {
        let id = default_worker_id();
        assert!(id.ends_with(&format!("-{}", std::process::id())), "{id}");
    }
}
