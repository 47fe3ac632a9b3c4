//! The SYN scan's senders against the scripted network, under tokio's paused
//! clock: nmap's `-sS` states, retries by per-batch deadlines, the window,
//! the rate ceiling (identification's connections included), exclusions,
//! local errors, cancellation and identification, as the connect scan's
//! tests check them for the lanes.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::tests::{
    Finished, Technique, attempts_to, ip, options, plan, scan_by,
    shards_keep_exclusions_and_cover_the_scan, sock, targets,
};
use super::*;
use crate::options::Profile;
use crate::transport::fake::{FakeNetwork, FakePort, FakeService, ServerStep};

async fn syn_scan(network: &FakeNetwork, plan: ScanPlan) -> Finished {
    scan_by(Technique::Syn, network, plan, CancellationToken::new()).await
}

#[tokio::test(start_paused = true)]
async fn states_follow_nmaps_syn_scan() {
    let network = FakeNetwork::new(FakePort::Closed, Duration::from_millis(5));
    network.set(sock("198.18.0.1:22"), FakePort::Open(FakeService::silent()));
    network.set(sock("198.18.0.2:80"), FakePort::Silent);
    network.set(sock("198.18.0.2:443"), FakePort::Unreachable);
    network.set(
        sock("198.18.0.2:22"),
        FakePort::DropFirst(1, Box::new(FakePort::Closed)),
    );
    let start = Instant::now();
    let finished = syn_scan(
        &network,
        plan(
            targets(&["198.18.0.1-2"], &[]),
            "22,80,443",
            options(Profile::Normal),
        ),
    )
    .await;

    assert_eq!(finished.results.len(), 6);
    assert_eq!(finished.state("198.18.0.1:22"), Some(PortState::Open));
    assert_eq!(finished.state("198.18.0.1:80"), Some(PortState::Closed));
    assert_eq!(finished.state("198.18.0.2:22"), Some(PortState::Closed));
    assert_eq!(finished.state("198.18.0.2:80"), Some(PortState::Filtered));
    assert_eq!(finished.state("198.18.0.2:443"), Some(PortState::Filtered));
    assert_eq!(
        finished.outcome.counts,
        StateCounts {
            open: 1,
            closed: 3,
            filtered: 2,
            open_filtered: 0,
            undecided: 0
        }
    );
    // Silence gets the profile's retries (normal: 2), each after the 2 s
    // timeout; an ICMP unreachable and a RST decide at once.
    let silent = attempts_to(&network, "198.18.0.2:80");
    assert_eq!(silent.len(), 3);
    for pair in silent.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_secs(2) && gap < Duration::from_millis(2010),
            "{gap:?}"
        );
    }
    assert_eq!(attempts_to(&network, "198.18.0.2:443").len(), 1);
    assert_eq!(attempts_to(&network, "198.18.0.1:80").len(), 1);
    // One retry recovers a dropped SYN.
    assert_eq!(attempts_to(&network, "198.18.0.2:22").len(), 2);
    let info = &finished.outcome.info;
    assert!(info.complete);
    assert_eq!(info.n_probes, 9);
    // The scan ends with the last silent port's last timeout, not later.
    assert!(
        start.elapsed() < Duration::from_millis(6100),
        "{:?}",
        start.elapsed()
    );
    let open = &finished.results[&sock("198.18.0.1:22")];
    assert_eq!(open.findings[0].rule, "exposed.service");
    assert!(matches!(
        finished.events.last(),
        Some(ScanEvent::Progress {
            done: 6,
            total: 6,
            open: 1,
            ..
        })
    ));
}

#[tokio::test(start_paused = true)]
async fn only_open_ports_are_sent_unless_every_state_is_asked_for() {
    let network = FakeNetwork::new(FakePort::Closed, Duration::from_millis(5));
    network.set(sock("198.18.0.1:22"), FakePort::Open(FakeService::silent()));
    network.set(sock("198.18.0.2:80"), FakePort::Silent);
    let finished = syn_scan(
        &network,
        plan(
            targets(&["198.18.0.1-2"], &[]),
            "22,80,443",
            ScanOptions {
                report_unanswered: false,
                ..options(Profile::Normal)
            },
        ),
    )
    .await;
    assert_eq!(
        finished.results.keys().collect::<Vec<_>>(),
        [&sock("198.18.0.1:22")]
    );
    assert_eq!(
        finished.outcome.counts,
        StateCounts {
            open: 1,
            closed: 4,
            filtered: 1,
            open_filtered: 0,
            undecided: 0
        }
    );
    assert!(finished.outcome.info.complete);
}

