//! The monitor's alert as each channel carries it: the `perimeter.alert/1`
//! JSON document (webhooks, the command channel), the Slack Block Kit
//! payload, the email subject and plain-text body, and RFC 5424 syslog
//! messages. Pure functions of an [`Alert`] and a few options; sending them
//! is `perimeter-notify`'s job.
//!
//! Subjects, messages and evidence may carry text the network chose (a
//! banner, a certificate name, a hostile host name), so every human rendering
//! passes them through [`one_line`]: control characters, line and paragraph
//! separators and bidirectional overrides become visible `\n`, `\u{1b}`
//! escapes. A subject can then neither start a new header, line or syslog
//! message nor drive a terminal. Each format adds its own escaping on top
//! (Slack's `&`, `<`, `>`; syslog's `"`, `\`, `]`). The JSON document keeps
//! the text as it was: it is data, and JSON escaping is enough.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use perimeter_model::{Alert, AlertChange, Severity};
use serde::Serialize;

use crate::time_fmt::rfc3339;

/// The schema string of the alert document.
pub const SCHEMA: &str = "perimeter.alert/1";

// ---------------------------------------------------------------------------
// perimeter.alert/1

#[derive(Debug, Serialize)]
struct Document<'a> {
    schema: &'static str,
    idempotency_key: &'a str,
    job: &'a str,
    run_id: &'a str,
    host: &'a str,
    created_at: String,
    /// The highest severity among the changes.
    severity: &'static str,
    /// Worst first, as every rendering shows them.
    changes: Vec<ChangeJson<'a>>,
}

#[derive(Debug, Serialize)]
struct ChangeJson<'a> {
    kind: &'static str,
    severity: &'static str,
    /// `new`, `resolved` or `escalated`.
    state: &'static str,
    subject: &'a str,
    message: &'a str,
    evidence: &'a [String],
    remedy: &'a str,
}

fn document(alert: &Alert) -> Document<'_> {
    Document {
        schema: SCHEMA,
        idempotency_key: alert.idempotency_key.as_str(),
        job: &alert.job,
        run_id: &alert.run_id,
        host: &alert.host,
        created_at: rfc3339(alert.created_at),
        severity: alert.severity.as_str(),
        changes: alert
            .changes_worst_first()
            .into_iter()
            .map(|change| ChangeJson {
                kind: change.kind.as_str(),
                severity: change.severity.as_str(),
                state: change.state.as_str(),
                subject: &change.subject,
                message: &change.message,
                evidence: &change.evidence,
                remedy: &change.remedy,
            })
            .collect(),
    }
}

/// The `perimeter.alert/1` document.
pub fn to_json(alert: &Alert) -> serde_json::Value {
    serde_json::to_value(document(alert)).unwrap_or(serde_json::Value::Null)
}

/// The `perimeter.alert/1` document as the bytes a webhook signs and sends
/// and a command reads on stdin: compact, one line, no trailing newline.
pub fn to_json_bytes(alert: &Alert) -> Vec<u8> {
    // Serialising plain strings and slices into a Vec cannot fail.
    serde_json::to_vec(&document(alert)).unwrap_or_default()
}

/// Why a stored `perimeter.alert/1` document could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum AlertParseError {
    #[error("not a perimeter.alert/1 document: {0}")]
    Json(#[from] serde_json::Error),
    #[error("schema `{0}` is not perimeter.alert/1")]
    Schema(String),
    #[error("{0}")]
    Value(String),
}

#[derive(Debug, serde::Deserialize)]
struct OwnedDocument {
    schema: String,
    idempotency_key: String,
    job: String,
    run_id: String,
    host: String,
    created_at: String,
    changes: Vec<OwnedChange>,
}

#[derive(Debug, serde::Deserialize)]
struct OwnedChange {
    kind: String,
    severity: String,
    state: String,
    subject: String,
    message: String,
    evidence: Vec<String>,
    remedy: String,
}

