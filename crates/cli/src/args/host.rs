//! Flags of the commands that look at this host: `audit`, `check` and
//! `approve`.

use clap::Args;

use super::{DbArgs, Format, GateServerArgs, HostArgs, SeverityArg};

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

    #[command(flatten)]
    pub(crate) server: GateServerArgs,
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

    #[command(flatten)]
    pub(crate) server: GateServerArgs,

    /// With --server: whom the approval covers: `host:AGENT_ID` (default:
    /// this host), `environment:NAME`, or `fleet`.
    #[arg(long, value_name = "SCOPE", requires = "server")]
    pub(crate) scope: Option<String>,
}
