//! The monitor's alert channels: the clients that carry an [`Alert`] to a
//! signed webhook, a Slack incoming webhook, a mailbox over SMTP, syslog, or
//! a command's stdin.
//!
//! A [`Channel`] is one configured destination: a name, a [`Filter`]
//! (minimum severity, change kinds) and a [`Destination`] built once from its
//! configuration (TLS roots loaded, secrets read, URLs checked). The monitor
//! asks each channel for its share of a run's changes with
//! [`Channel::alert_for`], stores that in its outbox, and calls
//! [`Channel::deliver`] until it gets a [`Delivery`] or a
//! [`DeliveryError::Permanent`]; a [`DeliveryError::Transient`] means "try
//! again later" and may say when. This crate keeps no state between calls:
//! retries with backoff, restarts and the report of a channel that keeps
//! failing are the outbox's.
//!
//! Architecture invariants:
//! - **Every receiver is hostile.** Each delivery has a connect timeout and
//!   an overall timeout, and reads at most [`MAX_ANSWER_BYTES`] of an answer
//!   it keeps (lettre caps SMTP replies itself); what a receiver says is
//!   cleaned before it reaches an error message.
//! - **Secrets never reach output.** SMTP passwords, HMAC keys and webhook
//!   URLs (which carry tokens) are [`Secret`]s whose `Debug` and `Display`
//!   print `[redacted]`; errors name the channel, never a URL's path or
//!   query; the command channel's child gets a clean environment.
//! - **Permanent means someone must act.** Only an explicit refusal (HTTP
//!   4xx other than 408 and 429, SMTP 5xx, a sysexits code from a command) or
//!   a configuration that cannot work is permanent. Everything else (a
//!   timeout, a refused connection, a TLS handshake that failed, a missing
//!   syslog socket) is transient, so the outbox keeps the alert.
//! - rustls (on ring) is the only TLS stack.

mod command;
mod email;
mod http;
mod secret;
mod slack;
mod syslog;
mod tls;
mod webhook;

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use perimeter_model::{Alert, AlertChange, ChangeKind, IdempotencyKey, Severity};

pub use command::{Command, CommandConfig};
pub use email::{Email, EmailConfig, SmtpCredentials, SmtpSecurity};
pub use perimeter_report::alert::Facility;
pub use secret::{Secret, SecretError, SecretSource, readable_by_others, writable_by_others};
pub use slack::{Slack, SlackConfig};
pub use syslog::{Syslog, SyslogConfig, SyslogTarget};
pub use tls::TlsRoots;
pub use webhook::{
    SIGNATURE_HEADER, SignatureError, Webhook, WebhookConfig, sign, signature_header,
    verify_signature,
};

/// The most bytes of a receiver's answer that are kept (an HTTP body, a
/// command's stdout or stderr). The rest is not read (HTTP) or read and
/// dropped (a command's pipes, so that it does not block).
pub const MAX_ANSWER_BYTES: usize = 4096;

/// The header that carries the idempotency key on HTTP and in mail.
pub const IDEMPOTENCY_HEADER: &str = "X-Perimeter-Idempotency-Key";

/// How long a delivery may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To open the connection (TCP, and TLS for implicit TLS).
    pub connect: Duration,
    /// For the whole delivery, connection included; a command is killed
    /// when it runs longer.
    pub overall: Duration,
}

impl Default for Timeouts {
    /// 10 seconds to connect, 30 for everything.
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            overall: Duration::from_secs(30),
        }
    }
}

/// Which changes a channel wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Changes below this severity are left out.
    pub min_severity: Severity,
    /// Only these kinds, when set; every kind when `None`.
    pub kinds: Option<BTreeSet<ChangeKind>>,
}

impl Default for Filter {
    /// Every change.
    fn default() -> Self {
        Filter {
            min_severity: Severity::Info,
            kinds: None,
        }
    }
}

impl Filter {
    pub fn accepts(&self, change: &AlertChange) -> bool {
        change.severity >= self.min_severity
            && self
                .kinds
                .as_ref()
                .is_none_or(|kinds| kinds.contains(&change.kind))
    }
}

/// One configured alert channel.
#[derive(Debug)]
pub struct Channel {
    /// The name from the configuration: in errors, and in the idempotency
    /// key of every alert made for this channel.
    pub name: String,
    pub filter: Filter,
    pub destination: Destination,
}

