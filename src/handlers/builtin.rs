//! The `noop` and `sleep` built-in handlers, for tests, benchmarks and smoke checks of a
//! deployment. Both accept optional `fail` and `panic` params (strings) that make the attempt
//! fail or panic on purpose, to exercise retries and the runtime's panic handling.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{async_trait, json_type, ExecutionContext, Handler, HandlerError, HandlerResult};

/// Name of the [`Noop`] handler.
pub const NOOP: &str = "noop";
/// Name of the [`Sleep`] handler.
pub const SLEEP: &str = "sleep";

/// Longest sleep [`Sleep`] accepts: one day.
pub const MAX_SLEEP_SECONDS: f64 = 86_400.0;

/// Returns `null` at once.
///
/// Params: `null` or an object; optional `"fail": "<message>"` fails the attempt with that
/// message, optional `"panic": "<message>"` panics with it (checked first). Other keys are
/// ignored.
#[derive(Debug, Clone, Copy, Default)]
pub struct Noop;

/// Sleeps, then returns `{"slept_seconds": <seconds>}`.
///
/// Params: an object with `"seconds"` (required; a number from 0 to 86400, fractions
/// allowed), and optional `"fail"` / `"panic"` as for [`Noop`], applied after the sleep. Other
/// keys are ignored.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sleep;

#[async_trait]
impl Handler for Noop {
    async fn run(&self, params: Value, _ctx: ExecutionContext) -> HandlerResult {
        let hooks = TestHooks::parse(&params).map_err(HandlerError::invalid_params)?;
        hooks.apply()?;
        Ok(Value::Null)
    }

    fn validate_params(&self, params: &Value) -> Result<(), String> {
        TestHooks::parse(params).map(|_| ())
    }
}

#[async_trait]
impl Handler for Sleep {
    async fn run(&self, params: Value, _ctx: ExecutionContext) -> HandlerResult {
        let parsed = SleepParams::parse(&params).map_err(HandlerError::invalid_params)?;
        tokio::time::sleep(parsed.duration).await;
        parsed.hooks.apply()?;
        Ok(json!({ "slept_seconds": parsed.seconds }))
    }

    fn validate_params(&self, params: &Value) -> Result<(), String> {
        SleepParams::parse(params).map(|_| ())
    }
}

/// The optional `fail` / `panic` params.
#[derive(Debug, Default)]
struct TestHooks {
    fail: Option<String>,
    panic: Option<String>,
}

impl TestHooks {
    fn parse(params: &Value) -> Result<Self, String> {
        match params_object(params)? {
            Some(object) => TestHooks::from_object(object),
            None => Ok(TestHooks::default()),
        }
    }

    fn from_object(object: &Map<String, Value>) -> Result<Self, String> {
        Ok(TestHooks {
            fail: optional_string(object, "fail")?,
            panic: optional_string(object, "panic")?,
        })
    }

    /// Panics for `panic`, fails for `fail`, otherwise does nothing.
    fn apply(self) -> Result<(), HandlerError> {
        if let Some(message) = self.panic {
            panic!("{message}");
        }
        match self.fail {
            Some(message) => Err(HandlerError::new(message)),
            None => Ok(()),
        }
    }
}

#[derive(Debug)]
struct SleepParams {
    /// As given (integer or float), echoed in the result.
    seconds: Value,
    duration: Duration,
    hooks: TestHooks,
}

impl SleepParams {
    fn parse(params: &Value) -> Result<Self, String> {
        let object = params_object(params)?.ok_or("`seconds` is required")?;
        let seconds = object.get("seconds").ok_or("`seconds` is required")?;
        let value = seconds
            .as_f64()
            .filter(|s| (0.0..=MAX_SLEEP_SECONDS).contains(s))
            .ok_or_else(|| format!("`seconds` must be a number from 0 to 86400, got {seconds}"))?;
        Ok(SleepParams {
            seconds: seconds.clone(),
            duration: Duration::from_secs_f64(value),
            hooks: TestHooks::from_object(object)?,
        })
    }
}

/// `Some(object)` for an object, `None` for null, an error for anything else.
fn params_object(params: &Value) -> Result<Option<&Map<String, Value>>, String> {
    match params {
        Value::Object(object) => Ok(Some(object)),
        Value::Null => Ok(None),
        other => Err(format!(
            "params must be an object or null, got {}",
            json_type(other)
        )),
    }
}

