//! Scan jobs and the scanner nodes that lease their parts (issue 11).
//!
//! People with the approver role submit a scan cut in N parts; scanner nodes
//! (`perimeter scanner --server URL`, authenticated by a token of the scanner
//! scope, which may do nothing else) lease one part at a time, renew the
//! lease while they scan, and send the part's run under it. A node that
//! dies stops renewing: its lease expires and another node takes the part,
//! with a new lease, so the dead node's run, should it come back, is refused
//! (`409 lease_lost`). Runs are checked before they are stored: a
//! `perimeter.scan-run/1` document within bounds, complete, of the job's seed
//! and of the leased part.
//!
//! Leasing needs PostgreSQL (`SKIP LOCKED` lets any number of nodes lease at
//! once). A server on SQLite runs each job itself, as one part, on its own
//! scanner (`perimeter server` leases from its own store), and says so in
//! every job it returns.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use perimeter_api::{
    FinishRequest, LeaseDoc, LeaseRef, LeaseRequest, LeaseStatus, NewScanJobDoc, SCHEMA,
    ScanJobDoc, ScanJobList, ShardDoc, ShardRunDoc, ShardRunList,
};
use perimeter_store::fleet::{
    Lease, LeaseCheck, NewScanJob, Role, ScanJobRow, ShardRow, TokenScope,
};
use perimeter_store::{RunLimits, SHARD_OPTION, decode_run};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::AppState;
use crate::error::ApiError;
use crate::routes::{check_text, principal, token_principal};

/// The parts a job may be cut in at most.
pub const MAX_SHARDS: u32 = 4_096;
/// A lease's time when the job names none.
pub const DEFAULT_LEASE_SECONDS: u32 = 120;
/// The shortest and longest lease a job may ask for.
const LEASE_SECONDS: std::ops::RangeInclusive<u32> = 2..=86_400;
/// `perimeter scan` arguments a job may carry at most.
const MAX_SCAN_ARGS: usize = 256;
/// The longest node or vantage point name.
const MAX_NAME: usize = 128;
/// The jobs listed at most.
const MAX_LISTED: usize = 1_000;

/// What `runs_on` says of a server on SQLite.
const LOCAL_SCANNER: &str = "the server's own scanner, as one part: this server keeps its state in \
     SQLite (scanner nodes lease parts from a server on PostgreSQL)";
const NODES: &str = "scanner nodes";

/// The options a job's arguments may not carry: the job sets them, or they
/// say where a local run writes.
const RESERVED: &[&str] = &[
    "--shard",
    "--seed",
    "--db",
    "--no-store",
    "--xml-out",
    "-X",
    "--format",
];

fn local(state: &AppState) -> bool {
    state.backend == "sqlite"
}

fn runs_on(local: bool) -> String {
    if local { LOCAL_SCANNER } else { NODES }.to_owned()
}

pub(crate) fn job_doc(row: &ScanJobRow, parts: &[ShardRow], local: bool) -> ScanJobDoc {
    ScanJobDoc {
        id: row.id,
        created_by: row.created_by.clone(),
        created_at: row.created_at,
        scan_args: row.scan_args.clone(),
        seed: row.seed,
        shards: row.shards,
        vantage: row.vantage.clone(),
        lease_seconds: row.lease_seconds,
        done: row.done,
        leased: row.leased,
        complete: row.is_complete(),
        runs_on: runs_on(local),
        parts: parts
            .iter()
            .map(|part| ShardDoc {
                index: part.index,
                state: part.state.as_str().to_owned(),
                node: part.node.clone(),
                leased_at: part.leased_at,
                lease_expires: part.lease_expires,
                attempts: part.attempts,
                finished_at: part.finished_at,
            })
            .collect(),
    }
}

/// A new lease's token: 128 random bits in hex.
pub fn new_lease_token() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    check_text(field, name, MAX_NAME)?;
    if name.trim().is_empty() || name.chars().any(char::is_whitespace) {
        return Err(ApiError::bad_request(format!(
            "{field} must be a non-empty name without spaces"
        )));
    }
    Ok(())
}

