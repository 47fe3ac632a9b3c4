//! `perimeter.api/1`: the documents that agents, clients and `perimeter server`
//! exchange, how an agent signs what it sends, and the HTTPS client that both
//! the agent and the CLI use.
//!
//! Every document carries `"schema": "perimeter.api/1"`; fields are only ever
//! added, never renamed, within a schema version. The server reads every
//! document as hostile: sizes are capped by the server before parsing, and the
//! documents here keep no field a reader must trust (the server recomputes
//! digests and derives ids from keys).

pub mod client;
mod scan_jobs;
pub mod sign;
pub mod state;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use scan_jobs::{
    FinishRequest, LeaseDoc, LeaseRef, LeaseRequest, LeaseStatus, NewScanJobDoc, ScanJobDoc,
    ScanJobList, ShardDoc, ShardRunDoc, ShardRunList,
};
pub use state::{
    ACCEPTS_LISTENER_REACH, FindingDoc, HostState, ListenerDoc, OwnerDoc, ReachDoc, StateDelta,
    UndecidedDoc,
};

/// The schema string of every document of this API version.
pub const SCHEMA: &str = "perimeter.api/1";

/// The path prefix of every endpoint of this API version.
pub const PREFIX: &str = "/api/v1";

/// An agent asking to join the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    pub schema: String,
    /// The agent's ed25519 public key, base64 (standard, padded).
    pub public_key: String,
    /// What the host calls itself: a label shown to people, never an identity.
    pub hostname: String,
    /// The enrolment secret the administrator gave the agent.
    pub secret: String,
}

/// The server's answer to an enrolment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolResponse {
    pub schema: String,
    /// The agent's id, derived from its key.
    pub agent_id: String,
    /// `accepted`, or `pending` until an administrator accepts it.
    pub status: String,
}

/// One report of an agent: its host's state (complete, or what changed since
/// the state of its previous report) and the events since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub schema: String,
    pub agent_id: String,
    /// 1 for the agent's first report, then one more each time.
    pub seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub taken_at: OffsetDateTime,
    pub hostname: String,
    /// The whole state: the first report, and whenever the server asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<HostState>,
    /// What changed since the previous report's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<StateDelta>,
    /// Events seen since the previous report (exec events, listeners that came
    /// and went between two reports).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
    /// Reports the agent's queue could not keep while the server was out of
    /// reach (their states are folded into this one; their events are lost and
    /// counted here).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_events: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Something an agent saw happen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// `exec` (a suspicious process exec), `listener.new`, `listener.gone`.
    pub kind: String,
    /// One line for a person.
    pub summary: String,
    /// The flags that made an exec suspicious (`unpackaged`, `world-writable`,
    /// `deleted`, `memfd`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
}

/// The server's answer to a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportAck {
    pub schema: String,
    /// `stored`, or `duplicate` (this report was stored before).
    pub outcome: String,
    pub seq: u64,
    /// The optional fields of a report this server takes beyond the first
    /// version of the schema ([`ACCEPTS_LISTENER_REACH`]); absent from older
    /// servers, which refuse fields they do not know. An agent sends such a
    /// field only once a server named it here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepts: Vec<String>,
}

/// Every error answer: a machine-readable code and a sentence for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDoc {
    pub schema: String,
    /// `unauthenticated`, `forbidden`, `bad_request`, `too_large`,
    /// `rate_limited`, `not_found`, `conflict`, `out_of_order`, `forked`,
    /// `need_full`, `not_accepted`, `clock_skew`, `internal`.
    pub error: String,
    pub message: String,
    /// With `out_of_order`: the sequence number the server expects next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_seq: Option<u64>,
}

/// A host as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSummary {
    pub agent_id: String,
    pub hostname: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub enrolled_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_seen: Option<OffsetDateTime>,
    /// Listeners beyond loopback in its latest state.
    pub exposed: u64,
    /// Of those, how many no approval covers.
    pub unapproved: u64,
    /// Findings in its latest state, by severity name.
    pub findings: std::collections::BTreeMap<String, u64>,
}

