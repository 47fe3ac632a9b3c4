//! `perimeter watch`, the host half: process execs as the kernel reports them,
//! and listening sockets as they appear and go away, each traced to its
//! process, user, executable and package. The CLI decides what to print.
//!
//! Execs come from the kernel's process events connector (netlink
//! `NETLINK_CONNECTOR`, group `CN_IDX_PROC`): every exec on the host, as it
//! happens. The connector exists only in the initial network namespace, so
//! from inside another one its socket is opened on a thread that has entered
//! PID 1's namespace. Where the connector cannot be had (kernel without it,
//! no way into the initial namespace, a refused or ignored subscription) the
//! watch says exactly why and polls /proc for new processes instead, which
//! misses processes that live shorter than the polling interval.
//!
//! Each exec is read from /proc the moment its event arrives, on the thread
//! that receives events, so a short-lived process is caught while it still
//! exists; one that has already exited is reported with what the events told
//! (its pid, and its parent when its fork was seen), never dropped. Listeners
//! are dumped every interval through `sockets` and compared with the previous
//! dump; only new sockets cost a /proc walk to find their owners.
//!
//! Package ownership goes through one [`PackageDb`] opened at start, with a
//! cache per executable path that is emptied when dpkg's status file changes
//! (a package installed mid-watch must not stay "unpackaged").
//!
//! What makes an exec suspicious is not decided here: the watch collects the
//! facts (the exe link, ownership, the modes of the directories above the
//! executable) and [`ExecEvent::flags`] hands them to `checks::exec::judge`,
//! the judgement `perimeter audit` uses, so the two never disagree about the
//! same binary.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

use netlink_packet_core::NetlinkBuffer;
use netlink_sys::protocols::NETLINK_CONNECTOR;
use netlink_sys::{Socket, SocketAddr};
use perimeter_checks::exec::{ExecFacts, is_memfd, judge, world_writable_dir};
use perimeter_model::{Listener, Netns, Ownership, Problem, Process, Protocol};

use perimeter_host::interfaces::interface_names;
use perimeter_host::listeners::{ListenerOptions, collect_listeners, read_ns_inode, to_listener};
use perimeter_host::netns::{
    NetnsError, RUN_NETNS, name_namespace, named_namespaces, parse_ns_link,
};
use perimeter_host::packages::PackageDb;
use perimeter_host::procs::{
    PROC_LINK_CAPABILITY, parse_cgroup, parse_cmdline, parse_effective_capabilities,
    parse_exe_link, parse_status, walk_processes,
};
use perimeter_host::sockets::{RawSocket, dump_sockets};
use perimeter_host::users::AccountCache;

// ---------------------------------------------------------------------------
// The process events connector: wire format
// ---------------------------------------------------------------------------
//
// Parsed here by hand. Two crates speak this protocol: `cnproc` (bindgen
// bindings, last released in 2022) and `proc-connector` (0.3, a few months
// old, one author, a breaking release each month). The latter waits for the
// subscription's acknowledgement with a blocking `recv` and no timeout, and
// the kernel sends none to a subscriber outside the initial user and PID
// namespaces, so in a container it would hang instead of falling back. The
// layout is three fixed structs (`nlmsghdr`, `cn_msg`, `proc_event`, all in
// host byte order); netlink-packet-core checks the netlink header, and the
// rest is bounds-checked reads below, tested on literal bytes and with
// proptest.

/// `CN_IDX_PROC` and `CN_VAL_PROC` (linux/connector.h): the process events
/// connector's id, and the multicast group its events go to.
pub const CN_IDX_PROC: u32 = 1;
pub const CN_VAL_PROC: u32 = 1;
/// `PROC_CN_MCAST_LISTEN` (linux/cn_proc.h).
const PROC_CN_MCAST_LISTEN: u32 = 1;

/// Netlink control message types (linux/netlink.h). The connector sends its
/// own messages as `NLMSG_DONE`.
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;

/// `enum what` of `struct proc_event`.
const PROC_EVENT_NONE: u32 = 0;
const PROC_EVENT_FORK: u32 = 0x0000_0001;
const PROC_EVENT_EXEC: u32 = 0x0000_0002;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;

const NLMSG_HEADER_LEN: usize = 16;
/// `struct cn_msg`: id (idx, val), seq, ack, len (u16), flags (u16).
const CN_MSG_LEN: usize = 20;
/// `struct proc_event` up to its union: what, cpu, timestamp_ns (u64).
const PROC_EVENT_HEADER_LEN: usize = 16;

/// One event of the process events connector, as far as the watch uses them;
/// the other kinds (uid, gid, sid, ptrace, comm, coredump) parse to `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcEvent {
    /// The kernel's answer to a subscription (`PROC_EVENT_NONE`). Acks are
    /// multicast to every subscriber: `ack` (the request's `ack` plus one)
    /// tells ours from another program's. Linux 6.18 sends its own per-CPU
    /// message count as `seq`, not the request's.
    Ack { err: u32, seq: u32, ack: u32 },
    /// A new task; a new process when `child_pid == child_tgid`.
    Fork {
        parent_pid: u32,
        parent_tgid: u32,
        child_pid: u32,
        child_tgid: u32,
    },
    /// A successful `execve`: `tgid` is the process.
    Exec { pid: u32, tgid: u32 },
    /// A task ended.
    Exit {
        pid: u32,
        tgid: u32,
        exit_code: u32,
        exit_signal: u32,
    },
}

/// A netlink message that is not a well-formed process event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcEventError {
    #[error("malformed netlink message: {0}")]
    Netlink(String),
    #[error("the kernel answered with an error: {}", io::Error::from_raw_os_error(*.0))]
    Kernel(i32),
    #[error("the kernel dropped process events (netlink overrun)")]
    Overrun,
    #[error("a connector message for {idx}:{val}, not process events")]
    OtherConnector { idx: u32, val: u32 },
    #[error("{what} is {len} bytes, shorter than the {need} its layout needs")]
    Short {
        what: &'static str,
        len: usize,
        need: usize,
    },
}

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    let field = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_ne_bytes(field.try_into().ok()?))
}

fn u16_at(bytes: &[u8], offset: usize) -> Option<u16> {
    let field = bytes.get(offset..offset.checked_add(2)?)?;
    Some(u16::from_ne_bytes(field.try_into().ok()?))
}

/// The `n` u32 fields at the start of `bytes`, or why they are not there.
fn u32_fields<const N: usize>(
    bytes: &[u8],
    what: &'static str,
) -> Result<[u32; N], ProcEventError> {
    let short = ProcEventError::Short {
        what,
        len: bytes.len(),
        need: 4 * N,
    };
    let mut fields = [0u32; N];
    for (idx, field) in fields.iter_mut().enumerate() {
        *field = u32_at(bytes, 4 * idx).ok_or_else(|| short.clone())?;
    }
    Ok(fields)
}

/// Parses one netlink message (header included) of the process events
/// connector. `Ok(None)` for control messages and for event kinds the watch
/// does not use.
pub fn parse_proc_event(message: &[u8]) -> Result<Option<ProcEvent>, ProcEventError> {
    let buffer = NetlinkBuffer::new_checked(message)
        .map_err(|err| ProcEventError::Netlink(err.to_string()))?;
    let payload = buffer.payload();
    match buffer.message_type() {
        NLMSG_NOOP => return Ok(None),
        NLMSG_OVERRUN => return Err(ProcEventError::Overrun),
        NLMSG_ERROR => {
            let [errno] = u32_fields::<1>(payload, "netlink error message")?;
            // `nlmsgerr.error` is a negative errno; 0 acknowledges a request.
            let errno = (errno as i32).wrapping_neg();
            return if errno == 0 {
                Ok(None)
            } else {
                Err(ProcEventError::Kernel(errno))
            };
        }
        NLMSG_DONE if !payload.is_empty() => {}
        // An empty NLMSG_DONE ends a dump; other types are not the connector's.
        _ => return Ok(None),
    }

    let [idx, val, seq, ack] = u32_fields::<4>(payload, "connector message")?;
    let data_len = u16_at(payload, 16).ok_or(ProcEventError::Short {
        what: "connector message",
        len: payload.len(),
        need: CN_MSG_LEN,
    })?;
    if (idx, val) != (CN_IDX_PROC, CN_VAL_PROC) {
        return Err(ProcEventError::OtherConnector { idx, val });
    }
    let data = payload
        .get(CN_MSG_LEN..CN_MSG_LEN + usize::from(data_len))
        .ok_or(ProcEventError::Short {
            what: "connector message",
            len: payload.len(),
            need: CN_MSG_LEN + usize::from(data_len),
        })?;
    let [what, _cpu] = u32_fields::<2>(data, "process event")?;
    let event = data
        .get(PROC_EVENT_HEADER_LEN..)
        .ok_or(ProcEventError::Short {
            what: "process event",
            len: data.len(),
            need: PROC_EVENT_HEADER_LEN,
        })?;
    Ok(match what {
        PROC_EVENT_NONE => {
            let [err] = u32_fields::<1>(event, "process event acknowledgement")?;
            Some(ProcEvent::Ack { err, seq, ack })
        }
        PROC_EVENT_FORK => {
            let [parent_pid, parent_tgid, child_pid, child_tgid] =
                u32_fields::<4>(event, "fork event")?;
            Some(ProcEvent::Fork {
                parent_pid,
                parent_tgid,
                child_pid,
                child_tgid,
            })
        }
        PROC_EVENT_EXEC => {
            let [pid, tgid] = u32_fields::<2>(event, "exec event")?;
            Some(ProcEvent::Exec { pid, tgid })
        }
        PROC_EVENT_EXIT => {
            // Kernels since 4.x append the parent's pid and tgid; the first
            // four fields are all the watch needs.
            let [pid, tgid, exit_code, exit_signal] = u32_fields::<4>(event, "exit event")?;
            Some(ProcEvent::Exit {
                pid,
                tgid,
                exit_code,
                exit_signal,
            })
        }
        _ => None,
    })
}

/// Every message of one datagram, parsed. The kernel sends one connector
/// message per datagram, but netlink allows several; a length field that
/// does not fit ends the walk with an error.
pub fn parse_proc_datagram(datagram: &[u8]) -> Vec<Result<ProcEvent, ProcEventError>> {
    let mut events = Vec::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let Some(len) = u32_at(rest, 0).map(|len| len as usize) else {
            events.push(Err(ProcEventError::Short {
                what: "netlink message",
                len: rest.len(),
                need: NLMSG_HEADER_LEN,
            }));
            break;
        };
        let Some(message) = rest.get(..len).filter(|_| len >= NLMSG_HEADER_LEN) else {
            events.push(Err(ProcEventError::Netlink(format!(
                "length field says {len} bytes, {} are left",
                rest.len()
            ))));
            break;
        };
        match parse_proc_event(message) {
            Ok(Some(event)) => events.push(Ok(event)),
            Ok(None) => {}
            Err(err) => events.push(Err(err)),
        }
        // Messages are padded to 4 bytes (NLMSG_ALIGN).
        let aligned = len.saturating_add(3) & !3;
        rest = rest.get(aligned..).unwrap_or_default();
    }
    events
}

