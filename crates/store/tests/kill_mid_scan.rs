//! A scan whose process is killed mid-write (SIGKILL: no destructor, no
//! rollback, no chance to finish) leaves every earlier scan intact, its own
//! committed batches whole, and itself visibly incomplete.
//!
//! The binary is its own writer: run with `PERIMETER_STORE_KILL_CHILD` set to a
//! database path it records batches into that file until killed; run without,
//! it is the test, which starts that child, waits until several batches are
//! committed, kills it while it writes the next (large) batch, and reopens the
//! file. Nothing here depends on timing: wherever the kill lands, the checks
//! hold, or the store is broken.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use perimeter_model::{
    AuthState, Finding, PortResult, PortState, Protocol, ScanInfo, ServiceInfo, Severity,
};
use perimeter_store::{SqliteStore, Store, TargetKey};
use time::macros::datetime;

const CHILD_ENV: &str = "PERIMETER_STORE_KILL_CHILD";
/// Batches the parent waits for before killing.
const N_SMALL_BATCHES: u64 = 5;
const SMALL_BATCH: u64 = 500;
/// The batches after the small ones are large, so the child spends nearly all
/// of its time inside a transaction when the kill arrives.
const LARGE_BATCH: u64 = 20_000;
/// The child gives up by itself if nobody kills it.
const MAX_BATCHES: u64 = 200;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|arg| arg == "--list") {
        // Enough of libtest's listing for `cargo test -- --list` and nextest,
        // which also asks for the ignored tests (there are none).
        if !args.iter().any(|arg| arg == "--ignored") {
            println!("kill_mid_scan: test");
        }
        return ExitCode::SUCCESS;
    }
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        return match child(Path::new(&path)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("kill_mid_scan child: {err}");
                ExitCode::FAILURE
            }
        };
    }
    match parent() {
        Ok(()) => {
            println!("test kill_mid_scan ... ok");
            ExitCode::SUCCESS
        }
        Err(err) => {
            println!("test kill_mid_scan ... FAILED\n{err}");
            ExitCode::FAILURE
        }
    }
}

fn scan_info(label: &str) -> ScanInfo {
    ScanInfo {
        id: 0,
        targets: vec!["198.18.0.0/15".to_owned()],
        resolved: vec![],
        excluded: vec![],
        ports: "1-1000".to_owned(),
        profile: label.to_owned(),
        seed: 42,
        options: BTreeMap::new(),
        started: datetime!(2024-06-01 12:00 UTC),
        finished: None,
        complete: false,
        n_probes: 0,
    }
}

/// Result number `result_idx` of a generated scan: deterministic, so the
/// parent can check every row the child committed.
fn generated_result(result_idx: u64) -> PortResult {
    let host_idx = u32::try_from(result_idx / 1000).unwrap_or(u32::MAX);
    let address = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)).saturating_add(host_idx));
    let port = u16::try_from(result_idx % 1000 + 1).unwrap_or(u16::MAX);
    let open = result_idx.is_multiple_of(3);
    let service = open.then(|| {
        let mut service = ServiceInfo::named("redis");
        service.version = Some(format!("7.0.{}", result_idx % 20));
        service.auth = if result_idx.is_multiple_of(2) {
            AuthState::None
        } else {
            AuthState::Required
        };
        service
            .extra
            .insert("result".to_owned(), result_idx.to_string());
        service
    });
    let findings = if open && result_idx.is_multiple_of(2) {
        vec![
            Finding::new(
                "redis.no-auth",
                Severity::High,
                format!("tcp {address}:{port}"),
                "no password",
            )
            .with_evidence(format!("result {result_idx}")),
        ]
    } else {
        vec![]
    };
    PortResult {
        address: IpAddr::V4(address),
        port,
        protocol: Protocol::Tcp,
        state: if open {
            PortState::Open
        } else {
            PortState::Closed
        },
        service,
        findings,
    }
}

fn generated(range: std::ops::Range<u64>) -> Vec<PortResult> {
    range.map(generated_result).collect()
}

fn child(path: &Path) -> TestResult {
    let mut store = SqliteStore::open(path)?;
    let scan_id = store.begin_scan(&scan_info("killed"))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "scan {scan_id}")?;
    stdout.flush()?;
    let batch_size = |batch_idx| {
        if batch_idx < N_SMALL_BATCHES {
            SMALL_BATCH
        } else {
            LARGE_BATCH
        }
    };
    let mut n_written = 0;
    let mut next_batch = generated(0..batch_size(0));
    for batch_idx in 0..MAX_BATCHES {
        store.record_results(scan_id, &next_batch)?;
        n_written += next_batch.len() as u64;
        // Built before saying "committed", so that once the parent hears it the
        // child goes straight into the next transaction.
        next_batch = generated(n_written..n_written + batch_size(batch_idx + 1));
        writeln!(stdout, "committed {n_written}")?;
        stdout.flush()?;
    }
    Err("nobody killed the child".into())
}

