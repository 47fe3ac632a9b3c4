//! The `[monitor]` part of `perimeter.toml`: scan jobs, the audit job, the
//! verify job, alert channels and the monitor's own settings.
//!
//! Parsed from the same text as the environments (so errors carry the file's
//! real lines and columns), strictly: an unknown key, a bad cron expression,
//! an environment name the file does not define, a setting that belongs to
//! another kind of channel, are each an error with file, line and column.
//! Secrets (webhook URLs, signing keys, SMTP passwords) come from a file or an
//! environment variable; one written inline is accepted only in a file no one
//! but its owner can read.
//!
//! Parsing is pure ([`parse`]); reading the file and the secrets is
//! [`load`] and [`build_channels`].

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::Duration;

use perimeter_checks::environments::{Environments, parse_environments};
use perimeter_files::LineIndex;
use perimeter_model::{ChangeKind, Severity};
use perimeter_notify::{
    Channel, CommandConfig, Destination, EmailConfig, Facility, Filter, Secret, SecretSource,
    SlackConfig, SmtpCredentials, SmtpSecurity, SyslogConfig, SyslogTarget, Timeouts, TlsRoots,
    WebhookConfig,
};
use perimeter_scan::{PortSet, Profile};
use serde::Deserialize;
use toml::Spanned;

use crate::schedule::{CronSchedule, Schedule};

/// Where the monitor serves `/metrics` unless told otherwise: loopback, so
/// the monitor is never an exposed listener of its own host.
pub const DEFAULT_METRICS: &str = "127.0.0.1:9464";

/// A configuration error: where and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{0}")]
    Other(String),
}

/// The monitor's whole configuration.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    pub path: PathBuf,
    pub scans: Vec<ScanJob>,
    pub audit: Option<AuditJob>,
    pub verify: Option<VerifyJob>,
    /// The fleet's agents' reports (a monitor inside `perimeter server`).
    pub fleet: Option<FleetJob>,
    pub channels: Vec<ChannelSpec>,
    /// Where `/metrics` is served; `None`: not served.
    pub metrics: Option<SocketAddr>,
    /// How many complete runs in a row a port (or any condition) must be gone
    /// before it counts as closed: a port that flaps (open, closed, open)
    /// alerts once.
    pub close_after: u32,
    /// A certificate that expires within this many days is a change.
    pub tls_expiry_days: u32,
    /// Findings below this severity are not changes.
    pub min_severity: Severity,
    /// The name this monitor's alerts give for where they were seen from
    /// (default: the host name).
    pub vantage: Option<String>,
}

impl MonitorConfig {
    /// Every job's name, in order: scan jobs, then `audit`, then `verify`.
    pub fn job_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.scans.iter().map(|job| job.name.as_str()).collect();
        if self.audit.is_some() {
            names.push(AUDIT_JOB);
        }
        if self.verify.is_some() {
            names.push(VERIFY_JOB);
        }
        if self.fleet.is_some() {
            names.push(FLEET_JOB);
        }
        names
    }

    pub fn schedule_of(&self, job: &str) -> Option<(&Schedule, Duration)> {
        if let Some(scan) = self.scans.iter().find(|scan| scan.name == job) {
            return Some((&scan.schedule, scan.jitter));
        }
        match job {
            AUDIT_JOB => self.audit.as_ref().map(|a| (&a.schedule, a.jitter)),
            VERIFY_JOB => self.verify.as_ref().map(|v| (&v.schedule, v.jitter)),
            FLEET_JOB => self.fleet.as_ref().map(|f| (&f.schedule, f.jitter)),
            _ => None,
        }
    }
}

/// The audit job's name.
pub const AUDIT_JOB: &str = "audit";
/// The verify job's name.
pub const VERIFY_JOB: &str = "verify";
/// The fleet job's name.
pub const FLEET_JOB: &str = "fleet";

/// The fleet's hosts as their agents report them, judged on a schedule: every
/// unapproved listener and finding of every host becomes a condition, and a
/// host whose agent has been silent too long is one too. Runs only inside
/// `perimeter server --monitor`.
#[derive(Debug, Clone)]
pub struct FleetJob {
    pub schedule: Schedule,
    pub jitter: Duration,
    /// An accepted agent with no report for this long is a finding.
    pub silent_after: Duration,
}

/// One scheduled scan.
#[derive(Debug, Clone)]
pub struct ScanJob {
    pub name: String,
    pub targets: Vec<JobTarget>,
    pub exclude: Vec<String>,
    pub ports: PortSet,
    pub profile: Profile,
    pub syn: bool,
    pub rate: Option<f64>,
    pub schedule: Schedule,
    pub jitter: Duration,
    /// Pace the scan to end near the end of this window (a slow scan of a
    /// large range spread over hours).
    pub spread: Option<Duration>,
}

