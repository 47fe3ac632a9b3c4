//! Sets of addresses as disjoint ranges of their numeric values: the one
//! address-set type of the workspace. The firewall's reachability walk carves
//! source sets out of rules with it, and the environment rules ask "which of
//! these sources fall outside that list" with it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Subnets, Ipv6Subnets};

/// An address family, for sets that hold one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddrFamily {
    V4,
    V6,
}

impl AddrFamily {
    /// `IPv4` or `IPv6`, for evidence.
    pub fn as_str(self) -> &'static str {
        match self {
            AddrFamily::V4 => "IPv4",
            AddrFamily::V6 => "IPv6",
        }
    }

    /// The family of an address.
    pub fn of(addr: IpAddr) -> AddrFamily {
        match addr {
            IpAddr::V4(_) => AddrFamily::V4,
            IpAddr::V6(_) => AddrFamily::V6,
        }
    }
}

/// An address as a number (IPv4 in the low 32 bits), the key of [`AddrRanges`].
pub fn address_number(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// A set of addresses of one family, as disjoint, non-adjacent inclusive
/// ranges of their numeric values (IPv4 in the low 32 bits), keyed by their
/// first value.
///
/// A B-tree rather than a sorted vector because the walk carves one small
/// piece at a time out of a large set (a block list of thousands of single
/// addresses): taking a piece out, or intersecting with a few ranges, then
/// costs a logarithm instead of a copy of the whole set.
///
/// Written here rather than taken from a crate: the walk needs union,
/// intersection, difference and membership, which fit in this page with a
/// property test against a brute-force model; range-set-blaze, the maintained
/// crate that does this, requires a newer Rust than the workspace's declared
/// minimum and brings four dependencies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AddrRanges {
    ranges: BTreeMap<u128, u128>,
}

impl AddrRanges {
    pub fn empty() -> AddrRanges {
        AddrRanges::default()
    }

    pub fn universe(family: AddrFamily) -> AddrRanges {
        let high = match family {
            AddrFamily::V4 => u128::from(u32::MAX),
            AddrFamily::V6 => u128::MAX,
        };
        AddrRanges::range(0, high)
    }

    pub fn range(low: u128, high: u128) -> AddrRanges {
        let mut set = AddrRanges::empty();
        if low <= high {
            set.ranges.insert(low, high);
        }
        set
    }

