//! What a scan may touch: parsing target and exclusion texts (addresses, CIDRs,
//! ranges, host names, target files), resolving host names once through a
//! [`Resolver`], and the [`TargetSet`] that maps an index to an address without
//! materialising the addresses.
//!
//! Scope is explicit. No target is an error; a target that covers the whole IPv4
//! or IPv6 internet is refused unless the caller says `allow_internet_wide`; an
//! excluded address is subtracted from the set before the scan starts, so it has
//! no index and is never sent a packet.
//!
//! A CIDR with host bits set (`10.0.0.5/24`) is normalised to its network
//! (`10.0.0.0/24`), as nmap does: the operator who typed a prefix length meant the
//! network. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are folded into IPv4,
//! because a dual-stack socket sends to the IPv4 address; excluding `10.0.0.1`
//! therefore also excludes `::ffff:10.0.0.1`.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ipnet::IpNet;
use perimeter_model::Problem;

/// A target or exclusion text that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("invalid target `{text}`: {reason}")]
    Invalid { text: String, reason: &'static str },
    #[error("invalid range `{text}`: the first address comes after the last")]
    ReversedRange { text: String },
    #[error("invalid range `{text}`: both ends must be IPv4 or both IPv6")]
    MixedRange { text: String },
    #[error("{path}:{line}: {source}")]
    InFile {
        path: PathBuf,
        line: usize,
        #[source]
        source: Box<TargetError>,
    },
    #[error("cannot read target file {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: perimeter_files::FileError,
    },
    #[error(
        "invalid target `{text}`: IPv6 zone ids (`%{zone}`) are not supported; scan link-local addresses from a network namespace where they are reachable without one, or scan a global address of the host"
    )]
    ZoneId { text: String, zone: String },
    #[error("no targets given: name at least one address, network, range or host name")]
    NoTargets,
    #[error(
        "target `{text}` covers the whole {family} internet; pass --allow-internet-wide if that is really meant"
    )]
    InternetWide { text: String, family: &'static str },
    #[error("no target address is left: {reason}")]
    NothingLeft { reason: String },
}

/// One target or exclusion, as parsed from its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    Address(IpAddr),
    /// Always a network address: host bits are cleared when parsing.
    Network(IpNet),
    /// Both ends inclusive and of the same family, `first <= last`.
    Range {
        first: IpAddr,
        last: IpAddr,
    },
    HostName(String),
}

impl TargetSpec {
    /// The addresses a literal spec covers; `None` for a host name, which needs
    /// resolving first.
    pub fn range(&self) -> Option<AddressRange> {
        match *self {
            TargetSpec::Address(address) => Some(AddressRange {
                first: address,
                last: address,
            }),
            TargetSpec::Network(net) => Some(AddressRange {
                first: net.network(),
                last: net.broadcast(),
            }),
            TargetSpec::Range { first, last } => Some(AddressRange { first, last }),
            TargetSpec::HostName(_) => None,
        }
    }
}

impl FromStr for TargetSpec {
    type Err = TargetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_target(text)
    }
}

