//! Shared by the real-socket tests: a transport that wraps the real one and
//! logs every connection attempt, so a test can prove where packets went, and a
//! helper that runs a scan and collects its results.

#![allow(
    dead_code,
    reason = "each test file uses a different part of this module; an unused helper in one is used in another"
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use perimeter_model::{PortResult, PortState};
use perimeter_scan::{
    Connect, PortSet, ScanEvent, ScanOptions, ScanOutcome, ScanPlan, SharedCatalog, StaticResolver,
    SynSockets, TargetRequest, TcpTransport, Transport, resolve_targets,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// [`TcpTransport`] with a log of every attempt.
#[derive(Debug, Clone, Default)]
pub(crate) struct LoggingTransport {
    log: Arc<Mutex<Vec<SocketAddr>>>,
}

impl LoggingTransport {
    pub(crate) fn attempts(&self) -> Vec<SocketAddr> {
        self.log.lock().map(|log| log.clone()).unwrap_or_default()
    }

    pub(crate) fn attempts_to(&self, address: SocketAddr) -> usize {
        self.attempts().iter().filter(|&&a| a == address).count()
    }
}

impl Transport for LoggingTransport {
    type Stream = tokio::net::TcpStream;

    async fn connect(&self, address: SocketAddr, timeout: Duration) -> Connect<Self::Stream> {
        if let Ok(mut log) = self.log.lock() {
            log.push(address);
        }
        TcpTransport.connect(address, timeout).await
    }
}

pub(crate) struct Finished {
    pub(crate) outcome: ScanOutcome,
    pub(crate) results: BTreeMap<SocketAddr, PortResult>,
}

impl Finished {
    pub(crate) fn state(&self, address: SocketAddr) -> Option<PortState> {
        self.results.get(&address).map(|r| r.state)
    }

    pub(crate) fn service(&self, address: SocketAddr) -> Option<String> {
        self.results
            .get(&address)
            .and_then(|r| r.service.as_ref())
            .map(|s| s.name.clone())
    }
}

/// Resolves `targets` (no names) and scans `ports` with `options`.
pub(crate) async fn scan(
    transport: &LoggingTransport,
    targets: &[&str],
    excludes: &[&str],
    ports: &str,
    options: ScanOptions,
    probes: SharedCatalog,
) -> Finished {
    scan_by(None, transport, targets, excludes, ports, options, probes).await
}

/// [`scan`] with SYNs from raw sockets (as root); `transport` logs the
/// identification's connections only.
pub(crate) async fn scan_syn(
    transport: &LoggingTransport,
    targets: &[&str],
    excludes: &[&str],
    ports: &str,
    options: ScanOptions,
    probes: SharedCatalog,
) -> Finished {
    let sockets = SynSockets::open().expect("raw sockets as root");
    scan_by(
        Some(sockets),
        transport,
        targets,
        excludes,
        ports,
        options,
        probes,
    )
    .await
}

async fn scan_by(
    syn: Option<SynSockets>,
    transport: &LoggingTransport,
    targets: &[&str],
    excludes: &[&str],
    ports: &str,
    options: ScanOptions,
    probes: SharedCatalog,
) -> Finished {
    let request = TargetRequest {
        targets: targets.iter().map(|t| t.to_string()).collect(),
        excludes: excludes.iter().map(|t| t.to_string()).collect(),
        allow_internet_wide: false,
    };
    let targets = resolve_targets(&request, &StaticResolver::default())
        .await
        .expect("literal targets resolve");
    let plan = ScanPlan {
        targets,
        ports: PortSet::parse(ports).expect("test ports parse"),
        options,
        probes,
    };
    let (sender, mut receiver) = mpsc::channel(256);
    let collector = tokio::spawn(async move {
        let mut results = BTreeMap::new();
        while let Some(event) = receiver.recv().await {
            if let ScanEvent::Result(result) = event {
                results.insert(SocketAddr::new(result.address, result.port), result);
            }
        }
        results
    });
    let outcome = match syn {
        // SYNs from raw sockets; identification connects through the logging
        // transport.
        Some(sockets) => {
            perimeter_scan::run_syn(
                sockets,
                Arc::new(transport.clone()),
                plan,
                sender,
                CancellationToken::new(),
            )
            .await
        }
        None => {
            perimeter_scan::run(
                Arc::new(transport.clone()),
                plan,
                sender,
                CancellationToken::new(),
            )
            .await
        }
    }
    .expect("scan runs");
    let results = collector.await.expect("collector task");
    Finished { outcome, results }
}

/// A port nothing listens on: bound, read back, released.
pub(crate) fn free_port(ip: &str) -> u16 {
    let listener = std::net::TcpListener::bind((ip, 0)).expect("bind a free port");
    listener.local_addr().expect("local address").port()
}
