//! The admin HTTP surface (poem): the OpenAPI API under `/api` ([`api`]), its spec at
//! `/openapi.json` and Swagger UI at `/docs` (assets embedded, no CDN), the web console
//! ([`console`]), `/health`, `/ready` and Prometheus `/metrics`. [`spec`] completes the
//! generated OpenAPI document.
//!
//! Middleware, outermost first: request log and metrics (which only observe), the Host and
//! Origin checks ([`guard`]: DNS rebinding and cross-site requests), CORS (when origins are
//! configured), JSON error bodies ([`error`]), the token check ([`auth`]), the 1 MiB body
//! limit.

pub mod api;
pub mod auth;
pub mod console;
pub mod docs;
pub mod error;
pub mod guard;
pub mod scrape;
pub mod spec;
pub mod token;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use poem::endpoint::make_sync;
use poem::error::ReadBodyError;
use poem::http::{header, Method, StatusCode};
use poem::listener::TcpAcceptor;
use poem::middleware::Cors;
use poem::{
    Body, Endpoint, EndpointExt, IntoEndpoint, IntoResponse, Request, Response, Route, Server,
};

use crate::actors::RuntimeError;
use crate::config::{AdminSettings, Settings};
use crate::handlers::Registry;
use api::AdminState;
use auth::AuthPolicy;
use error::error_response;

/// Largest request body accepted (413 above).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// How long open connections get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// A process is listed as live while its heartbeat is at most this many intervals old.
pub const PRESENCE_STALE_INTERVALS: f64 = 3.0;

/// Refuses to expose the API beyond loopback without a token, unless the operator insists.
/// `token` is the one in force ([`token::resolve`]): with the generated one there always is
/// one unless `admin.allow_insecure`.
pub fn check_exposure(settings: &AdminSettings, token: Option<&str>) -> Result<(), String> {
    if settings.is_loopback() || token.is_some() || settings.allow_insecure {
        return Ok(());
    }
    Err(format!(
        "admin.host is {}, which is not a loopback address, and there is no admin token: \
         anyone who reaches the port could create crons and run handlers. Set \
         JOBU__ADMIN__AUTH_TOKEN (or admin.auth_token), bind 127.0.0.1, or set \
         admin.allow_insecure: true to serve it without authentication",
        settings.host
    ))
}

/// The built-in handlers this process accepts crons for that can reach anything the worker
/// can (`shell` runs commands, `http` sends requests, `sql` runs statements on the databases
/// of `worker.databases`): enabled by their setting, or a handler
/// registered under that name. The API is never served without a token while there is one.
pub fn powerful_handlers(settings: &Settings, registry: &Registry) -> Vec<&'static str> {
    let handlers = &settings.handlers;
    [
        (crate::handlers::shell::NAME, handlers.shell.enabled),
        (crate::handlers::http::NAME, handlers.http.enabled),
        // Registered whenever worker.databases names a handler database.
        (
            crate::handlers::sql::NAME,
            crate::handlers::sql::Sql::from_settings(settings).is_some(),
        ),
    ]
    .into_iter()
    .filter(|(name, enabled)| *enabled || registry.contains(name))
    .map(|(name, _)| name)
    .collect()
}

/// The admin settings' rules that need no file or socket, checked before a runtime touches
/// the database: see [`token::check`].
pub fn check_settings(settings: &Settings, registry: &Registry) -> Result<(), String> {
    token::check(&settings.admin, &powerful_handlers(settings, registry))
}

/// Prepares a runtime's admin listener: resolves the token in force (generating the token
/// file on first start), binds the address, logs how to sign in (the console login URL with
/// the token, once per start) and leaves the token in `settings.admin.auth_token` for the
/// application. A refused configuration is [`RuntimeError::Invalid`].
pub async fn prepare(
    settings: &mut Settings,
    registry: &Registry,
) -> Result<TcpListener, RuntimeError> {
    let powerful = powerful_handlers(settings, registry);
    let resolved = token::resolve(&settings.admin, &powerful).await?;
    check_exposure(&settings.admin, resolved.token.as_deref()).map_err(RuntimeError::Invalid)?;
    let listener = bind(&settings.admin).map_err(RuntimeError::Listen)?;
    let addr = listener
        .local_addr()
        .map_err(|e| RuntimeError::Listen(format!("cannot read the admin address: {e}")))?;
    token::announce(&resolved, addr);
    settings.admin.auth_token = resolved.token;
    Ok(listener)
}

