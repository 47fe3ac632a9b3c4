//! Whether a network namespace denies inbound traffic by default, read from
//! its nftables ruleset and its iptables tables.
//!
//! The rulesets are turned into one small model of chains and rules
//! ([`Ruleset`]) before anything is decided, so that the same model can later
//! answer per-listener reachability (addresses, ports, sets, jumps, conntrack
//! state, loopback) without re-reading tool output. Only the default-deny
//! question is answered here ([`default_deny`]).
//!
//! Sources, and why each is read:
//! - `nft -j list ruleset` sees every nf_tables table, including those made by
//!   iptables-nft, so `iptables-nft-save` is only read when `nft` is missing
//!   (reading both would count the same chains twice);
//! - `iptables-legacy-save` and `ip6tables-legacy-save` see the legacy x_tables
//!   hooks, which nft does not show. A packet passes through both, so either
//!   can deny it.
//!
//! nft's JSON is read with the `nftables` crate's schema types, one ruleset
//! object and, when a rule does not fit the schema, one statement at a time:
//! a statement the crate does not know (new in a later nft) becomes an opaque
//! condition of its rule instead of failing the whole ruleset. Named sets and
//! maps are read one element at a time for the same reason (the schema knows
//! neither `ct_state` nor `verdict` as data types).
//!
//! Verdict maps (`ct state vmap { established : accept, new : jump allow }`,
//! `ip saddr vmap @blocklist`) are verdicts in the model ([`Verdict::Map`]):
//! the key, and the elements inline or by the name of a [`NamedMap`].

use std::borrow::Cow;
use std::fmt;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nftables::expr::{Expression, NamedExpression, Payload, SetItem};
use nftables::schema::{NfListObject, NfObject};
use nftables::stmt::{Match as NftMatch, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use perimeter_model::{FirewallVerdict, Problem};
use serde::Deserialize;

/// Where a chain was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// `nft list ruleset`: every nf_tables table, iptables-nft's included.
    Nftables,
    /// `iptables-legacy-save` / `ip6tables-legacy-save`.
    IptablesLegacy,
    /// `iptables-nft-save`, read only when `nft` itself is missing.
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
    pub fn sees(self, version: IpVersion) -> bool {
        matches!(
            (self, version),
            (Family::Inet, _) | (Family::Ip, IpVersion::V4) | (Family::Ip6, IpVersion::V6)
        )
    }
}

/// IPv4 or IPv6: default deny must hold for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpVersion {
    V4,
    V6,
}

impl IpVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            IpVersion::V4 => "IPv4",
            IpVersion::V6 => "IPv6",
        }
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
    /// A terminal action that is not a plain verdict (queue, nat, TARPIT):
    /// the packet's fate is decided elsewhere.
    Other(String),
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

// ---------------------------------------------------------------------------
// nft JSON → model

/// The model of `nft -j list ruleset` output.
pub fn parse_nft_json(text: &str) -> Result<Ruleset, FirewallError> {
    let mut builder = NftBuilder::default();
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let found = serde::Deserializer::deserialize_map(
        &mut deserializer,
        DocumentVisitor {
            builder: &mut builder,
        },
    )
    .map_err(|err| {
        if err.is_data() {
            FirewallError::NotNftables
        } else {
            FirewallError::Json(err)
        }
    })?;
    deserializer.end()?;
    if !found {
        return Err(FirewallError::NotNftables);
    }
    Ok(builder.finish())
}

/// Collects chains, sets and rules from nft's objects as they stream past.
#[derive(Default)]
struct NftBuilder {
    ruleset: Ruleset,
    rules: Vec<(Family, String, String, Rule)>,
}

impl NftBuilder {
    fn add(&mut self, value: &serde_json::Value) {
        // Sets and maps are read element by element: the schema knows only
        // some of nft's data types (not `ct_state` or `verdict`), and one
        // element it cannot read must not lose the others.
        if let Some(set) = value.get("set") {
            self.ruleset.sets.extend(named_set_from_value(set));
            return;
        }
        if let Some(map) = value.get("map") {
            self.ruleset.maps.extend(named_map_from_value(map));
            return;
        }
        match NfObject::deserialize(value) {
            Ok(NfObject::ListObject(object)) => match object {
                NfListObject::Chain(chain) => self.ruleset.chains.push(chain_from_nft(&chain)),
                NfListObject::Rule(rule) => self.rules.push((
                    family_from_nft(rule.family),
                    rule.table.clone().into_owned(),
                    rule.chain.clone().into_owned(),
                    rule_from_statements(
                        rule.handle.map(u64::from),
                        &rule.expr,
                        rule.comment.as_deref(),
                    ),
                )),
                _ => {}
            },
            Ok(NfObject::CmdObject(_)) => {}
            // An object the schema does not know. Rules are what matter; read
            // one statement at a time so the rest of the rule survives.
            Err(_) => {
                if let Some(rule) = value.get("rule").and_then(rule_from_value) {
                    self.rules.push(rule);
                }
            }
        }
    }

    fn finish(mut self) -> Ruleset {
        // Rules come after their chains in nft's output, but attach them by
        // name rather than by position.
        for (family, table, chain_name, rule) in self.rules {
            if let Some(chain) = self.ruleset.chains.iter_mut().find(|c| {
                c.backend == Backend::Nftables
                    && c.family == family
                    && c.table == table
                    && c.name == chain_name
            }) {
                chain.rules.push(rule);
            }
        }
        self.ruleset
    }
}

/// Walks the top-level object, streaming the `nftables` array so that only one
/// ruleset object is held as a JSON tree at a time.
struct DocumentVisitor<'b> {
    builder: &'b mut NftBuilder,
}

impl<'de> serde::de::Visitor<'de> for DocumentVisitor<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with an `nftables` array")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut found = false;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "nftables" {
                map.next_value_seed(ObjectsSeed {
                    builder: &mut *self.builder,
                })?;
                found = true;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

struct ObjectsSeed<'b> {
    builder: &'b mut NftBuilder,
}

impl<'de> serde::de::DeserializeSeed<'de> for ObjectsSeed<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ObjectsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of ruleset objects")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(value) = seq.next_element::<serde_json::Value>()? {
            self.builder.add(&value);
        }
        Ok(())
    }
}

/// Where a named set or map is: family, table and name.
fn set_place(object: &serde_json::Value) -> Option<(Family, String, String)> {
    let family = NfFamily::deserialize(object.get("family")?).ok()?;
    let table = object.get("table")?.as_str()?.to_owned();
    let name = object.get("name")?.as_str()?.to_owned();
    Some((family_from_nft(family), table, name))
}

/// The `elem` array of a set or map object; nft prints one element alone
/// without the array.
fn set_elements(object: &serde_json::Value) -> &[serde_json::Value] {
    match object.get("elem") {
        Some(serde_json::Value::Array(items)) => items,
        Some(one) => std::slice::from_ref(one),
        None => &[],
    }
}

/// An element of a set or map read on its own: one the schema cannot read is
/// kept as JSON, which no test understands, rather than dropped.
fn element_from_json(value: &serde_json::Value) -> Value {
    match Expression::deserialize(value) {
        Ok(expr) => element_value(&expr),
        Err(_) => Value::Other(short_json(value)),
    }
}

/// An element of a set or map. A string that starts with `@` is a name (an
/// interface may be called `@a`), never a reference to a set: a set holding
/// a reference to itself would send a lookup round in circles.
fn element_value(expr: &Expression<'_>) -> Value {
    match value_from_expr(expr) {
        Value::SetRef(name) => Value::Text(format!("@{name}")),
        other => other,
    }
}

fn named_set_from_value(set: &serde_json::Value) -> Option<NamedSet> {
    let (family, table, name) = set_place(set)?;
    Some(NamedSet {
        family,
        table,
        name,
        elements: set_elements(set).iter().map(element_from_json).collect(),
    })
}

/// A named map, when it maps to verdicts.
fn named_map_from_value(map: &serde_json::Value) -> Option<NamedMap> {
    if map.get("map").and_then(serde_json::Value::as_str) != Some("verdict") {
        return None;
    }
    let (family, table, name) = set_place(map)?;
    Some(NamedMap {
        family,
        table,
        name,
        elements: set_elements(map)
            .iter()
            .map(map_element_from_json)
            .collect(),
    })
}

/// A `[key, verdict]` pair of a map, read on its own.
fn map_element_from_json(pair: &serde_json::Value) -> MapElement {
    match pair.as_array().map(Vec::as_slice) {
        Some([key, verdict]) => MapElement {
            key: element_from_json(key),
            verdict: match Expression::deserialize(verdict) {
                Ok(expr) => verdict_from_expr(&expr),
                Err(_) => Verdict::Other(short_json(verdict)),
            },
        },
        _ => not_an_element(pair),
    }
}

/// A verdict as nft writes it in a map.
fn verdict_from_expr(expr: &Expression<'_>) -> Verdict {
    use nftables::expr::Verdict as NftVerdict;
    match expr {
        Expression::Verdict(verdict) => match verdict {
            NftVerdict::Accept => Verdict::Accept,
            NftVerdict::Drop => Verdict::Drop,
            NftVerdict::Continue => Verdict::Continue,
            NftVerdict::Return => Verdict::Return,
            NftVerdict::Jump(target) => Verdict::Jump(target.target.clone().into_owned()),
            NftVerdict::Goto(target) => Verdict::Goto(target.target.clone().into_owned()),
        },
        other => Verdict::Other(short_json(other)),
    }
}

