//! End-to-end tests of `perimeter scan`, `perimeter scans` and `perimeter diff`:
//! the real binary, run inside a scanner namespace, against real servers in
//! target namespaces on a lab bridge, all created and removed by each test
//! (see `scan_lab`). nmap, run from the same scanner namespace on the same lab,
//! is the oracle for open, closed and filtered. No packet leaves the lab: its
//! namespaces have no route beyond the bridge.
//!
//! These need root (namespaces, daemons, nftables); without it they say so
//! and pass without scanning.

mod common;
mod scan_lab;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, TcpListener};
use std::process::Command;

use common::{code, stderr, stdout};
use perimeter_testlab::{Ns, Requirement, require};
use scan_lab::{
    BareLab, DB, DB_V6, FW, PORT_LIST, PORTS, ServiceLab, Streaming, WEB, counted_packets,
    installed_version, ip, json_of, json_states, nmap_states, nmap_states_by, parse_xml,
    perimeter_in, require_service_lab, result_at, results, rules_of, start_http, start_redis,
    xml_states,
};
use serde_json::Value;

/// A temporary history database (never the user's).
fn temp_db() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("scans.db").to_string_lossy().into_owned();
    (dir, db)
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// On a lab of open (real servers), closed (no listener) and filtered
/// (nftables drop and ICMP reject, and a default-drop host) ports, over IPv4
/// and IPv6, perimeter's states are exactly nmap's.
#[test]
fn port_states_equal_nmaps_on_the_same_lab() {
    if !require_service_lab() || !require(Requirement::Tool("/usr/bin/nmap")) {
        return;
    }
    let lab = ServiceLab::start();
    let targets = ServiceLab::targets();
    let mut args = vec![
        "scan",
        "--format",
        "json",
        "--all-states",
        "--no-store",
        "-p",
        PORTS,
        "--timeout",
        "300ms",
        "--retries",
        "2",
    ];
    args.extend(targets);
    let output = perimeter_in(&lab.scanner, &args);
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    let doc = json_of(&output);
    assert_eq!(doc["schema"], "perimeter.scan/1");
    assert_eq!(doc["scan"]["complete"], true);
    let ours = json_states(results(&doc));
    let nmaps = nmap_states(&lab.scanner, &targets, PORTS);

    // Every (address, port) is decided, once, by both.
    assert_eq!(ours.len(), targets.len() * PORT_LIST.len());
    assert_eq!(
        ours,
        nmaps,
        "perimeter (left) and nmap (right) disagree; perimeter said on stderr: {}",
        stderr(&output)
    );

    // And the lab is what it is meant to be, so the agreement is not vacuous:
    // all three states occur, on the ports the lab put them on.
    let expected_open: BTreeSet<(IpAddr, u16)> = [
        (WEB, 7379),
        (WEB, 8080),
        (WEB, 11211),
        (DB, 22),
        (DB, 6379),
        (DB_V6, 6379),
        (FW, 6379),
    ]
    .into_iter()
    .map(|(a, p)| (ip(a), p))
    .collect();
    let in_state = |state: &str| -> BTreeSet<(IpAddr, u16)> {
        ours.iter()
            .filter(|(_, s)| *s == state)
            .map(|(k, _)| *k)
            .collect()
    };
    assert_eq!(in_state("open"), expected_open);
    let mut expected_filtered: BTreeSet<(IpAddr, u16)> =
        [(DB, 9000), (DB, 9001), (DB_V6, 9000), (DB_V6, 9001)]
            .into_iter()
            .map(|(a, p)| (ip(a), p))
            .collect();
    expected_filtered.extend(
        PORT_LIST
            .iter()
            .filter(|p| **p != 6379)
            .map(|p| (ip(FW), *p)),
    );
    assert_eq!(in_state("filtered"), expected_filtered);
    assert_eq!(
        in_state("closed").len(),
        ours.len() - expected_open.len() - expected_filtered.len()
    );
    assert_eq!(doc["summary"]["open"], expected_open.len());
    assert_eq!(doc["summary"]["filtered"], expected_filtered.len());
}

