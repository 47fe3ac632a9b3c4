//! The firewall read live: rulesets loaded into network namespaces this test
//! creates and removes, read back with `read_ruleset` and `firewall_verdict`,
//! must give the same answers as their recorded fixtures (in the firewall
//! crate); and the real-connection oracle, where a client with several source
//! addresses really connects to listeners behind a ruleset in a veth lab and
//! the outcome must match the computed reachability, also through a
//! gateway's nat prerouting `dnat` and forward chain to a host behind it.

#[path = "../../firewall/tests/common/mod.rs"]
mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    fixture, fixture_dir, fixture_in, legacy_fixture, nft_fixture, probe, render_verdict as render,
};
use expect_test::expect;
use perimeter_firewall::reachability::{Probe, Reachability, SourceFate, reachability};
use perimeter_firewall::{Ruleset, verdict_from_nft_json};
use perimeter_host::firewall::{firewall_verdict, read_ruleset};
use perimeter_model::{FirewallVerdict, Protocol};
use perimeter_testlab::{Requirement, connect_all, require};

// ---------------------------------------------------------------------------
// Default deny, live

/// A network namespace made for one test, removed when the test ends.
struct TestNetns {
    name: String,
}

impl TestNetns {
    /// `None` when this machine cannot make namespaces or has no nft (which
    /// loads and lists the rulesets), after [`require`] said so or failed the
    /// test.
    fn new(tag: &str) -> Option<TestNetns> {
        if !require(Requirement::Netns) || !require(Requirement::Tool("nft")) {
            return None;
        }
        let name = format!("perimeter-fw-{tag}-{}", std::process::id());
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip netns add");
        assert!(status.success(), "ip netns add {name} failed ({status})");
        Some(TestNetns { name })
    }

