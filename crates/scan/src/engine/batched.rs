//! The SYN scan's senders: loops that walk the permutation and send SYNs in
//! batches, read the answers in batches, and keep the ports in flight in one
//! shared [`Sweep`], with no task, timer or wake-up per probe (as masscan
//! and ZMap do it; a lane per probe, awaiting each answer, spent more time in
//! the runtime than in the network).
//!
//! Each turn of a sender reads every answer already queued, times out the
//! batches whose deadline has passed, and sends the next batch: ports due
//! for a retry first, then new ones claimed from the [`Launcher`] while the
//! window (the scan's concurrency) has room, as many as the rate limiter
//! grants tokens for. The launcher is the connect scan's, so the
//! permutation, the target set and its exclusions are the same, and the
//! limiter is the same hard ceiling. When a turn finds nothing to do, the
//! sender sleeps until an answer is queued, the next deadline, the next
//! token or the stop.
//!
//! There is one sender per CPU (up to a few) when the sockets ask for it
//! ([`PacketIo::sender_threads`]), each on a thread of its own, because on a
//! local network the kernel does a packet's whole path inside the sender's
//! `sendmmsg(2)`. They share the sweep under one lock, taken twice a turn and
//! never across a system call: the bookkeeping is a small part of a turn.
//!
//! Open ports are identified as the connect scan's are, by
//! [`Context::conclude`] on tasks of the scan's runtime (at most the
//! concurrency at once per sender); closed and filtered ones are counted
//! here, and sent as events only when the caller asked for every state.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use perimeter_model::PortState;
use tokio::runtime::Handle;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    Claim, Context, Launcher, MAX_LOCAL_ERRORS, Verdict, local_error_problem, report_join,
};
use crate::syn::{BATCH, Decided, Outcome, PacketIo, Sweep, SweepSettings};
use crate::transport::Transport;

/// The most answers read in one turn, so that a flood of answers still lets
/// the sender send.
const MAX_REPLIES_PER_TURN: usize = 4 * BATCH;
/// Busy turns between two yields to the runtime, for a sender that shares
/// it (the one sender of [`PacketIo::sender_threads`] 0).
const TURNS_PER_YIELD: u32 = 8;
/// How long sending pauses after a shortage on this machine (a full send
/// buffer): answers and deadlines are still handled meanwhile.
const SHORTAGE_PAUSE: Duration = Duration::from_millis(10);

/// What the senders share: the sweep and the launch state under one lock,
/// and the signal that every port is decided (so that a sender asleep until
/// a deadline need not wait for it).
pub(super) struct Shared {
    state: Mutex<State>,
    all_decided: CancellationToken,
}

struct State {
    sweep: Sweep,
    /// A claimed port whose launch time (in a spread scan) has not come.
    waiting: Option<Claim>,
    claims_left: bool,
    /// Sending pauses until then after a shortage.
    paused_until: Option<Instant>,
}

