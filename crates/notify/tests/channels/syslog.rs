//! The syslog channel into sockets the tests bind: a unix datagram socket
//! in a temporary directory, UDP and TCP on 127.0.0.1. What arrives is read
//! with a strict RFC 5424 parser written here.

use std::collections::BTreeMap;
use std::time::Duration;

use perimeter_notify::{Destination, Facility, Syslog, SyslogConfig, SyslogTarget, Timeouts};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, UdpSocket, UnixDatagram};

use crate::common::{HOSTILE, alert, channel, closed_port};

/// One RFC 5424 message, taken apart.
#[derive(Debug)]
struct Message {
    facility: u8,
    severity: u8,
    timestamp: OffsetDateTime,
    hostname: String,
    app_name: String,
    procid: String,
    msgid: String,
    /// SD-ID -> PARAM-NAME -> PARAM-VALUE (unescaped).
    sd: BTreeMap<String, BTreeMap<String, String>>,
    msg: String,
}

/// Parse `text` by the ABNF of RFC 5424 section 6, refusing anything it
/// does not allow.
fn parse_5424(bytes: &[u8]) -> Result<Message, String> {
    let mut rest = bytes;
    let mut take_until_space = |what: &str, max: usize| -> Result<String, String> {
        let end = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or(format!("no space after {what}"))?;
        let field = &rest[..end];
        rest = &rest[end + 1..];
        if field.is_empty() || field.len() > max {
            return Err(format!(
                "{what} has {} bytes, 1 to {max} allowed",
                field.len()
            ));
        }
        if !field.iter().all(|b| (33..=126).contains(b)) {
            return Err(format!("{what} is not PRINTUSASCII: {field:?}"));
        }
        Ok(String::from_utf8(field.to_vec()).expect("ASCII"))
    };
    let pri_version = take_until_space("PRI VERSION", 9)?;
    let (pri, version) = pri_version
        .strip_prefix('<')
        .and_then(|s| s.split_once('>'))
        .ok_or("no <PRI>")?;
    if version != "1" {
        return Err(format!("VERSION {version}"));
    }
    if pri.is_empty() || pri.len() > 3 || (pri.len() > 1 && pri.starts_with('0')) {
        return Err(format!("PRI {pri}"));
    }
    let pri: u8 = pri.parse().map_err(|_| format!("PRI {pri}"))?;
    if pri > 191 {
        return Err(format!("PRI {pri} > 191"));
    }
    let timestamp = take_until_space("TIMESTAMP", 32)?;
    if timestamp.contains(['t', 'z']) {
        return Err("T and Z must be upper case".to_owned());
    }
    let timestamp = OffsetDateTime::parse(&timestamp, &Rfc3339).map_err(|e| format!("{e}"))?;
    let hostname = take_until_space("HOSTNAME", 255)?;
    let app_name = take_until_space("APP-NAME", 48)?;
    let procid = take_until_space("PROCID", 128)?;
    let msgid = take_until_space("MSGID", 32)?;
    // STRUCTURED-DATA: "-" or one or more SD-ELEMENTs.
    let mut sd = BTreeMap::new();
    if rest.first() == Some(&b'-') {
        rest = &rest[1..];
    } else {
        while rest.first() == Some(&b'[') {
            rest = &rest[1..];
            let name_end = rest
                .iter()
                .position(|&b| b == b' ' || b == b']')
                .ok_or("unterminated SD-ELEMENT")?;
            let id = sd_name(&rest[..name_end])?;
            rest = &rest[name_end..];
            let mut params = BTreeMap::new();
            while rest.first() == Some(&b' ') {
                rest = &rest[1..];
                let eq = rest
                    .iter()
                    .position(|&b| b == b'=')
                    .ok_or("no = in SD-PARAM")?;
                let name = sd_name(&rest[..eq])?;
                rest = &rest[eq + 1..];
                if rest.first() != Some(&b'"') {
                    return Err(format!("PARAM-VALUE of {name} is not quoted"));
                }
                rest = &rest[1..];
                let mut value = Vec::new();
                loop {
                    match rest.first() {
                        None => return Err("unterminated PARAM-VALUE".to_owned()),
                        Some(b'"') => {
                            rest = &rest[1..];
                            break;
                        }
                        Some(b'\\') if matches!(rest.get(1), Some(b'"' | b'\\' | b']')) => {
                            value.push(rest[1]);
                            rest = &rest[2..];
                        }
                        Some(b']') => return Err(format!("unescaped ] in {name}")),
                        Some(&b) => {
                            value.push(b);
                            rest = &rest[1..];
                        }
                    }
                }
                let value = String::from_utf8(value).map_err(|_| "PARAM-VALUE not UTF-8")?;
                if params.insert(name.clone(), value).is_some() {
                    return Err(format!("{name} twice"));
                }
            }
            if rest.first() != Some(&b']') {
                return Err("SD-ELEMENT not closed".to_owned());
            }
            rest = &rest[1..];
            if sd.insert(id.clone(), params).is_some() {
                return Err(format!("SD-ID {id} twice"));
            }
        }
        if sd.is_empty() {
            return Err("no STRUCTURED-DATA".to_owned());
        }
    }
    // MSG: absent, or SP then MSG-UTF8 (BOM and UTF-8) or MSG-ANY.
    let msg = match rest.split_first() {
        None => String::new(),
        Some((b' ', msg)) => match msg.strip_prefix("\u{feff}".as_bytes()) {
            Some(utf8) => String::from_utf8(utf8.to_vec()).map_err(|_| "MSG-UTF8 not UTF-8")?,
            None if msg.is_ascii() => String::from_utf8(msg.to_vec()).expect("ASCII"),
            None => return Err("non-ASCII MSG without a BOM".to_owned()),
        },
        Some(_) => return Err("no space before MSG".to_owned()),
    };
    Ok(Message {
        facility: pri / 8,
        severity: pri % 8,
        timestamp,
        hostname,
        app_name,
        procid,
        msgid,
        sd,
        msg,
    })
}

