//! The built-in `http` handler against a local test server (poem on 127.0.0.1, a free port):
//! success with selected headers, statuses outside `accept_status`, timeouts, a refused
//! connection, a TLS failure, the body tail bound, the host allow-list (including a redirect
//! to a host it does not list) and bad params. Then the real `jobu` binary on SQLite: an
//! `http` job created through the admin API runs to SUCCESS, and with the handler disabled
//! the API refuses it, as it refuses serving without a token while it is enabled.

mod common;

use std::time::{Duration, Instant};

use chrono::Utc;
use jobu::config::HttpSettings;
use jobu::handlers::http::{Http, NAME};
use jobu::handlers::{ExecutionContext, Handler, HandlerResult};
use poem::http::StatusCode;
use poem::listener::TcpAcceptor;
use poem::web::{Path, Query};
use poem::{get, handler, post, Body, Request, Response, Route, Server};
use serde_json::{json, Value};

use common::admin::{free_port, launch, tail, AdminServer, Api};
use common::{Backend, TestDb};

/// Upper bound of every wait on the daemon.
const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// the test server

#[handler]
fn json_reply() -> Response {
    Response::builder()
        .header("content-type", "application/json")
        .header("etag", "\"v1\"")
        .header("x-trace", "abc")
        .header("x-multi", "one")
        .header("x-multi", "two")
        .header("x-not-selected", "hidden")
        .body(r#"{"hello":"world"}"#)
}

/// Answers with what it received, so a test can see what the handler sent.
#[handler]
async fn echo(req: &Request, body: Body) -> poem::Result<Response> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let body = body.into_string().await?;
    let reply = json!({
        "method": req.method().as_str(),
        "query": req.uri().query(),
        "content_type": header("content-type"),
        "authorization": header("authorization"),
        "user_agent": header("user-agent"),
        "body": body,
    });
    Ok(Response::builder()
        .content_type("application/json")
        .body(reply.to_string()))
}

#[handler]
fn status(Path(code): Path<u16>) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Response::builder()
        .status(status)
        .body(format!("the server says {code}: overloaded"))
}

#[handler]
async fn sleep(Path(ms): Path<u64>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    "late"
}

/// `n` bytes: `x` repeated, ending in `<END>`.
#[handler]
fn big(Path(n): Path<usize>) -> Vec<u8> {
    let mut body = vec![b'x'; n.saturating_sub(5)];
    body.extend_from_slice(&b"<END>"[..n.min(5)]);
    body
}

#[derive(serde::Deserialize)]
struct Target {
    to: String,
}

#[handler]
fn redirect(Query(target): Query<Target>) -> Response {
    Response::builder()
        .status(StatusCode::FOUND)
        .header("location", target.to)
        .finish()
}

/// Redirects to itself, for ever.
#[handler]
fn redirect_loop() -> Response {
    Response::builder()
        .status(StatusCode::FOUND)
        .header("location", "/loop")
        .finish()
}

/// Serves the test routes on 127.0.0.1 until the test's runtime ends; returns the port.
fn start_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the test server");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("local addr").port();
    let app = Route::new()
        .at("/json", get(json_reply))
        .at("/echo", post(echo).put(echo).get(echo))
        .at("/status/:code", get(status))
        .at("/sleep/:ms", get(sleep))
        .at("/big/:n", get(big))
        .at("/redirect", get(redirect))
        .at("/loop", get(redirect_loop));
    let acceptor = TcpAcceptor::from_std(listener).expect("acceptor");
    tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
    port
}

// ---------------------------------------------------------------------------------------
// the handler, called directly

fn settings(allowed_hosts: &[&str], body_tail_bytes: usize) -> HttpSettings {
    HttpSettings {
        enabled: true,
        allowed_hosts: allowed_hosts.iter().map(|h| h.to_string()).collect(),
        body_tail_bytes,
    }
}

fn ctx(timeout: Duration) -> ExecutionContext {
    ExecutionContext {
        execution_id: 42,
        job_id: None,
        handler_name: NAME.to_string(),
        scheduled_time: Utc::now(),
        attempt: 1,
        max_attempts: 1,
        timeout,
        worker_id: "http-test".to_string(),
        transactions: None,
        parent_execution_id: None,
        parent_status: None,
        parent_result: None,
        parent_error: None,
    }
}

async fn run(http: &Http, params: Value) -> HandlerResult {
    http.run(params, ctx(Duration::from_secs(30))).await
}

fn failure(result: HandlerResult) -> String {
    match result {
        Ok(value) => panic!("expected a failure, got {value}"),
        Err(err) => err.message().to_string(),
    }
}

