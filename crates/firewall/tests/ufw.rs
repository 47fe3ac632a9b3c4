//! ufw's standard ruleset (Debian 12's ufw, iptables-nft backend), as the real
//! tool wrote it: `ufw default deny incoming`, `ufw allow from
//! 198.18.99.0/24 to any port 8080`, `ufw allow 443`, `ufw enable` in a lab
//! namespace (tests/fixtures/ufw/generate.sh), then `ufw default allow
//! incoming`. nft's listing shows most of ufw's matches only as xt
//! expressions; read through `iptables-nft-save`, the ruleset evaluates
//! exactly. The same ruleset made live by ufw and checked with real
//! connections is in the cli crate's tests/ufw.rs.

use expect_test::{Expect, expect};
mod common;

use common::{fixture_in, probe, render_verdict};
use perimeter_firewall::reachability::{describe_sources, reachability};
use perimeter_firewall::{
    AddrFamily, Backend, Family, Ruleset, default_deny, iptables_nft_tables, parse_iptables_save,
    parse_nft_json, read_through_iptables,
};

fn fixture(name: &str) -> String {
    fixture_in("ufw", name)
}

/// nft's view of `which` (`deny-incoming`, `allow-incoming`), as it is.
fn nft_view(which: &str) -> Ruleset {
    parse_nft_json(&fixture(&format!("{which}.json"))).expect("fixture parses")
}

/// nft's view with iptables-nft's tables read from the save commands, as
/// `host::firewall` reads a namespace.
fn read_right(which: &str) -> Ruleset {
    let mut ruleset = nft_view(which);
    let tables = iptables_nft_tables(&ruleset);
    let mut saved = parse_iptables_save(
        &fixture(&format!("{which}.iptables-save")),
        AddrFamily::V4,
        Backend::IptablesNft,
    )
    .expect("iptables-save fixture parses");
    saved.extend(
        parse_iptables_save(
            &fixture(&format!("{which}.ip6tables-save")),
            AddrFamily::V6,
            Backend::IptablesNft,
        )
        .expect("ip6tables-save fixture parses"),
    );
    let replaced = read_through_iptables(&mut ruleset, &tables, saved);
    assert_eq!(replaced, tables, "every xt table is read through iptables");
    ruleset
}

/// One line per probe: the sources allowed, and whether any are unknown.
fn check_reach(ruleset: &Ruleset, probes: &[&str], expect: Expect) {
    let mut text = String::new();
    for spec in probes {
        let probe = probe(spec);
        let answer = reachability(ruleset, &probe);
        text.push_str(&format!(
            "{probe}: {}{}\n",
            describe_sources(&answer.allowed, probe.version()),
            if answer.unknown.is_empty() {
                String::new()
            } else {
                format!(
                    "; unknown {} ({})",
                    describe_sources(
                        &answer.unknown.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
                        probe.version()
                    ),
                    answer.unknown.first().map_or("", |(_, r)| r.as_str())
                )
            }
        ));
    }
    expect.assert_eq(&text);
}

const PROBES: [&str; 8] = [
    "tcp/8080 198.18.0.1",
    "udp/8080 198.18.0.1",
    "tcp/443 198.18.0.1",
    "tcp/443 0.0.0.0",
    "tcp/22 198.18.0.1",
    "udp/137 198.18.0.1",
    "tcp/443 fd00:198:18::1",
    "tcp/8080 ::",
];

#[test]
fn xt_tables_are_iptables_nft_s() {
    let tables = iptables_nft_tables(&nft_view("deny-incoming"));
    assert_eq!(
        tables,
        vec![
            (Family::Ip, "filter".to_owned()),
            (Family::Ip6, "filter".to_owned())
        ]
    );
}

#[test]
fn nft_view_alone_cannot_decide() {
    // The bug this fixes: ufw-before-input's conntrack match is an xt
    // expression in nft's listing, and the walk stops at it.
    check_reach(
        &nft_view("deny-incoming"),
        &PROBES[..1],
        expect![[r#"
            tcp/8080 to 198.18.0.1: no source; unknown every source (nftables: ip filter ufw-before-input: rule handle 59 `xt match conntrack counter accept`: `xt match conntrack` cannot be evaluated)
        "#]],
    );
}

#[test]
fn deny_incoming_reads_right() {
    check_reach(
        &read_right("deny-incoming"),
        &PROBES,
        expect![[r#"
            tcp/8080 to 198.18.0.1: 198.18.99.0/24
            udp/8080 to 198.18.0.1: 198.18.99.0/24
            tcp/443 to 198.18.0.1: every source
            tcp/443 to 0.0.0.0: every source
            tcp/22 to 198.18.0.1: no source
            udp/137 to 198.18.0.1: no source
            tcp/443 to [fd00:198:18::1]: every source
            tcp/8080 to [::]: no source
        "#]],
    );
}

#[test]
fn allow_incoming_reads_right() {
    check_reach(
        &read_right("allow-incoming"),
        &PROBES,
        expect![[r#"
            tcp/8080 to 198.18.0.1: every source
            udp/8080 to 198.18.0.1: every source
            tcp/443 to 198.18.0.1: every source
            tcp/443 to 0.0.0.0: every source
            tcp/22 to 198.18.0.1: every source
            udp/137 to 198.18.0.1: every source
            tcp/443 to [fd00:198:18::1]: every source
            tcp/8080 to [::]: every source
        "#]],
    );
}

#[test]
fn default_deny_follows_the_walk() {
    // `default deny incoming`: nothing reaches a port no rule names.
    expect![[r#"
        default deny
          iptables-nft: ip filter INPUT (priority 0): every source denied by policy drop
          iptables-nft: ip6 filter INPUT (priority 0): every source denied by policy drop
    "#]]
    .assert_eq(&render_verdict(&default_deny(&read_right("deny-incoming"))));
    // `default allow incoming`: ufw-not-local ends in a drop, but returns
    // first for every local destination; the walk follows that return.
    expect![[r#"
        open
          IPv4: a new tcp connection to a port no rule names is accepted from every source by iptables-nft: ip filter ufw-track-input: rule 1 `-A ufw-track-input -p tcp -m conntrack --ctstate NEW -j ACCEPT`
          IPv4: a new udp connection to a port no rule names is accepted from every source by iptables-nft: ip filter ufw-track-input: rule 2 `-A ufw-track-input -p udp -m conntrack --ctstate NEW -j ACCEPT`
          IPv6: a new tcp connection to a port no rule names is accepted from every source by iptables-nft: ip6 filter ufw6-track-input: rule 1 `-A ufw6-track-input -p tcp -m conntrack --ctstate NEW -j ACCEPT`
          IPv6: a new udp connection to a port no rule names is accepted from every source by iptables-nft: ip6 filter ufw6-track-input: rule 2 `-A ufw6-track-input -p udp -m conntrack --ctstate NEW -j ACCEPT`
    "#]]
    .assert_eq(&render_verdict(&default_deny(&read_right("allow-incoming"))));
}
