#![no_main]
//! Firewall listings as perimeter reads them, all on the same bytes: `nft -j
//! list ruleset` JSON and `iptables-save` / `ip6tables-save` output (legacy and
//! nft backends) into the ruleset model, then what the audit asks of the
//! model: the default-deny verdict, and which sources reach a few listeners.
//! A saved rule keeps its line and its 1-based position; an answer's
//! prefixes are of the listener's family; a listing that does not parse has
//! no verdict.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use perimeter_firewall::{self as firewall, AddrFamily, Backend, Family, Ruleset};
use perimeter_firewall::reachability::{self, Probe, SourceFate};
use perimeter_model::{FirewallVerdict, Protocol};

/// Listeners whose reachability is asked: every wildcard, a specific address
/// of each family, TCP and UDP.
const PROBES: [Probe; 4] = [
    Probe {
        protocol: Protocol::Tcp,
        dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dport: 22,
    },
    Probe {
        protocol: Protocol::Udp,
        dst: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        dport: 53,
    },
    Probe {
        protocol: Protocol::Tcp,
        dst: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
        dport: 6379,
    },
    Probe {
        protocol: Protocol::Tcp,
        dst: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        dport: 443,
    },
];

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);

    match firewall::parse_nft_json(&text) {
        Ok(ruleset) => {
            assert_eq!(
                firewall::verdict_from_nft_json(&text),
                firewall::default_deny(&ruleset)
            );
            ask(&ruleset);
        }
        Err(_) => assert!(matches!(
            firewall::verdict_from_nft_json(&text),
            FirewallVerdict::Unknown(_)
        )),
    }

    for backend in [Backend::IptablesLegacy, Backend::IptablesNft] {
        let v4 = firewall::parse_iptables_save(&text, AddrFamily::V4, backend);
        let v6 = firewall::parse_iptables_save(&text, AddrFamily::V6, backend);
        let verdict = firewall::verdict_from_iptables_save(&text, &text, backend);
        match (v4, v6) {
            (Ok(v4), Ok(v6)) => {
                saved_rules(&v4, &text, AddrFamily::V4, backend);
                saved_rules(&v6, &text, AddrFamily::V6, backend);
                let mut both = v4;
                both.extend(v6);
                assert_eq!(verdict, firewall::default_deny(&both));
                ask(&both);
            }
            _ => assert!(matches!(verdict, FirewallVerdict::Unknown(_))),
        }
    }
});

/// What an `iptables-save` listing became: chains of its family and backend,
/// each rule keeping its trimmed line and its position in the chain.
fn saved_rules(ruleset: &Ruleset, text: &str, version: AddrFamily, backend: Backend) {
    let family = match version {
        AddrFamily::V4 => Family::Ip,
        AddrFamily::V6 => Family::Ip6,
    };
    for chain in &ruleset.chains {
        assert_eq!((chain.family, chain.backend), (family, backend));
        for (position, rule) in (1u64..).zip(&chain.rules) {
            assert_eq!(rule.handle, Some(position));
            assert!(text.lines().any(|line| line.trim() == rule.text));
            for condition in &rule.conditions {
                let _ = condition.to_string();
            }
            if let Some(verdict) = &rule.verdict {
                let _ = verdict.to_string();
            }
        }
    }
}

/// The default-deny verdict, the reachability of every probe, and the ports
/// the DNATs forward, each asked as the audit asks it.
fn ask(ruleset: &Ruleset) {
    let _ = firewall::default_deny(ruleset);
    let (forwarded, _) = firewall::forwarded_ports(ruleset, 8, |_| true);
    assert!(forwarded.len() <= 8, "{forwarded:?}");
    for port in &forwarded {
        let v4 = port.family == AddrFamily::V4;
        assert!(port.dst.is_none_or(|dst| dst.is_ipv4() == v4), "{port:?}");
        let dst = port.dst.unwrap_or(if v4 {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        });
        let probe = Probe {
            protocol: port.protocol,
            dst,
            dport: port.port,
        };
        let _ = reachability::published(ruleset, &probe, &[]);
    }
    for probe in &PROBES {
        let answer = reachability::reachability(ruleset, probe);
        let v4 = probe.dst.is_ipv4();
        assert!(
            answer.allowed.iter().all(|net| net.addr().is_ipv4() == v4),
            "{answer:?}"
        );
        assert!(
            answer
                .unknown
                .iter()
                .all(|(net, _)| net.addr().is_ipv4() == v4),
            "{answer:?}"
        );
        if answer.allows_everyone() {
            let source = match probe.dst {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 9)),
            };
            assert_eq!(answer.fate_of(source), SourceFate::Allowed);
        }
        let _ = reachability::describe_sources(&answer.allowed, probe.version());
    }
}