#[tokio::test]
async fn success_with_a_json_body_and_selected_headers() {
    let port = start_server();
    let http = Http::new(settings(&[], 4096));
    let result = run(
        &http,
        json!({
            "url": format!("http://127.0.0.1:{port}/json"),
            "result_headers": ["ETag", "x-multi", "x-absent"],
        }),
    )
    .await
    .expect("success");
    assert_eq!(result["status"], 200);
    assert_eq!(
        result["headers"],
        json!({"etag": "\"v1\"", "x-multi": "one, two"})
    );
    assert_eq!(result["body_tail"], r#"{"hello":"world"}"#);
    assert_eq!(result["body_bytes"], 17);

    // What was sent: the method, the JSON body with its content type, the headers.
    let result = run(
        &http,
        json!({
            "method": "post",
            "url": format!("http://127.0.0.1:{port}/echo?page=2"),
            "headers": {"Authorization": "Bearer t0ken"},
            "body": {"rows": [1, 2]},
        }),
    )
    .await
    .expect("echo");
    let echoed: Value = serde_json::from_str(result["body_tail"].as_str().expect("text"))
        .expect("the echo is JSON");
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["query"], "page=2");
    assert_eq!(echoed["content_type"], "application/json");
    assert_eq!(echoed["authorization"], "Bearer t0ken");
    assert_eq!(echoed["body"], r#"{"rows":[1,2]}"#);
    assert!(
        echoed["user_agent"]
            .as_str()
            .is_some_and(|ua| ua.starts_with("jobu/")),
        "{echoed}"
    );

    let result = run(
        &http,
        json!({"method": "PUT", "url": format!("http://127.0.0.1:{port}/echo"), "body_text": "a,b"}),
    )
    .await
    .expect("text body");
    let echoed: Value =
        serde_json::from_str(result["body_tail"].as_str().expect("text")).expect("JSON");
    assert_eq!(echoed["body"], "a,b");
    assert_eq!(echoed["content_type"], "text/plain; charset=utf-8");
}

#[tokio::test]
async fn statuses_outside_accept_status_fail_the_attempt() {
    let port = start_server();
    let http = Http::new(settings(&[], 4096));
    let message = failure(
        run(
            &http,
            json!({
                "url": format!("http://127.0.0.1:{port}/status/503?key=SECRETQUERY"),
                "headers": {"Authorization": "Bearer SECRETHEADER"},
            }),
        )
        .await,
    );
    for expected in [
        "HTTP 503 Service Unavailable",
        &format!("GET http://127.0.0.1:{port}/status/503"),
        "accept_status: 2xx",
        "the server says 503: overloaded",
    ] {
        assert!(message.contains(expected), "{expected:?} in {message}");
    }
    for secret in ["SECRETQUERY", "SECRETHEADER"] {
        assert!(!message.contains(secret), "{secret} leaked: {message}");
    }

    let message = failure(
        run(
            &http,
            json!({"url": format!("http://127.0.0.1:{port}/status/404")}),
        )
        .await,
    );
    assert!(message.contains("HTTP 404 Not Found"), "{message}");
    let accepted = run(
        &http,
        json!({"url": format!("http://127.0.0.1:{port}/status/404"), "accept_status": ["2xx", "404"]}),
    )
    .await
    .expect("404 accepted");
    assert_eq!(accepted["status"], 404);
    assert_eq!(accepted["body_tail"], "the server says 404: overloaded");
    // A 2xx outside an explicit list fails.
    let message = failure(
        run(
            &http,
            json!({"url": format!("http://127.0.0.1:{port}/json"), "accept_status": [201]}),
        )
        .await,
    );
    assert!(
        message.contains("HTTP 200 OK") && message.contains("accept_status: 201"),
        "{message}"
    );
}

#[tokio::test]
async fn timeouts_fail_clearly_and_the_attempt_timeout_bounds_them() {
    let port = start_server();
    let http = Http::new(settings(&[], 4096));
    let url = format!("http://127.0.0.1:{port}/sleep/5000");
    let started = Instant::now();
    let message = failure(run(&http, json!({"url": url, "timeout_seconds": 0.5})).await);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        message.contains("timed out after 0.500s") && message.contains("/sleep/5000"),
        "{message}"
    );

    // No timeout_seconds, or a longer one: the attempt's timeout.
    let started = Instant::now();
    let result = http
        .run(
            json!({"url": url, "timeout_seconds": 60}),
            ctx(Duration::from_millis(300)),
        )
        .await;
    let message = failure(result);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(message.contains("timed out after 0.300s"), "{message}");
}

