//! Snapshots of every versioned document and every human table, rendered
//! through `perimeter-report` from fixed, hand-built inputs. A change of schema
//! or layout is then a reviewed change of a file under `tests/snapshots/`
//! (`cargo insta review`), never an accident.
//!
//! The JSON documents are compared with what varies from run to run on a
//! real host redacted (times, pids, the scan's seed), the way nextest's
//! redactor does; the human tables are compared as printed, without colour,
//! and once with colour, escapes made visible.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use perimeter_model::{
    Account, AuthState, Finding, FirewallVerdict, HostSnapshot, Interface, Listener, Netns,
    NetnsFacts, Ownership, PackageRef, PortResult, PortState, Problem, Process, Protocol, Reach,
    ScanInfo, Scope, ServiceInfo, Severity, SocketOwner, TlsInfo,
};
use perimeter_report::Style;
use perimeter_report::audit::{ApprovalStatus, AuditView, ChangeLine, Since};
use perimeter_report::diff::{Compared, PortChange, PortSide};
use perimeter_report::inventory::diff::{
    ManifestSide, diff_manifests, diff_to_human, diff_to_json,
};
use perimeter_report::inventory::manifest::{
    ChangedFileEntry, FileAttrs, MANIFEST_SCHEMA, Manifest, PackageEntry, UnitFileEntry,
    UnownedFileEntry, manifest_to_json, parse_manifest,
};
use perimeter_report::inventory::{InventoryView, ProcessEntry, StatsEntry};
use perimeter_report::scan::{StateTotals, to_jsonl_line, to_nmap_xml};
use time::macros::datetime;

/// Snapshot a JSON document with the values that differ between two real
/// runs (times, pids, the scan's seed) redacted. A null stays null: whether a
/// value is there is part of the schema.
fn check_json(name: &str, document: &serde_json::Value) {
    let mut settings = insta::Settings::clone_current();
    let redactions = [
        (".**.taken_at", "[time]"),
        (".**.created_at", "[time]"),
        (".**.started", "[time]"),
        (".**.finished", "[time]"),
        (".**.at", "[time]"),
        (".**.last_seen", "[time]"),
        (".**.pid", "[pid]"),
        (".**.pids", "[pid]"),
        (".**.ppid", "[pid]"),
        (".**.seed", "[seed]"),
    ];
    for (selector, replacement) in redactions {
        settings.add_dynamic_redaction(selector, move |value, _path| {
            if value.is_nil() {
                value
            } else {
                replacement.into()
            }
        });
    }
    settings.bind(|| insta::assert_json_snapshot!(name, document));
}

/// Snapshot human output as printed.
fn check_text(name: &str, text: &str) {
    insta::assert_snapshot!(name, text);
}

/// Coloured output with its escapes made visible, so the snapshot says which
/// words are painted which way.
fn visible_escapes(text: &str) -> String {
    text.replace('\x1b', "\\e")
}

fn colour() -> Style {
    Style { color: true }
}

// ---------------------------------------------------------------------------
// perimeter.audit/1
// ---------------------------------------------------------------------------

fn host_netns() -> Netns {
    Netns {
        inode: 4026531840,
        name: "host".to_owned(),
    }
}

fn lab_netns() -> Netns {
    Netns {
        inode: 4026532000,
        name: "lab".to_owned(),
    }
}

fn listener(
    protocol: Protocol,
    address: &str,
    port: u16,
    netns: Netns,
    inode: u64,
    pids: &[u32],
) -> Listener {
    let address: IpAddr = address.parse().expect("fixture address");
    Listener {
        protocol,
        address,
        port,
        scope: Scope::of(address),
        v6only: address.is_ipv6().then_some(false),
        interface: None,
        inode,
        socket_uid: 0,
        netns,
        owners: pids.iter().map(|&pid| SocketOwner { pid, fd: 6 }).collect(),
    }
}

fn account(name: &str, uid: u32) -> Option<Account> {
    Some(Account {
        name: name.to_owned(),
        uid,
        shell: Some("/usr/sbin/nologin".to_owned()),
        home: None,
    })
}

fn package(name: &str) -> Ownership {
    Ownership::Package(PackageRef {
        manager: "dpkg".to_owned(),
        name: name.to_owned(),
        arch: Some("amd64".to_owned()),
    })
}

fn process(pid: u32, ppid: u32, comm: &str, exe: &str, uid: u32, ownership: Ownership) -> Process {
    Process {
        pid,
        ppid,
        comm: comm.to_owned(),
        cmdline: vec![exe.to_owned()],
        uid,
        account: account(if uid == 0 { "root" } else { comm }, uid),
        exe: Some(PathBuf::from(exe)),
        exe_deleted: false,
        cwd: Some(PathBuf::from("/")),
        cgroup: None,
        unit: None,
        container: None,
        netns_inode: Some(4026531840),
        ownership,
    }
}

