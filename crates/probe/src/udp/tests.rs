//! Tests of the UDP plan: which datagrams each port gets, that every request is
//! well formed by its own parser, how replies are dispatched and sniffed, and
//! how identifications merge.

use super::*;
use crate::rules;

fn names(requests: &[UdpRequest]) -> Vec<&'static str> {
    requests.iter().map(|request| request.name()).collect()
}

#[test]
fn plans_put_the_usual_question_first() {
    assert_eq!(
        names(udp_requests_for(53)),
        ["dns-recursion", "dns-version"]
    );
    assert_eq!(
        names(udp_requests_for(123)),
        ["ntp-client", "ntp-readvar", "ntp-monlist"]
    );
    assert_eq!(
        names(udp_requests_for(161)),
        ["snmp-v2c-public", "snmp-v1-public"]
    );
    assert_eq!(
        names(udp_requests_for(11211)),
        ["memcached-version", "memcached-stats"]
    );
    assert_eq!(names(udp_requests_for(1900)), ["ssdp-search"]);
    assert_eq!(names(udp_requests_for(137)), ["netbios-status"]);
    assert_eq!(names(udp_requests_for(5353)), ["mdns-services"]);
    assert_eq!(names(udp_requests_for(40000)), ["empty"]);
    let empty = udp_payloads_for(40000);
    assert_eq!(empty.len(), 1);
    assert!(
        empty
            .iter()
            .all(|p| p.bytes.is_empty() && !p.only_if_answered)
    );
    // Only identification follow-ups wait for an answer.
    let waits: Vec<&str> = UdpRequest::ALL
        .iter()
        .filter(|r| r.only_if_answered())
        .map(|r| r.name())
        .collect();
    assert_eq!(waits, ["dns-version", "memcached-stats"]);
}

#[test]
fn every_port_with_a_plan_is_ranked_first() {
    for port in [53, 123, 161, 137, 1900, 11211, 5353] {
        let rank = UDP_TOP_PORTS.iter().position(|&p| p == port);
        assert!(rank.is_some_and(|r| r < 7), "{port} at {rank:?}");
    }
}

#[test]
fn top_ports_are_distinct_nonzero_and_plenty() {
    let mut sorted = UDP_TOP_PORTS.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), UDP_TOP_PORTS.len(), "duplicates");
    assert!(!UDP_TOP_PORTS.contains(&0));
    assert!(UDP_TOP_PORTS.len() >= 100, "{}", UDP_TOP_PORTS.len());
}

#[test]
fn every_request_reads_back_through_its_own_parser() {
    let target: SocketAddr = "[2001:db8::5]:1900"
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([0u8; 16], 1900)));
    for request in UdpRequest::ALL {
        let payload = request.payload_to(0x1234, target);
        let bytes = &payload.bytes;
        // Nothing a request sends is large: one small datagram each.
        assert!(
            bytes.len() <= 128,
            "{}: {} bytes",
            request.name(),
            bytes.len()
        );
        match request {
            UdpRequest::DnsRecursion | UdpRequest::DnsVersion | UdpRequest::MdnsServices => {
                let message = dns::parse_message(bytes);
                assert!(
                    message.is_some_and(|m| m.header.id == 0x1234
                        && !m.header.response
                        && m.questions.len() == 1
                        && m.complete
                        && m.end == bytes.len()),
                    "{}",
                    request.name()
                );
            }
            UdpRequest::NetbiosStatus => {
                let message = dns::parse_message(bytes);
                assert!(message.is_some_and(|m| m.end == bytes.len()));
            }
            UdpRequest::NtpClient => {
                assert_eq!(bytes.len(), ntp::PACKET_LEN);
                assert_eq!(ntp::parse_server_reply(bytes), None);
            }
            UdpRequest::NtpReadvar => {
                assert!(ntp::parse_control(bytes).is_some_and(|c| !c.response));
            }
            UdpRequest::NtpMonlist => {
                assert!(ntp::parse_private(bytes).is_some_and(|p| !p.response));
            }
            UdpRequest::SnmpV2cPublic | UdpRequest::SnmpV1Public => {
                let parsed = snmp::parse_message(bytes);
                assert!(parsed.is_some_and(|m| m.request_id == 0x1234
                    && m.pdu_tag == ber::tag::GET_REQUEST
                    && m.community == snmp::COMMUNITY));
                assert!(ber::decode_tree(bytes).is_some());
            }
            UdpRequest::MemcachedVersion | UdpRequest::MemcachedStats => {
                let frame = memcached::parse_frame(bytes);
                assert!(frame.is_some_and(|f| f.request_id == 0x1234
                    && f.total == 1
                    && f.body.ends_with(b"\r\n")));
            }
            UdpRequest::SsdpSearch => {
                assert!(bytes.starts_with(b"M-SEARCH * HTTP/1.1\r\nHOST: [2001:db8::5]:1900\r\n"));
            }
            UdpRequest::Empty => assert!(bytes.is_empty()),
        }
    }
    let search = UdpRequest::SsdpSearch.payload(1);
    assert!(
        search
            .bytes
            .starts_with(b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n")
    );
}

