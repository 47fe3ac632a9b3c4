//! The audit's Redis questions against real processes inside a network
//! namespace each test creates and removes: many silent unpackaged listeners
//! with a renamed Redis behind them, a service on 6379 that is not Redis, and
//! which commands a real Redis counts for the questions (INFO commandstats).
//! No packet leaves the test's own namespace.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use perimeter_host::audit::{AuditOptions, Collected, collect};
use perimeter_host::redis::{Question, TIMEOUT, ask_all};
use perimeter_model::RedisAuth;
use perimeter_testlab::{Daemon, Ns, Requirement, copy_to_tmp, require};

/// Forks N_PROCS children of one interpreter, each listening on N_PORTS
/// loopback ports, accepting every connection and never answering. Prints
/// `ready` once all listen. The children die with the parent.
const SILENT_FLEET: &str = r#"
import ctypes, os, selectors, signal, socket, sys
n_procs, n_ports = int(sys.argv[1]), int(sys.argv[2])
ready_r, ready_w = os.pipe()
kids = []
for _ in range(n_procs):
    pid = os.fork()
    if pid == 0:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)
        sel = selectors.DefaultSelector()
        for _ in range(n_ports):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(64)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        os.write(ready_w, b"x")
        held = []
        while True:
            for key, _ in sel.select():
                try:
                    held.append(key.fileobj.accept()[0])
                except BlockingIOError:
                    pass
    kids.append(pid)
for _ in range(n_procs):
    os.read(ready_r, 1)
print("ready", flush=True)
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
while True:
    signal.pause()
"#;

