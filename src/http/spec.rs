//! What the generated OpenAPI document needs beyond what poem-openapi writes:
//! - optional properties are `nullable` (answers carry `null` for empty fields, as the
//!   original system's did, and requests may send `null` for "unset");
//! - request bodies that refuse unknown fields say so (`additionalProperties: false`);
//! - with a token configured, the `/api` operations name the bearer scheme, so clients and
//!   Swagger UI send it (without one, the spec claims no authentication).

use serde_json::{json, Value};

/// Request bodies parsed with `deny_unknown_fields`.
const CLOSED_SCHEMAS: [&str; 3] = ["CronCreate", "CronUpdate", "ExecutionCreate"];

/// The spec as served.
pub fn finish(spec: &str, token: bool) -> String {
    let Ok(mut doc) = serde_json::from_str::<Value>(spec) else {
        return spec.to_string();
    };
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        for (name, schema) in schemas.iter_mut() {
            nullable_optionals(schema);
            if CLOSED_SCHEMAS.contains(&name.as_str()) {
                schema["additionalProperties"] = Value::Bool(false);
            }
        }
    }
    if token {
        doc["components"]["securitySchemes"]["bearerAuth"] = json!({
            "type": "http",
            "scheme": "bearer",
            "description": "The value of admin.auth_token",
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
    let Some(props) = schema["properties"].as_object_mut() else {
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
                "CronCreate": {"type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string"},
                    "description": {"type": "string"},
                    "misfire_policy": {"$ref": "#/components/schemas/P"}
                }}
            }}
        })
        .to_string();
        let out: Value = serde_json::from_str(&finish(&spec, true)).unwrap();
        let s = &out["components"]["schemas"]["CronCreate"];
        assert_eq!(s["properties"]["name"].get("nullable"), None);
        assert_eq!(s["properties"]["description"]["nullable"], true);
        assert_eq!(s["properties"]["misfire_policy"]["nullable"], true);
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(
            out["paths"]["/api/x"]["get"]["security"][0]["bearerAuth"],
            json!([])
        );
        assert_eq!(out["paths"]["/health"]["get"].get("security"), None);
        let open: Value = serde_json::from_str(&finish(&spec, false)).unwrap();
        assert!(open["components"].get("securitySchemes").is_none());
    }
}
