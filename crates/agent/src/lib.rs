//! `perimeter agent`: reports this host's state to `perimeter server`.
//!
//! - **Identity is a key pair the agent generates**, kept in its state
//!   directory; the server knows the agent by the key alone. A renamed host
//!   keeps its key and stays the same host; a cloned disk is noticed by its
//!   changed machine id (and, failing that, by the server, which sees two
//!   report chains under one key) and enrols anew as a new host.
//! - **Only changes travel**: the first report carries the full state, later
//!   ones what changed since the previous one (an empty delta is the
//!   heartbeat). The server keeps complete states.
//! - **Nothing is lost within the bound**: every report is queued on disk
//!   before it is sent and removed only when the server acknowledged it; a
//!   lost acknowledgement is resent byte for byte and the server calls it a
//!   duplicate. When the queue is full its reports are folded into one full
//!   report, and the events that could not be kept are counted in it, so the
//!   overflow is told, not silent.
//!
//! The host's state and its events come from the caller (the CLI runs the
//! audit and the watch): this crate knows the protocol, not the host.

mod state_dir;

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use perimeter_api::client::{ApiClient, Auth, ClientError, Trust};
use perimeter_api::sign::AgentKey;
use perimeter_api::{
    ACCEPTS_LISTENER_REACH, EnrolRequest, EnrolResponse, Event, HostState, Report, ReportAck,
    SCHEMA,
};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use state_dir::{Acked, Enrolment, Lock, StateDir};

/// Why the agent stopped or could not go on.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("agent state: {0}")]
    State(String),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the server revoked this agent's key ({0}); it reports no more")]
    Revoked(String),
    #[error("this host is not enrolled and no enrolment secret was given (--enrol-secret-file)")]
    NoSecret,
}

/// What the agent reports.
pub trait Collector: Send {
    /// The host's state now (the audit). Blocking: called from the blocking
    /// pool, or on a current-thread runtime from its thread (see
    /// `Agent::collect`).
    fn collect(&mut self) -> HostState;
}

/// How soon after a suspicious exec the agent reports (execs that follow
/// within it travel together).
pub const EXEC_REPORT_DELAY: Duration = Duration::from_secs(10);

/// At most one early report for execs in this long.
pub const EXEC_REPORT_SPACING: Duration = Duration::from_secs(60);

/// Something the caller saw between two audits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A listener appeared or went away: report now.
    ListenersChanged(Event),
    /// A suspicious exec: told with a report within [`EXEC_REPORT_DELAY`].
    Event(Event),
}

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `https://host:port`.
    pub server: String,
    pub trust: Trust,
    pub state_dir: PathBuf,
    /// Needed only to enrol.
    pub enrol_secret: Option<String>,
    /// The full audit's period.
    pub interval: Duration,
    /// The most reports kept while the server is out of reach.
    pub queue_limit: usize,
    /// The most events carried by one report.
    pub max_events: usize,
    /// This machine's id (/etc/machine-id): compared with the one at
    /// enrolment to notice a cloned disk. Never sent as an identity.
    pub machine_id: Option<String>,
    pub hostname: String,
}

/// How one cycle ended, for `--once` and the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flushed {
    /// Reports the server acknowledged (stored or duplicate).
    pub acknowledged: usize,
    /// Reports still queued.
    pub queued: usize,
}

/// The agent.
#[derive(Debug)]
pub struct Agent {
    config: AgentConfig,
    dir: StateDir,
    key: Option<Arc<AgentKey>>,
    enrolment: Option<Enrolment>,
    /// Events waiting for the next report.
    pending_events: Vec<Event>,
    /// Events dropped (pending past the cap, or in reports folded away).
    dropped_events: u64,
    /// The last acknowledged report and its state, as `acked.json` holds
    /// them: read from disk once, then kept, so a cycle neither reads nor
    /// parses the file again (the state of a host with thousands of
    /// listeners is megabytes of JSON).
    acked: Option<Acked>,
    /// Whether `acked` is what the disk holds; false until it is read, and
    /// after a write of it failed.
    acked_loaded: bool,
}

