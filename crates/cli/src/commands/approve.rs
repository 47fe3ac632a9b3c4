//! `perimeter approve`: the deploy checklist. Interactive: every listener beyond
//! loopback that no approval covers, one at a time, y/n and a reason. With
//! selectors (`--port`, and optionally `--protocol`, `--address`, `--netns`) and
//! `--reason`: the listeners those select, never a blanket approve-all.
//!
//! Each approval is written as soon as it is given (atomically), so stopping
//! half-way keeps what was approved.

use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use perimeter_checks::approvals::{self, Bind, NewApproval, OwnerKey};
use perimeter_model::{Listener, Ownership, Protocol};
use perimeter_report::audit::redacted_cmdline;

use crate::args::ApproveArgs;
use crate::exit_codes::ExitCode;
use crate::pipeline::fleet::{As, Session};
use crate::pipeline::host::{HostAudit, MissingApprovals, audit_host, audit_with};
use crate::settings::today;
use crate::terminal::Terminal;

pub(crate) fn run(args: ApproveArgs, terminal: &Terminal) -> Result<ExitCode> {
    let expires = match &args.expires {
        Some(text) => Some(parse_date(text)?),
        None => None,
    };
    let approved_by = approver(&args)?;
    let selecting = args.port.is_some()
        || args.protocol.is_some()
        || args.address.is_some()
        || args.netns.is_some();
    let (audit, dest) = if args.server.server.is_some() {
        if args.host.approvals.is_some() {
            bail!("give --server or --approvals, not both: approvals go to one of them");
        }
        let session = Session::open(&args.server, As::Person)?;
        let scope = match &args.scope {
            Some(scope) => scope.clone(),
            None => session.host_scope()?,
        };
        let (approvals, from) = session.host_approvals()?;
        (
            audit_with(&args.host, approvals, from)?,
            Destination::Server { session, scope },
        )
    } else {
        if args.scope.is_some() {
            bail!("--scope is for approvals on a server (--server)");
        }
        let audit = audit_host(&args.host, MissingApprovals::WillCreate)?;
        let path = audit.approvals_path.clone();
        (audit, Destination::File(path))
    };
    let pending: Vec<usize> = audit
        .statuses
        .iter()
        .enumerate()
        .filter(|(_, status)| status.needs_decision())
        .map(|(idx, _)| idx)
        .collect();

    if selecting {
        select_and_approve(&args, &audit, &dest, &pending, approved_by, expires)
    } else {
        if args.reason.is_some() {
            bail!(
                "--reason without selectors would approve everything: name the listeners with --port (and --protocol, --address, --netns)"
            );
        }
        if !terminal.stdin_tty {
            bail!(
                "interactive approval needs a terminal on stdin; to approve from a script, select listeners with --port (and --protocol, --address, --netns) and give --reason"
            );
        }
        interactive(&args, &audit, &dest, &pending, approved_by, expires)
    }
}

fn approver(args: &ApproveArgs) -> Result<String> {
    if let Some(by) = &args.approved_by
        && by.trim().is_empty()
    {
        bail!("--by must not be empty");
    }
    crate::settings::acting_user(args.approved_by.clone())
}

fn parse_date(text: &str) -> Result<time::Date> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, &format)
        .with_context(|| format!("--expires `{text}` is not a date like 2027-01-31"))
}

