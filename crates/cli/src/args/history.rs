//! Flags of the commands that read the history database: `scans`, `diff`
//! and `audits`.

use clap::Args;

use super::{DbArgs, Format, SeverityArg};

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