/// The subscription request: `nlmsghdr` + `cn_msg` + `PROC_CN_MCAST_LISTEN`.
/// `ack` comes back in the kernel's acknowledgement as `ack + 1`, which is
/// how ours is told from another subscriber's.
pub fn listen_request(port_id: u32, seq: u32, ack: u32) -> Vec<u8> {
    let len = NLMSG_HEADER_LEN + CN_MSG_LEN + 4;
    let mut message = Vec::with_capacity(len);
    // nlmsghdr: length, type, flags, sequence, port id.
    message.extend_from_slice(&(len as u32).to_ne_bytes());
    message.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    message.extend_from_slice(&0u16.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes());
    message.extend_from_slice(&port_id.to_ne_bytes());
    // cn_msg: idx, val, seq, ack, len, flags.
    message.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    message.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    message.extend_from_slice(&seq.to_ne_bytes());
    message.extend_from_slice(&ack.to_ne_bytes());
    message.extend_from_slice(&4u16.to_ne_bytes());
    message.extend_from_slice(&0u16.to_ne_bytes());
    message.extend_from_slice(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
    message
}

// ---------------------------------------------------------------------------
// The process events connector: the socket
// ---------------------------------------------------------------------------

/// `CAP_NET_ADMIN`'s bit (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;

/// How long to wait for the kernel to acknowledge the subscription. It
/// answers at once; silence means it ignored us (see [`ConnectorError::NoAck`]).
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one `recv` blocks, so the receiving thread notices a stop.
const RECV_TIMEOUT: Duration = Duration::from_millis(200);
/// The receive buffer asked for: a burst of forks and execs (a build, a
/// shell loop) queues events faster than /proc can be read for each.
const RECV_BUFFER_BYTES: usize = 8 << 20;
/// A connector datagram is 76 bytes; a page holds any the kernel sends.
const DATAGRAM_BYTES: usize = 4096;

/// The process events connector could not be subscribed to. Each message
/// says why, and what would fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error(
        "this kernel has no process events connector (CONFIG_CONNECTOR and CONFIG_PROC_EVENTS): {0}"
    )]
    Unsupported(#[source] io::Error),
    #[error(
        "the process events connector exists only in the initial network namespace, and perimeter could not enter it: {0}{hint}",
        hint = enter_hint(.0)
    )]
    EnterInitialNetns(#[source] NetnsError),
    #[error(
        "the process events connector exists only in the initial network namespace, and {ns_file} is not it either"
    )]
    NotInInitialNetns { ns_file: PathBuf },
    #[error("the kernel refused the subscription to process events: {source}{}", if *.has_net_admin { "" } else { " (needs CAP_NET_ADMIN, which perimeter does not hold)" })]
    Refused {
        source: io::Error,
        has_net_admin: bool,
    },
    #[error("the kernel did not acknowledge the subscription to process events within {}s: {}", ACK_TIMEOUT.as_secs(), no_ack_reason(*.has_net_admin))]
    NoAck { has_net_admin: bool },
    #[error("process events connector i/o failed: {0}")]
    Io(#[source] io::Error),
}

fn enter_hint(err: &NetnsError) -> &'static str {
    match err {
        // Already says it needs CAP_SYS_ADMIN.
        NetnsError::NotPermitted { .. } => "",
        _ => {
            " (opening another user's /proc/PID/ns/net needs CAP_SYS_PTRACE, entering it CAP_SYS_ADMIN: run as root)"
        }
    }
}

fn no_ack_reason(has_net_admin: bool) -> &'static str {
    if has_net_admin {
        "it ignores subscribers outside the initial user and PID namespaces (a container)"
    } else {
        "it needs CAP_NET_ADMIN, which perimeter does not hold, on kernels that reserve process events to it, and ignores subscribers outside the initial user and PID namespaces (a container)"
    }
}

/// A subscribed connector socket.
#[derive(Debug)]
pub struct Connector {
    socket: Socket,
    /// Events that arrived while the acknowledgement was awaited.
    early: Vec<ProcEvent>,
    /// Whether the socket was opened inside PID 1's network namespace.
    pub entered_initial_netns: bool,
}

/// The namespace file of the initial network namespace: PID 1's, or where a
/// sandbox hides PID 1 (Landlock scoping does), kthreadd's (pid 2, parent 0),
/// which lives there on any host.
fn initial_netns_file(proc_root: &Path) -> PathBuf {
    let init = proc_root.join("1/ns/net");
    if std::fs::read_link(&init).is_ok() {
        return init;
    }
    let kthreadd = proc_root.join("2");
    let is_kthreadd = std::fs::read_to_string(kthreadd.join("status"))
        .ok()
        .and_then(|status| parse_status(&status).ok())
        .is_some_and(|status| status.ppid == 0 && status.name == "kthreadd");
    if is_kthreadd {
        kthreadd.join("ns/net")
    } else {
        init
    }
}

/// Whether the calling thread holds `CAP_NET_ADMIN`, from its status file.
fn holds_net_admin(proc_root: &Path) -> bool {
    std::fs::read_to_string(proc_root.join("thread-self/status"))
        .ok()
        .and_then(|status| parse_effective_capabilities(&status))
        .is_some_and(|caps| caps & (1u64 << CAP_NET_ADMIN) != 0)
}

impl Connector {
    /// Subscribes to process events: in the calling thread's network
    /// namespace, else (when that is not the initial one) from a thread that
    /// has entered PID 1's.
    pub fn open(proc_root: &Path) -> Result<Connector, ConnectorError> {
        let has_net_admin = holds_net_admin(proc_root);
        match Connector::open_here(has_net_admin) {
            Err(ConnectorError::Io(err)) if err.kind() == io::ErrorKind::ConnectionRefused => {
                // Sending to the kernel is refused where no connector exists:
                // any namespace but the initial one.
                let ns_file = initial_netns_file(proc_root);
                match perimeter_host::netns::run_in_netns(&ns_file, || {
                    Connector::open_here(has_net_admin)
                }) {
                    Ok(Ok(mut connector)) => {
                        connector.entered_initial_netns = true;
                        Ok(connector)
                    }
                    Ok(Err(ConnectorError::Io(err)))
                        if err.kind() == io::ErrorKind::ConnectionRefused =>
                    {
                        Err(ConnectorError::NotInInitialNetns { ns_file })
                    }
                    Ok(Err(err)) => Err(err),
                    Err(err) => Err(ConnectorError::EnterInitialNetns(err)),
                }
            }
            other => other,
        }
    }

    fn open_here(has_net_admin: bool) -> Result<Connector, ConnectorError> {
        let mut socket = Socket::new(NETLINK_CONNECTOR).map_err(|err| {
            if err.raw_os_error() == Some(libc::EPROTONOSUPPORT) {
                ConnectorError::Unsupported(err)
            } else {
                ConnectorError::Io(err)
            }
        })?;
        socket
            .bind(&SocketAddr::new(0, CN_IDX_PROC))
            .map_err(ConnectorError::Io)?;
        // Forcing the size past rmem_max needs CAP_NET_ADMIN; without it the
        // ordinary request is capped by rmem_max, which still beats the default.
        if rustix::net::sockopt::set_socket_recv_buffer_size_force(&socket, RECV_BUFFER_BYTES)
            .is_err()
        {
            let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&socket, RECV_BUFFER_BYTES);
        }
        rustix::net::sockopt::set_socket_timeout(
            &socket,
            rustix::net::sockopt::Timeout::Recv,
            Some(RECV_TIMEOUT),
        )
        .map_err(|errno| ConnectorError::Io(errno.into()))?;
        let mut address = SocketAddr::new(0, 0);
        socket
            .get_address(&mut address)
            .map_err(ConnectorError::Io)?;

        // A nonce of our own, so our acknowledgement is told from others':
        // the kernel echoes `ack + 1` (it replaces `seq` with its per-CPU
        // message count).
        let ack = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |since| since.subsec_nanos() ^ std::process::id());
        let request = listen_request(address.port_number(), 0, ack);
        // To the kernel (port 0), not to the group: a message to the group
        // would go to the other subscribers.
        socket
            .send_to(&request, &SocketAddr::new(0, 0), 0)
            .map_err(ConnectorError::Io)?;

        let mut connector = Connector {
            socket,
            early: Vec::new(),
            entered_initial_netns: false,
        };
        let deadline = Instant::now() + ACK_TIMEOUT;
        while Instant::now() < deadline {
            for event in connector.recv_raw().map_err(ConnectorError::Io)? {
                match event {
                    Ok(ProcEvent::Ack {
                        err, ack: acked, ..
                    }) if acked == ack.wrapping_add(1) => {
                        if err != 0 {
                            return Err(ConnectorError::Refused {
                                source: io::Error::from_raw_os_error(err as i32),
                                has_net_admin,
                            });
                        }
                        return Ok(connector);
                    }
                    Ok(ProcEvent::Ack { .. }) => {}
                    Ok(event) => connector.early.push(event),
                    Err(_) => {}
                }
            }
        }
        Err(ConnectorError::NoAck { has_net_admin })
    }

    /// One `recv`: the events of one datagram, or nothing when the timeout
    /// passed. `ENOBUFS` (events lost) is the caller's to interpret.
    fn recv_raw(&mut self) -> io::Result<Vec<Result<ProcEvent, ProcEventError>>> {
        self.recv_flags(0)
    }

    fn recv_flags(
        &mut self,
        flags: libc::c_int,
    ) -> io::Result<Vec<Result<ProcEvent, ProcEventError>>> {
        let mut datagram = vec![0u8; DATAGRAM_BYTES];
        match self.socket.recv(&mut &mut datagram[..], flags) {
            Ok(len) => Ok(parse_proc_datagram(datagram.get(..len).unwrap_or_default())),
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(Vec::new())
            }
            Err(err) => Err(err),
        }
    }

    /// The next events, waiting at most [`RECV_TIMEOUT`]. A receive buffer
    /// that overflowed (`ENOBUFS`: the kernel dropped events) is
    /// [`Received::Lost`]; the socket stays usable.
    pub fn recv(&mut self) -> io::Result<Received> {
        if !self.early.is_empty() {
            return Ok(Received::Events(std::mem::take(&mut self.early)));
        }
        let events = self.recv_raw();
        Connector::sort_received(events)
    }

    /// The events already queued, without waiting: an empty list when none
    /// is. Draining the queue before reading /proc lets the reader see that
    /// a process exec'd twice (a `#!/usr/bin/env` script) and not report the
    /// second image twice.
    pub fn try_recv(&mut self) -> io::Result<Received> {
        let events = self.recv_flags(libc::MSG_DONTWAIT);
        Connector::sort_received(events)
    }

    /// Waits at most `timeout` for events to be queued; true when some are.
    pub fn wait(&self, timeout: Duration) -> bool {
        let mut fds = [rustix::event::PollFd::new(
            &self.socket,
            rustix::event::PollFlags::IN,
        )];
        let timeout = rustix::event::Timespec {
            tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        rustix::event::poll(&mut fds, Some(&timeout)).is_ok_and(|ready| ready > 0)
    }

    fn sort_received(
        events: io::Result<Vec<Result<ProcEvent, ProcEventError>>>,
    ) -> io::Result<Received> {
        match events {
            Ok(events) => {
                let mut good = Vec::with_capacity(events.len());
                let mut lost = false;
                for event in events {
                    match event {
                        Ok(event) => good.push(event),
                        Err(ProcEventError::Overrun) => lost = true,
                        // A malformed message is skipped: one bad datagram
                        // must not end the watch.
                        Err(err) => tracing::debug!("process events: {err}"),
                    }
                }
                Ok(if lost && good.is_empty() {
                    Received::Lost
                } else {
                    Received::Events(good)
                })
            }
            Err(err) if err.raw_os_error() == Some(libc::ENOBUFS) => Ok(Received::Lost),
            Err(err) => Err(err),
        }
    }
}

