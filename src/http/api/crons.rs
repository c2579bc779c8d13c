//! `/api/crons`: list, create, read, update, delete, enable/disable, run now (the fire
//! times and previews are in `schedules.rs`). Every write is validated in full before anything is stored.

use std::sync::Arc;

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};

use super::models::{
    Cron, CronCreate, CronSelection, CronToggle, CronUpdate, CronsChanged, Execution, Page,
    TriggerRequest, DEFAULT_PAGE_SIZE,
};
use super::strict::{OptionalJson, Strict};
use super::{validate, AdminState, ApiTag, OPERATOR};
use crate::entities::cron_job::MisfirePolicy;
use crate::http::error::ApiError;
use crate::store::crons::{CronChanges, NewCron};
use crate::store::operator::Trigger;
use crate::store::pause::{Bulk, Selection};
use crate::store::queries::ExecutionView;

/// Defaults of a new cron (the original system's).
const DEFAULT_MAX_RETRY: i32 = 3;
const DEFAULT_TIMEOUT_SECONDS: i32 = 300;
const DEFAULT_TIMEZONE: &str = "UTC";

#[derive(ApiResponse)]
pub enum CronCreated {
    /// The cron was created.
    #[oai(status = 201)]
    Created(Json<Cron>),
}

#[derive(ApiResponse)]
pub enum ExecutionCreated {
    /// The execution was created; it runs as soon as a worker is free.
    #[oai(status = 201)]
    Created(Json<Execution>),
}

#[derive(ApiResponse)]
pub enum Deleted {
    /// Deleted.
    #[oai(status = 204)]
    NoContent,
}

pub struct CronsApi {
    pub state: Arc<AdminState>,
}

#[OpenApi(prefix_path = "/api", tag = "ApiTag::Crons")]
impl CronsApi {
    /// List crons by id, a page at a time.
    #[oai(path = "/crons", method = "get", operation_id = "list_crons")]
    async fn list(
        &self,
        /// Page number, from 1.
        #[oai(validator(minimum(value = "1"), maximum(value = "1000000000")))]
        page: Query<Option<u64>>,
        /// Items per page, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        size: Query<Option<u64>>,
        /// Only enabled (true) or disabled (false) crons.
        is_enabled: Query<Option<bool>>,
    ) -> Result<Json<Page<Cron>>, ApiError> {
        let page = page.0.unwrap_or(1);
        let size = size.0.unwrap_or(DEFAULT_PAGE_SIZE);
        let (items, total) = self
            .state
            .store
            .list_crons(is_enabled.0, (page - 1) * size, size)
            .await?;
        let items = items.into_iter().map(Cron::from).collect();
        Ok(Json(Page::new(items, total, page, size)))
    }

