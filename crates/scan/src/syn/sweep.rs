//! The SYN scan's bookkeeping, with no socket, no task and no clock of its
//! own: which ports have a SYN in flight, when each batch of SYNs times out,
//! which ports are due for a retry, and what an answer decides. The engine's
//! sender (`engine::batched`) drives it: it claims ports from the
//! permutation, sends the [`Syn`]s a [`Sweep`] hands it through a
//! [`PacketIo`] in batches, and feeds back the answers and the time.
//!
//! There is no timer and no task per probe. Every SYN sent in one batch
//! shares one deadline, and the deadlines sit in a queue in order; an answer
//! is matched by its acknowledgement number (the SYN cookie, recomputed
//! from the answer's address and port, so no answer needs a lookup to be
//! told apart from a forgery) and then by the port's entry in the table of
//! ports in flight, which is as large as the scan's window and no larger.
//!
//! Port states are nmap's `-sS` ones: a SYN-ACK is open, a RST closed, an
//! ICMP unreachable filtered at once, and silence filtered only after the
//! retries. A SYN the kernel refused to send is classified like a failed
//! `connect(2)` ([`classify_connect_error`]): unreachable routes decide the
//! port, and shortages on this machine back off and retry until they are
//! given up as a problem.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use perimeter_model::PortState;
use tokio::time::Instant;

use super::codec::{Answer, Cookies, Reply};
use crate::engine::RttEstimator;
use crate::transport::{Connect, classify_connect_error};

/// One SYN to send: where, and the sequence number (the cookie) it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syn {
    pub address: SocketAddr,
    pub seq: u32,
}

/// What sends SYNs and reads their answers, in batches: raw sockets
/// ([`super::SynSockets`]) or, in tests, the scripted network
/// ([`crate::transport::fake::FakeNetwork::packets`]).
pub trait PacketIo: Send + 'static {
    /// The source port of every SYN of the scan (the answers' destination).
    fn source_port(&self) -> u16;

    /// Sends `syns` in order and returns how many it dealt with: sent, or
    /// refused for a reason of their own (no route, a local rule) and listed
    /// in `failed` by index with the error. A shortage that stops every send
    /// (a full send buffer) ends the call: the SYN that met it is listed in
    /// `failed` and the ones after it are not tried.
    fn send(&mut self, syns: &[Syn], failed: &mut Vec<(usize, io::Error)>) -> usize;

    /// Appends the answers already queued, at most `max`, without waiting.
    fn receive(&mut self, replies: &mut Vec<Reply>, max: usize);

    /// Resolves when answers may be queued (it may resolve spuriously).
    fn readable(&mut self) -> impl Future<Output = ()> + Send;

    /// How many sender threads to run, each with a [`PacketIo::another`]
    /// of its own and a runtime whose reactor watches only its sockets; 0
    /// runs one sender as a task of the caller's runtime.
    ///
    /// Real sockets want threads. Registered with the scan's runtime, every
    /// answer that lands while the sender is busy wakes an idle worker of
    /// that runtime only to note it: a context switch per packet (57,000 to
    /// 97,000 for 65,535 ports, measured). And on a local network the kernel
    /// does the whole path of a packet (our output, the bridge, the target's
    /// answer, our input) inside the sender's `sendmmsg(2)`: one sender
    /// keeps all of it on one CPU. The scripted network runs as a task,
    /// under the tests' paused clock.
    fn sender_threads(&self) -> usize {
        0
    }

    /// Another handle on the same sockets, for another sender thread.
    fn another(&self) -> io::Result<Self>
    where
        Self: Sized,
    {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "one sender only",
        ))
    }
}

/// What the sweep decided about one port.
#[derive(Debug)]
pub(crate) enum Outcome {
    State(PortState),
    /// Local errors did not clear: the last one.
    Failed(io::Error),
}

