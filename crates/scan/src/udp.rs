//! The UDP scan: for each (address, port) of the permutation, the protocol's
//! questions (`perimeter_probe::udp`, an empty datagram where no protocol is
//! known) from a connected UDP socket, and the port's state as nmap -sU
//! defines it:
//!
//! - **open**: a datagram came back (any datagram: a reply no parser knows
//!   still proves something listens);
//! - **closed**: ICMP port unreachable, which Linux reports on a connected
//!   UDP socket as `ECONNREFUSED`;
//! - **filtered**: another ICMP unreachable (IPv4 codes 0, 1, 2, 9, 10, 13:
//!   network, host, protocol, administratively prohibited; the IPv6
//!   equivalents), as nmap -sU reads them;
//! - **open|filtered**: silence after the retries.
//!
//! No raw socket is needed: the kernel hands a connected socket the ICMP
//! errors about its own datagrams, so an unprivileged scan tells all four
//! states apart. Each socket sets `IP_RECVERR` (`IPV6_RECVERR`): without it
//! Linux keeps the "soft" errors (network and host unreachable, which is also
//! how a failed ARP or neighbour resolution on the local link reports) from
//! a UDP socket, and maps the rest to an errno that loses the ICMP code. The
//! socket waits for readability *or* an error, and reads the error queue
//! (`MSG_ERRQUEUE`, the `sock_extended_err`: origin, type, code, and the
//! address that sent the ICMP error), at most [`MAX_ERRORS`] entries per
//! wait; the errno (`SO_ERROR`) is the fallback where the option could not
//! be set.
//!
//! **Unreachable addresses.** An ICMP network or host unreachable sent by
//! anyone but the target itself (a router, or this host when the link-layer
//! resolution failed) says the address cannot be reached: the address is
//! marked unreachable ([`Unreachable`]), its questions in flight stop
//! waiting, and its ports not yet asked are not asked at all. All of them
//! read *filtered* (the state nmap -sU gives the host unreachable answer;
//! `PortResult` has no reason field, and the nmap XML's reason for a
//! filtered UDP port is already `host-unreach`); the outcome's record counts
//! the addresses (`udp_unreachable_hosts`) and the ports decided so
//! (`udp_unreachable_ports`), which the CLI does not store. A host that says "host
//! unreachable" about itself is alive and filtering that one port (a
//! `reject with icmp host-unreachable` rule), so that answer decides only
//! the port it answered.
//!
//! **Scouts, waits and retries.** The first port met of each address is its
//! scout, asked alone with the profile's whole timeout; the address's other
//! ports wait ([`AddressBook`]) until the scout comes back (an answer, an ICMP
//! error, silence through its retries) or has waited [`SCOUT_WAIT`], longer
//! than the local neighbour resolution takes to fail. So an address nobody
//! holds costs a datagram or two and its ports are filtered; the others are
//! asked with waits that follow the round trips measured on their host, else
//! their network ([`Timing`] over the connect scan's `RttTable`), between
//! the profile's floor and ceiling, doubled on each silence. In the adaptive
//! profiles a silent port is asked again only where that can change its
//! state: always for scouts, once for a port with a protocol question, and
//! wherever loss was seen on the network (an answer that came only to a
//! question asked again); never for an empty datagram on a network without
//! loss. Linux limits the ICMP errors a host sends per destination
//! (`net.ipv4.icmp_ratelimit`, one a second after a burst, not on loopback):
//! the permutation, and the released ports handed out one address after
//! another, spread a scan's datagrams over every host, and nothing waits on
//! one host's limit port by port. A closed port whose ICMP answer the limit
//! swallowed reads open|filtered, as in nmap.
//!
//! Every datagram takes a token from the scan's rate limiter: the ceiling
//! holds for UDP as for TCP.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use perimeter_model::{Finding, PortResult, PortState, Protocol, ScanInfo, Severity};
use perimeter_probe::Identified;
use perimeter_probe::udp::{self, UdpPayload};
use time::OffsetDateTime;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::engine::{ScanError, ScanEvent, ScanOutcome, ScanPlan, StateCounts, fd_budget};
use crate::identify::subject;
use crate::options::Settings;
use crate::rate::RateLimiter;
use crate::rtt::RttTable;
use crate::shard::ShardWalk;

/// The most datagrams read back for one question (an SNMP or memcached
/// reply may come in several); the rest are ignored.
const MAX_DATAGRAMS: usize = 16;
/// The largest datagram read: anything longer is cut, which the parsers
/// treat as a truncated reply.
const MAX_DATAGRAM: usize = 65_535;
/// After a first reply, how long further datagrams of the same answer are
/// waited for.
const MORE_DATAGRAMS: Duration = Duration::from_millis(100);
/// The most error-queue entries read for one question: a socket's queue
/// holds the ICMP errors about its own few datagrams, and the loop stops
/// here whatever else arrives.
const MAX_ERRORS: usize = 8;

thread_local! {
    /// The receive buffer, one per runtime thread: a datagram is read into
    /// it and parsed before the task yields, so no port in flight holds one
    /// of its own (64 KiB times the concurrency, before).
    static RECEIVE_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; MAX_DATAGRAM].into_boxed_slice());
}

/// What one port's questions found.
struct Answer {
    state: PortState,
    identified: Option<Identified>,
    /// The questions that were sent (for the finding's evidence).
    asked: Vec<&'static str>,
    /// Decided by the address being unreachable (filtered without an
    /// answer of the port's own).
    unreachable: bool,
}

impl Answer {
    fn unreachable(asked: Vec<&'static str>) -> Self {
        Self {
            state: PortState::Filtered,
            identified: None,
            asked,
            unreachable: true,
        }
    }
}

/// How long an address's first question (its scout) is given before the
/// address's other ports are asked anyway: longer than Linux takes to give
/// up resolving a neighbour on the local link (`mcast_solicit`, 3 probes,
/// `retrans_time`, 1 s apart) or a router to say host unreachable, so an
/// address nobody holds is found unreachable by its scout alone, and its
/// other ports are filtered without a packet.
const SCOUT_WAIT: Duration = Duration::from_millis(3_500);
/// The least time between two new scouts. An absent address on the local
/// link is reported by this host's own ICMP host unreachable when the
/// neighbour resolution gives up, one per datagram queued, and Linux holds
/// the ICMP errors a namespace sends to `icmp_msgs_per_sec` (1,000 a second
/// after a burst of 50), its own reports included: scouts sent all at once
/// fail all at once, 3 s later, and most reports are dropped (a fast scan of
/// a /24 with 160 absent addresses heard 51 of them). Paced at 250 a second,
/// they fail as they were sent, under the limit.
const SCOUT_INTERVAL: Duration = Duration::from_millis(4);
/// How often the launcher looks at the scouts out when nothing else wakes it.
const SCOUT_TICK: Duration = Duration::from_millis(50);
/// The most ports held back behind their address's scout; past it the walk
/// waits for scouts to come back (a scan of a /8 holds a bounded list).
const MAX_DEFERRED: usize = 1 << 20;
/// The most addresses the launcher remembers; past it, a new address is
/// asked port by port without a scout.
const MAX_ADDRESSES: usize = 1 << 20;