/// Every SYN, retries included, and every identification connection takes a
/// token: for any two of them, those between fit in burst + elapsed × rate,
/// although SYNs take their tokens a batch at a time.
#[tokio::test(start_paused = true)]
async fn the_rate_ceiling_holds_for_batches() {
    let network = FakeNetwork::new(FakePort::Closed, Duration::from_millis(2));
    for host in 1..=4 {
        network.set(
            sock(&format!("198.18.0.{host}:6379")),
            FakePort::Open(FakeService::steps(vec![
                ServerStep::Expect(b"PING\r\n".to_vec()),
                ServerStep::Send(b"+PONG\r\n".to_vec()),
            ])),
        );
        network.set(sock(&format!("198.18.0.{host}:9")), FakePort::Silent);
    }
    let mut opts = options(Profile::Normal);
    opts.rate = Some(40.0);
    opts.identify = true;
    opts.banner_wait = Some(Duration::from_millis(300));
    opts.timeout = Some(Duration::from_millis(500));
    let start = Instant::now();
    let finished = syn_scan(
        &network,
        plan(targets(&["198.18.0.1-4"], &[]), "9,6379,1-40", opts),
    )
    .await;
    let attempts = network.attempts();
    // 4 hosts × 41 ports, + 2 retries per silent port, + the connections
    // identification opens (at least one per open port: a SYN scan keeps
    // none).
    let n_syns = 4 * 41 + 4 * 2;
    assert!(attempts.len() > n_syns + 4, "{}", attempts.len());
    assert_eq!(finished.outcome.info.n_probes, attempts.len() as u64);
    let burst = f64::from(Profile::Normal.defaults().burst);
    let mut times: Vec<Instant> = attempts.iter().map(|a| a.at).collect();
    times.sort();
    for (i, &from) in times.iter().enumerate() {
        for (j, &to) in times.iter().enumerate().skip(i) {
            let allowed = burst + (to - from).as_secs_f64() * 40.0;
            assert!(
                (j - i + 1) as f64 <= allowed + 1e-9,
                "{} attempts in {:?}",
                j - i + 1,
                to - from
            );
        }
    }
    // And close to the ceiling, not far below it.
    let busy = times.last().map(|&t| t - start).unwrap_or_default();
    assert!(
        busy < Duration::from_secs_f64(attempts.len() as f64 / 40.0 + 1.0),
        "{busy:?}"
    );
    let redis = &finished.results[&sock("198.18.0.3:6379")];
    assert_eq!(
        redis.service.as_ref().map(|s| s.name.as_str()),
        Some("redis")
    );
    assert_eq!(finished.outcome.counts.filtered, 4);
}