/// Parses one target or exclusion: `198.51.100.7`, `2001:db8::1`,
/// `198.51.100.0/24`, `198.51.100.10-198.51.100.20`, `198.51.100.10-20` (the last
/// octet only), `2001:db8::1-2001:db8::ff`, or a host name.
pub fn parse_target(text: &str) -> Result<TargetSpec, TargetError> {
    let trimmed = text.trim();
    let invalid = |reason| TargetError::Invalid {
        text: trimmed.to_owned(),
        reason,
    };
    if trimmed.is_empty() {
        return Err(invalid("empty"));
    }
    if let Ok(address) = trimmed.parse::<IpAddr>() {
        return Ok(TargetSpec::Address(address));
    }
    if let Some((address, zone)) = trimmed.split_once('%')
        && address.parse::<std::net::Ipv6Addr>().is_ok()
    {
        // A link-local address is only meaningful on one interface; the
        // engine's sockets carry no scope id, so such a target could reach
        // the wrong link. Refused rather than guessed.
        return Err(TargetError::ZoneId {
            text: trimmed.to_owned(),
            zone: zone.to_owned(),
        });
    }
    if let Some((address, prefix)) = trimmed.split_once('/') {
        let address: IpAddr = address
            .parse()
            .map_err(|_| invalid("the part before `/` is not an IP address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| invalid("the prefix length is not a number"))?;
        let net =
            IpNet::new(address, prefix).map_err(|_| invalid("the prefix length is too long"))?;
        return Ok(TargetSpec::Network(net.trunc()));
    }
    if let Some((first_text, last_text)) = trimmed.split_once('-') {
        // A host name may contain `-` too, so only a text whose first part is an
        // address is taken as a range.
        if let Ok(first) = first_text.parse::<IpAddr>() {
            let last = match (first, last_text.parse::<IpAddr>()) {
                (_, Ok(last)) => last,
                (IpAddr::V4(first_v4), Err(_)) => {
                    // nmap's shorthand `10.0.0.5-20`: the last octet only.
                    let octet: u8 = last_text.parse().map_err(|_| {
                        invalid("the end of the range is neither an address nor an octet")
                    })?;
                    let [a, b, c, _] = first_v4.octets();
                    IpAddr::V4(Ipv4Addr::new(a, b, c, octet))
                }
                (IpAddr::V6(_), Err(_)) => {
                    return Err(invalid("the end of the range is not an IPv6 address"));
                }
            };
            if first.is_ipv4() != last.is_ipv4() {
                return Err(TargetError::MixedRange {
                    text: trimmed.to_owned(),
                });
            }
            if first > last {
                return Err(TargetError::ReversedRange {
                    text: trimmed.to_owned(),
                });
            }
            return Ok(TargetSpec::Range { first, last });
        }
    }
    check_host_name(trimmed).map_err(invalid)?;
    Ok(TargetSpec::HostName(trimmed.to_ascii_lowercase()))
}

/// Host name syntax (RFC 1123, with `_` tolerated because real zones carry it).
fn check_host_name(text: &str) -> Result<(), &'static str> {
    let name = text.strip_suffix('.').unwrap_or(text);
    if name.len() > 253 {
        return Err("a host name is at most 253 characters");
    }
    let mut all_numeric = true;
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("not an address, a network, a range or a host name");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("not an address, a network, a range or a host name");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a host name label cannot start or end with `-`");
        }
        all_numeric &= label.bytes().all(|b| b.is_ascii_digit());
    }
    if all_numeric {
        // `10.0.0` or `10.0.0.256` is a mistyped address, not a name to look up.
        return Err("not a valid IP address");
    }
    Ok(())
}

/// Reads a targets file: one target per line, `#` starts a comment, blank lines
/// are skipped. Returns the target texts; an invalid line is an error naming the
/// line.
pub fn parse_target_list(text: &str) -> Result<Vec<String>, (usize, TargetError)> {
    let mut targets = Vec::new();
    for (line_idx, line) in text.lines().enumerate() {
        let content = line
            .split_once('#')
            .map_or(line, |(before, _)| before)
            .trim();
        if content.is_empty() {
            continue;
        }
        parse_target(content).map_err(|err| (line_idx + 1, err))?;
        targets.push(content.to_owned());
    }
    Ok(targets)
}

/// [`parse_target_list`] on a file.
pub fn read_target_file(path: &Path) -> Result<Vec<String>, TargetError> {
    let text =
        perimeter_files::read_text(path, "a targets file", perimeter_files::MAX_CONFIG_BYTES)
            .map_err(|source| TargetError::ReadFile {
                path: path.to_owned(),
                source,
            })?;
    parse_target_list(&text).map_err(|(line, source)| TargetError::InFile {
        path: path.to_owned(),
        line,
        source: Box::new(source),
    })
}

/// Turns host names into addresses. The scan resolves each name once, at the
/// start, so tests give a fixed table and never touch DNS.
pub trait Resolver: Send + Sync {
    fn resolve(&self, host: &str) -> impl Future<Output = io::Result<Vec<IpAddr>>> + Send;
}

/// The system resolver (getaddrinfo, so /etc/hosts and NSS apply).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    async fn resolve(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        let found = tokio::net::lookup_host((host, 0)).await?;
        let unique: BTreeSet<IpAddr> = found.map(|addr| addr.ip()).collect();
        Ok(unique.into_iter().collect())
    }
}

/// A fixed name table, for tests and for callers that resolved names already.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    pub names: Vec<(String, Vec<IpAddr>)>,
}

impl Resolver for StaticResolver {
    async fn resolve(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        self.names
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(host))
            .map(|(_, addresses)| addresses.clone())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "name not known"))
    }
}

/// An inclusive range of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    pub first: IpAddr,
    pub last: IpAddr,
}

