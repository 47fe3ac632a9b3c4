//! Listening sockets of one network namespace, TCP and UDP, IPv4 and IPv6.
//!
//! The primary source is netlink `sock_diag`: the kernel filters TCP sockets to
//! the LISTEN state and UDP sockets to the unconnected (`TCP_CLOSE`) state, so a
//! host with thousands of established connections costs nothing extra, and the
//! answer carries what `/proc/net/*` cannot (`IPV6_V6ONLY`, the bound device).
//! The fallback parses `/proc/net/{tcp,tcp6,udp,udp6}`; it is used when netlink
//! fails or when the caller asks for it, and the result records which source
//! produced it. Both paths yield [`RawSocket`]s; attributing them to processes
//! is `procs`' job, naming their namespace `netns`'.
//!
//! `netlink.rs` holds the `sock_diag` dump (request, answer parser, one
//! socket per table); `proc_net.rs` the /proc/net table parser. This file
//! holds what both produce and [`dump_sockets`], which picks between them
//! table by table.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use perimeter_model::{Problem, Protocol};

mod netlink;
mod proc_net;

pub use netlink::{DumpProgress, MAX_SOCKETS, NetlinkError, dump_netlink, parse_sock_diag};
pub use proc_net::{ParseError, parse_proc_net, read_proc_net};

use netlink::dump_netlink_table;
use proc_net::read_proc_net_table;

/// The address family of a socket table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Inet,
    Inet6,
}

/// A listening socket as the kernel reports it, before it is tied to a process
/// or a namespace name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSocket {
    pub protocol: Protocol,
    pub address: IpAddr,
    pub port: u16,
    /// `IPV6_V6ONLY` for IPv6 sockets as netlink reports it; `None` for IPv4
    /// sockets and whenever the source cannot tell (the /proc fallback).
    pub v6only: Option<bool>,
    /// The interface index of `SO_BINDTODEVICE`, `None` when unbound or unknown.
    pub ifindex: Option<u32>,
    pub inode: u64,
    pub uid: u32,
}

/// Where the socket list came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SocketSource {
    /// Netlink `sock_diag`: complete, with `IPV6_V6ONLY` and bound devices.
    Netlink,
    /// `/proc/net/{tcp,tcp6,udp,udp6}`: no `IPV6_V6ONLY`, no bound device.
    ProcNet,
}

impl SocketSource {
    pub fn as_str(self) -> &'static str {
        match self {
            SocketSource::Netlink => "netlink sock_diag",
            SocketSource::ProcNet => "/proc/net",
        }
    }
}

impl fmt::Display for SocketSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The four socket tables, in the order they are dumped and read.
const TABLES: [(Protocol, Family); 4] = [
    (Protocol::Tcp, Family::Inet),
    (Protocol::Tcp, Family::Inet6),
    (Protocol::Udp, Family::Inet),
    (Protocol::Udp, Family::Inet6),
];

fn table_name(protocol: Protocol, family: Family) -> &'static str {
    match (protocol, family) {
        (Protocol::Tcp, Family::Inet) => "tcp",
        (Protocol::Tcp, Family::Inet6) => "tcp6",
        (Protocol::Udp, Family::Inet) => "udp",
        (Protocol::Udp, Family::Inet6) => "udp6",
    }
}

/// The listening sockets of the calling thread's network namespace, and what
/// could not be read.
#[derive(Debug, Clone)]
pub struct SocketDump {
    pub sockets: Vec<RawSocket>,
    pub source: SocketSource,
    pub problems: Vec<Problem>,
}

/// Lists the listening sockets of the calling thread's network namespace:
/// through netlink unless `force_proc_fallback`, else from the tables in
/// `proc_net_dir`. Netlink is asked table by table, and a table it cannot dump
/// (say `udp_diag` is not available) is read from /proc/net alone, with a
/// [`Problem`] saying why. Pass `/proc/thread-self/net` so the tables match
/// the namespace netlink answers for.
pub fn dump_sockets(proc_net_dir: &Path, force_proc_fallback: bool) -> SocketDump {
    if force_proc_fallback {
        let (sockets, problems) = read_proc_net(proc_net_dir);
        return SocketDump {
            sockets,
            source: SocketSource::ProcNet,
            problems,
        };
    }
    let mut sockets = Vec::new();
    let mut problems = Vec::new();
    let mut source = SocketSource::Netlink;
    for (sequence_number, (protocol, family)) in (1u32..).zip(TABLES) {
        match dump_netlink_table(protocol, family, sequence_number) {
            Ok(mut found) => sockets.append(&mut found),
            Err(err) => {
                source = SocketSource::ProcNet;
                let path = proc_net_dir.join(table_name(protocol, family));
                problems.push(
                    Problem::new("netlink sock_diag", err.to_string()).with_hint(format!(
                        "read {} instead, which cannot tell IPV6_V6ONLY or bound devices",
                        path.display()
                    )),
                );
                read_proc_net_table(&path, protocol, family, &mut sockets, &mut problems);
            }
        }
    }
    SocketDump {
        sockets,
        source,
        problems,
    }
}
