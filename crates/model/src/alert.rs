//! Alerts: what the monitor tells people about one run of one job.
//!
//! An [`Alert`] is a digest: every unexpected change one run saw, each an
//! [`AlertChange`] with its evidence and remedy. It goes out as one message
//! per channel; the wire formats (JSON, Slack, email, syslog) live in
//! `perimeter-report` and the delivery clients in `perimeter-notify`.
//!
//! The one thing checked here is the [`IdempotencyKey`]: it travels in HTTP
//! headers, mail headers and syslog structured data, so its alphabet is fixed
//! when it is made, not escaped differently by every client.

use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;

use crate::Severity;

/// One digest: the changes one run of one job saw, for one channel.
///
/// A run that sends to three channels makes three alerts that differ only in
/// their [`IdempotencyKey`] (and in which changes each channel's filter let
/// through), so that a receiver that deduplicates sees each delivery once
/// however often the outbox retries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// Stable across retries of this alert to this channel, different for
    /// every (alert, channel): the receiver's deduplication handle.
    pub idempotency_key: IdempotencyKey,
    /// The monitor job whose run this is, as named in its configuration
    /// (`nightly-scan`).
    pub job: String,
    /// The run of that job, as the store numbers it.
    pub run_id: String,
    /// When the run's changes were settled and the alert made. Every
    /// rendering uses this time, never the time of sending, so a redelivered
    /// message is byte for byte the one that was sent first.
    pub created_at: OffsetDateTime,
    /// The vantage point: the host the monitor ran on, whose view this is.
    pub host: String,
    /// The highest severity among `changes` (`Info` when there are none).
    /// [`Alert::new`] and [`Alert::filtered`] keep it so.
    pub severity: Severity,
    /// The changes, in the order the change detection produced them.
    /// Renderings show them worst first ([`Alert::changes_worst_first`]).
    pub changes: Vec<AlertChange>,
}

impl Alert {
    /// An alert whose `severity` is the highest of its changes'.
    pub fn new(
        idempotency_key: IdempotencyKey,
        job: impl Into<String>,
        run_id: impl Into<String>,
        created_at: OffsetDateTime,
        host: impl Into<String>,
        changes: Vec<AlertChange>,
    ) -> Alert {
        Alert {
            idempotency_key,
            job: job.into(),
            run_id: run_id.into(),
            created_at,
            host: host.into(),
            severity: highest_severity(&changes),
            changes,
        }
    }

    /// The changes, worst first; changes of equal severity keep their order.
    pub fn changes_worst_first(&self) -> Vec<&AlertChange> {
        let mut sorted: Vec<&AlertChange> = self.changes.iter().collect();
        sorted.sort_by_key(|change| std::cmp::Reverse(change.severity));
        sorted
    }

    /// The same alert with only the changes `keep` accepts, under `key`
    /// (the channel's own), its severity recomputed; `None` when no change is
    /// left, since an empty digest is not worth a message.
    pub fn filtered(
        &self,
        key: IdempotencyKey,
        mut keep: impl FnMut(&AlertChange) -> bool,
    ) -> Option<Alert> {
        let changes: Vec<AlertChange> = self
            .changes
            .iter()
            .filter(|change| keep(change))
            .cloned()
            .collect();
        if changes.is_empty() {
            return None;
        }
        Some(Alert {
            idempotency_key: key,
            job: self.job.clone(),
            run_id: self.run_id.clone(),
            created_at: self.created_at,
            host: self.host.clone(),
            severity: highest_severity(&changes),
            changes,
        })
    }
}

/// The highest severity among `changes`, `Info` when there are none.
pub fn highest_severity(changes: &[AlertChange]) -> Severity {
    changes
        .iter()
        .map(|change| change.severity)
        .max()
        .unwrap_or(Severity::Info)
}

