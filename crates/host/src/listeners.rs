//! The entry point `perimeter audit` calls for listening sockets: every
//! listener of the host (or of every network namespace) traced to the
//! processes holding it, with the namespaces' interfaces and what could not be
//! seen.
//!
//! It ties the other modules together: one walk of /proc (`procs`), the
//! namespaces to audit (`netns`), per namespace the sockets (`sockets`) and the
//! interfaces (`interfaces`) read from inside it, and the owners' accounts
//! (`users`). Nothing here fails: whatever could not be read is a `Problem`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use perimeter_model::{Interface, Listener, Netns, Problem, Process, Scope};

use crate::interfaces::{interface_names, read_interfaces};
use crate::netns::{
    NamespaceEntry, NetnsError, RUN_NETNS, discover_namespaces, named_namespaces, parse_ns_link,
    run_in_netns,
};
use crate::procs::{PROC_LINK_CAPABILITY, ProcessWalk, walk_processes};
use crate::sockets::{RawSocket, SocketDump, dump_sockets, read_proc_net};
use crate::users::AccountCache;

pub use crate::sockets::SocketSource;

/// What to collect, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerOptions {
    /// Audit every network namespace a process lives in and every `ip netns`
    /// namespace, not only our own.
    pub all_netns: bool,
    /// Normally `/proc`.
    pub proc_root: PathBuf,
    /// Read /proc/net tables instead of asking netlink.
    pub force_proc_fallback: bool,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        ListenerOptions {
            all_netns: false,
            proc_root: PathBuf::from("/proc"),
            force_proc_fallback: false,
        }
    }
}

/// The listening sockets of the host and everything needed to explain them.
#[derive(Debug, Clone)]
pub struct ListenerFacts {
    /// Sorted by namespace, protocol, port, address.
    pub listeners: Vec<Listener>,
    /// Every process seen, with its account; `ownership` is
    /// `Ownership::NotChecked`.
    pub processes: BTreeMap<u32, Process>,
    /// The audited namespaces and their interface addresses.
    pub namespaces: Vec<(Netns, Vec<Interface>)>,
    /// `Netlink` when every namespace was read through netlink; `ProcNet` when
    /// any was read from /proc/net (asked for, or netlink failed: see problems).
    pub source: SocketSource,
    pub problems: Vec<Problem>,
}

