//! SYN ("half-open") scanning: one TCP SYN per attempt from a raw socket, the
//! port's state read from the answer (SYN-ACK open, RST closed, silence
//! filtered), and no connection ever completed, so the scanned service never
//! sees one (the kernel answers the SYN-ACK with a RST, as it does for nmap's
//! `-sS`). It needs `CAP_NET_RAW`. Open ports are identified over ordinary
//! connections ([`Transport::connect`]), as nmap's `-sS -sV` does.
//!
//! Why by hand: the crates that build packets (pnet, etherparse) would add a
//! large dependency for two fixed 24-byte headers and a checksum, and none
//! matches replies to probes; the wire format here is small, pure and
//! fuzzable ([`syn_segment`], [`parse_ipv4_reply`], [`parse_tcp_reply`]).
//!
//! Replies are matched without keeping per-probe state beyond a waiter: every
//! SYN carries a sequence number derived from a per-scan secret, the
//! destination and the port (a SYN cookie, as masscan does), and only an
//! answer acknowledging exactly that number counts. One source port, outside
//! the kernel's ephemeral range, is used for the whole scan.

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

use crate::transport::{Connect, FilterCause, TcpTransport, Transport, classify_connect_error};

/// The length of the SYN segment sent: the 20-byte TCP header and one option,
/// the maximum segment size (a SYN without options is a scanner's tell, and
/// some stacks drop it).
pub const SYN_LEN: usize = 24;

const FLAG_FIN: u8 = 0x01;
const FLAG_SYN: u8 = 0x02;
const FLAG_RST: u8 = 0x04;
const FLAG_ACK: u8 = 0x10;

/// What an answer to a SYN says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// SYN-ACK: something listens.
    SynAck,
    /// RST: nothing listens.
    Rst,
    /// An ICMP destination unreachable quoting the SYN: a router or firewall
    /// refused it (filtered, as nmap has it, but decided at once).
    Unreachable,
}

/// A TCP segment that may answer one of our SYNs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// The scanned address (the reply's source).
    pub from: IpAddr,
    /// The scanned port (the reply's source port).
    pub port: u16,
    /// Our source port (the reply's destination port).
    pub to_port: u16,
    pub ack: u32,
    pub answer: Answer,
}

/// The ones' complement sum of `bytes` (an odd last byte padded with zero),
/// added to `sum`.
fn sum_words(mut sum: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for pair in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([pair[0], pair[1]])));
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The TCP checksum of `segment` (its checksum field zero) between `source`
/// and `destination`, over the pseudo-header of RFC 793 (IPv4) or RFC 8200
/// section 8.1 (IPv6). None when the two addresses are of different families.
pub fn tcp_checksum(source: IpAddr, destination: IpAddr, segment: &[u8]) -> Option<u16> {
    let length = u32::try_from(segment.len()).ok()?;
    let mut sum = 0u32;
    match (source, destination) {
        (IpAddr::V4(source), IpAddr::V4(destination)) => {
            sum = sum_words(sum, &source.octets());
            sum = sum_words(sum, &destination.octets());
            sum = sum.wrapping_add(6);
            sum = sum.wrapping_add(length & 0xffff);
        }
        (IpAddr::V6(source), IpAddr::V6(destination)) => {
            sum = sum_words(sum, &source.octets());
            sum = sum_words(sum, &destination.octets());
            sum = sum_words(sum, &length.to_be_bytes());
            sum = sum.wrapping_add(6);
        }
        _ => return None,
    }
    Some(fold(sum_words(sum, segment)))
}

