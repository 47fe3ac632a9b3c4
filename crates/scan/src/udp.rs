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
//! the port it answered. Linux limits the ICMP errors a host sends per destination
//! (`net.ipv4.icmp_ratelimit`, one a second after a burst, not on loopback):
//! the permutation spreads a scan's datagrams over every host, each port is
//! asked again after silence (`retries`), and nothing waits on one host's
//! limit port by port. A closed port whose ICMP answer the limit swallowed on
//! every try reads open|filtered, as in nmap.
//!
//! Every datagram takes a token from the scan's rate limiter: the ceiling
//! holds for UDP as for TCP.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
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
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::engine::{ScanError, ScanEvent, ScanOutcome, ScanPlan, StateCounts, fd_budget};
use crate::identify::subject;
use crate::rate::RateLimiter;
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
    let permits = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let walk = ShardWalk::new(space, settings.seed, settings.shard);
    let counts = Arc::new(Counts::default());
    let start = Instant::now();
    let mut last_progress = start;
    let mut tasks = JoinSet::new();
    let mut n_launched = 0u64;
    let mut n_skipped = 0u64;
    // Ports of addresses already found unreachable: decided without a task.
    let mut n_unasked = 0u64;
    let timeout = settings.timeout;
    let retries = settings.retries;
    let identify = settings.identify;
    let unreachable = Arc::new(Unreachable::default());

    for position in 0..total {
        if cancel.is_cancelled() {
            break;
        }
        let index = walk.get(position);
        // Consecutive indices go to different hosts first: one host's ICMP
        // limit is spent as slowly as the scan allows.
        let Some(address) = targets.get(u128::from(index % n_addresses)) else {
            continue;
        };
        let Some(&port) = usize::try_from(index / n_addresses)
            .ok()
            .and_then(|i| ports.get(i))
        else {
            continue;
        };
        // Exclusions were subtracted when the target set was built; this
        // check stands behind that, as the TCP launcher's does.
        if targets.is_excluded(address) {
            n_skipped += 1;
            continue;
        }
        // An address found unreachable is not asked again: its remaining
        // ports are filtered without a packet.
        if unreachable.is_down(address) {
            n_unasked += 1;
            unreachable.n_ports.fetch_add(1, Ordering::Relaxed);
            counts.add(PortState::Filtered);
            if report_unanswered {
                let target = SocketAddr::new(address, port);
                let _ = events
                    .send(ScanEvent::Result(result(
                        target,
                        Answer::unreachable(Vec::new()),
                    )))
                    .await;
            }
            continue;
        }
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = cancel.cancelled() => break,
        };
        n_launched += 1;
        let task_rate = Arc::clone(&rate);
        let task_cancel = cancel.clone();
        let task_events = events.clone();
        let task_counts = Arc::clone(&counts);
        let task_unreachable = Arc::clone(&unreachable);
        tasks.spawn(async move {
            let (rate, cancel, events, counts, unreachable) = (
                task_rate,
                task_cancel,
                task_events,
                task_counts,
                task_unreachable,
            );
            let target = SocketAddr::new(address, port);
            let answer = match unreachable.enter(address) {
                Some(down) => {
                    let answer = tokio::select! {
                        answer = ask(target, timeout, retries, identify, &rate, &down) => answer,
                        () = cancel.cancelled() => None,
                    };
                    unreachable.leave(address);
                    answer
                }
                // Found unreachable while this task waited to start.
                None => Some(Answer::unreachable(Vec::new())),
            };
            drop(permit);
            let Some(answer) = answer else {
                return;
            };
            if answer.unreachable {
                unreachable.mark(address);
                unreachable.n_ports.fetch_add(1, Ordering::Relaxed);
            }
            counts.add(answer.state);
            if answer.state == PortState::Open || report_unanswered {
                let _ = events.send(ScanEvent::Result(result(target, answer))).await;
            }
        });
        // Reap what finished, so the set stays as small as the concurrency.
        while tasks.try_join_next().is_some() {}
        if last_progress.elapsed() >= settings.progress_interval {
            last_progress = Instant::now();
            let _ = events.try_send(progress(&counts, total, &rate, start));
        }
    }
    while tasks.join_next().await.is_some() {}
    let mut totals = counts.snapshot();
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

fn progress(counts: &Counts, total: u64, rate: &RateLimiter, start: Instant) -> ScanEvent {
    let snapshot = counts.snapshot();
    let elapsed = start.elapsed().as_secs_f64();
    ScanEvent::Progress {
        done: snapshot.open + snapshot.closed + snapshot.filtered + snapshot.open_filtered,
        total,
        open: snapshot.open,
        #[expect(clippy::cast_precision_loss, reason = "a rate for display")]
        rate: if elapsed > 0.0 {
            rate.n_granted() as f64 / elapsed
        } else {
            0.0
        },
        eta: None,
    }
}

#[derive(Debug, Default)]
struct Counts {
    open: AtomicU64,
    closed: AtomicU64,
    filtered: AtomicU64,
    open_filtered: AtomicU64,
}

impl Counts {
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

/// One port's questions, asked again after silence; `None` when no socket
/// could be made (a local problem, not a port state). Stops, filtered, when
/// `down` is cancelled (the address was found unreachable).
async fn ask(
    target: SocketAddr,
    timeout: Duration,
    retries: u32,
    identify: bool,
    rate: &RateLimiter,
    down: &CancellationToken,
) -> Option<Answer> {
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
    let mut answered = false;
    let mut identified: Option<Identified> = None;
    let mut asked = Vec::new();
    for _attempt in 0..=retries {
        for payload in &payloads {
            if payload.only_if_answered && !answered {
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
            let received = tokio::select! {
                received = receive(&socket, payload, target, timeout) => received,
                () = down.cancelled() => return Some(Answer::unreachable(asked)),
            };
            match received {
                Received::Datagrams(found) => {
                    answered = true;
                    if let Some(more) = found.map(|boxed| *boxed) {
                        match &mut identified {
                            Some(identified) => udp::merge(identified, more),
                            None => identified = Some(more),
                        }
                    }
                }
                Received::Icmp(verdict) if !answered => {
                    return Some(decided(verdict, asked));
                }
                Received::Icmp(_) | Received::Silence => {}
            }
        }
        if answered {
            break;
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
    /// At least one datagram, with what it proved when a parser knew it.
    Datagrams(Option<Box<Identified>>),
    Icmp(IcmpVerdict),
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
                return Received::Icmp(verdict);
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
                    return Received::Icmp(verdict);
                }
            }
        }
    }
    if n_datagrams == 0 {
        Received::Silence
    } else {
        Received::Datagrams(found.map(Box::new))
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
        let target = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
        let started = std::time::Instant::now();
        let answer = ask(target, Duration::from_secs(20), 2, false, &rate, &never)
            .await
            .expect("a socket");
        assert_eq!(answer.state, PortState::Closed);
        assert!(!answer.unreachable);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
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
        let started = std::time::Instant::now();
        let answer = ask(target, Duration::from_secs(20), 2, false, &rate, &down)
            .await
            .expect("a socket");
        assert_eq!(answer.state, PortState::Filtered);
        assert!(answer.unreachable);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
