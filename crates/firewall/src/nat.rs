//! The ports a ruleset's DNATs forward, read from the rules themselves: where
//! nothing on the host listens (a port forwarded to a VM, a Kubernetes
//! hostPort, Docker without its userland proxy) the socket list shows
//! nothing, and these rules are the only sign that the port is open.
//!
//! This only proposes candidates: the protocol, port and (where a rule names
//! one) local address each DNAT rule tests, together with the tests of the
//! jumps and gotos that lead to its chain. Whether a connection to a
//! candidate is really translated, and who gets through, is the walker's
//! answer ([`crate::reachability::published`]); a candidate the walk finds
//! no DNAT for is dropped by the caller. A DNAT whose ports cannot be told
//! (none tested, a negation, a set kept elsewhere) is named, not guessed.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use perimeter_model::Protocol;
use perimeter_model::addrset::AddrFamily;

use crate::ir::{Backend, Chain, Condition, Family, Field, Hook, Op, Ruleset, Value, Verdict};

/// One port some DNAT rule may forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ForwardedPort {
    pub protocol: Protocol,
    pub family: AddrFamily,
    /// The local address the rule (or the path to it) requires, when it
    /// names exactly one; `None` for every local address.
    pub dst: Option<IpAddr>,
    pub port: u16,
}

/// How deep the jumps leading to a DNAT rule are followed, and how many
/// paths are kept per chain: Docker's and CNI's chains are two or three deep.
const MAX_DEPTH: usize = 8;
const MAX_PATHS: usize = 32;
/// How many chains one DNAT's search may visit: chains that jump to each
/// other many times over would otherwise make the search exponential.
const MAX_VISITS: usize = 4096;

/// The candidate ports of every DNAT rule in a nat table with a prerouting
/// chain, at most `limit` of them, and one line for each DNAT whose ports
/// could not be told (and for what `limit` cut off). A DNAT whose path names
/// a destination address that is not `local` translates connections to
/// another address (a Kubernetes ClusterIP, a virtual service address), not
/// to a port of this host: it proposes nothing.
pub fn forwarded_ports(
    ruleset: &Ruleset,
    limit: usize,
    local: impl Fn(IpAddr) -> bool,
) -> (Vec<ForwardedPort>, Vec<String>) {
    let mut found = BTreeSet::new();
    let mut unlisted = Vec::new();
    let mut cut = 0usize;
    let callers = callers(ruleset);
    for (chain_idx, chain) in ruleset.chains.iter().enumerate() {
        if !in_nat_prerouting_table(ruleset, chain) {
            continue;
        }
        for rule in &chain.rules {
            let Some(Verdict::Dnat(target)) = &rule.verdict else {
                continue;
            };
            let families: Vec<AddrFamily> = match (chain.family, target.addr) {
                (Family::Ip, _) => vec![AddrFamily::V4],
                (Family::Ip6, _) => vec![AddrFamily::V6],
                (Family::Inet, Some(IpAddr::V4(_))) => vec![AddrFamily::V4],
                (Family::Inet, Some(IpAddr::V6(_))) => vec![AddrFamily::V6],
                (Family::Inet, None) => vec![AddrFamily::V4, AddrFamily::V6],
                _ => continue,
            };
            let mut listed = false;
            let mut why_not = None;
            let mut visits = MAX_VISITS;
            for path in paths_to(ruleset, &callers, chain_idx, 0, &mut visits) {
                let conditions = || path.iter().copied().chain(rule.conditions.iter());
                if destination(conditions()).is_some_and(|dst| !local(dst)) {
                    continue;
                }
                match candidates(conditions()) {
                    Ok(ports) => {
                        for (protocol, dst, port) in ports {
                            for &family in &families {
                                if dst.is_some_and(|d| {
                                    d.is_ipv4() != (family == AddrFamily::V4) || !local(d)
                                }) {
                                    continue;
                                }
                                let candidate = ForwardedPort {
                                    protocol,
                                    family,
                                    dst,
                                    port,
                                };
                                if found.contains(&candidate) {
                                    continue;
                                }
                                if found.len() >= limit {
                                    cut += 1;
                                    continue;
                                }
                                found.insert(candidate);
                                listed = true;
                            }
                        }
                    }
                    Err(why) => why_not = Some(why),
                }
            }
            if let Some(why) = why_not.filter(|_| !listed) {
                unlisted.push(format!(
                    "{}: `{}` forwards {why}: not listed port by port",
                    chain.describe(),
                    rule.text
                ));
            }
        }
    }
    if cut > 0 {
        unlisted.push(format!(
            "{cut} more forwarded ports beyond the first {limit} are not listed"
        ));
    }
    (found.into_iter().collect(), unlisted)
}

