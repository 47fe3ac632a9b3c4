//! `perimeter scan --udp` against real UDP services in a namespace the test
//! makes, with nmap -sU as the oracle: dnsmasq (DNS), snmpd with the
//! `public` community, memcached with UDP on, ports nobody listens on
//! (closed: ICMP port unreachable), a port nftables drops (open|filtered)
//! and one it rejects with admin-prohibited (filtered). Every address is
//! 198.18.50.1 on the namespace's loopback.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{code, stderr};
use perimeter_testlab::{Daemon, Ns, Requirement, require};
use serde_json::Value;

const TARGET: &str = "198.18.50.1";
const PORTS: &str = "53,161,11211,1000,2000,3000,4000";

fn requirements() -> bool {
    require(Requirement::Root)
        && require(Requirement::Netns)
        && require(Requirement::Tool("nft"))
        && require(Requirement::Tool("/usr/bin/nmap"))
        && require(Requirement::Tool("/usr/sbin/dnsmasq"))
        && require(Requirement::Tool("/usr/sbin/snmpd"))
        && require(Requirement::Tool("/usr/bin/memcached"))
}

/// Waits until `port` is bound for UDP on the target inside `ns`.
fn wait_udp(ns: &Ns, daemon: &mut Daemon, port: u16) {
    let hex = format!(":{port:04X}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let table = ns.exec("cat", &["/proc/net/udp"]).unwrap_or_default();
        if table
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(1))
            .any(|local| local.ends_with(&hex))
        {
            return;
        }
        daemon.ensure_running().expect("the daemon runs");
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing bound udp {port} in time");
}

struct UdpLab {
    ns: Ns,
    _dir: tempfile::TempDir,
    _daemons: Vec<Daemon>,
}

fn lab() -> UdpLab {
    let ns = Ns::new("udpscan").expect("namespace");
    ns.ip(&["addr", "add", &format!("{TARGET}/32"), "dev", "lo"])
        .expect("address");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemons = Vec::new();

    let mut dns = ns
        .spawn(
            "/usr/sbin/dnsmasq",
            &[
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                &format!("--listen-address={TARGET}"),
                "--pid-file=",
                "--port=53",
            ],
        )
        .expect("dnsmasq");
    wait_udp(&ns, &mut dns, 53);
    daemons.push(dns);

    let config = dir.path().join("snmpd.conf");
    std::fs::write(
        &config,
        format!("agentAddress udp:{TARGET}:161\nrocommunity public\n"),
    )
    .expect("snmpd.conf");
    let persistent = dir.path().to_string_lossy().into_owned();
    let mut snmp = ns
        .spawn(
            "/usr/bin/env",
            &[
                &format!("SNMP_PERSISTENT_DIR={persistent}"),
                "MIBS=",
                "/usr/sbin/snmpd",
                "-f",
                "-Lo",
                "-C",
                "-c",
                &config.to_string_lossy(),
            ],
        )
        .expect("snmpd");
    wait_udp(&ns, &mut snmp, 161);
    daemons.push(snmp);

    let mut memcached = ns
        .spawn(
            "/usr/bin/memcached",
            &["-l", TARGET, "-p", "11211", "-U", "11211", "-u", "nobody"],
        )
        .expect("memcached");
    wait_udp(&ns, &mut memcached, 11211);
    daemons.push(memcached);

    ns.nft(&format!(
        "table inet lab {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    ip daddr {TARGET} udp dport 3000 drop\n    ip daddr {TARGET} udp dport 4000 reject with icmp type admin-prohibited\n  }}\n}}\n"
    ))
    .expect("ruleset");
    UdpLab {
        ns,
        _dir: dir,
        _daemons: daemons,
    }
}

fn ours(lab: &UdpLab) -> (BTreeMap<u16, String>, Value) {
    let output = common::run(
        Some(&lab.ns),
        &[
            "scan",
            "-sU",
            "-p",
            PORTS,
            TARGET,
            "--all-states",
            "--no-store",
            "--format",
            "json",
            "--timeout",
            "500ms",
            "--retries",
            "1",
        ],
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let doc: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(doc["scan"]["complete"], true, "{doc}");
    let states = doc["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            assert_eq!(r["protocol"], "udp", "{r}");
            (
                u16::try_from(r["port"].as_u64().expect("port")).expect("a port"),
                r["state"].as_str().expect("state").to_owned(),
            )
        })
        .collect();
    (states, doc)
}

