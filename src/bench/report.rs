//! What a bench run measured, how it is printed (lines for people, one JSON object for
//! machines), the median over repeated runs, and the process measurements: CPU time from
//! `getrusage`, peak RSS from `/proc/self/status`, CPU time of chosen threads from
//! `/proc/self/task/<tid>`.

use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

/// Start or schedule latencies in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Lag {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Lag {
    /// Nearest-rank percentiles of `samples` (milliseconds); `None` when there are none.
    pub fn of(samples: &[f64]) -> Option<Lag> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            sorted[i - 1]
        };
        Some(Lag {
            p50: round3(rank(0.50)),
            p99: round3(rank(0.99)),
            max: round3(sorted[sorted.len() - 1]),
        })
    }
}

/// One run of a scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Executions the scenario moved (created and ran).
    pub jobs: u64,
    /// The measured window.
    pub seconds: f64,
    pub jobs_per_s: f64,
    pub lag_ms: Option<Lag>,
    /// Statements jobu's stores sent in the window (the bench's own checks not included).
    pub statements: u64,
    pub statements_per_job: f64,
    /// VmHWM: the most resident memory of the process (reset at the window's start where
    /// the kernel allows it).
    pub peak_rss_bytes: u64,
    /// User + system CPU time of the whole process in the window.
    pub cpu_seconds: f64,
    /// Whether the run's correctness checks held (every execution SUCCESS, every fire time
    /// once, ...).
    pub ok: bool,
    /// What the scenario measured beyond the common fields.
    pub details: Value,
}

/// Everything a scenario run reports, before it is aggregated.
pub struct Measured {
    pub jobs: u64,
    pub window: Duration,
    pub lag_ms: Option<Lag>,
    pub statements: u64,
    pub peak_rss_bytes: u64,
    pub cpu_seconds: f64,
    pub ok: bool,
    pub details: Value,
}

impl From<Measured> for Run {
    fn from(m: Measured) -> Run {
        let seconds = m.window.as_secs_f64();
        Run {
            jobs: m.jobs,
            seconds: round3(seconds),
            jobs_per_s: round1(if seconds > 0.0 {
                m.jobs as f64 / seconds
            } else {
                0.0
            }),
            lag_ms: m.lag_ms,
            statements: m.statements,
            statements_per_job: round3(if m.jobs > 0 {
                m.statements as f64 / m.jobs as f64
            } else {
                0.0
            }),
            peak_rss_bytes: m.peak_rss_bytes,
            cpu_seconds: round3(m.cpu_seconds),
            ok: m.ok,
            details: m.details,
        }
    }
}

/// The report of `jobu bench`: one run, or the median of several (each on a fresh
/// database) with the spread.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub backend: String,
    pub server_version: String,
    pub jobs: u64,
    pub runs: usize,
    /// Medians over the runs, as are the other figures without `_min`/`_max`.
    pub seconds: f64,
    pub jobs_per_s: f64,
    pub jobs_per_s_min: f64,
    pub jobs_per_s_max: f64,
    pub lag_ms: Option<Lag>,
    pub lag_ms_min: Option<Lag>,
    pub lag_ms_max: Option<Lag>,
    pub statements: u64,
    pub statements_per_job: f64,
    pub peak_rss_bytes: u64,
    pub cpu_seconds: f64,
    /// Every run's checks held.
    pub ok: bool,
    pub settings: Value,
    /// How the figures were taken, where that is not obvious.
    pub notes: Vec<String>,
    pub each_run: Vec<Run>,
}

impl Report {
    pub fn new(
        scenario: &str,
        backend: &str,
        server_version: &str,
        settings: Value,
        notes: Vec<String>,
        runs: Vec<Run>,
    ) -> Report {
        let pick = |f: fn(&Run) -> f64| -> Vec<f64> { runs.iter().map(f).collect() };
        let rates = pick(|r| r.jobs_per_s);
        let lags: Vec<Lag> = runs.iter().filter_map(|r| r.lag_ms).collect();
        let lag_by = |f: fn(&[f64]) -> f64| -> Option<Lag> {
            if lags.is_empty() {
                return None;
            }
            let of = |g: fn(&Lag) -> f64| f(&lags.iter().map(g).collect::<Vec<_>>());
            Some(Lag {
                p50: of(|l| l.p50),
                p99: of(|l| l.p99),
                max: of(|l| l.max),
            })
        };
        Report {
            scenario: scenario.to_string(),
            backend: backend.to_string(),
            server_version: server_version.to_string(),
            jobs: median_u64(runs.iter().map(|r| r.jobs).collect()),
            runs: runs.len(),
            seconds: round3(median(&pick(|r| r.seconds))),
            jobs_per_s: round1(median(&rates)),
            jobs_per_s_min: min(&rates),
            jobs_per_s_max: max(&rates),
            lag_ms: lag_by(|v| round3(median(v))),
            lag_ms_min: lag_by(min),
            lag_ms_max: lag_by(max),
            statements: median_u64(runs.iter().map(|r| r.statements).collect()),
            statements_per_job: round3(median(&pick(|r| r.statements_per_job))),
            peak_rss_bytes: median_u64(runs.iter().map(|r| r.peak_rss_bytes).collect()),
            cpu_seconds: round3(median(&pick(|r| r.cpu_seconds))),
            ok: runs.iter().all(|r| r.ok),
            settings,
            notes,
            each_run: runs,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| json!({"error": e.to_string()}).to_string())
    }