    /// Sorts and joins overlapping or adjacent ranges.
    pub fn from_ranges(mut ranges: Vec<(u128, u128)>) -> AddrRanges {
        ranges.retain(|(low, high)| low <= high);
        ranges.sort_unstable();
        let mut joined: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
        for (low, high) in ranges {
            match joined.last_mut() {
                // `saturating_add`: nothing comes after u128::MAX, so a range
                // ending there absorbs everything after it.
                Some(last) if low <= last.1.saturating_add(1) => last.1 = last.1.max(high),
                _ => joined.push((low, high)),
            }
        }
        AddrRanges {
            ranges: joined.into_iter().collect(),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (u128, u128)> + '_ {
        self.ranges.iter().map(|(&low, &high)| (low, high))
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn contains(&self, value: u128) -> bool {
        self.ranges
            .range(..=value)
            .next_back()
            .is_some_and(|(_, &high)| high >= value)
    }

    /// The ranges that overlap `low..=high`, whole.
    pub fn overlapping(&self, low: u128, high: u128) -> impl Iterator<Item = (u128, u128)> + '_ {
        let before = self
            .ranges
            .range(..low)
            .next_back()
            .filter(|(_, end)| **end >= low);
        before
            .into_iter()
            .chain(self.ranges.range(low..=high))
            .map(|(&start, &end)| (start, end))
    }

    pub fn intersection(&self, other: &AddrRanges) -> AddrRanges {
        let (small, big) = if self.ranges.len() <= other.ranges.len() {
            (self, other)
        } else {
            (other, self)
        };
        // Pieces of distinct ranges of either set are never adjacent, so the
        // clipped pieces are already in canonical form.
        let mut ranges = BTreeMap::new();
        for (low, high) in small.iter() {
            for (start, end) in big.overlapping(low, high) {
                ranges.insert(start.max(low), end.min(high));
            }
        }
        AddrRanges { ranges }
    }

    /// Takes `other`'s addresses out of this set.
    pub fn remove(&mut self, other: &AddrRanges) {
        for (low, high) in other.iter() {
            let hit: Vec<(u128, u128)> = self.overlapping(low, high).collect();
            for (start, end) in hit {
                self.ranges.remove(&start);
                if start < low {
                    self.ranges.insert(start, low - 1);
                }
                if end > high {
                    self.ranges.insert(high + 1, end);
                }
            }
        }
    }

    /// Adds `other`'s addresses to this set.
    pub fn insert(&mut self, other: &AddrRanges) {
        for (low, high) in other.iter() {
            // Everything overlapping or adjacent joins the new range.
            let reach_low = low.saturating_sub(1);
            let reach_high = high.saturating_add(1);
            let joined: Vec<(u128, u128)> = self.overlapping(reach_low, reach_high).collect();
            let mut new_low = low;
            let mut new_high = high;
            for (start, end) in joined {
                self.ranges.remove(&start);
                new_low = new_low.min(start);
                new_high = new_high.max(end);
            }
            self.ranges.insert(new_low, new_high);
        }
    }

    pub fn union(&self, other: &AddrRanges) -> AddrRanges {
        let (small, big) = if self.ranges.len() <= other.ranges.len() {
            (self, other)
        } else {
            (other, self)
        };
        let mut set = big.clone();
        set.insert(small);
        set
    }

    pub fn difference(&self, other: &AddrRanges) -> AddrRanges {
        let mut set = self.clone();
        set.remove(other);
        set
    }

    /// Everything not in the set, over the whole u128 space.
    pub fn complement(&self) -> AddrRanges {
        let mut ranges = BTreeMap::new();
        let mut next: Option<u128> = Some(0);
        for (low, high) in self.iter() {
            let Some(start) = next else {
                break;
            };
            if low > start {
                ranges.insert(start, low - 1);
            }
            next = high.checked_add(1);
        }
        if let Some(start) = next {
            ranges.insert(start, u128::MAX);
        }
        AddrRanges { ranges }
    }

    /// The fewest prefixes that cover exactly this set.
    pub fn prefixes(&self, family: AddrFamily) -> Vec<IpNet> {
        let mut nets = Vec::new();
        for (low, high) in self.iter() {
            match family {
                AddrFamily::V4 => {
                    let (Ok(low), Ok(high)) = (u32::try_from(low), u32::try_from(high)) else {
                        continue;
                    };
                    nets.extend(
                        Ipv4Subnets::new(Ipv4Addr::from(low), Ipv4Addr::from(high), 0)
                            .map(IpNet::V4),
                    );
                }
                AddrFamily::V6 => nets.extend(
                    Ipv6Subnets::new(Ipv6Addr::from(low), Ipv6Addr::from(high), 0).map(IpNet::V6),
                ),
            }
        }
        nets
    }

    /// `every source`, `198.51.100.0/24, 192.0.2.7/32`, or `every source
    /// except 198.51.100.5/32`, whichever is shortest; lists longer than
    /// `shown` are cut.
    pub fn describe(&self, universe: &AddrRanges, family: AddrFamily, shown: usize) -> String {
        if self.is_empty() {
            return "no source".to_owned();
        }
        if self == universe {
            return "every source".to_owned();
        }
        let list = |nets: Vec<IpNet>| {
            let mut words: Vec<String> = nets.iter().take(shown).map(ToString::to_string).collect();
            if nets.len() > shown {
                words.push(format!("and {} more", nets.len() - shown));
            }
            words.join(", ")
        };
        let nets = self.prefixes(family);
        let rest = universe.difference(self).prefixes(family);
        if rest.len() < nets.len() {
            format!("every source except {}", list(rest))
        } else {
            list(nets)
        }
    }
}

impl AddrRanges {
    /// The addresses of `family` that `nets` cover (prefixes of the other
    /// family are left out).
    pub fn from_nets(nets: &[IpNet], family: AddrFamily) -> AddrRanges {
        AddrRanges::from_ranges(
            nets.iter()
                .map(IpNet::trunc)
                .filter(|net| AddrFamily::of(net.network()) == family)
                .map(|net| {
                    (
                        address_number(net.network()),
                        address_number(net.broadcast()),
                    )
                })
                .collect(),
        )
    }
}

/// `a` minus `b`, as a minimal list of prefixes (IPv4 first, then IPv6).
pub fn subtract_nets(a: &[IpNet], b: &[IpNet]) -> Vec<IpNet> {
    let mut out = Vec::new();
    for family in [AddrFamily::V4, AddrFamily::V6] {
        let rest = AddrRanges::from_nets(a, family).difference(&AddrRanges::from_nets(b, family));
        out.extend(rest.prefixes(family));
    }
    out
}

/// Whether `nets` cover the whole family of `sample` (0.0.0.0/0 or ::/0).
pub fn covers_family(nets: &[IpNet], sample: IpAddr) -> bool {
    let family = AddrFamily::of(sample);
    AddrRanges::from_nets(nets, family) == AddrRanges::universe(family)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A set over the values 0..64, as a bit mask, for the brute-force model.
    fn mask(set: &AddrRanges) -> u64 {
        let mut bits = 0u64;
        for (low, high) in set.iter() {
            for value in low..=high.min(63) {
                bits |= 1 << value;
            }
        }
        bits
    }

    fn set_from(ranges: &[(u8, u8)]) -> AddrRanges {
        AddrRanges::from_ranges(
            ranges
                .iter()
                .map(|&(a, b)| (u128::from(a % 64), u128::from(b % 64)))
                .collect(),
        )
    }

    fn well_formed(set: &AddrRanges) -> bool {
        let ranges: Vec<(u128, u128)> = set.iter().collect();
        ranges.iter().all(|(low, high)| low <= high)
            && ranges
                .windows(2)
                .all(|w| matches!(w, [a, b] if a.1.saturating_add(1) < b.0))
    }

    fn naive_mask(ranges: &[(u8, u8)]) -> u64 {
        let mut bits = 0u64;
        for &(a, b) in ranges {
            let (a, b) = (a % 64, b % 64);
            if a <= b {
                for value in a..=b {
                    bits |= 1 << value;
                }
            }
        }
        bits
    }

    proptest! {
        #[test]
        fn set_operations_match_a_bit_mask(
            a in proptest::collection::vec((any::<u8>(), any::<u8>()), 0..6),
            b in proptest::collection::vec((any::<u8>(), any::<u8>()), 0..6),
            probe in 0u8..64,
        ) {
            let (set_a, set_b) = (set_from(&a), set_from(&b));
            let (mask_a, mask_b) = (naive_mask(&a), naive_mask(&b));
            prop_assert_eq!(mask(&set_a), mask_a);
            prop_assert!(well_formed(&set_a));
            let union = set_a.union(&set_b);
            let intersection = set_a.intersection(&set_b);
            let difference = set_a.difference(&set_b);
            prop_assert!(well_formed(&union) && well_formed(&intersection) && well_formed(&difference));
            prop_assert_eq!(mask(&union), mask_a | mask_b);
            prop_assert_eq!(mask(&intersection), mask_a & mask_b);
            prop_assert_eq!(mask(&difference), mask_a & !mask_b);
            prop_assert_eq!(set_a.contains(u128::from(probe)), mask_a & (1 << probe) != 0);
            // The complement within 0..64 is the universe minus the set.
            let universe = AddrRanges::range(0, 63);
            prop_assert_eq!(mask(&universe.difference(&set_a)), !mask_a);
            prop_assert!(well_formed(&set_a.complement()));
        }

        #[test]
        fn prefixes_cover_exactly(low in any::<u32>(), len in 0u32..4096) {
            let high = low.saturating_add(len);
            let set = AddrRanges::range(u128::from(low), u128::from(high));
            let nets = set.prefixes(AddrFamily::V4);
            let covered = AddrRanges::from_ranges(
                nets.iter()
                    .map(|n| (address_number(n.network()), address_number(n.broadcast())))
                    .collect(),
            );
            prop_assert_eq!(covered, set);
        }
    }

    #[test]
    fn edges_of_the_v6_space() {
        let everything = AddrRanges::universe(AddrFamily::V6);
        assert!(everything.complement().is_empty());
        let top = AddrRanges::range(u128::MAX, u128::MAX);
        assert_eq!(
            everything.difference(&top).iter().collect::<Vec<_>>(),
            vec![(0, u128::MAX - 1)]
        );
        let mut grown = top.clone();
        grown.insert(&AddrRanges::range(0, u128::MAX - 1));
        assert_eq!(grown, everything);
        assert_eq!(
            AddrRanges::from_ranges(vec![(u128::MAX - 1, u128::MAX), (5, u128::MAX)])
                .iter()
                .collect::<Vec<_>>(),
            vec![(5, u128::MAX)]
        );
        assert_eq!(
            everything.prefixes(AddrFamily::V6),
            vec!["::/0".parse::<IpNet>().expect("literal")]
        );
    }

    #[test]
    fn descriptions_pick_the_shorter_side() {
        let universe = AddrRanges::universe(AddrFamily::V4);
        let host = AddrRanges::range(0xc633_6405, 0xc633_6405);
        assert_eq!(
            universe
                .difference(&host)
                .describe(&universe, AddrFamily::V4, 6),
            "every source except 198.51.100.5/32"
        );
        assert_eq!(
            host.describe(&universe, AddrFamily::V4, 6),
            "198.51.100.5/32"
        );
        assert_eq!(
            universe.describe(&universe, AddrFamily::V4, 6),
            "every source"
        );
        assert_eq!(
            AddrRanges::empty().describe(&universe, AddrFamily::V4, 6),
            "no source"
        );
        let many = AddrRanges::from_ranges((0..10u128).map(|n| (n * 4, n * 4)).collect());
        assert_eq!(
            many.describe(&universe, AddrFamily::V4, 3),
            "0.0.0.0/32, 0.0.0.4/32, 0.0.0.8/32, and 7 more"
        );
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().expect("net")).collect()
    }

