//! The UDP probes against real daemons on loopback: memcached with UDP on,
//! dnsmasq as a forwarding resolver (its upstream a second dnsmasq, both on
//! 127.0.0.1), net-snmp's snmpd, chrony, and ntpsec's ntpd. Each test starts
//! its daemons on free high ports (ntpd on 127.0.0.1:123, as it has no port
//! option), kills them in `Drop`, sends the plan's datagrams through a small
//! blocking driver and checks what `identify_udp` makes of the real replies,
//! negative cases included (a secret community, recursion off, queries
//! refused).
//!
//! Datagrams go to 127.0.0.1 only: the driver refuses any other address. A
//! test whose daemon is missing goes through `perimeter_testlab`'s one
//! requirement mechanism: skipped with a reason, or under
//! `PERIMETER_TEST_STRICT=1` (CI) a failure.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use perimeter_model::{AuthState, Severity};
use perimeter_probe::udp::{self, UdpPayload, UdpRequest};
use perimeter_probe::{Identified, rules};

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// How long to wait for a first datagram. Loopback daemons answer in
/// microseconds when idle; this only bounds silence, which the negative cases
/// wait out once each.
const FIRST_REPLY: Duration = Duration::from_secs(2);
/// How long to wait for each further datagram of the same answer.
const NEXT_REPLY: Duration = Duration::from_millis(300);
/// The most datagrams read for one request.
const MAX_DATAGRAMS: usize = 64;

/// A daemon started for one test, killed and reaped when dropped, with the
/// temporary directory its configuration lives in.
struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
    what: &'static str,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// What the daemon wrote to its log, for failure messages.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

/// Says a test cannot run here, through the one mechanism every test uses
/// (`perimeter_testlab::require_that`): a `SKIPPED` line, or under
/// `PERIMETER_TEST_STRICT=1` a failure. `test` is kept in the message for
/// readers of the source; the mechanism names the test itself.
fn unavailable(test: &str, why: &str) {
    let _ = perimeter_testlab::require_that(test, Err(why.to_owned()));
}

macro_rules! require {
    ($test:expr, $found:expr, $why:expr) => {
        match $found {
            Some(found) => found,
            None => {
                unavailable($test, $why);
                return;
            }
        }
    };
}

fn find_binary(candidates: &[&str]) -> Option<PathBuf> {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|error| panic!("temp dir: {error}"))
}

/// A UDP port free on 127.0.0.1 now (bound and released; the daemon binds it
/// next).
fn free_udp_port() -> u16 {
    UdpSocket::bind((LOCALHOST, 0))
        .and_then(|socket| socket.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|error| panic!("no free UDP port: {error}"))
}

