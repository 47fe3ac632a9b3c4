//! Email over SMTP with lettre: implicit TLS or STARTTLS (required or
//! opportunistic) over rustls, optional AUTH PLAIN or LOGIN, and a plain-text
//! body that reads well in a terminal mail client.
//!
//! Every message carries the idempotency key in `X-Perimeter-Idempotency-Key`
//! and a `Message-ID` derived from it, so a redelivered copy has the same
//! id and mail systems that deduplicate on it (and people) can tell;
//! `Auto-Submitted: auto-generated` (RFC 3834) keeps vacation responders
//! from answering. The `Date` is the alert's creation time, so every attempt
//! sends the same message.
//!
//! A password is only ever sent over TLS: credentials with opportunistic or
//! no TLS are a configuration error. lettre caps each SMTP reply (1000 bytes
//! a line, 100 kB in all); the overall timeout bounds the conversation.

use std::time::SystemTime;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use perimeter_model::{Alert, IdempotencyKey};
use sha2::{Digest, Sha256};

use crate::tls::TlsRoots;
use crate::{
    ConfigError, Delivery, Failure, IDEMPOTENCY_HEADER, Secret, Timeouts, clean_answer,
    error_chain, seconds,
};

/// How much of a server's reply goes into a receipt or an error message.
const REPLY_IN_MESSAGE: usize = 300;

/// How the connection to the mail server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// TLS from the first byte (SMTPS, port 465 by default).
    ImplicitTls,
    /// STARTTLS, and no mail without it (port 587 by default).
    StartTlsRequired,
    /// STARTTLS when the server offers it, plain text otherwise (port 25 by
    /// default). For relays on the same network; never with credentials.
    StartTlsOpportunistic,
    /// Plain text (port 25 by default): a relay on localhost.
    None,
}

impl SmtpSecurity {
    fn default_port(self) -> u16 {
        match self {
            SmtpSecurity::ImplicitTls => 465,
            SmtpSecurity::StartTlsRequired => 587,
            SmtpSecurity::StartTlsOpportunistic | SmtpSecurity::None => 25,
        }
    }
}

/// A login on the mail server.
#[derive(Debug, Clone)]
pub struct SmtpCredentials {
    pub username: String,
    pub password: Secret,
}

/// An email channel's configuration.
#[derive(Debug, Clone)]
pub struct EmailConfig {
    /// The mail server: a name or an address, checked against its
    /// certificate.
    pub host: String,
    /// The server's port; by default that of `security`.
    pub port: Option<u16>,
    pub security: SmtpSecurity,
    pub tls_roots: TlsRoots,
    pub credentials: Option<SmtpCredentials>,
    /// `perimeter <perimeter@example.com>` or a bare address.
    pub from: String,
    /// One or more recipients.
    pub to: Vec<String>,
    /// The EHLO name; this host's name by default.
    pub hello_name: Option<String>,
    pub timeouts: Timeouts,
}

/// An email channel, ready to deliver.
pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    server: String,
    from: Mailbox,
    to: Vec<Mailbox>,
    timeouts: Timeouts,
}

