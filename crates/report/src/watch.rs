//! `perimeter watch`'s output: the `perimeter.watch-event/1` JSON Lines
//! objects (`started`, `exec`, `listener-appeared`, `listener-gone`,
//! `problem`, `stopped`) and the human line of each exec and listener event.
//!
//! The watch's events belong to `perimeter-watch`, which this crate does not
//! depend on (it depends on the model only): the CLI lends each event's
//! fields through the views here ([`Exec`], [`ListenerEvent`], [`Started`],
//! [`Stopped`]). Every time and pid comes in with the view, so what this
//! module writes depends on its input alone.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use comfy_table::Color;
use perimeter_model::{Listener, Netns, Ownership, Problem, Process};
use serde::Serialize;

use crate::audit::{ApprovalStatus, redacted_cmdline};
use crate::json::ProblemJson;
use crate::style::Style;
use crate::time_fmt::{rfc3339_millis, time_of_day};

/// The schema of every JSON Lines object `perimeter watch` writes.
pub const SCHEMA: &str = "perimeter.watch-event/1";

/// How the watch started.
#[derive(Debug)]
pub struct Started<'a> {
    pub at: SystemTime,
    /// The watching process.
    pub pid: u32,
    /// `netlink-connector` or `proc-poll`.
    pub exec_source: &'static str,
    /// Why the connector is not used, when it is not.
    pub exec_source_note: Option<&'a str>,
    /// Set when execs are polled: processes shorter-lived than this can be
    /// missed.
    pub poll_interval: Option<Duration>,
    pub entered_initial_netns: bool,
    /// How often listeners are compared.
    pub interval: Duration,
    pub namespaces: Vec<&'a str>,
    /// Listening sockets present at the start.
    pub n_listeners: usize,
    pub approvals: Option<&'a Path>,
    pub problems: &'a [Problem],
}

/// One exec, with everything the watch could read of the process.
#[derive(Debug)]
pub struct Exec<'a> {
    pub at: SystemTime,
    /// `netlink-connector` or `proc-poll`.
    pub source: &'static str,
    pub pid: u32,
    pub ppid: Option<u32>,
    pub parent_comm: Option<&'a str>,
    pub parent_exe: Option<&'a Path>,
    pub uid: Option<u32>,
    pub user: Option<&'a str>,
    pub comm: Option<&'a str>,
    pub exe: Option<&'a Path>,
    pub exe_deleted: bool,
    /// Why `exe` could not be read.
    pub exe_unreadable: Option<&'a str>,
    pub cmdline: &'a [String],
    pub cwd: Option<&'a Path>,
    pub netns: Option<&'a Netns>,
    pub unit: Option<&'a str>,
    pub container: Option<&'a str>,
    pub ownership: &'a Ownership,
    pub world_writable_dir: Option<&'a Path>,
    /// Why it looks suspicious (`unpackaged`, `world-writable`, `deleted`,
    /// `memfd`), in that order; empty when it does not.
    pub flags: Vec<&'static str>,
    /// The process exited before it could be read.
    pub gone: bool,
    /// The process exec'd again before this exec could be read.
    pub superseded: bool,
}

/// Whether a listener appeared or went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerChange {
    Appeared,
    Gone,
}

impl ListenerChange {
    /// The event's `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerChange::Appeared => "listener-appeared",
            ListenerChange::Gone => "listener-gone",
        }
    }
}

/// A listener that appeared or went away.
#[derive(Debug)]
pub struct ListenerEvent<'a> {
    pub change: ListenerChange,
    pub at: SystemTime,
    pub listener: &'a Listener,
    /// The first owner that is not a child of another owner (the master of a
    /// pre-forked server).
    pub owner: Option<&'a Process>,
    /// For a listener that appeared: its approval; `None` for one that went
    /// away.
    pub approval: Option<&'a ApprovalStatus>,
}

