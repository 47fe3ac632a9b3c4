//! memcached over UDP (port 11211): the frame header of memcached's
//! `protocol.txt` ("UDP protocol") around the text commands `version` and
//! `stats`, and a reader for the framed answer.
//!
//! Every datagram, both ways, starts with an 8-byte frame header, each field a
//! 16-bit big-endian integer: request ID, sequence number, total number of
//! datagrams in this message, reserved (must be 0). A request fits in one
//! datagram (sequence 0 of 1); the answer echoes the request ID and may span
//! several datagrams, each carrying its sequence number.
//!
//! An answer over UDP came back to a datagram that carried no credentials, and
//! any answer to a spoofable datagram is a reflection: `stats` returns
//! kilobytes for 15 bytes, a stored value up to a megabyte (the 2018
//! amplification attacks). A `VERSION` or `STAT` answer is
//! [`rules::MEMCACHED_UDP`]; an error answer names the service only.

use perimeter_model::{AuthState, ServiceInfo};

use super::u16_at;
use crate::{Identified, memcached, rules, text};

/// The frame header length.
pub const FRAME_HEADER_LEN: usize = 8;
/// The most `STAT` lines kept from one datagram.
const MAX_STAT_LINES: usize = 256;

/// A framed request: request ID `id`, sequence 0, total 1, reserved 0, then the
/// command.
pub fn request(id: u16, command: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + command.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 1, 0, 0]);
    out.extend_from_slice(command);
    out
}

/// One datagram's frame header and body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub request_id: u16,
    pub sequence: u16,
    pub total: u16,
    pub body: &'a [u8],
}

/// Reads the frame header. `None` when it is short, the reserved field is not
/// zero, or the sequence number is not below the total.
pub fn parse_frame(datagram: &[u8]) -> Option<Frame<'_>> {
    let request_id = u16_at(datagram, 0)?;
    let sequence = u16_at(datagram, 2)?;
    let total = u16_at(datagram, 4)?;
    let reserved = u16_at(datagram, 6)?;
    (reserved == 0 && sequence < total).then_some(Frame {
        request_id,
        sequence,
        total,
        body: datagram.get(FRAME_HEADER_LEN..)?,
    })
}

/// What the first datagram of an answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `VERSION 1.6.18`
    Version(String),
    /// `STAT` lines (the answer to `stats`), as many as this datagram holds.
    Stats(Vec<(String, String)>),
    /// `ERROR`, `CLIENT_ERROR ...` or `SERVER_ERROR ...`.
    Error(String),
}

/// Reads the body of an answer's first datagram. Later datagrams continue the
/// text mid-line and are not read here: the first one is enough to identify.
pub fn parse_body(body: &[u8]) -> Option<Answer> {
    match memcached::parse_answer(body) {
        Some(memcached::Answer::Version(version)) => return Some(Answer::Version(version)),
        Some(memcached::Answer::ClientError(message)) => return Some(Answer::Error(message)),
        Some(memcached::Answer::Error) => return Some(Answer::Error("ERROR".into())),
        // A complete STAT ... END fits in one datagram only on a quiet server;
        // read the lines the same way either way.
        Some(memcached::Answer::Stats(_)) | None => {}
    }
    let stats: Vec<(String, String)> = text::complete_lines(body, MAX_STAT_LINES)
        .into_iter()
        .filter_map(|line| {
            let rest = line.strip_prefix(b"STAT ")?;
            let space = rest.iter().position(|&b| b == b' ')?;
            Some((
                text::value_bytes(rest.get(..space)?),
                text::value_bytes(rest.get(space + 1..)?),
            ))
        })
        .collect();
    (!stats.is_empty()).then_some(Answer::Stats(stats))
}

