//! `perimeter audits`: stored audits, and with `--diff` what changed on this
//! host between its last two audits ("a new listener appeared").

use anyhow::{Result, bail};
use perimeter_model::Severity;
use perimeter_report::history::{
    AuditRef, StoredAudit, audit_diff_to_human, audit_diff_to_json, audits_to_human, audits_to_json,
};
use perimeter_store::Store;

use crate::args::{AuditsArgs, Format};
use crate::exit_codes::ExitCode;
use crate::pipeline::store;
use crate::settings;
use crate::terminal::Terminal;

pub(crate) fn run(args: AuditsArgs, _terminal: &Terminal) -> Result<ExitCode> {
    let db = store::open_read_only(&args.db)?;
    if args.diff {
        let host = crate::settings::hostname();
        let recent = db.audits_of(&host, 2)?;
        let [after, before] = recent.as_slice() else {
            bail!("fewer than two audits of {host} are stored: run `perimeter audit` again later");
        };
        let before = db.load_audit(before.id)?;
        let after = db.load_audit(after.id)?;
        let changes = store::audit_changes(&before, &after);
        let (before, after) = (
            AuditRef {
                id: before.id,
                taken_at: before.taken_at,
            },
            AuditRef {
                id: after.id,
                taken_at: after.taken_at,
            },
        );
        match args.format {
            Format::Json => outln!(
                "{}",
                serde_json::to_string_pretty(&audit_diff_to_json(&host, before, after, &changes))?
            ),
            Format::Human => out!("{}", audit_diff_to_human(before, after, &changes)),
        }
        return Ok(ExitCode::findings_if(
            changes.iter().any(|c| c.severity >= Severity::Medium),
        ));
    }
    let audits = db.list_audits(args.limit)?;
    let rows: Vec<StoredAudit> = audits
        .iter()
        .map(|a| StoredAudit {
            id: a.id,
            host: &a.host,
            taken_at: a.taken_at,
            n_listeners: a.n_listeners,
            n_findings: a.n_findings,
            worst_severity: a.worst_severity,
        })
        .collect();
    match args.format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&audits_to_json(&rows))?),
        Format::Human => out!(
            "{}",
            audits_to_human(&rows, &settings::db_path(args.db.db.as_deref())?)
        ),
    }
    Ok(ExitCode::Clean)
}
