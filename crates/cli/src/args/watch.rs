//! Flags of `perimeter watch`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// How often listening sockets are compared with the previous look
    /// (execs are reported as they happen).
    #[arg(long, value_name = "DURATION", default_value = "2s")]
    pub(crate) interval: String,

    /// Stop after this long (e.g. 30s, 10m). Default: until Ctrl-C.
    #[arg(long, value_name = "DURATION")]
    pub(crate) duration: Option<String>,

    #[arg(long, value_enum, default_value = "human")]
    pub(crate) format: WatchFormat,

    /// Print only execs that are unpackaged, run from a world-writable
    /// directory, deleted or from memory (memfd), and listeners beyond
    /// loopback.
    #[arg(long)]
    pub(crate) only_suspicious: bool,

    /// The approvals file new listeners are checked against. Default:
    /// ./perimeter-approvals.toml if it exists, else
    /// /etc/perimeter/approvals.toml.
    #[arg(long, value_name = "FILE", env = "PERIMETER_APPROVALS")]
    pub(crate) approvals: Option<PathBuf>,

    /// Watch the listeners of every network namespace on the host, not only
    /// the one perimeter runs in (each interval then walks /proc).
    #[arg(long)]
    pub(crate) all_netns: bool,

    /// Where execs come from: the kernel's process events connector, falling
    /// back to polling /proc (auto); the connector or an error (connector);
    /// polling /proc, which misses short-lived processes (poll).
    #[arg(long, value_enum, default_value = "auto")]
    pub(crate) exec_source: ExecSourceArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum WatchFormat {
    /// One line per event, timestamped (UTC).
    Human,
    /// One perimeter.watch-event/1 JSON object per line.
    Jsonl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ExecSourceArg {
    Auto,
    Connector,
    Poll,
}
