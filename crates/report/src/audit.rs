//! The audit report: `perimeter.audit/1` JSON and the human table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use comfy_table::Color;
use perimeter_model::{
    Finding, FirewallVerdict, HostSnapshot, Listener, Ownership, Process, Severity,
};
use serde::Serialize;
use time::OffsetDateTime;

use crate::json::{FindingJson, ProblemJson, severity_counts, severity_str};
use crate::style::Style;
use crate::time_fmt::rfc3339;

/// The schema string of the audit document.
pub const SCHEMA: &str = "perimeter.audit/1";

/// Whether a listener is covered by the approvals file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalStatus {
    /// Loopback listeners need no approval.
    NotNeeded,
    /// Approved by the entry described.
    Approved(String),
    /// Only an expired entry matches.
    Expired(String),
    Unapproved,
}

impl ApprovalStatus {
    /// The status as documents write it: `approved`, `expired`, `unapproved`
    /// or `not-needed` (loopback).
    pub fn as_str(&self) -> &'static str {
        match self {
            ApprovalStatus::NotNeeded => "not-needed",
            ApprovalStatus::Approved(_) => "approved",
            ApprovalStatus::Expired(_) => "expired",
            ApprovalStatus::Unapproved => "unapproved",
        }
    }

    /// The entry that approved (or only an expired one), as text.
    pub fn entry(&self) -> Option<&str> {
        match self {
            ApprovalStatus::Approved(entry) | ApprovalStatus::Expired(entry) => Some(entry),
            ApprovalStatus::NotNeeded | ApprovalStatus::Unapproved => None,
        }
    }

    /// Whether a person still has to decide: unapproved, or approved only by
    /// an expired entry.
    pub fn needs_decision(&self) -> bool {
        matches!(
            self,
            ApprovalStatus::Unapproved | ApprovalStatus::Expired(_)
        )
    }
}

/// Everything the audit report shows.
#[derive(Debug)]
pub struct AuditView<'a> {
    pub snapshot: &'a HostSnapshot,
    /// Worst first.
    pub findings: &'a [Finding],
    /// One per listener, same order as `snapshot.listeners`.
    pub approvals: &'a [ApprovalStatus],
    pub approvals_file: Option<&'a Path>,
    pub taken_at: OffsetDateTime,
    /// `netlink` or `/proc/net`.
    pub socket_source: &'a str,
    pub perimeter_version: &'a str,
    /// What changed since the previous stored audit of this host, if there is one.
    pub since: Option<&'a Since>,
}

/// Changes since an earlier audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    pub audit_id: i64,
    pub taken_at: OffsetDateTime,
    pub changes: Vec<ChangeLine>,
}

/// One change, as output shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangeLine {
    /// `listener-appeared`, `listener-disappeared`, `finding-appeared`, `finding-resolved`.
    pub kind: String,
    #[serde(serialize_with = "severity_str")]
    pub severity: Severity,
    pub subject: String,
    pub message: String,
}

#[derive(Debug, Serialize)]
struct Document<'a> {
    schema: &'static str,
    host: HostJson<'a>,
    listeners: Vec<ListenerJson>,
    findings: Vec<FindingJson<'a>>,
    problems: Vec<ProblemJson<'a>>,
    summary: SummaryJson,
    /// Changes since the previous stored audit of this host; absent when there
    /// is none (first audit, or `--no-store`).
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<SinceJson<'a>>,
}

#[derive(Debug, Serialize)]
struct SinceJson<'a> {
    audit_id: i64,
    taken_at: String,
    changes: &'a [ChangeLine],
}

#[derive(Debug, Serialize)]
struct HostJson<'a> {
    hostname: &'a str,
    taken_at: String,
    perimeter_version: &'a str,
    socket_source: &'a str,
    approvals_file: Option<String>,
    namespaces: Vec<NamespaceJson<'a>>,
}

#[derive(Debug, Serialize)]
struct NamespaceJson<'a> {
    name: &'a str,
    inode: u64,
    interfaces: Vec<InterfaceJson<'a>>,
    firewall: FirewallJson<'a>,
}

