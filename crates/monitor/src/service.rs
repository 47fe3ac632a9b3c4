//! The monitor as it runs: a loop that starts each job when its schedule
//! says, judges every complete run against the job's stored conditions,
//! queues the alert for every channel in the same transaction, and delivers
//! the outbox with backoff, all in one task so that a scan of hours never
//! holds up an alert and an alert never holds up a scan.
//!
//! - A run that was due while the monitor was down runs once at start.
//! - `reload` (SIGHUP) reads the configuration again; one that does not
//!   parse, or whose channels cannot be built, is reported and the running
//!   configuration kept.
//! - `stop` (SIGTERM) cancels the running job (a scan stores what it has,
//!   incomplete, and is not judged) and ends after in-flight deliveries.
//! - Runs a dead monitor left `running` are marked abandoned at start.
//! - Deliveries are retried with exponential backoff (or as the receiver's
//!   Retry-After asks) until they succeed or are refused for good; a channel
//!   that keeps failing is itself a condition, told to the other channels.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use perimeter_checks::environments::Environments;
use perimeter_model::{Alert, AlertChange, ChangeKind, IdempotencyKey, Severity};
use perimeter_notify::{Channel, DeliveryError};
use perimeter_report::alert::{from_json, to_json_bytes};
use perimeter_store::{
    ConditionRow, JobKind, MonitorStore, NewAlert, NewDelivery, RunStatus, SqliteStore,
};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::changes::{Condition, Observation, StoredCondition, judge};
use crate::config::{
    AUDIT_JOB, FLEET_JOB, JobTarget, MonitorConfig, ScanJob, VERIFY_JOB, build_channels,
};
use crate::metrics::{ChannelLabels, EnvironmentLabels, FindingLabels, JobLabels, Metrics};
use crate::observe::{self, Thresholds, key_place, scan_covers};
use crate::runner::{JobRunner, ScanRequest, ScanRun};

/// The name under which the monitor's own conditions (failing channels) and
/// alerts about them are kept.
pub const SELF_JOB: &str = "_monitor";

/// Attempts in a row after which a channel counts as failing.
const FAILING_AFTER: u32 = 3;

/// How far behind its start a fleet run reads the agents' events: a report
/// received just before may still be in its transaction (the server's
/// request deadline is 30 s).
const FLEET_EVENT_LAG: time::Duration = time::Duration::seconds(60);

/// The events the first fleet run of a history reads.
const FIRST_FLEET_WINDOW: time::Duration = time::Duration::hours(1);

/// What the service is told from outside (the CLI turns signals into these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Read the configuration again (SIGHUP).
    Reload,
    /// Finish up and return (SIGTERM, SIGINT).
    Stop,
}

/// Which jobs one `--once` pass runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Once {
    /// Every job that is due.
    Due,
    /// This job, due or not.
    Job(String),
}

/// How to run.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub config_path: PathBuf,
    pub db_path: PathBuf,
    /// The vantage point's name in alerts (the host name unless configured).
    pub host: String,
    pub once: Option<Once>,
    /// The first retry of a failed delivery waits this long, doubling each
    /// time up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

/// What a one-shot pass did, for the CLI's exit code and summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnceSummary {
    pub runs: Vec<(String, RunStatus, u64)>,
    pub delivered: u64,
    pub pending: u64,
}

/// A loaded configuration: the file's environments, the monitor's part and
/// its built channels.
struct Loaded {
    environments: Environments,
    config: MonitorConfig,
    channels: Vec<Arc<Channel>>,
}

fn load(path: &std::path::Path) -> anyhow::Result<Loaded> {
    let (environments, config) = crate::config::load(path)?;
    let Some(config) = config else {
        anyhow::bail!(
            "{} has no [monitor] part: nothing to run (see `perimeter init` for an example)",
            path.display()
        );
    };
    let uses_environments = config.scans.iter().any(|job| {
        job.targets
            .iter()
            .any(|t| matches!(t, JobTarget::Environment(_)))
    }) || config.verify.is_some();
    if uses_environments && let Err(refusal) = environments.check_scannable() {
        anyhow::bail!("{refusal}");
    }
    let channels = build_channels(&config, |name| std::env::var_os(name))?
        .into_iter()
        .map(Arc::new)
        .collect();
    Ok(Loaded {
        environments,
        config,
        channels,
    })
}