/// What one [`Connector::recv`] brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Events(Vec<ProcEvent>),
    /// The kernel dropped events: the receive buffer was full.
    Lost,
}

// ---------------------------------------------------------------------------
// Reading an exec'd process from /proc
// ---------------------------------------------------------------------------

/// Where an exec event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecSource {
    /// The kernel's process events connector: every exec.
    Connector,
    /// Polling /proc for new processes and executables: processes that live
    /// shorter than the interval are missed, and a process seen only after
    /// several execs is reported once, with its last.
    ProcPoll,
}

impl ExecSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecSource::Connector => "netlink-connector",
            ExecSource::ProcPoll => "proc-poll",
        }
    }
}

/// Why an exec's flags call it suspicious: the audit's vocabulary, so the
/// CLI's `perimeter_watch::ExecFlag` is the very type the audit rules use.
pub use perimeter_checks::exec::ExecFlag;

/// One exec, with everything /proc still showed of the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecEvent {
    /// When the event was received.
    pub at: SystemTime,
    pub source: ExecSource,
    pub pid: u32,
    /// From /proc, else from the fork event when the process had gone.
    pub ppid: Option<u32>,
    /// The effective uid.
    pub uid: Option<u32>,
    /// The account name of `uid`, when it has one.
    pub user: Option<String>,
    /// The kernel's short name.
    pub comm: Option<String>,
    /// The resolved executable, without ` (deleted)`.
    pub exe: Option<PathBuf>,
    /// Why `exe` could not be read, when it could not.
    pub exe_unreadable: Option<String>,
    pub exe_deleted: bool,
    /// `exe` is an anonymous memory file (`checks::exec::is_memfd`).
    pub memfd: bool,
    pub cmdline: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub netns_inode: Option<u64>,
    pub netns: Option<Netns>,
    pub unit: Option<String>,
    pub container: Option<String>,
    pub parent_comm: Option<String>,
    pub parent_exe: Option<PathBuf>,
    pub ownership: Ownership,
    /// The nearest directory above the executable that anyone may write to,
    /// by `checks::exec::world_writable_dir` over the directories' modes.
    pub world_writable_dir: Option<PathBuf>,
    /// The process exited before /proc could be read: only the event's facts
    /// (and the fork's) are known.
    pub gone: bool,
    /// The process exec'd again before this exec could be read (a
    /// `#!/usr/bin/env` script): what it ran here is unknown, and the next
    /// event shows what it runs now.
    pub superseded: bool,
}

impl ExecEvent {
    /// The flags that make the exec suspicious, in a fixed order: the
    /// audit's judgement (`checks::exec::judge`) of the facts read for it.
    pub fn flags(&self) -> Vec<ExecFlag> {
        judge(&ExecFacts {
            exe: self.exe.as_deref(),
            deleted: self.exe_deleted,
            ownership: &self.ownership,
            world_writable_dir: self.world_writable_dir.as_deref(),
        })
    }

    pub fn is_suspicious(&self) -> bool {
        !self.flags().is_empty()
    }

    /// An exec with nothing read from /proc yet.
    fn unread(pid: u32, source: ExecSource, at: SystemTime, fork_parent: Option<u32>) -> ExecEvent {
        ExecEvent {
            at,
            source,
            pid,
            ppid: fork_parent,
            uid: None,
            user: None,
            comm: None,
            exe: None,
            exe_unreadable: None,
            exe_deleted: false,
            memfd: false,
            cmdline: Vec::new(),
            cwd: None,
            netns_inode: None,
            netns: None,
            unit: None,
            container: None,
            parent_comm: None,
            parent_exe: None,
            ownership: Ownership::NotChecked,
            world_writable_dir: None,
            gone: false,
            superseded: false,
        }
    }
}

/// Longer command lines are cut: nothing downstream needs megabytes.
const MAX_CMDLINE: u64 = 64 * 1024;
const MAX_SMALL_FILE: u64 = 64 * 1024;

fn read_capped(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    // Room for the whole file in the first read: `read_to_end` on an empty
    // vector probes with 32 bytes first, and a process that exits between
    // that read and the next leaves a command line cut at 32 bytes.
    let mut bytes = Vec::with_capacity(8 * 1024);
    File::open(path)?.take(cap).read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn is_gone(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOENT) | Some(libc::ESRCH))
}

/// What a readlink failure means for the reader.
fn link_failure(path: &Path, err: &io::Error) -> String {
    if err.kind() == io::ErrorKind::PermissionDenied {
        format!(
            "reading {} needs {PROC_LINK_CAPABILITY} (run as root)",
            path.display()
        )
    } else {
        format!("cannot read {}: {err}", path.display())
    }
}

/// Reads what /proc shows of `pid` right after its exec. Never fails: a
/// process that has gone gives an event with `gone` set and the facts known
/// from the events (`fork_parent`).
pub fn read_exec(
    proc_root: &Path,
    pid: u32,
    source: ExecSource,
    at: SystemTime,
    fork_parent: Option<u32>,
) -> ExecEvent {
    let dir = proc_root.join(pid.to_string());
    let mut event = ExecEvent::unread(pid, source, at, fork_parent);
    // The exe link first: it is what a process that exits takes with it first.
    let exe_path = dir.join("exe");
    match std::fs::read_link(&exe_path) {
        Ok(link) => {
            let link = link.as_os_str().as_bytes();
            let (path, deleted) = parse_exe_link(link);
            event.memfd = is_memfd(&path);
            event.exe = Some(path);
            event.exe_deleted = deleted;
        }
        Err(err) if is_gone(&err) => {
            event.exe_unreadable = Some("the process exited before it could be read".to_owned());
            event.gone = true;
        }
        Err(err) => event.exe_unreadable = Some(link_failure(&exe_path, &err)),
    }
    match read_capped(&dir.join("status"), MAX_SMALL_FILE)
        .map(|bytes| parse_status(&String::from_utf8_lossy(&bytes)))
    {
        Ok(Ok(status)) => {
            event.ppid = Some(status.ppid);
            event.uid = Some(status.euid);
            event.comm = Some(status.name);
        }
        // A zombie's status is still there; a reaped process has none.
        Ok(Err(_)) | Err(_) => event.gone = true,
    }
    if event.gone {
        return event;
    }
    if let Ok(bytes) = read_capped(&dir.join("cmdline"), MAX_CMDLINE) {
        event.cmdline = parse_cmdline(&bytes);
    }
    event.cwd = std::fs::read_link(dir.join("cwd")).ok();
    event.netns_inode = std::fs::read_link(dir.join("ns/net"))
        .ok()
        .and_then(|link| parse_ns_link(&link.to_string_lossy()));
    if let Ok(bytes) = read_capped(&dir.join("cgroup"), MAX_SMALL_FILE) {
        let cgroup = parse_cgroup(&String::from_utf8_lossy(&bytes));
        event.unit = cgroup.unit;
        event.container = cgroup.container;
    }
    if let Some(ppid) = event.ppid.filter(|ppid| *ppid != 0) {
        let parent = proc_root.join(ppid.to_string());
        event.parent_comm = std::fs::read(parent.join("comm"))
            .ok()
            .map(|comm| String::from_utf8_lossy(&comm).trim_end().to_owned());
        event.parent_exe = std::fs::read_link(parent.join("exe"))
            .ok()
            .map(|link| parse_exe_link(link.as_os_str().as_bytes()).0);
    }
    event
}

/// A directory's permission bits (`st_mode & 0o7777`), `None` when it cannot
/// be stat'ed. Judging them is `checks::exec`'s job.
fn dir_mode(dir: &Path) -> Option<u32> {
    std::fs::metadata(dir)
        .ok()
        .map(|meta| meta.permissions().mode() & 0o7777)
}

// ---------------------------------------------------------------------------
// Polling /proc, when the connector cannot be had
// ---------------------------------------------------------------------------

/// How often /proc is listed when polling. Listing is a few hundred
/// `getdents` entries and one `readlink` per process: cheap, and the shorter
/// the interval the fewer short-lived processes slip through.
pub const PROC_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The processes of one /proc listing: pid → the `exe` link as read (`None`
/// when it could not be read).
pub type ProcListing = HashMap<u32, Option<Vec<u8>>>;

/// Which processes of `now` are new since `before`: pids not seen before, and
/// pids whose executable changed (an exec in place).
pub fn new_processes(before: &ProcListing, now: &ProcListing) -> Vec<u32> {
    let mut new: Vec<u32> = now
        .iter()
        .filter(|(pid, exe)| match before.get(pid) {
            None => true,
            Some(old) => old.is_some() && exe.is_some() && old != *exe,
        })
        .map(|(pid, _)| *pid)
        .collect();
    new.sort_unstable();
    new
}

/// Lists /proc: every process and its exe link.
fn list_processes(proc_root: &Path) -> io::Result<ProcListing> {
    let mut listing = HashMap::new();
    for entry in std::fs::read_dir(proc_root)? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(pid) = std::str::from_utf8(name.as_bytes())
            .ok()
            .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let exe = std::fs::read_link(entry.path().join("exe"))
            .ok()
            .map(|link| link.into_os_string().into_vec());
        listing.insert(pid, exe);
    }
    Ok(listing)
}

// ---------------------------------------------------------------------------
// Listeners
// ---------------------------------------------------------------------------

/// What identifies a listening socket across dumps.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenerKey {
    pub netns_inode: u64,
    pub protocol: Protocol,
    pub address: std::net::IpAddr,
    pub port: u16,
    pub inode: u64,
}

impl ListenerKey {
    pub fn of(listener: &Listener) -> ListenerKey {
        ListenerKey {
            netns_inode: listener.netns.inode,
            protocol: listener.protocol,
            address: listener.address,
            port: listener.port,
            inode: listener.inode,
        }
    }
}

/// A listener that appeared or went away, with its owners as they were when
/// it was first seen (account and package ownership filled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerEvent {
    pub at: SystemTime,
    pub listener: Listener,
    pub owners: Vec<Process>,
}

impl ListenerEvent {
    /// The first owner that is not a child of another owner (the master of a
    /// pre-forked server), else the first.
    pub fn main_owner(&self) -> Option<&Process> {
        let pids: Vec<u32> = self.owners.iter().map(|p| p.pid).collect();
        self.owners
            .iter()
            .find(|p| !pids.contains(&p.ppid))
            .or_else(|| self.owners.first())
    }

    /// Reachable from beyond the host's loopback.
    pub fn is_exposed(&self) -> bool {
        self.listener.scope.is_exposed()
    }
}

