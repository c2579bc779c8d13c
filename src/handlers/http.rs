//! The `http` handler: sends one HTTP(S) request that the execution's params describe, from
//! the worker (reqwest on rustls; certificates checked against the platform's store). Off unless `handlers.http.enabled` is set, since it reaches whatever
//! the worker can reach; `handlers.http.allowed_hosts` limits it to some hosts.
//!
//! Params, a JSON object (other keys are refused, to catch typos):
//! - `url` (required): `http://` or `https://`, without credentials (send them in `headers`).
//! - `method`: `GET` (default), `HEAD`, `POST`, `PUT`, `PATCH`, `DELETE` or `OPTIONS`.
//! - `headers`: an object of strings. `Host`, `Content-Length`, `Transfer-Encoding` and
//!   `Connection` are set by the handler and refused here.
//! - `body`: any JSON value, sent as JSON (`Content-Type: application/json` unless `headers`
//!   say otherwise); or `body_text`: a string, sent as is (`text/plain; charset=utf-8`).
//! - `timeout_seconds`: the whole request, body included; at most the attempt's timeout,
//!   which is also the default.
//! - `accept_status`: the statuses that succeed, a list of codes (`204`, `"404"`), classes
//!   (`"2xx"`) or ranges (`"200-299"`); default `["2xx"]`.
//! - `result_headers`: names of response headers to keep in the result.
//!
//! Result: `{"status", "headers": {name: value}, "body_tail", "body_bytes"}`: the selected
//! headers that the response had (names in lowercase, repeated ones joined with `, `), the
//! last `handlers.http.body_tail_bytes` of the body (lossy UTF-8, a leading `…` marks a cut)
//! and the body's full length.
//!
//! Failures fail the attempt, which jobu retries per the cron's `max_retry` (the handler
//! never retries by itself, a 5xx included): a status outside `accept_status` (the message
//! holds the status and the start of the body tail), a timeout, a DNS, connection or TLS
//! error, a refused redirect. Redirects are followed up to [`MAX_REDIRECTS`], each hop's host
//! checked against the allow-list. Messages name the method and the URL without its query
//! (which may hold a key), the log line of each request its method, host, status and time;
//! neither ever holds a header value.

use std::error::Error as StdError;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{redirect, Method, Url};
use serde_json::{json, Map, Value};

use super::shell::TailBuffer;
use super::{async_trait, json_type, ExecutionContext, Handler, HandlerError, HandlerResult};
use crate::config::HttpSettings;

/// Name of the [`Http`] handler.
pub const NAME: &str = "http";

/// Redirects followed before the request fails.
pub const MAX_REDIRECTS: usize = 10;

/// Longest `timeout_seconds` accepted: one day (the attempt's timeout bounds it anyway).
const MAX_TIMEOUT_SECONDS: f64 = 86_400.0;

/// Connecting (DNS, TCP, TLS) gets at most this long, within the request's timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Characters of the body tail quoted in a non-accepted status's error message.
const ERROR_BODY_CHARS: usize = 512;

const PARAM_KEYS: [&str; 8] = [
    "url",
    "method",
    "headers",
    "body",
    "body_text",
    "timeout_seconds",
    "accept_status",
    "result_headers",
];

const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Headers that describe the connection or the framing: reqwest sets them.
const RESERVED_HEADERS: [&str; 4] = ["host", "content-length", "transfer-encoding", "connection"];

/// Sends the request an execution's params describe; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Http {
    settings: HttpSettings,
    hosts: Arc<HostAllowList>,
    /// One client, so connections are pooled across attempts. Building it fails only when
    /// the TLS setup does; then every attempt fails with that message.
    client: Result<reqwest::Client, String>,
}

impl Http {
    /// Uses `allowed_hosts` and `body_tail_bytes`; `enabled` is the registry's concern.
    pub fn new(settings: HttpSettings) -> Self {
        let hosts = Arc::new(HostAllowList::new(&settings.allowed_hosts));
        let client = build_client(Arc::clone(&hosts));
        if let Err(message) = &client {
            tracing::error!(handler = NAME, error = %message, "the http handler cannot send requests");
        }
        Http {
            settings,
            hosts,
            client,
        }
    }
}