/// One unexpected change, with what was seen and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertChange {
    pub kind: ChangeKind,
    pub severity: Severity,
    /// Whether the change starts, ends or worsens a condition.
    pub state: ChangeState,
    /// What it is about, in words a reader can find: `203.0.113.7:6379`,
    /// `tcp 0.0.0.0:8080 python3 (pid 812)`, a host name. It may carry text
    /// the network chose (a banner, a certificate name), so every rendering
    /// treats it as hostile.
    pub subject: String,
    /// One sentence saying what changed.
    pub message: String,
    /// The observed facts behind the change, one per line.
    pub evidence: Vec<String>,
    /// What to do about it; empty when there is nothing to do (a port that
    /// closed as planned).
    pub remedy: String,
}

impl AlertChange {
    pub fn new(
        kind: ChangeKind,
        severity: Severity,
        state: ChangeState,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> AlertChange {
        AlertChange {
            kind,
            severity,
            state,
            subject: subject.into(),
            message: message.into(),
            evidence: Vec::new(),
            remedy: String::new(),
        }
    }

    pub fn with_evidence(mut self, evidence: impl Into<String>) -> Self {
        self.evidence.push(evidence.into());
        self
    }

    pub fn with_remedy(mut self, remedy: impl Into<String>) -> Self {
        self.remedy = remedy.into();
        self
    }
}

/// What kind of change. The names (`as_str`) are a compatibility surface:
/// they appear in `perimeter.alert/1` documents and in channel filters, and
/// are never renamed. New kinds are added at the end; `#[non_exhaustive]`
/// makes other crates ready for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ChangeKind {
    /// A port answered that did not before.
    PortOpened,
    /// A port that answered before no longer does.
    PortClosed,
    /// A port now runs another service, product or version.
    ServiceChanged,
    /// A service's authentication changed (it now answers without a password).
    AuthChanged,
    /// A service's TLS changed: certificate, issuer, protocol.
    TlsChanged,
    /// A certificate expires soon.
    TlsExpiring,
    /// A finding that was not there before.
    FindingNew,
    /// A finding that is gone.
    FindingResolved,
    /// A finding that is still there, now at a higher severity.
    SeverityRaised,
    /// A listener that no approval covers.
    ListenerUnapproved,
    /// A host answered that the inventory does not know.
    UnknownHost,
    /// An approved experiment outlived its expiry date.
    ExperimentExpired,
    /// One of the monitor's own channels keeps failing to deliver.
    ChannelFailing,
    /// A fleet host's agent saw a suspicious process start (an unpackaged
    /// executable, one in a world-writable directory, a deleted or memfd
    /// one): the way the founding incident's miner was found.
    SuspiciousExec,
}

impl ChangeKind {
    pub const ALL: [ChangeKind; 14] = [
        ChangeKind::PortOpened,
        ChangeKind::PortClosed,
        ChangeKind::ServiceChanged,
        ChangeKind::AuthChanged,
        ChangeKind::TlsChanged,
        ChangeKind::TlsExpiring,
        ChangeKind::FindingNew,
        ChangeKind::FindingResolved,
        ChangeKind::SeverityRaised,
        ChangeKind::ListenerUnapproved,
        ChangeKind::UnknownHost,
        ChangeKind::ExperimentExpired,
        ChangeKind::ChannelFailing,
        ChangeKind::SuspiciousExec,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::PortOpened => "port-opened",
            ChangeKind::PortClosed => "port-closed",
            ChangeKind::ServiceChanged => "service-changed",
            ChangeKind::AuthChanged => "auth-changed",
            ChangeKind::TlsChanged => "tls-changed",
            ChangeKind::TlsExpiring => "tls-expiring",
            ChangeKind::FindingNew => "finding-new",
            ChangeKind::FindingResolved => "finding-resolved",
            ChangeKind::SeverityRaised => "severity-raised",
            ChangeKind::ListenerUnapproved => "listener-unapproved",
            ChangeKind::UnknownHost => "unknown-host",
            ChangeKind::ExperimentExpired => "experiment-expired",
            ChangeKind::ChannelFailing => "channel-failing",
            ChangeKind::SuspiciousExec => "suspicious-exec",
        }
    }
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text given is not the name of a change kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeKindParseError(pub String);