/// A `vmap` statement's model, from the schema's reading of it. `None` when
/// the data is neither a named map nor an anonymous one.
fn verdict_map_from_statement(vmap: &nftables::stmt::VerdictMap<'_>) -> Option<VerdictMap> {
    let elements = match &vmap.data {
        Expression::String(text) => MapElements::Named(text.strip_prefix('@')?.to_owned()),
        Expression::Named(NamedExpression::Set(items)) => MapElements::Inline(
            items
                .iter()
                .map(|item| match item {
                    // The schema reads `[key, verdict]` as a list when it can.
                    SetItem::Element(Expression::List(pair)) => match pair.as_slice() {
                        [key, verdict] => MapElement {
                            key: element_value(key),
                            verdict: verdict_from_expr(verdict),
                        },
                        _ => not_an_element(&pair[..]),
                    },
                    SetItem::Mapping(key, verdict) => MapElement {
                        key: element_value(key),
                        verdict: verdict_from_expr(verdict),
                    },
                    SetItem::MappingStatement(key, statement) => {
                        let mut parts = RuleParts::default();
                        add_statement(statement, &mut parts);
                        MapElement {
                            key: element_value(key),
                            verdict: match parts.verdict {
                                Some(verdict) if parts.conditions.is_empty() => verdict,
                                _ => Verdict::Other(
                                    serde_name(statement).unwrap_or_else(|| "statement".to_owned()),
                                ),
                            },
                        }
                    }
                    SetItem::Element(other) => not_an_element(other),
                })
                .collect(),
        ),
        _ => return None,
    };
    Some(VerdictMap {
        key: field_from_expr(&vmap.key),
        elements,
    })
}

/// A map element that is not a key and a verdict: kept, so that the lookup
/// is not taken to miss, with a key no test understands.
fn not_an_element(item: &(impl serde::Serialize + ?Sized)) -> MapElement {
    MapElement {
        key: Value::Other(short_json(&item)),
        verdict: Verdict::Other("an element that is not a key and a verdict".to_owned()),
    }
}

/// A `vmap` statement's model, from the statement's own JSON (`{"key": ...,
/// "data": "@name" or {"set": [[key, verdict], ...]}}`). Read by hand so that
/// one element the schema cannot read does not lose the map. `None` when the
/// data is neither a named map nor an anonymous one.
fn verdict_map_from_json(vmap: &serde_json::Value) -> Option<VerdictMap> {
    let key = match Expression::deserialize(vmap.get("key")?) {
        Ok(expr) => field_from_expr(&expr),
        Err(_) => Field::Other(short_json(vmap.get("key")?)),
    };
    let elements = match vmap.get("data")? {
        serde_json::Value::String(text) => MapElements::Named(text.strip_prefix('@')?.to_owned()),
        data => MapElements::Inline(
            data.get("set")?
                .as_array()?
                .iter()
                .map(map_element_from_json)
                .collect(),
        ),
    };
    Some(VerdictMap { key, elements })
}

/// A rule the schema could not take whole: its statements one by one.
fn rule_from_value(rule: &serde_json::Value) -> Option<(Family, String, String, Rule)> {
    let family = NfFamily::deserialize(rule.get("family")?).ok()?;
    let table = rule.get("table")?.as_str()?.to_owned();
    let chain = rule.get("chain")?.as_str()?.to_owned();
    let handle = rule.get("handle").and_then(serde_json::Value::as_u64);
    let comment = rule.get("comment").and_then(serde_json::Value::as_str);
    let mut parts = RuleParts::default();
    for statement in rule.get("expr")?.as_array()? {
        match Statement::deserialize(statement) {
            Ok(statement) => add_statement(&statement, &mut parts),
            Err(_) => {
                let name = statement
                    .as_object()
                    .and_then(|o| o.keys().next().cloned())
                    .unwrap_or_else(|| "statement".to_owned());
                // A statement named like a verdict is one, whatever its
                // arguments; anything else may or may not match.
                match name.as_str() {
                    "vmap" => match statement.get("vmap").and_then(verdict_map_from_json) {
                        Some(map) => parts.verdict = Some(Verdict::Map(map)),
                        None => {
                            parts.conditions.push(Condition::Opaque(name));
                            parts.verdict = Some(Verdict::Other("vmap".to_owned()));
                        }
                    },
                    "accept" => parts.verdict = Some(Verdict::Accept),
                    "drop" => parts.verdict = Some(Verdict::Drop),
                    "reject" => parts.verdict = Some(Verdict::Reject),
                    "counter" | "log" => parts.effects.push(name),
                    _ => parts.conditions.push(Condition::Opaque(name)),
                }
            }
        }
    }
    let rule = finish_rule(handle, parts, comment);
    Some((family_from_nft(family), table, chain, rule))
}

fn family_from_nft(family: NfFamily) -> Family {
    match family {
        NfFamily::IP => Family::Ip,
        NfFamily::IP6 => Family::Ip6,
        NfFamily::INet => Family::Inet,
        NfFamily::ARP => Family::Arp,
        NfFamily::Bridge => Family::Bridge,
        NfFamily::NetDev => Family::Netdev,
    }
}

fn chain_from_nft(chain: &nftables::schema::Chain<'_>) -> Chain {
    let base = match (chain.hook, chain._type) {
        (Some(hook), Some(chain_type)) => Some(BaseChain {
            hook: match hook {
                NfHook::Prerouting => Hook::Prerouting,
                NfHook::Input => Hook::Input,
                NfHook::Forward => Hook::Forward,
                NfHook::Output => Hook::Output,
                NfHook::Postrouting => Hook::Postrouting,
                NfHook::Ingress => Hook::Ingress,
                NfHook::Egress => Hook::Egress,
            },
            chain_type: match chain_type {
                NfChainType::Filter => "filter",
                NfChainType::NAT => "nat",
                NfChainType::Route => "route",
            }
            .to_owned(),
            priority: chain.prio.unwrap_or(0),
            // A base chain without a policy in the listing has nft's default.
            policy: match chain.policy {
                Some(NfChainPolicy::Drop) => Policy::Drop,
                Some(NfChainPolicy::Accept) | None => Policy::Accept,
            },
        }),
        _ => None,
    };
    Chain {
        backend: Backend::Nftables,
        family: family_from_nft(chain.family),
        table: chain.table.clone().into_owned(),
        name: chain.name.clone().into_owned(),
        base,
        rules: Vec::new(),
    }
}