#[derive(Debug)]
pub(crate) struct Decided {
    pub(crate) address: SocketAddr,
    pub(crate) outcome: Outcome,
}

/// How a sweep times out and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SweepSettings {
    /// The most ports in flight at once (sent or about to be, and not yet
    /// decided).
    pub(crate) window: usize,
    /// Extra SYNs for a port that stayed silent.
    pub(crate) retries: u32,
    /// The timeout, or with `min_timeout` the upper bound of the adaptive one.
    pub(crate) timeout: Duration,
    pub(crate) min_timeout: Option<Duration>,
    /// Local errors tolerated per port before it is given up.
    pub(crate) max_local_errors: u32,
}

type Key = (IpAddr, u16);

/// A port in flight.
#[derive(Debug)]
struct InFlight {
    /// SYNs sent so far.
    n_sent: u32,
    /// Counts every SYN handed to the sockets, sent or not: the batch it
    /// went with is known by it, so that a SYN taken back (not sent after
    /// all) leaves its batch's deadline with nothing to time out.
    attempt: u32,
    n_local_errors: u32,
    /// When the latest SYN went out (for the round-trip estimate).
    sent_at: Instant,
}

/// The SYNs of one batch and the moment all of them have timed out.
#[derive(Debug)]
struct Expiry {
    deadline: Instant,
    /// Each port with its attempt in this batch: an entry whose port has
    /// since been decided, sent again or taken back is stale.
    ports: Vec<(Key, u32)>,
}

/// The table of ports in flight and the queues that time them.
#[derive(Debug)]
pub(crate) struct Sweep {
    cookies: Cookies,
    source_port: u16,
    settings: SweepSettings,
    rtt: RttEstimator,
    in_flight: HashMap<Key, InFlight>,
    /// Deadlines of the batches sent, earliest first.
    expiries: VecDeque<Expiry>,
    /// Ports to send (again): silent ones due for a retry, new ones whose
    /// SYN was not sent yet, in the order they came.
    due: VecDeque<Key>,
    /// Ports that met a local error, with when to try them again.
    backoff: Vec<(Instant, Key)>,
    /// Answers that matched no port in flight (late, duplicated, or not
    /// ours): for the record, not acted on.
    n_unmatched: u64,
}

impl Sweep {
    pub(crate) fn new(settings: SweepSettings, source_port: u16) -> Sweep {
        Sweep {
            cookies: Cookies::new(),
            source_port,
            settings,
            rtt: RttEstimator::default(),
            in_flight: HashMap::with_capacity(settings.window.min(1 << 16)),
            expiries: VecDeque::new(),
            due: VecDeque::new(),
            backoff: Vec::new(),
            n_unmatched: 0,
        }
    }

    /// Ports in flight, counting the ones due for a retry.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether a new port may be claimed.
    pub(crate) fn has_room(&self) -> bool {
        self.in_flight.len() < self.settings.window
    }

    pub(crate) fn n_unmatched(&self) -> u64 {
        self.n_unmatched
    }

    /// Takes `address` into the table; its SYN goes out with the next batch
    /// ([`Sweep::next_due`]).
    pub(crate) fn launch(&mut self, address: SocketAddr, now: Instant) {
        let key = (address.ip(), address.port());
        self.in_flight.insert(
            key,
            InFlight {
                n_sent: 0,
                attempt: 0,
                n_local_errors: 0,
                sent_at: now,
            },
        );
        self.due.push_back(key);
    }

    /// The next port whose SYN is due: a retry, a port whose back-off is
    /// over, or a launched one.
    pub(crate) fn next_due(&mut self, now: Instant) -> Option<SocketAddr> {
        if let Some(at) = self.backoff.iter().position(|(when, _)| *when <= now) {
            let (_, key) = self.backoff.swap_remove(at);
            if self.in_flight.contains_key(&key) {
                return Some(SocketAddr::new(key.0, key.1));
            }
        }
        while let Some(key) = self.due.pop_front() {
            if self.in_flight.contains_key(&key) {
                return Some(SocketAddr::new(key.0, key.1));
            }
        }
        None
    }

