//! What a scan covered, worked out from its [`ScanInfo`] where the target and
//! port syntax is plain enough to read without the scan crate's grammar: so a
//! diff can tell "closed" from "not scanned this time".

use std::net::IpAddr;
use std::ops::RangeInclusive;

use ipnet::IpNet;
use perimeter_model::ScanInfo;

/// The addresses and ports one scan covered, each `None` when the scan's
/// spelling of them is beyond what this module reads.
///
/// Understood targets and excludes, as `perimeter-scan` spells them: IP
/// addresses, CIDR blocks, ranges (`198.18.0.10-198.18.0.20`, `198.18.0.10-20`
/// for the last octet, `2001:db8::1-2001:db8::ff`), and host names (through the
/// addresses [`ScanInfo::resolved`] recorded for them; a name that did not
/// resolve covers nothing). Anything else makes the addresses unknown.
///
/// Understood ports: `all` or `-`, and comma lists of ports and ranges
/// (`1000-2000`, `-1024`, `60000-`). Anything else, such as `top:100`, makes the
/// ports unknown.
///
/// This mirrors the scan crate's grammar rather than calling it, since the store
/// depends on the model alone; where the exact sets are at hand (the CLI has
/// the scan's `TargetSet` and `PortSet`), [`crate::diff_scans_within`] takes
/// them directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    addresses: Option<AddressSet>,
    ports: Option<Vec<RangeInclusive<u16>>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct AddressSet {
    included: Vec<RangeInclusive<IpAddr>>,
    excluded: Vec<RangeInclusive<IpAddr>>,
}

impl Coverage {
    pub fn of(info: &ScanInfo) -> Coverage {
        let included = ranges_of(&info.targets, info);
        let excluded = ranges_of(&info.excluded, info);
        let addresses = match (included, excluded) {
            (Some(included), Some(excluded)) => Some(AddressSet { included, excluded }),
            _ => None,
        };
        Coverage {
            addresses,
            ports: port_ranges(&info.ports),
        }
    }

    /// Whether the scan covered `address`; `None` when its targets are unknown.
    pub fn covers_address(&self, address: IpAddr) -> Option<bool> {
        self.addresses.as_ref().map(|set| {
            set.included.iter().any(|range| range.contains(&address))
                && !set.excluded.iter().any(|range| range.contains(&address))
        })
    }

    /// Whether the scan covered `port`; `None` when its port spec is unknown.
    pub fn covers_port(&self, port: u16) -> Option<bool> {
        self.ports
            .as_ref()
            .map(|ranges| ranges.iter().any(|range| range.contains(&port)))
    }
}

/// The address ranges a list of targets or excludes names; `None` if any item
/// is in a syntax this module does not read.
///
/// A range holds addresses of one family: `IpAddr` orders every IPv4 address
/// before every IPv6 one, and both ends are checked to be of the same family.
fn ranges_of(items: &[String], info: &ScanInfo) -> Option<Vec<RangeInclusive<IpAddr>>> {
    let mut ranges = Vec::new();
    for item in items {
        let item = item.trim();
        if let Ok(address) = item.parse::<IpAddr>() {
            ranges.push(address..=address);
        } else if let Ok(net) = item.parse::<IpNet>() {
            ranges.push(net.network()..=net.broadcast());
        } else if let Some(range) = address_range(item) {
            ranges.push(range);
        } else if looks_like_host_name(item) {
            let addresses = info
                .resolved
                .iter()
                .filter(|(name, _)| name.trim().eq_ignore_ascii_case(item))
                .flat_map(|(_, addresses)| addresses.iter().copied());
            ranges.extend(addresses.map(|address| address..=address));
        } else {
            return None;
        }
    }
    Some(ranges)
}

/// `first-last` with two addresses of one family, or `a.b.c.d-N` replacing the
/// last octet.
fn address_range(item: &str) -> Option<RangeInclusive<IpAddr>> {
    let (first, last) = item.split_once('-')?;
    let first: IpAddr = first.trim().parse().ok()?;
    let last = last.trim();
    let last = match (first, last.parse::<IpAddr>(), last.parse::<u8>()) {
        (_, Ok(last), _) => last,
        (IpAddr::V4(first_v4), _, Ok(last_octet)) => {
            let [a, b, c, _] = first_v4.octets();
            IpAddr::from([a, b, c, last_octet])
        }
        _ => return None,
    };
    (first.is_ipv4() == last.is_ipv4() && first <= last).then_some(first..=last)
}

/// Letters, digits, dots, hyphens and underscores with at least one letter: a
/// DNS name, where IPv6 text (with its colons) and mistyped ranges are not.
fn looks_like_host_name(item: &str) -> bool {
    !item.is_empty()
        && item.chars().any(|c| c.is_ascii_alphabetic())
        && item
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
}

