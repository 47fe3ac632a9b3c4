//! `perimeter audit`: what listens on this host, who runs it, where it came
//! from, what is wrong with it, and what changed since the last audit.

use anyhow::Result;
use perimeter_model::{Problem, Severity};
use perimeter_report::audit::Since;
use perimeter_store::{AuditRecord, Store};

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
    let previous = db.previous_audit(host)?;
    db.record_audit(host, audit.taken_at, &audit.snapshot, &audit.findings)?;
    Ok(previous.map(|previous| {
        let current =
            AuditRecord::from_snapshot(host, audit.taken_at, &audit.snapshot, &audit.findings);
        Since {
            audit_id: previous.id,
            taken_at: previous.taken_at,
            changes: store::audit_changes(&previous, &current),
        }
    }))
}