    /// Puts back ports taken with [`Sweep::next_due`] and not marked sent
    /// (no rate token for them), first in line again.
    pub(crate) fn put_back(&mut self, addresses: &[SocketAddr]) {
        for address in addresses.iter().rev() {
            self.due.push_front((address.ip(), address.port()));
        }
    }

    /// Takes back ports marked sent whose SYNs were not tried after all (the
    /// sending stopped short at a shortage), first in line again.
    pub(crate) fn put_back_unsent(&mut self, addresses: &[SocketAddr]) {
        for address in addresses {
            self.take_back((address.ip(), address.port()));
        }
        self.put_back(addresses);
    }

    /// Undoes the mark of a SYN that did not go out.
    fn take_back(&mut self, key: Key) -> Option<&mut InFlight> {
        let port = self.in_flight.get_mut(&key)?;
        port.n_sent = port.n_sent.saturating_sub(1);
        // Its batch's deadline no longer concerns it.
        port.attempt += 1;
        Some(port)
    }

    /// The SYN for `address`.
    pub(crate) fn syn(&self, address: SocketAddr) -> Syn {
        Syn {
            address,
            seq: self
                .cookies
                .seq(address.ip(), address.port(), self.source_port),
        }
    }

    /// The timeout for a SYN sent now.
    fn timeout(&self) -> Duration {
        match self.settings.min_timeout {
            Some(min) => self.rtt.timeout(min, self.settings.timeout),
            None => self.settings.timeout,
        }
    }

    /// Marks the SYNs to `addresses` sent at `now`, as one batch with one
    /// deadline. Marked before they go out, so that an answer read at once
    /// (on a local network the kernel has it queued before `sendmmsg(2)`
    /// returns, and another sender may read it) finds its port waiting; a
    /// SYN that does not go out after all is taken back
    /// ([`Sweep::not_sent`], [`Sweep::put_back_unsent`]).
    pub(crate) fn sent(&mut self, addresses: &[SocketAddr], now: Instant) {
        let mut ports = Vec::with_capacity(addresses.len());
        for address in addresses {
            let key = (address.ip(), address.port());
            if let Some(port) = self.in_flight.get_mut(&key) {
                port.n_sent += 1;
                port.attempt += 1;
                port.sent_at = now;
                ports.push((key, port.attempt));
            }
        }
        if ports.is_empty() {
            return;
        }
        let deadline = now + self.timeout();
        // Deadlines mostly come in order; an adaptive timeout that shrank
        // puts a batch a little ahead of the last ones.
        let at = self
            .expiries
            .iter()
            .rposition(|expiry| expiry.deadline <= deadline)
            .map_or(0, |before| before + 1);
        self.expiries.insert(at, Expiry { deadline, ports });
    }

    /// The SYN to `address`, marked sent, was refused by this machine with
    /// `err`: the port is decided when the error says something about it
    /// (no route), otherwise it backs off and is tried again, up to the
    /// limit.
    pub(crate) fn not_sent(
        &mut self,
        address: SocketAddr,
        err: io::Error,
        now: Instant,
    ) -> Option<Decided> {
        let key = (address.ip(), address.port());
        let decided = |outcome| Decided { address, outcome };
        match classify_connect_error::<()>(err, address) {
            Connect::LocalError(err) => {
                let max_local_errors = self.settings.max_local_errors;
                let port = self.take_back(key)?;
                port.n_local_errors += 1;
                let n_local_errors = port.n_local_errors;
                if n_local_errors > max_local_errors {
                    self.in_flight.remove(&key);
                    return Some(decided(Outcome::Failed(err)));
                }
                // The shortage is usually the whole machine's: back off as
                // a lane of the connect scan does.
                let backoff = Duration::from_millis(50) * (1 << n_local_errors.min(5));
                self.backoff.push((now + backoff, key));
                None
            }
            other => {
                self.in_flight.remove(&key)?;
                let state = match other {
                    Connect::Open(()) => PortState::Open,
                    Connect::Closed => PortState::Closed,
                    Connect::Filtered(_) | Connect::LocalError(_) => PortState::Filtered,
                };
                Some(decided(Outcome::State(state)))
            }
        }
    }

