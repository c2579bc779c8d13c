//! The AdminServer: serves the admin HTTP application (`crate::http`) under the supervisor.
//! The listening socket is bound once by [`crate::Runtime::start`] (so a taken port or an
//! unsafe exposure stops the process at start with a clear message) and each start of this
//! actor serves a clone of it; a server that fails makes the actor fail, and the supervisor
//! restarts it like any other child.

use std::net::TcpListener;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::Shared;
use crate::http::api::AdminState;

pub enum AdminMsg {
    /// The server task ended on its own: the actor fails so the supervisor restarts it.
    ServerEnded(String),
}

pub struct AdminServer;

pub struct AdminArgs {
    pub(crate) shared: Arc<Shared>,
    pub listener: Arc<TcpListener>,
}

pub struct AdminServerState {
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl Actor for AdminServer {
    type Msg = AdminMsg;
    type State = AdminServerState;
    type Arguments = AdminArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: AdminArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let shared = args.shared;
        let listener = args.listener.try_clone()?;
        let addr = listener.local_addr()?;
        let settings = &shared.settings;
        let state = Arc::new(AdminState {
            store: shared.store.clone(),
            registry: shared.registry.clone(),
            min_cron_interval_seconds: settings.dispatcher.min_cron_interval_seconds,
            presence_stale_seconds: settings.admin.presence_interval_seconds as f64
                * crate::http::PRESENCE_STALE_INTERVALS,
            databases: shared.databases.clone(),
        });
        let app = crate::http::app(state, &settings.admin);
        let (stop, stopped) = oneshot::channel::<()>();
        let me = myself.clone();
        let server = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            let why = match crate::http::serve(listener, app, shutdown).await {
                Ok(()) => "the HTTP server stopped".to_string(),
                Err(e) => format!("the HTTP server failed: {e}"),
            };
            let _ = me.send_message(AdminMsg::ServerEnded(why));
        });
        tracing::info!(
            address = %addr,
            auth = settings.admin.token().is_some(),
            "admin API listening: console at http://{addr}/crons, API docs at http://{addr}/docs"
        );
        Ok(AdminServerState {
            stop: Some(stop),
            server: Some(server),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(stop) = state.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = state.server.take() {
            // Open connections get the server's grace period, then are cut.
            if tokio::time::timeout(std::time::Duration::from_secs(6), server)
                .await
                .is_err()
            {
                tracing::warn!("admin API did not stop in time");
            }
        }
        tracing::info!("admin API stopped");
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::metrics::message_handled("admin");
        match msg {
            AdminMsg::ServerEnded(why) => Err(why.into()),
        }
    }
}