/// A SYN from `source`:`source_port` to `destination`:`port` with sequence
/// number `seq`, checksummed, ready for a raw `IPPROTO_TCP` socket (the kernel
/// adds the IP header). None when the addresses are of different families.
pub fn syn_segment(
    source: IpAddr,
    source_port: u16,
    destination: IpAddr,
    port: u16,
    seq: u32,
) -> Option<[u8; SYN_LEN]> {
    let mut segment = [0u8; SYN_LEN];
    segment[0..2].copy_from_slice(&source_port.to_be_bytes());
    segment[2..4].copy_from_slice(&port.to_be_bytes());
    segment[4..8].copy_from_slice(&seq.to_be_bytes());
    // Acknowledgement number 0; data offset 6 words (24 bytes).
    segment[12] = 6 << 4;
    segment[13] = FLAG_SYN;
    // A window of 1024, as nmap's SYN scan uses.
    segment[14..16].copy_from_slice(&1024u16.to_be_bytes());
    // Checksum at 16..18, urgent pointer 0; then MSS 1460.
    segment[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
    let checksum = tcp_checksum(source, destination, &segment)?;
    segment[16..18].copy_from_slice(&checksum.to_be_bytes());
    Some(segment)
}

/// The length of an IPv4 SYN as sent from an `IPPROTO_RAW` socket: a 20-byte
/// IPv4 header and the [`syn_segment`].
pub const IPV4_SYN_LEN: usize = 20 + SYN_LEN;

/// An IPv4 datagram carrying [`syn_segment`], for an `IPPROTO_RAW` socket
/// (which takes the IP header from us; the kernel fills in the total length,
/// the identification and the header checksum).
pub fn ipv4_syn(
    source: Ipv4Addr,
    source_port: u16,
    destination: Ipv4Addr,
    port: u16,
    seq: u32,
) -> [u8; IPV4_SYN_LEN] {
    let mut datagram = [0u8; IPV4_SYN_LEN];
    datagram[0] = 0x45;
    datagram[2..4].copy_from_slice(&(IPV4_SYN_LEN as u16).to_be_bytes());
    datagram[8] = 64;
    datagram[9] = 6;
    datagram[12..16].copy_from_slice(&source.octets());
    datagram[16..20].copy_from_slice(&destination.octets());
    if let Some(segment) = syn_segment(
        IpAddr::V4(source),
        source_port,
        IpAddr::V4(destination),
        port,
        seq,
    ) {
        datagram[20..].copy_from_slice(&segment);
    }
    datagram
}

/// A TCP segment (from its first byte) sent by `from`, if it is a SYN-ACK or a
/// RST. Anything shorter than a TCP header, or carrying other flags, is None.
pub fn parse_tcp_reply(from: IpAddr, segment: &[u8]) -> Option<Reply> {
    let header = segment.get(..20)?;
    let port = u16::from_be_bytes([header[0], header[1]]);
    let to_port = u16::from_be_bytes([header[2], header[3]]);
    let ack = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    let flags = header[13];
    let answer = if flags & FLAG_RST != 0 {
        Answer::Rst
    } else if flags & (FLAG_SYN | FLAG_ACK) == FLAG_SYN | FLAG_ACK && flags & FLAG_FIN == 0 {
        Answer::SynAck
    } else {
        return None;
    };
    Some(Reply {
        from,
        port,
        to_port,
        ack,
        answer,
    })
}

/// An IPv4 datagram as a raw IPv4 `IPPROTO_TCP` socket delivers it (IP header
/// included), if it carries a SYN-ACK or a RST. Fragments after the first,
/// bad header lengths and other protocols are None.
pub fn parse_ipv4_reply(datagram: &[u8]) -> Option<Reply> {
    let first = *datagram.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(first & 0x0f) * 4;
    if header_len < 20 {
        return None;
    }
    let header = datagram.get(..header_len)?;
    if header[9] != 6 || u16::from_be_bytes([header[6], header[7]]) & 0x1fff != 0 {
        return None;
    }
    let from = Ipv4Addr::new(header[12], header[13], header[14], header[15]);
    parse_tcp_reply(IpAddr::V4(from), datagram.get(header_len..)?)
}

/// The SYN an ICMP error quotes, as a [`Reply`] to it: `from` and `port` are
/// the SYN's destination, `to_port` its source port, and `ack` its sequence
/// number plus one (what a waiter expects). `quoted` starts at the quoted IP
/// header.
fn quoted_syn(destination: IpAddr, tcp: &[u8]) -> Option<Reply> {
    let tcp = tcp.get(..8)?;
    Some(Reply {
        from: destination,
        port: u16::from_be_bytes([tcp[2], tcp[3]]),
        to_port: u16::from_be_bytes([tcp[0], tcp[1]]),
        ack: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]).wrapping_add(1),
        answer: Answer::Unreachable,
    })
}

/// An IPv4 datagram as a raw `IPPROTO_ICMP` socket delivers it, if it is a
/// destination unreachable (type 3) of the codes nmap counts as filtered (0
/// net, 1 host, 2 protocol, 3 port, 9 and 10 prohibited, 13 administratively
/// filtered) quoting a TCP segment.
pub fn parse_icmpv4_unreachable(datagram: &[u8]) -> Option<Reply> {
    let first = *datagram.first()?;
    let header_len = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || header_len < 20 || *datagram.get(9)? != 1 {
        return None;
    }
    let icmp = datagram.get(header_len..)?;
    let (kind, code) = (*icmp.first()?, *icmp.get(1)?);
    if kind != 3 || !matches!(code, 0 | 1 | 2 | 3 | 9 | 10 | 13) {
        return None;
    }
    let quoted = icmp.get(8..)?;
    let quoted_first = *quoted.first()?;
    let quoted_len = usize::from(quoted_first & 0x0f) * 4;
    if quoted_first >> 4 != 4 || quoted_len < 20 || *quoted.get(9)? != 6 {
        return None;
    }
    let destination: [u8; 4] = quoted.get(16..20)?.try_into().ok()?;
    quoted_syn(
        IpAddr::V4(Ipv4Addr::from(destination)),
        quoted.get(quoted_len..)?,
    )
}