fn optional_string(object: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!(
            "`{key}` must be a string, got {}",
            json_type(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use chrono::{TimeZone, Utc};

    use super::*;

    fn ctx(handler: &str) -> ExecutionContext {
        ExecutionContext {
            execution_id: 1,
            job_id: None,
            handler_name: handler.to_string(),
            scheduled_time: Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap(),
            attempt: 1,
            max_attempts: 1,
            timeout: Duration::from_secs(60),
            worker_id: "test-worker".to_string(),
            transactions: None,
            parent_execution_id: None,
            parent_status: None,
            parent_result: None,
            parent_error: None,
        }
    }

    fn invalid(message: &str) -> HandlerError {
        HandlerError::invalid_params(message)
    }

    #[tokio::test]
    async fn noop_returns_null() {
        assert_eq!(Noop.run(Value::Null, ctx(NOOP)).await, Ok(Value::Null));
        assert_eq!(
            Noop.run(json!({"other": [1, 2]}), ctx(NOOP)).await,
            Ok(Value::Null)
        );
        assert_eq!(Noop.validate_params(&Value::Null), Ok(()));
        assert_eq!(Noop.validate_params(&json!({"fail": "x"})), Ok(()));
    }

    #[tokio::test]
    async fn noop_fail() {
        assert_eq!(
            Noop.run(json!({"fail": "boom"}), ctx(NOOP)).await,
            Err(HandlerError::new("boom"))
        );
        // null counts as absent
        assert_eq!(
            Noop.run(json!({"fail": null}), ctx(NOOP)).await,
            Ok(Value::Null)
        );
    }

    #[tokio::test]
    async fn noop_panic() {
        let err = tokio::spawn(Noop.run(json!({"panic": "kaboom", "fail": "x"}), ctx(NOOP)))
            .await
            .unwrap_err();
        assert!(err.is_panic());
        let payload = err.into_panic();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied());
        assert_eq!(message, Some("kaboom"));
    }

    #[tokio::test]
    async fn noop_invalid_params() {
        let cases = [
            (json!(5), "params must be an object or null, got a number"),
            (json!("x"), "params must be an object or null, got a string"),
            (json!([]), "params must be an object or null, got an array"),
            (json!({"fail": 3}), "`fail` must be a string, got a number"),
            (
                json!({"panic": true}),
                "`panic` must be a string, got a boolean",
            ),
        ];
        for (params, message) in cases {
            assert_eq!(Noop.validate_params(&params), Err(message.to_string()));
            assert_eq!(
                Noop.run(params, ctx(NOOP)).await,
                Err(invalid(message)),
                "{message}"
            );
        }
    }

    #[tokio::test]
    async fn sleep_sleeps_and_echoes_seconds() {
        let started = Instant::now();
        let result = Sleep.run(json!({"seconds": 0.05}), ctx(SLEEP)).await;
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(result, Ok(json!({"slept_seconds": 0.05})));

        assert_eq!(
            Sleep.run(json!({"seconds": 0}), ctx(SLEEP)).await,
            Ok(json!({"slept_seconds": 0}))
        );
    }

    #[tokio::test]
    async fn sleep_fails_after_sleeping() {
        let started = Instant::now();
        let result = Sleep
            .run(json!({"seconds": 0.03, "fail": "late"}), ctx(SLEEP))
            .await;
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert_eq!(result, Err(HandlerError::new("late")));
    }

    #[tokio::test]
    async fn sleep_panics_after_sleeping() {
        let started = Instant::now();
        let err = tokio::spawn(Sleep.run(json!({"seconds": 0.03, "panic": "p"}), ctx(SLEEP)))
            .await
            .unwrap_err();
        assert!(err.is_panic());
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[tokio::test]
    async fn sleep_invalid_params() {
        let cases = [
            (Value::Null, "`seconds` is required".to_string()),
            (json!({}), "`seconds` is required".to_string()),
            (
                json!([1]),
                "params must be an object or null, got an array".to_string(),
            ),
            (
                json!({"seconds": -1}),
                "`seconds` must be a number from 0 to 86400, got -1".to_string(),
            ),
            (
                json!({"seconds": -0.5}),
                "`seconds` must be a number from 0 to 86400, got -0.5".to_string(),
            ),
            (
                json!({"seconds": 86401}),
                "`seconds` must be a number from 0 to 86400, got 86401".to_string(),
            ),
            (
                json!({"seconds": "5"}),
                "`seconds` must be a number from 0 to 86400, got \"5\"".to_string(),
            ),
            (
                json!({"seconds": null}),
                "`seconds` must be a number from 0 to 86400, got null".to_string(),
            ),
            (
                json!({"seconds": 1, "fail": 1}),
                "`fail` must be a string, got a number".to_string(),
            ),
        ];
        for (params, message) in cases {
            assert_eq!(Sleep.validate_params(&params), Err(message.clone()));
            assert_eq!(
                Sleep.run(params, ctx(SLEEP)).await,
                Err(invalid(&message)),
                "{message}"
            );
        }
    }

    #[test]
    fn sleep_validate_accepts_bounds() {
        assert_eq!(Sleep.validate_params(&json!({"seconds": 0})), Ok(()));
        assert_eq!(Sleep.validate_params(&json!({"seconds": 86400})), Ok(()));
        assert_eq!(Sleep.validate_params(&json!({"seconds": 86400.0})), Ok(()));
        assert_eq!(
            Sleep.validate_params(&json!({"seconds": 1.5, "panic": "x", "extra": 1})),
            Ok(())
        );
    }
}
