//! What changed between two scans, port by port, and how much each change
//! matters: the policy that decides which differences an operator is alerted on.
//!
//! Presence: only open ports count as present. Closed and filtered are both
//! "not open", and a port with no result at all is "not open" too, so callers
//! may store only the open ports. A move between closed and filtered is not a
//! change. The exception is an interrupted scan: a port it has no result for
//! was not reached, and [`diff_scan_runs`] leaves it out.
//!
//! The kinds of change, and the severity policy:
//!
//! | kind                 | when                                                        | severity |
//! |----------------------|-------------------------------------------------------------|----------|
//! | `Opened`             | not open before, open now                                   | medium, raised to the worst finding on the port, and to high if the service answers without authentication |
//! | `Closed`             | open before, not open now                                   | low |
//! | `ServiceChanged`     | both identified, under different service names              | medium |
//! | `VersionChanged`     | same service, product or version known on both sides and different | low |
//! | `CertificateChanged` | both presented certificates with different subject, issuer or expiry | low |
//! | `AuthChanged`        | the service answers without authentication where it did not (required or unknown) before | high |
//! |                      | the service requires authentication where it answered without before | info |
//! | `FindingAppeared`    | a rule fires on a port that was open before and it did not fire then | the finding's |
//! | `FindingResolved`    | a rule that fired on a port no longer fires there             | info |
//!
//! What is deliberately not a change, to keep alerts about the network rather
//! than about the probes: a service, product or version that one side did not
//! identify (service detection may not have run, or the service said less this
//! time); an authentication state that became unknown; findings of a port whose
//! service the later scan did not identify (their absence says nothing). The
//! findings of a newly opened port are folded into its `Opened` change, and a
//! closed port's findings go with it. Findings are compared by rule id per port;
//! a rule whose severity changed is not reported.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use perimeter_model::{AuthState, Finding, PortResult, PortState, Protocol, ScanInfo, Severity};
use time::OffsetDateTime;

use crate::coverage::Coverage;
use crate::target_key::TargetKey;

/// The kinds of change between two scans, in the order changes to one port are
/// listed. See the module documentation for when each applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeKind {
    Opened,
    Closed,
    ServiceChanged,
    VersionChanged,
    CertificateChanged,
    AuthChanged,
    FindingAppeared,
    FindingResolved,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Opened => "opened",
            ChangeKind::Closed => "closed",
            ChangeKind::ServiceChanged => "service-changed",
            ChangeKind::VersionChanged => "version-changed",
            ChangeKind::CertificateChanged => "certificate-changed",
            ChangeKind::AuthChanged => "auth-changed",
            ChangeKind::FindingAppeared => "finding-appeared",
            ChangeKind::FindingResolved => "finding-resolved",
        }
    }
}

/// What one side of a change looked like on the port, in brief.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSummary {
    pub state: PortState,
    pub service: Option<String>,
    pub product: Option<String>,
    pub version: Option<String>,
    /// `Unknown` when no service was identified.
    pub auth: AuthState,
    pub tls_subject: Option<String>,
    pub tls_not_after: Option<OffsetDateTime>,
    /// Rule ids that fired on the port with their worst severity, by rule id.
    pub findings: Vec<(String, Severity)>,
}

impl PortSummary {
    pub fn of(result: &PortResult) -> PortSummary {
        let service = result.service.as_ref();
        let tls = service.and_then(|service| service.tls.as_ref());
        PortSummary {
            state: result.state,
            service: service.map(|service| service.name.clone()),
            product: service.and_then(|service| service.product.clone()),
            version: service.and_then(|service| service.version.clone()),
            auth: auth_of(result),
            tls_subject: tls.map(|tls| tls.subject.clone()),
            tls_not_after: tls.and_then(|tls| tls.not_after),
            findings: worst_by_rule(&result.findings)
                .into_iter()
                .map(|(rule, finding)| (rule.to_owned(), finding.severity))
                .collect(),
        }
    }
}

/// One change on one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    /// The port in the earlier scan; `None` when it had no result there.
    pub before: Option<PortSummary>,
    /// The port in the later scan; `None` when it had no result there.
    pub after: Option<PortSummary>,
    pub severity: Severity,
    /// The rule, for `FindingAppeared` and `FindingResolved`.
    pub rule: Option<String>,
    /// One line for a human: `tcp 198.18.0.7:6379 now answers without authentication (redis)`.
    pub message: String,
}

