//! The SYN scan's raw sockets: [`SynSockets`] opens, per address family, a
//! socket that sends the SYNs and the sockets that read what comes back (TCP,
//! and ICMP when its socket opens), and moves packets through them in
//! batches: `sendmmsg(2)` out, `recvmmsg(2)` in, one system call for up to
//! [`BATCH`] packets either way. It is the [`PacketIo`] of a real scan. The
//! bytes are built and parsed by [`super::codec`]; what they mean is the
//! sweep's business ([`super::sweep`]).
//!
//! Both calls come from `nix`, whose wrappers are safe: the workspace denies
//! `unsafe`, and rustix has no `recvmmsg`. nix's `MultiHeaders` hold raw
//! pointers and so cannot move between threads; one is made per call (a
//! small allocation per batch of packets) so that the scan's task can.

use std::collections::HashMap;
use std::hash::{BuildHasher as _, Hasher as _, RandomState};
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd as _, OwnedFd};

use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrIn, SockaddrIn6, SockaddrStorage, recvmmsg,
    sendmmsg,
};
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use tokio::io::unix::AsyncFd;

use super::codec::{
    IPV4_SYN_LEN, Reply, SYN_LEN, ipv4_syn, parse_icmpv4_unreachable, parse_icmpv6_unreachable,
    parse_ipv4_reply, parse_tcp_reply, syn_segment,
};
use super::sweep::{PacketIo, Syn};

/// Why a SYN scan cannot run here.
#[derive(Debug, thiserror::Error)]
pub enum SynError {
    #[error(
        "a SYN scan sends from a raw socket, which needs CAP_NET_RAW (run as root, or give the binary `setcap cap_net_raw+ep`); without --syn the scan connects, which needs no privilege"
    )]
    NoPrivilege,
    #[error("cannot open a raw socket for the SYN scan: {0}")]
    Socket(io::Error),
}

/// The most packets one `sendmmsg(2)` or `recvmmsg(2)` moves.
pub const BATCH: usize = 64;
/// The most sender threads, one per CPU up to this (see
/// [`PacketIo::sender_threads`]).
const MAX_SENDERS: usize = 4;
/// The raw sockets' receive buffer: answers to a fast scan arrive in bursts.
const RECV_BUFFER_BYTES: usize = 8 << 20;
/// Enough for an IPv4 header with options and a TCP header with options, or
/// an ICMP error quoting them; the rest of a datagram is not read.
const READ_BYTES: usize = 256;
/// Source addresses remembered per destination; past this the cache starts
/// over (a /16 at 100 ports is 65,536 destinations).
const MAX_ROUTES: usize = 1 << 16;

/// What a receiving raw socket delivers.
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

/// A receiving raw socket.
#[derive(Debug)]
struct Reader {
    socket: OwnedFd,
    feed: Feed,
    /// A duplicate of `socket` registered with the runtime of the first
    /// wait (the sender's own), for readiness only. A duplicate because
    /// the safe registration drops what it fails to register.
    readiness: Option<AsyncFd<OwnedFd>>,
}

/// One address family's sockets.
#[derive(Debug)]
struct Side {
    /// Sends the SYNs. For IPv4 an `IPPROTO_RAW` socket, which receives
    /// nothing and takes the IP header from us; IPv6 has no such socket
    /// without building the IPv6 header by hand, and sends on its TCP
    /// reader's socket (the kernel adds the header).
    send: OwnedFd,
    /// The TCP reader, and the ICMP one when its socket could be opened.
    readers: Vec<Reader>,
}

/// The raw sockets of a SYN scan, opened before anything else so that a
/// missing privilege is an error at once, not an empty scan.
#[derive(Debug)]
pub struct SynSockets {
    source_port: u16,
    v4: Side,
    v6: Option<Side>,
    /// Destination → the source address the kernel's routing picks for it.
    routes: HashMap<IpAddr, IpAddr>,
}

