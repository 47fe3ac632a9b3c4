//! Which source addresses can open a new connection to a listener through the
//! local firewall, worked out over the [`Ruleset`] model of
//! [`crate::ir`] without sending a packet.
//!
//! The question is asked for one [`Probe`] (protocol, destination address and
//! port of a new inbound connection arriving on an interface other than
//! loopback) and answered symbolically over the whole source address space of
//! the probe's family: every input base chain that sees the family is walked
//! with "every source" and the set is split as rules test `saddr` (prefixes,
//! ranges, named and anonymous sets, negations). Every other test is decided
//! concretely against the probe (`daddr`, `dport`, `l4proto`, `iif lo`, `ct
//! state new`, `nfproto`, ...). A test that cannot be decided for an inbound
//! connection (marks, socket owners, rate limits, interface names, xt matches)
//! is followed both ways: where both ways agree the answer stands, where they
//! differ the sources are reported as unknown with the rule that made them so,
//! never guessed.
//!
//! Verdict maps are followed like the rules they stand for: a map keyed on
//! something the probe fixes (`ct state`, `tcp dport`, `meta l4proto`, `iif
//! lo`) gives the verdict of the one element that matches, or none, and the
//! connection goes on to the next rule; a map keyed on `saddr` splits the
//! source set by element; a concatenated key (`ip saddr . tcp dport`) is
//! compared part by part. An element whose key cannot be decided (an
//! interface name other than `lo`) forks like any undecidable test.
//!
//! Netfilter's order is kept: first match wins within a chain; `jump` comes
//! back to the next rule, `goto` does not; `return` and the end of a regular
//! chain go back to the caller, the end of a base chain applies its policy.
//! A packet must be accepted by every filter base chain on the prerouting and
//! input hooks (an accept ends only its own chain; a drop anywhere is final),
//! so the chains are walked one by one and their answers intersected.
//! Reverse-path checks in prerouting (`fib saddr . iif oif missing drop`)
//! pass: a source that can open a connection has a route back.
//!
//! Not walked: nat chains (a connection made straight to the listener is not
//! translated) and netdev ingress chains.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::rc::Rc;

use ipnet::IpNet;
use perimeter_model::Protocol;

use perimeter_model::addrset::{AddrFamily, AddrRanges, address_number};

use crate::ir::{
    Backend, Chain, Condition, Family, Field, Hook, MapElements, NatTarget, Op, Policy, Rule,
    Ruleset, Value, Verdict, VerdictMap,
};

/// A new inbound connection, arriving on an interface other than loopback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Probe {
    pub protocol: Protocol,
    /// The listener's address. The unspecified address (`0.0.0.0`, `::`)
    /// stands for "whichever local address the client picks": a rule that
    /// tests the destination address then makes the answer unknown.
    pub dst: IpAddr,
    pub dport: u16,
}

impl Probe {
    /// The family whose source addresses are considered: the destination's.
    pub fn version(&self) -> AddrFamily {
        match self.dst {
            IpAddr::V4(_) => AddrFamily::V4,
            IpAddr::V6(_) => AddrFamily::V6,
        }
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dst {
            IpAddr::V4(addr) => write!(f, "{}/{} to {addr}", self.protocol, self.dport),
            IpAddr::V6(addr) => write!(f, "{}/{} to [{addr}]", self.protocol, self.dport),
        }
    }
}

/// Which sources can reach a [`Probe`]'s listener, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reachability {
    /// Source prefixes every input chain accepts, merged and minimal, of the
    /// probe's family.
    pub allowed: Vec<IpNet>,
    /// Source prefixes whose fate hangs on a test perimeter cannot decide,
    /// with the rule and the test. A prefix can be listed once per reason
    /// when two chains are each undecided about it.
    pub unknown: Vec<(IpNet, String)>,
    /// The rules (and policies) that accept allowed sources, in the order
    /// they were met.
    pub accepting_rules: Vec<AcceptingRule>,
    /// Short lines saying which chain, rule or policy decided what.
    pub evidence: Vec<String>,
}

/// A rule or chain policy that accepted some of the allowed sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptingRule {
    /// The chain holding the rule: `nftables: inet filter input`.
    pub chain: String,
    /// nft's rule handle, or the iptables rule's 1-based position; `None` for
    /// a policy.
    pub handle: Option<u64>,
    /// The rule as listed, or `policy accept`.
    pub text: String,
    /// The accept is a base chain's policy, not a rule.
    pub by_policy: bool,
    /// Whether the rule, together with the `saddr` tests of the jumps and
    /// gotos that lead to it, looks at the source address at all. Sources
    /// taken away by earlier rules (a block list ahead of it) do not count as
    /// a restriction. `false` for a policy.
    pub restricts_source: bool,
    /// The allowed sources this rule accepts, merged and minimal.
    pub sources: Vec<IpNet>,
    /// Where the rule sends the connection, when it is a DNAT ([`published`]).
    pub dnat: Option<NatTarget>,
}

/// What happens to a connection from one source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceFate {
    Allowed,
    Denied,
    Unknown,
}

impl Reachability {
    /// The fate of connections from `source` (of the probe's family; any other
    /// address is denied, since no answer covers it).
    pub fn fate_of(&self, source: IpAddr) -> SourceFate {
        if self.allowed.iter().any(|net| net.contains(&source)) {
            SourceFate::Allowed
        } else if self.unknown.iter().any(|(net, _)| net.contains(&source)) {
            SourceFate::Unknown
        } else {
            SourceFate::Denied
        }
    }

    /// Whether every source of the family is allowed.
    pub fn allows_everyone(&self) -> bool {
        matches!(self.allowed.as_slice(), [net] if net.prefix_len() == 0)
    }
}

/// Source prefixes in words: `every source`, `every source except
/// 198.51.100.66/32`, or the list itself, whichever is shorter. Prefixes of
/// the other family are left out.
pub fn describe_sources(nets: &[IpNet], version: AddrFamily) -> String {
    let set = AddrRanges::from_ranges(
        nets.iter()
            .filter(|net| {
                matches!(
                    (net, version),
                    (IpNet::V4(_), AddrFamily::V4) | (IpNet::V6(_), AddrFamily::V6)
                )
            })
            .map(|net| {
                (
                    address_number(net.network()),
                    address_number(net.broadcast()),
                )
            })
            .collect(),
    );
    set.describe(&AddrRanges::universe(version), version, usize::MAX)
}

/// Which sources can reach the listener `probe` describes through `ruleset`.
pub fn reachability(ruleset: &Ruleset, probe: &Probe) -> Reachability {
    walk(ruleset, probe, false)
}

/// Which sources can open a new `protocol` connection of `version` to a
/// local address and port that no rule names, arriving on an interface no
/// rule names: what the ruleset does by default, worked out by the same walk
/// as [`reachability`] (the default-deny verdict, [`crate::default_deny`]).
/// A test of the destination address, port or interface holds only when it
/// admits every one (`ip daddr != 192.0.2.1` holds, `tcp dport 22` fails).
pub fn reachability_by_default(
    ruleset: &Ruleset,
    protocol: Protocol,
    version: AddrFamily,
) -> Reachability {
    let dst = match version {
        AddrFamily::V4 => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        AddrFamily::V6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    };
    let probe = Probe {
        protocol,
        dst,
        dport: 0,
    };
    walk(ruleset, &probe, true)
}

/// An address of the namespace and the interface holding it: where a
/// translated destination is routed (the link whose prefix holds it) and
/// which addresses are local.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub interface: String,
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl Link {
    fn holds(&self, addr: IpAddr) -> bool {
        IpNet::new(self.addr, self.prefix_len).is_ok_and(|net| net.contains(&addr))
    }
}

/// One way a connection to the probe's port is translated (a DNAT in a nat
/// prerouting chain) and where it goes from there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The DNAT rule, with the sources whose connections it translates.
    pub dnat: AcceptingRule,
    /// Where it sends them; `None` when the target could not be read as one
    /// address and port.
    pub to: Option<std::net::SocketAddr>,
    /// The interface toward `to` (a bridge such as `docker0`).
    pub oif: Option<String>,
    /// The translated sources the forward path (prerouting's filter chains
    /// before the translation, the forward chains after it) lets through to
    /// `to`: the sources that reach the published port.
    pub allowed: Vec<IpNet>,
    /// Translated sources whose fate hangs on a test perimeter cannot decide.
    pub unknown: Vec<(IpNet, String)>,
    pub evidence: Vec<String>,
}

