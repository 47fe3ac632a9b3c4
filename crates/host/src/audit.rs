//! The audit's collection step: listeners and processes, then package
//! ownership, the modes of the executables' directories, the running Redis and
//! sshd instances, and each namespace's firewall, into one [`HostSnapshot`].
//!
//! Every source can fail on its own (not root, a tool missing, a process gone);
//! each failure becomes a `Problem` in the snapshot and the rest goes on.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use perimeter_model::{
    FirewallVerdict, HostSnapshot, Listener, NetnsFacts, Ownership, Problem, Process, Protocol,
    RedisAuth, RedisFacts,
};

use crate::listeners::{ListenerOptions, collect_listeners};
use crate::netns::netns_inode;
use crate::packages::PackageDb;
use perimeter_firewall::reachability;

use crate::{firewall, redis, sshd};

/// What to collect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditOptions {
    /// Every network namespace, not only the one we run in.
    pub all_netns: bool,
    /// Read /proc/net instead of netlink.
    pub force_proc_net: bool,
    /// Connect to local services (Redis) to check them.
    pub probe_services: bool,
    /// Normally `/proc`.
    pub proc_root: PathBuf,
    /// The root of the package database (normally `/`).
    pub fs_root: PathBuf,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            all_netns: false,
            force_proc_net: false,
            probe_services: true,
            proc_root: PathBuf::from("/proc"),
            fs_root: PathBuf::from("/"),
        }
    }
}

/// A collected snapshot and where its sockets came from.
#[derive(Debug, Clone)]
pub struct Collected {
    pub snapshot: HostSnapshot,
    /// `netlink` or `/proc/net`.
    pub socket_source: String,
}

/// Collect everything the audit rules look at. Never fails: what could not be
/// seen is in `snapshot.problems`.
pub fn collect(opts: &AuditOptions) -> Collected {
    // Reading our own namespace's firewall is a few subprocesses, mostly
    // waiting: do it while /proc is walked.
    let (facts, own_ruleset) = std::thread::scope(|scope| {
        // No thread (resource limits) just means reading it later, in turn.
        let firewall = std::thread::Builder::new()
            .name("firewall".into())
            .spawn_scoped(scope, || firewall::read_ruleset(None))
            .ok();
        let facts = collect_listeners(&ListenerOptions {
            all_netns: opts.all_netns,
            proc_root: opts.proc_root.clone(),
            force_proc_fallback: opts.force_proc_net,
        });
        (facts, firewall.and_then(|thread| thread.join().ok()))
    });
    let mut processes = facts.processes;
    // perimeter does not audit itself: run from a build tree under /tmp it
    // would otherwise report its own executable on every run.
    processes.remove(&std::process::id());
    let mut snapshot = HostSnapshot {
        hostname: hostname(),
        listeners: facts.listeners,
        processes,
        problems: facts.problems,
        ..HostSnapshot::default()
    };

    assign_packages(&mut snapshot, &opts.fs_root);
    let (containers, problems) =
        crate::containers::containers(&mut snapshot.processes, &opts.fs_root, &opts.proc_root);
    snapshot.containers = containers;
    snapshot.problems.extend(problems);
    judge_container_processes(&mut snapshot);
    snapshot.exe_dir_modes = exe_dir_modes(snapshot.processes.values());

    let current_inode = netns_inode(&opts.proc_root.join("thread-self/ns/net")).ok();
    let enter_paths: BTreeMap<u64, Option<PathBuf>> = facts
        .namespaces
        .iter()
        .map(|(netns, _)| {
            let path = if Some(netns.inode) == current_inode {
                None
            } else {
                enter_path(&snapshot, &opts.proc_root, netns.inode, &netns.name)
            };
            (netns.inode, path)
        })
        .collect();

    // The Redis questions wait on the network (a silent listener costs its
    // whole patience): ask them while sshd and the firewalls are read.
    let (about, questions) = if opts.probe_services {
        redis_questions(&snapshot, &enter_paths, current_inode)
    } else {
        (Vec::new(), Vec::new())
    };
    let redis = std::thread::scope(|scope| {
        let asking = std::thread::Builder::new()
            .name("redis".into())
            .spawn_scoped(scope, || probe_redis(&about, &questions))
            .ok();
        let (sshd, problems) = inspect_sshds(&snapshot);
        snapshot.sshd = sshd;
        snapshot.problems.extend(problems);
        read_firewalls(
            &mut snapshot,
            facts.namespaces,
            &enter_paths,
            current_inode,
            own_ruleset,
        );
        // No thread (resource limits) just means asking now, in turn.
        match asking {
            Some(thread) => thread.join().ok(),
            None => Some(probe_redis(&about, &questions)),
        }
    });
    if let Some((redis, problems)) = redis {
        snapshot.redis = redis;
        snapshot.problems.extend(problems);
    }

    Collected {
        snapshot,
        socket_source: facts.source.to_string(),
    }
}

