//! Property tests: every parser and every probe, fed arbitrary bytes (alone, or
//! after real captured answers that move a probe deeper into its conversation),
//! never panics, and everything it keeps stays within its caps and printable.

use perimeter_model::ServiceInfo;
use perimeter_probe::text::{MAX_BANNER_CHARS, MAX_VALUE_CHARS};
use perimeter_probe::udp::{self, UdpRequest, ber, dns, mdns, netbios, ntp, snmp, ssdp};
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

/// Real UDP replies (and our own requests) that mutations start from, so the
/// parsers get past their first checks: dnsmasq's answers, ntpsec's and
/// chrony's, snmpd's, and hand-written memcached, SSDP and NetBIOS answers.
fn udp_seeds() -> Vec<Vec<u8>> {
    let hex = |text: &str| -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .filter_map(|idx| text.get(idx..idx + 2))
            .filter_map(|pair| u8::from_str_radix(pair, 16).ok())
            .collect()
    };
    let mut seeds = vec![
        hex("123481800001000100000000076578616d706c6503636f6d0000010001c00c000100010000012c0004c0000201"),
        hex("1234858000010001000000000776657273696f6e0462696e640000100003c00c0010000300000000000d0c646e736d6173712d322e3930"),
        hex("303b02010104067075626c6963a22e020270720201000201003022302006082b060102010101000414706572696d657465722074657374206167656e74"),
        include_bytes!("fixtures/udp-ntpsec-mode3.bin").to_vec(),
        include_bytes!("fixtures/udp-ntpsec-readvar.bin").to_vec(),
        include_bytes!("fixtures/udp-chrony-mode3.bin").to_vec(),
        b"\x70\x72\x00\x00\x00\x01\x00\x00VERSION 1.6.18\r\n".to_vec(),
        b"\x70\x72\x00\x00\x00\x02\x00\x00STAT pid 1\r\nSTAT version 1.6.18\r\nSTAT curr".to_vec(),
        b"HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\nUSN: uuid:1::upnp:rootdevice\r\nSERVER: Linux/6 UPnP/1.1 MiniUPnPd/2.3\r\nLOCATION: http://192.0.2.1:5000/x.xml\r\n\r\n".to_vec(),
    ];
    // A NetBIOS node status answer: our own question turned into a response
    // with one NBSTAT record of two names and a MAC.
    let mut nbstat = netbios::node_status_request(udp::DEFAULT_ID);
    nbstat.splice(2..12, [0x84, 0x00, 0, 0, 0, 1, 0, 0, 0, 0]);
    nbstat.truncate(nbstat.len() - 4);
    nbstat.extend_from_slice(&[0x00, 0x21, 0x00, 0x01, 0, 0, 0, 0, 0, 43, 2]);
    nbstat.extend_from_slice(b"HOST           \x00\x04\x00WORKGROUP      \x00\x84\x00");
    nbstat.extend_from_slice(&[0x52, 0x54, 0, 1, 2, 3]);
    seeds.push(nbstat);
    for request in UdpRequest::ALL {
        seeds.push(request.payload(udp::DEFAULT_ID).bytes);
    }
    seeds
}