impl Agent {
    pub fn new(config: AgentConfig) -> Result<Agent, AgentError> {
        if !config.server.starts_with("https://") {
            return Err(AgentError::Config(format!(
                "{}: the server URL must start with https://",
                config.server
            )));
        }
        let dir = StateDir::open(&config.state_dir, Lock::Exclusive)?;
        let mut agent = Agent {
            config,
            dir,
            key: None,
            enrolment: None,
            pending_events: Vec::new(),
            dropped_events: 0,
            acked: None,
            acked_loaded: false,
        };
        agent.load()?;
        Ok(agent)
    }

    /// The agent id, once enrolled.
    pub fn agent_id(&self) -> Option<&str> {
        self.enrolment.as_ref().map(|e| e.agent_id.as_str())
    }

    fn load(&mut self) -> Result<(), AgentError> {
        let key = self.dir.key()?;
        let enrolment = self.dir.enrolment()?;
        match (key, enrolment) {
            (Some(key), Some(enrolment)) => {
                let cloned = match (&enrolment.machine_id, &self.config.machine_id) {
                    (Some(then), Some(now)) => then != now,
                    _ => false,
                };
                if cloned {
                    tracing::warn!(
                        agent = %enrolment.agent_id,
                        "the machine id changed since enrolment (a cloned disk?): enrolling as a new host"
                    );
                    self.forget()?;
                } else if enrolment.server.trim_end_matches('/')
                    != self.config.server.trim_end_matches('/')
                {
                    tracing::warn!(
                        was = %enrolment.server,
                        now = %self.config.server,
                        "enrolled with another server: enrolling with this one"
                    );
                    self.forget()?;
                } else if key.agent_id() != enrolment.agent_id {
                    return Err(AgentError::State(format!(
                        "the key in {} is not agent {}'s",
                        self.config.state_dir.display(),
                        enrolment.agent_id
                    )));
                } else {
                    self.key = Some(Arc::new(key));
                    self.enrolment = Some(enrolment);
                }
            }
            (None, None) => {}
            _ => {
                tracing::warn!("an incomplete enrolment in the state directory: enrolling anew");
                self.forget()?;
            }
        }
        Ok(())
    }

    /// Forgets the enrolment, the key and everything reported under it.
    fn forget(&mut self) -> Result<(), AgentError> {
        self.acked = None;
        self.acked_loaded = false;
        self.dir.forget()?;
        self.acked_loaded = true;
        Ok(())
    }

    /// The last acknowledged report, read from disk the first time.
    fn acked(&mut self) -> Result<Option<&Acked>, AgentError> {
        if !self.acked_loaded {
            self.acked = self.dir.acked()?;
            self.acked_loaded = true;
        }
        Ok(self.acked.as_ref())
    }

    /// Takes the acknowledged state out (to build the next one from it
    /// without a copy); until [`Agent::save_acked`], the disk is the
    /// reference again.
    fn take_acked(&mut self) -> Result<Option<Acked>, AgentError> {
        self.acked()?;
        self.acked_loaded = false;
        Ok(self.acked.take())
    }

    /// The optional report fields the server named in its last
    /// acknowledgement.
    fn server_accepts(&mut self) -> Result<Vec<String>, AgentError> {
        Ok(self
            .acked()?
            .map(|acked| acked.server_accepts.clone())
            .unwrap_or_default())
    }

    /// `state` as the server takes it: without the listeners' reach unless
    /// the server said it accepts it (an older server refuses a listener
    /// with a field it does not know).
    fn as_server_takes(&mut self, state: HostState) -> Result<HostState, AgentError> {
        let accepts = self.server_accepts()?;
        if accepts.iter().any(|field| field == ACCEPTS_LISTENER_REACH) {
            Ok(state)
        } else {
            Ok(state.without_reach())
        }
    }

    /// Writes `acked.json` (atomically) and keeps it in memory.
    fn save_acked(&mut self, acked: Acked) -> Result<(), AgentError> {
        self.acked = None;
        self.acked_loaded = false;
        self.dir.save_acked(&acked)?;
        self.acked = Some(acked);
        self.acked_loaded = true;
        Ok(())
    }

    fn client(&self, auth: Auth) -> Result<ApiClient, AgentError> {
        Ok(ApiClient::new(
            &self.config.server,
            &self.config.trust,
            auth,
        )?)
    }