/// Each namespace's firewall into the snapshot: its verdict, and with a
/// complete reading, what reaches each exposed listener.
fn read_firewalls(
    snapshot: &mut HostSnapshot,
    namespaces: Vec<(perimeter_model::Netns, Vec<perimeter_model::Interface>)>,
    enter_paths: &BTreeMap<u64, Option<PathBuf>>,
    current_inode: Option<u64>,
    own_ruleset: Option<(perimeter_firewall::Ruleset, Vec<Problem>, Vec<String>)>,
) {
    let mut own_ruleset = own_ruleset;
    for (netns, interfaces) in namespaces {
        let enter = enter_paths.get(&netns.inode).cloned().flatten();
        let firewall = if Some(netns.inode) != current_inode && enter.is_none() {
            FirewallVerdict::Unknown(format!(
                "no way into netns {} to read its firewall",
                netns.name
            ))
        } else {
            // Our own namespace (no way in needed) was read during the walk.
            let early = if enter.is_none() {
                own_ruleset.take()
            } else {
                None
            };
            let read = early.unwrap_or_else(|| firewall::read_ruleset(enter.as_deref()));
            let (ruleset, problems, unread) = read;
            let verdict = perimeter_firewall::verdict_of(&ruleset, &problems, &unread);
            snapshot.problems.extend(problems);
            // Reachability on a partly read ruleset could call open what an
            // unread table drops: only a complete reading is evaluated.
            if unread.is_empty() {
                let reach = reach_of_listeners(
                    &snapshot.listeners,
                    netns.inode,
                    &interfaces,
                    &ruleset,
                    true,
                );
                snapshot.reach.extend(reach);
                publish_ports(snapshot, &netns, &interfaces, &ruleset);
            }
            verdict
        };
        snapshot.namespaces.push(NetnsFacts {
            netns,
            interfaces,
            firewall,
        });
    }
}

/// How many ports the DNATs of one namespace may add as published ports: a
/// rule forwarding a wide range is named, not listed port by port.
const MAX_FORWARDED_PORTS: usize = 256;

