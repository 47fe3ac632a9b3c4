//! The SYN scan's raw-socket side: [`SynTransport`] opens, per address
//! family, a socket that sends the SYNs and readers (TCP, and ICMP when its
//! socket opens) that run as tasks of the scan's runtime. Each probe parks as
//! a waiter keyed by (address, port) until a reader delivers the answer whose
//! acknowledgement matches its cookie, or the sweeper drops it at its
//! deadline (silence). The bytes themselves are built and parsed by
//! [`super::codec`]; this module owns the sockets, the tasks and the timing.

use std::collections::HashMap;
use std::hash::{BuildHasher as _, Hasher as _, RandomState};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::codec::{
    Answer, Cookies, IPV4_SYN_LEN, Reply, SYN_LEN, ipv4_syn, parse_icmpv4_unreachable,
    parse_icmpv6_unreachable, parse_ipv4_reply, parse_tcp_reply, syn_segment,
};
use crate::transport::{Connect, FilterCause, TcpTransport, Transport, classify_connect_error};

/// Why a SYN scan cannot run here.
#[derive(Debug, thiserror::Error)]
pub enum SynError {
    #[error(
        "a SYN scan sends from a raw socket, which needs CAP_NET_RAW (run as root, or give the binary `setcap cap_net_raw+ep`); without --syn the scan connects, which needs no privilege"
    )]
    NoPrivilege,
    #[error("cannot open a raw socket for the SYN scan: {0}")]
    Socket(io::Error),
    #[error("the SYN scan's reader needs a tokio runtime to run on")]
    NoRuntime,
}

/// Answers wanted, by (address, port): the cookie expected and where to send
/// the answer. Bounded by the scan's concurrency: one waiter per port in
/// flight.
type Waiters = HashMap<(IpAddr, u16), Waiter>;

#[derive(Debug)]
struct Waiter {
    id: u64,
    ack: u32,
    /// When the sweeper gives up on the answer (dropping `tx`, which the
    /// probe reads as silence).
    deadline: std::time::Instant,
    tx: oneshot::Sender<Answer>,
}

#[derive(Debug)]
struct Shared {
    /// Sharded by (address, port): the probes insert and remove, the reader
    /// delivers, and one lock for all of them was a hot spot.
    waiters: [Mutex<Waiters>; WAITER_SHARDS],
    next_id: AtomicU64,
    /// Answers that matched no waiter (late, duplicated, or not ours): for
    /// the record, not acted on.
    n_unmatched: AtomicU64,
}

const WAITER_SHARDS: usize = 16;

impl Shared {
    fn new() -> Shared {
        Shared {
            waiters: std::array::from_fn(|_| Mutex::new(Waiters::new())),
            next_id: AtomicU64::new(0),
            n_unmatched: AtomicU64::new(0),
        }
    }

    /// The shard holding the waiter for `key`: by the port (consecutive
    /// probes rarely share one) mixed with the address's last byte.
    fn shard(&self, key: (IpAddr, u16)) -> &Mutex<Waiters> {
        let last = match key.0 {
            IpAddr::V4(v4) => v4.octets()[3],
            IpAddr::V6(v6) => v6.octets()[15],
        };
        &self.waiters[(usize::from(key.1) ^ usize::from(last)) % WAITER_SHARDS]
    }

    /// Drops the waiters whose deadline is past `now`: their probes see
    /// silence.
    fn expire(&self, now: std::time::Instant) {
        for shard in &self.waiters {
            if let Ok(mut waiters) = shard.lock() {
                waiters.retain(|_, waiter| waiter.deadline > now);
            }
        }
    }

