//! `perimeter agent`: this host's audit reported to `perimeter server`
//! (crates/agent speaks the protocol; this command audits and watches). The
//! audit runs on the interval and at once when the watch sees a listener
//! appear or go; suspicious execs travel with the next report.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use perimeter_agent::{Agent, AgentConfig, Collector, Trigger};
use perimeter_api::{Event, HostState};
use perimeter_checks::approvals::Approvals;
use perimeter_watch::{WatchEvent, WatchOptions, Watcher};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::args::{AgentArgs, HostArgs};
use crate::exit_codes::ExitCode;
use crate::pipeline::fleet::{agent_dir, trust};
use crate::pipeline::host::audit_with;
use crate::settings::{self, Zero, parse_duration};
use crate::terminal::Terminal;

/// The largest enrolment secret file read.
const MAX_SECRET_BYTES: u64 = 4096;

pub(crate) fn run(args: AgentArgs, _terminal: &Terminal) -> Result<ExitCode> {
    if args.host.approvals.is_some() {
        bail!(
            "an agent's listeners are judged by the server's approvals: --approvals does not apply"
        );
    }
    let interval = parse_duration("--interval", &args.interval, Zero::Refused)?;
    if args.queue_limit == 0 {
        bail!("--queue-limit must be at least 1");
    }
    let enrol_secret = match &args.enrol_secret_file {
        Some(path) => Some(
            perimeter_files::read_text(path, "an enrolment secret file", MAX_SECRET_BYTES)?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let config = AgentConfig {
        server: args.server.clone(),
        trust: trust(&args.trust)?,
        state_dir: agent_dir(args.state_dir.clone())?,
        enrol_secret,
        interval,
        queue_limit: args.queue_limit,
        max_events: 1_000,
        machine_id: std::fs::read_to_string("/etc/machine-id")
            .ok()
            .map(|id| id.trim().to_owned())
            .filter(|id| !id.is_empty()),
        hostname: settings::hostname(),
    };
    let mut agent = Agent::new(config)?;
    let collector: Box<dyn Collector> = Box::new(AuditCollector {
        args: args.host.clone(),
    });
    // One thread runs the protocol (a request at a time, nothing else to
    // overlap) and the audit (on a current-thread runtime the agent runs
    // its collector there): every thread that allocates gets a malloc arena
    // of its own from glibc, which keeps what was freed in it, so each
    // thread less is memory the agent does not hold for good
    // (bench/agent-cost.sh). The one blocking thread is for name lookups.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if args.once {
        let flushed = runtime.block_on(async {
            let collector = Arc::new(std::sync::Mutex::new(collector));
            agent.cycle(&collector).await
        })?;
        outln!(
            "{}: {} reports acknowledged, {} queued",
            agent.agent_id().unwrap_or("not enrolled"),
            flushed.acknowledged,
            flushed.queued
        );
        return Ok(ExitCode::findings_if(flushed.queued > 0));
    }
    let stop = CancellationToken::new();
    let (tx, rx) = mpsc::channel(1024);
    let watch_stop = Arc::new(AtomicBool::new(false));
    let watch_thread = if args.no_watch {
        None
    } else {
        Some(start_watch(&args.host, tx, Arc::clone(&watch_stop))?)
    };
    let result = runtime.block_on(async {
        tokio::spawn(stop_on_signal(stop.clone()));
        agent.run(collector, rx, stop).await
    });
    watch_stop.store(true, Ordering::Relaxed);
    if let Some(thread) = watch_thread {
        let _ = thread.join();
    }
    result?;
    Ok(ExitCode::Clean)
}

/// The audit, without approvals (the server judges them).
struct AuditCollector {
    args: HostArgs,
}

impl Collector for AuditCollector {
    fn collect(&mut self) -> HostState {
        match audit_with(&self.args, Approvals::default(), PathBuf::from("<server>")) {
            Ok(audit) => {
                let findings: Vec<_> = audit
                    .findings
                    .into_iter()
                    // Approvals are the server's to judge.
                    .filter(|finding| finding.rule != "listener.unapproved")
                    .collect();
                HostState::from_audit(&audit.snapshot, &findings)
            }
            Err(err) => {
                tracing::error!("the audit failed: {}", crate::error_chain(&err));
                HostState {
                    hostname: settings::hostname(),
                    ..HostState::default()
                }
            }
        }
    }
}

fn rfc3339_of(at: std::time::SystemTime) -> OffsetDateTime {
    at.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|since| {
            OffsetDateTime::from_unix_timestamp_nanos(i128::try_from(since.as_nanos()).ok()?).ok()
        })
        .unwrap_or_else(OffsetDateTime::now_utc)
}

