//! What a host looks like from inside: its listeners, the processes behind them,
//! the packages those processes came from, and per-namespace facts.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::finding::Problem;
use crate::scope::Scope;
use crate::services::{RedisFacts, SshdFacts};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    pub fn parse(text: &str) -> Option<Protocol> {
        match text {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A network namespace, named the way a reader would find it again: `host` for
/// the namespace of PID 1, the name under /run/netns for `ip netns` namespaces,
/// otherwise `netns:[INODE]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Netns {
    pub inode: u64,
    pub name: String,
}

impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A process holding a listening socket open, and the descriptor it holds it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SocketOwner {
    pub pid: u32,
    pub fd: u32,
}

/// A listening socket (TCP in LISTEN, or an unconnected bound UDP socket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub protocol: Protocol,
    pub address: IpAddr,
    pub port: u16,
    pub scope: Scope,
    /// For an IPv6 socket: whether it refuses IPv4 (`IPV6_V6ONLY`). `Some(false)` on
    /// `[::]` means the socket takes IPv4 connections as well. `None` when unknown
    /// (the /proc fallback cannot tell) or for IPv4 sockets.
    pub v6only: Option<bool>,
    /// The device the socket is bound to with `SO_BINDTODEVICE`, if any.
    pub interface: Option<String>,
    pub inode: u64,
    /// The uid the kernel records for the socket (its creator).
    pub socket_uid: u32,
    pub netns: Netns,
    /// Every process that holds the socket, sorted by pid. Empty when no process
    /// could be found (not root, or the owner is in another pid namespace); such a
    /// socket is kept and reported, never dropped.
    pub owners: Vec<SocketOwner>,
}

impl Listener {
    /// The socket a container's published `binding` would be if a process
    /// of `netns` held it: what the kernel's DNAT answers when nothing on
    /// the host listens (Docker without its userland proxy), judged as a
    /// listener on the published address. No process owns it (inode 0).
    pub fn published(binding: &crate::Binding, netns: Netns) -> Listener {
        Listener {
            protocol: binding.protocol,
            address: binding.host_ip,
            port: binding.host_port,
            scope: Scope::of(binding.host_ip),
            v6only: binding.host_ip.is_ipv6().then_some(true),
            interface: None,
            inode: 0,
            socket_uid: 0,
            netns,
            owners: Vec::new(),
        }
    }

    /// Distinct pids holding the socket, sorted.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.owners.iter().map(|o| o.pid).collect();
        pids.dedup();
        pids
    }

    /// Whether IPv4 clients can reach this socket: IPv4 sockets, and IPv6 wildcard
    /// or v4-mapped sockets without `IPV6_V6ONLY`.
    pub fn accepts_ipv4(&self) -> bool {
        match self.address {
            IpAddr::V4(_) => true,
            IpAddr::V6(v6) => {
                (v6.is_unspecified() || v6.to_ipv4_mapped().is_some()) && self.v6only != Some(true)
            }
        }
    }

    /// `tcp 0.0.0.0:6379` / `udp [::]:53`, the way the listener is named in findings.
    pub fn endpoint(&self) -> String {
        match self.address {
            IpAddr::V4(v4) => format!("{} {}:{}", self.protocol, v4, self.port),
            IpAddr::V6(v6) => format!("{} [{}]:{}", self.protocol, v6, self.port),
        }
    }
}

/// A local account, resolved through NSS (so LDAP and SSSD users resolve too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub shell: Option<String>,
    pub home: Option<String>,
}

impl Account {
    /// Whether the shell lets the account log in interactively. Empty, `nologin`
    /// and `false` shells do not.
    pub fn has_login_shell(&self) -> bool {
        match self.shell.as_deref().map(str::trim) {
            None | Some("") => false,
            Some(shell) => {
                let base = shell.rsplit('/').next().unwrap_or(shell);
                !matches!(base, "nologin" | "false" | "sync" | "halt" | "shutdown")
            }
        }
    }
}

/// Which package installed a file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PackageRef {
    /// `dpkg` or `rpm`.
    pub manager: String,
    pub name: String,
    pub arch: Option<String>,
}

impl fmt::Display for PackageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.arch {
            Some(arch) => write!(f, "{}:{}", self.name, arch),
            None => f.write_str(&self.name),
        }
    }
}

/// Whether a process's executable came from a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    Package(PackageRef),
    /// No package database on the host lists the executable.
    Unpackaged,
    /// Ownership could not be decided (executable unreadable, no package database);
    /// the text says why.
    Unknown(String),
    /// Not looked up: only listening processes are checked against packages.
    NotChecked,
}

impl Ownership {
    pub fn package(&self) -> Option<&PackageRef> {
        match self {
            Ownership::Package(pkg) => Some(pkg),
            _ => None,
        }
    }
}

