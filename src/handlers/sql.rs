//! The `sql` built-in handler: runs statements with bound parameters on the named databases
//! (`worker.databases`, except `default`, jobu's own), all of one execution in one
//! transaction, atomic across databases when several are named ([`crate::txn`]).
//!
//! Params:
//!
//! ```json
//! {"databases": ["billing", "ledger"],
//!  "statements": [
//!    {"database": "billing", "sql": "UPDATE accounts SET balance = balance - $1 WHERE id = $2",
//!     "params": [10, 1], "expect_rows": 1},
//!    {"database": "ledger", "sql": "INSERT INTO entries (account, amount) VALUES (?, ?)",
//!     "params": [1, -10]},
//!    {"database": "ledger", "sql": "SELECT count(*) AS n FROM entries"}]}
//! ```
//!
//! - `database` (one name) or `databases` (a list); a statement's `database` may be left out
//!   when only one is named.
//! - `sql`: one statement, placeholders in the database's own style (`$1` on PostgreSQL, `?`
//!   on MySQL/MariaDB and SQLite); `params`: positional values. JSON numbers, strings,
//!   booleans and null bind as such, objects and arrays as JSON; `{"type": T, "value": V}`
//!   binds V as T (`int`, `float`, `text`, `bool`, `json`, `timestamp`), which a NULL of a
//!   non-text column on PostgreSQL needs.
//! - `expect_rows`: the statement must affect exactly that many rows, or everything rolls back.
//!
//! Result: `{"statements": [{"database", "rows_affected"}...]}`, plus `"rows"` (at most
//! `handlers.sql.max_result_rows`, `"rows_truncated": true` beyond) when the last statement
//! is a query (`SELECT` or `WITH`). Any failure fails the attempt with the database's message
//! and leaves every database unchanged.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, FromQueryResult, JsonValue, Statement, Value as DbValue};
use serde_json::{json, Map, Value};

use super::{async_trait, json_type, ExecutionContext, Handler, HandlerError, HandlerResult};
use crate::config::{Settings, SqlSettings, DEFAULT_DATABASE};
use crate::txn::TxnError;

/// Name of the handler.
pub const NAME: &str = "sql";
/// Most statements in one execution.
pub const MAX_STATEMENTS: usize = 100;
/// Most parameters of one statement.
pub const MAX_PARAMS: usize = 1000;

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Sql {
    /// The names it may use.
    databases: Vec<String>,
    settings: SqlSettings,
}

impl Sql {
    /// The handler when `worker.databases` names a database besides `default`.
    pub fn from_settings(settings: &Settings) -> Option<Sql> {
        let databases: Vec<String> = settings
            .worker
            .databases
            .iter()
            .filter(|n| n.as_str() != DEFAULT_DATABASE)
            .cloned()
            .collect();
        (!databases.is_empty()).then(|| Sql {
            databases,
            settings: settings.handlers.sql.clone(),
        })
    }
}

#[derive(Debug)]
struct Params {
    databases: Vec<String>,
    statements: Vec<SqlStatement>,
}

#[derive(Debug)]
struct SqlStatement {
    database: String,
    sql: String,
    params: Vec<Param>,
    expect_rows: Option<u64>,
}

#[derive(Debug, Clone)]
enum Param {
    Null,
    Bool(Option<bool>),
    Int(Option<i64>),
    Float(Option<f64>),
    Text(Option<String>),
    Json(Option<Value>),
    Timestamp(Option<DateTime<Utc>>),
}