/// A port free for both UDP and TCP on 127.0.0.1 at the time of asking, for
/// daemons (dnsmasq) that bind both: the kernel hands out UDP and TCP
/// ephemeral ports independently, so a parallel test may hold the TCP twin.
fn free_udp_and_tcp_port() -> u16 {
    loop {
        let port = free_udp_port();
        if std::net::TcpListener::bind((LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

/// Which local addresses have a UDP socket bound on `port`, from
/// /proc/net/udp (`0100007F:007B` is 127.0.0.1:123).
fn udp_bound(port: u16) -> Vec<Ipv4Addr> {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(1))
        .filter_map(|local| local.split_once(':'))
        .filter(|(_, hex_port)| u16::from_str_radix(hex_port, 16).ok() == Some(port))
        .filter_map(|(hex_addr, _)| u32::from_str_radix(hex_addr, 16).ok())
        // The kernel prints the address in host byte order (little-endian here).
        .map(|raw| Ipv4Addr::from(raw.swap_bytes()))
        .collect()
}

/// Starts `command` with its output in the temp dir and waits until `port` is
/// bound on 127.0.0.1, failing with the daemon's log if it exits first.
fn start(what: &'static str, command: Command, dir: tempfile::TempDir, port: u16) -> Daemon {
    try_start(what, command, dir, port).unwrap_or_else(|why| panic!("{why}"))
}

/// [`start`], with the daemon's early exit as an error (and its log) so a
/// caller that lost a race for its port can try another.
fn try_start(
    what: &'static str,
    mut command: Command,
    dir: tempfile::TempDir,
    port: u16,
) -> Result<Daemon, String> {
    let log = std::fs::File::create(dir.path().join("stderr.log"))
        .unwrap_or_else(|error| panic!("log file: {error}"));
    let log_err = log
        .try_clone()
        .unwrap_or_else(|error| panic!("log file: {error}"));
    let child = command
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .unwrap_or_else(|error| panic!("starting {what} ({command:?}): {error}"));
    let mut daemon = Daemon { child, dir, what };
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if udp_bound(port).contains(&LOCALHOST) {
            return Ok(daemon);
        }
        if let Ok(Some(status)) = daemon.child.try_wait() {
            return Err(format!(
                "{what} exited ({status}) before binding {port}:\n{}",
                daemon.log()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "{what} did not bind 127.0.0.1:{port}:\n{}",
        daemon.log()
    ))
}

/// Sends one datagram to 127.0.0.1:`port` from a fresh socket connected to it
/// (so only the target's datagrams are read) and returns every datagram that
/// comes back before the silence bounds pass.
fn exchange(port: u16, payload: &[u8]) -> Vec<Vec<u8>> {
    let target = SocketAddr::from((LOCALHOST, port));
    // The one place these tests send from: never anything but loopback.
    assert!(target.ip().is_loopback(), "refusing to send to {target}");
    let socket = UdpSocket::bind((LOCALHOST, 0))
        .and_then(|socket| socket.connect(target).map(|()| socket))
        .unwrap_or_else(|error| panic!("socket to {target}: {error}"));
    if let Err(error) = socket.send(payload) {
        panic!("send to {target}: {error}");
    }
    let mut replies = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let mut wait = FIRST_REPLY;
    while replies.len() < MAX_DATAGRAMS {
        if socket.set_read_timeout(Some(wait)).is_err() {
            break;
        }
        match socket.recv(&mut buf) {
            Ok(n) => replies.push(buf.get(..n).unwrap_or_default().to_vec()),
            // A timeout, or ICMP port unreachable (ECONNREFUSED): no more.
            Err(_) => break,
        }
        wait = NEXT_REPLY;
    }
    replies
}

/// What the plan for `port` learns from the daemon on `target_port`, the way
/// an engine runs it: each payload in order (skipping follow-ups when nothing
/// answered), each datagram through `identify_udp`, all merged. Returns the
/// identification and, per payload, how many datagrams came back.
fn run_plan(
    payloads: &[UdpPayload],
    port_hint: u16,
    target_port: u16,
) -> (Option<Identified>, Vec<(&'static str, usize)>) {
    let mut found: Option<Identified> = None;
    let mut answered = false;
    let mut counts = Vec::new();
    for payload in payloads {
        if payload.only_if_answered && !answered {
            continue;
        }
        let replies = exchange(target_port, &payload.bytes);
        counts.push((payload.request.name(), replies.len()));
        answered |= !replies.is_empty();
        for reply in &replies {
            if let Some(more) = udp::identify_udp(port_hint, payload, reply) {
                match &mut found {
                    Some(found) => udp::merge(found, more),
                    None => found = Some(more),
                }
            }
        }
    }
    (found, counts)
}

fn rules_of(found: &Identified) -> Vec<(&str, Severity)> {
    found
        .findings
        .iter()
        .map(|finding| (finding.rule.as_str(), finding.severity))
        .collect()
}

/// The text after `marker` in a program's version output, up to a space.
fn version_from(program: &Path, args: &[&str], marker: &str) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let after = text.split(marker).nth(1)?;
    Some(after.split([' ', ',', '\n']).next()?.to_string())
}

// memcached ------------------------------------------------------------------

fn memcached(test: &str, udp_port: Option<u16>) -> Option<(Daemon, PathBuf)> {
    let Some(binary) = find_binary(&["/usr/bin/memcached"]) else {
        unavailable(
            test,
            "memcached is not installed (apt-get install memcached)",
        );
        return None;
    };
    let tcp_port = free_udp_port();
    let mut command = Command::new(&binary);
    command.args(["-l", "127.0.0.1", "-p", &tcp_port.to_string(), "-U"]);
    command.arg(udp_port.map_or("0".to_string(), |port| port.to_string()));
    if is_root() {
        command.args(["-u", "nobody"]);
    }
    let dir = temp_dir();
    // With UDP off there is no UDP socket to wait for; wait for TCP instead.
    let daemon = match udp_port {
        Some(port) => start("memcached", command, dir, port),
        None => start_tcp("memcached", command, dir, tcp_port),
    };
    Some((daemon, binary))
}

fn start_tcp(
    what: &'static str,
    mut command: Command,
    dir: tempfile::TempDir,
    port: u16,
) -> Daemon {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("starting {what}: {error}"));
    let daemon = Daemon { child, dir, what };
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect((LOCALHOST, port)).is_ok() {
            return daemon;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{} did not listen on tcp {port}", daemon.what);
}

#[test]
fn memcached_over_udp_is_high() {
    let test = "memcached_over_udp_is_high";
    let port = free_udp_port();
    let Some((daemon, binary)) = memcached(test, Some(port)) else {
        return;
    };
    let (found, counts) = run_plan(&udp::udp_payloads_for(11211), 11211, port);
    let found = found.unwrap_or_else(|| panic!("{} not identified: {counts:?}", daemon.what));
    assert_eq!(found.service.name, "memcached");
    assert_eq!(
        found.service.version,
        version_from(&binary, &["-V"], "memcached ")
    );
    assert_eq!(found.service.auth, AuthState::None);
    assert_eq!(rules_of(&found), [(rules::MEMCACHED_UDP, Severity::High)]);
    // `stats` over UDP comes back as at least one datagram (two or more on
    // memcached 1.6, whose stats text passes the 1400-byte UDP payload).
    assert!(
        counts
            .iter()
            .any(|&(name, n)| name == "memcached-stats" && n >= 1),
        "{counts:?}"
    );
    assert!(found.service.extra.contains_key("uptime"), "{found:?}");
}

#[test]
fn memcached_without_udp_says_nothing() {
    let test = "memcached_without_udp_says_nothing";
    let Some((_daemon, _)) = memcached(test, None) else {
        return;
    };
    // The default since 1.5.6: UDP off. The datagram meets a closed port.
    let port = free_udp_port();
    let (found, counts) = run_plan(&udp::udp_payloads_for(11211), 11211, port);
    assert_eq!(found, None);
    assert_eq!(counts, [("memcached-version", 0)]);
}

// dnsmasq --------------------------------------------------------------------

const NO_DNSMASQ: &str = "dnsmasq is not installed (apt-get install dnsmasq-base)";

fn dnsmasq_binary() -> Option<PathBuf> {
    find_binary(&["/usr/sbin/dnsmasq"])
}

/// A dnsmasq on a free 127.0.0.1 port (returned) reading no system files
/// (`-C /dev/null`, `--no-resolv`, `--no-hosts`), with `extra` arguments.
/// dnsmasq binds TCP beside UDP, so a port another test took between the
/// choice and the bind is given up for a fresh one (a few times at most).
fn dnsmasq(binary: &Path, extra: &[String]) -> (Daemon, u16) {
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_udp_and_tcp_port();
        let mut command = Command::new(binary);
        command.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--pid-file=",
        ]);
        command.arg(format!("--port={port}"));
        command.args(extra);
        match try_start("dnsmasq", command, temp_dir(), port) {
            Ok(daemon) => return (daemon, port),
            Err(why) => last = why,
        }
    }
    panic!("{last}")
}

#[test]
fn dnsmasq_forwarding_for_anyone_is_an_open_resolver() {
    let test = "dnsmasq_forwarding_for_anyone_is_an_open_resolver";
    let binary = require!(test, dnsmasq_binary(), NO_DNSMASQ);
    // The upstream: a second dnsmasq on loopback holding `example.com` as local
    // data, so no query ever leaves the host.
    let (_upstream, upstream_port) = dnsmasq(
        &binary,
        &[
            "--host-record=example.com,192.0.2.1".into(),
            "--local-ttl=300".into(),
        ],
    );
    let (_resolver, port) = dnsmasq(&binary, &[format!("--server=127.0.0.1#{upstream_port}")]);
    let payloads = udp::udp_payloads_for(53);
    let Some(recursion) = payloads.first() else {
        panic!("a plan for 53");
    };
    // First answer: forwarded, and dnsmasq passes on the upstream's AA=1, so
    // the reply claims authority and proves nothing (a false negative the
    // rule accepts rather than a false positive).
    let first = exchange(port, &recursion.bytes);
    let first = first
        .first()
        .and_then(|reply| udp::identify_udp(53, recursion, reply));
    let Some(first) = first else {
        panic!("the forwarded answer identifies DNS");
    };
    assert_eq!(first.service.name, "domain");
    assert_eq!(
        first.service.extra.get("recursion").map(String::as_str),
        Some("authoritative answer")
    );
    assert!(first.findings.is_empty());
    // Second answer: from dnsmasq's cache, AA=0, RA=1: it served a name it is
    // not authoritative for to an arbitrary client.
    let (found, counts) = run_plan(&payloads, 53, port);
    let found = found.unwrap_or_else(|| panic!("not identified: {counts:?}"));
    assert_eq!(
        rules_of(&found),
        [(rules::DNS_OPEN_RESOLVER, Severity::High)]
    );
    assert_eq!(
        found.findings.first().map(|f| f.evidence.clone()),
        Some(vec![
            "example.com A asked with RD=1 was answered NOERROR, RA=1, AA=0 with 1 answer \
             record(s), first address 192.0.2.1"
                .to_string()
        ])
    );
    // version.bind names dnsmasq and its version.
    assert_eq!(found.service.product.as_deref(), Some("dnsmasq"));
    assert_eq!(
        found.service.version,
        version_from(&binary, &["--version"], "Dnsmasq version ")
    );
}

#[test]
fn dnsmasq_without_upstream_refuses_and_is_no_finding() {
    let test = "dnsmasq_without_upstream_refuses_and_is_no_finding";
    let binary = require!(test, dnsmasq_binary(), NO_DNSMASQ);
    let (_resolver, port) = dnsmasq(&binary, &[]);
    let (found, counts) = run_plan(&udp::udp_payloads_for(53), 53, port);
    let found = found.unwrap_or_else(|| panic!("not identified: {counts:?}"));
    assert_eq!(found.service.name, "domain");
    assert_eq!(
        found.service.extra.get("recursion").map(String::as_str),
        Some("refused")
    );
    assert!(found.findings.is_empty(), "{found:?}");
    assert_eq!(found.service.product.as_deref(), Some("dnsmasq"));
}

// snmpd ----------------------------------------------------------------------

fn snmpd(test: &str, community: &str) -> Option<(Daemon, u16)> {
    let Some(binary) = find_binary(&["/usr/sbin/snmpd"]) else {
        unavailable(test, "snmpd is not installed (apt-get install snmpd)");
        return None;
    };
    let port = free_udp_port();
    let dir = temp_dir();
    let config = dir.path().join("snmpd.conf");
    let text = format!("agentAddress udp:127.0.0.1:{port}\nrocommunity {community} 127.0.0.1\n");
    std::fs::write(&config, text).unwrap_or_else(|error| panic!("snmpd.conf: {error}"));
    let mut command = Command::new(binary);
    // -f: foreground; -Lo: log to stdout; -C: only this configuration file.
    command
        .args(["-f", "-Lo", "-C", "-c"])
        .arg(&config)
        .env("SNMP_PERSISTENT_DIR", dir.path())
        .env("MIBS", "");
    Some((start("snmpd", command, dir, port), port))
}

#[test]
fn snmpd_with_public_is_high() {
    let test = "snmpd_with_public_is_high";
    let Some((daemon, port)) = snmpd(test, "public") else {
        return;
    };
    let (found, counts) = run_plan(&udp::udp_payloads_for(161), 161, port);
    let found = found.unwrap_or_else(|| panic!("not identified: {counts:?}\n{}", daemon.log()));
    assert_eq!(counts, [("snmp-v2c-public", 1), ("snmp-v1-public", 1)]);
    assert_eq!(found.service.name, "snmp");
    assert_eq!(found.service.auth, AuthState::None);
    assert_eq!(rules_of(&found), [(rules::SNMP_PUBLIC, Severity::High)]);
    // net-snmp's default sysDescr is the uname line of the host.
    let descr = found
        .service
        .extra
        .get("sysdescr")
        .cloned()
        .unwrap_or_default();
    assert!(descr.starts_with("Linux "), "{descr:?}");
    assert_eq!(found.service.banner.as_deref(), Some(descr.as_str()));
}

#[test]
fn snmpd_with_a_secret_community_stays_silent() {
    let test = "snmpd_with_a_secret_community_stays_silent";
    let Some((_daemon, port)) = snmpd(test, "s3cret-perimeter-test") else {
        return;
    };
    let (found, counts) = run_plan(&udp::udp_payloads_for(161), 161, port);
    assert_eq!(found, None);
    assert_eq!(counts, [("snmp-v2c-public", 0), ("snmp-v1-public", 0)]);
}

// NTP ------------------------------------------------------------------------

#[test]
fn chrony_answers_time_and_nothing_else() {
    let test = "chrony_answers_time_and_nothing_else";
    let binary = require!(
        test,
        find_binary(&["/usr/sbin/chronyd"]),
        "chronyd is not installed (apt-get install chrony)"
    );
    let port = free_udp_port();
    let dir = temp_dir();
    let config = dir.path().join("chrony.conf");
    // No sources; serve time on a loopback high port to loopback only; no
    // command port. With -x chronyd never touches the system clock.
    let text = format!(
        "port {port}\nbindaddress 127.0.0.1\nallow 127.0.0.1\ncmdport 0\npidfile {dir}/chronyd.pid\ndriftfile {dir}/drift\n",
        dir = dir.path().display()
    );
    std::fs::write(&config, text).unwrap_or_else(|error| panic!("chrony.conf: {error}"));
    let mut command = Command::new(binary);
    command.args(["-d", "-x", "-f"]).arg(&config);
    // As root chronyd drops to _chrony, which cannot write the temp dir; as
    // anyone else it must be told not to insist on root.
    if is_root() {
        command.args(["-u", "root"]);
    } else {
        command.arg("-U");
    }
    let daemon = start("chronyd", command, dir, port);
    let (found, counts) = run_plan(&udp::udp_payloads_for(123), 123, port);
    let found = found.unwrap_or_else(|| panic!("not identified: {counts:?}\n{}", daemon.log()));
    // Mode 3 answered; chrony implements neither mode 6 nor mode 7.
    assert_eq!(
        counts,
        [("ntp-client", 1), ("ntp-readvar", 0), ("ntp-monlist", 0)]
    );
    assert_eq!(found.service.name, "ntp");
    assert_eq!(
        found.service.extra.get("protocol").map(String::as_str),
        Some("NTPv4")
    );
    assert!(found.findings.is_empty(), "{found:?}");
}

/// ntpsec's ntpd: the Debian package (which conflicts with chrony, so
/// scripts/test unpacks it under /opt/perimeter-test instead of installing it),
/// or the path in `PERIMETER_TEST_NTPSEC_NTPD`.
fn ntpsec_binary() -> Option<PathBuf> {
    let from_env = std::env::var_os("PERIMETER_TEST_NTPSEC_NTPD").map(PathBuf::from);
    let candidates = from_env.into_iter().chain([
        PathBuf::from("/opt/perimeter-test/ntpsec/usr/sbin/ntpd"),
        PathBuf::from("/usr/sbin/ntpd"),
    ]);
    candidates.into_iter().find(|path| {
        path.is_file()
            && Command::new(path)
                .arg("--version")
                .output()
                .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("ntpsec"))
    })
}