/// What a scan job covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobTarget {
    /// Every range and host of an environment, as the file says when the job
    /// runs.
    Environment(String),
    /// An address, network, range or host name.
    Target(String),
}

/// The audit of this host, on a schedule.
#[derive(Debug, Clone)]
pub struct AuditJob {
    pub schedule: Schedule,
    pub jitter: Duration,
    /// The approvals file (default: as `perimeter audit` finds it).
    pub approvals: Option<PathBuf>,
}

/// The environments checked from this vantage point, on a schedule.
#[derive(Debug, Clone)]
pub struct VerifyJob {
    pub schedule: Schedule,
    pub jitter: Duration,
    pub also: Vec<String>,
    pub only: Vec<String>,
    pub ports: PortSet,
    pub profile: Profile,
    pub syn: bool,
}

/// A channel as configured, secrets not yet read.
#[derive(Debug, Clone)]
pub struct ChannelSpec {
    pub name: String,
    pub filter: Filter,
    pub kind: ChannelKind,
    /// Where the channel's table starts, for errors found when it is built.
    pub line: usize,
}

/// A secret's place, or (only in a file no one else can read) its value.
#[derive(Debug, Clone)]
pub enum SecretRef {
    Source(SecretSource),
    Inline(Secret),
}

#[derive(Debug, Clone)]
pub enum ChannelKind {
    Webhook {
        url: SecretRef,
        signing_key: SecretRef,
        ca_file: Option<PathBuf>,
    },
    Slack {
        url: SecretRef,
        ca_file: Option<PathBuf>,
    },
    Email {
        server: String,
        port: Option<u16>,
        security: SmtpSecurity,
        username: Option<String>,
        password: Option<SecretRef>,
        from: String,
        to: Vec<String>,
        ca_file: Option<PathBuf>,
    },
    Syslog {
        target: SyslogTarget,
        facility: Facility,
    },
    Command {
        argv: Vec<String>,
        timeout: Duration,
    },
}

// ---------------------------------------------------------------------------
// The raw file

#[derive(Debug, Deserialize)]
struct RawFile {
    monitor: Option<Spanned<RawMonitor>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMonitor {
    metrics: Option<Spanned<String>>,
    close_after: Option<Spanned<i64>>,
    tls_expiry_days: Option<Spanned<i64>>,
    min_severity: Option<Spanned<String>>,
    vantage: Option<Spanned<String>>,
    #[serde(default)]
    scan: Vec<Spanned<RawScan>>,
    audit: Option<Spanned<RawAudit>>,
    fleet: Option<Spanned<RawFleet>>,
    verify: Option<Spanned<RawVerify>>,
    #[serde(default)]
    channel: Vec<Spanned<RawChannel>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScan {
    name: Spanned<String>,
    targets: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    ports: Option<Spanned<String>>,
    profile: Option<Spanned<String>>,
    #[serde(default)]
    syn: bool,
    rate: Option<Spanned<f64>>,
    every: Option<Spanned<String>>,
    cron: Option<Spanned<String>>,
    jitter: Option<Spanned<String>>,
    spread: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    every: Option<Spanned<String>>,
    cron: Option<Spanned<String>>,
    jitter: Option<Spanned<String>>,
    approvals: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    every: Option<Spanned<String>>,
    cron: Option<Spanned<String>>,
    jitter: Option<Spanned<String>>,
    silent_after: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    every: Option<Spanned<String>>,
    cron: Option<Spanned<String>>,
    jitter: Option<Spanned<String>>,
    #[serde(default)]
    also: Vec<Spanned<String>>,
    #[serde(default)]
    only: Vec<Spanned<String>>,
    ports: Option<Spanned<String>>,
    profile: Option<Spanned<String>>,
    #[serde(default)]
    syn: bool,
}

/// Every setting any channel kind takes; which belong to which kind is
/// checked after parsing, so a setting of another kind is named as such.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    name: Spanned<String>,
    kind: Spanned<String>,
    min_severity: Option<Spanned<String>>,
    kinds: Option<Vec<Spanned<String>>>,
    url: Option<Spanned<RawSecret>>,
    signing_key: Option<Spanned<RawSecret>>,
    ca_file: Option<Spanned<String>>,
    server: Option<Spanned<String>>,
    port: Option<Spanned<i64>>,
    security: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password: Option<Spanned<RawSecret>>,
    from: Option<Spanned<String>>,
    to: Option<Vec<Spanned<String>>>,
    target: Option<Spanned<String>>,
    facility: Option<Spanned<String>>,
    argv: Option<Vec<Spanned<String>>>,
    timeout: Option<Spanned<String>>,
}

/// `"value"`, `{ file = "/path" }` or `{ env = "NAME" }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSecret {
    Inline(String),
    Place(RawSecretPlace),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecretPlace {
    file: Option<String>,
    env: Option<String>,
}

// ---------------------------------------------------------------------------
// Parsing

/// What the parser needs from outside: the environments the same file
/// defines (for `env:NAME` targets), and whether a secret written inline would
/// be readable by others (from the file's mode).
#[derive(Debug, Clone, Copy)]
pub struct ParseContext<'a> {
    pub environments: &'a Environments,
    /// The file's permission bits let its group or everyone read it.
    pub readable_by_others: bool,
}

