//! Asking listeners, read-only, whether they are Redis and whether they let a
//! client in without a password: PING, then (only of a Redis) INFO server and
//! CONFIG GET of protected-mode and bind. Never a write, never CONFIG GET of
//! requirepass (the answer would be the secret itself).
//!
//! Every listener is asked at once: [`ask_all`] opens one non-blocking socket
//! per question (created inside the listener's network namespace, so it
//! connects from where the listener lives), polls them together, and stops
//! waiting for each at its own deadline, all set when the questions start. So a
//! host with hundreds of silent listeners pays the wait for silence once, not
//! once per listener. The sockets open at once are bounded by the open-file
//! limit: past it, questions wait for a free slot rather than go unasked.
//!
//! What is said, and what an answer means, is [`conversation`]'s, without I/O;
//! the bytes go through `perimeter_probe::redis`'s bounded RESP parser. This
//! module owns the sockets, the poll loop and the deadlines.

pub mod conversation;

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use perimeter_model::{Listener, RedisAuth};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

use crate::netns::run_in_netns;
use conversation::{Conversation, Step};

/// How long to wait for an instance that looks like Redis (named so, or on a
/// Redis port), and for any listener once it has answered PING as Redis does.
/// Redis answers in microseconds; a local service that takes longer is not
/// worth stalling the audit for.
pub const TIMEOUT: Duration = Duration::from_millis(1500);
/// How long to wait for a listener that might be Redis (its owner is unknown
/// or unpackaged): most such services are not, and silence must not cost much.
pub const SPECULATIVE_TIMEOUT: Duration = Duration::from_millis(300);

/// What one instance said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisAnswer {
    pub probed: SocketAddr,
    pub auth: RedisAuth,
    pub version: Option<String>,
    pub config_file: Option<String>,
    pub protected_mode: Option<bool>,
    pub bind: Option<String>,
}

/// One listener to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Where to connect ([`probe_address`]).
    pub address: SocketAddr,
    /// The file to `setns` into before making the socket (a /run/netns name or
    /// a /proc/PID/ns/net link); `None` for the calling thread's namespace.
    pub enter: Option<PathBuf>,
    /// How long to wait for the answer to PING, from when the question starts.
    /// One that answers as Redis gets [`TIMEOUT`] in all.
    pub patience: Duration,
}

/// Where to connect to reach a listener from this host: its own address, or
/// loopback for a wildcard bind (which is how a local attacker would come).
pub fn probe_address(listener: &Listener) -> SocketAddr {
    let address = match listener.address {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => {
            if listener.accepts_ipv4() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            }
        }
        other => other,
    };
    SocketAddr::new(address, listener.port)
}

/// Asks every question at once and returns the answers in the same order:
/// `Err` when the listener's namespace could not be entered (the message says
/// why). Never blocks past the latest deadline.
pub fn ask_all(questions: &[Question]) -> Vec<Result<RedisAnswer, String>> {
    let mut answers: Vec<Option<Result<RedisAnswer, String>>> = vec![None; questions.len()];
    let budget = fd_budget_for(questions.len());
    let mut waiting: VecDeque<usize> = (0..questions.len()).collect();
    let mut asking: Vec<Asking> = Vec::new();
    let mut readiness: Vec<PollFlags> = Vec::new();
    while !waiting.is_empty() || !asking.is_empty() {
        let n_free = budget.saturating_sub(asking.len());
        if n_free > 0 && !waiting.is_empty() {
            let starting: Vec<usize> = waiting.drain(..n_free.min(waiting.len())).collect();
            start(questions, &starting, &mut asking, &mut answers);
        }
        wait(&asking, &mut readiness);
        let now = Instant::now();
        let mut idx = 0;
        while idx < asking.len() {
            let one = &mut asking[idx];
            let ready = readiness.get(idx).copied().unwrap_or(PollFlags::empty());
            if !ready.is_empty() {
                one.advance(ready);
            }
            if !one.conversation.is_done() && now >= one.deadline {
                let waited = one.deadline.saturating_duration_since(one.started);
                one.conversation.timed_out(waited);
            }
            if one.conversation.is_done() {
                // Both lists lose the same place, so they stay aligned.
                let done = asking.swap_remove(idx);
                if idx < readiness.len() {
                    readiness.swap_remove(idx);
                }
                let question_idx = done.question_idx;
                answers[question_idx] = Some(Ok(done.finish()));
            } else {
                idx += 1;
            }
        }
    }
    answers
        .into_iter()
        .map(|answer| answer.unwrap_or_else(|| Err("not asked".to_owned())))
        .collect()
}

