//! End-to-end audits of real daemons, each inside a network namespace the test
//! creates and removes: the exact rule ids that must fire for each, and those
//! that must not. No packet leaves loopback or the test's own namespace.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{audit_json, default_drop_ruleset, finding, listener, rules_about, strings};
use perimeter_testlab::{Ns, Requirement, copy_to_tmp, require};

fn no_approvals(dir: &Path) -> PathBuf {
    // Named explicitly so a developer's own approvals never leak into a test;
    // the file does not exist, so nothing is approved.
    let path = dir.join("approvals.toml");
    std::fs::write(&path, "version = 1\n").expect("write approvals");
    path
}

/// A copy of Debian's redis binary in a fresh directory under /tmp, named
/// redis-server: the "downloaded tarball" nobody's package manager knows.
fn tarball_redis() -> (tempfile::TempDir, PathBuf) {
    copy_to_tmp("/usr/bin/redis-check-rdb", "redis-server")
}

#[test]
fn tarball_redis_as_root_on_every_interface_without_password() {
    if !require(Requirement::Netns) || !require(Requirement::Tool("/usr/bin/redis-check-rdb")) {
        return;
    }
    let ns = Ns::new("redis").expect("netns");
    ns.ip(&["addr", "add", "198.18.1.1/32", "dev", "lo"])
        .expect("lab address");
    let (dir, exe) = tarball_redis();
    let exe_text = exe.to_string_lossy().into_owned();
    let redis = common::start_redis(&ns, &exe, "* -::*", 6379);
    let pid = redis.pid();

    let (code, doc) = audit_json(Some(&ns), &no_approvals(dir.path()), &[]);
    assert_eq!(code, 0, "audit exits 0 without --fail-on");

    let l = listener(&doc, 6379);
    assert_eq!(l["scope"], "wildcard");
    assert_eq!(l["user"], "root");
    assert_eq!(l["exe"], exe_text.as_str());
    assert_eq!(l["package"], serde_json::Value::Null);
    assert_eq!(l["ownership"], "unpackaged");
    assert_eq!(l["pids"], serde_json::json!([pid]));
    assert_eq!(l["netns"], ns.name());
    assert_eq!(l["approval"]["status"], "unapproved");

    let pid_needle = format!("pid {pid})");
    assert_eq!(
        rules_about(&doc, &[&pid_needle, &exe_text]),
        strings(&[
            "exec.unpackaged",
            "exec.world-writable",
            "listener.unapproved",
            "redis.exposed",
            "redis.no-auth",
            "redis.protected-mode-off",
            "service.root",
        ])
    );
    let no_auth = finding(&doc, "redis.no-auth", &pid_needle).expect("redis.no-auth");
    assert_eq!(no_auth["severity"], "critical");
    let evidence = no_auth["evidence"].to_string();
    assert!(evidence.contains("without AUTH"), "{evidence}");
    assert!(evidence.contains("redis_version:"), "{evidence}");
    // Started without a config file: INFO's config_file says so, and we say it.
    assert!(evidence.contains("without a config file"), "{evidence}");

    // A fresh namespace has no firewall.
    let netns_needle = format!("netns {}", ns.name());
    assert!(finding(&doc, "firewall.none", &netns_needle).is_some());
    drop(redis);
}

