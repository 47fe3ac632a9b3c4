//! `perimeter watch`: the host from inside, as it changes. Every process exec
//! (pid, parent, user, executable and its package, command line, working
//! directory, and why it looks suspicious) and every listening socket that
//! appears or goes away, one line or one JSON object per event, until
//! `--duration` passes or Ctrl-C.
//!
//! The events come from `perimeter_watch`; this module owns the flags,
//! the approvals check of new listeners, the `perimeter.watch-event/1` JSON
//! Lines schema, the human lines, and stopping on SIGINT/SIGTERM.

use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use nix::sys::signal::{SigSet, Signal};
use perimeter_checks::approvals::{self, Approvals, Verdict};
use perimeter_model::{Ownership, Problem, Process};
use perimeter_report::audit::redacted_cmdline;
use perimeter_watch::{
    ExecEvent, ExecSource, ExecSourceChoice, ListenerEvent, Started, WatchEvent, WatchOptions,
    WatchSummary, Watcher,
};
use serde::Serialize;
use time::OffsetDateTime;

use crate::commands::host::{LOCAL_APPROVALS, SYSTEM_APPROVALS, today};
use crate::exit_codes;
use crate::terminal::Terminal;

/// The schema of every JSON Lines object `perimeter watch` writes.
pub(crate) const WATCH_EVENT_SCHEMA: &str = "perimeter.watch-event/1";

#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// How often listening sockets are compared with the previous look
    /// (execs are reported as they happen).
    #[arg(long, value_name = "DURATION", default_value = "2s")]
    pub(crate) interval: String,

    /// Stop after this long (e.g. 30s, 10m). Default: until Ctrl-C.
    #[arg(long, value_name = "DURATION")]
    pub(crate) duration: Option<String>,

    #[arg(long, value_enum, default_value = "human")]
    pub(crate) format: WatchFormat,

    /// Print only execs that are unpackaged, run from a world-writable
    /// directory, deleted or from memory (memfd), and listeners beyond
    /// loopback.
    #[arg(long)]
    pub(crate) only_suspicious: bool,

    /// The approvals file new listeners are checked against. Default:
    /// ./perimeter-approvals.toml if it exists, else
    /// /etc/perimeter/approvals.toml.
    #[arg(long, value_name = "FILE", env = "PERIMETER_APPROVALS")]
    pub(crate) approvals: Option<PathBuf>,

    /// Watch the listeners of every network namespace on the host, not only
    /// the one perimeter runs in (each interval then walks /proc).
    #[arg(long)]
    pub(crate) all_netns: bool,

    /// Where execs come from: the kernel's process events connector, falling
    /// back to polling /proc (auto); the connector or an error (connector);
    /// polling /proc, which misses short-lived processes (poll).
    #[arg(long, value_enum, default_value = "auto")]
    pub(crate) exec_source: ExecSourceArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum WatchFormat {
    /// One line per event, timestamped (UTC).
    Human,
    /// One perimeter.watch-event/1 JSON object per line.
    Jsonl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ExecSourceArg {
    Auto,
    Connector,
    Poll,
}

fn parse_duration(flag: &str, text: &str) -> Result<Duration> {
    let duration = humantime::parse_duration(text)
        .with_context(|| format!("{flag} `{text}` is not a duration like 500ms, 30s, 10m"))?;
    if duration.is_zero() {
        bail!("{flag} must be longer than zero");
    }
    Ok(duration)
}

/// Why the watch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Duration,
    Signal,
    OutputClosed,
}

impl StopReason {
    fn as_str(self) -> &'static str {
        match self {
            StopReason::Duration => "duration",
            StopReason::Signal => "signal",
            StopReason::OutputClosed => "output-closed",
        }
    }
}

