//! `perimeter scans`: the stored scans, newest first.

use anyhow::Result;
use perimeter_report::history::{StoredScan, scans_to_human, scans_to_json};
use perimeter_store::Store;

use crate::args::{Format, ScansArgs};
use crate::exit_codes::ExitCode;
use crate::pipeline::store;
use crate::settings;
use crate::terminal::Terminal;

pub(crate) fn run(args: ScansArgs, _terminal: &Terminal) -> Result<ExitCode> {
    if args.limit == 0 {
        anyhow::bail!("--limit 0 would list nothing: give a count of at least 1");
    }
    let db = store::open_read_only(&args.db)?;
    let scans = db.list_scans(args.limit)?;
    let rows: Vec<StoredScan> = scans
        .iter()
        .map(|s| StoredScan {
            info: &s.info,
            status: s.status.as_str(),
            n_results: s.n_results,
            n_open: s.n_open,
        })
        .collect();
    match args.format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&scans_to_json(&rows))?),
        Format::Human => out!(
            "{}",
            scans_to_human(&rows, &settings::db_path(args.db.db.as_deref())?)
        ),
    }
    Ok(ExitCode::Clean)
}
