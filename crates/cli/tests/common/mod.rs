//! Shared helpers for the end-to-end tests: run the real `perimeter` binary,
//! inside a test's own network namespace when given, and read its JSON.

#![allow(dead_code, reason = "each test file uses a different subset")]

pub(crate) mod containers;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use perimeter_testlab::Ns;
use serde_json::Value;

pub(crate) fn perimeter() -> &'static str {
    env!("CARGO_BIN_EXE_perimeter")
}

/// Run perimeter with `args`, in `ns` if given.
pub(crate) fn run(ns: Option<&Ns>, args: &[&str]) -> Output {
    let mut cmd = match ns {
        Some(ns) => ns.command(perimeter()),
        None => Command::new(perimeter()),
    };
    cmd.args(args)
        .env("NO_COLOR", "1")
        .env_remove("PERIMETER_APPROVALS")
        .env_remove("PERIMETER_DB")
        .env_remove("PERIMETER_MD5")
        .stdin(Stdio::null());
    cmd.output().expect("perimeter runs")
}

pub(crate) fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `perimeter audit --format json --no-store --approvals FILE` in `ns`.
pub(crate) fn audit_json(ns: Option<&Ns>, approvals: &Path, extra: &[&str]) -> (i32, Value) {
    let approvals = approvals.to_string_lossy().into_owned();
    let mut args = vec![
        "audit",
        "--format",
        "json",
        "--no-store",
        "--approvals",
        approvals.as_str(),
    ];
    args.extend_from_slice(extra);
    let output = run(ns, &args);
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "audit output is not JSON ({err}); exit {:?}\nstdout:\n{}\nstderr:\n{}",
            output.status,
            stdout(&output),
            stderr(&output)
        )
    });
    assert_eq!(doc["schema"], "perimeter.audit/1");
    (code(&output), doc)
}

/// The listener on `port` (and protocol tcp).
pub(crate) fn listener(doc: &Value, port: u16) -> Value {
    doc["listeners"]
        .as_array()
        .and_then(|ls| {
            ls.iter()
                .find(|l| l["port"] == port && l["protocol"] == "tcp")
                .cloned()
        })
        .unwrap_or_else(|| panic!("no tcp listener on port {port} in {doc:#}"))
}

/// Whether `address` is in one of the IPv4 prefixes of `list` (JSON strings).
pub(crate) fn in_prefixes(list: &serde_json::Value, address: &str) -> bool {
    let address: std::net::Ipv4Addr = address.parse().expect("address");
    list.as_array().into_iter().flatten().any(|net| {
        let Some((base, len)) = net.as_str().and_then(|n| n.split_once('/')) else {
            return false;
        };
        let (Ok(base), Ok(len)) = (base.parse::<std::net::Ipv4Addr>(), len.parse::<u32>()) else {
            return false;
        };
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        u32::from(address) & mask == u32::from(base) & mask
    })
}