/// A job as `--check` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPlan {
    pub job: String,
    /// `every 6h`, `cron 0 3 * * *`.
    pub schedule: String,
}

/// Parses and builds the configuration without running anything: for the
/// CLI to refuse a bad one (exit 2) before it becomes a service. Returns the
/// jobs and the channels' names.
pub fn check_config(path: &std::path::Path) -> anyhow::Result<(Vec<JobPlan>, Vec<String>)> {
    let loaded = load(path)?;
    let jobs = loaded
        .config
        .job_names()
        .into_iter()
        .filter_map(|job| {
            let (schedule, _) = loaded.config.schedule_of(job)?;
            Some(JobPlan {
                job: job.to_owned(),
                schedule: schedule.describe(),
            })
        })
        .collect();
    let channels = loaded.channels.iter().map(|c| c.name.clone()).collect();
    Ok((jobs, channels))
}

type JobFuture<'r> = Pin<Box<dyn Future<Output = JobDone> + Send + 'r>>;
type DeliveryFuture =
    Pin<Box<dyn Future<Output = (i64, String, Result<String, DeliveryError>)> + Send>>;

/// Which condition keys a run covered (a key it did not cover keeps its
/// condition as it was).
type Covers = Box<dyn Fn(&str) -> bool>;

/// A job run that ended, for judging.
struct JobDone {
    job: String,
    run_id: i64,
    started: OffsetDateTime,
    outcome: anyhow::Result<Ran>,
}

enum Ran {
    Scan(ScanRun, bool),
    Audit(crate::runner::AuditRun),
    Verify(crate::runner::VerifyRun, bool),
    Fleet(crate::runner::FleetRun),
}

