//! Network-namespace labs (perimeter-testlab): a scanner namespace and target
//! namespaces on a lab bridge with 198.18.0.0/15 and fd00:198:18::/64 addresses
//! and no route beyond it. nftables rules in the targets drop or reject probes
//! so filtered ports and packet loss are real; the scanner runs inside its
//! namespace (its tokio runtime is built there, so its threads inherit it).
//!
//! These tests need root and nft: without them each says so and is skipped,
//! or fails under `PERIMETER_TEST_STRICT=1` (as `scripts/test` runs them).

mod common;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use common::{LoggingTransport, scan, scan_syn};
use perimeter_model::PortState;
use perimeter_scan::{Profile, ScanOptions, no_probes, standard_probes};
use perimeter_testlab::{Lab, Ns, Requirement, require};

const SCANNER: [&str; 2] = ["198.18.0.1/15", "fd00:198:18::1/64"];

fn sock(text: &str) -> SocketAddr {
    text.parse().expect("test socket address")
}

/// Runs `work` on a two-thread runtime built inside `scanner`'s namespace
/// (its threads inherit the namespace).
fn scan_from<T, F, Fut>(scanner: &Ns, work: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    scanner
        .enter(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(work())
        })
        .expect("scan inside the scanner namespace")
}

/// A scanner and a dual-stack target whose nftables make port 2000 silent
/// (drop), 2001 answer an ICMP administratively-prohibited and 2002 a RST;
/// any other port without a listener is closed.
fn states_lab() -> (Lab, Arc<Ns>, Arc<Ns>) {
    let mut lab = Lab::new().expect("lab");
    let scanner = lab.add_host("scan", &SCANNER).expect("scanner host");
    let target = lab
        .add_host("tgt", &["198.18.0.2/15", "fd00:198:18::2/64"])
        .expect("target host");
    target
        .nft(
            "table inet perimeter_lab {
                chain input {
                    type filter hook input priority filter; policy accept;
                    tcp dport 2000 drop
                    tcp dport 2001 reject with icmpx type admin-prohibited
                    tcp dport 2002 reject with tcp reset
                }
            }",
        )
        .expect("target ruleset");
    (lab, scanner, target)
}

/// Binds `n` listeners on `address` (port 0) inside `ns`; they stay open, and
/// the kernel completes handshakes into their backlog without an accept.
fn listeners(ns: &Ns, address: &'static str, n: usize) -> Vec<TcpListener> {
    ns.enter(move || {
        (0..n)
            .map(|_| TcpListener::bind(address).expect("bind in the lab"))
            .collect::<Vec<_>>()
    })
    .expect("enter the target namespace")
}

fn options(profile: Profile) -> ScanOptions {
    ScanOptions {
        seed: Some(5),
        identify: false,
        ..ScanOptions::new(profile)
    }
}

/// The packets the nftables `counter` on the rule for `tcp dport PORT` in
/// `chain input` of table `perimeter_lab` has seen.
fn counted_packets_to(ns: &Ns, port: u16) -> u64 {
    let listing = ns
        .exec("nft", &["list", "chain", "inet", "perimeter_lab", "input"])
        .expect("list the counters");
    let rule = listing
        .lines()
        .find(|line| line.contains(&format!("dport {port} ")))
        .expect("a rule for the port");
    rule.split("counter packets ")
        .nth(1)
        .and_then(|after| after.split_whitespace().next()?.parse().ok())
        .expect("a packet count")
}

/// The packets an nftables `counter` in `chain input` of table `perimeter_lab`
/// has seen.
fn counted_packets(ns: &Ns) -> u64 {
    let listing = ns
        .exec("nft", &["list", "chain", "inet", "perimeter_lab", "input"])
        .expect("list the counter");
    let after = listing
        .split("counter packets ")
        .nth(1)
        .expect("the chain has a counter");
    after
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a packet count")
}

