//! One page of a pass: the plan of each cron of the page (from its schedule, marker and
//! misfire policy) and, once the page committed, its logs.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::plan::{first_candidate, plan_fire_times, Missed};
use super::DispatcherConfig;
use crate::entities::cron_job::{MisfirePolicy, OverlapPolicy};
use crate::entities::job_execution::{ParamSource, Status};
use crate::schedule::{Schedule, Timetable};
use crate::store::create::{Created, NewExecution};
use crate::store::crons::{stored_dates, CronStep, DueCron, DuePage, MarkerMove};
use crate::store::fire_times::LedgerRow;

/// Planning stops taking crons into a page after this long (the page's crons stay locked
/// meanwhile); the rest of the page is left to the next one. Only catch-up after long
/// outages of many crons comes near it.
const PLAN_BUDGET: std::time::Duration = std::time::Duration::from_millis(200);
/// Parsed schedules kept; past this the cache starts over.
const SCHEDULES_KEPT: usize = 10_000;
/// Refused crons remembered so each is logged once per change; past this the log repeats.
const REFUSED_KEPT: usize = 10_000;

/// A parsed schedule, or why it is refused.
type Parsed = Result<Arc<Schedule>, String>;

/// Plans pages; remembers parsed schedules by expression and zone, not by cron.
pub(super) struct Planner {
    min_interval: i64,
    grace: chrono::Duration,
    max_catchup: usize,
    /// zone -> expression -> schedule.
    schedules: HashMap<String, HashMap<String, Parsed>>,
    cached: usize,
    /// Crons refused, with the `updated_at` they were refused at.
    refused: HashMap<i64, DateTime<Utc>>,
}

/// What the logs of a committed step need from its plan.
pub(super) struct Note {
    name: String,
    handler: String,
    policy: OverlapPolicy,
    /// Newly scheduled (it had no marker): the expression and zone, for the log.
    scheduled: Option<(String, String)>,
    missed: Option<(Missed, MisfirePolicy)>,
    /// The schedule has no fire time after the ones created.
    ended: bool,
}

impl Planner {
    pub fn new(config: &DispatcherConfig) -> Planner {
        Planner {
            min_interval: config.min_cron_interval_seconds,
            grace: config.misfire_grace,
            max_catchup: config.max_catchup,
            schedules: HashMap::new(),
            cached: 0,
            refused: HashMap::new(),
        }
    }

    /// One step per cron of a page, in order, for as many as [`PLAN_BUDGET`] allows (at
    /// least one). Crons that allow overlap are planned up to `now + lookahead`, the others
    /// up to `now`.
    pub fn plan(
        &mut self,
        crons: &[DueCron],
        now: DateTime<Utc>,
        lookahead: chrono::Duration,
    ) -> Vec<(CronStep, Note)> {
        let started = Instant::now();
        let mut steps = Vec::with_capacity(crons.len());
        for cron in crons {
            if !steps.is_empty() && started.elapsed() >= PLAN_BUDGET {
                break;
            }
            steps.push(self.plan_one(cron, now, lookahead));
        }
        steps
    }

    fn plan_one(
        &mut self,
        cron: &DueCron,
        now: DateTime<Utc>,
        lookahead: chrono::Duration,
    ) -> (CronStep, Note) {
        let mut note = Note {
            name: cron.name.clone(),
            handler: cron.handler_name.clone(),
            policy: OverlapPolicy::Allow,
            scheduled: None,
            missed: None,
            ended: false,
        };
        let policy: OverlapPolicy = cron.overlap_policy.parse().unwrap_or_else(|e: String| {
            tracing::warn!(job_id = cron.id, error = %e, "using overlap policy `skip`");
            OverlapPolicy::Skip
        });
        note.policy = policy;
        let mut step = CronStep {
            cron_id: cron.id,
            create: Vec::new(),
            policy,
            ledger: Vec::new(),
            // Not plannable here: no marker, so it does not look due; every poll reads it
            // again, and an edit that fixes it is planned then.
            marker: MarkerMove::Clear,
        };
        let schedule = match self.schedule(cron, now) {
            Ok(schedule) => schedule,
            Err(reason) => {
                self.refuse(cron, &reason);
                return (step, note);
            }
        };
        self.refused.remove(&cron.id);
        let horizon = if policy.is_exclusive() {
            now
        } else {
            now + lookahead
        };
        let Some(first) = first_candidate(
            cron.next_fire_time,
            cron.updated_at,
            &schedule,
            now,
            self.grace,
        ) else {
            self.refuse(cron, "the schedule has no further fire times");
            return (step, note);
        };
        if cron.next_fire_time.is_none() {
            note.scheduled = Some((cron.cron_expression.clone(), cron.timezone.clone()));
        }
        if first > horizon {
            // New, edited or enabled again, and not due yet: the marker says when it is.
            step.marker = MarkerMove::To(first);
            return (step, note);
        }
        let misfire = cron.misfire_policy.parse().unwrap_or_else(|e: String| {
            tracing::warn!(job_id = cron.id, error = %e, "using misfire policy `latest`");
            MisfirePolicy::Latest
        });
        let plan = plan_fire_times(
            &schedule,
            first,
            now,
            horizon,
            self.grace,
            misfire,
            self.max_catchup,
        );
        let timetable = Timetable::new(
            schedule.clone(),
            &stored_dates(cron.excluded_dates.as_ref()),
            cron.jitter_seconds.max(0) as u32,
        );
        let row = |fire: DateTime<Utc>, run_at: DateTime<Utc>| NewExecution {
            job_id: Some(cron.id),
            handler_name: cron.handler_name.clone(),
            scheduled_time: fire,
            run_at,
            params: cron.handler_params.clone(),
            param_source: ParamSource::Cron,
            max_retry: cron.max_retry,
            timeout_seconds: cron.timeout_seconds,
        };
        if let Some(missed) = &plan.missed {
            if missed.dropped() > 0 {
                step.ledger
                    .push(missed_row(row(missed.first, missed.first), missed, misfire));
            }
        }
        for fire in &plan.create {
            if timetable.is_excluded(*fire) {
                let local = fire.with_timezone(&schedule.timezone()).date_naive();
                step.ledger.push(LedgerRow {
                    first: row(*fire, *fire),
                    status: Status::Excluded,
                    until: None,
                    count: 1,
                    message: format!("excluded: {local} is an excluded date of the cron"),
                });
            } else {
                step.create
                    .push(row(*fire, timetable.run_at(cron.id, *fire)));
            }
        }
        note.missed = plan.missed.map(|m| (m, misfire));
        match plan.next_marker {
            Some(next) => step.marker = MarkerMove::To(next),
            None => note.ended = true,
        }
        (step, note)
    }