impl Param {
    fn parse(value: &Value, at: &str) -> Result<Param, String> {
        Ok(match value {
            Value::Null => Param::Null,
            Value::Bool(b) => Param::Bool(Some(*b)),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Param::Int(Some(i)),
                None => Param::Float(n.as_f64()),
            },
            Value::String(s) => Param::Text(Some(s.clone())),
            Value::Array(_) => Param::Json(Some(value.clone())),
            Value::Object(o) if o.contains_key("type") => Param::typed(o, at)?,
            Value::Object(_) => Param::Json(Some(value.clone())),
        })
    }

    fn typed(o: &Map<String, Value>, at: &str) -> Result<Param, String> {
        if let Some(key) = o.keys().find(|k| *k != "type" && *k != "value") {
            return Err(format!(
                "{at}: unknown key `{key}` (a typed value has `type` and `value`)"
            ));
        }
        let ty = o
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{at}.type must be a string"))?;
        let v = o.get("value").unwrap_or(&Value::Null);
        let bad = |what: &str| {
            format!(
                "{at}.value must be {what} or null for type `{ty}`, got {}",
                json_type(v)
            )
        };
        Ok(match ty {
            "int" => Param::Int(match v {
                Value::Null => None,
                _ => Some(v.as_i64().ok_or_else(|| bad("an integer"))?),
            }),
            "float" => Param::Float(match v {
                Value::Null => None,
                _ => Some(v.as_f64().ok_or_else(|| bad("a number"))?),
            }),
            "text" => Param::Text(match v {
                Value::Null => None,
                _ => Some(v.as_str().ok_or_else(|| bad("a string"))?.to_string()),
            }),
            "bool" => Param::Bool(match v {
                Value::Null => None,
                _ => Some(v.as_bool().ok_or_else(|| bad("a boolean"))?),
            }),
            "json" => Param::Json((!v.is_null()).then(|| v.clone())),
            "timestamp" => Param::Timestamp(match v {
                Value::Null => None,
                _ => {
                    let s = v.as_str().ok_or_else(|| bad("an RFC 3339 string"))?;
                    Some(
                        DateTime::parse_from_rfc3339(s)
                            .map_err(|e| format!("{at}.value: not an RFC 3339 time ({e})"))?
                            .with_timezone(&Utc),
                    )
                }
            }),
            other => {
                return Err(format!(
                    "{at}.type `{other}` is not one of int, float, text, bool, json, timestamp"
                ))
            }
        })
    }

    fn to_db(&self) -> DbValue {
        match self.clone() {
            Param::Null => DbValue::String(None),
            Param::Bool(b) => DbValue::Bool(b),
            Param::Int(i) => DbValue::BigInt(i),
            Param::Float(f) => DbValue::Double(f),
            Param::Text(s) => DbValue::String(s.map(Box::new)),
            Param::Json(j) => DbValue::Json(j.map(Box::new)),
            Param::Timestamp(t) => DbValue::ChronoDateTimeUtc(t.map(Box::new)),
        }
    }
}

impl Params {
    fn parse(params: &Value, allowed: &[String]) -> Result<Params, String> {
        let object = params
            .as_object()
            .ok_or_else(|| format!("params must be an object, got {}", json_type(params)))?;
        for key in object.keys() {
            if !matches!(key.as_str(), "database" | "databases" | "statements") {
                return Err(format!(
                    "unknown key `{key}` (expected database or databases, and statements)"
                ));
            }
        }
        let databases: Vec<String> = match (object.get("database"), object.get("databases")) {
            (Some(_), Some(_)) => return Err("give `database` or `databases`, not both".into()),
            (Some(Value::String(name)), None) => vec![name.clone()],
            (Some(other), None) => {
                return Err(format!(
                    "`database` must be a string, got {}",
                    json_type(other)
                ))
            }
            (None, Some(Value::Array(names))) if !names.is_empty() => names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    n.as_str().map(str::to_string).ok_or_else(|| {
                        format!("`databases[{i}]` must be a string, got {}", json_type(n))
                    })
                })
                .collect::<Result<_, _>>()?,
            (None, Some(_)) => {
                return Err("`databases` must be a non-empty array of database names".into())
            }
            (None, None) => return Err("`database` (or `databases`) is required".into()),
        };
        for (i, name) in databases.iter().enumerate() {
            if !allowed.contains(name) {
                return Err(format!(
                    "unknown database `{name}`: the sql handler may use {} (worker.databases, \
                     without default)",
                    allowed.join(", ")
                ));
            }
            if databases[..i].contains(name) {
                return Err(format!("database `{name}` is named twice"));
            }
        }
        let list = match object.get("statements") {
            Some(Value::Array(list)) if !list.is_empty() => list,
            Some(Value::Array(_)) | None => {
                return Err("`statements` must be a non-empty array".into())
            }
            Some(other) => {
                return Err(format!(
                    "`statements` must be an array, got {}",
                    json_type(other)
                ))
            }
        };
        if list.len() > MAX_STATEMENTS {
            return Err(format!(
                "at most {MAX_STATEMENTS} statements per execution, got {}",
                list.len()
            ));
        }
        let statements = list
            .iter()
            .enumerate()
            .map(|(i, s)| SqlStatement::parse(s, i, &databases))
            .collect::<Result<_, _>>()?;
        Ok(Params {
            databases,
            statements,
        })
    }
}

