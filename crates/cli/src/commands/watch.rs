//! `perimeter watch`: the host from inside, as it changes. Every process exec
//! (pid, parent, user, executable and its package, command line, working
//! directory, and why it looks suspicious) and every listening socket that
//! appears or goes away, one line or one JSON object per event, until
//! `--duration` passes or Ctrl-C.
//!
//! The events come from `perimeter_watch`, their rendering (the
//! `perimeter.watch-event/1` JSON Lines and the human lines) from
//! `perimeter_report::watch`; this module owns the approvals check of new
//! listeners, writing each event as it comes, and stopping on SIGINT/SIGTERM.

use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, Signal};
use perimeter_checks::approvals::{self, Approvals};
use perimeter_model::{Problem, Process};
use perimeter_report::Style;
use perimeter_report::audit::ApprovalStatus;
use perimeter_report::watch::{self as doc, ListenerChange};
use perimeter_watch::{
    ExecEvent, ExecSource, ExecSourceChoice, ListenerEvent, Started, WatchEvent, WatchOptions,
    WatchSummary, Watcher,
};

use crate::args::{ExecSourceArg, WatchArgs, WatchFormat};
use crate::exit_codes::ExitCode;
use crate::settings::{self, Zero, parse_duration, today};
use crate::terminal::Terminal;

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

pub(crate) fn run(args: WatchArgs, terminal: &Terminal) -> Result<ExitCode> {
    let interval = parse_duration("--interval", &args.interval, Zero::Refused)?;
    let duration = args
        .duration
        .as_deref()
        .map(|text| parse_duration("--duration", text, Zero::Refused))
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
        style: terminal.stdout_style(),
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
                out.listener(ListenerChange::Appeared, &event, Some(&approval))
            }
            WatchEvent::ListenerGone(event) => out.listener(ListenerChange::Gone, &event, None),
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
            perimeter_report::time_of_day(SystemTime::now()),
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

impl ApprovalsFile {
    /// The same resolution as the audit: a named file must exist and parse;
    /// else ./perimeter-approvals.toml, else /etc/perimeter/approvals.toml,
    /// and no file approves nothing.
    fn load(named: Option<&Path>) -> Result<ApprovalsFile> {
        let file = settings::approvals_file(named);
        let approvals = approvals::load(&file.path, !file.named)?;
        Ok(ApprovalsFile {
            modified: modified(&file.path),
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

    /// A new listener's approval, as the audit names it.
    fn verdict(&mut self, event: &ListenerEvent) -> ApprovalStatus {
        if let Some(problem) = self.refresh() {
            eprintln!("perimeter: problem: {}", problem_text(&problem));
        }
        if !event.is_exposed() {
            return ApprovalStatus::NotNeeded;
        }
        let owners: Vec<&Process> = event.owners.iter().collect();
        settings::approval_status(self.approvals.verdict(&event.listener, &owners, today()))
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
}

/// The watch's exec event as the report reads it.
fn exec_view(exec: &ExecEvent) -> doc::Exec<'_> {
    doc::Exec {
        at: exec.at,
        source: exec.source.as_str(),
        pid: exec.pid,
        ppid: exec.ppid,
        parent_comm: exec.parent_comm.as_deref(),
        parent_exe: exec.parent_exe.as_deref(),
        uid: exec.uid,
        user: exec.user.as_deref(),
        comm: exec.comm.as_deref(),
        exe: exec.exe.as_deref(),
        exe_deleted: exec.exe_deleted,
        exe_unreadable: exec.exe_unreadable.as_deref(),
        cmdline: &exec.cmdline,
        cwd: exec.cwd.as_deref(),
        netns: exec.netns.as_ref(),
        unit: exec.unit.as_deref(),
        container: exec.container.as_deref(),
        ownership: &exec.ownership,
        world_writable_dir: exec.world_writable_dir.as_deref(),
        flags: exec.flags().iter().map(|flag| flag.as_str()).collect(),
        gone: exec.gone,
        superseded: exec.superseded,
    }
}

/// The watch's listener event as the report reads it.
fn listener_view<'a>(
    change: ListenerChange,
    event: &'a ListenerEvent,
    approval: Option<&'a ApprovalStatus>,
) -> doc::ListenerEvent<'a> {
    doc::ListenerEvent {
        change,
        at: event.at,
        listener: &event.listener,
        owner: event.main_owner(),
        approval,
    }
}

// ---------------------------------------------------------------------------
// Writing events
// ---------------------------------------------------------------------------

struct Output<W: Write> {
    out: W,
    format: WatchFormat,
    style: Style,
    only_suspicious: bool,
    /// The write error that ended the watch, unless it was a closed pipe.
    failed: Option<io::Error>,
}

impl<W: Write> Output<W> {
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

