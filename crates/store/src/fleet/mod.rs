//! The fleet's memory, for `perimeter server`: enrolled agents (each known by
//! the public key it generated, never by hostname or machine id), the host
//! states their reports carry, approvals with a scope (one host, one
//! environment, the whole fleet), people and their API tokens, and an
//! append-only trail of every approval, revocation, acceptance and
//! acknowledgement.
//!
//! Two backends implement [`FleetStore`] with the same behaviour, proved by one
//! test suite run against both (`tests/fleet.rs`): [`SqliteFleet`], embedded,
//! the default (a fresh machine needs nothing else), and [`PostgresFleet`] for
//! fleets. Each backend has its own migration history; a database whose schema
//! is newer than this binary is refused, never misread.
//!
//! The store keeps what it is given and checks the report chain; it never
//! parses a host state (it is the API crate's JSON document, stored as text,
//! compressed on SQLite) and never decides what is approved (the server does,
//! with `checks`).
//!
//! Host states are the one thing that grows with time and is not an audit
//! trail: [`FleetStore::prune_states`] removes the states that stopped being
//! their host's before a cutoff, in small batches, always keeping each host's
//! latest. Events and the trail are never removed.
//!
//! Synchronous, like [`crate::Store`]: the server calls it through
//! `spawn_blocking`, on a handle of its own where the backend has a pool of
//! connections ([`FleetStore::concurrent_handle`]), else one call at a time.
//!
//! Timestamps are kept to the nanosecond and read back in UTC (the same
//! instant, which is what `OffsetDateTime` compares), between 1677-09-21 and
//! 2262-04-11 (signed 64-bit unix nanoseconds in both backends); a time
//! outside that range, or a sequence number above `i64::MAX`, is refused with
//! [`FleetError::Backend`] and nothing of the change is written.

use time::OffsetDateTime;

mod codec;
mod jobs;
mod packed;
mod postgres;
mod sqlite;

pub use self::jobs::{Lease, LeaseCheck, NewScanJob, ScanJobRow, ShardRow, ShardState};
pub use self::postgres::PostgresFleet;
pub use self::sqlite::SqliteFleet;

/// What a fleet store could not do.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The database could not be reached or answered with an error. `target`
    /// names the database without any password.
    #[error("{backend} database {target}: could not {action}: {message}")]
    Backend {
        backend: &'static str,
        target: String,
        action: String,
        message: String,
    },
    #[error(
        "{backend} database {target} has fleet schema version {found}, this perimeter knows up to {known}: upgrade perimeter"
    )]
    TooNew {
        backend: &'static str,
        target: String,
        found: i64,
        known: i64,
    },
    /// A unique key is taken (a user name, an agent's key).
    #[error("{what} already exists")]
    Exists { what: String },
    #[error("no {what}")]
    NotFound { what: String },
    /// A stored value that does not decode (a status word this binary does not
    /// know): the database was written by something else.
    #[error("{backend} database {target}: {detail}")]
    Corrupt {
        backend: &'static str,
        target: String,
        detail: String,
    },
}

/// Where an agent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentStatus {
    /// Enrolled, waiting for an administrator to accept it: its reports are
    /// refused.
    Pending,
    Accepted,
    /// Its key no longer works, for good.
    Revoked,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Pending => "pending",
            AgentStatus::Accepted => "accepted",
            AgentStatus::Revoked => "revoked",
        }
    }

    pub fn parse(text: &str) -> Option<AgentStatus> {
        match text {
            "pending" => Some(AgentStatus::Pending),
            "accepted" => Some(AgentStatus::Accepted),
            "revoked" => Some(AgentStatus::Revoked),
            _ => None,
        }
    }
}

/// An agent asking to enrol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAgent {
    /// Derived from the public key by the server (`ag_` and hex); unique.
    pub id: String,
    /// The ed25519 public key, 32 bytes.
    pub public_key: Vec<u8>,
    /// What the host called itself at enrolment: a label, never an identity.
    pub hostname: String,
    pub status: AgentStatus,
    pub enrolled_at: OffsetDateTime,
}

