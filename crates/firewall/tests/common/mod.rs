//! Fixture loading shared by the firewall crate's tests and the host crate's
//! live-namespace tests (which include this file by path): the recorded
//! listings under tests/fixtures/, parsed into rulesets.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use perimeter_firewall::reachability::Probe;
use perimeter_firewall::{AddrFamily, Backend, Ruleset, parse_iptables_save, parse_nft_json};
use perimeter_model::{FirewallVerdict, Protocol};

/// tests/fixtures/`kind` of the firewall crate, wherever the including test
/// lives.
pub fn fixture_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../firewall/tests/fixtures")
        .join(kind)
}

pub fn fixture_in(kind: &str, name: &str) -> String {
    let path = fixture_dir(kind).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// A recorded reachability listing.
pub fn fixture(name: &str) -> String {
    fixture_in("reachability", name)
}

pub fn nft_fixture(name: &str) -> Ruleset {
    parse_nft_json(&fixture(&format!("{name}.json")))
        .unwrap_or_else(|err| panic!("{name}.json: {err}"))
}

pub fn legacy_fixture() -> Ruleset {
    let mut ruleset = parse_iptables_save(
        &fixture("legacy.iptables-save"),
        AddrFamily::V4,
        Backend::IptablesLegacy,
    )
    .expect("legacy.iptables-save parses");
    ruleset.extend(
        parse_iptables_save(
            &fixture("legacy.ip6tables-save"),
            AddrFamily::V6,
            Backend::IptablesLegacy,
        )
        .expect("legacy.ip6tables-save parses"),
    );
    ruleset
}

/// `tcp/22 198.18.0.1`, `udp/546 fe80::1`.
pub fn probe(text: &str) -> Probe {
    let (port, dst) = text.split_once(' ').expect("`proto/port address`");
    let (protocol, dport) = port.split_once('/').expect("`proto/port`");
    Probe {
        protocol: Protocol::parse(protocol).expect("tcp or udp"),
        dst: dst.parse().expect("an address"),
        dport: dport.parse().expect("a port"),
    }
}

/// A default-deny verdict as lines: its kind, then its evidence.
pub fn render_verdict(verdict: &FirewallVerdict) -> String {
    let (kind, lines) = match verdict {
        FirewallVerdict::DefaultDeny { evidence } => ("default deny", evidence.clone()),
        FirewallVerdict::Open { evidence } => ("open", evidence.clone()),
        FirewallVerdict::Unknown(reason) => ("unknown", vec![reason.clone()]),
    };
    let mut text = format!("{kind}\n");
    for line in lines {
        text.push_str(&format!("  {line}\n"));
    }
    text
}