/// The window holds the ports in flight to the concurrency: with every port
/// silent, no more than that many have been sent a SYN before the first
/// deadline frees a place.
#[tokio::test(start_paused = true)]
async fn the_window_bounds_ports_in_flight() {
    let network = FakeNetwork::new(FakePort::Silent, Duration::from_millis(5));
    let mut opts = options(Profile::Normal);
    opts.concurrency = Some(4);
    opts.retries = Some(0);
    opts.timeout = Some(Duration::from_millis(100));
    let start = Instant::now();
    let finished = syn_scan(
        &network,
        plan(targets(&["198.18.0.0/29"], &[]), "20-29", opts),
    )
    .await;
    assert_eq!(finished.outcome.counts.filtered, 80);
    let attempts = network.attempts();
    assert_eq!(attempts.len(), 80);
    for window in attempts.windows(5) {
        // Any five SYNs span at least one timeout: the fifth waits for a
        // place.
        assert!(
            window[4].at - window[0].at >= Duration::from_millis(100),
            "{:?}",
            window.iter().map(|a| a.at - start).collect::<Vec<_>>()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn excluded_addresses_are_never_sent_a_syn() {
    let network = FakeNetwork::new(FakePort::Closed, Duration::from_millis(1));
    let mut opts = options(Profile::Fast);
    opts.rate = Some(100_000.0);
    let finished = syn_scan(
        &network,
        plan(
            targets(
                &["198.18.0.0/26", "2001:db8::/124"],
                &["198.18.0.5", "198.18.0.8-198.18.0.9", "2001:db8::8/125"],
            ),
            "22,80",
            opts,
        ),
    )
    .await;
    let excluded = [ip("198.18.0.5"), ip("198.18.0.8"), ip("198.18.0.9")];
    let attempts = network.attempts();
    let touched: BTreeSet<IpAddr> = attempts.iter().map(|a| a.address.ip()).collect();
    for address in excluded {
        assert!(!touched.contains(&address), "{address} was sent a packet");
    }
    assert!(
        !touched
            .iter()
            .any(|a| matches!(a, IpAddr::V6(v6) if v6.segments()[7] >= 8))
    );
    assert_eq!(touched.len(), 64 - 3 + 8);
    assert_eq!(attempts.len(), (64 - 3 + 8) * 2);
    assert_eq!(finished.results.len(), attempts.len());
}

#[tokio::test(start_paused = true)]
async fn shards_keep_exclusions_and_cover_the_syn_scan() {
    shards_keep_exclusions_and_cover_the_scan(Technique::Syn).await;
}

/// The SYNs go out in the permutation's order, as the connect scan's
/// connections do: a replayed seed sends the same order.
#[tokio::test(start_paused = true)]
async fn the_same_seed_sends_the_same_order() {
    let order = |seed: u64| async move {
        let network = FakeNetwork::new(FakePort::Closed, Duration::from_millis(1));
        let mut opts = options(Profile::Normal);
        opts.seed = Some(seed);
        syn_scan(
            &network,
            plan(targets(&["198.18.0.0/29"], &[]), "1-20", opts),
        )
        .await;
        network
            .attempts()
            .into_iter()
            .map(|a| a.address)
            .collect::<Vec<_>>()
    };
    let first = order(11).await;
    assert_eq!(first.len(), 160);
    assert_eq!(first, order(11).await);
    assert_ne!(first, order(12).await);
    // And in the connect scan's order, with one lane.
    let network = FakeNetwork::new(FakePort::Closed, Duration::from_millis(1));
    let mut opts = options(Profile::Normal);
    opts.seed = Some(11);
    opts.concurrency = Some(1);
    scan_by(
        Technique::Connect,
        &network,
        plan(targets(&["198.18.0.0/29"], &[]), "1-20", opts),
        CancellationToken::new(),
    )
    .await;
    let connected: Vec<SocketAddr> = network.attempts().into_iter().map(|a| a.address).collect();
    assert_eq!(first, connected);
}

#[tokio::test(start_paused = true)]
async fn local_errors_back_off_and_then_become_problems() {
    let network = FakeNetwork::new(FakePort::Closed, Duration::from_millis(1));
    network.set(
        sock("198.18.0.1:22"),
        FakePort::LocalErrorFirst(3, Box::new(FakePort::Closed)),
    );
    network.set(
        sock("198.18.0.1:80"),
        FakePort::LocalErrorFirst(100, Box::new(FakePort::Closed)),
    );
    let finished = syn_scan(
        &network,
        plan(
            targets(&["198.18.0.1"], &[]),
            "22,80",
            options(Profile::Normal),
        ),
    )
    .await;
    assert_eq!(finished.state("198.18.0.1:22"), Some(PortState::Closed));
    assert_eq!(finished.state("198.18.0.1:80"), None);
    assert_eq!(attempts_to(&network, "198.18.0.1:22").len(), 4);
    assert_eq!(
        attempts_to(&network, "198.18.0.1:80").len(),
        MAX_LOCAL_ERRORS as usize + 1
    );
    assert_eq!(finished.outcome.counts.undecided, 1);
    assert_eq!(finished.outcome.problems.len(), 1);
    assert_eq!(finished.outcome.problems[0].subject, "198.18.0.1:80");
}

#[tokio::test(start_paused = true)]
async fn cancellation_returns_partial_incomplete_results() {
    let network = FakeNetwork::new(FakePort::Closed, Duration::from_millis(5));
    let mut opts = options(Profile::Normal);
    opts.rate = Some(10.0);
    let cancel = CancellationToken::new();
    let canceller = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            cancel.cancel();
        })
    };
    let finished = scan_by(
        Technique::Syn,
        &network,
        plan(targets(&["198.18.0.0/24"], &[]), "1-4", opts),
        cancel,
    )
    .await;
    canceller.await.expect("canceller");
    let info = &finished.outcome.info;
    assert!(!info.complete);
    // 10 at once (the normal profile's burst of 20, capped at one second of
    // the rate), then 10 per second for 3 seconds.
    let n_results = finished.results.len() as u64;
    assert!((35..=45).contains(&n_results), "{n_results} results");
    assert_eq!(finished.outcome.counts.closed, n_results);
    assert_eq!(finished.outcome.counts.undecided, 1024 - n_results);
    // A SYN may have been on its way when the scan stopped; no other.
    let n_attempts = network.attempts().len() as u64;
    assert!(
        (n_results..=n_results + 1).contains(&n_attempts),
        "{n_attempts} SYNs for {n_results} results"
    );
}

/// Open ports are identified over connections of their own (a SYN scan
/// keeps none), and the SYN itself never becomes one.
#[tokio::test(start_paused = true)]
async fn open_ports_are_identified_over_connections() {
    let network = FakeNetwork::new(FakePort::Closed, Duration::from_millis(1));
    network.set(
        sock("198.18.0.1:22"),
        FakePort::Open(FakeService::banner(b"SSH-2.0-OpenSSH_9.2\r\n")),
    );
    let mut opts = options(Profile::Normal);
    opts.identify = true;
    let finished = syn_scan(&network, plan(targets(&["198.18.0.1"], &[]), "21-23", opts)).await;
    let ssh = &finished.results[&sock("198.18.0.1:22")];
    assert_eq!(ssh.service.as_ref().map(|s| s.name.as_str()), Some("ssh"));
    // One SYN and one connection to the open port; one SYN to each other.
    assert_eq!(attempts_to(&network, "198.18.0.1:22").len(), 2);
    assert_eq!(attempts_to(&network, "198.18.0.1:21").len(), 1);
    assert_eq!(network.in_flight(), 0, "every connection was closed");
}
