//! Who may talk to the admin server at all, before CORS and authentication look at a request.
//!
//! - **Host** ([`HostPolicy`]): a web page can make a browser send requests to 127.0.0.1 by
//!   re-pointing its own name there (DNS rebinding); the request then carries that name in
//!   `Host`. So a request is answered only when its `Host` (port ignored, case-insensitive,
//!   IPv6 in brackets) is a name or address this server listens on: loopback names and
//!   addresses, `admin.host` when it is a specific address, any IP literal when `admin.host`
//!   is unspecified (`0.0.0.0`, `::`; a rebinding attack always carries a domain name, and
//!   container probes use the pod IP), and `admin.allowed_hosts` (exact names, `.example.com`
//!   for the domain and its subdomains, `*` for any). Anything else, or no `Host`, is 421.
//! - **Origin** ([`OriginPolicy`]): a request a browser sends from another site's page carries
//!   that site's `Origin`. It is refused with 403 unless the origin is this server's own
//!   (its host and port equal the request's `Host`; the scheme is ignored, so a
//!   TLS-terminating proxy works) or listed in `admin.cors.allow_origins` (`*`: any).
//!   `Origin: null` (sandboxed frames, `file:` pages, some redirects) is refused.

use std::net::IpAddr;
use std::sync::Arc;

use poem::http::{header, StatusCode};
use poem::{Endpoint, IntoResponse, Request, Response};

use super::error::error_response_for;
use crate::config::AdminSettings;

/// The longest `Host` or `Origin` echoed back in an error message.
const ECHO_LIMIT: usize = 100;

/// A `Host` value, parsed: the name in lowercase (IPv6 without brackets) and the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostName {
    pub name: String,
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
}

impl HostName {
    /// Parses `name`, `name:port`, `1.2.3.4:port`, `[v6]` or `[v6]:port`; `None` when it is
    /// none of these.
    pub fn parse(value: &str) -> Option<HostName> {
        let value = value.trim();
        let (host, port) = if let Some(rest) = value.strip_prefix('[') {
            let (inside, after) = rest.split_once(']')?;
            let ip: std::net::Ipv6Addr = inside.parse().ok()?;
            let port = match after {
                "" => None,
                p => parse_port(p.strip_prefix(':')?)?,
            };
            return Some(HostName {
                name: ip.to_string(),
                ip: Some(IpAddr::V6(ip)),
                port,
            });
        } else {
            match value.split_once(':') {
                Some((host, port)) => (host, parse_port(port)?),
                None => (value, None),
            }
        };
        let valid = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !valid {
            return None;
        }
        let name = host.to_ascii_lowercase();
        let ip = name.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4);
        Some(HostName { name, ip, port })
    }
}

/// `""` (as in `host:`) is no port; otherwise digits that fit a port.
fn parse_port(text: &str) -> Option<Option<u16>> {
    if text.is_empty() {
        return Some(None);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().map(Some)
}

fn loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// The names and addresses a request's `Host` may carry.
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    /// `*` in `admin.allowed_hosts`: the check is off.
    any: bool,
    /// Bound to `0.0.0.0` or `::`: every IP literal is one of ours.
    any_ip: bool,
    /// The specific address `admin.host` names.
    bound: Option<IpAddr>,
    /// Exact names (lowercase) and addresses from `admin.allowed_hosts`.
    names: Vec<String>,
    ips: Vec<IpAddr>,
    /// `.example.com` entries, lowercase, with the dot.
    suffixes: Vec<String>,
}

