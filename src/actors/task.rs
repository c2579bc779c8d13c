//! TaskActor: runs one handler attempt, then stops. Its end is the outcome, read by its
//! supervisor, the WorkerPool:
//!
//! - a normal stop carries the handler's result in the final state: SUCCESS;
//! - a failure (the handler's error, returned from `handle`) or a panic (caught by ractor):
//!   FAILED with the message;
//! - a kill by the pool (deadline, operator cancel, lost lease, shutdown) drops the handler's
//!   future at its next await: the pool knows why it killed the actor.
//!
//! A chained execution first reads its parent's outcome into the handler's context.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::Value;
use tracing::Instrument;

use crate::entities::job_execution::Status;
use crate::handlers::{ExecutionContext, Handler};
use crate::store::Store;

pub struct TaskActor;

pub struct TaskArgs {
    pub handler: Arc<dyn Handler>,
    pub params: Value,
    pub ctx: ExecutionContext,
    /// Set for a chained execution (`ctx.parent_execution_id`): the store its parent's
    /// outcome is read from, here rather than in the pool so a slow read holds up this
    /// attempt only (its deadline still applies).
    pub parent_lookup: Option<Store>,
}

pub struct TaskState {
    args: Option<TaskArgs>,
    /// Set when the handler returned successfully; the pool reads it from the final state.
    pub result: Option<Value>,
}

pub enum TaskMsg {
    Run,
}

impl Actor for TaskActor {
    type Msg = TaskMsg;
    type State = TaskState;
    type Arguments = TaskArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: TaskArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_message(TaskMsg::Run)?;
        Ok(TaskState {
            args: Some(args),
            result: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TaskMsg::Run => {
                let Some(TaskArgs {
                    handler,
                    params,
                    mut ctx,
                    parent_lookup,
                }) = state.args.take()
                else {
                    return Ok(());
                };
                if let (Some(store), Some(parent)) = (parent_lookup, ctx.parent_execution_id) {
                    // A failed read fails the attempt (retried as any failure): the handler
                    // must not take a missing outcome for a parent that is gone.
                    let outcome = store
                        .parent_outcome(parent)
                        .await
                        .map_err(|e| format!("cannot read the parent execution {parent}: {e}"))?;
                    if let Some(p) = outcome {
                        ctx.parent_status = p.status.parse::<Status>().ok();
                        ctx.parent_result = p.result.filter(|r| !r.is_null());
                        ctx.parent_error = p.error_message;
                    }
                }
                let span = tracing::info_span!(
                    "attempt",
                    execution_id = ctx.execution_id,
                    job_id = ctx.job_id,
                    handler = %ctx.handler_name,
                    attempt = ctx.attempt,
                    worker = %ctx.worker_id,
                );
                let result = handler.run(params, ctx).instrument(span).await?;
                state.result = Some(result);
                myself.stop(None);
            }
        }
        Ok(())
    }
}