/// Runs the monitor until `control` says stop (or, with `once`, one pass).
pub async fn run<R: JobRunner>(
    runner: &R,
    options: ServiceOptions,
    mut control: mpsc::Receiver<Control>,
) -> anyhow::Result<OnceSummary> {
    let mut loaded = load(&options.config_path)?;
    let mut store = SqliteStore::open(&options.db_path)?;
    let abandoned = store.abandon_dead_runs(OffsetDateTime::now_utc())?;
    if abandoned > 0 {
        tracing::warn!(
            abandoned,
            "runs left running by a monitor that stopped were marked abandoned"
        );
    }
    let metrics = Arc::new(Mutex::new(Metrics::new()));
    let stop_all = CancellationToken::new();

    if let Some(once) = options.once.clone() {
        return run_once(runner, &options, &mut loaded, &mut store, &metrics, once).await;
    }

    let server = loaded.config.metrics.map(|address| {
        let metrics = Arc::clone(&metrics);
        let stop = stop_all.clone();
        tokio::spawn(async move {
            if let Err(err) = crate::metrics::serve(address, metrics, stop).await {
                tracing::error!("cannot serve metrics on {address}: {err}");
            }
        })
    });
    tracing::info!(
        jobs = ?loaded.config.job_names(),
        channels = loaded.channels.len(),
        "monitor started"
    );

    let mut planned: BTreeMap<String, OffsetDateTime> = BTreeMap::new();
    let mut running: Option<(String, CancellationToken, JobFuture<'_>)> = None;
    let mut in_flight: FuturesUnordered<DeliveryFuture> = FuturesUnordered::new();
    let mut in_flight_ids: HashSet<i64> = HashSet::new();
    let mut stopping = false;
    let mut rng_state: u64 = u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15;

    loop {
        let now = OffsetDateTime::now_utc();
        // Plan each job's next start (with its jitter drawn once per start).
        if !stopping {
            for job in loaded.config.job_names() {
                if planned.contains_key(job) {
                    continue;
                }
                let Some((schedule, jitter)) = loaded.config.schedule_of(job) else {
                    continue;
                };
                let last = store.last_run(job)?.map(|run| run.started);
                if let Some(due) = schedule.next_run(last, now) {
                    let draw = next_draw(&mut rng_state);
                    planned.insert(
                        job.to_owned(),
                        due + crate::schedule::jitter_delay(jitter, draw),
                    );
                }
            }
        }
        // Start the earliest due job when none runs.
        if running.is_none() && !stopping {
            let due_job = planned
                .iter()
                .filter(|(_, due)| **due <= now)
                .min_by_key(|(_, due)| **due)
                .map(|(job, _)| job.clone());
            if let Some(job) = due_job {
                planned.remove(&job);
                let cancel = CancellationToken::new();
                let future = start_job(runner, &loaded, &mut store, &job, cancel.clone())?;
                running = Some((job, cancel, future));
                continue;
            }
        }
        // Start due deliveries.
        if !stopping {
            for pending in store.due_deliveries(now)? {
                if in_flight_ids.contains(&pending.id) {
                    continue;
                }
                let Some(channel) = loaded
                    .channels
                    .iter()
                    .find(|c| c.name == pending.channel)
                    .cloned()
                else {
                    // A channel the configuration no longer has: nothing can
                    // deliver it; it waits (and is listed) until one does.
                    continue;
                };
                in_flight_ids.insert(pending.id);
                in_flight.push(deliver(channel, pending.id, pending.document));
            }
        }
        if stopping && running.is_none() && in_flight.is_empty() {
            break;
        }

        let next_job = planned.values().min().copied();
        let next_delivery = store.next_delivery_due()?.filter(|_| !stopping);
        let wake = [next_job, next_delivery]
            .into_iter()
            .flatten()
            .min()
            .map(|at| at - OffsetDateTime::now_utc())
            .map(|d| Duration::try_from(d).unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::from_secs(3600))
            .min(Duration::from_secs(3600))
            .max(Duration::from_millis(10));

        let job_done = async {
            match running.as_mut() {
                Some((_, _, future)) => future.as_mut().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            done = job_done => {
                running = None;
                let job = done.job.clone();
                if let Err(err) = finish_job(&options, &loaded, &mut store, &metrics, done) {
                    tracing::error!(job, "cannot record the run: {err:#}");
                }
            }
            Some((id, channel, result)) = in_flight.next(), if !in_flight.is_empty() => {
                in_flight_ids.remove(&id);
                record_delivery(&options, &mut store, &metrics, id, &channel, result)?;
                watch_channels(&options, &loaded, &mut store, &metrics)?;
            }
            message = control.recv() => match message {
                Some(Control::Reload) => match load(&options.config_path) {
                    Ok(new) => {
                        tracing::info!(jobs = ?new.config.job_names(), "configuration reloaded");
                        loaded = new;
                        planned.clear();
                    }
                    Err(err) => tracing::error!("the configuration was not reloaded, the running one is kept: {err:#}"),
                },
                Some(Control::Stop) | None => {
                    tracing::info!("stopping: the running job is cancelled and stored as incomplete");
                    stopping = true;
                    planned.clear();
                    if let Some((_, cancel, _)) = &running {
                        cancel.cancel();
                    }
                }
            },
            () = tokio::time::sleep(wake) => {}
        }
    }
    stop_all.cancel();
    if let Some(server) = server {
        let _ = server.await;
    }
    Ok(OnceSummary::default())
}

async fn run_once<R: JobRunner>(
    runner: &R,
    options: &ServiceOptions,
    loaded: &mut Loaded,
    store: &mut SqliteStore,
    metrics: &Arc<Mutex<Metrics>>,
    once: Once,
) -> anyhow::Result<OnceSummary> {
    let now = OffsetDateTime::now_utc();
    let jobs: Vec<String> = match &once {
        Once::Job(job) => {
            if loaded.config.schedule_of(job).is_none() {
                anyhow::bail!(
                    "no job `{job}` in {} (it has: {})",
                    options.config_path.display(),
                    loaded.config.job_names().join(", ")
                );
            }
            vec![job.clone()]
        }
        Once::Due => {
            let mut due = Vec::new();
            for job in loaded.config.job_names() {
                let Some((schedule, _)) = loaded.config.schedule_of(job) else {
                    continue;
                };
                let last = store.last_run(job)?.map(|run| run.started);
                if schedule.next_run(last, now).is_some_and(|at| at <= now) {
                    due.push(job.to_owned());
                }
            }
            due
        }
    };
    let mut summary = OnceSummary::default();
    for job in jobs {
        let cancel = CancellationToken::new();
        let done = start_job(runner, loaded, store, &job, cancel)?.await;
        let run_id = done.run_id;
        finish_job(options, loaded, store, metrics, done)?;
        let run = store.runs(50)?.into_iter().find(|run| run.id == run_id);
        if let Some(run) = run {
            summary.runs.push((job, run.status, run.n_changes));
        }
    }
    // One attempt at everything due; what fails waits for the next pass.
    let due = store.due_deliveries(OffsetDateTime::now_utc())?;
    let mut attempts: FuturesUnordered<DeliveryFuture> = FuturesUnordered::new();
    for pending in due {
        if let Some(channel) = loaded.channels.iter().find(|c| c.name == pending.channel) {
            attempts.push(deliver(Arc::clone(channel), pending.id, pending.document));
        }
    }
    while let Some((id, channel, result)) = attempts.next().await {
        if result.is_ok() {
            summary.delivered += 1;
        }
        record_delivery(options, store, metrics, id, &channel, result)?;
    }
    watch_channels(options, loaded, store, metrics)?;
    summary.pending = store
        .channel_tallies()?
        .iter()
        .map(|tally| tally.pending)
        .sum();
    Ok(summary)
}

/// A uniform draw in [0, 1) from a small xorshift generator: jitter needs
/// spread, not secrecy.
fn next_draw(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    #[expect(
        clippy::cast_precision_loss,
        reason = "53 bits of a random number are plenty"
    )]
    let draw = (*state >> 11) as f64 / (1u64 << 53) as f64;
    draw
}