/// The changes from `before` to `after`, assuming both scans covered the same
/// addresses and ports. Ordered by address, port, protocol and then kind, so
/// the result does not depend on the order of either input.
pub fn diff_scans(before: &[PortResult], after: &[PortResult]) -> Vec<Change> {
    diff_scans_within(before, after, |_, _| true)
}

/// The changes from `before` to `after` on the (address, port) pairs for which
/// `scanned_in_both` holds: an address only one of the scans covered is not
/// "closed" in the other, it was not looked at.
pub fn diff_scans_within(
    before: &[PortResult],
    after: &[PortResult],
    scanned_in_both: impl Fn(IpAddr, u16) -> bool,
) -> Vec<Change> {
    let before = index(before);
    let after = index(after);
    let keys: BTreeSet<PortKey> = before.keys().chain(after.keys()).copied().collect();
    let mut changes = Vec::new();
    for key in keys {
        if scanned_in_both(key.address, key.port) {
            diff_port(
                key,
                before.get(&key).copied(),
                after.get(&key).copied(),
                &mut changes,
            );
        }
    }
    changes
}

/// The changes between two stored scans, limited to what both covered as far
/// as can be told:
/// - addresses: where both scans' targets are in a syntax [`Coverage`] reads,
///   their intersection; else, if both named the same targets and excludes, all
///   of them; else only addresses with at least one result in each scan (which
///   cannot see a host all of whose ports opened or closed);
/// - ports: if both used the same port spec, all; else where [`Coverage`] reads
///   both specs, their intersection; else only ports with a result in each scan;
/// - an incomplete (interrupted) scan covered only the pairs it has a result
///   for: a port it never reached is neither closed nor opened there.
pub fn diff_scan_runs(
    before_info: &ScanInfo,
    before: &[PortResult],
    after_info: &ScanInfo,
    after: &[PortResult],
) -> Vec<Change> {
    let before_coverage = Coverage::of(before_info);
    let after_coverage = Coverage::of(after_info);
    let same_targets = TargetKey::new(&before_info.targets, &before_info.excluded, "")
        == TargetKey::new(&after_info.targets, &after_info.excluded, "");
    let same_ports = TargetKey::new(&[] as &[&str], &[] as &[&str], &before_info.ports)
        == TargetKey::new(&[] as &[&str], &[] as &[&str], &after_info.ports);
    let addresses_in = |results: &[PortResult]| -> BTreeSet<IpAddr> {
        results.iter().map(|r| r.address).collect()
    };
    let ports_in =
        |results: &[PortResult]| -> BTreeSet<u16> { results.iter().map(|r| r.port).collect() };
    let common_addresses: BTreeSet<IpAddr> = addresses_in(before)
        .intersection(&addresses_in(after))
        .copied()
        .collect();
    let common_ports: BTreeSet<u16> = ports_in(before)
        .intersection(&ports_in(after))
        .copied()
        .collect();

    let address_in_both = |address: IpAddr| match (
        before_coverage.covers_address(address),
        after_coverage.covers_address(address),
    ) {
        (Some(in_before), Some(in_after)) => in_before && in_after,
        _ if same_targets => true,
        _ => common_addresses.contains(&address),
    };
    let port_in_both = |port: u16| {
        if same_ports {
            return true;
        }
        match (
            before_coverage.covers_port(port),
            after_coverage.covers_port(port),
        ) {
            (Some(in_before), Some(in_after)) => in_before && in_after,
            _ => common_ports.contains(&port),
        }
    };
    // What an interrupted scan reached is what it stored; a complete scan
    // reached everything it covered (and may have stored only open ports).
    let reached = |info: &ScanInfo, results: &[PortResult]| -> Option<BTreeSet<(IpAddr, u16)>> {
        (!info.complete).then(|| results.iter().map(|r| (r.address, r.port)).collect())
    };
    let (reached_before, reached_after) =
        (reached(before_info, before), reached(after_info, after));
    let reached_in_both = |address: IpAddr, port: u16| {
        [&reached_before, &reached_after]
            .into_iter()
            .all(|reached| {
                reached
                    .as_ref()
                    .is_none_or(|set| set.contains(&(address, port)))
            })
    };
    diff_scans_within(before, after, |address, port| {
        address_in_both(address) && port_in_both(port) && reached_in_both(address, port)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct PortKey {
    address: IpAddr,
    port: u16,
    protocol: Protocol,
}

/// The results by port. A scan should decide each port once; if a list holds
/// the same port twice, the open result wins, and between equals the one whose
/// debug text sorts first, so that the choice never depends on input order.
fn index(results: &[PortResult]) -> BTreeMap<PortKey, &PortResult> {
    let mut by_port: BTreeMap<PortKey, &PortResult> = BTreeMap::new();
    for result in results {
        let key = PortKey {
            address: result.address,
            port: result.port,
            protocol: result.protocol,
        };
        by_port
            .entry(key)
            .and_modify(|kept| {
                let rank = |r: &PortResult| r.state != PortState::Open;
                let replace = match rank(result).cmp(&rank(kept)) {
                    std::cmp::Ordering::Less => true,
                    std::cmp::Ordering::Greater => false,
                    std::cmp::Ordering::Equal => format!("{result:?}") < format!("{kept:?}"),
                };
                if replace {
                    *kept = result;
                }
            })
            .or_insert(result);
    }
    by_port
}

fn diff_port(
    key: PortKey,
    before: Option<&PortResult>,
    after: Option<&PortResult>,
    changes: &mut Vec<Change>,
) {
    let is_open = |result: Option<&PortResult>| result.is_some_and(|r| r.state == PortState::Open);
    let endpoint = endpoint(key);
    let change = |kind, severity, rule: Option<&str>, message: String| Change {
        kind,
        address: key.address,
        port: key.port,
        protocol: key.protocol,
        before: before.map(PortSummary::of),
        after: after.map(PortSummary::of),
        severity,
        rule: rule.map(str::to_owned),
        message,
    };

    match (before, after) {
        (before, Some(after)) if !is_open(before) && is_open(Some(after)) => {
            changes.push(opened(&endpoint, after, change));
        }
        (Some(before), after) if is_open(Some(before)) && !is_open(after) => {
            let now = match after {
                Some(after) => format!("now {}", after.state),
                None => "no result this time".to_owned(),
            };
            let what = before
                .service
                .as_ref()
                .map(describe_service)
                .unwrap_or_default();
            let message = format!(
                "{endpoint} is no longer open ({now}){}",
                parenthesised(&what)
            );
            changes.push(change(ChangeKind::Closed, Severity::Low, None, message));
        }
        (Some(before), Some(after)) if is_open(Some(before)) && is_open(Some(after)) => {
            still_open(&endpoint, before, after, change, changes);
        }
        _ => {}
    }
}

fn opened(
    endpoint: &str,
    after: &PortResult,
    change: impl Fn(ChangeKind, Severity, Option<&str>, String) -> Change,
) -> Change {
    let mut severity = Severity::Medium;
    let mut details = Vec::new();
    if let Some(service) = &after.service {
        details.push(describe_service(service));
    }
    if auth_of(after) == AuthState::None {
        severity = severity.max(Severity::High);
        details.push("answers without authentication".to_owned());
    }
    let worst = worst_by_rule(&after.findings);
    if let Some(worst_severity) = worst.values().map(|finding| finding.severity).max() {
        severity = severity.max(worst_severity);
        let rules: Vec<&str> = worst.keys().copied().collect();
        details.push(format!("findings: {}", rules.join(", ")));
    }
    let message = format!("{endpoint} opened{}", parenthesised(&details.join("; ")));
    change(ChangeKind::Opened, severity, None, message)
}

fn still_open(
    endpoint: &str,
    before: &PortResult,
    after: &PortResult,
    change: impl Fn(ChangeKind, Severity, Option<&str>, String) -> Change,
    changes: &mut Vec<Change>,
) {
    if let (Some(old), Some(new)) = (&before.service, &after.service) {
        if old.name != new.name {
            let message = format!(
                "{endpoint} now answers as {} (was {})",
                describe_service(new),
                describe_service(old)
            );
            changes.push(change(
                ChangeKind::ServiceChanged,
                Severity::Medium,
                None,
                message,
            ));
        } else if differs_when_both_known(&old.product, &new.product)
            || differs_when_both_known(&old.version, &new.version)
        {
            let message = format!(
                "{endpoint} {} changed from {} to {}",
                old.name,
                product_version(old).unwrap_or_else(|| "unknown".to_owned()),
                product_version(new).unwrap_or_else(|| "unknown".to_owned())
            );
            changes.push(change(
                ChangeKind::VersionChanged,
                Severity::Low,
                None,
                message,
            ));
        }
        if let (Some(old_tls), Some(new_tls)) = (&old.tls, &new.tls)
            && (&old_tls.subject, &old_tls.issuer, old_tls.not_after)
                != (&new_tls.subject, &new_tls.issuer, new_tls.not_after)
        {
            let message = format!(
                "{endpoint} presents a different certificate: {} (was {})",
                describe_certificate(new_tls),
                describe_certificate(old_tls)
            );
            changes.push(change(
                ChangeKind::CertificateChanged,
                Severity::Low,
                None,
                message,
            ));
        }
    }

    let (old_auth, new_auth) = (auth_of(before), auth_of(after));
    let what = after
        .service
        .as_ref()
        .map(describe_service)
        .unwrap_or_default();
    if new_auth == AuthState::None && old_auth != AuthState::None {
        let message = format!(
            "{endpoint} now answers without authentication (was {}){}",
            old_auth.as_str(),
            parenthesised(&what)
        );
        changes.push(change(
            ChangeKind::AuthChanged,
            Severity::High,
            None,
            message,
        ));
    } else if old_auth == AuthState::None && new_auth == AuthState::Required {
        let message = format!(
            "{endpoint} now requires authentication{}",
            parenthesised(&what)
        );
        changes.push(change(
            ChangeKind::AuthChanged,
            Severity::Info,
            None,
            message,
        ));
    }

    let old_findings = worst_by_rule(&before.findings);
    let new_findings = worst_by_rule(&after.findings);
    for (rule, finding) in &new_findings {
        if !old_findings.contains_key(rule) {
            let message = format!(
                "{endpoint}: new finding {rule} ({}): {}",
                finding.severity, finding.message
            );
            changes.push(change(
                ChangeKind::FindingAppeared,
                finding.severity,
                Some(rule),
                message,
            ));
        }
    }
    let service_unseen_now = after.service.is_none() && before.service.is_some();
    if !service_unseen_now {
        for (rule, finding) in &old_findings {
            if !new_findings.contains_key(rule) {
                let message = format!(
                    "{endpoint}: finding {rule} resolved (was: {})",
                    finding.message
                );
                changes.push(change(
                    ChangeKind::FindingResolved,
                    Severity::Info,
                    Some(rule),
                    message,
                ));
            }
        }
    }
}

/// The port's authentication state; a port with no identified service is
/// `Unknown`.
fn auth_of(result: &PortResult) -> AuthState {
    result
        .service
        .as_ref()
        .map_or(AuthState::Unknown, |service| service.auth)
}

/// Each rule that fired, with its worst finding (the first of equals).
fn worst_by_rule(findings: &[Finding]) -> BTreeMap<&str, &Finding> {
    let mut worst: BTreeMap<&str, &Finding> = BTreeMap::new();
    for finding in findings {
        worst
            .entry(finding.rule.as_str())
            .and_modify(|kept| {
                if finding.severity > kept.severity {
                    *kept = finding;
                }
            })
            .or_insert(finding);
    }
    worst
}

fn differs_when_both_known(old: &Option<String>, new: &Option<String>) -> bool {
    matches!((old, new), (Some(old), Some(new)) if old != new)
}

fn endpoint(key: PortKey) -> String {
    match key.address {
        IpAddr::V4(v4) => format!("{} {}:{}", key.protocol, v4, key.port),
        IpAddr::V6(v6) => format!("{} [{}]:{}", key.protocol, v6, key.port),
    }
}

/// `redis`, `ssh (OpenSSH 9.2p1)`.
fn describe_service(service: &perimeter_model::ServiceInfo) -> String {
    match product_version(service) {
        Some(product_version) => format!("{} ({product_version})", service.name),
        None => service.name.clone(),
    }
}

/// `OpenSSH 9.2p1`, `OpenSSH`, `9.2p1`; `None` when neither is known.
fn product_version(service: &perimeter_model::ServiceInfo) -> Option<String> {
    match (&service.product, &service.version) {
        (Some(product), Some(version)) => Some(format!("{product} {version}")),
        (Some(product), None) => Some(product.clone()),
        (None, Some(version)) => Some(version.clone()),
        (None, None) => None,
    }
}

fn describe_certificate(tls: &perimeter_model::TlsInfo) -> String {
    let mut text = format!("subject {}, issuer {}", tls.subject, tls.issuer);
    if let Some(not_after) = tls.not_after {
        text.push_str(&format!(", expires {}", not_after.date()));
    }
    text
}

/// ` (text)`, or nothing for empty text.
fn parenthesised(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(" ({text})")
    }
}

#[cfg(test)]
mod tests;