    fn deliver(&self, reply: Reply, source_port: u16) {
        if reply.to_port != source_port {
            return;
        }
        let key = (reply.from, reply.port);
        let Ok(mut waiters) = self.shard(key).lock() else {
            return;
        };
        match waiters.get(&key) {
            Some(waiter) if waiter.ack == reply.ack => {
                if let Some(waiter) = waiters.remove(&key) {
                    let _ = waiter.tx.send(reply.answer);
                }
            }
            _ => {
                self.n_unmatched.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One address family's raw sockets and the thread reading its answers.
#[derive(Debug)]
struct Side {
    /// Sends the SYNs. For IPv4 an `IPPROTO_RAW` socket, which receives
    /// nothing: sharing one socket between the senders and the reader made
    /// them queue on its lock (a third of the scan's time in a profile).
    send: OwnedFd,
    /// The SYNs carry their IPv4 header (`IPPROTO_RAW`).
    header_included: bool,
    /// The TCP reader, and the ICMP one when its socket could be opened.
    readers: Vec<tokio::task::JoinHandle<()>>,
}
/// The raw sockets' receive buffer: answers to a fast scan arrive in bursts.
const RECV_BUFFER_BYTES: usize = 8 << 20;
/// Enough for an IPv4 header with options and a TCP header with options, or
/// an ICMP error quoting them; the rest of a datagram is not read.
const READ_BYTES: usize = 256;
/// Source addresses remembered per destination; past this the cache starts
/// over (a /16 at 100 ports is 65,536 destinations).
const MAX_ROUTES: usize = 1 << 16;

/// The SYN scan's transport: [`Transport::probe`] sends SYNs, and
/// [`Transport::connect`] (identification's connections) is an ordinary
/// connection through [`TcpTransport`].
#[derive(Debug)]
pub struct SynTransport {
    shared: Arc<Shared>,
    cookies: Cookies,
    source_port: u16,
    v4: Side,
    v6: Option<Side>,
    sweeper: tokio::task::JoinHandle<()>,
    /// Destination → the source address the kernel's routing picks for it.
    routes: RwLock<HashMap<IpAddr, IpAddr>>,
}

impl SynTransport {
    /// Opens the raw sockets (IPv6 only when the host has IPv6) and starts
    /// their readers.
    pub fn open() -> Result<SynTransport, SynError> {
        let shared = Arc::new(Shared::new());
        let source_port = pick_source_port();
        let v4 = open_side(AddressFamily::INET, &shared, source_port)?;
        let v6 = match open_side(AddressFamily::INET6, &shared, source_port) {
            Ok(side) => Some(side),
            // No IPv6 on this host: IPv6 targets then fail as local errors.
            Err(SynError::Socket(err))
                if err.raw_os_error() == Some(rustix::io::Errno::AFNOSUPPORT.raw_os_error()) =>
            {
                None
            }
            Err(err) => return Err(err),
        };
        let sweeper = tokio::runtime::Handle::try_current()
            .map_err(|_| SynError::NoRuntime)?
            .spawn(sweep(Arc::clone(&shared)));
        Ok(SynTransport {
            shared,
            cookies: Cookies::new(),
            source_port,
            v4,
            v6,
            sweeper,
            routes: RwLock::new(HashMap::new()),
        })
    }

    /// The source address the kernel would use towards `destination`, from a
    /// UDP socket connected to it (which sends nothing).
    fn source_for(&self, destination: IpAddr) -> io::Result<IpAddr> {
        if let Ok(routes) = self.routes.read()
            && let Some(source) = routes.get(&destination)
        {
            return Ok(*source);
        }
        let any: SocketAddr = match destination {
            IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = std::net::UdpSocket::bind(any)?;
        socket.connect(SocketAddr::new(destination, 9))?;
        let source = socket.local_addr()?.ip();
        if let Ok(mut routes) = self.routes.write() {
            if routes.len() >= MAX_ROUTES {
                routes.clear();
            }
            routes.insert(destination, source);
        }
        Ok(source)
    }

    async fn syn(&self, address: SocketAddr, timeout: Duration) -> Connect<()> {
        let destination = address.ip();
        let side = match (destination, &self.v6) {
            (IpAddr::V4(_), _) => &self.v4,
            (IpAddr::V6(_), Some(side)) => side,
            (IpAddr::V6(_), None) => {
                return Connect::LocalError(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "this host has no IPv6 raw sockets",
                ));
            }
        };
        let source = match self.source_for(destination) {
            Ok(source) => source,
            Err(err) => return classify_connect_error(err, address),
        };
        let seq = self
            .cookies
            .seq(destination, address.port(), self.source_port);
        // What goes on the wire: the segment, or for IPv4 the whole datagram.
        let mut packet = [0u8; IPV4_SYN_LEN];
        let packet: &[u8] = match (side.header_included, source, destination) {
            (true, IpAddr::V4(source), IpAddr::V4(destination)) => {
                packet = ipv4_syn(source, self.source_port, destination, address.port(), seq);
                &packet
            }
            _ => match syn_segment(source, self.source_port, destination, address.port(), seq) {
                Some(segment) => {
                    packet[..SYN_LEN].copy_from_slice(&segment);
                    &packet[..SYN_LEN]
                }
                None => {
                    return Connect::LocalError(io::Error::other(
                        "the route's source address is of another family than the target",
                    ));
                }
            },
        };

        let (tx, rx) = oneshot::channel();
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let key = (destination, address.port());
        if let Ok(mut waiters) = self.shared.shard(key).lock() {
            waiters.insert(
                key,
                Waiter {
                    id,
                    ack: seq.wrapping_add(1),
                    deadline: std::time::Instant::now() + timeout,
                    tx,
                },
            );
        }
        // Removes the waiter however this attempt ends (answer, timeout, or a
        // cancelled scan dropping the future), unless a later attempt has
        // replaced it.
        let _guard = WaiterGuard {
            shared: &self.shared,
            key,
            id,
        };
        // The port of a raw socket's address is not used (it must be zero
        // for IPv6).
        let to = SocketAddr::new(destination, 0);
        if let Err(errno) = rustix::net::sendto(&side.send, packet, SendFlags::DONTWAIT, &to) {
            return classify_connect_error(errno.into(), address);
        }
        // No timer per probe: the sweeper drops the waiter at its deadline.
        match rx.await {
            Ok(Answer::SynAck) => Connect::Open(()),
            Ok(Answer::Rst) => Connect::Closed,
            Ok(Answer::Unreachable) => Connect::Filtered(FilterCause::Unreachable),
            Err(_) => Connect::Filtered(FilterCause::NoAnswer),
        }
    }
}

struct WaiterGuard<'a> {
    shared: &'a Shared,
    key: (IpAddr, u16),
    id: u64,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut waiters) = self.shared.shard(self.key).lock()
            && waiters
                .get(&self.key)
                .is_some_and(|waiter| waiter.id == self.id)
        {
            waiters.remove(&self.key);
        }
    }
}

impl Drop for SynTransport {
    fn drop(&mut self) {
        for side in std::iter::once(&self.v4).chain(self.v6.as_ref()) {
            for reader in &side.readers {
                reader.abort();
            }
        }
        self.sweeper.abort();
        // Late answers after a timeout, duplicates, other traffic to the
        // source port: for whoever debugs a scan that lost answers.
        tracing::debug!(
            unmatched = self.shared.n_unmatched.load(Ordering::Relaxed),
            "SYN scan answers that matched no probe"
        );
    }
}

impl Transport for SynTransport {
    type Stream = TcpStream;