    /// What `reply` decides, if it answers a SYN of ours still in flight.
    pub(crate) fn answer(&mut self, reply: &Reply, now: Instant) -> Option<Decided> {
        let key = (reply.from, reply.port);
        let expected = self
            .cookies
            .seq(reply.from, reply.port, self.source_port)
            .wrapping_add(1);
        if reply.to_port != self.source_port || reply.ack != expected {
            // Not an answer to any SYN of this scan.
            self.n_unmatched += 1;
            return None;
        }
        let Some(port) = self.in_flight.get(&key).filter(|port| port.n_sent > 0) else {
            self.n_unmatched += 1;
            return None;
        };
        let state = match reply.answer {
            Answer::SynAck => PortState::Open,
            Answer::Rst => PortState::Closed,
            Answer::Unreachable => PortState::Filtered,
        };
        if reply.answer != Answer::Unreachable {
            self.rtt
                .observe(now.saturating_duration_since(port.sent_at));
        }
        self.in_flight.remove(&key);
        Some(Decided {
            address: SocketAddr::new(key.0, key.1),
            outcome: Outcome::State(state),
        })
    }

    /// Goes through the batches whose deadline has passed: a port still
    /// silent since that batch is due for a retry, or filtered once its
    /// retries are spent.
    pub(crate) fn expire(&mut self, now: Instant, decided: &mut Vec<Decided>) {
        while self
            .expiries
            .front()
            .is_some_and(|expiry| expiry.deadline <= now)
        {
            let Some(expiry) = self.expiries.pop_front() else {
                break;
            };
            for (key, attempt) in expiry.ports {
                let Some(port) = self.in_flight.get(&key) else {
                    continue;
                };
                if port.attempt != attempt {
                    continue;
                }
                if port.n_sent > self.settings.retries {
                    self.in_flight.remove(&key);
                    decided.push(Decided {
                        address: SocketAddr::new(key.0, key.1),
                        outcome: Outcome::State(PortState::Filtered),
                    });
                } else {
                    self.due.push_back(key);
                }
            }
        }
    }

