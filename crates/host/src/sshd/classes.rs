//! The classes of client source address that a configuration's `Match`
//! blocks treat alike (by their `Address` and, with `UseDNS no`, `Host`
//! criteria), each with one address inside it to evaluate.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use super::config::{Criterion, CriterionKind, MatchLine, SshdConfig};
use super::matching::{Connection, addr_pton_cidr, in_network, match_pattern};

/// Source addresses picked for "any other address": documentation ranges
/// (RFC 5737, RFC 3849), which no real client uses. They are only evaluation
/// parameters; nothing is ever sent to them.
const OTHER_ADDRESSES: [&str; 8] = [
    "198.51.100.7",
    "203.0.113.7",
    "192.0.2.7",
    "2001:db8::7",
    "198.51.100.201",
    "203.0.113.201",
    "192.0.2.201",
    "2001:db8:ffff::7",
];

/// A class of client source addresses that the configuration treats alike,
/// with one address inside it to evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceClass {
    /// In words: `Address 10.0.0.0/8 (/etc/ssh/sshd_config:12)`, or `any other
    /// address`.
    pub description: String,
    pub addr: IpAddr,
}

/// The classes of source address that behave differently under the `Match`
/// blocks' `Address` (and, with `UseDNS no`, `Host`) criteria: one per
/// distinct set of blocks an address can satisfy, including "none of them".
///
/// Candidate addresses are drawn from inside every positive CIDR entry (its
/// first, middle and last hosts, and the addresses around every block nested
/// in it) and from wildcard patterns; each candidate's signature is the set
/// of blocks whose address criteria it satisfies. "Any other address" (first
/// in the result) comes from documentation ranges that match no pattern.
pub fn source_classes(config: &SshdConfig) -> Vec<SourceClass> {
    let blocks: Vec<(&Path, &MatchLine, Vec<&Criterion>)> = config
        .match_lines()
        .into_iter()
        .map(|(file, m)| {
            let address_criteria = m
                .criteria
                .iter()
                .filter(|c| matches!(c.kind, CriterionKind::Address | CriterionKind::Host))
                .collect::<Vec<_>>();
            (file, m, address_criteria)
        })
        .filter(|(_, _, criteria)| !criteria.is_empty())
        .collect();

    let other_candidates = || {
        OTHER_ADDRESSES
            .iter()
            .filter_map(|a| a.parse::<IpAddr>().ok())
    };
    if blocks.is_empty() {
        return vec![SourceClass {
            description: "any address".to_owned(),
            addr: other_candidates()
                .next()
                .unwrap_or(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7))),
        }];
    }

    let networks: Vec<(IpAddr, u8)> = blocks
        .iter()
        .flat_map(|(_, _, criteria)| criteria.iter())
        .flat_map(|c| c.patterns.split(','))
        .filter(|entry| !entry.starts_with('!'))
        .filter_map(|entry| addr_pton_cidr(entry).ok().flatten())
        .collect();
    let mut candidates: Vec<IpAddr> = Vec::new();
    for &(network, len) in &networks {
        candidates.extend(hosts_in(network, len));
        for &(inner, inner_len) in &networks {
            if inner_len > len && in_network(inner, network, len) {
                candidates.extend(
                    around(inner, inner_len)
                        .into_iter()
                        .filter(|a| in_network(*a, network, len)),
                );
            }
        }
    }
    for (_, _, criteria) in &blocks {
        for entry in criteria.iter().flat_map(|c| c.patterns.split(',')) {
            if !entry.starts_with('!') && addr_pton_cidr(entry).ok().flatten().is_none() {
                candidates.extend(wildcard_candidates(entry));
            }
        }
    }
    candidates.extend(other_candidates());

    let signature = |addr: IpAddr| -> Vec<bool> {
        let conn = Connection {
            addr: Some(addr),
            host: Some(addr.to_string()),
            ..Connection::default()
        };
        blocks
            .iter()
            .map(|(_, _, criteria)| criteria.iter().all(|c| c.matches(&conn)))
            .collect()
    };
    let mut seen: Vec<Vec<bool>> = Vec::new();
    let mut classes: Vec<(Vec<bool>, IpAddr)> = Vec::new();
    for addr in candidates {
        let sig = signature(addr);
        if !seen.contains(&sig) {
            seen.push(sig.clone());
            classes.push((sig, addr));
        }
    }
    // "Any other address" (the Internet, usually the class that matters
    // most) first, so a capped evaluation never loses it; then the classes by
    // the file order of the first block that applies to them.
    classes.sort_by_key(|(sig, _)| sig.iter().position(|&m| m).map_or(0, |pos| pos + 1));
    classes
        .into_iter()
        .map(|(sig, addr)| {
            let matched: Vec<String> = sig
                .iter()
                .zip(&blocks)
                .filter(|(m, _)| **m)
                .map(|(_, (file, m, criteria))| {
                    let words: Vec<String> = criteria
                        .iter()
                        .map(|c| format!("{} {}", c.kind.as_str(), c.patterns))
                        .collect();
                    format!("{} ({}:{})", words.join(" "), file.display(), m.line)
                })
                .collect();
            let description = if matched.is_empty() {
                "any other address".to_owned()
            } else {
                matched.join("; ")
            };
            SourceClass { description, addr }
        })
        .collect()
}