    /// Enrols if not enrolled: a new key, the secret, the server's answer.
    pub async fn ensure_enrolled(&mut self) -> Result<(), AgentError> {
        if self.enrolment.is_some() {
            return Ok(());
        }
        let secret = self
            .config
            .enrol_secret
            .clone()
            .ok_or(AgentError::NoSecret)?;
        let key = AgentKey::generate();
        // The key is on disk before the server hears of it, so an agent killed
        // between the two re-sends the same key (the server answers with
        // where that key stands).
        self.dir.save_key(&key)?;
        let client = self.client(Auth::None)?;
        let answer: EnrolResponse = client
            .post_json(
                &format!("{}/enrol", perimeter_api::PREFIX),
                &EnrolRequest {
                    schema: SCHEMA.to_owned(),
                    public_key: key.public_key_base64(),
                    hostname: self.config.hostname.clone(),
                    secret,
                },
            )
            .await?;
        if answer.agent_id != key.agent_id() {
            return Err(AgentError::Config(format!(
                "the server calls this agent {}, but its key is {}'s",
                answer.agent_id,
                key.agent_id()
            )));
        }
        let enrolment = Enrolment {
            server: self.config.server.clone(),
            agent_id: answer.agent_id.clone(),
            machine_id: self.config.machine_id.clone(),
        };
        self.dir.save_enrolment(&enrolment)?;
        self.dir.clear_queue()?;
        tracing::info!(agent = %answer.agent_id, status = %answer.status, "enrolled");
        self.key = Some(Arc::new(key));
        self.enrolment = Some(enrolment);
        Ok(())
    }

    /// Keeps an event for the next report (past the cap, counts it).
    pub fn note_event(&mut self, event: Event) {
        if self.pending_events.len() < self.config.max_events {
            self.pending_events.push(event);
        } else {
            self.dropped_events += 1;
        }
    }

    /// The state after the last queued report (or the last acknowledged
    /// one), and the next sequence number. With nothing queued (the usual
    /// case) the acknowledged state is lent, not copied.
    fn tail(&mut self) -> Result<(Option<Cow<'_, HostState>>, u64), AgentError> {
        self.acked()?;
        let acked = self.acked.as_ref();
        let mut next = acked.map_or(1, |a| a.seq + 1);
        let mut state = acked.map(|a| Cow::Borrowed(&a.state));
        for seq in self.dir.queue_seqs()? {
            let Some(report) = self.dir.queued_report(seq)? else {
                continue;
            };
            state = Some(Cow::Owned(state_after(state, report)));
            next = seq + 1;
        }
        Ok((state, next))
    }

    /// Queues a report of `state`: a delta over the queue's tail when there is
    /// one, else the full state. A full queue is folded into one full report.
    /// `state` is consumed: a full report carries it as it is, and it is gone
    /// before the report is sent.
    pub fn queue_report(&mut self, state: HostState) -> Result<u64, AgentError> {
        let agent_id = self
            .enrolment
            .as_ref()
            .map(|e| e.agent_id.clone())
            .ok_or_else(|| AgentError::State("not enrolled".into()))?;
        let state = self.as_server_takes(state)?;
        let queued = self.dir.queue_seqs()?;
        let mut full = false;
        if queued.len() >= self.config.queue_limit {
            // Fold: the queued reports' states are replaced by this one (the
            // server gets the latest state whole), their events are counted.
            let mut lost = 0u64;
            for seq in &queued {
                if let Ok(Some(report)) = self.dir.queued_report(*seq) {
                    lost += report.events.len() as u64 + report.dropped_events;
                }
            }
            tracing::warn!(
                reports = queued.len(),
                events = lost,
                "the report queue is full while the server is out of reach: folding it into one full report"
            );
            self.dropped_events += lost;
            self.dir.clear_queue()?;
            full = true;
        }
        let (tail, next) = self.tail()?;
        let (full_state, delta) = match (tail, full) {
            (Some(tail), false) => (None, Some(tail.delta_to(&state))),
            _ => (Some(state), None),
        };
        let report = Report {
            schema: SCHEMA.to_owned(),
            agent_id,
            seq: next,
            taken_at: OffsetDateTime::now_utc(),
            hostname: self.config.hostname.clone(),
            full: full_state,
            delta,
            events: std::mem::take(&mut self.pending_events),
            dropped_events: std::mem::take(&mut self.dropped_events),
        };
        self.dir.push_report(&report)?;
        Ok(next)
    }

