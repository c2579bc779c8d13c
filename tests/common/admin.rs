//! The admin HTTP API as a client sees it: a real `jobu admin` (or `jobu run`) process of the
//! built binary on a free loopback port, and a small HTTP client that keeps every reply's
//! status and raw body so tests can assert on both.
//!
//! A server started without `JOBU__ADMIN__AUTH_TOKEN` (and without `allow_insecure`) guards
//! its API with the token it generates in its scratch folder (`data/admin_token`, the working
//! directory being the scratch folder), as `jobu` does for a user: [`AdminServer::start`] reads
//! that file and gives [`AdminServer::api`] the token, so tests about other things talk to a
//! guarded server as a client with the token would. A test that configures a token itself gets
//! an anonymous `api`, as before, and uses `api_with_token`.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::process::{Daemon, Scratch};
use super::TestDb;

/// How long a process may take until `GET /health` answers.
pub const START_LIMIT: Duration = Duration::from_secs(20);
/// Per-request limit, so a hung server fails a test instead of stalling it.
const REQUEST_LIMIT: Duration = Duration::from_secs(15);
/// Where jobu keeps the token it generates, relative to its working directory.
pub const TOKEN_FILE: &str = "data/admin_token";

/// A port nobody listens on right now: bound on 127.0.0.1:0, read, released.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// One `jobu` process serving the admin API, with its scratch folder (config, log). Killed
/// when dropped; its log tail is printed when the test is failing.
pub struct AdminServer {
    /// A client; with the server's generated token when it generated one (see the module).
    pub api: Api,
    pub port: u16,
    pub name: String,
    pub daemon: Daemon,
    pub scratch: Scratch,
    /// The token the server generated (or read from its token file), when it uses one.
    pub token: Option<String>,
    role: String,
    extra: Vec<(String, String)>,
    keep_scratch: bool,
}

/// A process started with the admin settings, not yet known to serve.
pub struct Launched {
    pub port: u16,
    pub name: String,
    pub daemon: Daemon,
    pub scratch: Scratch,
}

impl Launched {
    /// Everything the process wrote to stderr so far (its log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.scratch.path(&format!("{}.log", self.name)))
            .unwrap_or_default()
    }
}

/// Starts `jobu <role>` with the test settings of [`super::process::base_env`], `extra`, and
/// `JOBU__ADMIN__PORT` set to a free port; does not wait for it.
pub fn launch(db: &TestDb, role: &str, label: &str, extra: &[(&str, &str)]) -> Launched {
    let name = format!("{label}-{}", db.backend.name());
    launch_in(Scratch::new(&name), db, role, &name, extra)
}

/// Like [`launch`] in an existing scratch folder (its files, such as a token file, kept), the
/// log appended to `<name>.log`.
pub fn launch_in(
    scratch: Scratch,
    db: &TestDb,
    role: &str,
    name: &str,
    extra: &[(&str, &str)],
) -> Launched {
    let port = free_port();
    let port_text = port.to_string();
    let mut env: Vec<(&str, &str)> = vec![("JOBU__ADMIN__PORT", port_text.as_str())];
    env.extend_from_slice(extra);
    let daemon = Daemon::start(&scratch, db, role, name, &env);
    Launched {
        port,
        name: name.to_string(),
        daemon,
        scratch,
    }
}

/// The last value `extra` gives `key`.
fn setting<'a>(extra: &[(&'a str, &'a str)], key: &str) -> Option<&'a str> {
    extra.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// The token a server started with `extra` in `scratch` generated for itself: `None` when
/// the test configured a token or `allow_insecure`.
pub fn generated_token(scratch: &Scratch, extra: &[(&str, &str)]) -> Option<String> {
    let configured = setting(extra, "JOBU__ADMIN__AUTH_TOKEN").is_some_and(|t| !t.is_empty());
    let insecure = setting(extra, "JOBU__ADMIN__ALLOW_INSECURE") == Some("true");
    if configured || insecure {
        return None;
    }
    let file = scratch
        .dir
        .join(setting(extra, "JOBU__ADMIN__TOKEN_FILE").unwrap_or(TOKEN_FILE));
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "the server serves, but its token file {} cannot be read: {e}",
            file.display()
        )
    });
    Some(text.trim_end().to_string())
}

