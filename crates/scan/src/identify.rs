//! The driver for `perimeter_probe::Probe` state machines: it owns the sockets,
//! the timeouts and the byte caps, and feeds each probe what the peer said.
//!
//! For an open port it runs the probes the catalogue lists for that port, each on
//! a fresh connection, until one identifies the service. The connection the scan
//! itself opened is handed to the first probe (it is fresh: nothing was sent on
//! it), which saves one connection per open port; every further connection takes
//! a rate token like any other attempt. Every read is time-bound, every answer is
//! capped at the probe's `max_response()`, and the whole identification of a port
//! sits under one deadline set by the engine.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use perimeter_model::{Finding, PortState, ServiceInfo, Severity};
use perimeter_probe::{Identified, Next, Probe};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::rate::RateLimiter;
use crate::transport::{Connect, Transport};

/// Where the probes for an open port come from. Any
/// `Fn(IpAddr, u16) -> Vec<Box<dyn Probe>>` will do; [`standard_probes`] is
/// `perimeter-probe`'s catalogue.
pub trait ProbeCatalog: Send + Sync {
    /// The probes to try on an open port, in order.
    fn probes_for(&self, address: IpAddr, port: u16) -> Vec<Box<dyn Probe>>;
}

impl<F> ProbeCatalog for F
where
    F: Fn(IpAddr, u16) -> Vec<Box<dyn Probe>> + Send + Sync,
{
    fn probes_for(&self, address: IpAddr, port: u16) -> Vec<Box<dyn Probe>> {
        self(address, port)
    }
}

/// `perimeter-probe`'s catalogue: the banner wait first, then what usually
/// listens on the port, then the rest (HTTP requests name the address and port
/// in `Host`).
pub fn standard_probes() -> SharedCatalog {
    Arc::new(perimeter_probe::probes_for_address)
}

/// A catalogue with no probes: identification reports every open port as
/// unidentified.
pub fn no_probes(_address: IpAddr, _port: u16) -> Vec<Box<dyn Probe>> {
    Vec::new()
}

/// How identification talks to a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentifySettings {
    /// How long one read waits for bytes (the banner wait, for a probe that
    /// starts by listening).
    pub read_timeout: Duration,
    /// How long a port may stay silent on the banner wait before the probes
    /// after it start on connections of their own; at `read_timeout` or
    /// above, they wait for the banner wait to end.
    pub ask_after: Duration,
    /// Timeout for each fresh connection.
    pub connect_timeout: Duration,
    /// At most this many probes per port (stealth keeps it small).
    pub max_probes: usize,
}

/// What identification learned about a port.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identification {
    pub identified: Option<Identified>,
    /// The probes that ran, in the order they started, for logs and tests.
    pub probes_run: Vec<&'static str>,
    /// Fresh connections opened (not counting the scan's own).
    pub n_connections: u64,
}

/// Runs the probes for `address` in order until one identifies the service.
/// `first` is the scan's own connection, used for the first probe.
///
/// Two things keep a port that answers at once from waiting: the catalogue
/// puts the probe of what the port suggests (Redis on 6379, HTTP on 80)
/// before the banner wait, and the banner wait is not waited out: after
/// `ask_after` of silence the probes after it run on connections of their
/// own, and whichever names the service first wins (a service that speaks
/// first greets those connections too, and their probes name it by its
/// greeting). An answer that names a service whose own probe is still to
/// come (a Redis error to an HTTP request) sends that probe next, for what
/// only it can prove (that Redis wants no password).
pub async fn identify<T: Transport>(
    transport: &T,
    rate: &RateLimiter,
    address: SocketAddr,
    first: Option<T::Stream>,
    probes: Vec<Box<dyn Probe>>,
    settings: IdentifySettings,
) -> Identification {
    let session = Session {
        transport,
        rate,
        address,
        settings,
        log: Mutex::new(Identification::default()),
    };
    let mut plan: VecDeque<Box<dyn Probe>> = probes.into_iter().take(settings.max_probes).collect();
    let identified = session.in_order(&mut plan, first).await;
    let mut identification = session
        .log
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    identification.identified = identified;
    identification
}