    async fn connect(&self, address: SocketAddr, timeout: Duration) -> Connect<TcpStream> {
        TcpTransport.connect(address, timeout).await
    }

    async fn probe(&self, address: SocketAddr, timeout: Duration) -> Connect<Option<TcpStream>> {
        self.syn(address, timeout).await.map(|()| None)
    }
}

fn open_side(
    family: AddressFamily,
    shared: &Arc<Shared>,
    source_port: u16,
) -> Result<Side, SynError> {
    let socket = rustix::net::socket_with(
        family,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        Some(rustix::net::ipproto::TCP),
    )
    .map_err(|errno| match errno {
        rustix::io::Errno::PERM | rustix::io::Errno::ACCESS => SynError::NoPrivilege,
        other => SynError::Socket(other.into()),
    })?;
    let ipv4 = family == AddressFamily::INET;
    // IPv4 sends from a socket of its own that receives nothing. IPv6 has no
    // such socket without building the IPv6 header by hand, and shares the
    // reader's (its scans are rarely large).
    let (send, header_included) = if ipv4 {
        let send = rustix::net::socket_with(
            family,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            Some(rustix::net::ipproto::RAW),
        )
        .map_err(|errno| SynError::Socket(errno.into()))?;
        (send, true)
    } else {
        (socket.try_clone().map_err(SynError::Socket)?, false)
    };
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| SynError::NoRuntime)?;
    let mut readers = vec![spawn_reader(
        &runtime,
        socket,
        shared,
        source_port,
        if ipv4 { Feed::Tcp4 } else { Feed::Tcp6 },
    )?];
    // ICMP errors quoting our SYNs decide a port filtered at once, rather
    // than after the timeout and every retry. Without the socket the scan
    // is as correct, only slower through firewalls that reject.
    let icmp = rustix::net::socket_with(
        family,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        Some(if ipv4 {
            rustix::net::ipproto::ICMP
        } else {
            rustix::net::ipproto::ICMPV6
        }),
    );
    match icmp {
        Ok(icmp) => readers.push(spawn_reader(
            &runtime,
            icmp,
            shared,
            source_port,
            if ipv4 { Feed::Icmp4 } else { Feed::Icmp6 },
        )?),
        Err(errno) => tracing::warn!("no ICMP socket for the SYN scan: {errno}"),
    }
    Ok(Side {
        send,
        header_included,
        readers,
    })
}

