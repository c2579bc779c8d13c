//! `jobu health`: the probe a container `HEALTHCHECK`, a systemd `ExecStartPost` or a load
//! balancer's script runs, so images need no curl. It answers for one process role:
//! - `admin`: the configured admin server's `/health` answers 200;
//! - `dispatcher` / `worker`: the database answers and a process of that role on this host
//!   has beaten its presence row lately (presence beats every `admin.presence_interval_seconds`),
//!   so a wedged or dead process shows even while the database is fine;
//! - `database`: the default database answers and its schema is current.
//!
//! `auto` picks `admin` when `admin.enabled` (as `jobu run` serves it), else any role's
//! presence on this host.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::config::{redact_url, Settings};
use crate::store::Store;

/// Presence counts as fresh for this many beat intervals (a beat may be late under load).
pub const FRESH_BEATS: f64 = 3.0;

/// What to probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Auto,
    Admin,
    Dispatcher,
    Worker,
    Database,
}

impl Probe {
    pub const NAMES: [&'static str; 5] = ["auto", "admin", "dispatcher", "worker", "database"];

    pub fn parse(name: &str) -> Option<Probe> {
        Some(match name {
            "auto" => Probe::Auto,
            "admin" => Probe::Admin,
            "dispatcher" => Probe::Dispatcher,
            "worker" => Probe::Worker,
            "database" => Probe::Database,
            _ => return None,
        })
    }
}

/// Runs the probe: `Ok` with what answered, `Err` with what did not.
pub async fn check(settings: &Settings, probe: Probe, timeout: Duration) -> Result<String, String> {
    let probe = match probe {
        Probe::Auto if settings.admin.enabled => Probe::Admin,
        other => other,
    };
    let run = async {
        match probe {
            Probe::Admin => admin(settings).await,
            Probe::Database => database(settings, None).await,
            Probe::Dispatcher => database(settings, Some("dispatcher")).await,
            Probe::Worker => database(settings, Some("worker")).await,
            Probe::Auto => database(settings, Some("")).await,
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// The address a local client reaches the admin server at: loopback for a wildcard bind.
fn admin_address(settings: &Settings) -> Result<SocketAddr, String> {
    let host = settings.admin.host.trim_matches(|c| c == '[' || c == ']');
    let ip: IpAddr = match host {
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        other => other
            .parse()
            .map_err(|_| format!("admin.host {other:?} is not an IP address"))?,
    };
    let ip = match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(SocketAddr::new(ip, settings.admin.port))
}

async fn admin(settings: &Settings) -> Result<String, String> {
    let url = format!("http://{}/health", admin_address(settings)?);
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", error_chain(&e)))?;
    let status = response.status();
    if status.is_success() {
        Ok(format!("{url} answered {status}"))
    } else {
        Err(format!("{url} answered {status}"))
    }
}

/// The database answers; with a role, a fresh presence row of that role on this host
/// (`Some("")`: any role).
async fn database(settings: &Settings, role: Option<&str>) -> Result<String, String> {
    let db = settings.default_database();
    let url = redact_url(&db.url);
    let store = Store::connect(db)
        .await
        .map_err(|e| format!("database {url}: {e}"))?;
    let result = async {
        let Some(role) = role else {
            let pending = store
                .pending_migrations()
                .await
                .map_err(|e| format!("database {url}: {e}"))?;
            if pending > 0 {
                return Err(format!(
                    "database {url} answered, but {pending} migration(s) are pending: run `jobu migrate`"
                ));
            }
            return Ok(format!("database {url} answered, schema current"));
        };
        let stale = settings.admin.presence_interval_seconds as f64 * FRESH_BEATS;
        let host = crate::actors::hostname();
        let live = store
            .live_workers(stale)
            .await
            .map_err(|e| format!("database {url}: {e}"))?;
        let mine: Vec<_> = live
            .iter()
            .filter(|w| w.host == host && (role.is_empty() || w.roles.iter().any(|r| r == role)))
            .collect();
        match mine.first() {
            Some(w) => Ok(format!(
                "{} ({}) on {host} beat at {}",
                w.id,
                w.roles.join(","),
                w.last_heartbeat_at.to_rfc3339()
            )),
            None => Err(format!(
                "no {}process on {host} has beaten in the last {stale} s (database {url} answered)",
                if role.is_empty() {
                    String::new()
                } else {
                    format!("{role} ")
                }
            )),
        }
    }
    .await;
    let _ = store.close().await;
    result
}

/// An error with its causes, `a: b: c`, as reqwest hides the useful part in the source.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_binds_are_probed_on_loopback() {
        let mut settings = Settings::default();
        settings.admin.host = "0.0.0.0".into();
        settings.admin.port = 9000;
        assert_eq!(
            admin_address(&settings).unwrap().to_string(),
            "127.0.0.1:9000"
        );
        settings.admin.host = "::".into();
        assert_eq!(admin_address(&settings).unwrap().to_string(), "[::1]:9000");
        settings.admin.host = "10.0.0.5".into();
        assert_eq!(
            admin_address(&settings).unwrap().to_string(),
            "10.0.0.5:9000"
        );
    }

    #[test]
    fn probe_names_round_trip() {
        for name in Probe::NAMES {
            assert!(Probe::parse(name).is_some(), "{name}");
        }
        assert_eq!(Probe::parse("web"), None);
    }
}