/// One port's identification: where it connects, and what it ran.
struct Session<'a, T: Transport> {
    transport: &'a T,
    rate: &'a RateLimiter,
    address: SocketAddr,
    settings: IdentifySettings,
    /// The probes run and connections made, by whichever of two racing
    /// conversations made them (a lock, not a `RefCell`: the future is
    /// sent between threads).
    log: Mutex<Identification>,
}

/// What one probe came to.
#[expect(
    clippy::large_enum_variant,
    reason = "one Step per probe, returned and matched at once, never stored"
)]
enum Step {
    Found(Identified),
    /// It did not recognise the service.
    Nothing,
    /// A fresh connection failed: the port stopped answering, or this
    /// machine ran short of something. The scan already decided it is
    /// open, so identification keeps what it has rather than guess.
    Stop,
}

impl<T: Transport> Session<'_, T> {
    fn logged(&self, change: impl FnOnce(&mut Identification)) {
        if let Ok(mut log) = self.log.lock() {
            change(&mut log);
        }
    }

    /// One probe, on `stream` or on a fresh connection (which takes a rate
    /// token).
    async fn run(&self, mut probe: Box<dyn Probe>, stream: Option<T::Stream>) -> Step {
        let mut stream = match stream {
            Some(stream) => stream,
            None => {
                self.rate.acquire().await;
                self.logged(|log| log.n_connections += 1);
                match self
                    .transport
                    .connect(self.address, self.settings.connect_timeout)
                    .await
                {
                    Connect::Open(stream) => stream,
                    Connect::Closed | Connect::Filtered(_) | Connect::LocalError(_) => {
                        return Step::Stop;
                    }
                }
            }
        };
        self.logged(|log| log.probes_run.push(probe.name()));
        match run_probe(&mut stream, probe.as_mut(), self.settings.read_timeout).await {
            Some(found) => Step::Found(found),
            None => Step::Nothing,
        }
    }

    /// Runs `plan` in order until a probe names the service, racing a
    /// banner wait against the rest of the plan.
    async fn in_order(
        &self,
        plan: &mut VecDeque<Box<dyn Probe>>,
        mut first: Option<T::Stream>,
    ) -> Option<Identified> {
        let mut sniffed = None;
        while let Some(probe) = plan.pop_front() {
            if probe.waits_for_greeting()
                && !plan.is_empty()
                && self.settings.ask_after < self.settings.read_timeout
            {
                return self.race(probe, first.take(), plan).await.or(sniffed);
            }
            match self.run(probe, first.take()).await {
                Step::Stop => break,
                Step::Nothing => {}
                Step::Found(found) => match follow_up(found, plan, &mut sniffed) {
                    Some(found) => return Some(found),
                    None => continue,
                },
            }
        }
        sniffed
    }

    /// Runs `plan` in order, one probe after another, with no race.
    async fn in_turn(&self, plan: &mut VecDeque<Box<dyn Probe>>) -> Option<Identified> {
        let mut sniffed = None;
        while let Some(probe) = plan.pop_front() {
            match self.run(probe, None).await {
                Step::Stop => break,
                Step::Nothing => {}
                Step::Found(found) => match follow_up(found, plan, &mut sniffed) {
                    Some(found) => return Some(found),
                    None => continue,
                },
            }
        }
        sniffed
    }

    /// The banner wait (`listener`, on `first` or a connection of its own)
    /// against the rest of `plan`, started after `ask_after` of silence:
    /// the first to name the service wins.
    async fn race(
        &self,
        listener: Box<dyn Probe>,
        first: Option<T::Stream>,
        plan: &mut VecDeque<Box<dyn Probe>>,
    ) -> Option<Identified> {
        let listening = self.run(listener, first);
        let asking = async {
            tokio::time::sleep(self.settings.ask_after).await;
            self.in_turn(plan).await
        };
        tokio::pin!(listening, asking);
        tokio::select! {
            step = &mut listening => match step {
                Step::Found(found) => Some(found),
                Step::Nothing | Step::Stop => asking.await,
            },
            found = &mut asking => match found {
                Some(found) => Some(found),
                None => match listening.await {
                    Step::Found(found) => Some(found),
                    Step::Nothing | Step::Stop => None,
                },
            },
        }
    }
}