fn start_job<'r, R: JobRunner>(
    runner: &'r R,
    loaded: &Loaded,
    store: &mut SqliteStore,
    job: &str,
    cancel: CancellationToken,
) -> anyhow::Result<JobFuture<'r>> {
    let started = OffsetDateTime::now_utc();
    let job_name = job.to_owned();
    if job == AUDIT_JOB {
        let run_id = store.begin_run(job, JobKind::Audit, started)?;
        let approvals = loaded
            .config
            .audit
            .as_ref()
            .and_then(|a| a.approvals.clone());
        return Ok(Box::pin(async move {
            let outcome = runner.audit(approvals).await.map(Ran::Audit);
            JobDone {
                job: job_name,
                run_id,
                started,
                outcome,
            }
        }));
    }
    if job == FLEET_JOB {
        // Execs are read in windows that end a little before each run's
        // start (a report received just before it may still be committing)
        // and begin where the last complete run's ended; a failed run's
        // window is read again by the next.
        let window_end = started - FLEET_EVENT_LAG;
        let window_start = match store.last_complete_run(job)? {
            Some(previous) => previous.started - FLEET_EVENT_LAG,
            None => window_end - FIRST_FLEET_WINDOW,
        };
        let run_id = store.begin_run(job, JobKind::Fleet, started)?;
        return Ok(Box::pin(async move {
            let outcome = runner.fleet(window_start..window_end).await.map(Ran::Fleet);
            JobDone {
                job: job_name,
                run_id,
                started,
                outcome,
            }
        }));
    }
    if job == VERIFY_JOB {
        let run_id = store.begin_run(job, JobKind::Verify, started)?;
        let Some(verify) = loaded.config.verify.clone() else {
            anyhow::bail!("no verify job");
        };
        return Ok(Box::pin(async move {
            let outcome = runner
                .verify(&verify, cancel.clone())
                .await
                .map(|run| Ran::Verify(run, cancel.is_cancelled()));
            JobDone {
                job: job_name,
                run_id,
                started,
                outcome,
            }
        }));
    }
    let Some(scan) = loaded.config.scans.iter().find(|s| s.name == job) else {
        anyhow::bail!("no job `{job}`");
    };
    let request = scan_request(scan, &loaded.environments);
    let run_id = store.begin_run(job, JobKind::Scan, started)?;
    Ok(Box::pin(async move {
        let outcome = runner
            .scan(request, cancel.clone())
            .await
            .map(|run| Ran::Scan(run, cancel.is_cancelled()));
        JobDone {
            job: job_name,
            run_id,
            started,
            outcome,
        }
    }))
}