/// How the watch ended, and what it saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    pub at: SystemTime,
    /// `duration`, `signal` or `output-closed`.
    pub reason: &'static str,
    pub elapsed: Duration,
    pub n_execs: usize,
    pub n_suspicious_execs: usize,
    pub n_gone_execs: usize,
    pub n_listeners_appeared: usize,
    pub n_listeners_gone: usize,
    /// Times the kernel dropped process events.
    pub n_lost: usize,
}

// ---------------------------------------------------------------------------
// The perimeter.watch-event/1 objects
// ---------------------------------------------------------------------------

#[derive(Debug, Serialize)]
struct StartedJson<'a> {
    schema: &'static str,
    kind: &'static str,
    at: String,
    pid: u32,
    exec_source: &'static str,
    /// Why the connector is not used, when it is not.
    exec_source_note: Option<&'a str>,
    /// Set when execs are polled: processes shorter-lived than this can be missed.
    poll_interval_ms: Option<u128>,
    entered_initial_netns: bool,
    interval_ms: u128,
    namespaces: &'a [&'a str],
    listeners: usize,
    approvals: Option<String>,
    problems: Vec<ProblemJson<'a>>,
}

#[derive(Debug, Serialize)]
struct ProblemEventJson<'a> {
    schema: &'static str,
    kind: &'static str,
    at: String,
    #[serde(flatten)]
    problem: ProblemJson<'a>,
}

#[derive(Debug, Serialize)]
struct ExecJson<'a> {
    schema: &'static str,
    kind: &'static str,
    at: String,
    source: &'static str,
    pid: u32,
    ppid: Option<u32>,
    parent_comm: Option<&'a str>,
    parent_exe: Option<String>,
    uid: Option<u32>,
    user: Option<&'a str>,
    comm: Option<&'a str>,
    exe: Option<String>,
    exe_deleted: bool,
    /// Why `exe` is null.
    exe_unreadable: Option<&'a str>,
    /// With password-like options redacted.
    cmdline: String,
    cwd: Option<String>,
    netns: Option<&'a str>,
    unit: Option<&'a str>,
    container: Option<&'a str>,
    /// `package`, `unpackaged` or `unknown`.
    ownership: &'static str,
    package: Option<String>,
    ownership_note: Option<&'a str>,
    world_writable_dir: Option<String>,
    flags: &'a [&'static str],
    suspicious: bool,
    /// The process exited before /proc could be read: the fields above are
    /// what the kernel's events told.
    gone: bool,
    /// The process exec'd again before this exec could be read (a
    /// `#!/usr/bin/env` script): what it ran is unknown; the next exec event
    /// of the same pid shows what it runs now.
    superseded: bool,
}

#[derive(Debug, Serialize)]
struct ListenerJson<'a> {
    schema: &'static str,
    kind: &'static str,
    at: String,
    netns: &'a str,
    protocol: &'static str,
    address: String,
    port: u16,
    endpoint: String,
    scope: &'static str,
    /// Beyond loopback.
    exposed: bool,
    v6only: Option<bool>,
    accepts_ipv4: bool,
    interface: Option<&'a str>,
    inode: u64,
    pids: Vec<u32>,
    pid: Option<u32>,
    process: Option<String>,
    user: Option<String>,
    exe: Option<String>,
    cmdline: Option<String>,
    ownership: &'static str,
    package: Option<String>,
    /// `approved`, `expired`, `unapproved` or `not-needed` for a listener
    /// that appeared; null for one that went away.
    approval: Option<&'static str>,
    approval_detail: Option<&'a str>,
    suspicious: bool,
}

#[derive(Debug, Serialize)]
struct StoppedJson {
    schema: &'static str,
    kind: &'static str,
    at: String,
    reason: &'static str,
    seconds: f64,
    execs: usize,
    suspicious_execs: usize,
    /// Execs whose process exited before it could be read (flags unknown).
    gone_execs: usize,
    listeners_appeared: usize,
    listeners_gone: usize,
    /// Times the kernel dropped process events (its buffer was full).
    lost: usize,
}

fn ownership_label(ownership: &Ownership) -> &'static str {
    match ownership {
        Ownership::Package(_) => "package",
        Ownership::Unpackaged => "unpackaged",
        Ownership::Unknown(_) | Ownership::NotChecked => "unknown",
    }
}

