//! The API's endpoints. Every one but `health` needs authentication: an API
//! token with a role, or (for enrolment) the enrolment secret, or (for
//! reports and the host's own approvals file) the agent's signature.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use perimeter_api::sign::{self, AGENT_HEADER, DATE_HEADER, SIGNATURE_HEADER};
use perimeter_api::{
    AckRequest, AlertList, ApprovalDoc, ApprovalList, ConditionDoc, Decision, EnrolRequest,
    EnrolResponse, FindingDoc, HostDetail, HostList, HostState, HostSummary, ListenerDoc,
    NewApprovalDoc, PREFIX, ReachDoc, Report, ReportAck, SCHEMA, TrailDoc, TrailList,
};
use perimeter_checks::approvals::{Bind, NewApproval, OwnerKey, selector_toml};
use perimeter_model::{Protocol, Scope};
use perimeter_store::fleet::{
    Abandon, AgentRow, AgentStatus, ApprovalScope, FleetApproval, FleetStore, NewAgent,
    NewFleetApproval, NewReport, ReportOutcome, Role, StateRow, TokenScope,
};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::auth::{Principal, bearer, same_secret, token_hash};
use crate::error::ApiError;
use crate::{AppState, Limits, alerts, judge, scan_jobs};

type Shared = State<Arc<AppState>>;

pub(crate) fn router(state: Arc<AppState>, limits: &Limits) -> Router {
    let api = Router::new()
        .route("/health", get(health))
        .route("/enrol", post(enrol))
        .route("/reports", post(report))
        .route("/hosts", get(hosts))
        .route("/hosts/{id}", get(host))
        .route("/hosts/{id}/accept", post(accept_agent))
        .route("/hosts/{id}/revoke", post(revoke_agent))
        .route("/hosts/{id}/environment", post(set_environment))
        .route("/approvals", get(list_approvals).post(add_approval))
        .route("/approvals/{id}/revoke", post(revoke_approval))
        .route("/approvals.toml", get(approvals_toml))
        .route("/trail", get(trail))
        .route("/alerts", get(list_alerts))
        .route("/conditions/{id}/ack", post(ack_condition))
        .route("/scan-jobs", get(scan_jobs::list).post(scan_jobs::submit))
        .route("/scan-jobs/{id}", get(scan_jobs::show))
        .route("/scan-jobs/{id}/runs", get(scan_jobs::runs))
        .route("/leases", post(scan_jobs::lease))
        .route("/leases/renew", post(scan_jobs::renew))
        .route("/leases/finish", post(scan_jobs::finish));
    let max_body = limits.max_body_bytes;
    Router::new()
        .nest(PREFIX, api)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| async move {
                refuse_declared_oversize(request, next, max_body).await
            },
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .with_state(state)
}

/// A body whose declared length is over the limit is refused before a byte of
/// it is read (a chunked one is cut by `DefaultBodyLimit` as it comes).
async fn refuse_declared_oversize(
    request: axum::extract::Request,
    next: axum::middleware::Next,
    max_body: usize,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max_body as u64) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than {max_body} bytes"),
        )
        .into_response();
    }
    next.run(request).await
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn health(State(state): Shared) -> Response {
    Json(serde_json::json!({"schema": SCHEMA, "status": "ok", "backend": state.backend}))
        .into_response()
}

/// The person or script behind a bearer token of the full scope (a scanner
/// node's token may only lease: see scan_jobs.rs).
pub(crate) async fn principal(
    state: &Arc<AppState>,
    headers: &HeaderMap,
) -> Result<Principal, ApiError> {
    let (who, scope) = token_principal(state, headers).await?;
    if scope != TokenScope::Full {
        return Err(ApiError::forbidden(
            "this token is a scanner node's: it may only lease parts of scan jobs",
        ));
    }
    Ok(who)
}

/// Whoever is behind a bearer token, and what the token may do.
pub(crate) async fn token_principal(
    state: &Arc<AppState>,
    headers: &HeaderMap,
) -> Result<(Principal, TokenScope), ApiError> {
    let token = bearer(headers).ok_or_else(|| {
        ApiError::unauthenticated("this needs an API token (Authorization: Bearer)")
    })?;
    let hash = token_hash(token);
    let (row, disabled) = state
        .with_store(move |store| {
            let row = store.token(&hash)?;
            let disabled = match &row {
                Some(row) => store.user(&row.user)?.is_none_or(|user| user.disabled),
                None => false,
            };
            Ok((row, disabled))
        })
        .await?;
    let Some(row) = row else {
        return Err(ApiError::unauthenticated("unknown API token"));
    };
    if disabled {
        return Err(ApiError::unauthenticated(format!(
            "user {} is disabled",
            row.user
        )));
    }
    if row.revoked {
        return Err(ApiError::unauthenticated("this API token was revoked"));
    }
    if row
        .expires
        .is_some_and(|expires| expires <= OffsetDateTime::now_utc())
    {
        return Err(ApiError::unauthenticated("this API token has expired"));
    }
    Ok((
        Principal {
            user: row.user,
            role: row.role,
        },
        row.scope,
    ))
}

