//! Real sockets on loopback: listeners this test starts are open, ports nothing
//! listens on are closed, services are identified by `perimeter-probe`'s real
//! probes, and an excluded address never sees a connection.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{LoggingTransport, free_port, scan};
use perimeter_model::PortState;
use perimeter_scan::{Profile, ScanOptions, no_probes, standard_probes};
use perimeter_testlab::{Requirement, require};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

fn options(profile: Profile) -> ScanOptions {
    ScanOptions {
        seed: Some(1),
        ..ScanOptions::new(profile)
    }
}

/// A listener that greets like OpenSSH and counts the connections it accepted.
async fn ssh_like(address: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind(address).await.expect("bind");
    let local = listener.local_addr().expect("local address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let _ = stream
                    .write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
                    .await;
                let mut sink = [0u8; 256];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    (local, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_ports_are_open_or_closed_and_identified() {
    let (ssh, _) = ssh_like("127.0.0.1:0").await;
    // A listener that accepts and says nothing.
    let quiet = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let quiet_addr = quiet.local_addr().expect("local address");
    let closed: Vec<u16> = (0..3).map(|_| free_port("127.0.0.1")).collect();

    let ports: Vec<String> = [ssh.port(), quiet_addr.port()]
        .into_iter()
        .chain(closed.iter().copied())
        .map(|p| p.to_string())
        .collect();
    let mut opts = options(Profile::Fast);
    opts.banner_wait = Some(Duration::from_millis(300));
    opts.max_probes_per_port = Some(1);
    let transport = LoggingTransport::default();
    let finished = scan(
        &transport,
        &["127.0.0.1"],
        &[],
        &ports.join(","),
        opts,
        standard_probes(),
    )
    .await;

    assert_eq!(finished.results.len(), 5);
    assert_eq!(finished.state(ssh), Some(PortState::Open));
    assert_eq!(finished.state(quiet_addr), Some(PortState::Open));
    for port in closed {
        assert_eq!(
            finished.state(SocketAddr::from(([127, 0, 0, 1], port))),
            Some(PortState::Closed)
        );
    }
    assert_eq!(finished.service(ssh).as_deref(), Some("ssh"));
    let ssh_result = &finished.results[&ssh];
    assert_eq!(ssh_result.findings.len(), 1);
    assert_eq!(ssh_result.findings[0].rule, "exposed.service");
    assert_eq!(ssh_result.findings[0].subject, ssh.to_string());
    assert_eq!(finished.service(quiet_addr), None);
    assert!(finished.outcome.info.complete);
    assert_eq!(finished.outcome.counts.open, 2);
    assert_eq!(finished.outcome.counts.closed, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_redis_is_found_without_auth() {
    if !require(Requirement::Tool("redis-server")) {
        return;
    }
    let port = free_port("127.0.0.1");
    let port_text = port.to_string();
    let _redis = perimeter_testlab::Daemon::spawn(
        "redis-server",
        &[
            "--port",
            &port_text,
            "--bind",
            "127.0.0.1",
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
    )
    .expect("start redis-server");
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut ready = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "redis-server did not start on {address}");

    let transport = LoggingTransport::default();
    let finished = scan(
        &transport,
        &["127.0.0.1"],
        &[],
        &port_text,
        options(Profile::Normal),
        standard_probes(),
    )
    .await;
    assert_eq!(finished.state(address), Some(PortState::Open));
    assert_eq!(finished.service(address).as_deref(), Some("redis"));
    let rules: Vec<&str> = finished.results[&address]
        .findings
        .iter()
        .map(|f| f.rule.as_str())
        .collect();
    assert_eq!(rules, ["exposed.redis-noauth"]);
    assert_eq!(
        finished.results[&address].findings[0].subject,
        address.to_string()
    );
}

/// Listeners on 127.0.0.1-3 each count accepted connections; 127.0.0.2 is
/// excluded and must count none, while the others are found open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_loopback_address_is_never_connected() {
    let (first, first_count) = ssh_like("127.0.0.1:0").await;
    let port = first.port();
    let (second, second_count) = ssh_like(&format!("127.0.0.2:{port}")).await;
    let (third, third_count) = ssh_like(&format!("127.0.0.3:{port}")).await;
    let transport = LoggingTransport::default();
    let mut opts = options(Profile::Fast);
    opts.identify = false;
    let finished = scan(
        &transport,
        &["127.0.0.1-127.0.0.3"],
        &["127.0.0.2"],
        &format!("{port},{}", free_port("127.0.0.1")),
        opts,
        Arc::new(no_probes),
    )
    .await;
    assert_eq!(finished.state(first), Some(PortState::Open));
    assert_eq!(finished.state(third), Some(PortState::Open));
    assert_eq!(finished.state(second), None);
    assert_eq!(
        transport
            .attempts()
            .iter()
            .filter(|a| a.ip() == second.ip())
            .count(),
        0
    );
    // Give the accept loops a moment to count, then compare.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(second_count.load(Ordering::SeqCst), 0);
    assert_eq!(first_count.load(Ordering::SeqCst), 1);
    assert_eq!(third_count.load(Ordering::SeqCst), 1);
    assert_eq!(finished.results.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_loopback_works_and_is_named_with_brackets() {
    if !require(Requirement::Ipv6Loopback) {
        return;
    }
    let listener = TcpListener::bind("[::1]:0").await.expect("listen on [::1]");
    let open = listener.local_addr().expect("local address");
    let closed = free_port("::1");
    let transport = LoggingTransport::default();
    let finished = scan(
        &transport,
        &["::1"],
        &[],
        &format!("{},{closed}", open.port()),
        options(Profile::Fast),
        Arc::new(no_probes),
    )
    .await;
    assert_eq!(finished.state(open), Some(PortState::Open));
    assert_eq!(
        finished.state(SocketAddr::new(open.ip(), closed)),
        Some(PortState::Closed)
    );
    assert_eq!(
        finished.results[&open].findings[0].subject,
        format!("[::1]:{}", open.port())
    );
}

/// A full-range scan of loopback's 65,535 ports, fast profile, finds exactly the
/// listeners this test holds among the ports it checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_ports_on_loopback() {
    let listeners: Vec<TcpListener> = {
        let mut listeners = Vec::new();
        for _ in 0..5 {
            listeners.push(TcpListener::bind("127.0.0.4:0").await.expect("bind"));
        }
        listeners
    };
    let mine: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr().expect("addr"))
        .collect();
    let transport = LoggingTransport::default();
    let mut opts = options(Profile::Fast);
    opts.identify = false;
    let started = std::time::Instant::now();
    let finished = scan(
        &transport,
        &["127.0.0.4"],
        &[],
        "-",
        opts,
        Arc::new(no_probes),
    )
    .await;
    eprintln!(
        "65535 loopback ports in {:?}: {:?}",
        started.elapsed(),
        finished.outcome.counts
    );
    assert!(finished.outcome.info.complete);
    assert_eq!(finished.results.len(), 65535);
    for address in &mine {
        assert_eq!(finished.state(*address), Some(PortState::Open));
    }
    // Nothing else binds 127.0.0.4 here, except sockets bound to the wildcard
    // address, which answer on every loopback address.
    assert_eq!(finished.outcome.counts.filtered, 0);
    assert!(finished.outcome.counts.open >= 5);
}
