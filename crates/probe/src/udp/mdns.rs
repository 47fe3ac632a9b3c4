//! Multicast DNS (port 5353) asked by unicast: the DNS-SD service type
//! enumeration question (RFC 6763 §9, `_services._dns-sd._udp.local. PTR`),
//! read with [`super::dns`]'s parser.
//!
//! RFC 6762 §6.7: a query whose source port is not 5353 comes from a "legacy"
//! resolver, and the responder answers by unicast to that address and port,
//! repeating the query ID and the question. §5.5 adds that a query sent straight
//! to a responder's address should be answered like a QU query, so the
//! question's unicast-response bit (§5.4, the top bit of QCLASS) is set too.
//!
//! The answers list the services a host advertises (printers, file shares,
//! remote desktops). A responder is supposed to answer only its own link
//! (RFC 6762 §11); whether we are on it is something only the engine knows, so
//! no rule fires here: the service and its advertised types are reported.

use perimeter_model::ServiceInfo;

use super::dns::{self, RData, rtype};
use crate::{Identified, text};

/// The service type enumeration name (RFC 6763 §9).
pub const SERVICES_NAME: &str = "_services._dns-sd._udp.local";
/// QCLASS IN with the unicast-response ("QU") bit (RFC 6762 §5.4).
pub const CLASS_IN_QU: u16 = 0x8001;
/// The most service types listed in `extra`.
const MAX_SERVICES: usize = 16;

/// The query: one question, `SERVICES_NAME PTR`, QU, RD=0 (RFC 6762 §18.6:
/// the RD bit has no meaning in mDNS and should be zero).
pub fn services_query(id: u16) -> Vec<u8> {
    dns::query(id, SERVICES_NAME, rtype::PTR, CLASS_IN_QU, false).unwrap_or_default()
}

/// Identifies an mDNS responder from a reply to [`services_query`] with `id`.
/// A legacy-unicast answer repeats the ID; a responder that treats the query as
/// a multicast one answers with ID 0 (RFC 6762 §18.1), which is accepted too.
/// The service is named `mdns` when the port is 5353 or the answer carries the
/// service list authoritatively, as a responder does; a DNS server on another
/// port refusing a `.local` name is `domain`.
pub fn identify(id: u16, port: u16, reply: &[u8]) -> Option<Identified> {
    let message = dns::parse_message(reply)?;
    let header = message.header;
    if !header.response || header.opcode != 0 || (header.id != id && header.id != 0) {
        return None;
    }
    let services: Vec<String> = message
        .records
        .iter()
        .filter(|(_, record)| {
            record.rtype == rtype::PTR && record.name.eq_ignore_ascii_case(SERVICES_NAME)
        })
        .filter_map(|(_, record)| match &record.data {
            RData::Name(target) => Some(text::value(target)),
            _ => None,
        })
        .take(MAX_SERVICES)
        .collect();
    let responder = header.authoritative && !services.is_empty();
    let mut service = ServiceInfo::named(if port == 5353 || responder {
        "mdns"
    } else {
        "domain"
    });
    if !services.is_empty() {
        service.extra.insert(
            "services".into(),
            text::escape(services.join(" ").as_bytes(), text::MAX_BANNER_CHARS),
        );
    }
    // The host's own name, from an address record in any section.
    let host = message.records.iter().find_map(|(_, record)| {
        matches!(record.data, RData::A(_) | RData::Aaaa(_)).then(|| text::value(&record.name))
    });
    if let Some(host) = host {
        service.extra.insert("hostname".into(), host);
    }
    if header.rcode != dns::rcode::NOERROR {
        service
            .extra
            .insert("rcode".into(), dns::rcode_name(header.rcode));
    }
    Some(Identified::service_only(service))
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn query_reads_back() {
        let query = services_query(0x4d44);
        let Some(message) = dns::parse_message(&query) else {
            panic!("our query parses");
        };
        expect![[r#"
            Message {
                header: Header {
                    id: 19780,
                    response: false,
                    opcode: 0,
                    authoritative: false,
                    truncated: false,
                    recursion_desired: false,
                    recursion_available: false,
                    rcode: 0,
                    n_questions: 1,
                    n_answers: 0,
                    n_authority: 0,
                    n_additional: 0,
                },
                questions: [
                    Question {
                        name: "_services._dns-sd._udp.local",
                        qtype: 12,
                        qclass: 32769,
                    },
                ],
                records: [],
                complete: true,
                end: 46,
            }
        "#]]
        .assert_debug_eq(&message);
    }

    /// A legacy-unicast answer as Avahi writes one: ID and question repeated,
    /// AA=1, two PTR answers, the second's name compressed against the first,
    /// and the host's address in the additional section.
    fn avahi_answer(id: u16) -> Vec<u8> {
        let mut out = id.to_be_bytes().to_vec();
        out.extend_from_slice(&[0x84, 0x00, 0, 1, 0, 2, 0, 0, 0, 1]);
        // Question at 12: _services._dns-sd._udp.local PTR IN.
        out.extend_from_slice(b"\x09_services\x07_dns-sd\x04_udp\x05local\x00\x00\x0c\x00\x01");
        // Answer 1: name -> pointer to 12; PTR IN ttl 10; _ssh._tcp.local.
        out.extend_from_slice(&[0xc0, 0x0c, 0x00, 0x0c, 0x00, 0x01, 0, 0, 0, 10, 0, 12]);
        out.extend_from_slice(b"\x04_ssh\x04_tcp\xc0\x23");
        // Answer 2: _sftp-ssh._tcp.local, the _tcp.local part compressed.
        out.extend_from_slice(&[0xc0, 0x0c, 0x00, 0x0c, 0x00, 0x01, 0, 0, 0, 10, 0, 12]);
        out.extend_from_slice(b"\x09_sftp-ssh\xc0\x3f");
        // Additional: nas.local A 192.0.2.7.
        out.extend_from_slice(
            b"\x03nas\xc0\x23\x00\x01\x80\x01\x00\x00\x00\x78\x00\x04\xc0\x00\x02\x07",
        );
        out
    }

    #[test]
    fn services_are_listed() {
        let reply = avahi_answer(0x4d44);
        let Some(found) = identify(0x4d44, 5353, &reply) else {
            panic!("identified");
        };
        expect![[r#"
            ServiceInfo {
                name: "mdns",
                product: None,
                version: None,
                banner: None,
                tls: None,
                auth: Unknown,
                extra: {
                    "hostname": "nas.local",
                    "services": "_ssh._tcp.local _sftp-ssh._tcp.local",
                },
            }
        "#]]
        .assert_debug_eq(&found.service);
        assert!(found.findings.is_empty());
        // ID 0 (a multicast-style answer) is accepted; another ID is not.
        assert!(identify(0x4d44, 5353, &avahi_answer(0)).is_some());
        assert_eq!(identify(0x4d44, 5353, &avahi_answer(9)), None);
        // The same answer on another port is still a responder's.
        assert_eq!(
            identify(0x4d44, 15353, &reply).map(|f| f.service.name),
            Some("mdns".to_string())
        );
    }
}
