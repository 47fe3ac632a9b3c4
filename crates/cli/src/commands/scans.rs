//! `perimeter scans`: the stored scans, newest first.

use anyhow::Result;
use perimeter_report::rfc3339;
use perimeter_store::Store;

use crate::args::{Format, ScansArgs};
use crate::exit_codes::ExitCode;
use crate::pipeline::store;
use crate::settings;
use crate::terminal::Terminal;

pub(crate) fn run(args: ScansArgs, _terminal: &Terminal) -> Result<ExitCode> {
    let db = store::open(&args.db)?;
    let scans = db.list_scans(args.limit)?;
    match args.format {
        Format::Json => {
            let rows: Vec<serde_json::Value> = scans
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "id": s.info.id,
                        "targets": s.info.targets,
                        "ports": s.info.ports,
                        "profile": s.info.profile,
                        "seed": s.info.seed.to_string(),
                        "started": rfc3339(s.info.started),
                        "finished": s.info.finished.map(rfc3339),
                        "complete": s.info.complete,
                        "n_results": s.n_results,
                        "n_open": s.n_open,
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "schema": "perimeter.scans/1",
                    "scans": rows,
                }))?
            );
        }
        Format::Human => {
            if scans.is_empty() {
                println!(
                    "no scans stored in {}",
                    settings::db_path(args.db.db.as_deref())?.display()
                );
            } else {
                println!(
                    "{:>5}  {:<20}  {:<8}  {:>5}  {:<10}  TARGETS (PORTS)",
                    "ID", "STARTED", "PROFILE", "OPEN", "STATUS"
                );
                for s in &scans {
                    let status = match (s.info.complete, s.info.finished) {
                        (true, _) => "complete",
                        (false, Some(_)) => "incomplete",
                        (false, None) => "running?",
                    };
                    println!(
                        "{:>5}  {:<20}  {:<8}  {:>5}  {:<10}  {} ({})",
                        s.info.id,
                        rfc3339(s.info.started),
                        s.info.profile,
                        s.n_open,
                        status,
                        s.info.targets.join(" "),
                        s.info.ports
                    );
                }
            }
        }
    }
    Ok(ExitCode::Clean)
}
