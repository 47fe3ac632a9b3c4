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
    /// Submit a scan to a `perimeter server` on PostgreSQL as a job cut in
    /// --shards parts, which scanner nodes (`perimeter scanner`) lease one
    /// at a time; `scans merge --server URL --job ID` fetches the parts'
    /// results and merges them into one scan. The scan's own options
    /// (targets, ports, profile, rate) follow `--`, as `perimeter scan`
    /// takes them. A server on SQLite runs the job on its own scanner, as
    /// one part.
    #[command(after_help = SUBMIT_AFTER_HELP)]
    Submit(SubmitArgs),
    /// The scan jobs of a `perimeter server`, newest first, or one job with
    /// each of its parts (state, node, attempts).
    Jobs(JobsArgs),
}

const SUBMIT_AFTER_HELP: &str = "\
Example: perimeter scans submit --server https://fleet:8443 --token-file \
~/.perimeter-token --shards 16 --vantage office -- --ports top:100 --rate 500 \
198.18.0.0/20

--rate and --concurrency are each node's own: 4 nodes at --rate 500 send up \
to 2,000 probes a second together. A node whose lease runs out (it died, or \
lost the network for longer than --lease) loses its part to the next node \
that asks; its late results are refused, so each part is stored once.";

#[derive(Debug, Args)]
pub(crate) struct SubmitArgs {
    #[command(flatten)]
    pub(crate) server: super::GateServerArgs,

    /// N: the parts the scan is cut in, each leased by one node at a time.
    #[arg(long, default_value = "1", value_name = "N")]
    pub(crate) shards: u32,

    /// The permutation's seed (default: the server picks one).
    #[arg(long)]
    pub(crate) seed: Option<u64>,

    /// Only nodes of this vantage point may scan it (office, internet,
    /// dc-2): a node started with `perimeter scanner --vantage NAME`.
    #[arg(long, value_name = "NAME")]
    pub(crate) vantage: Option<String>,

    /// How long a node holds a part without renewing its lease (nodes renew
    /// a third of the way through); when it runs out, the part goes to the
    /// next node that asks (default 2m).
    #[arg(long, value_name = "DURATION")]
    pub(crate) lease: Option<String>,

    #[arg(long, value_enum, default_value = "human")]
    pub(crate) format: Format,

    /// The scan's options and targets, after `--`, as `perimeter scan`
    /// takes them (without --shard, --seed, --db or output options).
    #[arg(last = true, required = true, value_name = "SCAN OPTIONS")]
    pub(crate) scan_args: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct JobsArgs {
    #[command(flatten)]
    pub(crate) server: super::GateServerArgs,

    /// One job, with its parts.
    pub(crate) id: Option<i64>,

    /// How many jobs to list, newest first.
    #[arg(long, default_value = "20")]
    pub(crate) limit: usize,

    #[arg(long, value_enum, default_value = "human")]
    pub(crate) format: Format,
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

    /// Merge the parts of this scan job of --server (`scans submit`): their
    /// runs are fetched and stored in --db as shard runs, then merged.
    #[arg(long, value_name = "ID", conflicts_with_all = ["scans", "seed", "from"])]
    pub(crate) job: Option<i64>,

    #[command(flatten)]
    pub(crate) server: super::GateServerArgs,
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
