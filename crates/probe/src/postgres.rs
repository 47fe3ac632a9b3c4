//! PostgreSQL's startup (protocol 3.0): `SSLRequest`, then a `StartupMessage`
//! for user `perimeter` on database `postgres`, and the server's first answer:
//! which authentication it asks for (`AuthenticationOk` straight away means
//! `trust`), or the error it refuses with (`no pg_hba.conf entry`). When the
//! server accepts TLS the startup goes over TLS, so `hostssl`-only servers answer
//! too. No password is ever sent and no query is run.

use perimeter_model::{AuthState, ServiceInfo};

use crate::tls::Tls;
use crate::{Identified, Next, Probe, sniff_not_http as sniff, text};

/// `SSLRequest`: length 8, code 80877103.
pub const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// The longest backend message accepted.
const MAX_MESSAGE: usize = 16 * 1024;
/// The most backend messages read from one answer.
const MAX_MESSAGES: usize = 64;

/// The `StartupMessage` for protocol 3.0.
pub fn startup_message(user: &str, database: &str) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for (key, value) in [
        ("user", user),
        ("database", database),
        ("application_name", "perimeter"),
    ] {
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let len = u32::try_from(body.len() + 4).unwrap_or(u32::MAX);
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// One backend message, as much as the probe needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// `R`: the authentication request code, and the SASL mechanisms for code 10.
    Authentication { code: u32, mechanisms: Vec<String> },
    /// `S`: a run-time parameter, `server_version` among them.
    ParameterStatus { name: String, value: String },
    /// `E`: severity, SQLSTATE code and message.
    Error {
        severity: String,
        code: String,
        message: String,
    },
    /// Any other message type.
    Other(u8),
}

/// Parses the backend messages at the start of `buf`. The bool says whether the
/// buffer ended on a message boundary (nothing partial left). `Err(())`: not
/// PostgreSQL.
#[expect(
    clippy::result_unit_err,
    reason = "the only failure is \"not this protocol\"; there is nothing to say"
)]
pub fn parse_backend(buf: &[u8]) -> Result<(Vec<Backend>, bool), ()> {
    let mut messages = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() && messages.len() < MAX_MESSAGES {
        let Some(&kind) = rest.first() else { break };
        if !kind.is_ascii_alphabetic() {
            return Err(());
        }
        let Some(len_bytes) = rest.get(1..5) else {
            return Ok((messages, false));
        };
        let len = u32::from_be_bytes(len_bytes.try_into().map_err(|_| ())?);
        let len = usize::try_from(len).map_err(|_| ())?;
        if !(4..=MAX_MESSAGE).contains(&len) {
            return Err(());
        }
        let Some(body) = rest.get(5..1 + len) else {
            return Ok((messages, false));
        };
        messages.push(parse_message(kind, body)?);
        rest = rest.get(1 + len..).unwrap_or_default();
    }
    Ok((messages, true))
}

fn cstrings(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split(|&b| b == 0)
}

fn parse_message(kind: u8, body: &[u8]) -> Result<Backend, ()> {
    match kind {
        b'R' => {
            let code = u32::from_be_bytes(body.get(..4).ok_or(())?.try_into().map_err(|_| ())?);
            let mechanisms = if code == 10 {
                cstrings(body.get(4..).unwrap_or_default())
                    .filter(|m| !m.is_empty())
                    .take(8)
                    .map(text::value_bytes)
                    .collect()
            } else {
                Vec::new()
            };
            Ok(Backend::Authentication { code, mechanisms })
        }
        b'S' => {
            let mut parts = cstrings(body);
            Ok(Backend::ParameterStatus {
                name: text::value_bytes(parts.next().unwrap_or_default()),
                value: text::value_bytes(parts.next().unwrap_or_default()),
            })
        }
        b'E' => {
            let (mut severity, mut code, mut message) =
                (String::new(), String::new(), String::new());
            for field in cstrings(body).take(32) {
                let (Some(&tag), Some(value)) = (field.first(), field.get(1..)) else {
                    continue;
                };
                match tag {
                    b'S' => severity = text::value_bytes(value),
                    b'C' => code = text::value_bytes(value),
                    b'M' => message = text::value_bytes(value),
                    _ => {}
                }
            }
            if severity.is_empty() && code.is_empty() {
                return Err(());
            }
            Ok(Backend::Error {
                severity,
                code,
                message,
            })
        }
        other => Ok(Backend::Other(other)),
    }
}

/// The name of an authentication request code.
pub fn auth_method(code: u32) -> &'static str {
    match code {
        0 => "trust",
        2 => "kerberos-v5",
        3 => "password",
        5 => "md5",
        7 => "gss",
        9 => "sspi",
        10 => "sasl",
        _ => "unknown",
    }
}

