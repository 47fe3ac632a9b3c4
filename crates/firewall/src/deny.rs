//! Whether a ruleset denies new inbound connections by default, per family.

use perimeter_model::{FirewallVerdict, Problem, Protocol};

use crate::iptables::parse_iptables_save;
use crate::ir::*;
use crate::nft::parse_nft_json;
use crate::reachability::{describe_sources, reachability_by_default};

/// Whether the ruleset drops new inbound connections that no rule allowed, for
/// both IPv4 and IPv6.
///
/// The verdict comes from the same walk as a listener's reachability
/// ([`reachability_by_default`]): a new TCP or UDP connection from anywhere,
/// to a local address and port no rule names, arriving on an interface no
/// rule names, is followed through every input base chain, jumps, returns,
/// gotos and verdict maps as the kernel would. A family is denied by default
/// when no source can open either; open when some source can; and when the
/// walk cannot decide (a test it does not model), the verdict is unknown,
/// never a guess from how a chain ends. So the verdict cannot contradict
/// the listeners' reachability: ufw's `ufw-not-local` chain ends in a drop,
/// but it returns first for every local destination, and the walk follows
/// that return.
pub fn default_deny(ruleset: &Ruleset) -> FirewallVerdict {
    let input_chains: Vec<&Chain> = ruleset
        .chains
        .iter()
        .filter(|c| {
            c.base
                .as_ref()
                .is_some_and(|b| b.hook == Hook::Input && b.chain_type == "filter")
                && (c.family.sees(AddrFamily::V4) || c.family.sees(AddrFamily::V6))
        })
        .collect();
    if input_chains.is_empty() {
        return FirewallVerdict::Open {
            evidence: vec!["no input base chain".to_owned()],
        };
    }

    let mut denials: Vec<String> = Vec::new();
    let mut unknowns: Vec<String> = Vec::new();
    let mut gaps: Vec<String> = Vec::new();
    for version in [AddrFamily::V4, AddrFamily::V6] {
        let v = version.as_str();
        if !input_chains.iter().any(|c| c.family.sees(version)) {
            let mut families: Vec<&str> = input_chains.iter().map(|c| c.family.as_str()).collect();
            families.dedup();
            gaps.push(format!(
                "{v}: no input chain sees {v} packets (input chains exist only in family {}), so {v} is not filtered",
                families.join(" and "),
            ));
            continue;
        }
        let mut opened = Vec::new();
        let mut undecided = Vec::new();
        let mut denied = Vec::new();
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            let reach = reachability_by_default(ruleset, protocol, version);
            if !reach.allowed.is_empty() && !mostly_open(&reach.allowed, version) {
                // Trusted sources (an office, a VPN, a bastion) may open any
                // port; everyone else is denied: that is default-deny, with
                // its exception said.
                let line = format!(
                    "{v}: a new {protocol} connection to a port no rule names is accepted only from {} and denied from everywhere else",
                    describe_sources(&reach.allowed, version)
                );
                if !denied.contains(&line) {
                    denied.push(line);
                }
                continue;
            }
            if !reach.allowed.is_empty() {
                let by: Vec<String> = reach
                    .accepting_rules
                    .iter()
                    .map(|rule| match (rule.by_policy, rule.handle) {
                        (true, _) => format!("{}: policy accept", rule.chain),
                        (false, Some(handle)) if rule.chain.starts_with("nftables") => {
                            format!("{}: rule handle {handle} `{}`", rule.chain, rule.text)
                        }
                        (false, Some(position)) => {
                            format!("{}: rule {position} `{}`", rule.chain, rule.text)
                        }
                        (false, None) => format!("{}: rule `{}`", rule.chain, rule.text),
                    })
                    .collect();
                opened.push(format!(
                    "{v}: a new {protocol} connection to a port no rule names is accepted from {} by {}",
                    describe_sources(&reach.allowed, version),
                    by.join(" and ")
                ));
            } else if let Some((_, reason)) = reach.unknown.first() {
                undecided.push(format!(
                    "{v}: whether a new {protocol} connection to a port no rule names is accepted cannot be decided: {reason}"
                ));
            } else {
                denied.extend(
                    reach
                        .evidence
                        .into_iter()
                        .filter(|line| line.contains(" denied by ")),
                );
            }
        }
        if !opened.is_empty() {
            gaps.extend(opened);
        } else if !undecided.is_empty() {
            unknowns.extend(undecided);
        } else {
            for line in denied {
                if !denials.contains(&line) {
                    denials.push(line);
                }
            }
        }
    }

    if !gaps.is_empty() {
        // What denies one family only, then what leaves the other open.
        denials.extend(unknowns);
        denials.extend(gaps);
        FirewallVerdict::Open { evidence: denials }
    } else if !unknowns.is_empty() {
        FirewallVerdict::Unknown(unknowns.join("; "))
    } else {
        FirewallVerdict::DefaultDeny { evidence: denials }
    }
}

/// Whether `allowed` covers at least half of the family's addresses: a
/// ruleset that lets most of the world open any port is not denying by
/// default, whatever few sources it blocks; one that lets a few trusted
/// networks in and drops the rest is.
fn mostly_open(allowed: &[ipnet::IpNet], version: AddrFamily) -> bool {
    let ranges = perimeter_model::addrset::AddrRanges::from_nets(allowed, version);
    let covered: f64 = ranges
        .iter()
        .map(|(low, high)| (high - low) as f64 + 1.0)
        .sum();
    let universe = match version {
        AddrFamily::V4 => 2f64.powi(32),
        AddrFamily::V6 => 2f64.powi(128),
    };
    covered >= universe / 2.0
}

/// `default_deny` on the output of `nft -j list ruleset`.
pub fn verdict_from_nft_json(text: &str) -> FirewallVerdict {
    match parse_nft_json(text) {
        Ok(ruleset) => default_deny(&ruleset),
        Err(err) => FirewallVerdict::Unknown(err.to_string()),
    }
}

/// `default_deny` on the outputs of `iptables-save` and `ip6tables-save` (of
/// one backend).
pub fn verdict_from_iptables_save(
    iptables: &str,
    ip6tables: &str,
    backend: Backend,
) -> FirewallVerdict {
    let mut ruleset = Ruleset::default();
    for (text, version) in [(iptables, AddrFamily::V4), (ip6tables, AddrFamily::V6)] {
        match parse_iptables_save(text, version, backend) {
            Ok(parsed) => ruleset.extend(parsed),
            Err(err) => return FirewallVerdict::Unknown(err.to_string()),
        }
    }
    default_deny(&ruleset)
}

/// The default-deny verdict of a ruleset read by `host::firewall::read_ruleset`, given
/// what could not be read: only a denial stands on partial information.
pub fn verdict_of(ruleset: &Ruleset, problems: &[Problem], unread: &[String]) -> FirewallVerdict {
    match default_deny(ruleset) {
        // A ruleset that could not be read might deny what the readable ones
        // let through, so only a denial stands on partial information.
        FirewallVerdict::Open { .. } if !unread.is_empty() => {
            let reason = problems
                .first()
                .map(|p| match &p.hint {
                    Some(hint) => format!("{} ({hint})", p.message),
                    None => p.message.clone(),
                })
                .unwrap_or_else(|| format!("could not read {}", unread.join(", ")));
            FirewallVerdict::Unknown(reason)
        }
        other => other,
    }
}
