//! The JSON shapes of the admin API. Empty optional fields are `null`, as the original system
//! answered (the spec marks them nullable: `crate::http::spec`); JSON documents (params,
//! results) are free-form. Request ranges live in the schema, so a generated client knows
//! them too.

use chrono::{DateTime, Utc};
use poem_openapi::{Enum, Object, Union};
use serde::Deserialize;
use serde_json::Value;

use crate::entities::cron_job::{self, MisfirePolicy, OverlapPolicy};
use crate::entities::job_execution::{CancelReason, ParamSource, Status};
use crate::store::queries::ExecutionView;
use crate::store::workers::LiveWorker;

/// An instant in an answer: RFC 3339 in UTC with `Z`, as the CLI prints them (poem-openapi
/// would write `+00:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instant(pub DateTime<Utc>);

impl poem_openapi::types::Type for Instant {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> std::borrow::Cow<'static, str> {
        "string_date-time".into()
    }

    fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
        poem_openapi::registry::MetaSchemaRef::Inline(Box::new(
            poem_openapi::registry::MetaSchema::new_with_format("string", "date-time"),
        ))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl poem_openapi::types::ToJSON for Instant {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(
            self.0.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        ))
    }
}

impl poem_openapi::types::ParseFromJSON for Instant {
    fn parse_from_json(value: Option<Value>) -> poem_openapi::types::ParseResult<Self> {
        DateTime::<Utc>::parse_from_json(value)
            .map(Instant)
            .map_err(poem_openapi::types::ParseError::propagate)
    }
}

impl From<DateTime<Utc>> for Instant {
    fn from(t: DateTime<Utc>) -> Self {
        Instant(t)
    }
}

/// Largest page size of a list.
pub const MAX_PAGE_SIZE: u64 = 100;
/// Page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: u64 = 20;
/// Most executions one `POST /api/jobs` may create from a list.
pub const MAX_BULK_JOBS: usize = 1000;

/// What happens to fire times missed while no dispatcher ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Deserialize)]
#[oai(rename_all = "lowercase", rename = "MisfirePolicy")]
#[serde(rename_all = "lowercase")]
pub enum MisfirePolicyDto {
    Skip,
    Latest,
    All,
}

impl From<MisfirePolicyDto> for MisfirePolicy {
    fn from(p: MisfirePolicyDto) -> Self {
        match p {
            MisfirePolicyDto::Skip => MisfirePolicy::Skip,
            MisfirePolicyDto::Latest => MisfirePolicy::Latest,
            MisfirePolicyDto::All => MisfirePolicy::All,
        }
    }
}

/// The state of an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "SCREAMING_SNAKE_CASE", rename = "Status")]
pub enum StatusDto {
    Pending,
    Running,
    Success,
    Failed,
    Timeout,
    Cancelled,
    /// A fire time buffered behind an unfinished execution of its cron.
    Waiting,
    /// A fire time its cron's overlap policy did not run.
    Skipped,
    /// Fire times dropped by the misfire policy (every dispatcher was down).
    Missed,
    /// A fire time on one of the cron's excluded dates.
    Excluded,
}

impl From<StatusDto> for Status {
    fn from(s: StatusDto) -> Self {
        match s {
            StatusDto::Pending => Status::Pending,
            StatusDto::Running => Status::Running,
            StatusDto::Success => Status::Success,
            StatusDto::Failed => Status::Failed,
            StatusDto::Timeout => Status::Timeout,
            StatusDto::Cancelled => Status::Cancelled,
            StatusDto::Waiting => Status::Waiting,
            StatusDto::Skipped => Status::Skipped,
            StatusDto::Missed => Status::Missed,
            StatusDto::Excluded => Status::Excluded,
        }
    }
}

impl From<Status> for StatusDto {
    fn from(s: Status) -> Self {
        match s {
            Status::Pending => StatusDto::Pending,
            Status::Running => StatusDto::Running,
            Status::Success => StatusDto::Success,
            Status::Failed => StatusDto::Failed,
            Status::Timeout => StatusDto::Timeout,
            Status::Cancelled => StatusDto::Cancelled,
            Status::Waiting => StatusDto::Waiting,
            Status::Skipped => StatusDto::Skipped,
            Status::Missed => StatusDto::Missed,
            Status::Excluded => StatusDto::Excluded,
        }
    }
}