/// An ICMPv6 message as a raw `IPPROTO_ICMPV6` socket delivers it (no IPv6
/// header), if it is a destination unreachable (type 1, codes 0 to 6) quoting
/// a TCP segment right after the quoted IPv6 header.
pub fn parse_icmpv6_unreachable(message: &[u8]) -> Option<Reply> {
    let (kind, code) = (*message.first()?, *message.get(1)?);
    if kind != 1 || code > 6 {
        return None;
    }
    let quoted = message.get(8..)?;
    if *quoted.first()? >> 4 != 6 || *quoted.get(6)? != 6 {
        return None;
    }
    let destination: [u8; 16] = quoted.get(24..40)?.try_into().ok()?;
    quoted_syn(IpAddr::V6(Ipv6Addr::from(destination)), quoted.get(40..)?)
}

/// The per-scan secret that makes sequence numbers unguessable, so a forged
/// or stray segment cannot pass for an answer.
#[derive(Debug, Clone)]
pub struct Cookies {
    key: RandomState,
}

impl Cookies {
    pub fn new() -> Cookies {
        Cookies {
            key: RandomState::new(),
        }
    }

    /// The sequence number of every SYN to `address`:`port`; its answer
    /// acknowledges this plus one.
    pub fn seq(&self, address: IpAddr, port: u16, source_port: u16) -> u32 {
        let mut hasher = self.key.build_hasher();
        hasher.write(&match address {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        });
        hasher.write_u16(port);
        hasher.write_u16(source_port);
        let hash = hasher.finish();
        (hash ^ (hash >> 32)) as u32
    }
}

