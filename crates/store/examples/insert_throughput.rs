//! Measures how fast the SQLite store takes scan results, loads them back and
//! diffs two scans: `cargo run --release -p perimeter-store --example
//! insert_throughput [N_RESULTS]` (100 000 by default). Writes to a temporary
//! file on the same file system as `$TMPDIR`, so the figures include fsync.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use perimeter_model::{
    AuthState, Finding, PortResult, PortState, Protocol, ScanInfo, ServiceInfo, Severity,
};
use perimeter_store::{SqliteStore, Store, diff_scans};
use time::OffsetDateTime;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let n_results: u64 = match std::env::args().nth(1) {
        Some(text) => text.parse()?,
        None => 100_000,
    };
    let dir = tempfile::tempdir()?;
    println!(
        "{n_results} results per scan; database in {}",
        dir.path().display()
    );
    println!("results: 1 in 10 open, with a service; 1 in 50 with a finding");
    println!();
    println!("{:>10}  {:>10}  {:>14}", "batch", "seconds", "results/s");
    let mut last_scan_id = None;
    for batch_size in [100, 1_000, 10_000, n_results] {
        let path = dir.path().join(format!("batch-{batch_size}.db"));
        let mut store = SqliteStore::open(&path)?;
        let results = generated(n_results, 0);
        let started = Instant::now();
        let scan_id = store.begin_scan(&scan_info())?;
        for batch in results.chunks(usize::try_from(batch_size)?) {
            store.record_results(scan_id, batch)?;
        }
        store.finish_scan(scan_id, OffsetDateTime::now_utc(), true, n_results)?;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{batch_size:>10}  {seconds:>10.3}  {:>14.0}",
            n_results as f64 / seconds
        );
        last_scan_id = Some((path, scan_id));
    }

    let (path, scan_id) = last_scan_id.ok_or("no scan recorded")?;
    let store = SqliteStore::open(&path)?;
    let started = Instant::now();
    let (_, loaded) = store.load_scan(scan_id)?;
    println!();
    println!(
        "load_scan of {} results: {:.3} s",
        loaded.len(),
        started.elapsed().as_secs_f64()
    );

    let changed = generated(n_results, 7);
    let started = Instant::now();
    let changes = diff_scans(&loaded, &changed);
    println!(
        "diff_scans of two {n_results}-result scans: {:.3} s, {} changes",
        started.elapsed().as_secs_f64(),
        changes.len()
    );
    let file_bytes = std::fs::metadata(&path)?.len()
        + std::fs::metadata(path.with_extension("db-wal")).map_or(0, |meta| meta.len());
    println!(
        "database size: {:.1} MiB ({:.0} bytes per result)",
        file_bytes as f64 / (1024.0 * 1024.0),
        file_bytes as f64 / n_results as f64
    );
    Ok(())
}

fn scan_info() -> ScanInfo {
    ScanInfo {
        id: 0,
        targets: vec!["198.18.0.0/15".to_owned()],
        resolved: vec![],
        excluded: vec![],
        ports: "top:100".to_owned(),
        profile: "default".to_owned(),
        seed: 1,
        options: BTreeMap::new(),
        started: OffsetDateTime::now_utc(),
        finished: None,
        complete: false,
        n_probes: 0,
    }
}

/// A scan's results; `shift` moves which ports are open, so two shifts differ.
fn generated(n_results: u64, shift: u64) -> Vec<PortResult> {
    (0..n_results)
        .map(|result_idx| {
            let host_idx = u32::try_from(result_idx / 100).unwrap_or(u32::MAX);
            let address =
                Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)).saturating_add(host_idx));
            let port = u16::try_from(result_idx % 100 + 1).unwrap_or(u16::MAX);
            let open = (result_idx + shift).is_multiple_of(10);
            let service = open.then(|| {
                let mut service = ServiceInfo::named("http");
                service.product = Some("nginx".to_owned());
                service.version = Some("1.22.1".to_owned());
                service.banner = Some("HTTP/1.1 200 OK".to_owned());
                service.auth = AuthState::Unknown;
                service
                    .extra
                    .insert("http.title".to_owned(), "Welcome".to_owned());
                service
            });
            let findings = if (result_idx + shift).is_multiple_of(50) {
                vec![
                    Finding::new(
                        "http.default-page",
                        Severity::Low,
                        format!("tcp {address}:{port}"),
                        "default page",
                    )
                    .with_evidence("title Welcome"),
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
        })
        .collect()
}