/// The agent that signed this request, checked: known, signature good, clock
/// near ours. Its status is the caller's to judge.
async fn signed_agent(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    method: &str,
    uri: &Uri,
    body: &[u8],
) -> Result<AgentRow, ApiError> {
    let header_text = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| ApiError::unauthenticated(format!("the request has no {name} header")))
    };
    let agent_id = header_text(AGENT_HEADER)?;
    let date = header_text(DATE_HEADER)?;
    let signature = header_text(SIGNATURE_HEADER)?;
    if agent_id.len() > 64 {
        return Err(ApiError::unauthenticated("unknown agent"));
    }
    let id = agent_id.clone();
    let agent = state
        .with_store(move |store| Ok(store.agent(&id)?))
        .await?
        .ok_or_else(|| {
            ApiError::unauthenticated(format!("unknown agent {agent_id}: enrol first"))
        })?;
    let path = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    let at = sign::verify_request(&agent.public_key, method, path, &date, &signature, body)
        .map_err(|err| ApiError::unauthenticated(format!("agent {agent_id}: {err}")))?;
    let skew = (OffsetDateTime::now_utc() - at).abs();
    if skew > state.config.limits.max_clock_skew {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "clock_skew",
            format!(
                "the agent's clock is {} s from the server's (at most {} s allowed): set the clock (NTP)",
                skew.whole_seconds(),
                state.config.limits.max_clock_skew.as_secs()
            ),
        ));
    }
    Ok(agent)
}

fn not_accepted(agent: &AgentRow) -> ApiError {
    let message = match agent.status {
        AgentStatus::Pending => {
            format!("agent {} waits for an administrator to accept it", agent.id)
        }
        AgentStatus::Revoked => format!("agent {}'s key was revoked", agent.id),
        AgentStatus::Accepted => format!("agent {} is accepted", agent.id),
    };
    ApiError::new(StatusCode::FORBIDDEN, "not_accepted", message)
}

async fn enrol(State(state): Shared, body: Bytes) -> Result<Json<EnrolResponse>, ApiError> {
    let request: EnrolRequest = serde_json::from_slice(&body)
        .map_err(|err| ApiError::bad_request(format!("not an enrolment request: {err}")))?;
    let Some(secret) = state.config.enrol_secret.as_deref() else {
        return Err(ApiError::forbidden("enrolment is closed on this server"));
    };
    if !same_secret(&request.secret, secret) {
        return Err(ApiError::unauthenticated("wrong enrolment secret"));
    }
    check_text("hostname", &request.hostname, 255)?;
    let key = sign::decode_public_key(&request.public_key)
        .map_err(|err| ApiError::bad_request(err.to_string()))?;
    let id = sign::agent_id(&key);
    let status = if state.config.require_acceptance {
        AgentStatus::Pending
    } else {
        AgentStatus::Accepted
    };
    let new = NewAgent {
        id: id.clone(),
        public_key: key.to_vec(),
        hostname: request.hostname,
        status,
        enrolled_at: OffsetDateTime::now_utc(),
    };
    let agent = state
        .with_store(move |store| match store.enrol_agent(&new) {
            Ok(agent) => Ok(agent),
            // The same key again (an agent that lost our answer): where it
            // stands, unchanged.
            Err(perimeter_store::fleet::FleetError::Exists { .. }) => {
                store.agent(&new.id)?.ok_or_else(|| {
                    ApiError::conflict("conflict", "this key is enrolled under another id")
                })
            }
            Err(err) => Err(err.into()),
        })
        .await?;
    tracing::info!(agent = %agent.id, hostname = %agent.hostname, status = agent.status.as_str(), "enrolled");
    Ok(Json(EnrolResponse {
        schema: SCHEMA.to_owned(),
        agent_id: agent.id,
        status: agent.status.as_str().to_owned(),
    }))
}

pub(crate) fn check_text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("{field} is longer than {max} bytes"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ApiError::bad_request(format!(
            "{field} holds control characters"
        )));
    }
    Ok(())
}

fn too_many(what: &str, n: usize, max: usize) -> Result<(), ApiError> {
    if n > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("{n} {what} in one report; at most {max}"),
        ));
    }
    Ok(())
}

/// The optional report fields this server takes, told in every `ReportAck`
/// so an agent sends them only to a server that reads them.
fn accepts() -> Vec<String> {
    vec![perimeter_api::ACCEPTS_LISTENER_REACH.to_owned()]
}