/// nmap -sU's states and service names, from its XML.
fn nmaps(lab: &UdpLab) -> BTreeMap<u16, (String, String)> {
    let xml = lab
        .ns
        .exec(
            "/usr/bin/nmap",
            &[
                "-sU",
                "-n",
                "-Pn",
                "-p",
                PORTS,
                "--max-retries",
                "2",
                "-oX",
                "-",
                TARGET,
            ],
        )
        .expect("nmap runs");
    let mut found = BTreeMap::new();
    for part in xml.split("<port protocol=\"udp\"").skip(1) {
        let attribute = |name: &str| {
            part.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_default()
                .to_owned()
        };
        let port: u16 = attribute("portid").parse().expect("portid");
        let state = part
            .split("<state state=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default()
            .to_owned();
        let service = part
            .split("<service name=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default()
            .to_owned();
        found.insert(port, (state, service));
    }
    found
}

#[test]
fn udp_states_are_nmaps_and_the_exposures_are_found() {
    if !requirements() {
        return;
    }
    let lab = lab();
    let (states, doc) = ours(&lab);
    let nmap = nmaps(&lab);
    let nmap_states: BTreeMap<u16, String> = nmap
        .iter()
        .map(|(port, (state, _))| (*port, state.clone()))
        .collect();
    assert_eq!(states, nmap_states, "perimeter (left) and nmap -sU (right)");
    // Each of the three exposures the issue names.
    let rules: Vec<(u64, String)> = doc["results"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| {
            let port = r["port"].as_u64().unwrap_or_default();
            r["findings"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(move |f| f["rule"].as_str().map(|rule| (port, rule.to_owned())))
        })
        .collect();
    assert!(
        rules.contains(&(161, "exposed.snmp-public".to_owned())),
        "{rules:?}"
    );
    assert!(
        rules.contains(&(11211, "exposed.memcached-udp".to_owned())),
        "{rules:?}"
    );
    // Every service nmap names is named.
    for (port, (state, service)) in &nmap {
        if state != "open" || service.is_empty() {
            continue;
        }
        let ours = doc["results"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["port"] == *port)
            .and_then(|r| r["service"].as_str())
            .unwrap_or_default()
            .to_owned();
        assert!(
            !ours.is_empty(),
            "nmap names {service} on {port}, perimeter nothing"
        );
    }
    // nmap XML out carries the UDP reasons.
    let xml = common::run(
        Some(&lab.ns),
        &[
            "scan",
            "--udp",
            "-p",
            "53,1000",
            TARGET,
            "--all-states",
            "--no-store",
            "--format",
            "xml",
        ],
    );
    let text = common::stdout(&xml);
    assert!(text.contains("protocol=\"udp\" portid=\"53\""), "{text}");
    assert!(text.contains("reason=\"port-unreach\""), "{text}");
}

/// An address on the scanner's own link that nobody holds: ARP fails, and
/// the kernel reports host unreachable (to a socket with `IP_RECVERR`).
/// perimeter calls every port filtered, the address's other ports without a
/// packet, in about the time ARP takes; nmap -sU (root, same link, `-Pn`)
/// finds the host down by ARP and reports no port at all. Beside it, in the
/// same /24, an address that answers at once (the scanner's own, every port
/// closed): its round trips make the network's waits short, and the absent
/// address must still be found unreachable (its scout waits the whole
/// timeout), not called open|filtered after a short silence.
#[test]
fn an_address_nobody_holds_is_filtered_without_waiting_out_its_ports() {
    if !requirements() {
        return;
    }
    let ns = Ns::new("udpdown").expect("namespace");
    for args in [
        &["link", "add", "v0", "type", "veth", "peer", "name", "v1"][..],
        &["addr", "add", "198.18.51.1/24", "dev", "v0"],
        &["link", "set", "v0", "up"],
        &["link", "set", "v1", "up"],
    ] {
        ns.ip(args).expect("link");
    }
    let absent = "198.18.51.2";
    let present = "198.18.51.1";
    let output = common::run(
        Some(&ns),
        &[
            "scan",
            "-sU",
            "--top-ports",
            "100",
            absent,
            present,
            "--all-states",
            "--no-store",
            "--format",
            "json",
        ],
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let doc: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(doc["scan"]["complete"], true, "{doc}");
    let results = doc["results"].as_array().expect("results");
    assert_eq!(results.len(), 200, "{doc}");
    for r in results {
        if r["address"] == absent {
            assert_eq!(r["state"], "filtered", "{r}");
        } else {
            // Closed, unless an ICMP limit kept the answer back.
            assert!(
                r["state"] == "closed" || r["state"] == "open|filtered",
                "{r}"
            );
        }
    }
    assert!(
        results
            .iter()
            .any(|r| r["address"] == present && r["state"] == "closed"),
        "the present address answered: {doc}"
    );
    // The absent address's ports were not asked one by one: its scout
    // found it unreachable, and the other 99 were decided without a
    // datagram (asked, they would have been 100 datagrams at least, beside
    // the present address's 100).
    let n_datagrams = doc["scan"]["n_probes"].as_u64().expect("n_probes");
    assert!(n_datagrams < 150, "{n_datagrams} datagrams");

    let xml = ns
        .exec(
            "/usr/bin/nmap",
            &["-sU", "-n", "-Pn", "-p", "53,161,1000", "-oX", "-", absent],
        )
        .expect("nmap runs");
    assert!(xml.contains("<hosts up=\"0\""), "{xml}");
    assert!(!xml.contains("<port protocol=\"udp\""), "{xml}");
}