/// Parses the `[monitor]` part of `text` (the whole perimeter.toml).
/// `Ok(None)` when the file has none.
pub fn parse(
    text: &str,
    path: &Path,
    context: ParseContext<'_>,
) -> Result<Option<MonitorConfig>, ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines = LineIndex::new(text);
    let at = |span: std::ops::Range<usize>, message: String| {
        let (line, column) = lines.line_column(text, span.start);
        ConfigError::Invalid {
            path: path.to_owned(),
            line,
            column,
            message,
        }
    };
    let raw: RawFile = toml::from_str(text)
        .map_err(|err| at(err.span().unwrap_or(0..0), err.message().trim().to_owned()))?;
    let Some(monitor) = raw.monitor else {
        return Ok(None);
    };
    let monitor_span = monitor.span();
    let raw = monitor.into_inner();

    let metrics = match &raw.metrics {
        None => DEFAULT_METRICS.parse().ok(),
        Some(text) if text.get_ref() == "off" => None,
        Some(text) => Some(text.get_ref().parse::<SocketAddr>().map_err(|_| {
            at(
                text.span(),
                format!(
                    "`{}` is not an address and port like 127.0.0.1:9464 (or \"off\")",
                    text.get_ref()
                ),
            )
        })?),
    };
    let positive =
        |value: &Option<Spanned<i64>>, default: u32, what: &str| -> Result<u32, ConfigError> {
            match value {
                None => Ok(default),
                Some(v) => u32::try_from(*v.get_ref())
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| {
                        at(
                            v.span(),
                            format!("{what} must be a whole number of at least 1"),
                        )
                    }),
            }
        };
    let close_after = positive(&raw.close_after, 2, "close_after")?;
    let tls_expiry_days = positive(&raw.tls_expiry_days, 21, "tls_expiry_days")?;
    let min_severity = severity(&raw.min_severity, Severity::Medium, &at)?;
    let vantage = raw.vantage.map(Spanned::into_inner);

    let mut names: HashSet<String> = HashSet::new();
    let mut scans = Vec::with_capacity(raw.scan.len());
    for spanned in raw.scan {
        let raw = spanned.into_inner();
        let name = job_name(&raw.name, &mut names, &at)?;
        if raw.targets.get_ref().is_empty() {
            return Err(at(
                raw.targets.span(),
                format!("scan job `{name}` needs at least one target"),
            ));
        }
        let mut targets = Vec::new();
        for target in raw.targets.get_ref() {
            targets.push(job_target(target, context.environments, &at)?);
        }
        let mut exclude = Vec::new();
        for item in &raw.exclude {
            perimeter_scan::parse_target(item.get_ref())
                .map_err(|err| at(item.span(), err.to_string()))?;
            exclude.push(item.get_ref().clone());
        }
        let rate = match raw.rate {
            Some(rate) if !(rate.get_ref().is_finite() && *rate.get_ref() > 0.0) => {
                return Err(at(
                    rate.span(),
                    "rate must be a positive number of probes per second".into(),
                ));
            }
            Some(rate) => Some(*rate.get_ref()),
            None => None,
        };
        let (schedule, jitter) = schedule(
            &raw.every,
            &raw.cron,
            &raw.jitter,
            &name,
            monitor_span.clone(),
            &at,
        )?;
        scans.push(ScanJob {
            targets,
            exclude,
            ports: ports(&raw.ports, &at)?,
            profile: profile(&raw.profile, &at)?,
            syn: raw.syn,
            rate,
            schedule,
            jitter,
            spread: duration(&raw.spread, "spread", &at)?,
            name,
        });
    }

    let audit = match raw.audit {
        None => None,
        Some(spanned) => {
            let span = spanned.span();
            let raw = spanned.into_inner();
            let (schedule, jitter) =
                schedule(&raw.every, &raw.cron, &raw.jitter, AUDIT_JOB, span, &at)?;
            Some(AuditJob {
                schedule,
                jitter,
                approvals: raw.approvals.map(|p| PathBuf::from(p.into_inner())),
            })
        }
    };
    let fleet = match raw.fleet {
        None => None,
        Some(spanned) => {
            let span = spanned.span();
            let raw = spanned.into_inner();
            let (schedule, jitter) =
                schedule(&raw.every, &raw.cron, &raw.jitter, FLEET_JOB, span, &at)?;
            Some(FleetJob {
                schedule,
                jitter,
                silent_after: duration(&raw.silent_after, "silent_after", &at)?
                    .unwrap_or(Duration::from_secs(30 * 60)),
            })
        }
    };
    let verify = match raw.verify {
        None => None,
        Some(spanned) => {
            let span = spanned.span();
            let raw = spanned.into_inner();
            let (schedule, jitter) =
                schedule(&raw.every, &raw.cron, &raw.jitter, VERIFY_JOB, span, &at)?;
            for name in &raw.only {
                if context.environments.by_name(name.get_ref()).is_none() {
                    return Err(at(
                        name.span(),
                        unknown_environment(name.get_ref(), context.environments),
                    ));
                }
            }
            for item in &raw.also {
                perimeter_scan::parse_target(item.get_ref())
                    .map_err(|err| at(item.span(), err.to_string()))?;
            }
            Some(VerifyJob {
                schedule,
                jitter,
                also: raw.also.into_iter().map(Spanned::into_inner).collect(),
                only: raw.only.into_iter().map(Spanned::into_inner).collect(),
                ports: ports(&raw.ports, &at)?,
                profile: profile(&raw.profile, &at)?,
                syn: raw.syn,
            })
        }
    };

    let mut channel_names: HashSet<String> = HashSet::new();
    let mut channels = Vec::with_capacity(raw.channel.len());
    for spanned in raw.channel {
        let span = spanned.span();
        channels.push(channel(
            spanned.into_inner(),
            span,
            &mut channel_names,
            context,
            &lines,
            text,
            &at,
        )?);
    }

    Ok(Some(MonitorConfig {
        fleet,
        path: path.to_owned(),
        scans,
        audit,
        verify,
        channels,
        metrics,
        close_after,
        tls_expiry_days,
        min_severity,
        vantage,
    }))
}