impl HostPolicy {
    pub fn new(settings: &AdminSettings) -> HostPolicy {
        let mut policy = HostPolicy::default();
        match settings.host.parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() => policy.any_ip = true,
            Ok(ip) => policy.bound = Some(ip.to_canonical()),
            // `localhost`, the only name admin.host may hold, is loopback anyway.
            Err(_) => {}
        }
        for entry in &settings.allowed_hosts {
            let entry = entry.trim().to_ascii_lowercase();
            if entry == "*" {
                policy.any = true;
            } else if entry.starts_with('.') {
                policy.suffixes.push(entry);
            } else if let Ok(ip) = entry.trim_matches(['[', ']']).parse::<IpAddr>() {
                policy.ips.push(ip.to_canonical());
            } else if !entry.is_empty() {
                policy.names.push(entry);
            }
        }
        policy
    }

    /// Whether `host` (a parsed `Host`) names this server.
    pub fn allows(&self, host: &HostName) -> bool {
        if self.any {
            return true;
        }
        if let Some(ip) = host.ip {
            let ip = ip.to_canonical();
            return loopback(ip) || self.any_ip || self.bound == Some(ip) || self.ips.contains(&ip);
        }
        let name = host.name.as_str();
        name == "localhost"
            || self.names.iter().any(|n| n == name)
            || self
                .suffixes
                .iter()
                .any(|s| name.ends_with(s.as_str()) || name == &s[1..])
    }

    /// The check is off (`admin.allowed_hosts: ["*"]`).
    pub fn is_open(&self) -> bool {
        self.any
    }
}

/// The origins, besides the server's own, whose requests are answered.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    /// `*` in `admin.cors.allow_origins`.
    any: bool,
    /// `scheme://host[:port]` as browsers write it (lowercase, default port left out).
    listed: Vec<String>,
}

impl OriginPolicy {
    pub fn new(settings: &AdminSettings) -> OriginPolicy {
        let mut policy = OriginPolicy::default();
        for origin in &settings.cors.allow_origins {
            if origin == "*" {
                policy.any = true;
            } else if let Ok(url) = url::Url::parse(origin) {
                policy.listed.push(url.origin().ascii_serialization());
            }
        }
        policy
    }

    /// Whether a request with this `Origin` and `Host` may be answered.
    pub fn allows(&self, origin: &str, host: Option<&HostName>) -> bool {
        let origin = origin.trim();
        if origin.eq_ignore_ascii_case("null") {
            return false;
        }
        let Ok(url) = url::Url::parse(origin) else {
            return false;
        };
        let serialized = url.origin().ascii_serialization();
        // An opaque origin (a scheme without a host) serializes as "null".
        if serialized == "null" {
            return false;
        }
        if self.any || self.listed.contains(&serialized) {
            return true;
        }
        host.is_some_and(|host| same_authority(&url, host))
    }
}

/// Whether the origin's host and port are the request's `Host` (scheme ignored: behind a
/// TLS-terminating proxy the page is `https://` while jobu serves plain HTTP).
fn same_authority(origin: &url::Url, host: &HostName) -> bool {
    let same_host = match origin.host() {
        Some(url::Host::Domain(d)) => host.ip.is_none() && d.eq_ignore_ascii_case(&host.name),
        Some(url::Host::Ipv4(ip)) => host.ip == Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => host.ip == Some(IpAddr::V6(ip)),
        None => false,
    };
    // `url` leaves a scheme's default port out, as browsers do in `Origin` and `Host`; a
    // client that writes it in `Host` anyway still matches.
    let same_port = origin.port() == host.port
        || (origin.port().is_none() && host.port == origin.port_or_known_default());
    same_host && same_port
}

/// The request's `Host`: the header, or the authority of an absolute request target
/// (HTTP/2 `:authority`, `GET http://host/ HTTP/1.1`). `Err` when they disagree or one does
/// not parse; `Ok(None)` when there is neither.
fn request_host(req: &Request) -> Result<Option<HostName>, String> {
    let header = match req.headers().get(header::HOST) {
        Some(value) => {
            let text = value.to_str().map_err(|_| "<not text>".to_string())?;
            Some(HostName::parse(text).ok_or_else(|| text.to_string())?)
        }
        None => None,
    };
    let authority = match req.uri().authority() {
        Some(a) => Some(HostName::parse(a.as_str()).ok_or_else(|| a.as_str().to_string())?),
        None => None,
    };
    match (header, authority) {
        (Some(h), Some(a)) if h.name != a.name => Err(h.name),
        (Some(h), _) => Ok(Some(h)),
        (None, a) => Ok(a),
    }
}

fn echo(text: &str) -> String {
    let mut out: String = text.chars().take(ECHO_LIMIT).collect();
    if out.len() < text.len() {
        out.push_str("...");
    }
    out
}