/// The connections to `probe`'s address and port that the nat prerouting
/// chains send elsewhere, and whether the forward chains let them through:
/// how Docker publishes a container's port (`-p 6379:6379` is a DNAT in nat
/// PREROUTING's DOCKER chain and an accept in FORWARD's), on a path that never
/// crosses the input chain ufw and most rulesets guard. `links` are the
/// namespace's addresses; with none, the interfaces the rules name cannot be
/// told apart and the answers are unknown.
///
/// What is assumed: a connection from beyond the host arrives neither on
/// loopback nor on an interface leading to an address some DNAT sends
/// connections to (a container bridge), and a forwarded connection leaves by
/// the link whose prefix holds its translated destination. A DNAT to a local
/// address, or to more than one, is not followed (unknown).
///
/// Returns the DNATs met, and the sources whose translation could not be
/// decided, with why.
pub fn published(
    ruleset: &Ruleset,
    probe: &Probe,
    links: &[Link],
) -> (Vec<Published>, Vec<(IpNet, String)>) {
    // A connection from beyond the host to a loopback address is a martian
    // the kernel drops before nat sees it (`-p 127.0.0.1:6380:6379`).
    if probe.dst.is_loopback() {
        return (Vec::new(), Vec::new());
    }
    let version = probe.version();
    let universe = AddrRanges::universe(version);
    let outer_only = dnat_interfaces(ruleset, links);
    let nat_bases = base_chains(ruleset, version, &[Hook::Prerouting], "nat");
    let mut translated_before = AddrRanges::empty();
    let mut published = Vec::new();
    let mut undecided = Vec::new();
    for base in nat_bases {
        let context = Context {
            mode: Mode::Nat,
            unnamed: false,
            outer_only: outer_only.clone(),
            oif: None,
            original: None,
        };
        let nat = evaluate(ruleset, probe, &[base], context);
        // A connection an earlier chain translated is no longer to this
        // address and port.
        for (net, reason) in nat.unknown {
            let set = AddrRanges::from_nets(&[net], version).difference(&translated_before);
            undecided.extend(
                set.prefixes(version)
                    .into_iter()
                    .map(|n| (n, reason.clone())),
            );
        }
        for mut rule in nat.accepting_rules {
            let sources =
                AddrRanges::from_nets(&rule.sources, version).difference(&translated_before);
            if sources.is_empty() {
                continue;
            }
            rule.sources = sources.prefixes(version);
            published.push(forward_path(
                ruleset,
                probe,
                links,
                &outer_only,
                rule,
                &sources,
            ));
        }
        translated_before.insert(&AddrRanges::from_nets(&nat.allowed, version));
        if translated_before == universe {
            break;
        }
    }
    (published, undecided)
}

/// Where the connections `dnat` translates go: the prerouting filter chains
/// with the original destination, then the forward chains with the new one.
fn forward_path(
    ruleset: &Ruleset,
    probe: &Probe,
    links: &[Link],
    outer_only: &[String],
    dnat: AcceptingRule,
    sources: &AddrRanges,
) -> Published {
    let version = probe.version();
    let target = dnat.dnat.clone();
    let to = target
        .as_ref()
        .and_then(|t| Some(std::net::SocketAddr::new(t.addr?, t.port_for(probe.dport)?)));
    let unknown_all = |why: String| -> Vec<(IpNet, String)> {
        sources
            .prefixes(version)
            .into_iter()
            .map(|net| (net, why.clone()))
            .collect()
    };
    let mut published = Published {
        dnat,
        to,
        oif: None,
        allowed: Vec::new(),
        unknown: Vec::new(),
        evidence: Vec::new(),
    };
    let Some(to) = to else {
        let text = target.map_or_else(String::new, |t| t.text);
        published.unknown = unknown_all(format!("the translation to {text} is not followed"));
        return published;
    };
    if to.is_ipv4() != probe.dst.is_ipv4() {
        published.unknown = unknown_all(format!("{to} is of the other family"));
        return published;
    }
    if links.iter().any(|link| link.addr == to.ip()) || to.ip().is_loopback() {
        published.unknown = unknown_all(format!(
            "{to} is local: the input path after translation is not walked"
        ));
        return published;
    }
    let oif = links
        .iter()
        .filter(|link| link.holds(to.ip()))
        .max_by_key(|link| link.prefix_len)
        .map(|link| link.interface.clone());
    published.oif = oif.clone();

    let prerouting = base_chains(ruleset, version, &[Hook::Prerouting], "filter");
    let before = evaluate(
        ruleset,
        probe,
        &prerouting,
        Context {
            mode: Mode::Input,
            unnamed: false,
            outer_only: outer_only.to_vec(),
            oif: None,
            original: None,
        },
    );
    let forward_probe = Probe {
        protocol: probe.protocol,
        dst: to.ip(),
        dport: to.port(),
    };
    let forward_bases = base_chains(ruleset, version, &[Hook::Forward], "filter");
    let after = evaluate(
        ruleset,
        &forward_probe,
        &forward_bases,
        Context {
            mode: Mode::Forward,
            unnamed: false,
            outer_only: outer_only.to_vec(),
            oif,
            original: Some((probe.dst, probe.dport)),
        },
    );
    // The replies cross prerouting's filter chains (raw, mangle) as they
    // arrive from the address behind the host, then the forward chains the
    // other way: a rule that drops them (DOCKER-USER's `! -s ALLOWED`
    // matches the container's replies) stops the connection as surely as
    // one that drops the client's first packet. Every one of those chains
    // must let them through, as `evaluate` asks of its bases.
    let reply_bases: Vec<usize> = prerouting.iter().chain(&forward_bases).copied().collect();
    let replies = evaluate(
        ruleset,
        &forward_probe,
        &reply_bases,
        Context {
            mode: Mode::Reply,
            unnamed: false,
            outer_only: outer_only.to_vec(),
            oif: published.oif.clone(),
            original: Some((probe.dst, probe.dport)),
        },
    );
    let allowed = sources
        .intersection(&AddrRanges::from_nets(&before.allowed, version))
        .intersection(&AddrRanges::from_nets(&after.allowed, version))
        .intersection(&AddrRanges::from_nets(&replies.allowed, version));
    published.allowed = allowed.prefixes(version);
    let reply_unknown = replies
        .unknown
        .into_iter()
        .map(|(net, reason)| (net, format!("its replies: {reason}")));
    for (net, reason) in before
        .unknown
        .into_iter()
        .chain(after.unknown)
        .chain(reply_unknown)
    {
        let open = AddrRanges::from_nets(&[net], version)
            .intersection(sources)
            .difference(&allowed);
        published.unknown.extend(
            open.prefixes(version)
                .into_iter()
                .map(|n| (n, reason.clone())),
        );
    }
    if !prerouting.is_empty() {
        published.evidence.extend(before.evidence);
    }
    published.evidence.extend(after.evidence);
    published
}

/// The interfaces toward the addresses DNAT rules of `ruleset` send
/// connections to: the links whose prefixes hold them.
fn dnat_interfaces(ruleset: &Ruleset, links: &[Link]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for rule in ruleset.chains.iter().flat_map(|c| &c.rules) {
        let Some(Verdict::Dnat(NatTarget {
            addr: Some(addr), ..
        })) = &rule.verdict
        else {
            continue;
        };
        if let Some(link) = links
            .iter()
            .filter(|link| link.holds(*addr) && link.addr != *addr)
            .max_by_key(|link| link.prefix_len)
            && !names.contains(&link.interface)
        {
            names.push(link.interface.clone());
        }
    }
    names
}

/// The walk of every input base chain for `probe`; with `unnamed`, the
/// probe's destination address, port and interface are ones no rule names.
fn walk(ruleset: &Ruleset, probe: &Probe, unnamed: bool) -> Reachability {
    let bases = base_chains(
        ruleset,
        probe.version(),
        &[Hook::Prerouting, Hook::Input],
        "filter",
    );
    let context = Context {
        mode: Mode::Input,
        unnamed,
        outer_only: Vec::new(),
        oif: None,
        original: None,
    };
    evaluate(ruleset, probe, &bases, context)
}

/// The base chains of `chain_type` on `hooks` that see `version` packets.
/// The kernel runs them hook by hook (in the order of `hooks`), a hook's
/// chains in priority order; for filter chains the order changes no answer
/// (every chain must accept) but keeps the evidence readable.
fn base_chains(
    ruleset: &Ruleset,
    version: AddrFamily,
    hooks: &[Hook],
    chain_type: &str,
) -> Vec<usize> {
    let mut bases: Vec<(usize, usize, i32)> = ruleset
        .chains
        .iter()
        .enumerate()
        .filter(|(_, chain)| chain.family.sees(version))
        .filter_map(|(idx, chain)| {
            let base = chain.base.as_ref().filter(|b| b.chain_type == chain_type)?;
            let hook_idx = hooks.iter().position(|h| *h == base.hook)?;
            Some((idx, hook_idx, base.priority))
        })
        .collect();
    bases.sort_by_key(|&(_, hook_idx, priority)| (hook_idx, priority));
    bases.into_iter().map(|(idx, _, _)| idx).collect()
}