/// A scan job's request, its environment names expanded to their ranges and
/// hosts as the file says now.
fn scan_request(job: &ScanJob, environments: &Environments) -> ScanRequest {
    let mut targets = Vec::new();
    for target in &job.targets {
        match target {
            JobTarget::Target(text) => targets.push(text.clone()),
            JobTarget::Environment(name) => {
                if let Some(env) = environments.by_name(name) {
                    targets.extend(env.ranges.iter().map(ToString::to_string));
                    targets.extend(env.hosts.iter().cloned());
                }
            }
        }
    }
    ScanRequest {
        job: job.name.clone(),
        targets,
        excludes: job.exclude.clone(),
        ports: job.ports.clone(),
        profile: job.profile,
        syn: job.syn,
        rate: job.rate,
        spread: job.spread,
    }
}

/// Judges a job's run (when complete) and records it: conditions, alert and
/// deliveries in one transaction.
fn finish_job(
    options: &ServiceOptions,
    loaded: &Loaded,
    store: &mut SqliteStore,
    metrics: &Arc<Mutex<Metrics>>,
    done: JobDone,
) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    let labels = JobLabels {
        job: done.job.clone(),
    };
    let duration = (now - done.started).as_seconds_f64().max(0.0);
    let record_metrics = |success: bool, ports: u64| {
        if let Ok(m) = metrics.lock() {
            m.job_last_start
                .get_or_create(&labels)
                .set(done.started.unix_timestamp() as f64);
            m.job_last_duration.get_or_create(&labels).set(duration);
            m.job_last_success
                .get_or_create(&labels)
                .set(i64::from(success));
            m.job_ports_scanned
                .get_or_create(&labels)
                .set(i64::try_from(ports).unwrap_or(i64::MAX));
            m.job_runs.get_or_create(&labels).inc();
        }
    };
    let thresholds = Thresholds {
        min_severity: loaded.config.min_severity,
        tls_expiry_days: loaded.config.tls_expiry_days,
    };
    let ran = match done.outcome {
        Err(err) => {
            tracing::error!(job = done.job, "the run failed: {err:#}");
            store.end_run(
                done.run_id,
                now,
                RunStatus::Failed,
                None,
                Some(&format!("{err:#}")),
            )?;
            record_metrics(false, 0);
            return Ok(());
        }
        Ok(ran) => ran,
    };
    let previous_scan_id = store
        .last_complete_run(&done.job)?
        .and_then(|run| run.scan_id);
    let (observation, covers, scan_id, audit_id, ports): (_, Covers, _, _, u64) = match ran {
        Ran::Scan(run, cancelled)
        | Ran::Verify(crate::runner::VerifyRun { scan: run, .. }, cancelled)
            if cancelled || !run.info.complete =>
        {
            // Never judged: the ports it did not reach would read as closed.
            store.end_run(
                done.run_id,
                now,
                RunStatus::Incomplete,
                Some(run.info.id),
                None,
            )?;
            record_metrics(false, run.info.n_probes);
            return Ok(());
        }
        Ran::Scan(run, _) => {
            let previous = match previous_scan_id {
                Some(id) => Some(load_previous(store, id)?),
                None => None,
            };
            update_exposure_metrics(metrics, &run, &loaded.environments);
            let observation = observe::scan_observation(
                &run,
                previous.as_ref(),
                &loaded.environments,
                thresholds,
                now.date(),
            );
            let (targets, ports_set) = (run.targets.clone(), run.ports.clone());
            let scan_id = Some(run.info.id);
            let n_probes = run.info.n_probes;
            (
                observation,
                Box::new(move |key: &str| scan_covers(&targets, &ports_set, key)),
                scan_id,
                None,
                n_probes,
            )
        }
        Ran::Verify(run, _) => {
            let observation = observe::verify_observation(&run.findings, thresholds);
            let (targets, ports_set) = (run.scan.targets.clone(), run.scan.ports.clone());
            let scan_id = Some(run.scan.info.id);
            let n_probes = run.scan.info.n_probes;
            (
                observation,
                // A key that names no place is about the environments as a
                // whole, which every verify covers.
                Box::new(move |key: &str| {
                    key_place(key).is_none() || scan_covers(&targets, &ports_set, key)
                }),
                scan_id,
                None,
                n_probes,
            )
        }
        Ran::Audit(run) => {
            if let Ok(m) = metrics.lock() {
                let mut counts: BTreeMap<(String, &str), i64> = BTreeMap::new();
                for finding in &run.findings {
                    *counts
                        .entry((finding.rule.clone(), finding.severity.as_str()))
                        .or_default() += 1;
                }
                for ((rule, severity), n) in counts {
                    m.findings
                        .get_or_create(&FindingLabels {
                            environment: "this-host".into(),
                            rule,
                            severity: severity.into(),
                        })
                        .set(n);
                }
            }
            let observation = observe::audit_observation(&run, thresholds);
            (observation, Box::new(|_: &str| true), None, run.audit_id, 0)
        }
        Ran::Fleet(run) => {
            let silent_after = loaded
                .config
                .fleet
                .as_ref()
                .map_or(std::time::Duration::from_secs(1800), |f| f.silent_after);
            let observation = observe::fleet_observation(&run, thresholds, silent_after, now);
            // Every run sees every host the server holds.
            (observation, Box::new(|_: &str| true), None, None, 0)
        }
    };
    let stored: Vec<StoredCondition> = store
        .conditions(&done.job)?
        .into_iter()
        .filter_map(|row| from_row(&row))
        .collect();
    let judgement = judge(
        &stored,
        &observation,
        covers,
        loaded.config.close_after,
        now,
    );
    let rows: Vec<ConditionRow> = judgement.conditions.iter().map(to_row).collect();
    let run_label = done.run_id.to_string();
    let alert = build_alert(
        options,
        loaded,
        &done.job,
        &run_label,
        now,
        judgement.changes,
    );
    let documents: Vec<(String, String, String)> = alert
        .as_ref()
        .map(|(_, per_channel)| per_channel.clone())
        .unwrap_or_default();
    let whole = alert.as_ref().map(|(whole, _)| whole.clone());
    let new_alert = whole.as_ref().map(|(alert, document)| NewAlert {
        created: alert.created_at,
        severity: alert.severity.as_str(),
        n_changes: alert.changes.len() as u64,
        document,
        deliveries: documents
            .iter()
            .map(|(channel, key, document)| NewDelivery {
                channel,
                idempotency_key: key,
                document,
            })
            .collect(),
    });
    store.complete_run(
        done.run_id,
        now,
        scan_id,
        audit_id,
        &rows,
        new_alert.as_ref(),
    )?;
    record_metrics(true, ports);
    if let Some((alert, _)) = &whole {
        tracing::info!(job = done.job, changes = alert.changes.len(), severity = %alert.severity, "changes found; alert queued");
    }
    Ok(())
}

