//! The deploy gate end to end: `perimeter check` refuses until a person has
//! approved every listener beyond loopback, `perimeter approve` records the
//! decision atomically, and a malformed approvals file stops everything with
//! file, line and column, untouched.

mod common;

use common::{code, default_drop_ruleset, run, stderr, stdout};
use perimeter_testlab::{Daemon, Ns, Requirement, require};

/// What [`web_host`] needs; each test asks before it builds one.
fn require_web_host() -> bool {
    require(Requirement::Netns)
        && require(Requirement::Tool("nft"))
        && require(Requirement::Tool("setpriv"))
        && require(Requirement::Tool("/usr/bin/python3"))
}

/// A hardened lab host (default-drop firewall) with one web server beyond
/// loopback, run as nobody from a packaged interpreter.
fn web_host() -> (Ns, Daemon) {
    let ns = Ns::new("gate").expect("netns");
    ns.ip(&["addr", "add", "198.18.3.1/32", "dev", "lo"])
        .expect("lab address");
    ns.nft(&default_drop_ruleset(&[8080])).expect("firewall");
    let web = common::start_web_as_nobody(&ns, "198.18.3.1", 8080);
    (ns, web)
}

#[test]
fn check_fails_until_the_listener_is_approved() {
    if !require_web_host() {
        return;
    }
    let (ns, _web) = web_host();
    let dir = tempfile::tempdir().expect("tempdir");
    let approvals = dir.path().join("approvals.toml");
    let approvals_text = approvals.to_string_lossy().into_owned();

    // No file yet: a named approvals file must exist.
    let output = run(Some(&ns), &["check", "--approvals", &approvals_text]);
    assert_eq!(code(&output), 2, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("cannot read"),
        "{}",
        stderr(&output)
    );

    std::fs::write(&approvals, "# reviewed in PR #12\nversion = 1\n").expect("write");
    let output = run(Some(&ns), &["check", "--approvals", &approvals_text]);
    assert_eq!(code(&output), 1, "{}", stdout(&output));
    let out = stdout(&output);
    assert!(out.contains("UNAPPROVED  tcp 198.18.3.1:8080"), "{out}");
    assert!(out.contains("check FAILED: 1 unapproved"), "{out}");

    // Selectors without a reason, and no selectors at all: refused.
    let output = run(
        Some(&ns),
        &[
            "approve",
            "--approvals",
            &approvals_text,
            "--port",
            "8080",
            "--by",
            "t",
        ],
    );
    assert_eq!(code(&output), 2);
    assert!(
        stderr(&output).contains("needs --reason"),
        "{}",
        stderr(&output)
    );
    let output = run(
        Some(&ns),
        &["approve", "--approvals", &approvals_text, "--by", "t"],
    );
    assert_eq!(code(&output), 2, "no blanket approve from a script");
    assert!(
        stderr(&output).contains("needs a terminal"),
        "{}",
        stderr(&output)
    );
    // A selector that matches nothing.
    let output = run(
        Some(&ns),
        &[
            "approve",
            "--approvals",
            &approvals_text,
            "--port",
            "9999",
            "--reason",
            "x",
            "--by",
            "t",
        ],
    );
    assert_eq!(code(&output), 2);

    let output = run(
        Some(&ns),
        &[
            "approve",
            "--approvals",
            &approvals_text,
            "--port",
            "8080",
            "--protocol",
            "tcp",
            "--reason",
            "lab web server",
            "--by",
            "tester",
            "--expires",
            "2999-01-01",
        ],
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let text = std::fs::read_to_string(&approvals).expect("read");
    assert!(
        text.starts_with("# reviewed in PR #12\nversion = 1\n"),
        "comments kept: {text}"
    );
    for expected in [
        "[[listener]]",
        &format!("netns = \"{}\"", ns.name()),
        "address = \"198.18.3.1\"",
        "port = 8080",
        "exe = \"/usr/bin/python3.11\"",
        "user = \"nobody\"",
        "approved_by = \"tester\"",
        "reason = \"lab web server\"",
        "expires = 2999-01-01",
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }

    let output = run(Some(&ns), &["check", "--approvals", &approvals_text]);
    assert_eq!(code(&output), 0, "{}", stdout(&output));
    assert!(stdout(&output).contains("check passed"));

    // Approving again changes nothing.
    let output = run(
        Some(&ns),
        &[
            "approve",
            "--approvals",
            &approvals_text,
            "--port",
            "8080",
            "--reason",
            "again",
            "--by",
            "t",
        ],
    );
    assert_eq!(code(&output), 0);
    assert!(stdout(&output).contains("already approved"));
    assert_eq!(std::fs::read_to_string(&approvals).expect("read"), text);
}

#[test]
fn expired_approval_fails_the_gate() {
    if !require_web_host() {
        return;
    }
    let (ns, _web) = web_host();
    let dir = tempfile::tempdir().expect("tempdir");
    let approvals = dir.path().join("approvals.toml");
    std::fs::write(
        &approvals,
        format!(
            "version = 1\n\n[[listener]]\nnetns = \"{}\"\nprotocol = \"tcp\"\naddress = \"198.18.3.1\"\nport = 8080\n\
             package = \"python3.11-minimal\"\nuser = \"nobody\"\napproved_by = \"a\"\napproved_at = 2020-01-01\n\
             reason = \"temporary\"\nexpires = 2020-02-01\n",
            ns.name()
        ),
    )
    .expect("write");
    let output = run(
        Some(&ns),
        &["check", "--approvals", &approvals.to_string_lossy()],
    );
    assert_eq!(code(&output), 1, "{}", stdout(&output));
    assert!(stdout(&output).contains("EXPIRED"), "{}", stdout(&output));
}

#[test]
fn malformed_approvals_file_is_an_error_with_position_and_is_never_rewritten() {
    if !require_web_host() {
        return;
    }
    let (ns, _web) = web_host();
    let dir = tempfile::tempdir().expect("tempdir");
    let approvals = dir.path().join("approvals.toml");
    let broken = "version = 1\n\n[[listener]]\nprotocol = \"tcp\"\nadress = \"198.18.3.1\"\n";
    std::fs::write(&approvals, broken).expect("write");
    let path = approvals.to_string_lossy().into_owned();

    for args in [
        vec!["check", "--approvals", path.as_str()],
        vec!["audit", "--no-store", "--approvals", path.as_str()],
        vec![
            "approve",
            "--approvals",
            path.as_str(),
            "--port",
            "8080",
            "--reason",
            "r",
            "--by",
            "t",
        ],
    ] {
        let output = run(Some(&ns), &args);
        assert_eq!(code(&output), 2, "{args:?}: {}", stderr(&output));
        let err = stderr(&output);
        assert!(
            err.contains(&format!("{path}:5:1: unknown field `adress`")),
            "{args:?}: {err}"
        );
        assert_eq!(
            std::fs::read_to_string(&approvals).expect("read"),
            broken,
            "file untouched"
        );
    }
}

/// Drives a program on a pseudo-terminal: waits for each prompt, answers it,
/// then prints everything the program wrote and exits with its status.
const PTY_DRIVER: &str = r#"
import os, pty, select, sys, time
argv = sys.argv[1:]
script = []
while argv[0] != "--":
    script.append((argv[0].encode(), argv[1].encode().decode("unicode_escape").encode()))
    argv = argv[2:]
argv = argv[1:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(argv[0], argv)
out = b""
def read_some(wait):
    global out
    r, _, _ = select.select([fd], [], [], wait)
    if not r:
        return True
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        return False
    out += chunk
    return bool(chunk)
seen = 0
for prompt, answer in script:
    deadline = time.time() + 30
    while prompt not in out[seen:]:
        if time.time() > deadline or not read_some(0.5):
            sys.stdout.write(out.decode(errors="replace"))
            sys.exit("no prompt %r" % prompt)
    seen = out.index(prompt, seen) + len(prompt)
    os.write(fd, answer)
while read_some(5):
    pass
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;

#[test]
fn interactive_approval_asks_one_listener_at_a_time() {
    if !require_web_host() {
        return;
    }
    let (ns, _web) = web_host();
    let _second = common::start_web_as_nobody(&ns, "198.18.3.1", 8081);
    let dir = tempfile::tempdir().expect("tempdir");
    let approvals = dir.path().join("approvals.toml");
    let approvals_text = approvals.to_string_lossy().into_owned();

    // Listeners are offered in port order: yes to 8080 (with a reason after
    // an empty one is refused), no to 8081.
    let output = ns
        .command("/usr/bin/python3")
        .args([
            "-c",
            PTY_DRIVER,
            "approve this listener?",
            "y\\n",
            "reason",
            "\\n",
            "reason",
            "lab web server\\n",
            "approve this listener?",
            "n\\n",
            "--",
            common::perimeter(),
            "approve",
            "--approvals",
            &approvals_text,
            "--by",
            "tester",
        ])
        .env("NO_COLOR", "1")
        .output()
        .expect("run the pty driver");
    let out = stdout(&output);
    assert_eq!(code(&output), 0, "{out}\n{}", stderr(&output));
    assert!(
        out.contains("2 listeners beyond loopback need a decision"),
        "{out}"
    );
    assert!(out.contains("tcp 198.18.3.1:8080"), "{out}");
    assert!(
        out.contains("exe      /usr/bin/python3.11  package python3.11-minimal"),
        "{out}"
    );
    assert!(out.contains("a reason is required"), "{out}");
    assert!(out.contains("1 approved"), "{out}");

    let text = std::fs::read_to_string(&approvals).expect("approvals written");
    assert_eq!(
        text.lines().filter(|l| *l == "[[listener]]").count(),
        1,
        "{text}"
    );
    assert!(
        text.contains("port = 8080") && text.contains("reason = \"lab web server\""),
        "{text}"
    );

    let output = run(Some(&ns), &["check", "--approvals", &approvals_text]);
    assert_eq!(code(&output), 1);
    assert!(
        stdout(&output).contains("UNAPPROVED  tcp 198.18.3.1:8081"),
        "{}",
        stdout(&output)
    );
}

/// A port forwarded to a host behind this one (a VM, say) by a DNAT, with
/// nothing listening here: `ss` shows nothing, yet the port is open. The
/// gate lists it, refuses until a person approves it, and the audit's JSON
/// says where it goes; the input chain's drop, which it never crosses, makes
/// it `firewall.bypassed`.
#[test]
fn a_forwarded_port_with_nothing_listening_needs_approval_too() {
    if !(require(Requirement::Netns) && require(Requirement::Tool("nft"))) {
        return;
    }
    let gateway = Ns::new("fwd").expect("netns");
    let behind = Ns::new("vm").expect("netns");
    gateway
        .ip(&[
            "link",
            "add",
            "vm0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            behind.name(),
        ])
        .expect("veth");
    gateway
        .ip(&["addr", "add", "198.18.4.1/24", "dev", "vm0"])
        .expect("address");
    gateway.ip(&["link", "set", "vm0", "up"]).expect("up");
    behind
        .ip(&["addr", "add", "198.18.4.2/24", "dev", "eth0"])
        .expect("address behind");
    gateway
        .nft(
            "table inet filter {
                chain input { type filter hook input priority filter; policy drop;
                    ct state established,related accept
                    iif lo accept
                }
                chain forward { type filter hook forward priority filter; policy drop;
                    ct state established,related accept
                    ip daddr 198.18.4.2 tcp dport 22 accept
                }
            }
            table ip nat {
                chain prerouting { type nat hook prerouting priority dstnat; policy accept;
                    tcp dport 2222 dnat to 198.18.4.2:22
                }
            }",
        )
        .expect("firewall");
    let dir = tempfile::tempdir().expect("tempdir");
    let approvals = dir.path().join("approvals.toml");
    let approvals_text = approvals.to_string_lossy().into_owned();
    std::fs::write(&approvals, "version = 1\n").expect("write");

    let output = run(
        Some(&gateway),
        &[
            "check",
            "--approvals",
            &approvals_text,
            "--fail-on",
            "critical",
        ],
    );
    let out = stdout(&output);
    assert_eq!(code(&output), 1, "{out}{}", stderr(&output));
    assert!(
        out.contains("UNAPPROVED  tcp 0.0.0.0:2222 forwarded to 198.18.4.2:22 by a DNAT"),
        "{out}"
    );
    assert!(out.contains("check FAILED: 1 unapproved"), "{out}");

    let (_, audit) = common::audit_json(Some(&gateway), &approvals, &[]);
    let listeners = audit["listeners"].as_array().expect("listeners");
    let forwarded: Vec<_> = listeners.iter().filter(|l| l["port"] == 2222).collect();
    assert_eq!(forwarded.len(), 1, "{listeners:#?}");
    assert_eq!(forwarded[0]["published"]["to"], "198.18.4.2:22");
    assert_eq!(forwarded[0]["pids"].as_array().map(Vec::len), Some(0));
    assert_eq!(forwarded[0]["approval"]["status"], "unapproved");
    assert_eq!(
        forwarded[0]["reachable_from"]["allowed"],
        serde_json::json!(["0.0.0.0/0"])
    );
    let rules: Vec<&str> = audit["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["subject"].as_str().is_some_and(|s| s.contains(":2222")))
        .filter_map(|f| f["rule"].as_str())
        .collect();
    assert!(rules.contains(&"firewall.bypassed"), "{rules:?}");
    assert!(rules.contains(&"listener.unapproved"), "{rules:?}");

    let output = run(
        Some(&gateway),
        &[
            "approve",
            "--approvals",
            &approvals_text,
            "--port",
            "2222",
            "--by",
            "alice",
            "--reason",
            "ssh to the build VM",
        ],
    );
    assert_eq!(code(&output), 0, "{}{}", stdout(&output), stderr(&output));
    let output = run(
        Some(&gateway),
        &[
            "check",
            "--approvals",
            &approvals_text,
            "--fail-on",
            "critical",
        ],
    );
    assert_eq!(code(&output), 0, "{}", stdout(&output));
}