type At<'a> = dyn Fn(std::ops::Range<usize>, String) -> ConfigError + 'a;

fn job_name(
    name: &Spanned<String>,
    names: &mut HashSet<String>,
    at: &At<'_>,
) -> Result<String, ConfigError> {
    let text = name.get_ref().trim();
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if text.is_empty() || text.len() > 64 || !text.chars().all(allowed) {
        return Err(at(
            name.span(),
            format!("job name `{text}` must be 1-64 letters, digits, `-`, `_` or `.`"),
        ));
    }
    if text == AUDIT_JOB || text == VERIFY_JOB || text == FLEET_JOB {
        return Err(at(
            name.span(),
            format!(
                "`{text}` is the name of the monitor's {text} job; name this scan job otherwise"
            ),
        ));
    }
    if !names.insert(text.to_owned()) {
        return Err(at(name.span(), format!("job `{text}` is defined twice")));
    }
    Ok(text.to_owned())
}

fn unknown_environment(name: &str, environments: &Environments) -> String {
    let known: Vec<&str> = environments
        .environments
        .iter()
        .map(|env| env.name.as_str())
        .collect();
    if known.is_empty() {
        format!("no environment `{name}`: this file defines none")
    } else {
        format!(
            "no environment `{name}` (this file defines: {})",
            known.join(", ")
        )
    }
}

fn job_target(
    target: &Spanned<String>,
    environments: &Environments,
    at: &At<'_>,
) -> Result<JobTarget, ConfigError> {
    let text = target.get_ref().trim();
    if let Some(name) = text.strip_prefix("env:") {
        if environments.by_name(name).is_none() {
            return Err(at(target.span(), unknown_environment(name, environments)));
        }
        return Ok(JobTarget::Environment(name.to_owned()));
    }
    perimeter_scan::parse_target(text).map_err(|err| at(target.span(), err.to_string()))?;
    Ok(JobTarget::Target(text.to_owned()))
}