/// The ports of this namespace that a DNAT in nat prerouting forwards with
/// no process of the namespace listening on them, judged as a listener on
/// the published address would be, and added to the snapshot twice: as
/// [`perimeter_model::PublishedPort`]s (where they go) and as the listeners
/// they stand for, so that they are listed, approved and judged like any
/// other. First the ports a container of a daemon here publishes (Docker
/// without its userland proxy: the runtime's record names the container),
/// then every other port a DNAT rule names (a Kubernetes hostPort, a port
/// forwarded to a VM), traced to a container by the address it is sent to
/// where a runtime names one.
fn publish_ports(
    snapshot: &mut HostSnapshot,
    netns: &perimeter_model::Netns,
    interfaces: &[perimeter_model::Interface],
    ruleset: &perimeter_firewall::Ruleset,
) {
    // A port a process of the namespace listens on (a userland proxy, or
    // any socket a DNAT shadows) is a listener already, judged with its
    // published paths.
    let held = |snapshot: &HostSnapshot, protocol, port: u16, v4: bool| {
        snapshot.listeners.iter().any(|l| {
            l.netns.inode == netns.inode
                && l.protocol == protocol
                && l.port == port
                && if v4 {
                    l.accepts_ipv4()
                } else {
                    l.address.is_ipv6()
                }
        })
    };
    let mut found: Vec<perimeter_model::PublishedPort> = Vec::new();
    for (idx, container) in snapshot.containers.iter().enumerate() {
        if !container.running || container.daemon_netns != Some(netns.inode) {
            continue;
        }
        for binding in &container.published {
            if held(
                snapshot,
                binding.protocol,
                binding.host_port,
                binding.host_ip.is_ipv4(),
            ) {
                continue;
            }
            if let Some(mut port) = published_port(binding.clone(), netns, interfaces, ruleset) {
                port.container = Some(idx);
                found.push(port);
            }
        }
    }
    // A DNAT of another destination (a Kubernetes ClusterIP) forwards no
    // port of this host.
    let local = |addr: std::net::IpAddr| interfaces.iter().any(|i| i.address == addr);
    let (candidates, unlisted) =
        perimeter_firewall::forwarded_ports(ruleset, MAX_FORWARDED_PORTS, local);
    for line in unlisted {
        snapshot.problems.push(Problem::new(
            format!("firewall of netns {}", netns.name),
            line,
        ));
    }
    for candidate in candidates {
        let v4 = candidate.family == perimeter_model::addrset::AddrFamily::V4;
        let covered = found.iter().any(|p| {
            p.binding.protocol == candidate.protocol
                && p.binding.host_port == candidate.port
                && p.binding.host_ip.is_ipv4() == v4
        });
        if covered || held(snapshot, candidate.protocol, candidate.port, v4) {
            continue;
        }
        let host_ip = candidate.dst.unwrap_or(if v4 {
            std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
        } else {
            std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        });
        let binding = perimeter_model::Binding {
            protocol: candidate.protocol,
            host_ip,
            host_port: candidate.port,
            container_port: candidate.port,
        };
        let Some(mut port) = published_port(binding, netns, interfaces, ruleset) else {
            continue;
        };
        // The container the DNAT sends to, when the runtime's state names
        // one with that address. Two daemons in two namespaces may give
        // their containers the same addresses: a DNAT of this namespace
        // sends to a container of a daemon here, or of none.
        let target = port
            .to
            .parse::<std::net::SocketAddr>()
            .map(|to| to.ip())
            .or_else(|_| port.to.parse())
            .ok();
        port.container = target.and_then(|ip| {
            snapshot.containers.iter().position(|c| {
                c.running
                    && c.daemon_netns.is_none_or(|daemon| daemon == netns.inode)
                    && c.addresses.contains(&ip)
            })
        });
        found.push(port);
    }
    for port in found {
        snapshot
            .listeners
            .push(Listener::published(&port.binding, netns.clone()));
        snapshot.published.push(port);
    }
}

/// The port `binding` names, if a DNAT of the namespace forwards it: its
/// reach as a listener on the published address would have it, and where
/// the first DNAT met sends it.
fn published_port(
    mut binding: perimeter_model::Binding,
    netns: &perimeter_model::Netns,
    interfaces: &[perimeter_model::Interface],
    ruleset: &perimeter_firewall::Ruleset,
) -> Option<perimeter_model::PublishedPort> {
    // As a listener on the published address would be: the same
    // evaluation, for a socket that does not exist.
    let pseudo = Listener::published(&binding, netns.clone());
    if !pseudo.scope.is_exposed() {
        return None;
    }
    let reach = reach_of_listeners(
        std::slice::from_ref(&pseudo),
        netns.inode,
        interfaces,
        ruleset,
        false,
    )
    .remove(&(netns.inode, 0))?;
    let first = reach.published.first()?;
    let to = first.to.clone();
    if let Some(port) = to.parse::<std::net::SocketAddr>().ok().map(|to| to.port()) {
        binding.container_port = port;
    }
    Some(perimeter_model::PublishedPort {
        netns: netns.inode,
        binding,
        to,
        container: None,
        reach,
    })
}