/// Where a channel sends, built and checked once from its configuration.
#[derive(Debug)]
pub enum Destination {
    Webhook(Webhook),
    Slack(Slack),
    Email(Email),
    Syslog(Syslog),
    Command(Command),
}

impl Destination {
    fn timeouts(&self) -> Timeouts {
        match self {
            Destination::Webhook(webhook) => webhook.timeouts(),
            Destination::Slack(slack) => slack.timeouts(),
            Destination::Email(email) => email.timeouts(),
            Destination::Syslog(syslog) => syslog.timeouts(),
            Destination::Command(command) => command.timeouts(),
        }
    }
}

/// Extra time past a destination's own overall timeout before
/// [`Channel::deliver`] gives up on it: each client enforces its timeout
/// itself, with a precise message (and the command channel kills its child);
/// this is the backstop should one of them not return.
const BACKSTOP_GRACE: Duration = Duration::from_secs(5);

impl Channel {
    /// This channel's alert for `alert`'s run: the changes its filter
    /// accepts, under this channel's own idempotency key
    /// ([`IdempotencyKey::for_delivery`] of the job, the run and the channel
    /// name); `None` when it accepts none of them.
    pub fn alert_for(&self, alert: &Alert) -> Option<Alert> {
        let key = IdempotencyKey::for_delivery(&alert.job, &alert.run_id, &self.name);
        alert.filtered(key, |change| self.filter.accepts(change))
    }

    /// Send `alert` as it is (filtering is [`Channel::alert_for`]'s job, done
    /// once before the alert is stored). Every call sends the same bytes
    /// except a webhook's signature timestamp, so a redelivery is
    /// recognisable by its idempotency key.
    pub async fn deliver(&self, alert: &Alert) -> Result<Delivery, DeliveryError> {
        let limit = self.destination.timeouts().overall + BACKSTOP_GRACE;
        let attempt = async {
            match &self.destination {
                Destination::Webhook(webhook) => webhook.deliver(alert).await,
                Destination::Slack(slack) => slack.deliver(alert).await,
                Destination::Email(email) => email.deliver(alert).await,
                Destination::Syslog(syslog) => syslog.deliver(alert).await,
                Destination::Command(command) => command.deliver(alert).await,
            }
        };
        let result = match tokio::time::timeout(limit, attempt).await {
            Ok(result) => result,
            Err(_) => Err(Failure::transient(format!(
                "no answer within {}",
                seconds(limit)
            ))),
        };
        result.map_err(|failure| failure.for_channel(&self.name))
    }
}

/// A delivery the receiver accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// What the receiver answered, cleaned and cut: `HTTP 200 OK: ok`,
    /// `250 2.0.0 Ok: queued as 4F2A1`, `3 messages to unix /dev/log`,
    /// `exit status 0`.
    pub receipt: String,
    /// How many bytes of the answer's body (HTTP) or output (a command) were
    /// read. At most [`MAX_ANSWER_BYTES`] are kept; HTTP stops reading after
    /// the chunk that reaches that.
    pub answer_bytes_read: u64,
}

/// Why a delivery did not happen, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The receiver was unreachable, slow, overloaded or said "later": keep
    /// the alert and try again, not before `retry_after` when the receiver
    /// asked for a delay (HTTP 429 or 503 with `Retry-After`).
    #[error("channel {channel}: {reason}")]
    Transient {
        channel: String,
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The receiver refused the alert, or the channel cannot work as
    /// configured: trying again will not help until someone acts.
    #[error("channel {channel}: {reason}")]
    Permanent { channel: String, reason: String },
}

impl DeliveryError {
    pub fn is_transient(&self) -> bool {
        matches!(self, DeliveryError::Transient { .. })
    }

    /// The delay the receiver asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DeliveryError::Transient { retry_after, .. } => *retry_after,
            DeliveryError::Permanent { .. } => None,
        }
    }

    pub fn channel(&self) -> &str {
        match self {
            DeliveryError::Transient { channel, .. } | DeliveryError::Permanent { channel, .. } => {
                channel
            }
        }
    }
}

/// A failed delivery before the channel's name is known: what each client
/// returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    reason: String,
    retry: Retry,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    Transient { after: Option<Duration> },
    Permanent,
}

