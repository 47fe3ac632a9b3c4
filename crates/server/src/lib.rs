//! `perimeter server`: one place for a fleet's listeners, approvals and
//! changes. An HTTPS API (`perimeter.api/1`, rustls, HTTP/1.1) over a
//! [`FleetStore`] (embedded SQLite by default, PostgreSQL for fleets).
//!
//! - Agents enrol once with the enrolment secret and are known from then on
//!   by the key pair they generated; every request they send is signed, and
//!   their reports form a chain (sequence numbers) the store checks, so a
//!   replay is a duplicate, a lost acknowledgement is resent safely, and two
//!   machines sharing one key (a cloned VM) are told apart and refused.
//! - People and scripts use API tokens with a role (viewer, approver, admin).
//! - Approvals are scoped (fleet, environment, host) and judged with the same
//!   rule as the local `perimeter check`; `approvals.toml` gives the gate its
//!   file.
//! - Everything a client sends is bounded: body size, listeners and events per
//!   report, string lengths, reports per agent per minute; every request has a
//!   deadline; connections are capped.
//! - What the store keeps is bounded too: host states that stopped being
//!   current longer ago than [`Limits::keep_history`] are pruned in small
//!   batches (each host's latest state always stays; events and the trail
//!   are an audit trail, never pruned).

mod alerts;
mod auth;
mod error;
mod judge;
mod routes;
mod scan_jobs;
mod tls;
mod web;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use perimeter_store::fleet::FleetStore;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

pub use auth::{
    NewToken, PasswordError, TOKEN_PREFIX, hash_password, new_token, token_hash, verify_password,
};
pub use scan_jobs::{DEFAULT_LEASE_SECONDS, MAX_SHARDS, new_lease_token};
pub use tls::{ServerTls, TlsError, TlsSource};

/// Bounds on what clients may send, and on how long the server keeps the
/// states they sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The largest request body (a full report of a host with 20,000
    /// listeners is about 5 MiB).
    pub max_body_bytes: usize,
    pub max_listeners: usize,
    pub max_events: usize,
    pub max_findings: usize,
    /// The longest string in any field.
    pub max_string: usize,
    /// Reports one agent may send per minute.
    pub reports_per_minute: u32,
    /// How far an agent's clock may be from the server's.
    pub max_clock_skew: Duration,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// The deadline of one request, body included.
    pub request_timeout: Duration,
    /// How long a host state is kept after a newer one replaced it (each
    /// host's latest state is kept for good), so the host's history can be
    /// read back this far.
    pub keep_history: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 8 * 1024 * 1024,
            max_listeners: 20_000,
            max_events: 1_000,
            max_findings: 5_000,
            max_string: 4_096,
            reports_per_minute: 30,
            max_clock_skew: Duration::from_secs(300),
            max_connections: 1_024,
            request_timeout: Duration::from_secs(30),
            keep_history: DEFAULT_KEEP_HISTORY,
        }
    }
}

/// The default of [`Limits::keep_history`]: 30 days.
pub const DEFAULT_KEEP_HISTORY: Duration = Duration::from_secs(30 * 24 * 3600);

/// How often the server prunes old states; the first pass runs at start.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// States deleted per transaction while pruning: small, so a report waits at
/// most one batch for SQLite's write lock.
const PRUNE_BATCH: usize = 500;

/// The pause between two batches, for the reports queued behind one.
const PRUNE_PAUSE: Duration = Duration::from_millis(20);

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The enrolment secret agents present; `None` closes enrolment.
    pub enrol_secret: Option<String>,
    /// New agents wait for an administrator's acceptance.
    pub require_acceptance: bool,
    pub limits: Limits,
    /// The history database of the monitor running inside the server
    /// (`--monitor`): its alerts and conditions are served, and people
    /// acknowledge conditions, through the API and the dashboard.
    pub monitor_history: Option<std::path::PathBuf>,
}

/// One accepted agent's host as the fleet job of a monitor inside the server
/// sees it: its latest state, each listener judged by the approvals that
/// cover it.
#[derive(Debug, Clone)]
pub struct JudgedHost {
    pub agent: perimeter_store::fleet::AgentRow,
    pub listeners: Vec<perimeter_api::JudgedListener>,
    pub findings: Vec<perimeter_api::FindingDoc>,
}