/// Whether `text` is an address prefix as `ipnet` writes one
/// (`192.0.2.0/24`, `2001:db8::/32`).
fn is_prefix(text: &str) -> bool {
    let Some((address, len)) = text.split_once('/') else {
        return false;
    };
    let Ok(len) = len.parse::<u8>() else {
        return false;
    };
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => len <= 32,
        Ok(IpAddr::V6(_)) => len <= 128,
        Err(_) => false,
    }
}

/// The most prefixes one listener's reach may name, allowed and undecided
/// alike (a walk over a large ruleset carves many).
const MAX_REACH_PREFIXES: usize = 1_024;

fn check_reach(reach: &ReachDoc, limits: &Limits) -> Result<(), ApiError> {
    too_many(
        "prefixes in one listener's reach",
        reach.allowed.len() + reach.undecided.len(),
        MAX_REACH_PREFIXES,
    )?;
    for prefix in reach
        .allowed
        .iter()
        .chain(reach.undecided.iter().map(|u| &u.sources))
    {
        if !is_prefix(prefix) {
            return Err(ApiError::bad_request(
                "a listener's reach names something that is not an address prefix",
            ));
        }
    }
    for undecided in &reach.undecided {
        check_text("reach reason", &undecided.reason, limits.max_string)?;
    }
    Ok(())
}

fn check_listener(listener: &ListenerDoc, limits: &Limits) -> Result<(), ApiError> {
    if Protocol::parse(&listener.protocol).is_none() {
        return Err(ApiError::bad_request(format!(
            "listener protocol `{}` is not tcp or udp",
            listener.protocol.chars().take(16).collect::<String>()
        )));
    }
    if listener.address.parse::<IpAddr>().is_err() {
        return Err(ApiError::bad_request(
            "a listener's address is not an IP address",
        ));
    }
    if Scope::parse(&listener.scope).is_none() {
        return Err(ApiError::bad_request("a listener's scope is not a scope"));
    }
    check_text("netns", &listener.netns, 255)?;
    too_many("owners of one listener", listener.owners.len(), 256)?;
    if let Some(reach) = &listener.reach {
        check_reach(reach, limits)?;
    }
    for owner in &listener.owners {
        check_text("owner name", &owner.name, limits.max_string)?;
        check_text("owner user", &owner.user, limits.max_string)?;
        check_text(
            "owner exe",
            owner.exe.as_deref().unwrap_or(""),
            limits.max_string,
        )?;
        check_text(
            "owner package",
            owner.package.as_deref().unwrap_or(""),
            limits.max_string,
        )?;
    }
    Ok(())
}

fn check_findings(findings: &[FindingDoc], limits: &Limits) -> Result<(), ApiError> {
    too_many("findings", findings.len(), limits.max_findings)?;
    for finding in findings {
        for text in [
            &finding.rule,
            &finding.severity,
            &finding.subject,
            &finding.message,
            &finding.remedy,
        ] {
            check_text("a finding", text, limits.max_string)?;
        }
        too_many("evidence lines of one finding", finding.evidence.len(), 64)?;
        for line in &finding.evidence {
            check_text("a finding's evidence", line, limits.max_string)?;
        }
    }
    Ok(())
}

/// Everything a report may hold, bounded; values that the server interprets
/// (protocol, address, scope) must parse.
fn check_report(report: &Report, limits: &Limits) -> Result<(), ApiError> {
    if report.schema != SCHEMA {
        return Err(ApiError::bad_request(format!(
            "schema `{}` is not {SCHEMA}",
            report.schema.chars().take(40).collect::<String>()
        )));
    }
    check_text("hostname", &report.hostname, 255)?;
    if report.full.is_some() == report.delta.is_some() {
        return Err(ApiError::bad_request(
            "a report carries either the full state or a delta, exactly one",
        ));
    }
    if let Some(full) = &report.full {
        too_many("listeners", full.listeners.len(), limits.max_listeners)?;
        for listener in &full.listeners {
            check_listener(listener, limits)?;
        }
        check_findings(&full.findings, limits)?;
    }
    if let Some(delta) = &report.delta {
        too_many(
            "listeners",
            delta.upsert.len() + delta.remove.len(),
            limits.max_listeners,
        )?;
        for listener in delta.upsert.iter().chain(&delta.remove) {
            check_listener(listener, limits)?;
        }
        if let Some(findings) = &delta.findings {
            check_findings(findings, limits)?;
        }
    }
    too_many("events", report.events.len(), limits.max_events)?;
    for event in &report.events {
        check_text("an event's kind", &event.kind, 64)?;
        check_text("an event", &event.summary, limits.max_string)?;
        too_many("flags of one event", event.flags.len(), 16)?;
        for flag in &event.flags {
            check_text("an event's flag", flag, 64)?;
        }
    }
    Ok(())
}

