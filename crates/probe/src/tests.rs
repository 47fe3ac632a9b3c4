//! Tests of the identification plan and of `sniff`.

use super::*;

fn names(probes: &[Box<dyn Probe>]) -> Vec<&'static str> {
    probes.iter().map(|probe| probe.name()).collect()
}

#[test]
fn the_port_first_then_the_banner_then_the_rest() {
    // Redis waits to be asked: its probe goes before the banner wait.
    assert_eq!(
        names(&probes_for(6379)),
        vec![
            "redis",
            "banner",
            "memcached",
            "http",
            "https",
            "postgresql",
            "mongodb"
        ]
    );
    assert_eq!(
        names(&probes_for(10250)),
        vec![
            "https",
            "http",
            "banner",
            "redis",
            "memcached",
            "postgresql",
            "mongodb"
        ]
    );
    assert_eq!(
        names(&probes_for(27017)),
        vec![
            "mongodb",
            "mongodb-legacy",
            "banner",
            "redis",
            "memcached",
            "http",
            "https",
            "postgresql"
        ]
    );
    // A port that suggests nothing, or a service that speaks first: the
    // banner wait first.
    for port in [40000, 22, 25] {
        assert_eq!(
            names(&probes_for(port)),
            vec![
                "banner",
                "redis",
                "memcached",
                "http",
                "https",
                "postgresql",
                "mongodb"
            ],
            "port {port}"
        );
    }
    // Only the banner probe waits for a greeting.
    let waiting: Vec<_> = probes_for(1)
        .iter()
        .filter(|probe| probe.waits_for_greeting())
        .map(|probe| probe.name())
        .collect();
    assert_eq!(waiting, ["banner"]);
}

#[test]
fn address_goes_into_the_host_header() {
    let mut probes = probes_for_address(
        "2001:db8::5".parse().unwrap_or(IpAddr::from([0u8; 16])),
        8080,
    );
    let http = probes.iter_mut().find(|probe| probe.name() == "http");
    let Some(Next::Send(request)) = http.map(|probe| probe.start()) else {
        panic!("the http probe sends a request");
    };
    assert!(text::find(&request, b"\r\nHost: [2001:db8::5]:8080\r\n").is_some());
}

#[test]
fn every_probe_starts_without_panicking() {
    for mut probe in probes_for(1) {
        let next = probe.start();
        assert!(
            matches!(next, Next::Send(_) | Next::Receive),
            "{}: {next:?}",
            probe.name()
        );
    }
}

fn sniffed(answer: &[u8]) -> Option<(String, AuthState)> {
    sniff(answer).map(|found| {
        assert!(found.findings.is_empty(), "sniff proves no findings");
        (found.service.name, found.service.auth)
    })
}

#[test]
fn sniff_names_protocols() {
    type Case<'a> = (&'a [u8], Option<(&'a str, AuthState)>);
    let cases: [Case<'_>; 14] = [
        (
            b"SSH-2.0-OpenSSH_9.2p1\r\n",
            Some(("ssh", AuthState::Unknown)),
        ),
        (
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
            Some(("http", AuthState::Unknown)),
        ),
        (
            include_bytes!("../tests/fixtures/http-python-resp-ping.bin"),
            Some(("http", AuthState::Unknown)),
        ),
        (
            b"-NOAUTH Authentication required.\r\n",
            Some(("redis", AuthState::Required)),
        ),
        (
            include_bytes!("../tests/fixtures/redis-unknown-command.bin"),
            Some(("redis", AuthState::Unknown)),
        ),
        (b"-ERR Unknown command.\r\n", None),
        (
            b"VERSION 1.6.18\r\n",
            Some(("memcached", AuthState::Unknown)),
        ),
        (
            b"CLIENT_ERROR unauthenticated\r\n",
            Some(("memcached", AuthState::Required)),
        ),
        (b"ERROR\r\n", None),
        (b"RFB 003.008\n", Some(("vnc", AuthState::Unknown))),
        (b"220 (vsFTPd 3.0.3)\r\n", Some(("ftp", AuthState::Unknown))),
        (
            include_bytes!("../tests/fixtures/postgres-no-hba.bin"),
            Some(("postgresql", AuthState::Required)),
        ),
        (b"", None),
        (b"\x15\x03\x03\x00\x02\x02\x46", None),
    ];
    for (answer, expected) in cases {
        assert_eq!(
            sniffed(answer),
            expected.map(|(name, auth)| (name.to_string(), auth)),
            "{}",
            text::banner(answer)
        );
    }
}