fn host_snapshot() -> HostSnapshot {
    let mut redis = process(
        812,
        1,
        "redis-server",
        "/usr/local/bin/redis-server",
        0,
        Ownership::Unpackaged,
    );
    redis.cmdline = ["redis-server", "--requirepass", "hunter2", "--port", "6379"]
        .map(String::from)
        .to_vec();
    redis.unit = Some("redis.service".to_owned());
    let sshd = process(
        640,
        1,
        "sshd",
        "/usr/sbin/sshd",
        0,
        package("openssh-server"),
    );
    let mut sshd_child = sshd.clone();
    sshd_child.pid = 4410;
    sshd_child.ppid = 640;
    let postgres = process(
        700,
        1,
        "postgres",
        "/usr/lib/postgresql/15/bin/postgres",
        112,
        package("postgresql-15"),
    );
    let mut python = process(
        5150,
        1,
        "python3",
        "/usr/bin/python3.11",
        1000,
        Ownership::Unknown("not permitted".to_owned()),
    );
    python.netns_inode = Some(4026532000);
    python.container = Some("docker".to_owned());

    let redis_listener = listener(Protocol::Tcp, "0.0.0.0", 6379, host_netns(), 9001, &[812]);
    let mut reach = BTreeMap::new();
    reach.insert(
        (4026531840, 9001),
        Reach {
            allowed: vec!["10.0.0.0/8".parse().expect("net")],
            unknown: vec![(
                "192.0.2.0/24".parse().expect("net"),
                "matches an ipset perimeter cannot read".to_owned(),
            )],
            unrestricted_accepts: vec!["tcp dport 6379 accept".to_owned()],
            evidence: vec!["chain input policy drop".to_owned()],
            published: Vec::new(),
        },
    );
    HostSnapshot {
        hostname: "web-1".to_owned(),
        namespaces: vec![
            NetnsFacts {
                netns: host_netns(),
                interfaces: vec![
                    Interface {
                        name: "lo".to_owned(),
                        address: "127.0.0.1".parse().expect("address"),
                        prefix_len: 8,
                    },
                    Interface {
                        name: "eth0".to_owned(),
                        address: "198.51.100.7".parse().expect("address"),
                        prefix_len: 24,
                    },
                ],
                firewall: FirewallVerdict::DefaultDeny {
                    evidence: vec!["table inet filter chain input policy drop".to_owned()],
                },
            },
            NetnsFacts {
                netns: lab_netns(),
                interfaces: vec![],
                firewall: FirewallVerdict::Unknown("nft: not found".to_owned()),
            },
        ],
        listeners: vec![
            redis_listener,
            listener(Protocol::Tcp, "::", 22, host_netns(), 9002, &[640, 4410]),
            listener(Protocol::Tcp, "127.0.0.1", 5432, host_netns(), 9003, &[700]),
            listener(
                Protocol::Udp,
                "198.18.0.1",
                5353,
                lab_netns(),
                9004,
                &[5150],
            ),
            listener(Protocol::Tcp, "198.51.100.7", 8443, host_netns(), 9005, &[]),
        ],
        processes: [redis, sshd, sshd_child, postgres, python]
            .into_iter()
            .map(|p| (p.pid, p))
            .collect(),
        redis: vec![],
        sshd: vec![],
        exe_dir_modes: BTreeMap::new(),
        reach,
        containers: Vec::new(),
        published: Vec::new(),
        problems: vec![
            Problem::new("pid 5150", "cannot read /proc/5150/exe: permission denied")
                .with_hint("run as root"),
            Problem::new("netns lab", "no firewall tool in the namespace"),
        ],
    }
}

fn audit_findings() -> Vec<Finding> {
    vec![
        Finding::new(
            "service.redis-noauth",
            Severity::Critical,
            "tcp 0.0.0.0:6379 (redis-server)",
            "Redis answers without a password on every address",
        )
        .with_evidence("PING answered +PONG without AUTH")
        .with_evidence("bound to 0.0.0.0")
        .with_remedy("set requirepass and bind 127.0.0.1"),
        Finding::new(
            "listener.unpackaged",
            Severity::Medium,
            "tcp 0.0.0.0:6379 (redis-server)",
            "the executable belongs to no package",
        )
        .with_remedy("install it from a package"),
        Finding::new(
            "listener.unattributed",
            Severity::Low,
            "tcp 198.51.100.7:8443",
            "no process could be found for the socket",
        ),
    ]
}

fn audit_statuses() -> Vec<ApprovalStatus> {
    vec![
        ApprovalStatus::Unapproved,
        ApprovalStatus::Approved("line 3: remote administration (ops)".to_owned()),
        ApprovalStatus::NotNeeded,
        ApprovalStatus::Expired("line 9: expired 2026-01-31".to_owned()),
        ApprovalStatus::Unapproved,
    ]
}

fn since() -> Since {
    Since {
        audit_id: 41,
        taken_at: datetime!(2026-11-24 12:00:00 UTC),
        changes: vec![
            ChangeLine {
                kind: "listener-appeared".to_owned(),
                severity: Severity::High,
                subject: "tcp 0.0.0.0:6379".to_owned(),
                message: "new listener tcp 0.0.0.0:6379 (redis-server)".to_owned(),
            },
            ChangeLine {
                kind: "finding-resolved".to_owned(),
                severity: Severity::Low,
                subject: "tcp [::]:80".to_owned(),
                message: "listener.world-writable-exe resolved".to_owned(),
            },
        ],
    }
}

fn audit_view<'a>(
    snapshot: &'a HostSnapshot,
    findings: &'a [Finding],
    statuses: &'a [ApprovalStatus],
    since: Option<&'a Since>,
) -> AuditView<'a> {
    AuditView {
        snapshot,
        findings,
        approvals: statuses,
        approvals_file: Some(Path::new("/etc/perimeter/approvals.toml")),
        taken_at: datetime!(2026-11-25 12:07:16.250 UTC),
        socket_source: "netlink",
        perimeter_version: "0.1.0",
        since,
    }
}

#[test]
fn audit_document() {
    let (snapshot, findings, statuses, since) =
        (host_snapshot(), audit_findings(), audit_statuses(), since());
    let view = audit_view(&snapshot, &findings, &statuses, Some(&since));
    let document = perimeter_report::audit::to_json(&view);
    // What `perimeter audit --format json` writes (straight from the serde
    // structs) is the same document.
    let mut written = Vec::new();
    perimeter_report::audit::write_json(&view, &mut written).expect("write");
    let reread: serde_json::Value = serde_json::from_slice(&written).expect("json");
    assert_eq!(reread, document);
    check_json("audit_json", &document);
}

#[test]
fn audit_human() {
    let (snapshot, findings, statuses, since) =
        (host_snapshot(), audit_findings(), audit_statuses(), since());
    let view = audit_view(&snapshot, &findings, &statuses, Some(&since));
    check_text(
        "audit_human",
        &perimeter_report::audit::to_human(&view, Style::plain()),
    );
    check_text(
        "audit_human_colour",
        &visible_escapes(&perimeter_report::audit::to_human(&view, colour())),
    );
}