impl SynSockets {
    /// Opens the raw sockets (IPv6 only when the host has IPv6). They are
    /// registered with a runtime only when the scan first waits on them, by
    /// the runtime it waits in.
    pub fn open() -> Result<SynSockets, SynError> {
        let v4 = open_side(AddressFamily::INET)?;
        let v6 = match open_side(AddressFamily::INET6) {
            Ok(side) => Some(side),
            // No IPv6 on this host: IPv6 targets then fail as local errors.
            Err(SynError::Socket(err))
                if err.raw_os_error() == Some(rustix::io::Errno::AFNOSUPPORT.raw_os_error()) =>
            {
                None
            }
            Err(err) => return Err(err),
        };
        Ok(SynSockets {
            source_port: pick_source_port(),
            v4,
            v6,
            routes: HashMap::new(),
        })
    }

    /// The source address the kernel would use towards `destination`, from a
    /// UDP socket connected to it (which sends nothing).
    fn source_for(&mut self, destination: IpAddr) -> io::Result<IpAddr> {
        if let Some(source) = self.routes.get(&destination) {
            return Ok(*source);
        }
        let any: SocketAddr = match destination {
            IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = std::net::UdpSocket::bind(any)?;
        socket.connect(SocketAddr::new(destination, 9))?;
        let source = socket.local_addr()?.ip();
        if self.routes.len() >= MAX_ROUTES {
            self.routes.clear();
        }
        self.routes.insert(destination, source);
        Ok(source)
    }

    /// The packet that carries `syn` (the IPv4 datagram, header included, or
    /// the bare IPv6 segment), its length, and where it goes.
    fn packet(&mut self, syn: &Syn) -> io::Result<([u8; IPV4_SYN_LEN], usize, SockaddrStorage)> {
        let source = self.source_for(syn.address.ip())?;
        let (port, seq) = (syn.address.port(), syn.seq);
        let mut packet = [0u8; IPV4_SYN_LEN];
        match (source, syn.address.ip()) {
            (IpAddr::V4(source), IpAddr::V4(destination)) => {
                packet = ipv4_syn(source, self.source_port, destination, port, seq);
                // The port of a raw socket's address is not used.
                let to = SockaddrStorage::from(SocketAddrV4::new(destination, 0));
                Ok((packet, IPV4_SYN_LEN, to))
            }
            (IpAddr::V6(_), IpAddr::V6(destination)) if self.v6.is_some() => {
                let segment =
                    syn_segment(source, self.source_port, IpAddr::V6(destination), port, seq)
                        .ok_or_else(|| io::Error::other("no IPv6 SYN between these addresses"))?;
                packet[..SYN_LEN].copy_from_slice(&segment);
                // The port must be zero for a raw IPv6 socket.
                let to = SockaddrStorage::from(SocketAddrV6::new(destination, 0, 0, 0));
                Ok((packet, SYN_LEN, to))
            }
            (_, IpAddr::V6(_)) if self.v6.is_none() => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this host has no IPv6 raw sockets",
            )),
            _ => Err(io::Error::other(
                "the route's source address is of another family than the target",
            )),
        }
    }

    /// Sends `syns`, all of one family, and returns how many were dealt
    /// with (see [`PacketIo::send`]). `first_index` is the position of
    /// `syns[0]` in the caller's batch, for `failed`.
    fn send_run(
        &mut self,
        syns: &[Syn],
        first_index: usize,
        failed: &mut Vec<(usize, io::Error)>,
    ) -> usize {
        let mut packets = Vec::with_capacity(syns.len());
        let mut destinations = Vec::with_capacity(syns.len());
        // The index in `syns` of each packet built, and the SYNs that could
        // not be built (no route).
        let mut built = Vec::with_capacity(syns.len());
        let mut not_built = Vec::new();
        for (i, syn) in syns.iter().enumerate() {
            match self.packet(syn) {
                Ok((packet, len, to)) => {
                    packets.push((packet, len));
                    destinations.push(Some(to));
                    built.push(i);
                }
                Err(err) => not_built.push((i, err)),
            }
        }
        let socket = match syns.first().map(|syn| syn.address.ip()) {
            Some(IpAddr::V6(_)) => self.v6.as_ref().map(|side| &side.send),
            _ => Some(&self.v4.send),
        };
        let slices: Vec<[IoSlice<'_>; 1]> = packets
            .iter()
            .map(|(packet, len)| [IoSlice::new(packet.get(..*len).unwrap_or_default())])
            .collect();
        let (n_dealt, refused) = match socket {
            Some(socket) if !slices.is_empty() => send_all(socket, &slices, &destinations),
            _ => (0, Vec::new()),
        };
        // SYNs from the first packet not dealt with on were not tried.
        let n_handled = built.get(n_dealt).copied().unwrap_or(syns.len());
        failed.extend(
            not_built
                .into_iter()
                .filter(|(i, _)| *i < n_handled)
                .map(|(i, err)| (first_index + i, err)),
        );
        failed.extend(
            refused
                .into_iter()
                .filter_map(|(packet, err)| built.get(packet).map(|i| (first_index + i, err))),
        );
        n_handled
    }
}

