//! `collect_listeners` against real sockets: ones this test opens on loopback,
//! and one inside a network namespace the test creates (and removes) itself.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrIn6, bind, listen, setsockopt, socket,
    sockopt,
};
use perimeter_host::listeners::{ListenerFacts, ListenerOptions, SocketSource, collect_listeners};
use perimeter_host::sockets::{RawSocket, dump_netlink, read_proc_net};
use perimeter_model::{Listener, Protocol, Scope, SocketOwner};
use perimeter_testlab::{Requirement, require};

fn inode_of(fd: &impl AsRawFd) -> u64 {
    std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .expect("stat own descriptor")
        .ino()
}

fn owner_of(fd: &impl AsRawFd) -> SocketOwner {
    SocketOwner {
        pid: std::process::id(),
        fd: u32::try_from(fd.as_raw_fd()).expect("descriptors are non-negative"),
    }
}

fn find(facts: &ListenerFacts, inode: u64) -> &Listener {
    facts
        .listeners
        .iter()
        .find(|listener| listener.inode == inode)
        .unwrap_or_else(|| panic!("no listener with inode {inode} in {:#?}", facts.listeners))
}

/// The holders of a listener in this process, after checking that any other
/// holder is a child of ours: while another test spawns a process, the forked
/// child holds copies of all our descriptors until it execs, and a walk that
/// lands in that window rightly lists it too.
fn own_holders(facts: &ListenerFacts, listener: &Listener) -> Vec<SocketOwner> {
    let me = std::process::id();
    for owner in listener.owners.iter().filter(|owner| owner.pid != me) {
        if let Some(process) = facts.processes.get(&owner.pid) {
            assert_eq!(process.ppid, me, "foreign holder {owner:?} of {listener:?}");
        }
    }
    listener
        .owners
        .iter()
        .copied()
        .filter(|owner| owner.pid == me)
        .collect()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A `[::]` TCP listener on an ephemeral port with IPV6_V6ONLY set as asked.
fn wildcard_v6_listener(v6only: bool) -> TcpListener {
    let fd: OwnedFd = socket(
        AddressFamily::Inet6,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("ipv6 socket");
    setsockopt(&fd, sockopt::Ipv6V6Only, &v6only).expect("set IPV6_V6ONLY");
    let any = SockaddrIn6::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0));
    bind(fd.as_raw_fd(), &any).expect("bind [::]:0");
    listen(&fd, Backlog::new(16).expect("backlog")).expect("listen");
    TcpListener::from(fd)
}

#[test]
fn finds_own_loopback_and_wildcard_listeners() {
    let tcp4 = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let tcp6 = TcpListener::bind("[::1]:0").expect("bind ::1");
    let udp4 = UdpSocket::bind("127.0.0.1:0").expect("bind udp 127.0.0.1");
    let dual = wildcard_v6_listener(false);
    let v6_only = wildcard_v6_listener(true);
    // A connected UDP socket is not a listener.
    let connected = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    connected
        .connect(udp4.local_addr().expect("udp address"))
        .expect("connect udp");

    let facts = collect_listeners(&ListenerOptions::default());
    assert_eq!(facts.source, SocketSource::Netlink, "{:#?}", facts.problems);

    let listener = find(&facts, inode_of(&tcp4));
    assert_eq!(listener.protocol, Protocol::Tcp);
    assert_eq!(
        SocketAddr::new(listener.address, listener.port),
        tcp4.local_addr().expect("address")
    );
    assert_eq!(listener.scope, Scope::Loopback);
    assert_eq!(listener.v6only, None);
    assert_eq!(listener.socket_uid, nix::unistd::geteuid().as_raw());
    assert_eq!(own_holders(&facts, listener), vec![owner_of(&tcp4)]);

    let listener = find(&facts, inode_of(&tcp6));
    assert_eq!(
        SocketAddr::new(listener.address, listener.port),
        tcp6.local_addr().expect("address")
    );
    assert_eq!(own_holders(&facts, listener), vec![owner_of(&tcp6)]);

    let listener = find(&facts, inode_of(&udp4));
    assert_eq!(listener.protocol, Protocol::Udp);
    assert_eq!(listener.port, udp4.local_addr().expect("address").port());
    assert_eq!(own_holders(&facts, listener), vec![owner_of(&udp4)]);

    let listener = find(&facts, inode_of(&dual));
    assert_eq!(listener.scope, Scope::Wildcard);
    assert_eq!(listener.v6only, Some(false));
    assert!(listener.accepts_ipv4());
    assert_eq!(own_holders(&facts, listener), vec![owner_of(&dual)]);

    let listener = find(&facts, inode_of(&v6_only));
    assert_eq!(listener.v6only, Some(true));
    assert!(!listener.accepts_ipv4());

    let connected_inode = inode_of(&connected);
    assert!(facts.listeners.iter().all(|l| l.inode != connected_inode));

    // Our own process is among the processes, with its executable.
    let me = facts
        .processes
        .get(&std::process::id())
        .expect("own process listed");
    assert_eq!(me.exe, std::env::current_exe().ok());
    assert!(me.account.is_some());

    // Listeners are sorted by namespace, protocol, port, address.
    let keys: Vec<_> = facts
        .listeners
        .iter()
        .map(|l| (&l.netns, l.protocol, l.port, l.address))
        .collect();
    assert!(keys.windows(2).all(|pair| pair[0] <= pair[1]));
    // Only our own namespace without all_netns.
    assert_eq!(facts.namespaces.len(), 1);
    if is_root() {
        assert_eq!(facts.namespaces[0].0.name, "host");
    }
}