#[test]
fn lab_port_states_are_exact() {
    if !require(Requirement::Netns) || !require(Requirement::Tool("nft")) {
        return;
    }
    let (_lab, scanner, target) = states_lab();
    let v4 = listeners(&target, "198.18.0.2:0", 2);
    let v6 = listeners(&target, "[fd00:198:18::2]:0", 1);
    let open: Vec<SocketAddr> = v4
        .iter()
        .chain(&v6)
        .map(|l| l.local_addr().expect("addr"))
        .collect();
    let ports: Vec<String> = open
        .iter()
        .map(|a| a.port())
        .chain([2000, 2001, 2002, 2003])
        .map(|p| p.to_string())
        .collect();
    let ports = ports.join(",");

    let transport = LoggingTransport::default();
    let mut opts = options(Profile::Normal);
    opts.timeout = Some(Duration::from_millis(300));
    opts.retries = Some(2);
    let scan_transport = transport.clone();
    let finished = scan_from(&scanner, move || async move {
        scan(
            &scan_transport,
            &["198.18.0.2", "fd00:198:18::2"],
            &[],
            &ports,
            opts,
            Arc::new(no_probes),
        )
        .await
    });

    // Every (address, port) pair is decided: 2 addresses × 7 ports.
    assert_eq!(finished.results.len(), 14);
    for address in &open {
        assert_eq!(finished.state(*address), Some(PortState::Open), "{address}");
    }
    for ip in ["198.18.0.2", "[fd00:198:18::2]"] {
        let at = |port: u16| sock(&format!("{ip}:{port}"));
        assert_eq!(
            finished.state(at(2000)),
            Some(PortState::Filtered),
            "{ip} dropped"
        );
        assert_eq!(
            finished.state(at(2001)),
            Some(PortState::Filtered),
            "{ip} icmp"
        );
        assert_eq!(
            finished.state(at(2002)),
            Some(PortState::Closed),
            "{ip} reset"
        );
        assert_eq!(
            finished.state(at(2003)),
            Some(PortState::Closed),
            "{ip} nothing"
        );
        // Dropped: the first try and two retries.
        assert_eq!(transport.attempts_to(at(2000)), 3, "{ip}:2000");
    }
    // An ICMP unreachable is an answer, so it decides at once. (Linux reports
    // the ICMPv6 one only when the SYN is retransmitted, a second later, which
    // is past this scan's 300 ms timeout: there the port is filtered by silence.)
    assert_eq!(transport.attempts_to(sock("198.18.0.2:2001")), 1);
    assert!(finished.outcome.info.complete);
}

/// The SYN scan against the same lab: a SYN-ACK is open, a RST closed, an
/// ICMP unreachable filtered at once, silence filtered after the retries,
/// IPv4 and IPv6. The target's nftables count the SYNs each port got: one
/// for the port that answers with an ICMP error (it can only have been read
/// by the ICMP reader: silence would have been retried), the first try and
/// both retries for the silent one.
#[test]
fn lab_syn_scan_reads_every_kind_of_answer() {
    if !require(Requirement::Netns) || !require(Requirement::Tool("nft")) {
        return;
    }
    let mut lab = Lab::new().expect("lab");
    let scanner = lab.add_host("scan", &SCANNER).expect("scanner host");
    let target = lab
        .add_host("tgt", &["198.18.0.2/15", "fd00:198:18::2/64"])
        .expect("target host");
    target
        .nft(
            "table inet perimeter_lab {
                chain input {
                    type filter hook input priority filter; policy accept;
                    tcp dport 2000 counter drop
                    tcp dport 2001 counter reject with icmpx type admin-prohibited
                    tcp dport 2002 reject with tcp reset
                }
            }",
        )
        .expect("target ruleset");
    let v4 = listeners(&target, "198.18.0.2:0", 1);
    let v6 = listeners(&target, "[fd00:198:18::2]:0", 1);
    let open = [
        v4[0].local_addr().expect("addr"),
        v6[0].local_addr().expect("addr"),
    ];
    let ports = format!("{},{},2000-2003", open[0].port(), open[1].port());
    let mut opts = options(Profile::Normal);
    opts.timeout = Some(Duration::from_millis(300));
    opts.retries = Some(2);
    let finished = scan_from(&scanner, move || async move {
        scan_syn(
            &LoggingTransport::default(),
            &["198.18.0.2", "fd00:198:18::2"],
            &[],
            &ports,
            opts,
            Arc::new(no_probes),
        )
        .await
    });
    for (ip, open) in [("198.18.0.2", open[0]), ("[fd00:198:18::2]", open[1])] {
        let at = |port: u16| sock(&format!("{ip}:{port}"));
        assert_eq!(finished.state(open), Some(PortState::Open), "{open}");
        assert_eq!(
            finished.state(at(2000)),
            Some(PortState::Filtered),
            "{ip} dropped"
        );
        assert_eq!(
            finished.state(at(2001)),
            Some(PortState::Filtered),
            "{ip} icmp"
        );
        assert_eq!(
            finished.state(at(2002)),
            Some(PortState::Closed),
            "{ip} reset"
        );
        assert_eq!(
            finished.state(at(2003)),
            Some(PortState::Closed),
            "{ip} nothing"
        );
    }
    // Both families: three SYNs each to the silent port, one to the
    // refusing one.
    assert_eq!(counted_packets_to(&target, 2000), 6);
    assert_eq!(counted_packets_to(&target, 2001), 2);
    assert!(finished.outcome.info.complete);
    assert_eq!(finished.outcome.counts.open, 2);
}