impl std::fmt::Debug for Email {
    // By hand: the transport holds the credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email")
            .field("server", &self.server)
            .field("from", &self.from.to_string())
            .field(
                "to",
                &self.to.iter().map(ToString::to_string).collect::<Vec<_>>(),
            )
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl Email {
    /// Check the addresses and the security settings, load the TLS roots and
    /// build the transport.
    pub fn new(config: EmailConfig) -> Result<Email, ConfigError> {
        let bad = |what: String| ConfigError::Email(what);
        let from: Mailbox = config.from.parse().map_err(|err| {
            bad(format!(
                "the from address `{}` does not parse: {err}",
                config.from
            ))
        })?;
        if config.to.is_empty() {
            return Err(bad("no recipient".to_owned()));
        }
        let to = config
            .to
            .iter()
            .map(|to| {
                to.parse::<Mailbox>()
                    .map_err(|err| bad(format!("the recipient `{to}` does not parse: {err}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if config.credentials.is_some()
            && !matches!(
                config.security,
                SmtpSecurity::ImplicitTls | SmtpSecurity::StartTlsRequired
            )
        {
            return Err(bad(
                "credentials need implicit TLS or required STARTTLS, so that the password \
                 never crosses the network in clear"
                    .to_owned(),
            ));
        }
        let port = config.port.unwrap_or(config.security.default_port());
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(port)
            // lettre bounds only the connection with this; the overall
            // timeout in `deliver` bounds the rest.
            .timeout(Some(config.timeouts.connect));
        let tls = match config.security {
            SmtpSecurity::None => Tls::None,
            SmtpSecurity::ImplicitTls => Tls::Wrapper(tls_parameters(&config)?),
            SmtpSecurity::StartTlsRequired => Tls::Required(tls_parameters(&config)?),
            SmtpSecurity::StartTlsOpportunistic => Tls::Opportunistic(tls_parameters(&config)?),
        };
        builder = builder.tls(tls);
        if let Some(credentials) = &config.credentials {
            builder = builder
                .credentials(Credentials::new(
                    credentials.username.clone(),
                    credentials.password.expose().to_owned(),
                ))
                .authentication(vec![Mechanism::Plain, Mechanism::Login]);
        }
        if let Some(name) = &config.hello_name {
            builder = builder.hello_name(ClientId::Domain(name.clone()));
        }
        Ok(Email {
            transport: builder.build(),
            server: format!("{}:{port}", config.host),
            from,
            to,
            timeouts: config.timeouts,
        })
    }

    pub(crate) fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    pub(crate) async fn deliver(&self, alert: &Alert) -> Result<Delivery, Failure> {
        let message = self.message(alert)?;
        let sent = tokio::time::timeout(self.timeouts.overall, self.transport.send(message)).await;
        match sent {
            Err(_) => Err(Failure::transient(format!(
                "the mail server {} did not finish within {}",
                self.server,
                seconds(self.timeouts.overall)
            ))),
            Ok(Err(err)) => Err(smtp_failure(&self.server, &err)),
            Ok(Ok(response)) => {
                let lines: Vec<&str> = response.message().collect();
                let reply = format!("{} {}", response.code(), lines.join(" "));
                Ok(Delivery {
                    receipt: clean_answer(reply.as_bytes(), REPLY_IN_MESSAGE),
                    answer_bytes_read: reply.len() as u64,
                })
            }
        }
    }

    fn message(&self, alert: &Alert) -> Result<Message, Failure> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(perimeter_report::alert::email_subject(alert))
            .message_id(Some(message_id(
                &alert.idempotency_key,
                self.from.email.domain(),
            )))
            .date(SystemTime::from(alert.created_at))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str(IDEMPOTENCY_HEADER),
                // The key's alphabet (model::IdempotencyKey) is header-safe.
                alert.idempotency_key.to_string(),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-generated".to_owned(),
            ))
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder
            .body(perimeter_report::alert::email_body(alert))
            .map_err(|err| Failure::permanent(format!("cannot build the message: {err}")))
    }
}

/// `<` 32 hex digits of SHA-256(key) `.perimeter@` domain `>`: the same for
/// every attempt of one alert to one channel, different across channels,
/// and valid whatever the key holds (`%` and `:` are not all welcome in a
/// Message-ID).
pub(crate) fn message_id(key: &IdempotencyKey, domain: &str) -> String {
    let digest = Sha256::digest(key.as_str().as_bytes());
    let hex = hex::encode(digest);
    format!("<{}.perimeter@{domain}>", hex.get(..32).unwrap_or(&hex))
}

fn tls_parameters(config: &EmailConfig) -> Result<TlsParameters, ConfigError> {
    let mut builder = TlsParameters::builder(config.host.clone());
    if let TlsRoots::CaFile(path) = &config.tls_roots {
        builder = builder.certificate_store(CertificateStore::None);
        for der in TlsRoots::read_ca_file(path)? {
            let cert = Certificate::from_der(der.to_vec()).map_err(|err| {
                ConfigError::Email(format!("{}: {}", path.display(), error_chain(&err)))
            })?;
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build_rustls()
        .map_err(|err| ConfigError::Email(format!("cannot set up TLS: {}", error_chain(&err))))
}

/// An SMTP error: 5xx is the server's final no; a 4xx, a timeout, a refused
/// connection or a failed TLS handshake may pass.
fn smtp_failure(server: &str, err: &lettre::transport::smtp::Error) -> Failure {
    let said = clean_answer(error_chain(err).as_bytes(), REPLY_IN_MESSAGE);
    if err.is_permanent() {
        Failure::permanent(format!(
            "the mail server {server} refused the alert: {said}"
        ))
    } else if err.is_transient() {
        Failure::transient(format!(
            "the mail server {server} deferred the alert: {said}"
        ))
    } else if err.is_timeout() {
        Failure::transient(format!(
            "the mail server {server} did not answer in time: {said}"
        ))
    } else if err.is_tls() {
        Failure::transient(format!("TLS with the mail server {server} failed: {said}"))
    } else {
        Failure::transient(format!(
            "cannot send through the mail server {server}: {said}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> EmailConfig {
        EmailConfig {
            host: "127.0.0.1".to_owned(),
            port: Some(2525),
            security: SmtpSecurity::None,
            tls_roots: TlsRoots::System,
            credentials: None,
            from: "perimeter <perimeter@example.com>".to_owned(),
            to: vec!["ops@example.com".to_owned()],
            hello_name: None,
            timeouts: Timeouts::default(),
        }
    }

    #[test]
    fn message_ids_are_stable_per_key_and_valid() {
        let key = IdempotencyKey::for_delivery("night scan", "7", "ops:mail");
        let id = message_id(&key, "example.com");
        assert_eq!(id, message_id(&key, "example.com"));
        assert_ne!(
            id,
            message_id(
                &IdempotencyKey::for_delivery("night scan", "7", "other"),
                "example.com"
            )
        );
        assert!(
            id.starts_with('<') && id.ends_with(".perimeter@example.com>"),
            "{id}"
        );
        assert!(id[1..33].bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }

    #[test]
    fn passwords_only_travel_over_tls() {
        let password = SmtpCredentials {
            username: "perimeter".to_owned(),
            password: Secret::new("hunter2"),
        };
        for security in [SmtpSecurity::None, SmtpSecurity::StartTlsOpportunistic] {
            let err = Email::new(EmailConfig {
                security,
                credentials: Some(password.clone()),
                ..config()
            })
            .expect_err("refused");
            assert_eq!(
                err.to_string(),
                "email: credentials need implicit TLS or required STARTTLS, so that the \
                 password never crosses the network in clear"
            );
        }
        let email = Email::new(EmailConfig {
            security: SmtpSecurity::StartTlsRequired,
            credentials: Some(password),
            ..config()
        })
        .expect("accepted");
        assert!(!format!("{email:?}").contains("hunter2"));
    }

    #[test]
    fn addresses_are_checked() {
        let err = Email::new(EmailConfig {
            from: "not an address".to_owned(),
            ..config()
        })
        .expect_err("bad from");
        assert!(
            err.to_string()
                .starts_with("email: the from address `not an address` does not parse")
        );
        let err = Email::new(EmailConfig {
            to: Vec::new(),
            ..config()
        })
        .expect_err("nobody");
        assert_eq!(err.to_string(), "email: no recipient");
    }
}