fn load_previous(
    store: &SqliteStore,
    scan_id: i64,
) -> anyhow::Result<(perimeter_model::ScanInfo, Vec<perimeter_model::PortResult>)> {
    use perimeter_store::Store as _;
    Ok(store.load_scan(scan_id)?)
}

fn update_exposure_metrics(
    metrics: &Arc<Mutex<Metrics>>,
    run: &ScanRun,
    environments: &Environments,
) {
    let Ok(m) = metrics.lock() else {
        return;
    };
    let mut per_env: BTreeMap<String, i64> = BTreeMap::new();
    let mut findings: BTreeMap<(String, String, String), i64> = BTreeMap::new();
    for result in &run.results {
        let env = environments
            .environment_of(result.address)
            .map_or_else(|| "none".to_owned(), |e| e.name.clone());
        *per_env.entry(env.clone()).or_default() += 1;
        for finding in &result.findings {
            *findings
                .entry((
                    env.clone(),
                    finding.rule.clone(),
                    finding.severity.as_str().to_owned(),
                ))
                .or_default() += 1;
        }
    }
    for (environment, n) in per_env {
        m.open_ports
            .get_or_create(&EnvironmentLabels { environment })
            .set(n);
    }
    for ((environment, rule, severity), n) in findings {
        m.findings
            .get_or_create(&FindingLabels {
                environment,
                rule,
                severity,
            })
            .set(n);
    }
}

