//! Checks that need more than the schema: the cron expression and zone, the schedule's
//! frequency, the handler and its params, and characters no database stores alike (NUL).
//! Each failure is a 422 naming the field.

use serde_json::Value;

use super::super::error::ApiError;
use super::models::{CronExpressionDto, OverlapPolicyDto};
use crate::entities::cron_job::OverlapPolicy;
use crate::handlers::Registry;
use crate::schedule::MAX_EXPRESSIONS;
use crate::schedule::{Schedule, ScheduleError};

/// Rejects NUL and other control characters (PostgreSQL cannot store NUL in text at all).
/// `multiline` allows tabs and line breaks (descriptions).
pub fn text(field: &str, value: &str, multiline: bool) -> Result<(), ApiError> {
    let bad = value
        .chars()
        .find(|c| c.is_control() && !(multiline && matches!(c, '\n' | '\r' | '\t')));
    match bad {
        Some(c) => Err(ApiError::invalid(
            "invalid_characters",
            field,
            format!(
                "{field} must not contain control characters (found U+{:04X})",
                c as u32
            ),
        )),
        None => Ok(()),
    }
}

/// Rejects JSON documents with NUL in any string or key: PostgreSQL's jsonb refuses them.
pub fn json(field: &str, value: &Value) -> Result<(), ApiError> {
    fn has_nul(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(has_nul),
            Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    if has_nul(value) {
        return Err(ApiError::invalid(
            "invalid_characters",
            field,
            format!("{field} must not contain the NUL character (\\u0000)"),
        ));
    }
    Ok(())
}

/// Parses the expression in the zone and enforces `min_cron_interval_seconds`.
pub fn schedule(
    expression: &str,
    timezone: &str,
    min_interval_seconds: u64,
) -> Result<Schedule, ApiError> {
    text("cron_expression", expression, false)?;
    text("timezone", timezone, false)?;
    if timezone.trim() != timezone {
        return Err(ApiError::invalid(
            "invalid_timezone",
            "timezone",
            format!("time zone {timezone:?} has surrounding spaces"),
        ));
    }
    let refused = |e: ScheduleError| match e {
        ScheduleError::InvalidExpression { .. } => {
            ApiError::invalid("invalid_cron_expression", "cron_expression", e.to_string())
        }
        ScheduleError::UnknownTimeZone(_) => {
            ApiError::invalid("invalid_timezone", "timezone", e.to_string())
        }
        ScheduleError::TooFrequent { .. } => {
            ApiError::invalid("too_frequent", "cron_expression", e.to_string())
        }
    };
    let parsed = Schedule::parse(expression, timezone).map_err(refused)?;
    let min = i64::try_from(min_interval_seconds).unwrap_or(i64::MAX);
    parsed
        .check_min_interval(min, chrono::Utc::now())
        .map_err(refused)?;
    Ok(parsed)
}

/// The handler must be registered in this binary and accept the params.
pub fn handler(
    registry: &Registry,
    name: &str,
    params_field: &str,
    params: Option<&Value>,
) -> Result<(), ApiError> {
    let Some(handler) = registry.get(name) else {
        let known = registry.names().join(", ");
        // The built-ins that are off unless enabled: say which setting turns them on.
        let hint = match name {
            crate::handlers::shell::NAME | crate::handlers::http::NAME => format!(
                " (the built-in {name} handler is off here: handlers.{name}.enabled is false)"
            ),
            _ => String::new(),
        };
        return Err(ApiError::invalid(
            "unknown_handler",
            "handler_name",
            format!("unknown handler {name:?}{hint}; this jobu has: {known}"),
        ));
    };
    if let Some(params) = params {
        json(params_field, params)?;
    }
    handler
        .validate_params(params.unwrap_or(&Value::Null))
        .map_err(|message| {
            ApiError::invalid(
                "invalid_params",
                params_field,
                format!("{params_field} for handler {name:?}: {message}"),
            )
        })
}

/// Instants the three databases all store: years 1970 to 9999.
pub fn instant(field: &str, t: chrono::DateTime<chrono::Utc>) -> Result<(), ApiError> {
    use chrono::Datelike;
    if (1970..=9999).contains(&t.year()) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "out_of_range",
            field,
            format!("{field} must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z"),
        ))
    }
}

/// The expression of a request (one, or a list of up to [`MAX_EXPRESSIONS`]) as stored.
pub fn expression(expr: &CronExpressionDto) -> Result<String, ApiError> {
    let bad =
        |message: String| ApiError::invalid("invalid_cron_expression", "cron_expression", message);
    let members: Vec<&String> = match expr {
        CronExpressionDto::One(e) => vec![e],
        CronExpressionDto::Many(list) => {
            if list.is_empty() {
                return Err(bad("cron_expression must not be an empty list".into()));
            }
            if list.len() > MAX_EXPRESSIONS {
                return Err(bad(format!(
                    "cron_expression lists {} expressions; at most {MAX_EXPRESSIONS}",
                    list.len()
                )));
            }
            list.iter().collect()
        }
    };
    for member in members {
        text("cron_expression", member, false)?;
        if member.trim().is_empty() || member.len() > 255 {
            return Err(bad(format!(
                "each cron expression must be 1 to 255 characters (got {})",
                member.len()
            )));
        }
    }
    Ok(expr.stored())
}

/// Excluded dates of a request: `YYYY-MM-DD`, at most
/// [`crate::schedule::MAX_EXCLUDED_DATES`].
pub fn excluded_dates(dates: &[String]) -> Result<Vec<chrono::NaiveDate>, ApiError> {
    crate::schedule::parse_excluded_dates(dates)
        .map_err(|e| ApiError::invalid("invalid_excluded_dates", "excluded_dates", e.to_string()))
}

/// The overlap policy from `overlap_policy` and the older `allow_overlap`; `None` when
/// neither is given. Both given and disagreeing is refused.
pub fn overlap(
    policy: Option<OverlapPolicyDto>,
    allow_overlap: Option<bool>,
) -> Result<Option<OverlapPolicy>, ApiError> {
    let policy = policy.map(OverlapPolicy::from);
    match (policy, allow_overlap) {
        (Some(p), Some(allow)) if (p == OverlapPolicy::Allow) != allow => Err(ApiError::invalid(
            "conflicting_fields",
            "allow_overlap",
            format!(
                "allow_overlap {allow} contradicts overlap_policy {p}; send overlap_policy alone"
            ),
        )),
        (Some(p), _) => Ok(Some(p)),
        (None, Some(allow)) => Ok(Some(OverlapPolicy::from_allow_overlap(allow))),
        (None, None) => Ok(None),
    }
}
