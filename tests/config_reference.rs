//! The configuration reference of docs/PRODUCTION.md kept in sync with the binary: every
//! setting is documented with its real default, every documented key is accepted when set
//! through its `JOBU__` variable, and the shipped `config/` files hold the built-in defaults
//! (but for the documented exception).

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::process::bin;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// A named database's keys are documented once, under this placeholder.
const NAME: &str = "<name>";
/// Shipped config values that differ from the built-in defaults, on purpose.
const SHIPPED_DIFFERENCES: [(&str, &str); 1] = [("handlers.shell.enabled", "true")];

/// `jobu config show` in an empty folder with only `env`: the effective settings.
fn config_show(env: &[(String, String)]) -> Value {
    let scratch = tempfile::tempdir().expect("scratch");
    let out = Command::new(bin())
        .args(["config", "show"])
        .env_clear()
        .envs(env.iter().cloned())
        .current_dir(scratch.path())
        .output()
        .expect("run jobu config show");
    assert!(
        out.status.success(),
        "jobu config show refused {env:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// Dotted keys of every setting and its value; maps of free keys (`logging.filters`) are one
/// setting, the databases' names become [`NAME`].
fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) if prefix == "databases" => {
            if let Some(db) = map.get("default") {
                flatten(&format!("databases.{NAME}"), db, out);
            }
        }
        Value::Object(map) if !map.is_empty() && prefix != "logging.filters" => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        leaf => {
            out.insert(prefix.to_string(), leaf.clone());
        }
    }
}

/// The reference table: key and documented default, in order.
fn documented() -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(format!("{ROOT}/docs/PRODUCTION.md")).expect("doc");
    let section = doc
        .split("\n## Configuration reference")
        .nth(1)
        .expect("a Configuration reference section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.trim().trim_matches('|').split('|').collect();
            let key = cells.first()?.trim().strip_prefix('`')?.strip_suffix('`')?;
            let default = cells.get(1)?.trim().trim_matches('`');
            Some((key.to_string(), default.to_string()))
        })
        .collect()
}

/// A documented default as a value: `unset` is null, JSON where it parses, else a string.
fn parse_default(text: &str) -> Value {
    match text {
        "unset" => Value::Null,
        t => serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_string())),
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn defaults() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    flatten("", &config_show(&[]), &mut out);
    out
}

#[test]
fn every_setting_is_documented_with_its_default() {
    let actual = defaults();
    let docs = documented();
    let mut seen = std::collections::BTreeSet::new();
    for (key, default) in &docs {
        assert!(seen.insert(key.clone()), "documented twice: {key}");
        let Some(value) = actual.get(key) else {
            panic!("docs/PRODUCTION.md documents `{key}`, which is not a setting");
        };
        assert!(
            same(&parse_default(default), value),
            "`{key}`: documented default {default}, the binary's is {value}"
        );
    }
    let missing: Vec<&String> = actual.keys().filter(|k| !seen.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "settings missing from docs/PRODUCTION.md's reference: {missing:?}"
    );
}

/// The `JOBU__` variable of a key and its value in environment form.
fn env_var(key: &str, value: &Value, db_name: &str) -> Option<(String, String)> {
    let text = match value {
        Value::Null => return None,
        Value::Array(items) if items.is_empty() => return None,
        Value::Object(_) => return None,
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| i.to_string())
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let var = format!(
        "JOBU__{}",
        key.replace(NAME, db_name)
            .to_ascii_uppercase()
            .replace('.', "__")
    );
    Some((var, text))
}

#[test]
fn every_documented_key_is_accepted_through_its_variable() {
    // Each documented key set to a value other than its default (so a key the binary
    // ignored would read back wrong), on `default` and on a second named database.
    let docs = documented();
    let mut env = Vec::new();
    let mut expected = BTreeMap::new();
    let scratch = tempfile::tempdir().expect("scratch");
    let other_db = format!(
        "sqlite://{}/reporting.db?mode=rwc",
        scratch.path().display()
    );
    for (key, default) in &docs {
        let value = match parse_default(default) {
            Value::Bool(b) => Value::Bool(!b),
            Value::Number(n) if key.ends_with("retry_jitter") => {
                Value::from(n.as_f64().unwrap_or(0.2) / 2.0)
            }
            // Other numbers one above their default, so an ignored key reads back wrong; every
            // coupled range (heartbeat ≤ lease / 2, min ≤ max connections) still holds.
            Value::Number(n) => match (n.as_u64(), n.as_f64()) {
                (Some(i), _) => Value::from(i + 1),
                (None, Some(f)) => Value::from(f + 1.0),
                _ => Value::Number(n),
            },
            v => v,
        };
        // Insecure serving with the shell handler on is refused by design.
        if key == "admin.allow_insecure" {
            continue;
        }
        for db in ["default", "reporting"] {
            if !key.starts_with("databases.") && db == "reporting" {
                continue;
            }
            let value = if key.ends_with(".url") && db == "reporting" {
                Value::String(other_db.clone())
            } else {
                value.clone()
            };
            if let Some(pair) = env_var(key, &value, db) {
                env.push(pair);
                expected.insert(key.replace(NAME, db), value);
            }
        }
    }
    let shown = config_show(&env);
    for (key, value) in &expected {
        let got = key
            .split('.')
            .try_fold(&shown, |node, part| node.get(part))
            .unwrap_or_else(|| panic!("`{key}` missing from jobu config show"));
        let got_text = got.as_str().unwrap_or_default();
        // URLs are shown with passwords masked; the test's have none.
        assert!(
            same(got, value) || got_text == value.as_str().unwrap_or("\u{0}"),
            "`{key}` set to {value} through its variable reads back as {got}"
        );
    }
}

#[test]
fn shipped_config_holds_the_built_in_defaults() {
    let mut shipped = BTreeMap::new();
    flatten(
        "",
        &config_show(&[("JOBU_CONFIG_DIR".into(), format!("{ROOT}/config"))]),
        &mut shipped,
    );
    let mut expected = defaults();
    for (key, value) in SHIPPED_DIFFERENCES {
        expected.insert(key.to_string(), parse_default(value));
    }
    for (key, value) in &expected {
        let got = shipped.get(key).unwrap_or(&Value::Null);
        assert!(
            same(got, value),
            "config/ sets `{key}` to {got}, the built-in default is {value}: change one, or \
             list the difference in docs/PRODUCTION.md"
        );
    }
}
