//! Rules: host facts in, findings out. Each family of rules lives in its own
//! module and is a pure function of a [`HostSnapshot`] (plus the approvals and
//! the check settings), so every rule is unit-tested without a host.
//!
//! Architecture invariant: nothing here does I/O except [`approvals`]' thin
//! `load`/`save` wrappers around its pure parser and editor.

pub mod approvals;
pub mod container;
mod env;
pub mod environments;
pub mod exec;
mod firewall;
mod listener;
pub mod pkg;
mod redis;
pub mod rules;
mod ssh;

use perimeter_model::{Finding, HostSnapshot, Listener};
use time::Date;

pub use approvals::{Approval, Approvals, ApprovalsError};
pub use env::verify_findings;

/// Settings for the audit rules.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// Executable or command names of daemons that start as root only to bind
    /// and then separate privileges (sshd, nginx, ...): exempt from `service.root`.
    pub privsep_daemons: Vec<String>,
    /// Today's date, for approval and experiment expiry.
    pub today: Date,
    /// The environments (perimeter.toml); empty when there is none, and then
    /// no environment rule runs.
    pub environments: environments::Environments,
    /// `--env NAME`: the environment this host is in, instead of deciding it
    /// from the host's addresses.
    pub forced_env: Option<String>,
}

/// Daemons exempt from `service.root` by default: each keeps a small root
/// master that binds, then hands connections to unprivileged children (or, for
/// systemd, passes sockets on via socket activation).
pub const DEFAULT_PRIVSEP_DAEMONS: &[&str] = &[
    "sshd", "systemd", "init", "nginx", "apache2", "httpd", "master", "exim4", "dovecot", "cupsd",
];

impl CheckConfig {
    pub fn new(today: Date) -> Self {
        CheckConfig {
            privsep_daemons: DEFAULT_PRIVSEP_DAEMONS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            today,
            environments: environments::Environments::default(),
            forced_env: None,
        }
    }
}

/// Run every audit rule, worst findings first (then by rule and subject, so
/// output is stable).
pub fn run_all(
    snapshot: &HostSnapshot,
    approvals: &Approvals,
    config: &CheckConfig,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    findings.extend(listener::unapproved(snapshot, approvals, config));
    findings.extend(listener::root_services(snapshot, config));
    findings.extend(listener::login_shells(snapshot));
    findings.extend(exec::unpackaged(snapshot));
    findings.extend(exec::deleted(snapshot));
    findings.extend(exec::world_writable(snapshot));
    findings.extend(redis::check(snapshot));
    findings.extend(ssh::check(snapshot));
    findings.extend(firewall::check(snapshot));
    findings.extend(firewall::bypassed(snapshot));
    findings.extend(container::check(snapshot));
    findings.extend(env::check(snapshot, config));
    sort_findings(&mut findings);
    findings
}

/// Worst first, then by rule id and subject.
pub fn sort_findings(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.rule.cmp(&b.rule))
            .then_with(|| a.subject.cmp(&b.subject))
    });
}

/// Whether a process belongs to the audit: it lives in one of the audited
/// network namespaces (an audit of one namespace is that namespace's view of
/// the host; `--all-netns` covers every process). A process whose namespace
/// could not be read is included: better a finding too many than one hidden.
pub fn in_audited_namespace(snapshot: &HostSnapshot, process: &perimeter_model::Process) -> bool {
    match process.netns_inode {
        Some(inode) if !snapshot.namespaces.is_empty() => snapshot.namespace(inode).is_some(),
        _ => true,
    }
}

/// How a listener is named in findings: `tcp 0.0.0.0:6379 redis-server (pid 812)`,
/// with the namespace when it is not the host's.
pub fn listener_subject(snapshot: &HostSnapshot, listener: &Listener) -> String {
    let mut subject = listener.endpoint();
    match (
        snapshot.main_owner(listener),
        snapshot.published_port(listener),
    ) {
        (Some(process), _) => {
            subject.push_str(&format!(" {} (pid {})", process.name(), process.pid))
        }
        // No process holds it: a DNAT forwards it.
        (None, Some(port)) => match port.container.and_then(|idx| snapshot.containers.get(idx)) {
            Some(container) => subject.push_str(&format!(
                " published by container {} ({})",
                container.name, container.image
            )),
            None => subject.push_str(&format!(" forwarded to {}", port.to)),
        },
        (None, None) => subject.push_str(" (owner unknown)"),
    }
    if listener.netns.name != "host" {
        subject.push_str(&format!(" in netns {}", listener.netns.name));
    }
    subject
}

#[cfg(test)]
mod fixtures;