/// Which sources reach each listener beyond loopback of one namespace, through
/// its firewall. A wildcard `[::]` socket that also takes IPv4 is evaluated
/// for both families.
///
/// A connection a DNAT in nat prerouting sends elsewhere (Docker's published
/// ports) never reaches the listener or the input chain: its sources are
/// judged by the forward path to the translated destination instead
/// (`reachability::published`), and each such path is kept for
/// `firewall.bypassed`.
///
/// With `socket` false the listeners stand for published ports nothing
/// listens on: only the connections a DNAT forwards get anywhere, and the
/// input path's answer (which would lead to no socket) is left out.
fn reach_of_listeners(
    listeners: &[Listener],
    netns_inode: u64,
    interfaces: &[perimeter_model::Interface],
    ruleset: &perimeter_firewall::Ruleset,
    socket: bool,
) -> BTreeMap<(u64, u64), perimeter_model::Reach> {
    let links: Vec<reachability::Link> = interfaces
        .iter()
        .map(|i| reachability::Link {
            interface: i.name.clone(),
            addr: i.address,
            prefix_len: i.prefix_len,
        })
        .collect();
    let mut out = BTreeMap::new();
    for listener in listeners
        .iter()
        .filter(|l| l.netns.inode == netns_inode && l.scope.is_exposed())
    {
        let mut destinations = vec![listener.address];
        if listener.address.is_ipv6()
            && listener.address.is_unspecified()
            && listener.accepts_ipv4()
        {
            destinations.push(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        }
        let mut reach = perimeter_model::Reach::default();
        for dst in destinations {
            let probe = reachability::Probe {
                protocol: listener.protocol,
                dst,
                dport: listener.port,
            };
            let found = reachability::reachability(ruleset, &probe);
            let (paths, undecided) = reachability::published(ruleset, &probe, &links);
            let version = probe.version();
            let input_allowed =
                perimeter_model::addrset::AddrRanges::from_nets(&found.allowed, version);
            let input_unknown = perimeter_model::addrset::AddrRanges::from_nets(
                &found
                    .unknown
                    .iter()
                    .map(|(net, _)| *net)
                    .collect::<Vec<_>>(),
                version,
            );
            // Sources a DNAT takes (or may take) elsewhere are decided there.
            let mut elsewhere = perimeter_model::addrset::AddrRanges::from_nets(
                &undecided.iter().map(|(net, _)| *net).collect::<Vec<_>>(),
                version,
            );
            for path in &paths {
                elsewhere.insert(&perimeter_model::addrset::AddrRanges::from_nets(
                    &path.dnat.sources,
                    version,
                ));
            }
            // Without a socket, the input path leads nowhere: its answer
            // only says whom the firewall meant to let in (`input_denies`).
            let mut allowed = if socket {
                input_allowed.difference(&elsewhere)
            } else {
                perimeter_model::addrset::AddrRanges::empty()
            };
            reach
                .unknown
                .extend(found.unknown.into_iter().filter(|(net, _)| {
                    socket
                        && !perimeter_model::addrset::AddrRanges::from_nets(&[*net], version)
                            .difference(&elsewhere)
                            .is_empty()
                }));
            reach.unknown.extend(undecided);
            for path in paths {
                let forwarded =
                    perimeter_model::addrset::AddrRanges::from_nets(&path.allowed, version);
                allowed.insert(&forwarded);
                reach.unknown.extend(path.unknown);
                reach.evidence.extend(path.evidence);
                reach.published.push(perimeter_model::PublishedPath {
                    chain: path.dnat.chain,
                    rule: path.dnat.text,
                    to: path
                        .to
                        .map(|to| to.to_string())
                        .or_else(|| path.dnat.dnat.map(|t| t.text))
                        .unwrap_or_default(),
                    oif: path.oif,
                    allowed: path.allowed,
                    input_denies: forwarded
                        .difference(&input_allowed)
                        .difference(&input_unknown)
                        .prefixes(version),
                });
            }
            reach.allowed.extend(allowed.prefixes(version));
            for rule in found.accepting_rules {
                if socket
                    && !rule.by_policy
                    && !rule.restricts_source
                    && !reach.unrestricted_accepts.contains(&rule.text)
                {
                    reach.unrestricted_accepts.push(rule.text);
                }
            }
            reach.evidence.extend(found.evidence);
        }
        out.insert((netns_inode, listener.inode), reach);
    }
    out
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The file to `setns` into for a namespace: its /run/netns name, else the ns
/// link of a process living in it.
fn enter_path(
    snapshot: &HostSnapshot,
    proc_root: &Path,
    inode: u64,
    name: &str,
) -> Option<PathBuf> {
    let named = Path::new("/run/netns").join(name);
    if !name.contains(['/', ':']) && netns_inode(&named).ok() == Some(inode) {
        return Some(named);
    }
    snapshot
        .processes
        .values()
        .find(|p| p.netns_inode == Some(inode))
        .map(|p| proc_root.join(p.pid.to_string()).join("ns/net"))
}

/// Package ownership for every listening process and every process running a
/// deleted executable (whose path may still be a package's).
fn assign_packages(snapshot: &mut HostSnapshot, fs_root: &Path) {
    let listening: BTreeSet<u32> = snapshot.listeners.iter().flat_map(Listener::pids).collect();
    let wanted: Vec<u32> = snapshot
        .processes
        .values()
        .filter(|p| listening.contains(&p.pid) || p.exe_deleted)
        .map(|p| p.pid)
        .collect();
    let mut exes: Vec<PathBuf> = wanted
        .iter()
        .filter_map(|pid| snapshot.processes.get(pid)?.exe.clone())
        .collect();
    exes.sort();
    exes.dedup();
    if exes.is_empty() {
        return;
    }
    let (db, problems) = PackageDb::open(fs_root);
    snapshot.problems.extend(problems);
    let (owners, problems) = db.owners(&exes);
    snapshot.problems.extend(problems);
    for pid in wanted {
        if let Some(process) = snapshot.processes.get_mut(&pid) {
            process.ownership = match &process.exe {
                Some(exe) => owners
                    .get(exe)
                    .cloned()
                    .unwrap_or_else(|| Ownership::Unknown("not looked up".into())),
                None => Ownership::Unknown(
                    "the executable could not be read (kernel thread, or not permitted)".into(),
                ),
            };
        }
    }
}

/// Directories a process's executable should never come from, inside a
/// container as on a host.
const SCRATCH_DIRS: [&str; 3] = ["/tmp/", "/var/tmp/", "/dev/shm/"];

/// A containerised process answers to its image, not to the host's package
/// database (which may own an unrelated file at the same path): its
/// ownership is the image's, and an executable the image did not ship is
/// drift: written into the container's writable layer after it started,
/// run from a scratch directory, or deleted since it started.
fn judge_container_processes(snapshot: &mut HostSnapshot) {
    let mut judged = Vec::new();
    for process in snapshot.processes.values() {
        let Some(idx) = snapshot.container_index(process) else {
            continue;
        };
        let container = &snapshot.containers[idx];
        let exe = process.exe.clone();
        let written = match (&container.writable_layer, &exe) {
            (Some(layer), Some(exe)) => exe.strip_prefix("/").is_ok_and(|relative| {
                std::fs::symlink_metadata(layer.join(relative)).is_ok_and(|meta| meta.is_file())
            }),
            _ => false,
        };
        let scratch = exe.as_ref().is_some_and(|exe| {
            let text = exe.to_string_lossy();
            SCRATCH_DIRS.iter().any(|dir| text.starts_with(dir))
        });
        // A reader that judged the container's processes itself (LXC's,
        // against the container's own packages) listed its drift already.
        let listed = container.drift.iter().any(|(pid, _)| *pid == process.pid);
        let drifted = written || scratch || process.exe_deleted || listed;
        judged.push((process.pid, idx, exe, drifted, listed));
    }
    for (pid, idx, exe, drifted, listed) in judged {
        let name = snapshot.containers[idx].name.clone();
        let image = snapshot.containers[idx].image.clone();
        if drifted
            && !listed
            && let Some(exe) = &exe
        {
            snapshot.containers[idx].drift.push((pid, exe.clone()));
        }
        if let Some(process) = snapshot.processes.get_mut(&pid) {
            process.ownership = Ownership::Unknown(if drifted {
                format!("in container {name}: not shipped by its image {image} (drift)")
            } else {
                format!(
                    "in container {name}: shipped by its image {image}, not judged by the host's packages"
                )
            });
        }
    }
}

/// The permission bits of every directory above each process's executable,
/// each directory stat'ed once. Only collected here: which modes make an
/// executable suspicious is `checks::exec`'s judgement, the same one
/// `perimeter watch` uses. A directory that cannot be stat'ed (a deleted
/// executable's removed directory, a path from another mount namespace) is
/// left out.
fn exe_dir_modes<'a>(processes: impl Iterator<Item = &'a Process>) -> BTreeMap<PathBuf, u32> {
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut modes = BTreeMap::new();
    for process in processes {
        let Some(exe) = &process.exe else { continue };
        for dir in exe.ancestors().skip(1) {
            if dir.as_os_str().is_empty() || !seen.insert(dir.to_path_buf()) {
                continue;
            }
            if let Ok(meta) = std::fs::metadata(dir) {
                modes.insert(dir.to_path_buf(), meta.permissions().mode() & 0o7777);
            }
        }
    }
    modes
}

/// How sure we are that a listener might be Redis, and so how long to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum RedisCandidate {
    /// Its owner is unknown (not root) or unpackaged (a tarball build, renamed
    /// or not): ask briefly, and say nothing if it is not Redis.
    Speculative,
    /// On one of Redis's ports: a listener there that is not Redis is worth
    /// saying so.
    RedisPort,
    /// Its process is named like Redis.
    Named,
}

