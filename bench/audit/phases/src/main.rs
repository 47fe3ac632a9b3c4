//! Where `perimeter audit`'s time goes: each step of the audit, run on its own
//! through the crates' public APIs, several times, with the median printed.
//!
//! The steps follow `perimeter_host::audit::collect` and the CLI's audit
//! command: the /proc walk, the netlink socket dump, listeners (walk, dump,
//! interfaces and accounts joined), package ownership of the listening
//! executables, the firewall read, the whole collection, the rules, and the
//! JSON rendering. `BENCH_PHASES=1 bench/audit.sh` builds it and runs it as
//! root inside the benchmark's namespace, after the side-by-side timings.
//!
//! Usage: perimeter-audit-phases [RUNS]

use std::collections::BTreeSet;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use perimeter_checks::{CheckConfig, approvals, run_all};
use perimeter_host::audit::{AuditOptions, collect};
use perimeter_host::firewall::firewall_verdict;
use perimeter_host::listeners::{ListenerOptions, collect_listeners};
use perimeter_host::packages::PackageDb;
use perimeter_host::procs::walk_processes;
use perimeter_host::sockets::dump_sockets;
use perimeter_model::Listener;
use perimeter_report::audit::{ApprovalStatus, AuditView, to_json};

fn main() {
    let n_runs: usize = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(10)
        .max(1);

    let facts = collect_listeners(&ListenerOptions::default());
    let listening: BTreeSet<u32> = facts.listeners.iter().flat_map(Listener::pids).collect();
    let mut exes: Vec<PathBuf> = facts
        .processes
        .values()
        .filter(|p| listening.contains(&p.pid) || p.exe_deleted)
        .filter_map(|p| p.exe.clone())
        .collect();
    exes.sort();
    exes.dedup();
    let collected = collect(&AuditOptions::default());
    let snapshot = &collected.snapshot;
    let approvals = match approvals::load(Path::new("/nonexistent/approvals.toml"), true) {
        Ok(approvals) => approvals,
        Err(err) => {
            eprintln!("perimeter-audit-phases: {err}");
            std::process::exit(2);
        }
    };
    let config = CheckConfig::new(time::OffsetDateTime::now_utc().date());
    let findings = run_all(snapshot, &approvals, &config);
    let statuses: Vec<ApprovalStatus> = snapshot
        .listeners
        .iter()
        .map(|l| {
            if l.scope.is_exposed() {
                ApprovalStatus::Unapproved
            } else {
                ApprovalStatus::NotNeeded
            }
        })
        .collect();
    let view = AuditView {
        snapshot,
        findings: &findings,
        approvals: &statuses,
        approvals_file: None,
        taken_at: time::OffsetDateTime::now_utc(),
        socket_source: &collected.socket_source,
        perimeter_version: "bench",
        since: None,
    };
    let document = to_json(&view);

    println!(
        "{} processes, {} socket descriptors, {} listeners, {} distinct listening executables, {} findings; {n_runs} runs per step",
        facts.processes.len(),
        walk_processes(Path::new("/proc")).socket_fds.len(),
        facts.listeners.len(),
        exes.len(),
        findings.len(),
    );
    println!("| step | median ms | min ms |");
    println!("|------|----------:|-------:|");
    let step = |name: &str, mut run: Box<dyn FnMut() + '_>| {
        let mut times: Vec<Duration> = (0..n_runs)
            .map(|_| {
                let start = Instant::now();
                run();
                start.elapsed()
            })
            .collect();
        times.sort();
        let median = times.get(times.len() / 2).copied().unwrap_or_default();
        let min = times.first().copied().unwrap_or_default();
        println!(
            "| {name} | {:.1} | {:.1} |",
            median.as_secs_f64() * 1e3,
            min.as_secs_f64() * 1e3
        );
    };
    step(
        "/proc walk (procs::walk_processes)",
        Box::new(|| {
            black_box(walk_processes(Path::new("/proc")));
        }),
    );
    step(
        "netlink socket dump (sockets::dump_sockets)",
        Box::new(|| {
            black_box(dump_sockets(Path::new("/proc/thread-self/net"), false));
        }),
    );
    step(
        "listeners: walk + dump + interfaces + accounts",
        Box::new(|| {
            black_box(collect_listeners(&ListenerOptions::default()));
        }),
    );
    step(
        "package ownership (PackageDb::open + owners)",
        Box::new(|| {
            let (db, _) = PackageDb::open(Path::new("/"));
            black_box(db.owners(&exes));
        }),
    );
    step(
        "firewall (firewall_verdict: nft, iptables-save)",
        Box::new(|| {
            black_box(firewall_verdict(None));
        }),
    );
    step(
        "whole collection (host::audit::collect)",
        Box::new(|| {
            black_box(collect(&AuditOptions::default()));
        }),
    );
    step(
        "rules (checks::run_all)",
        Box::new(|| {
            black_box(run_all(snapshot, &approvals, &config));
        }),
    );
    step(
        "JSON document (report::audit::to_json)",
        Box::new(|| {
            black_box(to_json(&view));
        }),
    );
    step(
        "JSON text (serde_json::to_string_pretty)",
        Box::new(|| {
            black_box(
                serde_json::to_string_pretty(&document)
                    .map(|text| text.len())
                    .ok(),
            );
        }),
    );
}