/// What a walk is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Whether the filter chains let a new connection through: accept or
    /// drop (the input path, and prerouting's filter chains).
    Input,
    /// Whether the nat prerouting chains translate the connection's
    /// destination: a DNAT "accepts" (the sources it takes are published);
    /// an accept, a drop or the policy leaves the destination alone.
    Nat,
    /// Whether the forward chains let a translated connection through to
    /// the address behind the host.
    Forward,
    /// Whether the forward chains let the replies of a translated
    /// connection back: a packet from the address behind the host (the
    /// probe's destination and port, now its source) to the client, whose
    /// address is what the walk's sources stand for, in an established
    /// connection, in the reply direction.
    Reply,
}

/// What a walk knows besides the probe.
#[derive(Debug, Clone)]
struct Context {
    mode: Mode,
    /// The probe's destination address, port and interface are ones no rule
    /// names ([`reachability_by_default`]).
    unnamed: bool,
    /// Interfaces a connection from beyond the host does not arrive on: those
    /// leading to the addresses DNAT rules send connections to (Docker's
    /// bridges), besides loopback.
    outer_only: Vec<String>,
    /// The interface a forwarded connection leaves by: the link whose prefix
    /// holds the translated destination.
    oif: Option<String>,
    /// The destination address and port the client connected to, where a
    /// DNAT has since replaced the probe's (conntrack's original tuple,
    /// `ct original daddr`, `--ctorigdstport`); `None` when the probe's own
    /// are the original ones.
    original: Option<(IpAddr, u16)>,
}

/// The walk of the base chains `bases` for `probe`, their answers
/// intersected.
fn evaluate(ruleset: &Ruleset, probe: &Probe, bases: &[usize], context: Context) -> Reachability {
    let version = probe.version();
    let universe = AddrRanges::universe(version);
    let mut evidence = Vec::new();
    if bases.is_empty() {
        evidence.push(format!(
            "{probe}: no {} base chain sees {} packets, so every source is allowed",
            if matches!(context.mode, Mode::Forward | Mode::Reply) {
                "forward"
            } else {
                "input"
            },
            version.as_str()
        ));
        return Reachability {
            allowed: universe.prefixes(version),
            unknown: Vec::new(),
            accepting_rules: Vec::new(),
            evidence,
        };
    }
    if bases.len() > 1 {
        evidence.push(format!(
            "{probe}: {} {} chains see {} packets; a connection must be accepted by each",
            bases.len(),
            if bases.iter().any(|&idx| {
                ruleset
                    .chains
                    .get(idx)
                    .and_then(|c| c.base.as_ref())
                    .is_some_and(|b| b.hook == Hook::Prerouting)
            }) {
                "prerouting and input"
            } else {
                "input"
            },
            version.as_str()
        ));
    }

    let mut walker = Walker {
        ruleset,
        probe,
        version,
        universe: universe.clone(),
        base: 0,
        sites: Vec::new(),
        site_ids: HashMap::new(),
        address_sets: HashMap::new(),
        map_cache: HashMap::new(),
        steps: 0,
        context,
    };
    let mut outcomes: Vec<(usize, Vec<Part>)> = Vec::new();
    for &base in bases {
        walker.base = base;
        walker.steps = 0;
        walker.map_cache.clear();
        let start = vec![Frame {
            chain: base,
            next_rule: 0,
            constraint: universe.clone(),
        }];
        let parts = walker.run(start, universe.clone(), 0);
        outcomes.push((base, parts));
    }

    let mut allowed = universe.clone();
    let mut denied = AddrRanges::empty();
    for (_, parts) in &outcomes {
        let mut accepted = AddrRanges::empty();
        for part in parts {
            match part.fate {
                Fate::Accepted => accepted.insert(&part.sources),
                Fate::Denied => denied.insert(&part.sources),
                Fate::Unknown(_) | Fate::GaveUp(_) => {}
            }
        }
        allowed = allowed.intersection(&accepted);
    }

    let mut unknown_by_reason: Vec<(String, AddrRanges)> = Vec::new();
    let mut accepted_by_site: BTreeMap<SiteId, AddrRanges> = BTreeMap::new();
    for (base, parts) in &outcomes {
        for part in parts.iter().take(MAX_EVIDENCE_PER_CHAIN) {
            evidence.push(walker.describe_part(*base, part));
        }
        if parts.len() > MAX_EVIDENCE_PER_CHAIN {
            evidence.push(format!(
                "{}: {} more rules decided for other sources",
                walker.describe_chain(*base),
                parts.len() - MAX_EVIDENCE_PER_CHAIN
            ));
        }
        for part in parts {
            match &part.fate {
                Fate::Unknown(reason) | Fate::GaveUp(reason) => {
                    // Sources another chain surely drops are not unknown.
                    let open = part.sources.difference(&denied);
                    if open.is_empty() {
                        continue;
                    }
                    match unknown_by_reason.iter_mut().find(|(r, _)| r == reason) {
                        Some((_, set)) => set.insert(&open),
                        None => unknown_by_reason.push((reason.clone(), open)),
                    }
                }
                Fate::Accepted => {
                    let kept = part.sources.intersection(&allowed);
                    if kept.is_empty() {
                        continue;
                    }
                    for &site in &part.sites {
                        accepted_by_site.entry(site).or_default().insert(&kept);
                    }
                }
                Fate::Denied => {}
            }
        }
    }
    evidence.dedup();

    let accepting_rules = accepted_by_site
        .into_iter()
        .filter_map(|(site, sources)| walker.accepting_rule(site, &sources))
        .collect();
    let unknown = unknown_by_reason
        .into_iter()
        .flat_map(|(reason, set)| {
            set.prefixes(version)
                .into_iter()
                .map(move |net| (net, reason.clone()))
        })
        .collect();

    Reachability {
        allowed: allowed.prefixes(version),
        unknown,
        accepting_rules,
        evidence,
    }
}

// ---------------------------------------------------------------------------
// The walk

/// How deep jumps may nest; nft itself refuses more than 16 levels.
const MAX_JUMP_DEPTH: usize = 16;

/// How many jumps and gotos one path may take. Gotos do not deepen the stack,
/// so a goto loop (which the kernel would refuse to load, but a model can
/// hold) is stopped by this count.
const MAX_HOPS: usize = 64;

/// How many rules one base chain's walk may look at. Each split of the source
/// set and each undecidable test that leads to a jump walks the rest of the
/// ruleset again, so a pathological ruleset could take long; past this the
/// sources still in flight are reported as unknown.
const MAX_STEPS: usize = 1_000_000;

/// Evidence lines per base chain: enough for an allow list and its policy,
/// not a line per entry of a block list.
const MAX_EVIDENCE_PER_CHAIN: usize = 12;

type SiteId = usize;

/// Where a verdict was given: a rule, or a base chain's policy.
#[derive(Debug, Clone)]
struct Site {
    chain: usize,
    /// `None` for the policy.
    rule: Option<usize>,
    /// Whether every path to this site tests the source address.
    restricts_source: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Fate {
    Accepted,
    Denied,
    /// The reason names the rule and the test that could not be decided.
    Unknown(String),
    /// The walk gave up (too many rules to follow). Reported like unknown,
    /// but kept as the reason when merged with other fates, since no rule is
    /// to blame.
    GaveUp(String),
}

/// Some sources, and what became of them.
#[derive(Debug, Clone)]
struct Part {
    fate: Fate,
    sources: AddrRanges,
    /// The rules or policy that gave the verdict (empty for unknown).
    sites: Vec<SiteId>,
}

/// A position in a chain, as on netfilter's jump stack.
#[derive(Debug, Clone)]
struct Frame {
    chain: usize,
    /// The rule to look at next.
    next_rule: usize,
    /// The sources the jumps and gotos leading here let in, by their own
    /// `saddr` tests: what an accept further on is restricted to.
    constraint: AddrRanges,
}

/// What one condition says about the probe.
#[derive(Debug)]
enum Test {
    Holds,
    Fails,
    /// Holds for these sources only.
    Sources(AddrRanges),
    /// Cannot be decided; the words say why.
    Undecided(String),
}

/// Whether a concrete value of the probe is among a rule's values.
#[derive(Debug)]
enum Member {
    Yes,
    No,
    Undecided(String),
}

struct Walker<'r> {
    ruleset: &'r Ruleset,
    probe: &'r Probe,
    version: AddrFamily,
    universe: AddrRanges,
    /// The base chain being walked.
    base: usize,
    sites: Vec<Site>,
    site_ids: HashMap<(usize, Option<usize>), SiteId>,
    /// Named sets already turned into source sets, by family, table and name.
    address_sets: HashMap<(Family, String, String), Result<AddrRanges, String>>,
    /// Verdict maps already looked up, by chain and rule. Lookups of `ct
    /// state` depend on the base chain's priority, so this is emptied for
    /// each base chain.
    map_cache: HashMap<(usize, usize), Rc<Vec<Branch>>>,
    steps: usize,
    context: Context,
}