/// The watch in a thread of its own: listener changes and suspicious execs
/// become triggers.
fn start_watch(
    args: &HostArgs,
    tx: mpsc::Sender<Trigger>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    let watcher = Watcher::start(WatchOptions {
        // Every 5 s rather than the watch command's 2 s: a new listener
        // still reaches the server within seconds. A tick that finds no new
        // socket is one sock_diag dump of the listening sockets compared
        // with the known ones (/proc is walked only for a new socket);
        // bench/agent-cost.sh measures what it costs with 4,000 listeners.
        interval: Duration::from_secs(5),
        // Execs travel with the next report: held a few seconds, those of
        // a busy host (a build server running new executables all the
        // time) cost one package lookup per hold, not one per batch.
        exec_hold: Duration::from_secs(5),
        all_netns: args.all_netns,
        ..WatchOptions::default()
    })
    .context("cannot start the watch")?;
    std::thread::Builder::new()
        .name("agent-watch".to_owned())
        .spawn(move || {
            let mut sink = |event: WatchEvent| {
                let event_kind = match &event {
                    WatchEvent::ListenerAppeared(_) => EventKind::Appeared,
                    _ => EventKind::Other,
                };
                let trigger = match event {
                    WatchEvent::Exec(exec) => {
                        let flags = exec.flags();
                        if flags.is_empty() {
                            return std::ops::ControlFlow::Continue(());
                        }
                        Trigger::Event(Event {
                            at: rfc3339_of(exec.at),
                            kind: "exec".into(),
                            summary: format!(
                                "pid {} {} as {}",
                                exec.pid,
                                exec.exe.as_ref().map_or_else(
                                    || exec.comm.clone().unwrap_or_default(),
                                    |e| e.display().to_string()
                                ),
                                exec.user.clone().unwrap_or_else(|| exec
                                    .uid
                                    .map_or_else(String::new, |u| u.to_string())),
                            ),
                            flags: flags.iter().map(|f| f.as_str().to_owned()).collect(),
                        })
                    }
                    WatchEvent::ListenerAppeared(listener) | WatchEvent::ListenerGone(listener) => {
                        let kind = if matches!(event_kind, EventKind::Appeared) {
                            "listener.new"
                        } else {
                            "listener.gone"
                        };
                        Trigger::ListenersChanged(Event {
                            at: rfc3339_of(listener.at),
                            kind: kind.into(),
                            summary: format!(
                                "{} {}",
                                listener.listener.endpoint(),
                                listener
                                    .main_owner()
                                    .map_or_else(|| "unowned".to_owned(), |p| p.name())
                            ),
                            flags: Vec::new(),
                        })
                    }
                    WatchEvent::Problem(_) => return std::ops::ControlFlow::Continue(()),
                };
                // A full channel drops the event; the next audit still sees
                // every listener.
                let _ = tx.try_send(trigger);
                std::ops::ControlFlow::Continue(())
            };
            watcher.run(&stop, None, &mut sink);
        })
        .context("cannot start the watch thread")
}

/// SIGTERM or SIGINT stops the agent (a report in flight is resent later).
async fn stop_on_signal(stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    if let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        stop.cancel();
    }
}

enum EventKind {
    Appeared,
    Other,
}
