//! `iptables-save` and `ip6tables-save` output (legacy or nft backend) into
//! the model.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use crate::ir::*;

/// The model of one `iptables-save` (`version` V4) or `ip6tables-save`
/// (`version` V6) output. `backend` says which tool produced it.
pub fn parse_iptables_save(
    text: &str,
    version: AddrFamily,
    backend: Backend,
) -> Result<Ruleset, FirewallError> {
    let family = match version {
        AddrFamily::V4 => Family::Ip,
        AddrFamily::V6 => Family::Ip6,
    };
    let source_name = match (backend, version) {
        (Backend::IptablesNft, AddrFamily::V4) => "iptables-nft-save",
        (Backend::IptablesNft, AddrFamily::V6) => "ip6tables-nft-save",
        (_, AddrFamily::V4) => "iptables-save",
        (_, AddrFamily::V6) => "ip6tables-save",
    };
    let error = |line: usize, message: &str| FirewallError::IptablesSave {
        source_name: source_name.to_owned(),
        line,
        message: message.to_owned(),
    };

    let mut ruleset = Ruleset::default();
    let mut table: Option<String> = None;
    // Each table's chains by name (the first declared, as a linear search
    // would find it) and its user chains: a kube-proxy host declares
    // thousands, and looking them up rule by rule made reading its listing
    // quadratic (1.6 s of 2.4 for 6,000 rules).
    let mut chain_index: HashMap<String, HashMap<String, usize>> = HashMap::new();
    let mut user_chains: HashMap<String, HashSet<String>> = HashMap::new();
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
            chain_index
                .entry(table.clone())
                .or_default()
                .entry(name.to_owned())
                .or_insert(ruleset.chains.len());
            if base.is_none() {
                user_chains
                    .entry(table.clone())
                    .or_default()
                    .insert(name.to_owned());
            }
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
            let is_user_chain = |name: &str| {
                user_chains
                    .get(table.as_str())
                    .is_some_and(|names| names.contains(name))
            };
            let chain = chain_index
                .get(table.as_str())
                .and_then(|names| names.get(chain_name.as_str()))
                .and_then(|&idx| ruleset.chains.get_mut(idx))
                .ok_or_else(|| error(line_no, "rule for a chain that was not declared"))?;
            let position = chain.rules.len() as u64 + 1;
            let mut rule = rule_from_iptables(words.get(2..).unwrap_or_default(), &is_user_chain);
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
pub(crate) fn split_iptables_words(line: &str) -> Option<Vec<String>> {
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

fn rule_from_iptables(words: &[String], is_user_chain: &dyn Fn(&str) -> bool) -> Rule {
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
                    chain if is_user_chain(chain) => Some(if goto {
                        Verdict::Goto(chain.to_owned())
                    } else {
                        Verdict::Jump(chain.to_owned())
                    }),
                    target if NON_TERMINATING_TARGETS.contains(&target) => None,
                    // Docker publishes a port with `-j DNAT --to-destination
                    // ADDR:PORT`; more than one destination (load balancing
                    // over several) is not followed.
                    "DNAT" => {
                        let targets: Vec<&String> = words
                            .iter()
                            .skip(idx + 2)
                            .collect::<Vec<_>>()
                            .windows(2)
                            .filter(|pair| pair[0] == "--to-destination")
                            .map(|pair| pair[1])
                            .collect();
                        match targets.as_slice() {
                            [one] => Some(Verdict::Dnat(NatTarget::parse(one))),
                            _ => Some(Verdict::Other("DNAT".to_owned())),
                        }
                    }
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
            // conntrack's tuple of the connection's first packet, before any
            // translation (Docker's documentation restricts a published
            // port's sources in DOCKER-USER with these: after the DNAT the
            // packet's own destination is the container's), and the
            // direction of the packet in its connection.
            "--ctorigsrc" | "--ctorigdst" | "--ctorigsrcport" | "--ctorigdstport"
                if module.as_deref() == Some("conntrack") =>
            {
                let (key, value) = match word.as_str() {
                    "--ctorigsrc" => ("original saddr", address_value(&arg)),
                    "--ctorigdst" => ("original daddr", address_value(&arg)),
                    "--ctorigsrcport" => ("original proto-src", port_value(&arg)),
                    _ => ("original proto-dst", port_value(&arg)),
                };
                conditions.push(field_match(Field::Ct(key.into()), negate, value));
                idx += 2;
            }
            "--ctdir" if module.as_deref() == Some("conntrack") => {
                conditions.push(field_match(
                    Field::Ct("direction".into()),
                    negate,
                    Value::Text(arg.to_ascii_lowercase()),
                ));
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
