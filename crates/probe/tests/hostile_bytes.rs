//! Property tests: every parser and every probe, fed arbitrary bytes (alone, or
//! after real captured answers that move a probe deeper into its conversation),
//! never panics, and everything it keeps stays within its caps and printable.

use perimeter_model::ServiceInfo;
use perimeter_probe::text::{MAX_BANNER_CHARS, MAX_VALUE_CHARS};
use perimeter_probe::{
    Identified, Next, Probe, bson, greeting, http, memcached, mongodb, mysql, postgres, probes_for,
    redis, sniff, ssh, tls, vnc,
};
use proptest::prelude::*;

/// Captured answers that open each conversation's later stages.
const FIXTURES: [&[u8]; 16] = [
    include_bytes!("fixtures/redis-ping-pong.bin"),
    include_bytes!("fixtures/redis-info-server.bin"),
    include_bytes!("fixtures/redis-ping-noauth.bin"),
    include_bytes!("fixtures/memcached-version.bin"),
    include_bytes!("fixtures/memcached-stats.bin"),
    include_bytes!("fixtures/ssh-openssh-debian.bin"),
    include_bytes!("fixtures/http-python-200.bin"),
    include_bytes!("fixtures/http-etcd-root-404.bin"),
    include_bytes!("fixtures/http-etcd-version.bin"),
    include_bytes!("fixtures/postgres-sslrequest-n.bin"),
    include_bytes!("fixtures/postgres-trust.bin"),
    include_bytes!("fixtures/smtp-exim-greeting.bin"),
    include_bytes!("fixtures/ftp-vsftpd-greeting.bin"),
    include_bytes!("fixtures/mysql-mariadb-handshake.bin"),
    include_bytes!("fixtures/vnc-tigervnc-version.bin"),
    include_bytes!("fixtures/vnc-tigervnc-types-none.bin"),
];

fn answer() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..2048),
        2 => (0..FIXTURES.len(), proptest::collection::vec(any::<u8>(), 0..512), any::<bool>()).prop_map(
            |(idx, noise, whole)| {
                let fixture = FIXTURES.get(idx).copied().unwrap_or_default();
                let mut out = if whole {
                    fixture.to_vec()
                } else {
                    fixture.get(..fixture.len() / 2).unwrap_or_default().to_vec()
                };
                if !whole {
                    out.extend_from_slice(&noise);
                }
                out
            }
        ),
    ]
}

