//! What both fleet backends share: how values are spelled in columns, and the
//! one judgement of a report's place in its agent's chain, so SQLite and
//! PostgreSQL cannot disagree on either.
//!
//! Columns: timestamps are signed 64-bit unix nanoseconds (UTC), so both
//! backends round-trip an `OffsetDateTime` to the nanosecond and read it back in
//! UTC (`OffsetDateTime` compares instants, so the value read equals the one
//! written); that covers 1677-09-21 to 2262-04-11. Sequence numbers are stored
//! as signed 64-bit integers, so a report numbered above `i64::MAX` is refused.
//! Statuses, roles and approval scopes are stored by the words they print.
//!
//! Decoders return a short description of what was wrong; the caller adds the
//! backend and the database.

use time::OffsetDateTime;

use super::{
    AgentRow, AgentStatus, ApprovalScope, FleetError, Lease, LeaseCheck, NewAgent, NewScanJob,
    ReportOutcome, Role, ScanJobRow, ShardState, TokenScope,
};

/// A timestamp as unix nanoseconds; refused outside 1677-09-21..2262-04-11.
pub(super) fn encode_time(what: &str, at: OffsetDateTime) -> Result<i64, String> {
    i64::try_from(at.unix_timestamp_nanos())
        .map_err(|_| format!("{what} {at} is outside the storable range (years 1677 to 2262)"))
}

pub(super) fn encode_opt_time(
    what: &str,
    at: Option<OffsetDateTime>,
) -> Result<Option<i64>, String> {
    at.map(|at| encode_time(what, at)).transpose()
}

pub(super) fn decode_time(nanos: i64) -> Result<OffsetDateTime, String> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .map_err(|err| format!("timestamp {nanos} ns is out of range ({err})"))
}

pub(super) fn decode_opt_time(nanos: Option<i64>) -> Result<Option<OffsetDateTime>, String> {
    nanos.map(decode_time).transpose()
}

pub(super) fn encode_seq(seq: u64) -> Result<i64, String> {
    i64::try_from(seq).map_err(|_| format!("sequence number {seq} is above {}", i64::MAX))
}

pub(super) fn decode_seq(seq: i64) -> Result<u64, String> {
    u64::try_from(seq).map_err(|_| format!("negative sequence number {seq}"))
}

pub(super) fn decode_status(text: &str) -> Result<AgentStatus, String> {
    AgentStatus::parse(text).ok_or_else(|| format!("unknown agent status `{text}`"))
}

pub(super) fn decode_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| format!("unknown role `{text}`"))
}

pub(super) fn decode_token_scope(text: &str) -> Result<TokenScope, String> {
    TokenScope::parse(text).ok_or_else(|| format!("unknown token scope `{text}`"))
}

pub(super) fn decode_shard_state(text: &str) -> Result<ShardState, String> {
    ShardState::parse(text).ok_or_else(|| format!("unknown shard state `{text}`"))
}

/// A seed (any u64) in a signed 64-bit column, bit for bit.
pub(super) use crate::codec::{u64_from_bits as decode_seed, u64_to_bits as encode_seed};

/// A count stored in a 64-bit column that must fit a u32 (shards, part
/// indexes, attempts, lease seconds).
pub(super) fn decode_u32(what: &str, column: i64) -> Result<u32, String> {
    u32::try_from(column).map_err(|_| format!("{what} {column} is out of range"))
}

/// The scan options of a job, stored as a JSON array of strings.
pub(super) fn encode_scan_args(args: &[String]) -> String {
    serde_json::Value::from(args.to_vec()).to_string()
}

pub(super) fn decode_scan_args(text: &str) -> Result<Vec<String>, String> {
    serde_json::from_str(text).map_err(|err| format!("scan options that do not parse: {err}"))
}

/// What a job's options say in the trail: its arguments, joined.
pub(super) fn scan_job_reason(job: &super::NewScanJob) -> String {
    let mut reason = format!(
        "{} shard{} of seed {}",
        job.shards,
        if job.shards == 1 { "" } else { "s" },
        job.seed
    );
    if let Some(vantage) = &job.vantage {
        reason.push_str(&format!(" from {vantage}"));
    }
    reason.push_str(": ");
    reason.push_str(&job.scan_args.join(" "));
    reason
}

