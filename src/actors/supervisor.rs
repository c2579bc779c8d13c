//! The Supervisor: one per process. Starts the children its roles need, restarts a child that
//! crashed (panicked, failed or stopped on its own) after an exponential backoff, and gives up
//! (escalates) when one child crashed more than `max_restarts` times within `window`: the
//! process then exits non-zero and systemd or the container runtime restarts it.
//!
//! ractor's default supervision stops the parent when a child exits and has no restart
//! strategies, so this actor implements them. On shutdown it stops the Dispatcher, the
//! Rescuer and the other services at once and asks the WorkerPool to drain; it stops itself
//! when every child is gone.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::watch;

use super::admin::{AdminArgs, AdminServer};
use super::dispatcher::{Dispatcher, DispatcherConfig};
use super::pool::{PoolArgs, PoolConfig, PoolMsg, WorkerPool};
use super::presence::Presence;
use super::recovery::{RecoveryConfig, RecoveryService};
use super::rescuer::{Rescuer, RescuerConfig};
use super::retention::{RetentionArgs, RetentionConfig, RetentionService};
use super::{backoff, send_later, Exit, Roles, Shared};

/// Restart policy. Defaults: more than 5 crashes of one child within 60 s escalates;
/// restarts wait 0.5 s, 1 s, 2 s, ... up to 30 s.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    pub max_restarts: usize,
    pub window: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl SupervisorConfig {
    pub const DEFAULT_MAX_RESTARTS: usize = 5;
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
    pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(500);
    pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            max_restarts: Self::DEFAULT_MAX_RESTARTS,
            window: Self::DEFAULT_WINDOW,
            backoff_base: Self::DEFAULT_BACKOFF_BASE,
            backoff_max: Self::DEFAULT_BACKOFF_MAX,
        }
    }
}

/// The supervised services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChildKind {
    Dispatcher,
    WorkerPool,
    Rescuer,
    Recovery,
    Presence,
    Admin,
    Retention,
}

impl ChildKind {
    pub fn name(self) -> &'static str {
        match self {
            ChildKind::Dispatcher => "dispatcher",
            ChildKind::WorkerPool => "worker_pool",
            ChildKind::Rescuer => "rescuer",
            ChildKind::Recovery => "recovery",
            ChildKind::Presence => "presence",
            ChildKind::Admin => "admin",
            ChildKind::Retention => "retention",
        }
    }
}

pub enum SupervisorMsg {
    /// Graceful shutdown (SIGTERM, SIGINT, or an embedding program's request).
    Shutdown,
    /// Start a child again after its backoff.
    Restart(ChildKind),
    /// The worker pool started an attempt (kept until it ends, see [`ReleaseOrphans`]).
    ///
    /// [`ReleaseOrphans`]: SupervisorMsg::ReleaseOrphans
    AttemptStarted {
        id: i64,
        token: String,
        actor: ActorCell,
    },
    /// The worker pool saw that attempt's actor end; the pool records its outcome.
    AttemptEnded { id: i64, token: String },
    /// The worker pool is gone: kill what it still ran and release those executions at once
    /// (PENDING, not counted) instead of leaving them RUNNING until their leases expire.
    /// Sent to itself behind the pool's last messages, which the supervision event may
    /// overtake (ractor delivers those first).
    ReleaseOrphans,
}

/// How long an orphaned attempt's actor may take to stop before it is left to lease expiry
/// (releasing a row whose handler may still run would run it twice).
const ORPHAN_STOP_LIMIT: Duration = Duration::from_secs(10);

pub struct SupervisorArgs {
    pub(crate) shared: Arc<Shared>,
    pub roles: Roles,
    pub config: SupervisorConfig,
    pub exit: watch::Sender<Option<Exit>>,
    /// Bound by the runtime when the process serves the admin API.
    pub admin_listener: Option<Arc<std::net::TcpListener>>,
}

pub struct Supervisor;

