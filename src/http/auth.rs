//! Who may call what. With `admin.auth_token` set: `/api/...` needs `Authorization: Bearer`;
//! the console pages, `/docs` and `/openapi.json` accept the bearer header or the console's
//! session cookie (browsers cannot add a header to a page load); `/health`, `/ready` and the
//! console's static assets are open; `/metrics` is open unless `admin.metrics_auth`.
//! Tokens are compared in constant time and never logged.

use poem::http::{header, StatusCode};
use poem::{Endpoint, IntoResponse, Request, Response};

use super::console;
use super::error::error_response;

/// The cookie the console's login page sets for the browser session.
pub const TOKEN_COOKIE: &str = "jobu_token";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Area {
    Open,
    Metrics,
    Api,
    /// HTML pages a browser navigates to: answered with the login page.
    Page,
    /// The spec: for tools and Swagger UI.
    Spec,
}

fn area(path: &str) -> Area {
    match path {
        "/health" | "/ready" => Area::Open,
        "/metrics" => Area::Metrics,
        "/openapi.json" => Area::Spec,
        p if p.starts_with("/console/") => Area::Open,
        p if p == "/api" || p.starts_with("/api/") => Area::Api,
        _ => Area::Page,
    }
}

#[derive(Clone)]
pub struct AuthPolicy {
    pub token: Option<String>,
    pub metrics_auth: bool,
}

fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn cookie(req: &Request) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == TOKEN_COOKIE)
        .map(|(_, value)| percent_decode(value))
}

/// The console stores the token with `encodeURIComponent`.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl AuthPolicy {
    fn allows(&self, req: &Request) -> bool {
        let Some(token) = self.token.as_deref() else {
            return true;
        };
        let area = area(req.uri().path());
        match area {
            Area::Open => return true,
            Area::Metrics if !self.metrics_auth => return true,
            _ => {}
        }
        if bearer(req).is_some_and(|t| same(t, token)) {
            return true;
        }
        matches!(area, Area::Page | Area::Spec) && cookie(req).is_some_and(|t| same(&t, token))
    }
}

/// Middleware: refuses requests the policy does not allow with 401.
pub async fn require_token<E: Endpoint>(
    policy: AuthPolicy,
    next: E,
    req: Request,
) -> poem::Result<Response> {
    if policy.allows(&req) {
        return next.call(req).await.map(IntoResponse::into_response);
    }
    let mut resp = match area(req.uri().path()) {
        Area::Page if req.method() == poem::http::Method::GET => console::login_page(),
        _ => error_response(
            StatusCode::UNAUTHORIZED,
            "authentication required: send Authorization: Bearer <admin.auth_token>",
        ),
    };
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"jobu\""),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn areas() {
        assert_eq!(area("/health"), Area::Open);
        assert_eq!(area("/api/crons"), Area::Api);
        assert_eq!(area("/apis"), Area::Page);
        assert_eq!(area("/crons"), Area::Page);
        assert_eq!(area("/docs"), Area::Page);
        assert_eq!(area("/console/app.js"), Area::Open);
        assert_eq!(area("/metrics"), Area::Metrics);
    }

    #[test]
    fn decodes_cookie_values() {
        assert_eq!(percent_decode("a%20b%2Fc"), "a b/c");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(percent_decode("end%2"), "end%2");
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