/// Sends every message with `sendmmsg(2)`, as many per call as the kernel
/// takes. A message the kernel refuses for a reason of its own (no route) is
/// listed in the refusals by index and skipped; a shortage (a full buffer,
/// out of memory) stops the sending. Returns how many messages were dealt
/// with (the one that met a shortage among them) and the refusals.
fn send_all(
    socket: &OwnedFd,
    slices: &[[IoSlice<'_>; 1]],
    destinations: &[Option<SockaddrStorage>],
) -> (usize, Vec<(usize, io::Error)>) {
    let mut refused = Vec::new();
    let mut at = 0;
    while at < slices.len() {
        let (rest, rest_to) = (
            slices.get(at..).unwrap_or_default(),
            destinations.get(at..).unwrap_or_default(),
        );
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(rest.len(), None);
        let sent = sendmmsg(
            socket.as_raw_fd(),
            &mut headers,
            rest,
            rest_to,
            [] as [ControlMessage<'_>; 0],
            MsgFlags::MSG_DONTWAIT,
        )
        .map(|results| results.count());
        match sent {
            // The kernel took `n` (at least one); try the rest.
            Ok(n) if n > 0 => at += n,
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => {}
            Err(errno) => {
                refused.push((at, io::Error::from(errno)));
                at += 1;
                if is_shortage(errno) {
                    break;
                }
            }
        }
    }
    (at, refused)
}

/// Errors that stop every send for now, whatever the destination.
fn is_shortage(errno: nix::errno::Errno) -> bool {
    use nix::errno::Errno;
    matches!(
        errno,
        Errno::EAGAIN | Errno::ENOBUFS | Errno::ENOMEM | Errno::EMFILE | Errno::ENFILE
    )
}

impl PacketIo for SynSockets {
    fn source_port(&self) -> u16 {
        self.source_port
    }

    fn send(&mut self, syns: &[Syn], failed: &mut Vec<(usize, io::Error)>) -> usize {
        // Runs of one family go out together (a scan is nearly always one
        // family; a mixed one alternates rarely).
        let mut at = 0;
        while let Some(rest) = syns.get(at..).filter(|rest| !rest.is_empty()) {
            let v4 = rest.first().is_some_and(|syn| syn.address.is_ipv4());
            let run = rest
                .iter()
                .take_while(|syn| syn.address.is_ipv4() == v4)
                .count();
            let handled = self.send_run(rest.get(..run).unwrap_or_default(), at, failed);
            at += handled;
            if handled < run {
                break;
            }
        }
        at
    }

    fn receive(&mut self, replies: &mut Vec<Reply>, max: usize) {
        let sides = std::iter::once(&self.v4).chain(self.v6.as_ref());
        for reader in sides.flat_map(|side| side.readers.iter()) {
            let start = replies.len();
            loop {
                let room = max.saturating_sub(replies.len() - start);
                if room == 0 {
                    break;
                }
                match receive_batch(reader, replies, room.min(BATCH)) {
                    // A full batch: more may be queued.
                    Ok(n) if n == room.min(BATCH) => {}
                    Ok(_) => break,
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(nix::errno::Errno::EAGAIN) => break,
                    Err(errno) => {
                        tracing::warn!("the SYN scan could not read answers: {errno}");
                        break;
                    }
                }
            }
        }
    }

    async fn readable(&mut self) {
        let sides = std::iter::once(&mut self.v4).chain(self.v6.as_mut());
        for reader in sides.flat_map(|side| side.readers.iter_mut()) {
            if reader.readiness.is_none() {
                reader.readiness = register(&reader.socket);
            }
        }
        let mut readiness = std::iter::once(&self.v4)
            .chain(self.v6.as_ref())
            .flat_map(|side| side.readers.iter())
            .filter_map(|reader| reader.readiness.as_ref());
        // At most two sockets per family: TCP and ICMP, IPv4 and IPv6.
        let (a, b, c, d) = (
            readiness.next(),
            readiness.next(),
            readiness.next(),
            readiness.next(),
        );
        tokio::select! {
            () = wait(a) => {},
            () = wait(b) => {},
            () = wait(c) => {},
            () = wait(d) => {},
        }
    }

    fn sender_threads(&self) -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, MAX_SENDERS))
    }

    fn another(&self) -> io::Result<SynSockets> {
        Ok(SynSockets {
            source_port: self.source_port,
            v4: self.v4.another()?,
            v6: self.v6.as_ref().map(Side::another).transpose()?,
            routes: HashMap::new(),
        })
    }
}