pub struct SupervisorState {
    shared: Arc<Shared>,
    config: SupervisorConfig,
    children: HashMap<ActorId, (ChildKind, ActorCell)>,
    pool: Option<ActorRef<PoolMsg>>,
    /// The worker pool's running attempts: execution id -> (owner token, task actor).
    attempts: HashMap<i64, (String, ActorCell)>,
    crashes: HashMap<ChildKind, VecDeque<Instant>>,
    shutting_down: bool,
    exit: watch::Sender<Option<Exit>>,
    outcome: Option<Exit>,
    roles: Roles,
    admin_listener: Option<Arc<std::net::TcpListener>>,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = SupervisorState {
            shared: args.shared,
            config: args.config,
            children: HashMap::new(),
            pool: None,
            attempts: HashMap::new(),
            crashes: HashMap::new(),
            shutting_down: false,
            exit: args.exit,
            outcome: None,
            roles: args.roles,
            admin_listener: args.admin_listener,
        };
        let roles = args.roles;
        // Every deployment that runs jobs has a dispatcher or a worker; admin-only processes
        // (often several, for the API) add nothing by sweeping too.
        let retention =
            (roles.dispatcher || roles.worker) && state.shared.settings.retention.enabled;
        crate::metrics::live_actors("supervisor", 1);
        tracing::info!(
            worker = %state.shared.worker_id,
            dispatcher = roles.dispatcher,
            worker_pool = roles.worker,
            rescuer = roles.rescuer,
            retention,
            admin = state.admin_listener.is_some(),
            handlers = ?state.shared.registry.names(),
            "starting"
        );
        let kinds = [
            (roles.dispatcher, ChildKind::Dispatcher),
            (roles.worker, ChildKind::WorkerPool),
            (roles.rescuer, ChildKind::Rescuer),
            (
                roles.worker
                    && state.shared.coordinator.is_some()
                    && state.shared.databases.can_span_several(),
                ChildKind::Recovery,
            ),
            (roles.dispatcher || roles.worker, ChildKind::Presence),
            (state.admin_listener.is_some(), ChildKind::Admin),
            (retention, ChildKind::Retention),
        ];
        for (wanted, kind) in kinds {
            if wanted {
                // A child that cannot start at all is a configuration or programming error.
                spawn_child(kind, &myself, &mut state)
                    .await
                    .map_err(|e| format!("cannot start {}: {e}", kind.name()))?;
            }
        }
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if state.children.is_empty() {
            state.outcome = Some(Exit::Clean);
            myself.stop(None);
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::metrics::live_actors("supervisor", 0);
        let outcome = state.outcome.take().unwrap_or(Exit::Clean);
        match &outcome {
            Exit::Clean => tracing::info!("stopped"),
            Exit::Escalated { child, reason } => {
                tracing::error!(child = %child, reason = %reason, "supervisor gave up")
            }
        }
        let _ = state.exit.send(Some(outcome));
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::metrics::message_handled("supervisor");
        match msg {
            SupervisorMsg::Shutdown => begin_shutdown(&myself, state),
            SupervisorMsg::AttemptStarted { id, token, actor } => {
                state.attempts.insert(id, (token, actor));
            }
            SupervisorMsg::AttemptEnded { id, token } => {
                if state.attempts.get(&id).is_some_and(|(t, _)| *t == token) {
                    state.attempts.remove(&id);
                }
            }
            SupervisorMsg::ReleaseOrphans => release_orphans(state),
            SupervisorMsg::Restart(kind) => {
                if state.shutting_down {
                    return Ok(());
                }
                tracing::info!(child = kind.name(), "restarting");
                crate::metrics::actor_restarted(kind.name());
                if let Err(e) = spawn_child(kind, &myself, state).await {
                    crashed(&myself, state, kind, format!("restart failed: {e}"));
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (id, reason) = match &event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell.get_id(),
                format!("stopped ({})", reason.as_deref().unwrap_or("no reason")),
            ),
            SupervisionEvent::ActorFailed(cell, err) => (cell.get_id(), format!("failed: {err}")),
            _ => return Ok(()),
        };
        let Some((kind, _)) = state.children.remove(&id) else {
            return Ok(());
        };
        count_children(state, kind);
        if kind == ChildKind::WorkerPool {
            state.pool = None;
            let _ = myself.send_message(SupervisorMsg::ReleaseOrphans);
        }
        if state.shutting_down {
            tracing::info!(child = kind.name(), "child stopped");
            if state.children.is_empty() {
                myself.stop(None);
            }
            return Ok(());
        }
        crashed(&myself, state, kind, reason);
        Ok(())
    }
}

/// A child ended without being asked to: restart it after a backoff, or escalate.
fn crashed(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    kind: ChildKind,
    reason: String,
) {
    let now = Instant::now();
    let window = state.config.window;
    let history = state.crashes.entry(kind).or_default();
    history.push_back(now);
    while history
        .front()
        .is_some_and(|t| now.duration_since(*t) > window)
    {
        history.pop_front();
    }
    let count = history.len();
    if count > state.config.max_restarts {
        tracing::error!(
            child = kind.name(),
            crashes = count,
            window_seconds = window.as_secs(),
            reason = %reason,
            "child crashed too often; escalating: the process exits non-zero"
        );
        crate::metrics::supervisor_escalated(kind.name());
        state.outcome = Some(Exit::Escalated {
            child: kind.name().to_string(),
            reason: format!(
                "crashed {count} times within {} s, last: {reason}",
                window.as_secs()
            ),
        });
        begin_shutdown(myself, state);
        return;
    }
    let delay = backoff(
        state.config.backoff_base.as_secs_f64(),
        state.config.backoff_max.as_secs_f64(),
        count as u32,
        0.1,
    );
    tracing::error!(
        child = kind.name(),
        crashes = count,
        restart_in_ms = delay.as_millis() as u64,
        reason = %reason,
        "child crashed; restarting after backoff"
    );
    send_later(myself, delay, SupervisorMsg::Restart(kind));
}

/// Kills the attempts a dead worker pool left and releases their rows, in a task of its own.
/// Each row is released only once its actor (and with it the handler and its process group)
/// has stopped; the release is fenced by the attempt's token, so a row that was rescued or
/// finished meanwhile is left alone.
fn release_orphans(state: &mut SupervisorState) {
    if state.attempts.is_empty() {
        return;
    }
    let orphans: Vec<(i64, String, ActorCell)> = state
        .attempts
        .drain()
        .map(|(id, (token, actor))| (id, token, actor))
        .collect();
    let store = state.shared.store.clone();
    let worker = state.shared.worker_id.clone();
    tracing::warn!(
        worker = %worker,
        attempts = orphans.len(),
        "the worker pool stopped with attempts running: stopping them and returning their executions to PENDING"
    );
    tokio::spawn(async move {
        for (id, token, actor) in orphans {
            if !stop_actor(&actor).await {
                tracing::error!(
                    execution_id = id,
                    worker = %worker,
                    "an orphaned attempt did not stop; leaving its execution to lease expiry"
                );
                continue;
            }
            match store.release(id, &token).await {
                Ok(Some(released)) => tracing::info!(
                    execution_id = id,
                    worker = %worker,
                    status = ?released,
                    "released the attempt of the stopped worker pool (not counted)"
                ),
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    execution_id = id,
                    worker = %worker,
                    error = %e,
                    "cannot release the attempt of the stopped worker pool; its lease will expire"
                ),
            }
        }
    });
}