/// Reads back a document [`to_json_bytes`] wrote (the monitor's outbox keeps
/// each channel's alert this way and delivers it from there after a
/// restart). The inverse of [`to_json_bytes`]: the alert read back renders
/// the same bytes.
pub fn from_json(text: &str) -> Result<Alert, AlertParseError> {
    use perimeter_model::{ChangeKind, ChangeState, IdempotencyKey};
    let doc: OwnedDocument = serde_json::from_str(text)?;
    if doc.schema != SCHEMA {
        return Err(AlertParseError::Schema(doc.schema));
    }
    let bad = |what: &str, value: &str| AlertParseError::Value(format!("{what} `{value}`"));
    let key = IdempotencyKey::parse(&doc.idempotency_key)
        .map_err(|_| bad("idempotency key", &doc.idempotency_key))?;
    let created_at = time::OffsetDateTime::parse(
        &doc.created_at,
        &time::format_description::well_known::Rfc3339,
    )
    .map_err(|_| bad("time", &doc.created_at))?;
    let mut changes = Vec::with_capacity(doc.changes.len());
    for change in doc.changes {
        changes.push(AlertChange {
            kind: ChangeKind::from_str(&change.kind)
                .map_err(|_| bad("change kind", &change.kind))?,
            severity: Severity::from_str(&change.severity)
                .map_err(|_| bad("severity", &change.severity))?,
            state: match change.state.as_str() {
                "new" => ChangeState::New,
                "resolved" => ChangeState::Resolved,
                "escalated" => ChangeState::Escalated,
                other => return Err(bad("change state", other)),
            },
            subject: change.subject,
            message: change.message,
            evidence: change.evidence,
            remedy: change.remedy,
        });
    }
    Ok(Alert::new(
        key, doc.job, doc.run_id, created_at, doc.host, changes,
    ))
}

// ---------------------------------------------------------------------------
// Hostile text

/// `text` on one line, harmless to a terminal, a mail header or a log line:
/// `\n`, `\r` and `\t` become those two-character escapes, and every other
/// control character (C0, DEL, C1), the Unicode line and paragraph
/// separators and the bidirectional controls (which can make text read
/// backwards) become `\u{...}`. Everything else is kept.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{2028}' | '\u{2029}'                 // line and paragraph separators
            | '\u{200e}' | '\u{200f}' | '\u{061c}'  // direction marks
            | '\u{202a}'..='\u{202e}'               // embeddings and overrides
            | '\u{2066}'..='\u{2069}'               // isolates
        )
}

/// At most `max` characters of `text`, with `…` in place of what was cut.
fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn changes_noun(n: usize) -> &'static str {
    if n == 1 { "change" } else { "changes" }
}

fn upper(severity: Severity) -> String {
    severity.as_str().to_ascii_uppercase()
}

// ---------------------------------------------------------------------------
// Slack Block Kit

/// Slack refuses a message with more blocks than this.
pub const SLACK_MAX_BLOCKS: usize = 50;

/// Slack refuses a section whose text is longer than this (characters).
const SLACK_MAX_SECTION_TEXT: usize = 3000;

/// The blocks before the changes: the header and the context line.
const SLACK_LEADING_BLOCKS: usize = 2;

/// Text for a Slack `mrkdwn` field or the fallback `text`: [`one_line`], then
/// `&`, `<` and `>` as the entities Slack asks for. Without `<`, nothing in
/// the text can become a link or a mention (`<!channel>`, `<@U123>`), and
/// perimeter never sets `link_names`, so a bare `@channel` stays text.
pub fn slack_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in one_line(text).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Escaped text cut to at most `max` characters without splitting an
/// entity, with `…` in place of what was cut.
fn truncate_escaped(escaped: &str, max: usize) -> String {
    if escaped.chars().count() <= max {
        return escaped.to_owned();
    }
    let mut out: String = escaped.chars().take(max.saturating_sub(1)).collect();
    // An entity is at most 5 characters (`&amp;`); an `&` near the end with
    // no `;` after it is the start of one that was cut.
    if let Some(amp) = out.rfind('&')
        && !out[amp..].contains(';')
    {
        out.truncate(amp);
    }
    out.push('…');
    out
}