/// What the caller asked to scan, as texts (command-line arguments and the lines
/// of target files).
#[derive(Debug, Clone, Default)]
pub struct TargetRequest {
    pub targets: Vec<String>,
    pub excludes: Vec<String>,
    /// Without it, a target covering 0.0.0.0/0 or ::/0 is refused.
    pub allow_internet_wide: bool,
}

/// The resolved scope of a scan: the addresses, and the record of how they came
/// about (for `ScanInfo`).
#[derive(Debug, Clone)]
pub struct Targets {
    pub set: TargetSet,
    /// The target texts as given.
    pub given: Vec<String>,
    /// The exclusion texts as given.
    pub excluded: Vec<String>,
    /// Each host name and the addresses it resolved to.
    pub resolved: Vec<(String, Vec<IpAddr>)>,
    /// Names that did not resolve. A target that does not resolve is reported
    /// and the scan goes on; an exclusion that does not resolve is an error
    /// instead (see [`resolve_targets`]).
    pub problems: Vec<Problem>,
}

/// Parses, resolves and checks the requested scope.
///
/// A target name that does not resolve becomes a [`Problem`]. An exclusion name
/// that does not resolve is an error: scanning on while something the operator
/// wanted left alone might be in range is not a partial failure to shrug off.
pub async fn resolve_targets<R: Resolver>(
    request: &TargetRequest,
    resolver: &R,
) -> Result<Targets, TargetError> {
    if request.targets.iter().all(|text| text.trim().is_empty()) {
        return Err(TargetError::NoTargets);
    }
    let mut resolved = Vec::new();
    let mut problems = Vec::new();
    let mut target_ranges = Vec::new();
    for text in &request.targets {
        let spec = parse_target(text)?;
        if let Some(range) = spec.range() {
            match internet_wide(range) {
                Some(family) if !request.allow_internet_wide => {
                    return Err(TargetError::InternetWide {
                        text: text.trim().to_owned(),
                        family,
                    });
                }
                _ => {}
            }
            target_ranges.push(range);
            continue;
        }
        let TargetSpec::HostName(name) = spec else {
            continue;
        };
        match resolver.resolve(&name).await {
            Ok(addresses) if !addresses.is_empty() => {
                target_ranges.extend(addresses.iter().map(|&address| AddressRange {
                    first: address,
                    last: address,
                }));
                resolved.push((name, addresses));
            }
            Ok(_) => problems.push(Problem::new(name, "the name resolved to no address")),
            Err(err) => problems.push(
                Problem::new(name, format!("cannot resolve: {err}"))
                    .with_hint("check the name, or give the address instead"),
            ),
        }
    }

    let mut exclude_ranges = Vec::new();
    for text in &request.excludes {
        let spec = parse_target(text)?;
        if let Some(range) = spec.range() {
            exclude_ranges.push(range);
            continue;
        }
        let TargetSpec::HostName(name) = spec else {
            continue;
        };
        let addresses = resolver
            .resolve(&name)
            .await
            .map_err(|_| TargetError::Invalid {
                text: name.clone(),
                reason: "the excluded host name does not resolve",
            })?;
        exclude_ranges.extend(addresses.iter().map(|&address| AddressRange {
            first: address,
            last: address,
        }));
        resolved.push((name, addresses));
    }

    let union = TargetSet::new(&target_ranges, &[]);
    match covers_a_family(&union.spans) {
        Some(family) if !request.allow_internet_wide => {
            return Err(TargetError::InternetWide {
                text: request.targets.join(","),
                family,
            });
        }
        _ => {}
    }
    if union.is_empty() {
        // Say why each name failed, in the resolver's words: "no target name
        // resolved" alone leaves a typo and a dead DNS server looking alike.
        let why: Vec<String> = problems
            .iter()
            .map(|problem| format!("{} ({})", problem.subject, problem.message))
            .collect();
        return Err(TargetError::NothingLeft {
            reason: if why.is_empty() {
                "no target name resolved".to_owned()
            } else {
                format!("no target name resolved: {}", why.join("; "))
            },
        });
    }
    let set = TargetSet::new(&target_ranges, &exclude_ranges);
    if set.is_empty() {
        return Err(TargetError::NothingLeft {
            reason: "every target address is excluded".to_owned(),
        });
    }
    Ok(Targets {
        set,
        given: request
            .targets
            .iter()
            .map(|t| t.trim().to_owned())
            .collect(),
        excluded: request
            .excludes
            .iter()
            .map(|t| t.trim().to_owned())
            .collect(),
        resolved,
        problems,
    })
}

