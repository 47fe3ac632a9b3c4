//! What `verify` and the monitor's verify job share: the vantage point's own
//! addresses, and the env.* findings of a scan of the environments judged
//! against what the inventory allows from there.

use std::collections::BTreeMap;
use std::net::IpAddr;

use perimeter_checks::environments::Environments;
use perimeter_model::{Environment, PortResult, ScanInfo};

use crate::settings::today;

/// Adds the env.* findings to the results of the ports they are about.
/// Host names of the environments resolve to addresses: those addresses
/// belong to the environment too.
pub(crate) fn add_findings(
    inventory: &Environments,
    selected: &[&Environment],
    info: &ScanInfo,
    results: &mut [PortResult],
    vantage: &[IpAddr],
) {
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
    let findings = perimeter_checks::verify_findings(results, vantage, today(), environment_of);
    for (idx, finding) in findings {
        if let Some(result) = results.get_mut(idx) {
            result.findings.push(finding);
        }
    }
}

/// This machine's own routable addresses (not loopback or link-local), in
/// the namespace perimeter runs in: the sources the targets see.
pub(crate) fn own_addresses() -> Vec<IpAddr> {
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
