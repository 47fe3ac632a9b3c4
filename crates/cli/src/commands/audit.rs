//! `perimeter audit`: what listens on this host, who runs it, where it came
//! from, what is wrong with it, and what changed since the last audit.

use anyhow::Result;
use perimeter_model::{Problem, Severity};
use perimeter_report::audit::{ChangeLine, Since};
use perimeter_store::Store;

use crate::args::AuditArgs;
use crate::exit_codes::ExitCode;
use crate::pipeline::host::{HostAudit, MissingApprovals, audit_host, print};
use crate::pipeline::store;
use crate::terminal::Terminal;

pub(crate) fn run(args: AuditArgs, terminal: &Terminal) -> Result<ExitCode> {
    let mut audit = audit_host(&args.host, MissingApprovals::Error)?;
    let since = if args.no_store {
        None
    } else {
        // The audit never stops for what it cannot do: history that cannot
        // be recorded (no writable home, a read-only database) is a problem
        // in the report, and the audit is still shown and judged.
        match record(&args, &audit) {
            Ok(since) => since,
            Err(err) => {
                audit.snapshot.problems.push(
                    Problem::new(
                        "history",
                        format!("this audit was not recorded: {}", crate::error_chain(&err)),
                    )
                    .with_hint("give a writable --db FILE (or PERIMETER_DB), or pass --no-store"),
                );
                None
            }
        }
    };
    print(&audit, since.as_ref(), args.format, terminal)?;
    let threshold: Option<Severity> = args.fail_on.map(Into::into);
    let failed = threshold.is_some_and(|t| audit.findings.iter().any(|f| f.severity >= t));
    Ok(ExitCode::findings_if(failed))
}

/// Store the audit and return what changed since the previous one of this host.
fn record(args: &AuditArgs, audit: &HostAudit) -> Result<Option<Since>> {
    let mut db = store::open(&args.db)?;
    let host = &audit.snapshot.hostname;
    // The store says what changed as it records, without loading either
    // audit whole.
    let recorded = db.record_audit_since(host, audit.taken_at, &audit.snapshot, &audit.findings)?;
    Ok(recorded.since.map(|since| Since {
        audit_id: since.audit_id,
        taken_at: since.taken_at,
        changes: since
            .changes
            .into_iter()
            .map(|change| ChangeLine {
                kind: change.kind.as_str().to_owned(),
                severity: change.severity,
                subject: change.subject,
                message: change.message,
            })
            .collect(),
    }))
}
