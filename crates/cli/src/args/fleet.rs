//! Flags of the fleet's commands: `server` (and its administration:
//! `server user`, `server token`, `server agents`), `agent`, and what a
//! client of the server needs (`check --server`, `approvals`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::HostArgs;

#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    #[command(subcommand)]
    pub(crate) action: Option<ServerAction>,

    /// The server's database: a file for the embedded SQLite (default
    /// /var/lib/perimeter-server/server.db as root, else
    /// $XDG_DATA_HOME/perimeter/server.db), or a postgres:// URL (or
    /// key=value connection string) for PostgreSQL.
    #[arg(
        long,
        value_name = "PATH|URL",
        env = "PERIMETER_SERVER_DATABASE",
        global = true
    )]
    pub(crate) database: Option<String>,

    /// The address and port to serve on. Loopback by default: give an
    /// address the agents can reach (0.0.0.0:8443 for every interface).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8443")]
    pub(crate) listen: SocketAddr,

    /// The server's certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,

    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,

    /// Generate a self-signed certificate at start (never written to disk)
    /// and print its fingerprint for clients to pin with --fingerprint. For
    /// trying things out; a new fingerprint at every start.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    pub(crate) dev_self_signed: bool,

    /// A file holding the enrolment secret agents present to join. Without
    /// it enrolment is closed (enrolled agents keep reporting).
    #[arg(long, value_name = "FILE", env = "PERIMETER_ENROL_SECRET_FILE")]
    pub(crate) enrol_secret_file: Option<PathBuf>,

    /// New agents wait until an administrator accepts them (`perimeter
    /// server agents accept ID`, or the API); their reports are refused until
    /// then.
    #[arg(long)]
    pub(crate) require_acceptance: bool,

    /// Reports one agent may send per minute.
    #[arg(long, value_name = "N", default_value = "30")]
    pub(crate) reports_per_minute: u32,

    /// How long a host's state is kept after a newer one replaced it, so
    /// its history reads back this far (`30d`, `12h`; `0s` keeps only the
    /// latest). Each host's latest state is always kept, and events and the
    /// trail never go; older states are deleted at start and every 10
    /// minutes, in small batches.
    #[arg(long, value_name = "DURATION", default_value = "30d")]
    pub(crate) keep_history: String,

    /// Run the monitor inside the server: the jobs of this perimeter.toml's
    /// [monitor] part (scheduled scans, audits, verifies and their alerts),
    /// as `perimeter monitor` runs them. SIGHUP reloads it.
    #[arg(long, value_name = "FILE")]
    pub(crate) monitor: Option<PathBuf>,

    /// The monitor's history database (default: history.db beside a SQLite
    /// server database, else perimeter's default history).
    #[arg(long, value_name = "FILE", requires = "monitor")]
    pub(crate) history: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ServerAction {
    /// People who use the server: add one.
    User(UserArgs),
    /// API tokens for people and scripts: add (shown once) or revoke.
    Token(TokenArgs),
    /// The enrolled agents: list, accept, revoke, set their environment.
    Agents(AgentsArgs),
}

#[derive(Debug, Args)]
pub(crate) struct UserArgs {
    #[command(subcommand)]
    pub(crate) action: UserAction,
}

#[derive(Debug, Subcommand)]
pub(crate) enum UserAction {
    /// Add a person. The password (12 characters or more) is read from
    /// --password-file, or from the first line of standard input; it is
    /// stored as an argon2id hash.
    Add(UserAddArgs),
    /// List the people.
    List,
    /// Disable a person: they sign in to nothing and their tokens stop
    /// working (kept in the trail; `enable` undoes it).
    Disable(UserNameArgs),
    /// Enable a disabled person again.
    Enable(UserNameArgs),
}

#[derive(Debug, Args)]
pub(crate) struct UserNameArgs {
    pub(crate) name: String,