/// Where an execution came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase", rename = "ParamSource")]
pub enum ParamSourceDto {
    Cron,
    Manual,
    Api,
    /// Created by a backfill for a past fire time.
    Backfill,
    /// Started by another cron's execution ending (`on_success`, `on_failure`).
    Chain,
}

/// Why a CANCELLED execution was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase", rename = "CancelReason")]
pub enum CancelReasonDto {
    /// An operator cancelled it.
    Operator,
    /// It was created ahead of its fire time and its cron was disabled or deleted first.
    Unscheduled,
    /// Its cron's overlap policy is `replace` and a later fire time came.
    Replaced,
}

/// What a fire time does while an execution of the cron is unfinished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Deserialize)]
#[oai(rename_all = "snake_case", rename = "OverlapPolicy")]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicyDto {
    /// Every fire time runs, concurrently if need be (the default).
    Allow,
    /// Not run while one is unfinished (recorded SKIPPED).
    Skip,
    /// One fire time waits and starts when the unfinished one ends; further ones are skipped.
    BufferOne,
    /// Every fire time runs, one after another, in fire-time order.
    BufferAll,
    /// The unfinished execution is cancelled; the new one starts once it has stopped.
    Replace,
}

impl From<OverlapPolicyDto> for OverlapPolicy {
    fn from(p: OverlapPolicyDto) -> Self {
        match p {
            OverlapPolicyDto::Allow => OverlapPolicy::Allow,
            OverlapPolicyDto::Skip => OverlapPolicy::Skip,
            OverlapPolicyDto::BufferOne => OverlapPolicy::BufferOne,
            OverlapPolicyDto::BufferAll => OverlapPolicy::BufferAll,
            OverlapPolicyDto::Replace => OverlapPolicy::Replace,
        }
    }
}

impl From<OverlapPolicy> for OverlapPolicyDto {
    fn from(p: OverlapPolicy) -> Self {
        match p {
            OverlapPolicy::Allow => OverlapPolicyDto::Allow,
            OverlapPolicy::Skip => OverlapPolicyDto::Skip,
            OverlapPolicy::BufferOne => OverlapPolicyDto::BufferOne,
            OverlapPolicy::BufferAll => OverlapPolicyDto::BufferAll,
            OverlapPolicy::Replace => OverlapPolicyDto::Replace,
        }
    }
}

/// A cron expression, or a list of them whose fire times are the union (a time matched by
/// two runs once).
#[derive(Debug, Clone, PartialEq, Eq, Union, Deserialize)]
#[oai(one_of)]
#[serde(untagged)]
pub enum CronExpressionDto {
    One(String),
    Many(Vec<String>),
}

impl CronExpressionDto {
    /// The expression as stored: one expression, or a JSON array of them.
    pub fn stored(&self) -> String {
        match self {
            CronExpressionDto::One(e) => e.clone(),
            CronExpressionDto::Many(list) => crate::schedule::Schedule::canonical_text(list),
        }
    }

    /// As a stored expression reads back.
    pub fn from_stored(text: &str) -> CronExpressionDto {
        if text.trim_start().starts_with('[') {
            if let Ok(list) = serde_json::from_str::<Vec<String>>(text) {
                return CronExpressionDto::Many(list);
            }
        }
        CronExpressionDto::One(text.to_string())
    }
}