#[derive(Debug, Serialize)]
struct InterfaceJson<'a> {
    name: &'a str,
    address: String,
    prefix_len: u8,
}

#[derive(Debug, Serialize)]
struct FirewallJson<'a> {
    /// `default-deny`, `open` or `unknown`.
    verdict: &'static str,
    evidence: Vec<&'a str>,
}

#[derive(Debug, Serialize)]
struct ListenerJson {
    protocol: &'static str,
    address: String,
    port: u16,
    scope: &'static str,
    /// Whether IPv4 clients reach it (true for `[::]` without IPV6_V6ONLY).
    accepts_ipv4: bool,
    v6only: Option<bool>,
    interface: Option<String>,
    netns: String,
    inode: u64,
    pids: Vec<u32>,
    process: Option<String>,
    user: Option<String>,
    uid: Option<u32>,
    exe: Option<String>,
    exe_deleted: bool,
    /// The owning package, `null` when unpackaged or unknown (see `ownership`).
    package: Option<String>,
    /// `package`, `unpackaged`, `unknown` or `unattributed` (no process seen).
    ownership: &'static str,
    cmdline: Option<String>,
    unit: Option<String>,
    container: Option<String>,
    /// The container behind the listener, from the runtime's state: the
    /// one its process runs in, or the one Docker's proxy forwards the
    /// host's port to (`via`).
    #[serde(skip_serializing_if = "Option::is_none")]
    container_ref: Option<ContainerJson>,
    /// For a port nothing on the host listens on that a DNAT in nat
    /// prerouting forwards (a container's published port without a userland
    /// proxy, a Kubernetes hostPort, a port forwarded to a VM): where it
    /// goes. Absent for a socket a process holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    published: Option<PublishedJson>,
    approval: ApprovalJson,
    /// Who the namespace's firewall lets through to this listener (beyond
    /// loopback only; absent when the ruleset could not be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    reachable_from: Option<ReachJson>,
}

#[derive(Debug, Serialize)]
struct ContainerJson {
    runtime: String,
    id: String,
    name: String,
    image: String,
    image_id: String,
    /// The image manifest's digest, where the runtime's state records it
    /// (Podman's `images.json`, containerd's metadata database); absent
    /// otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    image_digest: Option<String>,
    /// containerd's namespace (`k8s.io` for Kubernetes'); absent for the
    /// runtimes without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    /// The Kubernetes pod, for a container the CRI made; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pod: Option<PodJson>,
    /// `process`, `docker-proxy`, `daemon` (dockerd holding the port for
    /// the container without a userland proxy), or `conmon` (Podman's
    /// monitor holding the port it reserved for the container).
    via: &'static str,
}

#[derive(Debug, Serialize)]
struct PublishedJson {
    /// Where the DNAT sends it (`198.18.5.2:22`).
    to: String,
    /// The chain holding the DNAT rule, and the rule.
    chain: String,
    rule: String,
}

#[derive(Debug, Serialize)]
struct PodJson {
    name: String,
    namespace: String,
    /// The container's name in the pod; absent for the pod's sandbox.
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<String>,
    sandbox: bool,
}

#[derive(Debug, Serialize)]
struct ReachJson {
    /// Source prefixes accepted.
    allowed: Vec<String>,
    /// Source prefixes whose fate perimeter cannot decide, with why.
    unknown: Vec<UnknownJson>,
    /// Accept rules with no source restriction that let sources in.
    unrestricted_accepts: Vec<String>,
}

#[derive(Debug, Serialize)]
struct UnknownJson {
    sources: String,
    reason: String,
}

#[derive(Debug, Serialize)]
struct ApprovalJson {
    /// `approved`, `expired`, `unapproved` or `not-needed` (loopback).
    status: &'static str,
    entry: Option<String>,
}

#[derive(Debug, Serialize)]
struct SummaryJson {
    listeners: usize,
    exposed: usize,
    unapproved: usize,
    findings: BTreeMap<&'static str, usize>,
    problems: usize,
}

