//! Raw command-line flags (clap). Validation into settings happens in each
//! command module; nothing here touches the host.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// List stored scans.
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
    Inventory(crate::commands::inventory::InventoryArgs),
    /// Watch this host from inside as it changes: every process exec (user,
    /// executable, package, command line, and whether it is unpackaged, runs
    /// from a world-writable directory, deleted or from memory), and every
    /// listener that appears or goes away. Until --duration or Ctrl-C.
    Watch(crate::commands::watch::WatchArgs),
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

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    #[command(flatten)]
    pub(crate) host: HostArgs,

    #[command(flatten)]
    pub(crate) db: DbArgs,

    /// Do not record this audit in the history database.
    #[arg(long)]
    pub(crate) no_store: bool,

    #[arg(long, value_enum, default_value = "human")]
    pub(crate) format: Format,

    /// Exit 1 when a finding is at or above this severity (by default the audit
    /// reports and exits 0; `perimeter check` is the gate).
    #[arg(long, value_enum, value_name = "SEVERITY")]
    pub(crate) fail_on: Option<SeverityArg>,
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    pub(crate) host: HostArgs,

    /// Fail on findings at or above this severity (unapproved listeners always
    /// fail the gate).
    #[arg(long, value_enum, default_value = "high", value_name = "SEVERITY")]
    pub(crate) fail_on: SeverityArg,

    #[arg(long, value_enum, default_value = "human")]
    pub(crate) format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct ApproveArgs {
    #[command(flatten)]
    pub(crate) host: HostArgs,

    /// Who approves (recorded in the file). Default: $SUDO_USER, else $USER.
    #[arg(long = "by", value_name = "NAME")]
    pub(crate) approved_by: Option<String>,

    /// Why the listener may be exposed. Required with selectors; asked for
    /// interactively otherwise.
    #[arg(long)]
    pub(crate) reason: Option<String>,

    /// The approval stops counting after this date (YYYY-MM-DD).
    #[arg(long, value_name = "DATE")]
    pub(crate) expires: Option<String>,

    /// Select listeners by port (non-interactive form; needs --reason).
    #[arg(long)]
    pub(crate) port: Option<u16>,

    /// Select by protocol (tcp or udp).
    #[arg(long)]
    pub(crate) protocol: Option<String>,

    /// Select by bind address (e.g. 0.0.0.0, ::, 198.51.100.7).
    #[arg(long)]
    pub(crate) address: Option<String>,

    /// Select by network namespace name (host, or a name under /run/netns).
    #[arg(long)]
    pub(crate) netns: Option<String>,

    /// Key the approval on the package instead of the executable path.
    #[arg(long)]
    pub(crate) by_package: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ScanFormat {
    Human,
    Json,
    Jsonl,
    Xml,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProfileArg {
    Fast,
    Normal,
    Stealth,
}

/// How to scan: ports, profile and the knobs that override it. Shared by
/// `scan` and `verify`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ScanTuning {
    /// Ports: `22,80,1000-2000`, or `-` for all 65535.
    #[arg(
        short = 'p',
        long = "ports",
        value_name = "PORTS",
        allow_hyphen_values = true
    )]
    pub(crate) ports: Option<String>,

    /// The N most exposure-relevant ports from perimeter's curated list.
    #[arg(long, value_name = "N", conflicts_with = "ports")]
    pub(crate) top_ports: Option<usize>,

    #[arg(long, value_enum, default_value = "normal")]
    pub(crate) profile: ProfileArg,

    /// Probes per second, a hard ceiling (overrides the profile).
    #[arg(long)]
    pub(crate) rate: Option<f64>,

    /// Spread a stealth scan over this window (e.g. 6h, 30m): it paces itself
    /// to finish near the end.
    #[arg(long, value_name = "DURATION")]
    pub(crate) spread: Option<String>,

    /// Connections in flight at once (overrides the profile).
    #[arg(long)]
    pub(crate) concurrency: Option<usize>,

    /// Per-probe timeout (e.g. 800ms, 2s; overrides the profile).
    #[arg(long, value_name = "DURATION")]
    pub(crate) timeout: Option<String>,

    /// Retries for probes that got no answer (overrides the profile).
    #[arg(long)]
    pub(crate) retries: Option<u32>,

    /// Permutation seed, to replay a scan's order (default: random, recorded).
    #[arg(long)]
    pub(crate) seed: Option<u64>,

    /// A half-open SYN scan from a raw socket instead of connections: no
    /// handshake completes, so the services scanned never see a connection,
    /// and it costs this machine less per port. Needs CAP_NET_RAW (root).
    /// Open ports are still identified over ordinary connections.
    #[arg(long, visible_alias = "sS")]
    pub(crate) syn: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ScanArgs {
    /// Targets: addresses, CIDRs, ranges (a.b.c.d-e.f.g.h), host names.
    #[arg(value_name = "TARGET")]
    pub(crate) targets: Vec<String>,

    /// Read more targets from a file (one per line, # comments).
    #[arg(short = 'i', long = "targets-file", value_name = "FILE")]
    pub(crate) targets_file: Vec<PathBuf>,

    /// Never send a packet to these (same syntax as targets).
    #[arg(long, value_name = "TARGET", value_delimiter = ',')]
    pub(crate) exclude: Vec<String>,

    #[arg(long, value_name = "FILE")]
    pub(crate) exclude_file: Vec<PathBuf>,

    #[command(flatten)]
    pub(crate) tuning: ScanTuning,

    /// Skip service identification and unauthenticated-service checks.
    #[arg(long)]
    pub(crate) no_identify: bool,

    /// Allow a target covering the whole IPv4 or IPv6 internet (0.0.0.0/0, ::/0).
    #[arg(long)]
    pub(crate) allow_internet_wide: bool,

    /// Report closed and filtered ports too (default: open ports only).
    #[arg(long)]
    pub(crate) all_states: bool,

    #[arg(long, value_enum, default_value = "human")]
    pub(crate) format: ScanFormat,

    /// Also write nmap-compatible XML to this file.
    #[arg(long = "xml-out", short = 'X', value_name = "FILE")]
    pub(crate) xml_out: Option<PathBuf>,

    /// No progress bar.
    #[arg(short, long)]
    pub(crate) quiet: bool,

    #[command(flatten)]
    pub(crate) db: DbArgs,

    /// Do not record this scan in the history database.
    #[arg(long)]
    pub(crate) no_store: bool,

    /// Exit 1 when a finding is at or above this severity.
    #[arg(long, value_enum, value_name = "SEVERITY")]
    pub(crate) fail_on: Option<SeverityArg>,
}