/// Both checks, as one middleware.
#[derive(Debug, Clone)]
pub struct Guard {
    pub hosts: HostPolicy,
    pub origins: OriginPolicy,
}

impl Guard {
    pub fn new(settings: &AdminSettings) -> Arc<Guard> {
        Arc::new(Guard {
            hosts: HostPolicy::new(settings),
            origins: OriginPolicy::new(settings),
        })
    }

    /// `Err(response)` for a request this server must not answer; `Ok(true)` when it carries
    /// the server's own origin.
    pub fn check(&self, req: &Request) -> Result<bool, Box<Response>> {
        let misdirected = |message: String| {
            Box::new(error_response_for(
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected_request",
                message,
                "Host",
            ))
        };
        let host = match request_host(req) {
            Ok(host) => host,
            Err(_) if self.hosts.is_open() => None,
            Err(bad) => {
                return Err(misdirected(format!(
                    "the Host header `{}` is not a host name",
                    echo(&bad)
                )))
            }
        };
        if !self.hosts.is_open() {
            match &host {
                None => {
                    return Err(misdirected(
                        "the request has no Host header; this server answers only requests \
                         addressed to it"
                            .into(),
                    ))
                }
                Some(h) if !self.hosts.allows(h) => {
                    return Err(misdirected(format!(
                        "this server does not answer to the host `{}`: add it to \
                         admin.allowed_hosts if it is a name of this server",
                        echo(&h.name)
                    )))
                }
                Some(_) => {}
            }
        }
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let text = origin.to_str().unwrap_or("<not text>");
            if host.as_ref().is_some_and(|h| same_origin(text, h)) {
                return Ok(true);
            }
            if !self.origins.allows(text, host.as_ref()) {
                return Err(Box::new(error_response_for(
                    StatusCode::FORBIDDEN,
                    "origin_not_allowed",
                    format!(
                        "requests from the origin `{}` are not allowed: only this server's own \
                         pages and the origins in admin.cors.allow_origins may call it",
                        echo(text)
                    ),
                    "Origin",
                )));
            }
        }
        Ok(false)
    }
}

/// Whether `origin` is the server's own as the request addresses it.
fn same_origin(origin: &str, host: &HostName) -> bool {
    let origin = origin.trim();
    !origin.eq_ignore_ascii_case("null")
        && url::Url::parse(origin).is_ok_and(|url| same_authority(&url, host))
}

/// Marks a request that carries the server's own `Origin` (the console's fetches): CORS
/// leaves it alone, as browsers apply no CORS rules to it.
#[derive(Debug, Clone, Copy)]
pub struct SameOrigin;