pub(crate) fn run(args: WatchArgs, terminal: &Terminal) -> Result<u8> {
    let interval = parse_duration("--interval", &args.interval)?;
    let duration = args
        .duration
        .as_deref()
        .map(|text| parse_duration("--duration", text))
        .transpose()?;
    let mut approvals = ApprovalsFile::load(args.approvals.as_deref())?;

    // SIGINT and SIGTERM end the watch cleanly: blocked here, before any
    // thread starts (threads inherit the mask), and taken by one thread that
    // waits for them, so no handler runs at an arbitrary point.
    let stop = Arc::new(AtomicBool::new(false));
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals
        .thread_block()
        .context("cannot block SIGINT and SIGTERM")?;
    {
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("signals".to_owned())
            .spawn(move || {
                if signals.wait().is_ok() {
                    stop.store(true, Ordering::Relaxed);
                }
            })
            .context("cannot start the thread that waits for Ctrl-C")?;
    }

    let watcher = Watcher::start(WatchOptions {
        interval,
        all_netns: args.all_netns,
        exec_source: match args.exec_source {
            ExecSourceArg::Auto => ExecSourceChoice::Auto,
            ExecSourceArg::Connector => ExecSourceChoice::Connector,
            ExecSourceArg::Poll => ExecSourceChoice::ProcPoll,
        },
        ..WatchOptions::default()
    })
    .context("cannot watch execs")?;
    let started_at = Instant::now();
    let deadline = duration.map(|duration| started_at + duration);

    let stdout = io::stdout();
    let mut out = Output {
        out: io::LineWriter::new(stdout.lock()),
        format: args.format,
        color: terminal.stdout_style().color,
        only_suspicious: args.only_suspicious,
        failed: None,
    };
    announce(watcher.started(), interval, &approvals, args.format);
    if out
        .started(watcher.started(), interval, &approvals)
        .is_break()
    {
        return out.finish();
    }

    let mut closed = false;
    let summary = watcher.run(&stop, deadline, &mut |event| {
        let flow = match event {
            WatchEvent::Exec(exec) => out.exec(&exec),
            WatchEvent::ListenerAppeared(event) => {
                let approval = approvals.verdict(&event);
                out.listener("listener-appeared", &event, approval.as_ref())
            }
            WatchEvent::ListenerGone(event) => out.listener("listener-gone", &event, None),
            WatchEvent::Problem(problem) => out.problem(&problem),
        };
        closed |= flow.is_break();
        flow
    });
    let reason = if closed {
        StopReason::OutputClosed
    } else if stop.load(Ordering::Relaxed) {
        StopReason::Signal
    } else {
        StopReason::Duration
    };
    if reason != StopReason::OutputClosed {
        let _ = out.stopped(reason, &summary, started_at.elapsed());
    }
    out.finish()
}

/// Says on stderr what is watched and, when execs are polled, why and what
/// that misses.
fn announce(started: &Started, interval: Duration, approvals: &ApprovalsFile, format: WatchFormat) {
    let mut stderr = io::stderr().lock();
    if let Some(reason) = &started.fallback_reason {
        let _ = writeln!(stderr, "perimeter: note: {reason}");
    }
    if started.exec_source == ExecSource::ProcPoll {
        let _ = writeln!(
            stderr,
            "perimeter: note: polling /proc for new processes every {} ms instead of the process events connector: processes that live shorter than that can be missed",
            perimeter_watch::PROC_POLL_INTERVAL.as_millis()
        );
    }
    for problem in &started.problems {
        let _ = writeln!(stderr, "perimeter: problem: {}", problem_text(problem));
    }
    if format == WatchFormat::Human {
        let namespaces: Vec<&str> = started
            .namespaces
            .iter()
            .map(|ns| ns.name.as_str())
            .collect();
        let _ = writeln!(
            stderr,
            "perimeter: watching execs ({}) and the listeners of netns {} every {} since {} (times UTC; Ctrl-C stops){}",
            exec_source_label(started.exec_source),
            namespaces.join(", "),
            humantime::format_duration(interval),
            stamp(SystemTime::now()),
            match &approvals.path {
                Some(path) => format!("; approvals: {}", path.display()),
                None => String::new(),
            }
        );
    }
}

fn exec_source_label(source: ExecSource) -> &'static str {
    match source {
        ExecSource::Connector => "netlink process events connector",
        ExecSource::ProcPoll => "polling /proc",
    }
}

fn problem_text(problem: &Problem) -> String {
    match &problem.hint {
        Some(hint) => format!("{}: {} ({hint})", problem.subject, problem.message),
        None => format!("{}: {}", problem.subject, problem.message),
    }
}