    /// When the sweep next has something to do with no answer coming: a
    /// batch's deadline or the end of a back-off.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        let deadline = self.expiries.front().map(|expiry| expiry.deadline);
        let backoff = self.backoff.iter().map(|(when, _)| *when).min();
        match (deadline, backoff) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether a SYN is waiting to be sent now.
    #[cfg(test)]
    fn has_due(&self, now: Instant) -> bool {
        !self.due.is_empty() || self.backoff.iter().any(|(when, _)| *when <= now)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const TARGET: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
    const SOURCE_PORT: u16 = 40_000;

    fn settings() -> SweepSettings {
        SweepSettings {
            window: 4,
            retries: 1,
            timeout: Duration::from_millis(100),
            min_timeout: None,
            max_local_errors: 2,
        }
    }

    fn at(port: u16) -> SocketAddr {
        SocketAddr::new(TARGET, port)
    }

    fn reply(sweep: &Sweep, port: u16, answer: Answer) -> Reply {
        Reply {
            from: TARGET,
            port,
            to_port: SOURCE_PORT,
            ack: sweep.syn(at(port)).seq.wrapping_add(1),
            answer,
        }
    }

    /// Launches `ports` and sends them as one batch at `now`.
    fn send(sweep: &mut Sweep, ports: &[u16], now: Instant) -> Vec<SocketAddr> {
        for &port in ports {
            sweep.launch(at(port), now);
        }
        let mut batch = Vec::new();
        while let Some(address) = sweep.next_due(now) {
            batch.push(address);
        }
        sweep.sent(&batch, now);
        batch
    }

    fn state(decided: Option<Decided>) -> Option<(u16, PortState)> {
        match decided? {
            Decided {
                address,
                outcome: Outcome::State(state),
            } => Some((address.port(), state)),
            Decided { .. } => None,
        }
    }

    #[test]
    fn answers_decide_by_kind_and_only_with_the_cookie() {
        let now = Instant::now();
        let mut sweep = Sweep::new(settings(), SOURCE_PORT);
        send(&mut sweep, &[22, 23, 24], now);
        // A wrong acknowledgement, or our cookie to another source port: not
        // ours, nothing decided.
        let mut forged = reply(&sweep, 22, Answer::SynAck);
        forged.ack ^= 1;
        assert!(sweep.answer(&forged, now).is_none());
        let mut elsewhere = reply(&sweep, 22, Answer::SynAck);
        elsewhere.to_port += 1;
        assert!(sweep.answer(&elsewhere, now).is_none());
        assert_eq!(sweep.n_unmatched(), 2);

        let open = reply(&sweep, 22, Answer::SynAck);
        assert_eq!(state(sweep.answer(&open, now)), Some((22, PortState::Open)));
        // A duplicate finds nothing in flight.
        assert!(sweep.answer(&open, now).is_none());
        let closed = reply(&sweep, 23, Answer::Rst);
        assert_eq!(
            state(sweep.answer(&closed, now)),
            Some((23, PortState::Closed))
        );
        let unreachable = reply(&sweep, 24, Answer::Unreachable);
        assert_eq!(
            state(sweep.answer(&unreachable, now)),
            Some((24, PortState::Filtered))
        );
        assert_eq!(sweep.in_flight(), 0);
        assert_eq!(sweep.n_unmatched(), 3);
    }

    #[test]
    fn silence_is_retried_then_filtered() {
        let start = Instant::now();
        let mut sweep = Sweep::new(settings(), SOURCE_PORT);
        send(&mut sweep, &[80, 81], start);
        let mut decided = Vec::new();
        // Before the deadline nothing is due.
        sweep.expire(start + Duration::from_millis(99), &mut decided);
        assert!(decided.is_empty());
        assert!(!sweep.has_due(start + Duration::from_millis(99)));
        assert_eq!(sweep.next_wake(), Some(start + Duration::from_millis(100)));

        // At the deadline both are due again (one retry each).
        let retry_at = start + Duration::from_millis(100);
        sweep.expire(retry_at, &mut decided);
        assert!(decided.is_empty());
        let mut again = Vec::new();
        while let Some(address) = sweep.next_due(retry_at) {
            again.push(address);
        }
        assert_eq!(again, [at(80), at(81)]);
        sweep.sent(&again, retry_at);
        // 81 answers the retry; 80 stays silent and is filtered at the
        // second deadline.
        let closed = reply(&sweep, 81, Answer::Rst);
        assert_eq!(
            state(sweep.answer(&closed, retry_at)),
            Some((81, PortState::Closed))
        );
        sweep.expire(retry_at + Duration::from_millis(100), &mut decided);
        let states: Vec<_> = decided.into_iter().map(|d| state(Some(d))).collect();
        assert_eq!(states, [Some((80, PortState::Filtered))]);
        assert_eq!(sweep.in_flight(), 0);
        assert_eq!(sweep.next_wake(), None);
    }

    #[test]
    fn a_late_answer_to_the_first_syn_still_counts() {
        let start = Instant::now();
        let mut sweep = Sweep::new(settings(), SOURCE_PORT);
        send(&mut sweep, &[443], start);
        let mut decided = Vec::new();
        sweep.expire(start + Duration::from_millis(100), &mut decided);
        assert!(sweep.has_due(start + Duration::from_millis(100)));
        // The answer comes before the retry went out: decided, and the retry
        // is dropped.
        let open = reply(&sweep, 443, Answer::SynAck);
        assert_eq!(
            state(sweep.answer(&open, start + Duration::from_millis(101))),
            Some((443, PortState::Open))
        );
        assert_eq!(sweep.next_due(start + Duration::from_millis(101)), None);
    }

    #[test]
    fn the_window_bounds_ports_in_flight() {
        let now = Instant::now();
        let mut sweep = Sweep::new(settings(), SOURCE_PORT);
        for port in 1..=4 {
            assert!(sweep.has_room());
            sweep.launch(at(port), now);
        }
        assert!(!sweep.has_room());
        // Ports taken but not sent (no rate token) come back first in line.
        let first = sweep.next_due(now).expect("due");
        let second = sweep.next_due(now).expect("due");
        sweep.put_back(&[first, second]);
        assert_eq!(sweep.next_due(now), Some(first));
        assert_eq!(sweep.in_flight(), 4);
    }

    #[test]
    fn local_errors_back_off_then_fail_and_no_route_decides() {
        use nix::libc;
        let start = Instant::now();
        let mut sweep = Sweep::new(settings(), SOURCE_PORT);
        send(&mut sweep, &[1, 2], start);
        let enobufs = || io::Error::from_raw_os_error(libc::ENOBUFS);
        // No route to the host is an answer about the port: filtered.
        assert_eq!(
            state(sweep.not_sent(
                at(2),
                io::Error::from_raw_os_error(libc::EHOSTUNREACH),
                start
            )),
            Some((2, PortState::Filtered))
        );
        // A shortage here backs off 100 ms, then 200 ms, then gives up.
        assert!(sweep.not_sent(at(1), enobufs(), start).is_none());
        assert_eq!(sweep.next_due(start), None);
        let later = start + Duration::from_millis(100);
        assert_eq!(sweep.next_wake(), Some(later));
        // The SYN taken back is not timed out with its batch.
        let mut decided = Vec::new();
        sweep.expire(later, &mut decided);
        assert!(decided.is_empty());
        assert_eq!(sweep.next_due(later), Some(at(1)));
        assert_eq!(sweep.next_due(later), None);
        sweep.sent(&[at(1)], later);
        assert!(sweep.not_sent(at(1), enobufs(), later).is_none());
        let later = later + Duration::from_millis(200);
        assert_eq!(sweep.next_due(later), Some(at(1)));
        sweep.sent(&[at(1)], later);
        assert!(matches!(
            sweep.not_sent(at(1), enobufs(), later),
            Some(Decided {
                outcome: Outcome::Failed(_),
                ..
            })
        ));
        assert_eq!(sweep.in_flight(), 0);
    }

    #[test]
    fn the_adaptive_timeout_follows_the_round_trip() {
        let start = Instant::now();
        let mut sweep = Sweep::new(
            SweepSettings {
                min_timeout: Some(Duration::from_millis(20)),
                timeout: Duration::from_secs(1),
                ..settings()
            },
            SOURCE_PORT,
        );
        // No sample yet: the upper bound.
        send(&mut sweep, &[1], start);
        assert_eq!(sweep.next_wake(), Some(start + Duration::from_secs(1)));
        let answered = start + Duration::from_millis(2);
        let closed = reply(&sweep, 1, Answer::Rst);
        assert!(sweep.answer(&closed, answered).is_some());
        // A 2 ms round trip: srtt + 4 rttvar is 6 ms, under the 20 ms floor.
        send(&mut sweep, &[2], answered);
        assert_eq!(sweep.expiries.len(), 2);
        assert_eq!(
            sweep.expiries.front().map(|e| e.deadline),
            Some(answered + Duration::from_millis(20))
        );
    }
}
