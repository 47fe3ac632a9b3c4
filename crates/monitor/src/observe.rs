//! What a run saw, as conditions and events for the change rules: open
//! ports (expected where the environment makes them public, or allows every
//! port to this vantage point), findings at or above the threshold, hosts no
//! environment claims, expired experiments still answering, certificates
//! about to expire, unapproved listeners; and the one-off changes against the
//! job's previous complete run (service, authentication, certificate).

use std::net::IpAddr;

use perimeter_checks::environments::Environments;
use perimeter_model::{
    AlertChange, ChangeKind, ChangeState, EnvKind, Finding, PortResult, PortState, ScanInfo,
    Severity,
};
use perimeter_scan::{PortSet, TargetSet};
use perimeter_store::{ChangeKind as DiffKind, diff_scan_runs};
use time::{Date, OffsetDateTime};

use crate::changes::{Condition, Observation};
use crate::runner::{AuditRun, ScanRun};

/// The settings observation needs.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Findings below this are not conditions.
    pub min_severity: Severity,
    /// Certificates expiring within this many days are.
    pub tls_expiry_days: u32,
}

/// The key of a port condition: `port 198.18.0.7:6379/tcp`.
pub fn port_key(address: IpAddr, port: u16, protocol: &str) -> String {
    format!("port {}/{protocol}", socket(address, port))
}