#[test]
fn audit_of_a_quiet_host() {
    let snapshot = HostSnapshot {
        hostname: "quiet".to_owned(),
        ..HostSnapshot::default()
    };
    let view = audit_view(&snapshot, &[], &[], None);
    check_json("audit_quiet_json", &perimeter_report::audit::to_json(&view));
    check_text(
        "audit_quiet_human",
        &perimeter_report::audit::to_human(&view, Style::plain()),
    );
}

// ---------------------------------------------------------------------------
// perimeter.scan/1, perimeter.scan-result/1 (JSON Lines), nmap XML
// ---------------------------------------------------------------------------

fn scan_info() -> ScanInfo {
    let mut options = BTreeMap::new();
    options.insert("technique".to_owned(), "connect".to_owned());
    options.insert("identify".to_owned(), "true".to_owned());
    options.insert("port_list".to_owned(), "22,443,6379".to_owned());
    ScanInfo {
        id: 12,
        targets: vec!["198.18.0.0/30".to_owned(), "db.lab.example".to_owned()],
        resolved: vec![(
            "db.lab.example".to_owned(),
            vec!["198.18.0.9".parse().expect("address")],
        )],
        excluded: vec!["198.18.0.3".to_owned()],
        ports: "22,443,6379".to_owned(),
        profile: "normal".to_owned(),
        seed: 18_446_744_073_709_551_557,
        options,
        started: datetime!(2026-11-25 12:00:00 UTC),
        finished: Some(datetime!(2026-11-25 12:00:04.700 UTC)),
        complete: true,
        n_probes: 15,
    }
}

fn scan_results() -> Vec<PortResult> {
    let address = |text: &str| -> IpAddr { text.parse().expect("address") };
    let mut redis = ServiceInfo::named("redis");
    redis.version = Some("7.0.15".to_owned());
    redis.auth = AuthState::None;
    redis.banner = Some("-NOAUTH? no: +PONG".to_owned());
    let mut https = ServiceInfo::named("https");
    https.product = Some("nginx".to_owned());
    https.version = Some("1.22.1".to_owned());
    https.auth = AuthState::Unknown;
    https.tls = Some(TlsInfo {
        subject: "CN=web-1.lab.example".to_owned(),
        issuer: "CN=Lab CA".to_owned(),
        not_after: Some(datetime!(2027-03-01 00:00:00 UTC)),
        subject_alt_names: vec!["web-1.lab.example".to_owned()],
    });
    https.extra.insert(
        "http_title".to_owned(),
        "Welcome <to> \"nginx\" & co".to_owned(),
    );
    let mut ssh = ServiceInfo::named("ssh");
    ssh.product = Some("OpenSSH".to_owned());
    ssh.version = Some("9.2p1".to_owned());
    ssh.auth = AuthState::Required;
    vec![
        PortResult {
            address: address("198.18.0.2"),
            port: 6379,
            protocol: Protocol::Tcp,
            state: PortState::Open,
            service: Some(redis),
            findings: vec![
                Finding::new(
                    "exposed.redis-noauth",
                    Severity::Critical,
                    "198.18.0.2:6379",
                    "Redis answers commands without AUTH",
                )
                .with_evidence("PING -> +PONG")
                .with_remedy("require a password and bind to a private address"),
            ],
        },
        PortResult {
            address: address("198.18.0.2"),
            port: 22,
            protocol: Protocol::Tcp,
            state: PortState::Open,
            service: Some(ssh),
            findings: vec![Finding::new(
                "exposed.service",
                Severity::Info,
                "198.18.0.2:22",
                "ssh answers",
            )],
        },
        PortResult {
            address: address("198.18.0.1"),
            port: 443,
            protocol: Protocol::Tcp,
            state: PortState::Open,
            service: Some(https),
            findings: vec![],
        },
        PortResult {
            address: address("198.18.0.1"),
            port: 22,
            protocol: Protocol::Tcp,
            state: PortState::Closed,
            service: None,
            findings: vec![],
        },
        PortResult {
            address: address("198.18.0.9"),
            port: 6379,
            protocol: Protocol::Tcp,
            state: PortState::Filtered,
            service: None,
            findings: vec![],
        },
    ]
}

fn scan_totals() -> StateTotals {
    StateTotals {
        open: 3,
        closed: 10,
        filtered: 2,
        open_filtered: 0,
    }
}

#[test]
fn scan_document() {
    let document = perimeter_report::scan::to_json(&scan_info(), &scan_results(), scan_totals());
    check_json("scan_json", &document);
}

#[test]
fn scan_json_lines() {
    let lines: Vec<serde_json::Value> = scan_results()
        .iter()
        .map(|result| {
            let line = to_jsonl_line(result);
            assert!(!line.contains('\n'), "{line}");
            serde_json::from_str(&line).expect("json")
        })
        .collect();
    check_json("scan_jsonl", &serde_json::Value::Array(lines));
}

#[test]
fn scan_nmap_xml() {
    let xml = to_nmap_xml(
        &scan_info(),
        &scan_results(),
        "perimeter scan -p 22,443,6379 198.18.0.0/30 db.lab.example",
    );
    // The scanner's version is in the document; the snapshot should not
    // change with every release.
    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    check_text(
        "scan_nmap_xml",
        &xml.replacen(&version, "version=\"[version]\"", 1),
    );
}

#[test]
fn scan_human() {
    let (info, results) = (scan_info(), scan_results());
    check_text(
        "scan_human",
        &perimeter_report::scan::to_human(&info, &results, scan_totals(), Style::plain()),
    );
    check_text(
        "scan_human_colour",
        &visible_escapes(&perimeter_report::scan::to_human(
            &info,
            &results,
            scan_totals(),
            colour(),
        )),
    );
    let mut interrupted = info.clone();
    interrupted.complete = false;
    check_text(
        "scan_human_empty_interrupted",
        &perimeter_report::scan::to_human(
            &interrupted,
            &[],
            StateTotals::default(),
            Style::plain(),
        ),
    );
}

