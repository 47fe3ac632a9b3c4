//! The engine against the scripted network, under tokio's paused clock: states,
//! retries, the rate ceiling, the concurrency limit, cancellation, exclusions,
//! spread pacing and identification, all decided by virtual time.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use perimeter_model::Severity;
use perimeter_probe::Probe;

use super::*;
use crate::identify::test_probes::{BannerProbe, PingProbe};
use crate::options::Profile;
use crate::shard::Shard;
use crate::targets::{AddressRange, TargetSet, parse_target};
use crate::transport::fake::{Attempt, FakeNetwork, FakePort, FakeService, ServerStep};

pub(super) fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

pub(super) fn sock(text: &str) -> SocketAddr {
    text.parse().expect("test socket address")
}

fn range(text: &str) -> AddressRange {
    parse_target(text)
        .expect("test target")
        .range()
        .expect("literal target")
}

pub(super) fn targets(targets: &[&str], excludes: &[&str]) -> Targets {
    let target_ranges: Vec<_> = targets.iter().map(|t| range(t)).collect();
    let exclude_ranges: Vec<_> = excludes.iter().map(|t| range(t)).collect();
    Targets {
        set: TargetSet::new(&target_ranges, &exclude_ranges),
        given: targets.iter().map(|t| t.to_string()).collect(),
        excluded: excludes.iter().map(|t| t.to_string()).collect(),
        resolved: Vec::new(),
        problems: Vec::new(),
    }
}

pub(super) fn test_catalog(_address: IpAddr, _port: u16) -> Vec<Box<dyn Probe>> {
    vec![
        Box::new(BannerProbe {
            prefix: b"SSH-",
            name: "ssh",
        }),
        Box::new(PingProbe),
    ]
}

pub(super) fn plan(targets: Targets, ports: &str, options: ScanOptions) -> ScanPlan {
    ScanPlan {
        targets,
        ports: PortSet::parse(ports).expect("test ports"),
        options,
        probes: Arc::new(test_catalog),
    }
}

pub(super) fn options(profile: Profile) -> ScanOptions {
    ScanOptions {
        seed: Some(7),
        raise_fd_limit: false,
        identify: false,
        ..ScanOptions::new(profile)
    }
}

pub(super) struct Finished {
    pub(super) outcome: ScanOutcome,
    pub(super) results: BTreeMap<SocketAddr, PortResult>,
    pub(super) events: Vec<ScanEvent>,
}

impl Finished {
    pub(super) fn state(&self, address: &str) -> Option<PortState> {
        self.results.get(&sock(address)).map(|r| r.state)
    }
}

async fn scan(network: &FakeNetwork, plan: ScanPlan) -> Finished {
    scan_with(network, plan, CancellationToken::new()).await
}

async fn scan_with(network: &FakeNetwork, plan: ScanPlan, cancel: CancellationToken) -> Finished {
    scan_by(Technique::Connect, network, plan, cancel).await
}

/// How the ports are decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Technique {
    Connect,
    /// SYNs through the network's [`FakeNetwork::packets`], identification
    /// over its connections.
    Syn,
}

pub(super) async fn scan_by(
    technique: Technique,
    network: &FakeNetwork,
    plan: ScanPlan,
    cancel: CancellationToken,
) -> Finished {
    let (sender, mut receiver) = mpsc::channel(64);
    let collector = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(event) = receiver.recv().await {
            events.push(event);
        }
        events
    });
    let transport = Arc::new(network.clone());
    let outcome = match technique {
        Technique::Connect => run(transport, plan, sender, cancel).await,
        Technique::Syn => run_syn(network.packets(), transport, plan, sender, cancel).await,
    }
    .expect("scan runs");
    let events = collector.await.expect("collector");
    let mut results = BTreeMap::new();
    for event in &events {
        if let ScanEvent::Result(result) = event {
            let previous =
                results.insert(SocketAddr::new(result.address, result.port), result.clone());
            assert!(
                previous.is_none(),
                "{}:{} reported twice",
                result.address,
                result.port
            );
        }
    }
    Finished {
        outcome,
        results,
        events,
    }
}