/// A schedule.
#[derive(Debug, Clone, Object)]
pub struct Cron {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub cron_expression: CronExpressionDto,
    pub timezone: String,
    pub handler_name: String,
    pub handler_params: Option<Value>,
    pub is_enabled: bool,
    pub overlap_policy: OverlapPolicyDto,
    /// `overlap_policy` is `allow` (the field of earlier versions).
    pub allow_overlap: bool,
    /// Local dates (`YYYY-MM-DD`, in `timezone`) on which the cron does not fire.
    pub excluded_dates: Vec<String>,
    /// Each fire time starts up to this many seconds late (deterministic per fire time).
    pub jitter_seconds: i32,
    pub max_retry: i32,
    pub timeout_seconds: i32,
    pub misfire_policy: MisfirePolicyDto,
    /// The next fire time: the earliest one the dispatchers have not created yet. Absent
    /// while the cron is disabled.
    pub next_fire_time: Option<Instant>,
    /// The latest fire time created.
    pub last_fire_time: Option<Instant>,
    pub created_at: Instant,
    pub updated_at: Instant,
    /// Crons run once after each execution of this one that ends SUCCESS.
    pub on_success: Vec<i64>,
    /// Crons run once after each execution of this one that ends FAILED or TIMEOUT (after
    /// its retries).
    pub on_failure: Vec<i64>,
    /// Why the cron is paused, when and by whom; absent while it is enabled.
    pub pause_note: Option<String>,
    pub paused_at: Option<Instant>,
    pub paused_by: Option<String>,
}

impl From<cron_job::Model> for Cron {
    fn from(m: cron_job::Model) -> Self {
        // Until a dispatcher reaches a new or edited cron its marker is empty: show the next
        // fire time the schedule gives. A disabled cron fires at no time.
        let next_fire_time = if !m.is_enabled {
            None
        } else {
            m.next_fire_time.or_else(|| {
                crate::schedule::Schedule::parse(&m.cron_expression, &m.timezone)
                    .ok()
                    .and_then(|s| s.next_after(Utc::now()))
            })
        };
        let policy = match m
            .misfire_policy
            .parse::<MisfirePolicy>()
            .unwrap_or_default()
        {
            MisfirePolicy::Skip => MisfirePolicyDto::Skip,
            MisfirePolicy::Latest => MisfirePolicyDto::Latest,
            MisfirePolicy::All => MisfirePolicyDto::All,
        };
        let overlap = m
            .overlap_policy
            .parse::<OverlapPolicy>()
            .unwrap_or_default();
        Cron {
            id: m.id,
            name: m.name,
            description: m.description,
            cron_expression: CronExpressionDto::from_stored(&m.cron_expression),
            timezone: m.timezone,
            handler_name: m.handler_name,
            handler_params: m.handler_params.filter(|v| !v.is_null()),
            is_enabled: m.is_enabled,
            overlap_policy: overlap.into(),
            allow_overlap: overlap == OverlapPolicy::Allow,
            excluded_dates: crate::store::crons::stored_dates(m.excluded_dates.as_ref())
                .iter()
                .map(|d| d.format("%Y-%m-%d").to_string())
                .collect(),
            jitter_seconds: m.jitter_seconds,
            max_retry: m.max_retry,
            timeout_seconds: m.timeout_seconds,
            misfire_policy: policy,
            next_fire_time: next_fire_time.map(Instant),
            last_fire_time: m.last_fire_time.map(Instant),
            created_at: Instant(m.created_at),
            updated_at: Instant(m.updated_at),
            on_success: crate::store::chains::stored_ids(m.on_success.as_ref()),
            on_failure: crate::store::chains::stored_ids(m.on_failure.as_ref()),
            pause_note: m.pause_note,
            paused_at: m.paused_at.map(Instant),
            paused_by: m.paused_by,
        }
    }
}