/// What a probe's identification means for the rest of the plan. A name
/// read from an answer to another probe's question proves nothing else
/// (no findings); when the probe of that name is still in `plan`, it goes
/// next, the name is kept in `sniffed` in case it fails, and `None` says
/// to go on. Otherwise the identification stands.
fn follow_up(
    found: Identified,
    plan: &mut VecDeque<Box<dyn Probe>>,
    sniffed: &mut Option<Identified>,
) -> Option<Identified> {
    let own_probe = found
        .findings
        .is_empty()
        .then(|| {
            plan.iter()
                .position(|probe| probe.name() == found.service.name)
        })
        .flatten();
    match own_probe.and_then(|at| plan.remove(at)) {
        Some(probe) => {
            plan.push_front(probe);
            sniffed.get_or_insert(found);
            None
        }
        None => Some(found),
    }
}

/// One probe conversation on one connection.
pub async fn run_probe<S>(
    stream: &mut S,
    probe: &mut dyn Probe,
    read_timeout: Duration,
) -> Option<Identified>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let cap = probe.max_response();
    let mut received: Vec<u8> = Vec::new();
    let mut next = probe.start();
    loop {
        match next {
            Next::Done(identified) => return identified,
            Next::Send(request) => {
                received.clear();
                let written = tokio::time::timeout(read_timeout, stream.write_all(&request)).await;
                if !matches!(written, Ok(Ok(()))) {
                    return probe.on_end(&received, written.is_err());
                }
            }
            Next::Receive => {}
        }
        // Read once more, but never beyond the cap.
        let room = cap.saturating_sub(received.len());
        if room == 0 {
            // The probe wants more than it allowed itself: its answer ends here.
            return probe.on_end(&received, false);
        }
        let mut chunk = vec![0u8; room.min(8 * 1024)];
        match tokio::time::timeout(read_timeout, stream.read(&mut chunk)).await {
            Err(_elapsed) => return probe.on_end(&received, true),
            Ok(Ok(0)) | Ok(Err(_)) => return probe.on_end(&received, false),
            Ok(Ok(n)) => {
                received.extend_from_slice(chunk.get(..n).unwrap_or_default());
                next = probe.on_data(&received);
            }
        }
    }
}

/// `198.51.100.7:22` / `[2001:db8::7]:22`, how a port is named in findings.
pub fn subject(address: SocketAddr) -> String {
    SocketAddr::new(address.ip(), address.port()).to_string()
}

/// The findings for an open port: the probe's, with `subject` filled in, or,
/// when no probe proved anything specific, one `exposed.service` info finding
/// saying what answers there.
pub fn port_findings(
    address: SocketAddr,
    state: PortState,
    service: Option<&ServiceInfo>,
    probe_findings: Vec<Finding>,
    identification_ran: bool,
) -> Vec<Finding> {
    if state != PortState::Open {
        return probe_findings;
    }
    let subject = subject(address);
    if !probe_findings.is_empty() {
        return probe_findings
            .into_iter()
            .map(|mut finding| {
                finding.subject = subject.clone();
                finding
            })
            .collect();
    }
    let message = match service {
        Some(service) => {
            let mut what = service.name.clone();
            match (&service.product, &service.version) {
                (Some(product), Some(version)) => what.push_str(&format!(" ({product} {version})")),
                (Some(product), None) => what.push_str(&format!(" ({product})")),
                _ => {}
            }
            format!("{what} answers on {subject}")
        }
        None if identification_ran => {
            format!("port {subject} is open; the service was not identified")
        }
        None => format!("port {subject} is open (service identification was off)"),
    };
    let mut finding = Finding::new("exposed.service", Severity::Info, subject.clone(), message)
        .with_evidence(format!("{subject} answered a TCP SYN with a SYN-ACK"))
        .with_remedy("if the service is not meant to be reachable from here, close the port or restrict it to the clients that need it");
    if let Some(banner) = service.and_then(|s| s.banner.as_deref()) {
        finding = finding.with_evidence(format!("banner: {banner}"));
    }
    vec![finding]
}