#[test]
fn packaged_redis_with_password_on_loopback_is_clean_and_secret_stays_secret() {
    if !require(Requirement::Netns)
        || !require(Requirement::Tool("/usr/bin/redis-server"))
        || !require(Requirement::Tool("setpriv"))
    {
        return;
    }
    let ns = Ns::new("redisok").expect("netns");
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = "correct-horse-battery-staple-4417";
    let mut redis = ns
        .spawn(
            "setpriv",
            &[
                "--reuid=redis",
                "--regid=redis",
                "--init-groups",
                "/usr/bin/redis-server",
                "--port",
                "6380",
                "--bind",
                "127.0.0.1",
                "--requirepass",
                secret,
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                "/tmp",
            ],
        )
        .expect("start redis");
    ns.wait_tcp(
        "127.0.0.1:6380".parse().expect("addr"),
        Duration::from_secs(10),
    )
    .expect("redis listens");
    redis.ensure_running().expect("redis running");
    let pid = redis.pid();

    let approvals = no_approvals(dir.path());
    let (_, doc) = audit_json(Some(&ns), &approvals, &[]);
    let l = listener(&doc, 6380);
    assert_eq!(l["scope"], "loopback");
    assert_eq!(l["user"], "redis");
    // Debian's /usr/bin/redis-server is a symlink to redis-check-rdb, which
    // redis-tools owns: the canonical path decides.
    assert_eq!(l["package"], "redis-tools");
    assert_eq!(l["approval"]["status"], "not-needed");
    assert_eq!(
        rules_about(&doc, &[&format!("pid {pid})")]),
        Vec::<String>::new()
    );

    let text = doc.to_string();
    assert!(
        !text.contains(secret),
        "the requirepass value leaked into the report"
    );

    // The human report must not leak it either.
    let output = common::run(
        Some(&ns),
        &[
            "audit",
            "--no-store",
            "--approvals",
            &approvals.to_string_lossy(),
        ],
    );
    assert!(!common::stdout(&output).contains(secret));
    assert!(!common::stderr(&output).contains(secret));
}

#[test]
fn sshd_permitting_root_from_one_range_says_which() {
    if !require(Requirement::Netns)
        || !require(Requirement::Tool("/usr/sbin/sshd"))
        || !require(Requirement::Tool("ssh-keygen"))
    {
        return;
    }
    let ns = Ns::new("sshd").expect("netns");
    ns.ip(&["addr", "add", "198.18.2.1/32", "dev", "lo"])
        .expect("lab address");
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("host_ed25519");
    perimeter_testlab::run(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            &key.to_string_lossy(),
        ],
    )
    .expect("host key");
    std::fs::create_dir_all("/run/sshd").expect("privilege separation directory");
    let config = dir.path().join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port 2222\nListenAddress 198.18.2.1\nHostKey {}\nPidFile {}\nUsePAM no\n\
             PermitRootLogin no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             Match Address 198.18.0.0/15\n    PermitRootLogin yes\n",
            key.display(),
            dir.path().join("sshd.pid").display()
        ),
    )
    .expect("config");
    let mut sshd = ns
        .spawn(
            "/usr/sbin/sshd",
            &["-D", "-e", "-f", &config.to_string_lossy()],
        )
        .expect("start sshd");
    ns.wait_tcp(
        "198.18.2.1:2222".parse().expect("addr"),
        Duration::from_secs(10),
    )
    .expect("sshd listens");
    sshd.ensure_running().expect("sshd running");
    let pid = sshd.pid();

    let (_, doc) = audit_json(Some(&ns), &no_approvals(dir.path()), &[]);
    let l = listener(&doc, 2222);
    assert_eq!(l["package"], "openssh-server");
    assert_eq!(l["scope"], "public");
    assert_eq!(
        rules_about(&doc, &[&format!("pid {pid})")]),
        strings(&["listener.unapproved", "ssh.root-login"]),
        "sshd is privilege-separated (no service.root), packaged, and allows no passwords"
    );
    let root = finding(&doc, "ssh.root-login", &format!("pid {pid})")).expect("ssh.root-login");
    let message = root["message"].as_str().unwrap_or("");
    assert!(
        message.contains("yes from Address 198.18.0.0/15"),
        "{message}"
    );
    assert_eq!(
        message.matches("198.18.0.0/15").count(),
        1,
        "one class, said once: {message}"
    );
    assert!(
        !message.contains("any other address"),
        "root is refused elsewhere: {message}"
    );
    assert!(
        root["subject"]
            .as_str()
            .unwrap_or("")
            .contains(&*config.to_string_lossy())
    );
}