/// An enrolled agent: one host of the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRow {
    pub id: String,
    pub public_key: Vec<u8>,
    /// The hostname of its latest report (or of its enrolment).
    pub hostname: String,
    pub status: AgentStatus,
    pub enrolled_at: OffsetDateTime,
    /// The environment the host belongs to, as an administrator set it.
    pub environment: Option<String>,
    /// The sequence number of its last stored report (0: none yet).
    pub last_seq: u64,
    /// The digest of its last stored report's body (empty: none yet).
    pub last_digest: String,
    pub last_seen: Option<OffsetDateTime>,
}

/// A report an agent sent, checked (signature, clock, size) by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReport {
    pub agent_id: String,
    /// The agent's sequence number: its previous report's plus one.
    pub seq: u64,
    /// SHA-256 of the signed body, hex: a resend of the same report has the same
    /// digest; another report under the same number does not.
    pub digest: String,
    pub hostname: String,
    /// When the agent took it (its clock) and when the server received it.
    pub taken_at: OffsetDateTime,
    pub received_at: OffsetDateTime,
    /// The host's complete state after this report, as the API's JSON document,
    /// when it differs from the previous stored state; `None` when nothing
    /// changed (only the agent's sequence and last-seen move).
    pub state: Option<String>,
    /// Events the report carried (exec events, queue overflow notes), as the
    /// API's JSON documents, each stored once.
    pub events: Vec<String>,
}

/// What became of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportOutcome {
    /// Stored: the agent's sequence is now this report's.
    Stored,
    /// This very report was stored before (same number, same digest): nothing
    /// changed; the agent may drop it from its queue.
    Duplicate,
    /// The number is not the next one: the agent must resend from `expected`.
    OutOfOrder { expected: u64 },
    /// Another report was already stored under this number: two hosts use the
    /// same key (a cloned machine). Refused; the agent must enrol anew.
    Forked,
    /// The agent is not accepted (pending or revoked) or unknown.
    NotAccepted { status: Option<AgentStatus> },
}

/// What a state builder returns to give up on a report: the store writes
/// nothing of it and hands this back. The builder keeps its own reason (the
/// server's answer to the agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abandon;

/// Makes a report's new state from the agent's latest stored one (`None`
/// when it has none): `Ok(Some(state))` stores it, `Ok(None)` means the state
/// did not change.
pub type StateBuilder<'a> = dyn FnMut(Option<StateRow>) -> Result<Option<String>, Abandon> + 'a;

/// A stored host state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRow {
    pub agent_id: String,
    /// The report that brought this state.
    pub seq: u64,
    pub taken_at: OffsetDateTime,
    pub received_at: OffsetDateTime,
    pub state: String,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub id: i64,
    pub agent_id: String,
    pub seq: u64,
    pub received_at: OffsetDateTime,
    pub event: String,
}

/// Which hosts an approval covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ApprovalScope {
    Fleet,
    Environment(String),
    /// One agent's host.
    Host(String),
}

/// An approval as given: the approvals file's keys, plus a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFleetApproval {
    pub scope: ApprovalScope,
    /// The approvals file's keys, as its TOML spells them (netns, protocol,
    /// address or scope, port, exe, package, user, unowned): the server renders
    /// and parses them with `checks::approvals`, the store keeps them as text.
    pub selector: String,
    pub approved_by: String,
    pub approved_at: OffsetDateTime,
    pub reason: String,
    pub expires: Option<OffsetDateTime>,
}

/// A stored approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetApproval {
    pub id: i64,
    pub scope: ApprovalScope,
    pub selector: String,
    pub approved_by: String,
    pub approved_at: OffsetDateTime,
    pub reason: String,
    pub expires: Option<OffsetDateTime>,
    /// Set once, when revoked: who, when, why.
    pub revoked: Option<Revocation>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub by: String,
    pub at: OffsetDateTime,
    pub reason: String,
}

