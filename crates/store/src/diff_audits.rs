//! What changed on a host between two audits: listeners that appeared or went
//! away, findings that are new or resolved.
//!
//! A listener is identified by (network namespace name, protocol, address,
//! port, executable): the same port now held by a different program is one
//! listener gone and another appeared, which is exactly what an operator should
//! see. Pids, inodes and fds are not part of the identity, since a restart
//! changes them without changing anything that matters. Several sockets with
//! the same identity (`SO_REUSEPORT` workers) count once.
//!
//! A finding is identified by its rule and its subject with pids masked
//! (`redis-server (pid 812)` and `redis-server (pid 990)` are the same subject),
//! for the same reason.
//!
//! Severity policy: a listener that appeared is medium when it reaches beyond
//! the host (any scope but loopback) and low on loopback; one that went away is
//! low. A new finding keeps its own severity; a resolved one is info.
//!
//! Changes are listed by kind (appeared listeners, gone listeners, new findings,
//! resolved findings), each in identity order, so the result does not depend on
//! the order of either input.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;

use perimeter_model::{Finding, Protocol, Severity};

use crate::audit::{AuditRecord, ListenerRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AuditChangeKind {
    ListenerAppeared,
    ListenerDisappeared,
    FindingAppeared,
    FindingResolved,
}

impl AuditChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditChangeKind::ListenerAppeared => "listener-appeared",
            AuditChangeKind::ListenerDisappeared => "listener-disappeared",
            AuditChangeKind::FindingAppeared => "finding-appeared",
            AuditChangeKind::FindingResolved => "finding-resolved",
        }
    }
}

/// One change on a host between two audits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditChange {
    pub kind: AuditChangeKind,
    pub severity: Severity,
    /// What it is about: the listener (`tcp 0.0.0.0:6379 redis-server in host`)
    /// or the finding's subject.
    pub subject: String,
    /// One line for a human.
    pub message: String,
    /// The listener, for listener changes (from the later audit if it appeared,
    /// the earlier if it went away).
    pub listener: Option<ListenerRecord>,
    /// The finding, for finding changes (likewise).
    pub finding: Option<Finding>,
}

/// The changes on a host from `before` to `after`.
pub fn diff_audits(before: &AuditRecord, after: &AuditRecord) -> Vec<AuditChange> {
    let old_listeners = listeners_by_identity(&before.listeners);
    let new_listeners = listeners_by_identity(&after.listeners);
    let old_findings = findings_by_identity(&before.findings);
    let new_findings = findings_by_identity(&after.findings);
    let mut changes = Vec::new();

    // Hash maps to match thousands of unchanged values; the few changes are
    // then put in identity order.
    for (_, listener) in only_in(&new_listeners, &old_listeners) {
        let severity = if listener.scope.is_exposed() {
            Severity::Medium
        } else {
            Severity::Low
        };
        let subject = describe_listener(listener);
        changes.push(AuditChange {
            kind: AuditChangeKind::ListenerAppeared,
            severity,
            message: format!("{subject} started listening ({} scope)", listener.scope),
            subject,
            listener: Some((*listener).clone()),
            finding: None,
        });
    }
    for (_, listener) in only_in(&old_listeners, &new_listeners) {
        let subject = describe_listener(listener);
        changes.push(AuditChange {
            kind: AuditChangeKind::ListenerDisappeared,
            severity: Severity::Low,
            message: format!("{subject} no longer listens"),
            subject,
            listener: Some((*listener).clone()),
            finding: None,
        });
    }
    for (_, finding) in only_in(&new_findings, &old_findings) {
        changes.push(AuditChange {
            kind: AuditChangeKind::FindingAppeared,
            severity: finding.severity,
            subject: finding.subject.clone(),
            message: format!(
                "new finding {} ({}) on {}: {}",
                finding.rule, finding.severity, finding.subject, finding.message
            ),
            listener: None,
            finding: Some((*finding).clone()),
        });
    }
    for (_, finding) in only_in(&old_findings, &new_findings) {
        changes.push(AuditChange {
            kind: AuditChangeKind::FindingResolved,
            severity: Severity::Info,
            subject: finding.subject.clone(),
            message: format!("finding {} on {} resolved", finding.rule, finding.subject),
            listener: None,
            finding: Some((*finding).clone()),
        });
    }
    changes
}

/// Borrowed from the record, so identifying thousands of listeners copies
/// nothing; the executable compares as bytes (component-wise `Path`
/// comparison costs a parse per comparison, and any fixed order will do).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct ListenerIdentity<'a> {
    netns: &'a str,
    protocol: Protocol,
    address: IpAddr,
    port: u16,
    exe: Option<&'a [u8]>,
}