// ---------------------------------------------------------------------------
// Approvals
// ---------------------------------------------------------------------------

/// The approvals file, reloaded when it changes (someone runs `perimeter
/// approve` while the watch runs).
struct ApprovalsFile {
    path: Option<PathBuf>,
    approvals: Approvals,
    modified: Option<SystemTime>,
}

/// A new listener's approval, as the audit names it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Approval {
    status: &'static str,
    detail: Option<String>,
}

impl ApprovalsFile {
    /// The same resolution as the audit: a named file must exist and parse;
    /// else ./perimeter-approvals.toml, else /etc/perimeter/approvals.toml,
    /// and no file approves nothing.
    fn load(named: Option<&Path>) -> Result<ApprovalsFile> {
        let (path, missing_ok) = match named {
            Some(path) => (path.to_path_buf(), false),
            None if Path::new(LOCAL_APPROVALS).exists() => (PathBuf::from(LOCAL_APPROVALS), true),
            None => (PathBuf::from(SYSTEM_APPROVALS), true),
        };
        let approvals = approvals::load(&path, missing_ok)?;
        Ok(ApprovalsFile {
            modified: modified(&path),
            path: approvals.path.clone(),
            approvals,
        })
    }

    /// Reloads the file when it changed; a file that no longer parses is
    /// reported and the previous approvals stay in force.
    fn refresh(&mut self) -> Option<Problem> {
        let path = self.path.clone()?;
        let now = modified(&path);
        if now == self.modified {
            return None;
        }
        self.modified = now;
        match approvals::load(&path, true) {
            Ok(approvals) => {
                self.approvals = approvals;
                None
            }
            Err(err) => Some(
                Problem::new(path.display().to_string(), err.to_string())
                    .with_hint("the approvals read before stay in force"),
            ),
        }
    }

    fn verdict(&mut self, event: &ListenerEvent) -> Option<Approval> {
        if let Some(problem) = self.refresh() {
            eprintln!("perimeter: problem: {}", problem_text(&problem));
        }
        if !event.is_exposed() {
            return Some(Approval {
                status: "not-needed",
                detail: None,
            });
        }
        let owners: Vec<&Process> = event.owners.iter().collect();
        Some(
            match self.approvals.verdict(&event.listener, &owners, today()) {
                Verdict::Approved(entry) => Approval {
                    status: "approved",
                    detail: Some(format!(
                        "line {}: {} ({})",
                        entry.line, entry.reason, entry.approved_by
                    )),
                },
                Verdict::Expired(entry) => Approval {
                    status: "expired",
                    detail: Some(format!(
                        "line {}: expired {}",
                        entry.line,
                        entry.expires.map(|d| d.to_string()).unwrap_or_default()
                    )),
                },
                Verdict::Unapproved => Approval {
                    status: "unapproved",
                    detail: None,
                },
            },
        )
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
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
    namespaces: Vec<&'a str>,
    listeners: usize,
    approvals: Option<String>,
    problems: Vec<ProblemJson<'a>>,
}

#[derive(Debug, Serialize)]
struct ProblemJson<'a> {
    subject: &'a str,
    message: &'a str,
    hint: Option<&'a str>,
}

impl<'a> From<&'a Problem> for ProblemJson<'a> {
    fn from(problem: &'a Problem) -> Self {
        ProblemJson {
            subject: &problem.subject,
            message: &problem.message,
            hint: problem.hint.as_deref(),
        }
    }
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
    flags: Vec<&'static str>,
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