/// A question being asked.
#[derive(Debug)]
struct Asking {
    question_idx: usize,
    socket: OwnedFd,
    conversation: Conversation,
    io: Io,
    /// Bytes to send, and how many of them are sent.
    outgoing: Vec<u8>,
    n_sent: usize,
    started: Instant,
    deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Io {
    Connecting,
    Sending,
    Receiving,
}

impl Asking {
    /// What the socket waits for.
    fn interest(&self) -> PollFlags {
        match self.io {
            Io::Connecting | Io::Sending => PollFlags::OUT,
            Io::Receiving => PollFlags::IN,
        }
    }

    /// Moves the conversation on as far as the socket allows without waiting.
    fn advance(&mut self, ready: PollFlags) {
        if self.io == Io::Connecting {
            match rustix::net::sockopt::socket_error(&self.socket) {
                Ok(Ok(())) => self.io = Io::Sending,
                Ok(Err(errno)) | Err(errno) => {
                    return self.conversation.not_connected(&describe(errno));
                }
            }
        }
        if self.io == Io::Sending {
            self.send();
        }
        if self.io == Io::Receiving
            && ready.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR)
        {
            self.receive();
        }
    }

    fn send(&mut self) {
        while let Some(rest) = self.outgoing.get(self.n_sent..).filter(|r| !r.is_empty()) {
            match rustix::net::send(&self.socket, rest, SendFlags::NOSIGNAL) {
                Ok(n) => self.n_sent += n,
                Err(Errno::AGAIN) => return,
                Err(Errno::INTR) => {}
                Err(errno) => {
                    return self
                        .conversation
                        .closed(&format!("failed the connection ({})", describe(errno)));
                }
            }
        }
        self.io = Io::Receiving;
    }

    fn receive(&mut self) {
        let mut chunk = [0u8; 4096];
        loop {
            match rustix::net::recv(&self.socket, &mut chunk[..], RecvFlags::empty()) {
                Ok((0, _)) => return self.conversation.closed("closed the connection"),
                Ok((n, _)) => match self.conversation.received(chunk.get(..n).unwrap_or(&chunk)) {
                    Step::Read => {}
                    Step::Done => return,
                    Step::Send(bytes) => {
                        // It answered as Redis: worth the longer wait.
                        self.deadline = self.deadline.max(self.started + TIMEOUT);
                        self.outgoing = bytes;
                        self.n_sent = 0;
                        self.io = Io::Sending;
                        self.send();
                        if self.io != Io::Receiving {
                            return;
                        }
                    }
                },
                Err(Errno::AGAIN) => return,
                Err(Errno::INTR) => {}
                Err(errno) => {
                    return self
                        .conversation
                        .closed(&format!("reset the connection ({})", describe(errno)));
                }
            }
        }
    }

    fn finish(self) -> RedisAnswer {
        // Closed with a reset, not a FIN: no TIME_WAIT left behind per
        // question, and nothing for the far side to wait on. Best effort.
        let _ = rustix::net::sockopt::set_socket_linger(&self.socket, Some(Duration::ZERO));
        self.conversation.into_answer()
    }
}

fn describe(errno: Errno) -> String {
    std::io::Error::from(errno).to_string()
}

