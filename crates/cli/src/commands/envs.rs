//! `perimeter init` (the example inventory) and `perimeter envs` (each
//! environment with its hosts as last seen by stored scans, its owner and its
//! expiry).

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{Result, bail};
use perimeter_checks::environments::EXAMPLE;
use perimeter_model::PortState;
use perimeter_report::rfc3339;
use perimeter_store::Store;
use time::OffsetDateTime;

use crate::args::{EnvsArgs, Format, InitArgs};
use crate::exit_codes::ExitCode;
use crate::pipeline::{environments, store};
use crate::settings::{self, LOCAL_INVENTORY, SYSTEM_INVENTORY, today};
use crate::terminal::Terminal;

pub(crate) fn init(args: InitArgs) -> Result<ExitCode> {
    if args.path.exists() && !args.force {
        bail!(
            "{} exists; pass --force to overwrite it",
            args.path.display()
        );
    }
    perimeter_checks::approvals::save_atomic(&args.path, EXAMPLE)?;
    println!(
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
    let db_path = settings::db_path(args.db.db.as_deref())?;
    if db_path.exists() {
        let db = store::open(&args.db)?;
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
    let mut rows = Vec::new();
    for env in &inventory.environments {
        let hosts: Vec<(&IpAddr, &Seen)> = seen.iter().filter(|(a, _)| env.contains(**a)).collect();
        let expiry = match env.days_overdue(today) {
            Some(days) if days > 0 => format!("EXPIRED {days} days ago"),
            Some(days) => format!("expires in {} days", -days),
            None => "-".into(),
        };
        rows.push((env, hosts, expiry));
    }
    match args.format {
        Format::Json => {
            let environments: Vec<serde_json::Value> = rows
                .iter()
                .map(|(env, hosts, expiry)| {
                    serde_json::json!({
                        "name": env.name,
                        "kind": env.kind.as_str(),
                        "ranges": env.ranges.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "hosts": env.hosts,
                        "public_ports": env.public_ports,
                        "allow_from": env.allow_from.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "owner": env.owner,
                        "expires": env.expires.map(|d| d.to_string()),
                        "expiry": expiry,
                        "seen": hosts.iter().map(|(address, seen)| serde_json::json!({
                            "address": address.to_string(),
                            "last_seen": seen.last.map(rfc3339),
                            "open_ports": seen.ports,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "schema": "perimeter.envs/1",
                    "inventory": inventory.path.as_ref().map(|p| p.display().to_string()),
                    "environments": environments,
                }))?
            );
        }
        Format::Human => {
            for (env, hosts, expiry) in &rows {
                let ranges: Vec<String> = env.ranges.iter().map(ToString::to_string).collect();
                println!(
                    "{} ({}) {}  owner {}  {}",
                    env.name,
                    env.kind,
                    ranges.join(" "),
                    env.owner.as_deref().unwrap_or("-"),
                    expiry
                );
                if hosts.is_empty() {
                    println!("  no hosts seen by stored scans");
                }
                for (address, seen) in hosts {
                    let mut ports = seen.ports.clone();
                    ports.sort_unstable();
                    println!(
                        "  {address:<40} last seen {}  open {:?}",
                        seen.last.map(rfc3339).unwrap_or_else(|| "-".into()),
                        ports
                    );
                }
            }
        }
    }
    Ok(ExitCode::Clean)
}
