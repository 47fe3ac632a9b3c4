//! Raw command-line flags: every clap type of the `perimeter` command, one
//! file per family of commands, and the flags several families share
//! (`--format`, `--fail-on`, what to look at on this host, the inventory of
//! environments, the history database).
//!
//! Architecture invariant: this module depends on nothing else in the crate
//! and touches nothing outside the process. Defaults that need the
//! filesystem or the environment are resolved in `settings`, validation
//! happens in each command.

mod docs;
mod envs;
mod fleet;
mod history;
mod host;
mod inventory;
mod monitor;
mod scan;
mod watch;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub(crate) use docs::{CompletionsArgs, ManArgs};
pub(crate) use envs::{EnvsArgs, InitArgs};
pub(crate) use fleet::{
    AgentArgs, AgentsAction, AgentsArgs, ApprovalsAction, ApprovalsArgs, GateServerArgs, RoleArg,
    ScannerArgs, ServerAction, ServerArgs, ServerTrustArgs, TokenAction, UserAction, UserNameArgs,
};
pub(crate) use history::{
    AuditsArgs, DiffArgs, JobsArgs, MergeArgs, ScansAction, ScansArgs, SubmitArgs,
};
pub(crate) use host::{ApproveArgs, AuditArgs, CheckArgs};
pub(crate) use inventory::{
    ExportArgs, InventoryAction, InventoryArgs, ManifestDiffArgs, ShowArgs, SourceArgs,
};
pub(crate) use monitor::{AckArgs, AlertsAction, AlertsArgs, MonitorArgs};
pub(crate) use scan::{ProfileArg, ScanArgs, ScanFormat, ScanTuning, VerifyArgs};
pub(crate) use watch::{ExecSourceArg, WatchArgs, WatchFormat};