fn ports(value: &Option<Spanned<String>>, at: &At<'_>) -> Result<PortSet, ConfigError> {
    match value {
        None => PortSet::top(100).map_err(|err| ConfigError::Other(err.to_string())),
        Some(text) => {
            let spec = text.get_ref().trim();
            let parsed = match spec.strip_prefix("top:") {
                Some(n) => n
                    .parse::<usize>()
                    .map_err(|_| format!("`{spec}`: top:N takes a number of ports"))
                    .and_then(|n| PortSet::top(n).map_err(|err| err.to_string())),
                None => PortSet::parse(spec).map_err(|err| err.to_string()),
            };
            parsed.map_err(|message| at(text.span(), message))
        }
    }
}

fn profile(value: &Option<Spanned<String>>, at: &At<'_>) -> Result<Profile, ConfigError> {
    match value {
        // Slow and quiet unless told otherwise: what a monitor of someone's
        // ranges should be.
        None => Ok(Profile::Stealth),
        Some(text) => {
            Profile::from_str(text.get_ref()).map_err(|err| at(text.span(), err.to_string()))
        }
    }
}

fn severity(
    value: &Option<Spanned<String>>,
    default: Severity,
    at: &At<'_>,
) -> Result<Severity, ConfigError> {
    match value {
        None => Ok(default),
        Some(text) => {
            Severity::from_str(text.get_ref()).map_err(|err| at(text.span(), err.to_string()))
        }
    }
}

fn duration(
    value: &Option<Spanned<String>>,
    what: &str,
    at: &At<'_>,
) -> Result<Option<Duration>, ConfigError> {
    match value {
        None => Ok(None),
        Some(text) => humantime::parse_duration(text.get_ref().trim())
            .map(Some)
            .map_err(|_| {
                at(
                    text.span(),
                    format!(
                        "{what} `{}` is not a duration like 90s, 15m, 6h, 1d",
                        text.get_ref()
                    ),
                )
            }),
    }
}

fn schedule(
    every: &Option<Spanned<String>>,
    cron: &Option<Spanned<String>>,
    jitter: &Option<Spanned<String>>,
    job: &str,
    job_span: std::ops::Range<usize>,
    at: &At<'_>,
) -> Result<(Schedule, Duration), ConfigError> {
    let schedule = match (every, cron) {
        (Some(_), Some(cron)) => {
            return Err(at(
                cron.span(),
                format!("job `{job}`: give `every` or `cron`, not both"),
            ));
        }
        (None, None) => {
            return Err(at(
                job_span,
                format!("job `{job}` needs a schedule: `every = \"6h\"` or `cron = \"0 3 * * *\"`"),
            ));
        }
        (Some(every), None) => {
            let interval = duration(&Some(every.clone()), "every", at)?.unwrap_or_default();
            if interval < Duration::from_secs(1) {
                return Err(at(every.span(), "every must be at least one second".into()));
            }
            Schedule::Every(interval)
        }
        (None, Some(cron)) => Schedule::Cron(Box::new(
            CronSchedule::parse(cron.get_ref()).map_err(|message| at(cron.span(), message))?,
        )),
    };
    Ok((
        schedule,
        duration(jitter, "jitter", at)?.unwrap_or_default(),
    ))
}

fn secret(
    value: &Spanned<RawSecret>,
    what: &str,
    context: ParseContext<'_>,
    at: &At<'_>,
) -> Result<SecretRef, ConfigError> {
    match value.get_ref() {
        RawSecret::Inline(text) => {
            if context.readable_by_others {
                return Err(at(
                    value.span(),
                    format!(
                        "{what} is written here, in a file others can read: put it in a file only the monitor's user can read ({what} = {{ file = \"/etc/perimeter/...\" }}) or in the environment ({what} = {{ env = \"NAME\" }}), or make this file mode 0600"
                    ),
                ));
            }
            if text.is_empty() {
                return Err(at(value.span(), format!("{what} is empty")));
            }
            Ok(SecretRef::Inline(Secret::new(text.clone())))
        }
        RawSecret::Place(place) => match (&place.file, &place.env) {
            (Some(file), None) if !file.is_empty() => {
                Ok(SecretRef::Source(SecretSource::File(PathBuf::from(file))))
            }
            (None, Some(env)) if !env.is_empty() => {
                Ok(SecretRef::Source(SecretSource::Env(env.clone())))
            }
            _ => Err(at(
                value.span(),
                format!("{what} takes {{ file = \"PATH\" }} or {{ env = \"NAME\" }} (one of them)"),
            )),
        },
    }
}

