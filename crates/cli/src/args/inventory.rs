//! Flags of `perimeter inventory` and its subcommands `export` and `diff`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{Format, SeverityArg};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct InventoryArgs {
    #[command(subcommand)]
    pub(crate) action: Option<InventoryAction>,

    #[command(flatten)]
    pub(crate) show: ShowArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum InventoryAction {
    /// Write the rebuild manifest (perimeter.manifest/1): packages with
    /// versions and origins, changed conffiles, unowned files and units with
    /// their sha256, mode and owner.
    Export(ExportArgs),
    /// Compare two manifests (two hosts, or one host at two times). Exit 1
    /// when they differ.
    Diff(ManifestDiffArgs),
}

/// What to inventory and how.
#[derive(Debug, Clone, Args)]
pub(crate) struct SourceArgs {
    /// The system to inventory: / for this host, or the root of a mounted
    /// image. Running processes are only looked at for /.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub(crate) root: PathBuf,

    /// Also check every package file against the md5sums its package shipped
    /// (reads every file; conffiles are always checked).
    #[arg(long)]
    pub(crate) verify: bool,

    /// Checksum workers (default: one per core).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) workers: Option<u16>,

    /// The MD5 implementation for the checksums: auto (measure which is
    /// fastest on this CPU), avx512, avx2 or portable. For benchmarks and
    /// bug reports; a backend this CPU cannot run is an error.
    #[arg(
        long,
        value_name = "BACKEND",
        env = "PERIMETER_MD5",
        hide = true,
        default_value = "auto"
    )]
    pub(crate) md5_backend: String,

    /// Do not look up each package's origin in apt's package lists.
    #[arg(long)]
    pub(crate) no_origins: bool,

    /// Do not look at running processes.
    #[arg(long)]
    pub(crate) no_processes: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,

    #[arg(long, value_enum, default_value = "human")]
    pub(crate) format: Format,

    /// List every installed package in the human report.
    #[arg(long)]
    pub(crate) packages: bool,

    /// Exit 1 when a finding is at or above this severity.
    #[arg(long, value_enum, value_name = "SEVERITY")]
    pub(crate) fail_on: Option<SeverityArg>,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,

    /// Write the manifest here (atomically: temporary file, fsync, rename)
    /// instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ManifestDiffArgs {
    /// The earlier (or reference) manifest.
    #[arg(value_name = "A")]
    pub(crate) a: PathBuf,
    /// The later (or compared) manifest.
    #[arg(value_name = "B")]
    pub(crate) b: PathBuf,

    #[arg(long, value_enum, default_value = "human")]
    pub(crate) format: Format,
}