/// Keys of `before` that `now` (sorted) lacks, in order: the sockets that
/// went away.
pub fn gone_listeners<V>(
    before: &BTreeMap<ListenerKey, V>,
    now: &[ListenerKey],
) -> Vec<ListenerKey> {
    before
        .keys()
        .filter(|key| now.binary_search(key).is_err())
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------
// Caches: package ownership and accounts
// ---------------------------------------------------------------------------

/// Past this many executables the cache starts over: a host runs a few
/// hundred distinct ones; this only bounds a pathological stream of unique
/// paths (a fuzzer, a build of thousands of test binaries).
const MAX_CACHED_EXES: usize = 4096;

/// Package ownership per executable path, over one [`PackageDb`].
#[derive(Debug)]
struct PackageCache {
    db: PackageDb,
    /// dpkg's status file, rewritten by every install and removal.
    status_file: PathBuf,
    status_stamp: Option<SystemTime>,
    owners: HashMap<PathBuf, Ownership>,
    /// The mode of each directory above an executable seen, as [`dir_mode`]
    /// read it.
    dir_modes: HashMap<PathBuf, Option<u32>>,
}

impl PackageCache {
    fn open(fs_root: &Path) -> (PackageCache, Vec<Problem>) {
        let (db, problems) = PackageDb::open(fs_root);
        let status_file = fs_root.join("var/lib/dpkg/status");
        let cache = PackageCache {
            status_stamp: modified(&status_file),
            status_file,
            db,
            owners: HashMap::new(),
            dir_modes: HashMap::new(),
        };
        (cache, problems)
    }

    /// Looks up every executable not yet cached, in one pass over the
    /// database.
    fn resolve<'a>(&mut self, exes: impl IntoIterator<Item = &'a Path>) -> Vec<Problem> {
        let stamp = modified(&self.status_file);
        if stamp != self.status_stamp {
            self.status_stamp = stamp;
            self.owners.clear();
        }
        let mut wanted: Vec<PathBuf> = exes
            .into_iter()
            .filter(|exe| !self.owners.contains_key(*exe) && !is_memfd(exe))
            .map(Path::to_path_buf)
            .collect();
        wanted.sort();
        wanted.dedup();
        if wanted.is_empty() {
            return Vec::new();
        }
        if self.owners.len() + wanted.len() > MAX_CACHED_EXES {
            self.owners.clear();
        }
        let (owners, problems) = self.db.owners(&wanted);
        self.owners.extend(owners);
        problems
    }

    fn ownership(&self, exe: &Path) -> Ownership {
        if is_memfd(exe) {
            return Ownership::Unknown(
                "runs from an anonymous memory file (memfd), not from a file on disk".to_owned(),
            );
        }
        self.owners
            .get(exe)
            .cloned()
            .unwrap_or_else(|| Ownership::Unknown("not looked up".to_owned()))
    }

    fn world_writable_dir(&mut self, exe: &Path) -> Option<PathBuf> {
        if self.dir_modes.len() > MAX_CACHED_EXES {
            self.dir_modes.clear();
        }
        let cache = &mut self.dir_modes;
        world_writable_dir(exe, |dir| {
            *cache
                .entry(dir.to_path_buf())
                .or_insert_with(|| dir_mode(dir))
        })
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
}

// ---------------------------------------------------------------------------
// The watch
// ---------------------------------------------------------------------------

/// Where execs should come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecSourceChoice {
    /// The connector, else polling /proc (saying why).
    Auto,
    /// The connector or nothing: failing to subscribe is an error.
    Connector,
    /// Poll /proc even where the connector would work.
    ProcPoll,
}

/// What to watch, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOptions {
    /// How often listening sockets are dumped and compared.
    pub interval: Duration,
    /// Every network namespace on the host, not only our own (each interval
    /// then walks /proc, as `perimeter audit --all-netns` does).
    pub all_netns: bool,
    pub exec_source: ExecSourceChoice,
    /// How long an exec may wait for others before they are handed on, so
    /// that one package lookup (a pass over every dpkg file list) serves
    /// them all. Zero hands each batch on as soon as it is received (the
    /// watch command); the agent, which sends execs with its next report
    /// anyway, holds them a few seconds, so a host that runs many new
    /// executables (a build server) costs it one lookup per hold, not one
    /// per batch.
    pub exec_hold: Duration,
    /// How often /proc is listed when polling for new processes.
    pub poll_interval: Duration,
    /// Normally `/proc`.
    pub proc_root: PathBuf,
    /// The root of the package database (normally `/`).
    pub fs_root: PathBuf,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            interval: Duration::from_secs(2),
            all_netns: false,
            exec_source: ExecSourceChoice::Auto,
            exec_hold: Duration::ZERO,
            poll_interval: PROC_POLL_INTERVAL,
            proc_root: PathBuf::from("/proc"),
            fs_root: PathBuf::from("/"),
        }
    }
}

/// One thing the watch saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Exec(Box<ExecEvent>),
    ListenerAppeared(Box<ListenerEvent>),
    ListenerGone(Box<ListenerEvent>),
    /// Something could not be seen; the watch goes on.
    Problem(Problem),
}

/// How the watch started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub exec_source: ExecSource,
    /// Why the connector is not used, when it is not (with `Auto`).
    pub fallback_reason: Option<String>,
    /// The connector was opened in PID 1's network namespace, ours being
    /// another.
    pub entered_initial_netns: bool,
    /// The namespaces whose listeners are watched.
    pub namespaces: Vec<Netns>,
    /// Listening sockets present at the start (not reported as appeared).
    pub n_listeners: usize,
    /// What could not be seen at the start.
    pub problems: Vec<Problem>,
}

/// The watch could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Connector(#[from] ConnectorError),
}

/// Counts of what a watch reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchSummary {
    pub n_execs: usize,
    pub n_suspicious_execs: usize,
    /// Execs whose process exited before /proc could be read: their flags
    /// are unknown.
    pub n_gone: usize,
    pub n_listeners_appeared: usize,
    pub n_listeners_gone: usize,
    /// Times the kernel dropped process events.
    pub n_lost: usize,
}

/// Messages from the exec thread to the watch loop. Each variant is a
/// pointer at most: the channel's slots are allocated and touched up front,
/// all [`EXEC_QUEUE`] of them, so a message of 16 bytes rather than a whole
/// [`Problem`] keeps the idle watch over a megabyte smaller.
enum ExecMessage {
    Exec(Box<ExecEvent>),
    Lost,
    Problem(Box<Problem>),
}

/// The most exec events waiting for the watch loop; past it the exec thread
/// blocks, the kernel's buffer fills, and lost events are reported.
const EXEC_QUEUE: usize = 16 * 1024;
const _: () = assert!(std::mem::size_of::<ExecMessage>() <= 16);
/// The most fork records kept to name the parent of a process that exited
/// before it could be read.
const MAX_FORK_RECORDS: usize = 64 * 1024;
/// The watch loop wakes at least this often to notice a stop.
const STOP_CHECK: Duration = Duration::from_millis(100);
/// The most exec events handled in one batch (one package lookup).
const EXEC_BATCH: usize = 256;

/// A started watch: the exec source is subscribed and the listeners present
/// at the start are known.
#[derive(Debug)]
pub struct Watcher {
    opts: WatchOptions,
    started: Started,
    connector: Option<Connector>,
    /// When polling: the processes present at the start, which are not new.
    poll_baseline: Option<ProcListing>,
    packages: PackageCache,
    accounts: AccountCache,
    listeners: ListenerWatch,
}

impl Watcher {
    /// Subscribes to execs (or decides to poll) and takes the listeners
    /// present now as the baseline.
    pub fn start(opts: WatchOptions) -> Result<Watcher, WatchError> {
        let mut problems = Vec::new();
        let (connector, fallback_reason) = match opts.exec_source {
            ExecSourceChoice::ProcPoll => (None, None),
            ExecSourceChoice::Connector => (Some(Connector::open(&opts.proc_root)?), None),
            ExecSourceChoice::Auto => match Connector::open(&opts.proc_root) {
                Ok(connector) => (Some(connector), None),
                Err(err) => (None, Some(err.to_string())),
            },
        };
        // Taken now, so a process started once `start` returns is new.
        let poll_baseline = if connector.is_none() {
            match list_processes(&opts.proc_root) {
                Ok(listing) => Some(listing),
                Err(err) => {
                    problems.push(Problem::new(
                        opts.proc_root.display().to_string(),
                        format!("cannot list processes: {err}"),
                    ));
                    None
                }
            }
        } else {
            None
        };
        let (packages, mut package_problems) = PackageCache::open(&opts.fs_root);
        problems.append(&mut package_problems);
        let mut accounts = AccountCache::new();
        let mut packages = packages;
        let (listeners, mut listener_problems) =
            ListenerWatch::start(&opts, &mut accounts, &mut packages);
        problems.append(&mut listener_problems);
        let started = Started {
            exec_source: if connector.is_some() {
                ExecSource::Connector
            } else {
                ExecSource::ProcPoll
            },
            fallback_reason,
            entered_initial_netns: connector
                .as_ref()
                .is_some_and(|connector| connector.entered_initial_netns),
            namespaces: listeners.namespaces(),
            n_listeners: listeners.known.len(),
            problems,
        };
        Ok(Watcher {
            opts,
            started,
            connector,
            poll_baseline,
            packages,
            accounts,
            listeners,
        })
    }

    pub fn started(&self) -> &Started {
        &self.started
    }