/// A process, as far as /proc lets us see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    /// The kernel's short name (`comm`), which a process cannot hide behind a
    /// rewritten title the way it can with its cmdline.
    pub comm: String,
    pub cmdline: Vec<String>,
    /// Effective uid.
    pub uid: u32,
    pub account: Option<Account>,
    /// The resolved executable, without the ` (deleted)` suffix.
    pub exe: Option<PathBuf>,
    /// The executable was deleted (or replaced) after the process started.
    pub exe_deleted: bool,
    pub cwd: Option<PathBuf>,
    /// The cgroup v2 path (or the systemd controller's path on v1).
    pub cgroup: Option<String>,
    /// The systemd unit, from the cgroup path.
    pub unit: Option<String>,
    /// A hint that the process runs in a container (docker, podman, lxc, kubepods).
    pub container: Option<String>,
    /// Inode of the process's network namespace.
    pub netns_inode: Option<u64>,
    pub ownership: Ownership,
}

impl Process {
    /// A short human name: the executable's file name, else `comm`.
    pub fn name(&self) -> String {
        self.exe
            .as_ref()
            .and_then(|exe| exe.file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.comm.clone())
    }

    pub fn user_name(&self) -> String {
        match &self.account {
            Some(account) => account.name.clone(),
            None => self.uid.to_string(),
        }
    }
}

/// An address on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub address: IpAddr,
    pub prefix_len: u8,
}

/// Whether a namespace drops inbound traffic by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirewallVerdict {
    /// An input base chain with policy drop, or a final unconditional drop/reject.
    DefaultDeny { evidence: Vec<String> },
    /// Rulesets were read and none denies by default.
    Open { evidence: Vec<String> },
    /// The rulesets could not be read; the text says why.
    Unknown(String),
}

/// Facts about one network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsFacts {
    pub netns: Netns,
    pub interfaces: Vec<Interface>,
    pub firewall: FirewallVerdict,
}

/// Everything the audit collected about a host, before any rule runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostSnapshot {
    pub hostname: String,
    pub namespaces: Vec<NetnsFacts>,
    pub listeners: Vec<Listener>,
    /// Every process seen, by pid.
    pub processes: BTreeMap<u32, Process>,
    pub redis: Vec<RedisFacts>,
    pub sshd: Vec<SshdFacts>,
    /// The permission bits (`st_mode & 0o7777`) of every directory above each
    /// process's executable, as the collector stat'ed them; a directory that
    /// could not be stat'ed is absent. Which of them make an executable
    /// suspicious is the exec rules' judgement (`checks::exec`), not the
    /// collector's.
    pub exe_dir_modes: BTreeMap<PathBuf, u32>,
    /// Which sources the namespace's firewall lets through to each listener
    /// beyond loopback, keyed by (netns inode, socket inode). Absent when the
    /// ruleset could not be read.
    pub reach: BTreeMap<(u64, u64), crate::Reach>,
    /// The containers the host's runtimes know (Docker's state, read-only).
    pub containers: Vec<crate::Container>,
    /// Ports of the host that no process of its namespace listens on and a
    /// DNAT in nat prerouting sends elsewhere: a container's published port
    /// (Docker without its userland proxy), a Kubernetes hostPort, a port
    /// forwarded to a VM or another machine. Each is also in `listeners`,
    /// as the socket it would be ([`Listener::published`]: no owner, inode
    /// 0), so that it is listed, approved and judged like any listener; this
    /// says where it goes. A port a proxy holds is a real listener.
    pub published: Vec<PublishedPort>,
    pub problems: Vec<Problem>,
}

/// A port of the host that a DNAT in nat prerouting forwards, with no
/// process of the namespace listening on it: to the network a port of the
/// host like any other, though `ss` shows nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedPort {
    /// The inode of the namespace whose nat prerouting holds the DNAT.
    pub netns: u64,
    /// The host's address (unspecified when the DNAT takes every local
    /// address) and port, and the port it is sent to.
    pub binding: crate::Binding,
    /// Where the DNAT sends it (`198.18.90.2:6379`), as written.
    pub to: String,
    /// The container it reaches, by the runtime's record of the binding or
    /// by the address the DNAT sends to; `None` for a VM, another machine,
    /// or a container no runtime here names.
    pub container: Option<usize>,
    /// Who reaches it, through the forward path (`reach.published`).
    pub reach: crate::Reach,
}

impl HostSnapshot {
    /// The index in `containers` of the container a process runs in, by the
    /// runtime and id its cgroup names (or containerd's state, which names
    /// the processes of its tasks: `containerd:NS/ID`).
    pub fn container_index(&self, process: &Process) -> Option<usize> {
        let (runtime, id) = process.container.as_deref()?.split_once(':')?;
        if id.is_empty() {
            return None;
        }
        self.containers
            .iter()
            .position(|c| c.answers_to_hint(runtime, id))
    }

    /// The container a process runs in.
    pub fn container_of_process(&self, process: &Process) -> Option<&crate::Container> {
        self.container_index(process)
            .map(|idx| &self.containers[idx])
    }

