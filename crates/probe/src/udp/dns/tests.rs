//! DNS parser and identification tests, over replies captured from dnsmasq
//! 2.90 on loopback and over hand-built hostile messages.

use super::*;
use expect_test::{Expect, expect};

/// Decodes the hex of a captured datagram.
fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .filter_map(|idx| text.get(idx..idx + 2))
        .filter_map(|pair| u8::from_str_radix(pair, 16).ok())
        .collect()
}

/// dnsmasq answering `example.com A` from its cache (filled by forwarding to a
/// second dnsmasq): QR, RD, RA, NOERROR, AA=0, one A record.
const CACHED: &str =
    "123481800001000100000000076578616d706c6503636f6d0000010001c00c000100010000012c0004c0000201";
/// The same question answered from dnsmasq's own configuration: AA=1.
const AUTHORITATIVE: &str =
    "123485800001000100000000076578616d706c6503636f6d0000010001c00c00010001000000000004c0000201";
/// dnsmasq without upstream servers: REFUSED, question echoed.
const REFUSED: &str = "123481850001000000000000076578616d706c6503636f6d0000010001";
/// dnsmasq's `version.bind CH TXT` answer.
const VERSION_BIND: &str = "1234858000010001000000000776657273696f6e0462696e640000100003c00c0010000300000000000d0c646e736d6173712d322e3930";

fn check(reply: &str, identify: fn(u16, &[u8]) -> Option<Identified>, expect: Expect) {
    expect.assert_debug_eq(&identify(0x1234, &hex(reply)));
}

#[test]
fn queries_read_back() {
    let query = recursion_query(0x1234);
    assert_eq!(
        query,
        hex("123401000001000000000000076578616d706c6503636f6d0000010001")
    );
    let Some(message) = parse_message(&query) else {
        panic!("our query parses");
    };
    assert!(!message.header.response && message.header.recursion_desired);
    assert_eq!(
        message.questions,
        vec![Question {
            name: "example.com".into(),
            qtype: rtype::A,
            qclass: class::IN
        }]
    );
    assert_eq!((message.complete, message.end), (true, query.len()));
    let Some(version) = parse_message(&version_query(7)) else {
        panic!("version query parses");
    };
    assert!(!version.header.recursion_desired);
    assert_eq!(
        version
            .questions
            .first()
            .map(|q| (q.name.as_str(), q.qtype, q.qclass)),
        Some(("version.bind", rtype::TXT, class::CH))
    );
    assert_eq!(query_name_error("a..b"), None);
    assert_eq!(query_name_error(&"x".repeat(64)), None);
    assert_eq!(query_name_error(&["abcdefgh"; 32].join(".")), None);
    assert!(query_name_error(".").is_some());
}

fn query_name_error(name: &str) -> Option<Vec<u8>> {
    query(1, name, rtype::A, class::IN, true)
}