/// The hosts of the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostList {
    pub schema: String,
    pub hosts: Vec<HostSummary>,
}

/// One listener of a host, with what the server's approvals say about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgedListener {
    #[serde(flatten)]
    pub listener: ListenerDoc,
    /// `not-needed` (loopback), `approved`, `expired`, `unapproved`.
    pub approval: String,
    /// The approval that covers it, when one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<i64>,
}

/// One host in full: its latest state, each listener judged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostDetail {
    pub schema: String,
    pub host: HostSummary,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub state_taken_at: Option<OffsetDateTime>,
    pub listeners: Vec<JudgedListener>,
    pub findings: Vec<FindingDoc>,
}

/// Which hosts an approval covers, as the API spells it: `fleet`,
/// `environment:NAME`, `host:AGENT_ID`.
pub fn parse_scope(text: &str) -> Option<(&str, Option<&str>)> {
    match text.split_once(':') {
        None if text == "fleet" => Some(("fleet", None)),
        Some(("environment", name)) if !name.is_empty() => Some(("environment", Some(name))),
        Some(("host", id)) if !id.is_empty() => Some(("host", Some(id))),
        _ => None,
    }
}

/// An approval to add: the approvals file's keys, a scope, a reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewApprovalDoc {
    pub schema: String,
    /// `fleet`, `environment:NAME` or `host:AGENT_ID`.
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    pub protocol: String,
    /// The bind address, or instead `bind_scope`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_scope: Option<String>,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unowned: bool,
    pub reason: String,
    /// A date (YYYY-MM-DD) after which it approves nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// For an import from an approvals file (administrators only): who
    /// approved it there and when (YYYY-MM-DD), kept as the approval's;
    /// the trail also records the import and who made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_at: Option<String>,
}

/// A stored approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalDoc {
    pub id: i64,
    pub scope: String,
    /// The entry's keys as the approvals file writes them (TOML).
    pub selector: String,
    pub approved_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub approved_at: OffsetDateTime,
    pub reason: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalList {
    pub schema: String,
    pub approvals: Vec<ApprovalDoc>,
}

/// A decision with a reason: revoking an approval or an agent, accepting an
/// agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub schema: String,
    pub reason: String,
}

/// One entry of the server's append-only trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrailDoc {
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrailList {
    pub schema: String,
    pub entries: Vec<TrailDoc>,
}

/// A person acknowledging one of the monitor's open conditions
/// (`POST /conditions/{id}/ack`): its escalations stay quiet until `until`
/// (for good without it); it is still listed, and its end is still told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    pub schema: String,
    pub reason: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub until: Option<OffsetDateTime>,
}

/// What the monitor inside the server raised (`GET /alerts`): the conditions
/// it still sees, worst first, and its latest alerts, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertList {
    pub schema: String,
    pub conditions: Vec<ConditionDoc>,
    pub alerts: Vec<AlertDoc>,
}

/// A condition the monitor still sees (an unapproved listener, a finding, a
/// silent agent, an open port): what a person acknowledges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionDoc {
    /// Stable while the condition lasts.
    pub id: i64,
    pub job: String,
    /// A change kind as `perimeter.alert/1` names it (`listener-unapproved`).
    pub kind: String,
    pub severity: String,
    /// What it is about; may carry text the network or an agent chose.
    pub subject: String,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// While an acknowledgement holds: until when (the year 9999 for good).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub acknowledged_until: Option<OffsetDateTime>,
    /// While an acknowledgement holds: who gave it, when and why (the latest
    /// one given). Absent from servers older than it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledgement: Option<AcknowledgementDoc>,
}

/// A person's acknowledgement of a condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcknowledgementDoc {
    /// The account that acknowledged it.
    pub by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The reason given; text a person chose.
    pub reason: String,
}

/// One alert the monitor raised, and where it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertDoc {
    pub id: i64,
    pub job: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    pub severity: String,
    /// How many changes it told.
    pub changes: u64,
    /// (channel, `pending` | `sent` | `failed`) per delivery.
    pub deliveries: Vec<(String, String)>,
}
