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

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
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
    /// Timeout for each fresh connection.
    pub connect_timeout: Duration,
    /// At most this many probes per port (stealth keeps it small).
    pub max_probes: usize,
}

/// What identification learned about a port.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identification {
    pub identified: Option<Identified>,
    /// The probes that ran, in order, for logs and tests.
    pub probes_run: Vec<&'static str>,
    /// Fresh connections opened (not counting the scan's own).
    pub n_connections: u64,
}

/// Runs the probes for `address` in order until one identifies the service.
/// `first` is the scan's own connection, used for the first probe.
pub async fn identify<T: Transport>(
    transport: &T,
    rate: &RateLimiter,
    address: SocketAddr,
    first: Option<T::Stream>,
    probes: Vec<Box<dyn Probe>>,
    settings: IdentifySettings,
) -> Identification {
    let mut identification = Identification::default();
    let mut first = first;
    for mut probe in probes.into_iter().take(settings.max_probes) {
        let stream = match first.take() {
            Some(stream) => stream,
            None => {
                rate.acquire().await;
                identification.n_connections += 1;
                match transport.connect(address, settings.connect_timeout).await {
                    Connect::Open(stream) => stream,
                    // The port stopped answering, or this machine ran short of
                    // something: the scan already decided it is open, so keep what
                    // we have rather than guess.
                    Connect::Closed | Connect::Filtered(_) | Connect::LocalError(_) => break,
                }
            }
        };
        identification.probes_run.push(probe.name());
        let mut stream = stream;
        if let Some(identified) =
            run_probe(&mut stream, probe.as_mut(), settings.read_timeout).await
        {
            identification.identified = Some(identified);
            break;
        }
    }
    identification
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
    async fn silent_service_falls_through_to_the_next_probe_on_a_fresh_connection() {
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
        // The banner wait ran out once (500 ms) before the second probe.
        assert!(start.elapsed() >= Duration::from_millis(500));
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
