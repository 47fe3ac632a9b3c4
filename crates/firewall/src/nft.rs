//! `nft -j list ruleset` into the model.
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
use std::net::IpAddr;

use nftables::expr::{Expression, NamedExpression, Payload, SetItem};
use nftables::schema::{NfListObject, NfObject};
use nftables::stmt::{Match as NftMatch, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use serde::Deserialize;

use crate::ir::*;

/// How an xt match nft could not translate reads in the model: an opaque
/// condition `xt match NAME`. Only iptables-nft writes xt expressions, so a
/// table holding one is iptables-nft's (see [`crate::xt`]).
pub(crate) const XT_MATCH: &str = "xt match ";

/// How an xt target reads in the model: `Verdict::Other("xt target NAME")`.
pub(crate) const XT_TARGET: &str = "xt target ";

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
                parts.verdict = Some(Verdict::Other(format!("{XT_TARGET}{name}")));
            } else {
                parts
                    .conditions
                    .push(Condition::Opaque(format!("{XT_MATCH}{name}")));
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
        Statement::DNAT(nat) => parts.verdict = Some(dnat_verdict(nat)),
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
/// `dnat to ADDR[:PORT]` with a literal address and port; any other form
/// (a map, a range, an expression) stays an action the walk does not follow.
fn dnat_verdict(nat: &Option<nftables::stmt::NAT<'_>>) -> Verdict {
    let Some(nat) = nat else {
        return Verdict::Other("dnat".to_owned());
    };
    let addr = match &nat.addr {
        Some(Expression::String(text)) => text.parse::<IpAddr>().ok(),
        _ => None,
    };
    let (port, port_given) = match &nat.port {
        None => (None, false),
        Some(Expression::Number(n)) => (u16::try_from(*n).ok(), true),
        Some(_) => (None, true),
    };
    match addr {
        Some(addr) => {
            let text = match (addr, port) {
                (IpAddr::V6(v6), Some(port)) => format!("[{v6}]:{port}"),
                (addr, Some(port)) => format!("{addr}:{port}"),
                (addr, None) => addr.to_string(),
            };
            Verdict::Dnat(NatTarget {
                addr: Some(addr),
                port,
                port_given,
                text,
            })
        }
        None => Verdict::Other("dnat".to_owned()),
    }
}

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
