//! memcached's text protocol: `version` to identify, `stats` for a few facts,
//! and [`MemcachedProbe`]. Both commands are read-only.
//!
//! memcached has no authentication in its default build and configuration, so an
//! answer to `version` is itself the finding. With an auth file (`-Y`) every text
//! command is refused with `CLIENT_ERROR unauthenticated`; with SASL the text
//! protocol is off and the server answers `ERROR` or closes, which proves
//! nothing about what answered, so the probe leaves that to others.

use std::collections::BTreeMap;

use perimeter_model::{AuthState, ServiceInfo};

use crate::{Identified, Next, Probe, rules, sniff_not_http as sniff, text};

/// The `version` request.
pub const VERSION: &[u8] = b"version\r\n";
/// The `stats` request.
pub const STATS: &[u8] = b"stats\r\n";

/// The most `STAT` lines kept from one answer (memcached 1.6 sends about 90).
const MAX_STATS: usize = 256;

/// What one memcached text-protocol answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `VERSION 1.6.18`
    Version(String),
    /// `STAT name value` lines up to `END`.
    Stats(BTreeMap<String, String>),
    /// `CLIENT_ERROR ...` or `SERVER_ERROR ...`: memcached refused the command.
    ClientError(String),
    /// A bare `ERROR`: the command was unknown (memcached, or many others).
    Error,
}

/// Parses one answer. `None`: incomplete (no full line yet, or `STAT` lines
/// without their `END`), or not a memcached answer at all.
pub fn parse_answer(buf: &[u8]) -> Option<Answer> {
    let lines = text::complete_lines(buf, MAX_STATS + 1);
    let first = lines.first()?;
    if let Some(version) = first.strip_prefix(b"VERSION ") {
        return Some(Answer::Version(text::value_bytes(version)));
    }
    if first.starts_with(b"CLIENT_ERROR") || first.starts_with(b"SERVER_ERROR") {
        return Some(Answer::ClientError(text::value_bytes(first)));
    }
    if *first == b"ERROR" {
        return Some(Answer::Error);
    }
    if first.starts_with(b"STAT ") {
        let mut stats = BTreeMap::new();
        for line in &lines {
            if *line == b"END" {
                return Some(Answer::Stats(stats));
            }
            let line = String::from_utf8_lossy(line);
            let mut words = line.splitn(3, ' ');
            if let (Some("STAT"), Some(name), Some(value)) =
                (words.next(), words.next(), words.next())
            {
                stats.insert(text::value(name), text::value(value));
            }
        }
        // The cap on lines was reached without END: keep what arrived.
        if lines.len() > MAX_STATS {
            return Some(Answer::Stats(stats));
        }
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Version,
    Stats,
}

/// Identifies memcached with `version`, then reads `stats`.
#[derive(Debug)]
pub struct MemcachedProbe {
    step: Step,
    version: Option<String>,
}

impl MemcachedProbe {
    pub fn new() -> Self {
        MemcachedProbe {
            step: Step::Version,
            version: None,
        }
    }

    fn open(&self, stats: Option<&BTreeMap<String, String>>) -> Identified {
        let mut service = ServiceInfo::named("memcached");
        service.product = Some("memcached".into());
        service.version = self.version.clone();
        service.auth = AuthState::None;
        let mut evidence = vec![match &self.version {
            Some(version) => format!("version answered VERSION {version} without authentication"),
            None => "version answered without authentication".into(),
        }];
        if let Some(stats) = stats {
            for key in ["curr_items", "curr_connections", "uptime"] {
                if let Some(value) = stats.get(key) {
                    service.extra.insert(key.into(), value.clone());
                }
            }
            if let Some(items) = stats.get("curr_items") {
                evidence.push(format!("stats: curr_items {items}"));
            }
        }
        Identified {
            service,
            findings: vec![rules::memcached(evidence)],
        }
    }
}

impl Default for MemcachedProbe {
    fn default() -> Self {
        MemcachedProbe::new()
    }
}

impl Probe for MemcachedProbe {
    fn name(&self) -> &'static str {
        "memcached"
    }

    fn start(&mut self) -> Next {
        self.step = Step::Version;
        Next::Send(VERSION.to_vec())
    }

    fn on_data(&mut self, received: &[u8]) -> Next {
        let at_cap = received.len() >= self.max_response();
        match (self.step, parse_answer(received)) {
            (Step::Version, Some(Answer::Version(version))) => {
                self.version = Some(version);
                self.step = Step::Stats;
                Next::Send(STATS.to_vec())
            }
            (Step::Version, Some(Answer::ClientError(message)))
                if message.contains("unauthenticated") =>
            {
                let mut service = ServiceInfo::named("memcached");
                service.product = Some("memcached".into());
                service.auth = AuthState::Required;
                service.banner = Some(text::banner(text::first_line(received)));
                Next::Done(Some(Identified {
                    service,
                    findings: Vec::new(),
                }))
            }
            (Step::Version, Some(_)) => Next::Done(sniff(received)),
            (Step::Version, None)
                if at_cap || !text::first_line(received).is_empty() && is_foreign(received) =>
            {
                Next::Done(sniff(received))
            }
            (Step::Version, None) => Next::Receive,
            (Step::Stats, Some(Answer::Stats(stats))) => Next::Done(Some(self.open(Some(&stats)))),
            (Step::Stats, None) if !at_cap => Next::Receive,
            (Step::Stats, _) => Next::Done(Some(self.open(None))),
        }
    }

    fn on_end(&mut self, received: &[u8], _timed_out: bool) -> Option<Identified> {
        match self.step {
            Step::Version => sniff(received),
            Step::Stats => match parse_answer(received) {
                Some(Answer::Stats(stats)) => Some(self.open(Some(&stats))),
                _ => Some(self.open(None)),
            },
        }
    }
}

