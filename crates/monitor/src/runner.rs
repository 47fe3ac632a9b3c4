//! What the monitor asks of whoever runs its jobs: a scan, this host's
//! audit, the environments verified from here. The monitor owns when, what
//! changed and who is told; the runner (the CLI's pipeline, which the
//! one-shot commands use too) owns how. A scripted runner tests the
//! monitor's logic without a network.

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use perimeter_model::{Finding, HostSnapshot, Listener, PortResult, ScanInfo};
use perimeter_scan::{PortSet, Profile, TargetSet};
use tokio_util::sync::CancellationToken;

/// A scan to run, targets already expanded from environment names.
#[derive(Debug, Clone)]
pub struct ScanRequest {
    pub job: String,
    pub targets: Vec<String>,
    pub excludes: Vec<String>,
    pub ports: PortSet,
    pub profile: Profile,
    pub syn: bool,
    pub rate: Option<f64>,
    pub spread: Option<Duration>,
}

/// A scan that ran (to the end, or until cancelled).
#[derive(Debug, Clone)]
pub struct ScanRun {
    /// Stored with its results; `info.id` is its scan id.
    pub info: ScanInfo,
    /// The open ports (and what answered on them).
    pub results: Vec<PortResult>,
    /// Every address the scan covered, and every port.
    pub targets: TargetSet,
    pub ports: PortSet,
    /// The addresses this machine scans from (its vantage point), for
    /// environments that allow every port to some sources.
    pub sources: Vec<IpAddr>,
}

/// This host's audit.
#[derive(Debug, Clone)]
pub struct AuditRun {
    /// Its id in the history, when it was recorded.
    pub audit_id: Option<i64>,
    pub snapshot: HostSnapshot,
    pub findings: Vec<Finding>,
    /// For each listener beyond loopback, whether an approval covers it.
    pub unapproved: Vec<Listener>,
}

/// The verify of the environments from here.
#[derive(Debug, Clone)]
pub struct VerifyRun {
    pub scan: ScanRun,
    /// The env.* findings the verify made.
    pub findings: Vec<Finding>,
}

/// The fleet as the server's agents reported it.
#[derive(Debug, Clone, Default)]
pub struct FleetRun {
    pub hosts: Vec<FleetHost>,
}

/// One accepted agent's host, judged by the server's approvals.
#[derive(Debug, Clone)]
pub struct FleetHost {
    pub agent_id: String,
    pub hostname: String,
    pub environment: Option<String>,
    pub last_seen: Option<time::OffsetDateTime>,
    /// Exposed listeners no approval covers (or whose approval expired).
    pub unapproved: Vec<FleetListener>,
    pub findings: Vec<perimeter_model::Finding>,
    /// The suspicious execs its agent told of in the run's window.
    pub execs: Vec<FleetExec>,
}

/// A suspicious process start an agent told of.
#[derive(Debug, Clone)]
pub struct FleetExec {
    pub at: time::OffsetDateTime,
    /// `pid 4242 /tmp/xmrig as www-data`.
    pub summary: String,
    /// Why it is suspicious: `unpackaged`, `world-writable`, `deleted`,
    /// `memfd`.
    pub flags: Vec<String>,
}

/// A listener of a fleet host.
#[derive(Debug, Clone)]
pub struct FleetListener {
    pub netns: String,
    /// `tcp 0.0.0.0:6379`.
    pub endpoint: String,
    /// `/usr/bin/redis-server (pid 42, redis)`, or that none holds it.
    pub owner: String,
    /// `unapproved` or `expired`.
    pub approval: String,
}

/// Runs the monitor's jobs. Each method is called for one run at a time; a
/// scan stops early (and is stored incomplete) when `cancel` fires.
pub trait JobRunner: Send + Sync {
    fn scan(
        &self,
        request: ScanRequest,
        cancel: CancellationToken,
    ) -> impl Future<Output = anyhow::Result<ScanRun>> + Send;

    fn audit(
        &self,
        approvals: Option<std::path::PathBuf>,
    ) -> impl Future<Output = anyhow::Result<AuditRun>> + Send;

    fn verify(
        &self,
        job: &crate::config::VerifyJob,
        cancel: CancellationToken,
    ) -> impl Future<Output = anyhow::Result<VerifyRun>> + Send;

    /// The fleet's hosts; only a monitor inside `perimeter server` has them.
    /// Each host's suspicious execs are those the server received within
    /// `events` (consecutive runs get adjoining windows, so each exec is told
    /// once).
    fn fleet(
        &self,
        events: std::ops::Range<time::OffsetDateTime>,
    ) -> impl Future<Output = anyhow::Result<FleetRun>> + Send {
        let _ = events;
        async {
            anyhow::bail!(
                "a fleet job runs only inside `perimeter server --monitor`, which holds the agents' reports"
            )
        }
    }
}