/// Command-line words that carry a secret in the next word (or after `=`).
const SECRET_FLAGS: &[&str] = &["pass", "secret", "token", "auth", "key", "credential"];

/// The command line with the values of password-like options replaced, so a
/// `redis-server --requirepass hunter2` never leaks through a report.
pub fn redacted_cmdline(cmdline: &[String]) -> String {
    let is_secret_flag = |word: &str| {
        let lower = word.to_ascii_lowercase();
        lower.starts_with('-') && SECRET_FLAGS.iter().any(|s| lower.contains(s))
    };
    let mut out = Vec::with_capacity(cmdline.len());
    let mut hide_next = false;
    for word in cmdline {
        if hide_next {
            out.push("***".to_owned());
            hide_next = false;
            continue;
        }
        if let Some((flag, _)) = word.split_once('=')
            && is_secret_flag(flag)
        {
            out.push(format!("{flag}=***"));
            continue;
        }
        hide_next = is_secret_flag(word);
        out.push(word.clone());
    }
    out.join(" ")
}

fn ownership_label(listener: &Listener, owner: Option<&Process>) -> &'static str {
    match owner.map(|p| &p.ownership) {
        _ if listener.owners.is_empty() => "unattributed",
        Some(Ownership::Package(_)) => "package",
        Some(Ownership::Unpackaged) => "unpackaged",
        Some(Ownership::Unknown(_)) | Some(Ownership::NotChecked) | None => "unknown",
    }
}

fn listener_json(
    snapshot: &HostSnapshot,
    listener: &Listener,
    approval: &ApprovalStatus,
) -> ListenerJson {
    let owner = snapshot.main_owner(listener);
    ListenerJson {
        protocol: listener.protocol.as_str(),
        address: listener.address.to_string(),
        port: listener.port,
        scope: listener.scope.as_str(),
        accepts_ipv4: listener.accepts_ipv4(),
        v6only: listener.v6only,
        interface: listener.interface.clone(),
        netns: listener.netns.name.clone(),
        inode: listener.inode,
        pids: listener.pids(),
        process: owner.map(Process::name),
        user: owner.map(Process::user_name),
        uid: owner.map(|p| p.uid),
        exe: owner.and_then(|p| p.exe.as_ref().map(|e| e.display().to_string())),
        exe_deleted: owner.is_some_and(|p| p.exe_deleted),
        package: owner.and_then(|p| p.ownership.package().map(ToString::to_string)),
        ownership: ownership_label(listener, owner),
        cmdline: owner.map(|p| redacted_cmdline(&p.cmdline)),
        unit: owner.and_then(|p| p.unit.clone()),
        container: owner.and_then(|p| p.container.clone()),
        container_ref: snapshot
            .container_of(listener)
            .map(|(container, via)| ContainerJson {
                runtime: container.runtime.clone(),
                id: container.id.clone(),
                name: container.name.clone(),
                image: container.image.clone(),
                image_id: container.image_id.clone(),
                image_digest: container.image_digest.clone(),
                namespace: container.namespace.clone(),
                pod: container.pod.as_ref().map(|pod| PodJson {
                    name: pod.name.clone(),
                    namespace: pod.namespace.clone(),
                    container: pod.container.clone(),
                    sandbox: pod.sandbox,
                }),
                via: via.as_str(),
            }),
        published: snapshot.published_port(listener).map(|port| {
            let path = port.reach.published.first();
            PublishedJson {
                to: port.to.clone(),
                chain: path.map(|p| p.chain.clone()).unwrap_or_default(),
                rule: path.map(|p| p.rule.clone()).unwrap_or_default(),
            }
        }),
        approval: ApprovalJson {
            status: approval.as_str(),
            entry: approval.entry().map(str::to_owned),
        },
        reachable_from: snapshot.reach_of(listener).map(|reach| ReachJson {
            allowed: reach.allowed.iter().map(ToString::to_string).collect(),
            unknown: reach
                .unknown
                .iter()
                .map(|(net, why)| UnknownJson {
                    sources: net.to_string(),
                    reason: why.clone(),
                })
                .collect(),
            unrestricted_accepts: reach.unrestricted_accepts.clone(),
        }),
    }
}