/// Counts a report against its agent's minute; `false` when over.
fn within_rate(state: &AppState, agent_id: &str) -> bool {
    let Ok(mut rate) = state.rate.lock() else {
        return true;
    };
    let now = Instant::now();
    if rate.len() > 100_000 {
        rate.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
    }
    let entry = rate.entry(agent_id.to_owned()).or_insert((now, 0));
    if now.duration_since(entry.0) >= Duration::from_secs(60) {
        *entry = (now, 0);
    }
    entry.1 += 1;
    entry.1 <= state.config.limits.reports_per_minute
}

/// The host's state after `report`, from the agent's latest stored state:
/// `None` when it did not change (the same digest), so only the agent's
/// sequence and last-seen move.
fn next_state(
    report: &Report,
    agent_id: &str,
    latest: Option<StateRow>,
) -> Result<Option<String>, ApiError> {
    let latest_state: Option<HostState> = match &latest {
        Some(row) => Some(serde_json::from_str(&row.state).map_err(|err| {
            ApiError::internal(format!(
                "agent {agent_id}: stored state does not parse: {err}"
            ))
        })?),
        None => None,
    };
    let next = match (&report.full, &report.delta) {
        (Some(full), _) => {
            let mut full = full.clone();
            full.hostname.clone_from(&report.hostname);
            full.canonicalise();
            full
        }
        (None, Some(delta)) => match &latest_state {
            Some(base) => base.apply(delta, &report.hostname),
            None => {
                return Err(ApiError::conflict(
                    "need_full",
                    "the server holds no state of this host: send the full state",
                ));
            }
        },
        (None, None) => return Err(ApiError::bad_request("no state in the report")),
    };
    if latest_state.as_ref().map(HostState::digest) == Some(next.digest()) {
        return Ok(None);
    }
    Ok(Some(
        serde_json::to_string(&next).map_err(ApiError::internal)?,
    ))
}

async fn report(
    State(state): Shared,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    body: Bytes,
) -> Result<Json<ReportAck>, ApiError> {
    let agent = signed_agent(&state, &headers, "POST", &uri, &body).await?;
    if agent.status != AgentStatus::Accepted {
        return Err(not_accepted(&agent));
    }
    if !within_rate(&state, &agent.id) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "more than {} reports in a minute",
                state.config.limits.reports_per_minute
            ),
        ));
    }
    let report: Report = serde_json::from_slice(&body)
        .map_err(|err| ApiError::bad_request(format!("not a report: {err}")))?;
    check_report(&report, &state.config.limits)?;
    if report.agent_id != agent.id {
        return Err(ApiError::forbidden("an agent may only report for itself"));
    }
    let digest = sign::body_digest(&body);
    let received_at = OffsetDateTime::now_utc();
    let events: Vec<String> = report
        .events
        .iter()
        .filter_map(|event| serde_json::to_string(event).ok())
        .chain(
            (report.dropped_events > 0)
                .then(|| {
                    serde_json::to_string(&perimeter_api::Event {
                        at: received_at,
                        kind: "queue.overflow".into(),
                        summary: format!(
                            "the agent could not keep {} events while the server was out of reach",
                            report.dropped_events
                        ),
                        flags: Vec::new(),
                    })
                    .ok()
                })
                .flatten(),
        )
        .collect();
    let agent_id = agent.id.clone();
    let seq = report.seq;
    // One transaction: the chain judged under the agent's lock, the new state
    // built from the latest stored one (only when the report is to be
    // stored), and both written.
    let outcome = state
        .with_store(move |store| {
            let new = NewReport {
                agent_id,
                seq: report.seq,
                digest,
                hostname: report.hostname.clone(),
                taken_at: report.taken_at,
                received_at,
                state: None,
                events,
            };
            let mut refusal = None;
            let recorded = store.record_report_with(&new, &mut |latest| {
                next_state(&report, &new.agent_id, latest).map_err(|err| {
                    refusal = Some(err);
                    Abandon
                })
            })?;
            recorded.map_err(|Abandon| {
                refusal.unwrap_or_else(|| ApiError::internal("the report's state was refused"))
            })
        })
        .await?;
    match outcome {
        ReportOutcome::Stored => Ok(Json(ReportAck {
            schema: SCHEMA.to_owned(),
            outcome: "stored".into(),
            seq,
            accepts: accepts(),
        })),
        ReportOutcome::Duplicate => Ok(Json(ReportAck {
            schema: SCHEMA.to_owned(),
            outcome: "duplicate".into(),
            seq,
            accepts: accepts(),
        })),
        ReportOutcome::OutOfOrder { expected } => {
            let mut err = ApiError::conflict(
                "out_of_order",
                format!("report {seq} is out of order: the server expects {expected}"),
            );
            err.expected_seq = Some(expected);
            Err(err)
        }
        ReportOutcome::Forked => {
            tracing::warn!(agent = %agent.id, seq, "forked report chain: two machines share this agent's key");
            Err(ApiError::conflict(
                "forked",
                format!(
                    "another report {seq} was already stored under this key: two machines share it (a cloned VM?); this one must enrol anew"
                ),
            ))
        }
        ReportOutcome::NotAccepted { .. } => Err(not_accepted(&agent)),
    }
}