#[async_trait]
impl Handler for Http {
    async fn run(&self, params: Value, ctx: ExecutionContext) -> HandlerResult {
        // Parsing checks the host again: params may have been written to the database
        // directly, or before the allow-list changed.
        let params =
            HttpParams::parse(&params, &self.hosts).map_err(HandlerError::invalid_params)?;
        let client = self
            .client
            .as_ref()
            .map_err(|e| HandlerError::new(e.clone()))?;
        send(client, params, &ctx, self.settings.body_tail_bytes).await
    }

    fn validate_params(&self, params: &Value) -> Result<(), String> {
        HttpParams::parse(params, &self.hosts).map(|_| ())
    }
}

fn build_client(hosts: Arc<HostAllowList>) -> Result<reqwest::Client, String> {
    let policy = redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        let url = attempt.url();
        if !matches!(url.scheme(), "http" | "https") {
            let refused = format!("a redirect to a {}: URL", url.scheme());
            return attempt.error(refused);
        }
        if !hosts.allows(url) {
            let refused = format!(
                "a redirect to host {} is not allowed by handlers.http.allowed_hosts",
                host_of(url)
            );
            return attempt.error(refused);
        }
        attempt.follow()
    });
    reqwest::Client::builder()
        .redirect(policy)
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("jobu/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))
}

/// `handlers.http.allowed_hosts`, parsed: the syntax of `admin.allowed_hosts`.
#[derive(Debug, Default)]
struct HostAllowList {
    /// Empty list, or `*`.
    any: bool,
    /// Exact names, lowercase, without a final dot.
    names: Vec<String>,
    /// `.example.com` entries, lowercase, with the dot: the domain and its subdomains.
    suffixes: Vec<String>,
    ips: Vec<IpAddr>,
}

impl HostAllowList {
    fn new(entries: &[String]) -> Self {
        let mut list = HostAllowList {
            any: entries.is_empty(),
            ..HostAllowList::default()
        };
        for entry in entries {
            let entry = entry.trim().to_ascii_lowercase();
            let entry = entry.trim_end_matches('.');
            if entry == "*" {
                list.any = true;
            } else if entry.starts_with('.') {
                list.suffixes.push(entry.to_string());
            } else if let Ok(ip) = entry.trim_matches(['[', ']']).parse::<IpAddr>() {
                list.ips.push(ip.to_canonical());
            } else if !entry.is_empty() {
                list.names.push(entry.to_string());
            }
        }
        list
    }

    fn allows(&self, url: &Url) -> bool {
        if self.any {
            return true;
        }
        match url.host() {
            Some(url::Host::Domain(name)) => {
                // `Url` lowercases names; a final dot names the same host.
                let name = name.trim_end_matches('.');
                self.names.iter().any(|n| n == name)
                    || self
                        .suffixes
                        .iter()
                        .any(|s| name.ends_with(s.as_str()) || name == &s[1..])
            }
            Some(url::Host::Ipv4(ip)) => self.ips.contains(&IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.ips.contains(&IpAddr::V6(ip).to_canonical()),
            None => false,
        }
    }
}

/// The host of a URL, for messages and logs.
fn host_of(url: &Url) -> String {
    url.host_str().unwrap_or("(none)").to_string()
}

/// `scheme://host[:port]/path`: the URL without credentials and query, which may hold keys.
fn display_url(url: &Url) -> String {
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{}://{}{port}{}", url.scheme(), host_of(url), url.path())
}

/// Statuses that succeed: inclusive ranges, with the spelling given for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AcceptStatus {
    ranges: Vec<(u16, u16)>,
    label: String,
}

impl AcceptStatus {
    fn default_2xx() -> Self {
        AcceptStatus {
            ranges: vec![(200, 299)],
            label: "2xx".to_string(),
        }
    }

