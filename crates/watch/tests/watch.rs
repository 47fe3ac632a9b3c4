//! The watch against the live kernel, as root: execs from the process events
//! connector (with their flags), processes that exit before they can be read,
//! and listeners appearing and going away inside a network namespace the test
//! creates. Nothing listens beyond that namespace; no packet is sent.
//!
//! Exec events are host-wide: each test looks only for the pids and paths it
//! made itself, so tests running side by side do not disturb each other.
//! Deadlines are generous guards against a hang, never assertions.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use perimeter_model::{Ownership, Protocol};
use perimeter_testlab::{Ns, Requirement, copy_to_tmp, require};
use perimeter_watch::{
    ExecEvent, ExecFlag, ExecSource, ExecSourceChoice, ListenerEvent, WatchEvent, WatchOptions,
    WatchSummary, Watcher, read_exec,
};

/// How long a test waits for an event before it gives up (a guard, not a
/// measurement: events arrive in milliseconds).
const GUARD: Duration = Duration::from_secs(60);

/// A watch running on its own thread, its events on a channel.
struct Running {
    events: Receiver<WatchEvent>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<WatchSummary>>,
}

impl Running {
    fn start(opts: WatchOptions) -> Running {
        let watcher = Watcher::start(opts).expect("the watch starts");
        Running::run(watcher)
    }