/// Opens the sockets of the questions `starting`, each in its listener's
/// namespace (one thread per namespace entered), and sends what can be sent
/// at once. A namespace that cannot be entered answers its questions with
/// `Err`; a connection refused answers at once.
fn start(
    questions: &[Question],
    starting: &[usize],
    asking: &mut Vec<Asking>,
    answers: &mut [Option<Result<RedisAnswer, String>>],
) {
    let mut by_netns: BTreeMap<Option<&Path>, Vec<usize>> = BTreeMap::new();
    for &idx in starting {
        by_netns
            .entry(questions[idx].enter.as_deref())
            .or_default()
            .push(idx);
    }
    for (enter, indices) in by_netns {
        let addresses: Vec<SocketAddr> = indices.iter().map(|&i| questions[i].address).collect();
        let begun = match enter {
            None => Ok(addresses.iter().map(|a| begin_connect(*a)).collect()),
            Some(path) => run_in_netns(path, || {
                addresses
                    .iter()
                    .map(|a| begin_connect(*a))
                    .collect::<Vec<_>>()
            })
            .map_err(|err| err.to_string()),
        };
        let begun: Vec<Result<(OwnedFd, bool), Errno>> = match begun {
            Ok(begun) => begun,
            Err(err) => {
                for idx in indices {
                    answers[idx] = Some(Err(err.clone()));
                }
                continue;
            }
        };
        let started = Instant::now();
        for (idx, begun) in indices.into_iter().zip(begun) {
            let question = &questions[idx];
            let (mut conversation, ping) = Conversation::start(question.address);
            let (socket, connected) = match begun {
                Ok(begun) => begun,
                Err(errno) => {
                    conversation.not_connected(&describe(errno));
                    answers[idx] = Some(Ok(conversation.into_answer()));
                    continue;
                }
            };
            let mut one = Asking {
                question_idx: idx,
                socket,
                conversation,
                io: if connected {
                    Io::Sending
                } else {
                    Io::Connecting
                },
                outgoing: ping,
                n_sent: 0,
                started,
                deadline: started + question.patience,
            };
            if connected {
                one.send();
            }
            if one.conversation.is_done() {
                answers[idx] = Some(Ok(one.finish()));
            } else {
                asking.push(one);
            }
        }
    }
}

/// A non-blocking socket connecting to `address`, and whether it is connected
/// already (on loopback the handshake usually ends inside `connect(2)`).
fn begin_connect(address: SocketAddr) -> Result<(OwnedFd, bool), Errno> {
    let family = match address {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let socket = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    match rustix::net::connect(&socket, &address) {
        Ok(()) => Ok((socket, true)),
        Err(Errno::INPROGRESS) => Ok((socket, false)),
        Err(errno) => Err(errno),
    }
}

/// Waits until a socket is ready or the nearest deadline passes, and leaves
/// each socket's readiness in `readiness`, in the order of `asking`.
fn wait(asking: &[Asking], readiness: &mut Vec<PollFlags>) {
    readiness.clear();
    let Some(nearest) = asking.iter().map(|one| one.deadline).min() else {
        return;
    };
    let left = nearest.saturating_duration_since(Instant::now());
    let timeout = Timespec {
        tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(left.subsec_nanos()),
    };
    let mut fds: Vec<PollFd<'_>> = asking
        .iter()
        .map(|one| PollFd::new(&one.socket, one.interest()))
        .collect();
    loop {
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) => break,
            Err(Errno::INTR) => {}
            // Cannot wait (out of memory for the poll set): treat every
            // socket as ready; a socket that is not says so with EAGAIN.
            Err(_) => {
                readiness.extend(asking.iter().map(Asking::interest));
                return;
            }
        }
    }
    readiness.extend(fds.iter().map(PollFd::revents));
}

/// How many sockets may be open at once: most of the open-file limit, with
/// headroom for the process's own files. When the questions need more than
/// the soft limit allows, it is raised to the hard limit first.
fn fd_budget_for(n_questions: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let budget = |soft: u64| {
        let headroom = (soft / 8).max(64);
        usize::try_from(soft.saturating_sub(headroom))
            .unwrap_or(usize::MAX)
            .max(1)
    };
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 256;
    };
    if budget(soft) >= n_questions || soft >= hard {
        return budget(soft);
    }
    // An unlimited hard limit cannot be the soft one for files (the kernel
    // caps it at fs.nr_open), so fall back to large finite values.
    for candidate in [hard, 1 << 20, 1 << 16] {
        if candidate > soft
            && candidate <= hard
            && setrlimit(Resource::RLIMIT_NOFILE, candidate, hard).is_ok()
        {
            return budget(candidate);
        }
    }
    budget(soft)
}