/// What a reader's raw socket delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feed {
    /// IPv4 datagrams carrying TCP, IP header included.
    Tcp4,
    /// TCP segments (raw IPv6 sockets give no IP header).
    Tcp6,
    /// IPv4 datagrams carrying ICMP.
    Icmp4,
    /// ICMPv6 messages.
    Icmp6,
}

impl Feed {
    fn parse(self, bytes: &[u8], from: Option<IpAddr>) -> Option<Reply> {
        match self {
            Feed::Tcp4 => parse_ipv4_reply(bytes),
            // The sender is the socket address.
            Feed::Tcp6 => parse_tcp_reply(from?, bytes),
            Feed::Icmp4 => parse_icmpv4_unreachable(bytes),
            Feed::Icmp6 => parse_icmpv6_unreachable(bytes),
        }
    }
}

/// A reader for `socket` as a task of the scan's own runtime, woken when
/// answers are queued and draining them all: a thread of its own, woken per
/// answer, spent the scan's time in context switches (88,000 for 65,535
/// ports).
fn spawn_reader(
    runtime: &tokio::runtime::Handle,
    socket: OwnedFd,
    shared: &Arc<Shared>,
    source_port: u16,
    feed: Feed,
) -> Result<tokio::task::JoinHandle<()>, SynError> {
    // Forcing past rmem_max needs CAP_NET_ADMIN; the plain request is capped
    // by rmem_max and still better than the default.
    if rustix::net::sockopt::set_socket_recv_buffer_size_force(&socket, RECV_BUFFER_BYTES).is_err()
    {
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&socket, RECV_BUFFER_BYTES);
    }
    rustix::io::ioctl_fionbio(&socket, true).map_err(|errno| SynError::Socket(errno.into()))?;
    let socket = {
        let _entered = runtime.enter();
        // `AsyncFd::new` is deprecated in favour of the `unsafe` `register`,
        // whose one condition is that the descriptor stays open and the same
        // while registered: an `OwnedFd`, owned by the `AsyncFd`, guarantees
        // it. The safe form keeps `unsafe` out of this crate.
        #[allow(deprecated)]
        AsyncFd::new(socket).map_err(SynError::Socket)?
    };
    Ok(runtime.spawn(read_answers(socket, Arc::clone(shared), source_port, feed)))
}

/// How often waiters past their deadline are dropped: the precision of the
/// SYN scan's timeout. One timer for the scan instead of one per probe (a
/// twentieth of the scan's time, in a profile).
const SWEEP_EVERY: Duration = Duration::from_millis(5);

/// Drops every waiter past its deadline, until the transport is dropped.
async fn sweep(shared: Arc<Shared>) {
    let mut ticks = tokio::time::interval(SWEEP_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        shared.expire(std::time::Instant::now());
    }
}