/// Excluded hosts see no packet at all from the scanner: an nftables counter on
/// each host counts every packet from the scanner's address.
#[test]
fn lab_excluded_host_sees_no_packet() {
    excluded_host_sees_no_packet(false);
}

/// The same with SYNs from raw sockets: the senders claim from the same
/// target set.
#[test]
fn lab_excluded_host_sees_no_syn() {
    excluded_host_sees_no_packet(true);
}

fn excluded_host_sees_no_packet(syn: bool) {
    if !require(Requirement::Netns) || !require(Requirement::Tool("nft")) {
        return;
    }
    let mut lab = Lab::new().expect("lab");
    let scanner = lab.add_host("scan", &SCANNER).expect("scanner host");
    let counter = "table inet perimeter_lab {
        chain input {
            type filter hook input priority filter; policy accept;
            ip saddr 198.18.0.1 meta l4proto tcp counter
        }
    }";
    let excluded = lab
        .add_host("excl", &["198.18.0.3/15"])
        .expect("excluded host");
    let scanned = lab
        .add_host("seen", &["198.18.0.4/15"])
        .expect("scanned host");
    excluded.nft(counter).expect("excluded counter");
    scanned.nft(counter).expect("scanned counter");
    let _excluded_listeners = listeners(&excluded, "198.18.0.3:22", 1);
    let _scanned_listeners = listeners(&scanned, "198.18.0.4:22", 1);

    let transport = LoggingTransport::default();
    let scan_transport = transport.clone();
    let finished = scan_from(&scanner, move || async move {
        let (targets, excludes) = (&["198.18.0.2-198.18.0.5"], &["198.18.0.3"]);
        let (ports, opts) = ("22,80,443", options(Profile::Fast));
        if syn {
            scan_syn(
                &scan_transport,
                targets,
                excludes,
                ports,
                opts,
                Arc::new(no_probes),
            )
            .await
        } else {
            scan(
                &scan_transport,
                targets,
                excludes,
                ports,
                opts,
                Arc::new(no_probes),
            )
            .await
        }
    });
    assert_eq!(counted_packets(&excluded), 0);
    assert!(counted_packets(&scanned) >= 3);
    assert_eq!(finished.state(sock("198.18.0.4:22")), Some(PortState::Open));
    assert_eq!(
        finished.state(sock("198.18.0.4:80")),
        Some(PortState::Closed)
    );
    assert!(
        transport
            .attempts()
            .iter()
            .all(|a| a.ip().to_string() != "198.18.0.3")
    );
    // .2 and .5 have nobody behind them: no ARP answer, so no answer at all.
    assert_eq!(
        finished.state(sock("198.18.0.2:22")),
        Some(PortState::Filtered)
    );
    assert_eq!(finished.results.len(), 9);
}