// ---------------------------------------------------------------------------
// perimeter.diff/1
// ---------------------------------------------------------------------------

fn compared(id: i64, started: &str) -> Compared {
    Compared {
        id,
        started: started.to_owned(),
        targets: vec!["198.18.0.0/30".to_owned()],
        complete: true,
    }
}

fn port_changes() -> Vec<PortChange> {
    let side = |state: &str, service: Option<&str>, version: Option<&str>| PortSide {
        state: state.to_owned(),
        service: service.map(str::to_owned),
        product: None,
        version: version.map(str::to_owned),
        auth: "unknown".to_owned(),
        tls_subject: None,
        findings: vec![],
    };
    let mut noauth = side("open", Some("redis"), Some("7.0.15"));
    noauth.auth = "none".to_owned();
    noauth.findings = vec!["exposed.redis-noauth".to_owned()];
    vec![
        PortChange {
            kind: "port-closed".to_owned(),
            address: "198.18.0.1".to_owned(),
            port: 80,
            protocol: "tcp".to_owned(),
            severity: Severity::Info,
            rule: None,
            message: "198.18.0.1:80 no longer answers".to_owned(),
            before: Some(side("open", Some("http"), None)),
            after: Some(side("closed", None, None)),
        },
        PortChange {
            kind: "port-opened".to_owned(),
            address: "198.18.0.2".to_owned(),
            port: 6379,
            protocol: "tcp".to_owned(),
            severity: Severity::Critical,
            rule: Some("exposed.redis-noauth".to_owned()),
            message: "198.18.0.2:6379 opened: redis without AUTH".to_owned(),
            before: None,
            after: Some(noauth),
        },
        PortChange {
            kind: "version-changed".to_owned(),
            address: "198.18.0.2".to_owned(),
            port: 22,
            protocol: "tcp".to_owned(),
            severity: Severity::Low,
            rule: None,
            message: "198.18.0.2:22 OpenSSH 9.2p1 -> 9.6p1".to_owned(),
            before: Some(side("open", Some("ssh"), Some("9.2p1"))),
            after: Some(side("open", Some("ssh"), Some("9.6p1"))),
        },
    ]
}

#[test]
fn diff_document() {
    let (before, after) = (
        compared(11, "2026-11-24T12:00:00Z"),
        compared(12, "2026-11-25T12:00:00Z"),
    );
    check_json(
        "diff_json",
        &perimeter_report::diff::to_json(&before, &after, &port_changes()),
    );
}

#[test]
fn diff_human() {
    let (before, after) = (
        compared(11, "2026-11-24T12:00:00Z"),
        compared(12, "2026-11-25T12:00:00Z"),
    );
    check_text(
        "diff_human",
        &perimeter_report::diff::to_human(&before, &after, &port_changes(), Style::plain()),
    );
    check_text(
        "diff_human_colour",
        &visible_escapes(&perimeter_report::diff::to_human(
            &before,
            &after,
            &port_changes(),
            colour(),
        )),
    );
    check_text(
        "diff_human_no_changes",
        &perimeter_report::diff::to_human(&before, &after, &[], Style::plain()),
    );
}

// ---------------------------------------------------------------------------
// perimeter.inventory/1, perimeter.manifest/1, perimeter.manifest-diff/1
// ---------------------------------------------------------------------------

fn attrs(mode: &str, owner: &str, size: u64, sha256: Option<&str>) -> FileAttrs {
    FileAttrs {
        mode: mode.to_owned(),
        uid: if owner == "root" { 0 } else { 1000 },
        gid: if owner == "root" { 0 } else { 1000 },
        owner: Some(owner.to_owned()),
        group: Some(owner.to_owned()),
        size,
        sha256: sha256.map(str::to_owned),
    }
}

const SHA_A: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const SHA_B: &str = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752";

