//! A scripted network for unit tests: each address answers as told, every
//! attempt is logged with its virtual time, and the number of connections in
//! flight at once is tracked, so tests can check states, retries, rates,
//! concurrency and exclusions without a socket. The same network answers
//! SYNs too ([`FakeNetwork::packets`]), for the SYN scan's sender.

use std::collections::{HashMap, VecDeque};
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
use crate::syn::codec::{Answer, Reply};
use crate::syn::{PacketIo, Syn};

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
    /// Say nothing for this long.
    Wait(Duration),
    /// Write this byte forever, as fast as the client reads.
    Flood(u8),
    /// Answer every request until the client leaves: with the reply of the
    /// first rule whose needle the request contains, or with `otherwise`
    /// (nothing when `None`). A request is what one read returns (a probe
    /// writes each request at once).
    Respond {
        rules: Vec<(Vec<u8>, Vec<u8>)>,
        otherwise: Option<Vec<u8>>,
    },
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

    /// Logs an attempt on `address` and says how it is answered: the port's
    /// script with its "first n attempts" layers unwrapped against this
    /// attempt's number; `None` for a local error.
    fn attempt(&self, address: SocketAddr, connection: bool) -> Option<FakePort> {
        let (port, n_previous) = {
            let mut state = self.lock();
            state.attempts.push(Attempt {
                address,
                at: Instant::now(),
            });
            if connection {
                state.in_flight += 1;
                state.max_in_flight = state.max_in_flight.max(state.in_flight);
            }
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
                        return None;
                    }
                    behaviour = *inner;
                }
                other => return Some(other),
            }
        }
    }

    /// The network as a SYN scan's raw sockets see it: every SYN is an
    /// attempt (logged, and answered as the port's script says, after the
    /// round trip); a local error is a full send buffer, which stops the
    /// batch.
    pub fn packets(&self) -> FakePackets {
        FakePackets {
            network: self.clone(),
            source_port: 40_000,
            answers: VecDeque::new(),
        }
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
        let Some(behaviour) = self.attempt(address, true) else {
            FakeNetwork::leave(&self.state);
            return Connect::LocalError(std::io::Error::from_raw_os_error(nix::libc::EMFILE));
        };
        // As a kernel socket is closed when the connecting future is dropped
        // (the engine gave up on it early), the attempt leaves the network
        // then too, not only when it ends on its own.
        let attempt = InFlight {
            state: self.state.clone(),
            armed: true,
        };
        let answered_in_time = self.rtt < timeout;
        tokio::time::sleep(if answered_in_time { self.rtt } else { timeout }).await;
        match behaviour {
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
                Connect::Open(FakeStream {
                    inner: client,
                    state: attempt.into_stream(),
                })
            }
            // Unwrapped above.
            FakePort::DropFirst(..) | FakePort::LocalErrorFirst(..) => Connect::Closed,
        }
    }
}

/// A connection attempt in flight: it leaves the network when dropped,
/// unless it became an open stream (which leaves when it is dropped).
struct InFlight {
    state: Arc<Mutex<State>>,
    armed: bool,
}

impl InFlight {
    fn into_stream(mut self) -> Arc<Mutex<State>> {
        self.armed = false;
        self.state.clone()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.armed {
            FakeNetwork::leave(&self.state);
        }
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
            ServerStep::Wait(duration) => tokio::time::sleep(duration).await,
            ServerStep::Respond { rules, otherwise } => {
                let mut chunk = [0u8; 1024];
                loop {
                    let request = match server.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => chunk.get(..n).unwrap_or_default(),
                    };
                    let reply = rules
                        .iter()
                        .find(|(needle, _)| {
                            request
                                .windows(needle.len().max(1))
                                .any(|w| w == needle.as_slice())
                        })
                        .map(|(_, reply)| reply)
                        .or(otherwise.as_ref());
                    if let Some(reply) = reply
                        && server.write_all(reply).await.is_err()
                    {
                        return;
                    }
                }
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

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The scripted network behind a SYN scan's [`PacketIo`]
/// ([`FakeNetwork::packets`]).
#[derive(Debug)]
pub struct FakePackets {
    network: FakeNetwork,
    source_port: u16,
    /// Answers on their way, in the order they arrive (one round trip for
    /// every port, so in the order sent).
    answers: VecDeque<(Instant, Reply)>,
}

impl PacketIo for FakePackets {
    fn source_port(&self) -> u16 {
        self.source_port
    }

    fn send(&mut self, syns: &[Syn], failed: &mut Vec<(usize, std::io::Error)>) -> usize {
        let arrives = Instant::now() + self.network.rtt;
        for (i, syn) in syns.iter().enumerate() {
            let Some(behaviour) = self.network.attempt(syn.address, false) else {
                failed.push((i, std::io::Error::from_raw_os_error(nix::libc::ENOBUFS)));
                return i + 1;
            };
            let answer = match behaviour {
                FakePort::Open(_) => Answer::SynAck,
                FakePort::Closed => Answer::Rst,
                FakePort::Unreachable => Answer::Unreachable,
                // Unwrapped by `attempt`.
                FakePort::Silent | FakePort::DropFirst(..) | FakePort::LocalErrorFirst(..) => {
                    continue;
                }
            };
            let reply = Reply {
                from: syn.address.ip(),
                port: syn.address.port(),
                to_port: self.source_port,
                ack: syn.seq.wrapping_add(1),
                answer,
            };
            self.answers.push_back((arrives, reply));
        }
        syns.len()
    }

    fn receive(&mut self, replies: &mut Vec<Reply>, max: usize) {
        let now = Instant::now();
        let mut n = 0;
        while n < max && self.answers.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, reply)) = self.answers.pop_front() {
                replies.push(reply);
            }
            n += 1;
        }
    }

    async fn readable(&mut self) {
        match self.answers.front() {
            Some((at, _)) => tokio::time::sleep_until(*at).await,
            None => std::future::pending().await,
        }
    }
}
