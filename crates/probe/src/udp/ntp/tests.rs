//! NTP tests over replies captured from ntpsec 1.2.2 and chrony 4.3 on
//! loopback, and over hand-built mode 6 and mode 7 datagrams.

use super::*;
use expect_test::expect;
use perimeter_model::Severity;

/// ntpsec 1.2.2, unsynchronised, answering `client_request(0x7072)`.
const NTPSEC_MODE3: &[u8] = include_bytes!("../../../tests/fixtures/udp-ntpsec-mode3.bin");
/// chrony 4.3, unsynchronised, answering `client_request(0x7072)`.
const CHRONY_MODE3: &[u8] = include_bytes!("../../../tests/fixtures/udp-chrony-mode3.bin");
/// ntpsec 1.2.2 answering `readvar_request(1)` in one datagram.
const NTPSEC_READVAR: &[u8] = include_bytes!("../../../tests/fixtures/udp-ntpsec-readvar.bin");

#[test]
fn requests_follow_the_layouts() {
    let client = client_request(0x7072);
    assert_eq!(client.len(), PACKET_LEN);
    assert_eq!(client.first(), Some(&0x23));
    assert_eq!(u64_at(&client, 40), Some(client_nonce(0x7072)));
    assert!(
        client
            .get(1..40)
            .is_some_and(|rest| rest.iter().all(|&b| b == 0))
    );
    assert_eq!(
        readvar_request(0x0102),
        [0x16, 0x02, 0x01, 0x02, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    // Our own requests read back through our own parsers as requests.
    assert_eq!(
        parse_control(&readvar_request(9)).map(|c| (c.response, c.opcode, c.sequence)),
        Some((false, OP_READVAR, 9))
    );
    let monlist = monlist_request();
    assert_eq!(monlist.len(), PACKET_LEN);
    assert_eq!(
        parse_private(&monlist),
        Some(PrivateReply {
            response: false,
            more: false,
            version: 2,
            sequence: 0,
            implementation: IMPL_XNTPD,
            request: REQ_MON_GETLIST_1,
            error: 0,
            n_items: 0,
            item_size: 0,
        })
    );
    assert_eq!(
        parse_server_reply(&client),
        None,
        "a request is not a reply"
    );
}

#[test]
fn server_replies_identify() {
    expect![[r#"
        Some(
            Identified {
                service: ServiceInfo {
                    name: "ntp",
                    product: None,
                    version: None,
                    banner: None,
                    tls: None,
                    auth: Unknown,
                    extra: {
                        "kiss": "INIT",
                        "protocol": "NTPv4",
                        "stratum": "0",
                        "synchronised": "no",
                    },
                },
                findings: [],
            },
        )
    "#]]
    .assert_debug_eq(&identify_client(0x7072, NTPSEC_MODE3));
    let Some(chrony) = identify_client(0x7072, CHRONY_MODE3) else {
        panic!("chrony identified");
    };
    assert_eq!(
        chrony.service.extra.get("protocol").map(String::as_str),
        Some("NTPv4")
    );
    assert!(!chrony.service.extra.contains_key("kiss"));
    // The origin timestamp must be our nonce.
    assert_eq!(identify_client(0x7073, NTPSEC_MODE3), None);
    let mut synced = NTPSEC_MODE3.to_vec();
    synced.splice(0..2, [0x24, 2]);
    synced.splice(12..16, [192, 0, 2, 1]);
    let Some(found) = identify_client(0x7072, &synced) else {
        panic!("identified");
    };
    assert_eq!(
        found.service.extra.get("refid").map(String::as_str),
        Some("192.0.2.1")
    );
}

#[test]
fn readvar_answer_is_mode6_finding() {
    let Some(control) = parse_control(NTPSEC_READVAR) else {
        panic!("parses");
    };
    assert!(control.response && !control.error && !control.more);
    assert_eq!(control.data.len(), 346);
    let variables = parse_variables(&control.data);
    assert_eq!(variables.len(), 19);
    assert_eq!(
        variables.iter().find(|(k, _)| k == "version"),
        Some(&("version".to_string(), "ntpd ntpsec-1.2.2".to_string()))
    );
    expect![[r#"
        Some(
            Identified {
                service: ServiceInfo {
                    name: "ntp",
                    product: Some(
                        "ntpsec",
                    ),
                    version: Some(
                        "1.2.2",
                    ),
                    banner: Some(
                        "ntpd ntpsec-1.2.2",
                    ),
                    tls: None,
                    auth: Unknown,
                    extra: {
                        "mode6": "answered",
                        "refid": "INIT",
                        "stratum": "16",
                        "system": "Linux/6.18.44-fc-v1045",
                    },
                },
                findings: [
                    Finding {
                        rule: "exposed.ntp-mode6",
                        severity: Medium,
                        subject: "",
                        message: "the NTP server answers mode 6 control queries (ntpq) from this network",
                        evidence: [
                            "mode 6 READVAR answered with 346 bytes of system variables",
                            "version=\"ntpd ntpsec-1.2.2\"",
                        ],
                        remedy: "add `noquery` to the `restrict default` lines of ntp.conf (keep queries for localhost only), or firewall UDP 123 to time service only",
                    },
                ],
            },
        )
    "#]]
    .assert_debug_eq(&identify_readvar(1, NTPSEC_READVAR));
    assert_eq!(identify_readvar(2, NTPSEC_READVAR), None);
}

#[test]
fn readvar_errors_and_quoting() {
    // The error bit set: the service, no finding.
    let mut error = NTPSEC_READVAR.get(..12).unwrap_or_default().to_vec();
    if let Some(byte) = error.get_mut(1) {
        *byte = 0xc2;
    }
    let Some(found) = identify_readvar(1, &error) else {
        panic!("identified");
    };
    assert!(found.findings.is_empty());
    // Commas inside quotes, a cut-off last pair, control bytes.
    assert_eq!(
        parse_variables(b"a=1, b=\"x, y\",\r\nc=\"\x1b[31m\", d=\"cut"),
        vec![
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "x, y".to_string()),
            ("c".to_string(), "\\x1b[31m".to_string()),
            ("d".to_string(), "cut".to_string()),
        ]
    );
    // The count field caps what is read, and the datagram caps the count.
    let mut short = readvar_request(1);
    short.splice(10..12, [0xff, 0xff]);
    assert_eq!(parse_control(&short).map(|c| c.data.len()), Some(0));
    let many = b"x=1,".repeat(200);
    assert_eq!(parse_variables(&many).len(), MAX_VARIABLES);
}

#[test]
fn daemon_versions() {
    assert_eq!(
        daemon_version("ntpd 4.2.8p15@1.3728-o Wed Sep 23 11:46:38 UTC 2020 (1)"),
        (Some("ntpd".into()), Some("4.2.8p15".into()))
    );
    assert_eq!(
        daemon_version("ntpd ntpsec-1.2.2 2023-01-01T00:00:00Z"),
        (Some("ntpsec".into()), Some("1.2.2".into()))
    );
    assert_eq!(daemon_version("something else"), (None, None));
}

/// A mode 7 response header as the `ntp_request.h` layout describes it: R=1,
/// M as given, VN=2, mode 7; sequence 0; implementation 3; request 42; error
/// and item count; item size 72 (info_monitor_1); `n_items` zeroed items.
fn monlist_reply(more: bool, error: u8, n_items: u16) -> Vec<u8> {
    let first = 0x80 | if more { 0x40 } else { 0 } | (2 << 3) | 7;
    let mut out = vec![first, 0, IMPL_XNTPD, REQ_MON_GETLIST_1];
    out.extend_from_slice(&((u16::from(error) << 12) | n_items).to_be_bytes());
    out.extend_from_slice(&72u16.to_be_bytes());
    out.extend(std::iter::repeat_n(0, 72 * usize::from(n_items)));
    out
}

#[test]
fn monlist_answer_is_high() {
    let Some(found) = identify_monlist(&monlist_reply(true, 0, 6)) else {
        panic!("identified");
    };
    let [finding] = found.findings.as_slice() else {
        panic!("one finding");
    };
    assert_eq!(finding.rule, rules::NTP_MONLIST);
    assert_eq!(finding.severity, Severity::High);
    assert_eq!(
        finding.evidence,
        vec![
            "mode 7 MON_GETLIST_1 answered: 6 entries of 72 bytes in this datagram, more datagrams follow"
                .to_string()
        ]
    );
    // An error answer (ntpd 4.2.7p26+ has no monlist) is no finding.
    let Some(refused) = identify_monlist(&monlist_reply(false, 2, 0)) else {
        panic!("identified");
    };
    assert!(refused.findings.is_empty());
    assert_eq!(
        refused.service.extra.get("mode7").map(String::as_str),
        Some("error 2")
    );
    // A request, or a reply to another request code, is not an answer.
    assert_eq!(identify_monlist(&monlist_request()), None);
    let mut other = monlist_reply(false, 0, 1);
    if let Some(code) = other.get_mut(3) {
        *code = 4;
    }
    assert_eq!(identify_monlist(&other), None);
}

#[test]
fn shapes_for_sniffing() {
    assert!(looks_like_reply(NTPSEC_MODE3));
    assert!(looks_like_reply(NTPSEC_READVAR));
    assert!(looks_like_reply(&monlist_reply(false, 0, 1)));
    assert!(!looks_like_reply(&client_request(1)));
    assert!(!looks_like_reply(&readvar_request(1)));
    assert!(!looks_like_reply(b"HTTP/1.1 200 OK\r\n"));
    assert!(!looks_like_reply(&[]));
}
