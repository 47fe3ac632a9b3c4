//! `perimeter scan`: outside-in TCP connect scanning of address ranges, fast or
//! slow and quiet, with service identification of open ports.
//!
//! The pieces, in the order a scan uses them: [`targets`] parses and resolves
//! the scope into a [`TargetSet`]; [`ports`] parses the port list; a seeded
//! [`Permutation`] orders the (address, port) pairs, and a [`Shard`] takes one
//! of N disjoint parts of it; [`rate`] holds every
//! connection attempt under a ceiling; [`transport`] puts the network behind a
//! trait (and [`syn`] sends SYNs from raw sockets instead of connecting);
//! [`options`] turns a profile and the caller's overrides into the settings a
//! scan runs with; [`engine`] runs the scan and streams [`ScanEvent`]s;
//! [`identify`] drives `perimeter-probe`'s protocol probes on open ports.
//!
//! Architecture invariant: packets go only to addresses of the [`TargetSet`], and
//! never to an excluded one (the set subtracts exclusions, and the engine checks
//! again before each connection). Every byte read goes to a probe with a cap and
//! a timeout.

pub mod engine;
pub mod identify;
pub mod options;
pub mod permutation;
pub mod ports;
pub mod rate;
mod rtt;
pub mod shard;
pub mod syn;
pub mod targets;
mod top_ports;
pub mod transport;
pub mod udp;

pub use engine::{
    ScanError, ScanEvent, ScanOutcome, ScanPlan, StateCounts, fd_budget, raise_fd_limit, run,
    run_syn,
};
pub use identify::{IdentifySettings, ProbeCatalog, SharedCatalog, no_probes, standard_probes};
pub use options::{
    Profile, ProfileDefaults, ProfileParseError, ScanOptions, Settings, SpreadSchedule,
};
pub use permutation::Permutation;
pub use ports::{PortError, PortSet};
pub use rate::{RateLimit, RateLimiter};
pub use shard::{Shard, ShardError, ShardWalk};
pub use syn::{PacketIo, SynError, SynSockets};
pub use targets::{
    AddressRange, Resolver, StaticResolver, SystemResolver, TargetError, TargetRequest, TargetSet,
    TargetSpec, Targets, parse_target, parse_target_list, read_target_file, resolve_targets,
};
pub use transport::{Connect, FilterCause, TcpTransport, Transport};
pub use udp::run_udp;
