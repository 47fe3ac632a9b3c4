//! The connect scan: the launch loop over the permutation, per-port retries and
//! states, identification of open ports, progress, and cancellation. What it
//! runs with (profiles, the caller's options, the settings they resolve to) is
//! [`crate::options`]'s.
//!
//! A launcher hands out the seeded permutation of the (address, port) index
//! space, position by position, to a fixed set of lanes: one task per unit of
//! concurrency, each scanning one port at a time, so the lane count is the
//! concurrency limit and the most ports held at once. For each port a lane
//! takes a rate token before every connection attempt, retries an attempt that
//! got no answer (a port is filtered only after the retries are spent, as in
//! nmap), and for an open port runs identification under one deadline. Results stream out as
//! [`ScanEvent`]s as they are decided; the returned [`ScanOutcome`] holds the
//! `ScanInfo` and the counts.
//!
//! The SYN scan ([`run_syn`]) shares everything here but the lanes: its ports
//! are decided by senders that send SYNs in batches from the same launcher
//! ([`batched`]), and only its open ports come back here, to be identified
//! over connections as the connect scan's are.
//!
//! Port states follow nmap's connect scan: open when the handshake completes,
//! closed on a RST, filtered on an ICMP unreachable or when every attempt went
//! unanswered. A local error (out of descriptors or ephemeral ports) is not a
//! state: the lane backs off and tries again, and reports a problem if it keeps
//! failing.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use perimeter_model::{PortResult, PortState, Problem, Protocol, ScanInfo};
use rand::{RngExt as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::identify::{self, SharedCatalog};
use crate::options::{ScanOptions, Settings};
use crate::ports::PortSet;
use crate::rate::RateLimiter;
pub(crate) use crate::rtt::{RttEstimator, RttTable};
use crate::shard::ShardWalk;
use crate::syn::PacketIo;
use crate::targets::{TargetSet, Targets};
use crate::transport::{Connect, FilterCause, Transport};

/// A scan that cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("invalid option {name}: {reason}")]
    InvalidOption {
        name: &'static str,
        reason: &'static str,
    },
    #[error("nothing to scan: {0}")]
    Empty(&'static str),
    #[error(
        "the scan is too large: {n_addresses} addresses × {n_ports} ports is more than 2^64 probes; narrow the targets"
    )]
    TooLarge { n_addresses: u128, n_ports: usize },
}

/// Everything a scan needs besides the network.
#[derive(Clone)]
pub struct ScanPlan {
    pub targets: Targets,
    pub ports: PortSet,
    pub options: ScanOptions,
    /// The probes for open ports: [`identify::standard_probes`] in the CLI.
    pub probes: SharedCatalog,
}

impl fmt::Debug for ScanPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScanPlan")
            .field("targets", &self.targets)
            .field("ports", &self.ports)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// What a scan reports while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum ScanEvent {
    /// One (address, port) decided, in any state; the caller filters.
    Result(PortResult),
    /// Where the scan stands. Sent every `progress_interval` (dropped rather than
    /// waited for when the receiver is behind) and once at the end.
    Progress {
        /// Pairs decided or given up on.
        done: u64,
        total: u64,
        open: u64,
        /// Connection attempts per second over the last interval.
        rate: f64,
        /// Time left at the pace so far (or to the end of the spread window).
        eta: Option<Duration>,
    },
    /// Something that could not be seen: a port this machine could not connect to
    /// (local errors that did not clear), a rate too low for the spread.
    Problem(Problem),
}

/// Counts of decided ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StateCounts {
    pub open: u64,
    pub closed: u64,
    pub filtered: u64,
    /// UDP ports that stayed silent after the retries.
    pub open_filtered: u64,
    /// Pairs without a state: cancelled before they were decided, or local errors.
    pub undecided: u64,
}

/// The end of a scan.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanOutcome {
    pub info: ScanInfo,
    pub settings: Settings,
    pub counts: StateCounts,
    /// Problems from resolving targets and from scanning (also sent as events).
    pub problems: Vec<Problem>,
}

/// Local errors tolerated per port before it is given up as a problem.
const MAX_LOCAL_ERRORS: u32 = 6;

/// The problem reported for a port whose local errors did not clear.
fn local_error_problem(address: SocketAddr, err: &std::io::Error) -> Problem {
    Problem::new(
        identify::subject(address),
        format!("cannot connect from this machine: {err}"),
    )
    .with_hint("lower the concurrency or the rate, or raise the open-file limit")
}

