//! The `jobu` command line: parses arguments, loads settings and maps failures to exit codes
//! (2 for bad input or configuration, 1 for runtime failures such as an unreachable database).

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Parser, Subcommand};

use jobu::actors::{Exit, Roles, Runtime, RuntimeError};
use jobu::config::{redact_url, ConfigSource, Settings};
use jobu::schedule::Schedule;
use jobu::store::Store;
use jobu::telemetry::LogGuard;

mod allocator;

/// Exit code for invalid input or configuration.
const EXIT_USAGE: u8 = 2;
/// Exit code for failures at run time.
const EXIT_FAILURE: u8 = 1;
/// Upper bound on `cron next --count`.
const MAX_NEXT_COUNT: usize = 100_000;

#[derive(Parser)]
#[command(
    name = "jobu",
    version,
    about = "Cron job scheduler and job runner coordinated through its database"
)]
struct Cli {
    /// Folder with database.yaml, dispatcher.yaml, worker.yaml, admin.yaml, logging.yaml and
    /// retention.yaml
    /// [default: ./config when it exists, else built-in defaults]
    #[arg(long, global = true, value_name = "DIR", env = "JOBU_CONFIG_DIR")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the dispatcher, a worker pool and the rescuer in one process (the default)
    Run,
    /// Run only the dispatcher (and the rescuer): creates executions from cron schedules
    Dispatcher,
    /// Run only a worker pool (and the rescuer): claims and runs executions
    Worker,
    /// Serve only the admin HTTP API, web console, /health, /ready and /metrics
    Admin,
    /// Apply the schema migrations to the configured default database (idempotent)
    Migrate {
        /// Keep retrying the connection for up to S seconds while the database starts (a
        /// one-shot container beside a database container)
        #[arg(long, default_value_t = 0, value_name = "S")]
        wait: u64,
    },
    /// Probe a running process, for container health checks: exit 0 healthy, 1 not
    Health {
        /// auto (admin when admin.enabled, else any role's presence on this host), admin
        /// (GET /health), dispatcher or worker (a fresh presence row of that role on this
        /// host), database (answers, schema current)
        #[arg(long, default_value = "auto", value_name = "ROLE",
              value_parser = clap::builder::PossibleValuesParser::new(jobu::health::Probe::NAMES))]
        role: String,
        /// Seconds to wait for an answer
        #[arg(long, default_value_t = 5.0, value_name = "S")]
        timeout: f64,
    },
    /// Configuration tools
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Cron expression tools, and backfills of past fire times
    Cron {
        #[command(subcommand)]
        command: CronCommand,
    },
    /// Measure throughput and latency in this process on a scratch database of its own
    Bench {
        #[command(subcommand)]
        scenario: BenchCommand,
        /// A PostgreSQL or MySQL/MariaDB server, where the bench creates (and then drops) a
        /// database of its own through the URL's database, or a SQLite file
        /// [default: a new SQLite file in a temporary folder]
        #[arg(long, global = true, value_name = "URL")]
        database_url: Option<String>,
        /// Run on a SQLite file that already holds jobu's tables (they are emptied)
        #[arg(long, global = true)]
        force: bool,
        /// Print one JSON object on stdout instead of lines
        #[arg(long, global = true)]
        json: bool,
        /// Run R times, each on a fresh database, and report medians with min and max
        #[arg(long, global = true, default_value_t = 1, value_name = "R")]
        repeat: usize,
    },
    /// Delete old finished executions now, by the ages of retention.yaml (0 keeps forever)
    Prune {
        /// Print per status how many executions would be deleted; delete nothing
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Bulk-insert N no-op executions, then run them all with K worker pools
    Drain {
        #[arg(long, default_value_t = 20_000, value_name = "N")]
        jobs: u64,
        /// Worker pools, each with its own connection pool
        #[arg(long, default_value_t = 1, value_name = "K")]
        workers: u32,
        /// Attempts at once per pool [default: worker.concurrency]
        #[arg(long, value_name = "C")]
        concurrency: Option<u32>,
        /// Executions per claim [default: worker.claim_batch_size]
        #[arg(long, value_name = "B")]
        batch: Option<u32>,
    },
    /// Create N executions one at a time while workers are idle: creation-to-start latency
    Trigger {
        #[arg(long, default_value_t = 100, value_name = "N")]
        jobs: u64,
    },
    /// M crons firing every S seconds for T seconds: every fire time once, schedule lag,
    /// dispatcher CPU share
    Cron {
        #[arg(long, default_value_t = 100, value_name = "M")]
        crons: u64,
        #[arg(long, default_value_t = 1, value_name = "S")]
        every: u64,
        #[arg(long = "for", default_value_t = 30, value_name = "T")]
        for_seconds: u64,
        /// Attempts at once in the worker pool [default: worker.concurrency]
        #[arg(long, value_name = "C")]
        concurrency: Option<u32>,
    },
    /// N sleeping attempts at once in one pool: peak RSS
    Sleep {
        #[arg(long, default_value_t = 1000, value_name = "N")]
        jobs: u64,
        #[arg(long, default_value_t = 5.0, value_name = "S")]
        seconds: f64,
        /// Executions per claim [default: worker.claim_batch_size]
        #[arg(long, value_name = "B")]
        batch: Option<u32>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the settings (files and JOBU__ variables) and print them as JSON, with
    /// passwords and tokens masked; exit 2 naming the key when they are invalid
    Show,
}

#[derive(Subcommand)]
enum CronCommand {
    /// Print the next times a cron runs, one RFC 3339 UTC instant per line
    ///
    /// Each line is a fire time strictly after --from that runs: fire times whose date (in --tz)
    /// is an --exclude date are left out, and with --jitter each line is the start time instead
    /// (the fire time plus its jitter delay, with milliseconds). --count counts printed lines.
    /// With --json the output is one JSON array of the next --count fire times, excluded ones
    /// included: [{"fire_time": ..., "run_at": ..., "excluded": true|false}, ...].
    Next {
        /// Five-field Unix cron expression, six fields with seconds first, a macro such as
        /// @daily, or a JSON array of expressions such as '["30 14 * * MON", "30 8 * * TUE"]'
        expression: String,
        /// IANA time zone the expression is read in
        #[arg(long, default_value = "UTC", value_name = "ZONE")]
        tz: String,
        /// Start instant (RFC 3339); printed instants are strictly after it [default: now]
        #[arg(long, value_name = "RFC3339")]
        from: Option<String>,
        /// How many instants to print
        #[arg(long, default_value_t = 1, value_name = "N")]
        count: usize,
        /// A date (YYYY-MM-DD, in --tz) on which the cron does not run; repeatable
        #[arg(long, value_name = "DATE")]
        exclude: Vec<String>,
        /// Delay each start by up to SECONDS (0-86400), a stable function of --job-id and the
        /// fire time, and always before the next fire time
        #[arg(long, value_name = "SECONDS")]
        jitter: Option<u32>,
        /// Cron id the jitter delay is derived from
        #[arg(long, default_value_t = 0, value_name = "ID")]
        job_id: i64,
        /// Print a JSON array of {"fire_time", "run_at", "excluded"} instead
        #[arg(long)]
        json: bool,
    },
    /// Create executions for a cron's past fire times in [--from, --to) that have none
    ///
    /// Talks to the configured database directly. Fire times that have a row are left alone
    /// unless --rerun names their decision; excluded dates are not run; a repeated backfill
    /// creates nothing new. By default they run one at a time in fire-time order
    /// (--overlap buffer_all); --overlap allow runs them concurrently. A range that would
    /// run more than --max-runs fire times is refused, saying how many. Prints one line per
    /// fire time (or, with --json, the answer of POST /api/crons/{id}/backfill).
    Backfill(BackfillArgs),
}

#[derive(clap::Args)]
struct BackfillArgs {
    /// The cron's id
    id: i64,
    /// Fire times at or after this instant (RFC 3339)
    #[arg(long, value_name = "RFC3339")]
    from: String,
    /// Fire times before this instant (RFC 3339); moved back to now when later
    #[arg(long, value_name = "RFC3339")]
    to: String,
    /// Print what it would do; write nothing
    #[arg(long)]
    dry_run: bool,
    /// buffer_all (one at a time, in fire-time order) or allow (concurrently)
    #[arg(long, value_name = "OVERLAP", default_value = "buffer_all",
          value_parser = ["buffer_all", "allow"])]
    overlap: String,
    /// Same as --overlap allow
    #[arg(long, conflicts_with = "overlap")]
    allow_overlap: bool,
    /// Decisions to run again: missed, skipped, failed (comma-separated)
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    rerun: Vec<String>,
    /// The most fire times it may create or re-run (1-10000)
    #[arg(long, value_name = "N", default_value_t = jobu::store::backfill::DEFAULT_MAX_RUNS)]
    max_runs: u32,
    /// Why (kept on the backfill and its executions)
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Print the answer as JSON
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    allocator::configure();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => daemon(cli.config, Roles::ALL),
        Command::Dispatcher => daemon(cli.config, Roles::DISPATCHER),
        Command::Worker => daemon(cli.config, Roles::WORKER),
        Command::Admin => daemon(cli.config, Roles::ADMIN),
        Command::Health { role, timeout } => health(cli.config, &role, timeout),
        Command::Config {
            command: ConfigCommand::Show,
        } => config_show(cli.config),
        Command::Cron {
            command: CronCommand::Backfill(args),
        } => cron_backfill(cli.config, args),
        Command::Cron { command } => cron_next(command),
        Command::Bench {
            scenario,
            database_url,
            force,
            json,
            repeat,
        } => bench(
            cli.config,
            scenario,
            jobu::bench::Options {
                database_url,
                force,
                repeat,
            },
            json,
        ),
        Command::Migrate { wait } => {
            let (settings, _log) = match load_settings(cli.config) {
                Ok(s) => s,
                Err(code) => return code,
            };
            runtime().block_on(migrate(&settings, std::time::Duration::from_secs(wait)))
        }
        Command::Prune { dry_run } => prune(cli.config, dry_run),
    }
}