/// Runs a UDP scan of `plan` (its `probes` catalogue is for TCP and is not
/// used), sending each decided port as a [`ScanEvent::Result`]: open ones
/// always, the others when `report_unanswered` asks.
pub async fn run_udp(
    plan: ScanPlan,
    events: mpsc::Sender<ScanEvent>,
    cancel: CancellationToken,
) -> Result<ScanOutcome, ScanError> {
    let started_at = OffsetDateTime::now_utc();
    let targets = &plan.targets.set;
    let ports = plan.ports.ports().to_vec();
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
    // The whole index space, and the part of it this shard walks.
    let space = n_addresses.checked_mul(n_ports).ok_or_else(too_large)?;
    let total = plan.options.shard.len_of(space);
    let fd_limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft);
    let settings = plan.options.settings(total, fd_limit.map(fd_budget))?;
    let mut record = settings.record(total);
    record.insert("protocol".into(), "udp".into());
    let report_unanswered = plan.options.report_unanswered;
    let rate = Arc::new(RateLimiter::new(Some(settings.rate), settings.seed));
    let concurrency = settings.concurrency.max(1);
    let walk = ShardWalk::new(space, settings.seed, settings.shard);
    let mut counts = StateCounts::default();
    let start = Instant::now();
    let mut last_progress = start;
    let mut last_promote = start;
    let mut tasks: JoinSet<Done> = JoinSet::new();
    let mut n_launched = 0u64;
    let mut n_skipped = 0u64;
    // Ports of addresses found unreachable: decided without a question.
    let mut n_unasked = 0u64;
    let identify = settings.identify;
    let timing = Arc::new(Timing::new(&settings));
    let unreachable = Arc::new(Unreachable::default());
    let mut book = AddressBook::default();
    let mut position = 0u64;
    // Scouts waiting for their turn (new scouts leave SCOUT_INTERVAL apart).
    let mut waiting_scouts: VecDeque<(IpAddr, u16, Arc<AtomicU64>)> = VecDeque::new();
    let mut next_scout_at = start;

    'launch: loop {
        if cancel.is_cancelled() {
            break;
        }
        while let Some(done) = tasks.try_join_next() {
            if let Ok(done) = done {
                let unasked = finish(
                    done,
                    &mut book,
                    &unreachable,
                    &mut counts,
                    &events,
                    report_unanswered,
                )
                .await;
                n_unasked += unasked;
            }
        }
        if last_promote.elapsed() >= SCOUT_TICK {
            last_promote = Instant::now();
            book.promote(start.elapsed());
        }
        if last_progress.elapsed() >= settings.progress_interval {
            last_progress = Instant::now();
            let _ = events.try_send(progress(&counts, total, &rate, start));
        }
        // A free slot first: what the next port is depends on what the
        // ports in flight find.
        if tasks.len() >= concurrency {
            tokio::select! {
                done = tasks.join_next() => {
                    if let Some(Ok(done)) = done {
                        n_unasked += finish(done, &mut book, &unreachable, &mut counts, &events, report_unanswered).await;
                    }
                }
                () = tokio::time::sleep(SCOUT_TICK) => {}
                () = cancel.cancelled() => break 'launch,
            }
            continue;
        }
        // Next: a scout whose turn has come (they leave paced, in the order
        // met), else a port released by its address's scout (one address
        // after another), else the next of the walk.
        let now = Instant::now();
        let (address, port, scout) = if now >= next_scout_at
            && let Some((address, port, sent)) = waiting_scouts.pop_front()
        {
            next_scout_at = next_scout_at.max(now) + SCOUT_INTERVAL;
            (address, port, Some(sent))
        } else if let Some((address, port)) = book.next_released() {
            // A released address is known: its ports are asked as they
            // come, unless it was found unreachable since.
            if unreachable.is_down(address) {
                n_unasked += 1;
                decide_unasked(
                    SocketAddr::new(address, port),
                    &unreachable,
                    &mut counts,
                    &events,
                    report_unanswered,
                )
                .await;
                continue;
            }
            (address, port, None)
        } else if position < total && book.n_deferred() < MAX_DEFERRED {
            let index = walk.get(position);
            position += 1;
            // Consecutive indices go to different hosts first: one host's
            // ICMP limit is spent as slowly as the scan allows.
            let Some(address) = targets.get(u128::from(index % n_addresses)) else {
                continue;
            };
            let Some(&port) = usize::try_from(index / n_addresses)
                .ok()
                .and_then(|i| ports.get(i))
            else {
                continue;
            };
            // Exclusions were subtracted when the target set was built;
            // this check stands behind that, as the TCP launcher's does.
            if targets.is_excluded(address) {
                n_skipped += 1;
                continue;
            }
            // An address found unreachable is not asked again: its
            // remaining ports are filtered without a packet.
            if unreachable.is_down(address) {
                n_unasked += 1;
                decide_unasked(
                    SocketAddr::new(address, port),
                    &unreachable,
                    &mut counts,
                    &events,
                    report_unanswered,
                )
                .await;
                continue;
            }
            match book.route(address, port) {
                Route::Defer => continue,
                Route::Ask => (address, port, None),
                Route::Scout(sent) => {
                    waiting_scouts.push_back((address, port, sent));
                    continue;
                }
            }
        } else if tasks.is_empty() && waiting_scouts.is_empty() {
            // Nothing out, nothing released, nothing left to walk.
            break;
        } else {
            let wake = if waiting_scouts.is_empty() {
                now + SCOUT_TICK
            } else {
                next_scout_at.min(now + SCOUT_TICK)
            };
            tokio::select! {
                done = tasks.join_next(), if !tasks.is_empty() => {
                    if let Some(Ok(done)) = done {
                        n_unasked += finish(done, &mut book, &unreachable, &mut counts, &events, report_unanswered).await;
                    }
                }
                () = tokio::time::sleep_until(wake) => {}
                () = cancel.cancelled() => break 'launch,
            }
            continue;
        };
        n_launched += 1;
        let task_rate = Arc::clone(&rate);
        let task_cancel = cancel.clone();
        let task_unreachable = Arc::clone(&unreachable);
        let task_timing = Arc::clone(&timing);
        tasks.spawn(async move {
            let (rate, cancel, unreachable, timing) =
                (task_rate, task_cancel, task_unreachable, task_timing);
            let target = SocketAddr::new(address, port);
            let is_scout = scout.is_some();
            let answer = match unreachable.enter(address) {
                Some(down) => {
                    let asking = Asking {
                        identify,
                        rate: &rate,
                        timing: &timing,
                        down: &down,
                        scout: scout.as_ref().map(|sent| (sent.as_ref(), start)),
                    };
                    let answer = tokio::select! {
                        answer = ask(target, &asking) => answer,
                        () = cancel.cancelled() => None,
                    };
                    unreachable.leave(address);
                    answer
                }
                // Found unreachable while this task waited to start.
                None => Some(Answer::unreachable(Vec::new())),
            };
            if let Some(answer) = &answer
                && answer.unreachable
            {
                unreachable.mark(address);
                unreachable.n_ports.fetch_add(1, Ordering::Relaxed);
            }
            Done {
                target,
                answer,
                scout: is_scout,
            }
        });
    }
    // Only a cancelled scan leaves ports in flight here (they end with the
    // token): wait for them, and count what they decided before it fired.
    while let Some(done) = tasks.join_next().await {
        if let Ok(done) = done {
            n_unasked += finish(
                done,
                &mut book,
                &unreachable,
                &mut counts,
                &events,
                report_unanswered,
            )
            .await;
        }
    }
    let mut totals = counts;
    let decided = totals.open + totals.closed + totals.filtered + totals.open_filtered;
    totals.undecided = total - decided;
    let complete = !cancel.is_cancelled()
        && n_launched + n_skipped + n_unasked == total
        && decided == n_launched + n_unasked;
    record.insert(
        "udp_unreachable_hosts".into(),
        unreachable.n_addresses().to_string(),
    );
    record.insert(
        "udp_unreachable_ports".into(),
        unreachable.n_ports.load(Ordering::Relaxed).to_string(),
    );
    let _ = events.send(progress(&counts, total, &rate, start)).await;
    let info = ScanInfo {
        id: 0,
        targets: plan.targets.given.clone(),
        resolved: plan.targets.resolved.clone(),
        excluded: plan.targets.excluded.clone(),
        ports: plan.ports.spec().to_owned(),
        profile: settings.profile.as_str().to_owned(),
        seed: settings.seed,
        options: record,
        started: started_at,
        finished: Some(OffsetDateTime::now_utc()),
        complete,
        n_probes: rate.n_granted(),
    };
    Ok(ScanOutcome {
        info,
        settings,
        counts: totals,
        problems: plan.targets.problems.clone(),
    })
}

