//! The audit of this host, which `audit`, `check` and `approve` share: find
//! the approvals file, collect the host's facts, run the rules, decide each
//! listener's approval; and the audit's output, which `audit` and `check`
//! (with `--format json`) both write.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use perimeter_checks::approvals::{self, Approvals};
use perimeter_checks::{CheckConfig, run_all};
use perimeter_host::audit::{AuditOptions, collect};
use perimeter_model::{Finding, HostSnapshot, Process};
use perimeter_report::audit::{ApprovalStatus, AuditView, Since, to_human, write_json};
use time::OffsetDateTime;

use crate::args::{Format, HostArgs};
use crate::pipeline::environments;
use crate::settings;
use crate::terminal::Terminal;

/// A finished audit of this host.
#[derive(Debug)]
pub(crate) struct HostAudit {
    pub snapshot: HostSnapshot,
    pub findings: Vec<Finding>,
    pub statuses: Vec<ApprovalStatus>,
    pub approvals: Approvals,
    pub approvals_path: PathBuf,
    pub socket_source: String,
    pub taken_at: OffsetDateTime,
}

impl HostAudit {
    pub(crate) fn n_unapproved(&self) -> usize {
        self.statuses
            .iter()
            .filter(|status| status.needs_decision())
            .count()
    }
}

/// Whether a missing approvals file the user named is an error (audit, check:
/// a typo must not pass the gate) or the file approve is about to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MissingApprovals {
    Error,
    WillCreate,
}

/// Load the approvals (a malformed file is an error: exit 2, file untouched),
/// collect, check.
pub(crate) fn audit_host(args: &HostArgs, missing: MissingApprovals) -> Result<HostAudit> {
    let approvals_file = settings::approvals_file(args.approvals.as_deref());
    let missing_ok = !approvals_file.named || missing == MissingApprovals::WillCreate;
    let approvals = approvals::load(&approvals_file.path, missing_ok)?;
    for warning in approvals.duplicate_warnings() {
        eprintln!("perimeter: warning: {warning}");
    }
    audit_with(args, approvals, approvals_file.path)
}

/// Collect and check with approvals from elsewhere (the server's, or none for
/// an agent, whose server judges approvals itself); `approvals_path` names
/// where they came from in messages.
pub(crate) fn audit_with(
    args: &HostArgs,
    approvals: Approvals,
    approvals_path: PathBuf,
) -> Result<HostAudit> {
    let mut inventory = environments::load(&args.inventory)?;
    if let Err(refusal) = inventory.check_scannable() {
        // The unedited example (what `perimeter init` and the package write
        // to /etc/perimeter/perimeter.toml) describes documentation ranges,
        // not this network: judging this host against it would be noise.
        eprintln!("perimeter: warning: {refusal}; its environments are not used");
        inventory = perimeter_checks::environments::Environments::default();
    }
    let taken_at = OffsetDateTime::now_utc();
    let collected = collect(&AuditOptions {
        all_netns: args.all_netns,
        force_proc_net: args.proc_net,
        probe_services: !args.no_service_probes,
        ..AuditOptions::default()
    });
    let mut config = CheckConfig::new(settings::today());
    config.environments = inventory;
    config.forced_env = args.inventory.env.clone();
    if !args.privsep.is_empty() {
        config.privsep_daemons = args.privsep.clone();
    }
    let findings = run_all(&collected.snapshot, &approvals, &config);
    let statuses = collected
        .snapshot
        .listeners
        .iter()
        .map(|listener| {
            if !listener.scope.is_exposed() {
                return ApprovalStatus::NotNeeded;
            }
            let owners: Vec<&Process> = collected.snapshot.owners_of(listener).collect();
            settings::approval_status(approvals.verdict(listener, &owners, config.today))
        })
        .collect();
    Ok(HostAudit {
        snapshot: collected.snapshot,
        findings,
        statuses,
        approvals,
        approvals_path,
        socket_source: collected.socket_source,
        taken_at,
    })
}

/// Write the audit to stdout: the `perimeter.audit/1` document or the human
/// report, with what changed since the previous stored audit when known.
pub(crate) fn print(
    audit: &HostAudit,
    since: Option<&Since>,
    format: Format,
    terminal: &Terminal,
) -> Result<()> {
    let view = AuditView {
        snapshot: &audit.snapshot,
        findings: &audit.findings,
        approvals: &audit.statuses,
        approvals_file: audit.approvals.path.as_deref(),
        taken_at: audit.taken_at,
        socket_source: &audit.socket_source,
        perimeter_version: env!("CARGO_PKG_VERSION"),
        since,
    };
    match format {
        Format::Json => {
            let mut out = std::io::BufWriter::new(crate::output::Stdout);
            write_json(&view, &mut out)?;
            writeln!(out)?;
            out.flush()?;
        }
        Format::Human => out!("{}", to_human(&view, terminal.stdout_style())),
    }
    Ok(())
}