#[test]
fn deleted_binary_running_from_tmp() {
    if !require(Requirement::Netns) {
        return;
    }
    let (dir, exe) = copy_to_tmp("/usr/bin/sleep", "kworkerd");
    let exe_text = exe.to_string_lossy().into_owned();
    // Process rules cover the audited namespace: run it in the test's own.
    let ns = Ns::new("deleted").expect("netns");
    let mut miner = ns.spawn(&exe_text, &["300"]).expect("start");
    miner.ensure_running().expect("running");
    // `ip netns exec` execs the program; wait until it has, then delete it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::fs::read_link(format!("/proc/{}/exe", miner.pid())).ok() != Some(exe.clone()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the copy never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::remove_file(&exe).expect("delete the running binary");
    miner.ensure_running().expect("still running");

    let (_, doc) = audit_json(Some(&ns), &no_approvals(dir.path()), &[]);
    assert_eq!(
        rules_about(&doc, &[&exe_text]),
        strings(&["exec.deleted", "exec.world-writable"])
    );
    let deleted = finding(&doc, "exec.deleted", &exe_text).expect("exec.deleted");
    assert_eq!(deleted["severity"], "high");
    assert!(
        deleted["subject"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("pid {}", miner.pid()))
    );
}

#[test]
fn default_drop_firewall_silences_firewall_none() {
    if !require(Requirement::Netns) || !require(Requirement::Tool("nft")) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let approvals = no_approvals(dir.path());
    let guarded = Ns::new("fwdrop").expect("netns");
    guarded
        .nft(&default_drop_ruleset(&[22]))
        .expect("load ruleset");
    let open = Ns::new("fwopen").expect("netns");

    let (_, doc) = audit_json(Some(&guarded), &approvals, &[]);
    assert_eq!(
        doc["host"]["namespaces"][0]["firewall"]["verdict"],
        "default-deny"
    );
    assert!(finding(&doc, "firewall.none", guarded.name()).is_none());

    let (_, doc) = audit_json(Some(&open), &approvals, &[]);
    assert_eq!(doc["host"]["namespaces"][0]["firewall"]["verdict"], "open");
    assert!(finding(&doc, "firewall.none", open.name()).is_some());
}