/// One verdict a verdict map gives the probe, and the sources it gives it to.
#[derive(Debug)]
struct Branch {
    verdict: Verdict,
    sources: AddrRanges,
    /// Why the elements may not match, when that cannot be told.
    undecided: Option<String>,
}

impl<'r> Walker<'r> {
    /// Follows `sources` from the position on top of `stack` to their fates.
    /// The parts returned cover `sources` exactly.
    fn run(&mut self, mut stack: Vec<Frame>, mut sources: AddrRanges, hops: usize) -> Vec<Part> {
        let ruleset = self.ruleset;
        let mut parts = Vec::new();
        // Rules whose verdict hangs on an undecidable test: the sources they
        // would take, and their fate if the test holds. The walk goes on with
        // those sources as if it did not, and the two are merged at the end.
        let mut forks: Vec<(AddrRanges, Vec<Part>, String)> = Vec::new();
        while !sources.is_empty() {
            let Some(frame) = stack.last_mut() else {
                break;
            };
            let chain_idx = frame.chain;
            let Some(chain) = ruleset.chains.get(chain_idx) else {
                break;
            };
            let rule_idx = frame.next_rule;
            let Some(rule) = chain.rules.get(rule_idx) else {
                // The end of a chain: back to the caller, or for the base
                // chain (or what it went to), its policy.
                if stack.len() <= 1 {
                    parts.push(self.policy_part(std::mem::take(&mut sources)));
                } else {
                    stack.pop();
                }
                continue;
            };
            frame.next_rule += 1;

            self.steps += 1;
            if self.steps > MAX_STEPS {
                parts.push(Part {
                    fate: Fate::GaveUp(format!(
                        "{}: stopped after following {MAX_STEPS} rules",
                        self.describe_chain(self.base)
                    )),
                    sources: std::mem::take(&mut sources),
                    sites: Vec::new(),
                });
                break;
            }
            // Counters, logs and `continue` do not change a packet's fate,
            // whatever their tests say.
            let Some(verdict) = rule.verdict.as_ref().filter(|v| **v != Verdict::Continue) else {
                continue;
            };
            let Some((saddr, undecided)) = self.test_rule(chain, rule) else {
                continue;
            };
            // A plain verdict is one branch for every source the tests admit;
            // a verdict map has one per verdict its elements give.
            let branches = match verdict {
                Verdict::Map(map) => Some(self.map_branches(chain_idx, rule_idx, map)),
                _ => None,
            };
            let n_branches = branches.as_ref().map_or(1, |b| b.len());
            for branch_idx in 0..n_branches {
                let (verdict, admitted, branch_undecided) = match &branches {
                    Some(branches) => match branches.get(branch_idx) {
                        Some(branch) => (
                            &branch.verdict,
                            Cow::Owned(saddr.intersection(&branch.sources)),
                            branch.undecided.as_deref(),
                        ),
                        None => break,
                    },
                    None => (verdict, Cow::Borrowed(&saddr), None),
                };
                // Sources a decided element of this map took are gone from
                // `sources`: keys do not overlap, so no other element can
                // match them.
                let matched = sources.intersection(&admitted);
                if matched.is_empty() {
                    continue;
                }
                let reason =
                    |why: &str| format!("{}: {}: {why}", chain.describe(), rule_ref(chain, rule));
                let undecided = undecided.as_deref().or(branch_undecided);
                let constraint = stack
                    .last()
                    .map_or_else(AddrRanges::empty, |f| f.constraint.intersection(&admitted));
                let outcome = self.apply(
                    verdict,
                    &stack,
                    matched.clone(),
                    (chain_idx, rule_idx),
                    constraint,
                    hops,
                );
                match undecided {
                    None => {
                        sources.remove(&matched);
                        parts.extend(outcome);
                    }
                    Some(why) => forks.push((matched, outcome, reason(why))),
                }
            }
        }
        // Later forks first: each one's "test does not hold" side is the walk
        // after it, which later forks have already settled.
        for (region, if_holds, reason) in forks.into_iter().rev() {
            parts = merge_fork(parts, &region, if_holds, &reason);
        }
        normalize(parts)
    }

    /// The fate of `matched`, taken by the rule at `at` with `verdict`; the
    /// stack is the one in force when the rule was met.
    fn apply(
        &mut self,
        verdict: &Verdict,
        stack: &[Frame],
        matched: AddrRanges,
        at: (usize, usize),
        constraint: AddrRanges,
        hops: usize,
    ) -> Vec<Part> {
        let ruleset = self.ruleset;
        let (chain_idx, rule_idx) = at;
        let unknown = |sources: AddrRanges, why: String| {
            let chain = ruleset.chains.get(chain_idx);
            let rule = chain.and_then(|c| c.rules.get(rule_idx));
            let reason = match (chain, rule) {
                (Some(chain), Some(rule)) => {
                    format!("{}: {}: {why}", chain.describe(), rule_ref(chain, rule))
                }
                _ => why,
            };
            vec![Part {
                fate: Fate::Unknown(reason),
                sources,
                sites: Vec::new(),
            }]
        };
        match verdict {
            // In a nat walk a DNAT is what is looked for, and any other end
            // leaves the destination as it was.
            Verdict::Dnat(_) if self.context.mode == Mode::Nat => {
                let restricts = constraint != self.universe;
                let site = self.site(chain_idx, Some(rule_idx), restricts);
                vec![Part {
                    fate: Fate::Accepted,
                    sources: matched,
                    sites: vec![site],
                }]
            }
            Verdict::Accept | Verdict::Drop | Verdict::Reject => {
                let restricts = constraint != self.universe;
                let site = self.site(chain_idx, Some(rule_idx), restricts);
                vec![Part {
                    fate: if *verdict == Verdict::Accept && self.context.mode != Mode::Nat {
                        Fate::Accepted
                    } else {
                        Fate::Denied
                    },
                    sources: matched,
                    sites: vec![site],
                }]
            }
            Verdict::Continue => self.run(stack.to_vec(), matched, hops),
            Verdict::Return => match stack.split_last() {
                Some((_, callers)) if !callers.is_empty() => {
                    self.run(callers.to_vec(), matched, hops)
                }
                _ => vec![self.policy_part(matched)],
            },
            Verdict::Jump(target) | Verdict::Goto(target) => {
                let Some(chain) = ruleset.chains.get(chain_idx) else {
                    return unknown(matched, "its chain is gone".to_owned());
                };
                let Some(target_idx) = ruleset.chains.iter().position(|c| {
                    c.backend == chain.backend
                        && c.family == chain.family
                        && c.table == chain.table
                        && c.name == *target
                }) else {
                    return unknown(matched, format!("chain {target} was not listed"));
                };
                if hops >= MAX_HOPS {
                    return unknown(
                        matched,
                        format!("more than {MAX_HOPS} jumps and gotos on one path"),
                    );
                }
                // A chain entered again while it is on the stack (a goto to
                // itself included) starts over with the same packet: a loop,
                // which the kernel would refuse to load.
                if stack.iter().any(|frame| frame.chain == target_idx) {
                    return unknown(
                        matched,
                        format!("chain {target} is already being evaluated (a loop)"),
                    );
                }
                let mut next = stack.to_vec();
                if matches!(verdict, Verdict::Goto(_)) {
                    next.pop();
                }
                next.push(Frame {
                    chain: target_idx,
                    next_rule: 0,
                    constraint,
                });
                if next.len() > MAX_JUMP_DEPTH + 1 {
                    return unknown(matched, format!("jumps nest deeper than {MAX_JUMP_DEPTH}"));
                }
                self.run(next, matched, hops + 1)
            }
            Verdict::Map(_) => unknown(matched, "a verdict map inside a verdict map".to_owned()),
            Verdict::Dnat(target) => unknown(matched, format!("translates to {}", target.text)),
            Verdict::Other(action) => unknown(matched, format!("hands packets to {action}")),
        }
    }

