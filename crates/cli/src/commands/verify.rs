//! `perimeter verify`: reachability confirmed from outside. Scan each
//! environment's ranges from where perimeter runs (the scan engine, with the
//! scan's options) and compare what answers with what the inventory allows
//! from this vantage point:
//!
//! - a dev or experiment host answering a scanner outside its `allow_from`:
//!   `env.dev-reachable`;
//! - an open prod port outside `public_ports`, seen from outside `allow_from`:
//!   `env.prod-unexpected-port`;
//! - a host answering in no declared environment (within `--also` ranges):
//!   `env.unknown-host`;
//! - a host of an experiment past its `expires` that still answers:
//!   `env.expired`.
//!
//! The findings go into the results of the ports they are about, so the output
//! has the scan's result shape.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{Context, Result, bail};
use perimeter_model::{Environment, Severity};
use perimeter_report::scan::{Verified, to_nmap_xml, verify_to_human, verify_to_json};
use perimeter_scan::TargetRequest;

use crate::args::{ScanFormat, VerifyArgs};
use crate::exit_codes::ExitCode;
use crate::pipeline::scan::{Executed, Job, execute, tuning, udp_ports};
use crate::pipeline::{environments, store};
use crate::terminal::Terminal;

pub(crate) fn run(args: VerifyArgs, terminal: &Terminal) -> Result<ExitCode> {
    let inventory = environments::load(&args.inventory)?;
    if inventory.path.is_none() {
        bail!(
            "verify needs an inventory of environments: --inventory FILE, ./perimeter.toml or /etc/perimeter/perimeter.toml (see `perimeter init`)"
        );
    }
    if let Err(refusal) = inventory.check_scannable() {
        bail!("{refusal}");
    }
    for name in &args.only {
        if inventory.by_name(name).is_none() {
            bail!("--only {name}: no such environment in the inventory");
        }
    }
    let selected: Vec<&Environment> = inventory
        .environments
        .iter()
        .filter(|e| args.only.is_empty() || args.only.contains(&e.name))
        .collect();
    let mut targets: Vec<String> = Vec::new();
    for env in &selected {
        targets.extend(env.ranges.iter().map(ToString::to_string));
        targets.extend(env.hosts.iter().cloned());
    }
    targets.extend(args.also.iter().cloned());
    if targets.is_empty() {
        bail!("the selected environments have no ranges or hosts to scan");
    }

    let vantage: Vec<IpAddr> = if args.from.is_empty() {
        crate::pipeline::verify::own_addresses()
    } else {
        args.from.clone()
    };

    let (ports, options) = tuning(&args.tuning)?;
    let db = if args.no_store {
        None
    } else {
        Some(store::open(&args.db)?)
    };
    let mut record = BTreeMap::new();
    record.insert("verify".into(), "true".into());
    record.insert(
        "vantage".into(),
        vantage
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let Executed {
        info,
        totals,
        mut results,
        interrupted,
        ..
    } = runtime.block_on(execute(Job {
        request: TargetRequest {
            targets,
            excludes: Vec::new(),
            allow_internet_wide: false,
        },
        ports,
        options,
        db,
        all_states: false,
        jsonl: false,
        progress: terminal.stderr_tty && !args.quiet,
        record,
        syn: args.tuning.syn,
        tcp: !args.tuning.udp || args.tuning.tcp,
        udp_ports: udp_ports(&args.tuning)?,
        cancel: None,
    }))?;

    crate::pipeline::verify::add_findings(&inventory, &selected, &info, &mut results, &vantage);

    match args.format {
        ScanFormat::Human => out!(
            "{}",
            verify_to_human(&info, &results, totals, &vantage, terminal.stdout_style())
        ),
        ScanFormat::Json | ScanFormat::Jsonl => {
            let verified = Verified {
                inventory: inventory.path.as_deref(),
                vantage: &vantage,
                environments: selected.iter().map(|e| e.name.as_str()).collect(),
            };
            outln!(
                "{}",
                serde_json::to_string_pretty(&verify_to_json(&info, &results, totals, &verified))?
            );
        }
        ScanFormat::Xml => out!("{}", to_nmap_xml(&info, &results, "perimeter verify")),
    }
    if interrupted {
        return Ok(ExitCode::Interrupted);
    }
    let threshold: Severity = args.fail_on.into();
    Ok(ExitCode::findings_if(
        results
            .iter()
            .flat_map(|r| &r.findings)
            .any(|f| f.severity >= threshold),
    ))
}