    /// Create a cron.
    #[oai(path = "/crons", method = "post", operation_id = "create_cron")]
    async fn create(&self, body: Json<Strict<CronCreate>>) -> Result<CronCreated, ApiError> {
        let b = body.0 .0;
        let timezone = b
            .timezone
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| DEFAULT_TIMEZONE.to_string());
        validate::text("name", &b.name, false)?;
        if let Some(d) = &b.description {
            validate::text("description", d, true)?;
        }
        let expression = validate::expression(&b.cron_expression)?;
        validate::schedule(&expression, &timezone, self.state.min_cron_interval_seconds)?;
        let excluded_dates = validate::excluded_dates(b.excluded_dates.as_deref().unwrap_or(&[]))?;
        let overlap_policy =
            validate::overlap(b.overlap_policy, b.allow_overlap)?.unwrap_or_default();
        if b.pause_note.is_some() && b.is_enabled.unwrap_or(true) {
            return Err(pause_note_needs_pause());
        }
        let params = b.handler_params.filter(|v| !v.is_null());
        validate::handler(
            &self.state.registry,
            &b.handler_name,
            "handler_params",
            params.as_ref(),
        )?;
        let new = NewCron {
            name: b.name,
            description: b.description,
            cron_expression: expression,
            timezone,
            handler_name: b.handler_name,
            handler_params: params,
            is_enabled: b.is_enabled.unwrap_or(true),
            overlap_policy,
            excluded_dates,
            jitter_seconds: b.jitter_seconds.unwrap_or(0).max(0) as u32,
            max_retry: b.max_retry.unwrap_or(DEFAULT_MAX_RETRY),
            timeout_seconds: b.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS),
            misfire_policy: b
                .misfire_policy
                .map(MisfirePolicy::from)
                .unwrap_or_default(),
            on_success: b.on_success.unwrap_or_default(),
            on_failure: b.on_failure.unwrap_or_default(),
            pause_note: note(b.pause_note)?,
            actor: Some(OPERATOR.to_string()),
        };
        let created = self
            .state
            .store
            .insert_cron(&new)
            .await
            .map_err(duplicate)?;
        tracing::info!(job_id = created.id, name = %created.name, handler = %created.handler_name, is_enabled = created.is_enabled, operator = OPERATOR, "admin: cron created");
        Ok(CronCreated::Created(Json(created.into())))
    }

    /// Read a cron.
    #[oai(path = "/crons/:id", method = "get", operation_id = "get_cron")]
    async fn get(&self, id: Path<i64>) -> Result<Json<Cron>, ApiError> {
        Ok(Json(self.find(id.0).await?.into()))
    }

    /// Change a cron; absent fields keep their value.
    #[oai(path = "/crons/:id", method = "put", operation_id = "update_cron")]
    async fn update(
        &self,
        id: Path<i64>,
        body: Json<Strict<CronUpdate>>,
    ) -> Result<Json<Cron>, ApiError> {
        let current = self.find(id.0).await?;
        let b = body.0 .0;
        if let Some(name) = &b.name {
            validate::text("name", name, false)?;
        }
        let description = change(&b.description);
        if let Some(Some(d)) = &description {
            validate::text("description", d, true)?;
        }
        let timezone = b.timezone.map(|t| {
            if t.is_empty() {
                DEFAULT_TIMEZONE.to_string()
            } else {
                t
            }
        });
        let expression = b
            .cron_expression
            .as_ref()
            .map(validate::expression)
            .transpose()?;
        validate::schedule(
            expression.as_deref().unwrap_or(&current.cron_expression),
            timezone.as_deref().unwrap_or(&current.timezone),
            self.state.min_cron_interval_seconds,
        )?;
        let excluded_dates = b
            .excluded_dates
            .as_deref()
            .map(validate::excluded_dates)
            .transpose()?;
        let overlap_policy = validate::overlap(b.overlap_policy, b.allow_overlap)?;
        if b.pause_note.is_some() && b.is_enabled.unwrap_or(current.is_enabled) {
            return Err(pause_note_needs_pause());
        }
        let params_change = change(&b.handler_params).map(|p| p.filter(|v| !v.is_null()));
        let params = match &params_change {
            None => current.handler_params.clone(),
            Some(p) => p.clone(),
        };
        validate::handler(
            &self.state.registry,
            b.handler_name.as_deref().unwrap_or(&current.handler_name),
            "handler_params",
            params.as_ref(),
        )?;
        let changes = CronChanges {
            name: b.name,
            description,
            cron_expression: expression,
            timezone,
            handler_name: b.handler_name,
            handler_params: params_change,
            is_enabled: b.is_enabled,
            overlap_policy,
            excluded_dates,
            jitter_seconds: b.jitter_seconds.map(|j| j.max(0) as u32),
            max_retry: b.max_retry,
            timeout_seconds: b.timeout_seconds,
            misfire_policy: b.misfire_policy.map(MisfirePolicy::from),
            on_success: b.on_success,
            on_failure: b.on_failure,
            pause_note: note(b.pause_note)?,
            actor: Some(OPERATOR.to_string()),
        };
        let updated = self
            .state
            .store
            .update_cron(current, &changes)
            .await
            .map_err(duplicate)?
            .ok_or_else(|| ApiError::not_found("cron", id.0))?;
        tracing::info!(job_id = updated.id, name = %updated.name, is_enabled = updated.is_enabled, operator = OPERATOR, "admin: cron updated");
        Ok(Json(updated.into()))
    }

    /// Delete a cron. Its executions are kept (without a cron); those created ahead of
    /// their fire time are cancelled.
    #[oai(path = "/crons/:id", method = "delete", operation_id = "delete_cron")]
    async fn delete(&self, id: Path<i64>) -> Result<Deleted, ApiError> {
        if !self.state.store.delete_cron(id.0).await? {
            return Err(ApiError::not_found("cron", id.0));
        }
        tracing::info!(job_id = id.0, operator = OPERATOR, "admin: cron deleted");
        Ok(Deleted::NoContent)
    }

    /// Enable or disable a cron. With the body `{"is_enabled": true|false}` the cron is set to
    /// that state, so a retried call is harmless: asking for the state it has changes nothing
    /// and answers the cron as it is. Without a body the state flips. A cron enabled again
    /// fires from its next fire time on; it does not catch up on the time it was off.
    #[oai(
        path = "/crons/:id/toggle",
        method = "post",
        operation_id = "toggle_cron"
    )]
    async fn toggle(
        &self,
        id: Path<i64>,
        body: OptionalJson<CronToggle>,
    ) -> Result<Json<Cron>, ApiError> {
        let current = self.find(id.0).await?;
        let (wanted, pause_note) = match body.0 {
            Some(b) => (b.is_enabled, note(b.pause_note)?),
            None => (!current.is_enabled, None),
        };
        if wanted && pause_note.is_some() {
            return Err(pause_note_needs_pause());
        }
        // Asking for the state it has changes nothing, but a paused cron may get a new note.
        let new_note = pause_note.is_some() && pause_note != current.pause_note;
        if wanted == current.is_enabled && !new_note {
            return Ok(Json(current.into()));
        }
        let changes = CronChanges {
            is_enabled: Some(wanted),
            pause_note,
            actor: Some(OPERATOR.to_string()),
            ..CronChanges::default()
        };
        let updated = self
            .state
            .store
            .update_cron(current, &changes)
            .await?
            .ok_or_else(|| ApiError::not_found("cron", id.0))?;
        tracing::info!(
            job_id = updated.id,
            is_enabled = updated.is_enabled,
            pause_note = updated.pause_note.as_deref(),
            operator = OPERATOR,
            "admin: cron toggled"
        );
        Ok(Json(updated.into()))
    }

    /// Run a cron now, outside its schedule (`param_source` `manual`). The optional body
    /// gives params for this run only, a reason, and whether the cron's overlap policy
    /// applies (default) or the run starts beside anything unfinished.
    #[oai(
        path = "/crons/:id/trigger",
        method = "post",
        operation_id = "trigger_cron"
    )]
    async fn trigger(
        &self,
        id: Path<i64>,
        body: OptionalJson<TriggerRequest>,
    ) -> Result<ExecutionCreated, ApiError> {
        let cron = self.find(id.0).await?;
        if !self.state.registry.contains(&cron.handler_name) {
            return Err(ApiError::conflict(
                "unknown_handler",
                format!(
                    "cron {} uses handler {:?}, which this jobu does not have",
                    cron.id, cron.handler_name
                ),
            ));
        }
        let b = body.0.unwrap_or_default();
        let params = b.params.filter(|v| !v.is_null());
        if params.is_some() {
            validate::handler(
                &self.state.registry,
                &cron.handler_name,
                "params",
                params.as_ref(),
            )?;
        }
        let reason = match b.reason.map(|r| r.trim().to_string()) {
            Some(r) if !r.is_empty() => {
                validate::text("reason", &r, true)?;
                Some(r)
            }
            _ => None,
        };
        let trigger = Trigger {
            params,
            reason,
            requested_by: Some(OPERATOR.to_string()),
            respect_overlap: b.respect_overlap.unwrap_or(true),
        };
        let execution = self
            .state
            .store
            .trigger_cron_with(&cron, &trigger)
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Conflict(m) => ApiError::conflict("overlap", m),
                other => ApiError::store(other),
            })?;
        tracing::info!(
            execution_id = execution.id,
            job_id = cron.id,
            handler = %cron.handler_name,
            status = %execution.status,
            params_overridden = trigger.params.is_some(),
            respect_overlap = trigger.respect_overlap,
            reason = trigger.reason.as_deref(),
            operator = OPERATOR,
            "admin: cron triggered"
        );
        let view = ExecutionView {
            execution,
            cron_name: Some(cron.name),
        };
        Ok(ExecutionCreated::Created(Json(view.into())))
    }

    /// Pause many crons in one transaction: those selected (`ids`, `handler_name` or
    /// `all`) that are enabled are disabled with the note; what they had created ahead
    /// for fire times still to come is cancelled.
    #[oai(path = "/crons/pause", method = "post", operation_id = "pause_crons")]
    async fn pause(
        &self,
        body: Json<Strict<CronSelection>>,
    ) -> Result<Json<CronsChanged>, ApiError> {
        let b = body.0 .0;
        let selection = selection(&b)?;
        let pause_note = note(b.note)?;
        let done = self
            .state
            .store
            .pause_crons(&selection, pause_note.as_deref(), OPERATOR)
            .await?;
        let changed = bulk_answer(done)?;
        tracing::info!(
            selection = ?selection,
            paused = ?changed.changed,
            already_paused = changed.unchanged.len(),
            pause_note = pause_note.as_deref(),
            operator = OPERATOR,
            "admin: crons paused"
        );
        Ok(Json(changed))
    }

    /// Resume many crons in one transaction: those selected that are paused are enabled and
    /// fire from their next fire time on (the paused period is not caught up).
    #[oai(path = "/crons/resume", method = "post", operation_id = "resume_crons")]
    async fn resume(
        &self,
        body: Json<Strict<CronSelection>>,
    ) -> Result<Json<CronsChanged>, ApiError> {
        let b = body.0 .0;
        let selection = selection(&b)?;
        let resume_note = note(b.note)?;
        let done = self.state.store.resume_crons(&selection).await?;
        let changed = bulk_answer(done)?;
        tracing::info!(
            selection = ?selection,
            resumed = ?changed.changed,
            already_enabled = changed.unchanged.len(),
            note = resume_note.as_deref(),
            operator = OPERATOR,
            "admin: crons resumed"
        );
        Ok(Json(changed))
    }
}