/// Whether a single range is a whole family (`0.0.0.0/0`, `::/0`), judged before
/// IPv4-mapped addresses are folded out of IPv6.
fn internet_wide(range: AddressRange) -> Option<&'static str> {
    match (range.first, range.last) {
        (IpAddr::V4(first), IpAddr::V4(last))
            if u32::from(first) == 0 && last == Ipv4Addr::BROADCAST =>
        {
            Some("IPv4")
        }
        (IpAddr::V6(first), IpAddr::V6(last))
            if u128::from(first) == 0 && u128::from(last) == u128::MAX =>
        {
            Some("IPv6")
        }
        _ => None,
    }
}

/// Whether merged spans cover a whole family. IPv6 never holds the mapped block
/// (it is folded into IPv4), so all of IPv6 is the two spans around it.
fn covers_a_family(spans: &[Span]) -> Option<&'static str> {
    let v6 = |first_at_most: u128, last_at_least: u128| {
        spans
            .iter()
            .any(|s| s.family == Family::V6 && s.first <= first_at_most && s.last >= last_at_least)
    };
    if v6(0, MAPPED_FIRST - 1) && v6(MAPPED_LAST + 1, u128::MAX) {
        Some("IPv6")
    } else if spans.iter().any(|s| s.whole_family().is_some()) {
        Some("IPv4")
    } else {
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    V4,
    V6,
}

/// An inclusive range of addresses as integers, IPv4 and IPv6 kept apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Span {
    family: Family,
    first: u128,
    last: u128,
}

impl Span {
    /// Whether the span is all of IPv4 (all of IPv6 cannot be one span: see
    /// [`covers_a_family`]).
    fn whole_family(self) -> Option<&'static str> {
        (self.family == Family::V4 && self.first == 0 && self.last == u128::from(u32::MAX))
            .then_some("IPv4")
    }

    /// The number of addresses, saturating at `u128::MAX` for all of IPv6 (which
    /// has one more).
    fn n_addresses(self) -> u128 {
        (self.last - self.first).saturating_add(1)
    }

    fn address(self, offset: u128) -> IpAddr {
        let value = self.first + offset;
        match self.family {
            // The value came from an Ipv4Addr, so it fits; the fallback never runs.
            Family::V4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(value).unwrap_or(u32::MAX))),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
        }
    }
}

/// Where IPv4-mapped IPv6 addresses live: `::ffff:0.0.0.0` to `::ffff:255.255.255.255`.
const MAPPED_FIRST: u128 = 0xffff_0000_0000;
const MAPPED_LAST: u128 = 0xffff_ffff_ffff;

/// The spans of a range, with any IPv4-mapped part folded into IPv4.
fn spans_of(range: AddressRange) -> Vec<Span> {
    match (range.first, range.last) {
        (IpAddr::V4(first), IpAddr::V4(last)) if first <= last => vec![Span {
            family: Family::V4,
            first: u128::from(u32::from(first)),
            last: u128::from(u32::from(last)),
        }],
        (IpAddr::V6(first), IpAddr::V6(last)) if first <= last => {
            let (first, last) = (u128::from(first), u128::from(last));
            let mut spans = Vec::new();
            if first < MAPPED_FIRST {
                spans.push(Span {
                    family: Family::V6,
                    first,
                    last: last.min(MAPPED_FIRST - 1),
                });
            }
            if first <= MAPPED_LAST && last >= MAPPED_FIRST {
                spans.push(Span {
                    family: Family::V4,
                    first: first.max(MAPPED_FIRST) - MAPPED_FIRST,
                    last: last.min(MAPPED_LAST) - MAPPED_FIRST,
                });
            }
            if last > MAPPED_LAST {
                spans.push(Span {
                    family: Family::V6,
                    first: first.max(MAPPED_LAST + 1),
                    last,
                });
            }
            spans
        }
        // Mixed or reversed ranges are refused when parsing; an empty answer keeps
        // a hand-built one from widening the scope.
        _ => Vec::new(),
    }
}

/// Sorts and merges overlapping or adjacent spans.
fn merge(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort();
    let mut merged: Vec<Span> = Vec::with_capacity(spans.len());
    for span in spans {
        match merged.last_mut() {
            Some(prev)
                if prev.family == span.family && span.first <= prev.last.saturating_add(1) =>
            {
                prev.last = prev.last.max(span.last);
            }
            _ => merged.push(span),
        }
    }
    merged
}

