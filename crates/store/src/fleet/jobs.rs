//! Scan jobs split into shards that scanner nodes lease (issue 11).
//!
//! A job is one scan asked for once: the options `perimeter scan` takes, a
//! seed, and a shard count N. Its N parts are rows a node leases one at a
//! time ([`super::FleetStore::lease_shard`]): the lease carries a fresh random
//! token and an expiry; the node renews it while it scans and sends its run
//! under it ([`super::FleetStore::finish_shard`]). A lease past its expiry
//! may be taken by another node, which gets a new token, so the first node's
//! late run is refused ([`LeaseCheck::Lost`]) and each part is stored once:
//! the parts walk disjoint positions of one permutation, so the job's runs
//! together hold each (address, port) exactly once.
//!
//! On PostgreSQL, nodes lease with `SELECT ... FOR UPDATE SKIP LOCKED`: two
//! nodes asking at once take different parts without waiting on each other.
//! On SQLite every write takes the file's lock, so leases are handed out one
//! after the other; the server runs SQLite jobs on its own scanner.

use time::OffsetDateTime;

/// A job to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewScanJob {
    pub created_by: String,
    pub created_at: OffsetDateTime,
    /// The scan's options as `perimeter scan` takes them, targets included,
    /// without `--shard` and `--seed` (the job's own).
    pub scan_args: Vec<String>,
    pub seed: u64,
    /// N: the parts the scan is cut in (at least 1).
    pub shards: u32,
    /// The only vantage point whose nodes may scan it; `None`: any node
    /// that names no vantage point.
    pub vantage: Option<String>,
    /// How long a lease holds without being renewed.
    pub lease_seconds: u32,
}

/// A stored job, with how far its parts are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanJobRow {
    pub id: i64,
    pub created_by: String,
    pub created_at: OffsetDateTime,
    pub scan_args: Vec<String>,
    pub seed: u64,
    pub shards: u32,
    pub vantage: Option<String>,
    pub lease_seconds: u32,
    /// Parts whose run is stored.
    pub done: u32,
    /// Parts leased now (their lease may have expired and not yet been
    /// taken again).
    pub leased: u32,
}

impl ScanJobRow {
    pub fn is_complete(&self) -> bool {
        self.done == self.shards
    }
}

/// Where a part of a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardState {
    Pending,
    Leased,
    Done,
}

impl ShardState {
    pub fn as_str(self) -> &'static str {
        match self {
            ShardState::Pending => "pending",
            ShardState::Leased => "leased",
            ShardState::Done => "done",
        }
    }

    pub fn parse(text: &str) -> Option<ShardState> {
        match text {
            "pending" => Some(ShardState::Pending),
            "leased" => Some(ShardState::Leased),
            "done" => Some(ShardState::Done),
            _ => None,
        }
    }
}

/// One part of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRow {
    pub job_id: i64,
    /// K, from 0.
    pub index: u32,
    pub state: ShardState,
    /// The node that holds (or last held) it.
    pub node: Option<String>,
    pub leased_at: Option<OffsetDateTime>,
    pub lease_expires: Option<OffsetDateTime>,
    /// How many times it was leased.
    pub attempts: u32,
    pub finished_at: Option<OffsetDateTime>,
}

/// A part leased to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job: ScanJobRow,
    pub index: u32,
    pub token: String,
    pub expires: OffsetDateTime,
    /// 1 for the first lease of this part, more when an earlier lease
    /// expired.
    pub attempt: u32,
}

/// Whether a lease still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseCheck {
    /// It does, until this time (renewed) or it did and the run is stored.
    Held {
        job_id: i64,
        index: u32,
        expires: OffsetDateTime,
    },
    /// It does not, and why (expired and leased again, the part already
    /// done, or no such lease).
    Lost(String),
}