/// Whether `chain` is in a nat table some prerouting nat chain belongs to:
/// where a DNAT for inbound connections can be.
fn in_nat_prerouting_table(ruleset: &Ruleset, chain: &Chain) -> bool {
    ruleset.chains.iter().any(|base| {
        base.backend == chain.backend
            && base.family == chain.family
            && base.table == chain.table
            && base
                .base
                .as_ref()
                .is_some_and(|b| b.hook == Hook::Prerouting && b.chain_type == "nat")
    })
}

/// For each chain, the rules that jump or go to it: (the caller's index,
/// the rule's index in it). Built once, so that a ruleset of thousands of
/// chains (kube-proxy's) is not searched once per DNAT.
type Callers = HashMap<usize, Vec<(usize, usize)>>;

fn callers(ruleset: &Ruleset) -> Callers {
    let mut by_name: HashMap<(Backend, Family, &str, &str), usize> = HashMap::new();
    for (idx, chain) in ruleset.chains.iter().enumerate() {
        by_name
            .entry((chain.backend, chain.family, &chain.table, &chain.name))
            .or_insert(idx);
    }
    let mut callers: Callers = HashMap::new();
    for (caller_idx, caller) in ruleset.chains.iter().enumerate() {
        for (rule_idx, rule) in caller.rules.iter().enumerate() {
            let target = match &rule.verdict {
                Some(Verdict::Jump(name) | Verdict::Goto(name)) => name,
                _ => continue,
            };
            if let Some(&chain_idx) = by_name.get(&(
                caller.backend,
                caller.family,
                &caller.table,
                target.as_str(),
            )) {
                callers
                    .entry(chain_idx)
                    .or_default()
                    .push((caller_idx, rule_idx));
            }
        }
    }
    callers
}

/// The conditions of the rules that jump or go to `chain_idx`, one list per
/// way of getting there from a base chain (empty for a base chain itself).
/// A chain nothing reaches has no path, and its DNATs forward nothing.
fn paths_to<'a>(
    ruleset: &'a Ruleset,
    callers: &Callers,
    chain_idx: usize,
    depth: usize,
    visits: &mut usize,
) -> Vec<Vec<&'a Condition>> {
    let Some(chain) = ruleset.chains.get(chain_idx) else {
        return Vec::new();
    };
    if *visits == 0 {
        return Vec::new();
    }
    *visits -= 1;
    if chain.base.is_some() {
        return vec![Vec::new()];
    }
    if depth >= MAX_DEPTH {
        return Vec::new();
    }
    let mut paths = Vec::new();
    for &(caller_idx, rule_idx) in callers.get(&chain_idx).into_iter().flatten() {
        let Some(rule) = ruleset
            .chains
            .get(caller_idx)
            .and_then(|caller| caller.rules.get(rule_idx))
        else {
            continue;
        };
        for mut path in paths_to(ruleset, callers, caller_idx, depth + 1, visits) {
            if paths.len() >= MAX_PATHS {
                return paths;
            }
            path.extend(rule.conditions.iter());
            paths.push(path);
        }
    }
    paths
}