/// The Slack incoming-webhook payload: a header, a context line (job, run,
/// host, time, key), and a section per change, worst first, in `mrkdwn`. At
/// most [`SLACK_MAX_BLOCKS`] blocks: when the changes do not fit, the last
/// block says how many more there are.
pub fn slack_payload(alert: &Alert) -> serde_json::Value {
    let changes = alert.changes_worst_first();
    let header = format!(
        "perimeter: {}, highest {}",
        crate::count(changes.len(), "change"),
        upper(alert.severity)
    );
    let context = format!(
        "job *{}* · run {} · host {} · {} · key `{}`",
        slack_escape(&alert.job),
        slack_escape(&alert.run_id),
        slack_escape(&alert.host),
        rfc3339(alert.created_at),
        alert.idempotency_key,
    );
    let mut blocks = vec![
        serde_json::json!({
            "type": "header",
            "text": { "type": "plain_text", "text": header, "emoji": false },
        }),
        serde_json::json!({
            "type": "context",
            // Cut like a section: a long job or host name must not make
            // Slack refuse the whole message.
            "elements": [{ "type": "mrkdwn", "text": truncate_escaped(&context, SLACK_MAX_SECTION_TEXT) }],
        }),
    ];
    let room = SLACK_MAX_BLOCKS - SLACK_LEADING_BLOCKS;
    let (shown, n_more) = if changes.len() > room {
        // One block goes to the "and N more" line.
        (&changes[..room - 1], changes.len() - (room - 1))
    } else {
        (&changes[..], 0)
    };
    for change in shown {
        blocks.push(section(&slack_change(change)));
    }
    if n_more > 0 {
        blocks.push(section(&format!(
            "…and {n_more} more {}, not shown here: Slack takes {SLACK_MAX_BLOCKS} blocks per \
             message. The email and webhook channels and `perimeter monitor` carry all of them.",
            changes_noun(n_more)
        )));
    }
    serde_json::json!({
        "text": format!(
            "perimeter: {} on {}, highest {}",
            crate::count(changes.len(), "change"),
            truncate_escaped(&slack_escape(&alert.host), 200),
            upper(alert.severity)
        ),
        "blocks": blocks,
    })
}

fn section(text: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "section",
        "text": { "type": "mrkdwn", "text": truncate_escaped(text, SLACK_MAX_SECTION_TEXT) },
    })
}

fn slack_change(change: &AlertChange) -> String {
    let mut text = format!(
        "*{}* {} ({}) {}\n{}",
        upper(change.severity),
        change.kind,
        change.state,
        slack_escape(&change.subject),
        slack_escape(&change.message)
    );
    for line in &change.evidence {
        let _ = write!(text, "\n• {}", slack_escape(line));
    }
    if !change.remedy.is_empty() {
        let _ = write!(text, "\n*Remedy:* {}", slack_escape(&change.remedy));
    }
    text
}

// ---------------------------------------------------------------------------
// Email

/// The column plain-text mail is wrapped at: it reads in an 80-column
/// terminal mail client with room for a quote prefix.
pub const EMAIL_WIDTH: usize = 72;

/// The most changes one email lists; the rest are counted.
pub const EMAIL_MAX_CHANGES: usize = 500;

/// The longest subject, in characters.
const EMAIL_MAX_SUBJECT: usize = 150;

/// The subject line: `[perimeter] HIGH: 3 changes on web-1 (nightly)`, or
/// for a single change its kind and subject.
pub fn email_subject(alert: &Alert) -> String {
    let subject = match alert.changes.as_slice() {
        [only] => format!(
            "[perimeter] {}: {} {} on {}",
            upper(only.severity),
            only.kind,
            // Cut the parts, not the whole, so the host stays in view.
            truncate_chars(&only.subject, 60),
            truncate_chars(&alert.host, 40)
        ),
        changes => format!(
            "[perimeter] {}: {} on {} ({})",
            upper(alert.severity),
            crate::count(changes.len(), "change"),
            truncate_chars(&alert.host, 40),
            truncate_chars(&alert.job, 40)
        ),
    };
    truncate_chars(&one_line(&subject), EMAIL_MAX_SUBJECT)
}