/// SD-NAME: 1 to 32 PRINTUSASCII except `=`, space, `]` and `"`.
fn sd_name(bytes: &[u8]) -> Result<String, String> {
    let ok = !bytes.is_empty()
        && bytes.len() <= 32
        && bytes
            .iter()
            .all(|b| (33..=126).contains(b) && !matches!(b, b'=' | b']' | b'"'));
    if !ok {
        return Err(format!("bad SD-NAME {bytes:?}"));
    }
    Ok(String::from_utf8(bytes.to_vec()).expect("ASCII"))
}

/// The three messages of the test alert, checked field by field.
fn check_messages(messages: &[Vec<u8>], facility: u8) {
    let parsed: Vec<Message> = messages
        .iter()
        .map(|bytes| {
            parse_5424(bytes).unwrap_or_else(|why| {
                panic!("not RFC 5424 ({why}): {:?}", String::from_utf8_lossy(bytes))
            })
        })
        .collect();
    assert_eq!(parsed.len(), 3, "one message per change: {parsed:#?}");
    let pid = std::process::id().to_string();
    for (idx, message) in parsed.iter().enumerate() {
        assert_eq!(message.facility, facility);
        assert_eq!(message.hostname, "scanner-1");
        assert_eq!(message.app_name, "perimeter");
        assert_eq!(message.procid, pid);
        assert_eq!(message.msgid, "alert");
        assert_eq!(
            message.timestamp,
            time::macros::datetime!(2026-11-25 12:07:16 UTC)
        );
        let sd = &message.sd["perimeter@32473"];
        assert_eq!(sd["key"], "nightly:42:logs");
        assert_eq!(sd["job"], "nightly");
        assert_eq!(sd["run"], "42");
        assert_eq!(sd["change"], (idx + 1).to_string());
        assert_eq!(sd["changes"], "3");
    }
    // Worst first, each at its own severity: crit, err, warning.
    let severities: Vec<u8> = parsed.iter().map(|m| m.severity).collect();
    assert_eq!(severities, [2, 3, 4]);
    assert_eq!(parsed[0].sd["perimeter@32473"]["kind"], "auth-changed");
    assert_eq!(
        parsed[0].msg,
        "CRITICAL auth-changed (new) 198.51.100.7:6379: redis now answers without a password; \
         evidence: PING answered +PONG without AUTH; remedy: Set requirepass."
    );
    // The hostile subject stays inside its quoted value and its one line.
    let hostile = &parsed[1];
    assert_eq!(
        hostile.sd["perimeter@32473"]["subject"],
        HOSTILE
            .replace('\r', "\\r")
            .replace('\n', "\\n")
            .replace('\u{1b}', "\\u{1b}")
    );
    assert!(
        hostile
            .msg
            .starts_with("HIGH unknown-host (new) <script>x</script>\\r\\nX-Injected")
    );
}

fn syslog(target: SyslogTarget, facility: Facility) -> Destination {
    Destination::Syslog(
        Syslog::new(SyslogConfig {
            target,
            facility,
            timeouts: Timeouts {
                connect: Duration::from_secs(2),
                overall: Duration::from_secs(5),
            },
        })
        .expect("syslog"),
    )
}