    /// What a verdict map does with the probe, per verdict: the sources
    /// whose element gives it (every source unless the key holds the source
    /// address), and why that element may not match when that cannot be
    /// told. Elements that match nothing, or `continue`, are left out: their
    /// sources go on to the next rule.
    fn map_branches(
        &mut self,
        chain_idx: usize,
        rule_idx: usize,
        map: &VerdictMap,
    ) -> Rc<Vec<Branch>> {
        if let Some(branches) = self.map_cache.get(&(chain_idx, rule_idx)) {
            return Rc::clone(branches);
        }
        let ruleset = self.ruleset;
        // Decided branches come first: a source an element surely matches
        // matches no other, so the undecided ones need not be asked about it.
        let mut branches: Vec<Branch> = Vec::new();
        let mut undecided_branches: Vec<Branch> = Vec::new();
        match ruleset
            .chains
            .get(chain_idx)
            .and_then(|chain| Some((chain, ruleset.map_elements(chain, &map.elements)?)))
        {
            Some((chain, elements)) => {
                for element in elements {
                    if element.verdict == Verdict::Continue {
                        continue;
                    }
                    let Some((sources, undecided)) =
                        self.test_element(chain, &map.key, &element.key)
                    else {
                        continue;
                    };
                    if sources.is_empty() {
                        continue;
                    }
                    if let Some(why) = undecided {
                        undecided_branches.push(Branch {
                            verdict: element.verdict.clone(),
                            sources,
                            undecided: Some(format!("element `{element}`: {why}")),
                        });
                        continue;
                    }
                    // Elements giving the same verdict are one branch: a
                    // block list of thousands of addresses is one set.
                    match branches.iter_mut().find(|b| b.verdict == element.verdict) {
                        Some(branch) => branch.sources.insert(&sources),
                        None => branches.push(Branch {
                            verdict: element.verdict.clone(),
                            sources,
                            undecided: None,
                        }),
                    }
                }
            }
            None => {
                // A named map that was not listed: any verdict, or none.
                if let MapElements::Named(name) = &map.elements {
                    branches.push(Branch {
                        verdict: Verdict::Other(format!("map @{name}")),
                        sources: self.universe.clone(),
                        undecided: Some(format!("map @{name} was not listed")),
                    });
                }
            }
        }
        branches.extend(undecided_branches);
        let branches = Rc::new(branches);
        self.map_cache
            .insert((chain_idx, rule_idx), Rc::clone(&branches));
        branches
    }

    /// The sources for which the probe's `key` equals a map or set element's
    /// `value`, and the first part of the comparison that cannot be decided;
    /// `None` when it is unequal whatever the source. Concatenations compare
    /// part by part.
    fn test_element(
        &mut self,
        chain: &Chain,
        key: &Field,
        value: &Value,
    ) -> Option<(AddrRanges, Option<String>)> {
        let pairs: Vec<(&Field, &Value)> = match (key, value) {
            (Field::Concat(fields), Value::Concat(values)) if fields.len() == values.len() => {
                fields.iter().zip(values).collect()
            }
            _ => vec![(key, value)],
        };
        let mut sources = self.universe.clone();
        let mut undecided = None;
        for (field, value) in pairs {
            let condition = Condition::Match {
                field: field.clone(),
                op: Op::Eq,
                value: value.clone(),
            };
            match self.test(chain, &condition) {
                Test::Holds => {}
                Test::Fails => return None,
                Test::Sources(set) => sources = sources.intersection(&set),
                Test::Undecided(why) => {
                    undecided.get_or_insert(why);
                }
            }
        }
        Some((sources, undecided))
    }

    /// A concatenation (`ip saddr . tcp dport`) tested against a set of
    /// concatenated values: the union of what each element admits.
    fn test_concat(
        &mut self,
        chain: &Chain,
        condition: &Condition,
        key: &Field,
        op: Op,
        value: &Value,
    ) -> Test {
        // `ip saddr . tcp dport != { ... }` does not hold for an IPv6
        // packet either: each part's header is a dependency of the whole.
        if let Field::Concat(fields) = key
            && fields.iter().any(|field| {
                matches!(field, Field::Payload { protocol, .. } if !self.has_header(chain, protocol))
            })
        {
            return Test::Fails;
        }
        let elements: Vec<Value> = match value {
            Value::Set(items) => items.clone(),
            Value::SetRef(name) => match self.named_set(chain, name) {
                Some(elements) => elements.to_vec(),
                None => return Test::Undecided(format!("set @{name} was not listed")),
            },
            Value::Concat(_) => vec![value.clone()],
            _ => return Test::Undecided(format!("`{condition}` cannot be evaluated")),
        };
        let mut admitted = AddrRanges::empty();
        for element in &elements {
            match self.test_element(chain, key, element) {
                None => {}
                Some((sources, None)) => admitted.insert(&sources),
                Some((_, Some(why))) => return Test::Undecided(format!("`{condition}`: {why}")),
            }
        }
        let admitted = match op {
            Op::Eq | Op::In => admitted,
            Op::Ne => self.universe.difference(&admitted),
            _ => return Test::Undecided(format!("`{condition}` cannot be evaluated")),
        };
        if admitted.is_empty() {
            Test::Fails
        } else if admitted == self.universe {
            Test::Holds
        } else {
            Test::Sources(admitted)
        }
    }

    /// The base chain's policy, for `sources` that reached its end.
    fn policy_part(&mut self, sources: AddrRanges) -> Part {
        let policy = self
            .ruleset
            .chains
            .get(self.base)
            .and_then(|c| c.base.as_ref())
            .map_or(Policy::Accept, |b| b.policy);
        let site = self.site(self.base, None, false);
        Part {
            fate: match policy {
                Policy::Accept if self.context.mode != Mode::Nat => Fate::Accepted,
                Policy::Accept | Policy::Drop => Fate::Denied,
            },
            sources,
            sites: vec![site],
        }
    }

    fn site(&mut self, chain: usize, rule: Option<usize>, restricts_source: bool) -> SiteId {
        if let Some(&id) = self.site_ids.get(&(chain, rule)) {
            // A rule reached by one path that does not test the source is
            // open to every source that takes that path.
            if let Some(site) = self.sites.get_mut(id) {
                site.restricts_source &= restricts_source;
            }
            return id;
        }
        let id = self.sites.len();
        self.sites.push(Site {
            chain,
            rule,
            restricts_source,
        });
        self.site_ids.insert((chain, rule), id);
        id
    }

    /// The sources a rule's tests admit, and the first test that cannot be
    /// decided; `None` when some test fails for the probe whatever the source.
    fn test_rule(&mut self, chain: &Chain, rule: &Rule) -> Option<(AddrRanges, Option<String>)> {
        let mut sources = self.universe.clone();
        let mut undecided = None;
        for condition in &rule.conditions {
            match self.test(chain, condition) {
                Test::Holds => {}
                Test::Fails => return None,
                Test::Sources(set) => sources = sources.intersection(&set),
                Test::Undecided(why) => {
                    undecided.get_or_insert(why);
                }
            }
        }
        Some((sources, undecided))
    }