/// Kills `actor` and waits until it has stopped; `false` if it did not within
/// [`ORPHAN_STOP_LIMIT`].
async fn stop_actor(actor: &ActorCell) -> bool {
    let started = tokio::time::Instant::now();
    loop {
        if actor.get_status() == ractor::ActorStatus::Stopped {
            return true;
        }
        if started.elapsed() >= ORPHAN_STOP_LIMIT {
            return false;
        }
        actor.kill();
        let _ = actor.wait(Some(Duration::from_millis(100))).await;
    }
}

fn begin_shutdown(myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState) {
    if state.shutting_down {
        return;
    }
    state.shutting_down = true;
    tracing::info!("shutdown: stopping the dispatcher and rescuer, draining the worker pool");
    for (kind, cell) in state.children.values() {
        match kind {
            ChildKind::WorkerPool => {}
            _ => cell.stop(Some("shutdown".into())),
        }
    }
    if let Some(pool) = &state.pool {
        let _ = pool.send_message(PoolMsg::Drain);
    }
    if state.children.is_empty() {
        myself.stop(None);
    }
}

async fn spawn_child(
    kind: ChildKind,
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
) -> Result<(), ractor::SpawnErr> {
    let shared = state.shared.clone();
    let supervisor = myself.get_cell();
    let cell = match kind {
        ChildKind::Dispatcher => {
            let config = DispatcherConfig::from_settings(&shared.settings.dispatcher);
            Actor::spawn_linked(None, Dispatcher, (shared, config), supervisor)
                .await?
                .0
                .get_cell()
        }
        ChildKind::WorkerPool => {
            let args = PoolArgs {
                config: PoolConfig::from_settings(&shared.settings.worker),
                shared,
                book: Some(myself.clone()),
            };
            let (pool, _) = Actor::spawn_linked(None, WorkerPool, args, supervisor).await?;
            state.pool = Some(pool.clone());
            pool.get_cell()
        }
        ChildKind::Rescuer => {
            let config = RescuerConfig::from_settings(&shared.settings.worker);
            Actor::spawn_linked(None, Rescuer, (shared, config), supervisor)
                .await?
                .0
                .get_cell()
        }
        ChildKind::Recovery => {
            let config = RecoveryConfig::from_settings(&shared.settings.worker.transactions);
            Actor::spawn_linked(None, RecoveryService, (shared, config), supervisor)
                .await?
                .0
                .get_cell()
        }
        ChildKind::Presence => {
            Actor::spawn_linked(None, Presence, (shared, state.roles), supervisor)
                .await?
                .0
                .get_cell()
        }
        ChildKind::Retention => {
            let args = RetentionArgs {
                store: shared.store.clone(),
                config: RetentionConfig::from_settings(&shared.settings.retention),
                worker_id: shared.worker_id.clone(),
                reports: Some(shared.retention_reports.clone()),
            };
            Actor::spawn_linked(None, RetentionService, args, supervisor)
                .await?
                .0
                .get_cell()
        }
        ChildKind::Admin => {
            let Some(listener) = state.admin_listener.clone() else {
                return Ok(());
            };
            let args = AdminArgs { shared, listener };
            Actor::spawn_linked(None, AdminServer, args, supervisor)
                .await?
                .0
                .get_cell()
        }
    };
    state.children.insert(cell.get_id(), (kind, cell));
    count_children(state, kind);
    Ok(())
}

/// Live actors of one kind, from the supervisor's own books: a child that crashed never runs
/// its `post_stop`, so the children cannot count themselves.
fn count_children(state: &SupervisorState, kind: ChildKind) {
    let n = state.children.values().filter(|(k, _)| *k == kind).count();
    crate::metrics::live_actors(kind.name(), n);
}