fn manifest(with_pids: bool, verified: bool) -> Manifest {
    Manifest {
        schema: MANIFEST_SCHEMA.to_owned(),
        hostname: "web-1".to_owned(),
        created_at: "2026-11-25T12:00:00Z".to_owned(),
        perimeter_version: "0.1.0".to_owned(),
        root: "/".to_owned(),
        verified,
        packages: vec![
            PackageEntry {
                manager: "dpkg".to_owned(),
                name: "bash".to_owned(),
                version: "5.2.15-2+b2".to_owned(),
                arch: Some("amd64".to_owned()),
                origin: Some("Debian bookworm/main".to_owned()),
                status: "installed".to_owned(),
            },
            PackageEntry {
                manager: "dpkg".to_owned(),
                name: "nodejs".to_owned(),
                version: "20.20.2-1nodesource1".to_owned(),
                arch: Some("amd64".to_owned()),
                origin: None,
                status: "installed".to_owned(),
            },
            PackageEntry {
                manager: "rpm".to_owned(),
                name: "hello".to_owned(),
                version: "2.12-1".to_owned(),
                arch: None,
                origin: Some("Fedora Project".to_owned()),
                status: "half-configured".to_owned(),
            },
        ],
        conffiles: vec![ChangedFileEntry {
            path: "/etc/bash.bashrc".to_owned(),
            listed_as: None,
            package: "bash".to_owned(),
            change: "modified".to_owned(),
            executable: false,
            file: Some(attrs("0644", "root", 2319, Some(SHA_A))),
        }],
        modified_files: verified.then(|| {
            vec![
                ChangedFileEntry {
                    path: "/usr/bin/hello".to_owned(),
                    listed_as: Some("/bin/hello".to_owned()),
                    package: "hello:amd64".to_owned(),
                    change: "modified".to_owned(),
                    executable: true,
                    file: Some(attrs("0755", "root", 31_337, Some(SHA_B))),
                },
                ChangedFileEntry {
                    path: "/usr/share/doc/hello/README".to_owned(),
                    listed_as: None,
                    package: "hello:amd64".to_owned(),
                    change: "missing".to_owned(),
                    executable: false,
                    file: None,
                },
            ]
        }),
        unowned_files: vec![
            UnownedFileEntry {
                path: "/usr/local/bin/redis-server".to_owned(),
                area: "usr-local".to_owned(),
                in_path: true,
                links: vec!["/usr/local/bin/redis".to_owned()],
                pids: if with_pids { vec![812] } else { vec![] },
                file: attrs("0755", "root", 9_000_000, Some(SHA_A)),
            },
            UnownedFileEntry {
                path: "/tmp/.x/miner".to_owned(),
                area: "elsewhere".to_owned(),
                in_path: false,
                links: vec![],
                pids: if with_pids { vec![4242, 4243] } else { vec![] },
                file: attrs("0777", "builder", 400_000, None),
            },
        ],
        units: vec![
            UnitFileEntry {
                path: "/etc/systemd/system/redis.service".to_owned(),
                kind: "unit".to_owned(),
                target: None,
                in_package_dir: false,
                enabled_by: vec!["multi-user.target.wants".to_owned()],
                file: Some(attrs("0644", "root", 412, Some(SHA_B))),
            },
            UnitFileEntry {
                path: "/etc/systemd/system/app.service".to_owned(),
                kind: "linked".to_owned(),
                target: Some("/opt/app/app.service".to_owned()),
                in_package_dir: false,
                enabled_by: vec![],
                file: Some(attrs("0644", "root", 300, None)),
            },
            UnitFileEntry {
                path: "/etc/systemd/system/apt-daily.timer".to_owned(),
                kind: "masked".to_owned(),
                target: Some("/dev/null".to_owned()),
                in_package_dir: false,
                enabled_by: vec![],
                file: None,
            },
            UnitFileEntry {
                path: "/etc/systemd/system/multi-user.target.wants/redis.service".to_owned(),
                kind: "enablement".to_owned(),
                target: Some("/etc/systemd/system/redis.service".to_owned()),
                in_package_dir: false,
                enabled_by: vec![],
                file: None,
            },
        ],
    }
}

fn inventory_parts() -> (Vec<ProcessEntry>, Vec<Finding>, Vec<Problem>, StatsEntry) {
    let processes = vec![
        ProcessEntry {
            pid: 812,
            comm: "redis-server".to_owned(),
            exe: "/usr/local/bin/redis-server".to_owned(),
            uid: 0,
            user: Some("root".to_owned()),
            unit: Some("redis.service".to_owned()),
            ownership: "unpackaged",
            reason: None,
        },
        ProcessEntry {
            pid: 4242,
            comm: "miner".to_owned(),
            exe: "/tmp/.x/miner".to_owned(),
            uid: 1000,
            user: None,
            unit: None,
            ownership: "unknown",
            reason: Some("the executable was deleted".to_owned()),
        },
    ];
    let findings = vec![
        Finding::new(
            "pkg.modified-file",
            Severity::High,
            "/usr/bin/hello",
            "executable code of hello:amd64 no longer matches the package",
        )
        .with_evidence("listed as /bin/hello (diverted)"),
        Finding::new(
            "pkg.unowned-file",
            Severity::Medium,
            "/usr/local/bin/redis-server",
            "executable in /usr/local that no package installed, running now",
        ),
    ];
    let problems = vec![
        Problem::new(
            "/var/lib/dpkg/info/x.md5sums",
            "cannot read: permission denied",
        )
        .with_hint("run as root"),
    ];
    let stats = StatsEntry {
        index_paths: 51_234,
        swept_entries: 4_100,
        swept_executables: 2_300,
        conffiles_checked: 312,
        files_verified: 48_000,
        bytes_hashed: 2_400_000_000,
        packages_without_md5sums: 2,
        checksum_backend: Some("avx512 x16".to_owned()),
        checksum_calibration: vec![
            ("avx512x16".to_owned(), 8_700),
            ("avx2x16".to_owned(), 5_600),
        ],
        workers: 4,
        checksum_order_ms: 3,
        phases_ms: vec![
            ("status".to_owned(), 12),
            ("sweep".to_owned(), 340),
            ("verify".to_owned(), 5_100),
        ],
    };
    (processes, findings, problems, stats)
}

#[test]
fn inventory_document() {
    let manifest = manifest(true, true);
    let (processes, findings, problems, stats) = inventory_parts();
    let view = InventoryView {
        manifest: &manifest,
        processes: &processes,
        findings: &findings,
        problems: &problems,
        stats: &stats,
    };
    check_json(
        "inventory_json",
        &perimeter_report::inventory::to_json(&view),
    );
}

#[test]
fn inventory_human() {
    let manifest = manifest(true, true);
    let (processes, findings, problems, stats) = inventory_parts();
    let view = InventoryView {
        manifest: &manifest,
        processes: &processes,
        findings: &findings,
        problems: &problems,
        stats: &stats,
    };
    check_text(
        "inventory_human",
        &perimeter_report::inventory::to_human(&view, Style::plain(), false),
    );
    check_text(
        "inventory_human_packages",
        &perimeter_report::inventory::to_human(&view, Style::plain(), true),
    );
    check_text(
        "inventory_human_colour",
        &visible_escapes(&perimeter_report::inventory::to_human(
            &view,
            colour(),
            false,
        )),
    );
    let unverified = self::manifest(true, false);
    let view = InventoryView {
        manifest: &unverified,
        processes: &[],
        findings: &[],
        problems: &[],
        stats: &stats,
    };
    check_text(
        "inventory_human_unverified",
        &perimeter_report::inventory::to_human(&view, Style::plain(), false),
    );
}

#[test]
fn manifest_document() {
    let text = manifest_to_json(&manifest(false, true));
    assert!(text.ends_with("}\n"));
    assert_eq!(
        parse_manifest(&text).expect("reads back"),
        manifest(false, true)
    );
    let document: serde_json::Value = serde_json::from_str(&text).expect("json");
    check_json("manifest_json", &document);
}