/// A datagram: arbitrary bytes, or a seed with some bytes overwritten, cut
/// short or extended.
fn datagram() -> impl Strategy<Value = Vec<u8>> {
    let seeds = udp_seeds();
    let n_seeds = seeds.len();
    prop_oneof![
        2 => proptest::collection::vec(any::<u8>(), 0..1500),
        3 => (
            0..n_seeds,
            proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            any::<prop::sample::Index>(),
            proptest::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(move |(idx, flips, cut, tail)| {
                let mut bytes = seeds.get(idx).cloned().unwrap_or_default();
                for (at, byte) in flips {
                    if !bytes.is_empty() {
                        let at = at.index(bytes.len());
                        if let Some(slot) = bytes.get_mut(at) {
                            *slot = byte;
                        }
                    }
                }
                let keep = cut.index(bytes.len() + 1);
                bytes.truncate(keep.max(bytes.len() / 2));
                bytes.extend_from_slice(&tail);
                bytes
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn udp_dns_survives_hostile_datagrams(bytes in datagram(), id in any::<u16>(), port in any::<u16>()) {
        if let Some(message) = dns::parse_message(&bytes) {
            prop_assert!(message.records.len() <= dns::MAX_RECORDS);
            prop_assert!(message.questions.len() <= dns::MAX_QUESTIONS);
            prop_assert!(message.end <= bytes.len());
            for (_, record) in &message.records {
                prop_assert!(record.name.len() <= 4 * dns::MAX_NAME_OCTETS);
                if let dns::RData::Txt(strings) = &record.data {
                    prop_assert!(strings.len() <= dns::MAX_TXT_STRINGS);
                }
            }
            let _ = dns::recursion_outcome(&message);
        }
        for start in [0, 12, bytes.len() / 2] {
            if let Some((name, end)) = dns::read_name(&bytes, start) {
                prop_assert!(end <= bytes.len() && name.len() <= 4 * dns::MAX_NAME_OCTETS);
            }
        }
        assert_found(&dns::identify_recursion(id, &bytes));
        assert_found(&dns::identify_version(id, &bytes));
        assert_found(&mdns::identify(id, port, &bytes));
        assert_found(&netbios::identify(id, &bytes));
        if let Some(status) = netbios::parse_node_status(id, &bytes) {
            prop_assert!(status.names.len() <= 255);
        }
        let _ = dns::looks_like_reply(&bytes, &bytes);
    }

    #[test]
    fn udp_ntp_survives_hostile_datagrams(bytes in datagram(), id in any::<u16>()) {
        let _ = ntp::parse_server_reply(&bytes);
        if let Some(control) = ntp::parse_control(&bytes) {
            prop_assert!(control.data.len() <= ntp::MAX_CONTROL_DATA);
            let variables = ntp::parse_variables(&control.data);
            prop_assert!(variables.len() <= ntp::MAX_VARIABLES);
        }
        prop_assert!(ntp::parse_variables(&bytes).len() <= ntp::MAX_VARIABLES);
        let _ = ntp::parse_private(&bytes);
        assert_found(&ntp::identify_client(id, &bytes));
        assert_found(&ntp::identify_readvar(id, &bytes));
        assert_found(&ntp::identify_monlist(&bytes));
        let _ = ntp::looks_like_reply(&bytes);
    }

    #[test]
    fn udp_snmp_survives_hostile_datagrams(bytes in datagram(), id in any::<u16>()) {
        if let Some(response) = snmp::parse_message(&bytes) {
            prop_assert!(response.varbinds.len() <= snmp::MAX_VARBINDS);
            prop_assert!(response.community.len() <= snmp::MAX_COMMUNITY);
            for (oid, value) in &response.varbinds {
                prop_assert!(oid.len() <= ber::MAX_OID_ARCS);
                if let snmp::Value::OctetString(octets) = value {
                    prop_assert!(octets.len() <= snmp::MAX_OCTETS);
                }
            }
        }
        if let Some(tree) = ber::decode_tree(&bytes) {
            prop_assert!(tree.len() <= ber::MAX_NODES);
        }
        if let Some(arcs) = ber::decode_oid(&bytes) {
            prop_assert!(arcs.len() <= ber::MAX_OID_ARCS);
            // Arcs that decode re-encode to something that decodes the same.
            if let Some(encoded) = ber::encode_oid(&arcs) {
                prop_assert_eq!(ber::decode_oid(&encoded), Some(arcs));
            }
        }
        if let Some(value) = ber::decode_integer(bytes.get(..8).unwrap_or(&bytes)) {
            prop_assert_eq!(ber::decode_integer(&ber::encode_integer(value)), Some(value));
        }
        assert_found(&snmp::identify(snmp::Version::V1, id, &bytes));
        assert_found(&snmp::identify(snmp::Version::V2c, id, &bytes));
        let _ = snmp::looks_like_reply(&bytes);
    }

    #[test]
    fn udp_memcached_and_ssdp_survive_hostile_datagrams(bytes in datagram(), id in any::<u16>()) {
        if let Some(frame) = udp::memcached::parse_frame(&bytes) {
            prop_assert!(frame.sequence < frame.total);
            let _ = udp::memcached::parse_body(frame.body);
        }
        assert_found(&udp::memcached::identify(id, &bytes));
        if let Some(response) = ssdp::parse_response(&bytes) {
            prop_assert!(response.headers.len() <= ssdp::MAX_HEADERS);
        }
        assert_found(&ssdp::identify(&bytes));
    }

    #[test]
    fn identify_udp_survives_any_reply_to_any_question(
        bytes in datagram(),
        request_idx in 0..UdpRequest::ALL.len(),
        id in any::<u16>(),
        port in prop_oneof![Just(53u16), Just(123), Just(137), Just(161), Just(1900), Just(5353), Just(11211), any::<u16>()],
        more in datagram(),
    ) {
        let request = UdpRequest::ALL.get(request_idx).copied().unwrap_or(UdpRequest::Empty);
        let sent = request.payload(id);
        let found = udp::identify_udp(port, &sent, &bytes);
        assert_found(&found);
        assert_found(&udp::sniff_udp(port, &sent.bytes, &bytes));
        if let (Some(mut found), Some(other)) = (found, udp::identify_udp(port, &sent, &more)) {
            udp::merge(&mut found, other);
            prop_assert!(found.service.extra.len() <= udp::MAX_MERGED_EXTRA);
            assert_found(&Some(found));
        }
    }
}