/// Shared handle to a catalogue.
pub type SharedCatalog = Arc<dyn ProbeCatalog>;

#[cfg(test)]
pub(crate) mod test_probes {
    //! Probes written for the tests, standing in for `perimeter-probe`'s.

    use perimeter_model::{AuthState, Finding, ServiceInfo, Severity};
    use perimeter_probe::{Identified, Next, Probe};

    /// Waits for a greeting; identifies `name` when it starts with `prefix`.
    #[derive(Debug)]
    pub(crate) struct BannerProbe {
        pub(crate) prefix: &'static [u8],
        pub(crate) name: &'static str,
    }

    impl BannerProbe {
        fn judge(&self, received: &[u8]) -> Option<Identified> {
            received.starts_with(self.prefix).then(|| {
                let mut service = ServiceInfo::named(self.name);
                let line = received.split(|&b| b == b'\n').next().unwrap_or_default();
                service.banner = Some(String::from_utf8_lossy(line).trim().to_owned());
                Identified {
                    service,
                    findings: Vec::new(),
                }
            })
        }
    }

    impl Probe for BannerProbe {
        fn name(&self) -> &'static str {
            "banner"
        }

        fn waits_for_greeting(&self) -> bool {
            true
        }

        fn start(&mut self) -> Next {
            Next::Receive
        }

        fn on_data(&mut self, received: &[u8]) -> Next {
            if received.contains(&b'\n') {
                Next::Done(self.judge(received))
            } else {
                Next::Receive
            }
        }

        fn on_end(&mut self, received: &[u8], _timed_out: bool) -> Option<Identified> {
            self.judge(received)
        }