/// What a person may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Approver,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "approver" => Some(Role::Approver),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub name: String,
    pub role: Role,
    /// The argon2 PHC string.
    pub password_hash: String,
    pub created_at: OffsetDateTime,
    pub disabled: bool,
}

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenScope {
    /// Everything its user's role allows.
    Full,
    /// Only what a scanner node does: lease parts of scan jobs and send
    /// their runs. Nothing else, whatever its user's role.
    Scanner,
}

impl TokenScope {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::Full => "full",
            TokenScope::Scanner => "scanner",
        }
    }

    pub fn parse(text: &str) -> Option<TokenScope> {
        match text {
            "full" => Some(TokenScope::Full),
            "scanner" => Some(TokenScope::Scanner),
            _ => None,
        }
    }
}

/// An API token: only its hash is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: i64,
    pub user: String,
    /// The user's role (joined), so one lookup authenticates.
    pub role: Role,
    pub label: String,
    pub created_at: OffsetDateTime,
    pub expires: Option<OffsetDateTime>,
    pub revoked: bool,
    pub scope: TokenScope,
}

/// One entry of the append-only trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrailEntry {
    pub id: i64,
    pub at: OffsetDateTime,
    /// Who did it: a user name, `agent:<id>`, or `server`.
    pub actor: String,
    /// What was done: `approval.add`, `approval.revoke`, `agent.enrol`,
    /// `agent.accept`, `agent.revoke`, `user.add`, `token.add`,
    /// `token.revoke`, `alert.ack`, ...
    pub action: String,
    /// What it was done to (an approval id, an agent id, a user name).
    pub subject: String,
    pub reason: String,
}

/// A trail entry to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTrailEntry {
    pub at: OffsetDateTime,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub reason: String,
}

/// The fleet's memory.
///
/// Every method that changes something and says who did it writes its trail
/// entry in the same transaction, so the trail never misses a change and never
/// records one that did not happen. Listings are in the order rows were stored.
pub trait FleetStore: Send {
    /// "sqlite" or "postgresql".
    fn backend(&self) -> &'static str;

    /// Another handle on the same database whose calls run beside this
    /// one's, when the backend has a pool of connections (PostgreSQL); `None`
    /// when every call must take its turn on this one (SQLite's single
    /// connection: its writers queue on the file's lock anyway).
    fn concurrent_handle(&self) -> Option<Box<dyn FleetStore>>;

    /// Enrols an agent, with an `agent.enrol` trail entry by `agent:<id>`.
    /// `Exists` when an agent with this id or key is already enrolled.
    fn enrol_agent(&mut self, agent: &NewAgent) -> Result<AgentRow, FleetError>;
    fn agent(&self, id: &str) -> Result<Option<AgentRow>, FleetError>;
    fn agents(&self) -> Result<Vec<AgentRow>, FleetError>;
    /// Accepts or revokes an agent (trail `agent.accept` / `agent.revoke`;
    /// putting an accepted agent back to pending is `agent.suspend`). Setting
    /// the status it already has changes nothing and writes no trail entry.
    /// `NotFound` for an unknown id. A revoked agent stays revoked: changing
    /// its status again (to anything) is
    /// `NotFound { what: "agent <id> that is not revoked" }`.
    fn set_agent_status(
        &mut self,
        id: &str,
        status: AgentStatus,
        by: &str,
        reason: &str,
        at: OffsetDateTime,
    ) -> Result<(), FleetError>;
    /// Sets the environment an agent's host belongs to (trail
    /// `agent.environment`, its reason `environment <name>` or `no
    /// environment`); the environment it already has writes nothing.
    /// `NotFound` for an unknown id.
    fn set_agent_environment(
        &mut self,
        id: &str,
        environment: Option<&str>,
        by: &str,
        at: OffsetDateTime,
    ) -> Result<(), FleetError>;