    /// Sends the queue in order until it is empty or the server cannot take
    /// more now.
    pub async fn flush(&mut self) -> Result<Flushed, AgentError> {
        let key = self
            .key
            .clone()
            .ok_or_else(|| AgentError::State("not enrolled".into()))?;
        let client = self.client(Auth::Agent(key))?;
        let path = format!("{}/reports", perimeter_api::PREFIX);
        let mut flushed = Flushed::default();
        // Bounded: each pass either removes a report or stops.
        for _ in 0..(self.config.queue_limit + 4) {
            let Some(&seq) = self.dir.queue_seqs()?.first() else {
                break;
            };
            let Some(body) = self.dir.queued(seq)? else {
                continue;
            };
            // The bytes go to the request as they are; what the report says
            // is read again from the queue only once it is acknowledged, so
            // a full report is never in memory twice.
            match client.post_raw::<ReportAck>(&path, body).await {
                Ok(ack) => {
                    tracing::debug!(seq, outcome = %ack.outcome, "report acknowledged");
                    self.acknowledge(seq, Some(ack.accepts))?;
                    flushed.acknowledged += 1;
                }
                Err(err) => match err.code() {
                    Some("out_of_order") => {
                        let expected = match &err {
                            ClientError::Refused { doc, .. } => doc.expected_seq,
                            _ => None,
                        };
                        match expected {
                            // The server has this one already (its answer
                            // was lost before a restart of ours).
                            Some(expected) if expected > seq => self.acknowledge(seq, None)?,
                            // The server lacks earlier reports (its database
                            // was restored): start again from what it expects.
                            Some(expected) => self.restart_from(expected, true)?,
                            None => return Err(err.into()),
                        }
                    }
                    Some("need_full") => self.restart_from(seq, true)?,
                    Some("forked") => {
                        tracing::warn!(
                            "the server saw another machine report with this agent's key: enrolling anew"
                        );
                        self.forget()?;
                        self.key = None;
                        self.enrolment = None;
                        break;
                    }
                    Some("not_accepted") => {
                        let message = err.to_string();
                        if message.contains("revoked") {
                            return Err(AgentError::Revoked(message));
                        }
                        tracing::info!("{message}");
                        break;
                    }
                    Some("bad_request" | "too_large") => {
                        // The server will never take this report: replace the
                        // queue by the full state under the same number.
                        tracing::error!("the server refused report {seq} for good: {err}");
                        let refused = self.dir.queued_report(seq).ok().flatten();
                        if refused.as_ref().is_some_and(carries_reach) {
                            // A server that took the listeners' reach may
                            // have been replaced by an older one, which
                            // refuses it: the full state again, without it,
                            // until a server says it accepts it.
                            tracing::warn!(
                                "sending the state again without the listeners' reach, which this server may not know"
                            );
                            self.restart_from(seq, false)?;
                            continue;
                        }
                        if refused.is_some_and(|r| r.full.is_some()) {
                            return Err(err.into());
                        }
                        self.restart_from(seq, true)?;
                    }
                    _ => {
                        if matches!(err, ClientError::Unreachable { .. })
                            || err.code() == Some("rate_limited")
                            || err.code() == Some("unavailable")
                        {
                            tracing::info!("{err}; the report stays queued");
                            break;
                        }
                        return Err(err.into());
                    }
                },
            }
        }
        flushed.queued = self.dir.queue_seqs()?.len();
        Ok(flushed)
    }

    /// The server took report `seq`: the state it leaves becomes the
    /// acknowledged one, built in place from the one before. `accepts`: the
    /// optional fields the server's answer named (`None` when there was no
    /// answer to read them from: what was known stays).
    fn acknowledge(&mut self, seq: u64, accepts: Option<Vec<String>>) -> Result<(), AgentError> {
        let report = self
            .dir
            .queued_report(seq)?
            .ok_or_else(|| AgentError::State(format!("queued report {seq} went away")))?;
        let (base, known) = match self.take_acked()? {
            Some(acked) => (Some(Cow::Owned(acked.state)), acked.server_accepts),
            None => (None, Vec::new()),
        };
        let state = state_after(base, report);
        self.save_acked(Acked {
            seq,
            state,
            server_accepts: accepts.unwrap_or(known),
        })?;
        self.dir.pop(seq)
    }