        fn max_response(&self) -> usize {
            256
        }
    }

    /// Sends `PING\r\n`; a `+PONG` means an unauthenticated Redis.
    #[derive(Debug, Default)]
    pub(crate) struct PingProbe;

    impl Probe for PingProbe {
        fn name(&self) -> &'static str {
            "ping"
        }

        fn start(&mut self) -> Next {
            Next::Send(b"PING\r\n".to_vec())
        }

        fn on_data(&mut self, received: &[u8]) -> Next {
            if !received.ends_with(b"\r\n") {
                return Next::Receive;
            }
            if received.starts_with(b"+PONG") {
                let mut service = ServiceInfo::named("redis");
                service.auth = AuthState::None;
                Next::Done(Some(Identified {
                    service,
                    findings: vec![
                        Finding::new(
                            "redis.no-auth",
                            Severity::Critical,
                            "",
                            "redis answers without a password",
                        )
                        .with_evidence("PING answered +PONG"),
                    ],
                }))
            } else {
                Next::Done(None)
            }
        }

        fn on_end(&mut self, _received: &[u8], _timed_out: bool) -> Option<Identified> {
            None
        }
    }

    /// Keeps asking for more; records how many bytes it was shown at the end.
    #[derive(Debug)]
    pub(crate) struct GreedyProbe {
        pub(crate) cap: usize,
        pub(crate) seen_at_end: std::sync::Arc<std::sync::Mutex<Option<(usize, bool)>>>,
    }

    impl Probe for GreedyProbe {
        fn name(&self) -> &'static str {
            "greedy"
        }

        fn start(&mut self) -> Next {
            Next::Receive
        }

        fn on_data(&mut self, _received: &[u8]) -> Next {
            Next::Receive
        }

        fn on_end(&mut self, received: &[u8], timed_out: bool) -> Option<Identified> {
            if let Ok(mut seen) = self.seen_at_end.lock() {
                *seen = Some((received.len(), timed_out));
            }
            None
        }

        fn max_response(&self) -> usize {
            self.cap
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::test_probes::*;
    use super::*;
    use crate::transport::fake::{FakeNetwork, FakePort, FakeService, ServerStep};

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("test socket address")
    }

    const SETTINGS: IdentifySettings = IdentifySettings {
        read_timeout: Duration::from_millis(500),
        ask_after: Duration::from_millis(50),
        connect_timeout: Duration::from_secs(1),
        max_probes: 8,
    };

    fn catalog() -> Vec<Box<dyn Probe>> {
        vec![
            Box::new(BannerProbe {
                prefix: b"SSH-",
                name: "ssh",
            }),
            Box::new(PingProbe),
        ]
    }

    async fn identify_on(service: FakeService, max_probes: usize) -> (Identification, FakeNetwork) {
        let network = FakeNetwork::new(FakePort::Open(service), Duration::from_millis(1));
        let rate = RateLimiter::new(None, 0);
        let target = addr("198.18.0.2:6379");
        let first = match network.connect(target, SETTINGS.connect_timeout).await {
            Connect::Open(stream) => Some(stream),
            _ => None,
        };
        let settings = IdentifySettings {
            max_probes,
            ..SETTINGS
        };
        let identification = identify(&network, &rate, target, first, catalog(), settings).await;
        (identification, network)
    }

    #[tokio::test(start_paused = true)]
    async fn banner_probe_identifies_on_the_scan_connection() {
        let (identification, network) =
            identify_on(FakeService::banner(b"SSH-2.0-OpenSSH_9.2\r\n"), 8).await;
        let identified = identification.identified.expect("identified");
        assert_eq!(identified.service.name, "ssh");
        assert_eq!(
            identified.service.banner.as_deref(),
            Some("SSH-2.0-OpenSSH_9.2")
        );
        assert_eq!(identification.probes_run, ["banner"]);
        assert_eq!(identification.n_connections, 0);
        assert_eq!(network.attempts().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_port_is_asked_without_waiting_out_the_banner() {
        let redis = FakeService::steps(vec![
            ServerStep::Expect(b"PING\r\n".to_vec()),
            ServerStep::Send(b"+PONG\r\n".to_vec()),
        ]);
        let start = tokio::time::Instant::now();
        let (identification, network) = identify_on(redis, 8).await;
        let identified = identification.identified.expect("identified");
        assert_eq!(identified.service.name, "redis");
        assert_eq!(identified.findings.len(), 1);
        assert_eq!(identification.probes_run, ["banner", "ping"]);
        assert_eq!(identification.n_connections, 1);
        assert_eq!(network.attempts().len(), 2);
        // The ping went out on a second connection after 50 ms of silence
        // (virtual time), not after the 500 ms banner wait.
        let elapsed = start.elapsed();
        assert!(
            elapsed >= SETTINGS.ask_after && elapsed < SETTINGS.read_timeout,
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_ask_after_the_banner_wait_is_waited_out() {
        let redis = FakeService::steps(vec![
            ServerStep::Expect(b"PING\r\n".to_vec()),
            ServerStep::Send(b"+PONG\r\n".to_vec()),
        ]);
        let network = FakeNetwork::new(FakePort::Open(redis), Duration::from_millis(1));
        let rate = RateLimiter::new(None, 0);
        let start = tokio::time::Instant::now();
        let settings = IdentifySettings {
            ask_after: SETTINGS.read_timeout,
            ..SETTINGS
        };
        let target = addr("198.18.0.2:6379");
        let identification = identify(&network, &rate, target, None, catalog(), settings).await;
        assert_eq!(identification.probes_run, ["banner", "ping"]);
        assert!(identification.identified.is_some());
        // The stealth profile's way: a second connection only after the
        // first said nothing for the whole wait.
        assert!(start.elapsed() >= SETTINGS.read_timeout);
    }

    /// A greeting that comes after the second connection was opened still
    /// names the service: whichever conversation names it first wins.
    #[tokio::test(start_paused = true)]
    async fn a_late_greeting_still_names_the_service() {
        let slow_ssh = FakeService::steps(vec![
            ServerStep::Wait(Duration::from_millis(150)),
            ServerStep::Send(b"SSH-2.0-slow\r\n".to_vec()),
        ]);
        let network = FakeNetwork::new(FakePort::Open(slow_ssh), Duration::from_millis(1));
        let rate = RateLimiter::new(None, 0);
        let target = addr("198.18.0.2:2222");
        let identification = identify(&network, &rate, target, None, catalog(), SETTINGS).await;
        let identified = identification.identified.expect("identified");
        assert_eq!(identified.service.name, "ssh");
        assert_eq!(identification.probes_run, ["banner", "ping"]);
    }

    /// Redis on a port that suggests nothing is still named, and flagged,
    /// by the standard catalogue, without waiting out the banner.
    #[tokio::test(start_paused = true)]
    async fn redis_on_an_unexpected_port_is_named() {
        let network = FakeNetwork::new(FakePort::Open(fake_redis()), Duration::from_millis(1));
        let rate = RateLimiter::new(None, 0);
        let target = addr("198.18.0.2:2000");
        let start = tokio::time::Instant::now();
        let identification = identify(
            &network,
            &rate,
            target,
            None,
            standard_probes().probes_for(target.ip(), target.port()),
            SETTINGS,
        )
        .await;
        let identified = identification.identified.expect("identified");
        assert_eq!(identified.service.name, "redis");
        assert_eq!(identified.service.version.as_deref(), Some("7.0.15"));
        let rules: Vec<_> = identified
            .findings
            .iter()
            .map(|f| f.rule.as_str())
            .collect();
        assert_eq!(rules, [perimeter_probe::rules::REDIS_NOAUTH]);
        assert_eq!(identification.probes_run, ["banner", "redis"]);
        assert!(start.elapsed() < SETTINGS.read_timeout);
    }

    /// On a port that suggests HTTP, the HTTP probe asks at once; a Redis
    /// error to its request names Redis, and the Redis probe goes next for
    /// what only it can prove.
    #[tokio::test(start_paused = true)]
    async fn a_sniffed_name_sends_its_own_probe_next() {
        let network = FakeNetwork::new(FakePort::Open(fake_redis()), Duration::from_millis(1));
        let rate = RateLimiter::new(None, 0);
        let target = addr("198.18.0.2:8080");
        let start = tokio::time::Instant::now();
        let identification = identify(
            &network,
            &rate,
            target,
            None,
            standard_probes().probes_for(target.ip(), target.port()),
            SETTINGS,
        )
        .await;
        let identified = identification.identified.expect("identified");
        assert_eq!(identified.service.name, "redis");
        assert_eq!(identified.findings.len(), 1);
        assert_eq!(identification.probes_run, ["http", "redis"]);
        // Neither waited for a banner.
        assert!(start.elapsed() < SETTINGS.ask_after);
    }

    /// A Redis without a password: PING, INFO, and an error for anything
    /// else (as Redis answers an HTTP request line).
    fn fake_redis() -> FakeService {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n";
        FakeService::steps(vec![ServerStep::Respond {
            rules: vec![
                (b"PING".to_vec(), b"+PONG\r\n".to_vec()),
                (
                    b"INFO".to_vec(),
                    format!("${}\r\n{info}\r\n", info.len()).into_bytes(),
                ),
            ],
            otherwise: Some(
                b"-ERR unknown command 'GET', with args beginning with: '/' \r\n".to_vec(),
            ),
        }])
    }

    #[tokio::test(start_paused = true)]
    async fn max_probes_limits_the_conversation() {
        let (identification, network) = identify_on(FakeService::silent(), 1).await;
        assert_eq!(identification.identified, None);
        assert_eq!(identification.probes_run, ["banner"]);
        assert_eq!(network.attempts().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_capped_at_max_response() {
        let network = FakeNetwork::new(
            FakePort::Open(FakeService::steps(vec![ServerStep::Flood(b'x')])),
            Duration::ZERO,
        );
        let target = addr("198.18.0.2:80");
        let Connect::Open(mut stream) = network.connect(target, SETTINGS.connect_timeout).await
        else {
            panic!("fake port should be open");
        };
        let seen = Arc::new(Mutex::new(None));
        let mut probe = GreedyProbe {
            cap: 10_000,
            seen_at_end: seen.clone(),
        };
        let identified = run_probe(&mut stream, &mut probe, SETTINGS.read_timeout).await;
        assert_eq!(identified, None);
        assert_eq!(*seen.lock().expect("lock"), Some((10_000, false)));
    }

    #[tokio::test(start_paused = true)]
    async fn silence_ends_with_a_timeout() {
        let network = FakeNetwork::new(
            FakePort::Open(FakeService::banner(b"partial")),
            Duration::ZERO,
        );
        let Connect::Open(mut stream) = network
            .connect(addr("198.18.0.2:80"), SETTINGS.connect_timeout)
            .await
        else {
            panic!("fake port should be open");
        };
        let seen = Arc::new(Mutex::new(None));
        let mut probe = GreedyProbe {
            cap: 100,
            seen_at_end: seen.clone(),
        };
        run_probe(&mut stream, &mut probe, SETTINGS.read_timeout).await;
        assert_eq!(*seen.lock().expect("lock"), Some((7, true)));
    }

    #[test]
    fn findings_name_the_port_and_exposure() {
        let v4 = addr("198.18.0.2:6379");
        let v6 = addr("[2001:db8::2]:22");
        let specific = vec![Finding::new(
            "redis.no-auth",
            Severity::Critical,
            "",
            "open redis",
        )];
        let filled = port_findings(v4, PortState::Open, None, specific, true);
        assert_eq!(filled.len(), 1);
        assert_eq!(filled[0].subject, "198.18.0.2:6379");
        assert_eq!(filled[0].rule, "redis.no-auth");

        let mut ssh = ServiceInfo::named("ssh");
        ssh.product = Some("OpenSSH".into());
        ssh.version = Some("9.2p1".into());
        ssh.banner = Some("SSH-2.0-OpenSSH_9.2p1".into());
        let exposed = port_findings(v6, PortState::Open, Some(&ssh), Vec::new(), true);
        assert_eq!(exposed.len(), 1);
        assert_eq!(exposed[0].rule, "exposed.service");
        assert_eq!(exposed[0].severity, Severity::Info);
        assert_eq!(exposed[0].subject, "[2001:db8::2]:22");
        assert_eq!(
            exposed[0].message,
            "ssh (OpenSSH 9.2p1) answers on [2001:db8::2]:22"
        );
        assert_eq!(exposed[0].evidence[1], "banner: SSH-2.0-OpenSSH_9.2p1");

        let unknown = port_findings(v4, PortState::Open, None, Vec::new(), true);
        assert_eq!(
            unknown[0].message,
            "port 198.18.0.2:6379 is open; the service was not identified"
        );
        let off = port_findings(v4, PortState::Open, None, Vec::new(), false);
        assert_eq!(
            off[0].message,
            "port 198.18.0.2:6379 is open (service identification was off)"
        );
        assert!(port_findings(v4, PortState::Closed, None, Vec::new(), true).is_empty());
    }
}