impl AdminServer {
    /// Starts `jobu <role>` (`admin` or `run`) and waits until `GET /health` answers 200.
    /// A start that lost its port to another test is retried on a new port.
    pub async fn start(
        db: &TestDb,
        role: &str,
        label: &str,
        extra: &[(&str, &str)],
    ) -> AdminServer {
        let name = format!("{label}-{}", db.backend.name());
        Self::start_in(Scratch::new(&name), db, role, &name, extra).await
    }

    /// Like [`AdminServer::start`] in an existing scratch folder.
    pub async fn start_in(
        scratch: Scratch,
        db: &TestDb,
        role: &str,
        name: &str,
        extra: &[(&str, &str)],
    ) -> AdminServer {
        let dir = scratch.dir;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut launched = launch_in(Scratch { dir: dir.clone() }, db, role, name, extra);
            let logged_before = launched.log().len();
            match wait_healthy(&mut launched).await {
                Ok(()) => {
                    let Launched {
                        port,
                        name,
                        daemon,
                        scratch,
                    } = launched;
                    let token = generated_token(&scratch, extra);
                    let api = match &token {
                        Some(token) => Api::new(port).with_token(token),
                        None => Api::new(port),
                    };
                    return AdminServer {
                        api,
                        port,
                        name,
                        daemon,
                        scratch,
                        token,
                        role: role.to_string(),
                        extra: extra
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        keep_scratch: false,
                    };
                }
                Err(log)
                    if attempts < 3
                        && log
                            .get(logged_before..)
                            .is_some_and(|new| new.to_lowercase().contains("in use")) =>
                {
                    continue;
                }
                Err(log) => {
                    panic!(
                        "jobu {role} ({name}) did not serve GET /health within {START_LIMIT:?} \
                         (scratch {}); its log:\n{}",
                        dir.display(),
                        tail(&log, 60)
                    );
                }
            }
        }
    }

    /// Kills the process and starts it again with the same role and settings in the same
    /// scratch folder (its token file kept), on a new port.
    pub async fn restart(mut self, db: &TestDb) -> AdminServer {
        self.daemon.kill9();
        self.keep_scratch = true;
        let scratch = Scratch {
            dir: self.scratch.dir.clone(),
        };
        let (role, name, extra) = (self.role.clone(), self.name.clone(), self.extra.clone());
        drop(self);
        let extra: Vec<(&str, &str)> = extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        AdminServer::start_in(scratch, db, &role, &name, &extra).await
    }

    /// The same server's client with a bearer token.
    pub fn api_with_token(&self, token: &str) -> Api {
        self.api.with_token(token)
    }

    /// Everything the process wrote to stderr so far (its log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.scratch.path(&format!("{}.log", self.name)))
            .unwrap_or_default()
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.daemon.kill9();
        if std::thread::panicking() {
            eprintln!(
                "===== log of {} ({}) =====\n{}",
                self.name,
                self.scratch.dir.display(),
                tail(&self.log(), 60)
            );
        } else if !self.keep_scratch {
            let _ = std::fs::remove_dir_all(&self.scratch.dir);
        }
    }
}