#[test]
fn served_recursion_is_an_open_resolver() {
    check(
        CACHED,
        identify_recursion,
        expect![[r#"
            Some(
                Identified {
                    service: ServiceInfo {
                        name: "domain",
                        product: None,
                        version: None,
                        banner: None,
                        tls: None,
                        auth: Unknown,
                        extra: {
                            "rcode": "NOERROR",
                            "recursion": "served",
                        },
                    },
                    findings: [
                        Finding {
                            rule: "exposed.dns-open-resolver",
                            severity: High,
                            subject: "",
                            message: "the DNS server resolves names for any client (open resolver)",
                            evidence: [
                                "example.com A asked with RD=1 was answered NOERROR, RA=1, AA=0 with 1 answer record(s), first address 192.0.2.1",
                            ],
                            remedy: "allow recursion only for your own networks (BIND `allow-recursion`, Unbound `access-control`, dnsmasq `--local-service` or `--interface`) or turn it off on authoritative servers, and firewall UDP/TCP 53 from outside",
                        },
                    ],
                },
            )
        "#]],
    );
}

#[test]
fn authoritative_refused_and_version_answers_prove_nothing() {
    for (reply, recursion) in [
        (AUTHORITATIVE, "authoritative answer"),
        (REFUSED, "refused"),
    ] {
        let Some(found) = identify_recursion(0x1234, &hex(reply)) else {
            panic!("identified");
        };
        assert!(found.findings.is_empty());
        assert_eq!(
            found.service.extra.get("recursion").map(String::as_str),
            Some(recursion)
        );
    }
    check(
        VERSION_BIND,
        identify_version,
        expect![[r#"
            Some(
                Identified {
                    service: ServiceInfo {
                        name: "domain",
                        product: Some(
                            "dnsmasq",
                        ),
                        version: Some(
                            "2.90",
                        ),
                        banner: Some(
                            "dnsmasq-2.90",
                        ),
                        tls: None,
                        auth: Unknown,
                        extra: {
                            "version.bind": "dnsmasq-2.90",
                        },
                    },
                    findings: [],
                },
            )
        "#]],
    );
    // A reply to another ID, or a query rather than a reply, is not ours.
    assert_eq!(identify_recursion(0x4321, &hex(CACHED)), None);
    assert_eq!(identify_recursion(0x1234, &recursion_query(0x1234)), None);
}

#[test]
fn outcomes_that_stay_inconclusive() {
    let mut servfail = hex(REFUSED);
    if let Some(flags) = servfail.get_mut(3) {
        *flags = 0x82;
    }
    assert_eq!(
        parse_message(&servfail).map(|m| recursion_outcome(&m)),
        Some(Recursion::Inconclusive("SERVFAIL".into()))
    );
    // NOERROR and RA=1 but no answer for the name.
    let mut nodata = hex(REFUSED);
    if let Some(flags) = nodata.get_mut(3) {
        *flags = 0x80;
    }
    assert_eq!(
        parse_message(&nodata).map(|m| recursion_outcome(&m)),
        Some(Recursion::Inconclusive(
            "NOERROR without an answer for the name".into()
        ))
    );
    // RA=0.
    let mut no_ra = hex(CACHED);
    if let Some(flags) = no_ra.get_mut(3) {
        *flags = 0x00;
    }
    assert_eq!(
        parse_message(&no_ra).map(|m| recursion_outcome(&m)),
        Some(Recursion::Inconclusive("NOERROR with RA=0".into()))
    );
}

#[test]
fn cname_chains_are_followed() {
    // example.com CNAME www.example.net (compressed .. no), then its A record.
    let mut reply = hex("123481800001000200000000076578616d706c6503636f6d0000010001");
    // Answer 1 at 29: c00c CNAME IN ttl rdlength, rdata "\x03www\x07example\x03net\x00".
    reply.extend_from_slice(&hex(
        "c00c0005000100000e10001103777777076578616d706c65036e657400",
    ));
    // Answer 2 at 58: pointer to the CNAME target at 41, A 192.0.2.9.
    reply.extend_from_slice(&hex("c029000100010000012c0004c0000209"));
    let Some(message) = parse_message(&reply) else {
        panic!("parses");
    };
    assert!(message.complete);
    assert_eq!(
        recursion_outcome(&message),
        Recursion::Served {
            answer: "192.0.2.9".into(),
            n_answers: 2
        }
    );
}

#[test]
fn pointer_loops_and_long_names_are_refused() {
    // A name that points at itself, one that points forward, and two that
    // point at each other.
    let header = hex("000081800001000000000000");
    let mut self_loop = header.clone();
    self_loop.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
    assert_eq!(read_name(&self_loop, 12), None);
    assert_eq!(parse_message(&self_loop), None);
    let mut forward = header.clone();
    forward.extend_from_slice(&[0xc0, 0x0e, 0x01, b'a', 0x00]);
    assert_eq!(read_name(&forward, 12), None);
    // Labels at 12 run into a pointer back to 12: a loop through a label run.
    let mut through_labels = header.clone();
    through_labels.extend_from_slice(&[0x01, b'a', 0xc0, 0x0c]);
    assert_eq!(read_name(&through_labels, 12), None);
    // Backwards pointers chain fine.
    let mut chain = header.clone();
    chain.extend_from_slice(&[0x01, b'a', 0x00, 0x01, b'b', 0xc0, 0x0c]);
    assert_eq!(read_name(&chain, 15), Some(("b.a".to_string(), 19)));
    // 255 octets is the limit: 127 one-letter labels make 255 with the root.
    let mut long = header.clone();
    for _ in 0..127 {
        long.extend_from_slice(&[0x01, b'x']);
    }
    long.push(0);
    assert!(read_name(&long, 12).is_some());
    let mut too_long = header;
    for _ in 0..128 {
        too_long.extend_from_slice(&[0x01, b'x']);
    }
    too_long.push(0);
    assert_eq!(read_name(&too_long, 12), None);
    // Reserved label types.
    assert_eq!(read_name(&[0x40, 0x00], 0), None);
    assert_eq!(read_name(&[0x80, 0x00], 0), None);
}

#[test]
fn labels_are_escaped() {
    let name = [0x04, b'a', b'.', b'\\', 0x1b, 0x00];
    assert_eq!(read_name(&name, 0), Some(("a\\.\\\\\\x1b".to_string(), 6)));
    assert_eq!(read_name(&[0x00], 0), Some((".".to_string(), 1)));
}

#[test]
fn counts_are_checked_against_the_datagram() {
    // 65535 answers claimed, one present: kept, marked incomplete.
    let mut reply = hex(CACHED);
    if let Some(count) = reply.get_mut(6..8) {
        count.copy_from_slice(&[0xff, 0xff]);
    }
    let Some(message) = parse_message(&reply) else {
        panic!("parses");
    };
    assert_eq!((message.records.len(), message.complete), (1, false));
    // More records than the cap: MAX_RECORDS kept.
    let mut many = hex("12348180000000ff00000000");
    for _ in 0..255 {
        many.extend_from_slice(&hex("00000100010000000000047f000001"));
    }
    let Some(message) = parse_message(&many) else {
        panic!("parses");
    };
    assert_eq!(
        (message.records.len(), message.complete),
        (MAX_RECORDS, false)
    );
    // A truncated header, and a question cut short.
    assert_eq!(parse_message(&hex("1234818000")), None);
    assert_eq!(
        parse_message(hex(CACHED).get(..20).unwrap_or_default()),
        None
    );
}

#[test]
fn formerr_to_foreign_bytes_looks_like_dns() {
    // What a DNS server sends back to an SNMP GetRequest: FORMERR, the first two
    // bytes of the datagram as ID, no sections.
    let sent = crate::udp::snmp::get_request(crate::udp::snmp::Version::V2c, 1);
    let mut formerr = sent.get(..2).unwrap_or_default().to_vec();
    formerr.extend_from_slice(&hex("80010000000000000000"));
    assert!(looks_like_reply(&sent, &formerr));
    // Trailing bytes, or another ID, and it is not.
    let mut trailing = formerr.clone();
    trailing.push(0);
    assert!(!looks_like_reply(&sent, &trailing));
    assert!(!looks_like_reply(b"\x00\x00", &formerr));
    assert!(looks_like_reply(&recursion_query(0x1234), &hex(CACHED)));
}

#[test]
fn version_strings_name_products() {
    for (text, expected) in [
        ("dnsmasq-2.90", Some(("dnsmasq", Some("2.90")))),
        ("unbound 1.17.1", Some(("Unbound", Some("1.17.1")))),
        (
            "9.18.28-1~deb12u2-Debian",
            Some(("BIND", Some("9.18.28-1~deb12u2-Debian"))),
        ),
        (
            "PowerDNS Recursor 4.8.4",
            Some(("PowerDNS Recursor", Some("4.8.4"))),
        ),
        ("none of your business", None),
        ("9.x", None),
    ] {
        let found = version_product(text);
        assert_eq!(
            found.as_ref().map(|(p, v)| (p.as_str(), v.as_deref())),
            expected,
            "{text}"
        );
    }
}

/// Regression (udp_dns fuzz target, crash-4c70a7be): an answer whose name is a
/// pointer into the header, where a "label" of 52 octets starts and runs past
/// the pointer into the record's own fields. Read that way, the record's type
/// and length came from bytes after it and the message parsed differently when
/// cut at its own end. A label reached through a pointer must end before the
/// pointer.
#[test]
fn labels_behind_a_pointer_end_before_it() {
    let message = hex("123481800001000100000000076578616d706c6503636f6d0000010001\
         c0010c0000010000012c0004000000000000000000000000000000000000c0a4a4a4a4a4a4a4000201");
    assert_eq!(message.len(), 70);
    let Some(parsed) = parse_message(&message) else {
        panic!("the header and question parse");
    };
    assert_eq!((parsed.records.len(), parsed.complete), (0, false));
    assert_eq!(
        parse_message(message.get(..parsed.end).unwrap_or_default()),
        Some(parsed)
    );
    // A pointer to a label run that ends exactly at the pointer is fine.
    let mut fine = hex("000081800000000000000000");
    fine.extend_from_slice(&[0x01, b'a', 0x00, 0xc0, 0x0c]);
    assert_eq!(read_name(&fine, 15), Some(("a".to_string(), 17)));
    let mut overrun = hex("000081800000000000000000");
    overrun.extend_from_slice(&[0x03, b'a', 0xc0, 0x0c, 0x00]);
    assert_eq!(read_name(&overrun, 14), None);
}
