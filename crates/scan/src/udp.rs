//! The UDP scan: for each (address, port) of the permutation, the protocol's
//! questions (`perimeter_probe::udp`, an empty datagram where no protocol is
//! known) from a connected UDP socket, and the port's state as nmap -sU
//! defines it:
//!
//! - **open**: a datagram came back (any datagram: a reply no parser knows
//!   still proves something listens);
//! - **closed**: ICMP port unreachable, which Linux reports on a connected
//!   UDP socket as `ECONNREFUSED`;
//! - **filtered**: another ICMP unreachable (host, network, administratively
//!   prohibited: `EHOSTUNREACH`, `ENETUNREACH`, `EACCES`);
//! - **open|filtered**: silence after the retries.
//!
//! No raw socket is needed: the kernel hands a connected socket the ICMP
//! errors about its own datagrams, so an unprivileged scan tells all four
//! states apart. Linux limits the ICMP errors a host sends per destination
//! (`net.ipv4.icmp_ratelimit`, one a second after a burst, not on loopback):
//! the permutation spreads a scan's datagrams over every host, each port is
//! asked again after silence (`retries`), and nothing waits on one host's
//! limit port by port. A closed port whose ICMP answer the limit swallowed on
//! every try reads open|filtered, as in nmap.
//!
//! Every datagram takes a token from the scan's rate limiter: the ceiling
//! holds for UDP as for TCP.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use perimeter_model::{Finding, PortResult, PortState, Protocol, ScanInfo, Severity};
use perimeter_probe::Identified;
use perimeter_probe::udp::{self, UdpPayload};
use time::OffsetDateTime;
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

/// What one port's questions found.
struct Answer {
    state: PortState,
    identified: Option<Identified>,
    /// The questions that were sent (for the finding's evidence).
    asked: Vec<&'static str>,
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
    let timeout = settings.timeout;
    let retries = settings.retries;
    let identify = settings.identify;

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
        tasks.spawn(async move {
            let (rate, cancel, events, counts) = (task_rate, task_cancel, task_events, task_counts);
            let target = SocketAddr::new(address, port);
            let answer = tokio::select! {
                answer = ask(target, timeout, retries, identify, &rate) => answer,
                () = cancel.cancelled() => None,
            };
            drop(permit);
            let Some(answer) = answer else {
                return;
            };
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
    let complete =
        !cancel.is_cancelled() && n_launched + n_skipped == total && decided == n_launched;
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

/// How an error on a connected UDP socket reads: the ICMP answer the kernel
/// received for one of its datagrams.
fn icmp_state(err: &std::io::Error) -> Option<PortState> {
    match err.raw_os_error() {
        Some(code) if code == libc_code::ECONNREFUSED => Some(PortState::Closed),
        Some(code)
            if code == libc_code::EHOSTUNREACH
                || code == libc_code::ENETUNREACH
                || code == libc_code::EACCES
                || code == libc_code::EPERM =>
        {
            Some(PortState::Filtered)
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

/// One port's questions, asked again after silence; `None` when no socket
/// could be made (a local problem, not a port state).
async fn ask(
    target: SocketAddr,
    timeout: Duration,
    retries: u32,
    identify: bool,
    rate: &RateLimiter,
) -> Option<Answer> {
    let any: IpAddr = match target {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind(SocketAddr::new(any, 0)).await.ok()?;
    socket.connect(target).await.ok()?;
    let mut payloads = if identify {
        udp::udp_payloads_for_address(target)
    } else {
        Vec::new()
    };
    if payloads.is_empty() {
        payloads.push(udp::UdpRequest::Empty.payload(0));
    }
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut answered = false;
    let mut identified: Option<Identified> = None;
    let mut asked = Vec::new();
    for _attempt in 0..=retries {
        for payload in &payloads {
            if payload.only_if_answered && !answered {
                continue;
            }
            rate.acquire().await;
            asked.push(payload.request.name());
            if let Err(err) = socket.send(&payload.bytes).await {
                match icmp_state(&err) {
                    Some(state) if !answered => {
                        return Some(Answer {
                            state,
                            identified: None,
                            asked,
                        });
                    }
                    _ => continue,
                }
            }
            match receive(&socket, payload, target.port(), timeout, &mut buf).await {
                Received::Datagrams(found) => {
                    answered = true;
                    if let Some(more) = found.map(|boxed| *boxed) {
                        match &mut identified {
                            Some(identified) => udp::merge(identified, more),
                            None => identified = Some(more),
                        }
                    }
                }
                Received::Icmp(state) if !answered => {
                    return Some(Answer {
                        state,
                        identified: None,
                        asked,
                    });
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
    })
}

enum Received {
    /// At least one datagram, with what it proved when a parser knew it.
    Datagrams(Option<Box<Identified>>),
    Icmp(PortState),
    Silence,
}

/// The datagrams that answer `sent` within `timeout` (and a short while
/// after the first, for replies in several datagrams).
async fn receive(
    socket: &UdpSocket,
    sent: &UdpPayload,
    port: u16,
    timeout: Duration,
    buf: &mut [u8],
) -> Received {
    let mut deadline = Instant::now() + timeout;
    let mut n_datagrams = 0;
    let mut found: Option<Identified> = None;
    while n_datagrams < MAX_DATAGRAMS {
        match tokio::time::timeout_at(deadline, socket.recv(buf)).await {
            Err(_elapsed) => break,
            Ok(Ok(n)) => {
                n_datagrams += 1;
                let reply = buf.get(..n).unwrap_or_default();
                let more = udp::identify_udp(port, sent, reply)
                    .or_else(|| udp::sniff_udp(port, &sent.bytes, reply));
                if let Some(more) = more {
                    match &mut found {
                        Some(found) => udp::merge(found, more),
                        None => found = Some(more),
                    }
                }
                deadline = deadline.min(Instant::now() + MORE_DATAGRAMS);
            }
            Ok(Err(err)) => {
                if n_datagrams > 0 {
                    break;
                }
                return match icmp_state(&err) {
                    Some(state) => Received::Icmp(state),
                    None => Received::Silence,
                };
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