/// The most concurrency can use of the open-file limit: the rest is headroom for
/// the process's own files (the store, logs, the terminal).
pub fn fd_budget(soft_limit: u64) -> usize {
    let headroom = (soft_limit / 8).max(64);
    usize::try_from(soft_limit.saturating_sub(headroom))
        .unwrap_or(usize::MAX)
        .max(1)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (or as far as the kernel
/// allows) and returns the soft limit in force afterwards.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    if soft >= hard {
        return Ok(soft);
    }
    // An unlimited hard limit cannot be the soft one for files (the kernel caps
    // it at fs.nr_open), so fall back to a large finite value.
    for candidate in [hard, 1 << 20, 1 << 16] {
        if candidate > soft
            && candidate <= hard
            && setrlimit(Resource::RLIMIT_NOFILE, candidate, hard).is_ok()
        {
            return Ok(candidate);
        }
    }
    Ok(soft)
}

/// How often an attempt that began with an unknown round trip looks again at
/// what the host's network says.
const TIMEOUT_RECHECK: Duration = Duration::from_millis(50);

/// What one port ended with.
enum Verdict {
    Decided(PortResult),
    /// Local errors did not clear.
    Failed(Problem),
}

/// What the connection attempts decided about a port, before identification.
enum Decision<S> {
    State(PortState, Option<S>),
    /// The scan was cancelled before the port was decided.
    Abandoned,
    /// Local errors did not clear.
    Failed(Problem),
}

/// Counts of decided ports, kept in atomics: every lane adds to them on every
/// result, and a shared lock there is a wake-up between threads per port.
#[derive(Debug, Default)]
struct StateCounters {
    open: AtomicU64,
    closed: AtomicU64,
    filtered: AtomicU64,
    open_filtered: AtomicU64,
}

