//! `docker-compose.yml` verified without a Docker engine: every `JOBU__` variable a service
//! sets names a real setting and is accepted by the binary, every command is a subcommand,
//! the ordering and grace periods are right, and then the whole stack runs as local
//! processes against the local PostgreSQL, each service with exactly its environment (the
//! image's `ENV` lines from the Dockerfile, the env file, the service's `environment`), the
//! host name `postgres` mapped to 127.0.0.1, and schedules and runs a cron.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::admin::{free_port, Api};
use common::process::{bin, eventually};
use common::{Backend, TestDb};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{json, Value};
use yaml_rust2::{Yaml, YamlLoader};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Compose reads `env_file: [jobu.env]`, which operators copy from this example.
const ENV_FILE_EXAMPLE: &str = "deploy/compose/jobu.env.example";

/// One jobu service of the compose file, resolved as Compose would.
#[derive(Debug)]
struct Service {
    name: String,
    command: Vec<String>,
    env: BTreeMap<String, String>,
    depends_on: BTreeMap<String, String>,
    healthcheck: Option<Vec<String>>,
    stop_grace_seconds: Option<u64>,
    ports: Vec<String>,
}

/// The compose file with `<<` merge keys applied (YAML 1.2 parsers leave them to the tool).
fn compose() -> Yaml {
    let text = std::fs::read_to_string(Path::new(ROOT).join("docker-compose.yml"))
        .expect("read docker-compose.yml");
    let mut docs = YamlLoader::load_from_str(&text).expect("docker-compose.yml is YAML");
    merge_keys(docs.remove(0))
}

fn merge_keys(node: Yaml) -> Yaml {
    match node {
        Yaml::Hash(hash) => {
            let mut out = yaml_rust2::yaml::Hash::new();
            let merge = Yaml::String("<<".into());
            if let Some(base) = hash.get(&merge) {
                let bases = match base {
                    Yaml::Array(list) => list.clone(),
                    one => vec![one.clone()],
                };
                for base in bases {
                    if let Yaml::Hash(base) = merge_keys(base) {
                        out.extend(base);
                    }
                }
            }
            for (k, v) in hash {
                if k != merge {
                    out.insert(k, merge_keys(v));
                }
            }
            Yaml::Hash(out)
        }
        Yaml::Array(list) => Yaml::Array(list.into_iter().map(merge_keys).collect()),
        other => other,
    }
}

