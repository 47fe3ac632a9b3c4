//! Environments end to end: `perimeter init`, strict inventories, `envs`, and
//! `verify` run from a scanner namespace against prod, dev, expired experiment
//! and unknown hosts in a lab the test builds and removes.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{code, run, stderr, stdout};
use perimeter_testlab::{Daemon, Lab, Ns, Requirement, require};

#[test]
fn init_writes_the_example_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("perimeter.toml");
    let path_text = path.to_string_lossy().into_owned();
    let output = run(None, &["init", &path_text]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let text = std::fs::read_to_string(&path).expect("written");
    assert!(text.contains("[[environment]]") && text.contains("kind = \"experiment\""));

    let output = run(None, &["init", &path_text]);
    assert_eq!(code(&output), 2);
    assert!(
        stderr(&output).contains("exists; pass --force"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read_to_string(&path).expect("read"), text);

    let db = dir.path().join("empty.db");
    let output = run(
        None,
        &[
            "envs",
            "--inventory",
            &path_text,
            "--db",
            &db.to_string_lossy(),
            "--format",
            "json",
        ],
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let names: Vec<&str> = doc["environments"]
        .as_array()
        .expect("environments")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(names, ["prod", "dev", "scratch"]);
}

/// The example's ranges are documentation addresses that some networks use
/// for real (this project's own CI machine sits on 192.0.2.0/24): verify must
/// refuse to scan them until a person replaced them. Run inside a namespace of
/// its own, so that even a regression could reach nothing.
#[test]
fn verify_refuses_the_unedited_example() {
    if !require(Requirement::Netns) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("perimeter.toml");
    let path_text = path.to_string_lossy().into_owned();
    assert_eq!(code(&run(None, &["init", &path_text])), 0);
    let ns = Ns::new("example").expect("namespace");
    let db = dir.path().join("h.db");
    let output = run(
        Some(&ns),
        &[
            "verify",
            "--inventory",
            &path_text,
            "--db",
            &db.to_string_lossy(),
            "-p",
            "443",
        ],
    );
    assert_eq!(code(&output), 2, "stdout: {}", stdout(&output));
    let line = std::fs::read_to_string(&path)
        .expect("read")
        .lines()
        .position(|l| l == "example = true")
        .expect("the example says it is one")
        + 1;
    assert!(
        stderr(&output).contains(&format!(
            "{path_text}:{line}: this is perimeter init's example (`example = true`)"
        )),
        "{}",
        stderr(&output)
    );
    assert!(!db.exists(), "a scan was stored");

    // Edited (the marker deleted), the same file is scanned.
    let edited = std::fs::read_to_string(&path)
        .expect("read")
        .replace("example = true\n", "");
    std::fs::write(&path, edited).expect("write");
    let output = run(
        Some(&ns),
        &[
            "verify",
            "--inventory",
            &path_text,
            "--no-store",
            "-p",
            "443",
            "--timeout",
            "50ms",
            "--retries",
            "0",
            "--format",
            "json",
            "-q",
        ],
    );
    assert_ne!(code(&output), 2, "{}", stderr(&output));
    assert!(
        !stderr(&output).contains("example = true"),
        "{}",
        stderr(&output)
    );
}

/// The unedited example (what `perimeter init` and the package's conffile
/// write) is not this network: the audit says so and judges nothing by it.
/// Edited, the same file's dev range makes the listener env.dev-open. The
/// listener is on the loopback of the test's own namespace (an address of
/// the example's dev range); the audit sends nothing beyond it.
#[test]
fn the_audit_does_not_judge_a_host_by_the_unedited_example() {
    if !require(Requirement::Netns) || !require(Requirement::Tool("/usr/bin/python3")) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("perimeter.toml");
    let path_text = path.to_string_lossy().into_owned();
    assert_eq!(code(&run(None, &["init", &path_text])), 0);
    let ns = Ns::new("exaudit").expect("namespace");
    ns.ip(&["addr", "add", "192.0.2.5/32", "dev", "lo"])
        .expect("an address of the example's dev range");
    let _web = listen(&ns, "192.0.2.5", 8080);
    let approvals = dir.path().join("approvals.toml");
    std::fs::write(&approvals, "version = 1\n").expect("write");
    let audit = |extra: &[&str]| {
        let approvals = approvals.to_string_lossy().into_owned();
        let mut args = vec![
            "audit",
            "--format",
            "json",
            "--no-store",
            "--no-service-probes",
            "--approvals",
            approvals.as_str(),
            "--inventory",
            path_text.as_str(),
        ];
        args.extend_from_slice(extra);
        run(Some(&ns), &args)
    };
    let output = audit(&[]);
    assert!(
        stderr(&output).contains("this is perimeter init's example")
            && stderr(&output).contains("its environments are not used"),
        "{}",
        stderr(&output)
    );
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert!(
        audit_rules(&doc)
            .iter()
            .all(|rule| !rule.starts_with("env.")),
        "{:?}",
        audit_rules(&doc)
    );

    let edited = std::fs::read_to_string(&path)
        .expect("read")
        .replace("example = true\n", "");
    std::fs::write(&path, edited).expect("write");
    let output = audit(&[]);
    assert!(!stderr(&output).contains("example"), "{}", stderr(&output));
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert!(
        audit_rules(&doc).iter().any(|rule| rule == "env.dev-open"),
        "{:?}",
        audit_rules(&doc)
    );
}

/// The rule ids of an audit document's findings.
fn audit_rules(doc: &serde_json::Value) -> Vec<String> {
    doc["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["rule"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_bad_inventory_stops_audit_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("perimeter.toml");
    std::fs::write(
        &path,
        "[[environment]]\nname = \"prod\"\nkind = \"prod\"\nranges = [\"203.0.113.0/24\"]\n\n\
         [[environment]]\nname = \"dev\"\nkind = \"dev\"\nranges = [\"203.0.113.128/25\"]\n",
    )
    .expect("write");
    let path_text = path.to_string_lossy().into_owned();
    let approvals = dir.path().join("approvals.toml");
    std::fs::write(&approvals, "version = 1\n").expect("write");
    let output = run(
        None,
        &[
            "audit",
            "--no-store",
            "--approvals",
            &approvals.to_string_lossy(),
            "--inventory",
            &path_text,
        ],
    );
    assert_eq!(code(&output), 2);
    let err = stderr(&output);
    assert!(
        err.contains(&format!("{path_text}:9:11: 203.0.113.128/25 puts addresses of dev environment `dev` inside prod environment `prod`")),
        "{err}"
    );
    // An --env that the inventory does not know.
    std::fs::write(
        &path,
        "[[environment]]\nname = \"prod\"\nkind = \"prod\"\nranges = [\"203.0.113.0/24\"]\n",
    )
    .expect("write");
    let output = run(
        None,
        &["check", "--inventory", &path_text, "--env", "staging"],
    );
    assert_eq!(code(&output), 2);
    assert!(
        stderr(&output).contains("has no such environment (it has: prod)"),
        "{}",
        stderr(&output)
    );
}

const INVENTORY: &str = r#"
[[environment]]
name = "prod"
kind = "prod"
ranges = ["198.18.10.0/29"]
public_ports = [443]
allow_from = ["198.18.99.0/24"]
owner = "ops@example.org"

[[environment]]
name = "dev"
kind = "dev"
ranges = ["198.18.20.0/29"]
allow_from = ["198.18.99.0/24"]

[[environment]]
name = "scratch"
kind = "experiment"
ranges = ["198.18.30.0/29"]
allow_from = ["198.18.99.0/24"]
owner = "alice@example.org"
expires = 2020-01-01
"#;

/// A listener on `address:port` in `ns`, from the packaged Python.
fn listen(ns: &Ns, address: &str, port: u16) -> Daemon {
    let mut daemon = ns
        .spawn(
            "/usr/bin/python3",
            &[
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                address,
                "--directory",
                "/",
            ],
        )
        .expect("start listener");
    ns.wait_tcp(
        format!("{address}:{port}").parse().expect("addr"),
        Duration::from_secs(10),
    )
    .expect("listens");
    daemon.ensure_running().expect("running");
    daemon
}

/// (rule, address:port) of every finding in a verify document.
fn findings(doc: &serde_json::Value) -> BTreeSet<String> {
    doc["results"]
        .as_array()
        .expect("results")
        .iter()
        .flat_map(|r| {
            let at = format!("{}:{}", r["address"].as_str().unwrap_or(""), r["port"]);
            r["findings"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(move |f| {
                    let rule = f["rule"].as_str()?.to_owned();
                    rule.starts_with("env.").then(|| format!("{rule} {at}"))
                })
        })
        .collect()
}

#[test]
fn verify_from_outside_and_from_the_admin_network() {
    if !require(Requirement::Netns) || !require(Requirement::Tool("/usr/bin/python3")) {
        return;
    }
    let mut lab = Lab::new().expect("lab");
    let outside = lab
        .add_host("out", &["198.18.50.1/16"])
        .expect("scanner outside");
    let admin = lab
        .add_host("adm", &["198.18.99.1/16"])
        .expect("scanner inside");
    let prod = lab.add_host("prod", &["198.18.10.5/16"]).expect("prod");
    let dev = lab.add_host("dev", &["198.18.20.5/16"]).expect("dev");
    let scratch = lab.add_host("exp", &["198.18.30.5/16"]).expect("scratch");
    let stray = lab.add_host("stray", &["198.18.40.5/16"]).expect("unknown");
    let _servers = [
        listen(&prod, "198.18.10.5", 443),
        listen(&prod, "198.18.10.5", 2222),
        listen(&dev, "198.18.20.5", 8080),
        listen(&scratch, "198.18.30.5", 2222),
        listen(&stray, "198.18.40.5", 8000),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let inventory = dir.path().join("perimeter.toml");
    std::fs::write(&inventory, INVENTORY).expect("write");
    let inventory_text = inventory.to_string_lossy().into_owned();
    let db = dir.path().join("history.db");
    let db_text = db.to_string_lossy().into_owned();
    let verify = |ns: &Ns| {
        let output = run(
            Some(ns),
            &[
                "verify",
                "--inventory",
                &inventory_text,
                "--also",
                "198.18.40.0/29",
                "-p",
                "443,2222,8000,8080",
                "--timeout",
                "1s",
                "--retries",
                "2",
                "--format",
                "json",
                "--db",
                &db_text,
                "--quiet",
            ],
        );
        let doc: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("not json ({e}): {}\n{}", stdout(&output), stderr(&output)));
        (code(&output), doc)
    };

    let (exit, doc) = verify(&outside);
    assert_eq!(exit, 1, "high findings fail the run");
    assert_eq!(doc["schema"], "perimeter.scan/1");
    assert_eq!(doc["verify"]["vantage"], serde_json::json!(["198.18.50.1"]));
    let expected: BTreeSet<String> = [
        "env.prod-unexpected-port 198.18.10.5:2222",
        "env.dev-reachable 198.18.20.5:8080",
        "env.dev-reachable 198.18.30.5:2222",
        "env.expired 198.18.30.5:2222",
        "env.unknown-host 198.18.40.5:8000",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(findings(&doc), expected);

    let (exit, doc) = verify(&admin);
    assert_eq!(
        exit, 1,
        "the expired experiment still fails the run: {doc:#}"
    );
    let expected: BTreeSet<String> = [
        "env.expired 198.18.30.5:2222",
        "env.unknown-host 198.18.40.5:8000",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(findings(&doc), expected);

    // The stored scans feed `perimeter envs`: the dev host was last seen.
    let output = run(
        None,
        &[
            "envs",
            "--inventory",
            &inventory_text,
            "--db",
            &db_text,
            "--format",
            "json",
        ],
    );
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let dev_env = doc["environments"]
        .as_array()
        .and_then(|envs| envs.iter().find(|e| e["name"] == "dev"))
        .expect("dev");
    assert_eq!(dev_env["seen"][0]["address"], "198.18.20.5");
    assert_eq!(dev_env["seen"][0]["open_ports"], serde_json::json!([8080]));
    let scratch_env = doc["environments"]
        .as_array()
        .and_then(|envs| envs.iter().find(|e| e["name"] == "scratch"))
        .expect("scratch");
    assert!(
        scratch_env["expiry"]
            .as_str()
            .unwrap_or("")
            .starts_with("EXPIRED")
    );
}

/// What [`audit_dev_host`] needs; each test asks before it builds one.
fn require_dev_host() -> bool {
    require(Requirement::Netns)
        && require(Requirement::Tool("nft"))
        && require(Requirement::Tool("/usr/bin/python3"))
}

/// The dev host's own view: its firewall decides who can reach its listener.
fn audit_dev_host(ruleset: &str) -> serde_json::Value {
    let ns = Ns::new("devfw").expect("netns");
    ns.ip(&["addr", "add", "198.18.20.5/32", "dev", "lo"])
        .expect("lab address");
    ns.nft(ruleset).expect("ruleset");
    let _web = listen(&ns, "198.18.20.5", 8080);
    let dir = tempfile::tempdir().expect("tempdir");
    let inventory = dir.path().join("perimeter.toml");
    std::fs::write(&inventory, INVENTORY).expect("write");
    let approvals = dir.path().join("approvals.toml");
    std::fs::write(&approvals, "version = 1\n").expect("write");
    let (_, doc) = common::audit_json(
        Some(&ns),
        &approvals,
        &["--inventory", &inventory.to_string_lossy()],
    );
    doc
}

#[test]
fn dev_listener_open_to_anyone_is_env_dev_open() {
    if !require_dev_host() {
        return;
    }
    let doc = audit_dev_host(
        "table inet filter {\n chain input {\n  type filter hook input priority 0; policy drop;\n  iif lo accept\n  tcp dport 8080 accept\n }\n}\n",
    );
    let rules = common::rules_about(&doc, &["198.18.20.5:8080"]);
    assert!(rules.contains(&"env.dev-open".to_owned()), "{rules:?}");
    assert!(
        rules.contains(&"firewall.allows-any".to_owned()),
        "{rules:?}"
    );
    let finding = common::finding(&doc, "env.dev-open", "198.18.20.5:8080").expect("finding");
    assert!(
        finding["message"]
            .as_str()
            .unwrap_or("")
            .contains("reachable from anywhere"),
        "{finding:#}"
    );
}

#[test]
fn dev_listener_limited_to_allow_from_is_quiet() {
    if !require_dev_host() {
        return;
    }
    let doc = audit_dev_host(
        "table inet filter {\n chain input {\n  type filter hook input priority 0; policy drop;\n  iif lo accept\n  ip saddr 198.18.99.0/24 tcp dport 8080 accept\n }\n}\n",
    );
    let rules = common::rules_about(&doc, &["198.18.20.5:8080"]);
    assert!(
        !rules
            .iter()
            .any(|r| r.starts_with("env.") || r == "firewall.allows-any"),
        "{rules:?}"
    );
    let listener = common::listener(&doc, 8080);
    assert_eq!(
        listener["reachable_from"]["allowed"],
        serde_json::json!(["198.18.99.0/24"]),
        "{listener:#}"
    );
    assert!(common::finding(&doc, "firewall.none", "netns").is_none());
}