    fn file(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    fn run(&self, args: &[&str]) {
        let status = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .status()
            .expect("ip netns exec runs");
        assert!(status.success(), "{args:?} failed in {}", self.name);
    }

    fn load_nft(&self, fixture_name: &str) {
        let path = fixture_dir("firewall").join(fixture_name);
        self.run(&["nft", "-f", &path.to_string_lossy()]);
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn live_namespace_with_drop_policy() {
    let Some(ns) = TestNetns::new("drop") else {
        return;
    };
    ns.load_nft("drop-policy.nft");
    let (verdict, problems) = firewall_verdict(Some(&ns.file()));
    assert!(problems.is_empty(), "{problems:?}");
    expect![[r#"
        default deny
          nftables: inet filter input (priority 0): every source denied by policy drop
    "#]]
    .assert_eq(&render(&verdict));
}

/// The verdict-map fixtures loaded into a namespace and read back the way an
/// audit reads them give the verdicts of their stored listings.
#[test]
fn live_verdict_map_rulesets_answer_like_their_fixtures() {
    for name in ["vmap-nixos", "vmap-final", "vmap-open"] {
        let Some(ns) = TestNetns::new("vmap") else {
            return;
        };
        ns.load_nft(&format!("{name}.nft"));
        let (verdict, problems) = firewall_verdict(Some(&ns.file()));
        assert!(problems.is_empty(), "{name}: {problems:?}");
        assert_eq!(
            render(&verdict),
            render(&verdict_from_nft_json(&fixture_in(
                "firewall",
                &format!("{name}.json")
            ))),
            "{name}"
        );
    }
}
#[test]
fn live_empty_namespace_is_open() {
    let Some(ns) = TestNetns::new("empty") else {
        return;
    };
    let (verdict, problems) = firewall_verdict(Some(&ns.file()));
    assert!(problems.is_empty(), "{problems:?}");
    expect![[r#"
        open
          no input base chain
    "#]]
    .assert_eq(&render(&verdict));
}

#[test]
fn live_nft_ipv4_and_legacy_ipv6_together_deny() {
    if !require(Requirement::Tool("ip6tables-legacy")) {
        return;
    }
    let Some(ns) = TestNetns::new("mixed") else {
        return;
    };
    ns.load_nft("ip-only.nft");
    ns.run(&[
        "ip6tables-legacy",
        "-A",
        "INPUT",
        "-i",
        "lo",
        "-j",
        "ACCEPT",
    ]);
    ns.run(&["ip6tables-legacy", "-P", "INPUT", "DROP"]);
    let (verdict, problems) = firewall_verdict(Some(&ns.file()));
    assert!(problems.is_empty(), "{problems:?}");
    expect![[r#"
        default deny
          nftables: ip filter input (priority 0): every source denied by policy drop
          iptables-legacy: ip6 filter INPUT (priority 0): every source denied by policy drop
    "#]]
    .assert_eq(&render(&verdict));
}

#[test]
fn missing_namespace_is_unknown() {
    let (verdict, problems) =
        firewall_verdict(Some(Path::new("/run/netns/perimeter-no-such-namespace")));
    let FirewallVerdict::Unknown(reason) = &verdict else {
        panic!("expected unknown, got {verdict:?}");
    };
    assert!(reason.contains("perimeter-no-such-namespace"), "{reason}");
    assert!(!problems.is_empty());
}

#[test]
fn this_namespace_can_be_read_as_root() {
    // Only reads: no rule is ever loaded into the host's own namespace.
    if !require(Requirement::Root) || !require(Requirement::Tool("nft")) {
        return;
    }
    let (verdict, problems) = firewall_verdict(None);
    assert!(problems.is_empty(), "{problems:?}");
    assert!(
        !matches!(verdict, FirewallVerdict::Unknown(_)),
        "{verdict:?}"
    );
}

// ---------------------------------------------------------------------------
// Reachability, live

const NFT_FIXTURES: [(&str, &[&str]); 8] = [
    (
        "allow-list",
        &[
            "tcp/22 192.0.2.1",
            "tcp/22 2001:db8::1",
            "tcp/443 192.0.2.1",
            "udp/60001 192.0.2.1",
        ],
    ),
    (
        "firewalld",
        &[
            "tcp/22 192.0.2.1",
            "tcp/5432 192.0.2.1",
            "tcp/80 192.0.2.1",
            "udp/546 fe80::1",
        ],
    ),
    (
        "jumps-and-sets",
        &[
            "tcp/22 192.0.2.1",
            "tcp/8080 192.0.2.1",
            "tcp/5432 192.0.2.1",
            "tcp/9000 192.0.2.1",
        ],
    ),
    (
        "unknown",
        &["tcp/24 192.0.2.1", "tcp/27 192.0.2.1", "tcp/29 192.0.2.1"],
    ),
    (
        "two-chains",
        &[
            "tcp/22 192.0.2.1",
            "tcp/22 2001:db8::1",
            "tcp/8080 192.0.2.1",
        ],
    ),
    ("loopback-only", &["tcp/22 192.0.2.1"]),
    (
        "nixos",
        &["tcp/22 192.0.2.1", "tcp/8005 192.0.2.1", "tcp/80 192.0.2.1"],
    ),
    (
        "vmaps",
        &[
            "tcp/22 192.0.2.1",
            "tcp/8050 192.0.2.1",
            "tcp/5432 192.0.2.1",
            "tcp/9100 192.0.2.1",
            "udp/53 192.0.2.1",
        ],
    ),
];

fn answers(ruleset: &Ruleset, probes: &[&str]) -> Vec<Reachability> {
    probes
        .iter()
        .map(|p| reachability(ruleset, &probe(p)))
        .collect()
}

/// Each nft fixture loaded into a fresh namespace and read back the way an
/// audit reads it gives the same answers as its stored listing.
#[test]
fn live_nft_rulesets_answer_like_their_fixtures() {
    if !require(Requirement::Netns) || !require(Requirement::Tool("nft")) {
        return;
    }
    for (name, probes) in NFT_FIXTURES {
        let ns = perimeter_testlab::Ns::new("reach").expect("namespace");
        ns.nft(&fixture(&format!("{name}.nft")))
            .unwrap_or_else(|err| panic!("{name}.nft: {err}"));
        let (live, problems, unread) = read_ruleset(Some(&ns.path()));
        assert!(problems.is_empty() && unread.is_empty(), "{problems:?}");
        assert_eq!(
            answers(&live, probes),
            answers(&nft_fixture(name), probes),
            "{name}"
        );
    }
}

#[test]
fn live_legacy_iptables_answers_like_its_fixture() {
    if !require(Requirement::Netns)
        || !require(Requirement::Tool("iptables-legacy-restore"))
        || !require(Requirement::Tool("ip6tables-legacy-restore"))
    {
        return;
    }
    let ns = perimeter_testlab::Ns::new("reach").expect("namespace");
    restore(
        &ns,
        "iptables-legacy-restore",
        &fixture("legacy.iptables-save"),
    );
    restore(
        &ns,
        "ip6tables-legacy-restore",
        &fixture("legacy.ip6tables-save"),
    );
    let (live, problems, unread) = read_ruleset(Some(&ns.path()));
    assert!(problems.is_empty() && unread.is_empty(), "{problems:?}");
    let probes = [
        "tcp/22 192.0.2.1",
        "tcp/443 192.0.2.1",
        "tcp/8050 192.0.2.1",
        "tcp/8443 192.0.2.1",
        "tcp/22 2001:db8::1",
    ];
    assert_eq!(answers(&live, &probes), answers(&legacy_fixture(), &probes));
}

fn restore(ns: &perimeter_testlab::Ns, tool: &str, text: &str) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = ns
        .command(tool)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("{tool}: {err}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).expect("write rules");
    }
    let status = child.wait().expect("wait for restore");
    assert!(status.success(), "{tool} failed in {}", ns.name());
}

// ---------------------------------------------------------------------------
// Oracle: real connections in a lab

/// How the oracle loads a ruleset into the server namespace.
enum Load {
    Nft(&'static str),
    IptablesLegacy(&'static str),
}

const SERVER: &str = "198.18.0.1";
const CLIENT_SOURCES: [&str; 5] = [
    "198.18.0.10",
    "198.18.0.20",
    "198.18.0.130",
    "198.18.0.140",
    "198.18.0.200",
];
const LAB_PORTS: [u16; 5] = [22, 443, 5432, 8080, 9000];

const ORACLE_RULESETS: [(&str, Load); 10] = [
    (
        "allow list",
        Load::Nft(
            "table inet filter {
                chain input {
                    type filter hook input priority filter; policy drop;
                    ct state established,related accept
                    iif lo accept
                    tcp dport 22 ip saddr 198.18.0.0/28 accept
                    tcp dport 443 accept
                }
            }",
        ),
    ),
    (
        "sets, ranges and a trailing reject",
        Load::Nft(
            "table inet filter {
                set ops { type ipv4_addr; elements = { 198.18.0.200 } }
                chain input {
                    type filter hook input priority filter; policy accept;
                    ct state established,related accept
                    ip saddr { 198.18.0.16/28, 198.18.0.128-198.18.0.135 } tcp dport 5432 accept
                    ip saddr @ops tcp dport 22 accept
                    ip saddr != 198.18.0.128/26 tcp dport 9000 accept
                    reject with tcp reset
                }
            }",
        ),
    ),
    (
        "jumps and gotos",
        Load::Nft(
            "table inet filter {
                set blocked { type ipv4_addr; elements = { 198.18.0.20 } }
                chain input {
                    type filter hook input priority filter; policy drop;
                    ct state established,related accept
                    ip saddr @blocked drop
                    tcp dport 22 jump ssh
                    tcp dport 8080 goto web
                    tcp dport 8080 accept
                    tcp dport 443 ip saddr 198.18.0.192/26 accept
                }
                chain ssh {
                    ip saddr 198.18.0.0/25 accept
                    ip saddr 198.18.0.128/26 return
                    accept
                }
                chain web {
                    ip saddr 198.18.0.128/26 return
                    accept
                }
            }",
        ),
    ),
    (
        "two base chains",
        Load::Nft(
            "table inet a {
                chain input {
                    type filter hook input priority filter; policy accept;
                    ip saddr 198.18.0.0/28 drop
                }
            }
            table ip b {
                chain input {
                    type filter hook input priority filter + 10; policy drop;
                    ct state established,related accept
                    ip saddr 198.18.0.0/27 tcp dport { 22, 443 } accept
                    ip saddr 198.18.0.128/25 tcp dport != 9000 accept
                }
            }",
        ),
    ),
    (
        "conntrack map, port map with a jump and a goto, concatenated map",
        Load::Nft(
            "table inet filter {
                chain input {
                    type filter hook input priority filter; policy drop;
                    iif vmap { \"lo\" : accept }
                    ct state vmap { established : accept, related : accept, invalid : drop, new : jump fresh }
                }
                chain fresh {
                    tcp dport vmap { 22 : jump ssh, 443 : accept, 5432 : drop, 8080-9000 : goto web }
                }
                chain ssh {
                    ip saddr 198.18.0.0/28 accept
                }
                chain web {
                    ip saddr . tcp dport vmap { 198.18.0.128/26 . 8080 : accept, 198.18.0.200 . 9000 : accept }
                    ip saddr 198.18.0.16/28 accept
                }
            }",
        ),
    ),
    (
        "source addresses through a named map",
        Load::Nft(
            "table inet filter {
                map sources {
                    type ipv4_addr : verdict
                    flags interval
                    elements = { 198.18.0.0/28 : accept, 198.18.0.20 : drop, 198.18.0.128-198.18.0.143 : jump limited, 198.18.0.200 : continue }
                }
                chain input {
                    type filter hook input priority filter; policy accept;
                    ct state established,related accept
                    ip saddr vmap @sources
                    tcp dport { 22, 5432 } reject with tcp reset
                }
                chain limited {
                    tcp dport 443 accept
                    meta l4proto vmap { tcp : drop }
                }
            }",
        ),
    ),
    (
        "iptables-legacy",
        Load::IptablesLegacy(
            "*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:ADMIN - [0:0]
:WEB - [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -j ADMIN
-A INPUT ! -s 198.18.0.128/26 -p tcp -m multiport --dports 443,9000 -j ACCEPT
-A INPUT -p tcp -m tcp --dport 5000:8999 -g WEB
-A ADMIN -s 198.18.0.0/28 -j ACCEPT
-A ADMIN -s 198.18.0.128/25 -j RETURN
-A ADMIN -j ACCEPT
-A WEB -s 198.18.0.128/27 -p tcp -j REJECT --reject-with tcp-reset
-A WEB -j ACCEPT
COMMIT
",
        ),
    ),
    (
        "ufw-shaped, with address types",
        Load::IptablesLegacy(
            "*filter
:INPUT DROP [0:0]
:ufw-before-input - [0:0]
:ufw-not-local - [0:0]
:ufw-user-input - [0:0]
-A INPUT -j ufw-before-input
-A ufw-before-input -i lo -j ACCEPT
-A ufw-before-input -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A ufw-before-input -j ufw-not-local
-A ufw-before-input -j ufw-user-input
-A ufw-not-local -m addrtype --dst-type LOCAL -j RETURN
-A ufw-not-local -j DROP
-A ufw-user-input -p tcp -m tcp --dport 22 -j ACCEPT
-A ufw-user-input -s 198.18.0.128/26 -p tcp -m tcp --dport 5432 -j ACCEPT
COMMIT
",
        ),
    ),
    (
        "prerouting drops before an open input",
        Load::Nft(
            "table inet filter {
                chain raw_pre {
                    type filter hook prerouting priority raw; policy accept;
                    ip saddr 198.18.0.20 drop
                }
                chain filter_pre {
                    type filter hook prerouting priority filter + 10; policy accept;
                    fib saddr . mark . iif oif missing drop
                    tcp dport 5432 ip saddr != 198.18.0.128/26 drop
                }
                chain input {
                    type filter hook input priority filter; policy accept;
                    tcp dport 9000 ip saddr 198.18.0.140 drop
                }
            }",
        ),
    ),
    (
        "iptables-legacy raw PREROUTING",
        Load::IptablesLegacy(
            "*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -s 198.18.0.200/32 -j DROP
-A PREROUTING -s 198.18.0.128/26 -p tcp -m tcp --dport 443 -j DROP
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p tcp -m tcp --dport 22 -s 198.18.0.0/28 -j DROP
COMMIT
",
        ),
    ),
];

/// For each ruleset: what `reachability` says for every source and port, and
/// whether a real connection from that source gets through. They must agree.
#[test]
fn lab_connections_agree_with_reachability() {
    let tools = [
        "nft",
        "iptables-legacy",
        "ip6tables-legacy",
        "iptables-legacy-restore",
    ];
    if !require(Requirement::Netns) || !tools.into_iter().all(|t| require(Requirement::Tool(t))) {
        return;
    }
    let mut lab = perimeter_testlab::Lab::new().expect("lab");
    let server = lab
        .add_host("srv", &[&format!("{SERVER}/24")])
        .expect("server namespace");
    let client_addresses: Vec<String> = CLIENT_SOURCES.iter().map(|a| format!("{a}/24")).collect();
    let client_refs: Vec<&str> = client_addresses.iter().map(String::as_str).collect();
    let client = lab.add_host("cli", &client_refs).expect("client namespace");

    // Listeners in the server namespace, never accepted.
    let _listeners = server
        .listen_tcp(SERVER.parse().expect("literal"), &LAB_PORTS)
        .expect("listen in the lab");

    let mut n_allowed = 0;
    let mut n_denied = 0;
    for (name, load) in ORACLE_RULESETS {
        server
            .exec("nft", &["flush", "ruleset"])
            .expect("flush nft");
        for tool in ["iptables-legacy", "ip6tables-legacy"] {
            server
                .exec(tool, &["-P", "INPUT", "ACCEPT"])
                .expect("policy");
            server.exec(tool, &["-F"]).expect("flush");
            server.exec(tool, &["-X"]).expect("delete chains");
        }
        match load {
            Load::Nft(text) => server
                .nft(text)
                .unwrap_or_else(|err| panic!("{name}: {err}")),
            Load::IptablesLegacy(text) => restore(&server, "iptables-legacy-restore", text),
        }
        let (ruleset, problems, unread) = read_ruleset(Some(&server.path()));
        assert!(
            problems.is_empty() && unread.is_empty(),
            "{name}: {problems:?}"
        );

        let mut expected = Vec::new();
        for port in LAB_PORTS {
            let probe = Probe {
                protocol: Protocol::Tcp,
                dst: SERVER.parse().expect("literal"),
                dport: port,
            };
            let answer = reachability(&ruleset, &probe);
            for source in CLIENT_SOURCES {
                let source: IpAddr = source.parse().expect("literal");
                let fate = answer.fate_of(source);
                assert_ne!(fate, SourceFate::Unknown, "{name}: {probe} from {source}");
                expected.push(((source, port), fate == SourceFate::Allowed));
            }
        }

        let connected = client
            .enter(|| connect_all(&CLIENT_SOURCES, SERVER, &LAB_PORTS))
            .expect("enter client namespace");
        let mismatches: Vec<String> = expected
            .iter()
            .zip(&connected)
            .filter(|(e, c)| e != c)
            .map(|(((source, port), allowed), _)| {
                format!("{source} -> {port}: reachability says allowed={allowed}")
            })
            .collect();
        assert!(mismatches.is_empty(), "{name}: {mismatches:#?}");
        let allowed: Vec<String> = expected
            .iter()
            .filter(|(_, a)| *a)
            .map(|((source, port), _)| format!("{source}->{port}"))
            .collect();
        eprintln!("{name}: allowed {}", allowed.join(" "));
        // Each ruleset lets some connections through and stops others.
        assert!(
            !allowed.is_empty() && allowed.len() < expected.len(),
            "{name}: {} of {} allowed",
            allowed.len(),
            expected.len()
        );
        n_allowed += allowed.len();
        n_denied += expected.len() - allowed.len();
    }
    // The rulesets were chosen to exercise both answers.
    assert!(
        n_allowed >= 20 && n_denied >= 20,
        "{n_allowed} allowed, {n_denied} denied"
    );
}

// ---------------------------------------------------------------------------
// Oracle through NAT: a plain nftables `dnat` to a host behind the gateway

const GATEWAY: &str = "198.18.0.1";
/// The host behind the gateway, on its own link (`app0` on the gateway).
const BEHIND: &str = "198.18.1.2";
const BEHIND_LINK: &str = "198.18.1.1";
/// Ports of the gateway the clients connect to: one only its input chain
/// judges, one translated for every source, one translated to another port,
/// and one translated for some sources while the others reach the gateway's
/// own listener.
const NAT_PORTS: [u16; 4] = [22, 6379, 8080, 9000];
/// Ports the host behind listens on: 8080 is translated to 80.
const BEHIND_PORTS: [u16; 3] = [80, 6379, 9000];

/// The gateway's ruleset: the input chain drops the published ports, nat
/// prerouting's `dnat` sends them to the host behind, and the forward chain
/// is `forward`.
fn gateway_ruleset(forward: &str) -> String {
    format!(
        "table inet filter {{
            chain input {{
                type filter hook input priority filter; policy drop;
                ct state established,related accept
                iif lo accept
                tcp dport 22 ip saddr 198.18.0.128/26 accept
                tcp dport 9000 ip saddr 198.18.0.0/28 accept
            }}
            chain forward {{
                type filter hook forward priority filter; policy drop;
                ct state established,related accept
                {forward}
            }}
        }}
        table ip nat {{
            chain prerouting {{
                type nat hook prerouting priority dstnat; policy accept;
                tcp dport 6379 dnat to {BEHIND}
                tcp dport 8080 dnat to {BEHIND}:80
                ip saddr 198.18.0.128/25 tcp dport 9000 dnat to {BEHIND}:9000
            }}
        }}"
    )
}

/// The gateway, a client with every address of [`CLIENT_SOURCES`], and the
/// host behind the gateway on a link of its own, with forwarding on in the
/// gateway's namespace only.
fn dnat_lab() -> (
    perimeter_testlab::Lab,
    std::sync::Arc<perimeter_testlab::Ns>,
    std::sync::Arc<perimeter_testlab::Ns>,
    perimeter_testlab::Ns,
) {
    let mut lab = perimeter_testlab::Lab::new().expect("lab");
    let gateway = lab
        .add_host("gw", &[&format!("{GATEWAY}/24")])
        .expect("gateway namespace");
    let client_addresses: Vec<String> = CLIENT_SOURCES.iter().map(|a| format!("{a}/24")).collect();
    let client_refs: Vec<&str> = client_addresses.iter().map(String::as_str).collect();
    let client = lab.add_host("cli", &client_refs).expect("client namespace");

    // The host behind: a veth of its own to the gateway, a route back to the
    // clients through it (a DNAT keeps the source), no other route.
    let behind = perimeter_testlab::Ns::new("behind").expect("namespace behind");
    gateway
        .ip(&[
            "link",
            "add",
            "app0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            behind.name(),
        ])
        .expect("veth to the host behind");
    gateway
        .ip(&["addr", "add", &format!("{BEHIND_LINK}/24"), "dev", "app0"])
        .expect("gateway address on app0");
    gateway.ip(&["link", "set", "app0", "up"]).expect("app0 up");
    behind
        .ip(&["addr", "add", &format!("{BEHIND}/24"), "dev", "eth0"])
        .expect("address behind");
    behind
        .ip(&["link", "set", "eth0", "up"])
        .expect("eth0 up behind");
    behind
        .ip(&["route", "add", "198.18.0.0/24", "via", BEHIND_LINK])
        .expect("route back to the clients");
    // Forwarding in the gateway's namespace only (a namespace's own sysctl).
    gateway
        .exec("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"])
        .expect("forwarding in the gateway namespace");

    (lab, gateway, client, behind)
}

/// A gateway whose input chain drops a port while its nat prerouting chain
/// translates it (plain nftables `dnat`, no container runtime) to a host in a
/// namespace behind it: what the audit's reachability says for the gateway's
/// listeners on those ports (`perimeter_host::audit::collect` in the
/// gateway's namespace) must agree with real connections from a client, once
/// with a forward chain that accepts the translated connections (some only
/// from some sources) and once with one that drops them all.
#[test]
fn lab_dnat_connections_agree_with_reachability() {
    if !require(Requirement::Netns)
        || !require(Requirement::Tool("nft"))
        || !require(Requirement::Tool("sysctl"))
    {
        return;
    }
    let (_lab, gateway, client, behind) = dnat_lab();

    // The gateway's own listeners on every port (a DNAT shadows some of
    // them) and the listeners behind; never accepted, as above.
    let _gateway_listeners = gateway
        .listen_tcp(std::net::Ipv4Addr::UNSPECIFIED.into(), &NAT_PORTS)
        .expect("listen on the gateway");
    let _behind_listeners = behind
        .listen_tcp(BEHIND.parse().expect("literal"), &BEHIND_PORTS)
        .expect("listen behind");

    let cases = [
        (
            "dnat, forward accepts",
            format!(
                "ip daddr {BEHIND} tcp dport {{ 6379, 9000 }} accept
                ip daddr {BEHIND} tcp dport 80 ip saddr 198.18.0.0/28 accept"
            ),
            // (source, port) pairs that connect.
            &[
                ("198.18.0.130", 22),
                ("198.18.0.140", 22),
                ("198.18.0.10", 6379),
                ("198.18.0.20", 6379),
                ("198.18.0.130", 6379),
                ("198.18.0.140", 6379),
                ("198.18.0.200", 6379),
                ("198.18.0.10", 8080),
                ("198.18.0.10", 9000),
                ("198.18.0.130", 9000),
                ("198.18.0.140", 9000),
                ("198.18.0.200", 9000),
            ][..],
            // Ports the input chain drops for sources the forward path lets
            // through.
            &[6379, 8080, 9000][..],
        ),
        (
            "dnat, forward drops",
            String::new(),
            &[
                ("198.18.0.130", 22),
                ("198.18.0.140", 22),
                ("198.18.0.10", 9000),
            ][..],
            &[][..],
        ),
    ];
    for (name, forward, reached, bypassed) in cases {
        gateway
            .exec("nft", &["flush", "ruleset"])
            .expect("flush nft");
        gateway
            .nft(&gateway_ruleset(&forward))
            .unwrap_or_else(|err| panic!("{name}: {err}"));

        let collected = gateway
            .enter(|| {
                perimeter_host::audit::collect(&perimeter_host::audit::AuditOptions {
                    probe_services: false,
                    ..perimeter_host::audit::AuditOptions::default()
                })
            })
            .expect("enter gateway namespace");
        let snapshot = collected.snapshot;
        let mut expected = Vec::new();
        let mut undecided = Vec::new();
        for port in NAT_PORTS {
            let listener = snapshot
                .listeners
                .iter()
                .find(|l| l.protocol == Protocol::Tcp && l.port == port)
                .unwrap_or_else(|| panic!("{name}: the audit saw no listener on {port}"));
            let reach = snapshot.reach_of(listener).unwrap_or_else(|| {
                panic!(
                    "{name}: no reachability for {port}: {:?}",
                    snapshot.problems
                )
            });
            for source in CLIENT_SOURCES {
                let source: IpAddr = source.parse().expect("literal");
                if let Some((_, why)) = reach.unknown.iter().find(|(net, _)| net.contains(&source))
                {
                    undecided.push(format!("{source} -> {port}: {why}"));
                }
                let allowed = reach.allowed.iter().any(|net| net.contains(&source));
                expected.push(((source, port), allowed));
            }
            // Where the input chain drops what the forward chain lets
            // through, the path is kept for `firewall.bypassed`.
            let hidden = reach
                .published
                .iter()
                .any(|path| !path.input_denies.is_empty());
            assert_eq!(
                hidden,
                bypassed.contains(&port),
                "{name}: port {port}: {:#?}",
                reach.published
            );
        }
        eprintln!("{name}: undecided {undecided:#?}");
        assert!(undecided.is_empty(), "{name}: undecided {undecided:#?}");

        let connected = client
            .enter(|| connect_all(&CLIENT_SOURCES, GATEWAY, &NAT_PORTS))
            .expect("enter client namespace");
        // The oracle is what the test meant: the real connections are the
        // ones listed.
        let meant: Vec<((IpAddr, u16), bool)> = connected
            .iter()
            .map(|&((source, port), _)| {
                let listed = reached
                    .iter()
                    .any(|&(s, p)| p == port && s.parse::<IpAddr>().ok() == Some(source));
                ((source, port), listed)
            })
            .collect();
        assert_eq!(connected, meant, "{name}: the lab did not connect as meant");
        let mismatches: Vec<String> = expected
            .iter()
            .zip(&connected)
            .filter(|(e, c)| e != c)
            .map(|(((source, port), allowed), _)| {
                format!("{source} -> {port}: reachability says allowed={allowed}")
            })
            .collect();
        assert!(mismatches.is_empty(), "{name}: {mismatches:#?}");
        eprintln!(
            "{name}: {} of {} connect, as computed",
            reached.len(),
            connected.len()
        );
    }
}

/// The same gateway with nothing listening on it: the ports its DNATs
/// forward are the only open ones, and `ss` shows none of them. The audit
/// (`perimeter_host::audit::collect`) must list each forwarded port as a
/// published port (no container runtime here: a host behind, as a VM would
/// be) with where it goes, and its reach must be exactly the real
/// connections: the forward path's, with the input chain's answer, which
/// leads to no socket, left out. Port 22, which no DNAT names, is not listed.
#[test]
fn lab_ports_forwarded_with_nothing_listening_are_listed_and_agree_with_connections() {
    if !require(Requirement::Netns)
        || !require(Requirement::Tool("nft"))
        || !require(Requirement::Tool("sysctl"))
    {
        return;
    }
    let (_lab, gateway, client, behind) = dnat_lab();
    let _behind_listeners = behind
        .listen_tcp(BEHIND.parse().expect("literal"), &BEHIND_PORTS)
        .expect("listen behind");
    gateway
        .nft(&gateway_ruleset(&format!(
            "ip daddr {BEHIND} tcp dport {{ 6379, 9000 }} accept
            ip daddr {BEHIND} tcp dport 80 ip saddr 198.18.0.0/28 accept"
        )))
        .expect("gateway ruleset");
    let snapshot = gateway
        .enter(|| {
            perimeter_host::audit::collect(&perimeter_host::audit::AuditOptions {
                probe_services: false,
                ..perimeter_host::audit::AuditOptions::default()
            })
        })
        .expect("enter gateway namespace")
        .snapshot;

    let mut listed: Vec<(u16, String)> = snapshot
        .listeners
        .iter()
        .filter(|l| l.protocol == Protocol::Tcp && l.address.is_ipv4())
        .map(|l| {
            let port = snapshot
                .published_port(l)
                .unwrap_or_else(|| panic!("{l:?} is no published port"));
            assert!(port.container.is_none(), "no runtime here: {port:?}");
            (l.port, port.to.clone())
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            (6379, format!("{BEHIND}:6379")),
            (8080, format!("{BEHIND}:80")),
            (9000, format!("{BEHIND}:9000")),
        ],
        "problems: {:?}",
        snapshot.problems
    );

    let mut expected = Vec::new();
    for port in NAT_PORTS {
        let reach = snapshot
            .listeners
            .iter()
            .find(|l| l.protocol == Protocol::Tcp && l.port == port)
            .and_then(|l| snapshot.reach_of(l));
        for source in CLIENT_SOURCES {
            let source: IpAddr = source.parse().expect("literal");
            let allowed = match reach {
                Some(reach) => {
                    assert!(
                        !reach.unknown.iter().any(|(net, _)| net.contains(&source)),
                        "{source} -> {port}: {:?}",
                        reach.unknown
                    );
                    reach.allowed.iter().any(|net| net.contains(&source))
                }
                // Not listed: nothing answers.
                None => false,
            };
            expected.push(((source, port), allowed));
        }
    }
    let connected = client
        .enter(|| connect_all(&CLIENT_SOURCES, GATEWAY, &NAT_PORTS))
        .expect("enter client namespace");
    assert_eq!(expected, connected);
    // Both answers occur: 6379 from everyone, 8080 from one source, 9000
    // from the sources its DNAT takes, 22 from none.
    let n_connected = connected.iter().filter(|(_, c)| *c).count();
    assert!(
        n_connected > 3 && n_connected < connected.len() - 5,
        "{connected:?}"
    );
}
