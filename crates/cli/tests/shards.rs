//! End-to-end tests of static shards (issue 11): `perimeter scan --shard K/N`
//! run as three separate jobs, each into its own database, and `perimeter
//! scans merge` combining them, against the real servers of the scan lab
//! (see `scan_lab`): the merge equals one unsharded scan of the same lab and
//! nmap's states, `diff` compares it with the unsharded scan and finds
//! nothing, and a merge with a part missing is stored incomplete and names
//! the part. The refusals of malformed shards need no lab.
//!
//! Packets go only to the lab's namespaces (198.18.0.0/15, fd00:198:18::/64),
//! which have no route beyond the lab bridge. The lab tests need root; without
//! it they say so and pass without scanning (fail, under
//! PERIMETER_TEST_STRICT=1).

mod common;
mod scan_lab;

use std::collections::BTreeMap;
use std::net::{IpAddr, TcpListener};
use std::path::Path;

use common::{code, run, stderr, stdout};
use perimeter_model::PortResult;
use perimeter_store::{SqliteStore, Store};
use perimeter_testlab::{Requirement, require};
use scan_lab::{
    BareLab, PORT_LIST, PORTS, ServiceLab, counted_packets, ip, json_of, json_states, nmap_states,
    perimeter_in, require_service_lab, results,
};
use serde_json::Value;

const SEED: &str = "424242";