/// Sorted, deduplicated rule ids of the findings whose subject mentions any
/// of `needles`.
pub(crate) fn rules_about(doc: &Value, needles: &[&str]) -> Vec<String> {
    let mut rules: Vec<String> = doc["findings"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .filter(|f| {
                    let subject = f["subject"].as_str().unwrap_or("");
                    needles.iter().any(|n| subject.contains(n))
                })
                .filter_map(|f| f["rule"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    rules.sort();
    rules.dedup();
    rules
}

pub(crate) fn finding<'a>(doc: &'a Value, rule: &str, needle: &str) -> Option<&'a Value> {
    doc["findings"]
        .as_array()?
        .iter()
        .find(|f| f["rule"] == rule && f["subject"].as_str().unwrap_or("").contains(needle))
}

/// The ruleset of a hardened host: drop inbound except loopback, established
/// traffic, and the given TCP ports.
pub(crate) fn default_drop_ruleset(ports: &[u16]) -> String {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let allow = if ports.is_empty() {
        String::new()
    } else {
        format!("tcp dport {{ {} }} accept", ports.join(", "))
    };
    format!(
        "table inet filter {{\n  chain input {{\n    type filter hook input priority 0; policy drop;\n    iif lo accept\n    ct state established,related accept\n    {allow}\n  }}\n}}\n"
    )
}

pub(crate) fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Start `program args` in `ns` and wait until `address` accepts TCP
/// connections from inside the namespace.
pub(crate) fn start_listening(
    ns: &Ns,
    program: &str,
    args: &[&str],
    address: &str,
) -> perimeter_testlab::Daemon {
    let mut daemon = ns
        .spawn(program, args)
        .unwrap_or_else(|e| panic!("start {program}: {e:#}"));
    ns.wait_tcp(
        address.parse().expect("socket address"),
        std::time::Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("{program} does not listen on {address}: {e:#}"));
    daemon.ensure_running().expect("still running");
    daemon
}

/// A Redis started from `exe` without a password or persistence, on
/// `bind:port` (`bind` as Redis takes it: `0.0.0.0`, `* -::*`, ...), waited
/// for on loopback.
pub(crate) fn start_redis(ns: &Ns, exe: &Path, bind: &str, port: u16) -> perimeter_testlab::Daemon {
    let port_text = port.to_string();
    start_listening(
        ns,
        &exe.to_string_lossy(),
        &[
            "--port",
            &port_text,
            "--bind",
            bind,
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ],
        &format!("127.0.0.1:{port}"),
    )
}

/// `setpriv` arguments that run the rest of its command line as nobody, with
/// no supplementary groups.
pub(crate) const AS_NOBODY: [&str; 3] = ["--reuid=65534", "--regid=65534", "--clear-groups"];

/// Python's http.server on `address:port`, run as nobody (the packaged
/// /usr/bin/python3: the pyenv shim on PATH is not runnable by nobody).
pub(crate) fn start_web_as_nobody(ns: &Ns, address: &str, port: u16) -> perimeter_testlab::Daemon {
    let port_text = port.to_string();
    let server = [
        "/usr/bin/python3",
        "-m",
        "http.server",
        &port_text,
        "--bind",
        address,
        "--directory",
        "/",
    ];
    let args: Vec<&str> = AS_NOBODY.iter().copied().chain(server).collect();
    start_listening(ns, "setpriv", &args, &format!("{address}:{port}"))
}

// ufw inside a lab namespace (tests/ufw.rs, tests/docker.rs): only under `ip
// netns exec`, in a private mount namespace where a copy of its configuration
// is bound over /etc/ufw and /etc/default/ufw; the host's own firewall and
// ufw configuration are never touched.

/// A private copy of ufw's configuration, as the package installs it.
pub(crate) fn private_ufw_config(dir: &Path) {
    let etc = dir.join("etc-ufw");
    std::fs::create_dir_all(etc.join("applications.d")).expect("mkdir");
    let templates = Path::new("/usr/share/ufw");
    for entry in std::fs::read_dir(templates.join("iptables")).expect("ufw's rule templates") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, etc.join(path.file_name().expect("name"))).expect("copy");
    }
    for name in ["before.init", "after.init", "ufw.conf"] {
        std::fs::copy(templates.join(name), etc.join(name)).expect("copy");
    }
    std::fs::write(etc.join("sysctl.conf"), "").expect("write");
    std::fs::write(
        dir.join("default-ufw"),
        "IPV6=yes\nDEFAULT_INPUT_POLICY=\"DROP\"\nDEFAULT_OUTPUT_POLICY=\"ACCEPT\"\n\
         DEFAULT_FORWARD_POLICY=\"DROP\"\nDEFAULT_APPLICATION_POLICY=\"SKIP\"\n\
         MANAGE_BUILTINS=no\nIPT_SYSCTL=/etc/ufw/sysctl.conf\nIPT_MODULES=\"\"\n",
    )
    .expect("write");
}