/// A new schedule. Unknown fields are refused so a typo does not pass silently.
#[derive(Debug, Clone, Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct CronCreate {
    /// Unique, 1 to 100 characters.
    #[oai(validator(min_length = 1, max_length = 100))]
    pub name: String,
    #[oai(validator(max_length = 10000))]
    pub description: Option<String>,
    /// Five-field Unix crontab (or six with seconds first, or a macro such as `@daily`),
    /// croniter's `L`, `nW`, `D#n` and `LD` day forms included; or a list of up to 32 such
    /// expressions, whose fire times are the union.
    pub cron_expression: CronExpressionDto,
    /// IANA time zone the expression is read in; default `UTC`.
    #[oai(validator(max_length = 64))]
    pub timezone: Option<String>,
    /// A handler this binary has; the spec lists them (`enum`), as does `GET /api/stats`.
    #[oai(validator(min_length = 1, max_length = 100))]
    pub handler_name: String,
    /// Params given to the handler; the handler checks them.
    pub handler_params: Option<Value>,
    /// Default true.
    pub is_enabled: Option<bool>,
    /// Default `allow`.
    pub overlap_policy: Option<OverlapPolicyDto>,
    /// The field of earlier versions: true = `allow`, false = `skip`. Refused when it
    /// disagrees with `overlap_policy`.
    pub allow_overlap: Option<bool>,
    /// Local dates (`YYYY-MM-DD`, in `timezone`) on which the cron does not fire (holidays);
    /// at most 1000.
    pub excluded_dates: Option<Vec<String>>,
    /// Each fire time starts up to this many seconds late, by a delay derived from (cron,
    /// fire time), never at or past the next fire time; default 0.
    #[oai(validator(minimum(value = "0"), maximum(value = "86400")))]
    pub jitter_seconds: Option<i32>,
    /// Retries after the first attempt; default 3.
    #[oai(validator(minimum(value = "0"), maximum(value = "100")))]
    pub max_retry: Option<i32>,
    /// Default 300.
    #[oai(validator(minimum(value = "1"), maximum(value = "86400")))]
    pub timeout_seconds: Option<i32>,
    /// Default `latest`.
    pub misfire_policy: Option<MisfirePolicyDto>,
    /// Crons to run once after each execution that ends SUCCESS; at most 32, no cycle.
    pub on_success: Option<Vec<i64>>,
    /// Crons to run once after each execution that ends FAILED or TIMEOUT, retries spent.
    pub on_failure: Option<Vec<i64>>,
    /// With `is_enabled: false`: why the cron is paused.
    #[oai(validator(max_length = 1000))]
    pub pause_note: Option<String>,
}

/// Changes to a schedule; absent fields keep their value, `null` clears `description` and
/// `handler_params`.
#[derive(Debug, Clone, Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct CronUpdate {
    #[oai(validator(min_length = 1, max_length = 100))]
    pub name: Option<String>,
    #[oai(validator(max_length = 10000))]
    #[serde(default)]
    pub description: poem_openapi::types::MaybeUndefined<String>,
    pub cron_expression: Option<CronExpressionDto>,
    #[oai(validator(max_length = 64))]
    pub timezone: Option<String>,
    #[oai(validator(min_length = 1, max_length = 100))]
    pub handler_name: Option<String>,
    #[serde(default)]
    pub handler_params: poem_openapi::types::MaybeUndefined<Value>,
    pub is_enabled: Option<bool>,
    pub overlap_policy: Option<OverlapPolicyDto>,
    /// true = `allow`, false = `skip` (the field of earlier versions).
    pub allow_overlap: Option<bool>,
    /// The whole list; `[]` clears it.
    pub excluded_dates: Option<Vec<String>>,
    #[oai(validator(minimum(value = "0"), maximum(value = "86400")))]
    pub jitter_seconds: Option<i32>,
    #[oai(validator(minimum(value = "0"), maximum(value = "100")))]
    pub max_retry: Option<i32>,
    #[oai(validator(minimum(value = "1"), maximum(value = "86400")))]
    pub timeout_seconds: Option<i32>,
    pub misfire_policy: Option<MisfirePolicyDto>,
    /// The whole list; `[]` clears it.
    pub on_success: Option<Vec<i64>>,
    /// The whole list; `[]` clears it.
    pub on_failure: Option<Vec<i64>>,
    /// With `is_enabled: false` (or on a paused cron): why it is paused.
    #[oai(validator(max_length = 1000))]
    pub pause_note: Option<String>,
}