/// One question per namespace, process and port (per namespace and port when
/// no process could be seen): a process listening on the same port on IPv4 and
/// IPv6 is asked once, on its widest bind.
type QuestionKey = (u64, Option<u32>, u16);

/// Whether a listener might be Redis. Redis rewrites its process title, but not
/// `comm` or the executable; a renamed tarball build is unpackaged, and one we
/// cannot see (not root) is unknown: those are asked too, since the only
/// reliable test is the instance's own answer.
fn redis_candidate(process: Option<&Process>, listener: &Listener) -> Option<RedisCandidate> {
    let named = process.is_some_and(|p| {
        p.comm.starts_with("redis")
            || p.name().contains("redis")
            || p.cmdline.first().is_some_and(|c| c.starts_with("redis"))
    });
    if named {
        return Some(RedisCandidate::Named);
    }
    if matches!(listener.port, 6379 | 6380 | 16379) {
        return Some(RedisCandidate::RedisPort);
    }
    match process.map(|p| &p.ownership) {
        None | Some(Ownership::Unpackaged) | Some(Ownership::Unknown(_)) => {
            Some(RedisCandidate::Speculative)
        }
        Some(_) => None,
    }
}

/// A listener to ask, with what its answer will be recorded against.
#[derive(Debug)]
struct RedisQuestion {
    listener: Listener,
    /// The main owner's pid, when one could be seen.
    owner: Option<u32>,
    candidate: RedisCandidate,
    /// Why it could not be asked at all (its namespace cannot be entered).
    unaskable: Option<String>,
}