fn text(y: &Yaml) -> String {
    match y {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn strings(y: &Yaml) -> Vec<String> {
    match y {
        Yaml::Array(list) => list.iter().map(text).collect(),
        Yaml::BadValue => Vec::new(),
        one => vec![text(one)],
    }
}

/// `${VAR:-default}`, `${VAR:?message}`, `${VAR}` and `$$`, with no variable set (the
/// defaults are what a plain `docker compose up` uses).
fn interpolate(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(inner) = rest.strip_prefix('{') {
            let end = inner.find('}').expect("closed ${");
            let expr = &inner[..end];
            if let Some((_, default)) = expr.split_once(":-") {
                out.push_str(default);
            } else if let Some((var, message)) = expr.split_once(":?") {
                panic!("compose would refuse to start: {var} unset ({message})");
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
        }
    }
    out.push_str(rest);
    out
}

/// `KEY=value` lines of an env file (comments and blank lines skipped).
fn env_file(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=value");
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

/// The `ENV` instructions of the Dockerfile's last stage: the image's environment.
fn image_env() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).expect("Dockerfile");
    let joined = text.replace("\\\n", " ");
    let last_stage = joined.rsplit("\nFROM ").next().expect("a stage");
    let mut env = BTreeMap::new();
    for line in last_stage.lines() {
        if let Some(pairs) = line.trim().strip_prefix("ENV ") {
            for pair in pairs.split_whitespace() {
                let (k, v) = pair.split_once('=').expect("ENV KEY=value");
                env.insert(k.to_string(), v.to_string());
            }
        }
    }
    env
}

fn seconds(duration: &str) -> u64 {
    let d = duration.trim();
    if let Some(m) = d.strip_suffix('m') {
        m.parse::<u64>().expect("minutes") * 60
    } else {
        d.trim_end_matches('s').parse().expect("seconds")
    }
}

fn jobu_services(compose: &Yaml) -> Vec<Service> {
    let mut out = Vec::new();
    let Yaml::Hash(services) = &compose["services"] else {
        panic!("no services");
    };
    let file_env = env_file(&Path::new(ROOT).join(ENV_FILE_EXAMPLE));
    for (name, svc) in services {
        if svc["build"].is_badvalue() {
            continue; // the database images
        }
        for file in strings(&svc["env_file"]) {
            assert_eq!(file, "jobu.env", "{}: env_file", text(name));
        }
        let mut env = image_env();
        env.extend(file_env.clone());
        if let Yaml::Hash(vars) = &svc["environment"] {
            for (k, v) in vars {
                env.insert(text(k), interpolate(&text(v)));
            }
        }
        let depends_on = match &svc["depends_on"] {
            Yaml::Hash(deps) => deps
                .iter()
                .map(|(k, v)| (text(k), text(&v["condition"])))
                .collect(),
            _ => BTreeMap::new(),
        };
        let healthcheck = match &svc["healthcheck"] {
            h if h["disable"].as_bool() == Some(true) => None,
            h if !h["test"].is_badvalue() => Some(strings(&h["test"])),
            _ => None,
        };
        out.push(Service {
            name: text(name),
            command: strings(&svc["command"]),
            env,
            depends_on,
            healthcheck,
            stop_grace_seconds: svc["stop_grace_period"].as_str().map(seconds),
            ports: strings(&svc["ports"]),
        });
    }
    out
}

/// `JOBU__A__B=..` to the setting's dotted key `a.b`.
fn setting_key(var: &str) -> Option<String> {
    var.strip_prefix("JOBU__")
        .map(|rest| rest.to_ascii_lowercase().replace("__", "."))
}

/// `jobu config show` with exactly `env`: the effective settings, or the error.
fn config_show(env: &BTreeMap<String, String>) -> Result<Value, String> {
    let scratch = tempfile::tempdir().expect("scratch");
    let out = Command::new(bin())
        .args(["config", "show"])
        .env_clear()
        .envs(env)
        .current_dir(scratch.path())
        .output()
        .expect("run jobu config show");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("config show prints JSON"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn lookup<'a>(settings: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.')
        .try_fold(settings, |node, part| node.get(part))
}

fn with_config_dir(env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut env = env.clone();
    // The image's /etc/jobu is the repository's config folder.
    env.insert("JOBU_CONFIG_DIR".into(), format!("{ROOT}/config"));
    env
}

#[test]
fn every_variable_is_a_setting_and_every_command_a_subcommand() {
    let compose = compose();
    let services = jobu_services(&compose);
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    for role in ["migrate", "admin"] {
        assert!(names.contains(&role), "a {role} service: {names:?}");
    }
    let count = |cmd: &str| services.iter().filter(|s| s.command[0] == cmd).count();
    assert_eq!(count("dispatcher"), 2, "two dispatchers");
    assert_eq!(count("worker"), 2, "two workers");
    assert_eq!(count("admin"), 1, "one admin");

    for svc in &services {
        let env = with_config_dir(&svc.env);
        let settings = config_show(&env)
            .unwrap_or_else(|e| panic!("{}: the binary refuses its environment: {e}", svc.name));
        for (var, value) in &svc.env {
            let Some(key) = setting_key(var) else {
                continue;
            };
            let effective = lookup(&settings, &key)
                .unwrap_or_else(|| panic!("{}: {var} names no setting ({key})", svc.name));
            let shown = match effective {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            // Passwords are masked in `config show`; the rest must read back as set.
            if !shown.contains("***") {
                assert_eq!(&shown, value, "{}: {var}", svc.name);
            }
        }

        let help = Command::new(bin())
            .args(&svc.command)
            .arg("--help")
            .output()
            .expect("run jobu --help");
        assert!(
            help.status.success(),
            "{}: `jobu {}` is not a command line jobu accepts: {}",
            svc.name,
            svc.command.join(" "),
            String::from_utf8_lossy(&help.stderr)
        );
        if let Some(test) = &svc.healthcheck {
            assert_eq!(
                &test[..2],
                ["CMD", "jobu"],
                "{}: healthcheck runs jobu",
                svc.name
            );
            let help = Command::new(bin())
                .args(&test[2..])
                .arg("--help")
                .output()
                .expect("run jobu health --help");
            assert!(help.status.success(), "{}: {test:?}", svc.name);
        }

        // Ordering: the schema before any role, the database before the schema.
        if svc.command[0] == "migrate" {
            assert_eq!(
                svc.depends_on.get("postgres").map(String::as_str),
                Some("service_healthy"),
                "{}",
                svc.name
            );
        } else {
            assert_eq!(
                svc.depends_on.get("migrate").map(String::as_str),
                Some("service_completed_successfully"),
                "{}: roles start after the migration",
                svc.name
            );
        }
        if svc.command[0] == "worker" {
            let drain = settings["worker"]["shutdown_timeout_seconds"]
                .as_u64()
                .expect("shutdown timeout");
            let grace = svc
                .stop_grace_seconds
                .expect("a worker's stop_grace_period");
            assert!(
                grace > drain,
                "{}: stop_grace_period {grace}s must exceed worker.shutdown_timeout_seconds {drain}",
                svc.name
            );
        }
    }
    let postgres = &compose["services"]["postgres"];
    assert!(
        !postgres["healthcheck"]["test"].is_badvalue(),
        "postgres health check"
    );
    assert_eq!(
        strings(&compose["services"]["mariadb"]["profiles"]),
        ["mysql"],
        "MariaDB behind the mysql profile"
    );
}

/// A service started as a local process in its own folder, as its container would run.
struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn start(svc: &Service, env: &BTreeMap<String, String>, dir: &Path) -> Process {
        let home = dir.join(&svc.name);
        std::fs::create_dir_all(&home).expect("service folder");
        let log = dir.join(format!("{}.log", svc.name));
        let child = Command::new(bin())
            .args(&svc.command)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env)
            .current_dir(&home)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join(format!("{}.out", svc.name))).expect("out"))
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start jobu");
        Process {
            name: svc.name.clone(),
            child,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The compose URL with its host (a service name) and database mapped to this test's.
fn local_url(compose_url: &str, db: &TestDb) -> String {
    let mut url = url::Url::parse(compose_url).expect("compose database URL");
    assert_eq!(
        url.host_str(),
        Some("postgres"),
        "the compose file's database service"
    );
    let local = url::Url::parse(&db.url).expect("test database URL");
    url.set_host(local.host_str()).expect("host");
    url.set_port(local.port()).expect("port");
    url.set_path(local.path());
    url.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_stack_runs_as_processes_and_runs_a_cron() {
    // The migrate service migrates: the test database starts empty.
    let Some(db) = TestDb::create_with(Backend::Postgres, false).await else {
        return;
    };
    // The compose file's role and password (trust auth ignores the password); the role owns
    // the database as POSTGRES_USER would.
    let name = url::Url::parse(&db.url).expect("url").path()[1..].to_string();
    for sql in [
        "DO $$ BEGIN CREATE ROLE jobu LOGIN PASSWORD 'jobu'; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
            .to_string(),
        format!("ALTER DATABASE \"{name}\" OWNER TO jobu"),
        "ALTER SCHEMA public OWNER TO jobu".to_string(),
    ] {
        db.store
            .connection()
            .execute_unprepared(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    let services = jobu_services(&compose());
    let scratch = tempfile::Builder::new()
        .prefix("jobu_compose_")
        .tempdir()
        .expect("scratch");
    let admin_port = free_port();
    let env_of = |svc: &Service| {
        let mut env = with_config_dir(&svc.env);
        let url = env
            .get("JOBU__DATABASES__DEFAULT__URL")
            .cloned()
            .expect("every service names the database");
        env.insert("JOBU__DATABASES__DEFAULT__URL".into(), local_url(&url, &db));
        // Publishing `127.0.0.1:8080:8080` is emulated by another free port, since tests
        // run side by side; and every-2-seconds crons are allowed so the test takes seconds.
        if !svc.ports.is_empty() {
            env.insert("JOBU__ADMIN__PORT".into(), admin_port.to_string());
        }
        env.insert(
            "JOBU__DISPATCHER__MIN_CRON_INTERVAL_SECONDS".into(),
            "0".into(),
        );
        env
    };

    // migrate first, to completion, as `service_completed_successfully` orders it.
    let migrate = services
        .iter()
        .find(|s| s.command[0] == "migrate")
        .expect("migrate");
    let mut one_shot = Process::start(migrate, &env_of(migrate), scratch.path());
    let status = one_shot.wait(Duration::from_secs(60)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "migrate: {status:?}\n{}",
        one_shot.log()
    );
    assert_eq!(db.store.pending_migrations().await.expect("pending"), 0);

    let mut running: Vec<(Process, &Service)> = services
        .iter()
        .filter(|s| s.command[0] != "migrate")
        .map(|s| (Process::start(s, &env_of(s), scratch.path()), s))
        .collect();
    let dump = |running: &[(Process, &Service)]| {
        running
            .iter()
            .map(|(p, _)| format!("===== {}\n{}", p.name, p.log()))
            .collect::<Vec<_>>()
            .join("\n")
    };

    // Each service's own health check passes once it is up.
    for (process, svc) in &running {
        let Some(test) = &svc.healthcheck else {
            continue;
        };
        let env = env_of(svc);
        let healthy = eventually(Duration::from_secs(30), || {
            let env = env.clone();
            let args = test[2..].to_vec();
            async move {
                Command::new(bin())
                    .args(&args)
                    .env_clear()
                    .envs(&env)
                    .output()
                    .is_ok_and(|o| o.status.success())
            }
        })
        .await;
        assert!(
            healthy,
            "{}: {test:?} never passed\n{}",
            process.name,
            dump(&running)
        );
    }

    // A cron created through the published admin API with the env file's token.
    let token =
        env_file(&Path::new(ROOT).join(ENV_FILE_EXAMPLE))["JOBU__ADMIN__AUTH_TOKEN"].clone();
    let api = Api::new(admin_port).with_token(&token);
    let marker = scratch.path().join("ran.txt");
    let cron = api
        .post(
            "/api/crons",
            &json!({
                "name": "compose-stack",
                "cron_expression": "*/2 * * * * *",
                "handler_name": "shell",
                "handler_params": {"command": format!("echo $JOBU_EXECUTION_ID >> {}", marker.display())},
            }),
        )
        .await
        .expect(201);
    let cron_id = cron["id"].as_i64().expect("cron id");

    let ran = eventually(Duration::from_secs(40), || {
        let store = db.store.clone();
        async move {
            let row = store
                .connection()
                .query_one(Statement::from_string(
                    store.connection().get_database_backend(),
                    format!(
                        "SELECT COUNT(*) AS n FROM job_executions WHERE job_id = {cron_id} \
                         AND status = 'SUCCESS'"
                    ),
                ))
                .await
                .ok()
                .flatten();
            row.and_then(|r| r.try_get::<i64>("", "n").ok())
                .unwrap_or(0)
                >= 3
        }
    })
    .await;
    assert!(
        ran,
        "the stack did not run the cron 3 times\n{}",
        dump(&running)
    );
    let lines = std::fs::read_to_string(&marker).unwrap_or_default();
    let mut ids: Vec<&str> = lines.lines().collect();
    let total = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), total, "an execution ran twice: {lines}");

    // SIGTERM, as `docker compose stop` sends it: every service exits 0 within its grace.
    for (process, _) in &running {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(process.child.id() as i32, libc::SIGTERM) };
    }
    for (process, svc) in &mut running {
        let grace = Duration::from_secs(svc.stop_grace_seconds.unwrap_or(10));
        let status = process.wait(grace).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "{}: {status:?} after SIGTERM\n{}",
            process.name,
            process.log()
        );
        for line in process.log().lines() {
            assert!(
                serde_json::from_str::<Value>(line).is_ok(),
                "{}: JOBU__LOGGING__FORMAT=json, yet a line is not JSON: {line}",
                process.name
            );
        }
    }
    drop(running);
    db.cleanup().await;
}