    fn accepts(&self, status: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&status))
    }

    fn parse(value: Option<&Value>) -> Result<Self, String> {
        let items = match value {
            None | Some(Value::Null) => return Ok(AcceptStatus::default_2xx()),
            Some(Value::Array(items)) if !items.is_empty() => items,
            Some(Value::Array(_)) => return Err("`accept_status` must not be empty".to_string()),
            Some(other) => {
                return Err(format!(
                    "`accept_status` must be a list such as [\"2xx\", 404], got {}",
                    json_type(other)
                ))
            }
        };
        let mut ranges = Vec::with_capacity(items.len());
        let mut labels = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let (range, label) = match item {
                Value::Number(n) => {
                    let code = n.as_u64().and_then(|c| u16::try_from(c).ok());
                    let code = code.filter(|c| (100..=599).contains(c)).ok_or_else(|| {
                        format!("`accept_status[{i}]` must be a status from 100 to 599, got {n}")
                    })?;
                    ((code, code), code.to_string())
                }
                Value::String(text) => (
                    parse_status_pattern(text.trim())
                        .map_err(|m| format!("`accept_status[{i}]` {m}"))?,
                    text.trim().to_string(),
                ),
                other => {
                    return Err(format!(
                        "`accept_status[{i}]` must be a number or a string, got {}",
                        json_type(other)
                    ))
                }
            };
            ranges.push(range);
            labels.push(label);
        }
        Ok(AcceptStatus {
            ranges,
            label: labels.join(", "),
        })
    }
}