/// Whether an answer is plainly not memcached's, so there is no point waiting
/// for the rest of its line: it opens with bytes no memcached reply starts with.
fn is_foreign(received: &[u8]) -> bool {
    const STARTS: [&[u8]; 5] = [
        b"VERSION",
        b"STAT",
        b"ERROR",
        b"CLIENT_ERROR",
        b"SERVER_ERROR",
    ];
    !STARTS.iter().any(|start| {
        let n = start.len().min(received.len());
        received.get(..n) == start.get(..n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use perimeter_model::Severity;

    const VERSION_ANSWER: &[u8] = include_bytes!("../tests/fixtures/memcached-version.bin");
    const STATS_ANSWER: &[u8] = include_bytes!("../tests/fixtures/memcached-stats.bin");
    const UNAUTHENTICATED: &[u8] =
        include_bytes!("../tests/fixtures/memcached-unauthenticated.bin");
    const RESP_PING: &[u8] = include_bytes!("../tests/fixtures/memcached-resp-ping.bin");

    #[test]
    fn parses_captured_answers() {
        assert_eq!(
            parse_answer(VERSION_ANSWER),
            Some(Answer::Version("1.6.18".into()))
        );
        let Some(Answer::Stats(stats)) = parse_answer(STATS_ANSWER) else {
            panic!("stats parse");
        };
        assert_eq!(stats.get("version").map(String::as_str), Some("1.6.18"));
        assert_eq!(stats.get("curr_items").map(String::as_str), Some("0"));
        assert_eq!(
            parse_answer(UNAUTHENTICATED),
            Some(Answer::ClientError("CLIENT_ERROR unauthenticated".into()))
        );
        assert_eq!(parse_answer(RESP_PING), Some(Answer::Error));
        // STAT lines without END are not complete yet.
        assert_eq!(parse_answer(&STATS_ANSWER[..200]), None);
    }

    #[test]
    fn open_memcached_is_high() {
        let mut probe = MemcachedProbe::new();
        assert_eq!(probe.start(), Next::Send(VERSION.to_vec()));
        assert_eq!(probe.on_data(&VERSION_ANSWER[..5]), Next::Receive);
        assert_eq!(probe.on_data(VERSION_ANSWER), Next::Send(STATS.to_vec()));
        assert_eq!(probe.on_data(&STATS_ANSWER[..100]), Next::Receive);
        let Next::Done(Some(found)) = probe.on_data(STATS_ANSWER) else {
            panic!("identified");
        };
        assert_eq!(found.service.name, "memcached");
        assert_eq!(found.service.version.as_deref(), Some("1.6.18"));
        assert_eq!(found.service.auth, AuthState::None);
        let [finding] = found.findings.as_slice() else {
            panic!("one finding");
        };
        assert_eq!(finding.rule, rules::MEMCACHED);
        assert_eq!(finding.severity, Severity::High);
        assert_eq!(
            finding.evidence,
            vec![
                "version answered VERSION 1.6.18 without authentication".to_string(),
                "stats: curr_items 0".into()
            ]
        );
    }

    #[test]
    fn auth_file_means_required_and_no_finding() {
        let mut probe = MemcachedProbe::new();
        probe.start();
        let Next::Done(Some(found)) = probe.on_data(UNAUTHENTICATED) else {
            panic!("identified");
        };
        assert_eq!(found.service.auth, AuthState::Required);
        assert!(found.findings.is_empty());
    }

    #[test]
    fn bare_error_and_foreign_answers_are_not_memcached() {
        let mut probe = MemcachedProbe::new();
        probe.start();
        assert_eq!(probe.on_data(b"ERROR\r\n"), Next::Done(None));
        let mut probe = MemcachedProbe::new();
        probe.start();
        let Next::Done(Some(found)) =
            probe.on_data(b"-ERR unknown command 'version', with args beginning with: \r\n")
        else {
            panic!("redis sniffed");
        };
        assert_eq!(found.service.name, "redis");
        let mut probe = MemcachedProbe::new();
        probe.start();
        let Next::Done(Some(found)) = probe.on_data(b"SSH-2.0-x") else {
            panic!("ssh sniffed without waiting for the line end");
        };
        assert_eq!(found.service.name, "ssh");
    }
}
