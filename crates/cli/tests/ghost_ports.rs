//! No ghost ports: a connect scan of loopback ports nobody listens on, from
//! the same machine, can have the kernel pick the port being scanned as the
//! connection's own source port; the SYN meets itself and the connection
//! "succeeds" (TCP simultaneous open); and two of the scan's own
//! connections whose source and destination ports are each other's meet
//! each other the same way (seen here as 40000 and 40002 both "open").
//! Neither is an open port.
//!
//! The namespace's ephemeral port range (per namespace) is narrowed to the
//! ports scanned, so that the kernel picks a scanned port as the source for
//! about one connection in sixty (5 self-connections in 300 attempts, tried
//! with Python's socket.connect in such a namespace): over the 600 attempts
//! below a self-connection all but surely happens (a scan that calls them
//! open passes with odds of about e^-10), and none may be reported open.

mod common;

use common::{code, run, stderr};
use perimeter_testlab::{Ns, Requirement, require};
use serde_json::Value;

const RANGE: (u16, u16) = (40_000, 40_009);

fn open_ports(ns: &Ns, extra: &[&str]) -> Vec<u64> {
    let ports = format!("{}-{}", RANGE.0, RANGE.1);
    let mut args = vec![
        "scan",
        "127.0.0.1",
        "-p",
        &ports,
        "--profile",
        "fast",
        "--no-store",
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    let output = run(Some(ns), &args);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let doc: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(doc["scan"]["complete"], true);
    doc["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["state"] == "open")
        .filter_map(|r| r["port"].as_u64())
        .collect()
}

#[test]
fn scanning_ports_nobody_listens_on_finds_none_open() {
    if !require(Requirement::Netns) || !require(Requirement::Tool("sysctl")) {
        return;
    }
    let ns = Ns::new("ghost").expect("namespace");
    ns.exec(
        "sysctl",
        &[
            "-q",
            "-w",
            &format!("net.ipv4.ip_local_port_range={} {}", RANGE.0, RANGE.1),
        ],
    )
    .expect("narrow the ephemeral range");
    let range = ns
        .exec("sysctl", &["-n", "net.ipv4.ip_local_port_range"])
        .expect("read it back");
    assert_eq!(
        range.split_whitespace().collect::<Vec<_>>(),
        [RANGE.0.to_string(), RANGE.1.to_string()],
        "the namespace's range did not take"
    );
    for round in 0..60 {
        let open = open_ports(&ns, &[]);
        assert!(
            open.is_empty(),
            "connect scan, round {round}: ghost ports {open:?}"
        );
    }
    if !require(Requirement::Root) {
        return;
    }
    for round in 0..5 {
        let open = open_ports(&ns, &["--syn"]);
        assert!(
            open.is_empty(),
            "SYN scan, round {round}: ghost ports {open:?}"
        );
    }
}