/// Every TCP listener that might be Redis, once per namespace, process and
/// port. No cap: a Redis behind many silent listeners is asked like any other;
/// [`redis::ask_all`] asks them all at once.
fn redis_questions(
    snapshot: &HostSnapshot,
    enter_paths: &BTreeMap<u64, Option<PathBuf>>,
    current_inode: Option<u64>,
) -> (Vec<RedisQuestion>, Vec<redis::Question>) {
    let mut chosen: BTreeMap<QuestionKey, (&Listener, RedisCandidate)> = BTreeMap::new();
    for listener in snapshot
        .listeners
        .iter()
        .filter(|l| l.protocol == Protocol::Tcp)
    {
        let owner = snapshot.main_owner(listener);
        let Some(candidate) = redis_candidate(owner, listener) else {
            continue;
        };
        let key = (listener.netns.inode, owner.map(|p| p.pid), listener.port);
        let entry = chosen.entry(key).or_insert((listener, candidate));
        // Ask the widest bind; that is the one the findings are about.
        if listener.scope > entry.0.scope {
            entry.0 = listener;
        }
    }
    let mut about = Vec::with_capacity(chosen.len());
    let mut questions = Vec::with_capacity(chosen.len());
    for ((_, owner, _), (listener, candidate)) in chosen {
        let current = Some(listener.netns.inode) == current_inode;
        let enter = enter_paths.get(&listener.netns.inode).cloned().flatten();
        let unaskable = (!current && enter.is_none())
            .then(|| format!("no way into netns {}", listener.netns.name));
        questions.push(redis::Question {
            address: redis::probe_address(listener),
            enter: if current { None } else { enter },
            patience: if candidate == RedisCandidate::Speculative {
                redis::SPECULATIVE_TIMEOUT
            } else {
                redis::TIMEOUT
            },
        });
        about.push(RedisQuestion {
            listener: listener.clone(),
            owner,
            candidate,
            unaskable,
        });
    }
    (about, questions)
}

