//! `perimeter init` (the example inventory) and `perimeter envs` (each
//! environment with its hosts as last seen by stored scans, its owner and its
//! expiry).

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{Context, Result, bail};
use perimeter_checks::environments::EXAMPLE;
use perimeter_model::PortState;
use perimeter_report::envs::{self as report_envs, EnvironmentSeen, SeenHost};
use perimeter_store::Store;
use time::OffsetDateTime;

use crate::args::{EnvsArgs, Format, InitArgs};
use crate::exit_codes::ExitCode;
use crate::pipeline::{environments, store};
use crate::settings::{LOCAL_INVENTORY, SYSTEM_INVENTORY, today};
use crate::terminal::Terminal;

pub(crate) fn init(args: InitArgs) -> Result<ExitCode> {
    if args.path.exists() && !args.force {
        bail!(
            "{} exists; pass --force to overwrite it",
            args.path.display()
        );
    }
    perimeter_files::write_atomic(&args.path, EXAMPLE.as_bytes(), 0o644)
        .context("cannot write the example")?;
    outln!(
        "wrote {}: edit the environments, then `perimeter audit` and `perimeter verify` use it",
        args.path.display()
    );
    Ok(ExitCode::Clean)
}

/// A host seen in stored scans: when, and which ports answered.
#[derive(Debug, Default)]
struct Seen {
    last: Option<OffsetDateTime>,
    ports: Vec<u16>,
}

/// How many recent scans `perimeter envs` reads for "last seen".
const RECENT_SCANS: usize = 50;

pub(crate) fn run(args: EnvsArgs, _terminal: &Terminal) -> Result<ExitCode> {
    let inventory = environments::load(&args.inventory)?;
    if inventory.path.is_none() {
        bail!(
            "no inventory: looked for {LOCAL_INVENTORY} and {SYSTEM_INVENTORY} (write one with `perimeter init`)"
        );
    }
    // Hosts as last seen by the stored scans (newest first, so the first
    // sighting of an address is its last).
    let mut seen: BTreeMap<IpAddr, Seen> = BTreeMap::new();
    // No history yet is no sightings, not an error; nothing is created.
    if let Some(db) = store::open_read_only_if_any(&args.db)? {
        for summary in db.list_scans(RECENT_SCANS)? {
            let (info, results) = db.load_scan(summary.info.id)?;
            for result in results.iter().filter(|r| r.state == PortState::Open) {
                let entry = seen.entry(result.address).or_default();
                if entry.last.is_none_or(|last| last == info.started) {
                    entry.last = Some(info.started);
                    if !entry.ports.contains(&result.port) {
                        entry.ports.push(result.port);
                    }
                }
            }
        }
    }
    let today = today();
    let environments: Vec<EnvironmentSeen> = inventory
        .environments
        .iter()
        .map(|env| EnvironmentSeen {
            environment: env,
            days_overdue: env.days_overdue(today),
            hosts: seen
                .iter()
                .filter(|(address, _)| env.contains(**address))
                .map(|(address, seen)| SeenHost {
                    address: *address,
                    last_seen: seen.last,
                    open_ports: &seen.ports,
                })
                .collect(),
        })
        .collect();
    match args.format {
        Format::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&report_envs::to_json(
                inventory.path.as_deref(),
                &environments
            ))?
        ),
        Format::Human => out!("{}", report_envs::to_human(&environments)),
    }
    Ok(ExitCode::Clean)
}