fn from_row(row: &ConditionRow) -> Option<StoredCondition> {
    use std::str::FromStr as _;
    Some(StoredCondition {
        key: row.key.clone(),
        kind: ChangeKind::from_str(&row.kind).ok()?,
        severity: Severity::from_str(&row.severity).ok()?,
        subject: row.subject.clone(),
        expected: row.expected,
        first_seen: row.first_seen,
        last_seen: row.last_seen,
        absent_runs: row.absent_runs,
        acked_until: row.acked_until,
    })
}

fn to_row(condition: &StoredCondition) -> ConditionRow {
    ConditionRow {
        id: 0,
        job: String::new(),
        key: condition.key.clone(),
        kind: condition.kind.as_str().to_owned(),
        severity: condition.severity.as_str().to_owned(),
        subject: condition.subject.clone(),
        expected: condition.expected,
        first_seen: condition.first_seen,
        last_seen: condition.last_seen,
        absent_runs: condition.absent_runs,
        acked_until: condition.acked_until,
    }
}

/// The whole alert of a run (with its document) and each channel's share:
/// (channel, idempotency key, document). `None` without changes.
#[expect(clippy::type_complexity, reason = "a private helper's plain tuple")]
fn build_alert(
    options: &ServiceOptions,
    loaded: &Loaded,
    job: &str,
    run_id: &str,
    now: OffsetDateTime,
    changes: Vec<AlertChange>,
) -> Option<((Alert, String), Vec<(String, String, String)>)> {
    if changes.is_empty() {
        return None;
    }
    let host = loaded
        .config
        .vantage
        .clone()
        .unwrap_or_else(|| options.host.clone());
    let key = IdempotencyKey::for_delivery(job, run_id, "all");
    let alert = Alert::new(key, job, run_id, now, host, changes);
    let document = String::from_utf8(to_json_bytes(&alert)).unwrap_or_default();
    let per_channel = loaded
        .channels
        .iter()
        .filter_map(|channel| {
            // The monitor's own alerts about a failing channel go to the
            // other channels only.
            let share = if job == SELF_JOB {
                let key = IdempotencyKey::for_delivery(job, run_id, &channel.name);
                alert.filtered(key, |change| {
                    change.subject != channel.name && channel.filter.accepts(change)
                })
            } else {
                channel.alert_for(&alert)
            }?;
            let document = String::from_utf8(to_json_bytes(&share)).ok()?;
            Some((
                channel.name.clone(),
                share.idempotency_key.as_str().to_owned(),
                document,
            ))
        })
        .collect();
    Some(((alert, document), per_channel))
}

fn deliver(channel: Arc<Channel>, id: i64, document: String) -> DeliveryFuture {
    Box::pin(async move {
        let name = channel.name.clone();
        let result = match from_json(&document) {
            Ok(alert) => channel
                .deliver(&alert)
                .await
                .map(|delivery| delivery.receipt),
            Err(err) => Err(DeliveryError::Permanent {
                channel: name.clone(),
                reason: format!("the stored alert cannot be read: {err}"),
            }),
        };
        (id, name, result)
    })
}

fn record_delivery(
    options: &ServiceOptions,
    store: &mut SqliteStore,
    metrics: &Arc<Mutex<Metrics>>,
    id: i64,
    channel: &str,
    result: Result<String, DeliveryError>,
) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    let labels = ChannelLabels {
        channel: channel.to_owned(),
    };
    match result {
        Ok(receipt) => {
            store.delivery_sent(id, now, &receipt)?;
            tracing::info!(channel, receipt, "alert delivered");
            if let Ok(m) = metrics.lock() {
                m.alerts_sent.get_or_create(&labels).inc();
            }
        }
        Err(err) => {
            if let Ok(m) = metrics.lock() {
                m.alerts_failed.get_or_create(&labels).inc();
            }
            let attempts = store
                .due_deliveries(now + time::Duration::days(36500))?
                .into_iter()
                .find(|d| d.id == id)
                .map_or(0, |d| d.attempts);
            let retry_at = if err.is_transient() {
                let backoff = backoff(options, attempts);
                let wait = err.retry_after().map_or(backoff, |asked| {
                    asked.max(backoff).min(options.retry_max.max(asked))
                });
                Some(now + wait)
            } else {
                None
            };
            tracing::warn!(
                channel,
                attempts = attempts + 1,
                transient = err.is_transient(),
                "delivery failed: {err}"
            );
            store.delivery_failed(id, &err.to_string(), retry_at)?;
        }
    }
    Ok(())
}