fn parent() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("history.db");

    // History from before the killed scan: one complete scan.
    let earlier_results = generated(0..3000);
    let earlier_id = {
        let mut store = SqliteStore::open(&path)?;
        let scan_id = store.begin_scan(&scan_info("earlier"))?;
        store.record_results(scan_id, &earlier_results)?;
        store.finish_scan(scan_id, datetime!(2024-06-01 12:30 UTC), true, 3000)?;
        scan_id
    };

    let mut child = Command::new(std::env::current_exe()?)
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("child stdout")?;
    // The child's lines come through a thread, so the parent can watch the WAL
    // while it waits for them.
    let (line_sender, lines) = mpsc::channel::<String>();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_sender.send(line).is_err() {
                break;
            }
        }
    });
    let scan_line = lines.recv()?;
    let killed_id: i64 = scan_line
        .strip_prefix("scan ")
        .ok_or_else(|| format!("unexpected child line {scan_line:?}"))?
        .parse()?;
    let mut n_seen_committed = 0;
    for _ in 0..N_SMALL_BATCHES {
        n_seen_committed = parse_committed(&lines.recv()?)?;
    }

    // Wait until the child's open transaction has spilled pages into the WAL
    // past what is committed, so the kill leaves uncommitted frames on disk for
    // recovery to discard. Should a commit arrive first, kill at once instead;
    // the checks below hold either way.
    let wal_path = dir.path().join("history.db-wal");
    let wal_bytes = || std::fs::metadata(&wal_path).map_or(0, |meta| meta.len());
    let committed_wal_bytes = wal_bytes();
    let wal_growth_at_kill = loop {
        match lines.try_recv() {
            Ok(line) => {
                n_seen_committed = parse_committed(&line)?;
                break None;
            }
            Err(mpsc::TryRecvError::Disconnected) => {
                return Err("child stopped before it was killed".into());
            }
            Err(mpsc::TryRecvError::Empty) => {}
        }
        let now = wal_bytes();
        if now > committed_wal_bytes {
            break Some(now - committed_wal_bytes);
        }
        thread::sleep(Duration::from_millis(1));
    };
    child.kill()?;
    let status = child.wait()?;
    if status.success() {
        return Err(format!("child exited by itself: {status}").into());
    }
    // Lines the child wrote before dying still count as seen.
    reader.join().map_err(|_| "reader thread panicked")?;
    for line in lines.try_iter() {
        n_seen_committed = parse_committed(&line)?;
    }

    // A plain SQLite look first: the file must pass its own integrity check.
    {
        let conn = rusqlite::Connection::open(&path)?;
        let integrity: String = conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))?;
        ensure(integrity == "ok", format!("integrity check: {integrity}"))?;
    }

    let mut store = SqliteStore::open(&path)?;
    let (earlier_info, loaded_earlier) = store.load_scan(earlier_id)?;
    ensure(
        earlier_info.complete && earlier_info.finished.is_some(),
        "earlier scan still complete",
    )?;
    ensure(
        loaded_earlier == earlier_results,
        "earlier scan's results intact",
    )?;

    let (killed_info, killed_results) = store.load_scan(killed_id)?;
    ensure(
        killed_info.finished.is_none(),
        "killed scan has no finish time",
    )?;
    ensure(!killed_info.complete, "killed scan is incomplete")?;
    let n_stored = killed_results.len() as u64;
    let n_small = N_SMALL_BATCHES * SMALL_BATCH;
    ensure(
        n_stored >= n_seen_committed
            && n_stored >= n_small
            && (n_stored - n_small).is_multiple_of(LARGE_BATCH),
        format!(
            "killed scan holds {n_stored} results: not whole batches, or fewer than the {n_seen_committed} committed"
        ),
    )?;
    ensure(
        killed_results == generated(0..n_stored),
        "killed scan's committed results intact",
    )?;
    let summary = store
        .list_scans(10)?
        .into_iter()
        .find(|summary| summary.info.id == killed_id)
        .ok_or("killed scan listed")?;
    ensure(
        summary.n_results == n_stored,
        "result count matches the rows",
    )?;
    let previous = store.previous_scans_of(&TargetKey::of(&killed_info), 10)?;
    ensure(
        previous.iter().all(|summary| summary.info.id != killed_id),
        "an incomplete scan is never a diff base",
    )?;

    // The history stays writable: the interrupted scan can be closed as such,
    // and a new scan recorded.
    store.finish_scan(killed_id, datetime!(2024-06-01 13:00 UTC), false, 0)?;
    let next_id = store.begin_scan(&scan_info("next"))?;
    store.record_results(next_id, &generated(0..10))?;
    let kill_point = match wal_growth_at_kill {
        Some(n_bytes) => format!("killed with the WAL {n_bytes} bytes past the last commit seen"),
        None => "killed just after a commit".to_owned(),
    };
    println!(
        "kill_mid_scan: {n_stored} results of the killed scan survived in whole batches \
         ({n_seen_committed} seen committed; {kill_point})"
    );
    Ok(())
}

fn parse_committed(line: &str) -> Result<u64, Box<dyn std::error::Error>> {
    Ok(line
        .strip_prefix("committed ")
        .ok_or_else(|| format!("unexpected child line {line:?}"))?
        .parse()?)
}

fn ensure(condition: bool, what: impl Into<String>) -> TestResult {
    if condition {
        Ok(())
    } else {
        Err(format!("failed: {}", what.into()).into())
    }
}