impl Default for Cookies {
    fn default() -> Self {
        Cookies::new()
    }
}

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

    const SCANNER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    const TARGET: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));

    #[test]
    fn syn_segment_layout_and_checksum() {
        let segment = syn_segment(SCANNER, 40000, TARGET, 6379, 0x0102_0304).expect("v4");
        assert_eq!(&segment[0..4], &[0x9c, 0x40, 0x18, 0xeb]);
        assert_eq!(&segment[4..8], &[1, 2, 3, 4]);
        assert_eq!(segment[12], 0x60);
        assert_eq!(segment[13], FLAG_SYN);
        assert_eq!(&segment[20..], &[2, 4, 0x05, 0xb4]);
        // Summing the pseudo-header and the segment with its checksum gives
        // all ones: the receiver's test.
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&[198, 18, 0, 1, 198, 18, 0, 2, 0, 6, 0, 24]);
        pseudo.extend_from_slice(&segment);
        assert_eq!(fold(sum_words(0, &pseudo)), 0);
    }

    #[test]
    fn checksum_matches_a_hand_computed_one() {
        // 127.0.0.1:40000 -> 127.0.0.1:6379, seq 0x01020304, worked by hand:
        // the pseudo-header's words (0x7f00 0x0001 0x7f00 0x0001 0x0006
        // 0x0018) and the segment's (0x9c40 0x18eb 0x0102 0x0304 0 0 0x6002
        // 0x0400 0 0 0x0204 0x05b4) sum to 0x2_230b, folded 0x230d, and the
        // complement is 0xdcf2.
        let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let segment = syn_segment(local, 40000, local, 6379, 0x0102_0304).expect("v4");
        assert_eq!(u16::from_be_bytes([segment[16], segment[17]]), 0xdcf2);
        assert_eq!(
            tcp_checksum(local, IpAddr::V6(Ipv6Addr::LOCALHOST), &segment),
            None
        );
    }

    #[test]
    fn ipv4_datagram_carries_the_segment() {
        let (source, destination) = (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2));
        let datagram = ipv4_syn(source, 40000, destination, 22, 9);
        assert_eq!(datagram[0], 0x45);
        assert_eq!(u16::from_be_bytes([datagram[2], datagram[3]]), 44);
        assert_eq!((datagram[8], datagram[9]), (64, 6));
        assert_eq!(&datagram[12..16], &source.octets());
        assert_eq!(&datagram[16..20], &destination.octets());
        let segment = syn_segment(SCANNER, 40000, TARGET, 22, 9).expect("v4");
        assert_eq!(&datagram[20..], &segment);
    }

    #[test]
    fn ipv6_checksum_covers_the_pseudo_header() {
        let a = IpAddr::V6("2001:db8::1".parse().expect("v6"));
        let b = IpAddr::V6("2001:db8::2".parse().expect("v6"));
        let segment = syn_segment(a, 1, b, 2, 3).expect("v6");
        let mut pseudo = Vec::new();
        if let (IpAddr::V6(a), IpAddr::V6(b)) = (a, b) {
            pseudo.extend_from_slice(&a.octets());
            pseudo.extend_from_slice(&b.octets());
        }
        pseudo.extend_from_slice(&[0, 0, 0, 24, 0, 0, 0, 6]);
        pseudo.extend_from_slice(&segment);
        assert_eq!(fold(sum_words(0, &pseudo)), 0);
        assert!(syn_segment(a, 1, TARGET, 2, 3).is_none());
    }

    fn ipv4_datagram(flags: u8, ack: u32) -> Vec<u8> {
        let mut datagram = vec![
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 2, 198, 18, 0, 1,
        ];
        let mut tcp = [0u8; 20];
        tcp[0..2].copy_from_slice(&6379u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&40000u16.to_be_bytes());
        tcp[8..12].copy_from_slice(&ack.to_be_bytes());
        tcp[12] = 0x50;
        tcp[13] = flags;
        datagram.extend_from_slice(&tcp);
        datagram
    }

    #[test]
    fn replies_parse_by_flags() {
        let syn_ack = parse_ipv4_reply(&ipv4_datagram(FLAG_SYN | FLAG_ACK, 7)).expect("syn-ack");
        assert_eq!(
            syn_ack,
            Reply {
                from: TARGET,
                port: 6379,
                to_port: 40000,
                ack: 7,
                answer: Answer::SynAck
            }
        );
        let rst = parse_ipv4_reply(&ipv4_datagram(FLAG_RST | FLAG_ACK, 7)).expect("rst");
        assert_eq!(rst.answer, Answer::Rst);
        // A plain ACK, a SYN alone, a FIN: not answers to a SYN.
        assert_eq!(parse_ipv4_reply(&ipv4_datagram(FLAG_ACK, 7)), None);
        assert_eq!(parse_ipv4_reply(&ipv4_datagram(FLAG_SYN, 7)), None);
        assert_eq!(
            parse_ipv4_reply(&ipv4_datagram(FLAG_SYN | FLAG_ACK | FLAG_FIN, 7)),
            None
        );
    }

    /// An ICMP destination unreachable from 198.18.0.254 quoting our SYN to
    /// 198.18.0.2:6379 from port 40000 with sequence number 41.
    fn icmpv4_unreachable(code: u8) -> Vec<u8> {
        let mut datagram = vec![
            0x45, 0, 0, 56, 0, 0, 0, 0, 64, 1, 0, 0, 198, 18, 0, 254, 198, 18, 0, 1,
        ];
        datagram.extend_from_slice(&[3, code, 0, 0, 0, 0, 0, 0]);
        datagram.extend_from_slice(
            &ipv4_syn(
                Ipv4Addr::new(198, 18, 0, 1),
                40000,
                Ipv4Addr::new(198, 18, 0, 2),
                6379,
                41,
            )[..28],
        );
        datagram
    }

    #[test]
    fn icmp_errors_quoting_a_syn_answer_it() {
        let expected = Reply {
            from: TARGET,
            port: 6379,
            to_port: 40000,
            ack: 42,
            answer: Answer::Unreachable,
        };
        for code in [0, 1, 2, 3, 9, 10, 13] {
            assert_eq!(
                parse_icmpv4_unreachable(&icmpv4_unreachable(code)),
                Some(expected),
                "code {code}"
            );
        }
        // Fragmentation needed, source route failed: not a refusal.
        assert_eq!(parse_icmpv4_unreachable(&icmpv4_unreachable(4)), None);
        // Another ICMP type (time exceeded), or a quoted UDP datagram.
        let mut other = icmpv4_unreachable(3);
        other[20] = 11;
        assert_eq!(parse_icmpv4_unreachable(&other), None);
        let mut udp = icmpv4_unreachable(3);
        udp[28 + 9] = 17;
        assert_eq!(parse_icmpv4_unreachable(&udp), None);
        let whole = icmpv4_unreachable(3);
        for cut in 0..whole.len() {
            assert_eq!(
                parse_icmpv4_unreachable(&whole[..cut]),
                None,
                "cut at {cut}"
            );
        }

        // ICMPv6: administratively prohibited, quoting the IPv6 header and SYN.
        let scanner: Ipv6Addr = "fd00:198:18::1".parse().expect("v6");
        let target: Ipv6Addr = "fd00:198:18::2".parse().expect("v6");
        let mut message = vec![1, 1, 0, 0, 0, 0, 0, 0];
        let mut header = [0u8; 40];
        header[0] = 0x60;
        header[6] = 6;
        header[8..24].copy_from_slice(&scanner.octets());
        header[24..40].copy_from_slice(&target.octets());
        message.extend_from_slice(&header);
        message.extend_from_slice(
            &syn_segment(IpAddr::V6(scanner), 40000, IpAddr::V6(target), 22, 7).expect("v6")[..8],
        );
        assert_eq!(
            parse_icmpv6_unreachable(&message),
            Some(Reply {
                from: IpAddr::V6(target),
                port: 22,
                to_port: 40000,
                ack: 8,
                answer: Answer::Unreachable,
            })
        );
        let mut packet_too_big = message.clone();
        packet_too_big[0] = 2;
        assert_eq!(parse_icmpv6_unreachable(&packet_too_big), None);
        for cut in 0..message.len() {
            assert_eq!(
                parse_icmpv6_unreachable(&message[..cut]),
                None,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn malformed_datagrams_are_none() {
        let good = ipv4_datagram(FLAG_RST, 0);
        assert!(parse_ipv4_reply(&good).is_some());
        for cut in 0..good.len() {
            assert_eq!(parse_ipv4_reply(&good[..cut]), None, "cut at {cut}");
        }
        let mut v6 = good.clone();
        v6[0] = 0x65;
        assert_eq!(parse_ipv4_reply(&v6), None);
        let mut short_header = good.clone();
        short_header[0] = 0x44;
        assert_eq!(parse_ipv4_reply(&short_header), None);
        let mut udp = good.clone();
        udp[9] = 17;
        assert_eq!(parse_ipv4_reply(&udp), None);
        let mut fragment = good;
        fragment[7] = 1;
        assert_eq!(parse_ipv4_reply(&fragment), None);
    }

    #[test]
    fn cookies_depend_on_every_part_and_the_secret() {
        let cookies = Cookies::new();
        let seq = cookies.seq(TARGET, 80, 40000);
        assert_eq!(cookies.seq(TARGET, 80, 40000), seq);
        assert_ne!(cookies.seq(TARGET, 81, 40000), seq);
        assert_ne!(cookies.seq(SCANNER, 80, 40000), seq);
        assert_ne!(cookies.seq(TARGET, 80, 40001), seq);
        assert_ne!(Cookies::new().seq(TARGET, 80, 40000), seq);
    }

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

    proptest::proptest! {
        /// Hostile bytes never panic the reply parsers, and what parses is a
        /// SYN-ACK or a RST with the bytes' own ports.
        #[test]
        fn any_bytes_parse_or_not_without_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..96)) {
            if let Some(reply) = parse_ipv4_reply(&bytes) {
                let header_len = usize::from(bytes[0] & 0x0f) * 4;
                proptest::prop_assert!(bytes.len() >= header_len + 20);
                proptest::prop_assert_eq!(reply.port, u16::from_be_bytes([bytes[header_len], bytes[header_len + 1]]));
            }
            if let Some(reply) = parse_tcp_reply(TARGET, &bytes) {
                proptest::prop_assert_eq!(reply.to_port, u16::from_be_bytes([bytes[2], bytes[3]]));
            }
            for reply in [parse_icmpv4_unreachable(&bytes), parse_icmpv6_unreachable(&bytes)].into_iter().flatten() {
                proptest::prop_assert_eq!(reply.answer, Answer::Unreachable);
            }
        }

        /// Every SYN built checksums to zero with its pseudo-header, whatever
        /// the addresses, ports and sequence number.
        #[test]
        fn every_syn_checksums(a in proptest::prelude::any::<[u8; 4]>(), b in proptest::prelude::any::<[u8; 4]>(), sport in 1u16.., dport in 1u16.., seq in proptest::prelude::any::<u32>()) {
            let (a, b) = (IpAddr::V4(Ipv4Addr::from(a)), IpAddr::V4(Ipv4Addr::from(b)));
            let segment = syn_segment(a, sport, b, dport, seq).expect("v4");
            proptest::prop_assert_eq!(tcp_checksum(a, b, &segment), Some(0));
        }
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