/// `targets` minus `excludes`, both merged.
fn subtract(targets: &[Span], excludes: &[Span]) -> Vec<Span> {
    let mut out = Vec::new();
    for &target in targets {
        let mut rest = Some(target);
        for exclude in excludes.iter().filter(|e| {
            e.family == target.family && e.last >= target.first && e.first <= target.last
        }) {
            let Some(current) = rest else { break };
            if exclude.first > current.first {
                out.push(Span {
                    last: exclude.first - 1,
                    ..current
                });
            }
            rest = if exclude.last < current.last {
                Some(Span {
                    first: exclude.last + 1,
                    ..current
                })
            } else {
                None
            };
        }
        out.extend(rest);
    }
    out
}

/// The addresses of a scan, sorted (IPv4 first), merged, exclusions subtracted,
/// addressed by index without materialising them: a /8 costs one span.
#[derive(Debug, Clone, Default)]
pub struct TargetSet {
    spans: Vec<Span>,
    /// For each span, the index of its first address.
    starts: Vec<u128>,
    n_addresses: u128,
    excluded: Vec<Span>,
}

impl TargetSet {
    /// The set of `targets` minus `excludes`. Ranges of mixed families or reversed
    /// ends contribute nothing.
    pub fn new(targets: &[AddressRange], excludes: &[AddressRange]) -> TargetSet {
        let targets = merge(targets.iter().flat_map(|&r| spans_of(r)).collect());
        let excluded = merge(excludes.iter().flat_map(|&r| spans_of(r)).collect());
        let spans = subtract(&targets, &excluded);
        let mut starts = Vec::with_capacity(spans.len());
        let mut n_addresses: u128 = 0;
        for span in &spans {
            starts.push(n_addresses);
            n_addresses = n_addresses.saturating_add(span.n_addresses());
        }
        TargetSet {
            spans,
            starts,
            n_addresses,
            excluded,
        }
    }

    /// How many addresses, saturating at `u128::MAX` (only all of IPv6 plus more
    /// reaches it).
    pub fn len(&self) -> u128 {
        self.n_addresses
    }

    pub fn is_empty(&self) -> bool {
        self.n_addresses == 0
    }

    /// The address at `idx` in sorted order, `None` past the end.
    pub fn get(&self, idx: u128) -> Option<IpAddr> {
        if idx >= self.n_addresses {
            return None;
        }
        // The last span starting at or before idx.
        let span_idx = self
            .starts
            .partition_point(|&start| start <= idx)
            .checked_sub(1)?;
        let span = *self.spans.get(span_idx)?;
        let offset = idx - *self.starts.get(span_idx)?;
        (offset < span.n_addresses()).then(|| span.address(offset))
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        find_span(&self.spans, address)
    }

    /// Whether an exclusion covers the address. The engine checks this before
    /// every connection, as a second line behind the subtraction.
    pub fn is_excluded(&self, address: IpAddr) -> bool {
        find_span(&self.excluded, address)
    }

    /// The addresses in order. Meant for small sets and tests; the scan indexes.
    pub fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.spans
            .iter()
            .flat_map(|&span| (0..span.n_addresses()).map(move |offset| span.address(offset)))
    }

    /// The merged ranges, for display (`198.51.100.0-198.51.100.255`).
    pub fn ranges(&self) -> Vec<AddressRange> {
        self.spans
            .iter()
            .map(|&span| AddressRange {
                first: span.address(0),
                last: span.address(span.last - span.first),
            })
            .collect()
    }
}