/// Asks every listener that might be Redis, all at once, and keeps the
/// confirmed Redis instances. A likely candidate (named like Redis, or on a
/// Redis port) that is not Redis, or could not be asked, is a problem, unless
/// its process answered as Redis on another port (a cluster bus, a TLS port);
/// a speculative one is silence.
fn probe_redis(
    about: &[RedisQuestion],
    questions: &[redis::Question],
) -> (Vec<RedisFacts>, Vec<Problem>) {
    let askable: Vec<redis::Question> = about
        .iter()
        .zip(questions)
        .filter(|(q, _)| q.unaskable.is_none())
        .map(|(_, question)| question.clone())
        .collect();
    let mut asked = redis::ask_all(&askable).into_iter();
    let answers: Vec<Result<redis::RedisAnswer, String>> = about
        .iter()
        .map(|q| match &q.unaskable {
            Some(why) => Err(why.clone()),
            None => asked.next().unwrap_or_else(|| Err("not asked".to_owned())),
        })
        .collect();
    let confirmed_processes: BTreeSet<(u64, u32)> = about
        .iter()
        .zip(&answers)
        .filter(|(_, answer)| answer.as_ref().is_ok_and(|a| a.auth.is_confirmed()))
        .filter_map(|(q, _)| Some((q.listener.netns.inode, q.owner?)))
        .collect();
    let mut facts = Vec::new();
    let mut problems = Vec::new();
    for (question, answer) in about.iter().zip(answers) {
        let listener = &question.listener;
        let likely = question.candidate != RedisCandidate::Speculative;
        let answered_elsewhere = question
            .owner
            .is_some_and(|pid| confirmed_processes.contains(&(listener.netns.inode, pid)));
        let why_asked = match question.candidate {
            RedisCandidate::Named => "asked because its process is named like Redis",
            _ => "asked because it listens on a port Redis uses",
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(err) => {
                if likely && !answered_elsewhere {
                    problems.push(
                        Problem::new(listener.endpoint(), format!("could not ask Redis: {err}"))
                            .with_hint("entering another network namespace needs CAP_SYS_ADMIN"),
                    );
                }
                continue;
            }
        };
        if !answer.auth.is_confirmed() {
            if likely && !answered_elsewhere {
                let message = match &answer.auth {
                    RedisAuth::NotRedis(why) => format!("not Redis: {why}"),
                    RedisAuth::Unreachable(why) => why.clone(),
                    _ => String::new(),
                };
                problems.push(Problem::new(listener.endpoint(), message).with_hint(why_asked));
            }
            continue;
        }
        facts.push(RedisFacts {
            endpoint: listener.endpoint(),
            netns: listener.netns.clone(),
            pids: listener.pids(),
            probed: answer.probed,
            auth: answer.auth,
            version: answer.version,
            config_file: answer.config_file,
            protected_mode: answer.protected_mode,
            bind: answer.bind,
        });
    }
    (facts, problems)
}