/// A host's summary, its latest state's time, its judged listeners and its
/// findings.
pub(crate) struct Judged {
    pub(crate) summary: HostSummary,
    pub(crate) taken_at: Option<OffsetDateTime>,
    pub(crate) listeners: Vec<perimeter_api::JudgedListener>,
    pub(crate) findings: Vec<FindingDoc>,
}

/// An agent's summary and its judged listeners.
pub(crate) fn summarise(
    agent: AgentRow,
    state: Option<(OffsetDateTime, HostState)>,
    approvals: &[FleetApproval],
) -> Result<Judged, ApiError> {
    let rows = judge::covering(approvals, &agent);
    let parsed = judge::parsed(&rows).map_err(ApiError::internal)?;
    let today = OffsetDateTime::now_utc().date();
    let (taken_at, listeners, findings) = match state {
        Some((taken_at, state)) => (
            Some(taken_at),
            judge::judge(&state.listeners, &rows, &parsed, today),
            state.findings,
        ),
        None => (None, Vec::new(), Vec::new()),
    };
    let exposed = listeners.iter().filter(|l| l.listener.is_exposed()).count() as u64;
    let unapproved = listeners
        .iter()
        .filter(|l| l.approval == "unapproved" || l.approval == "expired")
        .count() as u64;
    let mut by_severity = BTreeMap::new();
    for finding in &findings {
        *by_severity.entry(finding.severity.clone()).or_insert(0) += 1;
    }
    Ok(Judged {
        summary: HostSummary {
            agent_id: agent.id,
            hostname: agent.hostname,
            status: agent.status.as_str().to_owned(),
            environment: agent.environment,
            enrolled_at: agent.enrolled_at,
            last_seen: agent.last_seen,
            exposed,
            unapproved,
            findings: by_severity,
        },
        taken_at,
        listeners,
        findings,
    })
}

pub(crate) fn decode_state(agent_id: &str, json: &str) -> Result<HostState, ApiError> {
    serde_json::from_str(json).map_err(|err| {
        ApiError::internal(format!(
            "agent {agent_id}: stored state does not parse: {err}"
        ))
    })
}

async fn hosts(State(state): Shared, headers: HeaderMap) -> Result<Json<HostList>, ApiError> {
    principal(&state, &headers).await?.require(Role::Viewer)?;
    let hosts = state
        .with_store(|store| {
            let approvals = store.approvals(false)?;
            let mut hosts = Vec::new();
            for agent in store.agents()? {
                let latest = match store.latest_state(&agent.id)? {
                    Some(row) => Some((row.taken_at, decode_state(&agent.id, &row.state)?)),
                    None => None,
                };
                hosts.push(summarise(agent, latest, &approvals)?.summary);
            }
            Ok(hosts)
        })
        .await?;
    Ok(Json(HostList {
        schema: SCHEMA.to_owned(),
        hosts,
    }))
}