    /// Who decides (default: $SUDO_USER, else $USER).
    #[arg(long, value_name = "NAME")]
    pub(crate) by: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct UserAddArgs {
    pub(crate) name: String,

    #[arg(long, value_enum)]
    pub(crate) role: RoleArg,

    #[arg(long, value_name = "FILE")]
    pub(crate) password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RoleArg {
    /// Reads everything.
    Viewer,
    /// Reads, and approves and revokes listeners.
    Approver,
    /// Everything, agents and people included.
    Admin,
}

#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    #[command(subcommand)]
    pub(crate) action: TokenAction,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenAction {
    /// Make an API token for a person (it acts with their role). Printed
    /// once; only its hash is stored.
    Add(TokenAddArgs),
    /// Revoke a token by its id.
    Revoke(TokenRevokeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct TokenAddArgs {
    pub(crate) user: String,

    /// What the token is for (shown in listings).
    #[arg(long, default_value = "")]
    pub(crate) label: String,

    /// For how long it works (`90d`, `12h`); for good without it.
    #[arg(long, value_name = "DURATION")]
    pub(crate) expires: Option<String>,

    /// A scanner node's token (`perimeter scanner`): it may lease parts of
    /// scan jobs and send their results, and nothing else, whatever the
    /// user's role.
    #[arg(long)]
    pub(crate) scanner: bool,
}

#[derive(Debug, Args)]
pub(crate) struct TokenRevokeArgs {
    pub(crate) id: i64,
}

#[derive(Debug, Args)]
pub(crate) struct AgentsArgs {
    #[command(subcommand)]
    pub(crate) action: Option<AgentsAction>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AgentsAction {
    /// List the agents (the default).
    List,
    /// Accept a pending agent.
    Accept(AgentDecisionArgs),
    /// Revoke an agent's key for good: its reports are refused from now on.
    Revoke(AgentDecisionArgs),
    /// Put an agent's host in an environment (or none with no NAME): the
    /// environment's approvals then cover it.
    Environment(AgentEnvironmentArgs),
}

#[derive(Debug, Args)]
pub(crate) struct AgentDecisionArgs {
    pub(crate) id: String,

    #[arg(long)]
    pub(crate) reason: String,

    /// Who decides (default: $SUDO_USER, else $USER).
    #[arg(long, value_name = "NAME")]
    pub(crate) by: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct AgentEnvironmentArgs {
    pub(crate) id: String,

    pub(crate) environment: Option<String>,

    #[arg(long, value_name = "NAME")]
    pub(crate) by: Option<String>,
}

/// How a client reaches and trusts the server.
#[derive(Debug, Clone, Args)]
pub(crate) struct ServerTrustArgs {
    /// The SHA-256 fingerprint of the server's certificate, as `perimeter
    /// server` prints it: that certificate alone is trusted.
    #[arg(long, value_name = "SHA256", env = "PERIMETER_SERVER_FINGERPRINT")]
    pub(crate) fingerprint: Option<String>,

    /// Trust only the CA certificates in this PEM file (default: the
    /// system's CA store).
    #[arg(long, value_name = "FILE", conflicts_with = "fingerprint")]
    pub(crate) ca: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct AgentArgs {
    /// The server, https://HOST:PORT.
    #[arg(long, value_name = "URL", env = "PERIMETER_SERVER")]
    pub(crate) server: String,

    #[command(flatten)]
    pub(crate) trust: ServerTrustArgs,

    /// A file with the enrolment secret; needed only until the agent is
    /// enrolled.
    #[arg(long, value_name = "FILE", env = "PERIMETER_ENROL_SECRET_FILE")]
    pub(crate) enrol_secret_file: Option<PathBuf>,

    /// Where the agent keeps its key, its enrolment and its queue (default
    /// /var/lib/perimeter-agent as root, else
    /// $XDG_DATA_HOME/perimeter/agent).
    #[arg(long, value_name = "DIR", env = "PERIMETER_AGENT_DIR")]
    pub(crate) state_dir: Option<PathBuf>,

    /// How often the full audit is reported; a listener that appears or goes
    /// is reported at once.
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub(crate) interval: String,

    /// The most reports kept while the server is out of reach; past it they
    /// are folded into one full report and the lost events counted.
    #[arg(long, value_name = "N", default_value = "500")]
    pub(crate) queue_limit: usize,

    /// Enrol if needed, report once, send the queue, and exit (0 when the
    /// server took everything, 1 when reports stay queued).
    #[arg(long)]
    pub(crate) once: bool,

    /// Do not watch for listeners and execs between audits.
    #[arg(long)]
    pub(crate) no_watch: bool,

    #[command(flatten)]
    pub(crate) host: HostArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ScannerArgs {
    /// The server, https://HOST:PORT (on PostgreSQL: a server on SQLite runs
    /// its jobs itself).
    #[arg(long, value_name = "URL", env = "PERIMETER_SERVER")]
    pub(crate) server: String,

    #[command(flatten)]
    pub(crate) trust: ServerTrustArgs,

    /// A file with a scanner token (`perimeter server token add USER
    /// --scanner`).
    #[arg(long, value_name = "FILE", env = "PERIMETER_TOKEN_FILE")]
    pub(crate) token_file: PathBuf,

    /// This node's name, as the job's parts record it (default: the host
    /// name).
    #[arg(long, value_name = "NAME")]
    pub(crate) node: Option<String>,

    /// Where this node scans from (office, internet, dc-2): it takes the jobs
    /// that ask for this vantage point, and those that ask for none.
    #[arg(long, value_name = "NAME")]
    pub(crate) vantage: Option<String>,

    /// Scan only targets inside these ranges: a part of a job with a target
    /// outside them (or a host name) is refused, and left to its lease's
    /// expiry. Repeat, or separate with commas. Without it, the node scans
    /// what the server asks.
    #[arg(long = "allow-targets", value_name = "CIDR", value_delimiter = ',')]
    pub(crate) allow_targets: Vec<ipnet::IpNet>,

    /// How long to wait before asking again when there is nothing to scan.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub(crate) poll: String,

    /// Exit when there is nothing left to scan (a batch job's node).
    #[arg(long)]
    pub(crate) once: bool,
}

/// `check --server`: the gate against the server's approvals.
#[derive(Debug, Clone, Args)]
pub(crate) struct GateServerArgs {
    /// Judge this host's listeners by the approvals the server holds for it
    /// (fleet-wide, its environment's and its own) instead of a local file.
    #[arg(long, value_name = "URL", env = "PERIMETER_SERVER")]
    pub(crate) server: Option<String>,

    #[command(flatten)]
    pub(crate) trust: ServerTrustArgs,

    /// A file with an API token (viewer or more). Without it, the host's
    /// enrolled agent signs the request (its state directory, --agent-dir).
    #[arg(long, value_name = "FILE", env = "PERIMETER_TOKEN_FILE")]
    pub(crate) token_file: Option<PathBuf>,

    /// The host's agent id on the server (default: the enrolled agent's).
    #[arg(long, value_name = "ID")]
    pub(crate) host_id: Option<String>,

    /// The agent's state directory, for its id and key.
    #[arg(long, value_name = "DIR", env = "PERIMETER_AGENT_DIR")]
    pub(crate) agent_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ApprovalsArgs {
    #[command(subcommand)]
    pub(crate) action: ApprovalsAction,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ApprovalsAction {
    /// Write one scope's approvals on the server as an approvals file (to
    /// stdout, or atomically to --output).
    Export(ApprovalsExportArgs),
    /// Add the entries of an approvals file to one scope on the server,
    /// keeping each entry's approver and date (administrators only); entries
    /// the server already holds are left alone. With --sync the file is the
    /// source of truth: the scope's approvals it does not list are revoked.
    Import(ApprovalsImportArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ApprovalsExportArgs {
    /// `fleet`, `environment:NAME` or `host:AGENT_ID`.
    #[arg(long, value_name = "SCOPE")]
    pub(crate) scope: String,

    #[arg(long, short = 'o', value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) server: GateServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ApprovalsImportArgs {
    /// The approvals file.
    pub(crate) file: PathBuf,

    /// `fleet`, `environment:NAME` or `host:AGENT_ID`.
    #[arg(long, value_name = "SCOPE")]
    pub(crate) scope: String,

    /// Revoke the scope's approvals that the file does not list.
    #[arg(long)]
    pub(crate) sync: bool,

    #[command(flatten)]
    pub(crate) server: GateServerArgs,
}