/// Runs ntpsec's ntpd on 127.0.0.1:123 with `restrict_localhost` as the
/// restriction for our queries. It listens on loopback only, has no time
/// sources and, with `disable ntp` and `disable kernel`, never disciplines the
/// system clock.
fn ntpsec(binary: &Path, restrict_localhost: &str) -> Daemon {
    let dir = temp_dir();
    let config = dir.path().join("ntp.conf");
    let text = format!(
        "interface ignore wildcard\ninterface ignore ipv6\ninterface listen 127.0.0.1\n\
         disable ntp\ndisable kernel\ndriftfile {dir}/drift\nstatsdir {dir}/\n\
         restrict default\nrestrict 127.0.0.1 {restrict_localhost}\n",
        dir = dir.path().display()
    );
    std::fs::write(&config, text).unwrap_or_else(|error| panic!("ntp.conf: {error}"));
    let mut command = Command::new(binary);
    command
        .args(["-n", "-c"])
        .arg(&config)
        .arg("-p")
        .arg(dir.path().join("ntpd.pid"))
        .arg("-l")
        .arg(dir.path().join("ntpd.log"));
    let daemon = start("ntpd", command, dir, 123);
    let bound = udp_bound(123);
    assert!(
        bound.iter().all(Ipv4Addr::is_loopback),
        "ntpd bound port 123 beyond loopback: {bound:?}"
    );
    daemon
}

