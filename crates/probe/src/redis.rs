//! Redis: the RESP2/RESP3 codec (request encoder, bounded reply parser), the
//! `INFO` text parser, and [`RedisProbe`], which asks `PING` and `INFO server`.
//!
//! The audit's Redis check calls [`command`], [`parse_reply`] and [`parse_info`]
//! directly over its own blocking socket; the scan engine drives [`RedisProbe`].
//! Only read-only commands are ever encoded by this crate (PING, INFO, CONFIG
//! GET); nothing here writes.

use std::collections::BTreeMap;

use perimeter_model::{AuthState, ServiceInfo};
use thiserror::Error;

use crate::{Identified, Next, Probe, rules, sniff_not_http as sniff, text};

/// The longest bulk string accepted. `INFO` is a few KiB and `CONFIG GET *` a
/// few tens; anything near this is not an answer to what we asked.
pub const MAX_BULK_LEN: usize = 1024 * 1024;
/// The most elements accepted in one array, map or set.
pub const MAX_AGGREGATE_LEN: usize = 64 * 1024;
/// The deepest nesting of aggregates accepted.
pub const MAX_DEPTH: usize = 16;
/// The longest simple line (status, error, integer) accepted.
pub const MAX_LINE_LEN: usize = 64 * 1024;

/// One RESP2 or RESP3 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`, `-NOAUTH ...`; also RESP3 blob errors (`!`).
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$3\r\nfoo`; also RESP3 verbatim strings (`=`), format prefix included.
    Bulk(Vec<u8>),
    /// `*2\r\n...`; also RESP3 sets (`~`) and pushes (`>`).
    Array(Vec<Reply>),
    /// RESP3 maps (`%`) and attributes (`|`).
    Map(Vec<(Reply, Reply)>),
    /// RESP2 `$-1` / `*-1`, RESP3 `_`.
    Null,
    /// RESP3 `#t` / `#f`.
    Boolean(bool),
    /// RESP3 `,1.5`, kept as text so no precision or `inf`/`nan` spelling is lost.
    Double(String),
    /// RESP3 `(1234567890123456789012345678901234567890`, kept as text.
    BigNumber(String),
}

impl Reply {
    /// The reply as text, for simple strings, errors and UTF-8 bulk strings.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Reply::Simple(text) | Reply::Error(text) => Some(text),
            Reply::Bulk(bytes) => std::str::from_utf8(bytes).ok(),
            _ => None,
        }
    }
}

/// A reply that is not valid RESP, or breaks a limit. `offset` is where in the
/// buffer the offending part starts.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RespError {
    #[error("unknown reply type byte 0x{byte:02x} at offset {offset}")]
    UnknownType { byte: u8, offset: usize },
    #[error("invalid length or integer `{text}` at offset {offset}")]
    InvalidNumber { text: String, offset: usize },
    #[error("bulk length {len} at offset {offset} exceeds the limit of {MAX_BULK_LEN} bytes")]
    BulkTooLong { len: i64, offset: usize },
    #[error(
        "aggregate of {len} elements at offset {offset} exceeds the limit of {MAX_AGGREGATE_LEN}"
    )]
    AggregateTooLong { len: i64, offset: usize },
    #[error("replies nested deeper than {MAX_DEPTH} at offset {offset}")]
    TooDeep { offset: usize },
    #[error("line at offset {offset} longer than {MAX_LINE_LEN} bytes")]
    LineTooLong { offset: usize },
    #[error("bulk string at offset {offset} not followed by CRLF")]
    MissingCrlf { offset: usize },
}

/// Encodes a command as a RESP array of bulk strings, the form every Redis
/// version accepts.
pub fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Parses one reply from the start of `buf`. `Ok(None)`: the reply is not
/// complete yet (read more). `Ok(Some((reply, used)))`: `used` bytes made the
/// reply. Lengths are checked against the limits before anything is allocated,
/// and aggregates only grow as their elements actually arrive.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, RespError> {
    let mut parser = Parser { buf, pos: 0 };
    match parser.reply(0)? {
        Some(reply) => Ok(Some((reply, parser.pos))),
        None => Ok(None),
    }
}

struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    /// The line starting at `self.pos` (without CRLF), advancing past it.
    fn line(&mut self) -> Result<Option<&[u8]>, RespError> {
        let start = self.pos;
        let rest = self.buf.get(start..).unwrap_or_default();
        let window = rest.get(..MAX_LINE_LEN + 2).unwrap_or(rest);
        match text::find(window, b"\r\n") {
            Some(end) => {
                self.pos = start + end + 2;
                Ok(rest.get(..end))
            }
            None if window.len() > MAX_LINE_LEN + 1 => {
                Err(RespError::LineTooLong { offset: start })
            }
            None => Ok(None),
        }
    }

    fn number(&mut self, offset: usize) -> Result<Option<i64>, RespError> {
        let Some(line) = self.line()? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(line);
        text.parse::<i64>()
            .map(Some)
            .map_err(|_| RespError::InvalidNumber {
                text: text::value(&text),
                offset,
            })
    }

    fn aggregate_len(&mut self, offset: usize) -> Result<Option<Option<usize>>, RespError> {
        let Some(len) = self.number(offset)? else {
            return Ok(None);
        };
        if len < 0 {
            return Ok(Some(None));
        }
        match usize::try_from(len) {
            Ok(n) if n <= MAX_AGGREGATE_LEN => Ok(Some(Some(n))),
            _ => Err(RespError::AggregateTooLong { len, offset }),
        }
    }

    fn reply(&mut self, depth: usize) -> Result<Option<Reply>, RespError> {
        let offset = self.pos;
        if depth > MAX_DEPTH {
            return Err(RespError::TooDeep { offset });
        }
        let Some(&kind) = self.buf.get(offset) else {
            return Ok(None);
        };
        self.pos += 1;
        let lossy = |line: &[u8]| String::from_utf8_lossy(line).into_owned();
        let reply = match kind {
            b'+' => self.line()?.map(|l| Reply::Simple(lossy(l))),
            b'-' => self.line()?.map(|l| Reply::Error(lossy(l))),
            b':' => self.number(offset)?.map(Reply::Integer),
            b'_' => self.line()?.map(|_| Reply::Null),
            b'#' => self.line()?.map(|l| Reply::Boolean(l == b"t")),
            b',' => self.line()?.map(|l| Reply::Double(lossy(l))),
            b'(' => self.line()?.map(|l| Reply::BigNumber(lossy(l))),
            b'$' | b'=' | b'!' => self.bulk(offset)?.map(|bytes| match (kind, bytes) {
                (b'!', Some(bytes)) => Reply::Error(lossy(&bytes)),
                (_, Some(bytes)) => Reply::Bulk(bytes),
                (_, None) => Reply::Null,
            }),
            b'*' | b'~' | b'>' => match self.aggregate_len(offset)? {
                None => None,
                Some(None) => Some(Reply::Null),
                Some(Some(n)) => self.elements(n, depth)?.map(Reply::Array),
            },
            b'%' | b'|' => match self.aggregate_len(offset)? {
                None => None,
                Some(None) => Some(Reply::Null),
                Some(Some(n)) => {
                    let Some(flat) = self.elements(n.saturating_mul(2), depth)? else {
                        return Ok(None);
                    };
                    let mut pairs = Vec::with_capacity(flat.len() / 2);
                    let mut items = flat.into_iter();
                    while let (Some(key), Some(value)) = (items.next(), items.next()) {
                        pairs.push((key, value));
                    }
                    if kind == b'|' {
                        // An attribute annotates the reply that follows it; the
                        // annotation is of no use to a probe, the reply is.
                        return self.reply(depth + 1);
                    }
                    Some(Reply::Map(pairs))
                }
            },
            byte => return Err(RespError::UnknownType { byte, offset }),
        };
        Ok(reply)
    }

    fn bulk(&mut self, offset: usize) -> Result<Option<Option<Vec<u8>>>, RespError> {
        let Some(len) = self.number(offset)? else {
            return Ok(None);
        };
        if len < 0 {
            return Ok(Some(None));
        }
        let len = match usize::try_from(len) {
            Ok(n) if n <= MAX_BULK_LEN => n,
            _ => return Err(RespError::BulkTooLong { len, offset }),
        };
        let start = self.pos;
        let Some(body) = self.buf.get(start..start + len) else {
            return Ok(None);
        };
        match self.buf.get(start + len..start + len + 2) {
            None if self.buf.len() < start + len + 2 => Ok(None),
            Some(b"\r\n") => {
                self.pos = start + len + 2;
                Ok(Some(Some(body.to_vec())))
            }
            _ => Err(RespError::MissingCrlf { offset }),
        }
    }

    fn elements(&mut self, n: usize, depth: usize) -> Result<Option<Vec<Reply>>, RespError> {
        // Every element takes at least three bytes, so the buffer bounds how many
        // can really be there; the claimed count alone never sizes an allocation.
        let remaining = self.buf.len().saturating_sub(self.pos);
        let mut items = Vec::with_capacity(n.min(remaining / 3));
        for _ in 0..n {
            match self.reply(depth + 1)? {
                Some(item) => items.push(item),
                None => return Ok(None),
            }
        }
        Ok(Some(items))
    }
}

