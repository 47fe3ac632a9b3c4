//! Network namespaces: which exist, what to call them, and how to run code
//! inside one.
//!
//! A namespace is identified by the inode of its nsfs file. It is named `host`
//! when it is PID 1's, by its `ip netns` name when a file under /run/netns is a
//! bind mount of it, and `netns:[INODE]` otherwise. Netlink `sock_diag` and
//! `getifaddrs` answer for the namespace of the calling thread, so the audit
//! runs them on a short-lived thread that has `setns`'d into the namespace.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};
use perimeter_model::{Netns, Problem};

/// Where `ip netns add` bind-mounts named namespaces.
pub const RUN_NETNS: &str = "/run/netns";

/// Entering a namespace, or learning which one a process is in, failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("entering network namespace {path} needs CAP_SYS_ADMIN")]
    NotPermitted { path: PathBuf },
    #[error("cannot enter network namespace {path}: {source}")]
    Enter {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("the thread running inside network namespace {path} panicked")]
    Panicked { path: PathBuf },
}

/// `net:[4026531840]` → 4026531840.
pub fn parse_ns_link(link: &str) -> Option<u64> {
    let inode = link.strip_prefix("net:[")?.strip_suffix(']')?;
    if inode.is_empty() || !inode.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    inode.parse().ok()
}

/// The namespace inode behind a `/proc/PID/ns/net` link or a /run/netns bind
/// mount: the inode of the file it resolves to.
pub fn netns_inode(path: &Path) -> io::Result<u64> {
    std::fs::metadata(path).map(|meta| meta.ino())
}

/// Named namespaces: inode → name, from the bind mounts in `run_netns`. A
/// missing directory (no `ip netns` namespace ever created) is not a problem.
/// A name whose file is not a mounted namespace (the empty placeholder a failed
/// `ip netns add` leaves) is skipped: it does not live on nsfs, the filesystem
/// of our own /proc/thread-self/ns/net.
pub fn named_namespaces(run_netns: &Path) -> (BTreeMap<u64, String>, Vec<Problem>) {
    let nsfs_device = std::fs::metadata("/proc/thread-self/ns/net")
        .ok()
        .map(|meta| meta.dev());
    let mut names = BTreeMap::new();
    let mut problems = Vec::new();
    let entries = match std::fs::read_dir(run_netns) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return (names, problems),
        Err(err) => {
            problems.push(Problem::new(
                run_netns.display().to_string(),
                format!("cannot list named network namespaces: {err}"),
            ));
            return (names, problems);
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match std::fs::metadata(&path) {
            Ok(meta) if nsfs_device.is_some_and(|dev| dev != meta.dev()) => {}
            Ok(meta) => {
                let inode = meta.ino();
                let name = entry.file_name().to_string_lossy().into_owned();
                // Two names for one namespace: keep the first in directory
                // order, deterministic enough and rare.
                names.entry(inode).or_insert(name);
            }
            Err(err) => problems.push(Problem::new(
                path.display().to_string(),
                format!("cannot stat named network namespace: {err}"),
            )),
        }
    }
    (names, problems)
}

/// The name a reader would find the namespace by: `host` for PID 1's, the
/// `ip netns` name, else `netns:[INODE]`.
pub fn name_namespace(inode: u64, host_inode: Option<u64>, named: &BTreeMap<u64, String>) -> Netns {
    let name = if host_inode == Some(inode) {
        "host".to_owned()
    } else if let Some(name) = named.get(&inode) {
        name.clone()
    } else {
        format!("netns:[{inode}]")
    };
    Netns { inode, name }
}

/// A namespace to audit, with the ways into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceEntry {
    pub netns: Netns,
    /// Whether this is the calling thread's own namespace (no `setns` needed).
    pub current: bool,
    /// The file to `setns` into: /run/netns/NAME for named namespaces (which
    /// needs no access to any process), else /proc/PID/ns/net.
    pub enter: Option<PathBuf>,
    /// The lowest pid living in the namespace, whose /proc/PID/net tables the
    /// /proc fallback reads when entering is not permitted.
    pub representative_pid: Option<u32>,
}

/// Lists the namespaces to audit: the current one, and with `all` every
/// namespace a process lives in plus every named one (a namespace made with
/// `ip netns add` may hold sockets with no process in it).
///
/// `process_namespaces` gives (pid, namespace inode) for every process whose
/// namespace could be read.
pub fn discover_namespaces(
    proc_root: &Path,
    current_inode: u64,
    host_inode: Option<u64>,
    named: &BTreeMap<u64, String>,
    process_namespaces: impl IntoIterator<Item = (u32, u64)>,
    all: bool,
) -> Vec<NamespaceEntry> {
    let mut representatives: BTreeMap<u64, u32> = BTreeMap::new();
    for (pid, inode) in process_namespaces {
        let representative = representatives.entry(inode).or_insert(pid);
        *representative = (*representative).min(pid);
    }
    let mut inodes = vec![current_inode];
    if all {
        inodes.extend(representatives.keys().copied());
        inodes.extend(named.keys().copied());
    }
    inodes.sort_unstable();
    inodes.dedup();
    inodes
        .into_iter()
        .map(|inode| {
            let current = inode == current_inode;
            let representative_pid = representatives.get(&inode).copied();
            let enter = if current {
                None
            } else if let Some(name) = named.get(&inode) {
                Some(Path::new(RUN_NETNS).join(name))
            } else {
                representative_pid.map(|pid| proc_root.join(pid.to_string()).join("ns/net"))
            };
            NamespaceEntry {
                netns: name_namespace(inode, host_inode, named),
                current,
                enter,
                representative_pid,
            }
        })
        .collect()
}