impl fmt::Display for ChangeKindParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = ChangeKind::ALL.iter().map(|kind| kind.as_str()).collect();
        write!(
            f,
            "unknown change kind `{}` (expected one of {})",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for ChangeKindParseError {}

impl FromStr for ChangeKind {
    type Err = ChangeKindParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChangeKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| ChangeKindParseError(s.to_owned()))
    }
}

/// Where a change leaves the condition it is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeState {
    /// A condition that was not there before (a port opened, a new finding).
    New,
    /// A condition that is gone (a port closed, a finding resolved).
    Resolved,
    /// A condition that was there and got worse (a severity raised, a
    /// channel still failing).
    Escalated,
}

impl ChangeState {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeState::New => "new",
            ChangeState::Resolved => "resolved",
            ChangeState::Escalated => "escalated",
        }
    }
}

impl fmt::Display for ChangeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The deduplication handle of one alert to one channel.
///
/// Its alphabet is ASCII letters, digits and `. _ - : %`, at most
/// [`IdempotencyKey::MAX_LEN`] bytes: safe as an HTTP header value, inside a
/// quoted syslog SD-PARAM and in a file name, with nothing to escape. Make one
/// with [`IdempotencyKey::for_delivery`] or check stored text with
/// [`IdempotencyKey::parse`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The longest key [`IdempotencyKey::parse`] accepts.
    pub const MAX_LEN: usize = 512;

    /// The key of `run_id` of `job` to `channel`: the three parts
    /// percent-encoded (every byte outside `A-Z a-z 0-9 . _ -` becomes `%XX`)
    /// and joined with `:`. Percent-encoding is reversible and `:` never
    /// appears inside a part, so distinct triples always give distinct keys,
    /// whatever the names contain. The configuration keeps job and channel
    /// names short enough for the key to fit [`IdempotencyKey::MAX_LEN`]
    /// when it is read back.
    pub fn for_delivery(job: &str, run_id: &str, channel: &str) -> IdempotencyKey {
        let mut key = String::new();
        for (part_idx, part) in [job, run_id, channel].into_iter().enumerate() {
            if part_idx > 0 {
                key.push(':');
            }
            for byte in part.bytes() {
                if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-') {
                    key.push(char::from(byte));
                } else {
                    key.push_str(&format!("%{byte:02X}"));
                }
            }
        }
        IdempotencyKey(key)
    }

    /// A key read back from outside (the store): non-empty, at most
    /// [`IdempotencyKey::MAX_LEN`] bytes, of the key alphabet.
    pub fn parse(text: &str) -> Result<IdempotencyKey, IdempotencyKeyError> {
        if text.is_empty() {
            return Err(IdempotencyKeyError::Empty);
        }
        if text.len() > IdempotencyKey::MAX_LEN {
            return Err(IdempotencyKeyError::TooLong { len: text.len() });
        }
        if let Some((offset, bad)) = text.char_indices().find(|(_, c)| !is_key_char(*c)) {
            return Err(IdempotencyKeyError::BadChar { offset, bad });
        }
        Ok(IdempotencyKey(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '%')
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why text is not an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyKeyError {
    Empty,
    TooLong { len: usize },
    BadChar { offset: usize, bad: char },
}

impl fmt::Display for IdempotencyKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdempotencyKeyError::Empty => f.write_str("an idempotency key cannot be empty"),
            IdempotencyKeyError::TooLong { len } => write!(
                f,
                "an idempotency key is at most {} bytes, not {len}",
                IdempotencyKey::MAX_LEN
            ),
            IdempotencyKeyError::BadChar { offset, bad } => write!(
                f,
                "an idempotency key has only letters, digits and . _ - : % ({bad:?} at byte {offset})"
            ),
        }
    }
}