async fn host(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<HostDetail>, ApiError> {
    principal(&state, &headers).await?.require(Role::Viewer)?;
    let detail = state
        .with_store(move |store| {
            let agent = store
                .agent(&id)?
                .ok_or_else(|| ApiError::not_found(format!("no host {id}")))?;
            let approvals = store.approvals(false)?;
            let latest = match store.latest_state(&agent.id)? {
                Some(row) => Some((row.taken_at, decode_state(&agent.id, &row.state)?)),
                None => None,
            };
            let judged = summarise(agent, latest, &approvals)?;
            Ok(HostDetail {
                schema: SCHEMA.to_owned(),
                host: judged.summary,
                state_taken_at: judged.taken_at,
                listeners: judged.listeners,
                findings: judged.findings,
            })
        })
        .await?;
    Ok(Json(detail))
}

fn decision(body: &[u8]) -> Result<Decision, ApiError> {
    let decision: Decision = serde_json::from_slice(body)
        .map_err(|err| ApiError::bad_request(format!("not a decision: {err}")))?;
    if decision.reason.trim().is_empty() {
        return Err(ApiError::bad_request("a reason is required"));
    }
    check_text("reason", &decision.reason, 4096)?;
    Ok(decision)
}

async fn set_agent_status(
    state: Arc<AppState>,
    headers: HeaderMap,
    id: String,
    body: Bytes,
    status: AgentStatus,
) -> Result<Json<serde_json::Value>, ApiError> {
    let who = principal(&state, &headers).await?;
    who.require(Role::Admin)?;
    let decision = decision(&body)?;
    let by = who.user.clone();
    let id2 = id.clone();
    state
        .with_store(move |store| {
            Ok(store.set_agent_status(
                &id2,
                status,
                &by,
                &decision.reason,
                OffsetDateTime::now_utc(),
            )?)
        })
        .await?;
    tracing::info!(agent = %id, by = %who.user, status = status.as_str(), "agent status changed");
    Ok(Json(
        serde_json::json!({"schema": SCHEMA, "agent_id": id, "status": status.as_str()}),
    ))
}

async fn accept_agent(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    set_agent_status(state, headers, id, body, AgentStatus::Accepted).await
}

async fn revoke_agent(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    set_agent_status(state, headers, id, body, AgentStatus::Revoked).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvironmentDoc {
    schema: String,
    environment: Option<String>,
}

async fn set_environment(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let who = principal(&state, &headers).await?;
    who.require(Role::Admin)?;
    let doc: EnvironmentDoc = serde_json::from_slice(&body)
        .map_err(|err| ApiError::bad_request(format!("not an environment document: {err}")))?;
    if doc.schema != SCHEMA {
        return Err(ApiError::bad_request(format!("schema must be {SCHEMA}")));
    }
    if let Some(name) = &doc.environment {
        check_text("environment", name, 255)?;
    }
    let by = who.user;
    state
        .with_store(move |store| {
            Ok(store.set_agent_environment(
                &id,
                doc.environment.as_deref(),
                &by,
                OffsetDateTime::now_utc(),
            )?)
        })
        .await?;
    Ok(Json(serde_json::json!({"schema": SCHEMA, "status": "ok"})))
}

fn approval_doc(row: &FleetApproval) -> ApprovalDoc {
    ApprovalDoc {
        id: row.id,
        scope: judge::scope_text(&row.scope),
        selector: row.selector.clone(),
        approved_by: row.approved_by.clone(),
        approved_at: row.approved_at,
        reason: row.reason.clone(),
        expires: row.expires,
        revoked_by: row.revoked.as_ref().map(|r| r.by.clone()),
        revoked_at: row.revoked.as_ref().map(|r| r.at),
        revoke_reason: row.revoked.as_ref().map(|r| r.reason.clone()),
    }
}

#[derive(Debug, Deserialize)]
struct ApprovalsQuery {
    #[serde(default)]
    revoked: bool,
}

async fn list_approvals(
    State(state): Shared,
    headers: HeaderMap,
    Query(query): Query<ApprovalsQuery>,
) -> Result<Json<ApprovalList>, ApiError> {
    principal(&state, &headers).await?.require(Role::Viewer)?;
    let rows = state
        .with_store(move |store| Ok(store.approvals(query.revoked)?))
        .await?;
    Ok(Json(ApprovalList {
        schema: SCHEMA.to_owned(),
        approvals: rows.iter().map(approval_doc).collect(),
    }))
}

pub(crate) fn parse_approval_scope(text: &str) -> Result<ApprovalScope, ApiError> {
    match perimeter_api::parse_scope(text) {
        Some(("fleet", None)) => Ok(ApprovalScope::Fleet),
        Some(("environment", Some(name))) => Ok(ApprovalScope::Environment(name.to_owned())),
        Some(("host", Some(id))) => Ok(ApprovalScope::Host(id.to_owned())),
        _ => Err(ApiError::bad_request(format!(
            "scope `{}` is not fleet, environment:NAME or host:AGENT_ID",
            text.chars().take(80).collect::<String>()
        ))),
    }
}

/// The approvals file's keys of an approval request, checked as the file's
/// parser checks them.
fn new_approval(
    doc: &NewApprovalDoc,
    by: &str,
    at: OffsetDateTime,
) -> Result<NewApproval, ApiError> {
    let protocol = Protocol::parse(&doc.protocol)
        .ok_or_else(|| ApiError::bad_request("protocol must be tcp or udp"))?;
    if doc.port == 0 {
        return Err(ApiError::bad_request("port must be 1-65535"));
    }
    let bind = match (&doc.address, &doc.bind_scope) {
        (Some(address), None) => Bind::Address(
            address
                .parse()
                .map_err(|_| ApiError::bad_request("address is not an IP address"))?,
        ),
        (None, Some(scope)) => match Scope::parse(scope) {
            Some(Scope::Loopback) | None => {
                return Err(ApiError::bad_request(
                    "bind_scope must be wildcard, public, private or link-local",
                ));
            }
            Some(scope) => Bind::Scope(scope),
        },
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of address and bind_scope",
            ));
        }
    };
    let owner = if doc.unowned {
        if doc.exe.is_some() || doc.package.is_some() || doc.user.is_some() {
            return Err(ApiError::bad_request(
                "an unowned approval names no exe, package or user",
            ));
        }
        OwnerKey::Unowned
    } else {
        if doc.exe.is_none() && doc.package.is_none() {
            return Err(ApiError::bad_request(
                "name the exe or the package (or set unowned for a kernel socket)",
            ));
        }
        OwnerKey::Process {
            exe: doc.exe.clone(),
            package: doc.package.clone(),
            user: doc.user.clone(),
        }
    };
    let reason = doc.reason.trim();
    if reason.is_empty() {
        return Err(ApiError::bad_request("a reason is required"));
    }
    for (field, value) in [
        ("netns", doc.netns.as_deref()),
        ("exe", doc.exe.as_deref()),
        ("package", doc.package.as_deref()),
        ("user", doc.user.as_deref()),
        ("reason", Some(reason)),
    ] {
        check_text(field, value.unwrap_or(""), 4096)?;
    }
    let expires = match &doc.expires {
        None => None,
        Some(text) => Some(parse_date(text, "expires")?),
    };
    Ok(NewApproval {
        netns: doc.netns.clone().unwrap_or_else(|| "host".to_owned()),
        protocol,
        bind,
        port: doc.port,
        owner,
        approved_by: by.to_owned(),
        approved_at: at.date(),
        reason: reason.to_owned(),
        expires,
    })
}

