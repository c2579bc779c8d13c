//! What the generated OpenAPI document needs beyond what poem-openapi writes:
//! - optional properties are `nullable` (answers carry `null` for empty fields, as the
//!   original system's did, and requests may send `null` for "unset");
//! - request bodies that refuse unknown fields say so (`additionalProperties: false`);
//! - `handler_name` lists the handlers this binary has and `timezone` the IANA zones (and
//!   `""` for UTC), and params are objects, so a client knows the accepted values up front;
//! - request bodies carry a valid example (Swagger UI's "Try it out" starts from it);
//! - with a token in force (configured or generated), the `/api` operations name the bearer
//!   scheme, so clients and Swagger UI send it (without one, the spec claims no
//!   authentication).

use serde_json::{json, Value};

/// No control characters (Unicode Cc), as `validate::text` enforces.
const SINGLE_LINE: &str = r"^[^\x00-\x1f\x7f-\x9f]*$";
/// The same, tabs and line breaks allowed.
const MULTI_LINE: &str = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$";

/// Request bodies parsed with `deny_unknown_fields`.
const CLOSED_SCHEMAS: [&str; 7] = [
    "CronCreate",
    "CronUpdate",
    "CronToggle",
    "ExecutionCreate",
    "TriggerRequest",
    "CronSelection",
    "BackfillCreate",
];

/// The spec as served.
pub fn finish(spec: &str, token: bool, handlers: &[String]) -> String {
    let Ok(mut doc) = serde_json::from_str::<Value>(spec) else {
        return spec.to_string();
    };
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        let handler = handlers
            .iter()
            .find(|h| h.as_str() == "noop")
            .or(handlers.first());
        for (name, schema) in schemas.iter_mut() {
            if CLOSED_SCHEMAS.contains(&name.as_str()) {
                schema["additionalProperties"] = Value::Bool(false);
                if let Some(handler) = schema.pointer_mut("/properties/handler_name") {
                    handler["enum"] = json!(handlers);
                }
                if let Some(zone) = schema.pointer_mut("/properties/timezone") {
                    zone["enum"] = json!(zone_names());
                }
                // The server refuses control characters (validate::text); say so.
                for (field, pattern) in [
                    ("name", SINGLE_LINE),
                    ("cron_expression", SINGLE_LINE),
                    ("description", MULTI_LINE),
                    ("pause_note", MULTI_LINE),
                    ("reason", MULTI_LINE),
                    ("note", MULTI_LINE),
                ] {
                    if let Some(p) = schema.pointer_mut(&format!("/properties/{field}")) {
                        p["pattern"] = json!(pattern);
                    }
                }
                // Handlers take an object of named params (each handler checks its own).
                for params in ["/properties/handler_params", "/properties/params"] {
                    if let Some(p) = schema.pointer_mut(params) {
                        p["type"] = json!("object");
                    }
                }
                if let Some(example) = example(name, handler) {
                    schema["example"] = example;
                }
            }
            // poem-openapi gives a `one_of` union `type: object` beside its `oneOf` of a
            // string and an array, which nothing satisfies: the `oneOf` alone says it.
            if schema.get("oneOf").is_some() {
                if let Some(map) = schema.as_object_mut() {
                    map.remove("type");
                }
            }
            nullable_optionals(schema);
        }
    }
    if token {
        doc["components"]["securitySchemes"]["bearerAuth"] = json!({
            "type": "http",
            "scheme": "bearer",
            "description": "admin.auth_token, or the token in admin.token_file (generated on first start)",
        });
        if let Some(paths) = doc["paths"].as_object_mut() {
            for (path, ops) in paths.iter_mut() {
                if !path.starts_with("/api/") {
                    continue;
                }
                if let Some(ops) = ops.as_object_mut() {
                    for op in ops.values_mut() {
                        op["security"] = json!([{ "bearerAuth": [] }]);
                    }
                }
            }
        }
    }
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| spec.to_string())
}

