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

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use anyhow::{Context, Result, bail};
use perimeter_checks::rules::{
    ENV_DEV_REACHABLE, ENV_EXPIRED, ENV_PROD_UNEXPECTED_PORT, ENV_UNKNOWN_HOST,
};
use perimeter_model::{EnvKind, Environment, Finding, PortResult, PortState, Severity};
use perimeter_report::scan::{to_human, to_json, to_nmap_xml};
use perimeter_scan::{PortSet, Profile, ScanOptions, TargetRequest};

use crate::args::{ProfileArg, ScanFormat, VerifyArgs};
use crate::commands::envs::load_inventory;
use crate::commands::host::today;
use crate::commands::scan::{Executed, Job, execute, parse_duration, rand_seed};
use crate::commands::store;
use crate::exit_codes;
use crate::terminal::Terminal;

pub(crate) fn run(args: VerifyArgs, terminal: &Terminal) -> Result<u8> {
    let inventory = load_inventory(&args.inventory)?;
    if inventory.path.is_none() {
        bail!(
            "verify needs an inventory of environments: --inventory FILE, ./perimeter.toml or /etc/perimeter/perimeter.toml (see `perimeter init`)"
        );
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
        own_addresses()
    } else {
        args.from.clone()
    };

    let ports = match (&args.ports, args.top_ports) {
        (Some(spec), _) => PortSet::parse(spec)?,
        (None, Some(n)) => PortSet::top(n)?,
        (None, None) => PortSet::top(1000)?,
    };
    let profile = match args.profile {
        ProfileArg::Fast => Profile::Fast,
        ProfileArg::Normal => Profile::Normal,
        ProfileArg::Stealth => Profile::Stealth,
    };
    let mut options = ScanOptions::new(profile);
    options.rate = args.rate;
    options.retries = args.retries;
    if let Some(text) = &args.timeout {
        options.timeout = Some(parse_duration("--timeout", text)?);
    }
    options.seed = Some(rand_seed());
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
    }))?;

    // Host names of environments resolve to addresses: those addresses belong
    // to the environment too.
    let mut named: BTreeMap<IpAddr, &Environment> = BTreeMap::new();
    for (name, addresses) in &info.resolved {
        if let Some(env) = selected.iter().find(|e| e.hosts.contains(name)) {
            for address in addresses {
                named.insert(*address, env);
            }
        }
    }
    let environment_of = |address: IpAddr| -> Option<&Environment> {
        inventory
            .environment_of(address)
            .or_else(|| named.get(&address).copied())
    };
    let findings = evaluate(&results, &vantage, today(), environment_of);
    for (idx, finding) in findings {
        if let Some(result) = results.get_mut(idx) {
            result.findings.push(finding);
        }
    }

    match args.format {
        ScanFormat::Human => {
            print!("{}", to_human(&info, &results, terminal.stdout_style()));
            println!(
                "\nverified from {}",
                if vantage.is_empty() {
                    "an unknown address".to_owned()
                } else {
                    vantage
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
        }
        ScanFormat::Json | ScanFormat::Jsonl => {
            let mut doc = to_json(&info, &results);
            if let Some(map) = doc.as_object_mut() {
                map.insert(
                    "verify".into(),
                    serde_json::json!({
                        "inventory": inventory.path.as_ref().map(|p| p.display().to_string()),
                        "vantage": vantage.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "environments": selected.iter().map(|e| e.name.clone()).collect::<Vec<_>>(),
                    }),
                );
            }
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        ScanFormat::Xml => print!("{}", to_nmap_xml(&info, &results, "perimeter verify")),
    }
    if interrupted {
        return Ok(exit_codes::INTERRUPTED);
    }
    let threshold: Severity = args.fail_on.into();
    Ok(
        if results
            .iter()
            .flat_map(|r| &r.findings)
            .any(|f| f.severity >= threshold)
        {
            exit_codes::FINDINGS
        } else {
            exit_codes::CLEAN
        },
    )
}

/// This machine's own routable addresses (not loopback or link-local), in the namespace perimeter runs
/// in: the sources the targets see.
fn own_addresses() -> Vec<IpAddr> {
    perimeter_host::interfaces::read_interfaces()
        .map(|interfaces| {
            let mut addresses: Vec<IpAddr> = interfaces
                .into_iter()
                .map(|i| i.address)
                // Link-local addresses never leave the link: a target on
                // another network cannot see them as the source.
                .filter(|a| {
                    !matches!(
                        perimeter_model::Scope::of(*a),
                        perimeter_model::Scope::Loopback
                            | perimeter_model::Scope::LinkLocal
                            | perimeter_model::Scope::Wildcard
                    )
                })
                .collect();
            addresses.sort();
            addresses.dedup();
            addresses
        })
        .unwrap_or_default()
}

/// The environment findings for open results, as (result index, finding).
/// Pure, so the policy is unit-tested without a network.
fn evaluate<'a>(
    results: &[PortResult],
    vantage: &[IpAddr],
    today: time::Date,
    environment_of: impl Fn(IpAddr) -> Option<&'a Environment>,
) -> Vec<(usize, Finding)> {
    let mut findings = Vec::new();
    let mut hosts_done: BTreeSet<IpAddr> = BTreeSet::new();
    let from = if vantage.is_empty() {
        "this scanner".to_owned()
    } else {
        vantage
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (idx, result) in results.iter().enumerate() {
        if result.state != PortState::Open {
            continue;
        }
        let subject = match result.address {
            IpAddr::V6(v6) => format!("[{v6}]:{}", result.port),
            v4 => format!("{v4}:{}", result.port),
        };
        let Some(env) = environment_of(result.address) else {
            if hosts_done.insert(result.address) {
                findings.push((
                    idx,
                    Finding::new(
                        ENV_UNKNOWN_HOST,
                        Severity::Medium,
                        &subject,
                        format!(
                            "{} answers but belongs to no environment of the inventory",
                            result.address
                        ),
                    )
                    .with_evidence(format!("tcp/{} open", result.port))
                    .with_remedy("add the host to an environment (and an owner), or take it down"),
                ));
            }
            continue;
        };
        // The scanner counts as allowed when any of its addresses is in
        // allow_from; with no known address it is treated as outside.
        let allowed = vantage.iter().any(|v| env.allows_source(*v));
        if env.kind.is_restricted() && !allowed {
            findings.push((
                idx,
                Finding::new(
                    ENV_DEV_REACHABLE,
                    Severity::High,
                    &subject,
                    format!(
                        "{} environment `{}`: {subject} answered {from}, which is outside allow_from",
                        env.kind, env.name
                    ),
                )
                .with_evidence(format!(
                    "allow_from: {}",
                    env.allow_from.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                ))
                .with_remedy("firewall the host to allow_from only"),
            ));
        }
        if env.kind == EnvKind::Prod && !allowed && !env.public_ports.contains(&result.port) {
            findings.push((
                idx,
                Finding::new(
                    ENV_PROD_UNEXPECTED_PORT,
                    Severity::High,
                    &subject,
                    format!(
                        "prod environment `{}`: port {} answered {from} but is not in public_ports {:?}",
                        env.name, result.port, env.public_ports
                    ),
                )
                .with_remedy("close the port to the outside, or add it to public_ports if it is meant to be public"),
            ));
        }
        if env.kind == EnvKind::Experiment {
            if let Some(days) = env.days_overdue(today).filter(|d| *d > 0) {
                if hosts_done.insert(result.address) {
                    findings.push((
                        idx,
                        Finding::new(
                            ENV_EXPIRED,
                            Severity::High,
                            &subject,
                            format!(
                                "experiment `{}` expired {days} days ago and {} still answers",
                                env.name, result.address
                            ),
                        )
                        .with_evidence(format!(
                            "expires: {}",
                            env.expires.map(|d| d.to_string()).unwrap_or_default()
                        ))
                        .with_evidence(format!(
                            "owner: {}",
                            env.owner.as_deref().unwrap_or("(none)")
                        ))
                        .with_remedy("tear the experiment down, or extend `expires` with a reason"),
                    ));
                }
            }
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use perimeter_checks::environments::parse_inventory;
    use perimeter_model::Protocol;

    fn open(address: &str, port: u16) -> PortResult {
        PortResult {
            address: address.parse().expect("ip"),
            port,
            protocol: Protocol::Tcp,
            state: PortState::Open,
            service: None,
            findings: vec![],
        }
    }

    #[test]
    fn policy_from_outside_and_inside() {
        let inventory = parse_inventory(
            r#"
[[environment]]
name = "prod"
kind = "prod"
ranges = ["198.18.10.0/24"]
public_ports = [443]
allow_from = ["198.18.99.0/24"]

[[environment]]
name = "dev"
kind = "dev"
ranges = ["198.18.20.0/24"]
allow_from = ["198.18.99.0/24"]

[[environment]]
name = "scratch"
kind = "experiment"
ranges = ["198.18.30.0/24"]
allow_from = ["198.18.99.0/24"]
expires = 2026-11-01
"#,
            std::path::Path::new("perimeter.toml"),
        )
        .expect("inventory");
        let results = vec![
            open("198.18.10.5", 443),
            open("198.18.10.5", 22),
            open("198.18.20.5", 8080),
            open("198.18.30.5", 22),
            open("198.18.30.5", 80),
            open("198.18.40.5", 80),
            open("198.18.40.5", 81),
        ];
        let today = time::macros::date!(2026 - 11 - 25);
        let rules = |vantage: &[&str]| -> Vec<String> {
            let vantage: Vec<IpAddr> = vantage.iter().map(|v| v.parse().expect("ip")).collect();
            evaluate(&results, &vantage, today, |a| inventory.environment_of(a))
                .into_iter()
                .map(|(idx, f)| format!("{} {}", f.rule, results[idx].port))
                .collect()
        };
        assert_eq!(
            rules(&["198.18.50.1"]),
            vec![
                "env.prod-unexpected-port 22",
                "env.dev-reachable 8080",
                "env.dev-reachable 22",
                "env.expired 22",
                "env.dev-reachable 80",
                "env.unknown-host 80",
            ]
        );
        // From the admin network, only what never depends on the vantage.
        assert_eq!(
            rules(&["198.18.99.7"]),
            vec!["env.expired 22", "env.unknown-host 80"]
        );
    }
}