    fn json(&mut self, line: serde_json::Result<String>) -> ControlFlow<()> {
        match line {
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
        self.json(doc::started_json(&doc::Started {
            at: SystemTime::now(),
            pid: std::process::id(),
            exec_source: started.exec_source.as_str(),
            exec_source_note: started.fallback_reason.as_deref(),
            poll_interval: (started.exec_source == ExecSource::ProcPoll)
                .then_some(perimeter_watch::PROC_POLL_INTERVAL),
            entered_initial_netns: started.entered_initial_netns,
            interval,
            namespaces: started
                .namespaces
                .iter()
                .map(|ns| ns.name.as_str())
                .collect(),
            n_listeners: started.n_listeners,
            approvals: approvals.path.as_deref(),
            problems: &started.problems,
        }))
    }

    fn problem(&mut self, problem: &Problem) -> ControlFlow<()> {
        eprintln!("perimeter: problem: {}", problem_text(problem));
        if self.format != WatchFormat::Jsonl {
            return ControlFlow::Continue(());
        }
        self.json(doc::problem_json(SystemTime::now(), problem))
    }

    fn exec(&mut self, exec: &ExecEvent) -> ControlFlow<()> {
        let suspicious = exec.is_suspicious();
        if self.only_suspicious && !suspicious {
            return ControlFlow::Continue(());
        }
        let view = exec_view(exec);
        if self.format == WatchFormat::Jsonl {
            return self.json(doc::exec_json(&view));
        }
        let text = doc::exec_line(&view, self.style);
        self.line(&text)
    }

    fn listener(
        &mut self,
        change: ListenerChange,
        event: &ListenerEvent,
        approval: Option<&ApprovalStatus>,
    ) -> ControlFlow<()> {
        if self.only_suspicious && !event.is_exposed() {
            return ControlFlow::Continue(());
        }
        let view = listener_view(change, event, approval);
        if self.format == WatchFormat::Jsonl {
            return self.json(doc::listener_json(&view));
        }
        let text = doc::listener_line(&view, self.style);
        self.line(&text)
    }

    fn stopped(
        &mut self,
        reason: StopReason,
        summary: &WatchSummary,
        elapsed: Duration,
    ) -> ControlFlow<()> {
        if self.format == WatchFormat::Jsonl {
            return self.json(doc::stopped_json(&doc::Stopped {
                at: SystemTime::now(),
                reason: reason.as_str(),
                elapsed,
                n_execs: summary.n_execs,
                n_suspicious_execs: summary.n_suspicious_execs,
                n_gone_execs: summary.n_gone,
                n_listeners_appeared: summary.n_listeners_appeared,
                n_listeners_gone: summary.n_listeners_gone,
                n_lost: summary.n_lost,
            }));
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

    fn finish(self) -> Result<ExitCode> {
        match self.failed {
            Some(err) => Err(anyhow::Error::new(err).context("cannot write to stdout")),
            None => Ok(ExitCode::Clean),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use perimeter_model::{Netns, Ownership, PackageRef, Protocol, Scope, SocketOwner};
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
            style: Style::plain(),
            only_suspicious: false,
            failed: None,
        }
    }

    /// The views carry every field the report needs: what reaches the
    /// output is what the watch saw.
    #[test]
    fn events_reach_the_output_through_the_views() {
        let mut out = output();
        assert!(out.exec(&miner()).is_continue());
        let approval = ApprovalStatus::Unapproved;
        assert!(
            out.listener(ListenerChange::Appeared, &listener_event(), Some(&approval))
                .is_continue()
        );
        assert_eq!(
            String::from_utf8_lossy(&out.out),
            "11:06:40 ! exec     pid 4242 ppid 4200 (redis-server)  root  /tmp/.x/miner (no package)  $ miner --pool-password ***  cwd /tmp  [unpackaged, world-writable /tmp]\n\
             11:06:40 ! listen+  tcp 198.18.0.1:8080 (public, netns lab)  pid 50 python3.11  0  /usr/bin/python3.11 (python3.11-minimal)  approval: unapproved  [beyond loopback]\n"
        );
        let mut jsonl = output();
        jsonl.format = WatchFormat::Jsonl;
        assert!(jsonl.exec(&miner()).is_continue());
        let value: serde_json::Value = serde_json::from_slice(&jsonl.out).expect("one JSON object");
        assert_eq!(value["schema"], "perimeter.watch-event/1");
        assert_eq!(value["source"], "netlink-connector");
        assert_eq!(value["parent_exe"], "/opt/redis/bin/redis-server");
        assert_eq!(value["netns"], "host");
        assert_eq!(
            value["flags"],
            serde_json::json!(["unpackaged", "world-writable"])
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
        assert!(
            out.listener(ListenerChange::Gone, &loopback, None)
                .is_continue()
        );
        assert!(out.out.is_empty());
        assert!(out.exec(&miner()).is_continue());
        assert_eq!(String::from_utf8_lossy(&out.out).lines().count(), 1);
    }
}