fn printable(text: &str) -> bool {
    text.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

fn assert_capped(service: &ServiceInfo) {
    if let Some(banner) = &service.banner {
        assert!(
            banner.len() <= MAX_BANNER_CHARS && printable(banner),
            "banner {banner:?}"
        );
    }
    for value in [&service.product, &service.version].into_iter().flatten() {
        assert!(
            value.len() <= MAX_VALUE_CHARS && printable(value),
            "value {value:?}"
        );
    }
    assert!(
        service.extra.len() <= 32,
        "extra has {} entries",
        service.extra.len()
    );
    for (key, value) in &service.extra {
        assert!(
            value.len() <= 2 * MAX_BANNER_CHARS && printable(value),
            "{key} = {value:?}"
        );
    }
    if let Some(tls) = &service.tls {
        assert!(tls.subject.len() <= MAX_BANNER_CHARS && tls.issuer.len() <= MAX_BANNER_CHARS);
        assert!(tls.subject_alt_names.len() <= 64);
    }
}

fn assert_found(found: &Option<Identified>) {
    if let Some(found) = found {
        assert_capped(&found.service);
        for finding in &found.findings {
            assert!(finding.subject.is_empty());
            assert!(
                finding
                    .evidence
                    .iter()
                    .all(|e| e.len() <= 2 * MAX_BANNER_CHARS && printable(e)),
                "evidence {:?}",
                finding.evidence
            );
        }
    }
}

/// Drives `probe` like the scan engine does, with `answers` as the bytes that
/// arrive for each read, capped at `max_response`.
fn drive(probe: &mut dyn Probe, answers: &[Vec<u8>], end_timed_out: bool) {
    let mut received: Vec<u8> = Vec::new();
    let mut next = probe.start();
    for answer in answers {
        match &next {
            Next::Done(found) => {
                assert_found(found);
                return;
            }
            Next::Send(request) => {
                assert!(
                    request.len() <= 64 * 1024,
                    "{} sends {} bytes",
                    probe.name(),
                    request.len()
                );
                received.clear();
            }
            Next::Receive => {}
        }
        let room = probe.max_response().saturating_sub(received.len());
        if room == 0 {
            assert_found(&probe.on_end(&received, false));
            return;
        }
        received.extend_from_slice(answer.get(..room.min(answer.len())).unwrap_or_default());
        next = probe.on_data(&received);
    }
    match next {
        Next::Done(found) => assert_found(&found),
        Next::Send(_) => assert_found(&probe.on_end(&[], end_timed_out)),
        Next::Receive => assert_found(&probe.on_end(&received, end_timed_out)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn probes_survive_hostile_conversations(
        port in prop_oneof![Just(22u16), Just(443), Just(5432), Just(6379), Just(27017), any::<u16>()],
        answers in proptest::collection::vec(answer(), 0..6),
        timed_out in any::<bool>(),
    ) {
        for mut probe in probes_for(port) {
            drive(probe.as_mut(), &answers, timed_out);
        }
    }

    #[test]
    fn parsers_survive_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096), at_end in any::<bool>()) {
        if let Ok(Some((_, used))) = redis::parse_reply(&bytes) {
            prop_assert!(used <= bytes.len());
        }
        let _ = redis::parse_info(&String::from_utf8_lossy(&bytes));
        let _ = memcached::parse_answer(&bytes);
        if let Some(banner) = ssh::parse_banner(&bytes, at_end) {
            assert_capped(&banner.service());
        }
        if let Some(reply) = greeting::parse_code_reply(&bytes) {
            assert_capped(&greeting::service(greeting::classify(&reply), &reply, &bytes, None));
        }
        if let Ok(Some(found)) = mysql::parse_greeting(&bytes) {
            assert_capped(&mysql::service(&found, &bytes));
        }
        if let Ok(Some(version)) = vnc::parse_version(&bytes) {
            let _ = vnc::parse_security(bytes.get(12..).unwrap_or_default(), version.client_reply());
        }
        if let Ok(Some(response)) = http::parse_response(&bytes, at_end) {
            prop_assert!(response.headers.len() <= http::MAX_HEADERS);
            prop_assert!(response.body.len() <= http::MAX_BODY);
            assert_capped(&http::service(&response, &bytes));
        }
        if let Some(title) = http::html_title(&bytes) {
            prop_assert!(title.len() <= MAX_VALUE_CHARS);
        }
        if let Ok((messages, _)) = postgres::parse_backend(&bytes)
            && let Some(service) = postgres::identify(&messages, true)
        {
            assert_capped(&service);
        }
        if let Ok((_, used)) = bson::decode(&bytes) {
            prop_assert!(used <= bytes.len());
        }
        let _ = mongodb::parse_reply(&bytes, 64 * 1024);
        let _ = tls::tls_info(&bytes);
        assert_found(&sniff(&bytes));
    }

    #[test]
    fn http_bodies_with_framing_never_exceed_the_cap(
        declared in any::<u64>(),
        body in proptest::collection::vec(any::<u8>(), 0..8192),
        chunked in any::<bool>(),
    ) {
        let mut bytes = b"HTTP/1.1 200 OK\r\n".to_vec();
        if chunked {
            bytes.extend_from_slice(format!("Transfer-Encoding: chunked\r\n\r\n{declared:x}\r\n").as_bytes());
        } else {
            bytes.extend_from_slice(format!("Content-Length: {declared}\r\n\r\n").as_bytes());
        }
        bytes.extend_from_slice(&body);
        if let Ok(Some(response)) = http::parse_response(&bytes, true) {
            prop_assert!(response.body.len() <= http::MAX_BODY);
            prop_assert!(response.body.len() <= body.len());
        }
    }
}