#[tokio::test]
async fn network_failures_fail_clearly() {
    // Nothing listens there (bound, read, released).
    let port = free_port();
    let http = Http::new(settings(&[], 4096));
    let message = failure(run(&http, json!({"url": format!("http://127.0.0.1:{port}/x")})).await);
    assert!(
        message.contains(&format!("GET http://127.0.0.1:{port}/x: cannot connect"))
            && message.to_lowercase().contains("connection refused"),
        "{message}"
    );

    // TLS to a server that speaks plain HTTP.
    let plain = start_server();
    let message = failure(
        run(
            &http,
            json!({"url": format!("https://127.0.0.1:{plain}/json")}),
        )
        .await,
    );
    assert!(
        message.contains(&format!(
            "GET https://127.0.0.1:{plain}/json: TLS handshake failed"
        )),
        "{message}"
    );
}

#[tokio::test]
async fn the_body_tail_is_bounded_and_the_length_counted() {
    let port = start_server();
    let http = Http::new(settings(&[], 1000));
    let result = run(
        &http,
        json!({"url": format!("http://127.0.0.1:{port}/big/300000")}),
    )
    .await
    .expect("success");
    assert_eq!(result["body_bytes"], 300_000);
    let tail = result["body_tail"].as_str().expect("text");
    assert!(
        tail.starts_with('…') && tail.ends_with("x<END>"),
        "{}",
        &tail[..20]
    );
    assert_eq!(tail.len(), "…".len() + 1000);

    // A failure quotes only the start of the tail.
    let message = failure(
        run(
            &http,
            json!({"url": format!("http://127.0.0.1:{port}/big/300000"), "accept_status": ["5xx"]}),
        )
        .await,
    );
    assert!(message.len() < 1000, "{} bytes: {message}", message.len());
}

