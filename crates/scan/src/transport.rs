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

    /// One attempt to decide the port's state, which is all a scan asks before
    /// identification. A connect scan answers it with a connection (kept for
    /// the first identification probe); a SYN scan answers it without one, and
    /// identification then opens its own with [`Transport::connect`].
    fn probe(
        &self,
        address: SocketAddr,
        timeout: Duration,
    ) -> impl Future<Output = Connect<Option<Self::Stream>>> + Send {
        async move { self.connect(address, timeout).await.map(Some) }
    }
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
    let _ = stream.set_nodelay(true);
    Connect::Open(stream)
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

pub mod fake {
    //! A scripted network for unit tests: each address answers as told, every
    //! attempt is logged with its virtual time, and the number of connections in
    //! flight at once is tracked, so tests can check states, retries, rates,
    //! concurrency and exclusions without a socket.

    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::task::{Context, Poll};
    use std::time::Duration;

    use tokio::io::{
        AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, DuplexStream, ReadBuf,
    };
    use tokio::time::Instant;

    use super::{Connect, FilterCause, Transport};

    /// How an address answers connection attempts.
    #[derive(Debug, Clone)]
    pub enum FakePort {
        /// Accepts, then plays the service script.
        Open(FakeService),
        /// Refuses with a RST.
        Closed,
        /// Drops the SYN: the attempt times out.
        Silent,
        /// An ICMP unreachable comes back.
        Unreachable,
        /// The first `n` attempts are dropped, later ones answer as the inner port.
        DropFirst(u32, Box<FakePort>),
        /// The first `n` attempts fail locally (EMFILE), later ones answer as the
        /// inner port.
        LocalErrorFirst(u32, Box<FakePort>),
    }