impl Failure {
    pub(crate) fn transient(reason: impl Into<String>) -> Failure {
        Failure {
            reason: reason.into(),
            retry: Retry::Transient { after: None },
        }
    }

    pub(crate) fn transient_after(reason: impl Into<String>, after: Option<Duration>) -> Failure {
        Failure {
            reason: reason.into(),
            retry: Retry::Transient { after },
        }
    }

    pub(crate) fn permanent(reason: impl Into<String>) -> Failure {
        Failure {
            reason: reason.into(),
            retry: Retry::Permanent,
        }
    }

    fn for_channel(self, channel: &str) -> DeliveryError {
        let channel = channel.to_owned();
        match self.retry {
            Retry::Transient { after } => DeliveryError::Transient {
                channel,
                reason: self.reason,
                retry_after: after,
            },
            Retry::Permanent => DeliveryError::Permanent {
                channel,
                reason: self.reason,
            },
        }
    }
}

/// Why a channel could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A webhook URL that does not parse or is not http(s). The URL itself
    /// is a secret and is not repeated.
    #[error("the {what} URL {reason}")]
    Url { what: &'static str, reason: String },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(String),
    /// A mail setting that cannot work.
    #[error("email: {0}")]
    Email(String),
    /// A syslog setting that cannot work.
    #[error("syslog: {0}")]
    Syslog(String),
    /// A command setting that cannot work.
    #[error("command: {0}")]
    Command(String),
}

/// Text from a receiver (an HTTP body, an SMTP reply, a command's stderr)
/// made fit for an error message: [`one_line`](perimeter_report::alert::one_line),
/// at most `max` characters.
pub(crate) fn clean_answer(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let line = perimeter_report::alert::one_line(text.trim());
    if line.chars().count() <= max {
        return line;
    }
    let mut cut: String = line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// `1.5s`, `30s`: durations in messages.
pub(crate) fn seconds(duration: Duration) -> String {
    format!("{}s", duration.as_secs_f64())
}

/// The error chain of `err`, outermost first, joined with `: `.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        // Many errors repeat their source in their own message.
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
}

/// A field printed as `[redacted]` in a `Debug` impl.
pub(crate) struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use perimeter_model::{ChangeState, IdempotencyKey};
    use time::OffsetDateTime;

    use super::*;

    fn change(kind: ChangeKind, severity: Severity) -> AlertChange {
        AlertChange::new(kind, severity, ChangeState::New, "198.51.100.1:22", "x")
    }

    #[test]
    fn a_channel_gets_its_share_under_its_own_key() {
        let alert = Alert::new(
            IdempotencyKey::for_delivery("nightly", "9", "run"),
            "nightly",
            "9",
            OffsetDateTime::UNIX_EPOCH,
            "scanner-1",
            vec![
                change(ChangeKind::PortOpened, Severity::High),
                change(ChangeKind::PortOpened, Severity::Low),
                change(ChangeKind::TlsExpiring, Severity::Critical),
            ],
        );
        let channel = Channel {
            name: "ops mail".to_owned(),
            filter: Filter {
                min_severity: Severity::Medium,
                kinds: Some(BTreeSet::from([ChangeKind::PortOpened])),
            },
            destination: Destination::Syslog(
                Syslog::new(SyslogConfig::default()).expect("default syslog"),
            ),
        };
        let mine = channel.alert_for(&alert).expect("one change passes");
        assert_eq!(mine.idempotency_key.as_str(), "nightly:9:ops%20mail");
        assert_eq!(
            mine.changes,
            vec![change(ChangeKind::PortOpened, Severity::High)]
        );
        assert_eq!(mine.severity, Severity::High);

        let quiet = Channel {
            filter: Filter {
                min_severity: Severity::Critical,
                kinds: Some(BTreeSet::from([ChangeKind::PortClosed])),
            },
            ..channel
        };
        assert_eq!(quiet.alert_for(&alert), None);
    }

    #[test]
    fn answers_are_cleaned_and_cut() {
        assert_eq!(
            clean_answer(b"  bad\r\nX-Evil: 1\x1b[2J \xff  ", 100),
            "bad\\r\\nX-Evil: 1\\u{1b}[2J \u{fffd}"
        );
        assert_eq!(clean_answer("é".repeat(10).as_bytes(), 4), "ééé…");
    }
}
