//! What an outside-in scan found.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use time::OffsetDateTime;

use crate::finding::Finding;
use crate::host::Protocol;

/// Port states as nmap defines them: for TCP, `Open` (the handshake
/// completed), `Closed` (a RST came back), `Filtered` (no answer after
/// retries, or an ICMP unreachable); for UDP, `Open` (a datagram came back),
/// `Closed` (ICMP port unreachable), `Filtered` (another ICMP unreachable) and
/// `OpenFiltered` (silence after the retries: an open port that ignored the
/// questions, or a firewall that dropped them, cannot be told apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortState {
    Open,
    Closed,
    Filtered,
    OpenFiltered,
}

impl PortState {
    pub fn as_str(self) -> &'static str {
        match self {
            PortState::Open => "open",
            PortState::Closed => "closed",
            PortState::Filtered => "filtered",
            PortState::OpenFiltered => "open|filtered",
        }
    }

    pub fn parse(text: &str) -> Option<PortState> {
        match text {
            "open" => Some(PortState::Open),
            "closed" => Some(PortState::Closed),
            "filtered" => Some(PortState::Filtered),
            "open|filtered" => Some(PortState::OpenFiltered),
            _ => None,
        }
    }
}

impl fmt::Display for PortState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a service let an unauthenticated client in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AuthState {
    /// Not known (the probe does not test it, or could not tell).
    Unknown,
    /// It answered commands without credentials.
    None,
    /// It asked for credentials.
    Required,
}

impl AuthState {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthState::Unknown => "unknown",
            AuthState::None => "none",
            AuthState::Required => "required",
        }
    }

    pub fn parse(text: &str) -> Option<AuthState> {
        match text {
            "unknown" => Some(AuthState::Unknown),
            "none" => Some(AuthState::None),
            "required" => Some(AuthState::Required),
            _ => None,
        }
    }
}

/// A TLS certificate as a server presented it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    pub subject: String,
    pub issuer: String,
    pub not_after: Option<OffsetDateTime>,
    pub subject_alt_names: Vec<String>,
}

/// What answers on an open port, identified by what it said, not by the port
/// number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// nmap-style service name: `ssh`, `http`, `https`, `redis`, `memcached`, ...
    pub name: String,
    pub product: Option<String>,
    pub version: Option<String>,
    /// A short, printable, length-capped excerpt of what the service said.
    pub banner: Option<String>,
    pub tls: Option<TlsInfo>,
    pub auth: AuthState,
    /// Further facts a probe learned (HTTP title, VNC security types, ...).
    pub extra: BTreeMap<String, String>,
}

impl ServiceInfo {
    pub fn named(name: impl Into<String>) -> Self {
        ServiceInfo {
            name: name.into(),
            product: None,
            version: None,
            banner: None,
            tls: None,
            auth: AuthState::Unknown,
            extra: BTreeMap::new(),
        }
    }
}

/// One (address, port) a scan decided on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortResult {
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub state: PortState,
    pub service: Option<ServiceInfo>,
    pub findings: Vec<Finding>,
}

/// A scan as a whole: what was asked, when, and whether it finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanInfo {
    /// Store id; 0 before the scan is stored.
    pub id: i64,
    /// The targets as given (CIDRs, ranges, host names), in order.
    pub targets: Vec<String>,
    /// Host names resolved at the start, with the addresses they gave.
    pub resolved: Vec<(String, Vec<IpAddr>)>,
    pub excluded: Vec<String>,
    /// The ports as given (`22,80,1000-2000`, `top:100`, `all`).
    pub ports: String,
    pub profile: String,
    /// The permutation seed: the same seed over the same targets replays the same
    /// probe order.
    pub seed: u64,
    /// Options not covered above, as `key=value` pairs, for the record.
    pub options: BTreeMap<String, String>,
    pub started: OffsetDateTime,
    pub finished: Option<OffsetDateTime>,
    /// False when the scan was interrupted (Ctrl-C, error) and holds partial results.
    pub complete: bool,
    pub n_probes: u64,
}