/// The state `POST /api/crons/{id}/toggle` sets. Without this body the call flips the state.
#[derive(Debug, Clone, Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct CronToggle {
    /// `true` enables the cron, `false` disables it; asking for the current state changes
    /// nothing.
    pub is_enabled: bool,
    /// With `false`: why the cron is paused (kept until it is enabled).
    #[oai(validator(max_length = 1000))]
    pub pause_note: Option<String>,
}

/// `POST /api/crons/{id}/trigger`: run the cron now, optionally otherwise than it is set.
#[derive(Debug, Clone, Default, Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    /// Params for this run only, instead of the cron's; checked by its handler as a cron's
    /// are. Absent (or `null`): the cron's params.
    pub params: Option<Value>,
    /// Why the run was asked for; stored on the execution.
    #[oai(validator(max_length = 1000))]
    pub reason: Option<String>,
    /// Default true: the cron's overlap policy applies and a refusal is a 409. `false` runs
    /// it beside whatever is unfinished.
    pub respect_overlap: Option<bool>,
}

/// Which crons `POST /api/crons/pause` and `/resume` act on: exactly one of `ids`,
/// `handler_name` or `all: true`.
#[derive(Debug, Clone, Default, Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct CronSelection {
    /// These crons (1 to 1000 ids; an unknown id is a 404 and nothing changes).
    #[oai(validator(min_items = 1, max_items = 1000))]
    pub ids: Option<Vec<i64>>,
    /// Every cron of this handler.
    #[oai(validator(min_length = 1, max_length = 100))]
    pub handler_name: Option<String>,
    /// Every cron.
    pub all: Option<bool>,
    /// Pause: why (shown with each cron until it is resumed). Resume: logged.
    #[oai(validator(max_length = 1000))]
    pub note: Option<String>,
}

/// What a bulk pause or resume changed.
#[derive(Debug, Clone, Object)]
pub struct CronsChanged {
    /// The crons it changed, by id.
    pub changed: Vec<i64>,
    /// Selected crons that were in that state already.
    pub unchanged: Vec<i64>,
}

/// One page of a list, and where it stands in the whole.
#[derive(Debug, Clone, Object)]
pub struct Page<T: poem_openapi::types::ParseFromJSON + poem_openapi::types::ToJSON> {
    pub items: Vec<T>,
    /// How many match in all.
    pub total: u64,
    pub page: u64,
    pub size: u64,
    pub pages: u64,
}

impl<T: poem_openapi::types::ParseFromJSON + poem_openapi::types::ToJSON> Page<T> {
    pub fn new(items: Vec<T>, total: u64, page: u64, size: u64) -> Self {
        Page {
            items,
            total,
            page,
            size,
            pages: total.div_ceil(size.max(1)),
        }
    }
}

/// An execution: one fire time of a cron, or one ad-hoc run.
#[derive(Debug, Clone, Object)]
pub struct Execution {
    pub id: i64,
    /// The cron; absent for ad-hoc runs and deleted crons.
    pub job_id: Option<i64>,
    pub cron_name: Option<String>,
    pub handler_name: String,
    pub scheduled_time: Instant,
    /// When it may run next (the fire time, or after a retry backoff).
    pub run_at: Instant,
    pub status: StatusDto,
    pub params: Option<Value>,
    pub param_source: ParamSourceDto,
    /// Retries so far; the current or last attempt is number retry_count + 1.
    pub retry_count: i32,
    pub max_retry: i32,
    pub timeout_seconds: i32,
    pub worker_id: Option<String>,
    pub lease_expires_at: Option<Instant>,
    pub cancel_requested: bool,
    /// Why it was cancelled, when it is CANCELLED.
    pub cancel_reason: Option<CancelReasonDto>,
    pub started_at: Option<Instant>,
    pub finished_at: Option<Instant>,
    pub error_message: Option<String>,
    pub result: Option<Value>,
    pub created_at: Instant,
    pub updated_at: Instant,
    /// A MISSED row stands for the fire times from `scheduled_time` to this one.
    pub fire_time_until: Option<Instant>,
    /// How many fire times the row stands for (1 but for MISSED rows).
    pub fire_count: i32,
    /// Why an operator asked for this run (manual runs, backfills).
    pub reason: Option<String>,
    /// Who asked for it (manual runs, backfills).
    pub requested_by: Option<String>,
    /// The execution whose final outcome started this one (`param_source` `chain`).
    pub parent_execution_id: Option<i64>,
    /// The cron that execution's chain meant to start (kept when that cron is deleted).
    pub chain_child: Option<i64>,
    /// The backfill that created or re-ran it.
    pub backfill_id: Option<i64>,
}