#[derive(Debug, Args)]
pub(crate) struct ScansArgs {
    #[command(flatten)]
    pub(crate) db: DbArgs,

    /// How many scans to list, newest first.
    #[arg(long, default_value = "20")]
    pub(crate) limit: usize,

    #[arg(long, value_enum, default_value = "human")]
    pub(crate) format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct DiffArgs {
    /// The earlier scan id (default: the second newest of B's target set).
    pub(crate) before: Option<i64>,
    /// The later scan id (default: the newest scan).
    pub(crate) after: Option<i64>,

    #[command(flatten)]
    pub(crate) db: DbArgs,

    /// Exit 1 when a change is at or above this severity.
    #[arg(long, value_enum, default_value = "medium", value_name = "SEVERITY")]
    pub(crate) fail_on: SeverityArg,

    #[arg(long, value_enum, default_value = "human")]
    pub(crate) format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct AuditsArgs {
    #[command(flatten)]
    pub(crate) db: DbArgs,

    /// Compare the newest audit of this host with the one before it.
    #[arg(long)]
    pub(crate) diff: bool,

    #[arg(long, default_value = "20")]
    pub(crate) limit: usize,

    #[arg(long, value_enum, default_value = "human")]
    pub(crate) format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Where to write it.
    #[arg(default_value = "perimeter.toml")]
    pub(crate) path: PathBuf,

    /// Overwrite an existing file.
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct EnvsArgs {
    #[command(flatten)]
    pub(crate) inventory: InventoryFileArgs,

    #[command(flatten)]
    pub(crate) db: DbArgs,

    #[arg(long, value_enum, default_value = "human")]
    pub(crate) format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    pub(crate) inventory: InventoryFileArgs,

    /// Further ranges to scan for hosts that belong to no environment
    /// (env.unknown-host), e.g. the organisation's whole allocation.
    #[arg(long = "also", value_name = "TARGET", value_delimiter = ',')]
    pub(crate) also: Vec<String>,

    /// Only these environments (default: all).
    #[arg(long = "only", value_name = "NAME", value_delimiter = ',')]
    pub(crate) only: Vec<String>,

    /// The source address this scan is seen from, for allow_from decisions
    /// (default: this machine's own addresses).
    #[arg(long, value_name = "ADDRESS")]
    pub(crate) from: Vec<std::net::IpAddr>,

    #[command(flatten)]
    pub(crate) tuning: ScanTuning,

    #[arg(long, value_enum, default_value = "human")]
    pub(crate) format: ScanFormat,

    #[arg(short, long)]
    pub(crate) quiet: bool,

    #[command(flatten)]
    pub(crate) db: DbArgs,

    /// Do not record the scan in the history database.
    #[arg(long)]
    pub(crate) no_store: bool,

    /// Exit 1 when a finding is at or above this severity.
    #[arg(long, value_enum, default_value = "high", value_name = "SEVERITY")]
    pub(crate) fail_on: SeverityArg,
}
