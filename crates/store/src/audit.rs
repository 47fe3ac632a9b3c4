//! What an audit leaves in the history: each listener with the process behind
//! it, the findings and the problems, flattened from a [`HostSnapshot`] into the
//! form it is stored, loaded and diffed in.
//!
//! The snapshot holds much more (every process, per-namespace firewall facts,
//! Redis and sshd facts); the history keeps what a later diff needs and what a
//! reader asks of an old audit: who listened where, and what was wrong.

use std::net::IpAddr;
use std::path::PathBuf;

use perimeter_model::{
    Finding, HostSnapshot, Listener, Netns, Ownership, PackageRef, Problem, Protocol, Scope,
    Severity,
};
use time::OffsetDateTime;

/// One listening socket as an audit recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerRecord {
    pub protocol: Protocol,
    pub address: IpAddr,
    pub port: u16,
    pub scope: Scope,
    pub v6only: Option<bool>,
    pub interface: Option<String>,
    pub inode: u64,
    pub socket_uid: u32,
    pub netns: Netns,
    /// Every pid holding the socket, sorted.
    pub pids: Vec<u32>,
    /// The main owning process ([`HostSnapshot::main_owner`]); `None` when no
    /// owner could be seen.
    pub process: Option<OwnerRecord>,
}

impl ListenerRecord {
    /// Flattens one listener of a snapshot.
    pub fn from_listener(snapshot: &HostSnapshot, listener: &Listener) -> ListenerRecord {
        // `Listener::owners` is documented sorted by pid; sorting again costs
        // nothing and keeps the stored list canonical whoever built the value.
        let mut pids = listener.pids();
        pids.sort_unstable();
        pids.dedup();
        ListenerRecord {
            protocol: listener.protocol,
            address: listener.address,
            port: listener.port,
            scope: listener.scope,
            v6only: listener.v6only,
            interface: listener.interface.clone(),
            inode: listener.inode,
            socket_uid: listener.socket_uid,
            netns: listener.netns.clone(),
            pids,
            process: snapshot.main_owner(listener).map(|process| OwnerRecord {
                name: process.name(),
                uid: process.uid,
                user: process.account.as_ref().map(|account| account.name.clone()),
                exe: process.exe.clone(),
                exe_deleted: process.exe_deleted,
                unit: process.unit.clone(),
                container: process.container.clone(),
                ownership: process.ownership.clone(),
            }),
        }
    }

    /// `tcp 0.0.0.0:6379`, as [`Listener::endpoint`] names it.
    pub fn endpoint(&self) -> String {
        match self.address {
            IpAddr::V4(v4) => format!("{} {}:{}", self.protocol, v4, self.port),
            IpAddr::V6(v6) => format!("{} [{}]:{}", self.protocol, v6, self.port),
        }
    }

    pub fn exe(&self) -> Option<&PathBuf> {
        self.process
            .as_ref()
            .and_then(|process| process.exe.as_ref())
    }

    pub fn package(&self) -> Option<&PackageRef> {
        self.process
            .as_ref()
            .and_then(|process| process.ownership.package())
    }
}

/// The process behind a listener, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRecord {
    /// [`perimeter_model::Process::name`]: the executable's file name, else `comm`.
    pub name: String,
    pub uid: u32,
    /// The account name, when the uid resolved.
    pub user: Option<String>,
    pub exe: Option<PathBuf>,
    pub exe_deleted: bool,
    pub unit: Option<String>,
    pub container: Option<String>,
    pub ownership: Ownership,
}

impl OwnerRecord {
    /// The account name, else the uid in digits.
    pub fn user_name(&self) -> String {
        match &self.user {
            Some(name) => name.clone(),
            None => self.uid.to_string(),
        }
    }
}

/// One audit of one host, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Store id; 0 before the audit is stored.
    pub id: i64,
    /// The name the audit is filed under; [`crate::Store::previous_audit`] looks
    /// it up.
    pub host: String,
    pub taken_at: OffsetDateTime,
    /// What the host called itself.
    pub hostname: String,
    pub listeners: Vec<ListenerRecord>,
    pub findings: Vec<Finding>,
    pub problems: Vec<Problem>,
}

impl AuditRecord {
    /// The record an audit would store, without storing it (id 0): lets the CLI
    /// diff a fresh snapshot against history before deciding to record it.
    pub fn from_snapshot(
        host: &str,
        taken_at: OffsetDateTime,
        snapshot: &HostSnapshot,
        findings: &[Finding],
    ) -> AuditRecord {
        AuditRecord {
            id: 0,
            host: host.to_owned(),
            taken_at,
            hostname: snapshot.hostname.clone(),
            listeners: snapshot
                .listeners
                .iter()
                .map(|listener| ListenerRecord::from_listener(snapshot, listener))
                .collect(),
            findings: findings.to_vec(),
            problems: snapshot.problems.clone(),
        }
    }

    pub fn worst_severity(&self) -> Option<Severity> {
        self.findings.iter().map(|finding| finding.severity).max()
    }
}

/// An audit in a listing: enough to pick one, without loading its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSummary {
    pub id: i64,
    pub host: String,
    pub taken_at: OffsetDateTime,
    pub hostname: String,
    pub n_listeners: u64,
    pub n_findings: u64,
    pub worst_severity: Option<Severity>,
}
