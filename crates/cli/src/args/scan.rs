//! Flags of the commands that scan from outside: `scan` and `verify`, and
//! the tuning they share.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use perimeter_scan::Shard;

use super::{DbArgs, InventoryFileArgs, SeverityArg};

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

    /// The N most exposure-relevant ports from perimeter's curated list
    /// (65535 or more is every port).
    #[arg(long, value_name = "N", conflicts_with = "ports")]
    pub(crate) top_ports: Option<usize>,

    #[arg(long, value_enum, default_value = "normal")]
    pub(crate) profile: ProfileArg,

    /// Probes per second, a hard ceiling (overrides the profile), counting
    /// retries and identification connections: over any span of T seconds at
    /// most RATE x T + B probes go out, where B, the burst allowed after a
    /// quiet spell, is the profile's (fast 200, normal 20, stealth 1) and
    /// never more than RATE. With `scan --shard`, the ceiling is per shard:
    /// N shards running at once send up to N x RATE together.
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
    /// Every shard of a --shard scan needs the same one.
    #[arg(long)]
    pub(crate) seed: Option<u64>,

    /// A half-open SYN scan from a raw socket instead of connections: no
    /// handshake completes, so the services scanned never see a connection,
    /// and it costs this machine less per port. Needs CAP_NET_RAW (root).
    /// Open ports are still identified over ordinary connections.
    #[arg(long, visible_alias = "sS")]
    pub(crate) syn: bool,

    /// Scan UDP instead of TCP (`-sU` works too): each port is asked what its
    /// protocol answers (DNS, NTP, SNMP, memcached, SSDP, NetBIOS, mDNS; an
    /// empty datagram elsewhere) and is open (a datagram came back), closed
    /// (ICMP port unreachable), filtered (another ICMP unreachable) or
    /// open|filtered (silence). Without -p or --top-ports: the curated UDP
    /// list. No privilege needed.
    #[arg(long, visible_alias = "sU")]
    pub(crate) udp: bool,

    /// With --udp, scan TCP too (connect, or --syn), in the same scan.
    #[arg(long, requires = "udp")]
    pub(crate) tcp: bool,
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

    /// Scan only part K of N of the scan: N runs with the same targets,
    /// excludes, ports and --seed, one per K, cover it exactly once between
    /// them, with no coordination (ZMap's shards). K is 0-based: 0/3, 1/3
    /// and 2/3 are the three parts of a scan in three. Needs an explicit
    /// --seed. --rate and --concurrency are each part's own: N parts running
    /// at once send up to N x RATE together. Each part is stored as a shard,
    /// compared only with earlier runs of the same part and seed;
    /// `perimeter scans merge` combines the N parts into one scan.
    #[arg(long, value_name = "K/N")]
    pub(crate) shard: Option<Shard>,

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

    /// Judge this stored scan instead of scanning from here: a scan made
    /// from another vantage point, such as a scan job that scanner nodes of
    /// that point ran (`scans merge --server URL --job ID` stores it). Needs
    /// --from, the addresses it was scanned from.
    #[arg(long, value_name = "ID", requires = "from")]
    pub(crate) scan: Option<i64>,

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
