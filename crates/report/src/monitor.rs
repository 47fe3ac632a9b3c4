//! The monitor's memory as output (`perimeter alerts`): the alerts it
//! raised with where each went, the conditions still open (acknowledged or
//! not), and how each channel is doing, as `perimeter.alerts/1` and as human
//! lines. The store lists; the CLI lends the rows through these views.

use std::fmt::Write as _;
use std::path::Path;

use time::OffsetDateTime;

use crate::time_fmt::rfc3339;

/// The schema string of the alerts listing.
pub const ALERTS_SCHEMA: &str = "perimeter.alerts/1";

/// A raised alert.
#[derive(Debug, Clone, Copy)]
pub struct AlertView<'a> {
    pub id: i64,
    pub job: &'a str,
    pub created: OffsetDateTime,
    pub severity: &'a str,
    pub n_changes: u64,
    /// (channel, state: pending | sent | failed) per delivery.
    pub deliveries: &'a [(String, String)],
}

/// A condition the monitor still sees.
#[derive(Debug, Clone, Copy)]
pub struct ConditionView<'a> {
    pub id: i64,
    pub job: &'a str,
    pub kind: &'a str,
    pub severity: &'a str,
    pub subject: &'a str,
    pub first_seen: OffsetDateTime,
    pub last_seen: OffsetDateTime,
    /// Present while an acknowledgement holds.
    pub acked_until: Option<OffsetDateTime>,
    /// Who acknowledged it, when and why (the latest acknowledgement), while
    /// one holds.
    pub acked_by: Option<AckView<'a>>,
}

/// A person's acknowledgement of a condition.
#[derive(Debug, Clone, Copy)]
pub struct AckView<'a> {
    pub by: &'a str,
    pub at: OffsetDateTime,
    pub reason: &'a str,
}

/// A channel's deliveries so far.
#[derive(Debug, Clone, Copy)]
pub struct ChannelView<'a> {
    pub channel: &'a str,
    pub sent: u64,
    pub pending: u64,
    pub failed: u64,
    pub last_error: Option<&'a str>,
}

/// An acknowledgement that lasts "for good" is stored as this far date.
fn for_good(until: OffsetDateTime) -> bool {
    until.year() >= 9999
}

fn acked_text(until: Option<OffsetDateTime>, now: OffsetDateTime) -> Option<String> {
    match until {
        Some(until) if for_good(until) => Some("for good".to_owned()),
        Some(until) if until > now => Some(format!("until {}", rfc3339(until))),
        _ => None,
    }
}