fn port_ranges(spec: &str) -> Option<Vec<RangeInclusive<u16>>> {
    let spec = spec.trim();
    if spec.eq_ignore_ascii_case("all") {
        return Some(vec![0..=u16::MAX]);
    }
    let mut ranges = Vec::new();
    for item in spec
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let range = match item.split_once('-') {
            Some((low, high)) => low.trim().parse().ok()?..=high.trim().parse().ok()?,
            None => {
                let port: u16 = item.parse().ok()?;
                port..=port
            }
        };
        ranges.push(range);
    }
    if ranges.is_empty() {
        None
    } else {
        Some(ranges)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use time::macros::datetime;

    fn scan(targets: &[&str], excluded: &[&str], ports: &str) -> ScanInfo {
        ScanInfo {
            id: 0,
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
            resolved: vec![(
                "lab.example".to_owned(),
                vec!["198.18.5.5".parse().expect("test address")],
            )],
            excluded: excluded.iter().map(|t| (*t).to_owned()).collect(),
            ports: ports.to_owned(),
            profile: "default".to_owned(),
            seed: 1,
            options: BTreeMap::new(),
            started: datetime!(2024-01-01 0:00 UTC),
            finished: None,
            complete: false,
            n_probes: 0,
        }
    }

    fn address(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn addresses_cidrs_names_and_excludes() {
        let coverage = Coverage::of(&scan(
            &[
                "198.18.0.0/24",
                "198.19.0.7",
                "LAB.example",
                "unresolved.example",
            ],
            &["198.18.0.9"],
            "22",
        ));
        assert_eq!(coverage.covers_address(address("198.18.0.1")), Some(true));
        assert_eq!(coverage.covers_address(address("198.18.0.9")), Some(false));
        assert_eq!(coverage.covers_address(address("198.18.1.1")), Some(false));
        assert_eq!(coverage.covers_address(address("198.19.0.7")), Some(true));
        assert_eq!(coverage.covers_address(address("198.18.5.5")), Some(true));
    }

    #[test]
    fn address_ranges() {
        let coverage = Coverage::of(&scan(
            &[
                "198.18.0.10-20",
                "2001:db8::1-2001:db8::ff",
                "198.19.0.250-198.19.1.5",
            ],
            &["198.18.0.15"],
            "22",
        ));
        assert_eq!(coverage.covers_address(address("198.18.0.10")), Some(true));
        assert_eq!(coverage.covers_address(address("198.18.0.20")), Some(true));
        assert_eq!(coverage.covers_address(address("198.18.0.21")), Some(false));
        assert_eq!(coverage.covers_address(address("198.18.0.15")), Some(false));
        assert_eq!(coverage.covers_address(address("2001:db8::80")), Some(true));
        assert_eq!(
            coverage.covers_address(address("2001:db8::100")),
            Some(false)
        );
        assert_eq!(coverage.covers_address(address("198.19.1.1")), Some(true));
        // A range across families would cover everything between, by `IpAddr`'s
        // order; it is not a range.
        let mixed = Coverage::of(&scan(&["198.18.0.1-2001:db8::1"], &[], "22"));
        assert_eq!(mixed.covers_address(address("255.255.255.255")), None);
    }

    #[test]
    fn unknown_target_syntax_is_unknown() {
        let coverage = Coverage::of(&scan(&["198.18.0.20-10"], &[], "22"));
        assert_eq!(coverage.covers_address(address("198.18.0.12")), None);
        let coverage = Coverage::of(&scan(&["198.18.0.1"], &["::1-5"], "22"));
        assert_eq!(coverage.covers_address(address("198.18.0.1")), None);
        let coverage = Coverage::of(&scan(&["198.18.0.0/33"], &[], "22"));
        assert_eq!(coverage.covers_address(address("198.18.0.1")), None);
    }

    #[test]
    fn port_specs() {
        let coverage = Coverage::of(&scan(&["198.18.0.1"], &[], "22, 80,1000-2000"));
        assert_eq!(coverage.covers_port(22), Some(true));
        assert_eq!(coverage.covers_port(1500), Some(true));
        assert_eq!(coverage.covers_port(443), Some(false));
        assert_eq!(
            Coverage::of(&scan(&[], &[], "all")).covers_port(65535),
            Some(true)
        );
        assert_eq!(
            Coverage::of(&scan(&[], &[], "top:100")).covers_port(22),
            None
        );
        assert_eq!(Coverage::of(&scan(&[], &[], "22,x")).covers_port(22), None);
        assert_eq!(Coverage::of(&scan(&[], &[], "")).covers_port(22), None);
    }
}