    fn show(list: &[IpNet]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn subtracts_and_prints_minimal_prefixes() {
        assert_eq!(
            show(&subtract_nets(
                &nets(&["0.0.0.0/0"]),
                &nets(&["128.0.0.0/1"])
            )),
            vec!["0.0.0.0/1"]
        );
        assert_eq!(
            show(&subtract_nets(
                &nets(&["198.51.100.0/24"]),
                &nets(&["198.51.100.0/25"])
            )),
            vec!["198.51.100.128/25"]
        );
        assert_eq!(
            show(&subtract_nets(
                &nets(&["198.51.100.0/24"]),
                &nets(&["198.51.100.0/24", "10.0.0.0/8"])
            )),
            Vec::<String>::new()
        );
        assert_eq!(
            show(&subtract_nets(
                &nets(&["10.0.0.0/30"]),
                &nets(&["10.0.0.1/32"])
            )),
            vec!["10.0.0.0/32", "10.0.0.2/31"]
        );
        assert_eq!(
            show(&subtract_nets(&nets(&["::/0"]), &nets(&["::/1"]))),
            vec!["8000::/1"]
        );
        assert_eq!(
            show(&subtract_nets(&nets(&["0.0.0.0/0", "::/0"]), &nets(&[]))),
            vec!["0.0.0.0/0", "::/0"]
        );
    }

    #[test]
    fn everything() {
        assert!(covers_family(
            &nets(&["0.0.0.0/1", "128.0.0.0/1"]),
            "1.2.3.4".parse().expect("ip")
        ));
        assert!(!covers_family(
            &nets(&["0.0.0.0/1"]),
            "1.2.3.4".parse().expect("ip")
        ));
        assert!(covers_family(&nets(&["::/0"]), "::1".parse().expect("ip")));
    }
}