    fn run(watcher: Watcher) -> Running {
        let (tx, events) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                watcher.run(&stop, None, &mut |event| {
                    let _ = tx.send(event);
                    std::ops::ControlFlow::Continue(())
                })
            })
        };
        Running {
            events,
            stop,
            thread: Some(thread),
        }
    }

    /// The first event `wanted` picks, waiting at most [`GUARD`].
    fn wait_for<T>(&self, what: &str, mut wanted: impl FnMut(&WatchEvent) -> Option<T>) -> T {
        let deadline = Instant::now() + GUARD;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    if let Some(found) = wanted(&event) {
                        return found;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no {what} within {GUARD:?}");
    }

    fn wait_for_exec(&self, pid: u32) -> ExecEvent {
        self.wait_for(&format!("exec of pid {pid}"), |event| match event {
            WatchEvent::Exec(exec) if exec.pid == pid => Some((**exec).clone()),
            _ => None,
        })
    }

    fn stop(mut self) -> WatchSummary {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("the watch thread ends")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn connector_opts() -> WatchOptions {
    WatchOptions {
        interval: Duration::from_millis(200),
        exec_source: ExecSourceChoice::Connector,
        ..WatchOptions::default()
    }
}

#[test]
fn every_exec_of_a_script_chain_is_one_event() {
    if !require(Requirement::Root) {
        return;
    }
    let running = Running::start(connector_opts());
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("chain");
    std::fs::write(&script, "#!/usr/bin/env sh\nexec sleep 5\n").expect("write the script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut child = Command::new(&script)
        .current_dir("/")
        .spawn()
        .expect("run the script");
    let pid = child.id();
    // env, then sh, then sleep: three execs of one pid, each reported once,
    // in order. An exec replaced before /proc could be read says so instead
    // of repeating the next one's image.
    let seen: Vec<ExecEvent> = (0..3).map(|_| running.wait_for_exec(pid)).collect();
    let _ = child.kill();
    let _ = child.wait();

    let last = seen.last().expect("three events");
    assert_eq!(last.exe.as_deref(), Some(Path::new("/usr/bin/sleep")));
    assert_eq!(last.cmdline, ["sleep", "5"]);
    assert!(!last.superseded && !last.gone);
    for exec in &seen[..2] {
        assert!(
            exec.superseded
                || matches!(
                    exec.exe.as_deref().and_then(Path::to_str),
                    Some("/usr/bin/env" | "/usr/bin/dash" | "/usr/bin/sleep")
                ),
            "{exec:#?}"
        );
        if exec.superseded {
            assert_eq!(exec.exe, None);
            assert!(exec.cmdline.is_empty());
        }
    }
    running.stop();
}

#[test]
fn an_exec_from_tmp_is_unpackaged_and_world_writable() {
    if !require(Requirement::Root) {
        return;
    }
    let running = Running::start(connector_opts());
    let (_dir, exe) = copy_to_tmp("/usr/bin/sleep", "kdevtmpfsi");
    let mut child = Command::new(&exe)
        .arg("5")
        .current_dir("/")
        .spawn()
        .expect("run the copy");
    let exec = running.wait_for_exec(child.id());
    let _ = child.kill();
    let _ = child.wait();

    assert_eq!(exec.source, ExecSource::Connector);
    assert!(!exec.gone, "{exec:?}");
    assert_eq!(exec.exe.as_deref(), Some(exe.as_path()));
    assert_eq!(exec.ppid, Some(std::process::id()));
    assert_eq!(exec.uid, Some(0));
    assert_eq!(exec.user.as_deref(), Some("root"));
    assert_eq!(exec.comm.as_deref(), Some("kdevtmpfsi"));
    assert_eq!(
        exec.cmdline,
        vec![exe.to_string_lossy().into_owned(), "5".to_owned()]
    );
    assert_eq!(exec.cwd.as_deref(), Some(Path::new("/")));
    assert_eq!(exec.ownership, Ownership::Unpackaged);
    assert_eq!(exec.world_writable_dir.as_deref(), Some(Path::new("/tmp")));
    assert_eq!(
        exec.flags(),
        vec![ExecFlag::Unpackaged, ExecFlag::WorldWritable]
    );
    // The parent is this test binary.
    assert_eq!(exec.parent_exe, std::env::current_exe().ok());

    let summary = running.stop();
    assert!(summary.n_suspicious_execs >= 1, "{summary:?}");
}

#[test]
fn a_packaged_exec_is_not_suspicious() {
    if !require(Requirement::Root) || !require(Requirement::Path("/var/lib/dpkg/info")) {
        return;
    }
    let running = Running::start(connector_opts());
    let mut child = Command::new("/usr/bin/sleep")
        .arg("5")
        .spawn()
        .expect("run sleep");
    let exec = running.wait_for_exec(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(exec.exe.as_deref(), Some(Path::new("/usr/bin/sleep")));
    match &exec.ownership {
        Ownership::Package(package) => assert_eq!(package.name, "coreutils"),
        other => panic!("sleep should be coreutils', not {other:?}"),
    }
    assert!(exec.flags().is_empty(), "{exec:?}");
    drop(running);
}

#[test]
fn held_execs_are_judged_together_and_still_reported() {
    if !require(Requirement::Root) {
        return;
    }
    // The agent's way: execs wait for each other, then one package lookup
    // serves them all.
    let running = Running::start(WatchOptions {
        exec_hold: Duration::from_millis(300),
        ..connector_opts()
    });
    let (_dir, exe) = copy_to_tmp("/usr/bin/sleep", "held-copy");
    let mut copy = Command::new(&exe).arg("5").spawn().expect("run the copy");
    let mut packaged = Command::new("/usr/bin/sleep")
        .arg("5")
        .spawn()
        .expect("run sleep");
    let (copy_pid, packaged_pid) = (copy.id(), packaged.id());
    let (mut copied, mut original) = (None, None);
    running.wait_for("the execs of both", |event| {
        if let WatchEvent::Exec(exec) = event {
            if exec.pid == copy_pid {
                copied = Some((**exec).clone());
            } else if exec.pid == packaged_pid {
                original = Some((**exec).clone());
            }
        }
        (copied.is_some() && original.is_some()).then_some(())
    });
    let copied = copied.expect("the copy's exec was seen");
    let original = original.expect("sleep's exec was seen");
    for child in [&mut copy, &mut packaged] {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert_eq!(copied.ownership, Ownership::Unpackaged);
    assert!(copied.flags().contains(&ExecFlag::Unpackaged), "{copied:?}");
    if require(Requirement::Path("/var/lib/dpkg/info")) {
        assert!(
            matches!(original.ownership, Ownership::Package(_)),
            "{original:?}"
        );
    }
    let summary = running.stop();
    assert!(summary.n_execs >= 2, "{summary:?}");
}

#[test]
fn processes_that_exit_at_once_are_reported_never_dropped() {
    if !require(Requirement::Root) {
        return;
    }
    let running = Running::start(connector_opts());
    let (_dir, exe) = copy_to_tmp("/usr/bin/true", "blink");
    // Each one exits before, during or after its event is read: whatever
    // /proc still showed, every one must be reported.
    let mut pids = Vec::new();
    for _ in 0..20 {
        let mut child = Command::new(&exe).spawn().expect("run the copy");
        pids.push(child.id());
        let _ = child.wait();
    }
    let mut seen = std::collections::BTreeMap::new();
    running.wait_for("an exec event for each of the 20 processes", |event| {
        if let WatchEvent::Exec(exec) = event
            && pids.contains(&exec.pid)
        {
            seen.insert(exec.pid, (**exec).clone());
        }
        (seen.len() == pids.len()).then_some(())
    });
    for exec in seen.values() {
        // A process read in time names its executable; one already gone
        // still has its pid, and its parent from the fork event.
        assert_eq!(exec.ppid, Some(std::process::id()), "{exec:?}");
        if exec.gone {
            assert_eq!(exec.exe, None);
            assert!(exec.exe_unreadable.is_some());
        } else {
            assert_eq!(exec.exe.as_deref(), Some(exe.as_path()));
            assert!(exec.flags().contains(&ExecFlag::WorldWritable));
        }
    }
    let n_gone = seen.values().filter(|exec| exec.gone).count();
    eprintln!("{n_gone} of 20 had exited before /proc was read");
    drop(running);
}

#[test]
fn an_exec_from_memory_is_memfd_and_deleted() {
    if !require(Requirement::Root) || !require(Requirement::Tool("/usr/bin/python3")) {
        return;
    }
    let running = Running::start(connector_opts());
    // Fileless execution as malware does it: the program copied into an
    // anonymous memory file and exec'd from its descriptor.
    let script = "import os\n\
        fd = os.memfd_create('payload', 0)\n\
        os.write(fd, open('/usr/bin/sleep', 'rb').read())\n\
        os.execve(fd, ['payload', '5'], {})\n";
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::null())
        .spawn()
        .expect("run python");
    // python3 execs itself first (its own exec event), then the memfd.
    let exec = running.wait_for("the memfd exec", |event| match event {
        WatchEvent::Exec(exec) if exec.pid == child.id() && exec.memfd => Some((**exec).clone()),
        _ => None,
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(exec.exe.as_deref(), Some(Path::new("/memfd:payload")));
    assert!(exec.exe_deleted);
    assert_eq!(exec.flags(), vec![ExecFlag::Deleted, ExecFlag::Memfd]);
    assert!(
        matches!(&exec.ownership, Ownership::Unknown(why) if why.contains("memfd")),
        "{:?}",
        exec.ownership
    );
    drop(running);
}

#[test]
fn a_deleted_executable_is_flagged() {
    if !require(Requirement::Root) {
        return;
    }
    let (_dir, exe) = copy_to_tmp("/usr/bin/sleep", "gone");
    let mut child = Command::new(&exe).arg("30").spawn().expect("run the copy");
    // The kernel appends " (deleted)" to the exe link once the file is gone.
    std::fs::remove_file(&exe).expect("delete the copy");
    let exec = read_exec(
        Path::new("/proc"),
        child.id(),
        ExecSource::ProcPoll,
        std::time::SystemTime::now(),
        None,
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(exec.exe.as_deref(), Some(exe.as_path()));
    assert!(exec.exe_deleted);
    assert!(!exec.memfd);
}

#[test]
fn polling_sees_a_process_that_lives_long_enough() {
    if !require(Requirement::Root) {
        return;
    }
    let running = Running::start(WatchOptions {
        exec_source: ExecSourceChoice::ProcPoll,
        ..connector_opts()
    });
    let (_dir, exe) = copy_to_tmp("/usr/bin/sleep", "poller");
    let mut child = Command::new(&exe).arg("30").spawn().expect("run the copy");
    let exec = running.wait_for_exec(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(exec.source, ExecSource::ProcPoll);
    assert_eq!(exec.exe.as_deref(), Some(exe.as_path()));
    assert_eq!(
        exec.flags(),
        vec![ExecFlag::Unpackaged, ExecFlag::WorldWritable]
    );
    drop(running);
}

#[test]
fn listeners_appear_and_go_away_inside_a_namespace() {
    if !require(Requirement::Netns) || !require(Requirement::Tool("/usr/bin/python3")) {
        return;
    }
    let ns = Arc::new(Ns::new("watch").expect("netns"));
    ns.ip(&["addr", "add", "198.18.41.1/32", "dev", "lo"])
        .expect("lab address");
    // The watch starts on a thread inside the namespace: its listeners are the
    // namespace's, and its exec events come from the initial namespace's
    // connector, which it enters for that.
    let running = {
        let ns = Arc::clone(&ns);
        ns.enter(move || {
            let watcher = Watcher::start(connector_opts()).expect("the watch starts");
            let entered = watcher.started().entered_initial_netns;
            let names: Vec<String> = watcher
                .started()
                .namespaces
                .iter()
                .map(|netns| netns.name.clone())
                .collect();
            // Threads started here inherit the namespace.
            (Running::run(watcher), entered, names)
        })
        .expect("enter the namespace")
    };
    let (running, entered, names) = running;
    assert!(entered, "the connector is opened in the initial namespace");
    assert_eq!(names, vec![ns.name().to_owned()]);

    let server = "import socket, time\n\
        s = socket.socket()\n\
        s.bind(('198.18.41.1', 8081))\n\
        s.listen()\n\
        time.sleep(60)\n";
    let mut daemon = ns
        .spawn("/usr/bin/python3", &["-c", server])
        .expect("start the listener");
    let appeared: ListenerEvent =
        running.wait_for("listener-appeared on 8081", |event| match event {
            WatchEvent::ListenerAppeared(event) if event.listener.port == 8081 => {
                Some((**event).clone())
            }
            _ => None,
        });
    let listener = &appeared.listener;
    assert_eq!(listener.protocol, Protocol::Tcp);
    assert_eq!(listener.address.to_string(), "198.18.41.1");
    assert!(appeared.is_exposed());
    assert_eq!(listener.netns.name, ns.name());
    assert_eq!(listener.pids(), vec![daemon.pid()]);
    let owner = appeared.main_owner().expect("an owner");
    assert_eq!(owner.pid, daemon.pid());
    assert_eq!(
        owner.exe,
        std::fs::canonicalize("/usr/bin/python3").ok(),
        "{owner:?}"
    );
    assert_eq!(owner.user_name(), "root");
    // Only this check needs a dpkg database; the rest of the test runs without.
    if require(Requirement::Path("/var/lib/dpkg/info")) {
        assert!(
            matches!(owner.ownership, Ownership::Package(_)),
            "{:?}",
            owner.ownership
        );
    }

    daemon.stop();
    let gone: ListenerEvent = running.wait_for("listener-gone on 8081", |event| match event {
        WatchEvent::ListenerGone(event) if event.listener.port == 8081 => Some((**event).clone()),
        _ => None,
    });
    assert_eq!(gone.listener.inode, appeared.listener.inode);
    // What went away is named as it was when it appeared.
    assert_eq!(
        gone.main_owner().map(|owner| owner.pid),
        Some(appeared.listener.pids()[0])
    );
    let summary = running.stop();
    assert_eq!(summary.n_listeners_appeared, 1, "{summary:?}");
    assert_eq!(summary.n_listeners_gone, 1, "{summary:?}");
}