    /// The report for people, one figure a line.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut line = |label: &str, value: String| {
            out.push_str(&format!("  {label:<20} {value}\n"));
        };
        let spread = |median: f64, min: f64, max: f64| {
            if self.runs > 1 {
                format!("{median:.1} (min {min:.1}, max {max:.1})")
            } else {
                format!("{median:.1}")
            }
        };
        line(
            "jobs/s",
            spread(self.jobs_per_s, self.jobs_per_s_min, self.jobs_per_s_max),
        );
        line("seconds", format!("{:.3}", self.seconds));
        let lag = match (&self.lag_ms, &self.lag_ms_min, &self.lag_ms_max) {
            (Some(l), Some(lo), Some(hi)) if self.runs > 1 => format!(
                "p50 {:.1}  p99 {:.1}  max {:.1}  (p99 min {:.1}, max {:.1})",
                l.p50, l.p99, l.max, lo.p99, hi.p99
            ),
            (Some(l), _, _) => format!("p50 {:.1}  p99 {:.1}  max {:.1}", l.p50, l.p99, l.max),
            _ => "-".into(),
        };
        line("lag ms", lag);
        line(
            "statements",
            format!(
                "{} ({:.3} per job)",
                self.statements, self.statements_per_job
            ),
        );
        line(
            "peak RSS",
            format!("{:.1} MiB", self.peak_rss_bytes as f64 / 1048576.0),
        );
        line("CPU seconds", format!("{:.3}", self.cpu_seconds));
        if let Some(details) = self.each_run.last().and_then(|r| r.details.as_object()) {
            for (key, value) in details {
                line(key, compact(value));
            }
        }
        line("settings", compact(&self.settings));
        line(
            "checks",
            if self.ok { "passed" } else { "FAILED" }.to_string(),
        );
        let mut text = format!(
            "jobu bench {}: {} {}, {} jobs, {} run{}\n",
            self.scenario,
            self.backend,
            self.server_version,
            self.jobs,
            self.runs,
            if self.runs == 1 { "" } else { "s (medians)" }
        );
        text.push_str(&out);
        for note in &self.notes {
            text.push_str(&format!("  note: {note}\n"));
        }
        text
    }
}

/// A JSON value on one line, objects as `key=value` pairs.
fn compact(value: &Value) -> String {
    match value {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={}", compact(v)))
            .collect::<Vec<_>>()
            .join(" "),
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn median_u64(mut values: Vec<u64>) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    values[(values.len() - 1) / 2]
}

fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// User + system CPU time of this process so far.
pub fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// A `kB` field of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// The process's peak resident set (VmHWM).
pub fn peak_rss_bytes() -> u64 {
    status_bytes("VmHWM:")
}

/// The process's resident set now (VmRSS).
pub fn rss_bytes() -> u64 {
    status_bytes("VmRSS:")
}

/// Resets the peak resident set to the current one (`/proc/self/clear_refs`, value 5);
/// `false` where the kernel does not allow it, and the peak then covers the whole process.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The id of the calling thread.
pub fn thread_id() -> i64 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

/// CPU time of this process's thread `tid` so far (0 once it has exited): nanoseconds on the
/// CPU from `schedstat`, else the clock ticks of `stat`.
pub fn thread_cpu_seconds(tid: i64) -> f64 {
    let base = format!("/proc/self/task/{tid}");
    if let Ok(text) = std::fs::read_to_string(format!("{base}/schedstat")) {
        if let Some(ns) = text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        {
            return ns as f64 / 1e9;
        }
    }
    let Ok(stat) = std::fs::read_to_string(format!("{base}/stat")) else {
        return 0.0;
    };
    // The command name may hold spaces; fields after its closing parenthesis are fixed.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name and state.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) as f64 / hz
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(Lag::of(&[]), None);
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let lag = Lag::of(&samples).unwrap();
        assert_eq!((lag.p50, lag.p99, lag.max), (50.0, 99.0, 100.0));
        let one = Lag::of(&[7.0]).unwrap();
        assert_eq!((one.p50, one.p99, one.max), (7.0, 7.0, 7.0));
    }

    #[test]
    fn medians_and_spread_over_runs() {
        let run = |rate: f64, p99: f64| Run {
            jobs: 10,
            seconds: 10.0 / rate,
            jobs_per_s: rate,
            lag_ms: Some(Lag {
                p50: 1.0,
                p99,
                max: p99 + 1.0,
            }),
            statements: 20,
            statements_per_job: 2.0,
            peak_rss_bytes: 1,
            cpu_seconds: 0.5,
            ok: true,
            details: json!({}),
        };
        let report = Report::new(
            "drain",
            "sqlite",
            "3",
            json!({}),
            vec![],
            vec![run(100.0, 5.0), run(300.0, 9.0), run(200.0, 7.0)],
        );
        assert_eq!(report.jobs_per_s, 200.0);
        assert_eq!(
            (report.jobs_per_s_min, report.jobs_per_s_max),
            (100.0, 300.0)
        );
        assert_eq!(report.lag_ms.map(|l| l.p99), Some(7.0));
        assert_eq!(report.lag_ms_min.map(|l| l.p99), Some(5.0));
        assert_eq!(report.lag_ms_max.map(|l| l.max), Some(10.0));
        let json: Value = serde_json::from_str(&report.to_json()).unwrap();
        for key in [
            "scenario",
            "backend",
            "jobs",
            "seconds",
            "jobs_per_s",
            "lag_ms",
            "statements",
            "statements_per_job",
            "peak_rss_bytes",
            "cpu_seconds",
            "settings",
        ] {
            assert!(json.get(key).is_some(), "{key} missing in {json}");
        }
        assert!(report.to_text().contains("jobs/s"));
    }

    #[test]
    fn process_figures_are_read() {
        assert!(process_cpu_seconds() >= 0.0);
        assert!(peak_rss_bytes() > 0);
        assert!(rss_bytes() > 0);
        assert!(thread_cpu_seconds(thread_id()) >= 0.0);
    }
}
