//! Measures what recording an audit costs, the way `perimeter audit` does it
//! (load the previous audit of the host, record the new one, diff them):
//! `cargo run --release -p perimeter-store --example audit_history
//! [N_PROCESSES] [N_AUDITS] [whole]` (200 processes of 20 listeners each, the audit
//! benchmark's host, and 20 audits by default). Each audit after the first
//! finds the same host with one process restarted (new pid, new sockets),
//! so something always changes. Writes to a temporary file on the same file
//! system as `$TMPDIR`, so the figures include the file system's work.
//!
//! Each step is given in wall milliseconds and, in brackets, in milliseconds
//! this thread spent on a CPU (`/proc/thread-self/schedstat`), which a busy
//! shared machine disturbs less.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use perimeter_model::{
    Account, Finding, HostSnapshot, Listener, Netns, Ownership, PackageRef, Problem, Process,
    Protocol, Scope, Severity, SocketOwner,
};
use perimeter_store::{AuditRecord, SqliteStore, Store, diff_audits};
use time::OffsetDateTime;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const LISTENERS_PER_PROCESS: u32 = 20;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let n_processes: u32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(200);
    let n_audits: u32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(20);
    // `whole`: load the previous audit, record, diff (the way before
    // `record_audit_since`); otherwise `record_audit_since`.
    let whole = args.next().as_deref() == Some("whole");
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("history.db");
    println!(
        "{n_processes} processes x {LISTENERS_PER_PROCESS} listeners, {n_audits} audits; database in {}",
        dir.path().display()
    );
    println!(
        "{:>5}  {:>14}  {:>14}  {:>14}  {:>14}  {:>8}",
        "audit", "open ms", "record ms", "then ms", "total ms", "file KiB"
    );
    let mut totals = Vec::new();
    for audit_idx in 0..n_audits {
        let snapshot = snapshot(n_processes, audit_idx);
        let findings = findings(&snapshot);
        let taken_at = OffsetDateTime::now_utc();
        let start = Instant::now();
        let cpu_start = cpu_ns();
        let mut store = SqliteStore::open(&path)?;
        let opened = (start.elapsed(), cpu_ns() - cpu_start);
        // What `perimeter audit` did before recording answered the diff:
        // load the previous audit, record, diff it with this one.
        let (recorded, n_changes) = if whole {
            let previous = store.previous_audit("bench")?;
            let loaded = (start.elapsed(), cpu_ns() - cpu_start);
            store.record_audit("bench", taken_at, &snapshot, &findings)?;
            let n_changes = previous.map_or(0, |previous| {
                let current = AuditRecord::from_snapshot("bench", taken_at, &snapshot, &findings);
                diff_audits(&previous, &current).len()
            });
            (loaded, n_changes)
        } else {
            let recorded = store.record_audit_since("bench", taken_at, &snapshot, &findings)?;
            let n_changes = recorded.since.map_or(0, |since| since.changes.len());
            ((start.elapsed(), cpu_ns() - cpu_start), n_changes)
        };
        drop(store);
        let total = (start.elapsed(), cpu_ns() - cpu_start);
        let step = |(wall, cpu): (Duration, u64), (wall0, cpu0): (Duration, u64)| {
            format!("{:.2} [{:.2}]", ms(wall - wall0), (cpu - cpu0) as f64 / 1e6)
        };
        let zero = (Duration::ZERO, 0);
        let size = std::fs::metadata(&path)?.len()
            + std::fs::metadata(dir.path().join("history.db-wal")).map_or(0, |m| m.len());
        println!(
            "{audit_idx:>5}  {:>14}  {:>14}  {:>14}  {:>14}  {:>8}  ({n_changes} changes)",
            step(opened, zero),
            step(recorded, opened),
            step(total, recorded),
            step(total, zero),
            size / 1024
        );
        totals.push(total.0);
    }
    totals.sort();
    if let Some(median) = totals.get(totals.len() / 2) {
        println!("median total: {:.2} ms", ms(*median));
    }
    println!("peak RSS: {} KiB", peak_rss_kib().unwrap_or(0));
    Ok(())
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// Nanoseconds this thread has run on a CPU.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The benchmark host: half the processes as nobody; process 0 restarts
/// (a new pid and new socket inodes) before every audit.
fn snapshot(n_processes: u32, audit_idx: u32) -> HostSnapshot {
    let netns = Netns {
        inode: 4_026_532_000,
        name: "perimeter-bench-audit".into(),
    };
    let mut processes = BTreeMap::new();
    let mut listeners = Vec::new();
    for proc_idx in 0..n_processes {
        let restarted = if proc_idx == 0 { audit_idx } else { 0 };
        let pid = 10_000 + proc_idx * 7 + restarted * 100_000;
        let uid = if proc_idx % 2 == 0 { 65534 } else { 0 };
        processes.insert(
            pid,
            Process {
                pid,
                ppid: 9_999,
                comm: "python3".into(),
                cmdline: vec!["/usr/bin/python3".into(), "load.py".into()],
                uid,
                account: Some(Account {
                    name: if uid == 0 { "root" } else { "nobody" }.into(),
                    uid,
                    shell: None,
                    home: None,
                }),
                exe: Some(PathBuf::from("/usr/bin/python3.11")),
                exe_deleted: false,
                cwd: None,
                cgroup: Some("/user.slice/session-1.scope".into()),
                unit: Some("session-1.scope".into()),
                container: None,
                netns_inode: Some(netns.inode),
                ownership: Ownership::Package(PackageRef {
                    manager: "dpkg".into(),
                    name: "python3.11-minimal".into(),
                    arch: Some("amd64".into()),
                }),
            },
        );
        for socket_idx in 0..LISTENERS_PER_PROCESS {
            let (address, scope) = if socket_idx < 17 {
                (IpAddr::V4(Ipv4Addr::LOCALHOST), Scope::Loopback)
            } else {
                (IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)), Scope::Public)
            };
            listeners.push(Listener {
                protocol: if socket_idx >= 18 {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                },
                address,
                port: u16::try_from(20_000 + proc_idx * LISTENERS_PER_PROCESS + socket_idx)
                    .unwrap_or(u16::MAX),
                scope,
                v6only: None,
                interface: None,
                inode: u64::from(1_000_000 + pid * 100 + socket_idx),
                socket_uid: uid,
                netns: netns.clone(),
                owners: vec![SocketOwner {
                    pid,
                    fd: 3 + socket_idx,
                }],
            });
        }
    }
    HostSnapshot {
        hostname: "bench".into(),
        listeners,
        processes,
        problems: vec![Problem::new("nft", "nft is not installed")],
        ..HostSnapshot::default()
    }
}

/// A finding per exposed listener, and one per root process: about what the
/// benchmark host's audit reports (901 findings).
fn findings(snapshot: &HostSnapshot) -> Vec<Finding> {
    let mut findings = Vec::new();
    for listener in snapshot.listeners.iter().filter(|l| l.scope.is_exposed()) {
        let pid = listener.owners.first().map_or(0, |o| o.pid);
        findings.push(
            Finding::new(
                "listener.unapproved",
                Severity::Medium,
                format!("{} python3.11 (pid {pid})", listener.endpoint()),
                format!(
                    "{} listens beyond loopback and no approval covers it",
                    listener.endpoint()
                ),
            )
            .with_evidence("scope public")
            .with_remedy("approve it in perimeter-approvals.toml, or bind it to loopback"),
        );
    }
    for process in snapshot.processes.values().filter(|p| p.uid == 0) {
        findings.push(
            Finding::new(
                "service.root",
                Severity::Low,
                format!("python3.11 (pid {})", process.pid),
                "a network service runs as root".to_owned(),
            )
            .with_remedy("run it as a dedicated account"),
        );
    }
    findings
}
