//! Builders for hand-made host snapshots in rule tests, and the one way rule
//! tests show what the rules said: [`render`], whose text each family's
//! `check(input, expect![...])` helper compares with its snapshot.

use std::path::PathBuf;

use perimeter_model::{
    Account, HostSnapshot, Listener, Netns, Ownership, PackageRef, Process, Protocol, Scope,
    SocketOwner,
};

pub(crate) fn process(pid: u32, ppid: u32, exe: &str, uid: u32, user: &str) -> Process {
    let name = exe.rsplit('/').next().unwrap_or(exe).to_owned();
    Process {
        pid,
        ppid,
        comm: name.chars().take(15).collect(),
        cmdline: vec![exe.to_owned()],
        uid,
        account: Some(Account {
            name: user.to_owned(),
            uid,
            shell: Some("/usr/sbin/nologin".into()),
            home: None,
        }),
        exe: Some(PathBuf::from(exe)),
        exe_deleted: false,
        cwd: Some(PathBuf::from("/")),
        cgroup: None,
        unit: None,
        container: None,
        netns_inode: Some(1),
        ownership: Ownership::NotChecked,
    }
}

pub(crate) fn packaged(mut process: Process, package: &str) -> Process {
    process.ownership = Ownership::Package(PackageRef {
        manager: "dpkg".into(),
        name: package.into(),
        arch: None,
    });
    process
}

pub(crate) fn listener(protocol: &str, address: &str, port: u16, pids: &[u32]) -> Listener {
    let address = address
        .parse()
        .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    Listener {
        protocol: Protocol::parse(protocol).unwrap_or(Protocol::Tcp),
        address,
        port,
        scope: Scope::of(address),
        v6only: None,
        interface: None,
        inode: u64::from(port) * 10,
        socket_uid: 0,
        netns: Netns {
            inode: 1,
            name: "host".into(),
        },
        owners: pids.iter().map(|&pid| SocketOwner { pid, fd: 3 }).collect(),
    }
}

/// The directories of a stock Debian host with their modes, as the audit
/// would have stat'ed them: the three world-writable ones are sticky (1777),
/// the rest 0755. A test adds its own odd directories to `exe_dir_modes`.
pub(crate) const STOCK_DIR_MODES: &[(&str, u32)] = &[
    ("/dev", 0o755),
    ("/dev/shm", 0o1777),
    ("/home", 0o755),
    ("/opt", 0o755),
    ("/srv", 0o755),
    ("/tmp", 0o1777),
    ("/usr", 0o755),
    ("/usr/bin", 0o755),
    ("/usr/local", 0o755),
    ("/usr/local/bin", 0o755),
    ("/usr/sbin", 0o755),
    ("/var", 0o755),
    ("/var/tmp", 0o1777),
];

pub(crate) fn snapshot(listeners: Vec<Listener>, processes: Vec<Process>) -> HostSnapshot {
    HostSnapshot {
        hostname: "testhost".into(),
        listeners,
        processes: processes.into_iter().map(|p| (p.pid, p)).collect(),
        exe_dir_modes: STOCK_DIR_MODES
            .iter()
            .map(|(dir, mode)| (PathBuf::from(dir), *mode))
            .collect(),
        ..HostSnapshot::default()
    }
}

/// A running Docker container of the daemon in namespace `daemon_netns`,
/// with one address and the image `redis:7`.
pub(crate) fn container(
    id: &str,
    name: &str,
    address: &str,
    daemon_netns: u64,
) -> perimeter_model::Container {
    perimeter_model::Container {
        runtime: "docker".into(),
        id: format!("{id:0<64}"),
        namespace: None,
        pod: None,
        name: name.into(),
        image: "redis:7".into(),
        image_id: "sha256:1".into(),
        image_digest: None,
        running: true,
        pid: None,
        addresses: vec![address.parse().expect("address")],
        privileged: false,
        network_mode: "bridge".into(),
        runtime_socket_mounted: false,
        writable_layer: None,
        drift: Vec::new(),
        published: Vec::new(),
        daemon_netns: Some(daemon_netns),
    }
}

/// Findings as the text rule tests snapshot: per finding a line with its
/// severity, rule and subject, then, indented, its message and each line of
/// evidence (`| `). The remedy is left out: it is advice, mostly one fixed
/// sentence per rule, and would bury the facts under repeated prose. Rules
/// that say nothing render as `no findings`, so a clean case is asserted, not
/// implied.
pub(crate) fn render(findings: &[perimeter_model::Finding]) -> String {
    if findings.is_empty() {
        return "no findings\n".to_owned();
    }
    let mut text = String::new();
    for finding in findings {
        text.push_str(&format!(
            "{} {} {}\n  {}\n",
            finding.severity, finding.rule, finding.subject, finding.message
        ));
        for line in &finding.evidence {
            text.push_str(&format!("  | {line}\n"));
        }
    }
    text
}

/// A port a DNAT of the host namespace forwards with nothing listening on
/// it, added as the collector adds one: where it goes, and the listener it
/// stands for.
pub(crate) fn publish(
    snap: &mut HostSnapshot,
    binding: perimeter_model::Binding,
    to: &str,
    container: Option<usize>,
    reach: perimeter_model::Reach,
) {
    let netns = Netns {
        inode: 1,
        name: "host".into(),
    };
    snap.listeners.push(Listener::published(&binding, netns));
    snap.published.push(perimeter_model::PublishedPort {
        netns: 1,
        binding,
        to: to.to_owned(),
        container,
        reach,
    });
}