    /// Watches until `stop` is set, `deadline` passes, or `sink` breaks,
    /// handing every event to `sink` as it comes.
    pub fn run(
        mut self,
        stop: &AtomicBool,
        deadline: Option<Instant>,
        sink: &mut dyn FnMut(WatchEvent) -> std::ops::ControlFlow<()>,
    ) -> WatchSummary {
        let mut summary = WatchSummary::default();
        let exec_stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::sync_channel(EXEC_QUEUE);
        let thread = {
            let exec_stop = Arc::clone(&exec_stop);
            let proc_root = self.opts.proc_root.clone();
            let poll_interval = self.opts.poll_interval;
            let connector = self.connector.take();
            let baseline = self.poll_baseline.take();
            std::thread::Builder::new()
                .name("watch-execs".to_owned())
                .spawn(move || match connector {
                    Some(connector) => receive_execs(connector, &proc_root, &tx, &exec_stop),
                    None => poll_execs(&proc_root, poll_interval, baseline, &tx, &exec_stop),
                })
        };
        let mut reported = ProblemFilter::default();
        // What `started` already said is not said again.
        for problem in &self.started.problems {
            reported.first_time(problem);
        }
        let mut emit = |event: WatchEvent, summary: &mut WatchSummary| {
            match &event {
                WatchEvent::Exec(exec) => {
                    summary.n_execs += 1;
                    if exec.is_suspicious() {
                        summary.n_suspicious_execs += 1;
                    }
                    if exec.gone {
                        summary.n_gone += 1;
                    }
                }
                WatchEvent::ListenerAppeared(_) => summary.n_listeners_appeared += 1,
                WatchEvent::ListenerGone(_) => summary.n_listeners_gone += 1,
                WatchEvent::Problem(problem) => {
                    if !reported.first_time(problem) {
                        return std::ops::ControlFlow::Continue(());
                    }
                }
            }
            sink(event)
        };
        let (thread, rx) = match thread {
            Ok(thread) => (Some(thread), Some(rx)),
            Err(err) => {
                let _ = emit(
                    WatchEvent::Problem(Problem::new(
                        "watch",
                        format!("cannot start the thread that receives execs: {err}"),
                    )),
                    &mut summary,
                );
                (None, None)
            }
        };

        let mut next_tick = Instant::now() + self.opts.interval;
        // Execs received and held (`exec_hold`), and until when.
        let mut held: Vec<ExecMessage> = Vec::new();
        let mut held_until: Option<Instant> = None;
        'watch: loop {
            let now = Instant::now();
            if stop.load(Ordering::Relaxed) || deadline.is_some_and(|deadline| now >= deadline) {
                break;
            }
            if now >= next_tick {
                for event in self.listeners.tick(&mut self.accounts, &mut self.packages) {
                    if emit(event, &mut summary).is_break() {
                        break 'watch;
                    }
                }
                next_tick = (next_tick + self.opts.interval).max(Instant::now());
            }
            if held_until.is_some_and(|until| now >= until) || held.len() >= EXEC_BATCH {
                held_until = None;
                let batch = std::mem::take(&mut held);
                for event in self.enrich(batch, &mut summary) {
                    if emit(event, &mut summary).is_break() {
                        break 'watch;
                    }
                }
            }
            let mut wake = next_tick.min(now + STOP_CHECK);
            if let Some(until) = held_until {
                wake = wake.min(until);
            }
            if let Some(deadline) = deadline {
                wake = wake.min(deadline);
            }
            let Some(rx) = &rx else {
                std::thread::sleep(wake.saturating_duration_since(Instant::now()));
                continue;
            };
            let first = match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
                Ok(message) => message,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    // The exec thread said why before it ended; listeners go on.
                    std::thread::sleep(wake.saturating_duration_since(Instant::now()));
                    continue;
                }
            };
            let mut batch = take_batch(first, rx);
            if !self.opts.exec_hold.is_zero() {
                if held.is_empty() {
                    held_until = Some(Instant::now() + self.opts.exec_hold);
                }
                held.append(&mut batch);
                continue;
            }
            for event in self.enrich(batch, &mut summary) {
                if emit(event, &mut summary).is_break() {
                    break 'watch;
                }
            }
        }
        exec_stop.store(true, Ordering::Relaxed);
        // The thread notices within one receive timeout; whatever it had
        // already read is then reported, not dropped.
        if let Some(thread) = thread {
            let _ = thread.join();
        }
        // What was held, and what came meanwhile, is reported too.
        let mut pending = held;
        if let Some(rx) = &rx {
            pending.extend(rx.try_iter());
        }
        if !pending.is_empty() {
            for event in self.enrich(pending, &mut summary) {
                if emit(event, &mut summary).is_break() {
                    break;
                }
            }
        }
        summary
    }

    /// Accounts, package ownership, world-writable directories and namespace
    /// names for a batch of execs, with one package lookup for the batch.
    fn enrich(&mut self, batch: Vec<ExecMessage>, summary: &mut WatchSummary) -> Vec<WatchEvent> {
        let problems = self
            .packages
            .resolve(batch.iter().filter_map(|message| match message {
                ExecMessage::Exec(exec) => exec.exe.as_deref(),
                _ => None,
            }));
        let mut events: Vec<WatchEvent> = problems.into_iter().map(WatchEvent::Problem).collect();
        let names = &self.listeners.names;
        for message in batch {
            match message {
                ExecMessage::Exec(mut exec) => {
                    if let Some(uid) = exec.uid {
                        match self.accounts.lookup(uid) {
                            Ok(account) => exec.user = account.map(|account| account.name),
                            Err(err) => events.push(WatchEvent::Problem(Problem::new(
                                format!("uid {uid}"),
                                err.to_string(),
                            ))),
                        }
                    }
                    exec.ownership = match (&exec.exe, &exec.exe_unreadable) {
                        (Some(exe), _) => self.packages.ownership(exe),
                        (None, Some(why)) => Ownership::Unknown(why.clone()),
                        (None, None) => Ownership::Unknown("no executable".to_owned()),
                    };
                    exec.world_writable_dir = exec
                        .exe
                        .as_deref()
                        .and_then(|exe| self.packages.world_writable_dir(exe));
                    exec.netns = exec.netns_inode.map(|inode| names.name(inode));
                    events.push(WatchEvent::Exec(exec));
                }
                ExecMessage::Lost => {
                    summary.n_lost += 1;
                    events.push(WatchEvent::Problem(
                        Problem::new(
                            "process events",
                            "the kernel dropped process events: its receive buffer was full, so some execs were not seen",
                        )
                        .with_hint("a burst of processes outran the watch; nothing to fix unless it repeats"),
                    ));
                }
                ExecMessage::Problem(problem) => events.push(WatchEvent::Problem(*problem)),
            }
        }
        events
    }
}

fn take_batch(first: ExecMessage, rx: &Receiver<ExecMessage>) -> Vec<ExecMessage> {
    let mut batch = vec![first];
    while batch.len() < EXEC_BATCH {
        match rx.try_recv() {
            Ok(message) => batch.push(message),
            Err(_) => break,
        }
    }
    batch
}

/// Reports each problem once: a problem that repeats every interval (a
/// permission that is missing) would otherwise drown the events. Counts in
/// the message do not make it new.
#[derive(Debug, Default)]
struct ProblemFilter {
    seen: HashSet<String>,
}

impl ProblemFilter {
    fn first_time(&mut self, problem: &Problem) -> bool {
        let key: String = format!("{}\0{}", problem.subject, problem.message)
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .collect();
        self.seen.insert(key)
    }
}