impl std::error::Error for IdempotencyKeyError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(severity: Severity, subject: &str) -> AlertChange {
        AlertChange::new(
            ChangeKind::PortOpened,
            severity,
            ChangeState::New,
            subject,
            "opened",
        )
    }

    fn alert(changes: Vec<AlertChange>) -> Alert {
        Alert::new(
            IdempotencyKey::for_delivery("nightly", "7", "mail"),
            "nightly",
            "7",
            OffsetDateTime::UNIX_EPOCH,
            "scanner-1",
            changes,
        )
    }

    #[test]
    fn severity_is_the_highest_and_info_when_empty() {
        assert_eq!(alert(Vec::new()).severity, Severity::Info);
        let alert = alert(vec![
            change(Severity::Low, "a"),
            change(Severity::High, "b"),
            change(Severity::Medium, "c"),
        ]);
        assert_eq!(alert.severity, Severity::High);
    }

    #[test]
    fn worst_first_keeps_the_order_of_equals() {
        let alert = alert(vec![
            change(Severity::Low, "a"),
            change(Severity::High, "b"),
            change(Severity::Low, "c"),
            change(Severity::High, "d"),
        ]);
        let subjects: Vec<&str> = alert
            .changes_worst_first()
            .iter()
            .map(|c| c.subject.as_str())
            .collect();
        assert_eq!(subjects, ["b", "d", "a", "c"]);
    }

    #[test]
    fn filtering_recomputes_severity_and_drops_empty_digests() {
        let alert = alert(vec![
            change(Severity::Low, "a"),
            change(Severity::High, "b"),
        ]);
        let key = IdempotencyKey::for_delivery("nightly", "7", "chat");
        let low = alert
            .filtered(key.clone(), |c| c.severity < Severity::High)
            .expect("one change left");
        assert_eq!(low.severity, Severity::Low);
        assert_eq!(low.idempotency_key, key);
        assert_eq!(low.changes.len(), 1);
        assert_eq!(alert.filtered(key, |_| false), None);
    }

    #[test]
    fn change_kinds_round_trip_through_their_names() {
        for kind in ChangeKind::ALL {
            assert_eq!(kind.as_str().parse::<ChangeKind>(), Ok(kind));
        }
        let err = "port-open".parse::<ChangeKind>().map_err(|e| e.to_string());
        assert!(
            err.as_ref().is_err_and(|e| e.starts_with(
                "unknown change kind `port-open` (expected one of port-opened, port-closed,"
            )),
            "{err:?}"
        );
    }

    #[test]
    fn keys_encode_any_name_and_never_collide() {
        let key = IdempotencyKey::for_delivery("night scan", "42", "ops:mail\r\n\"]");
        assert_eq!(key.as_str(), "night%20scan:42:ops%3Amail%0D%0A%22%5D");
        assert_eq!(IdempotencyKey::parse(key.as_str()), Ok(key));
        // A colon in a name cannot forge the separator.
        assert_ne!(
            IdempotencyKey::for_delivery("a:b", "1", "c"),
            IdempotencyKey::for_delivery("a", "b:1", "c")
        );
        // Nor can a literal percent forge an encoding.
        assert_ne!(
            IdempotencyKey::for_delivery("%3A", "1", "c"),
            IdempotencyKey::for_delivery(":", "1", "c")
        );
        // Non-ASCII names are encoded byte by byte.
        assert_eq!(
            IdempotencyKey::for_delivery("é", "1", "c").as_str(),
            "%C3%A9:1:c"
        );
    }

    #[test]
    fn parsing_refuses_what_could_inject() {
        assert_eq!(IdempotencyKey::parse(""), Err(IdempotencyKeyError::Empty));
        assert_eq!(
            IdempotencyKey::parse("a\r\nX-Evil: 1"),
            Err(IdempotencyKeyError::BadChar {
                offset: 1,
                bad: '\r'
            })
        );
        assert_eq!(
            IdempotencyKey::parse("a\"]"),
            Err(IdempotencyKeyError::BadChar {
                offset: 1,
                bad: '"'
            })
        );
        let long = "a".repeat(IdempotencyKey::MAX_LEN + 1);
        assert_eq!(
            IdempotencyKey::parse(&long),
            Err(IdempotencyKeyError::TooLong {
                len: IdempotencyKey::MAX_LEN + 1
            })
        );
    }
}