impl StateCounters {
    fn add(&self, state: PortState) {
        let counter = match state {
            PortState::Open => &self.open,
            PortState::Closed => &self.closed,
            PortState::Filtered => &self.filtered,
            PortState::OpenFiltered => &self.open_filtered,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> StateCounts {
        StateCounts {
            open: self.open.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Relaxed),
            filtered: self.filtered.load(Ordering::Relaxed),
            open_filtered: self.open_filtered.load(Ordering::Relaxed),
            undecided: 0,
        }
    }
}

/// Cancellation as the lanes see it.
///
/// `CancellationToken::cancelled()` takes the token tree's one mutex on every
/// poll, and a lane is polled on every connection it makes: with thousands of
/// lanes on several threads that mutex becomes the scan's bottleneck. Instead,
/// one task waits on the token and, when it fires, raises a flag and wakes
/// every lane; a lane reads the flag (one atomic load) and keeps its waker in a
/// slot of its own, which nobody else touches until the stop.
#[derive(Debug, Default)]
struct StopSignal {
    stopped: AtomicBool,
    slots: Mutex<Vec<Arc<WakerSlot>>>,
}

#[derive(Debug, Default)]
struct WakerSlot(Mutex<Option<Waker>>);

impl StopSignal {
    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// A slot for one lane's waker.
    fn slot(&self) -> Arc<WakerSlot> {
        let slot = Arc::new(WakerSlot::default());
        if let Ok(mut slots) = self.slots.lock() {
            slots.push(Arc::clone(&slot));
        }
        slot
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let slots = self.slots.lock().map(|s| s.clone()).unwrap_or_default();
        for slot in slots {
            let waker = slot.0.lock().ok().and_then(|mut w| w.take());
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// Resolves once the scan is stopped.
    fn stopped<'a>(&'a self, slot: &'a WakerSlot) -> Stopped<'a> {
        Stopped { signal: self, slot }
    }
}

struct Stopped<'a> {
    signal: &'a StopSignal,
    slot: &'a WakerSlot,
}

impl Future for Stopped<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.signal.is_stopped() {
            return Poll::Ready(());
        }
        if let Ok(mut waker) = self.slot.0.lock() {
            match waker.as_ref() {
                Some(old) if old.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
        }
        // `stop` raises the flag before it takes the waker out of this slot: a
        // stop that came after the first check either finds the waker just
        // stored or is seen here.
        if self.signal.is_stopped() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Hands out the positions of the permutation to the lanes, in order, with
/// the launch time of each when the scan is spread over a window.
struct Launcher {
    state: Mutex<LaunchState>,
    /// The permutation, or the shard's part of it.
    walk: ShardWalk,
    /// The positions of `walk`: the pairs this scan (or shard) covers.
    total: u64,
    n_addresses: u64,
    start: Instant,
}

struct LaunchState {
    next_position: u64,
    /// Draws the point within each slot of the spread schedule. Drawn under
    /// the lock in position order, so a replayed seed gives the same times.
    schedule_rng: ChaCha8Rng,
    n_launched: u64,
    n_skipped: u64,
}

/// One (address, port) pair given to a lane.
struct Claim {
    address: SocketAddr,
    /// When to make the first attempt (with a spread schedule).
    launch_at: Option<Instant>,
}

impl Launcher {
    /// The next pair to scan, or `None` when every position has been handed
    /// out. Positions whose index falls outside the target set or on an
    /// excluded address are counted as skipped and passed over.
    fn claim<T: Transport>(&self, ctx: &Context<T>) -> Option<Claim> {
        let mut state = self.state.lock().ok()?;
        while state.next_position < self.total {
            let position = state.next_position;
            state.next_position += 1;
            let launch_at = ctx.settings.schedule.map(|schedule| {
                // Slot `position` of `total` over the window, at a random point
                // within the slot when jittering.
                let within = if ctx.settings.rate.jitter > 0.0 {
                    state.schedule_rng.random_range(0.0..1.0)
                } else {
                    0.0
                };
                let offset =
                    schedule.window.as_secs_f64() * (position as f64 + within) / self.total as f64;
                self.start + Duration::from_secs_f64(offset)
            });
            let idx = self.walk.get(position);
            let (address_idx, port_idx) = (idx % self.n_addresses, idx / self.n_addresses);
            let address = ctx.targets.get(u128::from(address_idx));
            let port = usize::try_from(port_idx)
                .ok()
                .and_then(|i| ctx.ports.get(i))
                .copied();
            let (Some(address), Some(port)) = (address, port) else {
                state.n_skipped += 1;
                continue;
            };
            // Exclusions were subtracted when the target set was built; this
            // check stands behind that, so an excluded address is never sent a
            // packet.
            if ctx.targets.is_excluded(address) {
                state.n_skipped += 1;
                continue;
            }
            state.n_launched += 1;
            return Some(Claim {
                address: SocketAddr::new(address, port),
                launch_at,
            });
        }
        None
    }

    fn counts(&self) -> (u64, u64) {
        self.state
            .lock()
            .map(|s| (s.n_launched, s.n_skipped))
            .unwrap_or((0, 0))
    }
}

struct Context<T: Transport> {
    transport: Arc<T>,
    rate: RateLimiter,
    settings: Settings,
    probes: SharedCatalog,
    targets: TargetSet,
    ports: Vec<u16>,
    rtt: Mutex<RttTable>,
    cancel: CancellationToken,
    stop: StopSignal,
    /// The caller's channel, for progress (results and problems go through
    /// `forward`).
    events: mpsc::Sender<ScanEvent>,
    forward: mpsc::Sender<Forward>,
    n_done: AtomicU64,
    counts: StateCounters,
    problems: Mutex<Vec<Problem>>,
    receiver_gone: Arc<AtomicBool>,
}

impl<T: Transport> Context<T> {
    fn connect_timeout(&self, address: IpAddr, n_unanswered: u32) -> Duration {
        match self.settings.min_timeout {
            Some(min) => self
                .rtt
                .lock()
                .map(|rtt| rtt.timeout(address, n_unanswered, min, self.settings.timeout))
                .unwrap_or(self.settings.timeout),
            None => self.settings.timeout,
        }
    }

    fn observe_rtt(&self, address: IpAddr, sample: Duration) {
        if self.settings.min_timeout.is_none() {
            return;
        }
        if let Ok(mut rtt) = self.rtt.lock() {
            rtt.observe(address, sample);
        }
    }

    /// One attempt: a rate token, then a connection, and how long the
    /// connection took. `None` when the scan was cancelled while it waited for
    /// the token.
    async fn attempt(
        &self,
        address: SocketAddr,
        n_unanswered: u32,
    ) -> Option<(Connect<Option<T::Stream>>, Duration)> {
        self.rate.acquire().await;
        // The stop signal reaches the lanes one task later than the token
        // fires; asking the token itself (once per attempt, not on every poll)
        // keeps a token granted in that gap from becoming a packet.
        if self.cancel.is_cancelled() {
            return None;
        }
        let started = Instant::now();
        let timeout = self.connect_timeout(address.ip(), n_unanswered);
        let connect = self.transport.connect(address, timeout);
        let outcome = if self.settings.min_timeout.is_some() && timeout >= self.settings.timeout {
            // The round trip was unknown when this attempt began, so it waits
            // the whole ceiling; answers from the host's network may make it
            // known meanwhile (the first ports of a scan are all in flight
            // before any answer). Look again now and then, and give up as
            // soon as the wait passes what the network now says.
            tokio::pin!(connect);
            loop {
                tokio::select! {
                    outcome = &mut connect => break outcome,
                    () = tokio::time::sleep(TIMEOUT_RECHECK) => {
                        let now_due = self.connect_timeout(address.ip(), n_unanswered);
                        if now_due < timeout && started.elapsed() >= now_due {
                            break Connect::Filtered(FilterCause::NoAnswer);
                        }
                    }
                }
            }
        } else {
            connect.await
        };
        Some((outcome.map(Some), started.elapsed()))
    }

    /// Attempts until the port has a state: retries silence, backs off on local
    /// errors. It does not watch for cancellation: its lane races it against
    /// the stop signal and drops it, which abandons the port (the rate limiter
    /// takes no token from a dropped wait).
    async fn decide(&self, address: SocketAddr) -> Decision<T::Stream> {
        let mut n_unanswered = 0;
        let mut n_local_errors = 0;
        loop {
            let Some((outcome, elapsed)) = self.attempt(address, n_unanswered).await else {
                return Decision::Abandoned;
            };
            match outcome {
                Connect::Open(stream) => {
                    self.observe_rtt(address.ip(), elapsed);
                    return Decision::State(PortState::Open, stream);
                }
                Connect::Closed => {
                    self.observe_rtt(address.ip(), elapsed);
                    return Decision::State(PortState::Closed, None);
                }
                Connect::Filtered(FilterCause::Unreachable) => {
                    return Decision::State(PortState::Filtered, None);
                }
                Connect::Filtered(FilterCause::NoAnswer) => {
                    n_unanswered += 1;
                    if n_unanswered > self.settings.retries {
                        return Decision::State(PortState::Filtered, None);
                    }
                }
                Connect::LocalError(err) => {
                    n_local_errors += 1;
                    if n_local_errors > MAX_LOCAL_ERRORS {
                        return Decision::Failed(local_error_problem(address, &err));
                    }
                    // Back off: the shortage is usually shared by every task.
                    let backoff = Duration::from_millis(50) * (1 << n_local_errors.min(5));
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }

    /// The result for a decided port, identifying an open one under the port
    /// deadline. A cancellation during identification keeps the open port and
    /// drops what identification had not finished.
    async fn conclude(
        &self,
        address: SocketAddr,
        state: PortState,
        stream: Option<T::Stream>,
    ) -> PortResult {
        let mut service = None;
        let mut probe_findings = Vec::new();
        let identification_ran = self.settings.identify && state == PortState::Open;
        if identification_ran {
            let probes = self.probes.probes_for(address.ip(), address.port());
            // Boxed: identification's state is large, and most ports never
            // get here, so the lanes' futures stay small.
            let identification = Box::pin(identify::identify(
                self.transport.as_ref(),
                &self.rate,
                address,
                stream,
                probes,
                self.settings.identify_settings,
            ));
            let bounded = tokio::time::timeout(self.settings.port_deadline, identification);
            let identification = tokio::select! {
                biased;
                () = self.cancel.cancelled() => None,
                finished = bounded => finished.ok(),
            };
            // Identification's connections are counted by the rate limiter, so a
            // deadline or a cancellation that drops this future loses no count.
            if let Some(identified) = identification.and_then(|i| i.identified) {
                service = Some(identified.service);
                probe_findings = identified.findings;
            }
        } else {
            drop(stream);
        }
        let findings = identify::port_findings(
            address,
            state,
            service.as_ref(),
            probe_findings,
            identification_ran,
        );
        PortResult {
            address: address.ip(),
            port: address.port(),
            protocol: Protocol::Tcp,
            state,
            service,
            findings,
        }
    }

    async fn report(&self, verdict: Verdict) {
        match verdict {
            Verdict::Decided(result) => {
                self.counts.add(result.state);
                self.n_done.fetch_add(1, Ordering::Relaxed);
                if result.state == PortState::Open || self.settings.report_unanswered {
                    self.send(ScanEvent::Result(result)).await;
                }
            }
            Verdict::Failed(problem) => {
                self.n_done.fetch_add(1, Ordering::Relaxed);
                self.problem(problem).await;
            }
        }
    }

    async fn problem(&self, problem: Problem) {
        if let Ok(mut problems) = self.problems.lock() {
            problems.push(problem.clone());
        }
        self.send(ScanEvent::Problem(problem)).await;
    }

    /// Sends an event, through the forwarder; a receiver that went away stops
    /// the scan, since nobody would see its results.
    async fn send(&self, event: ScanEvent) {
        if self.forward.send(Forward::Event(event)).await.is_err() {
            self.receiver_gone.store(true, Ordering::Relaxed);
            self.cancel.cancel();
        }
    }

    /// Waits until every event sent so far has reached the caller's channel
    /// (or the receiver is gone).
    async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.forward.send(Forward::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
    }

    fn open_count(&self) -> u64 {
        self.counts.open.load(Ordering::Relaxed)
    }
}

/// What the lanes hand the forwarder.
#[expect(
    clippy::large_enum_variant,
    reason = "events are the traffic and move unboxed into the caller's channel anyway; a flush is sent once per scan"
)]
enum Forward {
    Event(ScanEvent),
    /// Answer once everything before it has been forwarded.
    Flush(oneshot::Sender<()>),
}

/// Moves results and problems from the lanes to the caller's channel, in
/// bursts.
///
/// A receiver that drains its channel parks until the next event, and a
/// receiver on a thread of its own (`block_on` in a binary) is woken through
/// the kernel every time. Lanes finishing ports one by one would wake it once
/// per port, which on a fast scan costs more than the ports themselves; the
/// forwarder takes whatever the lanes have queued and sends it back to back,
/// so the receiver wakes once per burst, at most about once a millisecond
/// while bursts are not full.
async fn forward_events(
    mut input: mpsc::Receiver<Forward>,
    events: mpsc::Sender<ScanEvent>,
    cancel: CancellationToken,
    receiver_gone: Arc<AtomicBool>,
) {
    let mut burst = Vec::with_capacity(FORWARD_BURST);
    while input.recv_many(&mut burst, FORWARD_BURST).await > 0 {
        // Give the burst a moment to fill: on a busy scan the lanes finish
        // hundreds of ports a millisecond, and a result that waits one
        // millisecond more is not late.
        if burst.len() < FORWARD_BURST {
            tokio::time::sleep(Duration::from_millis(1)).await;
            while burst.len() < FORWARD_BURST {
                match input.try_recv() {
                    Ok(item) => burst.push(item),
                    Err(_) => break,
                }
            }
        }
        for item in burst.drain(..) {
            match item {
                Forward::Event(event) => {
                    if receiver_gone.load(Ordering::Relaxed) {
                        continue;
                    }
                    if events.send(event).await.is_err() {
                        receiver_gone.store(true, Ordering::Relaxed);
                        cancel.cancel();
                    }
                }
                Forward::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    }
}

/// The most events the forwarder takes from the lanes at once.
const FORWARD_BURST: usize = 256;

/// One lane: scans pairs one after another until the launcher runs dry or the
/// scan stops. The lanes are the concurrency limit: `concurrency` of them, each
/// holding at most one port's connections at a time. (A task per pair under a
/// semaphore did the same with a spawn, a permit and a join per pair, which
/// cost more than the connection itself on a fast scan.)
async fn lane<T: Transport>(ctx: Arc<Context<T>>, launcher: Arc<Launcher>) {
    let slot = ctx.stop.slot();
    while !ctx.stop.is_stopped() {
        let Some(claim) = launcher.claim(&ctx) else {
            return;
        };
        let address = claim.address;
        let decide = async {
            if let Some(at) = claim.launch_at {
                tokio::time::sleep_until(at).await;
            }
            ctx.decide(address).await
        };
        let decision = tokio::select! {
            biased;
            // Abandoned: waiting for its time, a rate token or a connection.
            () = ctx.stop.stopped(&slot) => return,
            decision = decide => decision,
        };
        let verdict = match decision {
            Decision::State(state, stream) => {
                Verdict::Decided(ctx.conclude(address, state, stream).await)
            }
            Decision::Failed(problem) => Verdict::Failed(problem),
            Decision::Abandoned => return,
        };
        ctx.report(verdict).await;
    }
}

/// Runs a scan over `transport`, sending events to `events`, until it finishes
/// or `cancel` fires.
///
/// On cancellation no new port is started, ports still waiting for their time,
/// a rate token or a connection are abandoned (a connection already open is
/// reported, without identification), and the outcome is marked incomplete. A
/// receiver that hangs up cancels the scan the same way.
pub async fn run<T: Transport>(
    transport: Arc<T>,
    plan: ScanPlan,
    events: mpsc::Sender<ScanEvent>,
    cancel: CancellationToken,
) -> Result<ScanOutcome, ScanError> {
    let scan = Scan::start(transport, plan, events, cancel).await?;
    let n_lanes = usize::try_from(scan.launcher.total)
        .map_or(scan.ctx.settings.concurrency, |total| {
            total.min(scan.ctx.settings.concurrency)
        })
        .max(1);
    let mut lanes = JoinSet::new();
    for _ in 0..n_lanes {
        lanes.spawn(lane(scan.ctx.clone(), scan.launcher.clone()));
    }
    while let Some(joined) = lanes.join_next().await {
        report_join(&scan.ctx, joined).await;
    }
    Ok(scan.finish().await)
}

/// Runs a SYN scan: the states are decided by SYNs that `packets` sends in
/// batches from one task, walking the same permutation of the same target
/// set under the same rate ceiling as [`run`] (see [`batched`]); open ports
/// are identified over connections through `transport`. Cancellation and
/// the outcome are as for [`run`].
pub async fn run_syn<P: PacketIo, T: Transport>(
    packets: P,
    transport: Arc<T>,
    plan: ScanPlan,
    events: mpsc::Sender<ScanEvent>,
    cancel: CancellationToken,
) -> Result<ScanOutcome, ScanError> {
    let scan = Scan::start(transport, plan, events, cancel).await?;
    let runtime = tokio::runtime::Handle::current();
    let shared = Arc::new(batched::Shared::new(&scan.ctx, packets.source_port()));
    let n_threads = packets.sender_threads();
    if n_threads == 0 {
        batched::sender(&scan.ctx, &scan.launcher, &shared, packets, &runtime, true).await;
    } else {
        // Each sender on a thread of its own, with a runtime of its own
        // whose reactor watches only that sender's sockets and is looked at
        // only when the sender waits.
        let mut handles = vec![packets];
        while handles.len() < n_threads {
            match handles.first().map(PacketIo::another) {
                Some(Ok(another)) => handles.push(another),
                _ => break,
            }
        }
        let (done, mut finished) = mpsc::channel::<()>(handles.len());
        let mut n_started = 0;
        for (i, packets) in handles.into_iter().enumerate() {
            let (ctx, launcher, shared) = (scan.ctx.clone(), scan.launcher.clone(), shared.clone());
            let (runtime, done) = (runtime.clone(), done.clone());
            let thread = std::thread::Builder::new()
                .name(format!("perimeter-syn-{i}"))
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(own) => own.block_on(batched::sender(
                            &ctx, &launcher, &shared, packets, &runtime, false,
                        )),
                        Err(err) => tracing::warn!("a SYN sender could not start: {err}"),
                    }
                    let _ = done.blocking_send(());
                });
            match thread {
                Ok(_) => n_started += 1,
                Err(err) => tracing::warn!("a SYN sender could not start: {err}"),
            }
        }
        drop(done);
        if n_started == 0 {
            scan.ctx
                .problem(Problem::new(
                    "scan",
                    "cannot start the SYN scan's sender thread".to_owned(),
                ))
                .await;
            scan.ctx.cancel.cancel();
        }
        // Every thread says when it ends; the channel closes after the last.
        while finished.recv().await.is_some() {}
    }
    tracing::debug!(
        unmatched = shared.n_unmatched(),
        "SYN scan answers that matched no probe"
    );
    Ok(scan.finish().await)
}

/// A scan between its start and its end, whichever way its ports are
/// decided.
struct Scan<T: Transport> {
    ctx: Arc<Context<T>>,
    launcher: Arc<Launcher>,
    plan: ScanPlan,
    started_at: OffsetDateTime,
    options_record: std::collections::BTreeMap<String, String>,
    forwarder: tokio::task::JoinHandle<()>,
    stop_watch: tokio::task::JoinHandle<()>,
    progress: tokio::task::JoinHandle<()>,
    progress_done: CancellationToken,
}

impl<T: Transport> Scan<T> {
    /// Checks the plan, resolves the settings, and starts the tasks every
    /// scan has (the forwarder of events, progress, the stop watch).
    async fn start(
        transport: Arc<T>,
        plan: ScanPlan,
        events: mpsc::Sender<ScanEvent>,
        cancel: CancellationToken,
    ) -> Result<Scan<T>, ScanError> {
        let started_at = OffsetDateTime::now_utc();
        let targets = &plan.targets.set;
        let ports = plan.ports.ports();
        if targets.is_empty() {
            return Err(ScanError::Empty("the target set is empty"));
        }
        if ports.is_empty() {
            return Err(ScanError::Empty("no ports"));
        }
        let too_large = || ScanError::TooLarge {
            n_addresses: targets.len(),
            n_ports: ports.len(),
        };
        let n_addresses = u64::try_from(targets.len()).map_err(|_| too_large())?;
        let n_ports = u64::try_from(ports.len()).map_err(|_| too_large())?;
        // The whole index space, and the part of it this shard walks (all of
        // it unsharded): the shard's pairs are the scan's total from here on.
        let space = n_addresses.checked_mul(n_ports).ok_or_else(too_large)?;
        let total = plan.options.shard.len_of(space);

        let fd_limit = if plan.options.raise_fd_limit {
            raise_fd_limit().ok()
        } else {
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        };
        let settings = plan.options.settings(total, fd_limit.map(fd_budget))?;
        let mut options_record = settings.record(total);
        if let Some(limit) = fd_limit {
            options_record.insert("fd_limit".into(), limit.to_string());
        }
        if settings.concurrency < settings.requested_concurrency {
            tracing::warn!(
                requested = settings.requested_concurrency,
                granted = settings.concurrency,
                "concurrency capped by the open-file limit"
            );
        }

        // Our own token, so a receiver that hangs up stops the scan without
        // cancelling the caller's token.
        let cancel = cancel.child_token();
        let rate = RateLimiter::new(Some(settings.rate), settings.seed);
        let receiver_gone = Arc::new(AtomicBool::new(false));
        let (forward, forward_input) = mpsc::channel(FORWARD_BURST * 4);
        let forwarder = tokio::spawn(forward_events(
            forward_input,
            events.clone(),
            cancel.clone(),
            receiver_gone.clone(),
        ));
        let ctx = Arc::new(Context {
            transport,
            rate,
            settings: settings.clone(),
            probes: plan.probes.clone(),
            targets: targets.clone(),
            ports: ports.to_vec(),
            rtt: Mutex::new(RttTable::default()),
            cancel: cancel.clone(),
            stop: StopSignal::default(),
            events,
            forward,
            n_done: AtomicU64::new(0),
            counts: StateCounters::default(),
            problems: Mutex::new(plan.targets.problems.clone()),
            receiver_gone,
        });

        let start = Instant::now();
        if let Some(schedule) = settings.schedule {
            let needed = total as f64 / schedule.window.as_secs_f64();
            if settings.rate.per_second < needed {
                let takes = Duration::from_secs_f64(total as f64 / settings.rate.per_second);
                ctx.problem(
                    Problem::new(
                        "scan",
                        format!(
                            "a rate of {}/s cannot fit {total} probes into the {:?} spread; the scan will take about {:?}",
                            settings.rate.per_second, schedule.spread, takes
                        ),
                    )
                    .with_hint("raise the rate or lengthen the spread"),
                )
                .await;
            }
        }

        let progress_done = CancellationToken::new();
        let progress = tokio::spawn(progress_loop(
            ctx.clone(),
            total,
            start,
            progress_done.clone(),
        ));
        let stop_watch = {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                ctx.cancel.cancelled().await;
                ctx.stop.stop();
            })
        };

        let launcher = Arc::new(Launcher {
            state: Mutex::new(LaunchState {
                next_position: 0,
                schedule_rng: ChaCha8Rng::seed_from_u64(settings.seed ^ 0x5eed_5eed),
                n_launched: 0,
                n_skipped: 0,
            }),
            walk: ShardWalk::new(space, settings.seed, settings.shard),
            total,
            n_addresses,
            start,
        });
        Ok(Scan {
            ctx,
            launcher,
            plan,
            started_at,
            options_record,
            forwarder,
            stop_watch,
            progress,
            progress_done,
        })
    }

