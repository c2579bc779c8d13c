//! `/api/jobs` (executions; the original system called them jobs): list with filters, read,
//! run a handler once, retry, cancel, delete.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::OpenApi;

use poem_openapi::ApiResponse;

use super::crons::Deleted;
use super::models::{
    Execution, ExecutionCreate, ExecutionsCreated, Page, StatusDto, DEFAULT_PAGE_SIZE,
    MAX_BULK_JOBS,
};
use super::strict::OneOrMany;
use super::{validate, AdminState, ApiTag, OPERATOR};
use crate::entities::job_execution::{ParamSource, Status};
use crate::http::error::{ApiError, ErrorBody};
use crate::store::create::NewExecution;
use crate::store::operator::{Action, RETRYABLE};
use crate::store::queries::ExecutionFilter;

/// Defaults of an ad-hoc run: one attempt, the original system's timeout.
const DEFAULT_MAX_RETRY: i32 = 0;
const DEFAULT_TIMEOUT_SECONDS: i32 = 300;

#[derive(ApiResponse)]
pub enum JobsCreated {
    /// Created: the execution for an object, the ids in the order given for a list.
    #[oai(status = 201)]
    Created(Json<ExecutionsCreated>),
}

pub struct JobsApi {
    pub state: Arc<AdminState>,
}

#[OpenApi(prefix_path = "/api", tag = "ApiTag::Jobs")]
impl JobsApi {
    /// List executions, newest fire time first.
    #[oai(path = "/jobs", method = "get", operation_id = "list_jobs")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        /// Page number, from 1.
        #[oai(validator(minimum(value = "1"), maximum(value = "1000000000")))]
        page: Query<Option<u64>>,
        /// Items per page, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        size: Query<Option<u64>>,
        /// Only executions of this cron.
        cron_id: Query<Option<i64>>,
        /// Only executions in this state.
        status: Query<Option<StatusDto>>,
        /// Only fire times at or after this instant.
        from_date: Query<Option<DateTime<Utc>>>,
        /// Only fire times at or before this instant.
        to_date: Query<Option<DateTime<Utc>>>,
    ) -> Result<Json<Page<Execution>>, ApiError> {
        let page = page.0.unwrap_or(1);
        let size = size.0.unwrap_or(DEFAULT_PAGE_SIZE);
        let filter = ExecutionFilter {
            cron_id: cron_id.0,
            status: status.0.map(Status::from),
            from: from_date.0.map(clamp),
            to: to_date.0.map(clamp),
        };
        let (items, total) = self
            .state
            .store
            .list_executions(&filter, (page - 1) * size, size)
            .await?;
        let items = items.into_iter().map(Execution::from).collect();
        Ok(Json(Page::new(items, total, page, size)))
    }

    /// Run a handler once, now or at `run_at` (`param_source` `api`); or, given a list of
    /// up to 1000 such objects, create them all (or, if any is invalid, none) and answer
    /// their ids in the order given.
    #[oai(path = "/jobs", method = "post", operation_id = "create_job")]
    async fn create(
        &self,
        body: OneOrMany<ExecutionCreate, MAX_BULK_JOBS>,
    ) -> Result<JobsCreated, ApiError> {
        let b = match body {
            OneOrMany::One(b) => b,
            OneOrMany::Many(items) => return self.create_many(items).await,
        };
        let params = b.params.filter(|v| !v.is_null());
        validate::handler(
            &self.state.registry,
            &b.handler_name,
            "params",
            params.as_ref(),
        )?;
        if let Some(at) = b.run_at {
            validate::instant("run_at", at)?;
        }
        let execution = self
            .state
            .store
            .create_adhoc(
                &b.handler_name,
                params,
                b.run_at,
                b.max_retry.unwrap_or(DEFAULT_MAX_RETRY),
                b.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS),
            )
            .await?;
        tracing::info!(execution_id = execution.id, handler = %execution.handler_name, operator = OPERATOR, "admin: execution created");
        let view = self.state.store.with_cron_names(vec![execution]).await?;
        let view = view
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::unavailable("the execution vanished"))?;
        Ok(JobsCreated::Created(Json(ExecutionsCreated::One(
            Box::new(view.into()),
        ))))
    }

    /// Read an execution.
    #[oai(path = "/jobs/:id", method = "get", operation_id = "get_job")]
    async fn get(&self, id: Path<i64>) -> Result<Json<Execution>, ApiError> {
        let view = self
            .state
            .store
            .execution_view(id.0)
            .await?
            .ok_or_else(|| ApiError::not_found("execution", id.0))?;
        Ok(Json(view.into()))
    }

    /// Delete an execution that is not running (cancel a running one first).
    #[oai(path = "/jobs/:id", method = "delete", operation_id = "delete_job")]
    async fn delete(&self, id: Path<i64>) -> Result<Deleted, ApiError> {
        match self.state.store.delete_execution(id.0).await? {
            Action::Done(()) => {
                tracing::info!(
                    execution_id = id.0,
                    operator = OPERATOR,
                    "admin: execution deleted"
                );
                Ok(Deleted::NoContent)
            }
            Action::NotFound => Err(ApiError::not_found("execution", id.0)),
            Action::WrongState(_) | Action::Overlap(_) => Err(ApiError::conflict(
                "running",
                format!("execution {} is RUNNING; cancel it first", id.0),
            )),
        }
    }

    /// Run a FAILED, TIMEOUT or CANCELLED execution again, now, with a fresh retry budget.
    #[oai(path = "/jobs/:id/retry", method = "post", operation_id = "retry_job")]
    async fn retry(&self, id: Path<i64>) -> Result<Json<Execution>, ApiError> {
        let action = self.state.store.retry_execution(id.0).await?;
        let allowed = RETRYABLE.map(Status::as_str).join(", ");
        self.answer(
            id.0,
            action,
            "retry",
            &format!("only {allowed} executions can be retried"),
        )
        .await
    }

    /// Cancel an execution: a PENDING one at once, a RUNNING one is stopped by its worker
    /// within a heartbeat and recorded CANCELLED.
    #[oai(
        path = "/jobs/:id/cancel",
        method = "post",
        operation_id = "cancel_job"
    )]
    async fn cancel(&self, id: Path<i64>) -> Result<Json<Execution>, ApiError> {
        let action = self.state.store.cancel_execution(id.0).await?;
        self.answer(
            id.0,
            action,
            "cancel",
            "only PENDING or RUNNING executions can be cancelled",
        )
        .await
    }
}