fn daemon(config: Option<PathBuf>, roles: Roles) -> ExitCode {
    jobu::systemd::take_env(); // first: no thread may exist yet (see the module)
    let (mut settings, _log) = match load_settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if roles == Roles::ADMIN {
        // `admin.enabled` is for `jobu run`; the admin role always serves.
        settings.admin.enabled = true;
    }
    runtime().block_on(async move {
        tokio::spawn(allocator::collect_freed_memory());
        let running = match Runtime::new(settings).roles(roles).start().await {
            Ok(running) => running,
            Err(e @ RuntimeError::Invalid(_)) => {
                tracing::error!(error = %e, "cannot start");
                eprintln!("jobu: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                eprintln!("jobu: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        match running.run_until_signal().await {
            Exit::Clean => ExitCode::SUCCESS,
            Exit::Escalated { child, reason } => {
                eprintln!("jobu: {child} {reason}");
                ExitCode::from(EXIT_FAILURE)
            }
        }
    })
}

/// Settings and the log writer's guard, to keep until the command ends.
fn load_settings(dir: Option<PathBuf>) -> Result<(Settings, LogGuard), ExitCode> {
    let settings = read_settings(dir)?;
    let guard = jobu::telemetry::init(&settings.logging);
    Ok((settings, guard))
}

fn read_settings(dir: Option<PathBuf>) -> Result<Settings, ExitCode> {
    Settings::load(&ConfigSource { dir, env: None }).map_err(|e| {
        eprintln!("jobu: {e}");
        ExitCode::from(EXIT_USAGE)
    })
}

fn bench(
    config: Option<PathBuf>,
    command: BenchCommand,
    options: jobu::bench::Options,
    json: bool,
) -> ExitCode {
    use jobu::bench::{BenchError, Scenario};
    let settings = match read_settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let _log = jobu::bench::init_logging(&settings.logging);
    let scenario = match command {
        BenchCommand::Drain {
            jobs,
            workers,
            concurrency,
            batch,
        } => Scenario::Drain {
            jobs,
            workers,
            concurrency,
            batch,
        },
        BenchCommand::Trigger { jobs } => Scenario::Trigger { jobs },
        BenchCommand::Cron {
            crons,
            every,
            for_seconds,
            concurrency,
        } => Scenario::Cron {
            crons,
            every,
            for_seconds,
            concurrency,
        },
        BenchCommand::Sleep {
            jobs,
            seconds,
            batch,
        } => Scenario::Sleep {
            jobs,
            seconds,
            batch,
        },
    };
    runtime().block_on(async move {
        match jobu::bench::run(&settings, &scenario, &options).await {
            Ok(report) => {
                if json {
                    println!("{}", report.to_json());
                } else {
                    print!("{}", report.to_text());
                }
                if report.ok {
                    ExitCode::SUCCESS
                } else {
                    eprintln!("jobu bench: a correctness check failed (`ok` is false)");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
            Err(BenchError::Usage(m)) => {
                eprintln!("jobu bench: {m}");
                ExitCode::from(EXIT_USAGE)
            }
            Err(BenchError::Failed(m)) => {
                eprintln!("jobu bench: {m}");
                ExitCode::from(EXIT_FAILURE)
            }
        }
    })
}

fn health(config: Option<PathBuf>, role: &str, timeout: f64) -> ExitCode {
    use jobu::health::Probe;
    let settings = match read_settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let (Some(probe), true) = (Probe::parse(role), timeout.is_finite() && timeout > 0.0) else {
        eprintln!("jobu: --timeout must be a positive number of seconds");
        return ExitCode::from(EXIT_USAGE);
    };
    // No log subscriber: the probe runs every few seconds and speaks only through its line.
    let timeout = std::time::Duration::from_secs_f64(timeout);
    match runtime().block_on(jobu::health::check(&settings, probe, timeout)) {
        Ok(what) => {
            println!("healthy: {what}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            println!("unhealthy: {why}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn config_show(config: Option<PathBuf>) -> ExitCode {
    let settings = match read_settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match serde_json::to_string_pretty(&settings.redacted()) {
        Ok(json) => {
            // A closed pipe (`| head`) is not an error worth a panic.
            use std::io::Write;
            let _ = writeln!(std::io::stdout(), "{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("jobu: cannot print the settings: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jobu: cannot start the async runtime: {e}");
            std::process::exit(EXIT_FAILURE.into());
        }
    }
}

async fn migrate(settings: &Settings, wait: std::time::Duration) -> ExitCode {
    let db = settings.default_database();
    let url = redact_url(&db.url);
    let deadline = std::time::Instant::now() + wait;
    let store = loop {
        match Store::connect(db).await {
            Ok(store) => break store,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::warn!(database = %url, error = %e, "database not reachable yet; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => {
                eprintln!("jobu: cannot connect to {url}: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        }
    };
    let result = store.migrate().await;
    let _ = store.close().await;
    match result {
        Ok(0) => {
            println!("{url}: schema is up to date");
            ExitCode::SUCCESS
        }
        Ok(n) => {
            println!("{url}: applied {n} migration(s)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("jobu: migrating {url} failed: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn cron_next(command: CronCommand) -> ExitCode {
    use jobu::schedule::{check_jitter, parse_excluded_dates, Timetable};
    use std::sync::Arc;

    let usage = |msg: String| {
        eprintln!("jobu: {msg}");
        ExitCode::from(EXIT_USAGE)
    };
    let CronCommand::Next {
        expression,
        tz,
        from,
        count,
        exclude,
        jitter,
        job_id,
        json,
    } = command
    else {
        return usage("expected `jobu cron next`".to_string());
    };
    if count == 0 || count > MAX_NEXT_COUNT {
        return usage(format!("--count must be between 1 and {MAX_NEXT_COUNT}"));
    }
    let schedule = match Schedule::parse(&expression, &tz) {
        Ok(s) => s,
        Err(e) => return usage(e.to_string()),
    };
    let excluded = match parse_excluded_dates(&exclude) {
        Ok(dates) => dates,
        Err(e) => return usage(format!("--exclude: {e}")),
    };
    if let Err(e) = check_jitter(jitter.unwrap_or(0)) {
        return usage(format!("--jitter: {e}"));
    }
    let start = match from {
        None => Utc::now(),
        Some(text) => match DateTime::parse_from_rfc3339(&text) {
            Ok(t) => t.with_timezone(&Utc),
            Err(e) => {
                return usage(format!(
                    "--from {text:?} is not an RFC 3339 instant such as 2026-01-31T09:00:00Z ({e})"
                ))
            }
        },
    };
    let timetable = Timetable::new(Arc::new(schedule), &excluded, jitter.unwrap_or(0));
    if json {
        let planned = timetable.preview(job_id, start, count);
        match serde_json::to_string(&planned) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("jobu: cannot encode the fire times: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        }
        return ExitCode::SUCCESS;
    }
    let mut out = String::new();
    let runs = timetable
        .schedule()
        .iter_after(start)
        .filter(|fire| !timetable.is_excluded(*fire))
        .take(count);
    for fire in runs {
        let line = match jitter {
            None => fire.to_rfc3339_opts(SecondsFormat::Secs, true),
            Some(_) => timetable
                .run_at(job_id, fire)
                .to_rfc3339_opts(SecondsFormat::Millis, true),
        };
        out.push_str(&line);
        out.push('\n');
    }
    print!("{out}");
    ExitCode::SUCCESS
}

/// The configured database for a one-shot command, or the exit code after saying why not.
async fn connect_or_say(db: &jobu::config::DatabaseSettings, url: &str) -> Result<Store, ExitCode> {
    Store::connect(db).await.map_err(|e| {
        eprintln!("jobu: cannot connect to {url}: {e}");
        ExitCode::from(EXIT_FAILURE)
    })
}

/// `jobu prune`: one retention sweep now, whatever `retention.enabled` says.
fn prune(config: Option<PathBuf>, dry_run: bool) -> ExitCode {
    use jobu::actors::retention::{self, RetentionConfig};
    let (settings, _log) = match load_settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let config = RetentionConfig::from_settings(&settings.retention);
    let ages = settings.retention.ages();
    let db = settings.default_database();
    let url = redact_url(&db.url);
    runtime().block_on(async {
        let store = match connect_or_say(db, &url).await {
            Ok(store) => store,
            Err(code) => return code,
        };
        let result = if dry_run {
            retention::dry_run(&store, &config).await
        } else {
            retention::sweep(&store, &config).await
        };
        let _ = store.close().await;
        let counts = match result {
            Ok(counts) => counts,
            Err(e) => {
                eprintln!("jobu: pruning {url} failed: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        let verb = if dry_run { "would delete" } else { "deleted" };
        for (status, days) in ages {
            match counts.get(&status) {
                Some(n) => println!("{status}: {verb} {n} (finished more than {days} days ago)"),
                None => println!("{status}: kept forever"),
            }
        }
        ExitCode::SUCCESS
    })
}

/// An RFC 3339 instant of an option, or the message that says what is wrong.
fn instant_arg(option: &str, text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!(
                "{option} {text:?} is not an RFC 3339 instant such as 2026-01-31T09:00:00Z ({e})"
            )
        })
}

/// `jobu cron backfill`: [`Store::backfill`] on the configured database.
fn cron_backfill(config: Option<PathBuf>, args: BackfillArgs) -> ExitCode {
    use jobu::store::backfill::{BackfillOverlap, BackfillRequest, Rerun};
    use jobu::store::StoreError;
    let usage = |msg: String| {
        eprintln!("jobu: {msg}");
        ExitCode::from(EXIT_USAGE)
    };
    let (from, to) = match (
        instant_arg("--from", &args.from),
        instant_arg("--to", &args.to),
    ) {
        (Ok(from), Ok(to)) => (from, to),
        (Err(e), _) | (_, Err(e)) => return usage(e),
    };
    let overlap = if args.allow_overlap {
        BackfillOverlap::Allow
    } else {
        match args.overlap.parse::<BackfillOverlap>() {
            Ok(o) => o,
            Err(e) => return usage(format!("--overlap: {e}")),
        }
    };
    let mut rerun = std::collections::BTreeSet::new();
    for item in args.rerun.iter().filter(|r| !r.trim().is_empty()) {
        match item.parse::<Rerun>() {
            Ok(r) => {
                rerun.insert(r);
            }
            Err(e) => return usage(format!("--rerun: {e}")),
        }
    }
    let reason = args
        .reason
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty());
    if reason.as_ref().is_some_and(|r| r.chars().count() > 1000) {
        return usage("--reason: at most 1000 characters".to_string());
    }
    let (settings, _log) = match load_settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let db = settings.default_database();
    let url = redact_url(&db.url);
    let request = BackfillRequest {
        from,
        to,
        max_runs: args.max_runs,
        dry_run: args.dry_run,
        overlap,
        rerun,
        requested_by: Some(jobu::http::api::OPERATOR.to_string()),
        reason,
    };
    runtime().block_on(async {
        let store = match connect_or_say(db, &url).await {
            Ok(store) => store,
            Err(code) => return code,
        };
        let cron = match store.cron(args.id).await {
            Ok(Some(cron)) => cron,
            Ok(None) => {
                let _ = store.close().await;
                return usage(format!("cron {} does not exist", args.id));
            }
            Err(e) => {
                let _ = store.close().await;
                eprintln!("jobu: cannot read cron {}: {e}", args.id);
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        let result = store.backfill(&cron, &request).await;
        let _ = store.close().await;
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(StoreError::Rejected { field, message, .. }) => {
                let option = match field {
                    "max_runs" => "--max-runs",
                    "from" => "--from",
                    "to" => "--to",
                    other => other,
                };
                return usage(format!("{option}: {message}"));
            }
            Err(e) => {
                eprintln!("jobu: backfill of cron {} failed: {e}", cron.id);
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        let user = std::env::var("USER").unwrap_or_default();
        tracing::info!(os_user = %user, "backfill from the command line");
        jobu::http::api::backfill::log_outcome(&outcome, jobu::http::api::OPERATOR);
        if args.json {
            let answer = jobu::http::api::backfill::BackfillResult::from(outcome);
            match poem_openapi::types::ToJSON::to_json(&answer) {
                Some(v) => println!("{v}"),
                None => {
                    eprintln!("jobu: cannot encode the answer");
                    return ExitCode::from(EXIT_FAILURE);
                }
            }
            return ExitCode::SUCCESS;
        }
        print!("{}", backfill_table(&cron.name, &outcome));
        ExitCode::SUCCESS
    })
}

/// The readable answer of `jobu cron backfill`.
fn backfill_table(name: &str, o: &jobu::store::backfill::BackfillOutcome) -> String {
    use std::fmt::Write;
    let at = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    let mut out = String::new();
    let head = match o.backfill_id {
        Some(id) => format!("backfill {id} of cron {} ({name})", o.cron_id),
        None => format!(
            "dry run, nothing written: backfill of cron {} ({name})",
            o.cron_id
        ),
    };
    let _ = writeln!(
        out,
        "{head}: [{}, {}), overlap {}",
        at(o.from),
        at(o.to),
        o.overlap.as_str()
    );
    if let Some(note) = &o.note {
        let _ = writeln!(out, "note: {note}");
    }
    let verb = if o.dry_run { "would create" } else { "created" };
    let _ = writeln!(
        out,
        "{verb} {}, rerun {}, left alone {}, excluded {}",
        o.created, o.rerun_count, o.left_alone, o.excluded
    );
    let _ = writeln!(
        out,
        "{:<26} {:<9} {:>10}  STATUS",
        "FIRE TIME", "ACTION", "EXECUTION"
    );
    for i in &o.items {
        let id = i
            .execution_id
            .map(|id| id.to_string())
            .unwrap_or_else(|| "-".into());
        let status = i.status.map(|s| s.as_str()).unwrap_or("-");
        let _ = writeln!(
            out,
            "{:<26} {:<9} {:>10}  {status}",
            at(i.fire_time),
            i.action.as_str(),
            id
        );
    }
    out
}