/// A new job (approvers): checked, stored, returned with its parts.
pub(crate) async fn submit(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<ScanJobDoc>), ApiError> {
    let who = principal(&state, &headers).await?;
    who.require(Role::Approver)?;
    let doc: NewScanJobDoc = serde_json::from_slice(&body)
        .map_err(|err| ApiError::bad_request(format!("not a scan job: {err}")))?;
    if doc.schema != SCHEMA {
        return Err(ApiError::bad_request(format!("schema must be {SCHEMA}")));
    }
    if doc.scan_args.is_empty() || doc.scan_args.len() > MAX_SCAN_ARGS {
        return Err(ApiError::bad_request(format!(
            "scan_args must hold between 1 and {MAX_SCAN_ARGS} arguments (the targets at least)"
        )));
    }
    for arg in &doc.scan_args {
        check_text("a scan argument", arg, state.config.limits.max_string)?;
        let option = arg.split_once('=').map_or(arg.as_str(), |(name, _)| name);
        if RESERVED.contains(&option) {
            return Err(ApiError::bad_request(format!(
                "scan_args must not carry {option}: the job sets the shard and seed, and a node stores nothing locally"
            )));
        }
    }
    if !(1..=MAX_SHARDS).contains(&doc.shards) {
        return Err(ApiError::bad_request(format!(
            "shards must be between 1 and {MAX_SHARDS}"
        )));
    }
    let lease_seconds = doc.lease_seconds.unwrap_or(DEFAULT_LEASE_SECONDS);
    if !LEASE_SECONDS.contains(&lease_seconds) {
        return Err(ApiError::bad_request(format!(
            "lease_seconds must be between {} and {}",
            LEASE_SECONDS.start(),
            LEASE_SECONDS.end()
        )));
    }
    if let Some(vantage) = &doc.vantage {
        check_name("vantage", vantage)?;
    }
    let local = local(&state);
    let job = NewScanJob {
        created_by: who.user.clone(),
        created_at: OffsetDateTime::now_utc(),
        scan_args: doc.scan_args,
        seed: doc.seed.unwrap_or_else(rand::random),
        // The server's own scanner runs the whole scan, from where it is.
        shards: if local { 1 } else { doc.shards },
        vantage: if local { None } else { doc.vantage },
        lease_seconds,
    };
    let row = state
        .with_store(move |store| Ok(store.add_scan_job(&job)?))
        .await?;
    tracing::info!(id = row.id, by = %who.user, shards = row.shards, "scan job submitted");
    Ok((StatusCode::CREATED, Json(job_doc(&row, &[], local))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    limit: Option<usize>,
}

pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Json<ScanJobList>, ApiError> {
    principal(&state, &headers).await?.require(Role::Viewer)?;
    let limit = query.limit.unwrap_or(100).min(MAX_LISTED);
    let local = local(&state);
    let rows = state
        .with_store(move |store| Ok(store.scan_jobs(limit)?))
        .await?;
    Ok(Json(ScanJobList {
        schema: SCHEMA.to_owned(),
        jobs: rows.iter().map(|row| job_doc(row, &[], local)).collect(),
    }))
}

async fn load(state: &Arc<AppState>, id: i64) -> Result<(ScanJobRow, Vec<ShardRow>), ApiError> {
    state
        .with_store(move |store| Ok(store.scan_job(id)?))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no scan job {id}")))
}

pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Json<ScanJobDoc>, ApiError> {
    principal(&state, &headers).await?.require(Role::Viewer)?;
    let (row, parts) = load(&state, id).await?;
    Ok(Json(job_doc(&row, &parts, local(&state))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunsQuery {
    /// Only this part's run (a job's runs together may be larger than one
    /// answer; a client fetches them part by part).
    part: Option<u32>,
}

/// The runs of a job's done parts, to merge (`perimeter scans merge
/// --server`).
pub(crate) async fn runs(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(query): Query<RunsQuery>,
) -> Result<Json<ShardRunList>, ApiError> {
    principal(&state, &headers).await?.require(Role::Viewer)?;
    let (row, parts) = load(&state, id).await?;
    let stored = state
        .with_store(move |store| Ok(store.shard_runs(id)?))
        .await?;
    let runs = stored
        .into_iter()
        .filter(|(index, _)| query.part.is_none_or(|part| part == *index))
        .map(|(index, text)| {
            let run = serde_json::from_str(&text).map_err(|err| {
                ApiError::internal(format!("scan job {id} part {index}: stored run: {err}"))
            })?;
            let node = parts
                .iter()
                .find(|part| part.index == index)
                .and_then(|part| part.node.clone());
            Ok(ShardRunDoc { index, node, run })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(Json(ShardRunList {
        schema: SCHEMA.to_owned(),
        job: job_doc(&row, &[], local(&state)),
        runs,
    }))
}

/// The scanner node behind a bearer token of the scanner scope.
async fn scanner(state: &Arc<AppState>, headers: &HeaderMap) -> Result<String, ApiError> {
    let (who, scope) = token_principal(state, headers).await?;
    if scope != TokenScope::Scanner {
        return Err(ApiError::forbidden(format!(
            "leases are for scanner nodes: {} needs a token made with `perimeter server token add --scanner`",
            who.user
        )));
    }
    if local(state) {
        return Err(ApiError::conflict(
            "local_scanner",
            "this server keeps its state in SQLite and runs its scan jobs on its own scanner; \
             scanner nodes lease parts from a server on PostgreSQL",
        ));
    }
    Ok(who.user)
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes, what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|err| ApiError::bad_request(format!("not {what}: {err}")))
}

/// A node asks for a part: `200` with the lease, `204` when there is
/// nothing to scan.
pub(crate) async fn lease(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let user = scanner(&state, &headers).await?;
    let request: LeaseRequest = parse(&body, "a lease request")?;
    if request.schema != SCHEMA {
        return Err(ApiError::bad_request(format!("schema must be {SCHEMA}")));
    }
    check_name("node", &request.node)?;
    if let Some(vantage) = &request.vantage {
        check_name("vantage", vantage)?;
    }
    let token = new_lease_token();
    let node = request.node.clone();
    let leased: Option<Lease> = state
        .with_store(move |store| {
            Ok(store.lease_shard(
                &node,
                request.vantage.as_deref(),
                &token,
                OffsetDateTime::now_utc(),
            )?)
        })
        .await?;
    let Some(lease) = leased else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    tracing::info!(
        job = lease.job.id,
        part = lease.index,
        attempt = lease.attempt,
        node = %request.node,
        user = %user,
        "scan part leased"
    );
    Ok(Json(LeaseDoc {
        schema: SCHEMA.to_owned(),
        expires: lease.expires,
        index: lease.index,
        attempt: lease.attempt,
        job: job_doc(&lease.job, &[], false),
        lease: lease.token,
    })
    .into_response())
}

fn lost(why: String) -> ApiError {
    ApiError::conflict("lease_lost", why)
}

fn status(check: LeaseCheck) -> Result<Json<LeaseStatus>, ApiError> {
    match check {
        LeaseCheck::Held {
            job_id,
            index,
            expires,
        } => Ok(Json(LeaseStatus {
            schema: SCHEMA.to_owned(),
            job_id,
            index,
            expires,
        })),
        LeaseCheck::Lost(why) => Err(lost(why)),
    }
}

fn check_lease_text(lease: &str) -> Result<(), ApiError> {
    if lease.len() != 32 || !lease.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request("lease is not a lease token"));
    }
    Ok(())
}

pub(crate) async fn renew(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<LeaseStatus>, ApiError> {
    scanner(&state, &headers).await?;
    let request: LeaseRef = parse(&body, "a lease")?;
    if request.schema != SCHEMA {
        return Err(ApiError::bad_request(format!("schema must be {SCHEMA}")));
    }
    check_lease_text(&request.lease)?;
    let check = state
        .with_store(move |store| Ok(store.renew_lease(&request.lease, OffsetDateTime::now_utc())?))
        .await?;
    status(check)
}

/// A node sends a part's run under its lease: checked, then stored once.
pub(crate) async fn finish(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<LeaseStatus>, ApiError> {
    let user = scanner(&state, &headers).await?;
    let request: FinishRequest = parse(&body, "a part's run")?;
    if request.schema != SCHEMA {
        return Err(ApiError::bad_request(format!("schema must be {SCHEMA}")));
    }
    check_lease_text(&request.lease)?;
    let text = request.run.to_string();
    let limits = RunLimits {
        max_string: state.config.limits.max_string,
        ..RunLimits::default()
    };
    let (info, results) = decode_run(&text, limits)
        .map_err(|why| ApiError::bad_request(format!("the run: {why}")))?;
    if !info.complete {
        return Err(ApiError::bad_request(
            "the run is incomplete: send a part only once it is scanned whole",
        ));
    }
    let lease = request.lease;
    let stored = state
        .with_store(move |store| {
            let now = OffsetDateTime::now_utc();
            // Renewing first both checks the lease and keeps it from
            // expiring while the run is checked against its job.
            let (job_id, index) = match store.renew_lease(&lease, now)? {
                LeaseCheck::Held { job_id, index, .. } => (job_id, index),
                LeaseCheck::Lost(why) => return Ok(Err(lost(why))),
            };
            let Some((job, _)) = store.scan_job(job_id)? else {
                return Ok(Err(lost(format!("scan job {job_id} is gone"))));
            };
            let part = format!("{index}/{}", job.shards);
            if info.seed != job.seed || info.options.get(SHARD_OPTION) != Some(&part) {
                return Ok(Err(ApiError::bad_request(format!(
                    "the run is not part {part} of seed {} (it says part {} of seed {})",
                    job.seed,
                    info.options
                        .get(SHARD_OPTION)
                        .map_or("none", String::as_str),
                    info.seed
                ))));
            }
            Ok(Ok((store.finish_shard(&lease, now, &text)?, job_id, index)))
        })
        .await??;
    let (check, job_id, index) = stored;
    if matches!(check, LeaseCheck::Held { .. }) {
        tracing::info!(job = job_id, part = index, results = results.len(), user = %user, "scan part done");
    }
    status(check)
}