/// Binds the admin address.
pub fn bind(settings: &AdminSettings) -> Result<TcpListener, String> {
    let host = if settings.host == "localhost" {
        "127.0.0.1"
    } else {
        settings.host.as_str()
    };
    let addr: SocketAddr = format!("{host}:{}", settings.port)
        .parse()
        .or_else(|_| format!("[{host}]:{}", settings.port).parse())
        .map_err(|e| format!("admin.host {:?} is not an IP address ({e})", settings.host))?;
    let listener = TcpListener::bind(addr)
        .map_err(|e| format!("cannot listen on {addr} (admin.host, admin.port): {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    Ok(listener)
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: poem::endpoint::BoxEndpoint<'static>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = TcpAcceptor::from_std(listener)?;
    Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(app, shutdown, Some(SHUTDOWN_GRACE))
        .await
}

/// The whole admin application.
pub fn app(
    state: Arc<AdminState>,
    settings: &AdminSettings,
) -> poem::endpoint::BoxEndpoint<'static> {
    crate::metrics::install();
    let service = api::service(state.clone());
    let original = service.spec();
    let spec = spec::finish(
        &original,
        settings.token().is_some(),
        &state.registry.names(),
    );
    let docs = docs::DocsPage::new(state.clone(), spec.clone());
    let spec = Bytes::from(spec);

    let api = Arc::new(service.into_endpoint());
    let metrics_state = state.clone();
    let counts = Arc::new(scrape::ExecutionCounts::default());
    let route = Route::new()
        .at(
            "/openapi.json",
            make_sync(move |_| {
                Response::builder()
                    .content_type("application/json")
                    .body(spec.clone())
            }),
        )
        .at("/docs", make_sync(move |_| docs.response()))
        .at(
            "/metrics",
            poem::endpoint::make(move |_| {
                let state = metrics_state.clone();
                let counts = counts.clone();
                async move { metrics_text(&state, &counts).await }
            }),
        )
        // Not nested at "/": that would take the root from the console.
        .nest_no_strip("/api", api.clone())
        .at("/health", api.clone())
        .at("/ready", api);
    let route = console::mount(route);

    let policy = AuthPolicy {
        token: settings.token().map(str::to_string),
        metrics_auth: settings.metrics_auth,
    };
    let allowed = Arc::new(allowed_methods(&original));
    let app = route
        .around(limit_body)
        .around(move |ep, req| auth::require_token(policy.clone(), ep, req))
        .around(error::json_errors)
        .around(move |ep, req| add_allow(allowed.clone(), ep, req))
        .boxed();
    let app = match cors(settings) {
        Some(cors) => {
            let app = Arc::new(app);
            CrossOriginOnly {
                // Its own refusals (a method or header not allowed) get the error body too.
                cors: app.clone().with(cors).around(error::json_errors).boxed(),
                plain: app.boxed(),
            }
            .boxed()
        }
        None => app,
    };
    let guard = guard::Guard::new(settings);
    app.around(move |ep, req| guard::guard(guard.clone(), ep, req))
        .around(observe)
        .boxed()
}

/// CORS for cross-origin requests only: poem's `Cors` would refuse the server's own origin
/// (the console's fetches carry it) unless it were listed too.
struct CrossOriginOnly {
    cors: poem::endpoint::BoxEndpoint<'static>,
    plain: poem::endpoint::BoxEndpoint<'static>,
}

impl Endpoint for CrossOriginOnly {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        if req.extensions().get::<guard::SameOrigin>().is_some() {
            self.plain.call(req).await
        } else {
            self.cors.call(req).await
        }
    }
}

/// Each spec path as segments (`None` for a parameter) with its methods.
type AllowTable = Vec<(Vec<Option<String>>, String)>;

fn allowed_methods(spec: &str) -> AllowTable {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(spec) else {
        return Vec::new();
    };
    let Some(paths) = doc["paths"].as_object() else {
        return Vec::new();
    };
    paths
        .iter()
        .map(|(path, ops)| {
            let segments = path
                .trim_matches('/')
                .split('/')
                .map(|s| (!s.starts_with('{')).then(|| s.to_string()))
                .collect();
            let mut methods: Vec<String> = ops
                .as_object()
                .map(|o| o.keys().map(|m| m.to_ascii_uppercase()).collect())
                .unwrap_or_default();
            methods.sort();
            (segments, methods.join(", "))
        })
        .collect()
}

/// Middleware: a 405 names the methods the path has (`Allow`, RFC 9110).
async fn add_allow<E: Endpoint>(
    table: Arc<AllowTable>,
    next: E,
    req: Request,
) -> poem::Result<Response> {
    let path = req.uri().path().to_string();
    let mut resp = next.call(req).await.map(IntoResponse::into_response)?;
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let found = table.iter().find(|(pattern, _)| {
            pattern.len() == parts.len()
                && pattern
                    .iter()
                    .zip(&parts)
                    .all(|(p, s)| p.as_deref().is_none_or(|p| p == *s))
        });
        if let Some(value) = found.and_then(|(_, m)| header::HeaderValue::from_str(m).ok()) {
            resp.headers_mut().insert(header::ALLOW, value);
        }
    }
    Ok(resp)
}