fn find_span(spans: &[Span], address: IpAddr) -> bool {
    let Some(point) = spans_of(AddressRange {
        first: address,
        last: address,
    })
    .into_iter()
    .next() else {
        return false;
    };
    let idx =
        spans.partition_point(|span| (span.family, span.first) <= (point.family, point.first));
    idx.checked_sub(1)
        .and_then(|i| spans.get(i))
        .is_some_and(|span| span.family == point.family && span.last >= point.first)
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn range(text: &str) -> AddressRange {
        parse_target(text)
            .expect("test target")
            .range()
            .expect("literal target")
    }

    fn set(targets: &[&str], excludes: &[&str]) -> TargetSet {
        let targets: Vec<_> = targets.iter().map(|t| range(t)).collect();
        let excludes: Vec<_> = excludes.iter().map(|t| range(t)).collect();
        TargetSet::new(&targets, &excludes)
    }

    fn shown(set: &TargetSet) -> Vec<String> {
        set.ranges().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn parses_each_kind_of_target() {
        assert_eq!(
            parse_target("198.51.100.7").ok(),
            Some(TargetSpec::Address(ip("198.51.100.7")))
        );
        assert_eq!(
            parse_target(" 2001:db8::1 ").ok(),
            Some(TargetSpec::Address(ip("2001:db8::1")))
        );
        assert_eq!(
            parse_target("198.51.100.0/24").ok(),
            Some(TargetSpec::Network("198.51.100.0/24".parse().expect("net")))
        );
        assert_eq!(
            parse_target("198.51.100.10-198.51.100.20").ok(),
            Some(TargetSpec::Range {
                first: ip("198.51.100.10"),
                last: ip("198.51.100.20")
            })
        );
        assert_eq!(
            parse_target("198.51.100.10-20").ok(),
            Some(TargetSpec::Range {
                first: ip("198.51.100.10"),
                last: ip("198.51.100.20")
            })
        );
        assert_eq!(
            parse_target("2001:db8::1-2001:db8::ff").ok(),
            Some(TargetSpec::Range {
                first: ip("2001:db8::1"),
                last: ip("2001:db8::ff")
            })
        );
        assert_eq!(
            parse_target("Db-1.Example.ORG").ok(),
            Some(TargetSpec::HostName("db-1.example.org".into()))
        );
    }

    #[test]
    fn host_bits_are_cleared() {
        assert_eq!(
            parse_target("198.51.100.77/24").ok(),
            Some(TargetSpec::Network("198.51.100.0/24".parse().expect("net")))
        );
        assert_eq!(
            shown(&set(&["2001:db8::5/126"], &[])),
            ["2001:db8::4-2001:db8::7"]
        );
    }

    #[test]
    fn bad_targets_say_what_is_wrong() {
        let message = |text: &str| parse_target(text).map(|_| ()).map_err(|e| e.to_string());
        assert_eq!(
            message("198.51.100.20-198.51.100.10"),
            Err("invalid range `198.51.100.20-198.51.100.10`: the first address comes after the last".into())
        );
        assert_eq!(
            message("198.51.100.1-2001:db8::1"),
            Err(
                "invalid range `198.51.100.1-2001:db8::1`: both ends must be IPv4 or both IPv6"
                    .into()
            )
        );
        assert_eq!(
            message("198.51.100.0/33"),
            Err("invalid target `198.51.100.0/33`: the prefix length is too long".into())
        );
        assert_eq!(
            message("fe80::1%lo"),
            Err("invalid target `fe80::1%lo`: IPv6 zone ids (`%lo`) are not supported; scan link-local addresses from a network namespace where they are reachable without one, or scan a global address of the host".into())
        );
        assert_eq!(
            message("10.0.0.256"),
            Err("invalid target `10.0.0.256`: not a valid IP address".into())
        );
        assert_eq!(
            message("10.0.0.1-300"),
            Err("invalid target `10.0.0.1-300`: the end of the range is neither an address nor an octet".into())
        );
        assert_eq!(
            message("web server"),
            Err(
                "invalid target `web server`: not an address, a network, a range or a host name"
                    .into()
            )
        );
        assert_eq!(
            message("-bad.example"),
            Err(
                "invalid target `-bad.example`: a host name label cannot start or end with `-`"
                    .into()
            )
        );
        assert!(message("").is_err());
    }

    #[test]
    fn target_files_skip_comments_and_name_bad_lines() {
        let text = "# lab hosts\n198.18.0.1\n\n198.18.1.0/30   # the db subnet\n  db.lab.example\n";
        assert_eq!(
            parse_target_list(text).ok(),
            Some(vec![
                "198.18.0.1".into(),
                "198.18.1.0/30".into(),
                "db.lab.example".into()
            ])
        );
        let (line, err) =
            parse_target_list("198.18.0.1\n198.18.0.0/99\n").expect_err("line 2 is bad");
        assert_eq!(line, 2);
        assert_eq!(
            err.to_string(),
            "invalid target `198.18.0.0/99`: the prefix length is too long"
        );
    }

    #[test]
    fn target_file_errors_name_file_and_line() {
        let dir =
            std::env::temp_dir().join(format!("perimeter-scan-targets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("targets.txt");
        std::fs::write(&path, "198.18.0.1\nnot a target\n").expect("write");
        let message = read_target_file(&path).map_err(|e| e.to_string()).err();
        assert_eq!(
            message,
            Some(format!(
                "{}:2: invalid target `not a target`: not an address, a network, a range or a host name",
                path.display()
            ))
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn merges_sorts_and_indexes() {
        let set = set(
            &[
                "198.18.0.4-198.18.0.9",
                "2001:db8::1",
                "198.18.0.0/30",
                "198.18.0.8/29",
            ],
            &[],
        );
        assert_eq!(shown(&set), ["198.18.0.0-198.18.0.15", "2001:db8::1"]);
        assert_eq!(set.len(), 17);
        assert_eq!(set.get(0), Some(ip("198.18.0.0")));
        assert_eq!(set.get(15), Some(ip("198.18.0.15")));
        assert_eq!(set.get(16), Some(ip("2001:db8::1")));
        assert_eq!(set.get(17), None);
        let all: Vec<IpAddr> = set.iter().collect();
        assert_eq!(all.len(), 17);
        assert!(all.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn excludes_are_subtracted_as_ranges() {
        let set = set(
            &["198.18.0.0/24", "2001:db8::/120"],
            &[
                "198.18.0.0",
                "198.18.0.10-198.18.0.19",
                "198.18.0.255",
                "2001:db8::80/121",
            ],
        );
        assert_eq!(
            shown(&set),
            [
                "198.18.0.1-198.18.0.9",
                "198.18.0.20-198.18.0.254",
                "2001:db8::-2001:db8::7f"
            ]
        );
        assert_eq!(set.len(), 9 + 235 + 128);
        assert!(set.is_excluded(ip("198.18.0.15")));
        assert!(set.is_excluded(ip("::ffff:198.18.0.15")));
        assert!(!set.is_excluded(ip("198.18.0.20")));
        assert!(set.contains(ip("198.18.0.20")));
        assert!(!set.contains(ip("198.18.0.15")));
        for idx in 0..set.len() {
            let address = set.get(idx).expect("in range");
            assert!(
                !set.is_excluded(address),
                "{address} is excluded but indexed"
            );
        }
    }

    #[test]
    fn excluding_everything_leaves_nothing() {
        assert!(set(&["198.18.0.0/24"], &["198.18.0.0/16"]).is_empty());
    }

    #[test]
    fn mapped_ipv6_folds_into_ipv4() {
        let set = set(
            &[
                "::ffff:198.18.0.1",
                "::ffff:198.18.0.0/127",
                "::fffe:ffff:ffff-::1:0:0:1",
            ],
            &[],
        );
        // The last range straddles the mapped block: its middle is all of IPv4.
        assert_eq!(
            shown(&set),
            [
                "0.0.0.0-255.255.255.255",
                "::fffe:ffff:ffff",
                "::1:0:0:0-::1:0:0:1"
            ]
        );
    }

    #[test]
    fn whole_ipv6_counts_without_overflow() {
        // All of IPv6 holds all of IPv4 (the mapped block), which sorts first.
        let set = set(&["::/0"], &[]);
        assert_eq!(set.len(), u128::MAX);
        assert_eq!(set.get(0), Some(ip("0.0.0.0")));
        assert_eq!(set.get(1 << 32), Some(ip("::")));
        assert_eq!(
            set.get(u128::MAX - 1),
            Some(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"))
        );
    }

    fn names() -> StaticResolver {
        StaticResolver {
            names: vec![
                (
                    "db.lab.example".into(),
                    vec![ip("198.18.0.7"), ip("2001:db8::7")],
                ),
                ("gone.lab.example".into(), vec![]),
            ],
        }
    }

    fn request(targets: &[&str], excludes: &[&str]) -> TargetRequest {
        TargetRequest {
            targets: targets.iter().map(|t| t.to_string()).collect(),
            excludes: excludes.iter().map(|t| t.to_string()).collect(),
            allow_internet_wide: false,
        }
    }

    #[tokio::test]
    async fn names_resolve_once_and_are_recorded() {
        let targets = resolve_targets(
            &request(&["db.lab.example", "198.18.1.1", "nowhere.example"], &[]),
            &names(),
        )
        .await
        .expect("resolves");
        assert_eq!(
            shown(&targets.set),
            ["198.18.0.7", "198.18.1.1", "2001:db8::7"]
        );
        assert_eq!(
            targets.resolved,
            vec![(
                "db.lab.example".to_string(),
                vec![ip("198.18.0.7"), ip("2001:db8::7")]
            )]
        );
        assert_eq!(targets.problems.len(), 1);
        assert_eq!(targets.problems[0].subject, "nowhere.example");
        assert_eq!(
            targets.given,
            ["db.lab.example", "198.18.1.1", "nowhere.example"]
        );
    }

    #[tokio::test]
    async fn scope_must_be_explicit() {
        let err = |targets: &[&str], excludes: &[&str]| {
            let request = request(targets, excludes);
            let names = names();
            async move {
                resolve_targets(&request, &names)
                    .await
                    .err()
                    .map(|e| e.to_string())
            }
        };
        assert_eq!(
            err(&[], &[]).await,
            Some("no targets given: name at least one address, network, range or host name".into())
        );
        assert_eq!(
            err(&["0.0.0.0/0"], &["10.0.0.0/8"]).await,
            Some(
                "target `0.0.0.0/0` covers the whole IPv4 internet; pass --allow-internet-wide if that is really meant"
                    .into()
            )
        );
        assert!(
            err(&["::/0"], &[])
                .await
                .is_some_and(|m| m.contains("whole IPv6 internet"))
        );
        assert!(
            err(&["::/1", "8000::/1"], &[])
                .await
                .is_some_and(|m| m.contains("whole IPv6 internet"))
        );
        // Two halves make a whole.
        assert!(
            err(&["0.0.0.0/1", "128.0.0.0/1"], &[])
                .await
                .is_some_and(|m| m.contains("whole IPv4 internet"))
        );
        assert_eq!(
            err(&["198.18.0.0/24"], &["198.18.0.0/23"]).await,
            Some("no target address is left: every target address is excluded".into())
        );
        assert_eq!(
            err(&["gone.lab.example"], &[]).await,
            Some("no target address is left: no target name resolved: gone.lab.example (the name resolved to no address)".into())
        );
        assert_eq!(
            err(&["198.18.0.1"], &["nowhere.example"]).await,
            Some(
                "invalid target `nowhere.example`: the excluded host name does not resolve".into()
            )
        );

        let mut wide = request(&["0.0.0.0/0"], &["0.0.0.0/8"]);
        wide.allow_internet_wide = true;
        let targets = resolve_targets(&wide, &names()).await.expect("allowed");
        assert_eq!(targets.set.len(), (1u128 << 32) - (1 << 24));
    }

    #[tokio::test]
    async fn excluded_names_are_subtracted() {
        let targets = resolve_targets(&request(&["198.18.0.0/29"], &["db.lab.example"]), &names())
            .await
            .expect("resolves");
        assert_eq!(shown(&targets.set), ["198.18.0.0-198.18.0.6"]);
        assert!(targets.set.is_excluded(ip("198.18.0.7")));
        assert!(targets.set.is_excluded(ip("2001:db8::7")));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Against a plain BTreeSet of small v4 addresses: same members, sorted,
            /// nothing excluded.
            #[test]
            fn matches_a_materialised_set(
                targets in proptest::collection::vec((0u32..200, 0u32..30), 1..6),
                excludes in proptest::collection::vec((0u32..200, 0u32..30), 0..6),
            ) {
                let to_range = |&(start, width): &(u32, u32)| AddressRange {
                    first: IpAddr::V4(Ipv4Addr::from(start)),
                    last: IpAddr::V4(Ipv4Addr::from(start + width)),
                };
                let target_ranges: Vec<_> = targets.iter().map(to_range).collect();
                let exclude_ranges: Vec<_> = excludes.iter().map(to_range).collect();
                let set = TargetSet::new(&target_ranges, &exclude_ranges);
                let mut expected = BTreeSet::new();
                for &(start, width) in &targets {
                    expected.extend(start..=start + width);
                }
                for &(start, width) in &excludes {
                    for value in start..=start + width {
                        expected.remove(&value);
                    }
                }
                let got: Vec<u32> = (0..set.len())
                    .filter_map(|idx| set.get(idx))
                    .map(|address| match address {
                        IpAddr::V4(v4) => u32::from(v4),
                        IpAddr::V6(_) => u32::MAX,
                    })
                    .collect();
                prop_assert_eq!(got, expected.into_iter().collect::<Vec<_>>());
            }
        }
    }
}