/// Middleware: [`Guard::check`], before CORS and authentication.
pub async fn guard<E: Endpoint>(
    guard: Arc<Guard>,
    next: E,
    mut req: Request,
) -> poem::Result<Response> {
    match guard.check(&req) {
        Err(refused) => return Ok(*refused),
        Ok(true) => {
            req.extensions_mut().insert(SameOrigin);
        }
        Ok(false) => {}
    }
    next.call(req).await.map(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(host: &str, allowed: &[&str], origins: &[&str]) -> AdminSettings {
        let mut s = AdminSettings {
            host: host.to_string(),
            allowed_hosts: allowed.iter().map(|h| h.to_string()).collect(),
            ..AdminSettings::default()
        };
        s.cors.allow_origins = origins.iter().map(|o| o.to_string()).collect();
        s
    }

    fn host(text: &str) -> HostName {
        HostName::parse(text).unwrap_or_else(|| panic!("{text} does not parse"))
    }

    #[test]
    fn parses_host_values() {
        assert_eq!(
            host("LocalHost:8080"),
            HostName {
                name: "localhost".into(),
                ip: None,
                port: Some(8080)
            }
        );
        assert_eq!(host("[::1]:80").ip, Some("::1".parse().unwrap()));
        assert_eq!(host("[::1]").port, None);
        assert_eq!(host("127.0.0.1").ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(host("example.com:").port, None);
        for bad in [
            "",
            ":80",
            "a b",
            "::1",
            "[::1",
            "[::1]x",
            "host:port",
            "host:99999",
            "a/b",
            "[x]",
            "ex@mple",
        ] {
            assert_eq!(HostName::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn loopback_and_the_bound_address() {
        let p = HostPolicy::new(&settings("127.0.0.1", &[], &[]));
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1:8080",
            "127.1.2.3",
            "[::1]:8080",
            "[::ffff:127.0.0.1]",
        ] {
            assert!(p.allows(&host(ok)), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.5",
            "[fe80::1]",
            "127.0.0.1.nip.io",
        ] {
            assert!(!p.allows(&host(refused)), "{refused}");
        }
        let p = HostPolicy::new(&settings("10.0.0.5", &[], &[]));
        assert!(p.allows(&host("10.0.0.5:8080")));
        assert!(!p.allows(&host("10.0.0.6:8080")));
        let p = HostPolicy::new(&settings("fd00::5", &[], &[]));
        assert!(p.allows(&host("[fd00:0::5]:8080")));
    }

    #[test]
    fn unspecified_host_allows_ip_literals_only() {
        for bind in ["0.0.0.0", "::"] {
            let p = HostPolicy::new(&settings(bind, &[], &[]));
            assert!(p.allows(&host("10.1.2.3:8080")), "{bind}");
            assert!(p.allows(&host("[fd00::1]:8080")), "{bind}");
            assert!(p.allows(&host("localhost")), "{bind}");
            assert!(!p.allows(&host("jobu.internal")), "{bind}");
        }
    }

    #[test]
    fn allowed_hosts_exact_suffix_and_any() {
        let p = HostPolicy::new(&settings(
            "127.0.0.1",
            &["Jobu.Example.com", ".corp.example", "192.0.2.7"],
            &[],
        ));
        assert!(p.allows(&host("jobu.example.com:443")));
        assert!(!p.allows(&host("x.jobu.example.com")));
        assert!(!p.allows(&host("example.com")));
        assert!(p.allows(&host("corp.example")));
        assert!(p.allows(&host("a.b.corp.example")));
        assert!(!p.allows(&host("evilcorp.example")));
        assert!(p.allows(&host("192.0.2.7")));
        assert!(!p.allows(&host("192.0.2.8")));
        let p = HostPolicy::new(&settings("127.0.0.1", &["*"], &[]));
        assert!(p.allows(&host("anything.example")));
    }

    #[test]
    fn origins() {
        let p = OriginPolicy::new(&settings(
            "127.0.0.1",
            &[],
            &["https://ops.example.com/", "http://localhost:3000"],
        ));
        let own = host("127.0.0.1:8080");
        assert!(p.allows("http://127.0.0.1:8080", Some(&own)));
        assert!(
            p.allows("https://127.0.0.1:8080", Some(&own)),
            "scheme ignored"
        );
        assert!(!p.allows("http://127.0.0.1:8081", Some(&own)));
        assert!(!p.allows("http://localhost:8080", Some(&own)));
        assert!(!p.allows("http://evil.example", Some(&own)));
        assert!(!p.allows("null", Some(&own)));
        assert!(!p.allows("not an origin", Some(&own)));
        assert!(!p.allows("http://127.0.0.1:8080", None));
        assert!(p.allows("https://OPS.example.com", Some(&own)));
        assert!(p.allows("https://ops.example.com:443", Some(&own)));
        assert!(!p.allows("http://ops.example.com", Some(&own)));
        assert!(p.allows("http://localhost:3000", Some(&own)));
        // Behind a proxy: the page is https://jobu.example, Host is jobu.example.
        let proxied = host("jobu.example");
        assert!(p.allows("https://jobu.example", Some(&proxied)));
        assert!(p.allows("https://jobu.example", Some(&host("jobu.example:443"))));
        assert!(!p.allows("https://jobu.example:8443", Some(&proxied)));
        assert!(p.allows("http://[::1]:8080", Some(&host("[::1]:8080"))));
        let any = OriginPolicy::new(&settings("127.0.0.1", &[], &["*"]));
        assert!(any.allows("https://anywhere.example", Some(&own)));
        assert!(!any.allows("null", Some(&own)));
    }
}
