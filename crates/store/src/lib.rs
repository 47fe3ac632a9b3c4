//! perimeter's history: every scan (results per address and port) and every
//! audit (listeners and findings per host), kept so that the next run can say
//! what changed since the last one.
//!
//! Storage sits behind the [`Store`] trait; [`SqliteStore`] is the embedded
//! default, and a server database can implement the same trait later. The diffs
//! ([`diff_scans`], [`diff_audits`]) are pure functions over loaded records, so
//! they do not care which store the records came from.
//!
//! Architecture invariants:
//! - stored data is a compatibility surface: the schema is versioned (SQLite's
//!   `user_version`), migrations only move forward, and a database newer than
//!   this binary is refused, never misread;
//! - every write is one transaction, so a process killed mid-scan leaves earlier
//!   scans intact and the interrupted one visibly incomplete (no finish time);
//! - the store never decides what is a change; the diff functions do, with the
//!   severity policy written next to them.

mod audit;
mod codec;
mod coverage;
mod diff_audits;
mod diff_scans;
mod error;
pub mod fleet;
mod monitor;
mod path;
mod run_doc;
mod shards;
mod spans;
mod sqlite;
mod target_key;
mod writer;

use perimeter_model::{Finding, HostSnapshot, PortResult, ScanInfo};
use time::OffsetDateTime;

pub use audit::{AuditRecord, AuditSummary, ListenerRecord, OwnerRecord};
pub use coverage::Coverage;
pub use diff_audits::{AuditChange, AuditChangeKind, diff_audits};
pub use diff_scans::{
    Change, ChangeKind, PortSummary, diff_scan_runs, diff_scans, diff_scans_within,
};
pub use error::StoreError;
pub use monitor::{
    AcknowledgementRow, AlertRow, ChannelTally, ConditionRow, JobKind, MonitorRun, MonitorStore,
    NewAlert, NewDelivery, PendingDelivery, RunStatus,
};
pub use path::{DB_FILE_NAME, default_db_path};
pub use run_doc::{RUN_SCHEMA, RunLimits, decode_run, encode_run};
pub use shards::{
    MERGED_FROM_OPTION, MERGED_SHARDS_OPTION, MergeError, MergePlan, ScanGroup, Selection,
    ShardPart, ShardRun, merge_results, merged_info, plan_merge,
};
pub use sqlite::{SCHEMA_VERSION, SqliteStore};
pub use target_key::{SHARD_OPTION, TargetKey};

/// Where a stored scan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanStatus {
    /// Its process is still writing it.
    Running,
    /// It finished and covered everything it set out to.
    Complete,
    /// It stopped early (Ctrl-C, an error) and said so: its results are partial.
    Incomplete,
    /// Its process died without saying (killed, a full disk, a power cut):
    /// its results are partial.
    Interrupted,
}

impl ScanStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ScanStatus::Running => "running",
            ScanStatus::Complete => "complete",
            ScanStatus::Incomplete => "incomplete",
            ScanStatus::Interrupted => "interrupted",
        }
    }
}

/// A scan in a listing, with counts kept as results were recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanSummary {
    pub info: ScanInfo,
    /// Derived when the scan is read: an unfinished scan whose writer is gone
    /// is `Interrupted`, whichever command looks.
    pub status: ScanStatus,
    pub target_key: TargetKey,
    /// Results recorded, in any state.
    pub n_results: u64,
    /// Results recorded in state open.
    pub n_open: u64,
}

/// An audit just stored, and what changed since the host's previous one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedAudit {
    pub id: i64,
    /// `None` for the host's first audit.
    pub since: Option<AuditSince>,
}

/// What changed on a host since one of its audits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSince {
    /// The earlier audit.
    pub audit_id: i64,
    pub taken_at: OffsetDateTime,
    /// As [`diff_audits`] lists them.
    pub changes: Vec<AuditChange>,
}