/// What a port's task hands back to the launcher.
struct Done {
    target: SocketAddr,
    /// `None`: the scan was cancelled, or no socket could be made.
    answer: Option<Answer>,
    /// The port was its address's scout.
    scout: bool,
}

/// Counts and sends the port a task decided; for a scout, releases its
/// address's held-back ports, or decides them filtered (without a packet)
/// when the address was found unreachable. Returns how many were so decided.
async fn finish(
    done: Done,
    book: &mut AddressBook,
    unreachable: &Unreachable,
    counts: &mut StateCounts,
    events: &mpsc::Sender<ScanEvent>,
    report_unanswered: bool,
) -> u64 {
    let address = done.target.ip();
    if let Some(answer) = done.answer {
        add(counts, answer.state);
        if answer.state == PortState::Open || report_unanswered {
            let _ = events
                .send(ScanEvent::Result(result(done.target, answer)))
                .await;
        }
    }
    if !done.scout {
        return 0;
    }
    let held = book.resolve(address, unreachable.is_down(address));
    let n_held = held.len() as u64;
    for port in held {
        decide_unasked(
            SocketAddr::new(address, port),
            unreachable,
            counts,
            events,
            report_unanswered,
        )
        .await;
    }
    n_held
}

/// A port of an address already found unreachable: filtered, no question.
async fn decide_unasked(
    target: SocketAddr,
    unreachable: &Unreachable,
    counts: &mut StateCounts,
    events: &mpsc::Sender<ScanEvent>,
    report_unanswered: bool,
) {
    unreachable.n_ports.fetch_add(1, Ordering::Relaxed);
    add(counts, PortState::Filtered);
    if report_unanswered {
        let _ = events
            .send(ScanEvent::Result(result(
                target,
                Answer::unreachable(Vec::new()),
            )))
            .await;
    }
}

fn add(counts: &mut StateCounts, state: PortState) {
    match state {
        PortState::Open => counts.open += 1,
        PortState::Closed => counts.closed += 1,
        PortState::Filtered => counts.filtered += 1,
        PortState::OpenFiltered => counts.open_filtered += 1,
    }
}

fn progress(counts: &StateCounts, total: u64, rate: &RateLimiter, start: Instant) -> ScanEvent {
    let elapsed = start.elapsed().as_secs_f64();
    ScanEvent::Progress {
        done: counts.open + counts.closed + counts.filtered + counts.open_filtered,
        total,
        open: counts.open,
        #[expect(clippy::cast_precision_loss, reason = "a rate for display")]
        rate: if elapsed > 0.0 {
            rate.n_granted() as f64 / elapsed
        } else {
            0.0
        },
        eta: None,
    }
}

/// How the launcher routes a port.
#[derive(Debug)]
enum Route {
    /// The address's first port: ask it as its scout; the task marks the
    /// time of its first datagram in the counter (nanoseconds since the
    /// scan's start, plus one; 0 until sent).
    Scout(Arc<AtomicU64>),
    /// Ask it now.
    Ask,
    /// Held back until the address's scout comes back or has waited
    /// [`SCOUT_WAIT`].
    Defer,
}

/// What the launcher knows of the addresses it has met: the scout of each
/// (its first port, asked alone), the ports held back behind it, and the
/// ports released, handed out one address after another so that no host's
/// ICMP limit is spent in a burst. An address is *known* once its scout came
/// back (it answered, was silent through every attempt, or was found
/// unreachable) or has waited [`SCOUT_WAIT`] since its first datagram.
///
/// Why: a port's wait follows the round trips measured on its host and
/// network ([`Timing`]), so silence on a quick network is given up on in
/// milliseconds; an address nobody holds is silent too, until the local
/// neighbour resolution (or a router) says host unreachable, seconds later.
/// Asked all at once, its ports would each be given up on before that
/// (open|filtered, after a datagram each); behind a scout, one question
/// waits for the verdict and the rest follow it.
#[derive(Debug, Default)]
struct AddressBook {
    /// Addresses met; `Some` while their scout is out, with the time its
    /// first datagram left and the ports held back.
    known: HashMap<IpAddr, Option<Scouting>>,
    /// The addresses whose scouts are out.
    scouting: Vec<IpAddr>,
    /// Released ports, one entry per address, taken round robin.
    released: VecDeque<(IpAddr, Vec<u16>)>,
    n_deferred: usize,
}

#[derive(Debug)]
struct Scouting {
    sent: Arc<AtomicU64>,
    held: Vec<u16>,
}

impl AddressBook {
    /// Ports held back or released and not yet handed out.
    fn n_deferred(&self) -> usize {
        self.n_deferred
    }

    fn route(&mut self, address: IpAddr, port: u16) -> Route {
        let full = self.known.len() >= MAX_ADDRESSES;
        match self.known.get_mut(&address) {
            Some(Some(scouting)) => {
                scouting.held.push(port);
                self.n_deferred += 1;
                Route::Defer
            }
            Some(None) => Route::Ask,
            None if full => Route::Ask,
            None => {
                let sent = Arc::new(AtomicU64::new(0));
                self.known.insert(
                    address,
                    Some(Scouting {
                        sent: Arc::clone(&sent),
                        held: Vec::new(),
                    }),
                );
                self.scouting.push(address);
                Route::Scout(sent)
            }
        }
    }

    /// The scout of `address` came back: its held ports, to be decided
    /// without a question when the address is `down`, else released.
    fn resolve(&mut self, address: IpAddr, down: bool) -> Vec<u16> {
        let Some(Some(scouting)) = self.known.insert(address, None) else {
            return Vec::new();
        };
        self.scouting.retain(|a| *a != address);
        if down {
            self.n_deferred -= scouting.held.len();
            return scouting.held;
        }
        if !scouting.held.is_empty() {
            self.released.push_back((address, scouting.held));
        }
        Vec::new()
    }

    /// Releases the ports of the addresses whose scouts have waited
    /// [`SCOUT_WAIT`] since their first datagram (`now` since the scan's
    /// start).
    fn promote(&mut self, now: Duration) {
        let wait = u64::try_from(SCOUT_WAIT.as_nanos()).unwrap_or(u64::MAX);
        let now = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        let due: Vec<IpAddr> = self
            .scouting
            .iter()
            .copied()
            .filter(|address| {
                matches!(self.known.get(address), Some(Some(scouting))
                if {
                    let sent = scouting.sent.load(Ordering::Relaxed);
                    sent != 0 && now.saturating_sub(sent - 1) >= wait
                })
            })
            .collect();
        for address in due {
            // Released, not down: nothing comes back to decide.
            let _ = self.resolve(address, false);
        }
    }

