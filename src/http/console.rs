//! The web console: the HTML pages, script and stylesheet under `src/http/console/`, compiled
//! into the binary (no CDN, works offline), and the routes that serve them. The pages hold no
//! data; `app.js` reads everything from `/api` with the token the login page stored. Auth is
//! not done here: the admin middleware answers [`login_page`] when a request has no valid token.

use poem::http::{header, StatusCode};
use poem::web::Redirect;
use poem::{get, handler, IntoResponse, Response, Route};

const CRONS_HTML: &str = include_str!("console/crons.html");
const JOBS_HTML: &str = include_str!("console/jobs.html");
const JOB_HTML: &str = include_str!("console/job.html");
const LOGIN_HTML: &str = include_str!("console/login.html");
const APP_JS: &str = include_str!("console/app.js");
const APP_CSS: &str = include_str!("console/app.css");

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "application/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Only this origin's own files: no inline script or style (app.js attaches every handler),
/// `data:` images for the empty favicon, and no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Adds the console routes: `/` (redirects to `/crons`), `/crons`, `/jobs`, `/jobs/:id` and
/// the `/console/app.js` and `/console/app.css` assets.
pub fn mount(route: Route) -> Route {
    route
        .at("/", get(root))
        .at("/crons", get(crons))
        .at("/jobs", get(jobs))
        // Any id: the page asks the API and shows its 404 when there is no such execution.
        .at("/jobs/:id", get(job))
        .at("/console/app.js", get(app_js))
        .at("/console/app.css", get(app_css))
}

/// The sign-in page (401): its script stores the token the user enters (sessionStorage for
/// the API, a session cookie for the pages) and reloads the page that was asked for.
pub fn login_page() -> Response {
    asset(StatusCode::UNAUTHORIZED, HTML, LOGIN_HTML)
}

/// One embedded file with the console's headers. `no-cache` makes browsers revalidate, so a
/// new binary's pages and script are never mixed with an old cached copy.
fn asset(status: StatusCode, content_type: &'static str, body: &'static str) -> Response {
    Response::builder()
        .status(status)
        .content_type(content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::REFERRER_POLICY, "same-origin")
        .body(body)
}

#[handler]
fn root() -> Response {
    Redirect::see_other("/crons")
        .with_header(header::CACHE_CONTROL, "no-cache")
        .into_response()
}

#[handler]
fn crons() -> Response {
    asset(StatusCode::OK, HTML, CRONS_HTML)
}

#[handler]
fn jobs() -> Response {
    asset(StatusCode::OK, HTML, JOBS_HTML)
}

#[handler]
fn job() -> Response {
    asset(StatusCode::OK, HTML, JOB_HTML)
}

#[handler]
fn app_js() -> Response {
    asset(StatusCode::OK, JS, APP_JS)
}

#[handler]
fn app_css() -> Response {
    asset(StatusCode::OK, CSS, APP_CSS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::{Endpoint, Request};

    async fn fetch(path: &str) -> Response {
        mount(Route::new())
            .get_response(Request::builder().uri_str(path).finish())
            .await
    }

    fn header_of(response: &Response, name: header::HeaderName) -> &str {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    #[tokio::test]
    async fn each_file_is_served_with_its_type_and_headers() {
        for (path, content_type, marker) in [
            ("/crons", HTML, "data-page=\"crons\""),
            ("/jobs", HTML, "data-page=\"jobs\""),
            ("/jobs/42", HTML, "data-page=\"job\""),
            ("/console/app.js", JS, "jobu_token"),
            ("/console/app.css", CSS, ".badge"),
        ] {
            let response = fetch(path).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(
                header_of(&response, header::CONTENT_TYPE),
                content_type,
                "{path}"
            );
            assert_eq!(
                header_of(&response, header::CACHE_CONTROL),
                "no-cache",
                "{path}"
            );
            let csp = header_of(&response, header::CONTENT_SECURITY_POLICY);
            assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
            assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
            let body = response.into_body().into_string().await.expect("body");
            assert!(body.contains(marker), "{path} lacks {marker}");
        }
    }

    #[tokio::test]
    async fn root_redirects_to_the_cron_list() {
        let response = fetch("/").await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(header_of(&response, header::LOCATION), "/crons");
    }

    #[tokio::test]
    async fn unknown_console_paths_are_not_found() {
        for path in ["/console/other.js", "/jobs/1/extra"] {
            assert_eq!(fetch(path).await.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[tokio::test]
    async fn login_page_is_a_401_html_page() {
        let response = login_page();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(header_of(&response, header::CONTENT_TYPE), HTML);
        let body = response.into_body().into_string().await.expect("body");
        assert!(body.contains("data-page=\"login\""));
    }

    /// The CSP forbids inline code: every page may load only the one script, and no element
    /// may carry an event-handler attribute or a style attribute.
    #[test]
    fn pages_have_no_inline_script_or_style() {
        for (name, page) in [
            ("crons.html", CRONS_HTML),
            ("jobs.html", JOBS_HTML),
            ("job.html", JOB_HTML),
            ("login.html", LOGIN_HTML),
        ] {
            let lower = page.to_ascii_lowercase();
            assert_eq!(lower.matches("<script").count(), 1, "{name}");
            assert!(
                lower.contains("<script src=\"/console/app.js\" defer></script>"),
                "{name}"
            );
            assert!(!lower.contains("<style"), "{name}");
            assert!(!lower.contains(" style="), "{name}");
            for attribute in [
                " onclick=",
                " onload=",
                " onsubmit=",
                " onchange=",
                " oninput=",
            ] {
                assert!(!lower.contains(attribute), "{name} has {attribute}");
            }
            assert!(
                !lower.contains("http://") && !lower.contains("https://"),
                "{name}"
            );
        }
    }

    /// Data must be rendered as text: the script never assigns HTML strings.
    #[test]
    fn script_never_parses_html() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!APP_JS.contains(sink), "app.js uses {sink}");
        }
    }
}
