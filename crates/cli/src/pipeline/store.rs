//! The history database: opening the one named by `--db`, `PERIMETER_DB` or
//! the XDG default (`settings::db_path`), and what changed between two
//! stored audits as the report shows it (`audit` after recording,
//! `audits --diff`).

use anyhow::Result;
use perimeter_report::audit::ChangeLine;
use perimeter_store::{AuditRecord, SqliteStore, diff_audits};

use crate::args::DbArgs;
use crate::settings;

pub(crate) fn open(args: &DbArgs) -> Result<SqliteStore> {
    let path = settings::db_path(args.db.as_deref())?;
    Ok(SqliteStore::open(&path)?)
}

/// What changed on a host from one audit to the next.
pub(crate) fn audit_changes(before: &AuditRecord, after: &AuditRecord) -> Vec<ChangeLine> {
    diff_audits(before, after)
        .into_iter()
        .map(|change| ChangeLine {
            kind: change.kind.as_str().to_owned(),
            severity: change.severity,
            subject: change.subject,
            message: change.message,
        })
        .collect()
}
