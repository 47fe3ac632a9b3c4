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

/// The history for a command that only reads it (`scans`, `diff`, `audits`,
/// `envs`): never created, never written, readable without write permission.
pub(crate) fn open_read_only(args: &DbArgs) -> Result<SqliteStore> {
    let path = settings::db_path(args.db.as_deref())?;
    Ok(SqliteStore::open_read_only(&path)?)
}

/// [`open_read_only`], with no history yet as `None` rather than an error
/// (for commands where history only adds to what they show).
pub(crate) fn open_read_only_if_any(args: &DbArgs) -> Result<Option<SqliteStore>> {
    match open_read_only(args) {
        Ok(db) => Ok(Some(db)),
        Err(err)
            if matches!(
                err.downcast_ref::<perimeter_store::StoreError>(),
                Some(perimeter_store::StoreError::Missing { .. })
            ) =>
        {
            Ok(None)
        }
        Err(err) => Err(err),
    }
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

/// The history for a command that changes what is already there (`alerts
/// ack`): a missing database is the error [`open_read_only`] gives, never a
/// new empty one.
pub(crate) fn open_existing(args: &DbArgs) -> Result<SqliteStore> {
    drop(open_read_only(args)?);
    open(args)
}