    fn test(&mut self, chain: &Chain, condition: &Condition) -> Test {
        let (field, op, value) = match condition {
            Condition::Match { field, op, value } => (field, op, value),
            Condition::Opaque(text) => {
                // ip6tables' `-m rt` matches packets with a routing header
                // (ufw drops type 0); a connection needs none.
                if text.starts_with("-m rt ") {
                    return Test::Fails;
                }
                return match addrtype_is_local(text) {
                    Some(true) => Test::Holds,
                    Some(false) => Test::Fails,
                    None => Test::Undecided(format!("`{condition}` cannot be evaluated")),
                };
            }
        };
        let cannot = || Test::Undecided(format!("`{condition}` cannot be evaluated"));
        match field {
            Field::Payload { protocol, field } => {
                self.test_payload(chain, condition, protocol, field, *op, value)
            }
            Field::Meta(key) => match key.as_str() {
                // A reply arrives from the address behind the host, by the
                // link toward it, and leaves by the interface the client's
                // connection came in on.
                "iif" | "iifname" if self.context.mode == Mode::Reply => {
                    self.link_interface(chain, condition, *op, value)
                }
                "oif" | "oifname" if self.context.mode == Mode::Reply => {
                    self.client_interface(chain, *op, value)
                }
                "iif" | "iifname" if self.context.unnamed => {
                    with_op(*op, self.member(chain, value, &|_| Member::No))
                }
                "iif" | "iifname" => self.client_interface(chain, *op, value),
                // Where a forwarded connection leaves: the link toward its
                // translated destination.
                "oif" | "oifname" if self.context.mode == Mode::Forward => {
                    self.link_interface(chain, condition, *op, value)
                }
                "iiftype" => with_op(
                    *op,
                    self.member(chain, value, &|v| match v {
                        Value::Text(t) if t == "loopback" => Member::No,
                        _ => Member::Undecided(
                            "depends on the interface the connection arrives on".to_owned(),
                        ),
                    }),
                ),
                "l4proto" => {
                    let protocol = self.probe.protocol;
                    with_op(
                        *op,
                        self.member(chain, value, &|v| protocol_member(v, protocol)),
                    )
                }
                "nfproto" | "protocol" => {
                    let version = self.version;
                    let (v4, v6) = if key == "nfproto" {
                        (("ipv4", 2), ("ipv6", 10))
                    } else {
                        (("ip", 0x0800), ("ip6", 0x86dd))
                    };
                    let ours = match version {
                        AddrFamily::V4 => v4,
                        AddrFamily::V6 => v6,
                    };
                    with_op(
                        *op,
                        self.member(chain, value, &|v| match v {
                            Value::Text(t) if t == ours.0 => Member::Yes,
                            Value::Number(n) if *n == ours.1 => Member::Yes,
                            Value::Text(_) | Value::Number(_) => Member::No,
                            other => Member::Undecided(format!("`{other}` is not understood")),
                        }),
                    )
                }
                // The probe is a unicast connection to this host.
                "pkttype" => with_op(
                    *op,
                    self.member(chain, value, &|v| match v {
                        Value::Text(t) if t == "host" => Member::Yes,
                        Value::Number(0) => Member::Yes,
                        Value::Text(_) | Value::Number(_) => Member::No,
                        other => Member::Undecided(format!("`{other}` is not understood")),
                    }),
                ),
                _ => cannot(),
            },
            Field::Ct(key) => {
                // Conntrack runs at priority -200; before it a packet has no
                // state to test.
                let translated = matches!(self.context.mode, Mode::Forward | Mode::Reply);
                let reply = self.context.mode == Mode::Reply;
                let before_conntrack = self
                    .ruleset
                    .chains
                    .get(self.base)
                    .and_then(|c| c.base.as_ref())
                    .is_some_and(|b| b.priority < -200);
                match key.as_str() {
                    _ if before_conntrack => Test::Undecided(format!(
                        "`{condition}` is tested before connection tracking has run"
                    )),
                    // A new connection: `new` and nothing else; its
                    // replies: `established`.
                    "state" => with_op(
                        *op,
                        self.member(chain, value, &|v| match v {
                            Value::Text(t) if t == "new" => yes_if(!reply),
                            Value::Text(t) if t == "established" => yes_if(reply),
                            // iptables' `--ctstate DNAT`: a forwarded
                            // connection was translated on its way.
                            Value::Text(t) if t == "dnat" && translated => Member::Yes,
                            Value::Text(t)
                                if matches!(
                                    t.as_str(),
                                    "established"
                                        | "related"
                                        | "invalid"
                                        | "untracked"
                                        | "snat"
                                        | "dnat"
                                ) =>
                            {
                                Member::No
                            }
                            other => Member::Undecided(format!("`{other}` is not understood")),
                        }),
                    ),
                    // A connection made straight to the listener is not
                    // translated.
                    "status" => with_op(
                        *op,
                        self.member(chain, value, &|v| match v {
                            Value::Text(t) if t == "dnat" => yes_if(translated),
                            Value::Text(t) if t == "snat" => Member::No,
                            _ => Member::Undecided(format!("`{condition}` cannot be evaluated")),
                        }),
                    ),
                    // The tuple of the connection's first packet: the
                    // client's own address, and what it connected to
                    // before any DNAT.
                    "original saddr" => match self.address_set(chain, value) {
                        Ok(set) => match op {
                            Op::Eq | Op::In => Test::Sources(set),
                            Op::Ne => Test::Sources(self.universe.difference(&set)),
                            _ => cannot(),
                        },
                        Err(why) => Test::Undecided(format!("`{condition}`: {why}")),
                    },
                    "original daddr" => {
                        let dst = self.context.original.map_or(self.probe.dst, |(dst, _)| dst);
                        self.test_destination(chain, condition, dst, *op, value)
                    }
                    "original proto-dst" => {
                        let dport = self
                            .context
                            .original
                            .map_or(self.probe.dport, |(_, dport)| dport);
                        self.test_dport(chain, condition, dport, *op, value)
                    }
                    "original proto-src" => Test::Undecided(format!(
                        "`{condition}` depends on the source port the client picks"
                    )),
                    "direction" => with_op(
                        *op,
                        self.member(chain, value, &|v| match v {
                            Value::Text(t) if t == "original" => yes_if(!reply),
                            Value::Text(t) if t == "reply" => yes_if(reply),
                            _ => Member::Undecided(format!("`{condition}` cannot be evaluated")),
                        }),
                    ),
                    _ => cannot(),
                }
            }
            Field::Other(text) => match fib_lookup(text) {
                // Reverse-path filtering (`fib saddr . iif oif missing drop`,
                // firewalld's rpfilter): a source that can open a connection
                // has a route back through the interface it came in on; only
                // spoofed sources are missing one.
                Some(Fib::ReversePath) => with_op(
                    *op,
                    self.member(chain, value, &|v| match v {
                        Value::Text(t) if t == "false" => Member::No,
                        Value::Text(t) if t == "true" => Member::Yes,
                        other => Member::Undecided(format!("`{other}` is not understood")),
                    }),
                ),
                Some(Fib::DestinationType) => with_op(
                    *op,
                    self.member(chain, value, &|v| match v {
                        Value::Text(t) if t == "local" => Member::Yes,
                        Value::Text(_) => Member::No,
                        other => Member::Undecided(format!("`{other}` is not understood")),
                    }),
                ),
                None => cannot(),
            },
            Field::Concat(_) => self.test_concat(chain, condition, field, *op, value),
        }
    }

    fn test_payload(
        &mut self,
        chain: &Chain,
        condition: &Condition,
        protocol: &str,
        field: &str,
        op: Op,
        value: &Value,
    ) -> Test {
        let cannot = || Test::Undecided(format!("`{condition}` cannot be evaluated"));
        if !self.has_header(chain, protocol) {
            return Test::Fails;
        }
        if self.context.mode == Mode::Reply {
            // The reply's source is the address behind the host, its
            // destination the client (the walk's sources).
            match (protocol, field) {
                ("ip" | "ip6", "saddr") => {
                    return self.test_destination(chain, condition, self.probe.dst, op, value);
                }
                ("ip" | "ip6", "daddr") => {
                    return match self.address_set(chain, value) {
                        Ok(set) => match op {
                            Op::Eq | Op::In => Test::Sources(set),
                            Op::Ne => Test::Sources(self.universe.difference(&set)),
                            _ => cannot(),
                        },
                        Err(why) => Test::Undecided(format!("`{condition}`: {why}")),
                    };
                }
                ("tcp" | "udp" | "th", "sport") => {
                    return self.test_dport(chain, condition, self.probe.dport, op, value);
                }
                ("tcp" | "udp" | "th", "dport") => {
                    return Test::Undecided(format!(
                        "`{condition}` depends on the source port the client picks"
                    ));
                }
                _ => {}
            }
        }
        match protocol {
            "ip" | "ip6" => match field {
                "saddr" => match self.address_set(chain, value) {
                    Ok(set) => match op {
                        Op::Eq | Op::In => Test::Sources(set),
                        Op::Ne => Test::Sources(self.universe.difference(&set)),
                        _ => cannot(),
                    },
                    Err(why) => Test::Undecided(format!("`{condition}`: {why}")),
                },
                "daddr" => self.test_destination(chain, condition, self.probe.dst, op, value),
                "protocol" | "nexthdr" => {
                    let ours = self.probe.protocol;
                    with_op(op, self.member(chain, value, &|v| protocol_member(v, ours)))
                }
                _ => cannot(),
            },
            "tcp" | "udp" | "th" => match field {
                "dport" => self.test_dport(chain, condition, self.probe.dport, op, value),
                "sport" => Test::Undecided(format!(
                    "`{condition}` depends on the source port the client picks"
                )),
                _ => cannot(),
            },
            _ => cannot(),
        }
    }

    /// A test of the interface a client's packets use on this host: not
    /// loopback, and not a link toward an address some DNAT sends
    /// connections to (a container bridge); which one is otherwise unknown.
    fn client_interface(&mut self, chain: &Chain, op: Op, value: &Value) -> Test {
        let outer_only = &self.context.outer_only;
        with_op(
            op,
            self.member(chain, value, &|v| match v {
                Value::Text(name)
                    if outer_only
                        .iter()
                        .any(|inner| interface_matches(name, inner)) =>
                {
                    Member::No
                }
                other => interface_member(other),
            }),
        )
    }

    /// A test of the link toward the translated destination (the probe's,
    /// in a forward or reply walk): where the connection leaves, and where
    /// its replies come from.
    fn link_interface(
        &mut self,
        chain: &Chain,
        condition: &Condition,
        op: Op,
        value: &Value,
    ) -> Test {
        match &self.context.oif {
            Some(link) => with_op(
                op,
                self.member(chain, value, &|v| match v {
                    Value::Text(name) => yes_if(interface_matches(name, link)),
                    other => Member::Undecided(format!("`{other}` is not understood")),
                }),
            ),
            None => Test::Undecided(format!(
                "`{condition}`: no link of this namespace holds the translated destination {}",
                self.probe.dst
            )),
        }
    }