    /// The next released port, from the address after the last one's.
    fn next_released(&mut self) -> Option<(IpAddr, u16)> {
        let (address, mut held) = self.released.pop_front()?;
        let port = held.pop()?;
        self.n_deferred -= 1;
        if !held.is_empty() {
            self.released.push_back((address, held));
        }
        Some((address, port))
    }
}

/// What an ICMP error about one of a socket's datagrams says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IcmpVerdict {
    /// Port unreachable: closed.
    Closed,
    /// Another unreachable that decides this port only: filtered.
    Filtered,
    /// Network or host unreachable: filtered, and, when someone other than
    /// the target said so, the whole address is unreachable.
    Unreachable,
}

impl IcmpVerdict {
    fn state(self) -> PortState {
        match self {
            Self::Closed => PortState::Closed,
            Self::Filtered | Self::Unreachable => PortState::Filtered,
        }
    }
}

/// ICMP (IPv4) destination unreachable.
const ICMP_DEST_UNREACH: u8 = 3;
/// ICMPv6 destination unreachable.
const ICMP6_DEST_UNREACH: u8 = 1;

/// An ICMP error as the error queue hands it over (`sock_extended_err`):
/// the type and code for `origin` ICMP or ICMPv6, as nmap -sU reads them.
/// Anything else (time exceeded, fragmentation needed, a local error that is
/// not an answer) decides nothing.
fn classify_icmp(v6: bool, icmp_type: u8, code: u8) -> Option<IcmpVerdict> {
    if v6 {
        if icmp_type != ICMP6_DEST_UNREACH {
            return None;
        }
        match code {
            // Port unreachable.
            4 => Some(IcmpVerdict::Closed),
            // No route, address unreachable.
            0 | 3 => Some(IcmpVerdict::Unreachable),
            // Administratively prohibited, beyond scope, source address
            // failed policy, reject route.
            1 | 2 | 5 | 6 => Some(IcmpVerdict::Filtered),
            _ => None,
        }
    } else {
        if icmp_type != ICMP_DEST_UNREACH {
            return None;
        }
        match code {
            3 => Some(IcmpVerdict::Closed),
            // Network, host unreachable; network, host unknown.
            0 | 1 | 6 | 7 => Some(IcmpVerdict::Unreachable),
            // Protocol unreachable; network, host, communication
            // administratively prohibited.
            2 | 9 | 10 | 13 => Some(IcmpVerdict::Filtered),
            _ => None,
        }
    }
}

/// How an errno on a connected UDP socket reads when the error queue could
/// not say more (no `IP_RECVERR`, or an error a send returned): port
/// unreachable arrives as `ECONNREFUSED`; the others say only that the port
/// is filtered (`EHOSTUNREACH` is also administratively prohibited, so it
/// does not mark the address unreachable; `EPERM`/`EACCES` are a local
/// firewall's).
fn classify_errno(err: &std::io::Error) -> Option<IcmpVerdict> {
    match err.raw_os_error() {
        Some(code) if code == libc_code::ECONNREFUSED => Some(IcmpVerdict::Closed),
        Some(code)
            if code == libc_code::EHOSTUNREACH
                || code == libc_code::ENETUNREACH
                || code == libc_code::EACCES
                || code == libc_code::EPERM =>
        {
            Some(IcmpVerdict::Filtered)
        }
        _ => None,
    }
}

/// The errno values the ICMP errors arrive as (nix names them).
mod libc_code {
    use nix::errno::Errno;
    pub(super) const ECONNREFUSED: i32 = Errno::ECONNREFUSED as i32;
    pub(super) const EHOSTUNREACH: i32 = Errno::EHOSTUNREACH as i32;
    pub(super) const ENETUNREACH: i32 = Errno::ENETUNREACH as i32;
    pub(super) const EACCES: i32 = Errno::EACCES as i32;
    pub(super) const EPERM: i32 = Errno::EPERM as i32;
}

/// One entry of a socket's error queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct QueuedError {
    v6: bool,
    origin: u8,
    icmp_type: u8,
    code: u8,
    /// The address that sent the ICMP error (the "offender").
    from: Option<IpAddr>,
}

impl QueuedError {
    /// What the entry says about the port of `target`: a network or host
    /// unreachable from the target itself is that host filtering the port.
    fn verdict(&self, target: IpAddr) -> Option<IcmpVerdict> {
        let icmp_origin = if self.v6 {
            nix::libc::SO_EE_ORIGIN_ICMP6
        } else {
            nix::libc::SO_EE_ORIGIN_ICMP
        };
        if self.origin != icmp_origin {
            return None;
        }
        match classify_icmp(self.v6, self.icmp_type, self.code)? {
            IcmpVerdict::Unreachable if self.from == Some(target) => Some(IcmpVerdict::Filtered),
            verdict => Some(verdict),
        }
    }
}

/// Reads one entry of the socket's error queue without blocking
/// (`WouldBlock` when it is empty).
fn read_error_queue(socket: &UdpSocket) -> std::io::Result<QueuedError> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg};
    let mut data = [0u8; 64];
    let mut iov = [IoSliceMut::new(&mut data)];
    let mut control = nix::cmsg_space!(nix::libc::sock_extended_err, nix::libc::sockaddr_in6);
    let message = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut control),
        MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
    )
    .map_err(std::io::Error::from)?;
    let mut found = None;
    for cmsg in message.cmsgs().map_err(std::io::Error::from)? {
        match cmsg {
            ControlMessageOwned::Ipv4RecvErr(ee, from) => {
                found = Some(QueuedError {
                    v6: false,
                    origin: ee.ee_origin,
                    icmp_type: ee.ee_type,
                    code: ee.ee_code,
                    from: from.map(|a| IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)))),
                });
            }
            ControlMessageOwned::Ipv6RecvErr(ee, from) => {
                found = Some(QueuedError {
                    v6: true,
                    origin: ee.ee_origin,
                    icmp_type: ee.ee_type,
                    code: ee.ee_code,
                    from: from.map(|a| IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr))),
                });
            }
            _ => {}
        }
    }
    // An entry without the extended error (not expected) still left the
    // queue: it reads as an origin that decides nothing.
    Ok(found.unwrap_or(QueuedError {
        v6: false,
        origin: nix::libc::SO_EE_ORIGIN_NONE,
        icmp_type: 0,
        code: 0,
        from: None,
    }))
}

/// The ICMP errors queued on `socket` (at most [`MAX_ERRORS`]), read after it
/// reported an error: the first that decides the port of `target`, else the
/// pending errno's reading (`SO_ERROR`, for a socket without `IP_RECVERR`).
fn take_errors(socket: &UdpSocket, target: IpAddr) -> Option<IcmpVerdict> {
    let mut verdict = None;
    for _ in 0..MAX_ERRORS {
        // Through the reactor when it has seen the error (an empty queue
        // then clears the readiness, race-free); directly when the error
        // came back from a send or a read before the reactor saw it.
        let entry = match socket.try_io(Interest::ERROR, || read_error_queue(socket)) {
            Ok(entry) => entry,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                match read_error_queue(socket) {
                    Ok(entry) => entry,
                    Err(_) => break,
                }
            }
            Err(_) => break,
        };
        if verdict.is_none() {
            verdict = entry.verdict(target);
        }
    }
    // Reading the queue clears the pending errno; without IP_RECVERR the
    // errno is all there is.
    match socket.take_error() {
        Ok(Some(err)) => verdict.or_else(|| classify_errno(&err)),
        _ => verdict,
    }
}