/// The `perimeter.audit/1` document as a JSON value.
pub fn to_json(view: &AuditView<'_>) -> serde_json::Value {
    serde_json::to_value(document(view)).unwrap_or(serde_json::Value::Null)
}

/// Write the `perimeter.audit/1` document, pretty-printed, straight from the
/// serde structs: no intermediate `Value` tree, which on a host with thousands
/// of listeners is most of the audit's memory and a third of its time.
pub fn write_json(view: &AuditView<'_>, out: impl std::io::Write) -> serde_json::Result<()> {
    serde_json::to_writer_pretty(out, &document(view))
}

fn document<'a>(view: &'a AuditView<'a>) -> Document<'a> {
    let snapshot = view.snapshot;
    let listeners: Vec<ListenerJson> = snapshot
        .listeners
        .iter()
        .enumerate()
        .map(|(idx, listener)| {
            let approval = view
                .approvals
                .get(idx)
                .cloned()
                .unwrap_or(ApprovalStatus::Unapproved);
            listener_json(snapshot, listener, &approval)
        })
        .collect();
    Document {
        schema: SCHEMA,
        host: HostJson {
            hostname: &snapshot.hostname,
            taken_at: rfc3339(view.taken_at),
            perimeter_version: view.perimeter_version,
            socket_source: view.socket_source,
            approvals_file: view.approvals_file.map(|p| p.display().to_string()),
            namespaces: snapshot
                .namespaces
                .iter()
                .map(|ns| NamespaceJson {
                    name: &ns.netns.name,
                    inode: ns.netns.inode,
                    interfaces: ns
                        .interfaces
                        .iter()
                        .map(|i| InterfaceJson {
                            name: &i.name,
                            address: i.address.to_string(),
                            prefix_len: i.prefix_len,
                        })
                        .collect(),
                    firewall: match &ns.firewall {
                        FirewallVerdict::DefaultDeny { evidence } => FirewallJson {
                            verdict: "default-deny",
                            evidence: evidence.iter().map(String::as_str).collect(),
                        },
                        FirewallVerdict::Open { evidence } => FirewallJson {
                            verdict: "open",
                            evidence: evidence.iter().map(String::as_str).collect(),
                        },
                        FirewallVerdict::Unknown(reason) => FirewallJson {
                            verdict: "unknown",
                            evidence: vec![reason.as_str()],
                        },
                    },
                })
                .collect(),
        },
        summary: SummaryJson {
            listeners: snapshot.listeners.len(),
            exposed: snapshot
                .listeners
                .iter()
                .filter(|l| l.scope.is_exposed())
                .count(),
            unapproved: view.approvals.iter().filter(|a| a.needs_decision()).count(),
            findings: severity_counts(view.findings),
            problems: snapshot.problems.len(),
        },
        since: view.since.map(|since| SinceJson {
            audit_id: since.audit_id,
            taken_at: rfc3339(since.taken_at),
            changes: &since.changes,
        }),
        listeners,
        findings: view.findings.iter().map(FindingJson::from).collect(),
        problems: snapshot.problems.iter().map(ProblemJson::from).collect(),
    }
}