/// The `perimeter.alerts/1` document.
pub fn alerts_to_json(
    alerts: &[AlertView<'_>],
    conditions: &[ConditionView<'_>],
    channels: &[ChannelView<'_>],
    now: OffsetDateTime,
) -> serde_json::Value {
    serde_json::json!({
        "schema": ALERTS_SCHEMA,
        "alerts": alerts.iter().map(|a| serde_json::json!({
            "id": a.id,
            "job": a.job,
            "created": rfc3339(a.created),
            "severity": a.severity,
            "changes": a.n_changes,
            "deliveries": a.deliveries.iter().map(|(channel, state)| serde_json::json!({
                "channel": channel,
                "state": state,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "conditions": conditions.iter().map(|c| serde_json::json!({
            "id": c.id,
            "job": c.job,
            "kind": c.kind,
            "severity": c.severity,
            "subject": c.subject,
            "first_seen": rfc3339(c.first_seen),
            "last_seen": rfc3339(c.last_seen),
            "acknowledged_until": c.acked_until
                .filter(|until| *until > now)
                .map(|until| if for_good(until) { "forever".to_owned() } else { rfc3339(until) }),
            "acknowledgement": c.acked_until
                .filter(|until| *until > now)
                .and(c.acked_by)
                .map(|ack| serde_json::json!({
                    "by": ack.by,
                    "at": rfc3339(ack.at),
                    "reason": ack.reason,
                })),
        })).collect::<Vec<_>>(),
        "channels": channels.iter().map(|c| serde_json::json!({
            "channel": c.channel,
            "sent": c.sent,
            "pending": c.pending,
            "failed": c.failed,
            "last_error": c.last_error,
        })).collect::<Vec<_>>(),
    })
}

/// The listing as text: open conditions first (what needs a person), then
/// the alerts, then the channels.
pub fn alerts_to_human(
    alerts: &[AlertView<'_>],
    conditions: &[ConditionView<'_>],
    channels: &[ChannelView<'_>],
    db: &Path,
    now: OffsetDateTime,
) -> String {
    let mut out = String::new();
    if alerts.is_empty() && conditions.is_empty() && channels.is_empty() {
        let _ = writeln!(out, "no alerts stored in {}", db.display());
        return out;
    }
    if conditions.is_empty() {
        let _ = writeln!(out, "No open conditions.");
    } else {
        let _ = writeln!(out, "Open conditions ({}):", conditions.len());
        let _ = writeln!(
            out,
            "{:>5}  {:<9}  {:<12}  {:<22}  {:<20}  SUBJECT",
            "ID", "SEVERITY", "JOB", "KIND", "SINCE"
        );
        for c in conditions {
            let acked = acked_text(c.acked_until, now)
                .map(|text| match c.acked_by {
                    // The reason is text a person typed: one line, no escapes.
                    Some(ack) => format!(
                        "  [acknowledged {text} by {} at {}: {}]",
                        crate::alert::one_line(ack.by),
                        rfc3339(ack.at),
                        crate::alert::one_line(ack.reason)
                    ),
                    None => format!("  [acknowledged {text}]"),
                })
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{:>5}  {:<9}  {:<12}  {:<22}  {:<20}  {}{acked}",
                c.id,
                c.severity,
                c.job,
                c.kind,
                rfc3339(c.first_seen),
                // Text the network or an agent chose: no escape sequences.
                crate::alert::one_line(c.subject)
            );
        }
    }
    let _ = writeln!(out);
    if alerts.is_empty() {
        let _ = writeln!(out, "No alerts raised.");
    } else {
        let _ = writeln!(out, "Alerts, newest first:");
        let _ = writeln!(
            out,
            "{:>5}  {:<20}  {:<12}  {:<9}  {:>7}  DELIVERIES",
            "ID", "CREATED", "JOB", "SEVERITY", "CHANGES"
        );
        for a in alerts {
            let deliveries = if a.deliveries.is_empty() {
                "(no channel takes it)".to_owned()
            } else {
                a.deliveries
                    .iter()
                    .map(|(channel, state)| format!("{channel}: {state}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                out,
                "{:>5}  {:<20}  {:<12}  {:<9}  {:>7}  {deliveries}",
                a.id,
                rfc3339(a.created),
                a.job,
                a.severity,
                a.n_changes
            );
        }
    }
    if !channels.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "Channels:");
        for c in channels {
            let error = c
                .last_error
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {}: {} sent, {} waiting, {} refused for good{error}",
                c.channel, c.sent, c.pending, c.failed
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn conditions_come_first_with_their_acknowledgement() {
        let now = datetime!(2026-12-02 10:00 UTC);
        let deliveries = vec![("ops".to_owned(), "sent".to_owned())];
        let alerts = [AlertView {
            id: 3,
            job: "edge",
            created: now,
            severity: "critical",
            n_changes: 2,
            deliveries: &deliveries,
        }];
        let conditions = [
            ConditionView {
                id: 7,
                job: "edge",
                kind: "port-opened",
                severity: "critical",
                subject: "198.18.0.5:6379/tcp redis",
                first_seen: now,
                last_seen: now,
                acked_until: Some(datetime!(9999-12-31 23:59:59 UTC)),
                acked_by: Some(AckView {
                    by: "alice",
                    at: datetime!(2026-11-30 09:00 UTC),
                    reason: "lab redis\u{1b}[2J, torn down friday",
                }),
            },
            ConditionView {
                id: 8,
                job: "audit",
                kind: "listener-unapproved",
                severity: "high",
                subject: "tcp 0.0.0.0:8080 \u{1b}[2Jsh\nfake line",
                first_seen: now,
                last_seen: now,
                // An acknowledgement that ran out is not shown.
                acked_until: Some(datetime!(2026-12-01 00:00 UTC)),
                acked_by: Some(AckView {
                    by: "bob",
                    at: datetime!(2026-11-30 10:00 UTC),
                    reason: "expired",
                }),
            },
        ];
        let channels = [ChannelView {
            channel: "ops",
            sent: 1,
            pending: 0,
            failed: 0,
            last_error: None,
        }];
        let text = alerts_to_human(&alerts, &conditions, &channels, Path::new("x.db"), now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.first().copied(), Some("Open conditions (2):"));
        assert!(
            lines
                .iter()
                .any(|l| l.contains("redis")
                    && l.ends_with(
                        "[acknowledged for good by alice at 2026-11-30T09:00:00Z: lab redis\\u{1b}[2J, torn down friday]"
                    )),
            "{text}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("8080") && !l.contains("acknowledged")),
            "{text}"
        );
        assert!(
            !text.contains('\u{1b}') && text.contains("\\u{1b}[2Jsh\\nfake line"),
            "a hostile subject is one escaped line: {text}"
        );
        assert!(text.contains("ops: sent"), "{text}");
        let json = alerts_to_json(&alerts, &conditions, &channels, now);
        assert_eq!(json["schema"], ALERTS_SCHEMA);
        assert_eq!(json["conditions"][0]["acknowledged_until"], "forever");
        assert_eq!(
            json["conditions"][1]["acknowledged_until"],
            serde_json::Value::Null
        );
        assert_eq!(json["conditions"][0]["acknowledgement"]["by"], "alice");
        assert_eq!(
            json["conditions"][0]["acknowledgement"]["at"],
            "2026-11-30T09:00:00Z"
        );
        assert_eq!(
            json["conditions"][1]["acknowledgement"],
            serde_json::Value::Null,
            "an acknowledgement that ran out is not shown"
        );
        assert_eq!(json["alerts"][0]["deliveries"][0]["state"], "sent");
    }

    #[test]
    fn an_empty_history_says_where_it_looked() {
        let now = datetime!(2026-12-02 10:00 UTC);
        let text = alerts_to_human(&[], &[], &[], Path::new("/var/lib/p.db"), now);
        assert_eq!(text, "no alerts stored in /var/lib/p.db\n");
    }
}
