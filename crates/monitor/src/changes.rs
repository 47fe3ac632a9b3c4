//! What counts as a change, and when to speak: pure functions from one
//! complete run's observations and the job's stored conditions to the
//! changes worth an alert and the conditions to store.
//!
//! A *condition* is something that holds while the runs keep seeing it: an
//! open port, a finding, an unapproved listener, a host no environment
//! claims, an expired experiment still answering, a certificate about to
//! expire. Each has a stable key (`port 198.18.0.7:6379/tcp`,
//! `finding exposed.redis-no-auth 198.18.0.7:6379`), a severity, and whether
//! it is *expected* (a port the environment makes public, an approved
//! listener). The rules:
//!
//! - a condition seen for the first time is a change (`new`), unless it is
//!   expected;
//! - a condition seen again is not, unless its severity rose (`escalated`),
//!   and not even then while a person has acknowledged it;
//! - a condition the run covered and did not see is gone only after
//!   `close_after` complete runs in a row without it, and then it is a
//!   change (`resolved`; for a port, `port-closed`): a port that flaps
//!   (open, closed, open) says so once, and a scan that did not reach a
//!   port never closes it;
//! - *events* (a service or version that changed, authentication that
//!   changed, a new certificate) are changes when they happen, once.
//!
//! Only complete runs come here: an interrupted scan never closes anything.

use std::collections::BTreeMap;

use perimeter_model::{AlertChange, ChangeKind, ChangeState, Severity};
use time::OffsetDateTime;

/// Something a run sees that holds while it is seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// Stable across runs: what the condition is about, not when.
    pub key: String,
    pub kind: ChangeKind,
    pub severity: Severity,
    pub subject: String,
    pub message: String,
    pub evidence: Vec<String>,
    pub remedy: String,
    /// Allowed by the environment or an approval: stored and watched, never
    /// alerted on while it holds.
    pub expected: bool,
}

/// A condition as stored between runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCondition {
    pub key: String,
    pub kind: ChangeKind,
    pub severity: Severity,
    pub subject: String,
    pub expected: bool,
    pub first_seen: OffsetDateTime,
    pub last_seen: OffsetDateTime,
    /// Complete runs in a row that covered it and did not see it.
    pub absent_runs: u32,
    /// A person's acknowledgement silences escalations until then.
    pub acked_until: Option<OffsetDateTime>,
}

/// What one complete run of a job saw.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub conditions: Vec<Condition>,
    /// One-off changes found by comparing the run with the job's previous
    /// complete run (service, authentication, certificate changes).
    pub events: Vec<AlertChange>,
}

/// The outcome of judging a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Judgement {
    /// What to tell people, in the order found.
    pub changes: Vec<AlertChange>,
    /// The job's conditions after the run (gone ones removed).
    pub conditions: Vec<StoredCondition>,
}