fn ownership_note(ownership: &Ownership) -> Option<&str> {
    match ownership {
        Ownership::Unknown(why) => Some(why),
        _ => None,
    }
}

fn path_text(path: Option<&Path>) -> Option<String> {
    path.map(|path| path.display().to_string())
}

/// The `started` object, one line of JSON.
pub fn started_json(started: &Started<'_>) -> serde_json::Result<String> {
    serde_json::to_string(&StartedJson {
        schema: SCHEMA,
        kind: "started",
        at: rfc3339_millis(started.at),
        pid: started.pid,
        exec_source: started.exec_source,
        exec_source_note: started.exec_source_note,
        poll_interval_ms: started.poll_interval.map(|interval| interval.as_millis()),
        entered_initial_netns: started.entered_initial_netns,
        interval_ms: started.interval.as_millis(),
        namespaces: &started.namespaces,
        listeners: started.n_listeners,
        approvals: path_text(started.approvals),
        problems: started.problems.iter().map(ProblemJson::from).collect(),
    })
}

/// A `problem` object (something could not be seen; the watch goes on).
pub fn problem_json(at: SystemTime, problem: &Problem) -> serde_json::Result<String> {
    serde_json::to_string(&ProblemEventJson {
        schema: SCHEMA,
        kind: "problem",
        at: rfc3339_millis(at),
        problem: ProblemJson::from(problem),
    })
}

/// An `exec` object.
pub fn exec_json(exec: &Exec<'_>) -> serde_json::Result<String> {
    serde_json::to_string(&ExecJson {
        schema: SCHEMA,
        kind: "exec",
        at: rfc3339_millis(exec.at),
        source: exec.source,
        pid: exec.pid,
        ppid: exec.ppid,
        parent_comm: exec.parent_comm,
        parent_exe: path_text(exec.parent_exe),
        uid: exec.uid,
        user: exec.user,
        comm: exec.comm,
        exe: path_text(exec.exe),
        exe_deleted: exec.exe_deleted,
        exe_unreadable: exec.exe_unreadable,
        cmdline: redacted_cmdline(exec.cmdline),
        cwd: path_text(exec.cwd),
        netns: exec.netns.map(|ns| ns.name.as_str()),
        unit: exec.unit,
        container: exec.container,
        ownership: ownership_label(exec.ownership),
        package: exec.ownership.package().map(ToString::to_string),
        ownership_note: ownership_note(exec.ownership),
        world_writable_dir: path_text(exec.world_writable_dir),
        suspicious: !exec.flags.is_empty(),
        flags: &exec.flags,
        gone: exec.gone,
        superseded: exec.superseded,
    })
}

/// A `listener-appeared` or `listener-gone` object.
pub fn listener_json(event: &ListenerEvent<'_>) -> serde_json::Result<String> {
    let listener = event.listener;
    let owner = event.owner;
    serde_json::to_string(&ListenerJson {
        schema: SCHEMA,
        kind: event.change.as_str(),
        at: rfc3339_millis(event.at),
        netns: &listener.netns.name,
        protocol: listener.protocol.as_str(),
        address: listener.address.to_string(),
        port: listener.port,
        endpoint: listener.endpoint(),
        scope: listener.scope.as_str(),
        exposed: listener.scope.is_exposed(),
        v6only: listener.v6only,
        accepts_ipv4: listener.accepts_ipv4(),
        interface: listener.interface.as_deref(),
        inode: listener.inode,
        pids: listener.pids(),
        pid: owner.map(|p| p.pid),
        process: owner.map(Process::name),
        user: owner.map(Process::user_name),
        exe: owner.and_then(|p| path_text(p.exe.as_deref())),
        cmdline: owner.map(|p| redacted_cmdline(&p.cmdline)),
        ownership: match owner {
            Some(owner) => ownership_label(&owner.ownership),
            None => "unknown",
        },
        package: owner.and_then(|p| p.ownership.package().map(ToString::to_string)),
        approval: event.approval.map(ApprovalStatus::as_str),
        approval_detail: event.approval.and_then(ApprovalStatus::entry),
        suspicious: listener.scope.is_exposed(),
    })
}