fn select_and_approve(
    args: &ApproveArgs,
    audit: &HostAudit,
    dest: &Destination,
    pending: &[usize],
    approved_by: String,
    expires: Option<time::Date>,
) -> Result<ExitCode> {
    let Some(port) = args.port else {
        bail!("selecting listeners needs --port");
    };
    let Some(reason) = args.reason.clone().filter(|r| !r.trim().is_empty()) else {
        bail!("approving by selectors needs --reason");
    };
    let protocol = match args.protocol.as_deref() {
        Some(text) => Some(
            Protocol::parse(text)
                .with_context(|| format!("--protocol `{text}` is not tcp or udp"))?,
        ),
        None => None,
    };
    let address = match args.address.as_deref() {
        Some(text) => Some(
            text.trim_matches(|c| c == '[' || c == ']')
                .parse::<IpAddr>()
                .with_context(|| format!("--address `{text}` is not an IP address"))?,
        ),
        None => None,
    };
    let selected: Vec<usize> = pending
        .iter()
        .copied()
        .filter(|&idx| {
            let l = &audit.snapshot.listeners[idx];
            l.port == port
                && protocol.is_none_or(|p| p == l.protocol)
                && address.is_none_or(|a| a.to_canonical() == l.address.to_canonical())
                && args.netns.as_deref().is_none_or(|n| n == l.netns.name)
        })
        .collect();
    if selected.is_empty() {
        let already = audit
            .snapshot
            .listeners
            .iter()
            .any(|l| l.port == port && l.scope.is_exposed());
        if already {
            outln!("nothing to approve: the selected listeners are already approved");
            return Ok(ExitCode::Clean);
        }
        bail!("no listener beyond loopback matches the selectors (port {port})");
    }
    for idx in selected {
        let listener = &audit.snapshot.listeners[idx];
        let entry = new_entry(
            audit,
            listener,
            args.by_package,
            &approved_by,
            &reason,
            expires,
        )?;
        let place = dest.write(&entry)?;
        outln!("approved {} in {place}", describe(audit, listener));
    }
    Ok(ExitCode::Clean)
}

fn interactive(
    args: &ApproveArgs,
    audit: &HostAudit,
    dest: &Destination,
    pending: &[usize],
    approved_by: String,
    expires: Option<time::Date>,
) -> Result<ExitCode> {
    if pending.is_empty() {
        outln!(
            "every listener beyond loopback is approved ({})",
            audit.approvals_path.display()
        );
        return Ok(ExitCode::Clean);
    }
    outln!(
        "{} listeners beyond loopback need a decision; approvals go to {}",
        pending.len(),
        audit.approvals_path.display()
    );
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut n_approved = 0;
    for (n, &idx) in pending.iter().enumerate() {
        let listener = &audit.snapshot.listeners[idx];
        outln!();
        outln!("[{}/{}] {}", n + 1, pending.len(), details(audit, listener));
        let answer = prompt(&mut lines, "approve this listener? [y/N/q] ")?;
        match answer.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => {}
            "q" | "quit" => break,
            _ => {
                outln!("not approved");
                continue;
            }
        }
        let reason = loop {
            let reason = prompt(&mut lines, "reason (why may it be exposed?): ")?;
            if !reason.trim().is_empty() {
                break reason.trim().to_owned();
            }
            outln!("a reason is required");
        };
        let entry = new_entry(
            audit,
            listener,
            args.by_package,
            &approved_by,
            &reason,
            expires,
        )?;
        dest.write(&entry)?;
        n_approved += 1;
        outln!("approved");
    }
    match dest {
        Destination::File(path) => outln!(
            "\n{n_approved} approved; commit {} to keep the decision",
            path.display()
        ),
        Destination::Server { scope, .. } => {
            outln!("\n{n_approved} approved on the server for {scope}");
        }
    }
    Ok(ExitCode::Clean)
}

fn prompt(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    question: &str,
) -> Result<String> {
    out!("{question}");
    crate::output::Stdout.flush()?;
    match lines.next() {
        Some(line) => Ok(line?),
        None => bail!("stdin closed before an answer"),
    }
}

fn describe(audit: &HostAudit, listener: &Listener) -> String {
    perimeter_checks::listener_subject(&audit.snapshot, listener)
}