impl SqlStatement {
    fn parse(value: &Value, i: usize, databases: &[String]) -> Result<SqlStatement, String> {
        let at = format!("statements[{i}]");
        let o = value
            .as_object()
            .ok_or_else(|| format!("{at} must be an object, got {}", json_type(value)))?;
        for key in o.keys() {
            if !matches!(key.as_str(), "database" | "sql" | "params" | "expect_rows") {
                return Err(format!(
                    "{at}: unknown key `{key}` (expected database, sql, params, expect_rows)"
                ));
            }
        }
        let database = match o.get("database") {
            Some(Value::String(name)) if databases.contains(name) => name.clone(),
            Some(Value::String(name)) => {
                return Err(format!(
                    "{at}.database `{name}` is not one of the execution's databases ({})",
                    databases.join(", ")
                ))
            }
            Some(other) => {
                return Err(format!(
                    "{at}.database must be a string, got {}",
                    json_type(other)
                ))
            }
            None if databases.len() == 1 => databases[0].clone(),
            None => {
                return Err(format!(
                    "{at}.database is required when several databases are named"
                ))
            }
        };
        let sql = match o.get("sql") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(Value::String(_)) | None => return Err(format!("{at}.sql is required")),
            Some(other) => {
                return Err(format!(
                    "{at}.sql must be a string, got {}",
                    json_type(other)
                ))
            }
        };
        let params = match o.get("params") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(values)) if values.len() <= MAX_PARAMS => values
                .iter()
                .enumerate()
                .map(|(j, v)| Param::parse(v, &format!("{at}.params[{j}]")))
                .collect::<Result<_, _>>()?,
            Some(Value::Array(_)) => {
                return Err(format!("{at}.params: at most {MAX_PARAMS} values"))
            }
            Some(other) => {
                return Err(format!(
                    "{at}.params must be an array, got {}",
                    json_type(other)
                ))
            }
        };
        let expect_rows = match o.get("expect_rows") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                format!("{at}.expect_rows must be a non-negative integer, got {v}")
            })?),
        };
        Ok(SqlStatement {
            database,
            sql,
            params,
            expect_rows,
        })
    }

    fn is_query(&self) -> bool {
        let head: String = self
            .sql
            .trim_start()
            .chars()
            .take(6)
            .collect::<String>()
            .to_ascii_lowercase();
        head.starts_with("select") || head.starts_with("with")
    }
}

