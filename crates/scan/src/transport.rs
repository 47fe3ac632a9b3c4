//! The network behind a trait: open a TCP connection with a timeout and say what
//! happened, in the terms a connect scan decides port states by. [`TcpTransport`]
//! is the real one; [`fake::FakeNetwork`] scripts answers for unit tests under
//! tokio's paused time (the idea of hickory's `RuntimeProvider`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use std::os::fd::OwnedFd;

use nix::errno::Errno;
use rustix::event::{PollFd, PollFlags};
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

pub mod fake;

/// What one connection attempt found.
#[derive(Debug)]
pub enum Connect<S> {
    /// The handshake completed.
    Open(S),
    /// The peer refused (a RST, or an ICMP port unreachable, which Linux reports
    /// the same way).
    Closed,
    /// No answer in time, or an ICMP unreachable from a router or firewall.
    Filtered(FilterCause),
    /// Something went wrong on this machine (out of file descriptors, out of
    /// ephemeral ports, blocked by the local firewall): not a port state. The
    /// engine backs off and retries, and reports a problem if it persists.
    LocalError(io::Error),
}

/// Why an attempt counts as filtered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterCause {
    /// Nothing came back before the timeout. nmap semantics: only a final verdict
    /// after the retries are spent.
    NoAnswer,
    /// An ICMP host, network or administratively-prohibited unreachable: an
    /// answer, so it decides at once.
    Unreachable,
}

/// Opens connections. Implementations must be cheap to share across tasks.
pub trait Transport: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// One connection attempt (one SYN, as far as the caller is concerned),
    /// given up after `timeout`.
    fn connect(
        &self,
        address: SocketAddr,
        timeout: Duration,
    ) -> impl Future<Output = Connect<Self::Stream>> + Send;
}

impl<S> Connect<S> {
    /// The same outcome with the open connection turned into something else.
    pub fn map<T>(self, f: impl FnOnce(S) -> T) -> Connect<T> {
        match self {
            Connect::Open(stream) => Connect::Open(f(stream)),
            Connect::Closed => Connect::Closed,
            Connect::Filtered(cause) => Connect::Filtered(cause),
            Connect::LocalError(err) => Connect::LocalError(err),
        }
    }
}

/// Real TCP through the kernel.
///
/// Connections are given a zero linger, so closing one sends a RST instead of a
/// FIN exchange: a scan closes thousands of connections it opened only to look,
/// and a lingering close would hold each in TIME_WAIT and eat the ephemeral
/// ports a fast scan needs.
///
/// The socket is made and connected by hand (non-blocking), and looked at once
/// before it is handed to tokio's reactor: when the peer is on this machine (a
/// loopback address, a container or namespace on a local bridge) the kernel
/// has usually handled the SYN and the answer inside `connect(2)` already, and
/// a port decided there costs no reactor registration, wake-up or
/// deregistration (three of the six system calls and a task switch per port).
/// Over a real network the answer is never there yet, and the look costs one
/// `poll(2)` with a zero timeout.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpTransport;

impl Transport for TcpTransport {
    type Stream = TcpStream;

    async fn connect(&self, address: SocketAddr, timeout: Duration) -> Connect<TcpStream> {
        let socket = match begin_connect(address) {
            Begun::Connecting(socket) => socket,
            Begun::Decided(outcome) => return outcome,
        };
        if let Some(answer) = answer_so_far(&socket) {
            return conclude(socket, answer, address);
        }
        let stream = match TcpStream::from_std(std::net::TcpStream::from(socket)) {
            Ok(stream) => stream,
            Err(err) => return Connect::LocalError(err),
        };
        match tokio::time::timeout(timeout, stream.writable()).await {
            Err(_elapsed) => Connect::Filtered(FilterCause::NoAnswer),
            Ok(Err(err)) => Connect::LocalError(err),
            // Writable means the handshake ended, one way or the other; the
            // socket's pending error says which.
            Ok(Ok(())) => match stream.take_error() {
                Ok(None) => open(stream),
                Ok(Some(err)) | Err(err) => classify_connect_error(err, address),
            },
        }
    }
}

/// A connection attempt just started.
enum Begun {
    /// `connect(2)` said EINPROGRESS.
    Connecting(OwnedFd),
    /// Decided at once: refused, unreachable, or failed on this machine.
    Decided(Connect<TcpStream>),
}

fn begin_connect(address: SocketAddr) -> Begun {
    let family = match address {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let socket = match rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    ) {
        Ok(socket) => socket,
        Err(errno) => return Begun::Decided(Connect::LocalError(errno.into())),
    };
    match rustix::net::connect(&socket, &address) {
        Err(rustix::io::Errno::INPROGRESS) => Begun::Connecting(socket),
        // A non-blocking connect rarely completes at once, but may.
        Ok(()) => Begun::Decided(conclude(socket, Ok(()), address)),
        Err(errno) => Begun::Decided(classify_connect_error(errno.into(), address)),
    }
}