fn key(socket: &RawSocket) -> (Protocol, std::net::IpAddr, u16, u64) {
    (socket.protocol, socket.address, socket.port, socket.inode)
}

#[test]
fn netlink_and_proc_fallback_agree() {
    let tcp4 = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let dual = wildcard_v6_listener(false);
    let udp6 = UdpSocket::bind("[::1]:0").expect("bind udp ::1");

    // Other processes on the host open and close sockets while this runs:
    // a socket present in both netlink dumps was open throughout, so the /proc
    // read in between must list it too.
    let before: BTreeSet<_> = dump_netlink()
        .expect("netlink dump")
        .iter()
        .map(key)
        .collect();
    let (proc_sockets, problems) = read_proc_net(Path::new("/proc/thread-self/net"));
    let after: BTreeSet<_> = dump_netlink()
        .expect("netlink dump")
        .iter()
        .map(key)
        .collect();
    assert_eq!(problems, vec![]);
    let from_proc: BTreeSet<_> = proc_sockets.iter().map(key).collect();
    let stable: BTreeSet<_> = before.intersection(&after).copied().collect();
    let missing: Vec<_> = stable.difference(&from_proc).collect();
    assert!(
        missing.is_empty(),
        "netlink saw, /proc/net did not: {missing:?}"
    );
    for inode in [inode_of(&tcp4), inode_of(&dual), inode_of(&udp6)] {
        assert!(
            stable.iter().any(|k| k.3 == inode),
            "own socket {inode} missing"
        );
        let from_proc = proc_sockets
            .iter()
            .find(|s| s.inode == inode)
            .expect("own socket in /proc/net");
        // The fallback cannot tell IPV6_V6ONLY: it says so instead of guessing.
        assert_eq!(from_proc.v6only, None);
    }

    // Through collect_listeners, the forced fallback attributes the same owners.
    let facts = collect_listeners(&ListenerOptions {
        force_proc_fallback: true,
        ..ListenerOptions::default()
    });
    assert_eq!(facts.source, SocketSource::ProcNet);
    assert_eq!(
        own_holders(&facts, find(&facts, inode_of(&tcp4))),
        vec![owner_of(&tcp4)]
    );
    let listener = find(&facts, inode_of(&udp6));
    assert_eq!(listener.protocol, Protocol::Udp);
    assert_eq!(own_holders(&facts, listener), vec![owner_of(&udp6)]);
    assert_eq!(find(&facts, inode_of(&dual)).v6only, None);
}

