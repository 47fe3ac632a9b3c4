//! `perimeter audit`: what listens on this host, who runs it, where it came
//! from, what is wrong with it, and what changed since the last audit.

use anyhow::Result;
use perimeter_model::Severity;
use std::io::Write;

use perimeter_report::audit::{AuditView, ChangeLine, Since, to_human, write_json};
use perimeter_store::Store;

use crate::args::{AuditArgs, Format};
use crate::commands::host::{HostAudit, MissingApprovals, audit_host};
use crate::commands::store;
use crate::exit_codes;
use crate::terminal::Terminal;

pub(crate) fn run(args: AuditArgs, terminal: &Terminal) -> Result<u8> {
    let audit = audit_host(&args.host, MissingApprovals::Error)?;
    let since = if args.no_store {
        None
    } else {
        record(&args, &audit)?
    };
    print(&audit, since.as_ref(), args.format, terminal)?;
    let threshold: Option<Severity> = args.fail_on.map(Into::into);
    let failed = threshold.is_some_and(|t| audit.findings.iter().any(|f| f.severity >= t));
    Ok(if failed {
        exit_codes::FINDINGS
    } else {
        exit_codes::CLEAN
    })
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

pub(crate) fn print(
    audit: &HostAudit,
    since: Option<&Since>,
    format: Format,
    terminal: &Terminal,
) -> Result<()> {
    let view = AuditView {
        snapshot: &audit.snapshot,
        findings: &audit.findings,
        approvals: &audit.statuses,
        approvals_file: audit.approvals.path.as_deref(),
        taken_at: audit.taken_at,
        socket_source: &audit.socket_source,
        perimeter_version: env!("CARGO_PKG_VERSION"),
        since,
    };
    match format {
        Format::Json => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            write_json(&view, &mut out)?;
            writeln!(out)?;
            out.flush()?;
        }
        Format::Human => print!("{}", to_human(&view, terminal.stdout_style())),
    }
    Ok(())
}