fn rule_from_statements(
    handle: Option<u64>,
    statements: &[Statement<'_>],
    comment: Option<&str>,
) -> Rule {
    let mut parts = RuleParts::default();
    for statement in statements {
        add_statement(statement, &mut parts);
    }
    finish_rule(handle, parts, comment)
}

fn finish_rule(handle: Option<u64>, parts: RuleParts, comment: Option<&str>) -> Rule {
    let mut words: Vec<String> = parts.conditions.iter().map(ToString::to_string).collect();
    words.extend(parts.effects);
    words.extend(
        parts
            .verdict_text
            .or_else(|| parts.verdict.as_ref().map(ToString::to_string)),
    );
    if let Some(comment) = comment {
        words.push(format!("comment {comment:?}"));
    }
    Rule {
        handle,
        conditions: parts.conditions,
        verdict: parts.verdict,
        comment: comment.map(str::to_owned),
        text: words.join(" "),
    }
}

/// A rule's statements, sorted as they are read.
#[derive(Default)]
struct RuleParts {
    conditions: Vec<Condition>,
    verdict: Option<Verdict>,
    /// The verdict as its statement reads, when it has arguments (`reject
    /// with icmpx admin-prohibited`).
    verdict_text: Option<String>,
    /// Statements that neither test nor decide: `counter`, `log`, set updates.
    effects: Vec<String>,
}

/// Sorts one nft statement into a condition, a verdict, or an effect that
/// neither tests nor decides (counter, log, set updates, marks).
fn add_statement(statement: &Statement<'_>, parts: &mut RuleParts) {
    match statement {
        Statement::Accept(_) => parts.verdict = Some(Verdict::Accept),
        Statement::Drop(_) => parts.verdict = Some(Verdict::Drop),
        Statement::Reject(reject) => {
            let mut words = vec!["reject".to_owned()];
            if let Some(reject) = reject {
                let kind = reject._type.as_ref().and_then(serde_name);
                let code = reject.expr.as_ref().and_then(serde_name);
                if kind.is_some() || code.is_some() {
                    words.push("with".to_owned());
                    words.extend(kind);
                    words.extend(code);
                }
            }
            parts.verdict = Some(Verdict::Reject);
            parts.verdict_text = Some(words.join(" "));
        }
        Statement::Return(_) => parts.verdict = Some(Verdict::Return),
        Statement::Continue(_) => parts.verdict = Some(Verdict::Continue),
        Statement::Jump(target) => {
            parts.verdict = Some(Verdict::Jump(target.target.clone().into_owned()))
        }
        Statement::Goto(target) => {
            parts.verdict = Some(Verdict::Goto(target.target.clone().into_owned()))
        }
        Statement::Match(m) => parts.conditions.push(condition_from_match(m)),
        Statement::Counter(_) => parts.effects.push("counter".to_owned()),
        Statement::Log(_) => parts.effects.push("log".to_owned()),
        // Rate limits and quotas match only some packets.
        Statement::Limit(_) => parts.conditions.push(Condition::Opaque("limit".to_owned())),
        Statement::Quota(_) => parts.conditions.push(Condition::Opaque("quota".to_owned())),
        Statement::CTCount(_) => parts
            .conditions
            .push(Condition::Opaque("ct count".to_owned())),
        Statement::XT(xt) => {
            // iptables-nft rules nft cannot translate: matches are opaque
            // conditions, targets opaque actions.
            let kind = xt
                .as_ref()
                .and_then(|v| v.get("type"))
                .and_then(|v| v.as_str())
                .unwrap_or("");
            let name = xt
                .as_ref()
                .and_then(|v| v.get("name"))
                .and_then(|v| v.as_str())
                .unwrap_or("?");
            if kind == "target" {
                parts.verdict = Some(Verdict::Other(format!("xt target {name}")));
            } else {
                parts
                    .conditions
                    .push(Condition::Opaque(format!("xt match {name}")));
            }
        }
        Statement::VerdictMap(vmap) => {
            match verdict_map_from_statement(vmap) {
                Some(map) => parts.verdict = Some(Verdict::Map(map)),
                None => {
                    // A lookup perimeter cannot read may or may not hit.
                    parts.conditions.push(Condition::Opaque("vmap".to_owned()));
                    parts.verdict = Some(Verdict::Other("vmap".to_owned()));
                }
            }
        }
        Statement::Queue(_) => parts.verdict = Some(Verdict::Other("queue".to_owned())),
        Statement::SNAT(_) => parts.verdict = Some(Verdict::Other("snat".to_owned())),
        Statement::DNAT(_) => parts.verdict = Some(Verdict::Other("dnat".to_owned())),
        Statement::Masquerade(_) => parts.verdict = Some(Verdict::Other("masquerade".to_owned())),
        Statement::Redirect(_) => parts.verdict = Some(Verdict::Other("redirect".to_owned())),
        Statement::TProxy(_) => parts.verdict = Some(Verdict::Other("tproxy".to_owned())),
        Statement::SynProxy(_) => parts.verdict = Some(Verdict::Other("synproxy".to_owned())),
        Statement::FWD(_) => parts.verdict = Some(Verdict::Other("fwd".to_owned())),
        other => parts
            .effects
            .push(serde_name(other).unwrap_or_else(|| "statement".to_owned())),
    }
}

/// The JSON key serde gives an enum value, as a short name for evidence.
fn serde_name(value: &impl serde::Serialize) -> Option<String> {
    match serde_json::to_value(value).ok()? {
        serde_json::Value::String(name) => Some(name),
        serde_json::Value::Object(map) => map.keys().next().cloned(),
        _ => None,
    }
}

/// What the left side of a match, or a map's key, looks at.
fn field_from_expr(expr: &Expression<'_>) -> Field {
    match expr {
        Expression::Named(NamedExpression::Payload(Payload::PayloadField(p))) => Field::Payload {
            protocol: p.protocol.clone().into_owned(),
            field: p.field.clone().into_owned(),
        },
        Expression::Named(NamedExpression::Meta(meta)) => {
            Field::Meta(serde_name(&meta.key).unwrap_or_else(|| "meta".to_owned()))
        }
        Expression::Named(NamedExpression::CT(ct)) => Field::Ct(ct.key.clone().into_owned()),
        Expression::Named(NamedExpression::Concat(parts)) => {
            Field::Concat(parts.iter().map(field_from_expr).collect())
        }
        other => Field::Other(short_json(other)),
    }
}

fn condition_from_match(m: &NftMatch<'_>) -> Condition {
    let field = field_from_expr(&m.left);
    // The crate's operator variant names do not all say what they mean (its
    // `LT` is serialised as `>`), so go by the serialised symbol.
    let op = match serde_name(&m.op).as_deref() {
        Some("==") => Op::Eq,
        Some("!=") => Op::Ne,
        Some("<") => Op::Lt,
        Some(">") => Op::Gt,
        Some("<=") => Op::Le,
        Some(">=") => Op::Ge,
        Some("in") => Op::In,
        _ => Op::Other,
    };
    Condition::Match {
        field,
        op,
        value: value_from_expr(&m.right),
    }
}

fn value_from_expr(expr: &Expression<'_>) -> Value {
    match expr {
        Expression::String(text) => match text.strip_prefix('@') {
            Some(set) => Value::SetRef(set.to_owned()),
            None => Value::Text(text.clone().into_owned()),
        },
        Expression::Number(n) => Value::Number(u64::from(*n)),
        Expression::Boolean(b) => Value::Text(b.to_string()),
        Expression::List(items) => Value::Set(items.iter().map(value_from_expr).collect()),
        Expression::Range(range) => {
            let [low, high] = &range.range;
            Value::Range(
                Box::new(value_from_expr(low)),
                Box::new(value_from_expr(high)),
            )
        }
        Expression::Named(NamedExpression::Set(items)) => Value::Set(
            items
                .iter()
                .map(|item| match item {
                    SetItem::Element(e) => element_value(e),
                    SetItem::Mapping(k, _) | SetItem::MappingStatement(k, _) => value_from_expr(k),
                })
                .collect(),
        ),
        Expression::Named(NamedExpression::Concat(parts)) => {
            Value::Concat(parts.iter().map(value_from_expr).collect())
        }
        // An element with a comment, timeout or counter: its value is what
        // is compared.
        Expression::Named(NamedExpression::Elem(elem)) => value_from_expr(&elem.val),
        Expression::Named(NamedExpression::Prefix(prefix)) => {
            let addr = match prefix.addr.as_ref() {
                Expression::String(text) => text.parse::<IpAddr>().ok(),
                _ => None,
            };
            match (addr, u8::try_from(prefix.len)) {
                (Some(addr), Ok(len)) => Value::Prefix { addr, len },
                _ => Value::Other(short_json(expr)),
            }
        }
        other => Value::Other(short_json(other)),
    }
}

/// A JSON rendering of an expression, cut short: evidence, not data.
fn short_json(value: &impl serde::Serialize) -> String {
    let mut text = serde_json::to_string(value).unwrap_or_default();
    if text.len() > 80 {
        let mut cut = 77;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

// ---------------------------------------------------------------------------
// iptables-save → model

/// The model of one `iptables-save` (`version` V4) or `ip6tables-save`
/// (`version` V6) output. `backend` says which tool produced it.
pub fn parse_iptables_save(
    text: &str,
    version: IpVersion,
    backend: Backend,
) -> Result<Ruleset, FirewallError> {
    let family = match version {
        IpVersion::V4 => Family::Ip,
        IpVersion::V6 => Family::Ip6,
    };
    let source_name = match (backend, version) {
        (Backend::IptablesNft, IpVersion::V4) => "iptables-nft-save",
        (Backend::IptablesNft, IpVersion::V6) => "ip6tables-nft-save",
        (_, IpVersion::V4) => "iptables-save",
        (_, IpVersion::V6) => "ip6tables-save",
    };
    let error = |line: usize, message: &str| FirewallError::IptablesSave {
        source_name: source_name.to_owned(),
        line,
        message: message.to_owned(),
    };

    let mut ruleset = Ruleset::default();
    let mut table: Option<String> = None;
    for (line_idx, line) in text.lines().enumerate() {
        let line_no = line_idx + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            table = Some(name.to_owned());
        } else if line == "COMMIT" {
            table = None;
        } else if let Some(rest) = line.strip_prefix(':') {
            let table = table
                .as_ref()
                .ok_or_else(|| error(line_no, "chain outside a table"))?;
            let mut words = rest.split_whitespace();
            let (Some(name), Some(policy)) = (words.next(), words.next()) else {
                return Err(error(line_no, "chain line without a policy"));
            };
            let base = match policy {
                "-" => None,
                "ACCEPT" | "DROP" => Some(BaseChain {
                    hook: builtin_hook(name)
                        .ok_or_else(|| error(line_no, "policy on a chain that is not built in"))?,
                    chain_type: if table == "nat" { "nat" } else { "filter" }.to_owned(),
                    priority: builtin_priority(table),
                    policy: if policy == "DROP" {
                        Policy::Drop
                    } else {
                        Policy::Accept
                    },
                }),
                _ => return Err(error(line_no, "unknown chain policy")),
            };
            ruleset.chains.push(Chain {
                backend,
                family,
                table: table.clone(),
                name: name.to_owned(),
                base,
                rules: Vec::new(),
            });
        } else {
            let table = table
                .as_ref()
                .ok_or_else(|| error(line_no, "rule outside a table"))?;
            let words =
                split_iptables_words(line).ok_or_else(|| error(line_no, "unterminated quote"))?;
            // `iptables-save -c` puts the counters first.
            let words = match words.first() {
                Some(first) if first.starts_with('[') => words.get(1..).unwrap_or_default(),
                _ => &words[..],
            };
            let (Some("-A"), Some(chain_name)) = (words.first().map(String::as_str), words.get(1))
            else {
                return Err(error(line_no, "not a chain, table or -A rule line"));
            };
            let user_chains: Vec<String> = ruleset
                .chains
                .iter()
                .filter(|c| c.table == *table && c.base.is_none())
                .map(|c| c.name.clone())
                .collect();
            let chain = ruleset
                .chains
                .iter_mut()
                .find(|c| c.table == *table && c.name == *chain_name)
                .ok_or_else(|| error(line_no, "rule for a chain that was not declared"))?;
            let position = chain.rules.len() as u64 + 1;
            let mut rule = rule_from_iptables(words.get(2..).unwrap_or_default(), &user_chains);
            rule.handle = Some(position);
            rule.text = line.to_owned();
            chain.rules.push(rule);
        }
    }
    Ok(ruleset)
}

fn builtin_hook(chain: &str) -> Option<Hook> {
    match chain {
        "PREROUTING" => Some(Hook::Prerouting),
        "INPUT" => Some(Hook::Input),
        "FORWARD" => Some(Hook::Forward),
        "OUTPUT" => Some(Hook::Output),
        "POSTROUTING" => Some(Hook::Postrouting),
        _ => None,
    }
}

/// The netfilter priorities of the x_tables tables, so chains from both worlds
/// sort the way the kernel runs them.
fn builtin_priority(table: &str) -> i32 {
    match table {
        "raw" => -300,
        "mangle" => -150,
        "nat" => -100,
        "security" => 50,
        _ => 0,
    }
}

/// Splits a saved rule into words. iptables-save quotes words with spaces in
/// double quotes and escapes quotes inside them with a backslash.
fn split_iptables_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            c => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return None;
    }
    if in_word {
        words.push(current);
    }
    Some(words)
}

/// Targets that act and let evaluation go on, so they are not verdicts.
const NON_TERMINATING_TARGETS: [&str; 21] = [
    "LOG",
    // The raw table's way of exempting packets from conntrack, now walked
    // with prerouting.
    "NOTRACK",
    "NFLOG",
    "ULOG",
    "MARK",
    "CONNMARK",
    "CT",
    "TRACE",
    "AUDIT",
    "CLASSIFY",
    "DSCP",
    "TOS",
    "TTL",
    "HL",
    "SECMARK",
    "CONNSECMARK",
    "TCPMSS",
    "CHECKSUM",
    "IDLETIMER",
    "SET",
    "RATEEST",
];