/// The plain-text body, wrapped at [`EMAIL_WIDTH`] columns: a summary, then
/// each change worst first with its evidence and remedy indented. Every line
/// of text from outside is indented, so none can start with `From ` or `.`.
pub fn email_body(alert: &Alert) -> String {
    let mut out = String::new();
    let changes = alert.changes_worst_first();
    wrap(
        &mut out,
        &format!(
            "perimeter monitor saw {} on {}.",
            crate::count(changes.len(), "change"),
            one_line(&alert.host)
        ),
        "",
        "",
    );
    out.push('\n');
    for (label, value) in [
        ("Job:", one_line(&alert.job)),
        ("Run:", one_line(&alert.run_id)),
        ("Host:", one_line(&alert.host)),
        ("Time:", rfc3339(alert.created_at)),
        ("Highest:", upper(alert.severity)),
        ("Key:", alert.idempotency_key.to_string()),
    ] {
        let first = format!("  {label:<10}");
        wrap(&mut out, &value, &first, &" ".repeat(first.len()));
    }
    let n_shown = changes.len().min(EMAIL_MAX_CHANGES);
    for (change_idx, change) in changes.iter().take(n_shown).enumerate() {
        out.push('\n');
        wrap(
            &mut out,
            &format!(
                "[{}/{}] {} {} ({})",
                change_idx + 1,
                changes.len(),
                upper(change.severity),
                change.kind,
                change.state
            ),
            "",
            "    ",
        );
        wrap(&mut out, &one_line(&change.subject), "    ", "    ");
        wrap(&mut out, &one_line(&change.message), "    ", "    ");
        if !change.evidence.is_empty() {
            out.push_str("    Evidence:\n");
            for line in &change.evidence {
                wrap(&mut out, &one_line(line), "      - ", "        ");
            }
        }
        if !change.remedy.is_empty() {
            out.push_str("    Remedy:\n");
            wrap(&mut out, &one_line(&change.remedy), "      ", "      ");
        }
    }
    if changes.len() > n_shown {
        let n_more = changes.len() - n_shown;
        out.push('\n');
        wrap(
            &mut out,
            &format!(
                "...and {n_more} more {}, not listed here; the webhook document \
                 and the store have all of them.",
                changes_noun(n_more)
            ),
            "",
            "",
        );
    }
    out.push_str("\n-- \n");
    wrap(
        &mut out,
        "Sent by perimeter monitor. A redelivered copy carries the same key \
         (and the same X-Perimeter-Idempotency-Key header).",
        "",
        "",
    );
    out
}