    /// Replaces the queue by one full report numbered `seq`, of the state the
    /// queue would have left (the latest the agent knows). Without
    /// `keep_accepts`, what the server said it accepts is forgotten (and
    /// the report carries none of it).
    fn restart_from(&mut self, seq: u64, keep_accepts: bool) -> Result<(), AgentError> {
        let server_accepts = if keep_accepts {
            self.server_accepts()?
        } else {
            Vec::new()
        };
        let (tail, _) = self.tail()?;
        let acked_state = tail.map(Cow::into_owned).unwrap_or_default();
        let mut events = Vec::new();
        let mut dropped = 0;
        for queued in self.dir.queue_seqs()? {
            if let Ok(Some(report)) = self.dir.queued_report(queued) {
                events.extend(report.events);
                dropped += report.dropped_events;
            }
        }
        events.truncate(self.config.max_events);
        self.dir.clear_queue()?;
        // The acknowledged base no longer matters: the next report is full.
        self.save_acked(Acked {
            seq: seq.saturating_sub(1),
            state: HostState::default(),
            server_accepts,
        })?;
        let acked_state = self.as_server_takes(acked_state)?;
        let enrolment = self
            .enrolment
            .clone()
            .ok_or_else(|| AgentError::State("not enrolled".into()))?;
        let report = Report {
            schema: SCHEMA.to_owned(),
            agent_id: enrolment.agent_id,
            seq,
            taken_at: OffsetDateTime::now_utc(),
            hostname: self.config.hostname.clone(),
            full: Some(acked_state),
            delta: None,
            events,
            dropped_events: dropped,
        };
        self.dir.push_report(&report)
    }

    /// The host's state now, from the collector. On a multi-thread runtime
    /// it runs in the blocking pool. On a current-thread runtime (the
    /// `perimeter agent` command's) it runs on the runtime's own thread:
    /// nothing else waits for that thread meanwhile (the cycle awaits the
    /// audit either way, and a stop is acted on between cycles), and the
    /// audit's memory then comes from the same malloc arena as the rest of
    /// the agent's instead of a thread's arena of its own, which would keep
    /// what the audit freed for good.
    async fn collect(collector: &Arc<Mutex<Box<dyn Collector>>>) -> Result<HostState, AgentError> {
        let run = |collector: &Mutex<Box<dyn Collector>>| {
            collector
                .lock()
                .map(|mut c| c.collect())
                .map_err(|_| AgentError::State("the collector panicked before".into()))
        };
        if tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::CurrentThread
        {
            // A panic in the audit fails the cycle, as it does in the
            // blocking pool, rather than the agent.
            return std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(collector)))
                .map_err(|_| AgentError::State("the audit failed: it panicked".into()))?;
        }
        let collector = Arc::clone(collector);
        tokio::task::spawn_blocking(move || run(&collector))
            .await
            .map_err(|err| AgentError::State(format!("the audit failed: {err}")))?
    }

    /// One cycle: enrol if needed, audit, queue the report, send the queue.
    pub async fn cycle(
        &mut self,
        collector: &Arc<Mutex<Box<dyn Collector>>>,
    ) -> Result<Flushed, AgentError> {
        self.ensure_enrolled().await?;
        let state = Agent::collect(collector).await?;
        self.queue_report(state)?;
        let flushed = self.flush().await?;
        if self.enrolment.is_none() {
            // Forked: enrol with a new key and send the full state at once,
            // from a new audit (the last one was handed to the report).
            self.ensure_enrolled().await?;
            let state = Agent::collect(collector).await?;
            self.queue_report(state)?;
            return self.flush().await;
        }
        Ok(flushed)
    }

    /// Runs until `stop`: a cycle every interval, and at once (after two
    /// quiet seconds) when a listener appears or goes; retries a queue the
    /// server could not take every 30 seconds.
    pub async fn run(
        mut self,
        collector: Box<dyn Collector>,
        mut triggers: mpsc::Receiver<Trigger>,
        stop: CancellationToken,
    ) -> Result<(), AgentError> {
        let collector = Arc::new(Mutex::new(collector));
        let retry = Duration::from_secs(30).min(self.config.interval);
        let mut next_cycle = tokio::time::Instant::now();
        let mut queued = 0usize;
        let mut triggers_open = true;
        let mut last_exec_cycle: Option<tokio::time::Instant> = None;
        loop {
            let wake = if queued > 0 {
                next_cycle.min(tokio::time::Instant::now() + retry)
            } else {
                next_cycle
            };
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep_until(wake) => {
                    let result = if tokio::time::Instant::now() >= next_cycle {
                        next_cycle = tokio::time::Instant::now() + self.config.interval;
                        self.cycle(&collector).await
                    } else {
                        self.flush().await
                    };
                    queued = self.outcome(result)?;
                }
                trigger = triggers.recv(), if triggers_open => match trigger {
                    // The watch stopped: audits on the interval go on.
                    None => triggers_open = false,
                    Some(Trigger::Event(event)) => {
                        self.note_event(event);
                        // A suspicious exec is news (the way the founding
                        // incident's miner was found): report it soon, with
                        // what else comes meanwhile, but early cycles for
                        // execs are a minute apart at least, so a host that
                        // runs unpackaged programs all day costs an audit a
                        // minute at worst, and every exec is told within a
                        // minute and the delay.
                        let now = tokio::time::Instant::now();
                        let earliest = match last_exec_cycle {
                            Some(at) => (at + EXEC_REPORT_SPACING).max(now + EXEC_REPORT_DELAY),
                            None => now + EXEC_REPORT_DELAY,
                        };
                        if earliest < next_cycle {
                            next_cycle = earliest;
                            last_exec_cycle = Some(earliest);
                        }
                    }
                    Some(Trigger::ListenersChanged(event)) => {
                        self.note_event(event);
                        // Let a burst (a daemon opening several sockets) settle.
                        let settle = tokio::time::Instant::now() + Duration::from_secs(2);
                        while let Ok(Some(more)) = tokio::time::timeout_at(settle, triggers.recv()).await {
                            match more {
                                Trigger::Event(event) | Trigger::ListenersChanged(event) => self.note_event(event),
                            }
                        }
                        next_cycle = tokio::time::Instant::now();
                    }
                },
            }
        }
    }

    /// Reports a cycle's outcome; only a revocation or a broken state
    /// directory ends the agent.
    fn outcome(&self, result: Result<Flushed, AgentError>) -> Result<usize, AgentError> {
        match result {
            Ok(flushed) => Ok(flushed.queued),
            Err(
                err @ (AgentError::Revoked(_)
                | AgentError::State(_)
                | AgentError::NoSecret
                | AgentError::Config(_)),
            ) => Err(err),
            Err(err) => {
                tracing::warn!("{err}");
                self.dir.queue_seqs().map(|q| q.len())
            }
        }
    }
}