/// The reader: every TCP segment (or ICMP message) this namespace receives is
/// copied to a raw socket; the ones that answer a waiting probe wake it.
async fn read_answers(socket: AsyncFd<OwnedFd>, shared: Arc<Shared>, source_port: u16, feed: Feed) {
    let mut buffer = [0u8; READ_BYTES];
    loop {
        let mut ready = match socket.readable().await {
            Ok(ready) => ready,
            Err(err) => {
                tracing::warn!("SYN scan reader stopped: {err}");
                return;
            }
        };
        loop {
            match rustix::net::recvfrom(socket.get_ref(), &mut buffer, RecvFlags::empty()) {
                Ok((len, _, from)) => {
                    let bytes = buffer.get(..len.min(READ_BYTES)).unwrap_or_default();
                    let from = from
                        .and_then(|from| SocketAddr::try_from(from).ok())
                        .map(|from| from.ip());
                    let reply = feed.parse(bytes, from);
                    if let Some(reply) = reply {
                        shared.deliver(reply, source_port);
                    }
                }
                Err(rustix::io::Errno::AGAIN) => {
                    ready.clear_ready();
                    break;
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(errno) => {
                    tracing::warn!("SYN scan reader stopped: {errno}");
                    return;
                }
            }
        }
    }
}

/// A source port below the kernel's ephemeral range (so no connection of
/// this host uses it), chosen at random per scan.
fn pick_source_port() -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok());
    source_port_below(ephemeral_low, RandomState::new().build_hasher().finish())
}

/// A port in 10,000 up to the start of the ephemeral range (32,768 when it is
/// unknown or too low to leave room), from `random`.
fn source_port_below(ephemeral_low: Option<u16>, random: u64) -> u16 {
    let low = ephemeral_low.filter(|low| *low > 20_000).unwrap_or(32_768);
    let span = u64::from(low - 10_000);
    10_000 + (random % span) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));

    #[test]
    fn answers_wake_only_the_matching_waiter() {
        let shared = Shared::new();
        let (tx, mut rx) = oneshot::channel();
        shared.shard((TARGET, 6379)).lock().expect("lock").insert(
            (TARGET, 6379),
            Waiter {
                id: 0,
                ack: 8,
                deadline: std::time::Instant::now() + Duration::from_secs(60),
                tx,
            },
        );
        let reply = |ack, to_port| Reply {
            from: TARGET,
            port: 6379,
            to_port,
            ack,
            answer: Answer::SynAck,
        };
        // Wrong cookie, wrong destination port: ignored, counted.
        shared.deliver(reply(9, 40000), 40000);
        shared.deliver(reply(8, 40001), 40000);
        assert!(rx.try_recv().is_err());
        assert_eq!(shared.n_unmatched.load(Ordering::Relaxed), 1);
        shared.deliver(reply(8, 40000), 40000);
        assert_eq!(rx.try_recv(), Ok(Answer::SynAck));
        assert!(
            shared
                .waiters
                .iter()
                .all(|shard| shard.lock().expect("lock").is_empty())
        );
    }

    #[test]
    fn waiters_past_their_deadline_hear_silence() {
        let shared = Shared::new();
        let now = std::time::Instant::now();
        let mut receivers = Vec::new();
        for (port, after) in [(1, 10), (2, 30)] {
            let (tx, rx) = oneshot::channel();
            shared.shard((TARGET, port)).lock().expect("lock").insert(
                (TARGET, port),
                Waiter {
                    id: u64::from(port),
                    ack: 0,
                    deadline: now + Duration::from_millis(after),
                    tx,
                },
            );
            receivers.push(rx);
        }
        shared.expire(now + Duration::from_millis(20));
        assert!(matches!(
            receivers[0].try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert!(matches!(
            receivers[1].try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
    }

    #[test]
    fn source_ports_sit_below_the_ephemeral_range() {
        for random in [0, 1, 22_767, 22_768, u64::MAX] {
            let port = source_port_below(Some(32_768), random);
            assert!((10_000..32_768).contains(&port), "{port}");
            let port = source_port_below(Some(50_000), random);
            assert!((10_000..50_000).contains(&port), "{port}");
            // A range starting too low leaves the default room.
            let port = source_port_below(Some(1_024), random);
            assert!((10_000..32_768).contains(&port), "{port}");
        }
    }
}