/// The human report: a header line, the listener table (beyond-loopback first),
/// the findings worst first, and the problems.
pub fn to_human(view: &AuditView<'_>, style: Style) -> String {
    let snapshot = view.snapshot;
    let mut out = String::new();
    let n_exposed = snapshot
        .listeners
        .iter()
        .filter(|l| l.scope.is_exposed())
        .count();
    let _ = writeln!(
        out,
        "{} {} at {}: {}, {} beyond loopback (sockets from {})",
        style.bold("perimeter audit of"),
        style.bold(&snapshot.hostname),
        rfc3339(view.taken_at),
        crate::count(snapshot.listeners.len(), "listener"),
        n_exposed,
        view.socket_source,
    );
    let _ = writeln!(out);

    let mut order: Vec<usize> = (0..snapshot.listeners.len()).collect();
    order.sort_by(|&a, &b| {
        let (la, lb) = (&snapshot.listeners[a], &snapshot.listeners[b]);
        lb.scope
            .cmp(&la.scope)
            .then(la.port.cmp(&lb.port))
            .then(la.protocol.cmp(&lb.protocol))
            .then(la.address.cmp(&lb.address))
    });
    let show_netns = snapshot.listeners.iter().any(|l| l.netns.name != "host");
    let mut table = style.table();
    let mut header = vec![
        "SCOPE", "PROTO", "ADDRESS", "PORT", "PROCESS", "USER", "PACKAGE", "APPROVED",
    ];
    if show_netns {
        header.insert(0, "NETNS");
    }
    table.set_header(header.into_iter().map(|h| style.cell(h, None)));
    for idx in order {
        let listener = &snapshot.listeners[idx];
        let owner = snapshot.main_owner(listener);
        let exposed = listener.scope.is_exposed();
        let dim = if exposed { None } else { Some(Color::DarkGrey) };
        let process = match owner {
            Some(p) => {
                let n = listener.pids().len();
                let mut label = format!("{} ({})", p.name(), p.pid);
                if n > 1 {
                    let _ = write!(label, " +{}", n - 1);
                }
                if p.exe_deleted {
                    label.push_str(" DELETED");
                }
                label
            }
            None => match snapshot.published_port(listener) {
                // No process: the kernel's DNAT answers.
                Some(port) => crate::alert::one_line(&format!("DNAT to {}", port.to)),
                None => "?".to_owned(),
            },
        };
        let container = snapshot.container_of(listener);
        let (package, package_color) = match (container, owner.map(|p| &p.ownership)) {
            // The container behind it is what a person needs to know: Docker's
            // proxy (or dockerd, or Podman's conmon) is only the runtime's, and
            // inside a container the image is what shipped the binary.
            (
                Some((
                    c,
                    perimeter_model::ContainerVia::Proxy
                    | perimeter_model::ContainerVia::Daemon
                    | perimeter_model::ContainerVia::Monitor
                    | perimeter_model::ContainerVia::Nat,
                )),
                _,
            ) => (
                crate::alert::one_line(&format!("container {} ({})", c.name, c.image)),
                Some(Color::Yellow),
            ),
            // A containerd container with no image (made from a directory,
            // or its metadata database could not be read): name the
            // container and its runtime.
            (Some((c, perimeter_model::ContainerVia::Process)), _) if c.image.is_empty() => (
                crate::alert::one_line(&format!("container {} ({})", c.name, c.runtime)),
                dim,
            ),
            (Some((c, perimeter_model::ContainerVia::Process)), _) => (
                crate::alert::one_line(&format!("image {} ({})", c.image, c.name)),
                dim,
            ),
            (None, Some(Ownership::Package(pkg))) => (pkg.name.clone(), dim),
            (None, Some(Ownership::Unpackaged)) => ("UNPACKAGED".to_owned(), Some(Color::Red)),
            (None, Some(Ownership::Unknown(_)) | Some(Ownership::NotChecked)) => {
                ("?".to_owned(), dim)
            }
            // Forwarded by a DNAT to an address no runtime here names: a
            // VM, another machine.
            (None, None) if snapshot.published_port(listener).is_some() => {
                ("forwarded".to_owned(), Some(Color::Yellow))
            }
            (None, None) => ("?".to_owned(), dim),
        };
        let user = owner.map(Process::user_name).unwrap_or_else(|| {
            // Nobody: no process holds a forwarded port.
            if snapshot.published_port(listener).is_some() {
                "-".into()
            } else {
                "?".into()
            }
        });
        let user_color = if owner.is_some_and(|p| p.uid == 0) && exposed {
            Some(Color::Yellow)
        } else {
            dim
        };
        let (approved, approved_color) = match view.approvals.get(idx) {
            Some(ApprovalStatus::NotNeeded) => ("-", dim),
            Some(ApprovalStatus::Approved(_)) => ("yes", Some(Color::Green)),
            Some(ApprovalStatus::Expired(_)) => ("EXPIRED", Some(Color::Red)),
            Some(ApprovalStatus::Unapproved) | None => ("NO", Some(Color::Red)),
        };
        let scope_color = if exposed { Some(Color::Yellow) } else { dim };
        let address = match listener.address {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        let mut row = vec![
            style.cell(listener.scope, scope_color),
            style.cell(listener.protocol, dim),
            style.cell(address, dim),
            style.cell(listener.port, dim),
            style.cell(process, dim),
            style.cell(user, user_color),
            style.cell(package, package_color),
            style.cell(approved, approved_color),
        ];
        if show_netns {
            row.insert(0, style.cell(&listener.netns.name, dim));
        }
        table.add_row(row);
    }
    if snapshot.listeners.is_empty() {
        let _ = writeln!(out, "no listening sockets");
    } else {
        let _ = writeln!(out, "{table}");
    }

    let _ = writeln!(out);
    if view.findings.is_empty() {
        let _ = writeln!(out, "{}", style.paint("no findings", Color::Green));
    } else {
        let counts: Vec<String> = Severity::ALL
            .iter()
            .rev()
            .filter_map(|sev| {
                let n = view.findings.iter().filter(|f| f.severity == *sev).count();
                (n > 0).then(|| format!("{n} {sev}"))
            })
            .collect();
        let _ = writeln!(
            out,
            "{} ({})",
            style.bold(&crate::count(view.findings.len(), "finding")),
            counts.join(", ")
        );
        for finding in view.findings {
            out.push_str(&finding_text(finding, style));
        }
    }
    if let Some(since) = view.since {
        let _ = writeln!(out);
        let title = format!(
            "since audit #{} at {}: {}",
            since.audit_id,
            rfc3339(since.taken_at),
            if since.changes.is_empty() {
                "no changes".to_owned()
            } else {
                crate::count(since.changes.len(), "change")
            }
        );
        let _ = writeln!(out, "{}", style.bold(&title));
        for change in &since.changes {
            let sign = if change.kind.ends_with("appeared") {
                "+"
            } else {
                "-"
            };
            let _ = writeln!(
                out,
                "  {} {}",
                style.paint(sign, Style::severity_color(change.severity)),
                change.message
            );
        }
    }
    if !snapshot.problems.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{}",
            style.bold(&format!(
                "{} (the report may be incomplete)",
                crate::count(snapshot.problems.len(), "problem")
            ))
        );
        for problem in &snapshot.problems {
            let _ = writeln!(out, "  {}: {}", problem.subject, problem.message);
            if let Some(hint) = &problem.hint {
                let _ = writeln!(
                    out,
                    "    {}",
                    style.paint(&format!("hint: {hint}"), Color::DarkGrey)
                );
            }
        }
    }
    out
}

