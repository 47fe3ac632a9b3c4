//! Flags of the commands that run and read the monitor: `monitor` and
//! `alerts`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{DbArgs, Format};

#[derive(Debug, Args)]
pub(crate) struct MonitorArgs {
    /// The perimeter.toml whose [monitor] part lists the jobs and channels.
    /// Default: ./perimeter.toml if it exists, else /etc/perimeter/perimeter.toml.
    #[arg(long = "inventory", value_name = "FILE", env = "PERIMETER_INVENTORY")]
    pub(crate) inventory: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) db: DbArgs,

    /// Run the jobs that are due (or JOB, due or not), deliver their alerts
    /// once, and exit: for cron or a systemd timer instead of the service.
    #[arg(long, value_name = "JOB", num_args = 0..=1, default_missing_value = "")]
    pub(crate) once: Option<String>,

    /// Check the configuration (jobs, schedules, channels and their
    /// secrets), print the jobs with their next run, and exit.
    #[arg(long, conflicts_with = "once")]
    pub(crate) check: bool,

    /// The wait before the first retry of a failed delivery; each retry
    /// waits twice as long, up to --retry-max.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub(crate) retry_initial: String,

    /// The longest wait between two attempts at one delivery.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub(crate) retry_max: String,
}

#[derive(Debug, Args)]
pub(crate) struct AlertsArgs {
    #[command(subcommand)]
    pub(crate) action: Option<AlertsAction>,

    #[command(flatten)]
    pub(crate) db: DbArgs,

    /// List what the monitor inside a `perimeter server` raised (a token:
    /// --token-file) instead of a local history.
    #[command(flatten)]
    pub(crate) server: super::GateServerArgs,

    /// How many alerts to list, newest first.
    #[arg(long, default_value = "20")]
    pub(crate) limit: usize,

    #[arg(long, value_enum, default_value = "human")]
    pub(crate) format: Format,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AlertsAction {
    /// Acknowledge an open condition: its escalations stay quiet until
    /// --until (for good without it); it is still listed, and its end is
    /// still told.
    Ack(AckArgs),
}

#[derive(Debug, Args)]
pub(crate) struct AckArgs {
    /// The condition's id, as `perimeter alerts` lists it.
    pub(crate) condition: i64,

    /// Why (kept with the acknowledgement).
    #[arg(long)]
    pub(crate) reason: String,

    /// For how long (`7d`, `12h`), or until a date (YYYY-MM-DD).
    #[arg(long, value_name = "DURATION|DATE")]
    pub(crate) until: Option<String>,

    /// Who acknowledges (default: $SUDO_USER, else $USER). With --server
    /// the token's user acknowledges.
    #[arg(long, value_name = "NAME", conflicts_with = "server")]
    pub(crate) by: Option<String>,

    #[command(flatten)]
    pub(crate) db: DbArgs,

    /// Acknowledge on a `perimeter server` running the monitor (a token of
    /// an approver or admin: --token-file) instead of in a local history.
    #[command(flatten)]
    pub(crate) server: super::GateServerArgs,
}