/// The handshake's result if it has ended already, without waiting.
fn answer_so_far(socket: &OwnedFd) -> Option<Result<(), io::Error>> {
    let mut fds = [PollFd::new(socket, PollFlags::OUT)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match rustix::event::poll(&mut fds, Some(&zero)) {
        Ok(n_ready) if n_ready > 0 => match rustix::net::sockopt::socket_error(socket) {
            Ok(Ok(())) => Some(Ok(())),
            Ok(Err(errno)) => Some(Err(errno.into())),
            Err(errno) => Some(Err(errno.into())),
        },
        // Not yet, or the look failed: let the reactor wait for it.
        _ => None,
    }
}

/// A connection whose handshake has ended with `answer`.
fn conclude(
    socket: OwnedFd,
    answer: Result<(), io::Error>,
    address: SocketAddr,
) -> Connect<TcpStream> {
    match answer {
        Ok(()) => match TcpStream::from_std(std::net::TcpStream::from(socket)) {
            Ok(stream) => open(stream),
            Err(err) => Connect::LocalError(err),
        },
        Err(err) => classify_connect_error(err, address),
    }
}

fn open(stream: TcpStream) -> Connect<TcpStream> {
    // Best effort: without it the close is merely slower.
    let _ = stream.set_zero_linger();
    if !really_open(&stream) {
        return Connect::Closed;
    }
    let _ = stream.set_nodelay(true);
    Connect::Open(stream)
}

/// Whether a completed handshake reached a listener. Connecting to this
/// host's own ports can complete with no listener at all (TCP simultaneous
/// open): when the kernel picks the scanned port as the connection's own
/// source port, the SYN meets itself; and two of the scan's own connections
/// whose source and destination ports are each other's (40000 -> 40002 and
/// 40002 -> 40000) meet each other. Had the kernel picked other source
/// ports, the answer would have been a RST. So a connection to this host
/// (its source address is its destination address) counts only when a
/// listening socket holds that port, as the kernel's own table says.
fn really_open(stream: &TcpStream) -> bool {
    let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) else {
        return true;
    };
    if local == peer {
        return false;
    }
    if local.ip() != peer.ip() {
        return true;
    }
    listening_here(peer).unwrap_or(true)
}

/// Whether /proc/net/tcp (or tcp6) of this network namespace has a socket
/// listening on `address` (or on the wildcard address) and its port; `None`
/// when the table cannot be read.
fn listening_here(address: SocketAddr) -> Option<bool> {
    /// The tables are a few hundred bytes a socket; a host with a million
    /// sockets is not scanning its own loopback.
    const MAX_TABLE: u64 = 256 * 1024 * 1024;
    let path = match address {
        SocketAddr::V4(_) => "/proc/net/tcp",
        SocketAddr::V6(_) => "/proc/net/tcp6",
    };
    let file = std::fs::File::open(path).ok()?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_TABLE), &mut text).ok()?;
    Some(text.lines().skip(1).any(|line| listens(line, address)))
}

/// One line of /proc/net/tcp{,6}: `sl local_address rem_address st ...`,
/// addresses as hex `ADDR:PORT` (the address in the kernel's byte order,
/// as 32-bit words), state 0A for LISTEN.
fn listens(line: &str, address: SocketAddr) -> bool {
    let mut fields = line.split_whitespace();
    let (Some(_), Some(local), Some(_), Some(state)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return false;
    };
    if state != "0A" {
        return false;
    }
    let Some((hex_addr, hex_port)) = local.split_once(':') else {
        return false;
    };
    if u16::from_str_radix(hex_port, 16).ok() != Some(address.port()) {
        return false;
    }
    let words: Option<Vec<u32>> = (0..hex_addr.len() / 8)
        .map(|i| {
            hex_addr
                .get(i * 8..i * 8 + 8)
                .and_then(|word| u32::from_str_radix(word, 16).ok())
        })
        .collect();
    let Some(words) = words else {
        return false;
    };
    // Each 32-bit word is the raw network-order bytes printed as a native
    // integer: its native bytes are the address's bytes.
    let bytes: Vec<u8> = words.iter().flat_map(|word| word.to_ne_bytes()).collect();
    let listening: Option<std::net::IpAddr> = match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes.as_slice())
            .ok()
            .map(|b| std::net::Ipv4Addr::from(b).into()),
        16 => <[u8; 16]>::try_from(bytes.as_slice())
            .ok()
            .map(|b| std::net::Ipv6Addr::from(b).into()),
        _ => None,
    };
    match listening {
        Some(ip) => ip.is_unspecified() || ip == address.ip() || mapped_equal(ip, address.ip()),
        None => false,
    }
}