impl Side {
    /// The same sockets (duplicated descriptors: one receive queue, one
    /// sender), not yet registered with any runtime.
    fn another(&self) -> io::Result<Side> {
        let readers = self
            .readers
            .iter()
            .map(|reader| {
                Ok(Reader {
                    socket: reader.socket.try_clone()?,
                    feed: reader.feed,
                    readiness: None,
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Side {
            send: self.send.try_clone()?,
            readers,
        })
    }
}

/// A duplicate of `socket` registered with the current runtime for
/// readability; `None` (and a warning) when it cannot be, in which case the
/// scan waits for deadlines alone.
fn register(socket: &OwnedFd) -> Option<AsyncFd<OwnedFd>> {
    let duplicate = match socket.try_clone() {
        Ok(duplicate) => duplicate,
        Err(err) => {
            tracing::warn!("the SYN scan cannot wait for answers: {err}");
            return None;
        }
    };
    // `AsyncFd::with_interest` is deprecated in favour of the `unsafe`
    // `register_with_interest`, whose one condition is that the descriptor
    // stays open and the same while registered: an `OwnedFd`, owned by the
    // `AsyncFd`, guarantees it. The safe form keeps `unsafe` out of this
    // crate.
    #[expect(deprecated, reason = "the safe constructor; see above")]
    let registered = AsyncFd::with_interest(duplicate, tokio::io::Interest::READABLE);
    match registered {
        Ok(registered) => Some(registered),
        Err(err) => {
            tracing::warn!("the SYN scan cannot wait for answers: {err}");
            None
        }
    }
}

/// Resolves when `readiness` says something is queued; never for none.
async fn wait(readiness: Option<&AsyncFd<OwnedFd>>) {
    let Some(readiness) = readiness else {
        return std::future::pending().await;
    };
    match readiness.readable().await {
        // Cleared before the caller drains the socket: an answer that lands
        // after the drain sets it again, so no wake-up is lost.
        Ok(mut ready) => ready.clear_ready(),
        Err(err) => {
            tracing::warn!("the SYN scan cannot wait for answers: {err}");
            std::future::pending::<()>().await;
        }
    }
}

/// One `recvmmsg(2)` of at most `max` datagrams from `reader`, without
/// waiting; the answers among them are appended to `replies`. Returns how
/// many datagrams it read.
fn receive_batch(
    reader: &Reader,
    replies: &mut Vec<Reply>,
    max: usize,
) -> Result<usize, nix::errno::Errno> {
    let mut buffers = [[0u8; READ_BYTES]; BATCH];
    let max = max.min(BATCH);
    // (length, sender) of each datagram read, gathered before the buffers are
    // read: the results borrow the buffers while they live.
    let mut read: [(usize, Option<IpAddr>); BATCH] = [(0, None); BATCH];
    let n_read = {
        let mut slices: Vec<[IoSliceMut<'_>; 1]> = buffers
            .iter_mut()
            .take(max)
            .map(|buffer| [IoSliceMut::new(buffer)])
            .collect();
        let fd = reader.socket.as_raw_fd();
        let mut n = 0;
        if reader.feed == Feed::Tcp6 {
            let mut headers = MultiHeaders::<SockaddrIn6>::preallocate(max, None);
            let results = recvmmsg(fd, &mut headers, &mut slices, MsgFlags::MSG_DONTWAIT, None)?;
            for (slot, message) in read.iter_mut().zip(results) {
                *slot = (
                    message.bytes,
                    message.address.map(|address| IpAddr::V6(address.ip())),
                );
                n += 1;
            }
        } else {
            let mut headers = MultiHeaders::<SockaddrIn>::preallocate(max, None);
            let results = recvmmsg(fd, &mut headers, &mut slices, MsgFlags::MSG_DONTWAIT, None)?;
            for (slot, message) in read.iter_mut().zip(results) {
                *slot = (message.bytes, None);
                n += 1;
            }
        }
        n
    };
    for ((len, from), buffer) in read.iter().zip(&buffers).take(n_read) {
        let bytes = buffer.get(..(*len).min(READ_BYTES)).unwrap_or_default();
        if let Some(reply) = reader.feed.parse(bytes, *from) {
            replies.push(reply);
        }
    }
    Ok(n_read)
}

fn open_side(family: AddressFamily) -> Result<Side, SynError> {
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
    // IPv4 sends from a socket of its own that receives nothing: sharing one
    // socket between sending and reading made them queue on its lock.
    let send = if ipv4 {
        rustix::net::socket_with(
            family,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            Some(rustix::net::ipproto::RAW),
        )
        .map_err(|errno| SynError::Socket(errno.into()))?
    } else {
        socket.try_clone().map_err(SynError::Socket)?
    };
    let mut readers = vec![reader(socket, if ipv4 { Feed::Tcp4 } else { Feed::Tcp6 })?];
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
        Ok(icmp) => readers.push(reader(icmp, if ipv4 { Feed::Icmp4 } else { Feed::Icmp6 })?),
        Err(errno) => tracing::warn!("no ICMP socket for the SYN scan: {errno}"),
    }
    Ok(Side { send, readers })
}

/// A receiving socket: a large buffer, non-blocking.
fn reader(socket: OwnedFd, feed: Feed) -> Result<Reader, SynError> {
    // Forcing past rmem_max needs CAP_NET_ADMIN; the plain request is capped
    // by rmem_max and still better than the default.
    if rustix::net::sockopt::set_socket_recv_buffer_size_force(&socket, RECV_BUFFER_BYTES).is_err()
    {
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&socket, RECV_BUFFER_BYTES);
    }
    rustix::io::ioctl_fionbio(&socket, true).map_err(|errno| SynError::Socket(errno.into()))?;
    Ok(Reader {
        socket,
        feed,
        readiness: None,
    })
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