impl Shared {
    pub(super) fn new<T: Transport>(ctx: &Context<T>, source_port: u16) -> Shared {
        let settings = &ctx.settings;
        let state = State {
            sweep: Sweep::new(
                SweepSettings {
                    window: settings.concurrency.max(1),
                    retries: settings.retries,
                    timeout: settings.timeout,
                    // The sweep keeps one estimate for the whole scan (a
                    // batch of SYNs to many hosts shares one deadline), not
                    // the connect scan's per host: it adapts only where the
                    // profile puts speed first; the normal profile's SYNs
                    // wait out the whole timeout.
                    min_timeout: settings
                        .min_timeout
                        .filter(|_| settings.profile == crate::options::Profile::Fast),
                    max_local_errors: MAX_LOCAL_ERRORS,
                },
                source_port,
            ),
            waiting: None,
            claims_left: true,
            paused_until: None,
        };
        Shared {
            state: Mutex::new(state),
            all_decided: CancellationToken::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A sender that panicked while holding the lock ends its thread; the
        // others carry on with the state as it was, which every statement
        // leaves consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Answers that matched no SYN of the scan: for the record.
    pub(super) fn n_unmatched(&self) -> u64 {
        self.lock().sweep.n_unmatched()
    }
}

impl State {
    /// Whether every port has been claimed and decided.
    fn is_finished(&self) -> bool {
        !self.claims_left && self.waiting.is_none() && self.sweep.in_flight() == 0
    }
}

/// Why a sender woke, besides an answer.
struct Wake {
    at: Option<Instant>,
    for_token: bool,
}

/// One sender: decides ports until every one the launcher hands out is
/// decided or the scan stops, then waits for the identifications it
/// started.
pub(super) async fn sender<T: Transport, P: PacketIo>(
    ctx: &Arc<Context<T>>,
    launcher: &Launcher,
    shared: &Shared,
    mut io: P,
    runtime: &Handle,
    shares_runtime: bool,
) {
    let slot = ctx.stop.slot();
    let mut identifications = Identifications::new(ctx.clone(), runtime.clone());
    let mut batch: Vec<SocketAddr> = Vec::with_capacity(BATCH);
    let mut syns = Vec::with_capacity(BATCH);
    let mut failed = Vec::new();
    let mut replies = Vec::with_capacity(MAX_REPLIES_PER_TURN);
    let mut decided = Vec::new();
    let mut slept_for_token: Option<Instant> = None;
    let mut n_busy_turns = 0u32;

    while !ctx.stop.is_stopped() && !shared.all_decided.is_cancelled() {
        replies.clear();
        io.receive(&mut replies, MAX_REPLIES_PER_TURN);
        let now = Instant::now();
        let (wake, finished) = {
            let mut state = shared.lock();
            let State {
                sweep,
                waiting,
                claims_left,
                paused_until,
            } = &mut *state;
            decided.extend(replies.iter().filter_map(|reply| sweep.answer(reply, now)));
            sweep.expire(now, &mut decided);

            // The next batch: ports due again first, then new ones.
            batch.clear();
            let mut launch_at = None;
            if paused_until.is_some_and(|until| until <= now) {
                *paused_until = None;
            }
            let sending = paused_until.is_none();
            while sending && batch.len() < BATCH {
                if let Some(address) = sweep.next_due(now) {
                    batch.push(address);
                    continue;
                }
                if !*claims_left || !sweep.has_room() {
                    break;
                }
                let Some(claim) = waiting.take().or_else(|| launcher.claim(ctx)) else {
                    *claims_left = false;
                    break;
                };
                if let Some(at) = claim.launch_at.filter(|at| *at > now) {
                    launch_at = Some(at);
                    *waiting = Some(claim);
                    break;
                }
                sweep.launch(claim.address, now);
            }
            let mut token_at = None;
            if !batch.is_empty() {
                let wanted = u32::try_from(batch.len()).unwrap_or(u32::MAX);
                let (granted, next) = ctx.rate.try_take(wanted, slept_for_token.take());
                token_at = next;
                let granted = usize::try_from(granted).unwrap_or(batch.len());
                if granted < batch.len() {
                    sweep.put_back(batch.get(granted..).unwrap_or_default());
                    batch.truncate(granted);
                }
                sweep.sent(&batch, now);
                syns.clear();
                syns.extend(batch.iter().map(|&address| sweep.syn(address)));
            }
            // What is due already was done this turn, or waits for one of
            // these (a back-off due while the tokens ran out waits for a
            // token): only what is still to come can wake the sender.
            let next_wake = [sweep.next_wake(), token_at, launch_at, *paused_until]
                .into_iter()
                .flatten()
                .filter(|at| *at > now)
                .min();
            let wake = Wake {
                at: next_wake,
                for_token: next_wake.is_some() && next_wake == token_at,
            };
            (wake, state.is_finished())
        };
        // The stop signal reaches the senders one task later than the token
        // fires; asking the token itself (once per batch) keeps a token
        // granted in that gap from becoming a packet.
        if ctx.cancel.is_cancelled() {
            break;
        }

        if !batch.is_empty() {
            failed.clear();
            let n_handled = io.send(&syns, &mut failed);
            if !failed.is_empty() || n_handled < batch.len() {
                let mut state = shared.lock();
                for (i, err) in failed.drain(..) {
                    if let Some(&address) = batch.get(i) {
                        decided.extend(state.sweep.not_sent(address, err, now));
                    }
                }
                if n_handled < batch.len() {
                    state
                        .sweep
                        .put_back_unsent(batch.get(n_handled..).unwrap_or_default());
                    state.paused_until = Some(now + SHORTAGE_PAUSE);
                }
            }
        }

        let worked = !replies.is_empty() || !batch.is_empty() || !decided.is_empty();
        for Decided { address, outcome } in decided.drain(..) {
            match outcome {
                Outcome::State(PortState::Open) if ctx.settings.identify => {
                    identifications.push(address);
                }
                Outcome::State(state)
                    if state == PortState::Open || ctx.settings.report_unanswered =>
                {
                    let result = ctx.conclude(address, state, None).await;
                    ctx.report(Verdict::Decided(result)).await;
                }
                Outcome::State(state) => {
                    // Counted, not sent: nobody asked for closed ports.
                    ctx.counts.add(state);
                    ctx.n_done.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Failed(err) => {
                    ctx.report(Verdict::Failed(local_error_problem(address, &err)))
                        .await;
                }
            }
        }
        identifications.reap().await;

        if finished {
            shared.all_decided.cancel();
            break;
        }
        if worked {
            n_busy_turns += 1;
            if shares_runtime && n_busy_turns.is_multiple_of(TURNS_PER_YIELD) {
                tokio::task::yield_now().await;
            }
            continue;
        }
        // Nothing came and nothing went: sleep until something can happen.
        let sleep = async {
            match wake.at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = ctx.stop.stopped(&slot) => break,
            () = shared.all_decided.cancelled() => break,
            () = io.readable() => {}
            () = sleep => {
                if wake.for_token {
                    slept_for_token = wake.at;
                }
            }
            () = identifications.join_next() => {}
        }
    }
    // Ports still in flight at a stop are abandoned (undecided); open ones
    // already decided are reported, identified unless the scan was
    // cancelled.
    identifications.finish().await;
}

/// The identification of open ports, each on a task of its own, at most the
/// scan's concurrency at once; the rest wait in line.
struct Identifications<T: Transport> {
    ctx: Arc<Context<T>>,
    /// The scan's runtime, not a sender's: identification waits on
    /// connections and timers of its own.
    runtime: Handle,
    running: JoinSet<()>,
    waiting: VecDeque<SocketAddr>,
}

impl<T: Transport> Identifications<T> {
    fn new(ctx: Arc<Context<T>>, runtime: Handle) -> Identifications<T> {
        Identifications {
            ctx,
            runtime,
            running: JoinSet::new(),
            waiting: VecDeque::new(),
        }
    }

    fn push(&mut self, address: SocketAddr) {
        if self.running.len() < self.ctx.settings.concurrency.max(1) {
            self.spawn(address);
        } else {
            self.waiting.push_back(address);
        }
    }

    fn spawn(&mut self, address: SocketAddr) {
        let ctx = self.ctx.clone();
        self.running.spawn_on(
            async move {
                let result = ctx.conclude(address, PortState::Open, None).await;
                ctx.report(Verdict::Decided(result)).await;
            },
            &self.runtime,
        );
    }

    async fn joined(&mut self, joined: Result<(), tokio::task::JoinError>) {
        report_join(&self.ctx, joined).await;
        if let Some(address) = self.waiting.pop_front() {
            self.spawn(address);
        }
    }

    /// Collects the finished ones without waiting.
    async fn reap(&mut self) {
        while let Some(joined) = self.running.try_join_next() {
            self.joined(joined).await;
        }
    }

    /// Resolves when one finishes; never while none runs.
    async fn join_next(&mut self) {
        match self.running.join_next().await {
            Some(joined) => self.joined(joined).await,
            None => std::future::pending().await,
        }
    }

    /// Waits for every one, the waiting ones included.
    async fn finish(mut self) {
        while let Some(joined) = self.running.join_next().await {
            self.joined(joined).await;
        }
    }
}