/// Collects every listening socket, the processes behind them and the
/// namespaces they live in. Never fails; see `ListenerFacts::problems`.
pub fn collect_listeners(opts: &ListenerOptions) -> ListenerFacts {
    let mut problems = Vec::new();
    // Our own namespace is always audited, and its sockets and interfaces do
    // not depend on the /proc walk: read them on a thread of their own while
    // the walk runs. The thread starts in our namespace, so its
    // /proc/thread-self/net and netlink answers are ours.
    let (mut walk, mut current_scan) = std::thread::scope(|scope| {
        let current = std::thread::Builder::new()
            .name("netns-scan".to_owned())
            .spawn_scoped(scope, || {
                scan_namespace(
                    &opts.proc_root.join("thread-self/net"),
                    opts.force_proc_fallback,
                )
            })
            // Without the thread, the namespace is read after the walk.
            .ok();
        let walk = walk_processes(&opts.proc_root);
        let scan = current.map(|thread| {
            thread
                .join()
                // Nothing in the scan panics; should something, surface it as
                // a sequential scan would.
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
        (walk, scan)
    });
    problems.append(&mut walk.problems);

    let current_inode = match read_ns_inode(&opts.proc_root.join("thread-self/ns/net")) {
        Ok(inode) => inode,
        Err(problem) => {
            problems.push(problem);
            0
        }
    };
    let host_inode = match read_ns_inode(&opts.proc_root.join("1/ns/net")) {
        Ok(inode) => Some(inode),
        // kthreadd (pid 2, parent 0) lives in the initial namespace, as PID 1
        // does on any host; a sandbox that hides PID 1 (Landlock scoping does)
        // often leaves kernel threads readable.
        Err(problem) => match walk
            .processes
            .get(&2)
            .filter(|kthreadd| kthreadd.ppid == 0 && kthreadd.comm == "kthreadd")
            .and_then(|kthreadd| kthreadd.netns_inode)
        {
            Some(inode) => Some(inode),
            None => {
                problems.push(problem.with_hint(format!(
                    "the namespace of PID 1 (named `host`) needs {PROC_LINK_CAPABILITY} to read"
                )));
                None
            }
        },
    };
    let (named, mut named_problems) = named_namespaces(Path::new(RUN_NETNS));
    problems.append(&mut named_problems);
    let entries = discover_namespaces(
        &opts.proc_root,
        current_inode,
        host_inode,
        &named,
        walk.processes
            .values()
            .filter_map(|process| Some((process.pid, process.netns_inode?))),
        opts.all_netns,
    );

    let mut listeners = Vec::new();
    let mut namespaces = Vec::new();
    let mut sources = BTreeSet::new();
    for entry in entries {
        let scan = if entry.current
            && let Some(scan) = current_scan.take()
        {
            scan
        } else {
            scan_entry(&entry, opts)
        };
        sources.insert(scan.dump.source);
        problems.extend(scan.dump.problems);
        problems.extend(scan.problems);
        listeners.extend(
            scan.dump
                .sockets
                .into_iter()
                .map(|raw| to_listener(raw, &entry.netns, &scan.interface_names, Some(&walk))),
        );
        namespaces.push((entry.netns, scan.interfaces));
    }
    listeners.sort_by(|a, b| {
        (&a.netns, a.protocol, a.port, a.address, a.inode)
            .cmp(&(&b.netns, b.protocol, b.port, b.address, b.inode))
    });
    namespaces.sort_by(|a, b| a.0.cmp(&b.0));

    if let Some(problem) = unattributed_problem(&listeners, &walk) {
        problems.push(problem);
    }
    let mut processes = walk.processes;
    problems.extend(resolve_accounts(&mut processes));

    ListenerFacts {
        listeners,
        processes,
        namespaces,
        source: if sources.contains(&SocketSource::ProcNet) {
            SocketSource::ProcNet
        } else {
            SocketSource::Netlink
        },
        problems,
    }
}

/// The inode of /proc/WHO/ns/net.
/// The inode of the network namespace a `/proc/.../ns/net` link names.
pub fn read_ns_inode(path: &Path) -> Result<u64, Problem> {
    let subject = path.display().to_string();
    let link = std::fs::read_link(path)
        .map_err(|err| Problem::new(&subject, format!("cannot read network namespace: {err}")))?;
    parse_ns_link(&link.to_string_lossy()).ok_or_else(|| {
        Problem::new(
            &subject,
            format!("unexpected namespace link `{}`", link.display()),
        )
    })
}

/// What one namespace holds.
struct NamespaceScan {
    dump: SocketDump,
    interfaces: Vec<Interface>,
    interface_names: BTreeMap<u32, String>,
    problems: Vec<Problem>,
}

fn scan_entry(entry: &NamespaceEntry, opts: &ListenerOptions) -> NamespaceScan {
    // /proc/thread-self/net shows the calling thread's namespace, which is the
    // one netlink answers for, also on a thread that has entered another.
    let own_net_dir = opts.proc_root.join("thread-self/net");
    let scan_here = || scan_namespace(&own_net_dir, opts.force_proc_fallback);
    if entry.current {
        return scan_here();
    }
    let entered = match &entry.enter {
        Some(ns_file) => run_in_netns(ns_file, scan_here),
        None => Err(NetnsError::Open {
            path: PathBuf::from(format!("{}/<pid>/ns/net", opts.proc_root.display())),
            source: std::io::Error::other("no process of the namespace is readable"),
        }),
    };
    match entered {
        Ok(scan) => scan,
        Err(err) => scan_from_outside(entry, &opts.proc_root, &err),
    }
}

/// Sockets, interfaces and interface names of the calling thread's namespace.
fn scan_namespace(own_net_dir: &Path, force_proc_fallback: bool) -> NamespaceScan {
    let dump = dump_sockets(own_net_dir, force_proc_fallback);
    let mut problems = Vec::new();
    let interfaces = read_interfaces().unwrap_or_else(|err| {
        problems.push(Problem::new("interfaces", err.to_string()));
        Vec::new()
    });
    let names = if dump.sockets.iter().any(|socket| socket.ifindex.is_some()) {
        interface_names().unwrap_or_else(|err| {
            problems.push(Problem::new("interfaces", err.to_string()));
            BTreeMap::new()
        })
    } else {
        BTreeMap::new()
    };
    NamespaceScan {
        dump,
        interfaces,
        interface_names: names,
        problems,
    }
}

/// A namespace we could not enter: its sockets from a member process's
/// /proc/PID/net tables (readable without entering), no interfaces.
fn scan_from_outside(entry: &NamespaceEntry, proc_root: &Path, err: &NetnsError) -> NamespaceScan {
    let subject = format!("network namespace {}", entry.netns);
    let mut problems = Vec::new();
    let (sockets, mut read_problems) = match entry.representative_pid {
        Some(pid) => {
            let net_dir = proc_root.join(pid.to_string()).join("net");
            problems.push(
                Problem::new(&subject, err.to_string()).with_hint(format!(
                    "read its sockets from {} instead (no IPV6_V6ONLY, no bound devices, no interfaces); grant CAP_SYS_ADMIN (run as root) to audit it fully",
                    net_dir.display()
                )),
            );
            read_proc_net(&net_dir)
        }
        None => {
            problems.push(Problem::new(&subject, err.to_string()).with_hint(
                "no process lives in it, so its sockets could not be read; grant CAP_SYS_ADMIN (run as root)",
            ));
            (Vec::new(), Vec::new())
        }
    };
    problems.append(&mut read_problems);
    NamespaceScan {
        dump: SocketDump {
            sockets,
            source: SocketSource::ProcNet,
            problems: Vec::new(),
        },
        interfaces: Vec::new(),
        interface_names: BTreeMap::new(),
        problems,
    }
}

/// The listener a socket is, its owners from `walk` (none without one).
pub fn to_listener(
    raw: RawSocket,
    netns: &Netns,
    interface_names: &BTreeMap<u32, String>,
    walk: Option<&ProcessWalk>,
) -> Listener {
    Listener {
        protocol: raw.protocol,
        address: raw.address,
        port: raw.port,
        scope: Scope::of(raw.address),
        v6only: raw.v6only,
        // An index the name table does not know (the device went away, or
        // the names could not be listed) is still worth showing.
        interface: raw.ifindex.map(|index| {
            interface_names
                .get(&index)
                .cloned()
                .unwrap_or_else(|| format!("ifindex:{index}"))
        }),
        inode: raw.inode,
        socket_uid: raw.uid,
        netns: netns.clone(),
        owners: walk
            .map(|walk| walk.owners_of(raw.inode).collect())
            .unwrap_or_default(),
    }
}

/// When permissions hid descriptors, says how many listeners have no known
/// owner and why. Without such limits an ownerless socket is normal (a kernel
/// socket, or an owner in a pid namespace this /proc does not show) and is
/// not reported as a problem.
fn unattributed_problem(listeners: &[Listener], walk: &ProcessWalk) -> Option<Problem> {
    if walk.fully_privileged() {
        return None;
    }
    let n_unattributed = listeners.iter().filter(|l| l.owners.is_empty()).count();
    if n_unattributed == 0 {
        return None;
    }
    Some(
        Problem::new(
            "listening sockets",
            format!(
                "{n_unattributed} of {} listening sockets could not be traced to a process: /proc hid other processes' descriptors ({})",
                listeners.len(),
                walk.denial_reason()
            ),
        )
        .with_hint(walk.denial_hint()),
    )
}

/// Fills each process's account; an NSS failure is one problem per uid.
fn resolve_accounts(processes: &mut BTreeMap<u32, Process>) -> Vec<Problem> {
    let mut cache = AccountCache::new();
    let mut failed_uids = BTreeSet::new();
    let mut problems = Vec::new();
    for process in processes.values_mut() {
        match cache.lookup(process.uid) {
            Ok(account) => process.account = account,
            Err(err) => {
                if failed_uids.insert(process.uid) {
                    problems.push(Problem::new(
                        format!("uid {}", process.uid),
                        err.to_string(),
                    ));
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use perimeter_model::{Protocol, SocketOwner};

    fn walk_with(fds: Vec<(u64, SocketOwner)>, n_fd_dirs_denied: usize) -> ProcessWalk {
        ProcessWalk {
            socket_fds: fds,
            n_fd_dirs_denied,
            ..ProcessWalk::default()
        }
    }

    fn raw(address: &str, inode: u64, ifindex: Option<u32>) -> RawSocket {
        RawSocket {
            protocol: Protocol::Tcp,
            address: address.parse().expect("test address"),
            port: 6379,
            v6only: None,
            ifindex,
            inode,
            uid: 0,
        }
    }

    fn host() -> Netns {
        Netns {
            inode: 4026531840,
            name: "host".to_owned(),
        }
    }

    #[test]
    fn listeners_get_scope_interface_and_owners() {
        let master = SocketOwner { pid: 812, fd: 6 };
        let worker = SocketOwner { pid: 813, fd: 6 };
        let walk = walk_with(
            vec![
                (41, master),
                (41, worker),
                (42, SocketOwner { pid: 9, fd: 3 }),
            ],
            0,
        );
        let names = BTreeMap::from([(3, "eth0".to_owned())]);
        let listener = to_listener(raw("0.0.0.0", 41, Some(3)), &host(), &names, Some(&walk));
        assert_eq!(listener.scope, Scope::Wildcard);
        assert_eq!(listener.interface.as_deref(), Some("eth0"));
        assert_eq!(listener.owners, vec![master, worker]);
        assert_eq!(listener.netns, host());
        let listener = to_listener(raw("127.0.0.1", 43, Some(7)), &host(), &names, Some(&walk));
        assert_eq!(listener.scope, Scope::Loopback);
        assert_eq!(listener.interface.as_deref(), Some("ifindex:7"));
        assert!(listener.owners.is_empty());
    }

    #[test]
    fn ownerless_sockets_are_a_problem_only_when_privileges_hid_them() {
        let names = BTreeMap::new();
        let privileged = walk_with(vec![(41, SocketOwner { pid: 1, fd: 3 })], 0);
        let listeners = vec![
            to_listener(raw("0.0.0.0", 41, None), &host(), &names, Some(&privileged)),
            to_listener(raw("0.0.0.0", 99, None), &host(), &names, Some(&privileged)),
        ];
        assert_eq!(unattributed_problem(&listeners, &privileged), None);

        let limited = walk_with(vec![(41, SocketOwner { pid: 1, fd: 3 })], 4);
        let problem = unattributed_problem(&listeners, &limited).expect("reported");
        assert!(
            problem
                .message
                .starts_with("1 of 2 listening sockets could not be traced"),
            "{}",
            problem.message
        );
        assert!(
            problem.message.ends_with("(needs CAP_DAC_READ_SEARCH)"),
            "{}",
            problem.message
        );
        assert!(
            problem
                .hint
                .is_some_and(|hint| hint.starts_with("run as root"))
        );
    }
}