    /// A test of the destination address `dst` the probe has (`ip daddr`)
    /// or had before a DNAT (`ct original daddr`).
    fn test_destination(
        &mut self,
        chain: &Chain,
        condition: &Condition,
        dst: IpAddr,
        op: Op,
        value: &Value,
    ) -> Test {
        if self.context.unnamed {
            return match self.address_set(chain, value) {
                Ok(set) => with_op(op, yes_if(set == self.universe)),
                Err(why) => Test::Undecided(format!("`{condition}`: {why}")),
            };
        }
        if dst.is_unspecified() {
            return Test::Undecided(format!(
                "`{condition}` depends on which local address the client connects to"
            ));
        }
        let dst = address_number(dst);
        match self.address_set(chain, value) {
            Ok(set) => with_op(op, yes_if(set.contains(dst))),
            Err(why) => Test::Undecided(format!("`{condition}`: {why}")),
        }
    }

    /// A test of the destination port `dport` the probe has (`tcp dport`)
    /// or had before a DNAT (`ct original proto-dst`).
    fn test_dport(
        &mut self,
        chain: &Chain,
        condition: &Condition,
        dport: u16,
        op: Op,
        value: &Value,
    ) -> Test {
        let cannot = || Test::Undecided(format!("`{condition}` cannot be evaluated"));
        if self.context.unnamed {
            return match op {
                Op::Eq | Op::Ne | Op::In => {
                    with_op(op, self.member(chain, value, &every_port_member))
                }
                _ => Test::Undecided(format!("`{condition}` depends on the port a listener uses")),
            };
        }
        let dport = u64::from(dport);
        match op {
            Op::Lt | Op::Gt | Op::Le | Op::Ge => match value {
                Value::Number(n) => {
                    let holds = match op {
                        Op::Lt => dport < *n,
                        Op::Gt => dport > *n,
                        Op::Le => dport <= *n,
                        _ => dport >= *n,
                    };
                    if holds { Test::Holds } else { Test::Fails }
                }
                _ => cannot(),
            },
            _ => with_op(op, self.member(chain, value, &|v| port_member(v, dport))),
        }
    }

    /// Whether the probe has the header a payload test reads: a header test
    /// implies its protocol, and nft adds that dependency itself, so a test
    /// of another family's or protocol's header never holds, whatever its
    /// operator. `true` for headers perimeter does not know.
    fn has_header(&self, chain: &Chain, protocol: &str) -> bool {
        match protocol {
            "ip" | "ip6" => {
                // iptables-save's model says `ip` for both families; its
                // chains hold one family each.
                let family_v4 = if chain.backend != Backend::Nftables {
                    chain.family == Family::Ip
                } else {
                    protocol == "ip"
                };
                family_v4 == (self.version == AddrFamily::V4)
            }
            "tcp" | "udp" => protocol == self.probe.protocol.as_str(),
            // Headers of other transport protocols, which the probe's is not.
            "icmp" | "icmpv6" | "sctp" | "dccp" | "udplite" | "esp" | "ah" | "comp" | "igmp"
            | "gre" => false,
            _ => true,
        }
    }

    /// Whether a concrete value is among `value`'s, looking into anonymous
    /// and named sets.
    fn member(&self, chain: &Chain, value: &Value, one: &dyn Fn(&Value) -> Member) -> Member {
        match value {
            Value::Set(items) => any_member(items.iter().map(|item| self.member(chain, item, one))),
            Value::SetRef(name) => match self.named_set(chain, name) {
                Some(elements) => {
                    any_member(elements.iter().map(|item| self.member(chain, item, one)))
                }
                None => Member::Undecided(format!("set @{name} was not listed")),
            },
            other => one(other),
        }
    }

    fn named_set(&self, chain: &Chain, name: &str) -> Option<&'r [Value]> {
        self.ruleset
            .sets
            .iter()
            .find(|s| s.family == chain.family && s.table == chain.table && s.name == name)
            .map(|s| s.elements.as_slice())
    }

    /// The addresses a value names, of the probe's family (addresses of the
    /// other family never match and are left out).
    fn address_set(&mut self, chain: &Chain, value: &Value) -> Result<AddrRanges, String> {
        match value {
            Value::Prefix { addr, len } => self.prefix_set(*addr, *len),
            Value::Text(text) => {
                if let Ok(net) = text.parse::<IpNet>() {
                    return self.prefix_set(net.addr(), net.prefix_len());
                }
                match text.parse::<IpAddr>() {
                    Ok(addr) => Ok(self.range_set(addr, addr)),
                    Err(_) => Err(format!("`{text}` is not an address")),
                }
            }
            Value::Range(low, high) => {
                let parse = |v: &Value| match v {
                    Value::Text(t) => t.parse::<IpAddr>().ok(),
                    _ => None,
                };
                match (parse(low), parse(high)) {
                    (Some(low), Some(high)) => Ok(self.range_set(low, high)),
                    _ => Err(format!("`{value}` is not an address range")),
                }
            }
            Value::Set(items) => {
                let mut set = AddrRanges::empty();
                for item in items {
                    set.insert(&self.address_set(chain, item)?);
                }
                Ok(set)
            }
            Value::SetRef(name) => {
                let key = (chain.family, chain.table.clone(), name.clone());
                if let Some(cached) = self.address_sets.get(&key) {
                    return cached.clone();
                }
                let result = match self.named_set(chain, name) {
                    Some(elements) => {
                        let mut set = AddrRanges::empty();
                        let mut failed = None;
                        for element in elements {
                            match self.address_set(chain, element) {
                                Ok(part) => set.insert(&part),
                                Err(why) => {
                                    failed = Some(format!("set @{name}: {why}"));
                                    break;
                                }
                            }
                        }
                        failed.map_or(Ok(set), Err)
                    }
                    None => Err(format!("set @{name} was not listed")),
                };
                self.address_sets.insert(key, result.clone());
                result
            }
            Value::Number(_) | Value::Concat(_) | Value::Other(_) => {
                Err(format!("`{value}` is not an address"))
            }
        }
    }

    fn prefix_set(&self, addr: IpAddr, len: u8) -> Result<AddrRanges, String> {
        let net = IpNet::new(addr, len).map_err(|_| format!("`{addr}/{len}` is not a prefix"))?;
        Ok(self.range_set(net.network(), net.broadcast()))
    }

    fn range_set(&self, low: IpAddr, high: IpAddr) -> AddrRanges {
        let ours = |addr: &IpAddr| {
            matches!(
                (addr, self.version),
                (IpAddr::V4(_), AddrFamily::V4) | (IpAddr::V6(_), AddrFamily::V6)
            )
        };
        if ours(&low) && ours(&high) {
            AddrRanges::range(address_number(low), address_number(high))
        } else {
            AddrRanges::empty()
        }
    }

    // -- Rendering --------------------------------------------------------

    fn describe_chain(&self, idx: usize) -> String {
        self.ruleset
            .chains
            .get(idx)
            .map_or_else(|| "a chain".to_owned(), Chain::describe)
    }

    fn describe_site(&self, id: SiteId, base: usize) -> String {
        let Some(site) = self.sites.get(id) else {
            return "a rule".to_owned();
        };
        let chain = self.ruleset.chains.get(site.chain);
        match (chain, site.rule) {
            (Some(chain), Some(rule_idx)) => match chain.rules.get(rule_idx) {
                Some(rule) if site.chain == base => rule_ref(chain, rule),
                Some(rule) => format!("chain {}: {}", chain.name, rule_ref(chain, rule)),
                None => "a rule".to_owned(),
            },
            (Some(chain), None) => match chain.base.as_ref().map(|b| b.policy) {
                Some(Policy::Drop) => "policy drop".to_owned(),
                _ => "policy accept".to_owned(),
            },
            (None, _) => "a rule".to_owned(),
        }
    }

    /// One evidence line for one part of a base chain's answer.
    fn describe_part(&self, base: usize, part: &Part) -> String {
        let chain = self.ruleset.chains.get(base);
        let head = match chain.and_then(|c| c.base.as_ref().map(|b| (c, b))) {
            Some((chain, b)) => format!("{} (priority {})", chain.describe(), b.priority),
            None => self.describe_chain(base),
        };
        // Evidence is read by people: long lists are cut.
        let sources = part.sources.describe(&self.universe, self.version, 6);
        match &part.fate {
            Fate::Unknown(reason) | Fate::GaveUp(reason) => {
                format!("{head}: {sources} unknown: {reason}")
            }
            fate => {
                let verb = if *fate == Fate::Accepted {
                    "accepted"
                } else {
                    "denied"
                };
                let by: Vec<String> = part
                    .sites
                    .iter()
                    .map(|&s| self.describe_site(s, base))
                    .collect();
                format!("{head}: {sources} {verb} by {}", by.join(" or "))
            }
        }
    }

    fn accepting_rule(&self, id: SiteId, sources: &AddrRanges) -> Option<AcceptingRule> {
        let site = self.sites.get(id)?;
        let chain = self.ruleset.chains.get(site.chain)?;
        let (handle, text) = match site.rule {
            Some(rule_idx) => {
                let rule = chain.rules.get(rule_idx)?;
                (rule.handle, rule.text.clone())
            }
            None => (None, "policy accept".to_owned()),
        };
        let dnat = site
            .rule
            .and_then(|rule_idx| chain.rules.get(rule_idx))
            .and_then(|rule| match &rule.verdict {
                Some(Verdict::Dnat(target)) => Some(target.clone()),
                _ => None,
            });
        Some(AcceptingRule {
            chain: chain.describe(),
            handle,
            text,
            by_policy: site.rule.is_none(),
            restricts_source: site.rule.is_some() && site.restricts_source,
            sources: sources.prefixes(self.version),
            dnat,
        })
    }
}