    /// What the server side of an open fake port does, step by step.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum ServerStep {
        /// Write these bytes.
        Send(Vec<u8>),
        /// Read until these bytes have arrived (or the client leaves).
        Expect(Vec<u8>),
        /// Write this byte forever, as fast as the client reads.
        Flood(u8),
        /// Close the connection.
        Close,
    }

    /// The server script of an open port; after the last step it stays silent
    /// with the connection open.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct FakeService {
        pub steps: Vec<ServerStep>,
    }

    impl FakeService {
        pub fn silent() -> FakeService {
            FakeService::default()
        }

        pub fn banner(banner: &[u8]) -> FakeService {
            FakeService {
                steps: vec![ServerStep::Send(banner.to_vec())],
            }
        }

        pub fn steps(steps: Vec<ServerStep>) -> FakeService {
            FakeService { steps }
        }
    }

    /// One connection attempt, as the fake saw it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Attempt {
        pub address: SocketAddr,
        pub at: Instant,
    }

    #[derive(Debug, Default)]
    struct State {
        ports: HashMap<SocketAddr, FakePort>,
        attempts: Vec<Attempt>,
        n_attempts_by_address: HashMap<SocketAddr, u32>,
        in_flight: usize,
        max_in_flight: usize,
    }

    /// The scripted network. Clones share state.
    #[derive(Debug, Clone)]
    pub struct FakeNetwork {
        state: Arc<Mutex<State>>,
        default: FakePort,
        rtt: Duration,
    }

    impl FakeNetwork {
        /// A network where unknown addresses answer as `default` after `rtt`.
        pub fn new(default: FakePort, rtt: Duration) -> FakeNetwork {
            FakeNetwork {
                state: Arc::default(),
                default,
                rtt,
            }
        }

        pub fn set(&self, address: SocketAddr, port: FakePort) {
            self.lock().ports.insert(address, port);
        }

        /// Every attempt so far, in order.
        pub fn attempts(&self) -> Vec<Attempt> {
            self.lock().attempts.clone()
        }

        /// The most connections that were being attempted or held open at once.
        pub fn max_in_flight(&self) -> usize {
            self.lock().max_in_flight
        }

        /// Connections being attempted or held open now.
        pub fn in_flight(&self) -> usize {
            self.lock().in_flight
        }

        fn lock(&self) -> MutexGuard<'_, State> {
            // A test that panicked while holding the lock has failed already.
            self.state
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }

        fn leave(state: &Arc<Mutex<State>>) {
            let mut state = state
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state.in_flight = state.in_flight.saturating_sub(1);
        }
    }

    impl Transport for FakeNetwork {
        type Stream = FakeStream;

        async fn connect(&self, address: SocketAddr, timeout: Duration) -> Connect<FakeStream> {
            let (port, n_previous) = {
                let mut state = self.lock();
                state.attempts.push(Attempt {
                    address,
                    at: Instant::now(),
                });
                state.in_flight += 1;
                state.max_in_flight = state.max_in_flight.max(state.in_flight);
                let n_previous = state.n_attempts_by_address.entry(address).or_insert(0);
                let previous = *n_previous;
                *n_previous += 1;
                let port = state
                    .ports
                    .get(&address)
                    .cloned()
                    .unwrap_or_else(|| self.default.clone());
                (port, previous)
            };
            let mut behaviour = port;
            // Unwrap the "first n attempts" layers against this attempt's number.
            loop {
                match behaviour {
                    FakePort::DropFirst(n, inner) => {
                        behaviour = if n_previous < n {
                            FakePort::Silent
                        } else {
                            *inner
                        };
                    }
                    FakePort::LocalErrorFirst(n, inner) => {
                        if n_previous < n {
                            FakeNetwork::leave(&self.state);
                            return Connect::LocalError(std::io::Error::from_raw_os_error(
                                nix::libc::EMFILE,
                            ));
                        }
                        behaviour = *inner;
                    }
                    other => {
                        behaviour = other;
                        break;
                    }
                }
            }
            let answered_in_time = self.rtt < timeout;
            tokio::time::sleep(if answered_in_time { self.rtt } else { timeout }).await;
            let outcome = match behaviour {
                FakePort::Silent => {
                    if answered_in_time {
                        tokio::time::sleep(timeout - self.rtt).await;
                    }
                    Connect::Filtered(FilterCause::NoAnswer)
                }
                _ if !answered_in_time => Connect::Filtered(FilterCause::NoAnswer),
                FakePort::Closed => Connect::Closed,
                FakePort::Unreachable => Connect::Filtered(FilterCause::Unreachable),
                FakePort::Open(service) => {
                    let (client, server) = tokio::io::duplex(64 * 1024);
                    tokio::spawn(serve(server, service));
                    return Connect::Open(FakeStream {
                        inner: client,
                        state: self.state.clone(),
                    });
                }
                // Unwrapped above.
                FakePort::DropFirst(..) | FakePort::LocalErrorFirst(..) => Connect::Closed,
            };
            FakeNetwork::leave(&self.state);
            outcome
        }
    }

    async fn serve(mut server: DuplexStream, service: FakeService) {
        let mut received = Vec::new();
        for step in service.steps {
            match step {
                ServerStep::Send(bytes) => {
                    if server.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                ServerStep::Expect(wanted) => {
                    let mut chunk = [0u8; 1024];
                    while !received
                        .windows(wanted.len().max(1))
                        .any(|w| w == wanted.as_slice())
                    {
                        match server.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => received.extend_from_slice(chunk.get(..n).unwrap_or_default()),
                        }
                    }
                    received.clear();
                }
                ServerStep::Flood(byte) => {
                    let chunk = [byte; 1024];
                    while server.write_all(&chunk).await.is_ok() {}
                    return;
                }
                ServerStep::Close => return,
            }
        }
        // Stay connected and silent until the client leaves.
        let mut sink = [0u8; 1024];
        while matches!(server.read(&mut sink).await, Ok(n) if n > 0) {}
    }

    /// The client end of a fake connection; leaving the flight count on drop.
    #[derive(Debug)]
    pub struct FakeStream {
        inner: DuplexStream,
        state: Arc<Mutex<State>>,
    }

    impl Drop for FakeStream {
        fn drop(&mut self) {
            FakeNetwork::leave(&self.state);
        }
    }

    impl AsyncRead for FakeStream {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for FakeStream {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