/// What the startup's answer says, as a `ServiceInfo`. `None` when the
/// messages do not decide anything yet.
pub fn identify(messages: &[Backend], complete: bool) -> Option<ServiceInfo> {
    let mut service = ServiceInfo::named("postgresql");
    service.product = Some("PostgreSQL".into());
    let mut decided = false;
    for message in messages {
        match message {
            Backend::Authentication { code: 0, .. } => {
                service.auth = AuthState::None;
                service.extra.insert("auth_method".into(), "trust".into());
                decided = true;
            }
            Backend::Authentication { code, mechanisms } => {
                service.auth = AuthState::Required;
                let mut method = auth_method(*code).to_string();
                if !mechanisms.is_empty() {
                    method = format!("{method} ({})", mechanisms.join(", "));
                }
                service
                    .extra
                    .insert("auth_method".into(), text::value(&method));
                decided = true;
            }
            Backend::ParameterStatus { name, value } if name == "server_version" => {
                let version = value.split_whitespace().next().unwrap_or(value);
                service.version = Some(version.to_string());
                service.extra.insert("server_version".into(), value.clone());
            }
            Backend::Error { code, message, .. } => {
                // 28000 invalid_authorization_specification (no pg_hba.conf entry),
                // 28P01 invalid_password; after AuthenticationOk the error is
                // about our made-up role, not about authentication.
                if service.auth == AuthState::Unknown && code.starts_with("28") {
                    service.auth = AuthState::Required;
                }
                service
                    .extra
                    .insert("error".into(), text::value(&format!("{code}: {message}")));
                decided = true;
            }
            _ => {}
        }
    }
    (decided || complete && !messages.is_empty()).then_some(service)
}

/// Sends the `StartupMessage` and reads the answer (run in the clear, or inside
/// [`Tls`] after the server accepted `SSLRequest`).
#[derive(Debug, Default)]
pub struct Startup;

impl Probe for Startup {
    fn name(&self) -> &'static str {
        "postgresql-startup"
    }

    fn start(&mut self) -> Next {
        Next::Send(startup_message("perimeter", "postgres"))
    }

    fn on_data(&mut self, received: &[u8]) -> Next {
        match parse_backend(received) {
            Ok((messages, complete)) => {
                let ready = messages
                    .iter()
                    .any(|m| matches!(m, Backend::Error { .. } | Backend::Other(b'Z')))
                    || messages
                        .iter()
                        .any(|m| matches!(m, Backend::Authentication { code, .. } if *code != 0));
                if ready || received.len() >= self.max_response() {
                    Next::Done(identify(&messages, complete).map(Identified::service_only))
                } else {
                    Next::Receive
                }
            }
            Err(()) => Next::Done(None),
        }
    }

    fn on_end(&mut self, received: &[u8], _timed_out: bool) -> Option<Identified> {
        let (messages, complete) = parse_backend(received).ok()?;
        identify(&messages, complete).map(Identified::service_only)
    }
}

#[derive(Debug)]
enum Stage {
    SslRequest,
    Clear(Startup),
    Encrypted(Box<Tls<Startup>>),
}

/// Identifies PostgreSQL and the authentication it asks of an unknown client.
#[derive(Debug)]
pub struct PostgresProbe {
    stage: Stage,
    host: Option<String>,
}

impl PostgresProbe {
    pub fn new() -> Self {
        PostgresProbe {
            stage: Stage::SslRequest,
            host: None,
        }
    }

    /// Sends `host` as SNI when the server accepts TLS (names only).
    pub fn with_host(host: impl Into<String>) -> Self {
        PostgresProbe {
            stage: Stage::SslRequest,
            host: Some(host.into()),
        }
    }

    fn mark(found: Option<Identified>, ssl: &str) -> Option<Identified> {
        found.map(|mut found| {
            if found.service.name == "ssl" {
                found.service.name = "postgresql".into();
                found.service.product = Some("PostgreSQL".into());
            }
            found.service.extra.insert("ssl".into(), ssl.into());
            found
        })
    }
}

impl Default for PostgresProbe {
    fn default() -> Self {
        PostgresProbe::new()
    }
}