fn rule_from_iptables(words: &[String], user_chains: &[String]) -> Rule {
    let mut conditions = Vec::new();
    let mut verdict = None;
    let mut comment = None;
    let mut negate = false;
    let mut module: Option<String> = None;
    let mut opaque_module: Option<Vec<String>> = None;
    let mut idx = 0;

    let field_match = |field: Field, negate: bool, value: Value| Condition::Match {
        field,
        op: if negate { Op::Ne } else { Op::Eq },
        value,
    };
    let flush_opaque = |opaque: &mut Option<Vec<String>>, conditions: &mut Vec<Condition>| {
        if let Some(words) = opaque.take() {
            conditions.push(Condition::Opaque(words.join(" ")));
        }
    };

    while let Some(word) = words.get(idx) {
        let arg = words.get(idx + 1).cloned().unwrap_or_default();
        match word.as_str() {
            // Inside a module perimeter does not model, the negation belongs
            // to the module's option and stays in its words.
            "!" if opaque_module.is_some() => {
                if let Some(words) = opaque_module.as_mut() {
                    words.push("!".to_owned());
                }
                idx += 1;
                continue;
            }
            "!" => {
                negate = true;
                idx += 1;
                continue;
            }
            "-p" | "--protocol" => {
                conditions.push(field_match(
                    Field::Meta("l4proto".into()),
                    negate,
                    Value::Text(arg),
                ));
                idx += 2;
            }
            "-s" | "--source" | "-d" | "--destination" => {
                let which = if word.starts_with("-s") || word == "--source" {
                    "saddr"
                } else {
                    "daddr"
                };
                conditions.push(field_match(
                    Field::Payload {
                        protocol: "ip".into(),
                        field: which.into(),
                    },
                    negate,
                    address_value(&arg),
                ));
                idx += 2;
            }
            "-i" | "--in-interface" => {
                conditions.push(field_match(
                    Field::Meta("iifname".into()),
                    negate,
                    Value::Text(arg),
                ));
                idx += 2;
            }
            "-o" | "--out-interface" => {
                conditions.push(field_match(
                    Field::Meta("oifname".into()),
                    negate,
                    Value::Text(arg),
                ));
                idx += 2;
            }
            "-m" | "--match" => {
                flush_opaque(&mut opaque_module, &mut conditions);
                module = Some(arg.clone());
                if !matches!(
                    arg.as_str(),
                    "tcp" | "udp" | "multiport" | "conntrack" | "state" | "comment"
                ) {
                    opaque_module = Some(vec!["-m".into(), arg]);
                }
                idx += 2;
            }
            "-j" | "--jump" | "-g" | "--goto" => {
                flush_opaque(&mut opaque_module, &mut conditions);
                let goto = word == "-g" || word == "--goto";
                verdict = match arg.as_str() {
                    "ACCEPT" => Some(Verdict::Accept),
                    "DROP" => Some(Verdict::Drop),
                    "REJECT" => Some(Verdict::Reject),
                    "RETURN" => Some(Verdict::Return),
                    chain if user_chains.iter().any(|c| c == chain) => Some(if goto {
                        Verdict::Goto(chain.to_owned())
                    } else {
                        Verdict::Jump(chain.to_owned())
                    }),
                    target if NON_TERMINATING_TARGETS.contains(&target) => None,
                    target => Some(Verdict::Other(target.to_owned())),
                };
                // Target options (`--reject-with ...`) follow; none is a test.
                break;
            }
            option if opaque_module.is_some() => {
                if let Some(words) = opaque_module.as_mut() {
                    words.push(option.to_owned());
                }
                idx += 1;
                continue;
            }
            "--dport"
            | "--destination-port"
            | "--sport"
            | "--source-port"
            | "--dports"
            | "--destination-ports"
            | "--sports"
            | "--source-ports" => {
                let protocol = match module.as_deref() {
                    Some("tcp") | Some("udp") => module.clone().unwrap_or_default(),
                    // multiport rules name the protocol with -p; the port
                    // field is the transport header's either way.
                    _ => "th".to_owned(),
                };
                let field = if word.contains("sport") || word.contains("source") {
                    "sport"
                } else {
                    "dport"
                };
                conditions.push(field_match(
                    Field::Payload {
                        protocol,
                        field: field.into(),
                    },
                    negate,
                    port_value(&arg),
                ));
                idx += 2;
            }
            "--ctstate" | "--state" => {
                let states = arg
                    .split(',')
                    .map(|s| Value::Text(s.to_ascii_lowercase()))
                    .collect();
                conditions.push(Condition::Match {
                    field: Field::Ct("state".into()),
                    op: if negate { Op::Ne } else { Op::In },
                    value: Value::Set(states),
                });
                idx += 2;
            }
            "--comment" if module.as_deref() == Some("comment") => {
                comment = Some(arg);
                idx += 2;
            }
            other => {
                // A core option perimeter does not model (-f, --tcp-flags, ...):
                // keep it as a test that may or may not hold.
                conditions.push(Condition::Opaque(other.to_owned()));
                idx += 1;
            }
        }
        negate = false;
    }
    flush_opaque(&mut opaque_module, &mut conditions);
    Rule {
        handle: None,
        conditions,
        verdict,
        comment,
        text: String::new(),
    }
}

fn address_value(text: &str) -> Value {
    if let Some((addr, len)) = text.split_once('/')
        && let (Ok(addr), Ok(len)) = (addr.parse::<IpAddr>(), len.parse::<u8>())
    {
        return Value::Prefix { addr, len };
    }
    Value::Text(text.to_owned())
}

fn port_value(text: &str) -> Value {
    let one = |port: &str| match port.split_once(':') {
        Some((low, high)) => Value::Range(
            Box::new(number_or_text(low)),
            Box::new(number_or_text(high)),
        ),
        None => number_or_text(port),
    };
    if text.contains(',') {
        Value::Set(text.split(',').map(one).collect())
    } else {
        one(text)
    }
}

fn number_or_text(text: &str) -> Value {
    text.parse()
        .map_or_else(|_| Value::Text(text.to_owned()), Value::Number)
}

// ---------------------------------------------------------------------------
// Rendering, for evidence

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Payload { protocol, field } => write!(f, "{protocol} {field}"),
            Field::Meta(key) => write!(f, "meta {key}"),
            Field::Ct(key) => write!(f, "ct {key}"),
            Field::Concat(parts) => write_joined(f, parts, " . "),
            Field::Other(text) => f.write_str(text),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Number(n) => write!(f, "{n}"),
            Value::Text(text) => f.write_str(text),
            Value::Prefix { addr, len } => write!(f, "{addr}/{len}"),
            Value::Range(low, high) => write!(f, "{low}-{high}"),
            Value::Set(items) => {
                f.write_str("{ ")?;
                for (idx, item) in items.iter().enumerate() {
                    if idx > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str(" }")
            }
            Value::SetRef(name) => write!(f, "@{name}"),
            Value::Concat(parts) => write_joined(f, parts, " . "),
            Value::Other(text) => f.write_str(text),
        }
    }
}

fn write_joined(f: &mut fmt::Formatter<'_>, items: &[impl fmt::Display], sep: &str) -> fmt::Result {
    for (idx, item) in items.iter().enumerate() {
        if idx > 0 {
            f.write_str(sep)?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Match { field, op, value } => {
                let op = match op {
                    Op::Eq | Op::In => "",
                    Op::Ne => "!= ",
                    Op::Lt => "< ",
                    Op::Gt => "> ",
                    Op::Le => "<= ",
                    Op::Ge => ">= ",
                    Op::Other => "? ",
                };
                write!(f, "{field} {op}{value}")
            }
            Condition::Opaque(text) => f.write_str(text),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Reject => f.write_str("reject"),
            Verdict::Return => f.write_str("return"),
            Verdict::Continue => f.write_str("continue"),
            Verdict::Jump(chain) => write!(f, "jump {chain}"),
            Verdict::Goto(chain) => write!(f, "goto {chain}"),
            Verdict::Map(map) => write!(f, "{map}"),
            Verdict::Other(text) => f.write_str(text),
        }
    }
}

impl fmt::Display for VerdictMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} vmap ", self.key)?;
        match &self.elements {
            MapElements::Named(name) => write!(f, "@{name}"),
            MapElements::Inline(elements) => {
                f.write_str("{ ")?;
                write_joined(f, elements, ", ")?;
                f.write_str(" }")
            }
        }
    }
}

impl fmt::Display for MapElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} : {}", self.key, self.verdict)
    }
}

// ---------------------------------------------------------------------------
// Default deny

/// How deep jumps and gotos are followed looking for a final drop; nft itself
/// refuses more than 16 levels of jumps.
const MAX_JUMP_DEPTH: usize = 16;

/// How a chain ends for a packet that no conditional rule decided.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ChainEnd {
    /// Dropped or rejected; the words say by what.
    Denied(String),
    /// Accepted by an unconditional rule.
    Accepted(String),
    /// Handed to something perimeter cannot follow (queue, nat, a missing
    /// chain, jumps nested too deep).
    Undecided(String),
    /// Fell off the end or hit `return`: back to the caller, or for a base
    /// chain, to its policy.
    Returned,
}

