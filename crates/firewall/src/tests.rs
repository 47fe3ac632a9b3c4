//! Parser and default-deny tests over literal listings.

use perimeter_model::FirewallVerdict;

use crate::iptables::split_iptables_words;
use crate::*;

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
    let ruleset = parse_iptables_save(text, AddrFamily::V4, Backend::IptablesLegacy)
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
            let conditions: Vec<String> = r.conditions.iter().map(ToString::to_string).collect();
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
    let err = parse_iptables_save(text, AddrFamily::V4, Backend::IptablesLegacy).map(|_| ());
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
        evidence.iter().any(|e| e.starts_with(
            "IPv6: a new tcp connection to a port no rule names is accepted from every source"
        )),
        "{evidence:?}"
    );
}

#[test]
fn statements_the_schema_does_not_know_become_opaque() {
    // `frobnicate` is no nft statement; the rule survives with an opaque
    // condition, which may accept every connection before the final drop:
    // the verdict is unknown, not a guess from how the chain ends.
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
    let verdict = default_deny(&ruleset);
    assert!(
        matches!(&verdict, FirewallVerdict::Unknown(reason) if reason.contains("`frobnicate` cannot be evaluated")),
        "{verdict:?}"
    );
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
            "IPv4: a new tcp connection to a port no rule names is accepted from every source by \
             nftables: inet t everyone: rule handle 5 `accept`",
            "IPv4: a new udp connection to a port no rule names is accepted from every source by \
             nftables: inet t everyone: rule handle 5 `accept`",
            "IPv6: a new tcp connection to a port no rule names is accepted from every source by \
             nftables: inet t everyone: rule handle 5 `accept`",
            "IPv6: a new udp connection to a port no rule names is accepted from every source by \
             nftables: inet t everyone: rule handle 5 `accept`",
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
    // A map on TCP ports whose keys cover every port drops a TCP port no
    // rule names, but UDP meets the accept policy.
    assert!(!denies(&input_chain(0, "accept", &[DPORT_MAP_DROP])));

    let verdict = verdict_from_nft_json(&input_chain(0, "accept", &[CT_MAP_NEW_DROP]));
    assert_eq!(
        evidence(&verdict),
        vec![
            "nftables: inet t in (priority 0): every source denied by rule handle 2 \
             `ct state vmap { established : accept, new : drop }`"
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
            .any(|e| e.contains("chain a is already being evaluated (a loop)")),
        "{verdict:?}"
    );
}