/// `program args` in `ns`, stopped on drop, once it has printed `ready`.
fn start_ready(ns: &Ns, program: &Path, args: &[&str]) -> Daemon {
    let mut child: Child = ns
        .command(&program.to_string_lossy())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the silent listeners");
    let stdout = child.stdout.take().expect("stdout piped");
    let daemon = Daemon::new("silent listeners", child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the ready line");
    assert_eq!(line.trim(), "ready", "the silent listeners did not start");
    daemon
}

/// A Redis from `exe` without a password, listening on `bind:port` in `ns`
/// (`bind` one address).
fn start_redis(ns: &Ns, exe: &Path, bind: &str, port: u16) -> Daemon {
    let port_text = port.to_string();
    let mut daemon = ns
        .spawn(
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
        )
        .expect("start redis");
    ns.wait_tcp(
        format!("{bind}:{port}").parse().expect("address"),
        Duration::from_secs(10),
    )
    .expect("redis listens");
    daemon.ensure_running().expect("redis runs");
    daemon
}

/// The audit's collection step, run inside `ns`.
fn collect_in(ns: &Ns) -> Collected {
    ns.enter(|| collect(&AuditOptions::default()))
        .expect("collect inside the lab")
}

#[test]
fn a_renamed_redis_behind_many_silent_unpackaged_listeners_is_found() {
    if !require(Requirement::Netns)
        || !require(Requirement::Tool("/usr/bin/redis-check-rdb"))
        || !require(Requirement::Tool("/usr/bin/python3"))
    {
        return;
    }
    let ns = Ns::new("rfleet").expect("netns");
    ns.ip(&["addr", "add", "198.18.2.1/32", "dev", "lo"])
        .expect("lab address");
    // 40 processes of one unpackaged executable, five silent ports each: 200
    // questions, all asked before the Redis started after them (its pid, and
    // so its question, comes after theirs; the old cap was 32).
    let (_fleet_dir, interpreter) = copy_to_tmp("/usr/bin/python3", "appd");
    let _fleet = start_ready(&ns, &interpreter, &["-c", SILENT_FLEET, "40", "5"]);
    let (_redis_dir, exe) = copy_to_tmp("/usr/bin/redis-check-rdb", "cache-worker");
    let redis = start_redis(&ns, &exe, "198.18.2.1", 7001);

    let collected = collect_in(&ns);
    let snapshot = &collected.snapshot;
    let n_silent = snapshot
        .listeners
        .iter()
        .filter(|l| {
            snapshot
                .main_owner(l)
                .is_some_and(|p| p.exe.as_deref() == Some(interpreter.as_path()))
        })
        .count();
    assert_eq!(n_silent, 200, "the fleet's listeners are all seen");
    let found: Vec<_> = snapshot
        .redis
        .iter()
        .map(|r| (r.endpoint.clone(), r.pids.clone(), r.auth.clone()))
        .collect();
    assert_eq!(
        found,
        [(
            "tcp 198.18.2.1:7001".to_owned(),
            vec![redis.pid()],
            RedisAuth::Open
        )],
        "exactly the renamed Redis is found"
    );
    let facts = &snapshot.redis[0];
    assert_eq!(facts.protected_mode, Some(false));
    assert_eq!(facts.config_file.as_deref(), Some(""));
    assert!(facts.version.is_some());
    // Speculative questions that found silence are not problems.
    let redis_problems: Vec<_> = snapshot
        .problems
        .iter()
        .filter(|p| p.message.contains("PING") || p.message.contains("Redis"))
        .collect();
    assert!(redis_problems.is_empty(), "{redis_problems:#?}");
}

#[test]
fn a_service_on_the_redis_port_that_is_not_redis_is_a_problem_not_redis() {
    if !require(Requirement::Netns) || !require(Requirement::Tool("/usr/bin/python3")) {
        return;
    }
    let ns = Ns::new("rnotre").expect("netns");
    // A web server on 6379: it answers PING with an HTTP error page.
    let mut web = ns
        .spawn(
            "/usr/bin/python3",
            &["-m", "http.server", "6379", "--bind", "0.0.0.0"],
        )
        .expect("start a web server");
    ns.wait_tcp(
        "127.0.0.1:6379".parse().expect("address"),
        Duration::from_secs(10),
    )
    .expect("the web server listens");
    web.ensure_running().expect("the web server runs");

    let collected = collect_in(&ns);
    let snapshot = &collected.snapshot;
    assert!(
        snapshot.redis.is_empty(),
        "not Redis, so no Redis facts: {:#?}",
        snapshot.redis
    );
    let problem = snapshot
        .problems
        .iter()
        .find(|p| p.subject == "tcp 0.0.0.0:6379")
        .unwrap_or_else(|| panic!("no problem about 6379: {:#?}", snapshot.problems));
    assert!(
        problem.message.starts_with("not Redis:") && problem.message.contains("not a RESP reply"),
        "{problem:?}"
    );
}

/// `INFO commandstats` of the Redis on `port` in `ns`: calls per command
/// (`config|get` for subcommands). The INFO asking is not counted in its own
/// answer, but in the next one.
fn command_calls(ns: &Ns, port: u16) -> BTreeMap<String, u64> {
    let text = ns
        .exec(
            "/usr/bin/redis-cli",
            &["-p", &port.to_string(), "info", "commandstats"],
        )
        .expect("redis-cli info commandstats");
    text.lines()
        .filter_map(|line| {
            let (name, stats) = line.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

#[test]
fn redis_sees_only_read_only_commands() {
    if !require(Requirement::Netns)
        || !require(Requirement::Tool("/usr/bin/redis-check-rdb"))
        || !require(Requirement::Tool("/usr/bin/redis-cli"))
    {
        return;
    }
    let ns = Ns::new("rmon").expect("netns");
    let (_dir, exe) = copy_to_tmp("/usr/bin/redis-check-rdb", "redis-server");
    let _redis = start_redis(&ns, &exe, "127.0.0.1", 6379);
    // Redis counts every command it runs, administrative ones (CONFIG)
    // included, which MONITOR would not show.
    let before = command_calls(&ns, 6379);

    let question = Question {
        address: "127.0.0.1:6379".parse().expect("address"),
        enter: Some(ns.path()),
        patience: TIMEOUT,
    };
    let answers = ask_all(std::slice::from_ref(&question));
    let answer = answers[0].as_ref().expect("asked inside the lab");
    assert_eq!(answer.auth, RedisAuth::Open);
    assert_eq!(answer.protected_mode, Some(false));
    assert_eq!(answer.bind.as_deref(), Some("127.0.0.1"));

    let after = command_calls(&ns, 6379);
    let sent: BTreeMap<&str, u64> = after
        .iter()
        .map(|(name, calls)| {
            (
                name.as_str(),
                calls - before.get(name).copied().unwrap_or(0),
            )
        })
        .filter(|(_, calls)| *calls > 0)
        .collect();
    // One INFO is the first `info commandstats`, counted now.
    assert_eq!(
        sent,
        BTreeMap::from([("config|get", 2), ("info", 2), ("ping", 1)]),
        "only read-only commands: PING, INFO server, CONFIG GET twice"
    );
}