/// One finding as an indented block: severity, rule, subject; then the message,
/// the evidence and the remedy.
pub(crate) fn finding_text(finding: &Finding, style: Style) -> String {
    let mut out = String::new();
    let severity = format!("{:<8}", finding.severity.as_str().to_ascii_uppercase());
    let _ = writeln!(
        out,
        "{} {}  {}",
        style.paint(&severity, Style::severity_color(finding.severity)),
        style.bold(&finding.rule),
        finding.subject
    );
    let _ = writeln!(out, "         {}", finding.message);
    for evidence in &finding.evidence {
        let _ = writeln!(
            out,
            "         {}",
            style.paint(&format!("- {evidence}"), Color::DarkGrey)
        );
    }
    if !finding.remedy.is_empty() {
        let _ = writeln!(out, "         fix: {}", finding.remedy);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_from_command_lines() {
        let words = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            redacted_cmdline(&words(
                "redis-server --port 6379 --requirepass hunter2 --bind 0.0.0.0"
            )),
            "redis-server --port 6379 --requirepass *** --bind 0.0.0.0"
        );
        assert_eq!(
            redacted_cmdline(&words("app --db-password=s3cret --api-token tok -v")),
            "app --db-password=*** --api-token *** -v"
        );
        assert_eq!(
            redacted_cmdline(&words("sshd -D -f /etc/ssh/x")),
            "sshd -D -f /etc/ssh/x"
        );
    }
}