/// An IPv6 listener's IPv4-mapped address equal to an IPv4 target.
fn mapped_equal(listening: std::net::IpAddr, target: std::net::IpAddr) -> bool {
    match (listening, target) {
        (std::net::IpAddr::V6(v6), std::net::IpAddr::V4(v4)) => v6.to_ipv4_mapped() == Some(v4),
        _ => false,
    }
}

/// Maps a failed `connect(2)` to what it says about the port.
pub fn classify_connect_error<S>(err: io::Error, address: SocketAddr) -> Connect<S> {
    let Some(code) = err.raw_os_error() else {
        return Connect::LocalError(err);
    };
    match Errno::from_raw(code) {
        Errno::ECONNREFUSED | Errno::ECONNRESET => Connect::Closed,
        Errno::ETIMEDOUT => Connect::Filtered(FilterCause::NoAnswer),
        Errno::EHOSTUNREACH
        | Errno::ENETUNREACH
        | Errno::EHOSTDOWN
        | Errno::ENETDOWN
        | Errno::ENONET => Connect::Filtered(FilterCause::Unreachable),
        // Linux reports an ICMPv6 administratively-prohibited (or policy-failed)
        // unreachable as EACCES; for IPv4 the same errno means a local refusal
        // (a broadcast address without SO_BROADCAST).
        Errno::EACCES if address.is_ipv6() => Connect::Filtered(FilterCause::Unreachable),
        // EMFILE, ENFILE, EADDRNOTAVAIL, ENOBUFS, ENOMEM, EAGAIN, EPERM (a local
        // output rule), and anything unexpected: about this machine, not the port.
        _ => Connect::LocalError(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_are_read_from_the_kernels_table() {
        let target: SocketAddr = "127.0.0.1:6379".parse().expect("addr");
        // 127.0.0.1:6379 listening, as a little-endian kernel prints it.
        let line = "   0: 0100007F:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0";
        assert_eq!(listens(line, target), cfg!(target_endian = "little"));
        // The wildcard listens on every address; another state does not count.
        let wildcard = "   1: 00000000:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0";
        assert!(listens(wildcard, target));
        let established = "   2: 0100007F:18EB 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0";
        assert!(!listens(established, target));
        assert!(!listens("garbage", target));
        assert!(!listens("0: zz:18EB 0:0 0A", target));
        // ::ffff:127.0.0.1 (an IPv6 socket taking IPv4) on 6379.
        let mapped = "   0: 0000000000000000FFFF00000100007F:18EB 00000000000000000000000000000000:0000 0A 0 0 0 0 0 1 1";
        assert_eq!(listens(mapped, target), cfg!(target_endian = "little"));
    }

    fn classify(code: i32) -> &'static str {
        classify_for(code, "198.18.0.2:80")
    }

    fn classify_for(code: i32, address: &str) -> &'static str {
        let address = address.parse().expect("test address");
        match classify_connect_error::<()>(io::Error::from_raw_os_error(code), address) {
            Connect::Open(()) => "open",
            Connect::Closed => "closed",
            Connect::Filtered(FilterCause::NoAnswer) => "no answer",
            Connect::Filtered(FilterCause::Unreachable) => "unreachable",
            Connect::LocalError(_) => "local",
        }
    }

    #[test]
    fn connect_errors_map_to_port_states() {
        use nix::libc;
        assert_eq!(classify(libc::ECONNREFUSED), "closed");
        assert_eq!(classify(libc::ETIMEDOUT), "no answer");
        assert_eq!(classify(libc::EHOSTUNREACH), "unreachable");
        assert_eq!(classify(libc::ENETUNREACH), "unreachable");
        assert_eq!(classify(libc::EMFILE), "local");
        assert_eq!(classify(libc::EADDRNOTAVAIL), "local");
        assert_eq!(classify(libc::ENOBUFS), "local");
        assert_eq!(classify(libc::EPERM), "local");
        assert_eq!(classify(libc::EACCES), "local");
        assert_eq!(
            classify_for(libc::EACCES, "[fd00:198:18::2]:80"),
            "unreachable"
        );
        assert!(matches!(
            classify_connect_error::<()>(
                io::Error::other("no errno"),
                "198.18.0.2:80".parse().expect("address")
            ),
            Connect::LocalError(_)
        ));
    }

    #[tokio::test]
    async fn real_transport_sees_open_and_closed_on_loopback() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let open = listener.local_addr().expect("addr");
        // A port that was just bound and released is closed (nothing listens).
        let closed = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            probe.local_addr().expect("addr")
        };
        let timeout = Duration::from_secs(5);
        assert!(matches!(
            TcpTransport.connect(open, timeout).await,
            Connect::Open(_)
        ));
        assert!(matches!(
            TcpTransport.connect(closed, timeout).await,
            Connect::Closed
        ));
    }
}