/// Identifies memcached from a datagram answering a request framed with `id`.
/// Only the first datagram of an answer (sequence 0) is read.
pub fn identify(id: u16, datagram: &[u8]) -> Option<Identified> {
    let frame = parse_frame(datagram).filter(|f| f.request_id == id && f.sequence == 0)?;
    let answer = parse_body(frame.body)?;
    let mut service = ServiceInfo::named("memcached");
    service.product = Some("memcached".into());
    service.auth = AuthState::None;
    let size = if frame.total > 1 {
        format!(" in {} datagrams", frame.total)
    } else {
        String::new()
    };
    let evidence = match &answer {
        Answer::Version(version) => {
            service.version = Some(version.clone());
            format!("version over UDP answered VERSION {version}{size}")
        }
        Answer::Stats(stats) => {
            let get = |key: &str| stats.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
            service.version = get("version");
            for key in ["curr_items", "curr_connections", "uptime"] {
                if let Some(value) = get(key) {
                    service.extra.insert(key.into(), value);
                }
            }
            format!("stats over UDP answered{size}")
        }
        // A refusal over UDP is still a reflected answer, but not one that
        // proves the amplification; name the service and stop.
        Answer::Error(message) => {
            service.banner = Some(text::banner(message.as_bytes()));
            return Some(Identified::service_only(service));
        }
    };
    service.extra.insert("transport".into(), "udp".into());
    Some(Identified {
        service,
        findings: vec![rules::memcached_udp(vec![evidence])],
    })
}

/// Whether `datagram` is a framed memcached answer of any request ID, for
/// naming a service on an unexpected port.
pub fn looks_like_reply(datagram: &[u8]) -> bool {
    parse_frame(datagram)
        .filter(|frame| frame.sequence == 0)
        .and_then(|frame| parse_body(frame.body))
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use perimeter_model::Severity;

    #[test]
    fn requests_are_framed() {
        assert_eq!(
            request(0x1234, memcached::VERSION),
            b"\x12\x34\x00\x00\x00\x01\x00\x00version\r\n"
        );
        let frame = parse_frame(b"\x12\x34\x00\x00\x00\x01\x00\x00version\r\n");
        assert_eq!(
            frame,
            Some(Frame {
                request_id: 0x1234,
                sequence: 0,
                total: 1,
                body: b"version\r\n"
            })
        );
    }

    #[test]
    fn version_answer_is_high() {
        let reply = b"\x12\x34\x00\x00\x00\x01\x00\x00VERSION 1.6.18\r\n";
        let Some(found) = identify(0x1234, reply) else {
            panic!("identified");
        };
        assert_eq!(found.service.name, "memcached");
        assert_eq!(found.service.version.as_deref(), Some("1.6.18"));
        let [finding] = found.findings.as_slice() else {
            panic!("one finding");
        };
        assert_eq!(finding.rule, rules::MEMCACHED_UDP);
        assert_eq!(finding.severity, Severity::High);
        assert_eq!(
            finding.evidence,
            vec!["version over UDP answered VERSION 1.6.18".to_string()]
        );
        // Another request's answer, a later datagram, a bad header: not ours.
        assert_eq!(identify(0x4321, reply), None);
        assert_eq!(
            identify(0x1234, b"\x12\x34\x00\x01\x00\x02\x00\x00VERSION 1\r\n"),
            None
        );
        assert_eq!(
            identify(0x1234, b"\x12\x34\x00\x00\x00\x01\x00\x01VERSION 1\r\n"),
            None
        );
        assert_eq!(identify(0x1234, b"\x12\x34\x00"), None);
    }

    #[test]
    fn stats_first_datagram_without_end() {
        let reply = b"\x00\x07\x00\x00\x00\x03\x00\x00STAT pid 1\r\nSTAT uptime 42\r\nSTAT version 1.6.18\r\nSTAT curr_items 5\r\nSTAT curr_con";
        let Some(found) = identify(7, reply) else {
            panic!("identified");
        };
        assert_eq!(found.service.version.as_deref(), Some("1.6.18"));
        assert_eq!(
            found.service.extra.get("curr_items").map(String::as_str),
            Some("5")
        );
        assert_eq!(
            found.findings.first().map(|f| f.evidence.clone()),
            Some(vec!["stats over UDP answered in 3 datagrams".to_string()])
        );
    }

    #[test]
    fn errors_name_the_service_without_a_finding() {
        let Some(found) = identify(1, b"\x00\x01\x00\x00\x00\x01\x00\x00ERROR\r\n") else {
            panic!("identified");
        };
        assert!(found.findings.is_empty());
        assert!(looks_like_reply(
            b"\x00\x09\x00\x00\x00\x01\x00\x00ERROR\r\n"
        ));
        assert!(!looks_like_reply(
            b"\x00\x09\x00\x00\x00\x01\x00\x00HTTP/1.1 200 OK\r\n"
        ));
    }
}
