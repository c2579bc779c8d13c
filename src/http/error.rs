//! One error body for every 4xx (and the 503 of `/ready`): `{status, error, message, field?}`.
//! Handlers return [`ApiError`]; the [`json_errors`] middleware turns every other error
//! (poem-openapi's parse errors, unknown routes, wrong methods, body limits) into the same
//! shape, so a client never has to parse plain text.

use poem::http::StatusCode;
use poem::{Endpoint, IntoResponse, Request, Response};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};

use crate::store::StoreError;

/// What went wrong, for programs (`error`) and for people (`message`).
#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    /// The HTTP status code, repeated for logs and clients that lose it.
    pub status: u16,
    /// A stable machine-readable code such as `not_found` or `invalid_cron_expression`.
    pub error: String,
    /// One line for an operator.
    pub message: String,
    /// The request field at fault, when there is one.
    pub field: Option<String>,
}

/// The error responses of every operation.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// Malformed request: bad JSON, wrong types, values outside the documented ranges.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Authentication is on and the bearer token is missing or wrong.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The request came from a web page of another origin (`field`: `Origin`).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such cron or execution.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The request conflicts with the current state (duplicate name, wrong status).
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The body is larger than 1 MiB.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// The body is not `application/json`.
    #[oai(status = 415)]
    UnsupportedMediaType(Json<ErrorBody>),
    /// The `Host` header does not name this server (`field`: `Host`).
    #[oai(status = 421)]
    Misdirected(Json<ErrorBody>),
    /// Well-formed but invalid: cron expression, time zone, handler, params.
    #[oai(status = 422)]
    Unprocessable(Json<ErrorBody>),
    /// The database is unreachable.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

fn body(
    status: StatusCode,
    error: &str,
    message: impl Into<String>,
    field: Option<&str>,
) -> Json<ErrorBody> {
    Json(ErrorBody {
        status: status.as_u16(),
        error: error.to_string(),
        message: message.into(),
        field: field.map(str::to_string),
    })
}

impl ApiError {
    pub fn not_found(what: &str, id: i64) -> Self {
        ApiError::NotFound(body(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} {id} does not exist"),
            None,
        ))
    }

    /// A 404 whose message names what is missing (several ids of a bulk action).
    pub fn not_found_message(message: impl Into<String>) -> Self {
        ApiError::NotFound(body(StatusCode::NOT_FOUND, "not_found", message, None))
    }

    pub fn conflict(error: &str, message: impl Into<String>) -> Self {
        ApiError::Conflict(body(StatusCode::CONFLICT, error, message, None))
    }

    /// A conflict caused by one field's value (a taken name).
    pub fn conflict_on(error: &str, field: &str, message: impl Into<String>) -> Self {
        ApiError::Conflict(body(StatusCode::CONFLICT, error, message, Some(field)))
    }

    /// A value that parsed but is not acceptable; `field` names it.
    pub fn invalid(error: &str, field: &str, message: impl Into<String>) -> Self {
        ApiError::Unprocessable(body(
            StatusCode::UNPROCESSABLE_ENTITY,
            error,
            message,
            Some(field),
        ))
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::Unavailable(body(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            message,
            None,
        ))
    }

    /// A database failure: logged in full, answered 503 without internals.
    pub fn store(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(message) => ApiError::conflict("conflict", message),
            StoreError::Invalid(message) => ApiError::invalid("invalid", "body", message),
            StoreError::Rejected {
                field,
                error,
                message,
            } => ApiError::invalid(error, field, message),
            other => {
                tracing::error!(error = %other, "admin API: database error");
                ApiError::unavailable("the database did not answer; try again")
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        ApiError::store(err)
    }
}

/// The error code for a status, for errors that did not come with one.
fn code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_ACCEPTABLE => "not_acceptable",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::MISDIRECTED_REQUEST => "misdirected_request",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_client_error() => "client_error",
        _ => "internal_error",
    }
}

/// A response with the error body for `status`; a message that names a field or parameter
/// ("field `max_retry` ...", "missing field `name`", "parameter `size`") fills `field` too.
pub fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    let status = if status.is_client_error() || status.is_server_error() {
        status
    } else {
        StatusCode::BAD_REQUEST
    };
    let message = message.into();
    let field = named_field(&message);
    body(status, code(status), message.clone(), field.as_deref())
        .with_status(status)
        .into_response()
}

/// A response with the error body, its code and field given.
pub fn error_response_for(
    status: StatusCode,
    error: &str,
    message: impl Into<String>,
    field: &str,
) -> Response {
    body(status, error, message, Some(field))
        .with_status(status)
        .into_response()
}

fn named_field(message: &str) -> Option<String> {
    ["field `", "parameter `"].iter().find_map(|marker| {
        let start = message.find(marker)? + marker.len();
        let len = message[start..].find('`')?;
        Some(message[start..start + len].to_string()).filter(|f| !f.is_empty())
    })
}

/// poem-openapi's parse messages without its internal type names.
fn readable(message: &str) -> String {
    let mut m = message
        .replacen("parse request payload error: ", "invalid request body: ", 1)
        .replacen(
            "failed to parse path `param0`",
            "invalid path parameter `id`",
            1,
        );
    for internal in ["CronCreate", "CronUpdate", "CronToggle", "ExecutionCreate"] {
        m = m.replacen(&format!("failed to parse \"{internal}\": "), "", 1);
    }
    m
}

/// Middleware: errors become the JSON error body with their status. Responses the handlers
/// built (an [`ApiError`]) pass through unchanged. Server errors are logged and reported
/// without internals.
pub async fn json_errors<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    match next.call(req).await {
        Ok(resp) => Ok(resp.into_response()),
        Err(err) if err.is_from_response() => Ok(err.into_response()),
        Err(err) => {
            let mut status = err.status();
            let message = if status.is_server_error() {
                tracing::error!(error = %err, status = status.as_u16(), "admin API: request failed");
                "the request could not be completed".to_string()
            } else {
                readable(&err.to_string())
            };
            // A value that parsed but broke a documented range or length is invalid input,
            // like a bad cron expression: 422. Unparseable input stays 400.
            if status == StatusCode::BAD_REQUEST && message.contains("verification failed") {
                status = StatusCode::UNPROCESSABLE_ENTITY;
            }
            Ok(error_response(status, message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_named_field() {
        assert_eq!(
            named_field("field `max_retry`: invalid type").as_deref(),
            Some("max_retry")
        );
        assert_eq!(named_field("missing field `name`").as_deref(), Some("name"));
        assert_eq!(
            named_field("failed to parse parameter `size`: verification failed").as_deref(),
            Some("size")
        );
        assert_eq!(named_field("no field here"), None);
        assert_eq!(named_field("field `unterminated"), None);
    }
}