/// The SYN scan (`--syn`, a raw socket) on the same lab: its states are
/// exactly nmap's SYN scan's (`-sS`) and the connect scan's, open ports are
/// still identified (over ordinary connections), and the XML says `syn`.
#[test]
fn syn_scan_states_equal_nmaps_syn_scan() {
    if !require_service_lab() || !require(Requirement::Tool("/usr/bin/nmap")) {
        return;
    }
    let lab = ServiceLab::start();
    let targets = ServiceLab::targets();
    let xml_dir = tempfile::tempdir().expect("tempdir");
    let xml_path = xml_dir.path().join("syn.xml");
    let xml_arg = xml_path.to_string_lossy().into_owned();
    let mut args = vec![
        "scan",
        "--syn",
        "--format",
        "json",
        "--all-states",
        "--no-store",
        "-p",
        PORTS,
        "--timeout",
        "300ms",
        "--retries",
        "2",
        "-X",
        &xml_arg,
    ];
    args.extend(targets);
    let output = perimeter_in(&lab.scanner, &args);
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    let doc = json_of(&output);
    let ours = json_states(results(&doc));
    assert_eq!(ours.len(), targets.len() * PORT_LIST.len());
    let nmap_syn = nmap_states_by(&lab.scanner, "-sS", &targets, PORTS);
    assert_eq!(
        ours,
        nmap_syn,
        "perimeter --syn (left) and nmap -sS (right) disagree; stderr: {}",
        stderr(&output)
    );
    // The lab's open ports, as the connect scan test lists them, are open.
    let open: BTreeSet<(IpAddr, u16)> = ours
        .iter()
        .filter(|(_, state)| *state == "open")
        .map(|(key, _)| *key)
        .collect();
    assert!(open.contains(&(ip(DB), 6379)) && open.contains(&(ip(DB_V6), 6379)));
    assert!(open.contains(&(ip(WEB), 7379)) && open.contains(&(ip(FW), 6379)));
    assert_eq!(open.len(), 7, "{open:?}");
    // Identification still runs on the open ports: the Redis without a
    // password is found as such.
    let redis = result_at(&doc, WEB, 7379);
    assert_eq!(redis["service"], "redis", "{redis}");
    assert!(
        rules_of(redis).contains(&"exposed.redis-noauth".to_owned()),
        "{redis}"
    );
    assert_eq!(doc["scan"]["options"]["technique"], "syn");
    let xml = std::fs::read_to_string(&xml_path).expect("the XML was written");
    assert!(xml.contains(r#"<scaninfo type="syn""#), "{xml}");
}

/// Services are named by what they answer (Redis on 7379 too),
/// versions read off the wire match the installed programs, and the findings
/// per open port are exactly these.
#[test]
fn findings_name_services_and_flag_the_unauthenticated_ones() {
    if !require_service_lab() {
        return;
    }
    let redis_version = installed_version("/usr/bin/redis-server", &["--version"], "v=");
    let memcached_version = installed_version("/usr/bin/memcached", &["-V"], "memcached ");
    let ssh_version = installed_version("/usr/bin/ssh", &["-V"], "OpenSSH_");
    let http_version = installed_version(
        "/usr/bin/python3",
        &["-c", "import http.server; print(http.server.__version__)"],
        "",
    );
    let lab = ServiceLab::start();
    let mut args = vec![
        "scan",
        "--format",
        "json",
        "--no-store",
        "-p",
        PORTS,
        "--timeout",
        "300ms",
    ];
    args.extend(ServiceLab::targets());
    let output = perimeter_in(&lab.scanner, &args);
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    let doc = json_of(&output);

    // Without --all-states only open ports are reported: exactly these, with
    // exactly these findings.
    let findings: BTreeMap<(IpAddr, u16), Vec<String>> = results(&doc)
        .iter()
        .map(|r| {
            assert_eq!(r["state"], "open", "{r:#}");
            let address = ip(r["address"].as_str().expect("address"));
            let port = r["port"].as_u64().and_then(|p| u16::try_from(p).ok());
            ((address, port.expect("port")), rules_of(r))
        })
        .collect();
    let expected: BTreeMap<(IpAddr, u16), Vec<String>> = [
        (WEB, 7379, "exposed.redis-noauth"),
        (WEB, 8080, "exposed.service"),
        (WEB, 11211, "exposed.memcached"),
        (DB, 22, "exposed.service"),
        (DB, 6379, "exposed.service"),
        (DB_V6, 6379, "exposed.service"),
        (FW, 6379, "exposed.redis-noauth"),
    ]
    .into_iter()
    .map(|(a, p, rule)| ((ip(a), p), strings(&[rule])))
    .collect();
    assert_eq!(findings, expected);
    assert_eq!(results(&doc).len(), 7);
    // The summary still counts every port the scan decided, kept or not: the
    // same totals as the --all-states scan of the same lab (first test).
    let n_pairs = ServiceLab::targets().len() * PORT_LIST.len();
    let summary = &doc["summary"];
    assert_eq!(summary["open"], 7, "{summary}");
    let filtered = summary["filtered"].as_u64().expect("filtered");
    let closed = summary["closed"].as_u64().expect("closed");
    assert_eq!(filtered, 4 + (PORT_LIST.len() as u64 - 1), "{summary}");
    assert_eq!(7 + filtered + closed, n_pairs as u64, "{summary}");

    // What each open port answers as: service, product, version (where the
    // server gives one), auth state, and the severity of its one finding.
    let answers = |address: &str, port: u16| -> Value {
        let r = result_at(&doc, address, port);
        serde_json::json!({
            "service": r["service"],
            "product": r["product"],
            "version": r["version"],
            "auth": r["auth"],
            "severity": r["findings"][0]["severity"],
        })
    };
    let expect =
        |service: &str, product: &str, version: Option<&str>, auth: &str, severity: &str| {
            serde_json::json!({
                "service": service,
                "product": product,
                "version": version,
                "auth": auth,
                "severity": severity,
            })
        };
    let redis_noauth = expect("redis", "Redis", Some(&redis_version), "none", "critical");
    assert_eq!(
        answers(WEB, 7379),
        redis_noauth,
        "found by its answer on 7379"
    );
    assert_eq!(answers(FW, 6379), redis_noauth);
    // With requirepass, INFO is refused: no version to be had, and no
    // unauthenticated finding.
    let redis_auth = expect("redis", "Redis", None, "required", "info");
    assert_eq!(answers(DB, 6379), redis_auth);
    assert_eq!(answers(DB_V6, 6379), redis_auth);
    assert_eq!(
        answers(WEB, 11211),
        expect(
            "memcached",
            "memcached",
            Some(&memcached_version),
            "none",
            "high"
        )
    );
    assert_eq!(
        answers(DB, 22),
        expect("ssh", "OpenSSH", Some(&ssh_version), "unknown", "info")
    );
    assert_eq!(
        answers(WEB, 8080),
        expect(
            "http",
            "SimpleHTTPServer",
            Some(&http_version),
            "unknown",
            "info"
        )
    );
    for (address, port) in expected.keys() {
        let finding = &result_at(&doc, &address.to_string(), *port)["findings"][0];
        let subject = std::net::SocketAddr::new(*address, *port).to_string();
        assert_eq!(finding["subject"], subject.as_str());
        assert!(
            finding["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{subject}"
        );
    }
    // The Redis finding carries its proof: PING answered, and the version.
    let evidence = result_at(&doc, WEB, 7379)["findings"][0]["evidence"].to_string();
    assert!(evidence.contains("without AUTH"), "{evidence}");
    assert!(
        evidence.contains(&format!("redis_version:{redis_version}")),
        "{evidence}"
    );
    // The password never appears, in any form.
    assert!(!stdout(&output).contains("lab-only-secret"));
    assert_eq!(doc["summary"]["findings"]["critical"], 2);
    assert_eq!(doc["summary"]["findings"]["high"], 1);
    assert_eq!(doc["summary"]["findings"]["info"], 4);

    // --fail-on turns the critical findings into exit 1.
    let output = perimeter_in(
        &lab.scanner,
        &[
            "scan",
            "--no-store",
            "-q",
            "-p",
            "7379",
            WEB,
            "--fail-on",
            "critical",
        ],
    );
    assert_eq!(code(&output), 1, "stderr: {}", stderr(&output));
}

/// 20 % of TCP packets into the target are dropped at random. With no
/// retries some ports are lost; with retries every port is decided right.
#[test]
fn retries_recover_every_port_under_random_loss() {
    if !require(Requirement::Netns) || !require(Requirement::Tool("/usr/sbin/nft")) {
        return;
    }
    let mut lab = BareLab::new();
    let target = lab.host("lossy", &["198.18.0.2/15"]);
    target
        .nft(
            "table inet perimeter_lab {
                chain input {
                    type filter hook input priority filter; policy accept;
                    meta l4proto tcp numgen random mod 100 < 20 counter drop
                }
            }",
        )
        .expect("loss ruleset");
    // Listeners held by the test itself: the kernel completes handshakes into
    // their backlog, which is all a connect scan needs.
    let held: Vec<TcpListener> = target
        .enter(|| {
            (0..60)
                .map(|_| TcpListener::bind("198.18.0.2:0").expect("bind in the lab"))
                .collect()
        })
        .expect("enter the target");
    let open: BTreeSet<u16> = held
        .iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect();
    // Ephemeral ports are above 32767, so these are closed.
    let closed: BTreeSet<u16> = (3000..3040).collect();
    let ports: Vec<String> = open.iter().chain(&closed).map(u16::to_string).collect();
    let ports = ports.join(",");
    let scan = |retries: &str| -> BTreeMap<(IpAddr, u16), String> {
        let output = perimeter_in(
            &lab.scanner,
            &[
                "scan",
                "198.18.0.2",
                "-p",
                &ports,
                "--format",
                "json",
                "--all-states",
                "--no-store",
                "--no-identify",
                "--timeout",
                "300ms",
                "--retries",
                retries,
            ],
        );
        assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
        json_states(results(&json_of(&output)))
    };
    let expected: BTreeMap<(IpAddr, u16), String> = open
        .iter()
        .map(|p| ((ip("198.18.0.2"), *p), "open".to_owned()))
        .chain(
            closed
                .iter()
                .map(|p| ((ip("198.18.0.2"), *p), "closed".to_owned())),
        )
        .collect();

    // One SYN per port and a 300 ms timeout (the kernel would retransmit only
    // after 1 s): each of the 100 ports is lost with probability 0.2, so all
    // of them surviving (0.8^100, about 2e-10) would mean no loss at all.
    let once = scan("0");
    assert_eq!(once.len(), expected.len());
    assert_ne!(once, expected, "no port was lost without retries");
    assert!(once.values().any(|s| s == "filtered"));
    let dropped = counted_packets(&target);
    assert!(dropped > 0);

    // Nine tries per port: a port is lost with probability 0.2^9 (5e-7).
    let retried = scan("8");
    assert_eq!(retried, expected);
    assert!(counted_packets(&target) > dropped, "loss went on");
    drop(held);
}

/// Two stored scans, the protected Redis restarted without a password
/// and a web server started in between: `diff` lists exactly those changes and
/// exits 1; a third, unchanged scan diffs clean with exit 0; `scans` lists all.
#[test]
fn diff_reports_redis_losing_its_password_and_a_new_listener() {
    if !require(Requirement::Netns)
        || !require(Requirement::Tool("/usr/bin/redis-server"))
        || !require(Requirement::Tool("/usr/bin/python3"))
    {
        return;
    }
    let mut lab = BareLab::new();
    let target = lab.host("hist", &["198.18.0.2/15"]);
    let (dir, db) = temp_db();
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).expect("web root");
    // Each scan also writes nmap XML, for ndiff below.
    let xml_of = |n: u32| dir.path().join(format!("scan{n}.xml"));
    let scan = |n: u32| {
        let xml = xml_of(n).to_string_lossy().into_owned();
        let output = perimeter_in(
            &lab.scanner,
            &[
                "scan",
                WEB,
                "-p",
                "6379,8080",
                "--db",
                &db,
                "--format",
                "json",
                "-X",
                &xml,
            ],
        );
        assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
        json_of(&output)
    };
    let diff = |ids: &[&str]| {
        let mut args = vec!["diff", "--db", db.as_str(), "--format", "json"];
        args.extend(ids);
        let output = perimeter_in(&lab.scanner, &args);
        (code(&output), json_of(&output), stderr(&output))
    };

    let mut redis = start_redis(&target, WEB, 6379, Some("lab-only-secret-51c0"));
    let first = scan(1);
    assert_eq!(first["scan"]["id"], 1);
    assert_eq!(result_at(&first, WEB, 6379)["auth"], "required");
    assert_eq!(results(&first).len(), 1, "8080 is closed, so not listed");

    redis.stop();
    let _redis = start_redis(&target, WEB, 6379, None);
    let _http = start_http(&target, WEB, 8080, &www);
    let second = scan(2);
    assert_eq!(second["scan"]["id"], 2);

    let (exit, doc, err) = diff(&[]);
    assert_eq!(exit, 1, "changes at or above medium: {err}");
    assert_eq!(doc["schema"], "perimeter.diff/1");
    assert_eq!(doc["before"]["id"], 1);
    assert_eq!(doc["after"]["id"], 2);
    let mut changes: Vec<(String, String, u64, String)> = doc["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            assert_eq!(c["address"], WEB, "{c:#}");
            (
                c["kind"].as_str().expect("kind").to_owned(),
                c["severity"].as_str().expect("severity").to_owned(),
                c["port"].as_u64().expect("port"),
                c["rule"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    changes.sort();
    let expected: Vec<(String, String, u64, String)> = [
        ("auth-changed", "high", 6379, ""),
        ("finding-appeared", "critical", 6379, "exposed.redis-noauth"),
        ("finding-resolved", "info", 6379, "exposed.service"),
        ("opened", "medium", 8080, ""),
    ]
    .into_iter()
    .map(|(k, s, p, r)| (k.to_owned(), s.to_owned(), p, r.to_owned()))
    .collect();
    assert_eq!(changes, expected);
    let change = |kind: &str| -> &Value {
        doc["changes"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["kind"] == kind))
            .unwrap_or_else(|| panic!("no {kind} change"))
    };
    let auth = change("auth-changed");
    assert_eq!(auth["before"]["auth"], "required");
    assert_eq!(auth["after"]["auth"], "none");
    assert_eq!(auth["after"]["service"], "redis");
    assert_eq!(
        auth["after"]["findings"],
        serde_json::json!(["exposed.redis-noauth"])
    );
    let opened = change("opened");
    assert_eq!(opened["before"], Value::Null);
    assert_eq!(opened["after"]["state"], "open");
    assert_eq!(opened["after"]["service"], "http");

    // nmap's own diff tool reads perimeter's XML and sees the same change.
    // (ndiff is the Debian package of that name; without it only this part
    // is skipped, and strict mode fails.)
    if require(Requirement::Tool("/usr/bin/ndiff")) {
        let output = Command::new("/usr/bin/ndiff")
            .arg(xml_of(1))
            .arg(xml_of(2))
            .output()
            .expect("run ndiff");
        let text = stdout(&output);
        // ndiff exits 1 when the scans differ (0: the same, 2: an error).
        assert_eq!(code(&output), 1, "{text}{}", stderr(&output));
        let changed: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with(['+', '-']) && l.contains("/tcp "))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        let product_version = |port: u16| {
            let r = result_at(&second, WEB, port);
            format!(
                "{} {}",
                r["product"].as_str().unwrap_or("?"),
                r["version"].as_str().unwrap_or("?")
            )
        };
        assert_eq!(
            changed,
            vec![
                "-6379/tcp open redis Redis".to_owned(),
                format!("+6379/tcp open redis {}", product_version(6379)),
                format!("+8080/tcp open http {}", product_version(8080)),
            ],
            "{text}"
        );
        assert!(
            text.contains("+|_ exposed.redis-noauth: critical"),
            "{text}"
        );
    }

    // Nothing changed since: a clean diff, exit 0.
    let third = scan(3);
    assert_eq!(third["scan"]["id"], 3);
    let (exit, doc, err) = diff(&[]);
    assert_eq!(exit, 0, "no change: {err}");
    assert_eq!(doc["before"]["id"], 2);
    assert_eq!(doc["after"]["id"], 3);
    assert_eq!(doc["changes"], serde_json::json!([]));
    // Named scans: the first against the last has the same four changes.
    let (exit, doc, _) = diff(&["1", "3"]);
    assert_eq!(exit, 1);
    assert_eq!(doc["changes"].as_array().map(Vec::len), Some(4));

    let output = perimeter_in(&lab.scanner, &["scans", "--db", &db, "--format", "json"]);
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    let listed = json_of(&output);
    assert_eq!(listed["schema"], "perimeter.scans/1");
    let rows: Vec<(i64, bool, u64, u64)> = listed["scans"]
        .as_array()
        .expect("scans")
        .iter()
        .map(|s| {
            assert_eq!(s["targets"], serde_json::json!([WEB]));
            assert_eq!(s["ports"], "6379,8080");
            (
                s["id"].as_i64().expect("id"),
                s["complete"].as_bool().expect("complete"),
                s["n_results"].as_u64().expect("n_results"),
                s["n_open"].as_u64().expect("n_open"),
            )
        })
        .collect();
    // Newest first; only open ports are stored without --all-states.
    assert_eq!(
        rows,
        vec![(3, true, 2, 2), (2, true, 2, 2), (1, true, 1, 1)]
    );
}

/// JSON Lines is one scan-result object per line, one line per result; the
/// XML parses, has nmap's shape (read by the same reader as nmap's own output,
/// it gives the same states as the JSON Lines run) and `-X FILE` holds the very
/// same text as `--format xml`.
#[test]
fn jsonl_and_nmap_xml_outputs_carry_the_same_results() {
    if !require_service_lab() {
        return;
    }
    let lab = ServiceLab::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let xml_file = dir.path().join("scan.xml");
    let xml_file_text = xml_file.to_string_lossy().into_owned();
    let common_args = [
        "--all-states",
        "--no-store",
        "-p",
        PORTS,
        "--timeout",
        "300ms",
        "--retries",
        "2",
        WEB,
        DB,
        DB_V6,
    ];
    let n_pairs = 3 * PORT_LIST.len();

    let mut args = vec!["scan", "--format", "jsonl"];
    args.extend(common_args);
    let output = perimeter_in(&lab.scanner, &args);
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    let text = stdout(&output);
    let records: Vec<Value> = text
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
            assert!(record.is_object(), "{line}");
            assert_eq!(record["schema"], "perimeter.scan-result/1", "{line}");
            record
        })
        .collect();
    assert_eq!(records.len(), n_pairs, "one line per result:\n{text}");
    let jsonl_states = json_states(&records);
    let redis = records
        .iter()
        .find(|r| r["address"] == WEB && r["port"] == 7379)
        .expect("the Redis line");
    assert_eq!(rules_of(redis), strings(&["exposed.redis-noauth"]));

    let mut args = vec!["scan", "--format", "xml", "-X", &xml_file_text];
    args.extend(common_args);
    let output = perimeter_in(&lab.scanner, &args);
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    let xml = stdout(&output);
    let written = std::fs::read_to_string(&xml_file).expect("the -X file");
    assert_eq!(written, xml, "-X writes the same XML as --format xml");
    let root = parse_xml(&xml).unwrap_or_else(|e| panic!("not XML: {e}\n{xml}"));
    assert_eq!(root.name, "nmaprun");
    assert_eq!(root.attr("scanner"), Some("perimeter"));
    assert_eq!(
        root.first("scaninfo").and_then(|s| s.attr("type")),
        Some("connect")
    );
    assert_eq!(root.all("host").count(), 3);
    for host in root.all("host") {
        let address = host.first("address").expect("host/address");
        let family = if address.attr("addr").is_some_and(|a| a.contains(':')) {
            "ipv6"
        } else {
            "ipv4"
        };
        assert_eq!(address.attr("addrtype"), Some(family));
        let ports = host.first("ports").expect("host/ports");
        assert_eq!(ports.all("port").count(), PORT_LIST.len());
        for port in ports.all("port") {
            assert_eq!(port.attr("protocol"), Some("tcp"));
            assert!(port.first("state").and_then(|s| s.attr("reason")).is_some());
        }
    }
    let xml_port_states = xml_states(&root).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    // Two runs of a live lab: the states are stable, so they must agree.
    assert_eq!(xml_port_states, jsonl_states);
    // The unauthenticated Redis is named, versioned and flagged in the XML.
    let redis_port = root
        .all("host")
        .find(|h| h.first("address").and_then(|a| a.attr("addr")) == Some(WEB))
        .and_then(|h| h.first("ports"))
        .and_then(|ps| ps.all("port").find(|p| p.attr("portid") == Some("7379")))
        .expect("WEB:7379 in the XML");
    let service = redis_port.first("service").expect("port/service");
    assert_eq!(service.attr("name"), Some("redis"));
    assert_eq!(service.attr("product"), Some("Redis"));
    assert_eq!(
        redis_port.first("script").and_then(|s| s.attr("id")),
        Some("exposed.redis-noauth")
    );
}

/// No targets, the whole internet without the explicit flag, or excludes
/// that leave nothing are usage errors (exit 2), before anything is sent or
/// stored. Run in an empty namespace with nothing but loopback, so even a
/// broken guard could reach nothing.
#[test]
fn scope_refuses_no_targets_and_the_whole_internet() {
    if !require(Requirement::Netns) {
        return;
    }
    let ns = Ns::new("scope").expect("netns");
    let (_dir, db) = temp_db();
    let cases: [&[&str]; 5] = [
        &["scan", "-p", "80", "--db", &db],
        &["scan", "0.0.0.0/0", "-p", "80", "--db", &db],
        &["scan", "::/0", "-p", "80", "--db", &db],
        // Hidden in a list, it is refused all the same.
        &["scan", "198.18.0.2", "0.0.0.0/0", "-p", "80", "--db", &db],
        // Excludes that cover every target leave nothing to scan.
        &[
            "scan",
            "198.18.0.2-198.18.0.9",
            "--exclude",
            "198.18.0.0/24",
            "-p",
            "80",
            "--db",
            &db,
        ],
    ];
    for args in cases {
        let output = perimeter_in(&ns, args);
        assert_eq!(code(&output), 2, "{args:?}: {}", stderr(&output));
        assert!(stdout(&output).is_empty(), "{args:?}");
        let err = stderr(&output);
        assert!(err.starts_with("perimeter: error: "), "{err}");
    }
    assert!(
        stderr(&perimeter_in(&ns, &["scan", "--db", &db])).contains("no targets"),
        "says what is missing"
    );
    assert!(
        stderr(&perimeter_in(&ns, &["scan", "0.0.0.0/0", "--db", &db]))
            .contains("whole IPv4 internet")
    );
    let output = perimeter_in(&ns, &["scans", "--db", &db, "--format", "json"]);
    assert_eq!(
        json_of(&output)["scans"],
        serde_json::json!([]),
        "a refused scan is not stored"
    );
}

/// Without CAP_NET_RAW a SYN scan is refused before anything is sent or
/// stored, naming the capability; the connect scan runs unprivileged.
#[test]
fn syn_scan_without_cap_net_raw_says_so() {
    if !require(Requirement::Netns) || !require(Requirement::Tool("setpriv")) {
        return;
    }
    let ns = Ns::new("synnobody").expect("netns");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let db = dir.path().join("scans.db").to_string_lossy().into_owned();
    let as_nobody = |extra: &[&str]| {
        let mut command = ns.command("setpriv");
        command
            .args(common::AS_NOBODY)
            .arg("--inh-caps=-all")
            .arg(common::perimeter())
            .args(["scan", "127.0.0.1", "-p", "9", "--db", &db, "--quiet"])
            .args(extra)
            .current_dir("/");
        command.output().expect("run perimeter as nobody")
    };
    let output = as_nobody(&["--syn"]);
    assert_eq!(code(&output), 2, "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("CAP_NET_RAW"), "{err}");
    assert!(stdout(&output).is_empty());
    let output = as_nobody(&[]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let output = perimeter_in(&ns, &["scans", "--db", &db, "--format", "json"]);
    let scans = json_of(&output)["scans"].clone();
    assert_eq!(
        scans.as_array().map(Vec::len),
        Some(1),
        "only the connect scan is stored: {scans}"
    );
}

/// An excluded lab host is never sent a packet (its
/// nftables counter stays at zero) while its neighbour's counter grows.
#[test]
fn excluded_host_is_never_sent_a_packet() {
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
    let excluded = lab.host("excl", &["198.18.0.2/15"]);
    let scanned = lab.host("seen", &["198.18.0.3/15"]);
    excluded.nft(counter).expect("excluded host counter");
    scanned.nft(counter).expect("scanned host counter");
    let _excluded_listener = excluded
        .enter(|| TcpListener::bind("198.18.0.2:22").expect("bind"))
        .expect("enter");
    let _scanned_listener = scanned
        .enter(|| TcpListener::bind("198.18.0.3:22").expect("bind"))
        .expect("enter");

    let output = perimeter_in(
        &lab.scanner,
        &[
            "scan",
            "198.18.0.2-198.18.0.3",
            "--exclude",
            "198.18.0.2",
            "-p",
            "22,80,443",
            "--format",
            "json",
            "--all-states",
            "--no-store",
            "--no-identify",
            "--timeout",
            "300ms",
        ],
    );
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    let doc = json_of(&output);
    assert_eq!(doc["scan"]["excluded"], serde_json::json!(["198.18.0.2"]));
    let states = json_states(results(&doc));
    let expected: BTreeMap<(IpAddr, u16), String> = [(22, "open"), (80, "closed"), (443, "closed")]
        .into_iter()
        .map(|(p, s)| ((ip("198.18.0.3"), p), s.to_owned()))
        .collect();
    assert_eq!(states, expected);
    assert_eq!(
        counted_packets(&excluded),
        0,
        "the excluded host saw a packet"
    );
    // Three SYNs and the rest of each conversation.
    assert!(counted_packets(&scanned) >= 3);
}

/// Ctrl-C during a slow stealth scan exits 130 and leaves the scan
/// stored, marked incomplete, with exactly the results it had streamed; and
/// `diff` against the complete scan before it reports no change for the ports
/// the interrupted scan never reached (nothing in the lab changed).
#[test]
fn ctrl_c_stores_the_partial_scan_marked_incomplete() {
    if !require(Requirement::Netns) {
        return;
    }
    let mut lab = BareLab::new();
    let target = lab.host("slow", &["198.18.0.2/15"]);
    // Ten open ports among the thousand: an interrupt after a handful of
    // results leaves most of them unreached, whatever the permutation.
    let open_ports: [u16; 10] = [21, 22, 25, 80, 110, 143, 443, 587, 993, 995];
    let _listeners: Vec<TcpListener> = target
        .enter(move || {
            open_ports
                .iter()
                .map(|p| TcpListener::bind(("198.18.0.2", *p)).expect("bind"))
                .collect()
        })
        .expect("enter");
    let (_dir, db) = temp_db();
    let common_args = ["scan", WEB, "-p", "1-1000", "--all-states", "--db", &db];

    // A complete scan first, the baseline of this target set.
    let mut args = common_args.to_vec();
    args.extend(["--format", "json", "--no-identify"]);
    let output = perimeter_in(&lab.scanner, &args);
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    let baseline = json_of(&output);
    assert_eq!(baseline["scan"]["complete"], true);
    assert_eq!(baseline["summary"]["open"], open_ports.len());

    let mut args = common_args.to_vec();
    args.extend([
        "--profile",
        "stealth",
        "--rate",
        "5",
        "--format",
        "jsonl",
        "--no-identify",
    ]);
    let scan = Streaming::spawn(&lab.scanner, &args);
    // Results stream as they come: wait for three, then interrupt. (At five
    // probes a second the 1,000 ports would take over three minutes.)
    let mut lines = Vec::new();
    while lines.len() < 3 {
        let line = scan
            .next_line()
            .unwrap_or_else(|| panic!("perimeter ended after {} lines", lines.len()));
        lines.push(line);
    }
    scan.signal(nix::sys::signal::Signal::SIGINT);
    let (exit, rest, err) = scan.finish();
    assert_eq!(exit, 130, "stderr: {err}");
    lines.extend(rest);
    let records: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let streamed = json_states(&records);
    assert!(streamed.len() >= 3);
    assert!(streamed.len() < 1000, "the scan was cut short");

    let output = perimeter_in(&lab.scanner, &["scans", "--db", &db, "--format", "json"]);
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    let listed = json_of(&output);
    let scans = listed["scans"].as_array().expect("scans");
    assert_eq!(scans.len(), 2);
    // Newest first.
    let stored = &scans[0];
    assert_eq!(stored["id"], 2);
    assert_eq!(stored["complete"], false);
    assert_eq!(stored["profile"], "stealth");
    assert!(stored["finished"].is_string(), "the end was recorded");
    assert_eq!(stored["n_results"].as_u64(), Some(streamed.len() as u64));
    let n_open = streamed.values().filter(|s| *s == "open").count();
    assert_eq!(stored["n_open"].as_u64(), Some(n_open as u64));
    assert_eq!(scans[1]["complete"], true);
    assert_eq!(scans[1]["n_results"], 1000);

    // The human listing says so too.
    let output = perimeter_in(&lab.scanner, &["scans", "--db", &db]);
    assert!(
        stdout(&output).contains("incomplete"),
        "{}",
        stdout(&output)
    );

    // The interrupted scan is never the default side of a diff: with only
    // one complete scan there is nothing to compare, and the message says
    // how to compare the partial one.
    let output = perimeter_in(&lab.scanner, &["diff", "--db", &db, "--format", "json"]);
    assert_eq!(code(&output), 2, "stdout: {}", stdout(&output));
    assert!(
        stderr(&output).contains("scan 2 after it is incomplete")
            && stderr(&output).contains("perimeter diff 1 2"),
        "{}",
        stderr(&output)
    );

    // Asked by name, nothing changed in the lab: a port the interrupted scan
    // never reached is not scanned, not closed.
    let output = perimeter_in(
        &lab.scanner,
        &["diff", "1", "2", "--db", &db, "--format", "json"],
    );
    let doc = json_of(&output);
    assert_eq!(doc["before"]["id"], 1);
    assert_eq!(doc["after"]["id"], 2);
    assert_eq!(doc["after"]["complete"], false);
    assert_eq!(doc["changes"], serde_json::json!([]), "{doc:#}");
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
}