    /// The cron's schedule, parsed once per expression and zone.
    fn schedule(&mut self, cron: &DueCron, now: DateTime<Utc>) -> Parsed {
        if let Some(parsed) = self
            .schedules
            .get(&cron.timezone)
            .and_then(|by_expr| by_expr.get(&cron.cron_expression))
        {
            return parsed.clone();
        }
        if self.cached >= SCHEDULES_KEPT {
            self.schedules.clear();
            self.cached = 0;
        }
        let parsed = Schedule::parse(&cron.cron_expression, &cron.timezone)
            .and_then(|s| s.check_min_interval(self.min_interval, now).map(|()| s))
            .map(Arc::new)
            .map_err(|e| e.to_string());
        self.cached += 1;
        self.schedules
            .entry(cron.timezone.clone())
            .or_default()
            .insert(cron.cron_expression.clone(), parsed.clone());
        parsed
    }

    /// Logs a refused cron, once per change of it.
    fn refuse(&mut self, cron: &DueCron, reason: &str) {
        if self.refused.get(&cron.id) == Some(&cron.updated_at) {
            return;
        }
        if self.refused.len() >= REFUSED_KEPT {
            self.refused.clear();
        }
        self.refused.insert(cron.id, cron.updated_at);
        tracing::warn!(
            job_id = cron.id,
            cron = %cron.name,
            expression = %cron.cron_expression,
            timezone = %cron.timezone,
            reason = %reason,
            "cron refused: it will not fire until it is fixed"
        );
    }
}

/// The MISSED row of an outage: every fire time the misfire policy drops, in one row.
fn missed_row(first: NewExecution, missed: &Missed, policy: MisfirePolicy) -> LedgerRow {
    let dropped = missed.dropped();
    let until = missed.last_dropped.filter(|t| *t != missed.first);
    let how_many = if missed.exact {
        format!("{dropped}")
    } else {
        format!("at least {dropped}")
    };
    let kept = match (policy, missed.kept) {
        (_, 0) => String::new(),
        (MisfirePolicy::Latest, _) => "; the latest one ran instead".to_string(),
        (_, kept) => format!("; the last {kept} ran"),
    };
    LedgerRow {
        first,
        status: Status::Missed,
        until,
        count: i32::try_from(dropped).unwrap_or(i32::MAX),
        message: format!(
            "missed: no dispatcher was running; {how_many} fire times from {} to {} dropped by \
             misfire policy {}{kept}",
            missed.first.to_rfc3339(),
            missed.last_dropped.unwrap_or(missed.first).to_rfc3339(),
            policy.as_str()
        ),
    }
}

/// What a pass did, for its log and its pace.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub pages: usize,
    pub decided: usize,
    pub new: u64,
    pub existed: u64,
    pub overlap: u64,
    /// Created WAITING behind an unfinished execution (buffer policies, replace).
    pub waiting: u64,
    /// Fire times recorded MISSED or EXCLUDED.
    pub missed: u64,
    pub excluded: u64,
    pub first_fire: Option<DateTime<Utc>>,
    pub last_fire: Option<DateTime<Utc>>,
}

impl Tally {
    /// Rows the pass wrote or found (its pace counts them).
    pub fn rows(&self) -> u64 {
        self.new + self.existed + self.waiting
    }