/// Whether the ruleset drops inbound traffic that no rule allowed, for both
/// IPv4 and IPv6.
///
/// A family is denied by default when some filter chain on the input hook that
/// sees it has policy drop, or ends (for that family) in an unconditional drop
/// or reject, following unconditional jumps and gotos. "Unconditional" is for
/// a new connection of that family: `ct state new` and `meta nfproto` tests
/// that admit it count as no test, and a verdict map keyed on `ct state` or
/// `meta nfproto` stands for the verdict of the element such a connection
/// takes (`ct state vmap { established : accept, new : jump allow }`).
/// Conditional accepts before that point are the allow list and do not
/// matter. Since a packet must
/// pass every input chain (nft's and legacy iptables' alike), one denying chain
/// per family suffices.
pub fn default_deny(ruleset: &Ruleset) -> FirewallVerdict {
    let input_chains: Vec<&Chain> = ruleset
        .chains
        .iter()
        .filter(|c| {
            c.base
                .as_ref()
                .is_some_and(|b| b.hook == Hook::Input && b.chain_type == "filter")
                && (c.family.sees(IpVersion::V4) || c.family.sees(IpVersion::V6))
        })
        .collect();
    if input_chains.is_empty() {
        return FirewallVerdict::Open {
            evidence: vec!["no input base chain".to_owned()],
        };
    }

    let mut denials: Vec<String> = Vec::new();
    let mut gaps: Vec<String> = Vec::new();
    for version in [IpVersion::V4, IpVersion::V6] {
        let seeing: Vec<&&Chain> = input_chains
            .iter()
            .filter(|c| c.family.sees(version))
            .collect();
        if seeing.is_empty() {
            let mut families: Vec<&str> = input_chains.iter().map(|c| c.family.as_str()).collect();
            families.dedup();
            gaps.push(format!(
                "{v}: no input chain sees {v} packets (input chains exist only in family {}), so {v} is not filtered",
                families.join(" and "),
                v = version.as_str()
            ));
            continue;
        }
        let mut denied = false;
        let mut why_not = Vec::new();
        for chain in seeing {
            let policy = chain.base.as_ref().map_or(Policy::Accept, |b| b.policy);
            // Conntrack runs at priority -200; before it a packet has no
            // state, and `ct state` tests say nothing about new connections.
            let before_conntrack = chain.base.as_ref().is_some_and(|b| b.priority < -200);
            let how = match chain_end(ruleset, chain, version, before_conntrack, 0) {
                ChainEnd::Denied(how) => Ok(how),
                ChainEnd::Returned if policy == Policy::Drop => Ok("policy drop".to_owned()),
                ChainEnd::Returned => Err("policy accept, and no final drop or reject".to_owned()),
                ChainEnd::Accepted(how) | ChainEnd::Undecided(how) => Err(how),
            };
            match how {
                Ok(how) => {
                    denied = true;
                    let line = format!("{}: {how}", describe_base(chain));
                    if !denials.contains(&line) {
                        denials.push(line);
                    }
                }
                Err(how) => why_not.push(format!("{}: {how}", describe_base(chain))),
            }
        }
        if !denied {
            gaps.push(format!(
                "{}: no input chain denies by default ({})",
                version.as_str(),
                why_not.join("; ")
            ));
        }
    }

    if gaps.is_empty() {
        FirewallVerdict::DefaultDeny { evidence: denials }
    } else {
        // What denies one family only, then what leaves the other open.
        denials.extend(gaps);
        FirewallVerdict::Open { evidence: denials }
    }
}

fn describe_base(chain: &Chain) -> String {
    match &chain.base {
        Some(base) => format!(
            "{} (hook input, priority {})",
            chain.describe(),
            base.priority
        ),
        None => chain.describe(),
    }
}

/// Whether a rule applies to every new inbound connection of `version`: no
/// conditions, or only `meta nfproto` tests that admit `version` and `ct
/// state` tests that admit `new`. `None` when the rule never applies to such
/// a connection (`ct state established,related`, the other family).
///
/// Default deny is about connections no rule allowed, which arrive as `new`:
/// a final `ct state new drop` denies them as surely as a final `drop`.
fn unconditional_for(rule: &Rule, version: IpVersion, before_conntrack: bool) -> Option<bool> {
    let mut unconditional = true;
    for condition in &rule.conditions {
        match condition {
            Condition::Match {
                field: Field::Meta(key),
                op,
                value: Value::Text(proto),
            } if key == "nfproto" && matches!(op, Op::Eq | Op::Ne) => {
                let names_version = match version {
                    IpVersion::V4 => proto == "ipv4",
                    IpVersion::V6 => proto == "ipv6",
                };
                if names_version != (*op == Op::Eq) {
                    return None;
                }
            }
            Condition::Match {
                field: Field::Ct(key),
                op,
                value,
            } if key == "state" && !before_conntrack && matches!(op, Op::Eq | Op::In | Op::Ne) => {
                match names_new_state(value) {
                    Some(names_new) if names_new != (*op == Op::Ne) => {}
                    Some(_) => return None,
                    None => unconditional = false,
                }
            }
            _ => unconditional = false,
        }
    }
    Some(unconditional)
}

/// Whether conntrack states (`new`, `{ established, related }`) include
/// `new`; `None` when some state is not a plain name.
fn names_new_state(value: &Value) -> Option<bool> {
    let one = |v: &Value| match v {
        Value::Text(state) => Some(state == "new"),
        _ => None,
    };
    match value {
        Value::Set(states) => states
            .iter()
            .map(one)
            .try_fold(false, |any, new| new.map(|new| any || new)),
        other => one(other),
    }
}

/// The element of a verdict map that every new inbound connection of
/// `version` takes, when one does: the `new` element of a `ct state vmap`,
/// the `ipv4` or `ipv6` one of a `meta nfproto vmap`. `None` when the lookup
/// depends on the connection (ports, addresses, interfaces) or when no
/// element matches, both of which leave the connection to the next rule as
/// far as default deny goes.
fn map_element_for<'a>(
    ruleset: &'a Ruleset,
    chain: &Chain,
    map: &'a VerdictMap,
    version: IpVersion,
    before_conntrack: bool,
) -> Option<&'a MapElement> {
    let elements = ruleset.map_elements(chain, &map.elements)?;
    let ours: &[&str] = match (&map.key, version) {
        (Field::Ct(key), _) if key == "state" && !before_conntrack => &["new"],
        (Field::Meta(key), IpVersion::V4) if key == "nfproto" => &["ipv4"],
        (Field::Meta(key), IpVersion::V6) if key == "nfproto" => &["ipv6"],
        (Field::Meta(key), IpVersion::V4) if key == "protocol" => &["ip"],
        (Field::Meta(key), IpVersion::V6) if key == "protocol" => &["ip6"],
        _ => return None,
    };
    // A key that is not a plain name might be ours, in a form not understood.
    if elements.iter().any(|e| !matches!(e.key, Value::Text(_))) {
        return None;
    }
    elements
        .iter()
        .find(|e| matches!(&e.key, Value::Text(name) if ours.contains(&name.as_str())))
}

fn chain_end(
    ruleset: &Ruleset,
    chain: &Chain,
    version: IpVersion,
    before_conntrack: bool,
    depth: usize,
) -> ChainEnd {
    for rule in &chain.rules {
        let (Some(true), Some(verdict)) = (
            unconditional_for(rule, version, before_conntrack),
            &rule.verdict,
        ) else {
            continue;
        };
        let mut at = match rule.handle {
            Some(handle) if chain.backend == Backend::Nftables => {
                format!("rule handle {handle} `{}`", rule.text)
            }
            Some(position) => format!("rule {position} `{}`", rule.text),
            None => format!("rule `{}`", rule.text),
        };
        let verdict = match verdict {
            Verdict::Map(map) => {
                match map_element_for(ruleset, chain, map, version, before_conntrack) {
                    Some(element) => {
                        at = format!("{at} (element `{element}`)");
                        &element.verdict
                    }
                    None => continue,
                }
            }
            other => other,
        };
        match verdict {
            Verdict::Drop | Verdict::Reject => {
                return ChainEnd::Denied(format!("{at} drops what earlier rules did not accept"));
            }
            Verdict::Accept => return ChainEnd::Accepted(format!("{at} accepts everything left")),
            Verdict::Return => return ChainEnd::Returned,
            // A map inside a map cannot be written; were it read, it would be
            // a lookup that may miss.
            Verdict::Continue | Verdict::Map(_) => {}
            Verdict::Jump(target) | Verdict::Goto(target) => {
                let Some(next) = ruleset.target_of(chain, target) else {
                    return ChainEnd::Undecided(format!(
                        "{at} leads to chain {target}, which was not listed"
                    ));
                };
                if depth >= MAX_JUMP_DEPTH {
                    return ChainEnd::Undecided(format!(
                        "{at}: jumps nest deeper than {MAX_JUMP_DEPTH}"
                    ));
                }
                match chain_end(ruleset, next, version, before_conntrack, depth + 1) {
                    ChainEnd::Denied(how) => {
                        return ChainEnd::Denied(format!("{at}, in chain {target}: {how}"));
                    }
                    ChainEnd::Accepted(how) => {
                        return ChainEnd::Accepted(format!("{at}, in chain {target}: {how}"));
                    }
                    ChainEnd::Undecided(how) => {
                        return ChainEnd::Undecided(format!("{at}, in chain {target}: {how}"));
                    }
                    // A goto does not come back: falling off its target ends
                    // this chain too. A jump comes back to the next rule.
                    ChainEnd::Returned if matches!(verdict, Verdict::Goto(_)) => {
                        return ChainEnd::Returned;
                    }
                    ChainEnd::Returned => {}
                }
            }
            Verdict::Other(action) => {
                return ChainEnd::Undecided(format!("{at} hands every packet to {action}"));
            }
        }
    }
    ChainEnd::Returned
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
    for (text, version) in [(iptables, IpVersion::V4), (ip6tables, IpVersion::V6)] {
        match parse_iptables_save(text, version, backend) {
            Ok(parsed) => ruleset.extend(parsed),
            Err(err) => return FirewallVerdict::Unknown(err.to_string()),
        }
    }
    default_deny(&ruleset)
}

// ---------------------------------------------------------------------------
// Running the tools