/// The flags every scan of these tests shares: every state kept, no
/// identification (the comparison is of states, and identification's
/// timing would only add noise), the lab's ports.
fn scan_args<'a>(db: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "scan",
        "--format",
        "json",
        "--all-states",
        "--no-identify",
        "-p",
        PORTS,
        "--timeout",
        "300ms",
        "--retries",
        "2",
        "--seed",
        SEED,
        "--db",
        db,
    ];
    args.extend_from_slice(extra);
    args.extend(ServiceLab::targets());
    args
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The scans of a database, newest first, as `perimeter scans` lists them.
fn listed_scans(db: &str) -> Vec<Value> {
    let output = run(None, &["scans", "--db", db, "--format", "json"]);
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    json_of(&output)["scans"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A stored scan's results, keyed by (address, port).
fn stored_results(db: &str, scan_id: i64) -> BTreeMap<(IpAddr, u16), PortResult> {
    let store = SqliteStore::open_read_only(Path::new(db)).expect("open the database");
    let (_, results) = store.load_scan(scan_id).expect("load the scan");
    let mut by_port = BTreeMap::new();
    for result in results {
        let previous = by_port.insert((result.address, result.port), result);
        assert!(previous.is_none(), "a port stored twice in scan {scan_id}");
    }
    by_port
}

/// Three shard scans, each into its own database, merged: the union of their
/// results is the unsharded scan's, port for port and state for state, and
/// nmap's; `diff` takes the merged scan for a scan of the whole target set
/// and finds no change from the unsharded one; a merge with a part missing
/// is stored incomplete, names the part, and exits 2.
#[test]
fn three_shards_merged_equal_the_unsharded_scan_and_nmap() {
    if !require_service_lab() || !require(Requirement::Tool("/usr/bin/nmap")) {
        return;
    }
    let lab = ServiceLab::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let shard_dbs: Vec<String> = (0..3)
        .map(|k| path_text(&dir.path().join(format!("shard-{k}.db"))))
        .collect();
    let whole_db = path_text(&dir.path().join("whole.db"));

    // The three parts, as three batch jobs would run them.
    let mut shard_states: Vec<BTreeMap<(IpAddr, u16), String>> = Vec::new();
    for (k, db) in shard_dbs.iter().enumerate() {
        let shard = format!("{k}/3");
        let output = perimeter_in(&lab.scanner, &scan_args(db, &["--shard", &shard]));
        assert_eq!(code(&output), 0, "shard {shard}: {}", stderr(&output));
        let doc = json_of(&output);
        assert_eq!(doc["scan"]["complete"], true, "shard {shard}");
        let states = json_states(results(&doc));
        // 4 targets x 8 ports = 32 pairs: 11, 11 and 10.
        assert_eq!(states.len(), if k < 2 { 11 } else { 10 }, "shard {shard}");
        let stored = listed_scans(db);
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0]["status"], "complete");
        shard_states.push(states);
    }

    // One unsharded scan, with the same seed, for comparison.
    let output = perimeter_in(&lab.scanner, &scan_args(&whole_db, &[]));
    assert_eq!(code(&output), 0, "unsharded: {}", stderr(&output));
    let whole = json_states(results(&json_of(&output)));
    assert_eq!(whole.len(), ServiceLab::targets().len() * PORT_LIST.len());

    // The parts are disjoint and together are the unsharded scan.
    let mut union = BTreeMap::new();
    for states in &shard_states {
        for (port, state) in states {
            assert!(
                union.insert(*port, state.clone()).is_none(),
                "{port:?} scanned by two shards"
            );
        }
    }
    assert_eq!(union, whole, "shards (left) and the unsharded scan (right)");
    let nmaps = nmap_states(&lab.scanner, &ServiceLab::targets(), PORTS);
    assert_eq!(union, nmaps, "shards (left) and nmap (right)");
    assert!(
        union.values().any(|s| s == "open")
            && union.values().any(|s| s == "closed")
            && union.values().any(|s| s == "filtered"),
        "the lab has every state: {union:?}"
    );

    // Merged into the database of the unsharded scan, from the three others.
    let mut merge = vec!["scans", "merge", "--db", &whole_db];
    for db in &shard_dbs {
        merge.extend(["--from", db.as_str()]);
    }
    let output = run(None, &merge);
    assert_eq!(
        code(&output),
        0,
        "stdout: {}\nstderr: {}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        stdout(&output).contains(&format!("merged 3 of 3 shards of seed {SEED}")),
        "{}",
        stdout(&output)
    );
    let stored = listed_scans(&whole_db);
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[0]["status"], "complete");
    let merged_id = stored[0]["id"].as_i64().expect("an id");
    let unsharded_id = stored[1]["id"].as_i64().expect("an id");
    let merged = stored_results(&whole_db, merged_id);
    let merged_states: BTreeMap<(IpAddr, u16), String> = merged
        .iter()
        .map(|(port, result)| (*port, result.state.as_str().to_owned()))
        .collect();
    assert_eq!(merged_states, whole);
    // Each result is the shard's own, whole (findings included).
    let mut shard_results = BTreeMap::new();
    for db in &shard_dbs {
        shard_results.extend(stored_results(db, 1));
    }
    assert_eq!(merged, shard_results);

    // `diff` with no scan named takes the merged scan as the newest complete
    // scan of the target set, and the unsharded one as the previous.
    let output = run(None, &["diff", "--db", &whole_db, "--format", "json"]);
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    let diff = json_of(&output);
    assert_eq!(diff["after"]["id"], merged_id);
    assert_eq!(diff["before"]["id"], unsharded_id);
    assert_eq!(diff["changes"], Value::Array(Vec::new()), "{diff:#}");

    // Named runs give the same merge.
    let explicit_db = path_text(&dir.path().join("explicit.db"));
    let mut merge = vec!["scans", "merge", "--db", &explicit_db];
    let named: Vec<String> = shard_dbs.iter().map(|db| format!("{db}:1")).collect();
    for (db, scan) in shard_dbs.iter().zip(&named) {
        merge.extend(["--from", db.as_str(), "--scan", scan.as_str()]);
    }
    let output = run(None, &merge);
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    assert_eq!(stored_results(&explicit_db, 1), shard_results);

    // A part missing: stored incomplete, named, exit 2, and never the
    // default side of a diff.
    let partial_db = path_text(&dir.path().join("partial.db"));
    let output = run(
        None,
        &[
            "scans",
            "merge",
            "--db",
            &partial_db,
            "--from",
            &shard_dbs[0],
            "--from",
            &shard_dbs[2],
        ],
    );
    assert_eq!(code(&output), 2, "stdout: {}", stdout(&output));
    assert!(
        stderr(&output).contains("shard 1/3 missing"),
        "stderr: {}",
        stderr(&output)
    );
    assert!(
        stdout(&output).contains("INCOMPLETE"),
        "{}",
        stdout(&output)
    );
    let stored = listed_scans(&partial_db);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["status"], "incomplete");
    assert_eq!(stored[0]["complete"], false);
    let partial = stored_results(&partial_db, 1);
    assert_eq!(partial.len(), 21);
    let output = run(None, &["diff", "--db", &partial_db]);
    assert_eq!(code(&output), 2);
    assert!(
        stderr(&output).contains("no complete scan stored yet"),
        "{}",
        stderr(&output)
    );
}