#[tokio::test]
async fn the_allow_list_refuses_other_hosts_and_redirects_to_them() {
    let port = start_server();
    let http = Http::new(settings(&["127.0.0.1"], 4096));
    let allowed = format!("http://127.0.0.1:{port}/json");
    assert!(http.validate_params(&json!({"url": allowed})).is_ok());
    let elsewhere = json!({"url": format!("http://localhost:{port}/json")});
    let refused = http
        .validate_params(&elsewhere)
        .expect_err("localhost is not listed");
    assert!(
        refused.contains("host localhost is not allowed by handlers.http.allowed_hosts"),
        "{refused}"
    );
    // At run time too (params written to the database directly).
    let message = failure(run(&http, elsewhere).await);
    assert!(message.contains("handlers.http.allowed_hosts"), "{message}");

    // A redirect within the list is followed; one to another host is refused.
    let to_allowed = format!("http://127.0.0.1:{port}/redirect?to={allowed}");
    let followed = run(&http, json!({"url": to_allowed}))
        .await
        .expect("followed");
    assert_eq!(followed["body_tail"], r#"{"hello":"world"}"#);
    let to_elsewhere = format!("http://127.0.0.1:{port}/redirect?to=http://localhost:{port}/json");
    let message = failure(run(&http, json!({"url": to_elsewhere})).await);
    assert!(
        message.contains("redirect refused")
            && message.contains("redirect to host localhost is not allowed"),
        "{message}"
    );

    // A redirect loop ends.
    let open = Http::new(settings(&[], 4096));
    let message = failure(
        run(
            &open,
            json!({"url": format!("http://127.0.0.1:{port}/loop")}),
        )
        .await,
    );
    assert!(
        message.contains("redirect refused: ") && message.contains("more than 10 redirects"),
        "{message}"
    );
}

#[tokio::test]
async fn bad_params_are_refused_clearly() {
    let http = Http::new(settings(&[], 4096));
    for (params, expected) in [
        (Value::Null, "`url` is required"),
        (json!({"url": "ftp://127.0.0.1/"}), "http:// or https://"),
        (
            json!({"url": "http://127.0.0.1/", "method": "BREW"}),
            "`method` must be one of",
        ),
        (
            json!({"url": "http://127.0.0.1/", "headers": {"X-A": 1}}),
            "`headers.X-A` must be a string",
        ),
        (
            json!({"url": "http://127.0.0.1/", "accept_status": ["9xx"]}),
            "`accept_status[0]`",
        ),
        (
            json!({"url": "http://127.0.0.1/", "timeout_seconds": 0}),
            "`timeout_seconds`",
        ),
        (
            json!({"url": "http://127.0.0.1/", "retries": 3}),
            "unknown key \"retries\"",
        ),
    ] {
        let refused = http
            .validate_params(&params)
            .expect_err(&params.to_string());
        assert!(refused.contains(expected), "{params}: {refused}");
        let message = failure(run(&http, params.clone()).await);
        assert!(
            message.starts_with("invalid params: ") && message.contains(expected),
            "{message}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// the binary

/// Polls `GET /api/jobs/{id}` until it reaches a final status; returns the execution.
async fn wait_final(api: &Api, id: i64) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let job = api.get(&format!("/api/jobs/{id}")).await.expect(200);
        let done = matches!(
            job["status"].as_str(),
            Some("SUCCESS" | "FAILED" | "TIMEOUT" | "CANCELLED")
        );
        if done || Instant::now() >= deadline {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_daemon_runs_http_jobs_only_when_enabled() {
    common::run(Backend::Sqlite, |db: TestDb| async move {
        let port = start_server();
        let enabled = [
            ("JOBU__HANDLERS__HTTP__ENABLED", "true"),
            ("JOBU__HANDLERS__HTTP__ALLOWED_HOSTS", "127.0.0.1"),
        ];
        let server = AdminServer::start(&db, "run", "http-on", &enabled).await;
        let created = server
            .api
            .post(
                "/api/jobs",
                &json!({
                    "handler_name": "http",
                    "params": {
                        "url": format!("http://127.0.0.1:{port}/json"),
                        "headers": {"Authorization": "Bearer LOGSECRET"},
                        "result_headers": ["etag"],
                    },
                }),
            )
            .await
            .expect(201);
        let id = created["id"].as_i64().expect("id");
        let job = wait_final(&server.api, id).await;
        assert_eq!(job["status"], "SUCCESS", "{job}\n{}", tail(&server.log(), 30));
        assert_eq!(job["result"]["status"], 200, "{job}");
        assert_eq!(job["result"]["headers"]["etag"], "\"v1\"", "{job}");
        let log = server.log();
        assert!(
            log.contains("http response") && !log.contains("LOGSECRET"),
            "one line per request, without header values:\n{}", 
            tail(&log, 30)
        );

        // A host the list does not hold: a 422 naming the params.
        let refused = server
            .api
            .post(
                "/api/jobs",
                &json!({"handler_name": "http", "params": {"url": format!("http://localhost:{port}/json")}}),
            )
            .await
            .expect_error(422);
        assert!(
            refused.message.contains("handlers.http.allowed_hosts"),
            "{}",
            refused.message
        );
        // A non-accepted status fails the execution with the status in its error.
        let created = server
            .api
            .post(
                "/api/jobs",
                &json!({"handler_name": "http", "params": {"url": format!("http://127.0.0.1:{port}/status/503")}}),
            )
            .await
            .expect(201);
        let job = wait_final(&server.api, created["id"].as_i64().expect("id")).await;
        assert_eq!(job["status"], "FAILED", "{job}");
        assert!(
            job["error_message"]
                .as_str()
                .is_some_and(|m| m.contains("HTTP 503")),
            "{job}"
        );
        drop(server);

        // Disabled (the default): the API refuses the handler and says how to enable it.
        let server = AdminServer::start(&db, "run", "http-off", &[]).await;
        let refused = server
            .api
            .post(
                "/api/jobs",
                &json!({"handler_name": "http", "params": {"url": format!("http://127.0.0.1:{port}/json")}}),
            )
            .await
            .expect_error_field(422, "handler_name");
        assert!(
            refused.message.contains("unknown handler \"http\"")
                && refused.message.contains("handlers.http.enabled"),
            "{}",
            refused.message
        );
        drop(server);

        // No token at all is refused while http is on, as with shell: exit 2 naming the key.
        let mut launched = launch(
            &db,
            "admin",
            "http-insecure",
            &[
                ("JOBU__ADMIN__ALLOW_INSECURE", "true"),
                ("JOBU__HANDLERS__SHELL__ENABLED", "false"),
                ("JOBU__HANDLERS__HTTP__ENABLED", "true"),
            ],
        );
        let code = launched.daemon.wait_exit(WAIT).await.and_then(|s| s.code());
        let log = launched.log();
        assert_eq!(code, Some(2), "{}", tail(&log, 20));
        assert!(
            log.contains("handlers.http.enabled") && !log.contains("handlers.shell.enabled"),
            "{log}"
        );
        launched.scratch.remove();
    })
    .await;
}
