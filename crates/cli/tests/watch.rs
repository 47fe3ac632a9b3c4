//! `perimeter watch`, the real binary, as root: an exec from a world-writable
//! directory and a listener beyond loopback appearing inside a network
//! namespace the test creates, as JSON Lines; the unprivileged fallback to
//! polling /proc; `--only-suspicious`; stopping on a signal and after
//! `--duration`; errors. Nothing listens beyond the test's namespace and no
//! packet is sent.
//!
//! Exec events are host-wide: each test looks only for the pids and paths it
//! made. Deadlines are generous guards against a hang, never assertions.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use perimeter_testlab::{Ns, Requirement, copy_to_tmp, require};
use serde_json::Value;

const GUARD: Duration = Duration::from_secs(60);
const SCHEMA: &str = "perimeter.watch-event/1";

/// A running `perimeter watch`, its stdout lines on a channel.
struct Watch {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<Value>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Watch {
    /// Starts `command` (already given its arguments) and waits for its
    /// `started` object.
    fn start(mut command: Command) -> (Watch, Value) {
        let mut child = command
            .env("NO_COLOR", "1")
            .env_remove("PERIMETER_APPROVALS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start perimeter watch");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let mut watch = Watch {
            child,
            lines,
            seen: Vec::new(),
            stderr: Some(stderr),
        };
        let started = watch.wait_for("the started object", |event| event["kind"] == "started");
        (watch, started)
    }

    /// The next object `wanted` accepts, waiting at most [`GUARD`].
    fn wait_for(&mut self, what: &str, mut wanted: impl FnMut(&Value) -> bool) -> Value {
        let deadline = Instant::now() + GUARD;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.lines.recv_timeout(left) else {
                break;
            };
            let event: Value = serde_json::from_str(&line)
                .unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
            assert_eq!(event["schema"], SCHEMA, "{line}");
            self.seen.push(event.clone());
            if wanted(&event) {
                return event;
            }
        }
        panic!(
            "no {what} within {GUARD:?}; seen:\n{}",
            self.seen
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    fn wait_for_exec(&mut self, exe: &Path) -> Value {
        let exe = exe.to_string_lossy().into_owned();
        self.wait_for(&format!("exec of {exe}"), |event| {
            event["kind"] == "exec" && event["exe"] == exe.as_str()
        })
    }

    /// Sends `signal`, reads what is left, and returns the exit code, the
    /// `stopped` object and stderr.
    fn stop(self, signal: Signal) -> (i32, Value, String) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal the watch");
        self.finish()
    }

