//! The firewall model: chains, rules, conditions, verdicts, named sets and
//! maps, read from any backend (nftables, iptables-legacy, iptables-nft)
//! into one intermediate representation before anything is decided.

use std::net::IpAddr;

pub use perimeter_model::addrset::AddrFamily;

/// Where a chain was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// `nft list ruleset`: every nf_tables table, iptables-nft's included.
    Nftables,
    /// `iptables-legacy-save` / `ip6tables-legacy-save`.
    IptablesLegacy,
    /// `iptables-nft-save`: the tables whose nft listing holds xt
    /// expressions, or every table when `nft` itself is missing.
    IptablesNft,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Nftables => "nftables",
            Backend::IptablesLegacy => "iptables-legacy",
            Backend::IptablesNft => "iptables-nft",
        }
    }
}

/// A table's address family, which decides which packets its chains see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Ip,
    Ip6,
    Inet,
    Arp,
    Bridge,
    Netdev,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Inet => "inet",
            Family::Arp => "arp",
            Family::Bridge => "bridge",
            Family::Netdev => "netdev",
        }
    }

    /// Whether an input chain of this family sees packets of `version`.
    /// Netdev, bridge and arp chains hook elsewhere and are not input filters.
    pub fn sees(self, version: AddrFamily) -> bool {
        matches!(
            (self, version),
            (Family::Inet, _) | (Family::Ip, AddrFamily::V4) | (Family::Ip6, AddrFamily::V6)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
    Ingress,
    Egress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    Accept,
    Drop,
}

/// What makes a chain a base chain: the hook it is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    pub hook: Hook,
    /// `filter`, `nat` or `route`. Only filter chains decide on input traffic.
    pub chain_type: String,
    pub priority: i32,
    pub policy: Policy,
}

/// A chain and its rules, in evaluation order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub backend: Backend,
    pub family: Family,
    pub table: String,
    pub name: String,
    /// `None` for a regular chain, reached only by jump or goto.
    pub base: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

impl Chain {
    /// `nftables: inet filter input`, for evidence.
    pub fn describe(&self) -> String {
        format!(
            "{}: {} {} {}",
            self.backend.as_str(),
            self.family.as_str(),
            self.table,
            self.name
        )
    }
}

/// One rule: every condition must hold for the verdict to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// nft's rule handle; for iptables, the rule's 1-based position.
    pub handle: Option<u64>,
    pub conditions: Vec<Condition>,
    /// `None` when the rule only counts or logs: evaluation continues.
    pub verdict: Option<Verdict>,
    pub comment: Option<String>,
    /// The rule as the tool showed it (iptables-save) or as rendered from the
    /// model (nft), for evidence.
    pub text: String,
}

/// A test a packet must pass for a rule to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Match {
        field: Field,
        op: Op,
        value: Value,
    },
    /// A test perimeter does not model (rate limits, xt matches, osf, ...):
    /// it may or may not hold for a given packet.
    Opaque(String),
}

/// What a condition looks at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    /// A packet header field: `ip saddr`, `ip6 daddr`, `tcp dport`, `th dport`.
    Payload {
        protocol: String,
        field: String,
    },
    /// Packet metadata: `iif`, `iifname`, `l4proto`, `nfproto`, `pkttype`.
    Meta(String),
    /// Conntrack: `state`, `status`.
    Ct(String),
    /// A concatenation (`ip saddr . tcp dport`), compared with concatenated
    /// values ([`Value::Concat`]) part by part.
    Concat(Vec<Field>),
    Other(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    /// Flag or set membership (`ct state established,related`).
    In,
    /// Bitwise and friends, which nft uses inside larger expressions.
    Other,
}

/// What a condition compares against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Number(u64),
    /// Names and symbols: `lo`, `tcp`, `established`, and addresses, which are
    /// kept as text until a reachability check needs them parsed.
    Text(String),
    Prefix {
        addr: IpAddr,
        len: u8,
    },
    Range(Box<Value>, Box<Value>),
    /// An anonymous set (`{ 22, 443 }`).
    Set(Vec<Value>),
    /// A named set (`@admin_v4`), looked up in [`Ruleset::sets`].
    SetRef(String),
    /// A concatenated value (`192.0.2.1 . 22`), one part per part of a
    /// [`Field::Concat`].
    Concat(Vec<Value>),
    Other(String),
}

/// What a rule does when it applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Reject,
    Return,
    Continue,
    Jump(String),
    Goto(String),
    /// A verdict map (`tcp dport vmap { 22 : accept, 80 : jump web }`): the
    /// verdict of the element whose key matches the packet's. A packet whose
    /// key is in no element gets no verdict from the rule and goes on to the
    /// next one.
    Map(VerdictMap),
    /// Destination NAT (`-j DNAT --to-destination 198.18.90.2:6379`, nft
    /// `dnat to 198.18.90.2:6379`): the packet goes on with its destination
    /// rewritten, and is then routed by the new one (forwarded to a
    /// container, say, instead of delivered to a local listener).
    Dnat(NatTarget),
    /// A terminal action that is not a plain verdict (queue, nat, TARPIT):
    /// the packet's fate is decided elsewhere.
    Other(String),
}