/// Issue 13: a service on 6379 whose answer to PING is not RESP got
/// `redis.exposed` ("started without a config file") while the problems said
/// its answer was "not a RESP reply". Not Redis means no Redis findings.
#[test]
fn a_web_server_on_the_redis_port_gets_no_redis_findings() {
    if !require(Requirement::Netns) || !require(Requirement::Tool("/usr/bin/python3")) {
        return;
    }
    let ns = Ns::new("notredis").expect("netns");
    let dir = tempfile::tempdir().expect("tempdir");
    let web = common::start_listening(
        &ns,
        "/usr/bin/python3",
        &["-m", "http.server", "6379", "--bind", "0.0.0.0"],
        "127.0.0.1:6379",
    );
    let (_, doc) = audit_json(Some(&ns), &no_approvals(dir.path()), &[]);
    let redis_rules: Vec<&str> = doc["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["rule"].as_str())
        .filter(|rule| rule.starts_with("redis."))
        .collect();
    assert_eq!(redis_rules, Vec::<&str>::new(), "{doc:#}");
    let problem = doc["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["subject"] == "tcp 0.0.0.0:6379")
        .unwrap_or_else(|| panic!("no problem about 6379: {doc:#}"));
    let message = problem["message"].as_str().unwrap_or("");
    assert!(
        message.starts_with("not Redis:") && message.contains("not a RESP reply"),
        "{problem}"
    );
    drop(web);
}

#[test]
fn unprivileged_audit_says_what_it_could_not_see() {
    if !require(Requirement::Netns)
        || !require(Requirement::Tool("/usr/bin/redis-check-rdb"))
        || !require(Requirement::Tool("setpriv"))
    {
        return;
    }
    let ns = Ns::new("unpriv").expect("netns");
    let (_dir, exe) = tarball_redis();
    let _redis = common::start_redis(&ns, &exe, "0.0.0.0", 6390);

    let output = ns
        .command("setpriv")
        .args(common::AS_NOBODY)
        .args([
            common::perimeter(),
            "audit",
            "--format",
            "json",
            "--no-store",
        ])
        .env("NO_COLOR", "1")
        .env_remove("PERIMETER_APPROVALS")
        .current_dir("/")
        .output()
        .expect("run as nobody");
    assert_eq!(
        common::code(&output),
        0,
        "stderr: {}",
        common::stderr(&output)
    );
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let l = listener(&doc, 6390);
    assert_eq!(
        l["ownership"], "unattributed",
        "nobody cannot see root's descriptors"
    );
    assert_eq!(l["pids"], serde_json::json!([]));
    let problems = doc["problems"].to_string();
    assert!(
        problems.contains("CAP_"),
        "problems name the missing capability: {problems}"
    );
    // The Redis check needs no privilege: it asks the instance itself.
    assert!(finding(&doc, "redis.no-auth", ":6390").is_some());
    assert!(finding(&doc, "listener.unapproved", ":6390").is_some());
}

#[test]
fn second_audit_reports_the_listener_that_appeared() {
    if !require(Requirement::Netns) {
        return;
    }
    let ns = Ns::new("history").expect("netns");
    ns.ip(&["addr", "add", "198.18.4.1/32", "dev", "lo"])
        .expect("lab address");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("history.db");
    let db_text = db.to_string_lossy().into_owned();
    let approvals = no_approvals(dir.path());
    let approvals_text = approvals.to_string_lossy().into_owned();
    let args = [
        "audit",
        "--format",
        "json",
        "--db",
        &db_text,
        "--approvals",
        &approvals_text,
    ];

    let first = common::run(Some(&ns), &args);
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).expect("json");
    assert!(
        first.get("since").is_none(),
        "nothing to compare the first audit with"
    );

    let _web = common::start_web_as_nobody(&ns, "198.18.4.1", 8081);

    let second = common::run(Some(&ns), &args);
    let second: serde_json::Value = serde_json::from_slice(&second.stdout).expect("json");
    let changes = second["since"]["changes"]
        .as_array()
        .expect("changes since the first audit");
    assert!(
        changes.iter().any(|c| c["kind"] == "listener-appeared"
            && c["message"]
                .as_str()
                .unwrap_or("")
                .contains("198.18.4.1:8081")),
        "{changes:#?}"
    );
    let listed = common::run(None, &["audits", "--db", &db_text, "--format", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(listed["audits"].as_array().map(Vec::len), Some(2));
}

#[test]
fn all_netns_sees_and_asks_redis_inside_other_namespaces() {
    if !require(Requirement::Netns) || !require(Requirement::Tool("/usr/bin/redis-check-rdb")) {
        return;
    }
    let ns = Ns::new("allns").expect("netns");
    let (dir, exe) = tarball_redis();
    let redis = common::start_redis(&ns, &exe, "0.0.0.0", 6391);
    let pid = redis.pid();
    let approvals = no_approvals(dir.path());

    // From the host's namespace, without --all-netns: not there.
    let (_, doc) = audit_json(None, &approvals, &[]);
    let in_ns = |doc: &serde_json::Value| {
        doc["listeners"].as_array().is_some_and(|ls| {
            ls.iter()
                .any(|l| l["port"] == 6391 && l["netns"] == ns.name())
        })
    };
    assert!(
        !in_ns(&doc),
        "the default audit covers its own namespace only"
    );

    // With it: the listener, in its namespace, and Redis asked inside it.
    let (_, doc) = audit_json(None, &approvals, &["--all-netns"]);
    assert!(
        in_ns(&doc),
        "--all-netns lists the listener in {}",
        ns.name()
    );
    let no_auth = finding(&doc, "redis.no-auth", &format!("pid {pid})")).expect("redis.no-auth");
    assert!(
        no_auth["subject"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("in netns {}", ns.name())),
        "{no_auth:#}"
    );
    assert!(
        doc["host"]["namespaces"]
            .as_array()
            .is_some_and(|nss| nss.iter().any(|n| n["name"] == ns.name()))
    );
}