/// `"404"`, `"2xx"` or `"200-299"`.
fn parse_status_pattern(text: &str) -> Result<(u16, u16), String> {
    let code = |s: &str| {
        s.parse::<u16>()
            .ok()
            .filter(|c| s.len() == 3 && (100..=599).contains(c))
    };
    let lower = text.to_ascii_lowercase();
    if let Some(class) = lower.strip_suffix("xx") {
        if let Some(digit @ 1..=5) = class.parse::<u16>().ok().filter(|_| class.len() == 1) {
            return Ok((digit * 100, digit * 100 + 99));
        }
    } else if let Some((lo, hi)) = text.split_once('-') {
        if let (Some(lo), Some(hi)) = (code(lo.trim()), code(hi.trim())) {
            if lo <= hi {
                return Ok((lo, hi));
            }
        }
    } else if let Some(c) = code(text) {
        return Ok((c, c));
    }
    Err(format!(
        "must be a status (\"404\"), a class (\"1xx\" to \"5xx\") or a range (\"200-299\") \
         from 100 to 599, got {text:?}"
    ))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Body {
    None,
    /// Serialized JSON.
    Json(Vec<u8>),
    Text(String),
}

#[derive(Debug)]
struct HttpParams {
    method: Method,
    url: Url,
    /// Values marked sensitive, so a `Debug` print never shows them.
    headers: HeaderMap,
    body: Body,
    timeout: Option<Duration>,
    accept: AcceptStatus,
    result_headers: Vec<HeaderName>,
}

impl HttpParams {
    fn parse(params: &Value, hosts: &HostAllowList) -> Result<Self, String> {
        let object = match params {
            Value::Object(object) => object,
            Value::Null => return Err("`url` is required".to_string()),
            other => {
                return Err(format!(
                    "params must be an object with a `url`, got {}",
                    json_type(other)
                ))
            }
        };
        if let Some(key) = object.keys().find(|k| !PARAM_KEYS.contains(&k.as_str())) {
            return Err(format!(
                "unknown key {key:?} (expected one of {})",
                PARAM_KEYS.map(|k| format!("`{k}`")).join(", ")
            ));
        }
        let body = match (object.get("body"), object.get("body_text")) {
            (Some(json), Some(text)) if !json.is_null() && !text.is_null() => {
                return Err("give `body` (JSON) or `body_text` (a string), not both".to_string())
            }
            (Some(json), _) if !json.is_null() => Body::Json(
                serde_json::to_vec(json).map_err(|e| format!("`body` cannot be encoded: {e}"))?,
            ),
            (_, Some(Value::String(text))) => Body::Text(text.clone()),
            (_, None | Some(Value::Null)) => Body::None,
            (_, Some(other)) => {
                return Err(format!(
                    "`body_text` must be a string, got {}",
                    json_type(other)
                ))
            }
        };
        let mut headers = parse_headers(object.get("headers"))?;
        let content_type = match &body {
            Body::None => None,
            Body::Json(_) => Some("application/json"),
            Body::Text(_) => Some("text/plain; charset=utf-8"),
        };
        if let Some(content_type) = content_type {
            if !headers.contains_key(CONTENT_TYPE) {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            }
        }
        Ok(HttpParams {
            method: parse_method(object.get("method"))?,
            url: parse_url(object.get("url"), hosts)?,
            headers,
            body,
            timeout: parse_timeout(object.get("timeout_seconds"))?,
            accept: AcceptStatus::parse(object.get("accept_status"))?,
            result_headers: parse_result_headers(object.get("result_headers"))?,
        })
    }
}

fn parse_method(value: Option<&Value>) -> Result<Method, String> {
    let method = match value {
        None | Some(Value::Null) => return Ok(Method::GET),
        Some(Value::String(method)) => method.to_ascii_uppercase(),
        Some(other) => {
            return Err(format!(
                "`method` must be a string, got {}",
                json_type(other)
            ))
        }
    };
    if !METHODS.contains(&method.as_str()) {
        return Err(format!(
            "`method` must be one of {}, got {method:?}",
            METHODS.join(", ")
        ));
    }
    Method::from_bytes(method.as_bytes()).map_err(|_| format!("`method` {method:?} is not valid"))
}

fn parse_url(value: Option<&Value>, hosts: &HostAllowList) -> Result<Url, String> {
    let text = match value {
        None | Some(Value::Null) => return Err("`url` is required".to_string()),
        Some(Value::String(text)) => text.trim(),
        Some(other) => return Err(format!("`url` must be a string, got {}", json_type(other))),
    };
    // The URL is not echoed: its query may hold a key.
    let url = Url::parse(text).map_err(|e| format!("`url` is not a valid URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "`url` must start with http:// or https://, got a {}: URL",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "`url` must not hold credentials: send them in `headers` (Authorization)".to_string(),
        );
    }
    if url.host().is_none() {
        return Err("`url` has no host".to_string());
    }
    if !hosts.allows(&url) {
        return Err(format!(
            "`url` host {} is not allowed by handlers.http.allowed_hosts",
            host_of(&url)
        ));
    }
    Ok(url)
}

fn parse_headers(value: Option<&Value>) -> Result<HeaderMap, String> {
    let map: &Map<String, Value> = match value {
        None | Some(Value::Null) => return Ok(HeaderMap::new()),
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(format!(
                "`headers` must be an object of strings, got {}",
                json_type(other)
            ))
        }
    };
    let mut headers = HeaderMap::with_capacity(map.len());
    for (key, value) in map {
        let name = HeaderName::from_bytes(key.as_bytes())
            .map_err(|_| format!("`headers` key {key:?} is not a valid header name"))?;
        if RESERVED_HEADERS.contains(&name.as_str()) {
            return Err(format!(
                "`headers.{key}` is set by the handler and cannot be given"
            ));
        }
        // Messages never quote a value: headers carry secrets.
        let Value::String(text) = value else {
            return Err(format!(
                "`headers.{key}` must be a string, got {}",
                json_type(value)
            ));
        };
        let mut header = HeaderValue::from_str(text).map_err(|_| {
            format!("`headers.{key}` is not a valid header value (no line breaks or control characters)")
        })?;
        header.set_sensitive(true);
        headers.append(name, header);
    }
    Ok(headers)
}

fn parse_timeout(value: Option<&Value>) -> Result<Option<Duration>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_f64()
            .filter(|s| *s > 0.0 && *s <= MAX_TIMEOUT_SECONDS)
            .map(|s| Some(Duration::from_secs_f64(s)))
            .ok_or_else(|| {
                format!("`timeout_seconds` must be a number above 0 and at most 86400, got {value}")
            }),
    }
}