/// `ufw ARGS` inside `ns`, on the private configuration in `dir`.
pub(crate) fn ufw(ns: &Ns, dir: &Path, args: &[&str]) {
    let script = "set -e\n\
                  mount --bind \"$1/etc-ufw\" /etc/ufw\n\
                  mount --bind \"$1/default-ufw\" /etc/default/ufw\n\
                  mount -t tmpfs tmpfs /run\n\
                  shift\n\
                  exec ufw \"$@\"";
    let dir_text = dir.to_string_lossy().into_owned();
    let mut full = vec!["-m", "--propagation", "private", "sh", "-c", script, "sh"];
    full.push(&dir_text);
    full.extend_from_slice(args);
    ns.exec("unshare", &full)
        .unwrap_or_else(|e| panic!("ufw {args:?}: {e:#}"));
}

// The real-connection oracle of the container tests (tests/docker.rs,
// tests/podman.rs): what the audit says of each (source, port) against
// what `perimeter_testlab::connect_all` really did.

/// perimeter's answer for a connection from `source` to `host`'s address and
/// `port`: whether some listener the audit saw on that address (its own, or
/// a wildcard) lets it in, or why the audit could not tell. No listener
/// there: nothing answers.
pub(crate) fn verdict(doc: &Value, host: &str, source: &str, port: u16) -> Result<bool, String> {
    let mut reached = false;
    let listeners = doc["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["protocol"] == "tcp" && l["port"] == port);
    for listener in listeners {
        let address = listener["address"].as_str().unwrap_or_default();
        let takes_it = address == host
            || address == "0.0.0.0"
            || (address == "::" && listener["accepts_ipv4"] == true);
        if !takes_it {
            continue;
        }
        let reach = &listener["reachable_from"];
        if reach.is_null() {
            return Err(format!(
                "no reachability for {address}:{port}: {listener:#}"
            ));
        }
        let unknown = reach["unknown"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|u| in_prefixes(&Value::Array(vec![u["sources"].clone()]), source));
        if let Some(unknown) = unknown {
            return Err(format!("unknown for {address}:{port}: {unknown}"));
        }
        reached |= in_prefixes(&reach["allowed"], source);
    }
    Ok(reached)
}

/// Where the audit's answers (`verdict`) differ from the real connections
/// to `host`, or are undecided, one line each.
pub(crate) fn disagreements(
    doc: &Value,
    host: &str,
    connected: &[((std::net::IpAddr, u16), bool)],
) -> Vec<String> {
    let mut mismatches = Vec::new();
    for &((source, port), really) in connected {
        match verdict(doc, host, &source.to_string(), port) {
            Ok(says) if says == really => {}
            Ok(says) => mismatches.push(format!(
                "{source} -> {port}: perimeter says reachable={says}, a real connection {}",
                if really { "opened" } else { "did not open" }
            )),
            Err(why) => mismatches.push(format!("{source} -> {port}: {why}")),
        }
    }
    mismatches
}

/// What a client in `client` reads from `address` within two seconds, if it
/// connects.
pub(crate) fn answer(client: &Ns, address: std::net::SocketAddr) -> Option<String> {
    use std::io::Read;
    use std::time::Duration;
    client
        .enter(move || {
            let mut stream =
                std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
            stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            let mut text = String::new();
            let _ = stream.read_to_string(&mut text);
            Some(text)
        })
        .expect("enter the client's namespace")
}

/// What `client` reads from `address` once the container behind it answers
/// `+PONG` (a container's server starts after `run` returns), asking for
/// ten seconds at most.
pub(crate) fn await_pong(client: &Ns, address: std::net::SocketAddr) -> Option<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut reply = None;
    while std::time::Instant::now() < deadline {
        reply = answer(client, address);
        if reply.as_deref().is_some_and(|r| r.contains("+PONG")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    reply
}