/// The one selector a bulk action names.
fn selection(b: &CronSelection) -> Result<Selection, ApiError> {
    let given = [b.ids.is_some(), b.handler_name.is_some(), b.all.is_some()]
        .iter()
        .filter(|g| **g)
        .count();
    if given != 1 {
        return Err(ApiError::invalid(
            "selection",
            "body",
            "name exactly one of ids, handler_name or all: true",
        ));
    }
    Ok(match (&b.ids, &b.handler_name, b.all) {
        (Some(ids), _, _) => Selection::Ids(ids.clone()),
        (_, Some(handler), _) => {
            validate::text("handler_name", handler, false)?;
            Selection::Handler(handler.clone())
        }
        (_, _, Some(true)) => Selection::All,
        _ => {
            return Err(ApiError::invalid(
                "selection",
                "all",
                "all must be true when it is the selection",
            ))
        }
    })
}

fn bulk_answer(done: Bulk) -> Result<CronsChanged, ApiError> {
    match done {
        Bulk::Done { changed, unchanged } => Ok(CronsChanged { changed, unchanged }),
        Bulk::Unknown(ids) => Err(ApiError::not_found_message(format!(
            "no cron has id {}; nothing changed",
            ids.iter()
                .map(|id| id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn pause_note_needs_pause() -> ApiError {
    ApiError::invalid(
        "pause_note_without_pause",
        "pause_note",
        "pause_note goes with is_enabled: false (a note says why a cron is paused)",
    )
}

impl CronsApi {
    async fn find(&self, id: i64) -> Result<crate::entities::cron_job::Model, ApiError> {
        find_cron(&self.state, id).await
    }
}

/// The cron `id`, or 404.
pub(super) async fn find_cron(
    state: &AdminState,
    id: i64,
) -> Result<crate::entities::cron_job::Model, ApiError> {
    state
        .store
        .cron(id)
        .await?
        .ok_or_else(|| ApiError::not_found("cron", id))
}

/// A pause note as stored: trimmed, empty means none; control characters are refused.
fn note(note: Option<String>) -> Result<Option<String>, ApiError> {
    match note.map(|n| n.trim().to_string()).filter(|n| !n.is_empty()) {
        Some(n) => {
            validate::text("pause_note", &n, true)?;
            Ok(Some(n))
        }
        None => Ok(None),
    }
}

/// `None`: the field was absent; `Some(None)`: it was `null` (clear it).
fn change<T: Clone>(field: &poem_openapi::types::MaybeUndefined<T>) -> Option<Option<T>> {
    field.as_opt_ref().map(|v| v.cloned())
}

/// A taken name is a 409 naming the field.
fn duplicate(e: crate::store::StoreError) -> ApiError {
    match e {
        crate::store::StoreError::Conflict(message) => {
            ApiError::conflict_on("duplicate_name", "name", message)
        }
        other => ApiError::store(other),
    }
}