/// Polls `GET /health` every 100 ms; `Err(log)` when the process exits or the limit passes.
async fn wait_healthy(launched: &mut Launched) -> Result<(), String> {
    let api = Api::new(launched.port);
    let deadline = tokio::time::Instant::now() + START_LIMIT;
    loop {
        if !launched.daemon.alive() {
            // Give stderr a moment to be flushed by the exiting process.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Err(launched.log());
        }
        if let Ok(reply) = api.try_send(Method::GET, "/health", None, None).await {
            if reply.status == 200 {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(launched.log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// An HTTP client bound to one server, optionally sending `Authorization: Bearer <token>`.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    pub base: String,
    token: Option<String>,
}

/// One HTTP reply: status, content type, headers and the raw body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// `METHOD path`, for failure messages.
    pub request: String,
    pub status: u16,
    pub content_type: Option<String>,
    /// Every header, names in lowercase, in order.
    pub headers: Vec<(String, String)>,
    pub text: String,
}

/// The documented error body `{"status", "error", "message", "field"?}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub error: String,
    pub message: String,
    pub field: Option<String>,
}

impl Api {
    pub fn new(port: u16) -> Api {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_LIMIT)
            // A fresh connection per request: a server may close one after refusing a body
            // it did not read (413), and a reused one would then fail the next request.
            .pool_max_idle_per_host(0)
            .no_proxy()
            .build()
            .expect("http client");
        Api {
            http,
            base: format!("http://127.0.0.1:{port}"),
            token: None,
        }
    }

    pub fn with_token(&self, token: &str) -> Api {
        Api {
            token: Some(token.to_string()),
            ..self.clone()
        }
    }

    pub fn without_token(&self) -> Api {
        Api {
            token: None,
            ..self.clone()
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, None).await
    }

    /// POST with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::POST, path, Some(json_body(body))).await
    }

    /// POST without a body (actions such as toggle, trigger, cancel, retry).
    pub async fn post_empty(&self, path: &str) -> Reply {
        self.send(Method::POST, path, None).await
    }

    /// PUT with a JSON body.
    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::PUT, path, Some(json_body(body))).await
    }

    /// Any request, with an optional `(content type, bytes)` body (an empty content type
    /// sends none); panics when the server
    /// cannot be reached or does not answer in time.
    pub async fn send(&self, method: Method, path: &str, body: Option<(&str, Vec<u8>)>) -> Reply {
        let request = format!("{method} {path}");
        self.try_send(method, path, body, None)
            .await
            .unwrap_or_else(|e| panic!("{request}: no reply: {e}"))
    }

    /// Like [`Api::send`] with an explicit `Authorization` header value (overriding the token).
    pub async fn send_with_authorization(
        &self,
        method: Method,
        path: &str,
        authorization: &str,
    ) -> Reply {
        let request = format!("{method} {path}");
        self.try_send(method, path, None, Some(authorization))
            .await
            .unwrap_or_else(|e| panic!("{request}: no reply: {e}"))
    }

    pub async fn try_send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        authorization: Option<&str>,
    ) -> Result<Reply, reqwest::Error> {
        let request = format!("{method} {path}");
        let mut builder = self.http.request(method, format!("{}{path}", self.base));
        match (authorization, &self.token) {
            (Some(value), _) => builder = builder.header("authorization", value),
            (None, Some(token)) => builder = builder.bearer_auth(token),
            (None, None) => {}
        }
        if let Some((content_type, bytes)) = body {
            if !content_type.is_empty() {
                builder = builder.header("content-type", content_type);
            }
            builder = builder.body(bytes);
        }
        let response = builder.send().await?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let text = response.text().await?;
        Ok(Reply {
            request,
            status,
            content_type,
            headers,
            text,
        })
    }
}

/// One request written as given over a new connection to `127.0.0.1:port`, so a test controls
/// every header (a `Host` that is not the address connected to, or none at all): `head` is
/// the request line and headers without the blank line; `Connection: close` and, with a
/// body, `Content-Length` are added. Redirects are not followed.
pub async fn raw(port: u16, head: &str, body: &[u8]) -> Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = head.lines().next().unwrap_or_default().to_string();
    let mut message = head
        .trim_end()
        .replace('\n', "\r\n")
        .replace("\r\r\n", "\r\n");
    message.push_str("\r\nConnection: close\r\n");
    if !body.is_empty() {
        message.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    message.push_str("\r\n");
    let mut bytes = message.into_bytes();
    bytes.extend_from_slice(body);
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(&bytes).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(REQUEST_LIMIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{request}: no reply within {REQUEST_LIMIT:?}"))
        .unwrap_or_else(|e| panic!("{request}: {e}"));
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("{request}: no header end in {answer:?}"));
    let head_text = String::from_utf8_lossy(&answer[..split]).into_owned();
    let mut lines = head_text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{request}: no status line in {head_text}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut payload = answer[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
    {
        payload = dechunk(&payload);
    }
    let content_type = headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.clone());
    Reply {
        request,
        status,
        content_type,
        headers,
        text: String::from_utf8_lossy(&payload).into_owned(),
    }
}