pub(super) fn attempts_to(network: &FakeNetwork, address: &str) -> Vec<Attempt> {
    network
        .attempts()
        .into_iter()
        .filter(|a| a.address == sock(address))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn port_states_follow_the_connect_scan_rules() {
    let network = FakeNetwork::new(FakePort::Closed, Duration::from_millis(5));
    network.set(sock("198.18.0.1:22"), FakePort::Open(FakeService::silent()));
    network.set(sock("198.18.0.2:80"), FakePort::Silent);
    network.set(sock("198.18.0.2:443"), FakePort::Unreachable);
    let finished = scan(
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
    // A silent port gets the profile's retries (normal: 2) before it is filtered;
    // an ICMP unreachable is an answer and decides at once.
    assert_eq!(attempts_to(&network, "198.18.0.2:80").len(), 3);
    assert_eq!(attempts_to(&network, "198.18.0.2:443").len(), 1);
    assert_eq!(attempts_to(&network, "198.18.0.1:80").len(), 1);
    let info = &finished.outcome.info;
    assert!(info.complete);
    assert_eq!(info.n_probes, 8);
    assert_eq!(info.seed, 7);
    assert_eq!(info.profile, "normal");
    assert_eq!(info.ports, "22,80,443");
    assert_eq!(info.targets, ["198.18.0.1-2"]);
    assert_eq!(info.options.get("retries").map(String::as_str), Some("2"));
    // The open port carries the exposure finding, with identification off.
    let open = &finished.results[&sock("198.18.0.1:22")];
    assert_eq!(open.findings.len(), 1);
    assert_eq!(open.findings[0].rule, "exposed.service");
    assert_eq!(open.findings[0].subject, "198.18.0.1:22");
    assert!(finished.results[&sock("198.18.0.1:80")].findings.is_empty());
    // The last event is the final progress, with everything done.
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
async fn retries_recover_a_dropped_syn() {
    let network = FakeNetwork::new(FakePort::Closed, Duration::from_millis(5));
    let open = || Box::new(FakePort::Open(FakeService::silent()));
    network.set(sock("198.18.0.1:22"), FakePort::DropFirst(1, open()));
    network.set(sock("198.18.0.1:80"), FakePort::DropFirst(2, open()));
    network.set(
        sock("198.18.0.1:443"),
        FakePort::DropFirst(1, Box::new(FakePort::Closed)),
    );
    let mut opts = options(Profile::Normal);
    opts.retries = Some(1);
    let finished = scan(
        &network,
        plan(targets(&["198.18.0.1"], &[]), "22,80,443", opts),
    )
    .await;
    // One retry recovers one drop, not two.
    assert_eq!(finished.state("198.18.0.1:22"), Some(PortState::Open));
    assert_eq!(finished.state("198.18.0.1:443"), Some(PortState::Closed));
    assert_eq!(finished.state("198.18.0.1:80"), Some(PortState::Filtered));
    assert_eq!(attempts_to(&network, "198.18.0.1:22").len(), 2);
    assert_eq!(attempts_to(&network, "198.18.0.1:80").len(), 2);
    // The retry comes after the timeout (2 s in the normal profile).
    let retried = attempts_to(&network, "198.18.0.1:22");
    assert_eq!(retried[1].at - retried[0].at, Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn without_report_unanswered_only_open_ports_are_sent_and_all_are_counted() {
    let network = FakeNetwork::new(FakePort::Closed, Duration::from_millis(5));
    network.set(sock("198.18.0.1:22"), FakePort::Open(FakeService::silent()));
    network.set(sock("198.18.0.2:80"), FakePort::Silent);
    let finished = scan(
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
}

/// Every attempt, including retries and identification connections, counts
/// against the ceiling: for any two attempts, those between them fit in
/// burst + elapsed × rate.
#[tokio::test(start_paused = true)]
async fn rate_ceiling_is_never_exceeded() {
    let network = FakeNetwork::new(FakePort::Closed, Duration::from_millis(2));
    // Open ports that need two probes (two connections), and silent ones that
    // need retries.
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
    let finished = scan(
        &network,
        plan(targets(&["198.18.0.1-4"], &[]), "9,6379,1-40", opts),
    )
    .await;
    let attempts = network.attempts();
    // 4 hosts × 41 ports, + 2 retries per silent port, + 1 identification
    // connection per open port.
    assert_eq!(attempts.len(), 4 * 41 + 4 * 2 + 4);
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
    // And it ran close to the ceiling, not far below it.
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
}

#[tokio::test(start_paused = true)]
async fn concurrency_limit_is_held() {
    let network = FakeNetwork::new(FakePort::Silent, Duration::from_millis(5));
    network.set(
        sock("198.18.0.9:22"),
        FakePort::Open(FakeService::banner(b"SSH-2.0-x\r\n")),
    );
    let mut opts = options(Profile::Fast);
    opts.concurrency = Some(4);
    opts.identify = true;
    let finished = scan(
        &network,
        plan(targets(&["198.18.0.0/28"], &[]), "20-29", opts),
    )
    .await;
    assert_eq!(finished.results.len(), 160);
    assert_eq!(network.max_in_flight(), 4);
    assert_eq!(network.in_flight(), 0, "every connection was closed");
    assert_eq!(finished.outcome.settings.concurrency, 4);
}

#[tokio::test(start_paused = true)]
async fn fd_budget_caps_concurrency() {
    let settings = ScanOptions::new(Profile::Fast)
        .settings(1000, Some(fd_budget(1024)))
        .expect("valid");
    assert_eq!(settings.concurrency, 1024 - 128);
    assert_eq!(settings.requested_concurrency, 2048);
    assert_eq!(fd_budget(256), 192);
    assert_eq!(fd_budget(10), 1);
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
    let finished = scan_with(
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
    assert_eq!(network.attempts().len() as u64, n_results);
    assert!(matches!(
        finished.events.last(),
        Some(ScanEvent::Progress {
            eta: None,
            total: 1024,
            ..
        })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_receiver_that_hangs_up_stops_the_scan() {
    let network = FakeNetwork::new(FakePort::Closed, Duration::from_millis(5));
    let mut opts = options(Profile::Normal);
    opts.rate = Some(100.0);
    let (sender, mut receiver) = mpsc::channel(4);
    let reader = tokio::spawn(async move {
        for _ in 0..10 {
            receiver.recv().await;
        }
    });
    let outcome = run(
        Arc::new(network.clone()),
        plan(targets(&["198.18.0.0/24"], &[]), "1-100", opts),
        sender,
        CancellationToken::new(),
    )
    .await
    .expect("runs");
    reader.await.expect("reader");
    assert!(!outcome.info.complete);
    assert!(
        network.attempts().len() < 200,
        "{} attempts",
        network.attempts().len()
    );
}

#[tokio::test(start_paused = true)]
async fn excluded_addresses_are_never_connected() {
    let network = FakeNetwork::new(FakePort::Closed, Duration::from_millis(1));
    let mut opts = options(Profile::Fast);
    opts.rate = Some(100_000.0);
    let finished = scan(
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
    // Everything else was scanned, once per port.
    assert_eq!(touched.len(), 64 - 3 + 8);
    assert_eq!(attempts.len(), (64 - 3 + 8) * 2);
    assert_eq!(finished.results.len(), attempts.len());
}

/// Every shard of a scan (issue 11) keeps its exclusions, and the shards
/// together decide exactly the ports the unsharded scan decides, each once
/// and in the same state, whichever technique decides them.
pub(super) async fn shards_keep_exclusions_and_cover_the_scan(technique: Technique) {
    let network = || {
        let network = FakeNetwork::new(FakePort::Closed, Duration::from_millis(1));
        for open in ["198.18.0.1:22", "198.18.0.17:80", "198.18.0.40:443"] {
            network.set(sock(open), FakePort::Open(FakeService::silent()));
        }
        network.set(sock("198.18.0.33:22"), FakePort::Unreachable);
        network
    };
    let scan_plan = |shard: Shard| {
        let mut opts = options(Profile::Fast);
        opts.rate = Some(100_000.0);
        opts.seed = Some(0x5eed);
        opts.shard = shard;
        plan(
            targets(
                &["198.18.0.0/26"],
                &["198.18.0.5", "198.18.0.8-198.18.0.9", "198.18.0.17"],
            ),
            "22,80,443",
            opts,
        )
    };
    let excluded = [
        ip("198.18.0.5"),
        ip("198.18.0.8"),
        ip("198.18.0.9"),
        ip("198.18.0.17"),
    ];
    let state_of = |finished: &Finished| -> BTreeMap<SocketAddr, PortState> {
        finished
            .results
            .iter()
            .map(|(address, result)| (*address, result.state))
            .collect()
    };
    let unsharded = scan_by(
        technique,
        &network(),
        scan_plan(Shard::WHOLE),
        CancellationToken::new(),
    )
    .await;
    assert!(unsharded.outcome.info.complete);
    assert!(!unsharded.outcome.info.options.contains_key("shard"));
    let whole = state_of(&unsharded);
    assert_eq!(whole.len(), (64 - 4) * 3);
    assert_eq!(whole.values().filter(|s| **s == PortState::Open).count(), 2);

    for n_shards in [1u32, 2, 3, 7, 64, 200] {
        let mut union: BTreeMap<SocketAddr, PortState> = BTreeMap::new();
        for shard_idx in 0..n_shards {
            let shard = Shard::new(shard_idx, n_shards).expect("a valid shard");
            let network = network();
            let finished = scan_by(
                technique,
                &network,
                scan_plan(shard),
                CancellationToken::new(),
            )
            .await;
            let touched: BTreeSet<IpAddr> =
                network.attempts().iter().map(|a| a.address.ip()).collect();
            for address in excluded {
                assert!(
                    !touched.contains(&address),
                    "{address} was sent a packet by shard {shard}"
                );
            }
            let info = &finished.outcome.info;
            assert!(info.complete, "shard {shard} incomplete");
            assert_eq!(
                info.options.get("shard").cloned(),
                (n_shards > 1).then(|| shard.to_string())
            );
            // The shard's share of the 64 × 3 index space (excluded
            // addresses are not in the set, so no position lands on one).
            assert_eq!(
                finished.results.len() as u64,
                shard.len_of((64 - 4) * 3),
                "shard {shard}"
            );
            for (address, state) in state_of(&finished) {
                assert!(
                    union.insert(address, state).is_none(),
                    "{address} decided by two shards of {n_shards}"
                );
            }
        }
        assert_eq!(union, whole, "{n_shards} shards");
    }
}

#[tokio::test(start_paused = true)]
async fn shards_keep_exclusions_and_cover_the_connect_scan() {
    shards_keep_exclusions_and_cover_the_scan(Technique::Connect).await;
}

#[tokio::test(start_paused = true)]
async fn a_shard_without_a_seed_is_refused() {
    let mut opts = options(Profile::Normal);
    opts.seed = None;
    opts.shard = Shard::new(0, 2).expect("a valid shard");
    let network = FakeNetwork::new(FakePort::Closed, Duration::from_millis(1));
    let (sender, _receiver) = mpsc::channel(64);
    let refused = run(
        Arc::new(network.clone()),
        plan(targets(&["198.18.0.0/30"], &[]), "22", opts),
        sender,
        CancellationToken::new(),
    )
    .await;
    assert_eq!(
        refused.err().map(|e| e.to_string()),
        Some(
            "invalid option shard: needs an explicit seed: every shard of a scan must walk the same permutation"
                .into()
        )
    );
    assert!(network.attempts().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_replays_the_same_order() {
    let order = |seed: u64| async move {
        let network = FakeNetwork::new(FakePort::Closed, Duration::from_millis(1));
        let mut opts = options(Profile::Normal);
        opts.seed = Some(seed);
        opts.concurrency = Some(1);
        scan(
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
    // Consecutive probes rarely hit the same host.
    let same_host = first.windows(2).filter(|w| w[0].ip() == w[1].ip()).count();
    assert!(
        same_host < 50,
        "{same_host} of 159 consecutive probes on one host"
    );
}

#[tokio::test(start_paused = true)]
async fn stealth_spread_paces_to_the_end_of_the_window() {
    let network = FakeNetwork::new(FakePort::Closed, Duration::from_millis(20));
    let mut opts = options(Profile::Stealth);
    let spread = Duration::from_secs(3600);
    opts.spread = Some(spread);
    let start = Instant::now();
    let finished = scan(
        &network,
        plan(targets(&["198.18.0.0/27"], &[]), "20-29", opts),
    )
    .await;
    let elapsed = start.elapsed();
    assert!(finished.outcome.info.complete);
    let attempts = network.attempts();
    assert_eq!(attempts.len(), 320);
    // Finished inside the window, and not long before its end.
    assert!(elapsed <= spread, "{elapsed:?}");
    assert!(
        elapsed >= spread.mul_f64(0.95),
        "finished early, after {elapsed:?}"
    );
    // Attempts are spread evenly: every tenth of the window has its share.
    let mut per_tenth = [0usize; 10];
    for attempt in &attempts {
        let tenth = ((attempt.at - start).as_secs_f64() / spread.as_secs_f64() * 10.0) as usize;
        per_tenth[tenth.min(9)] += 1;
    }
    assert!(
        per_tenth.iter().all(|&n| (24..=40).contains(&n)),
        "{per_tenth:?}"
    );
    // Stealth jitters: the gaps between attempts are not all alike.
    let gaps: BTreeSet<Duration> = attempts.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps.len() > 100);
}

#[tokio::test(start_paused = true)]
async fn a_rate_too_low_for_the_spread_is_reported() {
    let network = FakeNetwork::new(FakePort::Closed, Duration::from_millis(1));
    let mut opts = options(Profile::Stealth);
    opts.spread = Some(Duration::from_secs(10));
    opts.rate = Some(1.0);
    let finished = scan(&network, plan(targets(&["198.18.0.1"], &[]), "1-20", opts)).await;
    assert!(finished.outcome.info.complete);
    assert_eq!(finished.outcome.problems.len(), 1);
    assert!(
        finished.outcome.problems[0]
            .message
            .contains("cannot fit 20 probes")
    );
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
    let finished = scan(
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
    assert!(
        finished
            .events
            .iter()
            .any(|e| matches!(e, ScanEvent::Problem(p) if p.subject == "198.18.0.1:80"))
    );
}

#[tokio::test(start_paused = true)]
async fn identification_fills_service_and_findings() {
    let network = FakeNetwork::new(FakePort::Closed, Duration::from_millis(1));
    network.set(
        sock("198.18.0.1:22"),
        FakePort::Open(FakeService::banner(b"SSH-2.0-OpenSSH_9.2\r\n")),
    );
    network.set(
        sock("[2001:db8::1]:6379"),
        FakePort::Open(FakeService::steps(vec![
            ServerStep::Expect(b"PING\r\n".to_vec()),
            ServerStep::Send(b"+PONG\r\n".to_vec()),
        ])),
    );
    network.set(
        sock("198.18.0.1:8080"),
        FakePort::Open(FakeService::silent()),
    );
    let mut opts = options(Profile::Normal);
    opts.identify = true;
    opts.banner_wait = Some(Duration::from_millis(500));
    let finished = scan(
        &network,
        plan(
            targets(&["198.18.0.1", "2001:db8::1"], &[]),
            "22,6379,8080",
            opts,
        ),
    )
    .await;

    let ssh = &finished.results[&sock("198.18.0.1:22")];
    assert_eq!(ssh.service.as_ref().map(|s| s.name.as_str()), Some("ssh"));
    assert_eq!(ssh.findings.len(), 1);
    assert_eq!(ssh.findings[0].rule, "exposed.service");
    assert_eq!(ssh.findings[0].message, "ssh answers on 198.18.0.1:22");

    let redis = &finished.results[&sock("[2001:db8::1]:6379")];
    assert_eq!(
        redis.service.as_ref().map(|s| s.name.as_str()),
        Some("redis")
    );
    assert_eq!(redis.findings.len(), 1);
    assert_eq!(redis.findings[0].rule, "redis.no-auth");
    assert_eq!(redis.findings[0].severity, Severity::Critical);
    assert_eq!(redis.findings[0].subject, "[2001:db8::1]:6379");

    let silent = &finished.results[&sock("198.18.0.1:8080")];
    assert_eq!(silent.service, None);
    assert_eq!(
        silent.findings[0].message,
        "port 198.18.0.1:8080 is open; the service was not identified"
    );
    // ssh: one connection (the scan's own); redis and the silent port: two.
    assert_eq!(attempts_to(&network, "198.18.0.1:22").len(), 1);
    assert_eq!(attempts_to(&network, "[2001:db8::1]:6379").len(), 2);
    assert_eq!(attempts_to(&network, "198.18.0.1:8080").len(), 2);
    assert_eq!(network.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn stealth_runs_few_probes_and_a_port_deadline_bounds_identification() {
    let network = FakeNetwork::new(
        FakePort::Open(FakeService::silent()),
        Duration::from_millis(1),
    );
    let catalog = |_address: IpAddr, _port: u16| -> Vec<Box<dyn Probe>> {
        (0..5)
            .map(|_| {
                Box::new(BannerProbe {
                    prefix: b"never",
                    name: "x",
                }) as Box<dyn Probe>
            })
            .collect()
    };
    let mut opts = options(Profile::Stealth);
    opts.identify = true;
    let mut stealth_plan = plan(targets(&["198.18.0.1"], &[]), "80", opts.clone());
    stealth_plan.probes = Arc::new(catalog);
    scan(&network, stealth_plan).await;
    // Stealth: two probes at most, the first on the scan's connection.
    assert_eq!(network.attempts().len(), 2);

    let network = FakeNetwork::new(
        FakePort::Open(FakeService::silent()),
        Duration::from_millis(1),
    );
    let mut opts = options(Profile::Normal);
    opts.identify = true;
    opts.rate = Some(1000.0);
    opts.banner_wait = Some(Duration::from_secs(1));
    opts.port_deadline = Some(Duration::from_millis(2500));
    let mut bounded_plan = plan(targets(&["198.18.0.1"], &[]), "80", opts);
    bounded_plan.probes = Arc::new(catalog);
    let start = Instant::now();
    let finished = scan(&network, bounded_plan).await;
    // The first banner wait (1 s, on the scan's connection) races the rest,
    // which run one after another from 250 ms on (the normal profile's
    // ask_after): at 0.25, 1.25 and 2.25 s. The 2.5 s deadline cuts the last
    // one short, and the fifth never starts.
    assert_eq!(network.attempts().len(), 4);
    assert_eq!(
        finished.outcome.info.n_probes, 4,
        "attempts cut by the deadline still count"
    );
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(finished.state("198.18.0.1:80"), Some(PortState::Open));
    assert_eq!(network.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn fast_profile_adapts_its_timeout_to_the_round_trip() {
    let network = FakeNetwork::new(FakePort::Closed, Duration::from_millis(10));
    network.set(sock("198.18.0.1:1000"), FakePort::Silent);
    let mut opts = options(Profile::Fast);
    opts.concurrency = Some(1);
    opts.seed = Some(3);
    scan(
        &network,
        plan(targets(&["198.18.0.1"], &[]), "1-1000", opts),
    )
    .await;
    let silent = attempts_to(&network, "198.18.0.1:1000");
    assert_eq!(silent.len(), 2, "one retry in the fast profile");
    // Hundreds of 10 ms answers first shrink the timeout to its floor (250 ms)
    // unless the silent port came first, when it is still the 1 s ceiling.
    let attempts = network.attempts();
    let position = attempts
        .iter()
        .position(|a| a.address == sock("198.18.0.1:1000"));
    let gap = silent[1].at - silent[0].at;
    if position.is_some_and(|p| p > 10) {
        assert_eq!(gap, Duration::from_millis(250));
    } else {
        assert_eq!(gap, Duration::from_secs(1));
    }
}

#[tokio::test(start_paused = true)]
async fn too_large_and_empty_scans_are_refused() {
    let network = FakeNetwork::new(FakePort::Closed, Duration::from_millis(1));
    let wide = Targets {
        set: TargetSet::new(&[range("2001:db8::/48")], &[]),
        given: vec!["2001:db8::/48".into()],
        excluded: Vec::new(),
        resolved: Vec::new(),
        problems: Vec::new(),
    };
    let (sender, _receiver) = mpsc::channel(1);
    let err = run(
        Arc::new(network.clone()),
        plan(wide, "1-10", options(Profile::Normal)),
        sender.clone(),
        CancellationToken::new(),
    )
    .await
    .err();
    assert!(matches!(err, Some(ScanError::TooLarge { n_ports: 10, .. })));
    let empty = targets(&["198.18.0.1"], &["198.18.0.0/24"]);
    let err = run(
        Arc::new(network),
        plan(empty, "1", options(Profile::Normal)),
        sender,
        CancellationToken::new(),
    )
    .await
    .err();
    assert_eq!(err, Some(ScanError::Empty("the target set is empty")));
}

#[tokio::test(start_paused = true)]
async fn progress_is_reported_while_scanning() {
    let network = FakeNetwork::new(FakePort::Closed, Duration::from_millis(1));
    let mut opts = options(Profile::Normal);
    opts.rate = Some(100.0);
    opts.progress_interval = Duration::from_secs(1);
    let finished = scan(
        &network,
        plan(targets(&["198.18.0.0/30"], &[]), "1-100", opts),
    )
    .await;
    let progress: Vec<(u64, f64)> = finished
        .events
        .iter()
        .filter_map(|e| match e {
            ScanEvent::Progress { done, rate, .. } => Some((*done, *rate)),
            _ => None,
        })
        .collect();
    // 400 probes at 100/s: about four seconds, a report each second.
    assert!(progress.len() >= 4, "{progress:?}");
    assert!(progress.windows(2).all(|w| w[0].0 <= w[1].0));
    assert_eq!(progress.last().map(|p| p.0), Some(400));
    // Mid-scan reports see the ceiling.
    let (_, mid_rate) = progress[1];
    assert!((90.0..=101.0).contains(&mid_rate), "{mid_rate}");
}

#[test]
fn timeouts_follow_each_host_then_its_network_and_double_on_silence() {
    let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
    let mut table = RttTable::default();
    let fast: IpAddr = "198.18.0.5".parse().expect("ip");
    let dropping: IpAddr = "198.18.0.9".parse().expect("ip");
    let elsewhere: IpAddr = "198.19.7.1".parse().expect("ip");
    // Nothing measured yet: the ceiling.
    assert_eq!(table.timeout(fast, 0, min, max), max);
    for _ in 0..8 {
        table.observe(fast, Duration::from_micros(300));
    }
    // A sub-millisecond network: the floor, for the host that answered and
    // for its neighbour that never does.
    assert_eq!(table.timeout(fast, 0, min, max), min);
    assert_eq!(table.timeout(dropping, 0, min, max), min);
    // Each silence doubles the wait, up to the ceiling.
    assert_eq!(table.timeout(dropping, 1, min, max), min * 2);
    assert_eq!(table.timeout(dropping, 2, min, max), min * 4);
    assert_eq!(table.timeout(dropping, 9, min, max), max);
    // Another network is not judged by this one.
    assert_eq!(table.timeout(elsewhere, 0, min, max), max);
    // A slow host's own round trips win over its fast network's.
    let slow: IpAddr = "198.18.0.77".parse().expect("ip");
    for _ in 0..8 {
        table.observe(slow, Duration::from_millis(400));
    }
    assert!(table.timeout(slow, 0, min, max) >= Duration::from_millis(400));
}

/// The first ports of a scan are all in flight before any answer: a port of
/// a host that drops everything, begun then, waited the whole 2 s ceiling
/// (issue 13 §5). Once its neighbours' answers make the network's round trip
/// known, it gives up at the network's timeout instead, and its retries
/// follow that timeout doubled.
#[tokio::test(start_paused = true)]
async fn an_attempt_begun_blind_follows_its_network_once_it_answers() {
    let network = FakeNetwork::new(FakePort::Closed, Duration::from_millis(1));
    network.set(sock("198.18.0.1:22"), FakePort::Silent);
    // Both ports go out in the first burst, before any answer.
    let finished = scan(
        &network,
        plan(
            targets(&["198.18.0.1", "198.18.0.2"], &[]),
            "22",
            options(Profile::Normal),
        ),
    )
    .await;
    assert_eq!(finished.state("198.18.0.1:22"), Some(PortState::Filtered));
    assert_eq!(finished.state("198.18.0.2:22"), Some(PortState::Closed));
    let attempts: Vec<Instant> = network
        .attempts()
        .iter()
        .filter(|a| a.address == sock("198.18.0.1:22"))
        .map(|a| a.at)
        .collect();
    // The first and two retries (the normal profile's two).
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    let first_wait = attempts[1] - attempts[0];
    // The floor (100 ms) and at most one look-again period, not the ceiling.
    assert!(
        first_wait >= Duration::from_millis(100) && first_wait < Duration::from_millis(200),
        "the first attempt waited {first_wait:?}"
    );
    let second_wait = attempts[2] - attempts[1];
    assert!(
        second_wait >= Duration::from_millis(200) && second_wait < Duration::from_millis(300),
        "the second attempt waited {second_wait:?}"
    );
    assert_eq!(network.in_flight(), 0, "every attempt left the network");
}