#[test]
fn replies_go_to_the_parser_of_the_question() {
    let sent = UdpRequest::MemcachedVersion.payload(0x0101);
    let reply = b"\x01\x01\x00\x00\x00\x01\x00\x00VERSION 1.6.18\r\n";
    let found = identify_udp(11211, &sent, reply);
    assert_eq!(
        found.as_ref().map(|f| f
            .findings
            .iter()
            .map(|x| x.rule.as_str())
            .collect::<Vec<_>>()),
        Some(vec![rules::MEMCACHED_UDP])
    );
    // The same reply to another request ID is only sniffed: no findings.
    let other = UdpRequest::MemcachedVersion.payload(0x0202);
    let sniffed = identify_udp(11211, &other, reply);
    assert_eq!(
        sniffed.as_ref().map(|f| f.service.name.as_str()),
        Some("memcached")
    );
    assert!(sniffed.is_some_and(|f| f.findings.is_empty()));
    // An empty datagram answered with nothing we know.
    assert_eq!(
        identify_udp(40000, &UdpRequest::Empty.payload(1), b"\x00garbage"),
        None
    );
}

#[test]
fn sniffing_names_services_on_unexpected_ports() {
    let sent = UdpRequest::SnmpV2cPublic.payload(3).bytes;
    // A DNS server's FORMERR to the SNMP bytes.
    let mut formerr = sent.get(..2).unwrap_or_default().to_vec();
    formerr.extend_from_slice(&[0x80, 0x01, 0, 0, 0, 0, 0, 0, 0, 0]);
    let name = |port: u16, reply: &[u8]| sniff_udp(port, &sent, reply).map(|f| f.service.name);
    assert_eq!(name(5300, &formerr).as_deref(), Some("domain"));
    assert_eq!(name(5353, &formerr).as_deref(), Some("mdns"));
    // An echo service returns what it got.
    assert_eq!(name(7, &sent).as_deref(), Some("echo"));
    // An NTP server's reply on port 1123.
    let ntp_reply = include_bytes!("../../tests/fixtures/udp-ntpsec-mode3.bin");
    assert_eq!(name(1123, ntp_reply).as_deref(), Some("ntp"));
    assert_eq!(name(1123, b"").as_deref(), None);
    assert_eq!(name(1123, b"hello").as_deref(), None);
    let found = sniff_udp(1123, &sent, ntp_reply);
    assert!(found.is_some_and(|f| f.findings.is_empty()));
}

#[test]
fn merging_keeps_the_first_name_and_adds_what_is_new() {
    let ntp_reply = include_bytes!("../../tests/fixtures/udp-ntpsec-mode3.bin");
    let readvar = include_bytes!("../../tests/fixtures/udp-ntpsec-readvar.bin");
    let Some(mut found) = ntp::identify_client(0x7072, ntp_reply) else {
        panic!("mode 3 identified");
    };
    let Some(more) = ntp::identify_readvar(1, readvar) else {
        panic!("mode 6 identified");
    };
    merge(&mut found, more.clone());
    merge(&mut found, more);
    assert_eq!(found.service.name, "ntp");
    // Mode 3 knows the protocol; mode 6 adds the daemon and its version.
    assert_eq!(found.service.version.as_deref(), Some("1.2.2"));
    assert_eq!(found.service.product.as_deref(), Some("ntpsec"));
    assert_eq!(
        found.service.extra.get("system").map(String::as_str),
        Some("Linux/6.18.44-fc-v1045")
    );
    assert_eq!(found.findings.len(), 1, "one finding per rule");
    // Extras stay capped however many merges come.
    for idx in 0..100 {
        let mut service = perimeter_model::ServiceInfo::named("ntp");
        service.extra.insert(format!("k{idx}"), "v".into());
        merge(&mut found, Identified::service_only(service));
    }
    assert_eq!(found.service.extra.len(), MAX_MERGED_EXTRA);
}