impl From<ExecutionView> for Execution {
    fn from(v: ExecutionView) -> Self {
        let e = v.execution;
        let status = e
            .status
            .parse::<Status>()
            .map(StatusDto::from)
            .unwrap_or(StatusDto::Pending);
        let param_source = match e.param_source.as_str() {
            s if s == ParamSource::Manual.as_str() => ParamSourceDto::Manual,
            s if s == ParamSource::Api.as_str() => ParamSourceDto::Api,
            s if s == ParamSource::Backfill.as_str() => ParamSourceDto::Backfill,
            s if s == ParamSource::Chain.as_str() => ParamSourceDto::Chain,
            _ => ParamSourceDto::Cron,
        };
        Execution {
            id: e.id,
            job_id: e.job_id,
            cron_name: v.cron_name,
            handler_name: e.handler_name,
            scheduled_time: Instant(e.scheduled_time),
            run_at: Instant(e.run_at),
            status,
            params: e.params.filter(|v| !v.is_null()),
            param_source,
            retry_count: e.retry_count,
            max_retry: e.max_retry,
            timeout_seconds: e.timeout_seconds,
            worker_id: e.worker_id,
            lease_expires_at: e.lease_expires_at.map(Instant),
            cancel_requested: e.cancel_requested,
            cancel_reason: match e.cancel_reason.as_deref() {
                Some(r) if r == CancelReason::Operator.as_str() => Some(CancelReasonDto::Operator),
                Some(r) if r == CancelReason::Unscheduled.as_str() => {
                    Some(CancelReasonDto::Unscheduled)
                }
                Some(r) if r == CancelReason::Replaced.as_str() => Some(CancelReasonDto::Replaced),
                _ => None,
            },
            started_at: e.started_at.map(Instant),
            finished_at: e.finished_at.map(Instant),
            error_message: e.error_message,
            result: e.result.filter(|v| !v.is_null()),
            created_at: Instant(e.created_at),
            updated_at: Instant(e.updated_at),
            fire_time_until: e.fire_time_until.map(Instant),
            fire_count: e.fire_count,
            reason: e.reason,
            requested_by: e.requested_by,
            parent_execution_id: e.parent_execution_id,
            chain_child: e.chain_child,
            backfill_id: e.backfill_id,
        }
    }
}

/// A run of a handler outside any cron.
#[derive(Debug, Clone, Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct ExecutionCreate {
    #[oai(validator(min_length = 1, max_length = 100))]
    pub handler_name: String,
    pub params: Option<Value>,
    /// When it may run; default now. Between 1970 and 9999.
    pub run_at: Option<DateTime<Utc>>,
    /// Default 0: one attempt.
    #[oai(validator(minimum(value = "0"), maximum(value = "100")))]
    pub max_retry: Option<i32>,
    /// Default 300.
    #[oai(validator(minimum(value = "1"), maximum(value = "86400")))]
    pub timeout_seconds: Option<i32>,
}

/// What `POST /api/jobs` answers: the execution it created from an object, or the ids of
/// those it created from a list, in the order given.
#[derive(Debug, Clone)]
pub enum ExecutionsCreated {
    One(Box<Execution>),
    Many(Vec<i64>),
}