/// Parses `INFO` output: `# Section` headers and blank lines are skipped, every
/// `key:value` line becomes an entry (a later duplicate wins). Keys and values
/// are kept verbatim apart from the line ending; callers sanitise what they show.
pub fn parse_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// How a Redis error reply treats an unauthenticated client, if it says.
fn auth_from_error(message: &str) -> Option<(AuthState, &'static str)> {
    let upper = message.to_ascii_uppercase();
    if upper.starts_with("NOAUTH") || upper.starts_with("WRONGPASS") {
        Some((AuthState::Required, "password"))
    } else if upper.starts_with("DENIED") && upper.contains("PROTECTED MODE") {
        Some((AuthState::Required, "protected-mode"))
    } else if upper.starts_with("ERR") && upper.contains("AUTH") {
        Some((AuthState::Required, "password"))
    } else {
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RedisStep {
    Ping,
    Info,
}

/// Identifies Redis with `PING`, then reads `INFO server` for the version when
/// PING was answered without AUTH.
#[derive(Debug)]
pub struct RedisProbe {
    step: RedisStep,
    ping_evidence: String,
}

impl RedisProbe {
    pub fn new() -> Self {
        RedisProbe {
            step: RedisStep::Ping,
            ping_evidence: String::new(),
        }
    }

    fn open(&self, info: Option<&BTreeMap<String, String>>) -> Identified {
        let mut service = ServiceInfo::named("redis");
        service.product = Some("Redis".into());
        service.auth = AuthState::None;
        let mut evidence = vec![self.ping_evidence.clone()];
        if let Some(info) = info {
            if let Some(version) = info.get("redis_version") {
                service.version = Some(text::value(version));
                evidence.push(format!("redis_version:{}", text::value(version)));
            }
            for key in ["redis_mode", "os", "role"] {
                if let Some(found) = info.get(key) {
                    service.extra.insert(key.into(), text::value(found));
                }
            }
        }
        Identified {
            service,
            findings: vec![rules::redis_noauth(evidence)],
        }
    }

    fn refused(message: &str, how: &str) -> Identified {
        let mut service = ServiceInfo::named("redis");
        service.product = Some("Redis".into());
        service.auth = AuthState::Required;
        service.banner = Some(text::banner(format!("-{message}").as_bytes()));
        service.extra.insert("auth".into(), how.into());
        Identified {
            service,
            findings: Vec::new(),
        }
    }
}

impl Default for RedisProbe {
    fn default() -> Self {
        RedisProbe::new()
    }
}

impl Probe for RedisProbe {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn start(&mut self) -> Next {
        self.step = RedisStep::Ping;
        Next::Send(command(&[b"PING"]))
    }

    fn on_data(&mut self, received: &[u8]) -> Next {
        let at_cap = received.len() >= self.max_response();
        let parsed = parse_reply(received);
        match (self.step, parsed) {
            (_, Ok(None)) if !at_cap => Next::Receive,
            (RedisStep::Ping, Ok(Some((Reply::Simple(pong), _))))
                if pong.eq_ignore_ascii_case("PONG") =>
            {
                self.ping_evidence = "PING answered +PONG without AUTH".into();
                self.step = RedisStep::Info;
                Next::Send(command(&[b"INFO", b"server"]))
            }
            (RedisStep::Ping, Ok(Some((Reply::Error(message), _)))) => {
                match auth_from_error(&message) {
                    Some((_, how)) => Next::Done(Some(Self::refused(&message, how))),
                    None => Next::Done(sniff(received)),
                }
            }
            (RedisStep::Ping, _) => Next::Done(sniff(received)),
            (RedisStep::Info, Ok(Some((reply, _)))) => {
                let info = reply.as_text().map(parse_info);
                Next::Done(Some(self.open(info.as_ref())))
            }
            // INFO was refused or garbled (renamed command, proxy): PING alone
            // already proved the server answers without AUTH.
            (RedisStep::Info, _) => Next::Done(Some(self.open(None))),
        }
    }

    fn on_end(&mut self, received: &[u8], _timed_out: bool) -> Option<Identified> {
        match self.step {
            RedisStep::Ping => sniff(received),
            RedisStep::Info => Some(self.open(None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use perimeter_model::Severity;

    const PONG: &[u8] = include_bytes!("../tests/fixtures/redis-ping-pong.bin");
    const INFO: &[u8] = include_bytes!("../tests/fixtures/redis-info-server.bin");
    const NOAUTH: &[u8] = include_bytes!("../tests/fixtures/redis-ping-noauth.bin");
    const DENIED: &[u8] = include_bytes!("../tests/fixtures/redis-ping-denied.bin");
    const HELLO3: &[u8] = include_bytes!("../tests/fixtures/redis-hello3.bin");
    const CONFIG_PM: &[u8] = include_bytes!("../tests/fixtures/redis-config-protected-mode.bin");
    const CONFIG_BIND: &[u8] = include_bytes!("../tests/fixtures/redis-config-bind.bin");

    fn bulk(text: &str) -> Reply {
        Reply::Bulk(text.as_bytes().to_vec())
    }

    #[test]
    fn encodes_commands_as_bulk_arrays() {
        assert_eq!(command(&[b"PING"]), b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            command(&[b"CONFIG", b"GET", b"protected-mode"]),
            b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$14\r\nprotected-mode\r\n"
        );
    }

    #[test]
    fn parses_captured_replies() {
        assert_eq!(
            parse_reply(PONG),
            Ok(Some((Reply::Simple("PONG".into()), PONG.len())))
        );
        assert_eq!(
            parse_reply(NOAUTH),
            Ok(Some((
                Reply::Error("NOAUTH Authentication required.".into()),
                NOAUTH.len()
            )))
        );
        assert_eq!(
            parse_reply(CONFIG_PM),
            Ok(Some((
                Reply::Array(vec![bulk("protected-mode"), bulk("yes")]),
                CONFIG_PM.len()
            )))
        );
        assert_eq!(
            parse_reply(CONFIG_BIND),
            Ok(Some((
                Reply::Array(vec![bulk("bind"), bulk("127.0.0.1")]),
                CONFIG_BIND.len()
            )))
        );
        let Ok(Some((Reply::Map(pairs), used))) = parse_reply(HELLO3) else {
            panic!("HELLO 3 reply is a map");
        };
        assert_eq!(used, HELLO3.len());
        assert_eq!(pairs.get(1), Some(&(bulk("version"), bulk("7.0.15"))));
        assert_eq!(pairs.last(), Some(&(bulk("modules"), Reply::Array(vec![]))));
    }

    #[test]
    fn incomplete_replies_ask_for_more() {
        for cut in 0..INFO.len() {
            assert_eq!(parse_reply(&INFO[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse_reply(b"*2\r\n$3\r\nfoo\r\n"), Ok(None));
    }

    #[test]
    fn resp3_scalars_and_nulls() {
        assert_eq!(parse_reply(b"_\r\n"), Ok(Some((Reply::Null, 3))));
        assert_eq!(parse_reply(b"$-1\r\n"), Ok(Some((Reply::Null, 5))));
        assert_eq!(parse_reply(b"#t\r\n"), Ok(Some((Reply::Boolean(true), 4))));
        assert_eq!(
            parse_reply(b",1.5\r\n"),
            Ok(Some((Reply::Double("1.5".into()), 6)))
        );
        assert_eq!(parse_reply(b":-7\r\n"), Ok(Some((Reply::Integer(-7), 5))));
        assert_eq!(
            parse_reply(b"!3\r\nbad\r\n"),
            Ok(Some((Reply::Error("bad".into()), 9)))
        );
        assert_eq!(
            parse_reply(b"|1\r\n+key\r\n+val\r\n:1\r\n"),
            Ok(Some((Reply::Integer(1), 20)))
        );
    }

    #[test]
    fn limits_are_enforced_before_allocation() {
        assert_eq!(
            parse_reply(b"$99999999999\r\n"),
            Err(RespError::BulkTooLong {
                len: 99_999_999_999,
                offset: 0
            })
        );
        assert!(matches!(
            parse_reply(b"*9999999\r\n"),
            Err(RespError::AggregateTooLong { .. })
        ));
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2);
        assert!(matches!(
            parse_reply(deep.as_bytes()),
            Err(RespError::TooDeep { .. })
        ));
        let long = vec![b'+'; MAX_LINE_LEN + 10];
        assert_eq!(
            parse_reply(&long),
            Err(RespError::LineTooLong { offset: 1 })
        );
        assert_eq!(
            parse_reply(b"HTTP/1.1 400"),
            Err(RespError::UnknownType {
                byte: b'H',
                offset: 0
            })
        );
        assert_eq!(
            parse_reply(b"$3\r\nfooXX"),
            Err(RespError::MissingCrlf { offset: 0 })
        );
        assert_eq!(
            RespError::BulkTooLong { len: 5, offset: 2 }.to_string(),
            "bulk length 5 at offset 2 exceeds the limit of 1048576 bytes"
        );
    }

    #[test]
    fn parses_info_sections() {
        let Ok(Some((reply, _))) = parse_reply(INFO) else {
            panic!("INFO reply parses");
        };
        let info = parse_info(reply.as_text().unwrap_or_default());
        assert_eq!(
            info.get("redis_version").map(String::as_str),
            Some("7.0.15")
        );
        assert_eq!(
            info.get("redis_mode").map(String::as_str),
            Some("standalone")
        );
        assert_eq!(info.get("config_file").map(String::as_str), Some(""));
        assert!(!info.keys().any(|k| k.starts_with('#')));
        let info = parse_info(
            "# Server\r\nredis_version:6.2.1\r\n\r\n# Clients\r\nconnected_clients:1\r\n",
        );
        assert_eq!(info.len(), 2);
    }

    fn run(probe: &mut RedisProbe, answers: &[&[u8]]) -> Next {
        let mut next = probe.start();
        for answer in answers {
            assert!(
                matches!(next, Next::Send(_)),
                "probe sends before each answer: {next:?}"
            );
            next = probe.on_data(answer);
        }
        next
    }

    #[test]
    fn open_redis_is_critical_with_version() {
        let mut probe = RedisProbe::new();
        let Next::Done(Some(found)) = run(&mut probe, &[PONG, INFO]) else {
            panic!("probe finishes with an identification");
        };
        assert_eq!(found.service.name, "redis");
        assert_eq!(found.service.version.as_deref(), Some("7.0.15"));
        assert_eq!(found.service.auth, AuthState::None);
        let [finding] = found.findings.as_slice() else {
            panic!("one finding");
        };
        assert_eq!(finding.rule, rules::REDIS_NOAUTH);
        assert_eq!(finding.severity, Severity::Critical);
        assert_eq!(
            finding.evidence,
            vec![
                "PING answered +PONG without AUTH".to_string(),
                "redis_version:7.0.15".into()
            ]
        );
    }

    #[test]
    fn info_arrives_in_pieces() {
        let mut probe = RedisProbe::new();
        probe.start();
        assert!(matches!(probe.on_data(PONG), Next::Send(_)));
        assert_eq!(probe.on_data(&INFO[..40]), Next::Receive);
        assert!(matches!(probe.on_data(INFO), Next::Done(Some(_))));
    }

    #[test]
    fn password_and_protected_mode_need_no_finding() {
        for (answer, how) in [(NOAUTH, "password"), (DENIED, "protected-mode")] {
            let mut probe = RedisProbe::new();
            let Next::Done(Some(found)) = run(&mut probe, &[answer]) else {
                panic!("identified");
            };
            assert_eq!(found.service.name, "redis");
            assert_eq!(found.service.auth, AuthState::Required);
            assert_eq!(
                found.service.extra.get("auth").map(String::as_str),
                Some(how)
            );
            assert!(found.findings.is_empty());
            assert!(
                found
                    .service
                    .banner
                    .as_ref()
                    .is_some_and(|b| b.len() <= text::MAX_BANNER_CHARS)
            );
        }
    }

    #[test]
    fn other_answers_are_sniffed() {
        // A web server's 400 is left to the HTTP probe, which learns more.
        let mut probe = RedisProbe::new();
        let http = b"HTTP/1.1 400 Bad Request\r\nServer: nginx/1.22.1\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(run(&mut probe, &[http]), Next::Done(None));
        let mut probe = RedisProbe::new();
        let Next::Done(Some(found)) = run(&mut probe, &[b"VERSION 1.6.18\r\n"]) else {
            panic!("memcached recognised");
        };
        assert_eq!(found.service.name, "memcached");
        let mut probe = RedisProbe::new();
        assert_eq!(run(&mut probe, &[b"ERROR\r\nERROR\r\n"]), Next::Done(None));
        let mut probe = RedisProbe::new();
        probe.start();
        assert_eq!(probe.on_end(b"", true), None);
    }
}
