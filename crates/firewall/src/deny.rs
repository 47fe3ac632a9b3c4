//! Whether a ruleset denies new inbound connections by default, per family.

use perimeter_model::{FirewallVerdict, Problem};

use crate::iptables::parse_iptables_save;
use crate::ir::*;
use crate::nft::parse_nft_json;

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
                && (c.family.sees(AddrFamily::V4) || c.family.sees(AddrFamily::V6))
        })
        .collect();
    if input_chains.is_empty() {
        return FirewallVerdict::Open {
            evidence: vec!["no input base chain".to_owned()],
        };
    }

    let mut denials: Vec<String> = Vec::new();
    let mut gaps: Vec<String> = Vec::new();
    for version in [AddrFamily::V4, AddrFamily::V6] {
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
fn unconditional_for(rule: &Rule, version: AddrFamily, before_conntrack: bool) -> Option<bool> {
    let mut unconditional = true;
    for condition in &rule.conditions {
        match condition {
            Condition::Match {
                field: Field::Meta(key),
                op,
                value: Value::Text(proto),
            } if key == "nfproto" && matches!(op, Op::Eq | Op::Ne) => {
                let names_version = match version {
                    AddrFamily::V4 => proto == "ipv4",
                    AddrFamily::V6 => proto == "ipv6",
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
    version: AddrFamily,
    before_conntrack: bool,
) -> Option<&'a MapElement> {
    let elements = ruleset.map_elements(chain, &map.elements)?;
    let ours: &[&str] = match (&map.key, version) {
        (Field::Ct(key), _) if key == "state" && !before_conntrack => &["new"],
        (Field::Meta(key), AddrFamily::V4) if key == "nfproto" => &["ipv4"],
        (Field::Meta(key), AddrFamily::V6) if key == "nfproto" => &["ipv6"],
        (Field::Meta(key), AddrFamily::V4) if key == "protocol" => &["ip"],
        (Field::Meta(key), AddrFamily::V6) if key == "protocol" => &["ip6"],
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
    version: AddrFamily,
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
    for (text, version) in [(iptables, AddrFamily::V4), (ip6tables, AddrFamily::V6)] {
        match parse_iptables_save(text, version, backend) {
            Ok(parsed) => ruleset.extend(parsed),
            Err(err) => return FirewallVerdict::Unknown(err.to_string()),
        }
    }
    default_deny(&ruleset)
}

/// The default-deny verdict of a ruleset read by `host::firewall::read_ruleset`, given
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