/// RFC 3339, UTC, to the millisecond.
fn timestamp(at: SystemTime) -> String {
    let at = OffsetDateTime::from(at);
    at.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// The time of day, UTC, for human lines.
fn stamp(at: SystemTime) -> String {
    let at = OffsetDateTime::from(at);
    at.format(time::macros::format_description!(
        "[hour]:[minute]:[second]"
    ))
    .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

fn exec_json(exec: &ExecEvent) -> ExecJson<'_> {
    let flags = exec.flags();
    ExecJson {
        schema: WATCH_EVENT_SCHEMA,
        kind: "exec",
        at: timestamp(exec.at),
        source: exec.source.as_str(),
        pid: exec.pid,
        ppid: exec.ppid,
        parent_comm: exec.parent_comm.as_deref(),
        parent_exe: path_text(exec.parent_exe.as_deref()),
        uid: exec.uid,
        user: exec.user.as_deref(),
        comm: exec.comm.as_deref(),
        exe: path_text(exec.exe.as_deref()),
        exe_deleted: exec.exe_deleted,
        exe_unreadable: exec.exe_unreadable.as_deref(),
        cmdline: redacted_cmdline(&exec.cmdline),
        cwd: path_text(exec.cwd.as_deref()),
        netns: exec.netns.as_ref().map(|ns| ns.name.as_str()),
        unit: exec.unit.as_deref(),
        container: exec.container.as_deref(),
        ownership: ownership_label(&exec.ownership),
        package: exec.ownership.package().map(ToString::to_string),
        ownership_note: ownership_note(&exec.ownership),
        world_writable_dir: path_text(exec.world_writable_dir.as_deref()),
        suspicious: !flags.is_empty(),
        flags: flags.iter().map(|flag| flag.as_str()).collect(),
        gone: exec.gone,
        superseded: exec.superseded,
    }
}

fn listener_json<'a>(
    kind: &'static str,
    event: &'a ListenerEvent,
    approval: Option<&'a Approval>,
) -> ListenerJson<'a> {
    let listener = &event.listener;
    let owner = event.main_owner();
    ListenerJson {
        schema: WATCH_EVENT_SCHEMA,
        kind,
        at: timestamp(event.at),
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
        approval: approval.map(|a| a.status),
        approval_detail: approval.and_then(|a| a.detail.as_deref()),
        suspicious: event.is_exposed(),
    }
}

// ---------------------------------------------------------------------------
// Writing events
// ---------------------------------------------------------------------------

struct Output<W: Write> {
    out: W,
    format: WatchFormat,
    color: bool,
    only_suspicious: bool,
    /// The write error that ended the watch, unless it was a closed pipe.
    failed: Option<io::Error>,
}

const RED: &str = "31";
const GREEN: &str = "32";
const YELLOW: &str = "33";
const GREY: &str = "90";