/// An approval scope as its two columns: the kind (`fleet`, `environment`,
/// `host`) and the name (empty for the fleet).
pub(super) fn encode_scope(scope: &ApprovalScope) -> (&'static str, &str) {
    match scope {
        ApprovalScope::Fleet => ("fleet", ""),
        ApprovalScope::Environment(name) => ("environment", name),
        ApprovalScope::Host(agent_id) => ("host", agent_id),
    }
}

pub(super) fn decode_scope(kind: &str, name: String) -> Result<ApprovalScope, String> {
    match kind {
        "fleet" if name.is_empty() => Ok(ApprovalScope::Fleet),
        "fleet" => Err(format!("fleet scope with a name `{name}`")),
        "environment" => Ok(ApprovalScope::Environment(name)),
        "host" => Ok(ApprovalScope::Host(name)),
        _ => Err(format!("unknown approval scope kind `{kind}`")),
    }
}

/// The trail action of a status change.
pub(super) fn status_action(status: AgentStatus) -> &'static str {
    match status {
        AgentStatus::Accepted => "agent.accept",
        AgentStatus::Revoked => "agent.revoke",
        // Putting an agent back to pending suspends its reports until it is
        // accepted again; the trait has no word for it, so it gets its own.
        AgentStatus::Pending => "agent.suspend",
    }
}

/// The trail reason of an environment change.
pub(super) fn environment_reason(environment: Option<&str>) -> String {
    match environment {
        Some(name) => format!("environment {name}"),
        None => "no environment".to_owned(),
    }
}

/// Where a report stands in its agent's chain, given the agent's row as locked
/// by the transaction (`None`: no such agent). `None` means: store it.
///
/// Sequence numbers start at 1, so 0 is never a stored report: it is out of
/// order rather than a fork. Any other number at or below the last stored one
/// is a fork unless it repeats the last report exactly: the store keeps only
/// the last digest, and an agent never goes back, so an older number under any
/// digest means another host holds the key.
pub(super) fn judge_report(
    agent: Option<(AgentStatus, u64, &str)>,
    seq: u64,
    digest: &str,
) -> Option<ReportOutcome> {
    let Some((status, last_seq, last_digest)) = agent else {
        return Some(ReportOutcome::NotAccepted { status: None });
    };
    if status != AgentStatus::Accepted {
        return Some(ReportOutcome::NotAccepted {
            status: Some(status),
        });
    }
    let expected = last_seq.saturating_add(1);
    if seq == expected {
        None
    } else if seq == 0 || seq > expected {
        Some(ReportOutcome::OutOfOrder { expected })
    } else if seq == last_seq && digest == last_digest {
        Some(ReportOutcome::Duplicate)
    } else {
        Some(ReportOutcome::Forked)
    }
}

/// `Exists` for an agent whose id or key is taken by `existing`.
pub(super) fn exists_agent(id: &str, existing: &str) -> FleetError {
    let what = if existing == id {
        format!("agent {id}")
    } else {
        format!("an agent with this public key ({existing})")
    };
    FleetError::Exists { what }
}

pub(super) fn not_found(what: String) -> FleetError {
    FleetError::NotFound { what }
}

/// The trail reason of an enrolment: the name the host gave and the status it
/// was enrolled with.
pub(super) fn enrol_reason(agent: &NewAgent) -> String {
    format!(
        "hostname {}, status {}",
        agent.hostname,
        agent.status.as_str()
    )
}

/// The row of an agent just enrolled.
pub(super) fn new_agent_row(agent: &NewAgent) -> AgentRow {
    AgentRow {
        id: agent.id.clone(),
        public_key: agent.public_key.clone(),
        hostname: agent.hostname.clone(),
        status: agent.status,
        enrolled_at: agent.enrolled_at,
        environment: None,
        last_seq: 0,
        last_digest: String::new(),
        last_seen: None,
    }
}