/// A chunked body, decoded.
fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            break;
        };
        let start = end + 2;
        if size == 0 || start + size > data.len() {
            break;
        }
        out.extend_from_slice(&data[start..start + size]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

impl Reply {
    /// The first value of a header (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn json_body(body: &Value) -> (&'static str, Vec<u8>) {
    (
        "application/json",
        serde_json::to_vec(body).expect("serialize body"),
    )
}

/// `METHOD path -> status body`, the body cut at 2000 bytes.
impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Reply {
    pub fn describe(&self) -> String {
        let mut body = self.text.clone();
        if body.len() > 2000 {
            let mut cut = 2000;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
            body.push_str("...");
        }
        format!("{} -> {} {body}", self.request, self.status)
    }

    /// The body as JSON (panics with the reply when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.describe()))
    }

    /// Asserts the status and returns the JSON body (`Null` for an empty body).
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "unexpected status: {}",
            self.describe()
        );
        if self.text.trim().is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts the status and an empty body (204).
    #[track_caller]
    pub fn expect_empty(&self, status: u16) {
        assert_eq!(
            self.status,
            status,
            "unexpected status: {}",
            self.describe()
        );
        assert!(
            self.text.trim().is_empty(),
            "expected an empty body: {}",
            self.describe()
        );
    }

    /// Asserts one of `statuses` and the documented error body, whose `status` must repeat
    /// the HTTP status.
    #[track_caller]
    pub fn expect_error_in(&self, statuses: &[u16]) -> ApiError {
        assert!(
            statuses.contains(&self.status),
            "expected one of {statuses:?}: {}",
            self.describe()
        );
        self.error_body()
    }

    /// Asserts the status and the documented error body.
    #[track_caller]
    pub fn expect_error(&self, status: u16) -> ApiError {
        self.expect_error_in(&[status])
    }

    /// Asserts a 4xx status (any) with the documented error body.
    #[track_caller]
    pub fn expect_client_error(&self) -> ApiError {
        assert!(
            (400..500).contains(&self.status),
            "expected a 4xx: {}",
            self.describe()
        );
        self.error_body()
    }

    /// Asserts `field` is the documented one.
    #[track_caller]
    pub fn expect_error_field(&self, status: u16, field: &str) -> ApiError {
        let error = self.expect_error(status);
        assert_eq!(
            error.field.as_deref(),
            Some(field),
            "error names the wrong field: {}",
            self.describe()
        );
        error
    }

    /// Parses and checks the error body shape: exactly `status` (= the HTTP status),
    /// `error` and `message` (non-empty strings) and optionally `field` (a string).
    #[track_caller]
    pub fn error_body(&self) -> ApiError {
        let body: Value = serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {}", self.describe()));
        let object = body
            .as_object()
            .unwrap_or_else(|| panic!("error body is not an object: {}", self.describe()));
        for key in object.keys() {
            assert!(
                matches!(key.as_str(), "status" | "error" | "message" | "field"),
                "error body has an undocumented key `{key}`: {}",
                self.describe()
            );
        }
        assert_eq!(
            object.get("status").and_then(Value::as_u64),
            Some(self.status as u64),
            "error body `status` must repeat the HTTP status: {}",
            self.describe()
        );
        let text = |key: &str| -> String {
            let value = object
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("error body lacks string `{key}`: {}", self.describe()));
            assert!(
                !value.trim().is_empty(),
                "error body `{key}` is empty: {}",
                self.describe()
            );
            value.to_string()
        };
        let field = match object.get("field") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => panic!("error body `field` is {other}: {}", self.describe()),
        };
        ApiError {
            status: self.status,
            error: text("error"),
            message: text("message"),
            field,
        }
    }
}