fn parse_result_headers(value: Option<&Value>) -> Result<Vec<HeaderName>, String> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(format!(
                "`result_headers` must be a list of header names, got {}",
                json_type(other)
            ))
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(name) => HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("`result_headers[{i}]` {name:?} is not a valid header name")),
            other => Err(format!(
                "`result_headers[{i}]` must be a string, got {}",
                json_type(other)
            )),
        })
        .collect()
}

/// Sends the request and reads the response, keeping the body's tail.
async fn send(
    client: &reqwest::Client,
    params: HttpParams,
    ctx: &ExecutionContext,
    tail_bytes: usize,
) -> HandlerResult {
    let timeout = params.timeout.map_or(ctx.timeout, |t| t.min(ctx.timeout));
    let target = format!("{} {}", params.method, display_url(&params.url));
    let host = host_of(&params.url);
    let method = params.method.clone();
    let mut request = client
        .request(params.method, params.url)
        .headers(params.headers)
        .timeout(timeout);
    request = match params.body {
        Body::None => request,
        Body::Json(bytes) => request.body(bytes),
        Body::Text(text) => request.body(text),
    };

    // One log line per request; the attempt's span (`actors::task`) adds the execution
    // id, handler, attempt and worker. Never a header value.
    let started = Instant::now();
    let failed = |err: reqwest::Error| {
        let error = describe_error(err, &target, timeout);
        tracing::info!(
            method = %method,
            host = %host,
            elapsed_ms = started.elapsed().as_millis() as u64,
            error = %error,
            "http request failed"
        );
        error
    };
    let mut response = request.send().await.map_err(&failed)?;
    let status = response.status();
    let headers = selected_headers(response.headers(), &params.result_headers);
    let mut tail = TailBuffer::new(tail_bytes);
    let mut body_bytes: u64 = 0;
    // Chunk by chunk, so a large body costs only its tail in memory; the request's timeout
    // bounds the reading too.
    while let Some(chunk) = response.chunk().await.map_err(&failed)? {
        body_bytes += chunk.len() as u64;
        tail.push(&chunk);
    }
    let body_tail = tail.into_string();
    tracing::info!(
        method = %method,
        host = %host,
        status = status.as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        body_bytes,
        "http response"
    );

    if !params.accept.accepts(status.as_u16()) {
        let quoted = match body_tail.trim() {
            "" => "(empty body)".to_string(),
            text => {
                let start: String = text.chars().take(ERROR_BODY_CHARS).collect();
                let more = if start.len() < text.len() { "…" } else { "" };
                format!("body: {start}{more}")
            }
        };
        return Err(HandlerError::new(format!(
            "HTTP {status} from {target} (accept_status: {}); {quoted}",
            params.accept.label
        )));
    }
    Ok(json!({
        "status": status.as_u16(),
        "headers": headers,
        "body_tail": body_tail,
        "body_bytes": body_bytes,
    }))
}

/// The response headers named in `result_headers` that are present.
fn selected_headers(headers: &HeaderMap, names: &[HeaderName]) -> Map<String, Value> {
    let mut selected = Map::new();
    for name in names {
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        if !values.is_empty() {
            selected.insert(name.as_str().to_string(), Value::String(values.join(", ")));
        }
    }
    selected
}

/// A transport failure, in words: what failed and why (the error's causes), without the
/// URL reqwest would add (its query may hold a key).
fn describe_error(err: reqwest::Error, target: &str, timeout: Duration) -> HandlerError {
    let err = err.without_url();
    let causes = error_chain(&err);
    let message = if err.is_timeout() {
        format!(
            "{target} timed out after {:.3}s (timeout_seconds, at most the attempt's timeout): {causes}",
            timeout.as_secs_f64()
        )
    } else if err.is_redirect() {
        format!("{target}: redirect refused: {causes}")
    } else if err.is_connect() && is_tls_failure(&err) {
        format!("{target}: TLS handshake failed: {causes}")
    } else if err.is_connect() {
        format!("{target}: cannot connect: {causes}")
    } else if err.is_body() || err.is_decode() {
        format!("{target}: reading the response failed: {causes}")
    } else {
        format!("{target} failed: {causes}")
    };
    HandlerError::new(message)
}