/// Every IANA zone name the server accepts, and `""` (UTC).
fn zone_names() -> Vec<&'static str> {
    std::iter::once("")
        .chain(chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()))
        .collect()
}

/// A request body the server accepts as it is.
fn example(schema: &str, handler: Option<&String>) -> Option<Value> {
    let handler = handler?;
    Some(match schema {
        "CronCreate" => json!({
            "name": "nightly-report",
            "description": "Runs at 02:30 Berlin time",
            "cron_expression": "30 2 * * *",
            "timezone": "Europe/Berlin",
            "handler_name": handler,
            "max_retry": 3,
            "timeout_seconds": 300,
        }),
        "CronUpdate" => json!({ "cron_expression": "0 3 * * *", "is_enabled": true }),
        "CronToggle" => json!({ "is_enabled": false }),
        "ExecutionCreate" => json!({ "handler_name": handler, "max_retry": 0 }),
        "TriggerRequest" => json!({ "reason": "rerun after the fix", "respect_overlap": true }),
        "CronSelection" => json!({ "handler_name": handler, "note": "database maintenance" }),
        "BackfillCreate" => json!({
            "from": "2026-01-01T00:00:00Z",
            "to": "2026-01-08T00:00:00Z",
            "dry_run": true,
        }),
        _ => return None,
    })
}

/// Marks every property outside `required` nullable; a `$ref` is wrapped in `allOf`, since
/// OpenAPI 3.0 ignores siblings of `$ref`.
fn nullable_optionals(schema: &mut Value) {
    let required: Vec<String> = schema["required"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    // `get_mut`, not `schema["properties"]`: indexing a Value mutably inserts a null.
    let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for (name, prop) in props.iter_mut() {
        if required.contains(name) {
            continue;
        }
        if let Some(reference) = prop.get("$ref").cloned() {
            *prop = json!({ "allOf": [{ "$ref": reference }], "nullable": true });
        } else if let Some(obj) = prop.as_object_mut() {
            obj.insert("nullable".into(), Value::Bool(true));
            // OpenAPI 3.0.3: an enum must list null itself for null to be valid.
            if let Some(values) = obj.get_mut("enum").and_then(Value::as_array_mut) {
                values.push(Value::Null);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_properties_become_nullable() {
        let spec = json!({
            "openapi": "3.0.0",
            "paths": {"/api/x": {"get": {}}, "/health": {"get": {}}},
            "components": {"schemas": {
                "CronCreate": {"type": "object", "required": ["name", "handler_name"], "properties": {
                    "name": {"type": "string"},
                    "handler_name": {"type": "string"},
                    "description": {"type": "string"},
                    "misfire_policy": {"$ref": "#/components/schemas/P"}
                }},
                "P": {"type": "string", "enum": ["a", "b"]}
            }}
        })
        .to_string();
        let handlers = vec!["noop".to_string()];
        let out: Value = serde_json::from_str(&finish(&spec, true, &handlers)).unwrap();
        let s = &out["components"]["schemas"]["CronCreate"];
        assert_eq!(s["properties"]["name"].get("nullable"), None);
        assert_eq!(s["properties"]["description"]["nullable"], true);
        assert_eq!(s["properties"]["misfire_policy"]["nullable"], true);
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["properties"]["handler_name"]["enum"], json!(["noop"]));
        // Schemas without properties stay as they were.
        assert_eq!(
            out["components"]["schemas"]["P"],
            json!({"type": "string", "enum": ["a", "b"]})
        );
        assert_eq!(
            out["paths"]["/api/x"]["get"]["security"][0]["bearerAuth"],
            json!([])
        );
        assert_eq!(out["paths"]["/health"]["get"].get("security"), None);
        let open: Value = serde_json::from_str(&finish(&spec, false, &handlers)).unwrap();
        assert!(open["components"].get("securitySchemes").is_none());
    }
}