/// A few hosts inside a network: first, middle, last (or the address itself).
fn hosts_in(network: IpAddr, len: u8) -> Vec<IpAddr> {
    match network {
        IpAddr::V4(v4) => {
            let base = u32::from(v4);
            let size = 1u64 << (32 - u32::from(len));
            let offsets: Vec<u64> = if size <= 2 {
                vec![0]
            } else {
                vec![1, size / 2 + 1, size - 2]
            };
            offsets
                .into_iter()
                .filter_map(|o| u32::try_from(o).ok())
                .map(|o| IpAddr::V4(Ipv4Addr::from(base.wrapping_add(o))))
                .collect()
        }
        IpAddr::V6(v6) => {
            let base = u128::from(v6);
            let bits = 128 - u32::from(len);
            if bits == 0 {
                return vec![network];
            }
            let size_minus_one = u128::MAX >> (128 - bits);
            let offsets = if bits == 1 {
                vec![0]
            } else {
                vec![1, size_minus_one / 2 + 2, size_minus_one - 1]
            };
            offsets
                .into_iter()
                .map(|o| IpAddr::V6(Ipv6Addr::from(base.wrapping_add(o))))
                .collect()
        }
    }
}

/// The addresses just outside a network, on both sides.
fn around(network: IpAddr, len: u8) -> Vec<IpAddr> {
    match network {
        IpAddr::V4(v4) => {
            let base = u32::from(v4);
            let last = base | u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            [base.checked_sub(1), last.checked_add(1)]
                .into_iter()
                .flatten()
                .map(|a| IpAddr::V4(Ipv4Addr::from(a)))
                .collect()
        }
        IpAddr::V6(v6) => {
            let base = u128::from(v6);
            let last = base | u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            [base.checked_sub(1), last.checked_add(1)]
                .into_iter()
                .flatten()
                .map(|a| IpAddr::V6(Ipv6Addr::from(a)))
                .collect()
        }
    }
}

/// Addresses that a wildcard pattern (`192.168.*`, `10.?.1.1`, `fe80::*`)
/// matches, found by filling the wildcards with a few likely pieces.
fn wildcard_candidates(pattern: &str) -> Vec<IpAddr> {
    const FILLS: [&str; 6] = ["1", "10", "1.1", "1.1.1", "0.1", "1:1"];
    let mut found = Vec::new();
    for fill in FILLS {
        let text = pattern.replace('*', fill).replace('?', "1");
        if let Ok(addr) = text.parse::<IpAddr>()
            && match_pattern(&addr.to_string(), pattern)
            && !found.contains(&addr)
        {
            found.push(addr);
        }
    }
    found
}