impl poem_openapi::types::Type for ExecutionsCreated {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> std::borrow::Cow<'static, str> {
        "ExecutionsCreated".into()
    }

    fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
        use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            one_of: vec![
                Execution::schema_ref(),
                MetaSchemaRef::Inline(Box::new(MetaSchema {
                    items: Some(Box::new(<i64 as poem_openapi::types::Type>::schema_ref())),
                    max_items: Some(MAX_BULK_JOBS),
                    ..MetaSchema::new("array")
                })),
            ],
            ..MetaSchema::ANY
        }))
    }

    fn register(registry: &mut poem_openapi::registry::Registry) {
        Execution::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl poem_openapi::types::ToJSON for ExecutionsCreated {
    fn to_json(&self) -> Option<Value> {
        match self {
            ExecutionsCreated::One(execution) => execution.to_json(),
            ExecutionsCreated::Many(ids) => ids.to_json(),
        }
    }
}

/// Counts per status; every status is present.
#[derive(Debug, Clone, Object)]
pub struct StatusCounts {
    #[oai(rename = "PENDING")]
    pub pending: u64,
    #[oai(rename = "RUNNING")]
    pub running: u64,
    #[oai(rename = "SUCCESS")]
    pub success: u64,
    #[oai(rename = "FAILED")]
    pub failed: u64,
    #[oai(rename = "TIMEOUT")]
    pub timeout: u64,
    #[oai(rename = "CANCELLED")]
    pub cancelled: u64,
    #[oai(rename = "WAITING")]
    pub waiting: u64,
    #[oai(rename = "SKIPPED")]
    pub skipped: u64,
    #[oai(rename = "MISSED")]
    pub missed: u64,
    #[oai(rename = "EXCLUDED")]
    pub excluded: u64,
}

impl From<&std::collections::BTreeMap<Status, u64>> for StatusCounts {
    fn from(m: &std::collections::BTreeMap<Status, u64>) -> Self {
        let n = |s: Status| m.get(&s).copied().unwrap_or(0);
        StatusCounts {
            pending: n(Status::Pending),
            running: n(Status::Running),
            success: n(Status::Success),
            failed: n(Status::Failed),
            timeout: n(Status::Timeout),
            cancelled: n(Status::Cancelled),
            waiting: n(Status::Waiting),
            skipped: n(Status::Skipped),
            missed: n(Status::Missed),
            excluded: n(Status::Excluded),
        }
    }
}

#[derive(Debug, Clone, Object)]
pub struct HandlerCounts {
    pub handler_name: String,
    pub by_status: StatusCounts,
}

/// Start minus scheduled time of the latest first attempts.
#[derive(Debug, Clone, Object)]
pub struct LagStats {
    /// How many of the latest started executions are looked at, at most.
    pub sample_size: u64,
    pub count: u64,
    pub avg: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Debug, Clone, Object)]
pub struct Stats {
    pub by_status: StatusCounts,
    pub by_handler: Vec<HandlerCounts>,
    /// How long the oldest due PENDING execution has waited; absent when none waits.
    pub oldest_pending_age_seconds: Option<f64>,
    pub schedule_lag_seconds: LagStats,
    /// The handlers this admin process accepts for new crons and runs.
    pub handlers: Vec<String>,
}

/// A live jobu process.
#[derive(Debug, Clone, Object)]
pub struct Worker {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub roles: Vec<String>,
    pub handlers: Vec<String>,
    pub concurrency: i32,
    /// RUNNING executions it owns now.
    pub running: u64,
    pub started_at: Instant,
    pub last_heartbeat_at: Instant,
}

impl From<LiveWorker> for Worker {
    fn from(w: LiveWorker) -> Self {
        Worker {
            id: w.id,
            host: w.host,
            pid: w.pid,
            roles: w.roles,
            handlers: w.handlers,
            concurrency: w.concurrency,
            running: w.running,
            started_at: Instant(w.started_at),
            last_heartbeat_at: Instant(w.last_heartbeat_at),
        }
    }
}

#[derive(Debug, Clone, Object)]
pub struct Health {
    pub status: String,
}

#[derive(Debug, Clone, Object)]
pub struct Readiness {
    pub status: String,
    pub database: String,
    pub pending_migrations: u64,
    /// Each named database of `worker.databases`: `ok`, or why not.
    pub databases: std::collections::BTreeMap<String, String>,
}