/// Sends a message to the watch loop; false when the loop is gone.
fn send(tx: &SyncSender<ExecMessage>, message: ExecMessage, stop: &AtomicBool) -> bool {
    let mut message = message;
    loop {
        match tx.try_send(message) {
            Ok(()) => return true,
            Err(TrySendError::Disconnected(_)) => return false,
            Err(TrySendError::Full(back)) => {
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                message = back;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// How many queued datagrams one pass of the exec thread takes before it
/// reads /proc: enough to see a script's exec chain, few enough that the first
/// exec of a burst is read while the process still exists.
const MAX_DRAINED_DATAGRAMS: usize = 64;

fn receive_failed(err: &io::Error) -> ExecMessage {
    ExecMessage::Problem(Box::new(
        Problem::new("process events", format!("receiving failed: {err}"))
            .with_hint("execs are no longer watched; listeners still are"),
    ))
}

/// The positions of exec events followed, in the same batch, by another exec
/// of the same process: by the time /proc is read it shows the later image,
/// so these execs are reported as replaced, not as a copy of the next one.
pub fn superseded_execs(events: &[ProcEvent]) -> HashSet<usize> {
    let mut last: HashMap<u32, usize> = HashMap::new();
    let mut superseded = HashSet::new();
    for (index, event) in events.iter().enumerate() {
        if let ProcEvent::Exec { tgid, .. } = event
            && let Some(earlier) = last.insert(*tgid, index)
        {
            superseded.insert(earlier);
        }
    }
    superseded
}

/// An exec whose image was replaced by a later exec before /proc could be
/// read: only the pid and the parent are known.
pub fn superseded_exec(pid: u32, at: SystemTime, fork_parent: Option<u32>) -> ExecEvent {
    ExecEvent {
        exe_unreadable: Some("the process exec'd again before it could be read".to_owned()),
        superseded: true,
        ..ExecEvent::unread(pid, ExecSource::Connector, at, fork_parent)
    }
}

/// How long an exec that has been read waits for the next events before it
/// is sent: if the same process exec'd again meanwhile and now reads the same,
/// the first read came too late to see the first image.
const HOLD: Duration = Duration::from_millis(10);

/// The exec thread, connector flavour: reads each exec'd process from /proc
/// as soon as its event arrives, and sends it after one more look at the
/// events ([`HOLD`]).
fn receive_execs(
    mut connector: Connector,
    proc_root: &Path,
    tx: &SyncSender<ExecMessage>,
    stop: &AtomicBool,
) {
    // child tgid → parent tgid, to name the parent of a process that exits
    // before it can be read.
    let mut parents: HashMap<u32, u32> = HashMap::new();
    let own_pid = std::process::id();
    // Read, not yet sent.
    let mut held: Vec<ExecEvent> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let first = if held.is_empty() {
            connector.recv()
        } else {
            // Under a burst the next events are already queued; only when
            // nothing is does the held batch wait, at most [`HOLD`].
            // Woken as soon as events arrive, so a new exec is read at
            // once, not after the hold.
            if connector.wait(HOLD) {
                connector.try_recv()
            } else {
                Ok(Received::Events(Vec::new()))
            }
        };
        let mut events = match first {
            Ok(Received::Events(events)) => events,
            Ok(Received::Lost) => {
                if !send(tx, ExecMessage::Lost, stop) {
                    return;
                }
                Vec::new()
            }
            Err(err) => {
                for exec in held.drain(..) {
                    let _ = send(tx, ExecMessage::Exec(Box::new(exec)), stop);
                }
                let _ = send(tx, receive_failed(&err), stop);
                return;
            }
        };
        // Whatever else is already queued, so that an exec followed at once
        // by another exec of the same process is known for what it is.
        for _ in 0..MAX_DRAINED_DATAGRAMS {
            match connector.try_recv() {
                Ok(Received::Events(more)) if more.is_empty() => break,
                Ok(Received::Events(more)) => events.extend(more),
                Ok(Received::Lost) => {
                    if !send(tx, ExecMessage::Lost, stop) {
                        return;
                    }
                }
                Err(err) => {
                    let _ = send(tx, receive_failed(&err), stop);
                    return;
                }
            }
        }
        let superseded = superseded_execs(&events);
        let at = SystemTime::now();
        let mut read = Vec::new();
        for (index, event) in events.into_iter().enumerate() {
            match event {
                ProcEvent::Fork {
                    parent_tgid,
                    child_pid,
                    child_tgid,
                    ..
                } if child_pid == child_tgid => {
                    if parents.len() >= MAX_FORK_RECORDS {
                        parents.clear();
                    }
                    parents.insert(child_tgid, parent_tgid);
                }
                ProcEvent::Exit { pid, tgid, .. } if pid == tgid => {
                    parents.remove(&tgid);
                }
                ProcEvent::Exec { tgid, .. } if tgid != own_pid => {
                    read.push(if superseded.contains(&index) {
                        superseded_exec(tgid, at, parents.get(&tgid).copied())
                    } else {
                        read_exec(
                            proc_root,
                            tgid,
                            ExecSource::Connector,
                            at,
                            parents.get(&tgid).copied(),
                        )
                    });
                }
                _ => {}
            }
        }
        mark_late_reads(&mut held, &read);
        for exec in held.drain(..) {
            if !send(tx, ExecMessage::Exec(Box::new(exec)), stop) {
                return;
            }
        }
        held = read;
    }
    for exec in held {
        let _ = send(tx, ExecMessage::Exec(Box::new(exec)), stop);
    }
}

/// Execs in `held` read the same image as a later exec of the same process in
/// `next`: the read came after that later exec, so it shows what the process
/// runs now, not what this exec ran. They become superseded.
pub fn mark_late_reads(held: &mut [ExecEvent], next: &[ExecEvent]) {
    for exec in held.iter_mut() {
        if exec.gone || exec.superseded || exec.exe.is_none() {
            continue;
        }
        let repeated = next.iter().any(|later| {
            later.pid == exec.pid
                && !later.superseded
                && later.exe == exec.exe
                && later.cmdline == exec.cmdline
        });
        if repeated {
            *exec = superseded_exec(exec.pid, exec.at, exec.ppid);
        }
    }
}

/// The exec thread, polling flavour: lists /proc every `interval` and reports
/// each new process (and each exec in place that the exe link shows).
fn poll_execs(
    proc_root: &Path,
    interval: Duration,
    baseline: Option<ProcListing>,
    tx: &SyncSender<ExecMessage>,
    stop: &AtomicBool,
) {
    let mut before = match baseline.map_or_else(|| list_processes(proc_root), Ok) {
        Ok(listing) => listing,
        Err(err) => {
            let _ = send(
                tx,
                ExecMessage::Problem(Box::new(Problem::new(
                    proc_root.display().to_string(),
                    format!("cannot list processes: {err}"),
                ))),
                stop,
            );
            return;
        }
    };
    let own_pid = std::process::id();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(interval);
        let Ok(mut now) = list_processes(proc_root) else {
            continue;
        };
        let at = SystemTime::now();
        for pid in new_processes(&before, &now) {
            if pid == own_pid {
                continue;
            }
            let exec = read_exec(proc_root, pid, ExecSource::ProcPoll, at, None);
            let listed = |pid: u32| {
                now.get(&pid)
                    .and_then(|exe| exe.as_deref())
                    .map(|link| parse_exe_link(link).0)
            };
            let read_as_listed = exec.exe.is_some() && exec.exe == listed(pid);
            // A child caught between fork and exec runs its parent's program:
            // not an exec. Its exec, when it comes, changes the exe link, and
            // the next listing reports it.
            let fork_only = !before.contains_key(&pid)
                && read_as_listed
                && exec.ppid.and_then(listed) == exec.exe;
            if fork_only {
                continue;
            }
            if !read_as_listed && let Some(exe) = &exec.exe {
                // It exec'd between the listing and the read: remember what
                // was reported, so the next listing does not report it again.
                let mut link = exe.as_os_str().as_bytes().to_vec();
                if exec.exe_deleted {
                    link.extend_from_slice(b" (deleted)");
                }
                now.insert(pid, Some(link));
            }
            if !send(tx, ExecMessage::Exec(Box::new(exec)), stop) {
                return;
            }
        }
        before = now;
    }
}

/// Namespace inodes → names, as the audit names them.
#[derive(Debug, Clone, Default)]
struct NamespaceNames {
    host_inode: Option<u64>,
    named: BTreeMap<u64, String>,
}

impl NamespaceNames {
    fn name(&self, inode: u64) -> Netns {
        name_namespace(inode, self.host_inode, &self.named)
    }
}

/// A listening socket being watched, with its owners as first seen. The
/// owners are shared: a process holding many sockets (a pre-forked server, a
/// worker pool) is kept once, however many sockets it holds.
#[derive(Debug, Clone)]
struct Tracked {
    listener: Listener,
    owners: Vec<Arc<Process>>,
}

impl Tracked {
    fn event(&self, at: SystemTime) -> ListenerEvent {
        ListenerEvent {
            at,
            listener: self.listener.clone(),
            owners: self.owners.iter().map(|owner| (**owner).clone()).collect(),
        }
    }
}

/// One dump compared with what is known: the keys present now (sorted), and
/// the sockets not known before, each traced to its owners.
struct Dump {
    keys: Vec<ListenerKey>,
    new: Vec<Tracked>,
    problems: Vec<Problem>,
}

/// The listeners of our namespace (or of all), between two dumps.
#[derive(Debug)]
struct ListenerWatch {
    all_netns: bool,
    proc_root: PathBuf,
    own_inode: u64,
    names: NamespaceNames,
    known: BTreeMap<ListenerKey, Tracked>,
    namespaces: Vec<Netns>,
}

impl ListenerWatch {
    fn start(
        opts: &WatchOptions,
        accounts: &mut AccountCache,
        packages: &mut PackageCache,
    ) -> (ListenerWatch, Vec<Problem>) {
        let mut problems = Vec::new();
        let own_inode = match read_ns_inode(&opts.proc_root.join("thread-self/ns/net")) {
            Ok(inode) => inode,
            Err(problem) => {
                problems.push(problem);
                0
            }
        };
        let mut watch = ListenerWatch {
            all_netns: opts.all_netns,
            proc_root: opts.proc_root.clone(),
            own_inode,
            names: NamespaceNames::default(),
            known: BTreeMap::new(),
            namespaces: Vec::new(),
        };
        watch.refresh_names();
        // Nothing is known yet: every socket is new, and traced.
        let dump = watch.dump(accounts, packages);
        problems.extend(dump.problems);
        watch.known = dump
            .new
            .into_iter()
            .map(|tracked| (ListenerKey::of(&tracked.listener), tracked))
            .collect();
        (watch, problems)
    }

    fn namespaces(&self) -> Vec<Netns> {
        if self.all_netns {
            self.namespaces.clone()
        } else {
            vec![self.names.name(self.own_inode)]
        }
    }

    fn refresh_names(&mut self) {
        self.names.host_inode = read_ns_inode(&initial_netns_file(&self.proc_root)).ok();
        // Problems reading /run/netns are reported by the audit; here a
        // missing name only means the inode is shown instead.
        self.names.named = named_namespaces(Path::new(RUN_NETNS)).0;
    }

    /// One dump, compared with what is known. In our own namespace a dump
    /// that finds no new socket costs only the kernel's list of listening
    /// sockets (sock_diag, filtered to listeners in the kernel): no /proc
    /// walk, no copy of what is known; only new sockets are traced to their
    /// owners. With every namespace, /proc is walked each time (that is how
    /// the namespaces are found), but still only new sockets are traced.
    fn dump(&mut self, accounts: &mut AccountCache, packages: &mut PackageCache) -> Dump {
        let mut problems = Vec::new();
        let mut keys: Vec<ListenerKey>;
        let new_listeners: Vec<Listener>;
        let mut processes: BTreeMap<u32, Process>;
        if self.all_netns {
            let facts = collect_listeners(&ListenerOptions {
                all_netns: true,
                proc_root: self.proc_root.clone(),
                force_proc_fallback: false,
            });
            problems.extend(facts.problems);
            self.namespaces = facts
                .namespaces
                .into_iter()
                .map(|(netns, _)| netns)
                .collect();
            keys = facts.listeners.iter().map(ListenerKey::of).collect();
            new_listeners = facts
                .listeners
                .into_iter()
                .filter(|listener| !self.known.contains_key(&ListenerKey::of(listener)))
                .collect();
            processes = facts.processes;
        } else {
            let dump = dump_sockets(&self.proc_root.join("thread-self/net"), false);
            problems.extend(dump.problems);
            let netns_inode = self.names.name(self.own_inode).inode;
            let key_of = |raw: &RawSocket| ListenerKey {
                netns_inode,
                protocol: raw.protocol,
                address: raw.address,
                port: raw.port,
                inode: raw.inode,
            };
            keys = dump.sockets.iter().map(key_of).collect();
            let new_raw: Vec<RawSocket> = dump
                .sockets
                .into_iter()
                .filter(|raw| !self.known.contains_key(&key_of(raw)))
                .collect();
            if new_raw.is_empty() {
                keys.sort_unstable();
                return Dump {
                    keys,
                    new: Vec::new(),
                    problems,
                };
            }
            let netns = self.names.name(self.own_inode);
            let interfaces = if new_raw.iter().any(|raw| raw.ifindex.is_some()) {
                interface_names().unwrap_or_default()
            } else {
                BTreeMap::new()
            };
            let walk = walk_processes(&self.proc_root);
            // Permission problems of the walk are the same every time.
            problems.extend(walk.problems.iter().cloned());
            new_listeners = new_raw
                .into_iter()
                .map(|raw| to_listener(raw, &netns, &interfaces, Some(&walk)))
                .collect();
            processes = walk.processes;
        }
        keys.sort_unstable();
        // perimeter does not report itself.
        processes.remove(&std::process::id());

        // Each owner of a new socket is filled (account, package) once and
        // shared by every socket it holds.
        let mut owner_pids: Vec<u32> = new_listeners.iter().flat_map(Listener::pids).collect();
        owner_pids.sort_unstable();
        owner_pids.dedup();
        let mut owners: Vec<Process> = owner_pids
            .iter()
            .filter_map(|pid| processes.remove(pid))
            .collect();
        drop(processes);
        problems.extend(packages.resolve(owners.iter().filter_map(|p| p.exe.as_deref())));
        for owner in &mut owners {
            if owner.account.is_none() {
                match accounts.lookup(owner.uid) {
                    Ok(account) => owner.account = account,
                    Err(err) => {
                        problems.push(Problem::new(format!("uid {}", owner.uid), err.to_string()));
                    }
                }
            }
            owner.ownership = match &owner.exe {
                Some(exe) => packages.ownership(exe),
                None => Ownership::Unknown(
                    "the executable could not be read (not permitted, or the process exited)"
                        .to_owned(),
                ),
            };
        }
        let owners: BTreeMap<u32, Arc<Process>> = owners
            .into_iter()
            .map(|owner| (owner.pid, Arc::new(owner)))
            .collect();
        let new = new_listeners
            .into_iter()
            .map(|listener| Tracked {
                owners: listener
                    .pids()
                    .into_iter()
                    .filter_map(|pid| owners.get(&pid).cloned())
                    .collect(),
                listener,
            })
            .collect();
        Dump {
            keys,
            new,
            problems,
        }
    }

    /// Dumps again and reports what appeared and what went away.
    fn tick(
        &mut self,
        accounts: &mut AccountCache,
        packages: &mut PackageCache,
    ) -> Vec<WatchEvent> {
        self.refresh_names();
        let Dump {
            keys,
            new,
            problems,
        } = self.dump(accounts, packages);
        let at = SystemTime::now();
        let mut events: Vec<WatchEvent> = problems.into_iter().map(WatchEvent::Problem).collect();
        for key in gone_listeners(&self.known, &keys) {
            if let Some(tracked) = self.known.remove(&key) {
                events.push(WatchEvent::ListenerGone(Box::new(ListenerEvent {
                    at,
                    listener: tracked.listener,
                    owners: tracked.owners.iter().map(|o| (**o).clone()).collect(),
                })));
            }
        }
        let mut new: Vec<(ListenerKey, Tracked)> = new
            .into_iter()
            .map(|tracked| (ListenerKey::of(&tracked.listener), tracked))
            .collect();
        new.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, tracked) in new {
            events.push(WatchEvent::ListenerAppeared(Box::new(tracked.event(at))));
            self.known.insert(key, tracked);
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connector datagram as the kernel sends it: nlmsghdr (type
    /// NLMSG_DONE) + cn_msg + proc_event, in host byte order.
    fn datagram(what: u32, seq: u32, ack: u32, event_data: &[u32]) -> Vec<u8> {
        let data_len = PROC_EVENT_HEADER_LEN + 4 * event_data.len();
        let len = NLMSG_HEADER_LEN + CN_MSG_LEN + data_len;
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(len as u32).to_ne_bytes());
        bytes.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        bytes.extend_from_slice(&0u16.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        for field in [CN_IDX_PROC, CN_VAL_PROC, seq, ack] {
            bytes.extend_from_slice(&field.to_ne_bytes());
        }
        bytes.extend_from_slice(&(data_len as u16).to_ne_bytes());
        bytes.extend_from_slice(&0u16.to_ne_bytes());
        bytes.extend_from_slice(&what.to_ne_bytes());
        bytes.extend_from_slice(&1u32.to_ne_bytes()); // cpu
        bytes.extend_from_slice(&123_456_789u64.to_ne_bytes()); // timestamp_ns
        for field in event_data {
            bytes.extend_from_slice(&field.to_ne_bytes());
        }
        bytes
    }

    #[test]
    fn exec_event_from_literal_bytes() {
        // 76 bytes, as `recv` returned them on Linux 6.18 (x86_64) for an
        // exec of pid 19879: the kernel pads exec's union to 40 bytes.
        let mut bytes = datagram(PROC_EVENT_EXEC, 0, 0, &[19879, 19879, 0, 0, 0, 0]);
        assert_eq!(bytes.len(), 76);
        assert_eq!(
            parse_proc_event(&bytes),
            Ok(Some(ProcEvent::Exec {
                pid: 19879,
                tgid: 19879
            }))
        );
        // A thread's exec names its process in tgid.
        bytes = datagram(PROC_EVENT_EXEC, 0, 0, &[4001, 4000]);
        assert_eq!(
            parse_proc_event(&bytes),
            Ok(Some(ProcEvent::Exec {
                pid: 4001,
                tgid: 4000
            }))
        );
    }

    #[test]
    fn literal_little_endian_exec_message() {
        if cfg!(target_endian = "big") {
            return;
        }
        #[rustfmt::skip]
        let bytes: [u8; 60] = [
            60, 0, 0, 0,  3, 0,  0, 0,  7, 0, 0, 0,  0, 0, 0, 0, // nlmsghdr
            1, 0, 0, 0,  1, 0, 0, 0,  7, 0, 0, 0,  0, 0, 0, 0,   // cn_msg id, seq, ack
            24, 0,  0, 0,                                        // len, flags
            2, 0, 0, 0,  0, 0, 0, 0,                             // what = EXEC, cpu
            0x15, 0xcd, 0x5b, 0x07, 0, 0, 0, 0,                  // timestamp_ns
            0xd2, 0x04, 0, 0,  0xd2, 0x04, 0, 0,                 // pid 1234, tgid 1234
        ];
        assert_eq!(
            parse_proc_event(&bytes),
            Ok(Some(ProcEvent::Exec {
                pid: 1234,
                tgid: 1234
            }))
        );
    }

    #[test]
    fn fork_exit_and_ack() {
        assert_eq!(
            parse_proc_event(&datagram(PROC_EVENT_FORK, 1, 0, &[10, 10, 11, 11])),
            Ok(Some(ProcEvent::Fork {
                parent_pid: 10,
                parent_tgid: 10,
                child_pid: 11,
                child_tgid: 11
            }))
        );
        // Current kernels append the parent's pid and tgid to exit events;
        // older ones stop after exit_signal. Both parse.
        for data in [&[11, 11, 256, 17, 10, 10][..], &[11, 11, 256, 17][..]] {
            assert_eq!(
                parse_proc_event(&datagram(PROC_EVENT_EXIT, 2, 0, data)),
                Ok(Some(ProcEvent::Exit {
                    pid: 11,
                    tgid: 11,
                    exit_code: 256,
                    exit_signal: 17
                }))
            );
        }
        // The subscription's acknowledgement: seq echoed, ack + 1, err.
        assert_eq!(
            parse_proc_event(&datagram(PROC_EVENT_NONE, 77, 9, &[0])),
            Ok(Some(ProcEvent::Ack {
                err: 0,
                seq: 77,
                ack: 9
            }))
        );
        assert_eq!(
            parse_proc_event(&datagram(PROC_EVENT_NONE, 77, 9, &[1])),
            Ok(Some(ProcEvent::Ack {
                err: 1,
                seq: 77,
                ack: 9
            }))
        );
        // Kinds the watch does not use: uid change, comm change.
        assert_eq!(
            parse_proc_event(&datagram(0x4, 3, 0, &[11, 11, 0, 0])),
            Ok(None)
        );
        assert_eq!(
            parse_proc_event(&datagram(0x200, 3, 0, &[11, 11, 0, 0, 0, 0])),
            Ok(None)
        );
    }

    #[test]
    fn short_and_foreign_messages_are_errors_not_panics() {
        let full = datagram(PROC_EVENT_EXEC, 0, 0, &[5, 5]);
        // Every truncation of a valid message is refused without a panic.
        for len in 0..full.len() {
            let mut cut = full[..len].to_vec();
            assert!(parse_proc_event(&cut).is_err(), "cut at {len}");
            // Also with a length field that agrees with the cut (a bare
            // 16-byte header is an empty NLMSG_DONE, which ends a dump).
            if len > NLMSG_HEADER_LEN {
                cut[..4].copy_from_slice(&(len as u32).to_ne_bytes());
                assert!(parse_proc_event(&cut).is_err(), "consistent cut at {len}");
            }
        }
        // cn_msg.len claiming more than the message holds.
        let mut lying = full.clone();
        lying[NLMSG_HEADER_LEN + 16..NLMSG_HEADER_LEN + 18].copy_from_slice(&500u16.to_ne_bytes());
        assert!(matches!(
            parse_proc_event(&lying),
            Err(ProcEventError::Short { need: 520, .. })
        ));
        // Another connector's message.
        let mut foreign = full.clone();
        foreign[NLMSG_HEADER_LEN..NLMSG_HEADER_LEN + 4].copy_from_slice(&7u32.to_ne_bytes());
        assert_eq!(
            parse_proc_event(&foreign),
            Err(ProcEventError::OtherConnector { idx: 7, val: 1 })
        );
    }

    #[test]
    fn netlink_control_messages() {
        let header = |kind: u16, payload: &[u8]| {
            let mut bytes = Vec::new();
            bytes.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
            bytes.extend_from_slice(&kind.to_ne_bytes());
            bytes.extend_from_slice(&[0; 10]);
            bytes.extend_from_slice(payload);
            bytes
        };
        assert_eq!(parse_proc_event(&header(NLMSG_NOOP, &[])), Ok(None));
        assert_eq!(parse_proc_event(&header(NLMSG_DONE, &[])), Ok(None));
        assert_eq!(
            parse_proc_event(&header(NLMSG_OVERRUN, &[])),
            Err(ProcEventError::Overrun)
        );
        assert_eq!(
            parse_proc_event(&header(NLMSG_ERROR, &(-1i32).to_ne_bytes())),
            Err(ProcEventError::Kernel(1))
        );
        assert_eq!(
            parse_proc_event(&header(NLMSG_ERROR, &0i32.to_ne_bytes())),
            Ok(None)
        );
        assert!(matches!(
            parse_proc_event(&header(NLMSG_ERROR, &[0, 0])),
            Err(ProcEventError::Short { .. })
        ));
    }

    #[test]
    fn datagrams_with_several_messages() {
        let mut bytes = datagram(PROC_EVENT_FORK, 0, 0, &[1, 1, 2, 2]);
        bytes.extend(datagram(PROC_EVENT_EXEC, 1, 0, &[2, 2]));
        bytes.extend(datagram(0x200, 2, 0, &[2, 2, 0, 0, 0, 0]));
        assert_eq!(
            parse_proc_datagram(&bytes),
            vec![
                Ok(ProcEvent::Fork {
                    parent_pid: 1,
                    parent_tgid: 1,
                    child_pid: 2,
                    child_tgid: 2
                }),
                Ok(ProcEvent::Exec { pid: 2, tgid: 2 }),
            ]
        );
        // A length field past the end stops the walk with an error.
        bytes.extend_from_slice(&1000u32.to_ne_bytes());
        bytes.extend_from_slice(&[0; 12]);
        let parsed = parse_proc_datagram(&bytes);
        assert_eq!(parsed.len(), 3);
        assert!(matches!(
            parsed.last(),
            Some(Err(ProcEventError::Netlink(_)))
        ));
        assert_eq!(parse_proc_datagram(&[]), vec![]);
        assert!(matches!(
            parse_proc_datagram(&[1, 2]).as_slice(),
            [Err(ProcEventError::Short { .. })]
        ));
    }

    #[test]
    fn listen_request_layout() {
        let request = listen_request(4242, 7, 99);
        assert_eq!(request.len(), 40);
        let buffer = NetlinkBuffer::new_checked(&request[..]).expect("valid netlink");
        assert_eq!(buffer.length(), 40);
        assert_eq!(buffer.message_type(), NLMSG_DONE);
        assert_eq!(buffer.port_number(), 4242);
        let payload = buffer.payload();
        assert_eq!(u32_fields::<4>(payload, "cn_msg"), Ok([1, 1, 7, 99]));
        assert_eq!(u16_at(payload, 16), Some(4));
        assert_eq!(u32_at(payload, 20), Some(PROC_CN_MCAST_LISTEN));
    }

    proptest::proptest! {
        #[test]
        fn hostile_datagrams_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse_proc_datagram(&bytes);
            let _ = parse_proc_event(&bytes);
        }

        #[test]
        fn mutated_events_never_panic(
            idx in 0usize..60,
            value in proptest::num::u8::ANY,
            cut in 0usize..61,
        ) {
            let mut bytes = datagram(PROC_EVENT_EXIT, 0, 0, &[1, 1, 0, 9, 0, 0]);
            if let Some(byte) = bytes.get_mut(idx) {
                *byte = value;
            }
            bytes.truncate(cut.max(1) + 15);
            let _ = parse_proc_datagram(&bytes);
        }
    }

    #[test]
    fn new_processes_are_new_pids_and_execs_in_place() {
        let exe = |path: &str| Some(path.as_bytes().to_vec());
        let before: ProcListing = HashMap::from([
            (1, exe("/usr/lib/systemd/systemd")),
            (200, exe("/usr/bin/bash")),
            (300, None),
        ]);
        let now: ProcListing = HashMap::from([
            (1, exe("/usr/lib/systemd/systemd")),
            // bash exec'd in place (exec without fork).
            (200, exe("/tmp/x/miner")),
            // Still unreadable: not new.
            (300, None),
            (301, None),
            (302, exe("/usr/bin/sleep")),
        ]);
        assert_eq!(new_processes(&before, &now), vec![200, 301, 302]);
        assert_eq!(new_processes(&now, &now), Vec::<u32>::new());
    }

    #[test]
    fn an_exec_followed_by_another_of_the_same_process_is_superseded() {
        let exec = |tgid| ProcEvent::Exec { pid: tgid, tgid };
        let fork = ProcEvent::Fork {
            parent_pid: 1,
            parent_tgid: 1,
            child_pid: 7,
            child_tgid: 7,
        };
        // 7 runs env, which runs bash; 8 runs once; 7 then runs python.
        let events = [fork, exec(7), exec(8), exec(7), exec(7)];
        let superseded = superseded_execs(&events);
        assert_eq!(superseded, HashSet::from([1, 3]));
        assert!(superseded_execs(&[exec(7), exec(8)]).is_empty());

        let event = superseded_exec(7, SystemTime::UNIX_EPOCH, Some(1));
        assert!(event.superseded && !event.gone);
        assert_eq!(
            (event.pid, event.ppid, event.exe.as_ref()),
            (7, Some(1), None)
        );
        assert!(!event.is_suspicious());
    }

    #[test]
    fn a_read_repeated_by_the_next_exec_was_late() {
        let image = |pid, exe: &str, args: &[&str]| ExecEvent {
            exe: Some(PathBuf::from(exe)),
            cmdline: args.iter().map(|a| (*a).to_owned()).collect(),
            ..ExecEvent::unread(pid, ExecSource::Connector, SystemTime::UNIX_EPOCH, Some(1))
        };
        // pid 7 ran env, but was read after it had become bash; pid 8's
        // image differs from its next one; pid 9 has no next exec.
        let mut held = vec![
            image(7, "/usr/bin/bash", &["bash", "x"]),
            image(8, "/usr/bin/env", &["env", "bash", "y"]),
            image(9, "/usr/bin/bash", &["bash", "x"]),
        ];
        let next = vec![
            image(7, "/usr/bin/bash", &["bash", "x"]),
            image(8, "/usr/bin/bash", &["bash", "y"]),
        ];
        mark_late_reads(&mut held, &next);
        assert!(held[0].superseded && held[0].exe.is_none());
        assert_eq!(held[0].ppid, Some(1));
        assert!(!held[1].superseded && !held[2].superseded);
    }

    #[test]
    fn a_memfd_link_reads_as_a_deleted_memfd() {
        let (exe, deleted) = parse_exe_link(b"/memfd:payload (deleted)");
        assert!(is_memfd(&exe) && deleted);
        assert!(is_memfd(&parse_exe_link(b"/memfd: (deleted)").0));
        assert!(!is_memfd(&parse_exe_link(b"/usr/bin/memfd:x").0));
    }

    fn exec_with(ownership: Ownership) -> ExecEvent {
        ExecEvent {
            at: SystemTime::UNIX_EPOCH,
            source: ExecSource::Connector,
            pid: 10,
            ppid: Some(1),
            uid: Some(0),
            user: Some("root".to_owned()),
            comm: Some("sleep".to_owned()),
            exe: Some(PathBuf::from("/usr/bin/sleep")),
            exe_unreadable: None,
            exe_deleted: false,
            memfd: false,
            cmdline: vec!["sleep".to_owned(), "1".to_owned()],
            cwd: None,
            netns_inode: None,
            netns: None,
            unit: None,
            container: None,
            parent_comm: None,
            parent_exe: None,
            ownership,
            world_writable_dir: None,
            gone: false,
            superseded: false,
        }
    }

    #[test]
    fn exec_flags() {
        let packaged = exec_with(Ownership::Package(perimeter_model::PackageRef {
            manager: "dpkg".to_owned(),
            name: "coreutils".to_owned(),
            arch: None,
        }));
        assert!(packaged.flags().is_empty());
        assert!(!packaged.is_suspicious());
        // Unknown ownership (not permitted to read) is not suspicious by itself.
        assert!(!exec_with(Ownership::Unknown("no".to_owned())).is_suspicious());

        let mut miner = exec_with(Ownership::Unpackaged);
        miner.exe = Some(PathBuf::from("/tmp/.x/miner"));
        miner.exe_deleted = true;
        miner.world_writable_dir = Some(PathBuf::from("/tmp"));
        assert_eq!(
            miner.flags(),
            vec![
                ExecFlag::Unpackaged,
                ExecFlag::WorldWritable,
                ExecFlag::Deleted
            ]
        );
        assert_eq!(
            miner.flags().iter().map(|f| f.as_str()).collect::<Vec<_>>(),
            ["unpackaged", "world-writable", "deleted"]
        );

        // Fileless: even where a lookup called the path unpackaged, there is
        // no file a package could own; memfd says it.
        let mut fileless = exec_with(Ownership::Unpackaged);
        fileless.exe = Some(PathBuf::from("/memfd:x"));
        fileless.memfd = true;
        fileless.exe_deleted = true;
        assert_eq!(fileless.flags(), vec![ExecFlag::Deleted, ExecFlag::Memfd]);
        assert!(fileless.is_suspicious());
    }

    /// The same executables, the same directory modes: what `perimeter
    /// watch` flags for each exec and what `perimeter audit` finds about the
    /// process, side by side. Each flag has the audit rule that reports it
    /// (a memfd is an `exec.deleted`: its link always reads deleted).
    #[test]
    fn watch_and_audit_judge_an_executable_alike() {
        use std::collections::BTreeSet;

        use perimeter_checks::rules::{EXEC_DELETED, EXEC_UNPACKAGED, EXEC_WORLD_WRITABLE};
        use perimeter_checks::{Approvals, CheckConfig, run_all};
        use perimeter_model::{HostSnapshot, Scope, SocketOwner};

        let modes: BTreeMap<PathBuf, u32> = [
            ("/dev", 0o755),
            ("/dev/shm", 0o1777),
            ("/srv", 0o755),
            ("/srv/drop", 0o777),
            ("/srv/drop/bin", 0o755),
            ("/srv/team", 0o775),
            ("/tmp", 0o1777),
            ("/tmp/.x", 0o700),
            ("/usr", 0o755),
            ("/usr/bin", 0o755),
            ("/var", 0o755),
            ("/var/tmp", 0o1777),
        ]
        .into_iter()
        .map(|(dir, mode)| (PathBuf::from(dir), mode))
        .collect();
        let package = Ownership::Package(perimeter_model::PackageRef {
            manager: "dpkg".to_owned(),
            name: "coreutils".to_owned(),
            arch: None,
        });
        // (exe link as the kernel shows it, ownership as looked up)
        let cases: &[(&[u8], Ownership)] = &[
            (b"/tmp/.x/miner", Ownership::Unpackaged),
            (b"/var/tmp/x (deleted)", Ownership::Unpackaged),
            (
                b"/dev/shm/y",
                Ownership::Unknown("not permitted".to_owned()),
            ),
            (b"/srv/drop/bin/z", Ownership::Unpackaged),
            (b"/srv/team/app", package.clone()),
            (b"/usr/bin/sleep", package.clone()),
            (b"/usr/bin/sleep (deleted)", package),
            (b"/memfd:payload (deleted)", Ownership::Unpackaged),
        ];

        let mut snapshot = HostSnapshot {
            exe_dir_modes: modes.clone(),
            ..HostSnapshot::default()
        };
        let mut text = String::new();
        for (idx, (link, ownership)) in cases.iter().enumerate() {
            let pid = 100 + idx as u32;
            let (exe, deleted) = parse_exe_link(link);

            // The watch: the event as read_exec and enrich fill it in.
            let mut exec = exec_with(ownership.clone());
            exec.pid = pid;
            exec.memfd = is_memfd(&exe);
            exec.exe_deleted = deleted;
            exec.world_writable_dir = world_writable_dir(&exe, |dir| modes.get(dir).copied());
            exec.exe = Some(exe.clone());
            let flags = exec.flags();
            let watch: Vec<&str> = flags
                .iter()
                .map(|flag| match flag {
                    ExecFlag::Unpackaged => EXEC_UNPACKAGED,
                    ExecFlag::WorldWritable => EXEC_WORLD_WRITABLE,
                    ExecFlag::Deleted | ExecFlag::Memfd => EXEC_DELETED,
                })
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();

            // The audit: the same process in a snapshot, listening (the audit
            // judges ownership for listeners only), through every rule.
            snapshot.processes.insert(
                pid,
                Process {
                    pid,
                    ppid: 1,
                    comm: exec.comm.clone().unwrap_or_default(),
                    cmdline: exec.cmdline.clone(),
                    uid: 0,
                    account: None,
                    exe: Some(exe.clone()),
                    exe_deleted: deleted,
                    cwd: None,
                    cgroup: None,
                    unit: None,
                    container: None,
                    netns_inode: None,
                    ownership: ownership.clone(),
                },
            );
            let address = "127.0.0.1".parse().expect("address");
            snapshot.listeners = vec![Listener {
                protocol: Protocol::Tcp,
                address,
                port: 9000,
                scope: Scope::of(address),
                v6only: None,
                interface: None,
                inode: u64::from(pid),
                socket_uid: 0,
                netns: Netns {
                    inode: 1,
                    name: "host".to_owned(),
                },
                owners: vec![SocketOwner { pid, fd: 3 }],
            }];
            let config = CheckConfig::new(time::macros::date!(2026 - 11 - 25));
            let audit: Vec<String> = run_all(&snapshot, &Approvals::default(), &config)
                .into_iter()
                .filter(|finding| {
                    finding.rule.starts_with("exec.")
                        && finding.subject.contains(&format!("pid {pid})"))
                })
                .map(|finding| finding.rule)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            snapshot.processes.remove(&pid);

            assert_eq!(watch, audit, "{}", exe.display());
            let flags: Vec<&str> = flags.iter().map(|flag| flag.as_str()).collect();
            let or_none = |names: Vec<&str>| {
                if names.is_empty() {
                    "-".to_owned()
                } else {
                    names.join(", ")
                }
            };
            text.push_str(&format!(
                "{}: watch [{}], audit [{}]\n",
                String::from_utf8_lossy(link),
                or_none(flags),
                or_none(audit.iter().map(String::as_str).collect()),
            ));
        }
        expect_test::expect![[r#"
            /tmp/.x/miner: watch [unpackaged, world-writable], audit [exec.unpackaged, exec.world-writable]
            /var/tmp/x (deleted): watch [unpackaged, world-writable, deleted], audit [exec.deleted, exec.unpackaged, exec.world-writable]
            /dev/shm/y: watch [world-writable], audit [exec.world-writable]
            /srv/drop/bin/z: watch [unpackaged, world-writable], audit [exec.unpackaged, exec.world-writable]
            /srv/team/app: watch [-], audit [-]
            /usr/bin/sleep: watch [-], audit [-]
            /usr/bin/sleep (deleted): watch [deleted], audit [exec.deleted]
            /memfd:payload (deleted): watch [deleted, memfd], audit [exec.deleted]
        "#]]
        .assert_eq(&text);
    }

    fn key(port: u16, inode: u64) -> ListenerKey {
        ListenerKey {
            netns_inode: 1,
            protocol: Protocol::Tcp,
            address: "0.0.0.0".parse().expect("address"),
            port,
            inode,
        }
    }

    #[test]
    fn listener_diff_is_keyed_on_the_socket() {
        let before: BTreeMap<ListenerKey, ()> =
            BTreeMap::from([(key(22, 100), ()), (key(80, 200), ())]);
        // Port 80 was restarted: same port, new socket inode.
        let mut now = vec![key(6379, 300), key(22, 100), key(80, 201)];
        now.sort_unstable();
        assert_eq!(gone_listeners(&before, &now), vec![key(80, 200)]);
    }

    #[test]
    fn problems_repeat_only_with_new_text() {
        let mut filter = ProblemFilter::default();
        let problem = |n: usize| {
            Problem::new(
                "/proc",
                format!("the descriptors of {n} processes could not be listed"),
            )
        };
        assert!(filter.first_time(&problem(3)));
        assert!(!filter.first_time(&problem(4)));
        assert!(filter.first_time(&Problem::new("/proc", "something else")));
    }

    #[test]
    fn reading_an_exec_of_a_process_that_is_gone() {
        let root = tempfile::tempdir().expect("tempdir");
        let event = read_exec(
            root.path(),
            4242,
            ExecSource::Connector,
            SystemTime::UNIX_EPOCH,
            Some(4200),
        );
        assert!(event.gone);
        assert_eq!(event.pid, 4242);
        assert_eq!(event.ppid, Some(4200));
        assert_eq!(event.exe, None);
        assert_eq!(
            event.exe_unreadable.as_deref(),
            Some("the process exited before it could be read")
        );
    }

    #[test]
    fn reading_our_own_process() {
        let event = read_exec(
            Path::new("/proc"),
            std::process::id(),
            ExecSource::ProcPoll,
            SystemTime::UNIX_EPOCH,
            None,
        );
        assert!(!event.gone);
        assert_eq!(event.uid, Some(nix::unistd::geteuid().as_raw()));
        assert_eq!(
            event.exe.as_deref(),
            std::env::current_exe().ok().as_deref()
        );
        assert_eq!(event.ppid, Some(nix::unistd::getppid().as_raw() as u32));
        assert!(!event.cmdline.is_empty());
        assert_eq!(event.cwd, std::env::current_dir().ok());
    }
}