/// Where a DNAT sends a packet. `None` parts could not be read as one
/// address or one port (a range, a map, an expression): the walk does not
/// follow such a translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatTarget {
    pub addr: Option<IpAddr>,
    /// `None` also when no port is given: the destination port is kept.
    pub port: Option<u16>,
    /// Whether a port (or port range) was given at all.
    pub port_given: bool,
    /// The target as written (`198.18.90.2:6379`), for evidence.
    pub text: String,
}

impl NatTarget {
    /// `198.18.90.2:6379`, `[2001:db8::2]:80`, `198.18.90.2` (the port
    /// kept): iptables' `--to-destination` syntax. A range or anything else
    /// keeps its text with no address or port read.
    pub fn parse(text: &str) -> NatTarget {
        let unread = NatTarget {
            addr: None,
            port: None,
            port_given: text.contains(':') && !text.starts_with('[') || text.contains("]:"),
            text: text.to_owned(),
        };
        let (addr, port) = if let Some(rest) = text.strip_prefix('[') {
            match rest.split_once(']') {
                Some((addr, port)) => (addr, port.strip_prefix(':')),
                None => return unread,
            }
        } else if text.matches(':').count() == 1 {
            match text.split_once(':') {
                Some((addr, port)) => (addr, Some(port)),
                None => (text, None),
            }
        } else {
            (text, None)
        };
        let Ok(addr) = addr.parse::<IpAddr>() else {
            return unread;
        };
        match port {
            None => NatTarget {
                addr: Some(addr),
                port: None,
                port_given: false,
                text: text.to_owned(),
            },
            Some(port) => NatTarget {
                addr: Some(addr),
                port: port.parse().ok(),
                port_given: true,
                text: text.to_owned(),
            },
        }
    }

    /// The port a packet to `dport` leaves with, when it can be told.
    pub fn port_for(&self, dport: u16) -> Option<u16> {
        if self.port_given {
            self.port
        } else {
            Some(dport)
        }
    }
}

/// The lookup of an nft `vmap` statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictMap {
    /// What is looked up: `ct state`, `tcp dport`, `ip saddr`, `meta iifname`,
    /// or a concatenation of fields.
    pub key: Field,
    pub elements: MapElements,
}

/// Where a verdict map's elements are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapElements {
    /// An anonymous map written in the rule.
    Inline(Vec<MapElement>),
    /// A named map (`@blocklist`), looked up in [`Ruleset::maps`].
    Named(String),
}

/// One `key : verdict` element of a verdict map. The key is a single value,
/// a prefix, a range or a concatenation of those; nft refuses overlapping
/// keys, so at most one element matches a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapElement {
    pub key: Value,
    /// `accept`, `drop`, `continue`, `return`, `jump` or `goto`: the verdicts
    /// nft allows in a map.
    pub verdict: Verdict,
}

/// A named nft set and its elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedSet {
    pub family: Family,
    pub table: String,
    pub name: String,
    pub elements: Vec<Value>,
}

/// A named nft verdict map (`map NAME { type ... : verdict; ... }`) and its
/// elements. Maps to other data (addresses for
/// nat, marks) decide no verdict and are not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedMap {
    pub family: Family,
    pub table: String,
    pub name: String,
    pub elements: Vec<MapElement>,
}

/// Every chain read from a namespace, from any backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub chains: Vec<Chain>,
    pub sets: Vec<NamedSet>,
    pub maps: Vec<NamedMap>,
}

impl Ruleset {
    /// The chain a jump or goto in `from` leads to: same backend, family and
    /// table.
    pub fn target_of(&self, from: &Chain, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| {
            c.backend == from.backend
                && c.family == from.family
                && c.table == from.table
                && c.name == name
        })
    }

    /// The elements of a verdict map used in `from`: inline, or the named
    /// map of the same family and table. `None` for a named map that was not
    /// listed.
    pub fn map_elements<'a>(
        &'a self,
        from: &Chain,
        elements: &'a MapElements,
    ) -> Option<&'a [MapElement]> {
        match elements {
            MapElements::Inline(elements) => Some(elements),
            MapElements::Named(name) => self
                .maps
                .iter()
                .find(|m| m.family == from.family && m.table == from.table && m.name == *name)
                .map(|m| m.elements.as_slice()),
        }
    }

    pub fn extend(&mut self, other: Ruleset) {
        self.chains.extend(other.chains);
        self.sets.extend(other.sets);
        self.maps.extend(other.maps);
    }
}

/// Why a ruleset could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("nft json is not valid: {0}")]
    Json(#[from] serde_json::Error),
    #[error("nft json has no `nftables` array")]
    NotNftables,
    #[error("{source_name} line {line}: {message}")]
    IptablesSave {
        source_name: String,
        line: usize,
        message: String,
    },
}