impl JobsApi {
    /// The list form of `POST /api/jobs`: every item checked as a single one would be, then
    /// all created in one transaction.
    async fn create_many(&self, items: Vec<ExecutionCreate>) -> Result<JobsCreated, ApiError> {
        if items.len() > MAX_BULK_JOBS {
            return Err(ApiError::Unprocessable(Json(ErrorBody {
                status: 422,
                error: "too_many".into(),
                message: format!(
                    "a list may create at most {MAX_BULK_JOBS} executions; this one has {}",
                    items.len()
                ),
                field: None,
            })));
        }
        let now = if items.iter().any(|b| b.run_at.is_none()) {
            Some(self.state.store.now().await?)
        } else {
            None
        };
        let mut rows = Vec::with_capacity(items.len());
        for (i, b) in items.into_iter().enumerate() {
            let params = b.params.filter(|v| !v.is_null());
            validate::handler(
                &self.state.registry,
                &b.handler_name,
                "params",
                params.as_ref(),
            )
            .map_err(|e| at_item(i, e))?;
            if let Some(at) = b.run_at {
                validate::instant("run_at", at).map_err(|e| at_item(i, e))?;
            }
            let at = match (b.run_at, now) {
                (Some(at), _) | (None, Some(at)) => at,
                (None, None) => return Err(ApiError::unavailable("the database clock is unknown")),
            };
            rows.push(NewExecution {
                job_id: None,
                handler_name: b.handler_name,
                scheduled_time: at,
                run_at: at,
                params,
                param_source: ParamSource::Api,
                max_retry: b.max_retry.unwrap_or(DEFAULT_MAX_RETRY),
                timeout_seconds: b.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS),
            });
        }
        let ids = self.state.store.create_many(&rows).await?;
        tracing::info!(
            count = ids.len(),
            first_id = ids.first(),
            last_id = ids.last(),
            operator = OPERATOR,
            "admin: executions created"
        );
        Ok(JobsCreated::Created(Json(ExecutionsCreated::Many(ids))))
    }

    async fn answer(
        &self,
        id: i64,
        action: Action<crate::entities::job_execution::Model>,
        verb: &str,
        rule: &str,
    ) -> Result<Json<Execution>, ApiError> {
        match action {
            Action::Done(row) => {
                tracing::info!(execution_id = id, status = %row.status, operator = OPERATOR, "admin: execution {verb}");
                let view = self.state.store.with_cron_names(vec![row]).await?;
                let view = view
                    .into_iter()
                    .next()
                    .ok_or_else(|| ApiError::not_found("execution", id))?;
                Ok(Json(view.into()))
            }
            Action::NotFound => Err(ApiError::not_found("execution", id)),
            Action::WrongState(status) => Err(ApiError::conflict(
                "invalid_state",
                format!("execution {id} is {status}: {rule}"),
            )),
            Action::Overlap(message) => Err(ApiError::conflict("overlap", message)),
        }
    }
}

/// A 422 about one field of a list's item `i`: the field becomes `[i].field`.
fn at_item(i: usize, err: ApiError) -> ApiError {
    match err {
        ApiError::Unprocessable(Json(mut body)) => {
            body.field = Some(match body.field.take() {
                Some(field) => format!("[{i}].{field}"),
                None => format!("[{i}]"),
            });
            body.message = format!("item {i}: {}", body.message);
            ApiError::Unprocessable(Json(body))
        }
        other => other,
    }
}

/// Filters outside the years every database stores would only match nothing or fail.
fn clamp(t: DateTime<Utc>) -> DateTime<Utc> {
    let min = DateTime::<Utc>::from_timestamp(0, 0).unwrap_or(t);
    let max = DateTime::<Utc>::from_timestamp(253_402_300_799, 0).unwrap_or(t);
    t.clamp(min, max)
}
