//! Who may call what. With a token in force (`admin.auth_token`, or the generated one of
//! [`super::token`]; none only with `admin.allow_insecure`): `/api/...` needs
//! `Authorization: Bearer`; the console pages, `/docs` and `/openapi.json` accept the bearer
//! header or the console's session cookie (browsers cannot add a header to a page load); `/health`, `/ready` and the
//! console's static assets are open; `/metrics` is open unless `admin.metrics_auth`.
//! The console login URL the log shows (`/?token=...`, any page) sets that cookie and
//! redirects (303) to the same page without the token, so it leaves the address bar and the
//! history; a wrong one gets the login page. Tokens are compared in constant time and never
//! logged.

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

/// The `token` query parameter, decoded.
fn query_token(req: &Request) -> Option<String> {
    let query = req.uri().query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "token")
        .map(|(_, value)| value.into_owned())
}

/// The request's path and query without its `token` parameters. Only a local path: one that
/// a browser would read as another host's (`//host`, `/\host`) becomes `/`.
fn without_token(req: &Request) -> String {
    let path = req.uri().path();
    let path = if path.starts_with("//") || path.starts_with("/\\") || !path.starts_with('/') {
        "/"
    } else {
        path
    };
    let kept: Vec<&str> = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| {
            !pair.is_empty()
                && url::form_urlencoded::parse(pair.as_bytes())
                    .next()
                    .is_none_or(|(key, _)| key != "token")
        })
        .collect();
    if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// `encodeURIComponent`, as the console writes the cookie.
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The session cookie for `token`, as the console's login form sets it (readable by its
/// script, which sends the token as a bearer header to `/api`).
pub fn session_cookie(token: &str) -> String {
    format!(
        "{TOKEN_COOKIE}={}; Path=/; SameSite=Strict",
        percent_encode(token)
    )
}

/// The answer to a page request with `?token=`: signed in and sent on, or the login page.
fn token_login(token: &str, given: &str, req: &Request) -> Response {
    if !same(given, token) {
        return login_required(req);
    }
    let mut resp = Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, without_token(req))
        .header(header::SET_COOKIE, session_cookie(token))
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::REFERRER_POLICY, "no-referrer")
        .finish();
    resp.headers_mut().remove(header::CONTENT_TYPE);
    resp
}

fn login_required(req: &Request) -> Response {
    let mut resp = match area(req.uri().path()) {
        Area::Page if req.method() == poem::http::Method::GET => console::login_page(),
        _ => error_response(
            StatusCode::UNAUTHORIZED,
            "authentication required: send Authorization: Bearer <token> (admin.auth_token, or \
             the token in admin.token_file)",
        ),
    };
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"jobu\""),
    );
    resp
}

/// Middleware: refuses requests the policy does not allow with 401, and signs a browser in
/// with the login URL's `?token=`.
pub async fn require_token<E: Endpoint>(
    policy: AuthPolicy,
    next: E,
    req: Request,
) -> poem::Result<Response> {
    if let Some(token) = policy.token.as_deref() {
        let page = area(req.uri().path()) == Area::Page && req.method() == poem::http::Method::GET;
        if let Some(given) = query_token(&req).filter(|_| page) {
            return Ok(token_login(token, &given, &req));
        }
    }
    if policy.allows(&req) {
        return next.call(req).await.map(IntoResponse::into_response);
    }
    Ok(login_required(&req))
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

    fn request(uri: &str) -> Request {
        Request::builder().uri_str(uri).finish()
    }

    #[test]
    fn login_url_parts() {
        assert_eq!(
            query_token(&request("/?token=a%2Bb")).as_deref(),
            Some("a+b")
        );
        assert_eq!(
            query_token(&request("/crons?x=1&token=t")).as_deref(),
            Some("t")
        );
        assert_eq!(query_token(&request("/crons?tokens=t")), None);
        assert_eq!(without_token(&request("/?token=t")), "/");
        assert_eq!(
            without_token(&request("/jobs?status=FAILED&token=t&page=2")),
            "/jobs?status=FAILED&page=2"
        );
        assert_eq!(without_token(&request("//evil.example/?token=t")), "/");
        assert_eq!(
            session_cookie("a b;c"),
            "jobu_token=a%20b%3Bc; Path=/; SameSite=Strict"
        );
        assert_eq!(percent_decode(&percent_encode("ü;=x")), "ü;=x");
    }

    #[tokio::test]
    async fn token_in_a_page_url_signs_in() {
        let policy = AuthPolicy {
            token: Some("s3cret".into()),
            metrics_auth: false,
        };
        let app = poem::endpoint::make_sync(|_| "page");
        let call = |uri: &str| {
            let policy = policy.clone();
            let req = request(uri);
            async { require_token(policy, &app, req).await.expect("response") }
        };
        let ok = call("/crons?token=s3cret&x=1").await;
        assert_eq!(ok.status(), StatusCode::SEE_OTHER);
        assert_eq!(ok.headers()[header::LOCATION], "/crons?x=1");
        assert_eq!(
            ok.headers()[header::SET_COOKIE],
            "jobu_token=s3cret; Path=/; SameSite=Strict"
        );
        let wrong = call("/crons?token=nope").await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        assert!(wrong.headers().get(header::SET_COOKIE).is_none());
        // Not for the API, which takes the bearer header only.
        let api = call("/api/crons?token=s3cret").await;
        assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
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