    /// The container behind a listener, and how it was traced: the main
    /// owner runs in the container (its cgroup names it), it is Docker's
    /// userland proxy forwarding the host's port to the container's address,
    /// dockerd holding a port a container publishes, the conmon of a
    /// Podman container holding its published port, or, for a published
    /// port nothing holds, the container its DNAT sends to.
    pub fn container_of(
        &self,
        listener: &Listener,
    ) -> Option<(&crate::Container, crate::ContainerVia)> {
        if let Some(port) = self.published_port(listener) {
            let container = self.containers.get(port.container?)?;
            return Some((container, crate::ContainerVia::Nat));
        }
        let owner = self.main_owner(listener)?;
        if let Some(container) = self.container_of_process(owner) {
            return Some((container, crate::ContainerVia::Process));
        }
        // Two daemons in two namespaces may give their containers the same
        // addresses and ports: a proxy or a daemon speaks for the containers
        // of its own namespace.
        let here = |c: &crate::Container| {
            c.running
                && c.daemon_netns
                    .is_none_or(|netns| netns == listener.netns.inode)
        };
        if owner.name() == "docker-proxy" {
            let target = crate::proxy_target(&owner.cmdline)?;
            let container = self
                .containers
                .iter()
                .find(|c| here(c) && c.addresses.contains(&target))?;
            return Some((container, crate::ContainerVia::Proxy));
        }
        if owner.name() == "dockerd" {
            let container = self.containers.iter().find(|c| {
                here(c)
                    && c.published.iter().any(|b| {
                        b.protocol == listener.protocol
                            && b.host_port == listener.port
                            && (b.host_ip == listener.address || b.host_ip.is_unspecified())
                    })
            })?;
            return Some((container, crate::ContainerVia::Daemon));
        }
        if owner.name() == "conmon" {
            let id = crate::conmon_container_id(&owner.cmdline)?;
            let container = self
                .containers
                .iter()
                .find(|c| c.runtime == "podman" && c.id == id)?;
            return Some((container, crate::ContainerVia::Monitor));
        }
        None
    }

    /// The processes holding a listener, in pid order.
    pub fn owners_of<'a>(
        &'a self,
        listener: &'a Listener,
    ) -> impl Iterator<Item = &'a Process> + 'a {
        listener
            .pids()
            .into_iter()
            .filter_map(move |pid| self.processes.get(&pid))
    }

    /// The first owner that is not a child of another owner: for pre-forked
    /// servers, the master process.
    pub fn main_owner<'a>(&'a self, listener: &'a Listener) -> Option<&'a Process> {
        let pids = listener.pids();
        self.owners_of(listener)
            .find(|p| !pids.contains(&p.ppid))
            .or_else(|| self.owners_of(listener).next())
    }

    pub fn reach_of(&self, listener: &Listener) -> Option<&crate::Reach> {
        match self.published_port(listener) {
            Some(port) => Some(&port.reach),
            None => self.reach.get(&(listener.netns.inode, listener.inode)),
        }
    }

    /// The published port a listener stands for, when it is one: a socket
    /// no process holds (inode 0) at a port a DNAT forwards.
    pub fn published_port(&self, listener: &Listener) -> Option<&PublishedPort> {
        if listener.inode != 0 || !listener.owners.is_empty() {
            return None;
        }
        self.published.iter().find(|port| {
            port.netns == listener.netns.inode
                && port.binding.protocol == listener.protocol
                && port.binding.host_ip == listener.address
                && port.binding.host_port == listener.port
        })
    }

    pub fn namespace(&self, inode: u64) -> Option<&NetnsFacts> {
        self.namespaces.iter().find(|ns| ns.netns.inode == inode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(shell: Option<&str>) -> Account {
        Account {
            name: "svc".into(),
            uid: 1000,
            shell: shell.map(Into::into),
            home: None,
        }
    }

    #[test]
    fn login_shells() {
        assert!(account(Some("/bin/bash")).has_login_shell());
        assert!(account(Some("/bin/sh")).has_login_shell());
        assert!(!account(Some("/usr/sbin/nologin")).has_login_shell());
        assert!(!account(Some("/bin/false")).has_login_shell());
        assert!(!account(Some("")).has_login_shell());
        assert!(!account(None).has_login_shell());
    }

    fn listener(address: &str, v6only: Option<bool>) -> Listener {
        let address: IpAddr = address.parse().expect("test address");
        Listener {
            protocol: Protocol::Tcp,
            address,
            port: 6379,
            scope: Scope::of(address),
            v6only,
            interface: None,
            inode: 1,
            socket_uid: 0,
            netns: Netns {
                inode: 1,
                name: "host".into(),
            },
            owners: vec![],
        }
    }

    #[test]
    fn dual_stack_wildcard_accepts_ipv4() {
        assert!(listener("0.0.0.0", None).accepts_ipv4());
        assert!(listener("::", Some(false)).accepts_ipv4());
        assert!(listener("::", None).accepts_ipv4());
        assert!(!listener("::", Some(true)).accepts_ipv4());
        assert!(!listener("2001:db8::1", Some(false)).accepts_ipv4());
        assert_eq!(listener("::", None).endpoint(), "tcp [::]:6379");
    }
}
