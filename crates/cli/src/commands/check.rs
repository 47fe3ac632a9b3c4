//! `perimeter check`: the deploy gate. Exit 1 on any unapproved listener beyond
//! loopback or any finding at or above `--fail-on`; 0 otherwise.

use anyhow::Result;
use perimeter_model::Severity;
use perimeter_report::audit::ApprovalStatus;

use crate::args::{CheckArgs, Format};
use crate::exit_codes::ExitCode;
use crate::pipeline::fleet::{As, Session};
use crate::pipeline::host::{MissingApprovals, audit_host, audit_with, print};
use crate::terminal::Terminal;

pub(crate) fn run(args: CheckArgs, terminal: &Terminal) -> Result<ExitCode> {
    let audit = if args.server.server.is_some() {
        if args.host.approvals.is_some() {
            anyhow::bail!("give --server or --approvals, not both: the gate judges by one of them");
        }
        let (approvals, from) = Session::open(&args.server, As::HostOrPerson)?.host_approvals()?;
        audit_with(&args.host, approvals, from)?
    } else {
        audit_host(&args.host, MissingApprovals::Error)?
    };
    let threshold: Severity = args.fail_on.into();
    let failing: Vec<_> = audit
        .findings
        .iter()
        .filter(|f| f.severity >= threshold)
        .collect();
    let n_unapproved = audit.n_unapproved();
    let failed = n_unapproved > 0 || !failing.is_empty();
    match args.format {
        Format::Json => {
            print(&audit, None, Format::Json, terminal)?;
        }
        Format::Human => {
            for (listener, status) in audit.snapshot.listeners.iter().zip(&audit.statuses) {
                let owner = audit
                    .snapshot
                    .main_owner(listener)
                    .map(|p| format!("{} (pid {}, {})", p.name(), p.pid, p.user_name()))
                    .unwrap_or_else(|| match audit.snapshot.published_port(listener) {
                        // Nothing listens: a DNAT forwards it.
                        Some(port) => format!("forwarded to {} by a DNAT", port.to),
                        None => "owner unknown".into(),
                    });
                match status {
                    ApprovalStatus::Unapproved => {
                        outln!(
                            "UNAPPROVED  {} {owner} in netns {}",
                            listener.endpoint(),
                            listener.netns
                        )
                    }
                    ApprovalStatus::Expired(entry) => {
                        outln!("EXPIRED     {} {owner} ({entry})", listener.endpoint())
                    }
                    _ => {}
                }
            }
            for finding in &failing {
                outln!(
                    "{:<11} {} {}: {}",
                    finding.severity.as_str().to_ascii_uppercase(),
                    finding.rule,
                    finding.subject,
                    finding.message
                );
            }
            for problem in &audit.snapshot.problems {
                eprintln!(
                    "perimeter: warning: {}: {}",
                    problem.subject, problem.message
                );
            }
            if failed {
                outln!(
                    "check FAILED: {n_unapproved} unapproved listeners, {} findings at or above {threshold} (approvals: {})",
                    failing.len(),
                    audit.approvals_path.display()
                );
            } else {
                outln!(
                    "check passed: every listener beyond loopback is approved, no findings at or above {threshold}"
                );
            }
        }
    }
    Ok(ExitCode::findings_if(failed))
}