/// The (protocol, local address, port) triples a list of conditions admits,
/// or why they cannot be told.
fn candidates<'a>(
    conditions: impl Iterator<Item = &'a Condition> + Clone,
) -> Result<Vec<(Protocol, Option<IpAddr>, u16)>, String> {
    let mut protocols: Option<Vec<Protocol>> = None;
    let mut ports: Option<Vec<u16>> = None;
    let dst = destination(conditions.clone());
    let both = || vec![Protocol::Tcp, Protocol::Udp];
    for condition in conditions {
        let Condition::Match { field, op, value } = condition else {
            continue;
        };
        match field {
            Field::Payload { protocol, field } if field == "dport" => {
                if !matches!(op, Op::Eq | Op::In) {
                    return Err(format!("every port but `{value}`"));
                }
                let these = port_values(value)
                    .ok_or_else(|| format!("the ports `{value}`, which are not read"))?;
                ports = Some(match ports {
                    Some(before) => before.into_iter().filter(|p| these.contains(p)).collect(),
                    None => these,
                });
                let named = match protocol.as_str() {
                    "tcp" => vec![Protocol::Tcp],
                    "udp" => vec![Protocol::Udp],
                    _ => both(),
                };
                protocols = Some(intersect(protocols, named));
            }
            Field::Meta(key) if key == "l4proto" && matches!(op, Op::Eq | Op::In) => {
                let named: Vec<Protocol> = both()
                    .into_iter()
                    .filter(|p| names_protocol(value, *p))
                    .collect();
                protocols = Some(intersect(protocols, named));
            }
            _ => {}
        }
    }
    let Some(ports) = ports else {
        return Err("every port".to_owned());
    };
    let protocols = protocols.unwrap_or_else(both);
    Ok(protocols
        .into_iter()
        .flat_map(|protocol| ports.iter().map(move |&port| (protocol, dst, port)))
        .collect())
}

/// The one destination address the conditions require (`-d ADDR/32`, `ip
/// daddr ADDR`), if they name one.
fn destination<'a>(conditions: impl Iterator<Item = &'a Condition>) -> Option<IpAddr> {
    let mut dst = None;
    for condition in conditions {
        if let Condition::Match {
            field: Field::Payload { protocol, field },
            op: Op::Eq,
            value,
        } = condition
            && (protocol == "ip" || protocol == "ip6")
            && field == "daddr"
            && let Some(addr) = one_address(value)
        {
            dst = Some(addr);
        }
    }
    dst
}

fn intersect(before: Option<Vec<Protocol>>, named: Vec<Protocol>) -> Vec<Protocol> {
    match before {
        Some(before) => before.into_iter().filter(|p| named.contains(p)).collect(),
        None => named,
    }
}

fn names_protocol(value: &Value, protocol: Protocol) -> bool {
    let number = match protocol {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
    };
    match value {
        Value::Number(n) => *n == number,
        Value::Text(text) => {
            text.eq_ignore_ascii_case(protocol.as_str()) || text.parse::<u64>() == Ok(number)
        }
        Value::Set(values) => values.iter().any(|v| names_protocol(v, protocol)),
        _ => false,
    }
}

/// The ports a `dport` value names: a number, a range of at most 64 ports,
/// a set of those; `None` for anything else (a named set, a wide range).
fn port_values(value: &Value) -> Option<Vec<u16>> {
    let number = |v: &Value| match v {
        Value::Number(n) => u16::try_from(*n).ok(),
        Value::Text(text) => text.parse::<u16>().ok(),
        _ => None,
    };
    match value {
        Value::Number(_) | Value::Text(_) => Some(vec![number(value)?]),
        Value::Range(low, high) => range(number(low)?, number(high)?),
        Value::Set(values) => {
            let mut out = Vec::new();
            for value in values {
                out.extend(port_values(value)?);
            }
            Some(out)
        }
        _ => None,
    }
}

fn range(low: u16, high: u16) -> Option<Vec<u16>> {
    (low <= high && high - low < 64).then(|| (low..=high).collect())
}