/// The most a ruleset listing may print before it is cut off. A full listing
/// with large sets can run to megabytes; past this, the terse listing
/// (without set elements) is used instead.
const MAX_LISTING: usize = 16 * 1024 * 1024;

/// How long one listing may take.
const LISTING_TIMEOUT: Duration = Duration::from_secs(10);

/// The rulesets of a namespace (this process's, or the one behind
/// `netns_file`, entered with `nsenter --net`), and what could not be read.
pub fn read_ruleset(netns_file: Option<&Path>) -> (Ruleset, Vec<Problem>, Vec<String>) {
    let mut ruleset = Ruleset::default();
    let mut problems = Vec::new();
    let mut unread = Vec::new();
    let nsenter = find_tool("nsenter");
    let runner = |tool: &Path, args: &[&str]| -> Result<BoundedOutput, String> {
        let mut command = match (netns_file, &nsenter) {
            (Some(file), Some(nsenter)) => {
                let mut command = Command::new(nsenter);
                command
                    .arg(format!("--net={}", file.display()))
                    .arg("--")
                    .arg(tool);
                command
            }
            (Some(_), None) => return Err("nsenter is not installed".to_owned()),
            (None, _) => Command::new(tool),
        };
        command.args(args);
        run_bounded(command, LISTING_TIMEOUT, MAX_LISTING).map_err(|err| err.to_string())
    };
    let subject = |tool: &str| match netns_file {
        Some(file) => format!("{tool} in {}", file.display()),
        None => tool.to_owned(),
    };

    let nft = find_tool("nft");
    if let Some(nft) = &nft {
        let mut listing = runner(nft, &["-j", "list", "ruleset"]);
        let terse = listing.as_ref().is_ok_and(|out| out.truncated);
        if terse {
            listing = runner(nft, &["-j", "-t", "list", "ruleset"]);
        }
        match listing.and_then(|out| checked_stdout(out, "nft")) {
            Ok(text) => match parse_nft_json(&text) {
                Ok(mut parsed) => {
                    if terse {
                        // The terse listing shows sets and maps without their
                        // elements, and an empty set would read as one that
                        // nothing is in. Without them, lookups are unknown.
                        parsed.sets.clear();
                        parsed.maps.clear();
                        problems.push(Problem::new(
                            subject("nft -j list ruleset"),
                            format!(
                                "the listing is larger than {} MiB and was read without set and map elements, so tests of named sets and maps are unknown",
                                MAX_LISTING / (1024 * 1024)
                            ),
                        ));
                    }
                    ruleset.extend(parsed);
                }
                Err(err) => {
                    problems.push(Problem::new(
                        subject("nft -j list ruleset"),
                        err.to_string(),
                    ));
                    unread.push("nft".to_owned());
                }
            },
            Err(message) => {
                problems.push(listing_problem(subject("nft -j list ruleset"), &message));
                unread.push("nft".to_owned());
            }
        }
    }

    // Legacy x_tables, which nft does not show. Without nft, iptables-nft's
    // tables come from its own save command.
    let mut savers: Vec<(Backend, &str, &str)> = vec![(
        Backend::IptablesLegacy,
        "iptables-legacy-save",
        "ip6tables-legacy-save",
    )];
    if nft.is_none() {
        savers.push((
            Backend::IptablesNft,
            "iptables-nft-save",
            "ip6tables-nft-save",
        ));
    }
    // Older systems have only the plain names, for whichever backend they were
    // built with; `--version` says which ("(nf_tables)" or "(legacy)", or
    // nothing before iptables 1.8, which had only the legacy one).
    if find_tool("iptables-legacy-save").is_none()
        && find_tool("iptables-nft-save").is_none()
        && let Some(plain) = find_tool("iptables-save")
    {
        let version = run_bounded(
            {
                let mut command = Command::new(&plain);
                command.arg("--version");
                command
            },
            LISTING_TIMEOUT,
            4096,
        )
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
        let backend = if version.contains("nf_tables") {
            Backend::IptablesNft
        } else {
            Backend::IptablesLegacy
        };
        if backend == Backend::IptablesLegacy || nft.is_none() {
            savers.push((backend, "iptables-save", "ip6tables-save"));
        }
    }
    let mut any_saver = false;
    for (backend, v4_tool, v6_tool) in savers {
        for (tool_name, version) in [(v4_tool, IpVersion::V4), (v6_tool, IpVersion::V6)] {
            let Some(tool) = find_tool(tool_name) else {
                continue;
            };
            any_saver = true;
            match runner(&tool, &[]).and_then(|out| checked_stdout(out, tool_name)) {
                Ok(text) => match parse_iptables_save(&text, version, backend) {
                    Ok(parsed) => ruleset.extend(parsed),
                    Err(err) => {
                        problems.push(Problem::new(subject(tool_name), err.to_string()));
                        unread.push(tool_name.to_owned());
                    }
                },
                Err(message) => {
                    problems.push(listing_problem(subject(tool_name), &message));
                    unread.push(tool_name.to_owned());
                }
            }
        }
    }
    if nft.is_none() && !any_saver {
        unread.push("nft, iptables-legacy-save and iptables-nft-save are not installed".to_owned());
        problems.push(
            Problem::new(
                subject("firewall"),
                "no firewall tool is installed to list the ruleset",
            )
            .with_hint("install nftables (nft) or iptables"),
        );
    }
    (ruleset, problems, unread)
}

/// Whether the namespace denies inbound traffic by default. Reads the host's
/// own namespace when `netns_file` is `None`, else the namespace the file
/// (`/run/netns/NAME`, `/proc/PID/ns/net`) refers to.
pub fn firewall_verdict(netns_file: Option<&Path>) -> (FirewallVerdict, Vec<Problem>) {
    let (ruleset, problems, unread) = read_ruleset(netns_file);
    let verdict = verdict_of(&ruleset, &problems, &unread);
    (verdict, problems)
}

/// The default-deny verdict of a ruleset read with [`read_ruleset`], given
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

fn listing_problem(subject: String, message: &str) -> Problem {
    let problem = Problem::new(subject, message.to_owned());
    if message.contains("Operation not permitted") || message.contains("Permission denied") {
        problem.with_hint(
            "listing firewall rules needs CAP_NET_ADMIN (and entering another network namespace CAP_SYS_ADMIN): run perimeter as root",
        )
    } else {
        problem
    }
}

fn checked_stdout(out: BoundedOutput, tool: &str) -> Result<String, String> {
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("no message");
        let status = out
            .status
            .code()
            .map_or_else(|| "a signal".to_owned(), |c| c.to_string());
        return Err(format!("{tool} exited with {status}: {first}"));
    }
    if out.truncated {
        return Err(format!("{tool} printed more than {MAX_LISTING} bytes"));
    }
    String::from_utf8(out.stdout).map_err(|_| format!("{tool} printed text that is not UTF-8"))
}