fn channel(
    raw: RawChannel,
    span: std::ops::Range<usize>,
    names: &mut HashSet<String>,
    context: ParseContext<'_>,
    lines: &LineIndex,
    text: &str,
    at: &At<'_>,
) -> Result<ChannelSpec, ConfigError> {
    let name = raw.name.get_ref().trim().to_owned();
    if name.is_empty() || name.len() > 64 {
        return Err(at(
            raw.name.span(),
            "a channel needs a name of 1-64 characters".into(),
        ));
    }
    if !names.insert(name.clone()) {
        return Err(at(
            raw.name.span(),
            format!("channel `{name}` is defined twice"),
        ));
    }
    let min_severity = severity(&raw.min_severity, Severity::Info, at)?;
    let kinds = match &raw.kinds {
        None => None,
        Some(list) => {
            let mut kinds = BTreeSet::new();
            for item in list {
                kinds.insert(ChangeKind::from_str(item.get_ref()).map_err(|_| {
                    let all: Vec<&str> = ChangeKind::ALL.iter().map(|k| k.as_str()).collect();
                    at(
                        item.span(),
                        format!(
                            "`{}` is not a change kind (one of: {})",
                            item.get_ref(),
                            all.join(", ")
                        ),
                    )
                })?);
            }
            Some(kinds)
        }
    };
    let kind_name = raw.kind.get_ref().as_str();
    // Which settings each kind takes; any other one set is an error that
    // names the kind, so a typo or a copy-paste from another channel is said.
    let allowed: &[&str] = match kind_name {
        "webhook" => &["url", "signing_key", "ca_file"],
        "slack" => &["url", "ca_file"],
        "email" => &[
            "server", "port", "security", "username", "password", "from", "to", "ca_file",
        ],
        "syslog" => &["target", "facility"],
        "command" => &["argv", "timeout"],
        other => {
            return Err(at(
                raw.kind.span(),
                format!(
                    "channel kind `{other}` is not one of webhook, slack, email, syslog, command"
                ),
            ));
        }
    };
    let present: [(&str, Option<std::ops::Range<usize>>); 13] = [
        ("url", raw.url.as_ref().map(Spanned::span)),
        ("signing_key", raw.signing_key.as_ref().map(Spanned::span)),
        ("ca_file", raw.ca_file.as_ref().map(Spanned::span)),
        ("server", raw.server.as_ref().map(Spanned::span)),
        ("port", raw.port.as_ref().map(Spanned::span)),
        ("security", raw.security.as_ref().map(Spanned::span)),
        ("username", raw.username.as_ref().map(Spanned::span)),
        ("password", raw.password.as_ref().map(Spanned::span)),
        ("from", raw.from.as_ref().map(Spanned::span)),
        (
            "to",
            raw.to.as_ref().and_then(|to| to.first()).map(Spanned::span),
        ),
        ("target", raw.target.as_ref().map(Spanned::span)),
        ("facility", raw.facility.as_ref().map(Spanned::span)),
        (
            "argv",
            raw.argv
                .as_ref()
                .and_then(|argv| argv.first())
                .map(Spanned::span),
        ),
    ];
    for (key, key_span) in present {
        if let Some(key_span) = key_span
            && !allowed.contains(&key)
        {
            return Err(at(
                key_span,
                format!("`{key}` is not a setting of a {kind_name} channel"),
            ));
        }
    }
    if let Some(timeout) = &raw.timeout
        && kind_name != "command"
    {
        return Err(at(
            timeout.span(),
            format!("`timeout` is not a setting of a {kind_name} channel"),
        ));
    }
    let missing = |key: &str| at(span.clone(), format!("a {kind_name} channel needs `{key}`"));
    let ca_file = raw.ca_file.as_ref().map(|p| PathBuf::from(p.get_ref()));
    let kind = match kind_name {
        "webhook" => {
            let url = raw.url.as_ref().ok_or_else(|| missing("url"))?;
            check_url(url, context, at)?;
            ChannelKind::Webhook {
                url: secret(url, "url", context, at)?,
                signing_key: secret(
                    raw.signing_key
                        .as_ref()
                        .ok_or_else(|| missing("signing_key"))?,
                    "signing_key",
                    context,
                    at,
                )?,
                ca_file,
            }
        }
        "slack" => {
            let url = raw.url.as_ref().ok_or_else(|| missing("url"))?;
            check_url(url, context, at)?;
            ChannelKind::Slack {
                url: secret(url, "url", context, at)?,
                ca_file,
            }
        }
        "email" => {
            let security = match &raw.security {
                None => SmtpSecurity::StartTlsRequired,
                Some(text) => match text.get_ref().as_str() {
                    "starttls" => SmtpSecurity::StartTlsRequired,
                    "tls" => SmtpSecurity::ImplicitTls,
                    "starttls-opportunistic" => SmtpSecurity::StartTlsOpportunistic,
                    "none" => SmtpSecurity::None,
                    other => {
                        return Err(at(
                            text.span(),
                            format!(
                                "security `{other}` is not one of starttls, tls, starttls-opportunistic, none"
                            ),
                        ));
                    }
                },
            };
            let port = match &raw.port {
                None => None,
                Some(port) => Some(
                    u16::try_from(*port.get_ref())
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| {
                            at(
                                port.span(),
                                format!("port {} is not in 1-65535", port.get_ref()),
                            )
                        })?,
                ),
            };
            let to: Vec<String> = raw
                .to
                .as_ref()
                .map(|to| to.iter().map(|t| t.get_ref().clone()).collect())
                .unwrap_or_default();
            if to.is_empty() {
                return Err(missing("to"));
            }
            let password = match &raw.password {
                Some(password) => Some(secret(password, "password", context, at)?),
                None => None,
            };
            if password.is_some() != raw.username.is_some() {
                return Err(at(
                    span.clone(),
                    "an email channel takes `username` and `password` together".into(),
                ));
            }
            ChannelKind::Email {
                server: raw
                    .server
                    .as_ref()
                    .ok_or_else(|| missing("server"))?
                    .get_ref()
                    .clone(),
                port,
                security,
                username: raw.username.as_ref().map(|u| u.get_ref().clone()),
                password,
                from: raw
                    .from
                    .as_ref()
                    .ok_or_else(|| missing("from"))?
                    .get_ref()
                    .clone(),
                to,
                ca_file,
            }
        }
        "syslog" => {
            let target = match &raw.target {
                None => SyslogTarget::default(),
                Some(text) => {
                    syslog_target(text.get_ref()).map_err(|message| at(text.span(), message))?
                }
            };
            let facility = match &raw.facility {
                None => Facility::default(),
                Some(text) => Facility::from_str(text.get_ref()).map_err(|_| {
                    at(text.span(), format!("facility `{}` is not a syslog facility (daemon, local0 ... local7, ...)", text.get_ref()))
                })?,
            };
            ChannelKind::Syslog { target, facility }
        }
        _ => {
            let argv: Vec<String> = raw
                .argv
                .as_ref()
                .map(|argv| argv.iter().map(|a| a.get_ref().clone()).collect())
                .unwrap_or_default();
            if argv.first().is_none_or(String::is_empty) {
                return Err(missing("argv"));
            }
            ChannelKind::Command {
                argv,
                timeout: duration(&raw.timeout, "timeout", at)?.unwrap_or(Duration::from_secs(30)),
            }
        }
    };
    Ok(ChannelSpec {
        name,
        filter: Filter {
            min_severity,
            kinds,
        },
        kind,
        line: lines.line_column(text, span.start).0,
    })
}

