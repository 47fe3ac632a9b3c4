//! `perimeter diff [A] [B]`: what changed between two stored scans. By default
//! the newest scan against the previous complete scan of the same target set.

use anyhow::{Result, bail};
use perimeter_model::Severity;
use perimeter_report::diff::{Compared, to_human, to_json};
use perimeter_store::{Store, TargetKey};

use crate::args::{DiffArgs, Format};
use crate::exit_codes::ExitCode;
use crate::pipeline::{scan_diff, store};
use crate::terminal::Terminal;

pub(crate) fn run(args: DiffArgs, terminal: &Terminal) -> Result<ExitCode> {
    let db = store::open_read_only(&args.db)?;
    let (before_id, after_id) = match (args.before, args.after) {
        (Some(a), Some(b)) => (a, b),
        (Some(a), None) => {
            // One id: compare it with the newest scan of its target set.
            let (info, _) = db.load_scan(a)?;
            let newest = db.previous_scans_of(&TargetKey::of(&info), 1)?;
            match newest.first() {
                Some(s) if s.info.id != a => (a, s.info.id),
                _ => bail!(
                    "scan {a} is the newest of its target set; name the scan to compare it with"
                ),
            }
        }
        (None, _) => {
            // The newest *complete* scan: a running, stopped or interrupted
            // one would report every port it never reached as closed.
            let newest = db.list_scans(1)?.into_iter().next();
            let Some(latest) = db.latest_complete_scan()? else {
                match newest {
                    Some(newest) => bail!(
                        "no complete scan stored yet (scan {} is {}): name two scans to compare partial results",
                        newest.info.id,
                        newest.status.as_str()
                    ),
                    None => bail!("no scans stored yet: run `perimeter scan` first"),
                }
            };
            let skipped = newest
                .filter(|n| n.info.id != latest.info.id)
                .map(|n| (n.info.id, n.status.as_str()));
            match (
                scan_diff::previous_complete_scan(&db, &latest.info)?,
                skipped,
            ) {
                (Some(previous), _) => (previous.info.id, latest.info.id),
                (None, Some((id, status))) => bail!(
                    "scan {} (the newest complete one; scan {id} after it is {status}) has no earlier complete scan of the same targets and ports to compare with: name two scans to compare partial results (perimeter diff {} {id})",
                    latest.info.id,
                    latest.info.id
                ),
                (None, None) => bail!(
                    "scan {} has no earlier complete scan of the same targets and ports to compare with",
                    latest.info.id
                ),
            }
        }
    };
    let (before_info, before) = db.load_scan(before_id)?;
    let (after_info, after) = db.load_scan(after_id)?;
    let changes = scan_diff::port_changes(&before_info, &before, &after_info, &after);
    let (b, a) = (Compared::of(&before_info), Compared::of(&after_info));
    match args.format {
        Format::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&to_json(&b, &a, &changes))?
        ),
        Format::Human => out!("{}", to_human(&b, &a, &changes, terminal.stdout_style())),
    }
    let threshold: Severity = args.fail_on.into();
    Ok(ExitCode::findings_if(
        changes.iter().any(|c| c.severity >= threshold),
    ))
}
