//! `perimeter audits`: stored audits, and with `--diff` what changed on this
//! host between its last two audits ("a new listener appeared").

use anyhow::{Result, bail};
use perimeter_model::Severity;
use perimeter_report::rfc3339;
use perimeter_store::{Store, diff_audits};

use crate::args::{AuditsArgs, Format};
use crate::exit_codes::ExitCode;
use crate::pipeline::store;
use crate::settings;
use crate::terminal::Terminal;

pub(crate) fn run(args: AuditsArgs, _terminal: &Terminal) -> Result<ExitCode> {
    let db = store::open(&args.db)?;
    if args.diff {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        let recent = db.audits_of(&host, 2)?;
        let [after, before] = recent.as_slice() else {
            bail!("fewer than two audits of {host} are stored: run `perimeter audit` again later");
        };
        let before = db.load_audit(before.id)?;
        let after = db.load_audit(after.id)?;
        let changes = diff_audits(&before, &after);
        match args.format {
            Format::Json => {
                let rows: Vec<serde_json::Value> = changes
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "kind": c.kind.as_str(),
                            "severity": c.severity.as_str(),
                            "subject": c.subject,
                            "message": c.message,
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "schema": "perimeter.audit-diff/1",
                        "host": host,
                        "before": {"id": before.id, "taken_at": rfc3339(before.taken_at)},
                        "after": {"id": after.id, "taken_at": rfc3339(after.taken_at)},
                        "changes": rows,
                    }))?
                );
            }
            Format::Human => {
                println!(
                    "audit #{} ({}) -> audit #{} ({}): {} changes",
                    before.id,
                    rfc3339(before.taken_at),
                    after.id,
                    rfc3339(after.taken_at),
                    changes.len()
                );
                for c in &changes {
                    println!(
                        "{:<8} {:<21} {}",
                        c.severity.as_str().to_ascii_uppercase(),
                        c.kind.as_str(),
                        c.message
                    );
                }
            }
        }
        return Ok(ExitCode::findings_if(
            changes.iter().any(|c| c.severity >= Severity::Medium),
        ));
    }
    let audits = db.list_audits(args.limit)?;
    match args.format {
        Format::Json => {
            let rows: Vec<serde_json::Value> = audits
                .iter()
                .map(|a| {
                    serde_json::json!({
                        "id": a.id,
                        "host": a.host,
                        "taken_at": rfc3339(a.taken_at),
                        "listeners": a.n_listeners,
                        "findings": a.n_findings,
                        "worst": a.worst_severity.map(|s| s.as_str()),
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"schema": "perimeter.audits/1", "audits": rows})
                )?
            );
        }
        Format::Human => {
            if audits.is_empty() {
                println!(
                    "no audits stored in {}",
                    settings::db_path(args.db.db.as_deref())?.display()
                );
            }
            for a in &audits {
                println!(
                    "{:>5}  {}  {:<20}  {:>3} listeners  {:>3} findings  worst {}",
                    a.id,
                    rfc3339(a.taken_at),
                    a.host,
                    a.n_listeners,
                    a.n_findings,
                    a.worst_severity.map(|s| s.as_str()).unwrap_or("-")
                );
            }
        }
    }
    Ok(ExitCode::Clean)
}