/// An inline URL must be https, except to loopback (a receiver on the same
/// host): a signed alert sent in clear can be read and replayed by anyone on
/// the path.
fn check_url(
    url: &Spanned<RawSecret>,
    _context: ParseContext<'_>,
    at: &At<'_>,
) -> Result<(), ConfigError> {
    let RawSecret::Inline(text) = url.get_ref() else {
        return Ok(());
    };
    if text.starts_with("https://") {
        return Ok(());
    }
    if let Some(rest) = text.strip_prefix("http://") {
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if loopback {
            return Ok(());
        }
        return Err(at(
            url.span(),
            "a URL over plain http sends alerts in clear; use https (http only to a receiver on this host)".into(),
        ));
    }
    Err(at(url.span(), "url must start with https://".into()))
}

fn syslog_target(text: &str) -> Result<SyslogTarget, String> {
    let address = |rest: &str, scheme: &str| {
        rest.parse::<SocketAddr>().map_err(|_| {
            format!("`{text}`: {scheme}:// takes an address and port like 127.0.0.1:514")
        })
    };
    if let Some(rest) = text.strip_prefix("udp://") {
        return address(rest, "udp").map(SyslogTarget::Udp);
    }
    if let Some(rest) = text.strip_prefix("tcp://") {
        return address(rest, "tcp").map(SyslogTarget::Tcp);
    }
    if text.starts_with('/') {
        return Ok(SyslogTarget::Unix(PathBuf::from(text)));
    }
    Err(format!(
        "`{text}` is not a syslog target: a socket path (/dev/log), udp://HOST:PORT or tcp://HOST:PORT"
    ))
}

// ---------------------------------------------------------------------------
// Reading the file, and the channels' secrets