#[tokio::test]
async fn to_a_unix_datagram_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log");
    let socket = UnixDatagram::bind(&path).expect("bind");
    let logs = channel(
        "logs",
        syslog(SyslogTarget::Unix(path.clone()), Facility::Daemon),
    );
    let delivery = logs.deliver(&alert("logs")).await.expect("delivered");
    assert_eq!(
        delivery.receipt,
        format!("3 messages to unix {}", path.display())
    );
    let mut messages = Vec::new();
    let mut buf = vec![0u8; 65536];
    for _ in 0..3 {
        let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
            .await
            .expect("a datagram")
            .expect("recv");
        messages.push(buf[..n].to_vec());
    }
    check_messages(&messages, 3);
}

#[tokio::test]
async fn a_missing_socket_is_transient() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("no-log");
    let logs = channel(
        "logs",
        syslog(SyslogTarget::Unix(path.clone()), Facility::Daemon),
    );
    let err = logs.deliver(&alert("logs")).await.expect_err("no socket");
    assert!(err.is_transient(), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "channel logs: unix {}: no syslog socket there (is a syslog daemon running?)",
            path.display()
        )
    );
    // A socket file nobody reads any more (the daemon died).
    drop(UnixDatagram::bind(&path).expect("bind"));
    let err = logs
        .deliver(&alert("logs"))
        .await
        .expect_err("nobody reads");
    assert!(err.is_transient(), "{err}");
}

#[tokio::test]
async fn over_udp() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let address = socket.local_addr().expect("address");
    let logs = channel("logs", syslog(SyslogTarget::Udp(address), Facility::Local4));
    logs.deliver(&alert("logs")).await.expect("sent");
    let mut messages = Vec::new();
    let mut buf = vec![0u8; 65536];
    for _ in 0..3 {
        let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
            .await
            .expect("a datagram")
            .expect("recv");
        messages.push(buf[..n].to_vec());
    }
    check_messages(&messages, 20);
}

#[tokio::test]
async fn over_tcp_with_octet_counting() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let collector = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await.expect("read");
        bytes
    });
    let logs = channel("logs", syslog(SyslogTarget::Tcp(address), Facility::Daemon));
    logs.deliver(&alert("logs")).await.expect("sent");
    let bytes = tokio::time::timeout(Duration::from_secs(5), collector)
        .await
        .expect("the collector read to the end")
        .expect("collector");
    // RFC 6587 3.4.1: MSG-LEN SP SYSLOG-MSG, MSG-LEN without leading zeros.
    let mut messages = Vec::new();
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        let space = rest.iter().position(|&b| b == b' ').expect("MSG-LEN SP");
        let len = std::str::from_utf8(&rest[..space]).expect("digits");
        assert!(
            !len.starts_with('0') && len.bytes().all(|b| b.is_ascii_digit()),
            "{len}"
        );
        let len: usize = len.parse().expect("length");
        let frame = rest.get(space + 1..space + 1 + len).expect("a whole frame");
        messages.push(frame.to_vec());
        rest = &rest[space + 1 + len..];
    }
    check_messages(&messages, 3);
}

#[tokio::test]
async fn a_collector_that_is_down_is_transient() {
    let address = format!("127.0.0.1:{}", closed_port())
        .parse()
        .expect("address");
    let logs = channel("logs", syslog(SyslogTarget::Tcp(address), Facility::Daemon));
    let err = logs.deliver(&alert("logs")).await.expect_err("refused");
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("refused"), "{err}");
}

#[test]
fn the_parser_refuses_what_rfc_5424_does_not_allow() {
    let good = "<30>1 2026-11-25T12:07:16Z h a 1 m [x@1 k=\"a\\]b\\\"c\"] msg";
    let parsed = parse_5424(good.as_bytes()).expect("valid");
    assert_eq!(parsed.sd["x@1"]["k"], "a]b\"c");
    assert!(parse_5424(b"<30>1 2026-11-25T12:07:16Z h a 1 m - plain").is_ok());
    for bad in [
        "<192>1 2026-11-25T12:07:16Z h a 1 m - x",
        "<030>1 2026-11-25T12:07:16Z h a 1 m - x",
        "<30>2 2026-11-25T12:07:16Z h a 1 m - x",
        "<30>1 2026-11-25t12:07:16z h a 1 m - x",
        "<30>1 2026-11-25T12:07:16Z h a 1 m [x@1 k=\"a]b\"] x",
        "<30>1 2026-11-25T12:07:16Z h a 1 m [x@1 k=a] x",
        "<30>1 2026-11-25T12:07:16Z h a 1 m [x@1 k=\"a\"",
        "<30>1 2026-11-25T12:07:16Z h a 1 m -x",
        "<30>1 2026-11-25T12:07:16Z h a 1 m - é",
        "<30>1 2026-11-25T12:07:16Z h\u{7f} a 1 m - x",
    ] {
        assert!(parse_5424(bad.as_bytes()).is_err(), "accepted {bad:?}");
    }
}