    /// Flushes the events, stops the scan's tasks, and says how it went.
    async fn finish(self) -> ScanOutcome {
        let Scan {
            ctx,
            launcher,
            plan,
            started_at,
            options_record,
            forwarder,
            stop_watch,
            progress,
            progress_done,
        } = self;
        // Every result out before the final progress event.
        ctx.flush().await;
        forwarder.abort();
        stop_watch.abort();
        progress_done.cancel();
        let _ = progress.await;

        let total = launcher.total;
        let (n_launched, n_skipped) = launcher.counts();
        let n_done = ctx.n_done.load(Ordering::Relaxed);
        let attempts = ctx.rate.n_granted();
        let mut counts = ctx.counts.snapshot();
        counts.undecided =
            total - (counts.open + counts.closed + counts.filtered + counts.open_filtered);
        let complete =
            !ctx.cancel.is_cancelled() && n_launched + n_skipped == total && n_done == n_launched;
        let elapsed = launcher.start.elapsed();
        let final_progress = ScanEvent::Progress {
            done: n_done,
            total,
            open: counts.open,
            rate: if elapsed.is_zero() {
                0.0
            } else {
                attempts as f64 / elapsed.as_secs_f64()
            },
            eta: Some(Duration::ZERO).filter(|_| complete),
        };
        if !ctx.receiver_gone.load(Ordering::Relaxed) {
            let _ = ctx.events.send(final_progress).await;
        }
        let problems = ctx.problems.lock().map(|p| p.clone()).unwrap_or_default();

        let settings = ctx.settings.clone();
        let info = ScanInfo {
            id: 0,
            targets: plan.targets.given.clone(),
            resolved: plan.targets.resolved.clone(),
            excluded: plan.targets.excluded.clone(),
            ports: plan.ports.spec().to_owned(),
            profile: settings.profile.as_str().to_owned(),
            seed: settings.seed,
            options: options_record,
            started: started_at,
            finished: Some(OffsetDateTime::now_utc()),
            complete,
            n_probes: attempts,
        };
        ScanOutcome {
            info,
            settings,
            counts,
            problems,
        }
    }
}

async fn report_join<T: Transport>(ctx: &Context<T>, joined: Result<(), tokio::task::JoinError>) {
    match joined {
        Err(err) if err.is_panic() => {
            ctx.problem(Problem::new("scan", format!("a scan lane panicked: {err}")))
                .await;
        }
        _ => {}
    }
}

async fn progress_loop<T: Transport>(
    ctx: Arc<Context<T>>,
    total: u64,
    start: Instant,
    done: CancellationToken,
) {
    let interval = ctx.settings.progress_interval;
    let mut ticker = tokio::time::interval_at(start + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_attempts = 0;
    let mut last_at = start;
    loop {
        tokio::select! {
            biased;
            () = done.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = Instant::now();
        let attempts = ctx.rate.n_granted();
        let n_done = ctx.n_done.load(Ordering::Relaxed);
        let since = (now - last_at).as_secs_f64();
        let rate = if since > 0.0 {
            (attempts - last_attempts) as f64 / since
        } else {
            0.0
        };
        (last_attempts, last_at) = (attempts, now);
        let elapsed = now - start;
        let mut eta = (n_done > 0)
            .then(|| elapsed.mul_f64((total - n_done.min(total)) as f64 / n_done as f64));
        if let Some(schedule) = ctx.settings.schedule {
            let to_window_end = schedule.spread.saturating_sub(elapsed);
            eta = Some(eta.map_or(to_window_end, |eta| eta.max(to_window_end)));
        }
        // Progress is advisory: when the receiver is behind, skip a tick rather
        // than slow the scan.
        let _ = ctx.events.try_send(ScanEvent::Progress {
            done: n_done,
            total,
            open: ctx.open_count(),
            rate,
            eta,
        });
    }
}

mod batched;
#[cfg(test)]
mod syn_tests;
#[cfg(test)]
mod tests;