/// Judges one complete run. `covers(key)` says whether the run looked where
/// a stored condition was (its address and port were in the scan, or the
/// audit saw the whole host).
pub fn judge(
    stored: &[StoredCondition],
    observation: &Observation,
    covers: impl Fn(&str) -> bool,
    close_after: u32,
    now: OffsetDateTime,
) -> Judgement {
    let mut changes = Vec::new();
    let mut by_key: BTreeMap<&str, &StoredCondition> =
        stored.iter().map(|c| (c.key.as_str(), c)).collect();
    let mut next: Vec<StoredCondition> = Vec::with_capacity(observation.conditions.len());
    let mut seen = std::collections::HashSet::new();

    for condition in &observation.conditions {
        // A run that reports the same condition twice counts it once.
        if !seen.insert(condition.key.as_str()) {
            continue;
        }
        match by_key.remove(condition.key.as_str()) {
            None => {
                if !condition.expected {
                    changes.push(change_of(condition, ChangeState::New, condition.kind));
                }
                next.push(StoredCondition {
                    key: condition.key.clone(),
                    kind: condition.kind,
                    severity: condition.severity,
                    subject: condition.subject.clone(),
                    expected: condition.expected,
                    first_seen: now,
                    last_seen: now,
                    absent_runs: 0,
                    acked_until: None,
                });
            }
            Some(before) => {
                let acked = before.acked_until.is_some_and(|until| until > now);
                let became_unexpected = before.expected && !condition.expected;
                if became_unexpected {
                    // An approval or an allowed port that no longer covers it.
                    changes.push(change_of(condition, ChangeState::New, condition.kind));
                } else if !condition.expected && condition.severity > before.severity && !acked {
                    let mut change = change_of(
                        condition,
                        ChangeState::Escalated,
                        ChangeKind::SeverityRaised,
                    );
                    change.evidence.insert(
                        0,
                        format!(
                            "severity {} before, {} now",
                            before.severity, condition.severity
                        ),
                    );
                    changes.push(change);
                }
                next.push(StoredCondition {
                    key: condition.key.clone(),
                    kind: condition.kind,
                    // The highest severity seen stays, so that a condition
                    // that falls back and rises again is not news each time.
                    severity: condition.severity.max(if became_unexpected {
                        condition.severity
                    } else {
                        before.severity
                    }),
                    subject: condition.subject.clone(),
                    expected: condition.expected,
                    first_seen: before.first_seen,
                    last_seen: now,
                    absent_runs: 0,
                    acked_until: before.acked_until.filter(|until| *until > now),
                });
            }
        }
    }

    // What was there and was not seen this time.
    for (key, before) in by_key {
        if !covers(key) {
            next.push(before.clone());
            continue;
        }
        let absent_runs = before.absent_runs.saturating_add(1);
        if absent_runs < close_after {
            next.push(StoredCondition {
                absent_runs,
                ..before.clone()
            });
            continue;
        }
        if let Some(change) = gone(before, close_after) {
            changes.push(change);
        }
    }

    changes.extend(observation.events.iter().cloned());
    next.sort_by(|a, b| a.key.cmp(&b.key));
    Judgement {
        changes,
        conditions: next,
    }
}

fn change_of(condition: &Condition, state: ChangeState, kind: ChangeKind) -> AlertChange {
    AlertChange {
        kind,
        severity: condition.severity,
        state,
        subject: condition.subject.clone(),
        message: condition.message.clone(),
        evidence: condition.evidence.clone(),
        remedy: condition.remedy.clone(),
    }
}

/// The change a condition makes by going away, if worth telling: an
/// unexpected one resolves; an expected open port closing is news too (a
/// public service went down); other expected conditions go quietly.
fn gone(before: &StoredCondition, close_after: u32) -> Option<AlertChange> {
    let runs = if close_after == 1 {
        "the last complete run".to_owned()
    } else {
        format!("{close_after} complete runs in a row")
    };
    let (kind, severity, message) = match (before.kind, before.expected) {
        (ChangeKind::PortOpened, false) => (
            ChangeKind::PortClosed,
            before.severity,
            format!("{} no longer answers", before.subject),
        ),
        (ChangeKind::PortOpened, true) => (
            ChangeKind::PortClosed,
            Severity::Low,
            format!("{}, an allowed service, no longer answers", before.subject),
        ),
        (_, true) => return None,
        (ChangeKind::FindingNew | ChangeKind::SeverityRaised, false) => (
            ChangeKind::FindingResolved,
            before.severity,
            format!("{} is resolved", before.subject),
        ),
        (kind, false) => (
            kind,
            before.severity,
            format!("{} is resolved", before.subject),
        ),
    };
    Some(AlertChange {
        kind,
        severity,
        state: ChangeState::Resolved,
        subject: before.subject.clone(),
        message,
        evidence: vec![
            format!("not seen in {runs} that covered it"),
            format!("first seen {}", rfc3339(before.first_seen)),
            format!("last seen {}", rfc3339(before.last_seen)),
        ],
        remedy: String::new(),
    })
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}

#[cfg(test)]
mod tests;