/// Every accepted agent's host, judged as the API judges it.
pub fn judge_fleet(store: &dyn FleetStore) -> Result<Vec<JudgedHost>, String> {
    let approvals = store.approvals(false).map_err(|err| err.to_string())?;
    let mut hosts = Vec::new();
    for agent in store.agents().map_err(|err| err.to_string())? {
        if agent.status != perimeter_store::fleet::AgentStatus::Accepted {
            continue;
        }
        let latest = match store
            .latest_state(&agent.id)
            .map_err(|err| err.to_string())?
        {
            Some(row) => Some((
                row.taken_at,
                serde_json::from_str::<perimeter_api::HostState>(&row.state)
                    .map_err(|err| format!("agent {}: stored state: {err}", agent.id))?,
            )),
            None => None,
        };
        let judged =
            routes::summarise(agent.clone(), latest, &approvals).map_err(|err| err.message)?;
        hosts.push(JudgedHost {
            agent,
            listeners: judged.listeners,
            findings: judged.findings,
        });
    }
    Ok(hosts)
}

/// The most events one fleet run reads; beyond, the rest of the window is
/// left (and said in the log): a flood must not stall the monitor.
const MAX_WINDOW_EVENTS: usize = 100_000;

/// The suspicious execs (`exec` events) the agents told of, received within
/// `window`, per agent id, oldest first: what the monitor's fleet job turns
/// into alerts.
pub fn suspicious_execs(
    store: &dyn FleetStore,
    window: std::ops::Range<time::OffsetDateTime>,
) -> Result<HashMap<String, Vec<perimeter_api::Event>>, String> {
    let rows = store
        .events_received(window, MAX_WINDOW_EVENTS)
        .map_err(|err| err.to_string())?;
    if rows.len() == MAX_WINDOW_EVENTS {
        tracing::warn!(
            "more than {MAX_WINDOW_EVENTS} events since the last fleet run: the rest are not alerted"
        );
    }
    let mut execs: HashMap<String, Vec<perimeter_api::Event>> = HashMap::new();
    for row in rows {
        // Every event was checked and serialised by the server itself; one
        // that does not parse (a newer server's?) is skipped, not fatal.
        match serde_json::from_str::<perimeter_api::Event>(&row.event) {
            Ok(event) if event.kind == "exec" => {
                execs.entry(row.agent_id).or_default().push(event);
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(id = row.id, "a stored event does not parse: {err}"),
        }
    }
    Ok(execs)
}

/// What the handlers share.
pub(crate) struct AppState {
    pub(crate) store: Mutex<Box<dyn FleetStore>>,
    /// The store's backend ("sqlite" or "postgresql"), read once: asking the
    /// store would wait for its lock behind whatever call holds it.
    pub(crate) backend: &'static str,
    pub(crate) config: ServerConfig,
    /// Reports per agent in the current minute.
    pub(crate) rate: Mutex<HashMap<String, (Instant, u32)>>,
}

impl AppState {
    pub(crate) fn new(store: Box<dyn FleetStore>, config: ServerConfig) -> AppState {
        AppState {
            backend: store.backend(),
            store: Mutex::new(store),
            config,
            rate: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `f` on the store in a blocking thread: on a handle of its own
    /// when the backend has a pool of connections (PostgreSQL), so calls run
    /// side by side and the lock is held only to take the handle; else on
    /// the one store under the lock, one call at a time (SQLite: a pool of
    /// one).
    pub(crate) async fn with_store<T, F>(self: &Arc<Self>, f: F) -> Result<T, error::ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn FleetStore) -> Result<T, error::ApiError> + Send + 'static,
    {
        let state = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut store = state
                .store
                .lock()
                .map_err(|_| error::ApiError::internal("the store's lock is poisoned"))?;
            if let Some(mut handle) = store.concurrent_handle() {
                drop(store);
                return f(handle.as_mut());
            }
            f(store.as_mut())
        })
        .await
        .map_err(|err| error::ApiError::internal(format!("a store task failed: {err}")))?
    }
}

/// Prunes old states now and every [`PRUNE_EVERY`], for as long as the server
/// runs; a pass that fails is logged and tried again at the next.
async fn prune_history(state: Arc<AppState>) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let keep = time::Duration::try_from(state.config.limits.keep_history)
            .unwrap_or(time::Duration::MAX);
        let Some(before) = time::OffsetDateTime::now_utc().checked_sub(keep) else {
            continue;
        };
        match prune_states_before(&state, before, PRUNE_BATCH, PRUNE_PAUSE).await {
            Ok(0) => {}
            Ok(n_deleted) => tracing::info!(
                "pruned {n_deleted} host states replaced before {before} (--keep-history)"
            ),
            Err(err) => tracing::warn!("pruning old host states: {}", err.message),
        }
    }
}