/// `text` word-wrapped at [`EMAIL_WIDTH`] columns onto `out`, the first line
/// after `first`, the others after `rest`. A word longer than a line is cut.
/// `text` is one line (see [`one_line`]); columns are counted in characters.
fn wrap(out: &mut String, text: &str, first: &str, rest: &str) {
    let rest_len = rest.chars().count();
    let mut line = first.to_owned();
    let mut line_len = first.chars().count();
    let mut has_word = false;
    let mut flush = |line: &mut String, line_len: &mut usize| {
        out.push_str(line.trim_end());
        out.push('\n');
        *line = rest.to_owned();
        *line_len = rest_len;
    };
    for word in text.split(' ').filter(|word| !word.is_empty()) {
        let chars: Vec<char> = word.chars().collect();
        let mut word = chars.as_slice();
        loop {
            let sep = usize::from(has_word);
            if line_len + sep + word.len() <= EMAIL_WIDTH {
                if has_word {
                    line.push(' ');
                }
                line.extend(word);
                line_len += sep + word.len();
                has_word = true;
                break;
            }
            if has_word {
                flush(&mut line, &mut line_len);
                has_word = false;
                continue;
            }
            // Alone on its line and still too long: cut the word (a URL, a
            // hash, or a hostile subject with no spaces).
            let room = EMAIL_WIDTH.saturating_sub(line_len).max(1);
            let (head, tail) = word.split_at(room.min(word.len()));
            line.extend(head);
            flush(&mut line, &mut line_len);
            word = tail;
        }
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

// ---------------------------------------------------------------------------
// Syslog (RFC 5424)

/// The SD-ID of perimeter's structured data. 32473 is the Private Enterprise
/// Number RFC 5612 reserves for documentation.
pub const SYSLOG_SD_ID: &str = "perimeter@32473";

/// The longest syslog message made, in bytes: RFC 5424 (section 6.1) says
/// every receiver should take 2048 octets, and relays cut beyond that.
pub const SYSLOG_MAX_MESSAGE: usize = 2048;

/// The syslog facility, RFC 5424 table 1. `Daemon` unless configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Facility {
    Kern,
    User,
    Mail,
    #[default]
    Daemon,
    Auth,
    Syslog,
    Lpr,
    News,
    Uucp,
    Cron,
    Authpriv,
    Ftp,
    Ntp,
    Security,
    Console,
    SolarisCron,
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl Facility {
    pub const ALL: [Facility; 24] = [
        Facility::Kern,
        Facility::User,
        Facility::Mail,
        Facility::Daemon,
        Facility::Auth,
        Facility::Syslog,
        Facility::Lpr,
        Facility::News,
        Facility::Uucp,
        Facility::Cron,
        Facility::Authpriv,
        Facility::Ftp,
        Facility::Ntp,
        Facility::Security,
        Facility::Console,
        Facility::SolarisCron,
        Facility::Local0,
        Facility::Local1,
        Facility::Local2,
        Facility::Local3,
        Facility::Local4,
        Facility::Local5,
        Facility::Local6,
        Facility::Local7,
    ];

    /// The facility's number, 0 to 23.
    pub fn code(self) -> u8 {
        // ALL lists the facilities in code order.
        Facility::ALL
            .iter()
            .position(|facility| *facility == self)
            .and_then(|idx| u8::try_from(idx).ok())
            .unwrap_or(3)
    }

    /// The name as syslog.conf spells it (`daemon`, `local0`).
    pub fn as_str(self) -> &'static str {
        match self {
            Facility::Kern => "kern",
            Facility::User => "user",
            Facility::Mail => "mail",
            Facility::Daemon => "daemon",
            Facility::Auth => "auth",
            Facility::Syslog => "syslog",
            Facility::Lpr => "lpr",
            Facility::News => "news",
            Facility::Uucp => "uucp",
            Facility::Cron => "cron",
            Facility::Authpriv => "authpriv",
            Facility::Ftp => "ftp",
            Facility::Ntp => "ntp",
            Facility::Security => "security",
            Facility::Console => "console",
            Facility::SolarisCron => "solaris-cron",
            Facility::Local0 => "local0",
            Facility::Local1 => "local1",
            Facility::Local2 => "local2",
            Facility::Local3 => "local3",
            Facility::Local4 => "local4",
            Facility::Local5 => "local5",
            Facility::Local6 => "local6",
            Facility::Local7 => "local7",
        }
    }
}

impl fmt::Display for Facility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text given is not a facility name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown syslog facility `{0}` (expected daemon, user, auth, authpriv, local0 ... local7 or another RFC 5424 name)"
)]
pub struct FacilityParseError(pub String);

impl FromStr for Facility {
    type Err = FacilityParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Facility::ALL
            .into_iter()
            .find(|facility| facility.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| FacilityParseError(s.to_owned()))
    }
}

/// How the syslog messages are made beyond the alert itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyslogOptions {
    pub facility: Facility,
    /// PROCID: the sender's process id, `-` when `None`.
    pub procid: Option<u32>,
}

/// The RFC 5424 severity of a change: critical is `crit` (2), high `err`
/// (3), medium `warning` (4), low `notice` (5), info `info` (6). `emerg` and
/// `alert` are left to whatever makes the whole system unusable.
pub fn syslog_severity(severity: Severity) -> u8 {
    match severity {
        Severity::Critical => 2,
        Severity::High => 3,
        Severity::Medium => 4,
        Severity::Low => 5,
        Severity::Info => 6,
    }
}

/// The alert as RFC 5424 messages, one per change, worst first (one message
/// saying so for an alert with no changes). No framing: the transport adds
/// it.
///
/// One message per change rather than one message for the digest: each
/// carries its own change's severity in PRI, so a collector's rules
/// (`*.crit`, a SIEM's severity filter) see every change at its own level; a
/// one-line MSG per change stays within [`SYSLOG_MAX_MESSAGE`], which a
/// digest of many changes would not; and multi-line MSGs break the many
/// collectors that split on newlines. Every message carries the alert's
/// idempotency key, its position (`change="2" changes="5"`) and the change's
/// fields in structured data under [`SYSLOG_SD_ID`], so the digest can be
/// put back together and a redelivery recognised.
///
/// TIMESTAMP is the alert's creation time, so a retried message is
/// identical to the first attempt. MSG is ASCII, or UTF-8 starting with a
/// BOM as RFC 5424 asks when it is not.
pub fn syslog_messages(alert: &Alert, options: SyslogOptions) -> Vec<String> {
    let changes = alert.changes_worst_first();
    if changes.is_empty() {
        let header = syslog_header(alert, options, alert.severity);
        let sd = structured_data(alert, None);
        return vec![finish_message(
            &header,
            &sd,
            &format!("perimeter: no changes on {}", one_line(&alert.host)),
        )];
    }
    changes
        .iter()
        .enumerate()
        .map(|(change_idx, change)| {
            let header = syslog_header(alert, options, change.severity);
            let sd = structured_data(alert, Some((change_idx, changes.len(), change)));
            finish_message(&header, &sd, &syslog_msg(change))
        })
        .collect()
}