#[test]
fn manifest_diff_document_and_table() {
    let a = manifest(false, true);
    let mut b = manifest(false, true);
    b.hostname = "web-2".to_owned();
    b.created_at = "2026-11-26T08:30:00Z".to_owned();
    b.packages[0].version = "5.2.15-2+b3".to_owned();
    b.packages.remove(1);
    b.unowned_files[0].file.sha256 = Some(SHA_B.to_owned());
    b.unowned_files[0].file.mode = "0775".to_owned();
    b.unowned_files.remove(1);
    b.units.push(UnitFileEntry {
        path: "/etc/systemd/system/backdoor.service".to_owned(),
        kind: "unit".to_owned(),
        target: None,
        in_package_dir: false,
        enabled_by: vec![],
        file: Some(attrs("0644", "root", 99, Some(SHA_A))),
    });
    let side = |file: &str, manifest: &Manifest| ManifestSide {
        file: file.to_owned(),
        hostname: manifest.hostname.clone(),
        created_at: manifest.created_at.clone(),
    };
    let (side_a, side_b) = (side("a.json", &a), side("b.json", &b));
    let changes = diff_manifests(&a, &b);
    check_json(
        "manifest_diff_json",
        &diff_to_json(&side_a, &side_b, &changes),
    );
    check_text(
        "manifest_diff_human",
        &diff_to_human(&side_a, &side_b, &changes, Style::plain()),
    );
    check_text(
        "manifest_diff_human_same",
        &diff_to_human(&side_a, &side_a, &[], Style::plain()),
    );
}

// ---------------------------------------------------------------------------
// perimeter.watch-event/1 and the watch's human lines
// ---------------------------------------------------------------------------

mod watch {
    use std::path::{Path, PathBuf};
    use std::time::{Duration, SystemTime};

    use perimeter_model::{Listener, Netns, Ownership, PackageRef, Problem, Process};
    use perimeter_report::Style;
    use perimeter_report::audit::ApprovalStatus;
    use perimeter_report::watch::{
        Exec, ListenerChange, ListenerEvent, Started, Stopped, exec_json, exec_line, listener_json,
        listener_line, problem_json, started_json, stopped_json,
    };

    use super::{check_json, check_text, colour, listener, process, visible_escapes};

