//! Sets of addresses as sorted ranges, for "which of these sources fall
//! outside that list" questions. Written here because the question is small
//! (subtract, then print as CIDRs) and ipnet offers aggregation but no
//! difference.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Inclusive ranges of one family, as u128 (IPv4 in the low 32 bits).
type Ranges = Vec<(u128, u128)>;

fn bounds(net: &IpNet) -> (bool, u128, u128) {
    match net.trunc() {
        IpNet::V4(v4) => (
            false,
            u128::from(u32::from(v4.network())),
            u128::from(u32::from(v4.broadcast())),
        ),
        IpNet::V6(v6) => (true, u128::from(v6.network()), u128::from(v6.broadcast())),
    }
}

fn ranges_of(nets: &[IpNet], v6: bool) -> Ranges {
    let mut ranges: Ranges = nets
        .iter()
        .map(bounds)
        .filter(|(is_v6, ..)| *is_v6 == v6)
        .map(|(_, lo, hi)| (lo, hi))
        .collect();
    ranges.sort_unstable();
    let mut merged: Ranges = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    merged
}

fn subtract_ranges(a: &Ranges, b: &Ranges) -> Ranges {
    let mut out = Vec::new();
    for &(mut lo, hi) in a {
        let mut done = false;
        for &(blo, bhi) in b {
            if bhi < lo || blo > hi {
                continue;
            }
            if blo > lo {
                out.push((lo, blo - 1));
            }
            if bhi >= hi {
                done = true;
                break;
            }
            lo = bhi + 1;
        }
        if !done {
            out.push((lo, hi));
        }
    }
    out
}

/// The largest prefixes covering exactly [lo, hi].
fn to_nets(ranges: &Ranges, v6: bool) -> Vec<IpNet> {
    let bits: u32 = if v6 { 128 } else { 32 };
    let mask_of = |k: u32| {
        if k >= 128 {
            u128::MAX
        } else {
            (1u128 << k) - 1
        }
    };
    let mut nets = Vec::new();
    for &(mut lo, hi) in ranges {
        loop {
            // The largest block aligned at `lo` that ends within `hi`; a block
            // of one address always fits, so this terminates.
            let mut k = if lo == 0 {
                bits
            } else {
                lo.trailing_zeros().min(bits)
            };
            while k > 0 && lo.checked_add(mask_of(k)).is_none_or(|last| last > hi) {
                k -= 1;
            }
            let prefix = u8::try_from(bits - k).unwrap_or(0);
            let net = if v6 {
                Ipv6Net::new(Ipv6Addr::from(lo), prefix).map(IpNet::V6)
            } else {
                Ipv4Net::new(
                    Ipv4Addr::from(u32::try_from(lo).unwrap_or(u32::MAX)),
                    prefix,
                )
                .map(IpNet::V4)
            };
            if let Ok(net) = net {
                nets.push(net);
            }
            let last = lo.saturating_add(mask_of(k));
            if last >= hi {
                break;
            }
            lo = last + 1;
        }
    }
    nets
}

/// `a` minus `b`, as a minimal list of prefixes.
pub(crate) fn subtract(a: &[IpNet], b: &[IpNet]) -> Vec<IpNet> {
    let mut out = Vec::new();
    for v6 in [false, true] {
        let rest = subtract_ranges(&ranges_of(a, v6), &ranges_of(b, v6));
        out.extend(to_nets(&rest, v6));
    }
    out
}

/// Whether `nets` cover the whole family of `sample` (0.0.0.0/0 or ::/0).
pub(crate) fn covers_everything(nets: &[IpNet], sample: IpAddr) -> bool {
    let v6 = sample.is_ipv6();
    let all = if v6 {
        (0, u128::MAX)
    } else {
        (0, u128::from(u32::MAX))
    };
    ranges_of(nets, v6) == vec![all]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().expect("net")).collect()
    }

    fn show(list: &[IpNet]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn subtracts_and_prints_minimal_prefixes() {
        assert_eq!(
            show(&subtract(&nets(&["0.0.0.0/0"]), &nets(&["128.0.0.0/1"]))),
            vec!["0.0.0.0/1"]
        );
        assert_eq!(
            show(&subtract(
                &nets(&["198.51.100.0/24"]),
                &nets(&["198.51.100.0/25"])
            )),
            vec!["198.51.100.128/25"]
        );
        assert_eq!(
            show(&subtract(
                &nets(&["198.51.100.0/24"]),
                &nets(&["198.51.100.0/24", "10.0.0.0/8"])
            )),
            Vec::<String>::new()
        );
        assert_eq!(
            show(&subtract(&nets(&["10.0.0.0/30"]), &nets(&["10.0.0.1/32"]))),
            vec!["10.0.0.0/32", "10.0.0.2/31"]
        );
        assert_eq!(
            show(&subtract(&nets(&["::/0"]), &nets(&["::/1"]))),
            vec!["8000::/1"]
        );
        assert_eq!(
            show(&subtract(&nets(&["0.0.0.0/0", "::/0"]), &nets(&[]))),
            vec!["0.0.0.0/0", "::/0"]
        );
    }

    #[test]
    fn everything() {
        assert!(covers_everything(
            &nets(&["0.0.0.0/1", "128.0.0.0/1"]),
            "1.2.3.4".parse().expect("ip")
        ));
        assert!(!covers_everything(
            &nets(&["0.0.0.0/1"]),
            "1.2.3.4".parse().expect("ip")
        ));
        assert!(covers_everything(
            &nets(&["::/0"]),
            "::1".parse().expect("ip")
        ));
    }
}