impl Probe for PostgresProbe {
    fn name(&self) -> &'static str {
        "postgresql"
    }

    fn start(&mut self) -> Next {
        self.stage = Stage::SslRequest;
        Next::Send(SSL_REQUEST.to_vec())
    }

    fn on_data(&mut self, received: &[u8]) -> Next {
        match &mut self.stage {
            Stage::SslRequest => match received {
                [b'S'] => {
                    let mut tls =
                        Box::new(Tls::new("postgresql-tls", Startup, self.host.as_deref()));
                    let next = tls.start();
                    self.stage = Stage::Encrypted(tls);
                    next
                }
                [b'N'] => {
                    let mut startup = Startup;
                    let next = startup.start();
                    self.stage = Stage::Clear(startup);
                    next
                }
                // Servers before 7.0 answer SSLRequest with an error message.
                [b'E', ..] => match parse_backend(received) {
                    Ok((messages, _)) => {
                        Next::Done(identify(&messages, true).map(Identified::service_only))
                    }
                    Err(()) => Next::Done(sniff(received)),
                },
                _ => Next::Done(sniff(received)),
            },
            Stage::Clear(startup) => match startup.on_data(received) {
                Next::Done(found) => Next::Done(Self::mark(found, "no")),
                next => next,
            },
            Stage::Encrypted(tls) => match tls.on_data(received) {
                Next::Done(found) => Next::Done(Self::mark(found, "yes")),
                next => next,
            },
        }
    }

    fn on_end(&mut self, received: &[u8], timed_out: bool) -> Option<Identified> {
        match &mut self.stage {
            Stage::SslRequest => sniff(received),
            Stage::Clear(startup) => Self::mark(startup.on_end(received, timed_out), "no"),
            Stage::Encrypted(tls) => Self::mark(tls.on_end(received, timed_out), "yes"),
        }
    }

    fn max_response(&self) -> usize {
        match &self.stage {
            Stage::Encrypted(tls) => tls.max_response(),
            _ => 16 * 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SSL_N: &[u8] = include_bytes!("../tests/fixtures/postgres-sslrequest-n.bin");
    const TRUST: &[u8] = include_bytes!("../tests/fixtures/postgres-trust.bin");
    const SCRAM: &[u8] = include_bytes!("../tests/fixtures/postgres-scram.bin");
    const NO_HBA: &[u8] = include_bytes!("../tests/fixtures/postgres-no-hba.bin");

    #[test]
    fn startup_message_layout() {
        let message = startup_message("perimeter", "postgres");
        assert_eq!(
            message.get(..4),
            Some(&(message.len() as u32).to_be_bytes()[..])
        );
        assert_eq!(message.get(4..8), Some(&[0, 3, 0, 0][..]));
        assert!(message.ends_with(b"application_name\0perimeter\0\0"));
    }

    #[test]
    fn parses_captured_answers() {
        assert_eq!(
            parse_backend(SCRAM),
            Ok((
                vec![Backend::Authentication {
                    code: 10,
                    mechanisms: vec!["SCRAM-SHA-256".into()]
                }],
                true
            ))
        );
        let Ok((messages, true)) = parse_backend(TRUST) else {
            panic!("trust answer parses");
        };
        assert_eq!(
            messages.first(),
            Some(&Backend::Authentication {
                code: 0,
                mechanisms: vec![]
            })
        );
        assert!(matches!(messages.get(1), Some(Backend::Error { code, .. }) if code == "28000"));
        assert_eq!(parse_backend(&SCRAM[..7]), Ok((vec![], false)));
        assert_eq!(parse_backend(b"HTTP/1.1 400"), Err(()));
        assert_eq!(parse_backend(b"R\xff\xff\xff\xff"), Err(()));
    }

    fn run(answers: &[&[u8]]) -> Option<Identified> {
        let mut probe = PostgresProbe::new();
        assert_eq!(probe.start(), Next::Send(SSL_REQUEST.to_vec()));
        for answer in answers {
            match probe.on_data(answer) {
                Next::Done(found) => return found,
                Next::Send(_) | Next::Receive => {}
            }
        }
        probe.on_end(b"", false)
    }

    #[test]
    fn trust_means_no_authentication() {
        let Some(found) = run(&[SSL_N, TRUST]) else {
            panic!("identified");
        };
        assert_eq!(found.service.name, "postgresql");
        assert_eq!(found.service.auth, AuthState::None);
        assert_eq!(
            found.service.extra.get("auth_method").map(String::as_str),
            Some("trust")
        );
        assert_eq!(
            found.service.extra.get("ssl").map(String::as_str),
            Some("no")
        );
    }

    #[test]
    fn scram_and_hba_refusals_require_authentication() {
        let Some(found) = run(&[SSL_N, SCRAM]) else {
            panic!("identified");
        };
        assert_eq!(found.service.auth, AuthState::Required);
        assert_eq!(
            found.service.extra.get("auth_method").map(String::as_str),
            Some("sasl (SCRAM-SHA-256)")
        );
        let Some(found) = run(&[SSL_N, NO_HBA]) else {
            panic!("identified");
        };
        assert_eq!(found.service.auth, AuthState::Required);
        assert!(
            found
                .service
                .extra
                .get("error")
                .is_some_and(|e| e.starts_with("28000: no pg_hba.conf entry"))
        );
    }

    #[test]
    fn accepted_ssl_moves_to_tls() {
        let mut probe = PostgresProbe::new();
        probe.start();
        let Next::Send(hello) = probe.on_data(b"S") else {
            panic!("a ClientHello follows");
        };
        assert_eq!(hello.first(), Some(&0x16));
        let mut probe = PostgresProbe::new();
        probe.start();
        assert_eq!(probe.on_data(b"X"), Next::Done(None));
    }
}