    fn at(millis: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_000 + millis)
    }

    fn lab() -> Netns {
        Netns {
            inode: 4026532000,
            name: "lab".to_owned(),
        }
    }

    struct Fixture {
        cmdline: Vec<String>,
        exe: PathBuf,
        tmp: PathBuf,
        parent_exe: PathBuf,
        host: Netns,
        unpackaged: Ownership,
        packaged: Ownership,
        unknown: Ownership,
        problems: Vec<Problem>,
    }

    fn fixture() -> Fixture {
        Fixture {
            cmdline: ["/tmp/.x/miner", "--pool-password", "hunter2", "-t", "4"]
                .map(String::from)
                .to_vec(),
            exe: PathBuf::from("/tmp/.x/miner"),
            tmp: PathBuf::from("/tmp"),
            parent_exe: PathBuf::from("/usr/local/bin/redis-server"),
            host: Netns {
                inode: 4026531840,
                name: "host".to_owned(),
            },
            unpackaged: Ownership::Unpackaged,
            packaged: Ownership::Package(PackageRef {
                manager: "dpkg".to_owned(),
                name: "coreutils".to_owned(),
                arch: Some("amd64".to_owned()),
            }),
            unknown: Ownership::Unknown("the process exited before it could be read".to_owned()),
            problems: vec![
                Problem::new(
                    "netns lab",
                    "cannot enter the namespace: operation not permitted",
                )
                .with_hint("run as root"),
            ],
        }
    }

    /// A miner started by a compromised Redis, from a world-writable
    /// directory; then an ordinary packaged exec in another namespace; then
    /// one that exited before it could be read, deleted and superseded.
    fn execs(f: &Fixture) -> Vec<Exec<'_>> {
        let miner = Exec {
            at: at(123),
            source: "netlink-connector",
            pid: 4242,
            ppid: Some(812),
            parent_comm: Some("redis-server"),
            parent_exe: Some(&f.parent_exe),
            uid: Some(0),
            user: Some("root"),
            comm: Some("miner"),
            exe: Some(&f.exe),
            exe_deleted: false,
            exe_unreadable: None,
            cmdline: &f.cmdline,
            cwd: Some(&f.tmp),
            netns: Some(&f.host),
            unit: Some("redis.service"),
            container: None,
            ownership: &f.unpackaged,
            world_writable_dir: Some(&f.tmp),
            flags: vec!["unpackaged", "world-writable"],
            gone: false,
            superseded: false,
        };
        let ls = Exec {
            at: at(2_500),
            source: "proc-poll",
            pid: 5001,
            ppid: Some(5000),
            parent_comm: Some("bash"),
            parent_exe: None,
            uid: Some(1000),
            user: None,
            comm: Some("ls"),
            exe: Some(Path::new("/usr/bin/ls")),
            exe_deleted: false,
            exe_unreadable: None,
            cmdline: &[],
            cwd: None,
            netns: None,
            unit: None,
            container: Some("docker"),
            ownership: &f.packaged,
            world_writable_dir: None,
            flags: vec![],
            gone: false,
            superseded: false,
        };
        let gone = Exec {
            at: at(2_999),
            pid: 4243,
            user: None,
            uid: None,
            exe: None,
            exe_unreadable: Some("No such process"),
            exe_deleted: true,
            cmdline: &[],
            cwd: None,
            ownership: &f.unknown,
            world_writable_dir: None,
            flags: vec!["deleted", "memfd"],
            gone: true,
            superseded: true,
            ..miner_clone(&miner)
        };
        vec![miner, ls, gone]
    }

    fn miner_clone<'a>(exec: &Exec<'a>) -> Exec<'a> {
        Exec {
            flags: exec.flags.clone(),
            ..*exec
        }
    }

    fn owners() -> (Process, Process) {
        let redis = process(
            812,
            1,
            "redis-server",
            "/usr/local/bin/redis-server",
            0,
            Ownership::Unpackaged,
        );
        let mut python = process(
            50,
            1,
            "python3",
            "/usr/bin/python3.11",
            0,
            Ownership::Package(PackageRef {
                manager: "dpkg".to_owned(),
                name: "python3.11-minimal".to_owned(),
                arch: None,
            }),
        );
        python.account = None;
        (redis, python)
    }

    fn listeners() -> (Listener, Listener, Listener) {
        let mut redis = listener(
            perimeter_model::Protocol::Tcp,
            "0.0.0.0",
            6379,
            super::host_netns(),
            9001,
            &[812],
        );
        redis.interface = Some("eth0".to_owned());
        let python = listener(
            perimeter_model::Protocol::Tcp,
            "198.18.0.1",
            8080,
            lab(),
            777,
            &[50],
        );
        let loopback = listener(
            perimeter_model::Protocol::Udp,
            "127.0.0.1",
            5353,
            super::host_netns(),
            778,
            &[],
        );
        (redis, python, loopback)
    }

    fn statuses() -> [ApprovalStatus; 4] {
        [
            ApprovalStatus::Unapproved,
            ApprovalStatus::Approved("line 3: the cache (ops)".to_owned()),
            ApprovalStatus::Expired("line 9: expired 2026-01-31".to_owned()),
            ApprovalStatus::NotNeeded,
        ]
    }

    fn listener_events<'a>(
        (redis, python, loopback): &'a (Listener, Listener, Listener),
        (redis_owner, python_owner): &'a (Process, Process),
        statuses: &'a [ApprovalStatus; 4],
    ) -> Vec<ListenerEvent<'a>> {
        let [unapproved, approved, expired, not_needed] = statuses;
        let event = |change, millis, listener, owner, approval| ListenerEvent {
            change,
            at: at(millis),
            listener,
            owner,
            approval,
        };
        vec![
            event(
                ListenerChange::Appeared,
                4_000,
                redis,
                Some(redis_owner),
                Some(unapproved),
            ),
            event(
                ListenerChange::Appeared,
                4_001,
                python,
                Some(python_owner),
                Some(approved),
            ),
            event(
                ListenerChange::Appeared,
                4_002,
                python,
                Some(python_owner),
                Some(expired),
            ),
            event(
                ListenerChange::Appeared,
                4_003,
                loopback,
                None,
                Some(not_needed),
            ),
            event(ListenerChange::Gone, 6_000, redis, Some(redis_owner), None),
            event(ListenerChange::Gone, 6_001, loopback, None, None),
        ]
    }

    #[test]
    fn watch_events() {
        let f = fixture();
        let (listeners, owners, statuses) = (listeners(), owners(), statuses());
        let approvals = Path::new("/etc/perimeter/approvals.toml");
        let mut lines = vec![
            started_json(&Started {
                at: at(0),
                pid: 31337,
                exec_source: "proc-poll",
                exec_source_note: Some("the process events connector needs CAP_NET_ADMIN"),
                poll_interval: Some(Duration::from_millis(100)),
                entered_initial_netns: false,
                interval: Duration::from_secs(2),
                namespaces: vec!["host", "lab"],
                n_listeners: 14,
                approvals: Some(approvals),
                problems: &f.problems,
            }),
            problem_json(at(1_000), &f.problems[0]),
        ];
        lines.extend(execs(&f).iter().map(exec_json));
        lines.extend(
            listener_events(&listeners, &owners, &statuses)
                .iter()
                .map(listener_json),
        );
        lines.push(stopped_json(&Stopped {
            at: at(10_000),
            reason: "signal",
            elapsed: Duration::from_micros(10_000_456),
            n_execs: 3,
            n_suspicious_execs: 2,
            n_gone_execs: 1,
            n_listeners_appeared: 4,
            n_listeners_gone: 2,
            n_lost: 0,
        }));
        let objects: Vec<serde_json::Value> = lines
            .into_iter()
            .map(|line| {
                let line = line.expect("serialises");
                assert!(!line.contains('\n'), "{line}");
                assert!(!line.contains("hunter2"), "{line}");
                serde_json::from_str(&line).expect("json")
            })
            .collect();
        assert!(
            objects
                .iter()
                .all(|object| object["schema"] == "perimeter.watch-event/1")
        );
        check_json("watch_events_jsonl", &serde_json::Value::Array(objects));
    }

    fn human_lines(style: Style) -> String {
        let f = fixture();
        let (listeners, owners, statuses) = (listeners(), owners(), statuses());
        let mut lines: Vec<String> = execs(&f).iter().map(|e| exec_line(e, style)).collect();
        lines.extend(
            listener_events(&listeners, &owners, &statuses)
                .iter()
                .map(|e| listener_line(e, style)),
        );
        lines.join("\n") + "\n"
    }

    #[test]
    fn watch_lines() {
        check_text("watch_human", &human_lines(Style::plain()));
        check_text(
            "watch_human_colour",
            &visible_escapes(&human_lines(colour())),
        );
    }
}

// ---------------------------------------------------------------------------
// perimeter verify: perimeter.scan/1 with its `verify` member
// ---------------------------------------------------------------------------

#[test]
fn verify_document_and_report() {
    use perimeter_report::scan::{Verified, verify_to_human, verify_to_json};
    let (info, results) = (scan_info(), scan_results());
    let vantage: Vec<IpAddr> = vec![
        "198.51.100.7".parse().expect("address"),
        "2001:db8::7".parse().expect("address"),
    ];
    let verified = Verified {
        inventory: Some(Path::new("/etc/perimeter/perimeter.toml")),
        vantage: &vantage,
        environments: vec!["prod", "lab"],
    };
    check_json(
        "verify_json",
        &verify_to_json(&info, &results, scan_totals(), &verified),
    );
    check_text(
        "verify_human",
        &verify_to_human(&info, &results, scan_totals(), &vantage, Style::plain()),
    );
    check_text(
        "verify_human_unknown_vantage",
        &verify_to_human(&info, &[], StateTotals::default(), &[], Style::plain()),
    );
}

