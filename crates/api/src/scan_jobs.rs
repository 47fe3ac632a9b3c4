//! The documents of scan jobs and their leases (issue 11): people submit a
//! scan cut in shards (`POST /scan-jobs`), scanner nodes lease one shard at a
//! time (`POST /leases`), renew the lease while they scan, and send the
//! shard's run under it (`POST /leases/finish`); anyone who may read fetches
//! the runs of a job to merge them (`GET /scan-jobs/{id}/runs`).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A scan job to create (`POST /scan-jobs`, approvers and administrators).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewScanJobDoc {
    pub schema: String,
    /// The options `perimeter scan` takes, targets included, without
    /// `--shard` and `--seed` (the job's own) or anything about local
    /// output (`--db`, `--xml-out`).
    pub scan_args: Vec<String>,
    /// N, the parts the scan is cut in. A server on SQLite runs every job on
    /// its own scanner, as one part, whatever is asked.
    pub shards: u32,
    /// The permutation's seed; the server picks one when absent.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Only nodes of this vantage point may scan it (`office`, `internet`).
    #[serde(default)]
    pub vantage: Option<String>,
    /// How long a lease holds without renewal; the server's default when
    /// absent.
    #[serde(default)]
    pub lease_seconds: Option<u32>,
}

/// A stored job and how far it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanJobDoc {
    pub id: i64,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub scan_args: Vec<String>,
    pub seed: u64,
    pub shards: u32,
    pub vantage: Option<String>,
    pub lease_seconds: u32,
    /// Parts whose run is stored.
    pub done: u32,
    /// Parts leased now.
    pub leased: u32,
    pub complete: bool,
    /// Who scans it: `scanner nodes`, or `the server's own scanner` (a
    /// server on SQLite).
    pub runs_on: String,
    /// Each part (in `GET /scan-jobs/{id}` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<ShardDoc>,
}

/// One part of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardDoc {
    pub index: u32,
    /// `pending`, `leased` or `done`.
    pub state: String,
    pub node: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub leased_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub lease_expires: Option<OffsetDateTime>,
    pub attempts: u32,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
}

/// `GET /scan-jobs`: the newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanJobList {
    pub schema: String,
    pub jobs: Vec<ScanJobDoc>,
}

/// A node asking for work (`POST /leases`, scanner tokens).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    pub schema: String,
    /// The node's name, as the job's parts record it.
    pub node: String,
    /// The node's vantage point: it takes jobs that name it, and jobs that
    /// name none.
    #[serde(default)]
    pub vantage: Option<String>,
}

/// A part leased to a node: scan part `index` of `job.shards` with
/// `job.seed`, renew before `expires`, send the run under `lease`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseDoc {
    pub schema: String,
    pub lease: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    pub index: u32,
    /// 1 for a part's first lease; more when an earlier one expired.
    pub attempt: u32,
    pub job: ScanJobDoc,
}

/// A lease named (`POST /leases/renew`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRef {
    pub schema: String,
    pub lease: String,
}

/// A part's run, sent under its lease (`POST /leases/finish`). `run` is a
/// `perimeter.scan-run/1` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinishRequest {
    pub schema: String,
    pub lease: String,
    pub run: serde_json::Value,
}

/// A lease that holds (renewed, or its run stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseStatus {
    pub schema: String,
    pub job_id: i64,
    pub index: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
}

/// `GET /scan-jobs/{id}/runs`: the runs of a job's done parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardRunList {
    pub schema: String,
    pub job: ScanJobDoc,
    pub runs: Vec<ShardRunDoc>,
}

/// One done part's run (a `perimeter.scan-run/1` document).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardRunDoc {
    pub index: u32,
    pub node: Option<String>,
    pub run: serde_json::Value,
}