/// Listeners by identity; among sockets sharing one, the one whose debug text
/// sorts first is kept, so the pick never depends on input order.
fn listeners_by_identity(
    listeners: &[ListenerRecord],
) -> HashMap<ListenerIdentity<'_>, &ListenerRecord> {
    let mut by_identity: HashMap<ListenerIdentity<'_>, &ListenerRecord> =
        HashMap::with_capacity(listeners.len());
    for listener in listeners {
        let identity = ListenerIdentity {
            netns: &listener.netns.name,
            protocol: listener.protocol,
            address: listener.address,
            port: listener.port,
            exe: listener.exe().map(|exe| exe.as_os_str().as_bytes()),
        };
        by_identity
            .entry(identity)
            .and_modify(|kept| {
                if format!("{listener:?}") < format!("{kept:?}") {
                    *kept = listener;
                }
            })
            .or_insert(listener);
    }
    by_identity
}

/// Findings by (rule, subject with pids masked); of several, the worst is
/// kept, then the one whose debug text sorts first.
fn findings_by_identity(findings: &[Finding]) -> HashMap<(&str, String), &Finding> {
    let mut by_identity: HashMap<(&str, String), &Finding> = HashMap::with_capacity(findings.len());
    for finding in findings {
        let identity = (finding.rule.as_str(), mask_pids(&finding.subject));
        by_identity
            .entry(identity)
            .and_modify(|kept| {
                let better = finding.severity > kept.severity
                    || (finding.severity == kept.severity
                        && format!("{finding:?}") < format!("{kept:?}"));
                if better {
                    *kept = finding;
                }
            })
            .or_insert(finding);
    }
    by_identity
}

/// The entries of `these` whose identity `those` lacks, in identity order.
fn only_in<'m, K: Ord + Hash + Eq, V>(
    these: &'m HashMap<K, V>,
    those: &HashMap<K, V>,
) -> Vec<(&'m K, &'m V)> {
    let mut only: Vec<(&K, &V)> = these
        .iter()
        .filter(|(identity, _)| !those.contains_key(*identity))
        .collect();
    only.sort_by(|a, b| a.0.cmp(b.0));
    only
}

/// Replaces the digits after `pid ` (and `pid=`, `pid:`) with `*`.
///
/// Hand-written rather than a regex crate: one fixed pattern does not justify a
/// dependency, and the loop below is simple to check.
pub(crate) fn mask_pids(subject: &str) -> String {
    const PID: &str = "pid";
    let mut masked = String::with_capacity(subject.len());
    let mut copied_up_to = 0;
    for (at, _) in subject.match_indices(PID) {
        // `rapid 5` is not a pid: the word must start at `pid`.
        let starts_word = subject[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric());
        let after_pid = &subject[at + PID.len()..];
        let mut chars = after_pid.chars();
        let Some(separator @ (' ' | '=' | ':')) = chars.next() else {
            continue;
        };
        let digits = chars.as_str();
        let n_digits = digits
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(digits.len());
        if !starts_word || n_digits == 0 {
            continue;
        }
        let digits_start = at + PID.len() + separator.len_utf8();
        masked.push_str(&subject[copied_up_to..digits_start]);
        masked.push('*');
        copied_up_to = digits_start + n_digits;
    }
    masked.push_str(&subject[copied_up_to..]);
    masked
}