/// Runs `work` on a new thread that has entered the network namespace at
/// `ns_file` (/proc/PID/ns/net or /run/netns/NAME), and returns its result.
/// Only that thread changes namespace; it ends when `work` returns, so the
/// caller's threads are never moved.
pub fn run_in_netns<T, F>(ns_file: &Path, work: F) -> Result<T, NetnsError>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let file = File::open(ns_file).map_err(|source| NetnsError::Open {
        path: ns_file.to_owned(),
        source,
    })?;
    std::thread::scope(|scope| {
        let thread = scope.spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|errno| match errno {
                nix::Error::EPERM => NetnsError::NotPermitted {
                    path: ns_file.to_owned(),
                },
                source => NetnsError::Enter {
                    path: ns_file.to_owned(),
                    source,
                },
            })?;
            drop(file);
            Ok(work())
        });
        thread.join().unwrap_or_else(|_| {
            Err(NetnsError::Panicked {
                path: ns_file.to_owned(),
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_links() {
        assert_eq!(parse_ns_link("net:[4026531840]"), Some(4026531840));
        assert_eq!(parse_ns_link("net:[]"), None);
        assert_eq!(parse_ns_link("mnt:[4026531840]"), None);
        assert_eq!(parse_ns_link("net:[12x]"), None);
        assert_eq!(parse_ns_link("net:[4026531840"), None);
    }

    #[test]
    fn names_prefer_host_then_ip_netns() {
        let named = BTreeMap::from([(20, "blue".to_owned()), (10, "alias".to_owned())]);
        assert_eq!(name_namespace(10, Some(10), &named).name, "host");
        assert_eq!(name_namespace(20, Some(10), &named).name, "blue");
        assert_eq!(name_namespace(30, Some(10), &named).name, "netns:[30]");
        assert_eq!(name_namespace(30, None, &named).name, "netns:[30]");
    }

    #[test]
    fn discovery_lists_current_or_all() {
        let named = BTreeMap::from([(50, "lab".to_owned())]);
        let processes = [(1, 10), (900, 30), (700, 30), (5, 10)];
        let only_current =
            discover_namespaces(Path::new("/proc"), 10, Some(10), &named, processes, false);
        assert_eq!(
            only_current,
            vec![NamespaceEntry {
                netns: Netns {
                    inode: 10,
                    name: "host".to_owned()
                },
                current: true,
                enter: None,
                representative_pid: Some(1),
            }]
        );
        let all = discover_namespaces(Path::new("/proc"), 10, Some(10), &named, processes, true);
        let summary: Vec<_> = all
            .iter()
            .map(|e| {
                (
                    e.netns.name.as_str(),
                    e.current,
                    e.enter.clone(),
                    e.representative_pid,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("host", true, None, Some(1)),
                (
                    "netns:[30]",
                    false,
                    Some(PathBuf::from("/proc/700/ns/net")),
                    Some(700)
                ),
                ("lab", false, Some(PathBuf::from("/run/netns/lab")), None),
            ]
        );
    }

    #[test]
    fn current_namespace_inode_matches_the_link() {
        let link = std::fs::read_link("/proc/thread-self/ns/net").expect("own ns link");
        let from_link = parse_ns_link(&link.to_string_lossy()).expect("ns link parses");
        let from_stat = netns_inode(Path::new("/proc/thread-self/ns/net")).expect("stat own ns");
        assert_eq!(from_link, from_stat);
    }

    #[test]
    fn running_in_our_own_namespace_returns_the_result() {
        if !perimeter_testlab::require(perimeter_testlab::Requirement::Root) {
            return;
        }
        let current = netns_inode(Path::new("/proc/thread-self/ns/net")).expect("stat own ns");
        // Entering the namespace we are already in needs CAP_SYS_ADMIN all the same.
        match run_in_netns(Path::new("/proc/self/ns/net"), || {
            netns_inode(Path::new("/proc/thread-self/ns/net")).ok()
        }) {
            Ok(inside) => assert_eq!(inside, Some(current)),
            Err(err) => panic!("unexpected error: {err}"),
        }
    }

    #[test]
    fn missing_namespace_file_is_an_open_error() {
        let err = run_in_netns(Path::new("/run/netns/perimeter-does-not-exist"), || ())
            .expect_err("no such namespace");
        assert!(matches!(err, NetnsError::Open { .. }));
        assert!(
            err.to_string()
                .starts_with("cannot open network namespace /run/netns/perimeter-does-not-exist: ")
        );
    }

    #[test]
    fn missing_run_netns_is_not_a_problem() {
        let (names, problems) = named_namespaces(Path::new("/nonexistent/run/netns"));
        assert!(names.is_empty());
        assert!(problems.is_empty());
    }
}