/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID`
fn syslog_header(alert: &Alert, options: SyslogOptions, severity: Severity) -> String {
    let pri = u16::from(options.facility.code()) * 8 + u16::from(syslog_severity(severity));
    let procid = options
        .procid
        .map_or_else(|| "-".to_owned(), |pid| pid.to_string());
    format!(
        "<{pri}>1 {} {} perimeter {procid} alert",
        rfc3339(alert.created_at),
        syslog_hostname(&alert.host)
    )
}

/// HOSTNAME is 1 to 255 printable ASCII characters without space; anything
/// else in the configured name becomes `_`, and an empty name the NILVALUE.
fn syslog_hostname(host: &str) -> String {
    if host.is_empty() {
        return "-".to_owned();
    }
    host.chars()
        .take(255)
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect()
}

fn structured_data(alert: &Alert, change: Option<(usize, usize, &AlertChange)>) -> String {
    let mut sd = format!(
        "[{SYSLOG_SD_ID} key=\"{}\" job=\"{}\" run=\"{}\"",
        // The key's alphabet needs no escaping and is never cut: a cut key
        // would deduplicate the wrong messages.
        alert.idempotency_key,
        sd_value(&alert.job, 128),
        sd_value(&alert.run_id, 64),
    );
    if let Some((change_idx, n_changes, change)) = change {
        let _ = write!(
            sd,
            " change=\"{}\" changes=\"{n_changes}\" kind=\"{}\" state=\"{}\" severity=\"{}\" subject=\"{}\"",
            change_idx + 1,
            change.kind,
            change.state,
            change.severity,
            sd_value(&change.subject, 256),
        );
    }
    sd.push(']');
    sd
}

/// A PARAM-VALUE: [`one_line`], cut to `max` characters, with `"`, `\` and
/// `]` escaped by a backslash as RFC 5424 section 6.3.3 requires.
fn sd_value(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in truncate_chars(&one_line(text), max).chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `HIGH port-opened (new) 203.0.113.7:6379: message; evidence: a | b; remedy: r`
fn syslog_msg(change: &AlertChange) -> String {
    let mut msg = format!(
        "{} {} ({}) {}: {}",
        upper(change.severity),
        change.kind,
        change.state,
        one_line(&change.subject),
        one_line(&change.message)
    );
    if !change.evidence.is_empty() {
        let evidence: Vec<String> = change.evidence.iter().map(|line| one_line(line)).collect();
        let _ = write!(msg, "; evidence: {}", evidence.join(" | "));
    }
    if !change.remedy.is_empty() {
        let _ = write!(msg, "; remedy: {}", one_line(&change.remedy));
    }
    msg
}

/// `HEADER SP STRUCTURED-DATA SP MSG`, MSG cut so the whole is at most
/// [`SYSLOG_MAX_MESSAGE`] bytes, with the BOM when MSG is not ASCII.
fn finish_message(header: &str, sd: &str, msg: &str) -> String {
    const BOM: &str = "\u{feff}";
    const CUT: &str = "...";
    let mut out = format!("{header} {sd} ");
    let room = SYSLOG_MAX_MESSAGE.saturating_sub(out.len());
    let bom = if msg.is_ascii() { "" } else { BOM };
    if bom.len() + msg.len() <= room {
        out.push_str(bom);
        out.push_str(msg);
        return out;
    }
    let budget = room.saturating_sub(bom.len() + CUT.len());
    let mut end = budget.min(msg.len());
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    out.push_str(bom);
    out.push_str(&msg[..end]);
    out.push_str(CUT);
    out
}

#[cfg(test)]
mod tests;