/// The block shown for one listener: everything a person needs to decide.
fn details(audit: &HostAudit, listener: &Listener) -> String {
    let mut out = format!("{}  ({}", listener.endpoint(), listener.scope);
    if listener.address.is_ipv6() && listener.accepts_ipv4() {
        out.push_str(", IPv4 too");
    }
    out.push_str(&format!(", netns {})\n", listener.netns));
    match audit.snapshot.main_owner(listener) {
        Some(p) => {
            let n = listener.pids().len();
            out.push_str(&format!(
                "  process  {} (pid {}{})  user {}\n",
                p.name(),
                p.pid,
                if n > 1 {
                    format!(", {} more", n - 1)
                } else {
                    String::new()
                },
                p.user_name()
            ));
            let exe = p
                .exe
                .as_deref()
                .map_or_else(|| "(unknown)".into(), |e| e.display().to_string());
            let package = match &p.ownership {
                Ownership::Package(pkg) => format!("package {pkg}"),
                Ownership::Unpackaged => "UNPACKAGED".into(),
                Ownership::Unknown(why) => format!("package unknown: {why}"),
                Ownership::NotChecked => "package not checked".into(),
            };
            out.push_str(&format!(
                "  exe      {exe}{}  {package}\n",
                if p.exe_deleted { " (DELETED)" } else { "" }
            ));
            out.push_str(&format!("  cmdline  {}\n", redacted_cmdline(&p.cmdline)));
            if let Some(unit) = &p.unit {
                out.push_str(&format!("  unit     {unit}\n"));
            }
        }
        None => match audit.snapshot.published_port(listener) {
            Some(port) => {
                out.push_str(&format!(
                    "  process  none: a DNAT in nat prerouting forwards it to {}\n",
                    port.to
                ));
                if let Some((container, _)) = audit.snapshot.container_of(listener) {
                    out.push_str(&format!(
                        "  container {} ({}, {})\n",
                        container.name, container.image, container.runtime
                    ));
                }
            }
            None => out.push_str("  process  none that perimeter could see\n"),
        },
    }
    let subject = describe(audit, listener);
    for finding in audit.findings.iter().filter(|f| f.subject == subject) {
        out.push_str(&format!(
            "  {} {}: {}\n",
            finding.severity, finding.rule, finding.message
        ));
    }
    out.trim_end().to_owned()
}

fn new_entry(
    audit: &HostAudit,
    listener: &Listener,
    by_package: bool,
    approved_by: &str,
    reason: &str,
    expires: Option<time::Date>,
) -> Result<NewApproval> {
    let owner = match audit.snapshot.main_owner(listener) {
        Some(process) => {
            let package = process.ownership.package().map(|p| p.name.clone());
            if by_package && package.is_none() {
                bail!(
                    "{} has no package to key the approval on; approve it by executable (without --by-package)",
                    describe(audit, listener)
                );
            }
            let exe = if by_package {
                None
            } else {
                process.exe.as_ref().map(|e| e.display().to_string())
            };
            if exe.is_none() && package.is_none() {
                bail!(
                    "cannot see the executable behind {}; run as root",
                    describe(audit, listener)
                );
            }
            OwnerKey::Process {
                exe,
                package,
                user: Some(process.user_name()),
            }
        }
        // A forwarded port has no process to key on, whoever looks.
        None if audit.snapshot.published_port(listener).is_some() => OwnerKey::Unowned,
        None => {
            if !nix::unistd::geteuid().is_root() {
                bail!(
                    "cannot see which process holds {}: run as root before approving it",
                    listener.endpoint()
                );
            }
            OwnerKey::Unowned
        }
    };
    Ok(NewApproval {
        netns: listener.netns.name.clone(),
        protocol: listener.protocol,
        bind: Bind::Address(listener.address),
        port: listener.port,
        owner,
        approved_by: approved_by.to_owned(),
        approved_at: today(),
        reason: reason.to_owned(),
        expires,
    })
}

/// Where approvals go: the approvals file, or the server for a scope.
enum Destination {
    File(PathBuf),
    Server { session: Session, scope: String },
}

impl Destination {
    /// Writes one entry and says where it went. A file: under a lock,
    /// re-read (someone may have edited it meanwhile), append, write
    /// atomically through any symlink. The server: one approval for the
    /// scope, the token's user recorded as the approver.
    fn write(&self, entry: &NewApproval) -> Result<String> {
        match self {
            Destination::File(path) => {
                approvals::append_to_file(path, entry)?;
                Ok(path.display().to_string())
            }
            Destination::Server { session, scope } => {
                let stored = session.approve(scope, entry, false)?;
                Ok(format!(
                    "the server for {scope} (approval {}, by {})",
                    stored.id, stored.approved_by
                ))
            }
        }
    }
}