/// The addresses found unreachable during the scan, and a token per address
/// with questions in flight, cancelled when it is found so.
#[derive(Debug, Default)]
struct Unreachable {
    inner: Mutex<UnreachableInner>,
    n_ports: AtomicU64,
}

#[derive(Debug, Default)]
struct UnreachableInner {
    down: HashSet<IpAddr>,
    /// Addresses with questions in flight: their token and how many.
    in_flight: HashMap<IpAddr, (CancellationToken, usize)>,
}

impl Unreachable {
    /// Addresses remembered as unreachable; past it, a new one still stops
    /// its questions in flight but later ports are asked (the set stays
    /// bounded on a scan of a /8).
    const MAX_DOWN: usize = 1 << 20;

    fn is_down(&self, address: IpAddr) -> bool {
        self.inner
            .lock()
            .is_ok_and(|inner| inner.down.contains(&address))
    }

    /// Registers a question to `address` in flight: the token it waits on,
    /// or `None` when the address is already known unreachable.
    fn enter(&self, address: IpAddr) -> Option<CancellationToken> {
        let mut inner = self.inner.lock().ok()?;
        if inner.down.contains(&address) {
            return None;
        }
        let entry = inner
            .in_flight
            .entry(address)
            .or_insert_with(|| (CancellationToken::new(), 0));
        entry.1 += 1;
        Some(entry.0.clone())
    }

    fn leave(&self, address: IpAddr) {
        if let Ok(mut inner) = self.inner.lock()
            && let Some(entry) = inner.in_flight.get_mut(&address)
        {
            entry.1 -= 1;
            if entry.1 == 0 {
                inner.in_flight.remove(&address);
            }
        }
    }

    fn mark(&self, address: IpAddr) {
        if let Ok(mut inner) = self.inner.lock() {
            if inner.down.len() < Self::MAX_DOWN {
                inner.down.insert(address);
            }
            if let Some((token, _)) = inner.in_flight.get(&address) {
                token.cancel();
            }
        }
    }

    fn n_addresses(&self) -> usize {
        self.inner.lock().map_or(0, |inner| inner.down.len())
    }
}

/// How long a port's questions wait, and how often they are asked again:
/// the UDP side of issue 13 §5. With an adaptive profile (a `min_timeout`)
/// each wait follows the round trips measured on the port's host, else on
/// its network ([`RttTable`], shared with the connect scan's design), between
/// the profile's floor and ceiling, doubled after each silence; and a silent
/// port is asked again only where it is worth it ([`Timing::retries`]). With
/// a fixed timeout (an explicit `--timeout`, the stealth profile) every wait
/// is that timeout and every silent port gets its retries, as before.
#[derive(Debug)]
struct Timing {
    rtt: Mutex<RttTable>,
    min: Option<Duration>,
    max: Duration,
    retries: u32,
    /// Hosts that answered a question only when it was asked again: loss
    /// was seen there (per host, as nmap counts it: one late answer on a
    /// /24 says little of its other hosts).
    lossy: Mutex<HashSet<IpAddr>>,
}

impl Timing {
    /// Hosts remembered as lossy; past it, a new one is not (its ports
    /// keep the floor of retries).
    const MAX_LOSSY: usize = 65_536;

    fn new(settings: &Settings) -> Self {
        Self {
            rtt: Mutex::new(RttTable::default()),
            min: settings.min_timeout,
            max: settings.timeout,
            retries: settings.retries,
            lossy: Mutex::new(HashSet::new()),
        }
    }

    /// The wait of attempt `n_unanswered + 1` to `address`. A scout waits
    /// the ceiling: nothing is known of its host yet, and its network's
    /// quick answers say nothing of whether anyone holds the address.
    fn timeout(&self, address: IpAddr, n_unanswered: u32, scout: bool) -> Duration {
        match self.min {
            Some(min) if !scout => self
                .rtt
                .lock()
                .map(|rtt| rtt.timeout(address, n_unanswered, min, self.max))
                .unwrap_or(self.max),
            _ => self.max,
        }
    }

    /// How many times a silent port of `address` is asked again. Every
    /// retry is a datagram under the rate ceiling and a wait, and on a
    /// healthy network it rarely changes a state: silence from a firewall
    /// stays silence, and a host's ICMP limit (one port unreachable a
    /// second) is not waited out port by port. So, in the adaptive
    /// profiles: all the profile's retries for a scout (one per address,
    /// and the retries that show loss), and wherever loss was seen on the
    /// port's host; one retry for a port with a protocol question (where
    /// an answer proves an exposure; nmap too asks twice at least); none for
    /// an empty datagram.
    fn retries(&self, address: IpAddr, has_question: bool, scout: bool) -> u32 {
        if self.min.is_none() || scout || self.loss_seen(address) {
            self.retries
        } else if has_question {
            self.retries.min(1)
        } else {
            0
        }
    }

    fn loss_seen(&self, address: IpAddr) -> bool {
        self.lossy
            .lock()
            .is_ok_and(|lossy| lossy.contains(&address))
    }

    fn saw_loss(&self, address: IpAddr) {
        if let Ok(mut lossy) = self.lossy.lock()
            && lossy.len() < Self::MAX_LOSSY
        {
            lossy.insert(address);
        }
    }

    /// A round trip measured on a first attempt (Karn: an answer to a
    /// question asked again could be the answer to either).
    fn observe(&self, address: IpAddr, sample: Duration) {
        if self.min.is_some()
            && let Ok(mut rtt) = self.rtt.lock()
        {
            rtt.observe(address, sample);
        }
    }
}

/// What one port's questions are asked with.
struct Asking<'a> {
    identify: bool,
    rate: &'a RateLimiter,
    timing: &'a Timing,
    /// Cancelled when the address is found unreachable.
    down: &'a CancellationToken,
    /// For a scout: where to mark the time its first datagram left
    /// (nanoseconds since the scan's start, plus one), and that start.
    scout: Option<(&'a AtomicU64, Instant)>,
}