#[async_trait]
impl Handler for Sql {
    async fn run(&self, params: Value, ctx: ExecutionContext) -> HandlerResult {
        let parsed =
            Params::parse(&params, &self.databases).map_err(HandlerError::invalid_params)?;
        let names: Vec<&str> = parsed.databases.iter().map(String::as_str).collect();
        let max_rows = self.settings.max_result_rows;
        let statements = parsed.statements;
        let result = ctx
            .transaction(&names, move |tx| {
                Box::pin(async move {
                    let mut done = Vec::with_capacity(statements.len());
                    let mut rows = None;
                    for (i, s) in statements.iter().enumerate() {
                        let branch = tx.db(&s.database)?;
                        let stmt = Statement::from_sql_and_values(
                            branch.get_database_backend(),
                            s.sql.clone(),
                            s.params.iter().map(Param::to_db),
                        );
                        let fail = |e: sea_orm::DbErr| {
                            TxnError::Aborted(format!("statements[{i}] on `{}`: {e}", s.database))
                        };
                        let last = i + 1 == statements.len();
                        if last && s.is_query() {
                            let found = branch.query_all(stmt).await.map_err(fail)?;
                            let mut out = Vec::new();
                            for row in found.iter().take(max_rows) {
                                out.push(JsonValue::from_query_result(row, "").map_err(fail)?);
                            }
                            rows = Some((out, found.len() > max_rows));
                            done.push(
                                json!({"database": s.database, "rows_affected": found.len()}),
                            );
                            continue;
                        }
                        let affected = branch.execute(stmt).await.map_err(fail)?.rows_affected();
                        if let Some(expected) = s.expect_rows {
                            if affected != expected {
                                return Err(TxnError::Aborted(format!(
                                    "statements[{i}] on `{}` affected {affected} rows, expected \
                                     {expected}: rolled back",
                                    s.database
                                )));
                            }
                        }
                        done.push(json!({"database": s.database, "rows_affected": affected}));
                    }
                    Ok((done, rows))
                })
            })
            .await?;
        let (done, rows) = result;
        let mut out = json!({ "statements": done });
        if let Some((rows, truncated)) = rows {
            out["rows"] = Value::Array(rows);
            if truncated {
                out["rows_truncated"] = Value::Bool(true);
            }
        }
        Ok(out)
    }

    fn validate_params(&self, params: &Value) -> Result<(), String> {
        Params::parse(params, &self.databases).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    #[test]
    fn accepts_well_formed_params() {
        let p = Params::parse(
            &json!({"databases": ["a", "b"], "statements": [
                {"database": "a", "sql": "UPDATE t SET x = $1", "params": [1, "s", null, {"type": "int", "value": null}], "expect_rows": 1},
                {"database": "b", "sql": "SELECT 1"}]}),
            &allowed(),
        )
        .expect("valid");
        assert_eq!(p.statements.len(), 2);
        assert!(p.statements[1].is_query());
        let one = Params::parse(
            &json!({"database": "a", "statements": [{"sql": "DELETE FROM t"}]}),
            &allowed(),
        )
        .expect("valid");
        assert_eq!(one.statements[0].database, "a");
    }

    #[test]
    fn refuses_malformed_params_with_the_field() {
        let cases = [
            (json!(null), "params must be an object"),
            (
                json!({"statements": []}),
                "`database` (or `databases`) is required",
            ),
            (
                json!({"database": "zz", "statements": [{"sql": "x"}]}),
                "unknown database `zz`",
            ),
            (
                json!({"database": "default", "statements": [{"sql": "x"}]}),
                "unknown database `default`",
            ),
            (
                json!({"database": "a", "statements": []}),
                "`statements` must be a non-empty array",
            ),
            (
                json!({"databases": ["a", "b"], "statements": [{"sql": "x"}]}),
                "statements[0].database is required",
            ),
            (
                json!({"database": "a", "statements": [{"sql": ""}]}),
                "statements[0].sql is required",
            ),
            (
                json!({"database": "a", "statements": [{"sql": "x", "params": {}}]}),
                "statements[0].params must be an array",
            ),
            (
                json!({"database": "a", "statements": [{"sql": "x", "expect_rows": -1}]}),
                "statements[0].expect_rows",
            ),
            (
                json!({"database": "a", "statements": [{"sql": "x", "params": [{"type": "uuid", "value": 1}]}]}),
                "statements[0].params[0].type `uuid`",
            ),
            (
                json!({"database": "a", "statements": [{"sql": "x", "extra": 1}]}),
                "unknown key `extra`",
            ),
        ];
        for (params, expected) in cases {
            let err = Params::parse(&params, &allowed()).expect_err(&params.to_string());
            assert!(err.contains(expected), "{params}: {err}");
        }
    }
}