#[derive(Debug, Parser)]
#[command(
    name = "perimeter",
    version,
    about = "Know what listens, approve what is exposed, watch it from inside and outside",
    after_help = "Exit codes: 0 clean, 1 findings or changes at or above the threshold, 2 usage, configuration or runtime error."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,

    /// More logging on stderr (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Audit this host: every listener traced to process, user, executable and
    /// package, with service checks and findings. Stored in the history database.
    Audit(AuditArgs),
    /// The deploy gate: fail (exit 1) on any unapproved listener beyond loopback
    /// or any finding at or above --fail-on.
    Check(CheckArgs),
    /// Approve listeners beyond loopback, one at a time (interactive), or by
    /// explicit selectors with --reason.
    Approve(ApproveArgs),
    /// List the rules perimeter checks, with their ids and severities.
    Rules,
    /// Scan address ranges from outside: open ports, services, unauthenticated
    /// services. Stored in the history database.
    Scan(Box<ScanArgs>),
    /// List stored scans; `merge` combines the shards of a scan into one.
    Scans(ScansArgs),
    /// Compare two stored scans (default: the last two of the same target set).
    Diff(DiffArgs),
    /// List stored audits, or compare two of them (--diff).
    Audits(AuditsArgs),
    /// Write the commented example inventory of environments (perimeter.toml).
    Init(InitArgs),
    /// List the environments of the inventory with their hosts (as last seen
    /// by scans), owners and expiry.
    Envs(EnvsArgs),
    /// Scan each environment's ranges from here and compare what answers with
    /// what the inventory allows from this vantage point.
    Verify(Box<VerifyArgs>),
    /// The package database as the source of truth: installed packages, and
    /// every executable, process, unit and changed file that is not theirs.
    /// `export` writes a rebuild manifest, `diff` compares two.
    Inventory(InventoryArgs),
    /// Watch this host from inside as it changes: every process exec (user,
    /// executable, package, command line, and whether it is unpackaged, runs
    /// from a world-writable directory, deleted or from memory), and every
    /// listener that appears or goes away. Until --duration or Ctrl-C.
    Watch(WatchArgs),
    /// Run until stopped: the scans, audits and verifies of the [monitor]
    /// part of perimeter.toml on their schedules, every unexpected change
    /// told once to its channels (webhook, Slack, email, syslog, a command),
    /// with Prometheus metrics. SIGHUP reloads, SIGTERM stops cleanly.
    Monitor(MonitorArgs),
    /// The monitor's alerts with their deliveries, and the conditions still
    /// open; `ack` acknowledges one.
    Alerts(AlertsArgs),
    /// Serve the fleet's API: agents report their hosts, people approve
    /// listeners for the whole fleet, `check --server` gates against them.
    /// SQLite by default, PostgreSQL with --database postgres://...
    Server(ServerArgs),
    /// The server's approvals as an approvals file, and back: `export`,
    /// `import` (with --sync, the file is the source of truth).
    Approvals(ApprovalsArgs),
    /// Report this host to `perimeter server`: its audit on an interval and
    /// at once when a listener appears or goes, suspicious execs with it.
    Agent(Box<AgentArgs>),
    /// Scan for a `perimeter server` on PostgreSQL: lease one part of a scan
    /// job at a time (`scans submit`), scan it, send its results, take the
    /// next; any number of nodes join and leave at will. A node that stops
    /// renewing its lease loses its part to the next node.
    Scanner(Box<ScannerArgs>),
    /// Print the shell completion script for bash, zsh, fish, elvish or
    /// powershell.
    Completions(CompletionsArgs),
    /// Print the manual page, or write every page (one per command) with
    /// --dir.
    Man(ManArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SeverityArg {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl From<SeverityArg> for perimeter_model::Severity {
    fn from(value: SeverityArg) -> Self {
        match value {
            SeverityArg::Info => perimeter_model::Severity::Info,
            SeverityArg::Low => perimeter_model::Severity::Low,
            SeverityArg::Medium => perimeter_model::Severity::Medium,
            SeverityArg::High => perimeter_model::Severity::High,
            SeverityArg::Critical => perimeter_model::Severity::Critical,
        }
    }
}

/// What to look at on this host, shared by audit, check and approve.
#[derive(Debug, Clone, Args)]
pub(crate) struct HostArgs {
    /// Audit every network namespace on the host (each distinct
    /// /proc/PID/ns/net), not only the one perimeter runs in.
    #[arg(long)]
    pub(crate) all_netns: bool,

    /// The approvals file. Default: ./perimeter-approvals.toml if it exists,
    /// else /etc/perimeter/approvals.toml.
    #[arg(long, value_name = "FILE", env = "PERIMETER_APPROVALS")]
    pub(crate) approvals: Option<PathBuf>,

    /// Read sockets from /proc/net/* instead of netlink sock_diag.
    #[arg(long)]
    pub(crate) proc_net: bool,

    /// Do not connect to local services (Redis) to check them.
    #[arg(long)]
    pub(crate) no_service_probes: bool,

    #[command(flatten)]
    pub(crate) inventory: InventoryFileArgs,

    /// Daemon names exempt from service.root (privilege-separating daemons).
    /// Replaces the default list (sshd, systemd, nginx, apache2, ...) when given.
    #[arg(long = "privsep", value_name = "NAME", value_delimiter = ',')]
    pub(crate) privsep: Vec<String>,
}

/// The inventory of environments.
#[derive(Debug, Clone, Args)]
pub(crate) struct InventoryFileArgs {
    /// The inventory of environments. Default: ./perimeter.toml if it exists,
    /// else /etc/perimeter/perimeter.toml (no environment rules without one).
    #[arg(long = "inventory", value_name = "FILE", env = "PERIMETER_INVENTORY")]
    pub(crate) path: Option<PathBuf>,

    /// The environment this host is in (default: decided from its addresses).
    #[arg(long = "env", value_name = "NAME")]
    pub(crate) env: Option<String>,
}

/// Where history lives.
#[derive(Debug, Clone, Args)]
pub(crate) struct DbArgs {
    /// The history database. Default: $XDG_DATA_HOME/perimeter/perimeter.db
    /// (~/.local/share/perimeter/perimeter.db).
    #[arg(long, value_name = "FILE", env = "PERIMETER_DB")]
    pub(crate) db: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// clap's own consistency checks over every command and flag (conflicts
    /// naming real flags, no duplicate short options, ...).
    #[test]
    fn flags_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn inventory_and_watch_parse_through_the_command_enum() {
        let cli = Cli::try_parse_from(["perimeter", "inventory", "diff", "a.json", "b.json"])
            .expect("parses");
        assert!(matches!(
            cli.command,
            Command::Inventory(InventoryArgs {
                action: Some(InventoryAction::Diff(_)),
                ..
            })
        ));
        let cli = Cli::try_parse_from(["perimeter", "watch", "--format", "jsonl"]).expect("parses");
        assert!(matches!(
            cli.command,
            Command::Watch(WatchArgs {
                format: WatchFormat::Jsonl,
                ..
            })
        ));
    }
}