/// tokio-rustls reports TLS errors (a bad certificate, a peer that does not speak TLS) as
/// I/O errors of kind `InvalidData`, which reqwest wraps in another I/O error; plain
/// connection failures have other kinds.
fn is_tls_failure(err: &reqwest::Error) -> bool {
    let mut source = err.source();
    while let Some(cause) = source {
        // `io::Error::source` skips the error it wraps: unwrap nested ones by hand.
        let mut io = cause.downcast_ref::<std::io::Error>();
        while let Some(e) = io {
            if e.kind() == std::io::ErrorKind::InvalidData {
                return true;
            }
            io = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<std::io::Error>());
        }
        source = cause.source();
    }
    false
}

/// The error's message and its sources', joined by `: `, skipping a cause that an earlier
/// message already holds.
fn error_chain(err: &reqwest::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any_host() -> HostAllowList {
        HostAllowList::new(&[])
    }

    fn parse(params: Value) -> Result<HttpParams, String> {
        HttpParams::parse(&params, &any_host())
    }

    fn refused(params: Value) -> String {
        parse(params.clone()).expect_err(&params.to_string())
    }

    #[test]
    fn defaults() {
        let p = parse(json!({"url": "http://example.com/x"})).expect("parses");
        assert_eq!(p.method, Method::GET);
        assert_eq!(p.url.as_str(), "http://example.com/x");
        assert_eq!(p.body, Body::None);
        assert_eq!(p.timeout, None);
        assert_eq!(p.accept, AcceptStatus::default_2xx());
        assert!(p.headers.is_empty() && p.result_headers.is_empty());
    }

    #[test]
    fn methods() {
        let p = parse(json!({"url": "http://h/", "method": "post"})).expect("post");
        assert_eq!(p.method, Method::POST);
        let m = refused(json!({"url": "http://h/", "method": "FETCH"}));
        assert!(m.contains("`method`") && m.contains("GET, HEAD"), "{m}");
        let m = refused(json!({"url": "http://h/", "method": 1}));
        assert!(m.contains("`method` must be a string"), "{m}");
    }

    #[test]
    fn urls() {
        for (params, expected) in [
            (json!({}), "`url` is required"),
            (Value::Null, "`url` is required"),
            (json!({"url": 5}), "`url` must be a string"),
            (json!({"url": "ftp://h/x"}), "http:// or https://"),
            (
                json!({"url": "https://u:p@h/x"}),
                "must not hold credentials",
            ),
            (json!({"url": "relative/path"}), "not a valid URL"),
            (json!("http://h/"), "params must be an object"),
        ] {
            let m = refused(params.clone());
            assert!(m.contains(expected), "{params}: {m}");
        }
        let m = refused(json!({"url": "http://exa mple.com/?key=SECRET"}));
        assert!(!m.contains("SECRET"), "the URL is not echoed: {m}");
        let url = Url::parse("https://u:pw@h.example:8443/a/b?key=SECRET").expect("url");
        assert_eq!(display_url(&url), "https://h.example:8443/a/b");
    }

    #[test]
    fn headers_and_bodies() {
        let p = parse(json!({
            "url": "http://h/",
            "headers": {"Authorization": "Bearer s3cret", "X-Two": "2"},
            "body": {"a": [1, 2]},
        }))
        .expect("parses");
        assert_eq!(p.body, Body::Json(br#"{"a":[1,2]}"#.to_vec()));
        assert_eq!(p.headers[CONTENT_TYPE], "application/json");
        assert!(p.headers["authorization"].is_sensitive());
        assert!(!format!("{p:?}").contains("s3cret"), "Debug hides values");

        let p = parse(json!({
            "url": "http://h/", "body_text": "a,b", "headers": {"content-type": "text/csv"}
        }))
        .expect("parses");
        assert_eq!(p.body, Body::Text("a,b".into()));
        assert_eq!(p.headers[CONTENT_TYPE], "text/csv");

        let m = refused(json!({"url": "http://h/", "headers": {"X-Key": "s3cret\nInjected: 1"}}));
        assert!(
            m.contains("`headers.X-Key`") && !m.contains("s3cret"),
            "{m}"
        );
        for (params, expected) in [
            (
                json!({"headers": {"Host": "x"}}),
                "`headers.Host` is set by the handler",
            ),
            (
                json!({"headers": {"bad name": "x"}}),
                "not a valid header name",
            ),
            (
                json!({"headers": {"X-N": 5}}),
                "`headers.X-N` must be a string",
            ),
            (json!({"headers": ["x"]}), "`headers` must be an object"),
            (json!({"body": 1, "body_text": "x"}), "not both"),
            (json!({"body_text": 1}), "`body_text` must be a string"),
            (json!({"bodyy": 1}), "unknown key \"bodyy\""),
        ] {
            let mut params = params;
            params["url"] = json!("http://h/");
            let m = refused(params.clone());
            assert!(m.contains(expected), "{params}: {m}");
        }
    }

    #[test]
    fn accept_status() {
        let p = parse(json!({"url": "http://h/", "accept_status": ["2xx", 404, "500-503"]}))
            .expect("parses");
        for code in [200, 299, 404, 500, 503] {
            assert!(p.accept.accepts(code), "{code}");
        }
        for code in [199, 300, 403, 504] {
            assert!(!p.accept.accepts(code), "{code}");
        }
        assert_eq!(p.accept.label, "2xx, 404, 500-503");
        for bad in [
            json!([]),
            json!(["6xx"]),
            json!(["2x"]),
            json!(["20x"]),
            json!([99]),
            json!([600]),
            json!(["300-200"]),
            json!(["0200"]),
            json!([2.5]),
            json!([true]),
            json!("2xx"),
        ] {
            let m = refused(json!({"url": "http://h/", "accept_status": bad}));
            assert!(m.contains("`accept_status"), "{bad}: {m}");
        }
    }

    #[test]
    fn timeouts_and_result_headers() {
        let p =
            parse(json!({"url": "http://h/", "timeout_seconds": 2.5, "result_headers": ["ETag"]}))
                .expect("parses");
        assert_eq!(p.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(p.result_headers, [HeaderName::from_static("etag")]);
        for bad in [json!(0), json!(-1), json!(86_401), json!("5")] {
            let m = refused(json!({"url": "http://h/", "timeout_seconds": bad}));
            assert!(m.contains("`timeout_seconds`"), "{bad}: {m}");
        }
        let m = refused(json!({"url": "http://h/", "result_headers": ["a b"]}));
        assert!(m.contains("`result_headers[0]`"), "{m}");
        let m = refused(json!({"url": "http://h/", "result_headers": "etag"}));
        assert!(m.contains("`result_headers` must be a list"), "{m}");
    }

    #[test]
    fn host_allow_list() {
        let list = HostAllowList::new(&[
            "API.example.com".to_string(),
            ".corp.example".to_string(),
            "10.0.0.5".to_string(),
            "[::1]".to_string(),
        ]);
        let allows = |url: &str| list.allows(&Url::parse(url).expect(url));
        for ok in [
            "https://api.example.com/x",
            "https://api.example.com./x",
            "http://corp.example/",
            "http://a.b.corp.example:8080/",
            "http://10.0.0.5/",
            "http://[::1]:9/",
        ] {
            assert!(allows(ok), "{ok}");
        }
        for no in [
            "https://example.com/",
            "https://other.api.example.com/",
            "http://notcorp.example/",
            "http://corp.example.evil/",
            "http://10.0.0.6/",
            "http://127.0.0.1/",
        ] {
            assert!(!allows(no), "{no}");
        }
        let m =
            HttpParams::parse(&json!({"url": "http://127.0.0.1/"}), &list).expect_err("refused");
        assert!(
            m.contains("127.0.0.1") && m.contains("handlers.http.allowed_hosts"),
            "{m}"
        );
        assert!(any_host().allows(&Url::parse("http://anything/").expect("url")));
        assert!(
            HostAllowList::new(&["*".to_string()]).allows(&Url::parse("http://x/").expect("url"))
        );
    }
}