/// Each sshd that holds a listening socket (the listener, not per-connection
/// children).
fn inspect_sshds(snapshot: &HostSnapshot) -> (Vec<perimeter_model::SshdFacts>, Vec<Problem>) {
    let mut daemons: BTreeMap<u32, Vec<std::net::SocketAddr>> = BTreeMap::new();
    for listener in snapshot
        .listeners
        .iter()
        .filter(|l| l.protocol == Protocol::Tcp)
    {
        if let Some(owner) = snapshot.main_owner(listener)
            && (owner.comm == "sshd" || owner.name() == "sshd")
        {
            daemons
                .entry(owner.pid)
                .or_default()
                .push(std::net::SocketAddr::new(listener.address, listener.port));
        }
    }
    let mut facts = Vec::new();
    let mut problems = Vec::new();
    for (pid, listening) in daemons {
        let Some(process) = snapshot.processes.get(&pid) else {
            continue;
        };
        // With the listening addresses, `Match LocalAddress` / `LocalPort`
        // blocks are evaluated for each socket the daemon serves.
        let (found, mut found_problems) =
            sshd::inspect_sshd_listening(pid, process.exe.as_deref(), &process.cmdline, &listening);
        problems.append(&mut found_problems);
        facts.extend(found);
    }
    (facts, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_every_directory_above_each_executable() {
        // Not in /tmp itself (world-writable), but in the crate's directory,
        // wherever the checkout is.
        let dir = tempfile::tempdir_in(".").expect("tempdir");
        let base = dir.path().canonicalize().expect("canonical tempdir");
        let open = base.join("drop");
        let closed = base.join("safe");
        std::fs::create_dir_all(open.join("bin")).expect("mkdir");
        std::fs::create_dir_all(&closed).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        std::fs::set_permissions(open.join("bin"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        let process = |pid: u32, exe: PathBuf| Process {
            pid,
            ppid: 1,
            comm: "x".into(),
            cmdline: vec![],
            uid: 0,
            account: None,
            exe: Some(exe),
            exe_deleted: false,
            cwd: None,
            cgroup: None,
            unit: None,
            container: None,
            netns_inode: None,
            ownership: Ownership::NotChecked,
        };
        let processes = [
            process(1, open.join("bin/miner")),
            process(2, closed.join("daemon")),
            // Its directory is gone: left out, the ones above it kept.
            process(3, base.join("removed/daemon")),
        ];
        let found = exe_dir_modes(processes.iter());
        assert_eq!(found.get(&open.join("bin")), Some(&0o755));
        assert_eq!(found.get(&open), Some(&0o777));
        assert_eq!(found.get(&closed), Some(&0o755));
        // The sticky bit is kept: the judgement sees the whole mode.
        assert_eq!(found.get(&base), Some(&0o1777));
        assert_eq!(found.get(&base.join("removed")), None);
        // Every directory up to the root, not only the nearest ones.
        for above in base.ancestors() {
            assert!(found.contains_key(above), "{} missing", above.display());
        }
        // Nothing but directories above the executables.
        assert!(!found.contains_key(&open.join("bin/miner")));
    }
}