/// `tcp 0.0.0.0:6379 redis-server (netns host)`.
fn describe_listener(listener: &ListenerRecord) -> String {
    let owner = match &listener.process {
        Some(process) => match &process.exe {
            Some(exe) => format!("{} ({})", process.name, exe.display()),
            None => process.name.clone(),
        },
        None => "unknown process".to_owned(),
    };
    format!(
        "{} {owner} in netns {}",
        listener.endpoint(),
        listener.netns.name
    )
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::path::PathBuf;

    use perimeter_model::{Netns, Ownership, Scope};
    use time::macros::datetime;

    use super::*;
    use crate::audit::OwnerRecord;

    fn listener(address: &str, port: u16, exe: Option<&str>, pid: u32) -> ListenerRecord {
        let address: IpAddr = address.parse().expect("test address");
        ListenerRecord {
            protocol: Protocol::Tcp,
            address,
            port,
            scope: Scope::of(address),
            v6only: None,
            interface: None,
            inode: u64::from(pid) * 10,
            socket_uid: 0,
            netns: Netns {
                inode: 4_026_531_840,
                name: "host".to_owned(),
            },
            pids: vec![pid],
            process: exe.map(|exe| OwnerRecord {
                name: exe.rsplit('/').next().unwrap_or(exe).to_owned(),
                uid: 0,
                user: Some("root".to_owned()),
                exe: Some(PathBuf::from(exe)),
                exe_deleted: false,
                unit: None,
                container: None,
                ownership: Ownership::NotChecked,
            }),
        }
    }

    fn audit(listeners: Vec<ListenerRecord>, findings: Vec<Finding>) -> AuditRecord {
        AuditRecord {
            id: 0,
            host: "lab".to_owned(),
            taken_at: datetime!(2024-01-01 0:00 UTC),
            hostname: "lab".to_owned(),
            listeners,
            findings,
            problems: vec![],
        }
    }

    /// `kind severity subject` per change, one a line.
    fn check(before: &AuditRecord, after: &AuditRecord, expect: &str) {
        let got: Vec<String> = diff_audits(before, after)
            .iter()
            .map(|change| {
                format!(
                    "{} {} {}",
                    change.kind.as_str(),
                    change.severity,
                    change.subject
                )
            })
            .collect();
        let expect: Vec<&str> = expect
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn restarts_are_not_changes() {
        let finding = |pid: u32| {
            Finding::new(
                "redis.no-auth",
                Severity::High,
                format!("tcp 0.0.0.0:6379 redis-server (pid {pid})"),
                "answers without a password",
            )
        };
        let before = audit(
            vec![listener(
                "0.0.0.0",
                6379,
                Some("/usr/bin/redis-server"),
                812,
            )],
            vec![finding(812)],
        );
        let after = audit(
            vec![listener(
                "0.0.0.0",
                6379,
                Some("/usr/bin/redis-server"),
                990,
            )],
            vec![finding(990)],
        );
        check(&before, &after, "");
    }

    #[test]
    fn listeners_and_findings_come_and_go() {
        let before = audit(
            vec![
                listener(
                    "127.0.0.1",
                    5432,
                    Some("/usr/lib/postgresql/15/bin/postgres"),
                    700,
                ),
                listener("0.0.0.0", 22, Some("/usr/sbin/sshd"), 600),
            ],
            vec![Finding::new(
                "ssh.password-auth",
                Severity::Medium,
                "sshd (pid 600)",
                "passwords accepted",
            )],
        );
        let after = audit(
            vec![
                listener("0.0.0.0", 22, Some("/usr/sbin/sshd"), 601),
                listener("0.0.0.0", 6379, Some("/tmp/.x/redis-server"), 900),
                listener("127.0.0.1", 8080, None, 901),
            ],
            vec![Finding::new(
                "exec.unpackaged",
                Severity::High,
                "tcp 0.0.0.0:6379 redis-server (pid 900)",
                "not from a package",
            )],
        );
        check(
            &before,
            &after,
            "
            listener-appeared medium tcp 0.0.0.0:6379 redis-server (/tmp/.x/redis-server) in netns host
            listener-appeared low tcp 127.0.0.1:8080 unknown process in netns host
            listener-disappeared low tcp 127.0.0.1:5432 postgres (/usr/lib/postgresql/15/bin/postgres) in netns host
            finding-appeared high tcp 0.0.0.0:6379 redis-server (pid 900)
            finding-resolved info sshd (pid 600)
            ",
        );
    }

    #[test]
    fn another_program_on_the_same_port_is_a_change() {
        let before = audit(
            vec![listener("0.0.0.0", 22, Some("/usr/sbin/sshd"), 600)],
            vec![],
        );
        let after = audit(
            vec![listener("0.0.0.0", 22, Some("/dev/shm/sshd"), 666)],
            vec![],
        );
        check(
            &before,
            &after,
            "
            listener-appeared medium tcp 0.0.0.0:22 sshd (/dev/shm/sshd) in netns host
            listener-disappeared low tcp 0.0.0.0:22 sshd (/usr/sbin/sshd) in netns host
            ",
        );
    }

    #[test]
    fn order_of_inputs_does_not_matter() {
        let listeners = vec![
            listener("0.0.0.0", 22, Some("/usr/sbin/sshd"), 600),
            listener("0.0.0.0", 22, Some("/usr/sbin/sshd"), 601),
            listener("::", 80, Some("/usr/sbin/nginx"), 700),
            listener("127.0.0.1", 53, Some("/usr/sbin/unbound"), 800),
        ];
        let findings = vec![
            Finding::new("a.rule", Severity::Low, "x", "one"),
            Finding::new("a.rule", Severity::High, "x", "two"),
            Finding::new("b.rule", Severity::Medium, "y", "three"),
        ];
        let before = audit(vec![], vec![]);
        let forward = audit(listeners.clone(), findings.clone());
        let mut reversed_listeners = listeners;
        reversed_listeners.reverse();
        let mut reversed_findings = findings;
        reversed_findings.reverse();
        let backward = audit(reversed_listeners, reversed_findings);
        let changes = diff_audits(&before, &forward);
        assert_eq!(changes, diff_audits(&before, &backward));
        assert_eq!(
            diff_audits(&forward, &before),
            diff_audits(&backward, &before)
        );
        // Two sshd sockets count once, and the worst `a.rule` finding is kept.
        assert_eq!(changes.len(), 5);
        let a_rule = changes
            .iter()
            .find_map(|change| change.finding.as_ref().filter(|f| f.rule == "a.rule"))
            .expect("a.rule appeared");
        assert_eq!(a_rule.severity, Severity::High);
    }

    #[test]
    fn pid_masking() {
        assert_eq!(mask_pids("redis-server (pid 812)"), "redis-server (pid *)");
        assert_eq!(mask_pids("pid=12 pid:3 pids 4"), "pid=* pid:* pids 4");
        assert_eq!(mask_pids("rapid 5, pid"), "rapid 5, pid");
        assert_eq!(mask_pids("pid x1"), "pid x1");
        assert_eq!(mask_pids("sshd (pid 1ü)"), "sshd (pid *ü)");
    }
}