/// The stored approval of an approval request, checked: its scope, and its
/// keys as the approvals file's parser checks them. The API and the dashboard
/// both add approvals through this.
pub(crate) fn fleet_approval(
    doc: &NewApprovalDoc,
    by: &str,
    at: OffsetDateTime,
) -> Result<NewFleetApproval, ApiError> {
    let scope = parse_approval_scope(&doc.scope)?;
    let entry = new_approval(doc, by, at)?;
    Ok(NewFleetApproval {
        scope,
        selector: selector_toml(&entry),
        approved_by: by.to_owned(),
        approved_at: at,
        reason: entry.reason.clone(),
        expires: entry.expires.map(|date| date.midnight().assume_utc()),
    })
}

async fn add_approval(
    State(state): Shared,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<ApprovalDoc>), ApiError> {
    let who = principal(&state, &headers).await?;
    who.require(Role::Approver)?;
    let doc: NewApprovalDoc = serde_json::from_slice(&body)
        .map_err(|err| ApiError::bad_request(format!("not an approval: {err}")))?;
    if doc.schema != SCHEMA {
        return Err(ApiError::bad_request(format!("schema must be {SCHEMA}")));
    }
    let now = OffsetDateTime::now_utc();
    // An import keeps the file's approver and date; only an administrator
    // may say who approved, and the trail says who imported.
    let (approved_by, approved_at) = match (&doc.recorded_by, &doc.recorded_at) {
        (None, None) => (who.user.clone(), now),
        (Some(by), Some(at)) => {
            who.require(Role::Admin)?;
            check_text("recorded_by", by, 255)?;
            if by.trim().is_empty() {
                return Err(ApiError::bad_request("recorded_by must not be empty"));
            }
            let date = parse_date(at, "recorded_at")?;
            (by.clone(), date.midnight().assume_utc())
        }
        _ => {
            return Err(ApiError::bad_request(
                "recorded_by and recorded_at go together",
            ));
        }
    };
    let new = fleet_approval(&doc, &approved_by, approved_at)?;
    let imported = doc.recorded_by.is_some();
    let importer = who.user.clone();
    let row = state
        .with_store(move |store| {
            let row = store_approval(store, &new)?;
            if imported {
                store.append_trail(&perimeter_store::fleet::NewTrailEntry {
                    at: OffsetDateTime::now_utc(),
                    actor: importer,
                    action: "approval.import".into(),
                    subject: row.id.to_string(),
                    reason: format!("approved by {} in an approvals file", row.approved_by),
                })?;
            }
            Ok(row)
        })
        .await?;
    tracing::info!(id = row.id, by = %who.user, scope = %judge::scope_text(&row.scope), "approval added");
    Ok((StatusCode::CREATED, Json(approval_doc(&row))))
}

/// Stores an approval unless an active one of the same scope approves
/// exactly the same keys (a conflict, naming it): the API and the dashboard
/// both add approvals through this.
pub(crate) fn store_approval(
    store: &mut dyn FleetStore,
    new: &NewFleetApproval,
) -> Result<FleetApproval, ApiError> {
    let active = store.approvals(false)?;
    if let Some(same) = active
        .iter()
        .find(|row| row.scope == new.scope && row.selector == new.selector)
    {
        return Err(ApiError::conflict(
            "conflict",
            format!(
                "approval {} already approves this for {}",
                same.id,
                judge::scope_text(&same.scope)
            ),
        ));
    }
    Ok(store.add_approval(new)?)
}