    /// Logs a committed page's steps and adds them up.
    pub fn page(&mut self, page: &DuePage<Note>) {
        self.pages += 1;
        self.decided += page.steps.len();
        for (done, note) in &page.steps {
            for (row, written) in done.ledger.iter().zip(&done.recorded) {
                if !written {
                    continue;
                }
                let n = row.count.max(1) as u64;
                match row.status {
                    Status::Missed => self.missed += n,
                    _ => self.excluded += n,
                }
                crate::metrics::fire_times_decided(row.status.decision(), n);
                tracing::info!(
                    job_id = done.cron_id,
                    cron = %note.name,
                    scheduled_time = %row.first.scheduled_time.to_rfc3339(),
                    fire_times = n,
                    decision = row.status.decision(),
                    reason = %row.message,
                    "fire time recorded as not run"
                );
            }
            if let Some((expression, timezone)) = &note.scheduled {
                tracing::info!(
                    job_id = done.cron_id,
                    cron = %note.name,
                    expression = %expression,
                    timezone = %timezone,
                    handler = %note.handler,
                    "cron scheduled"
                );
            }
            if let Some((missed, policy)) = &note.missed {
                log_missed(done.cron_id, &note.name, missed, *policy);
            }
            for (fire, created) in &done.created {
                self.first_fire = Some(self.first_fire.map_or(*fire, |t| t.min(*fire)));
                self.last_fire = Some(self.last_fire.map_or(*fire, |t| t.max(*fire)));
                match created {
                    Created::New(execution_id) => {
                        self.new += 1;
                        crate::metrics::fire_times_decided("run", 1);
                        tracing::debug!(
                            execution_id,
                            job_id = done.cron_id,
                            handler = %note.handler,
                            scheduled_time = %fire.to_rfc3339(),
                            "execution created"
                        );
                    }
                    Created::Exists => {
                        self.existed += 1;
                        tracing::debug!(
                            job_id = done.cron_id,
                            scheduled_time = %fire.to_rfc3339(),
                            "execution existed already"
                        );
                    }
                    Created::Waiting(execution_id) => {
                        self.waiting += 1;
                        crate::metrics::fire_times_decided("run", 1);
                        tracing::info!(
                            execution_id,
                            job_id = done.cron_id,
                            cron = %note.name,
                            handler = %note.handler,
                            scheduled_time = %fire.to_rfc3339(),
                            policy = note.policy.as_str(),
                            "fire time waits: an execution of the cron has not finished"
                        );
                    }
                    Created::Overlap => {
                        self.overlap += 1;
                        crate::metrics::fire_times_decided("skipped", 1);
                        tracing::info!(
                            job_id = done.cron_id,
                            cron = %note.name,
                            handler = %note.handler,
                            scheduled_time = %fire.to_rfc3339(),
                            policy = note.policy.as_str(),
                            "fire time skipped: an execution of the cron has not finished"
                        );
                    }
                }
            }
            if note.ended {
                tracing::warn!(
                    job_id = done.cron_id,
                    cron = %note.name,
                    "the schedule has no further fire times"
                );
            }
        }
    }

    /// One line per pass that created anything.
    pub fn log(&self, elapsed: std::time::Duration, lookahead: chrono::Duration) {
        if self.new + self.existed + self.overlap + self.waiting + self.missed + self.excluded == 0
        {
            return;
        }
        tracing::info!(
            created = self.new,
            existed = self.existed,
            waiting = self.waiting,
            skipped_overlap = self.overlap,
            missed = self.missed,
            excluded = self.excluded,
            crons = self.decided,
            pages = self.pages,
            first_fire_time = %self.first_fire.map(|t| t.to_rfc3339()).unwrap_or_default(),
            last_fire_time = %self.last_fire.map(|t| t.to_rfc3339()).unwrap_or_default(),
            lookahead_ms = lookahead.num_milliseconds(),
            elapsed_ms = elapsed.as_millis() as u64,
            "executions created"
        );
    }
}

fn log_missed(job_id: i64, name: &str, missed: &Missed, policy: MisfirePolicy) {
    let first_missed = missed.first.to_rfc3339();
    let last_missed = missed.last.to_rfc3339();
    if missed.exact {
        tracing::warn!(
            job_id,
            cron = %name,
            missed = missed.count,
            kept = missed.kept,
            dropped = missed.dropped(),
            first_missed = %first_missed,
            last_missed = %last_missed,
            policy = policy.as_str(),
            "missed fire times (no dispatcher was running); applying the misfire policy"
        );
    } else {
        tracing::warn!(
            job_id,
            cron = %name,
            missed_at_least = missed.count,
            kept = missed.kept,
            dropped_at_least = missed.dropped(),
            first_missed = %first_missed,
            last_missed = %last_missed,
            policy = policy.as_str(),
            "missed at least {} fire times (no dispatcher was running); applying the \
             misfire policy",
            missed.count
        );
    }
}
