//! The pieces every JSON document shares: a finding, a problem, a severity
//! as its word, and the count of findings per severity. One definition each,
//! so `perimeter.audit/1`, `perimeter.scan/1`, `perimeter.inventory/1` and
//! `perimeter.watch-event/1` cannot drift apart on them.

use std::collections::BTreeMap;

use perimeter_model::{Finding, Problem, Severity};
use serde::Serialize;

/// A finding as every document writes it.
#[derive(Debug, Serialize)]
pub(crate) struct FindingJson<'a> {
    rule: &'a str,
    severity: &'static str,
    subject: &'a str,
    message: &'a str,
    evidence: &'a [String],
    remedy: &'a str,
}

impl<'a> From<&'a Finding> for FindingJson<'a> {
    fn from(finding: &'a Finding) -> Self {
        FindingJson {
            rule: &finding.rule,
            severity: finding.severity.as_str(),
            subject: &finding.subject,
            message: &finding.message,
            evidence: &finding.evidence,
            remedy: &finding.remedy,
        }
    }
}

/// Something that could not be seen, as every document writes it.
#[derive(Debug, Serialize)]
pub(crate) struct ProblemJson<'a> {
    subject: &'a str,
    message: &'a str,
    hint: Option<&'a str>,
}

impl<'a> From<&'a Problem> for ProblemJson<'a> {
    fn from(problem: &'a Problem) -> Self {
        ProblemJson {
            subject: &problem.subject,
            message: &problem.message,
            hint: problem.hint.as_deref(),
        }
    }
}

/// Serde's `serialize_with` for a severity written as its word (`high`).
pub(crate) fn severity_str<S: serde::Serializer>(
    severity: &Severity,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(severity.as_str())
}

/// Findings per severity, every severity present (zero when none), keyed by
/// the severity's word.
pub(crate) fn severity_counts<'a>(
    findings: impl IntoIterator<Item = &'a Finding>,
) -> BTreeMap<&'static str, usize> {
    let mut counts: BTreeMap<&'static str, usize> =
        Severity::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for finding in findings {
        *counts.entry(finding.severity.as_str()).or_default() += 1;
    }
    counts
}