/// One port's questions, asked again after silence; `None` when no socket
/// could be made (a local problem, not a port state). Stops, filtered, when
/// `asking.down` is cancelled (the address was found unreachable).
async fn ask(target: SocketAddr, asking: &Asking<'_>) -> Option<Answer> {
    let Asking {
        identify,
        rate,
        timing,
        down,
        scout,
    } = *asking;
    let any: IpAddr = match target {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind(SocketAddr::new(any, 0)).await.ok()?;
    // Without it the soft ICMP errors never reach the socket; the scan still
    // tells the hard ones apart by errno, so a refusal is not fatal.
    let _ = match target {
        SocketAddr::V4(_) => {
            nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Ipv4RecvErr, &true)
        }
        SocketAddr::V6(_) => {
            nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Ipv6RecvErr, &true)
        }
    };
    socket.connect(target).await.ok()?;
    let mut payloads = if identify {
        udp::udp_payloads_for_address(target)
    } else {
        Vec::new()
    };
    if payloads.is_empty() {
        payloads.push(udp::UdpRequest::Empty.payload(0));
    }
    let has_question = payloads
        .iter()
        .any(|payload| payload.request != udp::UdpRequest::Empty);
    let is_scout = scout.is_some();
    let mut first_sent: Option<Instant> = None;
    let mut answered = false;
    let mut identified: Option<Identified> = None;
    let mut asked = Vec::new();
    let mut attempt = 0u32;
    loop {
        for (n_payload, payload) in payloads.iter().enumerate() {
            if payload.only_if_answered && !answered {
                continue;
            }
            // A question asked again is the usual one only: the others had
            // their turn on the first attempt.
            if attempt > 0 && n_payload > 0 && !answered {
                continue;
            }
            if down.is_cancelled() {
                return Some(Answer::unreachable(asked));
            }
            tokio::select! {
                () = rate.acquire() => {}
                () = down.cancelled() => return Some(Answer::unreachable(asked)),
            }
            asked.push(payload.request.name());
            let sent_at = Instant::now();
            if first_sent.is_none() {
                first_sent = Some(sent_at);
                if let Some((mark, start)) = scout {
                    let since = u64::try_from(sent_at.duration_since(start).as_nanos())
                        .unwrap_or(u64::MAX - 1);
                    mark.store(since + 1, Ordering::Relaxed);
                }
            }
            if let Err(err) = socket.send(&payload.bytes).await {
                // A pending ICMP error comes back from the send: the queue
                // says which.
                let verdict = take_errors(&socket, target.ip()).or_else(|| classify_errno(&err));
                match verdict {
                    Some(verdict) if !answered => {
                        return Some(decided(verdict, asked));
                    }
                    _ => continue,
                }
            }
            // A scout waits the whole timeout, but no longer than its
            // address's SCOUT_WAIT: past it the address is released, and the
            // scout is a port like the others.
            let scout_left = first_sent
                .filter(|_| is_scout)
                .map(|first| (first + SCOUT_WAIT).saturating_duration_since(sent_at))
                .filter(|left| !left.is_zero());
            let wait = match scout_left {
                Some(left) => timing.timeout(target.ip(), attempt, true).min(left),
                None => timing.timeout(target.ip(), attempt, false),
            };
            let received = tokio::select! {
                received = receive(&socket, payload, target, wait) => received,
                () = down.cancelled() => return Some(Answer::unreachable(asked)),
            };
            match received {
                Received::Datagrams(found, at) => {
                    if attempt == 0 {
                        timing.observe(target.ip(), at.duration_since(sent_at));
                    } else if !answered {
                        timing.saw_loss(target.ip());
                    }
                    answered = true;
                    if let Some(more) = found.map(|boxed| *boxed) {
                        match &mut identified {
                            Some(identified) => udp::merge(identified, more),
                            None => identified = Some(more),
                        }
                    }
                }
                Received::Icmp(verdict, at) if !answered => {
                    // Only a port unreachable is a round trip to the target
                    // (a host unreachable comes from a router, or from this
                    // host when the neighbour resolution gave up seconds
                    // later). One that came only to a question asked again
                    // is no sign of loss: the host's ICMP limit (which
                    // earlier traffic may have spent) explains it.
                    if attempt == 0 && verdict == IcmpVerdict::Closed {
                        timing.observe(target.ip(), at.duration_since(sent_at));
                    }
                    return Some(decided(verdict, asked));
                }
                Received::Icmp(..) | Received::Silence => {}
            }
        }
        let scouting = is_scout && first_sent.is_none_or(|first| first.elapsed() < SCOUT_WAIT);
        if answered || attempt >= timing.retries(target.ip(), has_question, scouting) {
            break;
        }
        attempt += 1;
    }
    // A silent scout listens on until its address has had SCOUT_WAIT: an
    // absent host's unreachable comes when the neighbour resolution gives up.
    if !answered
        && is_scout
        && let Some(first_sent) = first_sent
        && let Some(payload) = payloads.first()
    {
        let left = (first_sent + SCOUT_WAIT).saturating_duration_since(Instant::now());
        if !left.is_zero() {
            let received = tokio::select! {
                received = receive(&socket, payload, target, left) => received,
                () = down.cancelled() => return Some(Answer::unreachable(asked)),
            };
            match received {
                Received::Datagrams(found, _) => {
                    answered = true;
                    identified = found.map(|boxed| *boxed);
                }
                Received::Icmp(verdict, _) => return Some(decided(verdict, asked)),
                Received::Silence => {}
            }
        }
    }
    Some(Answer {
        state: if answered {
            PortState::Open
        } else {
            PortState::OpenFiltered
        },
        identified,
        asked,
        unreachable: false,
    })
}

/// The answer an ICMP error decided.
fn decided(verdict: IcmpVerdict, asked: Vec<&'static str>) -> Answer {
    Answer {
        state: verdict.state(),
        identified: None,
        asked,
        unreachable: verdict == IcmpVerdict::Unreachable,
    }
}

enum Received {
    /// At least one datagram, with what it proved when a parser knew it,
    /// and when the first came.
    Datagrams(Option<Box<Identified>>, Instant),
    /// An ICMP error, and when it came.
    Icmp(IcmpVerdict, Instant),
    Silence,
}