/// The history of scans and audits.
///
/// Synchronous on purpose: SQLite is a blocking library, and the CLI calls the
/// store either outside async code or through `spawn_blocking`.
///
/// Listings are newest first, by the order records were stored rather than by
/// their timestamps, so a clock that jumped backwards does not reorder history.
pub trait Store {
    /// Records the start of a scan and returns its id. The scan stays incomplete,
    /// with no finish time, until [`Store::finish_scan`].
    fn begin_scan(&mut self, info: &ScanInfo) -> Result<i64, StoreError>;

    /// Adds a batch of results to a running scan, in one transaction: the batch
    /// is stored entirely or not at all. Call it as results come in; callers may
    /// leave out closed and filtered ports, which diffs treat as "not open".
    fn record_results(&mut self, scan_id: i64, results: &[PortResult]) -> Result<(), StoreError>;

    /// Marks a scan finished; `complete` is false for an interrupted scan whose
    /// results are partial. A finished scan takes no more results.
    fn finish_scan(
        &mut self,
        scan_id: i64,
        finished: OffsetDateTime,
        complete: bool,
        n_probes: u64,
    ) -> Result<(), StoreError>;

    /// The latest `limit` scans, newest first.
    fn list_scans(&self, limit: usize) -> Result<Vec<ScanSummary>, StoreError>;

    /// A scan and its results, in the order they were recorded.
    fn load_scan(&self, scan_id: i64) -> Result<(ScanInfo, Vec<PortResult>), StoreError>;

    /// The newest complete scan of any targets: the default later side of a
    /// diff. Running, incomplete and interrupted scans never are.
    fn latest_complete_scan(&self) -> Result<Option<ScanSummary>, StoreError>;

    /// The latest `n` complete scans with this target key, newest first: the
    /// scans a new one is diffed against. Incomplete scans are left out, since
    /// the ports they never reached would read as closed.
    fn previous_scans_of(&self, key: &TargetKey, n: usize) -> Result<Vec<ScanSummary>, StoreError>;

    /// Stores one audit of `host` and returns its id.
    fn record_audit(
        &mut self,
        host: &str,
        taken_at: OffsetDateTime,
        snapshot: &HostSnapshot,
        findings: &[Finding],
    ) -> Result<i64, StoreError>;

    /// Stores one audit of `host`, as [`Store::record_audit`] does, and says
    /// what changed since the host's previous audit: exactly what
    /// [`diff_audits`] of that audit and this one says. This default loads the
    /// previous audit whole; a store that keeps what changed between audits
    /// (SQLite's spans) answers from the changes alone.
    fn record_audit_since(
        &mut self,
        host: &str,
        taken_at: OffsetDateTime,
        snapshot: &HostSnapshot,
        findings: &[Finding],
    ) -> Result<RecordedAudit, StoreError> {
        let previous = self.previous_audit(host)?;
        let id = self.record_audit(host, taken_at, snapshot, findings)?;
        let since = previous.map(|previous| {
            let current = AuditRecord::from_snapshot(host, taken_at, snapshot, findings);
            AuditSince {
                audit_id: previous.id,
                taken_at: previous.taken_at,
                changes: diff_audits(&previous, &current),
            }
        });
        Ok(RecordedAudit { id, since })
    }

    /// The latest `limit` audits of any host, newest first.
    fn list_audits(&self, limit: usize) -> Result<Vec<AuditSummary>, StoreError>;

    /// The latest `n` audits of `host`, newest first.
    fn audits_of(&self, host: &str, n: usize) -> Result<Vec<AuditSummary>, StoreError>;

    fn load_audit(&self, audit_id: i64) -> Result<AuditRecord, StoreError>;

    /// The latest stored audit of `host`, if any. Call it before recording the
    /// new audit (or use [`Store::audits_of`] with `n = 2`).
    fn previous_audit(&self, host: &str) -> Result<Option<AuditRecord>, StoreError>;
}
