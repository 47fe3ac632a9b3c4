//! SNMP tests over a Response captured from net-snmp 5.9.3's snmpd on loopback
//! (`sysDescr perimeter test agent` in its configuration) and hand-built
//! hostile messages.

use super::*;
use expect_test::expect;

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .filter_map(|idx| text.get(idx..idx + 2))
        .filter_map(|pair| u8::from_str_radix(pair, 16).ok())
        .collect()
}

/// snmpd's v2c Response to `get_request(Version::V2c, 0x7072)`.
const SNMPD_V2C: &str = "303b02010104067075626c6963a22e020270720201000201003022302006082b060102010101000414706572696d657465722074657374206167656e74";
/// The same agent's v1 GetResponse to `get_request(Version::V1, 0x7072)`.
const SNMPD_V1: &str = "303b02010004067075626c6963a22e020270720201000201003022302006082b060102010101000414706572696d657465722074657374206167656e74";

#[test]
fn requests_decode_as_ber() {
    let request = get_request(Version::V2c, 0x7072);
    assert_eq!(
        request,
        hex("302702010104067075626c6963a01a020270720201000201003\
             00e300c06082b060102010101000500")
    );
    // Our own BER reader decodes it to the RFC 1157 / RFC 3416 structure.
    expect![[r#"
        Some(
            [
                Constructed {
                    tag: 48,
                    children: [
                        Primitive {
                            tag: 2,
                            value: [
                                1,
                            ],
                        },
                        Primitive {
                            tag: 4,
                            value: [
                                112,
                                117,
                                98,
                                108,
                                105,
                                99,
                            ],
                        },
                        Constructed {
                            tag: 160,
                            children: [
                                Primitive {
                                    tag: 2,
                                    value: [
                                        112,
                                        114,
                                    ],
                                },
                                Primitive {
                                    tag: 2,
                                    value: [
                                        0,
                                    ],
                                },
                                Primitive {
                                    tag: 2,
                                    value: [
                                        0,
                                    ],
                                },
                                Constructed {
                                    tag: 48,
                                    children: [
                                        Constructed {
                                            tag: 48,
                                            children: [
                                                Primitive {
                                                    tag: 6,
                                                    value: [
                                                        43,
                                                        6,
                                                        1,
                                                        2,
                                                        1,
                                                        1,
                                                        1,
                                                        0,
                                                    ],
                                                },
                                                Primitive {
                                                    tag: 5,
                                                    value: [],
                                                },
                                            ],
                                        },
                                    ],
                                },
                            ],
                        },
                    ],
                },
            ],
        )
    "#]]
    .assert_debug_eq(&ber::decode_tree(&request));
    let Some(parsed) = parse_message(&get_request(Version::V1, 0x8001)) else {
        panic!("our request parses");
    };
    assert_eq!(
        (parsed.version, parsed.pdu_tag, parsed.request_id),
        (0, tag::GET_REQUEST, 0x8001)
    );
    assert_eq!(parsed.varbinds, vec![(SYS_DESCR.to_vec(), Value::Null)]);
}

#[test]
fn public_answer_is_high() {
    expect![[r#"
        Some(
            Identified {
                service: ServiceInfo {
                    name: "snmp",
                    product: None,
                    version: None,
                    banner: Some(
                        "perimeter test agent",
                    ),
                    tls: None,
                    auth: None,
                    extra: {
                        "community": "public",
                        "snmp-versions": "v2c",
                        "sysdescr": "perimeter test agent",
                    },
                },
                findings: [
                    Finding {
                        rule: "exposed.snmp-public",
                        severity: High,
                        subject: "",
                        message: "the SNMP agent answers the default community \"public\"",
                        evidence: [
                            "GetRequest sysDescr.0 with community \"public\" (v2c) answered",
                            "sysDescr: perimeter test agent",
                        ],
                        remedy: "remove the `public` community (use SNMPv3 with authentication, or a long random community limited to your monitoring hosts) and firewall UDP 161",
                    },
                ],
            },
        )
    "#]]
    .assert_debug_eq(&identify(Version::V2c, 0x7072, &hex(SNMPD_V2C)));
    let Some(v1) = identify(Version::V1, 0x7072, &hex(SNMPD_V1)) else {
        panic!("v1 identified");
    };
    assert_eq!(
        v1.service.extra.get("snmp-versions").map(String::as_str),
        Some("v1")
    );
    // Another request-id or version is not an answer to ours.
    assert_eq!(identify(Version::V2c, 0x7073, &hex(SNMPD_V2C)), None);
    assert_eq!(identify(Version::V1, 0x7072, &hex(SNMPD_V2C)), None);
    assert!(looks_like_reply(&hex(SNMPD_V2C)));
    assert!(!looks_like_reply(&get_request(Version::V2c, 1)));
}

/// A Response with the given error status and one varbind value.
fn response(error_status: u8, value_tag: u8, value: &[u8]) -> Vec<u8> {
    let mut varbind = Vec::new();
    ber::encode_tlv(
        tag::OID,
        &ber::encode_oid(&SYS_DESCR).unwrap_or_default(),
        &mut varbind,
    );
    ber::encode_tlv(value_tag, value, &mut varbind);
    let mut list = Vec::new();
    ber::encode_tlv(tag::SEQUENCE, &varbind, &mut list);
    let mut pdu = Vec::new();
    ber::encode_tlv(tag::INTEGER, &[0x07], &mut pdu);
    ber::encode_tlv(tag::INTEGER, &[error_status], &mut pdu);
    ber::encode_tlv(tag::INTEGER, &[1], &mut pdu);
    ber::encode_tlv(tag::SEQUENCE, &list, &mut pdu);
    let mut message = Vec::new();
    ber::encode_tlv(tag::INTEGER, &[1], &mut message);
    ber::encode_tlv(tag::OCTET_STRING, COMMUNITY, &mut message);
    ber::encode_tlv(tag::RESPONSE, &pdu, &mut message);
    let mut out = Vec::new();
    ber::encode_tlv(tag::SEQUENCE, &message, &mut out);
    out
}

#[test]
fn errors_and_exceptions_still_prove_the_community() {
    let Some(found) = identify(Version::V2c, 7, &response(0, tag::NO_SUCH_OBJECT, &[])) else {
        panic!("identified");
    };
    assert_eq!(found.service.banner, None);
    assert_eq!(found.findings.len(), 1);
    let Some(found) = identify(Version::V2c, 7, &response(2, tag::NULL, &[])) else {
        panic!("identified");
    };
    assert_eq!(
        found
            .findings
            .first()
            .and_then(|f| f.evidence.first())
            .map(String::as_str),
        Some("GetRequest sysDescr.0 with community \"public\" (v2c) answered with noSuchName")
    );
    assert_eq!(error_name(99), "error 99");
}

#[test]
fn values_are_capped_and_typed() {
    let long = vec![b'a'; 5000];
    let Some(parsed) = parse_message(&response(0, tag::OCTET_STRING, &long)) else {
        panic!("parses");
    };
    assert_eq!(
        parsed.varbinds.first().map(|(_, v)| v.clone()),
        Some(Value::OctetString(vec![b'a'; MAX_OCTETS]))
    );
    let Some(found) = identify(Version::V2c, 7, &response(0, tag::OCTET_STRING, &long)) else {
        panic!("identified");
    };
    assert!(
        found
            .service
            .banner
            .is_some_and(|b| b.len() <= text::MAX_BANNER_CHARS)
    );
    for (value_tag, value, expected) in [
        (
            tag::TIMETICKS,
            &[0x00, 0xff, 0xff, 0xff, 0xff][..],
            Value::Unsigned {
                tag: tag::TIMETICKS,
                value: 0xffff_ffff,
            },
        ),
        (
            tag::IP_ADDRESS,
            &[192, 0, 2, 1],
            Value::IpAddress([192, 0, 2, 1]),
        ),
        (tag::INTEGER, &[0xff], Value::Integer(-1)),
        (
            tag::OPAQUE,
            &[1, 2, 3],
            Value::Other {
                tag: tag::OPAQUE,
                len: 3,
            },
        ),
        (tag::END_OF_MIB_VIEW, &[], Value::EndOfMibView),
    ] {
        let parsed = parse_message(&response(0, value_tag, value));
        assert_eq!(
            parsed.and_then(|p| p.varbinds.first().map(|(_, v)| v.clone())),
            Some(expected)
        );
    }
    // A malformed value (an IpAddress of three octets) fails the message.
    assert_eq!(
        parse_message(&response(0, tag::IP_ADDRESS, &[1, 2, 3])),
        None
    );
}

#[test]
fn hostile_structures_are_refused() {
    let good = hex(SNMPD_V2C);
    for cut in 0..good.len() {
        assert_eq!(
            parse_message(good.get(..cut).unwrap_or_default()),
            None,
            "cut at {cut}"
        );
    }
    // An indefinite length on the outer SEQUENCE.
    let mut indefinite = good.clone();
    if let Some(len) = indefinite.get_mut(1) {
        *len = 0x80;
    }
    assert_eq!(parse_message(&indefinite), None);
    // A v1 Trap PDU has another layout and is not read as a Response.
    let mut trap = good.clone();
    if let Some(pdu) = trap.get_mut(13) {
        *pdu = tag::TRAP_V1;
    }
    assert_eq!(parse_message(&trap), None);
    // A varbind list claiming many varbinds: MAX_VARBINDS kept.
    let mut varbind = Vec::new();
    ber::encode_tlv(tag::OID, &[0x2b, 6], &mut varbind);
    ber::encode_tlv(tag::NULL, &[], &mut varbind);
    let mut one = Vec::new();
    ber::encode_tlv(tag::SEQUENCE, &varbind, &mut one);
    let mut list = Vec::new();
    ber::encode_tlv(tag::SEQUENCE, &one.repeat(100), &mut list);
    let mut pdu = hex("020101020100020100");
    pdu.extend_from_slice(&list);
    let mut message = hex("02010104067075626c6963");
    ber::encode_tlv(tag::RESPONSE, &pdu, &mut message);
    let mut out = Vec::new();
    ber::encode_tlv(tag::SEQUENCE, &message, &mut out);
    assert_eq!(
        parse_message(&out).map(|r| r.varbinds.len()),
        Some(MAX_VARBINDS)
    );
}