/// The one address a `daddr` value names (a text address or a full-length
/// prefix).
fn one_address(value: &Value) -> Option<IpAddr> {
    match value {
        Value::Text(text) => text.parse().ok(),
        Value::Prefix { addr, len } => {
            let full = if addr.is_ipv4() { 32 } else { 128 };
            (*len == full).then_some(*addr)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_iptables_save;

    fn ports(save: &str) -> (Vec<String>, Vec<String>) {
        let ruleset =
            parse_iptables_save(save, AddrFamily::V4, Backend::IptablesLegacy).expect("parses");
        let local: [IpAddr; 2] = [
            "198.18.0.1".parse().expect("literal"),
            "198.18.0.9".parse().expect("literal"),
        ];
        let (found, unlisted) = forwarded_ports(&ruleset, 8, |addr| local.contains(&addr));
        let found = found
            .iter()
            .map(|p| {
                format!(
                    "{}/{} {}",
                    p.protocol,
                    p.port,
                    p.dst.map_or("*".to_owned(), |d| d.to_string())
                )
            })
            .collect();
        (found, unlisted)
    }

    /// A port forward to a VM, Kubernetes' hostPort chains (the port tested
    /// on the way in, again in the DNAT's own chain), a DNAT with no port,
    /// a chain nothing jumps to, a kube-proxy ClusterIP (not an address of
    /// this host: nothing) and a NodePort (every local address).
    #[test]
    fn dnat_rules_and_the_jumps_to_them_name_the_ports() {
        let (found, unlisted) = ports(
            "*nat\n\
             :PREROUTING ACCEPT [0:0]\n\
             :CNI-HOSTPORT-DNAT - [0:0]\n\
             :CNI-DN-1 - [0:0]\n\
             :ORPHAN - [0:0]\n\
             :KUBE-SVC-X - [0:0]\n\
             :KUBE-NODEPORTS - [0:0]\n\
             :KUBE-EXT-Y - [0:0]\n\
             -A PREROUTING -d 198.18.0.1/32 -p tcp -m tcp --dport 2222 -j DNAT --to-destination 198.18.5.2:22\n\
             -A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT\n\
             -A PREROUTING -d 198.18.0.9/32 -j DNAT --to-destination 198.18.5.9\n\
             -A CNI-HOSTPORT-DNAT -p tcp -m multiport --dports 8080,8443 -j CNI-DN-1\n\
             -A CNI-DN-1 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.88.0.5:80\n\
             -A CNI-DN-1 -p tcp -m tcp --dport 8443 -j DNAT --to-destination 10.88.0.5:443\n\
             -A ORPHAN -p udp -m udp --dport 53 -j DNAT --to-destination 198.18.5.3:53\n\
             -A PREROUTING -d 10.96.0.10/32 -p udp -m udp --dport 53 -j KUBE-SVC-X\n\
             -A KUBE-SVC-X -j DNAT --to-destination 10.244.0.5:53\n\
             -A PREROUTING -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n\
             -A KUBE-NODEPORTS -p tcp -m tcp --dport 30080 -j KUBE-EXT-Y\n\
             -A KUBE-EXT-Y -j DNAT --to-destination 10.244.0.6:80\n\
             COMMIT\n",
        );
        assert_eq!(
            found,
            [
                "tcp/8080 *",
                "tcp/8443 *",
                "tcp/30080 *",
                "tcp/2222 198.18.0.1"
            ],
            "{unlisted:?}"
        );
        assert_eq!(unlisted.len(), 1, "{unlisted:?}");
        assert!(unlisted[0].contains("forwards every port"), "{unlisted:?}");
    }

    #[test]
    fn a_range_is_listed_up_to_the_limit_and_the_rest_counted() {
        let (found, unlisted) = ports(
            "*nat\n\
             :PREROUTING ACCEPT [0:0]\n\
             -A PREROUTING -p udp -m udp --dport 6000:6009 -j DNAT --to-destination 198.18.5.2\n\
             -A PREROUTING -p tcp -m tcp ! --dport 22 -j DNAT --to-destination 198.18.5.3\n\
             COMMIT\n",
        );
        assert_eq!(found.len(), 8);
        assert_eq!(found[0], "udp/6000 *");
        assert!(
            unlisted.iter().any(|l| l.contains("every port but")),
            "{unlisted:?}"
        );
        assert!(
            unlisted
                .iter()
                .any(|l| l.starts_with("2 more forwarded ports")),
            "{unlisted:?}"
        );
    }
}