#[test]
fn inherited_socket_lists_every_holder() {
    // A pre-forked server: a child holds the same listening socket (here as
    // its stdin), and both holders are listed, sorted by pid.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let inherited = listener.try_clone().expect("dup listener");
    let mut child = Command::new("sleep")
        .arg("60")
        .stdin(Stdio::from(OwnedFd::from(inherited)))
        .spawn()
        .expect("spawn sleep");
    let child_pid = child.id();
    let _guard = KillOnDrop(&mut child);
    // `spawn` returns once the child is forked; its new program's arguments
    // appear a moment later, when exec has run.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read(format!("/proc/{child_pid}/cmdline"))
        .map_or(true, |c| !c.starts_with(b"sleep"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the child never ran sleep"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }

    let facts = collect_listeners(&ListenerOptions::default());
    let found = find(&facts, inode_of(&listener));
    assert_eq!(own_holders(&facts, found), vec![owner_of(&listener)]);
    let child_holders: Vec<_> = found.owners.iter().filter(|o| o.pid == child_pid).collect();
    assert_eq!(
        child_holders,
        vec![&SocketOwner {
            pid: child_pid,
            fd: 0
        }]
    );
    assert!(found.owners.is_sorted());
    let sleeper = facts.processes.get(&child_pid).expect("child listed");
    assert_eq!(sleeper.ppid, std::process::id());
    assert_eq!(sleeper.cmdline, vec!["sleep", "60"]);
}

struct KillOnDrop<'a>(&'a mut Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes the namespace (and the process inside it) when the test ends,
/// whether it passed or not.
struct LabNamespace {
    name: String,
    child: Option<Child>,
}

impl Drop for LabNamespace {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {args:?} failed");
}

#[test]
fn all_netns_sees_a_listener_inside_a_lab_namespace() {
    if !require(Requirement::Netns) || !require(Requirement::Tool("/usr/bin/python3")) {
        return;
    }
    let name = format!("perimeter-t-{}", std::process::id());
    ip(&["netns", "add", &name]);
    let mut lab = LabNamespace {
        name: name.clone(),
        child: None,
    };
    ip(&["-n", &name, "link", "set", "lo", "up"]);
    ip(&["-n", &name, "addr", "add", "198.18.7.1/32", "dev", "lo"]);
    let script = "import socket, sys, time\n\
                  s = socket.socket()\n\
                  s.bind(('198.18.7.1', 0))\n\
                  s.listen()\n\
                  print(s.getsockname()[1], flush=True)\n\
                  time.sleep(120)\n";
    let mut child = Command::new("ip")
        .args(["netns", "exec", &name, "/usr/bin/python3", "-c", script])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn python in the namespace");
    let stdout = child.stdout.take().expect("piped stdout");
    let child_pid = child.id();
    lab.child = Some(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read port from the lab listener");
    let port: u16 = line
        .trim()
        .parse()
        .expect("the lab listener printed its port");

    let is_lab = |l: &&Listener| l.address.to_string() == "198.18.7.1" && l.port == port;

    let default_run = collect_listeners(&ListenerOptions::default());
    assert!(!default_run.listeners.iter().any(|l| is_lab(&l)));

    for force_proc_fallback in [false, true] {
        let facts = collect_listeners(&ListenerOptions {
            all_netns: true,
            force_proc_fallback,
            ..ListenerOptions::default()
        });
        let listener = facts
            .listeners
            .iter()
            .find(is_lab)
            .unwrap_or_else(|| panic!("lab listener missing: {:#?}", facts.problems));
        assert_eq!(listener.netns.name, name);
        assert_eq!(listener.scope, Scope::Public);
        assert_eq!(listener.pids(), vec![child_pid]);
        if !force_proc_fallback {
            assert_eq!(listener.v6only, None);
            assert_eq!(facts.source, SocketSource::Netlink, "{:#?}", facts.problems);
        }
        let (_, interfaces) = facts
            .namespaces
            .iter()
            .find(|(netns, _)| netns.name == name)
            .expect("lab namespace listed");
        assert!(
            interfaces.iter().any(|i| i.name == "lo"
                && i.address.to_string() == "198.18.7.1"
                && i.prefix_len == 32),
            "{interfaces:?}"
        );
        assert!(
            facts
                .namespaces
                .iter()
                .any(|(netns, _)| netns.name == "host")
        );
    }
}

/// The environment variable that tells the unprivileged child which socket
/// inode to look for.
const CHILD_INODE: &str = "PERIMETER_TEST_ROOT_SOCKET_INODE";

#[test]
fn unprivileged_run_keeps_root_sockets_and_names_the_missing_capabilities() {
    if !require(Requirement::Root) || !require(Requirement::Tool("setpriv")) {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let exe = std::env::current_exe().expect("test binary path");
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&exe)
        .args(["--exact", "unprivileged_child", "--ignored", "--nocapture"])
        .env(CHILD_INODE, inode_of(&listener).to_string())
        .output()
        .expect("run the test binary as nobody");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "child did not run:\n{stdout}");
}

/// Runs as uid 65534, started by the test above.
#[test]
#[ignore = "run as an unprivileged child by unprivileged_run_keeps_root_sockets_and_names_the_missing_capabilities"]
fn unprivileged_child() {
    let inode: u64 = std::env::var(CHILD_INODE)
        .expect("started by the parent test")
        .parse()
        .expect("inode");
    assert!(!is_root());
    let facts = collect_listeners(&ListenerOptions::default());
    // Root's socket is still listed, with no owner rather than dropped.
    let listener = find(&facts, inode);
    assert!(listener.owners.is_empty());
    assert_eq!(listener.socket_uid, 0);
    let messages: Vec<String> = facts
        .problems
        .iter()
        .map(|p| format!("{}: {}", p.subject, p.message))
        .collect();
    let unattributed = facts
        .problems
        .iter()
        .find(|p| p.subject == "listening sockets")
        .unwrap_or_else(|| panic!("no unattributed-sockets problem in {messages:#?}"));
    assert!(
        unattributed
            .message
            .contains("could not be traced to a process")
    );
    assert!(
        unattributed.message.contains("needs CAP_SYS_PTRACE"),
        "{}",
        unattributed.message
    );
    let walk = facts
        .problems
        .iter()
        .find(|p| p.subject == "/proc")
        .unwrap_or_else(|| panic!("no /proc permission problem in {messages:#?}"));
    assert!(
        walk.message.contains("processes could not be listed"),
        "{}",
        walk.message
    );
    assert!(
        walk.message
            .ends_with("(needs CAP_DAC_READ_SEARCH; needs CAP_SYS_PTRACE)"),
        "{}",
        walk.message
    );
    // The child's own process is still fully visible.
    assert!(
        facts
            .processes
            .get(&std::process::id())
            .is_some_and(|p| p.exe.is_some())
    );
    eprintln!("{messages:#?}");
}