/// A job as just stored: nothing leased or done yet.
pub(super) fn new_scan_job_row(id: i64, job: &NewScanJob) -> ScanJobRow {
    ScanJobRow {
        id,
        created_by: job.created_by.clone(),
        created_at: job.created_at,
        scan_args: job.scan_args.clone(),
        seed: job.seed,
        shards: job.shards,
        vantage: job.vantage.clone(),
        lease_seconds: job.lease_seconds,
        done: 0,
        leased: 0,
    }
}

/// Whether the part a lease token was found on (job, part, state) still
/// holds it: `Err` says why not, for the node.
pub(super) fn judge_lease(found: Option<(i64, i64, String)>) -> Result<(i64, i64), String> {
    match found {
        None => Err(
            "no lease holds with this token: it expired and its part was leased to \
                     another node (or it was never handed out)"
                .to_owned(),
        ),
        Some((job, index, state)) if state == ShardState::Leased.as_str() => Ok((job, index)),
        Some((job, index, state)) if state == ShardState::Done.as_str() => {
            Err(format!("part {index} of scan job {job} is already done"))
        }
        Some((job, index, state)) => Err(format!(
            "part {index} of scan job {job} is {state}, not leased"
        )),
    }
}

/// A lease that holds, until `expires` (nanoseconds).
pub(super) fn held_check((job_id, index): (i64, i64), expires: i64) -> Result<LeaseCheck, String> {
    Ok(LeaseCheck::Held {
        job_id,
        index: decode_u32("part", index)?,
        expires: decode_time(expires)?,
    })
}

/// A lease just handed out.
pub(super) fn lease_of(
    job: ScanJobRow,
    index: i64,
    token: &str,
    expires: i64,
    attempts: i64,
) -> Result<Lease, String> {
    Ok(Lease {
        index: decode_u32("part", index)?,
        token: token.to_owned(),
        expires: decode_time(expires)?,
        attempt: decode_u32("attempts", attempts)?,
        job,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_to_the_nanosecond_in_utc() {
        let at = time::macros::datetime!(2026-05-20 13:14:15.123_456_789 +02:00);
        let nanos = encode_time("t", at).expect("in range");
        let back = decode_time(nanos).expect("decodes");
        assert_eq!(back, at);
        assert_eq!(back.offset(), time::UtcOffset::UTC);
        assert_eq!(back.nanosecond(), 123_456_789);
        let far = time::macros::datetime!(2300-01-01 0:00 UTC);
        assert!(encode_time("t", far).is_err());
    }

    #[test]
    fn scopes_round_trip() {
        for scope in [
            ApprovalScope::Fleet,
            ApprovalScope::Environment("prod".to_owned()),
            ApprovalScope::Host("ag_01".to_owned()),
        ] {
            let (kind, name) = encode_scope(&scope);
            assert_eq!(decode_scope(kind, name.to_owned()), Ok(scope.clone()));
        }
        assert!(decode_scope("planet", String::new()).is_err());
        assert!(decode_scope("fleet", "x".to_owned()).is_err());
    }

    #[test]
    fn the_chain() {
        let accepted = |last_seq, digest| Some((AgentStatus::Accepted, last_seq, digest));
        assert_eq!(
            judge_report(None, 1, "a"),
            Some(ReportOutcome::NotAccepted { status: None })
        );
        assert_eq!(
            judge_report(Some((AgentStatus::Pending, 0, "")), 1, "a"),
            Some(ReportOutcome::NotAccepted {
                status: Some(AgentStatus::Pending)
            })
        );
        assert_eq!(judge_report(accepted(0, ""), 1, "a"), None);
        assert_eq!(
            judge_report(accepted(0, ""), 0, ""),
            Some(ReportOutcome::OutOfOrder { expected: 1 })
        );
        assert_eq!(judge_report(accepted(3, "c"), 4, "d"), None);
        assert_eq!(
            judge_report(accepted(3, "c"), 3, "c"),
            Some(ReportOutcome::Duplicate)
        );
        assert_eq!(
            judge_report(accepted(3, "c"), 3, "x"),
            Some(ReportOutcome::Forked)
        );
        assert_eq!(
            judge_report(accepted(3, "c"), 2, "b"),
            Some(ReportOutcome::Forked)
        );
        assert_eq!(
            judge_report(accepted(3, "c"), 6, "f"),
            Some(ReportOutcome::OutOfOrder { expected: 4 })
        );
    }
}