// ---------------------------------------------------------------------------
// perimeter.scans/1, perimeter.audits/1, perimeter.audit-diff/1
// ---------------------------------------------------------------------------

mod history {
    use std::path::Path;

    use perimeter_model::Severity;
    use perimeter_report::history::{
        AuditRef, StoredAudit, StoredScan, audit_diff_to_human, audit_diff_to_json,
        audits_to_human, audits_to_json, scans_to_human, scans_to_json,
    };
    use time::macros::datetime;

    use super::{check_json, check_text, scan_info, since};

    const DB: &str = "/root/.local/share/perimeter/perimeter.db";

    #[test]
    fn stored_scans() {
        let complete = scan_info();
        let mut interrupted = scan_info();
        interrupted.id = 13;
        interrupted.complete = false;
        interrupted.profile = "stealth".to_owned();
        let mut running = scan_info();
        running.id = 14;
        running.complete = false;
        running.finished = None;
        running.targets = vec!["198.18.0.0/24".to_owned()];
        running.ports = "top:100".to_owned();
        let scans = [
            StoredScan {
                info: &running,
                status: "running",
                n_results: 0,
                n_open: 0,
            },
            StoredScan {
                info: &interrupted,
                status: "incomplete",
                n_results: 7,
                n_open: 2,
            },
            StoredScan {
                info: &complete,
                status: "complete",
                n_results: 15,
                n_open: 3,
            },
        ];
        check_json("scans_json", &scans_to_json(&scans));
        check_text("scans_human", &scans_to_human(&scans, Path::new(DB)));
        check_text("scans_human_none", &scans_to_human(&[], Path::new(DB)));
    }

    #[test]
    fn stored_audits() {
        let audits = [
            StoredAudit {
                id: 42,
                host: "web-1",
                taken_at: datetime!(2026-11-25 12:07:16 UTC),
                n_listeners: 5,
                n_findings: 3,
                worst_severity: Some(Severity::Critical),
            },
            StoredAudit {
                id: 41,
                host: "web-1",
                taken_at: datetime!(2026-11-24 12:00:00 UTC),
                n_listeners: 4,
                n_findings: 0,
                worst_severity: None,
            },
        ];
        check_json("audits_json", &audits_to_json(&audits));
        check_text("audits_human", &audits_to_human(&audits, Path::new(DB)));
        check_text("audits_human_none", &audits_to_human(&[], Path::new(DB)));
    }

    #[test]
    fn audit_to_audit() {
        let changes = since().changes;
        let before = AuditRef {
            id: 41,
            taken_at: datetime!(2026-11-24 12:00:00 UTC),
        };
        let after = AuditRef {
            id: 42,
            taken_at: datetime!(2026-11-25 12:07:16 UTC),
        };
        check_json(
            "audit_diff_json",
            &audit_diff_to_json("web-1", before, after, &changes),
        );
        check_text(
            "audit_diff_human",
            &audit_diff_to_human(before, after, &changes),
        );
    }
}

// ---------------------------------------------------------------------------
// perimeter.envs/1
// ---------------------------------------------------------------------------

#[test]
fn environments_document_and_lines() {
    use perimeter_model::{EnvKind, Environment};
    use perimeter_report::envs::{EnvironmentSeen, SeenHost, to_human, to_json};
    let net = |text: &str| text.parse().expect("prefix");
    let prod = Environment {
        name: "prod".to_owned(),
        kind: EnvKind::Prod,
        ranges: vec![net("198.51.100.0/24"), net("2001:db8:1::/64")],
        hosts: vec!["www.example.org".to_owned()],
        public_ports: vec![80, 443],
        allow_from: vec![net("192.0.2.0/24")],
        owner: Some("web team".to_owned()),
        expires: None,
    };
    let scratch = Environment {
        name: "scratch".to_owned(),
        kind: EnvKind::Experiment,
        ranges: vec![net("198.18.0.0/24")],
        hosts: vec![],
        public_ports: vec![],
        allow_from: vec![],
        owner: None,
        expires: Some(time::macros::date!(2026 - 11 - 01)),
    };
    let dev = Environment {
        name: "dev".to_owned(),
        kind: EnvKind::Dev,
        ranges: vec![net("10.20.0.0/16")],
        hosts: vec![],
        public_ports: vec![],
        allow_from: vec![net("10.0.0.0/8")],
        owner: Some("platform".to_owned()),
        expires: Some(time::macros::date!(2027 - 01 - 15)),
    };
    // Open ports in the order scans found them; the human lines sort them.
    let (web_ports, lab_ports) = ([443, 22, 80], [6379]);
    let environments = [
        EnvironmentSeen {
            environment: &prod,
            days_overdue: None,
            hosts: vec![SeenHost {
                address: "198.51.100.7".parse().expect("address"),
                last_seen: Some(datetime!(2026-11-25 12:00:00 UTC)),
                open_ports: &web_ports,
            }],
        },
        EnvironmentSeen {
            environment: &scratch,
            days_overdue: Some(24),
            hosts: vec![SeenHost {
                address: "198.18.0.2".parse().expect("address"),
                last_seen: Some(datetime!(2026-11-24 08:00:00 UTC)),
                open_ports: &lab_ports,
            }],
        },
        EnvironmentSeen {
            environment: &dev,
            days_overdue: Some(-51),
            hosts: vec![],
        },
    ];
    check_json(
        "envs_json",
        &to_json(Some(Path::new("perimeter.toml")), &environments),
    );
    check_text("envs_human", &to_human(&environments));
}