impl<W: Write> Output<W> {
    fn paint(&self, text: &str, code: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// Writes one line; a write that fails ends the watch (a closed pipe
    /// quietly, anything else as an error).
    fn line(&mut self, text: &str) -> ControlFlow<()> {
        match writeln!(self.out, "{text}").and_then(|()| self.out.flush()) {
            Ok(()) => ControlFlow::Continue(()),
            Err(err) => {
                if err.kind() != io::ErrorKind::BrokenPipe {
                    self.failed = Some(err);
                }
                ControlFlow::Break(())
            }
        }
    }

    fn json(&mut self, value: &impl Serialize) -> ControlFlow<()> {
        match serde_json::to_string(value) {
            Ok(text) => self.line(&text),
            Err(err) => {
                self.failed = Some(io::Error::other(err));
                ControlFlow::Break(())
            }
        }
    }

    fn started(
        &mut self,
        started: &Started,
        interval: Duration,
        approvals: &ApprovalsFile,
    ) -> ControlFlow<()> {
        if self.format != WatchFormat::Jsonl {
            return ControlFlow::Continue(());
        }
        self.json(&StartedJson {
            schema: WATCH_EVENT_SCHEMA,
            kind: "started",
            at: timestamp(SystemTime::now()),
            pid: std::process::id(),
            exec_source: started.exec_source.as_str(),
            exec_source_note: started.fallback_reason.as_deref(),
            poll_interval_ms: (started.exec_source == ExecSource::ProcPoll)
                .then(|| perimeter_watch::PROC_POLL_INTERVAL.as_millis()),
            entered_initial_netns: started.entered_initial_netns,
            interval_ms: interval.as_millis(),
            namespaces: started
                .namespaces
                .iter()
                .map(|ns| ns.name.as_str())
                .collect(),
            listeners: started.n_listeners,
            approvals: path_text(approvals.path.as_deref()),
            problems: started.problems.iter().map(ProblemJson::from).collect(),
        })
    }

    fn problem(&mut self, problem: &Problem) -> ControlFlow<()> {
        eprintln!("perimeter: problem: {}", problem_text(problem));
        if self.format != WatchFormat::Jsonl {
            return ControlFlow::Continue(());
        }
        self.json(&ProblemEventJson {
            schema: WATCH_EVENT_SCHEMA,
            kind: "problem",
            at: timestamp(SystemTime::now()),
            problem: ProblemJson::from(problem),
        })
    }

    fn exec(&mut self, exec: &ExecEvent) -> ControlFlow<()> {
        let suspicious = exec.is_suspicious();
        if self.only_suspicious && !suspicious {
            return ControlFlow::Continue(());
        }
        if self.format == WatchFormat::Jsonl {
            return self.json(&exec_json(exec));
        }
        let text = self.exec_line(exec);
        self.line(&text)
    }

    fn exec_line(&self, exec: &ExecEvent) -> String {
        let flags = exec.flags();
        let mark = if flags.is_empty() {
            " ".to_owned()
        } else {
            self.paint("!", RED)
        };
        let mut text = format!("{} {mark} exec     pid {}", stamp(exec.at), exec.pid);
        if let Some(ppid) = exec.ppid {
            text.push_str(&format!(" ppid {ppid}"));
            if let Some(parent) = &exec.parent_comm {
                text.push_str(&format!(" ({parent})"));
            }
        }
        let user = match (&exec.user, exec.uid) {
            (Some(user), _) => user.clone(),
            (None, Some(uid)) => format!("uid {uid}"),
            (None, None) => "user ?".to_owned(),
        };
        text.push_str(&format!("  {user}  "));
        match &exec.exe {
            Some(exe) => {
                text.push_str(&exe.display().to_string());
                if exec.exe_deleted {
                    text.push_str(" (deleted)");
                }
            }
            None => match &exec.comm {
                Some(comm) => text.push_str(&format!("[{comm}]")),
                None => text.push('?'),
            },
        }
        text.push_str(&match &exec.ownership {
            Ownership::Package(package) => format!(" ({package})"),
            Ownership::Unpackaged => " (no package)".to_owned(),
            Ownership::Unknown(_) | Ownership::NotChecked => String::new(),
        });
        if !exec.cmdline.is_empty() {
            text.push_str(&format!("  $ {}", redacted_cmdline(&exec.cmdline)));
        }
        if let Some(cwd) = &exec.cwd {
            text.push_str(&format!("  cwd {}", cwd.display()));
        }
        if let Some(netns) = &exec.netns
            && netns.name != "host"
        {
            text.push_str(&format!("  netns {netns}"));
        }
        if let Some(container) = &exec.container {
            text.push_str(&format!("  container {container}"));
        }
        if exec.gone {
            text.push_str(&self.paint("  (exited before it could be read)", GREY));
        }
        if exec.superseded {
            text.push_str(&self.paint(
                "  (exec'd again before it could be read: see the next line)",
                GREY,
            ));
        }
        if !flags.is_empty() {
            let labels: Vec<String> = flags
                .iter()
                .map(|flag| match (flag, &exec.world_writable_dir) {
                    (perimeter_watch::ExecFlag::WorldWritable, Some(dir)) => {
                        format!("world-writable {}", dir.display())
                    }
                    _ => flag.as_str().to_owned(),
                })
                .collect();
            text.push_str(&format!(
                "  {}",
                self.paint(&format!("[{}]", labels.join(", ")), RED)
            ));
        }
        text
    }

    fn listener(
        &mut self,
        kind: &'static str,
        event: &ListenerEvent,
        approval: Option<&Approval>,
    ) -> ControlFlow<()> {
        if self.only_suspicious && !event.is_exposed() {
            return ControlFlow::Continue(());
        }
        if self.format == WatchFormat::Jsonl {
            return self.json(&listener_json(kind, event, approval));
        }
        let text = self.listener_line(kind, event, approval);
        self.line(&text)
    }

    fn listener_line(
        &self,
        kind: &'static str,
        event: &ListenerEvent,
        approval: Option<&Approval>,
    ) -> String {
        let listener = &event.listener;
        let exposed = event.is_exposed();
        let mark = if exposed {
            self.paint("!", RED)
        } else {
            " ".to_owned()
        };
        let label = if kind == "listener-appeared" {
            self.paint("listen+ ", GREEN)
        } else {
            self.paint("listen- ", YELLOW)
        };
        let mut text = format!(
            "{} {mark} {label} {} ({}",
            stamp(event.at),
            listener.endpoint(),
            listener.scope.as_str()
        );
        if let Some(interface) = &listener.interface {
            text.push_str(&format!(", dev {interface}"));
        }
        text.push_str(&format!(", netns {})", listener.netns));
        match event.main_owner() {
            Some(owner) => {
                text.push_str(&format!(
                    "  pid {} {}  {}",
                    owner.pid,
                    owner.name(),
                    owner.user_name()
                ));
                if let Some(exe) = &owner.exe {
                    text.push_str(&format!("  {}", exe.display()));
                }
                text.push_str(&match &owner.ownership {
                    Ownership::Package(package) => format!(" ({package})"),
                    Ownership::Unpackaged => format!(" {}", self.paint("(no package)", RED)),
                    Ownership::Unknown(_) | Ownership::NotChecked => String::new(),
                });
            }
            None => text.push_str("  owner unknown"),
        }
        if let Some(approval) = approval
            && approval.status != "not-needed"
        {
            let status = match approval.status {
                "approved" => approval.status.to_owned(),
                other => self.paint(other, RED),
            };
            text.push_str(&format!("  approval: {status}"));
            if let Some(detail) = &approval.detail {
                text.push_str(&format!(" ({detail})"));
            }
        }
        if exposed && kind == "listener-appeared" {
            text.push_str(&format!("  {}", self.paint("[beyond loopback]", RED)));
        }
        text
    }

    fn stopped(
        &mut self,
        reason: StopReason,
        summary: &WatchSummary,
        elapsed: Duration,
    ) -> ControlFlow<()> {
        if self.format == WatchFormat::Jsonl {
            return self.json(&StoppedJson {
                schema: WATCH_EVENT_SCHEMA,
                kind: "stopped",
                at: timestamp(SystemTime::now()),
                reason: reason.as_str(),
                seconds: (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
                execs: summary.n_execs,
                suspicious_execs: summary.n_suspicious_execs,
                gone_execs: summary.n_gone,
                listeners_appeared: summary.n_listeners_appeared,
                listeners_gone: summary.n_listeners_gone,
                lost: summary.n_lost,
            });
        }
        eprintln!(
            "perimeter: watched {}: {} ({} suspicious, {} exited before they could be read), {} appeared, {} went away{}",
            humantime::format_duration(Duration::from_secs(elapsed.as_secs())),
            perimeter_report::count(summary.n_execs, "exec"),
            summary.n_suspicious_execs,
            summary.n_gone,
            perimeter_report::count(summary.n_listeners_appeared, "listener"),
            summary.n_listeners_gone,
            if summary.n_lost > 0 {
                format!("; the kernel dropped events {} times", summary.n_lost)
            } else {
                String::new()
            }
        );
        ControlFlow::Continue(())
    }

    fn finish(self) -> Result<u8> {
        match self.failed {
            Some(err) => Err(anyhow::Error::new(err).context("cannot write to stdout")),
            None => Ok(exit_codes::CLEAN),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use perimeter_model::{Netns, PackageRef, Protocol, Scope, SocketOwner};
    use perimeter_watch::ExecSource;

    fn at() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123)
    }

    fn miner() -> ExecEvent {
        ExecEvent {
            at: at(),
            source: ExecSource::Connector,
            pid: 4242,
            ppid: Some(4200),
            uid: Some(0),
            user: Some("root".to_owned()),
            comm: Some("miner".to_owned()),
            exe: Some(PathBuf::from("/tmp/.x/miner")),
            exe_unreadable: None,
            exe_deleted: false,
            memfd: false,
            cmdline: vec![
                "miner".to_owned(),
                "--pool-password".to_owned(),
                "hunter2".to_owned(),
            ],
            cwd: Some(PathBuf::from("/tmp")),
            netns_inode: Some(4026531840),
            netns: Some(Netns {
                inode: 4026531840,
                name: "host".to_owned(),
            }),
            unit: None,
            container: None,
            parent_comm: Some("redis-server".to_owned()),
            parent_exe: Some(PathBuf::from("/opt/redis/bin/redis-server")),
            ownership: Ownership::Unpackaged,
            world_writable_dir: Some(PathBuf::from("/tmp")),
            gone: false,
            superseded: false,
        }
    }

    fn output() -> Output<Vec<u8>> {
        Output {
            out: Vec::new(),
            format: WatchFormat::Human,
            color: false,
            only_suspicious: false,
            failed: None,
        }
    }

    #[test]
    fn exec_json_redacts_and_flags() {
        let exec = miner();
        let value = serde_json::to_value(exec_json(&exec)).expect("json");
        assert_eq!(value["schema"], WATCH_EVENT_SCHEMA);
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
        assert!(!value.to_string().contains("hunter2"));
    }

    #[test]
    fn exec_line_for_humans() {
        let line = output().exec_line(&miner());
        assert_eq!(
            line,
            "11:06:40 ! exec     pid 4242 ppid 4200 (redis-server)  root  /tmp/.x/miner (no package)  $ miner --pool-password ***  cwd /tmp  [unpackaged, world-writable /tmp]"
        );
        let mut gone = miner();
        gone.exe = None;
        gone.cmdline.clear();
        gone.cwd = None;
        gone.user = None;
        gone.uid = None;
        gone.ownership = Ownership::Unknown("the process exited before it could be read".into());
        gone.world_writable_dir = None;
        gone.gone = true;
        assert_eq!(
            output().exec_line(&gone),
            "11:06:40   exec     pid 4242 ppid 4200 (redis-server)  user ?  [miner]  (exited before it could be read)"
        );
    }

    fn listener_event() -> ListenerEvent {
        let address = "198.18.0.1".parse().expect("address");
        ListenerEvent {
            at: at(),
            listener: perimeter_model::Listener {
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
            },
            owners: vec![Process {
                pid: 50,
                ppid: 1,
                comm: "python3".to_owned(),
                cmdline: vec![
                    "python3".to_owned(),
                    "-m".to_owned(),
                    "http.server".to_owned(),
                ],
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
            }],
        }
    }

    #[test]
    fn listener_json_and_line() {
        let event = listener_event();
        let approval = Approval {
            status: "unapproved",
            detail: None,
        };
        let value =
            serde_json::to_value(listener_json("listener-appeared", &event, Some(&approval)))
                .expect("json");
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
            output().listener_line("listener-appeared", &event, Some(&approval)),
            "11:06:40 ! listen+  tcp 198.18.0.1:8080 (public, netns lab)  pid 50 python3.11  0  /usr/bin/python3.11 (python3.11-minimal)  approval: unapproved  [beyond loopback]"
        );
    }

    #[test]
    fn only_suspicious_drops_the_rest() {
        let mut out = output();
        out.only_suspicious = true;
        let mut packaged = miner();
        packaged.ownership = Ownership::Unknown("not permitted".to_owned());
        packaged.world_writable_dir = None;
        assert!(out.exec(&packaged).is_continue());
        assert!(out.out.is_empty());
        let mut loopback = listener_event();
        loopback.listener.address = "127.0.0.1".parse().expect("address");
        loopback.listener.scope = Scope::Loopback;
        assert!(out.listener("listener-gone", &loopback, None).is_continue());
        assert!(out.out.is_empty());
        assert!(out.exec(&miner()).is_continue());
        assert_eq!(String::from_utf8_lossy(&out.out).lines().count(), 1);
    }

    #[test]
    fn colour_only_when_asked() {
        let mut out = output();
        out.color = true;
        assert!(out.exec_line(&miner()).contains("\x1b[31m"));
        assert!(!output().exec_line(&miner()).contains('\x1b'));
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("--interval", "250ms").expect("parses"),
            Duration::from_millis(250)
        );
        assert!(parse_duration("--interval", "0s").is_err());
        let err = parse_duration("--duration", "soon").expect_err("refused");
        assert!(err.to_string().contains("--duration `soon`"), "{err}");
    }
}