fn socket(address: IpAddr, port: u16) -> String {
    match address {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// The address (and port, if any) a condition key is about, for coverage:
/// every key ends in `ADDRESS`, `ADDRESS:PORT`, `[V6]:PORT` or those with
/// `/PROTO`.
pub fn key_place(key: &str) -> Option<(IpAddr, Option<u16>)> {
    let last = key.rsplit(' ').next()?;
    let last = last.split('/').next()?;
    if let Ok(address) = last.parse::<IpAddr>() {
        return Some((address, None));
    }
    if let Ok(socket) = last.parse::<std::net::SocketAddr>() {
        return Some((socket.ip(), Some(socket.port())));
    }
    None
}

/// Whether a scan over `targets` and `ports` looked where `key` is about.
pub fn scan_covers(targets: &TargetSet, ports: &PortSet, key: &str) -> bool {
    match key_place(key) {
        Some((address, Some(port))) => {
            targets.contains(address) && ports.ports().binary_search(&port).is_ok()
        }
        Some((address, None)) => targets.contains(address),
        None => false,
    }
}

/// The conditions and events of a scan run. `previous` is the job's previous
/// complete run, for the one-off changes.
pub fn scan_observation(
    run: &ScanRun,
    previous: Option<&(ScanInfo, Vec<PortResult>)>,
    environments: &Environments,
    thresholds: Thresholds,
    today: Date,
) -> Observation {
    let mut conditions = Vec::new();
    let mut unknown_hosts = std::collections::BTreeSet::new();
    let mut expired_hosts = std::collections::BTreeSet::new();
    for result in run.results.iter().filter(|r| r.state == PortState::Open) {
        let environment = environments.environment_of(result.address);
        let protocol = result.protocol.as_str();
        let place = socket(result.address, result.port);
        let service = result
            .service
            .as_ref()
            .map(|s| match (&s.product, &s.version) {
                (Some(product), Some(version)) => format!("{} ({product} {version})", s.name),
                (Some(product), None) => format!("{} ({product})", s.name),
                _ => s.name.clone(),
            });
        let (expected, why) = match environment {
            Some(env) if env.public_ports.contains(&result.port) => (
                true,
                format!("port {} is public in environment {}", result.port, env.name),
            ),
            Some(env)
                if run
                    .sources
                    .iter()
                    .any(|source| env.allow_from.iter().any(|net| net.contains(source))) =>
            {
                (
                    true,
                    format!(
                        "environment {} allows every port to this vantage point",
                        env.name
                    ),
                )
            }
            Some(env) => (
                false,
                format!(
                    "environment {} does not make port {} public",
                    env.name, result.port
                ),
            ),
            None => (false, "no environment claims this address".to_owned()),
        };
        let mut evidence = vec![format!("{protocol} {place} open"), why];
        if let Some(service) = &service {
            evidence.push(format!("answers as {service}"));
        }
        conditions.push(Condition {
            key: port_key(result.address, result.port, protocol),
            kind: ChangeKind::PortOpened,
            severity: Severity::Medium,
            subject: place.clone(),
            message: match &service {
                Some(service) => format!("{place} answers ({service})"),
                None => format!("{place} answers"),
            },
            evidence,
            remedy: if expected {
                String::new()
            } else {
                "close it, bind it to loopback, or allow it in perimeter.toml (public_ports) if it should be reachable".to_owned()
            },
            expected,
        });
        for finding in result
            .findings
            .iter()
            .filter(|f| f.severity >= thresholds.min_severity)
        {
            conditions.push(finding_condition(finding, &place));
        }
        if let Some(tls) = result.service.as_ref().and_then(|s| s.tls.as_ref())
            && let Some(not_after) = tls.not_after
        {
            let days_left = (not_after.date() - today).whole_days();
            if days_left <= i64::from(thresholds.tls_expiry_days) {
                let expired = days_left < 0;
                conditions.push(Condition {
                    key: format!("tls-expiring {place}"),
                    kind: ChangeKind::TlsExpiring,
                    severity: if expired {
                        Severity::High
                    } else {
                        Severity::Medium
                    },
                    subject: place.clone(),
                    message: if expired {
                        format!("the certificate of {place} expired {} days ago", -days_left)
                    } else {
                        format!("the certificate of {place} expires in {days_left} days")
                    },
                    evidence: vec![
                        format!("subject {}", tls.subject),
                        format!("issuer {}", tls.issuer),
                        format!("not after {not_after}"),
                    ],
                    remedy: "renew the certificate".to_owned(),
                    expected: false,
                });
            }
        }
        match environment {
            None => {
                unknown_hosts.insert(result.address);
            }
            Some(env)
                if env.kind == EnvKind::Experiment
                    && env.expires.is_some_and(|end| end < today) =>
            {
                expired_hosts.insert((result.address, env.name.clone(), env.expires));
            }
            Some(_) => {}
        }
    }
    if !environments.is_empty() {
        for address in unknown_hosts {
            conditions.push(Condition {
                key: format!("host {address}"),
                kind: ChangeKind::UnknownHost,
                severity: Severity::Medium,
                subject: address.to_string(),
                message: format!("{address} answers, and no environment claims it"),
                evidence: vec!["not in the ranges of any environment in perimeter.toml".to_owned()],
                remedy: "add it to its environment in perimeter.toml, or find out what it is"
                    .to_owned(),
                expected: false,
            });
        }
    }
    for (address, name, expires) in expired_hosts {
        conditions.push(Condition {
            key: format!("expired {address}"),
            kind: ChangeKind::ExperimentExpired,
            severity: Severity::High,
            subject: address.to_string(),
            message: format!("{address} still answers; experiment {name} ended"),
            evidence: vec![format!(
                "experiment {name} expired {}",
                expires.map_or_else(|| "?".to_owned(), |d| d.to_string())
            )],
            remedy: "tear the experiment down, or give it a new expiry date".to_owned(),
            expected: false,
        });
    }

    let events = match previous {
        Some((before_info, before)) => diff_scan_runs(before_info, before, &run.info, &run.results)
            .into_iter()
            .filter_map(|change| {
                let kind = match change.kind {
                    DiffKind::ServiceChanged | DiffKind::VersionChanged => ChangeKind::ServiceChanged,
                    DiffKind::AuthChanged => ChangeKind::AuthChanged,
                    DiffKind::CertificateChanged => ChangeKind::TlsChanged,
                    // Ports and findings are conditions, judged by the rules.
                    DiffKind::Opened | DiffKind::Closed | DiffKind::FindingAppeared | DiffKind::FindingResolved => return None,
                };
                let place = socket(change.address, change.port);
                let mut alert = AlertChange::new(kind, change.severity, ChangeState::New, place, change.message);
                if kind == ChangeKind::AuthChanged {
                    alert.remedy = "require authentication again (a password, TLS client certificates), or take the service off the network".to_owned();
                }
                Some(alert)
            })
            .collect(),
        None => Vec::new(),
    };
    Observation { conditions, events }
}

fn finding_condition(finding: &Finding, place: &str) -> Condition {
    Condition {
        key: format!("finding {} {}", finding.rule, finding_place(finding, place)),
        kind: ChangeKind::FindingNew,
        severity: finding.severity,
        subject: if finding.subject.is_empty() {
            place.to_owned()
        } else {
            finding.subject.clone()
        },
        message: finding.message.clone(),
        evidence: finding.evidence.clone(),
        remedy: finding.remedy.clone(),
        expected: false,
    }
}

/// The place a finding's key ends with: the scanned address and port when
/// there is one, else the finding's own subject without spaces.
fn finding_place(finding: &Finding, place: &str) -> String {
    if !place.is_empty() {
        return place.to_owned();
    }
    finding.subject.replace(' ', "_")
}

/// The conditions of an audit: every unapproved listener beyond loopback,
/// and every finding at or above the threshold (the audit sees the whole
/// host, so it covers every key it ever made).
pub fn audit_observation(run: &AuditRun, thresholds: Thresholds) -> Observation {
    let mut conditions = Vec::new();
    for listener in &run.unapproved {
        let place = socket(listener.address, listener.port);
        let protocol = listener.protocol.as_str();
        let owner = listener
            .owners
            .iter()
            .filter_map(|owner| run.snapshot.processes.get(&owner.pid))
            .map(|process| {
                format!(
                    "{} (pid {}, {})",
                    process
                        .exe
                        .as_deref()
                        .map_or_else(|| process.comm.clone(), |p| p.display().to_string()),
                    process.pid,
                    process.user_name()
                )
            })
            .next()
            .unwrap_or_else(|| "no process holds it".to_owned());
        conditions.push(Condition {
            key: format!("listener {} {}/{protocol}", listener.netns.name, place),
            kind: ChangeKind::ListenerUnapproved,
            severity: Severity::High,
            subject: format!("{protocol} {place} {owner}"),
            message: format!(
                "{protocol} {place} listens beyond loopback and no approval covers it"
            ),
            evidence: vec![
                format!("netns {}", listener.netns.name),
                format!("held by {owner}"),
            ],
            remedy: "approve it with `perimeter approve` if it should be there, or stop it"
                .to_owned(),
            expected: false,
        });
    }
    for finding in run
        .findings
        .iter()
        .filter(|f| f.severity >= thresholds.min_severity)
    {
        if finding.rule == "listener.unapproved" {
            continue;
        }
        conditions.push(Condition {
            key: format!(
                "finding {} {}",
                finding.rule,
                finding.subject.replace(' ', "_")
            ),
            kind: ChangeKind::FindingNew,
            severity: finding.severity,
            subject: finding.subject.clone(),
            message: finding.message.clone(),
            evidence: finding.evidence.clone(),
            remedy: finding.remedy.clone(),
            expected: false,
        });
    }
    Observation {
        conditions,
        events: Vec::new(),
    }
}

/// The conditions of a verify: its env.* findings, keyed on what they are
/// about.
pub fn verify_observation(findings: &[Finding], thresholds: Thresholds) -> Observation {
    let conditions = findings
        .iter()
        .filter(|f| f.severity >= thresholds.min_severity)
        .map(|finding| Condition {
            key: format!(
                "finding {} {}",
                finding.rule,
                finding.subject.replace(' ', "_")
            ),
            kind: ChangeKind::FindingNew,
            severity: finding.severity,
            subject: finding.subject.clone(),
            message: finding.message.clone(),
            evidence: finding.evidence.clone(),
            remedy: finding.remedy.clone(),
            expected: false,
        })
        .collect();
    Observation {
        conditions,
        events: Vec::new(),
    }
}

/// The suspicious execs of one host told one by one in a run; more are
/// counted in one change.
pub const MAX_EXECS_PER_HOST: usize = 20;

/// The conditions of the fleet: each host's unapproved listeners and its
/// findings at or above the threshold, keyed by the agent (never by its
/// hostname, which may change), and each accepted agent silent for longer
/// than `silent_after`; and, as one-off changes, the suspicious execs the
/// agents told of (at most [`MAX_EXECS_PER_HOST`] a host, then a count).
pub fn fleet_observation(
    run: &crate::runner::FleetRun,
    thresholds: Thresholds,
    silent_after: std::time::Duration,
    now: OffsetDateTime,
) -> Observation {
    let mut conditions = Vec::new();
    let mut events = Vec::new();
    for host in &run.hosts {
        let name = match &host.environment {
            Some(env) => format!("{} ({}, {env})", host.hostname, host.agent_id),
            None => format!("{} ({})", host.hostname, host.agent_id),
        };
        for listener in &host.unapproved {
            conditions.push(Condition {
                key: format!(
                    "fleet {} listener {} {}",
                    host.agent_id,
                    listener.netns,
                    listener.endpoint.replace(' ', "/")
                ),
                kind: ChangeKind::ListenerUnapproved,
                severity: Severity::High,
                subject: format!("{} on {name}", listener.endpoint),
                message: format!(
                    "{} on {name} listens beyond loopback and no approval covers it ({})",
                    listener.endpoint, listener.approval
                ),
                evidence: vec![
                    format!("netns {}", listener.netns),
                    format!("held by {}", listener.owner),
                ],
                remedy: "approve it on the server (`perimeter approve --server`) if it should be there, or stop it".to_owned(),
                expected: false,
            });
        }
        for finding in host
            .findings
            .iter()
            .filter(|f| f.severity >= thresholds.min_severity)
        {
            conditions.push(Condition {
                key: format!(
                    "fleet {} finding {} {}",
                    host.agent_id,
                    finding.rule,
                    finding.subject.replace(' ', "_")
                ),
                kind: ChangeKind::FindingNew,
                severity: finding.severity,
                subject: format!("{} on {name}", finding.subject),
                message: finding.message.clone(),
                evidence: finding.evidence.clone(),
                remedy: finding.remedy.clone(),
                expected: false,
            });
        }
        let told = host.execs.len().min(MAX_EXECS_PER_HOST);
        for exec in &host.execs[..told] {
            let severity = if exec.flags.iter().any(|f| f == "deleted" || f == "memfd") {
                Severity::Critical
            } else {
                Severity::High
            };
            let mut change = AlertChange::new(
                ChangeKind::SuspiciousExec,
                severity,
                ChangeState::New,
                format!("{} on {name}", exec.summary),
                format!(
                    "a suspicious process started on {name}: {} ({})",
                    exec.summary,
                    exec.flags.join(", ")
                ),
            )
            .with_evidence(format!("started {}", exec.at))
            .with_remedy(
                "find who started it and from where (its parent, the user's logins, the service it \
                 came from); an unpackaged or deleted executable running on a server is how miners \
                 and backdoors look",
            );
            for flag in &exec.flags {
                change = change.with_evidence(format!("flag {flag}"));
            }
            events.push(change);
        }
        if host.execs.len() > told {
            events.push(
                AlertChange::new(
                    ChangeKind::SuspiciousExec,
                    Severity::High,
                    ChangeState::New,
                    name.clone(),
                    format!(
                        "{} more suspicious process starts on {name} since the last run",
                        host.execs.len() - told
                    ),
                )
                .with_remedy("see the host's events on the server's Changes page"),
            );
        }
        let silent = host.last_seen.is_none_or(|seen| {
            now - seen > time::Duration::try_from(silent_after).unwrap_or(time::Duration::MAX)
        });
        if silent {
            let since = host
                .last_seen
                .map_or_else(|| "never".to_owned(), |seen| seen.to_string());
            conditions.push(Condition {
                key: format!("fleet {} silent", host.agent_id),
                kind: ChangeKind::FindingNew,
                severity: Severity::Medium,
                subject: name.clone(),
                message: format!(
                    "the agent of {name} has not reported for longer than {} (last report: {since})",
                    humantime::format_duration(silent_after)
                ),
                evidence: vec![format!("last report {since}")],
                remedy: "check the host and its perimeter-agent service; revoke the agent if the host is gone".to_owned(),
                expected: false,
            });
        }
    }
    Observation { conditions, events }
}

/// The current time's date in UTC, for expiry questions.
pub fn today(now: OffsetDateTime) -> Date {
    now.date()
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::runner::{FleetExec, FleetHost, FleetListener, FleetRun};

    fn exec(summary: &str, flags: &[&str]) -> FleetExec {
        FleetExec {
            at: datetime!(2026-12-02 10:00 UTC),
            summary: summary.to_owned(),
            flags: flags.iter().map(|f| (*f).to_owned()).collect(),
        }
    }

    fn host(execs: Vec<FleetExec>) -> FleetHost {
        FleetHost {
            agent_id: "ag_1".into(),
            hostname: "web-1".into(),
            environment: Some("prod".into()),
            last_seen: Some(datetime!(2026-12-02 10:00 UTC)),
            unapproved: vec![FleetListener {
                netns: "host".into(),
                endpoint: "tcp 0.0.0.0:6379".into(),
                owner: "/opt/redis/redis-server (pid 42, root)".into(),
                approval: "unapproved".into(),
            }],
            findings: Vec::new(),
            execs,
        }
    }

    fn observe(hosts: Vec<FleetHost>) -> Observation {
        fleet_observation(
            &FleetRun { hosts },
            Thresholds {
                min_severity: Severity::Medium,
                tls_expiry_days: 14,
            },
            std::time::Duration::from_secs(1800),
            datetime!(2026-12-02 10:05 UTC),
        )
    }

    #[test]
    fn suspicious_execs_are_one_off_changes_worst_for_deleted_and_memfd() {
        let observation = observe(vec![host(vec![
            exec(
                "pid 7 /tmp/xmrig as www-data",
                &["unpackaged", "world-writable"],
            ),
            exec("pid 8 memfd:x (deleted) as root", &["memfd", "deleted"]),
        ])]);
        assert_eq!(observation.conditions.len(), 1, "the unapproved listener");
        assert_eq!(
            observation.conditions[0].kind,
            ChangeKind::ListenerUnapproved
        );
        let execs: Vec<(&str, Severity)> = observation
            .events
            .iter()
            .map(|c| (c.subject.as_str(), c.severity))
            .collect();
        assert_eq!(
            execs,
            [
                (
                    "pid 7 /tmp/xmrig as www-data on web-1 (ag_1, prod)",
                    Severity::High
                ),
                (
                    "pid 8 memfd:x (deleted) as root on web-1 (ag_1, prod)",
                    Severity::Critical
                ),
            ]
        );
        let first = &observation.events[0];
        assert_eq!(first.kind, ChangeKind::SuspiciousExec);
        assert_eq!(first.state, ChangeState::New);
        assert!(first.message.contains("unpackaged, world-writable"));
        assert!(first.evidence.iter().any(|e| e == "flag world-writable"));
        assert!(!first.remedy.is_empty());
    }

    #[test]
    fn a_flood_of_execs_is_told_up_to_the_cap_then_counted() {
        let many = (0..MAX_EXECS_PER_HOST + 5)
            .map(|n| exec(&format!("pid {n} /tmp/x as nobody"), &["unpackaged"]))
            .collect();
        let observation = observe(vec![host(many)]);
        assert_eq!(observation.events.len(), MAX_EXECS_PER_HOST + 1);
        let last = observation.events.last().expect("the count");
        assert!(
            last.message.starts_with("5 more suspicious process starts"),
            "{}",
            last.message
        );
    }
}