fn parse_date(text: &str, field: &str) -> Result<time::Date, ApiError> {
    time::Date::parse(
        text,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .map_err(|_| ApiError::bad_request(format!("{field} must be a date, YYYY-MM-DD")))
}

async fn revoke_approval(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let who = principal(&state, &headers).await?;
    who.require(Role::Approver)?;
    let decision = decision(&body)?;
    let by = who.user.clone();
    state
        .with_store(move |store| {
            Ok(store.revoke_approval(id, &by, &decision.reason, OffsetDateTime::now_utc())?)
        })
        .await?;
    tracing::info!(id, by = %who.user, "approval revoked");
    Ok(Json(
        serde_json::json!({"schema": SCHEMA, "id": id, "status": "revoked"}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsQuery {
    limit: Option<usize>,
}

/// The monitor's open conditions and latest alerts.
async fn list_alerts(
    State(state): Shared,
    headers: HeaderMap,
    Query(query): Query<AlertsQuery>,
) -> Result<Json<AlertList>, ApiError> {
    principal(&state, &headers).await?.require(Role::Viewer)?;
    Ok(Json(alerts::list(&state, query.limit.unwrap_or(50)).await?))
}

/// A person acknowledges one open condition (approvers and admins).
async fn ack_condition(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Json<ConditionDoc>, ApiError> {
    let who = principal(&state, &headers).await?;
    who.require(Role::Approver)?;
    let request: AckRequest = serde_json::from_slice(&body)
        .map_err(|err| ApiError::bad_request(format!("not an acknowledgement: {err}")))?;
    if request.reason.trim().is_empty() {
        return Err(ApiError::bad_request("a reason is required"));
    }
    check_text("reason", &request.reason, 4096)?;
    Ok(Json(
        alerts::acknowledge(&state, id, &who.user, request.reason.trim(), request.until).await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlQuery {
    /// The approvals that cover this host (fleet, its environment, its own).
    host: Option<String>,
    /// Or the approvals of exactly one scope (for export).
    scope: Option<String>,
}

/// The approvals as an approvals file: what `perimeter check --server` gates
/// with, and what `approvals export` writes.
async fn approvals_toml(
    State(state): Shared,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Query(query): Query<TomlQuery>,
) -> Result<Response, ApiError> {
    // A person's token, or the agent asking for its own host's file.
    let agent = if headers.contains_key(AGENT_HEADER) {
        let agent = signed_agent(&state, &headers, "GET", &uri, b"").await?;
        if agent.status != AgentStatus::Accepted {
            return Err(not_accepted(&agent));
        }
        Some(agent)
    } else {
        principal(&state, &headers).await?.require(Role::Viewer)?;
        None
    };
    let text = state
        .with_store(move |store| {
            let rows = store.approvals(false)?;
            match (query.host, query.scope) {
                (Some(host), None) => {
                    if let Some(agent) = &agent
                        && agent.id != host
                    {
                        return Err(ApiError::forbidden("an agent may only read its own host's approvals"));
                    }
                    let agent = store
                        .agent(&host)?
                        .ok_or_else(|| ApiError::not_found(format!("no host {host}")))?;
                    let covering = judge::covering(&rows, &agent);
                    let header = format!(
                        "# The approvals perimeter server holds for host {} ({}): fleet-wide,\n# environment {} and this host's own. Generated; change them on the server.\n",
                        agent.id,
                        agent.hostname.replace(['\n', '\r'], " "),
                        agent.environment.as_deref().unwrap_or("(none)"),
                    );
                    judge::render(&covering, &header).map_err(ApiError::internal)
                }
                (None, Some(scope)) if agent.is_none() => {
                    let scope = parse_approval_scope(&scope)?;
                    let chosen: Vec<&FleetApproval> = rows.iter().filter(|row| row.scope == scope).collect();
                    let header = format!(
                        "# The approvals perimeter server holds for {}.\n",
                        judge::scope_text(&scope)
                    );
                    judge::render(&chosen, &header).map_err(ApiError::internal)
                }
                _ => Err(ApiError::bad_request("give host=AGENT_ID or scope=SCOPE")),
            }
        })
        .await?;
    Ok((
        [(header::CONTENT_TYPE, "application/toml; charset=utf-8")],
        text,
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
struct TrailQuery {
    limit: Option<usize>,
}

async fn trail(
    State(state): Shared,
    headers: HeaderMap,
    Query(query): Query<TrailQuery>,
) -> Result<Json<TrailList>, ApiError> {
    principal(&state, &headers).await?.require(Role::Viewer)?;
    let limit = query.limit.unwrap_or(100).min(10_000);
    let entries = state
        .with_store(move |store| Ok(store.trail(limit)?))
        .await?;
    Ok(Json(TrailList {
        schema: SCHEMA.to_owned(),
        entries: entries
            .into_iter()
            .map(|entry| TrailDoc {
                id: entry.id,
                at: entry.at,
                actor: entry.actor,
                action: entry.action,
                subject: entry.subject,
                reason: entry.reason,
            })
            .collect(),
    }))
}