async fn metrics_text(state: &AdminState, counts: &scrape::ExecutionCounts) -> Response {
    counts.record(|| state.store.status_counts()).await;
    Response::builder()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::metrics::render())
}

fn cors(settings: &AdminSettings) -> Option<Cors> {
    let c = &settings.cors;
    if c.allow_origins.is_empty() {
        return None;
    }
    let mut cors = Cors::new().allow_credentials(c.allow_credentials);
    if !c.allow_origins.iter().any(|o| o == "*") {
        cors = cors.allow_origins(c.allow_origins.iter().map(String::as_str));
    }
    let methods: Vec<Method> = if c.allow_methods.is_empty() {
        vec![Method::GET, Method::POST, Method::PUT, Method::DELETE]
    } else {
        c.allow_methods
            .iter()
            .filter_map(|m| m.to_ascii_uppercase().parse().ok())
            .collect()
    };
    cors = cors.allow_methods(methods);
    let headers: Vec<String> = if c.allow_headers.is_empty() {
        vec!["authorization".into(), "content-type".into()]
    } else {
        c.allow_headers.clone()
    };
    Some(cors.allow_headers(headers))
}

/// Middleware: bodies over [`MAX_BODY_BYTES`] are refused with 413 before any handler
/// parses them, whether or not the client declared a length.
async fn limit_body<E: Endpoint>(next: E, mut req: Request) -> poem::Result<Response> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
        )
    };
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Ok(too_large());
    }
    match req.take_body().into_bytes_limit(MAX_BODY_BYTES).await {
        Ok(bytes) => req.set_body(Body::from(bytes)),
        Err(ReadBodyError::PayloadTooLarge) => return Ok(too_large()),
        Err(e) => {
            return Ok(error_response(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            ))
        }
    }
    next.call(req).await.map(IntoResponse::into_response)
}

/// Middleware: one debug log line and one counter per request, labelled with the route
/// pattern (never the raw path, whose ids and junk would explode the label set).
async fn observe<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    let started = Instant::now();
    let method = req.method().clone();
    let route = route_label(req.uri().path());
    let resp = next.call(req).await.map(IntoResponse::into_response)?;
    let status = resp.status().as_u16();
    crate::metrics::http_request(method.as_str(), route, status);
    tracing::debug!(
        method = %method,
        route,
        status,
        duration_ms = started.elapsed().as_millis() as u64,
        "admin request"
    );
    Ok(resp)
}

fn route_label(path: &str) -> &'static str {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", "crons"] => "/api/crons",
        ["api", "crons", _] => "/api/crons/{id}",
        ["api", "crons", _, "toggle"] => "/api/crons/{id}/toggle",
        ["api", "crons", _, "trigger"] => "/api/crons/{id}/trigger",
        ["api", "crons", _, "next"] => "/api/crons/{id}/next",
        ["api", "jobs"] => "/api/jobs",
        ["api", "jobs", _] => "/api/jobs/{id}",
        ["api", "jobs", _, "retry"] => "/api/jobs/{id}/retry",
        ["api", "jobs", _, "cancel"] => "/api/jobs/{id}/cancel",
        ["api", "stats"] => "/api/stats",
        ["api", "workers"] => "/api/workers",
        ["health"] => "/health",
        ["ready"] => "/ready",
        ["metrics"] => "/metrics",
        ["docs"] => "/docs",
        ["openapi.json"] => "/openapi.json",
        [""] => "/",
        ["crons"] => "/crons",
        ["jobs"] => "/jobs",
        ["jobs", _] => "/jobs/{id}",
        ["console", _] => "/console/{asset}",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseSettings;

    /// A handler database makes `sql` a powerful handler: no token at all is refused.
    #[test]
    fn a_handler_database_needs_a_token() {
        let mut settings = Settings::default();
        settings.admin.allow_insecure = true;
        settings.admin.auth_token = None;
        assert!(check_settings(&settings, &Registry::new()).is_ok());
        settings.databases.insert(
            "billing".into(),
            DatabaseSettings {
                url: "sqlite://billing.db?mode=rwc".into(),
                ..DatabaseSettings::default()
            },
        );
        settings.worker.databases.push("billing".into());
        assert_eq!(powerful_handlers(&settings, &Registry::new()), ["sql"]);
        let err = check_settings(&settings, &Registry::new()).expect_err("refused");
        assert!(err.contains("worker.databases"), "{err}");
    }
}