/// Every shard keeps the excludes, whichever technique walks the
/// permutation: across the shards of a connect, a SYN and a UDP scan, an
/// excluded lab host's nftables counter stays at zero, while the shards
/// between them decide each port of the other hosts once.
#[test]
fn excludes_hold_in_every_shard_of_every_technique() {
    if !require(Requirement::Netns) || !require(Requirement::Tool("/usr/sbin/nft")) {
        return;
    }
    let mut lab = BareLab::new();
    let counter = "table inet perimeter_lab {
        chain input {
            type filter hook input priority filter; policy accept;
            ip saddr 198.18.0.1 counter
        }
    }";
    let excluded = lab.host("excl", &["198.18.0.3/15"]);
    let scanned = [
        lab.host("seen2", &["198.18.0.2/15"]),
        lab.host("seen4", &["198.18.0.4/15"]),
    ];
    excluded.nft(counter).expect("excluded host counter");
    for host in &scanned {
        host.nft(counter).expect("scanned host counter");
    }
    let _listener = scanned[0]
        .enter(|| TcpListener::bind("198.18.0.2:22").expect("bind"))
        .expect("enter");
    let _excluded_listener = excluded
        .enter(|| TcpListener::bind("198.18.0.3:22").expect("bind"))
        .expect("enter");

    for technique in [&[][..], &["--syn"][..], &["--udp"][..]] {
        let mut union: BTreeMap<(IpAddr, u16), String> = BTreeMap::new();
        for k in 0..3 {
            let shard = format!("{k}/3");
            let mut args = vec![
                "scan",
                "198.18.0.2-198.18.0.4",
                "--exclude",
                "198.18.0.3",
                "-p",
                "22,80,443",
                "--shard",
                &shard,
                "--seed",
                "7",
                "--format",
                "json",
                "--all-states",
                "--no-store",
                "--no-identify",
                "--timeout",
                "300ms",
            ];
            args.extend_from_slice(technique);
            let output = perimeter_in(&lab.scanner, &args);
            assert_eq!(
                code(&output),
                0,
                "{technique:?} {shard}: {}",
                stderr(&output)
            );
            let doc = json_of(&output);
            assert_eq!(doc["scan"]["complete"], true);
            for (port, state) in json_states(results(&doc)) {
                assert!(
                    union.insert(port, state).is_none(),
                    "{technique:?}: {port:?} in two shards"
                );
            }
            assert_eq!(
                counted_packets(&excluded),
                0,
                "{technique:?} shard {shard} sent the excluded host a packet"
            );
        }
        let expected: Vec<(IpAddr, u16)> = ["198.18.0.2", "198.18.0.4"]
            .into_iter()
            .flat_map(|address| [22, 80, 443].map(|port| (ip(address), port)))
            .collect();
        assert_eq!(
            union.keys().copied().collect::<Vec<_>>(),
            expected,
            "{technique:?}"
        );
        if technique != ["--udp"] {
            assert_eq!(union[&(ip("198.18.0.2"), 22)], "open", "{technique:?}");
            assert_eq!(union[&(ip("198.18.0.4"), 22)], "closed", "{technique:?}");
        }
    }
    for host in &scanned {
        assert!(
            counted_packets(host) >= 9,
            "every technique reached each host"
        );
    }
}

/// Shards are 0-based, at most 65535, and need an explicit seed: anything
/// else is refused before a packet is sent, with exit 2 and a message
/// that says what was meant.
#[test]
fn malformed_shards_are_refused() {
    let refused = |args: &[&str], needle: &str| {
        let output = run(None, args);
        assert_eq!(code(&output), 2, "{args:?}: {}", stderr(&output));
        assert!(
            stderr(&output).contains(needle),
            "{args:?}: expected {needle:?} in: {}",
            stderr(&output)
        );
        assert!(stdout(&output).is_empty(), "{args:?}");
    };
    // Loopback, and never sent anything: each is refused before a scan starts.
    let scan = |shard: &str| {
        vec![
            "scan",
            "--no-store",
            "--seed",
            "1",
            "--shard",
            shard,
            "127.0.0.1",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>()
    };
    for (shard, needle) in [
        (
            "3/3",
            "shard index 3 is out of range for 3 shards: K is 0-based, from 0 to 2",
        ),
        ("0/0", "the shard count N must be at least 1"),
        ("0/65536", "at most 65535 shards, not 65536"),
        ("1", "expected K/N, the 0-based index K of N shards"),
        ("one/3", "expected K/N, the 0-based index K of N shards"),
    ] {
        let args = scan(shard);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&args, needle);
        refused(&args, "invalid value");
    }
    refused(
        &["scan", "--no-store", "--shard", "0/3", "127.0.0.1"],
        "--shard 0/3 needs an explicit --seed: every shard of a scan must walk the same permutation",
    );
    // A merge with nothing to merge.
    let dir = tempfile::tempdir().expect("tempdir");
    let db = path_text(&dir.path().join("empty.db"));
    refused(
        &["scans", "merge", "--db", &db],
        "no shard runs found (scans stored by `perimeter scan --shard K/N`)",
    );
    refused(
        &["scans", "merge", "--db", &db, "--scan", "x"],
        "--scan x: expected a scan id, or FILE:ID",
    );
}