/// The wait before retry number `attempts + 1`: the initial wait doubled per
/// earlier attempt, capped.
fn backoff(options: &ServiceOptions, attempts: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempts.min(20));
    options
        .retry_initial
        .saturating_mul(factor)
        .min(options.retry_max)
}

/// Judges the monitor's own condition: which channels keep failing. A
/// channel that starts failing, or recovers, is told to the other channels.
fn watch_channels(
    options: &ServiceOptions,
    loaded: &Loaded,
    store: &mut SqliteStore,
    metrics: &Arc<Mutex<Metrics>>,
) -> anyhow::Result<()> {
    let tallies = store.channel_tallies()?;
    let mut conditions = Vec::new();
    if let Ok(m) = metrics.lock() {
        for tally in &tallies {
            let labels = ChannelLabels {
                channel: tally.channel.clone(),
            };
            m.outbox_depth
                .get_or_create(&labels)
                .set(i64::try_from(tally.pending).unwrap_or(i64::MAX));
        }
    }
    for tally in &tallies {
        let failing = tally.max_pending_attempts >= FAILING_AFTER;
        if let Ok(m) = metrics.lock() {
            m.channel_failing
                .get_or_create(&ChannelLabels {
                    channel: tally.channel.clone(),
                })
                .set(i64::from(failing));
        }
        if failing {
            tracing::error!(
                channel = tally.channel,
                pending = tally.pending,
                "channel keeps failing"
            );
            conditions.push(Condition {
                key: format!("channel {}", tally.channel),
                kind: ChangeKind::ChannelFailing,
                severity: Severity::High,
                subject: tally.channel.clone(),
                message: format!(
                    "alerts to channel {} are not getting through ({} waiting)",
                    tally.channel, tally.pending
                ),
                evidence: tally
                    .last_error
                    .iter()
                    .map(|e| format!("last error: {e}"))
                    .collect(),
                remedy: "check the channel's receiver and its configuration; the alerts are kept and will be sent when it answers".to_owned(),
                expected: false,
            });
        }
    }
    let stored: Vec<StoredCondition> = store
        .conditions(SELF_JOB)?
        .into_iter()
        .filter_map(|row| from_row(&row))
        .collect();
    let now = OffsetDateTime::now_utc();
    let judgement = judge(
        &stored,
        &Observation {
            conditions,
            events: Vec::new(),
        },
        |_| true,
        1,
        now,
    );
    if judgement.changes.is_empty() && judgement.conditions == stored {
        return Ok(());
    }
    let run_id = store.begin_run(SELF_JOB, JobKind::Monitor, now)?;
    let rows: Vec<ConditionRow> = judgement.conditions.iter().map(to_row).collect();
    let alert = build_alert(
        options,
        loaded,
        SELF_JOB,
        &run_id.to_string(),
        now,
        judgement.changes,
    );
    let documents: Vec<(String, String, String)> =
        alert.as_ref().map(|(_, c)| c.clone()).unwrap_or_default();
    let whole = alert.map(|(whole, _)| whole);
    let new_alert = whole.as_ref().map(|(alert, document)| NewAlert {
        created: alert.created_at,
        severity: alert.severity.as_str(),
        n_changes: alert.changes.len() as u64,
        document,
        deliveries: documents
            .iter()
            .map(|(channel, key, document)| NewDelivery {
                channel,
                idempotency_key: key,
                document,
            })
            .collect(),
    });
    store.complete_run(run_id, now, None, None, &rows, new_alert.as_ref())?;
    Ok(())
}