/// Whether `-m addrtype --dst-type TYPES` (ufw's `ufw-not-local` chain)
/// holds for a connection to a local listener: its destination is of type
/// LOCAL (and UNICAST), never BROADCAST or MULTICAST. `None` for any other
/// opaque test, or addrtype options beyond the destination type.
fn addrtype_is_local(text: &str) -> Option<bool> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let (negated, types) = match words.as_slice() {
        ["-m", "addrtype", "--dst-type", types] => (false, types),
        ["-m", "addrtype", "!", "--dst-type", types] => (true, types),
        _ => return None,
    };
    let local = types
        .split(',')
        .any(|t| t.eq_ignore_ascii_case("LOCAL") || t.eq_ignore_ascii_case("UNICAST"));
    Some(local != negated)
}

/// The two `fib` lookups the walk decides for an inbound connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fib {
    /// `fib saddr [. mark] . iif oif` (or `oifname`): the interface the route
    /// back to the source leaves by, compared with `missing`.
    ReversePath,
    /// `fib daddr [. iif] type`: the route type of the destination address,
    /// which for a connection to a local listener is `local`.
    DestinationType,
}

/// Which `fib` lookup an expression perimeter keeps as JSON is, if either.
fn fib_lookup(text: &str) -> Option<Fib> {
    let value = serde_json::from_str::<serde_json::Value>(text).ok()?;
    let fib = value.get("fib")?;
    let flags: Vec<&str> = fib
        .get("flags")
        .and_then(serde_json::Value::as_array)
        .map(|flags| flags.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default();
    match fib.get("result").and_then(serde_json::Value::as_str)? {
        "oif" | "oifname"
            if flags.contains(&"saddr")
                && flags.contains(&"iif")
                && flags.iter().all(|f| matches!(*f, "saddr" | "iif" | "mark")) =>
        {
            Some(Fib::ReversePath)
        }
        "type"
            if flags.contains(&"daddr") && flags.iter().all(|f| matches!(*f, "daddr" | "iif")) =>
        {
            Some(Fib::DestinationType)
        }
        _ => None,
    }
}

/// `rule handle 7 `tcp dport 22 accept`` for nft, `rule 3 `-A INPUT ...`` for
/// iptables.
fn rule_ref(chain: &Chain, rule: &Rule) -> String {
    match rule.handle {
        Some(handle) if chain.backend == Backend::Nftables => {
            format!("rule handle {handle} `{}`", rule.text)
        }
        Some(position) => format!("rule {position} `{}`", rule.text),
        None => format!("rule `{}`", rule.text),
    }
}

fn with_op(op: Op, member: Member) -> Test {
    match (op, member) {
        (Op::Eq | Op::In, Member::Yes) | (Op::Ne, Member::No) => Test::Holds,
        (Op::Eq | Op::In, Member::No) | (Op::Ne, Member::Yes) => Test::Fails,
        (Op::Eq | Op::In | Op::Ne, Member::Undecided(why)) => Test::Undecided(why),
        (_, _) => Test::Undecided("the comparison is not understood".to_owned()),
    }
}

fn any_member(members: impl Iterator<Item = Member>) -> Member {
    let mut undecided = None;
    for member in members {
        match member {
            Member::Yes => return Member::Yes,
            Member::No => {}
            Member::Undecided(why) => {
                undecided.get_or_insert(why);
            }
        }
    }
    undecided.map_or(Member::No, Member::Undecided)
}

fn interface_member(value: &Value) -> Member {
    match value {
        Value::Text(name) if name == "lo" => Member::No,
        _ => Member::Undecided(format!(
            "interface {value}: depends on the interface the connection arrives on"
        )),
    }
}

/// Whether interface `name` is matched by `pattern`: the name itself, or
/// a prefix ending in iptables' `+` or nft's `*`.
fn interface_matches(pattern: &str, name: &str) -> bool {
    match pattern
        .strip_suffix('+')
        .or_else(|| pattern.strip_suffix('*'))
    {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

fn protocol_member(value: &Value, ours: Protocol) -> Member {
    let number = match ours {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
    };
    match value {
        Value::Number(n) => yes_if(*n == number),
        Value::Text(text) => match text.parse::<u64>() {
            Ok(n) => yes_if(n == number),
            // Any other protocol name names another protocol.
            Err(_) => yes_if(text.eq_ignore_ascii_case(ours.as_str())),
        },
        other => Member::Undecided(format!("protocol `{other}` is not understood")),
    }
}

fn port_member(value: &Value, port: u64) -> Member {
    let number = |v: &Value| match v {
        Value::Number(n) => Some(*n),
        Value::Text(text) => text.parse::<u64>().ok(),
        _ => None,
    };
    match value {
        Value::Range(low, high) => match (number(low), number(high)) {
            (Some(low), Some(high)) => yes_if(low <= port && port <= high),
            _ => Member::Undecided(format!("port range `{value}` is not understood")),
        },
        other => match number(other) {
            Some(n) => yes_if(n == port),
            None => Member::Undecided(format!("port `{other}` is not understood")),
        },
    }
}

/// Whether a port value admits every port, which is how a port no rule names
/// can be among its ports.
fn every_port_member(value: &Value) -> Member {
    let number = |v: &Value| match v {
        Value::Number(n) => Some(*n),
        Value::Text(text) => text.parse::<u64>().ok(),
        _ => None,
    };
    match value {
        Value::Range(low, high) => match (number(low), number(high)) {
            (Some(low), Some(high)) => yes_if(low <= 1 && high >= 65535),
            _ => Member::Undecided(format!("port range `{value}` is not understood")),
        },
        other => match number(other) {
            Some(_) => Member::No,
            None => Member::Undecided(format!("port `{other}` is not understood")),
        },
    }
}

fn yes_if(yes: bool) -> Member {
    if yes { Member::Yes } else { Member::No }
}

/// Where a fork's test holds, its sources' fate is `if_holds`; where it does
/// not, what the rest of the walk (`parts`) found. Where the two agree the
/// fate is known; where they differ it is unknown, for `reason`.
fn merge_fork(
    parts: Vec<Part>,
    region: &AddrRanges,
    if_holds: Vec<Part>,
    reason: &str,
) -> Vec<Part> {
    let mut merged = Vec::new();
    let mut inside = Vec::new();
    for part in parts {
        let outside = part.sources.difference(region);
        let within = part.sources.intersection(region);
        if !within.is_empty() {
            inside.push(Part {
                fate: part.fate.clone(),
                sources: within,
                sites: part.sites.clone(),
            });
        }
        if !outside.is_empty() {
            merged.push(Part {
                sources: outside,
                ..part
            });
        }
    }
    for held in &if_holds {
        for other in &inside {
            let both = held.sources.intersection(&other.sources);
            if both.is_empty() {
                continue;
            }
            let gave_up = [&held.fate, &other.fate]
                .into_iter()
                .find(|f| matches!(f, Fate::GaveUp(_)));
            if let Some(fate) = gave_up {
                merged.push(Part {
                    fate: fate.clone(),
                    sources: both,
                    sites: Vec::new(),
                });
            } else if held.fate == other.fate {
                // The same fate either way. The rules named are those that
                // decide when the undecidable test does not hold: they decide
                // whatever the test says.
                merged.push(Part {
                    fate: other.fate.clone(),
                    sources: both,
                    sites: other.sites.clone(),
                });
            } else {
                merged.push(Part {
                    fate: Fate::Unknown(reason.to_owned()),
                    sources: both,
                    sites: Vec::new(),
                });
            }
        }
    }
    merged
}

/// Joins parts with the same fate and sites.
fn normalize(parts: Vec<Part>) -> Vec<Part> {
    let mut joined: Vec<Part> = Vec::new();
    let mut index: HashMap<(Fate, Vec<SiteId>), usize> = HashMap::new();
    for mut part in parts {
        part.sites.sort_unstable();
        part.sites.dedup();
        let key = (part.fate.clone(), part.sites.clone());
        match index.get(&key).and_then(|&idx| joined.get_mut(idx)) {
            Some(existing) => existing.sources.insert(&part.sources),
            None => {
                index.insert(key, joined.len());
                joined.push(part);
            }
        }
    }
    joined
}