/// An executable by name, from PATH and then the sbin directories, which a
/// non-root PATH often lacks.
pub(crate) fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// What a command printed, capped.
#[derive(Debug)]
pub(crate) struct BoundedOutput {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    /// Stdout went past the cap; what was kept is its beginning.
    pub(crate) truncated: bool,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CommandError {
    #[error("could not run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} did not finish within {} seconds", timeout.as_secs())]
    Timeout { program: String, timeout: Duration },
}

/// Runs a command with no stdin, keeping at most `max_stdout` bytes of its
/// output (and 64 KiB of its errors), and killing it after `timeout`. Used by
/// the firewall listings and by `sshd -T`.
pub(crate) fn run_bounded(
    mut command: Command,
    timeout: Duration,
    max_stdout: usize,
) -> Result<BoundedOutput, CommandError> {
    const MAX_STDERR: usize = 64 * 1024;
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CommandError::Spawn {
            program: program.clone(),
            source,
        })?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    // Read both pipes on threads so neither can fill up and stall the child;
    // each read is capped, and the rest is drained so the child can finish.
    let read_capped = |pipe: Option<Box<dyn Read + Send>>, cap: usize| {
        thread::spawn(move || {
            let mut kept = Vec::new();
            let mut truncated = false;
            if let Some(mut pipe) = pipe {
                let _ = pipe.by_ref().take(cap as u64).read_to_end(&mut kept);
                let mut sink = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut sink) {
                    if n == 0 {
                        break;
                    }
                    truncated = true;
                }
            }
            (kept, truncated)
        })
    };
    let stdout_reader = read_capped(
        stdout.map(|p| Box::new(p) as Box<dyn Read + Send>),
        max_stdout,
    );
    let stderr_reader = read_capped(
        stderr.map(|p| Box::new(p) as Box<dyn Read + Send>),
        MAX_STDERR,
    );

    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < timeout => thread::sleep(Duration::from_millis(5)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CommandError::Timeout { program, timeout });
            }
        }
    };
    let (stdout, truncated) = stdout_reader.join().unwrap_or_default();
    let (stderr, _) = stderr_reader.join().unwrap_or_default();
    Ok(BoundedOutput {
        status,
        stdout,
        stderr,
        truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence(verdict: &FirewallVerdict) -> Vec<String> {
        match verdict {
            FirewallVerdict::DefaultDeny { evidence } | FirewallVerdict::Open { evidence } => {
                evidence.clone()
            }
            FirewallVerdict::Unknown(reason) => vec![reason.clone()],
        }
    }

    #[test]
    fn iptables_words_with_quotes() {
        let words =
            split_iptables_words(r#"-A INPUT -m comment --comment "allow \"web\" in" -j ACCEPT"#);
        assert_eq!(
            words,
            Some(
                [
                    "-A",
                    "INPUT",
                    "-m",
                    "comment",
                    "--comment",
                    "allow \"web\" in",
                    "-j",
                    "ACCEPT"
                ]
                .map(String::from)
                .to_vec()
            )
        );
        assert_eq!(split_iptables_words(r#"-A INPUT --comment "open"#), None);
    }

    #[test]
    fn iptables_rule_model() {
        let text = "*filter\n:INPUT ACCEPT [0:0]\n:SERVICES - [0:0]\n\
                    -A INPUT -s 198.18.0.0/15 ! -i eth1 -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW,ESTABLISHED -j ACCEPT\n\
                    -A INPUT -p udp -m multiport --dports 53,60000:61000 -j SERVICES\n\
                    -A INPUT -m limit --limit 5/min -j LOG --log-prefix \"in: \"\n\
                    COMMIT\n";
        let ruleset = parse_iptables_save(text, IpVersion::V4, Backend::IptablesLegacy)
            .map_err(|e| e.to_string());
        let Ok(ruleset) = ruleset else {
            panic!("{ruleset:?}");
        };
        let input = &ruleset.chains[0];
        assert_eq!(input.base.as_ref().map(|b| b.policy), Some(Policy::Accept));
        let rendered: Vec<String> = input
            .rules
            .iter()
            .map(|r| {
                let conditions: Vec<String> =
                    r.conditions.iter().map(ToString::to_string).collect();
                format!("{} => {:?}", conditions.join(" && "), r.verdict)
            })
            .collect();
        assert_eq!(
            rendered,
            vec![
                "ip saddr 198.18.0.0/15 && meta iifname != eth1 && meta l4proto tcp && tcp dport 22 && ct state { new, established } => Some(Accept)",
                "meta l4proto udp && th dport { 53, 60000-61000 } => Some(Jump(\"SERVICES\"))",
                "-m limit --limit 5/min => None",
            ]
        );
    }

    #[test]
    fn iptables_save_errors_name_the_line() {
        let text = "*filter\n:INPUT ACCEPT [0:0]\n-A FORWARD -j DROP\nCOMMIT\n";
        let err = parse_iptables_save(text, IpVersion::V4, Backend::IptablesLegacy).map(|_| ());
        assert_eq!(
            err.map_err(|e| e.to_string()),
            Err("iptables-save line 3: rule for a chain that was not declared".to_owned())
        );
    }

    #[test]
    fn nfproto_restricted_final_drop_covers_one_family() {
        let json = r#"{"nftables": [
            {"chain": {"family": "inet", "table": "t", "name": "in", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}},
            {"rule": {"family": "inet", "table": "t", "chain": "in", "handle": 2, "expr": [
                {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv4"}}, {"drop": null}]}}
        ]}"#;
        let verdict = verdict_from_nft_json(json);
        assert!(
            matches!(verdict, FirewallVerdict::Open { .. }),
            "{verdict:?}"
        );
        let evidence = evidence(&verdict);
        assert!(
            evidence
                .iter()
                .any(|e| e.contains("rule handle 2 `meta nfproto ipv4 drop`")),
            "{evidence:?}"
        );
        assert!(
            evidence
                .iter()
                .any(|e| e.starts_with("IPv6: no input chain denies by default")),
            "{evidence:?}"
        );
    }

    #[test]
    fn statements_the_schema_does_not_know_become_opaque() {
        // `frobnicate` is no nft statement; the rule survives with an opaque
        // condition, so the final drop after it still counts.
        let json = r#"{"nftables": [
            {"chain": {"family": "inet", "table": "t", "name": "in", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}},
            {"rule": {"family": "inet", "table": "t", "chain": "in", "handle": 2, "expr": [{"frobnicate": {"level": 3}}, {"accept": null}]}},
            {"rule": {"family": "inet", "table": "t", "chain": "in", "handle": 3, "expr": [{"counter": {"packets": 1, "bytes": 2}}, {"drop": null}]}}
        ]}"#;
        let ruleset = parse_nft_json(json).map_err(|e| e.to_string());
        let Ok(ruleset) = ruleset else {
            panic!("{ruleset:?}");
        };
        let rules = &ruleset.chains[0].rules;
        assert_eq!(
            rules[0].conditions,
            vec![Condition::Opaque("frobnicate".into())]
        );
        assert_eq!(rules[0].verdict, Some(Verdict::Accept));
        assert!(matches!(
            default_deny(&ruleset),
            FirewallVerdict::DefaultDeny { .. }
        ));
    }

    #[test]
    fn an_unconditional_accept_before_the_end_defeats_policy_drop() {
        // `jump everyone` reaches a chain that accepts everything, so the
        // drop policy is never met.
        let json = r#"{"nftables": [
            {"chain": {"family": "inet", "table": "t", "name": "in", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
            {"chain": {"family": "inet", "table": "t", "name": "everyone", "handle": 2}},
            {"rule": {"family": "inet", "table": "t", "chain": "in", "handle": 3, "expr": [{"counter": {"packets": 0, "bytes": 0}}]}},
            {"rule": {"family": "inet", "table": "t", "chain": "in", "handle": 4, "expr": [{"jump": {"target": "everyone"}}]}},
            {"rule": {"family": "inet", "table": "t", "chain": "everyone", "handle": 5, "expr": [{"accept": null}]}}
        ]}"#;
        let verdict = verdict_from_nft_json(json);
        assert_eq!(
            evidence(&verdict),
            vec![
                "IPv4: no input chain denies by default (nftables: inet t in (hook input, priority 0): \
                 rule handle 4 `jump everyone`, in chain everyone: rule handle 5 `accept` accepts everything left)",
                "IPv6: no input chain denies by default (nftables: inet t in (hook input, priority 0): \
                 rule handle 4 `jump everyone`, in chain everyone: rule handle 5 `accept` accepts everything left)",
            ]
        );
        assert!(matches!(verdict, FirewallVerdict::Open { .. }));
    }

    /// nft 1.0.6's listing of named maps of several key types (elements with
    /// comments, counters and timeouts; a concatenation; a nat map that
    /// decides no verdict) and of rules that use them and inline maps.
    const MAPS_JSON: &str = r#"{"nftables": [
        {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
        {"table": {"family": "inet", "name": "t", "handle": 2}},
        {"map": {"family": "inet", "name": "states", "table": "t", "type": "ct_state", "handle": 3, "map": "verdict", "elem": [["invalid", {"drop": null}], ["established", {"accept": null}], ["related", {"accept": null}]]}},
        {"map": {"family": "inet", "name": "ports", "table": "t", "type": "inet_service", "handle": 4, "map": "verdict", "elem": [[{"elem": {"val": 22, "comment": "ssh", "counter": {"packets": 0, "bytes": 0}}}, {"accept": null}], [{"elem": {"val": 443, "counter": {"packets": 0, "bytes": 0}}}, {"jump": {"target": "web"}}]], "stmt": [{"counter": null}]}},
        {"map": {"family": "inet", "name": "pairs", "table": "t", "type": ["ipv4_addr", "inet_service"], "handle": 5, "map": "verdict", "elem": [[{"concat": ["192.0.2.1", 22]}, {"accept": null}]]}},
        {"map": {"family": "inet", "name": "dyn", "table": "t", "type": "ipv4_addr", "handle": 7, "map": "verdict", "flags": ["timeout"], "elem": [[{"elem": {"val": "192.0.2.9", "timeout": 3600, "expires": 3599}}, {"drop": null}]]}},
        {"map": {"family": "inet", "name": "nat", "table": "t", "type": "ipv4_addr", "handle": 8, "map": "ipv4_addr", "elem": [["192.0.2.1", "10.0.0.1"]]}},
        {"chain": {"family": "inet", "table": "t", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}},
        {"chain": {"family": "inet", "table": "t", "name": "web", "handle": 2}},
        {"rule": {"family": "inet", "table": "t", "chain": "input", "handle": 9, "expr": [{"vmap": {"key": {"ct": {"key": "state"}}, "data": "@states"}}]}},
        {"rule": {"family": "inet", "table": "t", "chain": "input", "handle": 10, "expr": [{"vmap": {"key": {"payload": {"protocol": "tcp", "field": "dport"}}, "data": "@ports"}}]}},
        {"rule": {"family": "inet", "table": "t", "chain": "input", "handle": 11, "expr": [{"vmap": {"key": {"concat": [{"payload": {"protocol": "ip", "field": "saddr"}}, {"payload": {"protocol": "tcp", "field": "dport"}}]}, "data": "@pairs"}}]}},
        {"rule": {"family": "inet", "table": "t", "chain": "input", "handle": 15, "expr": [{"vmap": {"key": {"payload": {"protocol": "ip", "field": "saddr"}}, "data": {"set": [[{"elem": {"val": "192.0.2.77", "comment": "x"}}, {"drop": null}]]}}}]}},
        {"rule": {"family": "inet", "table": "t", "chain": "input", "handle": 17, "expr": [{"vmap": {"key": {"concat": [{"meta": {"key": "iifname"}}, {"payload": {"protocol": "tcp", "field": "dport"}}]}, "data": {"set": [[{"concat": ["eth0", 22]}, {"accept": null}]]}}}]}},
        {"rule": {"family": "inet", "table": "t", "chain": "input", "handle": 19, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 22}}, {"counter": {"packets": 0, "bytes": 0}}, {"vmap": {"key": {"payload": {"protocol": "ip", "field": "saddr"}}, "data": {"set": [[{"prefix": {"addr": "192.0.2.0", "len": 24}}, {"accept": null}]]}}}]}},
        {"rule": {"family": "inet", "table": "t", "chain": "web", "handle": 20, "expr": [{"accept": null}]}}
    ]}"#;

    fn parsed(json: &str) -> Ruleset {
        match parse_nft_json(json) {
            Ok(ruleset) => ruleset,
            Err(err) => panic!("{err}"),
        }
    }

    #[test]
    fn named_and_inline_verdict_maps_are_modelled() {
        let ruleset = parsed(MAPS_JSON);
        let names: Vec<&str> = ruleset.maps.iter().map(|m| m.name.as_str()).collect();
        // The nat map gives addresses, not verdicts.
        assert_eq!(names, ["states", "ports", "pairs", "dyn"]);
        let ports = &ruleset.maps[1];
        assert_eq!(
            ports.elements,
            vec![
                MapElement {
                    key: Value::Number(22),
                    verdict: Verdict::Accept
                },
                MapElement {
                    key: Value::Number(443),
                    verdict: Verdict::Jump("web".into())
                },
            ]
        );
        assert_eq!(
            ruleset.maps[2].elements[0].key,
            Value::Concat(vec![Value::Text("192.0.2.1".into()), Value::Number(22)])
        );
        assert_eq!(
            ruleset.maps[3].elements[0].key,
            Value::Text("192.0.2.9".into())
        );

        let input = &ruleset.chains[0];
        let texts: Vec<&str> = input.rules.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "ct state vmap @states",
                "tcp dport vmap @ports",
                "ip saddr . tcp dport vmap @pairs",
                "ip saddr vmap { 192.0.2.77 : drop }",
                "meta iifname . tcp dport vmap { eth0 . 22 : accept }",
                "tcp dport 22 counter ip saddr vmap { 192.0.2.0/24 : accept }",
            ]
        );
        assert_eq!(
            input.rules[0].verdict,
            Some(Verdict::Map(VerdictMap {
                key: Field::Ct("state".into()),
                elements: MapElements::Named("states".into()),
            }))
        );
        // A vmap is a verdict, not a test: the rule keeps only its own.
        assert!(input.rules[0].conditions.is_empty());
        assert_eq!(input.rules[5].conditions.len(), 1);
        let Some(Verdict::Map(states)) = &input.rules[0].verdict else {
            panic!("{:?}", input.rules[0].verdict);
        };
        assert_eq!(
            ruleset
                .map_elements(input, &states.elements)
                .map(<[MapElement]>::len),
            Some(3)
        );
        let missing = MapElements::Named("absent".into());
        assert_eq!(ruleset.map_elements(input, &missing), None);
    }

    #[test]
    fn map_elements_the_schema_cannot_read_are_kept_as_unknown() {
        // `frob` is no verdict: the rule, its map and the other element
        // survive, and the odd element gives a verdict no one understands.
        let json = r#"{"nftables": [
            {"chain": {"family": "inet", "table": "t", "name": "in", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}},
            {"map": {"family": "inet", "name": "m", "table": "t", "type": "inet_service", "map": "verdict", "elem": [[22, {"frob": null}], [23, {"drop": null}], "loose"]}},
            {"rule": {"family": "inet", "table": "t", "chain": "in", "handle": 2, "expr": [{"vmap": {"key": {"payload": {"protocol": "tcp", "field": "dport"}}, "data": {"set": [[22, {"frob": null}], [23, {"drop": null}]]}}}]}},
            {"rule": {"family": "inet", "table": "t", "chain": "in", "handle": 3, "expr": [{"vmap": {"key": {"payload": {"protocol": "tcp", "field": "dport"}}, "data": {"unheard": 1}}}]}}
        ]}"#;
        let ruleset = parsed(json);
        let rules = &ruleset.chains[0].rules;
        assert_eq!(
            rules[0].verdict,
            Some(Verdict::Map(VerdictMap {
                key: Field::Payload {
                    protocol: "tcp".into(),
                    field: "dport".into()
                },
                elements: MapElements::Inline(vec![
                    MapElement {
                        key: Value::Number(22),
                        verdict: Verdict::Other(r#"{"frob":null}"#.into())
                    },
                    MapElement {
                        key: Value::Number(23),
                        verdict: Verdict::Drop
                    },
                ]),
            }))
        );
        let map = &ruleset.maps[0];
        assert_eq!(map.elements.len(), 3);
        assert_eq!(map.elements[1].verdict, Verdict::Drop);
        assert_eq!(map.elements[2].key, Value::Other(r#""loose""#.into()));
        // Data that is neither a named nor an anonymous map: a lookup that
        // may or may not hit, as before maps were modelled.
        assert_eq!(rules[1].conditions, vec![Condition::Opaque("vmap".into())]);
        assert_eq!(rules[1].verdict, Some(Verdict::Other("vmap".into())));
    }

    fn input_chain(priority: i32, policy: &str, rules: &[&str]) -> String {
        let mut objects = vec![format!(
            r#"{{"chain": {{"family": "inet", "table": "t", "name": "in", "handle": 1, "type": "filter", "hook": "input", "prio": {priority}, "policy": "{policy}"}}}}"#
        )];
        for (idx, expr) in rules.iter().enumerate() {
            objects.push(format!(
                r#"{{"rule": {{"family": "inet", "table": "t", "chain": "in", "handle": {}, "expr": {expr}}}}}"#,
                idx + 2
            ));
        }
        format!(r#"{{"nftables": [{}]}}"#, objects.join(", "))
    }

    const CT_NEW_DROP: &str = r#"[{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}}, {"drop": null}]"#;
    const CT_MAP_NEW_DROP: &str = r#"[{"vmap": {"key": {"ct": {"key": "state"}}, "data": {"set": [["established", {"accept": null}], ["new", {"drop": null}]]}}}]"#;
    const CT_MAP_NO_NEW: &str = r#"[{"vmap": {"key": {"ct": {"key": "state"}}, "data": {"set": [["established", {"accept": null}], ["invalid", {"drop": null}]]}}}]"#;
    const CT_ESTABLISHED_ACCEPT: &str = r#"[{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": {"set": ["established", "related"]}}}, {"accept": null}]"#;
    const DPORT_MAP_DROP: &str = r#"[{"vmap": {"key": {"payload": {"protocol": "tcp", "field": "dport"}}, "data": {"set": [[{"range": [0, 65535]}, {"drop": null}]]}}}]"#;

    #[test]
    fn default_deny_reads_new_connections_through_conntrack_tests_and_maps() {
        let denies = |json: &str| {
            matches!(
                verdict_from_nft_json(json),
                FirewallVerdict::DefaultDeny { .. }
            )
        };
        // A final `ct state new drop`, as a test or as a map's element.
        assert!(denies(&input_chain(
            0,
            "accept",
            &[CT_ESTABLISHED_ACCEPT, CT_NEW_DROP]
        )));
        assert!(denies(&input_chain(0, "accept", &[CT_MAP_NEW_DROP])));
        // A map with no `new` element leaves new connections to the policy.
        assert!(!denies(&input_chain(0, "accept", &[CT_MAP_NO_NEW])));
        assert!(denies(&input_chain(0, "drop", &[CT_MAP_NO_NEW])));
        // Before conntrack (priority -300) `ct state` says nothing about new
        // connections.
        assert!(!denies(&input_chain(-300, "accept", &[CT_MAP_NEW_DROP])));
        assert!(!denies(&input_chain(-300, "accept", &[CT_NEW_DROP])));
        // A map on ports is a lookup per connection, even when its keys
        // cover every port: not taken as the chain's end.
        assert!(!denies(&input_chain(0, "accept", &[DPORT_MAP_DROP])));

        let verdict = verdict_from_nft_json(&input_chain(0, "accept", &[CT_MAP_NEW_DROP]));
        assert_eq!(
            evidence(&verdict),
            vec![
                "nftables: inet t in (hook input, priority 0): rule handle 2 `ct state vmap { established : accept, new : drop }` \
                 (element `new : drop`) drops what earlier rules did not accept"
            ]
        );
    }

    #[test]
    fn not_nft_json() {
        assert!(matches!(
            verdict_from_nft_json("{\"tables\": []}"),
            FirewallVerdict::Unknown(_)
        ));
        assert!(matches!(
            verdict_from_nft_json("Error: syntax"),
            FirewallVerdict::Unknown(_)
        ));
    }

    #[test]
    fn jump_loops_are_bounded() {
        let json = r#"{"nftables": [
            {"chain": {"family": "ip", "table": "t", "name": "in", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}},
            {"chain": {"family": "ip", "table": "t", "name": "a", "handle": 2}},
            {"rule": {"family": "ip", "table": "t", "chain": "in", "handle": 3, "expr": [{"goto": {"target": "a"}}]}},
            {"rule": {"family": "ip", "table": "t", "chain": "a", "handle": 4, "expr": [{"goto": {"target": "a"}}]}}
        ]}"#;
        let verdict = verdict_from_nft_json(json);
        assert!(
            matches!(verdict, FirewallVerdict::Open { .. }),
            "{verdict:?}"
        );
        assert!(
            evidence(&verdict)
                .iter()
                .any(|e| e.contains("jumps nest deeper than 16")),
            "{verdict:?}"
        );
    }

    #[test]
    fn permission_errors_say_cap_net_admin() {
        // Runs nft as nobody, which is how a non-root audit would see it.
        let (Some(nft), Some(setpriv)) = (find_tool("nft"), find_tool("setpriv")) else {
            return;
        };
        if !nix_is_root() {
            return;
        }
        let mut command = Command::new(setpriv);
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(nft)
            .args(["-j", "list", "ruleset"]);
        let out =
            run_bounded(command, Duration::from_secs(30), MAX_LISTING).map_err(|e| e.to_string());
        let Ok(out) = out else {
            panic!("{out:?}");
        };
        let Err(message) = checked_stdout(out, "nft") else {
            panic!("nft listed the ruleset without privileges");
        };
        assert!(message.contains("Operation not permitted"), "{message}");
        let problem = listing_problem("nft -j list ruleset".to_owned(), &message);
        assert!(
            problem
                .hint
                .is_some_and(|h| h.starts_with("listing firewall rules needs CAP_NET_ADMIN"))
        );
    }

    fn nix_is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn bounded_command_output_is_capped() {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg("head -c 100000 /dev/zero; echo oops >&2; exit 3");
        let out = run_bounded(command, Duration::from_secs(30), 1000).map_err(|e| e.to_string());
        let Ok(out) = out else {
            panic!("{out:?}");
        };
        assert_eq!(out.stdout.len(), 1000);
        assert!(out.truncated);
        assert_eq!(out.stderr, b"oops\n");
        assert_eq!(out.status.code(), Some(3));
    }
}