/// 20 % of TCP packets into the target are dropped; with retries every port is
/// still decided right, without them some are lost.
#[test]
fn lab_retries_recover_from_packet_loss() {
    if !require(Requirement::Netns) || !require(Requirement::Tool("nft")) {
        return;
    }
    let mut lab = Lab::new().expect("lab");
    let scanner = lab.add_host("scan", &SCANNER).expect("scanner host");
    let target = lab
        .add_host("tgt", &["198.18.0.2/15"])
        .expect("target host");
    let held = listeners(&target, "198.18.0.2:0", 100);
    let open: Vec<SocketAddr> = held.iter().map(|l| l.local_addr().expect("addr")).collect();
    // Ephemeral listener ports are above 32767, so 3000-3099 are closed.
    let closed: Vec<SocketAddr> = (3000..3100)
        .map(|p| sock(&format!("198.18.0.2:{p}")))
        .collect();
    let ports: Vec<String> = open
        .iter()
        .chain(&closed)
        .map(|a| a.port().to_string())
        .collect();
    let ports = ports.join(",");
    target
        .nft(
            "table inet perimeter_lab {
                chain input {
                    type filter hook input priority filter; policy accept;
                    meta l4proto tcp numgen random mod 100 < 20 drop
                }
            }",
        )
        .expect("lossy ruleset");

    let lossy_scan = |retries: u32| {
        let ports = ports.clone();
        let mut opts = options(Profile::Normal);
        opts.timeout = Some(Duration::from_millis(250));
        opts.retries = Some(retries);
        opts.seed = Some(u64::from(retries));
        scan_from(&scanner, move || async move {
            scan(
                &LoggingTransport::default(),
                &["198.18.0.2"],
                &[],
                &ports,
                opts,
                Arc::new(no_probes),
            )
            .await
        })
    };

    // Without retries, a fifth of first SYNs vanish: of 200 ports, all surviving
    // has a probability of 0.8^200, about 4e-20.
    let unretried = lossy_scan(0);
    let wrong = open
        .iter()
        .chain(&closed)
        .filter(|a| unretried.state(**a) == Some(PortState::Filtered))
        .count();
    assert!(wrong > 0, "no loss seen without retries");

    // With eight retries a port is lost only when nine SYNs in a row are
    // dropped: 0.2^9 per port, about 1e-4 for all 200.
    let retried = lossy_scan(8);
    for address in &open {
        assert_eq!(retried.state(*address), Some(PortState::Open), "{address}");
    }
    for address in &closed {
        assert_eq!(
            retried.state(*address),
            Some(PortState::Closed),
            "{address}"
        );
    }
    eprintln!("20% loss: {wrong} of 200 ports misjudged without retries, 0 with 8");
}

/// Real daemons in the target namespace, identified by `perimeter-probe`:
/// Redis on its own port and on 2000, a port that suggests nothing (the
/// banner wait is not waited out there, and Redis is still named), and
/// memcached.
#[test]
fn lab_identifies_real_services() {
    if !require(Requirement::Netns)
        || !require(Requirement::Tool("redis-server"))
        || !require(Requirement::Tool("memcached"))
    {
        return;
    }
    let mut lab = Lab::new().expect("lab");
    let scanner = lab.add_host("scan", &SCANNER).expect("scanner host");
    let target = lab
        .add_host("tgt", &["198.18.0.2/15"])
        .expect("target host");
    let _redis = target
        .spawn(
            "redis-server",
            &[
                "--port",
                "6379",
                "--bind",
                "198.18.0.2",
                "--protected-mode",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
        )
        .expect("redis-server");
    // And one on a port that suggests nothing: named all the same.
    let _redis_elsewhere = target
        .spawn(
            "redis-server",
            &[
                "--port",
                "2000",
                "--bind",
                "198.18.0.2",
                "--protected-mode",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
        )
        .expect("redis-server on 2000");
    let _memcached = target
        .spawn(
            "memcached",
            &["-u", "nobody", "-l", "198.18.0.2", "-p", "11211", "-U", "0"],
        )
        .expect("memcached");
    let redis = sock("198.18.0.2:6379");
    let redis_elsewhere = sock("198.18.0.2:2000");
    let memcached = sock("198.18.0.2:11211");
    target
        .wait_tcp(redis, Duration::from_secs(10))
        .expect("redis up");
    target
        .wait_tcp(redis_elsewhere, Duration::from_secs(10))
        .expect("redis on 2000 up");
    target
        .wait_tcp(memcached, Duration::from_secs(10))
        .expect("memcached up");

    let mut opts = options(Profile::Normal);
    opts.identify = true;
    opts.banner_wait = Some(Duration::from_millis(500));
    let finished = scan_from(&scanner, move || async move {
        scan(
            &LoggingTransport::default(),
            &["198.18.0.2"],
            &[],
            "6379,11211,22,2000",
            opts,
            standard_probes(),
        )
        .await
    });
    assert_eq!(finished.service(redis).as_deref(), Some("redis"));
    assert_eq!(finished.service(redis_elsewhere).as_deref(), Some("redis"));
    assert_eq!(finished.service(memcached).as_deref(), Some("memcached"));
    let rules = |address: SocketAddr| -> Vec<String> {
        finished.results[&address]
            .findings
            .iter()
            .map(|f| f.rule.clone())
            .collect()
    };
    assert_eq!(rules(redis), ["exposed.redis-noauth"]);
    assert_eq!(rules(redis_elsewhere), ["exposed.redis-noauth"]);
    assert_eq!(rules(memcached), ["exposed.memcached"]);
    assert_eq!(
        finished.results[&redis].findings[0].subject,
        "198.18.0.2:6379"
    );
    assert_eq!(
        finished.state(sock("198.18.0.2:22")),
        Some(PortState::Closed)
    );
}