    /// Stores a report in one transaction: the chain check (`seq` must be the
    /// agent's `last_seq + 1`; the same number and digest again is a
    /// `Duplicate`; the same number with another digest, or any lower number,
    /// is `Forked`, since an agent never goes back; 0, or a number beyond the
    /// next, is `OutOfOrder`), the new state when there is one, the events,
    /// and the agent's sequence, digest, hostname and last-seen (the
    /// report's `received_at`). An unknown, pending or revoked agent is
    /// `NotAccepted`, checked first. Nothing is written unless the outcome is
    /// `Stored`, and a report writes no trail entry.
    fn record_report(&mut self, report: &NewReport) -> Result<ReportOutcome, FleetError>;
    /// [`FleetStore::record_report`] with the new state made inside the same
    /// transaction: once the chain says the report is to be stored (and only
    /// then), `next_state` is called once, with the agent's latest stored
    /// state read under the agent's lock, and what it returns is stored as
    /// `report.state` would be (which is ignored). When it returns
    /// `Err(Abandon)`, nothing is written and `Ok(Err(Abandon))` comes back.
    /// The server rebuilds a state from a delta this way in one transaction.
    fn record_report_with(
        &mut self,
        report: &NewReport,
        next_state: &mut StateBuilder<'_>,
    ) -> Result<Result<ReportOutcome, Abandon>, FleetError>;
    /// Deletes at most `limit` stored states, oldest first, each one that a
    /// newer state of the same agent replaced before `before` (the state
    /// that followed it was received before then). So every agent keeps its
    /// latest state, and every state that was its host's at any time since
    /// `before`; events and the trail are never deleted. Returns how many
    /// were deleted: fewer than `limit` when no more are due.
    fn prune_states(&mut self, before: OffsetDateTime, limit: usize) -> Result<usize, FleetError>;
    /// The agent's latest stored state.
    fn latest_state(&self, agent_id: &str) -> Result<Option<StateRow>, FleetError>;
    /// The agent's stored states, newest first, at most `limit`.
    fn states(&self, agent_id: &str, limit: usize) -> Result<Vec<StateRow>, FleetError>;
    /// Events with an id above `after`, oldest first, at most `limit`; of one
    /// agent or of all.
    fn events(
        &self,
        agent_id: Option<&str>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<EventRow>, FleetError>;

    /// Events received within `window` (start included, end not), in the
    /// order stored, at most `limit`: what the monitor's fleet job reads
    /// since its last run.
    fn events_received(
        &self,
        window: std::ops::Range<OffsetDateTime>,
        limit: usize,
    ) -> Result<Vec<EventRow>, FleetError>;

    /// Adds an approval (trail `approval.add` by its `approved_by`).
    fn add_approval(&mut self, approval: &NewFleetApproval) -> Result<FleetApproval, FleetError>;
    /// Revokes one (trail `approval.revoke`); `NotFound` for an unknown or
    /// already revoked id.
    fn revoke_approval(
        &mut self,
        id: i64,
        by: &str,
        reason: &str,
        at: OffsetDateTime,
    ) -> Result<(), FleetError>;
    /// Every approval, in id order; revoked ones only when asked.
    fn approvals(&self, include_revoked: bool) -> Result<Vec<FleetApproval>, FleetError>;

    /// Adds a person (trail `user.add` by `by`); `Exists` when the name is taken.
    fn add_user(
        &mut self,
        name: &str,
        role: Role,
        password_hash: &str,
        by: &str,
        at: OffsetDateTime,
    ) -> Result<(), FleetError>;
    /// Disables or enables a person (trail `user.disable` / `user.enable`):
    /// a disabled person signs in to nothing and their tokens stop working.
    /// `NotFound` for an unknown name; setting what is already set writes
    /// nothing.
    fn set_user_disabled(
        &mut self,
        name: &str,
        disabled: bool,
        by: &str,
        at: OffsetDateTime,
    ) -> Result<(), FleetError>;
    fn user(&self, name: &str) -> Result<Option<UserRow>, FleetError>;
    fn users(&self) -> Result<Vec<UserRow>, FleetError>;

    /// Stores an API token's hash (SHA-256 hex of the token; the token itself is
    /// shown once and never stored), trail `token.add` by `user`, its reason
    /// the label. `NotFound` for an unknown user; `Exists` when the hash is
    /// already stored.
    fn add_token(
        &mut self,
        token_hash: &str,
        user: &str,
        label: &str,
        at: OffsetDateTime,
        expires: Option<OffsetDateTime>,
    ) -> Result<TokenRow, FleetError> {
        self.add_scoped_token(token_hash, user, label, at, expires, TokenScope::Full)
    }
    /// [`FleetStore::add_token`] with a scope (trail `token.add` or
    /// `token.add-scanner`).
    fn add_scoped_token(
        &mut self,
        token_hash: &str,
        user: &str,
        label: &str,
        at: OffsetDateTime,
        expires: Option<OffsetDateTime>,
        scope: TokenScope,
    ) -> Result<TokenRow, FleetError>;
    /// The token with this hash, with its user's role; `None` when unknown.
    /// Revoked and expired tokens are returned as stored: the caller refuses them.
    fn token(&self, token_hash: &str) -> Result<Option<TokenRow>, FleetError>;
    /// Revokes a token (trail `token.revoke`); `NotFound` for an unknown or
    /// already revoked id.
    fn revoke_token(&mut self, id: i64, by: &str, at: OffsetDateTime) -> Result<(), FleetError>;

    /// Appends to the trail (for what no method above records, such as an
    /// alert's acknowledgement).
    fn append_trail(&mut self, entry: &NewTrailEntry) -> Result<i64, FleetError>;
    /// The trail, newest first, at most `limit`.
    fn trail(&self, limit: usize) -> Result<Vec<TrailEntry>, FleetError>;

    /// Stores a scan job and its `shards` pending parts (trail `scan.submit`
    /// by its creator, subject the job id, reason its options).
    fn add_scan_job(&mut self, job: &NewScanJob) -> Result<ScanJobRow, FleetError>;
    /// The newest jobs first, at most `limit`.
    fn scan_jobs(&self, limit: usize) -> Result<Vec<ScanJobRow>, FleetError>;
    /// A job and its parts in order; `None` when unknown.
    fn scan_job(&self, id: i64) -> Result<Option<(ScanJobRow, Vec<ShardRow>)>, FleetError>;
    /// Leases the first part (oldest job first) that is pending or whose
    /// lease expired before `now`, of a job this node may scan (the job names
    /// no vantage point and neither does the node, or both name the same),
    /// to `node` under `token` until `now` plus the job's lease time.
    /// `None`: nothing to scan.
    fn lease_shard(
        &mut self,
        node: &str,
        vantage: Option<&str>,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<Option<Lease>, FleetError>;
    /// Extends a lease to `now` plus its job's lease time, if it still holds:
    /// it is the part's current lease and the part is not done (a lease past
    /// its expiry still holds until another node takes the part).
    fn renew_lease(&mut self, token: &str, now: OffsetDateTime) -> Result<LeaseCheck, FleetError>;
    /// Stores the run of a leased part and marks it done, if the lease still
    /// holds (as for [`FleetStore::renew_lease`]); a lost lease stores
    /// nothing.
    fn finish_shard(
        &mut self,
        token: &str,
        now: OffsetDateTime,
        run: &str,
    ) -> Result<LeaseCheck, FleetError>;
    /// The stored runs of a job's done parts, by part index.
    fn shard_runs(&self, job_id: i64) -> Result<Vec<(u32, String)>, FleetError>;
}