/// Reads perimeter.toml at `path` (through `perimeter-files`: a regular file,
/// capped) and parses its environments and its `[monitor]` part.
pub fn load(path: &Path) -> Result<(Environments, Option<MonitorConfig>), ConfigError> {
    let text = perimeter_files::read_text(
        path,
        "the environments file",
        perimeter_files::MAX_CONFIG_BYTES,
    )
    .map_err(|err| ConfigError::Other(err.to_string()))?;
    let environments =
        parse_environments(&text, path).map_err(|err| ConfigError::Other(err.to_string()))?;
    let mode = std::fs::metadata(path)
        .map(|meta| std::os::unix::fs::PermissionsExt::mode(&meta.permissions()))
        .unwrap_or(0o644);
    let monitor = parse(
        &text,
        path,
        ParseContext {
            environments: &environments,
            readable_by_others: perimeter_notify::readable_by_others(mode),
        },
    )?;
    Ok((environments, monitor))
}

/// Builds every channel: reads its secrets (files must be readable by their
/// owner alone) and checks its settings. `env` looks up environment variables
/// (`std::env::var_os` in the binary).
pub fn build_channels(
    config: &MonitorConfig,
    env: impl Fn(&str) -> Option<std::ffi::OsString> + Copy,
) -> Result<Vec<Channel>, ConfigError> {
    let mut channels = Vec::with_capacity(config.channels.len());
    for spec in &config.channels {
        let fail = |message: String| {
            ConfigError::Other(format!(
                "{}:{}: channel `{}`: {message}",
                config.path.display(),
                spec.line,
                spec.name
            ))
        };
        let load = |secret: &SecretRef| -> Result<Secret, ConfigError> {
            match secret {
                SecretRef::Inline(value) => Ok(value.clone()),
                SecretRef::Source(source) => {
                    if let SecretSource::File(path) = source
                        && let Ok(meta) = std::fs::metadata(path)
                    {
                        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
                        if perimeter_notify::readable_by_others(mode) {
                            return Err(fail(format!(
                                "the secret file {} may be read by others (mode {:04o}): make it 0600 or 0400",
                                path.display(),
                                mode & 0o7777
                            )));
                        }
                        if perimeter_notify::writable_by_others(mode) {
                            return Err(fail(format!(
                                "the secret file {} may be changed by others (mode {:04o})",
                                path.display(),
                                mode & 0o7777
                            )));
                        }
                    }
                    Secret::load(source, env).map_err(|err| fail(err.to_string()))
                }
            }
        };
        let roots = |ca_file: &Option<PathBuf>| match ca_file {
            Some(path) => TlsRoots::CaFile(path.clone()),
            None => TlsRoots::System,
        };
        let destination = match &spec.kind {
            ChannelKind::Webhook {
                url,
                signing_key,
                ca_file,
            } => Destination::Webhook(
                perimeter_notify::Webhook::new(WebhookConfig {
                    url: load(url)?,
                    signing_key: load(signing_key)?,
                    tls_roots: roots(ca_file),
                    timeouts: Timeouts::default(),
                })
                .map_err(|err| fail(err.to_string()))?,
            ),
            ChannelKind::Slack { url, ca_file } => Destination::Slack(
                perimeter_notify::Slack::new(SlackConfig {
                    url: load(url)?,
                    tls_roots: roots(ca_file),
                    timeouts: Timeouts::default(),
                })
                .map_err(|err| fail(err.to_string()))?,
            ),
            ChannelKind::Email {
                server,
                port,
                security,
                username,
                password,
                from,
                to,
                ca_file,
            } => {
                let credentials = match (username, password) {
                    (Some(username), Some(password)) => Some(SmtpCredentials {
                        username: username.clone(),
                        password: load(password)?,
                    }),
                    _ => None,
                };
                Destination::Email(
                    perimeter_notify::Email::new(EmailConfig {
                        host: server.clone(),
                        port: *port,
                        security: *security,
                        tls_roots: roots(ca_file),
                        credentials,
                        from: from.clone(),
                        to: to.clone(),
                        hello_name: None,
                        timeouts: Timeouts::default(),
                    })
                    .map_err(|err| fail(err.to_string()))?,
                )
            }
            ChannelKind::Syslog { target, facility } => Destination::Syslog(
                perimeter_notify::Syslog::new(SyslogConfig {
                    target: target.clone(),
                    facility: *facility,
                    timeouts: Timeouts::default(),
                })
                .map_err(|err| fail(err.to_string()))?,
            ),
            ChannelKind::Command { argv, timeout } => Destination::Command(
                perimeter_notify::Command::new(CommandConfig {
                    argv: argv.clone(),
                    env: Vec::new(),
                    timeout: *timeout,
                })
                .map_err(|err| fail(err.to_string()))?,
            ),
        };
        channels.push(Channel {
            name: spec.name.clone(),
            filter: spec.filter.clone(),
            destination,
        });
    }
    Ok(channels)
}

#[cfg(test)]
mod tests;
