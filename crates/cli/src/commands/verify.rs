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
//! has the scan's result shape. With --scan ID, a stored scan is judged
//! instead (one made from another vantage point, such as a scan job that
//! scanner nodes there ran), as seen from --from.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{Context, Result, bail};
use perimeter_checks::environments::Environments;
use perimeter_model::{Environment, PortResult, PortState, ScanInfo, Severity};
use perimeter_report::scan::{StateTotals, Verified, to_nmap_xml, verify_to_human, verify_to_json};
use perimeter_scan::TargetRequest;
use perimeter_store::Store as _;

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

    if let Some(id) = args.scan {
        // A stored scan, judged as it is: it was scanned from --from.
        let db = store::open_read_only(&args.db)?;
        let (info, mut results) = db
            .load_scan(id)
            .with_context(|| format!("--scan {id}: cannot load the stored scan"))?;
        if !info.complete {
            eprintln!(
                "perimeter: warning: scan {id} is incomplete: what it did not reach is not judged"
            );
        }
        let mut totals = StateTotals::default();
        for result in &results {
            match result.state {
                PortState::Open => totals.open += 1,
                PortState::Closed => totals.closed += 1,
                PortState::Filtered => totals.filtered += 1,
                PortState::OpenFiltered => totals.open_filtered += 1,
            }
        }
        return report(
            &args,
            &inventory,
            &selected,
            &info,
            results.as_mut_slice(),
            totals,
            &vantage,
            false,
            terminal,
        );
    }

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

    report(
        &args,
        &inventory,
        &selected,
        &info,
        &mut results,
        totals,
        &vantage,
        interrupted,
        terminal,
    )
}

/// The env.* findings added to the results, printed, and the exit code.
#[allow(clippy::too_many_arguments)]
fn report(
    args: &VerifyArgs,
    inventory: &Environments,
    selected: &[&Environment],
    info: &ScanInfo,
    results: &mut [PortResult],
    totals: StateTotals,
    vantage: &[IpAddr],
    interrupted: bool,
    terminal: &Terminal,
) -> Result<ExitCode> {
    crate::pipeline::verify::add_findings(inventory, selected, info, results, vantage);
    let results = &*results;

    match args.format {
        ScanFormat::Human => out!(
            "{}",
            verify_to_human(info, results, totals, vantage, terminal.stdout_style())
        ),
        ScanFormat::Json | ScanFormat::Jsonl => {
            let verified = Verified {
                inventory: inventory.path.as_deref(),
                vantage,
                environments: selected.iter().map(|e| e.name.as_str()).collect(),
            };
            outln!(
                "{}",
                serde_json::to_string_pretty(&verify_to_json(info, results, totals, &verified))?
            );
        }
        ScanFormat::Xml => out!("{}", to_nmap_xml(info, results, "perimeter verify")),
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