#[test]
fn ntpsec_answering_control_queries_is_mode6() {
    let test = "ntpsec_answering_control_queries_is_mode6";
    let binary = require!(
        test,
        ntpsec_binary(),
        "ntpsec's ntpd is not installed (scripts/test unpacks it under /opt/perimeter-test/ntpsec)"
    );
    if !is_root() {
        return unavailable(test, "ntpd binds port 123, which needs root");
    }
    if !udp_bound(123).is_empty() {
        return unavailable(test, "something already listens on UDP port 123");
    }
    let version = version_from(&binary, &["--version"], "ntpsec-");
    {
        let _ntpd = ntpsec(&binary, "");
        let (found, counts) = run_plan(&udp::udp_payloads_for(123), 123, 123);
        let found = found.unwrap_or_else(|| panic!("not identified: {counts:?}"));
        // Mode 3 and mode 6 answered (READVAR may span datagrams); ntpsec has
        // no mode 7 at all.
        assert!(
            matches!(counts.as_slice(), [("ntp-client", 1), ("ntp-readvar", n), ("ntp-monlist", 0)] if *n >= 1),
            "{counts:?}"
        );
        assert_eq!(rules_of(&found), [(rules::NTP_MODE6, Severity::Medium)]);
        assert_eq!(found.service.product.as_deref(), Some("ntpsec"));
        assert_eq!(
            found.service.version.as_deref(),
            version.as_deref().map(|v| v.split('+').next().unwrap_or(v))
        );
    }
    // `noquery`: mode 6 dropped, time still served, no finding.
    let _ntpd = ntpsec(&binary, "noquery");
    let (found, counts) = run_plan(&udp::udp_payloads_for(123), 123, 123);
    assert_eq!(
        counts,
        [("ntp-client", 1), ("ntp-readvar", 0), ("ntp-monlist", 0)]
    );
    assert!(found.is_some_and(|found| found.findings.is_empty()));
}

/// The same datagrams an engine sends, checked to be what the plan promises
/// before any daemon sees them (a guard against a plan that changes under the
/// tests above).
#[test]
fn plans_used_above_are_the_documented_ones() {
    let names = |port| {
        udp::udp_requests_for(port)
            .iter()
            .map(|request: &UdpRequest| request.name())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(53), ["dns-recursion", "dns-version"]);
    assert_eq!(names(123), ["ntp-client", "ntp-readvar", "ntp-monlist"]);
    assert_eq!(names(161), ["snmp-v2c-public", "snmp-v1-public"]);
    assert_eq!(names(11211), ["memcached-version", "memcached-stats"]);
}