/// The `stopped` object.
pub fn stopped_json(stopped: &Stopped) -> serde_json::Result<String> {
    serde_json::to_string(&StoppedJson {
        schema: SCHEMA,
        kind: "stopped",
        at: rfc3339_millis(stopped.at),
        reason: stopped.reason,
        // Milliseconds are plenty, and a shorter number reads better.
        seconds: (stopped.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        execs: stopped.n_execs,
        suspicious_execs: stopped.n_suspicious_execs,
        gone_execs: stopped.n_gone_execs,
        listeners_appeared: stopped.n_listeners_appeared,
        listeners_gone: stopped.n_listeners_gone,
        lost: stopped.n_lost,
    })
}

// ---------------------------------------------------------------------------
// Human lines
// ---------------------------------------------------------------------------

/// One exec as a line: time (UTC), a `!` when it is suspicious, the process
/// and its parent, user, executable and package, command line, working
/// directory, and why it is suspicious.
pub fn exec_line(exec: &Exec<'_>, style: Style) -> String {
    let mark = if exec.flags.is_empty() {
        " ".to_owned()
    } else {
        style.paint("!", Color::Red)
    };
    let mut text = format!("{} {mark} exec     pid {}", time_of_day(exec.at), exec.pid);
    if let Some(ppid) = exec.ppid {
        let _ = write!(text, " ppid {ppid}");
        if let Some(parent) = exec.parent_comm {
            let _ = write!(text, " ({parent})");
        }
    }
    let user = match (exec.user, exec.uid) {
        (Some(user), _) => user.to_owned(),
        (None, Some(uid)) => format!("uid {uid}"),
        (None, None) => "user ?".to_owned(),
    };
    let _ = write!(text, "  {user}  ");
    match exec.exe {
        Some(exe) => {
            let _ = write!(text, "{}", exe.display());
            if exec.exe_deleted {
                text.push_str(" (deleted)");
            }
        }
        None => match exec.comm {
            Some(comm) => {
                let _ = write!(text, "[{comm}]");
            }
            None => text.push('?'),
        },
    }
    match exec.ownership {
        Ownership::Package(package) => {
            let _ = write!(text, " ({package})");
        }
        Ownership::Unpackaged => text.push_str(" (no package)"),
        Ownership::Unknown(_) | Ownership::NotChecked => {}
    }
    if !exec.cmdline.is_empty() {
        let _ = write!(text, "  $ {}", redacted_cmdline(exec.cmdline));
    }
    if let Some(cwd) = exec.cwd {
        let _ = write!(text, "  cwd {}", cwd.display());
    }
    if let Some(netns) = exec.netns
        && netns.name != "host"
    {
        let _ = write!(text, "  netns {netns}");
    }
    if let Some(container) = exec.container {
        let _ = write!(text, "  container {container}");
    }
    if exec.gone {
        text.push_str(&style.paint("  (exited before it could be read)", Color::DarkGrey));
    }
    if exec.superseded {
        text.push_str(&style.paint(
            "  (exec'd again before it could be read: see the next line)",
            Color::DarkGrey,
        ));
    }
    if !exec.flags.is_empty() {
        let labels: Vec<String> = exec
            .flags
            .iter()
            .map(|&flag| match (flag, exec.world_writable_dir) {
                ("world-writable", Some(dir)) => format!("world-writable {}", dir.display()),
                _ => flag.to_owned(),
            })
            .collect();
        let _ = write!(
            text,
            "  {}",
            style.paint(&format!("[{}]", labels.join(", ")), Color::Red)
        );
    }
    text
}

/// One listener event as a line: time (UTC), a `!` when it is beyond
/// loopback, `listen+` or `listen-`, the endpoint, its scope and namespace,
/// the owner, and for one that appeared its approval.
pub fn listener_line(event: &ListenerEvent<'_>, style: Style) -> String {
    let listener = event.listener;
    let exposed = listener.scope.is_exposed();
    let mark = if exposed {
        style.paint("!", Color::Red)
    } else {
        " ".to_owned()
    };
    let label = match event.change {
        ListenerChange::Appeared => style.paint("listen+ ", Color::Green),
        ListenerChange::Gone => style.paint("listen- ", Color::Yellow),
    };
    let mut text = format!(
        "{} {mark} {label} {} ({}",
        time_of_day(event.at),
        listener.endpoint(),
        listener.scope.as_str()
    );
    if let Some(interface) = &listener.interface {
        let _ = write!(text, ", dev {interface}");
    }
    let _ = write!(text, ", netns {})", listener.netns);
    match event.owner {
        Some(owner) => {
            let _ = write!(
                text,
                "  pid {} {}  {}",
                owner.pid,
                owner.name(),
                owner.user_name()
            );
            if let Some(exe) = &owner.exe {
                let _ = write!(text, "  {}", exe.display());
            }
            match &owner.ownership {
                Ownership::Package(package) => {
                    let _ = write!(text, " ({package})");
                }
                Ownership::Unpackaged => {
                    let _ = write!(text, " {}", style.paint("(no package)", Color::Red));
                }
                Ownership::Unknown(_) | Ownership::NotChecked => {}
            }
        }
        None => text.push_str("  owner unknown"),
    }
    if let Some(approval) = event.approval
        && *approval != ApprovalStatus::NotNeeded
    {
        let status = match approval {
            ApprovalStatus::Approved(_) => approval.as_str().to_owned(),
            _ => style.paint(approval.as_str(), Color::Red),
        };
        let _ = write!(text, "  approval: {status}");
        if let Some(entry) = approval.entry() {
            let _ = write!(text, " ({entry})");
        }
    }
    if exposed && event.change == ListenerChange::Appeared {
        let _ = write!(text, "  {}", style.paint("[beyond loopback]", Color::Red));
    }
    text
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use perimeter_model::{PackageRef, Protocol, Scope, SocketOwner};

    use super::*;

    fn at() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123)
    }

    struct MinerParts {
        cmdline: Vec<String>,
        exe: PathBuf,
        cwd: PathBuf,
        parent_exe: PathBuf,
        netns: Netns,
        ownership: Ownership,
    }

    fn miner_parts() -> MinerParts {
        MinerParts {
            cmdline: ["miner", "--pool-password", "hunter2"]
                .map(String::from)
                .to_vec(),
            exe: PathBuf::from("/tmp/.x/miner"),
            cwd: PathBuf::from("/tmp"),
            parent_exe: PathBuf::from("/opt/redis/bin/redis-server"),
            netns: Netns {
                inode: 4026531840,
                name: "host".to_owned(),
            },
            ownership: Ownership::Unpackaged,
        }
    }

    fn miner(parts: &MinerParts) -> Exec<'_> {
        Exec {
            at: at(),
            source: "netlink-connector",
            pid: 4242,
            ppid: Some(4200),
            parent_comm: Some("redis-server"),
            parent_exe: Some(&parts.parent_exe),
            uid: Some(0),
            user: Some("root"),
            comm: Some("miner"),
            exe: Some(&parts.exe),
            exe_deleted: false,
            exe_unreadable: None,
            cmdline: &parts.cmdline,
            cwd: Some(&parts.cwd),
            netns: Some(&parts.netns),
            unit: None,
            container: None,
            ownership: &parts.ownership,
            world_writable_dir: Some(&parts.cwd),
            flags: vec!["unpackaged", "world-writable"],
            gone: false,
            superseded: false,
        }
    }

    #[test]
    fn exec_json_redacts_and_flags() {
        let parts = miner_parts();
        let line = exec_json(&miner(&parts)).expect("json");
        let value: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(value["schema"], SCHEMA);
        assert_eq!(value["kind"], "exec");
        assert_eq!(value["at"], "2026-11-18T11:06:40.123Z");
        assert_eq!(value["cmdline"], "miner --pool-password ***");
        assert_eq!(
            value["flags"],
            serde_json::json!(["unpackaged", "world-writable"])
        );
        assert_eq!(value["suspicious"], true);
        assert_eq!(value["ownership"], "unpackaged");
        assert_eq!(value["package"], serde_json::Value::Null);
        assert_eq!(value["world_writable_dir"], "/tmp");
        assert_eq!(value["parent_comm"], "redis-server");
        assert!(!line.contains("hunter2"));
    }

    #[test]
    fn exec_line_for_humans() {
        let parts = miner_parts();
        assert_eq!(
            exec_line(&miner(&parts), Style::plain()),
            "11:06:40 ! exec     pid 4242 ppid 4200 (redis-server)  root  /tmp/.x/miner (no package)  $ miner --pool-password ***  cwd /tmp  [unpackaged, world-writable /tmp]"
        );
        let unknown = Ownership::Unknown("the process exited before it could be read".into());
        let gone = Exec {
            exe: None,
            cmdline: &[],
            cwd: None,
            user: None,
            uid: None,
            ownership: &unknown,
            world_writable_dir: None,
            flags: vec![],
            gone: true,
            ..miner(&parts)
        };
        assert_eq!(
            exec_line(&gone, Style::plain()),
            "11:06:40   exec     pid 4242 ppid 4200 (redis-server)  user ?  [miner]  (exited before it could be read)"
        );
    }

    fn python() -> Process {
        Process {
            pid: 50,
            ppid: 1,
            comm: "python3".to_owned(),
            cmdline: ["python3", "-m", "http.server"].map(String::from).to_vec(),
            uid: 0,
            account: None,
            exe: Some(PathBuf::from("/usr/bin/python3.11")),
            exe_deleted: false,
            cwd: None,
            cgroup: None,
            unit: None,
            container: None,
            netns_inode: Some(4026532000),
            ownership: Ownership::Package(PackageRef {
                manager: "dpkg".to_owned(),
                name: "python3.11-minimal".to_owned(),
                arch: None,
            }),
        }
    }

    fn lab_listener() -> Listener {
        let address = "198.18.0.1".parse().expect("address");
        Listener {
            protocol: Protocol::Tcp,
            address,
            port: 8080,
            scope: Scope::of(address),
            v6only: None,
            interface: None,
            inode: 777,
            socket_uid: 0,
            netns: Netns {
                inode: 4026532000,
                name: "lab".to_owned(),
            },
            owners: vec![SocketOwner { pid: 50, fd: 3 }],
        }
    }

    #[test]
    fn listener_json_and_line() {
        let (listener, owner) = (lab_listener(), python());
        let approval = ApprovalStatus::Unapproved;
        let event = ListenerEvent {
            change: ListenerChange::Appeared,
            at: at(),
            listener: &listener,
            owner: Some(&owner),
            approval: Some(&approval),
        };
        let value: serde_json::Value =
            serde_json::from_str(&listener_json(&event).expect("json")).expect("json");
        assert_eq!(value["kind"], "listener-appeared");
        assert_eq!(value["endpoint"], "tcp 198.18.0.1:8080");
        assert_eq!(value["scope"], "public");
        assert_eq!(value["exposed"], true);
        assert_eq!(value["pid"], 50);
        assert_eq!(value["user"], "0");
        assert_eq!(value["package"], "python3.11-minimal");
        assert_eq!(value["approval"], "unapproved");
        assert_eq!(value["netns"], "lab");
        assert_eq!(
            listener_line(&event, Style::plain()),
            "11:06:40 ! listen+  tcp 198.18.0.1:8080 (public, netns lab)  pid 50 python3.11  0  /usr/bin/python3.11 (python3.11-minimal)  approval: unapproved  [beyond loopback]"
        );
    }

    #[test]
    fn colour_only_when_asked() {
        let parts = miner_parts();
        assert!(exec_line(&miner(&parts), Style { color: true }).contains("\x1b[31m"));
        assert!(!exec_line(&miner(&parts), Style::plain()).contains('\x1b'));
    }
}