/// Deletes every state due before `before`, `batch` per transaction with a
/// pause between; how many were deleted.
async fn prune_states_before(
    state: &Arc<AppState>,
    before: time::OffsetDateTime,
    batch: usize,
    pause: Duration,
) -> Result<usize, error::ApiError> {
    let mut n_deleted = 0;
    loop {
        let n_batch = state
            .with_store(move |store| Ok(store.prune_states(before, batch)?))
            .await?;
        n_deleted += n_batch;
        if n_batch < batch {
            return Ok(n_deleted);
        }
        tokio::time::sleep(pause).await;
    }
}

/// Serves the API on `listener` until `shutdown` resolves; connections in
/// flight then finish (each within the request deadline).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    store: Box<dyn FleetStore>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let limits = config.limits.clone();
    let state = Arc::new(AppState::new(store, config));
    let pruning = tokio::spawn(prune_history(Arc::clone(&state)));
    let app = routes::router(Arc::clone(&state), &limits).merge(web::router(state));
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: wait a little rather than spin.
                    tracing::warn!("accept: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Answers are small and written once: without this, Nagle holds an
        // answer behind the TLS session tickets until the client's delayed
        // ACK, 40 ms later on Linux (measured by bench/server-ingest.sh).
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!("{peer}: TCP_NODELAY: {err}");
        }
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls_stream = match tokio::time::timeout(
                Duration::from_secs(10),
                acceptor.accept(stream),
            )
            .await
            {
                Ok(Ok(tls_stream)) => tls_stream,
                Ok(Err(err)) => {
                    tracing::debug!("{peer}: TLS handshake failed: {err}");
                    return;
                }
                Err(_) => {
                    tracing::debug!("{peer}: TLS handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
                // The dashboard limits login attempts per source address.
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                app.clone().oneshot(request)
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(tls_stream), service);
            if let Err(err) = connection.await {
                tracing::debug!("{peer}: {err}");
            }
        });
    }
    pruning.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use perimeter_store::fleet::{AgentStatus, NewAgent, NewReport, SqliteFleet};
    use time::OffsetDateTime;
    use time::macros::datetime;

    use super::*;

    const AT: OffsetDateTime = datetime!(2026-05-20 09:00 UTC);

    fn app_state(store: SqliteFleet) -> Arc<AppState> {
        Arc::new(AppState::new(
            Box::new(store),
            ServerConfig {
                listen: "127.0.0.1:0".parse().expect("address"),
                enrol_secret: None,
                require_acceptance: false,
                limits: Limits::default(),
                monitor_history: None,
            },
        ))
    }

    /// One pass deletes every state due, batch after batch, and keeps the
    /// latest.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pruning_pass_deletes_every_due_state_in_batches() {
        let mut store = SqliteFleet::open_in_memory().expect("store");
        let agent_id = "ag_01".to_owned();
        store
            .enrol_agent(&NewAgent {
                id: agent_id.clone(),
                public_key: vec![1; 32],
                hostname: "host".to_owned(),
                status: AgentStatus::Accepted,
                enrolled_at: AT,
            })
            .expect("enrol");
        for seq in 1..=7_u64 {
            let received_at = AT + time::Duration::seconds(seq as i64);
            store
                .record_report(&NewReport {
                    agent_id: agent_id.clone(),
                    seq,
                    digest: format!("d{seq}"),
                    hostname: "host".to_owned(),
                    taken_at: received_at,
                    received_at,
                    state: Some(format!("{{\"seq\":{seq}}}")),
                    events: Vec::new(),
                })
                .expect("report");
        }
        let state = app_state(store);
        let before = AT + time::Duration::minutes(10);
        let n_deleted = prune_states_before(&state, before, 2, Duration::ZERO)
            .await
            .expect("prune");
        assert_eq!(n_deleted, 6);
        let again = prune_states_before(&state, before, 2, Duration::ZERO)
            .await
            .expect("prune");
        assert_eq!(again, 0);
        let states = state
            .with_store(move |store| Ok(store.states(&agent_id, 100)?))
            .await
            .expect("states");
        assert_eq!(states.iter().map(|row| row.seq).collect::<Vec<_>>(), [7]);
    }
}