/// The enrolled agent's id and key in a state directory, for a command that
/// acts as this host (`check --server`); `None` when it is not enrolled.
pub fn load_identity(
    state_dir: &std::path::Path,
) -> Result<Option<(String, AgentKey)>, AgentError> {
    if !state_dir.join("enrolment.json").exists() {
        return Ok(None);
    }
    let dir = StateDir::open(state_dir, Lock::None)?;
    match (dir.enrolment()?, dir.key()?) {
        (Some(enrolment), Some(key)) if key.agent_id() == enrolment.agent_id => {
            Ok(Some((enrolment.agent_id, key)))
        }
        _ => Ok(None),
    }
}

/// Whether a report carries any listener's reach.
fn carries_reach(report: &Report) -> bool {
    report.full.as_ref().is_some_and(HostState::has_reach)
        || report
            .delta
            .as_ref()
            .is_some_and(|delta| delta.upsert.iter().any(|listener| listener.reach.is_some()))
}

/// The state a report leaves, over the state before it (changed in place
/// when it is owned).
fn state_after(before: Option<Cow<'_, HostState>>, report: Report) -> HostState {
    match (report.full, &report.delta) {
        (Some(mut full), _) => {
            full.hostname = report.hostname;
            full.canonicalise();
            full
        }
        (None, Some(delta)) => {
            let mut state = before.map(Cow::into_owned).unwrap_or_default();
            state.apply_in_place(delta, &report.hostname);
            state
        }
        (None, None) => before.map(Cow::into_owned).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use perimeter_api::{ListenerDoc, state::ListenerKey};

    fn enrolled_agent(dir: &std::path::Path, queue_limit: usize) -> Agent {
        let key = AgentKey::generate();
        let state = StateDir::open(dir, Lock::None).expect("dir");
        state.save_key(&key).expect("key");
        state
            .save_enrolment(&Enrolment {
                server: "https://198.18.0.1:8443".into(),
                agent_id: key.agent_id(),
                machine_id: Some("m1".into()),
            })
            .expect("enrolment");
        drop(state);
        Agent::new(AgentConfig {
            server: "https://198.18.0.1:8443".into(),
            trust: Trust::System,
            state_dir: dir.to_owned(),
            enrol_secret: None,
            interval: Duration::from_secs(300),
            queue_limit,
            max_events: 2,
            machine_id: Some("m1".into()),
            hostname: "h".into(),
        })
        .expect("agent")
    }

    fn state(ports: &[u16]) -> HostState {
        let mut state = HostState {
            hostname: "h".into(),
            listeners: ports
                .iter()
                .map(|&port| ListenerDoc {
                    netns: "host".into(),
                    protocol: "tcp".into(),
                    address: "0.0.0.0".into(),
                    port,
                    scope: "wildcard".into(),
                    owners: Vec::new(),
                    reach: Some(perimeter_api::ReachDoc {
                        allowed: vec!["10.0.0.0/8".into()],
                        undecided: Vec::new(),
                    }),
                })
                .collect(),
            findings: Vec::new(),
        };
        state.canonicalise();
        state
    }

    fn event(n: u32) -> Event {
        Event {
            at: OffsetDateTime::now_utc(),
            kind: "exec".into(),
            summary: format!("exec {n}"),
            flags: vec!["unpackaged".into()],
        }
    }

    fn queued(agent: &Agent) -> Vec<Report> {
        agent
            .dir
            .queue()
            .expect("queue")
            .iter()
            .map(|(_, body)| serde_json::from_slice(body).expect("a report"))
            .collect()
    }

    #[test]
    fn reports_are_full_then_deltas_and_a_full_queue_folds_with_its_events_counted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut agent = enrolled_agent(dir.path(), 3);
        assert_eq!(agent.queue_report(state(&[22])).expect("1"), 1);
        agent.note_event(event(1));
        agent.note_event(event(2));
        // Past max_events: counted, not kept.
        agent.note_event(event(3));
        assert_eq!(agent.queue_report(state(&[22, 6379])).expect("2"), 2);
        assert_eq!(agent.queue_report(state(&[6379])).expect("3"), 3);
        let reports = queued(&agent);
        assert!(reports[0].full.is_some(), "the first report is full");
        let delta = reports[1].delta.as_ref().expect("then deltas");
        let keys: Vec<ListenerKey> = delta.upsert.iter().map(ListenerDoc::key).collect();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].3, 6379);
        assert_eq!(reports[1].events.len(), 2);
        assert_eq!(reports[1].dropped_events, 1);
        assert_eq!(reports[2].delta.as_ref().map(|d| d.remove.len()), Some(1));

        // The fourth while three wait: one full report of the latest state,
        // numbered after the acknowledged one (none: 1), the lost counted.
        agent.note_event(event(4));
        assert_eq!(agent.queue_report(state(&[6379, 8080])).expect("4"), 1);
        let reports = queued(&agent);
        assert_eq!(reports.len(), 1);
        let full = reports[0].full.as_ref().expect("folded into a full report");
        let ports: Vec<u16> = full.listeners.iter().map(|l| l.port).collect();
        assert_eq!(ports, [6379, 8080]);
        // The two events of report 2 and the one it had dropped.
        assert_eq!(reports[0].dropped_events, 3);
        assert_eq!(reports[0].events.len(), 1);
    }

    #[test]
    fn the_acknowledged_state_kept_in_memory_is_the_one_on_disk() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut agent = enrolled_agent(dir.path(), 3);
        assert_eq!(agent.queue_report(state(&[22, 80])).expect("1"), 1);
        agent.acknowledge(1, None).expect("ack 1");
        assert_eq!(agent.queue_report(state(&[22, 6379])).expect("2"), 2);
        agent.acknowledge(2, None).expect("ack 2");
        assert!(agent.dir.queue().expect("queue").is_empty());
        let on_disk = agent.dir.acked().expect("read").expect("acked.json");
        assert_eq!(agent.acked.as_ref(), Some(&on_disk));
        assert_eq!(on_disk.seq, 2);
        let ports: Vec<u16> = on_disk.state.listeners.iter().map(|l| l.port).collect();
        assert_eq!(ports, [22, 6379]);

        // A restarted agent reads it back: the next report is a delta over it.
        let config = agent.config.clone();
        drop(agent);
        let mut agent = Agent::new(config).expect("restarted");
        assert_eq!(agent.queue_report(state(&[22, 6379, 8080])).expect("3"), 3);
        let reports = queued(&agent);
        let delta = reports[0].delta.as_ref().expect("a delta");
        let upserts: Vec<u16> = delta.upsert.iter().map(|l| l.port).collect();
        assert_eq!(upserts, [8080]);
        assert!(delta.remove.is_empty());
    }

    fn reach_sent(report: &Report) -> bool {
        carries_reach(report)
    }

    #[test]
    fn the_listeners_reach_goes_only_to_a_server_that_said_it_accepts_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut agent = enrolled_agent(dir.path(), 3);
        // Nothing heard from the server yet: the first report has no reach,
        // though the audit found it.
        assert!(state(&[22]).has_reach());
        assert_eq!(agent.queue_report(state(&[22])).expect("1"), 1);
        assert!(!reach_sent(&queued(&agent)[0]));
        // An older server's acknowledgement names nothing: still none.
        agent.acknowledge(1, Some(Vec::new())).expect("ack 1");
        assert_eq!(agent.queue_report(state(&[22, 80])).expect("2"), 2);
        let reports = queued(&agent);
        assert!(!reach_sent(&reports[0]), "{:?}", reports[0]);
        agent.acknowledge(2, Some(Vec::new())).expect("ack 2");

        // A server that accepts it: from the next report on, every listener
        // carries it (the ones unchanged otherwise too, once).
        assert_eq!(agent.queue_report(state(&[22, 80])).expect("3"), 3);
        agent
            .acknowledge(3, Some(vec![ACCEPTS_LISTENER_REACH.to_owned()]))
            .expect("ack 3");
        assert_eq!(agent.queue_report(state(&[22, 80])).expect("4"), 4);
        let reports = queued(&agent);
        let delta = reports[0].delta.as_ref().expect("a delta");
        assert_eq!(delta.upsert.len(), 2, "{delta:?}");
        assert!(delta.upsert.iter().all(|l| l.reach.is_some()));
        agent.acknowledge(4, None).expect("ack 4, no answer read");

        // Kept on disk: a restarted agent (`--once`) still sends it.
        let config = agent.config.clone();
        drop(agent);
        let mut agent = Agent::new(config).expect("restarted");
        assert_eq!(agent.queue_report(state(&[22, 80, 443])).expect("5"), 5);
        let reports = queued(&agent);
        let delta = reports[0].delta.as_ref().expect("a delta");
        assert_eq!(delta.upsert.len(), 1);
        assert!(reach_sent(&reports[0]));

        // A refusal from a server that may no longer know it: the full
        // state again, without it, and it stays out.
        agent.restart_from(5, false).expect("restart");
        let reports = queued(&agent);
        assert_eq!(reports.len(), 1);
        let full = reports[0].full.as_ref().expect("full");
        assert_eq!(full.listeners.len(), 3);
        assert!(!reach_sent(&reports[0]));
        agent.acknowledge(5, Some(Vec::new())).expect("ack 5");
        assert_eq!(agent.queue_report(state(&[22])).expect("6"), 6);
        assert!(!reach_sent(&queued(&agent)[0]));
    }

    #[test]
    fn a_changed_machine_id_forgets_the_enrolment() {
        let dir = tempfile::tempdir().expect("temp dir");
        let agent = enrolled_agent(dir.path(), 3);
        assert!(agent.agent_id().is_some());
        drop(agent);
        let cloned = Agent::new(AgentConfig {
            server: "https://198.18.0.1:8443".into(),
            trust: Trust::System,
            state_dir: dir.path().to_owned(),
            enrol_secret: None,
            interval: Duration::from_secs(300),
            queue_limit: 3,
            max_events: 2,
            machine_id: Some("m2".into()),
            hostname: "h".into(),
        })
        .expect("agent");
        assert_eq!(cloned.agent_id(), None, "a clone enrols anew");
        assert!(!dir.path().join("key").exists(), "the copied key is gone");
    }
}