/// The datagrams that answer `sent` within `timeout` (and a short while
/// after the first, for replies in several datagrams), or the ICMP error
/// that came back instead. Waits for readability or an error (an ICMP error
/// makes a UDP socket report `EPOLLERR` only, never readable).
async fn receive(
    socket: &UdpSocket,
    sent: &UdpPayload,
    target: SocketAddr,
    timeout: Duration,
) -> Received {
    let port = target.port();
    let mut deadline = Instant::now() + timeout;
    let mut n_datagrams = 0;
    let mut n_waits = 0;
    let mut found: Option<Identified> = None;
    let mut first_at = None;
    // Every wake-up reads a datagram, an error or nothing; the bound holds
    // whatever the socket reports.
    while n_datagrams < MAX_DATAGRAMS && n_waits < MAX_DATAGRAMS + MAX_ERRORS {
        n_waits += 1;
        let ready = match tokio::time::timeout_at(
            deadline,
            socket.ready(Interest::READABLE | Interest::ERROR),
        )
        .await
        {
            Ok(Ok(ready)) => ready,
            Err(_) | Ok(Err(_)) => break,
        };
        if ready.is_error() {
            if let Some(verdict) = take_errors(socket, target.ip())
                && n_datagrams == 0
            {
                return Received::Icmp(verdict, Instant::now());
            }
            if !ready.is_readable() {
                continue;
            }
        }
        let read = RECEIVE_BUFFER.with_borrow_mut(|buf| {
            socket.try_recv(buf).map(|n| {
                let reply = buf.get(..n).unwrap_or_default();
                udp::identify_udp(port, sent, reply)
                    .or_else(|| udp::sniff_udp(port, &sent.bytes, reply))
            })
        });
        match read {
            Ok(more) => {
                n_datagrams += 1;
                first_at.get_or_insert_with(Instant::now);
                if let Some(more) = more {
                    match &mut found {
                        Some(found) => udp::merge(found, more),
                        None => found = Some(more),
                    }
                }
                deadline = deadline.min(Instant::now() + MORE_DATAGRAMS);
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(err) => {
                if n_datagrams > 0 {
                    break;
                }
                // The pending errno came back from the read: the queue
                // holds the ICMP error that set it.
                if let Some(verdict) =
                    take_errors(socket, target.ip()).or_else(|| classify_errno(&err))
                {
                    return Received::Icmp(verdict, Instant::now());
                }
            }
        }
    }
    match first_at {
        Some(at) => Received::Datagrams(found.map(Box::new), at),
        None => Received::Silence,
    }
}

/// The result of one port: its state, and for an open one what answered and
/// the findings (the parsers', or one `exposed.service` saying what answers).
fn result(target: SocketAddr, answer: Answer) -> PortResult {
    let subject = subject(target);
    let (service, mut findings) = match answer.identified {
        Some(identified) => (Some(identified.service), identified.findings),
        None => (None, Vec::new()),
    };
    for finding in &mut findings {
        finding.subject = subject.clone();
    }
    if answer.state == PortState::Open && findings.is_empty() {
        let what = service.as_ref().map_or_else(
            || format!("port {subject}/udp answers; the service was not identified"),
            |service| format!("{} answers on {subject}/udp", service.name),
        );
        let mut asked = answer.asked;
        asked.dedup();
        findings.push(
            Finding::new("exposed.service", Severity::Info, subject.clone(), what)
                .with_evidence(format!(
                    "{subject} answered a UDP datagram ({})",
                    asked.join(", ")
                ))
                .with_remedy("if the service is not meant to be reachable from here, close the port or restrict it to the clients that need it"),
        );
    }
    PortResult {
        address: target.ip(),
        port: target.port(),
        protocol: Protocol::Udp,
        state: answer.state,
        service,
        findings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed_timing(timeout: Duration, retries: u32) -> Timing {
        Timing {
            rtt: Mutex::new(RttTable::default()),
            min: None,
            max: timeout,
            retries,
            lossy: Mutex::new(HashSet::new()),
        }
    }

    fn adaptive_timing() -> Timing {
        Timing {
            min: Some(Duration::from_millis(100)),
            ..fixed_timing(Duration::from_secs(2), 2)
        }
    }

    fn asking<'a>(
        rate: &'a RateLimiter,
        timing: &'a Timing,
        down: &'a CancellationToken,
    ) -> Asking<'a> {
        Asking {
            identify: false,
            rate,
            timing,
            down,
            scout: None,
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test value")
    }

    /// Each address's first port goes out alone; the ports met while it is
    /// out wait for it, and come back one address after another.
    #[test]
    fn an_address_is_scouted_by_one_port_and_the_rest_follow_it() {
        let mut book = AddressBook::default();
        let (a, b, c) = (ip("198.18.60.1"), ip("198.18.60.2"), ip("198.18.60.3"));
        let Route::Scout(sent_a) = book.route(a, 53) else {
            panic!("the first port of an address is its scout");
        };
        let Route::Scout(_sent_b) = book.route(b, 53) else {
            panic!("scout");
        };
        let Route::Scout(_sent_c) = book.route(c, 53) else {
            panic!("scout");
        };
        for port in [1, 2, 3] {
            for address in [a, b, c] {
                assert!(matches!(book.route(address, port), Route::Defer));
            }
        }
        assert_eq!(book.n_deferred(), 9);
        assert_eq!(book.next_released(), None, "nothing released yet");
        // a answered; b was found unreachable: its ports come back to be
        // decided without a question.
        assert_eq!(book.resolve(a, false), Vec::<u16>::new());
        assert_eq!(book.resolve(b, true), vec![1, 2, 3]);
        assert_eq!(book.n_deferred(), 6);
        assert!(matches!(book.route(a, 4), Route::Ask), "a is known");
        // c's scout has waited SCOUT_WAIT since its first datagram: its
        // ports go too, round robin with a's.
        sent_a.store(1, Ordering::Relaxed);
        book.promote(Duration::from_secs(60));
        assert_eq!(book.next_released(), Some((a, 3)));
        assert_eq!(book.n_deferred(), 5);
        assert!(
            matches!(book.route(c, 9), Route::Defer),
            "c's scout never sent: it has not waited yet"
        );
    }

    #[test]
    fn a_scout_past_its_wait_releases_its_address() {
        let mut book = AddressBook::default();
        let a = ip("198.18.60.1");
        let b = ip("198.18.60.2");
        let Route::Scout(sent) = book.route(a, 53) else {
            panic!("scout");
        };
        let Route::Scout(_) = book.route(b, 53) else {
            panic!("scout");
        };
        for port in [1, 2] {
            assert!(matches!(book.route(a, port), Route::Defer));
            assert!(matches!(book.route(b, port), Route::Defer));
        }
        // a's first datagram left 1 s into the scan; b's never did (it
        // waits for a rate token).
        sent.store(1 + 1_000_000_000, Ordering::Relaxed);
        book.promote(Duration::from_secs(1) + SCOUT_WAIT - Duration::from_millis(1));
        assert_eq!(book.next_released(), None, "not yet");
        book.promote(Duration::from_secs(1) + SCOUT_WAIT);
        let mut released = Vec::new();
        while let Some(next) = book.next_released() {
            released.push(next);
        }
        assert_eq!(released, [(a, 2), (a, 1)]);
        assert!(matches!(book.route(a, 7), Route::Ask));
        assert!(matches!(book.route(b, 7), Route::Defer));
        assert_eq!(book.n_deferred(), 3);
        // A late scout's return changes nothing for a released address.
        assert!(book.resolve(a, true).is_empty());
    }

    #[test]
    fn released_ports_alternate_between_addresses() {
        let mut book = AddressBook::default();
        let (a, b) = (ip("198.18.60.1"), ip("198.18.60.2"));
        let _ = book.route(a, 1);
        let _ = book.route(b, 1);
        for port in 2..=4 {
            let _ = book.route(a, port);
            let _ = book.route(b, port);
        }
        let _ = book.resolve(a, false);
        let _ = book.resolve(b, false);
        let order: Vec<IpAddr> = std::iter::from_fn(|| book.next_released())
            .map(|(address, _)| address)
            .collect();
        assert_eq!(order, [a, b, a, b, a, b]);
        assert_eq!(book.n_deferred(), 0);
    }

    /// Waits and retries of the adaptive profiles: the ceiling for a scout
    /// and where nothing was measured, the floor on a quick network, and
    /// retries only for scouts, questions (one) and where loss was seen.
    #[test]
    fn waits_follow_the_network_and_retries_follow_loss() {
        let timing = adaptive_timing();
        let (host, neighbour, elsewhere) =
            (ip("198.18.60.7"), ip("198.18.60.8"), ip("198.18.61.8"));
        let (floor, ceiling) = (Duration::from_millis(100), Duration::from_secs(2));
        assert_eq!(timing.timeout(host, 0, false), ceiling, "nothing measured");
        for _ in 0..8 {
            timing.observe(host, Duration::from_micros(300));
        }
        assert_eq!(timing.timeout(host, 0, false), floor);
        assert_eq!(timing.timeout(neighbour, 0, false), floor, "its network's");
        assert_eq!(timing.timeout(neighbour, 1, false), floor * 2);
        assert_eq!(timing.timeout(neighbour, 0, true), ceiling, "a scout");
        assert_eq!(timing.timeout(elsewhere, 0, false), ceiling);

        assert_eq!(timing.retries(host, false, false), 0, "an empty datagram");
        assert_eq!(timing.retries(host, true, false), 1, "a question");
        assert_eq!(timing.retries(host, false, true), 2, "a scout");
        timing.saw_loss(host);
        assert_eq!(timing.retries(host, false, false), 2, "loss on the host");
        assert_eq!(
            timing.retries(neighbour, false, false),
            0,
            "not its network's"
        );

        // A fixed timeout: every wait and every retry, as asked.
        let fixed = fixed_timing(Duration::from_millis(500), 1);
        fixed.observe(host, Duration::from_micros(300));
        assert_eq!(fixed.timeout(host, 0, false), Duration::from_millis(500));
        assert_eq!(fixed.retries(host, false, false), 1);
    }

    #[test]
    fn icmp_errors_read_as_nmap_reads_them() {
        // IPv4 destination unreachable: port → closed; network and host
        // (and unknown network or host) → the address is unreachable;
        // protocol and the administratively prohibited ones → filtered.
        assert_eq!(classify_icmp(false, 3, 3), Some(IcmpVerdict::Closed));
        for code in [0, 1, 6, 7] {
            assert_eq!(
                classify_icmp(false, 3, code),
                Some(IcmpVerdict::Unreachable)
            );
        }
        for code in [2, 9, 10, 13] {
            assert_eq!(classify_icmp(false, 3, code), Some(IcmpVerdict::Filtered));
        }
        // Fragmentation needed, time exceeded, an echo reply: no verdict.
        assert_eq!(classify_icmp(false, 3, 4), None);
        assert_eq!(classify_icmp(false, 11, 0), None);
        assert_eq!(classify_icmp(false, 0, 0), None);
        // ICMPv6.
        assert_eq!(classify_icmp(true, 1, 4), Some(IcmpVerdict::Closed));
        for code in [0, 3] {
            assert_eq!(classify_icmp(true, 1, code), Some(IcmpVerdict::Unreachable));
        }
        for code in [1, 2, 5, 6] {
            assert_eq!(classify_icmp(true, 1, code), Some(IcmpVerdict::Filtered));
        }
        assert_eq!(classify_icmp(true, 3, 0), None);
        assert_eq!(classify_icmp(true, 3, 3), None, "a v4 code under v6");
        // States.
        assert_eq!(IcmpVerdict::Closed.state(), PortState::Closed);
        assert_eq!(IcmpVerdict::Filtered.state(), PortState::Filtered);
        assert_eq!(IcmpVerdict::Unreachable.state(), PortState::Filtered);
    }

    #[test]
    fn errnos_without_the_queue_decide_the_port_only() {
        let errno = |e: nix::errno::Errno| std::io::Error::from_raw_os_error(e as i32);
        use nix::errno::Errno;
        assert_eq!(
            classify_errno(&errno(Errno::ECONNREFUSED)),
            Some(IcmpVerdict::Closed)
        );
        for e in [
            Errno::EHOSTUNREACH,
            Errno::ENETUNREACH,
            Errno::EACCES,
            Errno::EPERM,
        ] {
            assert_eq!(
                classify_errno(&errno(e)),
                Some(IcmpVerdict::Filtered),
                "{e}"
            );
        }
        assert_eq!(classify_errno(&errno(Errno::EMSGSIZE)), None);
    }

    #[test]
    fn host_unreachable_from_the_host_itself_is_that_port_filtered() {
        let target: IpAddr = "198.18.60.7".parse().expect("test value");
        let router: IpAddr = "198.18.0.1".parse().expect("test value");
        let entry = |origin, icmp_type, code, from| QueuedError {
            v6: false,
            origin,
            icmp_type,
            code,
            from,
        };
        let icmp = nix::libc::SO_EE_ORIGIN_ICMP;
        // From a router or from this host (ARP failed): the address.
        assert_eq!(
            entry(icmp, 3, 1, Some(router)).verdict(target),
            Some(IcmpVerdict::Unreachable)
        );
        assert_eq!(
            entry(icmp, 3, 0, None).verdict(target),
            Some(IcmpVerdict::Unreachable)
        );
        // From the target: it is up, rejecting this port.
        assert_eq!(
            entry(icmp, 3, 1, Some(target)).verdict(target),
            Some(IcmpVerdict::Filtered)
        );
        assert_eq!(
            entry(icmp, 3, 3, Some(target)).verdict(target),
            Some(IcmpVerdict::Closed)
        );
        // A local error (EMSGSIZE and the like) or an ICMPv6 origin on an
        // IPv4 entry decide nothing.
        assert_eq!(
            entry(nix::libc::SO_EE_ORIGIN_LOCAL, 3, 1, None).verdict(target),
            None
        );
        assert_eq!(
            entry(nix::libc::SO_EE_ORIGIN_ICMP6, 1, 4, None).verdict(target),
            None
        );
        let v6 = QueuedError {
            v6: true,
            origin: nix::libc::SO_EE_ORIGIN_ICMP6,
            icmp_type: 1,
            code: 3,
            from: Some("fe80::1".parse().expect("test value")),
        };
        assert_eq!(
            v6.verdict("2001:db8::7".parse().expect("test value")),
            Some(IcmpVerdict::Unreachable)
        );
    }

    #[test]
    fn an_unreachable_address_stops_its_questions_in_flight_and_later_ones() {
        let table = Unreachable::default();
        let a: IpAddr = "198.18.60.7".parse().expect("test value");
        let b: IpAddr = "198.18.60.8".parse().expect("test value");
        let first = table.enter(a).expect("not known unreachable");
        let second = table.enter(a).expect("not known unreachable");
        let other = table.enter(b).expect("not known unreachable");
        assert!(!table.is_down(a));
        table.mark(a);
        assert!(first.is_cancelled() && second.is_cancelled());
        assert!(!other.is_cancelled(), "another address asks on");
        assert!(table.is_down(a) && !table.is_down(b));
        assert!(table.enter(a).is_none(), "no new question to it");
        table.leave(a);
        table.leave(a);
        table.leave(b);
        let inner = table.inner.lock().expect("test value");
        assert!(
            inner.in_flight.is_empty(),
            "tokens freed with their questions"
        );
        assert_eq!(inner.down.len(), 1);
    }

    /// A closed loopback port is decided closed as soon as its ICMP port
    /// unreachable arrives, not after the timeout (the socket waits for
    /// the error, which a UDP socket never reports as readable).
    #[tokio::test]
    async fn a_closed_port_is_decided_by_its_icmp_error_at_once() {
        let port = {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("test value");
            socket.local_addr().expect("test value").port()
        };
        let rate = RateLimiter::new(None, 1);
        let never = CancellationToken::new();
        let timing = fixed_timing(Duration::from_secs(20), 2);
        let target = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
        let answer = ask(target, &asking(&rate, &timing, &never))
            .await
            .expect("a socket");
        // Closed needs the ICMP error: the 20 s waits, had they passed,
        // would have left it open|filtered after three questions.
        assert_eq!(answer.state, PortState::Closed);
        assert!(!answer.unreachable);
        assert_eq!(answer.asked.len(), 1, "one question, no retry");
    }

    /// Cancelling the address's token ends a question waiting on silence.
    #[tokio::test]
    async fn a_question_to_an_unreachable_address_ends_filtered() {
        // A bound socket that never answers: silence.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("test value");
        let target = silent.local_addr().expect("test value");
        let rate = RateLimiter::new(None, 1);
        let down = CancellationToken::new();
        let cancel = down.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            cancel.cancel();
        });
        let timing = fixed_timing(Duration::from_secs(20), 2);
        let answer = ask(target, &asking(&rate, &timing, &down))
            .await
            .expect("a socket");
        assert_eq!(answer.state, PortState::Filtered);
        assert!(answer.unreachable);
    }
}
