//! Flags of the commands that read the history database: `scans` (and
//! `scans merge`, which writes the merged scan), `diff` and `audits`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{DbArgs, Format, SeverityArg};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ScansArgs {
    #[command(subcommand)]
    pub(crate) action: Option<ScansAction>,

    #[command(flatten)]
    pub(crate) db: DbArgs,

    /// How many scans to list, newest first.
    #[arg(long, default_value = "20")]
    pub(crate) limit: usize,

    #[arg(long, value_enum, default_value = "human")]
    pub(crate) format: Format,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ScansAction {
    /// Combine the shard runs of one scan (`perimeter scan --shard K/N`,
    /// same targets, excludes, ports, seed and N) into one scan stored in
    /// --db, which `diff` and the monitor treat like any other. Exit 2 when
    /// a part is missing or incomplete: the merged scan is then stored
    /// incomplete, and the parts are named.
    #[command(after_help = MERGE_AFTER_HELP)]
    Merge(MergeArgs),
}

const MERGE_AFTER_HELP: &str = "\
Which runs: without --scan, the scan of the newest shard run found (of \
--seed's, when given), across --db and every --from database; of each of its \
parts K, the newest complete run, else the newest run of any status. With \
--scan, exactly the runs named, which must be parts of one scan, one run per \
part.

The merged scan holds the union of the parts' results, each (address, port) \
once; it is complete only when all N parts are there and complete. It is \
stored under the whole scan's target key, so `perimeter diff` compares it \
with earlier merged or unsharded scans of the same targets and ports.

Example: perimeter scans merge --db all.db --from shard-0.db --from \
shard-1.db --from shard-2.db";

#[derive(Debug, Args)]
pub(crate) struct MergeArgs {
    /// The database the merged scan is written to (created if missing);
    /// shard runs stored in it are merged too.
    #[command(flatten)]
    pub(crate) db: DbArgs,

    /// Another database with shard runs, opened read-only (one per batch
    /// job, say). Repeat for each.
    #[arg(long = "from", value_name = "FILE")]
    pub(crate) from: Vec<PathBuf>,

    /// Merge exactly this shard run: a scan id in --db, or FILE:ID for one
    /// in a --from database (FILE as given to --from). Repeat for each part.
    #[arg(long = "scan", value_name = "[FILE:]ID", conflicts_with = "seed")]
    pub(crate) scans: Vec<String>,

    /// Merge the newest scan of this seed rather than the newest of any.
    #[arg(long)]
    pub(crate) seed: Option<u64>,
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