    fn finish(mut self) -> (i32, Value, String) {
        let stopped = self.wait_for("the stopped object", |event| event["kind"] == "stopped");
        let status = self.child.wait().expect("the watch exits");
        let stderr = self
            .stderr
            .take()
            .and_then(|thread| thread.join().ok())
            .unwrap_or_default();
        (status.code().unwrap_or(-1), stopped, stderr)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn watch_args(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["watch", "--format", "jsonl", "--duration", "120s"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

fn approvals_file(dir: &Path) -> PathBuf {
    let path = dir.join("approvals.toml");
    std::fs::write(&path, "version = 1\n").expect("write approvals");
    path
}

const SERVER: &str = "import socket, sys, time\n\
    s = socket.socket()\n\
    s.bind((sys.argv[1], int(sys.argv[2])))\n\
    s.listen()\n\
    time.sleep(120)\n";

#[test]
fn an_exec_from_tmp_and_a_listener_beyond_loopback_in_the_namespace() {
    if !require(Requirement::Netns) || !require(Requirement::Tool("/usr/bin/python3")) {
        return;
    }
    let ns = Ns::new("watch").expect("netns");
    ns.ip(&["addr", "add", "198.18.42.1/32", "dev", "lo"])
        .expect("lab address");
    // A shell, so the command line can carry a secret the program ignores.
    let (dir, miner) = copy_to_tmp("/usr/bin/dash", "xmrig");
    let approvals = approvals_file(dir.path());
    let approvals_text = approvals.to_string_lossy().into_owned();

    let mut command = ns.command(common::perimeter());
    command.args(watch_args(&[
        "--interval",
        "200ms",
        "--approvals",
        &approvals_text,
    ]));
    let (mut watch, started) = Watch::start(command);
    assert_eq!(started["exec_source"], "netlink-connector", "{started}");
    assert_eq!(started["exec_source_note"], Value::Null);
    // The connector lives in the initial namespace only: watch entered it.
    assert_eq!(started["entered_initial_netns"], true);
    assert_eq!(started["namespaces"], serde_json::json!([ns.name()]));
    assert_eq!(started["listeners"], 0);
    assert_eq!(started["approvals"], approvals_text.as_str());

    // The miner: a copy of a program run from under /tmp, with a secret.
    let mut child = Command::new(&miner)
        .args(["-c", "sleep 5; :", "xmrig", "--password=hunter2"])
        .current_dir("/")
        .stderr(Stdio::null())
        .spawn()
        .expect("run the copy");
    let exec = watch.wait_for_exec(&miner);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(exec["pid"], child.id());
    assert_eq!(exec["ppid"], std::process::id());
    assert_eq!(exec["source"], "netlink-connector");
    assert_eq!(exec["user"], "root");
    assert_eq!(exec["uid"], 0);
    assert_eq!(
        exec["cmdline"],
        format!("{} -c sleep 5; : xmrig --password=***", miner.display())
    );
    assert_eq!(exec["cwd"], "/");
    assert_eq!(exec["ownership"], "unpackaged");
    assert_eq!(exec["package"], Value::Null);
    assert_eq!(exec["world_writable_dir"], "/tmp");
    assert_eq!(
        exec["flags"],
        serde_json::json!(["unpackaged", "world-writable"])
    );
    assert_eq!(exec["suspicious"], true);
    assert_eq!(exec["gone"], false);
    assert_eq!(exec["netns"], "host");

    // A listener on the namespace's lab address.
    let mut server = ns
        .spawn("/usr/bin/python3", &["-c", SERVER, "198.18.42.1", "8082"])
        .expect("start the listener");
    let appeared = watch.wait_for("listener-appeared on 8082", |event| {
        event["kind"] == "listener-appeared" && event["port"] == 8082
    });
    assert_eq!(appeared["protocol"], "tcp");
    assert_eq!(appeared["address"], "198.18.42.1");
    assert_eq!(appeared["endpoint"], "tcp 198.18.42.1:8082");
    assert_eq!(appeared["exposed"], true);
    assert_eq!(appeared["suspicious"], true);
    assert_eq!(appeared["netns"], ns.name());
    assert_eq!(appeared["pid"], server.pid());
    assert_eq!(appeared["pids"], serde_json::json!([server.pid()]));
    assert_eq!(appeared["user"], "root");
    let python = std::fs::canonicalize("/usr/bin/python3").expect("python3");
    assert_eq!(appeared["exe"], python.to_string_lossy().as_ref());
    assert_eq!(appeared["approval"], "unapproved");
    // Only this check needs a dpkg database; the rest of the test runs without.
    if require(Requirement::Path("/var/lib/dpkg/info")) {
        assert_eq!(appeared["ownership"], "package");
    }

    server.stop();
    let gone = watch.wait_for("listener-gone on 8082", |event| {
        event["kind"] == "listener-gone" && event["port"] == 8082
    });
    assert_eq!(gone["inode"], appeared["inode"]);
    assert_eq!(gone["pid"], appeared["pid"]);
    assert_eq!(gone["approval"], Value::Null);

    let (code, stopped, stderr) = watch.stop(Signal::SIGINT);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert_eq!(stopped["reason"], "signal");
    assert!(
        stopped["execs"].as_u64().is_some_and(|n| n >= 1),
        "{stopped}"
    );
    assert_eq!(stopped["listeners_appeared"], 1);
    assert_eq!(stopped["listeners_gone"], 1);
    assert!(!stderr.contains("hunter2"));
}

#[test]
fn unprivileged_it_says_why_and_polls_proc() {
    if !require(Requirement::Netns) || !require(Requirement::Tool("setpriv")) {
        return;
    }
    // Inside a namespace of its own, the connector is out of reach: nobody
    // may not enter the initial namespace.
    let ns = Ns::new("watchnb").expect("netns");
    let mut command = ns.command("setpriv");
    command
        .args(common::AS_NOBODY)
        .arg(common::perimeter())
        .args(watch_args(&[]))
        .current_dir("/");
    let (mut watch, started) = Watch::start(command);
    assert_eq!(started["exec_source"], "proc-poll", "{started}");
    let note = started["exec_source_note"].as_str().unwrap_or_default();
    assert!(
        note.contains("only in the initial network namespace") && note.contains("CAP_SYS_ADMIN"),
        "{note}"
    );
    assert!(started["poll_interval_ms"].as_u64().is_some(), "{started}");

    // A process of nobody's, long-lived enough to be polled.
    let (_dir, miner) = copy_to_tmp("/usr/bin/sleep", "kinsing");
    let miner_text = miner.to_string_lossy().into_owned();
    let mut child = Command::new("setpriv")
        .args(common::AS_NOBODY)
        .args([&miner_text, "60"])
        .current_dir("/")
        .spawn()
        .expect("run the copy as nobody");
    let exec = watch.wait_for_exec(&miner);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(exec["pid"], child.id());
    assert_eq!(exec["source"], "proc-poll");
    assert_eq!(exec["user"], "nobody");
    assert_eq!(
        exec["flags"],
        serde_json::json!(["unpackaged", "world-writable"])
    );

    let (code, stopped, stderr) = watch.stop(Signal::SIGTERM);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert_eq!(stopped["reason"], "signal");
    assert!(stderr.contains("CAP_SYS_ADMIN"), "{stderr}");
    assert!(
        stderr.contains("polling /proc") && stderr.contains("can be missed"),
        "{stderr}"
    );
}

#[test]
fn only_suspicious_in_human_lines() {
    if !require(Requirement::Root) || !require(Requirement::Path("/var/lib/dpkg/info")) {
        return;
    }
    let (_dir, miner) = copy_to_tmp("/usr/bin/sleep", "watchdogd");
    let mut watch = Command::new(common::perimeter())
        .args(["watch", "--only-suspicious", "--duration", "120s"])
        .env("NO_COLOR", "1")
        .env_remove("PERIMETER_APPROVALS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start perimeter watch");
    let mut stderr = BufReader::new(watch.stderr.take().expect("stderr"));
    // The human format announces itself on stderr once it watches.
    let mut announce = String::new();
    while !announce.contains("perimeter: watching") {
        announce.clear();
        if stderr.read_line(&mut announce).unwrap_or(0) == 0 {
            panic!("watch ended before it started");
        }
    }
    assert!(
        announce.contains("netlink process events connector"),
        "{announce}"
    );

    // First a packaged program, then the unpackaged copy: events come in
    // order, so when the copy's line arrives the other would have come first.
    let mut packaged = Command::new("/usr/bin/sleep")
        .arg("5")
        .spawn()
        .expect("run sleep");
    let mut child = Command::new(&miner).arg("5").spawn().expect("run the copy");

    let stdout = watch.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let wanted = miner.to_string_lossy().into_owned();
    let deadline = Instant::now() + GUARD;
    let line = loop {
        assert!(Instant::now() < deadline, "no line for {wanted}");
        let Some(Ok(line)) = lines.next() else {
            panic!("watch output ended before {wanted}");
        };
        assert!(
            !line.contains("/usr/bin/sleep"),
            "a packaged exec was printed: {line}"
        );
        if line.contains(&wanted) {
            break line;
        }
    };
    for process in [&mut packaged, &mut child] {
        let _ = process.kill();
        let _ = process.wait();
    }
    assert!(line.contains(" ! exec "), "{line}");
    assert!(
        line.ends_with("[unpackaged, world-writable /tmp]"),
        "{line}"
    );
    assert!(!line.contains('\x1b'), "NO_COLOR: {line}");

    kill(Pid::from_raw(watch.id() as i32), Signal::SIGINT).expect("signal");
    let status = watch.wait().expect("exits");
    assert_eq!(status.code(), Some(0));
    let mut rest = String::new();
    let _ = stderr.read_to_string(&mut rest);
    assert!(rest.contains("perimeter: watched"), "{rest}");
}

#[test]
fn duration_ends_the_watch() {
    // Polling needs no privilege: this runs as any user.
    let output = Command::new(common::perimeter())
        .args([
            "watch",
            "--format",
            "jsonl",
            "--exec-source",
            "poll",
            "--duration",
            "1s",
            "--interval",
            "300ms",
        ])
        .env("NO_COLOR", "1")
        .env_remove("PERIMETER_APPROVALS")
        .stdin(Stdio::null())
        .output()
        .expect("run perimeter watch");
    assert_eq!(common::code(&output), 0, "{}", common::stderr(&output));
    let events: Vec<Value> = common::stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON line"))
        .collect();
    let first = events.first().expect("a started object");
    assert_eq!(first["kind"], "started");
    assert_eq!(first["exec_source"], "proc-poll");
    assert_eq!(first["interval_ms"], 300);
    let last = events.last().expect("a stopped object");
    assert_eq!(last["kind"], "stopped");
    assert_eq!(last["reason"], "duration");
    for event in &events {
        assert_eq!(event["schema"], SCHEMA);
    }
}

#[test]
fn errors_exit_2() {
    let missing = common::run(
        None,
        &["watch", "--approvals", "/nonexistent/approvals.toml"],
    );
    assert_eq!(common::code(&missing), 2);
    assert!(
        common::stderr(&missing).contains("/nonexistent/approvals.toml"),
        "{}",
        common::stderr(&missing)
    );
    let zero = common::run(None, &["watch", "--interval", "0s"]);
    assert_eq!(common::code(&zero), 2);
    assert!(
        common::stderr(&zero).contains("--interval must be longer than zero"),
        "{}",
        common::stderr(&zero)
    );
    let bad = common::run(None, &["watch", "--duration", "soon"]);
    assert_eq!(common::code(&bad), 2);
    let usage = common::run(None, &["watch", "--format", "xml"]);
    assert_eq!(common::code(&usage), 2);
}
