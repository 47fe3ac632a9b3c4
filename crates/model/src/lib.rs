//! The domain types every other perimeter crate speaks: what listens on a host
//! ([`Listener`], [`Process`], [`Ownership`]), what is wrong with it ([`Finding`],
//! [`Severity`]), what could not be seen ([`Problem`]), what a scan found
//! ([`PortResult`], [`ServiceInfo`]), the package inventory's facts ([`Area`],
//! [`UnitKind`], [`FileChange`]) and what the monitor tells people
//! ([`Alert`]).
//!
//! Architecture invariant: this crate does no I/O, no async and no serialisation.
//! Output schemas live in `perimeter-report`, storage rows in `perimeter-store`, so
//! a change to a wire format never ripples into the domain.

pub mod addrset;
mod alert;
mod container;
mod environment;
mod finding;
mod host;
mod inventory;
mod scan;
mod scope;
mod services;

pub use alert::{
    Alert, AlertChange, ChangeKind, ChangeKindParseError, ChangeState, IdempotencyKey,
    IdempotencyKeyError, highest_severity,
};
pub use container::{Binding, Container, ContainerVia, Pod, conmon_container_id, proxy_target};
pub use environment::{EnvKind, Environment, PublishedPath, Reach};
pub use finding::{Finding, Problem, Severity, SeverityParseError};
pub use host::{
    Account, FirewallVerdict, HostSnapshot, Interface, Listener, Netns, NetnsFacts, Ownership,
    PackageRef, Process, Protocol, PublishedPort, SocketOwner,
};
pub use inventory::{Area, FileChange, UnitKind};
pub use scan::{AuthState, PortResult, PortState, ScanInfo, ServiceInfo, TlsInfo};
pub use scope::Scope;
pub use services::{RedisAuth, RedisFacts, SshdEvaluation, SshdFacts};
